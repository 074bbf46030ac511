//! Operating the daemon like fail2ban: the CLI over the control socket, bans that survive a
//! `kill -9`, reload, escalation, and a control socket closed to unprivileged users.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::lab::Netns;
use crate::support::{binary, config, jail_toml, log_tcp, wait_for, Daemon, FAILED_ANY_USER};

/// The sshd jail of these tests, with `extra` keys.
pub(crate) fn jail(extra: &str) -> String {
    jail_toml(
        "sshd",
        "sshd",
        FAILED_ANY_USER,
        &format!("maxretry = 2\nbantime = \"1h\"\n{extra}"),
    )
}

fn fail(d: &Daemon, ip: &str, times: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..times {
        let line = format!(
            "<38>Nov 29 18:52:53 vm sshd[1]: Failed password for root from {ip} port 22 ssh2"
        );
        socket.send_to(line.as_bytes(), d.udp).unwrap();
    }
}

/// `banned --json`, parsed.
pub(crate) fn banned(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&d.cli_ok(&["banned", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn wait_banned(d: &Daemon, ip: &str) {
    let ok = wait_for(Duration::from_secs(10), || {
        banned(d).iter().any(|b| b["ip"] == ip)
    });
    assert!(ok, "{ip} never listed as banned: {:?}", banned(d));
}

#[test]
fn every_cli_command_against_a_running_daemon() {
    let d = Daemon::start(&config("", &jail("")));
    let status = d.cli_ok(&["status"]);
    assert!(
        status.contains("|- Number of jail:\t1") && status.contains("`- Jail list:\tsshd"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(json["jails"][0], "sshd");

    fail(&d, "192.0.2.1", 1);
    fail(&d, "192.0.2.2", 2);
    wait_banned(&d, "192.0.2.2");
    let status = d.cli_ok(&["status", "sshd"]);
    for line in [
        "Status for the jail: sshd",
        "|  |- Currently failed:\t1",
        "|  `- Total failed:\t3",
        "   |- Currently banned:\t1",
        "   |- Total banned:\t1",
        "   `- Banned IP list:\t192.0.2.2",
    ] {
        assert!(status.contains(line), "missing `{line}` in\n{status}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["status", "sshd", "--json"])).unwrap();
    assert_eq!(json["currently_failed"], 1);
    assert_eq!(json["total_failed"], 3);
    assert_eq!(json["banned"][0], "192.0.2.2");

    // A manual ban goes through the same path: listed, counted, logged, applied.
    assert!(d
        .cli_ok(&["ban", "sshd", "198.51.100.9"])
        .contains("[sshd] Ban 198.51.100.9"));
    assert!(wait_for(Duration::from_secs(5), || d
        .logged("[sshd] Ban 198.51.100.9")));
    assert!(wait_for(Duration::from_secs(5), || d
        .count_prefix("would ban 198.51.100.9")
        == 1));
    d.wait_metric("jailsink_bans_total{jail=\"sshd\"}", 2.0);
    let bans = banned(&d);
    assert_eq!(bans.len(), 2);
    let manual = bans.iter().find(|b| b["ip"] == "198.51.100.9").unwrap();
    assert_eq!(manual["jail"], "sshd");
    assert_eq!(manual["ban_count"], 1);
    assert!(manual["banned_at"].as_str().unwrap().ends_with('Z'));
    assert!(manual["expires_at"].as_str().is_some());
    let table = d.cli_ok(&["banned"]);
    assert!(
        table.starts_with("JAIL") && table.contains("198.51.100.9"),
        "{table}"
    );

    // Errors: unknown jail, bad address, double ban, ignored address; each exits 1.
    for args in [
        &["ban", "nope", "192.0.2.9"][..],
        &["ban", "sshd", "not-an-ip"],
        &["ban", "sshd", "198.51.100.9"],
        &["ban", "sshd", "127.0.0.1"],
        &["unban", "sshd", "203.0.113.200"],
    ] {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} printed no reason");
    }

    assert!(d
        .cli_ok(&["unban", "sshd", "198.51.100.9"])
        .contains("[sshd] Unban 198.51.100.9"));
    assert!(wait_for(Duration::from_secs(5), || d
        .count_prefix("would unban 198.51.100.9")
        == 1));
    assert!(d
        .cli_ok(&["unban", "--all"])
        .contains("[sshd] Unban 192.0.2.2"));
    assert!(banned(&d).is_empty());
    d.wait_metric("jailsink_unbans_total{jail=\"sshd\"}", 2.0);
    assert!(d.cli_ok(&["reload"]).contains("reloaded"));
    assert!(d.stop().success());
}

#[test]
fn a_command_that_cannot_reach_the_daemon_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[control]\nsocket = \"{}/none.sock\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["-c", path.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the jailsink daemon"));
}

#[test]
fn bans_survive_kill_9_and_expired_ones_are_lifted() {
    let short = config(
        "",
        &jail("[jails.short]\nprograms = [\"x\"]\nfailregex = ['^x <HOST>$']\nbantime = \"1s\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir, &short, &[]);
    fail(&d, "192.0.2.11", 2);
    d.cli_ok(&["ban", "short", "192.0.2.12"]);
    wait_banned(&d, "192.0.2.11");
    wait_banned(&d, "192.0.2.12");
    let dir = d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let d = Daemon::start_in(dir, &short, &[]);
    let bans = banned(&d);
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["ip"], "192.0.2.11");
    // One summary line per jail, not one line per ban.
    assert!(d.logged(
        "[short] bans restored: 0 active (0 re-applied to the firewall), 1 expired while jailsink was down"
    ));
    assert!(d.logged(
        "[sshd] bans restored: 1 active (1 re-applied to the firewall), 0 expired while jailsink was down"
    ));
    assert!(!d.logged("[short] Unban 192.0.2.12 (expired while jailsink was down)"));
    // The restored ban was re-applied through the action.
    assert!(wait_for(Duration::from_secs(5), || d
        .count_prefix("would ban 192.0.2.11")
        == 1));
    d.wait_metric("jailsink_banned{jail=\"sshd\"}", 1.0);
    assert!(d.stop().success());
}

#[test]
fn kill_9_with_iptables_in_a_namespace_restores_rules_once() {
    let ns = Netns::new("op");
    let text = config("", &jail("action = \"iptables\"\n[jails.short]\nprograms = [\"x\"]\nfailregex = ['^x <HOST>$']\nmaxretry = 2\nbantime = \"6s\"\naction = \"iptables\""));
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir, &text, &ns.prefix());
    let failed = "Failed password for root from 192.0.2.20 port 22 ssh2";
    log_tcp(&ns.prefix(), &d, "sshd", failed, 2);
    log_tcp(&ns.prefix(), &d, "x", "x 192.0.2.21", 2);
    let rule = "-A jailsink-sshd -s 192.0.2.20/32 -j DROP";
    let short_rule = "-A jailsink-short -s 192.0.2.21/32 -j DROP";
    let save = || ns.run(&["iptables-save", "-t", "filter"]);
    assert!(
        wait_for(Duration::from_secs(10), || save().contains(rule)
            && save().contains(short_rule)),
        "{}",
        save()
    );
    let dir = d.kill9();
    std::thread::sleep(Duration::from_millis(6500));
    // The killed daemon left its rules behind; the restart must neither lose nor duplicate them.
    let d = Daemon::start_in(dir, &text, &ns.prefix());
    let rules = save();
    assert_eq!(rules.matches(rule).count(), 1, "{rules}");
    assert!(
        !rules.contains(short_rule),
        "expired ban still in the firewall:\n{rules}"
    );
    assert_eq!(
        rules.matches("-A INPUT -p tcp -j jailsink-sshd").count(),
        1,
        "{rules}"
    );
    assert!(d.stop().success());
    assert!(!save().contains("jailsink"));
}

/// 127.0.0.1:P to 0.0.0.0:P cannot be bound while the old listener holds P (a reload binds
/// before it closes): the reload is refused with what to do instead, and nothing changes.
#[test]
fn a_reload_onto_the_wildcard_of_a_served_port_is_refused_with_what_to_do() {
    let port = crate::support::free_port();
    let text = config("", &jail("")).replace(
        "tcp = [\"127.0.0.1:0\"]",
        &format!("tcp = [\"127.0.0.1:{port}\"]"),
    );
    let d = Daemon::start(&text);
    let running = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        running.replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}")),
    )
    .unwrap();
    let out = d.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "while 127.0.0.1:{port} is served on the same port"
        )) && err.contains("restart jailsink"),
        "{err}"
    );
    // Still served where it was.
    log_tcp(
        &[],
        &d,
        "sshd",
        "Failed password for root from 192.0.2.40 port 22 ssh2",
        1,
    );
    assert!(wait_for(Duration::from_secs(10), || d
        .metric("jailsink_failures_total{jail=\"sshd\"}")
        == Some(1.0)));
    assert!(d.stop().success());
}

#[test]
fn reload_keeps_bans_and_counts_and_refuses_a_bad_config() {
    let d = Daemon::start(&config("", &jail("")));
    fail(&d, "192.0.2.30", 2);
    fail(&d, "192.0.2.31", 1);
    wait_banned(&d, "192.0.2.30");
    let good = std::fs::read_to_string(&d.config).unwrap();

    std::fs::write(&d.config, good.replace("maxretry = 2", "maxretry = 0")).unwrap();
    let out = d.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused") && err.contains("jails.sshd.maxretry"),
        "{err}"
    );
    // A config the CLI could not deserialize (an unknown key) still lets every command reach
    // the daemon, which keeps its last good config and refuses the reload itself.
    std::fs::write(&d.config, format!("{good}\nbogus_key = 1\n")).unwrap();
    assert!(d.cli_ok(&["status"]).contains("sshd"));
    let out = d.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused") && err.contains("bogus_key"),
        "{err}"
    );

    // A good config with a new jail and a changed bantime: sshd keeps its ban and its count.
    let next = good.replace("bantime = \"1h\"", "bantime = \"2h\"")
        + "\n[jails.web]\nprograms = [\"nginx\"]\nfailregex = ['^bad <HOST>$']\n";
    std::fs::write(&d.config, next).unwrap();
    let out = d.cli_ok(&["reload"]);
    assert!(
        out.contains("sshd: updated") && out.contains("web: started"),
        "{out}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["status", "sshd", "--json"])).unwrap();
    assert_eq!(status["currently_banned"], 1);
    assert_eq!(status["currently_failed"], 1);
    fail(&d, "192.0.2.31", 1);
    wait_banned(&d, "192.0.2.31");
    d.wait_metric("jailsink_bans_total{jail=\"web\"}", 0.0);

    // SIGHUP does the same; removing a jail lifts its bans.
    std::fs::write(&d.config, good.replace("[jails.sshd]", "[jails.sshd2]")).unwrap();
    sighup_and_wait(&d, 2);
    assert!(d.logged("[sshd] Unban 192.0.2.30"));
    let jails = d.cli_ok(&["status"]);
    assert!(jails.contains("sshd2") && !jails.contains("web"), "{jails}");
    assert!(d.stop().success());
}

/// A [fleet] section a reload adds to a daemon started without one is not applied (no fleet
/// runs until a restart): the reload says so, and nothing names a fleet that does not run.
#[test]
fn a_fleet_section_added_by_reload_is_named_as_waiting_for_a_restart() {
    let d = Daemon::start(&config("", &jail("")));
    let good = std::fs::read_to_string(&d.config).unwrap();
    let with_fleet = format!(
        "{good}\n[fleet]\nredis = \"redis://127.0.0.1:1/0\"\nrole = \"sink\"\nnode = \"new-node\"\n"
    );
    std::fs::write(&d.config, with_fleet).unwrap();
    d.cli_ok(&["reload"]);
    assert!(
        wait_for(Duration::from_secs(10), || d.logged(
            "[fleet] (added) changed: it takes effect at the next restart"
        )),
        "{:?}",
        d.errors()
    );
    fail(&d, "192.0.2.40", 2);
    wait_banned(&d, "192.0.2.40");
    let banned = d.cli_ok(&["banned", "--json"]);
    assert!(!banned.contains("new-node"), "{banned}");
    assert!(d.stop().success());
}

/// sshd's held `Failed publickey` lines (counted when the connection goes on to fail) survive
/// a reload that left the filter as it was: the password failure after the reload counts them.
#[test]
fn a_reload_keeps_the_failures_a_filter_holds() {
    use std::io::Write;
    let jails =
        "[jails.sshd]\nprograms = [\"sshd\"]\nfilter = \"sshd\"\nmaxretry = 3\nbantime = \"1h\"\n";
    let d = Daemon::start(&config("", jails));
    let mut s = std::net::TcpStream::connect(d.tcp).unwrap();
    let mut send = |pid: u32, msg: &str| {
        let line = format!("<38>Nov 29 18:52:53 vm sshd[{pid}]: {msg}\n");
        s.write_all(line.as_bytes()).unwrap();
    };
    for _ in 0..2 {
        send(
            100,
            "Failed publickey for root from 192.0.2.50 port 22 ssh2: RSA SHA256:abc",
        );
    }
    // A counted failure after them on the same connection: once it is counted, the two held
    // ones before it are in the table.
    send(200, "Failed password for root from 192.0.2.99 port 22 ssh2");
    let counted = wait_for(Duration::from_secs(10), || {
        let status: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["status", "sshd", "--json"])).unwrap();
        status["currently_failed"] == 1
    });
    assert!(counted, "{:?}", d.errors());
    let out = d.cli_ok(&["reload"]);
    assert!(out.contains("no jail changed"), "{out}");
    // The connection goes on to fail: its two held failures count with this one.
    send(100, "Failed password for root from 192.0.2.50 port 22 ssh2");
    wait_banned(&d, "192.0.2.50");
    assert!(d.stop().success());
}

/// A sender a reload takes out of allowed_senders loses its open connection too, at its next
/// read; what it sends then is not counted.
#[test]
fn a_sender_a_reload_disallows_loses_its_open_connection() {
    use std::io::{Read, Write};
    let d = Daemon::start(&config("allowed_senders = [\"127.0.0.0/8\"]", &jail("")));
    let mut s = std::net::TcpStream::connect(d.tcp).unwrap();
    let line = |ip: &str| {
        format!("<38>Nov 29 18:52:53 vm sshd[1]: Failed password for root from {ip} port 22 ssh2\n")
    };
    s.write_all(line("192.0.2.60").as_bytes()).unwrap();
    d.wait_metric("jailsink_failures_total{jail=\"sshd\"}", 1.0);
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace("127.0.0.0/8\"]", "10.0.0.0/8\"]")).unwrap();
    d.cli_ok(&["reload"]);
    s.write_all(line("192.0.2.60").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 16];
    let closed = match s.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection stays open");
    assert!(wait_for(Duration::from_secs(10), || d.logged(
        "connection closed: the sender is no longer in allowed_senders"
    )));
    assert_eq!(
        d.metric("jailsink_failures_total{jail=\"sshd\"}"),
        Some(1.0)
    );
    assert!(d.stop().success());
}

/// Sends SIGHUP and waits until the daemon has logged `reloads` reloads in all.
fn sighup_and_wait(d: &Daemon, reloads: usize) {
    Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || d
        .count_prefix("reloaded")
        == reloads));
}

#[test]
fn a_setting_for_the_next_restart_keeps_its_running_value_until_then() {
    let d = Daemon::start(&config("", &jail("")));
    let dir = d.config.parent().unwrap().to_path_buf();
    let (ours, elsewhere) = (dir.join("jailsink.sock"), dir.join("other.sock"));
    std::fs::write(&elsewhere, "someone else's file").unwrap();
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good.replace("jailsink.sock", "other.sock")).unwrap();
    for reloads in 1..=2 {
        sighup_and_wait(&d, reloads);
        // Warned at every reload while it differs from what runs, not only the first.
        assert_eq!(d.count_prefix("[control] changed"), reloads);
    }
    assert!(ours.exists(), "the bound socket is still there");
    // A listener's limit changed: the running listener keeps the old one, and says so.
    let limited = good.replace("jailsink.sock", "other.sock").replace(
        "tcp = [\"127.0.0.1:0\"]",
        "tcp = [\"127.0.0.1:0\"]\ntcp_idle_timeout = \"5m\"",
    );
    assert_ne!(limited, good.replace("jailsink.sock", "other.sock"));
    std::fs::write(&d.config, limited).unwrap();
    sighup_and_wait(&d, 3);
    assert_eq!(d.count_prefix("[server] tcp_idle_timeout changed"), 1);
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());
    assert!(!ours.exists(), "the stop removes the socket it bound");
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        "someone else's file",
        "the stop leaves the new path, never bound, alone"
    );
    drop(kept);
}

#[test]
fn repeat_offenders_escalate_and_the_count_survives_a_restart() {
    let text = config(
        "",
        &jail("bantime_increment = { enabled = true, factor = 2.0, maxtime = \"3h\" }"),
    );
    let d = Daemon::start(&text);
    let mut hours = Vec::new();
    for _ in 0..3 {
        fail(&d, "192.0.2.40", 2);
        wait_banned(&d, "192.0.2.40");
        let bans = banned(&d);
        hours.push(bans[0]["ban_count"].as_u64().unwrap());
        d.cli_ok(&["unban", "sshd", "192.0.2.40"]);
    }
    assert_eq!(hours, [1, 2, 3]);
    let logs = d.logs.lock().unwrap().clone();
    let bantimes: Vec<_> = logs
        .iter()
        .filter(|e| e["message"] == "[sshd] Ban 192.0.2.40")
        .map(|e| e["bantime"].clone())
        .collect();
    assert_eq!(
        bantimes,
        ["1h", "2h", "3h"],
        "1h, then 2x, then 4x capped at maxtime 3h"
    );
    let dir = d.kill9();
    let d = Daemon::start_in(dir, &text, &[]);
    fail(&d, "192.0.2.40", 2);
    wait_banned(&d, "192.0.2.40");
    assert_eq!(banned(&d)[0]["ban_count"], 4);
    assert!(d.stop().success());
}

/// Whatever was reported as banned survives `kill -9` at any moment, with its count: the ban line
/// is written after the commit, and `banned`/`unban` answer after it.
#[test]
fn a_reported_ban_survives_kill_9_right_after_its_line() {
    let text = config(
        "",
        &jail("bantime_increment = { enabled = true, factor = 1.0, maxtime = \"1h\" }"),
    );
    let repeat = "192.0.2.200";
    let mut d = Daemon::start(&text);
    for round in 1..=20u64 {
        let fresh = format!("192.0.2.{round}");
        fail(&d, &fresh, 2);
        fail(&d, repeat, 2);
        for ip in [&fresh[..], repeat] {
            let line = format!("[sshd] Ban {ip}");
            let seen = wait_for(Duration::from_secs(10), || {
                d.count_messages(|m| m == line) == 1
            });
            assert!(seen, "round {round}: no `{line}`");
        }
        // Killed the moment the second line is read: nothing more is waited for.
        let dir = d.kill9();
        d = Daemon::start_in(dir, &text, &[]);
        let bans = banned(&d);
        for earlier in 1..=round {
            let ip = format!("192.0.2.{earlier}");
            let ban = bans.iter().find(|b| b["ip"] == ip.as_str());
            assert_eq!(
                ban.map(|b| b["ban_count"].clone()),
                Some(1.into()),
                "round {round}: {ip} lost: {bans:?}"
            );
        }
        let again = bans.iter().find(|b| b["ip"] == repeat);
        assert_eq!(
            again.map(|b| b["ban_count"].clone()),
            Some(round.into()),
            "round {round}: {bans:?}"
        );
        d.cli_ok(&["unban", "sshd", repeat]);
    }
    assert!(d.stop().success());
}

#[test]
fn the_control_socket_refuses_users_without_the_group() {
    crate::lab::require_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_in(dir, &config("", &jail("")), &[]);
    let socket = d.config.parent().unwrap().join("jailsink.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&d.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |config: &std::path::Path| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                binary(),
                "-c",
            ])
            .arg(config)
            .arg("status")
            .output()
            .expect("setpriv (util-linux)")
    };
    let out = as_nobody(&d.config);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nobody got in: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Even with the socket opened up, the peer check refuses a uid outside the group.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&d.config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.stop().success());

    // With `[control] group`, the socket is 0660 and members get in.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = config("", &jail("")).replace(
        "socket = \"@DIR@/jailsink.sock\"",
        "socket = \"@DIR@/jailsink.sock\"\ngroup = \"nogroup\"",
    );
    let d = Daemon::start_in(dir, &text, &[]);
    std::fs::set_permissions(&d.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = d.config.parent().unwrap().join("jailsink.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let out = as_nobody(&d.config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.stop().success());
}

#[test]
fn malformed_control_requests_get_an_error() {
    use std::io::{Read, Write};
    let d = Daemon::start(&config("", &jail("")));
    let socket = d.config.parent().unwrap().join("jailsink.sock");
    for request in [
        "not json\n",
        "{\"command\":\"format_disk\"}\n",
        "{\"command\":\"ban\"}\n",
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.contains("\"status\":\"error\"") && answer.contains("malformed request"),
            "{answer}"
        );
    }
    assert!(d.stop().success());
}
