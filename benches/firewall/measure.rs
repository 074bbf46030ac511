//! One firewall backend measured in a lab (tests/lab.rs): N bans applied the way the runner
//! applies them (bursts of `MAX_BURST`), one more ban at that size, and the cost per TCP
//! connection of an unbanned attacker with 0 bans and with N bans, which shows the per-packet
//! cost of the rules. Shared by benches/firewall/main.rs and the test suite's smoke run.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use jailsink::action::runner::MAX_BURST;
use jailsink::action::{
    Action, ActionCommand, ActionSpec, BanOrder, BlockType, FirewallSpec, Protocol,
};

use crate::lab::Lab;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Backend as named in the config (`nftables-interval`: nftables with interval sets).
    pub backend: String,
    /// Bans applied.
    pub bans: usize,
    /// Time to apply them all.
    pub apply: Duration,
    /// Time to apply one more ban on top of them.
    pub one_more: Duration,
    /// What the backend's `list` found afterwards.
    pub listed: usize,
    /// Per connection of an unbanned attacker, with no bans.
    pub connect_empty: Duration,
    /// Per connection of an unbanned attacker, with `bans` bans.
    pub connect_full: Duration,
    /// Time for `stop` to remove everything.
    pub stop: Duration,
}

/// The action under test: `iptables`, `ipset`, `nftables` or `nftables-interval`.
pub fn spec(backend: &str, port: u16) -> ActionSpec {
    let firewall = FirewallSpec {
        name: "bench".into(),
        ports: vec![port.to_string()],
        protocol: Protocol::Tcp,
        blocktype: BlockType::Drop,
        keep_on_stop: false,
        v4_networks: backend == "nftables-interval",
        v6_networks: false,
        hooks: Vec::new(),
    };
    match backend {
        "iptables" => ActionSpec::Iptables(firewall),
        "ipset" => ActionSpec::Ipset(firewall),
        _ => ActionSpec::Nftables(firewall),
    }
}

/// The i-th banned address: 198.18.0.0/15 (RFC 2544's benchmark range), never the attacker.
fn target(i: usize) -> IpNetwork {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    IpNetwork::from(IpAddr::V4(Ipv4Addr::from(base + i as u32)))
}

fn ban(i: usize) -> ActionCommand {
    ActionCommand::Ban(BanOrder {
        target: target(i),
        failures: 5,
        bantime: Some(Duration::from_secs(3600)),
        decided_at: Instant::now(),
        from_state: false,
        evidence: Default::default(),
    })
}

/// Runs `f` with the action on a thread inside the server namespace, where the firewall
/// commands it spawns take effect.
fn inside<T: Send + 'static>(
    lab: &Lab,
    action: Box<dyn Action>,
    f: impl FnOnce(&mut dyn Action) -> T + Send + 'static,
) -> (Box<dyn Action>, T) {
    lab.server.within(move || {
        let mut action = action;
        let out = f(action.as_mut());
        (action, out)
    })
}

/// Measures `backend` with `bans` bans and `probes` connections per probe.
pub fn measure(lab: &Lab, backend: &str, bans: usize, probes: usize) -> Figures {
    let action = spec(backend, lab.port).build("bench");
    let (action, started) = inside(lab, action, |a| a.start());
    started.unwrap_or_else(|e| panic!("{backend}: start: {e}"));
    // Warm up (ARP/ND, caches) before timing.
    let _ = lab.connect_time(false, probes.min(100));
    let connect_empty = lab.connect_time(false, probes).unwrap_or_else(|e| {
        panic!(
            "{backend}: the unbanned attacker cannot connect: {e}\n{}",
            lab.tcp_counters()
        )
    });
    let (action, apply) = inside(lab, action, move |a| {
        let started = Instant::now();
        let commands: Vec<ActionCommand> = (0..bans).map(ban).collect();
        for burst in commands.chunks(MAX_BURST) {
            if let Err(e) = a.apply(burst) {
                panic!("applying a burst: {e}");
            }
        }
        started.elapsed()
    });
    let (action, one_more) = inside(lab, action, move |a| {
        let started = Instant::now();
        a.apply(&[ban(bans)]).expect("one more ban");
        started.elapsed()
    });
    let connect_full = lab.connect_time(false, probes).unwrap_or_else(|e| {
        panic!(
            "{backend}: the unbanned attacker was blocked: {e}\n{}",
            lab.tcp_counters()
        )
    });
    let (action, listed) = inside(lab, action, |a| {
        a.list().expect("list").map_or(0, |l| l.len())
    });
    let (_, stop) = inside(lab, action, |a| {
        let started = Instant::now();
        a.stop().expect("stop");
        started.elapsed()
    });
    Figures {
        backend: backend.to_string(),
        bans,
        apply,
        one_more,
        listed,
        connect_empty,
        connect_full,
        stop,
    }
}
