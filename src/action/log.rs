//! The log action: a dry run that only says what a firewall would have done.

use ipnetwork::IpNetwork;

use super::{Action, ActionError, ActionKind, BanOrder};

/// Logs bans and unbans instead of applying them.
pub(crate) struct LogAction {
    jail: String,
}

impl LogAction {
    /// A log action for `jail`.
    pub(crate) fn new(jail: &str) -> Self {
        LogAction {
            jail: jail.to_string(),
        }
    }
}

impl Action for LogAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Log
    }

    fn start(&mut self) -> Result<(), ActionError> {
        Ok(())
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        tracing::info!(jail = %self.jail, ip = %order.target, failures = order.failures, action = "log", "would ban {}", crate::address::show_target(order.target));
        Ok(())
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        tracing::info!(jail = %self.jail, ip = %target, action = "log", "would unban {}", crate::address::show_target(target));
        Ok(())
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        Ok(())
    }
}
