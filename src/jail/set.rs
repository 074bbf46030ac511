//! The jail task: owns every jail, their ban deadlines and their action runners. Failures come in
//! from the listeners, questions from the control socket, new configs from reload; bans and
//! unbans go out through the state writer, which persists them before the actions apply them.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::allow::{self, AllowUpdate, Allowlists, Watched};
use super::query::{Answer, Applied, BanInfo, JailCounts, Query, Refused, Why};
use super::why;
use super::{ActiveBan, BanRefused, Decision, Failure, Jail, JailSpec, Keyed};
use crate::action::runner;
use crate::action::{command_identities, BanOrder};
use crate::address::{show_target, Named};
use crate::metrics::JailMetrics;
use crate::state::{StateOp, StoredBan};

/// Failures the jail task takes from the listeners' channel at a time: each is decided while the
/// tracking state of those a few places ahead is prefetched (see [`JailSet::on_failures`]).
const FAILURE_BATCH: usize = 64;
/// How often idle windows are pruned so the tracked-addresses gauge stays true.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// How often the state is asked to prune ban history past `[state] history_days`, in
/// [`PRUNE_EVERY`] ticks (an hour).
const HISTORY_PRUNE_TICKS: u32 = 720;

/// Work for the jail task besides failures.
pub(crate) enum Command {
    /// A question or order from the control socket.
    Query(Query, oneshot::Sender<Result<Answer, Refused>>),
    /// A new, compiled set of jails; the answer says what changed or why nothing did.
    Reload(
        Vec<JailSpec>,
        oneshot::Sender<Result<String, RunnerStartError>>,
    ),
    /// Failures counted in the fleet's shared windows, with the bans they decided, and where
    /// to say how long each decision's `decided` marker should hold now that it is applied.
    Shared(Vec<SharedFailure>, mpsc::Sender<Vec<Settled>>),
}

/// The jail task as the fleet reaches it: its command queue, and the allowlists it publishes
/// (agents and shared windows judge by them).
#[derive(Clone)]
pub(crate) struct JailTask {
    /// Commands to the jail task.
    pub commands: mpsc::Sender<Command>,
    /// Each jail's whole allowlist, current.
    pub allowlists: tokio::sync::watch::Receiver<Allowlists>,
}

/// How long a shared window's `decided` marker holds once the jail applied the decision: as
/// long as the ban that covers the address now, or not at all when none does (withheld by the
/// storm guard, allowlisted, lifted meanwhile), so that the address can be decided again.
/// Until then the marker holds for the longest ban the jail may give, at most five minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkerHold {
    /// No ban covers it: the marker goes.
    Clear,
    /// A ban covers it until then (the hold is worked out when the marker is settled, which
    /// may be later than the decision: a settle Redis refused is tried again).
    Until(Instant),
    /// A permanent ban covers it.
    Forever,
}

/// One decided marker to settle: the jail, the window's key, how long it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settled {
    /// The jail.
    pub jail: Arc<str>,
    /// The key the failure was counted under.
    pub key: IpNetwork,
    /// How long its marker holds from now.
    pub hold: MarkerHold,
    /// The marker's value when the decision set it: only that marker is settled.
    pub marker: i64,
}

/// A failure counted in Redis by the fleet's shared windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedFailure {
    /// The jail.
    pub jail: Arc<str>,
    /// The address that failed.
    pub ip: IpAddr,
    /// Failures the message stands for.
    pub count: u32,
    /// When the message arrived.
    pub received_at: Instant,
    /// Some((failures, fleet-wide ban count)) when this failure decided the ban.
    pub decided: Option<(u32, u32)>,
    /// Redis's time of the count, the value of every `decided` marker it set (settled by it).
    pub marker: i64,
    /// The syslog host name of the message.
    pub host: Option<Arc<str>>,
    /// The `<F-USER>` of the message, which the ban log of a spray names.
    pub user: Option<Arc<str>>,
    /// The addresses of the spray this failure completed in the shared count (empty if none),
    /// each with its fleet-wide ban count (None for one the count could not key).
    pub sprayed: Vec<(IpAddr, Option<u32>)>,
    /// Receipt time, program and message, the evidence of a ban it decides.
    pub seen: crate::evidence::Seen,
}

/// A jail's action runner could not be started during a reload.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct RunnerStartError(#[from] std::io::Error);

/// One jail with its config and its action runner.
struct Slot {
    name: Arc<str>,
    config: JailSpec,
    jail: Jail,
    queue: mpsc::Sender<runner::ActionCommand>,
    thread: JoinHandle<()>,
    /// Restored bans its actions had to add again at start.
    reapplied: usize,
    /// Firewall objects its runner's stop leaves to a jail that took their name.
    handed_over: runner::HandedOver,
    /// Its actions that failed to start (`action: error`), for a reload's summary.
    start_failures: Vec<String>,
    /// Its actions whose held bans its runner's stop unbans first (a fallback's).
    lift_at_stop: runner::LiftAtStop,
}

/// Every jail, their deadlines, and the way out to the state writer.
pub(crate) struct JailSet {
    slots: Vec<Slot>,
    state: mpsc::Sender<StateOp>,
    deadlines: BTreeSet<(Instant, Arc<str>, IpNetwork)>,
    retired: Vec<JoinHandle<()>>,
    /// Window prunes since history was last pruned.
    ticks: u32,
    /// What the allowlist watcher looks after (replaced on reload; dropping it ends the task).
    watched: tokio::sync::watch::Sender<Vec<Watched>>,
    /// The watcher's updates of the run-time allowlists.
    allow_updates: mpsc::Receiver<AllowUpdate>,
    /// Each jail's whole allowlist, for the fleet (sent again whenever one changes).
    allowlists: tokio::sync::watch::Sender<Allowlists>,
    /// Each failure's slot and key in the batch being applied, kept for its allocation.
    batch_keys: Vec<Option<(usize, Keyed)>>,
    /// Markers to settle that the shared windows' queue had no room for, sent with the next.
    unsettled: Vec<Settled>,
}

/// Most markers to settle kept while the shared windows' queue is full (then the oldest
/// keep their full hold, as before shared windows settled markers at all).
pub(crate) const MAX_UNSETTLED: usize = 100_000;

/// Drops the oldest of `unsettled` past [`MAX_UNSETTLED`], with a warning: those markers keep
/// their full hold.
pub(crate) fn bound_unsettled(unsettled: &mut Vec<Settled>) {
    if unsettled.len() > MAX_UNSETTLED {
        let dropped = unsettled.len() - MAX_UNSETTLED;
        unsettled.drain(..dropped);
        tracing::warn!(
            dropped,
            "fleet: too many decided markers waiting to be settled; the oldest keep their full hold"
        );
    }
}

/// The allowlists of `slots` that change at run time.
fn watched<'a>(slots: impl Iterator<Item = &'a Slot>) -> Vec<Watched> {
    slots
        .filter(|s| s.config.settings.detection.watches())
        .map(|s| {
            let d = &s.config.settings.detection;
            Watched {
                jail: s.name.clone(),
                names: d.ignore_names.clone(),
                files: d.ignore_files.clone(),
                refresh: d.ignore_refresh,
            }
        })
        .collect()
}

/// A jail's fresh state, with its metrics registered at zero.
fn new_jail(config: &JailSpec) -> Jail {
    Jail::new(
        &config.name,
        config.settings.clone(),
        JailMetrics::new(&config.name),
    )
}

/// Starts the runner of `jail`; `restored` are the bans its actions must hold (the runner
/// reconciles the kernel with them before it reports started).
async fn start_slot(
    config: JailSpec,
    jail: Jail,
    restored: Vec<BanOrder>,
) -> Result<Slot, (Jail, std::io::Error)> {
    #[cfg(test)]
    if tests::start_fails() {
        return Err((
            jail,
            std::io::Error::other("no thread (a test's task limit)"),
        ));
    }
    let runner = match runner::spawn(
        &config.name,
        &config.actions,
        jail.metrics().clone(),
        restored,
        config.state_unread,
    )
    .await
    {
        Ok(runner) => runner,
        Err(error) => return Err((jail, error)),
    };
    Ok(Slot {
        name: Arc::from(config.name.as_str()),
        jail,
        config,
        queue: runner.queue,
        thread: runner.thread,
        reapplied: runner.reapplied,
        handed_over: runner.handed_over,
        start_failures: runner.start_failures,
        lift_at_stop: runner.lift_at_stop,
    })
}

/// What became of one stored ban at start.
enum Restore {
    /// Still running: re-apply with the remaining time; deadline if any.
    Active(BanOrder, Option<Instant>),
    /// Ran out while the daemon was down.
    Expired,
    /// Its address is allowlisted now (this allowlist entry): lifted, not restored.
    Allowlisted(IpNetwork),
}

/// Puts a stored ban back into `jail`, or says it has expired.
fn restore(jail: &mut Jail, ban: &StoredBan, now: SystemTime) -> Restore {
    if let Some(entry) = jail.allowlisted(ban.target) {
        return Restore::Allowlisted(entry);
    }
    let remaining = match ban.expires_at {
        None => None,
        Some(end) => {
            let left = end.duration_since(now).unwrap_or(Duration::ZERO);
            // Never longer than the ban's own length: a clock set back since it was stored (a
            // box without a battery-backed clock, a restored snapshot) would otherwise make a
            // ten-minute ban last as long as the clock is wrong.
            let left = end
                .duration_since(ban.banned_at)
                .map_or(left, |length| left.min(length));
            if left.is_zero() {
                return Restore::Expired;
            }
            Some(left)
        }
    };
    let at = Instant::now();
    let expires = remaining.map(|left| at + left);
    jail.restore(
        ban.target,
        ActiveBan {
            banned_at: ban.banned_at,
            expires,
            expires_at: ban.expires_at,
            failures: ban.failures,
            ban_count: ban.ban_count,
            hosts: ban.hosts.clone(),
        },
    );
    let order = BanOrder {
        target: ban.target,
        failures: ban.failures,
        bantime: remaining,
        decided_at: at.into_std(),
        from_state: true,
        evidence: Default::default(),
    };
    Restore::Active(order, expires)
}

impl JailSet {
    /// Restores the stored bans, then starts every jail's actions with the bans they must hold:
    /// those still running are re-applied with their remaining time (the runner reconciles the
    /// kernel with them, so nothing a crash left behind is lost or duplicated), those that
    /// expired while the daemon was down are lifted and forgotten, and the ban history seeds
    /// escalation. The daemon sweeps what removed jails left before it calls this, off the
    /// runtime ([`crate::action::sweep::at_start`]).
    pub(crate) async fn start(
        configs: Vec<JailSpec>,
        state: mpsc::Sender<StateOp>,
        stored: Vec<StoredBan>,
        counts: HashMap<(String, IpNetwork), u32>,
    ) -> std::io::Result<JailSet> {
        let mut jails: Vec<(JailSpec, Jail, Vec<BanOrder>)> = configs
            .into_iter()
            .map(|c| {
                let j = new_jail(&c);
                (c, j, Vec::new())
            })
            .collect();
        for ((name, target), count) in counts {
            if let Some((_, jail, _)) = jails.iter_mut().find(|(c, ..)| c.name == name) {
                jail.seed_ban_count(target, count);
            }
        }
        let now = SystemTime::now();
        let mut deadlines = BTreeSet::new();
        let mut forget = Vec::new();
        // Per jail: bans still running and bans that ran out while the daemon was down.
        let mut restored: HashMap<String, (usize, usize)> = HashMap::new();
        let mut allowlisted = 0;
        for ban in stored {
            let shown = show_target(ban.target);
            let Some((config, jail, orders)) = jails.iter_mut().find(|(c, ..)| c.name == ban.jail)
            else {
                tracing::debug!(jail = %ban.jail, ip = %shown, "forgetting a stored ban of a jail no longer configured");
                forget.push(StateOp::Unban {
                    jail: ban.jail,
                    target: ban.target,
                });
                continue;
            };
            let counts = restored.entry(config.name.clone()).or_default();
            match restore(jail, &ban, now) {
                Restore::Active(order, expires) => {
                    tracing::debug!(jail = %config.name, ip = %shown, "restored ban");
                    counts.0 += 1;
                    if let Some(end) = expires {
                        deadlines.insert((end, Arc::from(config.name.as_str()), ban.target));
                    }
                    orders.push(order);
                }
                Restore::Expired => {
                    tracing::debug!(
                        jail = %ban.jail,
                        ip = %shown,
                        failures = ban.failures,
                        "[{}] Unban {} (expired while jailsink was down)",
                        ban.jail,
                        shown
                    );
                    counts.1 += 1;
                    forget.push(StateOp::Unban {
                        jail: ban.jail,
                        target: ban.target,
                    });
                }
                Restore::Allowlisted(entry) => {
                    tracing::info!(
                        jail = %ban.jail,
                        ip = %shown,
                        "[{}] Unban {} (allowlisted by {}: not restored)",
                        ban.jail,
                        shown,
                        show_target(entry)
                    );
                    allowlisted += 1;
                    forget.push(StateOp::Unban {
                        jail: ban.jail,
                        target: ban.target,
                    });
                }
            }
        }
        let orphans = forget.len() - allowlisted - restored.values().map(|c| c.1).sum::<usize>();
        if orphans > 0 {
            tracing::info!(
                forgotten = orphans,
                "forgot {orphans} stored bans of jails no longer configured"
            );
        }
        let mut slots = Vec::new();
        for (config, jail, orders) in jails {
            let (active, expired) = restored.get(&config.name).copied().unwrap_or_default();
            let slot = start_slot(config, jail, orders).await.map_err(|(_, e)| e)?;
            if active + expired > 0 {
                tracing::info!(
                    jail = %slot.name,
                    restored = active,
                    reapplied = slot.reapplied,
                    expired_while_down = expired,
                    "[{}] bans restored: {active} active ({} re-applied to the firewall), {expired} expired while jailsink was down",
                    slot.name,
                    slot.reapplied,
                );
            }
            slots.push(slot);
        }
        let (watched_tx, watched_rx) = tokio::sync::watch::channel(watched(slots.iter()));
        let (allow_tx, allow_updates) = mpsc::channel(16);
        // The task ends when `watched` is dropped with the set.
        drop(allow::watch(watched_rx, allow_tx));
        let set = JailSet {
            slots,
            state,
            deadlines,
            retired: Vec::new(),
            ticks: 0,
            watched: watched_tx,
            allow_updates,
            allowlists: tokio::sync::watch::Sender::new(Allowlists::default()),
            batch_keys: Vec::new(),
            unsettled: Vec::new(),
        };
        set.publish_allowlists();
        set.send_routes().await;
        for op in forget {
            set.persist(op).await;
        }
        Ok(set)
    }

    /// Each jail's whole allowlist now and after every change: fleet agents and shared
    /// windows judge by it.
    pub(crate) fn allowlists(&self) -> tokio::sync::watch::Receiver<Allowlists> {
        self.allowlists.subscribe()
    }

    /// Sends every jail's allowlist to [`JailSet::allowlists`]'s readers.
    fn publish_allowlists(&self) {
        let lists = self
            .slots
            .iter()
            .map(|s| (s.name.clone(), s.jail.allowlist()))
            .collect();
        self.allowlists.send_replace(Arc::new(lists));
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| &*s.name == name)
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| &*s.name == name)
    }

    async fn persist(&self, op: StateOp) {
        if self.state.send(op).await.is_err() {
            tracing::error!("state writer is gone; ban not applied");
        }
    }

    async fn send_routes(&self) {
        self.persist(StateOp::Routes(routes(self.slots.iter())))
            .await;
    }

    /// Records a new ban: deadline, state, then (through the writer) the actions.
    /// `host` is the syslog host of the message that decided it, if any.
    async fn commit_ban(&mut self, name: Arc<str>, order: BanOrder, host: Option<Arc<str>>) {
        let Some(slot) = self.slot(&name) else { return };
        let Some(ban) = slot.jail.bans().get(&order.target).cloned() else {
            return;
        };
        if let Some(expires) = ban.expires {
            self.deadlines.insert((expires, name.clone(), order.target));
        }
        let hosts = if ban.hosts.is_empty() {
            host.into_iter().map(|h| h.to_string()).collect()
        } else {
            ban.hosts
        };
        let op = StateOp::Ban {
            jail: name.to_string(),
            banned_at: ban.banned_at,
            ban_count: ban.ban_count,
            order,
            hosts,
        };
        self.persist(op).await;
    }

    /// The slots of `jail`, or every slot when None.
    fn slots_of<'a>(&'a self, jail: Option<&'a str>) -> impl Iterator<Item = &'a Slot> + 'a {
        self.slots
            .iter()
            .filter(move |s| jail.is_none_or(|j| j == &*s.name))
    }

    /// Lifts one ban now, whatever its deadline.
    async fn lift(&mut self, name: &Arc<str>, target: IpNetwork) -> bool {
        let Some(slot) = self.slots.iter_mut().find(|s| &s.name == name) else {
            return false;
        };
        let Some(ban) = slot.jail.unban(target) else {
            return false;
        };
        if let Some(expires) = ban.expires {
            self.deadlines.remove(&(expires, name.clone(), target));
        }
        self.persist(StateOp::Unban {
            jail: name.to_string(),
            target,
        })
        .await;
        true
    }

    /// Commits a ban, then the network ban it may escalate to (prefix_escalation): the network
    /// is committed before the single bans it folds are lifted, so the firewall never has a gap.
    async fn commit_and_escalate(
        &mut self,
        name: Arc<str>,
        order: BanOrder,
        host: Option<Arc<str>>,
    ) {
        let target = order.target;
        self.commit_ban(name.clone(), order, host.clone()).await;
        self.escalate_from(name, target, host).await;
    }

    /// The network ban the committed ban of `target` may escalate to: the network committed,
    /// then the bans it folds lifted.
    async fn escalate_from(&mut self, name: Arc<str>, target: IpNetwork, host: Option<Arc<str>>) {
        let Some(slot) = self.slot_mut(&name) else {
            return;
        };
        let Some(escalated) = slot.jail.escalate(target, Instant::now()) else {
            return;
        };
        let network = escalated.order.target;
        self.commit_ban(name.clone(), escalated.order, host).await;
        for member in escalated.folded {
            tracing::info!(jail = %name, ip = %show_target(member), network = %network, "[{name}] {} folded into the ban of {network}", show_target(member));
            self.lift(&name, member).await;
        }
    }

    /// Applies a batch of failures (drained) in order, each exactly as it would be alone. Each
    /// failure's jail and key are found once for the batch; with many tracked addresses, the
    /// tracking state of the failures a few places ahead is requested while each is decided
    /// ([`super::schedule`], the loop `jailbench attackers` measures), so their cache misses
    /// overlap instead of coming one per decision.
    pub(crate) async fn on_failures(&mut self, batch: &mut Vec<Failure>) {
        // Slots and keys stay valid for the whole batch: only a reload changes them.
        let mut keys = std::mem::take(&mut self.batch_keys);
        let mut schedule = super::schedule(&mut keys, batch.iter().map(|f| self.keyed(f)));
        for failure in batch.drain(..) {
            let Some(keyed) = schedule.next_prefetched(|k| {
                let (slot, k) = k?;
                Some((&self.slots[slot].jail, k))
            }) else {
                break;
            };
            // Most failures ban nothing: they are decided without an await, and only a ban
            // builds (and moves) the future that commits it.
            if let Some(Decided {
                name,
                decision,
                sprayed,
                host,
            }) = self.decide(failure, *keyed)
            {
                self.apply(name, decision, sprayed, host).await;
            }
        }
        self.batch_keys = keys;
        self.publish_counts();
    }

    /// Every jail's failures of the batch into `jailsink_failures_total` at once.
    fn publish_counts(&mut self) {
        for slot in &mut self.slots {
            slot.jail.publish_counts();
        }
    }

    /// Applies one failure: the reference the tests hold the batched path to.
    #[cfg(test)]
    pub(crate) async fn on_failure(&mut self, failure: Failure) {
        let keyed = self.keyed(&failure);
        self.on_failure_keyed(failure, keyed).await;
        self.publish_counts();
    }

    /// The slot of a failure's jail and its key there (None for a success or an unknown jail).
    fn keyed(&self, failure: &Failure) -> Option<(usize, Keyed)> {
        if failure.success {
            return None;
        }
        let slot = self.slots.iter().position(|s| s.name == failure.jail)?;
        Some((slot, self.slots[slot].jail.keyed(failure.ip)))
    }

    /// Applies one failure, keyed by [`JailSet::keyed`].
    #[cfg(test)]
    async fn on_failure_keyed(&mut self, failure: Failure, keyed: Option<(usize, Keyed)>) {
        if let Some(Decided {
            name,
            decision,
            sprayed,
            host,
        }) = self.decide(failure, keyed)
        {
            self.apply(name, decision, sprayed, host).await;
        }
    }

    /// Counts one failure, keyed by [`JailSet::keyed`], in its jail: what it decided when that
    /// has bans to commit ([`JailSet::apply`]), else None. Not async, so the failures that ban
    /// nothing (nearly all) cost no future: each failure built and moved `apply`'s future before
    /// (callgrind, BENCHMARKS.md eighth round: the task's loop 131M instructions a million
    /// messages, 62M + 51M in `decide` now; memcpy 122M -> 98M).
    fn decide(&mut self, failure: Failure, keyed: Option<(usize, Keyed)>) -> Option<Decided> {
        if failure.success {
            let slot = self.slot_mut(&failure.jail)?;
            let forgiven = slot.jail.forgive(failure.ip, failure.received_at);
            if forgiven && crate::evidence::tail::watching() {
                why::Explain::of(&failure).forgiven(&slot.name);
            }
            return None;
        }
        let (slot, keyed) = keyed?;
        let slot = &mut self.slots[slot];
        let explain = failure
            .matched
            .is_some()
            .then(|| why::Explain::of(&failure));
        let decision = slot.jail.on_failure_keyed(
            keyed,
            failure.count,
            failure.received_at,
            failure.host.clone(),
            Some(failure.seen),
        );
        if let Some(explain) = explain {
            explain.publish(&slot.jail, &slot.name, &decision);
        }
        let sprayed = slot.jail.spray_after(
            &decision,
            failure.ip,
            failure.user.as_deref(),
            failure.received_at,
        );
        if sprayed.is_empty() && !matches!(decision, Decision::Ban(_)) {
            // Nothing to commit: `apply` would do nothing.
            return None;
        }
        Some(Decided {
            name: slot.name.clone(),
            decision,
            sprayed,
            host: failure.host,
        })
    }

    /// Commits what one failure decided: its own ban, then the spray bans it completed.
    async fn apply(
        &mut self,
        name: Arc<str>,
        decision: Decision,
        sprayed: Vec<BanOrder>,
        host: Option<Arc<str>>,
    ) {
        let own = match decision {
            Decision::Ban(order) => Some(order),
            _ => None,
        };
        // Every ban the failure decided is committed before any escalation: a spray bans
        // several addresses of one network at once, and escalating after the first folded the
        // others before they were committed (lifted, never applied nor logged as banned).
        let orders: Vec<BanOrder> = own.into_iter().chain(sprayed).collect();
        let targets: Vec<IpNetwork> = orders.iter().map(|o| o.target).collect();
        for order in orders {
            self.commit_ban(name.clone(), order, host.clone()).await;
        }
        for target in targets {
            self.escalate_from(name.clone(), target, host.clone()).await;
        }
    }

    /// Takes a jail's new run-time allowlist entries and lifts the bans they now cover.
    pub(crate) async fn on_allow(&mut self, update: AllowUpdate) {
        let Some(slot) = self.slot_mut(&update.jail) else {
            return;
        };
        let count = update.extra.len();
        let covered = slot.jail.set_extra(update.extra);
        let name = slot.name.clone();
        tracing::info!(jail = %name, entries = count, "[{name}] allowlist updated");
        self.publish_allowlists();
        self.lift_allowlisted(&name, covered).await;
    }

    /// Lifts `targets`, bans of jail `name` its allowlist covers now.
    async fn lift_allowlisted(&mut self, name: &Arc<str>, targets: Vec<IpNetwork>) {
        for target in targets {
            tracing::info!(jail = %name, ip = %show_target(target), "[{name}] {} is allowlisted now; lifting its ban", show_target(target));
            self.lift(name, target).await;
        }
    }

    /// Applies failures counted in the fleet's shared windows.
    pub async fn on_shared(
        &mut self,
        failures: Vec<SharedFailure>,
        settle: &mpsc::Sender<Vec<Settled>>,
    ) {
        let mut settled = Vec::new();
        for f in failures {
            let Some(slot) = self.slot_mut(&f.jail) else {
                continue;
            };
            // The addresses whose markers this failure set in Redis: its own when it decided
            // the ban, and those of the spray it completed (a bare address has none).
            let decided: Vec<IpAddr> = f
                .decided
                .map(|_| f.ip)
                .into_iter()
                .chain(f.sprayed.iter().filter(|s| s.1.is_some()).map(|s| s.0))
                .collect();
            // Only a failure that decides a ban needs its line.
            let line = f.decided.is_some().then(|| crate::evidence::Line {
                at_ms: f.seen.at_ms,
                host: f.host.as_deref().map(str::to_string),
                program: f.seen.program().map(String::from),
                message: f.seen.message().into(),
                count: f.count,
            });
            let decision = slot
                .jail
                .on_shared_seen(f.ip, f.count, f.decided, f.received_at, line);
            let sprayed =
                slot.jail
                    .on_shared_spray(&decision, f.user.as_deref(), f.sprayed, f.received_at);
            let name = slot.name.clone();
            self.apply(name.clone(), decision, sprayed, f.host).await;
            if let Some(slot) = self.slot(&name) {
                let now = Instant::now();
                settled.extend(decided.into_iter().map(|ip| {
                    let key = slot.jail.key_of(ip);
                    Settled {
                        jail: name.clone(),
                        key,
                        hold: slot.jail.marker_hold(key, now),
                        marker: f.marker,
                    }
                }));
            }
        }
        self.unsettled.extend(settled);
        if self.unsettled.is_empty() {
            return;
        }
        match settle.try_send(std::mem::take(&mut self.unsettled)) {
            Ok(()) => {}
            // The shared windows are behind: sent with the next batch they answer.
            Err(mpsc::error::TrySendError::Full(back)) => {
                self.unsettled = back;
                bound_unsettled(&mut self.unsettled);
            }
            // Gone (a reload replaced them): those markers hold their full length.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Lifts every ban whose deadline has passed.
    pub(crate) async fn expire_due(&mut self, now: Instant) {
        while let Some((deadline, name, target)) = self.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.lift(&name, target).await;
        }
    }

    /// The earliest ban deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, ..)| *t)
    }

    /// Prunes every jail's window.
    pub(crate) fn prune(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.jail.prune(now);
        }
    }

    /// Answers a query from the control socket.
    pub(crate) async fn handle(&mut self, query: Query) -> Result<Answer, Refused> {
        let refuse = |message: String| Err(Refused(message));
        match query {
            Query::Status { jail: None } => Ok(Answer::Jails(
                self.slots.iter().map(|s| s.name.to_string()).collect(),
            )),
            Query::Status { jail: Some(name) } => match self.slot_mut(&name) {
                None => refuse(format!("no jail `{name}`")),
                Some(slot) => {
                    slot.jail.prune(Instant::now());
                    let mut banned: Vec<_> = slot.jail.bans().keys().copied().collect();
                    banned.sort();
                    Ok(Answer::Status(JailCounts {
                        jail: name,
                        currently_failed: slot.jail.tracked() as u64,
                        total_failed: slot.jail.total_failed(),
                        total_banned: slot.jail.total_banned(),
                        banned,
                    }))
                }
            },
            Query::Banned { jail } => {
                if let Some(name) = &jail {
                    if self.slot(name).is_none() {
                        return refuse(format!("no jail `{name}`"));
                    }
                }
                let mut bans: Vec<BanInfo> = self
                    .slots_of(jail.as_deref())
                    .flat_map(|s| {
                        s.jail
                            .bans()
                            .iter()
                            .map(|(target, ban)| BanInfo::of(&s.name, *target, ban))
                    })
                    .collect();
                bans.sort_by(|a, b| {
                    (a.banned_at, &a.jail, a.target).cmp(&(b.banned_at, &b.jail, b.target))
                });
                Ok(Answer::Bans(bans))
            }
            Query::BanPage { jail, after, limit } => {
                if let Some(name) = &jail {
                    if self.slot(name).is_none() {
                        return refuse(format!("no jail `{name}`"));
                    }
                }
                Ok(Answer::Bans(self.ban_page(jail.as_deref(), after, limit)))
            }
            Query::Ban {
                jail,
                target,
                bantime,
            } => {
                let Some(slot) = self.slot_mut(&jail) else {
                    return refuse(format!("no jail `{jail}`"));
                };
                match slot.jail.manual_ban(target, bantime, Instant::now()) {
                    Err(refused) => refuse(refused.to_string()),
                    Ok(order) => {
                        let name = slot.name.clone();
                        let shown = show_target(order.target);
                        self.commit_ban(name, order, None).await;
                        Ok(Answer::Done(format!("[{jail}] Ban {shown}")))
                    }
                }
            }
            Query::BanMany {
                jail,
                targets,
                bantime,
            } => self.ban_many(&jail, targets, bantime).await,
            Query::UnbanMany { jail, targets } => self.unban_many(&jail, targets).await,
            Query::Unban { jail, target } => self.unban(jail, target).await,
            Query::Why { ip } => self.why(ip).await.await,
        }
    }

    /// The `why` answer for `ip`: what the jails know now, taken here, and a future that adds
    /// the history once the state writer has read it, so the jail task does not wait for a
    /// read queued behind the writer's work.
    async fn why(&self, ip: IpAddr) -> impl Future<Output = Result<Answer, Refused>> + Send {
        let (answer, past) = oneshot::channel();
        let targets = why::holding(ip);
        self.persist(StateOp::History { targets, answer }).await;
        let now = Instant::now();
        let jails: Vec<Why> = self
            .slots
            .iter()
            .map(|s| why::jail(&s.name, &s.jail, ip, now))
            .collect();
        async move {
            let past = past.await.unwrap_or_default();
            Ok(Answer::Why(
                jails
                    .into_iter()
                    .filter_map(|w| why::with_history(w, &past))
                    .collect(),
            ))
        }
    }

    /// A barrier behind everything sent to the state writer so far: resolves once it is
    /// committed (or the writer has given up on a failing database, whose bans go on in
    /// memory).
    async fn barrier(&self) -> oneshot::Receiver<()> {
        let (done, committed) = oneshot::channel();
        self.persist(StateOp::Barrier(done)).await;
        committed
    }

    /// Asks the state to prune ban history every [`HISTORY_PRUNE_TICKS`] calls.
    async fn tick_history(&mut self) {
        self.ticks += 1;
        if self.ticks >= HISTORY_PRUNE_TICKS {
            self.ticks = 0;
            self.persist(StateOp::PruneHistory).await;
        }
    }

    /// The active bans after `after` in (jail, target) order, at most `limit`
    /// ([`super::page`]: a seek in each jail's ordered bans, not a pass over all of them).
    fn ban_page(
        &self,
        jail: Option<&str>,
        after: Option<(String, IpNetwork)>,
        limit: usize,
    ) -> Vec<BanInfo> {
        let jails = self.slots_of(jail).map(|s| (&s.name, &s.jail));
        super::page::ban_page(jails, after.as_ref(), limit)
    }

    /// Bans every target of a list in `jail`, counting what became of each line.
    async fn ban_many(
        &mut self,
        jail: &str,
        targets: Vec<(u32, Named)>,
        bantime: Option<Option<Duration>>,
    ) -> Result<Answer, Refused> {
        let Some(slot) = self.slot(jail) else {
            return Err(Refused(format!("no jail `{jail}`")));
        };
        let name = slot.name.clone();
        let mut applied = Applied::default();
        let now = Instant::now();
        for (line, target) in targets {
            let Some(slot) = self.slot_mut(&name) else {
                break;
            };
            match slot.jail.manual_ban(target, bantime, now) {
                Ok(order) => {
                    applied.done += 1;
                    self.commit_and_escalate(name.clone(), order, None).await;
                }
                Err(refused @ BanRefused::AlreadyBanned { .. }) => {
                    applied.unchanged.push((line, refused.to_string()))
                }
                Err(refused) => applied.ignored.push((line, refused.to_string())),
            }
        }
        Ok(Answer::Applied(applied))
    }

    /// Lifts the ban of every target of a list in `jail`, counting what became of each line.
    async fn unban_many(
        &mut self,
        jail: &str,
        targets: Vec<(u32, Named)>,
    ) -> Result<Answer, Refused> {
        let Some(slot) = self.slot(jail) else {
            return Err(Refused(format!("no jail `{jail}`")));
        };
        let name = slot.name.clone();
        let mut applied = Applied::default();
        for (line, target) in targets {
            let key = match self.slot(&name) {
                Some(slot) => slot.jail.manual_key(target),
                None => break,
            };
            if self.lift(&name, key).await {
                applied.done += 1;
            } else {
                applied
                    .unchanged
                    .push((line, format!("{} is not banned", show_target(key))));
            }
        }
        Ok(Answer::Applied(applied))
    }

    /// Lifts the bans of `wanted` (every ban when None) in `jail` (every jail when None).
    async fn unban(
        &mut self,
        jail: Option<String>,
        wanted: Option<Named>,
    ) -> Result<Answer, Refused> {
        if let Some(name) = &jail {
            if self.slot(name).is_none() {
                return Err(Refused(format!("no jail `{name}`")));
            }
        }
        let mut lifted = Vec::new();
        let targets: Vec<(Arc<str>, IpNetwork)> = self
            .slots_of(jail.as_deref())
            .flat_map(|s| {
                // As `ban` and `unban --file` take it: an address at the jail's prefix, a
                // network aligned (192.0.2.5/24 is 192.0.2.0/24).
                let key = wanted.map(|w| s.jail.manual_key(w));
                s.jail
                    .bans()
                    .keys()
                    .filter(move |t| key.is_none_or(|k| **t == k))
                    .map(|t| (s.name.clone(), *t))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, target) in targets {
            if self.lift(&name, target).await {
                lifted.push(format!("[{name}] Unban {}", show_target(target)));
            }
        }
        match (lifted.is_empty(), wanted.map(|w| w.target)) {
            (true, Some(target)) => {
                // Inside a network ban (an escalation, a ban by hand): name it rather than say
                // only "not banned", and leave the network to the operator.
                let holders: Vec<String> = self
                    .slots_of(jail.as_deref())
                    .flat_map(|s| {
                        s.jail
                            .bans()
                            .keys()
                            .filter(|t| t.prefix() < target.prefix() && t.contains(target.ip()))
                            .map(|t| format!("{} in [{}]", show_target(*t), s.name))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if holders.is_empty() {
                    Err(Refused(format!("{} is not banned", show_target(target))))
                } else {
                    Err(Refused(format!(
                        "{} is not banned by itself; it is inside the banned network {} (unban that to lift it)",
                        show_target(target),
                        holders.join(", ")
                    )))
                }
            }
            (true, None) => Ok(Answer::Done("nothing was banned".into())),
            (false, _) => Ok(Answer::Done(lifted.join("\n"))),
        }
    }

    /// Swaps in a new set of jails. Unchanged jails keep everything; a jail whose settings
    /// changed keeps its bans (and its counts, unless the window's shape changed); a jail whose
    /// actions changed gets new actions with its bans re-applied; removed jails lift their bans;
    /// new jails start.
    pub(crate) async fn reload(
        &mut self,
        configs: Vec<JailSpec>,
    ) -> Result<String, RunnerStartError> {
        let mut summary = Vec::new();
        // New jails' runners first, before anything changes: one that cannot start (no thread
        // under a task limit) refuses the reload with every jail as it was.
        let mut started = Vec::new();
        for config in configs
            .iter()
            .filter(|c| !self.slots.iter().any(|s| *s.name == *c.name))
        {
            let jail = new_jail(config);
            started.push(
                start_slot(config.clone(), jail, Vec::new())
                    .await
                    .map_err(|(_, e)| e)?,
            );
        }
        // A jail removed (or whose actions change) gives up the names of its firewall objects;
        // a jail new or whose actions change that took one runs in them after the reload: the
        // old runner, which may stop after the new one started (a removed jail's last, a
        // retired one's when its turn comes), must leave them (and their record) alone. Marked
        // before any old runner stops; a jail's own new names are not taken from itself (its
        // old runner stops before its new one starts).
        let incoming: Vec<(&str, (&'static str, &str))> = configs
            .iter()
            .filter(|c| {
                self.slots
                    .iter()
                    .find(|s| *s.name == *c.name)
                    .is_none_or(|s| s.config.actions != c.actions)
            })
            .flat_map(|c| crate::action::firewall_names(&c.actions).map(move |n| (&*c.name, n)))
            .collect();
        // Each jail's names another jail takes, with the jail that takes them: its old actions
        // can never come back in them (a fallback, below).
        let mut given_up: HashMap<Arc<str>, Vec<Taken>> = HashMap::new();
        for slot in &self.slots {
            let taken: Vec<Taken> = crate::action::firewall_names(&slot.config.actions)
                .filter_map(|n| {
                    incoming
                        .iter()
                        .find(|(by, m)| **by != *slot.name && *m == n)
                        .map(|(by, _)| (n.0, n.1.to_string(), by.to_string()))
                })
                .collect();
            if taken.is_empty() {
                continue;
            }
            if let Ok(mut handed) = slot.handed_over.lock() {
                handed.extend(taken.iter().map(|(b, n, _)| (*b, n.clone())));
            }
            given_up.insert(slot.name.clone(), taken);
        }
        // Jails that take a name go first: when a jail's new actions fail, whether the taker
        // still holds a name it took (its own new actions may have failed too, and its old
        // ones lack the name) is known. The jails keep the config's order afterwards.
        let takers: Vec<String> = given_up
            .values()
            .flatten()
            .map(|(_, _, by)| by.clone())
            .collect();
        let order: Vec<String> = configs.iter().map(|c| c.name.to_string()).collect();
        let mut configs = configs;
        configs.sort_by_key(|c| !takers.iter().any(|t| **t == *c.name));
        let mut processed: Vec<String> = Vec::new();
        let mut old: Vec<Slot> = std::mem::take(&mut self.slots);
        let mut next: Vec<Slot> = Vec::new();
        for config in configs {
            processed.push(config.name.to_string());
            let Some(i) = old.iter().position(|s| *s.name == *config.name) else {
                if let Some(j) = started.iter().position(|s| *s.name == *config.name) {
                    let slot = started.swap_remove(j);
                    // Nothing to fall back to: it runs, and the summary says what failed
                    // rather than claim it protects.
                    summary.push(match slot.start_failures.is_empty() {
                        true => format!("{}: started", config.name),
                        false => format!(
                            "{}: started, but its actions failed to start ({}): its bans may not be applied",
                            config.name,
                            slot.start_failures.join("; ")
                        ),
                    });
                    next.push(slot);
                }
                continue;
            };
            let mut slot = old.remove(i);
            if slot.config.actions != config.actions {
                // The old runner must be gone (its stop removes its firewall objects) before the
                // new one creates them again.
                let others = routes(old.iter().chain(&next));
                let before = slot.config.clone();
                // Command actions the new config drops (or whose `ban` changes): the old
                // runner's stop unbans what they hold in memory, so no state database is
                // needed for it (review-act7 finding 1); the records' lifting below takes any
                // others recorded.
                let dropped = commands_dropped(&before.actions, &config.actions);
                if let Ok(mut lifting) = slot.lift_at_stop.lock() {
                    lifting.extend(dropped);
                }
                let mut jail = retire(slot, others, &self.state).await;
                // Command actions the jail no longer has: the bans they ran are lifted now with
                // their recorded unbans (the start does it for a restart), before the new runner
                // starts. Every other jail's records are left alone.
                let others = old.iter().chain(&next).chain(&started);
                lift_commands_left(&config.name, &before.actions, &config.actions, others).await;
                jail.reconfigure(config.settings.clone());
                let orders = orders_for(&jail);
                let started_fresh = start_slot(config.clone(), jail, orders).await;
                // The names another jail took that it still holds (it may have fallen back).
                let lost: Vec<Taken> = given_up
                    .get(&*config.name)
                    .map(|lost| still_taken(lost, next.iter().chain(&started), &processed))
                    .unwrap_or_default();
                match started_fresh {
                    Ok(fresh) if fresh.start_failures.is_empty() => {
                        summary.push(format!("{}: actions restarted", config.name));
                        next.push(fresh);
                    }
                    Ok(fresh) if !lost.is_empty() => {
                        // The old actions cannot come back: another jail runs in objects of
                        // theirs now (their start would take them from it). The new ones run
                        // as far as they started.
                        summary.push(format!(
                            "{}: new actions failed to start ({}); the old actions cannot come back ({}): the new ones run as far as they started",
                            config.name,
                            fresh.start_failures.join("; "),
                            show_taken(&lost)
                        ));
                        tracing::error!(jail = %config.name, "[{}] new actions failed to start ({}); the old ones cannot come back", config.name, fresh.start_failures.join("; "));
                        next.push(fresh);
                    }
                    Ok(fresh) => {
                        // A backend that cannot start (no iptables, a `start` template that
                        // fails) would leave the jail banning into nothing: its old actions,
                        // which ran, take over again.
                        let why = format!(
                            "new actions failed to start ({})",
                            fresh.start_failures.join("; ")
                        );
                        // Its command actions that the old ones lack ran `ban` for every ban
                        // at their start: lifted with their unbans (the old runner would never
                        // run them), before the old actions start again. Its runner's stop
                        // unbans those it holds in memory (no state database needed), the
                        // records' lifting after it any others recorded.
                        let dropped = commands_dropped(&config.actions, &before.actions);
                        if let Ok(mut lifting) = fresh.lift_at_stop.lock() {
                            lifting.extend(dropped);
                        }
                        let others = routes(old.iter().chain(&next));
                        let jail = retire(fresh, others, &self.state).await;
                        let others = old.iter().chain(&next).chain(&started);
                        lift_commands_left(&config.name, &config.actions, &before.actions, others)
                            .await;
                        let (said, back) = restart_old(&config.name, before, jail, &why).await;
                        summary.push(said);
                        next.extend(back);
                    }
                    Err((jail, error)) => {
                        let mut why = format!("new actions not started ({error})");
                        if !lost.is_empty() {
                            why.push_str(&format!(
                                "; the old actions come back without those whose objects another jail took ({})",
                                show_taken(&lost)
                            ));
                        }
                        // Those whose objects another jail took stay out: their start would
                        // take the objects from it.
                        let Some(before) = old_actions_back(before, &lost) else {
                            // None is left: a runner without actions would ban nowhere.
                            drop(jail);
                            tracing::error!(jail = %config.name, "[{}] {why}; none of its old actions can come back: the jail stops, its bans stay stored for the next start", config.name);
                            summary.push(format!(
                                "{}: {why}; stopped, none of its old actions can come back; its bans stay stored for the next start",
                                config.name
                            ));
                            continue;
                        };
                        let (said, back) = restart_old(&config.name, before, jail, &why).await;
                        summary.push(said);
                        next.extend(back);
                    }
                }
                continue;
            }
            if slot.config.settings != config.settings || slot.config.feed != config.feed {
                summary.push(format!("{}: updated", config.name));
            }
            slot.jail.reconfigure(config.settings.clone());
            slot.config = config;
            next.push(slot);
        }
        next.sort_by_key(|s| order.iter().position(|n| **n == *s.name));
        // Jails that are gone lift their bans while their runners still listen, then stop.
        self.slots = old;
        let removed: Vec<Arc<str>> = self.slots.iter().map(|s| s.name.clone()).collect();
        for name in &removed {
            let targets: Vec<IpNetwork> = self
                .slot(name)
                .map(|s| s.jail.bans().keys().copied().collect())
                .unwrap_or_default();
            for target in targets {
                self.lift(name, target).await;
            }
            if let Some(slot) = self.slot(name) {
                slot.jail.metrics().retire();
            }
            summary.push(format!("{name}: removed"));
        }
        for slot in std::mem::replace(&mut self.slots, next) {
            self.retired.push(slot.thread);
        }
        self.send_routes().await;
        self.watched.send_replace(watched(self.slots.iter()));
        self.publish_allowlists();
        // An ignoreip entry the reload added lifts the bans it covers, as a run-time
        // allowlist entry does (`on_allow`): an allowlisted address is never banned.
        let covered: Vec<(Arc<str>, Vec<IpNetwork>)> = self
            .slots
            .iter()
            .map(|s| (s.name.clone(), s.jail.allowlisted_bans()))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        for (name, targets) in covered {
            self.lift_allowlisted(&name, targets).await;
            summary.push(format!("{name}: lifted bans now allowlisted"));
        }
        if summary.is_empty() {
            summary.push("no jail changed".into());
        }
        Ok(summary.join("; "))
    }

    /// Closes every queue; returns the runner threads to join (each stops its actions).
    pub(crate) fn finish(self) -> Vec<JoinHandle<()>> {
        let mut threads = self.retired;
        threads.extend(self.slots.into_iter().map(|s| s.thread));
        threads
    }
}

/// Lifts, with their recorded unbans, the bans that the command actions of `jail`'s `left`
/// actions ran and its `kept` actions lack (by identity; a changed `ban` at the same position
/// is left to the action now there, which takes its records over). `others` are the other live
/// jails, whose records are left alone. Runs only when some identity goes.
async fn lift_commands_left<'a>(
    jail: &str,
    left: &[crate::action::ActionSpec],
    kept: &[crate::action::ActionSpec],
    others: impl Iterator<Item = &'a Slot>,
) {
    let kept = command_identities(kept);
    if command_identities(left).iter().all(|id| kept.contains(id)) {
        return;
    }
    let mut commands: HashMap<String, Vec<String>> = others
        .map(|s| (s.name.to_string(), command_identities(&s.config.actions)))
        .collect();
    commands.insert(jail.to_string(), kept);
    let lifted = tokio::task::spawn_blocking(move || {
        crate::action::sweep::lift_unconfigured_commands(&commands)
    });
    if lifted.await.is_err() {
        tracing::error!(jail, "lifting the bans of removed command actions failed");
    }
}

/// The places in `actions` of the command actions whose identity `kept` lacks: a fallback
/// drops them, and the bans they hold are lifted at their runner's stop. One whose `ban` a kept
/// command action still runs is left out: the one `ban` program holds its targets for the kept
/// one too (two actions with the same `ban`, one removed, the other's identity losing its
/// suffix), so its unban would lift them from under it; its records are forgotten or lifted by
/// the records' lifting instead, which tells those targets apart, and the kept action's runner
/// bans again whatever its records lack.
fn commands_dropped(
    actions: &[crate::action::ActionSpec],
    kept: &[crate::action::ActionSpec],
) -> Vec<usize> {
    use crate::action::ActionSpec;
    let kept_bans: Vec<&[String]> = kept
        .iter()
        .filter_map(|a| match a {
            ActionSpec::Command(c) => Some(c.ban.as_slice()),
            _ => None,
        })
        .collect();
    let kept = command_identities(kept);
    let commands = actions.iter().enumerate().filter_map(|(i, a)| match a {
        ActionSpec::Command(c) => Some((i, c.ban.as_slice())),
        _ => None,
    });
    commands
        .zip(command_identities(actions))
        .filter(|((_, ban), id)| !kept.contains(id) && !kept_bans.contains(ban))
        .map(|((i, _), _)| i)
        .collect()
}

/// Firewall objects (backend, name) a jail gives up in a reload, and the jail that takes them.
type Taken = (&'static str, String, String);

/// Those of `lost` whose taker holds them after its own part of the reload: a jail of `running`
/// (new, or through the reload) whose actions make them. A taker not through yet (jails that
/// take each other's names) is taken to hold them; one through the reload but not running
/// (it stopped) holds none.
fn still_taken<'a>(
    lost: &[Taken],
    running: impl Iterator<Item = &'a Slot> + Clone,
    processed: &[String],
) -> Vec<Taken> {
    lost.iter()
        .filter(
            |(backend, name, by)| match running.clone().find(|s| *s.name == **by) {
                Some(slot) => crate::action::firewall_names(&slot.config.actions)
                    .any(|(b, n)| b == *backend && n == *name),
                None => !processed.iter().any(|p| p == by),
            },
        )
        .cloned()
        .collect()
}

/// `before` without the actions whose objects another jail holds now (`lost`), for a fallback;
/// None if that leaves none of its actions (a runner without actions bans nowhere).
fn old_actions_back(mut before: JailSpec, lost: &[Taken]) -> Option<JailSpec> {
    if lost.is_empty() {
        return Some(before);
    }
    before.actions.retain(|a| {
        crate::action::firewall_names(std::slice::from_ref(a))
            .all(|(b, n)| !lost.iter().any(|(lb, ln, _)| *lb == b && *ln == n))
    });
    (!before.actions.is_empty()).then_some(before)
}

/// What `taken` says in the reload's summary: "iptables `web` belongs to www now", ...
fn show_taken(taken: &[Taken]) -> String {
    taken
        .iter()
        .map(|(backend, name, by)| format!("{backend} `{name}` belongs to {by} now"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The action queues of `slots`, by jail name.
fn routes<'a>(
    slots: impl Iterator<Item = &'a Slot>,
) -> HashMap<String, mpsc::Sender<runner::ActionCommand>> {
    slots
        .map(|s| (s.name.to_string(), s.queue.clone()))
        .collect()
}

/// Stops a slot's runner and waits for it; returns the jail, whose bans the next runner
/// re-applies. `others` are the routes of every other live jail: the writer drops this jail's
/// sender when it reads them, so the runner drains, stops, and ends.
async fn retire(
    slot: Slot,
    others: HashMap<String, mpsc::Sender<runner::ActionCommand>>,
    state: &mpsc::Sender<StateOp>,
) -> Jail {
    let Slot {
        name,
        jail,
        queue,
        thread,
        ..
    } = slot;
    drop(queue);
    if state.send(StateOp::Routes(others)).await.is_err() {
        tracing::error!("state writer is gone");
    }
    if tokio::task::spawn_blocking(move || thread.join())
        .await
        .is_err()
    {
        tracing::error!(jail = %name, "old action runner failed");
    }
    jail
}

/// A jail whose new actions could not start (no thread, or a backend whose `start` failed:
/// `why` says which) goes back to its old actions and settings, re-applying its bans; the next
/// reload tries the new ones again. If even those cannot start the jail stops: its bans stay
/// stored and come back at the next start. Says which, for the reload's summary.
async fn restart_old(
    name: &str,
    before: JailSpec,
    mut jail: Jail,
    why: &str,
) -> (String, Option<Slot>) {
    tracing::error!(jail = %name, "[{name}] {why}; its old actions and settings run again");
    jail.reconfigure(before.settings.clone());
    let orders = orders_for(&jail);
    match start_slot(before, jail, orders).await {
        Ok(slot) if slot.start_failures.is_empty() => (
            format!("{name}: {why}; the old actions and settings run again, reload to try again"),
            Some(slot),
        ),
        Ok(slot) => {
            let again = slot.start_failures.join("; ");
            (
                format!("{name}: {why}; the old actions and settings run again, but they failed to start too ({again})"),
                Some(slot),
            )
        }
        Err((_, again)) => {
            tracing::error!(jail = %name, error = %again, "[{name}] no action runner can start; the jail stops, its bans stay stored for the next start");
            (
                format!("{name}: {why}; stopped, no action runner can start ({again}); its bans stay stored for the next start"),
                None,
            )
        }
    }
}

/// Orders that re-apply every active ban of `jail` with its remaining time.
fn orders_for(jail: &Jail) -> Vec<BanOrder> {
    let now = Instant::now();
    jail.bans()
        .iter()
        .map(|(target, ban)| BanOrder {
            target: *target,
            failures: ban.failures,
            bantime: ban.expires.map(|e| e.saturating_duration_since(now)),
            decided_at: now.into_std(),
            from_state: true,
            evidence: Default::default(),
        })
        .collect()
}

/// What one failure decided that has bans to commit, for [`JailSet::apply`].
struct Decided {
    name: Arc<str>,
    decision: Decision,
    sprayed: Vec<BanOrder>,
    host: Option<Arc<str>>,
}

/// The jail task: runs until `shutdown`, then returns the runner threads to join.
pub(crate) async fn run(
    mut set: JailSet,
    mut failures: mpsc::Receiver<Failure>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(FAILURE_BATCH);
    loop {
        let deadline = set.next_deadline();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // recv_many is cancel safe: it takes nothing unless it returns.
            taken = failures.recv_many(&mut batch, FAILURE_BATCH) => match taken {
                0 => break,
                _ => set.on_failures(&mut batch).await,
            },
            command = commands.recv() => match command {
                Some(Command::Query(query, answer)) => {
                    let result: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match query {
                        Query::Why { ip } => Box::pin(set.why(ip).await),
                        query => {
                            let result = set.handle(query).await;
                            Box::pin(async move { result })
                        }
                    };
                    // What the answer lists or reports is committed before the operator sees
                    // it; the jail task goes on meanwhile (a commit slowed by a locked database
                    // or a ban storm never stops counting and banning for a `banned` or a
                    // feed page).
                    let committed = set.barrier().await;
                    tokio::spawn(async move {
                        let result = result.await;
                        let _ = committed.await;
                        let _ = answer.send(result);
                    });
                }
                Some(Command::Reload(configs, answer)) => {
                    let result = set.reload(configs).await;
                    let _ = answer.send(result);
                }
                Some(Command::Shared(failures, settle)) => set.on_shared(failures, &settle).await,
                None => break,
            },
            Some(update) = set.allow_updates.recv() => set.on_allow(update).await,
            _ = sleep_until(deadline) => set.expire_due(Instant::now()).await,
            _ = prune.tick() => {
                set.prune(Instant::now());
                set.tick_history().await;
            }
        }
    }
    set.finish()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ActionSpec;
    use crate::jail::settings::{Increment, JailSettings};

    fn config(name: &str, bantime: u64) -> JailSpec {
        JailSpec {
            name: name.into(),
            feed: "test".into(),
            state_unread: false,
            settings: JailSettings {
                bantime: Some(Duration::from_secs(bantime)),
                findtime: Duration::from_secs(600),
                maxretry: 2,
                ignore: vec![],
                max_tracked: 100,
                ipv4_prefix: 32,
                ipv6_prefix: 128,
                max_bans_per_minute: None,
                increment: Increment {
                    enabled: false,
                    factor: 2.0,
                    maxtime: Duration::MAX,
                    rndtime: Duration::ZERO,
                },
                detection: Default::default(),
            },
            actions: vec![ActionSpec::Log],
        }
    }

    fn failure(ip: &str) -> Failure {
        Failure {
            host: Some(Arc::from("web-1")),
            jail: Arc::from("sshd"),
            ip: ip.parse().unwrap(),
            count: 1,
            success: false,
            received_at: Instant::now(),
            seen: crate::evidence::Seen::new(SystemTime::now(), Some("sshd"), "Failed password"),
            matched: None,
            user: None,
        }
    }

    async fn next_op(rx: &mut mpsc::Receiver<StateOp>) -> StateOp {
        loop {
            match rx.recv().await.expect("an op") {
                StateOp::Routes(_) => continue,
                op => return op,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bans_are_persisted_then_expire_on_their_deadline() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut set = JailSet::start(vec![config("sshd", 60)], tx, vec![], HashMap::new())
            .await
            .unwrap();
        set.on_failure(failure("192.0.2.1")).await;
        set.on_failure(failure("192.0.2.1")).await;
        assert!(matches!(
            next_op(&mut rx).await,
            StateOp::Ban { ban_count: 1, .. }
        ));
        tokio::time::advance(Duration::from_secs(59)).await;
        set.expire_due(Instant::now()).await;
        assert!(rx.try_recv().is_err(), "unbanned before bantime");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(set.next_deadline(), Some(Instant::now()));
        set.expire_due(Instant::now()).await;
        assert!(matches!(next_op(&mut rx).await, StateOp::Unban { .. }));
        drop(set.finish());
    }

    fn ban_target(op: &StateOp) -> Option<String> {
        match op {
            StateOp::Ban { order, .. } => Some(format!("ban {}", show_target(order.target))),
            StateOp::Unban { target, .. } => Some(format!("unban {}", show_target(*target))),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn escalation_commits_the_network_then_folds_the_addresses() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut c = config("sshd", 60);
        c.settings.maxretry = 1;
        c.settings.detection.escalation = Some(crate::jail::escalate::Escalation {
            ipv4: 24,
            ipv6: 64,
            after: 3,
        });
        c.settings.ignore = vec!["198.51.100.9/32".parse().unwrap()];
        let mut set = JailSet::start(vec![c], tx, vec![], HashMap::new())
            .await
            .unwrap();
        for ip in ["192.0.2.1", "192.0.2.2"] {
            set.on_failure(failure(ip)).await;
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        set.on_failure(failure("192.0.2.3")).await;
        let mut ops = Vec::new();
        for _ in 0..7 {
            ops.extend(ban_target(&next_op(&mut rx).await));
        }
        assert_eq!(
            ops,
            [
                "ban 192.0.2.1",
                "ban 192.0.2.2",
                "ban 192.0.2.3",
                "ban 192.0.2.0/24",
                "unban 192.0.2.1",
                "unban 192.0.2.2",
                "unban 192.0.2.3"
            ]
        );
        // The network lasts as long as its longest member: 60 s from the third ban.
        assert_eq!(
            set.next_deadline(),
            Some(Instant::now() + Duration::from_secs(60))
        );
        // Its addresses are banned already; a network holding an ignored address is not banned.
        set.on_failure(failure("192.0.2.77")).await;
        for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
            set.on_failure(failure(ip)).await;
        }
        let mut ops = Vec::new();
        for _ in 0..3 {
            ops.extend(ban_target(&next_op(&mut rx).await));
        }
        assert_eq!(
            ops,
            ["ban 198.51.100.1", "ban 198.51.100.2", "ban 198.51.100.3"]
        );
        assert!(
            rx.try_recv().is_err(),
            "no network ban over an ignored address"
        );
        drop(set.finish());
    }

    /// An sshd jail (maxretry 5) that bans a user failing from 3 addresses within an hour.
    fn spraying() -> JailSpec {
        let mut c = config("sshd", 60);
        c.settings.maxretry = 5;
        c.settings.detection.spray = Some(crate::jail::spray::SpraySettings {
            maxaddresses: 3,
            findtime: Duration::from_secs(3600),
        });
        c
    }

    #[tokio::test(start_paused = true)]
    async fn a_spray_of_one_network_commits_every_ban_before_escalating() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut c = spraying();
        c.settings.detection.escalation = Some(crate::jail::escalate::Escalation {
            ipv4: 24,
            ipv6: 64,
            after: 3,
        });
        let mut set = JailSet::start(vec![c], tx, vec![], HashMap::new())
            .await
            .unwrap();
        for ip in ["198.51.100.20", "198.51.100.21", "198.51.100.22"] {
            set.on_failure(Failure {
                user: Some(Arc::from("root")),
                ..failure(ip)
            })
            .await;
        }
        let mut ops = Vec::new();
        // Bounded: before the fix two of the bans were never committed, so fewer ops came.
        while let Ok(op) = tokio::time::timeout(Duration::from_secs(5), next_op(&mut rx)).await {
            ops.extend(ban_target(&op));
        }
        assert_eq!(
            ops,
            [
                "ban 198.51.100.20",
                "ban 198.51.100.21",
                "ban 198.51.100.22",
                "ban 198.51.100.0/24",
                "unban 198.51.100.20",
                "unban 198.51.100.21",
                "unban 198.51.100.22"
            ]
        );
        drop(set.finish());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_commits_what_failures_one_by_one_commit() {
        // Escalation folds bans in the middle of a batch, and a later failure of the batch
        // falls in the network it banned: a batch must see every commit before it.
        let mut c = config("sshd", 60);
        c.settings.detection.escalation = Some(crate::jail::escalate::Escalation {
            ipv4: 24,
            ipv6: 64,
            after: 2,
        });
        let mut other = config("smtp", 60);
        other.settings.maxretry = 3;
        let mut ips = Vec::new();
        for n in 0..300u32 {
            let net = [1, 2, 3][(n % 3) as usize];
            let host = (n * 7919) % 13;
            ips.push((n % 4 == 0, format!("10.{net}.0.{host}")));
        }
        let mut runs = Vec::new();
        for batched in [false, true] {
            let (tx, mut rx) = mpsc::channel(4096);
            let mut set =
                JailSet::start(vec![c.clone(), other.clone()], tx, vec![], HashMap::new())
                    .await
                    .unwrap();
            let failures = ips.iter().map(|(smtp, ip)| Failure {
                jail: Arc::from(if *smtp { "smtp" } else { "sshd" }),
                ..failure(ip)
            });
            if batched {
                let all: Vec<Failure> = failures.collect();
                for chunk in all.chunks(37) {
                    set.on_failures(&mut chunk.to_vec()).await;
                }
            } else {
                for f in failures {
                    set.on_failure(f).await;
                }
            }
            let mut ops = Vec::new();
            while let Ok(op) = rx.try_recv() {
                ops.extend(ban_target(&op));
            }
            drop(set.finish());
            runs.push(ops);
        }
        assert!(
            runs[0].iter().any(|op| op.ends_with(".0/24")),
            "{:?}",
            runs[0]
        );
        assert_eq!(runs[0], runs[1]);
    }

    /// A batch whose failures mostly only count (decided without building a future) and a
    /// few ban, successes among them: exactly the addresses that reached maxretry are banned,
    /// in the order they reached it, and the counted ones go on counting.
    #[tokio::test(start_paused = true)]
    async fn a_batch_of_mostly_counted_failures_commits_exactly_its_bans() {
        let (tx, mut rx) = mpsc::channel(4096);
        let mut set = JailSet::start(vec![config("sshd", 60)], tx, vec![], HashMap::new())
            .await
            .unwrap();
        let ip = |n: u32| format!("10.0.{}.{}", n / 200, n % 200);
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for n in 0..400u32 {
            batch.push(failure(&ip(n)));
            if n % 25 == 0 {
                // Forgiven before its second failure: counted again from one.
                batch.push(Failure {
                    success: true,
                    ..failure(&ip(n))
                });
            } else if n % 10 == 0 {
                batch.push(failure(&ip(n)));
                expected.push(format!("ban {}", ip(n)));
            }
        }
        set.on_failures(&mut batch).await;
        let mut ops = Vec::new();
        while let Ok(op) = rx.try_recv() {
            ops.extend(ban_target(&op));
        }
        assert_eq!(ops, expected);
        // A second failure of a counted address (the last one, still tracked: the jail keeps
        // 100) bans it now.
        set.on_failures(&mut vec![failure(&ip(399))]).await;
        let mut ops = Vec::new();
        while let Ok(op) = rx.try_recv() {
            ops.extend(ban_target(&op));
        }
        assert_eq!(ops, vec![format!("ban {}", ip(399))]);
        drop(set.finish());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sprayed_user_bans_every_address_below_maxretry() {
        let (tx, mut rx) = mpsc::channel(64);
        let c = spraying();
        let mut set = JailSet::start(vec![c], tx, vec![], HashMap::new())
            .await
            .unwrap();
        let as_user = |ip: &str, user: &str| Failure {
            user: Some(Arc::from(user)),
            ..failure(ip)
        };
        set.on_failure(as_user("192.0.2.1", "admin")).await;
        set.on_failure(as_user("203.0.113.5", "admin")).await;
        set.on_failure(as_user("203.0.113.6", "oracle")).await;
        set.on_failure(failure("203.0.113.7")).await;
        while let Ok(op) = rx.try_recv() {
            assert_eq!(ban_target(&op), None, "two addresses are no spray");
        }
        set.on_failure(as_user("198.51.100.20", "admin")).await;
        let mut ops = Vec::new();
        for _ in 0..3 {
            ops.extend(ban_target(&next_op(&mut rx).await));
        }
        ops.sort();
        assert_eq!(
            ops,
            ["ban 192.0.2.1", "ban 198.51.100.20", "ban 203.0.113.5"]
        );
        drop(set.finish());
    }

    #[tokio::test(start_paused = true)]
    async fn unban_takes_a_network_as_ban_does_and_names_the_network_an_address_is_inside() {
        let (tx, _rx) = mpsc::channel(64);
        let mut set = JailSet::start(vec![config("sshd", 600)], tx, Vec::new(), HashMap::new())
            .await
            .unwrap();
        let net = |s: &str| s.parse::<Named>().unwrap();
        let ban = |target: &str| Query::Ban {
            jail: "sshd".into(),
            target: net(target),
            bantime: None,
        };
        let unban = |target: &str| Query::Unban {
            jail: None,
            target: Some(net(target)),
        };
        assert!(set.handle(ban("192.0.2.0/24")).await.is_ok());
        // Inside the network: refused, naming it.
        let Err(Refused(why)) = set.handle(unban("192.0.2.9")).await else {
            panic!("an address inside a banned network is not banned by itself")
        };
        assert!(why.contains("192.0.2.0/24 in [sshd]"), "{why}");
        // Unaligned, as `ban` takes it: lifted.
        assert!(set.handle(unban("192.0.2.5/24")).await.is_ok());
        assert!(set.slots[0].jail.bans().is_empty());
        let Err(Refused(why)) = set.handle(unban("192.0.2.9")).await else {
            panic!("nothing is banned")
        };
        assert_eq!(why, "192.0.2.9 is not banned");
        drop(set.finish());
    }

    #[tokio::test(start_paused = true)]
    async fn an_allowlisted_address_loses_its_ban_at_start_and_at_a_reload() {
        let (tx, mut rx) = mpsc::channel(64);
        let now = SystemTime::now();
        let stored = |ip: &str| StoredBan {
            jail: "sshd".into(),
            target: ip.parse().unwrap(),
            banned_at: now,
            expires_at: Some(now + Duration::from_secs(600)),
            failures: 2,
            ban_count: 1,
            hosts: Vec::new(),
        };
        let mut allowing = config("sshd", 600);
        allowing.settings.ignore = vec!["192.0.2.7/32".parse().unwrap()];
        let bans = vec![stored("192.0.2.7/32"), stored("192.0.2.8/32")];
        let mut set = JailSet::start(vec![allowing.clone()], tx, bans, HashMap::new())
            .await
            .unwrap();
        assert!(matches!(
            next_op(&mut rx).await,
            StateOp::Unban { target, .. } if target == "192.0.2.7/32".parse().unwrap()
        ));
        let banned = |set: &JailSet| -> Vec<IpNetwork> {
            let mut v: Vec<IpNetwork> = set.slots[0].jail.bans().keys().copied().collect();
            v.sort();
            v
        };
        assert_eq!(banned(&set), ["192.0.2.8/32".parse().unwrap()]);
        // A reload that adds 192.0.2.8 to ignoreip lifts its ban.
        allowing
            .settings
            .ignore
            .push("192.0.2.8/32".parse().unwrap());
        let summary = set.reload(vec![allowing]).await.unwrap();
        assert!(summary.contains("lifted bans now allowlisted"), "{summary}");
        assert!(banned(&set).is_empty());
        assert!(matches!(
            next_op(&mut rx).await,
            StateOp::Unban { target, .. } if target == "192.0.2.8/32".parse().unwrap()
        ));
        drop(set.finish());
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_ban_lasts_no_longer_than_its_length_when_the_clock_went_back() {
        let mut jail = new_jail(&config("sshd", 600));
        let stored_at = SystemTime::now();
        let ban = StoredBan {
            jail: "sshd".into(),
            target: "192.0.2.9/32".parse().unwrap(),
            banned_at: stored_at,
            expires_at: Some(stored_at + Duration::from_secs(600)),
            failures: 5,
            ban_count: 1,
            hosts: Vec::new(),
        };
        // The clock now reads a year earlier than when the ban was stored.
        let now = stored_at - Duration::from_secs(365 * 24 * 3600);
        let Restore::Active(order, Some(expires)) = restore(&mut jail, &ban, now) else {
            panic!("restored with a deadline")
        };
        assert_eq!(order.bantime, Some(Duration::from_secs(600)));
        assert!(expires <= Instant::now() + Duration::from_secs(600));
        // With the clock right, what is left of it.
        let later = stored_at + Duration::from_secs(100);
        let Restore::Active(order, _) = restore(&mut jail, &ban, later) else {
            panic!("still running")
        };
        assert_eq!(order.bantime, Some(Duration::from_secs(500)));
        assert!(matches!(
            restore(&mut jail, &ban, stored_at + Duration::from_secs(600)),
            Restore::Expired
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn stored_bans_are_restored_or_lifted() {
        let (tx, mut rx) = mpsc::channel(64);
        let now = SystemTime::now();
        let stored = |ip: &str, expires: Option<SystemTime>| StoredBan {
            jail: "sshd".into(),
            target: ip.parse().unwrap(),
            banned_at: now - Duration::from_secs(100),
            expires_at: expires,
            failures: 5,
            ban_count: 3,
            hosts: vec!["web-1".into()],
        };
        let bans = vec![
            stored("192.0.2.1/32", Some(now - Duration::from_secs(1))),
            stored("192.0.2.2/32", Some(now + Duration::from_secs(30))),
            stored("192.0.2.3/32", None),
            // The furthest end SQLite's seconds can store (a hand-edited state.db): restored.
            stored(
                "192.0.2.5/32",
                Some(std::time::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64)),
            ),
            StoredBan {
                jail: "gone".into(),
                ..stored("192.0.2.4/32", None)
            },
        ];
        let mut set = JailSet::start(vec![config("sshd", 60)], tx, bans, HashMap::new())
            .await
            .unwrap();
        let mut ops = Vec::new();
        for _ in 0..2 {
            ops.push(next_op(&mut rx).await);
        }
        assert!(
            ops.iter().all(|o| matches!(o, StateOp::Unban { .. })),
            "the expired ban and the ban of a removed jail are forgotten"
        );
        // The running ones went to the runner at start (reconciled), not through the state.
        let Ok(Answer::Bans(bans)) = set.handle(Query::Banned { jail: None }).await else {
            panic!()
        };
        assert_eq!(bans.len(), 3);
        assert!(bans.iter().all(|b| b.ban_count == 3));
        tokio::time::advance(Duration::from_secs(31)).await;
        set.expire_due(Instant::now()).await;
        assert!(matches!(next_op(&mut rx).await, StateOp::Unban { .. }));
        drop(set.finish());
    }

    thread_local! {
        /// Runner starts a test makes fail, as a task limit would.
        static FAILING_STARTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    thread_local! {
        /// Runner starts that succeed before the failing ones ([`FAILING_STARTS`]) begin.
        static SPARED_STARTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// Whether this runner start fails (counts one of the spared, else failing, starts down).
    pub(super) fn start_fails() -> bool {
        let spared = SPARED_STARTS.with(|n| {
            let left = n.get();
            n.set(left.saturating_sub(1));
            left > 0
        });
        if spared {
            return false;
        }
        FAILING_STARTS.with(|n| {
            let left = n.get();
            n.set(left.saturating_sub(1));
            left > 0
        })
    }

    /// A reload whose runners cannot start (no thread under a task limit) never leaves the jail
    /// task without its jails: a new jail's refuses the reload with every jail as it was; a
    /// jail whose new actions cannot start runs its old actions and settings again, bans
    /// kept; if even those cannot start, only that jail stops.
    #[tokio::test(start_paused = true)]
    async fn a_reload_whose_runners_cannot_start_keeps_the_jails_running() {
        let (tx, mut writer) = mpsc::channel(64);
        // As the state writer does, the routes are taken (a retired runner ends only once
        // nothing else holds its queue); the rest is kept for the test.
        let (ops, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(op) = writer.recv().await {
                if !matches!(op, StateOp::Routes(_)) {
                    let _ = ops.send(op);
                }
            }
        });
        let sshd = config("sshd", 600);
        let mut set = JailSet::start(vec![sshd.clone()], tx, vec![], HashMap::new())
            .await
            .unwrap();
        let names = |set: &JailSet| -> Vec<String> {
            set.slots.iter().map(|s| s.name.to_string()).collect()
        };
        let bantime = |set: &JailSet| set.slots[0].config.settings.bantime;
        let longer = config("sshd", 1200);
        FAILING_STARTS.with(|n| n.set(1));
        let refused = set
            .reload(vec![longer.clone(), config("postfix", 600)])
            .await;
        assert!(refused.is_err());
        assert_eq!(names(&set), ["sshd"]);
        assert_eq!(bantime(&set), Some(Duration::from_secs(600)));
        set.on_failure(failure("192.0.2.1")).await;
        set.on_failure(failure("192.0.2.1")).await;
        assert!(matches!(rx.recv().await, Some(StateOp::Ban { .. })));

        let mut other_actions = longer.clone();
        other_actions.actions = vec![ActionSpec::Log, ActionSpec::Log];
        FAILING_STARTS.with(|n| n.set(1));
        let summary = set.reload(vec![other_actions.clone()]).await.unwrap();
        assert!(
            summary.contains("sshd: new actions not started"),
            "{summary}"
        );
        assert_eq!(names(&set), ["sshd"]);
        assert_eq!(set.slots[0].config.actions, sshd.actions);
        assert_eq!(bantime(&set), Some(Duration::from_secs(600)));
        assert_eq!(set.slots[0].jail.bans().len(), 1, "the ban is kept");
        // The next reload starts them.
        let summary = set.reload(vec![other_actions.clone()]).await.unwrap();
        assert!(summary.contains("sshd: actions restarted"), "{summary}");
        assert_eq!(set.slots[0].config.actions, other_actions.actions);
        assert_eq!(bantime(&set), Some(Duration::from_secs(1200)));

        FAILING_STARTS.with(|n| n.set(2));
        let summary = set.reload(vec![sshd.clone()]).await.unwrap();
        assert!(
            summary.contains("sshd: new actions not started")
                && summary.contains("; stopped, no action runner can start"),
            "{summary}"
        );
        assert!(names(&set).is_empty());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "its ban stays stored: no unban");
        drop(set.finish());
    }

    /// `sshd` started alone (its state writer a sink) with 192.0.2.1 banned: where the reload
    /// tests of its actions begin.
    async fn sshd_with_one_ban(sshd: &JailSpec) -> JailSet {
        let (tx, mut writer) = mpsc::channel(64);
        tokio::spawn(async move { while writer.recv().await.is_some() {} });
        let mut set = JailSet::start(vec![sshd.clone()], tx, vec![], HashMap::new())
            .await
            .unwrap();
        set.on_failure(failure("192.0.2.1")).await;
        set.on_failure(failure("192.0.2.1")).await;
        set
    }

    /// A command action whose `ban` and `unban` append `<tag>ban <ip>` / `<tag>unban <ip>` to
    /// `log`, with `start` as given: what the reload tests read to see which commands ran.
    fn logging_command(log: &std::path::Path, tag: &str, start: Vec<String>) -> ActionSpec {
        let sh = |word: &str| {
            vec![
                "sh".to_string(),
                "-c".into(),
                format!("echo {tag}{word} $0 >> {}", log.display()),
                "<ip>".into(),
            ]
        };
        ActionSpec::Command(crate::action::CommandSpec {
            start,
            stop: Vec::new(),
            ban: sh("ban"),
            unban: sh("unban"),
            timeout: Duration::from_secs(10),
            ports: Vec::new(),
            protocol: crate::action::Protocol::Tcp,
        })
    }

    /// A reload whose new actions start but whose backend fails its `start` (here a command
    /// action's `start` template that fails) never says "actions restarted": the old actions
    /// and settings run again, bans kept, and the summary says so; when even the old actions'
    /// runner cannot start, it says the jail stopped.
    #[tokio::test(start_paused = true)]
    async fn a_reload_whose_new_backend_fails_to_start_says_what_runs() {
        let sshd = config("sshd", 600);
        let mut set = sshd_with_one_ban(&sshd).await;
        assert_eq!(set.slots[0].jail.bans().len(), 1);
        let mut broken = config("sshd", 1200);
        // Its `ban` runs for the restored ban at its start; no state database here (memory
        // only): the fallback's stop of the new runner runs its `unban` (review-act6 finding 2).
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cmd.log");
        broken.actions = vec![logging_command(&log, "", vec!["false".into()])];
        let summary = set.reload(vec![broken.clone()]).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap_or_default(),
            "ban 192.0.2.1\nunban 192.0.2.1\n",
            "the new-only command action's ban is lifted by its unban"
        );
        assert!(!summary.contains("actions restarted"), "{summary}");
        assert!(
            summary.contains("sshd: new actions failed to start (command: ")
                && summary.contains("the old actions and settings run again"),
            "{summary}"
        );
        assert_eq!(set.slots[0].config.actions, sshd.actions);
        assert_eq!(
            set.slots[0].config.settings.bantime,
            Some(Duration::from_secs(600))
        );
        assert_eq!(set.slots[0].jail.bans().len(), 1, "the ban is kept");

        // A new jail whose actions fail to start has nothing to fall back to: it runs, and the
        // summary does not claim it protects (review-act5 finding 4).
        let mut web = broken.clone();
        web.name = "web".into();
        let summary = set.reload(vec![sshd.clone(), web]).await.unwrap();
        assert!(
            summary.contains("web: started, but its actions failed to start (command: "),
            "{summary}"
        );
        assert!(!summary.contains("web: started;"), "{summary}");
        let running: Vec<&str> = set.slots.iter().map(|s| &*s.name).collect();
        assert_eq!(running, ["sshd", "web"]);

        // The new runner starts (its backend fails), the old one cannot: the jail stops.
        SPARED_STARTS.with(|n| n.set(1));
        FAILING_STARTS.with(|n| n.set(1));
        let summary = set.reload(vec![broken]).await.unwrap();
        assert!(
            summary.contains("sshd: new actions failed to start (command: ")
                && summary.contains("; stopped, no action runner can start"),
            "{summary}"
        );
        assert!(set.slots.is_empty());
        drop(set.finish());
    }

    /// A reload that removes a command action, or changes its `ban`, runs the old program's
    /// `unban` for the bans it ran, with no state database to record them (memory only): the
    /// old runner's stop lifts what the action holds (review-act7 finding 1).
    #[tokio::test]
    async fn a_reload_that_drops_a_command_action_unbans_its_bans_without_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cmd.log");
        let command = |tag: &str| logging_command(&log, tag, Vec::new());
        // Banned under the log action; the command action added by a reload bans it at its
        // start (its reconcile of the jail's bans).
        let sshd = config("sshd", 600);
        let mut set = sshd_with_one_ban(&sshd).await;
        assert_eq!(set.slots[0].jail.bans().len(), 1);
        let mut first = sshd.clone();
        first.actions = vec![command("")];
        set.reload(vec![first.clone()]).await.unwrap();
        // Its `ban` changes: the old program's unban, then the new program's ban.
        let mut changed = first.clone();
        changed.actions = vec![command("new")];
        let summary = set.reload(vec![changed.clone()]).await.unwrap();
        assert!(summary.contains("sshd: actions restarted"), "{summary}");
        // Then it goes: the new program's unban.
        let mut logged = changed.clone();
        logged.actions = vec![ActionSpec::Log];
        set.reload(vec![logged]).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap_or_default(),
            "ban 192.0.2.1\nunban 192.0.2.1\nnewban 192.0.2.1\nnewunban 192.0.2.1\n"
        );
        assert_eq!(set.slots[0].jail.bans().len(), 1, "the ban is kept");
        drop(set.finish());
    }

    /// The stop's lifting of a dropped command action tries each unban once: a reload (and the
    /// jail task) waits for that stop, and an action is often dropped because its program
    /// fails; nothing retries it for seconds per ban (review-lead29 finding 2).
    #[tokio::test]
    async fn a_dropped_command_actions_failing_unban_is_tried_once_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cmd.log");
        let sshd = config("sshd", 600);
        let mut set = sshd_with_one_ban(&sshd).await;
        let mut failing = sshd.clone();
        let mut command = logging_command(&log, "", Vec::new());
        if let ActionSpec::Command(spec) = &mut command {
            spec.unban = vec![
                "sh".into(),
                "-c".into(),
                format!("echo unban $0 >> {}; exit 1", log.display()),
                "<ip>".into(),
            ];
        }
        failing.actions = vec![command];
        set.reload(vec![failing]).await.unwrap();
        set.reload(vec![sshd]).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap_or_default(),
            "ban 192.0.2.1\nunban 192.0.2.1\n",
            "one try of the failing unban"
        );
        drop(set.finish());
    }

    /// Two command actions with the same `ban`, the first removed by a reload: the second's
    /// identity loses its suffix, so its old one is dropped, but the one `ban` program holds
    /// the targets for the second still: no unban runs, and the ban stays (review-tidyB
    /// finding 1: the old runner's stop unbanned what the second held).
    #[tokio::test]
    async fn removing_one_of_two_command_actions_with_the_same_ban_unbans_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cmd.log");
        let with_unban = |tag: &str| {
            let mut command = logging_command(&log, "", Vec::new());
            if let ActionSpec::Command(spec) = &mut command {
                spec.unban = vec![
                    "sh".into(),
                    "-c".into(),
                    format!("echo {tag}unban $0 >> {}", log.display()),
                    "<ip>".into(),
                ];
            }
            command
        };
        let sshd = config("sshd", 600);
        let mut set = sshd_with_one_ban(&sshd).await;
        // Both actions start with the ban (their runner's memory holds it).
        let mut both = sshd.clone();
        both.actions = vec![with_unban("a"), with_unban("b")];
        set.reload(vec![both.clone()]).await.unwrap();
        let mut second = both.clone();
        second.actions = vec![with_unban("b")];
        let summary = set.reload(vec![second]).await.unwrap();
        assert!(summary.contains("sshd: actions restarted"), "{summary}");
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!ran.contains("unban"), "{ran}");
        assert!(ran.starts_with("ban 192.0.2.1\nban 192.0.2.1\n"), "{ran}");
        assert_eq!(set.slots[0].jail.bans().len(), 1, "the ban is kept");
        drop(set.finish());
    }

    /// A fallback without a runner for the new actions brings the old ones back without those
    /// whose objects another jail holds now; when that leaves none, no runner starts (it would
    /// ban nowhere while the summary said the old actions run): the jail stops (review-act6
    /// finding 3).
    #[test]
    fn old_actions_whose_objects_another_jail_holds_never_come_back_as_an_empty_runner() {
        let web = |name: &str| {
            ActionSpec::Iptables(crate::action::FirewallSpec {
                name: name.into(),
                ..crate::action::test_spec(&[], crate::action::Protocol::Tcp, false)
            })
        };
        let mut sshd = config("sshd", 600);
        sshd.actions = vec![web("web")];
        let lost: Vec<Taken> = vec![("iptables", "web".into(), "www".into())];
        assert!(old_actions_back(sshd.clone(), &lost).is_none());
        assert_eq!(old_actions_back(sshd.clone(), &[]), Some(sshd.clone()));
        sshd.actions = vec![web("web"), ActionSpec::Log, web("other")];
        let back = old_actions_back(sshd, &lost).expect("two are left");
        assert_eq!(back.actions, [ActionSpec::Log, web("other")]);
    }

    /// A query waits for the state writer's commit before it is answered, but the jail task
    /// does not: failures go on being counted and banned while the writer is slow (a locked
    /// database, a ban storm's queue).
    #[tokio::test(start_paused = true)]
    async fn a_query_waiting_for_the_state_never_holds_up_the_jail_task() {
        let (tx, mut writer) = mpsc::channel(64);
        let set = JailSet::start(vec![config("sshd", 60)], tx, vec![], HashMap::new())
            .await
            .unwrap();
        let (failures, failures_rx) = mpsc::channel(64);
        let (commands, commands_rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(set, failures_rx, commands_rx, shutdown.clone()));
        let (answer, answered) = oneshot::channel();
        commands
            .send(Command::Query(Query::Status { jail: None }, answer))
            .await
            .unwrap();
        // The writer holds the query's barrier unanswered.
        let held = loop {
            match writer.recv().await.expect("the barrier") {
                StateOp::Barrier(done) => break done,
                _ => continue,
            }
        };
        failures.send(failure("192.0.2.1")).await.unwrap();
        failures.send(failure("192.0.2.1")).await.unwrap();
        let ban = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let StateOp::Ban { .. } = writer.recv().await.expect("an op") {
                    return;
                }
            }
        })
        .await;
        assert!(ban.is_ok(), "the jail task banned while the query waited");
        let mut answered = answered;
        assert!(
            answered.try_recv().is_err(),
            "not answered before the commit"
        );
        held.send(()).unwrap();
        let Ok(Answer::Jails(jails)) = answered.await.unwrap() else {
            panic!("the status answer")
        };
        assert_eq!(jails, ["sshd"]);
        shutdown.cancel();
        drop(task.await.unwrap());
    }

    /// In a jail banning /24s, an address named by hand widens to its /24, as a failure
    /// would; a network is taken as written, a /32 included (one address of a blocklist).
    #[tokio::test(start_paused = true)]
    async fn a_network_named_by_hand_is_banned_as_written_even_at_full_length() {
        let (tx, _rx) = mpsc::channel(64);
        let mut by_24 = config("sshd", 600);
        by_24.settings.ipv4_prefix = 24;
        let mut set = JailSet::start(vec![by_24], tx, Vec::new(), HashMap::new())
            .await
            .unwrap();
        let ban = |target: &str| Query::Ban {
            jail: "sshd".into(),
            target: target.parse().unwrap(),
            bantime: None,
        };
        assert!(set.handle(ban("192.0.2.5/32")).await.is_ok());
        assert!(set.handle(ban("198.51.100.6")).await.is_ok());
        let list = Query::BanMany {
            jail: "sshd".into(),
            targets: vec![(1, "203.0.113.7/32".parse().unwrap())],
            bantime: None,
        };
        assert!(set.handle(list).await.is_ok());
        let mut banned: Vec<String> = set.slots[0]
            .jail
            .bans()
            .keys()
            .map(|t| t.to_string())
            .collect();
        banned.sort();
        assert_eq!(
            banned,
            ["192.0.2.5/32", "198.51.100.0/24", "203.0.113.7/32"]
        );
        let unban = Query::Unban {
            jail: None,
            target: Some("192.0.2.5/32".parse().unwrap()),
        };
        assert!(set.handle(unban).await.is_ok());
        drop(set.finish());
    }

    fn shared(ip: &str, marker: i64) -> SharedFailure {
        SharedFailure {
            jail: Arc::from("sshd"),
            ip: ip.parse().unwrap(),
            count: 1,
            received_at: Instant::now(),
            decided: Some((2, 1)),
            marker,
            host: None,
            user: None,
            sprayed: vec![],
            seen: crate::evidence::Seen::new(SystemTime::now(), Some("sshd"), "Failed password"),
        }
    }

    /// The shared windows' settle queue full: the jail keeps the batch's markers and sends
    /// them, in order, with the next batch it settles; none is lost and none is sent twice.
    #[tokio::test(start_paused = true)]
    async fn markers_the_full_settle_queue_refused_go_with_the_next_batch() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut set = JailSet::start(vec![config("sshd", 60)], tx, vec![], HashMap::new())
            .await
            .unwrap();
        let (settle, mut queue) = mpsc::channel(1);
        settle.try_send(Vec::new()).unwrap();
        set.on_shared(vec![shared("192.0.2.1", 11)], &settle).await;
        assert!(matches!(next_op(&mut rx).await, StateOp::Ban { .. }));
        assert_eq!(queue.try_recv().unwrap(), vec![], "only what filled it");
        assert!(
            queue.try_recv().is_err(),
            "the refused batch is kept, not queued"
        );
        set.on_shared(vec![shared("192.0.2.2", 12)], &settle).await;
        assert!(matches!(next_op(&mut rx).await, StateOp::Ban { .. }));
        let sent = queue.try_recv().unwrap();
        let got: Vec<(IpNetwork, i64)> = sent.iter().map(|s| (s.key, s.marker)).collect();
        assert_eq!(
            got,
            vec![
                ("192.0.2.1/32".parse().unwrap(), 11),
                ("192.0.2.2/32".parse().unwrap(), 12)
            ]
        );
        assert!(sent.iter().all(|s| matches!(s.hold, MarkerHold::Until(_))));
        // Sent once: a batch deciding nothing sends nothing more.
        set.on_shared(vec![], &settle).await;
        assert!(queue.try_recv().is_err());
        drop(set.finish());
    }
}
