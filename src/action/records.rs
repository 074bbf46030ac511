//! What the actions themselves made, kept in the state database so a restart after a crash can
//! tell: the command action's record of the bans it ran (it cannot list what the operator's
//! programs hold), and the firewall objects each backend created (so those of a jail removed from
//! the config while the daemon was down are removed at start, and nothing another program made
//! under a similar name is touched).
//!
//! Each runner thread opens its own connection to the file (WAL: readers and the state writer go
//! on meanwhile; a write waits at most the busy timeout), at the path [`keep_in`] names.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ipnetwork::IpNetwork;
use rusqlite::{params, Connection, OptionalExtension};

/// The record's database refused: the actions go on (a record only spares a command run twice).
#[derive(Debug, thiserror::Error)]
#[error("state {path}: {reason}")]
pub(crate) struct RecordError {
    /// The database file.
    path: PathBuf,
    /// What SQLite said.
    reason: rusqlite::Error,
}

/// Makes SQLite's errors the records' (`path`: the database file). A closure over the path
/// alone, for a method holding a transaction on the connection, where [`Records::error`]'s
/// borrow of the whole could not be.
fn error_at(path: &Path) -> impl Fn(rusqlite::Error) -> RecordError + '_ {
    move |reason| RecordError {
        path: path.to_path_buf(),
        reason,
    }
}

/// A row as read, or None for a value of the wrong type (an admin's `expires_at = 'never'`),
/// which skips that row with a warning; any other error (a damaged file) is returned.
pub(crate) fn readable<T>(row: rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    match row {
        Ok(row) => Ok(Some(row)),
        Err(
            error @ (rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)),
        ) => {
            tracing::warn!(%error, "skipping unreadable row in state");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS command_bans (
    jail     TEXT    NOT NULL,
    action   TEXT    NOT NULL,   -- which command action of the jail: its identity ([identity])
    position INTEGER NOT NULL DEFAULT -1,  -- its place among the jail's command actions (0 for
                                 -- the first); -1: written by a release before identities
    target   TEXT    NOT NULL,   -- address or CIDR network, as <ip> shows it
    failures INTEGER NOT NULL,   -- <failures> of the ban, for the unban template
    bantime  INTEGER NOT NULL,   -- <bantime> of the ban (seconds, -1 permanent)
    port     TEXT    NOT NULL,   -- <port> the ban ran with
    protocol TEXT    NOT NULL,   -- <protocol> the ban ran with
    settled  INTEGER NOT NULL,   -- 0 while a ban or unban command of it may be running
    commands INTEGER NOT NULL,   -- fingerprint of the ban and unban templates it ran with
    ban_commands INTEGER NOT NULL DEFAULT 0,  -- fingerprint of the ban template alone
    unban_argv   TEXT NOT NULL DEFAULT '',    -- JSON of the unban template it was banned for
    PRIMARY KEY (jail, action, target)
);
CREATE TABLE IF NOT EXISTS firewall_objects (
    backend TEXT NOT NULL,       -- iptables, nftables, ipset
    name    TEXT NOT NULL,       -- the action's name (kernel objects jailsink-<name>, ...)
    jail    TEXT NOT NULL,       -- the jail that made them last
    spec    TEXT NOT NULL,       -- JSON of the action's settings: what removing them needs
    PRIMARY KEY (backend, name)
);
CREATE TABLE IF NOT EXISTS stale_firewall_objects (
    backend TEXT NOT NULL,       -- iptables, nftables, ipset
    name    TEXT NOT NULL,       -- the action's name
    jail    TEXT NOT NULL,       -- the jail that made them
    spec    TEXT NOT NULL,       -- JSON of the earlier settings whose removal failed
    PRIMARY KEY (backend, name, spec)
);
";

/// How often an action whose records could not be opened (the database named, but locked or
/// unreadable) tries again, at its next command.
pub(crate) const REOPEN_EVERY: Duration = Duration::from_secs(10);

/// The late opening of the records by an action that started before the state database
/// opened: tried at most every [`REOPEN_EVERY`] (each try is a SQLite open, at every burst),
/// or at once after [`Reopen::force`] (a stop, which must be written down).
#[derive(Debug, Default)]
pub(crate) struct Reopen {
    tried: Option<std::time::Instant>,
}

impl Reopen {
    /// The records, when a path is named and a try is due now.
    pub(crate) fn try_open(&mut self) -> Option<Records> {
        if !named() {
            return None;
        }
        let now = std::time::Instant::now();
        if self
            .tried
            .is_some_and(|t| now.duration_since(t) < REOPEN_EVERY)
        {
            return None;
        }
        self.tried = Some(now);
        open_configured()
    }

    /// Makes the next try due at once, whenever the last one was.
    pub(crate) fn force(&mut self) {
        self.tried = None;
    }
}

/// The state database's path, once the daemon opened it (at start, or later when it could
/// not at start); None for good in a dry run ([`keep_none`]).
static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Says where the state database is (called once it opened, at start or later): actions keep
/// their records there from now (those running since start open them at their next command).
/// Before (no readable state) they keep them in memory only.
pub fn keep_in(path: &Path) {
    let _ = PATH.set(Some(path.to_path_buf()));
}

/// Says that no record is ever kept, whatever [`keep_in`] says later: a dry run, whose jails
/// hold only log actions, must neither read nor change what a real run recorded (the start-up
/// sweep would take a live daemon's firewall objects for those of removed jails).
pub fn keep_none() {
    let _ = PATH.set(None);
}

/// Whether [`keep_in`] named the database (the actions' records can then be opened).
pub(crate) fn named() -> bool {
    PATH.get().is_some_and(Option::is_some)
}

/// The records at the path [`keep_in`] named, or None (never named, or not openable: logged).
pub(crate) fn open_configured() -> Option<Records> {
    let path = PATH.get()?.as_ref()?;
    match Records::open(path) {
        Ok(records) => Some(records),
        Err(error) => {
            crate::metrics::state_errors().increment(1);
            tracing::error!(%error, "cannot open the actions' records; they are kept in memory only");
            None
        }
    }
}

/// The identity of a command action, which keys its records: the fingerprint of its `ban`
/// template (`dup`: how many command actions of the jail before it have the same one, as a
/// suffix), so inserting or removing another command action does not change it. A changed
/// `ban` makes another identity: its records are then taken over by position ([`Records::claim`]).
pub(crate) fn identity(ban: &[String], dup: usize) -> String {
    identity_of(fingerprint(ban, &[]), dup)
}

/// [`identity`] from the `ban` template's fingerprint.
fn identity_of(ban_fingerprint: i64, dup: usize) -> String {
    let fingerprint = ban_fingerprint as u64;
    match dup {
        0 => format!("{fingerprint:016x}"),
        n => format!("{fingerprint:016x}~{n}"),
    }
}

/// The identity of a record made when records were keyed by position (`position N`) without
/// its `ban` template: never an action's, so the action now at that position takes it over at
/// its start.
fn positional(position: i64) -> String {
    format!("position {position}")
}

/// The identity of a record made when records were keyed by position, by a `ban` template of
/// fingerprint `ban_fingerprint` at `position` (`<ban>@N`): never an action's. Which action of
/// that `ban` it is (two of the jail may have it) is only known from the config, so it is
/// settled at the actions' start ([`Records::claim`]): the one at that position, or one whose
/// `ban` moved.
fn migrated(ban_fingerprint: i64, position: i64) -> String {
    format!("{:016x}@{position}", ban_fingerprint as u64)
}

/// The `ban` part of an identity ([`identity`]: without its suffix) or of a migrated one
/// ([`migrated`]), and the position a migrated one says.
fn ban_of(id: &str) -> (&str, Option<i64>) {
    match id.split_once('@') {
        Some((ban, position)) => (ban, position.parse().ok()),
        None => (id.split('~').next().unwrap_or(id), None),
    }
}

/// A fingerprint of a command action's ban and unban templates (64-bit FNV-1a, stable across
/// builds), stored with each record: a record made by other templates is not taken for one of
/// the current programs.
pub(crate) fn fingerprint(ban: &[String], unban: &[String]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [ban, unban] {
        for byte in part
            .iter()
            .flat_map(|arg| arg.bytes().chain([0]))
            .chain([1])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash as i64
}

/// One ban the command action ran (or is running) `ban` for and has not yet run `unban` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandRecord {
    /// Who.
    pub target: IpNetwork,
    /// `<failures>` of the ban.
    pub failures: u32,
    /// `<bantime>` of the ban.
    pub bantime: i64,
    /// `<port>` the ban ran with.
    pub port: String,
    /// `<protocol>` the ban ran with.
    pub protocol: String,
    /// False while a command of it may be running (or failed): whether the operator's program
    /// holds it is then unknown.
    pub settled: bool,
}

/// A command about to run, recorded first.
pub(crate) enum Mark<'a> {
    /// `ban`, with the values its unban will need.
    Ban(&'a CommandRecord),
    /// `unban` of a target.
    Unban(IpNetwork),
}

/// A command that ran to success, recorded after.
pub(crate) enum Done {
    /// `ban` of the target succeeded: it is held.
    Banned(IpNetwork),
    /// `unban` of the target succeeded: forgotten.
    Unbanned(IpNetwork),
}

/// Firewall objects a backend made for a jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectRecord {
    /// iptables, nftables, ipset.
    pub backend: String,
    /// The action's name.
    pub name: String,
    /// The jail that made them.
    pub jail: String,
    /// The action's settings when it made them (JSON of a `FirewallSpec`).
    pub spec: String,
}

/// Columns added to `command_bans` after its first release (older databases get them at open).
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [
    // Fingerprint of the ban template alone (0: unknown, a record from before the column).
    ("command_bans", "ban_commands", "INTEGER NOT NULL DEFAULT 0"),
    // The unban template the ban was run for, as a JSON array ('' unknown): after the config
    // changed the templates, a ban no longer wanted is lifted with the program that holds it.
    ("command_bans", "unban_argv", "TEXT NOT NULL DEFAULT ''"),
];

/// Adds each (table, column, type) of `columns` a table lacks: how the state database and the
/// records bring an older schema up to date (idempotent).
pub(crate) fn add_columns(db: &Connection, columns: &[(&str, &str, &str)]) -> rusqlite::Result<()> {
    for (table, column, kind) in columns {
        let present = db
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !present {
            db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

/// A record whose ban and unban templates are not the current ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtherCommands {
    /// Who.
    pub target: IpNetwork,
    /// Fingerprint of the ban template it ran with (0 unknown).
    pub ban_commands: i64,
    /// The unban template it was run for (None unknown).
    pub unban: Option<Vec<String>>,
}

/// A record of a command action no longer configured.
pub(crate) struct Orphan {
    /// Its jail.
    pub jail: String,
    /// Which command action of the jail it was ([`identity`]).
    pub action: String,
    /// The ban's values.
    pub record: CommandRecord,
    /// The unban template it was banned for (None unknown).
    pub unban: Option<Vec<String>>,
}

/// A connection to the records.
pub(crate) struct Records {
    path: PathBuf,
    db: Connection,
    /// Fingerprint of the current ban template and the current unban template (JSON), written
    /// with each ban ([`Records::templates`]; 0 and '' when not told).
    ban_commands: i64,
    unban_argv: String,
}

/// Turns a `command_bans` table keyed by position (the action's place among the jail's command
/// actions, before records were keyed by identity) into one keyed by identity. Each record is
/// keyed by what it says itself: its `ban` template and position ([`migrated`]), settled to an
/// action at its start; one from before the templates were recorded by its position alone
/// ([`positional`]): the action now at that position takes it over at its start. (A record
/// cannot say which of two actions with the same `ban` it is, nor one position's records that a
/// whole position's: only the config can.) Nothing to do when the table has its `position`
/// column.
fn rekey_by_identity(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let keyed = tx
        .prepare("SELECT 1 FROM pragma_table_info('command_bans') WHERE name = 'position'")?
        .exists([])?;
    if keyed {
        return Ok(());
    }
    tx.execute_batch("ALTER TABLE command_bans RENAME TO command_bans_by_position")?;
    tx.execute_batch(SCHEMA)?;
    let rows: Vec<(String, i64, String, i64)> = tx
        .prepare("SELECT jail, action, target, ban_commands FROM command_bans_by_position")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .filter_map(|row| readable(row).transpose())
        .collect::<rusqlite::Result<_>>()?;
    for (jail, position, target, ban) in rows {
        let id = match ban {
            0 => positional(position),
            ban => migrated(ban, position),
        };
        tx.execute(
            "INSERT OR REPLACE INTO command_bans
             (jail, action, position, target, failures, bantime, port, protocol, settled,
              commands, ban_commands, unban_argv)
             SELECT jail, ?4, action, target, failures, bantime, port, protocol, settled,
                    commands, ban_commands, unban_argv
             FROM command_bans_by_position WHERE jail = ?1 AND action = ?2 AND target = ?3",
            params![jail, position, target, id],
        )?;
    }
    tx.execute_batch("DROP TABLE command_bans_by_position")?;
    tracing::info!("the command actions' records are keyed by the actions' identity from now");
    Ok(())
}

/// Gives `command_bans.position` its default (-1), which the first release keyed by identity
/// lacked: a release before identities, run on this database (a downgrade), writes no
/// position, and every write it made failed. SQLite cannot change a column's default: the
/// table is made again and its rows copied.
fn default_position(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let default: Option<Option<String>> = tx
        .prepare(
            "SELECT dflt_value FROM pragma_table_info('command_bans') WHERE name = 'position'",
        )?
        .query_row([], |r| r.get(0))
        .optional()?;
    if !matches!(default, Some(None)) {
        return Ok(());
    }
    const COLUMNS: &str = "jail, action, position, target, failures, bantime, port, protocol, \
                           settled, commands, ban_commands, unban_argv";
    tx.execute_batch(&format!(
        "ALTER TABLE command_bans RENAME TO command_bans_without_default;
         {SCHEMA}
         INSERT INTO command_bans ({COLUMNS}) SELECT {COLUMNS} FROM command_bans_without_default;
         DROP TABLE command_bans_without_default;"
    ))
}

/// Notes, for [`rekey_downgraded`], each target a release before identities recorded a
/// command of (a row without a position), with its jail, position (its `action`) and the
/// fingerprints of the program it ran: kept in the database, it fires for that release's writes
/// too, even those it deletes again (its `stop`, an unban).
const DOWNGRADE_WATCH: &str = "
CREATE TABLE IF NOT EXISTS command_bans_downgrade_targets (
    jail         TEXT    NOT NULL,
    position     INTEGER NOT NULL,
    target       TEXT    NOT NULL,
    ban_commands INTEGER NOT NULL,
    commands     INTEGER NOT NULL,
    PRIMARY KEY (jail, position, target, ban_commands, commands)
);
CREATE TRIGGER IF NOT EXISTS command_bans_downgrade_target AFTER INSERT ON command_bans
WHEN NEW.position = -1
BEGIN
    INSERT OR IGNORE INTO command_bans_downgrade_targets
        (jail, position, target, ban_commands, commands)
    VALUES (NEW.jail, CAST(NEW.action AS INTEGER), NEW.target, NEW.ban_commands, NEW.commands);
END;
";

/// Keys by identity the records a release before identities wrote into this database (a
/// downgrade, then this release again): their `action` is the position, and their `position`
/// the default, -1. That release could not read this one's records: it ran `ban` again for
/// every active ban of the action at that position, its own way, and never ran `unban` for a
/// ban that had ended before it started (expired or allowlisted while down, an unsettled
/// unban, an orphan). So only this release's records of a target it recorded a command of
/// ([`DOWNGRADE_WATCH`]), at that position and by the same program (same `ban`, or same `ban`
/// and `unban`), give way to what it left; every other record stays, and its `unban` runs at
/// the start if its ban ended (an extra unban is harmless, a missing one is not). Each of its
/// records is keyed as this release's record of the same `ban` at that position, if one is
/// left, else by its own `ban` and position, as the migration does ([`rekey_by_identity`]), for
/// the action of that `ban` to take at its start.
fn rekey_downgraded(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let exists = |name: &str| {
        tx.prepare("SELECT 1 FROM sqlite_master WHERE name = ?1")?
            .exists([name])
    };
    let any = |table: &str| {
        tx.prepare(&format!("SELECT 1 FROM {table} LIMIT 1"))?
            .exists([])
    };
    // Nothing noted, nothing to do (the common open: no scan of the records). A row without a
    // position is always noted: only a table with the default has a trigger, and a table
    // without the default took no such row.
    let targets_noted =
        exists("command_bans_downgrade_targets")? && any("command_bans_downgrade_targets")?;
    if !targets_noted {
        return Ok(());
    }
    tx.execute_batch(
        "DELETE FROM command_bans WHERE position != -1 AND EXISTS (
             SELECT 1 FROM command_bans_downgrade_targets d
             WHERE d.jail = command_bans.jail AND d.position = command_bans.position
               AND d.target = command_bans.target
               AND (d.commands = command_bans.commands
                    OR (d.ban_commands != 0 AND d.ban_commands = command_bans.ban_commands)));
         DELETE FROM command_bans_downgrade_targets;",
    )?;
    let rows: Vec<(String, String, String, i64)> = tx
        .prepare(
            "SELECT jail, action, target, ban_commands FROM command_bans WHERE position = -1
             ORDER BY jail, action",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .filter_map(|row| readable(row).transpose())
        .collect::<rusqlite::Result<_>>()?;
    for (jail, action, target, ban) in rows {
        let Ok(position) = action.parse::<i64>() else {
            continue;
        };
        let kept: Option<String> = match ban {
            0 => None,
            ban => tx
                .prepare(
                    "SELECT action FROM command_bans
                     WHERE jail = ?1 AND position = ?2 AND ban_commands = ?3 LIMIT 1",
                )?
                .query_row(params![jail, position, ban], |r| r.get(0))
                .optional()?,
        };
        let id = match (kept, ban) {
            (Some(id), _) => id,
            (None, 0) => positional(position),
            (None, ban) => migrated(ban, position),
        };
        tx.execute(
            "UPDATE OR REPLACE command_bans SET action = ?4, position = ?2
             WHERE jail = ?1 AND action = ?3 AND target = ?5 AND position = -1",
            params![jail, position, action, id, target],
        )?;
    }
    Ok(())
}

/// Of the migrated identities (`<ban>@N`, [`migrated`]) of `ban` in a jail, the one the action
/// of that `ban` at `position` among `siblings` (the jail's identities) takes: the one at its
/// position; else the first at a position whose action now has another `ban` (this one moved),
/// or none now. One at the position of another action with the same `ban` is that one's.
fn migrated_for<'a>(
    found: &'a [String],
    ban: &str,
    position: usize,
    siblings: &[String],
) -> Option<&'a String> {
    let at = |id: &String| match ban_of(id) {
        (b, Some(q)) if b == ban => usize::try_from(q).ok(),
        _ => None,
    };
    let mut candidates: Vec<(usize, &String)> =
        found.iter().filter_map(|id| Some((at(id)?, id))).collect();
    candidates.sort();
    candidates
        .iter()
        .find(|(q, _)| *q == position)
        .or_else(|| {
            candidates
                .iter()
                .find(|(q, _)| siblings.get(*q).is_none_or(|s| ban_of(s).0 != ban))
        })
        .map(|(_, id)| *id)
}

impl Records {
    /// Opens the records in the state database at `path` (making their tables if needed).
    pub(crate) fn open(path: &Path) -> Result<Records, RecordError> {
        let error = |reason| RecordError {
            path: path.to_path_buf(),
            reason,
        };
        let db = Connection::open(path).map_err(error)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(error)?;
        // Checkpoints stay with the state writer's checkpointer: no commit here waits for one.
        db.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(error)?;
        db.execute_batch(SCHEMA).map_err(error)?;
        // Serialized (IMMEDIATE): the runner threads open their records at once.
        let tx =
            rusqlite::Transaction::new_unchecked(&db, rusqlite::TransactionBehavior::Immediate)
                .map_err(error)?;
        add_columns(&tx, &ADDED_COLUMNS).map_err(error)?;
        rekey_by_identity(&tx).map_err(error)?;
        default_position(&tx).map_err(error)?;
        rekey_downgraded(&tx).map_err(error)?;
        tx.execute_batch(DOWNGRADE_WATCH).map_err(error)?;
        tx.commit().map_err(error)?;
        Ok(Records {
            path: path.to_path_buf(),
            db,
            ban_commands: 0,
            unban_argv: String::new(),
        })
    }

    /// Says which ban and unban templates the bans recorded from now run with.
    pub(crate) fn templates(&mut self, ban: &[String], unban: &[String]) {
        self.ban_commands = fingerprint(ban, &[]);
        self.unban_argv = serde_json::to_string(unban).unwrap_or_default();
    }

    /// The records of command action `action` of `jail` made by other templates than those
    /// of fingerprint `commands`.
    pub(crate) fn other_commands(
        &self,
        jail: &str,
        action: &str,
        commands: i64,
    ) -> Result<Vec<OtherCommands>, RecordError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT target, ban_commands, unban_argv FROM command_bans
                 WHERE jail = ?1 AND action = ?2 AND commands != ?3",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![jail, action, commands], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let Some((target, ban_commands, unban)) = readable(row).map_err(|e| self.error(e))?
            else {
                continue;
            };
            let Ok(target) = crate::address::parse_target(&target) else {
                continue;
            };
            out.push(OtherCommands {
                target,
                ban_commands,
                unban: serde_json::from_str(&unban).ok(),
            });
        }
        Ok(out)
    }

    /// Makes the record of `target` one of the current templates (fingerprint `commands`):
    /// only the unban template changed, the ban it holds is the current ban's.
    pub(crate) fn adopt(
        &mut self,
        jail: &str,
        action: &str,
        target: IpNetwork,
        commands: i64,
    ) -> Result<(), RecordError> {
        self.db
            .execute(
                "UPDATE command_bans SET commands = ?4, unban_argv = ?5
                 WHERE jail = ?1 AND action = ?2 AND target = ?3",
                params![
                    jail,
                    action,
                    super::element_text(target),
                    commands,
                    self.unban_argv
                ],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Every command record of a jail or command action `configured` does not hold (jail name
    /// to the identities of its command actions, in order), with the unban template it was
    /// banned for (None unknown). A record of another identity at a position whose action has
    /// no record of its own is not one: that action takes it over at its start ([`Records::claim`]:
    /// its `ban` changed, or the record is from before identities).
    pub(crate) fn unconfigured_commands(
        &self,
        configured: &std::collections::HashMap<String, Vec<String>>,
    ) -> Result<Vec<Orphan>, RecordError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT jail, action, position, target, failures, bantime, port, protocol,
                        unban_argv
                 FROM command_bans ORDER BY jail, action, target",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut read = Vec::new();
        for row in rows {
            if let Some(row) = readable(row).map_err(|e| self.error(e))? {
                read.push(row);
            }
        }
        // (jail, identity) pairs that have records.
        let recorded: std::collections::HashSet<&(String, String)> =
            read.iter().map(|row| &row.0).collect();
        let mut out = Vec::new();
        for ((jail, action), position, target, failures, bantime, port, protocol, unban) in
            read.iter().cloned()
        {
            if let Some(ids) = configured.get(&jail) {
                if ids.contains(&action) {
                    continue;
                }
                let unclaimed = |id: &String| !recorded.contains(&(jail.clone(), id.clone()));
                let taker = usize::try_from(position).ok().and_then(|p| ids.get(p));
                if taker.is_some_and(unclaimed) {
                    continue;
                }
                // Migrated records of a `ban` an action of the jail has, which has none of its
                // own yet: it takes them at its start ([`Records::claim`]).
                let (ban, migrated) = ban_of(&action);
                if migrated.is_some() && ids.iter().any(|id| ban_of(id).0 == ban && unclaimed(id)) {
                    continue;
                }
            }
            let Ok(target) = crate::address::parse_target(&target) else {
                continue;
            };
            let record = CommandRecord {
                target,
                failures: failures.clamp(0, u32::MAX as i64) as u32,
                bantime,
                port,
                protocol,
                settled: true,
            };
            out.push(Orphan {
                jail,
                action,
                record,
                unban: serde_json::from_str(&unban).ok(),
            });
        }
        Ok(out)
    }

    /// Makes the records of command action `action` of `jail`, now at `position` among the
    /// jail's command actions (`siblings`: their identities), its own: when it has none, it
    /// takes over the records at its position of an identity no command action of the jail
    /// has (its `ban` changed, or a record from before identities: they are then records of
    /// other templates, [`Records::other_commands`]); then its records say its position, for a
    /// later change of its `ban`. Returns how many it took over.
    pub(crate) fn claim(
        &mut self,
        jail: &str,
        action: &str,
        position: usize,
        siblings: &[String],
    ) -> Result<usize, RecordError> {
        let error = error_at(&self.path);
        let tx = self.db.transaction().map_err(&error)?;
        let own = tx
            .prepare("SELECT 1 FROM command_bans WHERE jail = ?1 AND action = ?2 LIMIT 1")
            .and_then(|mut s| s.exists(params![jail, action]))
            .map_err(&error)?;
        let mut taken = 0;
        // Records migrated from position keys, of this action's `ban` ([`migrated_for`]).
        let ban = ban_of(action).0;
        if !own {
            let found: Vec<String> = tx
                .prepare("SELECT DISTINCT action FROM command_bans WHERE jail = ?1")
                .and_then(|mut s| {
                    s.query_map(params![jail], |r| r.get::<_, String>(0))?
                        .collect()
                })
                .map_err(&error)?;
            if let Some(mine) = migrated_for(&found, ban, position, siblings) {
                taken += tx
                    .execute(
                        "UPDATE OR REPLACE command_bans SET action = ?3
                         WHERE jail = ?1 AND action = ?2",
                        params![jail, mine, action],
                    )
                    .map_err(&error)?;
            }
        }
        if !own && taken == 0 {
            let others: Vec<String> = tx
                .prepare(
                    "SELECT DISTINCT action FROM command_bans WHERE jail = ?1 AND position = ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![jail, position as i64], |r| r.get::<_, String>(0))?
                        .collect()
                })
                .map_err(&error)?;
            // Not a sibling's, nor migrated records of a sibling's `ban` (that one takes them).
            let reserved = |o: &String| {
                let (b, migrated) = ban_of(o);
                migrated.is_some() && siblings.iter().any(|s| ban_of(s).0 == b)
            };
            for other in others
                .iter()
                .filter(|o| !siblings.contains(o) && !reserved(o))
            {
                taken += tx
                    .execute(
                        "UPDATE OR REPLACE command_bans SET action = ?3
                         WHERE jail = ?1 AND action = ?2 AND position = ?4",
                        params![jail, other, action, position as i64],
                    )
                    .map_err(&error)?;
            }
        }
        tx.execute(
            "UPDATE command_bans SET position = ?3 WHERE jail = ?1 AND action = ?2",
            params![jail, action, position as i64],
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok(taken)
    }

    /// Forgets the record of `target`.
    pub(crate) fn forget_command(
        &mut self,
        jail: &str,
        action: &str,
        target: IpNetwork,
    ) -> Result<(), RecordError> {
        self.db
            .execute(
                "DELETE FROM command_bans WHERE jail = ?1 AND action = ?2 AND target = ?3",
                params![jail, action, super::element_text(target)],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    fn error(&self, reason: rusqlite::Error) -> RecordError {
        error_at(&self.path)(reason)
    }

    /// Every record of command action `action` of `jail`.
    pub(crate) fn commands(
        &self,
        jail: &str,
        action: &str,
    ) -> Result<Vec<CommandRecord>, RecordError> {
        self.query_commands(jail, action, None)
    }

    /// The record of `target`, if any.
    pub(crate) fn command(
        &self,
        jail: &str,
        action: &str,
        target: IpNetwork,
    ) -> Result<Option<CommandRecord>, RecordError> {
        Ok(self
            .query_commands(jail, action, Some(target))?
            .into_iter()
            .next())
    }

    /// Whether another command action of `jail` (`ids`: the identities of its command actions
    /// now) with the same `ban` template as `action` holds a record of `target`: the one `ban`
    /// program then holds the target for an action still configured, and `action`'s unban
    /// would lift it too.
    pub(crate) fn held_by_same_ban(
        &self,
        jail: &str,
        action: &str,
        ids: &[String],
        target: IpNetwork,
    ) -> Result<bool, RecordError> {
        let ban = ban_of(action).0;
        for id in ids.iter().filter(|id| *id != action && ban_of(id).0 == ban) {
            if self.command(jail, id, target)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn query_commands(
        &self,
        jail: &str,
        action: &str,
        target: Option<IpNetwork>,
    ) -> Result<Vec<CommandRecord>, RecordError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT target, failures, bantime, port, protocol, settled FROM command_bans
                 WHERE jail = ?1 AND action = ?2 AND (?3 IS NULL OR target = ?3)",
            )
            .map_err(|e| self.error(e))?;
        let wanted = target.map(super::element_text);
        let rows = stmt
            .query_map(params![jail, action, wanted], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let Some((target, failures, bantime, port, protocol, settled)) =
                readable(row).map_err(|e| self.error(e))?
            else {
                continue;
            };
            let Ok(target) = crate::address::parse_target(&target) else {
                continue;
            };
            out.push(CommandRecord {
                target,
                failures: failures.clamp(0, u32::MAX as i64) as u32,
                bantime,
                port,
                protocol,
                settled: settled != 0,
            });
        }
        Ok(out)
    }

    /// Records, in one transaction, commands about to run: a ban with its values, an unban as
    /// unsettled (a record made for an unban of a target never recorded has no values).
    /// `commands` is the fingerprint of the templates they run with ([`fingerprint`]).
    pub(crate) fn begin(
        &mut self,
        jail: &str,
        action: &str,
        position: usize,
        commands: i64,
        marks: &[Mark<'_>],
    ) -> Result<(), RecordError> {
        let error = error_at(&self.path);
        let (ban_commands, unban_argv) = (self.ban_commands, self.unban_argv.clone());
        let tx = self.db.transaction().map_err(&error)?;
        for mark in marks {
            match mark {
                Mark::Ban(r) => tx.execute(
                    "INSERT OR REPLACE INTO command_bans
                     (jail, action, target, failures, bantime, port, protocol, settled, commands,
                      ban_commands, unban_argv, position)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11)",
                    params![
                        jail,
                        action,
                        super::element_text(r.target),
                        r.failures,
                        r.bantime,
                        r.port,
                        r.protocol,
                        commands,
                        ban_commands,
                        unban_argv,
                        position as i64
                    ],
                ),
                Mark::Unban(target) => tx.execute(
                    "INSERT INTO command_bans
                     (jail, action, target, failures, bantime, port, protocol, settled, commands,
                      position)
                     VALUES (?1, ?2, ?3, 0, -1, '', '', 0, ?4, ?5)
                     ON CONFLICT (jail, action, target) DO UPDATE SET settled = 0",
                    params![
                        jail,
                        action,
                        super::element_text(*target),
                        commands,
                        position as i64
                    ],
                ),
            }
            .map_err(&error)?;
        }
        tx.commit().map_err(&error)
    }

    /// Records, in one transaction and in order, commands that succeeded.
    pub(crate) fn settle(
        &mut self,
        jail: &str,
        action: &str,
        done: &[Done],
    ) -> Result<(), RecordError> {
        let error = error_at(&self.path);
        let tx = self.db.transaction().map_err(&error)?;
        for d in done {
            match d {
                Done::Banned(target) => tx.execute(
                    "UPDATE command_bans SET settled = 1 WHERE jail = ?1 AND action = ?2 AND target = ?3",
                    params![jail, action, super::element_text(*target)],
                ),
                Done::Unbanned(target) => tx.execute(
                    "DELETE FROM command_bans WHERE jail = ?1 AND action = ?2 AND target = ?3",
                    params![jail, action, super::element_text(*target)],
                ),
            }
            .map_err(&error)?;
        }
        tx.commit().map_err(&error)
    }

    /// Forgets every record of command action `action` of `jail` (its `stop` lifted them).
    pub(crate) fn forget_commands(&mut self, jail: &str, action: &str) -> Result<(), RecordError> {
        self.db
            .execute(
                "DELETE FROM command_bans WHERE jail = ?1 AND action = ?2",
                params![jail, action],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

impl Records {
    /// Records that `backend` makes the objects of action `name` for `jail` (before it does,
    /// so a crash while it makes them leaves them recorded).
    pub(crate) fn made(
        &mut self,
        backend: &str,
        name: &str,
        jail: &str,
        spec: &str,
    ) -> Result<(), RecordError> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO firewall_objects (backend, name, jail, spec) VALUES (?1, ?2, ?3, ?4)",
                params![backend, name, jail, spec],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Every firewall object recorded.
    pub(crate) fn objects(&self) -> Result<Vec<ObjectRecord>, RecordError> {
        self.object_rows("SELECT backend, name, jail, spec FROM firewall_objects", [])
    }

    /// The [`ObjectRecord`]s a query of `backend, name, jail, spec` gives (unreadable rows
    /// skipped, as everywhere in the records).
    fn object_rows(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ObjectRecord>, RecordError> {
        let mut stmt = self.db.prepare(sql).map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok(ObjectRecord {
                    backend: r.get(0)?,
                    name: r.get(1)?,
                    jail: r.get(2)?,
                    spec: r.get(3)?,
                })
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(row) = readable(row).map_err(|e| self.error(e))? {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The objects recorded for action `name` of `backend`, if any.
    pub(crate) fn object(
        &self,
        backend: &str,
        name: &str,
    ) -> Result<Option<ObjectRecord>, RecordError> {
        Ok(self
            .objects()?
            .into_iter()
            .find(|o| o.backend == backend && o.name == name))
    }

    /// The objects made with earlier settings of action `name` of `backend` whose removal
    /// failed (every backend and name with None), to try again.
    pub(crate) fn stale(&self, of: Option<(&str, &str)>) -> Result<Vec<ObjectRecord>, RecordError> {
        let (backend, name) = of.unzip();
        self.object_rows(
            "SELECT backend, name, jail, spec FROM stale_firewall_objects
             WHERE ?1 IS NULL OR (backend = ?1 AND name = ?2) ORDER BY backend, name, spec",
            params![backend, name],
        )
    }

    /// Records objects made with earlier settings whose removal failed (or waits: the record
    /// opened after the new settings' objects were made): kept until a removal succeeds.
    pub(crate) fn add_stale(&mut self, object: &ObjectRecord) -> Result<(), RecordError> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO stale_firewall_objects (backend, name, jail, spec)
                 VALUES (?1, ?2, ?3, ?4)",
                params![object.backend, object.name, object.jail, object.spec],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Forgets stale objects once removed.
    pub(crate) fn drop_stale(&mut self, object: &ObjectRecord) -> Result<(), RecordError> {
        self.db
            .execute(
                "DELETE FROM stale_firewall_objects WHERE backend = ?1 AND name = ?2 AND spec = ?3",
                params![object.backend, object.name, object.spec],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Forgets the objects of action `name` of `backend` that `jail` made: they were removed
    /// (a record another jail made since, reusing the name, stays).
    pub(crate) fn unmade(
        &mut self,
        backend: &str,
        name: &str,
        jail: &str,
    ) -> Result<(), RecordError> {
        self.db
            .execute(
                "DELETE FROM firewall_objects WHERE backend = ?1 AND name = ?2 AND jail = ?3",
                params![backend, name, jail],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str, failures: u32) -> CommandRecord {
        CommandRecord {
            target: target.parse().unwrap(),
            failures,
            bantime: 600,
            port: "22".into(),
            protocol: "tcp".into(),
            settled: false,
        }
    }

    #[test]
    fn a_command_is_unsettled_until_it_ran_and_an_unban_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut records = Records::open(&path).unwrap();
        let a = record("192.0.2.1/32", 3);
        let b = record("2001:db8::/64", 7);
        records
            .begin("sshd", "a", 0, 7, &[Mark::Ban(&a), Mark::Ban(&b)])
            .unwrap();
        records
            .settle("sshd", "a", &[Done::Banned(a.target)])
            .unwrap();
        let mut seen = Records::open(&path).unwrap().commands("sshd", "a").unwrap();
        seen.sort_by_key(|r| r.target);
        assert_eq!(
            seen,
            [
                CommandRecord {
                    settled: true,
                    ..a.clone()
                },
                b.clone()
            ]
        );
        assert!(records.commands("sshd", "b").unwrap().is_empty());
        // An unban keeps the ban's values while it runs, and forgets them once it ran.
        records
            .begin("sshd", "a", 0, 7, &[Mark::Unban(a.target)])
            .unwrap();
        assert_eq!(
            records.command("sshd", "a", a.target).unwrap(),
            Some(a.clone())
        );
        records
            .settle("sshd", "a", &[Done::Unbanned(a.target)])
            .unwrap();
        assert_eq!(records.command("sshd", "a", a.target).unwrap(), None);
        // Records of other templates say which ones (the templates as told), and are kept
        // until adopted or forgotten.
        assert!(records.other_commands("sshd", "a", 7).unwrap().is_empty());
        let other = records.other_commands("sshd", "a", 8).unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!((other[0].target, other[0].unban.clone()), (b.target, None));
        let t = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        records.templates(&t(&["ban"]), &t(&["unban", "<ip>"]));
        records.begin("sshd", "a", 0, 7, &[Mark::Ban(&a)]).unwrap();
        let other = records.other_commands("sshd", "a", 8).unwrap();
        let a_other = other.iter().find(|o| o.target == a.target).unwrap();
        assert_eq!(a_other.unban, Some(t(&["unban", "<ip>"])));
        assert_eq!(a_other.ban_commands, fingerprint(&t(&["ban"]), &[]));
        records.adopt("sshd", "a", a.target, 8).unwrap();
        records.forget_command("sshd", "a", b.target).unwrap();
        assert!(records.other_commands("sshd", "a", 8).unwrap().is_empty());
        records.begin("sshd", "a", 0, 7, &[Mark::Ban(&a)]).unwrap();
        records.forget_commands("sshd", "a").unwrap();
        assert!(records.commands("sshd", "a").unwrap().is_empty());
        assert_ne!(
            fingerprint(&t(&["a", "b"]), &t(&["c"])),
            fingerprint(&t(&["a"]), &t(&["b", "c"]))
        );
    }

    /// A database from before the templates were recorded gets their columns at open; its
    /// records say the templates are unknown.
    #[test]
    fn an_older_record_gets_the_template_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE command_bans (jail TEXT NOT NULL, action INTEGER NOT NULL,
             target TEXT NOT NULL, failures INTEGER NOT NULL, bantime INTEGER NOT NULL,
             port TEXT NOT NULL, protocol TEXT NOT NULL, settled INTEGER NOT NULL,
             commands INTEGER NOT NULL, PRIMARY KEY (jail, action, target));
             INSERT INTO command_bans VALUES ('sshd', 0, '192.0.2.1', 1, 60, '22', 'tcp', 1, 5);",
        )
        .unwrap();
        drop(db);
        let mut records = Records::open(&path).unwrap();
        // Keyed by position then: the action now at that position takes it over.
        let a = "a".to_string();
        assert_eq!(
            records
                .claim("sshd", &a, 0, std::slice::from_ref(&a))
                .unwrap(),
            1
        );
        let other = records.other_commands("sshd", "a", 6).unwrap();
        assert_eq!(
            other,
            [OtherCommands {
                target: "192.0.2.1/32".parse().unwrap(),
                ban_commands: 0,
                unban: None,
            }]
        );
        // Opened again: nothing to add.
        Records::open(&path).unwrap();
    }

    #[test]
    fn firewall_objects_are_recorded_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::open(&dir.path().join("state.db")).unwrap();
        records.made("iptables", "sshd", "sshd", "{}").unwrap();
        records.made("nftables", "web", "web", "{}").unwrap();
        records
            .made("iptables", "sshd", "ssh2", "{\"a\":1}")
            .unwrap();
        let mut seen = records.objects().unwrap();
        seen.sort_by(|a, b| a.backend.cmp(&b.backend));
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].jail.as_str(), seen[0].spec.as_str()),
            ("ssh2", "{\"a\":1}")
        );
        // Objects of earlier settings whose removal failed are kept apart until removed.
        let old = ObjectRecord {
            backend: "iptables".into(),
            name: "sshd".into(),
            jail: "sshd".into(),
            spec: "{\"old\":1}".into(),
        };
        records.add_stale(&old).unwrap();
        records.add_stale(&old).unwrap();
        assert_eq!(records.stale(None).unwrap(), std::slice::from_ref(&old));
        assert_eq!(
            records.stale(Some(("iptables", "sshd"))).unwrap(),
            std::slice::from_ref(&old)
        );
        assert!(records
            .stale(Some(("nftables", "sshd")))
            .unwrap()
            .is_empty());
        records.drop_stale(&old).unwrap();
        assert!(records.stale(None).unwrap().is_empty());
        // Only the jail that made them last forgets them.
        records.unmade("iptables", "sshd", "sshd").unwrap();
        assert_eq!(records.objects().unwrap().len(), 2);
        records.unmade("iptables", "sshd", "ssh2").unwrap();
        assert_eq!(records.objects().unwrap().len(), 1);
    }
}
