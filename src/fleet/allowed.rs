//! What agents spare for jails not run here: `[defaults] ignoreip`'s addresses and networks
//! with this host's, plus its DNS names and `ignoreip_files`, kept current by the jails' own
//! allowlist watcher ([`crate::jail::allow`]) and replaced on reload. The follower reads the
//! result ([`super::follow::AgentAllowlists::defaults`]) and lifts held bans it comes to cover.

use std::sync::{Arc, Mutex};

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::FleetConfig;
use crate::jail::allow::{self, AllowUpdate, IgnoreTable, Watched};

/// The name the watcher logs these entries under.
const NAME: &str = "defaults";

/// The defaults' allowlist: its static part, what the watcher last found, and the whole, sent
/// to the follower whenever it changes.
pub(crate) struct DefaultsAllowlist {
    out: watch::Sender<Arc<IgnoreTable>>,
    parts: Arc<Mutex<Parts>>,
    /// What the watcher looks after (dropping it ends the watcher).
    watched: watch::Sender<Vec<Watched>>,
}

/// The static entries and the run-time ones.
struct Parts {
    fixed: Vec<IpNetwork>,
    found: Arc<[IpNetwork]>,
}

impl Parts {
    fn whole(&self) -> Arc<IgnoreTable> {
        Arc::new(IgnoreTable::new(self.fixed.iter().chain(self.found.iter())))
    }
}

/// The watcher's task list for `config`'s names and files (none: nothing to watch).
fn watched(config: &FleetConfig) -> Vec<Watched> {
    if config.ignore_names.is_empty() && config.ignore_files.is_empty() {
        return Vec::new();
    }
    vec![Watched {
        jail: Arc::from(NAME),
        names: config.ignore_names.clone(),
        files: config.ignore_files.clone(),
        refresh: config.ignore_refresh,
    }]
}

impl DefaultsAllowlist {
    /// The static part of `config`'s; nothing is watched until [`DefaultsAllowlist::start`].
    pub(crate) fn new(config: &FleetConfig) -> DefaultsAllowlist {
        let parts = Parts {
            fixed: config.ignore.clone(),
            found: Arc::from([]),
        };
        DefaultsAllowlist {
            out: watch::Sender::new(parts.whole()),
            parts: Arc::new(Mutex::new(parts)),
            watched: watch::Sender::new(watched(config)),
        }
    }

    /// The whole allowlist now and after every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<IgnoreTable>> {
        self.out.subscribe()
    }

    /// Starts the watcher of the names and files and the task that takes its answers.
    pub(crate) fn start(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let (updates_tx, mut updates) = mpsc::channel::<AllowUpdate>(4);
        let watcher = allow::watch(self.watched.subscribe(), updates_tx);
        let (parts, out) = (self.parts.clone(), self.out.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    update = updates.recv() => match update {
                        Some(update) => {
                            let whole = {
                                let mut parts = lock(&parts);
                                parts.found = update.extra;
                                parts.whole()
                            };
                            tracing::info!(entries = whole.len(), "fleet: the defaults' allowlist updated");
                            out.send_replace(whole);
                        }
                        None => break,
                    },
                }
            }
            watcher.abort();
        });
    }

    /// A reload: the new static entries, and the names and files to watch.
    pub(crate) fn reloaded(&self, config: &FleetConfig) {
        let whole = {
            let mut parts = lock(&self.parts);
            (parts.fixed != config.ignore).then(|| {
                parts.fixed.clone_from(&config.ignore);
                parts.whole()
            })
        };
        if let Some(whole) = whole {
            self.out.send_replace(whole);
        }
        let specs = watched(config);
        if *self.watched.borrow() != specs {
            self.watched.send_replace(specs);
        }
    }
}

/// The parts, locked (a panic elsewhere while holding them leaves them whole: each change is
/// one assignment).
fn lock(parts: &Mutex<Parts>) -> std::sync::MutexGuard<'_, Parts> {
    parts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
