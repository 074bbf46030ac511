//! Smoke runs of every benchmark of bench/ with tiny sizes, so the tool and its scripts cannot rot.
//! Nothing here asserts a speed: only that each measurement runs to its end and counts right.

use std::path::{Path, PathBuf};

use clap::Parser;

#[allow(dead_code)]
#[path = "../benches/jailbench/main.rs"]
mod jailbench;

use crate::support::binary;

/// Parses a jailbench command line as the tool does.
fn parse(args: &[&str]) -> jailbench::Job {
    let argv = std::iter::once("jailbench").chain(args.iter().copied());
    match jailbench::Cli::try_parse_from(argv) {
        Ok(cli) => cli.job,
        Err(error) => panic!("jailbench {}: {error}", args.join(" ")),
    }
}

fn run(args: &[&str]) {
    if let Err(error) = jailbench::dispatch(parse(args)) {
        panic!("jailbench {}: {error}", args.join(" "));
    }
}

/// A 3,000-line corpus of 40 attackers, in a new directory (removed when the returned handle
/// drops), and its truth.
fn small_corpus() -> (tempfile::TempDir, PathBuf, jailbench::corpus::Truth) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let c = corpus.to_str().unwrap();
    run(&["corpus", "--lines", "3000", "--pool", "40", "--out", c]);
    let truth = jailbench::corpus::Truth::read(&corpus.join("truth.txt")).unwrap();
    (dir, corpus, truth)
}

#[test]
fn corpus_offline_and_live_tcp_udp() {
    let (dir, corpus, truth) = small_corpus();
    let c = corpus.to_str().unwrap();
    assert_eq!(truth.lines, 3000);
    let share = truth.sshd_failures as f64 / truth.lines as f64;
    assert!((0.15..0.25).contains(&share), "sshd share {share}");
    for ip in truth.sshd_hosts.keys() {
        assert!(
            ["192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:"]
                .iter()
                .any(|p| ip.starts_with(p)),
            "{ip} is not a documentation address"
        );
    }
    // Offline: jailsink, sshguard's parser and fail2ban-regex on the same file (fail2ban-rs is a
    // crates.io install that bench/offline.sh makes; too slow to build here).
    let jailbench::Job::Offline(args) = parse(&["offline", "--corpus", c, "--jailsink", binary()])
    else {
        unreachable!("offline parses as offline")
    };
    let rows = jailbench::offline::offline(&args).unwrap();
    for tool in ["jailsink", "fail2ban-regex"] {
        let row = rows.iter().find(|r| r.tool == tool).unwrap();
        assert_eq!(row.found, truth.sshd_failures, "{tool}");
    }
    assert!(rows.iter().any(|r| r.tool == "sshguard" && r.found > 0));
    // `jailsink regex` on one thread and on two, side by side (jailsink alone).
    let offline = ["offline", "--corpus", c, "--jailsink", binary()];
    let threads = [
        "--jailsink-threads",
        "1,2",
        "--skip",
        "sshguard,fail2ban-regex",
    ];
    let jailbench::Job::Offline(args) = parse(&[&offline[..], &threads].concat()) else {
        unreachable!("offline parses as offline")
    };
    let rows = jailbench::offline::offline(&args).unwrap();
    assert_eq!(rows.len(), 2);
    for tool in ["jailsink-t1", "jailsink-t2"] {
        let row = rows.iter().find(|r| r.tool == tool).unwrap();
        assert_eq!(row.found, truth.sshd_failures, "{tool}");
    }
    // Live TCP, jailsink and a private rsyslogd, every message counted; then UDP.
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("rsyslogd (scripts/test installs it)");
    run(&[
        "live-tcp",
        "--corpus",
        c,
        "--jailsink",
        binary(),
        "--rsyslogd",
        rsyslogd,
        "--connections",
        "2",
        "--timeout",
        "30",
        "--tail",
        "--one-core",
    ]);
    // UDP from both senders (the C blaster compiled as bench/live-udp.sh does), the corpus and
    // a small botnet, every address of which must be banned; the daemon measured twice, as
    // "before" and "after".
    let gcc = crate::support::tool("gcc", "gcc");
    let blaster = dir.path().join("udp-blaster");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/udp-blaster.c");
    let built = std::process::Command::new(gcc)
        .arg("-O2")
        .arg("-o")
        .arg(&blaster)
        .arg(&source)
        .status()
        .unwrap();
    assert!(built.success(), "gcc bench/udp-blaster.c failed");
    let jailbench::Job::LiveUdp(args) = parse(&[
        "live-udp",
        "--corpus",
        c,
        "--jailsink",
        binary(),
        "--before",
        binary(),
        "--blaster",
        blaster.to_str().unwrap(),
        "--botnet",
        "300",
        "--rates",
        "5000",
        "--seconds",
        "1",
    ]) else {
        unreachable!("live-udp parses as live-udp")
    };
    let rows = jailbench::udp::live_udp(&args).unwrap();
    // 2 streams x 2 senders x 1 rate x 2 binaries.
    assert_eq!(rows.len(), 8, "{rows:?}");
    for r in &rows {
        assert_eq!(r.received, r.sent, "nothing is lost at 5,000 msg/s: {r:?}");
        assert_eq!(r.kernel_drops, Some(0), "{r:?}");
    }
    for r in rows.iter().filter(|r| r.stream != "corpus") {
        assert_eq!(r.sent, 2 * 5 * 300, "{r:?}");
        assert_eq!(r.bans, 300, "every botnet address is banned: {r:?}");
    }
    // TLS next to TCP, every message counted on both, and a few full handshakes.
    let jailbench::Job::LiveTls(args) = parse(&[
        "live-tls",
        "--corpus",
        c,
        "--jailsink",
        binary(),
        "--connections",
        "2",
        "--handshakes",
        "20",
        "--timeout",
        "30",
    ]) else {
        unreachable!("live-tls parses as live-tls")
    };
    let rows = jailbench::tls::live_tls(&args).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.messages == 3000), "{rows:?}");
}

#[test]
fn every_filter_next_to_sshd_alone() {
    let (_dir, corpus, truth) = small_corpus();
    let c = corpus.to_str().unwrap();
    let jailbench::Job::Filters(args) = parse(&[
        "filters",
        "--corpus",
        c,
        "--jailsink",
        binary(),
        "--rounds",
        "1",
    ]) else {
        unreachable!("filters parses as filters")
    };
    let run = jailbench::filters::filters(&args).unwrap();
    assert_eq!(run.offline[0].1, truth.sshd_failures);
    // every sshd failure, and the sendmail AUTH failures the library's filter finds too
    assert_eq!(
        run.offline[1].1,
        truth.sshd_failures + truth.sendmail_failures
    );
    assert_eq!(run.live.len(), 3);
}

#[test]
fn attackers_latency_restore_idle() {
    // Batched (64, the daemon's batching) and one by one; then batches of 7 with evidence.
    let attackers = ["attackers", "--counts", "100,2000", "--rounds", "2"];
    run(&[&attackers[..], &["--min-timed", "1000"]].concat());
    let evidence = ["--batch", "7", "--min-timed", "0", "--evidence"];
    run(&[&attackers[..], &evidence].concat());
    // Each timed round in its own random order, the batched path alone (its profile's form).
    let shuffled = ["--min-timed", "0", "--shuffle", "--batched-only"];
    run(&[&attackers[..], &shuffled].concat());
    run(&[
        "latency",
        "--jailsink",
        binary(),
        "--bans",
        "40",
        "--rate",
        "400",
    ]);
    run(&["restore", "--jailsink", binary(), "--bans", "300"]);
    // Two binaries alternated (here the same one twice), with the anonymous/file-backed split.
    run(&["idle", "--jailsink", binary(), "--against", binary()]);
    // The ban feed of 2,500 bans (three pages), two binaries in turn.
    let feed = ["feed", "--jailsink", binary(), "--against", binary()];
    run(&[&feed[..], &["--bans", "2500", "--repeat", "2"]].concat());
}

/// A firewall restore measurement (bench/restore.sh IPTABLES=1 or NFTABLES=1) with 300 bans
/// in a namespace of its own: refused outside one, then every persisted ban reaches the
/// firewall, and a kill -9 restart reconciles them.
fn restore_in_a_namespace(action: &str, ns: &str) {
    let jailbench::Job::Restore(args) = parse(&[
        "restore",
        "--jailsink",
        binary(),
        "--bans",
        "300",
        "--action",
        action,
    ]) else {
        unreachable!("restore parses as restore")
    };
    // Outside a namespace it refuses rather than touch this host's firewall.
    let refused = jailbench::restore::restore(&args).unwrap_err();
    assert!(refused.contains("network namespace"), "{refused}");
    let ns = crate::lab::Netns::new(ns);
    ns.within(move || jailbench::restore::restore(&args))
        .unwrap();
}

#[test]
fn restore_with_iptables_in_a_namespace() {
    restore_in_a_namespace("iptables", "rst");
}

#[test]
fn restore_with_nftables_in_a_namespace() {
    crate::support::tool("nft", "nftables");
    restore_in_a_namespace("nftables", "rsn");
}

#[test]
fn the_scripts_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    let mut scripts = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            scripts += 1;
            let status = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success(), "{}", path.display());
        }
    }
    assert!(scripts >= 7);
}
