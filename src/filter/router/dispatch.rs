//! Which of a route's patterns could match a message, per pattern: a pattern with anchored
//! literal prefixes is picked by the message's first byte and a prefix compare, and only the
//! patterns without one share a `RegexSet`. One prefix-less pattern no longer sends every
//! pattern of the route through the set, so the cost per message stays nearly flat as filters
//! are added.

use regex::{RegexSet, RegexSetBuilder};

use crate::filter::engine::prefixes_of;

/// The candidate patterns of a route, found without running their regexes.
#[derive(Debug, Default)]
pub(super) struct Dispatch {
    /// For each first byte, the patterns (ascending) one of whose prefixes starts with it.
    by_byte: Vec<Vec<usize>>,
    /// The literal prefixes of each pattern; None for the patterns in `rest`.
    prefixes: Vec<Option<Vec<Box<[u8]>>>>,
    /// The patterns without usable prefixes, as one set, and their indexes (ascending).
    rest: Option<(RegexSet, Vec<usize>)>,
}

impl Dispatch {
    /// The dispatch of `patterns` (expanded regex texts), numbered as given.
    pub(super) fn new(patterns: &[&str]) -> Result<Dispatch, regex::Error> {
        let prefixes: Vec<Option<Vec<Box<[u8]>>>> = patterns
            .iter()
            .map(|p| prefixes_of(p).filter(|all| all.iter().all(|l| !l.is_empty())))
            .collect();
        let mut by_byte = vec![Vec::new(); 256];
        let mut rest = Vec::new();
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
                None => rest.push(index),
            }
        }
        let rest = if rest.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(rest.iter().map(|&i| patterns[i]))
                .size_limit(64 << 20)
                .build()?;
            Some((set, rest))
        };
        Ok(Dispatch {
            by_byte,
            prefixes,
            rest,
        })
    }

    /// Calls `candidate(index)` in ascending order for every pattern that could match
    /// `message`; patterns it skips cannot match.
    pub(super) fn candidates(&self, message: &str, mut candidate: impl FnMut(usize)) {
        let bytes = message.as_bytes();
        let mut prefixed = bytes
            .first()
            .and_then(|&b| self.by_byte.get(usize::from(b)))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
            .filter(|&i| {
                self.prefixes[i]
                    .as_ref()
                    .is_some_and(|p| p.iter().any(|l| bytes.starts_with(l)))
            })
            .peekable();
        let Some((set, owners)) = &self.rest else {
            prefixed.for_each(candidate);
            return;
        };
        if !set.is_match(message) {
            prefixed.for_each(candidate);
            return;
        }
        // Merge the two ascending sequences, so patterns are tried in their order.
        for index in set.matches(message).iter().map(|i| owners[i]) {
            while let Some(p) = prefixed.next_if(|&p| p < index) {
                candidate(p);
            }
            candidate(index);
        }
        prefixed.for_each(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(d: &Dispatch, message: &str) -> Vec<usize> {
        let mut out = Vec::new();
        d.candidates(message, |i| out.push(i));
        out
    }

    #[test]
    fn prefixed_and_prefixless_patterns_are_tried_in_order() {
        let patterns = [
            r"^Failed password for \S+ from (\S+)",
            r"(?:error: )?maximum authentication attempts",
            r"^(?:Invalid|Illegal) user \S+ from (\S+)",
            r"from (\S+) port \d+ \[preauth\]",
        ];
        let d = Dispatch::new(&patterns).unwrap();
        assert_eq!(found(&d, "Failed password for root from 192.0.2.1"), [0]);
        assert_eq!(found(&d, "Illegal user x from 192.0.2.1"), [2]);
        assert_eq!(
            found(&d, "Invalid user x from 192.0.2.1 port 22 [preauth]"),
            [2, 3]
        );
        assert_eq!(found(&d, "maximum authentication attempts"), [1]);
        assert!(found(&d, "Accepted password for bob").is_empty());
        assert!(found(&d, "").is_empty());
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
        ];
        let d = Dispatch::new(&patterns).unwrap();
        let set = RegexSet::new(patterns).unwrap();
        for message in ["abd", "acdg", "xxy", "fg", "eg", "h", "hxy", "q", "", "abdxyg"] {
            let want: Vec<usize> = set.matches(message).iter().collect();
            let got: Vec<usize> = found(&d, message)
                .into_iter()
                .filter(|&i| regex::Regex::new(patterns[i]).unwrap().is_match(message))
                .collect();
            assert_eq!(got, want, "{message}");
        }
    }
}
