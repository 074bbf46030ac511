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
