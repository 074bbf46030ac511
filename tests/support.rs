//! A real jailsink daemon for tests: written config, port-0 listeners, JSON logs read back.
//! Also a private rsyslogd. benches/ reuse it (`#[path]`) for their daemons.

// Shared by the test binary and the benches; each uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The jailsink binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_jailsink")
}

/// The repository's shipped filters.
pub fn filter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d")
}

/// The captured syslog fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/syslog")
        .join(name)
}

/// An sshd jail on the shipped filter: 3 failures ban for an hour.
pub const SSHD: &str = r#"
[jails.sshd]
programs = ["sshd"]
filter = "sshd"
maxretry = 3
bantime = "1h"
"#;

/// `openssl req` arguments for a new P-256 EC key: the tests' and the TLS bench's certificates.
pub const OPENSSL_EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// An sshd failure from any user (`invalid user` or not, ` ssh2` or not), as a failregex.
pub const FAILED_ANY_USER: &str =
    r"^Failed password for (?:invalid user )?\S+ from <HOST> port \d+(?: ssh2)?$";

/// An sshd password failure from any user, ` ssh2` at the end, as a failregex.
pub const FAILED_PASSWORD: &str = r"^Failed password for \S+ from <HOST> port \d+ ssh2$";

/// An sshd password failure for root, as a failregex.
pub const FAILED_ROOT: &str = r"^Failed password for root from <HOST> port \d+ ssh2$";

/// A jail's TOML text: `[jails.NAME]` reading `program`'s lines with `failregex`, then
/// `settings` (TOML lines: maxretry, bantime, port, action, ...), where the tests' jails differ.
pub fn jail_toml(name: &str, program: &str, failregex: &str, settings: &str) -> String {
    format!(
        "\n[jails.{name}]\nprograms = [\"{program}\"]\nfailregex = ['{failregex}']\n{settings}\n"
    )
}

/// An sshd jail on the shipped filter banning for an hour after `maxretry` failures, with
/// `settings` (TOML lines: port, action, ...) after.
pub fn sshd_hour_jail(maxretry: u32, settings: &str) -> String {
    format!(
        "\n[jails.sshd]\nprograms = [\"sshd\"]\nfilter = \"sshd\"\nmaxretry = {maxretry}\nbantime = \"1h\"\n{settings}"
    )
}

/// The config sections every test daemon has, whatever it listens to and runs: metrics on a
/// port-0 loopback listener, the control socket and the state in `@DIR@`.
pub const DAEMON_SECTIONS: &str = r#"
[metrics]
listen = "127.0.0.1:0"

[control]
socket = "@DIR@/jailsink.sock"

[state]
path = "@DIR@/state.db"
"#;

/// A config with port-0 listeners, the shipped filters and the given jails (TOML text).
pub fn config(extra_server: &str, jails: &str) -> String {
    format!(
        r#"
[server]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
{extra_server}
{DAEMON_SECTIONS}
[defaults]
filter_dirs = ["{filters}"]
ignoreself = false
ignoreip = ["127.0.0.0/8"]
action = "log"

{jails}
"#,
        filters = filter_dir().display()
    )
}

/// Polls `check` every 20 ms until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    poll(timeout, Duration::from_millis(20), check)
}

/// Polls `check` every `every` until it is true or `timeout` passes (a benchmark timing the
/// moment something is done polls more often than a test).
pub fn poll(timeout: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Resident memory of a process now, KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A running daemon; killed on drop if the test did not stop it.
pub struct Daemon {
    child: Child,
    /// Every JSON log line, as parsed objects.
    pub logs: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Bound UDP syslog address.
    pub udp: SocketAddr,
    /// Bound TCP syslog address.
    pub tcp: SocketAddr,
    /// Bound TLS syslog address (0.0.0.0:0 when the config has none).
    pub tls: SocketAddr,
    /// Bound metrics address.
    pub metrics: SocketAddr,
    /// The config file.
    pub config: PathBuf,
    /// When `jailsink run` was spawned.
    pub spawned: Instant,
    /// From spawn to the `ready` log line (read as it arrived).
    pub ready_after: Duration,
    bans_logged: Arc<AtomicU64>,
    dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `jailsink run` on `config_text`, optionally wrapped (e.g. in `ip netns exec NS`).
    pub fn start_with(config_text: &str, wrapper: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Daemon::start_in(dir, config_text, wrapper)
    }

    /// Starts `jailsink run` in `dir` (kept: a restart test reuses its state and socket).
    /// `@DIR@` in the config text stands for the directory.
    pub fn start_in(dir: tempfile::TempDir, config_text: &str, wrapper: &[&str]) -> Daemon {
        Daemon::start_env(dir, config_text, wrapper, &[])
    }

    /// As [`Daemon::start_in`], with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_env(
        dir: tempfile::TempDir,
        config_text: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_bin(Path::new(binary()), dir, config_text, wrapper, env)
    }

    /// As [`Daemon::start_env`], running another jailsink binary (a benchmark's release build).
    pub fn start_bin(
        bin: &Path,
        dir: tempfile::TempDir,
        config_text: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let path = dir.path().join("jailsink.toml");
        let text = config_text.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&path, text).expect("write config");
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(bin.display().to_string());
        argv.extend(["--log-format", "json", "-c"].map(String::from));
        argv.push(path.display().to_string());
        argv.push("run".into());
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        let spawned = Instant::now();
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let ready_at = Arc::new(OnceLock::new());
        let bans_logged = Arc::new(AtomicU64::new(0));
        let (sink, ready_seen, bans) = (logs.clone(), ready_at.clone(), bans_logged.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                match value["message"].as_str() {
                    Some("ready") => {
                        let _ = ready_seen.set(Instant::now());
                    }
                    Some(m) if m.starts_with("would ban ") || m.contains("] Ban ") => {
                        bans.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                sink.lock().unwrap().push(value);
            }
        });
        let mut daemon = Daemon {
            child,
            logs,
            udp: "0.0.0.0:0".parse().unwrap(),
            tcp: "0.0.0.0:0".parse().unwrap(),
            tls: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            config: path,
            spawned,
            ready_after: Duration::ZERO,
            bans_logged,
            dir: Some(dir),
        };
        // Generous: a benchmark restoring a million persisted bans is ready after ~15 s.
        let ready = wait_for(Duration::from_secs(60), || {
            ready_at.get().is_some() || daemon.exited()
        });
        assert!(
            ready && !daemon.exited(),
            "daemon did not become ready: {:#?}",
            daemon.logs.lock().unwrap()
        );
        daemon.ready_after = ready_at.get().map_or(Duration::ZERO, |t| *t - spawned);
        for entry in daemon.logs.lock().unwrap().iter() {
            if entry["message"] == "listening" && entry["transport"] != "unix" {
                let addr: SocketAddr = entry["addr"].as_str().unwrap().parse().unwrap();
                match entry["transport"].as_str().unwrap() {
                    "udp" => daemon.udp = addr,
                    "tcp" => daemon.tcp = addr,
                    "tls" => daemon.tls = addr,
                    _ => daemon.metrics = addr,
                }
            }
        }
        daemon
    }

    /// Starts a daemon on this machine.
    pub fn start(config_text: &str) -> Daemon {
        Daemon::start_with(config_text, &[])
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// True once a log line with this message was written.
    pub fn logged(&self, message: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["message"] == message)
    }

    /// Every ERROR line logged so far.
    pub fn errors(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "ERROR")
            .cloned()
            .collect()
    }

    /// Fails the test with every ERROR line logged so far, if there is one.
    pub fn assert_no_errors(&self) {
        let errors = self.errors();
        assert!(errors.is_empty(), "{:#?}", errors);
    }

    /// How many bans were logged so far (`[jail] Ban ...`, or the log action's `would ban ...`),
    /// counted as the lines arrive: cheap to poll while a daemon logs 100,000 of them.
    pub fn bans_logged(&self) -> u64 {
        self.bans_logged.load(Ordering::Relaxed)
    }

    /// How many log lines so far have a message starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.count_messages(|m| m.starts_with(prefix))
    }

    /// How many log lines so far have a message for which `check` is true.
    pub fn count_messages(&self, check: impl Fn(&str) -> bool) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(&check))
            .count()
    }

    /// The /metrics text.
    pub fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics).expect("connect to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// The value of one series (exact `name{labels}` text), or None.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.scrape().lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    /// Waits until `series` reaches `want`; panics with the scrape otherwise.
    pub fn wait_metric(&self, series: &str, want: f64) {
        let ok = wait_for(Duration::from_secs(10), || {
            self.metric(series) == Some(want)
        });
        assert!(
            ok,
            "{series} never reached {want}; now {:?}\n{}",
            self.metric(series),
            self.scrape()
        );
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// Runs `jailsink -c CONFIG ARGS...` (a CLI command) and returns its output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run jailsink")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "jailsink {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The daemon's directory (config, state, socket): what `@DIR@` stood for in its config.
    pub fn dir(&self) -> PathBuf {
        self.config
            .parent()
            .expect("config directory")
            .to_path_buf()
    }

    /// Rewrites the config as `config("", jails)` and reloads it; returns the reload's answer.
    pub fn reload_jails(&self, jails: &str) -> String {
        let text = config("", jails).replace("@DIR@", &self.dir().display().to_string());
        std::fs::write(&self.config, text).expect("write config");
        self.cli_ok(&["reload"])
    }

    /// Waits (15 s at most) for the state database, which could not open at start, to open.
    #[track_caller]
    pub fn assert_state_opened_late(&self) {
        let opened = wait_for(Duration::from_secs(15), || {
            self.logged("state database opened at last: the bans since start are stored now")
        });
        assert!(opened, "the state database never opened");
    }

    /// SIGKILL: no shutdown at all. Returns the directory (config, state, socket) for a restart.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("directory")
    }

    /// SIGTERM; returns the exit status and the directory (config, state) for a restart.
    pub fn stop_keeping_dir(mut self) -> (ExitStatus, tempfile::TempDir) {
        let status = self.terminate();
        (status, self.dir.take().expect("directory"))
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `msg` tagged `tag`, `times` times, with util-linux `logger` over TCP to the daemon;
/// `wrapper` (`ip netns exec NS`) runs it where the daemon listens.
pub fn log_tcp(wrapper: &[&str], daemon: &Daemon, tag: &str, msg: &str, times: usize) {
    let port = daemon.tcp.port().to_string();
    for _ in 0..times {
        logger(
            wrapper,
            &["-n", "127.0.0.1", "-T", "-P", &port, "-t", tag, "-i", msg],
        );
    }
}

/// Runs util-linux `logger` with `args`, asserting it succeeded.
pub fn logger(wrapper: &[&str], args: &[&str]) {
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.push("logger");
    argv.extend_from_slice(args);
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .unwrap_or_else(|e| panic!("cannot run logger (apt-get install bsdutils): {e}"));
    assert!(status.success(), "{argv:?} failed");
}

/// A TCP port free on 127.0.0.1 right now (for configs that must name their port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The path of an external tool, or a failure naming the Debian package that provides it
/// (scripts/test installs it): a test that needs a tool never passes without it.
pub fn tool(name: &str, package: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        found.status.success() && !path.is_empty(),
        "`{name}` is missing: run scripts/test, or apt-get install {package}"
    );
    path
}

/// Runs `openssl` with `args` in `dir`, asserting it succeeded (its stderr in the failure).
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool("openssl", "openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private rsyslogd (`-n`, its own config, pid file and output), never the host's; killed
/// when dropped. `@DIR@` in the config text stands for its directory, which holds an empty
/// `work/` for `global(workDirectory=...)`; rsyslogd's own output goes to `rsyslogd.out` there.
pub struct Rsyslog {
    child: Child,
    dir: tempfile::TempDir,
}

impl Rsyslog {
    /// Starts `rsyslogd -n` (the binary at `rsyslogd`) on `config_text`.
    pub fn start(rsyslogd: &Path, config_text: &str) -> Rsyslog {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("work")).expect("work directory");
        let conf_path = dir.path().join("rsyslog.conf");
        let text = config_text.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&conf_path, text).expect("write rsyslog.conf");
        let log = std::fs::File::create(dir.path().join("rsyslogd.out")).expect("rsyslogd.out");
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("rsyslogd.out"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", rsyslogd.display()));
        Rsyslog { child, dir }
    }

    /// Its directory (`@DIR@`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// rsyslogd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once rsyslogd has exited (a config it refused, say).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// What rsyslogd printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.out")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
