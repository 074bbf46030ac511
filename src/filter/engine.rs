//! The matching engine: failregex/ignoreregex/prefregex compiled once ([`Filter::compile`]) and
//! matched per message, with literal-prefix dispatch and a split capture for `^P(.*)S` patterns.

use std::net::IpAddr;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_automata::util::primitives::NonMaxUsize;
use regex_automata::{meta, Anchored, Input};

use super::addr_scan::{AddrTail, Scan};
use super::dispatch::Dispatch;
use super::mini::Part;
use super::prefix::Prefixes;
use super::template::{self, GroupRole, TagError};

/// Compiled regexes may use this much memory each; a pattern beyond it is a config error.
const REGEX_SIZE_LIMIT: usize = 8 << 20;

/// A part of a pattern (split prefix or suffix, the address scanner's head and rest) as its own
/// regex, under the same size limit as whole patterns; None when it does not build.
pub(crate) fn build_part(hir: &regex_syntax::hir::Hir) -> Option<meta::Regex> {
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .dfa(false),
        )
        .build(&hir.to_string())
        .ok()
}

/// The text of a filter, from a filter file and/or a jail's own keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterSource {
    /// Patterns that find failures; each must contain `<HOST>` or another address tag.
    pub failregex: Vec<String>,
    /// Patterns that veto a failure.
    pub ignoreregex: Vec<String>,
    /// Optional pattern every message must match first; its `<F-CONTENT>` is what failregex sees.
    pub prefregex: Option<String>,
    /// Patterns of a successful login: a match forgives the address's failures in the jail.
    pub successregex: Vec<String>,
    /// Failures that count only when the sender's connection ends without a success
    /// (`Failed publickey`: clients offer several keys before the right one).
    pub pendingregex: Vec<String>,
    /// Second reports of one attempt in other words (`pam_unix ... authentication failure`
    /// before sshd's `Failed password`): held, and absorbed by the next failregex failure of
    /// the same sender and address.
    pub echoregex: Vec<String>,
    /// How long a held failure waits for its connection to go on (`session_ttl`).
    pub session_ttl: Option<std::time::Duration>,
}

/// How a failure found by one pattern is counted (see [`FilterSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailClass {
    /// Counted at once (`failregex`).
    Count,
    /// Held until the connection ends; dropped by a success (`pendingregex`).
    Pending,
    /// Held; absorbed by the next counted failure of the connection (`echoregex`).
    Echo,
}

/// A problem in one pattern: which list, which index, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PatternError {
    /// `failregex[2]`, `ignoreregex[0]`, `successregex[1]` or `prefregex`.
    pub key: String,
    /// What is wrong.
    pub reason: BadPattern,
}

/// Why a pattern (or a filter's set of them) cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadPattern {
    /// The filter has no failregex at all.
    #[error("no failregex: the filter could never find a failure")]
    NoFailregex,
    /// A group tag does not pair up.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// The expanded pattern is not valid `regex` syntax, or is too big.
    #[error(transparent)]
    Regex(#[from] regex::Error),
    /// A failregex without an address tag could never name whom to ban.
    #[error("no <HOST> (or <ADDR>, <IP4>, <IP6>, <SUBNET>): nothing to ban")]
    NoAddress,
    /// A tag written inside `[...]` expands to plain characters, so its group never exists.
    #[error("a tag such as <HOST> stands inside a character class [...], where it cannot capture")]
    TagInClass,
    /// A prefregex without `<F-CONTENT>` would leave failregex nothing to see.
    #[error("prefregex needs <F-CONTENT>...</F-CONTENT> to say what failregex sees")]
    NoContent,
    /// The `<F-CONTENT>` group did not survive expansion (it stood inside a class).
    #[error("prefregex lost its <F-CONTENT> group")]
    LostContent,
}

/// One compiled failregex with the groups that matter.
#[derive(Debug, Clone)]
struct FailPattern {
    regex: Regex,
    addresses: Vec<(usize, GroupRole)>,
    user: Option<usize>,
    nofail: Option<usize>,
    split: Option<Split>,
    /// The address found without the capturing regex (see `addr_scan`), for patterns whose
    /// only named group is one `<HOST>`.
    tail: Option<(AddrTail, usize)>,
}

/// Capture slots on the stack: two per group, group 0 included.
const MAX_SLOTS: usize = 16;
type Slots = [Option<NonMaxUsize>; MAX_SLOTS];

/// A failregex `^P(?P<user>.*)S` (the shape of every shipped filter: fixed text, an
/// attacker-controlled user, then fixed context around the address), matched in two cheap parts
/// instead of running the whole pattern's backtracker, which walks the greedy `.*` over the line
/// and back position by position. Same result as the whole pattern's leftmost-first captures:
/// backtracking tries every continuation of P's first path (the one `^P` alone finds) before any
/// other path of P, and among them the longest `.*` first, i.e. the rightmost start `q` of an
/// `S` match (anchored at `q`); so when such a `q` exists (at or after P's end, with no newline
/// between unless `.` matches it), P's first path, that `q` and S's first path at `q` are the
/// whole pattern's match. When none exists, the whole pattern runs as before.
#[derive(Debug, Clone)]
struct Split {
    /// P, with the small matcher when it fits (then P has no groups of its own to capture).
    pre: Part,
    suf: meta::Regex,
    /// Every match of S starts with this.
    literal: memchr::memmem::FinderRev<'static>,
    /// `.` of the user group also matches `\n`.
    dotall: bool,
    /// The whole pattern's user group.
    user: usize,
    /// For each group of the whole pattern: its index in `pre` or in `suf`.
    in_pre: Vec<Option<usize>>,
    in_suf: Vec<Option<usize>>,
    /// S's address found by the scanner, and its group's index in `suf`.
    tail: Option<(AddrTail, usize)>,
}

/// Where one match put the groups of a failregex.
// A stack value for one match: boxing the slots would bring back the allocation they avoid.
#[allow(clippy::large_enum_variant)]
enum Found<'a> {
    Whole(regex::Captures<'a>),
    /// The scanner's address (the pattern's only named group): group index and span.
    Addr(usize, (usize, usize)),
    Split {
        split: &'a Split,
        pre: Slots,
        suf: Slots,
        user: (usize, usize),
    },
}

impl Found<'_> {
    /// The span of group `g` of the whole pattern.
    fn span(&self, g: usize) -> Option<(usize, usize)> {
        let slot = |slots: &Slots, i: usize| match (slots.get(2 * i)?, slots.get(2 * i + 1)?) {
            (Some(a), Some(b)) => Some((a.get(), b.get())),
            _ => None,
        };
        match self {
            Found::Whole(caps) => caps.get(g).map(|m| (m.start(), m.end())),
            Found::Addr(group, span) => (g == *group).then_some(*span),
            Found::Split {
                split,
                pre,
                suf,
                user,
            } => {
                if g == split.user {
                    Some(*user)
                } else if let Some(i) = split.in_pre.get(g).copied().flatten() {
                    slot(pre, i)
                } else {
                    slot(suf, split.in_suf.get(g).copied().flatten()?)
                }
            }
        }
    }
}

impl FailPattern {
    /// Where the groups of this pattern's match in `content` are: the split, the address
    /// scanner, or the whole pattern's captures, whichever can tell first; None without a match.
    fn find<'a>(&'a self, content: &'a str) -> Option<Found<'a>> {
        if let Some(split) = &self.split {
            match split.find(content) {
                Told::Found(found) => return Some(found),
                Told::NoMatch => return None,
                Told::Unknown => {}
            }
        }
        if let Some((tail, group)) = &self.tail {
            if !tail.anchored() {
                // The regex finds where the leftmost match starts; only an address settles
                // it, else the captures are taken from there, not from 0.
                let start = self.regex.find(content)?.start();
                return Some(match tail.at(content, start) {
                    Scan::Addr(a, b) => Found::Addr(*group, (a, b)),
                    _ => Found::Whole(self.regex.captures_at(content, start)?),
                });
            }
            match tail.at(content, 0) {
                Scan::Addr(a, b) => return Some(Found::Addr(*group, (a, b))),
                Scan::NoMatch => return None,
                Scan::Unknown => {}
            }
        }
        Some(Found::Whole(self.regex.captures(content)?))
    }

    /// The first of this pattern's address groups that `found` filled with a valid address.
    fn address(&self, found: &Found<'_>, content: &str) -> Option<IpAddr> {
        self.addresses
            .iter()
            .filter_map(|&(g, role)| found.span(g).map(|(a, b)| (&content[a..b], role)))
            .find_map(|(t, role)| parse_address(t, role))
    }
}

impl Split {
    /// The split of `expanded` (whose compiled form is `whole`) at its user group, when the
    /// pattern has the shape `^P(?P<user>.*)S` and S starts with a literal.
    fn new(expanded: &str, whole: &Regex, user: usize, addr: Option<&str>) -> Option<Split> {
        use regex_syntax::hir::{Class, HirKind, Look};
        let hir = regex_syntax::Parser::new().parse(expanded).ok()?;
        let HirKind::Concat(items) = hir.kind() else {
            return None;
        };
        if !matches!(items.first()?.kind(), HirKind::Look(Look::Start)) {
            return None;
        }
        let user_name = whole.capture_names().nth(user)??;
        let k = items.iter().position(
            |h| matches!(h.kind(), HirKind::Capture(c) if c.name.as_deref() == Some(user_name)),
        )?;
        let HirKind::Capture(cap) = items[k].kind() else {
            return None;
        };
        let HirKind::Repetition(rep) = cap.sub.kind() else {
            return None;
        };
        if rep.min != 0 || rep.max.is_some() || !rep.greedy {
            return None;
        }
        let HirKind::Class(Class::Unicode(class)) = rep.sub.kind() else {
            return None;
        };
        let any = |class: &regex_syntax::hir::ClassUnicode, skip_newline: bool| {
            let want: &[(char, char)] = if skip_newline {
                &[('\0', '\t'), ('\x0B', '\u{10FFFF}')]
            } else {
                &[('\0', '\u{10FFFF}')]
            };
            class.ranges().len() == want.len()
                && class
                    .ranges()
                    .iter()
                    .zip(want)
                    .all(|(r, w)| (r.start(), r.end()) == *w)
        };
        let dotall = if any(class, true) {
            false
        } else if any(class, false) {
            true
        } else {
            return None;
        };
        let pre_hir = regex_syntax::hir::Hir::concat(items[..k].to_vec());
        let suf_hir = regex_syntax::hir::Hir::concat(items[k + 1..].to_vec());
        let literal = {
            use regex_syntax::hir::literal::{ExtractKind, Extractor};
            let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&suf_hir);
            seq.literals()?;
            let lcp = seq.longest_common_prefix()?;
            if lcp.is_empty() {
                return None;
            }
            memchr::memmem::FinderRev::new(lcp).into_owned()
        };
        let build = |hir: &regex_syntax::hir::Hir| {
            build_part(hir).filter(|r| r.group_info().slot_len() <= MAX_SLOTS)
        };
        let (mut pre, suf) = (Part::new(&pre_hir)?, build(&suf_hir)?);
        if pre.regex().group_info().slot_len() > MAX_SLOTS {
            return None;
        }
        if pre.regex().group_info().slot_len() != 2 {
            // P's own groups are needed: only its regex captures them.
            pre.drop_mini();
        }
        let index_in = |part: &meta::Regex, name: Option<&str>| {
            let name = name?;
            part.group_info()
                .to_index(regex_automata::PatternID::ZERO, name)
        };
        let in_pre = whole
            .capture_names()
            .map(|n| index_in(pre.regex(), n))
            .collect();
        let in_suf = whole.capture_names().map(|n| index_in(&suf, n)).collect();
        let tail = addr.and_then(|name| {
            let suffix = &items[k + 1..];
            let tail = AddrTail::new(suffix, name)?;
            Some((tail, index_in(&suf, Some(name))?))
        });
        Some(Split {
            tail,
            pre,
            suf,
            literal,
            dotall,
            user,
            in_pre,
            in_suf,
        })
    }

    /// The groups of the whole pattern's match in `text`; [`Told::NoMatch`] when P matches
    /// nowhere at the start (every match of `^P(.*)S` begins with one, so the whole pattern
    /// cannot match: a line of another shape with the same first words costs the anchored P
    /// alone, not the whole pattern's captures too), or [`Told::Unknown`] when the cheap path
    /// cannot tell (no match after P's leftmost-first match, or one only another path of P
    /// leads to): then the whole pattern runs.
    fn find<'a>(&'a self, text: &str) -> Told<'a> {
        let mut pre: Slots = [None; MAX_SLOTS];
        if self.pre.has_mini() {
            // P has group 0 alone: its span is all the slots hold.
            let Some(end) = self.pre.end_at(text, 0) else {
                return Told::NoMatch;
            };
            pre[0] = NonMaxUsize::new(0);
            pre[1] = NonMaxUsize::new(end);
        } else {
            let input = Input::new(text).anchored(Anchored::Yes);
            let n = self.pre.regex().group_info().slot_len();
            if self
                .pre
                .regex()
                .search_slots(&input, &mut pre[..n])
                .is_none()
            {
                return Told::NoMatch;
            }
        }
        let Some(start) = pre[1].map(NonMaxUsize::get) else {
            return Told::Unknown;
        };
        let rest = &text.as_bytes()[start..];
        // `.` stops at a newline: S must start before the first one.
        let limit = if self.dotall {
            rest.len()
        } else {
            memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| {
                (nl + self.literal.needle().len()).min(rest.len())
            })
        };
        let mut end = limit;
        let n = self.suf.group_info().slot_len();
        while let Some(i) = self.literal.rfind(&rest[..end]) {
            let q = start + i;
            let mut suf: Slots = [None; MAX_SLOTS];
            let scan = self.tail.as_ref().map(|(tail, g)| (tail.at(text, q), *g));
            let hit = match scan {
                Some((Scan::Addr(a, b), g)) => {
                    suf[2 * g] = NonMaxUsize::new(a);
                    suf[2 * g + 1] = NonMaxUsize::new(b);
                    true
                }
                Some((Scan::NoMatch, _)) => false,
                _ => {
                    let input = Input::new(text).span(q..text.len()).anchored(Anchored::Yes);
                    self.suf.search_slots(&input, &mut suf[..n]).is_some()
                }
            };
            if hit {
                return Told::Found(Found::Split {
                    split: self,
                    pre,
                    suf,
                    user: (start, q),
                });
            }
            // The next candidate starts before this one (occurrences may overlap).
            end = i + self.literal.needle().len() - 1;
        }
        Told::Unknown
    }
}

/// What [`Split::find`] can tell of a line. Returned by value for one call, as the
/// `Option<Found>` before it was (the same size); boxing it would allocate per match.
#[allow(clippy::large_enum_variant)]
enum Told<'a> {
    /// The whole pattern's match.
    Found(Found<'a>),
    /// The whole pattern cannot match.
    NoMatch,
    /// The whole pattern must run to tell.
    Unknown,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    source: FilterSource,
    fail: Vec<FailPattern>,
    /// The class of each pattern of `fail`.
    classes: Vec<FailClass>,
    success: Vec<FailPattern>,
    success_texts: Vec<String>,
    success_prefixes: Prefixes,
    prefixes: Prefixes,
    /// Used when `prefixes` is not: literal gates per pattern, a set for the rest.
    dispatch: Dispatch,
    /// The expanded text of each pattern of `fail` (the dispatch matches; no set is built).
    fail_texts: Vec<String>,
    ignore: RegexSet,
    prefregex: Option<(Regex, usize)>,
}

/// What a filter made of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A failure from `ip`, found by failregex number `regex`.
    Failure(FilterMatch),
    /// A failregex matched, but an ignoreregex (number given) vetoed it.
    Ignored(usize),
    /// Nothing matched, or the match named no valid address.
    Missed,
}

/// The useful parts of a failregex match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMatch {
    /// The address to ban, normalised (IPv4-mapped IPv6 becomes IPv4).
    pub ip: IpAddr,
    /// Index of the failregex that matched.
    pub regex: usize,
    /// `<F-USER>` when the pattern has one (inline when short: no allocation per failure).
    pub user: Option<super::UserName>,
}

impl Filter {
    /// Compiles every pattern, reporting all errors rather than the first.
    pub fn compile(source: &FilterSource) -> Result<Filter, Vec<PatternError>> {
        let mut errors = Vec::new();
        if source.failregex.is_empty() {
            errors.push(PatternError {
                key: "failregex".into(),
                reason: BadPattern::NoFailregex,
            });
        }
        let mut fail = Vec::new();
        let mut classes = Vec::new();
        let mut expanded_fail = Vec::new();
        let lists = [
            ("failregex", &source.failregex, FailClass::Count),
            ("pendingregex", &source.pendingregex, FailClass::Pending),
            ("echoregex", &source.echoregex, FailClass::Echo),
        ];
        for (list, patterns, class) in lists {
            for (i, pattern) in patterns.iter().enumerate() {
                match compile_fail(pattern) {
                    Ok((p, text)) => {
                        fail.push(p);
                        classes.push(class);
                        expanded_fail.push(text);
                    }
                    Err(reason) => errors.push(PatternError {
                        key: format!("{list}[{i}]"),
                        reason,
                    }),
                }
            }
        }
        let mut success = Vec::new();
        let mut success_texts = Vec::new();
        for (i, pattern) in source.successregex.iter().enumerate() {
            match compile_fail(pattern) {
                Ok((p, text)) => {
                    success.push(p);
                    success_texts.push(text);
                }
                Err(reason) => errors.push(PatternError {
                    key: format!("successregex[{i}]"),
                    reason,
                }),
            }
        }
        let mut expanded_ignore = Vec::new();
        for (i, pattern) in source.ignoreregex.iter().enumerate() {
            let expanded = template::expand(pattern)
                .map_err(BadPattern::from)
                .and_then(|e| build_regex(&e.regex).map(|_| e.regex));
            match expanded {
                Ok(text) => expanded_ignore.push(text),
                Err(reason) => errors.push(PatternError {
                    key: format!("ignoreregex[{i}]"),
                    reason,
                }),
            }
        }
        let prefregex = match &source.prefregex {
            None => None,
            Some(p) => match compile_prefregex(p) {
                Ok(pre) => Some(pre),
                Err(reason) => {
                    errors.push(PatternError {
                        key: "prefregex".into(),
                        reason,
                    });
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let prefixes = Prefixes::new(&expanded_fail);
        let dispatch = if prefixes.usable() {
            Dispatch::default()
        } else {
            Dispatch::new(&expanded_fail).map_err(|reason| {
                vec![PatternError {
                    key: "failregex".into(),
                    reason: reason.into(),
                }]
            })?
        };
        let ignore = build_set(&expanded_ignore).map_err(|reason| {
            vec![PatternError {
                key: "ignoreregex".into(),
                reason,
            }]
        })?;
        Ok(Filter {
            source: source.clone(),
            fail,
            classes,
            success_prefixes: Prefixes::new(&success_texts),
            success,
            success_texts,
            prefixes,
            dispatch,
            fail_texts: expanded_fail,
            ignore,
            prefregex,
        })
    }

    /// This filter with the address scanner (`addr_scan`) turned off, so every address comes
    /// from the capturing regex: for the differential tests of the scanner.
    #[doc(hidden)]
    pub fn without_scanner(&self) -> Filter {
        let mut f = self.clone();
        for p in f.fail.iter_mut().chain(f.success.iter_mut()) {
            p.tail = None;
            if let Some(split) = &mut p.split {
                split.tail = None;
            }
        }
        f
    }

    /// This filter with every part matched by its regex alone (no [`super::mini`] program):
    /// for the differential tests of the small matcher.
    #[doc(hidden)]
    pub fn without_mini(&self) -> Filter {
        let mut f = self.clone();
        f.regex_parts_mut().into_iter().for_each(Part::drop_mini);
        f
    }

    /// Every part matched by a regex (and so perhaps by the small matcher first): scanner
    /// heads and rests, split prefixes, of every failregex and successregex. For the
    /// differential tests of [`super::mini`].
    fn regex_parts_mut(&mut self) -> Vec<&mut Part> {
        let mut parts = Vec::new();
        for p in self.fail.iter_mut().chain(self.success.iter_mut()) {
            if let Some((tail, _)) = &mut p.tail {
                parts.extend(tail.parts_mut());
            }
            if let Some(split) = &mut p.split {
                parts.push(&mut split.pre);
                if let Some((tail, _)) = &mut split.tail {
                    parts.extend(tail.parts_mut());
                }
            }
        }
        parts
    }

    /// This filter with every small matcher counting its answers in the returned tally: for
    /// the differential tests of [`super::mini`], which must know the matchers answered.
    #[doc(hidden)]
    pub fn with_mini_tally(&self) -> (Filter, std::sync::Arc<super::mini::MiniTally>) {
        let tally = std::sync::Arc::new(super::mini::MiniTally::default());
        let mut f = self.clone();
        for part in f.regex_parts_mut() {
            part.tally_into(&tally);
        }
        (f, tally)
    }

    /// How many parts (split prefixes, scanner heads and rests) the small matcher serves, for
    /// tests that must know it is in use.
    #[doc(hidden)]
    pub fn mini_parts(&self) -> usize {
        // On a copy: the walk hands out the parts mutably (a test-only count).
        let mut f = self.clone();
        f.regex_parts_mut().iter().filter(|p| p.has_mini()).count()
    }

    /// How many patterns (failregex and successregex, or their split suffixes) the address
    /// scanner serves, for tests that must know it is in use.
    #[doc(hidden)]
    pub fn scanned_patterns(&self) -> usize {
        self.fail
            .iter()
            .chain(&self.success)
            .filter(|p| p.tail.is_some() || p.split.as_ref().is_some_and(|s| s.tail.is_some()))
            .count()
    }

    /// The patterns this filter was built from.
    pub(crate) fn source(&self) -> &FilterSource {
        &self.source
    }

    /// The expanded failregex texts, for a router's combined set.
    pub fn fail_patterns(&self) -> &[String] {
        &self.fail_texts
    }

    /// The expanded successregex texts, for a router's combined dispatch.
    pub fn success_patterns(&self) -> &[String] {
        &self.success_texts
    }

    /// How a failure of pattern `regex` (as [`FilterMatch::regex`] numbers them: failregex,
    /// then pendingregex, then echoregex) is counted.
    pub fn class_of(&self, regex: usize) -> FailClass {
        self.classes.get(regex).copied().unwrap_or(FailClass::Count)
    }

    /// True when some failures are held per connection (pendingregex or echoregex).
    pub fn holds_failures(&self) -> bool {
        self.classes.iter().any(|c| *c != FailClass::Count)
    }

    /// True when the filter has successregex patterns.
    pub fn has_success(&self) -> bool {
        !self.success.is_empty()
    }

    /// The address a successful login in `message` came from (successregex), if any.
    pub fn success(&self, message: &str) -> Option<IpAddr> {
        let content = self.content(message)?;
        if !self.success_prefixes.usable() {
            return (0..self.success.len()).find_map(|i| self.success_for(i, content));
        }
        let mut found = None;
        self.success_prefixes.candidates(content, |i| {
            found = self.success_for(i, content);
            found.is_some()
        });
        found
    }

    /// Runs successregex `index` on `content` (the message, or what prefregex leaves of it).
    pub(crate) fn success_for(&self, index: usize, content: &str) -> Option<IpAddr> {
        let pattern = self.success.get(index)?;
        pattern.address(&pattern.find(content)?, content)
    }

    /// What failregex sees of `message`: all of it, or prefregex's `<F-CONTENT>`.
    fn content<'m>(&self, message: &'m str) -> Option<&'m str> {
        match &self.prefregex {
            None => Some(message),
            Some((pre, group)) => pre
                .captures(message)
                .and_then(|c| c.get(*group))
                .map(|m| m.as_str()),
        }
    }

    /// True when failregex sees only the `<F-CONTENT>` of a prefregex, so the router must call
    /// [`Filter::check`] instead of matching the whole message in a shared set.
    pub(crate) fn has_prefregex(&self) -> bool {
        self.prefregex.is_some()
    }

    /// The full verdict for one message (already trimmed).
    pub fn check(&self, message: &str) -> Verdict {
        let Some(content) = self.content(message) else {
            return Verdict::Missed;
        };
        if self.prefixes.usable() {
            let mut verdict = None;
            self.prefixes.candidates(content, |index| {
                verdict = self.verdict_for(index, content);
                verdict.is_some()
            });
            return verdict.unwrap_or(Verdict::Missed);
        }
        let mut verdict = None;
        self.dispatch.candidates(content, |index, loose| {
            if verdict.is_none()
                && (!loose || !self.gated(index, false) || self.could_match(index, false, content))
            {
                verdict = self.verdict_for(index, content);
            }
        });
        verdict.unwrap_or(Verdict::Missed)
    }

    /// Whether a candidate the dispatch found by a literal alone (a loose one) should be
    /// checked with [`Filter::could_match`] before its match: only when its find is the
    /// capturing regex itself. A split or scanned pattern's find settles a miss for about what
    /// the check costs and a hit without it (an unanchored scanned pattern's check was a
    /// second whole-line search per match: the shipped smtp-auth pattern, 5% of the corpus).
    /// Same verdicts either way: the find is exact, and no match is no verdict.
    pub(crate) fn gated(&self, index: usize, success: bool) -> bool {
        let patterns = if success { &self.success } else { &self.fail };
        patterns
            .get(index)
            .is_some_and(|p| p.split.is_none() && p.tail.is_none())
    }

    /// Whether failregex (or, with `success`, successregex) `index` matches `content` at all:
    /// cheaper than the captures, for candidates a literal alone suggested.
    pub(crate) fn could_match(&self, index: usize, success: bool, content: &str) -> bool {
        let patterns = if success { &self.success } else { &self.fail };
        patterns
            .get(index)
            .is_some_and(|p| p.regex.is_match(content))
    }

    /// Runs failregex `index` (known to match) with captures, then ignoreregex.
    /// None when the capture was not a valid address or the line is marked `<F-NOFAIL>`.
    pub(crate) fn verdict_for(&self, index: usize, content: &str) -> Option<Verdict> {
        let found = self.fail[index].find(content)?;
        self.verdict_from(index, &found, content)
    }

    /// The verdict by the definition, with none of the fast paths (literal dispatch and
    /// prefixes, the split at the user group, the address scanner, the small matcher): each
    /// failregex's whole capturing regex in order, the first with a valid address (and no
    /// `<F-NOFAIL>` mark) deciding, as fail2ban does. What [`Filter::check`] must always agree
    /// with: for the differential tests and the fuzzing of those fast paths.
    #[doc(hidden)]
    pub fn reference_check(&self, message: &str) -> Verdict {
        let Some(content) = self.content(message) else {
            return Verdict::Missed;
        };
        (0..self.fail.len())
            .find_map(|index| {
                let found = Found::Whole(self.fail[index].regex.captures(content)?);
                self.verdict_from(index, &found, content)
            })
            .unwrap_or(Verdict::Missed)
    }

    /// [`Filter::success`] by the definition (see [`Filter::reference_check`]).
    #[doc(hidden)]
    pub fn reference_success(&self, message: &str) -> Option<IpAddr> {
        let content = self.content(message)?;
        self.success.iter().find_map(|pattern| {
            pattern.address(&Found::Whole(pattern.regex.captures(content)?), content)
        })
    }

    /// The verdict of failregex `index` from where its match put the groups.
    fn verdict_from(&self, index: usize, found: &Found<'_>, content: &str) -> Option<Verdict> {
        let pattern = &self.fail[index];
        let text = |g: usize| found.span(g).map(|(a, b)| &content[a..b]);
        if pattern.nofail.is_some_and(|g| found.span(g).is_some()) {
            return None;
        }
        let ip = pattern.address(found, content)?;
        if let Some(ignored) = self.ignore.matches(content).iter().next() {
            return Some(Verdict::Ignored(ignored));
        }
        let user = pattern.user.and_then(text).map(super::UserName::from);
        Some(Verdict::Failure(FilterMatch {
            ip,
            regex: index,
            user,
        }))
    }
}

/// Parses a captured address; IPv4-mapped IPv6 becomes the IPv4 address it carries.
pub fn parse_address(text: &str, role: GroupRole) -> Option<IpAddr> {
    let text = match role {
        GroupRole::Subnet => text.split('/').next().unwrap_or(text),
        _ => text,
    };
    let ip: IpAddr = text.parse().ok()?;
    Some(crate::address::normalise(ip))
}

fn build_regex(text: &str) -> Result<Regex, BadPattern> {
    Ok(RegexBuilder::new(text)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?)
}

fn build_set(patterns: &[String]) -> Result<RegexSet, BadPattern> {
    Ok(RegexSetBuilder::new(patterns)
        .size_limit(REGEX_SIZE_LIMIT * 4)
        .build()?)
}

fn compile_fail(pattern: &str) -> Result<(FailPattern, String), BadPattern> {
    let expanded = template::expand(pattern)?;
    if !expanded.has_address() {
        return Err(BadPattern::NoAddress);
    }
    let regex = build_regex(&expanded.regex)?;
    // A tag written inside a character class (`[<HOST>]`) expands to plain characters there,
    // so its group does not exist: that pattern can never capture what the tag means.
    let index_of = |name: &str| {
        regex
            .capture_names()
            .position(|n| n == Some(name))
            .ok_or(BadPattern::TagInClass)
    };
    let mut addresses = Vec::new();
    let mut user = None;
    let mut nofail = None;
    for (name, role) in &expanded.groups {
        let index = index_of(name)?;
        match role {
            GroupRole::Address | GroupRole::Subnet => addresses.push((index, *role)),
            GroupRole::User => user = user.or(Some(index)),
            GroupRole::NoFail => nofail = Some(index),
            GroupRole::Other => {}
        }
    }
    let text = expanded.regex.clone();
    // The one `<HOST>`/`<ADDR>` group the scanner can find (none when there are more).
    let addr = match addresses.as_slice() {
        [(g, GroupRole::Address)] => regex.capture_names().nth(*g).flatten().map(|n| (*g, n)),
        _ => None,
    };
    let split = user.and_then(|u| Split::new(&text, &regex, u, addr.map(|(_, n)| n)));
    let tail = addr.and_then(|(group, name)| {
        let hir = regex_syntax::Parser::new().parse(&text).ok()?;
        let items = match hir.kind() {
            regex_syntax::hir::HirKind::Concat(items) => items.as_slice(),
            _ => std::slice::from_ref(&hir),
        };
        Some((AddrTail::new(items, name)?, group))
    });
    Ok((
        FailPattern {
            regex,
            addresses,
            user,
            nofail,
            split,
            tail,
        },
        text,
    ))
}

fn compile_prefregex(pattern: &str) -> Result<(Regex, usize), BadPattern> {
    let marked = pattern
        .replace("<F-CONTENT>", "(?P<f_content>")
        .replace("</F-CONTENT>", ")");
    if marked == pattern {
        return Err(BadPattern::NoContent);
    }
    let expanded = template::expand(&marked)?;
    let regex = build_regex(&expanded.regex)?;
    let group = regex
        .capture_names()
        .position(|n| n == Some("f_content"))
        .ok_or(BadPattern::LostContent)?;
    Ok((regex, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(fail: &[&str], ignore: &[&str]) -> Filter {
        Filter::compile(&FilterSource {
            failregex: fail.iter().map(|s| s.to_string()).collect(),
            ignoreregex: ignore.iter().map(|s| s.to_string()).collect(),
            prefregex: None,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn finds_the_host_and_normalises_mapped_ipv6() {
        let f = filter(&[r"^fail from <HOST>$"], &[]);
        let Verdict::Failure(m) = f.check("fail from ::ffff:192.0.2.9") else {
            panic!("no failure")
        };
        assert_eq!(m.ip, "192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_invalid_address_is_a_miss() {
        let f = filter(&[r"^fail from <HOST>$"], &[]);
        assert_eq!(f.check("fail from 999.1.1.1"), Verdict::Missed);
    }

    #[test]
    fn ignoreregex_vetoes() {
        let f = filter(&[r"^fail from <HOST>"], &[r"trusted"]);
        assert_eq!(f.check("fail from 192.0.2.1 trusted"), Verdict::Ignored(0));
    }

    #[test]
    fn every_bad_pattern_is_reported() {
        let errors = Filter::compile(&FilterSource {
            failregex: vec!["no host here".into(), "(<HOST>".into()],
            ignoreregex: vec!["[".into()],
            prefregex: None,
            ..Default::default()
        })
        .unwrap_err();
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["failregex[0]", "failregex[1]", "ignoreregex[0]"]);
    }

    #[test]
    fn prefregex_narrows_what_failregex_sees() {
        let f = Filter::compile(&FilterSource {
            failregex: vec![r"^auth failed from <HOST>$".into()],
            ignoreregex: vec![],
            prefregex: Some(r"^\w+: <F-CONTENT>.+</F-CONTENT>$".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            f.check("abc: auth failed from 192.0.2.3"),
            Verdict::Failure(_)
        ));
        assert_eq!(f.check("auth failed from 192.0.2.3"), Verdict::Missed);
    }

    #[test]
    fn a_tag_inside_a_character_class_is_an_error_not_a_panic() {
        // Found by fuzz/filter_compile: the class swallows the expanded group.
        let errors = Filter::compile(&FilterSource {
            failregex: vec![
                "^[a-z <F-USER>.*</F-USER>] from <HOST>".into(),
                "^x[<HOST>]".into(),
            ],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].reason.to_string().contains("character class"),
            "{errors:?}"
        );
    }

    #[test]
    fn anchored_patterns_are_dispatched_by_their_literal_prefix() {
        let p = Prefixes::new(&[
            r"^Failed \S+ for (?P<h>\S+)$",
            r"^(?:error: )?maximum (?:x|y)",
            r"^(?i)ab",
        ]);
        assert!(p.usable());
        assert!(p.could_match(0, "Failed password"));
        assert!(!p.could_match(0, "Invalid user"));
        assert!(p.could_match(1, "error: maximum y") && p.could_match(1, "maximum x"));
        assert!(!p.could_match(1, "error: minimum"));
        assert!(p.could_match(2, "aB") && p.could_match(2, "AB"));
        assert!(
            !Prefixes::new(&["^a", "b$"]).usable(),
            "one unanchored pattern"
        );
        assert!(!Prefixes::new(&[r"^\w+ x"]).usable(), "no literal");
        // The sshd filter's verdicts do not depend on the path taken.
        let f = filter(
            &[
                r"^Failed \S+ for (?:invalid user )?<F-USER>.*</F-USER> from <HOST> port \d+",
                r"^Invalid user <F-USER>.*</F-USER> from <HOST>",
            ],
            &[r"user root"],
        );
        assert!(f.prefixes.usable());
        // The other path: the per-pattern dispatch (itself checked against a plain RegexSet).
        let mut slow = f.clone();
        slow.prefixes = Prefixes::default();
        slow.dispatch = Dispatch::new(f.fail_patterns()).unwrap();
        for line in [
            "Failed password for invalid user x from 192.0.2.1 port 1",
            "Invalid user Failed from 192.0.2.2",
            "Failed password for user root from 192.0.2.3 port 2",
            "Accepted password for x from 192.0.2.4 port 3",
        ] {
            assert_eq!(f.check(line), slow.check(line), "{line}");
        }
    }

    #[test]
    fn nofail_lines_are_not_failures() {
        let f = filter(&[r"^<F-NOFAIL>note</F-NOFAIL>? from <HOST>"], &[]);
        assert_eq!(f.check("note from 192.0.2.1"), Verdict::Missed);
    }

    #[test]
    fn the_split_at_the_user_group_finds_what_the_whole_pattern_finds() {
        let patterns = [
            r"^Failed \S+ for (?:invalid user )?<F-USER>.*</F-USER> from <HOST> port \d+ ssh\d*(?:: \S+ \S+)?(?: \[preauth\])?$",
            r"^Invalid user <F-USER>.*</F-USER> from <HOST>(?: port \d+)?(?: \[preauth\])?$",
            r"^(?:Connection (?:closed|reset) by|Disconnected from) (?:authenticating|invalid) user <F-USER>.*</F-USER> <HOST> port \d+(?: \[preauth\])?$",
            // the address before the user, an unanchored end, a self-overlapping literal, `(?s)`
            r"^from <HOST> user <F-USER>.*</F-USER> end",
            r"^x <F-USER>.*</F-USER>aab<HOST>",
            r"(?s)^y <F-USER>.*</F-USER> at <HOST>$",
        ];
        let lines = [
            "Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 192.0.2.1 port 22 ssh2",
            "Failed password for invalid user from 192.0.2.1 port 22 ssh2",
            "Failed password for invalid user  from 192.0.2.1 port 22 ssh2",
            "Failed password for a\nb from 192.0.2.1 port 22 ssh2",
            "Failed password for a from 192.0.2.1 port 22 ssh2\n from 192.0.2.2 port 2 ssh2",
            "Failed password for a from 192.0.2.1 port 22 ssh2 from 999.0.0.1 port 2 ssh2",
            "Failed publickey for b from 2001:db8::1 port 2 ssh2: RSA SHA256:x [preauth]",
            "Invalid user from 1.2.3.4 from 192.0.2.9",
            "Invalid user  from 192.0.2.9 port 1",
            "Connection closed by invalid user x 6.6.6.6 port 1 192.0.2.3 port 4 [preauth]",
            "from 192.0.2.4 user é end end",
            "from 192.0.2.4 user end",
            "x aaab192.0.2.5",
            "x uaabaab192.0.2.6aab",
            "y a\n at 6.6.6.6 at 192.0.2.7",
            "y  at 192.0.2.8",
            // P matches nowhere at the start, though the line starts with a pattern's words
            "Disconnected from user deploy 192.0.2.10 port 22",
            "Connection closed by 192.0.2.11 port 22 [preauth]",
            "Failed",
            "Failed password",
            "Invalid",
            "invalid user x from 192.0.2.12",
            " Invalid user x from 192.0.2.13",
            "",
            "from",
            "x ",
            "y",
        ];
        let f = filter(&patterns, &[]);
        assert!(
            f.fail.iter().all(|p| p.split.is_some()),
            "every pattern splits"
        );
        let mut whole = f.clone();
        for p in &mut whole.fail {
            p.split = None;
        }
        let mut failures = 0;
        for line in lines {
            let verdict = f.check(line);
            failures += usize::from(matches!(verdict, Verdict::Failure(_)));
            assert_eq!(verdict, whole.check(line), "{line:?}");
        }
        assert!(failures >= 12, "{failures}");
        // Shapes that do not split keep the whole pattern.
        let g = filter(
            &[
                r"^a <F-USER>.*?</F-USER> from <HOST>",
                r"^b <F-USER>\S+</F-USER> from <HOST>",
                r"c <F-USER>.*</F-USER> from <HOST>",
                r"^d <F-USER>.*</F-USER>\S* <HOST>",
            ],
            &[],
        );
        assert!(g.fail.iter().all(|p| p.split.is_none()));
    }

    #[test]
    fn only_patterns_found_by_the_capturing_regex_alone_are_gated() {
        let f = filter(
            &[
                r"AUTH failure \(\w+\): .*relay=.*\[<HOST>\]",
                r"^Failed \S+ for <F-USER>.*</F-USER> from <HOST> port \d+$",
                r"x <HOST> y <HOST>",
            ],
            &[],
        );
        assert!(!f.gated(0, false), "scanned");
        assert!(!f.gated(1, false), "split");
        assert!(f.gated(2, false), "two addresses: the capturing regex");
        // A loose candidate that does not match gives no verdict either way.
        let line = "AUTH failure (LOGIN): x, relay=nowhere";
        assert!(!f.could_match(0, false, line));
        assert_eq!(f.verdict_for(0, line), None);
    }

    #[test]
    fn the_address_scanner_finds_what_the_capturing_regex_finds() {
        let patterns = [
            r"^Failed \S+ for (?:invalid user )?<F-USER>.*</F-USER> from <HOST> port \d+(?: ssh\d*)?(?: \[preauth\])?$",
            r"^Invalid user <F-USER>.*</F-USER> from <HOST>(?: port \d+)?$",
            r"^Did not receive identification string from <HOST>(?: port \d+)?$",
            r"^(?:fatal: )?Timeout before authentication for <HOST> port \d+$",
            r"AUTH failure \(\w+\): .*relay=.*\[<HOST>\]",
            r"^x <HOST>\d",
            r"^y <HOST>(?:%zz)?:\d+$",
            r"(?m)^z <HOST>$",
        ];
        let f = filter(&patterns, &[]);
        assert_eq!(
            f.scanned_patterns(),
            patterns.len(),
            "every pattern is scanned"
        );
        let slow = f.without_scanner();
        assert_eq!(slow.scanned_patterns(), 0);
        let addrs = super::super::addr_scan::NEAR_ADDRESSES;
        let mut failures = 0;
        for a in addrs {
            for line in [
                format!("Failed password for root from {a} port 22 ssh2"),
                format!("Failed password for invalid user x from 1.1.1.1 port 1 from {a} port 22"),
                format!("Failed password for a from {a} port 22 ssh2 [preauth]x"),
                format!("Invalid user u from {a}"),
                format!("Invalid user u from {a} port 7"),
                format!("Invalid user u from {a} from 6.6.6.6"),
                format!("Did not receive identification string from {a}"),
                format!("Did not receive identification string from {a} port 1"),
                format!("fatal: Timeout before authentication for {a} port 5"),
                format!("s1: AUTH failure (LOGIN): x, relay=[{a}]"),
                format!("AUTH failure (LOGIN): x, relay=[{a}] relay=[6.6.6.6]"),
                format!("AUTH failure (LOGIN): x, relay=[6.6.6.6] relay=[{a}]"),
                format!("x {a}7"),
                format!("y {a}:80"),
                format!("y {a}%zz:80"),
                format!("q\nz {a}\nr"),
                format!("z {a}"),
            ] {
                let verdict = f.check(&line);
                failures += usize::from(matches!(verdict, Verdict::Failure(_)));
                assert_eq!(verdict, slow.check(&line), "{line:?}");
            }
        }
        assert!(failures >= 60, "{failures}");
    }

    /// The differential test above would pass if the scanner never decided; this one shows it
    /// does: on a canonical line, each scanned pattern's address comes from the scanner (or
    /// the split's scanner), not from the capturing regex, and a wrong head is settled as no
    /// match without it.
    #[test]
    fn the_address_scanner_decides_canonical_lines() {
        let cases = [
            (r"^y <HOST>(?:%zz)?:\d+$", "y 192.0.2.5:80", "192.0.2.5"),
            (
                r"^Did not receive identification string from <HOST>(?: port \d+)?$",
                "Did not receive identification string from 198.51.100.7 port 1",
                "198.51.100.7",
            ),
            (
                r"AUTH failure \(\w+\): .*relay=.*\[<HOST>\]",
                "s1: AUTH failure (LOGIN): x, relay=[203.0.113.9]",
                "203.0.113.9",
            ),
        ];
        for (pattern, line, address) in cases {
            let f = filter(&[pattern], &[]);
            let p = &f.fail[0];
            let span = match p.find(line) {
                Some(Found::Addr(_, span)) => span,
                Some(Found::Split { split, suf, .. }) => {
                    let (_, group) = split.tail.as_ref().expect("a scanned split");
                    match (suf[2 * group], suf[2 * group + 1]) {
                        (Some(a), Some(b)) => (a.get(), b.get()),
                        other => panic!("{pattern}: split without the address: {other:?}"),
                    }
                }
                Some(Found::Whole(_)) => panic!("{pattern}: the capturing regex decided {line:?}"),
                None => panic!("{pattern}: no match for {line:?}"),
            };
            assert_eq!(&line[span.0..span.1], address, "{pattern}");
            if let Some((tail, _)) = &p.tail {
                assert!(
                    matches!(tail.at("no such head", 0), Scan::NoMatch) || !tail.anchored(),
                    "{pattern}"
                );
            }
        }
    }
}
