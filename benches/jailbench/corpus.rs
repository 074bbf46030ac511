//! The corpus: deterministic RFC 3164 syslog of a busy central host (sshd and sendmail AUTH
//! failures from Zipf-distributed documentation addresses among ordinary traffic), written with
//! its ground truth so every tool's count can be checked.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `corpus [--out DIR] [--lines N] [--pool N] [--seed N]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory for corpus.log, corpus.pri and truth.txt.
    #[arg(long, default_value = "bench/out/corpus")]
    pub out: PathBuf,
    /// Lines to write.
    #[arg(long, default_value = "1000000", value_parser = super::count)]
    pub lines: usize,
    /// Distinct attacker addresses to draw from.
    #[arg(long, default_value = "2000", value_parser = super::count)]
    pub pool: usize,
    /// Random seed: the same seed writes the same corpus.
    #[arg(long, default_value = "7", value_parser = super::count)]
    pub seed: usize,
}

/// Writes the corpus and prints its truth.
pub fn run(args: &Args) -> Result<(), String> {
    let truth = write_corpus(&args.out, args.lines, args.pool, args.seed as u64)?;
    println!("{}", truth.summary());
    Ok(())
}

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
