//! Observing jailsink: a real scrape checked by promtool, alert rules unit-tested, dashboard
//! and alert queries checked against a real scrape, the shipped rsyslog snippets run in private
//! rsyslogd instances, the systemd unit verified and its notify protocol exercised, and the
//! ban/unban log lines in text and JSON.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{binary, config, free_port, tool, wait_for, Daemon, SSHD};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The text of a file under examples/.
pub(crate) fn example(path: &str) -> String {
    let file = examples().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

pub(crate) fn failed(ip: &str) -> String {
    format!("Failed password for invalid user admin from {ip} port 4242 ssh2")
}

/// Sends `times` sshd failures of `ip` as RFC 3164 datagrams.
fn fail_udp(d: &Daemon, ip: &str, times: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..times {
        let line = format!("<38>Nov 29 18:52:53 vm sshd[1]: {}", failed(ip));
        socket.send_to(line.as_bytes(), d.udp).unwrap();
    }
}

fn wait_logged(d: &Daemon, message: &str) {
    assert!(
        wait_for(Duration::from_secs(15), || d.logged(message)),
        "no `{message}` in the log: {:#?}",
        d.logs.lock().unwrap()
    );
}

/// The exposition body of a scrape (the HTTP head removed).
fn body(response: &str) -> String {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Runs a command; panics with its output unless it succeeds. Returns stdout and stderr.
fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A daemon that has banned once (so the histogram has samples), and its scrape body.
fn daemon_with_a_ban(metrics_extra: &str) -> (Daemon, String) {
    let text = config("", SSHD).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{metrics_extra}"),
    );
    let d = Daemon::start(&text);
    fail_udp(&d, "192.0.2.60", 3);
    d.wait_metric("jailsink_ban_latency_seconds_count{jail=\"sshd\"}", 1.0);
    let scrape = body(&d.scrape());
    (d, scrape)
}

#[test]
fn a_real_scrape_passes_promtool_check_metrics() {
    let promtool = tool("promtool", "prometheus");
    let (d, scrape) = daemon_with_a_ban("fail2ban_exporter_names = true");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\n{scrape}"
    );
    // Every SPEC metric, the process metrics and the fail2ban exporter names, with HELP and TYPE.
    for (name, kind) in [
        ("jailsink_messages_received_total", "counter"),
        ("jailsink_messages_dropped_total", "counter"),
        ("jailsink_failures_total", "counter"),
        ("jailsink_bans_total", "counter"),
        ("jailsink_unbans_total", "counter"),
        ("jailsink_banned", "gauge"),
        ("jailsink_tracked_addresses", "gauge"),
        ("jailsink_action_errors_total", "counter"),
        ("jailsink_tcp_connections", "gauge"),
        ("jailsink_udp_kernel_drops_total", "counter"),
        ("jailsink_ban_latency_seconds", "histogram"),
        ("jailsink_build_info", "gauge"),
        ("jailsink_state_errors_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("f2b_jail_banned_current", "gauge"),
        ("f2b_jail_banned_total", "counter"),
        ("f2b_jail_failed_current", "gauge"),
        ("f2b_jail_failed_total", "counter"),
        ("f2b_up", "gauge"),
    ] {
        assert!(
            scrape.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name}:\n{scrape}"
        );
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{scrape}"
        );
    }
    for series in [
        "f2b_jail_banned_total{jail=\"sshd\"} 1",
        "f2b_jail_banned_current{jail=\"sshd\"} 1",
        "f2b_jail_failed_total{jail=\"sshd\"} 3",
        "f2b_up 1",
        "jailsink_action_errors_total{jail=\"sshd\",action=\"log\"} 0",
    ] {
        assert!(scrape.contains(series), "missing `{series}` in\n{scrape}");
    }
    let rss = d.metric("process_resident_memory_bytes").unwrap();
    assert!(rss > 1_000_000.0, "resident memory {rss}");
    assert!(d.stop().success());
}

/// Identifiers of PromQL that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names an expression reads: identifiers that are not functions, keywords,
/// label matchers, grouping labels, durations or Grafana variables.
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    let grouping =
        regex::Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .unwrap();
    let noise = regex::Regex::new(r#"\{[^}]*\}|\[[^\]]*\]|"[^"]*"|\$\w+"#).unwrap();
    let expr = noise.replace_all(expr, " ");
    let expr = grouping.replace_all(&expr, " ");
    let ident = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?").unwrap();
    let mut names = BTreeSet::new();
    for m in ident.captures_iter(&expr) {
        let whole = m.get(0).unwrap();
        // A number like 1e9 or 0.5 is not a name.
        let before = expr[..whole.start()].chars().last();
        if m.get(1).is_some() || before.is_some_and(|c| c.is_ascii_digit() || c == '.') {
            continue;
        }
        let name = whole.as_str().trim();
        if !PROMQL_WORDS.contains(&name) {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every `expr` of the dashboard (panel targets, annotations and template queries).
pub(crate) fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&example("grafana/jailsink-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            exprs.push(expr.to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(METRIC, label): the metric is what must exist.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .unwrap_or(query);
            exprs.push(inner.to_string());
        }
    }
    exprs
}

/// The metric names a scrape exports (its sample lines' names).
pub(crate) fn exported_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

/// Every expression of the alert rules: Prometheus's, and the queries of Grafana's.
fn alert_exprs() -> Vec<String> {
    let prometheus = crate::grafana::prometheus_alerts()
        .into_iter()
        .map(|r| r.expr);
    prometheus
        .chain(crate::grafana::grafana_rule_queries())
        .collect()
}

#[test]
fn dashboard_and_alert_queries_use_metrics_a_real_scrape_has() {
    let promtool = tool("promtool", "prometheus");
    let (d, scrape) = daemon_with_a_ban("");
    assert!(
        !scrape.contains("f2b_"),
        "fail2ban names are off by default"
    );
    let exported = exported_names(&scrape);
    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(dashboard.len() >= 16 && alerts.len() >= 16);
    let mut used = BTreeSet::new();
    for expr in dashboard.iter().chain(&alerts) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric found in `{expr}`");
        for name in names {
            // `up` is made by Prometheus itself for every target, never exported.
            if name == "up" {
                continue;
            }
            // Fleet series exist only with [fleet]: fleet.rs checks them on a fleet's scrape.
            if name.starts_with("jailsink_fleet_") {
                continue;
            }
            assert!(
                exported.contains(&name),
                "`{name}` (in `{expr}`) is not in a real scrape:\n{scrape}"
            );
            used.insert(name);
        }
    }
    // What the issue asks the dashboard to show.
    for wanted in [
        "jailsink_messages_received_total",
        "jailsink_failures_total",
        "jailsink_bans_total",
        "jailsink_banned",
        "jailsink_ban_latency_seconds_bucket",
        "jailsink_messages_dropped_total",
        "jailsink_udp_kernel_drops_total",
        "jailsink_action_errors_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(wanted), "no query uses {wanted}");
    }
    // Every dashboard and alert query is valid PromQL: promtool parses them as recording rules.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard.iter().chain(&alerts).enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    run_ok(Command::new(&promtool).args(["check", "rules"]).arg(&file));
    assert!(d.stop().success());
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.9, sum by (le, jail) (rate(jailsink_ban_latency_seconds_bucket{instance=~"$instance"}[$__rate_interval]))) * 1e3 > bool on(instance) group_left(version) jailsink_build_info"#,
    );
    let want: BTreeSet<String> = ["jailsink_ban_latency_seconds_bucket", "jailsink_build_info"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let dir = examples().join("prometheus");
    run_ok(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "rules",
        "jailsink-alerts.yml",
    ]));
    let (out, _) = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "jailsink-alerts_test.yml",
    ]));
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert the issue asks for is defined and tested.
    let tests = example("prometheus/jailsink-alerts_test.yml");
    for alert in [
        "JailsinkBruteForce",
        "JailsinkBanStorm",
        "JailsinkDown",
        "JailsinkNotReceiving",
        "JailsinkActionErrors",
        "JailsinkMemoryHigh",
        "JailsinkStateErrors",
    ] {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test expecting {alert} to fire"
        );
    }
}

#[test]
fn alertmanager_example_passes_amtool() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    let (out, _) = run_ok(
        Command::new(amtool)
            .arg("check-config")
            .arg(examples().join("alertmanager/alertmanager.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze", "systemd");
    let unit = example("systemd/jailsink.service");
    for wanted in [
        "Type=notify",
        "ExecReload=/usr/local/bin/jailsink -c /etc/jailsink/jailsink.toml reload",
        "RestartPreventExitStatus=78",
        "RuntimeDirectoryMode=0755",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/jailsink /run/jailsink",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "RuntimeDirectory=jailsink",
        "StateDirectory=jailsink",
    ] {
        assert!(unit.contains(wanted), "unit lacks `{wanted}`");
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    assert!(unit.contains("ExecStart=/usr/local/bin/jailsink "));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jailsink.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/jailsink", binary())).unwrap();
    let (out, err) = run_ok(Command::new(analyze).arg("verify").arg(&path));
    // Unknown keys and sections are only warned about: any output is a defect.
    assert!(
        out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify: {out}{err}"
    );
}

/// One notification as received, and what was reachable at that moment.
struct Notice {
    state: String,
    metrics_answered: bool,
    syslog_tcp_accepted: bool,
}

#[test]
fn notify_socket_gets_ready_after_listeners_reloading_and_stopping() {
    let sockdir = tempfile::tempdir().unwrap();
    let sock_path = sockdir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (metrics_port, tcp_port) = (free_port(), free_port());
    let (tx, rx) = mpsc::channel::<Notice>();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            let state = String::from_utf8_lossy(&buf[..n]).into_owned();
            // Right now, before anything else: is everything bound already?
            let metrics_answered = TcpStream::connect(("127.0.0.1", metrics_port))
                .and_then(|mut s| {
                    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")?;
                    let mut r = String::new();
                    s.read_to_string(&mut r)?;
                    Ok(r.starts_with("HTTP/1.1 200") && r.contains("jailsink_build_info"))
                })
                .unwrap_or(false);
            let syslog_tcp_accepted = TcpStream::connect(("127.0.0.1", tcp_port)).is_ok();
            let stopping = state.contains("STOPPING=1");
            if tx
                .send(Notice {
                    state,
                    metrics_answered,
                    syslog_tcp_accepted,
                })
                .is_err()
                || stopping
            {
                return;
            }
        }
    });
    let text = config("", SSHD)
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{metrics_port}\""),
        )
        .replace(
            "tcp = [\"127.0.0.1:0\"]",
            &format!("tcp = [\"127.0.0.1:{tcp_port}\"]"),
        );
    let d = Daemon::start_env(
        tempfile::tempdir().unwrap(),
        &text,
        &[],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let next = || {
        rx.recv_timeout(Duration::from_secs(15))
            .expect("no notification within 15 s")
    };
    let ready = next();
    assert!(ready.state.contains("READY=1"), "{}", ready.state);
    assert!(
        ready.metrics_answered && ready.syslog_tcp_accepted,
        "READY=1 came before every listener was bound"
    );
    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 once the reload is done.
    run_ok(Command::new("kill").args(["-HUP", &d.pid().to_string()]));
    let reloading = next();
    let usec = regex::Regex::new(r"(?m)^MONOTONIC_USEC=\d+$").unwrap();
    assert!(
        reloading.state.contains("RELOADING=1") && usec.is_match(&reloading.state),
        "{}",
        reloading.state
    );
    let reloaded = next();
    assert!(reloaded.state.contains("READY=1"), "{}", reloaded.state);
    wait_logged(&d, "reloaded");
    assert!(d.stop().success());
    let stopping = next();
    assert!(stopping.state.contains("STOPPING=1"), "{}", stopping.state);
    listener.join().unwrap();
}

#[test]
fn text_log_lines_read_like_fail2ban() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_port();
    let text = config("", &SSHD.replace("bantime = \"1h\"", "bantime = \"1s\""))
        .replace(
            "udp = [\"127.0.0.1:0\"]",
            &format!("udp = [\"127.0.0.1:{udp}\"]"),
        )
        .replace("@DIR@", &dir.path().display().to_string());
    let path = dir.path().join("jailsink.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(binary())
        .args(["-c", path.to_str().unwrap(), "run"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let mut wait_line = |needle: &str, lines: &mut Vec<String>| -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                lines.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        let _ = child.kill();
        panic!("no line with `{needle}`: {lines:#?}");
    };
    wait_line(" ready ", &mut lines);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        let line = format!("<38>Nov 29 18:52:53 vm sshd[1]: {}", failed("192.0.2.70"));
        socket.send_to(line.as_bytes(), ("127.0.0.1", udp)).unwrap();
    }
    let ban = wait_line("Ban 192.0.2.70", &mut lines);
    let unban = wait_line("Unban 192.0.2.70", &mut lines);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // Timestamp, level, then fail2ban's message, then the fields: no colour codes in a pipe.
    let ban_re = regex::Regex::new(
        r"^\d{4}-\d\d-\d\dT\S+Z\s+INFO \[sshd\] Ban 192\.0\.2\.70 jail=sshd ip=192\.0\.2\.70 failures=3 bantime=1s ban_count=1$",
    )
    .unwrap();
    assert!(ban_re.is_match(&ban), "{ban:?}");
    let unban_re = regex::Regex::new(
        r"^\d{4}-\d\d-\d\dT\S+Z\s+INFO \[sshd\] Unban 192\.0\.2\.70 jail=sshd ip=192\.0\.2\.70 failures=3 banned_for=\d+s$",
    )
    .unwrap();
    assert!(unban_re.is_match(&unban), "{unban:?}");
    assert!(
        lines.iter().all(|l| !l.contains('\x1b')),
        "ANSI codes in piped logs: {lines:#?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_ban_fields() {
    let d = Daemon::start(&config(
        "",
        &SSHD.replace("bantime = \"1h\"", "bantime = \"1s\""),
    ));
    fail_udp(&d, "192.0.2.71", 3);
    wait_logged(&d, "[sshd] Ban 192.0.2.71");
    wait_logged(&d, "[sshd] Unban 192.0.2.71");
    let logs = d.logs.clone();
    assert!(d.stop().success());
    let logs = logs.lock().unwrap();
    for entry in logs.iter() {
        assert!(
            entry.is_object() && entry["timestamp"].is_string() && entry["level"].is_string(),
            "not a JSON log object: {entry}"
        );
    }
    let find = |message: &str| {
        logs.iter()
            .find(|e| e["message"] == message)
            .unwrap_or_else(|| panic!("no {message}"))
            .clone()
    };
    let ban = find("[sshd] Ban 192.0.2.71");
    assert_eq!(ban["level"], "INFO");
    assert_eq!(ban["jail"], "sshd");
    assert_eq!(ban["ip"], "192.0.2.71");
    assert_eq!(ban["failures"], 3);
    assert_eq!(ban["bantime"], "1s");
    let unban = find("[sshd] Unban 192.0.2.71");
    assert_eq!(unban["jail"], "sshd");
    assert_eq!(unban["ip"], "192.0.2.71");
    assert_eq!(unban["failures"], 3);
    assert!(unban["banned_for"].is_string(), "{unban}");
}

/// A private rsyslogd (support's) with an imuxsock socket of its own; never the host's /dev/log.
pub(crate) struct Rsyslog(crate::support::Rsyslog);

impl Rsyslog {
    /// Starts `rsyslogd -n` on a preamble (work directory, `extra_global`, and unless
    /// `socket` is false an imuxsock socket `log.sock`) followed by `snippet`.
    pub(crate) fn start(snippet: &str, extra_global: &str, socket: bool) -> Rsyslog {
        let mut conf = format!("global(workDirectory=\"@DIR@/work\" {extra_global})\n");
        if socket {
            conf.push_str(
                "module(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket=\"@DIR@/log.sock\")\n",
            );
        }
        conf.push_str(snippet);
        let mut r = Rsyslog(crate::support::Rsyslog::start(
            Path::new(&tool("rsyslogd", "rsyslog")),
            &conf,
        ));
        if socket {
            let sock = r.socket();
            let up = wait_for(Duration::from_secs(10), || sock.exists() || r.0.exited());
            assert!(
                up && !r.0.exited(),
                "rsyslogd did not start: {}",
                r.0.output()
            );
        }
        r
    }

    fn socket(&self) -> PathBuf {
        self.0.dir().join("log.sock")
    }

    pub(crate) fn output(&self) -> String {
        self.0.output()
    }

    /// Logs one message through this instance's socket, as a local program would.
    pub(crate) fn log(&self, tag: &str, message: &str) {
        crate::support::logger(
            &[],
            &[
                "-u",
                self.socket().to_str().unwrap(),
                "--socket-errors=on",
                "-S",
                "70000",
                "-t",
                tag,
                message,
            ],
        );
    }
}

/// A shipped snippet with only its ports replaced; the snippet must contain each `from`.
pub(crate) fn snippet(path: &str, replacements: &[(&str, String)]) -> String {
    let mut text = example(path);
    for (from, to) in replacements {
        assert!(text.contains(from), "{path} no longer contains `{from}`");
        text = text.replace(from, to);
    }
    text
}

const RSYSLOG_JAILS: &str = r#"
[jails.sshd]
programs = ["sshd"]
filter = "sshd"
maxretry = 3
bantime = "1h"

[jails.postfix]
programs = ["postfix/smtpd"]
filter = "postfix-sasl"
maxretry = 3
bantime = "1h"
"#;

fn ban_through(r: &Rsyslog, d: &Daemon, ip: &str) {
    for _ in 0..3 {
        r.log("sshd", &failed(ip));
    }
    let line = format!("[sshd] Ban {ip}");
    assert!(
        wait_for(Duration::from_secs(15), || d.logged(&line)),
        "no `{line}` from what rsyslogd forwarded; rsyslogd said: {}\njailsink: {:#?}",
        r.output(),
        d.logs.lock().unwrap()
    );
}

/// A daemon on RSYSLOG_JAILS, and a private rsyslogd on the shipped snippet `path` with its
/// `placeholder` replaced by what `target` makes of the daemon (its address).
fn rsyslog_to(
    path: &str,
    placeholder: &str,
    target: impl Fn(&Daemon) -> String,
) -> (Daemon, Rsyslog) {
    let d = Daemon::start(&config("", RSYSLOG_JAILS));
    let conf = snippet(path, &[(placeholder, target(&d))]);
    let r = Rsyslog::start(&conf, "", true);
    (d, r)
}

#[test]
fn rsyslog_plain_tcp_snippet_forwards_to_a_ban() {
    let (d, r) = rsyslog_to("rsyslog/50-jailsink-tcp.conf", "127.0.0.1:5514", |d| {
        format!("127.0.0.1:{}", d.tcp.port())
    });
    ban_through(&r, &d, "192.0.2.80");
    d.wait_metric("jailsink_messages_received_total{transport=\"tcp\"}", 3.0);
    drop(r);
    assert!(d.stop().success());
}

#[test]
fn rsyslog_udp_snippet_forwards_to_a_ban() {
    let (d, r) = rsyslog_to("rsyslog/50-jailsink-udp.conf", "127.0.0.1:5514", |d| {
        format!("127.0.0.1:{}", d.udp.port())
    });
    ban_through(&r, &d, "192.0.2.81");
    assert!(d.metric("jailsink_messages_received_total{transport=\"udp\"}") >= Some(3.0));
    drop(r);
    assert!(d.stop().success());
}

#[test]
fn rsyslog_rfc5424_snippet_keeps_slash_programs_and_long_messages() {
    let (d, r) = rsyslog_to("rsyslog/50-jailsink-rfc5424.conf", "port=\"5514\"", |d| {
        format!("port=\"{}\"", d.tcp.port())
    });
    ban_through(&r, &d, "192.0.2.82");
    // postfix/smtpd stays the program name, so the postfix jail sees it.
    for _ in 0..3 {
        r.log(
            "postfix/smtpd",
            "warning: unknown[192.0.2.83]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
        );
    }
    wait_logged(&d, "[postfix] Ban 192.0.2.83");
    // A 20 kB message (a long user name) arrives whole: rsyslog's 8096-byte default would cut
    // the address off the end.
    let long_user = "a".repeat(20_000);
    for _ in 0..3 {
        r.log(
            "sshd",
            &format!("Failed password for invalid user {long_user} from 192.0.2.84 port 4242 ssh2"),
        );
    }
    let line = "[sshd] Ban 192.0.2.84";
    assert!(
        wait_for(Duration::from_secs(15), || d.logged(line)),
        "20 kB messages were cut: {}\n{:#?}",
        r.output(),
        d.metric("jailsink_failures_total{jail=\"sshd\"}")
    );
    drop(r);
    assert!(d.stop().success());
}

#[test]
fn rsyslog_central_host_relays_other_hosts_to_jailsink() {
    let jails = r#"
[jails.web1-sshd]
programs = ["sshd"]
hosts = ["web1"]
filter = "sshd"
maxretry = 3
bantime = "1h"
"#;
    let d = Daemon::start(&config("", jails));
    let central_port = free_port();
    let central_conf = snippet(
        "rsyslog/central-relay.conf",
        &[
            ("port=\"5514\"", format!("port=\"{}\"", d.tcp.port())),
            ("port=\"514\"", format!("port=\"{central_port}\"")),
        ],
    );
    let central = Rsyslog::start(&central_conf, "", false);
    let listening = wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", central_port)).is_ok()
    });
    assert!(listening, "central rsyslogd: {}", central.output());
    let client_conf = snippet(
        "rsyslog/client-to-central.conf",
        &[
            ("central.example.org", "127.0.0.1".to_string()),
            ("port=\"514\"", format!("port=\"{central_port}\"")),
        ],
    );
    // The other host: its own name, so jailsink's `hosts` proves the origin survived the relay.
    let web1 = Rsyslog::start(&client_conf, "localHostname=\"web1\"", true);
    for _ in 0..3 {
        web1.log("sshd", &failed("192.0.2.85"));
    }
    let line = "[web1-sshd] Ban 192.0.2.85";
    assert!(
        wait_for(Duration::from_secs(15), || d.logged(line)),
        "no `{line}`; central said: {}\nweb1 said: {}\njailsink: {:#?}",
        central.output(),
        web1.output(),
        d.logs.lock().unwrap()
    );
    drop(web1);
    drop(central);
    assert!(d.stop().success());
}

#[test]
fn rsyslog_keeps_what_it_queued_while_jailsink_restarts() {
    // rsyslog names jailsink's port in its config, so jailsink must come back on the same one.
    let port = free_port();
    let text = config("", RSYSLOG_JAILS).replace(
        "tcp = [\"127.0.0.1:0\"]",
        &format!("tcp = [\"127.0.0.1:{port}\"]"),
    );
    let d = Daemon::start(&text);
    let conf = snippet(
        "rsyslog/50-jailsink-rfc5424.conf",
        &[("port=\"5514\"", format!("port=\"{port}\""))],
    );
    let r = Rsyslog::start(&conf, "", true);
    ban_through(&r, &d, "192.0.2.90");
    let (status, dir) = d.stop_keeping_dir();
    assert!(status.success());
    // 20 failures from 20 addresses (none reaches maxretry) while nobody listens.
    for n in 1..=20 {
        r.log("sshd", &failed(&format!("198.51.100.{n}")));
    }
    let d = Daemon::start_in(dir, &text, &[]);
    let all = wait_for(Duration::from_secs(30), || {
        d.metric("jailsink_failures_total{jail=\"sshd\"}") == Some(20.0)
    });
    assert!(
        all,
        "rsyslog delivered {:?} of the 20 messages it queued; rsyslogd said: {}",
        d.metric("jailsink_failures_total{jail=\"sshd\"}"),
        r.output()
    );
    drop(r);
    assert!(d.stop().success());
}
