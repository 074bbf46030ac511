//! One page of the active bans in (jail, target) order, for the ban feed (`GET /bans`,
//! [`super::query::Query::BanPage`]): the jails in name order, and in each its bans in target
//! order from the cursor ([`Jail::bans_after`], a B-tree seek). A page costs
//! O(J log J + log N + limit) for J jails and N bans; the pass over every ban it replaces made
//! paging through 100,000 bans O(N^2 / limit) (BENCHMARKS.md, "/bans paging").

use std::cmp::Ordering;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::query::BanInfo;
use super::Jail;

/// The active bans of `jails` after `after` (the previous page's last (jail, target); None
/// starts at the beginning) in (jail, target) order, at most `limit`.
pub(crate) fn ban_page<'a>(
    jails: impl Iterator<Item = (&'a Arc<str>, &'a Jail)>,
    after: Option<&(String, IpNetwork)>,
    limit: usize,
) -> Vec<BanInfo> {
    let mut jails: Vec<(&Arc<str>, &Jail)> = jails.collect();
    jails.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut page = Vec::new();
    for (name, jail) in jails {
        // Jails before the cursor's are done; in its jail, the page goes on after its target;
        // later jails are read from their start.
        let from = match after {
            None => None,
            Some((at, target)) => match (**name).cmp(at.as_str()) {
                Ordering::Less => continue,
                Ordering::Equal => Some(*target),
                Ordering::Greater => None,
            },
        };
        for (target, ban) in jail.bans_after(from).take(limit - page.len()) {
            page.push(BanInfo::of(name, *target, ban));
        }
        if page.len() == limit {
            break;
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::jail::settings::JailSettings;
    use crate::jail::test_rng::Rng;
    use crate::jail::ActiveBan;
    use crate::metrics::JailMetrics;

    /// The page as it was computed before the ordered index (one pass over every ban, the
    /// page selected and sorted): the reference the new pages must equal.
    fn by_scan<'a>(
        jails: impl Iterator<Item = (&'a Arc<str>, &'a Jail)>,
        after: Option<&(String, IpNetwork)>,
        limit: usize,
    ) -> Vec<BanInfo> {
        let mut page: Vec<(&Arc<str>, &IpNetwork, &ActiveBan)> = jails
            .flat_map(|(name, j)| j.bans().iter().map(move |(t, b)| (name, t, b)))
            .filter(|(name, target, _)| {
                after.is_none_or(|(j, t)| (&***name, *target) > (j.as_str(), t))
            })
            .collect();
        let key = |e: &(&Arc<str>, &IpNetwork, &ActiveBan)| (e.0.clone(), *e.1);
        if page.len() > limit && limit > 0 {
            page.select_nth_unstable_by_key(limit - 1, key);
        }
        page.truncate(limit);
        page.sort_unstable_by_key(key);
        page.into_iter()
            .map(|(name, target, ban)| BanInfo::of(name, *target, ban))
            .collect()
    }

    /// The jails `names` and `jails` pair up, all or only `only`.
    fn listed<'a>(
        names: &'a [Arc<str>],
        jails: &'a [Jail],
        only: Option<&str>,
    ) -> Vec<(&'a Arc<str>, &'a Jail)> {
        names
            .iter()
            .zip(jails)
            .filter(|(n, _)| only.is_none_or(|o| &***n == o))
            .collect()
    }

    /// The jail tests' settings: maxretry 3, bantime 600 s (the allowlist holds none of the
    /// addresses these tests ban).
    fn settings() -> JailSettings {
        crate::jail::tests::settings(3, 600)
    }

    fn ban(n: u64) -> ActiveBan {
        ActiveBan {
            banned_at: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
            expires: None,
            expires_at: None,
            failures: 3,
            ban_count: (n % 7) as u32 + 1,
            hosts: vec![format!("web{}", n % 3)],
        }
    }

    /// A target of every kind the order has to place: addresses and networks of both
    /// families, some sharing an address with a different prefix.
    fn target(x: &mut Rng) -> IpNetwork {
        let r = x.next();
        let net = match r % 5 {
            0 | 1 => format!(
                "10.{}.{}.{}/32",
                (r >> 8) % 4,
                (r >> 16) % 256,
                (r >> 24) % 256
            ),
            2 => format!("10.{}.{}.0/24", (r >> 8) % 4, (r >> 16) % 256),
            3 => format!("2001:db8:{:x}::{:x}/128", (r >> 8) % 16, (r >> 16) % 65536),
            _ => format!("2001:db8:{:x}::/64", (r >> 8) % 16),
        };
        net.parse().unwrap()
    }

    fn show(page: &[BanInfo]) -> Vec<String> {
        page.iter()
            .map(|b| {
                format!(
                    "{} {} {:?} {} {:?}",
                    b.jail, b.target, b.banned_at, b.ban_count, b.hosts
                )
            })
            .collect()
    }

    /// Paging through a few thousand bans in four jails (all, and one jail) with several page
    /// sizes gives exactly the pages of the old pass over every ban, also when bans are added
    /// and lifted between pages (before and after the cursor, in its jail and others, the
    /// cursor's own ban included), and with a cursor whose jail or target is gone.
    #[test]
    fn pages_are_the_old_scans_pages_while_bans_come_and_go() {
        let names: Vec<Arc<str>> = ["sshd", "web", "mail", "a-first"].map(Arc::from).to_vec();
        let mut cursors_lifted = 0;
        for limit in [0usize, 1, 7, 100, 1000, 5000] {
            for only in [None, Some("web")] {
                let mut x = Rng(42 + limit as u64);
                let mut jails: Vec<Jail> = names
                    .iter()
                    .map(|n| Jail::new(n, settings(), JailMetrics::new(n)))
                    .collect();
                for n in 0..3000 {
                    let t = target(&mut x);
                    let j = (x.next() % 4) as usize;
                    jails[j].restore(t, ban(n));
                }
                let mut after: Option<(String, IpNetwork)> = None;
                let mut pages = 0;
                loop {
                    let new = ban_page(
                        listed(&names, &jails, only).into_iter(),
                        after.as_ref(),
                        limit,
                    );
                    let old = by_scan(
                        listed(&names, &jails, only).into_iter(),
                        after.as_ref(),
                        limit,
                    );
                    assert_eq!(
                        show(&new),
                        show(&old),
                        "limit {limit}, {only:?}, after {after:?}"
                    );
                    pages += 1;
                    if new.len() < limit || limit == 0 {
                        break;
                    }
                    after = new.last().map(|b| (b.jail.clone(), b.target));
                    // Between pages: a few bans come and go anywhere, now and then the
                    // cursor's own.
                    for k in 0..3u64 {
                        let j = (x.next() % 4) as usize;
                        jails[j].restore(target(&mut x), ban(10_000 + k));
                        let j = (x.next() % 4) as usize;
                        let gone = jails[j].bans().keys().next().copied();
                        if let Some(gone) = gone {
                            jails[j].unban(gone);
                        }
                    }
                    if pages % 5 == 0 {
                        if let Some((name, target)) = &after {
                            let j = names.iter().position(|n| &**n == name).unwrap();
                            cursors_lifted += usize::from(jails[j].unban(*target).is_some());
                        }
                    }
                }
                assert!(
                    limit == 0 || pages > 3000 / limit / 8,
                    "{pages} pages of {limit}"
                );
            }
        }
        assert!(cursors_lifted > 10, "{cursors_lifted}");
        // A cursor in a jail that is not there (removed by a reload meanwhile) or past every
        // name, and past the last target of its jail.
        let mut x = Rng(7);
        let mut jails: Vec<Jail> = names
            .iter()
            .map(|n| Jail::new(n, settings(), JailMetrics::new(n)))
            .collect();
        for n in 0..500 {
            let t = target(&mut x);
            jails[(n % 4) as usize].restore(t, ban(n));
        }
        let all = || names.iter().zip(&jails);
        let max: IpNetwork = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
            .parse()
            .unwrap();
        for cursor in [
            ("gone", max),
            ("m", max),
            ("zzz", max),
            ("sshd", max),
            ("", max),
        ] {
            let after = (cursor.0.to_string(), cursor.1);
            for limit in [1, 50, 1000] {
                assert_eq!(
                    show(&ban_page(all(), Some(&after), limit)),
                    show(&by_scan(all(), Some(&after), limit)),
                    "{cursor:?} {limit}"
                );
            }
        }
    }
}
