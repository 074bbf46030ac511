//! The nftables action: table `inet jailsink`, per jail one set per family (`<name>-v4`,
//! `<name>-v6`, element timeouts mirroring bantime) and one base chain `<name>` hooked into input
//! with one rule per family matching the set for the jail's ports and protocol. Each burst of
//! bans and unbans is one `nft -f -` transaction.
//!
//! Sets are plain hash sets when the jail bans single addresses and interval sets only when it
//! bans networks (`ipv4_prefix` / `ipv6_prefix`): nft 1.0 reads every element of an interval
//! set back from the kernel on each change, which makes each ban cost seconds at 100k bans
//! (BENCHMARKS.md), while a hash set's change costs the same at any size.

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

    /// The set holding `target`'s family.
    fn set_of(&self, target: IpNetwork) -> String {
        set_name(&self.spec.name, target.is_ipv4())
    }

    /// Whether `target` fits its set: a network needs an interval set.
    fn fits(&self, target: IpNetwork) -> bool {
        let (full, networks) = if target.is_ipv4() {
            (32, self.spec.v4_networks)
        } else {
            (128, self.spec.v6_networks)
        };
        networks || target.prefix() == full
    }

    fn list_set(&self, ipv4: bool) -> Result<Vec<IpNetwork>, ActionError> {
        let out = nft(
            &[
                "-j",
                "list",
                "set",
                "inet",
                TABLE,
                &set_name(&self.spec.name, ipv4),
            ],
            None,
        )?;
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

/// The rule matching the jail's traffic from one family's set, e.g.
/// `tcp dport { 22 } ip saddr @sshd-v4 drop`.
pub(crate) fn rule(spec: &FirewallSpec, ipv4: bool) -> String {
    let ports: Vec<String> = spec.ports.iter().map(|p| p.replace(':', "-")).collect();
    let ports = ports.join(", ");
    let l4 = match (spec.protocol, ports.is_empty()) {
        (Protocol::Tcp, true) => "meta l4proto tcp ".to_string(),
        (Protocol::Udp, true) => "meta l4proto udp ".to_string(),
        (Protocol::All, true) => String::new(),
        (Protocol::Tcp, false) => format!("tcp dport {{ {ports} }} "),
        (Protocol::Udp, false) => format!("udp dport {{ {ports} }} "),
        (Protocol::All, false) => format!("meta l4proto {{ tcp, udp }} th dport {{ {ports} }} "),
    };
    let (family, set) = if ipv4 { ("ip", "v4") } else { ("ip6", "v6") };
    let verdict = match spec.blocktype {
        BlockType::Drop => "drop",
        BlockType::Reject => "reject",
    };
    format!("{l4}{family} saddr @{}-{set} {verdict}", spec.name)
}

/// The transaction that creates (or, after a keep_on_stop restart, refreshes) the jail's
/// objects; sets keep their elements, the chain's rules are rewritten.
pub fn start_script(spec: &FirewallSpec) -> String {
    let name = &spec.name;
    let mut s = format!("add table inet {TABLE}\n");
    for (ipv4, networks) in [(true, spec.v4_networks), (false, spec.v6_networks)] {
        let kind = if ipv4 { "ipv4_addr" } else { "ipv6_addr" };
        let flags = if networks {
            "timeout,interval"
        } else {
            "timeout"
        };
        let _ = writeln!(
            s,
            "add set inet {TABLE} {} {{ type {kind}; flags {flags}; }}",
            set_name(name, ipv4)
        );
    }
    let _ = writeln!(
        s,
        "add chain inet {TABLE} {name} {{ type filter hook input priority filter; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain inet {TABLE} {name}");
    for ipv4 in [true, false] {
        let _ = writeln!(s, "add rule inet {TABLE} {name} {}", rule(spec, ipv4));
    }
    s
}

/// One burst as an nft script: consecutive commands of one kind and family share a statement.
/// An unban adds the element before deleting it, so a kernel timeout that already removed it
/// cannot fail the transaction (nft 1.0.6 has no `destroy element`).
pub(crate) fn batch_script(name: &str, batch: &[&ActionCommand], now: Instant) -> String {
    let mut script = String::new();
    let mut i = 0;
    while i < batch.len() {
        let ipv4 = batch[i].target().is_ipv4();
        let ban = matches!(batch[i], ActionCommand::Ban(_));
        let mut j = i;
        let mut elements = Vec::new();
        while j < batch.len()
            && batch[j].target().is_ipv4() == ipv4
            && matches!(batch[j], ActionCommand::Ban(_)) == ban
        {
            elements.push(match batch[j] {
                ActionCommand::Ban(order) => ban_element(order, now),
                ActionCommand::Unban(target) => element_text(*target),
            });
            j += 1;
        }
        let set = set_name(name, ipv4);
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
        nft(&["-f", "-"], Some(script.as_bytes()))?;
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
        // A network cannot go into an address set; it fails alone instead of failing the burst.
        let mut misfits = Vec::new();
        let mut fitting = Vec::new();
        let mut fitting_index = Vec::new();
        for (i, command) in batch.iter().enumerate() {
            if self.fits(command.target()) {
                fitting.push(command);
                fitting_index.push(i);
            } else {
                misfits.push(i);
            }
        }
        let misfit_set = misfits.first().map(|&i| self.set_of(batch[i].target()));
        let misfit_error = || {
            ActionError(format!(
                "{} is a network, but {} holds single addresses (the jail's prefix changed?)",
                batch[misfits[0]].target(),
                misfit_set.as_deref().unwrap_or_default()
            ))
        };
        if fitting.is_empty() {
            return match misfits.is_empty() {
                true => Ok(()),
                false => Err(BatchError {
                    error: misfit_error(),
                    pending: misfits,
                }),
            };
        }
        let script = batch_script(&self.spec.name, &fitting, Instant::now());
        match self.transaction(&script) {
            // The transaction is all or nothing.
            Err(error) => {
                let mut pending = fitting_index;
                pending.extend(misfits);
                pending.sort_unstable();
                Err(BatchError { pending, error })
            }
            Ok(_) if misfits.is_empty() => Ok(()),
            Ok(_) => Err(BatchError {
                error: misfit_error(),
                pending: misfits,
            }),
        }
    }

    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        let mut all = self.list_set(true)?;
        all.extend(self.list_set(false)?);
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
        // -t: terse, without set elements, which may be 100k.
        let listing = match nft(&["-j", "-t", "list", "table", "inet", TABLE], None) {
            Ok(out) => out,
            // No table: nothing of ours is left.
            Err(ActionError(text)) if text.contains("No such file or directory") => return Ok(()),
            Err(e) => return Err(e),
        };
        let json: Value = serde_json::from_slice(&listing)
            .map_err(|e| ActionError::from_display("nft -j list table", e))?;
        let ours = [
            ("chain", self.spec.name.clone()),
            ("set", set_name(&self.spec.name, true)),
            ("set", set_name(&self.spec.name, false)),
        ];
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
            rule(&spec(&["22"], Protocol::Tcp), true),
            "tcp dport { 22 } ip saddr @sshd-v4 drop"
        );
        assert_eq!(
            rule(&spec(&["25", "1000:2000"], Protocol::All), false),
            "meta l4proto { tcp, udp } th dport { 25, 1000-2000 } ip6 saddr @sshd-v6 drop"
        );
        assert_eq!(
            rule(&spec(&[], Protocol::All), true),
            "ip saddr @sshd-v4 drop"
        );
        let start = start_script(&spec(&[], Protocol::Udp));
        assert!(start.contains("add set inet jailsink sshd-v4 { type ipv4_addr; flags timeout; }"));
        assert!(start
            .contains("add set inet jailsink sshd-v6 { type ipv6_addr; flags timeout,interval; }"));
        assert!(start.contains("meta l4proto udp ip saddr @sshd-v4 drop"));
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
            })
        };
        let cmds = [
            ban("192.0.2.1/32", Some(600)),
            ban("192.0.2.2/32", None),
            ban("2001:db8::/64", Some(60)),
            ActionCommand::Unban("192.0.2.3/32".parse().unwrap()),
        ];
        let refs: Vec<&ActionCommand> = cmds.iter().collect();
        assert_eq!(
            batch_script("sshd", &refs, now),
            "add element inet jailsink sshd-v4 { 192.0.2.1 timeout 600000ms, 192.0.2.2 }\n\
             add element inet jailsink sshd-v6 { 2001:db8::/64 timeout 60000ms }\n\
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
