//! What the jail task is given of a jail: its numbers ([`JailSettings`]) and its actions
//! ([`JailSpec`]). Config compiles these; the jail never reads the config itself.

use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::action::ActionSpec;

/// One jail as the jail task runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct JailSpec {
    /// The jail's name, `[jails.NAME]`.
    pub name: String,
    /// Counting and banning settings.
    pub settings: JailSettings,
    /// What a ban does; each runs.
    pub actions: Vec<ActionSpec>,
    /// What feeds the jail (filter, programs, hosts), compared on reload only to report it.
    pub feed: String,
    /// The state database could not be read at the daemon's start: the jail's actions keep
    /// every ban the kernel holds ([`crate::action::runner::spawn`]). Set by the daemon on
    /// every jail it runs (at start and at each reload), never process-wide.
    pub state_unread: bool,
}

/// The numbers a jail decides with.
#[derive(Debug, Clone, PartialEq)]
pub struct JailSettings {
    /// Ban length; None is permanent.
    pub bantime: Option<Duration>,
    /// Window in which failures count.
    pub findtime: Duration,
    /// Failures that trigger a ban.
    pub maxretry: u32,
    /// Never banned (ignoreip, plus this host's addresses with ignoreself).
    pub ignore: Vec<IpNetwork>,
    /// Most addresses tracked at once; the oldest is evicted first.
    pub max_tracked: usize,
    /// IPv4 failures count against, and ban, this prefix of the address (32: the address).
    pub ipv4_prefix: u8,
    /// IPv6 failures count against, and ban, this prefix of the address (128: the address).
    pub ipv6_prefix: u8,
    /// Ban storm guard: at most this many bans a minute; None turns the guard off.
    pub max_bans_per_minute: Option<u32>,
    /// Escalation of repeat bans.
    pub increment: Increment,
    /// Spraying, network escalation and allowlists that change at run time.
    pub detection: Detection,
}

/// The decisions beyond one address's failures: `spray`, `prefix_escalation`, and the parts of
/// the allowlist resolved or read at run time (`ignoreip` names, `ignoreip_files`).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `spray = { maxaddresses, findtime }`; None is off.
    pub spray: Option<super::spray::SpraySettings>,
    /// `prefix_escalation = { ipv4, ipv6, after }`; None is off.
    pub escalation: Option<super::escalate::Escalation>,
    /// DNS names of `ignoreip`, resolved in the background.
    pub ignore_names: Vec<String>,
    /// `ignoreip_files` patterns (absolute; `*` and `?` in the file name).
    pub ignore_files: Vec<std::path::PathBuf>,
    /// How often the names are resolved again.
    pub ignore_refresh: Duration,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            spray: None,
            escalation: None,
            ignore_names: Vec::new(),
            ignore_files: Vec::new(),
            ignore_refresh: Duration::from_secs(300),
        }
    }
}

impl Detection {
    /// True when the allowlist changes at run time (names or files), so a watcher must run.
    pub(crate) fn watches(&self) -> bool {
        !self.ignore_names.is_empty() || !self.ignore_files.is_empty()
    }
}

/// `bantime_increment`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Increment {
    /// Off by default.
    pub enabled: bool,
    /// bantime × factor^(bans − 1).
    pub factor: f64,
    /// Cap on an escalated ban.
    pub maxtime: Duration,
    /// Random extra up to this much.
    pub rndtime: Duration,
}
