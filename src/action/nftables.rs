//! The nftables action: table `inet jailsink`, per jail one set per family (`<name>-v4`,
//! `<name>-v6`, element timeouts mirroring bantime) and one base chain `<name>` hooked into input
//! with one rule per family matching the set for the jail's ports and protocol. With
//! `hooks = ["input", "forward"]` a second base chain `<name>-forward` drops banned sources in
//! forwarded traffic too (published container ports, which never reach input), matching the
//! port the client asked for before DNAT (`ct original proto-dst`). Each burst of
//! bans and unbans is one `nft -f -` transaction.
//!
//! Sets are plain hash sets when the jail bans single addresses and interval sets only when it
//! bans networks (`ipv4_prefix` / `ipv6_prefix`): nft 1.0 reads every element of an interval
//! set back from the kernel on each change, which makes each ban cost seconds at 100k bans
//! (BENCHMARKS.md), while a hash set's change costs the same at any size. A jail with address
//! sets also gets small interval sets `<name>-v4-net` / `<name>-v6-net` for the networks an
//! operator bans by hand (`jailsink ban JAIL 198.51.100.0/24`), each matched by its own rule.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::{
    element_text, exec, parse_element, Action, ActionCommand, ActionError, ActionKind, BanOrder,
    BatchError, BlockType, FirewallSpec, Protocol,
};

/// The table every jail's objects live in, as SPEC.md names it.
pub(crate) const TABLE: &str = "jailsink";
/// One nft run (a burst of up to a few thousand elements, or a listing) takes well under this.
const NFT_TIMEOUT: Duration = Duration::from_secs(60);

/// Jails stop concurrently on their own threads; whoever finds the shared table holding only
/// its own objects deletes it, so that check and the delete must not interleave.
static TABLE_LOCK: Mutex<()> = Mutex::new(());

/// Bans with nftables sets.
pub(crate) struct NftablesAction {
    spec: FirewallSpec,
    /// libnftables in process for bursts, opened at start; None runs the `nft` command.
    lib: Option<super::libnft::Nft>,
}

impl NftablesAction {
    /// An action for the given settings; nothing touches the kernel until `start`.
    pub(crate) fn new(spec: FirewallSpec) -> Self {
        NftablesAction { spec, lib: None }
    }

    /// Applies a script as one transaction: in process when libnftables is loaded, else
    /// through the `nft` command.
    fn transaction(&mut self, script: &str) -> Result<(), ActionError> {
        match self.lib.as_mut() {
            Some(lib) => lib
                .run(script)
                .map_err(|e| ActionError::from_display("nft", e)),
            None => nft(&["-f", "-"], Some(script.as_bytes())).map(|_| ()),
        }
    }

    fn list_set(&self, set: &str) -> Result<Vec<IpNetwork>, ActionError> {
        let out = nft(&["-j", "list", "set", "inet", TABLE, set], None)?;
        let json: Value = serde_json::from_slice(&out)
            .map_err(|e| ActionError::from_display("nft -j list set", e))?;
        let mut targets = Vec::new();
        for item in json["nftables"].as_array().into_iter().flatten() {
            for elem in item["set"]["elem"].as_array().into_iter().flatten() {
                if let Some(target) = json_element(elem) {
                    targets.push(target);
                }
            }
        }
        Ok(targets)
    }
}

/// `<name>-v4` / `<name>-v6`.
pub(crate) fn set_name(name: &str, ipv4: bool) -> String {
    format!("{name}-{}", if ipv4 { "v4" } else { "v6" })
}

/// Whether the main set of a family is an interval set (the jail bans networks).
fn main_holds_networks(spec: &FirewallSpec, ipv4: bool) -> bool {
    if ipv4 {
        spec.v4_networks
    } else {
        spec.v6_networks
    }
}

/// Every set of the jail as (name, IPv4?, interval?): the main set of each family, and the
/// hand-banned networks' interval set of each family whose main set holds single addresses.
fn sets(spec: &FirewallSpec) -> Vec<(String, bool, bool)> {
    let mut all = Vec::new();
    for ipv4 in [true, false] {
        let networks = main_holds_networks(spec, ipv4);
        all.push((set_name(&spec.name, ipv4), ipv4, networks));
        if !networks {
            all.push((net_set_name(&spec.name, ipv4), ipv4, true));
        }
    }
    all
}

/// `<name>-v4-net` / `<name>-v6-net`: networks banned by hand in a jail of single addresses.
pub(crate) fn net_set_name(name: &str, ipv4: bool) -> String {
    format!("{}-net", set_name(name, ipv4))
}

/// The set that holds `target`: a network goes to the net set unless the main set is one.
fn set_for(spec: &FirewallSpec, target: IpNetwork) -> String {
    let ipv4 = target.is_ipv4();
    let full = if ipv4 { 32 } else { 128 };
    if target.prefix() == full || main_holds_networks(spec, ipv4) {
        set_name(&spec.name, ipv4)
    } else {
        net_set_name(&spec.name, ipv4)
    }
}

fn nft(args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, ActionError> {
    let mut argv = vec!["nft".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    Ok(exec::run(&argv, input, NFT_TIMEOUT)?)
}

/// An element of `nft -j list set`: `"192.0.2.1"`, `{"prefix": {"addr", "len"}}`, or either
/// wrapped in `{"elem": {"val": ..., "timeout": ...}}`. Ranges are never ours and are skipped.
fn json_element(value: &Value) -> Option<IpNetwork> {
    if let Some(text) = value.as_str() {
        return parse_element(text);
    }
    if let Some(inner) = value.get("elem") {
        return json_element(&inner["val"]);
    }
    let prefix = value.get("prefix")?;
    let text = format!("{}/{}", prefix["addr"].as_str()?, prefix["len"].as_u64()?);
    parse_element(&text)
}

/// The base chains of the jail as (name, hook): `<name>` on input, `<name>-forward` on forward.
fn chains(spec: &FirewallSpec) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if spec.hooks.is_empty() || spec.hooks.iter().any(|h| h == "input") {
        out.push((spec.name.clone(), "input"));
    }
    if spec.hooks.iter().any(|h| h == "forward") {
        out.push((format!("{}-forward", spec.name), "forward"));
    }
    out
}

/// The rule matching the jail's traffic from `set` of one family, e.g.
/// `tcp dport { 22 } ip saddr @sshd-v4 drop`; on the forward hook the port is the one the
/// client asked for, before any DNAT (`ct original proto-dst`).
fn rule(spec: &FirewallSpec, ipv4: bool, set: &str, forward: bool) -> String {
    let ports: Vec<String> = spec.ports.iter().map(|p| p.replace(':', "-")).collect();
    let ports = ports.join(", ");
    let protocol = match spec.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::All => "{ tcp, udp }",
    };
    let l4 = match (spec.protocol, ports.is_empty(), forward) {
        (Protocol::All, true, _) => String::new(),
        (_, true, _) => format!("meta l4proto {protocol} "),
        (_, false, true) => {
            format!("meta l4proto {protocol} ct original proto-dst {{ {ports} }} ")
        }
        (Protocol::Tcp, false, false) => format!("tcp dport {{ {ports} }} "),
        (Protocol::Udp, false, false) => format!("udp dport {{ {ports} }} "),
        (Protocol::All, false, false) => {
            format!("meta l4proto {{ tcp, udp }} th dport {{ {ports} }} ")
        }
    };
    let family = if ipv4 { "ip" } else { "ip6" };
    let verdict = match spec.blocktype {
        BlockType::Drop => "drop",
        BlockType::Reject => "reject",
    };
    format!("{l4}{family} saddr @{set} {verdict}")
}

/// The transaction that creates (or, after a keep_on_stop restart, refreshes) the jail's
/// objects; sets keep their elements, the chain's rules are rewritten.
pub fn start_script(spec: &FirewallSpec) -> String {
    let mut s = format!("add table inet {TABLE}\n");
    for (set, ipv4, networks) in sets(spec) {
        let kind = if ipv4 { "ipv4_addr" } else { "ipv6_addr" };
        let flags = if networks {
            "timeout,interval"
        } else {
            "timeout"
        };
        let _ = writeln!(
            s,
            "add set inet {TABLE} {set} {{ type {kind}; flags {flags}; }}"
        );
    }
    for (chain, hook) in chains(spec) {
        let _ = writeln!(
            s,
            "add chain inet {TABLE} {chain} {{ type filter hook {hook} priority filter; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain inet {TABLE} {chain}");
        for (set, ipv4, _) in sets(spec) {
            let _ = writeln!(
                s,
                "add rule inet {TABLE} {chain} {}",
                rule(spec, ipv4, &set, hook == "forward")
            );
        }
    }
    s
}

/// One burst as an nft script: consecutive commands of one kind and set share a statement.
/// An unban adds the element before deleting it, so a kernel timeout that already removed it
/// cannot fail the transaction (nft 1.0.6 has no `destroy element`).
pub(crate) fn batch_script(spec: &FirewallSpec, batch: &[&ActionCommand], now: Instant) -> String {
    let mut script = String::new();
    let mut i = 0;
    while i < batch.len() {
        let set = set_for(spec, batch[i].target());
        let ban = matches!(batch[i], ActionCommand::Ban(_));
        let mut j = i;
        let mut elements = Vec::new();
        while j < batch.len()
            && set_for(spec, batch[j].target()) == set
            && matches!(batch[j], ActionCommand::Ban(_)) == ban
        {
            elements.push(match batch[j] {
                ActionCommand::Ban(order) => ban_element(order, now),
                ActionCommand::Unban(target) => element_text(*target),
            });
            j += 1;
        }
        let list = elements.join(", ");
        if !ban {
            let _ = writeln!(script, "add element inet {TABLE} {set} {{ {list} }}");
        }
        let verb = if ban { "add" } else { "delete" };
        let _ = writeln!(script, "{verb} element inet {TABLE} {set} {{ {list} }}");
        i = j;
    }
    script
}

fn ban_element(order: &BanOrder, now: Instant) -> String {
    let text = element_text(order.target);
    match order.remaining(now) {
        Some(left) => format!("{text} timeout {}ms", left.as_millis()),
        None => text,
    }
}

impl Action for NftablesAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Nftables
    }

    fn start(&mut self) -> Result<(), ActionError> {
        let script = start_script(&self.spec);
        if let Err(error) = nft(&["-f", "-"], Some(script.as_bytes())) {
            // A set left in the kernel (keep_on_stop, a crash) whose type or flags this config
            // changed (`ipv4_prefix` makes a set of networks an interval set) cannot be added
            // again ("File exists"), and every later burst would be refused by it. The jail's
            // objects come from its config and its bans from the state: remove them and make
            // them again; the reconcile after start adds the restored bans back.
            tracing::warn!(name = %self.spec.name, %error, "the jail's nftables sets and chains do not match its config; they are made again");
            {
                let _guard = TABLE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                self.remove_ours().map_err(|_| error.clone())?;
            }
            nft(&["-f", "-"], Some(script.as_bytes()))?;
        }
        if self.lib.is_none() {
            self.lib = super::libnft::Nft::open();
            let how = if self.lib.is_some() {
                "libnftables in process"
            } else {
                "the nft command"
            };
            tracing::info!(name = %self.spec.name, "nftables bans go through {how}");
        }
        Ok(())
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        super::apply_one(self, ActionCommand::Ban(order.clone()))
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        super::apply_one(self, ActionCommand::Unban(target))
    }

    fn apply(&mut self, batch: &[ActionCommand]) -> Result<(), BatchError> {
        let commands: Vec<&ActionCommand> = batch.iter().collect();
        let script = batch_script(&self.spec, &commands, Instant::now());
        // The transaction is all or nothing.
        self.transaction(&script).map_err(|error| BatchError {
            pending: (0..batch.len()).collect(),
            error,
            refused: Vec::new(),
        })
    }

    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        let mut all = Vec::new();
        for (set, ..) in sets(&self.spec) {
            all.extend(self.list_set(&set)?);
        }
        Ok(Some(all))
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        if self.spec.keep_on_stop {
            tracing::info!(name = %self.spec.name, "keep_on_stop: nftables bans stay until their timeouts");
            return Ok(());
        }
        // A poisoned lock only means another jail panicked mid-stop; the table check below
        // reads the kernel afresh, so going on is safe.
        let _guard = TABLE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.remove_ours()
    }
}

impl NftablesAction {
    /// Deletes this jail's chains and sets from the kernel (the whole table when nothing else
    /// is in it). The caller holds [`TABLE_LOCK`].
    fn remove_ours(&self) -> Result<(), ActionError> {
        // -t: terse, without set elements, which may be 100k.
        let listing = match nft(&["-j", "-t", "list", "table", "inet", TABLE], None) {
            Ok(out) => out,
            // No table: nothing of ours is left.
            Err(ActionError(text)) if text.contains("No such file or directory") => return Ok(()),
            Err(e) => return Err(e),
        };
        let json: Value = serde_json::from_slice(&listing)
            .map_err(|e| ActionError::from_display("nft -j list table", e))?;
        // Every object the jail makes under any config (a set an earlier config made, such as
        // `-v4-net` before `ipv4_prefix` turned the main set into an interval set, is ours too).
        let name = &self.spec.name;
        let mut ours: Vec<(&str, String)> = vec![
            ("chain", name.clone()),
            ("chain", format!("{name}-forward")),
        ];
        for ipv4 in [true, false] {
            ours.push(("set", set_name(name, ipv4)));
            ours.push(("set", net_set_name(name, ipv4)));
        }
        let mut present = Vec::new();
        let mut others = 0;
        for item in json["nftables"].as_array().into_iter().flatten() {
            for kind in [
                "chain",
                "set",
                "map",
                "flowtable",
                "counter",
                "quota",
                "limit",
            ] {
                if let Some(name) = item[kind]["name"].as_str() {
                    match ours.iter().find(|(k, n)| *k == kind && n == name) {
                        Some(object) => present.push(object.clone()),
                        None => others += 1,
                    }
                }
            }
        }
        let script = if others == 0 {
            format!("delete table inet {TABLE}\n")
        } else {
            // The chain goes first: its rules reference the sets.
            present.sort_by_key(|(kind, _)| *kind != "chain");
            present
                .iter()
                .map(|(kind, name)| format!("delete {kind} inet {TABLE} {name}\n"))
                .collect()
        };
        if !script.is_empty() {
            nft(&["-f", "-"], Some(script.as_bytes()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ports: &[&str], protocol: Protocol) -> FirewallSpec {
        crate::action::test_spec(ports, protocol, true)
    }

    #[test]
    fn rules_follow_ports_and_protocol() {
        assert_eq!(
            rule(&spec(&["22"], Protocol::Tcp), true, "sshd-v4", false),
            "tcp dport { 22 } ip saddr @sshd-v4 drop"
        );
        assert_eq!(
            rule(
                &spec(&["25", "1000:2000"], Protocol::All),
                false,
                "sshd-v6",
                false
            ),
            "meta l4proto { tcp, udp } th dport { 25, 1000-2000 } ip6 saddr @sshd-v6 drop"
        );
        assert_eq!(
            rule(&spec(&[], Protocol::All), true, "sshd-v4", false),
            "ip saddr @sshd-v4 drop"
        );
        let start = start_script(&spec(&[], Protocol::Udp));
        assert!(start.contains("add set inet jailsink sshd-v4 { type ipv4_addr; flags timeout; }"));
        assert!(start
            .contains("add set inet jailsink sshd-v6 { type ipv6_addr; flags timeout,interval; }"));
        assert!(start.contains("meta l4proto udp ip saddr @sshd-v4 drop"));
        assert!(start.contains(
            "add set inet jailsink sshd-v4-net { type ipv4_addr; flags timeout,interval; }"
        ));
        assert!(start.contains("meta l4proto udp ip saddr @sshd-v4-net drop"));
        assert!(
            !start.contains("sshd-v6-net"),
            "the v6 set holds networks already"
        );
        assert!(!start.contains("forward"), "{start}");
        let docker = FirewallSpec {
            hooks: vec!["input".into(), "forward".into()],
            ..spec(&["8080"], Protocol::Tcp)
        };
        let start = start_script(&docker);
        assert!(start.contains(
            "add chain inet jailsink sshd-forward { type filter hook forward priority filter; policy accept; }"
        ), "{start}");
        assert!(start.contains(
            "add rule inet jailsink sshd-forward meta l4proto tcp ct original proto-dst { 8080 } ip saddr @sshd-v4 drop"
        ), "{start}");
        assert!(
            start.contains("add rule inet jailsink sshd tcp dport { 8080 } ip saddr @sshd-v4 drop")
        );
    }

    #[test]
    fn a_burst_is_grouped_by_kind_and_family() {
        let now = Instant::now();
        let ban = |t: &str, secs: Option<u64>| {
            ActionCommand::Ban(BanOrder {
                target: t.parse().unwrap(),
                failures: 3,
                bantime: secs.map(Duration::from_secs),
                decided_at: now,
                from_state: false,
                evidence: Default::default(),
            })
        };
        let cmds = [
            ban("192.0.2.1/32", Some(600)),
            ban("192.0.2.2/32", None),
            ban("2001:db8::/64", Some(60)),
            ban("198.51.100.0/24", None),
            ActionCommand::Unban("192.0.2.3/32".parse().unwrap()),
        ];
        let refs: Vec<&ActionCommand> = cmds.iter().collect();
        assert_eq!(
            batch_script(&spec(&[], Protocol::All), &refs, now),
            "add element inet jailsink sshd-v4 { 192.0.2.1 timeout 600000ms, 192.0.2.2 }\n\
             add element inet jailsink sshd-v6 { 2001:db8::/64 timeout 60000ms }\n\
             add element inet jailsink sshd-v4-net { 198.51.100.0/24 }\n\
             add element inet jailsink sshd-v4 { 192.0.2.3 }\n\
             delete element inet jailsink sshd-v4 { 192.0.2.3 }\n"
        );
    }

    #[test]
    fn listed_elements_are_read_in_every_shape() {
        let json: Value = serde_json::from_str(
            r#"[{"elem": {"val": "192.0.2.1", "timeout": 3, "expires": 2}},
                {"prefix": {"addr": "198.51.100.0", "len": 24}},
                {"elem": {"val": {"prefix": {"addr": "2001:db8::", "len": 64}}, "timeout": 9}},
                "203.0.113.7",
                {"range": ["192.0.2.5", "192.0.2.9"]}]"#,
        )
        .unwrap();
        let got: Vec<String> = json
            .as_array()
            .unwrap()
            .iter()
            .filter_map(json_element)
            .map(element_text)
            .collect();
        assert_eq!(
            got,
            [
                "192.0.2.1",
                "198.51.100.0/24",
                "2001:db8::/64",
                "203.0.113.7"
            ]
        );
    }
}
