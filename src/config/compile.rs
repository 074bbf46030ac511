//! Raw TOML values into checked, ready-to-run settings. Every error is collected, so one run of
//! `jailsink check` shows them all.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::filter_file::{read_filter, FilterFileContents, FilterFileError};
use super::raw::{
    RawAction, RawActionTable, RawActions, RawConfig, RawDuration, RawJail, RawJailSettings,
    RawPort, RawPorts,
};
use super::{ConfigError, ConfigErrors};
use crate::action::{ActionKind, ActionSpec, BlockType, CommandSpec, FirewallSpec, Protocol};
use crate::filter::{Filter, FilterSource, JailFilter};
pub use crate::jail::settings::{Detection, Increment, JailSettings, JailSpec};
use crate::parse::Zone;

/// The whole compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Listeners and their limits.
    pub server: ServerConfig,
    /// Where /metrics is served; None turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// Also export jail series under the fail2ban exporter's names (`f2b_*`).
    pub fail2ban_exporter_names: bool,
    /// The bearer token `/bans` needs; None serves the feed to anyone who reaches the listener.
    pub bans_token: Option<String>,
    /// The control socket's path.
    pub control_socket: PathBuf,
    /// The group (gid) allowed on the control socket besides root.
    pub control_group: Option<u32>,
    /// The state database's path.
    pub state_path: PathBuf,
    /// Days of ban history kept (`[state] history_days`, default 90; 0 keeps it forever).
    pub history_days: u32,
    /// Enabled jails, in name order.
    pub jails: Vec<JailConfig>,
    /// `[fleet]`, when this host is part of one.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

/// `[server]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// UDP listen addresses.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub tls: Vec<SocketAddr>,
    /// The TLS identity, read from its files; set whenever `tls` is not empty.
    pub tls_server: Option<super::tls::TlsServer>,
    /// Handshakes not finished this long after connecting are closed.
    pub tls_handshake_timeout: Duration,
    /// Unix datagram socket paths.
    pub unix: Vec<PathBuf>,
    /// Permission bits of the Unix sockets.
    pub unix_mode: u32,
    /// Group (gid) of the Unix sockets.
    pub unix_group: Option<u32>,
    /// Senders whose messages are accepted.
    pub allowed_senders: Vec<IpNetwork>,
    /// Largest message, in bytes.
    pub max_message_bytes: usize,
    /// Patterns see at most this many bytes of a message: matching cost stays bounded whatever
    /// a sender writes. The default is the message limit, because a cut line cannot match an
    /// anchored pattern and a long user name would otherwise hide an attacker.
    pub max_match_bytes: usize,
    /// Kernel receive buffer of each UDP socket: room for bursts while the receivers are busy
    /// (forced past net.core.rmem_max when jailsink has CAP_NET_ADMIN).
    pub udp_receive_buffer: usize,
    /// Most TCP connections at once.
    pub max_tcp_connections: usize,
    /// Most TCP connections one sender address holds at once, so that one host (a flood, a
    /// client stuck reconnecting) cannot take every slot from the others.
    pub max_tcp_connections_per_sender: usize,
    /// Idle TCP connections are closed after this.
    pub tcp_idle_timeout: Duration,
    /// Zone of RFC 3164 timestamps.
    pub zone: Zone,
}

/// One jail, checked.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The jail's name, `[jails.NAME]`.
    pub name: String,
    /// Program names that feed it; empty means all.
    pub programs: Vec<String>,
    /// Host names that feed it; empty means all.
    pub hosts: Vec<String>,
    /// Where the filter came from, for `check` output.
    pub filter_origin: String,
    /// The compiled filter (native or fail2ban).
    pub filter: JailFilter,
    /// Counting and banning settings.
    pub settings: JailSettings,
    /// What a ban does; each runs.
    pub actions: Vec<ActionSpec>,
}

impl JailConfig {
    /// What the jail task needs of this jail: its name, numbers and actions, plus a description
    /// of what feeds it, so a reload can say the jail was updated.
    pub(crate) fn spec(&self) -> JailSpec {
        JailSpec {
            name: self.name.clone(),
            settings: self.settings.clone(),
            actions: self.actions.clone(),
            feed: format!(
                "filter={} programs={:?} hosts={:?}",
                self.filter_origin, self.programs, self.hosts
            ),
            // The daemon sets it at start and at each reload; a config never says it.
            state_unread: false,
        }
    }
}

/// Collects errors for one file.
struct Errors<'a> {
    file: &'a Path,
    list: &'a mut Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        let error = ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        };
        // A `[defaults]` value every jail inherits is one error, not one per jail.
        if !self.list.contains(&error) {
            self.list.push(error);
        }
    }

    /// Keeps the value, or records the error (its text is the reason) and returns None.
    fn take<T, E: Display>(&mut self, key: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|reason| self.push(key, reason.to_string()))
            .ok()
    }
}

/// Why a value is refused; [`Errors::take`] adds the file and key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum BadValue {
    /// Not `address:port`.
    #[error("`{0}` is not an address:port such as 127.0.0.1:5514 or [::1]:5514")]
    SocketAddr(String),
    /// Not an address or CIDR network.
    #[error("`{text}` is not an address or CIDR network: {reason}")]
    Network {
        /// The value as written.
        text: String,
        /// What ipnetwork says.
        reason: ipnetwork::IpNetworkError,
    },
    /// A number outside its range.
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange {
        /// The value.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// In range, but not representable in the setting's type.
    #[error("{0} does not fit")]
    DoesNotFit(i64),
    /// Negative seconds other than -1.
    #[error("{0} is negative (use -1 for permanent)")]
    NegativeSeconds(i64),
    /// Text that is not a duration.
    #[error("`{text}` is not a duration like 10m or 1h 30m: {reason}")]
    Duration {
        /// The value as written (trimmed).
        text: String,
        /// What humantime says.
        reason: humantime::DurationError,
    },
    /// Longer than a century ([`crate::duration::LONGEST`]).
    #[error("`{0}` is longer than 100 years (write permanent for one that never ends)")]
    TooLong(String),
    /// "permanent" where only a finite duration makes sense.
    #[error("must be finite")]
    Infinite,
    /// Zero (or permanent) where only a positive duration makes sense.
    #[error("must be a positive duration")]
    NotPositive,
    /// A command timeout outside 1ms..=10m.
    #[error("must be a duration from 1ms to 10m")]
    Timeout,
    /// `[control] group` or `[server] unix_group` names no group.
    #[error("no group `{0}` in /etc/group")]
    NoGroup(String),
    /// Not octal permission bits.
    #[error("`{0}` is not octal permission bits such as 0666 or 0660")]
    Mode(String),
}

/// Why a port list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadPort {
    /// `a:b` where a or b is not a port, or a > b.
    #[error("`{0}` is not a port range like 1000:2000")]
    Range(String),
    /// Neither a number nor a name in /etc/services.
    #[error("`{0}` is not a port number or a service name in /etc/services")]
    Unknown(String),
    /// More than iptables' multiport takes.
    #[error("at most 15 ports or ranges (iptables multiport)")]
    TooMany,
}

/// Compiles `raw`, read from `path`.
pub(crate) fn compile(path: &Path, raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut list = Vec::new();
    let mut errors = Errors {
        file: path,
        list: &mut list,
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let server = compile_server(&raw, &base, &mut errors);
    let metrics_listen = match raw.metrics.listen.as_deref() {
        Some("") => None,
        other => errors.take(
            "metrics.listen",
            socket_addr(other.unwrap_or("127.0.0.1:9540")),
        ),
    };
    let control_socket = PathBuf::from(
        raw.control
            .socket
            .as_deref()
            .unwrap_or("/run/jailsink/jailsink.sock"),
    );
    let control_group = match raw.control.group.as_deref() {
        // `group = ""` is SPEC's spelling of "no group".
        None | Some("") => None,
        Some(name) => errors.take(
            "control.group",
            group_id(name).ok_or_else(|| BadValue::NoGroup(name.to_string())),
        ),
    };
    let state_path = PathBuf::from(
        raw.state
            .path
            .as_deref()
            .unwrap_or("/var/lib/jailsink/state.db"),
    );
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let own = own_addresses(&raw.defaults, &raw.jails);
    let mut jails = Vec::new();
    for (name, jail) in &raw.jails {
        if jail.enabled == Some(false) {
            continue;
        }
        if let Some(j) = compile_jail(name, jail, &raw.defaults, &base, &own, &mut errors) {
            jails.push(j);
        }
    }
    shared_kernel_objects(&jails, &mut errors);
    let fleet = raw.fleet.as_ref().and_then(|f| {
        let default_ignore = vec!["127.0.0.0/8".to_string(), "::1".to_string()];
        // What agents spare for jails not run here: the addresses and networks, and the names
        // and files, which the fleet keeps current as a jail's watcher does. Their errors are
        // the jails' to report (each merges the defaults), unless there is no jail.
        let mut found = Vec::new();
        let defaults_key = |k: &str| format!("defaults.{k}");
        let (mut ignore, names) = super::detection::ignore_entries(
            "defaults.ignoreip",
            raw.defaults.ignoreip.as_ref().unwrap_or(&default_ignore),
            &mut found,
        );
        let (files, refresh) =
            super::detection::allow_files(&raw.defaults, &defaults_key, &base, &mut found);
        if !jails.is_empty() {
            found.clear();
        }
        if raw.defaults.ignoreself.unwrap_or(true) {
            ignore.extend(host_addresses());
        }
        let fleet = crate::fleet::config::compile(f, ignore, &mut found).map(|fleet| {
            crate::fleet::FleetConfig {
                ignore_names: names,
                ignore_files: files,
                ignore_refresh: refresh.unwrap_or(fleet.ignore_refresh),
                ..fleet
            }
        });
        for (key, reason) in found {
            errors.push(key, reason);
        }
        fleet
    });
    if let Some(fleet) = &fleet {
        fleet_kernel_names(&jails, fleet.role, &mut errors);
    }
    if !list.is_empty() {
        return Err(ConfigErrors(list));
    }
    Ok(Config {
        path: path.to_path_buf(),
        server: server.expect("server settings are complete when no error was recorded"),
        metrics_listen,
        fail2ban_exporter_names: raw.metrics.fail2ban_exporter_names.unwrap_or(false),
        bans_token: raw.metrics.bans_token.filter(|t| !t.is_empty()),
        control_socket,
        control_group,
        state_path,
        history_days: raw.state.history_days.unwrap_or(DEFAULT_HISTORY_DAYS),
        jails,
        fleet,
    })
}

/// Days of ban history kept unless `[state] history_days` says otherwise.
const DEFAULT_HISTORY_DAYS: u32 = 90;

fn compile_server(raw: &RawConfig, base: &Path, errors: &mut Errors) -> Option<ServerConfig> {
    let s = &raw.server;
    let loopback = || vec!["127.0.0.1:5514".to_string()];
    let addrs = |errors: &mut Errors, key: &str, list: Option<&Vec<String>>| -> Vec<SocketAddr> {
        let list = list.cloned().unwrap_or_else(loopback);
        list.iter()
            .enumerate()
            .filter_map(|(i, a)| errors.take(&format!("{key}[{i}]"), socket_addr(a)))
            .collect()
    };
    let udp = addrs(errors, "server.udp", s.udp.as_ref());
    let tcp = addrs(errors, "server.tcp", s.tcp.as_ref());
    let tls = addrs(
        errors,
        "server.tls",
        Some(s.tls.as_ref().unwrap_or(&Vec::new())),
    );
    let tls_server = compile_tls(s, base, !tls.is_empty(), errors);
    let tls_handshake_timeout = errors.take(
        "server.tls_handshake_timeout",
        duration(s.tls_handshake_timeout.as_ref(), "10s").and_then(positive_finite),
    );
    let unix = s
        .unix
        .iter()
        .flatten()
        .map(|p| base.join(p))
        .collect::<Vec<_>>();
    let unix_mode = errors.take(
        "server.unix_mode",
        unix_mode(s.unix_mode.as_deref().unwrap_or("0666")),
    );
    let unix_group = match s.unix_group.as_deref() {
        None => None,
        Some(name) => errors.take(
            "server.unix_group",
            group_id(name).ok_or_else(|| BadValue::NoGroup(name.to_string())),
        ),
    };
    let default_senders = vec!["127.0.0.1/32".to_string(), "::1/128".to_string()];
    let allowed_senders = networks(
        errors,
        "server.allowed_senders",
        s.allowed_senders.as_ref().unwrap_or(&default_senders),
    );
    let max_message_bytes = errors.take(
        "server.max_message_bytes",
        in_range(s.max_message_bytes.unwrap_or(65536), 480, 16 << 20),
    );
    let max_match_bytes = errors.take(
        "server.max_match_bytes",
        in_range(s.max_match_bytes.unwrap_or(65536), 64, 16 << 20),
    );
    let udp_receive_buffer = errors.take(
        "server.udp_receive_buffer",
        in_range(s.udp_receive_buffer.unwrap_or(32 << 20), 64 << 10, 1 << 30),
    );
    let max_tcp_connections = errors.take(
        "server.max_tcp_connections",
        in_range(s.max_tcp_connections.unwrap_or(1024), 1, 1 << 20),
    );
    let max_tcp_connections_per_sender = errors.take(
        "server.max_tcp_connections_per_sender",
        in_range(s.max_tcp_connections_per_sender.unwrap_or(64), 1, 1 << 20),
    );
    let tcp_idle_timeout = errors.take(
        "server.tcp_idle_timeout",
        duration(s.tcp_idle_timeout.as_ref(), "10m").and_then(positive_finite),
    );
    let zone = errors.take(
        "server.timezone",
        Zone::parse(s.timezone.as_deref().unwrap_or("UTC")),
    );
    Some(ServerConfig {
        udp,
        tcp,
        tls,
        tls_server: tls_server?,
        tls_handshake_timeout: tls_handshake_timeout?,
        unix,
        unix_mode: unix_mode?,
        unix_group,
        allowed_senders,
        max_message_bytes: max_message_bytes?,
        max_match_bytes: max_match_bytes?,
        udp_receive_buffer: udp_receive_buffer?,
        max_tcp_connections: max_tcp_connections?,
        max_tcp_connections_per_sender: max_tcp_connections_per_sender?,
        tcp_idle_timeout: tcp_idle_timeout?,
        zone: zone?,
    })
}

/// The TLS identity: required (and read) when `tls` has an address; files without a listener
/// are still read, so `check` finds a bad file before the listener is turned on. Outer None:
/// an error was recorded.
fn compile_tls(
    s: &crate::config::raw::RawServer,
    base: &Path,
    listening: bool,
    errors: &mut Errors,
) -> Option<Option<super::tls::TlsServer>> {
    let (cert, key) = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if s.tls_client_ca.is_none() && !listening => return Some(None),
        (cert, key) => {
            for (name, missing) in [
                ("server.tls_cert", cert.is_none()),
                ("server.tls_key", key.is_none()),
            ] {
                if missing && listening {
                    errors.push(name, "required by server.tls");
                } else if missing {
                    errors.push(name, "tls_cert, tls_key (and tls_client_ca) go together");
                }
            }
            return None;
        }
    };
    let files = super::tls::TlsFiles {
        cert: base.join(cert),
        key: base.join(key),
        client_ca: s.tls_client_ca.as_ref().map(|ca| base.join(ca)),
    };
    match super::tls::load(&files) {
        Ok(server) => Some(Some(server)),
        Err(error) => {
            errors.push(error.key, error.to_string());
            None
        }
    }
}

/// Octal permission bits such as "0666" or "660"; only the rwx bits of user, group, other.
fn unix_mode(text: &str) -> Result<u32, BadValue> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| BadValue::Mode(text.to_string()))
}

fn compile_jail(
    name: &str,
    jail: &RawJail,
    defaults: &RawJailSettings,
    base: &Path,
    own: &[IpNetwork],
    errors: &mut Errors,
) -> Option<JailConfig> {
    // A value the jail inherits is wrong in `[defaults]`: named there (once, see Errors::push).
    let key = |k: &str| {
        if jail.inherits(defaults, k) {
            format!("defaults.{k}")
        } else {
            format!("jails.{name}.{k}")
        }
    };
    if !valid_jail_name(name) {
        errors.push(
            format!("jails.{name}"),
            "a jail name is 1 to 19 letters, digits, '-' or '_', starting with a letter (it names firewall objects)",
        );
        return None;
    }
    let merged = jail.settings_over(defaults);
    let bantime = errors.take(&key("bantime"), duration(merged.bantime.as_ref(), "10m"));
    let findtime = errors.take(
        &key("findtime"),
        duration(merged.findtime.as_ref(), "10m").and_then(|d| match d {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(BadValue::NotPositive),
        }),
    );
    let maxretry = errors.take(
        &key("maxretry"),
        in_range(merged.maxretry.unwrap_or(5), 1, 1_000_000),
    );
    let max_tracked = errors.take(
        &key("max_tracked"),
        in_range(merged.max_tracked.unwrap_or(100_000), 1, 100_000_000),
    );
    let ipv4_prefix = errors.take(
        &key("ipv4_prefix"),
        in_range(merged.ipv4_prefix.unwrap_or(32), 8, 32),
    );
    let max_bans_per_minute = errors.take(
        &key("max_bans_per_minute"),
        in_range::<u32>(merged.max_bans_per_minute.unwrap_or(1000), 0, 1_000_000)
            .map(|n| (n > 0).then_some(n)),
    );
    let ipv6_prefix = errors.take(
        &key("ipv6_prefix"),
        in_range(merged.ipv6_prefix.unwrap_or(128), 16, 128),
    );
    let default_ignore = vec!["127.0.0.0/8".to_string(), "::1".to_string()];
    let mut found = Vec::new();
    let (mut ignore, names) = super::detection::ignore_entries(
        &key("ignoreip"),
        merged.ignoreip.as_ref().unwrap_or(&default_ignore),
        &mut found,
    );
    if merged.ignoreself.unwrap_or(true) {
        ignore.extend_from_slice(own);
    }
    let detection = super::detection::compile(
        &merged,
        &key,
        base,
        names,
        (ipv4_prefix, ipv6_prefix),
        &mut found,
    );
    for (k, reason) in found {
        errors.push(k, reason);
    }
    let increment = compile_increment(&merged, &key("bantime_increment"), errors);
    let dirs = super::filter_dirs(merged.filter_dirs.as_deref(), base);
    let filter = compile_filter(name, jail, &dirs, base, errors);
    let ports = match &jail.port {
        None => Ok(Vec::new()),
        Some(p) => ports(p),
    };
    let ports = errors.take(&key("port"), ports);
    let protocol = errors.take(
        &key("protocol"),
        Protocol::parse(jail.protocol.as_deref().unwrap_or("tcp")),
    );
    let jail_firewall = JailFirewall {
        ports: ports.as_deref(),
        protocol,
        v4_networks: ipv4_prefix.is_some_and(|p: u8| p < 32),
        v6_networks: ipv6_prefix.is_some_and(|p: u8| p < 128),
        keep_on_stop: merged.keep_on_stop.unwrap_or(false),
    };
    let actions = compile_actions(
        name,
        merged.action.as_ref(),
        &jail_firewall,
        &key("action"),
        errors,
    );
    let (filter_origin, filter) = filter?;
    Some(JailConfig {
        name: name.to_string(),
        programs: jail.programs.clone().unwrap_or_default(),
        hosts: jail.hosts.clone().unwrap_or_default(),
        filter_origin,
        filter,
        settings: JailSettings {
            bantime: bantime?,
            findtime: findtime?,
            maxretry: maxretry?,
            ignore,
            max_tracked: max_tracked?,
            ipv4_prefix: ipv4_prefix?,
            ipv6_prefix: ipv6_prefix?,
            max_bans_per_minute: max_bans_per_minute?,
            increment: increment?,
            detection,
        },
        actions: actions?,
    })
}

fn compile_increment(
    merged: &RawJailSettings,
    key: &str,
    errors: &mut Errors,
) -> Option<Increment> {
    let raw = merged.bantime_increment.clone().unwrap_or_default();
    let factor = raw.factor.unwrap_or(2.0);
    if !(1.0..=1000.0).contains(&factor) {
        errors.push(format!("{key}.factor"), "must be between 1 and 1000");
        return None;
    }
    let maxtime = errors.take(
        &format!("{key}.maxtime"),
        duration(raw.maxtime.as_ref(), "1w"),
    )?;
    let rndtime = errors.take(
        &format!("{key}.rndtime"),
        duration(raw.rndtime.as_ref(), "0s"),
    )?;
    Some(Increment {
        enabled: raw.enabled.unwrap_or(false),
        factor,
        maxtime: maxtime.unwrap_or(Duration::MAX),
        rndtime: rndtime.unwrap_or_default(),
    })
}

/// The jail's filter: its named/path filter file plus its own failregex/ignoreregex keys; or a
/// fail2ban `.conf` filter with its `filter_options`.
fn compile_filter(
    name: &str,
    jail: &RawJail,
    dirs: &[PathBuf],
    base: &Path,
    errors: &mut Errors,
) -> Option<(String, JailFilter)> {
    let mut source = FilterSource::default();
    let mut origin = format!("jails.{name}");
    let mut file = errors.file.to_path_buf();
    let mut key_prefix = format!("jails.{name}.");
    let wanted = jail
        .filter
        .clone()
        .or_else(|| jail.failregex.is_none().then(|| name.to_string()));
    if wanted.is_none() && jail.filter_options.is_some() {
        errors.push(
            format!("jails.{name}.filter_options"),
            "filter_options needs a filter file (`filter = \"sshd\"`)",
        );
        return None;
    }
    if let Some(wanted) = wanted {
        match read_filter(&wanted, dirs, base, jail.filter_options.as_ref()) {
            Err(FilterFileError::Toml(ConfigErrors(list))) => {
                errors.list.extend(list);
                return None;
            }
            Err(e @ FilterFileError::BadOption { .. }) => {
                errors.push(format!("jails.{name}.filter_options"), e.to_string());
                return None;
            }
            Err(e) => {
                errors.push(format!("jails.{name}.filter"), e.to_string());
                return None;
            }
            Ok(FilterFileContents::Fail2ban {
                path,
                origin,
                filter,
            }) => {
                // The jail's own failregex/ignoreregex keys would mix two regex dialects.
                if jail.failregex.is_some()
                    || jail.ignoreregex.is_some()
                    || jail.successregex.is_some()
                {
                    errors.push(
                        format!("jails.{name}.failregex"),
                        format!(
                            "{} is a fail2ban filter; add patterns in a .local file beside it, not in the jail",
                            path.display()
                        ),
                    );
                    return None;
                }
                return Some((origin, JailFilter::Fail2ban(Arc::new(filter))));
            }
            Ok(FilterFileContents::Native { path, source: read }) => {
                source = read;
                origin = path.display().to_string();
                file = path;
                key_prefix = String::new();
            }
        }
    }
    let own_start = source.failregex.len();
    let own_ignore_start = source.ignoreregex.len();
    let own_success_start = source.successregex.len();
    source
        .failregex
        .extend(jail.failregex.clone().unwrap_or_default());
    source
        .successregex
        .extend(jail.successregex.clone().unwrap_or_default());
    source
        .ignoreregex
        .extend(jail.ignoreregex.clone().unwrap_or_default());
    match Filter::compile(&source) {
        Ok(f) => Some((origin, JailFilter::Native(Arc::new(f)))),
        Err(list) => {
            for e in list {
                // Patterns from the jail's own keys are reported against the config file.
                let (index, list_name) = parse_index(&e.key);
                let start = match list_name {
                    "failregex" => own_start,
                    "ignoreregex" => own_ignore_start,
                    "successregex" => own_success_start,
                    _ => usize::MAX,
                };
                let jail_owned = index.is_some_and(|i| i >= start);
                let (efile, key) = if jail_owned {
                    let i = index.unwrap_or(0) - start;
                    (
                        errors.file.to_path_buf(),
                        format!("jails.{name}.{list_name}[{i}]"),
                    )
                } else {
                    (file.clone(), format!("{key_prefix}{}", e.key))
                };
                errors.list.push(ConfigError {
                    file: efile,
                    key,
                    reason: e.reason.to_string(),
                });
            }
            None
        }
    }
}

fn parse_index(key: &str) -> (Option<usize>, &str) {
    match key.split_once('[') {
        Some((list, rest)) => (rest.trim_end_matches(']').parse().ok(), list),
        None => (None, key),
    }
}

/// What a jail gives each of its firewall actions.
struct JailFirewall<'a> {
    ports: Option<&'a [String]>,
    protocol: Option<Protocol>,
    v4_networks: bool,
    v6_networks: bool,
    keep_on_stop: bool,
}

/// Keys each action type takes besides `type`.
const NFTABLES_KEYS: &[&str] = &[
    "name",
    "port",
    "protocol",
    "blocktype",
    "keep_on_stop",
    "hooks",
];
const IPTABLES_KEYS: &[&str] = &[
    "name",
    "port",
    "protocol",
    "blocktype",
    "keep_on_stop",
    "chains",
];
const COMMAND_KEYS: &[&str] = &[
    "port", "protocol", "start", "stop", "ban", "unban", "timeout",
];

fn compile_actions(
    jail: &str,
    raw: Option<&RawActions>,
    firewall: &JailFirewall,
    key: &str,
    errors: &mut Errors,
) -> Option<Vec<ActionSpec>> {
    let default = RawActions::One(RawAction::Type(ActionKind::Iptables.name().into()));
    let list: Vec<&RawAction> = match raw.unwrap_or(&default) {
        RawActions::One(a) => vec![a],
        RawActions::Many(v) => v.iter().collect(),
    };
    // A bad jail port or protocol is reported already; the actions are still checked (with
    // stand-ins), so that `check` prints their errors in the same run.
    let mut ok = firewall.ports.is_some() && firewall.protocol.is_some();
    let (ports, protocol) = (
        firewall.ports.unwrap_or_default(),
        firewall.protocol.unwrap_or(Protocol::Tcp),
    );
    let mut out = Vec::new();
    for (i, action) in list.into_iter().enumerate() {
        let key = if matches!(raw, Some(RawActions::Many(_))) {
            format!("{key}[{i}]")
        } else {
            key.to_string()
        };
        let (name, table) = match action {
            RawAction::Type(t) => (t.as_str(), None),
            RawAction::Table(t) => (t.kind.as_str(), Some(&**t)),
        };
        let Some(kind) = ActionKind::parse(name) else {
            let known: Vec<&str> = ActionKind::ALL.iter().map(|k| k.name()).collect();
            errors.push(
                key,
                format!("unknown action type `{name}` (known: {})", known.join(", ")),
            );
            ok = false;
            continue;
        };
        let allowed: &[&str] = match kind {
            ActionKind::Nftables => NFTABLES_KEYS,
            ActionKind::Iptables | ActionKind::Ipset => IPTABLES_KEYS,
            ActionKind::Command => COMMAND_KEYS,
            ActionKind::Log => &[],
        };
        if let Some(t) = table {
            let keys: Vec<String> = t
                .unknown
                .keys()
                .cloned()
                .chain(set_keys(t).map(String::from))
                .collect();
            for k in keys {
                if !allowed.contains(&k.as_str()) {
                    let known = if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    };
                    errors.push(
                        format!("{key}.{k}"),
                        format!("unknown key `{k}` for a {kind} action (known: type, {known})"),
                    );
                    ok = false;
                }
            }
        }
        let ports = match table.and_then(|t| t.port.as_ref()) {
            Some(p) => errors.take(&format!("{key}.port"), self::ports(p)),
            None => Some(ports.to_vec()),
        };
        let protocol = match table.and_then(|t| t.protocol.as_deref()) {
            Some(p) => errors.take(&format!("{key}.protocol"), Protocol::parse(p)),
            None => Some(protocol),
        };
        let (Some(ports), Some(protocol)) = (ports, protocol) else {
            ok = false;
            continue;
        };
        let spec = match kind {
            ActionKind::Log => Some(ActionSpec::Log),
            ActionKind::Command => {
                compile_command(table, ports, protocol, &key, errors).map(ActionSpec::Command)
            }
            ActionKind::Iptables => {
                compile_firewall(jail, table, ports, protocol, firewall, &key, errors)
                    .map(ActionSpec::Iptables)
            }
            ActionKind::Nftables => {
                compile_firewall(jail, table, ports, protocol, firewall, &key, errors)
                    .map(ActionSpec::Nftables)
            }
            ActionKind::Ipset => {
                compile_firewall(jail, table, ports, protocol, firewall, &key, errors)
                    .map(ActionSpec::Ipset)
            }
        };
        match spec {
            Some(spec) => out.push(spec),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Two firewall actions of one type with the same name would share kernel objects (a chain,
/// sets): each one's start would lift the other's bans as not its own, and its stop remove what
/// the other still uses. Each pair is an error naming both jails.
fn shared_kernel_objects(jails: &[JailConfig], errors: &mut Errors) {
    let mut owners: std::collections::HashMap<(ActionKind, &str), &str> =
        std::collections::HashMap::new();
    for jail in jails {
        for action in &jail.actions {
            let Some(spec) = action.firewall() else {
                continue;
            };
            let kind = action.kind();
            match owners.entry((kind, spec.name.as_str())) {
                std::collections::hash_map::Entry::Vacant(free) => {
                    free.insert(&jail.name);
                }
                std::collections::hash_map::Entry::Occupied(taken) => errors.push(
                    format!("jails.{}.action", jail.name),
                    format!(
                        "its {} action is named `{}`, as an action of jails.{} is: they would share kernel objects; give one of them another `name`",
                        kind.name(),
                        spec.name,
                        taken.get()
                    ),
                ),
            }
        }
    }
}

/// Fleet bans live in kernel objects named `f-` and the first 17 characters of the deciding
/// jail's name ([`crate::fleet::follow::kernel_name`]). On a node that follows the fleet, a
/// local action named `f-...` would share them; on a sink, two jails whose names agree in those
/// 17 characters would share them on every follower.
fn fleet_kernel_names(jails: &[JailConfig], role: crate::fleet::config::Role, errors: &mut Errors) {
    let mut fleet_names: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for jail in jails {
        if role.follows() {
            for action in &jail.actions {
                if let Some(spec) = action.firewall().filter(|f| f.name.starts_with("f-")) {
                    errors.push(
                        format!("jails.{}.action", jail.name),
                        format!("its {} action is named `{}`: names starting with `f-` are the fleet's bans' on this node; give it another `name` (or rename the jail)", action.kind().name(), spec.name),
                    );
                }
            }
        }
        if role.publishes() {
            let shared = crate::fleet::follow::kernel_name(&jail.name);
            if let Some(first) = fleet_names.insert(shared.clone(), &jail.name) {
                errors.push(
                    format!("jails.{}", jail.name),
                    format!("its fleet bans would use jails.{first}'s kernel objects (`{shared}`) on every agent: jail names of a sink must differ within their first 17 characters"),
                );
            }
        }
    }
}

/// An iptables, nftables or ipset action: its kernel object name, ports and verdict.
fn compile_firewall(
    jail: &str,
    table: Option<&RawActionTable>,
    ports: Vec<String>,
    protocol: Protocol,
    firewall: &JailFirewall,
    key: &str,
    errors: &mut Errors,
) -> Option<FirewallSpec> {
    let name = table
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| jail.to_string());
    let blocktype = errors.take(
        &format!("{key}.blocktype"),
        BlockType::parse(table.and_then(|t| t.blocktype.as_deref()).unwrap_or("DROP")),
    );
    let hooks = compile_hooks(table, key, errors)?;
    let named = valid_jail_name(&name);
    if !named {
        errors.push(
            format!("{key}.name"),
            "1 to 19 letters, digits, '-' or '_', starting with a letter",
        );
    }
    Some(FirewallSpec {
        name,
        ports,
        protocol,
        blocktype: blocktype.filter(|_| named)?,
        keep_on_stop: table
            .and_then(|t| t.keep_on_stop)
            .unwrap_or(firewall.keep_on_stop),
        v4_networks: firewall.v4_networks,
        v6_networks: firewall.v6_networks,
        hooks,
    })
}

/// nftables `hooks` (`input`, `forward`) or iptables/ipset `chains` (`INPUT`, `FORWARD`, or a
/// user chain such as `DOCKER-USER`, created at start if missing); which one the table may set
/// is checked with the other keys.
fn compile_hooks(
    table: Option<&RawActionTable>,
    key: &str,
    errors: &mut Errors,
) -> Option<Vec<String>> {
    if let Some(hooks) = table.and_then(|t| t.hooks.as_ref()) {
        let bad: Vec<&String> = hooks
            .iter()
            .filter(|h| !matches!(h.as_str(), "input" | "forward"))
            .collect();
        if !bad.is_empty() || hooks.is_empty() {
            errors.push(
                format!("{key}.hooks"),
                format!("{bad:?}: the hooks are \"input\" and \"forward\" (at least one)"),
            );
            return None;
        }
        return Some(hooks.clone());
    }
    if let Some(chains) = table.and_then(|t| t.chains.as_ref()) {
        let bad: Vec<&String> = chains
            .iter()
            .filter(|c| {
                c.is_empty()
                    || c.len() > 28
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
                    || matches!(c.as_str(), "OUTPUT" | "PREROUTING" | "POSTROUTING")
            })
            .collect();
        if !bad.is_empty() || chains.is_empty() {
            errors.push(
                format!("{key}.chains"),
                format!("{bad:?}: chains are INPUT, FORWARD or a chain name of up to 28 letters, digits, '-' or '_' (at least one)"),
            );
            return None;
        }
        return Some(chains.clone());
    }
    Some(Vec::new())
}

/// The typed keys an action table set, so a key of the wrong action type is reported.
fn set_keys(t: &RawActionTable) -> impl Iterator<Item = &'static str> + '_ {
    [
        ("name", t.name.is_some()),
        ("port", t.port.is_some()),
        ("protocol", t.protocol.is_some()),
        ("blocktype", t.blocktype.is_some()),
        ("keep_on_stop", t.keep_on_stop.is_some()),
        ("hooks", t.hooks.is_some()),
        ("chains", t.chains.is_some()),
        ("start", t.start.is_some()),
        ("stop", t.stop.is_some()),
        ("ban", t.ban.is_some()),
        ("unban", t.unban.is_some()),
        ("timeout", t.timeout.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
}

/// `{ type = "command", ban = [...], ... }`: ban is required, every template needs a program.
fn compile_command(
    table: Option<&RawActionTable>,
    ports: Vec<String>,
    protocol: Protocol,
    key: &str,
    errors: &mut Errors,
) -> Option<CommandSpec> {
    let Some(t) = table else {
        errors.push(
            key,
            "a command action is a table: { type = \"command\", ban = [\"prog\", \"<ip>\"] }",
        );
        return None;
    };
    let mut ok = true;
    let mut template = |name: &str, value: &Option<Vec<String>>, required: bool| {
        let argv = value.clone().unwrap_or_default();
        if argv.first().is_some_and(|p| p.trim().is_empty()) || (required && argv.is_empty()) {
            errors.push(
                format!("{key}.{name}"),
                "an argv list whose first item is the program, e.g. [\"/usr/local/bin/block\", \"<ip>\"]",
            );
            ok = false;
        }
        argv
    };
    let spec = CommandSpec {
        start: template("start", &t.start, false),
        stop: template("stop", &t.stop, false),
        ban: template("ban", &t.ban, true),
        unban: template("unban", &t.unban, false),
        timeout: Duration::ZERO,
        ports,
        protocol,
    };
    let timeout = errors.take(
        &format!("{key}.timeout"),
        duration(t.timeout.as_ref(), "10s").and_then(|d| match d {
            Some(d) if !d.is_zero() && d <= Duration::from_secs(600) => Ok(d),
            _ => Err(BadValue::Timeout),
        }),
    );
    match (ok, timeout) {
        (true, Some(timeout)) => Some(CommandSpec { timeout, ..spec }),
        _ => None,
    }
}

/// Kernel names: iptables chains `jailsink-<name>` take 28 characters, ipset sets
/// `jailsink-<name>-v6` 31, and nft names must start with a letter.
pub(crate) fn valid_jail_name(name: &str) -> bool {
    (1..=19).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Looks a group name up in /etc/group, for `[control] group`.
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

fn socket_addr(text: &str) -> Result<SocketAddr, BadValue> {
    text.parse()
        .map_err(|_| BadValue::SocketAddr(text.to_string()))
}

fn networks(errors: &mut Errors, key: &str, list: &[String]) -> Vec<IpNetwork> {
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| {
            errors.take(
                &format!("{key}[{i}]"),
                text.parse::<IpNetwork>()
                    .map_err(|reason| BadValue::Network {
                        text: text.clone(),
                        reason,
                    }),
            )
        })
        .collect()
}

pub(super) fn in_range<T: TryFrom<i64>>(value: i64, min: i64, max: i64) -> Result<T, BadValue> {
    if value < min || value > max {
        return Err(BadValue::OutOfRange { value, min, max });
    }
    T::try_from(value).map_err(|_| BadValue::DoesNotFit(value))
}

/// A timeout: finite, and above zero (a zero one would fail every handshake, or close every
/// connection the moment it has nothing to read).
fn positive_finite(d: Option<Duration>) -> Result<Duration, BadValue> {
    match d {
        None => Err(BadValue::Infinite),
        Some(d) if d.is_zero() => Err(BadValue::NotPositive),
        Some(d) => Ok(d),
    }
}

/// A duration, with `default` when absent; `Ok(None)` means permanent ("-1", "permanent").
pub(super) fn duration(
    raw: Option<&RawDuration>,
    default: &str,
) -> Result<Option<Duration>, BadValue> {
    match raw {
        None => duration(Some(&RawDuration::Text(default.into())), default),
        Some(RawDuration::Seconds(-1)) => Ok(None),
        Some(RawDuration::Seconds(s)) if *s >= 0 => {
            crate::duration::at_most_longest(Duration::from_secs(*s as u64))
                .map(Some)
                .map_err(|_| BadValue::TooLong(s.to_string()))
        }
        Some(RawDuration::Seconds(s)) => Err(BadValue::NegativeSeconds(*s)),
        Some(RawDuration::Text(t)) => duration_text(t),
    }
}

/// A duration written as text (see [`crate::duration::parse`]).
fn duration_text(text: &str) -> Result<Option<Duration>, BadValue> {
    crate::duration::parse(text).map_err(|refused| match refused {
        crate::duration::DurationError::Words(reason) => BadValue::Duration {
            text: text.trim().to_string(),
            reason,
        },
        crate::duration::DurationError::TooLong => BadValue::TooLong(text.trim().to_string()),
    })
}

/// Port names resolved through /etc/services so a typo fails at `check`, not at ban time.
fn ports(raw: &RawPorts) -> Result<Vec<String>, BadPort> {
    let items: Vec<RawPort> = match raw {
        RawPorts::One(p) => vec![p.clone()],
        RawPorts::Many(v) => v.clone(),
    };
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    let mut out = Vec::new();
    for item in items {
        let texts: Vec<String> = match item {
            RawPort::Number(n) => vec![n.to_string()],
            RawPort::Name(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        };
        for text in texts {
            out.push(resolve_port(&text, &services)?);
        }
    }
    if out.len() > 15 {
        return Err(BadPort::TooMany);
    }
    Ok(out)
}

/// One port, `a:b` range or /etc/services name (given as `services`' text) as a number or range.
pub(crate) fn resolve_port(text: &str, services: &str) -> Result<String, BadPort> {
    let number = |t: &str| t.parse::<u16>().ok().filter(|&p| p > 0);
    if let Some((a, b)) = text.split_once(':') {
        return match (number(a), number(b)) {
            (Some(a), Some(b)) if a <= b => Ok(format!("{a}:{b}")),
            _ => Err(BadPort::Range(text.to_string())),
        };
    }
    if let Some(p) = number(text) {
        return Ok(p.to_string());
    }
    services
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let (port, _) = words.next()?.split_once('/')?;
            (name == text || words.any(|alias| alias == text)).then(|| port.to_string())
        })
        .ok_or_else(|| BadPort::Unknown(text.to_string()))
}

/// This host's addresses, only looked up when some jail wants ignoreself.
fn own_addresses(
    defaults: &RawJailSettings,
    jails: &std::collections::BTreeMap<String, RawJail>,
) -> Vec<IpNetwork> {
    let wanted = jails
        .values()
        .any(|j| j.settings_over(defaults).ignoreself.unwrap_or(true));
    if !wanted {
        return Vec::new();
    }
    host_addresses()
}

/// This host's addresses, loopback included.
fn host_addresses() -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| IpNetwork::from(i.ip()))
        .collect();
    for ip in ["127.0.0.1", "::1"] {
        let ip: IpAddr = ip.parse().expect("literal address");
        out.push(IpNetwork::from(ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bad_session_ttl_names_the_filter_file_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let filter = write(
            dir.path(),
            "filter.d/sess.toml",
            "failregex = ['^bad <HOST>$']\nsession_ttl = \"soon\"\n",
        );
        let path = write(
            dir.path(),
            "jailsink.toml",
            "[jails.a]\nprograms = [\"x\"]\nfilter = \"sess\"\n",
        );
        let errors = crate::config::load(&path).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, filter);
        assert_eq!(errors[0].key, "session_ttl");
        assert!(errors[0].reason.contains("soon"), "{errors:?}");
    }

    #[test]
    fn check_names_a_defaults_value_once_and_an_actions_error_beside_a_bad_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "jailsink.toml",
            "[defaults]\nbantime = \"soon\"\n[jails.a]\nprograms = [\"x\"]\nfailregex = ['^bad <HOST>$']\n[jails.b]\nprograms = [\"y\"]\nfailregex = ['^bad <HOST>$']\n[jails.c]\nprograms = [\"z\"]\nfailregex = ['^bad <HOST>$']\nbantime = \"later\"\nport = \"no-such-service\"\naction = \"ufw\"\n",
        );
        let errors = crate::config::load(&path).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "defaults.bantime",
                "jails.c.bantime",
                "jails.c.port",
                "jails.c.action"
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn names_that_would_share_the_fleets_kernel_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jails = r#"
[jails.f-local]
programs = ["x"]
failregex = ['^bad <HOST>$']
[jails.abcdefghijklmnopq1]
programs = ["y"]
failregex = ['^bad <HOST>$']
[jails.abcdefghijklmnopq2]
programs = ["z"]
failregex = ['^bad <HOST>$']
"#;
        let keys = |role: &str| -> Vec<String> {
            let text = format!("[fleet]\nrole = \"{role}\"\nnode = \"n1\"\n{jails}");
            let path = write(dir.path(), "jailsink.toml", &text);
            match crate::config::load(&path) {
                Ok(_) => Vec::new(),
                Err(e) => e.0.iter().map(|e| e.key.clone()).collect(),
            }
        };
        assert_eq!(
            keys("both"),
            ["jails.abcdefghijklmnopq2", "jails.f-local.action"]
        );
        assert_eq!(keys("agent"), ["jails.f-local.action"]);
        assert_eq!(keys("sink"), ["jails.abcdefghijklmnopq2"]);
    }

    #[test]
    fn firewall_actions_that_would_share_kernel_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "jailsink.toml",
            r#"
[jails.smtp]
programs = ["postfix"]
failregex = ['^bad <HOST>$']
action = { type = "iptables", name = "SMTP" }
[jails.submission]
programs = ["postfix"]
failregex = ['^worse <HOST>$']
action = { type = "iptables", name = "SMTP" }
[jails.twice]
programs = ["x"]
failregex = ['^bad <HOST>$']
action = ["iptables", "iptables"]
[jails.kinds]
programs = ["y"]
failregex = ['^bad <HOST>$']
action = [{ type = "iptables", name = "Both" }, { type = "nftables", name = "Both" }]
"#,
        );
        let errors = crate::config::load(&path).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        // Jails are compiled in name order: the second of each pair is named, with the first.
        assert_eq!(
            keys,
            ["jails.submission.action", "jails.twice.action"],
            "{errors:?}"
        );
        assert!(errors[0].reason.contains("jails.smtp"), "{errors:?}");
        assert!(errors[0].reason.contains("`SMTP`"), "{errors:?}");
        assert!(errors[1].reason.contains("jails.twice"), "{errors:?}");
    }

    #[test]
    fn every_error_names_file_key_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "filter.d/bad.toml", "failregex = ['no host']\n");
        let path = write(
            dir.path(),
            "jailsink.toml",
            r#"
[server]
udp = ["nonsense"]
max_message_bytes = 10
[jails.a]
programs = ["x"]
filter = "bad"
maxretry = 0
[jails.b]
failregex = ['(<HOST>']
bantime = "ten minutes"
action = "nftablez"
"#,
        );
        let errors = crate::config::load(&path).unwrap_err().0;
        let seen: Vec<(String, String)> = errors
            .iter()
            .map(|e| {
                (
                    e.file.file_name().unwrap().to_string_lossy().into_owned(),
                    e.key.clone(),
                )
            })
            .collect();
        let want = [
            ("jailsink.toml", "server.udp[0]"),
            ("jailsink.toml", "server.max_message_bytes"),
            ("jailsink.toml", "jails.a.maxretry"),
            ("bad.toml", "failregex[0]"),
            ("jailsink.toml", "jails.b.bantime"),
            ("jailsink.toml", "jails.b.failregex[0]"),
            ("jailsink.toml", "jails.b.action"),
        ];
        for (file, key) in want {
            assert!(
                seen.contains(&(file.to_string(), key.to_string())),
                "missing {file} {key} in {seen:?}"
            );
        }
        assert_eq!(seen.len(), want.len(), "{seen:?}");
    }

    #[test]
    fn hooks_and_chains_belong_to_their_backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "j.toml",
            r#"
[jails.a]
failregex = ['<HOST>']
action = [{ type = "iptables", hooks = ["forward"] }, { type = "nftables", hooks = ["prerouting"] }, { type = "ipset", chains = ["OUTPUT"] }]
"#,
        );
        let errors = crate::config::load(&path).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.iter().any(|k| k.ends_with("[0].hooks")), "{errors:?}");
        assert!(keys.iter().any(|k| k.ends_with("[1].hooks")), "{errors:?}");
        assert!(keys.iter().any(|k| k.ends_with("[2].chains")), "{errors:?}");
        let path = write(
            dir.path(),
            "ok.toml",
            r#"
[jails.a]
failregex = ['<HOST>']
action = [{ type = "nftables", hooks = ["input", "forward"] }, { type = "iptables", chains = ["INPUT", "DOCKER-USER"] }]
"#,
        );
        let config = crate::config::load(&path).unwrap();
        let ActionSpec::Iptables(spec) = &config.jails[0].actions[1] else {
            panic!()
        };
        assert_eq!(spec.hooks, ["INPUT", "DOCKER-USER"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "j.toml", "[jails.sshd]\nmaxretyr = 3\n");
        let errors = crate::config::load(&path).unwrap_err().0;
        assert_eq!(errors[0].key, "jails.sshd.maxretyr");
        assert!(
            errors[0].reason.contains("maxretyr"),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn action_tables_name_their_unknown_keys_and_compile_each_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "j.toml",
            r#"
[defaults]
filter_dirs = []
ignoreself = false
keep_on_stop = true
[jails.a]
failregex = ['<HOST>']
action = [{ type = "nftables", blocktyp = "DROP" }, { type = "command", ban = ["true"], blocktype = "DROP" }]
[jails.b]
failregex = ['<HOST>']
port = [22, "1000:2000"]
ipv6_prefix = 64
action = ["ipset", { type = "nftables", keep_on_stop = false }, { type = "command", ban = ["sh", "-c", "echo <ip>"], timeout = "2s" }]
"#,
        );
        let errors = crate::config::load(&path).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["jails.a.action[0].blocktyp", "jails.a.action[1].blocktype"],
            "{errors:?}"
        );
        std::fs::write(
            &path,
            std::fs::read_to_string(&path)
                .unwrap()
                .replace("[jails.a]", "[jails.a]\nenabled = false"),
        )
        .unwrap();
        let config = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let b = &config.jails[0].actions;
        let ActionSpec::Ipset(ipset) = &b[0] else {
            panic!("{b:?}")
        };
        assert!(ipset.keep_on_stop && ipset.v6_networks && !ipset.v4_networks);
        assert_eq!(ipset.ports, ["22", "1000:2000"]);
        let ActionSpec::Nftables(nft) = &b[1] else {
            panic!("{b:?}")
        };
        assert!(!nft.keep_on_stop, "the action's key wins over the jail's");
        let ActionSpec::Command(command) = &b[2] else {
            panic!("{b:?}")
        };
        assert_eq!(command.ban, ["sh", "-c", "echo <ip>"]);
        assert_eq!(command.timeout, Duration::from_secs(2));
    }

    #[test]
    fn durations_ports_and_defaults() {
        assert_eq!(duration(None, "10m"), Ok(Some(Duration::from_secs(600))));
        assert_eq!(duration(Some(&RawDuration::Seconds(-1)), "10m"), Ok(None));
        assert_eq!(
            duration(Some(&RawDuration::Text("permanent".into())), "10m"),
            Ok(None)
        );
        assert_eq!(
            duration(Some(&RawDuration::Text("1h 30m".into())), "10m"),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            positive_finite(Some(Duration::ZERO)),
            Err(BadValue::NotPositive)
        );
        assert_eq!(positive_finite(None), Err(BadValue::Infinite));
        assert_eq!(
            positive_finite(Some(Duration::from_secs(1))),
            Ok(Duration::from_secs(1))
        );
        // Past a century end times overflow clocks: refused, whichever way it is written.
        assert_eq!(
            duration(Some(&RawDuration::Seconds(i64::MAX)), "10m"),
            Err(BadValue::TooLong(i64::MAX.to_string()))
        );
        assert_eq!(
            duration(Some(&RawDuration::Text(" 1000y ".into())), "10m"),
            Err(BadValue::TooLong("1000y".into()))
        );
        let services = "ssh\t\t22/tcp\nsmtp\t\t25/tcp\t\tmail\n";
        assert_eq!(resolve_port("ssh", services), Ok("22".into()));
        assert_eq!(resolve_port("mail", services), Ok("25".into()));
        assert_eq!(resolve_port("1000:2000", services), Ok("1000:2000".into()));
        assert!(resolve_port("nope", services).is_err());
    }

    #[test]
    fn an_empty_control_group_is_no_group_and_a_missing_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let load = |group: &str| {
            let text =
                format!("[control]\ngroup = \"{group}\"\n[jails.a]\nfailregex = ['from <HOST>']\n");
            crate::config::load(&write(dir.path(), "jailsink.toml", &text))
        };
        assert_eq!(load("").unwrap().control_group, None);
        assert_eq!(load("root").unwrap().control_group, Some(0));
        let errors = load("no-such-group-here").unwrap_err().to_string();
        assert!(errors.contains("control.group"), "{errors}");
    }

    #[test]
    fn shipped_config_compiles() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/jailsink.toml");
        let config = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> = config.jails.iter().map(|j| j.name.as_str()).collect();
        assert!(
            names.contains(&"sshd") && names.contains(&"smtp-auth"),
            "{names:?}"
        );
        let smtp = config.jails.iter().find(|j| j.name == "smtp-auth").unwrap();
        assert_eq!(smtp.settings.maxretry, 3);
        assert_eq!(
            smtp.actions,
            [ActionSpec::Iptables(FirewallSpec {
                name: "SMTP".into(),
                ports: vec!["25".into()],
                protocol: Protocol::Tcp,
                blocktype: BlockType::Drop,
                keep_on_stop: false,
                v4_networks: false,
                v6_networks: false,
                hooks: Vec::new(),
            })]
        );
        // SPEC's smtp-auth pattern catches both message variants of the captured sendmail line.
        let plain = "s07EriLI028424: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: Password verification failed, relay=[203.0.113.9]";
        let login = "s07EriLI028425: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, relay=mx.example [203.0.113.9] (may be forged)";
        for line in [plain, login] {
            let JailFilter::Native(filter) = &smtp.filter else {
                panic!("smtp-auth has a native filter")
            };
            let crate::filter::Verdict::Failure(m) = filter.check(line) else {
                panic!("{line}")
            };
            assert_eq!(m.ip.to_string(), "203.0.113.9");
        }
    }
}
