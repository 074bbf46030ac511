//! Persistent state in SQLite: active bans and ban history, so no ban is lost to a restart or a
//! crash and repeat offenders keep escalating.
//!
//! Order is what makes a crash harmless: a ban is committed here before any firewall applies it
//! (the [`writer`] thread forwards it to the actions only after its transaction commits), so
//! after `kill -9` the firewall never holds a ban the state does not know. WAL mode keeps the
//! file consistent at any moment; admins can read it with the sqlite3 shell.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use rusqlite::{params, Connection};
use tokio::sync::mpsc;

use crate::action::records::{add_columns, readable};
use crate::action::ActionCommand;
use crate::action::BanOrder;
use crate::address::show_target;
use crate::evidence::{tail, Line};

mod checkpoint;
use checkpoint::Checkpointer;

/// Operations waiting for the writer before it blocks the jail task.
pub(crate) const QUEUE_DEPTH: usize = 16_384;
/// Most operations committed in one transaction.
const BATCH: usize = 4096;
/// Most failed writes kept for a retry while the database cannot be written.
const MAX_PENDING: usize = 100_000;
/// While writes wait for a retry, they are retried at least this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often the writer looks at its queue while writes wait for a retry (a ban's action waits
/// at most this long more while the database fails).
const POLL: Duration = Duration::from_millis(10);
/// Tries, [`RETRY_EVERY`] apart, for refused writes when the daemon stops.
const RETRIES_AT_STOP: usize = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bans (
    jail       TEXT    NOT NULL,
    target     TEXT    NOT NULL,   -- address or CIDR network
    banned_at  INTEGER NOT NULL,   -- unix seconds
    expires_at INTEGER,            -- unix seconds; NULL = permanent
    failures   INTEGER NOT NULL,
    ban_count  INTEGER NOT NULL,   -- 1 for a first offence
    PRIMARY KEY (jail, target)
);
CREATE TABLE IF NOT EXISTS history (
    id        INTEGER PRIMARY KEY,
    jail      TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    banned_at INTEGER NOT NULL,
    bantime   INTEGER,             -- seconds; NULL = permanent
    failures  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_target ON history (jail, target);
CREATE TABLE IF NOT EXISTS fleet_outbox (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,   -- publish order
    event TEXT    NOT NULL                     -- fleet event, JSON (src/fleet/event.rs)
);
";

/// Columns added since the first schema, as (table, column, type): [`migrate`] adds those an
/// older database lacks, so a state.db of any earlier version opens.
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    // JSON array of the syslog host names the deciding failures came from.
    ("bans", "hosts", "TEXT"),
    ("history", "hosts", "TEXT"),
    // JSON array of evidence lines (src/evidence/mod.rs `Line`), oldest first.
    ("history", "evidence", "TEXT"),
];

/// Indexes for `why` (past bans of an address and the networks holding it) and for pruning.
const ADDED_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS history_by_addr ON history (target);
CREATE INDEX IF NOT EXISTS history_by_time ON history (banned_at);
";

/// Most past bans `why` reads for one address.
const MAX_PAST_BANS: usize = 200;

/// Brings an older database to the current schema (idempotent).
fn migrate(db: &Connection) -> rusqlite::Result<()> {
    add_columns(db, &ADDED_COLUMNS)?;
    db.execute_batch(ADDED_INDEXES)
}

/// Where committed bans go besides the actions: the fleet's encoder (a sink), which turns each
/// ban and unban into an event written to the `fleet_outbox` table in the same transaction, so
/// an event exists if and only if its ban was committed.
pub(crate) trait Outbox: Send {
    /// The event to publish for `op`, or None; `tx` is the op's own transaction (the encoder
    /// keeps what it needs to name the ban an unban lifts there).
    fn encode(&self, op: &StateOp, tx: &rusqlite::Connection) -> Option<String>;
    /// Events were committed: wake the publisher.
    fn committed(&self);
}

/// A state problem, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused.
    #[error("state {path}: {reason}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        reason: rusqlite::Error,
    },
    /// The directory could not be made.
    #[error("state {path}: {reason}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// What the file system said.
        reason: std::io::Error,
    },
}

/// A ban read back from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredBan {
    /// The jail's name.
    pub jail: String,
    /// What is banned.
    pub target: IpNetwork,
    /// When, wall clock.
    pub banned_at: SystemTime,
    /// When it ends; None is permanent.
    pub expires_at: Option<SystemTime>,
    /// Failures that led to it.
    pub failures: u32,
    /// Offence number.
    pub ban_count: u32,
    /// Syslog host names the deciding failures came from.
    pub hosts: Vec<String>,
}

/// A ban of the history, with its evidence, as `why` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PastBan {
    /// The jail's name.
    pub jail: String,
    /// What was banned.
    pub target: IpNetwork,
    /// When, wall clock.
    pub banned_at: SystemTime,
    /// Its length in seconds; None is permanent.
    pub bantime: Option<u64>,
    /// Failures that led to it.
    pub failures: u32,
    /// Syslog host names the deciding failures came from.
    pub hosts: Vec<String>,
    /// The deciding lines, oldest first.
    pub evidence: Vec<Line>,
}

/// An open state database.
pub struct State {
    path: PathBuf,
    db: Connection,
    /// History rows older than this are pruned; None keeps them all.
    history: Option<Duration>,
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

impl State {
    /// Opens (creating if needed) the database and its directory.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let error = |reason| StateError::Db {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|reason| StateError::Io {
                path: path.to_path_buf(),
                reason,
            })?;
        }
        let db = Connection::open(path).map_err(error)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        // NORMAL is durable against a killed process (the WAL survives it); only power loss
        // can drop the last commits.
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(error)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        db.execute_batch(SCHEMA).map_err(error)?;
        migrate(&db).map_err(error)?;
        Ok(State {
            path: path.to_path_buf(),
            db,
            history: None,
        })
    }

    /// Moves WAL checkpoints off this connection onto a thread of their own (see
    /// [`checkpoint`]), so no commit waits for one. None (logged) keeps SQLite's automatic
    /// checkpoint here.
    fn checkpoint_apart(&self, pause: Duration, errors: metrics::Counter) -> Option<Checkpointer> {
        let apart = Checkpointer::start(&self.path, pause, errors).and_then(|checkpointer| {
            self.db
                .pragma_update(None, "wal_autocheckpoint", 0)
                .map(|()| checkpointer)
                .map_err(Into::into)
        });
        apart
            .map_err(|error| {
                tracing::warn!(%error, path = %self.path.display(), "checkpoints stay in the commits");
            })
            .ok()
    }

    /// Keeps ban history for `days` (`[state] history_days`; 0 keeps it forever) and prunes
    /// what is older now; the writer prunes again on every [`StateOp::PruneHistory`].
    pub(crate) fn keep_history(&mut self, days: u32) -> Result<usize, StateError> {
        self.history = (days > 0).then(|| Duration::from_secs(u64::from(days) * 86_400));
        self.prune_history(SystemTime::now())
    }

    /// Deletes history rows older than the retention at `now`; returns how many.
    pub(crate) fn prune_history(&mut self, now: SystemTime) -> Result<usize, StateError> {
        let Some(keep) = self.history else {
            return Ok(0);
        };
        let cutoff = now.checked_sub(keep).map_or(0, secs);
        let pruned = self
            .db
            .execute("DELETE FROM history WHERE banned_at < ?1", params![cutoff])
            .map_err(|e| self.error(e))?;
        if pruned > 0 {
            tracing::info!(pruned, "ban history older than history_days pruned");
        }
        Ok(pruned)
    }

    /// Past bans (newest first, at most [`MAX_PAST_BANS`]) of any of `targets`, every jail.
    pub(crate) fn past_bans(&self, targets: &[IpNetwork]) -> Result<Vec<PastBan>, StateError> {
        let wanted: Vec<String> = targets.iter().map(IpNetwork::to_string).collect();
        let marks = vec!["?"; wanted.len()].join(",");
        let sql = format!(
            "SELECT jail, target, banned_at, bantime, failures, hosts, evidence FROM history
             WHERE target IN ({marks}) ORDER BY banned_at DESC, id DESC LIMIT {MAX_PAST_BANS}"
        );
        let mut stmt = self.db.prepare(&sql).map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(wanted.iter()), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let Some((jail, target, banned_at, bantime, failures, hosts, evidence)) =
                readable(row).map_err(|e| self.error(e))?
            else {
                continue;
            };
            let Ok(target) = crate::address::parse_target(&target) else {
                continue;
            };
            out.push(PastBan {
                jail,
                target,
                banned_at: time(banned_at),
                bantime: bantime.map(|b| b.max(0) as u64),
                failures: failures.clamp(0, u32::MAX as i64) as u32,
                hosts: from_json(hosts.as_deref()),
                evidence: from_json(evidence.as_deref()),
            });
        }
        Ok(out)
    }

    fn error(&self, reason: rusqlite::Error) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            reason,
        }
    }

    /// Every active ban.
    pub(crate) fn active_bans(&self) -> Result<Vec<StoredBan>, StateError> {
        self.query_bans("", params![])
    }

    /// The active ban of `target` in `jail`, if any.
    #[cfg(test)]
    pub(crate) fn active_ban(
        &self,
        jail: &str,
        target: IpNetwork,
    ) -> Result<Option<StoredBan>, StateError> {
        let found = self.query_bans(
            "WHERE jail = ?1 AND target = ?2",
            params![jail, target.to_string()],
        )?;
        Ok(found.into_iter().next())
    }

    fn query_bans(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredBan>, StateError> {
        let sql = format!(
            "SELECT jail, target, banned_at, expires_at, failures, ban_count, hosts FROM bans {filter} ORDER BY banned_at"
        );
        let mut stmt = self.db.prepare(&sql).map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let Some((jail, target, banned_at, expires_at, failures, ban_count, hosts)) =
                readable(row).map_err(|e| self.error(e))?
            else {
                continue;
            };
            // A row an admin mangled by hand is skipped, not fatal.
            let Ok(target) = crate::address::parse_target(&target) else {
                tracing::warn!(jail = %jail, target = %target, "skipping unreadable ban in state");
                continue;
            };
            out.push(StoredBan {
                jail,
                target,
                banned_at: time(banned_at),
                expires_at: expires_at.map(time),
                failures: failures.clamp(0, u32::MAX as i64) as u32,
                ban_count: ban_count.clamp(1, u32::MAX as i64) as u32,
                hosts: from_json(hosts.as_deref()),
            });
        }
        Ok(out)
    }

    /// How often each target has been banned, per jail: escalation survives restarts.
    pub(crate) fn ban_counts(&self) -> Result<HashMap<(String, IpNetwork), u32>, StateError> {
        let mut stmt = self
            .db
            .prepare("SELECT jail, target, COUNT(*) FROM history GROUP BY jail, target")
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let (jail, target, count) = row.map_err(|e| self.error(e))?;
            if let Ok(target) = target.parse() {
                out.insert((jail, target), count.clamp(0, u32::MAX as i64) as u32);
            }
        }
        Ok(out)
    }

    /// Applies a batch in one transaction.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, ops: &[StateOp]) -> Result<(), StateError> {
        self.apply_with(ops, None)
    }

    /// Applies a batch in one transaction, with each op's fleet event (if `outbox` encodes
    /// one) written to the outbox in the same transaction. Its statements come from the
    /// connection's statement cache: compiling the SQL for every ban took about a third of the
    /// writer thread while a botnet was banned.
    pub(crate) fn apply_with(
        &mut self,
        ops: &[StateOp],
        outbox: Option<&dyn Outbox>,
    ) -> Result<(), StateError> {
        let mut published = false;
        let path = self.path.clone();
        let error = move |reason| StateError::Db {
            path: path.clone(),
            reason,
        };
        let tx = self.db.transaction().map_err(&error)?;
        for op in ops {
            let result = match op {
                StateOp::Ban {
                    jail,
                    order,
                    banned_at,
                    ban_count,
                    hosts,
                } => {
                    let bantime = order.bantime.map(|d| d.as_secs() as i64);
                    let start = secs(*banned_at);
                    let hosts = to_json(hosts);
                    let evidence = to_json(&order.evidence[..]);
                    let target = order.target.to_string();
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO bans (jail, target, banned_at, expires_at, failures, ban_count, hosts)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .and_then(|mut insert| {
                        insert.execute(params![jail, target, start, bantime.map(|b| start + b), order.failures, ban_count, hosts])
                    })
                    .and_then(|_| {
                        tx.prepare_cached(
                            "INSERT INTO history (jail, target, banned_at, bantime, failures, hosts, evidence)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?
                        .execute(params![jail, target, start, bantime, order.failures, hosts, evidence])
                    })
                }
                StateOp::Unban { jail, target } => tx
                    .prepare_cached("DELETE FROM bans WHERE jail = ?1 AND target = ?2")
                    .and_then(|mut delete| delete.execute(params![jail, target.to_string()])),
                StateOp::Routes(_)
                | StateOp::Barrier(_)
                | StateOp::History { .. }
                | StateOp::PruneHistory => Ok(0),
            };
            result.map_err(&error)?;
            if let Some(event) = outbox.and_then(|o| o.encode(op, &tx)) {
                tx.prepare_cached("INSERT INTO fleet_outbox (event) VALUES (?1)")
                    .and_then(|mut insert| insert.execute(params![event]))
                    .map_err(&error)?;
                published = true;
            }
        }
        tx.commit().map_err(&error)?;
        if let (true, Some(outbox)) = (published, outbox) {
            outbox.committed();
        }
        Ok(())
    }
}

/// Work for the writer: persisted, then forwarded to the jail's actions.
#[derive(Debug)]
pub(crate) enum StateOp {
    /// Record a ban and apply it.
    Ban {
        /// The jail's name.
        jail: String,
        /// The ban.
        order: BanOrder,
        /// Wall clock of the ban.
        banned_at: SystemTime,
        /// Offence number.
        ban_count: u32,
        /// Syslog host names the deciding failures came from (stored with the ban, and in
        /// fleet events).
        hosts: Vec<String>,
    },
    /// Forget a ban and lift it.
    Unban {
        /// The jail's name.
        jail: String,
        /// What was banned.
        target: IpNetwork,
    },
    /// Answered once everything sent before it is committed (or the database failed): a
    /// control answer waits for it, so what `banned` lists or `ban` reports survives a crash.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// From now on, send each jail's commands to these queues (sent at start and reload, in
    /// band, so no command overtakes a change of runner).
    Routes(HashMap<String, mpsc::Sender<ActionCommand>>),
    /// The past bans of these targets, answered once everything sent before is committed
    /// (empty when the database is unavailable).
    History {
        /// An address and the networks that hold it.
        targets: Vec<IpNetwork>,
        /// Where the answer goes.
        answer: tokio::sync::oneshot::Sender<Vec<PastBan>>,
    },
    /// Delete history older than `[state] history_days` (sent periodically).
    PruneHistory,
}

impl StateOp {
    /// A copy of an operation that changes the database, kept to retry it; None for the others
    /// (routes and barriers only take effect once).
    fn persistent_copy(&self) -> Option<StateOp> {
        match self {
            StateOp::Ban {
                jail,
                order,
                banned_at,
                ban_count,
                hosts,
            } => Some(StateOp::Ban {
                jail: jail.clone(),
                order: order.clone(),
                banned_at: *banned_at,
                ban_count: *ban_count,
                hosts: hosts.clone(),
            }),
            StateOp::Unban { jail, target } => Some(StateOp::Unban {
                jail: jail.clone(),
                target: *target,
            }),
            StateOp::Routes(_)
            | StateOp::Barrier(_)
            | StateOp::History { .. }
            | StateOp::PruneHistory => None,
        }
    }
}

/// `value` as JSON text for a column.
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// A JSON column read back; NULL (a row from before the column existed) or garbage is empty.
fn from_json<T: serde::de::DeserializeOwned + Default>(text: Option<&str>) -> T {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The ban line operators grep for, `[sshd] Ban 203.0.113.5`, written once the ban is committed
/// (and shown to `tail` clients).
fn log_ban(jail: &str, order: &BanOrder, ban_count: u32) {
    let shown = show_target(order.target);
    if tail::watching() {
        let mut e = tail::Event::new(tail::Kind::Ban, jail);
        e.ip = Some(shown.clone());
        e.failures = Some(order.failures);
        e.bantime = Some(show_bantime(order.bantime));
        e.ban_count = Some(ban_count);
        tail::publish(e);
    }
    tracing::info!(
        jail = %jail,
        ip = %shown,
        failures = order.failures,
        bantime = %show_bantime(order.bantime),
        ban_count,
        "[{jail}] Ban {shown}"
    );
}

/// A ban length as logs show it: `1h`, or `permanent`.
pub(crate) fn show_bantime(bantime: Option<Duration>) -> String {
    match bantime {
        Some(d) => humantime::format_duration(d).to_string(),
        None => "permanent".into(),
    }
}

/// The writer thread: batches operations into transactions and forwards them, in order, to
/// the action runners once committed. A database that fails (read-only, disk full) is logged
/// and counted, and bans go on in memory: protection comes first, the state catches up later.
///
/// `reopen` is the database's path when it could not be opened at start: it is opened again
/// every second, the writes since start kept meanwhile (up to [`MAX_PENDING`]), so a state
/// directory mounted late or made writable later still gets this run's bans.
pub(crate) fn writer(
    mut state: Option<State>,
    mut ops: mpsc::Receiver<StateOp>,
    errors: metrics::Counter,
    outbox: Option<Box<dyn Outbox>>,
    reopen: Option<std::path::PathBuf>,
) {
    let mut routes: HashMap<String, mpsc::Sender<ActionCommand>> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut catch_up = CatchUp::default();
    // A local, dropped before the parameter `state`: the thread stops before the writer's
    // connection closes.
    let mut checkpointer = state
        .as_ref()
        .and_then(|db| db.checkpoint_apart(checkpoint::PAUSE, errors.clone()));
    let write = |db: &mut State, catch_up: &mut CatchUp, checkpointer: Option<&Checkpointer>| {
        catch_up.write(db, outbox.as_deref(), &errors, checkpointer);
    };
    let mut reopen_at = std::time::Instant::now();
    // Commands a runner's full queue could not take yet: one slow jail (a hung command
    // action, a firewall retrying) must not stop the writer, and with it every other jail.
    let mut held = Held::default();
    loop {
        held.flush(&routes);
        // Held commands are handed over soon after room appears; refused writes every second.
        let wait = if held.any() {
            Some(HELD_EVERY)
        } else {
            (!catch_up.pending.is_empty()).then_some(RETRY_EVERY)
        };
        match next_op(&mut ops, wait) {
            Next::Op(op) => batch.push(op),
            // Nothing new while writes wait: retry them anyway, so a quiet host catches up.
            Next::Idle => {}
            Next::Closed => break,
        }
        while batch.len() < BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if state.is_none() {
            if let Some(path) = reopen.as_deref() {
                // Kept until the database opens (bounded as refused writes are).
                catch_up
                    .pending
                    .extend(batch.iter().filter_map(StateOp::persistent_copy));
                if catch_up.pending.len() > MAX_PENDING {
                    let dropped = catch_up.pending.len() - MAX_PENDING;
                    catch_up.pending.drain(..dropped);
                }
                if std::time::Instant::now() >= reopen_at {
                    reopen_at = std::time::Instant::now() + RETRY_EVERY;
                    if let Ok(db) = State::open(path) {
                        tracing::warn!(path = %path.display(), waiting = catch_up.pending.len(), "state database opened at last: the bans since start are stored now");
                        // The actions keep their records there from now (none in a dry run).
                        crate::action::records::keep_in(path);
                        checkpointer = db.checkpoint_apart(checkpoint::PAUSE, errors.clone());
                        state = Some(db);
                        if let Some(db) = state.as_mut() {
                            write(db, &mut catch_up, checkpointer.as_ref());
                        }
                    }
                }
            }
        } else if let Some(db) = state.as_mut() {
            // Writes that failed before are retried first, in order, so the state catches up
            // once the disk is writable again.
            catch_up
                .pending
                .extend(batch.iter().filter_map(StateOp::persistent_copy));
            write(db, &mut catch_up, checkpointer.as_ref());
        }
        for op in batch.drain(..) {
            let (jail, command) = match op {
                StateOp::Routes(new) => {
                    routes = new;
                    continue;
                }
                StateOp::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
                StateOp::History { targets, answer } => {
                    let found = state.as_ref().map_or_else(Vec::new, |db| {
                        db.past_bans(&targets).unwrap_or_else(|error| {
                            tracing::error!(%error, "cannot read ban history");
                            Vec::new()
                        })
                    });
                    let _ = answer.send(found);
                    continue;
                }
                StateOp::PruneHistory => {
                    if let Some(db) = state.as_mut() {
                        if let Err(error) = db.prune_history(SystemTime::now()) {
                            errors.increment(1);
                            tracing::error!(%error, "cannot prune ban history");
                        }
                    }
                    continue;
                }
                StateOp::Ban {
                    jail,
                    order,
                    ban_count,
                    ..
                } => {
                    log_ban(&jail, &order, ban_count);
                    crate::metrics::ban_committed(&jail);
                    (jail, ActionCommand::Ban(order))
                }
                StateOp::Unban { jail, target } => {
                    if tail::watching() {
                        let mut e = tail::Event::new(tail::Kind::Unban, &jail);
                        e.ip = Some(show_target(target));
                        tail::publish(e);
                    }
                    (jail, ActionCommand::Unban(target))
                }
            };
            if let Some(queue) = routes.get(&jail) {
                held.forward(&jail, queue, command);
            }
        }
        held.flush(&routes);
    }
    // Stopping with writes the database refused: a few last tries before they are lost.
    if let Some(db) = state.as_mut() {
        for _ in 0..RETRIES_AT_STOP {
            if catch_up.pending.is_empty() {
                break;
            }
            std::thread::sleep(RETRY_EVERY);
            write(db, &mut catch_up, checkpointer.as_ref());
        }
        if !catch_up.pending.is_empty() {
            tracing::error!(
                lost = catch_up.pending.len(),
                "state writes lost at stop: the database never took them"
            );
        }
    }
}

/// Writes the database refused, kept in order for the next try.
#[derive(Default)]
struct CatchUp {
    /// Oldest first; at most [`MAX_PENDING`].
    pending: Vec<StateOp>,
    /// The last try failed (so recovery is logged once).
    failing: bool,
}

impl CatchUp {
    /// Commits everything pending in one transaction, or keeps it for the next try.
    fn write(
        &mut self,
        db: &mut State,
        outbox: Option<&dyn Outbox>,
        errors: &metrics::Counter,
        checkpointer: Option<&Checkpointer>,
    ) {
        match db.apply_with(&self.pending, outbox) {
            Ok(()) => {
                if let Some(checkpointer) = checkpointer {
                    checkpointer.committed();
                }
                if self.failing {
                    self.failing = false;
                    tracing::info!(
                        caught_up = self.pending.len(),
                        "state database writable again"
                    );
                }
                self.pending.clear();
            }
            Err(error) => {
                errors.increment(1);
                if !self.failing {
                    tracing::error!(%error, "cannot write state; bans continue in memory");
                }
                self.failing = true;
                if self.pending.len() > MAX_PENDING {
                    let dropped = self.pending.len() - MAX_PENDING;
                    self.pending.drain(..dropped);
                    tracing::error!(
                        dropped,
                        "state writes dropped: the database has been failing too long"
                    );
                }
            }
        }
    }
}

/// What the writer's queue gave.
enum Next {
    /// An operation.
    Op(StateOp),
    /// Nothing for the wait asked (writes or commands wait for another try).
    Idle,
    /// Every sender is gone: the daemon is stopping.
    Closed,
}

/// The next operation. While `retrying`, the queue is polled (every [`POLL`]) so that after
/// [`RETRY_EVERY`] without one the writer can retry what the database refused.
/// How often commands held for a full runner queue are offered again.
const HELD_EVERY: Duration = Duration::from_millis(50);

/// Most commands held for one jail whose runner's queue is full; past it the oldest are
/// dropped (logged and counted): the jail keeps those bans, and the next start's reconcile
/// puts the firewall right.
const HELD_MAX: usize = 100_000;

/// Commands for runners whose queue was full, per jail, in order.
#[derive(Default)]
struct Held {
    jails: HashMap<String, std::collections::VecDeque<ActionCommand>>,
}

impl Held {
    /// True while any command waits.
    fn any(&self) -> bool {
        self.jails.values().any(|q| !q.is_empty())
    }

    /// Hands `command` to the jail's runner, after the jail's held ones; held when the queue
    /// is full.
    fn forward(&mut self, jail: &str, queue: &mpsc::Sender<ActionCommand>, command: ActionCommand) {
        let waiting = self.jails.get_mut(jail).filter(|q| !q.is_empty());
        let command = match waiting {
            Some(q) => {
                q.push_back(command);
                if q.len() > HELD_MAX {
                    q.pop_front();
                    crate::metrics::state_errors().increment(1);
                    tracing::error!(jail, "action runner far behind: a firewall command is dropped (the next start reconciles)");
                }
                return;
            }
            None => command,
        };
        match queue.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                tracing::warn!(
                    jail,
                    "action runner behind; its commands wait, other jails go on"
                );
                self.jails
                    .entry(jail.to_string())
                    .or_default()
                    .push_back(command);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(jail, "action runner is gone");
            }
        }
    }

    /// Hands held commands over while their runners' queues have room; drops those of jails
    /// no longer routed (removed by a reload).
    fn flush(&mut self, routes: &HashMap<String, mpsc::Sender<ActionCommand>>) {
        self.jails.retain(|jail, held| {
            let Some(queue) = routes.get(jail) else {
                return false;
            };
            while let Some(command) = held.pop_front() {
                match queue.try_send(command) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(command)) => {
                        held.push_front(command);
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            false
        });
    }
}

fn next_op(ops: &mut mpsc::Receiver<StateOp>, wait: Option<Duration>) -> Next {
    let Some(wait) = wait else {
        return ops.blocking_recv().map_or(Next::Closed, Next::Op);
    };
    let give_up = std::time::Instant::now() + wait;
    loop {
        match ops.try_recv() {
            Ok(op) => return Next::Op(op),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() >= give_up => {
                return Next::Idle
            }
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn order(target: &str, bantime: Option<u64>) -> BanOrder {
        BanOrder {
            target: target.parse().unwrap(),
            failures: 5,
            bantime: bantime.map(Duration::from_secs),
            decided_at: Instant::now(),
            from_state: false,
            evidence: Default::default(),
        }
    }

    #[test]
    fn an_old_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            // The schema before evidence: no hosts, no evidence columns.
            let db = Connection::open(&path).unwrap();
            db.execute_batch(SCHEMA).unwrap();
            db.execute(
                "INSERT INTO bans (jail, target, banned_at, expires_at, failures, ban_count) VALUES ('sshd', '192.0.2.9/32', 100, NULL, 5, 1)",
                [],
            )
            .unwrap();
            db.execute(
                "INSERT INTO history (jail, target, banned_at, bantime, failures) VALUES ('sshd', '192.0.2.9/32', 100, NULL, 5)",
                [],
            )
            .unwrap();
        }
        let mut state = State::open(&path).unwrap();
        let bans = state.active_bans().unwrap();
        assert_eq!(bans.len(), 1);
        assert!(bans[0].hosts.is_empty());
        // A row an admin mangled (a value of the wrong type) is skipped; the others are read.
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO bans (jail, target, banned_at, expires_at, failures, ban_count) VALUES ('sshd', '192.0.2.10/32', 100, 'never', 5, 1)",
                [],
            )
            .unwrap();
        assert_eq!(state.active_bans().unwrap().len(), 1);
        let target: IpNetwork = "192.0.2.9/32".parse().unwrap();
        let past = state.past_bans(&[target]).unwrap();
        assert_eq!(past.len(), 1);
        assert!(past[0].evidence.is_empty());
        let mut banned = order("192.0.2.9/32", Some(60));
        banned.evidence = vec![Line {
            at_ms: 1_000,
            host: Some("web-1".into()),
            program: Some("sshd".into()),
            message: "Failed password for root from 192.0.2.9".into(),
            count: 1,
        }]
        .into();
        state
            .apply(&[StateOp::Ban {
                jail: "sshd".into(),
                hosts: vec!["web-1".into()],
                order: banned,
                banned_at: SystemTime::now(),
                ban_count: 2,
            }])
            .unwrap();
        drop(state);
        // Opening again (migrated already) is a no-op.
        let mut state = State::open(&path).unwrap();
        let past = state.past_bans(&[target]).unwrap();
        assert_eq!(past.len(), 2);
        assert_eq!(past[0].hosts, ["web-1"]);
        assert_eq!(
            past[0].evidence[0].message,
            "Failed password for root from 192.0.2.9"
        );
        assert_eq!(state.active_bans().unwrap()[0].hosts, ["web-1"]);
        // The row from 1970 is older than any retention; the new one stays.
        assert_eq!(state.keep_history(90).unwrap(), 1);
        assert_eq!(state.past_bans(&[target]).unwrap().len(), 1);
        assert_eq!(state.keep_history(0).unwrap(), 0, "0 keeps history forever");
    }

    /// The bans in the database file alone, without its WAL: what checkpoints have copied.
    fn checkpointed_bans(path: &Path, scratch: &Path) -> Option<usize> {
        let copy = scratch.join("copy.db");
        let _ = std::fs::remove_file(scratch.join("copy.db-wal"));
        std::fs::copy(path, &copy).ok()?;
        let db = Connection::open(&copy).ok()?;
        db.query_row("SELECT count(*) FROM bans", [], |row| row.get::<_, i64>(0))
            .ok()
            .map(|n| n as usize)
    }

    #[test]
    fn commits_are_checkpointed_by_a_thread_of_their_own_not_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let state = State::open(&path).unwrap();
        let checkpointer = state
            .checkpoint_apart(Duration::from_millis(50), metrics::Counter::noop())
            .expect("checkpoint thread");
        // The writer's own commits never checkpoint now, whatever the WAL's size.
        let auto: i64 = state
            .db
            .pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0))
            .unwrap();
        assert_eq!(auto, 0);
        drop(checkpointer);

        let (tx, rx) = mpsc::channel(64);
        let writer = std::thread::spawn(move || {
            writer(Some(state), rx, metrics::Counter::noop(), None, None);
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for round in 0..3u32 {
            for i in 0..20u32 {
                let op = StateOp::Ban {
                    jail: "sshd".into(),
                    order: order(&format!("198.51.100.{}", round * 20 + i), Some(600)),
                    banned_at: SystemTime::now(),
                    ban_count: 1,
                    hosts: vec![],
                };
                tx.blocking_send(op).unwrap();
            }
            let (done, committed) = tokio::sync::oneshot::channel();
            tx.blocking_send(StateOp::Barrier(done)).unwrap();
            rt.block_on(committed).unwrap();
            // Only the thread can have copied the committed bans into the file itself.
            let want = (round as usize + 1) * 20;
            let deadline = Instant::now() + Duration::from_secs(30);
            while checkpointed_bans(&path, scratch.path()) != Some(want) {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the file holds {:?} bans, not {want}",
                    checkpointed_bans(&path, scratch.path())
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        drop(tx);
        writer.join().unwrap();
        // Closed last, the writer's connection checkpointed the rest and removed the WAL.
        assert!(!dir.path().join("state.db-wal").exists());
        assert_eq!(State::open(&path).unwrap().active_bans().unwrap().len(), 60);
    }

    /// A state.db whose writes of bans fail while `refuse` holds a row: SQLite refuses them as a
    /// full or locked disk would, without root or timing.
    fn refusing_state(dir: &Path) -> (State, Connection) {
        let path = dir.join("state.db");
        let state = State::open(&path).unwrap();
        let control = Connection::open(&path).unwrap();
        control
            .execute_batch(
                "CREATE TABLE refuse (x); CREATE TRIGGER refused BEFORE INSERT ON bans
                 WHEN EXISTS (SELECT 1 FROM refuse) BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        (state, control)
    }

    fn stored_targets(path: &Path) -> Vec<String> {
        let db = Connection::open(path).unwrap();
        let mut q = db
            .prepare("SELECT target FROM bans ORDER BY target")
            .unwrap();
        let rows = q.query_map([], |row| row.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    fn ban_op(ip: &str) -> StateOp {
        StateOp::Ban {
            jail: "sshd".into(),
            order: order(ip, Some(600)),
            banned_at: SystemTime::now(),
            ban_count: 1,
            hosts: vec![],
        }
    }

    /// A database that could not be opened at start (its directory missing, mounted late) is
    /// opened again while the daemon runs, and gets the bans decided meanwhile.
    #[test]
    fn a_state_database_that_could_not_be_opened_at_start_gets_the_bans_once_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late").join("state.db");
        // A file where the directory belongs: not even root can open the database.
        std::fs::write(dir.path().join("late"), "not a directory").unwrap();
        assert!(State::open(&path).is_err(), "not openable yet");
        let (tx, rx) = mpsc::channel(64);
        let reopen = Some(path.clone());
        let writer =
            std::thread::spawn(move || writer(None, rx, metrics::Counter::noop(), None, reopen));
        send_and_wait(&tx, ban_op("192.0.2.7"));
        std::fs::remove_file(dir.path().join("late")).unwrap();
        send_and_wait(&tx, ban_op("192.0.2.8"));
        // Read as the writer goes: the file may exist before its tables do.
        let stored = || -> Vec<String> {
            // Read-only: never creates the file before the writer does.
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
            let Ok(db) = Connection::open_with_flags(&path, flags) else {
                return Vec::new();
            };
            let Ok(mut q) = db.prepare("SELECT target FROM bans ORDER BY target") else {
                return Vec::new();
            };
            q.query_map([], |row| row.get(0))
                .map(|rows| rows.filter_map(Result::ok).collect())
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored().len() < 2 {
            assert!(Instant::now() < deadline, "the database was never opened");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(stored_targets(&path), ["192.0.2.7/32", "192.0.2.8/32"]);
        drop(tx);
        writer.join().unwrap();
    }

    /// A jail whose runner takes nothing (a hung command action) does not stop the writer:
    /// another jail's ban reaches its runner at once, and the slow jail's commands reach its
    /// runner, in order, once it takes them again.
    #[test]
    fn a_runner_that_takes_nothing_holds_up_only_its_own_jail() {
        let (tx, rx) = mpsc::channel(64);
        let writer =
            std::thread::spawn(move || writer(None, rx, metrics::Counter::noop(), None, None));
        let (slow_tx, mut slow_rx) = mpsc::channel::<ActionCommand>(1);
        let (fast_tx, mut fast_rx) = mpsc::channel::<ActionCommand>(16);
        let routes = HashMap::from([("slow".to_string(), slow_tx), ("sshd".to_string(), fast_tx)]);
        tx.blocking_send(StateOp::Routes(routes)).unwrap();
        for i in 1..=5 {
            let mut op = ban_op(&format!("192.0.2.{i}"));
            if let StateOp::Ban { jail, .. } = &mut op {
                *jail = "slow".into();
            }
            tx.blocking_send(op).unwrap();
        }
        tx.blocking_send(ban_op("198.51.100.1")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let fast = loop {
            if let Ok(command) = fast_rx.try_recv() {
                break command;
            }
            assert!(
                Instant::now() < deadline,
                "the writer is stuck behind the slow jail"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(fast.target().to_string(), "198.51.100.1/32");
        let mut slow = Vec::new();
        while slow.len() < 5 {
            assert!(
                Instant::now() < deadline,
                "held commands never reached the runner: {slow:?}"
            );
            match slow_rx.try_recv() {
                Ok(command) => slow.push(command.target().to_string()),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let want: Vec<String> = (1..=5).map(|i| format!("192.0.2.{i}/32")).collect();
        assert_eq!(slow, want, "in order");
        drop(tx);
        writer.join().unwrap();
    }

    /// Sends `op` and waits until the writer has tried to commit it.
    fn send_and_wait(tx: &mpsc::Sender<StateOp>, op: StateOp) {
        tx.blocking_send(op).unwrap();
        let (done, tried) = tokio::sync::oneshot::channel();
        tx.blocking_send(StateOp::Barrier(done)).unwrap();
        tried.blocking_recv().unwrap();
    }

    #[test]
    fn a_refused_write_is_retried_on_a_quiet_host_and_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (state, control) = refusing_state(dir.path());
        let (tx, rx) = mpsc::channel(64);
        let writer = std::thread::spawn(move || {
            writer(Some(state), rx, metrics::Counter::noop(), None, None)
        });

        // Refused, then nothing more arrives: the retry alone must store it.
        control
            .execute("INSERT INTO refuse VALUES (1)", [])
            .unwrap();
        send_and_wait(&tx, ban_op("192.0.2.1"));
        assert!(stored_targets(&path).is_empty());
        control.execute("DELETE FROM refuse", []).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored_targets(&path).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the refused ban was never retried"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // Refused, and the daemon stops before any retry: the last tries at stop store it.
        control
            .execute("INSERT INTO refuse VALUES (1)", [])
            .unwrap();
        send_and_wait(&tx, ban_op("192.0.2.2"));
        control.execute("DELETE FROM refuse", []).unwrap();
        drop(tx);
        writer.join().unwrap();
        assert_eq!(stored_targets(&path), ["192.0.2.1/32", "192.0.2.2/32"]);
    }

    #[test]
    fn bans_and_history_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let mut state = State::open(&path).unwrap();
        let now = SystemTime::now();
        state
            .apply(&[
                StateOp::Ban {
                    jail: "sshd".into(),
                    hosts: Vec::new(),
                    order: order("192.0.2.1/32", Some(600)),
                    banned_at: now,
                    ban_count: 1,
                },
                StateOp::Ban {
                    jail: "sshd".into(),
                    hosts: Vec::new(),
                    order: order("2001:db8::/64", None),
                    banned_at: now,
                    ban_count: 2,
                },
            ])
            .unwrap();
        state
            .apply(&[StateOp::Unban {
                jail: "sshd".into(),
                target: "192.0.2.1/32".parse().unwrap(),
            }])
            .unwrap();
        state
            .apply(&[StateOp::Ban {
                jail: "sshd".into(),
                hosts: Vec::new(),
                order: order("192.0.2.1/32", Some(1200)),
                banned_at: now,
                ban_count: 2,
            }])
            .unwrap();
        drop(state);
        let state = State::open(&path).unwrap();
        let bans = state.active_bans().unwrap();
        assert_eq!(bans.len(), 2);
        let v4 = bans.iter().find(|b| b.target.is_ipv4()).unwrap();
        assert_eq!(v4.ban_count, 2);
        assert_eq!(secs(v4.expires_at.unwrap()) - secs(v4.banned_at), 1200);
        let v6 = bans.iter().find(|b| b.target.is_ipv6()).unwrap();
        assert_eq!(v6.expires_at, None);
        let counts = state.ban_counts().unwrap();
        assert_eq!(
            counts[&("sshd".to_string(), "192.0.2.1/32".parse().unwrap())],
            2
        );
        assert!(state
            .active_ban("sshd", "2001:db8::/64".parse().unwrap())
            .unwrap()
            .is_some());
    }
}
