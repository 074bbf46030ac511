//! Listeners: syslog over UDP and TCP into failures for the jail task.
//!
//! Parsing and matching run here, in the listener tasks, so they spread over every core and
//! only failures (rare, small) cross the channel to the jail task.

pub(crate) mod batch;
pub mod framing;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;
pub(crate) mod unix;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnetwork::IpNetwork;
use metrics::Counter;
use tokio::time::Instant;

use crate::filter::router::Router;
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
        let text = parse::decode(frame);
        let event = match parse::parse(&text, &self.zone, receipt.wall) {
            Ok(event) => event,
            Err(_) => {
                self.unparseable.increment(1);
                return;
            }
        };
        if self.router.is_empty() {
            return;
        }
        // Only headers without a host name pay for formatting the peer's address.
        let filled;
        let hostname = match (event.hostname, origin) {
            (Some(host), _) => Some(host),
            (None, Origin::Local(name)) => Some(name),
            (None, Origin::Peer(ip)) => {
                filled = crate::address::normalise(ip).to_string();
                Some(filled.as_str())
            }
        };
        let event = crate::parse::Event {
            message: truncate(event.message, self.max_match_bytes),
            hostname,
            ..event
        };
        self.router.route(&event, |jail, m| {
            out.push(Failure {
                jail: self.router.name(jail).clone(),
                ip: m.ip,
                count: event.repeat,
                received_at: receipt.at,
                host: event.hostname.map(Arc::from),
            })
        });
    }
}

/// The first `max` bytes of `text`, cut back to a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncation_respects_characters() {
        assert_eq!(super::truncate("abc", 10), "abc");
        assert_eq!(super::truncate("aé", 2), "a");
        assert_eq!(super::truncate("aéb", 3), "aé");
    }
}
