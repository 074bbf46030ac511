//! Shared windows (sinks with `shared_windows = true`): each failure is counted in Redis by one
//! atomic script call, on Redis's clock, so several sinks that each see part of an attacker's
//! attempts count together, and the one call that reaches maxretry decides the ban: a
//! `decided` marker makes every other sink's call a no-op, so the ban is decided exactly once.
//! The marker is set for at most [`FIRST_HOLD`], then settled to the ban the jail applied (its
//! remaining length, or gone when none was committed). The fleet-wide ban count feeds `bantime_increment`. Failures
//! are batched from the queue, up to 64 per script call and every call of a batch in one
//! pipeline (one round trip). While Redis is away, failures go to the jail task's own windows
//! (local fallback).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnetwork::IpNetwork;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Backoff, FleetConfig, Keys};
use crate::jail::allow::IgnoreTable;
use crate::jail::set::{bound_unsettled, Command, JailTask, MarkerHold, Settled, SharedFailure};
use crate::jail::Failure;
use crate::jail::JailSettings;
use crate::metrics;

/// Most failures counted in one pipeline.
pub const BATCH: usize = 2048;
/// How long a fleet-wide ban count is remembered after the last ban.
const COUNT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Counts failures, each in one atomic step on Redis's clock. For failure i (from 0),
/// KEYS[4i+1..4i+4] are its window (list of failure times, ms), decided marker, ban count and
/// spray set (the targets that failed as its user, scored by time); ARGV[9i+1..9i+9] its
/// findtime ms, maxretry, failures the message stands for, hold ms (0: until lifted), count
/// ttl ms, what it is (1 a failure, 2 a success, which forgives the window unless a ban was
/// decided or a success forgave it within findtime, marked by the key `WINDOW:forgiven`), spray maxaddresses (0: no spray counting), spray findtime ms and its target as
/// text (the spray set's member; its window keys end with it). Returns, per failure, {failures
/// in window, 1 if this failure decided the ban, ban count, the spray's targets this failure
/// decided when it completed one as {target, fleet-wide ban count} pairs, else empty}. Several failures per call amortise the call's
/// cost; a script runs atomically, so each failure still sees the ones before it, from any
/// sink, a spray is completed (and its set deleted) by exactly one call, and the `decided`
/// marker it sets for each target keeps a ban by maxretry and a ban by spray from both
/// happening. The spray's targets are other windows' keys, built in the script from this
/// failure's: Redis checks them against the ACL like declared keys, and fleet mode does not
/// run on Redis Cluster, where a script may only touch declared keys.
pub const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 0, #KEYS / 4 - 1 do
  local win, decided, count, spray = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local a = 9 * i
  local findtime = tonumber(ARGV[a + 1])
  local maxretry = tonumber(ARGV[a + 2])
  local n = math.min(tonumber(ARGV[a + 3]), maxretry)
  local hold = tonumber(ARGV[a + 4])
  local op = tonumber(ARGV[a + 6])
  local spray_max = tonumber(ARGV[a + 7])
  local sprayed = {}
  if op == 2 then
    -- Once per findtime (the marker's lifetime), so that a login anyone can get cannot wipe
    -- an attack's count again and again; never once the ban is decided.
    -- A success with no failures to forgive keeps the forgiveness for when there are.
    if redis.call('EXISTS', decided) == 0 and redis.call('EXISTS', win) == 1
      and redis.call('SET', win .. ':forgiven', now, 'NX', 'PX', findtime) then
      redis.call('DEL', win)
    end
    out[i + 1] = {0, 0, 0, sprayed, now}
  else
    local counted = {0, 0, 0}
    if redis.call('EXISTS', decided) == 0 then
      for _ = 1, n do redis.call('RPUSH', win, now) end
      local len = redis.call('LLEN', win)
      if len > maxretry then
        redis.call('LTRIM', win, -maxretry, -1)
        len = maxretry
      end
      local oldest = tonumber(redis.call('LINDEX', win, 0))
      if len >= maxretry and now - oldest < findtime then
        redis.call('DEL', win)
        if hold > 0 then
          redis.call('SET', decided, now, 'PX', hold)
        else
          redis.call('SET', decided, now)
        end
        local c = redis.call('INCR', count)
        redis.call('PEXPIRE', count, ARGV[a + 5])
        counted = {len, 1, c}
      else
        redis.call('PEXPIRE', win, findtime)
        counted = {len, 0, 0}
      end
    end
    if spray_max > 0 then
      local target = ARGV[a + 9]
      local spray_find = tonumber(ARGV[a + 8])
      redis.call('ZADD', spray, now, target)
      redis.call('ZREMRANGEBYSCORE', spray, '-inf', now - spray_find)
      if redis.call('ZCARD', spray) >= spray_max then
        -- Members are window targets; their decided and window keys are this failure's with
        -- the target swapped. A member decided already (by maxretry, this failure's included,
        -- or by another spray) was banned once and is not returned; every other is decided
        -- here, so each target is banned exactly once.
        local decided_of = string.sub(decided, 1, #decided - #target)
        local win_of = string.sub(win, 1, #win - #target)
        local count_of = string.sub(count, 1, #count - #target)
        for _, m in ipairs(redis.call('ZRANGE', spray, 0, -1)) do
          if not string.find(m, '/', 1, true) then
            -- A bare address, added by a sink before targets were members (rolling
            -- upgrade): its window's key is not known here, so it is returned undecided,
            -- with no fleet-wide count (0: the sink counts it).
            sprayed[#sprayed + 1] = {m, 0}
          else
            local set
            if hold > 0 then
              set = redis.call('SET', decided_of .. m, now, 'NX', 'PX', hold)
            else
              set = redis.call('SET', decided_of .. m, now, 'NX')
            end
            if set then
              redis.call('DEL', win_of .. m)
              -- Counted fleet-wide like a ban by maxretry, so bantime_increment escalates
              -- a sprayer banned before on any sink.
              local c = redis.call('INCR', count_of .. m)
              redis.call('PEXPIRE', count_of .. m, ARGV[a + 5])
              sprayed[#sprayed + 1] = {m, c}
            end
          end
        end
        redis.call('DEL', spray)
      else
        redis.call('PEXPIRE', spray, spray_find)
      end
    end
    out[i + 1] = {counted[1], counted[2], counted[3], sprayed, now}
  end
end
return out
";

/// Failures per script call.
const PER_CALL: usize = 64;

/// The settings of each jail, swapped on reload.
pub type SharedSettings = Arc<ArcSwap<HashMap<String, JailSettings>>>;

/// What a failure of `ip` counts against under `settings` (the address, or its prefix), as
/// the jail's own `Jail::key_of`: a prefix holding an address of `allowlist` (the jail's whole
/// allowlist, run-time entries included) counts its other addresses one by one.
pub fn key_of(settings: &JailSettings, allowlist: &IgnoreTable, ip: IpAddr) -> IpNetwork {
    crate::address::counting_key(ip, settings.ipv4_prefix, settings.ipv6_prefix, |key| {
        allowlist.overlapping(key).is_some()
    })
}

/// The longest a `decided` marker holds before the deciding sink settles it. The settle comes
/// milliseconds after the decision and sets the marker to the applied ban's length; should it
/// never come (the deciding sink stopped before it applied the ban, or Redis stayed away
/// until the marker ended), the target can be decided again after this long, instead of no
/// sink banning it for the longest ban the jail may give (for ever with a permanent bantime).
pub const FIRST_HOLD: Duration = Duration::from_secs(300);

/// How long the `decided` marker holds until the jail settles it: the longest ban this jail
/// may give, at most [`FIRST_HOLD`].
fn hold_ms(settings: &JailSettings) -> u64 {
    let longest = if settings.increment.enabled {
        Some(settings.increment.maxtime)
    } else {
        settings.bantime
    };
    longest
        .map_or(FIRST_HOLD, |d| d.min(FIRST_HOLD))
        .as_millis()
        .clamp(1, u128::from(u64::MAX / 2)) as u64
}

/// What the script answers for one failure: failures in the window, 1 if it decided the ban,
/// the fleet-wide ban count, the spray it completed (addresses as text), and Redis's time of
/// the call (the value of every `decided` marker it set).
type Counted = (i64, i64, i64, Vec<(String, i64)>, i64);

/// What the script does with a failure (ARGV "what it is").
const OP_FAILURE: u8 = 1;
/// A success: forgives the shared window unless a ban was decided or a success forgave it
/// within findtime.
const OP_FORGIVE: u8 = 2;

/// The spray settings and user name a failure is counted under as a spray, when its jail counts
/// spraying and the failure names a user (a success never sprays: the script forgives it
/// without reading the spray arguments).
fn spray_of<'a>(
    failure: &'a Failure,
    settings: &'a JailSettings,
) -> Option<(&'a crate::jail::spray::SpraySettings, &'a str)> {
    if failure.success {
        return None;
    }
    match (&settings.detection.spray, failure.user.as_deref()) {
        (Some(spray), Some(user)) if !user.is_empty() => Some((spray, user)),
        _ => None,
    }
}

/// Counts a batch in Redis: one script call per [`PER_CALL`] failures, every call of the
/// batch in one pipeline (one round trip). A failure not counted as a spray passes the
/// window key in the spray key's place and no member, which the script never reads.
async fn count(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    sha: &str,
    batch: &[(Failure, IpNetwork, &JailSettings)],
) -> redis::RedisResult<Vec<Counted>> {
    let mut pipe = redis::pipe();
    for chunk in batch.chunks(PER_CALL) {
        let call = pipe.cmd("EVALSHA").arg(sha).arg(chunk.len() * 4);
        for (failure, key, settings) in chunk {
            let [win, decided, count] = keys.window(&failure.jail, *key);
            call.arg(&win).arg(decided).arg(count);
            match spray_of(failure, settings) {
                Some((_, user)) => call.arg(keys.spray(&failure.jail, user)),
                None => call.arg(&win),
            };
        }
        for (failure, key, settings) in chunk {
            call.arg(settings.findtime.as_millis() as u64)
                .arg(settings.maxretry)
                .arg(failure.count.max(1))
                .arg(hold_ms(settings))
                .arg(COUNT_TTL.as_millis() as u64)
                .arg(if failure.success {
                    OP_FORGIVE
                } else {
                    OP_FAILURE
                });
            match spray_of(failure, settings) {
                Some((spray, _)) => call
                    .arg(spray.maxaddresses)
                    .arg(spray.findtime.as_millis().max(1) as u64)
                    .arg(key.to_string()),
                None => call.arg(0).arg(0).arg(""),
            };
        }
    }
    let replies: Vec<Vec<Counted>> = pipe.query_async(conn).await?;
    Ok(replies.into_iter().flatten().collect())
}

/// A connection with both scripts loaded, or None (counted; the caller backs off).
async fn connect_scripts(
    client: &redis::Client,
    script: &redis::Script,
    falling_back: &mut bool,
) -> Option<MultiplexedConnection> {
    let mut c = match super::connect(client, Some(super::RESPONSE_TIMEOUT)).await {
        Ok(c) => c,
        Err(_) => {
            metrics::fleet_errors("redis").increment(1);
            return None;
        }
    };
    let loaded = async {
        SETTLE_SCRIPT.load_async(&mut c).await?;
        script.load_async(&mut c).await
    }
    .await;
    match loaded {
        Ok(_) => {
            metrics::fleet_connected("windows").set(1.0);
            if std::mem::take(falling_back) {
                tracing::info!("fleet: shared windows back in Redis");
            }
            Some(c)
        }
        Err(error) => {
            metrics::fleet_errors("redis").increment(1);
            tracing::warn!(%error, "fleet: cannot load the shared-window script");
            None
        }
    }
}

/// Decided markers not settled yet (Redis was away or refused), tried again until Redis takes
/// them (the script is safe to run twice), so a lost call never leaves the first hold.
#[derive(Default)]
struct Unsettled {
    markers: Vec<Settled>,
    /// Not tried again before then.
    due: Option<Instant>,
    /// Their own back-off, which counting does not reset.
    backoff: Backoff,
}

impl Unsettled {
    /// Adds markers the jail task settled (bounded: the oldest go first).
    fn add(&mut self, settled: Vec<Settled>) {
        self.markers.extend(settled);
        bound_unsettled(&mut self.markers);
    }

    /// Whether a try is due now.
    fn due(&self) -> bool {
        self.due.is_none_or(|at| Instant::now() >= at)
    }

    /// Settles the markers if connected, keeping only what Redis did not take for a later try;
    /// a lost connection, or one whose settle script Redis lost, is dropped to be made again
    /// (scripts loaded).
    async fn try_now(&mut self, conn: &mut Option<MultiplexedConnection>, keys: &Keys) {
        let Some(c) = conn.as_mut() else {
            return;
        };
        match settle(c, keys, &mut self.markers).await {
            Ok(()) => {
                self.backoff.reset();
                self.due = None;
            }
            Err(error) => {
                metrics::fleet_errors("redis").increment(1);
                tracing::warn!(%error, markers = self.markers.len(), "fleet: cannot settle decided markers now; tried again");
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_timeout()
                    || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                {
                    metrics::fleet_connected("windows").set(0.0);
                    *conn = None;
                }
                self.due = Some(Instant::now() + self.backoff.wait());
            }
        }
    }
}

/// Batches of settled markers the jail task may have sent ahead of the windows task.
const SETTLE_QUEUE: usize = 256;

/// Sets each decided marker's hold to what the jail applied (one pipeline): gone when no ban
/// was committed, else the ban's remaining length, so a withheld or refused decision, or an
/// increment's ban shorter than maxtime, does not keep the address undecidable for the
/// longest ban the jail may give. A marker already gone (the ban lifted) stays gone. Keeps in
/// `settled` only those Redis refused, and returns the first refusal.
async fn settle(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    settled: &mut Vec<Settled>,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for s in settled.iter() {
        let [_, decided, count] = keys.window(&s.jail, s.key);
        let (op, ms) = match s.hold {
            MarkerHold::Clear => (0, 0),
            MarkerHold::Until(end) => (
                1,
                end.saturating_duration_since(tokio::time::Instant::now())
                    .as_millis()
                    .clamp(1, u128::from(u64::MAX / 2)) as u64,
            ),
            MarkerHold::Forever => (2, 0),
        };
        pipe.cmd("EVALSHA")
            .arg(SETTLE_SCRIPT.get_hash())
            .arg(2)
            .arg(decided)
            .arg(count)
            .arg(s.marker)
            .arg(op)
            .arg(ms);
    }
    let results: Vec<redis::RedisResult<i64>> = pipe.query_async(conn).await?;
    let mut refused = None;
    let mut answers = results.into_iter();
    settled.retain(|_| match answers.next() {
        Some(Err(error)) => {
            refused.get_or_insert(error);
            true
        }
        Some(Ok(_)) => false,
        // Redis answered fewer than asked: kept, tried again.
        None => true,
    });
    refused.map_or(Ok(()), Err)
}

/// [`SETTLE`], hashed once.
static SETTLE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SETTLE));

/// Settles one decided marker (KEYS[1]) if it is still the one the decision set (its value
/// ARGV[1], Redis's time of the decision; a marker an unban lifted and a later decision set
/// again is left alone): ARGV[2] 0 deletes it and takes the decision back from the fleet-wide
/// ban count (KEYS[2]), so a withheld or refused decision does not escalate the next ban; 1
/// holds it ARGV[3] ms; 2 holds it for ever. Returns 1 when settled. The count is taken back
/// before the marker goes, so a call refused half-way (an ACL without DECR) changes nothing and
/// is safe to run again.
pub const SETTLE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  local c = tonumber(redis.call('GET', KEYS[2]))
  if c and c > 0 then
    redis.call('DECR', KEYS[2])
  end
  redis.call('DEL', KEYS[1])
elseif ARGV[2] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
";

/// The addresses of a spray as the script returned them (window targets: an address, or the
/// network it counts against), each with its fleet-wide ban count (None: the sink counts it);
/// anything else is counted and skipped.
fn sprayed(members: Vec<(String, i64)>) -> Vec<(IpAddr, Option<u32>)> {
    members
        .into_iter()
        .filter_map(|(m, count)| match m.parse::<IpNetwork>() {
            Ok(target) => Some((
                target.ip(),
                (count > 0).then(|| count.min(i64::from(u32::MAX)) as u32),
            )),
            Err(_) => {
                metrics::fleet_errors("malformed").increment(1);
                tracing::warn!(member = %m, "fleet: a shared spray set held something that is not an address; skipped");
                None
            }
        })
        .collect()
}

/// The shared count on its own: the script and the pipelined calls [`run`] uses, for one
/// batch at a time. The fleet benchmark drives it.
pub struct SharedCounter {
    conn: MultiplexedConnection,
    keys: Keys,
    script: redis::Script,
}

impl SharedCounter {
    /// Connects and loads the script.
    pub async fn connect(config: &FleetConfig) -> Result<SharedCounter, super::FleetError> {
        let client = super::client(config)?;
        let url = config.redis_shown();
        let script = redis::Script::new(SCRIPT);
        let mut conn = super::connect(&client, Some(super::RESPONSE_TIMEOUT))
            .await
            .map_err(|reason| super::FleetError::Unreachable {
                url: url.clone(),
                reason,
            })?;
        script
            .load_async(&mut conn)
            .await
            .map_err(|reason| super::FleetError::Refused { url, reason })?;
        Ok(SharedCounter {
            conn,
            keys: Keys::new(&config.prefix),
            script,
        })
    }

    /// Counts one failure of each `(jail, ip)` under `settings`; per failure, Some((failures,
    /// fleet-wide ban count)) when it decided the ban.
    pub async fn count(
        &mut self,
        failures: &[(Arc<str>, IpAddr)],
        settings: &JailSettings,
    ) -> redis::RedisResult<Vec<Option<(u32, u32)>>> {
        let now = tokio::time::Instant::now();
        let allowlist = IgnoreTable::new(&settings.ignore);
        let batch: Vec<(Failure, IpNetwork, &JailSettings)> = failures
            .iter()
            .map(|(jail, ip)| {
                (
                    Failure {
                        jail: jail.clone(),
                        ip: *ip,
                        count: 1,
                        success: false,
                        received_at: now,
                        host: None,
                        seen: Default::default(),
                        matched: None,
                        user: None,
                    },
                    key_of(settings, &allowlist, *ip),
                    settings,
                )
            })
            .collect();
        let results = count(&mut self.conn, &self.keys, self.script.get_hash(), &batch).await?;
        Ok(results
            .into_iter()
            .map(|(n, decided, c, ..)| (decided == 1).then_some((n as u32, c as u32)))
            .collect())
    }
}

/// Takes failures from the listeners, counts them in Redis and hands the outcomes (and any
/// decided ban) to the jail task; falls back to the jail task's local windows while Redis is
/// away.
pub(crate) async fn run(
    config: Arc<FleetConfig>,
    client: redis::Client,
    settings: SharedSettings,
    mut failures: mpsc::Receiver<Failure>,
    local: mpsc::Sender<Failure>,
    jail: JailTask,
    shutdown: CancellationToken,
) {
    let JailTask {
        commands: jail,
        allowlists,
    } = jail;
    let keys = Keys::new(&config.prefix);
    let script = redis::Script::new(SCRIPT);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::default();
    let mut retry_at = Instant::now();
    let mut falling_back = false;
    let mut batch: Vec<Failure> = Vec::with_capacity(BATCH);
    // The jail task's word on each decision it applied (bounded: when full, the jail task
    // keeps the markers and sends them with its next batch).
    let (settle_tx, mut settle_rx) = mpsc::channel::<Vec<Settled>>(SETTLE_QUEUE);
    let mut unsettled = Unsettled::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(settled) = settle_rx.recv() => {
                unsettled.add(settled);
                if unsettled.due() {
                    unsettled.try_now(&mut conn, &keys).await;
                }
                continue;
            }
            _ = tokio::time::sleep_until(unsettled.due.unwrap_or(retry_at).max(retry_at).into()),
                if !unsettled.markers.is_empty() => {
                if conn.is_none() {
                    conn = connect_scripts(&client, &script, &mut falling_back).await;
                    if conn.is_none() {
                        retry_at = Instant::now() + backoff.wait();
                        continue;
                    }
                }
                unsettled.try_now(&mut conn, &keys).await;
                continue;
            }
            f = failures.recv() => match f {
                Some(f) => f,
                // The listeners are gone (a stop): as at the shutdown signal, whichever the
                // select saw first.
                None => break,
            },
        };
        batch.push(first);
        while batch.len() < BATCH {
            match failures.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        if conn.is_none() && Instant::now() >= retry_at {
            conn = connect_scripts(&client, &script, &mut falling_back).await;
            if conn.is_none() {
                retry_at = Instant::now() + backoff.wait();
            } else if !unsettled.markers.is_empty() {
                unsettled.try_now(&mut conn, &keys).await;
            }
        }
        // Owned for the batch (its settings are borrowed across the round trip), not cloned
        // per failure.
        let table = settings.load_full();
        // The jails' whole allowlists as the jail task judges by them now.
        let lists = allowlists.borrow().clone();
        let mut shared = Vec::with_capacity(batch.len());
        let mut locals = Vec::new();
        for failure in batch.drain(..) {
            match (table.get(&*failure.jail), lists.get(&*failure.jail)) {
                (Some(s), Some(allowlist)) if conn.is_some() => {
                    let key = key_of(s, allowlist, failure.ip);
                    if allowlist.overlapping(key).is_some() {
                        // The jail counts it as ignored, as it would any ignored failure.
                        locals.push(failure);
                    } else {
                        shared.push((failure, key, s));
                    }
                }
                _ => locals.push(failure),
            }
        }
        if let Some(c) = conn.as_mut() {
            if !shared.is_empty() {
                let counted = count(c, &keys, script.get_hash(), &shared)
                    .await
                    .and_then(|r| {
                        if r.len() == shared.len() {
                            Ok(r)
                        } else {
                            Err(redis::RedisError::from((
                                redis::ErrorKind::UnexpectedReturnType,
                                "shared-window script answered for a different number of failures",
                            )))
                        }
                    });
                match counted {
                    Ok(results) => {
                        // Counted: the connection works, back-off starts small again.
                        backoff.reset();
                        let mut outcomes = Vec::with_capacity(shared.len());
                        for ((f, _, _), (n, decided, ban_count, spray, marker)) in
                            shared.into_iter().zip(results)
                        {
                            if f.success {
                                // Forgiven in the shared window, and then in the jail's own
                                // (which counts while Redis is away, and explains it to `tail`).
                                locals.push(f);
                                continue;
                            }
                            outcomes.push(SharedFailure {
                                jail: f.jail,
                                ip: f.ip,
                                count: f.count,
                                received_at: f.received_at,
                                host: f.host,
                                user: f.user,
                                sprayed: sprayed(spray),
                                seen: f.seen,
                                marker,
                                decided: (decided == 1).then_some((
                                    n.clamp(0, i64::from(u32::MAX)) as u32,
                                    ban_count.clamp(1, i64::from(u32::MAX)) as u32,
                                )),
                            });
                        }
                        if jail
                            .send(Command::Shared(outcomes, settle_tx.clone()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        metrics::fleet_errors("redis").increment(1);
                        metrics::fleet_connected("windows").set(0.0);
                        tracing::warn!(%error, "fleet: shared windows unavailable; counting locally until Redis is back");
                        falling_back = true;
                        conn = None;
                        retry_at = Instant::now() + backoff.wait();
                        // Counted by the jail's own windows, successes included, in order.
                        locals.extend(shared.into_iter().map(|(f, ..)| f));
                    }
                }
            }
        }
        for failure in locals {
            if local.send(failure).await.is_err() {
                return;
            }
        }
    }
    // One last try (bounded), with what the jail task queued and this task has not taken yet:
    // a marker left unsettled keeps its first hold.
    while let Ok(settled) = settle_rx.try_recv() {
        unsettled.add(settled);
    }
    if !unsettled.markers.is_empty() {
        let last = unsettled.try_now(&mut conn, &keys);
        let _ = tokio::time::timeout(super::RESPONSE_TIMEOUT, last).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jail::settings::{Increment, JailSettings};

    fn settings(bantime: Option<Duration>, maxtime: Option<Duration>) -> JailSettings {
        JailSettings {
            bantime,
            findtime: Duration::from_secs(600),
            maxretry: 3,
            ignore: Vec::new(),
            max_tracked: 100,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_bans_per_minute: None,
            increment: Increment {
                enabled: maxtime.is_some(),
                factor: 2.0,
                maxtime: maxtime.unwrap_or_default(),
                rndtime: Duration::ZERO,
            },
            detection: Default::default(),
        }
    }

    /// Until it is settled, a decided marker holds the longest ban the jail may give, but never
    /// past FIRST_HOLD: a settle that never comes (the sink stopped first) must not leave a
    /// target no sink can decide for a week, or for ever with a permanent bantime.
    #[test]
    fn an_unsettled_marker_holds_at_most_the_first_hold() {
        let first = FIRST_HOLD.as_millis() as u64;
        let minute = Some(Duration::from_secs(60));
        let week = Some(Duration::from_secs(7 * 86_400));
        assert_eq!(hold_ms(&settings(minute, None)), 60_000);
        assert_eq!(hold_ms(&settings(minute, week)), first);
        assert_eq!(hold_ms(&settings(week, None)), first);
        assert_eq!(hold_ms(&settings(None, None)), first, "a permanent bantime");
    }
}
