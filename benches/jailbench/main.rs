//! jailsink's benchmark tool: a deterministic corpus generator with its ground truth, load
//! generators for live TCP and UDP ingest, and the measurements of issue #7 (offline matching
//! side by side with fail2ban-regex, sshguard and fail2ban-rs; live TCP against a private
//! rsyslogd; UDP loss; many attackers; ban latency; restoring persisted bans), and TLS ingest
//! next to plain TCP (issue #12).
//!
//! Run through the scripts in bench/ (each prints a table); by hand:
//! `cargo bench --bench jailbench -- SUBCOMMAND [--key value ...]` (`--help` lists them, and
//! `SUBCOMMAND --help` their options). Generated data goes to bench/out/ (git-ignored).
//! tests/bench_smoke.rs runs every subcommand with tiny sizes, so nothing here rots.
//!
//! One module a job; the daemons and rsyslogd come from tests/support.rs. Modules name each
//! other through `super::`, since tests/bench_smoke.rs includes this tree as a module.

pub mod attackers;
pub mod corpus;
pub mod feed;
pub mod filters;
pub mod latency;
pub mod live;
pub mod load;
pub mod offline;
pub mod restore;
pub mod tls;
pub mod udp;

// tests/bench_smoke.rs includes this tree in the test binary, which has its own `support`.
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

#[allow(dead_code)]
fn main() {
    // `cargo bench` appends `--bench` to a harness-less bench's arguments.
    let cli = Cli::parse_from(std::env::args().filter(|a| a != "--bench"));
    if let Err(error) = dispatch(cli.job) {
        eprintln!("jailbench: {error}");
        std::process::exit(1);
    }
}

/// The command line: one job a run.
#[derive(Debug, Parser)]
#[command(
    name = "jailbench",
    about = "jailsink's benchmarks: corpus, load generators and the measurements of BENCHMARKS.md"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub job: Job,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Job {
    /// Writes corpus.log, corpus.pri and truth.txt (deterministic syslog with its ground truth).
    Corpus(corpus::Args),
    /// Offline matching: jailsink, fail2ban-rs, sshguard's parser and fail2ban-regex on one corpus.
    Offline(offline::Args),
    /// Sends a file's lines over TCP (LF or octet-counted), optionally paced.
    Tcp(load::TcpArgs),
    /// Sends a file's lines as UDP datagrams at a rate.
    Udp(load::UdpArgs),
    /// Live TCP ingest: jailsink and a private rsyslogd, msg/s until every message is counted.
    LiveTcp(live::TcpArgs),
    /// Live UDP ingest: offered rates stepped up (two senders, optionally a botnet and a
    /// second binary), loss and kernel drops after the queue settles.
    LiveUdp(udp::Args),
    /// TLS ingest next to plain TCP (octet-counted, same run), and full handshakes a second.
    LiveTls(tls::Args),
    /// The jail's decision path with many distinct failing addresses, and their memory.
    Attackers(attackers::Args),
    /// Ban latency (receipt to action done) under background load.
    Latency(latency::Args),
    /// Start-up with persisted bans: seconds until every ban is applied.
    Restore(restore::RestoreArgs),
    /// Idle RSS of a daemon with the shipped jails.
    Idle(restore::IdleArgs),
    /// Every shipped filter next to sshd alone, offline and live, same run (cost per message).
    Filters(filters::Args),
    /// The ban feed (`GET /bans`) with many active bans, two binaries in turn.
    Feed(feed::Args),
}

/// Runs one job.
pub fn dispatch(job: Job) -> Result<(), String> {
    match job {
        Job::Corpus(args) => corpus::run(&args),
        Job::Offline(args) => offline::offline(&args).map(|_| ()),
        Job::Tcp(args) => load::tcp(&args),
        Job::Udp(args) => load::udp(&args),
        Job::LiveTcp(args) => live::live_tcp(&args).map(|_| ()),
        Job::LiveUdp(args) => udp::live_udp(&args).map(|_| ()),
        Job::LiveTls(args) => tls::live_tls(&args).map(|_| ()),
        Job::Attackers(args) => attackers::attackers(&args).map(|_| ()),
        Job::Latency(args) => latency::latency(&args).map(|_| ()),
        Job::Restore(args) => restore::restore(&args).map(|_| ()),
        Job::Idle(args) => restore::idle(&args).map(|_| ()),
        Job::Filters(args) => filters::filters(&args).map(|_| ()),
        Job::Feed(args) => feed::feed(&args).map(|_| ()),
    }
}

/// A count: digits, `_` allowed as a separator (`1_000_000`).
pub fn count(text: &str) -> Result<usize, String> {
    text.replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not a count"))
}

/// The daemon binary option every live measurement takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Jailsink {
    /// The jailsink binary to measure (bench/lib.sh builds it with --release).
    #[arg(long, default_value = "target/release/jailsink")]
    pub jailsink: PathBuf,
}

/// How often a measurement looks whether the daemon is done (the resolution of its timing).
pub const POLL: Duration = Duration::from_millis(5);

/// Jails of a central host: sshd and sendmail AUTH, the two the corpus exercises.
pub const LIVE_JAILS: &str = r#"
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

/// Starts `bin run` with `jails` on port-0 listeners (tests/support.rs's config; `dir` holds it
/// and the state) and waits until it is ready; its log at info for jailsink only.
pub fn daemon(bin: &Path, jails: &str, dir: tempfile::TempDir) -> support::Daemon {
    support::Daemon::start_bin(
        bin,
        dir,
        &support::config("", jails),
        &[],
        &[("RUST_LOG", "warn,jailsink=info")],
    )
}

/// As [`daemon`], in a fresh temporary directory.
pub fn fresh_daemon(bin: &Path, jails: &str) -> Result<support::Daemon, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    Ok(daemon(bin, jails, dir))
}
