//! Agent side: the fleet's bans applied to this host's firewall. On start and on every
//! reconnect the agent notes the stream's newest id, reads the active set and reconciles its
//! firewall with it, then follows the stream from the noted id, so nothing decided in between
//! is missed (an event seen twice is applied once). Bans it holds are kept in the local state
//! (a journal, table `fleet_log`) with the last applied stream id, so a restart with Redis
//! away still holds them; kernel timeouts and the agent's own deadlines expire them on time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use redis::aio::MultiplexedConnection;
use redis::Value;
use rusqlite::{params, Connection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::FleetAction;
use super::event::{FleetEvent, Op};
use super::stream::{self, StreamReader};
use super::{Backoff, FleetConfig, Keys, NodeStats, Role, HEARTBEAT_EVERY};
use crate::action::runner::{self, ActionCommand};
use crate::action::{ActionSpec, BanOrder, BlockType, FirewallSpec, Protocol};
use crate::jail::allow::{Allowlists, IgnoreTable};
use crate::jail::JailSpec;
use crate::metrics::{self, JailMetrics};

/// Most stream entries read at once.
const READ_COUNT: usize = 1000;
/// Longest a blocking read waits before the agent looks at its deadlines and heartbeat.
const BLOCK: Duration = Duration::from_millis(500);
/// Members asked of the active set per ZSCAN call while taking the snapshot (a hint Redis
/// follows roughly; small enough that a test's thousand bans take several pages).
const SNAPSHOT_CHUNK: usize = 500;
/// The storm guard's window.
const STORM_WINDOW: Duration = Duration::from_secs(60);
/// Most fleet bans held at once (the active set could be fed by a sink gone wrong).
const MAX_HELD: usize = 1_000_000;
/// Held-ban changes and the cursor are written at most this often (and at shutdown): one
/// transaction per stream read would cost a commit per event at low rates.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Most origin node names tracked one by one (storm guard and metric label each); events from
/// further names share the [`OTHER_ORIGINS`] bucket and are counted (`kind="origins"`), so a
/// stream full of invented names grows neither memory nor metric series without bound.
pub const MAX_ORIGINS: usize = 256;
/// The storm-guard bucket and metric label of origins past [`MAX_ORIGINS`] (not a valid node
/// name, so it never collides with one).
pub const OTHER_ORIGINS: &str = "(other)";
/// The storm guard forgets bans decided this long before the newest one of their origin.
const STORM_KEEP_MS: u64 = 2 * 60_000;

/// Hash maps the follower looks up once or more per event: foldhash rather than SipHash. The
/// keys are jail and origin names and addresses from the stream, already validated and bounded
/// (a jail name is at most 19 bytes; names are interned, at most [`MAX_NAMES`]); foldhash is
/// seeded per process, and SipHash's cost (a twentieth of the CPU per apply) bought nothing
/// for keys this short.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A held ban's key: its jail's interned name and its target.
pub type BanKey = (Arc<str>, IpNetwork);

/// Most jail and origin names interned; names past it are allocated per event (still
/// correct, only slower), so a stream full of invented names does not grow the table.
const MAX_NAMES: usize = 4096;

/// Jail and origin names as `Arc<str>`, one allocation per name rather than one per event and
/// map: a held ban's key, its deadline and the runner's batch share it.
#[derive(Default)]
struct Names(std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        if self.0.len() < MAX_NAMES {
            self.0.insert(n.clone());
        }
        n
    }
}

/// A ban the agent holds.
#[derive(Debug, Clone)]
pub struct Held {
    /// The event it came from.
    pub event: Arc<FleetEvent>,
    /// When the agent lifts it.
    pub expires: Option<Instant>,
}

/// The bans this agent holds: the follower's own map, which the control socket reads for
/// `banned` (one map and one insert per ban, not a copy beside it; the follower takes the
/// lock, uncontended but for a `banned` call, once per change).
pub type HeldBans = Arc<Mutex<FastMap<BanKey, Held>>>;

/// What a local jail lends the fleet: its actions (its allowlist comes from the jail task,
/// whole and current, through [`Allowlists`]).
#[derive(Debug, Clone)]
pub struct LocalJail {
    /// The jail's actions.
    pub actions: Vec<ActionSpec>,
}

/// What an agent never bans: each local jail's whole allowlist, as its jail task last built it
/// (`ignoreip`, `ignoreself`, names resolved and files read), and for a jail not run here
/// `[defaults] ignoreip`'s addresses with this host's (as the last reload left them). Both
/// change at run time; the follower lifts the held bans they come to cover.
pub struct AgentAllowlists {
    /// The local jails' allowlists.
    pub jails: watch::Receiver<Allowlists>,
    /// The defaults, for jails not run here.
    pub defaults: watch::Receiver<Arc<IgnoreTable>>,
}

impl AgentAllowlists {
    /// Allowlists that never change: no local jail, `defaults` for every jail (tests and the
    /// fleet benchmark).
    pub fn fixed(defaults: Vec<IpNetwork>) -> AgentAllowlists {
        AgentAllowlists {
            jails: watch::channel(Allowlists::default()).1,
            defaults: watch::channel(Arc::new(IgnoreTable::new(&defaults))).1,
        }
    }

    /// True when a ban of `target` in `jail` would cover an allowlisted address here.
    fn covers(&self, jail: &str, target: IpNetwork) -> bool {
        match self.jails.borrow().get(jail) {
            Some(table) => table.overlapping(target).is_some(),
            None => self.defaults.borrow().overlapping(target).is_some(),
        }
    }

    /// True once (then marked seen) when either changed since last asked.
    fn changed(&mut self) -> bool {
        let jails = self.jails.has_changed().unwrap_or(false);
        let defaults = self.defaults.has_changed().unwrap_or(false);
        self.jails.mark_unchanged();
        self.defaults.mark_unchanged();
        jails || defaults
    }
}

/// The local jails by name.
pub fn local_jails(jails: &[JailSpec]) -> HashMap<String, LocalJail> {
    jails
        .iter()
        .map(|j| {
            (
                j.name.clone(),
                LocalJail {
                    actions: j.actions.clone(),
                },
            )
        })
        .collect()
}

/// The kernel object name of fleet bans of `jail`: `f-` and the jail's name cut to 17, so it
/// never collides with the local jail's own objects and fits ipset's 31 bytes.
pub fn kernel_name(jail: &str) -> String {
    format!("f-{}", &jail[..jail.len().min(17)])
}

/// The fleet's local store of held bans and the last applied stream id. Held bans are a
/// journal (table `fleet_log`): each change is one line, in the order it happened, the packed
/// event for a hold (the stream entry's own text when it came packed), `drop JAIL TARGET` for
/// a lift; a flush appends its lines as one row (several past [`ROW_BYTES`]), and loading
/// replays the lines. Appending costs a quarter of an `INSERT OR REPLACE` into a table keyed by
/// (jail, target), and a row per flush instead of one per change spares SQLite's per-row work
/// and the re-formatting of each event. The journal is rewritten as the held bans alone once
/// it holds more than twice as many lines as bans held and [`COMPACT_SLACK`] more, so it stays
/// bounded. Stores written before hold one change per row (read the same way) or their bans
/// in `fleet_bans`, read first and moved into the journal at its first rewrite.
struct Store {
    db: Connection,
}

/// Journal lines beyond twice the bans held before the journal is rewritten.
const COMPACT_SLACK: usize = 4096;

/// Longest journal row written (a flush of more lines, or a rewrite, takes several), so no
/// row grows with the bans held.
const ROW_BYTES: usize = 64 * 1024;

/// The text of a journal row that lifts a held ban.
const DROP: &str = "drop ";

impl Store {
    fn open(path: &std::path::Path) -> rusqlite::Result<Store> {
        // The active set is the truth a restarted agent reconciles with anyway.
        let db = super::open_db(path)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS fleet_bans (
                 jail   TEXT NOT NULL,
                 target TEXT NOT NULL,
                 event  TEXT NOT NULL,     -- the fleet event, packed (stream version 2); JSON before
                 PRIMARY KEY (jail, target));
             CREATE TABLE IF NOT EXISTS fleet_log (
                 seq   INTEGER PRIMARY KEY,
                 entry TEXT NOT NULL);     -- a packed event held, or `drop JAIL TARGET`
             CREATE TABLE IF NOT EXISTS fleet_cursor (
                 id      INTEGER PRIMARY KEY CHECK (id = 1),
                 last_id TEXT NOT NULL);    -- last stream id applied",
        )?;
        Ok(Store { db })
    }

    /// The held bans (the old table's, then the journal replayed), the cursor, and the
    /// journal's lines.
    fn load(&self) -> rusqlite::Result<(Vec<FleetEvent>, Option<String>, usize)> {
        let mut held: FastMap<(String, IpNetwork), FleetEvent> = FastMap::default();
        let mut stmt = self.db.prepare("SELECT event FROM fleet_bans")?;
        for text in stmt.query_map([], |r| r.get::<_, String>(0))? {
            if let Some(e) = stored_event(&text?) {
                held.insert((e.jail.clone(), e.target), e);
            }
        }
        let mut rows = 0;
        let mut stmt = self
            .db
            .prepare("SELECT entry FROM fleet_log ORDER BY seq")?;
        for text in stmt.query_map([], |r| r.get::<_, String>(0))? {
            for line in text?.split('\n').filter(|l| !l.is_empty()) {
                rows += 1;
                if let Some(lifted) = line.strip_prefix(DROP) {
                    let mut parts = lifted.split(' ');
                    if let (Some(jail), Some(Ok(target))) =
                        (parts.next(), parts.next().map(str::parse::<IpNetwork>))
                    {
                        held.remove(&(jail.to_string(), target));
                    }
                } else if let Some(e) = stored_event(line) {
                    held.insert((e.jail.clone(), e.target), e);
                }
            }
        }
        let cursor = self
            .db
            .query_row("SELECT last_id FROM fleet_cursor WHERE id = 1", [], |r| {
                r.get(0)
            })
            .ok();
        Ok((held.into_values().collect(), cursor, rows))
    }

    /// Appends a batch of changes and writes the cursor, in one transaction; with `rewrite`,
    /// the journal (and the old table) is first emptied, and `changes` are then all the bans
    /// held. The lines go as rows of at most [`ROW_BYTES`] (one row for a usual flush).
    fn save(
        &mut self,
        changes: &Journal,
        cursor: Option<&str>,
        rewrite: bool,
    ) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        if rewrite {
            tx.execute_batch("DELETE FROM fleet_log; DELETE FROM fleet_bans;")?;
        }
        {
            let mut stmt = tx.prepare_cached("INSERT INTO fleet_log (entry) VALUES (?1)")?;
            for row in rows_of(&changes.text, ROW_BYTES) {
                stmt.execute([row])?;
            }
        }
        if let Some(id) = cursor {
            tx.execute(
                "INSERT OR REPLACE INTO fleet_cursor (id, last_id) VALUES (1, ?1)",
                params![id],
            )?;
        }
        tx.commit()
    }
}

/// `text` (lines, each ending in a newline) cut into rows of at most `max` bytes at line ends
/// (a longer line is a row of its own), without their last newline.
fn rows_of(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let cut = if rest.len() <= max {
            rest.len()
        } else {
            memchr::memrchr(b'\n', &bytes[..max])
                .or_else(|| memchr::memchr(b'\n', bytes))
                .map_or(rest.len(), |i| i + 1)
        };
        let (row, tail) = rest.split_at(cut);
        rest = tail;
        Some(row.strip_suffix('\n').unwrap_or(row))
    })
}

/// Held-ban changes not in the store yet: journal lines in the order they happened.
#[derive(Default)]
struct Journal {
    text: String,
    /// Lines in `text`.
    entries: usize,
}

impl Journal {
    /// A hold: `packed`, the stream entry's own text of `event` when it came packed (no
    /// formatting), unless it holds a newline (past the parts read, where a hostile writer
    /// could hide one: a line of its own on restore); else `event` packed.
    fn hold(&mut self, event: &FleetEvent, packed: Option<&str>) {
        match packed {
            Some(text) if memchr::memchr(b'\n', text.as_bytes()).is_none() => {
                self.text.push_str(text);
            }
            _ => event.write_packed(&mut self.text),
        }
        self.text.push('\n');
        self.entries += 1;
    }

    /// A lift.
    fn lift(&mut self, jail: &str, target: IpNetwork) {
        let _ = writeln!(self.text, "{DROP}{jail} {target}");
        self.entries += 1;
    }
}

/// A stored event: packed as a version 2 stream entry, or JSON as stores before it hold.
fn stored_event(text: &str) -> Option<FleetEvent> {
    if text.starts_with('{') {
        FleetEvent::from_json(text).ok()
    } else {
        FleetEvent::from_packed(text).ok()
    }
}

/// One origin's storm-guard record: the bans applied, by the time the sink decided them.
#[derive(Debug, Default)]
struct Storm {
    /// `banned_at` (Unix ms) to bans applied with it.
    applied: BTreeMap<u64, u32>,
    /// The newest `banned_at` seen.
    newest: u64,
    /// The `banned_at` of the event that last logged the guard engaging.
    logged: Option<u64>,
}

/// An origin as tracked: its label and its series.
#[derive(Clone)]
struct Origin {
    name: Arc<str>,
    bans: ::metrics::Counter,
    unbans: ::metrics::Counter,
    withheld: ::metrics::Counter,
}

impl Origin {
    fn new(name: &str) -> Origin {
        let withheld = metrics::fleet_withheld(name);
        // A new origin's series exist from its first event, at zero.
        withheld.absolute(0);
        Origin {
            name: Arc::from(name),
            bans: metrics::fleet_applied("ban", name),
            unbans: metrics::fleet_applied("unban", name),
            withheld,
        }
    }
}

/// The follower's state.
pub struct Follower {
    config: Arc<FleetConfig>,
    keys: Keys,
    jails: FastMap<Arc<str>, LocalJail>,
    /// What this node never bans.
    allowlists: AgentAllowlists,
    runners: FastMap<Arc<str>, runner::Runner<Vec<ActionCommand>>>,
    /// Commands for each jail's runner, handed over as one batch by [`Follower::dispatch`].
    pending: FastMap<Arc<str>, Vec<ActionCommand>>,
    /// Jail names interned.
    names: Names,
    held: HeldBans,
    deadlines: BTreeSet<(Instant, Arc<str>, IpNetwork)>,
    storm: FastMap<Arc<str>, Storm>,
    /// Origins tracked one by one (at most [`MAX_ORIGINS`], then [`OTHER_ORIGINS`]), with
    /// their counters, looked up once per origin rather than once per event.
    origins: FastMap<Arc<str>, Origin>,
    /// `jailsink_fleet_propagation_seconds`, looked up once.
    propagation: ::metrics::Histogram,
    store: Option<Arc<Mutex<Store>>>,
    /// Changes to write at the next flush.
    journal: Journal,
    /// Lines in the store's journal (to know when to rewrite it).
    journal_rows: usize,
    cursor: Option<String>,
    stats: NodeStats,
    head_ms: u64,
    flushed_at: Instant,
    /// Given to every runner started ([`Follower::start`]).
    state_unread: bool,
}

impl Follower {
    /// Opens the local store and re-applies the bans it holds (their runners reconcile the
    /// kernel with them), before any Redis is needed. `state_unread`: the daemon's state could
    /// not be read at start, so every runner this follower starts keeps what the kernel holds
    /// ([`runner::spawn`]).
    pub async fn start(
        config: Arc<FleetConfig>,
        jails: HashMap<String, LocalJail>,
        allowlists: AgentAllowlists,
        db_path: PathBuf,
        shared: HeldBans,
        state_unread: bool,
    ) -> Follower {
        // SQLite blocks: opened and read off the runtime's workers.
        let opened = tokio::task::spawn_blocking(move || {
            let store = Store::open(&db_path)?;
            let loaded = store.load()?;
            Ok::<_, rusqlite::Error>((store, loaded))
        })
        .await;
        let (store, (stored, cursor, journal_rows)) = match opened {
            Ok(Ok((store, loaded))) => (Some(Arc::new(Mutex::new(store))), loaded),
            Ok(Err(error)) => {
                metrics::state_errors().increment(1);
                tracing::error!(%error, "fleet: cannot open the local store; held bans will not survive a restart");
                (None, Default::default())
            }
            Err(error) => {
                tracing::error!(%error, "fleet: the local store's task failed");
                (None, Default::default())
            }
        };
        let mut follower = Follower {
            keys: Keys::new(&config.prefix),
            config,
            jails: jails
                .into_iter()
                .map(|(name, jail)| (Arc::from(name), jail))
                .collect(),
            allowlists,
            runners: FastMap::default(),
            pending: FastMap::default(),
            names: Names::default(),
            held: shared,
            deadlines: BTreeSet::new(),
            storm: FastMap::default(),
            origins: FastMap::default(),
            propagation: metrics::fleet_propagation(),
            store,
            journal: Journal::default(),
            journal_rows,
            cursor,
            stats: NodeStats::default(),
            head_ms: 0,
            flushed_at: Instant::now(),
            state_unread,
        };
        let now = super::now_ms();
        let mut by_jail: HashMap<String, Vec<FleetEvent>> = HashMap::new();
        for event in stored {
            // Expired, or covering the allowlist as it is now (it may have grown since the
            // ban was stored): dropped from the store and not applied again.
            if event.expires_at.is_some_and(|e| e <= now) || follower.allowlisted(&event) {
                follower.journal.lift(&event.jail, event.target);
                continue;
            }
            by_jail.entry(event.jail.clone()).or_default().push(event);
        }
        for events in by_jail.into_values() {
            let clock = Clock::now();
            let orders = events.iter().map(|e| order(e, clock)).collect();
            if follower.start_runner(&events[0], orders).await {
                for event in events {
                    // Held again from the store: already in its journal, so not written again.
                    let key = (follower.names.get(&event.jail), event.target);
                    follower.keep(event, key, clock);
                }
            }
        }
        if let Some(id) = &follower.cursor {
            follower.stats.last_id = id.clone();
        }
        follower.flush().await;
        follower
    }

    /// The held bans, locked (a panic elsewhere while holding it leaves the map whole: every
    /// change is one insert or remove).
    fn held(&self) -> std::sync::MutexGuard<'_, FastMap<BanKey, Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True (counted and logged) when the ban would cover this node's allowlist for its jail:
    /// the local jail's whole allowlist (`ignoreip`, `ignoreself`, its names and files, as
    /// the jail task last built it), or for a jail not run here the defaults'.
    fn allowlisted(&self, event: &FleetEvent) -> bool {
        if !self.allowlists.covers(&event.jail, event.target) {
            return false;
        }
        metrics::fleet_errors("allowlisted").increment(1);
        tracing::warn!(jail = %event.jail, target = %event.target, origin = %event.origin, "fleet: ban of an allowlisted address refused");
        true
    }

    /// The actions of fleet bans of the event's jail: the local jail's, or `[fleet] action`
    /// with the event's ports.
    fn specs_for(&self, event: &FleetEvent) -> Vec<ActionSpec> {
        let name = kernel_name(&event.jail);
        if let Some(local) = self.jails.get(event.jail.as_str()) {
            return local
                .actions
                .iter()
                .map(|spec| match spec {
                    ActionSpec::Iptables(f) => ActionSpec::Iptables(renamed(f, &name)),
                    ActionSpec::Nftables(f) => ActionSpec::Nftables(renamed(f, &name)),
                    ActionSpec::Ipset(f) => ActionSpec::Ipset(renamed(f, &name)),
                    other => other.clone(),
                })
                .collect();
        }
        let firewall = FirewallSpec {
            name,
            ports: event.ports.clone(),
            protocol: Protocol::parse(&event.protocol).unwrap_or(Protocol::All),
            blocktype: BlockType::Drop,
            keep_on_stop: false,
            v4_networks: true,
            v6_networks: true,
            hooks: Vec::new(),
        };
        vec![match self.config.action {
            FleetAction::Nftables => ActionSpec::Nftables(firewall),
            FleetAction::Ipset => ActionSpec::Ipset(firewall),
            FleetAction::Iptables => ActionSpec::Iptables(firewall),
            FleetAction::Log => ActionSpec::Log,
        }]
    }

    async fn start_runner(&mut self, event: &FleetEvent, restored: Vec<BanOrder>) -> bool {
        if self.runners.contains_key(event.jail.as_str()) {
            return true;
        }
        let specs = self.specs_for(event);
        let name = kernel_name(&event.jail);
        match runner::spawn_batched(
            &name,
            &specs,
            JailMetrics::new(&name),
            restored,
            self.state_unread,
        )
        .await
        {
            Ok(r) => {
                tracing::info!(jail = %event.jail, actions = ?specs.iter().map(|a| a.kind()).collect::<Vec<_>>(), "fleet: actions started");
                let jail = self.names.get(&event.jail);
                self.runners.insert(jail, r);
                true
            }
            Err(error) => {
                metrics::fleet_errors("action").increment(1);
                tracing::error!(jail = %event.jail, %error, "fleet: cannot start actions");
                false
            }
        }
    }

    #[cfg(test)]
    fn hold(&mut self, event: FleetEvent) {
        let key = (self.names.get(&event.jail), event.target);
        self.hold_at(event, None, key, Clock::now());
    }

    /// Holds `event` under `key` (its interned jail and target), its deadline taken from
    /// `clock` (read once per event by [`Follower::apply`]); `packed` is the stream entry's
    /// text of it, journalled as it came.
    fn hold_at(&mut self, event: FleetEvent, packed: Option<&str>, key: BanKey, clock: Clock) {
        self.journal.hold(&event, packed);
        self.keep(event, key, clock);
    }

    /// [`Follower::hold_at`] without the journal line: for a ban the store holds already.
    fn keep(&mut self, event: FleetEvent, key: BanKey, clock: Clock) {
        let event = Arc::new(event);
        let expires = remaining(&event, clock.unix_ms).map(|left| clock.now + left);
        if let Some(at) = expires {
            self.deadlines.insert((at, key.0.clone(), key.1));
        }
        let old = self.held().insert(key.clone(), Held { event, expires });
        if let Some(old) = old.and_then(|h| h.expires) {
            if Some(old) != expires {
                self.deadlines.remove(&(old, key.0, key.1));
            }
        }
    }

    /// Queues a command for the jail's runner; [`Follower::dispatch`] hands it over.
    fn send(&mut self, jail: &Arc<str>, command: ActionCommand) {
        if !self.runners.contains_key(jail) {
            return;
        }
        let batch = match self.pending.get_mut(jail) {
            Some(batch) => batch,
            None => self.pending.entry(jail.clone()).or_default(),
        };
        batch.push(command);
    }

    /// Hands every queued command to its runner, one batch per jail (at most a burst each),
    /// in the order they were queued.
    async fn dispatch(&mut self) {
        for (jail, mut commands) in self.pending.drain() {
            let Some(r) = self.runners.get(&jail) else {
                continue;
            };
            while !commands.is_empty() {
                let rest = commands.split_off(commands.len().min(runner::MAX_BURST));
                let batch = std::mem::replace(&mut commands, rest);
                if r.queue.send(batch).await.is_err() {
                    metrics::fleet_errors("action").increment(1);
                    tracing::error!(jail = &*jail, "fleet: action runner is gone");
                    break;
                }
            }
        }
    }

    /// Lifts a held ban; true if it was held.
    fn lift(&mut self, jail: &str, target: IpNetwork) -> bool {
        let key = (self.names.get(jail), target);
        let Some(held) = self.held().remove(&key) else {
            return false;
        };
        if let Some(at) = held.expires {
            self.deadlines.remove(&(at, key.0.clone(), target));
        }
        self.send(&key.0, ActionCommand::Unban(target));
        self.journal.lift(&key.0, target);
        true
    }

    /// The name an origin is tracked and labelled under: its own for the first
    /// [`MAX_ORIGINS`] names seen, [`OTHER_ORIGINS`] (counted) past them.
    fn origin_label(&mut self, origin: &str) -> Origin {
        if let Some(o) = self.origins.get(origin) {
            return o.clone();
        }
        let name = if self.origins.len() < MAX_ORIGINS {
            origin
        } else {
            metrics::fleet_errors("origins").increment(1);
            tracing::debug!(
                origin,
                max = MAX_ORIGINS,
                "fleet: too many origin names; tracked as {OTHER_ORIGINS}"
            );
            OTHER_ORIGINS
        };
        self.origins
            .entry(Arc::from(name))
            .or_insert_with(|| Origin::new(name))
            .clone()
    }

    /// True (counted) when the event's origin (as [`Follower::origin_label`] names it) already
    /// had max_bans_per_minute bans applied that it decided within a minute of this one. The
    /// window runs on the sink's `banned_at`, not on arrival, so live events, a catch-up and a
    /// snapshot are judged alike: standing bans decided over hours pass, a flood decided in
    /// one minute is held back however it arrives.
    fn storm(&mut self, origin: &str, banned_at: u64) -> bool {
        let Some(max) = self.config.max_bans_per_minute else {
            return false;
        };
        let window = STORM_WINDOW.as_millis() as u64;
        let record = match self.storm.get_mut(origin) {
            Some(record) => record,
            None => self.storm.entry(Arc::from(origin)).or_default(),
        };
        record.newest = record.newest.max(banned_at);
        let near = busiest_minute(&record.applied, banned_at, window, u64::from(max));
        if near >= u64::from(max) {
            metrics::fleet_withheld(origin).increment(1);
            if record
                .logged
                .is_none_or(|l| banned_at.abs_diff(l) >= window)
            {
                record.logged = Some(banned_at);
                tracing::error!(
                    origin,
                    max_bans_per_minute = max,
                    "fleet: storm guard engaged, bans from this origin withheld"
                );
            }
            return true;
        }
        *record.applied.entry(banned_at).or_default() += 1;
        false
    }

    /// Forgets what the storm guard no longer needs: bans decided [`STORM_KEEP_MS`] before
    /// the newest of their origin.
    fn prune_storm(&mut self) {
        for record in self.storm.values_mut() {
            let cutoff = record.newest.saturating_sub(STORM_KEEP_MS);
            if record
                .applied
                .first_key_value()
                .is_some_and(|(&t, _)| t < cutoff)
            {
                record.applied = record.applied.split_off(&cutoff);
            }
        }
    }

    /// Applies one event; `live` events (from the stream, not the snapshot) are timed.
    /// `packed` is the stream entry's text the event was read from, if it came packed.
    pub async fn apply(&mut self, event: FleetEvent, live: bool, packed: Option<&str>) {
        if self.config.role == Role::Both
            && event.origin == self.config.node
            && matches!(event.op, Op::Ban)
        {
            // This node decided it: its own jail already applied it. Not an unban: one run
            // here (`jailsink unban` lifting another sink's ban fleet-wide) carries this node's
            // origin too, and must lift the copy this node's follower holds.
            return;
        }
        match event.op {
            Op::Unban => {
                // An unban names the ban it lifts: a newer ban of the same target (decided by
                // another sink, or again after the unban was decided) stays.
                let key = (self.names.get(&event.jail), event.target);
                let stays = self.held().get(&key).is_some_and(|h| match event.lifts {
                    // Not the ban held: an older one (a newer ban replaced it), or a newer one
                    // this node did not take because the ban it holds lasts longer.
                    Some(lifts) => h.event.banned_at != lifts,
                    // An unban that names no ban (of a ban from before fleet mode or the
                    // field, or after a state error) lifts its own sink's ban only.
                    None => h.event.origin != event.origin,
                });
                if stays {
                    tracing::info!(jail = %event.jail, target = %event.target, origin = %event.origin, "fleet: unban of another ban than the one held; it stays");
                    return;
                }
                if self.lift(&event.jail, event.target) {
                    self.origin_label(&event.origin).unbans.increment(1);
                    self.stats.bans_applied += 1;
                }
            }
            Op::Ban => {
                // Before anything else, even a ban already held (restored, or held before the
                // allowlist changed): no fleet ban ever covers this node's own allowlist
                // (`lift` does nothing when none is held).
                if self.allowlisted(&event) {
                    self.lift(&event.jail, event.target);
                    return;
                }
                let key = (self.names.get(&event.jail), event.target);
                let (held, count) = {
                    let map = self.held();
                    let held = map
                        .get(&key)
                        .map(|h| (h.event.banned_at, h.event.expires_at));
                    (held, map.len())
                };
                if held == Some((event.banned_at, event.expires_at)) {
                    return;
                }
                // Two sinks banned the target: the ban that ends later stays (a permanent ban
                // by hand on one sink must not be cut short by another's ten minutes).
                if let Some((_, held_end)) = held {
                    let end = |e: Option<u64>| e.unwrap_or(u64::MAX);
                    if end(event.expires_at) < end(held_end) {
                        tracing::info!(jail = %event.jail, target = %event.target, origin = %event.origin, "fleet: a ban ending before the one held; the held one stays");
                        return;
                    }
                }
                // One clock reading for the event's checks, deadline, order and timing.
                let clock = Clock::now();
                if remaining_or_permanent(&event, clock.unix_ms).is_none() {
                    return;
                }
                let origin = self.origin_label(&event.origin);
                if held.is_none() && count >= MAX_HELD {
                    origin.withheld.increment(1);
                    return;
                }
                // Live, caught up or from the snapshot: every new ban passes the guard.
                if held.is_none() && self.storm(&origin.name, event.banned_at) {
                    return;
                }
                if !self.start_runner(&event, Vec::new()).await {
                    return;
                }
                let command = ActionCommand::Ban(order(&event, clock));
                let banned_at = event.banned_at;
                let jail = key.0.clone();
                self.hold_at(event, packed, key, clock);
                self.send(&jail, command);
                origin.bans.increment(1);
                self.stats.bans_applied += 1;
                if live {
                    let age = clock.unix_ms.saturating_sub(banned_at);
                    self.propagation.record(age as f64 / 1000.0);
                }
            }
        }
    }

    /// Lifts the held bans a local jail's allowlist covers now (an entry a reload, a resolved
    /// name or an allowlist file added since they were held): no fleet ban ever covers this
    /// node's own allowlist. The lifts are written to the store at once.
    async fn lift_allowlisted(&mut self) {
        let covered: Vec<(Arc<str>, IpNetwork)> = self
            .held()
            .keys()
            .filter(|(jail, target)| self.allowlists.covers(jail, *target))
            .cloned()
            .collect();
        for (jail, target) in covered {
            if self.lift(&jail, target) {
                let shown = crate::address::show_target(target);
                tracing::info!(%jail, target = %shown, "fleet: {shown} is allowlisted here now; its fleet ban is lifted");
            }
        }
        self.flush().await;
    }

    /// Lifts every ban whose deadline has passed.
    pub async fn expire_due(&mut self) {
        let now = Instant::now();
        while let Some((at, jail, target)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.lift(&jail, target);
        }
        self.dispatch().await;
    }

    /// Writes pending changes and the cursor to the local store, on a blocking thread (SQLite
    /// must not stall the runtime's workers), waited for so that writes stay in order.
    async fn flush(&mut self) {
        self.dispatch().await;
        self.prune_storm();
        if self.journal.entries == 0 && self.cursor.as_deref() == Some(self.stats.last_id.as_str())
        {
            return;
        }
        let cursor = (!self.stats.last_id.is_empty()).then(|| self.stats.last_id.clone());
        let mut changes = std::mem::take(&mut self.journal);
        // A journal grown past twice the bans held is rewritten as those bans: taken from the
        // map under its lock (shared handles only, so the control socket never waits for the
        // formatting), formatted on the blocking thread.
        let rewrite_from: Option<Vec<Arc<FleetEvent>>> = {
            let held = self.held();
            (self.journal_rows + changes.entries > 2 * held.len() + COMPACT_SLACK)
                .then(|| held.values().map(|h| h.event.clone()).collect())
        };
        let rewrite = rewrite_from.is_some();
        if let Some(store) = self.store.clone() {
            let id = cursor.clone();
            let saved = tokio::task::spawn_blocking(move || {
                if let Some(events) = rewrite_from {
                    changes = Journal::default();
                    for event in &events {
                        changes.hold(event, None);
                    }
                }
                let mut store = store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let saved = store.save(&changes, id.as_deref(), rewrite);
                (saved.map(|()| changes.entries), changes.text)
            })
            .await
            .map(|(saved, mut text)| {
                // The buffer comes back for the next flush (no regrowth per flush), unless a
                // rewrite made it large.
                if text.capacity() <= 4 * ROW_BYTES {
                    text.clear();
                    self.journal.text = text;
                }
                saved
            });
            match saved {
                Ok(Ok(rows)) => {
                    self.journal_rows = if rewrite { 0 } else { self.journal_rows } + rows;
                }
                Ok(Err(error)) => {
                    metrics::state_errors().increment(1);
                    tracing::error!(%error, "fleet: cannot write the local store");
                }
                Err(error) => {
                    metrics::state_errors().increment(1);
                    tracing::error!(%error, "fleet: the local store's task failed");
                }
            }
        }
        self.cursor = cursor;
        self.flushed_at = Instant::now();
    }

    /// The stream id to resume from without a snapshot: the last applied one, when the stream
    /// still holds that entry. Trimming (MAXLEN) removes the oldest entries first, so while the
    /// entry is there nothing after it is gone; a trimmed entry, or a stream Redis lost, means
    /// a snapshot (None).
    async fn resume_from(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<String>> {
        let last = &self.stats.last_id;
        if last.is_empty() || last == "0-0" {
            return Ok(None);
        }
        let found: Value = redis::cmd("XRANGE")
            .arg(&self.keys.stream)
            .arg(last)
            .arg(last)
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        Ok((!entries(&found).is_empty()).then(|| last.clone()))
    }

    /// Reads the active set and makes the held bans match it; returns the stream id to
    /// follow from (taken before the set was read).
    async fn reconcile(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
        let head: Value = redis::cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        let head = entries(&head)
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_string(), |(id, _)| id);
        // One `now` for the whole snapshot, and ZSCAN, which returns every member present
        // from start to end of the scan however the set changes meanwhile (paging a score
        // range by offset skips members when earlier ones expire between pages). Duplicates
        // fall together in `wanted`; members added during the scan come from the stream,
        // which is followed from `head`, read before.
        let now = super::now_ms() as f64;
        let mut wanted: FastMap<BanKey, FleetEvent> = FastMap::default();
        let mut complete = true;
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, f64)>) = redis::cmd("ZSCAN")
                .arg(&self.keys.active)
                .arg(cursor)
                .arg("COUNT")
                .arg(SNAPSHOT_CHUNK)
                .query_async(conn)
                .await?;
            let members: Vec<String> = page
                .into_iter()
                .filter(|(_, expires)| *expires > now)
                .map(|(m, _)| m)
                .collect();
            if !members.is_empty() {
                let details: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(&self.keys.details)
                    .arg(&members)
                    .query_async(conn)
                    .await?;
                for (member, text) in members.iter().zip(details) {
                    if let Some(e) = text.and_then(|t| wanted_ban(member, &t)) {
                        wanted.insert((self.names.get(&e.jail), e.target), e);
                    }
                }
            }
            if wanted.len() >= MAX_HELD {
                complete = false;
                break;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // Bans are lifted as stale only against a whole snapshot.
        let stale: Vec<BanKey> = if complete {
            self.held()
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect()
        } else {
            tracing::warn!(
                max = MAX_HELD,
                "fleet: active set larger than the most bans held; nothing lifted as stale"
            );
            Vec::new()
        };
        let (lifted, before) = (stale.len(), self.held().len());
        for (jail, target) in stale {
            self.lift(&jail, target);
        }
        let mut added = 0;
        for (_, event) in wanted {
            let was = self.held().len();
            self.apply(event, false, None).await;
            added += self.held().len().saturating_sub(was);
        }
        // The snapshot stands for everything up to `head`.
        self.stats.last_id = head.clone();
        self.flush().await;
        tracing::info!(held = self.held().len(), before, added, lifted, from = %head, "fleet: reconciled with the active set");
        Ok(head)
    }

    /// Reads and applies what follows `from`; returns the new position. The entries are
    /// decoded from text borrowed from the reader's buffer (no reply values, no copy of an id
    /// but the last one's).
    async fn follow(
        &mut self,
        reader: &mut StreamReader,
        from: String,
    ) -> redis::RedisResult<String> {
        let block = self
            .deadlines
            .first()
            .map_or(BLOCK, |(at, ..)| {
                at.saturating_duration_since(Instant::now()).min(BLOCK)
            })
            .max(Duration::from_millis(1));
        let mut entries = reader
            .xread(&self.keys.stream, &from, READ_COUNT, block)
            .await?;
        let mut fields = Vec::with_capacity(12);
        let mut last = None;
        while let Some(id) = entries.next_entry(&mut fields) {
            // The packed text is found once: decoded here, and journalled as it came.
            let packed = super::event::packed_text(&fields);
            let decoded = match packed {
                Some(text) => FleetEvent::from_packed(text),
                None => FleetEvent::from_entry(&fields),
            };
            // A ban brought back when the longer ban hiding it was lifted (the lift script
            // writes it again in the fields format, marked): applied like any, but its age is
            // not a propagation. A packed entry is never one.
            let live = packed.is_some() || !fields.iter().any(|(k, _)| *k == "again");
            match decoded {
                Ok(event) => self.apply(event, live, packed).await,
                Err(error) => {
                    metrics::fleet_errors("malformed").increment(1);
                    tracing::warn!(id = %id, %error, "fleet: malformed stream entry skipped");
                }
            }
            self.head_ms = self.head_ms.max(super::id_ms(id));
            last = Some(id);
        }
        let last = last.map_or(from, str::to_string);
        self.dispatch().await;
        self.stats.last_id.clone_from(&last);
        if self.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flush().await;
        }
        Ok(last)
    }

    /// Closes every runner queue (after [`Follower::flush`] handed over what was queued);
    /// returns the threads to join (each stops its actions).
    pub fn finish(self) -> Vec<JoinHandle<()>> {
        self.runners.into_values().map(|r| r.thread).collect()
    }
}

/// The most bans `applied` holds in one window of `window` ms that also covers `at` (so that
/// applying one more at `at` keeps every such window at most `max`), or at least `max` when it
/// is reached. Arrival order does not matter: a snapshot comes in any order. Cheap while the
/// two windows around `at` hold fewer than `max` together; a sweep over them otherwise.
fn busiest_minute(applied: &BTreeMap<u64, u32>, at: u64, window: u64, max: u64) -> u64 {
    let (lo, hi) = (at.saturating_sub(window - 1), at.saturating_add(window - 1));
    let mut around = 0u64;
    for (_, n) in applied.range(lo..=hi) {
        around += u64::from(*n);
        if around >= max {
            break;
        }
    }
    if around < max {
        return around;
    }
    // Prefix sums over the entries around `at`; each window [a, a + window - 1] that covers
    // `at` counts what lies in it.
    let near: Vec<(u64, u64)> = applied
        .range(lo..=hi)
        .map(|(&t, &n)| (t, u64::from(n)))
        .collect();
    let mut prefix = Vec::with_capacity(near.len() + 1);
    prefix.push(0u64);
    for (_, n) in &near {
        prefix.push(prefix.last().copied().unwrap_or(0) + n);
    }
    // The count only changes where a window's start or end meets an entry, so these starts
    // find the fullest: `lo`, `at` itself, entries before `at`, and, for entries after `at`
    // (bans decided later but applied first, as a snapshot may order them), the start that
    // puts them at the window's end.
    let starts = [lo, at].into_iter().chain(near.iter().map(|e| {
        if e.0 <= at {
            e.0
        } else {
            e.0.saturating_sub(window - 1).max(lo)
        }
    }));
    starts
        .map(|a| {
            let b = a.saturating_add(window - 1);
            let first = near.partition_point(|e| e.0 < a);
            let end = near.partition_point(|e| e.0 <= b);
            prefix[end] - prefix[first]
        })
        .max()
        .unwrap_or(0)
}

fn renamed(spec: &FirewallSpec, name: &str) -> FirewallSpec {
    FirewallSpec {
        name: name.to_string(),
        v4_networks: true,
        v6_networks: true,
        ..spec.clone()
    }
}

/// The wall clock (Unix ms) and the monotonic clock, read together once per event.
#[derive(Debug, Clone, Copy)]
struct Clock {
    unix_ms: u64,
    now: Instant,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            unix_ms: super::now_ms(),
            now: Instant::now(),
        }
    }
}

/// What is left of a ban at `now_ms`; None when permanent or already over (see
/// [`remaining_or_permanent`]).
fn remaining(event: &FleetEvent, now_ms: u64) -> Option<Duration> {
    event
        .expires_at
        .map(|e| Duration::from_millis(e.saturating_sub(now_ms)))
}

/// Some(None) for a permanent ban, Some(Some(left)) for a running one, None when over.
fn remaining_or_permanent(event: &FleetEvent, now_ms: u64) -> Option<Option<Duration>> {
    match remaining(event, now_ms) {
        None => Some(None),
        Some(left) if left.is_zero() => None,
        Some(left) => Some(Some(left)),
    }
}

/// The ban order for an event, back-dated to the moment the sink decided it, so the runner's
/// latency histogram measures decided-at-the-sink to in-the-kernel and the kernel timeout
/// ends the ban at the sink's expiry.
fn order(event: &FleetEvent, clock: Clock) -> BanOrder {
    let age = Duration::from_millis(clock.unix_ms.saturating_sub(event.banned_at));
    let decided_at = clock.now.checked_sub(age).unwrap_or(clock.now);
    BanOrder {
        target: event.target,
        failures: event.failures,
        bantime: event
            .expires_at
            .map(|e| Duration::from_millis(e.saturating_sub(event.banned_at))),
        decided_at,
        from_state: false,
        evidence: Default::default(),
    }
}

/// The (id, fields) of a list of stream entries; fields that are not text are dropped (and the
/// entry then fails validation).
pub fn entries(list: &Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let [id, fields] = pair.as_slice() else {
                return None;
            };
            let id = text(id)?;
            let mut map = HashMap::new();
            if let Value::Array(kv) = fields {
                for chunk in kv.chunks(2) {
                    if let [k, v] = chunk {
                        if let (Some(k), Some(v)) = (text(k), text(v)) {
                            map.insert(k, v);
                        }
                    }
                }
            }
            Some((id, map))
        })
        .collect()
}

/// The ban an active-set entry stands for: its details, when they are a valid ban of the
/// member's own jail and target; otherwise counted as malformed (a writer with access to the
/// details must not make an agent ban something else than the set names).
fn wanted_ban(member: &str, details: &str) -> Option<FleetEvent> {
    match FleetEvent::from_json(details) {
        Ok(e) if e.op == Op::Ban && e.member() == member => Some(e),
        Ok(e) => {
            metrics::fleet_errors("malformed").increment(1);
            tracing::warn!(%member, jail = %e.jail, target = %e.target, "fleet: active-set details do not match their member; skipped");
            None
        }
        Err(error) => {
            metrics::fleet_errors("malformed").increment(1);
            tracing::warn!(%error, %member, "fleet: malformed active-set entry skipped");
            None
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The agent: reconcile, follow, heartbeat, reconnect, until `shutdown`; then stops its
/// actions (returned threads to join).
pub async fn run(
    mut follower: Follower,
    client: redis::Client,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut backoff = Backoff::default();
    let config = follower.config.clone();
    let keys = follower.keys.clone();
    let mut first = true;
    // The stream reader's TLS settings, read once (the CA file was checked at start).
    let tls = stream::tls_config(&config);
    'connect: while !shutdown.is_cancelled() {
        // Every reconnect waits out the back-off first, whatever failed (connect, reconcile,
        // heartbeat or read): a Redis that accepts connections and then fails is not hammered.
        if !std::mem::take(&mut first) && !pause(&mut follower, &mut backoff, &shutdown).await {
            break;
        }
        // Reads block for BLOCK; the response bound leaves room for that.
        let connected = async {
            let tls = tls.as_ref().map_err(Clone::clone)?;
            let reader = StreamReader::connect(&client, tls.as_ref()).await?;
            let other = super::connect(&client, Some(super::RESPONSE_TIMEOUT)).await?;
            Ok::<_, redis::RedisError>((reader, other))
        };
        let (mut reader, mut other) = match connected.await {
            Ok(c) => c,
            Err(error) => {
                metrics::fleet_connected("follower").set(0.0);
                metrics::fleet_errors("redis").increment(1);
                tracing::debug!(%error, "fleet: Redis unreachable");
                continue;
            }
        };
        // Catch up from the last applied event when the stream still holds it (exactly the
        // events missed, unbans included); otherwise the snapshot and the stream after it.
        let resumed = match follower.resume_from(&mut other).await {
            Ok(r) => r,
            Err(error) => {
                lost(&error);
                continue;
            }
        };
        let mut position = match resumed {
            Some(from) => {
                tracing::info!(%from, held = follower.held().len(), "fleet: resuming from the last applied event");
                from
            }
            None => match follower.reconcile(&mut other).await {
                Ok(p) => p,
                Err(error) => {
                    lost(&error);
                    continue;
                }
            },
        };
        metrics::fleet_connected("follower").set(1.0);
        tracing::info!(redis = %config.redis_shown(), "fleet: connected, following");
        let mut beat_at = Instant::now();
        loop {
            if beat_at <= Instant::now() {
                beat_at = Instant::now() + HEARTBEAT_EVERY;
                let newest: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
                    .arg(&keys.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut other)
                    .await;
                let newest_ms = newest
                    .as_ref()
                    .ok()
                    .and_then(|v| entries(v).into_iter().next())
                    .map_or(0, |(id, _)| super::id_ms(&id));
                follower.stats.lag_ms = newest_ms.saturating_sub(super::id_ms(&position));
                if config.role == Role::Both {
                    follower.stats.outbox =
                        super::publish::OUTBOX_LEN.load(std::sync::atomic::Ordering::Relaxed);
                }
                let beat = super::beat(&mut other, &keys, &config, &follower.stats).await;
                if let Err(error) = newest.map(drop).and(beat) {
                    lost(&error);
                    continue 'connect;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break 'connect,
                read = follower.follow(&mut reader, position.clone()) => match read {
                    Ok(p) => {
                        // A read went through: the connection works, back-off starts small.
                        position = p;
                        backoff.reset();
                    }
                    Err(error) => {
                        lost(&error);
                        continue 'connect;
                    }
                },
            }
            follower.expire_due().await;
            // Between reads (a read is not cut short for it): at most BLOCK late.
            if follower.allowlists.changed() {
                follower.lift_allowlisted().await;
            }
        }
    }
    follower.flush().await;
    follower.finish()
}

/// Waits out the back-off before a reconnect, lifting bans that fall due meanwhile; false on
/// shutdown.
async fn pause(
    follower: &mut Follower,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + backoff.wait();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep_until(until) => break,
            _ = sleep_until(follower.deadlines.first().map(|d| d.0)) => follower.expire_due().await,
            // Allowlists are looked at while Redis is away too.
            _ = tokio::time::sleep(BLOCK) => {}
        }
        if follower.allowlists.changed() {
            follower.lift_allowlisted().await;
        }
    }
    follower.flush().await;
    true
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn lost(error: &redis::RedisError) {
    metrics::fleet_connected("follower").set(0.0);
    metrics::fleet_errors("redis").increment(1);
    tracing::warn!(%error, "fleet: Redis connection lost; bans held, reconnecting");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(times: &[u64]) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for &t in times {
            *m.entry(t).or_default() += 1;
        }
        m
    }

    #[test]
    fn stored_events_read_packed_and_json() {
        let event = FleetEvent {
            op: Op::Ban,
            jail: "sshd".into(),
            target: "192.0.2.7/32".parse().unwrap(),
            banned_at: 1_700_000_000_000,
            expires_at: None,
            ban_count: 1,
            failures: 5,
            ports: vec!["22".into()],
            protocol: "tcp".into(),
            origin: "central-1".into(),
            hosts: Vec::new(),
            lifts: None,
        };
        assert_eq!(stored_event(&event.to_packed()), Some(event.clone()));
        // Stores written before version 2 hold JSON.
        assert_eq!(stored_event(&event.to_json()), Some(event));
        assert_eq!(stored_event("ban sshd"), None);
    }

    fn ban(i: u32, banned_at: u64) -> FleetEvent {
        FleetEvent {
            op: Op::Ban,
            jail: if i % 3 == 0 { "web" } else { "sshd" }.into(),
            target: format!("198.18.{}.{}/32", i / 250, i % 250 + 1)
                .parse()
                .unwrap(),
            banned_at,
            expires_at: Some(banned_at + 600_000),
            ban_count: 1,
            failures: 5,
            ports: vec!["22".into(), "2222:2223".into()],
            protocol: "tcp".into(),
            origin: "central-1".into(),
            hosts: if i % 2 == 0 {
                vec!["web-1".into()]
            } else {
                Vec::new()
            },
            lifts: None,
        }
    }

    /// The unban of `of`'s target, sent by `origin` at `at`, naming the ban `lifts` (None: none).
    fn unban_of(of: &FleetEvent, origin: &str, at: u64, lifts: Option<u64>) -> FleetEvent {
        FleetEvent {
            op: Op::Unban,
            origin: origin.into(),
            banned_at: at,
            expires_at: None,
            lifts,
            ..of.clone()
        }
    }

    type Want = BTreeMap<(String, String), FleetEvent>;

    fn hold_in(changes: &mut Journal, want: &mut Want, e: FleetEvent) {
        want.insert((e.jail.clone(), e.target.to_string()), e.clone());
        // Every other one as the stream entry's own text.
        if changes.entries % 2 == 0 {
            changes.hold(&e, Some(&e.to_packed()));
        } else {
            changes.hold(&e, None);
        }
    }

    fn drop_in(changes: &mut Journal, want: &mut Want, i: u32) {
        let e = ban(i, 0);
        want.remove(&(e.jail.clone(), e.target.to_string()));
        changes.lift(&e.jail, e.target);
    }

    #[test]
    fn the_store_writes_batches_in_order_as_one_row_at_a_time_would() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("agent.db")).unwrap();
        // Runs longer and shorter than one insert statement, a key held twice in one run
        // (the later wins), drops between holds, a drop then a hold of the same key.
        let (mut changes, mut want) = (Journal::default(), Want::new());
        for i in 0..135 {
            hold_in(
                &mut changes,
                &mut want,
                ban(i, 1_700_000_000_000 + u64::from(i)),
            );
        }
        hold_in(&mut changes, &mut want, ban(5, 1_700_000_100_000));
        drop_in(&mut changes, &mut want, 3);
        drop_in(&mut changes, &mut want, 64);
        drop_in(&mut changes, &mut want, 9);
        hold_in(&mut changes, &mut want, ban(9, 1_700_000_200_000));
        for i in 500..503 {
            hold_in(&mut changes, &mut want, ban(i, 1_700_000_300_000));
        }
        store
            .save(&changes, Some("1700000000000-1"), false)
            .unwrap();
        // A second batch on the same statements.
        let mut more = Journal::default();
        drop_in(&mut more, &mut want, 500);
        hold_in(&mut more, &mut want, ban(501, 1_700_000_400_000));
        store.save(&more, Some("1700000000000-2"), false).unwrap();
        let (events, cursor, rows) = store.load().unwrap();
        assert_eq!(rows, changes.entries + more.entries);
        let got: Want = events
            .into_iter()
            .map(|e| ((e.jail.clone(), e.target.to_string()), e))
            .collect();
        assert_eq!(got.len(), 135);
        assert_eq!(got, want);
        assert_eq!(cursor.as_deref(), Some("1700000000000-2"));
    }

    fn loaded(store: &Store) -> Want {
        let (events, _, _) = store.load().unwrap();
        events
            .into_iter()
            .map(|e| ((e.jail.clone(), e.target.to_string()), e))
            .collect()
    }

    #[test]
    fn the_store_reads_the_old_table_and_a_rewrite_keeps_exactly_the_held_bans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        // A store written before the journal: bans in `fleet_bans`, packed and JSON.
        let (old_packed, old_json) = (ban(1, 1_700_000_000_000), ban(2, 1_700_000_000_001));
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE fleet_bans (jail TEXT NOT NULL, target TEXT NOT NULL,
                     event TEXT NOT NULL, PRIMARY KEY (jail, target));",
            )
            .unwrap();
            for (e, text) in [
                (&old_packed, old_packed.to_packed()),
                (&old_json, old_json.to_json()),
            ] {
                db.execute(
                    "INSERT INTO fleet_bans VALUES (?1, ?2, ?3)",
                    params![e.jail, e.target.to_string(), text],
                )
                .unwrap();
            }
        }
        let mut store = Store::open(&path).unwrap();
        let mut want = loaded(&store);
        assert_eq!(want.len(), 2);
        // The journal lifts an old-table ban and holds new ones over it.
        let mut changes = Journal::default();
        drop_in(&mut changes, &mut want, 1);
        hold_in(&mut changes, &mut want, ban(2, 1_700_000_000_500));
        hold_in(&mut changes, &mut want, ban(7, 1_700_000_000_600));
        store.save(&changes, Some("1-1"), false).unwrap();
        assert_eq!(loaded(&store), want);
        // A rewrite: the bans held now, nothing else, in the journal alone.
        let mut held = Journal::default();
        for e in want.values() {
            held.hold(e, None);
        }
        store.save(&held, Some("1-2"), true).unwrap();
        let (events, cursor, rows) = store.load().unwrap();
        assert_eq!((events.len(), cursor.as_deref(), rows), (2, Some("1-2"), 2));
        assert_eq!(loaded(&store), want);
        let old: i64 = store
            .db
            .query_row("SELECT count(*) FROM fleet_bans", [], |r| r.get(0))
            .unwrap();
        assert_eq!(old, 0);
    }

    #[tokio::test]
    async fn a_follower_rewrites_its_journal_once_it_outgrows_the_bans_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let raw = super::super::config::RawFleet {
            redis: Some("redis://127.0.0.1:1/0".into()),
            role: Some("agent".into()),
            node: Some("agent-j".into()),
            action: Some("log".into()),
            ..Default::default()
        };
        let config = super::super::config::compile(&raw, Vec::new(), &mut Vec::new()).unwrap();
        let start = |path: PathBuf| {
            Follower::start(
                Arc::new(config.clone()),
                HashMap::new(),
                AgentAllowlists::fixed(Vec::new()),
                path,
                HeldBans::default(),
                false,
            )
        };
        let now = super::super::now_ms();
        let n = 3000u32;
        let mut follower = start(path.clone()).await;
        for i in 0..n {
            follower.hold(ban(i, now));
        }
        follower.flush().await;
        assert_eq!(follower.journal_rows, n as usize);
        // Lifting all but ten: the journal would hold 2n - 10 rows for ten bans, past twice
        // the bans held plus the slack, so it is rewritten as the ten.
        for i in 10..n {
            let e = ban(i, now);
            assert!(follower.lift(&e.jail, e.target));
        }
        follower.flush().await;
        assert_eq!(follower.journal_rows, 10);
        // A small change after it is appended, not rewritten.
        let e = ban(0, now);
        follower.lift(&e.jail, e.target);
        follower.flush().await;
        assert_eq!(follower.journal_rows, 11);
        drop(follower);
        let store = Store::open(&path).unwrap();
        let (events, _, rows) = store.load().unwrap();
        assert_eq!(rows, 11);
        let mut got: Vec<String> = events.iter().map(|e| e.target.to_string()).collect();
        got.sort();
        let mut want: Vec<String> = (1..10).map(|i| ban(i, now).target.to_string()).collect();
        want.sort();
        assert_eq!(got, want);
        // A restart re-holds the nine from the journal, without writing them to it again.
        let follower = start(path).await;
        assert_eq!(follower.held().len(), 9);
        assert_eq!(follower.journal_rows, 11);
        assert_eq!(follower.journal.entries, 0);
    }

    /// A follower of `role` named `node` with the log action, its store in `dir` (no Redis).
    async fn log_follower(role: &str, node: &str, dir: &std::path::Path) -> Follower {
        let raw = super::super::config::RawFleet {
            redis: Some("redis://127.0.0.1:1/0".into()),
            role: Some(role.into()),
            node: Some(node.into()),
            action: Some("log".into()),
            ..Default::default()
        };
        let config = super::super::config::compile(&raw, Vec::new(), &mut Vec::new()).unwrap();
        Follower::start(
            Arc::new(config),
            HashMap::new(),
            AgentAllowlists::fixed(Vec::new()),
            dir.join("agent.db"),
            HeldBans::default(),
            false,
        )
        .await
    }

    #[tokio::test]
    async fn a_both_node_lifts_its_copy_of_another_sinks_ban_when_the_unban_is_run_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = log_follower("both", "sink-b", dir.path()).await;
        let now = super::super::now_ms();
        let theirs = FleetEvent {
            origin: "sink-a".into(),
            ..ban(1, now)
        };
        follower.apply(theirs.clone(), false, None).await;
        assert_eq!(follower.held().len(), 1, "sink-a's ban is held here");
        // This node's own bans are its jail's business, not its follower's.
        let ours = FleetEvent {
            origin: "sink-b".into(),
            ..ban(2, now)
        };
        follower.apply(ours, false, None).await;
        assert_eq!(follower.held().len(), 1);
        // `jailsink unban` run here lifts sink-a's ban fleet-wide, with this node's origin.
        let unban = unban_of(&theirs, "sink-b", now + 1, Some(theirs.banned_at));
        follower.apply(unban, false, None).await;
        assert!(follower.held().is_empty(), "{:?}", follower.held());
    }

    /// An unban that names no ban (of a ban from before fleet mode, or after a state error)
    /// lifts its own sink's ban only, never another sink's held for the same target.
    #[tokio::test]
    async fn an_unban_naming_no_ban_lifts_only_its_own_sinks_ban() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = log_follower("agent", "agent-n", dir.path()).await;
        let now = super::super::now_ms();
        let theirs = FleetEvent {
            origin: "sink-a".into(),
            ..ban(1, now)
        };
        follower.apply(theirs.clone(), false, None).await;
        let unban = |origin: &str| unban_of(&theirs, origin, now + 1, None);
        follower.apply(unban("sink-b"), false, None).await;
        assert_eq!(follower.held().len(), 1, "sink-b's unban left sink-a's ban");
        follower.apply(unban("sink-a"), false, None).await;
        assert!(follower.held().is_empty(), "{:?}", follower.held());
    }

    #[tokio::test]
    async fn of_two_sinks_bans_of_one_target_the_longer_stays_and_only_its_unban_lifts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = log_follower("agent", "agent-l", dir.path()).await;
        let now = super::super::now_ms();
        // Sink a bans for ever (by hand), then sink b for ten minutes.
        let forever = FleetEvent {
            origin: "sink-a".into(),
            expires_at: None,
            ..ban(1, now)
        };
        let brief = FleetEvent {
            origin: "sink-b".into(),
            ..ban(1, now + 1_000)
        };
        follower.apply(forever.clone(), false, None).await;
        follower.apply(brief.clone(), false, None).await;
        let held =
            |f: &Follower| -> Vec<u64> { f.held().values().map(|h| h.event.banned_at).collect() };
        assert_eq!(held(&follower), [forever.banned_at], "the longer ban stays");
        // b's ban ends: its unban names b's ban, not the one held.
        let unban = |of: &FleetEvent| unban_of(of, &of.origin, now + 2_000, Some(of.banned_at));
        follower.apply(unban(&brief), false, None).await;
        assert_eq!(held(&follower), [forever.banned_at]);
        // a's own unban lifts it.
        follower.apply(unban(&forever), false, None).await;
        assert!(follower.held().is_empty());
        // A longer ban does replace a shorter one.
        follower.apply(brief.clone(), false, None).await;
        let longer = FleetEvent {
            origin: "sink-a".into(),
            expires_at: Some(now + 3_600_000),
            ..ban(1, now + 3_000)
        };
        follower.apply(longer.clone(), false, None).await;
        assert_eq!(held(&follower), [longer.banned_at]);
    }

    #[test]
    fn journal_rows_end_at_line_ends_and_a_large_flush_takes_several() {
        let text = "aa\nbbbb\nc\n";
        assert_eq!(rows_of(text, 100).collect::<Vec<_>>(), ["aa\nbbbb\nc"]);
        assert_eq!(rows_of(text, 8).collect::<Vec<_>>(), ["aa\nbbbb", "c"]);
        assert_eq!(rows_of(text, 7).collect::<Vec<_>>(), ["aa", "bbbb\nc"]);
        // A line longer than a row is a row of its own.
        assert_eq!(rows_of(text, 2).collect::<Vec<_>>(), ["aa", "bbbb", "c"]);
        assert_eq!(rows_of("", 8).count(), 0);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("agent.db")).unwrap();
        let (mut changes, mut want) = (Journal::default(), Want::new());
        for i in 0..3000 {
            hold_in(&mut changes, &mut want, ban(i, 1_700_000_000_000));
        }
        assert!(changes.text.len() > 2 * ROW_BYTES);
        store.save(&changes, Some("1-1"), false).unwrap();
        let rows: i64 = store
            .db
            .query_row("SELECT count(*) FROM fleet_log", [], |r| r.get(0))
            .unwrap();
        assert!(rows >= 3, "{rows} rows");
        let (_, _, lines) = store.load().unwrap();
        assert_eq!(lines, 3000);
        assert_eq!(loaded(&store), want);
    }

    #[test]
    fn a_newline_hidden_past_the_parts_read_never_reaches_the_journal() {
        let e = ban(1, 1_700_000_000_000);
        let planted = ban(2, 1_700_000_000_000);
        // Parts past the twelfth are ignored by readers, so this decodes as `e`; written as it
        // came, the planted ban would be a line of its own on restore.
        let text = format!("{} x\n{}", e.to_packed(), planted.to_packed());
        assert_eq!(FleetEvent::from_packed(&text), Ok(e.clone()));
        let mut changes = Journal::default();
        changes.hold(&e, Some(&text));
        assert_eq!(changes.entries, 1);
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("agent.db")).unwrap();
        store.save(&changes, None, false).unwrap();
        let want: Want = [((e.jail.clone(), e.target.to_string()), e)].into();
        assert_eq!(loaded(&store), want);
    }

    #[test]
    fn packed_text_is_the_same_written_into_a_buffer() {
        let mut e = ban(4, 1_700_000_000_000);
        e.lifts = Some(1_699_999_999_999);
        let mut out = String::from("x");
        e.write_packed(&mut out);
        assert_eq!(&out[1..], e.to_packed());
        assert_eq!(FleetEvent::from_packed(&out[1..]), Ok(e.clone()));
        e.expires_at = None;
        e.ports.clear();
        e.hosts = vec!["a".into(), "b".into()];
        assert_eq!(FleetEvent::from_packed(&e.to_packed()), Ok(e));
    }

    #[test]
    fn busiest_minute_counts_the_fullest_window_covering_the_time() {
        let w = 60_000;
        // 600 a minute over two minutes: no window holds 1,000.
        let spread: Vec<u64> = (0..1200).map(|i| 1_000_000 + i * 100).collect();
        let m = map(&spread);
        assert!(busiest_minute(&m, 1_060_000, w, 1000) < 1000);
        // Five in one millisecond, then a sixth beside them: five in its window.
        let m = map(&[5_000_000; 5]);
        assert_eq!(busiest_minute(&m, 5_000_000 + w - 1, w, 3), 5);
        // Out of the window either side: none.
        assert_eq!(busiest_minute(&m, 5_000_000 + w, w, 3), 0);
        assert_eq!(busiest_minute(&m, 5_000_000 - w, w, 3), 0);
        // Bans decided after `at` but applied before it (a snapshot's order) count too.
        let m = map(&[2_000_010, 2_000_020, 2_000_030]);
        assert_eq!(busiest_minute(&m, 2_000_000, w, 3), 3);
        let m = map(&[2_000_010, 2_000_000 + w]);
        assert_eq!(busiest_minute(&m, 2_000_000, w, 2), 1, "one end each");
        // Two clusters two windows apart, `at` between them: only one cluster per window.
        let m = map(&[1_000_000, 1_000_000, 1_100_000, 1_100_000]);
        assert_eq!(busiest_minute(&m, 1_050_000, w, 3), 2);
    }
}
