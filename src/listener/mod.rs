//! Listeners: syslog over UDP and TCP into failures for the jail task.
//!
//! Parsing and matching run here, in the listener tasks, so they spread over every core and
//! only failures (rare, small) cross the channel to the jail task.

pub(crate) mod batch;
pub mod framing;
pub(crate) mod parallel;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;
pub(crate) mod unix;
mod unwanted;

/// The next state of a test generator's linear congruential sequence (Knuth's MMIX
/// constants): the generated corpora of the listener's differential tests, reproducible
/// without a dependency.
#[cfg(test)]
fn next_random(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x
}

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnetwork::IpNetwork;
use metrics::Counter;
use tokio::time::Instant;

use crate::evidence::{self, tail, Seen};
use crate::filter::router::{Explained, Hit, Matched, Router};
use crate::jail::Failure;
use crate::metrics::{messages_dropped, DropReason};
use crate::parse::{self, Zone};

/// The pipeline as listeners hold it: swapped whole by a reload, read once per datagram or
/// TCP read.
pub(crate) type SharedPipeline = Arc<arc_swap::ArcSwap<Pipeline>>;

/// What every listener shares: who may send, how to parse, where failures go.
pub(crate) struct Pipeline {
    router: Arc<Router>,
    zone: Zone,
    allowed: Vec<IpNetwork>,
    max_message_bytes: usize,
    max_match_bytes: usize,
    unparseable: Counter,
    too_large: Counter,
    not_allowed: Counter,
}

/// Where a frame came from: the host name an event gets when its header names none, as
/// rsyslog fills it in (the sender's address off the network, this host's name locally).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// A UDP, TCP or TLS peer.
    Peer(IpAddr),
    /// A local sender on a Unix socket; the name is this host's.
    Local(&'a str),
}

/// When a read arrived: monotonic for windows, wall clock for the RFC 3164 year.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Receipt {
    /// Monotonic receipt time.
    pub at: Instant,
    /// Wall-clock receipt time.
    pub wall: DateTime<Utc>,
}

impl Receipt {
    /// Now.
    pub(crate) fn now() -> Self {
        Receipt {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }
}

/// A frame's verdicts and the parts of its event the ordered half needs, owned, so the
/// worker that matched it can hand it over without the frame being parsed again.
#[derive(Debug)]
pub(crate) struct Prepared {
    matched: Vec<Matched>,
    host: Option<Arc<str>>,
    program: Option<Box<str>>,
    pid: Option<parse::ProcId<String>>,
    /// The evidence its first failure carries (the message cut to the evidence's length), when a
    /// native pattern matched (a fail2ban-only route may find no failure in it).
    seen: Option<Seen>,
    /// The message as matched (held failures' keys and fail2ban filters read it).
    message: Box<str>,
    repeat: u32,
}

impl Pipeline {
    /// A pipeline over compiled jails.
    pub(crate) fn new(
        router: Arc<Router>,
        zone: Zone,
        allowed: Vec<IpNetwork>,
        max_message_bytes: usize,
        max_match_bytes: usize,
    ) -> Self {
        Pipeline {
            router,
            zone,
            allowed,
            max_message_bytes,
            max_match_bytes,
            unparseable: messages_dropped(DropReason::Unparseable),
            too_large: messages_dropped(DropReason::TooLarge),
            not_allowed: messages_dropped(DropReason::SenderNotAllowed),
        }
    }

    /// A copy for one match worker ([`Router::matcher_copy`]): only [`Pipeline::matches`]
    /// may use it.
    pub(crate) fn matcher_copy(&self) -> Pipeline {
        Pipeline {
            router: Arc::new(self.router.matcher_copy()),
            zone: self.zone,
            allowed: self.allowed.clone(),
            max_message_bytes: self.max_message_bytes,
            max_match_bytes: self.max_match_bytes,
            unparseable: self.unparseable.clone(),
            too_large: self.too_large.clone(),
            not_allowed: self.not_allowed.clone(),
        }
    }

    /// True when `peer` is inside `allowed_senders`; a refusal is counted.
    pub(crate) fn admit(&self, peer: IpAddr) -> bool {
        let peer = crate::address::normalise(peer);
        let ok = self.allowed.iter().any(|net| net.contains(peer));
        if !ok {
            self.not_allowed.increment(1);
        }
        ok
    }

    /// Largest message accepted.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Counts a message dropped for its size.
    pub(crate) fn drop_too_large(&self) {
        self.too_large.increment(1);
    }

    /// Counts a message (or stream) dropped as unparseable.
    pub(crate) fn drop_unparseable(&self) {
        self.unparseable.increment(1);
    }

    /// Parses one frame and pushes the failures it holds onto `out`.
    pub(crate) fn process(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
        out: &mut Vec<Failure>,
    ) {
        if self.unwanted(frame, receipt) {
            return;
        }
        let text = parse::decode(frame);
        let mut filled = String::new();
        let Some(event) = self.event(&text, receipt, origin, &mut filled) else {
            return;
        };
        let mut matched = Vec::new();
        self.router.matches(&event, &mut matched);
        self.apply_event(&event, receipt, matched, None, None, out);
    }

    /// The stateless half of [`Pipeline::process`] (parse, match), for a worker: None when
    /// the ordered half has nothing to do for `frame`, else the verdicts with the parts of the
    /// event the failures keep, already owned (allocated here, off the ordered path). Counts
    /// an unparseable frame.
    pub(crate) fn matches(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
    ) -> Option<Prepared> {
        if self.unwanted(frame, receipt) {
            return None;
        }
        self.matches_fully(frame, receipt, origin)
    }

    /// [`Pipeline::matches`] without the [`Pipeline::unwanted`] shortcut.
    fn matches_fully(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
    ) -> Option<Prepared> {
        let text = parse::decode(frame);
        let mut filled = String::new();
        let event = self.event(&text, receipt, origin, &mut filled)?;
        let mut matched = Vec::new();
        if !self.router.matches(&event, &mut matched) {
            return None;
        }
        let native = !matched.is_empty();
        Some(Prepared {
            matched,
            host: event.hostname.map(Arc::from),
            program: event.program.map(Box::from),
            pid: event.pid.map(parse::ProcId::from),
            seen: native.then(|| {
                Seen::new(
                    std::time::SystemTime::from(receipt.wall),
                    event.program,
                    event.message,
                )
            }),
            message: Box::from(event.message),
            repeat: event.repeat,
        })
    }

    /// The ordered half of [`Pipeline::process`]: counts what [`Pipeline::matches`] found
    /// (held failures, fail2ban jails) and pushes the failures onto `out`.
    pub(crate) fn apply(&self, prepared: Prepared, receipt: Receipt, out: &mut Vec<Failure>) {
        let Prepared {
            matched,
            host,
            program,
            pid,
            seen,
            message,
            repeat,
        } = prepared;
        let event = parse::Event {
            timestamp: None,
            hostname: host.as_deref(),
            program: program.as_deref(),
            pid: pid.as_ref().map(|pid| match pid {
                parse::ProcId::PID(n) => parse::ProcId::PID(*n),
                parse::ProcId::Name(name) => parse::ProcId::Name(name.as_str()),
            }),
            message: &message,
            repeat,
        };
        self.apply_event(&event, receipt, matched, host.clone(), seen, out);
    }

    /// The event of one decoded frame, its host name filled in; None when it is unparseable
    /// (counted) or no jail could take it.
    fn event<'t>(
        &self,
        text: &'t str,
        receipt: Receipt,
        origin: Origin<'t>,
        filled: &'t mut String,
    ) -> Option<parse::Event<'t>> {
        let event = match parse::parse(text, &self.zone, receipt.wall) {
            Ok(event) => event,
            Err(_) => {
                self.unparseable.increment(1);
                return None;
            }
        };
        if self.router.is_empty() {
            return None;
        }
        // Only headers without a host name pay for formatting the peer's address.
        let hostname = match (event.hostname, origin) {
            (Some(host), _) => Some(host),
            (None, Origin::Local(name)) => Some(name),
            (None, Origin::Peer(ip)) => {
                *filled = crate::address::normalise(ip).to_string();
                Some(filled.as_str())
            }
        };
        Some(crate::parse::Event {
            message: evidence::cut(event.message, self.max_match_bytes),
            hostname,
            ..event
        })
    }

    /// Turns the verdicts on `event` into failures for the jail task; `host` and `seen` are what
    /// [`Pipeline::matches`] already made of it (None: made here).
    fn apply_event(
        &self,
        event: &parse::Event<'_>,
        receipt: Receipt,
        matched: Vec<Matched>,
        host: Option<Arc<str>>,
        mut seen: Option<Seen>,
        out: &mut Vec<Failure>,
    ) {
        let watching = tail::watching();
        let first = out.len();
        let wall = std::time::SystemTime::from(receipt.wall);
        self.router.apply(event, matched, |jail, hit| {
            let (ip, count, regex, user) = match hit {
                // The user is attacker-controlled: cut, so the jail's name table stays bounded.
                Hit::Failures(m, count) => (
                    m.ip,
                    count,
                    Some(m.regex),
                    m.user
                        .as_deref()
                        .map(|u| Arc::from(evidence::cut(u, crate::jail::spray::MAX_USER_BYTES))),
                ),
                Hit::Success(ip) => (ip, 0, None, None),
            };
            let success = regex.is_none();
            out.push(Failure {
                jail: self.router.name(jail).clone(),
                ip,
                count,
                success,
                received_at: receipt.at,
                host: host.clone().or_else(|| event.hostname.map(Arc::from)),
                // The prepared evidence for the first failure; a second jail's is made again.
                seen: seen
                    .take()
                    .unwrap_or_else(|| Seen::new(wall, event.program, event.message)),
                matched: regex
                    .filter(|_| watching)
                    .map(|regex| Box::new((regex, self.router.pattern(jail, regex).to_string()))),
                user,
            })
        });
        if watching {
            self.explain(event, &out[first..]);
        }
    }

    /// Publishes what every jail that took `event` without a failure made of it (`tail`).
    fn explain(&self, event: &crate::parse::Event<'_>, failures: &[Failure]) {
        let failed: Vec<usize> = (0..self.router.len())
            .filter(|&j| failures.iter().any(|f| f.jail == *self.router.name(j)))
            .collect();
        self.router.explain(event, &failed, |jail, what| {
            let (kind, outcome) = match what {
                Explained::Missed => (tail::Kind::Missed, None),
                Explained::Ignored(i, text) => (
                    tail::Kind::Ignored,
                    Some(format!("ignoreregex[{i}] {text}")),
                ),
            };
            let mut e = tail::Event::new(kind, self.router.name(jail));
            e.host = event.hostname.map(str::to_string);
            e.program = event.program.map(str::to_string);
            e.message = Some(evidence::cut(event.message, evidence::MAX_MESSAGE_BYTES).to_string());
            e.outcome = outcome;
            tail::publish(e);
        });
    }
}
