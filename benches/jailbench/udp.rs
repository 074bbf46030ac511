//! Live UDP ingest: offered rates stepped up, each against a fresh daemon; loss = 1 −
//! counted/sent once the count settles, with the kernel's drops (`SO_RXQ_OVFL`) beside it.
//!
//! Two senders: ours (sendmmsg, 32 a call, paced evenly) and bench/udp-blaster.c, an
//! independent C program that sends bursts of 256 back to back. Two streams: the corpus, and a
//! botnet (N addresses failing maxretry times each, between corpus lines, storm guard off, the
//! log action logging every ban). With `--before BIN` the same steps run on a second daemon
//! binary (the merge base, built by bench/live-udp.sh), alternating, in the same run.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::corpus::{attacker, read_lines};
use super::live::received;
use super::load::{send_udp, Sent};
use super::{fresh_daemon, LIVE_JAILS};

/// `live-udp --corpus DIR --jailsink BIN [--before BIN] [--blaster PATH] [--botnet N] ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A directory `corpus` wrote (its corpus.pri is sent, cycled).
    #[arg(long, default_value = "bench/out/corpus")]
    pub corpus: PathBuf,
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// A second daemon binary measured at the same steps in the same run (the "before").
    #[arg(long)]
    pub before: Option<PathBuf>,
    /// The udp-blaster binary (bench/udp-blaster.c); without it only our sender is used.
    #[arg(long)]
    pub blaster: Option<PathBuf>,
    /// Datagrams the blaster sends back to back.
    #[arg(long, default_value = "256", value_parser = super::count)]
    pub burst: usize,
    /// Also stream a botnet of this many addresses (each banned once); 0: corpus only.
    #[arg(long, default_value = "0", value_parser = super::count)]
    pub botnet: usize,
    /// Offered rates to step through, messages a second, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "200000,300000,400000",
        value_parser = super::count
    )]
    pub rates: Vec<usize>,
    /// Seconds each rate is offered (the botnet stream is sent whole, however long it takes).
    #[arg(long, default_value = "3", value_parser = super::count)]
    pub seconds: usize,
}

/// One step: a stream from a sender at a rate into one daemon binary.
#[derive(Debug, Clone)]
pub struct UdpRow {
    /// "corpus" or "botnet N".
    pub stream: String,
    /// "ours" or "blaster".
    pub sender: &'static str,
    /// "before" or "after".
    pub binary: &'static str,
    /// Offered messages/s.
    pub offered: usize,
    /// Achieved send rate.
    pub sent_rate: f64,
    /// Sent.
    pub sent: u64,
    /// Counted by the daemon.
    pub received: u64,
    /// The daemon's `jailsink_udp_kernel_drops_total` (None: the binary has no such metric).
    pub kernel_drops: Option<u64>,
    /// Bans issued (botnet stream), each logged by the log action.
    pub bans: u64,
    /// Failures dropped because the jail queue was full (received, then lost inside).
    pub queue_full: u64,
}

impl UdpRow {
    /// Lost share, percent.
    pub fn loss(&self) -> f64 {
        (1.0 - self.received as f64 / self.sent.max(1) as f64) * 100.0
    }
}

/// The live jails with sshd's storm guard off, so a botnet is banned whole.
fn botnet_jails() -> String {
    LIVE_JAILS.replacen(
        "[jails.sshd]\n",
        "[jails.sshd]\nmax_bans_per_minute = 0\nfindtime = \"1h\"\n",
        1,
    )
}

/// maxretry of sshd in [`LIVE_JAILS`]: each botnet address fails this often.
const MAXRETRY: usize = 5;

/// `rounds` passes over `addresses` sshd failures, a corpus line after each; written to `path`.
fn write_botnet(path: &Path, corpus: &[Vec<u8>], addresses: usize) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    // Filler the jails ignore, so the only bans are the botnet's.
    let quiet: Vec<&Vec<u8>> = corpus
        .iter()
        .filter(|l| {
            memchr::memmem::find(l, b" sshd[").is_none()
                && memchr::memmem::find(l, b" sendmail[").is_none()
        })
        .collect();
    let mut filler = quiet.iter().cycle();
    for round in 0..MAXRETRY {
        for i in 0..addresses {
            let ip = attacker(1_000_000 + i);
            writeln!(
                out,
                "<38>Nov 20 01:00:{:02} web1 sshd[{}]: Failed password for root from {ip} port {} ssh2",
                round,
                4000 + i % 50_000,
                10_000 + i % 50_000
            )
            .map_err(|e| e.to_string())?;
            if let Some(line) = filler.next() {
                out.write_all(line).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
            }
        }
    }
    out.flush().map_err(|e| e.to_string())
}

/// Sends `count` lines of `file` to `addr` at `rate` with the blaster.
fn blast(
    blaster: &Path,
    addr: SocketAddr,
    file: &Path,
    rate: usize,
    count: usize,
    burst: usize,
) -> Result<Sent, String> {
    let out = Command::new(blaster)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            file.display().to_string(),
            rate.to_string(),
            count.to_string(),
            burst.to_string(),
        ])
        .output()
        .map_err(|e| format!("{}: {e}", blaster.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (out.status.success(), field("sent="), field("seconds=")) {
        (true, Some(messages), Some(seconds)) => Ok(Sent {
            messages: messages as u64,
            bytes: 0,
            seconds,
            cpu_seconds: 0.0,
            // The blaster reports its sending time; it began that long before it exited.
            started: std::time::Instant::now()
                .checked_sub(std::time::Duration::from_secs_f64(seconds))
                .unwrap_or_else(std::time::Instant::now),
        }),
        _ => Err(format!(
            "blaster failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Waits until `value` stops moving (or reaches `target`); returns it.
fn settle(target: f64, mut value: impl FnMut() -> f64) -> f64 {
    let mut last = -1.0;
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = value();
        if now == last || now >= target {
            return now;
        }
        last = now;
    }
}

/// Every step; prints a table and, per binary, sender and stream, the highest rate under 0.1%.
pub fn live_udp(args: &Args) -> Result<Vec<UdpRow>, String> {
    println!("net.core.rmem_max = {}", rmem_max());
    let corpus_file = args.corpus.join("corpus.pri");
    let corpus = read_lines(&corpus_file)?;
    let mut streams = vec![(
        "corpus".to_string(),
        corpus_file.clone(),
        LIVE_JAILS.to_string(),
    )];
    if args.botnet > 0 {
        let file = args.corpus.join(format!("botnet-{}.pri", args.botnet));
        write_botnet(&file, &corpus, args.botnet)?;
        streams.push((format!("botnet {}", args.botnet), file, botnet_jails()));
    }
    let mut binaries = vec![("after", args.jailsink.jailsink.clone())];
    if let Some(before) = &args.before {
        binaries.insert(0, ("before", before.clone()));
    }
    let mut senders: Vec<(&'static str, Option<&Path>)> = vec![("ours", None)];
    if let Some(blaster) = &args.blaster {
        senders.push(("blaster", Some(blaster)));
    }
    let mut rows = Vec::new();
    for (stream, file, jails) in &streams {
        let lines = if file == &corpus_file {
            corpus.clone()
        } else {
            read_lines(file)?
        };
        let botnet = stream != "corpus";
        for &(sender, blaster) in &senders {
            for &rate in &args.rates {
                for (binary, bin) in &binaries {
                    let daemon = fresh_daemon(bin, jails)?;
                    let count = if botnet {
                        lines.len()
                    } else {
                        rate * args.seconds
                    };
                    let sent = match blaster {
                        Some(b) => blast(b, daemon.udp, file, rate, count, args.burst)?,
                        None => send_udp(daemon.udp, &lines, count, rate)?,
                    };
                    let total = sent.messages as f64;
                    let got = settle(total, || received(&daemon, "udp"));
                    let bans = if botnet {
                        settle(args.botnet as f64, || {
                            daemon
                                .metric("jailsink_bans_total{jail=\"sshd\"}")
                                .unwrap_or(0.0)
                        }) as u64
                    } else {
                        0
                    };
                    rows.push(UdpRow {
                        stream: stream.clone(),
                        sender,
                        binary,
                        offered: rate,
                        sent_rate: total / sent.seconds,
                        sent: sent.messages,
                        received: got as u64,
                        kernel_drops: daemon
                            .metric("jailsink_udp_kernel_drops_total")
                            .map(|v| v as u64),
                        bans,
                        queue_full: daemon
                            .metric("jailsink_messages_dropped_total{reason=\"queue_full\"}")
                            .unwrap_or(0.0) as u64,
                    });
                }
            }
        }
    }
    print_rows(&rows);
    Ok(rows)
}

fn print_rows(rows: &[UdpRow]) {
    println!("| stream | sender | offered msg/s | daemon | sent msg/s | sent | received | kernel drops | loss | failures dropped, queue full | bans |");
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.3}% | {} | {} |",
            r.stream,
            r.sender,
            r.offered,
            r.binary,
            r.sent_rate,
            r.sent,
            r.received,
            r.kernel_drops.map_or("—".into(), |d| d.to_string()),
            r.loss(),
            r.queue_full,
            if r.stream == "corpus" {
                "—".to_string()
            } else {
                r.bans.to_string()
            }
        );
    }
    let mut groups: Vec<(&str, &str, &str)> = Vec::new();
    for r in rows {
        let group = (r.stream.as_str(), r.sender, r.binary);
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    for (stream, sender, binary) in groups {
        let best = rows
            .iter()
            .filter(|r| r.stream == stream && r.sender == sender && r.binary == binary)
            .filter(|r| r.loss() < 0.1)
            .map(|r| r.sent_rate)
            .fold(0.0, f64::max);
        println!(
            "{stream}, {sender} sender, {binary}: highest rate under 0.1% loss {best:.0} msg/s"
        );
    }
}

/// The machine's `net.core.rmem_max`, for the report.
fn rmem_max() -> String {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max").map_or("?".into(), |s| s.trim().into())
}
