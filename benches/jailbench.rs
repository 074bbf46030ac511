//! jailsink's benchmark tool: a deterministic corpus generator with its ground truth, load
//! generators for live TCP and UDP ingest, and the measurements of issue #7 (offline matching
//! side by side with fail2ban-regex, sshguard and fail2ban-rs; live TCP against a private
//! rsyslogd; UDP loss; many attackers; ban latency; restoring persisted bans).
//!
//! Run through the scripts in bench/ (each prints a table); by hand:
//! `cargo bench --bench jailbench -- SUBCOMMAND [--key value ...]`, subcommands below in
//! [`dispatch`]. Generated data goes to bench/out/ (git-ignored). tests/bench_smoke.rs runs every
//! subcommand with tiny sizes, so nothing here rots.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Err(error) = dispatch(&args) {
        eprintln!("jailbench: {error}");
        std::process::exit(1);
    }
}

/// Runs one subcommand; `args[0]` names it.
pub fn dispatch(args: &[String]) -> Result<(), String> {
    let opts = Opts::new(args.get(1..).unwrap_or_default());
    match args.first().map(String::as_str) {
        Some("corpus") => {
            let truth = write_corpus(
                &opts.path("out", "bench/out/corpus")?,
                opts.num("lines", 1_000_000),
                opts.num("pool", 2_000),
                opts.num("seed", 7) as u64,
            )?;
            println!("{}", truth.summary());
            Ok(())
        }
        Some("offline") => offline(&opts).map(|_| ()),
        Some("tcp") => {
            let sent = send_tcp(
                opts.addr("addr")?,
                &read_lines(&opts.path("file", "")?)?,
                opts.num("connections", 1),
                opts.flag("octet"),
                opts.num("rate", 0),
            )?;
            println!("sent={} seconds={:.3}", sent.messages, sent.seconds);
            Ok(())
        }
        Some("udp") => {
            let sent = send_udp(
                opts.addr("addr")?,
                &read_lines(&opts.path("file", "")?)?,
                opts.num("count", 0),
                opts.num("rate", 100_000),
            )?;
            println!("sent={} seconds={:.3}", sent.messages, sent.seconds);
            Ok(())
        }
        Some("live-tcp") => live_tcp(&opts).map(|_| ()),
        Some("live-udp") => live_udp(&opts).map(|_| ()),
        Some("attackers") => attackers(&opts).map(|_| ()),
        Some("latency") => latency(&opts).map(|_| ()),
        Some("restore") => restore(&opts).map(|_| ()),
        Some("idle") => idle(&opts).map(|_| ()),
        _ => Err(
            "subcommands: corpus, offline, tcp, udp, live-tcp, live-udp, attackers, latency, restore, idle"
                .into(),
        ),
    }
}

/// `--key value` options and `--flag`s.
pub struct Opts(BTreeMap<String, String>);

impl Opts {
    /// Reads `--key value` pairs; a key without a value is a flag.
    pub fn new(args: &[String]) -> Opts {
        let mut map = BTreeMap::new();
        let mut i = 0;
        while i < args.len() {
            if let Some(key) = args[i].strip_prefix("--") {
                match args.get(i + 1) {
                    Some(v) if !v.starts_with("--") => {
                        map.insert(key.to_string(), v.clone());
                        i += 2;
                        continue;
                    }
                    _ => {
                        map.insert(key.to_string(), String::new());
                    }
                }
            }
            i += 1;
        }
        Opts(map)
    }

    fn num(&self, key: &str, default: usize) -> usize {
        self.0
            .get(key)
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    }

    fn nums(&self, key: &str, default: &[usize]) -> Vec<usize> {
        match self.0.get(key) {
            Some(v) => v
                .split(',')
                .filter_map(|n| n.replace('_', "").parse().ok())
                .collect(),
            None => default.to_vec(),
        }
    }

    fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    fn path(&self, key: &str, default: &str) -> Result<PathBuf, String> {
        let v = self.str(key, default);
        if v.is_empty() {
            return Err(format!("--{key} PATH is required"));
        }
        Ok(PathBuf::from(v))
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, String> {
        self.str(key, "")
            .parse()
            .map_err(|_| format!("--{key} HOST:PORT is required"))
    }

    fn flag(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus

/// splitmix64: small, deterministic, good enough for synthetic logs.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Attacker address number `i`: documentation ranges only. The first 768 numbers are the
/// three IPv4 TEST-NETs, except every fifth, which (like every number past them) is IPv6
/// in 2001:db8::/32.
pub fn attacker(i: usize) -> String {
    if i % 5 != 4 && i < 960 {
        let n = i - i / 5;
        let net = ["192.0.2", "198.51.100", "203.0.113"][n / 256 % 3];
        format!("{net}.{}", n % 256)
    } else {
        format!(
            "2001:db8:{:x}:{:x}::{:x}",
            (i >> 16) & 0xffff,
            i & 0xffff,
            i % 251 + 1
        )
    }
}

/// A Zipf(1.1) sampler over `pool` ranks: a few attackers send most failures.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(pool: usize) -> Zipf {
        let mut cdf = Vec::with_capacity(pool);
        let mut sum = 0.0;
        for k in 1..=pool.max(1) {
            sum += 1.0 / (k as f64).powf(1.1);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf(cdf)
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// What the corpus holds, for checking every tool's count.
#[derive(Debug, Default, Clone)]
pub struct Truth {
    /// Lines written.
    pub lines: u64,
    /// sshd failure lines (each one failure, as fail2ban counts them).
    pub sshd_failures: u64,
    /// sendmail AUTH failure lines.
    pub sendmail_failures: u64,
    /// Failures per sshd attacker address.
    pub sshd_hosts: BTreeMap<String, u64>,
}

impl Truth {
    fn summary(&self) -> String {
        format!(
            "lines={} sshd_failures={} sendmail_failures={} sshd_addresses={}",
            self.lines,
            self.sshd_failures,
            self.sendmail_failures,
            self.sshd_hosts.len()
        )
    }

    /// Reads `truth.txt` back.
    pub fn read(path: &Path) -> Result<Truth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut t = Truth::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(k), Some(v)) = (parts.next(), parts.next()) else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "lines" => t.lines = v,
                "sshd_failures" => t.sshd_failures = v,
                "sendmail_failures" => t.sendmail_failures = v,
                "sshd_addresses" => {}
                ip => {
                    t.sshd_hosts.insert(ip.to_string(), v);
                }
            }
        }
        Ok(t)
    }
}

const USERS: &[&str] = &[
    "admin", "test", "oracle", "ubuntu", "git", "postgres", "user", "pi", "ftpuser", "guest",
    "support", "deploy1",
];
const HOSTS: &[&str] = &["web01", "web02", "db01", "mail1", "gw", "build-3"];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Writes `corpus.log` (on-disk syslog lines), `corpus.pri` (the same with a `<PRI>` prefix,
/// as a sender puts them on the wire) and `truth.txt` into `dir`.
pub fn write_corpus(dir: &Path, lines: usize, pool: usize, seed: u64) -> Result<Truth, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let create = |name: &str| {
        std::fs::File::create(dir.join(name))
            .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
            .map_err(|e| format!("{name}: {e}"))
    };
    let (mut log, mut pri) = (create("corpus.log")?, create("corpus.pri")?);
    let mut rng = Rng(seed);
    let zipf = Zipf::new(pool);
    let addrs: Vec<String> = (0..pool.max(1)).map(attacker).collect();
    let mut truth = Truth::default();
    // Nov 20 00:00:00, one second every 16 lines: a week of a busy central host fits in 10M.
    let mut line = String::with_capacity(256);
    for n in 0..lines {
        let t = n / 16;
        let (day, h, m, s) = (20 + t / 86_400, t / 3600 % 24, t / 60 % 60, t % 60);
        let host = HOSTS[rng.below(HOSTS.len())];
        let pid = 1000 + rng.below(60_000);
        let roll = rng.below(1000);
        let user = USERS[rng.below(USERS.len())];
        let port = 1024 + rng.below(64_000);
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(line, "{} {day:>2} {h:02}:{m:02}:{s:02} {host} ", MONTHS[10]);
        let prival = if roll < 200 {
            let ip = &addrs[zipf.sample(&mut rng)];
            *truth.sshd_hosts.entry(ip.clone()).or_default() += 1;
            truth.sshd_failures += 1;
            let _ = match roll % 20 {
                0..=7 => write!(line, "sshd[{pid}]: Failed password for invalid user {user} from {ip} port {port} ssh2"),
                8..=11 => write!(line, "sshd[{pid}]: Failed password for root from {ip} port {port} ssh2"),
                12..=16 => write!(line, "sshd[{pid}]: Invalid user {user} from {ip} port {port}"),
                17..=18 => write!(line, "sshd[{pid}]: error: maximum authentication attempts exceeded for root from {ip} port {port} ssh2 [preauth]"),
                _ => write!(line, "sshd[{pid}]: User {user} from {ip} not allowed because not listed in AllowUsers"),
            };
            38
        } else if roll < 250 {
            let ip = &addrs[zipf.sample(&mut rng)];
            truth.sendmail_failures += 1;
            let _ = write!(line, "sendmail[{pid}]: s07EriLI{:06}: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user={user}, relay=[{ip}]", rng.below(1_000_000));
            22
        } else if roll < 350 {
            let _ = match roll % 4 {
                0 => write!(line, "sshd[{pid}]: Accepted publickey for deploy from 198.51.100.{} port {port} ssh2: ED25519 SHA256:3fK9xYtq0aZ1vR8mN2bC7dE6fG5hJ4kL0pQ9rS8tU7w", 200 + rng.below(50)),
                1 => write!(line, "sshd[{pid}]: Received disconnect from 198.51.100.{} port {port}:11: disconnected by user", 200 + rng.below(50)),
                2 => write!(line, "sshd[{pid}]: pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"),
                _ => write!(line, "sshd[{pid}]: Disconnected from user deploy 198.51.100.{} port {port}", 200 + rng.below(50)),
            };
            38
        } else {
            match roll % 8 {
                0 => {
                    let _ = write!(line, "CRON[{pid}]: (root) CMD (   test -x /etc/cron.daily/popularity-contest && /etc/cron.daily/popularity-contest --crond)");
                    78
                }
                1 => {
                    let _ = write!(
                        line,
                        "systemd[1]: Started session-{}.scope - Session {} of User deploy.",
                        n % 9999,
                        n % 9999
                    );
                    30
                }
                2 => {
                    let _ = write!(line, "kernel: [{}.{:06}] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC=203.0.113.{} DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=0 DF PROTO=TCP SPT={port} DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0", n / 10, n % 1_000_000, rng.below(256));
                    4
                }
                3 => {
                    let _ = write!(
                        line,
                        "postfix/smtpd[{pid}]: connect from unknown[192.0.2.{}]",
                        rng.below(256)
                    );
                    22
                }
                4 => {
                    let _ = write!(line, "sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx");
                    85
                }
                5 => {
                    let _ = write!(line, "dovecot: imap-login: Login: user=<deploy>, method=PLAIN, rip=198.51.100.{}, lip=192.0.2.1, mpid={pid}, TLS", 200 + rng.below(50));
                    22
                }
                6 => {
                    let _ = write!(
                        line,
                        "systemd-logind[612]: New session {} of user deploy.",
                        n % 9999
                    );
                    30
                }
                _ => {
                    let _ = write!(line, "nginx[{pid}]: 198.51.100.{} - - [20/Nov/2026:10:00:00 +0000] \"GET /index.html HTTP/1.1\" 200 612 \"-\" \"curl/8.5.0\"", 200 + rng.below(50));
                    30
                }
            }
        };
        truth.lines += 1;
        let io = |e: std::io::Error| e.to_string();
        log.write_all(line.as_bytes()).map_err(io)?;
        log.write_all(b"\n").map_err(io)?;
        writeln!(pri, "<{prival}>{line}").map_err(io)?;
    }
    log.flush().map_err(|e| e.to_string())?;
    pri.flush().map_err(|e| e.to_string())?;
    let mut out = format!(
        "lines {}\nsshd_failures {}\nsendmail_failures {}\nsshd_addresses {}\n",
        truth.lines,
        truth.sshd_failures,
        truth.sendmail_failures,
        truth.sshd_hosts.len()
    );
    for (ip, n) in &truth.sshd_hosts {
        out.push_str(&format!("{ip} {n}\n"));
    }
    std::fs::write(dir.join("truth.txt"), out).map_err(|e| e.to_string())?;
    Ok(truth)
}

/// The lines of a file (without their LF).
pub fn read_lines(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Runs a command to its end with stdout to `out`; returns (wall seconds, max RSS in KiB).
fn timed(cmd: &mut Command, stdin: Option<&Path>, out: &Path) -> Result<(f64, u64, i32), String> {
    let file = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let input = match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).map_err(|e| e.to_string())?),
        None => Stdio::null(),
    };
    let start = Instant::now();
    let child = cmd
        .stdin(input)
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child by pid, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if r < 0 {
        return Err("wait4 failed".into());
    }
    Ok((secs, usage.ru_maxrss as u64, status))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A jailsink daemon started for a measurement; killed on drop.
pub struct Daemon {
    child: Child,
    /// Syslog TCP address.
    pub tcp: Option<SocketAddr>,
    /// Syslog UDP address.
    pub udp: Option<SocketAddr>,
    /// Metrics address.
    pub metrics: SocketAddr,
    /// Lines logged so far that contain "would ban" (log action) or "Ban ".
    pub bans_logged: Arc<AtomicU64>,
    /// When `run` was spawned and when it said ready.
    pub spawned: Instant,
    /// Seconds from spawn to ready.
    pub ready_after: f64,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `bin run` with `jails` (TOML) and port-0 listeners; waits until ready.
    pub fn start(
        bin: &Path,
        jails: &str,
        state: Option<&Path>,
        wrapper: &[&str],
    ) -> Result<Daemon, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let state = state
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("state.db"));
        let config = dir.path().join("jailsink.toml");
        let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[metrics]
listen = "127.0.0.1:0"
[control]
socket = "{d}/jailsink.sock"
[state]
path = "{s}"
[defaults]
filter_dirs = ["{f}"]
ignoreself = false
ignoreip = []
action = "log"
{jails}
"#,
                d = dir.path().display(),
                s = state.display(),
                f = filters.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(bin.display().to_string());
        argv.extend(["--log-format", "json", "-c"].map(String::from));
        argv.push(config.display().to_string());
        argv.push("run".into());
        let spawned = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("RUST_LOG", "warn,jailsink=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut lines = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
        let (mut tcp, mut udp, mut metrics) = (None, None, None);
        let bans_logged = Arc::new(AtomicU64::new(0));
        let is_ban = |line: &str| line.contains("would ban") || line.contains("] Ban ");
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if is_ban(&line) {
                bans_logged.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let fields = if v["fields"].is_object() {
                &v["fields"]
            } else {
                &v
            };
            if fields["message"] == "listening" {
                let addr: Option<SocketAddr> = fields["addr"].as_str().and_then(|a| a.parse().ok());
                match fields["transport"].as_str() {
                    Some("tcp") => tcp = addr,
                    Some("udp") => udp = addr,
                    _ => metrics = addr,
                }
            }
            if fields["message"] == "ready" {
                break;
            }
        }
        let ready_after = spawned.elapsed().as_secs_f64();
        let metrics = metrics.ok_or("the daemon never said ready (see its log)")?;
        let counter = bans_logged.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if is_ban(&line) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Daemon {
            child,
            tcp,
            udp,
            metrics,
            bans_logged,
            spawned,
            ready_after,
            _dir: dir,
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// The /metrics text.
    pub fn scrape(&self) -> String {
        let Ok(mut s) = TcpStream::connect(self.metrics) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    }

    /// Sum of every sample of `name` whose labels contain `label` (or all, if empty).
    pub fn metric(&self, name: &str, label: &str) -> f64 {
        metric_in(&self.scrape(), name, label)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric_in(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name && series.contains(label)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Quantile `q` of a Prometheus histogram, as the upper bound of the bucket holding it, and
/// linearly interpolated inside it (what histogram_quantile does).
fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&bucket))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_n) = (0.0, 0.0);
    for (le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n).max(1.0));
        }
        (prev_le, prev_n) = (le, n);
    }
    None
}

/// Waits until `check` is true or `timeout` passes; true if it became true.
fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    check()
}

// ---------------------------------------------------------------------------------------------
// Offline

/// One tool's offline result.
#[derive(Debug, Clone)]
pub struct OfflineRow {
    /// Tool name.
    pub tool: String,
    /// Lines per second over the whole run (process start to exit).
    pub rate: f64,
    /// Wall seconds.
    pub seconds: f64,
    /// Failures found.
    pub found: u64,
    /// Max RSS, KiB.
    pub rss_kib: u64,
}

/// `offline --corpus DIR --jailsink BIN [--fail2ban-rs BIN] [--skip fail2ban-regex,sshguard]`:
/// every tool on the same corpus.log, one after the other; prints a table.
pub fn offline(opts: &Opts) -> Result<Vec<OfflineRow>, String> {
    let dir = opts.path("corpus", "bench/out/corpus")?;
    let corpus = dir.join("corpus.log");
    let truth = Truth::read(&dir.join("truth.txt"))?;
    let jailsink = opts.path("jailsink", "target/release/jailsink")?;
    let skip = opts.str("skip", "");
    let out = |name: &str| dir.join(format!("{name}.out"));
    let sshd_toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d/sshd.toml");
    let mut rows = Vec::new();
    let mut run = |tool: &str,
                   cmd: &mut Command,
                   stdin: Option<&Path>,
                   count: &dyn Fn(&str) -> u64|
     -> Result<(), String> {
        if skip.split(',').any(|s| s == tool) {
            return Ok(());
        }
        let path = out(tool);
        let (seconds, rss_kib, _) = timed(cmd, stdin, &path)?;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        rows.push(OfflineRow {
            tool: tool.into(),
            rate: truth.lines as f64 / seconds,
            seconds,
            found: count(&text),
            rss_kib,
        });
        Ok(())
    };
    let lines_matched = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                let l = l.strip_prefix("Lines: ")?;
                l.split(", ")
                    .find_map(|p| p.strip_suffix(" matched")?.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    run(
        "jailsink",
        Command::new(&jailsink)
            .arg("regex")
            .arg(&corpus)
            .arg(&sshd_toml),
        None,
        &lines_matched,
    )?;
    if let Some(bin) = opts.0.get("fail2ban-rs").filter(|b| !b.is_empty()) {
        let conf = dir.join("fail2ban-rs.toml");
        std::fs::write(
            &conf,
            FAIL2BAN_RS_CONFIG.replace("@LOG@", &corpus.display().to_string()),
        )
        .map_err(|e| e.to_string())?;
        run(
            "fail2ban-rs",
            Command::new(bin)
                .args(FAIL2BAN_RS_ARGS)
                .arg(&conf)
                .arg(&corpus),
            None,
            &fail2ban_rs_count,
        )?;
    }
    run(
        "sshguard",
        &mut Command::new("/usr/libexec/sshguard/sshg-parser"),
        Some(&corpus),
        &|text: &str| text.lines().filter(|l| l.starts_with("100 ")).count() as u64,
    )?;
    run(
        "fail2ban-regex",
        Command::new("fail2ban-regex").arg(&corpus).arg("sshd"),
        None,
        &lines_matched,
    )?;
    let base = rows
        .iter()
        .find(|r| r.tool == "jailsink")
        .map_or(1.0, |r| r.rate);
    println!(
        "corpus: {} lines, {} sshd failures (ground truth), {} addresses",
        truth.lines,
        truth.sshd_failures,
        truth.sshd_hosts.len()
    );
    println!(
        "| tool | lines/s | seconds | sshd failures found | vs truth | max RSS | jailsink is |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {} | {:+.2}% | {:.1} MB | {:.1}x |",
            r.tool,
            r.rate,
            r.seconds,
            r.found,
            (r.found as f64 / truth.sshd_failures.max(1) as f64 - 1.0) * 100.0,
            r.rss_kib as f64 / 1024.0,
            base / r.rate
        );
    }
    Ok(rows)
}

/// fail2ban-rs jail covering the same sshd formats as the corpus (its dry-run reads @LOG@).
pub const FAIL2BAN_RS_CONFIG: &str = r#"
[global]
state_file = "/tmp/jailbench-fail2ban-rs/state.bin"
socket_path = "/tmp/jailbench-fail2ban-rs/fail2ban-rs.sock"

[jail.sshd]
enabled = true
log_path = "@LOG@"
date_format = "syslog"
filter = [
    'sshd\[\d+\]: Failed \S+ for (?:invalid user )?\S+ from <HOST> port \d+',
    'sshd\[\d+\]: Invalid user \S+ from <HOST>',
    'sshd\[\d+\]: error: maximum authentication attempts exceeded for \S+ from <HOST>',
    'sshd\[\d+\]: User \S+ from <HOST> not allowed because',
    'sshd\[\d+\]: Connection closed by (?:authenticating|invalid) user \S+ <HOST> port \d+',
    'sshd\[\d+\]: banner exchange: Connection from <HOST> port \d+: invalid format',
]
max_retry = 5
find_time = "10m"
ban_time = "1h"
ignoreself = false

[jail.sshd.backend.script]
ban_cmd = "true"
unban_cmd = "true"
"#;

/// How fail2ban-rs is asked for an offline run: `ARGS CONFIG LOG`.
pub const FAIL2BAN_RS_ARGS: &[&str] = &["dry-run", "--config"];

/// `  Matches:    N` in fail2ban-rs's dry-run report.
fn fail2ban_rs_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Matches:")?.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Load generators

/// What a load generator sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Seconds from the first byte to the last.
    pub seconds: f64,
}

/// Sends every line once, spread over `connections` TCP connections (octet-counted or LF
/// framed), at `rate` messages/s overall (0: as fast as possible).
pub fn send_tcp(
    addr: SocketAddr,
    lines: &[Vec<u8>],
    connections: usize,
    octet: bool,
    rate: usize,
) -> Result<Sent, String> {
    let connections = connections.max(1);
    let per = lines.len().div_ceil(connections);
    let payloads: Vec<(Vec<u8>, Vec<usize>)> = lines
        .chunks(per.max(1))
        .map(|chunk| {
            let mut buf = Vec::with_capacity(chunk.iter().map(|l| l.len() + 8).sum());
            let mut ends = Vec::with_capacity(chunk.len());
            for l in chunk {
                if octet {
                    buf.extend_from_slice(format!("{} ", l.len()).as_bytes());
                    buf.extend_from_slice(l);
                } else {
                    buf.extend_from_slice(l);
                    buf.push(b'\n');
                }
                ends.push(buf.len());
            }
            (buf, ends)
        })
        .collect();
    let streams: Vec<TcpStream> = payloads
        .iter()
        .map(|_| TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}")))
        .collect::<Result<_, _>>()?;
    let per_conn_rate = rate as f64 / payloads.len() as f64;
    let start = Instant::now();
    let threads: Vec<_> = payloads
        .into_iter()
        .zip(streams)
        .map(|((buf, ends), mut stream)| {
            std::thread::spawn(move || -> std::io::Result<(u64, u64)> {
                if per_conn_rate <= 0.0 {
                    stream.write_all(&buf)?;
                } else {
                    // Paced in slices of ~1 ms worth of messages.
                    let slice = ((per_conn_rate / 1000.0).ceil() as usize).max(1);
                    let begun = Instant::now();
                    let mut from = 0;
                    for (i, chunk) in ends.chunks(slice).enumerate() {
                        let to = *chunk.last().unwrap_or(&from);
                        stream.write_all(&buf[from..to])?;
                        from = to;
                        let due =
                            Duration::from_secs_f64((i + 1) as f64 * slice as f64 / per_conn_rate);
                        if let Some(wait) = due.checked_sub(begun.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                stream.flush()?;
                Ok((ends.len() as u64, buf.len() as u64))
            })
        })
        .collect();
    let (mut messages, mut bytes) = (0, 0);
    for t in threads {
        let (m, b) = t
            .join()
            .map_err(|_| "sender thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
        messages += m;
        bytes += b;
    }
    Ok(Sent {
        messages,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Sends `count` datagrams (cycling through `lines`) at `rate` per second, with sendmmsg in
/// batches so the generator is not the bottleneck.
pub fn send_udp(
    addr: SocketAddr,
    lines: &[Vec<u8>],
    count: usize,
    rate: usize,
) -> Result<Sent, String> {
    if lines.is_empty() {
        return Err("no lines to send".into());
    }
    let count = if count == 0 { lines.len() } else { count };
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    const BATCH: usize = 32;
    let start = Instant::now();
    let (mut sent, mut bytes) = (0usize, 0u64);
    let rate = rate.max(1) as f64;
    while sent < count {
        let n = BATCH.min(count - sent);
        let mut iovs: Vec<libc::iovec> = (0..n)
            .map(|i| {
                let l = &lines[(sent + i) % lines.len()];
                libc::iovec {
                    iov_base: l.as_ptr() as *mut libc::c_void,
                    iov_len: l.len(),
                }
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec that outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: fd is our connected socket; msgs holds n valid headers.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r <= 0 {
            // The local socket buffer is full: wait a little (this is the sender's own limit).
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        bytes += iovs[..r as usize]
            .iter()
            .map(|v| v.iov_len as u64)
            .sum::<u64>();
        sent += r as usize;
        let due = Duration::from_secs_f64(sent as f64 / rate);
        let elapsed = start.elapsed();
        if due > elapsed + Duration::from_micros(200) {
            std::thread::sleep(due - elapsed);
        }
    }
    Ok(Sent {
        messages: sent as u64,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------------
// Live ingest

const LIVE_JAILS: &str = r#"
[jails.sshd]
programs = ["sshd"]
maxretry = 5
bantime = "1d"
[jails.smtp-auth]
programs = ["sendmail"]
filter = "sendmail-auth"
maxretry = 3
bantime = "1d"
"#;

/// A private rsyslogd receiving on TCP into one file (raw messages, one a line).
struct Rsyslog {
    child: Child,
    out: PathBuf,
    dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start(rsyslogd: &Path, port: u16) -> Result<Rsyslog, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().display();
        std::fs::create_dir(dir.path().join("work")).map_err(|e| e.to_string())?;
        let out = dir.path().join("out.log");
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="64k")
module(load="imtcp" MaxSessions="64")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
main_queue(queue.size="1000000" queue.dequeueBatchSize="1024")
*.* action(type="omfile" file="{out}" template="raw" asyncWriting="on" ioBufferSize="4m" flushInterval="1")
"#,
            out = out.display()
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("rsyslogd.out")).map_err(|e| e.to_string())?;
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", rsyslogd.display()))?;
        let r = Rsyslog { child, out, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_for(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()) {
            return Err(format!(
                "rsyslogd did not listen: {}",
                std::fs::read_to_string(r.dir.path().join("rsyslogd.out")).unwrap_or_default()
            ));
        }
        Ok(r)
    }

    fn written(&self) -> u64 {
        std::fs::metadata(&self.out).map_or(0, |m| m.len())
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// One live TCP measurement.
#[derive(Debug, Clone)]
pub struct LiveRow {
    /// Receiver.
    pub receiver: String,
    /// Connections.
    pub connections: usize,
    /// Framing.
    pub framing: &'static str,
    /// Messages sent (and counted).
    pub messages: u64,
    /// Messages/s from the first byte until every message was counted.
    pub rate: f64,
    /// Peak RSS seen, KiB.
    pub rss_kib: u64,
}

/// `live-tcp --corpus DIR --jailsink BIN [--rsyslogd PATH] [--connections 1,4] [--repeat N]`.
pub fn live_tcp(opts: &Opts) -> Result<Vec<LiveRow>, String> {
    let dir = opts.path("corpus", "bench/out/corpus")?;
    let mut lines = read_lines(&dir.join("corpus.pri"))?;
    let repeat = opts.num("repeat", 1);
    if repeat > 1 {
        let one = lines.clone();
        for _ in 1..repeat {
            lines.extend(one.iter().cloned());
        }
    }
    let expected_bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let jailsink = opts.path("jailsink", "target/release/jailsink")?;
    let rsyslogd = opts.str("rsyslogd", "");
    let mut rows = Vec::new();
    let timeout = Duration::from_secs(opts.num("timeout", 300) as u64);
    for connections in opts.nums("connections", &[1, 4]) {
        for octet in [false, true] {
            let framing = if octet { "octet" } else { "lf" };
            // jailsink
            let daemon = Daemon::start(&jailsink, LIVE_JAILS, None, &[])?;
            let tcp = daemon.tcp.ok_or("no tcp listener")?;
            let start = Instant::now();
            let pid = daemon.pid();
            let peak = Arc::new(AtomicU64::new(0));
            let sent = send_tcp(tcp, &lines, connections, octet, 0)?;
            let counted = wait_for(timeout, || {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                daemon.metric("jailsink_messages_received_total", "tcp") >= sent.messages as f64
            });
            let secs = start.elapsed().as_secs_f64();
            if !counted {
                return Err(format!(
                    "jailsink counted {} of {}",
                    daemon.metric("jailsink_messages_received_total", "tcp"),
                    sent.messages
                ));
            }
            rows.push(LiveRow {
                receiver: "jailsink".into(),
                connections,
                framing,
                messages: sent.messages,
                rate: sent.messages as f64 / secs,
                rss_kib: peak.load(Ordering::Relaxed),
            });
            drop(daemon);
            if rsyslogd.is_empty() {
                continue;
            }
            let port = free_port()?;
            let r = Rsyslog::start(Path::new(&rsyslogd), port)?;
            let pid = r.child.id();
            let start = Instant::now();
            let sent = send_tcp(
                SocketAddr::from(([127, 0, 0, 1], port)),
                &lines,
                connections,
                octet,
                0,
            )?;
            let mut peak = 0;
            let done = wait_for(timeout, || {
                peak = peak.max(rss_kib(pid));
                r.written() >= expected_bytes
            });
            let secs = start.elapsed().as_secs_f64();
            if !done {
                return Err(format!(
                    "rsyslogd wrote {} of {expected_bytes} bytes",
                    r.written()
                ));
            }
            rows.push(LiveRow {
                receiver: "rsyslogd".into(),
                connections,
                framing,
                messages: sent.messages,
                rate: sent.messages as f64 / secs,
                rss_kib: peak,
            });
        }
    }
    println!("| receiver | connections | framing | messages | msg/s (all counted) | peak RSS |");
    println!("|---|---:|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} MB |",
            r.receiver,
            r.connections,
            r.framing,
            r.messages,
            r.rate,
            r.rss_kib as f64 / 1024.0
        );
    }
    Ok(rows)
}

/// One UDP rate step.
#[derive(Debug, Clone)]
pub struct UdpRow {
    /// Offered messages/s.
    pub offered: usize,
    /// Achieved send rate.
    pub sent_rate: f64,
    /// Sent.
    pub sent: u64,
    /// Counted by the daemon.
    pub received: u64,
}

/// `live-udp --corpus DIR --jailsink BIN [--rates 100000,200000,...] [--seconds 3]`.
pub fn live_udp(opts: &Opts) -> Result<Vec<UdpRow>, String> {
    let dir = opts.path("corpus", "bench/out/corpus")?;
    let lines = read_lines(&dir.join("corpus.pri"))?;
    let jailsink = opts.path("jailsink", "target/release/jailsink")?;
    let seconds = opts.num("seconds", 3);
    let mut rows = Vec::new();
    for rate in opts.nums("rates", &[100_000, 200_000, 300_000, 400_000, 500_000]) {
        let daemon = Daemon::start(&jailsink, LIVE_JAILS, None, &[])?;
        let udp = daemon.udp.ok_or("no udp listener")?;
        let sent = send_udp(udp, &lines, rate * seconds, rate)?;
        let mut last = -1.0;
        // Settle: wait until the count stops moving.
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = daemon.metric("jailsink_messages_received_total", "udp");
            if now == last || now >= sent.messages as f64 {
                last = now;
                break;
            }
            last = now;
        }
        rows.push(UdpRow {
            offered: rate,
            sent_rate: sent.messages as f64 / sent.seconds,
            sent: sent.messages,
            received: last as u64,
        });
    }
    println!("| offered msg/s | sent msg/s | sent | received | loss |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {} | {} | {:.3}% |",
            r.offered,
            r.sent_rate,
            r.sent,
            r.received,
            (1.0 - r.received as f64 / r.sent.max(1) as f64) * 100.0
        );
    }
    let best = rows
        .iter()
        .filter(|r| (r.received as f64) >= r.sent as f64 * 0.999)
        .map(|r| r.sent_rate)
        .fold(0.0, f64::max);
    println!("highest rate under 0.1% loss: {best:.0} msg/s");
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Many attackers

/// One attacker-count step.
#[derive(Debug, Clone)]
pub struct AttackRow {
    /// Distinct failing addresses.
    pub addresses: usize,
    /// Decisions per second (failures counted by the jail).
    pub decisions: f64,
    /// Resident memory added by the tracking state, bytes per address.
    pub bytes_per_address: f64,
    /// Process RSS with the state in place, KiB.
    pub rss_kib: u64,
}

/// `attackers [--counts 100,10000,100000,1000000] [--rounds 3]`: the jail's decision path
/// (ignoreip, window, ban check) in-process, fed round-robin failures from N addresses; maxretry
/// is above the number of rounds, so every address stays tracked and the state is all counted.
pub fn attackers(opts: &Opts) -> Result<Vec<AttackRow>, String> {
    use jailsink::jail::Jail;
    use jailsink::metrics::JailMetrics;
    let rounds = opts.num("rounds", 4).max(2);
    let mut rows = Vec::new();
    for n in opts.nums("counts", &[100, 10_000, 100_000, 1_000_000]) {
        let settings = attack_settings(n, rounds as u32 + 2);
        let addrs: Vec<std::net::IpAddr> = (0..n)
            .map(|i| attacker(i).parse().expect("an address"))
            .collect();
        let before = rss_kib(std::process::id());
        let mut jail = Jail::new("bench", settings, JailMetrics::new("bench"));
        let t0 = tokio::time::Instant::now();
        let mut decisions = 0u64;
        let mut timed = Duration::ZERO;
        for round in 0..rounds {
            let at = t0 + Duration::from_millis(round as u64);
            let start = Instant::now();
            for ip in &addrs {
                std::hint::black_box(jail.on_failure(*ip, 1, at));
            }
            // The first round inserts; later rounds are the steady state under attack.
            if round > 0 {
                timed += start.elapsed();
                decisions += n as u64;
            }
        }
        let rss = rss_kib(std::process::id());
        let tracked = jail.tracked();
        if tracked != n {
            return Err(format!("{tracked} of {n} addresses tracked"));
        }
        rows.push(AttackRow {
            addresses: n,
            decisions: decisions as f64 / timed.as_secs_f64(),
            bytes_per_address: (rss.saturating_sub(before) * 1024) as f64 / n as f64,
            rss_kib: rss,
        });
        drop(jail);
    }
    let base = rows.first().map_or(1.0, |r| r.decisions);
    println!("| distinct failing addresses | decisions/s | vs 100 | tracking bytes/address | process RSS |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0}% | {:.0} | {:.1} MB |",
            r.addresses,
            r.decisions,
            r.decisions / base * 100.0,
            r.bytes_per_address,
            r.rss_kib as f64 / 1024.0
        );
    }
    Ok(rows)
}

fn attack_settings(cap: usize, maxretry: u32) -> jailsink::config::JailSettings {
    jailsink::config::JailSettings {
        bantime: Some(Duration::from_secs(3600)),
        findtime: Duration::from_secs(600),
        maxretry,
        ignore: vec!["127.0.0.0/8".parse().expect("a network")],
        max_tracked: cap,
        ipv4_prefix: 32,
        ipv6_prefix: 128,
        max_bans_per_minute: None,
        increment: jailsink::config::compile::Increment {
            enabled: false,
            factor: 2.0,
            maxtime: Duration::from_secs(86_400),
            rndtime: Duration::ZERO,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Ban latency, restore, idle

/// `latency --jailsink BIN [--action log|iptables|nftables] [--bans 900] [--rate 1000]
/// [--background 100000]`: maxretry 1, one failure per distinct address over TCP at a steady
/// rate, while a second connection offers `background` ordinary messages a second; p50/p99 of
/// jailsink_ban_latency_seconds (receipt to action done). Firewall actions need root and should
/// run inside a network namespace (bench/latency.sh makes one).
pub fn latency(opts: &Opts) -> Result<(f64, f64, u64), String> {
    let jailsink = opts.path("jailsink", "target/release/jailsink")?;
    let action = opts.str("action", "log");
    let bans = opts.num("bans", 900);
    let jails = format!(
        "[jails.sshd]\nprograms = [\"sshd\"]\nmaxretry = 1\nbantime = \"1h\"\naction = \"{action}\"\n"
    );
    let daemon = Daemon::start(&jailsink, &jails, None, &[])?;
    let lines: Vec<Vec<u8>> = (0..bans)
        .map(|i| {
            format!(
                "<38>Nov 29 10:00:00 web01 sshd[{}]: Failed password for root from {} port 4242 ssh2",
                1000 + i,
                attacker(i + 960)
            )
            .into_bytes()
        })
        .collect();
    let tcp = daemon.tcp.ok_or("no tcp")?;
    let background = opts.num("background", 0);
    let rate = opts.num("rate", 1000).max(1);
    // Enough background to outlast the failures: their duration at `rate`, plus a second.
    let filler: Vec<Vec<u8>> = (0..background * (bans / rate + 1))
        .map(|i| {
            format!("<30>Nov 29 10:00:00 web01 systemd[1]: Started session {i} of user www-data.")
                .into_bytes()
        })
        .collect();
    let load = std::thread::spawn(move || send_tcp(tcp, &filler, 1, false, background.max(1)));
    send_tcp(tcp, &lines, 1, false, rate)?;
    let name = "jailsink_ban_latency_seconds";
    let done = wait_for(Duration::from_secs(120), || {
        metric_in(&daemon.scrape(), &format!("{name}_count"), "") >= bans as f64
    });
    let text = daemon.scrape();
    let count = metric_in(&text, &format!("{name}_count"), "") as u64;
    if !done {
        return Err(format!("only {count} of {bans} bans applied"));
    }
    let p50 = histogram_quantile(&text, name, 0.5).unwrap_or(f64::NAN);
    let p99 = histogram_quantile(&text, name, 0.99).unwrap_or(f64::NAN);
    let sent = load.join().map_err(|_| "background sender panicked")??;
    println!("| action | bans | background msg/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {action} | {count} | {background} ({} sent) | {:.3} ms | {:.3} ms |",
        sent.messages,
        p50 * 1e3,
        p99 * 1e3
    );
    Ok((p50, p99, count))
}

/// `restore --jailsink BIN [--bans 100000] [--action log|iptables]`: a state.db with N active
/// bans, written directly with SQLite; seconds from `jailsink run` to every ban applied.
pub fn restore(opts: &Opts) -> Result<f64, String> {
    let jailsink = opts.path("jailsink", "target/release/jailsink")?;
    let bans = opts.num("bans", 100_000);
    let action = opts.str("action", "log");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db_path = dir.path().join("state.db");
    prepare_state(&db_path, bans)?;
    let jails = format!(
        "[jails.sshd]\nprograms = [\"sshd\"]\nmaxretry = 5\nbantime = \"1d\"\naction = \"{action}\"\n"
    );
    let daemon = Daemon::start(&jailsink, &jails, Some(&db_path), &[])?;
    let ok = wait_for(Duration::from_secs(600), || {
        daemon.bans_logged.load(Ordering::Relaxed) >= bans as u64
    });
    let secs = daemon.spawned.elapsed().as_secs_f64();
    if !ok {
        return Err(format!(
            "{} of {bans} bans applied",
            daemon.bans_logged.load(Ordering::Relaxed)
        ));
    }
    println!("| persisted bans | ready after | all applied after | RSS after |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {bans} | {:.2} s | {secs:.2} s | {:.1} MB |",
        daemon.ready_after,
        daemon.rss_kib() as f64 / 1024.0
    );
    Ok(secs)
}

/// Writes `n` active sshd bans (distinct documentation addresses, expiring in a day).
pub fn prepare_state(path: &Path, n: usize) -> Result<(), String> {
    // The daemon creates the schema; open it once through jailsink's own code.
    drop(jailsink::state::State::open(path).map_err(|e| e.to_string())?);
    let mut db = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let tx = db.transaction().map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    {
        let mut stmt = tx
            .prepare("INSERT INTO bans (jail, target, banned_at, expires_at, failures, ban_count) VALUES ('sshd', ?1, ?2, ?3, 5, 1)")
            .map_err(|e| e.to_string())?;
        for i in 0..n {
            let ip = attacker(i + 960);
            stmt.execute(rusqlite::params![
                format!("{ip}/128"),
                now - 60,
                now + 86_400
            ])
            .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

/// `idle --jailsink BIN`: RSS of a daemon with the shipped jails, idle after start.
pub fn idle(opts: &Opts) -> Result<u64, String> {
    let jailsink = opts.path("jailsink", "target/release/jailsink")?;
    let daemon = Daemon::start(&jailsink, LIVE_JAILS, None, &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let rss = daemon.rss_kib();
    println!(
        "| idle RSS (sshd + smtp-auth jails) |\n|---:|\n| {:.1} MB |",
        rss as f64 / 1024.0
    );
    Ok(rss)
}
