//! Every metric jailsink exports, defined once with its help text, and the /metrics responder.
//!
//! Code elsewhere never names a metric: it asks this module for a handle once (per listener,
//! per jail) and increments the handle on the hot path, which avoids a registry lookup per
//! message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use metrics::{
    describe_counter, describe_gauge, describe_histogram, Counter, CounterFn, Gauge, GaugeFn,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod http;
mod process;

pub(crate) use http::{serve, Answering, Get, Route};
pub(crate) use process::ProcessSample;

const MESSAGES_RECEIVED: &str = "jailsink_messages_received_total";
const MESSAGES_DROPPED: &str = "jailsink_messages_dropped_total";
const FAILURES: &str = "jailsink_failures_total";
const BANS: &str = "jailsink_bans_total";
const UNBANS: &str = "jailsink_unbans_total";
const BANNED: &str = "jailsink_banned";
const TRACKED: &str = "jailsink_tracked_addresses";
const TRACKED_EVICTED: &str = "jailsink_tracked_evicted_total";
const ACTION_ERRORS: &str = "jailsink_action_errors_total";
const UDP_KERNEL_DROPS: &str = "jailsink_udp_kernel_drops_total";
const TCP_CONNECTIONS: &str = "jailsink_tcp_connections";
const BAN_LATENCY: &str = "jailsink_ban_latency_seconds";
const BUILD_INFO: &str = "jailsink_build_info";
const STATE_ERRORS: &str = "jailsink_state_errors_total";
const BANS_WITHHELD: &str = "jailsink_bans_withheld_total";
const BAN_STORM: &str = "jailsink_ban_storm";
const FLEET_CONNECTED: &str = "jailsink_fleet_connected";
const FLEET_PUBLISHED: &str = "jailsink_fleet_events_published_total";
const FLEET_APPLIED: &str = "jailsink_fleet_events_applied_total";
const FLEET_OUTBOX: &str = "jailsink_fleet_outbox_events";
const FLEET_PROPAGATION: &str = "jailsink_fleet_propagation_seconds";
const FLEET_WITHHELD: &str = "jailsink_fleet_bans_withheld_total";
const FLEET_ERRORS: &str = "jailsink_fleet_errors_total";

// The names of the widely used fail2ban Prometheus exporter, exported as well with
// `[metrics] fail2ban_exporter_names = true` so existing fail2ban dashboards keep working.
const F2B_BANNED_CURRENT: &str = "f2b_jail_banned_current";
const F2B_BANNED_TOTAL: &str = "f2b_jail_banned_total";
const F2B_FAILED_CURRENT: &str = "f2b_jail_failed_current";
const F2B_FAILED_TOTAL: &str = "f2b_jail_failed_total";
const F2B_UP: &str = "f2b_up";

/// Whether jail series are also exported under the fail2ban exporter's names; set once by
/// [`install`] before any jail takes its handles.
static FAIL2BAN_NAMES: AtomicBool = AtomicBool::new(false);

/// Buckets for ban latency: a log action answers in microseconds, a firewall in milliseconds.
const BAN_LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for fleet propagation: milliseconds normally, up to minutes when an agent lags, so
/// that a p99 past the alert's 5 s is seen (histogram_quantile never answers above the highest
/// finite bucket: with ban latency's buckets, topping at 5 s, JailsinkFleetLagging could never
/// fire).
const FLEET_PROPAGATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 300.0,
];

/// Why a message was dropped before it reached a jail; the `reason` label of the drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The sender's address is outside `allowed_senders`.
    SenderNotAllowed,
    /// The datagram or frame exceeded `max_message_bytes`.
    TooLarge,
    /// The frame held nothing a syslog parser could use.
    Unparseable,
    /// A failure the jails' queue did not take. UDP now waits for room as TCP does, so this
    /// counts only failures lost because the queue was gone (the jail task stopped); the label
    /// keeps SPEC.md's name.
    QueueFull,
    /// A TCP connection was refused because `max_tcp_connections` were open.
    ConnectionLimit,
    /// A TLS connection closed before its handshake finished: plain TCP to the TLS port, a
    /// client without an acceptable certificate, or no handshake within the timeout; or an open
    /// one whose client certificate a reload's new `tls_client_ca` no longer accepts.
    TlsHandshake,
}

impl DropReason {
    /// Every reason, so each series exists from start-up.
    pub(crate) const ALL: [DropReason; 6] = [
        DropReason::SenderNotAllowed,
        DropReason::TooLarge,
        DropReason::Unparseable,
        DropReason::QueueFull,
        DropReason::ConnectionLimit,
        DropReason::TlsHandshake,
    ];

    /// The label value, as SPEC.md names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::SenderNotAllowed => "sender_not_allowed",
            DropReason::TooLarge => "too_large",
            DropReason::Unparseable => "unparseable",
            DropReason::QueueFull => "queue_full",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::TlsHandshake => "tls_handshake",
        }
    }
}

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The histogram buckets were refused.
    #[error("{0}")]
    Buckets(metrics_exporter_prometheus::BuildError),
    /// A global recorder is already installed.
    #[error("{0}")]
    Installed(metrics::SetRecorderError<metrics_exporter_prometheus::PrometheusRecorder>),
}

/// Installs the global recorder and describes every metric; call once before any handle is taken.
/// With `fail2ban_exporter_names`, jail series are also exported under the fail2ban exporter's
/// names (read at start only: jails started later by a reload follow the same choice).
/// Returns the handle that renders the text exposition.
pub(crate) fn install(fail2ban_exporter_names: bool) -> Result<PrometheusHandle, MetricsError> {
    FAIL2BAN_NAMES.store(fail2ban_exporter_names, Ordering::Relaxed);
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BAN_LATENCY.to_string()), BAN_LATENCY_BUCKETS)
        .map_err(MetricsError::Buckets)?
        .set_buckets_for_metric(
            Matcher::Full(FLEET_PROPAGATION.to_string()),
            FLEET_PROPAGATION_BUCKETS,
        )
        .map_err(MetricsError::Buckets)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(MetricsError::Installed)?;
    describe_all();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for transport in ["udp", "tcp", "tls", "unix"] {
        messages_received(transport).absolute(0);
    }
    for reason in DropReason::ALL {
        messages_dropped(reason).absolute(0);
    }
    tcp_connections().set(0.0);
    udp_kernel_drops().absolute(0);
    state_errors().absolute(0);
    if fail2ban_exporter_names {
        describe_fail2ban_names();
        // The daemon answering a scrape is the daemon being up: there is no separate server.
        metrics::gauge!(F2B_UP).set(1.0);
    }
    Ok(handle)
}

fn describe_fail2ban_names() {
    describe_gauge!(
        F2B_BANNED_CURRENT,
        "Addresses banned now, by jail (fail2ban exporter name of jailsink_banned)."
    );
    describe_counter!(
        F2B_BANNED_TOTAL,
        "Bans issued, by jail (fail2ban exporter name of jailsink_bans_total)."
    );
    describe_gauge!(
        F2B_FAILED_CURRENT,
        "Addresses with failures inside findtime, by jail (fail2ban exporter name of jailsink_tracked_addresses)."
    );
    describe_counter!(
        F2B_FAILED_TOTAL,
        "Failures matched, by jail (fail2ban exporter name of jailsink_failures_total)."
    );
    describe_gauge!(
        F2B_UP,
        "Always 1 while jailsink answers (fail2ban exporter compatibility)."
    );
}

/// A counter that feeds two series: the jailsink name and its fail2ban exporter alias.
struct BothCounters(Counter, Counter);

impl CounterFn for BothCounters {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

/// A gauge that feeds two series, as [`BothCounters`].
struct BothGauges(Gauge, Gauge);

impl GaugeFn for BothGauges {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

/// `counter`, also feeding the fail2ban exporter's `alias` when those names are on.
fn with_alias_counter(counter: Counter, alias: &'static str, jail: &str) -> Counter {
    if !FAIL2BAN_NAMES.load(Ordering::Relaxed) {
        return counter;
    }
    let other = metrics::counter!(alias, "jail" => jail.to_string());
    Counter::from_arc(Arc::new(BothCounters(counter, other)))
}

/// Counts a committed ban in `jailsink_bans_total` (and its fail2ban alias): the counter
/// moves with the `[jail] Ban` line, so a ban a dashboard has counted survives a crash.
pub(crate) fn ban_committed(jail: &str) {
    with_alias_counter(
        metrics::counter!(BANS, "jail" => jail.to_string()),
        F2B_BANNED_TOTAL,
        jail,
    )
    .increment(1);
}

/// `gauge`, also feeding the fail2ban exporter's `alias` when those names are on.
fn with_alias_gauge(gauge: Gauge, alias: &'static str, jail: &str) -> Gauge {
    if !FAIL2BAN_NAMES.load(Ordering::Relaxed) {
        return gauge;
    }
    let other = metrics::gauge!(alias, "jail" => jail.to_string());
    Gauge::from_arc(Arc::new(BothGauges(gauge, other)))
}

fn describe_all() {
    describe_counter!(MESSAGES_RECEIVED, "Syslog messages received, by transport.");
    describe_counter!(
        MESSAGES_DROPPED,
        "Messages dropped before matching, by reason."
    );
    describe_counter!(
        UDP_KERNEL_DROPS,
        "Datagrams the kernel dropped before jailsink read them (UDP receive buffer full; SO_RXQ_OVFL)."
    );
    describe_counter!(FAILURES, "Authentication failures matched, by jail.");
    describe_counter!(BANS, "Bans issued, by jail.");
    describe_counter!(UNBANS, "Bans lifted, by jail.");
    describe_gauge!(BANNED, "Addresses banned now, by jail.");
    describe_gauge!(TRACKED, "Addresses with failures inside findtime, by jail.");
    describe_counter!(
        TRACKED_EVICTED,
        "Tracked addresses evicted because max_tracked was reached, by jail."
    );
    describe_counter!(
        ACTION_ERRORS,
        "Actions that failed to apply a ban or an unban, by jail and action."
    );
    describe_gauge!(
        TCP_CONNECTIONS,
        "Open syslog TCP connections, TLS ones included."
    );
    describe_gauge!(
        FLEET_CONNECTED,
        "1 while this part of the node (label component: publisher, windows, follower) is connected to the fleet's Redis."
    );
    describe_counter!(
        FLEET_PUBLISHED,
        "Fleet events this sink wrote to Redis, by op (ban, unban)."
    );
    describe_counter!(
        FLEET_APPLIED,
        "Fleet events this agent applied to its firewall, by op and origin node."
    );
    describe_gauge!(
        FLEET_OUTBOX,
        "Committed fleet events waiting in the local outbox for Redis."
    );
    describe_histogram!(
        FLEET_PROPAGATION,
        Unit::Seconds,
        "Time from a ban decided at a sink to the ban applied at this agent."
    );
    describe_counter!(
        FLEET_WITHHELD,
        "Fleet bans this agent withheld because their origin exceeded max_bans_per_minute."
    );
    describe_counter!(
        FLEET_ERRORS,
        "Fleet problems by kind: malformed (entry refused), redis (command or connection), allowlisted (ban refused by ignoreip), action, origins (an origin past the ones tracked one by one)."
    );
    describe_histogram!(
        BAN_LATENCY,
        Unit::Seconds,
        "From receipt of the message that decided a ban to the action's completion, by jail."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which jailsink runs."
    );
    describe_counter!(
        STATE_ERRORS,
        "Failed reads or writes of the state database (bans go on in memory)."
    );
    describe_counter!(
        BANS_WITHHELD,
        "Bans the storm guard withheld because max_bans_per_minute was reached, by jail."
    );
    describe_gauge!(
        BAN_STORM,
        "1 while a jail's ban storm guard withholds bans, else 0."
    );
}

/// Counter of messages received on one transport ("udp" or "tcp").
pub(crate) fn messages_received(transport: &'static str) -> Counter {
    metrics::counter!(MESSAGES_RECEIVED, "transport" => transport)
}

/// Counter of messages dropped for one reason.
pub(crate) fn messages_dropped(reason: DropReason) -> Counter {
    metrics::counter!(MESSAGES_DROPPED, "reason" => reason.as_str())
}

/// Counter of datagrams the kernel dropped on a full UDP receive buffer (all UDP sockets).
pub(crate) fn udp_kernel_drops() -> Counter {
    metrics::counter!(UDP_KERNEL_DROPS)
}

/// Counter of state database failures.
pub(crate) fn state_errors() -> Counter {
    metrics::counter!(STATE_ERRORS)
}

/// Gauge of open TCP connections.
pub(crate) fn tcp_connections() -> Gauge {
    metrics::gauge!(TCP_CONNECTIONS)
}

/// The per-jail series, taken once when a jail starts so every series exists from start-up.
#[derive(Clone)]
pub struct JailMetrics {
    /// Failures matched for this jail.
    pub failures: Counter,
    /// Bans issued.
    pub bans: Counter,
    /// Bans lifted.
    pub unbans: Counter,
    /// Addresses banned now.
    pub banned: Gauge,
    /// Addresses tracked inside findtime.
    pub tracked: Gauge,
    /// Tracked addresses evicted at the cap.
    pub evicted: Counter,
    /// Receipt-to-applied latency of bans.
    pub ban_latency: Histogram,
    /// Bans the storm guard withheld.
    pub withheld: Counter,
    /// 1 while the storm guard withholds bans.
    pub storm: Gauge,
}

impl JailMetrics {
    /// Registers (at zero) and returns the series of one jail.
    pub fn new(jail: &str) -> Self {
        let name = jail;
        let jail = jail.to_string();
        let m = JailMetrics {
            failures: with_alias_counter(
                metrics::counter!(FAILURES, "jail" => jail.clone()),
                F2B_FAILED_TOTAL,
                name,
            ),
            bans: with_alias_counter(
                metrics::counter!(BANS, "jail" => jail.clone()),
                F2B_BANNED_TOTAL,
                name,
            ),
            unbans: metrics::counter!(UNBANS, "jail" => jail.clone()),
            banned: with_alias_gauge(
                metrics::gauge!(BANNED, "jail" => jail.clone()),
                F2B_BANNED_CURRENT,
                name,
            ),
            tracked: with_alias_gauge(
                metrics::gauge!(TRACKED, "jail" => jail.clone()),
                F2B_FAILED_CURRENT,
                name,
            ),
            evicted: metrics::counter!(TRACKED_EVICTED, "jail" => jail.clone()),
            ban_latency: metrics::histogram!(BAN_LATENCY, "jail" => jail.clone()),
            withheld: metrics::counter!(BANS_WITHHELD, "jail" => jail.clone()),
            storm: metrics::gauge!(BAN_STORM, "jail" => jail),
        };
        m.withheld.absolute(0);
        m.storm.set(0.0);
        m.failures.absolute(0);
        m.bans.absolute(0);
        m.unbans.absolute(0);
        m.evicted.absolute(0);
        m.banned.set(0.0);
        m.tracked.set(0.0);
        m
    }

    /// A jail a reload removed: its gauges go to zero (the exporter keeps every series it
    /// saw), so dashboards summing them do not show a jail that no longer runs.
    pub fn retire(&self) {
        self.banned.set(0.0);
        self.tracked.set(0.0);
        self.storm.set(0.0);
    }
}

/// The `kind` labels of [`fleet_errors`], exported at zero from start.
pub const FLEET_ERROR_KINDS: [&str; 5] = ["malformed", "redis", "allowlisted", "action", "origins"];

/// Registers the fleet series whose labels are known at start, at zero; `components` are the
/// parts of this node that connect to Redis (see [`fleet_connected`]).
pub fn fleet_init(components: &[&'static str]) {
    for component in components {
        fleet_connected(component).set(0.0);
    }
    fleet_outbox().set(0.0);
    for op in ["ban", "unban"] {
        fleet_published(op).absolute(0);
    }
    for kind in FLEET_ERROR_KINDS {
        fleet_errors(kind).absolute(0);
    }
}

/// 1 while `component` (`publisher`, `windows` or `follower`, each with its own connection)
/// is connected to Redis: one series each, so a node with role `both` shows every part.
pub fn fleet_connected(component: &'static str) -> Gauge {
    metrics::gauge!(FLEET_CONNECTED, "component" => component)
}

/// Events published, by op.
pub fn fleet_published(op: &'static str) -> Counter {
    metrics::counter!(FLEET_PUBLISHED, "op" => op)
}

/// Events applied, by op and origin node.
pub fn fleet_applied(op: &'static str, origin: &str) -> Counter {
    metrics::counter!(FLEET_APPLIED, "op" => op, "origin" => origin.to_string())
}

/// Events waiting in the outbox.
pub fn fleet_outbox() -> Gauge {
    metrics::gauge!(FLEET_OUTBOX)
}

/// Decided-to-applied latency.
pub fn fleet_propagation() -> Histogram {
    metrics::histogram!(FLEET_PROPAGATION)
}

/// Bans withheld by the per-origin storm guard.
pub fn fleet_withheld(origin: &str) -> Counter {
    metrics::counter!(FLEET_WITHHELD, "origin" => origin.to_string())
}

/// Fleet problems, by kind (one of [`FLEET_ERROR_KINDS`]).
pub fn fleet_errors(kind: &'static str) -> Counter {
    metrics::counter!(FLEET_ERRORS, "kind" => kind)
}

/// Counter of failed action calls for one jail and action type.
pub(crate) fn action_errors(jail: &str, action: &'static str) -> Counter {
    metrics::counter!(ACTION_ERRORS, "jail" => jail.to_string(), "action" => action)
}

/// The whole exposition: every recorded family, then the process families read now.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&ProcessSample::read().render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped alert tests feed histogram buckets by hand: each must be one the daemon
    /// exports, or a test can pass on a bucket no real scrape has (JailsinkFleetLagging's did,
    /// on le="25", while the exported buckets stopped at 5 s and the alert could never fire).
    #[test]
    fn alert_tests_feed_only_buckets_the_daemon_exports() {
        let histograms = [
            (BAN_LATENCY, BAN_LATENCY_BUCKETS),
            (FLEET_PROPAGATION, FLEET_PROPAGATION_BUCKETS),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with("_test.yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (name, buckets) in histograms {
                let series = format!("{name}_bucket{{");
                for (at, _) in text.match_indices(&series) {
                    let rest = &text[at..];
                    let le = rest
                        .split("le=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap();
                    seen += 1;
                    if le == "+Inf" {
                        continue;
                    }
                    let bound: f64 = le.parse().unwrap();
                    assert!(
                        buckets.contains(&bound),
                        "{}: {name} le=\"{le}\" is not an exported bucket",
                        path.display()
                    );
                }
            }
        }
        assert!(seen > 0, "the alert tests feed histogram buckets");
        // The highest finite bucket is past every threshold the rules put on a quantile.
        assert!(FLEET_PROPAGATION_BUCKETS.iter().any(|&b| b > 5.0));
    }
}
