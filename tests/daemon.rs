//! The daemon end to end on loopback: real `logger` over UDP, TCP and octet-counted TCP, the
//! captured rsyslog streams replayed, bans seen in /metrics and in the log, limits counted.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::support::{config, fixture, logger, wait_for, Daemon};

const SSHD_JAIL: &str = r#"
[jails.sshd]
programs = ["sshd"]
failregex = ['^Failed password for (?:invalid user )?\S+ from <HOST> port \d+(?: ssh2)?$']
maxretry = 3
bantime = "1h"
"#;

fn failed(ip: &str) -> String {
    format!("Failed password for invalid user admin from {ip} port 4242 ssh2")
}

#[test]
fn every_series_exists_at_zero_from_start_up() {
    let d = Daemon::start(&config("", SSHD_JAIL));
    let text = d.scrape();
    for series in [
        "jailsink_failures_total{jail=\"sshd\"} 0",
        "jailsink_bans_total{jail=\"sshd\"} 0",
        "jailsink_unbans_total{jail=\"sshd\"} 0",
        "jailsink_banned{jail=\"sshd\"} 0",
        "jailsink_tracked_addresses{jail=\"sshd\"} 0",
        "jailsink_messages_received_total{transport=\"udp\"} 0",
        "jailsink_messages_received_total{transport=\"tcp\"} 0",
        "jailsink_messages_dropped_total{reason=\"queue_full\"} 0",
        "jailsink_tcp_connections 0",
    ] {
        assert!(text.contains(series), "missing `{series}` in\n{text}");
    }
    assert!(
        text.contains("# TYPE jailsink_ban_latency_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("jailsink_build_info{version="), "{text}");
    assert!(d.stop().success());
}

#[test]
fn logger_over_udp_tcp_and_octet_counting_leads_to_bans() {
    let d = Daemon::start(&config("", SSHD_JAIL));
    let (udp, tcp) = (d.udp.port().to_string(), d.tcp.port().to_string());
    let cases: [(&str, &[&str]); 5] = [
        ("192.0.2.11", &["-d", "-P", &udp, "--rfc3164"]),
        ("192.0.2.12", &["-d", "-P", &udp, "--rfc5424"]),
        ("192.0.2.13", &["-T", "-P", &tcp, "--rfc3164"]),
        ("192.0.2.14", &["-T", "-P", &tcp, "--rfc5424"]),
        (
            "2001:db8::15",
            &["-T", "-P", &tcp, "--rfc5424", "--octet-count"],
        ),
    ];
    for (ip, transport) in cases {
        for _ in 0..3 {
            let mut args = vec!["-n", "127.0.0.1", "-t", "sshd", "-i"];
            args.extend_from_slice(transport);
            let message = failed(ip);
            args.push(&message);
            logger(&[], &args);
        }
        let line = format!("[sshd] Ban {ip}");
        assert!(
            wait_for(Duration::from_secs(10), || d.logged(&line)),
            "no `{line}` after logger {transport:?}: {:#?}",
            d.logs.lock().unwrap()
        );
    }
    d.wait_metric("jailsink_bans_total{jail=\"sshd\"}", 5.0);
    d.wait_metric("jailsink_banned{jail=\"sshd\"}", 5.0);
    d.wait_metric("jailsink_failures_total{jail=\"sshd\"}", 15.0);
    // The log action saw each ban, and the latency histogram has one sample per ban.
    assert!(wait_for(Duration::from_secs(5), || d
        .count_prefix("would ban")
        == 5));
    d.wait_metric("jailsink_ban_latency_seconds_count{jail=\"sshd\"}", 5.0);
    // The ban line carries failures and duration.
    let logs = d.logs.lock().unwrap().clone();
    let ban = logs
        .iter()
        .find(|e| e["message"] == "[sshd] Ban 192.0.2.11")
        .unwrap();
    assert_eq!(ban["failures"], 3);
    assert_eq!(ban["bantime"], "1h");
    assert!(d.stop().success());
}

#[test]
fn captured_rsyslog_streams_replay_with_every_frame_counted() {
    let d = Daemon::start(&config("", SSHD_JAIL));
    let streams: [(&str, u32); 7] = include!("fixtures/syslog/stream_frames.rs");
    let mut total = 0.0;
    for (name, frames) in streams {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let mut stream = TcpStream::connect(d.tcp).unwrap();
        stream.write_all(&bytes).unwrap();
        drop(stream);
        total += frames as f64;
        d.wait_metric("jailsink_messages_received_total{transport=\"tcp\"}", total);
    }
    // Failures from 203.0.113.5 in those streams: 4 per phase-1 stream (01, 10, 12 and the BOM
    // copy), rs2 streams 1 + a repeat summary of 3, and the logger stream's 6: enough to ban.
    assert!(wait_for(Duration::from_secs(10), || d
        .logged("[sshd] Ban 203.0.113.5")));
    // The two "line two" halves split by raw newlines are unparseable and counted.
    d.wait_metric(
        "jailsink_messages_dropped_total{reason=\"unparseable\"}",
        3.0,
    );
    assert!(d.stop().success());
}

#[test]
fn senders_outside_allowed_senders_are_dropped_and_counted() {
    let d = Daemon::start(&config(r#"allowed_senders = ["192.0.2.0/24"]"#, SSHD_JAIL));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(
            format!("<38>Nov 29 18:52:53 vm sshd[1]: {}", failed("192.0.2.20")).as_bytes(),
            d.udp,
        )
        .unwrap();
    let mut stream = TcpStream::connect(d.tcp).unwrap();
    let _ = stream.write_all(b"<38>Nov 29 18:52:53 vm sshd[1]: hello\n");
    d.wait_metric(
        "jailsink_messages_dropped_total{reason=\"sender_not_allowed\"}",
        2.0,
    );
    assert_eq!(
        d.metric("jailsink_failures_total{jail=\"sshd\"}"),
        Some(0.0)
    );
    assert!(d.stop().success());
}

#[test]
fn oversized_messages_are_dropped_and_the_connection_goes_on() {
    let d = Daemon::start(&config("max_message_bytes = 1024", SSHD_JAIL));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut big = b"<38>Nov 29 18:52:53 vm sshd[1]: ".to_vec();
    big.resize(1025, b'A');
    socket.send_to(&big, d.udp).unwrap();
    let mut stream = TcpStream::connect(d.tcp).unwrap();
    let mut frame = big.clone();
    frame.resize(5000, b'A');
    frame.push(b'\n');
    for _ in 0..3 {
        frame.extend_from_slice(
            format!("<38>Nov 29 18:52:53 vm sshd[1]: {}\n", failed("192.0.2.30")).as_bytes(),
        );
    }
    stream.write_all(&frame).unwrap();
    d.wait_metric("jailsink_messages_dropped_total{reason=\"too_large\"}", 2.0);
    assert!(wait_for(Duration::from_secs(10), || d
        .logged("[sshd] Ban 192.0.2.30")));
    // A malformed octet count closes that connection, counted; the listener keeps serving.
    let mut bad = TcpStream::connect(d.tcp).unwrap();
    bad.write_all(b"0 <38>x").unwrap();
    d.wait_metric(
        "jailsink_messages_dropped_total{reason=\"unparseable\"}",
        1.0,
    );
    assert!(d.stop().success());
}

#[test]
fn connections_past_the_limit_are_refused_and_counted() {
    let d = Daemon::start(&config("max_tcp_connections = 2", SSHD_JAIL));
    let _a = TcpStream::connect(d.tcp).unwrap();
    let _b = TcpStream::connect(d.tcp).unwrap();
    d.wait_metric("jailsink_tcp_connections", 2.0);
    let _c = TcpStream::connect(d.tcp).unwrap();
    d.wait_metric(
        "jailsink_messages_dropped_total{reason=\"connection_limit\"}",
        1.0,
    );
    drop(_a);
    d.wait_metric("jailsink_tcp_connections", 1.0);
    assert!(d.stop().success());
}

#[test]
fn idle_connections_are_closed() {
    let d = Daemon::start(&config(r#"tcp_idle_timeout = "300ms""#, SSHD_JAIL));
    let _idle = TcpStream::connect(d.tcp).unwrap();
    d.wait_metric("jailsink_tcp_connections", 1.0);
    d.wait_metric("jailsink_tcp_connections", 0.0);
    assert!(d.stop().success());
}

#[test]
fn bans_expire_after_bantime() {
    let jail = SSHD_JAIL.replace("bantime = \"1h\"", "bantime = \"1s\"");
    let d = Daemon::start(&config("", &jail));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        socket
            .send_to(
                format!("<38>Nov 29 18:52:53 vm sshd[1]: {}", failed("192.0.2.40")).as_bytes(),
                d.udp,
            )
            .unwrap();
    }
    assert!(wait_for(Duration::from_secs(10), || d
        .logged("[sshd] Ban 192.0.2.40")));
    assert!(wait_for(Duration::from_secs(10), || d
        .logged("[sshd] Unban 192.0.2.40")));
    d.wait_metric("jailsink_unbans_total{jail=\"sshd\"}", 1.0);
    d.wait_metric("jailsink_banned{jail=\"sshd\"}", 0.0);
    assert!(d.stop().success());
}

#[test]
fn check_reports_every_error_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[jails.a]\nfailregex = ['no host']\nmaxretry = -1\n").unwrap();
    let out = Command::new(crate::support::binary())
        .args(["-c", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml: jails.a.maxretry:"), "{err}");
    assert!(
        err.contains("bad.toml: jails.a.failregex[0]: no <HOST>"),
        "{err}"
    );
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/jailsink.toml");
    let out = Command::new(crate::support::binary())
        .args(["-c", shipped, "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sshd:") && text.contains("smtp-auth:"),
        "{text}"
    );
}

/// `--filter-option` runs a filter as a jail's `filter_options` would: the shipped sshd filter
/// (aggressive by default) in mode normal misses a banner probe it otherwise matches; a mode
/// the filter lacks, or an option on a literal regex, is an error (exit 78) that names it.
#[test]
fn regex_runs_a_native_filter_in_the_mode_a_jail_gives_it() {
    let filter = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/filter.d/sshd.toml");
    let probe = "Nov 29 18:52:53 vm sshd[7375]: Did not receive identification string from 203.0.113.9 port 4242";
    let run = |extra: &[&str], filter: &str| {
        let mut args = vec!["-c", "/nonexistent", "regex"];
        args.extend(extra);
        args.extend([probe, filter]);
        Command::new(crate::support::binary())
            .args(&args)
            .output()
            .unwrap()
    };
    let summary = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find(|l| l.starts_with("Lines:"))
            .unwrap_or_default()
            .to_string()
    };
    let default = summary(&run(&[], filter));
    assert!(default.contains("1 matched"), "{default}");
    let normal = summary(&run(&["--filter-option", "mode=normal"], filter));
    assert!(normal.contains("0 matched, 1 missed"), "{normal}");
    let aggressive = summary(&run(&["--filter-option", "mode=aggressive"], filter));
    assert!(aggressive.contains("1 matched"), "{aggressive}");
    let bad = run(&["--filter-option", "mode=paranoid"], filter);
    assert_eq!(bad.status.code(), Some(78));
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(
        why.contains("filter_options.mode") && why.contains("paranoid"),
        "{why}"
    );
    let literal = run(&["--filter-option", "mode=normal"], "^Did not <HOST>");
    assert_eq!(literal.status.code(), Some(78));
    let malformed = run(&["--filter-option", "mode"], filter);
    assert!(!malformed.status.success());
}

#[test]
fn regex_tests_a_filter_against_a_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(
        &log,
        "Nov 29 18:52:53 vm sshd[7375]: Failed password for invalid user admin from 203.0.113.5 port 4242 ssh2\n\
         Nov 29 18:52:54 vm sshd[7376]: Accepted publickey for root from 198.51.100.1 port 50000 ssh2\n",
    )
    .unwrap();
    let regex = r"^Failed password for (?:invalid user )?<F-USER>\S+</F-USER> from <HOST> port \d+";
    let out = Command::new(crate::support::binary())
        .args(["-c", "/nonexistent", "regex", log.to_str().unwrap(), regex])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Lines: 2 lines, 0 ignored, 1 matched, 1 missed"),
        "{text}"
    );
    assert!(text.contains("203.0.113.5"), "{text}");
    let out = Command::new(crate::support::binary())
        .args([
            "-c",
            "/nonexistent",
            "regex",
            "--json",
            log.to_str().unwrap(),
            regex,
        ])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["result"], "matched");
    assert_eq!(lines[0]["host"], "203.0.113.5");
    assert_eq!(lines[0]["user"], "admin");
    assert_eq!(lines[0]["regex"], 0);
    assert!(lines[0]["time"]
        .as_str()
        .unwrap()
        .ends_with("-11-29T18:52:53"));
    assert_eq!(lines[1]["result"], "missed");
    assert_eq!(lines[1]["host"], serde_json::Value::Null);
}
