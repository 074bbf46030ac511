//! Literal-prefix dispatch of anchored failregexes: which patterns could match a message,
//! decided by its first byte and then the literal text each candidate must start with.
//!
//! syslog failregexes are anchored (`^Failed `, `^Invalid user `): comparing a message's first
//! bytes with a handful of literals rules out every pattern but the one that can match, so only
//! its capturing regex runs, once, instead of a `RegexSet` pass over the whole message and then
//! the captures. With many patterns (the sshd filter has over twenty, with several literals
//! each) comparing every literal of every pattern costs more than the match itself, so the
//! patterns are first bucketed by the byte their literals start with: a message is compared
//! only with the literals of its own first byte, in pattern order.

/// Most literals one pattern may expand to before prefix dispatch gives up on it.
const MAX_LITERALS: usize = 64;

/// The anchored literal prefixes of a list of patterns, bucketed by first byte. Unusable
/// (the default) as soon as one pattern has no anchored literal prefix; callers use a
/// `RegexSet` then.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefixes(Option<Dispatch>);

/// One pattern in a first-byte bucket: its index and the rest (after the first byte) of each
/// of its literals that start with the bucket's byte.
type Entry = (usize, Vec<Box<[u8]>>);

#[derive(Debug, Clone)]
struct Dispatch {
    /// For each first byte: (pattern index, the literals of that pattern starting with the byte),
    /// in pattern order. Literal bytes after the first are stored; the first is the bucket.
    buckets: Box<[Vec<Entry>]>,
    /// Patterns one of whose literals is empty: they could match any text, first in no bucket.
    anywhere: Vec<usize>,
    /// Every literal of every pattern, as given (for the tests' plain walk).
    #[cfg_attr(not(test), allow(dead_code))]
    literals: Vec<Vec<Box<[u8]>>>,
}

impl Prefixes {
    /// The prefixes of `patterns` (expanded regex texts), if every one has some.
    pub(crate) fn new<S: AsRef<str>>(patterns: &[S]) -> Prefixes {
        let all: Option<Vec<_>> = patterns.iter().map(|p| prefixes_of(p.as_ref())).collect();
        let Some(literals) = all.filter(|a| !a.is_empty()) else {
            return Prefixes(None);
        };
        let mut buckets: Vec<Vec<Entry>> = vec![Vec::new(); 256];
        let mut anywhere = Vec::new();
        for (index, lits) in literals.iter().enumerate() {
            if lits.iter().any(|l| l.is_empty()) {
                anywhere.push(index);
                continue;
            }
            for lit in lits {
                let bucket = &mut buckets[usize::from(lit[0])];
                match bucket.last_mut() {
                    Some((i, tails)) if *i == index => tails.push(lit[1..].into()),
                    _ => bucket.push((index, vec![lit[1..].into()])),
                }
            }
        }
        Prefixes(Some(Dispatch {
            buckets: buckets.into_boxed_slice(),
            anywhere,
            literals,
        }))
    }

    /// True when [`Prefixes::candidates`] can stand in for a `RegexSet`.
    pub(crate) fn usable(&self) -> bool {
        self.0.is_some()
    }

    /// False when pattern `index` cannot match `text` (the plain walk [`Prefixes::candidates`]
    /// is checked against).
    #[cfg(test)]
    pub(crate) fn could_match(&self, index: usize, text: &str) -> bool {
        match self.0.as_ref().and_then(|d| d.literals.get(index)) {
            Some(prefixes) => prefixes.iter().any(|p| text.as_bytes().starts_with(p)),
            None => true,
        }
    }

    /// Calls `each` with the index of every pattern that could match `text`, in ascending
    /// order, until it returns true (done); the same indices as `could_match` gives, cheaper.
    pub(crate) fn candidates(&self, text: &str, mut each: impl FnMut(usize) -> bool) {
        let Some(d) = &self.0 else {
            return;
        };
        let bytes = text.as_bytes();
        let bucket: &[Entry] = match bytes.first() {
            Some(&b) => &d.buckets[usize::from(b)],
            None => &[],
        };
        let rest = bytes.get(1..).unwrap_or_default();
        let hits = bucket
            .iter()
            .filter(|(_, tails)| tails.iter().any(|t| rest.starts_with(t)))
            .map(|(i, _)| *i);
        if d.anywhere.is_empty() {
            for index in hits {
                if each(index) {
                    return;
                }
            }
            return;
        }
        // Rare: a pattern whose prefix may be empty; merge it in pattern order.
        let mut all: Vec<usize> = hits.chain(d.anywhere.iter().copied()).collect();
        all.sort_unstable();
        for index in all {
            if each(index) {
                return;
            }
        }
    }
}

/// Literals one of which starts every match of `pattern`, when it is anchored at the start of
/// the text and has a small finite set of them.
pub(crate) fn prefixes_of(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    starting_literals(pattern, true)
}

/// Literals one of which starts every match of `pattern`, when there are at most
/// `MAX_LITERALS`; with `anchored`, only for a pattern anchored at the start of the text.
pub(crate) fn starting_literals(pattern: &str, anchored: bool) -> Option<Vec<Box<[u8]>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    if anchored
        && !hir
            .properties()
            .look_set_prefix()
            .contains(regex_syntax::hir::Look::Start)
    {
        return None;
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    if literals.is_empty() || literals.len() > MAX_LITERALS {
        return None;
    }
    Some(literals.iter().map(|l| l.as_bytes().into()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucketed walk gives exactly the patterns `could_match` accepts, in order.
    #[test]
    fn candidates_are_the_patterns_could_match_accepts() {
        let patterns = [
            r"^Failed (?:password|none|publickey) for (?P<h>\S+)$",
            r"^(?:error: )?maximum (?:x|y)",
            r"^(?i)ab",
            r"^Failed password",
            r"^(?:fatal: |error: )?banner",
            r"^x?y",
        ];
        let p = Prefixes::new(&patterns);
        assert!(p.usable());
        let texts = [
            "Failed password for x",
            "Failed publickey for y",
            "Failed none",
            "error: maximum y",
            "maximum x",
            "error: banner",
            "fatal: banner",
            "banner",
            "aB",
            "AB",
            "Ab c",
            "y",
            "xy",
            "",
            "F",
            "Failed",
            "é",
        ];
        for text in texts {
            let want: Vec<usize> = (0..patterns.len())
                .filter(|&i| p.could_match(i, text))
                .collect();
            let mut got = Vec::new();
            p.candidates(text, |i| {
                got.push(i);
                false
            });
            assert_eq!(got, want, "{text:?}");
        }
        let mut first = Vec::new();
        p.candidates("Failed password for x", |i| {
            first.push(i);
            true
        });
        assert_eq!(first, [0], "stops when told");
        let mut none = 0;
        Prefixes::default().candidates("Failed", |_| {
            none += 1;
            false
        });
        assert_eq!(none, 0);
    }
}
