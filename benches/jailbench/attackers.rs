//! Many attackers: the jail's decision path (ignoreip, window, ban check) in-process with 100 ..
//! 1M distinct failing addresses, and the resident memory of their tracking state.

use std::time::{Duration, Instant};

use jailsink::evidence::Seen;

use super::corpus::attacker;

/// Host names the failures come from with `--evidence`.
const HOSTS: [&str; 4] = ["web-1", "web-2", "mail-1", "bastion"];
use super::support::rss_kib;

/// `attackers [--counts 100,10000,100000,1000000] [--rounds 4] [--batch 64] [--min-timed N]
/// [--evidence] [--batched-only] [--shuffle] [--metrics]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Distinct failing addresses to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,10000,100000,1000000",
        value_parser = super::count
    )]
    pub counts: Vec<usize>,
    /// Failures per address (at least 2: the first round inserts, the rest are timed).
    #[arg(long, default_value = "4", value_parser = super::count)]
    pub rounds: usize,
    /// Failures decided a batch at a time by the daemon's jail task's loop (`jail::schedule`, as
    /// `JailSet::on_failures`: each failure keyed once, `Jail::keyed`, then decided with
    /// `Jail::on_failure_keyed` after the state of those a few places ahead was requested);
    /// measured next to one by one (`Jail::on_failure_seen`) on a fresh jail in the same run. 1
    /// measures one by one only.
    #[arg(long, default_value = "64", value_parser = super::count)]
    pub batch: usize,
    /// Timed decisions per count and mode at least: a few hundred decisions (100 addresses)
    /// take microseconds, far too short to time on a shared machine, so small counts are
    /// measured again on fresh jails until they add up to this.
    #[arg(long, default_value = "2_000_000", value_parser = super::count)]
    pub min_timed: usize,
    /// Give every failure its evidence (receipt time, host, program, an sshd line), as the
    /// listeners do: the jail's evidence ring and the window's links are in the figures.
    #[arg(long)]
    pub evidence: bool,
    /// Leave out the one-by-one runs (for a profile of the batched path alone); the one-by-one
    /// columns then repeat the batched figures.
    #[arg(long)]
    pub batched_only: bool,
    /// Each timed round takes the addresses in a different random order (fixed seed) instead of
    /// the order they were first seen: the last-failure order is then random in memory too, as
    /// under a real attack, rather than the neighbour of each address being the next one.
    #[arg(long)]
    pub shuffle: bool,
    /// Install a Prometheus recorder first, as the daemon always does: the jail's counters and
    /// gauges are then live atomics updated at every decision, not the no-op handles a process
    /// without a recorder gets.
    #[arg(long)]
    pub metrics: bool,
}

/// One attacker-count step.
#[derive(Debug, Clone)]
pub struct AttackRow {
    /// Distinct failing addresses.
    pub addresses: usize,
    /// Decisions per CPU second (failures counted by the jail), in batches of `--batch`.
    pub decisions: f64,
    /// Decisions per CPU second one by one (the same as `decisions` when `--batch` is 1).
    pub single: f64,
    /// Decisions per wall-clock second, batched and one by one.
    pub wall: (f64, f64),
    /// Resident memory added by the tracking state (of the batched run), bytes per address.
    pub bytes_per_address: f64,
    /// Process RSS with the state in place, KiB.
    pub rss_kib: u64,
}

/// CPU time of the calling thread: unlike wall time, it leaves out the time other processes on
/// a shared machine held the core.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Time of the timed rounds of one jail.
#[derive(Debug, Clone, Copy, Default)]
struct Timed {
    wall: Duration,
    cpu: Duration,
}

/// One jail fed `rounds` failures of every address of `addrs`, `batch` at a time (1: one by
/// one); returns the time of the timed rounds (all but the first), bytes per address and the
/// RSS.
fn measure(
    addrs: &[std::net::IpAddr],
    orders: &[Vec<std::net::IpAddr>],
    rounds: usize,
    batch: usize,
    evidence: bool,
) -> Result<(Timed, f64, u64), String> {
    use jailsink::jail::{schedule, Jail, Keyed};
    use jailsink::metrics::JailMetrics;
    let n = addrs.len();
    let settings = attack_settings(n, rounds as u32 + 2);
    let before = rss_kib(std::process::id());
    let mut jail = Jail::new("bench", settings, JailMetrics::new("bench"));
    let t0 = tokio::time::Instant::now();
    let mut attempts = Vec::with_capacity(batch);
    let mut keyed: Vec<Keyed> = Vec::with_capacity(batch);
    let wall = std::time::SystemTime::now();
    let mut start = (Instant::now(), thread_cpu());
    for round in 0..rounds {
        let at = t0 + Duration::from_millis(round as u64);
        if round == 1 {
            // The first round inserts; later rounds are the steady state under attack.
            start = (Instant::now(), thread_cpu());
        }
        // Round 0 inserts in the first-seen order; `--shuffle` gives each later round its own.
        let round_addrs = match orders.get(round.wrapping_sub(1)) {
            Some(order) => order.as_slice(),
            None => addrs,
        };
        for (i, ip) in round_addrs.iter().enumerate() {
            // As the listener does per failure: its own host name and message copies.
            let (host, seen) = if evidence {
                let host: std::sync::Arc<str> = std::sync::Arc::from(HOSTS[i % HOSTS.len()]);
                let line =
                    format!("Failed password for invalid user admin from {ip} port 4242 ssh2");
                (Some(host), Some(Seen::new(wall, Some("sshd"), &line)))
            } else {
                (None, None)
            };
            if batch <= 1 {
                std::hint::black_box(jail.on_failure_seen(*ip, 1, at, host, seen));
                continue;
            }
            attempts.push((*ip, host, seen));
            if attempts.len() == batch || i + 1 == n {
                // The jail task's loop (`JailSet::on_failures`): the batch keyed once, then
                // each failure decided while the state of those ahead is on its way.
                let mut schedule = schedule(&mut keyed, attempts.iter().map(|a| jail.keyed(a.0)));
                for (_, host, seen) in attempts.drain(..) {
                    let Some(k) = schedule.next_prefetched(|k| Some((&jail, k))) else {
                        break;
                    };
                    std::hint::black_box(jail.on_failure_keyed(*k, 1, at, host, seen));
                }
                jail.publish_counts();
            }
        }
    }
    let timed = Timed {
        wall: start.0.elapsed(),
        cpu: thread_cpu().saturating_sub(start.1),
    };
    let rss = rss_kib(std::process::id());
    let tracked = jail.tracked();
    if tracked != n {
        return Err(format!("{tracked} of {n} addresses tracked"));
    }
    Ok((
        timed,
        (rss.saturating_sub(before) * 1024) as f64 / n as f64,
        rss,
    ))
}

/// The jail's decision path
/// (ignoreip, window, ban check) in-process, fed round-robin failures from N addresses; maxretry
/// is above the number of rounds, so every address stays tracked and the state is all counted.
/// Batched first (its memory is the figure), then one by one on a fresh jail; both repeated on
/// fresh jails, alternating, until each has timed `--min-timed` decisions.
pub fn attackers(args: &Args) -> Result<Vec<AttackRow>, String> {
    let rounds = args.rounds.max(2);
    if args.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("metrics recorder: {e}"))?;
    }
    let mut rows = Vec::new();
    for &n in &args.counts {
        let addrs: Vec<std::net::IpAddr> = (0..n)
            .map(|i| attacker(i).parse().expect("an address"))
            .collect();
        let orders: Vec<Vec<std::net::IpAddr>> = if args.shuffle {
            (1..rounds as u64).map(|r| shuffled(&addrs, r)).collect()
        } else {
            Vec::new()
        };
        let per_jail = n * (rounds - 1);
        let repeats = args.min_timed.div_ceil(per_jail.max(1)).max(1);
        let (mut batched, mut one_by_one) = (Timed::default(), Timed::default());
        let (mut bytes_per_address, mut rss_kib) = (0.0, 0);
        for repeat in 0..repeats {
            let (time, bytes, rss) = measure(&addrs, &orders, rounds, args.batch, args.evidence)?;
            batched.wall += time.wall;
            batched.cpu += time.cpu;
            if repeat == 0 {
                // Later jails reuse the memory the first one freed.
                (bytes_per_address, rss_kib) = (bytes, rss);
            }
            if args.batch > 1 && !args.batched_only {
                let time = measure(&addrs, &orders, rounds, 1, args.evidence)?.0;
                one_by_one.wall += time.wall;
                one_by_one.cpu += time.cpu;
            }
        }
        let timed = (repeats * per_jail) as f64;
        if args.batch <= 1 || args.batched_only {
            one_by_one = batched;
        }
        let rate = |t: Duration| timed / t.as_secs_f64();
        rows.push(AttackRow {
            addresses: n,
            decisions: rate(batched.cpu),
            single: rate(one_by_one.cpu),
            wall: (rate(batched.wall), rate(one_by_one.wall)),
            bytes_per_address,
            rss_kib,
        });
    }
    let base = rows.first().map_or((1.0, 1.0), |r| (r.decisions, r.single));
    println!(
        "| distinct failing addresses | decisions per CPU second, batches of {} | vs first | one by one | vs first | wall: batched | wall: one by one | tracking bytes/address | process RSS |",
        args.batch
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0}% | {:.0} | {:.0}% | {:.0} | {:.0} | {:.0} | {:.1} MB |",
            r.addresses,
            r.decisions,
            r.decisions / base.0 * 100.0,
            r.single,
            r.single / base.1 * 100.0,
            r.wall.0,
            r.wall.1,
            r.bytes_per_address,
            r.rss_kib as f64 / 1024.0
        );
    }
    Ok(rows)
}

/// `addrs` in a random order (Fisher-Yates over a xorshift seeded with `seed`, so runs repeat).
fn shuffled(addrs: &[std::net::IpAddr], seed: u64) -> Vec<std::net::IpAddr> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = addrs.to_vec();
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    out
}

fn attack_settings(cap: usize, maxretry: u32) -> jailsink::config::JailSettings {
    jailsink::config::JailSettings {
        bantime: Some(Duration::from_secs(3600)),
        findtime: Duration::from_secs(600),
        maxretry,
        ignore: vec!["127.0.0.0/8".parse().expect("a network")],
        max_tracked: cap,
        ipv4_prefix: 32,
        ipv6_prefix: 128,
        max_bans_per_minute: None,
        increment: jailsink::config::compile::Increment {
            enabled: false,
            factor: 2.0,
            maxtime: Duration::from_secs(86_400),
            rndtime: Duration::ZERO,
        },
        detection: Default::default(),
    }
}
