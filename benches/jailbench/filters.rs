//! The cost of the whole filter library next to sshd alone, same run (issue #13): offline,
//! `jailsink regex` with sshd.toml against one filter holding every shipped filter's patterns
//! (every pattern competes for every line, the worst case of the prefix dispatch); live, a
//! daemon with the sshd jail alone, with every shipped jail on its own programs, and with every
//! shipped jail taking every program. Rounds alternate the setups so machine noise hits all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::corpus::{read_lines, Truth};
use super::load::send_tcp;
use super::{fresh_daemon, support, POLL};

/// `filters --corpus DIR --jailsink BIN [--rounds 3]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A directory `corpus` wrote.
    #[arg(long, default_value = "bench/out/corpus")]
    pub corpus: PathBuf,
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// Rounds of every setup, alternating.
    #[arg(long, default_value = "3", value_parser = super::count)]
    pub rounds: usize,
    /// Seconds to wait for a live daemon to count every message.
    #[arg(long, default_value = "300", value_parser = super::count)]
    pub timeout: usize,
}

/// The shipped filter directory.
fn filter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d")
}

/// One filter file with every shipped filter's patterns in its default mode.
fn combined_filter(out: &Path) -> Result<usize, String> {
    let mut lists: [Vec<String>; 5] = Default::default();
    let keys = [
        "failregex",
        "pendingregex",
        "echoregex",
        "ignoreregex",
        "successregex",
    ];
    let mut names: Vec<PathBuf> = std::fs::read_dir(filter_dir())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    let strings = |v: Option<&toml::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for path in &names {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if table.contains_key("prefregex") {
            return Err(format!(
                "{}: a prefregex cannot be combined",
                path.display()
            ));
        }
        for (list, key) in lists.iter_mut().zip(keys) {
            list.extend(strings(table.get(key)));
        }
        if let Some(mode) = table.get("mode").and_then(|m| m.as_str()) {
            let extra = table
                .get("modes")
                .and_then(|m| m.get(mode))
                .and_then(|m| m.get("failregex"));
            lists[0].extend(strings(extra));
        }
    }
    let mut table = toml::Table::new();
    for (list, key) in lists.iter().zip(keys) {
        table.insert(
            key.to_string(),
            toml::Value::Array(list.iter().cloned().map(toml::Value::String).collect()),
        );
    }
    std::fs::write(out, toml::to_string(&table).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(names.len())
}

/// `jailsink regex LOG FILTER`: (lines/s, failures found).
fn regex_run(bin: &Path, log: &Path, filter: &Path, lines: u64) -> Result<(f64, u64), String> {
    let start = Instant::now();
    // The defaults, never the host's /etc/jailsink (see offline.rs).
    let out = Command::new(bin)
        .args(["-c", "/nonexistent/jailsink.toml"])
        .arg("regex")
        .arg(log)
        .arg(filter)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Lines: ")?
                .split(", ")
                .find_map(|p| p.strip_suffix(" matched")?.trim().parse().ok())
        })
        .ok_or_else(|| format!("no `Lines:` summary from jailsink regex: {text}"))?;
    Ok((lines as f64 / secs, found))
}

/// The shipped config's commented library jails, uncommented; with `every_program`, each
/// takes every program instead of its own.
fn library_jails(every_program: bool) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/jailsink.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# [jails.") {
            inside = true;
            out.push_str(&format!("[jails.{rest}\n"));
        } else if inside && line.starts_with("# ") && line.contains(" = ") {
            let kv = &line[2..];
            if every_program && kv.starts_with("programs") {
                continue;
            }
            out.push_str(kv);
            out.push('\n');
        } else {
            inside = false;
        }
    }
    Ok(out)
}

const SSHD: &str = "[jails.sshd]\nprograms = [\"sshd\"]\n";

/// What one run measured.
#[derive(Debug, Clone)]
pub struct FiltersRun {
    /// Offline (lines/s, failures found): sshd.toml alone, then every filter in one.
    pub offline: [(f64, u64); 2],
    /// Live msg/s: sshd alone, every jail on its programs, every jail on every program.
    pub live: Vec<f64>,
}

/// Each setup's best rate over the rounds; prints both tables with the ratio to sshd alone.
pub fn filters(args: &Args) -> Result<FiltersRun, String> {
    let truth = Truth::read(&args.corpus.join("truth.txt"))?;
    let bin = &args.jailsink.jailsink;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let all = dir.path().join("all-filters.toml");
    let count = combined_filter(&all)?;
    let sshd = filter_dir().join("sshd.toml");
    let log = args.corpus.join("corpus.log");
    let mut offline = [(0.0f64, 0u64), (0.0, 0)];
    for _ in 0..args.rounds {
        for (i, filter) in [&sshd, &all].into_iter().enumerate() {
            let (rate, found) = regex_run(bin, &log, filter, truth.lines)?;
            offline[i] = (offline[i].0.max(rate), found);
        }
    }
    println!(
        "offline, `jailsink regex` on {} lines, best of {} rounds:\n",
        truth.lines, args.rounds
    );
    println!("| filter | lines/s | failures found | per line vs sshd alone |");
    println!("|---|---:|---:|---:|");
    for (name, (rate, found)) in [
        ("sshd.toml alone".to_string(), offline[0]),
        (format!("all {count} shipped filters in one"), offline[1]),
    ] {
        println!(
            "| {name} | {rate:.0} | {found} | {:.2}x |",
            offline[0].0 / rate
        );
    }

    let lines = read_lines(&args.corpus.join("corpus.pri"))?;
    let setups = [
        ("sshd jail alone".to_string(), SSHD.to_string()),
        (
            format!("sshd + {} library jails, own programs", count - 1),
            format!("{SSHD}{}", library_jails(false)?),
        ),
        (
            format!("sshd + {} library jails, every program", count - 1),
            format!("{SSHD}{}", library_jails(true)?),
        ),
    ];
    let timeout = Duration::from_secs(args.timeout as u64);
    let mut live = vec![0.0f64; setups.len()];
    for _ in 0..args.rounds {
        for (i, (_, jails)) in setups.iter().enumerate() {
            let daemon = fresh_daemon(bin, jails)?;
            let series = "jailsink_messages_received_total{transport=\"tcp\"}";
            let sent = send_tcp(daemon.tcp, &lines, 1, false, 0)?;
            let counted = support::poll(timeout, POLL, || {
                daemon.metric(series).unwrap_or(0.0) >= sent.messages as f64
            });
            let secs = sent.started.elapsed().as_secs_f64();
            if !counted {
                return Err(format!("setup {i}: not every message counted"));
            }
            live[i] = live[i].max(sent.messages as f64 / secs);
        }
    }
    println!(
        "\nlive TCP, 1 connection, LF, {} messages, best of {} rounds:\n",
        lines.len(),
        args.rounds
    );
    println!("| jails | msg/s (all counted) | per message vs sshd alone |");
    println!("|---|---:|---:|");
    for ((name, _), rate) in setups.iter().zip(&live) {
        println!("| {name} | {rate:.0} | {:.2}x |", live[0] / rate);
    }
    Ok(FiltersRun { offline, live })
}
