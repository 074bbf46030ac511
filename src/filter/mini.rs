//! A small backtracking matcher for the anchored parts of a split pattern (the split's prefix,
//! the address scanner's head and rest): on the sshd lines of the live path each of these was a
//! lazy-DFA search of 10-40 bytes whose set-up (cache pool, start state, prefilter checks) cost
//! more than the match (`find_fwd` was a third of the match threads' time, tcp9's profile).
//!
//! Built from the same HIR as the part's regex, never from assumptions about a filter: an
//! operator's edited pattern gets its own program, or none when the HIR holds what this
//! matcher does not model (look-arounds other than `^`/`$`, unbounded repetitions of what can
//! match empty, byte classes beyond ASCII, a program past [`MAX_PROGRAM`]); then the regex runs
//! as before. Same result as the regex's anchored leftmost-first search: a backtracker that
//! tries alternatives in order and repetitions greedy-first (lazy-first when lazy) finds the
//! leftmost-first match, which is what the regex reports. A search that would take more than
//! [`BUDGET`] steps or [`STACK`] pending choices answers [`Run::Unknown`], and the regex decides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regex_automata::{meta, Anchored, Input};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Instructions a program may have; a bigger part keeps only its regex.
const MAX_PROGRAM: usize = 512;
/// Steps one search may take before it gives up and lets the regex decide; a run or a search
/// back over text also costs a step per [`BYTES_PER_STEP`] bytes it passes, so the budget
/// bounds time (about 128 KiB scanned), not only instructions: a greedy run entered again
/// from many starts would otherwise scan a long line's rest each time.
const BUDGET: u32 = 2_000;
/// Bytes a run or a search back passes per step of the budget.
const BYTES_PER_STEP: usize = 64;
/// Pending choices one search may hold before it gives up.
const STACK: usize = 16;

/// What one search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// The leftmost-first match ends here.
    Match(usize),
    /// No match starts at the position.
    NoMatch,
    /// Too many steps or choices: ask the regex.
    Unknown,
}

/// A set of characters: ASCII as a bitmap, the rest as sorted ranges.
#[derive(Debug, Clone)]
struct Set {
    ascii: [u64; 2],
    ranges: Box<[(u32, u32)]>,
    /// Every non-ASCII character is in the set (`.`, `\S`, `[^x]`): a run of it is found
    /// byte by byte, as UTF-8's non-ASCII bytes never end a character on an ASCII one.
    wide: bool,
    /// For a wide set, the ASCII bytes outside it when there are at most three (`.`: `\n`):
    /// a run ends at the first of them, which memchr finds.
    stops: Option<Box<[u8]>>,
}

impl Set {
    fn new(ranges: Vec<(u32, u32)>) -> Set {
        let mut ascii = [0u64; 2];
        for &(a, b) in &ranges {
            for c in a..=b.min(127) {
                ascii[(c / 64) as usize] |= 1 << (c % 64);
            }
        }
        let wide = ranges
            .iter()
            .any(|&(a, b)| a <= 0x80 && b == u32::from(char::MAX));
        let outside: Vec<u8> = (0..128u8)
            .filter(|&c| ascii[usize::from(c / 64)] & (1 << (c % 64)) == 0)
            .collect();
        let stops = (wide && outside.len() <= 3).then(|| outside.into());
        Set {
            ascii,
            ranges: ranges.into(),
            wide,
            stops,
        }
    }

    /// True when ASCII byte `b` is in the set.
    #[inline]
    fn has_ascii(&self, b: u8) -> bool {
        b < 128 && self.ascii[usize::from(b / 64)] & (1 << (b % 64)) != 0
    }

    /// The end of the longest run of the set's characters from `at` (a character boundary),
    /// for a [`Set::wide`] set: the first ASCII byte outside the set, or the end.
    #[inline]
    fn wide_run(&self, bytes: &[u8], at: usize) -> usize {
        let rest = bytes.get(at..).unwrap_or_default();
        let end = match self.stops.as_deref() {
            Some(&[]) => None,
            Some(&[a]) => memchr::memchr(a, rest),
            Some(&[a, b]) => memchr::memchr2(a, b, rest),
            Some(&[a, b, c]) => memchr::memchr3(a, b, c, rest),
            _ => rest.iter().position(|&b| b < 128 && !self.has_ascii(b)),
        };
        at + end.unwrap_or(rest.len())
    }

    /// The length of the character at `at` when it is in the set.
    #[inline]
    fn step(&self, bytes: &[u8], at: usize) -> Option<usize> {
        let b = *bytes.get(at)?;
        if b < 128 {
            return self.has_ascii(b).then_some(1);
        }
        let (c, n) = decode(bytes, at)?;
        let i = self.ranges.partition_point(|&(_, end)| end < c);
        self.ranges
            .get(i)
            .is_some_and(|&(start, _)| start <= c)
            .then_some(n)
    }
}

/// The character whose UTF-8 encoding starts at `at` and its length; None inside one.
fn decode(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
    let b = *bytes.get(at)?;
    let (n, init) = match b {
        0xC0..=0xDF => (2, u32::from(b & 0x1F)),
        0xE0..=0xEF => (3, u32::from(b & 0x0F)),
        0xF0..=0xF7 => (4, u32::from(b & 0x07)),
        _ => return None,
    };
    let tail = bytes.get(at + 1..at + n)?;
    let c = tail
        .iter()
        .fold(init, |c, &t| (c << 6) | u32::from(t & 0x3F));
    Some((c, n))
}

/// One instruction; `next` is the following one unless said.
#[derive(Debug, Clone)]
enum Inst {
    /// These bytes.
    Lit(Box<[u8]>),
    /// One character of set `n`.
    One(usize),
    /// `min..=max` characters of a set, greedy (most first) or lazy (fewest first).
    Run {
        set: usize,
        min: u32,
        max: u32,
        greedy: bool,
    },
    /// Try the first target, then the second.
    Split(usize, usize),
    /// Go on at the target.
    Jmp(usize),
    /// The haystack's start.
    Start,
    /// The haystack's end.
    End,
    /// Done.
    Match,
}

/// A compiled part.
#[derive(Debug, Clone)]
pub(crate) struct Mini {
    prog: Vec<Inst>,
    sets: Vec<Set>,
}

/// A choice to come back to.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Go on at `pc` from `at`.
    At { pc: u32, at: usize },
    /// A greedy run went up to `at`; give back one character (not below `low`) and go on at
    /// `pc` (the instruction after the run).
    Shorter { pc: u32, low: usize, at: usize },
    /// A lazy run took `count` characters up to `at`; take one more (up to `max`) and go on.
    Longer {
        pc: u32,
        set: u32,
        at: usize,
        count: u32,
        max: u32,
    },
}

impl Mini {
    /// The program of `hir`, or None when it holds what this matcher does not model.
    pub(crate) fn new(hir: &Hir) -> Option<Mini> {
        let mut m = Mini {
            prog: Vec::new(),
            sets: Vec::new(),
        };
        m.emit(hir)?;
        m.prog.push(Inst::Match);
        (m.prog.len() <= MAX_PROGRAM).then_some(m)
    }

    fn push(&mut self, inst: Inst) -> Option<usize> {
        if self.prog.len() >= MAX_PROGRAM {
            return None;
        }
        self.prog.push(inst);
        Some(self.prog.len() - 1)
    }

    fn set(&mut self, class: &Class) -> Option<usize> {
        let ranges: Vec<(u32, u32)> = match class {
            Class::Unicode(c) => c
                .ranges()
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end())))
                .collect(),
            Class::Bytes(c) => {
                if c.ranges().iter().any(|r| r.end() > 127) {
                    return None;
                }
                c.ranges()
                    .iter()
                    .map(|r| (u32::from(r.start()), u32::from(r.end())))
                    .collect()
            }
        };
        self.sets.push(Set::new(ranges));
        Some(self.sets.len() - 1)
    }

    fn emit(&mut self, hir: &Hir) -> Option<()> {
        match hir.kind() {
            HirKind::Empty => {}
            HirKind::Literal(l) => {
                self.push(Inst::Lit(l.0.clone()))?;
            }
            HirKind::Class(c) => {
                let s = self.set(c)?;
                self.push(Inst::One(s))?;
            }
            HirKind::Look(Look::Start) => {
                self.push(Inst::Start)?;
            }
            HirKind::Look(Look::End) => {
                self.push(Inst::End)?;
            }
            HirKind::Look(_) => return None,
            HirKind::Capture(c) => self.emit(&c.sub)?,
            HirKind::Concat(items) => {
                for h in items {
                    self.emit(h)?;
                }
            }
            HirKind::Alternation(alts) => {
                let mut jumps = Vec::new();
                for (i, h) in alts.iter().enumerate() {
                    if i + 1 < alts.len() {
                        let split = self.push(Inst::Split(0, 0))?;
                        self.emit(h)?;
                        jumps.push(self.push(Inst::Jmp(0))?);
                        let next = self.prog.len();
                        self.prog[split] = Inst::Split(split + 1, next);
                    } else {
                        self.emit(h)?;
                    }
                }
                let end = self.prog.len();
                for j in jumps {
                    self.prog[j] = Inst::Jmp(end);
                }
            }
            HirKind::Repetition(r) => {
                if let HirKind::Class(c) = r.sub.kind() {
                    let set = self.set(c)?;
                    self.push(Inst::Run {
                        set,
                        min: r.min,
                        max: r.max.unwrap_or(u32::MAX),
                        greedy: r.greedy,
                    })?;
                    return Some(());
                }
                // An iteration that can match nothing: the regex and a backtracker part ways.
                if r.sub.properties().minimum_len().unwrap_or(0) == 0 && r.max != Some(1) {
                    return None;
                }
                if r.min > 16 || r.max.is_some_and(|m| m > 16) {
                    return None;
                }
                for _ in 0..r.min {
                    self.emit(&r.sub)?;
                }
                let choice = |this: &mut Mini, body: usize, out: usize, at: usize| {
                    this.prog[at] = if r.greedy {
                        Inst::Split(body, out)
                    } else {
                        Inst::Split(out, body)
                    };
                };
                match r.max {
                    None => {
                        let top = self.push(Inst::Split(0, 0))?;
                        self.emit(&r.sub)?;
                        self.push(Inst::Jmp(top))?;
                        let out = self.prog.len();
                        choice(self, top + 1, out, top);
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in r.min..max {
                            splits.push(self.push(Inst::Split(0, 0))?);
                            self.emit(&r.sub)?;
                        }
                        let out = self.prog.len();
                        for s in splits {
                            choice(self, s + 1, out, s);
                        }
                    }
                }
            }
        }
        Some(())
    }

    /// The end of the leftmost-first match of the part starting exactly at `at` in `text`
    /// (`^` is the text's start, `$` its end, as for the regex searched over a span).
    pub(crate) fn run(&self, text: &str, at: usize) -> Run {
        let bytes = text.as_bytes();
        let mut stack = [Frame::At { pc: 0, at: 0 }; STACK];
        let mut depth = 0usize;
        let mut steps = 0u32;
        let (mut pc, mut pos) = (0usize, at);
        macro_rules! choose {
            ($frame:expr) => {
                if depth == STACK {
                    return Run::Unknown;
                }
                stack[depth] = $frame;
                depth += 1;
            };
        }
        loop {
            steps += 1;
            if steps > BUDGET {
                return Run::Unknown;
            }
            let ok = match &self.prog[pc] {
                Inst::Match => return Run::Match(pos),
                Inst::Lit(l) => {
                    if bytes.get(pos..).is_some_and(|b| b.starts_with(l)) {
                        pos += l.len();
                        pc += 1;
                        true
                    } else {
                        false
                    }
                }
                Inst::One(s) => match self.sets[*s].step(bytes, pos) {
                    Some(n) => {
                        pos += n;
                        pc += 1;
                        true
                    }
                    None => false,
                },
                Inst::Run {
                    set,
                    min,
                    max,
                    greedy,
                } => {
                    let s = &self.sets[*set];
                    let mut count = 0u32;
                    let mut p = pos;
                    while count < *min {
                        match s.step(bytes, p) {
                            Some(n) => p += n,
                            None => break,
                        }
                        count += 1;
                    }
                    steps = steps.saturating_add(((p - pos) / BYTES_PER_STEP) as u32);
                    if count < *min {
                        false
                    } else if *greedy {
                        let low = p;
                        if s.wide && *max == u32::MAX {
                            p = s.wide_run(bytes, p);
                        }
                        while count < *max {
                            match s.step(bytes, p) {
                                Some(n) => p += n,
                                None => break,
                            }
                            count += 1;
                        }
                        steps = steps.saturating_add(((p - low) / BYTES_PER_STEP) as u32);
                        if p > low {
                            choose!(Frame::Shorter {
                                pc: pc as u32 + 1,
                                low,
                                at: p
                            });
                        }
                        pos = p;
                        pc += 1;
                        true
                    } else {
                        if count < *max {
                            choose!(Frame::Longer {
                                pc: pc as u32 + 1,
                                set: *set as u32,
                                at: p,
                                count,
                                max: *max
                            });
                        }
                        pos = p;
                        pc += 1;
                        true
                    }
                }
                Inst::Split(a, b) => {
                    choose!(Frame::At {
                        pc: *b as u32,
                        at: pos
                    });
                    pc = *a;
                    true
                }
                Inst::Jmp(t) => {
                    pc = *t;
                    true
                }
                Inst::Start => {
                    pc += 1;
                    pos == 0
                }
                Inst::End => {
                    pc += 1;
                    pos == bytes.len()
                }
            };
            if ok {
                continue;
            }
            // Back to the latest choice.
            loop {
                if depth == 0 {
                    return Run::NoMatch;
                }
                depth -= 1;
                match stack[depth] {
                    Frame::At { pc: p, at } => {
                        pc = p as usize;
                        pos = at;
                        break;
                    }
                    Frame::Shorter { pc: p, low, at } => {
                        let q = if let Inst::Lit(l) = &self.prog[p as usize] {
                            // Only where the literal that follows starts can the match go on
                            // (its first byte starts a character).
                            let Some(first) = l.first() else {
                                return Run::Unknown;
                            };
                            match memchr::memrchr(*first, &bytes[low..at]) {
                                Some(i) => low + i,
                                None => {
                                    steps =
                                        steps.saturating_add(((at - low) / BYTES_PER_STEP) as u32);
                                    if steps > BUDGET {
                                        return Run::Unknown;
                                    }
                                    continue;
                                }
                            }
                        } else {
                            // One character back: over UTF-8 continuation bytes to its start.
                            let mut q = at - 1;
                            while q > low && bytes[q] & 0xC0 == 0x80 {
                                q -= 1;
                            }
                            q
                        };
                        steps = steps.saturating_add(((at - q) / BYTES_PER_STEP) as u32);
                        if q > low {
                            stack[depth] = Frame::Shorter { pc: p, low, at: q };
                            depth += 1;
                        }
                        pc = p as usize;
                        pos = q;
                        break;
                    }
                    Frame::Longer {
                        pc: p,
                        set,
                        at,
                        count,
                        max,
                    } => {
                        let Some(n) = self.sets[set as usize].step(bytes, at) else {
                            continue;
                        };
                        if count + 1 < max {
                            stack[depth] = Frame::Longer {
                                pc: p,
                                set,
                                at: at + n,
                                count: count + 1,
                                max,
                            };
                            depth += 1;
                        }
                        pc = p as usize;
                        pos = at + n;
                        break;
                    }
                }
            }
        }
    }
}

/// How often small matchers answered, for the differential tests: a test that only compared
/// verdicts would also pass with a matcher that answered [`Run::Unknown`] everywhere (the regex
/// then decides every search). Filled only by a filter made with
/// [`super::Filter::with_mini_tally`]; the live path has none.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct MiniTally {
    answered: AtomicU64,
    unknown: AtomicU64,
}

impl MiniTally {
    /// Searches the small matchers answered (a match or no match).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Searches they left to the regex ([`Run::Unknown`]).
    pub fn unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    fn note(&self, run: Run) {
        let counter = match run {
            Run::Unknown => &self.unknown,
            Run::Match(_) | Run::NoMatch => &self.answered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A part of a pattern as its regex and, when it fits, its [`Mini`] program, which answers
/// first.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    regex: meta::Regex,
    mini: Option<Mini>,
    /// Where its small matcher's answers are counted: differential tests only.
    tally: Option<Arc<MiniTally>>,
}

impl Part {
    /// The part for `hir`; None when its regex does not build (as [`super::engine::build_part`]).
    pub(crate) fn new(hir: &Hir) -> Option<Part> {
        Some(Part {
            regex: super::engine::build_part(hir)?,
            mini: Mini::new(hir),
            tally: None,
        })
    }

    /// The part's regex, for searches that need its groups.
    pub(crate) fn regex(&self) -> &meta::Regex {
        &self.regex
    }

    /// True when the small matcher serves this part.
    pub(crate) fn has_mini(&self) -> bool {
        self.mini.is_some()
    }

    /// This part with its regex alone: for the differential tests.
    pub(crate) fn drop_mini(&mut self) {
        self.mini = None;
    }

    /// Counts its small matcher's answers in `tally` (when it has a small matcher).
    pub(crate) fn tally_into(&mut self, tally: &Arc<MiniTally>) {
        if self.mini.is_some() {
            self.tally = Some(tally.clone());
        }
    }

    /// The end of the part's leftmost-first match starting exactly at `at` in `text`.
    #[inline]
    pub(crate) fn end_at(&self, text: &str, at: usize) -> Option<usize> {
        if let Some(m) = &self.mini {
            let run = m.run(text, at);
            if let Some(tally) = &self.tally {
                tally.note(run);
            }
            match run {
                Run::Match(end) => return Some(end),
                Run::NoMatch => return None,
                Run::Unknown => {}
            }
        }
        let input = Input::new(text)
            .span(at..text.len())
            .anchored(Anchored::Yes);
        self.regex.search_half(&input).map(|h| h.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hir(p: &str) -> Hir {
        regex_syntax::Parser::new().parse(p).expect("a pattern")
    }

    /// A greedy run entered again from many starts on a long line (the shipped smtp-auth
    /// head's `.*relay=.*\[` over 300 `relay=` and 60,000 bytes) costs its scanned bytes: the
    /// search gives up to the regex instead of scanning the line's rest at every start
    /// (about 36 MB); on a short line the same pattern still answers.
    #[test]
    fn the_budget_counts_the_bytes_a_search_scans() {
        let p = r"auth: .*relay=.*\[";
        let mini = Mini::new(&hir(p)).expect("a program");
        let long = format!(
            "auth: relay=[x] {}{}",
            "relay=".repeat(300),
            "x".repeat(60_000)
        );
        assert!(matches!(mini.run(&long, 0), Run::Unknown));
        assert_eq!(by_regex(p, &long, 0), Some(13));
        let short = "auth: relay=[192.0.2.1] relay=x";
        assert!(matches!(mini.run(short, 0), Run::Match(13)));
    }

    /// The regex's answer at `at`, as [`Part::end_at`] without its program.
    fn by_regex(p: &str, text: &str, at: usize) -> Option<usize> {
        let r = meta::Regex::new(p).expect("a regex");
        let input = Input::new(text)
            .span(at..text.len())
            .anchored(Anchored::Yes);
        r.search_half(&input).map(|h| h.offset())
    }

    #[test]
    fn the_program_finds_the_regexs_leftmost_first_end() {
        let patterns = [
            r" port \d+(?: ssh\d*)?(?: \[preauth\])?$",
            r" port \d+ ssh\d*(?:: \S+ \S+)?(?: \[preauth\])?$",
            r"^Failed (?:password|none|keyboard-interactive(?:/\w+)?|hostbased) for (?:invalid user )?",
            r"^(?:Connection (?:closed|reset) by|Disconnected from) (?:authenticating|invalid) user ",
            r"(?: port \d+)?: ?3: .*: Auth fail(?: \[preauth\])?$",
            r"a*?b",
            r"AUTH failure \(\w+\): .*relay=.*\[",
            r"x.*é[a-z]*\S*=",
            r"[^,]*,.*?;",
            r"(?s).*é",
            r"[^\],\n]+\]",
            r"[^\]]*\]x",
            r"(?:ab|a)(?:bc|c)",
            r"x{2,4}y?",
            r"(?:ab){1,3}?c",
            r"[^a-z]+ é.$",
            r"\w+",
            r"(?i)PoRt",
            r"(?:\s+(?:logname|e?uid|tty)=\S*){0,4}\s+ruser=\S*",
            r"",
            r"$",
            r"^",
        ];
        let texts = [
            " port 22 ssh2",
            " port 22",
            " port 22 ssh2 [preauth]",
            " port 22 ssh2 [preauth]x",
            " port  ssh2",
            " port 22 ssh2: RSA SHA256:x",
            " port 22 ssh2: RSA SHA256:x [preauth]",
            " port 22x",
            "Failed password for invalid user ",
            "Failed keyboard-interactive/pam for x",
            "Failed keyboard-interactive/ for x",
            "Failed none for invalid user x",
            "Connection closed by invalid user x",
            "Disconnected from authenticating user",
            " port 5: 3: a: b: Auth fail",
            ": 3: Auth fail",
            "aaab",
            "abc",
            "abcc",
            "xxxxxy",
            "ababababc",
            "12 é€",
            "héllo wörld",
            "PORT",
            "AUTH failure (LOGIN): x, relay=a [b] relay=[c",
            "AUTH failure (PLAIN): relay=é[ relay=",
            "AUTH failure (x): relay=",
            "xé=é€abcé==",
            "x€é=",
            "ab,c;d;",
            "é,,é;",
            "a\nbé\n",
            "ab]\n]x",
            "é€]],x]x",
            "   uid=0 tty=ssh ruser= rhost=1",
            " logname= uid=0 euid=0 tty=ssh ruser= rhost=1",
            "",
        ];
        let mut matches = 0;
        for p in patterns {
            let mini = Mini::new(&hir(p)).unwrap_or_else(|| panic!("{p}: no program"));
            for t in texts {
                for at in (0..=t.len()).filter(|&i| t.is_char_boundary(i)) {
                    let want = by_regex(p, t, at);
                    let got = match mini.run(t, at) {
                        Run::Match(e) => Some(e),
                        Run::NoMatch => None,
                        Run::Unknown => continue,
                    };
                    matches += usize::from(want.is_some());
                    assert_eq!(got, want, "{p:?} on {t:?} at {at}");
                }
            }
        }
        assert!(matches > 300, "{matches}");
    }

    #[test]
    fn what_the_program_does_not_model_keeps_the_regex() {
        for p in [
            r"\bx",
            r"(?m)^x",
            r"(?:a*)*b",
            r"(?:x|)+",
            r"(?-u:[\x80-\xFF])",
        ] {
            let h = regex_syntax::ParserBuilder::new()
                .utf8(false)
                .build()
                .parse(p)
                .unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(Mini::new(&h).is_none(), "{p}");
        }
    }

    #[test]
    fn a_search_past_its_budget_lets_the_regex_decide() {
        let p = r"(?:.*,){8}x$";
        let mini = Mini::new(&hir(p)).expect("a program");
        let text = ",".repeat(60);
        assert_eq!(mini.run(&text, 0), Run::Unknown);
        let part = Part::new(&hir(p)).expect("a part");
        assert_eq!(part.end_at(&text, 0), by_regex(p, &text, 0));
        assert_eq!(part.end_at(&format!("{text}x"), 0), Some(61));
    }
}
