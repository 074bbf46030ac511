//! Which of a route's patterns could match a message, per pattern: a pattern with anchored
//! literal prefixes is picked by the message's first byte and a prefix compare; an unanchored
//! pattern whose matches start with one of a few literals is picked when one Aho-Corasick pass
//! finds such a literal in the message; only the rest share a `RegexSet`. One pattern without
//! a prefix no longer sends every pattern of the route through the set, so the cost per message
//! stays nearly flat as filters are added. Candidates are only a necessary condition: the
//! caller runs each one's regex.

use aho_corasick::AhoCorasick;
use regex::{RegexSet, RegexSetBuilder};

use crate::filter::prefix::{prefixes_of, starting_literals};

/// The candidate patterns of a route, found without running their regexes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dispatch {
    /// For each first byte, the patterns (ascending) one of whose prefixes starts with it.
    by_byte: Vec<Vec<usize>>,
    /// The literal prefixes of each pattern; None for the patterns in `rest`.
    prefixes: Vec<Option<Vec<Box<[u8]>>>>,
    /// The literals one of which starts every match of an unanchored pattern, and the pattern
    /// of each literal.
    inner: Option<(AhoCorasick, Vec<usize>)>,
    /// The patterns with neither, as one set, and their indexes (ascending).
    rest: Option<(RegexSet, Vec<usize>)>,
}

/// Literals at least this long gate a pattern; shorter ones would make it a candidate for
/// nearly every message.
const MIN_INNER_LITERAL: usize = 4;

/// The literals one of which starts every match of `pattern`, when they are few and long
/// enough to be worth a search.
fn starts_of(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    starting_literals(pattern, false).filter(|all| all.iter().all(|l| l.len() >= MIN_INNER_LITERAL))
}

impl Dispatch {
    /// The dispatch of `patterns` (expanded regex texts), numbered as given.
    pub(crate) fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Dispatch, regex::Error> {
        let prefixes: Vec<Option<Vec<Box<[u8]>>>> = patterns
            .iter()
            .map(|p| prefixes_of(p.as_ref()).filter(|all| all.iter().all(|l| !l.is_empty())))
            .collect();
        let mut by_byte = vec![Vec::new(); 256];
        let mut rest = Vec::new();
        let (mut literals, mut owners) = (Vec::new(), Vec::new());
        for (index, found) in prefixes.iter().enumerate() {
            match found {
                Some(literals) => {
                    let mut firsts: Vec<u8> = literals.iter().map(|l| l[0]).collect();
                    firsts.sort_unstable();
                    firsts.dedup();
                    for byte in firsts {
                        by_byte[usize::from(byte)].push(index);
                    }
                }
                None => match starts_of(patterns[index].as_ref()) {
                    Some(starts) => {
                        owners.extend(std::iter::repeat_n(index, starts.len()));
                        literals.extend(starts);
                    }
                    None => rest.push(index),
                },
            }
        }
        let inner = if literals.is_empty() {
            None
        } else {
            match AhoCorasick::new(&literals) {
                Ok(ac) => Some((ac, owners)),
                // Too big for an automaton (not with 64 literals a pattern, but never panic):
                // those patterns go to the set instead.
                Err(_) => {
                    rest.extend(owners);
                    rest.sort_unstable();
                    rest.dedup();
                    None
                }
            }
        };
        let rest = if rest.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(rest.iter().map(|&i| patterns[i].as_ref()))
                .size_limit(64 << 20)
                .build()?;
            Some((set, rest))
        };
        Ok(Dispatch {
            by_byte,
            prefixes,
            inner,
            rest,
        })
    }

    /// Calls `candidate(index, loose)` in ascending order for every pattern that could match
    /// `message`; patterns it skips cannot match. `loose` marks a candidate found only by a
    /// literal somewhere in the message: worth a cheap `is_match` before any captures.
    pub(crate) fn candidates(&self, message: &str, mut candidate: impl FnMut(usize, bool)) {
        let bytes = message.as_bytes();
        let prefixed = bytes
            .first()
            .and_then(|&b| self.by_byte.get(usize::from(b)))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
            .filter(|&i| {
                self.prefixes[i]
                    .as_ref()
                    .is_some_and(|p| p.iter().any(|l| bytes.starts_with(l)))
            });
        if self.inner.is_none() && self.rest.is_none() {
            prefixed.for_each(|i| candidate(i, false));
            return;
        }
        let mut all: Vec<(usize, bool)> = prefixed.map(|i| (i, false)).collect();
        if let Some((ac, owners)) = &self.inner {
            all.extend(
                ac.find_overlapping_iter(bytes)
                    .map(|m| (owners[m.pattern().as_usize()], true)),
            );
        }
        if let Some((set, owners)) = &self.rest {
            if set.is_match(message) {
                all.extend(set.matches(message).iter().map(|i| (owners[i], false)));
            }
        }
        // Patterns are tried in their order, each once (each pattern has one path).
        all.sort_unstable();
        all.dedup();
        all.into_iter().for_each(|(i, loose)| candidate(i, loose));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The candidates whose regex matches: what the router ends up trying.
    fn found(d: &Dispatch, patterns: &[&str], message: &str) -> Vec<usize> {
        let mut out = Vec::new();
        d.candidates(message, |i, _| out.push(i));
        assert!(out.windows(2).all(|w| w[0] < w[1]), "in order, once each");
        out.into_iter()
            .filter(|&i| regex::Regex::new(patterns[i]).unwrap().is_match(message))
            .collect()
    }

    #[test]
    fn every_kind_of_pattern_is_sorted_to_its_path() {
        let patterns = [
            r"^Failed password for \S+ from (\S+)",
            r"(?:error: )?maximum authentication attempts",
            r"^(?:Invalid|Illegal) user \S+ from (\S+)",
            r"\d+ failed logins from (\S+)",
        ];
        let d = Dispatch::new(&patterns).unwrap();
        assert_eq!(d.by_byte[usize::from(b'F')], [0]);
        assert_eq!(d.by_byte[usize::from(b'I')], [2]);
        assert_eq!(d.inner.as_ref().unwrap().1, [1, 1]);
        assert_eq!(d.rest.as_ref().unwrap().1, [3]);
        let mut none = Vec::new();
        d.candidates("Accepted password for bob", |i, _| none.push(i));
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(
            found(&d, &patterns, "Failed password for root from 192.0.2.1"),
            [0]
        );
        assert_eq!(
            found(
                &d,
                &patterns,
                "error: maximum authentication attempts exceeded"
            ),
            [1]
        );
        assert_eq!(
            found(
                &d,
                &patterns,
                "Illegal user x from 192.0.2.1, 3 failed logins from 192.0.2.1"
            ),
            [2, 3]
        );
        assert!(found(&d, &patterns, "").is_empty());
    }

    #[test]
    fn the_dispatch_agrees_with_a_plain_set() {
        let patterns = [
            r"^a(b|c)d",
            r"x+y",
            r"^abd",
            r"^(?:e|f)g",
            r"g$",
            r"^h",
            r"(?:quux|frob)nic",
            r"zzzz",
        ];
        let d = Dispatch::new(&patterns).unwrap();
        let set = RegexSet::new(patterns).unwrap();
        for message in [
            "abd",
            "acdg",
            "xxy",
            "fg",
            "eg",
            "h",
            "hxy",
            "q",
            "",
            "abdxyg",
            "quuxnic",
            "afrobnic",
            "zzzzz",
            "frobni",
            "hzzzzquuxnic",
        ] {
            let want: Vec<usize> = set.matches(message).iter().collect();
            assert_eq!(found(&d, &patterns, message), want, "{message}");
        }
    }
}
