//! Decisions beyond maxretry, end to end through the daemon: password spraying, network
//! escalation in a network namespace with nftables, and allowlists (DNS names, files) that
//! change while the daemon runs. Names resolve through a private /etc/hosts: the daemon runs
//! under `unshare --mount` with a temporary hosts file bind-mounted over /etc/hosts (and a
//! resolv.conf pointing at 127.0.0.1), so no test ever asks real DNS or edits the host's files.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::lab::{require_root, Lab, SERVER_V4};
use crate::support::{config, jail_toml, wait_for, Daemon, FAILED_PASSWORD};

/// A probe waits this long for a connection: DROP shows as this timeout.
const PROBE: Duration = Duration::from_millis(400);

/// Sends sshd lines over one TCP connection, so the daemon decides them in this order.
fn send(daemon: &Daemon, lines: &[String]) {
    let mut stream = TcpStream::connect(daemon.tcp).expect("connect to the daemon");
    for line in lines {
        writeln!(stream, "<38>Dec  6 06:00:00 web1 sshd[4242]: {line}").expect("send");
    }
}

fn failed(user: &str, ip: &str) -> String {
    format!("Failed password for {user} from {ip} port 4242 ssh2")
}

/// The active bans as (jail, target).
fn banned(d: &Daemon) -> Vec<String> {
    let text = d.cli_ok(&["banned", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("banned --json");
    let mut out: Vec<String> = list
        .iter()
        .map(|b| b["ip"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

/// Log lines whose message contains `part`.
fn logged_with(d: &Daemon, part: &str) -> Vec<serde_json::Value> {
    d.logs
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(part)))
        .cloned()
        .collect()
}

#[test]
fn spraying_one_user_from_many_addresses_bans_them_all_below_maxretry() {
    let jails = r#"
[jails.sshd]
programs = ["sshd"]
filter = "sshd"
maxretry = 5
bantime = "1h"
spray = { maxaddresses = 4, findtime = "1h" }
"#;
    let d = Daemon::start(&config("", jails));
    let sprayers = ["192.0.2.10", "192.0.2.11", "198.51.100.12", "203.0.113.13"];
    let mut lines: Vec<String> = sprayers[..3].iter().map(|ip| failed("admin", ip)).collect();
    // Other users and a fourth address of another user are no spray of `admin`.
    lines.push(failed("oracle", "203.0.113.99"));
    lines.push(failed("root", "203.0.113.98"));
    // Ignored addresses never count.
    lines.push(failed("admin", "127.0.0.5"));
    send(&d, &lines);
    // The 4th distinct address of `admin` completes the spray; a control ban behind it on the
    // same connection shows that everything before was decided.
    let mut rest = vec![failed("admin", sprayers[3])];
    rest.extend((0..5).map(|_| failed("x", "192.0.2.200")));
    send(&d, &rest);
    let want = {
        let mut w: Vec<String> = sprayers.iter().map(|s| s.to_string()).collect();
        w.push("192.0.2.200".into());
        w.sort();
        w
    };
    assert!(
        wait_for(Duration::from_secs(10), || banned(&d) == want),
        "banned: {:?}\n{:#?}",
        banned(&d),
        d.logs.lock().unwrap()
    );
    let reasons = logged_with(&d, "banned for password spraying");
    let mut ips: Vec<&str> = reasons.iter().filter_map(|e| e["ip"].as_str()).collect();
    ips.sort();
    assert_eq!(ips, sprayers, "each spray ban logged with its reason");
    assert!(reasons.iter().all(|e| e["user"] == "admin"));
    assert_eq!(logged_with(&d, "password spraying: user").len(), 1);
    // Four spray bans and the control, counted once the state has committed them (which may
    // trail the decisions `banned` shows).
    d.wait_metric("jailsink_bans_total{jail=\"sshd\"}", 5.0);
    d.assert_no_errors();
    assert!(d.stop().success());
}

/// Whether a TCP connection from `source` (an address of the attacker namespace) reaches the
/// service within `timeout`.
fn reaches_from(lab: &Lab, source: &str, timeout: Duration) -> bool {
    let source: IpAddr = source.parse().expect("literal");
    let service: SocketAddr = (SERVER_V4.parse::<IpAddr>().expect("literal"), lab.port).into();
    lab.attacker.within(move || {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        socket.set_linger(Some(Duration::ZERO)).expect("linger");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the probe's source");
        socket.connect_timeout(&service.into(), timeout).is_ok()
    })
}

#[test]
fn escalation_drops_the_whole_network_but_never_one_holding_an_allowlisted_neighbour() {
    require_root();
    let lab = Lab::new("esc");
    // A second network on the link: 198.51.100.0/24 holds an allowlisted neighbour.
    lab.server
        .run(&["ip", "addr", "add", "198.51.100.1/24", "dev", "vs"]);
    for ip in [
        "192.0.2.10",
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.50",
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.99",
    ] {
        let prefix = format!("{ip}/24");
        lab.attacker
            .run(&["ip", "addr", "add", &prefix, "dev", "va"]);
    }
    let settings = format!(
        r#"maxretry = 2
bantime = "1h"
port = {port}
action = "nftables"
ignoreip = ["127.0.0.0/8", "198.51.100.99"]
prefix_escalation = {{ ipv4 = 24, ipv6 = 64, after = 3 }}"#,
        port = lab.port
    );
    let jails = jail_toml("sshd", "sshd", FAILED_PASSWORD, &settings);
    let text = config("", &jails);
    let d = Daemon::start_with(&text, &lab.server.prefix());
    for source in ["192.0.2.50", "198.51.100.99", "198.51.100.10"] {
        assert!(
            reaches_from(&lab, source, Duration::from_secs(2)),
            "{source} cannot reach the service before any ban"
        );
    }
    let mut lines = Vec::new();
    for ip in [
        "192.0.2.10",
        "192.0.2.11",
        "192.0.2.12",
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
    ] {
        lines.push(failed("root", ip));
        lines.push(failed("root", ip));
    }
    // The daemon's listener is 127.0.0.1 inside the server namespace.
    lab.server.within({
        let lines = lines.clone();
        let tcp = d.tcp;
        move || {
            let mut stream = TcpStream::connect(tcp).expect("connect to the daemon");
            for line in lines {
                writeln!(stream, "<38>Dec  6 06:00:00 web1 sshd[1]: {line}").expect("send");
            }
        }
    });
    let want = [
        "192.0.2.0/24",
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
    ];
    assert!(
        wait_for(Duration::from_secs(10), || banned(&d) == want),
        "banned: {:?}\n{:#?}",
        banned(&d),
        d.logs.lock().unwrap()
    );
    let nft = lab
        .server
        .run(&["nft", "list", "table", "inet", "jailsink"]);
    assert!(nft.contains("192.0.2.0/24"), "{nft}");
    assert!(
        !nft.contains("192.0.2.10 ") && !nft.contains("192.0.2.11 "),
        "the single bans were folded into the network: {nft}"
    );
    // A neighbour that never failed is dropped with its network; the allowlisted neighbour of
    // the other network is not, while its banned neighbours are.
    assert!(
        wait_for(Duration::from_secs(10), || !reaches_from(
            &lab,
            "192.0.2.50",
            PROBE
        )),
        "192.0.2.50 gets through: {nft}"
    );
    assert!(!reaches_from(&lab, "198.51.100.10", PROBE), "{nft}");
    assert!(
        reaches_from(&lab, "198.51.100.99", Duration::from_secs(2)),
        "the allowlisted neighbour is dropped: {nft}"
    );
    assert_eq!(
        logged_with(&d, "not escalating to 198.51.100.0/24").len(),
        1,
        "the refusal is logged once"
    );
    assert_eq!(
        logged_with(&d, "folded into the ban of 192.0.2.0/24").len(),
        3
    );
    d.assert_no_errors();
    // Durable: after a restart the network is banned and dropped again, the singles are not back.
    let (status, dir) = d.stop_keeping_dir();
    assert!(status.success());
    let d = Daemon::start_in(dir, &text, &lab.server.prefix());
    assert_eq!(banned(&d), want);
    assert!(
        wait_for(Duration::from_secs(10), || !reaches_from(
            &lab,
            "192.0.2.50",
            PROBE
        )),
        "the network ban is not re-applied after a restart"
    );
    assert!(d.stop().success());
}

/// Starts the daemon in a private mount namespace whose /etc/hosts is `hosts` and whose
/// resolver is 127.0.0.1 (nothing real answers there), with `nsswitch.conf` reading files.
fn start_with_private_hosts(dir: &Path, text: &str) -> Daemon {
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(
        &nsswitch,
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    )
    .unwrap();
    let script = format!(
        "mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && \
         mount --bind {nss} /etc/nsswitch.conf && exec \"$0\" \"$@\"",
        hosts = dir.join("hosts").display(),
        resolv = resolv.display(),
        nss = nsswitch.display(),
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    Daemon::start_with(text, &wrapper)
}

#[test]
fn allowlist_names_and_files_change_while_running_and_unban() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    // Rewritten in place (same inode) so the bind mount sees every change.
    std::fs::write(&hosts, "127.0.0.1 localhost\n192.0.2.77 office.test\n").unwrap();
    let allow = dir.path().join("allow.d");
    std::fs::create_dir(&allow).unwrap();
    std::fs::write(allow.join("a.txt"), "# the team\n203.0.113.0/28\n").unwrap();
    let jails = format!(
        r#"
[jails.sshd]
programs = ["sshd"]
filter = "sshd"
maxretry = 2
bantime = "1h"
ignoreip = ["127.0.0.0/8", "office.test"]
ignoreip_files = ["{allow}/*.txt"]
ignore_refresh = "1s"
"#,
        allow = allow.display()
    );
    let text = config("", &jails);
    // A missing file is an error at check, naming the file and the key.
    let missing = text.replace("/*.txt", "/none.txt");
    let bad = dir.path().join("missing.toml");
    std::fs::write(
        &bad,
        missing.replace("@DIR@", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::binary())
        .args(["-c", bad.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("jails.sshd.ignoreip_files[0]") && stderr.contains("none.txt"),
        "{stderr}"
    );

    let d = start_with_private_hosts(dir.path(), &text);
    assert!(
        wait_for(Duration::from_secs(10), || !logged_with(
            &d,
            "allowlist name resolved"
        )
        .is_empty()),
        "{:#?}",
        d.logs.lock().unwrap()
    );
    // Decided in order on one connection: the allowlisted ones are not banned, the control is.
    let round = |d: &Daemon, ips: &[&str], control: &str| {
        let mut lines = Vec::new();
        for ip in ips {
            lines.push(failed("root", ip));
            lines.push(failed("root", ip));
        }
        lines.push(failed("root", control));
        lines.push(failed("root", control));
        send(d, &lines);
        assert!(
            wait_for(Duration::from_secs(10), || banned(d)
                .contains(&control.to_string())),
            "{:#?}",
            d.logs.lock().unwrap()
        );
        banned(d)
    };
    let now = round(&d, &["192.0.2.77", "203.0.113.5"], "198.51.100.1");
    assert_eq!(
        now,
        ["198.51.100.1"],
        "name and file entries are allowlisted"
    );

    // Banned, then allowlisted by a file change and by a new name: both unbanned, no reload.
    let now = round(&d, &["203.0.113.200", "192.0.2.88"], "198.51.100.2");
    assert!(now.contains(&"203.0.113.200".to_string()) && now.contains(&"192.0.2.88".to_string()));
    std::fs::write(
        allow.join("a.txt"),
        "# the team\n203.0.113.0/28\n203.0.113.200 # partner\nnot/an/address\n",
    )
    .unwrap();
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n192.0.2.77 office.test\n192.0.2.88 branch.test\n",
    )
    .unwrap();
    std::fs::write(allow.join("b.txt"), "branch.test\n").unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || {
            let b = banned(&d);
            !b.contains(&"203.0.113.200".to_string()) && !b.contains(&"192.0.2.88".to_string())
        }),
        "still banned: {:?}\n{:#?}",
        banned(&d),
        d.logs.lock().unwrap()
    );
    assert_eq!(
        logged_with(&d, "is allowlisted now; lifting its ban").len(),
        2
    );
    let skipped = logged_with(&d, "allowlist line skipped");
    assert!(
        skipped
            .iter()
            .any(|e| e["line"] == 4 && e["file"].as_str().is_some_and(|f| f.ends_with("a.txt"))),
        "{skipped:#?}"
    );

    // DNS stops answering for office.test and a.txt disappears: both keep their last good
    // contents, so their addresses stay allowlisted.
    std::fs::write(&hosts, "127.0.0.1 localhost\n192.0.2.88 branch.test\n").unwrap();
    std::fs::remove_file(allow.join("a.txt")).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || {
            logged_with(&d, "keeping its last good answer")
                .iter()
                .any(|e| e["name"] == "office.test")
                && !logged_with(&d, "disappeared; keeping its last good contents").is_empty()
        }),
        "{:#?}",
        d.logs.lock().unwrap()
    );
    let now = round(&d, &["192.0.2.77", "203.0.113.200"], "198.51.100.3");
    assert!(
        !now.contains(&"192.0.2.77".to_string()) && !now.contains(&"203.0.113.200".to_string()),
        "{now:?}"
    );
    d.assert_no_errors();
    assert!(d.stop().success());
}
