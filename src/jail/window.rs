//! Failures per address inside findtime, with a cap on how many addresses are tracked.
//!
//! Entries sit in an LRU list ordered by their last failure (time only moves forward), so the
//! least recently failing address is both the first to expire and the first to evict.

use ipnetwork::IpNetwork;
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use tokio::time::Instant;

/// What recording a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still under maxretry: this many failures inside findtime.
    Counting(u32),
    /// maxretry reached with this many failures; the address is no longer tracked.
    Reached(u32),
}

/// The failure window of one jail.
#[derive(Debug)]
pub struct Window {
    findtime: Duration,
    maxretry: u32,
    entries: LruCache<IpNetwork, Vec<Instant>>,
    cap: usize,
    evicted: u64,
}

impl Window {
    /// A window tracking at most `cap` addresses.
    pub fn new(findtime: Duration, maxretry: u32, cap: usize) -> Self {
        let cap = NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN);
        Window {
            findtime,
            maxretry: maxretry.max(1),
            // Unbounded and capped by hand in `record`: LruCache::new(cap) reserves the whole
            // table up front (megabytes at the default cap of 100,000) before any failure.
            entries: LruCache::unbounded(),
            cap: cap.get(),
            evicted: 0,
        }
    }

    /// Records `count` failures of `ip` at `now` (count > 1 for a repeat summary).
    pub fn record(&mut self, ip: IpNetwork, count: u32, now: Instant) -> Outcome {
        self.prune(now);
        let (findtime, maxretry) = (self.findtime, self.maxretry as usize);
        let times = match self.entries.get_mut(&ip) {
            Some(times) => times,
            None => {
                if self.entries.len() >= self.cap && self.entries.pop_lru().is_some() {
                    self.evicted += 1;
                }
                self.entries.push(ip, Vec::new());
                self.entries
                    .get_mut(&ip)
                    .expect("the entry was just inserted and is the most recent")
            }
        };
        times.retain(|&t| now.duration_since(t) < findtime);
        for _ in 0..count.min(maxretry as u32) {
            times.push(now);
        }
        if times.len() > maxretry {
            let excess = times.len() - maxretry;
            times.drain(..excess);
        }
        let failures = times.len() as u32;
        if times.len() >= maxretry {
            self.entries.pop(&ip);
            Outcome::Reached(failures)
        } else {
            Outcome::Counting(failures)
        }
    }

    /// Drops addresses whose last failure is older than findtime.
    pub fn prune(&mut self, now: Instant) {
        while let Some((_, times)) = self.entries.peek_lru() {
            match times.last() {
                Some(&last) if now.duration_since(last) < self.findtime => break,
                _ => {
                    self.entries.pop_lru();
                }
            }
        }
    }

    /// Forgets an address (it was banned by hand, say).
    pub fn forget(&mut self, ip: &IpNetwork) {
        self.entries.pop(ip);
    }

    /// Failures of `ip` inside the window, without touching its place in the LRU order.
    pub fn failures(&self, ip: &IpNetwork) -> u32 {
        self.entries.peek(ip).map_or(0, |t| t.len() as u32)
    }

    /// Addresses tracked now (call [`Window::prune`] first for an exact figure).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Addresses evicted at the cap since the window was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpNetwork {
        IpNetwork::from(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0xC000_0200 + n,
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn bans_at_maxretry_inside_findtime() {
        let mut w = Window::new(Duration::from_secs(600), 3, 100);
        let t = Instant::now();
        assert_eq!(w.record(ip(1), 1, t), Outcome::Counting(1));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(w.record(ip(1), 1, Instant::now()), Outcome::Counting(2));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(w.record(ip(1), 1, Instant::now()), Outcome::Reached(3));
        assert_eq!(w.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_findtime_do_not_count() {
        let mut w = Window::new(Duration::from_secs(600), 3, 100);
        w.record(ip(1), 1, Instant::now());
        w.record(ip(1), 1, Instant::now());
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(w.record(ip(1), 1, Instant::now()), Outcome::Counting(1));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_addresses_are_pruned() {
        let mut w = Window::new(Duration::from_secs(60), 5, 100);
        w.record(ip(1), 1, Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        w.record(ip(2), 1, Instant::now());
        tokio::time::advance(Duration::from_secs(31)).await;
        w.prune(Instant::now());
        assert_eq!(w.len(), 1);
        assert_eq!(w.failures(&ip(2)), 1);
        tokio::time::advance(Duration::from_secs(30)).await;
        w.prune(Instant::now());
        assert!(w.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_address_is_evicted_at_the_cap() {
        let mut w = Window::new(Duration::from_secs(600), 5, 2);
        w.record(ip(1), 1, Instant::now());
        w.record(ip(2), 1, Instant::now());
        w.record(ip(1), 1, Instant::now());
        w.record(ip(3), 1, Instant::now());
        assert_eq!(w.evicted(), 1);
        assert_eq!(w.failures(&ip(2)), 0, "ip 2 failed least recently");
        assert_eq!(w.failures(&ip(1)), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_summary_counts_n_failures() {
        let mut w = Window::new(Duration::from_secs(600), 5, 10);
        w.record(ip(1), 1, Instant::now());
        assert_eq!(w.record(ip(1), 3, Instant::now()), Outcome::Counting(4));
        assert_eq!(w.record(ip(1), 7, Instant::now()), Outcome::Reached(5));
    }
}
