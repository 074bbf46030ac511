//! Every firewall backend for real: the daemon runs in a server namespace, an attacker
//! namespace reaches a TCP service until failures get it banned (IPv4 and IPv6, addresses and
//! prefix networks), reaches it again after bantime, and nothing of ours is left after stop.
//! Also: reconcile at start, keep_on_stop, and the command action's templates and failures.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jailsink::action::runner;
use jailsink::action::{ActionSpec, BanOrder, BlockType, FirewallSpec, Protocol};
use jailsink::metrics::JailMetrics;

use crate::lab::{Lab, Netns, ATTACKER_V4, ATTACKER_V6};
use crate::support::{
    config, jail_toml, log_tcp, wait_for, Daemon, FAILED_ANY_USER, FAILED_PASSWORD, FAILED_ROOT,
};

/// How long a probe waits for a connection: DROP shows as this timeout.
const PROBE: Duration = Duration::from_millis(400);

/// Sends `n` sshd failures from `ip` to the daemon's TCP listener, inside `ns`.
fn fail(ns: &Netns, daemon: &Daemon, program: &str, ip: &str, n: usize) {
    let msg = format!("Failed password for root from {ip} port 4242 ssh2");
    log_tcp(&ns.prefix(), daemon, program, &msg, n);
}

fn sshd_jail(name: &str, port: u16, action: &str, extra: &str) -> String {
    jail_toml(
        name,
        "sshd",
        FAILED_ANY_USER,
        &format!("maxretry = 2\nbantime = \"3s\"\nport = {port}\naction = {action}\n{extra}"),
    )
}

/// Everything of ours in the server namespace's firewall, one line per finding.
fn leftovers(ns: &Netns) -> Vec<String> {
    let mut found = Vec::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let rules = ns.run(&[tool]);
        found.extend(
            rules
                .lines()
                .filter(|l| l.contains("jailsink"))
                .map(|l| format!("{tool}: {l}")),
        );
    }
    let ruleset = ns.run(&["nft", "-j", "list", "ruleset"]);
    if ruleset.contains("\"jailsink\"") {
        found.push(format!("nft: {ruleset}"));
    }
    let sets = ns.run(&["ipset", "list", "-n"]);
    found.extend(
        sets.lines()
            .filter(|l| l.contains("jailsink"))
            .map(|l| format!("ipset: {l}")),
    );
    found
}

/// What a backend's kernel objects hold for the jail `sshd`, as text to search.
fn kernel_bans(ns: &Netns, backend: &str) -> String {
    match backend {
        "nftables" => ns.run(&["nft", "list", "table", "inet", "jailsink"]),
        "ipset" => ns.run(&["ipset", "list"]),
        _ => ns.run(&["iptables-save"]) + &ns.run(&["ip6tables-save"]),
    }
}

/// The attacker reaches the service, is banned over IPv4 and IPv6 (the IPv6 ban a /64
/// network, so prefix bans are covered), reaches it again after bantime, and stop cleans up.
fn ban_cycle(backend: &str, tag: &str, expect_v4: &str, expect_v6: &str) {
    let lab = Lab::new(tag);
    let jail = sshd_jail(
        "sshd",
        lab.port,
        &format!("\"{backend}\""),
        "ipv6_prefix = 64",
    );
    let d = Daemon::start_with(&config("", &jail), &lab.server.prefix());
    if backend == "nftables" {
        // Bursts go through libnftables in process, not an nft process each.
        assert!(
            d.logged("nftables bans go through libnftables in process"),
            "{:#?}",
            d.logs.lock().unwrap()
        );
    }
    for v6 in [false, true] {
        assert!(
            lab.reaches(v6, Duration::from_secs(2)),
            "{backend}: the attacker cannot reach the service before any ban (v6: {v6})"
        );
    }
    fail(&lab.server, &d, "sshd", ATTACKER_V4, 2);
    fail(&lab.server, &d, "sshd", ATTACKER_V6, 2);
    let dropped = wait_for(Duration::from_secs(10), || {
        !lab.reaches(false, PROBE) && !lab.reaches(true, PROBE)
    });
    let bans = kernel_bans(&lab.server, backend);
    assert!(
        dropped,
        "{backend}: the attacker still gets through after the ban:\n{bans}\n{:#?}",
        d.logs.lock().unwrap()
    );
    assert!(
        bans.contains(expect_v4) && bans.contains(expect_v6),
        "{backend}: expected {expect_v4} and {expect_v6} in\n{bans}"
    );
    let lifted = wait_for(Duration::from_secs(10), || {
        lab.reaches(false, PROBE) && lab.reaches(true, PROBE)
    });
    assert!(
        lifted,
        "{backend}: still dropped after bantime:\n{}",
        kernel_bans(&lab.server, backend)
    );
    let errors = d.errors();
    assert!(errors.is_empty(), "{backend}: {errors:#?}");
    assert!(d.stop().success());
    let left = leftovers(&lab.server);
    assert!(left.is_empty(), "{backend} left after stop: {left:#?}");
}

#[test]
fn nftables_drops_a_banned_attacker_until_bantime_and_cleans_up() {
    ban_cycle(
        "nftables",
        "nft",
        "192.0.2.2 timeout",
        "2001:db8::/64 timeout",
    );
}

#[test]
fn ipset_drops_a_banned_attacker_until_bantime_and_cleans_up() {
    ban_cycle("ipset", "ips", "192.0.2.2 timeout", "2001:db8::/64 timeout");
}

#[test]
fn iptables_drops_a_banned_attacker_until_bantime_and_cleans_up() {
    ban_cycle(
        "iptables",
        "ipt2",
        "-A jailsink-sshd -s 192.0.2.2/32 -j DROP",
        "-A jailsink-sshd -s 2001:db8::/64 -j DROP",
    );
}

fn spec(name: &str, keep_on_stop: bool) -> FirewallSpec {
    FirewallSpec {
        name: name.into(),
        ports: vec!["22".into()],
        protocol: Protocol::Tcp,
        blocktype: BlockType::Drop,
        keep_on_stop,
        v4_networks: false,
        v6_networks: true,
        hooks: Vec::new(),
    }
}

fn order(target: &str, secs: Option<u64>) -> BanOrder {
    BanOrder {
        target: target.parse().unwrap(),
        failures: 5,
        bantime: secs.map(Duration::from_secs),
        decided_at: Instant::now(),
        from_state: false,
        evidence: Default::default(),
    }
}

/// Starts a runner inside `ns` with `restored`, lets it reconcile, lists what the kernel holds
/// through a second instance of the action, then stops the runner.
fn run_restored(ns: &Netns, action: ActionSpec, restored: Vec<BanOrder>) -> BTreeSet<String> {
    let action = Arc::new(action);
    let listed = {
        let action = action.clone();
        ns.within(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let runner = rt
                .block_on(runner::spawn(
                    "sshd",
                    std::slice::from_ref(&*action),
                    JailMetrics::new("sshd"),
                    restored,
                    false,
                ))
                .unwrap();
            let mut lister = action.build("sshd");
            let listed = lister.list().unwrap().unwrap_or_default();
            drop(runner.queue);
            runner.thread.join().unwrap();
            listed
        })
    };
    listed
        .into_iter()
        .map(jailsink::action::element_text)
        .collect()
}

/// Runs an nft script inside `ns` (kernel state made before a runner starts).
fn nft_script(ns: &Netns, script: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(out.success(), "{script}");
}

#[test]
fn reconcile_removes_stale_kernel_bans_and_adds_missing_restored_ones() {
    let ns = Netns::new("rec");
    let restored = || {
        vec![
            order("192.0.2.20/32", Some(3600)),
            order("192.0.2.21/32", None),
            order("2001:db8:1::/64", Some(3600)),
        ]
    };
    let want: BTreeSet<String> = ["192.0.2.20", "192.0.2.21", "2001:db8:1::/64"]
        .map(String::from)
        .into();
    // Stale 192.0.2.99 and restored 192.0.2.21 are in the kernel before the daemon starts.
    let nft_start = jailsink::action::nftables::start_script(&spec("sshd", false));
    let seeded =
        format!("{nft_start}add element inet jailsink sshd-v4 {{ 192.0.2.99, 192.0.2.21 }}\n");
    nft_script(&ns, &seeded);
    let got = run_restored(&ns, ActionSpec::Nftables(spec("sshd", false)), restored());
    assert_eq!(got, want, "nftables");

    for line in [
        "create jailsink-sshd-v4 hash:net family inet timeout 0",
        "add jailsink-sshd-v4 192.0.2.99",
        "add jailsink-sshd-v4 192.0.2.21",
    ] {
        let words: Vec<&str> = std::iter::once("ipset")
            .chain(line.split_whitespace())
            .collect();
        ns.run(&words);
    }
    let got = run_restored(&ns, ActionSpec::Ipset(spec("sshd", false)), restored());
    assert_eq!(got, want, "ipset");

    ns.run(&["iptables", "-N", "jailsink-sshd"]);
    for ip in ["192.0.2.99", "192.0.2.21"] {
        ns.run(&["iptables", "-A", "jailsink-sshd", "-s", ip, "-j", "DROP"]);
    }
    // A rule of the wrong blocktype is replaced, not kept.
    ns.run(&[
        "iptables",
        "-A",
        "jailsink-sshd",
        "-s",
        "192.0.2.20",
        "-j",
        "REJECT",
    ]);
    let got = run_restored(&ns, ActionSpec::Iptables(spec("sshd", false)), restored());
    assert_eq!(got, want, "iptables");
    let left = leftovers(&ns);
    assert!(left.is_empty(), "left after the runners stopped: {left:#?}");
}

/// Sets kept in the kernel (keep_on_stop, a crash) whose flags the config has changed since
/// (`ipv4_prefix` below 32 makes the v4 set an interval set) cannot be added again: the start
/// makes the jail's sets and chains again, and the reconcile adds the restored bans, networks
/// included.
#[test]
fn nftables_remakes_sets_whose_flags_the_config_changed() {
    let ns = Netns::new("flags");
    let seeded = format!(
        "{}add element inet jailsink sshd-v4 {{ 192.0.2.99 }}\n",
        jailsink::action::nftables::start_script(&spec("sshd", false))
    );
    nft_script(&ns, &seeded);
    let networks = FirewallSpec {
        v4_networks: true,
        ..spec("sshd", false)
    };
    let restored = vec![
        order("192.0.2.20/32", Some(3600)),
        order("198.51.100.0/24", Some(3600)),
    ];
    let got = run_restored(&ns, ActionSpec::Nftables(networks), restored);
    let want: BTreeSet<String> = ["192.0.2.20", "198.51.100.0/24"].map(String::from).into();
    assert_eq!(got, want, "{}", ns.run(&["nft", "list", "ruleset"]));
    let left = leftovers(&ns);
    assert!(left.is_empty(), "left after the runner stopped: {left:#?}");
}

#[test]
fn keep_on_stop_leaves_set_bans_with_their_timeouts_until_the_next_start() {
    let lab = Lab::new("keep");
    let jails = sshd_jail("sshd", lab.port, "\"nftables\"", "keep_on_stop = true")
        .replace("bantime = \"3s\"", "bantime = \"5s\"")
        + &sshd_jail(
            "web",
            lab.port,
            "{ type = \"ipset\", keep_on_stop = true }",
            "bantime = \"1h\"",
        )
        .replace("programs = [\"sshd\"]", "programs = [\"web\"]")
        .replace("bantime = \"3s\"\n", "");
    let d = Daemon::start_with(&config("", &jails), &lab.server.prefix());
    fail(&lab.server, &d, "sshd", ATTACKER_V4, 2);
    fail(&lab.server, &d, "web", ATTACKER_V6, 2);
    let banned = wait_for(Duration::from_secs(10), || {
        !lab.reaches(false, PROBE) && !lab.reaches(true, PROBE)
    });
    assert!(banned, "{}", kernel_bans(&lab.server, "ipset"));
    assert!(d.stop().success());
    // The daemon is gone; the bans stay, with their kernel timeouts running.
    let nft = lab
        .server
        .run(&["nft", "list", "set", "inet", "jailsink", "sshd-v4"]);
    assert!(nft.contains("192.0.2.2 timeout"), "{nft}");
    let ipset = lab.server.run(&["ipset", "list", "jailsink-web-v6"]);
    assert!(ipset.contains("2001:db8::2 timeout"), "{ipset}");
    assert!(!lab.reaches(false, PROBE) && !lab.reaches(true, PROBE));
    // The nftables ban (5s) runs out in the kernel with no daemon to lift it.
    assert!(
        wait_for(Duration::from_secs(6), || lab.reaches(false, PROBE)),
        "{}",
        lab.server.run(&["nft", "list", "ruleset"])
    );
    // A start without keep_on_stop and without restored bans reconciles them away, and its
    // stop removes everything.
    let plain = jails.replace("keep_on_stop = true", "keep_on_stop = false");
    let d = Daemon::start_with(&config("", &plain), &lab.server.prefix());
    assert!(
        lab.reaches(true, Duration::from_secs(2)),
        "the kept ipset ban survived reconcile"
    );
    assert!(d.stop().success());
    let left = leftovers(&lab.server);
    assert!(left.is_empty(), "{left:#?}");
}

#[test]
fn command_action_runs_its_templates_with_the_right_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let log = log.display();
    let tree = dir.path().display();
    let jails = format!(
        r#"
[jails.sshd]
programs = ["sshd"]
failregex = ['^Failed password for \S+ from <HOST> port \d+ ssh2$']
maxretry = 2
bantime = "2s"
port = ["ssh", 2222]
protocol = "tcp"
action = {{ type = "command", start = ["sh", "-c", "echo start <jail> >> {log}"], stop = ["sh", "-c", "echo stop <jail> >> {log}"], ban = ["sh", "-c", "echo ban <ip> <jail> <bantime> <failures> <port> <protocol> >> {log}"], unban = ["sh", "-c", "echo unban <ip> <jail> <bantime> <failures> >> {log}"] }}

[jails.web]
programs = ["web"]
failregex = ['^Failed password for \S+ from <HOST> port \d+ ssh2$']
maxretry = 1
bantime = "permanent"
ipv6_prefix = 64
protocol = "all"
action = {{ type = "command", ban = ["mkdir", "-p", "{tree}/<jail>/<ip>/<bantime>/<failures>/<protocol>;x"] }}
"#
    );
    let d = Daemon::start(&config("", &jails));
    for (program, ip, n) in [("sshd", "192.0.2.7", 2), ("web", "2001:db8:5::9", 1)] {
        let msg = format!("Failed password for root from {ip} port 4242 ssh2");
        log_tcp(&[], &d, program, &msg, n);
    }
    let read = || std::fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(10), || read().contains("unban")),
        "{}\n{:#?}",
        read(),
        d.logs.lock().unwrap()
    );
    assert!(d.stop().success());
    assert_eq!(
        read(),
        "start sshd\n\
         ban 192.0.2.7 sshd 2 2 22,2222 tcp\n\
         unban 192.0.2.7 sshd 2 2\n\
         stop sshd\n"
    );
    // No shell: `;x` stayed part of one argument, and the network is one path of the tree.
    let made = dir.path().join("web/2001:db8:5::/64/-1/1/all;x");
    assert!(made.is_dir(), "{} missing", made.display());
}

#[test]
fn failing_command_actions_are_retried_counted_once_logged_and_keep_the_ban() {
    let dir = tempfile::tempdir().unwrap();
    let tries = dir.path().join("tries");
    let jail = |name: &str, ban: &str, extra: &str| {
        let action = format!("action = {{ type = \"command\", ban = {ban} {extra} }}");
        jail_toml(
            name,
            name,
            FAILED_PASSWORD,
            &format!("maxretry = 1\nbantime = \"1h\"\n{action}"),
        )
    };
    let jails = jail(
        "exits",
        &format!(
            "[\"sh\", \"-c\", \"echo try >> {}; exit 3\"]",
            tries.display()
        ),
        "",
    ) + &jail("missing", "[\"/nonexistent/jailsink-block\", \"<ip>\"]", "")
        + &jail("hangs", "[\"sleep\", \"30\"]", ", timeout = \"300ms\"");
    let d = Daemon::start(&config("", &jails));
    for (program, ip) in [
        ("exits", "192.0.2.31"),
        ("missing", "192.0.2.32"),
        ("hangs", "192.0.2.33"),
    ] {
        let msg = format!("Failed password for root from {ip} port 4242 ssh2");
        log_tcp(&[], &d, program, &msg, 1);
    }
    for name in ["exits", "missing", "hangs"] {
        d.wait_metric(&format!("jailsink_banned{{jail=\"{name}\"}}"), 1.0);
        let series = format!("jailsink_action_errors_total{{jail=\"{name}\",action=\"command\"}}");
        let counted = wait_for(Duration::from_secs(15), || d.metric(&series) == Some(1.0));
        assert!(counted, "{series}: {:?}\n{}", d.metric(&series), d.scrape());
        // The failure never lifted the ban from the jail's state.
        assert_eq!(
            d.metric(&format!("jailsink_banned{{jail=\"{name}\"}}")),
            Some(1.0)
        );
    }
    let tries_made = std::fs::read_to_string(&tries).unwrap();
    assert_eq!(tries_made.lines().count(), 4, "one try and three retries");
    let logs = d.logs.lock().unwrap().clone();
    for name in ["exits", "missing", "hangs"] {
        let lines: Vec<_> = logs
            .iter()
            .filter(|e| e["level"] == "ERROR" && e["jail"] == name)
            .collect();
        assert_eq!(lines.len(), 1, "{name}: logged once per burst: {logs:#?}");
        assert_eq!(lines[0]["tries"], 4, "{lines:#?}");
    }
    let text = |name: &str| {
        logs.iter()
            .find(|e| e["level"] == "ERROR" && e["jail"] == name)
            .map(|e| e["error"].to_string())
            .unwrap_or_default()
    };
    assert!(
        text("exits").contains("exit status: 3"),
        "{}",
        text("exits")
    );
    assert!(
        text("missing").contains("cannot run"),
        "{}",
        text("missing")
    );
    assert!(text("hangs").contains("killed"), "{}", text("hangs"));
    assert!(d.stop().success());
}

/// The firewall bench at 100 bans per backend, so it keeps working; timings are not asserted.
#[test]
fn bench_smoke_applies_100_bans_to_each_backend() {
    for (i, backend) in ["nftables", "ipset", "nftables-interval", "iptables"]
        .into_iter()
        .enumerate()
    {
        let lab = Lab::new(&format!("bs{i}"));
        let figures = crate::measure::measure(&lab, backend, 100, 20);
        assert_eq!(figures.listed, 101, "{backend}: {figures:?}");
        let left = leftovers(&lab.server);
        assert!(left.is_empty(), "{backend} left: {left:#?}");
    }
}

/// A jail with a one-hour bantime on `port`, for the removed-jail test.
fn hour_jail(name: &str, port: u16, action: &str) -> String {
    jail_toml(
        name,
        "sshd",
        FAILED_ROOT,
        &format!("bantime = \"1h\"\nport = {port}\naction = \"{action}\""),
    )
}

/// Jails removed from the config while the daemon was down after a `kill -9`: their iptables
/// chains and jumps, nftables chain and sets, ipset sets and rules are removed at the next
/// start, and only those: the kept jail's chain and ban stay, and so do a fail2ban chain and a
/// chain of our own shape that jailsink did not make.
#[test]
fn objects_of_jails_removed_while_down_are_removed_at_start_and_only_those() {
    let ns = Netns::new("gone");
    for tool in ["iptables", "ip6tables"] {
        ns.run(&[tool, "-N", "f2b-sshd"]);
        ns.run(&[
            tool, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "f2b-sshd",
        ]);
        ns.run(&[tool, "-N", "jailsink-manual"]);
    }
    let keep = hour_jail("keep", 2222, "iptables");
    let all = format!(
        "{keep}{}{}{}",
        hour_jail("ipt", 22, "iptables"),
        hour_jail("nft", 23, "nftables"),
        hour_jail("set", 24, "ipset")
    );
    let d = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &config("", &all),
        &ns.prefix(),
    );
    for jail in ["keep", "ipt", "nft", "set"] {
        d.cli_ok(&["ban", jail, "192.0.2.70"]);
        d.cli_ok(&["ban", jail, "2001:db8::70"]);
    }
    let made = wait_for(Duration::from_secs(10), || {
        let found = leftovers(&ns).join("\n");
        [
            "jailsink-ipt",
            "jailsink-set-v6",
            "jailsink-keep -s 2001:db8::70",
            "\"nft-v4\"",
        ]
        .iter()
        .all(|w| found.contains(w))
    });
    assert!(made, "{:#?}", leftovers(&ns));
    let dir = d.kill9();

    let d = Daemon::start_in(dir, &config("", &keep), &ns.prefix());
    let left = leftovers(&ns);
    for gone in ["jailsink-ipt", "jailsink-set", "nft"] {
        assert!(
            !left.iter().any(|l| l.contains(gone)),
            "{gone} left: {left:#?}"
        );
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        let rules = ns.run(&[tool]);
        for kept in [
            ":f2b-sshd",
            "-j f2b-sshd",
            ":jailsink-manual",
            ":jailsink-keep",
            "--dports 2222 -j jailsink-keep",
        ] {
            assert!(rules.contains(kept), "{tool} lost {kept}:\n{rules}");
        }
    }
    assert!(ns
        .run(&["iptables-save"])
        .contains("-A jailsink-keep -s 192.0.2.70/32 -j DROP"));
    for jail in ["ipt", "nft", "set"] {
        assert!(
            d.logged(&format!(
                "[{jail}] removed the firewall objects of a jail no longer configured"
            )),
            "{jail}"
        );
    }
    d.assert_no_errors();
    // A clean stop removes the kept jail's objects and forgets them: nothing of ours is left
    // but the chain made by hand.
    assert!(d.stop().success());
    let left: Vec<String> = leftovers(&ns)
        .into_iter()
        .filter(|l| !l.contains("jailsink-manual"))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

/// A jail with `keep_on_stop` leaves its sets at a clean stop; removed from the config before
/// the next start, its objects go then. A clean stop without it left nothing to remove.
#[test]
fn kept_sets_of_a_jail_removed_before_the_next_start_are_removed() {
    let ns = Netns::new("kept");
    let keep = hour_jail("keep", 2222, "iptables");
    let kept = format!(
        "{keep}{}keep_on_stop = true\n",
        hour_jail("nft", 23, "nftables")
    );
    let d = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &config("", &kept),
        &ns.prefix(),
    );
    d.cli_ok(&["ban", "nft", "192.0.2.71"]);
    let (status, dir) = d.stop_keeping_dir();
    assert!(status.success());
    assert!(
        ns.run(&["nft", "list", "table", "inet", "jailsink"])
            .contains("192.0.2.71"),
        "keep_on_stop kept nothing"
    );
    let d = Daemon::start_in(dir, &config("", &keep), &ns.prefix());
    assert!(d.logged("[nft] removed the firewall objects of a jail no longer configured"));
    assert!(!ns
        .run(&["nft", "-j", "list", "ruleset"])
        .contains("\"jailsink\""));
    assert!(!d.logged("[keep] removed the firewall objects of a jail no longer configured"));
    d.assert_no_errors();
}
