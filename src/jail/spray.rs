//! Password spraying: one user name failing from many addresses, each below maxretry. The
//! jail keeps, per `<F-USER>` name, the distinct addresses that failed as it inside the spray
//! findtime; at `maxaddresses` every one of them is banned. The name table is an LRU capped
//! like `max_tracked` (evictions counted), and each name holds at most `maxaddresses` entries.

use std::net::IpAddr;
use std::time::Duration;

use lru::LruCache;
use tokio::time::Instant;

/// Longest user name a failure carries, in bytes: names are attacker-controlled, so the listener
/// cuts longer ones (two names sharing their first 256 bytes count as one), and the name table
/// holds at most max_tracked × this much text.
pub(crate) const MAX_USER_BYTES: usize = 256;

/// `spray = { maxaddresses = 10, findtime = "1h" }`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpraySettings {
    /// Distinct addresses failing as one user that make it a spray (2 or more).
    pub maxaddresses: u32,
    /// The window those failures must fall in.
    pub findtime: Duration,
}

/// The addresses each user name failed from, recently.
pub(crate) struct Spray {
    settings: SpraySettings,
    users: LruCache<Box<str>, Vec<(IpAddr, Instant)>>,
    cap: usize,
    evicted: u64,
}

impl Spray {
    /// An empty table holding at most `cap` user names.
    pub(crate) fn new(settings: SpraySettings, cap: usize) -> Self {
        Spray {
            settings,
            // Unbounded and capped by hand, as the jail's ban counts: no table reserved up front.
            users: LruCache::unbounded(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// The settings it counts with.
    pub(crate) fn settings(&self) -> &SpraySettings {
        &self.settings
    }

    /// Records that `user` failed from `ip` at `at`. Returns every address of the spray when
    /// this failure made `maxaddresses` distinct ones inside findtime (the name starts over).
    pub(crate) fn record(&mut self, user: &str, ip: IpAddr, at: Instant) -> Option<Vec<IpAddr>> {
        if user.is_empty() {
            return None;
        }
        let findtime = self.settings.findtime;
        let entries = match self.users.get_mut(user) {
            Some(entries) => entries,
            None => {
                if self.users.len() >= self.cap {
                    self.users.pop_lru();
                    self.evicted += 1;
                }
                self.users.get_or_insert_mut(Box::from(user), Vec::new)
            }
        };
        entries.retain(|(_, t)| at.saturating_duration_since(*t) < findtime);
        match entries.iter_mut().find(|(a, _)| *a == ip) {
            Some(entry) => entry.1 = at,
            None => entries.push((ip, at)),
        }
        if entries.len() < self.settings.maxaddresses as usize {
            return None;
        }
        let sprayers = entries.iter().map(|(a, _)| *a).collect();
        self.users.pop(user);
        Some(sprayers)
    }

    /// Names dropped to keep the table under its cap, since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Names tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spray(maxaddresses: u32, cap: usize) -> Spray {
        Spray::new(
            SpraySettings {
                maxaddresses,
                findtime: Duration::from_secs(3600),
            },
            cap,
        )
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_addresses_inside_findtime_make_a_spray() {
        let mut s = spray(3, 100);
        let now = Instant::now();
        assert_eq!(s.record("admin", ip(1), now), None);
        // The same address again is still one address.
        assert_eq!(s.record("admin", ip(1), now), None);
        assert_eq!(s.record("root", ip(2), now), None, "another user");
        assert_eq!(s.record("admin", ip(2), now), None);
        assert_eq!(
            s.record("admin", ip(3), now),
            Some(vec![ip(1), ip(2), ip(3)])
        );
        // The name starts over after a spray.
        assert_eq!(s.record("admin", ip(4), now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_fall_out_of_the_window() {
        let mut s = spray(2, 100);
        assert_eq!(s.record("admin", ip(1), Instant::now()), None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(s.record("admin", ip(2), Instant::now()), None);
        assert_eq!(
            s.record("admin", ip(3), Instant::now()),
            Some(vec![ip(2), ip(3)])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_name_table_is_capped_and_counts_evictions() {
        let mut s = spray(2, 3);
        let now = Instant::now();
        for n in 0..10 {
            assert_eq!(s.record(&format!("user{n}"), ip(n), now), None);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.evicted(), 7);
        // user0 was evicted: its first address is forgotten.
        assert_eq!(s.record("user0", ip(50), now), None);
        assert_eq!(s.record("user9", ip(51), now), Some(vec![ip(9), ip(51)]));
        assert_eq!(s.record("", ip(1), now), None, "no name, no spray");
    }
}
