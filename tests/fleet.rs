//! Fleet mode end to end on a real redis-server (private port and directory, AOF on): sinks
//! decide and publish, agents apply. Two sinks and three agents in network namespaces with
//! nftables (an attacker split between the sinks is banned once and dropped by every agent's
//! kernel; an allowlisted address is not; a manual unban reaches every agent); outages (agent
//! stopped, Redis killed and restarted, sink killed with -9); hostile stream entries and the
//! per-origin storm guard.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::lab::Netns;
use crate::redis_support::Redis;
use crate::support::{filter_dir, log_tcp, wait_for, Daemon};
use jailsink::fleet::publish::{LIFT, PRUNE, PUT};

/// Writes `text` (with `@DIR@`) as a config in a new directory and runs `jailsink ARGS` on it
/// (the config's `-c`); returns the exit code and stderr.
fn run_on(text: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jailsink.toml");
    std::fs::write(
        &path,
        text.replace("@DIR@", &dir.path().display().to_string()),
    )
    .unwrap();
    let mut child = Command::new(crate::support::binary())
        .arg("-c")
        .arg(&path)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command expected to end that runs on (a daemon that started after all) fails the test
    // instead of hanging it.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr_pipe, &mut text);
        text
    });
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break Some(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&reader.join().unwrap())
        .replace(&path.display().to_string(), "CONFIG");
    (code, stderr)
}

const WAIT: Duration = Duration::from_secs(20);

/// An sshd jail on the shipped filter, and a `quick` one with a short bantime (long enough to
/// outlast the steps that check it is still held, short enough to wait for its expiry).
fn jails(maxretry: u32, port: u16) -> String {
    crate::support::sshd_hour_jail(maxretry, &format!("port = {port}\n"))
        + r#"
[jails.quick]
programs = ["quick"]
filter = "sshd"
maxretry = 2
bantime = "30s"
"#
}

/// A sink: the support config (loopback listeners, log action) with `[fleet]`.
fn sink_config(url: &str, node: &str, fleet_extra: &str, jails: &str) -> String {
    let fleet = format!(
        "{jails}\n[fleet]\nredis = \"{url}\"\nrole = \"sink\"\nnode = \"{node}\"\nprefix = \"t\"\n{fleet_extra}\n"
    );
    crate::support::config("", &fleet)
}

/// An agent: no listener, no jail.
fn agent_config(url: &str, node: &str, ignoreip: &str, fleet_extra: &str) -> String {
    format!(
        r#"
[server]
udp = []
tcp = []
{sections}
[defaults]
ignoreself = true
ignoreip = [{ignoreip}]

[fleet]
redis = "{url}"
role = "agent"
node = "{node}"
prefix = "t"
{fleet_extra}
"#,
        sections = crate::support::DAEMON_SECTIONS
    )
}

/// `n` sshd failures of `ip` sent to `sink` (tag `program`), from where `wrapper` runs.
fn fail(wrapper: &[&str], sink: &Daemon, program: &str, ip: &str, n: usize) {
    let msg = format!("Failed password for root from {ip} port 4242 ssh2");
    log_tcp(wrapper, sink, program, &msg, n);
}

/// `banned --json` of a daemon: (jail, ip, origin, expires_at).
fn banned(daemon: &Daemon) -> Vec<(String, String, String, Option<String>)> {
    let text = daemon.cli_ok(&["banned", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("banned --json");
    list.iter()
        .map(|b| {
            (
                b["jail"].as_str().unwrap().to_string(),
                b["ip"].as_str().unwrap().to_string(),
                b["origin"].as_str().unwrap().to_string(),
                b["expires_at"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn holds(daemon: &Daemon, ip: &str) -> bool {
    banned(daemon).iter().any(|b| b.1 == ip)
}

fn wait_holds(daemon: &Daemon, ip: &str, want: bool, what: &str) {
    let ok = wait_for(WAIT, || holds(daemon, ip) == want);
    assert!(
        ok,
        "{what}: {ip} held={} expected {want}; banned: {:?}\n{:#?}",
        !want,
        banned(daemon),
        daemon.errors()
    );
}

/// The stream's ban targets, in order, from entries of either version.
fn stream_bans(redis: &Redis) -> Vec<String> {
    stream_entries(redis)
        .into_iter()
        .filter(|(_, op, _)| op == "ban")
        .map(|(_, _, target)| target)
        .collect()
}

/// The stream's entries as (version, op, target): version 1 has one field per attribute,
/// version 2 (`v` = 2) packs them into `e`, space-separated, op first and target third.
fn stream_entries(redis: &Redis) -> Vec<(u8, String, String)> {
    let out = redis.cli(&["--no-raw", "XRANGE", "t:events", "-", "+"]);
    // redis-cli prints field and value lines; an entry starts with its id (`1) 1) "..."`).
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let mut entries = Vec::new();
    let mut op = String::new();
    for (i, line) in lines.iter().enumerate() {
        let value = || unquote(lines.get(i + 1).copied().unwrap_or(""));
        if line.ends_with("\"op\"") {
            op = value();
        }
        if line.ends_with("\"target\"") {
            entries.push((1, std::mem::take(&mut op), value()));
        }
        if line.ends_with("\"e\"") {
            let packed = value();
            let parts: Vec<&str> = packed.split(' ').collect();
            assert!(parts.len() >= 12, "packed entry {packed:?}");
            entries.push((2, parts[0].to_string(), parts[2].to_string()));
        }
    }
    entries
}

fn unquote(line: &str) -> String {
    line.rsplit_once(") ")
        .map_or(line, |(_, v)| v)
        .trim_matches('"')
        .to_string()
}

/// Creates the users of examples/fleet/users.acl (prefix `t`, passwords `sinkpw`/`agentpw`).
fn acl_users(redis: &Redis) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/users.acl");
    let text = std::fs::read_to_string(path).expect("users.acl");
    let mut made = 0;
    for line in text.lines().filter(|l| l.starts_with("user ")) {
        let line = line
            .replace("~jailsink:", "~t:")
            .replace(">SINK-PASSWORD", ">sinkpw")
            .replace(">AGENT-PASSWORD", ">agentpw");
        let mut args = vec!["ACL", "SETUSER"];
        args.extend(line.split_whitespace().skip(1));
        assert_eq!(redis.cli(&args).trim(), "OK", "{line}");
        made += 1;
    }
    assert_eq!(made, 2);
}

/// A sink and an agent on loopback with the log action: an agent that was stopped catches up,
/// Redis killed mid-stream (sinks keep banning into the outbox, replayed in order when it is
/// back, nothing lost), a manual unban reaches the agent, and after the sink is killed with -9
/// the agent keeps its bans until they expire.
#[test]
fn fleet_survives_agent_redis_and_sink_outages() {
    let mut redis = Redis::start("", &[]);
    // The least-privilege users the README documents: the fleet must work with them.
    acl_users(&redis);
    let (sink_url, agent_url) = (
        format!("redis://sink:sinkpw@127.0.0.1:{}/0", redis.port),
        format!("redis://agent:agentpw@127.0.0.1:{}/0", redis.port),
    );
    let sink = Daemon::start(&sink_config(&sink_url, "sink-1", "", &jails(3, 22)));
    let agent_text = agent_config(&agent_url, "agent-1", "\"127.0.0.0/8\"", "action = \"log\"");
    let agent = Daemon::start(&agent_text);

    fail(&[], &sink, "sshd", "192.0.2.10", 3);
    wait_holds(&agent, "192.0.2.10", true, "propagation");
    let on_agent = banned(&agent);
    assert_eq!(on_agent[0].2, "sink-1", "origin on the agent: {on_agent:?}");
    let on_sink = banned(&sink);
    assert_eq!(on_sink.len(), 1);
    assert_eq!(on_sink[0].2, "sink-1", "origin of a local ban is this node");
    // The ban feed names it too: the origin is set where ban entries are made.
    let url = format!("http://{}/bans.json", sink.metrics);
    let feed = Command::new(crate::support::tool("curl", "curl"))
        .args(["-sS", "--max-time", "30", &url])
        .output()
        .unwrap();
    let feed: Vec<serde_json::Value> = serde_json::from_slice(&feed.stdout).expect("bans.json");
    assert_eq!(feed.len(), 1, "{feed:?}");
    assert_eq!(feed[0]["origin"], "sink-1", "{feed:?}");

    // An agent that is down when a ban is decided catches up when it starts.
    let (_, agent_dir) = agent.stop_keeping_dir();
    fail(&[], &sink, "sshd", "192.0.2.11", 3);
    sink.wait_metric("jailsink_fleet_events_published_total{op=\"ban\"}", 2.0);
    let agent = Daemon::start_in(agent_dir, &agent_text, &[]);
    wait_holds(&agent, "192.0.2.11", true, "catch-up after a restart");
    assert!(holds(&agent, "192.0.2.10"));

    // Redis killed mid-stream: the sink bans on, into its outbox.
    redis.kill();
    sink.wait_metric("jailsink_fleet_connected{component=\"publisher\"}", 0.0);
    // Each failure is a `logger` connection of its own, and jailsink orders a connection's
    // messages, not messages of different connections: .12 is banned before .13's failures
    // are sent, so the outbox holds them in that order.
    fail(&[], &sink, "sshd", "192.0.2.12", 3);
    let ok = wait_for(WAIT, || holds(&sink, "192.0.2.12"));
    assert!(ok, "the sink must ban while Redis is away");
    fail(&[], &sink, "sshd", "192.0.2.13", 3);
    let ok = wait_for(WAIT, || holds(&sink, "192.0.2.13"));
    assert!(ok, "the sink must ban while Redis is away");
    sink.wait_metric("jailsink_fleet_outbox_events", 2.0);
    // Still held by the agent while Redis is away.
    assert!(holds(&agent, "192.0.2.10") && holds(&agent, "192.0.2.11"));

    // Back (same directory: the AOF keeps what was written): the outbox is replayed in order.
    redis.restart();
    acl_users(&redis);
    sink.wait_metric("jailsink_fleet_outbox_events", 0.0);
    assert_eq!(
        stream_bans(&redis),
        [
            "192.0.2.10/32",
            "192.0.2.11/32",
            "192.0.2.12/32",
            "192.0.2.13/32"
        ],
        "nothing lost, in order"
    );
    wait_holds(&agent, "192.0.2.12", true, "replayed outbox");
    wait_holds(&agent, "192.0.2.13", true, "replayed outbox");

    // A manual unban on the sink lifts the ban fleet-wide.
    sink.cli_ok(&["unban", "sshd", "192.0.2.12"]);
    wait_holds(&agent, "192.0.2.12", false, "manual unban");
    let fleet = sink.cli_ok(&["banned", "--fleet", "--json"]);
    let fleet: Vec<serde_json::Value> = serde_json::from_str(&fleet).unwrap();
    let ips: Vec<&str> = fleet.iter().map(|b| b["ip"].as_str().unwrap()).collect();
    assert_eq!(ips, ["192.0.2.10", "192.0.2.11", "192.0.2.13"], "{fleet:?}");
    assert!(fleet.iter().all(|b| b["origin"] == "sink-1"));
    // Each carries the syslog host name of the message that decided it (logger's own).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for b in &fleet {
        let hosts = b["hosts"].as_array().expect("hosts");
        assert_eq!(hosts.len(), 1, "{b}");
        assert!(
            host.trim().starts_with(hosts[0].as_str().unwrap()),
            "{b} vs {host}"
        );
    }

    // status --fleet shows both nodes from their heartbeats.
    let ok = wait_for(WAIT, || {
        let out = sink.cli(&["status", "--fleet", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        status["connected"] == true
            && nodes
                .iter()
                .any(|n| n["node"] == "sink-1" && n["role"] == "sink")
            && nodes.iter().any(|n| {
                n["node"] == "agent-1"
                    && n["role"] == "agent"
                    && n["bans_applied"].as_u64() >= Some(4)
            })
    });
    assert!(ok, "{}", sink.cli_ok(&["status", "--fleet", "--json"]));

    // The sink dies hard: the agent keeps its bans until each expires.
    fail(&[], &sink, "quick", "192.0.2.14", 2);
    wait_holds(&agent, "192.0.2.14", true, "short ban");
    let expires = banned(&agent)
        .into_iter()
        .find(|b| b.1 == "192.0.2.14")
        .and_then(|b| b.3)
        .expect("an expiry");
    let _ = sink.kill9();
    assert!(holds(&agent, "192.0.2.14") && holds(&agent, "192.0.2.10"));
    let ok = wait_for(Duration::from_secs(90), || !holds(&agent, "192.0.2.14"));
    assert!(ok, "the short ban never expired on the agent");
    let expires = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    let now = chrono::Utc::now();
    assert!(
        now >= expires,
        "lifted at {now}, before its expiry {expires}"
    );
    assert!(holds(&agent, "192.0.2.10"), "long bans stay");
    agent.assert_no_errors();
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The fields of a valid ban event (origin `rogue`, an hour long), with `overrides`.
fn event_fields(overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let now = unix_ms();
    let mut fields: Vec<(String, String)> = [
        ("op", "ban".to_string()),
        ("jail", "sshd".into()),
        ("target", "198.51.100.1/32".into()),
        ("banned_at", now.to_string()),
        ("expires_at", (now + 3_600_000).to_string()),
        ("ban_count", "1".into()),
        ("failures", "5".into()),
        ("ports", "22".into()),
        ("protocol", "tcp".into()),
        ("origin", "rogue".into()),
        ("hosts", "".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    for (k, v) in overrides {
        match fields.iter_mut().find(|(name, _)| name == k) {
            Some(f) => f.1 = v.to_string(),
            None => fields.push((k.to_string(), v.to_string())),
        }
    }
    fields
}

/// XADD of a ban event with the given fields overriding a valid one.
fn xadd(redis: &Redis, overrides: &[(&str, &str)]) {
    let fields = event_fields(overrides);
    let mut args = vec!["XADD", "t:events", "*"];
    for (k, v) in &fields {
        args.push(k);
        args.push(v);
    }
    redis.cli(&args);
}

/// Puts a ban straight into the active set (as a sink's publisher does).
fn activate(redis: &Redis, overrides: &[(&str, &str)]) {
    let fields: serde_json::Map<String, serde_json::Value> = event_fields(overrides)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let member = format!(
        "{}|{}",
        fields["jail"].as_str().unwrap(),
        fields["target"].as_str().unwrap()
    );
    let score = fields["expires_at"].as_str().unwrap().to_string();
    redis.cli(&["ZADD", "t:active", &score, &member]);
    let json = serde_json::Value::Object(fields).to_string();
    redis.cli(&["HSET", "t:bans", &member, &json]);
}

/// An agent allowlisting loopback, started and following the stream.
fn following_agent(redis: &Redis, node: &str, fleet_extra: &str) -> Daemon {
    let agent = Daemon::start(&agent_config(
        &redis.url(),
        node,
        "\"127.0.0.0/8\"",
        fleet_extra,
    ));
    agent.wait_metric("jailsink_fleet_connected{component=\"follower\"}", 1.0);
    agent
}

/// Hostile entries are counted and skipped (never a ban of something that is not an address),
/// and a flood from one origin is withheld past max_bans_per_minute.
#[test]
fn fleet_agent_skips_malformed_entries_and_guards_against_storms() {
    let redis = Redis::start("", &[]);
    let agent = following_agent(
        &redis,
        "agent-h",
        "action = \"log\"\nmax_bans_per_minute = 3",
    );
    let hostile: &[&[(&str, &str)]] = &[
        &[("target", "0.0.0.0/0")],
        &[("target", "example.com")],
        &[("target", "10.0.0.0/4")],
        &[("jail", "../../etc/passwd")],
        &[("op", "flush")],
        &[("ports", "22;reboot")],
        &[("expires_at", "1")],
        &[("origin", "a b")],
    ];
    for overrides in hostile {
        xadd(&redis, overrides);
    }
    redis.cli(&["XADD", "t:events", "*", "garbage", "\u{1}\u{2}"]);
    agent.wait_metric(
        "jailsink_fleet_errors_total{kind=\"malformed\"}",
        (hostile.len() + 1) as f64,
    );
    assert!(banned(&agent).is_empty(), "{:?}", banned(&agent));

    // Five bans from one origin at once: three applied, two withheld and counted.
    for i in 1..=5 {
        let target = format!("198.51.100.{i}/32");
        xadd(&redis, &[("target", &target)]);
    }
    agent.wait_metric("jailsink_fleet_bans_withheld_total{origin=\"rogue\"}", 2.0);
    agent.wait_metric(
        "jailsink_fleet_events_applied_total{op=\"ban\",origin=\"rogue\"}",
        3.0,
    );
    assert_eq!(banned(&agent).len(), 3);
    // Another origin is not held back by the rogue one.
    xadd(
        &redis,
        &[("target", "198.51.100.9/32"), ("origin", "sink-ok")],
    );
    wait_holds(&agent, "198.51.100.9", true, "another origin");

    // The snapshot passes the guard too, judged by when the sink decided each ban: five
    // standing bans decided a minute apart are all applied by a fresh agent with the same
    // guard; a flood of five decided in the same minute is held back past three.
    let now = unix_ms();
    for i in 20..25u64 {
        let banned_at = (now - (i - 19) * 61_000).to_string();
        activate(
            &redis,
            &[
                ("target", &format!("198.51.100.{i}/32")),
                ("banned_at", &banned_at),
            ],
        );
    }
    for i in 40..45 {
        activate(&redis, &[("target", &format!("198.51.100.{i}/32"))]);
    }
    // An active-set member whose details name another target: skipped, counted, neither
    // address banned.
    activate(&redis, &[("target", "198.51.100.30/32")]);
    let forged = serde_json::Value::Object(
        event_fields(&[("target", "198.51.100.31/32")])
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
    .to_string();
    redis.cli(&["HSET", "t:bans", "sshd|198.51.100.30/32", &forged]);
    let fresh = Daemon::start(&agent_config(
        &redis.url(),
        "agent-h2",
        "\"127.0.0.0/8\"",
        "action = \"log\"\nmax_bans_per_minute = 3",
    ));
    for i in 20..25 {
        wait_holds(
            &fresh,
            &format!("198.51.100.{i}"),
            true,
            "snapshot past the guard",
        );
    }
    fresh.wait_metric("jailsink_fleet_errors_total{kind=\"malformed\"}", 1.0);
    assert!(
        !holds(&fresh, "198.51.100.30") && !holds(&fresh, "198.51.100.31"),
        "{:?}",
        banned(&fresh)
    );
    fresh.wait_metric("jailsink_fleet_bans_withheld_total{origin=\"rogue\"}", 2.0);
    let flood = (40..45)
        .filter(|i| holds(&fresh, &format!("198.51.100.{i}")))
        .count();
    assert_eq!(flood, 3, "{:?}", banned(&fresh));
}

/// Mixed fleets: an agent applies entries of both stream versions, whoever wrote them (a sink
/// writing the default packed version 2, a sink kept on `event_format = "fields"` for older
/// agents, and entries written by hand in each version, unbans included); an unknown version
/// is counted as malformed and skipped.
#[test]
fn fleet_agent_applies_old_and_new_format_entries() {
    let redis = Redis::start("", &[]);
    let agent = following_agent(&redis, "agent-v", "action = \"log\"");
    let packed_sink = Daemon::start(&sink_config(&redis.url(), "sink-p", "", &jails(2, 22)));
    let fields_sink = Daemon::start(&sink_config(
        &redis.url(),
        "sink-f",
        "event_format = \"fields\"",
        &jails(2, 22),
    ));
    fail(&[], &packed_sink, "sshd", "192.0.2.21", 2);
    wait_holds(&agent, "192.0.2.21", true, "a version 2 entry from a sink");
    fail(&[], &fields_sink, "sshd", "192.0.2.22", 2);
    wait_holds(&agent, "192.0.2.22", true, "a version 1 entry from a sink");
    assert_eq!(
        stream_entries(&redis),
        [
            (2, "ban".to_string(), "192.0.2.21/32".to_string()),
            (1, "ban".to_string(), "192.0.2.22/32".to_string()),
        ]
    );

    // By hand, as an older sink (version 1) and as the format's contract (version 2) say.
    xadd(&redis, &[("target", "198.51.100.61/32")]);
    wait_holds(&agent, "198.51.100.61", true, "a version 1 entry by hand");
    let now = unix_ms();
    let packed = format!(
        "ban sshd 198.51.100.62/32 {now} {} 1 5 22 tcp rogue web-1 ",
        now + 3_600_000
    );
    redis.cli(&["XADD", "t:events", "*", "v", "2", "e", &packed]);
    wait_holds(&agent, "198.51.100.62", true, "a version 2 entry by hand");
    let on_agent = banned(&agent);
    assert!(
        on_agent
            .iter()
            .any(|b| b.1 == "198.51.100.62" && b.2 == "rogue"),
        "{on_agent:?}"
    );

    // Unbans in each version lift the ban the other version applied.
    let unban = format!(
        "unban sshd 198.51.100.61/32 {}  1 5 22 tcp rogue  ",
        now + 1
    );
    redis.cli(&["XADD", "t:events", "*", "v", "2", "e", &unban]);
    wait_holds(&agent, "198.51.100.61", false, "a version 2 unban");
    xadd(
        &redis,
        &[
            ("op", "unban"),
            ("target", "198.51.100.62/32"),
            ("expires_at", ""),
        ],
    );
    wait_holds(&agent, "198.51.100.62", false, "a version 1 unban");

    // A version this agent does not know, and a packed entry cut short: counted, skipped.
    let future = format!(
        "ban sshd 198.51.100.63/32 {now} {} 1 5 22 tcp rogue  ",
        now + 3_600_000
    );
    redis.cli(&["XADD", "t:events", "*", "v", "3", "e", &future]);
    redis.cli(&[
        "XADD",
        "t:events",
        "*",
        "v",
        "2",
        "e",
        "ban sshd 198.51.100.64/32",
    ]);
    agent.wait_metric("jailsink_fleet_errors_total{kind=\"malformed\"}", 2.0);
    assert!(!holds(&agent, "198.51.100.63") && !holds(&agent, "198.51.100.64"));
    assert!(holds(&agent, "192.0.2.21") && holds(&agent, "192.0.2.22"));
}

/// A start with a wrong password is an error naming the problem, not a retry loop.
#[test]
fn fleet_wrong_password_is_a_clear_error_at_start() {
    let redis = Redis::start("", &[]);
    acl_users(&redis);
    let url = format!("redis://agent:wrong@127.0.0.1:{}/0", redis.port);
    let (code, stderr) = run_on(
        &agent_config(&url, "agent-p", "", "action = \"log\""),
        &["run"],
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("refused the connection") && stderr.contains("agent:***@"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password must not be shown: {stderr}"
    );

    // A sink user without a command one of its scripts calls: named at start.
    let sink_line = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/users.acl"),
    )
    .unwrap()
    .lines()
    .find(|l| l.starts_with("user sink "))
    .expect("the sink user")
    .replace("user sink ", "")
    .replace("~jailsink:", "~t:")
    .replace(">SINK-PASSWORD", ">weakpw");
    // Without INCR the shared-window script fails; without DECR (the settle script's clear,
    // which the probe runs with a count to take back), the settle script.
    for (without, script) in [
        (" +incr", "the shared-window script"),
        (" +decr", "the settle script"),
    ] {
        assert!(sink_line.contains(without), "{sink_line}");
        let mut args = vec!["ACL", "SETUSER", "weak", "reset"];
        let line = sink_line.replace(without, "");
        args.extend(line.split_whitespace());
        assert_eq!(redis.cli(&args).trim(), "OK");
        let url = format!("redis://weak:weakpw@127.0.0.1:{}/0", redis.port);
        let text = sink_config(&url, "sink-weak", "shared_windows = true", &jails(3, 22));
        let (code, stderr) = run_on(&text, &["run"]);
        assert_ne!(code, Some(0), "{stderr}");
        assert!(
            stderr.contains(&format!("denies the sink user a command of {script}")),
            "{stderr}"
        );
    }
}

/// The agent's snapshot of the active set reads every page (more bans than one page holds)
/// and takes each as it stands.
#[test]
fn fleet_agent_snapshot_reads_every_page() {
    let redis = Redis::start("", &[]);
    let now = unix_ms();
    let n = 1200;
    let mut zadd = vec!["ZADD".to_string(), "t:active".into()];
    let mut hset = vec!["HSET".to_string(), "t:bans".into()];
    for i in 0..n {
        let target = format!("10.{}.{}.1/32", i / 250, i % 250);
        // Decided 100 ms apart (600 a minute): the storm guard lets the whole snapshot in.
        let fields: serde_json::Map<String, serde_json::Value> = event_fields(&[
            ("target", &target),
            ("banned_at", &(now - i * 100).to_string()),
            ("expires_at", &(now + 3_600_000 + i).to_string()),
        ])
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
        let member = format!("sshd|{target}");
        zadd.extend([(now + 3_600_000 + i).to_string(), member.clone()]);
        hset.extend([member, serde_json::Value::Object(fields).to_string()]);
    }
    let zadd: Vec<&str> = zadd.iter().map(String::as_str).collect();
    let hset: Vec<&str> = hset.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&zadd).trim(), n.to_string());
    redis.cli(&hset);
    let agent = Daemon::start(&agent_config(
        &redis.url(),
        "agent-pages",
        "\"127.0.0.0/8\"",
        "action = \"log\"",
    ));
    let ok = wait_for(WAIT, || banned(&agent).len() == n as usize);
    assert!(ok, "held {} of {n}", banned(&agent).len());
    agent.assert_no_errors();
}

/// A ban the agent restored from its own store is lifted when its allowlist now covers it
/// (the allowlist grew while it was stopped), even with Redis away, and stays lifted when the
/// active set still lists it.
#[test]
fn fleet_agent_lifts_restored_bans_its_allowlist_covers() {
    let mut redis = Redis::start("", &[]);
    let url = redis.url();
    let text = |ignore: &str| agent_config(&url, "agent-allow", ignore, "action = \"log\"");
    let agent = Daemon::start(&text("\"127.0.0.0/8\""));
    agent.wait_metric("jailsink_fleet_connected{component=\"follower\"}", 1.0);
    activate(&redis, &[("target", "198.51.100.44/32")]);
    xadd(&redis, &[("target", "198.51.100.44/32")]);
    wait_holds(&agent, "198.51.100.44", true, "before the allowlist grows");
    let (_, dir) = agent.stop_keeping_dir();

    // The stream trimmed past the agent's last event: back, it reads the snapshot.
    redis.cli(&["XTRIM", "t:events", "MAXLEN", "0"]);
    redis.kill();
    let grown = text("\"127.0.0.0/8\", \"198.51.100.44\"");
    let agent = Daemon::start_in(dir, &grown, &[]);
    let refused = || agent.metric("jailsink_fleet_errors_total{kind=\"allowlisted\"}");
    agent.wait_metric("jailsink_fleet_errors_total{kind=\"allowlisted\"}", 1.0);
    assert!(!holds(&agent, "198.51.100.44"), "{:?}", banned(&agent));
    // Redis back, the ban still in its active set: refused again, never held.
    redis.restart();
    let ok = wait_for(WAIT, || refused() >= Some(2.0));
    assert!(ok, "the snapshot's ban was not refused: {:?}", refused());
    assert!(!holds(&agent, "198.51.100.44"), "{:?}", banned(&agent));
}

/// A reload that adds `[defaults] ignoreip` entries lifts the fleet bans an agent holds that
/// they cover (for jails not run on the agent), and later bans of them are refused.
#[test]
fn fleet_agent_reload_lifts_bans_its_new_allowlist_covers() {
    let redis = Redis::start("", &[]);
    let agent = following_agent(&redis, "agent-reload", "action = \"log\"");
    xadd(&redis, &[("target", "198.51.100.45/32")]);
    xadd(&redis, &[("target", "198.51.100.46/32")]);
    wait_holds(&agent, "198.51.100.45", true, "before the reload");
    wait_holds(&agent, "198.51.100.46", true, "before the reload");
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let grown = text.replace(
        "ignoreip = [\"127.0.0.0/8\"]",
        "ignoreip = [\"127.0.0.0/8\", \"198.51.100.45\"]",
    );
    assert_ne!(text, grown, "the config names the allowlist as expected");
    std::fs::write(&agent.config, grown).unwrap();
    agent.cli_ok(&["reload"]);
    wait_holds(&agent, "198.51.100.45", false, "after the reload");
    assert!(holds(&agent, "198.51.100.46"), "{:?}", banned(&agent));
    assert!(
        agent.logged("fleet: 198.51.100.45 is allowlisted here now; its fleet ban is lifted"),
        "no lift logged"
    );
    // The allowlist is the only change: no warning that [fleet] changed.
    assert!(!agent.logged("[fleet] changed: it takes effect at the next restart"));
    xadd(&redis, &[("target", "198.51.100.45/32")]);
    agent.wait_metric("jailsink_fleet_errors_total{kind=\"allowlisted\"}", 1.0);
    assert!(!holds(&agent, "198.51.100.45"), "{:?}", banned(&agent));
}

/// `agent` refuses the event of `listed` (in its allowlist file `allow`), holds the ban of
/// `added` until `added` joins the file, then lifts it; and logged no error.
fn follows_allowlist_file(redis: &Redis, agent: &Daemon, allow: &Path, listed: &str, added: &str) {
    xadd(redis, &[("target", &format!("{listed}/32"))]);
    agent.wait_metric("jailsink_fleet_errors_total{kind=\"allowlisted\"}", 1.0);
    assert!(!holds(agent, listed), "{:?}", banned(agent));
    xadd(redis, &[("target", &format!("{added}/32"))]);
    wait_holds(agent, added, true, "before the file grows");
    std::fs::write(allow, format!("{listed}\n{added}\n")).unwrap();
    wait_holds(agent, added, false, "after the file grew");
    agent.assert_no_errors();
}

/// An agent running the event's jail judges by that jail's whole allowlist: an address of its
/// `ignoreip_files` is never banned, and one added to the file later has its held ban lifted.
#[test]
fn fleet_agent_follows_its_local_jails_allowlist_files() {
    let redis = Redis::start("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow.txt");
    std::fs::write(&allow, "198.51.100.50\n").unwrap();
    let jail = format!(
        "\n[jails.sshd]\nprograms = [\"sshd\"]\nfilter = \"sshd\"\naction = \"log\"\nfilter_dirs = [\"{}\"]\nignoreip_files = [\"{}\"]\n",
        filter_dir().display(),
        allow.display()
    );
    let text = agent_config(
        &redis.url(),
        "agent-files",
        "\"127.0.0.0/8\"",
        "action = \"log\"",
    ) + &jail;
    let agent = Daemon::start_in(dir, &text, &[]);
    agent.wait_metric("jailsink_fleet_connected{component=\"follower\"}", 1.0);
    // Read once the jail's watcher has: an event of the file's address is refused.
    let ok = wait_for(WAIT, || agent.logged("[sshd] allowlist updated"));
    assert!(ok, "the jail's file was not read");
    follows_allowlist_file(&redis, &agent, &allow, "198.51.100.50", "198.51.100.51");
}

/// An agent without jails spares `[defaults] ignoreip_files` too: an address of the file is
/// never banned, and one added to it later has its held ban lifted.
#[test]
fn fleet_agent_follows_the_defaults_allowlist_files() {
    let redis = Redis::start("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow.txt");
    std::fs::write(&allow, "198.51.100.60\n").unwrap();
    let text = agent_config(
        &redis.url(),
        "agent-dfiles",
        "\"127.0.0.0/8\"",
        "action = \"log\"",
    )
    .replace(
        "ignoreself = true",
        &format!(
            "ignoreself = true\nignoreip_files = [\"{}\"]",
            allow.display()
        ),
    );
    let agent = Daemon::start_in(dir, &text, &[]);
    agent.wait_metric("jailsink_fleet_connected{component=\"follower\"}", 1.0);
    // Read once the watcher has: an event of the file's address is refused.
    let ok = wait_for(WAIT, || {
        agent.logged("fleet: the defaults' allowlist updated")
    });
    assert!(ok, "the defaults' file was not read");
    follows_allowlist_file(&redis, &agent, &allow, "198.51.100.60", "198.51.100.61");
    // Without a jail to report it, a missing defaults file is the agent's config error.
    let missing = text.replace(&*allow.display().to_string(), "@DIR@/missing.txt");
    let (code, stderr) = run_on(&missing, &["check"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("defaults.ignoreip_files[0]"), "{stderr}");
}

/// The GET /metrics text of a daemon running inside `ns`.
fn scrape_in(ns: &Netns, daemon: &Daemon) -> String {
    let addr = daemon.metrics;
    ns.within(move || {
        let mut stream = TcpStream::connect(addr).expect("connect to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
}

fn metric_in(ns: &Netns, daemon: &Daemon, series: &str) -> Option<f64> {
    scrape_in(ns, daemon).lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// True when a TCP connection from `source` (an address of `from`) to `to` succeeds within
/// 400 ms: a DROP in the target's kernel shows as the timeout.
fn reaches(from: &Netns, source: &str, to: SocketAddr) -> bool {
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    from.within(move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.bind(&source.into()).expect("bind source");
        socket
            .connect_timeout(&to.into(), Duration::from_millis(400))
            .is_ok()
    })
}

/// Waits (bounded) until `source` reaching `to` is `want`: a ban shows in `banned --json`
/// before the agent's action has run, and one probe may time out by chance, so every probe is
/// a wait for the expected outcome.
fn wait_reaches(from: &Netns, source: &str, to: SocketAddr, want: bool) -> bool {
    wait_for(WAIT, || reaches(from, source, to) == want)
}

/// Port of the service each agent guards (the sinks' jail port).
const SERVICE: u16 = 7022;

/// Two sinks with shared windows and three agents, each agent in its own network namespace
/// with nftables, Redis and the sinks in a hub namespace bridged to them: an attacker whose
/// failures are split between the sinks is banned exactly once at the shared maxretry and
/// dropped by every agent's kernel; an address on one agent's allowlist is banned on the
/// others but never on it; a manual unban, even on the sink that did not decide the ban,
/// reaches every agent.
#[test]
fn fleet_two_sinks_three_agents_ban_once_and_drop_everywhere() {
    crate::support::tool("nft", "nftables");
    let hub = Netns::new("fh");
    hub.run(&["ip", "link", "add", "br0", "type", "bridge"]);
    hub.run(&["ip", "link", "set", "br0", "up"]);
    for addr in [
        "198.51.100.1/24",
        "198.51.100.66/24",
        "198.51.100.67/24",
        "198.51.100.77/24",
    ] {
        hub.run(&["ip", "addr", "add", addr, "dev", "br0"]);
    }
    let agents_ns: Vec<Netns> = (1..=3)
        .map(|i| {
            let ns = Netns::new(&format!("fa{i}"));
            let (inside, outside) = (format!("a{i}"), format!("h{i}"));
            ns.run(&[
                "ip", "link", "add", &inside, "type", "veth", "peer", "name", &outside, "netns",
                &hub.name,
            ]);
            ns.run(&[
                "ip",
                "addr",
                "add",
                &format!("198.51.100.1{i}/24"),
                "dev",
                &inside,
            ]);
            ns.run(&["ip", "link", "set", &inside, "up"]);
            hub.run(&["ip", "link", "set", &outside, "master", "br0"]);
            hub.run(&["ip", "link", "set", &outside, "up"]);
            ns
        })
        .collect();
    // The service each agent guards, and a probe that it is reachable before any ban.
    let services: Vec<SocketAddr> = agents_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let listener = ns.within(|| TcpListener::bind(("0.0.0.0", SERVICE)).expect("service"));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    drop(conn);
                }
            });
            format!("198.51.100.1{}:{SERVICE}", i + 1).parse().unwrap()
        })
        .collect();
    for &service in &services {
        let ok = wait_reaches(&hub, "198.51.100.66", service, true);
        assert!(ok, "the lab network does not carry {service}");
    }

    let redis = Redis::start("198.51.100.1", &hub.prefix());
    // The least-privilege users of examples/fleet/users.acl, shared windows and all.
    acl_users(&redis);
    let port = redis.port;
    let sink_text = |node: &str| {
        sink_config(
            &format!("redis://sink:sinkpw@127.0.0.1:{port}/0"),
            node,
            "shared_windows = true",
            &jails(4, SERVICE),
        )
    };
    let sinks = [
        Daemon::start_with(&sink_text("sink-1"), &hub.prefix()),
        Daemon::start_with(&sink_text("sink-2"), &hub.prefix()),
    ];
    let agents: Vec<Daemon> = agents_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let ignore = if i == 2 {
                "\"127.0.0.0/8\", \"198.51.100.77\""
            } else {
                "\"127.0.0.0/8\""
            };
            let text = agent_config(
                &format!("redis://agent:agentpw@198.51.100.1:{port}/0"),
                &format!("agent-{}", i + 1),
                ignore,
                "action = \"nftables\"",
            );
            Daemon::start_with(&text, &ns.prefix())
        })
        .collect();
    for (ns, agent) in agents_ns.iter().zip(&agents) {
        let ok = wait_for(WAIT, || {
            metric_in(
                ns,
                agent,
                "jailsink_fleet_connected{component=\"follower\"}",
            ) == Some(1.0)
        });
        assert!(ok, "agent not connected: {:#?}", agent.errors());
    }

    // Four failures, two at each sink, interleaved: one ban at the shared maxretry.
    for round in 0..2 {
        for sink in &sinks {
            fail(&hub.prefix(), sink, "sshd", "198.51.100.66", 1);
            let _ = round;
        }
    }
    for agent in &agents {
        wait_holds(agent, "198.51.100.66", true, "split attacker");
    }
    // More failures after the ban change nothing.
    for sink in &sinks {
        fail(&hub.prefix(), sink, "sshd", "198.51.100.66", 2);
    }
    let failures = |sink: &Daemon| metric_in(&hub, sink, "jailsink_failures_total{jail=\"sshd\"}");
    let ok = wait_for(WAIT, || {
        failures(&sinks[0]) == Some(4.0) && failures(&sinks[1]) == Some(4.0)
    });
    assert!(ok, "failures not all counted");
    // Bans are counted once committed, which may trail the failure counts.
    let bans = || -> f64 {
        sinks
            .iter()
            .map(|s| metric_in(&hub, s, "jailsink_bans_total{jail=\"sshd\"}").unwrap_or(0.0))
            .sum()
    };
    assert!(wait_for(WAIT, || bans() >= 1.0), "no sink counted the ban");
    assert_eq!(bans(), 1.0, "banned exactly once across the sinks");
    let published: Vec<String> = stream_bans(&redis);
    assert_eq!(published, ["198.51.100.66/32"], "one ban event");

    // Every agent's kernel drops the attacker, and only the attacker.
    for (&service, agent) in services.iter().zip(&agents) {
        assert!(
            wait_reaches(&hub, "198.51.100.66", service, false),
            "{service} still reachable from the banned address: {:#?}",
            agent.errors()
        );
        assert!(
            wait_reaches(&hub, "198.51.100.67", service, true),
            "{service} closed to all"
        );
    }

    // An address on agent-3's allowlist: banned on agents 1 and 2, never on 3.
    fail(&hub.prefix(), &sinks[0], "sshd", "198.51.100.77", 4);
    wait_holds(&agents[0], "198.51.100.77", true, "allowlist elsewhere");
    wait_holds(&agents[1], "198.51.100.77", true, "allowlist elsewhere");
    let ok = wait_for(WAIT, || {
        metric_in(
            &agents_ns[2],
            &agents[2],
            "jailsink_fleet_errors_total{kind=\"allowlisted\"}",
        ) == Some(1.0)
    });
    assert!(ok, "agent-3 did not refuse the allowlisted ban");
    assert!(!holds(&agents[2], "198.51.100.77"));
    assert!(wait_reaches(&hub, "198.51.100.77", services[0], false));
    assert!(wait_reaches(&hub, "198.51.100.77", services[2], true));

    // A manual unban on the sink that decided the ban lifts it on every agent.
    let fleet = hub.run(&[
        crate::support::binary(),
        "-c",
        sinks[0].config.to_str().unwrap(),
        "banned",
        "--fleet",
        "--json",
    ]);
    let fleet: Vec<serde_json::Value> = serde_json::from_str(&fleet).unwrap();
    let origin = fleet
        .iter()
        .find(|b| b["ip"] == "198.51.100.66")
        .map(|b| b["origin"].as_str().unwrap().to_string())
        .expect("the ban in the fleet");
    // On the sink that did not decide it: the ban is lifted fleet-wide all the same.
    let (decider, other) = if origin == "sink-1" {
        (&sinks[0], &sinks[1])
    } else {
        (&sinks[1], &sinks[0])
    };
    // The deciding sink keeps the line that decided the shared count as the ban's evidence.
    let why: serde_json::Value =
        serde_json::from_str(&decider.cli_ok(&["why", "198.51.100.66", "--json"])).unwrap();
    let evidence = &why["jails"][0]["active"][0]["evidence"];
    assert_eq!(evidence.as_array().map(Vec::len), Some(1), "{why}");
    assert!(
        evidence[0]["message"]
            .as_str()
            .unwrap()
            .contains("198.51.100.66"),
        "{why}"
    );
    let said = other.cli_ok(&["unban", "sshd", "198.51.100.66"]);
    assert!(said.contains(&format!("decided by {origin}")), "{said}");
    for (&service, agent) in services.iter().zip(&agents) {
        wait_holds(agent, "198.51.100.66", false, "manual unban");
        let ok = wait_reaches(&hub, "198.51.100.66", service, true);
        assert!(ok, "{service} still drops the unbanned address");
    }
    for daemon in sinks.iter().chain(&agents) {
        daemon.assert_no_errors();
    }
}

/// The example sink and agent configs compile (an agent with no listener and no jail is
/// valid), and a bad `[fleet]` is an error naming file, key and reason.
#[test]
fn fleet_example_configs_compile_and_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // `check` reads the CA file whole: a real certificate, then one holding none.
    let ca = make_ca(dir.path(), "example", false);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet");
    for name in ["sink.toml", "agent.toml"] {
        let text = std::fs::read_to_string(examples.join(name))
            .unwrap()
            .replace("/etc/jailsink/redis-ca.pem", ca.to_str().unwrap())
            .replace(
                "filter = \"sshd\"",
                &format!("filter = \"{}/sshd.toml\"", filter_dir().display()),
            );
        let (code, stderr) = run_on(&text, &["check"]);
        assert_eq!(code, Some(0), "{name}: {stderr}");
    }
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let agent = std::fs::read_to_string(examples.join("agent.toml"))
        .unwrap()
        .replace("/etc/jailsink/redis-ca.pem", empty.to_str().unwrap());
    let (code, stderr) = run_on(&agent, &["check"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("CONFIG: fleet.tls_ca_file:")
            && stderr.contains("empty.pem: holds no PEM certificate"),
        "{stderr}"
    );
    let bad = "[server]\nudp = []\ntcp = []\n[fleet]\nrole = \"leader\"\nredis = \"http://x\"\n";
    let (code, stderr) = run_on(bad, &["check"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("CONFIG: fleet.role: `leader` is not a role")
            && stderr.contains("CONFIG: fleet.redis: `http://x`"),
        "{stderr}"
    );
}

/// The fleet alert rules pass their promtool unit tests, and every fleet series the dashboard
/// and the rules query is in a real scrape of a sink or an agent (exported from start).
#[test]
fn fleet_dashboard_and_alerts_use_series_a_fleet_exports() {
    let promtool = crate::support::tool("promtool", "prometheus");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus");
    let out = Command::new(&promtool)
        .current_dir(&dir)
        .args(["test", "rules", "jailsink-fleet-alerts_test.yml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
    let tests = std::fs::read_to_string(dir.join("jailsink-fleet-alerts_test.yml")).unwrap();
    for alert in [
        "JailsinkFleetDisconnected",
        "JailsinkFleetLagging",
        "JailsinkFleetOutboxGrowing",
    ] {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test expecting {alert} to fire"
        );
    }

    let redis = Redis::start("", &[]);
    let sink = Daemon::start(&sink_config(&redis.url(), "sink-m", "", &jails(3, 22)));
    let agent = Daemon::start(&agent_config(
        &redis.url(),
        "agent-m",
        "\"127.0.0.0/8\"",
        "action = \"log\"",
    ));
    // One ban through the fleet, so the labelled series (origin) and the histogram exist.
    fail(&[], &sink, "sshd", "192.0.2.50", 3);
    wait_holds(&agent, "192.0.2.50", true, "one fleet ban");
    let mut exported = crate::observe::exported_names(&sink.scrape());
    exported.extend(crate::observe::exported_names(&agent.scrape()));
    let mut exprs: Vec<String> = crate::observe::dashboard_exprs();
    exprs.extend(crate::grafana::grafana_rule_queries());
    exprs.extend(
        crate::grafana::prometheus_alerts()
            .into_iter()
            .map(|r| r.expr),
    );
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        for name in crate::observe::metric_names(expr) {
            if name.starts_with("jailsink_fleet_") {
                assert!(
                    exported.contains(&name),
                    "`{name}` (in `{expr}`) is not exported"
                );
                used.insert(name);
            }
        }
    }
    for wanted in [
        "jailsink_fleet_connected",
        "jailsink_fleet_outbox_events",
        "jailsink_fleet_events_published_total",
        "jailsink_fleet_events_applied_total",
        "jailsink_fleet_propagation_seconds_bucket",
        "jailsink_fleet_errors_total",
        "jailsink_fleet_bans_withheld_total",
    ] {
        assert!(
            used.contains(wanted),
            "no dashboard panel or alert uses {wanted}"
        );
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 signed by it, in `dir`; returns the CA
/// file. `tag` keeps two CAs apart.
fn make_ca(dir: &std::path::Path, tag: &str, server: bool) -> std::path::PathBuf {
    let run = |args: &[&str]| crate::support::openssl(dir, args);
    let (key, ca) = (format!("{tag}.key"), format!("{tag}.pem"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &ca,
        "-days",
        "1",
        "-subj",
        "/CN=jailsink test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&args);
    if server {
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&args);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca,
            "-CAkey",
            &key,
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ]);
    }
    dir.join(ca)
}

/// rediss:// with the CA file: the agent connects over TLS and applies a ban; with a CA that
/// did not sign the server's certificate, the start fails with a clear error.
#[test]
fn fleet_over_tls_with_a_ca_file_and_a_refused_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_ca(certs.path(), "ca", true);
    let other = make_ca(certs.path(), "other", false);
    let path = |f: &str| certs.path().join(f).display().to_string();
    let (server_pem, server_key, ca_text) = (
        path("server.pem"),
        path("server.key"),
        ca.display().to_string(),
    );
    let redis = Redis::start_with(
        "",
        &[],
        &[
            "--port",
            "0",
            "--tls-port",
            "@PORT@",
            "--tls-cert-file",
            &server_pem,
            "--tls-key-file",
            &server_key,
            "--tls-ca-cert-file",
            &ca_text,
            "--tls-auth-clients",
            "no",
        ],
        &["--tls", "--cacert", &ca_text],
    );
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let agent = Daemon::start(&agent_config(
        &url,
        "agent-tls",
        "\"127.0.0.0/8\"",
        &format!("action = \"log\"\ntls_ca_file = \"{ca_text}\""),
    ));
    agent.wait_metric("jailsink_fleet_connected{component=\"follower\"}", 1.0);
    xadd(
        &redis,
        &[("target", "203.0.113.5/32"), ("origin", "sink-tls")],
    );
    wait_holds(&agent, "203.0.113.5", true, "over TLS");

    let text = agent_config(
        &url,
        "agent-bad",
        "",
        &format!("action = \"log\"\ntls_ca_file = \"{}\"", other.display()),
    );
    let (code, stderr) = run_on(&text, &["run"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("refused the connection") && stderr.contains("certificate"),
        "{stderr}"
    );
}

/// The IPv4 addresses in a set of the agent's kernel (nftables table `inet jailsink`).
fn kernel_set(ns: &Netns, set: &str) -> Vec<String> {
    let (ok, out, _) = ns.try_run(&["nft", "list", "set", "inet", "jailsink", set]);
    if !ok {
        return Vec::new();
    }
    let elements = out.split_once("elements = {").map_or("", |(_, e)| e);
    let mut found: Vec<String> = elements
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| t.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
        .collect();
    found.sort();
    found
}

/// An agent that was stopped catches up from the last event it applied, persisted in its
/// state: restarted, it applies exactly the events it missed (bans and unbans, counted by
/// `jailsink_fleet_events_applied_total`), and its kernel (nftables in its own namespace)
/// matches. When the stream no longer holds that event (trimmed), it falls back to the
/// snapshot of the active set. Redis, sink and agent share one namespace (loopback).
#[test]
fn fleet_agent_catches_up_from_its_last_applied_event() {
    crate::support::tool("nft", "nftables");
    let ns = Netns::new("fc");
    let redis = Redis::start("", &ns.prefix());
    let sink = Daemon::start_with(
        &sink_config(&redis.url(), "sink-1", "", &jails(3, 22)),
        &ns.prefix(),
    );
    let agent_text = agent_config(
        &redis.url(),
        "agent-1",
        "\"127.0.0.0/8\"",
        "action = \"nftables\"",
    );
    let agent = Daemon::start_with(&agent_text, &ns.prefix());
    let applied = |agent: &Daemon, op: &str| {
        metric_in(
            &ns,
            agent,
            &format!("jailsink_fleet_events_applied_total{{op=\"{op}\",origin=\"sink-1\"}}"),
        )
        .unwrap_or(0.0)
    };
    let published = |op: &str| {
        metric_in(
            &ns,
            &sink,
            &format!("jailsink_fleet_events_published_total{{op=\"{op}\"}}"),
        )
    };
    // Waits (bounded) for the agent's kernel set to hold exactly `want`.
    let expect_kernel = |agent: &Daemon, want: &[&str]| {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let ok = wait_for(WAIT, || kernel_set(&ns, "f-sshd-v4") == want);
        assert!(
            ok,
            "kernel {:?}, want {want:?}: {:#?}",
            kernel_set(&ns, "f-sshd-v4"),
            agent.errors()
        );
    };

    for ip in ["192.0.2.20", "192.0.2.21"] {
        fail(&ns.prefix(), &sink, "sshd", ip, 3);
    }
    expect_kernel(&agent, &["192.0.2.20", "192.0.2.21"]);
    assert!(wait_for(WAIT, || applied(&agent, "ban") == 2.0));

    // Down while two bans and two unbans are decided (one of a ban it held, one of a ban it
    // never saw).
    let (_, dir) = agent.stop_keeping_dir();
    for ip in ["192.0.2.22", "192.0.2.23"] {
        fail(&ns.prefix(), &sink, "sshd", ip, 3);
    }
    assert!(wait_for(WAIT, || published("ban") == Some(4.0)));
    sink.cli_ok(&["unban", "sshd", "192.0.2.23"]);
    sink.cli_ok(&["unban", "sshd", "192.0.2.20"]);
    assert!(wait_for(WAIT, || published("unban") == Some(2.0)));

    // Restarted: exactly the four missed events, and the kernel holds .21 and .22 only.
    let agent = Daemon::start_in(dir, &agent_text, &ns.prefix());
    expect_kernel(&agent, &["192.0.2.21", "192.0.2.22"]);
    let ok = wait_for(WAIT, || {
        applied(&agent, "ban") == 2.0 && applied(&agent, "unban") == 2.0
    });
    assert!(
        ok,
        "applied: ban {} unban {}",
        applied(&agent, "ban"),
        applied(&agent, "unban")
    );
    assert!(agent.logged("fleet: resuming from the last applied event"));
    assert!(!agent.logged("fleet: reconciled with the active set"));
    // Its heartbeat shows it has read past every event: nothing more was applied after.
    let stream_len = redis.cli(&["XLEN", "t:events"]).trim().to_string();
    assert_eq!(stream_len, "6");
    wait_caught_up(&redis, "agent-1");
    assert_eq!(
        (applied(&agent, "ban"), applied(&agent, "unban")),
        (2.0, 2.0)
    );

    // Away while the stream is trimmed past its last event: the snapshot instead.
    let (_, dir) = agent.stop_keeping_dir();
    fail(&ns.prefix(), &sink, "sshd", "192.0.2.24", 3);
    sink.cli_ok(&["unban", "sshd", "192.0.2.21"]);
    assert!(wait_for(WAIT, || published("unban") == Some(3.0)));
    redis.cli(&["XTRIM", "t:events", "MAXLEN", "0"]);
    let agent = Daemon::start_in(dir, &agent_text, &ns.prefix());
    expect_kernel(&agent, &["192.0.2.22", "192.0.2.24"]);
    assert!(wait_for(WAIT, || agent
        .logged("fleet: reconciled with the active set")));
    assert!(!agent.logged("fleet: resuming from the last applied event"));
    for daemon in [&sink, &agent] {
        daemon.assert_no_errors();
    }
}

/// Waits (bounded) until `node`'s heartbeat shows it has read the stream's newest entry.
fn wait_caught_up(redis: &Redis, node: &str) {
    let ok = wait_for(WAIT, || {
        let beat = redis.cli(&["HGET", "t:nodes", node]);
        let newest = redis.cli(&["XREVRANGE", "t:events", "+", "-", "COUNT", "1"]);
        let newest = newest.lines().next().unwrap_or("").trim().to_string();
        !newest.is_empty() && beat.contains(&format!("\"last_id\":\"{newest}\""))
    });
    assert!(ok, "{node} did not read the whole stream");
}

/// role = "both": one process decides and publishes with its jails and applies the fleet's
/// bans with its follower, with the Redis user the README documents for it (the sink line
/// plus `+xread +xrange +zscan`). Its own bans reach an agent and are not applied twice by
/// its own follower; another sink's bans are applied by it; unbans travel both ways.
#[test]
fn fleet_both_role_decides_and_applies_in_one_process() {
    let redis = Redis::start("", &[]);
    acl_users(&redis);
    let acl = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/users.acl"),
    )
    .unwrap();
    let sink_line = acl.lines().find(|l| l.starts_with("user sink ")).unwrap();
    let both_line = sink_line
        .replace("user sink ", "user both ")
        .replace("~jailsink:", "~t:")
        .replace(">SINK-PASSWORD", ">bothpw")
        + " +xread +xrange +zscan";
    let mut args = vec!["ACL", "SETUSER"];
    args.extend(both_line.split_whitespace().skip(1));
    assert_eq!(redis.cli(&args).trim(), "OK", "{both_line}");
    let url = |user: &str, pw: &str| format!("redis://{user}:{pw}@127.0.0.1:{}/0", redis.port);

    let both = Daemon::start(
        &sink_config(
            &url("both", "bothpw"),
            "both-1",
            "action = \"log\"",
            &jails(3, 22),
        )
        .replace("role = \"sink\"", "role = \"both\""),
    );
    let sink = Daemon::start(&sink_config(
        &url("sink", "sinkpw"),
        "sink-2",
        "",
        &jails(3, 22),
    ));
    let agent = Daemon::start(&agent_config(
        &url("agent", "agentpw"),
        "agent-1",
        "\"127.0.0.0/8\"",
        "action = \"log\"",
    ));
    both.wait_metric("jailsink_fleet_connected{component=\"follower\"}", 1.0);
    both.wait_metric("jailsink_fleet_connected{component=\"publisher\"}", 1.0);

    // Its own ban: applied by its jail once (not again by its follower), published to the
    // agent with its name.
    fail(&[], &both, "sshd", "192.0.2.30", 3);
    wait_holds(&agent, "192.0.2.30", true, "a ban of the both node");
    // Another sink's ban: applied by its follower.
    fail(&[], &sink, "sshd", "192.0.2.31", 3);
    wait_holds(
        &both,
        "192.0.2.31",
        true,
        "another sink's ban on the both node",
    );
    wait_holds(&agent, "192.0.2.31", true, "another sink's ban");
    // Each once: its jail's own ban is not held again by its follower.
    let mut held: Vec<(String, String)> = banned(&both).into_iter().map(|b| (b.1, b.2)).collect();
    held.sort();
    assert_eq!(
        held,
        [
            ("192.0.2.30".to_string(), "both-1".to_string()),
            ("192.0.2.31".to_string(), "sink-2".to_string())
        ]
    );
    assert_eq!(
        banned(&agent)
            .iter()
            .find(|b| b.1 == "192.0.2.30")
            .map(|b| b.2.clone()),
        Some("both-1".to_string())
    );
    assert_eq!(
        both.metric("jailsink_fleet_events_applied_total{op=\"ban\",origin=\"sink-2\"}"),
        Some(1.0)
    );
    assert_eq!(
        both.metric("jailsink_fleet_events_applied_total{op=\"ban\",origin=\"both-1\"}"),
        None,
        "its own events are its jails' to apply"
    );

    // Unbans both ways: the both node's own reaches the agent; the other sink's reaches it.
    both.cli_ok(&["unban", "sshd", "192.0.2.30"]);
    wait_holds(&agent, "192.0.2.30", false, "unban by the both node");
    sink.cli_ok(&["unban", "sshd", "192.0.2.31"]);
    wait_holds(&both, "192.0.2.31", false, "unban reaching the both node");
    wait_holds(&agent, "192.0.2.31", false, "unban by the other sink");

    // One address banned by the other sink, then again, later, by the both node: the other
    // sink's unban names its own, older ban, so the agent and the active set keep the newer
    // one (and the both node lifts only the fleet ban it held).
    fail(&[], &sink, "sshd", "192.0.2.32", 3);
    wait_holds(&agent, "192.0.2.32", true, "the older ban");
    wait_holds(&both, "192.0.2.32", true, "the older ban on the both node");
    fail(&[], &both, "sshd", "192.0.2.32", 3);
    let origin_on_agent = || {
        banned(&agent)
            .into_iter()
            .find(|b| b.1 == "192.0.2.32")
            .map(|b| b.2)
    };
    assert!(wait_for(WAIT, || origin_on_agent().as_deref() == Some("both-1")));
    sink.cli_ok(&["unban", "sshd", "192.0.2.32"]);
    wait_caught_up(&redis, "agent-1");
    wait_caught_up(&redis, "both-1");
    assert_eq!(
        origin_on_agent().as_deref(),
        Some("both-1"),
        "the newer ban stays"
    );
    let on_both: Vec<String> = banned(&both)
        .into_iter()
        .filter(|b| b.1 == "192.0.2.32")
        .map(|b| b.2)
        .collect();
    assert_eq!(
        on_both,
        ["both-1"],
        "its own ban stays, the older fleet ban is lifted"
    );
    let fleet = sink.cli_ok(&["banned", "--fleet", "--json"]);
    let fleet: Vec<serde_json::Value> = serde_json::from_str(&fleet).unwrap();
    assert!(
        fleet
            .iter()
            .any(|b| b["ip"] == "192.0.2.32" && b["origin"] == "both-1"),
        "the active set keeps the newer ban: {fleet:?}"
    );

    // status --fleet lists it with its role.
    let ok = wait_for(WAIT, || {
        let out = agent.cli(&["status", "--fleet", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["node"] == "both-1" && n["role"] == "both")
        })
    });
    assert!(ok, "{}", agent.cli_ok(&["status", "--fleet", "--json"]));
    for daemon in [&both, &sink, &agent] {
        daemon.assert_no_errors();
    }
}

/// The publisher's lift script, run on a real redis-server: an unban lifts the active-set entry
/// of the ban it names, never another (a newer ban, another sink's, written at any moment
/// before the publisher's transaction: the check runs inside it; or an older one kept because
/// it ends later).
#[test]
fn fleet_unban_script_lifts_only_the_ban_it_names() {
    let redis = Redis::start("", &[]);
    // The unban of `member` naming the ban decided at `lifts` ("" for none), from `origin`.
    let unban = |member: &str, lifts: &str, origin: &str| -> String {
        let keys = ["t:active", "t:details", "t:decided", "t:hidden", "t:events"];
        eval(&redis, LIFT, &keys, &[member, lifts, origin, "1000"])
    };
    let eval = |member: &str, lifts: &str| unban(member, lifts, "sink-a");
    let hold = |member: &str, banned_at: u64| {
        redis.cli(&["ZADD", "t:active", "+inf", member]);
        redis.cli(&[
            "HSET",
            "t:details",
            member,
            &format!(r#"{{"op":"ban","jail":"sshd","banned_at":{banned_at}}}"#),
        ]);
    };
    let held = |member: &str| redis.cli(&["ZSCORE", "t:active", member]).trim() != "";

    // A newer ban (decided at 1,700,000,000,500 ms) survives an unban of the one at ...000.
    hold("sshd|192.0.2.1/32", 1_700_000_000_500);
    assert_eq!(eval("sshd|192.0.2.1/32", "1700000000000"), "0");
    assert!(held("sshd|192.0.2.1/32"), "the newer ban stays");
    // The ban the unban names is lifted with its shared-window decision.
    redis.cli(&["SET", "t:decided", "1"]);
    assert_eq!(eval("sshd|192.0.2.1/32", "1700000000500"), "1");
    assert!(!held("sshd|192.0.2.1/32"));
    assert_eq!(
        redis
            .cli(&["HEXISTS", "t:details", "sshd|192.0.2.1/32"])
            .trim(),
        "0"
    );
    assert_eq!(redis.cli(&["EXISTS", "t:decided"]).trim(), "0");
    // An older ban, kept because it ends later than the one the unban names, stays.
    hold("sshd|192.0.2.2/32", 1_700_000_000_000);
    assert_eq!(eval("sshd|192.0.2.2/32", "1700000000900"), "0");
    assert!(held("sshd|192.0.2.2/32"), "the longer, older ban stays");
    // An unban that names no ban lifts only a ban of its own origin (details without one are
    // lifted, as are details that are not JSON).
    redis.cli(&["ZADD", "t:active", "+inf", "sshd|192.0.2.5/32"]);
    redis.cli(&[
        "HSET",
        "t:details",
        "sshd|192.0.2.5/32",
        r#"{"op":"ban","jail":"sshd","banned_at":"1700000000000","origin":"sink-a"}"#,
    ]);
    assert_eq!(unban("sshd|192.0.2.5/32", "", "sink-b"), "0");
    assert!(held("sshd|192.0.2.5/32"), "another sink's ban stays");
    assert_eq!(unban("sshd|192.0.2.5/32", "", "sink-a"), "1");
    assert!(!held("sshd|192.0.2.5/32"));
    hold("sshd|192.0.2.3/32", 1_700_000_000_500);
    assert_eq!(eval("sshd|192.0.2.3/32", ""), "1");
    assert!(!held("sshd|192.0.2.3/32"));
    redis.cli(&["ZADD", "t:active", "+inf", "sshd|192.0.2.4/32"]);
    redis.cli(&["HSET", "t:details", "sshd|192.0.2.4/32", "not json"]);
    assert_eq!(eval("sshd|192.0.2.4/32", "1700000000000"), "1");
    assert!(!held("sshd|192.0.2.4/32"));
}

/// With shared windows, a decision's `decided` marker is settled once the sink's jail applied
/// it: held for the ban's own length (not `maxtime`), or deleted when the storm guard withheld
/// the ban, so the address is counted (and can be decided) again at once.
#[test]
fn fleet_shared_windows_settle_the_decided_marker_to_the_applied_ban() {
    let redis = Redis::start("", &[]);
    let jails = jails(3, 22).replacen(
        "port = 22",
        "port = 22\nmax_bans_per_minute = 1\nbantime_increment = { enabled = true, maxtime = \"1w\" }",
        1,
    );
    let sink = Daemon::start(&sink_config(
        &redis.url(),
        "sink-m",
        "shared_windows = true",
        &jails,
    ));
    let pttl = |ip: &str| int(&redis, &["PTTL", &format!("t:decided:sshd:{ip}/32")]);
    fail(&[], &sink, "sshd", "192.0.2.61", 3);
    wait_holds(&sink, "192.0.2.61", true, "the first ban");
    // Set for the first hold (5 minutes) by the script, then held for the ban's hour.
    let ok = wait_for(WAIT, || (300_001..=3_600_000).contains(&pttl("192.0.2.61")));
    assert!(ok, "marker PTTL {}", pttl("192.0.2.61"));
    // The storm guard withholds the second ban: its marker goes, and the window counts again.
    fail(&[], &sink, "sshd", "192.0.2.62", 3);
    sink.wait_metric("jailsink_bans_withheld_total{jail=\"sshd\"}", 1.0);
    wait_int(&redis, &["EXISTS", "t:decided:sshd:192.0.2.62/32"], 0);
    assert!(!holds(&sink, "192.0.2.62"), "{:?}", banned(&sink));
    // ... and the withheld decision is taken back from the fleet-wide ban count, so the next
    // ban of the address is not escalated for it; the applied ban's count stays.
    assert_eq!(int(&redis, &["GET", "t:count:sshd:192.0.2.62/32"]), 0);
    assert_eq!(int(&redis, &["GET", "t:count:sshd:192.0.2.61/32"]), 1);
    fail(&[], &sink, "sshd", "192.0.2.62", 1);
    wait_int(&redis, &["LLEN", "t:win:sshd:192.0.2.62/32"], 1);
}

/// A settle Redis refuses is tried again until it is done: with the sink's user briefly
/// without DECR, a withheld decision's marker cannot be settled (cleared, and the decision
/// taken back from the fleet-wide count); once DECR is back, it is, without another failure
/// of that address.
#[test]
fn fleet_shared_windows_settle_again_what_redis_refused() {
    let redis = Redis::start("", &[]);
    let sink = withheld_while_decr_is_refused(&redis, "sink-r", "192.0.2.63", "192.0.2.64");
    let refused = wait_for(WAIT, || {
        sink.logged("fleet: cannot settle decided markers now; tried again")
    });
    assert!(refused, "{:?}", sink.errors());
    assert_eq!(int(&redis, &["EXISTS", "t:decided:sshd:192.0.2.64/32"]), 1);
    assert_eq!(int(&redis, &["GET", "t:count:sshd:192.0.2.64/32"]), 1);
    assert_eq!(redis.cli(&["ACL", "SETUSER", "sink", "+decr"]).trim(), "OK");
    wait_int(&redis, &["EXISTS", "t:decided:sshd:192.0.2.64/32"], 0);
    assert_eq!(int(&redis, &["GET", "t:count:sshd:192.0.2.64/32"]), 0);
    assert!(holds(&sink, "192.0.2.63"), "{:?}", banned(&sink));
}

/// A shared-windows sink (storm guard at one ban a minute, its Redis user without DECR) that
/// banned `banned` and then withheld the ban of `withheld`, whose settle Redis refuses.
fn withheld_while_decr_is_refused(
    redis: &Redis,
    node: &str,
    banned: &str,
    withheld: &str,
) -> Daemon {
    acl_users(redis);
    let jails = jails(3, 22).replacen("port = 22", "port = 22\nmax_bans_per_minute = 1", 1);
    let url = format!("redis://sink:sinkpw@127.0.0.1:{}/0", redis.port);
    let sink = Daemon::start(&sink_config(&url, node, "shared_windows = true", &jails));
    fail(&[], &sink, "sshd", banned, 3);
    wait_holds(&sink, banned, true, "the first ban");
    assert_eq!(redis.cli(&["ACL", "SETUSER", "sink", "-decr"]).trim(), "OK");
    // The storm guard withholds the second ban; its settle is refused.
    fail(&[], &sink, "sshd", withheld, 3);
    sink.wait_metric("jailsink_bans_withheld_total{jail=\"sshd\"}", 1.0);
    sink
}

/// A sink stopped while Redis refuses a settle tries once more on its way out, so the marker
/// of a withheld decision does not keep its first hold for minutes after a stop. The stop comes
/// while the back-off between regular tries has grown to seconds: only the last try at
/// shutdown can settle it.
#[test]
fn fleet_a_stopping_sink_settles_what_redis_refused_before() {
    let redis = Redis::start("", &[]);
    let sink = withheld_while_decr_is_refused(&redis, "sink-s", "192.0.2.73", "192.0.2.74");
    // Tries at 0, 0.2, 0.6, 1.4 and 3 s: after the fifth the next waits 3.2 s.
    let refusals =
        || sink.count_messages(|m| m.starts_with("fleet: cannot settle decided markers"));
    let grown = wait_for(Duration::from_secs(30), || refusals() >= 5);
    assert!(grown, "{} refusals: {:?}", refusals(), sink.errors());
    assert_eq!(int(&redis, &["EXISTS", "t:decided:sshd:192.0.2.74/32"]), 1);
    assert_eq!(redis.cli(&["ACL", "SETUSER", "sink", "+decr"]).trim(), "OK");
    assert!(sink.stop().success());
    assert_eq!(int(&redis, &["EXISTS", "t:decided:sshd:192.0.2.74/32"]), 0);
    assert_eq!(int(&redis, &["GET", "t:count:sshd:192.0.2.74/32"]), 0);
}

/// The publisher's ban script, run on a real redis-server: of two bans of one target the one
/// that ends later stays in the active set (as agents keep it), whichever is written last.
#[test]
fn fleet_ban_script_keeps_the_ban_that_ends_later() {
    let redis = Redis::start("", &[]);
    let put = |score: &str, origin: &str| -> String {
        let details = format!(r#"{{"op":"ban","jail":"sshd","origin":"{origin}"}}"#);
        eval(
            &redis,
            PUT,
            &PUT_KEYS,
            &["sshd|192.0.2.9/32", score, &details],
        )
    };
    let kept = || {
        let details = redis.cli(&["HGET", "t:bans", "sshd|192.0.2.9/32"]);
        let score = redis.cli(&["ZSCORE", "t:active", "sshd|192.0.2.9/32"]);
        (details.trim().to_string(), score.trim().to_string())
    };
    assert_eq!(put("1700000600000", "a"), "1");
    // A later end replaces it; an earlier one does not.
    assert_eq!(put("1700003600000", "b"), "1");
    assert_eq!(put("1700000900000", "c"), "0");
    assert!(kept().0.contains(r#""origin":"b""#), "{:?}", kept());
    assert_eq!(kept().1, "1700003600000");
    // A permanent ban outlasts any other, and is replaced only by another permanent one.
    assert_eq!(put("+inf", "d"), "1");
    assert_eq!(put("1900000000000", "e"), "0");
    assert!(kept().0.contains(r#""origin":"d""#), "{:?}", kept());
    assert_eq!(kept().1, "inf");
    assert_eq!(put("+inf", "f"), "1");
    assert!(kept().0.contains(r#""origin":"f""#), "{:?}", kept());
    // A run of bans in one call, in order: a ten-minute ban, a longer one of the same member,
    // and a shorter one that the longer outlasts.
    let written = eval(
        &redis,
        PUT,
        &PUT_KEYS,
        &[
            "sshd|192.0.2.10/32",
            "1700000600000",
            r#"{"origin":"g"}"#,
            "sshd|192.0.2.10/32",
            "1700003600000",
            r#"{"origin":"h"}"#,
            "sshd|192.0.2.10/32",
            "1700000900000",
            r#"{"origin":"i"}"#,
        ],
    );
    assert_eq!(written, "2");
    let details = redis.cli(&["HGET", "t:bans", "sshd|192.0.2.10/32"]);
    assert!(details.contains(r#""origin":"h""#), "{details}");
}

/// The ban and lift scripts on a real redis-server: bans hidden behind a longer one of their
/// target (other sinks') are kept, and when the longer ban is lifted early the one that ends
/// last comes back (in the active set, in the stream marked `again`, its shared-window marker
/// held for its time), the others staying hidden behind it; not one that has ended, and not
/// one whose own unban came first. The same ban written twice hides nothing, and pruning the
/// member forgets what it hid.
#[test]
fn fleet_a_ban_hidden_behind_a_longer_one_comes_back_when_that_is_lifted() {
    let redis = Redis::start("", &[]);
    let now = jailsink::fleet::now_ms();
    let m = "sshd|192.0.2.9/32";
    let details = |origin: &str, banned_at: u64, end: Option<u64>| {
        let end = end.map_or(String::new(), |e| e.to_string());
        format!(
            r#"{{"op":"ban","jail":"sshd","target":"192.0.2.9/32","banned_at":"{banned_at}","expires_at":"{end}","origin":"{origin}"}}"#
        )
    };
    let put = |origin: &str, banned_at: u64, end: Option<u64>| {
        let score = end.map_or("+inf".to_string(), |e| e.to_string());
        let text = details(origin, banned_at, end);
        eval(&redis, PUT, &PUT_KEYS, &[m, &score, &text])
    };
    let lift = |banned_at: u64, origin: &str| {
        let at = banned_at.to_string();
        let keys = ["t:active", "t:bans", "t:decided", "t:hidden", "t:events"];
        eval(&redis, LIFT, &keys, &[m, &at, origin, "1000"])
    };
    let held_by = || {
        let text = redis.cli(&["HGET", "t:bans", m]);
        ["sink-a", "sink-b", "sink-c"]
            .into_iter()
            .find(|o| text.contains(&format!(r#""origin":"{o}""#)))
            .unwrap_or("none")
    };
    let hidden = || {
        let text = redis.cli(&["HGET", "t:hidden", m]);
        let mut found: Vec<&str> = ["sink-a", "sink-b", "sink-c"]
            .into_iter()
            .filter(|o| text.contains(&format!(r#"\"origin\":\"{o}\""#)))
            .collect();
        found.sort();
        found
    };
    let (hour, ten) = (Some(now + 3_600_000), Some(now + 600_000));
    // A permanent ban by sink-a; sink-b's ten minutes and sink-c's hour hide behind it.
    assert_eq!(put("sink-a", now - 3, None), "1");
    assert_eq!(put("sink-b", now - 2, ten), "0");
    assert_eq!(put("sink-c", now - 1, hour), "0");
    assert_eq!(put("sink-b", now - 2, ten), "0");
    assert_eq!(hidden(), ["sink-b", "sink-c"], "each once");
    // sink-a's ban lifted early: sink-c's hour is back (it ends last), in the set, in the
    // stream, and as the window's decision; sink-b's ten minutes stay hidden behind it.
    redis.cli(&["SET", "t:decided", "1"]);
    assert_eq!(lift(now - 3, "sink-a"), "sink-c");
    assert_eq!(held_by(), "sink-c");
    let score = redis.cli(&["ZSCORE", "t:active", m]);
    assert_eq!(score.trim(), hour.unwrap().to_string());
    assert_eq!(hidden(), ["sink-b"]);
    let stream = redis.cli(&["XRANGE", "t:events", "-", "+"]);
    for field in ["again", "sink-c", &(now - 1).to_string(), "192.0.2.9/32"] {
        assert!(stream.contains(field), "{field} missing: {stream}");
    }
    let pttl: i64 = redis.cli(&["PTTL", "t:decided"]).trim().parse().unwrap();
    assert!(
        (3_000_000..=3_600_000).contains(&pttl),
        "marker PTTL {pttl}"
    );
    // sink-c's lifted early too: sink-b's ten minutes are back.
    assert_eq!(lift(now - 1, "sink-c"), "sink-b");
    assert_eq!(held_by(), "sink-b");
    assert!(hidden().is_empty());
    // A longer ban written over a running one hides it in turn; the same ban again does not.
    assert_eq!(put("sink-a", now, None), "1");
    assert_eq!(put("sink-a", now, None), "1");
    assert_eq!(hidden(), ["sink-b"], "a ban written again hides nothing");
    // The hidden ban's own unban forgets it: lifting the longer one brings nothing back.
    assert_eq!(lift(now - 2, "sink-b"), "0");
    assert!(hidden().is_empty());
    assert_eq!(held_by(), "sink-a");
    assert_eq!(lift(now, "sink-a"), "1");
    assert_eq!(redis.cli(&["EXISTS", "t:active"]).trim(), "0");
    assert_eq!(redis.cli(&["EXISTS", "t:decided"]).trim(), "0");
    // A hidden ban that has ended stays gone.
    assert_eq!(put("sink-a", now + 1, None), "1");
    assert_eq!(put("sink-b", now - 600_000, Some(now - 1)), "0");
    assert_eq!(hidden(), ["sink-b"]);
    assert_eq!(lift(now + 1, "sink-a"), "1");
    assert_eq!(redis.cli(&["EXISTS", "t:active"]).trim(), "0");
    assert!(hidden().is_empty());
    // Pruning an expired member forgets the bans it hid.
    assert_eq!(put("sink-a", now - 5, Some(now - 1)), "1");
    assert_eq!(put("sink-b", now - 4, Some(now - 2)), "0");
    assert_eq!(hidden(), ["sink-b"]);
    let pruned = eval(&redis, PRUNE, &PUT_KEYS, &[&now.to_string()]);
    assert_eq!(pruned, "1");
    assert!(hidden().is_empty());
    // At most 16 are kept, those that end last.
    assert_eq!(put("sink-a", now + 2, None), "1");
    for i in 0..20u64 {
        let origin = format!("sink-{i}");
        let text = details(&origin, now + 10 + i, Some(now + 60_000 + i));
        let end = (now + 60_000 + i).to_string();
        assert_eq!(eval(&redis, PUT, &PUT_KEYS, &[m, &end, &text]), "0");
    }
    let kept = redis.cli(&["HGET", "t:hidden", m]);
    assert!(
        kept.contains("sink-19") && kept.contains("sink-4"),
        "{kept}"
    );
    assert!(
        !kept.contains(r#"sink-3\""#) && !kept.contains(r#"sink-0\""#),
        "{kept}"
    );
}

/// Two sinks ban one target, a permanent ban and a ten-minute one, in either order: the active
/// set keeps the permanent one, the ten-minute ban's unban leaves it, and an agent that starts
/// afterwards (reconciling from the active set) holds it.
#[test]
fn fleet_active_set_keeps_the_longer_of_two_sinks_bans() {
    let redis = Redis::start("", &[]);
    let text = |node: &str| sink_config(&redis.url(), node, "", &jails(3, 22));
    let (a, b) = (
        Daemon::start(&text("sink-a")),
        Daemon::start(&text("sink-b")),
    );
    let details = || redis.cli(&["HGET", "t:bans", "sshd|192.0.2.77/32"]);
    a.cli_ok(&["ban", "sshd", "192.0.2.77", "--bantime", "permanent"]);
    let ok = wait_for(WAIT, || details().contains("sink-a"));
    assert!(ok, "{}", details());
    b.cli_ok(&["ban", "sshd", "192.0.2.77", "--bantime", "10m"]);
    wait_int(&redis, &["XLEN", "t:events"], 2);
    assert!(details().contains("sink-a"), "{}", details());
    b.cli_ok(&["unban", "sshd", "192.0.2.77"]);
    wait_int(&redis, &["XLEN", "t:events"], 3);
    assert!(details().contains("sink-a"), "{}", details());
    let agent = following_agent(&redis, "agent-late", "action = \"log\"");
    wait_holds(&agent, "192.0.2.77", true, "reconciled from the active set");
    for d in [&a, &b, &agent] {
        d.assert_no_errors();
    }
}

/// Two sinks ban one target, a permanent ban and a ten-minute one. When a third sink lifts
/// the permanent ban early (`jailsink unban` of a ban it did not decide), it says the ten
/// minutes are back in force, and they are: on an agent that followed all along (from the
/// stream) and on one that starts afterwards (from the active set).
#[test]
fn fleet_a_ban_hidden_by_a_longer_one_is_back_when_that_is_lifted_early() {
    let redis = Redis::start("", &[]);
    let text = |node: &str| sink_config(&redis.url(), node, "", &jails(3, 22));
    let (a, b, c) = (
        Daemon::start(&text("sink-a")),
        Daemon::start(&text("sink-b")),
        Daemon::start(&text("sink-c")),
    );
    let agent = following_agent(&redis, "agent-live", "action = \"log\"");
    a.cli_ok(&["ban", "sshd", "192.0.2.78", "--bantime", "permanent"]);
    wait_holds(&agent, "192.0.2.78", true, "sink-a's permanent ban");
    b.cli_ok(&["ban", "sshd", "192.0.2.78", "--bantime", "10m"]);
    wait_int(&redis, &["HLEN", "t:hidden"], 1);
    let reply = c.cli_ok(&["unban", "sshd", "192.0.2.78"]);
    assert!(
        reply.contains("decided by sink-a") && reply.contains("by sink-b it hid is back"),
        "{reply}"
    );
    // The unban, then sink-b's ban written again by the lift.
    wait_int(&redis, &["XLEN", "t:events"], 4);
    let sink_b_holds = |d: &Daemon| {
        banned(d)
            .iter()
            .any(|(_, ip, origin, end)| ip == "192.0.2.78" && origin == "sink-b" && end.is_some())
    };
    let ok = wait_for(WAIT, || sink_b_holds(&agent));
    assert!(ok, "live agent: {:?}", banned(&agent));
    let late = following_agent(&redis, "agent-late", "action = \"log\"");
    let ok = wait_for(WAIT, || sink_b_holds(&late));
    assert!(ok, "late agent: {:?}", banned(&late));
    // Its own unban lifts it everywhere.
    b.cli_ok(&["unban", "sshd", "192.0.2.78"]);
    wait_holds(&agent, "192.0.2.78", false, "sink-b's unban");
    wait_holds(&late, "192.0.2.78", false, "sink-b's unban");
    for d in [&a, &b, &c, &agent, &late] {
        d.assert_no_errors();
    }
}

/// Each of `sinks` logged no error.
fn no_errors(sinks: &[Daemon]) {
    for sink in sinks {
        sink.assert_no_errors();
    }
}

/// A Redis, and two sinks on it with shared windows and an sshd jail banning at `maxretry`
/// that also counts spraying.
fn spray_fleet(maxretry: u32) -> (Redis, [Daemon; 2]) {
    let redis = Redis::start("", &[]);
    let jails = jails(maxretry, 22).replacen(
        "port = 22",
        "port = 22\nspray = { maxaddresses = 4, findtime = \"1h\" }",
        1,
    );
    let text = |node: &str| sink_config(&redis.url(), node, "shared_windows = true", &jails);
    // The shared windows connect with the first failure each sink counts.
    let sinks = [
        Daemon::start(&text("sink-s1")),
        Daemon::start(&text("sink-s2")),
    ];
    (redis, sinks)
}

/// The keys the ban and prune scripts get in these tests: active set, details, hidden bans.
const PUT_KEYS: [&str; 3] = ["t:active", "t:bans", "t:hidden"];

/// `script` run by redis-cli EVAL with `keys` and `args`; its answer, trimmed.
fn eval(redis: &Redis, script: &str, keys: &[&str], args: &[&str]) -> String {
    let count = keys.len().to_string();
    let mut all = vec!["EVAL", script, &count];
    all.extend(keys);
    all.extend(args);
    redis.cli(&all).trim().to_string()
}

/// An integer redis-cli answers.
fn int(redis: &Redis, args: &[&str]) -> i64 {
    redis.cli(args).trim().parse().unwrap_or(-1)
}

/// Waits until redis-cli `args` answers `want`.
fn wait_int(redis: &Redis, args: &[&str], want: i64) {
    let ok = wait_for(WAIT, || int(redis, args) == want);
    assert!(ok, "{args:?} is {} not {want}", int(redis, args));
}

/// Fails each of `ips` once as root, on `sinks` in turn, waiting after all but the last until
/// Redis counted it in root's spray set (which held `before` members), so the last one is the
/// failure that completes the spray.
fn spray(redis: &Redis, sinks: &[&Daemon], ips: &[&str], before: i64) {
    for (i, ip) in ips.iter().enumerate() {
        fail(&[], sinks[i % sinks.len()], "sshd", ip, 1);
        if i + 1 < ips.len() {
            wait_int(
                redis,
                &["ZCARD", "t:spray:sshd:root"],
                before + i as i64 + 1,
            );
        }
    }
}

/// With shared windows, one user failing from four addresses split between two sinks (two
/// each, none near maxretry) is a spray: counted in Redis, completed by whichever sink sees the
/// fourth, which bans all four, once.
#[test]
fn fleet_shared_windows_count_spraying_across_sinks() {
    let (redis, sinks) = spray_fleet(10);
    let sprayers = ["192.0.2.21", "192.0.2.22", "198.51.100.23", "203.0.113.24"];
    // Counted in Redis before the next one is sent, so the fourth completes it.
    spray(&redis, &[&sinks[0], &sinks[1]], &sprayers, 0);
    let all = || {
        let mut ips: Vec<String> = sinks
            .iter()
            .flat_map(|s| banned(s).into_iter().map(|b| b.1))
            .collect();
        ips.sort();
        ips
    };
    let ok = wait_for(WAIT, || all().len() == sprayers.len());
    assert!(ok, "banned: {:?}", all());
    assert_eq!(all(), sprayers, "each sprayer banned once, by one sink");
    let deciding: Vec<&Daemon> = sinks.iter().filter(|s| !banned(s).is_empty()).collect();
    assert_eq!(deciding.len(), 1, "one sink completed the spray");
    assert_eq!(int(&redis, &["EXISTS", "t:spray:sshd:root"]), 0);
    no_errors(&sinks);
}

/// With shared windows, a ban by maxretry and a ban by spray never both happen to one address,
/// whichever sink each is reached on: a spray completed on one sink skips the address the other
/// sink banned by maxretry, and an address a spray banned stays decided for the other sink's
/// maxretry.
#[test]
fn fleet_shared_windows_ban_each_address_once_between_spray_and_maxretry() {
    let (redis, sinks) = spray_fleet(3);
    let holders = |ip: &str| sinks.iter().filter(|s| holds(s, ip)).count();
    // Banned by maxretry on sink 0; it is also the first member of root's spray set.
    let first = "192.0.2.41";
    fail(&[], &sinks[0], "sshd", first, 3);
    wait_holds(&sinks[0], first, true, "maxretry on sink 0");
    wait_int(&redis, &["ZCARD", "t:spray:sshd:root"], 1);
    // Three more addresses as root on sink 1 complete the spray there.
    let sprayers = ["192.0.2.42", "198.51.100.43", "203.0.113.44"];
    spray(&redis, &[&sinks[1]], &sprayers, 1);
    for ip in sprayers {
        wait_holds(&sinks[1], ip, true, "the spray completed on sink 1");
    }
    // Sink 1 banned the spray in one step: had it taken the first address, it would hold it now.
    assert!(!holds(&sinks[1], first), "{:?}", banned(&sinks[1]));
    assert_eq!(holders(first), 1);
    // A sprayer reaching maxretry on sink 0 is decided already: no second ban. The failures
    // of a fresh address sent after them on the same connection prove they were counted.
    fail(&[], &sinks[0], "sshd", sprayers[0], 3);
    let fresh = "192.0.2.45";
    fail(&[], &sinks[0], "sshd", fresh, 3);
    wait_holds(
        &sinks[0],
        fresh,
        true,
        "the fresh address after the sprayer's failures",
    );
    assert!(!holds(&sinks[0], sprayers[0]), "{:?}", banned(&sinks[0]));
    for ip in sprayers {
        assert_eq!(holders(ip), 1, "{ip} held by one sink");
    }
    no_errors(&sinks);
}

/// A spray set an older sink filled holds bare addresses, not window targets: the script cannot
/// build their window keys, so the sink completing the spray gets them back undecided and bans
/// them itself (no `decided` marker, its own ban count), alongside the targets it marked. A
/// marked target's ban is counted fleet-wide, as a ban by maxretry is: one banned twice before
/// is banned a third time.
#[test]
fn fleet_shared_windows_ban_a_bare_spray_member_left_by_an_older_sink() {
    let (redis, sinks) = spray_fleet(10);
    let bare = "192.0.2.50";
    redis.cli(&["ZADD", "t:spray:sshd:root", &unix_ms().to_string(), bare]);
    let sprayers = ["192.0.2.51", "198.51.100.52", "203.0.113.53"];
    let twice_banned = format!("t:count:sshd:{}/32", sprayers[0]);
    redis.cli(&["SET", &twice_banned, "2"]);
    spray(&redis, &[&sinks[0]], &sprayers, 1);
    for ip in sprayers.iter().chain([&bare]) {
        wait_holds(&sinks[0], ip, true, "the spray completed on sink 0");
    }
    assert_eq!(int(&redis, &["EXISTS", "t:spray:sshd:root"]), 0);
    // Markers for the three targets only: none under the bare address, with or without a
    // prefix length.
    let mut markers: Vec<String> = redis
        .cli(&["KEYS", "t:decided:*"])
        .lines()
        .map(str::to_string)
        .collect();
    markers.sort();
    let mut want: Vec<String> = sprayers
        .iter()
        .map(|ip| format!("t:decided:sshd:{ip}/32"))
        .collect();
    want.sort();
    assert_eq!(markers, want);
    assert_eq!(int(&redis, &["GET", &twice_banned]), 3);
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&sinks[0].cli_ok(&["banned", "--json"])).unwrap();
    let count_of = |ip: &str| {
        list.iter()
            .find(|b| b["ip"] == ip)
            .map(|b| b["ban_count"].clone())
    };
    assert_eq!(count_of(sprayers[0]), Some(3.into()), "{list:?}");
    assert_eq!(count_of(sprayers[1]), Some(1.into()), "{list:?}");
    assert_eq!(count_of(bare), Some(1.into()), "{list:?}");
    assert!(banned(&sinks[1]).is_empty(), "{:?}", banned(&sinks[1]));
    no_errors(&sinks);
}

/// With shared windows, a success seen by one sink forgives the failures another sink counted:
/// the shared window starts over, so the failure that would have been the maxretry-th bans
/// nothing; a second success within findtime forgives nothing.
#[test]
fn fleet_shared_windows_forgive_a_success_on_any_sink() {
    let (redis, sinks) = spray_fleet(3);
    let ip = "192.0.2.31";
    let window = format!("t:win:sshd:{ip}/32");
    fail(&[], &sinks[0], "sshd", ip, 2);
    wait_int(&redis, &["LLEN", &window], 2);
    let accepted = format!("Accepted password for root from {ip} port 4242 ssh2");
    log_tcp(&[], &sinks[1], "sshd", &accepted, 1);
    wait_int(&redis, &["EXISTS", &window], 0);
    // Two more: without the success this would be the third and fourth failure.
    fail(&[], &sinks[0], "sshd", ip, 2);
    wait_int(&redis, &["LLEN", &window], 2);
    assert!(!holds(&sinks[0], ip), "{:?}", banned(&sinks[0]));
    assert_eq!(
        int(&redis, &["EXISTS", &format!("t:decided:sshd:{ip}/32")]),
        0
    );
    // A second login within findtime forgives nothing (a login anyone can get must not wipe
    // an attack's count again and again): sent with the next failure on one connection, in
    // that order, the failure is the third and bans. Had the login forgiven, it would be the
    // first.
    let mut stream = std::net::TcpStream::connect(sinks[0].tcp).expect("connect to the sink");
    let lines = format!(
        "<38>Dec  6 10:00:00 web1 sshd[77]: {accepted}\n<38>Dec  6 10:00:00 web1 sshd[78]: Failed password for root from {ip} port 4242 ssh2\n"
    );
    std::io::Write::write_all(&mut stream, lines.as_bytes()).expect("send");
    drop(stream);
    wait_holds(
        &sinks[0],
        ip,
        true,
        "the third failure, after a second login within findtime",
    );
}

/// A sink whose outbox cannot be read (its table dropped under it) still stops on SIGTERM: the
/// publisher runs on a thread of its own, which the runtime waits for, so its retry wait must
/// end on shutdown (it did not, and the process hung after the grace period).
#[test]
fn fleet_sink_stops_while_its_outbox_cannot_be_read() {
    let redis = Redis::start("", &[]);
    let sink = Daemon::start(&sink_config(&redis.url(), "sink-o1", "", &jails(3, 22)));
    sink.wait_metric("jailsink_fleet_connected{component=\"publisher\"}", 1.0);
    let db = sink.config.parent().unwrap().join("state.db");
    let errors = sink.metric("jailsink_state_errors_total").unwrap_or(0.0);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn.execute_batch("DROP TABLE fleet_outbox").unwrap();
    // The publisher reads the outbox at least once a second; each failed read is counted.
    let ok = wait_for(WAIT, || {
        sink.metric("jailsink_state_errors_total").unwrap_or(0.0) > errors
    });
    assert!(ok, "the outbox read never failed");
    // `stop` fails the test unless the daemon exits within its deadline after SIGTERM; the
    // publisher must stop within the fleet's grace, not be abandoned by the runtime after it.
    let logs = sink.logs.clone();
    let status = sink.stop();
    assert!(status.success(), "{status:?}");
    let said = |message: &str| logs.lock().unwrap().iter().any(|e| e["message"] == message);
    assert!(wait_for(WAIT, || said("stopped")), "no `stopped` line");
    assert!(
        !said("fleet tasks did not finish within the grace period"),
        "the publisher outlived the grace period"
    );
}
