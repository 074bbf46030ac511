//! The log action: a dry run that only says what a firewall would have done.

use std::net::IpAddr;

use super::{Action, ActionError, BanOrder};

/// Logs bans and unbans instead of applying them.
pub struct LogAction {
    jail: String,
}

impl LogAction {
    /// A log action for `jail`.
    pub fn new(jail: &str) -> Self {
        LogAction {
            jail: jail.to_string(),
        }
    }
}

impl Action for LogAction {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn start(&mut self) -> Result<(), ActionError> {
        Ok(())
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        tracing::info!(jail = %self.jail, ip = %order.ip, failures = order.failures, action = "log", "would ban {}", order.ip);
        Ok(())
    }

    fn unban(&mut self, ip: IpAddr) -> Result<(), ActionError> {
        tracing::info!(jail = %self.jail, ip = %ip, action = "log", "would unban {ip}");
        Ok(())
    }

    fn stop(&mut self) -> Result<(), ActionError> {
        Ok(())
    }
}
