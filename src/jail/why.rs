//! Explaining the jail's decisions: the `why` answer for one jail, and the `tail` events of the
//! failures it decides on.

use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use tokio::time::Instant;

use super::query::{ActiveWhy, BanInfo, Why};
use super::{Decision, Failure, Jail};
use crate::address::{network_of, show_target};
use crate::evidence::{cut, tail, MAX_MESSAGE_BYTES};
use crate::state::PastBan;

/// `ip` and every network that holds it (/32 .. /0, or /128 .. /0): what `why` looks up.
pub(crate) fn holding(ip: IpAddr) -> Vec<IpNetwork> {
    let full: u8 = if ip.is_ipv4() { 32 } else { 128 };
    (0..=full).rev().map(|p| network_of(ip, p)).collect()
}

/// What jail `name` knows of `ip` now, its history not read yet ([`with_history`] adds it):
/// taken in the jail task, so the history read waits outside it.
pub(crate) fn jail(name: &str, jail: &Jail, ip: IpAddr, now: Instant) -> Why {
    let key = jail.key_of(ip);
    let (failures, recent) = jail.current(key, now).unwrap_or_default();
    let mut active: Vec<ActiveWhy> = jail
        .bans()
        .iter()
        .filter(|(target, _)| target.contains(ip))
        .map(|(target, ban)| ActiveWhy {
            ban: BanInfo::of(name, *target, ban),
            failures: ban.failures,
            evidence: Vec::new(),
        })
        .collect();
    active.sort_by_key(|a| std::cmp::Reverse(a.ban.target.prefix()));
    Why {
        jail: name.to_string(),
        key,
        failures,
        maxretry: jail.maxretry(),
        recent,
        active,
        past: Vec::new(),
    }
}

/// The `why` answer of one jail: each active ban gets the evidence of its history row (the
/// newest of its target), the other rows of the jail are its past bans; None when the jail
/// has nothing to say about the address.
pub(crate) fn with_history(mut why: Why, past: &[PastBan]) -> Option<Why> {
    let mine: Vec<&PastBan> = past.iter().filter(|p| p.jail == why.jail).collect();
    let mut used = Vec::new();
    for active in &mut why.active {
        if let Some(row) = mine.iter().position(|p| p.target == active.ban.target) {
            used.push(row);
            active.evidence = mine[row].evidence.clone();
        }
    }
    why.past = mine
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, p)| (*p).clone())
        .collect();
    if why.failures == 0 && why.active.is_empty() && why.past.is_empty() {
        return None;
    }
    Some(why)
}

/// What a `tail` event of a failure needs from it, taken before the jail consumes it.
pub(crate) struct Explain {
    ip: IpAddr,
    regex: usize,
    pattern: String,
    host: Option<Arc<str>>,
    program: Option<String>,
    message: String,
}

impl Explain {
    /// Taken from a failure whose listener saw a `tail` client (it filled `matched`).
    pub(crate) fn of(failure: &Failure) -> Explain {
        let (regex, pattern) = failure
            .matched
            .as_deref()
            .cloned()
            .unwrap_or((0, String::new()));
        Explain {
            ip: failure.ip,
            regex,
            pattern,
            host: failure.host.clone(),
            program: failure.seen.program().map(str::to_string),
            message: cut(failure.seen.message(), MAX_MESSAGE_BYTES).to_string(),
        }
    }

    /// Publishes that jail `name` forgave the address (a successregex matched).
    pub(crate) fn forgiven(self, name: &str) {
        let mut e = tail::Event::new(tail::Kind::Forgiven, name);
        e.ip = Some(self.ip.to_string());
        e.host = self.host.as_deref().map(str::to_string);
        e.program = self.program;
        e.message = Some(self.message);
        tail::publish(e);
    }

    /// Publishes what `jail` (named `name`) decided.
    pub(crate) fn publish(self, jail: &Jail, name: &str, decision: &Decision) {
        let (kind, count, outcome) = match decision {
            Decision::Ignored => (
                tail::Kind::Ignored,
                None,
                jail.ignored_network(self.ip)
                    .map(|n| format!("ignoreip {}", show_target(n))),
            ),
            Decision::Counted(n) => (tail::Kind::Matched, Some(*n), Some("counted".into())),
            Decision::AlreadyBanned => (tail::Kind::Matched, None, Some("already_banned".into())),
            Decision::Withheld => (
                tail::Kind::Matched,
                Some(jail.maxretry()),
                Some("withheld".into()),
            ),
            Decision::Ban(order) => (
                tail::Kind::Matched,
                Some(order.failures),
                Some("banned".into()),
            ),
        };
        let mut e = tail::Event::new(kind, name);
        e.ip = Some(self.ip.to_string());
        e.host = self.host.as_deref().map(str::to_string);
        e.program = self.program;
        e.message = Some(self.message);
        if kind == tail::Kind::Matched {
            e.regex = Some(self.regex);
            e.pattern = Some(self.pattern);
            e.count = count;
            e.maxretry = Some(jail.maxretry());
        }
        e.outcome = outcome;
        tail::publish(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_by_every_prefix() {
        let nets = holding("192.0.2.77".parse().unwrap());
        assert_eq!(nets.len(), 33);
        assert_eq!(nets[0].to_string(), "192.0.2.77/32");
        assert!(nets.iter().any(|n| n.to_string() == "192.0.2.0/24"));
        assert_eq!(holding("2001:db8::1".parse().unwrap()).len(), 129);
    }
}
