//! Sink side: committed bans and unbans become fleet events. The state writer encodes each one
//! into the SQLite outbox in the ban's own transaction ([`Encoder`]); the publisher task
//! ([`run`]) writes the outbox to Redis in id order (stream entry plus active set, one atomic
//! MULTI per batch) and deletes what Redis acknowledged. Redis away loses nothing: the outbox
//! grows (and is counted) and is replayed in order on reconnect.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::MultiplexedConnection;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::event::{member, FleetEvent, Op};
use super::{Backoff, FleetConfig, Keys, NodeStats, HEARTBEAT_EVERY};
use crate::jail::JailSpec;
use crate::metrics;
use crate::state::{Outbox, StateOp};

/// Most events written to Redis in one MULTI.
const BATCH: usize = 512;

/// Least time between two writes to the stream, and what the gap grows by per event the last
/// write carried. Every write wakes every agent's blocked read (and each agent then sends its
/// next XREAD): bans decided close together go out in one MULTI instead of one each. Bans
/// further apart than the gap are not delayed at all (a ban after a quiet spell goes out at
/// once).
const PUBLISH_GAP: Duration = Duration::from_millis(5);
/// The longest gap between two writes, reached while bans arrive fast (the last write carried
/// two events or more, about 200 bans/s and up): at 1,000 bans/s a write every 10 ms carries
/// ~10 events, so 200 agents are woken 100 times a second each instead of 1,000. It is also
/// the most a ban waits for its write. 20 ms woke agents half as often, but measured against
/// 10 ms in one session (200 agents in one process) it cost more latency than it saved CPU:
/// p99 at 1,000 bans/s 83, 99 -> 65, 41 ms, at 300/s 37, 36 -> 22, 21 ms, one agent 24, 70 ->
/// 13, 13 ms, for +0.1-0.6 us (1,000/s) and +1-3 us (300/s) of CPU per apply.
const PUBLISH_GAP_MAX: Duration = Duration::from_millis(10);

/// The gap before the next write to the stream after one that carried `events`: 5 ms per event,
/// at least [`PUBLISH_GAP`] and at most [`PUBLISH_GAP_MAX`]. Adapts to the load without a clock
/// of its own: a trickle keeps the short gap, a flood the long one, within a few writes. A full
/// write ([`BATCH`] events: an outbox replayed after Redis was away) keeps the short gap, so a
/// backlog drains as fast as before.
fn next_gap(events: usize) -> Duration {
    if events >= BATCH {
        return PUBLISH_GAP;
    }
    let events = u32::try_from(events).unwrap_or(u32::MAX);
    PUBLISH_GAP
        .saturating_mul(events)
        .clamp(PUBLISH_GAP, PUBLISH_GAP_MAX)
}

/// Most expired bans one prune call lifts (short calls: a script blocks Redis while it runs).
const PRUNE_BATCH: u64 = 1000;

/// Lifts expired bans from the active set (KEYS[1]): members scored (expiry, Unix ms) at or
/// before ARGV[1], at most [`PRUNE_BATCH`] a call, with their details (KEYS[2]) and the bans
/// they hid (KEYS[3]; a hidden ban ends no later than the ban that hides it).
pub const PRUNE: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[3], unpack(gone))
end
return #gone
";

/// A jail's ports and protocol, as events carry them.
pub type JailPorts = HashMap<String, (Vec<String>, String)>;

/// The ports and protocol of each jail, taken from its first firewall action (what an agent
/// without the jail should block).
pub fn jail_ports(jails: &[JailSpec]) -> JailPorts {
    jails
        .iter()
        .map(|j| {
            let (ports, protocol) = j
                .actions
                .iter()
                .find_map(|a| match a {
                    crate::action::ActionSpec::Iptables(f)
                    | crate::action::ActionSpec::Nftables(f)
                    | crate::action::ActionSpec::Ipset(f) => {
                        Some((f.ports.clone(), protocol_name(f.protocol)))
                    }
                    crate::action::ActionSpec::Command(c) => {
                        Some((c.ports.clone(), protocol_name(c.protocol)))
                    }
                    crate::action::ActionSpec::Log => None,
                })
                .unwrap_or_else(|| (Vec::new(), "all".into()));
            (j.name.clone(), (ports, protocol))
        })
        .collect()
}

fn protocol_name(p: crate::action::Protocol) -> String {
    match p {
        crate::action::Protocol::Tcp => "tcp",
        crate::action::Protocol::Udp => "udp",
        crate::action::Protocol::All => "all",
    }
    .into()
}

/// Encodes committed state operations as fleet events (runs on the state writer thread).
pub(crate) struct Encoder {
    origin: String,
    ports: Arc<ArcSwap<JailPorts>>,
    wake: Arc<Notify>,
}

impl Encoder {
    /// An encoder for this node; `ports` is swapped on reload, `wake` wakes the publisher.
    pub(crate) fn new(origin: &str, ports: Arc<ArcSwap<JailPorts>>, wake: Arc<Notify>) -> Encoder {
        Encoder {
            origin: origin.to_string(),
            ports,
            wake,
        }
    }

    /// The event for `op`, if it is a ban or unban; `lifts` is the `banned_at` of the ban an
    /// unban lifts.
    pub(crate) fn event(&self, op: &StateOp, lifts: Option<u64>) -> Option<FleetEvent> {
        let mut hosts: Vec<String> = Vec::new();
        let (op, jail, target, banned_at, expires_at, ban_count, failures) = match op {
            StateOp::Ban {
                jail,
                order,
                banned_at,
                ban_count,
                hosts: from,
            } => {
                // Only names an agent would accept: a hostile sender's host field is dropped.
                hosts = from
                    .iter()
                    .filter(|h| super::event::valid_host(h))
                    .take(super::event::MAX_HOSTS)
                    .cloned()
                    .collect();
                let at = super::unix_ms(*banned_at);
                let expires = order
                    .bantime
                    .map(|b| at.saturating_add(b.as_millis().min(u128::from(u64::MAX)) as u64));
                (
                    Op::Ban,
                    jail,
                    order.target,
                    at,
                    expires,
                    *ban_count,
                    order.failures,
                )
            }
            StateOp::Unban { jail, target } => {
                (Op::Unban, jail, *target, super::now_ms(), None, 0, 0)
            }
            StateOp::Routes(_)
            | StateOp::Barrier(_)
            | StateOp::History { .. }
            | StateOp::PruneHistory => return None,
        };
        let ports = self.ports.load();
        let (ports, protocol) = ports
            .get(jail)
            .cloned()
            .unwrap_or_else(|| (Vec::new(), "all".into()));
        Some(FleetEvent {
            op,
            jail: jail.clone(),
            target,
            banned_at,
            expires_at,
            ban_count,
            failures,
            ports,
            protocol,
            origin: self.origin.clone(),
            hosts,
            lifts: (op == Op::Unban).then_some(lifts).flatten(),
        })
    }
}

/// The `banned_at` (Unix ms) of each ban this sink published and has not lifted, kept in the
/// state beside the outbox and written in the ban's own transaction, so that an unban (also
/// after a restart) names the ban it lifts.
const DECIDED_TABLE: &str = "CREATE TABLE IF NOT EXISTS fleet_decided (
    jail      TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    banned_at INTEGER NOT NULL,   -- Unix ms, as the event carries it
    PRIMARY KEY (jail, target))";

/// Records a ban's `banned_at` (ban) or takes it (unban) in `fleet_decided`.
fn decided(tx: &Connection, op: &StateOp, banned_at: u64) -> rusqlite::Result<Option<u64>> {
    tx.prepare_cached(DECIDED_TABLE)?.execute([])?;
    match op {
        StateOp::Ban { jail, order, .. } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO fleet_decided (jail, target, banned_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![jail, order.target.to_string(), banned_at as i64])?;
            Ok(None)
        }
        StateOp::Unban { jail, target } => {
            let at: Option<i64> = tx
                .prepare_cached(
                    "DELETE FROM fleet_decided WHERE jail = ?1 AND target = ?2 RETURNING banned_at",
                )?
                .query_row(params![jail, target.to_string()], |r| r.get(0))
                .optional()?;
            Ok(at.map(|a| a.max(0) as u64))
        }
        StateOp::Routes(_)
        | StateOp::Barrier(_)
        | StateOp::History { .. }
        | StateOp::PruneHistory => Ok(None),
    }
}

impl Outbox for Encoder {
    fn encode(&self, op: &StateOp, tx: &Connection) -> Option<String> {
        let banned_at = match op {
            StateOp::Ban { banned_at, .. } => super::unix_ms(*banned_at),
            StateOp::Unban { .. } => 0,
            StateOp::Routes(_)
            | StateOp::Barrier(_)
            | StateOp::History { .. }
            | StateOp::PruneHistory => return None,
        };
        let lifts = match decided(tx, op, banned_at) {
            Ok(at) => at,
            Err(error) => {
                // The event goes out all the same; an unban then lifts whatever is held.
                metrics::state_errors().increment(1);
                tracing::error!(%error, "fleet: cannot record the ban an unban lifts");
                None
            }
        };
        self.event(op, lifts).map(|e| e.to_json())
    }

    fn committed(&self) {
        self.wake.notify_one();
    }
}

/// A sink's commit path on its own: the state writer with the outbox encoder, and the
/// publisher. What the daemon runs for a sink minus the jails; the fleet benchmark drives it.
pub struct CommitPath {
    ops: tokio::sync::mpsc::Sender<StateOp>,
    writer: std::thread::JoinHandle<()>,
}

impl CommitPath {
    /// Opens (creating) the state at `db_path` and starts the writer and the publisher (on the
    /// current tokio runtime); `ports` are each jail's ports and protocol for its events.
    pub fn start(
        config: &FleetConfig,
        db_path: &std::path::Path,
        ports: JailPorts,
        shutdown: CancellationToken,
    ) -> Result<CommitPath, super::FleetError> {
        let db = crate::state::State::open(db_path)
            .map_err(|reason| super::FleetError::State { reason })?;
        let client = super::client(config)?;
        let wake = Arc::new(Notify::new());
        let encoder = Encoder::new(
            &config.node,
            Arc::new(ArcSwap::from_pointee(ports)),
            wake.clone(),
        );
        let (ops, rx) = tokio::sync::mpsc::channel(crate::state::QUEUE_DEPTH);
        let writer = std::thread::spawn(move || {
            crate::state::writer(
                Some(db),
                rx,
                metrics::state_errors(),
                Some(Box::new(encoder)),
                None,
            )
        });
        let (config, db_path) = (Arc::new(config.clone()), db_path.to_path_buf());
        tokio::task::spawn_blocking(move || {
            run_on_own_thread(config, client, db_path, wake, shutdown)
        });
        Ok(CommitPath { ops, writer })
    }

    /// Commits a ban decided now (then published), as the jail task hands it to the state.
    pub async fn ban(&self, jail: &str, order: crate::action::BanOrder, ban_count: u32) -> bool {
        self.ops
            .send(StateOp::Ban {
                jail: jail.to_string(),
                order,
                banned_at: std::time::SystemTime::now(),
                ban_count,
                hosts: Vec::new(),
            })
            .await
            .is_ok()
    }

    /// Closes the writer's queue and waits for it to drain.
    pub fn finish(self) {
        drop(self.ops);
        let _ = self.writer.join();
    }
}

/// Lifts a ban another sink decided, straight in Redis: an unban event in the stream, the ban
/// out of the active set, the shared window's marker cleared. Returns the deciding node (and
/// that of a ban it hid, back in force), or None when the fleet holds no such ban. (A sink's
/// own bans go through the outbox instead.)
pub(crate) async fn lift_remote(
    config: &FleetConfig,
    client: &redis::Client,
    jail: &str,
    target: ipnetwork::IpNetwork,
) -> redis::RedisResult<Option<RemoteLift>> {
    let mut conn = super::connect(client, Some(super::RESPONSE_TIMEOUT)).await?;
    let keys = Keys::new(&config.prefix);
    let m = member(jail, target);
    let details: Option<String> = redis::cmd("HGET")
        .arg(&keys.details)
        .arg(&m)
        .query_async(&mut conn)
        .await?;
    let Some(banned) = details.and_then(|d| FleetEvent::from_json(&d).ok()) else {
        return Ok(None);
    };
    if banned.expires_at.is_some_and(|e| e <= super::now_ms()) {
        return Ok(None);
    }
    let unban = FleetEvent {
        op: Op::Unban,
        lifts: Some(banned.banned_at),
        banned_at: super::now_ms(),
        expires_at: None,
        ban_count: 0,
        failures: 0,
        origin: config.node.clone(),
        ..banned.clone()
    };
    let row = [(0, unban.to_json())];
    let (_, restored) = publish(&mut conn, &keys, config, &row).await?;
    metrics::fleet_published("unban").increment(1);
    Ok(Some(RemoteLift {
        decided_by: banned.origin,
        back: restored.into_iter().next(),
    }))
}

/// A ban lifted straight in Redis ([`lift_remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteLift {
    /// The node that decided the lifted ban.
    pub decided_by: String,
    /// The node whose ban of the same target, hidden behind the lifted one, is back in force.
    pub back: Option<String>,
}

/// The outbox table, read and trimmed by the publisher through its own connection.
struct OutboxTable {
    db: Connection,
}

impl OutboxTable {
    fn open(path: &std::path::Path) -> rusqlite::Result<OutboxTable> {
        let db = super::open_db(path)?;
        // The state opens first and creates the table; created here too so the publisher
        // never depends on start order.
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS fleet_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL);",
        )?;
        Ok(OutboxTable { db })
    }

    fn oldest(&self, limit: usize) -> rusqlite::Result<Vec<(i64, String)>> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT id, event FROM fleet_outbox ORDER BY id LIMIT ?1")?;
        let rows = stmt.query_map(params![limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    fn remove_through(&self, id: i64) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM fleet_outbox WHERE id <= ?1", params![id])
            .map(drop)
    }

    fn len(&self) -> rusqlite::Result<u64> {
        self.db
            .query_row("SELECT COUNT(*) FROM fleet_outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
    }
}

/// Runs a blocking outbox call off the runtime's workers.
async fn blocking<T: Send + 'static>(
    table: &Arc<Mutex<OutboxTable>>,
    f: impl FnOnce(&OutboxTable) -> rusqlite::Result<T> + Send + 'static,
) -> Option<T> {
    let table = table.clone();
    let result = tokio::task::spawn_blocking(move || match table.lock() {
        Ok(t) => f(&t),
        Err(poisoned) => f(&poisoned.into_inner()),
    })
    .await;
    match result {
        Ok(Ok(v)) => Some(v),
        Ok(Err(error)) => {
            metrics::state_errors().increment(1);
            tracing::error!(%error, "fleet outbox");
            None
        }
        Err(_) => None,
    }
}

/// Writes `events` (validated on the way: an outbox row no agent could read is dropped and
/// counted, not published) in one MULTI: stream entry, then active set and details. Returns
/// the events' operations, and the origin of each ban an unban brought back (one it hid).
async fn publish(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    config: &FleetConfig,
    rows: &[(i64, String)],
) -> redis::RedisResult<(Vec<Op>, Vec<String>)> {
    let events: Vec<FleetEvent> = rows
        .iter()
        .filter_map(|(id, text)| match FleetEvent::from_json(text) {
            Ok(e) => Some(e),
            Err(error) => {
                metrics::fleet_errors("malformed").increment(1);
                tracing::error!(id, %error, "unreadable fleet outbox row dropped");
                None
            }
        })
        .collect();
    // Hashed once per process, not per batch.
    static LIFT_SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(LIFT));
    static PUT_SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(PUT));
    let (lift, put) = (&*LIFT_SCRIPT, &*PUT_SCRIPT);
    let mut pipe = redis::pipe();
    pipe.atomic();
    // Both scripts loaded first inside the transaction, which runs its commands in order: a
    // Redis restarted or flushed since the last batch has no scripts, and an EVALSHA failing
    // inside the MULTI would fail the batch after its stream entries were written. A load
    // costs no round trip of its own here.
    for script in [LIFT, PUT] {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script).ignore();
    }
    let mut ops = Vec::with_capacity(events.len());
    // The ban script call of the bans since the last unban, added before the next unban.
    let mut bans: Option<redis::Cmd> = None;
    // The member of each unban, in the order their script results come back.
    let mut unbans = Vec::new();
    for event in events {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&keys.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(config.stream_maxlen)
            .arg("*");
        for (field, value) in event.to_entry(config.event_format) {
            xadd.arg(field).arg(value);
        }
        pipe.add_command(xadd).ignore();
        let m = member(&event.jail, event.target);
        match event.op {
            Op::Ban => {
                // Of two bans of one target (two sinks), the one that ends later stays, as
                // agents keep it: a reconciling agent gets back the ban it would hold. A run
                // of bans is written by one script call.
                let score = event
                    .expires_at
                    .map_or_else(|| "+inf".to_string(), |e| e.to_string());
                let call = bans.get_or_insert_with(|| {
                    let mut call = redis::cmd("EVALSHA");
                    call.arg(put.get_hash())
                        .arg(3)
                        .arg(&keys.active)
                        .arg(&keys.details)
                        .arg(&keys.hidden);
                    call
                });
                call.arg(&m).arg(score).arg(event.to_json());
            }
            Op::Unban => {
                // After the bans before it, in order.
                if let Some(call) = bans.take() {
                    pipe.add_command(call).ignore();
                }
                // The event goes out whatever the script finds (agents holding the old ban
                // lift it); the script lifts the active-set entry only if it is not newer than
                // the ban this unban names, inside the transaction, so a newer ban written by
                // another sink (or earlier in this batch) is never removed.
                let [_, decided, _] = keys.window(&event.jail, event.target);
                let lifts = event.lifts.map_or_else(String::new, |at| at.to_string());
                pipe.cmd("EVALSHA")
                    .arg(lift.get_hash())
                    .arg(5)
                    .arg(&keys.active)
                    .arg(&keys.details)
                    .arg(decided)
                    .arg(&keys.hidden)
                    .arg(&keys.stream)
                    .arg(&m)
                    .arg(lifts)
                    .arg(&event.origin)
                    .arg(config.stream_maxlen);
                unbans.push(m);
            }
        }
        ops.push(event.op);
    }
    if let Some(call) = bans.take() {
        pipe.add_command(call).ignore();
    }
    if ops.is_empty() {
        return Ok((ops, Vec::new()));
    }
    let lifted: Vec<redis::Value> = pipe.query_async(conn).await?;
    let mut restored = Vec::new();
    for (m, lifted) in unbans.iter().zip(lifted) {
        // 0 (another ban stays), 1 (lifted), or the origin of the ban that came back.
        match lifted {
            redis::Value::Int(0) => {
                tracing::info!(member = %m, "fleet: unban of another ban than the one in the active set; it stays")
            }
            redis::Value::Int(_) => {}
            other => {
                let origin = redis::from_redis_value::<String>(other).unwrap_or_default();
                tracing::info!(member = %m, %origin, "fleet: lifted; the ban it hid (by {origin}) is back in force");
                restored.push(origin);
            }
        }
    }
    Ok((ops, restored))
}

/// Lua shared by the ban and lift scripts: a details text decoded, its end (`expires_at`, Unix
/// ms; an empty one is permanent), and the bans kept hidden behind a longer one of their member
/// in the hash `key` (a JSON list of details texts per member, at most 16, the ones that end
/// last), so an early lift of the longer ban brings the next back. A macro, so that each script
/// stays one `&str` constant.
macro_rules! hidden_lua {
    () => {
        r"
local function decoded(text)
  if type(text) ~= 'string' then return nil end
  local ok, ban = pcall(cjson.decode, text)
  if ok and type(ban) == 'table' then return ban end
  return nil
end
local function ends_of(ban)
  local e = ban and ban['expires_at']
  if e == nil or e == '' or e == cjson.null then return math.huge end
  return tonumber(e)
end
local function same(a, b)
  return a and b and tostring(a['banned_at']) == tostring(b['banned_at'])
    and a['origin'] == b['origin']
end
local function hidden_of(key, member)
  local list = decoded(redis.call('HGET', key, member))
  if not list then return {} end
  local texts = {}
  for _, t in ipairs(list) do
    if type(t) == 'string' then texts[#texts + 1] = t end
  end
  return texts
end
local function store_hidden(key, member, list)
  if #list == 0 then
    redis.call('HDEL', key, member)
  else
    redis.call('HSET', key, member, cjson.encode(list))
  end
end
local function hide(key, member, text)
  local ban = decoded(text)
  if not ban or not ends_of(ban) then return end
  local kept = {}
  for _, t in ipairs(hidden_of(key, member)) do
    if not same(decoded(t), ban) then kept[#kept + 1] = t end
  end
  kept[#kept + 1] = text
  if #kept > 16 then
    table.sort(kept, function(x, y)
      return (ends_of(decoded(x)) or -1) > (ends_of(decoded(y)) or -1)
    end)
    for i = #kept, 17, -1 do kept[i] = nil end
  end
  store_hidden(key, member, kept)
end
"
    };
}

/// Writes bans to the active set (KEYS[1]) and details (KEYS[2]), in order: ARGV holds one
/// (member, end, details) triple per ban, the end scoring the member (`+inf` for a permanent
/// ban). Of two bans of one target the one that ends later is kept in the set, as agents keep
/// it; the other is kept hidden behind it (KEYS[3], see [`LIFT`]) unless it is the same ban
/// written again. Run inside the publisher's MULTI, once per run of bans. Returns how many
/// were written to the set.
pub const PUT: &str = concat!(
    hidden_lua!(),
    r"
local function ends(score)
  if score == '+inf' or score == 'inf' then return math.huge end
  return tonumber(score)
end
local written = 0
for i = 1, #ARGV - 2, 3 do
  local member, score, text = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local held = redis.call('ZSCORE', KEYS[1], member)
  local h, n = held and ends(held), ends(score)
  if h and n and h > n then
    hide(KEYS[3], member, text)
  else
    local old = held and redis.call('HGET', KEYS[2], member)
    if old and not same(decoded(old), decoded(text)) then
      hide(KEYS[3], member, old)
    end
    redis.call('ZADD', KEYS[1], score, member)
    redis.call('HSET', KEYS[2], member, text)
    written = written + 1
  end
end
return written
"
);

/// Lifts one unban's entry from the active set (KEYS[1]) and details (KEYS[2]) and clears its
/// shared-window decision (KEYS[3]), unless the details hold another ban than the one the
/// unban names (ARGV[2], its `banned_at` in Unix ms): a newer one, or an older one kept because
/// it ends later (`PUT`). An unban that names none (ARGV[2] empty: a ban from before fleet mode
/// or the field) lifts only a ban of its own origin (ARGV[3]; details without one are lifted).
/// Of the bans the lifted one hid (KEYS[4], kept by [`PUT`]), the one that ends last and has
/// not ended comes back, the others staying hidden behind it: into the set, into the stream
/// (KEYS[5], capped at ARGV[4]) as its ban again, marked `again`, so every agent applies it,
/// and its shared-window decision holds again for as long as it runs. An unban of a hidden ban
/// forgets it. Run inside the publisher's MULTI, so the check and the removal are one atomic
/// step: no ban another sink writes in between can be lifted by mistake. Returns 1 when
/// lifted, the origin of the ban that came back when one did, 0 when another ban stays.
pub const LIFT: &str = concat!(
    hidden_lua!(),
    r"
local function named(ban)
  if not ban then return false end
  if ARGV[2] ~= '' then
    local at = tonumber(ban['banned_at'])
    return at == nil or at == tonumber(ARGV[2])
  end
  return type(ban['origin']) ~= 'string' or not ARGV[3] or ban['origin'] == ARGV[3]
end
local function forget_named()
  local kept, changed = {}, false
  for _, t in ipairs(hidden_of(KEYS[4], ARGV[1])) do
    if named(decoded(t)) then changed = true else kept[#kept + 1] = t end
  end
  if changed then store_hidden(KEYS[4], ARGV[1], kept) end
end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  local ban = decoded(held)
  if ban and not named(ban) then
    forget_named()
    return 0
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local best, best_end, rest = nil, nil, {}
for _, text in ipairs(hidden_of(KEYS[4], ARGV[1])) do
  local ban = decoded(text)
  local e = ends_of(ban)
  if ban and e and e > now and not named(ban) then
    if best == nil or e > best_end then
      if best then rest[#rest + 1] = best end
      best, best_end = text, e
    else
      rest[#rest + 1] = text
    end
  end
end
store_hidden(KEYS[4], ARGV[1], rest)
if best == nil then
  redis.call('DEL', KEYS[3])
  return 1
end
local ban = decoded(best)
local score = '+inf'
if best_end ~= math.huge then score = ban['expires_at'] end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], best)
if best_end == math.huge then
  redis.call('SET', KEYS[3], now)
else
  redis.call('SET', KEYS[3], now, 'PX', best_end - now)
end
local fields = {}
for k, v in pairs(ban) do
  if type(v) == 'string' then
    fields[#fields + 1] = k
    fields[#fields + 1] = v
  end
end
fields[#fields + 1] = 'again'
fields[#fields + 1] = '1'
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
local origin = ban['origin']
if type(origin) ~= 'string' or origin == '' then origin = '?' end
return origin
"
);

/// [`run`] on the calling thread, in a runtime of its own (call it from a thread of its own,
/// e.g. `spawn_blocking`). The publisher's cycle is several waits (the outbox read, the Redis
/// round trip, the trim); on the daemon's shared runtime each of them queues behind every task
/// made ready meanwhile (listeners and jails at an attack's peak, the follower on a `both`
/// node), which stretched the time from commit to stream several-fold exactly when bans come
/// fast. On its own thread the publisher is woken by the kernel like the state writer is.
pub fn run_on_own_thread(
    config: Arc<FleetConfig>,
    client: redis::Client,
    db_path: PathBuf,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(config, client, db_path, wake, shutdown)),
        Err(error) => {
            // Only when the kernel refuses an epoll or event descriptor: bans stay in the outbox.
            tracing::error!(%error, "fleet: cannot start the publisher's runtime; bans are not published");
        }
    }
}

/// The publisher: connects, drains the outbox in order, writes heartbeats and prunes expired
/// bans from the active set, until `shutdown`.
pub async fn run(
    config: Arc<FleetConfig>,
    client: redis::Client,
    db_path: PathBuf,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let table = match tokio::task::spawn_blocking(move || OutboxTable::open(&db_path)).await {
        Ok(Ok(t)) => Arc::new(Mutex::new(t)),
        Ok(Err(error)) => {
            metrics::state_errors().increment(1);
            tracing::error!(%error, "cannot open the fleet outbox; bans are not published");
            return;
        }
        Err(_) => return,
    };
    let keys = Keys::new(&config.prefix);
    let prune = redis::Script::new(PRUNE);
    let mut backoff = Backoff::default();
    let mut stats = NodeStats::default();
    let mut first = true;
    'connect: while !shutdown.is_cancelled() {
        // Every reconnect waits out the back-off first, whatever failed (connect, publish,
        // heartbeat or prune): a Redis that accepts connections and then fails is not hammered.
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.wait()) => {}
            }
        }
        if let Some(n) = blocking(&table, OutboxTable::len).await {
            stats.outbox = n;
            OUTBOX_LEN.store(n, std::sync::atomic::Ordering::Relaxed);
            metrics::fleet_outbox().set(n as f64);
        }
        let mut conn = match super::connect(&client, Some(super::RESPONSE_TIMEOUT)).await {
            Ok(c) => c,
            Err(error) => {
                metrics::fleet_connected("publisher").set(0.0);
                metrics::fleet_errors("redis").increment(1);
                tracing::debug!(%error, "fleet: Redis unreachable");
                continue 'connect;
            }
        };
        metrics::fleet_connected("publisher").set(1.0);
        tracing::info!(redis = %config.redis_shown(), outbox = stats.outbox, "fleet: connected, publishing");
        // Heartbeat and prune run on their own clock, between batches too: a long outbox
        // replay neither silences the heartbeat nor leaves expired bans in the active set.
        let mut chores_at = tokio::time::Instant::now();
        // When the stream was last written, and the gap to keep after it.
        let mut published_at: Option<(tokio::time::Instant, Duration)> = None;
        loop {
            if tokio::time::Instant::now() >= chores_at {
                chores_at = tokio::time::Instant::now() + HEARTBEAT_EVERY;
                if let Err(error) = chores(&mut conn, &keys, &config, &stats, &prune).await {
                    lost(&error);
                    continue 'connect;
                }
                backoff.reset();
            }
            if let Some(next) = published_at.map(|(at, gap)| at + gap) {
                if next > tokio::time::Instant::now() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep_until(next) => {}
                    }
                }
            }
            let Some(rows) = blocking(&table, |t| t.oldest(BATCH)).await else {
                // The outbox could not be read (counted); try again in a second, unless the
                // daemon stops: this task runs on a thread of its own, which the runtime waits
                // for, so every wait here must end on shutdown.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            if let Some(&(last, _)) = rows.last() {
                match publish(&mut conn, &keys, &config, &rows).await {
                    Ok((ops, _)) => {
                        // Published: the connection works, back-off starts small again.
                        published_at = Some((tokio::time::Instant::now(), next_gap(ops.len())));
                        backoff.reset();
                        for op in ops {
                            metrics::fleet_published(op.as_str()).increment(1);
                        }
                        blocking(&table, move |t| t.remove_through(last)).await;
                        if let Some(n) = blocking(&table, OutboxTable::len).await {
                            stats.outbox = n;
                            OUTBOX_LEN.store(n, std::sync::atomic::Ordering::Relaxed);
                            metrics::fleet_outbox().set(n as f64);
                        }
                        continue;
                    }
                    Err(error) => {
                        lost(&error);
                        continue 'connect;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(chores_at) => {}
            }
        }
    }
}

/// The outbox length, for the follower's heartbeat on a `both` node: one node writes one
/// heartbeat (the follower's, with lag and bans applied, and this outbox), not two that
/// overwrite each other every 2 s.
pub(crate) static OUTBOX_LEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The heartbeat (a `both` node's follower writes it instead), then expired bans pruned from
/// the active set until none is left (each script call lifts at most [`PRUNE_BATCH`]).
async fn chores(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    config: &FleetConfig,
    stats: &NodeStats,
    prune: &redis::Script,
) -> redis::RedisResult<()> {
    if config.role != super::Role::Both {
        super::beat(conn, keys, config, stats).await?;
    }
    let now = super::now_ms();
    loop {
        let pruned: u64 = prune
            .key(&keys.active)
            .key(&keys.details)
            .key(&keys.hidden)
            .arg(now)
            .invoke_async(conn)
            .await?;
        if pruned < PRUNE_BATCH {
            return Ok(());
        }
    }
}

/// Logs and counts a lost connection.
fn lost(error: &redis::RedisError) {
    metrics::fleet_connected("publisher").set(0.0);
    metrics::fleet_errors("redis").increment(1);
    tracing::warn!(%error, "fleet: Redis connection lost; events wait in the outbox");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_gap_grows_with_the_events_per_write_and_stays_bounded() {
        assert_eq!(next_gap(0), PUBLISH_GAP);
        assert_eq!(next_gap(1), PUBLISH_GAP);
        assert_eq!(next_gap(2), PUBLISH_GAP_MAX);
        assert_eq!(next_gap(3), PUBLISH_GAP_MAX);
        assert_eq!(PUBLISH_GAP_MAX, Duration::from_millis(10));
        assert_eq!(next_gap(BATCH - 1), PUBLISH_GAP_MAX);
        // A backlog drains at the short gap.
        assert_eq!(next_gap(BATCH), PUBLISH_GAP);
    }
}
