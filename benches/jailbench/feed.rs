//! The ban feed, `GET /bans`, with many active bans: each binary's daemon restores N bans
//! from a state.db (as `restore` writes it), then the whole feed is fetched again and again,
//! the binaries in turn (`--against`), timing each fetch end to end and the daemon's CPU time
//! it cost. The feed asks the jail task for 1,000 bans a page; a page that scans every ban
//! makes the whole feed O(N^2 / 1000).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::restore::prepare_state;
use super::{daemon, POLL};

/// `feed --jailsink BIN [--against OLD] [--bans 100000] [--repeat 9]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// Another jailsink binary fetched from in turn with `--jailsink` (one fetch each, then
    /// again), so a before/after comparison sees the same machine.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Active bans in each daemon.
    #[arg(long, default_value = "100000", value_parser = super::count)]
    pub bans: usize,
    /// Fetches of the whole feed from each daemon.
    #[arg(long, default_value = "9", value_parser = super::count)]
    pub repeat: usize,
}

/// One fetch: wall seconds, daemon CPU seconds.
type Fetch = (f64, f64);

/// Prints a row per fetch and the medians; returns the `--jailsink` binary's median wall
/// seconds of a whole feed.
pub fn feed(args: &Args) -> Result<f64, String> {
    let jails =
        "[jails.sshd]\nprograms = [\"sshd\"]\nmaxretry = 5\nbantime = \"1d\"\naction = \"log\"\n";
    let mut bins = vec![args.jailsink.jailsink.clone()];
    bins.extend(args.against.clone());
    let mut daemons = Vec::new();
    for bin in &bins {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        prepare_state(&dir.path().join("state.db"), args.bans)?;
        let d = daemon(bin, jails, dir);
        let all = super::support::poll(Duration::from_secs(600), POLL, || {
            d.bans_logged() >= args.bans as u64
        });
        if !all {
            return Err(format!(
                "{}: {} of {} bans restored",
                bin.display(),
                d.bans_logged(),
                args.bans
            ));
        }
        daemons.push(d);
    }
    println!("| binary | fetch | lines | wall | daemon CPU |\n|---|---:|---:|---:|---:|");
    let mut fetches: Vec<Vec<Fetch>> = vec![Vec::new(); bins.len()];
    for round in 0..args.repeat.max(1) {
        for (i, d) in daemons.iter().enumerate() {
            let cpu = super::live::cpu_seconds(d.pid());
            let started = Instant::now();
            let lines = fetch(d.metrics)?;
            let wall = started.elapsed().as_secs_f64();
            let cpu = super::live::cpu_seconds(d.pid()) - cpu;
            if lines != args.bans {
                return Err(format!(
                    "{}: {lines} of {} bans fed",
                    bins[i].display(),
                    args.bans
                ));
            }
            println!(
                "| {} | {} | {lines} | {:.1} ms | {:.0} ms |",
                bins[i].display(),
                round + 1,
                wall * 1e3,
                cpu * 1e3
            );
            fetches[i].push((wall, cpu));
        }
    }
    println!("\n| binary | median wall | median daemon CPU |\n|---|---:|---:|");
    let mut medians = Vec::new();
    for (bin, runs) in bins.iter().zip(&fetches) {
        let wall = median(runs.iter().map(|f| f.0).collect());
        let cpu = median(runs.iter().map(|f| f.1).collect());
        println!(
            "| {} | {:.1} ms | {:.0} ms |",
            bin.display(),
            wall * 1e3,
            cpu * 1e3
        );
        medians.push(wall);
    }
    if fetches.len() == 2 {
        let ratios: Vec<String> = fetches[0]
            .iter()
            .zip(&fetches[1])
            .map(|(new, old)| format!("{:.1}", old.0 / new.0))
            .collect();
        println!(
            "\nper-round wall ratio (--against / --jailsink): {}",
            ratios.join(", ")
        );
    }
    Ok(medians[0])
}

/// `GET /bans` over HTTP/1.1, read to the end; the lines of its (chunked) body.
fn fetch(addr: std::net::SocketAddr) -> Result<usize, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /bans HTTP/1.1\r\nHost: bench\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| e.to_string())?;
    if !all.starts_with(b"HTTP/1.1 200") {
        return Err(String::from_utf8_lossy(&all[..all.len().min(200)]).into_owned());
    }
    // Each ban is one line ending in '\n'; the chunk framing uses "\r\n" only.
    Ok(all.iter().filter(|&&b| b == b'\n').count()
        - all.windows(2).filter(|w| w == b"\r\n").count())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
