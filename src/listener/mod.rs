//! Listeners: syslog over UDP and TCP into failures for the jail task.
//!
//! Parsing and matching run here, in the listener tasks, so they spread over every core and
//! only failures (rare, small) cross the channel to the jail task.

pub(crate) mod batch;
pub mod framing;
pub(crate) mod parallel;
mod spares;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;
pub(crate) mod unix;
mod unwanted;

use unwanted::Header;

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

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::ops::Range;
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

/// A frame that makes the parse and the ordered apply panic in tests, standing in for a bug.
#[cfg(test)]
pub(crate) const TEST_PANIC: &[u8] = b"<test: panic in the parse>";

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

impl<'a> Origin<'a> {
    /// The host name a header without one is given: this host's for a local sender, else the
    /// peer's address (formatted into `filled`, which only such headers pay for).
    fn host_name<'s>(self, filled: &'s mut String) -> &'s str
    where
        'a: 's,
    {
        match self {
            Origin::Local(name) => name,
            Origin::Peer(ip) => {
                *filled = crate::address::normalise(ip).to_string();
                filled.as_str()
            }
        }
    }
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

/// Where a frame's hit is: what the ordered half needs to see its event again without
/// parsing it or copying anything, as byte ranges of the frame the worker matched (or of
/// `owned`, when the frame was not valid UTF-8 and was decoded into a new string). The
/// verdicts are not in it: a batch's go in one vector, in order, `verdicts` of them per hit.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// How many of the batch's verdicts are this frame's.
    verdicts: u32,
    /// The decoded text, only when it is not the frame itself (invalid UTF-8).
    owned: Option<Box<str>>,
    host: HostAt,
    program: Option<Range<u32>>,
    pid: Option<parse::ProcId<String>>,
    /// The message as matched (cut at the match length).
    message: Range<u32>,
    repeat: u32,
}

/// Where a hit's host name is. Every matched event has one ([`Pipeline::event`] fills in the
/// origin's when the header named none), so there is no case without.
#[derive(Debug)]
enum HostAt {
    /// In the text, as the header wrote it.
    At(Range<u32>),
    /// The header named none: the frame's [`Origin`] fills it in.
    Origin,
}

/// The range `part` has in `base`, when it lies inside it.
fn range_in(base: &[u8], part: &str) -> Option<Range<u32>> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= base.len() && end <= u32::MAX as usize).then_some(Range {
        start: start as u32,
        end: end as u32,
    })
}

/// The text at `range` of `base` (empty when it is not text there: never, ranges come from
/// [`range_in`] over the same bytes, around a part of their decoded text).
fn part<'b>(base: &'b [u8], range: &Range<u32>) -> &'b str {
    base.get(range.start as usize..range.end as usize)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// The text a hit's parts are read from on the ordered side: the decoded copy when there is
/// one (text already), else the run of the frame from the first part to the end of the last
/// checked as UTF-8 once, not once per part (host, program and message: three checks a hit).
struct Parts<'b> {
    /// The run's text and where it begins in the frame; None when it is not text (never:
    /// the parts are of the frame's decoded text), then each part is checked on its own.
    run: Option<(&'b str, u32)>,
    base: &'b [u8],
}

impl<'b> Parts<'b> {
    /// The parts of `prepared`, a hit in `frame`.
    fn of(prepared: &'b Prepared, frame: &'b [u8]) -> Parts<'b> {
        if let Some(owned) = prepared.owned.as_deref() {
            return Parts {
                run: Some((owned, 0)),
                base: owned.as_bytes(),
            };
        }
        let host = match &prepared.host {
            HostAt::At(at) => Some(at),
            HostAt::Origin => None,
        };
        let ranges = || {
            host.into_iter()
                .chain(prepared.program.as_ref())
                .chain([&prepared.message])
        };
        let from = ranges().map(|r| r.start).min().unwrap_or(0);
        let to = ranges().map(|r| r.end).max().unwrap_or(0);
        let run = frame
            .get(from as usize..to as usize)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .map(|text| (text, from));
        Parts { run, base: frame }
    }

    /// The text at `range` (of the frame, or of the decoded copy), as [`part`] reads it.
    fn part(&self, range: &Range<u32>) -> &'b str {
        match self.run {
            Some((text, from)) => range
                .start
                .checked_sub(from)
                .zip(range.end.checked_sub(from))
                .and_then(|(start, end)| text.get(start as usize..end as usize))
                .unwrap_or_default(),
            None => part(self.base, range),
        }
    }
}

/// A [`Prepared`] whose text is a copy of the event's parts.
fn prepared_copy(event: &parse::Event<'_>, verdicts: usize, host: HostAt) -> Prepared {
    let mut text = String::new();
    let mut put = |part: &str| {
        let start = text.len() as u32;
        text.push_str(part);
        start..text.len() as u32
    };
    let host = match (host, event.hostname) {
        (HostAt::At(_), Some(name)) => HostAt::At(put(name)),
        (other, _) => other,
    };
    let program = event.program.map(&mut put);
    let message = put(event.message);
    Prepared {
        verdicts: verdicts as u32,
        owned: Some(text.into()),
        host,
        program,
        pid: event.pid.clone().map(parse::ProcId::from),
        message,
        repeat: event.repeat,
    }
}

thread_local! {
    /// The host names this thread's failures carried last, shared: a sink's senders are few,
    /// so most failures take a reference to a name instead of a copy of it.
    static HOSTS: RefCell<Kept> = const { RefCell::new(Kept::new()) };
    /// The same for the `<F-USER>` names (a brute force tries the same few names again and
    /// again).
    static USERS: RefCell<Kept> = const { RefCell::new(Kept::new()) };
}

/// A few recently seen names (at most [`KEPT`]), replaced in turn.
struct Kept {
    names: Vec<Arc<str>>,
    next: usize,
}

/// Names a thread keeps in each of [`HOSTS`] and [`USERS`].
const KEPT: usize = 16;

impl Kept {
    const fn new() -> Self {
        Kept {
            names: Vec::new(),
            next: 0,
        }
    }

    /// `name` as a shared string, taken from the names kept when it is one of them.
    fn share(&mut self, name: &str) -> Arc<str> {
        if let Some(kept) = self.names.iter().find(|kept| ***kept == *name) {
            return kept.clone();
        }
        let made: Arc<str> = Arc::from(name);
        if self.names.len() < KEPT {
            self.names.push(made.clone());
        } else {
            self.names[self.next] = made.clone();
            self.next = (self.next + 1) % KEPT;
        }
        made
    }
}

/// `name` as a shared host name ([`HOSTS`]).
fn shared_host(name: &str) -> Arc<str> {
    HOSTS.with(|kept| kept.borrow_mut().share(name))
}

/// `name` as a shared user name ([`USERS`]).
fn shared_user(name: &str) -> Arc<str> {
    USERS.with(|kept| kept.borrow_mut().share(name))
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

    /// The router, whose held failures a reload's new router takes over.
    pub(crate) fn router(&self) -> &Router {
        &self.router
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

    /// Counts `messages` a bug lost (a match worker that panicked on their batch) as
    /// unparseable, so the loss shows in the drop counter and not in the log alone.
    pub(crate) fn drop_lost(&self, messages: u64) {
        self.unparseable.increment(messages);
    }

    /// Parses one frame and pushes the failures it holds onto `out`. A frame that makes the
    /// parse or a filter panic (a bug) is logged and counted as unparseable, and the caller
    /// goes on with the next: a UDP receiver or a TCP connection never dies of one message.
    pub(crate) fn process(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
        out: &mut Vec<Failure>,
    ) {
        self.guarded(frame, || {
            self.process_unguarded(frame, receipt, origin, out)
        });
    }

    /// Runs `handle` for `frame`; a panic in it (a bug) is logged and counted as unparseable.
    fn guarded(&self, frame: &[u8], handle: impl FnOnce()) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(handle)).is_ok() {
            return;
        }
        self.drop_unparseable();
        tracing::error!(
            bytes = frame.len(),
            start = %String::from_utf8_lossy(&frame[..frame.len().min(120)]),
            "a message made the parser or a filter panic (a bug; please report it with this line); dropped and counted as unparseable"
        );
    }

    fn process_unguarded(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
        out: &mut Vec<Failure>,
    ) {
        #[cfg(test)]
        if frame == TEST_PANIC {
            panic!("a parse's test panic");
        }
        let read = match self.header(frame, receipt) {
            Header::Unwanted => return,
            Header::Wanted(read) => Some(read),
            Header::Unread => None,
        };
        let text = parse::decode(frame);
        let mut filled = String::new();
        let Some(event) = self.event(&text, read.as_ref(), receipt, origin, &mut filled) else {
            return;
        };
        let mut matched = Vec::new();
        self.router.matches(&event, &mut matched);
        self.apply_event(&event, receipt, matched, out);
    }

    /// The stateless half of [`Pipeline::process`] (parse, match), for a worker: None when
    /// the ordered half has nothing to do for `frame`, else where its event is in the frame,
    /// its verdicts pushed onto `verdicts` (nothing is copied or allocated for a frame in
    /// UTF-8). Counts an unparseable frame.
    pub(crate) fn matches(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
        verdicts: &mut Vec<Matched>,
    ) -> Option<Prepared> {
        let read = match self.header(frame, receipt) {
            Header::Unwanted => return None,
            Header::Wanted(read) => Some(read),
            Header::Unread => None,
        };
        self.matches_read(frame, read.as_ref(), receipt, origin, verdicts)
    }

    /// [`Pipeline::matches`] without the unwanted-frame shortcut: the frame parsed from the
    /// start (what the shortcut is tested against).
    #[cfg(test)]
    fn matches_fully(
        &self,
        frame: &[u8],
        receipt: Receipt,
        origin: Origin<'_>,
        verdicts: &mut Vec<Matched>,
    ) -> Option<Prepared> {
        self.matches_read(frame, None, receipt, origin, verdicts)
    }

    /// [`Pipeline::matches`] past the shortcut, with the header it read when it read one.
    fn matches_read(
        &self,
        frame: &[u8],
        read: Option<&parse::Read3164>,
        receipt: Receipt,
        origin: Origin<'_>,
        verdicts: &mut Vec<Matched>,
    ) -> Option<Prepared> {
        let text = parse::decode(frame);
        let mut filled = String::new();
        let event = self.event(&text, read, receipt, origin, &mut filled)?;
        let first = verdicts.len();
        if !self.router.matches(&event, verdicts) {
            verdicts.truncate(first);
            return None;
        }
        // The ranges are of the frame itself when it was valid UTF-8 (decoding only strips
        // its ends), else of the decoded text, kept.
        let base = match &text {
            Cow::Borrowed(_) => frame,
            Cow::Owned(t) => t.as_bytes(),
        };
        // A host name outside the text is the one `event` filled in from the origin (the
        // parsers take every part from the text); `event` leaves none out.
        let host = event
            .hostname
            .and_then(|host| range_in(base, host))
            .map_or(HostAt::Origin, HostAt::At);
        let program = event.program.map(|p| range_in(base, p));
        let (Some(message), None | Some(Some(_))) = (range_in(base, event.message), &program)
        else {
            // A part the parser made up (never today): the parts copied into one text.
            return Some(prepared_copy(&event, verdicts.len() - first, host));
        };
        let (pid, repeat) = (event.pid.map(parse::ProcId::from), event.repeat);
        let program = program.flatten();
        // The decoded text the ranges point into, moved rather than copied.
        let owned = match text {
            Cow::Borrowed(_) => None,
            Cow::Owned(t) => Some(t.into_boxed_str()),
        };
        Some(Prepared {
            verdicts: (verdicts.len() - first) as u32,
            owned,
            host,
            program,
            pid,
            message,
            repeat,
        })
    }

    /// The ordered half of [`Pipeline::process`]: counts what [`Pipeline::matches`] found in
    /// `frame` (held failures, fail2ban jails), taking its verdicts from `verdicts`, and pushes
    /// the failures onto `out`. A panic (a bug) is contained as [`Pipeline::process`]'s is.
    pub(crate) fn apply(
        &self,
        prepared: Prepared,
        frame: &[u8],
        origin: Origin<'_>,
        verdicts: &mut impl Iterator<Item = Matched>,
        receipt: Receipt,
        out: &mut Vec<Failure>,
    ) {
        self.guarded(frame, || {
            #[cfg(test)]
            if frame == TEST_PANIC {
                panic!("an apply's test panic");
            }
            let parts = Parts::of(&prepared, frame);
            let mut filled = String::new();
            let hostname = match &prepared.host {
                HostAt::At(at) => Some(parts.part(at)),
                HostAt::Origin => Some(origin.host_name(&mut filled)),
            };
            let event = parse::Event {
                timestamp: None,
                hostname,
                program: prepared.program.as_ref().map(|at| parts.part(at)),
                pid: prepared.pid.as_ref().map(|pid| match pid {
                    parse::ProcId::PID(n) => parse::ProcId::PID(*n),
                    parse::ProcId::Name(name) => parse::ProcId::Name(name.as_str()),
                }),
                message: parts.part(&prepared.message),
                repeat: prepared.repeat,
            };
            let matched = verdicts.take(prepared.verdicts as usize);
            self.apply_event(&event, receipt, matched, out);
        });
    }

    /// The event of one decoded frame (whose 3164 header is `read`, when the shortcut read
    /// it), its host name filled in; None when it is unparseable (counted) or no jail could
    /// take it.
    fn event<'t>(
        &self,
        text: &'t str,
        read: Option<&parse::Read3164>,
        receipt: Receipt,
        origin: Origin<'t>,
        filled: &'t mut String,
    ) -> Option<parse::Event<'t>> {
        let parsed = match read {
            Some(read) => parse::parse_read(text, read, &self.zone, receipt.wall),
            None => parse::parse(text, &self.zone, receipt.wall),
        };
        let event = match parsed {
            Ok(event) => event,
            Err(_) => {
                self.unparseable.increment(1);
                return None;
            }
        };
        if self.router.is_empty() {
            return None;
        }
        let hostname = Some(event.hostname.unwrap_or_else(|| origin.host_name(filled)));
        Some(crate::parse::Event {
            message: evidence::cut(event.message, self.max_match_bytes),
            hostname,
            ..event
        })
    }

    /// Turns the verdicts on `event` into failures for the jail task.
    fn apply_event(
        &self,
        event: &parse::Event<'_>,
        receipt: Receipt,
        matched: impl IntoIterator<Item = Matched>,
        out: &mut Vec<Failure>,
    ) {
        let watching = tail::watching();
        let first = out.len();
        let wall = std::time::SystemTime::from(receipt.wall);
        // Made for the first failure, shared by the others.
        let mut host: Option<Option<Arc<str>>> = None;
        self.router.apply(event, matched, |jail, hit| {
            let (ip, count, regex, user) = match hit {
                // The user is attacker-controlled: cut, so the jail's name table stays bounded.
                Hit::Failures(m, count) => (
                    m.ip,
                    count,
                    Some(m.regex),
                    m.user
                        .as_deref()
                        .map(|u| shared_user(evidence::cut(u, crate::jail::spray::MAX_USER_BYTES))),
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
                host: host
                    .get_or_insert_with(|| event.hostname.map(shared_host))
                    .clone(),
                seen: Seen::new(wall, event.program, event.message),
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

#[cfg(test)]
mod tests {
    use super::unwanted::tests::{fixture_frames, generated, pipeline};
    use super::*;

    /// The generated lines, and each again without its host name (so the origin fills it).
    fn frames() -> Vec<Vec<u8>> {
        let mut frames: Vec<Vec<u8>> = fixture_frames().into_iter().chain(generated()).collect();
        let hostless: Vec<Vec<u8>> = generated()
            .into_iter()
            .map(|line| {
                let text = String::from_utf8_lossy(&line).into_owned();
                let mut bytes = line;
                for host in ["mail1 ", "gw ", "h_1.example ", "b@d "] {
                    if let Some(at) = text.find(host) {
                        bytes.drain(at..at + host.len());
                        break;
                    }
                }
                bytes
            })
            .collect();
        frames.extend(hostless);
        // Failures in invalid UTF-8, with a host name and without.
        for i in 0..20u8 {
            let mut line =
                b"<38>Nov 20 00:00:00 gw sshd[7]: Failed password for r\xffot from 192.0.2."
                    .to_vec();
            line.extend_from_slice(format!("{i} port 22 ssh2").as_bytes());
            frames.push(line.clone());
            // The same without its host name.
            line.drain(20..23);
            frames.push(line);
        }
        frames
    }

    /// A frame that makes the parse or the ordered apply panic (a bug) is dropped, and the
    /// same pipeline goes on to find the next frame's failure.
    #[test]
    fn a_panic_on_one_frame_is_contained_and_the_next_is_matched() {
        let pipeline = pipeline(Zone::Utc, false);
        let receipt = Receipt::now();
        let origin = Origin::Peer("192.0.2.200".parse().unwrap());
        let line: &[u8] =
            b"<38>Nov 20 00:00:00 gw sshd[7]: Failed password for root from 192.0.2.9 port 22 ssh2";
        let mut out = Vec::new();
        pipeline.process(TEST_PANIC, receipt, origin, &mut out);
        assert!(out.is_empty());
        pipeline.process(line, receipt, origin, &mut out);
        assert_eq!(out.len(), 1);
        // The ordered half, handed the panic frame for a prepared hit.
        let mut verdicts = Vec::new();
        let prepared = pipeline
            .matches(line, receipt, origin, &mut verdicts)
            .expect("a failure");
        pipeline.apply(
            prepared,
            TEST_PANIC,
            origin,
            &mut verdicts.clone().into_iter(),
            receipt,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let prepared = pipeline
            .matches(line, receipt, origin, &mut Vec::new())
            .expect("a failure");
        pipeline.apply(
            prepared,
            line,
            origin,
            &mut verdicts.into_iter(),
            receipt,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].ip, out[0].ip);
    }

    /// What a worker's [`Pipeline::matches`] and the ordered [`Pipeline::apply`] make of
    /// frames, in batches of a few (so verdicts of several frames share one vector), is what
    /// [`Pipeline::process`] makes of them one by one: the same failures, with the same host,
    /// evidence and user, in the same order (held failures included: each path keeps its own
    /// pipeline). Every fixture frame and the generated lines (invalid UTF-8, BOM, no host
    /// name), from a peer (IPv4 and mapped IPv6) and from a local socket.
    #[test]
    fn matching_apart_and_applying_in_order_finds_what_one_pass_finds() {
        let frames = frames();
        let receipt = Receipt::now();
        let local = String::from("this-host");
        let origins = [
            Origin::Peer("192.0.2.200".parse().unwrap()),
            Origin::Peer("::ffff:198.51.100.4".parse().unwrap()),
            Origin::Local(&local),
        ];
        for catch_all in [false, true] {
            for origin in origins {
                let one = pipeline(Zone::Utc, catch_all);
                let (worker, ordered) = (
                    pipeline(Zone::Utc, catch_all),
                    pipeline(Zone::Utc, catch_all),
                );
                let mut expected = Vec::new();
                let mut got = Vec::new();
                for batch in frames.chunks(7) {
                    for frame in batch {
                        one.process(frame, receipt, origin, &mut expected);
                    }
                    let mut verdicts = Vec::new();
                    let hits: Vec<(&Vec<u8>, Prepared)> = batch
                        .iter()
                        .filter_map(|f| {
                            worker
                                .matches(f, receipt, origin, &mut verdicts)
                                .map(|p| (f, p))
                        })
                        .collect();
                    let mut verdicts = verdicts.into_iter();
                    for (frame, prepared) in hits {
                        ordered.apply(prepared, frame, origin, &mut verdicts, receipt, &mut got);
                    }
                    assert!(verdicts.next().is_none(), "every verdict taken");
                }
                assert!(expected.len() > 500, "{}", expected.len());
                assert!(expected
                    .iter()
                    .any(|f| f.host.as_deref() == Some("192.0.2.200")
                        || f.host.as_deref() == Some("198.51.100.4")
                        || f.host.as_deref() == Some("this-host")));
                assert!(expected
                    .iter()
                    .any(|f| f.seen.message().contains('\u{fffd}')));
                assert_eq!(got.len(), expected.len());
                for (got, expected) in got.iter().zip(&expected) {
                    assert_eq!(got, expected);
                }
            }
        }
    }

    /// The parts of a hit read from one checked run of the frame are the parts each checked
    /// on its own (what the ordered side did before), for every hit among the frames
    /// (invalid UTF-8 decoded into a copy, no host name, a BOM), from every origin.
    #[test]
    fn parts_read_from_one_checked_run_are_the_parts_checked_one_by_one() {
        let frames = frames();
        let receipt = Receipt::now();
        let local = String::from("this-host");
        let mut hits = 0;
        for origin in [
            Origin::Peer("192.0.2.200".parse().unwrap()),
            Origin::Local(&local),
        ] {
            let worker = pipeline(Zone::Utc, true);
            for frame in &frames {
                let mut verdicts = Vec::new();
                let Some(prepared) = worker.matches(frame, receipt, origin, &mut verdicts) else {
                    continue;
                };
                hits += 1;
                let base = prepared.owned.as_deref().map_or(&frame[..], str::as_bytes);
                let parts = Parts::of(&prepared, frame);
                assert!(parts.run.is_some(), "{:?}", String::from_utf8_lossy(frame));
                let mut ranges: Vec<&Range<u32>> = vec![&prepared.message];
                ranges.extend(prepared.program.as_ref());
                if let HostAt::At(at) = &prepared.host {
                    ranges.push(at);
                }
                for range in ranges {
                    assert_eq!(parts.part(range), part(base, range));
                    assert!(!part(base, range).is_empty() || range.is_empty());
                }
            }
        }
        assert!(hits > 1_000, "{hits}");
    }

    /// A thread's shared host and user names are the names asked for, whatever was kept
    /// before.
    #[test]
    fn shared_host_names_are_the_names_asked_for() {
        for round in 0..3 {
            for i in 0..(KEPT * 2 + 3) {
                let name = format!("host-{}", (i * 7 + round) % (KEPT + 5));
                assert_eq!(&*shared_host(&name), name.as_str());
                assert_eq!(&*shared_user(&name), name.as_str());
            }
        }
        let a = shared_host("web-1");
        let b = shared_host("web-1");
        assert!(Arc::ptr_eq(&a, &b), "a kept name is shared");
        assert!(Arc::ptr_eq(&shared_user("root"), &shared_user("root")));
    }
}
