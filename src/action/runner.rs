//! Runs one jail's actions on a dedicated thread fed by a bounded queue: firewall commands
//! block, and they must never stall ingest or the jail task beyond the queue's depth.

use ipnetwork::IpNetwork;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Action, ActionSpec, BanOrder};
use crate::metrics::{self, JailMetrics};

/// Bans waiting for a slow firewall before the jail task waits too.
pub const QUEUE_DEPTH: usize = 16_384;

/// Work for a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionCommand {
    /// Apply a ban.
    Ban(BanOrder),
    /// Lift a ban.
    Unban(IpNetwork),
}

/// A running runner: its queue and its thread.
pub struct Runner {
    /// The queue; dropping every sender stops the runner, which then calls `stop` on its actions.
    pub queue: mpsc::Sender<ActionCommand>,
    /// Joined at shutdown.
    pub thread: JoinHandle<()>,
}

/// Starts the actions of `jail` on their own thread; returns once each action's `start` has
/// run, so readiness means the firewall hooks are in place.
pub async fn spawn(
    jail: &str,
    specs: &[ActionSpec],
    metrics: JailMetrics,
) -> std::io::Result<Runner> {
    let (queue, commands) = mpsc::channel(QUEUE_DEPTH);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let actions: Vec<Box<dyn Action>> = specs.iter().map(|s| s.build(jail)).collect();
    let jail = jail.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("action-{jail}"))
        .spawn(move || run(jail, actions, commands, metrics, started_tx))?;
    // An error here means the thread died before starting; the join at shutdown reports it.
    let _ = started.await;
    Ok(Runner { queue, thread })
}

fn run(
    jail: String,
    mut actions: Vec<Box<dyn Action>>,
    mut commands: mpsc::Receiver<ActionCommand>,
    metrics: JailMetrics,
    started: tokio::sync::oneshot::Sender<()>,
) {
    let errors: Vec<_> = actions
        .iter()
        .map(|a| metrics::action_errors(&jail, a.kind()))
        .collect();
    for error in &errors {
        error.absolute(0);
    }
    for (action, errors) in actions.iter_mut().zip(&errors) {
        if let Err(error) = action.start() {
            errors.increment(1);
            tracing::error!(jail = %jail, action = action.kind(), %error, "action failed to start");
        }
    }
    let _ = started.send(());
    while let Some(command) = commands.blocking_recv() {
        for (action, errors) in actions.iter_mut().zip(&errors) {
            let (what, result) = match &command {
                ActionCommand::Ban(order) => ("ban", action.ban(order)),
                ActionCommand::Unban(target) => ("unban", action.unban(*target)),
            };
            if let Err(error) = result {
                errors.increment(1);
                tracing::error!(jail = %jail, action = action.kind(), %error, "{what} failed");
            }
        }
        if let ActionCommand::Ban(BanOrder {
            decided_at: Some(at),
            ..
        }) = &command
        {
            metrics
                .ban_latency
                .record(Instant::now().duration_since(*at).as_secs_f64());
        }
    }
    for (action, errors) in actions.iter_mut().zip(&errors) {
        if let Err(error) = action.stop() {
            errors.increment(1);
            tracing::error!(jail = %jail, action = action.kind(), %error, "action failed to stop");
        }
    }
}
