//! The iptables action (crate `iptables`): one chain `jailsink-<name>` per jail and family,
//! jumped to from INPUT (and any other chain of `chains`, such as Docker's DOCKER-USER) for the
//! jail's ports and protocol, holding one DROP/REJECT per address.
//! IPv6 addresses go through ip6tables. Start is idempotent (a chain left by a crash is kept
//! for the runner to reconcile through `list`); stop removes all it added.
//!
//! Bans and unbans go to the kernel in bursts: one `iptables-restore --noflush` (and one
//! `ip6tables-restore`) per burst, a single transaction instead of a process per ban, so a
//! botnet's 100,000 addresses are applied in seconds. Which rules the chain holds is kept in
//! memory (read back from the chain when unknown), so a burst adds only what is missing and
//! deletes only what is there; a restore that fails drops that knowledge and is retried once
//! against a fresh listing.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use ipnetwork::IpNetwork;
use iptables::IPTables;

use super::exec;
use super::{
    Action, ActionCommand, ActionError, ActionKind, BanOrder, BatchError, BlockType, FirewallSpec,
    Protocol,
};

const TABLE: &str = "filter";
/// The chain of local delivery, hooked when `chains` is not set.
const INPUT: &str = "INPUT";
/// Chains the kernel has; any other chain of `chains` is created at start if missing.
const BUILTIN: &[&str] = &["INPUT", "FORWARD", "OUTPUT"];

/// One rule to add to a chain that sees the jail's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hook {
    /// INPUT, FORWARD, DOCKER-USER...
    pub chain: String,
    /// The rule, without the chain.
    pub rule: String,
}

/// A whole burst's restore may take this long before it is killed and retried.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most copies of one rule [`delete_every_copy`] removes (a bound, not a count ever seen).
const MAX_COPIES: usize = 1000;
/// Seconds an iptables command waits for the xtables lock before it fails (`-w`).
const LOCK_WAIT: &str = "10";
/// An iptables command (start, list, stop) may take this long before it is killed: listing a
/// chain of 100,000 bans takes 10-17 s with the nf_tables backend.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// One family's tool, made on first use so a host without ip6tables still bans IPv4.
struct Family {
    tool: Option<IPTables>,
    ipv6: bool,
    /// The bans the chain holds, as far as we know; None until read back (or after a failure).
    present: Option<HashSet<IpNetwork>>,
}

impl Family {
    fn new(ipv6: bool) -> Family {
        Family {
            tool: None,
            ipv6,
            present: None,
        }
    }

    /// `iptables-restore` or `ip6tables-restore`.
    fn restore_program(&self) -> &'static str {
        if self.ipv6 {
            "ip6tables-restore"
        } else {
            "iptables-restore"
        }
    }

    fn tool(&mut self) -> Result<&IPTables, ActionError> {
        if self.tool.is_none() {
            self.tool = Some(tool(self.ipv6)?);
        }
        self.tool
            .as_ref()
            .ok_or_else(|| ActionError("iptables tool missing".into()))
    }
}

/// One family's tool for actions that only add rules to INPUT (ipset): the crate finds the
/// command and what it supports. Every command is then run by [`run`], with a deadline: the
/// crate's own calls have none, and iptables-legacy waits for the xtables lock for ever (with a
/// bare `--wait`, and without one), so one stuck holder of the lock would stall the runner, then
/// the state writer, then every jail.
pub(crate) fn tool(ipv6: bool) -> Result<IPTables, ActionError> {
    iptables::new(ipv6)
        .map_err(|e| ActionError::from_display(if ipv6 { "ip6tables" } else { "iptables" }, e))
}

/// Runs `tool -w -t filter ARGS`: whether it succeeded, its stdout and its stderr.
///
/// With the nf_tables backend any command that reads a chain (`-L`, `-S`, `-C` of a rule that
/// jumps to it) translates every rule of it back: 10–17 s for a chain of 100,000 bans on this
/// 2-core machine under load. So nothing on the start, list and stop paths reads our ban chain
/// except the one listing that reconciling needs; existence is asked with `-N`/`-F`, which
/// answer at once, and hooks are found in their own short chains' `-S`.
///
/// The xtables lock (iptables-legacy) is waited for at most [`LOCK_WAIT`], and the whole command
/// is killed after [`COMMAND_TIMEOUT`], so a held lock or a hung command is an error the runner
/// retries and counts, never a runner stuck for good.
fn run(tool: &IPTables, args: &[&str]) -> Result<(bool, String, String), ActionError> {
    run_waiting(tool, LOCK_WAIT, args)
}

/// [`run`] with the lock waited for `lock_wait` seconds.
fn run_waiting(
    tool: &IPTables,
    lock_wait: &str,
    args: &[&str],
) -> Result<(bool, String, String), ActionError> {
    let mut argv: Vec<String> = [tool.cmd, "-w", lock_wait, "-t", TABLE]
        .map(String::from)
        .into();
    argv.extend(args.iter().map(|a| a.to_string()));
    match exec::run(&argv, None, COMMAND_TIMEOUT) {
        Ok(stdout) => Ok((
            true,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::new(),
        )),
        Err(exec::ExecError::Failed { stderr, .. }) => Ok((false, String::new(), stderr)),
        Err(error) => Err(ActionError::from(error)),
    }
}

/// A rule's words as iptables takes them (the rules made here hold no quoted words).
fn words(rule: &str) -> Vec<&str> {
    rule.split_whitespace().collect()
}

/// `Ok` if [`run`]'s command succeeded, else an error saying `what` failed and why.
fn succeeded((ok, _, stderr): (bool, String, String), what: &str) -> Result<(), ActionError> {
    if ok {
        Ok(())
    } else {
        Err(ActionError(format!("{what}: {}", stderr.trim())))
    }
}

/// Whether `chain` holds `rule` (`-C`; any refusal is "no", as the kernel says for a rule it
/// cannot match).
fn rule_exists(tool: &IPTables, chain: &str, rule: &str) -> Result<bool, ActionError> {
    let args = [&["-C", chain][..], &words(rule)].concat();
    Ok(run(tool, &args)?.0)
}

/// Deletes `rule` from `chain` as many times as it is there (at most [`MAX_COPIES`]).
fn delete_every_copy(
    tool: &IPTables,
    chain: &str,
    rule: &str,
    what: &str,
) -> Result<(), ActionError> {
    let args = [&["-D", chain][..], &words(rule)].concat();
    for _ in 0..MAX_COPIES {
        if !rule_exists(tool, chain, rule)? {
            return Ok(());
        }
        succeeded(run(tool, &args)?, what)?;
    }
    Ok(())
}

/// Whether a family's failure means its tool or kernel support is missing (not a passing
/// refusal such as a held lock): no ip6tables program, or no ip6tables tables in the kernel.
pub(crate) fn unsupported(error: &ActionError) -> bool {
    let text = &error.0;
    text.starts_with("ip6tables: ")
        || text.starts_with("iptables: ")
        || text.contains("Table does not exist")
        || text.contains("insmod")
}

/// iptables' answer when a chain is not there (legacy and nf_tables alike).
fn missing(stderr: &str) -> bool {
    stderr.contains("No chain/target/match by that name") || stderr.contains("does not exist")
}

/// Whether `chain` exists. Not the crate's `chain_exists`: its `-L` without `-n` looks every
/// banned address up in DNS, which took 30 s at start and at stop with 100,000 bans. Only for
/// hook chains (DOCKER-USER), which are short, and chains a listing could not read.
fn chain_exists(tool: &IPTables, chain: &str) -> Result<bool, ActionError> {
    Ok(run(tool, &["-n", "-L", chain])?.0)
}

/// Creates `chain` unless it exists; `-N` answers either way without reading the chain.
fn ensure_chain(tool: &IPTables, chain: &str) -> Result<(), ActionError> {
    let (ok, _, stderr) = run(tool, &["-N", chain])?;
    if ok || stderr.contains("already exists") {
        Ok(())
    } else {
        Err(ActionError(format!(
            "create chain {chain}: {}",
            stderr.trim()
        )))
    }
}

/// Whether `chain` exists (the kernel's own always do).
fn chain_present(tool: &IPTables, chain: &str) -> Result<bool, ActionError> {
    if BUILTIN.contains(&chain) {
        return Ok(true);
    }
    chain_exists(tool, chain)
}

/// The 1-based positions of `rule` in `chain` (its `-S` lines), highest first; None when the
/// text is not found, since iptables may print a rule differently from how it was written.
fn hook_positions(tool: &IPTables, chain: &str, rule: &str) -> Result<Vec<usize>, ActionError> {
    let (ok, stdout, stderr) = run(tool, &["-S", chain])?;
    if !ok {
        return Err(ActionError(format!("list {chain}: {}", stderr.trim())));
    }
    let wanted = format!("-A {chain} {rule}");
    let mut at: Vec<usize> = stdout
        .lines()
        .filter(|l| l.starts_with("-A "))
        .enumerate()
        .filter(|(_, l)| l.trim_end() == wanted)
        .map(|(i, _)| i + 1)
        .collect();
    at.reverse();
    Ok(at)
}

/// Adds each hook rule at the top of its chain unless present (idempotent start). A chain the
/// kernel lacks (DOCKER-USER without Docker) is created, empty but for our rules: Docker jumps to
/// it from FORWARD once it starts, and leaves it as it finds it.
pub(crate) fn insert_hooks(tool: &IPTables, hooks: &[Hook]) -> Result<(), ActionError> {
    for Hook { chain, rule } in hooks {
        if !chain_present(tool, chain)? {
            ensure_chain(tool, chain)?;
        }
        // Found as written: no `-C`, which reads the whole ban chain the rule jumps to.
        if !hook_positions(tool, chain, rule)?.is_empty() {
            continue;
        }
        if !rule_exists(tool, chain, rule)? {
            let args = [&["-I", chain.as_str(), "1"][..], &words(rule)].concat();
            succeeded(run(tool, &args)?, "insert hook")?;
        }
    }
    Ok(())
}

/// Removes every copy of each hook rule (a no-op for those already gone, or whose chain is).
pub(crate) fn delete_hooks(tool: &IPTables, hooks: &[Hook]) -> Result<(), ActionError> {
    for Hook { chain, rule } in hooks {
        if !chain_present(tool, chain)? {
            continue;
        }
        // By position where the text is found (no rule matching against the ban chain).
        let found = hook_positions(tool, chain, rule)?;
        for at in &found {
            let (ok, _, stderr) = run(tool, &["-D", chain, &at.to_string()])?;
            if !ok {
                return Err(ActionError(format!("delete hook: {}", stderr.trim())));
            }
        }
        if found.is_empty() {
            delete_every_copy(tool, chain, rule, "delete hook")?;
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
    /// Start found ip6tables unusable (logged once).
    v6_unsupported: bool,
}

impl IptablesAction {
    /// An action for the given settings; nothing touches the kernel until `start`.
    pub(crate) fn new(spec: FirewallSpec) -> Self {
        IptablesAction {
            chain: chain_name(&spec.name),
            spec,
            v4: Family::new(false),
            v6: Family::new(true),
            v6_unsupported: false,
        }
    }

    /// Applies one family's share of a burst as one restore transaction: the bans the chain
    /// lacks are appended, the unbans it holds are deleted, in the burst's order.
    fn apply_family(&mut self, ipv6: bool, batch: &[&ActionCommand]) -> Result<(), ActionError> {
        let chain = self.chain.clone();
        let blocktype = self.spec.blocktype;
        let family = if ipv6 { &mut self.v6 } else { &mut self.v4 };
        let mut last_error = None;
        // A failed restore may mean the chain changed behind our back: read it again, once.
        for _ in 0..2 {
            if family.present.is_none() {
                let listed = list_family(family, &chain, blocktype)?;
                family.present = Some(listed.into_iter().collect());
            }
            let present = family.present.get_or_insert_with(HashSet::new);
            let mut after = present.clone();
            let Some(script) = restore_script(&chain, blocktype, batch, &mut after) else {
                return Ok(());
            };
            let argv: Vec<String> = [family.restore_program(), "--noflush"]
                .map(String::from)
                .into();
            match exec::run(&argv, Some(script.as_bytes()), RESTORE_TIMEOUT) {
                Ok(_) => {
                    family.present = Some(after);
                    return Ok(());
                }
                Err(error) => {
                    family.present = None;
                    last_error = Some(ActionError::from(error));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ActionError("restore failed".into())))
    }
}

/// The `iptables-restore --noflush` input for `batch` against the chain's bans `present`
/// (updated to what the chain will hold); None when the chain already is as the burst wants.
fn restore_script(
    chain: &str,
    blocktype: BlockType,
    batch: &[&ActionCommand],
    present: &mut HashSet<IpNetwork>,
) -> Option<String> {
    let mut script = String::from("*filter\n");
    let mut changes = 0;
    for command in batch {
        // Writing to a String cannot fail.
        let _ = match command {
            ActionCommand::Ban(order) if present.insert(order.target) => writeln!(
                script,
                "-A {chain} -s {} -j {}",
                order.target,
                verdict(blocktype)
            ),
            ActionCommand::Unban(target) if present.remove(target) => {
                writeln!(script, "-D {chain} -s {target} -j {}", verdict(blocktype))
            }
            _ => continue,
        };
        changes += 1;
    }
    script.push_str("COMMIT\n");
    (changes > 0).then_some(script)
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

/// The rules that send the jail's traffic through its chain, in every chain of `chains`.
pub(crate) fn hook_rules(spec: &FirewallSpec, chain: &str) -> Vec<Hook> {
    match_rules(spec, &format!("-j {chain}"))
}

/// Rules matching the jail's ports and protocol in each chain of `chains` (INPUT when none),
/// each ending in `tail` (a jump, or an ipset match and verdict): with protocol `all` and
/// ports, one rule for TCP and one for UDP. Outside INPUT a packet has been through DNAT, so
/// ports are matched on the destination the client asked for (`--ctorigdstport`, one rule per
/// port): a ban of port 8080 guards the container published on 8080 whatever its own port.
pub(crate) fn match_rules(spec: &FirewallSpec, tail: &str) -> Vec<Hook> {
    let protocols: &[&str] = match spec.protocol {
        Protocol::Tcp => &["tcp"],
        Protocol::Udp => &["udp"],
        Protocol::All if spec.ports.is_empty() => &[""],
        Protocol::All => &["tcp", "udp"],
    };
    let chains: Vec<&str> = if spec.hooks.is_empty() {
        vec![INPUT]
    } else {
        spec.hooks.iter().map(String::as_str).collect()
    };
    let mut hooks = Vec::new();
    for chain in chains {
        for p in protocols {
            let proto = if p.is_empty() {
                String::new()
            } else {
                format!("-p {p} ")
            };
            let ports: Vec<String> = match (spec.ports.is_empty(), chain == INPUT) {
                (true, _) => vec![String::new()],
                (false, true) => vec![format!("-m multiport --dports {} ", spec.ports.join(","))],
                (false, false) => spec
                    .ports
                    .iter()
                    .map(|port| format!("-m conntrack --ctorigdstport {port} "))
                    .collect(),
            };
            for port in ports {
                hooks.push(Hook {
                    chain: chain.to_string(),
                    rule: format!("{proto}{port}{tail}"),
                });
            }
        }
    }
    hooks
}

fn start_family(family: &mut Family, chain: &str, hooks: &[Hook]) -> Result<(), ActionError> {
    let tool = family.tool()?;
    // A chain left over from a crash is kept: the runner lists it and removes what should no
    // longer be banned, so restored bans never have a gap.
    ensure_chain(tool, chain)?;
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
    let (ok, stdout, stderr) = run(tool, &["-S", chain])?;
    if !ok {
        // A missing chain (iptables-nft 1.8.9 calls it "incompatible" here): -L tells, fast.
        if missing(&stderr) || !chain_exists(tool, chain)? {
            return Ok(Vec::new());
        }
        return Err(ActionError(format!("list chain: {}", stderr.trim())));
    }
    let lines: Vec<String> = stdout.lines().map(String::from).collect();
    let mut out = Vec::new();
    for (source, target) in parse_bans(&lines) {
        if target == verdict(blocktype) {
            out.push(source);
        } else {
            // The blocktype changed since that rule was made: drop it, reconcile re-adds it.
            let rule = format!("-s {source} -j {target}");
            delete_every_copy(tool, chain, &rule, "delete ban")?;
        }
    }
    Ok(out)
}

fn stop_family(family: &mut Family, chain: &str, hooks: &[Hook]) -> Result<(), ActionError> {
    let tool = family.tool()?;
    delete_hooks(tool, hooks)?;
    // `-F` says at once whether the chain is there; no listing first.
    let (flushed, _, stderr) = run(tool, &["-F", chain])?;
    if !flushed {
        if missing(&stderr) {
            return Ok(());
        }
        return Err(ActionError(format!("flush chain: {}", stderr.trim())));
    }
    succeeded(run(tool, &["-X", chain])?, "delete chain")
}

impl Action for IptablesAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Iptables
    }

    /// Creates the chain and hooks of both families. A host without ip6tables (or a kernel
    /// without its tables) still starts IPv4: that is logged once, and every IPv6 ban then
    /// fails and is counted on its own.
    fn start(&mut self) -> Result<(), ActionError> {
        let hooks = hook_rules(&self.spec, &self.chain);
        let v4 = start_family(&mut self.v4, &self.chain, &hooks);
        let v6 = start_family(&mut self.v6, &self.chain, &hooks);
        match (v4, v6) {
            (Ok(()), Err(error)) if unsupported(&error) => {
                if !self.v6_unsupported {
                    self.v6_unsupported = true;
                    tracing::error!(action = %self.spec.name, %error, "ip6tables is not usable: IPv4 bans go on, each IPv6 ban fails and is counted");
                }
                Ok(())
            }
            (v4, v6) => v4.and(v6),
        }
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        super::apply_one(self, ActionCommand::Ban(order.clone()))
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        super::apply_one(self, ActionCommand::Unban(target))
    }

    fn apply(&mut self, batch: &[ActionCommand]) -> Result<(), BatchError> {
        let mut pending = Vec::new();
        let mut refused = Vec::new();
        let mut first = None;
        for ipv6 in [false, true] {
            let indices: Vec<usize> = (0..batch.len())
                .filter(|&i| batch[i].target().is_ipv6() == ipv6)
                .collect();
            if indices.is_empty() {
                continue;
            }
            if ipv6 && self.v6_unsupported {
                // Start found no ip6tables: refused for good, not retried.
                refused = indices;
                first.get_or_insert(ActionError("ip6tables is not usable".into()));
                continue;
            }
            let commands: Vec<&ActionCommand> = indices.iter().map(|&i| &batch[i]).collect();
            if let Err(error) = self.apply_family(ipv6, &commands) {
                pending.extend(indices);
                first.get_or_insert(error);
            }
        }
        match first {
            None => Ok(()),
            Some(error) => {
                pending.sort_unstable();
                Err(BatchError {
                    pending,
                    error,
                    refused,
                })
            }
        }
    }

    /// Both families' bans. One family that cannot be listed (no ip6tables) is logged and
    /// left out: the other is reconciled as usual, and the restored bans of the failed one are
    /// tried (and fail, counted, if it stays unusable). Only when neither lists is it an error.
    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        let mut all = Vec::new();
        let mut failed = Vec::new();
        for family in [&mut self.v4, &mut self.v6] {
            match list_family(family, &self.chain, self.spec.blocktype) {
                Ok(listed) => {
                    family.present = Some(listed.iter().copied().collect());
                    all.extend(listed);
                }
                Err(error) => {
                    family.present = None;
                    let tool = if family.ipv6 { "ip6tables" } else { "iptables" };
                    tracing::error!(action = %self.spec.name, tool, %error, "cannot list the chain; the other family is reconciled, this one's bans are applied as they come");
                    failed.push(error);
                }
            }
        }
        match failed.len() {
            2 => Err(failed.swap_remove(0)),
            _ => Ok(Some(all)),
        }
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        let hooks = hook_rules(&self.spec, &self.chain);
        let v4 = stop_family(&mut self.v4, &self.chain, &hooks);
        let v6 = stop_family(&mut self.v6, &self.chain, &hooks);
        match (v4, v6) {
            // No ip6tables: nothing was made there, nothing is left to remove.
            (Ok(()), Err(error)) if unsupported(&error) => Ok(()),
            (v4, v6) => v4.and(v6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_xtables_lock_fails_a_command_instead_of_stalling_the_runner() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (iptables-legacy and /run/xtables.lock)"
        );
        // Real iptables-legacy, the backend that takes the lock; it only reads here, and while
        // the lock is held it changes nothing.
        let legacy = IPTables {
            cmd: "iptables-legacy",
            has_check: true,
            has_wait: true,
            is_numeric: true,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/xtables.lock")
            .expect("/run/xtables.lock");
        // SAFETY: flock(2) on a descriptor this test owns; released when `lock` is dropped.
        let held = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(held, 0, "cannot take the xtables lock");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run_waiting(&legacy, "1", &["-n", "-L", "INPUT"]));
        });
        let answer = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the command still waits for the held lock after 60 s");
        drop(lock);
        let (ok, _, stderr) = answer.expect("iptables-legacy ran");
        assert!(!ok, "it listed INPUT although the lock was held");
        assert!(stderr.contains("xtables lock"), "{stderr}");
    }

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
    fn a_burst_adds_only_what_is_missing_and_deletes_only_what_is_there() {
        let order = |t: &str| {
            ActionCommand::Ban(BanOrder {
                target: t.parse().unwrap(),
                failures: 1,
                bantime: None,
                decided_at: std::time::Instant::now(),
                from_state: false,
                evidence: Default::default(),
            })
        };
        let unban = |t: &str| ActionCommand::Unban(t.parse().unwrap());
        let batch = [
            order("192.0.2.1/32"),
            order("192.0.2.2/32"),
            unban("192.0.2.3/32"),
            unban("192.0.2.9/32"),
            order("192.0.2.1/32"),
        ];
        let mut present: HashSet<IpNetwork> = ["192.0.2.2/32", "192.0.2.3/32"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let refs: Vec<&ActionCommand> = batch.iter().collect();
        let script = restore_script("jailsink-sshd", BlockType::Drop, &refs, &mut present);
        assert_eq!(
            script.as_deref(),
            Some(
                "*filter\n-A jailsink-sshd -s 192.0.2.1/32 -j DROP\n-D jailsink-sshd -s 192.0.2.3/32 -j DROP\nCOMMIT\n"
            )
        );
        let mut want: Vec<String> = present.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(want, ["192.0.2.1/32", "192.0.2.2/32"]);
        // Nothing left to change: no restore at all.
        assert_eq!(
            restore_script("jailsink-sshd", BlockType::Drop, &refs[..2], &mut present),
            None
        );
    }

    #[test]
    fn hooks_follow_ports_and_protocol() {
        let rules = |spec: FirewallSpec, chain: &str| -> Vec<String> {
            hook_rules(&spec, chain)
                .into_iter()
                .map(|h| format!("{}: {}", h.chain, h.rule))
                .collect()
        };
        assert_eq!(
            rules(spec(&["22"], Protocol::Tcp), "jailsink-sshd"),
            ["INPUT: -p tcp -m multiport --dports 22 -j jailsink-sshd"]
        );
        assert_eq!(
            rules(spec(&["25", "465"], Protocol::All), "c"),
            [
                "INPUT: -p tcp -m multiport --dports 25,465 -j c",
                "INPUT: -p udp -m multiport --dports 25,465 -j c"
            ]
        );
        assert_eq!(rules(spec(&[], Protocol::All), "c"), ["INPUT: -j c"]);
        assert_eq!(rules(spec(&[], Protocol::Udp), "c"), ["INPUT: -p udp -j c"]);
        let docker = FirewallSpec {
            hooks: vec!["INPUT".into(), "DOCKER-USER".into()],
            ..spec(&["8080", "8443:8444"], Protocol::Tcp)
        };
        assert_eq!(
            rules(docker, "c"),
            [
                "INPUT: -p tcp -m multiport --dports 8080,8443:8444 -j c",
                "DOCKER-USER: -p tcp -m conntrack --ctorigdstport 8080 -j c",
                "DOCKER-USER: -p tcp -m conntrack --ctorigdstport 8443:8444 -j c"
            ]
        );
    }
}
