//! Failures decided a batch at a time: each failure's key and window hash are computed once for
//! the batch, and while failure `i` is decided the window's index word of failure
//! `i + INDEX_AHEAD` and the slab entry of failure `i + ENTRY_AHEAD` are on their way, so with a
//! million tracked addresses the cache misses of a batch overlap instead of costing one memory
//! round trip per decision. The decisions themselves are [`Jail::on_failure_seen`]'s, in order,
//! so nothing but the speed changes. The jail task (`JailSet::on_failures`) and `jailbench
//! attackers` run the same loop, [`schedule`], so the bench measures exactly the daemon's.

use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use tokio::time::Instant;

use super::{Decision, Jail};
use crate::evidence::Seen;

/// How many failures ahead of the one being decided its index word is requested, and how many
/// ahead the slab entry that word points at: a decision takes 50-100 ns and a miss about as
/// long, so each load has several decisions' time to arrive, and a batch keeps about a dozen
/// lines in flight (a core has 16 line-fill buffers).
const INDEX_AHEAD: usize = 8;
const ENTRY_AHEAD: usize = 4;

/// A failure's key in its jail and that key's window hash, computed once for its batch (see
/// [`Jail::keyed`]); valid until the jail is reconfigured.
#[derive(Debug, Clone, Copy)]
pub struct Keyed {
    key: IpNetwork,
    /// Whether the allowlist ignores `key`, when finding the key answered it
    /// ([`Jail::admitted_key`]: not looked up again when the failure is decided).
    ignored: Option<bool>,
    hash: u64,
    /// The jail's tracking state had outgrown the cache when the batch was keyed: only then do
    /// prefetches pay for themselves.
    prefetch: bool,
}

impl Jail {
    /// `ip`'s key and window hash, for [`Jail::on_failure_keyed`] and [`schedule`].
    pub fn keyed(&self, ip: IpAddr) -> Keyed {
        let (key, ignored) = self.admitted_key(ip);
        Keyed {
            key,
            ignored,
            hash: self.window.hash(&key),
            prefetch: self.window.outgrows_cache(),
        }
    }

    /// [`Jail::on_failure_seen`] of a failure keyed by [`Jail::keyed`] (same jail, not
    /// reconfigured since): the same decision, without computing the key and hash again.
    pub fn on_failure_keyed(
        &mut self,
        keyed: Keyed,
        count: u32,
        at: Instant,
        host: Option<Arc<str>>,
        seen: Option<Seen>,
    ) -> Decision {
        let (key, ignored) = (keyed.key, keyed.ignored);
        self.decide(key, ignored, Some(keyed.hash), count, at, host, seen)
    }
}

/// The keys of a batch of failures being decided in order, found once by [`schedule`]: the
/// caller takes the failures in the batch's order, and before deciding each one asks
/// [`Schedule::next_prefetched`] for its key, which first requests what deciding the failures
/// a few places ahead will read. Not an iterator over the failures: the caller decides each
/// with its jails borrowed mutably, and lends them to the schedule only for the prefetches
/// (and handing out the failures from here cost the jail task's loop 13 instructions a
/// failure more, copying each twice: callgrind of `jailbench attackers`).
pub struct Schedule<'b, K> {
    keyed: &'b [K],
    next: usize,
}

/// The schedule of a batch whose failures' keys, in the batch's order, are `keyed`
/// (collected into `keys`, cleared first, so their memory serves batch after batch): the one
/// loop of the jail task (`JailSet::on_failures`) and `jailbench attackers`.
pub fn schedule<K>(keys: &mut Vec<K>, keyed: impl Iterator<Item = K>) -> Schedule<'_, K> {
    keys.clear();
    keys.extend(keyed);
    Schedule {
        keyed: keys,
        next: 0,
    }
}

impl<'b, K: Copy> Schedule<'b, K> {
    /// The key of the batch's next failure (None past its end). Before handing out failure
    /// `i`'s, it requests the index word of failure `i + INDEX_AHEAD` and the entry of failure
    /// `i + ENTRY_AHEAD` (at `i == 0`, those of the failures before them too); `jail_of` gives
    /// a key's jail and [`Keyed`], None with nothing to look up (a success, an unknown jail).
    /// The prefetches read the windows as they are at that moment, so decisions in between
    /// (inserts, bans, evictions, a table growing) can only make a hint useless, never a
    /// decision different.
    #[inline(always)]
    pub fn next_prefetched<'j>(
        &mut self,
        jail_of: impl Fn(K) -> Option<(&'j Jail, Keyed)>,
    ) -> Option<&'b K> {
        let i = self.next;
        let keyed = self.keyed;
        let key = keyed.get(i)?;
        self.next += 1;
        prefetch_ahead(i, |j| keyed.get(j).copied().and_then(&jail_of));
        Some(key)
    }
}

/// The prefetch schedule of a keyed batch, before deciding failure `i` (see
/// [`Schedule::next_prefetched`]). `keyed(j)` gives failure `j`'s jail and key, `None` past the
/// batch's end or with nothing to look up.
#[inline(always)]
fn prefetch_ahead<'a>(i: usize, keyed: impl Fn(usize) -> Option<(&'a Jail, Keyed)>) {
    let index = |j| {
        if let Some((jail, k)) = keyed(j).filter(|(_, k)| k.prefetch) {
            jail.window.prefetch_index(k.hash);
        }
    };
    let entry = |j| {
        if let Some((jail, k)) = keyed(j).filter(|(_, k)| k.prefetch) {
            jail.window.prefetch_entry(k.hash);
        }
    };
    if i == 0 {
        (0..INDEX_AHEAD).for_each(index);
        (0..ENTRY_AHEAD).for_each(entry);
    }
    index(i + INDEX_AHEAD);
    entry(i + ENTRY_AHEAD);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::jail::settings::{Increment, JailSettings};
    use crate::jail::test_rng::Rng;
    use crate::metrics::JailMetrics;

    /// One failure of a batch.
    #[derive(Debug, Clone)]
    struct Attempt {
        ip: IpAddr,
        count: u32,
        at: Instant,
        host: Option<Arc<str>>,
        seen: Option<Seen>,
    }

    /// Decides `batch` (drained) as the jail task and `jailbench attackers` do: by
    /// [`schedule`].
    fn decide_batch(jail: &mut Jail, batch: &mut Vec<Attempt>) -> Vec<Decision> {
        let mut keys = Vec::new();
        let mut schedule = schedule(&mut keys, batch.iter().map(|a| jail.keyed(a.ip)));
        let mut decided = Vec::new();
        for a in batch.drain(..) {
            let Some(k) = schedule.next_prefetched(|k| Some((&*jail, k))) else {
                break;
            };
            decided.push(jail.on_failure_keyed(*k, a.count, a.at, a.host, a.seen));
        }
        decided
    }

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
            // Up to 8: past the five times an entry holds inline, they spill to the heap.
            let maxretry = 2 + (seed % 7) as u32;
            let mut one = Jail::new("one", settings(maxretry, cap), JailMetrics::new("one"));
            let mut many = Jail::new("many", settings(maxretry, cap), JailMetrics::new("many"));
            let mut pool = Vec::new();
            let mut batch = Vec::new();
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
                let decided = decide_batch(&mut many, &mut batch);
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
        let decided = decide_batch(&mut jail, &mut batch);
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
