//! The live explain stream behind `jailsink tail`: every message routed to a jail with what
//! became of it, and every ban and unban.
//!
//! One process-wide hub (like the metrics recorder: one daemon per process), so the listeners,
//! the jail task and the state writer publish without being wired to it. With nobody watching,
//! publishing costs one relaxed atomic load ([`watching`]) and nothing is built. Watchers share
//! a bounded broadcast ring of [`QUEUE`] events: publishing never waits, a watcher that reads
//! too slowly loses the oldest events, and it is told how many ([`Next::Dropped`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events a watcher may fall behind before it loses the oldest.
pub const QUEUE: usize = 1024;

static WATCHERS: AtomicUsize = AtomicUsize::new(0);
static HUB: OnceLock<broadcast::Sender<Arc<Event>>> = OnceLock::new();

fn hub() -> &'static broadcast::Sender<Arc<Event>> {
    HUB.get_or_init(|| broadcast::channel(QUEUE).0)
}

/// True while at least one `tail` client is connected: the only cost publishers pay otherwise.
#[inline]
pub fn watching() -> bool {
    WATCHERS.load(Ordering::Relaxed) > 0
}

/// Hands `event` to every watcher; never blocks. Build events only after [`watching`] said yes.
pub fn publish(event: Event) {
    if watching() {
        // An error only means the last watcher left meanwhile.
        let _ = hub().send(Arc::new(event));
    }
}

/// `text` safe for a terminal: control characters (ESC, CSI, BEL, CR, DEL, C1 ...) and the
/// bidirectional overrides become `\x1b`, `\u{9b}`, `\u{202e}`; all other text, UTF-8
/// included, is kept. Messages are written by whoever reaches the sink, and `tail` and `why`
/// print them to an operator's terminal, where raw escape sequences could clear the screen,
/// retitle the window or hide lines.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What happened, as `tail --json` prints it (`event` names the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A failregex matched: a failure counted against `ip`.
    Matched,
    /// A failregex matched, but an ignoreregex or the jail's ignoreip let it go.
    Ignored,
    /// The message reached the jail and no failregex matched.
    Missed,
    /// A successregex matched: the address logged in, and its failures were forgiven.
    Forgiven,
    /// A ban was committed.
    Ban,
    /// A ban was lifted.
    Unban,
    /// This watcher read too slowly and lost `dropped` events.
    Dropped,
}

/// One event of the stream; fields a kind does not have are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The kind.
    pub event: Kind,
    /// Wall clock, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The jail (empty for `dropped`).
    #[serde(default)]
    pub jail: String,
    /// The address (or banned network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The syslog host name of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The syslog program of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The message (cut as evidence is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Index of the failregex that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<usize>,
    /// Text of that failregex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Failures of the address inside findtime after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The jail's maxretry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxretry: Option<u32>,
    /// What the jail did: counted, banned, already_banned, withheld (storm guard); or, for
    /// `ignored`, which ignoreregex or ignoreip network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Failures that led to a ban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// A ban's length (`10m`, `permanent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bantime: Option<String>,
    /// A ban's offence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_count: Option<u32>,
    /// Events this watcher lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

impl Event {
    /// An event of `kind` in `jail`, now, every other field empty.
    pub fn new(kind: Kind, jail: &str) -> Self {
        Event {
            event: kind,
            at_ms: super::millis(std::time::SystemTime::now()),
            jail: jail.to_string(),
            ip: None,
            host: None,
            program: None,
            message: None,
            regex: None,
            pattern: None,
            count: None,
            maxretry: None,
            outcome: None,
            failures: None,
            bantime: None,
            ban_count: None,
            dropped: None,
        }
    }

    /// The event as `jailsink tail` prints it without `--json`.
    pub fn show(&self) -> String {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.at_ms)
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let opt = |o: &Option<String>| printable(o.as_deref().unwrap_or("-")).into_owned();
        let line = || {
            format!(
                "{} {}: {}",
                opt(&self.host),
                opt(&self.program),
                opt(&self.message)
            )
        };
        let jail = printable(&self.jail);
        match self.event {
            Kind::Matched => format!(
                "{at} [{jail}] matched failregex[{}] {} {}/{} {} | {}",
                self.regex.unwrap_or_default(),
                opt(&self.ip),
                self.count.unwrap_or_default(),
                self.maxretry.unwrap_or_default(),
                opt(&self.outcome),
                line()
            ),
            Kind::Ignored => format!(
                "{at} [{jail}] ignored ({}) {} | {}",
                opt(&self.outcome),
                printable(self.ip.as_deref().unwrap_or("")),
                line()
            ),
            Kind::Missed => format!("{at} [{jail}] missed | {}", line()),
            Kind::Forgiven => format!("{at} [{jail}] forgiven {} | {}", opt(&self.ip), line()),
            Kind::Ban => format!(
                "{at} [{jail}] Ban {} ({} failures, bantime {}, ban #{})",
                opt(&self.ip),
                self.failures.unwrap_or_default(),
                opt(&self.bantime),
                self.ban_count.unwrap_or_default()
            ),
            Kind::Unban => format!("{at} [{jail}] Unban {}", opt(&self.ip)),
            Kind::Dropped => format!(
                "... {} events dropped (this tail read too slowly)",
                self.dropped.unwrap_or_default()
            ),
        }
    }
}

/// What a watcher reads next.
#[derive(Debug)]
pub enum Next {
    /// The next event.
    Event(Arc<Event>),
    /// This many events were lost since the last read.
    Dropped(u64),
}

/// One `tail` client's place in the stream; publishing starts when the first exists and stops
/// (back to one atomic load) when the last is dropped.
pub struct Watch {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Watch {
    /// Starts watching unless `max` watchers already exist: each watcher keeps intake in its
    /// watched mode, so their number is capped.
    pub fn at_most(max: usize) -> Option<Self> {
        let mut now = WATCHERS.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match WATCHERS.compare_exchange_weak(now, now + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        Some(Watch {
            rx: hub().subscribe(),
        })
    }

    /// The next event, or how many were lost; waits for one.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Next::Event(event),
                Err(broadcast::error::RecvError::Lagged(n)) => return Next::Dropped(n),
                // The hub's sender is static and never closes; wait for the next event.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held by the tests that overflow the ring on purpose (here and the control server's): two of
/// them at once would overwrite each other's events in the one process-wide hub.
#[cfg(test)]
pub(crate) static RING_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    /// Other tests publish to the same hub in parallel: ours are told apart by their jail (the
    /// first of our events still held may come after some of theirs).
    #[tokio::test]
    async fn a_slow_watcher_is_told_what_it_lost_and_publishing_never_waits() {
        const JAIL: &str = "slow-watcher";
        let _ring = RING_TESTS.lock().await;
        let mut watch = Watch::at_most(usize::MAX).expect("no cap");
        assert!(watching());
        for n in 0..(QUEUE + 10) {
            let mut e = Event::new(Kind::Missed, JAIL);
            e.count = Some(n as u32);
            publish(e);
        }
        let Next::Dropped(lost) = watch.next().await else {
            panic!("the oldest events were overwritten")
        };
        assert!(lost >= 10, "lost {lost}");
        // A guard against a hang, not a timing assertion: our events are in the ring already.
        let first_held = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                match watch.next().await {
                    Next::Event(e) if e.jail == JAIL => break e,
                    Next::Event(_) | Next::Dropped(_) => {}
                }
            }
        })
        .await
        .expect("an event of ours still held");
        assert!(first_held.count.unwrap() >= 10, "{first_held:?}");
        drop(watch);
    }

    /// Escape sequences an attacker writes into a syslog message (clear screen, an OSC window
    /// title) reach `tail`'s text output escaped, while ordinary UTF-8 stays readable; --json
    /// keeps the message as it was.
    #[test]
    fn attacker_escape_sequences_are_shown_escaped() {
        let mut e = Event::new(Kind::Missed, "sshd");
        e.host = Some("h\u{1b}[31mred".into());
        e.message = Some(
            "Failed password for r\u{f6}\u{f6}t \u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}1m\u{202e}x\r"
                .into(),
        );
        let text = e.show();
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
        assert!(
            text.ends_with(
                "h\\x1b[31mred -: Failed password for r\u{f6}\u{f6}t \\x1b[2J\\x1b]0;owned\\x07\\u{9b}1m\\u{202e}x\\x0d"
            ),
            "{text}"
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        assert!(matches!(
            printable("plain \u{e9}t\u{e9}"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// `at_most` refuses a watcher once `max` exist (the server's cap on tail clients), and
    /// one refused leaves the count as it was. (Other tests may hold watchers meanwhile: only
    /// a limit already reached by this test's own watcher is asserted.)
    #[test]
    fn watchers_are_capped() {
        let held = Watch::at_most(usize::MAX).expect("no cap");
        assert!(Watch::at_most(1).is_none(), "one exists already");
        assert!(Watch::at_most(0).is_none());
        assert!(watching());
        drop(held);
    }

    #[test]
    fn events_print_as_text_and_json() {
        let mut e = Event::new(Kind::Matched, "sshd");
        e.ip = Some("192.0.2.1".into());
        e.regex = Some(0);
        e.count = Some(2);
        e.maxretry = Some(3);
        e.outcome = Some("counted".into());
        assert!(e
            .show()
            .contains("[sshd] matched failregex[0] 192.0.2.1 2/3 counted"));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""event":"matched""#), "{json}");
        assert!(!json.contains("bantime"));
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
