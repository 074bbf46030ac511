//! Required literals: for a pattern, a small set of literals one of which occurs in every text
//! the pattern matches, anywhere in the match (not only at its start). The dispatch gates a
//! pattern by one Aho-Corasick pass over every pattern's set: a message containing none of a
//! pattern's literals cannot match it, so its regex never runs.
//!
//! The walk over the pattern's HIR keeps, for each node, what is known of the texts it matches
//! (the way RE2's prefilter and codesearch do it): the exact set when it is small and finite,
//! sets that every match starts and ends with, and the best required set found inside it.
//! Concatenations glue neighbouring exact parts into longer literals (`Failed `, a class of two
//! bytes and ` for ` make `Failed password for` when they are adjacent); optional or starred
//! parts require nothing; alternations require one of their branches' sets. Of all the sets a
//! pattern requires, the most selective one is kept (see [`score`]).

use regex_syntax::hir::{Class, Hir, HirKind};

/// Most alternatives a set may have; a larger product of alternatives is cut where it grew.
const MAX_SET: usize = 64;

/// Most characters a class may have to be expanded into alternatives (`[Pp]`, `[45]`).
const MAX_CLASS: usize = 8;

/// Literals shorter than this are not worth a gate: they occur in nearly every message.
pub(crate) const MIN_REQUIRED: usize = 4;

/// A set of alternative literals (no order).
type Set = Vec<Vec<u8>>;

/// What the walk knows of the texts one node matches.
#[derive(Debug, Clone)]
struct Info {
    /// Every match is one of these (None: not small and finite).
    exact: Option<Set>,
    /// Every match starts with one of these (`[""]`: nothing known).
    prefix: Set,
    /// Every match ends with one of these (`[""]`: nothing known).
    suffix: Set,
    /// The best set of which every match contains one, found so far (None: none found).
    required: Option<(f64, Set)>,
}

impl Info {
    fn exact(set: Set) -> Info {
        let required = scored(&set);
        Info {
            prefix: set.clone(),
            suffix: set.clone(),
            exact: Some(set),
            required,
        }
    }

    fn unknown() -> Info {
        Info {
            exact: None,
            prefix: vec![Vec::new()],
            suffix: vec![Vec::new()],
            required: None,
        }
    }
}

/// A set of literals one of which every match of `pattern` contains, each at least
/// [`MIN_REQUIRED`] bytes, at most 64 of them: the most selective such set the walk finds.
/// None when the pattern does not parse or requires nothing that long.
pub(crate) fn required_literals(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let (_, set) = walk(&hir).required?;
    Some(set.into_iter().map(Vec::into_boxed_slice).collect())
}

/// How selective a set is as a gate: its weakest alternative's [`literal_score`], less a little
/// for every alternative. None when an alternative is too short (or the set is empty or large).
fn score(set: &Set) -> Option<f64> {
    if set.is_empty() || set.len() > MAX_SET {
        return None;
    }
    let weakest = set.iter().map(|l| literal_score(l)).reduce(f64::min)?;
    if set.iter().any(|l| l.len() < MIN_REQUIRED) {
        return None;
    }
    Some(weakest - (set.len() as f64).log2())
}

/// Rough rarity of a literal in log text: spaces and lower-case letters are common, capitals,
/// digits and punctuation rarer. A literal that is one common word with its spaces (` from `,
/// `user`) scores low, so a longer or more distinctive one elsewhere in the pattern wins.
fn literal_score(literal: &[u8]) -> f64 {
    const COMMON: [&str; 12] = [
        "from",
        "user",
        "for",
        "failed",
        "invalid",
        "client",
        "error",
        "port",
        "login",
        "host",
        "with",
        "connection",
    ];
    let word = String::from_utf8_lossy(literal).trim().to_ascii_lowercase();
    let base: f64 = literal
        .iter()
        .map(|&b| match b {
            b' ' => 0.5,
            b'a'..=b'z' => 1.0,
            b'A'..=b'Z' | b'0'..=b'9' => 1.5,
            _ => 2.0,
        })
        .sum();
    if COMMON.contains(&word.as_str()) {
        base / 2.0
    } else {
        base
    }
}

/// `set` as a required set with its score: an alternative that contains another is dropped
/// (a text containing it contains the other too).
/// How selective a gate of these literals is (higher: fewer messages contain one), whatever
/// their length: for comparing an anchored prefix set with a required set.
pub(crate) fn selectivity(set: &[Box<[u8]>]) -> f64 {
    let weakest = set.iter().map(|l| literal_score(l)).reduce(f64::min);
    weakest.unwrap_or(0.0) - (set.len().max(1) as f64).log2()
}

fn scored(set: &Set) -> Option<(f64, Set)> {
    let contains = |a: &[u8], b: &[u8]| {
        a.len() > b.len() && (b.is_empty() || a.windows(b.len()).any(|w| w == b))
    };
    let kept: Set = set
        .iter()
        .filter(|a| !set.iter().any(|b| contains(a, b)))
        .cloned()
        .collect();
    score(&kept).map(|s| (s, kept))
}

/// The better of two candidate sets.
fn better(a: Option<(f64, Set)>, b: Option<(f64, Set)>) -> Option<(f64, Set)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Every `a` followed by every `b`; None when that makes more than [`MAX_SET`].
fn cross(a: &Set, b: &Set) -> Option<Set> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let mut out: Set = a
        .iter()
        .flat_map(|x| {
            b.iter().map(move |y| {
                let mut l = x.clone();
                l.extend_from_slice(y);
                l
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Both sets' alternatives; None when that makes more than [`MAX_SET`].
fn union(mut a: Set, b: &Set) -> Option<Set> {
    a.extend(b.iter().cloned());
    a.sort_unstable();
    a.dedup();
    (a.len() <= MAX_SET).then_some(a)
}

/// The characters of a small class, each UTF-8 encoded (None for a large class).
fn class_members(class: &Class) -> Option<Set> {
    let mut out = Set::new();
    match class {
        Class::Unicode(c) => {
            for r in c.ranges() {
                let n = u32::from(r.end()) - u32::from(r.start()) + 1;
                if out.len() + n as usize > MAX_CLASS {
                    return None;
                }
                for ch in (u32::from(r.start())..=u32::from(r.end())).filter_map(char::from_u32) {
                    out.push(ch.to_string().into_bytes());
                }
            }
        }
        Class::Bytes(c) => {
            for r in c.ranges() {
                let n = usize::from(r.end() - r.start()) + 1;
                if out.len() + n > MAX_CLASS {
                    return None;
                }
                out.extend((r.start()..=r.end()).map(|b| vec![b]));
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn walk(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::exact(vec![Vec::new()]),
        HirKind::Literal(l) => Info::exact(vec![l.0.to_vec()]),
        HirKind::Class(c) => class_members(c).map_or_else(Info::unknown, Info::exact),
        HirKind::Capture(c) => walk(&c.sub),
        HirKind::Repetition(r) => {
            if r.min == 0 {
                return Info::unknown();
            }
            let sub = walk(&r.sub);
            if r.max == Some(1) {
                return sub;
            }
            // One or more: every match starts with a match of the part and ends with one, and
            // contains what the part requires.
            let required = better(sub.required.clone(), sub.exact.as_ref().and_then(scored));
            Info {
                exact: None,
                prefix: sub.prefix,
                suffix: sub.suffix,
                required,
            }
        }
        HirKind::Concat(parts) => concat(parts),
        HirKind::Alternation(branches) => alternation(branches),
    }
}

/// A concatenation: exact neighbours glued into runs; a run ends where a part is not exact
/// (extended by that part's prefix, restarted from its suffix) or the product grows too big.
fn concat(parts: &[Hir]) -> Info {
    let mut run: Set = vec![Vec::new()];
    let mut prefix: Option<Set> = None;
    let mut required: Option<(f64, Set)> = None;
    let mut all_exact = true;
    for part in parts {
        let info = walk(part);
        required = better(required, info.required.clone());
        match &info.exact {
            Some(exact) => match cross(&run, exact) {
                Some(longer) => run = longer,
                None => {
                    required = better(required, scored(&run));
                    prefix.get_or_insert_with(|| run.clone());
                    all_exact = false;
                    run = exact.clone();
                }
            },
            None => {
                let closed = cross(&run, &info.prefix).unwrap_or_else(|| run.clone());
                required = better(required, scored(&closed));
                prefix.get_or_insert(closed);
                all_exact = false;
                run = info.suffix.clone();
            }
        }
    }
    required = better(required, scored(&run));
    if all_exact {
        return Info {
            prefix: run.clone(),
            suffix: run.clone(),
            exact: Some(run),
            required,
        };
    }
    Info {
        exact: None,
        prefix: prefix.unwrap_or_else(|| vec![Vec::new()]),
        suffix: run,
        required,
    }
}

/// An alternation: every match is one branch's, so it requires one of each branch's sets.
fn alternation(branches: &[Hir]) -> Info {
    let infos: Vec<Info> = branches.iter().map(walk).collect();
    let exact = infos
        .iter()
        .try_fold(Set::new(), |acc, i| union(acc, i.exact.as_ref()?));
    let ends = |get: fn(&Info) -> &Set| {
        infos
            .iter()
            .try_fold(Set::new(), |acc, i| union(acc, get(i)))
            .unwrap_or_else(|| vec![Vec::new()])
    };
    let (prefix, suffix) = (ends(|i| &i.prefix), ends(|i| &i.suffix));
    let required = infos
        .iter()
        .try_fold(Set::new(), |acc, i| {
            let own = better(i.required.clone(), i.exact.as_ref().and_then(scored))?;
            union(acc, &own.1)
        })
        .and_then(|set| scored(&set));
    let required = match &exact {
        Some(e) => better(required, scored(e)),
        None => required,
    };
    Info {
        exact,
        prefix,
        suffix,
        required,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pattern: &str) -> Option<Vec<String>> {
        let mut out: Vec<String> = required_literals(pattern)?
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        out.sort();
        Some(out)
    }

    #[test]
    fn literals_are_glued_across_classes_and_groups() {
        assert_eq!(
            req(r"^\S+ Failed (?:password|none) for (\S+)").unwrap(),
            [" Failed none for ", " Failed password for "]
        );
        assert_eq!(
            req(r"(?P<x>[Pp]assword) mismatch").unwrap(),
            ["Password mismatch", "password mismatch"]
        );
        // A required capture group is looked through, its neighbours glued on.
        assert_eq!(req(r"\d+ (rejected) \d").unwrap(), [" rejected "]);
    }

    #[test]
    fn optional_and_starred_parts_require_nothing() {
        // The long optional part is skipped; the short required part is all there is.
        assert_eq!(
            req(r"\d(?:authentication failure)? from \S+").unwrap(),
            [" from "]
        );
        assert_eq!(req(r"(?:abcdefgh)*\d+"), None);
        assert_eq!(req(r"(?:abcdefgh){0,3}x"), None);
        assert_eq!(req(r"(?:abcdefgh)??x"), None);
        // Optional parts break a run: `ab` and `cd` are not glued over it.
        assert_eq!(req(r"\dab(?:x)?cd\d"), None);
        // One or more: the part itself is required.
        assert_eq!(req(r"\d(?:rejected)+\d").unwrap(), ["rejected"]);
        assert_eq!(req(r"\d(?:rejected){2,}\d").unwrap(), ["rejected"]);
        // A repetition's ends glue to their neighbours.
        assert_eq!(req(r"\d(?:ab\d+cd)+ef\d").unwrap().len(), 1);
    }

    #[test]
    fn alternations_require_one_set_of_each_branch() {
        assert_eq!(
            req(r"\d(?:\S+ refused connect|\d+ dropped: too many)").unwrap(),
            [" dropped: too many", " refused connect"]
        );
        // One branch without a long literal: the alternation gives nothing; the rest may.
        assert_eq!(req(r"\d(?:abcdefgh|\S+)\d"), None);
        assert_eq!(
            req(r"\d(?:abcdefgh|\S+) tail-literal\d").unwrap(),
            [" tail-literal"]
        );
        // Short exact branches glue onto their neighbours.
        assert_eq!(
            req(r#"\S+ "(?:GET|POST) /+\S"#).unwrap(),
            [" \"GET /", " \"POST /"]
        );
    }

    #[test]
    fn case_insensitive_patterns_expand_or_fall_back() {
        // `(?i)` turns letters into classes; short ones expand into every spelling.
        let set = req(r"\d(?i)root\d").unwrap();
        assert_eq!(set.len(), 16);
        assert!(set.contains(&"RoOt".to_string()));
        // Too many spellings for one set: cut into pieces that stay within the limit.
        let long = req(r"\d(?i)authentication\d").unwrap();
        assert!(long.len() <= MAX_SET && long.iter().all(|l| l.len() >= MIN_REQUIRED));
        for literal in &long {
            let text = "1AuThEnTiCaTiOn1";
            let hit = text
                .to_ascii_lowercase()
                .contains(&literal.to_ascii_lowercase());
            assert!(hit, "{literal}");
        }
        // A class too large to expand requires nothing.
        assert_eq!(req(r"[a-z]{10}"), None);
    }

    #[test]
    fn the_most_selective_set_is_chosen() {
        // ` from ` is a common word; the rarer, longer literal wins.
        assert_eq!(
            req(r"\S+ from \S+ \[AUTH-FAIL\] \d").unwrap(),
            [" [AUTH-FAIL] "]
        );
        assert_eq!(req(r"^\S+$"), None);
        assert_eq!(req(r"abc"), None, "too short");
        assert_eq!(req("not parsable ("), None);
    }

    /// Every text a pattern matches contains one of its required literals: checked on matches
    /// of many shapes.
    #[test]
    fn every_match_contains_a_required_literal() {
        let cases: &[(&str, &[&str])] = &[
            (
                r"(?:a|bc)?(?:Failed|Invalid) (?:user )?\w+ from (\d+)",
                &[
                    "Failed user x from 1",
                    "bcInvalid y from 22",
                    "Invalid user x from 1",
                ],
            ),
            (
                r"(?i)pam_unix\(\w+:auth\): (?:authentication|auth) failure",
                &[
                    "PAM_UNIX(sshd:auth): AUTH failure",
                    "pam_unix(x:AUTH): authentication FAILURE",
                ],
            ),
            (r"x{2}y{1,3}-(?:end|stop)", &["xxy-end", "xxyyy-stop"]),
        ];
        for (pattern, texts) in cases {
            let re = regex::Regex::new(pattern).unwrap();
            let set = required_literals(pattern).unwrap();
            for text in *texts {
                let m = re
                    .find(text)
                    .unwrap_or_else(|| panic!("{pattern} on {text}"));
                assert!(
                    set.iter()
                        .any(|l| m.as_str().as_bytes().windows(l.len()).any(|w| w == &l[..])),
                    "{pattern} on {text}: {set:?}"
                );
            }
        }
    }
}
