//! The address of a failregex found by a hand-written scanner instead of the capturing regex:
//! for a pattern (or a split pattern's suffix) of the shape `H(?P<addr>IP4|IP6)ZONE R` (what
//! `<HOST>` expands to, see `template`), `H` is matched without captures, the address by the
//! scanner below, and `R` by an anchored `is_match`, so the bounded backtracker that captures
//! the address (a quarter of a live worker's time in the profile) runs only when this cannot
//! decide.
//!
//! Same result as the regex's leftmost-first captures: a backtracker tries `H`'s first
//! completing path (the one `H` alone finds), then the address's choices in priority order (IP4
//! before IP6, every counted repetition greedy), then `R`. In `IP4` and the repeated part of
//! `IP6` each digit run has exactly one length that lets the next item match (a run followed by
//! `.` or `:`), so the first path through the address is the greedy one computed here; when `R`
//! matches after it, that path is the whole pattern's match. When `R` does not, a lower
//! path might, and the caller runs the regex as before ([`Scan::Unknown`]).

use regex_syntax::hir::{Hir, HirKind, Look};

use super::mini::Part;
use super::template::{IP4, IP6, ZONE};

/// Addresses and near-addresses for the differential tests of the scanner, put where a line's
/// address stands: its greedy path and its fallbacks (trailing digits, zones, IPv4-mapped and
/// over-long IPv6, a name, nothing at all).
#[doc(hidden)]
pub const NEAR_ADDRESSES: &[&str] = &[
    "192.0.2.1",
    "1.2.3.4567",
    "1234.1.1.1",
    "1.2.3.",
    "999.1.1.1",
    "2001:db8::1",
    "::1",
    "::",
    "::ffff:192.0.2.9",
    "fe80::1%eth0",
    "fe80::1%",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8",
    "abcde::1",
    "a:b",
    "1:2",
    "1.2.3.4%x",
    "2001:db8::12345",
    "10.0.0.1:22",
    "::1.2.3.4.5",
    "1.2.3.4.5",
    "",
    "x",
    "1.2.3.4 ",
    "host.example",
];

/// What the scanner made of a pattern at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The pattern's match holds the address at this span.
    Addr(usize, usize),
    /// The pattern cannot match here.
    NoMatch,
    /// The scanner cannot tell: run the capturing regex.
    Unknown,
}

/// What comes before the address.
#[derive(Debug, Clone)]
enum Head {
    /// Fixed text (one path: a mismatch means no match).
    Literal(Box<[u8]>),
    /// Anything else without captures that matter, matched anchored for its end.
    Regex(Part),
}

/// `H(?P<addr>IP4|IP6)ZONE R`, taken apart.
#[derive(Debug, Clone)]
pub(crate) struct AddrTail {
    head: Head,
    rest: Part,
    /// The pattern's first item is `^` (the match starts at the search's start).
    anchored: bool,
}

/// The HIR `<HOST>` expands to: the address group's contents and the zone after it.
fn host_parts() -> Option<(Hir, Hir)> {
    let parse = |s: &str| regex_syntax::Parser::new().parse(s).ok();
    Some((parse(&format!("(?:{IP4}|{IP6})"))?, parse(ZONE)?))
}

impl AddrTail {
    /// The parts of `items` (a pattern's top-level concatenation) around its only capture
    /// group that matters, `addr` (a `<HOST>` or `<ADDR>` group), when the shape fits.
    /// Any other named group in `items` means no.
    pub(crate) fn new(items: &[Hir], addr: &str) -> Option<AddrTail> {
        if named_groups(items) != 1 {
            return None;
        }
        let (host, zone) = host_parts()?;
        let k = items.iter().position(
            |h| matches!(h.kind(), HirKind::Capture(c) if c.name.as_deref() == Some(addr)),
        )?;
        let HirKind::Capture(cap) = items[k].kind() else {
            return None;
        };
        if *cap.sub != host || items.get(k + 1)? != &zone {
            return None;
        }
        let head_items = &items[..k];
        let anchored = matches!(
            head_items.first().map(Hir::kind),
            Some(HirKind::Look(Look::Start))
        );
        let literal: Option<Vec<u8>> = head_items
            .iter()
            .map(|h| match h.kind() {
                HirKind::Literal(l) => Some(l.0.to_vec()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.concat());
        let head = match literal {
            Some(bytes) => Head::Literal(bytes.into()),
            None => Head::Regex(Part::new(&Hir::concat(head_items.to_vec()))?),
        };
        let rest = Part::new(&Hir::concat(items[k + 2..].to_vec()))?;
        Some(AddrTail {
            head,
            rest,
            anchored,
        })
    }

    /// Its parts matched by a regex (and so perhaps by the small matcher first): the head when
    /// it is not fixed text, and the rest. For the differential tests of [`super::mini`].
    pub(crate) fn parts_mut(&mut self) -> impl Iterator<Item = &mut Part> {
        let head = match &mut self.head {
            Head::Regex(head) => Some(head),
            Head::Literal(_) => None,
        };
        head.into_iter().chain(std::iter::once(&mut self.rest))
    }

    /// True when the pattern starts with `^`.
    pub(crate) fn anchored(&self) -> bool {
        self.anchored
    }

    /// The address of the pattern's match starting exactly at `at` in `text`.
    pub(crate) fn at(&self, text: &str, at: usize) -> Scan {
        let bytes = text.as_bytes();
        let p = match &self.head {
            Head::Literal(l) => {
                if !bytes.get(at..).is_some_and(|b| b.starts_with(l)) {
                    return Scan::NoMatch;
                }
                at + l.len()
            }
            Head::Regex(head) => match head.end_at(text, at) {
                Some(end) => end,
                // No path of H: no path of the pattern.
                None => return Scan::NoMatch,
            },
        };
        let Some(end) = ip4_first(bytes, p).or_else(|| ip6_first(bytes, p)) else {
            return match self.head {
                // One path to `p`, and no address starts there.
                Head::Literal(_) => Scan::NoMatch,
                Head::Regex(_) => Scan::Unknown,
            };
        };
        let zone_end = zone_first(bytes, end);
        if self.rest.end_at(text, zone_end).is_some() {
            Scan::Addr(p, end)
        } else {
            Scan::Unknown
        }
    }
}

/// How many named capture groups `items` hold, nested ones included.
fn named_groups(items: &[Hir]) -> usize {
    fn count(h: &Hir) -> usize {
        match h.kind() {
            HirKind::Capture(c) => usize::from(c.name.is_some()) + count(&c.sub),
            HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().map(count).sum(),
            HirKind::Repetition(r) => count(&r.sub),
            _ => 0,
        }
    }
    items.iter().map(count).sum()
}

/// Length of the run of bytes from `at` that satisfy `f`.
fn run(bytes: &[u8], at: usize, f: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(at..)
        .map_or(0, |b| b.iter().take_while(|&&c| f(c)).count())
}

/// The end of `IP4`'s first path at `at`: `(?:[0-9]{1,3}\.){3}[0-9]{1,3}`.
fn ip4_first(bytes: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..3 {
        let d = run(bytes, at, |c| c.is_ascii_digit());
        if !(1..=3).contains(&d) || bytes.get(at + d) != Some(&b'.') {
            return None;
        }
        at += d + 1;
    }
    let d = run(bytes, at, |c| c.is_ascii_digit());
    (d >= 1).then(|| at + d.min(3))
}

/// The end of `IP6`'s first path at `at`:
/// `(?:[0-9A-Fa-f]{0,4}:){2,7}(?:IP4|[0-9A-Fa-f]{1,4})?`.
fn ip6_first(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut reps = 0;
    while reps < 7 {
        let h = run(bytes, at, |c| c.is_ascii_hexdigit());
        if h > 4 || bytes.get(at + h) != Some(&b':') {
            break;
        }
        at += h + 1;
        reps += 1;
    }
    if reps < 2 {
        return None;
    }
    if let Some(end) = ip4_first(bytes, at) {
        return Some(end);
    }
    Some(at + run(bytes, at, |c| c.is_ascii_hexdigit()).min(4))
}

/// The end of `ZONE`'s first path at `at`: `(?:%[0-9A-Za-z_.-]{1,32})?`.
fn zone_first(bytes: &[u8], at: usize) -> usize {
    if bytes.get(at) != Some(&b'%') {
        return at;
    }
    let n = run(bytes, at + 1, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
    });
    if n == 0 {
        at
    } else {
        at + 1 + n.min(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_paths_follow_the_greedy_choices() {
        assert_eq!(ip4_first(b"192.0.2.1 port", 0), Some(9));
        assert_eq!(ip4_first(b"1.2.3.4567", 0), Some(9));
        assert_eq!(ip4_first(b"1234.2.3.4", 0), None);
        assert_eq!(ip4_first(b"1.2.3.", 0), None);
        assert_eq!(ip6_first(b"2001:db8::1 port", 0), Some(11));
        assert_eq!(ip6_first(b"::ffff:192.0.2.1]", 0), Some(16));
        assert_eq!(ip6_first(b"1:2:3:4:5:6:7:8:9", 0), Some(15));
        assert_eq!(ip6_first(b"abcde::1", 0), None);
        assert_eq!(ip6_first(b"a:b", 0), None);
        assert_eq!(zone_first(b"%eth0 x", 0), 5);
        assert_eq!(zone_first(b"% x", 0), 0);
    }
}
