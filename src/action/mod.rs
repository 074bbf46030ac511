//! Actions: what a ban does. Every backend implements [`Action`]; a [`runner`] drives one jail's
//! actions on its own thread behind a bounded queue, so ingest never waits on a firewall.

pub(crate) mod command;
pub(crate) mod exec;
pub(crate) mod ipset;
pub(crate) mod iptables;
pub(crate) mod libnft;
pub(crate) mod log;
pub mod nftables;
pub(crate) mod records;
pub mod runner;
pub(crate) mod sweep;

use ipnetwork::IpNetwork;
use std::fmt;
use std::time::{Duration, Instant};

/// Which transport protocol a firewall rule guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// TCP only (the default, as in fail2ban).
    Tcp,
    /// UDP only.
    Udp,
    /// Every protocol; with ports, TCP and UDP.
    All,
}

impl Protocol {
    /// Reads `tcp`, `udp` or `all`.
    pub(crate) fn parse(text: &str) -> Result<Protocol, UnknownProtocol> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "all" => Ok(Protocol::All),
            other => Err(UnknownProtocol(other.to_string())),
        }
    }
}

/// A protocol name that is not tcp, udp or all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not tcp, udp or all")]
pub(crate) struct UnknownProtocol(String);

/// What a firewall does with a banned address's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockType {
    /// Silently drop.
    Drop,
    /// Refuse with an ICMP error / TCP reset.
    Reject,
}

impl BlockType {
    /// Reads `DROP` or `REJECT` (any case).
    pub(crate) fn parse(text: &str) -> Result<BlockType, UnknownBlockType> {
        match text.to_ascii_uppercase().as_str() {
            "DROP" => Ok(BlockType::Drop),
            "REJECT" => Ok(BlockType::Reject),
            _ => Err(UnknownBlockType(text.to_string())),
        }
    }
}

/// A block type that is not DROP or REJECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not DROP or REJECT")]
pub(crate) struct UnknownBlockType(String);

/// The settings every firewall backend shares (kept as JSON in the state's record of the
/// objects a backend made, so a later start can remove them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FirewallSpec {
    /// Base of kernel object names (`jailsink-<name>`).
    pub name: String,
    /// Ports as iptables' multiport takes them (numbers or `a:b` ranges); empty means all.
    pub ports: Vec<String>,
    /// Which protocol the ports are of.
    pub protocol: Protocol,
    /// DROP or REJECT.
    pub blocktype: BlockType,
    /// Leave set-based bans (and the rules matching them) in the kernel at stop: their element
    /// timeouts lift them on time even while the daemon is down. iptables rules have no
    /// timeout, so the iptables action always cleans up.
    pub keep_on_stop: bool,
    /// The jail bans IPv4 networks (`ipv4_prefix` < 32), so nftables needs an interval set.
    pub v4_networks: bool,
    /// The jail bans IPv6 networks (`ipv6_prefix` < 128), so nftables needs an interval set.
    pub v6_networks: bool,
    /// Where the jail's traffic is matched besides local delivery: nftables hooks (`forward`)
    /// or iptables chains (`FORWARD`, `DOCKER-USER`), so published container ports, which
    /// bypass INPUT, are guarded too. Empty (or `input` / `INPUT` alone): local delivery only.
    pub hooks: Vec<String>,
}

/// The `command` action: argv templates run without a shell (unless argv\[0\] is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Run once when the jail starts; empty: nothing.
    pub start: Vec<String>,
    /// Run once when the jail stops; empty: nothing. One that ran is taken to lift every ban:
    /// the action forgets its record, and the next start runs `ban` for every restored ban.
    pub stop: Vec<String>,
    /// Run per ban; `<ip>`, `<jail>`, `<bantime>`, `<failures>`, `<port>`, `<protocol>` filled in.
    pub ban: Vec<String>,
    /// Run per unban; empty: nothing.
    pub unban: Vec<String>,
    /// A run still going after this is killed (with its process group) and counts as failed.
    pub timeout: Duration,
    /// The jail's ports as `<port>` shows them (comma-separated; empty for all ports).
    pub ports: Vec<String>,
    /// The jail's protocol, for `<protocol>`.
    pub protocol: Protocol,
}

/// The action types a config may name. One list for config compile, [`ActionSpec`], metrics
/// labels and `import-fail2ban`, so a new backend cannot be half-added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// Log only: a dry run.
    Log,
    /// One iptables/ip6tables chain per jail.
    Iptables,
    /// nftables sets in table `inet jailsink`.
    Nftables,
    /// ipset hash:net sets.
    Ipset,
    /// The operator's own programs.
    Command,
}

impl ActionKind {
    /// Every kind, in the order error messages list them.
    pub(crate) const ALL: [ActionKind; 5] = [
        ActionKind::Iptables,
        ActionKind::Nftables,
        ActionKind::Ipset,
        ActionKind::Command,
        ActionKind::Log,
    ];

    /// The name used in config files, metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Log => "log",
            ActionKind::Iptables => "iptables",
            ActionKind::Nftables => "nftables",
            ActionKind::Ipset => "ipset",
            ActionKind::Command => "command",
        }
    }

    /// The kind a config names, if it is one.
    pub(crate) fn parse(name: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compiled action of a jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSpec {
    /// Log only: a dry run.
    Log,
    /// One iptables/ip6tables chain per jail.
    Iptables(FirewallSpec),
    /// nftables sets in table `inet jailsink`.
    Nftables(FirewallSpec),
    /// ipset hash:net sets matched by one iptables/ip6tables rule each.
    Ipset(FirewallSpec),
    /// The operator's own programs.
    Command(CommandSpec),
}

impl ActionSpec {
    /// Its type, for metrics labels and logs.
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionSpec::Log => ActionKind::Log,
            ActionSpec::Iptables(_) => ActionKind::Iptables,
            ActionSpec::Nftables(_) => ActionKind::Nftables,
            ActionSpec::Ipset(_) => ActionKind::Ipset,
            ActionSpec::Command(_) => ActionKind::Command,
        }
    }

    /// The firewall settings of an iptables, nftables or ipset action (what names its kernel
    /// objects); None for log and command actions.
    pub fn firewall(&self) -> Option<&FirewallSpec> {
        match self {
            ActionSpec::Iptables(spec) | ActionSpec::Nftables(spec) | ActionSpec::Ipset(spec) => {
                Some(spec)
            }
            ActionSpec::Log | ActionSpec::Command(_) => None,
        }
    }

    /// A fresh backend for `jail` (a command action as the jail's only one).
    pub fn build(&self, jail: &str) -> Box<dyn Action> {
        self.build_nth(jail, 0, &[])
    }

    /// A fresh backend for `jail`, the `nth` action of its type in the jail; a command action
    /// learns the identities of the jail's command actions (`commands`,
    /// [`command_identities`]), which key its records.
    pub fn build_nth(&self, jail: &str, nth: usize, commands: &[String]) -> Box<dyn Action> {
        match self {
            ActionSpec::Log => Box::new(log::LogAction::new(jail)),
            ActionSpec::Iptables(spec) => Box::new(iptables::IptablesAction::new(spec.clone())),
            ActionSpec::Nftables(spec) => Box::new(nftables::NftablesAction::new(spec.clone())),
            ActionSpec::Ipset(spec) => Box::new(ipset::IpsetAction::new(spec.clone())),
            ActionSpec::Command(spec) => Box::new(command::CommandAction::new(
                jail,
                nth,
                commands,
                spec.clone(),
            )),
        }
    }
}

/// The (backend, name) of the firewall objects `actions` make: what a jail owns in the
/// kernel, by which the start-up sweep and a reload's hand-over tell objects apart.
pub fn firewall_names(actions: &[ActionSpec]) -> impl Iterator<Item = (&'static str, &str)> {
    actions
        .iter()
        .filter_map(|a| a.firewall().map(|f| (a.kind().name(), f.name.as_str())))
}

/// The identities of the command actions among `actions`, in order: what keys their records
/// ([`records::identity`]: the `ban` template, so that inserting or removing another command
/// action leaves them; a second action with the same `ban` gets a suffix).
pub fn command_identities(actions: &[ActionSpec]) -> Vec<String> {
    let mut seen: Vec<&[String]> = Vec::new();
    let mut out = Vec::new();
    for action in actions {
        if let ActionSpec::Command(spec) = action {
            let dup = seen.iter().filter(|b| **b == spec.ban.as_slice()).count();
            seen.push(&spec.ban);
            out.push(records::identity(&spec.ban, dup));
        }
    }
    out
}

/// One ban to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanOrder {
    /// Who: one address (/32, /128) or, with prefix bans, a network.
    pub target: IpNetwork,
    /// Failures that led to it.
    pub failures: u32,
    /// How long from `decided_at`; None is permanent.
    pub bantime: Option<Duration>,
    /// Receipt of the message that decided the ban, for the latency histogram; the ban ends at
    /// `decided_at + bantime`.
    pub decided_at: Instant,
    /// Re-applied from the state (restart, reload), not decided by a message now: no latency
    /// sample is taken.
    pub from_state: bool,
    /// The lines that decided the ban (empty for bans by hand and restored ones), for the
    /// command action's `<hosts>` and `<matches>`.
    pub evidence: crate::evidence::Evidence,
}

impl BanOrder {
    /// What is left of the ban at `now`, for kernel element timeouts; None is permanent. Never
    /// below one second, so an order applied late still blocks until the jail lifts it.
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        let left = self
            .bantime?
            .saturating_sub(now.saturating_duration_since(self.decided_at));
        Some(left.max(Duration::from_secs(1)))
    }
}

/// Work for an action: the runner hands these over in bursts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionCommand {
    /// Apply a ban.
    Ban(BanOrder),
    /// Lift a ban.
    Unban(IpNetwork),
}

impl ActionCommand {
    /// Who the command is about.
    pub(crate) fn target(&self) -> IpNetwork {
        match self {
            ActionCommand::Ban(order) => order.target,
            ActionCommand::Unban(target) => *target,
        }
    }
}

/// Part of a burst did not apply: which commands (indices into the burst) and the first reason.
/// Transactional backends fail a burst whole; the runner retries just the listed commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} of the burst failed: {error}", .pending.len())]
pub struct BatchError {
    /// Indices, into the burst, of the commands that did not apply.
    pub pending: Vec<usize>,
    /// What went wrong first.
    pub error: ActionError,
    /// Indices, into the burst, of commands the backend can never apply as it is (IPv6 on a
    /// host without ip6tables), apart from `pending`: the runner counts each ban of them once,
    /// takes each unban of them as done, and neither retries nor keeps them for later.
    pub refused: Vec<usize>,
}

impl BatchError {
    /// A burst's outcome from its first error, if any, and the commands still pending.
    pub fn of(first: Option<ActionError>, pending: Vec<usize>) -> Result<(), BatchError> {
        match first {
            None => Ok(()),
            Some(error) => Err(BatchError {
                pending,
                error,
                refused: Vec::new(),
            }),
        }
    }
}

/// An action that could not do its job; the text says what the backend answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

impl ActionError {
    /// Wraps anything displayable, such as the iptables crate's boxed errors.
    pub(crate) fn from_display(what: &str, error: impl fmt::Display) -> Self {
        ActionError(format!("{what}: {error}"))
    }
}

impl From<exec::ExecError> for ActionError {
    fn from(error: exec::ExecError) -> Self {
        ActionError(error.to_string())
    }
}

/// One command through a batch-native backend's `apply`: how nftables and ipset implement
/// `ban` and `unban`, so a single ban takes the same transactional path as a burst.
pub(crate) fn apply_one(
    action: &mut impl Action,
    command: ActionCommand,
) -> Result<(), ActionError> {
    action.apply(&[command]).map_err(|e| e.error)
}

/// Firewall settings for the backends' unit tests: the jail `sshd`, DROP, no keep_on_stop.
#[cfg(test)]
pub(crate) fn test_spec(ports: &[&str], protocol: Protocol, v6_networks: bool) -> FirewallSpec {
    FirewallSpec {
        name: "sshd".into(),
        ports: ports.iter().map(|s| s.to_string()).collect(),
        protocol,
        blocktype: BlockType::Drop,
        keep_on_stop: false,
        v4_networks: false,
        v6_networks,
        hooks: Vec::new(),
    }
}

/// A ban backend. Calls come from one thread, in order; each may block (firewall commands).
pub trait Action: Send {
    /// Its type, for metrics and logs.
    fn kind(&self) -> ActionKind;
    /// Creates what the backend needs (chains, hooks); idempotent.
    fn start(&mut self) -> Result<(), ActionError>;
    /// Blocks `order.target`.
    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError>;
    /// Lifts the block on `target`.
    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError>;
    /// Applies a burst in order. Set-based backends override this to apply it in one
    /// transaction; the default calls `ban`/`unban` for each and reports those that failed.
    fn apply(&mut self, batch: &[ActionCommand]) -> Result<(), BatchError> {
        let mut pending = Vec::new();
        let mut first = None;
        for (i, command) in batch.iter().enumerate() {
            let result = match command {
                ActionCommand::Ban(order) => self.ban(order),
                ActionCommand::Unban(target) => self.unban(*target),
            };
            if let Err(error) = result {
                pending.push(i);
                first.get_or_insert(error);
            }
        }
        BatchError::of(first, pending)
    }
    /// What of ours the kernel holds now, so a restart can reconcile it with the bans that
    /// should be active; backends that hold nothing (log) answer None.
    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        Ok(None)
    }
    /// Targets `list` cannot vouch for either way (a command of theirs may have been cut short
    /// by a crash), after `list`: reconciling lifts them when no ban wants them and applies
    /// them again when one does.
    fn doubtful(&self) -> Vec<IpNetwork> {
        Vec::new()
    }
    /// The bans it holds that only its own unbans lift and that it knows without the state
    /// database (a command action's, in memory): a stop that must lift them (a reload's
    /// fallback dropping the action) unbans them first. Firewall backends: none (their stop
    /// removes what they hold, or their kernel timeouts do).
    fn held(&self) -> Vec<IpNetwork> {
        Vec::new()
    }
    /// Removes everything `start` and `ban` added (set-based backends with `keep_on_stop`
    /// leave it, for their element timeouts to finish).
    fn stop(&mut self) -> Result<(), ActionError>;
}

/// A target as firewall tools write it: a lone address bare, a network as CIDR with its
/// network address (what `nft list` and `ipset list` print back, so lists compare equal).
pub fn element_text(target: IpNetwork) -> String {
    let full = if target.is_ipv4() { 32 } else { 128 };
    if target.prefix() == full {
        target.ip().to_string()
    } else {
        format!("{}/{}", target.network(), target.prefix())
    }
}

/// Reads an element back from a firewall listing: `192.0.2.1`, `2001:db8::/64`.
pub(crate) fn parse_element(text: &str) -> Option<IpNetwork> {
    crate::address::parse_target(text).ok()
}
