//! Bans by hand in bulk and by network: `ban JAIL --file` with its summary by line, CIDR bans
//! that drop a whole attacker network in a namespace, networks that hold an ignored address
//! refused, and `--bantime` honoured.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::lab::{Lab, Netns};
use crate::operate::{banned, jail};
use crate::support::{config, wait_for, Daemon};

/// Asserts that a listed ban lasts `secs`. The stamps are whole seconds, each cut from its own
/// clock reading (banned_at when decided, expires_at from the deadline when listed), so the
/// difference may come out one second short.
fn assert_lasts(ban: &serde_json::Value, secs: i64) {
    let at = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let lasts = at(&ban["expires_at"]) - at(&ban["banned_at"]);
    assert_eq!(lasts, secs, "{ban}");
}

/// The line numbers of one category of a summary.
fn lines_of(summary: &serde_json::Value, key: &str) -> Vec<u64> {
    summary[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["line"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_file_of_10000_lines_is_banned_with_a_summary_by_line_and_unbanned_again() {
    let d = Daemon::start(&config("", &jail("ignoreip = [\"10.1.2.3\"]")));
    d.cli_ok(&["ban", "sshd", "198.18.0.5"]);
    // 10,000 lines: a comment and a blank line, then addresses of 198.18.0.0/15, among them a
    // line already banned by hand, a duplicate, an ignored address, a network holding an
    // ignored address, a network, and three lines that are no target.
    let mut text = String::from("# a blocklist\n\n");
    let (mut already, mut ignored, mut invalid) = (vec![], vec![], vec![]);
    let mut want_banned = 0;
    for n in 3..=10_000u64 {
        let line = match n {
            100 => {
                already.push(n);
                "198.18.0.5".to_string()
            }
            101 => {
                already.push(n);
                // Line 3's address, again.
                "198.18.100.3 # twice".to_string()
            }
            200 => {
                ignored.push(n);
                "10.1.2.3".to_string()
            }
            201 => {
                ignored.push(n);
                "10.0.0.0/8".to_string()
            }
            300 => {
                want_banned += 1;
                "203.0.113.0/24 ; a network".to_string()
            }
            400..=402 => {
                invalid.push(n);
                ["bogus", "300.1.1.1", "192.0.2.0/33"][(n - 400) as usize].to_string()
            }
            _ => {
                want_banned += 1;
                format!("198.18.{}.{}", n / 256 + 100, n % 256)
            }
        };
        writeln!(text, "{line}").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocklist.txt");
    std::fs::write(&path, &text).unwrap();
    let path = path.to_str().unwrap();

    let out = d.cli(&["ban", "sshd", "--file", path, "--json", "--bantime", "2h"]);
    // Invalid and ignored lines make it exit 1, after applying everything else.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["done"], want_banned, "{summary}");
    assert_eq!(lines_of(&summary, "unchanged"), already);
    assert_eq!(lines_of(&summary, "ignored"), ignored);
    assert_eq!(lines_of(&summary, "invalid"), invalid);
    let reason = summary["ignored"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("10.0.0.0/8 contains 10.1.2.3 of ignoreip"),
        "{reason}"
    );
    assert_eq!(
        summary["invalid"][0]["reason"],
        "`bogus` is not an IP address"
    );

    let bans = banned(&d);
    assert_eq!(bans.len() as u64, want_banned + 1);
    let net = bans.iter().find(|b| b["ip"] == "203.0.113.0/24").unwrap();
    assert_lasts(net, 7200);
    d.wait_metric("jailsink_banned{jail=\"sshd\"}", (want_banned + 1) as f64);

    // The human summary says the same.
    let again = d.cli(&["ban", "sshd", "--file", path]);
    let shown = String::from_utf8_lossy(&again.stdout);
    assert!(
        shown.starts_with(&format!(
            "[sshd] banned 0 of 9998 lines; already banned {}, ignored 2, invalid 3\n",
            want_banned + 2
        )),
        "{shown}"
    );
    assert!(
        shown.contains("\nline 3: already banned: 198.18.100.3 is already banned in sshd\n"),
        "{shown}"
    );
    // Bounded: the first 100 lines not applied, then a count.
    assert_eq!(shown.lines().count(), 102, "{shown}");
    assert!(
        shown.ends_with("... and 9898 more lines not applied (--json lists them all)\n"),
        "{shown}"
    );

    let out = d.cli(&["unban", "sshd", "--file", path, "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["done"], want_banned + 1, "{summary}");
    // The duplicate is not banned any more by then, nor are the ignored lines.
    assert_eq!(lines_of(&summary, "unchanged"), [101, 200, 201]);
    assert_eq!(banned(&d).len(), 0);
    let errors = d.errors();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(d.stop().success());
}

#[test]
fn bantime_is_honoured_and_an_ignored_network_is_refused() {
    let d = Daemon::start(&config("", &jail("ignoreip = [\"192.0.2.77\"]")));
    d.cli_ok(&["ban", "sshd", "198.51.100.1", "--bantime", "permanent"]);
    d.cli_ok(&["ban", "sshd", "198.51.100.2", "--bantime", "90m"]);
    d.cli_ok(&["ban", "sshd", "198.51.100.3", "--bantime", "2s"]);
    // fail2ban's spelling of permanent, as a value, not an option.
    d.cli_ok(&["ban", "sshd", "198.51.100.4", "--bantime", "-1"]);
    let bans = banned(&d);
    let of = |ip: &str| bans.iter().find(|b| b["ip"] == ip).unwrap().clone();
    assert_eq!(of("198.51.100.1")["expires_at"], serde_json::Value::Null);
    assert_eq!(of("198.51.100.4")["expires_at"], serde_json::Value::Null);
    // --json is the summary of --file: alone it is a usage error, not ignored.
    let out = d.cli(&["ban", "sshd", "198.51.100.5", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json"));
    let out = d.cli(&["unban", "sshd", "198.51.100.1", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let b = of("198.51.100.2");
    assert_lasts(&b, 5400);
    // The jail's bantime is an hour: only --bantime can lift this one in seconds.
    assert!(
        wait_for(Duration::from_secs(10), || d
            .logged("[sshd] Unban 198.51.100.3")),
        "the 2s ban was not lifted"
    );

    let out = d.cli(&["ban", "sshd", "192.0.2.0/24"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("192.0.2.0/24 contains 192.0.2.77 of ignoreip"),
        "{err}"
    );
    let out = d.cli(&["ban", "sshd", "192.0.2.1", "--bantime", "soon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    assert!(d
        .cli_ok(&["ban", "sshd", "192.0.2.128/25"])
        .contains("[sshd] Ban 192.0.2.128/25"));
    assert!(d
        .cli_ok(&["unban", "192.0.2.128/25"])
        .contains("[sshd] Unban 192.0.2.128/25"));
    assert!(d.stop().success());
}

/// Whether a connection from `source` (an address of the attacker namespace) reaches `to`.
pub(crate) fn reaches_from(ns: &Netns, source: &str, to: SocketAddr) -> bool {
    let source: IpAddr = source.parse().unwrap();
    ns.within(move || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
        socket
            .connect_timeout(&to.into(), Duration::from_millis(400))
            .is_ok()
    })
}

/// A CIDR ban drops every host of the attacker's network and no other; the server's own network
/// is refused (ignoreself).
fn network_ban_in_a_namespace(backend: &str, tag: &str) {
    let lab = Lab::new(tag);
    let hosts = ["198.51.100.7", "198.51.100.200"];
    for host in hosts {
        lab.attacker
            .run(&["ip", "addr", "add", &format!("{host}/24"), "dev", "va"]);
    }
    lab.server
        .run(&["ip", "route", "add", "198.51.100.0/24", "dev", "vs"]);
    let jails = jail(&format!(
        "port = {}\naction = \"{backend}\"\nignoreself = true",
        lab.port
    ));
    let d = Daemon::start_with(&config("", &jails), &lab.server.prefix());
    let service = lab.service(false);
    for host in hosts.iter().chain(&[crate::lab::ATTACKER_V4]) {
        assert!(
            wait_for(Duration::from_secs(5), || reaches_from(
                &lab.attacker,
                host,
                service
            )),
            "{backend}: {host} cannot reach the service before any ban"
        );
    }
    let out = d.cli(&["ban", "sshd", "192.0.2.0/24"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("192.0.2.0/24 contains") && err.contains("ignoreip"),
        "{backend}: the server's own network was not refused: {err}"
    );
    d.cli_ok(&["ban", "sshd", "198.51.100.0/24"]);
    for host in hosts {
        let dropped = wait_for(Duration::from_secs(10), || {
            !reaches_from(&lab.attacker, host, service)
        });
        assert!(dropped, "{backend}: {host} still gets through");
    }
    assert!(
        reaches_from(&lab.attacker, crate::lab::ATTACKER_V4, service),
        "{backend}: an address outside the banned network was dropped"
    );
    d.cli_ok(&["unban", "sshd", "198.51.100.0/24"]);
    for host in hosts {
        let back = wait_for(Duration::from_secs(10), || {
            reaches_from(&lab.attacker, host, service)
        });
        assert!(back, "{backend}: {host} still dropped after the unban");
    }
    let errors = d.errors();
    assert!(errors.is_empty(), "{backend}: {errors:#?}");
    assert!(d.stop().success());
}

#[test]
fn a_cidr_ban_drops_a_whole_attacker_network_with_nftables() {
    network_ban_in_a_namespace("nftables", "cidrn");
}

#[test]
fn a_cidr_ban_drops_a_whole_attacker_network_with_ipset() {
    network_ban_in_a_namespace("ipset", "cidri");
}
