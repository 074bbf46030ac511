//! `[fleet]`: the raw TOML table and its compiled form, checked with the same file/key/reason
//! errors as the rest of the config.

use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::event::EventFormat;

/// `[fleet]` exactly as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// `redis://[USER:PASSWORD@]HOST:PORT/DB`, or `rediss://` for TLS.
    pub redis: Option<String>,
    /// `sink`, `agent` or `both`.
    pub role: Option<String>,
    /// This node's name in the fleet (default: the host name).
    pub node: Option<String>,
    /// Every Redis key starts with `<prefix>:`.
    pub prefix: Option<String>,
    /// Sinks: count failures in Redis so several sinks count together.
    pub shared_windows: Option<bool>,
    /// Agents: the action for fleet bans of jails not configured locally.
    pub action: Option<String>,
    /// Agents: most bans a minute applied per origin node (0 turns the guard off).
    pub max_bans_per_minute: Option<i64>,
    /// Events kept in the stream for agents that were away.
    pub stream_maxlen: Option<i64>,
    /// A PEM file of the CA(s) that signed the Redis server's certificate (rediss:// only).
    pub tls_ca_file: Option<String>,
    /// Sinks: stream entry encoding, `packed` (version 2) or `fields` (version 1, for agents
    /// that predate version 2).
    pub event_format: Option<String>,
}

/// What this node does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decides bans from its own syslog stream and publishes them.
    Sink,
    /// Applies the fleet's bans to its own firewall.
    Agent,
    /// Both on one host.
    Both,
}

impl Role {
    /// Publishes its committed bans.
    pub fn publishes(self) -> bool {
        matches!(self, Role::Sink | Role::Both)
    }

    /// Follows the stream into its firewall.
    pub fn follows(self) -> bool {
        matches!(self, Role::Agent | Role::Both)
    }

    /// The name used in config, heartbeats and `status --fleet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sink => "sink",
            Role::Agent => "agent",
            Role::Both => "both",
        }
    }
}

/// The firewall types a fleet ban of a jail not configured locally can use (`command` needs
/// templates of its own, so it is only available through a local jail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetAction {
    /// nftables sets (the default: timeouts in the kernel, cheap per ban).
    Nftables,
    /// ipset sets matched by one rule each.
    Ipset,
    /// iptables chains.
    Iptables,
    /// Log only.
    Log,
}

/// `[fleet]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// The Redis URL as written (shown with its password hidden by [`FleetConfig::redis_shown`]).
    pub redis: String,
    /// What this node does.
    pub role: Role,
    /// This node's name.
    pub node: String,
    /// Key prefix, without the trailing colon.
    pub prefix: String,
    /// Count failures in Redis (sinks).
    pub shared_windows: bool,
    /// Action for jails not configured locally (agents).
    pub action: FleetAction,
    /// Per-origin storm guard; None turns it off.
    pub max_bans_per_minute: Option<u32>,
    /// Approximate cap on the stream's length.
    pub stream_maxlen: u64,
    /// CA file for rediss://.
    pub tls_ca_file: Option<PathBuf>,
    /// How stream entries are written (sinks); agents read both.
    pub event_format: EventFormat,
    /// What an agent never bans for a jail it does not have: `[defaults] ignoreip`, plus this
    /// host's addresses unless `[defaults] ignoreself = false`.
    pub ignore: Vec<IpNetwork>,
    /// The DNS names of `[defaults] ignoreip`, resolved at run time for the same.
    pub ignore_names: Vec<String>,
    /// `[defaults] ignoreip_files`, read at run time for the same.
    pub ignore_files: Vec<PathBuf>,
    /// `[defaults] ignore_refresh`: how often the names are resolved again.
    pub ignore_refresh: std::time::Duration,
}

impl FleetConfig {
    /// The URL with any password replaced, for logs and `status --fleet`.
    pub fn redis_shown(&self) -> String {
        password_hidden(&self.redis)
    }
}

/// `url` with the password of its user info replaced by `***`, so logs and config errors never
/// show it (also for a URL that does not parse).
fn password_hidden(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A node or prefix name: 1 to 64 letters, digits, '.', '-' or '_' (they end up inside Redis
/// keys and metric labels, so nothing that could split a key).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// This host's name, for the default node name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| valid_name(s))
        .unwrap_or_else(|| "localhost".into())
}

/// Compiles `[fleet]`; `ignore` is `[defaults] ignoreip` (compiled) and `host` this host's
/// addresses when `[defaults] ignoreself` holds. Errors are (key, reason) pairs.
pub fn compile(
    raw: &RawFleet,
    ignore: Vec<IpNetwork>,
    errors: &mut Vec<(String, String)>,
) -> Option<FleetConfig> {
    let mut error = |key: &str, reason: String| errors.push((format!("fleet.{key}"), reason));
    let redis = raw
        .redis
        .clone()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let mut ok = true;
    match redis::IntoConnectionInfo::into_connection_info(redis.as_str()) {
        Err(e) => {
            let shown = password_hidden(&redis);
            error("redis", format!("`{shown}` is not a Redis URL (redis://[USER:PASSWORD@]HOST:PORT/DB or rediss://...): {e}"));
            ok = false;
        }
        Ok(_) if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) => {
            error(
                "redis",
                "only redis:// and rediss:// (TLS) URLs are supported".into(),
            );
            ok = false;
        }
        Ok(_) => {}
    }
    let role = match raw.role.as_deref() {
        None => {
            error(
                "role",
                "missing: set \"sink\", \"agent\" or \"both\"".into(),
            );
            None
        }
        Some("sink") => Some(Role::Sink),
        Some("agent") => Some(Role::Agent),
        Some("both") => Some(Role::Both),
        Some(other) => {
            error(
                "role",
                format!("`{other}` is not a role: use \"sink\", \"agent\" or \"both\""),
            );
            None
        }
    };
    let node = raw.node.clone().unwrap_or_else(host_name);
    if !valid_name(&node) {
        error(
            "node",
            format!("`{node}` is not a node name: 1 to 64 letters, digits, '.', '-' or '_'"),
        );
        ok = false;
    }
    let prefix = raw.prefix.clone().unwrap_or_else(|| "jailsink".into());
    if !valid_name(&prefix) {
        error(
            "prefix",
            format!("`{prefix}` is not a key prefix: 1 to 64 letters, digits, '.', '-' or '_'"),
        );
        ok = false;
    }
    let shared_windows = raw.shared_windows.unwrap_or(false);
    if shared_windows && role == Some(Role::Agent) {
        error(
            "shared_windows",
            "only sinks count failures; an agent has no windows to share".into(),
        );
        ok = false;
    }
    let action = match raw.action.as_deref().unwrap_or("nftables") {
        "nftables" => Some(FleetAction::Nftables),
        "ipset" => Some(FleetAction::Ipset),
        "iptables" => Some(FleetAction::Iptables),
        "log" => Some(FleetAction::Log),
        other => {
            error("action", format!("`{other}` is not a fleet action: use nftables, ipset, iptables or log (a command action needs a local jail of the same name)"));
            None
        }
    };
    let max_bans_per_minute = match raw.max_bans_per_minute.unwrap_or(1000) {
        0 => Some(None),
        n @ 1..=1_000_000 => Some(Some(n as u32)),
        n => {
            error(
                "max_bans_per_minute",
                format!("{n} is out of range 0..=1000000"),
            );
            None
        }
    };
    let stream_maxlen = match raw.stream_maxlen.unwrap_or(1_000_000) {
        n @ 1000..=1_000_000_000 => Some(n as u64),
        n => {
            error(
                "stream_maxlen",
                format!("{n} is out of range 1000..=1000000000"),
            );
            None
        }
    };
    let event_format = match raw.event_format.as_deref().unwrap_or("packed") {
        "packed" => Some(EventFormat::Packed),
        "fields" => Some(EventFormat::Fields),
        other => {
            error("event_format", format!("`{other}` is not an event format: use \"packed\" (version 2) or \"fields\" (version 1, while agents older than version 2 remain)"));
            None
        }
    };
    let tls_ca_file = raw.tls_ca_file.as_ref().map(PathBuf::from);
    if let Some(path) = &tls_ca_file {
        if !redis.starts_with("rediss://") {
            error("tls_ca_file", "only used with a rediss:// URL (TLS)".into());
            ok = false;
        } else if let Err(e) = crate::pem::certificates(path) {
            // Read whole now, so a CA that trusts nothing is a config error, not a refused
            // handshake at every reconnect.
            error("tls_ca_file", format!("{}: {e}", path.display()));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(FleetConfig {
        redis,
        role: role?,
        node,
        prefix,
        shared_windows,
        action: action?,
        max_bans_per_minute: max_bans_per_minute?,
        stream_maxlen: stream_maxlen?,
        tls_ca_file,
        event_format: event_format?,
        ignore,
        ignore_names: Vec::new(),
        ignore_files: Vec::new(),
        ignore_refresh: std::time::Duration::from_secs(300),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(raw: RawFleet) -> Result<FleetConfig, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let c = compile(&raw, Vec::new(), &mut errors);
        match c {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(errors),
        }
    }

    #[test]
    fn defaults_and_every_error_named() {
        let c = compiled(RawFleet {
            role: Some("agent".into()),
            node: Some("web-1".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.role, Role::Agent);
        assert_eq!(c.prefix, "jailsink");
        assert_eq!(c.action, FleetAction::Nftables);
        assert_eq!(c.max_bans_per_minute, Some(1000));
        assert_eq!(c.stream_maxlen, 1_000_000);
        assert_eq!(c.event_format, EventFormat::Packed);

        let errors = compiled(RawFleet {
            redis: Some("http://x".into()),
            role: Some("leader".into()),
            node: Some("a b".into()),
            prefix: Some("a:b".into()),
            action: Some("command".into()),
            max_bans_per_minute: Some(-1),
            stream_maxlen: Some(5),
            event_format: Some("json".into()),
            ..Default::default()
        })
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "fleet.redis",
                "fleet.role",
                "fleet.node",
                "fleet.prefix",
                "fleet.action",
                "fleet.max_bans_per_minute",
                "fleet.stream_maxlen",
                "fleet.event_format"
            ]
        );
        assert!(errors[1].1.contains("`leader` is not a role"), "{errors:?}");

        let errors = compiled(RawFleet {
            role: Some("agent".into()),
            shared_windows: Some(true),
            tls_ca_file: Some("/nonexistent.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].0, "fleet.shared_windows");
        assert!(errors[1].1.contains("rediss://"), "{errors:?}");
    }

    #[test]
    fn passwords_are_hidden() {
        let c = compiled(RawFleet {
            redis: Some("redis://sink:s3cret@10.0.0.1:6379/0".into()),
            role: Some("sink".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.redis_shown(), "redis://sink:***@10.0.0.1:6379/0");
        // Also in the error for a URL that does not parse.
        let errors = compiled(RawFleet {
            redis: Some("redis://sink:ab/cd@10.0.0.1:x/0".into()),
            role: Some("sink".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].0, "fleet.redis", "{errors:?}");
        assert!(!errors[0].1.contains("ab/cd"), "{errors:?}");
        assert!(
            errors[0].1.contains("redis://sink:***@10.0.0.1:x/0"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_a_config_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let errors = compiled(RawFleet {
            redis: Some("rediss://127.0.0.1:6380/0".into()),
            role: Some("agent".into()),
            tls_ca_file: Some(ca.display().to_string()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].0, "fleet.tls_ca_file", "{errors:?}");
        assert!(errors[0].1.contains("ca.pem"), "{errors:?}");
        assert!(errors[0].1.contains("no PEM certificate"), "{errors:?}");
    }
}
