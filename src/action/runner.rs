//! Runs one jail's actions on a dedicated thread fed by a bounded queue: firewall commands
//! block, and they must never stall ingest or the jail task beyond the queue's depth.
//!
//! Queued commands are taken in bursts (up to [`MAX_BURST`]) so a set-based backend applies a
//! flood of bans in one transaction. A failed burst is retried with backoff, logged once, and
//! counted per command that still failed; the jail's state keeps the ban either way.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use tokio::sync::mpsc;

use super::{Action, ActionError, ActionSpec, BanOrder, FirewallSpec};
use crate::action::records::{self, Records};
use crate::metrics::{self, JailMetrics};

pub(crate) use super::ActionCommand;

/// Bans waiting for a slow firewall before the jail task waits too.
pub(crate) const QUEUE_DEPTH: usize = 16_384;
/// Most commands applied as one burst (one nft transaction, one ipset restore).
pub const MAX_BURST: usize = 1_000;
/// Longest time a runner's stop spends unbanning the bans of actions the jail no longer runs
/// ([`Runner::lift_at_stop`]): a reload, and with it the jail task, waits for that stop.
const LIFT_AT_STOP_BUDGET: Duration = Duration::from_secs(60);

/// Pauses before each retry of a failed call: four tries in all, 2.1 s of waiting at most.
pub(crate) const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// How long commands that failed every retry wait before they are tried again, while the
/// runner goes on with new bursts: a firewall that is away for a while (its lock held, a
/// module reloading) gets those bans once it is back, not only at the next restart.
pub(crate) const BACKLOG_RETRY: Duration = Duration::from_secs(30);

/// Most failed commands one action keeps for a later try; past it the oldest are dropped
/// (counted as errors when they failed, logged), the jail still counting them as active until a
/// restart reconciles the kernel.
const BACKLOG_MAX: usize = 100_000;

/// Batches waiting in a batched runner's queue ([`spawn_batched`]): each holds up to a stream
/// read's worth of commands, so fewer slots bound about as many commands.
pub(crate) const BATCH_QUEUE_DEPTH: usize = 256;

/// What a runner's queue carries: one command (jails), or a batch of them (fleet followers,
/// which hand over a whole stream read at once: one wake-up of the runner thread per read
/// instead of one per ban).
pub trait Queued: Send + 'static {
    /// Appends the command(s) to the burst being gathered.
    fn into_burst(self, burst: &mut Vec<ActionCommand>);
}

impl Queued for ActionCommand {
    fn into_burst(self, burst: &mut Vec<ActionCommand>) {
        burst.push(self);
    }
}

impl Queued for Vec<ActionCommand> {
    fn into_burst(mut self, burst: &mut Vec<ActionCommand>) {
        burst.append(&mut self);
    }
}

/// A running runner: its queue and its thread.
pub struct Runner<C = ActionCommand> {
    /// The queue; dropping every sender stops the runner, which then calls `stop` on its actions.
    pub queue: mpsc::Sender<C>,
    /// Joined at shutdown.
    pub thread: JoinHandle<()>,
    /// Restored bans the kernel lacked at start and the actions added again (summed over the
    /// jail's actions), for the start-up summary.
    pub reapplied: usize,
    /// Firewall objects (backend and name) this runner's stop must leave, and keep recorded:
    /// a jail started by a reload took them over (a removed jail's name reused).
    pub handed_over: HandedOver,
    /// The actions whose `start` failed every retry, as `action: error` (logged and counted
    /// already): a reload goes back to the jail's old actions rather than say they run.
    pub start_failures: Vec<String>,
    /// The actions (by place in the jail's list) whose bans this runner's stop unbans first:
    /// command actions a reload's fallback drops, whose `unban` nothing would run later.
    pub lift_at_stop: LiftAtStop,
}

/// Places of the actions whose held bans ([`super::Action::held`]) a runner's stop unbans
/// first, shared with the runner thread (read at its stop).
pub type LiftAtStop = std::sync::Arc<std::sync::Mutex<Vec<usize>>>;

/// The (backend, name) pairs of firewall objects another jail's runner took over, shared with
/// the runner thread (read at its stop).
pub type HandedOver = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, String)>>>;

/// Starts the actions of `jail` on their own thread, then reconciles each with `restored` (the
/// bans that should be active: what the kernel holds beyond them is lifted, what it lacks is
/// added); returns once that is done, so readiness means the firewall is in place.
///
/// `state_unread`: the state database could not be read at the daemon's start. The actions
/// then cannot tell a kernel ban that outlived its state from one the state lost, so their
/// start keeps every ban the kernel holds (the next start that reads the state lifts what it
/// does not know) rather than lifting them all. Given to each runner, not kept process-wide,
/// so that two daemons (tests) in one process never see each other's.
pub async fn spawn(
    jail: &str,
    specs: &[ActionSpec],
    metrics: JailMetrics,
    restored: Vec<BanOrder>,
    state_unread: bool,
) -> std::io::Result<Runner> {
    let restore = Restore {
        bans: restored,
        state_unread,
    };
    spawn_with(jail, specs, metrics, restore, QUEUE_DEPTH, true).await
}

/// As [`spawn`], with a queue of batches: each batch is applied with whatever else is queued
/// as bursts, in order. For the fleet's followers, whose objects are not recorded (their jails
/// come from events, not the config, so no start could tell one no longer wanted).
pub async fn spawn_batched(
    jail: &str,
    specs: &[ActionSpec],
    metrics: JailMetrics,
    restored: Vec<BanOrder>,
    state_unread: bool,
) -> std::io::Result<Runner<Vec<ActionCommand>>> {
    let restore = Restore {
        bans: restored,
        state_unread,
    };
    spawn_with(jail, specs, metrics, restore, BATCH_QUEUE_DEPTH, false).await
}

/// What a runner's start reconciles its actions with ([`spawn`]).
struct Restore {
    /// The bans that should be active.
    bans: Vec<BanOrder>,
    /// Keep every ban the kernel holds beyond them: the state could not be read at start.
    state_unread: bool,
}

/// Starts the runner; with `record`, the firewall objects its actions make are recorded in the
/// state (so a start after the jail left the config removes them, [`super::sweep`]).
async fn spawn_with<C: Queued>(
    jail: &str,
    specs: &[ActionSpec],
    metrics: JailMetrics,
    restore: Restore,
    depth: usize,
    record: bool,
) -> std::io::Result<Runner<C>> {
    let (queue, commands) = mpsc::channel(depth);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let identities = super::command_identities(specs);
    let actions: Vec<Box<dyn Action>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let nth = specs[..i].iter().filter(|o| o.kind() == s.kind()).count();
            s.build_nth(jail, nth, &identities)
        })
        .collect();
    let made: Vec<Option<FirewallSpec>> = specs
        .iter()
        .map(|s| s.firewall().filter(|_| record).cloned())
        .collect();
    let jail = jail.to_string();
    let handed_over = HandedOver::default();
    let handed = handed_over.clone();
    let lift_at_stop = LiftAtStop::default();
    let lifting = lift_at_stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("action-{jail}"))
        .spawn(move || {
            let mut runner = Worker::new(jail, actions, metrics);
            runner.state_unread = restore.state_unread;
            runner.handed_over = handed;
            runner.lift_at_stop = lifting;
            if made.iter().any(Option::is_some) {
                runner.records = records::open_configured();
                for (slot, spec) in runner.slots.iter_mut().zip(made) {
                    slot.made = spec;
                }
            }
            let started = runner.start(&restore.bans);
            let _ = started_tx.send(started);
            runner.serve(commands);
            runner.stop();
        })?;
    // An error here means the thread died before starting; the join at shutdown reports it.
    let (reapplied, start_failures) = started.await.unwrap_or_default();
    Ok(Runner {
        queue,
        thread,
        reapplied,
        handed_over,
        start_failures,
        lift_at_stop,
    })
}

/// One action with its error counter.
struct Slot {
    action: Box<dyn Action>,
    errors: ::metrics::Counter,
    /// Commands that failed every retry, in order, tried again every [`BACKLOG_RETRY`].
    backlog: Vec<ActionCommand>,
    /// The settings of a firewall action whose objects are recorded in the state.
    made: Option<FirewallSpec>,
}

impl Slot {
    /// Drops backlog commands of a target `burst` names again: the newer command decides (a
    /// ban that failed, then lifted, must not be applied late).
    fn supersede(&mut self, burst: &[ActionCommand]) {
        if self.backlog.is_empty() {
            return;
        }
        let named: HashSet<IpNetwork> = burst.iter().map(|c| c.target()).collect();
        self.backlog.retain(|c| !named.contains(&c.target()));
    }
}

/// The runner thread's state.
struct Worker {
    jail: String,
    slots: Vec<Slot>,
    metrics: JailMetrics,
    /// [`BACKLOG_RETRY`], shorter in tests.
    backlog_retry: Duration,
    /// Where the firewall objects of the actions are recorded (None: not recorded).
    records: Option<Records>,
    /// Opening the records late ([`Worker::record_late`]).
    reopen: records::Reopen,
    /// Objects another jail took over: left at stop ([`Runner::handed_over`]).
    handed_over: HandedOver,
    /// Actions whose held bans the stop unbans first ([`Runner::lift_at_stop`]).
    lift_at_stop: LiftAtStop,
    /// The start keeps every ban the kernel holds: the state could not be read ([`spawn`]).
    state_unread: bool,
}

impl Worker {
    fn new(jail: String, actions: Vec<Box<dyn Action>>, metrics: JailMetrics) -> Self {
        let slots = actions
            .into_iter()
            .map(|action| {
                let errors = metrics::action_errors(&jail, action.kind().name());
                errors.absolute(0);
                Slot {
                    action,
                    errors,
                    backlog: Vec::new(),
                    made: None,
                }
            })
            .collect();
        Worker {
            jail,
            slots,
            metrics,
            backlog_retry: BACKLOG_RETRY,
            records: None,
            reopen: records::Reopen::default(),
            handed_over: HandedOver::default(),
            lift_at_stop: LiftAtStop::default(),
            state_unread: false,
        }
    }

    /// Tries every action's backlog again; what still fails stays for the next round.
    fn retry_backlogs(&mut self) {
        let handed = self.handed();
        for slot in &mut self.slots {
            if taken(slot, &handed) {
                slot.backlog.clear();
            }
            if slot.backlog.is_empty() {
                continue;
            }
            let backlog = std::mem::take(&mut slot.backlog);
            tracing::info!(jail = %self.jail, action = slot.action.kind().name(), commands = backlog.len(), "retrying firewall commands that failed");
            // A burst at a time, as they first came: one transaction stays bounded.
            for chunk in backlog.chunks(MAX_BURST) {
                apply_with(&self.jail, slot, chunk, &[]);
            }
        }
    }

    /// Starts every action and reconciles it with `restored`; returns how many restored bans
    /// were added again, and which actions failed to start (`action: error`).
    fn start(&mut self, restored: &[BanOrder]) -> (usize, Vec<String>) {
        let mut reapplied = 0;
        let mut failures = Vec::new();
        for slot in &mut self.slots {
            let kind = slot.action.kind();
            // Recorded before they are made: a crash while they are made leaves them recorded.
            if let Some(records) = self.records.as_mut() {
                remove_changed(records, &self.jail, slot);
                record_made(records, &self.jail, slot);
            }
            if let Err(error) = retry(|| slot.action.start()) {
                slot.errors.increment(1);
                tracing::error!(jail = %self.jail, action = kind.name(), %error, "action failed to start");
                failures.push(format!("{}: {error}", kind.name()));
            }
            reapplied += reconcile(&self.jail, slot, restored, self.state_unread);
        }
        (reapplied, failures)
    }

    /// Records the firewall objects of the actions once the state database opened after start
    /// (tried at a burst, at most every [`records::REOPEN_EVERY`]): otherwise a crash, then a
    /// start without the jail, would leave them in the kernel for good.
    fn record_late(&mut self) {
        if self.records.is_some() || self.slots.iter().all(|s| s.made.is_none()) {
            return;
        }
        let Some(mut opened) = self.reopen.try_open() else {
            return;
        };
        // Objects another jail took over are its to record. Those an earlier run made with
        // other settings are not removed now (the action runs in objects of the same names):
        // recorded apart, for the stop and the next start to remove.
        let handed = self.handed();
        for slot in self.slots.iter().filter(|s| !taken(s, &handed)) {
            if let Some(old) = changed(&opened, &self.jail, slot) {
                note_stale(&mut opened, &self.jail, slot, &old);
            }
            record_made(&mut opened, &self.jail, slot);
        }
        self.records = Some(opened);
    }

    /// Takes bursts off the queue until every sender is gone (a batch may take a burst past
    /// [`MAX_BURST`]; senders of batches keep them at most that long).
    fn serve<C: Queued>(&mut self, mut commands: mpsc::Receiver<C>) {
        let mut burst = Vec::with_capacity(MAX_BURST);
        let mut retry_at: Option<Instant> = None;
        loop {
            if self.slots.iter().all(|s| s.backlog.is_empty()) {
                retry_at = None;
            } else {
                let due = *retry_at.get_or_insert_with(|| Instant::now() + self.backlog_retry);
                if Instant::now() >= due {
                    self.retry_backlogs();
                    retry_at = None;
                    continue;
                }
            }
            let first = match retry_at {
                None => match commands.blocking_recv() {
                    Some(first) => first,
                    None => break,
                },
                Some(due) => match recv_until(&mut commands, due) {
                    Waited::Got(first) => first,
                    Waited::Closed => break,
                    Waited::TimedOut => continue,
                },
            };
            burst.clear();
            first.into_burst(&mut burst);
            while burst.len() < MAX_BURST {
                match commands.try_recv() {
                    Ok(command) => command.into_burst(&mut burst),
                    Err(_) => break,
                }
            }
            if burst.is_empty() {
                continue;
            }
            self.record_late();
            // Once per burst, before any slot applies it (a taken slot is skipped, but the
            // bans its unbans end are over all the same).
            ended(&self.jail, &burst);
            let handed = self.handed();
            for slot in &mut self.slots {
                if taken(slot, &handed) {
                    // Another jail's bans are in these objects now (a removed jail's lifts
                    // would delete its bans of the same addresses); its start's reconcile
                    // removed what this jail had there.
                    continue;
                }
                slot.supersede(&burst);
                apply_with(&self.jail, slot, &burst, &RETRY_DELAYS);
            }
            let now = Instant::now();
            for command in &burst {
                if let ActionCommand::Ban(
                    order @ BanOrder {
                        from_state: false, ..
                    },
                ) = command
                {
                    self.metrics
                        .ban_latency
                        .record(now.duration_since(order.decided_at).as_secs_f64());
                }
            }
        }
    }

    /// The objects another jail took over ([`Runner::handed_over`]).
    fn handed(&self) -> Vec<(&'static str, String)> {
        self.handed_over
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        // Records opened late and no burst since: recorded now, whenever last tried, so
        // objects kept at stop (`keep_on_stop`) are known to the next start's sweep.
        self.reopen.force();
        self.record_late();
        let handed = self.handed();
        let lifting: Vec<usize> = self
            .lift_at_stop
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let kind = slot.action.kind();
            if taken(slot, &handed) {
                // Another jail's runner uses these objects now: its bans go on in them.
                tracing::info!(jail = %self.jail, action = kind.name(), "[{}] firewall objects left to the jail that took their name", self.jail);
                continue;
            }
            if lifting.contains(&i) {
                // Nothing would run their unbans later (the action is dropped): now, with or
                // without a state database to find them in at the next start.
                let unbans: Vec<ActionCommand> = slot
                    .action
                    .held()
                    .into_iter()
                    .map(ActionCommand::Unban)
                    .collect();
                if !unbans.is_empty() {
                    tracing::info!(jail = %self.jail, action = kind.name(), bans = unbans.len(), "[{}] lifting the bans of an action the jail no longer runs", self.jail);
                }
                // Bounded as the lifting at start is: one try each (an action is often
                // dropped because its program fails or hangs), and LIFT_AT_STOP_BUDGET in
                // all, since a reload waits for this stop. What is left is still recorded
                // where there are records, and lifted from them after the stop.
                let began = Instant::now();
                for (done, unban) in unbans.chunks(1).enumerate() {
                    if began.elapsed() >= LIFT_AT_STOP_BUDGET {
                        tracing::warn!(jail = %self.jail, action = kind.name(), left = unbans.len() - done, "[{}] lifting at stop ran out of time: the rest is lifted from the records, if there are any", self.jail);
                        break;
                    }
                    ended(&self.jail, unban);
                    apply_with(&self.jail, slot, unban, &[]);
                }
            }
            let removing = slot.made.as_ref().filter(|spec| !spec.keep_on_stop);
            if let (Some(records), Some(spec)) = (self.records.as_mut(), removing) {
                // Objects of earlier settings whose removal failed may keep the current ones
                // in use (an old hook that jumps to the same chain): a first try before the
                // current ones go, the counted one after.
                remove_stale(records, &self.jail, slot, &spec.name, Stale::BeforeStop);
            }
            if let Err(error) = retry(|| slot.action.stop()) {
                slot.errors.increment(1);
                tracing::error!(jail = %self.jail, action = kind.name(), %error, "action failed to stop");
                continue;
            }
            // Removed: nothing is left for a later start to remove (kept ones stay recorded).
            let removed = slot.made.as_ref().filter(|spec| !spec.keep_on_stop);
            if let (Some(records), Some(spec)) = (self.records.as_mut(), removed) {
                if let Err(error) = records.unmade(kind.name(), &spec.name, &self.jail) {
                    crate::metrics::state_errors().increment(1);
                    tracing::error!(jail = %self.jail, action = kind.name(), %error, "cannot forget the removed firewall objects");
                }
                // Objects of earlier settings whose removal failed: the current ones are gone,
                // so removing those now touches nothing that runs (kept ones wait for the
                // next start, which removes them before it makes the objects again).
                remove_stale(records, &self.jail, slot, &spec.name, Stale::AfterStop);
            }
        }
    }
}

/// Whether `slot`'s firewall objects are among those another jail took over (`handed`).
fn taken(slot: &Slot, handed: &[(&'static str, String)]) -> bool {
    let kind = slot.action.kind();
    slot.made.as_ref().is_some_and(|spec| {
        handed
            .iter()
            .any(|(b, n)| *b == kind.name() && *n == spec.name)
    })
}

/// Whether a record of objects (`old`, JSON of a `FirewallSpec`) was made with `spec`'s
/// settings (whether they are kept at stop aside).
fn same_settings(old: &str, spec: &FirewallSpec) -> bool {
    serde_json::from_str::<FirewallSpec>(old).is_ok_and(|was| {
        FirewallSpec {
            keep_on_stop: spec.keep_on_stop,
            ..was
        } == *spec
    })
}

/// The record of `slot`'s objects when it was made with other settings than the slot's.
fn changed(records: &Records, jail: &str, slot: &Slot) -> Option<records::ObjectRecord> {
    let spec = slot.made.as_ref()?;
    let kind = slot.action.kind();
    match records.object(kind.name(), &spec.name) {
        Ok(old) => old.filter(|old| !same_settings(&old.spec, spec)),
        Err(error) => {
            crate::metrics::state_errors().increment(1);
            tracing::error!(jail, action = kind.name(), %error, "cannot read which firewall objects an earlier run made");
            None
        }
    }
}

/// Removes the objects an earlier run recorded under `slot`'s backend and name with other
/// settings (ports, protocol, blocktype...), kept at its stop (`keep_on_stop`) or left by a
/// crash: the start only adds the new settings' hooks, so the old ones (an old port's rule)
/// would stay for ever and keep the objects in use. Their bans are added again by the start's
/// reconcile. Called before the action starts; also tries again those whose removal failed
/// before (kept in the record apart, [`Records::add_stale`]), and keeps those that fail again.
fn remove_changed(records: &mut Records, jail: &str, slot: &Slot) {
    let Some(spec) = slot.made.as_ref() else {
        return;
    };
    if let Some(old) = changed(records, jail, slot) {
        // Kept apart from now: the record of the objects gets the new settings next.
        note_stale(records, jail, slot, &old);
    }
    remove_stale(records, jail, slot, &spec.name, Stale::BeforeStart);
}

/// Keeps `old` (objects made with other settings) recorded apart until their removal succeeds.
fn note_stale(records: &mut Records, jail: &str, slot: &Slot, old: &records::ObjectRecord) {
    if let Err(error) = records.add_stale(old) {
        crate::metrics::state_errors().increment(1);
        tracing::error!(jail, action = slot.action.kind().name(), %error, "cannot record the firewall objects of earlier settings");
    }
}

/// When objects of earlier settings are removed ([`remove_stale`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// Before the action starts: the current settings' objects a crash left (same names: an
    /// iptables chain the old hooks' removal cannot delete while the current hooks jump to it)
    /// are removed first; the start makes them again at once and its reconcile adds their bans
    /// back.
    BeforeStart,
    /// Before the action's stop: a first try, whose failure is neither logged as an error nor
    /// counted (the current objects may still keep them in use).
    BeforeStop,
    /// After the action's stop removed the current objects.
    AfterStop,
}

/// Removes the objects of earlier settings recorded apart for `slot`'s backend and `name`, and
/// forgets each removed; one that fails stays for the next try (the next start, or the stop).
fn remove_stale(records: &mut Records, jail: &str, slot: &Slot, name: &str, when: Stale) {
    let kind = slot.action.kind();
    let stale = match records.stale(Some((kind.name(), name))) {
        Ok(stale) => stale,
        Err(error) => {
            crate::metrics::state_errors().increment(1);
            tracing::error!(jail, action = kind.name(), %error, "cannot read which firewall objects of earlier settings wait for removal");
            return;
        }
    };
    let current_spec = slot.made.as_ref();
    let others = stale
        .iter()
        .any(|old| current_spec.is_none_or(|spec| !same_settings(&old.spec, spec)));
    if let (Stale::BeforeStart, true, Some(spec)) = (when, others, current_spec) {
        let current = records::ObjectRecord {
            backend: kind.name().to_string(),
            name: name.to_string(),
            jail: jail.to_string(),
            spec: serde_json::to_string(spec).unwrap_or_default(),
        };
        if let Ok(Some(action)) = super::sweep::remover(&current) {
            if let Err(error) = action.build(jail).stop() {
                tracing::debug!(jail, action = kind.name(), name, %error, "removing the current settings' objects before those of earlier ones");
            }
        }
    }
    for old in stale {
        let current = slot
            .made
            .as_ref()
            .is_some_and(|spec| same_settings(&old.spec, spec));
        if current {
            // The settings came back: the start makes (or made) these objects again.
            super::sweep::forget_stale(records, &old);
            continue;
        }
        match super::sweep::remove_stale(records, &old, super::sweep::Unreadable::Keep) {
            Ok(()) => {
                tracing::info!(
                    jail,
                    action = kind.name(),
                    name,
                    "[{jail}] removed the firewall objects an earlier run made with other settings"
                );
            }
            Err(error) if when == Stale::BeforeStop => {
                tracing::debug!(jail, action = kind.name(), name, %error, "the firewall objects of earlier settings are tried again after the stop");
            }
            Err(error) => {
                slot.errors.increment(1);
                tracing::error!(jail, action = kind.name(), name, %error, "cannot remove the firewall objects an earlier run made with other settings; their hooks may stay: tried again at the stop and the next start");
            }
        }
    }
}

/// Records, before it makes them, the firewall objects of `slot`'s action (if it makes any).
fn record_made(records: &mut Records, jail: &str, slot: &Slot) {
    let Some(spec) = slot.made.as_ref() else {
        return;
    };
    let kind = slot.action.kind();
    let written = serde_json::to_string(spec)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            records
                .made(kind.name(), &spec.name, jail, &json)
                .map_err(|e| e.to_string())
        });
    if let Err(error) = written {
        crate::metrics::state_errors().increment(1);
        tracing::error!(jail, action = kind.name(), %error, "cannot record the firewall objects the action makes");
    }
}

/// Calls `f` until it succeeds or every retry is spent.
fn retry(mut f: impl FnMut() -> Result<(), ActionError>) -> Result<(), ActionError> {
    let mut result = f();
    for delay in RETRY_DELAYS {
        if result.is_ok() {
            break;
        }
        std::thread::sleep(delay);
        result = f();
    }
    result
}

/// What waiting for the next command until a deadline gave.
enum Waited<C> {
    Got(C),
    TimedOut,
    Closed,
}

/// The next command, or none by `until`: the queue is polled every 20 ms, which only a runner
/// with a backlog does (a blocking receive has no deadline), so a ban waits at most that much
/// longer while the firewall is failing.
fn recv_until<C>(commands: &mut mpsc::Receiver<C>, until: Instant) -> Waited<C> {
    loop {
        match commands.try_recv() {
            Ok(command) => return Waited::Got(command),
            Err(mpsc::error::TryRecvError::Disconnected) => return Waited::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= until {
            return Waited::TimedOut;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// Applies a burst, retrying what failed; logs once and counts each command that never
/// applied, and keeps it in the action's backlog for a later try.
/// The commands of `failed` that fail on their own: the batch is tried in halves (each half
/// once), down to single commands, so what applies goes in and only what the backend refuses
/// stays out. A backend that applies part of a batch says which part failed: only that part is
/// split further. About 2·log2(n) tries per refused command, and at most enough tries for four
/// of them: a backend that refuses everything (down, locked) costs a bounded number of tries,
/// and what was not tried stays failed.
fn isolate(action: &mut dyn Action, failed: Vec<ActionCommand>) -> Vec<ActionCommand> {
    let depth = usize::BITS as usize - failed.len().leading_zeros() as usize;
    let mut budget = 8 * (depth + 1);
    split(action, failed, &mut budget)
}

/// [`isolate`]'s halving, spending `budget` tries.
fn split(
    action: &mut dyn Action,
    failed: Vec<ActionCommand>,
    budget: &mut usize,
) -> Vec<ActionCommand> {
    if failed.len() <= 1 || *budget < 2 {
        if failed.len() == 1 && *budget > 0 {
            *budget -= 1;
            if action.apply(&failed).is_ok() {
                return Vec::new();
            }
        }
        return failed;
    }
    let half = failed.len() / 2;
    let mut refused = Vec::new();
    for part in [&failed[..half], &failed[half..]] {
        if *budget == 0 {
            refused.extend_from_slice(part);
            continue;
        }
        *budget -= 1;
        if let Err(error) = action.apply(part) {
            let pending: Vec<ActionCommand> = error
                .pending
                .iter()
                .filter_map(|&i| part.get(i).cloned())
                .collect();
            if pending.len() == 1 {
                refused.extend(pending);
            } else {
                refused.extend(split(action, pending, budget));
            }
        }
    }
    refused
}

/// Refused bans already counted in this process (jail, backend, target): a reload that starts
/// a jail's actions again re-applies its bans, and a ban the firewall can never apply (IPv6
/// without ip6tables) must not be counted again at each. Any unban of the target in the jail,
/// through whichever backend (the ban ended: the jail may have moved to another backend since,
/// or ip6tables works again), forgets it for every backend, so a later ban of the same target
/// counts ([`ended`]). A restart counts them again, once.
static REFUSALS_COUNTED: std::sync::Mutex<Option<HashSet<Refusal>>> = std::sync::Mutex::new(None);

/// Whether [`REFUSALS_COUNTED`] ever held a refusal: until then an unban costs no lock.
static ANY_REFUSAL: AtomicBool = AtomicBool::new(false);

/// Forgets the counted refusals of the targets `burst` unbans in `jail`, for every backend:
/// their bans ended ([`REFUSALS_COUNTED`]).
fn ended(jail: &str, burst: &[ActionCommand]) {
    if !ANY_REFUSAL.load(Ordering::Relaxed) {
        return;
    }
    let mut unbans = burst.iter().filter_map(|c| match c {
        ActionCommand::Unban(target) => Some(*target),
        ActionCommand::Ban(_) => None,
    });
    let Some(first) = unbans.next() else {
        return;
    };
    let mut counted = REFUSALS_COUNTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(counted) = counted.as_mut() else {
        return;
    };
    for target in std::iter::once(first).chain(unbans) {
        for kind in super::ActionKind::ALL {
            counted.remove(&(jail.to_string(), kind.name(), target));
        }
    }
}

/// A refused ban: its jail, backend and target.
type Refusal = (String, &'static str, IpNetwork);

/// Most refused bans remembered as counted; past it the memory starts over (each then counted
/// once more at the next reload), so it stays bounded if their unbans never come.
const REFUSALS_REMEMBERED: usize = 1_000_000;

/// Counts, once per process, the bans of `tried` the backend refused for good (IPv6 without
/// ip6tables) and logs them once: they are neither retried nor kept for later, and their
/// unbans are done (nothing of them is in the firewall).
fn refuse(jail: &str, slot: &mut Slot, tried: &[ActionCommand], failed: &super::BatchError) {
    if failed.refused.is_empty() {
        return;
    }
    let backend = slot.action.kind().name();
    let mut new_bans = 0u64;
    let mut refused_bans = Vec::new();
    {
        let mut counted = REFUSALS_COUNTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counted = counted.get_or_insert_with(HashSet::new);
        // A refused unban was forgotten before it was tried ([`ended`]).
        for (i, command) in failed
            .refused
            .iter()
            .filter_map(|&i| Some((i, tried.get(i)?)))
        {
            if let ActionCommand::Ban(_) = command {
                refused_bans.push(command);
                // Its unban follows in the same burst: the ban is over already, counted but
                // not remembered (a later ban of the target is a new one).
                let target = command.target();
                let unbanned = tried
                    .iter()
                    .skip(i + 1)
                    .any(|later| matches!(later, ActionCommand::Unban(t) if *t == target));
                if unbanned {
                    new_bans += 1;
                    continue;
                }
                if counted.len() >= REFUSALS_REMEMBERED {
                    counted.clear();
                }
                if counted.insert((jail.to_string(), backend, command.target())) {
                    ANY_REFUSAL.store(true, Ordering::Relaxed);
                    new_bans += 1;
                }
            }
        }
    }
    let Some(first) = refused_bans.first() else {
        return;
    };
    slot.errors.increment(new_bans);
    tracing::error!(
        jail,
        action = backend,
        bans = refused_bans.len(),
        counted = new_bans,
        first = %super::element_text(first.target()),
        error = %failed.error,
        "bans the firewall cannot apply: counted once, not tried again"
    );
}

fn apply(jail: &str, slot: &mut Slot, burst: &[ActionCommand]) {
    ended(jail, burst);
    apply_with(jail, slot, burst, &RETRY_DELAYS);
}

/// [`apply`] with its own pauses before each retry: none for the backlog, which is itself the
/// retry (a runner waiting out pauses there would hold up new bans).
fn apply_with(jail: &str, slot: &mut Slot, burst: &[ActionCommand], delays: &[Duration]) {
    let mut pending: Vec<ActionCommand> = burst.to_vec();
    let mut last_error = None;
    let mut tries = 0;
    for &delay in std::iter::once(&Duration::ZERO).chain(delays) {
        std::thread::sleep(delay);
        tries += 1;
        match slot.action.apply(&pending) {
            Ok(()) => {
                pending.clear();
                break;
            }
            Err(failed) => {
                tracing::debug!(jail, action = slot.action.kind().name(), tries, failed = failed.pending.len(), error = %failed.error, "burst failed; retrying");
                refuse(jail, slot, &pending, &failed);
                pending = failed
                    .pending
                    .iter()
                    .filter_map(|&i| pending.get(i).cloned())
                    .collect();
                last_error = Some(failed.error);
                if pending.is_empty() {
                    break;
                }
            }
        }
    }
    if pending.len() > 1 {
        // Transactional backends fail a burst whole: one command the backend refuses (an nft
        // interval that overlaps one in the set, an address a full ipset cannot take) must
        // not keep the rest of the burst out of the firewall, now or at every later retry.
        pending = isolate(slot.action.as_mut(), pending);
    }
    if pending.is_empty() {
        return;
    }
    slot.errors.increment(pending.len() as u64);
    let bans = pending
        .iter()
        .filter(|c| matches!(c, ActionCommand::Ban(_)))
        .count();
    let first = pending.first().map(|c| super::element_text(c.target()));
    tracing::error!(
        jail,
        action = slot.action.kind().name(),
        failed = pending.len(),
        bans,
        unbans = pending.len() - bans,
        burst = burst.len(),
        tries,
        first = first.as_deref().unwrap_or(""),
        error = %last_error.map(|e| e.to_string()).unwrap_or_default(),
        "action failed; the jail still counts these bans as active, and they are tried again every {}s",
        BACKLOG_RETRY.as_secs()
    );
    slot.backlog.extend(pending);
    if slot.backlog.len() > BACKLOG_MAX {
        let dropped = slot.backlog.len() - BACKLOG_MAX;
        slot.backlog.drain(..dropped);
        tracing::error!(
            jail,
            action = slot.action.kind().name(),
            dropped,
            "too many failed firewall commands waiting: the oldest are not tried again until a restart"
        );
    }
}

/// Brings the kernel in line with the bans that should be active: with a listing, lifts what
/// is there but not wanted and adds what is missing; without one, adds every wanted ban.
/// Returns how many bans it added.
fn reconcile(jail: &str, slot: &mut Slot, restored: &[BanOrder], keep_unknown: bool) -> usize {
    let kind = slot.action.kind();
    let current = match slot.action.list() {
        Ok(current) => current,
        Err(error) => {
            slot.errors.increment(1);
            tracing::error!(jail, action = kind.name(), %error, "cannot list the firewall; adding every restored ban");
            None
        }
    };
    let mut commands = Vec::new();
    match &current {
        Some(current) => {
            let wanted: HashSet<IpNetwork> = restored.iter().map(|o| o.target).collect();
            // A doubtful target counts as present when unwanted (lifted) and as missing when
            // wanted (applied again).
            let doubtful: HashSet<IpNetwork> = slot.action.doubtful().into_iter().collect();
            let mut present: HashSet<IpNetwork> = current.iter().copied().collect();
            let unknown: Vec<IpNetwork> = present
                .iter()
                .chain(&doubtful)
                .filter(|t| !wanted.contains(t))
                .copied()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            present.retain(|t| !doubtful.contains(t));
            let unknown = unknown.iter();
            if keep_unknown {
                let kept = unknown.count();
                if kept > 0 {
                    tracing::warn!(
                        jail,
                        action = kind.name(),
                        kept,
                        "[{jail}] kept {kept} firewall entries the state could not confirm: it was not readable"
                    );
                }
            } else {
                commands.extend(unknown.map(|t| ActionCommand::Unban(*t)));
            }
            commands.extend(
                restored
                    .iter()
                    .filter(|o| !present.contains(&o.target))
                    .map(|o| ActionCommand::Ban(o.clone())),
            );
        }
        None => commands.extend(restored.iter().cloned().map(ActionCommand::Ban)),
    }
    let removed = commands
        .iter()
        .filter(|c| matches!(c, ActionCommand::Unban(_)))
        .count();
    let added = commands.len() - removed;
    if !commands.is_empty() || current.is_some() {
        tracing::debug!(
            jail,
            action = kind.name(),
            listed = current.as_ref().map_or(0, Vec::len),
            removed,
            added,
            "reconciled"
        );
    }
    if removed > 0 {
        tracing::info!(
            jail,
            action = kind.name(),
            removed,
            "[{jail}] lifted {removed} firewall entries no ban of ours holds"
        );
    }
    for burst in commands.chunks(MAX_BURST) {
        apply(jail, slot, burst);
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::BatchError;
    use std::sync::{Arc, Mutex};

    /// Records calls; fails the first `fail` apply calls whole, and every call (whole) whose
    /// batch holds `refuse`, as a transactional backend does with a command it rejects. With
    /// `no_v6`, a backend that can never apply IPv6 commands (a host without ip6tables) and
    /// applies the rest.
    struct Fake {
        listed: Option<Vec<IpNetwork>>,
        doubtful: Vec<IpNetwork>,
        applied: Arc<Mutex<Vec<ActionCommand>>>,
        fail: usize,
        refuse: Option<IpNetwork>,
        calls: Arc<std::sync::atomic::AtomicUsize>,
        no_v6: bool,
    }

    impl Fake {
        /// Applies everything, into `applied`; lists nothing.
        fn applying(applied: &Arc<Mutex<Vec<ActionCommand>>>) -> Fake {
            Fake {
                listed: None,
                doubtful: Vec::new(),
                applied: applied.clone(),
                fail: 0,
                refuse: None,
                calls: Default::default(),
                no_v6: false,
            }
        }

        /// A backend without ip6tables whose records nobody reads.
        fn no_v6() -> Fake {
            Fake {
                no_v6: true,
                ..Fake::applying(&Arc::default())
            }
        }
    }

    use crate::action::ActionKind;

    impl Action for Fake {
        fn kind(&self) -> ActionKind {
            ActionKind::Log
        }
        fn start(&mut self) -> Result<(), ActionError> {
            Ok(())
        }
        fn ban(&mut self, _: &BanOrder) -> Result<(), ActionError> {
            unreachable!("apply is overridden")
        }
        fn unban(&mut self, _: IpNetwork) -> Result<(), ActionError> {
            unreachable!("apply is overridden")
        }
        fn apply(&mut self, batch: &[ActionCommand]) -> Result<(), BatchError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.no_v6 {
                let (refused, v4): (Vec<usize>, Vec<usize>) =
                    (0..batch.len()).partition(|&i| batch[i].target().is_ipv6());
                let mut applied = self.applied.lock().unwrap();
                applied.extend(v4.iter().map(|&i| batch[i].clone()));
                if refused.is_empty() {
                    return Ok(());
                }
                return Err(BatchError {
                    pending: Vec::new(),
                    error: ActionError("ip6tables is not usable".into()),
                    refused,
                });
            }
            let refused = self
                .refuse
                .is_some_and(|r| batch.iter().any(|c| c.target() == r));
            if refused {
                return Err(BatchError {
                    pending: (0..batch.len()).collect(),
                    error: ActionError("overlaps".into()),
                    refused: Vec::new(),
                });
            }
            if self.fail > 0 {
                self.fail -= 1;
                return Err(BatchError {
                    pending: (0..batch.len()).collect(),
                    error: ActionError("no".into()),
                    refused: Vec::new(),
                });
            }
            self.applied.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
        fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
            Ok(self.listed.clone())
        }
        fn doubtful(&self) -> Vec<IpNetwork> {
            self.doubtful.clone()
        }
        fn stop(&mut self) -> Result<(), ActionError> {
            Ok(())
        }
    }

    fn order(target: &str) -> BanOrder {
        BanOrder {
            target: target.parse().unwrap(),
            failures: 1,
            bantime: None,
            decided_at: Instant::now(),
            from_state: false,
            evidence: Default::default(),
        }
    }

    fn slot(listed: Option<Vec<&str>>, fail: usize) -> (Slot, Arc<Mutex<Vec<ActionCommand>>>) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            listed: listed.map(|l| l.iter().map(|t| t.parse().unwrap()).collect()),
            fail,
            ..Fake::applying(&applied)
        };
        let errors = metrics::action_errors("t", "fake");
        (
            Slot {
                action: Box::new(fake),
                errors,
                backlog: Vec::new(),
                made: None,
            },
            applied,
        )
    }

    /// A slot over `action` whose errors count into `counted`.
    fn counting(
        action: impl Action + 'static,
        counted: &Arc<std::sync::atomic::AtomicU64>,
    ) -> Slot {
        Slot {
            action: Box::new(action),
            errors: ::metrics::Counter::from_arc(counted.clone()),
            backlog: Vec::new(),
            made: None,
        }
    }

    /// A worker of `jail` with `slot` alone, retrying its backlog every `backlog_retry`, with no
    /// record and the state read.
    fn worker(jail: &str, slot: Slot, backlog_retry: Duration) -> Worker {
        Worker {
            jail: jail.into(),
            slots: vec![slot],
            metrics: JailMetrics::new(jail),
            backlog_retry,
            records: None,
            reopen: records::Reopen::default(),
            handed_over: HandedOver::default(),
            lift_at_stop: LiftAtStop::default(),
            state_unread: false,
        }
    }

    #[test]
    fn reconcile_lifts_the_stale_and_adds_the_missing() {
        let applied_with = |keep_unknown| {
            let (mut s, applied) = slot(Some(vec!["192.0.2.1/32", "192.0.2.2/32"]), 0);
            let restored = [order("192.0.2.2/32"), order("2001:db8::/64")];
            reconcile("t", &mut s, &restored, keep_unknown);
            let seen: Vec<(bool, String)> = applied
                .lock()
                .unwrap()
                .iter()
                .map(|c| (matches!(c, ActionCommand::Ban(_)), c.target().to_string()))
                .collect();
            seen
        };
        assert_eq!(
            applied_with(false),
            [
                (false, "192.0.2.1/32".to_string()),
                (true, "2001:db8::/64".to_string())
            ]
        );
        // With the state unread, what the kernel holds beyond the restored bans stays.
        assert_eq!(applied_with(true), [(true, "2001:db8::/64".to_string())]);
    }

    /// Whether the state was read is each runner's own (given at its spawn), not the process's:
    /// a runner told the state was unread keeps what the kernel holds, and one built after it
    /// in the same process, told it was read, still lifts what no restored ban wants.
    #[test]
    fn the_state_unread_flag_is_each_runners_own() {
        let start = |state_unread: bool| {
            let (s, applied) = slot(Some(vec!["192.0.2.1/32"]), 0);
            let mut worker = Worker::new("t".into(), vec![s.action], JailMetrics::new("t"));
            worker.state_unread = state_unread;
            worker.start(&[order("192.0.2.2/32")]);
            let seen: Vec<String> = applied
                .lock()
                .unwrap()
                .iter()
                .map(|c| format!("{} {}", matches!(c, ActionCommand::Ban(_)), c.target()))
                .collect();
            seen
        };
        // The unread one first: with the old process-wide flag, it set it for the second too.
        assert_eq!(start(true), ["true 192.0.2.2/32"]);
        assert_eq!(start(false), ["false 192.0.2.1/32", "true 192.0.2.2/32"]);
        assert_eq!(start(true), ["true 192.0.2.2/32"]);
    }

    /// A target whose last command a crash may have cut short (the command action's unsettled
    /// record) is lifted when no ban wants it and applied again when one does.
    #[test]
    fn a_doubtful_target_is_lifted_when_unwanted_and_applied_again_when_wanted() {
        let (mut s, applied) = slot(Some(vec!["192.0.2.1/32", "192.0.2.2/32"]), 0);
        let doubtful: Vec<IpNetwork> = ["192.0.2.3/32", "192.0.2.4/32"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        s.action = Box::new(Fake {
            listed: Some(vec!["192.0.2.1/32".parse().unwrap()]),
            doubtful,
            ..Fake::applying(&applied)
        });
        let restored = [
            order("192.0.2.1/32"),
            order("192.0.2.4/32"),
            order("192.0.2.5/32"),
        ];
        reconcile("t", &mut s, &restored, false);
        let mut seen: Vec<(bool, String)> = applied
            .lock()
            .unwrap()
            .iter()
            .map(|c| (matches!(c, ActionCommand::Ban(_)), c.target().to_string()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (false, "192.0.2.3/32".to_string()),
                (true, "192.0.2.4/32".to_string()),
                (true, "192.0.2.5/32".to_string()),
            ]
        );
    }

    #[test]
    fn without_a_listing_every_restored_ban_is_added() {
        let (mut s, applied) = slot(None, 0);
        reconcile("t", &mut s, &[order("192.0.2.2/32")], false);
        assert_eq!(applied.lock().unwrap().len(), 1);
    }

    #[test]
    fn commands_that_failed_every_retry_are_tried_again_later_unless_superseded() {
        // Four tries fail, the fifth (the backlog's, 50 ms later) applies.
        let (s, applied) = slot(None, 4);
        let mut worker = worker("t", s, Duration::from_millis(50));
        let (tx, rx) = mpsc::channel::<ActionCommand>(8);
        let serving = std::thread::spawn(move || {
            worker.serve(rx);
            worker
        });
        tx.blocking_send(ActionCommand::Ban(order("192.0.2.3/32")))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while applied.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(applied.lock().unwrap().len(), 1, "applied from the backlog");
        drop(tx);
        let worker = serving.join().unwrap();
        assert!(worker.slots[0].backlog.is_empty());
        // A failed ban that a later command of the same target supersedes leaves the backlog.
        let (mut s, _) = slot(None, 99);
        apply("t", &mut s, &[ActionCommand::Ban(order("192.0.2.4/32"))]);
        assert_eq!(s.backlog.len(), 1);
        s.supersede(&[ActionCommand::Unban("192.0.2.4/32".parse().unwrap())]);
        assert!(s.backlog.is_empty());
    }

    /// One command a transactional backend refuses for good (the whole batch fails with it)
    /// keeps only itself out: the rest of its burst is applied, and so is the rest of the
    /// backlog when it is tried again.
    #[test]
    fn a_command_the_backend_refuses_keeps_only_itself_out_of_the_firewall() {
        let bad: IpNetwork = "198.51.100.0/24".parse().unwrap();
        let (mut s, applied) = slot(None, 0);
        s.action = Box::new(Fake {
            refuse: Some(bad),
            ..Fake::applying(&applied)
        });
        let burst: Vec<ActionCommand> = (0..100u32)
            .map(|i| {
                if i == 37 {
                    ActionCommand::Ban(order("198.51.100.0/24"))
                } else {
                    ActionCommand::Ban(order(&format!("192.0.2.{i}/32")))
                }
            })
            .collect();
        apply("t", &mut s, &burst);
        let targets = |a: &Arc<Mutex<Vec<ActionCommand>>>| -> Vec<IpNetwork> {
            a.lock().unwrap().iter().map(|c| c.target()).collect()
        };
        assert_eq!(targets(&applied).len(), 99, "every other ban applied");
        assert!(!targets(&applied).contains(&bad));
        assert_eq!(s.backlog.len(), 1);
        assert_eq!(s.backlog[0].target(), bad);
        // The backlog, with more failed commands behind the refused one, is retried a burst
        // at a time and the refused one keeps only itself out again.
        applied.lock().unwrap().clear();
        s.backlog.extend((0..1500u32).map(|i| {
            ActionCommand::Unban(format!("10.0.{}.{}/32", i / 250, i % 250).parse().unwrap())
        }));
        let mut worker = worker("t", s, Duration::ZERO);
        worker.retry_backlogs();
        assert_eq!(targets(&applied).len(), 1500);
        assert_eq!(worker.slots[0].backlog.len(), 1);
        // A backend that refuses everything (down, locked) costs a bounded number of tries.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        worker.slots[0].action = Box::new(Fake {
            fail: usize::MAX,
            calls: calls.clone(),
            ..Fake::applying(&applied)
        });
        worker.slots[0].backlog = burst;
        worker.retry_backlogs();
        assert_eq!(worker.slots[0].backlog.len(), 100, "every command stays");
        let tried = calls.load(Ordering::Relaxed);
        assert!(
            tried <= 1 + 8 * 8,
            "{tried} tries for a backend that refuses all"
        );
    }

    /// IPv6 commands a host without ip6tables can never apply: each ban counted once, in the
    /// first try, with no pause for retries and nothing kept for later (so the 30 s retries do
    /// not count it again, and such unbans do not fill the backlog).
    #[test]
    fn commands_refused_for_good_are_counted_once_and_never_retried() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let no_v6 = Fake {
            no_v6: true,
            calls: calls.clone(),
            ..Fake::applying(&applied)
        };
        let mut s = counting(no_v6, &counted);
        let burst = [
            ActionCommand::Ban(order("192.0.2.1/32")),
            ActionCommand::Ban(order("2001:db8::1/128")),
            ActionCommand::Unban("2001:db8::2/128".parse().unwrap()),
            ActionCommand::Ban(order("192.0.2.2/32")),
        ];
        apply("t", &mut s, &burst);
        assert_eq!(counted.load(Ordering::Relaxed), 1, "the IPv6 ban, once");
        assert_eq!(calls.load(Ordering::Relaxed), 1, "no retry");
        assert!(s.backlog.is_empty(), "{:?}", s.backlog);
        let targets: Vec<String> = applied
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.target().to_string())
            .collect();
        assert_eq!(targets, ["192.0.2.1/32", "192.0.2.2/32"]);
    }

    /// A reload starts a jail's actions again and re-applies its bans: an IPv6 ban the host
    /// cannot apply, counted at the first start, is not counted again by the new runner (one
    /// per process); once its unban came, a new ban of the same target counts.
    #[test]
    fn a_refused_ban_is_counted_once_across_the_runners_of_reloads() {
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let runner = || counting(Fake::no_v6(), &counted);
        let restored = [
            ActionCommand::Ban(order("2001:db8::7/128")),
            ActionCommand::Ban(order("2001:db8::8/128")),
        ];
        let mut first = runner();
        apply("reloaded", &mut first, &restored);
        assert_eq!(counted.load(Ordering::Relaxed), 2);
        // The actions-reload's new runner re-applies the same bans; another jail's count apart.
        let mut second = runner();
        apply("reloaded", &mut second, &restored);
        assert_eq!(counted.load(Ordering::Relaxed), 2, "not counted again");
        apply("reloaded-too", &mut second, &restored[..1]);
        assert_eq!(counted.load(Ordering::Relaxed), 3);
        // The ban ends, then comes again: a new ban, counted.
        let unban = ActionCommand::Unban("2001:db8::7/128".parse().unwrap());
        apply("reloaded", &mut second, &[unban]);
        apply("reloaded", &mut runner(), &restored);
        assert_eq!(counted.load(Ordering::Relaxed), 4);
    }

    /// Applies every command, as a backend of `kind`.
    struct Applies(ActionKind);

    impl Action for Applies {
        fn kind(&self) -> ActionKind {
            self.0
        }
        fn start(&mut self) -> Result<(), ActionError> {
            Ok(())
        }
        fn ban(&mut self, _: &BanOrder) -> Result<(), ActionError> {
            Ok(())
        }
        fn unban(&mut self, _: IpNetwork) -> Result<(), ActionError> {
            Ok(())
        }
        fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
            Ok(None)
        }
        fn stop(&mut self) -> Result<(), ActionError> {
            Ok(())
        }
    }

    /// A refused ban whose end reaches no refusing backend (review-act5 finding 6): the jail
    /// moved to another backend, whose unban succeeds; or ip6tables works again and the unban
    /// applies. A later ban of the same target through the refusing backend is a new ban:
    /// counted.
    #[test]
    fn a_refused_ban_whose_unban_went_through_another_backend_counts_again() {
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refusing = || counting(Fake::no_v6(), &counted);
        let working = |kind| counting(Applies(kind), &Arc::default());
        let ban = [ActionCommand::Ban(order("2001:db8::9/128"))];
        let unban = [ActionCommand::Unban("2001:db8::9/128".parse().unwrap())];
        apply("switched", &mut refusing(), &ban);
        assert_eq!(counted.load(Ordering::Relaxed), 1);
        // Reloaded to nftables, which lifts the ban; back to the refusing backend, banned again.
        apply("switched", &mut working(ActionKind::Nftables), &unban);
        apply("switched", &mut refusing(), &ban);
        assert_eq!(counted.load(Ordering::Relaxed), 2, "a new ban, counted");
        // The same backend applies the unban (ip6tables works again), then refuses a new ban.
        apply("switched", &mut working(ActionKind::Log), &unban);
        apply("switched", &mut refusing(), &ban);
        assert_eq!(counted.load(Ordering::Relaxed), 3, "a new ban, counted");
        // A re-apply of the ban that holds (a reload's) is still not counted again.
        apply("switched", &mut refusing(), &ban);
        assert_eq!(counted.load(Ordering::Relaxed), 3);
    }

    /// A refused ban followed by its unban in the same burst (a ban by hand undone at once,
    /// or `ban`/`unban --file` batches taken as one burst) is over: a later ban of the target
    /// is counted again (review-act6 finding 4).
    #[test]
    fn a_refused_ban_unbanned_in_the_same_burst_leaves_no_count_behind() {
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refusing = || counting(Fake::no_v6(), &counted);
        let target = "2001:db8::a/128";
        let ban = ActionCommand::Ban(order(target));
        let unban = ActionCommand::Unban(target.parse().unwrap());
        apply("burst", &mut refusing(), &[ban.clone(), unban]);
        assert_eq!(counted.load(Ordering::Relaxed), 1);
        apply("burst", &mut refusing(), std::slice::from_ref(&ban));
        assert_eq!(counted.load(Ordering::Relaxed), 2, "a new ban, counted");
        // That one holds: its re-apply is not counted again.
        apply("burst", &mut refusing(), &[ban]);
        assert_eq!(counted.load(Ordering::Relaxed), 2);
    }

    /// A burst for a runner whose only slot is taken (a removed jail whose name another jail
    /// took: its lifts skip the slot) still forgets the refusals its unbans end: a later ban
    /// of the target in that jail counts (review-act6 finding 4).
    #[test]
    fn an_unban_through_a_taken_slot_still_forgets_the_counted_refusal() {
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refusing = |made: Option<FirewallSpec>| Slot {
            made,
            ..counting(Fake::no_v6(), &counted)
        };
        let target = "2001:db8::b/128";
        let ban = [ActionCommand::Ban(order(target))];
        apply("taken-away", &mut refusing(None), &ban);
        assert_eq!(counted.load(Ordering::Relaxed), 1);
        let spec = FirewallSpec {
            name: "web".into(),
            ..crate::action::test_spec(&[], crate::action::Protocol::Tcp, false)
        };
        let handed_over = HandedOver::default();
        handed_over.lock().unwrap().push(("log", "web".into()));
        let mut worker = Worker {
            handed_over,
            ..worker(
                "taken-away",
                refusing(Some(spec)),
                Duration::from_millis(50),
            )
        };
        let (tx, rx) = mpsc::channel::<ActionCommand>(8);
        tx.blocking_send(ActionCommand::Unban(target.parse().unwrap()))
            .unwrap();
        drop(tx);
        worker.serve(rx);
        apply("taken-away", &mut refusing(None), &ban);
        assert_eq!(counted.load(Ordering::Relaxed), 2, "a new ban, counted");
    }

    #[test]
    fn a_failing_burst_is_retried_then_given_up() {
        let (mut s, applied) = slot(None, 2);
        apply("t", &mut s, &[ActionCommand::Ban(order("192.0.2.3/32"))]);
        assert_eq!(applied.lock().unwrap().len(), 1, "third try applies");
        // Past the last retry the burst is given up (logged and counted), never applied.
        let (mut s, applied) = slot(None, 99);
        apply("t", &mut s, &[ActionCommand::Ban(order("192.0.2.3/32"))]);
        assert!(applied.lock().unwrap().is_empty());
    }
}
