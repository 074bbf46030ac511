//! What the jail task can be asked, in its own words. The control socket translates its
//! protocol into these and the answers back, so the jail never knows the protocol.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnetwork::IpNetwork;

/// A question or order for the jail task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// The jail list (None), or one jail's counts.
    Status {
        /// One jail, or all.
        jail: Option<String>,
    },
    /// The active bans of one jail, or of all.
    Banned {
        /// One jail, or all.
        jail: Option<String>,
    },
    /// Ban an address by hand.
    Ban {
        /// The jail.
        jail: String,
        /// The address (the jail widens it to its prefix).
        ip: IpAddr,
    },
    /// Lift bans by hand.
    Unban {
        /// One jail, or every jail.
        jail: Option<String>,
        /// The address or network; None lifts every ban (of `jail`).
        target: Option<IpNetwork>,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Jail names, in config order.
    Jails(Vec<String>),
    /// One jail's counts.
    Status(JailCounts),
    /// Active bans, oldest first.
    Bans(Vec<BanInfo>),
    /// An order was carried out; what happened, for the operator.
    Done(String),
}

/// Why a query was refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub String);

/// One jail's counts, as `fail2ban-client status JAIL` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JailCounts {
    /// The jail.
    pub jail: String,
    /// Addresses with failures inside findtime.
    pub currently_failed: u64,
    /// Failures since start.
    pub total_failed: u64,
    /// Bans since start.
    pub total_banned: u64,
    /// Who is banned now, sorted.
    pub banned: Vec<IpNetwork>,
}

/// One active ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BanInfo {
    /// The jail.
    pub jail: String,
    /// The address or network.
    pub target: IpNetwork,
    /// When it was decided.
    pub banned_at: SystemTime,
    /// When it ends; None is permanent.
    pub expires_at: Option<SystemTime>,
    /// Offence number.
    pub ban_count: u32,
}
