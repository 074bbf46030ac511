//! Failures decided a batch at a time: the window's index words and entries of the failures
//! ahead are requested while earlier ones are decided, so with a million tracked addresses the
//! cache misses of a batch overlap instead of costing one memory round trip per decision. The
//! decisions themselves are [`Jail::on_failure_seen`]'s, in order, so nothing but the speed
//! changes.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Decision, Jail};
use crate::evidence::Seen;

/// One failure of a batch, as [`Jail::on_failure_seen`] takes it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The address that failed.
    pub ip: IpAddr,
    /// How many failures the message stands for.
    pub count: u32,
    /// When the message arrived.
    pub at: Instant,
    /// The syslog host name of the message, when it had one.
    pub host: Option<Arc<str>>,
    /// The message as evidence, if it is kept.
    pub seen: Option<Seen>,
}

/// How many failures ahead of the one being decided its index word is requested, and how many
/// ahead the slab entry that word points at: a decision takes 50-100 ns and a miss about as
/// long, so each load has several decisions' time to arrive, and a batch keeps about a dozen
/// lines in flight (a core has 16 line-fill buffers).
const INDEX_AHEAD: usize = 8;
const ENTRY_AHEAD: usize = 4;

impl Jail {
    /// Starts loading the tracking state failures of `ips` will read (see
    /// [`super::window::Window::prefetch`]); a hint that changes nothing, so the caller may
    /// decide them afterwards in any way, with anything happening in between.
    pub fn prefetch(&self, ips: impl IntoIterator<Item = IpAddr>) {
        self.window
            .prefetch(ips.into_iter().map(|ip| self.key_of(ip)));
    }

    /// Decides `batch` (drained) in order, handing each decision to `decided`: exactly what
    /// [`Jail::on_failure_seen`] decides for each in turn, faster when the tracked addresses
    /// outgrow the cache (below that, it decides them one by one). Every key and hash is
    /// computed first; then, while failure `i` is
    /// decided, the index word of failure `i + INDEX_AHEAD` and the slab entry of failure
    /// `i + ENTRY_AHEAD` are on their way. The prefetches read the window as it is at that
    /// moment, so decisions in between (inserts, bans, evictions, a table growing) can only make
    /// a hint useless, never a decision different.
    pub fn on_failures(&mut self, batch: &mut Vec<Attempt>, mut decided: impl FnMut(Decision)) {
        if !self.window.outgrows_cache() {
            // Nothing to wait for: the plain path, without the prefetches' own cost.
            for a in batch.drain(..) {
                decided(self.on_failure_seen(a.ip, a.count, a.at, a.host, a.seen));
            }
            return;
        }
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        keyed.extend(batch.iter().map(|a| {
            let key = self.key_of(a.ip);
            (key, self.window.hash(&key))
        }));
        for &(_, hash) in keyed.iter().take(INDEX_AHEAD) {
            self.window.prefetch_index(hash);
        }
        for &(_, hash) in keyed.iter().take(ENTRY_AHEAD) {
            self.window.prefetch_entry(hash);
        }
        for (i, (a, &(key, hash))) in batch.drain(..).zip(&keyed).enumerate() {
            if let Some(&(_, ahead)) = keyed.get(i + INDEX_AHEAD) {
                self.window.prefetch_index(ahead);
            }
            if let Some(&(_, ahead)) = keyed.get(i + ENTRY_AHEAD) {
                self.window.prefetch_entry(ahead);
            }
            decided(self.decide(key, Some(hash), a.count, a.at, a.host, a.seen));
        }
        self.keyed = keyed;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::jail::settings::{Increment, JailSettings};
    use crate::metrics::JailMetrics;

    fn settings(maxretry: u32, cap: usize) -> JailSettings {
        JailSettings {
            bantime: Some(Duration::from_secs(600)),
            findtime: Duration::from_secs(60),
            maxretry,
            ignore: vec!["198.51.100.0/24".parse().unwrap()],
            max_tracked: cap,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_bans_per_minute: Some(40),
            increment: Increment {
                enabled: true,
                factor: 2.0,
                maxtime: Duration::from_secs(86_400),
                rndtime: Duration::ZERO,
            },
            detection: Default::default(),
        }
    }

    /// A small deterministic generator (xorshift), so a failing run can be replayed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// An address from a pool small enough for repeats (and bans), with ignored ones and IPv6
    /// addresses sharing a /64 among them.
    fn address(rng: &mut Rng, pool: u64) -> IpAddr {
        let n = rng.below(pool);
        match n % 10 {
            0 => format!("198.51.100.{}", n % 250).parse().unwrap(),
            1 | 2 => format!("2001:db8:{:x}::{:x}", n % 97, n).parse().unwrap(),
            _ => IpAddr::from(std::net::Ipv4Addr::from(0xCB00_7100 + n as u32)),
        }
    }

    /// The observable state of a jail: its bans and every pool address's window.
    fn state(jail: &Jail, pool: &[IpAddr], now: Instant) -> Vec<String> {
        let mut bans: Vec<String> = jail
            .bans()
            .iter()
            .map(|(t, b)| format!("{t} {:?} {} {}", b.expires, b.failures, b.ban_count))
            .collect();
        bans.sort();
        bans.extend(pool.iter().map(|&ip| {
            let key = jail.key_of(ip);
            format!("{key} {:?}", jail.current(key, now))
        }));
        bans.push(format!(
            "tracked {} failed {} banned {}",
            jail.tracked(),
            jail.total_failed(),
            jail.total_banned()
        ));
        bans
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_decides_exactly_what_failures_one_by_one_decide() {
        for seed in 1..=12u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // Small pools repeat addresses inside one batch; a small cap evicts.
            let pool_size = [40, 300, 5000][seed as usize % 3];
            let cap = [1000, 64, 100_000][seed as usize % 3];
            let maxretry = 2 + (seed % 4) as u32;
            let mut one = Jail::new("one", settings(maxretry, cap), JailMetrics::new("one"));
            let mut many = Jail::new("many", settings(maxretry, cap), JailMetrics::new("many"));
            let mut pool = Vec::new();
            let (mut batch, mut decided) = (Vec::new(), Vec::new());
            for round in 0..40 {
                // Sometimes past findtime (60 s), so windows expire between and inside batches.
                tokio::time::advance(Duration::from_secs(rng.below(25))).await;
                let size = 1 + rng.below(if round % 5 == 0 { 300 } else { 70 }) as usize;
                for _ in 0..size {
                    let ip = address(&mut rng, pool_size);
                    pool.push(ip);
                    let at = Instant::now() + Duration::from_millis(rng.below(2000));
                    let seen = (rng.below(2) == 0).then(|| {
                        Seen::new(SystemTime::UNIX_EPOCH, Some("sshd"), &format!("from {ip}"))
                    });
                    let host = (rng.below(3) == 0).then(|| Arc::from("web-1"));
                    let count = 1 + (rng.below(8) == 0) as u32 * 2;
                    batch.push(Attempt {
                        ip,
                        count,
                        at,
                        host,
                        seen,
                    });
                }
                let expected: Vec<Decision> = batch
                    .iter()
                    .map(|a| {
                        one.on_failure_seen(a.ip, a.count, a.at, a.host.clone(), a.seen.clone())
                    })
                    .collect();
                decided.clear();
                many.on_failures(&mut batch, |d| decided.push(d));
                assert!(batch.is_empty());
                assert_eq!(decided, expected, "seed {seed} round {round}");
                // Bans lifted by hand between batches, as the jail task does at bantime.
                if round % 7 == 3 {
                    let targets: Vec<_> = one.bans().keys().copied().take(5).collect();
                    for t in targets {
                        assert_eq!(one.unban(t).is_some(), many.unban(t).is_some());
                    }
                }
                pool.sort();
                pool.dedup();
                let now = Instant::now();
                assert_eq!(
                    state(&many, &pool, now),
                    state(&one, &pool, now),
                    "seed {seed} round {round}"
                );
            }
            assert!(
                one.total_banned() > 0,
                "seed {seed}: bans happened in the middle of batches"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_and_a_ban_inside_one_batch() {
        let mut jail = Jail::new("sshd", settings(3, 100), JailMetrics::new("sshd"));
        let at = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let attempt = |ip| Attempt {
            ip,
            count: 1,
            at,
            host: None,
            seen: None,
        };
        let mut batch: Vec<Attempt> = [a, b, a, a, b, a].into_iter().map(attempt).collect();
        let mut decided = Vec::new();
        jail.on_failures(&mut batch, |d| decided.push(d));
        assert_eq!(
            decided[..3],
            [
                Decision::Counted(1),
                Decision::Counted(1),
                Decision::Counted(2)
            ]
        );
        assert!(matches!(decided[3], Decision::Ban(_)));
        assert_eq!(decided[4], Decision::Counted(2));
        assert_eq!(decided[5], Decision::AlreadyBanned);
    }
}
