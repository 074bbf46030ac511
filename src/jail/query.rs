//! What the jail task can be asked, in its own words. The control socket translates its
//! protocol into these and the answers back, so the jail never knows the protocol.

use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;

use crate::address::Named;
use crate::evidence::Line;
use crate::state::PastBan;

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
    /// One page of the active bans in (jail, target) order, for the ban feed: the page after
    /// `after`, at most `limit` long. A feed of any size is read page by page, so neither the
    /// jail task nor the responder holds it all, and a slow reader never holds up the jail task.
    BanPage {
        /// One jail, or all.
        jail: Option<String>,
        /// The last (jail, target) of the previous page; None starts at the beginning.
        after: Option<(String, IpNetwork)>,
        /// The most bans in the page.
        limit: usize,
    },
    /// Ban an address or a network by hand.
    Ban {
        /// The jail.
        jail: String,
        /// An address (the jail widens it to its prefix) or a network (taken as written).
        target: Named,
        /// Replaces the jail's bantime: Some(None) is permanent, None keeps the jail's.
        bantime: Option<Option<Duration>>,
    },
    /// Ban a list by hand (`ban JAIL --file`): each target with its line number.
    BanMany {
        /// The jail.
        jail: String,
        /// (line number, address or network).
        targets: Vec<(u32, Named)>,
        /// As for `Ban`.
        bantime: Option<Option<Duration>>,
    },
    /// Lift the bans of a list in one jail (`unban JAIL --file`).
    UnbanMany {
        /// The jail.
        jail: String,
        /// (line number, address or network).
        targets: Vec<(u32, Named)>,
    },
    /// Why an address is (or was) banned: per jail, its failures now, its active bans (of it
    /// or of a network holding it) with their evidence, and its past bans.
    Why {
        /// The address.
        ip: std::net::IpAddr,
    },
    /// Lift bans by hand.
    Unban {
        /// One jail, or every jail.
        jail: Option<String>,
        /// The address or network; None lifts every ban (of `jail`).
        target: Option<Named>,
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
    /// What became of each line of a list.
    Applied(Applied),
    /// `why`: every jail that has counted, banned or once banned the address.
    Why(Vec<Why>),
}

/// One jail's answer to `why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Why {
    /// The jail.
    pub jail: String,
    /// What the jail counts the address as (itself, or its prefix network).
    pub key: IpNetwork,
    /// Failures counted now, inside findtime.
    pub failures: u32,
    /// The jail's maxretry.
    pub maxretry: u32,
    /// The lines of those failures the jail still holds.
    pub recent: Vec<Line>,
    /// Active bans of the address or of networks holding it, with their evidence.
    pub active: Vec<ActiveWhy>,
    /// Past bans (newest first), the active ones left out.
    pub past: Vec<PastBan>,
}

/// An active ban as `why` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveWhy {
    /// The ban, as `banned` lists it.
    pub ban: BanInfo,
    /// Failures that led to it.
    pub failures: u32,
    /// The lines that decided it.
    pub evidence: Vec<Line>,
}

/// What a list ban or unban did, by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Lines banned (or unbanned).
    pub done: u64,
    /// Lines already banned (or, unbanning, not banned), with the reason.
    pub unchanged: Vec<(u32, String)>,
    /// Lines refused because they touch an ignored address, with the reason.
    pub ignored: Vec<(u32, String)>,
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
    /// Syslog host names the deciding failures came from.
    pub hosts: Vec<String>,
}

impl BanInfo {
    /// What a query shows of `jail`'s active ban of `target`: the list, the ban pages and
    /// `why` all show a ban the same way.
    pub(crate) fn of(jail: &str, target: IpNetwork, ban: &super::ActiveBan) -> BanInfo {
        BanInfo {
            jail: jail.to_string(),
            target,
            banned_at: ban.banned_at,
            expires_at: ban.expires_at,
            ban_count: ban.ban_count,
            hosts: ban.hosts.clone(),
        }
    }
}
