//! The command action: the operator's own programs as argv templates for start, stop, ban and
//! unban, run without a shell (argv\[0\] may be one, when the operator writes `["sh", "-c", ...]`),
//! each under a timeout that kills it with its process group.
//!
//! Placeholders, replaced inside every argument: `<ip>` (an address, or a network as CIDR),
//! `<jail>`, `<bantime>` (seconds left, -1 permanent), `<failures>`, `<port>` (comma list, empty
//! for all ports) and `<protocol>`. Values are our own (parsed addresses, checked names), so a
//! shell template cannot be injected through them.

use std::collections::HashMap;
use std::time::Instant;

use ipnetwork::IpNetwork;

use super::{element_text, exec, Action, ActionError, ActionKind, BanOrder, CommandSpec, Protocol};

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
        ];
        let argv: Vec<String> = template.iter().map(|arg| fill(arg, &values)).collect();
        exec::run(&argv, None, self.spec.timeout)?;
        Ok(())
    }
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
        self.run(&self.spec.start, None, 0, 0)
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        let bantime = order
            .remaining(Instant::now())
            .map_or(-1, |d| d.as_millis().div_ceil(1000) as i64);
        if self.active.len() < REMEMBERED {
            self.active.insert(order.target, (order.failures, bantime));
        }
        self.run(&self.spec.ban, Some(order.target), order.failures, bantime)
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        let (failures, bantime) = self.active.get(&target).copied().unwrap_or((0, -1));
        self.run(&self.spec.unban, Some(target), failures, bantime)?;
        self.active.remove(&target);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        self.run(&self.spec.stop, None, 0, 0)
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
}
