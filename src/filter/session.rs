//! Held failures per client connection, for filters whose lines need context to count right.
//!
//! A connection is one sender process (the syslog PID on one host) talking to one client
//! address. Two kinds of failure wait here instead of counting at once:
//! - *pending* (`pendingregex`, sshd's `Failed publickey`): counted when the connection goes on
//!   to fail otherwise or is forgotten, dropped when it logs a success: a client with several
//!   keys offers the wrong ones first;
//! - *echo* (`echoregex`, `pam_unix(sshd:auth): authentication failure`): a second report of an
//!   attempt; absorbed by the next counted failure of the connection (sshd's own `Failed
//!   password`), so one wrong password counts once; counted alone when nothing absorbs it.
//!
//! The table is bounded (`cap` connections, the oldest forgotten first) and time-limited
//! (`ttl` since a connection's last held failure); what a forgotten connection held is counted
//! then, never lost. Only lines that a held-failure filter already matched reach it, so the
//! per-message cost of every other line is nothing.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::FailClass;
use crate::parse::ProcId;

/// How long a connection's held failures wait by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Connections tracked at once by default.
pub const DEFAULT_CAP: usize = 10_000;

/// What one connection holds.
#[derive(Debug, Clone)]
struct Held {
    ip: IpAddr,
    pending: u32,
    echo: u32,
    seen: Instant,
}

impl Held {
    fn total(&self) -> u32 {
        self.pending.saturating_add(self.echo)
    }
}

/// The held failures of every open connection of one jail.
#[derive(Debug)]
pub struct Sessions {
    held: HashMap<u64, Held>,
    hasher: std::collections::hash_map::RandomState,
    ttl: Duration,
    cap: usize,
    last_sweep: Option<Instant>,
}

impl Sessions {
    /// A table forgetting connections `ttl` after their last held failure, at most `cap` of them.
    pub fn new(ttl: Duration, cap: usize) -> Sessions {
        Sessions {
            held: HashMap::new(),
            hasher: Default::default(),
            ttl,
            cap: cap.max(1),
            last_sweep: None,
        }
    }

    /// The connection of a line: sender `host`, process `pid` and client `ip`; None without a
    /// process id, when lines cannot be told apart by connection (then nothing is held).
    pub fn key(&self, host: Option<&str>, pid: Option<&ProcId<&str>>, ip: IpAddr) -> Option<u64> {
        let pid = pid?;
        let mut h = self.hasher.build_hasher();
        host.hash(&mut h);
        // Result's Hash writes the variant first: a number and a name whose bytes run alike
        // (`abc` and the number whose bytes are `abc\xff`) stay two connections.
        pid_number(pid).hash(&mut h);
        ip.hash(&mut h);
        Some(h.finish())
    }

    /// Connections with held failures now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// A failure of `class` from `ip` on connection `key`, standing for `repeat` lines: returns
    /// how many failures of `ip` count now. Failures of forgotten connections are pushed onto
    /// `released` (address, count): they count now too.
    pub fn failure(
        &mut self,
        key: Option<u64>,
        ip: IpAddr,
        class: FailClass,
        repeat: u32,
        now: Instant,
        released: &mut Vec<(IpAddr, u32)>,
    ) -> u32 {
        let Some(key) = key else {
            return repeat;
        };
        self.sweep(now, released);
        match class {
            FailClass::Count => match self.held.remove(&key) {
                // held echoes were this attempt in other words; pending ones count now
                Some(held) => repeat.saturating_add(held.pending),
                None => repeat,
            },
            FailClass::Pending | FailClass::Echo => {
                if !self.held.contains_key(&key) && self.held.len() >= self.cap {
                    self.evict_oldest(released);
                }
                let held = self.held.entry(key).or_insert(Held {
                    ip,
                    pending: 0,
                    echo: 0,
                    seen: now,
                });
                held.seen = now;
                if class == FailClass::Pending {
                    held.pending = held.pending.saturating_add(repeat);
                } else {
                    held.echo = held.echo.saturating_add(repeat);
                }
                0
            }
        }
    }

    /// A success on connection `key`: what it held is forgiven.
    pub fn success(&mut self, key: Option<u64>, now: Instant, released: &mut Vec<(IpAddr, u32)>) {
        if let Some(key) = key {
            self.held.remove(&key);
        }
        self.sweep(now, released);
    }

    /// Forgets connections idle past `ttl`, releasing what they held; runs at most every
    /// eighth of `ttl` (an O(n) walk over a bounded table).
    pub fn sweep(&mut self, now: Instant, released: &mut Vec<(IpAddr, u32)>) {
        let step = self.ttl / 8;
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < step)
        {
            return;
        }
        self.last_sweep = Some(now);
        let ttl = self.ttl;
        self.held.retain(|_, held| {
            if now.saturating_duration_since(held.seen) < ttl {
                return true;
            }
            released.push((held.ip, held.total()));
            false
        });
    }

    fn evict_oldest(&mut self, released: &mut Vec<(IpAddr, u32)>) {
        let oldest = self
            .held
            .iter()
            .min_by_key(|(_, held)| held.seen)
            .map(|(key, _)| *key);
        if let Some(held) = oldest.and_then(|key| self.held.remove(&key)) {
            released.push((held.ip, held.total()));
        }
    }
}

/// A process id as the key hashes it: the number (hashed as it is, not formatted first), or
/// the name. A name that is exactly how a number is written (`-5`, which the 3164 parser keeps
/// as a name) is that number, so the same connections are one key as when ids were compared
/// as text; any other name (`05`, `+5`, `abc`) is itself.
fn pid_number<'p>(pid: &ProcId<&'p str>) -> Result<i32, &'p str> {
    match *pid {
        ProcId::PID(n) => Ok(n),
        // Only a name that parses as a number is formatted (to compare): `-5` or `+5`, rare.
        ProcId::Name(name) => match name.parse::<i32>() {
            Ok(n) if n.to_string() == name => Ok(n),
            _ => Err(name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_echo_and_its_failure_count_once_and_pending_ones_wait_for_the_end() {
        let mut s = Sessions::new(Duration::from_secs(60), 10);
        let a = ip("192.0.2.1");
        let k = s.key(Some("vm"), Some(&ProcId::PID(100)), a);
        let now = Instant::now();
        let mut out = Vec::new();
        // pam_unix, then Failed password: one
        assert_eq!(s.failure(k, a, FailClass::Echo, 1, now, &mut out), 0);
        assert_eq!(s.failure(k, a, FailClass::Count, 1, now, &mut out), 1);
        // two keys refused, then accepted: none
        assert_eq!(s.failure(k, a, FailClass::Pending, 1, now, &mut out), 0);
        assert_eq!(s.failure(k, a, FailClass::Pending, 1, now, &mut out), 0);
        s.success(k, now, &mut out);
        assert!(s.is_empty());
        // two keys refused, then a closing failure: all three
        assert_eq!(s.failure(k, a, FailClass::Pending, 1, now, &mut out), 0);
        assert_eq!(s.failure(k, a, FailClass::Pending, 1, now, &mut out), 0);
        assert_eq!(s.failure(k, a, FailClass::Count, 1, now, &mut out), 3);
        // another process is another connection
        let other = s.key(Some("vm"), Some(&ProcId::PID(101)), a);
        assert_eq!(s.failure(k, a, FailClass::Echo, 1, now, &mut out), 0);
        assert_eq!(s.failure(other, a, FailClass::Count, 1, now, &mut out), 1);
        assert_eq!(s.len(), 1);
        // without a process id nothing is held
        assert_eq!(s.failure(None, a, FailClass::Pending, 2, now, &mut out), 2);
        assert!(out.is_empty());
    }

    #[test]
    fn forgotten_connections_release_what_they_held() {
        let mut s = Sessions::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        let mut out = Vec::new();
        for n in 1..=3u8 {
            let a = IpAddr::from([192, 0, 2, n]);
            let k = s.key(None, Some(&ProcId::PID(1)), a);
            s.failure(
                k,
                a,
                FailClass::Pending,
                1,
                now + Duration::from_secs(n.into()),
                &mut out,
            );
        }
        assert_eq!(
            out,
            [(ip("192.0.2.1"), 1)],
            "the oldest was evicted at the cap"
        );
        assert_eq!(s.len(), 2);
        out.clear();
        s.sweep(now + Duration::from_secs(120), &mut out);
        out.sort();
        assert_eq!(out, [(ip("192.0.2.2"), 1), (ip("192.0.2.3"), 1)]);
        assert!(s.is_empty());
    }

    /// Process ids are one key exactly when they were written alike: the number itself is
    /// hashed now, not its text.
    #[test]
    fn process_ids_are_one_connection_when_written_alike() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let a = ip("192.0.2.1");
        let key = |pid: ProcId<&str>| s.key(Some("vm"), Some(&pid), a).unwrap();
        let same = [
            (ProcId::PID(100), ProcId::Name("100")),
            (ProcId::PID(-5), ProcId::Name("-5")),
            (ProcId::PID(0), ProcId::Name("0")),
            (ProcId::PID(i32::MIN), ProcId::Name("-2147483648")),
            (ProcId::Name("abc"), ProcId::Name("abc")),
        ];
        for (x, y) in same {
            assert_eq!(key(x.clone()), key(y.clone()), "{x:?} {y:?}");
        }
        let different = [
            (ProcId::PID(100), ProcId::PID(101)),
            (ProcId::PID(5), ProcId::Name("05")),
            (ProcId::PID(5), ProcId::Name("+5")),
            (ProcId::PID(0), ProcId::Name("-0")),
            (ProcId::Name("abc"), ProcId::Name("abd")),
            // A name's bytes and its end mark are a negative number's (review-tidyA).
            (ProcId::Name("abc"), ProcId::Name("-10263967")),
            (ProcId::Name("abc"), ProcId::PID(-10263967)),
        ];
        for (x, y) in different {
            assert_ne!(key(x.clone()), key(y.clone()), "{x:?} {y:?}");
        }
        assert_eq!(s.key(Some("vm"), None, a), None);
    }
}
