//! The command action: the operator's own programs as argv templates for start, stop, ban and
//! unban, run without a shell (argv\[0\] may be one, when the operator writes `["sh", "-c", ...]`),
//! each under a timeout that kills it with its process group.
//!
//! Placeholders, replaced inside every argument: `<ip>` (an address, or a network as CIDR),
//! `<jail>`, `<bantime>` (seconds left, -1 permanent), `<failures>`, `<port>` (comma list, empty
//! for all ports) and `<protocol>`. Values are our own (parsed addresses, checked names), so a
//! shell template cannot be injected through them. The ban template also gets `<hosts>` (the
//! syslog host names the deciding failures came from, comma-separated) and `<matches>` (the
//! deciding lines as `HOST PROGRAM: MESSAGE`, separated by tabs); attackers write those lines,
//! so every character a shell gives a meaning becomes `_` ([`shell_safe`]), quoted or not.

use std::collections::HashMap;
use std::time::Instant;

use ipnetwork::IpNetwork;

use super::{element_text, exec, Action, ActionError, ActionKind, BanOrder, CommandSpec, Protocol};
use crate::evidence::{hosts, shell_safe, Line};

/// Most bans whose failures and bantime are remembered for the unban template; beyond it an
/// unban shows 0 failures and the bantime as -1.
const REMEMBERED: usize = 1_000_000;

/// Runs operator-supplied programs.
pub(crate) struct CommandAction {
    jail: String,
    spec: CommandSpec,
    /// Failures and bantime (seconds, -1 permanent) of active bans, for `<failures>` and
    /// `<bantime>` in the unban template.
    active: HashMap<IpNetwork, (u32, i64)>,
}

impl CommandAction {
    /// An action for `jail`; nothing runs until `start`.
    pub(crate) fn new(jail: &str, spec: CommandSpec) -> Self {
        CommandAction {
            jail: jail.to_string(),
            spec,
            active: HashMap::new(),
        }
    }

    fn run(
        &self,
        template: &[String],
        target: Option<IpNetwork>,
        failures: u32,
        bantime: i64,
        evidence: &[Line],
    ) -> Result<(), ActionError> {
        if template.is_empty() {
            return Ok(());
        }
        let protocol = match self.spec.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::All => "all",
        };
        let values = [
            ("<ip>", target.map(element_text).unwrap_or_default()),
            ("<jail>", self.jail.clone()),
            ("<bantime>", bantime.to_string()),
            ("<failures>", failures.to_string()),
            ("<port>", self.spec.ports.join(",")),
            ("<protocol>", protocol.to_string()),
            ("<hosts>", shell_safe(&hosts(evidence).join(","))),
            ("<matches>", matches(evidence)),
        ];
        let argv: Vec<String> = template.iter().map(|arg| fill(arg, &values)).collect();
        exec::run(&argv, None, self.spec.timeout)?;
        Ok(())
    }
}

/// The deciding lines for `<matches>`: `HOST PROGRAM: MESSAGE` each, shell-safe, tab-separated.
fn matches(evidence: &[Line]) -> String {
    evidence
        .iter()
        .map(|l| {
            shell_safe(&format!(
                "{} {}: {}",
                l.host.as_deref().unwrap_or("-"),
                l.program.as_deref().unwrap_or("-"),
                l.message
            ))
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Replaces every placeholder in one argument.
fn fill(arg: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(arg.to_string(), |text, (key, value)| {
        text.replace(key, value)
    })
}

impl Action for CommandAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Command
    }

    fn start(&mut self) -> Result<(), ActionError> {
        self.run(&self.spec.start, None, 0, 0, &[])
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        let bantime = order
            .remaining(Instant::now())
            .map_or(-1, |d| d.as_millis().div_ceil(1000) as i64);
        if self.active.len() < REMEMBERED {
            self.active.insert(order.target, (order.failures, bantime));
        }
        self.run(
            &self.spec.ban,
            Some(order.target),
            order.failures,
            bantime,
            &order.evidence,
        )
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        let (failures, bantime) = self.active.get(&target).copied().unwrap_or((0, -1));
        self.run(&self.spec.unban, Some(target), failures, bantime, &[])?;
        self.active.remove(&target);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        self.run(&self.spec.stop, None, 0, 0, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_inside_arguments() {
        let values = [
            ("<ip>", "192.0.2.0/24".to_string()),
            ("<jail>", "sshd".to_string()),
        ];
        assert_eq!(
            fill("ban <ip> in <jail> (<ip>)", &values),
            "ban 192.0.2.0/24 in sshd (192.0.2.0/24)"
        );
        assert_eq!(fill("<other>", &values), "<other>");
    }

    #[test]
    fn matches_are_shell_safe_and_tab_separated() {
        let line = |host: &str, message: &str| Line {
            at_ms: 0,
            host: Some(host.into()),
            program: Some("sshd".into()),
            message: message.into(),
            count: 1,
        };
        let evidence = [
            line("web-1", "Invalid user $(reboot) from 192.0.2.1"),
            line("web-2", "Failed password for `id` from 192.0.2.1"),
        ];
        assert_eq!(
            matches(&evidence),
            "web-1 sshd: Invalid user __reboot_ from 192.0.2.1\tweb-2 sshd: Failed password for _id_ from 192.0.2.1"
        );
    }
}
