//! Fleet mode on Redis: a ban decided by any sink protects every host.
//!
//! The fleet sits beside the actions: a sink's committed bans reach it through the state
//! writer's outbox ([`publish`]), an agent's firewall is fed from the stream ([`follow`]), and
//! sinks with `shared_windows` count failures in Redis ([`windows`]). Redis keys, all under
//! `<prefix>:`:
//! - `events`: the stream of ban and unban events ([`event::FleetEvent`] fields);
//! - `active`: sorted set of active bans (`jail|target`), scored by expiry in Unix ms
//!   (permanent: +inf); `bans`: hash of the same members to the event's JSON;
//! - `nodes`: hash of node name to its last heartbeat (JSON);
//! - `win:<jail>:<target>`, `decided:<jail>:<target>`, `count:<jail>:<target>`: shared windows.

pub(crate) mod allowed;
pub mod app;
pub mod cli;
pub mod config;
pub mod event;
pub mod follow;
pub mod publish;
pub mod stream;
pub mod windows;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

pub use config::{FleetConfig, Role};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command (or pipeline) may take; blocking reads set their own.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Every node writes its heartbeat this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// Reconnect back-off bounds.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why the fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The CA file could not be read.
    #[error("fleet.tls_ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What the file system said.
        reason: std::io::Error,
    },
    /// Redis refused us for a reason a retry cannot fix (password, ACL, TLS certificate).
    #[error("fleet: Redis at {url} refused the connection: {reason} (check fleet.redis credentials, the ACL user, and fleet.tls_ca_file)")]
    Refused {
        /// The URL, password hidden.
        url: String,
        /// What Redis or TLS said.
        reason: redis::RedisError,
    },
    /// The ACL user lacks a command or key its role needs (found at start, by trying each).
    #[error("fleet: Redis at {url} denies the {role} user {what}: {reason} (grant what examples/fleet/users.acl grants)")]
    NoPermission {
        /// The URL, password hidden.
        url: String,
        /// This node's role.
        role: &'static str,
        /// Which of its commands (a script names no command in its error).
        what: &'static str,
        /// What Redis said (NOPERM, naming the command or key).
        reason: redis::RedisError,
    },
    /// Redis did not answer (down, or unreachable from here).
    #[error("fleet: cannot reach Redis at {url}: {reason}")]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// What the connection attempt said.
        reason: redis::RedisError,
    },
    /// The client could not be built from the URL.
    #[error("fleet.redis {url}: {reason}")]
    Client {
        /// The URL, password hidden.
        url: String,
        /// What the client said.
        reason: redis::RedisError,
    },
    /// The state database (outbox) could not be opened.
    #[error("fleet: {reason}")]
    State {
        /// What the state said.
        reason: crate::state::StateError,
    },
}

/// The Redis key names of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// The event stream.
    pub stream: String,
    /// Active bans scored by expiry.
    pub active: String,
    /// Details of active bans.
    pub details: String,
    /// Details of bans hidden behind a longer ban of the same target (by another sink), which
    /// come back if that one is lifted early.
    pub hidden: String,
    /// Heartbeats.
    pub nodes: String,
}

impl Keys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            stream: format!("{prefix}:events"),
            active: format!("{prefix}:active"),
            details: format!("{prefix}:bans"),
            hidden: format!("{prefix}:hidden"),
            nodes: format!("{prefix}:nodes"),
        }
    }

    /// A shared window's key, its "decided" marker and its fleet-wide ban count.
    pub fn window(&self, jail: &str, target: IpNetwork) -> [String; 3] {
        let p = &self.prefix;
        [
            format!("{p}:win:{jail}:{target}"),
            format!("{p}:decided:{jail}:{target}"),
            format!("{p}:count:{jail}:{target}"),
        ]
    }

    /// The shared spray count of `user` in `jail`: the addresses that failed as it, by time.
    pub fn spray(&self, jail: &str, user: &str) -> String {
        format!("{}:spray:{jail}:{user}", self.prefix)
    }
}

/// Wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A wall-clock time in Unix milliseconds.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// The Redis client for `config`, with the CA file for rediss://.
pub fn client(config: &FleetConfig) -> Result<redis::Client, FleetError> {
    let client_error = |reason| FleetError::Client {
        url: config.redis_shown(),
        reason,
    };
    match &config.tls_ca_file {
        None => redis::Client::open(config.redis.as_str()).map_err(client_error),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|reason| FleetError::CaFile {
                path: path.display().to_string(),
                reason,
            })?;
            redis::Client::build_with_tls(
                config.redis.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(client_error)
        }
    }
}

/// Opens one multiplexed connection; `response` bounds each command (None: no bound, for
/// blocking reads, which carry their own).
pub async fn connect(
    client: &redis::Client,
    response: Option<Duration>,
) -> redis::RedisResult<MultiplexedConnection> {
    install_crypto();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// rustls needs a process-wide crypto provider before the first TLS connection.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // ring is deprecated in rustls 0.23.48 only for lacking post-quantum key exchange;
        // aws-lc-rs has it but needs cmake and a C++ toolchain to build. Err means another
        // provider was installed first, which serves as well.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// True for errors a retry may fix: Redis down, restarting, unreachable, or slow.
pub fn is_transient(error: &redis::RedisError) -> bool {
    error.is_connection_refusal()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        || matches!(error.kind(), redis::ErrorKind::Io)
            && !error
                .to_string()
                .to_ascii_lowercase()
                .contains("certificate")
}

/// Checks at start that Redis accepts us: a wrong password, a missing ACL permission or a
/// refused TLS certificate is an error now, not a retry loop. Redis merely being down is not:
/// the fleet runs on and reconnects (sinks keep an outbox, agents keep their bans).
pub async fn check(config: &FleetConfig) -> Result<redis::Client, FleetError> {
    let client = client(config)?;
    let refused = |reason| FleetError::Refused {
        url: config.redis_shown(),
        reason,
    };
    match connect(&client, Some(RESPONSE_TIMEOUT)).await {
        Ok(mut conn) => {
            // Every command each role sends, tried harmlessly (on the real keys where it
            // changes nothing, else on `<prefix>:probe`, which nothing uses), so a missing
            // ACL permission shows up now and not as a retry loop later.
            match probe(&mut conn, config).await {
                Ok(()) => Ok(client),
                Err((_, e)) if is_transient(&e) => Ok(client),
                Err((what, e)) if denied(&e) => Err(FleetError::NoPermission {
                    url: config.redis_shown(),
                    role: config.role.as_str(),
                    what,
                    reason: e,
                }),
                Err((_, e)) => Err(refused(e)),
            }
        }
        Err(e) if is_transient(&e) => {
            tracing::warn!(redis = %config.redis_shown(), error = %e, "Redis is not reachable at start; carrying on and reconnecting");
            Ok(client)
        }
        Err(e) => Err(refused(e)),
    }
}

/// True for an ACL refusal: NOPERM, or the error a script gets when one of its `redis.call`s
/// is refused.
fn denied(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        || error.to_string().contains("can't run this command")
}

/// A command a node's role needs: what [`probe`] tried.
const COMMANDS: &str = "a command its role needs";
/// What the prune script runs.
const PRUNE_COMMANDS: &str =
    "a command of the prune script (EVALSHA, SCRIPT LOAD, ZRANGEBYSCORE ZREM HDEL)";
/// What the unban (lift) script runs.
const LIFT_COMMANDS: &str =
    "a command of the unban script (EVALSHA, SCRIPT LOAD, HGET ZREM HDEL DEL TIME ZADD HSET SET XADD)";
/// What the ban (put) script runs.
const PUT_COMMANDS: &str =
    "a command of the ban script (EVALSHA, SCRIPT LOAD, ZSCORE HGET ZADD HSET)";
/// What settling a decided marker runs.
const SETTLE_COMMANDS: &str =
    "a command of the settle script (EVALSHA, SCRIPT LOAD, SET GET DEL DECR PEXPIRE PERSIST)";
/// What the shared-window script runs.
const WINDOW_COMMANDS: &str = "a command of the shared-window script (EVALSHA, SCRIPT LOAD, \
    TIME EXISTS RPUSH LLEN LTRIM LINDEX DEL SET INCR PEXPIRE ZADD ZREMRANGEBYSCORE ZCARD ZRANGE)";

/// Sends each command `config`'s role uses, so that none is denied later: reads on the real
/// keys, writes that change nothing (XX, NOMKSTREAM, absent members), the heartbeat, and for
/// sinks every script loaded and run (the lift script on an absent member, the windows script on `<prefix>:probe:*` keys that
/// expire within a millisecond), since Redis checks the ACL on each `redis.call` too.
async fn probe(
    conn: &mut MultiplexedConnection,
    config: &FleetConfig,
) -> Result<(), (&'static str, redis::RedisError)> {
    let keys = Keys::new(&config.prefix);
    let scratch = format!("{}:probe", config.prefix);
    let absent = "\u{0}probe";
    let mut pipe = redis::pipe();
    pipe.cmd("HGET").arg(&keys.nodes).arg(&config.node).ignore();
    pipe.cmd("HSET")
        .arg(&keys.nodes)
        .arg(&config.node)
        .arg(heartbeat_json(config, &NodeStats::default()))
        .ignore();
    pipe.cmd("XREVRANGE")
        .arg(&keys.stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .ignore();
    pipe.cmd("XLEN").arg(&keys.stream).ignore();
    pipe.cmd("ZRANGE").arg(&keys.active).arg(0).arg(0).ignore();
    pipe.cmd("ZCOUNT")
        .arg(&keys.active)
        .arg("-inf")
        .arg("+inf")
        .ignore();
    pipe.cmd("HMGET").arg(&keys.details).arg(absent).ignore();
    pipe.cmd("HVALS").arg(&scratch).ignore();
    if config.role.follows() {
        pipe.cmd("ZSCAN")
            .arg(&keys.active)
            .arg(0)
            .arg("COUNT")
            .arg(1)
            .ignore();
        pipe.cmd("XRANGE")
            .arg(&keys.stream)
            .arg("0-1")
            .arg("0-1")
            .ignore();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&keys.stream)
            .arg("$")
            .ignore();
    }
    if config.role.publishes() {
        pipe.cmd("XADD")
            .arg(&scratch)
            .arg("NOMKSTREAM")
            .arg("MAXLEN")
            .arg("~")
            .arg(1)
            .arg("*")
            .arg("probe")
            .arg(1)
            .ignore();
        pipe.cmd("ZADD")
            .arg(&keys.active)
            .arg("XX")
            .arg(0)
            .arg(absent)
            .ignore();
        pipe.cmd("ZREM").arg(&keys.active).arg(absent).ignore();
        pipe.cmd("HDEL").arg(&keys.details).arg(absent).ignore();
        pipe.cmd("HGET").arg(&keys.details).arg(absent).ignore();
        pipe.cmd("DEL").arg(&scratch).ignore();
        pipe.cmd("MULTI").ignore();
        pipe.cmd("EXEC").ignore();
    }
    let () = pipe.query_async(conn).await.map_err(|e| (COMMANDS, e))?;
    if config.role.publishes() {
        // Loaded, then run: the prune script on nothing expired, the windows script on one
        // failure that decides at once and completes a spray (every command it has), on short-lived scratch keys.
        let prune = redis::Script::new(publish::PRUNE);
        let pruned: redis::RedisResult<u64> = async {
            prune.load_async(conn).await?;
            prune
                .key(&keys.active)
                .key(&keys.details)
                .key(&keys.hidden)
                .arg(0)
                .invoke_async(conn)
                .await
        }
        .await;
        pruned.map_err(|e| (PRUNE_COMMANDS, e))?;
        let lift = redis::Script::new(publish::LIFT);
        let lifted: redis::RedisResult<i64> = async {
            lift.load_async(conn).await?;
            lift.key(&keys.active)
                .key(&keys.details)
                .key(format!("{scratch}:decided"))
                .key(&keys.hidden)
                .key(&keys.stream)
                .arg(absent)
                .arg("")
                .arg(&config.node)
                .arg(config.stream_maxlen)
                .invoke_async(conn)
                .await
        }
        .await;
        lifted.map_err(|e| (LIFT_COMMANDS, e))?;
        // On scratch keys, deleted at once: a ban, then a shorter one it hides.
        let put = redis::Script::new(publish::PUT);
        let [active, details, hidden] =
            ["active", "details", "hidden"].map(|k| format!("{scratch}:{k}"));
        let written: redis::RedisResult<()> = async {
            put.load_async(conn).await?;
            let _: i64 = put
                .key(&active)
                .key(&details)
                .key(&hidden)
                .arg(absent)
                .arg(2)
                .arg("{}")
                .arg(absent)
                .arg(1)
                .arg(r#"{"expires_at":"1"}"#)
                .invoke_async(conn)
                .await?;
            redis::cmd("DEL")
                .arg(&active)
                .arg(&details)
                .arg(&hidden)
                .query_async(conn)
                .await
        }
        .await;
        written.map_err(|e| (PUT_COMMANDS, e))?;
        let windows = redis::Script::new(windows::SCRIPT);
        let counted: redis::RedisResult<redis::Value> = async {
            windows.load_async(conn).await?;
            windows
                // Window keys end with the target, as the script's spray branch expects.
                .key(format!("{scratch}:win:probe"))
                .key(format!("{scratch}:decided:probe"))
                .key(format!("{scratch}:count:probe"))
                .key(format!("{scratch}:spray"))
                // findtime, maxretry, count, hold, count ttl (ms): decides at once.
                .arg(&[1, 1, 1, 1, 1])
                // A failure whose user completes a spray of one address at once.
                .arg(&[1, 1, 1])
                .arg("probe")
                .invoke_async(conn)
                .await
        }
        .await;
        counted.map_err(|e| (WINDOW_COMMANDS, e))?;
        // Settling a decided marker: each way, on a scratch marker set for it.
        let settle = redis::Script::new(windows::SETTLE);
        let marker = format!("{scratch}:settle");
        let settled: redis::RedisResult<()> = async {
            settle.load_async(conn).await?;
            for op in [1, 2, 0] {
                redis::cmd("SET")
                    .arg(&marker)
                    .arg(7)
                    .arg("PX")
                    .arg(1000)
                    .query_async::<()>(conn)
                    .await?;
                // A count to take back, so the clear runs DECR too.
                redis::cmd("SET")
                    .arg(format!("{scratch}:count"))
                    .arg(1)
                    .arg("PX")
                    .arg(1000)
                    .query_async::<()>(conn)
                    .await?;
                let _: i64 = settle
                    .key(&marker)
                    .key(format!("{scratch}:count"))
                    .arg(7)
                    .arg(op)
                    .arg(1)
                    .invoke_async(conn)
                    .await?;
            }
            redis::cmd("DEL")
                .arg(&marker)
                .arg(format!("{scratch}:count"))
                .query_async(conn)
                .await
        }
        .await;
        settled.map_err(|e| (SETTLE_COMMANDS, e))?;
    }
    Ok(())
}

/// Opens a connection of the fleet's own to the state database (outbox, agent store): WAL,
/// `synchronous = NORMAL` as the state has it (durable against a killed process), and a busy
/// timeout, since the state writer holds the same file.
fn open_db(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(5))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(db)
}

/// Doubling back-off between reconnects.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(RETRY_MIN)
    }
}

impl Backoff {
    /// The next wait.
    pub fn wait(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(RETRY_MAX);
        wait
    }

    /// Connected: start small again.
    pub fn reset(&mut self) {
        self.0 = RETRY_MIN;
    }
}

/// What a node reports in its heartbeat beyond role and time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeStats {
    /// Agents: milliseconds between the newest event applied and the newest in the stream.
    pub lag_ms: u64,
    /// Agents: events applied since start.
    pub bans_applied: u64,
    /// Sinks: events waiting in the outbox.
    pub outbox: u64,
    /// Agents: the last stream id applied.
    pub last_id: String,
}

/// One node's heartbeat as stored in `<prefix>:nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// The node.
    pub node: String,
    /// sink, agent or both.
    pub role: String,
    /// Unix ms of the heartbeat.
    pub last_seen: u64,
    /// The rest.
    #[serde(flatten)]
    pub stats: NodeStats,
}

/// This node's heartbeat as JSON.
pub fn heartbeat_json(config: &FleetConfig, stats: &NodeStats) -> String {
    serde_json::to_string(&Heartbeat {
        node: config.node.clone(),
        role: config.role.as_str().to_string(),
        last_seen: now_ms(),
        stats: stats.clone(),
    })
    .unwrap_or_default()
}

/// Writes this node's heartbeat.
pub async fn beat(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    config: &FleetConfig,
    stats: &NodeStats,
) -> redis::RedisResult<()> {
    redis::cmd("HSET")
        .arg(&keys.nodes)
        .arg(&config.node)
        .arg(heartbeat_json(config, stats))
        .query_async(conn)
        .await
}

/// The stream id's millisecond part (`1700000000000-3` → 1700000000000).
pub fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        let keys = Keys::new("jf");
        assert_eq!(keys.stream, "jf:events");
        let [w, d, c] = keys.window("sshd", "192.0.2.1/32".parse().unwrap());
        assert_eq!(w, "jf:win:sshd:192.0.2.1/32");
        assert_eq!(d, "jf:decided:sshd:192.0.2.1/32");
        assert_eq!(c, "jf:count:sshd:192.0.2.1/32");
        assert_eq!(id_ms("1700000000000-3"), 1_700_000_000_000);
        assert_eq!(id_ms("junk"), 0);
        let mut b = Backoff::default();
        assert!(b.wait() < b.wait());
    }
}
