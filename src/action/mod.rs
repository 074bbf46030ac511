//! Actions: what a ban does. Every backend implements [`Action`]; a [`runner`] drives one jail's
//! actions on its own thread behind a bounded queue, so ingest never waits on a firewall.

pub mod iptables;
pub mod log;
pub mod runner;

use ipnetwork::IpNetwork;
use std::fmt;
use std::time::{Duration, Instant};

/// Which transport protocol a firewall rule guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "all" => Ok(Protocol::All),
            other => Err(format!("`{other}` is not tcp, udp or all")),
        }
    }
}

/// What a firewall does with a banned address's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    /// Silently drop.
    Drop,
    /// Refuse with an ICMP error / TCP reset.
    Reject,
}

impl BlockType {
    /// Reads `DROP` or `REJECT` (any case).
    pub fn parse(text: &str) -> Result<BlockType, String> {
        match text.to_ascii_uppercase().as_str() {
            "DROP" => Ok(BlockType::Drop),
            "REJECT" => Ok(BlockType::Reject),
            _ => Err(format!("`{text}` is not DROP or REJECT")),
        }
    }
}

/// The settings every firewall backend shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSpec {
    /// Base of kernel object names (`jailsink-<name>`).
    pub name: String,
    /// Ports as iptables' multiport takes them (numbers or `a:b` ranges); empty means all.
    pub ports: Vec<String>,
    /// Which protocol the ports are of.
    pub protocol: Protocol,
    /// DROP or REJECT.
    pub blocktype: BlockType,
}

/// A compiled action of a jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSpec {
    /// Log only: a dry run.
    Log,
    /// One iptables/ip6tables chain per jail.
    Iptables(FirewallSpec),
}

impl ActionSpec {
    /// The type name, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Log => "log",
            ActionSpec::Iptables(_) => "iptables",
        }
    }

    /// A fresh backend for `jail`.
    pub fn build(&self, jail: &str) -> Box<dyn Action> {
        match self {
            ActionSpec::Log => Box::new(log::LogAction::new(jail)),
            ActionSpec::Iptables(spec) => Box::new(iptables::IptablesAction::new(spec.clone())),
        }
    }
}

/// One ban to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanOrder {
    /// Who: one address (/32, /128) or, with prefix bans, a network.
    pub target: IpNetwork,
    /// Failures that led to it.
    pub failures: u32,
    /// How long; None is permanent.
    pub bantime: Option<Duration>,
    /// Receipt of the message that decided the ban, for the latency histogram; None for a
    /// ban re-applied from the state, which has no deciding message.
    pub decided_at: Option<Instant>,
}

/// An action that could not do its job; the text says what the backend answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

impl ActionError {
    /// Wraps anything displayable, such as the iptables crate's boxed errors.
    pub fn from_display(what: &str, error: impl fmt::Display) -> Self {
        ActionError(format!("{what}: {error}"))
    }
}

/// A ban backend. Calls come from one thread, in order; each may block (firewall commands).
pub trait Action: Send {
    /// Type name for metrics and logs.
    fn kind(&self) -> &'static str;
    /// Creates what the backend needs (chains, hooks); idempotent.
    fn start(&mut self) -> Result<(), ActionError>;
    /// Blocks `order.target`.
    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError>;
    /// Lifts the block on `target`.
    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError>;
    /// What of ours the kernel holds now, so a restart can reconcile it with the bans that
    /// should be active; backends that hold nothing (log) answer None.
    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        Ok(None)
    }
    /// Removes everything `start` and `ban` added.
    fn stop(&mut self) -> Result<(), ActionError>;
}
