//! `jailsink banned --fleet` and `status --fleet`: read straight from Redis with this host's
//! `[fleet]` settings, so they answer even when the local daemon is down.

use std::time::Duration;

use serde::Serialize;

use super::event::FleetEvent;
use super::{FleetConfig, FleetError, Heartbeat, Keys};

/// A node whose heartbeat is older than this is shown as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// One fleet ban, as `banned --fleet --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetBan {
    /// The jail.
    pub jail: String,
    /// The address or network.
    pub ip: String,
    /// RFC 3339.
    pub banned_at: String,
    /// RFC 3339, or null for a permanent ban.
    pub expires_at: Option<String>,
    /// Offence number.
    pub ban_count: u32,
    /// The node that decided it.
    pub origin: String,
    /// Syslog host names the failures came from.
    pub hosts: Vec<String>,
}

/// `status --fleet`: this node's view and every node's heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// This node.
    pub node: String,
    /// Its role.
    pub role: String,
    /// The Redis URL, password hidden.
    pub redis: String,
    /// Whether Redis answered.
    pub connected: bool,
    /// Stream length.
    pub events: u64,
    /// Active bans in the set (expired ones not yet pruned excluded).
    pub active_bans: u64,
    /// Every node seen, by name.
    pub nodes: Vec<NodeView>,
}

/// One node in `status --fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The heartbeat.
    #[serde(flatten)]
    pub beat: Heartbeat,
    /// RFC 3339 of `last_seen`.
    pub last_seen_at: String,
    /// Heartbeat older than [`STALE_AFTER`].
    pub stale: bool,
}

fn rfc3339(ms: u64) -> String {
    // Any agent may write its heartbeat: a time chrono cannot show is shown as it came.
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map_or_else(
            || format!("@{ms}ms"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

async fn open(config: &FleetConfig) -> Result<redis::aio::MultiplexedConnection, FleetError> {
    let client = super::client(config)?;
    super::connect(&client, Some(super::RESPONSE_TIMEOUT))
        .await
        .map_err(|reason| {
            let url = config.redis_shown();
            if super::is_transient(&reason) {
                FleetError::Unreachable { url, reason }
            } else {
                FleetError::Refused { url, reason }
            }
        })
}

/// The fleet's active bans (expired ones left out), oldest first.
pub async fn banned(config: &FleetConfig) -> Result<Vec<FleetBan>, FleetError> {
    let mut conn = open(config).await?;
    let keys = Keys::new(&config.prefix);
    let refused = |reason| FleetError::Refused {
        url: config.redis_shown(),
        reason,
    };
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&keys.active)
        .arg(format!("({}", super::now_ms()))
        .arg("+inf")
        .arg("BYSCORE")
        .query_async(&mut conn)
        .await
        .map_err(refused)?;
    let mut bans = Vec::new();
    for chunk in members.chunks(5000) {
        let details: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.details)
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .map_err(refused)?;
        for event in details
            .into_iter()
            .flatten()
            .filter_map(|t| FleetEvent::from_json(&t).ok())
        {
            bans.push(FleetBan {
                jail: event.jail,
                ip: crate::address::show_target(event.target),
                banned_at: rfc3339(event.banned_at),
                expires_at: event.expires_at.map(rfc3339),
                ban_count: event.ban_count,
                origin: event.origin,
                hosts: event.hosts,
            });
        }
    }
    bans.sort_by(|a, b| (&a.banned_at, &a.jail, &a.ip).cmp(&(&b.banned_at, &b.jail, &b.ip)));
    Ok(bans)
}

/// Connection and heartbeats. Redis not answering is a status, not an error.
pub async fn status(config: &FleetConfig) -> Result<FleetStatus, FleetError> {
    let mut status = FleetStatus {
        node: config.node.clone(),
        role: config.role.as_str().into(),
        redis: config.redis_shown(),
        connected: false,
        events: 0,
        active_bans: 0,
        nodes: Vec::new(),
    };
    let mut conn = match open(config).await {
        Ok(c) => c,
        Err(FleetError::Unreachable { .. }) => return Ok(status),
        Err(e) => return Err(e),
    };
    let keys = Keys::new(&config.prefix);
    let refused = |reason| FleetError::Refused {
        url: config.redis_shown(),
        reason,
    };
    let (events, active, beats): (u64, u64, Vec<String>) = redis::pipe()
        .cmd("XLEN")
        .arg(&keys.stream)
        .cmd("ZCOUNT")
        .arg(&keys.active)
        .arg(format!("({}", super::now_ms()))
        .arg("+inf")
        .cmd("HVALS")
        .arg(&keys.nodes)
        .query_async(&mut conn)
        .await
        .map_err(refused)?;
    status.connected = true;
    status.events = events;
    status.active_bans = active;
    let now = super::now_ms();
    status.nodes = beats
        .iter()
        .filter_map(|t| serde_json::from_str::<Heartbeat>(t).ok())
        .map(|beat| NodeView {
            last_seen_at: rfc3339(beat.last_seen),
            stale: now.saturating_sub(beat.last_seen) > STALE_AFTER.as_millis() as u64,
            beat,
        })
        .collect();
    status.nodes.sort_by(|a, b| a.beat.node.cmp(&b.beat.node));
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_time_chrono_cannot_show_is_shown_as_it_came() {
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(u64::MAX), format!("@{}ms", u64::MAX));
        assert_eq!(rfc3339(i64::MAX as u64), format!("@{}ms", i64::MAX));
    }
}
