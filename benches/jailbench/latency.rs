//! Ban latency: maxretry 1, one failure per distinct address over TCP at a steady rate while a
//! second connection offers background load; p50/p99 of jailsink_ban_latency_seconds (receipt
//! of the deciding message to action done), read from the daemon's histogram.

use std::time::Duration;

use super::corpus::attacker;
use super::load::send_tcp;
use super::support;
use super::{fresh_daemon, POLL};

/// `latency --jailsink BIN [--action log|iptables|nftables] [--bans 900] [--rate 1000]
/// [--background 100000]`. Firewall actions need root and should run inside a network
/// namespace (bench/latency.sh makes one).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// The jail's action: log, nftables, iptables, ipset...
    #[arg(long, default_value = "log")]
    pub action: String,
    /// Bans (one failing address each); the default ban storm guard withholds bans past
    /// 1,000 a minute.
    #[arg(long, default_value = "900", value_parser = super::count)]
    pub bans: usize,
    /// Failures a second.
    #[arg(long, default_value = "1000", value_parser = super::count)]
    pub rate: usize,
    /// Ordinary messages a second on a second connection meanwhile.
    #[arg(long, default_value = "0", value_parser = super::count)]
    pub background: usize,
}

/// Runs the bans and prints p50/p99; returns (p50, p99, bans counted).
pub fn latency(args: &Args) -> Result<(f64, f64, u64), String> {
    let action = &args.action;
    let bans = args.bans;
    let jails = format!(
        "[jails.sshd]\nprograms = [\"sshd\"]\nmaxretry = 1\nbantime = \"1h\"\naction = \"{action}\"\n"
    );
    let daemon = fresh_daemon(&args.jailsink.jailsink, &jails)?;
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
    let tcp = daemon.tcp;
    let background = args.background;
    let rate = args.rate.max(1);
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
    let done = support::poll(Duration::from_secs(120), POLL, || {
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

/// Sum of every sample of `name` whose labels contain `label` (all of them if it is empty).
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
