//! Which of a route's patterns could match a message, per pattern: a pattern with strong anchored
//! literal prefixes is picked by the message's first byte and a prefix compare; any other
//! pattern that requires one of a few literals somewhere in every match (see `required`: the
//! most selective such set, ` Service unavailable; ` rather than ` from `) is picked when one
//! Aho-Corasick pass over all patterns' literals finds one of its own in the message; only
//! patterns without any such literal share a `RegexSet` (none of the shipped library's). So a
//! message meets only the few patterns whose literals it contains, and the cost per message
//! stays nearly flat as filters are added. Candidates are only a necessary condition: the
//! caller runs each one's regex.

use aho_corasick::AhoCorasick;
use regex::{RegexSet, RegexSetBuilder};

use crate::filter::prefix::{prefixes_of, starting_literals};
use crate::filter::required::{required_literals, selectivity, MIN_REQUIRED};

/// The candidate patterns of a route, found without running their regexes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dispatch {
    /// For each first byte, the patterns (ascending) one of whose prefixes starts with it.
    by_byte: Vec<Vec<usize>>,
    /// The literal prefixes of each pattern; None for the patterns in `rest`.
    prefixes: Vec<Option<Vec<Box<[u8]>>>>,
    /// The literals one of which every match of a gated pattern contains, and the pattern of
    /// each literal.
    inner: Option<(AhoCorasick, Vec<usize>)>,
    /// The patterns with neither, as one set, and their indexes (ascending).
    rest: Option<(RegexSet, Vec<usize>)>,
}

/// The literals one of which occurs in every match of `pattern`, when they are few and long
/// enough to be worth a search: the most selective required set (see `required`), else the
/// literals every match starts with.
fn gate_of(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    required_literals(pattern).or_else(|| {
        starting_literals(pattern, false).filter(|all| all.iter().all(|l| l.len() >= MIN_REQUIRED))
    })
}

/// Alternative literals one of which a pattern's matches start with, or contain.
type Literals = Vec<Box<[u8]>>;

/// A prefix set whose weakest literal scores below this (`[`, `<`, `pam_`: one short word or
/// a bracket) picks a pattern for too many messages of other services; a better gate wins.
const WEAK_PREFIX: f64 = 8.0;

/// How `pattern` can be picked: by its anchored literal prefixes, by its gate, both or neither.
fn paths_of(pattern: &str) -> (Option<Literals>, Option<Literals>) {
    let prefix = prefixes_of(pattern).filter(|all| all.iter().all(|l| !l.is_empty()));
    (prefix, gate_of(pattern))
}

/// True when `gate` should pick a pattern rather than its anchored `prefix`: the prefix is
/// weak and the gate more selective. Only worth it when the route runs the Aho-Corasick pass
/// anyway; a route whose patterns all have prefixes never runs it.
fn gate_beats(prefix: &Literals, gate: &Literals) -> bool {
    let strength = selectivity(prefix);
    strength < WEAK_PREFIX && selectivity(gate) > strength
}

impl Dispatch {
    /// The dispatch of `patterns` (expanded regex texts), numbered as given.
    pub(crate) fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Dispatch, regex::Error> {
        let mut prefixes: Vec<Option<Vec<Box<[u8]>>>> = Vec::with_capacity(patterns.len());
        let mut by_byte = vec![Vec::new(); 256];
        let mut rest = Vec::new();
        let (mut literals, mut owners) = (Vec::new(), Vec::new());
        let paths: Vec<_> = patterns.iter().map(|p| paths_of(p.as_ref())).collect();
        let scans = paths.iter().any(|(p, g)| p.is_none() && g.is_some());
        for (index, (prefix, gate)) in paths.into_iter().enumerate() {
            let prefix = match (prefix, &gate) {
                (Some(p), Some(g)) if scans && gate_beats(&p, g) => None,
                (prefix, _) => prefix,
            };
            if let Some(prefix) = &prefix {
                let mut firsts: Vec<u8> = prefix.iter().map(|l| l[0]).collect();
                firsts.sort_unstable();
                firsts.dedup();
                for byte in firsts {
                    by_byte[usize::from(byte)].push(index);
                }
            } else if let Some(gate) = gate {
                owners.extend(std::iter::repeat_n(index, gate.len()));
                literals.extend(gate);
            } else {
                rest.push(index);
            }
            prefixes.push(prefix);
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
        let prefixed = self.prefixed(bytes);
        if self.inner.is_none() && self.rest.is_none() {
            prefixed.for_each(|i| candidate(i, false));
            return;
        }
        if self.prefixes.len() > Picked::BITS {
            return self.candidates_sorted(message, candidate);
        }
        // Each pattern has one path, so a pattern picked is loose or not by its path alone:
        // one bit per pattern, the lowest first, is the sorted, deduplicated list.
        let mut picked = Picked::default();
        prefixed.for_each(|i| picked.add(i, false));
        self.unprefixed(message, |i, loose| picked.add(i, loose));
        picked.for_each(candidate);
    }

    /// The patterns picked by a literal inside the message (`loose`) and by the rest's regex set.
    fn unprefixed(&self, message: &str, mut add: impl FnMut(usize, bool)) {
        if let Some((ac, owners)) = &self.inner {
            for m in ac.find_overlapping_iter(message.as_bytes()) {
                add(owners[m.pattern().as_usize()], true);
            }
        }
        if let Some((set, owners)) = &self.rest {
            if set.is_match(message) {
                set.matches(message)
                    .iter()
                    .for_each(|i| add(owners[i], false));
            }
        }
    }

    /// The patterns picked by the first byte of `bytes` and one of their literal prefixes.
    fn prefixed<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        bytes
            .first()
            .and_then(|&b| self.by_byte.get(usize::from(b)))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
            .filter(move |&i| {
                self.prefixes[i]
                    .as_ref()
                    .is_some_and(|p| p.iter().any(|l| bytes.starts_with(l)))
            })
    }

    /// [`Dispatch::candidates`] for a route of more patterns than [`Picked`] holds: the
    /// candidates gathered in a vector, sorted and deduplicated.
    fn candidates_sorted(&self, message: &str, mut candidate: impl FnMut(usize, bool)) {
        let mut all: Vec<(usize, bool)> = self
            .prefixed(message.as_bytes())
            .map(|i| (i, false))
            .collect();
        self.unprefixed(message, |i, loose| all.push((i, loose)));
        // Patterns are tried in their order, each once (each pattern has one path).
        all.sort_unstable();
        all.dedup();
        all.into_iter().for_each(|(i, loose)| candidate(i, loose));
    }
}

/// The candidates of one message as bits (pattern `i` is bit `i`), so a route of up to
/// [`Picked::BITS`] patterns gathers them without allocating.
#[derive(Debug, Default, Clone, Copy)]
struct Picked {
    any: u128,
    loose: u128,
}

impl Picked {
    /// Patterns a route may have for its candidates to be gathered as bits.
    const BITS: usize = 128;

    fn add(&mut self, i: usize, loose: bool) {
        self.any |= 1 << i;
        if loose {
            self.loose |= 1 << i;
        }
    }

    /// Calls `candidate(index, loose)` for each, lowest first.
    fn for_each(self, mut candidate: impl FnMut(usize, bool)) {
        let mut rest = self.any;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            candidate(i, self.loose & (1 << i) != 0);
        }
    }
}

/// A dispatch next to a plain `RegexSet` over the same patterns, for tests outside the crate
/// (the shipped filters' lines and injection sweeps): the dispatch must offer every pattern the
/// set says matches.
#[doc(hidden)]
#[derive(Debug)]
pub struct DispatchCheck {
    dispatch: Dispatch,
    set: RegexSet,
}

impl DispatchCheck {
    /// Both over `patterns` (expanded regex texts).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<DispatchCheck, regex::Error> {
        let set = RegexSetBuilder::new(patterns.iter().map(AsRef::as_ref))
            .size_limit(64 << 20)
            .build()?;
        Ok(DispatchCheck {
            dispatch: Dispatch::new(patterns)?,
            set,
        })
    }

    /// The patterns that match `message` but that the dispatch did not offer (empty when it
    /// is right), and how many it offered.
    pub fn missed(&self, message: &str) -> (Vec<usize>, usize) {
        let mut offered = Vec::new();
        self.dispatch.candidates(message, |i, _| offered.push(i));
        let missed = self
            .set
            .matches(message)
            .iter()
            .filter(|i| offered.binary_search(i).is_err())
            .collect();
        (missed, offered.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pattern of every kind: prefixed, gated by a literal inside, weakly prefixed, in
    /// the set.
    const KINDS: [&str; 6] = [
        r"^Failed password for \S+ from (\S+)",
        r"(?:error: )?maximum authentication attempts",
        r"^(?:Invalid|Illegal) user \S+ from (\S+)",
        r"\d+ failed logins from (\S+)",
        r"\d+ ab(\S+)",
        r"^User \S+ from (\S+) not allowed because",
    ];

    /// Patterns gated by literals inside them (optional parts, alternations, repetitions,
    /// case-insensitive letters, small classes, a weak prefix).
    const GATED: [&str; 8] = [
        r"\d+ (?:Failed|Invalid) (?:user )?login from (\S+)",
        r"(?i)\d root login",
        r"x(?:abcd)*y(?:efgh){1,}z",
        r"[Pp]assword mismatch for \S+",
        r"\S+ (?:quux|frob)(?:nic)?ate",
        r"^(?:\[\d+\] )?(?:\w+: )?rejected: \w+",
        r"^U\w* not allowed because",
        r"(?:a|bc)?d(?:ee)?f\d+",
    ];

    /// The candidates whose regex matches: what the router ends up trying.
    fn found(d: &Dispatch, patterns: &[&str], message: &str) -> Vec<usize> {
        let mut out = Vec::new();
        d.candidates(message, |i, _| out.push(i));
        assert!(out.windows(2).all(|w| w[0] < w[1]), "in order, once each");
        out.into_iter()
            .filter(|&i| regex::Regex::new(patterns[i]).unwrap().is_match(message))
            .collect()
    }

    /// The dispatch over `patterns` finds, in each of `messages`, exactly what a plain
    /// `RegexSet` of them finds.
    fn agrees_with_a_set(patterns: &[&str], messages: &[&str]) {
        let d = Dispatch::new(patterns).unwrap();
        let set = RegexSet::new(patterns).unwrap();
        for message in messages {
            let want: Vec<usize> = set.matches(message).iter().collect();
            assert_eq!(found(&d, patterns, message), want, "{message}");
        }
    }

    #[test]
    fn every_kind_of_pattern_is_sorted_to_its_path() {
        let patterns = KINDS;
        let d = Dispatch::new(&patterns).unwrap();
        assert_eq!(d.by_byte[usize::from(b'F')], [0]);
        assert_eq!(d.by_byte[usize::from(b'I')], [2]);
        // Gated by a literal inside: `maximum authentication attempts`, ` failed logins from `,
        // and ` not allowed because` rather than the weak anchored prefix `User `.
        assert_eq!(d.inner.as_ref().unwrap().1, [1, 3, 5]);
        assert!(d.by_byte[usize::from(b'U')].is_empty());
        assert_eq!(d.rest.as_ref().unwrap().1, [4]);
        // A route whose patterns all have prefixes never scans: the weak one keeps its prefix.
        let prefixed = Dispatch::new(&[patterns[0], patterns[5]]).unwrap();
        assert!(prefixed.inner.is_none() && prefixed.rest.is_none());
        assert_eq!(prefixed.by_byte[usize::from(b'U')], [1]);
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
        assert_eq!(found(&d, &patterns, "7 ab192.0.2.1"), [4]);
        assert_eq!(
            found(&d, &patterns, "User x from 192.0.2.1 not allowed because y"),
            [5]
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
        agrees_with_a_set(
            &patterns,
            &[
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
            ],
        );
    }

    /// Patterns gated by literals inside them (optional parts, alternations, repetitions,
    /// case-insensitive letters, small classes, a weak prefix), on every pair of fragments:
    /// the dispatch finds exactly what a plain set finds.
    #[test]
    fn gated_patterns_agree_with_a_plain_set_on_every_pair_of_fragments() {
        let patterns = GATED;
        let fragments = [
            "",
            "1 ",
            "Failed ",
            "Invalid ",
            "user ",
            "login from ",
            "192.0.2.1",
            "7 ROOT LOGIN",
            "3 root login",
            "x",
            "abcd",
            "y",
            "efgh",
            "z",
            "Password",
            "password mismatch for ",
            "bob",
            "w ",
            "frob",
            "quux",
            "nic",
            "ate",
            "[12] ",
            "smtpd: ",
            "rejected: ",
            "U",
            "Usr",
            " not allowed because",
            "bc",
            "d",
            "ee",
            "f9",
        ];
        let d = Dispatch::new(&patterns).unwrap();
        assert!(d.rest.is_none() || d.rest.as_ref().unwrap().1.len() <= 2);
        let set = RegexSet::new(patterns).unwrap();
        let mut matched = 0;
        for a in fragments {
            for b in fragments {
                for c in ["", " ", "1 ", "efghz", "ate"] {
                    let message = format!("{a}{b}{c}");
                    let want: Vec<usize> = set.matches(&message).iter().collect();
                    matched += want.len();
                    assert_eq!(found(&d, &patterns, &message), want, "{message}");
                }
            }
        }
        assert!(matched > 50, "the fragments make matches: {matched}");
    }

    /// Both ways of gathering candidates (bits, and the sorted vector routes of more than
    /// 128 patterns use) agree, with each candidate's `loose` flag, on the patterns and
    /// messages of the tests above; and a route of more patterns than the bits hold still
    /// finds what a plain set finds.
    #[test]
    fn picked_bits_agree_with_the_sorted_candidates() {
        let sets: [&[&str]; 2] = [&KINDS, &GATED];
        let fragments = [
            "",
            "1 ",
            "Failed password for ",
            "Illegal user ",
            "x from 192.0.2.1",
            " not allowed because",
            "error: maximum authentication attempts",
            "3 failed logins from ",
            "7 ab",
            "Invalid ",
            "login from ",
            "7 ROOT LOGIN",
            "xabcdyefghz",
            "password mismatch for ",
            "w frobnicate",
            "[12] smtpd: rejected: x",
            "User",
            "Usr",
            "bcdeef9",
        ];
        let mut offered = 0;
        for patterns in sets {
            let d = Dispatch::new(patterns).unwrap();
            assert!(d.inner.is_some(), "the gated path is exercised");
            for a in fragments {
                for b in fragments {
                    let message = format!("{a}{b}");
                    let (mut bits, mut sorted) = (Vec::new(), Vec::new());
                    d.candidates(&message, |i, loose| bits.push((i, loose)));
                    d.candidates_sorted(&message, |i, loose| sorted.push((i, loose)));
                    assert_eq!(bits, sorted, "{message}");
                    offered += bits.len();
                }
            }
        }
        assert!(offered > 100, "{offered}");
        let many: Vec<String> = (0..Picked::BITS + 5)
            .map(|i| format!(r"\d+ (?:x )?marker{i:03}q (\S+)"))
            .collect();
        let patterns: Vec<&str> = many.iter().map(String::as_str).collect();
        agrees_with_a_set(
            &patterns,
            &[
                "1 marker000q a",
                "2 x marker130q b 3 marker007q c",
                "marker131q",
                "9 marker132q z",
            ],
        );
    }
}
