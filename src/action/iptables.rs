//! The iptables action (crate `iptables`): one chain `jailsink-<name>` per jail and family,
//! jumped to from INPUT for the jail's ports and protocol, holding one DROP/REJECT per address.
//! IPv6 addresses go through ip6tables. Start is idempotent (a chain left by a crash is kept
//! for the runner to reconcile through `list`); stop removes all it added.

use ipnetwork::IpNetwork;
use iptables::IPTables;

use super::{Action, ActionError, ActionKind, BanOrder, BlockType, FirewallSpec, Protocol};

const TABLE: &str = "filter";
const HOOK: &str = "INPUT";

/// One family's tool, made on first use so a host without ip6tables still bans IPv4.
struct Family {
    tool: Option<IPTables>,
    ipv6: bool,
}

impl Family {
    fn tool(&mut self) -> Result<&IPTables, ActionError> {
        if self.tool.is_none() {
            let made = iptables::new(self.ipv6).map_err(|e| {
                ActionError::from_display(if self.ipv6 { "ip6tables" } else { "iptables" }, e)
            })?;
            self.tool = Some(made);
        }
        self.tool
            .as_ref()
            .ok_or_else(|| ActionError("iptables tool missing".into()))
    }
}

/// One family's tool for actions that only add rules to INPUT (ipset).
pub(crate) fn tool(ipv6: bool) -> Result<IPTables, ActionError> {
    iptables::new(ipv6)
        .map_err(|e| ActionError::from_display(if ipv6 { "ip6tables" } else { "iptables" }, e))
}

/// Adds `rules` to INPUT unless present (idempotent start).
pub(crate) fn insert_hooks(tool: &IPTables, rules: &[String]) -> Result<(), ActionError> {
    for rule in rules {
        if !tool.exists(TABLE, HOOK, rule).map_err(fail("check hook"))? {
            tool.insert(TABLE, HOOK, rule, 1)
                .map_err(fail("insert hook"))?;
        }
    }
    Ok(())
}

/// Removes every copy of `rules` from INPUT (a no-op for those already gone).
pub(crate) fn delete_hooks(tool: &IPTables, rules: &[String]) -> Result<(), ActionError> {
    for rule in rules {
        if tool.exists(TABLE, HOOK, rule).map_err(fail("check hook"))? {
            tool.delete_all(TABLE, HOOK, rule)
                .map_err(fail("delete hook"))?;
        }
    }
    Ok(())
}

/// Bans with iptables and ip6tables.
pub(crate) struct IptablesAction {
    spec: FirewallSpec,
    chain: String,
    v4: Family,
    v6: Family,
}

impl IptablesAction {
    /// An action for the given settings; nothing touches the kernel until `start`.
    pub(crate) fn new(spec: FirewallSpec) -> Self {
        IptablesAction {
            chain: chain_name(&spec.name),
            spec,
            v4: Family {
                tool: None,
                ipv6: false,
            },
            v6: Family {
                tool: None,
                ipv6: true,
            },
        }
    }

    fn family(&mut self, target: IpNetwork) -> &mut Family {
        if target.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    fn ban_rule(&self, target: IpNetwork) -> String {
        format!("-s {} -j {}", target, verdict(self.spec.blocktype))
    }
}

/// The iptables target of a block type.
pub(crate) fn verdict(blocktype: BlockType) -> &'static str {
    match blocktype {
        BlockType::Drop => "DROP",
        BlockType::Reject => "REJECT",
    }
}

/// The chain of a jail or action name, as SPEC.md names it.
pub(crate) fn chain_name(name: &str) -> String {
    format!("jailsink-{name}")
}

/// The INPUT rules that send the jail's traffic through its chain.
pub(crate) fn hook_rules(spec: &FirewallSpec, chain: &str) -> Vec<String> {
    match_rules(spec, &format!("-j {chain}"))
}

/// INPUT rules matching the jail's ports and protocol, each ending in `tail` (a jump, or an
/// ipset match and verdict): with protocol `all` and ports, one rule for TCP and one for UDP.
pub(crate) fn match_rules(spec: &FirewallSpec, tail: &str) -> Vec<String> {
    let protocols: &[&str] = match spec.protocol {
        Protocol::Tcp => &["tcp"],
        Protocol::Udp => &["udp"],
        Protocol::All if spec.ports.is_empty() => &[""],
        Protocol::All => &["tcp", "udp"],
    };
    protocols
        .iter()
        .map(|p| {
            let mut rule = String::new();
            if !p.is_empty() {
                rule.push_str(&format!("-p {p} "));
            }
            if !spec.ports.is_empty() {
                rule.push_str(&format!("-m multiport --dports {} ", spec.ports.join(",")));
            }
            rule.push_str(tail);
            rule
        })
        .collect()
}

fn fail(what: &str) -> impl Fn(Box<dyn std::error::Error>) -> ActionError + '_ {
    move |e| ActionError::from_display(what, e)
}

fn start_family(family: &mut Family, chain: &str, hooks: &[String]) -> Result<(), ActionError> {
    let tool = family.tool()?;
    // A chain left over from a crash is kept: the runner lists it and removes what should no
    // longer be banned, so restored bans never have a gap.
    if !tool
        .chain_exists(TABLE, chain)
        .map_err(fail("list chain"))?
    {
        tool.new_chain(TABLE, chain).map_err(fail("create chain"))?;
    }
    insert_hooks(tool, hooks)
}

/// The bans in a chain listing (`-A chain -s 192.0.2.1/32 -j DROP`), each with its verdict.
fn parse_bans(lines: &[String]) -> Vec<(IpNetwork, String)> {
    lines
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
            };
            let source = at("-s")?.parse().ok()?;
            Some((source, at("-j")?.to_string()))
        })
        .collect()
}

fn list_family(
    family: &mut Family,
    chain: &str,
    blocktype: BlockType,
) -> Result<Vec<IpNetwork>, ActionError> {
    let tool = family.tool()?;
    if !tool
        .chain_exists(TABLE, chain)
        .map_err(fail("list chain"))?
    {
        return Ok(Vec::new());
    }
    let lines = tool.list(TABLE, chain).map_err(fail("list chain"))?;
    let mut out = Vec::new();
    for (source, target) in parse_bans(&lines) {
        if target == verdict(blocktype) {
            out.push(source);
        } else {
            // The blocktype changed since that rule was made: drop it, reconcile re-adds it.
            let rule = format!("-s {source} -j {target}");
            tool.delete_all(TABLE, chain, &rule)
                .map_err(fail("delete ban"))?;
        }
    }
    Ok(out)
}

fn stop_family(family: &mut Family, chain: &str, hooks: &[String]) -> Result<(), ActionError> {
    let tool = family.tool()?;
    delete_hooks(tool, hooks)?;
    if tool
        .chain_exists(TABLE, chain)
        .map_err(fail("list chain"))?
    {
        tool.flush_chain(TABLE, chain)
            .map_err(fail("flush chain"))?;
        tool.delete_chain(TABLE, chain)
            .map_err(fail("delete chain"))?;
    }
    Ok(())
}

impl Action for IptablesAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Iptables
    }

    fn start(&mut self) -> Result<(), ActionError> {
        let hooks = hook_rules(&self.spec, &self.chain);
        let v4 = start_family(&mut self.v4, &self.chain, &hooks);
        let v6 = start_family(&mut self.v6, &self.chain, &hooks);
        v4.and(v6)
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        let rule = self.ban_rule(order.target);
        let chain = self.chain.clone();
        let tool = self.family(order.target).tool()?;
        if !tool
            .exists(TABLE, &chain, &rule)
            .map_err(fail("check ban"))?
        {
            tool.insert(TABLE, &chain, &rule, 1)
                .map_err(fail("insert ban"))?;
        }
        Ok(())
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        let rule = self.ban_rule(target);
        let chain = self.chain.clone();
        let tool = self.family(target).tool()?;
        if tool
            .exists(TABLE, &chain, &rule)
            .map_err(fail("check ban"))?
        {
            tool.delete_all(TABLE, &chain, &rule)
                .map_err(fail("delete ban"))?;
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        let mut all = list_family(&mut self.v4, &self.chain, self.spec.blocktype)?;
        all.extend(list_family(&mut self.v6, &self.chain, self.spec.blocktype)?);
        Ok(Some(all))
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        let hooks = hook_rules(&self.spec, &self.chain);
        let v4 = stop_family(&mut self.v4, &self.chain, &hooks);
        let v6 = stop_family(&mut self.v6, &self.chain, &hooks);
        v4.and(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ports: &[&str], protocol: Protocol) -> FirewallSpec {
        crate::action::test_spec(ports, protocol, false)
    }

    #[test]
    fn bans_are_read_back_from_a_chain_listing() {
        let lines = [
            "-N jailsink-sshd".to_string(),
            "-A jailsink-sshd -s 192.0.2.0/24 -j DROP".to_string(),
            "-A jailsink-sshd -s 2001:db8::1/128 -j REJECT --reject-with icmp6-port-unreachable"
                .to_string(),
        ];
        assert_eq!(
            parse_bans(&lines),
            [
                ("192.0.2.0/24".parse().unwrap(), "DROP".to_string()),
                ("2001:db8::1/128".parse().unwrap(), "REJECT".to_string())
            ]
        );
    }

    #[test]
    fn hooks_follow_ports_and_protocol() {
        assert_eq!(
            hook_rules(&spec(&["22"], Protocol::Tcp), "jailsink-sshd"),
            ["-p tcp -m multiport --dports 22 -j jailsink-sshd"]
        );
        assert_eq!(
            hook_rules(&spec(&["25", "465"], Protocol::All), "c"),
            [
                "-p tcp -m multiport --dports 25,465 -j c",
                "-p udp -m multiport --dports 25,465 -j c"
            ]
        );
        assert_eq!(hook_rules(&spec(&[], Protocol::All), "c"), ["-j c"]);
        assert_eq!(hook_rules(&spec(&[], Protocol::Udp), "c"), ["-p udp -j c"]);
    }
}
