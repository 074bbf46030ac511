//! Start-up and idle: a state.db holding N active bans (written directly with SQLite), then
//! seconds from `jailsink run` until every ban is applied; and the RSS of an idle daemon.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::corpus::attacker;
use super::support;
use super::{daemon, fresh_daemon, LIVE_JAILS, POLL};

/// `restore --jailsink BIN [--bans 100000] [--action log|iptables|nftables]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// Active bans in the state.db.
    #[arg(long, default_value = "100000", value_parser = super::count)]
    pub bans: usize,
    /// The jail's action: log, or iptables or nftables (inside a network namespace; the chains
    /// or sets are counted).
    #[arg(long, default_value = "log")]
    pub action: String,
}

/// `idle --jailsink BIN [--against OLD] [--repeat N]`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// Another jailsink binary measured in turn with `--jailsink` (each start alternates), so
    /// a before/after comparison sees the same machine.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Starts of each binary.
    #[arg(long, default_value = "1", value_parser = super::count)]
    pub repeat: usize,
}

/// A state.db with N active bans, written directly with SQLite; seconds from `jailsink run` to
/// every ban applied. Prints a table; returns those seconds.
pub fn restore(args: &RestoreArgs) -> Result<f64, String> {
    let bans = args.bans;
    let action = &args.action;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // tests/support.rs's config keeps the state at @DIR@/state.db.
    prepare_state(&dir.path().join("state.db"), bans)?;
    let jails = format!(
        "[jails.sshd]\nprograms = [\"sshd\"]\nmaxretry = 5\nbantime = \"1d\"\naction = \"{action}\"\n"
    );
    match action.as_str() {
        "iptables" => return restore_firewall(args, &jails, dir, "chains", chain_rules),
        "nftables" => return restore_firewall(args, &jails, dir, "sets", set_elements),
        _ => {}
    }
    let daemon = daemon(&args.jailsink.jailsink, &jails, dir);
    let ok = support::poll(Duration::from_secs(600), POLL, || {
        daemon.bans_logged() >= bans as u64
    });
    let secs = daemon.spawned.elapsed().as_secs_f64();
    if !ok {
        return Err(format!("{} of {bans} bans applied", daemon.bans_logged()));
    }
    println!("| persisted bans | ready after | all applied after | RSS after |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {bans} | {:.2} s | {secs:.2} s | {:.1} MB |",
        daemon.ready_after.as_secs_f64(),
        daemon.rss_kib() as f64 / 1024.0
    );
    Ok(secs)
}

/// The ban rules in the sshd jail's iptables and ip6tables chains, as the kernel holds them.
fn chain_rules() -> usize {
    ["iptables", "ip6tables"]
        .iter()
        .filter_map(|tool| {
            Command::new(tool)
                .args(["-w", "-S", "jailsink-sshd"])
                .output()
                .ok()
        })
        .filter(|out| out.status.success())
        .map(|out| {
            out.stdout
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"-A "))
                .count()
        })
        .sum()
}

/// The elements of the sshd jail's nftables sets (table `inet jailsink`), as the kernel holds
/// them.
fn set_elements() -> usize {
    ["sshd-v4", "sshd-v6"]
        .iter()
        .filter_map(|set| {
            Command::new("nft")
                .args(["-j", "list", "set", "inet", "jailsink", set])
                .output()
                .ok()
        })
        .filter(|out| out.status.success())
        .filter_map(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .map(|json| {
            json["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item["set"]["elem"].as_array())
                .map(Vec::len)
                .sum::<usize>()
        })
        .sum()
}

/// True inside a named network namespace (`ip netns add`, not the host's, whose firewall is
/// not ours): this thread's namespace inode is one of /run/netns/*.
fn own_network_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(link) = std::fs::read_link("/proc/thread-self/ns/net") else {
        return false;
    };
    let inode = link
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse::<u64>();
    let Ok(inode) = inode else { return false };
    std::fs::read_dir("/run/netns").is_ok_and(|dir| {
        dir.flatten()
            .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == inode))
    })
}

/// A firewall backend (iptables: `held` counts the chains' rules; nftables: the sets'
/// elements): seconds from `jailsink run` to ready, which the daemon reports only after each
/// jail's runner has reconciled the firewall with the persisted bans (added what is missing, in
/// bursts); then `held` checks every ban is there. Once into an empty firewall, once after a
/// kill -9 (the firewall kept: one listing, nothing to add). Runs only inside a network
/// namespace (bench/restore.sh makes one).
fn restore_firewall(
    args: &RestoreArgs,
    jails: &str,
    dir: tempfile::TempDir,
    objects: &str,
    held: fn() -> usize,
) -> Result<f64, String> {
    let action = &args.action;
    if !own_network_namespace() {
        return Err(format!("restore --action {action} changes the firewall: run it inside a network namespace (bench/restore.sh IPTABLES=1 or NFTABLES=1)"));
    }
    let bans = args.bans;
    let bin = &args.jailsink.jailsink;
    let env = [("RUST_LOG", "warn,jailsink=info")];
    let mut rows = Vec::new();
    let mut dir = Some(dir);
    for start in [
        format!("empty {objects}"),
        format!("after kill -9 ({objects} kept)"),
    ] {
        let Some(d) = dir.take() else { break };
        let daemon = support::Daemon::start_bin(bin, d, &support::config("", jails), &[], &env);
        let ready = daemon.ready_after.as_secs_f64();
        // Listing 100,000 rules takes iptables-nft seconds: counted after, not polled.
        let held = held();
        if held != bans {
            return Err(format!(
                "{start}: {held} of {bans} bans in the {objects} when ready"
            ));
        }
        rows.push((start, ready, daemon.rss_kib()));
        dir = Some(daemon.kill9());
    }
    println!(
        "| persisted bans ({action}) | start | ready = every ban in the {objects} | RSS after |"
    );
    println!("|---:|---|---:|---:|");
    for (start, ready, rss) in &rows {
        println!(
            "| {bans} | {start} | {ready:.2} s | {:.1} MB |",
            *rss as f64 / 1024.0
        );
    }
    Ok(rows[0].1)
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

/// RSS of a daemon with the shipped jails, idle after start, split into anonymous memory (heap,
/// stacks) and file-backed pages (the mapped binary and libraries) from
/// `/proc/PID/smaps_rollup`. Prints a row per start; returns the last `--jailsink` RSS in KiB.
pub fn idle(args: &IdleArgs) -> Result<u64, String> {
    let mut bins = vec![args.jailsink.jailsink.clone()];
    bins.extend(args.against.clone());
    println!(
        "| binary | idle RSS | anonymous | file-backed | threads |\n|---|---:|---:|---:|---:|"
    );
    let mut last = 0;
    for _ in 0..args.repeat.max(1) {
        for (i, bin) in bins.iter().enumerate() {
            let daemon = fresh_daemon(bin, LIVE_JAILS)?;
            std::thread::sleep(Duration::from_millis(500));
            let pid = daemon.pid();
            let rss = daemon.rss_kib();
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .map_err(|e| e.to_string())?;
            let field = |name: &str| -> u64 {
                rollup
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            };
            let anon = field("Anonymous:");
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
            let mb = |kib: u64| kib as f64 / 1024.0;
            println!(
                "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {threads} |",
                bin.display(),
                mb(rss),
                mb(anon),
                mb(field("Rss:").saturating_sub(anon)),
            );
            if i == 0 {
                last = rss;
            }
        }
    }
    Ok(last)
}
