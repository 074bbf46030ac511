//! The fleet benchmark of BENCHMARKS.md ("Fleet"), against a running redis-server (bench/fleet.sh
//! starts a private one): propagation from a sink's commit to N followers, shared-window
//! failures per second next to local windows, and Redis memory per active ban and per tracked
//! attacker. Everything runs jailsink's own code: the state writer with the outbox encoder,
//! the publisher, the agent's follower (N of them in this process), the shared-window task.
//!
//!   fleetbench propagation --redis URL --followers 200 --rate 50 --bans 500
//!   fleetbench windows --redis URL --failures 200000
//!   fleetbench memory --redis URL --count 100000

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use jailsink::action::BanOrder;
use jailsink::config::JailSettings;
use jailsink::fleet::config::{compile, RawFleet};
use jailsink::fleet::follow::{self, Follower};
use jailsink::fleet::publish::CommitPath;
use jailsink::fleet::windows::{SharedCounter, BATCH};
use jailsink::fleet::FleetConfig;
use jailsink::jail::Jail;
use jailsink::metrics::JailMetrics;

/// Propagation samples (seconds) taken by the followers' histogram.
static SAMPLES: Mutex<Vec<f64>> = Mutex::new(Vec::new());
static SAMPLE_COUNT: AtomicU64 = AtomicU64::new(0);

/// A recorder that keeps the raw samples of the propagation histogram and drops the rest.
struct Capture;

struct Samples;

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        if let Ok(mut s) = SAMPLES.lock() {
            s.push(value);
        }
        SAMPLE_COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

impl metrics::Recorder for Capture {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == "jailsink_fleet_propagation_seconds" {
            metrics::Histogram::from_arc(Arc::new(Samples))
        } else {
            metrics::Histogram::noop()
        }
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn fleet(url: &str, role: &str, node: &str, prefix: &str) -> FleetConfig {
    let raw = RawFleet {
        redis: Some(url.to_string()),
        role: Some(role.into()),
        node: Some(node.into()),
        prefix: Some(prefix.into()),
        action: Some("log".into()),
        max_bans_per_minute: Some(0),
        shared_windows: Some(role == "sink"),
        ..Default::default()
    };
    let mut errors = Vec::new();
    let config = compile(&raw, Vec::new(), &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    config.expect("fleet config")
}

fn settings(maxretry: u32) -> JailSettings {
    JailSettings {
        bantime: Some(Duration::from_secs(3600)),
        findtime: Duration::from_secs(600),
        maxretry,
        ignore: Vec::new(),
        max_tracked: 10_000_000,
        ipv4_prefix: 32,
        ipv6_prefix: 128,
        max_bans_per_minute: None,
        increment: jailsink::config::compile::Increment {
            enabled: false,
            factor: 2.0,
            maxtime: Duration::from_secs(604_800),
            rndtime: Duration::ZERO,
        },
        detection: Default::default(),
    }
}

/// The i-th attacker address (198.18.0.0/15, the benchmarking range).
fn attacker(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn redis_cmd(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.expect("redis command")
}

async fn used_memory(url: &str) -> u64 {
    let info = redis_cmd(url, &["INFO", "memory"]).await;
    let text = match info {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// A sink's commit path: the state writer (outbox in the ban's transaction) and the publisher.
fn start_sink(
    config: &FleetConfig,
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> CommitPath {
    let mut ports = HashMap::new();
    ports.insert(
        "sshd".to_string(),
        (vec!["22".to_string()], "tcp".to_string()),
    );
    CommitPath::start(config, &dir.join("sink.db"), ports, shutdown.clone()).expect("commit path")
}

fn order(i: u32) -> BanOrder {
    BanOrder {
        target: attacker(i).into(),
        failures: 5,
        bantime: Some(Duration::from_secs(3600)),
        decided_at: Instant::now(),
        from_state: false,
        evidence: Default::default(),
    }
}

async fn propagation(args: &[String]) {
    let url = arg(args, "--redis", "redis://127.0.0.1:6379/0");
    let followers: usize = arg(args, "--followers", "1").parse().unwrap();
    let rate: f64 = arg(args, "--rate", "50").parse().unwrap();
    let bans: u32 = arg(args, "--bans", "500").parse().unwrap();
    let prefix = format!("bench{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..followers {
        let config = Arc::new(fleet(&url, "agent", &format!("agent-{i}"), &prefix));
        let held = follow::HeldBans::default();
        let f = Follower::start(
            config,
            HashMap::new(),
            follow::AgentAllowlists::fixed(Vec::new()),
            dir.path().join(format!("agent-{i}.db")),
            held,
            false,
        )
        .await;
        let client = redis::Client::open(url.as_str()).unwrap();
        tasks.push(tokio::spawn(follow::run(f, client, shutdown.clone())));
    }
    // Every follower has connected and reconciled once it has written its heartbeat.
    let nodes = format!("{prefix}:nodes");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let redis::Value::Int(n) = redis_cmd(&url, &["HLEN", &nodes]).await {
            if n as usize >= followers {
                break;
            }
        }
        assert!(Instant::now() < deadline, "followers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sink_config = fleet(&url, "sink", "sink-0", &prefix);
    let sink = start_sink(&sink_config, dir.path(), &shutdown);
    SAMPLES.lock().unwrap().clear();
    SAMPLE_COUNT.store(0, Ordering::Relaxed);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for i in 0..bans {
        tokio::time::sleep_until((start + gap * i).into()).await;
        assert!(sink.ban("sshd", order(i), 1).await);
    }
    let want = u64::from(bans) * followers as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while SAMPLE_COUNT.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut samples = SAMPLES.lock().unwrap().clone();
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "propagation followers={followers} rate={rate}/s bans={bans} applied={}/{want} p50={:.1}ms p99={:.1}ms max={:.1}ms (ms resolution: events carry Unix ms)",
        samples.len(),
        quantile(&samples, 0.5) * 1e3,
        quantile(&samples, 0.99) * 1e3,
        samples.last().copied().unwrap_or(f64::NAN) * 1e3,
    );
    shutdown.cancel();
    sink.finish();
    for t in tasks {
        if let Ok(threads) = t.await {
            for th in threads {
                let _ = th.join();
            }
        }
    }
    let pattern = format!("{prefix}:*");
    cleanup(&url, &pattern).await;
}

async fn cleanup(url: &str, pattern: &str) {
    loop {
        let keys = redis_cmd(url, &["KEYS", pattern]).await;
        let redis::Value::Array(keys) = keys else {
            break;
        };
        if keys.is_empty() {
            break;
        }
        let names: Vec<String> = keys
            .iter()
            .filter_map(|k| match k {
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        for chunk in names.chunks(1000) {
            let mut args = vec!["DEL"];
            args.extend(chunk.iter().map(String::as_str));
            redis_cmd(url, &args).await;
        }
    }
}

/// Counts `maxretry` failures of each of `attackers` through the shared windows, in
/// batches as the shared-window task takes them from its queue; returns (seconds, bans decided).
async fn shared_windows(url: &str, prefix: &str, attackers: u32, maxretry: u32) -> (f64, u64) {
    let config = fleet(url, "sink", "sink-w", prefix);
    let settings = settings(maxretry);
    let mut counter = SharedCounter::connect(&config).await.expect("redis");
    let jail: Arc<str> = Arc::from("sshd");
    let failures: Vec<(Arc<str>, IpAddr)> = (0..maxretry)
        .flat_map(|_| (0..attackers).map(|i| (jail.clone(), attacker(i))))
        .collect();
    let start = Instant::now();
    let mut decided = 0u64;
    for batch in failures.chunks(BATCH) {
        let out = counter.count(batch, &settings).await.expect("count");
        assert_eq!(out.len(), batch.len());
        decided += out.iter().filter(|d| d.is_some()).count() as u64;
    }
    (start.elapsed().as_secs_f64(), decided)
}

async fn windows_bench(args: &[String]) {
    let url = arg(args, "--redis", "redis://127.0.0.1:6379/0");
    let failures: u32 = arg(args, "--failures", "200000").parse().unwrap();
    let maxretry = 5;
    let attackers = failures / maxretry;
    let prefix = format!("benchw{}", std::process::id());
    let (secs, decided) = shared_windows(&url, &prefix, attackers, maxretry).await;
    let total = f64::from(attackers * maxretry);
    println!(
        "shared windows: {} failures ({attackers} attackers x {maxretry}) in {secs:.2}s = {:.0} failures/s, {decided} bans decided",
        attackers * maxretry,
        total / secs
    );
    cleanup(&url, &format!("{prefix}:*")).await;
    // The same failures through a jail's local windows, on this thread.
    let mut jail = Jail::new("sshd", settings(maxretry), JailMetrics::new("sshd"));
    let start = Instant::now();
    let now = tokio::time::Instant::now();
    let mut bans = 0;
    for _ in 0..maxretry {
        for i in 0..attackers {
            if let jailsink::jail::Decision::Ban(_) = jail.on_failure(attacker(i), 1, now) {
                bans += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "local windows: {} failures in {secs:.3}s = {:.0} failures/s, {bans} bans",
        attackers * maxretry,
        total / secs
    );
}

async fn memory(args: &[String]) {
    let url = arg(args, "--redis", "redis://127.0.0.1:6379/0");
    let count: u32 = arg(args, "--count", "100000").parse().unwrap();
    let prefix = format!("benchm{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    // Active bans: through the real commit path (outbox, publisher).
    let before = used_memory(&url).await;
    let config = fleet(&url, "sink", "sink-m", &prefix);
    let sink = start_sink(&config, dir.path(), &shutdown);
    for i in 0..count {
        assert!(sink.ban("sshd", order(i), 1).await);
    }
    let active = format!("{prefix}:active");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let redis::Value::Int(n) = redis_cmd(&url, &["ZCARD", &active]).await {
            if n as u32 >= count {
                break;
            }
        }
        assert!(Instant::now() < deadline, "bans not published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = used_memory(&url).await;
    let mut parts = Vec::new();
    for key in ["events", "active", "bans"] {
        let name = format!("{prefix}:{key}");
        if let redis::Value::Int(n) =
            redis_cmd(&url, &["MEMORY", "USAGE", &name, "SAMPLES", "0"]).await
        {
            parts.push(format!("{key} {:.0} B", n as f64 / f64::from(count)));
        }
    }
    println!(
        "active bans: {count} -> used_memory +{:.1} MB = {:.0} bytes per ban ({})",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / f64::from(count),
        parts.join(", ")
    );
    shutdown.cancel();
    sink.finish();
    cleanup(&url, &format!("{prefix}:*")).await;
    // Tracked attackers: one failure each (below maxretry) in the shared windows.
    let before = used_memory(&url).await;
    let (secs, _) = shared_windows(&url, &prefix, count, 1).await;
    let after = used_memory(&url).await;
    println!(
        "tracked attackers: {count} (one failure each, {secs:.2}s) -> used_memory +{:.1} MB = {:.0} bytes per attacker",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / f64::from(count)
    );
    cleanup(&url, &format!("{prefix}:*")).await;
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    metrics::set_global_recorder(Capture).expect("recorder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("propagation") => runtime.block_on(propagation(&args)),
        Some("windows") => runtime.block_on(windows_bench(&args)),
        Some("memory") => runtime.block_on(memory(&args)),
        _ => eprintln!("usage: fleetbench propagation|windows|memory --redis URL ..."),
    }
}
