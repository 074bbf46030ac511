//! `jailsink regex LOG FILTER`: a filter tried offline against a log, as `fail2ban-regex` does.
//!
//! Native filters read lines as on-disk syslog (`Nov 29 18:52:53 host prog[pid]: message`); a
//! line with no syslog header is matched whole. fail2ban `.conf` filters see the line as
//! fail2ban would: its date found (datepattern or fail2ban's default templates) and cut out.
//! Times come from the lines themselves, since a file has no receipt time.
//!
//! `<HOST>` in a fail2ban filter also matches DNS names; jailsink never resolves them, so such a
//! line counts as missed, with a note (`--print-all-missed`) naming the host it would have been.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::config::filter_file::{read_filter, FilterFileContents, FilterFileError};
use crate::filter::fail2ban::{Fail2banFilter, FailureId, LineState};
use crate::filter::{Filter, FilterSource, PatternError, Verdict};
use crate::parse::{self, Zone};

mod parallel;

/// The most threads `--threads` takes (each keeps two megabyte chunks of the log in flight).
pub use parallel::MAX_THREADS;

/// The filter under test.
#[derive(Debug, Clone)]
// One per `jailsink regex` run and never moved on a hot path: the size difference is harmless.
#[allow(clippy::large_enum_variant)]
pub enum FilterKind {
    /// A jailsink filter (TOML file or literal regex).
    Native(Filter),
    /// A fail2ban `.conf` filter.
    Fail2ban(Box<Fail2banFilter>),
}

/// Where a filter named on the command line came from, for the report.
#[derive(Debug, Clone)]
pub struct LoadedFilter {
    /// The compiled filter.
    pub filter: FilterKind,
    /// A file path, or "literal".
    pub origin: String,
}

impl LoadedFilter {
    /// Every failure pattern in the order matches number them (a native filter's
    /// failregex, then its pendingregex and echoregex).
    fn failregex(&self) -> Vec<&String> {
        match &self.filter {
            FilterKind::Native(f) => {
                let s = f.source();
                s.failregex
                    .iter()
                    .chain(&s.pendingregex)
                    .chain(&s.echoregex)
                    .collect()
            }
            FilterKind::Fail2ban(f) => f.failregex.iter().collect(),
        }
    }

    fn ignoreregex(&self) -> &[String] {
        match &self.filter {
            FilterKind::Native(f) => &f.source().ignoreregex,
            FilterKind::Fail2ban(f) => &f.ignoreregex,
        }
    }
}

/// Why FILTER could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadFilterError {
    /// The filter file was not found or could not be read.
    #[error(transparent)]
    File(#[from] FilterFileError),
    /// Patterns do not compile: one line per problem, each naming where it is.
    #[error("{}", show_patterns(.origin, .errors))]
    Patterns {
        /// A file path, or "literal".
        origin: String,
        /// Every problem found.
        errors: Vec<PatternError>,
    },
    /// `--filter-option` with a literal regex, which has no options.
    #[error("--filter-option applies to a filter file, not to a literal regex")]
    OptionsOnLiteral,
}

fn show_patterns(origin: &str, errors: &[PatternError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("{origin}: {e}")).collect();
    lines.join("\n")
}

/// Reads one `--filter-option KEY=VALUE`.
pub fn filter_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE (e.g. mode=aggressive)")),
    }
}

/// Resolves FILTER: a literal regex with `<HOST>`, a path to a `.toml` filter, a path to a
/// fail2ban `.conf` filter with optional `[key=value, ...]` options, or a name looked up in
/// `dirs` (`NAME.toml` first, then `NAME.conf`). `options` are a jail's `filter_options`, so the
/// filter judges lines exactly as in a jail that names it with them.
pub fn load_filter(
    spec: &str,
    dirs: &[PathBuf],
    options: &BTreeMap<String, String>,
) -> Result<LoadedFilter, LoadFilterError> {
    if ["<HOST>", "<ADDR>", "<SUBNET>", "<IP4>", "<IP6>"]
        .iter()
        .any(|t| spec.contains(t))
    {
        if !options.is_empty() {
            return Err(LoadFilterError::OptionsOnLiteral);
        }
        return compile(
            FilterSource {
                failregex: vec![spec.to_string()],
                ..Default::default()
            },
            "literal".into(),
        );
    }
    let options = (!options.is_empty()).then_some(options);
    match read_filter(spec, dirs, Path::new(""), options)? {
        FilterFileContents::Fail2ban { origin, filter, .. } => Ok(LoadedFilter {
            filter: FilterKind::Fail2ban(Box::new(filter)),
            origin,
        }),
        FilterFileContents::Native { path, source } => compile(source, path.display().to_string()),
    }
}

fn compile(source: FilterSource, origin: String) -> Result<LoadedFilter, LoadFilterError> {
    match Filter::compile(&source) {
        Ok(filter) => Ok(LoadedFilter {
            filter: FilterKind::Native(filter),
            origin,
        }),
        Err(errors) => Err(LoadFilterError::Patterns { origin, errors }),
    }
}

/// What to print besides the summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print every matched line.
    pub print_all_matched: bool,
    /// Print every missed line.
    pub print_all_missed: bool,
    /// One JSON object per input line instead of the report.
    pub json: bool,
    /// Threads judging a native filter's lines (0 and 1: the calling thread alone).
    pub threads: usize,
}

/// One line's result, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineResult {
    /// 1-based line number.
    pub line: u64,
    /// matched, ignored or missed.
    pub result: &'static str,
    /// The address found.
    pub host: Option<IpAddr>,
    /// Index of the failregex (or ignoreregex, for ignored lines) that hit.
    pub regex: Option<usize>,
    /// The line's own timestamp.
    pub time: Option<String>,
    /// The same timestamp unformatted (the report formats only what it prints).
    #[serde(skip)]
    pub stamp: Option<NaiveDateTime>,
    /// `<F-USER>`.
    pub user: Option<String>,
    /// A failure that names no address (a DNS name `<HOST>` matched, or an `<F-ID>`): never
    /// resolved, never banned, so the line is missed; this says what fail2ban would have seen.
    #[serde(skip)]
    pub unbannable: Option<String>,
    /// Index of the date template that found the time (fail2ban filters).
    #[serde(skip)]
    pub date_template: Option<usize>,
    /// A backtracking pattern gave up on this line.
    #[serde(skip)]
    pub backtrack_limit: bool,
}

/// Judges the lines of one log in order; a fail2ban filter's multi-line state lives here.
pub struct Judge<'a> {
    loaded: &'a LoadedFilter,
    zone: Zone,
    state: LineState,
    now: NaiveDateTime,
    now_utc: DateTime<Utc>,
    /// Whether missed lines get their time formatted too (JSON output shows it; the report
    /// only shows the times of matched lines, so it skips the work).
    pub times_for_missed: bool,
    /// Whether `time` is formatted at all (the report keeps `stamp` and formats when it prints).
    format_times: bool,
}

impl<'a> Judge<'a> {
    /// A judge for `loaded`; year-less dates are placed relative to `now` (local log time).
    pub fn new(loaded: &'a LoadedFilter, zone: Zone, now: NaiveDateTime) -> Self {
        Judge {
            loaded,
            zone,
            state: LineState::default(),
            now,
            now_utc: Utc::now(),
            times_for_missed: true,
            format_times: true,
        }
    }

    /// Judges the next line.
    pub fn line(&mut self, number: u64, line: &str) -> LineResult {
        match &self.loaded.filter {
            FilterKind::Native(f) => judge_at(
                f,
                number,
                line,
                &self.zone,
                self.now_utc,
                self.times_for_missed && self.format_times,
                self.format_times,
            ),
            FilterKind::Fail2ban(f) => {
                let line = line.trim_end_matches(['\r', '\n']);
                let (text, date) = f.cut_date(line, self.now);
                let verdict = f.process(&mut self.state, &text);
                let stamp = date.as_ref().and_then(|d| d.time);
                let mut r = LineResult {
                    line: number,
                    result: "missed",
                    host: None,
                    regex: None,
                    time: stamp
                        .filter(|_| self.format_times)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string()),
                    stamp,
                    user: None,
                    unbannable: None,
                    date_template: date.map(|d| d.template),
                    backtrack_limit: verdict.backtrack_limit,
                };
                match verdict.failure() {
                    Some(found) => match &found.id {
                        Some(FailureId::Addr(ip)) => {
                            r.result = "matched";
                            r.host = Some(*ip);
                            r.regex = Some(found.regex);
                            r.user = found.user.clone();
                        }
                        Some(FailureId::Dns(name) | FailureId::Other(name)) => {
                            r.unbannable = Some(name.clone());
                        }
                        None => {}
                    },
                    None => {
                        if let Some(i) = verdict.ignored {
                            r.result = "ignored";
                            r.regex = Some(i);
                        }
                    }
                }
                r
            }
        }
    }
}

/// Judges one line of a log with a native filter.
#[cfg(test)]
pub(crate) fn judge(filter: &Filter, number: u64, line: &str, zone: &Zone) -> LineResult {
    judge_at(filter, number, line, zone, Utc::now(), true, true)
}

/// [`judge`] with the reading time given (a 3164 date's year depends on it), once per log rather
/// than once per line; a missed line's time is formatted only when `times_for_missed`, and no
/// time at all unless `format` (the unformatted `stamp` is always there).
pub(crate) fn judge_at(
    filter: &Filter,
    number: u64,
    line: &str,
    zone: &Zone,
    now: DateTime<Utc>,
    times_for_missed: bool,
    format: bool,
) -> LineResult {
    let (message, stamp) = match parse::parse(line, zone, now) {
        Ok(event) => (event.message, event.timestamp),
        Err(_) => (line.trim(), None),
    };
    let (result, host, regex, user) = match filter.check(message) {
        Verdict::Failure(m) => (
            "matched",
            Some(m.ip),
            Some(m.regex),
            m.user.map(String::from),
        ),
        Verdict::Ignored(i) => ("ignored", None, Some(i), None),
        Verdict::Missed => ("missed", None, None, None),
    };
    let stamp = stamp.map(|t| t.naive_local());
    let time = match stamp {
        Some(t) if format && (result != "missed" || times_for_missed) => Some(format_time(&t)),
        _ => None,
    };
    LineResult {
        line: number,
        result,
        host,
        regex,
        time,
        stamp,
        user,
        unbannable: None,
        date_template: None,
        backtrack_limit: false,
    }
}

/// `2026-11-29T18:52:53`, written by hand: chrono's strftime re-reads its format every call.
fn format_time(t: &NaiveDateTime) -> String {
    // The 19 bytes are ASCII digits and separators.
    time_bytes(t).iter().map(|&b| char::from(b)).collect()
}

/// [`format_time`]'s bytes, in place: the report writes one per failure (200,000 on the 1M-line
/// corpus), and a `String` each, built a char at a time, was 5% of the run's instructions.
fn time_bytes(t: &NaiveDateTime) -> [u8; 19] {
    use chrono::{Datelike, Timelike};
    let mut out = *b"0000-00-00T00:00:00";
    let mut two = |at: usize, n: u32| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    let year = t.year().clamp(0, 9999) as u32;
    two(0, year / 100);
    two(2, year % 100);
    two(5, t.month());
    two(8, t.day());
    two(11, t.hour());
    two(14, t.minute());
    two(17, t.second());
    out
}

/// Totals for the report.
#[derive(Debug, Default)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines with a failure.
    pub matched: u64,
    /// Lines vetoed by ignoreregex.
    pub ignored: u64,
    /// Lines that matched nothing.
    pub missed: u64,
    /// Hits per failregex.
    pub fail_hits: Vec<u64>,
    /// Hits per ignoreregex.
    pub ignore_hits: Vec<u64>,
    /// Addresses with the times they failed (formatted when the report prints them).
    pub hosts: BTreeMap<IpAddr, Vec<Option<NaiveDateTime>>>,
    /// Failures naming a DNS name or non-address id (counted as missed, never banned).
    pub unbannable: u64,
    /// Hits per date template (fail2ban filters), by template index.
    pub date_hits: BTreeMap<usize, u64>,
    /// Lines on which a backtracking pattern hit its limit.
    pub backtrack_limited: u64,
}

/// Each address's failure times in line order, while the lines are judged.
type HostTimes = HashMap<IpAddr, Vec<Option<NaiveDateTime>>, foldhash::fast::RandomState>;

/// What a run of consecutive lines added up to: the whole log on one thread, or one chunk of it
/// on one of several, to be appended to the chunks before it in order.
struct Tally {
    summary: Summary,
    /// Hashed while the lines go by (a BTreeMap's walk of IpAddr comparisons per failure cost
    /// more), ordered once at the end for the report.
    hosts: HostTimes,
    /// Lines `--print-all-matched`/`--print-all-missed` print after the report.
    printed: Vec<(&'static str, String)>,
}

impl Tally {
    fn new(failregex: usize, ignoreregex: usize) -> Self {
        Tally {
            summary: Summary {
                fail_hits: vec![0; failregex],
                ignore_hits: vec![0; ignoreregex],
                ..Default::default()
            },
            hosts: HostTimes::default(),
            printed: Vec::new(),
        }
    }

    /// Counts one line's result; with `--json`, writes it to `out`.
    fn add(
        &mut self,
        r: LineResult,
        line: &str,
        options: Options,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let summary = &mut self.summary;
        summary.lines += 1;
        if let Some(t) = r.date_template {
            *summary.date_hits.entry(t).or_default() += 1;
        }
        summary.unbannable += u64::from(r.unbannable.is_some());
        summary.backtrack_limited += u64::from(r.backtrack_limit);
        match (r.result, r.regex) {
            ("matched", Some(i)) => {
                summary.matched += 1;
                summary.fail_hits[i] += 1;
                if let Some(ip) = r.host {
                    self.hosts.entry(ip).or_default().push(r.stamp);
                }
            }
            ("ignored", Some(i)) => {
                summary.ignored += 1;
                summary.ignore_hits[i] += 1;
            }
            _ => summary.missed += 1,
        }
        if options.json {
            serde_json::to_writer(&mut *out, &r)?;
            writeln!(out)?;
        } else if (options.print_all_matched && r.result == "matched")
            || (options.print_all_missed && r.result == "missed")
        {
            let note = match &r.unbannable {
                Some(name) => {
                    format!(" (matched {name}: not an address, never resolved or banned)")
                }
                None => String::new(),
            };
            self.printed.push((r.result, format!("{line}{note}")));
        }
        Ok(())
    }

    /// Appends the tally of the lines that came next: counts add up, and each address's times
    /// and the printed lines go after this tally's, as one thread would have put them.
    fn append(&mut self, next: Tally) {
        let (s, n) = (&mut self.summary, next.summary);
        s.lines += n.lines;
        s.matched += n.matched;
        s.ignored += n.ignored;
        s.missed += n.missed;
        s.unbannable += n.unbannable;
        s.backtrack_limited += n.backtrack_limited;
        for (total, add) in s.fail_hits.iter_mut().zip(n.fail_hits) {
            *total += add;
        }
        for (total, add) in s.ignore_hits.iter_mut().zip(n.ignore_hits) {
            *total += add;
        }
        for (t, hits) in n.date_hits {
            *s.date_hits.entry(t).or_default() += hits;
        }
        for (ip, times) in next.hosts {
            self.hosts.entry(ip).or_default().extend(times);
        }
        self.printed.extend(next.printed);
    }
}

/// Reads LOG (`-`, a file, or one literal line), judges every line, and writes the report.
/// A native filter's lines are judged on `options.threads` threads, with the report and the
/// `--json` lines exactly as one thread writes them; a fail2ban filter's multi-line state needs
/// the lines one after the other, on one thread.
pub fn run(
    log: &str,
    loaded: &LoadedFilter,
    zone: &Zone,
    options: Options,
    out: &mut impl Write,
) -> std::io::Result<Summary> {
    let started = Instant::now();
    let (failregex, ignoreregex) = (loaded.failregex().len(), loaded.ignoreregex().len());
    let mut tally = Tally::new(failregex, ignoreregex);
    let now = Utc::now()
        .with_timezone(&zone.offset_at(Utc::now()))
        .naive_local();
    let mut judge = Judge::new(loaded, *zone, now);
    judge.times_for_missed = options.json;
    judge.format_times = options.json;
    // Lines are judged where they lie in one big read buffer: no allocation per valid UTF-8 line.
    let mut read_all = |reader: &mut dyn Read, out: &mut dyn Write| -> std::io::Result<()> {
        if let (FilterKind::Native(filter), 2..) = (&loaded.filter, options.threads) {
            let now_utc = judge.now_utc;
            let work = |filter: &mut Filter,
                        first_line: u64,
                        chunk: &[u8]|
             -> std::io::Result<(Tally, Vec<u8>)> {
                let mut part = Tally::new(failregex, ignoreregex);
                let mut json = Vec::new();
                let mut number = first_line;
                parallel::lines_of(chunk, |line| {
                    number += 1;
                    let line = &text(line);
                    let r = judge_at(
                        filter,
                        number,
                        line,
                        zone,
                        now_utc,
                        options.json,
                        options.json,
                    );
                    part.add(r, line, options, &mut json)
                })?;
                Ok((part, json))
            };
            return parallel::in_order(
                reader,
                options.threads,
                READ_CHUNK,
                &|| filter.clone(),
                &work,
                &mut |(part, json)| {
                    out.write_all(&json)?;
                    tally.append(part);
                    Ok(())
                },
            );
        }
        let mut number = 0;
        for_each_line(reader, |line| {
            number += 1;
            let line = &text(line);
            tally.add(judge.line(number, line), line, options, out)
        })
    };
    let log_name = if log == "-" {
        read_all(&mut std::io::stdin().lock(), out)?;
        "stdin".to_string()
    } else if Path::new(log).is_file() {
        let mut file = std::fs::File::open(log)?;
        read_all(&mut file, out)?;
        log.to_string()
    } else {
        tally.add(judge.line(1, log), log, options, out)?;
        "literal line".to_string()
    };
    let Tally {
        mut summary,
        hosts,
        printed,
    } = tally;
    summary.hosts = hosts.into_iter().collect();
    if options.json {
        return Ok(summary);
    }
    let secs = started.elapsed().as_secs_f64();
    report(out, &log_name, loaded, &summary, &printed, secs)?;
    Ok(summary)
}

/// A line as text. Validating in place is several times cheaper than from_utf8_lossy's chunked
/// walk, which only invalid lines need.
fn text(line: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(line) => Cow::Borrowed(line),
        Err(_) => String::from_utf8_lossy(line),
    }
}

/// Bytes read from the log at a time.
const READ_CHUNK: usize = 1 << 20;

/// Calls `f` with every line of `reader` (without its `\n`; a last line without one is a line
/// too), as `BufRead::read_until` would split them, but found with a vectorised `memchr` in
/// megabyte reads and handed over in place. A line longer than the buffer grows it.
fn for_each_line(
    reader: &mut dyn Read,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if filled > 0 {
                f(&buf[..filled])?;
            }
            return Ok(());
        }
        let end = filled + n;
        let mut start = 0;
        // The bytes before `filled` were searched already: they hold no newline.
        for at in memchr::memchr_iter(b'\n', &buf[filled..end]) {
            let nl = filled + at;
            f(&buf[start..nl])?;
            start = nl + 1;
        }
        buf.copy_within(start..end, 0);
        filled = end - start;
    }
}

fn report(
    out: &mut impl Write,
    log_name: &str,
    loaded: &LoadedFilter,
    s: &Summary,
    printed: &[(&str, String)],
    secs: f64,
) -> std::io::Result<()> {
    writeln!(out, "\nRunning tests\n=============\n")?;
    writeln!(out, "Use   failregex filter : {}", loaded.origin)?;
    writeln!(out, "Use         log file : {log_name}\n")?;
    writeln!(out, "Results\n=======\n")?;
    writeln!(out, "Failregex: {} total", s.matched)?;
    writeln!(out, "|-  #) [# of hits] regular expression")?;
    for (i, (hits, pattern)) in s.fail_hits.iter().zip(loaded.failregex()).enumerate() {
        writeln!(out, "|  {:>2}) [{hits}] {pattern}", i + 1)?;
    }
    writeln!(out, "`-\n")?;
    writeln!(out, "Ignoreregex: {} total", s.ignored)?;
    if !loaded.ignoreregex().is_empty() {
        writeln!(out, "|-  #) [# of hits] regular expression")?;
        for (i, (hits, pattern)) in s.ignore_hits.iter().zip(loaded.ignoreregex()).enumerate() {
            writeln!(out, "|  {:>2}) [{hits}] {pattern}", i + 1)?;
        }
        writeln!(out, "`-")?;
    }
    if let FilterKind::Fail2ban(f) = &loaded.filter {
        writeln!(out, "\nDate template hits:\n|- [# of hits] date format")?;
        let names = f.dates.names();
        for (t, hits) in &s.date_hits {
            writeln!(out, "|  [{hits}] {}", names.get(*t).copied().unwrap_or("?"))?;
        }
        writeln!(out, "`-")?;
        for note in &f.notes {
            writeln!(out, "Note: {note}")?;
        }
        if s.unbannable > 0 {
            writeln!(
                out,
                "Note: {} line(s) matched a DNS name or a non-address id; jailsink never resolves, so they count as missed",
                s.unbannable
            )?;
        }
    }
    if s.backtrack_limited > 0 {
        writeln!(
            out,
            "Note: {} line(s) hit the backtrack limit of a fancy-regex pattern and count as missed",
            s.backtrack_limited
        )?;
    }
    writeln!(out, "\nAddresses found: {}", s.hosts.len())?;
    for (ip, times) in &s.hosts {
        write!(out, "|  {ip} ({} failures: ", times.len())?;
        for (i, t) in times.iter().enumerate() {
            if i > 0 {
                out.write_all(b", ")?;
            }
            match t {
                Some(t) => out.write_all(&time_bytes(t))?,
                None => out.write_all(b"-")?,
            }
        }
        writeln!(out, ")")?;
    }
    writeln!(out, "`-\n")?;
    for (kind, line) in printed {
        writeln!(out, "{kind}: {line}")?;
    }
    if !printed.is_empty() {
        writeln!(out)?;
    }
    let rate = if secs > 0.0 {
        s.lines as f64 / secs
    } else {
        0.0
    };
    writeln!(
        out,
        "Lines: {} lines, {} ignored, {} matched, {} missed [processed in {secs:.2} sec, {rate:.0} lines/s]",
        s.lines, s.ignored, s.matched, s.missed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_syslog_file_lines_and_plain_text() {
        let loaded = load_filter(
            r"^Failed password for <F-USER>\S+</F-USER> from <HOST> port \d+",
            &[],
            &BTreeMap::new(),
        )
        .unwrap();
        let FilterKind::Native(filter) = &loaded.filter else {
            panic!("literal filters are native")
        };
        let r = judge(
            filter,
            1,
            "Nov 29 18:52:53 vm sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2",
            &Zone::Utc,
        );
        assert_eq!(r.result, "matched");
        assert_eq!(r.host, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.user.as_deref(), Some("root"));
        assert!(r.time.unwrap().ends_with("-11-29T18:52:53"));
        let r = judge(filter, 2, "hello", &Zone::Utc);
        assert_eq!(r.result, "missed");
    }

    /// `run` on one literal line: the summary and the report.
    fn run_one(loaded: &LoadedFilter, line: &str) -> (Summary, String) {
        let mut out = Vec::new();
        let s = run(line, loaded, &Zone::Utc, Options::default(), &mut out).unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    /// The megabyte-read splitter gives the lines `read_until` gives, whatever the read sizes.
    #[test]
    fn lines_split_as_read_until_splits_them() {
        use std::io::BufRead;
        /// Hands out at most `step` bytes per read.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let long = "x".repeat(READ_CHUNK * 2 + 3);
        let texts = [
            String::new(),
            "\n".into(),
            "a".into(),
            "a\n".into(),
            "a\n\nb".into(),
            "a\r\nb\n\n".into(),
            format!("one\n{long}\ntwo"),
            format!("{long}\n"),
        ];
        for text in &texts {
            let mut want = Vec::new();
            let mut reader = text.as_bytes();
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                want.push(line);
            }
            for step in [1, 7, READ_CHUNK, usize::MAX] {
                let mut got = Vec::new();
                for_each_line(&mut Trickle(text.as_bytes(), step), |l| {
                    got.push(l.to_vec());
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, want, "{:?}, step {step}", &text[..text.len().min(20)]);
            }
        }
    }

    #[test]
    fn report_counts_lines() {
        let loaded = load_filter(r"^bad <HOST>$", &[], &BTreeMap::new()).unwrap();
        let (s, text) = run_one(&loaded, "bad 192.0.2.1");
        assert_eq!((s.lines, s.matched), (1, 1));
        assert!(
            text.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"),
            "{text}"
        );
    }

    #[test]
    fn held_failure_patterns_are_counted_by_their_own_number() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d/sshd.toml");
        let loaded = load_filter(path.to_str().unwrap(), &[], &BTreeMap::new()).unwrap();
        let (s, _) = run_one(
            &loaded,
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.1",
        );
        assert_eq!((s.lines, s.matched), (1, 1));
        assert_eq!(s.fail_hits.iter().sum::<u64>(), 1);
        assert_eq!(s.fail_hits.len(), loaded.failregex().len());
    }
}
