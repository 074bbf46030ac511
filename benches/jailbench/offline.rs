//! The offline comparison: jailsink's regex tool, fail2ban-rs's dry run, sshguard's parser and
//! fail2ban-regex on the same corpus.log, one after the other, each timed with its peak RSS and
//! its count checked against the corpus's ground truth.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::corpus::Truth;

/// `offline --corpus DIR --jailsink BIN [--jailsink-threads 1,2] [--fail2ban-rs BIN]
/// [--skip fail2ban-regex,sshguard]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A directory `corpus` wrote.
    #[arg(long, default_value = "bench/out/corpus")]
    pub corpus: PathBuf,
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// `jailsink regex --threads N`, comma-separated: one row `jailsink-tN` per count. Without
    /// it, one row `jailsink` with the tool's default (every core; builds before `--threads`
    /// judged on one thread).
    #[arg(long, value_delimiter = ',')]
    pub jailsink_threads: Vec<u32>,
    /// fail2ban-rs binary (bench/offline.sh installs it); without it that tool is left out.
    #[arg(long = "fail2ban-rs")]
    pub fail2ban_rs: Option<PathBuf>,
    /// Tools to leave out, comma-separated (jailsink, fail2ban-rs, sshguard, fail2ban-regex).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
}

/// Runs a command to its end with stdout to `out`; returns (wall seconds, max RSS in KiB, CPU
/// seconds, user + system).
fn timed(cmd: &mut Command, stdin: Option<&Path>, out: &Path) -> Result<(f64, u64, f64), String> {
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
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        secs,
        usage.ru_maxrss as u64,
        cpu(usage.ru_utime) + cpu(usage.ru_stime),
    ))
}

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
    /// CPU seconds (user + system): steadier than wall time on a shared machine.
    pub cpu_seconds: f64,
}

/// Every tool on the same corpus.log, one after the other; prints a table.
pub fn offline(args: &Args) -> Result<Vec<OfflineRow>, String> {
    let dir = &args.corpus;
    let corpus = dir.join("corpus.log");
    let truth = Truth::read(&dir.join("truth.txt"))?;
    let jailsink = &args.jailsink.jailsink;
    let out = |name: &str| dir.join(format!("{name}.out"));
    let sshd_toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d/sshd.toml");
    let mut rows = Vec::new();
    let mut run = |tool: &str,
                   cmd: &mut Command,
                   stdin: Option<&Path>,
                   count: &dyn Fn(&str) -> u64|
     -> Result<(), String> {
        let skipped = |s: &String| s == tool || (s == "jailsink" && tool.starts_with("jailsink"));
        if args.skip.iter().any(skipped) {
            return Ok(());
        }
        let path = out(tool);
        let (seconds, rss_kib, cpu_seconds) = timed(cmd, stdin, &path)?;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        rows.push(OfflineRow {
            tool: tool.into(),
            rate: truth.lines as f64 / seconds,
            seconds,
            found: count(&text),
            rss_kib,
            cpu_seconds,
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
    let threads: Vec<Option<u32>> = match args.jailsink_threads.as_slice() {
        [] => vec![None],
        counts => counts.iter().copied().map(Some).collect(),
    };
    for n in threads {
        // `-c` a path that is not there: the defaults, never the host's /etc/jailsink (which
        // the package test installs and purges while the suite runs: read mid-purge, it failed
        // the run and counted nothing).
        let mut cmd = Command::new(jailsink);
        cmd.args(["-c", "/nonexistent/jailsink.toml"]).arg("regex");
        if let Some(n) = n {
            cmd.arg("--threads").arg(n.to_string());
        }
        let tool = n.map_or("jailsink".to_string(), |n| format!("jailsink-t{n}"));
        run(
            &tool,
            cmd.arg(&corpus).arg(&sshd_toml),
            None,
            &lines_matched,
        )?;
    }
    if let Some(bin) = args
        .fail2ban_rs
        .as_ref()
        .filter(|b| !b.as_os_str().is_empty())
    {
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
    // The first jailsink row is what the others are compared with.
    let jailsink_row = rows.iter().find(|r| r.tool.starts_with("jailsink"));
    let base = jailsink_row.map_or(1.0, |r| r.rate);
    let base_cpu = jailsink_row.map_or(1.0, |r| r.cpu_seconds);
    println!(
        "corpus: {} lines, {} sshd failures (ground truth), {} addresses",
        truth.lines,
        truth.sshd_failures,
        truth.sshd_hosts.len()
    );
    println!(
        "| tool | lines/s | seconds | CPU seconds | sshd failures found | vs truth | max RSS | jailsink is | jailsink is, by CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {:+.2}% | {:.1} MB | {:.2}x | {:.2}x |",
            r.tool,
            r.rate,
            r.seconds,
            r.cpu_seconds,
            r.found,
            (r.found as f64 / truth.sshd_failures.max(1) as f64 - 1.0) * 100.0,
            r.rss_kib as f64 / 1024.0,
            base / r.rate,
            r.cpu_seconds / base_cpu.max(1e-9)
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
