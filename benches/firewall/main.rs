//! Firewall backends at scale: each applies N bans inside throwaway network namespaces, then
//! an unbanned attacker's TCP connections are timed with 0 and with N bans (the per-packet
//! cost of the rules). Needs root. Results and the machine go in BENCHMARKS.md.
//!
//! `cargo bench --bench firewall -- [--bans 100000] [--iptables-bans 2000]
//!  [--interval-bans 10000] [--probes 2000] [--only nftables,ipset,...]`
//!
//! iptables adds one rule per ban, each through two iptables runs that re-read the ruleset, so
//! it is measured at a smaller N and extrapolated; `nftables-interval` (interval sets, what a
//! jail with prefix bans gets) is measured at a smaller N for the same reason.

#[path = "../../tests/lab.rs"]
mod lab;
mod measure;

use std::time::Duration;

use clap::Parser;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "firewall",
    about = "Firewall backends at scale, in throwaway network namespaces (root)"
)]
struct Args {
    /// Bans for nftables and ipset.
    #[arg(long, default_value_t = 100_000)]
    bans: usize,
    /// Bans for iptables (one rule each; extrapolated to --bans).
    #[arg(long, default_value_t = 2_000)]
    iptables_bans: usize,
    /// Bans for nftables with interval sets.
    #[arg(long, default_value_t = 10_000)]
    interval_bans: usize,
    /// TCP connections timed per probe.
    #[arg(long, default_value_t = 2_000)]
    probes: usize,
    /// Only these backends, comma-separated (nftables, ipset, nftables-interval, iptables).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
}

fn main() {
    // `cargo bench` appends `--bench` to a harness-less bench's arguments.
    let Args {
        bans,
        iptables_bans,
        interval_bans,
        probes,
        only,
    } = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let runs = [
        ("nftables", bans),
        ("ipset", bans),
        ("nftables-interval", interval_bans),
        ("iptables", iptables_bans),
    ];
    println!(
        "{:<18} {:>7} {:>9} {:>10} {:>11} {:>12} {:>12} {:>7} {:>8}",
        "backend",
        "bans",
        "apply s",
        "per ban",
        "+1 ban ms",
        "conn 0 us",
        "conn N us",
        "ratio",
        "stop s"
    );
    for (i, (backend, n)) in runs.into_iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|b| b == backend))
        {
            continue;
        }
        let lab = lab::Lab::new(&format!("b{i}"));
        let f = measure::measure(&lab, backend, n, probes);
        assert_eq!(
            f.listed,
            n + 1,
            "{backend}: listed {} of {}",
            f.listed,
            n + 1
        );
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<18} {:>7} {:>9.2} {:>8.1}us {:>11.1} {:>12.1} {:>12.1} {:>7.2} {:>8.2}",
            f.backend,
            f.bans,
            f.apply.as_secs_f64(),
            us(f.apply) / f.bans.max(1) as f64,
            f.one_more.as_secs_f64() * 1e3,
            us(f.connect_empty),
            us(f.connect_full),
            f.connect_full.as_secs_f64() / f.connect_empty.as_secs_f64(),
            f.stop.as_secs_f64()
        );
        if backend == "iptables" && n < bans {
            // Linear extrapolation is a lower bound: each iptables run re-reads a ruleset that
            // grows with every ban, so the true cost grows faster.
            println!(
                "{:<18} {:>7} {:>9.0}  (extrapolated linearly from {n}: a lower bound)",
                "iptables (est.)",
                bans,
                f.apply.as_secs_f64() * bans as f64 / n as f64,
            );
        }
    }
}
