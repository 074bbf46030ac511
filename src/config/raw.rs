//! The configuration exactly as written in TOML: serde types with unknown keys rejected.
//!
//! Nothing here is validated beyond types; [`super::compile`] turns these into checked values
//! and reports every problem at once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole `jailsink.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listeners and their limits.
    #[serde(default)]
    pub server: RawServer,
    /// The metrics endpoint.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// The control socket.
    #[serde(default)]
    pub control: RawControl,
    /// Persistent state.
    #[serde(default)]
    pub state: RawState,
    /// Values every jail inherits.
    #[serde(default)]
    pub defaults: RawJailSettings,
    /// Jails by name.
    #[serde(default)]
    pub jails: BTreeMap<String, RawJail>,
    /// Fleet mode on Redis (absent: this host works alone).
    pub fleet: Option<crate::fleet::config::RawFleet>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// UDP listen addresses.
    pub udp: Option<Vec<String>>,
    /// TCP listen addresses.
    pub tcp: Option<Vec<String>>,
    /// Syslog over TLS (RFC 5425) listen addresses.
    pub tls: Option<Vec<String>>,
    /// PEM certificate chain of the TLS listener.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// PEM CA certificates: only clients with a certificate one of them signed are served.
    pub tls_client_ca: Option<String>,
    /// A TLS client that has not finished its handshake this long after connecting is closed.
    pub tls_handshake_timeout: Option<RawDuration>,
    /// Unix datagram socket paths, for local senders (`logger -u`, journald).
    pub unix: Option<Vec<String>>,
    /// Permission bits of the Unix sockets, in octal ("0666").
    pub unix_mode: Option<String>,
    /// Group the Unix sockets are given.
    pub unix_group: Option<String>,
    /// CIDRs whose messages are accepted.
    pub allowed_senders: Option<Vec<String>>,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: Option<i64>,
    /// Patterns see at most this many bytes of a message.
    pub max_match_bytes: Option<i64>,
    /// Kernel receive buffer of each UDP socket, in bytes.
    pub udp_receive_buffer: Option<i64>,
    /// Most TCP connections open at once.
    pub max_tcp_connections: Option<i64>,
    /// Most TCP connections one sender address may hold open at once.
    pub max_tcp_connections_per_sender: Option<i64>,
    /// A TCP connection idle this long is closed.
    pub tcp_idle_timeout: Option<RawDuration>,
    /// Zone for RFC 3164 timestamps, which carry none.
    pub timezone: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address of the /metrics responder; an empty string turns it off.
    pub listen: Option<String>,
    /// Also export jail series under the fail2ban Prometheus exporter's names (`f2b_*`), so
    /// dashboards made for fail2ban keep working.
    pub fail2ban_exporter_names: Option<bool>,
    /// When set, `GET /bans` and `/bans.json` need `Authorization: Bearer <token>`.
    pub bans_token: Option<String>,
}

/// `[control]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// Path of the control socket.
    pub socket: Option<String>,
    /// A group whose members may use the socket too (mode 0660).
    pub group: Option<String>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Path of the SQLite state database.
    pub path: Option<String>,
    /// Days of ban history (with its evidence) kept; 0 keeps it forever.
    pub history_days: Option<u32>,
}

/// `bantime_increment = { ... }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncrement {
    /// Turns escalation on.
    pub enabled: Option<bool>,
    /// Multiplier per repeat ban.
    pub factor: Option<f64>,
    /// Cap on an escalated ban.
    pub maxtime: Option<RawDuration>,
    /// Random jitter added to each ban.
    pub rndtime: Option<RawDuration>,
}

/// `spray = { maxaddresses = 10, findtime = "1h" }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpray {
    /// Distinct addresses failing as one user that ban them all.
    pub maxaddresses: Option<i64>,
    /// The window they must fall in.
    pub findtime: Option<RawDuration>,
}

/// `prefix_escalation = { ipv4 = 24, ipv6 = 64, after = 3 }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    /// IPv4 network size.
    pub ipv4: Option<i64>,
    /// IPv6 network size.
    pub ipv6: Option<i64>,
    /// Banned addresses of one network that ban the network.
    pub after: Option<i64>,
}

/// Defines the keys a jail shares with `[defaults]` once: the `[defaults]` struct, the jail
/// struct (its own keys, then the shared ones) and the overlay of a jail on the defaults.
/// The shared keys are written out in both structs rather than flattened in, because serde's
/// flatten cannot be combined with deny_unknown_fields, and an unknown key must stay an error.
macro_rules! jail_keys {
    (
        shared { $( $(#[$smeta:meta])* $shared:ident : $sty:ty, )* }
        jail_only { $( $(#[$jmeta:meta])* $own:ident : $jty:ty, )* }
    ) => {
        /// Settings a jail may set and `[defaults]` may give to all.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawJailSettings {
            $( $(#[$smeta])* pub $shared: Option<$sty>, )*
        }

        /// One `[jails.NAME]`: its own keys, then every key `[defaults]` may set.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawJail {
            $( $(#[$jmeta])* pub $own: Option<$jty>, )*
            $( $(#[$smeta])* pub $shared: Option<$sty>, )*
        }

        impl RawJail {
            /// The jail's own settings laid over `defaults`: a key set in the jail wins.
            pub(crate) fn settings_over(&self, defaults: &RawJailSettings) -> RawJailSettings {
                RawJailSettings {
                    $( $shared: self.$shared.clone().or_else(|| defaults.$shared.clone()), )*
                }
            }

            /// Whether `key` (a shared key) comes from `defaults`, the jail not setting it: an
            /// error in its value is then `defaults.KEY`'s, not the jail's.
            pub(crate) fn inherits(&self, defaults: &RawJailSettings, key: &str) -> bool {
                $( if key == stringify!($shared) {
                    return self.$shared.is_none() && defaults.$shared.is_some();
                } )*
                false
            }
        }
    };
}

jail_keys! {
    shared {
        /// How long a ban lasts ("10m"; "-1" or "permanent" for ever).
        bantime: RawDuration,
        /// The window in which failures count.
        findtime: RawDuration,
        /// Failures inside findtime that trigger a ban.
        maxretry: i64,
        /// Addresses and networks never banned.
        ignoreip: Vec<String>,
        /// Never ban this host's own addresses.
        ignoreself: bool,
        /// What a ban does.
        action: RawActions,
        /// Where filters are looked up by name.
        filter_dirs: Vec<String>,
        /// Repeat offenders get longer bans.
        bantime_increment: RawIncrement,
        /// Most addresses tracked at once (oldest evicted first).
        max_tracked: i64,
        /// Prefix length IPv4 failures are counted and banned by.
        ipv4_prefix: i64,
        /// Prefix length IPv6 failures are counted and banned by.
        ipv6_prefix: i64,
        /// Ban storm guard (0 turns it off).
        max_bans_per_minute: i64,
        /// Leave set-based bans in the kernel at stop (their timeouts lift them).
        keep_on_stop: bool,
        /// Password spraying: one user failing from many addresses.
        spray: RawSpray,
        /// Banned neighbours ban their network.
        prefix_escalation: RawEscalation,
        /// Files of addresses, networks and names never banned, re-read when they change.
        ignoreip_files: Vec<String>,
        /// How often DNS names of the allowlist are resolved again.
        ignore_refresh: RawDuration,
    }
    jail_only {
        /// `enabled = false` keeps a jail in the file without running it.
        enabled: bool,
        /// Syslog program names that feed the jail.
        programs: Vec<String>,
        /// Syslog host names that feed the jail (all when absent).
        hosts: Vec<String>,
        /// Filter name or path.
        filter: String,
        /// Options of a fail2ban `.conf` filter (`{ mode = "aggressive" }`), as fail2ban's
        /// `filter = sshd[mode=aggressive]`.
        filter_options: BTreeMap<String, String>,
        /// Patterns added to the filter's.
        failregex: Vec<String>,
        /// Patterns added to the filter's ignoreregex.
        ignoreregex: Vec<String>,
        /// Patterns added to the filter's successregex (a login forgives the address).
        successregex: Vec<String>,
        /// Ports the firewall actions guard.
        port: RawPorts,
        /// tcp, udp or all.
        protocol: String,
    }
}

/// `port = "ssh"` or `port = ["smtp", 465, "submission"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawPorts {
    /// One port name or number, or a comma list.
    One(RawPort),
    /// Several.
    Many(Vec<RawPort>),
}

/// A port by name or number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    /// A number.
    Number(i64),
    /// A name from /etc/services, a number as text, or a range "1000:2000".
    Name(String),
}

/// `action = "iptables"`, `action = { type = ... }` or a list of those.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawActions {
    /// One action.
    One(RawAction),
    /// Several, each run.
    Many(Vec<RawAction>),
}

/// One action by type name, or a table with overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawAction {
    /// Just the type.
    Type(String),
    /// The type and keys overriding the jail's.
    Table(Box<RawActionTable>),
}

/// `{ type = "iptables", name = "SMTP", port = "smtp", protocol = "tcp", blocktype = "REJECT" }`,
/// or `{ type = "command", ban = [...], unban = [...], timeout = "10s" }`.
///
/// Unknown keys land in `unknown` rather than failing deserialization: inside the untagged
/// [`RawAction`] serde would only say "did not match any variant", and an operator needs the
/// key's name, which compile reports with the file.
#[derive(Debug, Clone, Deserialize)]
pub struct RawActionTable {
    /// Which backend.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name used for kernel objects (defaults to the jail's).
    pub name: Option<String>,
    /// Ports, overriding the jail's.
    pub port: Option<RawPorts>,
    /// Protocol, overriding the jail's.
    pub protocol: Option<String>,
    /// DROP or REJECT.
    pub blocktype: Option<String>,
    /// Leave set-based bans in the kernel at stop, overriding the jail's.
    pub keep_on_stop: Option<bool>,
    /// nftables: the hooks that match bans (`input`, `forward`).
    pub hooks: Option<Vec<String>>,
    /// iptables and ipset: the chains that match bans (`INPUT`, `FORWARD`, `DOCKER-USER`).
    pub chains: Option<Vec<String>>,
    /// command: argv template run at start.
    pub start: Option<Vec<String>>,
    /// command: argv template run at stop.
    pub stop: Option<Vec<String>>,
    /// command: argv template run per ban.
    pub ban: Option<Vec<String>>,
    /// command: argv template run per unban.
    pub unban: Option<Vec<String>>,
    /// command: a run still going after this is killed.
    pub timeout: Option<RawDuration>,
    /// Every other key: each is reported as an error.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// A filter file, `filter.d/NAME.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// What the filter catches, for people.
    pub description: Option<String>,
    /// Optional pattern every message must match first; `<F-CONTENT>` marks what failregex sees.
    pub prefregex: Option<String>,
    /// Failure patterns, each with `<HOST>`.
    #[serde(default)]
    pub failregex: Vec<String>,
    /// Patterns that veto a failure.
    #[serde(default)]
    pub ignoreregex: Vec<String>,
    /// Patterns of a successful login: a match forgives the address's failures in the jail.
    #[serde(default)]
    pub successregex: Vec<String>,
    /// Failures counted only when the sender's connection ends without a success.
    #[serde(default)]
    pub pendingregex: Vec<String>,
    /// Second reports of one attempt, absorbed by the connection's next failure.
    #[serde(default)]
    pub echoregex: Vec<String>,
    /// How long a connection's held failures wait (default 5m).
    pub session_ttl: Option<RawDuration>,
    /// The mode used when a jail names none (`normal` when absent).
    pub mode: Option<String>,
    /// Named modes, each adding failregex patterns to the filter's own (`normal` adds none).
    #[serde(default)]
    pub modes: BTreeMap<String, RawFilterMode>,
}

/// `[modes.NAME]` of a filter file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilterMode {
    /// What the mode adds, for people.
    pub description: Option<String>,
    /// Patterns added to the filter's failregex in this mode.
    #[serde(default)]
    pub failregex: Vec<String>,
}

/// A duration as "10m" / "1h 30m" / "permanent", or a number of seconds as fail2ban writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds; -1 means permanent where a bantime is meant.
    Seconds(i64),
    /// humantime text.
    Text(String),
}
