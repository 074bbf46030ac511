//! Evidence and live explain through the real daemon: `why` after a ban shows the deciding
//! lines and the syslog host names (two rsyslogd instances with their own names), also after a
//! restart and for a network ban; history past `history_days` is pruned at start; the command
//! action's `<hosts>` and `<matches>` arrive shell-safe; `tail` sees a match, and a client that
//! does not read is told what it lost while ingest goes on.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::observe::{failed, snippet, Rsyslog};
use crate::support::{config, log_tcp, logger, wait_for, Daemon, SSHD};

/// `why ADDR --json`, parsed.
fn why(d: &Daemon, addr: &str) -> serde_json::Value {
    serde_json::from_str(&d.cli_ok(&["why", addr, "--json"])).unwrap()
}

/// An rsyslogd calling itself `name`, forwarding to the daemon with the shipped RFC 5424
/// snippet.
fn host(d: &Daemon, name: &str) -> Rsyslog {
    let conf = snippet(
        "rsyslog/50-jailsink-rfc5424.conf",
        &[("port=\"5514\"", format!("port=\"{}\"", d.tcp.port()))],
    );
    Rsyslog::start(&conf, &format!("localHostname=\"{name}\""), true)
}

fn wait_logged(d: &Daemon, line: &str) {
    assert!(
        wait_for(Duration::from_secs(20), || d.logged(line)),
        "no `{line}`: {:#?}",
        d.logs.lock().unwrap()
    );
}

#[test]
fn why_shows_the_deciding_lines_and_host_names_also_after_a_restart() {
    let d = Daemon::start(&config("", SSHD));
    let (web1, web2) = (host(&d, "web1"), host(&d, "web2"));
    web1.log("sshd", &failed("192.0.2.85"));
    // The second failure is counted (and its line kept) before the third bans.
    assert!(wait_for(Duration::from_secs(20), || {
        why(&d, "192.0.2.85")["jails"][0]["failures"] == 1
    }));
    let now = why(&d, "192.0.2.85");
    assert_eq!(now["jails"][0]["recent"][0]["host"], "web1", "{now}");
    web2.log("sshd", &failed("192.0.2.85"));
    assert!(wait_for(Duration::from_secs(20), || {
        why(&d, "192.0.2.85")["jails"][0]["failures"] == 2
    }));
    web1.log("sshd", &failed("192.0.2.85"));
    wait_logged(&d, "[sshd] Ban 192.0.2.85");

    let check = |d: &Daemon| {
        let answer = why(d, "192.0.2.85");
        let jail = &answer["jails"][0];
        assert_eq!(jail["jail"], "sshd", "{answer}");
        assert_eq!(jail["failures"], 0, "a banned address counts nothing now");
        let ban = &jail["active"][0];
        assert_eq!(ban["ip"], "192.0.2.85", "{answer}");
        assert_eq!(ban["failures"], 3);
        assert_eq!(
            ban["hosts"],
            serde_json::json!(["web1", "web2"]),
            "{answer}"
        );
        let lines = ban["evidence"].as_array().unwrap();
        let hosts: Vec<&str> = lines.iter().map(|l| l["host"].as_str().unwrap()).collect();
        assert_eq!(hosts, ["web1", "web2", "web1"], "{answer}");
        for line in lines {
            assert_eq!(line["message"], failed("192.0.2.85"));
            assert_eq!(line["program"], "sshd");
            assert!(line["at"].as_str().unwrap().ends_with('Z'));
        }
        let banned: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["banned", "--json"])).unwrap();
        assert_eq!(banned[0]["hosts"], serde_json::json!(["web1", "web2"]));
        let text = d.cli_ok(&["why", "192.0.2.85"]);
        assert!(text.contains("[sshd] 192.0.2.85"), "{text}");
        assert!(text.contains("from web1, web2"), "{text}");
        assert!(
            text.contains(&format!("web2 sshd: {}", failed("192.0.2.85"))),
            "{text}"
        );
    };
    check(&d);
    drop((web1, web2));

    // A network ban holding an address shows up in `why` of the address.
    d.cli_ok(&["ban", "sshd", "198.51.100.0/24"]);
    let net = why(&d, "198.51.100.7");
    assert_eq!(
        net["jails"][0]["active"][0]["ip"], "198.51.100.0/24",
        "{net}"
    );
    let nothing = d.cli_ok(&["why", "203.0.113.1"]);
    assert!(nothing.contains("no active ban"), "{nothing}");
    let bad = d.cli(&["why", "example.org"]);
    assert!(!bad.status.success());

    // Everything comes back from the state after a restart.
    let (status, dir) = d.stop_keeping_dir();
    assert!(status.success());
    let d = Daemon::start_in(dir, &config("", SSHD), &[]);
    check(&d);
    assert!(d.stop().success());
}

#[test]
fn history_older_than_history_days_is_pruned_at_start() {
    let d = Daemon::start(&config("", SSHD));
    log_tcp(&[], &d, "sshd", &failed("192.0.2.60"), 3);
    wait_logged(&d, "[sshd] Ban 192.0.2.60");
    let (status, dir) = d.stop_keeping_dir();
    assert!(status.success());
    // Two old bans of the same address, written as an older jailsink would have (no evidence
    // columns filled): 40 and 400 days ago.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for days in [40, 400] {
        db.execute(
            "INSERT INTO history (jail, target, banned_at, bantime, failures) VALUES ('sshd', '192.0.2.60/32', ?1, 600, 7)",
            [now - days * 86_400],
        )
        .unwrap();
    }
    drop(db);
    let text = config("", SSHD).replace(
        "path = \"@DIR@/state.db\"",
        "path = \"@DIR@/state.db\"\nhistory_days = 100",
    );
    let d = Daemon::start_in(dir, &text, &[]);
    let answer = why(&d, "192.0.2.60");
    let past = answer["jails"][0]["past"].as_array().unwrap().clone();
    assert_eq!(past.len(), 1, "the 400-day-old ban is pruned: {answer}");
    assert_eq!(past[0]["failures"], 7);
    assert_eq!(past[0]["bantime"], "10m");
    assert!(past[0]["evidence"].as_array().unwrap().is_empty());
    assert_eq!(answer["jails"][0]["active"][0]["failures"], 3, "{answer}");
    let (status, dir) = d.stop_keeping_dir();
    assert!(status.success());
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "the ban of this run and the 40-day-old one");
}

/// An sshd jail whose ban runs `sh -c SHELL` (`shell` as it stands inside a TOML basic string).
fn command_jail(maxretry: u32, shell: &str) -> String {
    crate::support::sshd_hour_jail(
        maxretry,
        &format!("action = {{ type = \"command\", ban = [\"sh\", \"-c\", \"{shell}\"] }}\n"),
    )
}

#[test]
fn the_command_action_gets_hosts_and_matches_shell_safe() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ban.out");
    let pwned = dir.path().join("pwned");
    let shell = format!(
        "printf '%s\\n' <ip> <hosts> \\\"<matches>\\\" > {}",
        out.display()
    );
    let d = Daemon::start(&config("", &command_jail(2, &shell)));
    // The attacker's user name tries to run a command in the operator's shell template.
    let evil = format!(
        "Invalid user $(touch${{IFS}}{}) from 192.0.2.33 port 22",
        pwned.display()
    );
    let web7 = host(&d, "web7");
    web7.log("sshd", &evil);
    web7.log("sshd", &evil);
    wait_logged(&d, "[sshd] Ban 192.0.2.33");
    assert!(wait_for(Duration::from_secs(10), || out.exists()
        && std::fs::read_to_string(&out).unwrap().lines().count() >= 3));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "192.0.2.33");
    assert_eq!(lines[1], "web7");
    let matches: Vec<&str> = lines[2].split('\t').collect();
    assert_eq!(matches.len(), 2, "{text}");
    for m in matches {
        assert!(
            m.starts_with("web7 sshd: Invalid user __touch__IFS_"),
            "{m}"
        );
        assert!(m.ends_with("_ from 192.0.2.33 port 22"), "{m}");
    }
    assert!(!pwned.exists(), "the attacker's command ran");
    drop(web7);
    assert!(d.stop().success());
}

/// Connects a raw `tail` client and reads its `ok` line: from then on it is watching.
fn tail_client(d: &Daemon, jail: Option<&str>) -> BufReader<UnixStream> {
    let socket = d.config.parent().unwrap().join("jailsink.sock");
    let mut stream = UnixStream::connect(&socket).unwrap();
    let request = serde_json::json!({ "command": "tail", "jail": jail });
    writeln!(stream, "{request}").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let ok: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(ok["status"], "ok", "{first}");
    reader
}

/// Reads events until one satisfies `want` (the read timeout bounds the wait).
fn read_until(
    reader: &mut BufReader<UnixStream>,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .expect("an event before the timeout");
        assert!(n > 0, "the stream ended");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if want(&event) {
            return event;
        }
    }
}

#[test]
fn tail_explains_matches_ignores_misses_bans_and_unbans() {
    let jails = format!("{SSHD}ignoreip = [\"127.0.0.0/8\", \"198.51.100.0/24\"]\n");
    let d = Daemon::start(&config("", &jails));
    assert!(!d.cli(&["tail", "nojail"]).status.success());
    let mut tail = tail_client(&d, Some("sshd"));
    log_tcp(&[], &d, "sshd", &failed("192.0.2.40"), 1);
    let matched = read_until(&mut tail, |e| e["event"] == "matched");
    assert_eq!(matched["jail"], "sshd");
    assert_eq!(matched["ip"], "192.0.2.40");
    assert_eq!(
        (matched["count"].as_u64(), matched["maxretry"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(matched["regex"], 0);
    assert!(matched["pattern"].as_str().unwrap().starts_with("^Failed"));
    assert_eq!(matched["outcome"], "counted");
    assert_eq!(matched["message"], failed("192.0.2.40"));
    // A login forgives a failure (one with nothing to forgive shows no event).
    log_tcp(&[], &d, "sshd", &failed("192.0.2.41"), 1);
    read_until(&mut tail, |e| {
        e["event"] == "matched" && e["ip"] == "192.0.2.41"
    });
    log_tcp(
        &[],
        &d,
        "sshd",
        "Accepted publickey for alice from 192.0.2.41 port 22 ssh2",
        1,
    );
    let forgiven = read_until(&mut tail, |e| e["event"] == "forgiven");
    assert_eq!(forgiven["ip"], "192.0.2.41", "{forgiven}");
    log_tcp(&[], &d, "sshd", "Server listening on 0.0.0.0 port 22.", 1);
    let missed = read_until(&mut tail, |e| e["event"] == "missed");
    assert!(
        missed["message"]
            .as_str()
            .unwrap()
            .starts_with("Server listening"),
        "{missed}"
    );
    log_tcp(&[], &d, "sshd", &failed("198.51.100.9"), 1);
    let ignored = read_until(&mut tail, |e| e["event"] == "ignored");
    assert_eq!(ignored["outcome"], "ignoreip 198.51.100.0/24", "{ignored}");
    log_tcp(&[], &d, "sshd", &failed("192.0.2.40"), 2);
    let ban = read_until(&mut tail, |e| e["event"] == "ban");
    assert_eq!(
        (ban["ip"].as_str(), ban["failures"].as_u64()),
        (Some("192.0.2.40"), Some(3))
    );
    d.cli_ok(&["unban", "sshd", "192.0.2.40"]);
    let unban = read_until(&mut tail, |e| e["event"] == "unban");
    assert_eq!(unban["ip"], "192.0.2.40");
    drop(tail);

    // The CLI: text lines, from the moment it is watching (a failure is sent until it shows).
    let mut cli = Command::new(crate::support::binary())
        .args(["--config", d.config.to_str().unwrap(), "tail", "sshd"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = cli.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = None;
    for n in 1..=40 {
        log_tcp(&[], &d, "sshd", &failed(&format!("192.0.2.{}", 100 + n)), 1);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            seen = Some(line);
            break;
        }
    }
    let _ = cli.kill();
    let _ = cli.wait();
    let line = seen.expect("tail printed a match");
    assert!(
        line.contains("[sshd] matched failregex[0] 192.0.2.1"),
        "{line}"
    );
    assert!(line.contains("1/3 counted"), "{line}");
    assert!(d.stop().success());
}

/// A tail client that reads its first line and then nothing (a paused pager) never slows
/// ingest, and is disconnected with a warning once the daemon's write to it has made no
/// progress for 10 s: its watch ends, so intake leaves its watched mode, and the client then
/// finds what the socket held and the end of the stream (a close, not a reset). (That a client that falls behind and reads again
/// is told what it lost is control::server's a_tail_client_that_falls_behind_is_told_what_it_lost,
/// on a paused clock.)
#[test]
fn a_tail_client_that_never_reads_is_cut_and_never_slows_ingest() {
    let d = Daemon::start(&config("", SSHD));
    let mut tail = tail_client(&d, None);
    // 20,000 failures of distinct addresses through one logger, while the client reads nothing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("failures.txt");
    let lines: Vec<String> = (0..20_000u32)
        .map(|n| failed(&format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let port = d.tcp.port().to_string();
    logger(
        &[],
        &[
            "-n",
            "127.0.0.1",
            "-T",
            "-P",
            &port,
            "-t",
            "sshd",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    let all = wait_for(Duration::from_secs(60), || {
        d.metric("jailsink_failures_total{jail=\"sshd\"}") == Some(20_000.0)
    });
    assert!(
        all,
        "ingest stalled behind a stuck tail client: {:?} failures counted",
        d.metric("jailsink_failures_total{jail=\"sshd\"}")
    );
    // The client still reads nothing. The daemon has more events for it than its socket holds
    // (20,000 matches of about 330 bytes; however far its tail task falls behind, the ring
    // keeps the last 1,024 for it, 330 KB, and the socket took 192 of them, 63 KB, when this
    // was written), so the task is stuck in a write, and a write stuck for 10 s ends the
    // stream: one outcome, however slow the machine (the wait below only bounds how long that
    // may take; nothing here races the 10 s).
    assert!(
        wait_for(Duration::from_secs(120), || d
            .logged("a tail client read nothing for 10s; disconnected")),
        "a tail client that never reads was kept: {:?}",
        d.errors()
    );
    // What the socket held is still there to read, then the stream's end.
    let mut held = 0;
    loop {
        let mut line = String::new();
        if tail.read_line(&mut line).expect("the end of the stream") == 0 {
            break;
        }
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(event["event"].is_string(), "{line}");
        held += 1;
    }
    assert!(held > 0, "the socket held no event");
    drop(tail);
    assert!(d.stop().success());
}

/// A ban by hand of an address the jail is tracking hands the action what it failed with:
/// `<failures>`, `<hosts>` and `<matches>`; a ban by hand of an untracked one has none.
#[test]
fn a_ban_by_hand_of_a_tracked_address_keeps_its_failures_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bans.out");
    let shell = format!(
        "printf '%s|%s|%s|%s\\n' <ip> <failures> <hosts> \\\"<matches>\\\" >> {}",
        out.display()
    );
    let d = Daemon::start(&config("", &command_jail(5, &shell)));
    let web7 = host(&d, "web7");
    web7.log("sshd", &failed("192.0.2.44"));
    web7.log("sshd", &failed("192.0.2.44"));
    let tracked = || {
        d.cli_ok(&["status", "sshd"])
            .lines()
            .any(|l| l.contains("Total failed:\t2"))
    };
    assert!(
        wait_for(Duration::from_secs(20), tracked),
        "{}",
        d.cli_ok(&["status", "sshd"])
    );
    d.cli_ok(&["ban", "sshd", "192.0.2.44"]);
    d.cli_ok(&["ban", "sshd", "198.51.100.45"]);
    let written = || std::fs::read_to_string(&out).unwrap_or_default();
    assert!(wait_for(Duration::from_secs(10), || written()
        .lines()
        .count()
        >= 2));
    let text = written();
    let lines: Vec<&str> = text.lines().collect();
    let tracked: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(tracked[..3], ["192.0.2.44", "2", "web7"], "{text}");
    let matches: Vec<&str> = tracked[3].split('\t').collect();
    assert_eq!(matches.len(), 2, "{text}");
    assert!(
        matches.iter().all(|m| m.starts_with("web7 sshd: ")),
        "{text}"
    );
    assert_eq!(lines[1], "198.51.100.45|0||", "{text}");
    drop(web7);
    assert!(d.stop().success());
}
