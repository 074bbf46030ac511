//! The fleet's place in the daemon: checked at start, its outbox encoder handed to the state
//! writer, its tasks (publisher, shared windows, follower) started and stopped with the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::allowed::DefaultsAllowlist;
use super::follow::{self, Follower, HeldBans};
use super::publish::{self, Encoder, JailPorts};
use super::windows::{self, SharedSettings};
use super::{FleetConfig, FleetError};
use crate::control::proto::{BanEntry, Reply, Response};
use crate::jail::set::JailTask;
use crate::jail::Failure;
use crate::jail::JailSpec;
use crate::metrics;
use crate::state::Outbox;

/// How long fleet tasks get to finish at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A checked fleet, not yet running.
pub(crate) struct Fleet {
    config: Arc<FleetConfig>,
    client: redis::Client,
    wake: Arc<Notify>,
    ports: Arc<ArcSwap<JailPorts>>,
    settings: SharedSettings,
    /// What agents spare for jails not run here.
    defaults: Arc<DefaultsAllowlist>,
}

fn settings_of(jails: &[JailSpec]) -> HashMap<String, crate::jail::JailSettings> {
    jails
        .iter()
        .map(|j| (j.name.clone(), j.settings.clone()))
        .collect()
}

impl Fleet {
    /// Checks that Redis accepts this node (a refusal is an error now; Redis merely down is
    /// not) and registers the fleet metrics at zero.
    pub(crate) async fn check(
        fleet: &FleetConfig,
        jails: &[JailSpec],
    ) -> Result<Fleet, FleetError> {
        let mut components = Vec::new();
        if fleet.role.publishes() {
            components.push("publisher");
            if fleet.shared_windows {
                components.push("windows");
            }
        }
        if fleet.role.follows() {
            components.push("follower");
        }
        metrics::fleet_init(&components);
        let client = super::check(fleet).await?;
        Ok(Fleet {
            config: Arc::new(fleet.clone()),
            client,
            wake: Arc::new(Notify::new()),
            ports: Arc::new(ArcSwap::from_pointee(publish::jail_ports(jails))),
            settings: Arc::new(ArcSwap::from_pointee(settings_of(jails))),
            defaults: Arc::new(DefaultsAllowlist::new(fleet)),
        })
    }

    /// True when failures are counted in Redis.
    pub(crate) fn shares_windows(&self) -> bool {
        self.config.role.publishes() && self.config.shared_windows
    }

    /// The encoder the state writer puts committed bans through (sinks only).
    pub(crate) fn outbox(&self) -> Option<Box<dyn Outbox>> {
        self.config.role.publishes().then(|| {
            Box::new(Encoder::new(
                &self.config.node,
                self.ports.clone(),
                self.wake.clone(),
            )) as Box<dyn Outbox>
        })
    }

    /// Starts the publisher (sinks), the shared windows (with `shared`, the listeners'
    /// failures) and the follower (agents; its held bans are back in the firewall when this
    /// returns). `state`: the state database, and whether it could not be read at start (the
    /// follower's runners then keep what the kernel holds).
    pub(crate) async fn start(
        self,
        jails: &[JailSpec],
        (state_path, state_unread): (&std::path::Path, bool),
        shared: Option<mpsc::Receiver<Failure>>,
        local: mpsc::Sender<Failure>,
        jail: JailTask,
        shutdown: CancellationToken,
    ) -> Running {
        let tasks = TaskTracker::new();
        if self.config.role.publishes() {
            let (config, client) = (self.config.clone(), self.client.clone());
            let (path, wake, shutdown) = (
                state_path.to_path_buf(),
                self.wake.clone(),
                shutdown.clone(),
            );
            tasks.spawn_blocking(move || {
                publish::run_on_own_thread(config, client, path, wake, shutdown)
            });
        }
        if let Some(failures) = shared {
            tasks.spawn(windows::run(
                self.config.clone(),
                self.client.clone(),
                self.settings.clone(),
                failures,
                local,
                jail.clone(),
                shutdown.clone(),
            ));
        }
        let held = HeldBans::default();
        let follower = if self.config.role.follows() {
            self.defaults.start(&tasks, shutdown.clone());
            let follower = Follower::start(
                self.config.clone(),
                follow::local_jails(jails),
                follow::AgentAllowlists {
                    jails: jail.allowlists,
                    defaults: self.defaults.subscribe(),
                },
                state_path.to_path_buf(),
                held.clone(),
                state_unread,
            )
            .await;
            Some(tokio::spawn(follow::run(
                follower,
                self.client.clone(),
                shutdown,
            )))
        } else {
            None
        };
        tracing::info!(node = %self.config.node, role = self.config.role.as_str(), redis = %self.config.redis_shown(), shared_windows = self.shares_windows(), "fleet started");
        tasks.close();
        Running {
            config: self.config,
            tasks,
            follower,
            held,
            ports: self.ports,
            settings: self.settings,
            defaults: self.defaults,
        }
    }
}

/// The running fleet.
pub(crate) struct Running {
    config: Arc<FleetConfig>,
    tasks: TaskTracker,
    follower: Option<tokio::task::JoinHandle<Vec<JoinHandle<()>>>>,
    held: HeldBans,
    ports: Arc<ArcSwap<JailPorts>>,
    settings: SharedSettings,
    defaults: Arc<DefaultsAllowlist>,
}

impl Running {
    /// A reload compiled: new jail ports for events, new settings for shared windows, new
    /// defaults' allowlist for agents (a ban it now covers is lifted). `[fleet]` itself takes
    /// effect at the next restart.
    pub(crate) fn reloaded(&self, jails: &[JailSpec], fleet: Option<&FleetConfig>) {
        self.ports.store(Arc::new(publish::jail_ports(jails)));
        self.settings.store(Arc::new(settings_of(jails)));
        if let Some(new) = fleet {
            self.defaults.reloaded(new);
        }
        let unchanged = fleet.is_some_and(|new| {
            FleetConfig {
                ignore: self.config.ignore.clone(),
                ignore_names: self.config.ignore_names.clone(),
                ignore_files: self.config.ignore_files.clone(),
                ignore_refresh: self.config.ignore_refresh,
                ..new.clone()
            } == *self.config
        });
        if !unchanged {
            tracing::warn!("[fleet] changed: it takes effect at the next restart");
        }
    }

    /// An unban this sink's jails refused because the ban is not theirs: lift it fleet-wide if
    /// another sink decided it. Some(answer) when the fleet had it (or could not be asked).
    pub(crate) async fn unban_elsewhere(&self, jail: &str, addr: &str) -> Option<Response> {
        if !self.config.role.publishes() {
            return None;
        }
        let named = crate::address::parse_target(addr).ok()?;
        // The member as the jail bans it: an address widened to the jail's prefix, a network
        // aligned to its own (as an unban by hand of this sink's ban is).
        let target = match self.settings.load().get(jail) {
            Some(s) => manual_member(named, s.ipv4_prefix, s.ipv6_prefix),
            None => named,
        };
        let client = super::client(&self.config).ok()?;
        match publish::lift_remote(&self.config, &client, jail, target).await {
            Ok(None) => None,
            Ok(Some(lift)) => {
                let origin = &lift.decided_by;
                let shown = crate::address::show_target(target);
                tracing::info!(jail, ip = %shown, %origin, "fleet: lifted a ban another sink decided");
                let mut message =
                    format!("[{jail}] Unban {shown} (fleet-wide; decided by {origin})");
                if let Some(back) = &lift.back {
                    message.push_str(&format!(
                        "; {shown} stays banned: the shorter ban by {back} it hid is back in force (unban again to lift it)"
                    ));
                }
                Some(Response::Ok {
                    reply: Reply::Done { message },
                })
            }
            Err(error) => Some(Response::Error {
                message: format!(
                    "{addr} is not banned here, and the fleet could not be asked: {error}"
                ),
            }),
        }
    }

    /// Waits for the fleet tasks (shutdown already cancelled); returns the follower's action
    /// threads to join.
    pub(crate) async fn finish(self) -> Vec<JoinHandle<()>> {
        if tokio::time::timeout(STOP_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("fleet tasks did not finish within the grace period");
        }
        match self.follower {
            Some(f) => f.await.unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// This node's name: `[fleet] node`, else the host name.
pub(crate) fn node_name(fleet: Option<&FleetConfig>) -> String {
    fleet.map_or_else(super::config::host_name, |f| f.node.clone())
}

/// Completes a `banned` answer with the bans this node holds from the fleet (of `jail`, or
/// all), each with the origin that decided it. (Its own bans carry this node's name from where
/// their entries are made, `control::translate::entry`, so `/bans.json` shows it too.)
pub(crate) fn add_fleet_bans(
    response: &mut Response,
    jail: Option<&str>,
    running: Option<&Running>,
) {
    let Response::Ok {
        reply: Reply::Banned { bans },
    } = response
    else {
        return;
    };
    let Some(running) = running else { return };
    let Ok(held) = running.held.lock() else {
        return;
    };
    let rfc = |ms: u64| {
        crate::control::translate::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms))
    };
    bans.extend(
        held.values()
            .map(|h| &h.event)
            .filter(|e| jail.is_none_or(|j| j == e.jail))
            .map(|e| BanEntry {
                jail: e.jail.clone(),
                ip: crate::address::show_target(e.target),
                banned_at: rfc(e.banned_at),
                expires_at: e.expires_at.map(rfc),
                ban_count: e.ban_count,
                origin: e.origin.clone(),
                hosts: e.hosts.clone(),
            }),
    );
    bans.sort_by(|a, b| (&a.banned_at, &a.jail, &a.ip).cmp(&(&b.banned_at, &b.jail, &b.ip)));
}

/// What an unban by hand of `named` lifts in a jail banning by `ipv4_prefix`/`ipv6_prefix`:
/// an address its prefix network, a network itself aligned to its prefix.
fn manual_member(
    named: ipnetwork::IpNetwork,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
) -> ipnetwork::IpNetwork {
    let full = if named.is_ipv4() { 32 } else { 128 };
    if named.prefix() == full {
        let prefix = if named.is_ipv4() {
            ipv4_prefix
        } else {
            ipv6_prefix
        };
        crate::address::network_of(named.ip(), prefix)
    } else {
        crate::address::network_of(named.ip(), named.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unban_elsewhere_names_the_member_the_jail_bans() {
        let n = |s: &str| s.parse::<ipnetwork::IpNetwork>().unwrap();
        // An address in a jail banning /24s and /64s: its network.
        assert_eq!(manual_member(n("192.0.2.9/32"), 24, 64), n("192.0.2.0/24"));
        assert_eq!(
            manual_member(n("2001:db8::5/128"), 24, 64),
            n("2001:db8::/64")
        );
        // A network: aligned to its own prefix, whatever the jail's.
        assert_eq!(manual_member(n("192.0.2.9/24"), 32, 128), n("192.0.2.0/24"));
        assert_eq!(manual_member(n("192.0.2.9/32"), 32, 128), n("192.0.2.9/32"));
    }
}
