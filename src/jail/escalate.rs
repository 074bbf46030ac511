//! Network escalation: when `after` addresses of one network are banned in a jail, the network
//! is banned for the longest of their remaining times and their single bans are folded into it.
//! This file holds the settings and the pure choice of what to fold; [`super::Jail`] applies it.

use std::collections::HashMap;

use ipnetwork::IpNetwork;
use tokio::time::Instant;

use super::ActiveBan;

/// `prefix_escalation = { ipv4 = 24, ipv6 = 64, after = 3 }`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// The IPv4 network neighbours are grouped by.
    pub ipv4: u8,
    /// The IPv6 network neighbours are grouped by.
    pub ipv6: u8,
    /// Banned members of one network that ban the network (2 or more).
    pub after: u32,
}

impl Escalation {
    /// The network `target` escalates to, when `target` is narrower than it.
    pub(crate) fn network_of(&self, target: IpNetwork) -> Option<IpNetwork> {
        let prefix = if target.is_ipv4() {
            self.ipv4
        } else {
            self.ipv6
        };
        (target.prefix() > prefix).then(|| crate::address::network_of(target.ip(), prefix))
    }
}

/// What a network ban folds: its members and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fold {
    /// The network to ban.
    pub network: IpNetwork,
    /// The bans inside it, lifted once it is banned.
    pub members: Vec<IpNetwork>,
    /// When the network ban ends: the latest member's end; None (permanent) if any is.
    pub expires: Option<Instant>,
    /// The members' failures together.
    pub failures: u32,
}

/// The fold `network` calls for among `bans`, once at least `after` of them lie in it.
/// Linear in the jail's bans, and only run when a ban is made, never per failure.
pub(crate) fn fold(
    network: IpNetwork,
    after: u32,
    bans: &HashMap<IpNetwork, ActiveBan>,
) -> Option<Fold> {
    let members: Vec<(&IpNetwork, &ActiveBan)> = bans
        .iter()
        .filter(|(t, _)| t.prefix() > network.prefix() && network.contains(t.ip()))
        .collect();
    if members.len() < after as usize {
        return None;
    }
    let expires = members
        .iter()
        .map(|(_, b)| b.expires)
        .try_fold(None::<Instant>, |latest, end| {
            // A permanent member makes the network permanent: stop with None.
            end.map(|e| Some(latest.map_or(e, |l| l.max(e))))
        })
        .flatten();
    let failures = members
        .iter()
        .fold(0u32, |sum, (_, b)| sum.saturating_add(b.failures));
    let mut members: Vec<IpNetwork> = members.into_iter().map(|(t, _)| *t).collect();
    members.sort();
    Some(Fold {
        network,
        members,
        expires,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn ban(expires: Option<Instant>) -> ActiveBan {
        ActiveBan {
            banned_at: SystemTime::now(),
            expires,
            expires_at: None,
            failures: 5,
            ban_count: 1,
            hosts: Vec::new(),
        }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn folds_at_after_with_the_longest_time() {
        let now = Instant::now();
        let esc = Escalation {
            ipv4: 24,
            ipv6: 64,
            after: 3,
        };
        let n = esc.network_of(net("192.0.2.7/32")).unwrap();
        assert_eq!(n, net("192.0.2.0/24"));
        assert_eq!(esc.network_of(n), None, "a network never escalates itself");
        assert_eq!(
            esc.network_of(net("2001:db8::1/128")),
            Some(net("2001:db8::/64"))
        );
        let mut bans = HashMap::new();
        bans.insert(
            net("192.0.2.1/32"),
            ban(Some(now + Duration::from_secs(60))),
        );
        bans.insert(net("198.51.100.1/32"), ban(None));
        bans.insert(
            net("192.0.2.2/32"),
            ban(Some(now + Duration::from_secs(600))),
        );
        assert_eq!(fold(n, 3, &bans), None, "two of three");
        bans.insert(net("192.0.2.3/32"), ban(Some(now + Duration::from_secs(6))));
        let f = fold(n, 3, &bans).unwrap();
        assert_eq!(f.expires, Some(now + Duration::from_secs(600)));
        assert_eq!(f.failures, 15);
        assert_eq!(
            f.members,
            [
                net("192.0.2.1/32"),
                net("192.0.2.2/32"),
                net("192.0.2.3/32")
            ]
        );
        bans.insert(net("192.0.2.4/32"), ban(None));
        assert_eq!(fold(n, 3, &bans).unwrap().expires, None, "permanent wins");
    }
}
