//! Hostile input and faults: slow, endless and half-open senders, connection floods, log
//! injection, a poisoned log, pathological patterns, a read-only state database, and kill -9
//! in the middle of a burst of bans.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::lab::Netns;
use crate::support::{binary, config, wait_for, Daemon, SSHD};

fn line(msg: &str) -> String {
    format!("<38>Nov 29 18:52:53 vm sshd[1]: {msg}\n")
}

/// `n` sshd password failures of root from `ip`, as lines.
fn failures(ip: &str, n: usize) -> String {
    line(&format!("Failed password for root from {ip} port 22 ssh2")).repeat(n)
}

/// Whether `d` logs the sshd jail's ban of `ip` within `secs` seconds.
fn bans_within(d: &Daemon, ip: &str, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        d.logged(&format!("[sshd] Ban {ip}"))
    })
}

#[test]
fn a_byte_at_a_time_sender_is_served_and_blocks_nobody() {
    let d = Daemon::start(&config("", SSHD));
    let mut slow = TcpStream::connect(d.tcp).unwrap();
    let text = failures("192.0.2.50", 3);
    let mut fast = TcpStream::connect(d.tcp).unwrap();
    for (i, byte) in text.as_bytes().iter().enumerate() {
        slow.write_all(&[*byte]).unwrap();
        if i == text.len() / 2 {
            // Halfway through the slow sender, another connection is served at once.
            fast.write_all(failures("192.0.2.51", 3).as_bytes())
                .unwrap();
            assert!(bans_within(&d, "192.0.2.51", 10));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(bans_within(&d, "192.0.2.50", 10));
    assert!(d.stop().success());
}

#[test]
fn an_endless_frame_is_discarded_in_bounded_memory() {
    let d = Daemon::start(&config("max_message_bytes = 65536", SSHD));
    let before = d.rss_kib();
    let mut s = TcpStream::connect(d.tcp).unwrap();
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..64 {
        s.write_all(&chunk).unwrap();
    }
    s.write_all(b"\n").unwrap();
    s.write_all(failures("192.0.2.52", 3).as_bytes()).unwrap();
    assert!(bans_within(&d, "192.0.2.52", 20));
    d.wait_metric("jailsink_messages_dropped_total{reason=\"too_large\"}", 1.0);
    let grown = d.rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "64 MiB without a newline grew RSS by {grown} KiB"
    );
    assert!(d.stop().success());
}

#[test]
fn half_open_and_silent_connections_are_closed() {
    let d = Daemon::start(&config(r#"tcp_idle_timeout = "500ms""#, SSHD));
    let mut partial = TcpStream::connect(d.tcp).unwrap();
    partial
        .write_all(b"<38>Nov 29 18:52:53 vm sshd[1]: Failed pass")
        .unwrap();
    let _silent = TcpStream::connect(d.tcp).unwrap();
    d.wait_metric("jailsink_tcp_connections", 2.0);
    d.wait_metric("jailsink_tcp_connections", 0.0);
    assert_eq!(
        d.metric("jailsink_failures_total{jail=\"sshd\"}"),
        Some(0.0)
    );
    assert!(d.stop().success());
}

#[test]
fn a_connection_flood_is_refused_and_counted_then_service_resumes() {
    let d = Daemon::start(&config("max_tcp_connections = 20", SSHD));
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(d.tcp).ok())
        .collect();
    assert_eq!(flood.len(), 100);
    d.wait_metric("jailsink_tcp_connections", 20.0);
    d.wait_metric(
        "jailsink_messages_dropped_total{reason=\"connection_limit\"}",
        80.0,
    );
    drop(flood);
    d.wait_metric("jailsink_tcp_connections", 0.0);
    let mut s = TcpStream::connect(d.tcp).unwrap();
    s.write_all(failures("192.0.2.53", 3).as_bytes()).unwrap();
    assert!(bans_within(&d, "192.0.2.53", 10));
    assert!(d.stop().success());
}

/// One sender holding `max_tcp_connections_per_sender` is refused more (counted), and another
/// sender is still served.
#[test]
fn one_sender_cannot_take_every_connection_slot() {
    let d = Daemon::start(&config(
        "max_tcp_connections = 20\nmax_tcp_connections_per_sender = 3\nallowed_senders = [\"127.0.0.0/8\"]",
        SSHD,
    ));
    let flood: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(d.tcp).unwrap()).collect();
    d.wait_metric(
        "jailsink_messages_dropped_total{reason=\"connection_limit\"}",
        2.0,
    );
    d.wait_metric("jailsink_tcp_connections", 3.0);
    // Another sender address on the loopback.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    other.connect(&d.tcp.into()).unwrap();
    let mut other: TcpStream = other.into();
    other
        .write_all(failures("192.0.2.54", 3).as_bytes())
        .unwrap();
    assert!(bans_within(&d, "192.0.2.54", 10));
    d.wait_metric("jailsink_tcp_connections", 4.0);
    // The first sender's slots come back when its connections close.
    drop(flood);
    d.wait_metric("jailsink_tcp_connections", 1.0);
    let again: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(d.tcp).unwrap()).collect();
    d.wait_metric("jailsink_tcp_connections", 4.0);
    assert_eq!(
        d.metric("jailsink_messages_dropped_total{reason=\"connection_limit\"}"),
        Some(2.0)
    );
    drop(again);
    assert!(d.stop().success());
}

#[test]
fn injected_addresses_in_user_names_are_never_banned() {
    let d = Daemon::start(&config("", SSHD));
    let real = "192.0.2.77";
    let hostile = [
        format!("Invalid user 198.51.100.66 from {real} port 22"),
        format!("Failed password for invalid user x from 198.51.100.66 port 22 from {real} port 4242 ssh2"),
        format!("Failed password for invalid user \x1b[31m198.51.100.66\x1b[0m from {real} port 22 ssh2"),
        format!("Failed password for invalid user {} from {real} port 22 ssh2", "198.51.100.66 ".repeat(500)),
    ];
    let mut s = TcpStream::connect(d.tcp).unwrap();
    for msg in &hostile {
        s.write_all(line(msg).as_bytes()).unwrap();
    }
    // Text after the address is not sshd's: no match, no ban of anyone.
    s.write_all(
        line(&format!(
            "Invalid user x from {real} port 22 from 198.51.100.66"
        ))
        .as_bytes(),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || d
        .logged(&format!("[sshd] Ban {real}"))));
    let banned = d.cli_ok(&["banned", "--json"]);
    assert!(!banned.contains("198.51.100.66"), "{banned}");
    assert!(d.stop().success());
}

#[test]
fn a_poisoned_log_trips_the_ban_storm_guard() {
    let jail = SSHD.replace("maxretry = 3", "maxretry = 1\nmax_bans_per_minute = 3");
    let d = Daemon::start(&config("", &jail));
    let mut s = TcpStream::connect(d.tcp).unwrap();
    for n in 1..=10 {
        s.write_all(
            line(&format!(
                "Failed password for root from 192.0.2.{n} port 22 ssh2"
            ))
            .as_bytes(),
        )
        .unwrap();
    }
    d.wait_metric("jailsink_bans_withheld_total{jail=\"sshd\"}", 7.0);
    // Bans are counted once the state has committed them, which may trail the decision.
    d.wait_metric("jailsink_bans_total{jail=\"sshd\"}", 3.0);
    assert_eq!(d.metric("jailsink_ban_storm{jail=\"sshd\"}"), Some(1.0));
    // The log is read from the daemon's output by another thread: it may trail the metric.
    assert!(wait_for(Duration::from_secs(10), || {
        d.logged(
        "[sshd] ban storm guard engaged: bans withheld (an attack from many addresses, or a poisoned log)"
    )
    }));
    assert!(d.stop().success());
}

/// What a reload changes about a jail also changes its gauges and counters: turning the storm
/// guard off ends the storm (gauge 0), a removed jail's gauges go to 0, and evictions after a
/// window change are counted from the new window's first.
#[test]
fn a_reload_keeps_the_jail_metrics_true() {
    let jails = format!(
        "{}\n[jails.web]\nprograms = [\"sshd\"]\nfilter = \"sshd\"\nmaxretry = 9\nmax_tracked = 4\n",
        SSHD.replace("maxretry = 3", "maxretry = 1\nmax_bans_per_minute = 3")
    );
    let d = Daemon::start(&config("", &jails));
    let send = |from: u32, to: u32| {
        let mut s = TcpStream::connect(d.tcp).unwrap();
        for n in from..=to {
            let msg = format!("Failed password for root from 192.0.2.{n} port 22 ssh2");
            s.write_all(line(&msg).as_bytes()).unwrap();
        }
    };
    // Ten addresses: sshd bans three and withholds seven; web tracks four and evicts six.
    send(1, 10);
    d.wait_metric("jailsink_bans_withheld_total{jail=\"sshd\"}", 7.0);
    d.wait_metric("jailsink_tracked_evicted_total{jail=\"web\"}", 6.0);
    assert_eq!(d.metric("jailsink_ban_storm{jail=\"sshd\"}"), Some(1.0));
    assert_eq!(
        d.metric("jailsink_tracked_addresses{jail=\"web\"}"),
        Some(4.0)
    );

    // web's findtime changes (a new window); sshd's guard goes off.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let next = text
        .replace("max_bans_per_minute = 3", "max_bans_per_minute = 0")
        .replace("max_tracked = 4", "max_tracked = 4\nfindtime = \"20m\"");
    std::fs::write(&d.config, next).unwrap();
    let out = d.cli_ok(&["reload"]);
    assert!(out.contains("web: updated"), "{out}");
    assert_eq!(d.metric("jailsink_ban_storm{jail=\"sshd\"}"), Some(0.0));
    // Six more addresses, two evicted from the new window.
    send(11, 16);
    d.wait_metric("jailsink_tracked_evicted_total{jail=\"web\"}", 8.0);

    // web removed: its gauges go to zero.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let cut = text.find("[jails.web]").unwrap();
    std::fs::write(&d.config, &text[..cut]).unwrap();
    let out = d.cli_ok(&["reload"]);
    assert!(out.contains("web: removed"), "{out}");
    assert_eq!(
        d.metric("jailsink_tracked_addresses{jail=\"web\"}"),
        Some(0.0)
    );
    assert!(d.stop().success());
}

#[test]
fn pathological_patterns_are_refused_or_stay_linear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.toml");
    std::fs::write(
        &path,
        "[jails.x]\nfailregex = ['(?:x{1000}){1000}<HOST>']\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["-c", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jails.x.failregex[0]"));

    // A classic catastrophic-backtracking shape is linear in Rust's regex: a long hostile line
    // is simply a miss, and the daemon keeps serving.
    let jail = r#"
[jails.redos]
programs = ["app"]
failregex = ['^(a+)+$<HOST>', '^(\w+\s?)*from <HOST>$']
"#;
    let d = Daemon::start(&config("max_match_bytes = 65536", jail));
    let mut s = TcpStream::connect(d.tcp).unwrap();
    let evil = format!("<38>Nov 29 18:52:53 vm app: {}!\n", "a".repeat(60_000));
    let evil2 = format!("<38>Nov 29 18:52:53 vm app: {}!\n", "ab ".repeat(20_000));
    s.write_all(evil.as_bytes()).unwrap();
    s.write_all(evil2.as_bytes()).unwrap();
    d.wait_metric("jailsink_messages_received_total{transport=\"tcp\"}", 2.0);
    assert_eq!(
        d.metric("jailsink_failures_total{jail=\"redos\"}"),
        Some(0.0)
    );
    assert!(d.stop().success());
}

#[test]
fn a_full_disk_keeps_banning_in_memory_and_recovers() {
    crate::lab::require_root();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let text = config("", SSHD).replace("@DIR@/state.db", "@DIR@/state/state.db");
    // A small private tmpfs in a private mount namespace: the test fills it under the daemon
    // (through /proc/PID/root) without touching the host's file systems.
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs {} && exec \"$0\" \"$@\"",
        state_dir.display()
    );
    let d = Daemon::start_in(
        dir,
        &text,
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    );
    let inside = format!("/proc/{}/root{}", d.pid(), state_dir.display());
    let mut s = TcpStream::connect(d.tcp).unwrap();
    s.write_all(failures("192.0.2.60", 3).as_bytes()).unwrap();
    assert!(wait_for(Duration::from_secs(10), || d
        .count_prefix("would ban 192.0.2.60")
        == 1));
    let filler = format!("{inside}/filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    drop(f);
    let mut n = 0;
    // Each ban is applied although the state cannot take it.
    while d.metric("jailsink_state_errors_total") == Some(0.0) && n < 50 {
        n += 1;
        s.write_all(
            line(&format!(
                "Failed password for root from 198.51.100.{n} port 22 ssh2"
            ))
            .repeat(3)
            .as_bytes(),
        )
        .unwrap();
        let ip = format!("198.51.100.{n}");
        assert!(wait_for(Duration::from_secs(10), || d
            .count_prefix(&format!("would ban {ip}"))
            == 1));
    }
    assert!(
        d.metric("jailsink_state_errors_total").unwrap() >= 1.0,
        "the full disk never failed a write"
    );
    assert!(d.logged("cannot write state; bans continue in memory"));
    std::fs::remove_file(&filler).unwrap();
    s.write_all(failures("192.0.2.62", 3).as_bytes()).unwrap();
    assert!(wait_for(Duration::from_secs(10), || d
        .logged("state database writable again")));
    // Read the database where the daemon sees it (sqlite would resolve /proc/PID/root away).
    let out = Command::new("nsenter")
        .args(["-t", &d.pid().to_string(), "-m", "sqlite3"])
        .arg(state_dir.join("state.db"))
        .arg("SELECT target FROM bans")
        .output()
        .expect("nsenter and sqlite3");
    let stored = String::from_utf8_lossy(&out.stdout);
    for ip in ["192.0.2.60/32", "192.0.2.62/32", "198.51.100.1/32"] {
        assert!(
            stored.contains(ip),
            "{ip} missing from the state after recovery: {stored}"
        );
    }
    assert!(d.stop().success());
}

/// The config of an sshd jail banning at the second failure through iptables, and a daemon
/// started on it inside `ns`.
fn iptables_sshd(ns: &Netns) -> (String, Daemon) {
    let jail = SSHD.replace("maxretry = 3", "maxretry = 2\naction = \"iptables\"");
    let text = config("", &jail);
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &text, &ns.prefix());
    (text, d)
}

#[test]
fn a_state_database_that_cannot_be_read_lifts_no_firewall_ban() {
    let ns = Netns::new("unread");
    let (text, d) = iptables_sshd(&ns);
    // The daemon's loopback is the namespace's.
    let file = d.config.with_file_name("failures.log");
    std::fs::write(&file, failures("198.51.100.7", 2)).unwrap();
    let send = format!(
        "cat {} > /dev/tcp/127.0.0.1/{}",
        file.display(),
        d.tcp.port()
    );
    ns.run(&["bash", "-c", &send]);
    assert!(wait_for(Duration::from_secs(10), || d
        .count_prefix("[sshd] Ban 198.51.100.7")
        == 1));
    let chain_holds = || {
        ns.run(&["iptables-save", "-t", "filter"])
            .contains("-A jailsink-sshd -s 198.51.100.7/32")
    };
    assert!(wait_for(Duration::from_secs(10), chain_holds));
    // A crash leaves the chain; then the state file is damaged beyond reading.
    let dir = d.kill9();
    let db = dir.path().join("state.db");
    for extra in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{extra}", db.display()));
    }
    std::fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    let d = Daemon::start_in(dir, &text, &ns.prefix());
    assert!(d.logged("cannot open the state database; bans will not survive a restart, and the firewall keeps what it holds")
        || d.logged("cannot read active bans; the firewall keeps what it holds"));
    // Started (ready) with the runner reconciled: the ban the state lost is still enforced.
    assert!(
        chain_holds(),
        "the unreadable state lifted the firewall's ban"
    );
    assert!(d.count_prefix("[sshd] kept 1 firewall entries") == 1);
    assert!(d.stop().success());
}

#[test]
fn kill_9_during_a_burst_leaves_state_and_firewall_in_agreement() {
    let ns = Netns::new("burst");
    let (text, d) = iptables_sshd(&ns);
    let mut burst = String::new();
    for n in 0..150u32 {
        let ip = format!("198.51.100.{}", n % 150 + 1);
        burst.push_str(&failures(&ip, 2));
    }
    let file = d.config.with_file_name("burst.log");
    std::fs::write(&file, burst).unwrap();
    let send = format!(
        "cat {} > /dev/tcp/127.0.0.1/{}",
        file.display(),
        d.tcp.port()
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name, "bash", "-c", &send])
        .status()
        .unwrap();
    assert!(status.success());
    // Kill in the middle of applying the burst.
    assert!(wait_for(Duration::from_secs(10), || d
        .count_prefix("[sshd] Ban")
        >= 20));
    let dir = d.kill9();
    let d = Daemon::start_in(dir, &text, &ns.prefix());
    let listed = || -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["banned", "--json"])).unwrap();
        let mut v: Vec<String> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["ip"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let in_firewall = || -> Vec<String> {
        let rules = ns.run(&["iptables-save", "-t", "filter"]);
        let mut v: Vec<String> = rules
            .lines()
            .filter_map(|l| l.strip_prefix("-A jailsink-sshd -s "))
            .map(|l| l.split('/').next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let agree = wait_for(Duration::from_secs(10), || {
        let fw = in_firewall();
        !fw.is_empty() && fw == listed()
    });
    let fw = in_firewall();
    let mut dedup = fw.clone();
    dedup.dedup();
    assert!(agree, "state {:?}\nfirewall {:?}", listed(), fw);
    assert_eq!(fw, dedup, "duplicated rules");
    assert!(d.stop().success());
}
