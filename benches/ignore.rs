//! Allowlist lookups a second: the prefix trie (`jailsink::jail::allow::IgnoreTable`) next to
//! the linear scan over `ignoreip` it replaced, on the same entries and probes in one run.
//! Entries: deterministic /32s, /24s and /16s with IPv6 /128s and /64s; probes are addresses,
//! a few of them in the list. Both answers are compared for every probe, so a faster wrong
//! table cannot win.
//!
//! `cargo bench --bench ignore -- [ENTRIES ...]` (default 100 1000 10000).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use jailsink::jail::allow::IgnoreTable;

/// A small deterministic generator (xorshift64*), so every run measures the same lists.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn entries(n: usize, rng: &mut Rng) -> Vec<IpNetwork> {
    (0..n)
        .map(|i| {
            let r = rng.next();
            match i % 10 {
                0 => IpNetwork::new(IpAddr::V6(Ipv6Addr::from((r as u128) << 64)), 64),
                1 => IpNetwork::new(IpAddr::V6(Ipv6Addr::from(u128::from(r) << 32)), 128),
                2 => IpNetwork::new(IpAddr::V4(Ipv4Addr::from((r as u32) & 0xffff_0000)), 16),
                3..=5 => IpNetwork::new(IpAddr::V4(Ipv4Addr::from((r as u32) & 0xffff_ff00)), 24),
                _ => IpNetwork::new(IpAddr::V4(Ipv4Addr::from(r as u32)), 32),
            }
            .expect("a valid prefix")
        })
        .collect()
}

/// The lookup jailsink did before the trie (src/jail/mod.rs, `ignored_by`).
fn linear(list: &[IpNetwork], target: IpNetwork) -> Option<IpNetwork> {
    list.iter()
        .find(|net| net.contains(target.network()) || target.contains(net.network()))
        .copied()
}

/// Lookups a second of `lookup` over `probes`, repeated for at least half a second.
fn rate(probes: &[IpNetwork], mut lookup: impl FnMut(IpNetwork) -> bool) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < Duration::from_millis(500) {
        for p in probes {
            black_box(lookup(black_box(*p)));
        }
        done += probes.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 10_000]
    } else {
        sizes
    };
    println!("| entries | trie lookups/s | linear scan lookups/s | trie / linear | hits |");
    println!("|---:|---:|---:|---:|---:|");
    for n in sizes {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let list = entries(n, &mut rng);
        let table = IgnoreTable::new(&list);
        // 1 probe in 16 is an address inside an entry; the rest are random IPv4 and IPv6.
        let probes: Vec<IpNetwork> = (0..4096)
            .map(|i| {
                let r = rng.next();
                let ip = if i % 16 == 0 {
                    list[(r as usize) % list.len()].ip()
                } else if i % 5 == 0 {
                    IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | u128::from(r)))
                } else {
                    IpAddr::V4(Ipv4Addr::from(r as u32))
                };
                IpNetwork::from(ip)
            })
            .collect();
        let mut hits = 0;
        for p in &probes {
            let (t, l) = (table.overlapping(*p).is_some(), linear(&list, *p).is_some());
            assert_eq!(t, l, "trie and scan disagree on {p}");
            hits += usize::from(t);
        }
        let trie = rate(&probes, |p| table.overlapping(p).is_some());
        let scan = rate(&probes, |p| linear(&list, p).is_some());
        println!(
            "| {n} | {trie:.0} | {scan:.0} | {:.1}x | {hits}/{} |",
            trie / scan,
            probes.len()
        );
    }
}
