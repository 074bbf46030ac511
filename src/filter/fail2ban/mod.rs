//! fail2ban filter files (`filter.d/*.conf`) loaded unchanged and matched as fail2ban would.
//!
//! - [`ini`]: the INI dialect, `.local` overrides and `[INCLUDES]`.
//! - [`interpolate`]: `%(name)s` and `<name>` substitution, options such as `mode`.
//! - [`translate`]: Python regexes into `regex` / `fancy-regex`, fail2ban's tags.
//! - [`datetemplate`]: finding and cutting the date of a file line.
//!
//! [`Fail2banFilter::process`] is fail2ban's `Filter.findFailure` for one line, with its
//! multi-line state (`maxlines` buffer, `<F-MLFID>` cache) held in a [`LineState`] the caller
//! owns, one per jail. `<HOST>` also matches DNS names, as in fail2ban, but jailsink never
//! resolves: such a match is reported, never banned.

pub mod datetemplate;
pub mod ini;
pub mod interpolate;
pub mod translate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datetemplate::DatePatternError;
use interpolate::{InterpolateError, Vars};
use translate::{BacktrackLimit, Compiled, TranslateError};

/// Most lines a `maxlines` buffer may hold, whatever the filter asks.
pub(crate) const MAX_LINES_CAP: usize = 100;
/// Multi-line failure ids remembered per jail (fail2ban keeps 100; the least recent goes first).
pub(crate) const MLFID_CACHE: usize = 1000;
/// How long a multi-line failure id is remembered after it was last seen: fail2ban's
/// `Filter.mlfidCache` is `Utils.Cache(maxCount=100, maxTime=5*60)`, whose entries expire five
/// minutes after they were last set. Without it a session id seen once (an sshd pid) would
/// join with an unrelated line of a reused pid hours later.
pub(crate) const MLFID_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Why a fail2ban filter could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fail2banError {
    /// The file (or an include) could not be read.
    #[error("{}: {reason}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A line is not INI.
    #[error("{}:{line}: {reason}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// An option could not be interpolated or a regex not translated.
    #[error("{}: {key}: {reason}", file.display())]
    Option {
        /// The filter file.
        file: PathBuf,
        /// `failregex[3]`, `prefregex`, `datepattern`, ...
        key: String,
        /// Why (boxed: a regex error carries both engines' reasons).
        reason: Box<BadOption>,
    },
    /// `name[opt=val, ...]` is malformed.
    #[error("filter options `{0}`: expected name[key=value, ...]")]
    BadOptions(String),
}

/// What is wrong with one option of a fail2ban filter (the file and key are beside it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BadOption {
    /// `%(name)s` or `<tag>` substitution failed.
    #[error(transparent)]
    Interpolate(#[from] InterpolateError),
    /// A regex could not be translated or compiled.
    #[error(transparent)]
    Regex(#[from] TranslateError),
    /// The `datepattern` cannot be used.
    #[error(transparent)]
    Date(#[from] DatePatternError),
    /// `maxlines` is not a number.
    #[error("`{0}` is not a number")]
    NotANumber(String),
    /// A failregex (with its prefregex) names nothing a failure could be told by.
    #[error("no <HOST>, <ADDR>, <F-ID> or <F-MLFID>: nothing identifies the failure")]
    NothingIdentifies,
}

/// Splits `sshd.conf[mode=aggressive, publickey="invalid"]` into the name and its options.
pub(crate) fn split_options(spec: &str) -> Result<(String, Vars), Fail2banError> {
    let Some(open) = spec.find('[').filter(|_| spec.ends_with(']')) else {
        return Ok((spec.to_string(), Vars::new()));
    };
    let name = spec[..open].to_string();
    let body = &spec[open + 1..spec.len() - 1];
    let mut vars = Vars::new();
    let mut item = String::new();
    let mut quote: Option<char> = None;
    let mut items = Vec::new();
    for c in body.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => items.push(std::mem::take(&mut item)),
            _ => item.push(c),
        }
    }
    items.push(item);
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| Fail2banError::BadOptions(spec.to_string()))?;
        vars.insert(k.trim().to_lowercase(), v.trim().to_string());
    }
    Ok((name, vars))
}

/// One compiled failregex / ignoreregex / prefregex.
#[derive(Debug, Clone)]
struct Pattern {
    re: Compiled,
    names: Vec<Option<String>>,
}

/// Group values of one match, as Python's `groupdict()` (None: the group did not take part).
type Groups = BTreeMap<String, Option<String>>;

impl Pattern {
    /// `multiline` as fail2ban compiles a failregex when `maxlines` > 1 (`re.MULTILINE`): `^`
    /// matches at the start of every buffered line, not only the oldest one's.
    fn new(python: &str, multiline: bool) -> Result<Pattern, TranslateError> {
        let resolved = translate::resolve_tags(python);
        let resolved = if multiline {
            format!("(?m){resolved}")
        } else {
            resolved
        };
        let re = translate::compile(&resolved)?;
        let names = re.names();
        Ok(Pattern { re, names })
    }

    fn has_group(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.as_deref() == Some(name))
    }

    fn search(&self, buf: &str) -> Result<Option<Match>, BacktrackLimit> {
        let Some(spans) = self.re.captures(buf)? else {
            return Ok(None);
        };
        let mut groups = Groups::new();
        for (i, name) in self.names.iter().enumerate() {
            if let Some(name) = name {
                let value = spans[i].map(|(a, b)| buf[a..b].to_string());
                groups.insert(name.clone(), value);
            }
        }
        // `<F-ALT_USER_1>` fills `user` when `<F-USER>` took no part (fail2ban's alt_ names:
        // COMPLNAME_CRE drops only an `_N` suffix, so `<F-ALT_USER1>` fills `user1`).
        let alts: Vec<(String, String)> = groups
            .iter()
            .filter_map(|(k, v)| {
                let base = k.strip_prefix("alt_")?;
                Some((alt_base(base).to_string(), v.clone()?))
            })
            .collect();
        for (base, v) in alts {
            if !truthy(groups.get(&base)) && !v.is_empty() {
                groups.insert(base, Some(v));
            }
        }
        let whole = spans[0].unwrap_or((0, 0));
        Ok(Some(Match { groups, whole }))
    }
}

/// The group an `alt_` group's `name` merges into: `name` without an `_N` suffix (`user_1`
/// is `user`, `user1` stays `user1`), as fail2ban's `COMPLNAME_CRE` reads it.
fn alt_base(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

struct Match {
    groups: Groups,
    whole: (usize, usize),
}

fn truthy(v: Option<&Option<String>>) -> bool {
    matches!(v, Some(Some(s)) if !s.is_empty())
}

/// A fail2ban filter, loaded and compiled.
#[derive(Debug, Clone)]
pub struct Fail2banFilter {
    /// The `.conf` file.
    pub path: PathBuf,
    /// Options it was loaded with (`mode`, `logtype`, ...).
    pub options: Vars,
    /// failregex lines after substitution (fail2ban syntax), for reports.
    pub failregex: Vec<String>,
    /// ignoreregex lines after substitution.
    pub ignoreregex: Vec<String>,
    /// prefregex after substitution.
    pub prefregex: Option<String>,
    /// Lines matched together (`maxlines`), capped at [`MAX_LINES_CAP`].
    pub maxlines: usize,
    /// What was read but is not used, for the operator (journalmatch, usedns).
    pub notes: Vec<String>,
    /// Date templates for file lines.
    pub dates: datetemplate::DateDetector,
    pref: Option<Pattern>,
    fail: Vec<Pattern>,
    ignore: Vec<Pattern>,
}

/// The multi-line memory of one filter in one jail: bounded buffer and failure-id cache.
/// The cache is bounded twice: at most [`MLFID_CACHE`] ids, each forgotten [`MLFID_MAX_AGE`]
/// after it was last seen.
#[derive(Debug)]
pub(crate) struct LineState {
    buffer: Vec<String>,
    /// Failure id to its merged failure and the instant it expires.
    mlfid: lru::LruCache<String, (Fail, Instant)>,
}

impl Default for LineState {
    fn default() -> Self {
        LineState {
            buffer: Vec::new(),
            mlfid: lru::LruCache::new(NonZeroUsize::new(MLFID_CACHE).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

/// A failure's group values as fail2ban keeps them between lines of one `<F-MLFID>`.
#[derive(Debug, Clone, Default)]
struct Fail {
    groups: Groups,
    users: Option<BTreeSet<String>>,
    pending: bool,
}

impl Fail {
    fn get(&self, k: &str) -> Option<&str> {
        self.groups.get(k).and_then(|v| v.as_deref())
    }
    fn truthy(&self, k: &str) -> bool {
        truthy(self.groups.get(k))
    }
    fn pop(&mut self, k: &str) -> bool {
        truthy(self.groups.remove(k).as_ref())
    }
}

/// What one failregex found on a line (fail2ban's `failList` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Index of the failregex.
    pub regex: usize,
    /// The failure id: the address, a DNS name (never resolved), or an `<F-ID>`; None while a
    /// multi-line failure waits for its address.
    pub id: Option<FailureId>,
    /// `<F-NOFAIL>` (or a gained login): informative, not a failure.
    pub nofail: bool,
    /// `<F-USER>`.
    pub user: Option<String>,
}

/// Who failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FailureId {
    /// An address: banned.
    Addr(IpAddr),
    /// A name `<HOST>` matched instead of an address: never resolved, so never banned.
    Dns(String),
    /// An `<F-ID>` that is not an address: nothing to ban.
    Other(String),
}

/// The outcome of one line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LineVerdict {
    /// Every failregex that found something, in order (fail2ban's check-all mode).
    pub found: Vec<Found>,
    /// The first ignoreregex that vetoed a match.
    pub ignored: Option<usize>,
    /// A pattern gave up at the backtrack limit on this line.
    pub backtrack_limit: bool,
}

impl LineVerdict {
    /// The first real failure: not `<F-NOFAIL>`, not waiting for its address.
    pub(crate) fn failure(&self) -> Option<&Found> {
        self.found.iter().find(|f| !f.nofail && f.id.is_some())
    }
}

impl Fail2banFilter {
    /// Loads `path` (a `.conf` file) with `options` (`mode`, `logtype`, ...), as fail2ban's
    /// `FilterReader` does: includes, `[Init]`, `%(name)s`, then `<name>` tags.
    pub(crate) fn load(path: &Path, options: &Vars) -> Result<Fail2banFilter, Fail2banError> {
        let conf = ini::load(path)?;
        let err = |key: &str, reason: BadOption| Fail2banError::Option {
            file: path.to_path_buf(),
            key: key.to_string(),
            reason: Box::new(reason),
        };
        let mut init_opts: Vars = options.clone();
        let p_opts = init_opts.clone();
        let mut opts: BTreeMap<String, String> = BTreeMap::new();
        for key in [
            "usedns",
            "prefregex",
            "ignoreregex",
            "failregex",
            "maxlines",
            "datepattern",
            "journalmatch",
        ] {
            if let Some(v) = interpolate::get(&conf, "Definition", key, &p_opts)
                .map_err(|e| err(key, e.into()))?
            {
                opts.insert(key.to_string(), v);
            }
        }
        if let Some(init) = conf.section("Init") {
            for key in init.keys() {
                let v = interpolate::get(&conf, "Init", key, &Vars::new())
                    .map_err(|e| err(&format!("Init.{key}"), e.into()))?
                    .unwrap_or_default();
                if !key.starts_with("known/") {
                    init_opts.insert(format!("known/{key}"), v.clone());
                }
                init_opts.entry(key.clone()).or_insert(v);
            }
        }
        let mut combined = opts;
        combined.extend(init_opts.clone());
        let fallback = |name: &str| interpolate::get_ex(&conf, "Definition", name, &p_opts);
        interpolate::substitute_tags(&mut combined, &fallback)
            .map_err(|e| err("tags", e.into()))?;
        let lines = |key: &str| -> Vec<String> {
            combined
                .get(key)
                .map(|v| {
                    v.split('\n')
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let failregex = lines("failregex");
        let ignoreregex = lines("ignoreregex");
        let prefregex = combined
            .get("prefregex")
            .filter(|p| !p.trim().is_empty())
            .cloned();
        let maxlines = match combined.get("maxlines").map(|m| m.trim()) {
            None | Some("") => 1,
            Some(m) => m
                .parse::<usize>()
                .map_err(|_| err("maxlines", BadOption::NotANumber(m.to_string())))?
                .clamp(1, MAX_LINES_CAP),
        };
        let mut notes = Vec::new();
        if combined
            .get("journalmatch")
            .is_some_and(|j| !j.trim().is_empty())
        {
            notes.push(
                "journalmatch is read and ignored: jailsink reads syslog, not the journal".into(),
            );
        }
        if let Some(u) = combined.get("usedns").filter(|u| u.trim() != "no") {
            notes.push(format!(
                "usedns = {u} is ignored: jailsink never resolves names"
            ));
        }
        let dates =
            datetemplate::DateDetector::new(combined.get("datepattern").map(String::as_str))
                .map_err(|e| err("datepattern", e.into()))?;
        let pref = prefregex
            .as_deref()
            .map(|p| Pattern::new(p, false).map_err(|e| err("prefregex", e.into())))
            .transpose()?;
        let compile_all =
            |list: &[String], key: &str, multiline: bool| -> Result<Vec<Pattern>, Fail2banError> {
                list.iter()
                    .enumerate()
                    .map(|(i, p)| {
                        Pattern::new(p, multiline)
                            .map_err(|e| err(&format!("{key}[{i}]"), e.into()))
                    })
                    .collect()
            };
        // fail2ban's filter.py: only failregex follows maxlines; ignoreregex and prefregex are
        // compiled without re.MULTILINE.
        let fail = compile_all(&failregex, "failregex", maxlines > 1)?;
        let ignore = compile_all(&ignoreregex, "ignoreregex", false)?;
        const IDS: [&str; 5] = ["fid", "ip4", "ip6", "dns", "mlfid"];
        for (i, p) in fail.iter().enumerate() {
            let has = |p: &Pattern| IDS.iter().any(|g| p.has_group(g));
            if !has(p) && !pref.as_ref().is_some_and(has) {
                return Err(err(
                    &format!("failregex[{i}]"),
                    BadOption::NothingIdentifies,
                ));
            }
        }
        Ok(Fail2banFilter {
            path: path.to_path_buf(),
            options: options.clone(),
            failregex,
            ignoreregex,
            prefregex,
            maxlines,
            notes,
            dates,
            pref,
            fail,
            ignore,
        })
    }

    /// A file line as fail2ban sees it: the date found and cut out, the rest joined.
    pub(crate) fn cut_date(
        &self,
        line: &str,
        now: chrono::NaiveDateTime,
    ) -> (String, Option<datetemplate::FoundDate>) {
        match self.dates.find(line, now) {
            Some(found) => {
                let (a, b) = found.span;
                (format!("{}{}", &line[..a], &line[b..]), Some(found))
            }
            None => (line.to_string(), None),
        }
    }

    /// fail2ban's `findFailure` in check-all mode for one line (date already cut out), now.
    pub(crate) fn process(&self, state: &mut LineState, line: &str) -> LineVerdict {
        self.process_at(state, line, Instant::now())
    }

    /// [`Fail2banFilter::process`] at a given instant: multi-line failure ids last seen more
    /// than [`MLFID_MAX_AGE`] before `now` are forgotten (fail2ban measures this in real time
    /// too, also when it reads a file).
    pub(crate) fn process_at(
        &self,
        state: &mut LineState,
        line: &str,
        now: Instant,
    ) -> LineVerdict {
        let mut verdict = LineVerdict::default();
        if self.maxlines > 1 {
            state.buffer.push(line.to_string());
            let excess = state.buffer.len().saturating_sub(self.maxlines);
            state.buffer.drain(..excess);
        } else {
            state.buffer.clear();
            state.buffer.push(line.to_string());
        }
        let org = state.buffer.clone();
        let joined = |lines: &[String]| {
            let mut s = lines.join("\n");
            s.push('\n');
            s
        };
        let mut buf = Some(joined(&org));
        if !self.ignore.is_empty() && (self.ignore.len() as isize) < self.fail.len() as isize - 2 {
            if let Some(i) = self.ignored(buf.as_deref().unwrap_or(""), &mut verdict) {
                verdict.ignored = Some(i);
                return verdict;
            }
        }
        let mut pre = Groups::new();
        if let Some(pref) = &self.pref {
            match pref.search(buf.as_deref().unwrap_or("")) {
                Ok(Some(m)) => {
                    pre = m.groups;
                    if let Some(Some(content)) = pre.remove("content") {
                        if !content.is_empty() {
                            state.buffer = vec![content];
                            buf = None;
                        }
                    }
                }
                Ok(None) => return verdict,
                Err(BacktrackLimit) => {
                    verdict.backtrack_limit = true;
                    return verdict;
                }
            }
        }
        for (index, pattern) in self.fail.iter().enumerate() {
            let text = buf.get_or_insert_with(|| joined(&state.buffer)).clone();
            let m = match pattern.search(&text) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(BacktrackLimit) => {
                    verdict.backtrack_limit = true;
                    continue;
                }
            };
            let (matched, unmatched) = split_lines(&text, m.whole, &org, &m.groups);
            let ignore_text = if self.maxlines > 1 {
                joined(&matched)
            } else {
                text.clone()
            };
            if !self.ignore.is_empty() {
                if let Some(i) = self.ignored(&ignore_text, &mut verdict) {
                    verdict.ignored.get_or_insert(i);
                    if self.maxlines > 1 {
                        state.buffer = unmatched;
                    }
                    buf = None;
                    continue;
                }
            }
            if self.maxlines > 1 {
                state.buffer = unmatched;
                buf = None;
            }
            let mut groups = pre.clone();
            groups.extend(m.groups);
            let mut fail = Fail {
                groups,
                ..Default::default()
            };
            let mlfid = fail.get("mlfid").map(str::to_string);
            let mut cached = None;
            if let Some(id) = &mlfid {
                let (merged, keep) = merge_failure(state, id, fail, now);
                fail = merged;
                cached = keep.then(|| id.clone());
            }
            let fid = fail.get("fid").map(str::to_string);
            let id = if let Some(ip) = fail.get("ip4").or_else(|| fail.get("ip6")) {
                let addr = ip.parse::<IpAddr>().ok().map(crate::address::normalise);
                match (&fid, addr) {
                    (Some(f), _) if f != ip => Some(id_of(f)),
                    (_, Some(a)) => Some(FailureId::Addr(a)),
                    (_, None) => Some(FailureId::Other(ip.to_string())),
                }
            } else if let Some(dns) = fail.get("dns") {
                Some(FailureId::Dns(dns.to_string()))
            } else if let Some(f) = fid {
                Some(id_of(&f))
            } else if mlfid.is_none() {
                // fail2ban: "No group found" — the regex names no failure; nothing is reported.
                continue;
            } else {
                None
            };
            if id.is_none() {
                fail.pending = true;
                if let Some((entry, _)) = cached.as_ref().and_then(|k| state.mlfid.get_mut(k)) {
                    entry.pending = true;
                }
            }
            verdict.found.push(Found {
                regex: index,
                id,
                nofail: fail.truthy("nofail"),
                user: fail.get("user").map(str::to_string),
            });
        }
        verdict
    }

    fn ignored(&self, buf: &str, verdict: &mut LineVerdict) -> Option<usize> {
        for (i, p) in self.ignore.iter().enumerate() {
            match p.re.is_match(buf) {
                Ok(true) => return Some(i),
                Ok(false) => {}
                Err(BacktrackLimit) => verdict.backtrack_limit = true,
            }
        }
        None
    }
}

fn id_of(text: &str) -> FailureId {
    match text.parse::<IpAddr>() {
        Ok(ip) => FailureId::Addr(crate::address::normalise(ip)),
        Err(_) => FailureId::Other(text.to_string()),
    }
}

/// Lines of the buffer the match covered, and the rest (minus `<SKIPLINES>`), as fail2ban's
/// `Regex.search` splits them.
fn split_lines(
    text: &str,
    whole: (usize, usize),
    org: &[String],
    groups: &Groups,
) -> (Vec<String>, Vec<String>) {
    if org.len() <= 1 {
        return (org.to_vec(), Vec::new());
    }
    // Searched as bytes: a match may begin or end with a multi-byte character, so one byte
    // past its start or before its end need not be a character boundary.
    let bytes = text.as_bytes();
    let start =
        memchr::memrchr(b'\n', &bytes[..(whole.0 + 1).min(bytes.len())]).map_or(0, |i| i + 1);
    let from = whole.1.saturating_sub(1).min(bytes.len());
    let end = memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len(), |i| from + i + 1);
    let first = text[..start].matches('\n').count().min(org.len());
    let last = text[..end].matches('\n').count().clamp(first, org.len());
    let mut matched: Vec<String> = org[first..last].to_vec();
    let mut unmatched: Vec<String> = org[..first].to_vec();
    let skipped: Vec<&str> = groups
        .iter()
        .filter(|(k, _)| k.starts_with("skiplines"))
        .filter_map(|(_, v)| v.as_deref())
        .flat_map(str::lines)
        .collect();
    let mut n = 0;
    for s in skipped {
        if let Some(m) = matched[n.min(matched.len())..].iter().position(|l| l == s) {
            unmatched.push(matched.remove(n + m));
            n += m;
        }
    }
    unmatched.extend_from_slice(&org[last..]);
    (matched, unmatched)
}

/// fail2ban's `_mergeFailure`: joins lines of one `<F-MLFID>` (an sshd session) so that a
/// failure seen before its address, or an address seen before its failure, still counts.
/// Returns the merged failure and whether it stays in the cache.
fn merge_failure(state: &mut LineState, mlfid: &str, mut fail: Fail, now: Instant) -> (Fail, bool) {
    let mut flags = 0u8;
    if fail.truthy("mlfgained") {
        flags |= 8 | 1;
        if !fail.truthy("nofail") {
            let gained = fail.groups.get("mlfgained").cloned().flatten();
            fail.groups.insert("nofail".into(), gained);
        }
    } else if fail.truthy("nofail") {
        flags |= 1;
    }
    if fail.pop("mlfforget") {
        flags |= 2;
    }
    let user = fail
        .get("user")
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let live = state
        .mlfid
        .pop(mlfid)
        .and_then(|(entry, expires)| (expires > now).then_some(entry));
    let (mut merged, keep, users) = match live {
        Some(mut entry) => {
            if let Some(u) = user {
                entry.users.get_or_insert_with(BTreeSet::new).insert(u);
            }
            if entry.pop("nofail") {
                flags |= 4;
            }
            if entry.pop("mlfgained") {
                flags |= 4;
            }
            if flags & 8 != 0 {
                entry.pending = false;
            }
            for (k, v) in fail.groups {
                if v.is_some() {
                    entry.groups.insert(k, v);
                }
            }
            let users = entry.users.clone();
            (entry, flags & 2 == 0, users)
        }
        None if flags & 2 == 0 => {
            if let Some(u) = user {
                fail.users.get_or_insert_with(BTreeSet::new).insert(u);
            }
            let users = fail.users.clone();
            (fail, true, users)
        }
        None => (fail, false, None),
    };
    let was_pending = std::mem::take(&mut merged.pending);
    if was_pending || users.is_some_and(|u| u.len() > 1) {
        merged.groups.remove("nofail");
        merged.groups.remove("mlfgained");
    }
    if keep {
        // Every put refreshes the deadline and makes the entry most recent, so the least
        // recent entries are also the first to expire: drop those that did.
        while state
            .mlfid
            .peek_lru()
            .is_some_and(|(_, (_, expires))| *expires <= now)
        {
            state.mlfid.pop_lru();
        }
        state
            .mlfid
            .put(mlfid.to_string(), (merged.clone(), now + MLFID_MAX_AGE));
    }
    (merged, keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str, options: &Vars) -> Fail2banFilter {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        std::fs::write(&path, text).unwrap();
        Fail2banFilter::load(&path, options).unwrap()
    }

    #[test]
    fn alt_names_merge_as_fail2bans_complname_cre_reads_them() {
        assert_eq!(alt_base("user_1"), "user");
        assert_eq!(alt_base("user_12"), "user");
        assert_eq!(alt_base("user1"), "user1");
        assert_eq!(alt_base("user"), "user");
        assert_eq!(alt_base("user_"), "user_");
        assert_eq!(alt_base("my_user_2"), "my_user");
        // A `<F-ALT_USER1>` match with no `<F-USER>` leaves the user unset.
        let f = filter(
            "[Definition]\nfailregex = ^bad <HOST> (?:<F-USER>\\S+</F-USER>|as <F-ALT_USER1>\\S+</F-ALT_USER1>)$\n",
            &Vars::new(),
        );
        let v = f.process(&mut LineState::default(), "bad 192.0.2.1 as dovecot");
        assert_eq!(v.failure().unwrap().user, None);
        let f = filter(
            "[Definition]\nfailregex = ^bad <HOST> (?:<F-USER>\\S+</F-USER>|as <F-ALT_USER_1>\\S+</F-ALT_USER_1>)$\n",
            &Vars::new(),
        );
        let v = f.process(&mut LineState::default(), "bad 192.0.2.1 as alice");
        assert_eq!(v.failure().unwrap().user.as_deref(), Some("alice"));
    }

    #[test]
    fn options_split_from_the_name() {
        let (name, vars) = split_options(r#"sshd.conf[mode=aggressive, x="a,b"]"#).unwrap();
        assert_eq!(name, "sshd.conf");
        assert_eq!(vars["mode"], "aggressive");
        assert_eq!(vars["x"], "a,b");
        assert!(split_options("sshd[mode]").is_err());
    }

    #[test]
    fn modes_select_regexes_and_prefregex_narrows() {
        let text = "[Definition]\nprefregex = ^\\s*\\S+ <F-CONTENT>.+</F-CONTENT>$\nfailregex = ^fail <HOST>$\n            <mdre-<mode>>\nmdre-normal =\nmdre-aggr = ^aggr <HOST>$\nmode = normal\n";
        let f = filter(text, &Vars::new());
        assert_eq!(f.failregex, ["^fail <HOST>$"]);
        let mut st = LineState::default();
        let v = f.process(&mut st, " host fail 192.0.2.1");
        assert_eq!(
            v.failure().unwrap().id,
            Some(FailureId::Addr("192.0.2.1".parse().unwrap()))
        );
        let aggr = filter(text, &[("mode".to_string(), "aggr".to_string())].into());
        assert_eq!(aggr.failregex.len(), 2);
        assert!(aggr
            .process(&mut st, "h aggr 192.0.2.2")
            .failure()
            .is_some());
    }

    #[test]
    fn dns_names_are_found_but_not_addresses() {
        let f = filter("[Definition]\nfailregex = ^bad <HOST>$\n", &Vars::new());
        let v = f.process(&mut LineState::default(), "bad example.com");
        assert_eq!(
            v.failure().unwrap().id,
            Some(FailureId::Dns("example.com".into()))
        );
    }

    #[test]
    fn a_multi_line_failregex_matches_at_any_buffered_line_as_fail2bans_re_multiline() {
        let f = filter(
            "[Definition]\nfailregex = ^fail <HOST>$\nmaxlines = 2\n",
            &Vars::new(),
        );
        let mut st = LineState::default();
        assert!(f.process(&mut st, "noise").failure().is_none());
        let v = f.process(&mut st, "fail 192.0.2.1");
        assert_eq!(
            v.failure().unwrap().id,
            Some(FailureId::Addr("192.0.2.1".parse().unwrap()))
        );
        // ignoreregex stays anchored at the buffer's start, as fail2ban compiles it.
        let f = filter(
            "[Definition]\nfailregex = fail <HOST>\nignoreregex = ^ok$\nmaxlines = 2\n",
            &Vars::new(),
        );
        let mut st = LineState::default();
        f.process(&mut st, "noise");
        assert!(f.process(&mut st, "ok fail 192.0.2.2").failure().is_some());
    }

    #[test]
    fn a_match_ending_in_a_multi_byte_character_splits_its_lines_without_a_panic() {
        let f = filter(
            "[Definition]\nfailregex = ^fail <HOST> user \\S+$\nmaxlines = 2\n",
            &Vars::new(),
        );
        let mut st = LineState::default();
        f.process(&mut st, "noise");
        // The match ends in `é`: one byte before its end is inside the character.
        let v = f.process(&mut st, "fail 192.0.2.1 user jos\u{e9}");
        assert_eq!(
            v.failure().unwrap().id,
            Some(FailureId::Addr("192.0.2.1".parse().unwrap()))
        );
        // ... and one that begins with `é`: one byte past its start is inside it.
        let f = filter(
            "[Definition]\nfailregex = \\S+ failed from <HOST>$\nmaxlines = 2\n",
            &Vars::new(),
        );
        let mut st = LineState::default();
        f.process(&mut st, "noise");
        let v = f.process(&mut st, "\u{e9} failed from 192.0.2.4");
        assert_eq!(
            v.failure().unwrap().id,
            Some(FailureId::Addr("192.0.2.4".parse().unwrap()))
        );
    }

    #[test]
    fn multi_line_failure_waits_for_its_address() {
        let text = "[Definition]\nprefregex = ^<F-MLFID>s\\d+</F-MLFID> <F-CONTENT>.+</F-CONTENT>$\nfailregex = ^auth failed$\n            ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$\n            ^<F-MLFFORGET>closed</F-MLFFORGET>$\n";
        let f = filter(text, &Vars::new());
        let mut st = LineState::default();
        let v = f.process(&mut st, "s1 connect from 192.0.2.7");
        assert!(v.failure().is_none(), "{v:?}");
        let v = f.process(&mut st, "s1 auth failed");
        assert_eq!(
            v.failure().unwrap().id,
            Some(FailureId::Addr("192.0.2.7".parse().unwrap()))
        );
        f.process(&mut st, "s1 closed");
        assert!(f.process(&mut st, "s1 auth failed").failure().is_none());
    }

    #[test]
    fn multi_line_ids_are_forgotten_after_five_minutes() {
        let text = "[Definition]\nprefregex = ^<F-MLFID>s\\d+</F-MLFID> <F-CONTENT>.+</F-CONTENT>$\nfailregex = ^auth failed$\n            ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$\n";
        let f = filter(text, &Vars::new());
        let mut st = LineState::default();
        let t0 = Instant::now();
        f.process_at(&mut st, "s1 connect from 192.0.2.7", t0);
        f.process_at(&mut st, "s2 connect from 192.0.2.8", t0);
        // s2 is seen again at 4 minutes, which refreshes it; s1 is not.
        let later = t0 + Duration::from_secs(240);
        assert!(f
            .process_at(&mut st, "s2 auth failed", later)
            .failure()
            .is_some());
        let expired = t0 + MLFID_MAX_AGE + Duration::from_secs(1);
        assert!(
            f.process_at(&mut st, "s1 auth failed", expired)
                .failure()
                .is_none(),
            "s1 was last seen more than five minutes ago"
        );
        assert_eq!(
            f.process_at(&mut st, "s2 auth failed", expired)
                .failure()
                .and_then(|found| found.id.clone()),
            Some(FailureId::Addr("192.0.2.8".parse().unwrap()))
        );
    }
}
