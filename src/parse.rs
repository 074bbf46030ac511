//! One syslog frame into an [`Event`]: RFC 3164 and RFC 5424 through syslog_loose, plus the fixes
//! real senders need (see tests/fixtures/syslog/INDEX.md for the captured pitfalls).
//!
//! Pure and synchronous: no clock is read here (the caller passes the receipt time) and nothing
//! is allocated for a valid UTF-8 frame.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, FixedOffset, Offset, TimeZone, Timelike, Utc};
use syslog_loose::{Message, Protocol, Variant};

pub(crate) use syslog_loose::ProcId;

const BOM: &str = "\u{feff}";

/// A parsed syslog message, borrowing from the frame's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// The sender's timestamp; shown, never trusted for windows or bans.
    pub timestamp: Option<DateTime<FixedOffset>>,
    /// HOSTNAME, when the sender wrote one.
    pub hostname: Option<&'a str>,
    /// The program (APP-NAME or the 3164 tag without its pid).
    pub program: Option<&'a str>,
    /// PROCID / the pid in `tag[pid]`.
    pub pid: Option<ProcId<&'a str>>,
    /// The message text, trimmed; for rsyslog's `message repeated N times: [ X]`, X alone.
    pub message: &'a str,
    /// How many identical messages this event stands for (N for a repeat summary, else 1).
    pub repeat: u32,
}

/// Why a frame produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace.
    #[error("empty frame")]
    Empty,
    /// No PRI, no timestamp and no header a syslog parser recognises.
    #[error("no syslog header")]
    NoHeader,
}

/// The zone RFC 3164 timestamps are read in, since they carry none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// UTC.
    Utc,
    /// The host's local zone.
    Local,
    /// An IANA zone such as Europe/Berlin.
    Named(chrono_tz::Tz),
    /// A fixed offset such as +01:00.
    Fixed(FixedOffset),
}

/// A time zone setting that names no zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadZone {
    /// Starts with `+` or `-` but is not an offset.
    #[error("`{0}` is not an offset like +01:00")]
    Offset(String),
    /// Not UTC, local, an offset or a zone in the IANA database.
    #[error("`{0}` is not UTC, local, an offset like +01:00 or an IANA zone name")]
    Unknown(String),
}

impl Zone {
    /// Reads "UTC", "local", "+01:00" or an IANA name.
    pub fn parse(text: &str) -> Result<Zone, BadZone> {
        match text {
            "UTC" | "utc" | "Z" => Ok(Zone::Utc),
            "local" | "Local" => Ok(Zone::Local),
            t if t.starts_with('+') || t.starts_with('-') => {
                let probe = format!("2000-01-01T00:00:00{t}");
                DateTime::parse_from_rfc3339(&probe)
                    .map(|d| Zone::Fixed(*d.offset()))
                    .map_err(|_| BadZone::Offset(t.to_string()))
            }
            t => t
                .parse::<chrono_tz::Tz>()
                .map(Zone::Named)
                .map_err(|_| BadZone::Unknown(t.to_string())),
        }
    }

    /// The zone's offset at the given instant.
    pub(crate) fn offset_at(&self, at: DateTime<Utc>) -> FixedOffset {
        match self {
            Zone::Utc => Utc.fix(),
            Zone::Local => *at.with_timezone(&chrono::Local).offset(),
            Zone::Named(tz) => at.with_timezone(tz).offset().fix(),
            Zone::Fixed(offset) => *offset,
        }
    }
}

/// Bytes to text: strips a leading BOM (broken senders put one before the PRI) and the
/// trailing CR/LF/NUL of a frame; invalid UTF-8 becomes U+FFFD.
pub fn decode(frame: &[u8]) -> Cow<'_, str> {
    let mut bytes = frame.strip_prefix(BOM.as_bytes()).unwrap_or(frame);
    while let [rest @ .., b'\r' | b'\n' | b'\0'] = bytes {
        bytes = rest;
    }
    // Validating is several times cheaper than from_utf8_lossy's chunked walk.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Parses decoded text received at `now`; 3164 dates take their year from `now` in `zone`
/// (a December message received in January is last year's).
pub fn parse<'a>(text: &'a str, zone: &Zone, now: DateTime<Utc>) -> Result<Event<'a>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (offset, year_of) = calendar(zone, now);
    let resolve_year = move |(m, ..): syslog_loose::IncompleteDate| year_of(m);
    if let Some(event) = fast_3164(text, year_of, offset, Seconds::Whole) {
        return Ok(event);
    }
    // Shapes rsyslog reads that syslog_loose does not (only tried once the fast path refused).
    if let Some(event) = fast_3164(text, year_of, offset, Seconds::Fractional) {
        return Ok(event);
    }
    if let Some(event) = pri_then_tag(text) {
        return Ok(event);
    }
    if let Some(event) = loose_with_fraction(text, resolve_year, offset) {
        return Ok(event);
    }
    parse_loose(text, resolve_year, offset)
}

/// A classic 3164 timestamp with a fraction (`Dec  6 04:50:00.123456`, as rsyslog writes with
/// high-precision timestamps) in a header the fast path does not read (no host, a named pid,
/// no colon after the tag...): syslog_loose reads no fraction there, and took `.123456` for
/// the start of the message. Read by syslog_loose without the fraction, which is put back in
/// the timestamp; the parts it found are the same bytes of `text` (found by rsyslog_and_
/// jailsink_read_generated_header_shapes_alike, tests/ingest.rs).
fn loose_with_fraction<'a>(
    text: &'a str,
    resolve_year: impl Fn(syslog_loose::IncompleteDate) -> i32 + Copy,
    offset: FixedOffset,
) -> Option<Event<'a>> {
    let (fraction, nanos) = fraction_3164(text.as_bytes())?;
    let mut whole = String::with_capacity(text.len());
    whole.push_str(&text[..fraction.start]);
    whole.push_str(&text[fraction.end..]);
    let event = parse_loose(&whole, resolve_year, offset).ok()?;
    // Each part syslog_loose found is a slice of `whole` after the timestamp: the same bytes
    // stand in `text` the fraction's length further on.
    let shift = fraction.len();
    let back = |part: &str| -> Option<&'a str> {
        let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        if at < fraction.start || at + part.len() > whole.len() {
            return None;
        }
        text.get(at + shift..at + shift + part.len())
    };
    let back_opt = |part: Option<&str>| match part {
        None => Some(None),
        Some(p) => back(p).map(Some),
    };
    Some(Event {
        timestamp: event.timestamp.and_then(|t| t.with_nanosecond(nanos)),
        hostname: back_opt(event.hostname)?,
        program: back_opt(event.program)?,
        pid: match event.pid {
            None => None,
            Some(ProcId::PID(n)) => Some(ProcId::PID(n)),
            Some(ProcId::Name(name)) => Some(ProcId::Name(back(name)?)),
        },
        message: if event.message.is_empty() {
            ""
        } else {
            back(event.message)?
        },
        repeat: event.repeat,
    })
}

/// Where the fraction of a classic 3164 timestamp at the start of `b` (after a PRI) is, with
/// its nanoseconds: `.` and 1 to 9 digits right after `hh:mm:ss`, then a space.
fn fraction_3164(b: &[u8]) -> Option<(std::ops::Range<usize>, u32)> {
    let mut i = 0;
    if b.first() == Some(&b'<') {
        i = after_pri(b)?;
    }
    let ts = b.get(i..i + 15)?;
    month_number([ts[0], ts[1], ts[2]])?;
    let digit = |k: usize| ts[k].is_ascii_digit();
    let shape = ts[3] == b' '
        && (ts[4] == b' ' || digit(4))
        && digit(5)
        && ts[6] == b' '
        && ts[9] == b':'
        && ts[12] == b':'
        && [7, 8, 10, 11, 13, 14].into_iter().all(digit);
    if !shape {
        return None;
    }
    let start = i + 15;
    if b.get(start) != Some(&b'.') {
        return None;
    }
    let digits = b[start + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(1..=9).contains(&digits) || b.get(start + 1 + digits) != Some(&b' ') {
        return None;
    }
    let value = b[start + 1..start + 1 + digits]
        .iter()
        .fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
    Some((
        start..start + 1 + digits,
        value * 10u32.pow(9 - digits as u32),
    ))
}

/// The offset 3164 dates are read in at `now`, and the year a month belongs to (a December
/// message received in January is last year's).
fn calendar(zone: &Zone, now: DateTime<Utc>) -> (FixedOffset, impl Fn(u32) -> i32 + Copy) {
    let (offset, year, month) = month_at(zone, now);
    let year_of = move |m: u32| match m as i32 - month {
        d if d > 6 => year - 1,
        d if d < -6 => year + 1,
        _ => year,
    };
    (offset, year_of)
}

/// The zone's offset at `now` and the local year and month then, remembered for the next call
/// on this thread: the frames of one read share its receipt time, and working out the local
/// date through chrono (twice for a wanted frame: its header is read to pass over the
/// unwanted ones, then parsed) costs more than reading a 3164 header's bytes.
fn month_at(zone: &Zone, now: DateTime<Utc>) -> (FixedOffset, i32, i32) {
    type Month = (FixedOffset, i32, i32);
    thread_local! {
        static LAST: std::cell::Cell<Option<(Zone, DateTime<Utc>, Month)>> =
            const { std::cell::Cell::new(None) };
    }
    if let Some((z, t, month)) = LAST.get() {
        if t == now && z == *zone {
            return month;
        }
    }
    let month = month_of(zone, now);
    LAST.set(Some((*zone, now, month)));
    month
}

/// [`month_at`] worked out.
fn month_of(zone: &Zone, now: DateTime<Utc>) -> (FixedOffset, i32, i32) {
    let offset = zone.offset_at(now);
    let local_now = now.with_timezone(&offset);
    (offset, local_now.year(), local_now.month() as i32)
}

/// The program of a frame in the common RFC 3164 shape, read from the header's bytes alone
/// (the message is neither looked at nor checked as UTF-8): when this is Some, [`parse`] of
/// the [`decode`]d frame succeeds and names this program (these ASCII bytes: header_3164
/// checks every byte of the tag, so they need no UTF-8 check either). None says nothing
/// (parse to know). Lets a listener pass over a message no jail wants for the price of its
/// header.
#[cfg(test)]
pub(crate) fn program_3164<'a>(
    frame: &'a [u8],
    zone: &Zone,
    now: DateTime<Utc>,
) -> Option<&'a [u8]> {
    let read = read_3164(frame, zone, now)?;
    Some(read.program(frame))
}

/// A frame's header in the common RFC 3164 shape, read from its bytes alone (see
/// [`program_3164`]): a listener reads it to pass over a frame no jail wants, and hands it
/// to [`parse_read`] for a frame some jail wants, so a wanted frame's header is read once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Read3164 {
    header: Header3164,
    /// Bytes of the BOM before the header (0 or 3): the header's ranges are of what follows.
    bom: usize,
}

impl Read3164 {
    /// The program the header names (ASCII bytes) in the `frame` it was read from.
    pub(crate) fn program<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(self.bom + self.header.program.start..self.bom + self.header.program.end)
            .unwrap_or_default()
    }
}

/// The header of a frame in the common RFC 3164 shape (None: another shape, parse to know).
pub(crate) fn read_3164(frame: &[u8], zone: &Zone, now: DateTime<Utc>) -> Option<Read3164> {
    let b = frame.strip_prefix(BOM.as_bytes()).unwrap_or(frame);
    let (offset, year_of) = calendar(zone, now);
    let header = header_3164(b, year_of, offset, Seconds::Whole)?;
    Some(Read3164 {
        header,
        bom: frame.len() - b.len(),
    })
}

/// [`parse`] of `text`, the [`decode`]d frame [`read_3164`] read `read` from, at the same
/// `now`, without reading its header again: the header's parts are ASCII, so the decoded text
/// holds them at the same offsets (decoding strips the BOM first and only the frame's end).
pub(crate) fn parse_read<'a>(
    text: &'a str,
    read: &Read3164,
    zone: &Zone,
    now: DateTime<Utc>,
) -> Result<Event<'a>, ParseError> {
    match event_3164(text, &read.header) {
        Some(event) => Ok(event),
        // Never: `text` is not the frame `read` came from.
        None => parse(text, zone, now),
    }
}

/// Checks every fast path of the parse against the reading it stands for, on one frame
/// received at `now` in `zone`: the fast 3164 header against syslog_loose (when it reads the
/// frame at all), and the header read from the bytes alone ([`read_3164`], the listener's)
/// against [`parse`] of the decoded frame, through [`parse_read`] as the listener hands it on.
/// Err names the first disagreement. For fuzz/fuzz_targets/parse_fast.rs (built with `--cfg
/// fuzzing`) and the unit tests; not in the daemon.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub fn fast_paths_agree(frame: &[u8], zone: &Zone, now: DateTime<Utc>) -> Result<(), String> {
    let text = decode(frame);
    let (offset, year_of) = calendar(zone, now);
    if let Some(fast) = fast_3164(&text, year_of, offset, Seconds::Whole) {
        let loose = parse_loose(&text, move |(m, ..)| year_of(m), offset);
        if loose.as_ref() != Ok(&fast) {
            return Err(format!("fast 3164 {fast:?}, syslog_loose {loose:?}"));
        }
    }
    let Some(read) = read_3164(frame, zone, now) else {
        return Ok(());
    };
    let parsed = parse(&text, zone, now);
    let Ok(event) = &parsed else {
        return Err(format!("read_3164 read a header, parse failed: {parsed:?}"));
    };
    if event.program.map(str::as_bytes) != Some(read.program(frame)) {
        return Err(format!(
            "read_3164 program {:?}, parse {:?}",
            String::from_utf8_lossy(read.program(frame)),
            event.program
        ));
    }
    let handed = parse_read(&text, &read, zone, now);
    if handed.as_ref() != Ok(event) {
        return Err(format!("parse_read {handed:?}, parse {parsed:?}"));
    }
    Ok(())
}

/// Whether [`fast_3164`] reads `hh:mm:ss.ffffff` (rsyslog does; syslog_loose does not, so the
/// first, differential-tested pass refuses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seconds {
    /// `hh:mm:ss` only.
    Whole,
    /// `hh:mm:ss` with an optional fraction of 1 to 9 digits.
    Fractional,
}

/// `<PRI>TAG[PID]: MSG`, `<PRI>TAG: MSG`, `<PRI>HOST TAG: MSG` and `<PRI>TAG[PID] MSG`: a PRI
/// followed directly by the tag (or a host name and the tag), without timestamp, as rsyslog
/// reads it (program from the tag; a missing host is left to the listener). A tag is what
/// jailsink's program names allow, up to `[` or `:`; or, where the first word is no host name
/// to rsyslog (`<PRI>sshd(pam) x`, `<PRI>sshd[7]: x`), that word, as rsyslog reads it
/// ([`rsyslog_tag`]).
/// And `<PRI>[...` or `<PRI>{...`, which rsyslog reads as a frame without header (all message).
fn pri_then_tag(text: &str) -> Option<Event<'_>> {
    let b = text.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    let i = after_pri(b)?;
    // (rsyslog skips spaces and tabs there, but sees a tab escaped as `#011` by then.)
    let rest = text[i..].trim_start_matches(' ');
    if rest.starts_with(['[', '{']) {
        return Some(untimed(None, None, None, rest));
    }
    // `<PRI>HOST TAG: MSG`: rsyslog takes a host name without a timestamp too.
    if let Some(len) = host_len(b, i) {
        return tag_then_colon(text, i + len + 1, Some(&text[i..i + len]));
    }
    if b.get(i..i + 2) == Some(b"- ") {
        // A host of `-` is none (the sender's address fills it), as in a timestamped header.
        return tag_then_colon(text, i + 2, None);
    }
    // rsyslog takes a first word that is no host name for the tag, up to its space or `:`
    // (not the date of an RFC 3339 timestamp: `2026-12-07T10:00:00Z web1- ...` is read by
    // syslog_loose).
    let end = text[i..].find([':', ' '])?;
    let rfc3339 = b
        .get(i..i + 5)
        .is_some_and(|d| d[..4].iter().all(u8::is_ascii_digit) && d[4] == b'-');
    if end == 0 || rfc3339 {
        return None;
    }
    let (program, pid, message) = rsyslog_tag(&text[i..]);
    Some(untimed(None, program, pid, message))
}

/// The event of a header without timestamp: the message trimmed, without a BOM, and read for
/// rsyslog's repeat summary.
fn untimed<'a>(
    hostname: Option<&'a str>,
    program: Option<&'a str>,
    pid: Option<ProcId<&'a str>>,
    message: &'a str,
) -> Event<'a> {
    let message = message.trim();
    let message = message.strip_prefix(BOM).unwrap_or(message).trim_start();
    let (message, repeat) = split_repeat(message);
    Event {
        timestamp: None,
        hostname,
        program,
        pid,
        message,
        repeat,
    }
}

/// [`pri_then_tag`]'s `TAG[PID]: MSG`, `TAG: MSG` or `TAG[PID] MSG` at `i`: a tag of program
/// name bytes beginning with a letter (digits first are a timestamp or an RFC 5424 version).
fn tag_then_colon<'a>(text: &'a str, mut i: usize, hostname: Option<&'a str>) -> Option<Event<'a>> {
    let b = text.as_bytes();
    // Some byte must end the tag (a tag running to the end is no header).
    let tag_len = Some(header_run(b, i, TAG)).filter(|&n| n > 0 && i + n < b.len())?;
    if !b[i].is_ascii_alphabetic() {
        return None;
    }
    let program = &text[i..i + tag_len];
    i += tag_len;
    let mut pid = None;
    if b.get(i) == Some(&b'[') {
        let close = b[i..].iter().take(130).position(|&c| c == b']')?;
        let id = &text[i + 1..i + close];
        pid = Some(proc_id(id));
        i += close + 1;
    }
    // `<PRI>TAG[PID] MSG`: rsyslog takes a tag with a pid and no colon too (found by
    // rsyslog_and_jailsink_read_generated_header_shapes_alike, tests/ingest.rs).
    // (Only a pid without spaces: rsyslog ends the tag at the first space.)
    let spaceless_pid = matches!(pid, Some(ProcId::PID(_)))
        || matches!(pid, Some(ProcId::Name(name)) if !name.contains(' '));
    let colon = b.get(i) == Some(&b':') || (spaceless_pid && b.get(i) == Some(&b' '));
    if !colon {
        return None;
    }
    Some(untimed(hostname, Some(program), pid, &text[i + 1..]))
}

/// A 3164 tag at the start of `rest` as rsyslog reads it where no host name came before it:
/// the tag runs to the first `:` (its last byte) or space; the program is the tag up to its
/// `[`, `:` or first byte that is not printable ASCII (None when that is its first, or when it
/// is `-`, jailsink's "no program"); the pid what a `[` there holds up to its `]`; the message
/// what follows the tag.
fn rsyslog_tag(rest: &str) -> (Option<&str>, Option<ProcId<&str>>, &str) {
    let end = rest.find([':', ' ']).unwrap_or(rest.len());
    let tag = &rest[..end];
    let name = program_end(tag);
    let program = program_of(tag);
    let pid = tag[name..]
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map(|(id, _)| proc_id(id));
    let after = &rest[end..];
    (program, pid, after.strip_prefix(':').unwrap_or(after))
}

/// Where the text after a valid `<PRI>` (0 to 191) begins; `b` starts with `<`.
#[inline]
fn after_pri(b: &[u8]) -> Option<usize> {
    let close = b.iter().take(5).position(|&c| c == b'>')?;
    let digits = &b[1..close];
    if digits.is_empty() {
        return None;
    }
    // At most three digits (the `>` is among the first five bytes): no overflow, and read
    // in place rather than through `str` (a UTF-8 check and a general parser per frame).
    let pri = digits.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })?;
    (pri <= 191).then_some(close + 1)
}

/// A byte of a 3164 tag as jailsink reads program names (`postfix/smtpd` keeps its slash).
const fn is_tag_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'/')
}

/// A byte of a 3164 host name as rsyslog takes it (pmrfc3164 with its defaults: no `[]`, `/` or
/// `@` in a host name).
const fn is_host_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_')
}

/// [`HEADER_BYTES`] bit: [`is_host_byte`].
const HOST: u8 = 1;
/// [`HEADER_BYTES`] bit: [`is_tag_byte`].
const TAG: u8 = 2;
/// [`HEADER_BYTES`] bit: an ASCII letter or digit, the only byte a host name may end in.
const HOST_END: u8 = 4;

/// The host and tag tests of every byte, so [`header_3164`] reads each byte of the host and
/// of the tag once with one load (it scanned the host twice, for its space and then for its
/// bytes, with several compares a byte: 0.18G instructions per million messages).
static HEADER_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if is_host_byte(b) {
            t[c] |= HOST;
        }
        if is_tag_byte(b) {
            t[c] |= TAG;
        }
        if b.is_ascii_alphanumeric() {
            t[c] |= HOST_END;
        }
        c += 1;
    }
    t
};

/// How many bytes from `at` have `bit` in [`HEADER_BYTES`].
#[inline]
fn header_run(b: &[u8], at: usize, bit: u8) -> usize {
    let rest = b.get(at..).unwrap_or_default();
    rest.iter()
        .position(|&c| HEADER_BYTES[usize::from(c)] & bit == 0)
        .unwrap_or(rest.len())
}

/// The length of the host name at `at` in a 3164 header: host bytes ([`is_host_byte`]) that
/// [`ends_as_host_name`], then a space (None: the word there is no host name, and rsyslog reads
/// it as the tag: `web1-`, `sshd(pam)`, `user@web1`). rsyslog also takes host bytes running to
/// the end of the frame for a host name; jailsink reads no header there either way.
#[inline(always)]
fn host_len(b: &[u8], at: usize) -> Option<usize> {
    let rest = b.get(at..)?;
    // The first byte that is no host byte (none: no space after the host either). Not
    // `header_run`: this form, with one bounds check, is 8 instructions a frame cheaper on the
    // fast header (callgrind of `jailsink regex` on 200,000 corpus lines).
    let len = rest
        .iter()
        .position(|&c| HEADER_BYTES[usize::from(c)] & HOST == 0)?;
    (rest[len] == b' ' && ends_as_host_name(&rest[..len])).then_some(len)
}

/// Whether host bytes `name` end as a host name does: in a letter or digit, as rsyslog requires,
/// or (jailsink only) in a fully qualified name's root dot after one (`web1.example.org.`).
/// rsyslog reads such a name as the tag, so a sender whose host name carries the root dot
/// would have every message's program be that name, and no `sshd` jail would see its sshd; its
/// messages keep their program here. Empty: false.
#[inline(always)]
fn ends_as_host_name(name: &[u8]) -> bool {
    let name_end = |c: &u8| HEADER_BYTES[usize::from(*c)] & HOST_END != 0;
    match name {
        [.., before, b'.'] => name_end(before),
        [.., last] => name_end(last),
        [] => false,
    }
}

/// The general path: syslog_loose (RFC 5424 and every 3164 variant) and [`fix_up`].
fn parse_loose<'a>(
    text: &'a str,
    resolve_year: impl Fn(syslog_loose::IncompleteDate) -> i32 + Copy,
    offset: FixedOffset,
) -> Result<Event<'a>, ParseError> {
    let msg =
        syslog_loose::parse_message_with_year_tz(text, resolve_year, Some(offset), Variant::Either);
    if msg.facility.is_none() && msg.timestamp.is_none() && msg.appname.is_none() {
        return Err(ParseError::NoHeader);
    }
    Ok(fix_up(text, msg))
}

/// The common RFC 3164 shape, `[<PRI>]Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, read in one pass
/// without allocating; None for anything else (or anything unusual), which then goes through
/// syslog_loose. It must give exactly what syslog_loose plus [`fix_up`] give (the differential
/// test below holds it to that), it is only faster: the header costs ~40 ns instead of ~1 µs.
fn fast_3164<'a>(
    text: &'a str,
    year_of: impl Fn(u32) -> i32,
    offset: FixedOffset,
    seconds: Seconds,
) -> Option<Event<'a>> {
    let h = header_3164(text.as_bytes(), year_of, offset, seconds)?;
    event_3164(text, &h)
}

/// The event of `text` whose header is `h` (None when `h` does not fit `text`: never, when
/// `h` was read from its bytes).
fn event_3164<'a>(text: &'a str, h: &Header3164) -> Option<Event<'a>> {
    let message = text.get(h.colon + 1..)?.trim();
    let message = message.strip_prefix(BOM).unwrap_or(message).trim_start();
    let (message, repeat) = split_repeat(message);
    Some(Event {
        timestamp: Some(h.timestamp),
        // ASCII only (checked by header_3164), so these are character boundaries.
        hostname: Some(text.get(h.host.clone())?),
        program: Some(text.get(h.program.clone())?),
        pid: h.pid.map(ProcId::PID),
        message,
        repeat,
    })
}

/// The header [`fast_3164`] reads: where its ASCII host and tag are, the pid and the time,
/// and where the `:` that ends it is.
#[derive(Debug, Clone, PartialEq)]
struct Header3164 {
    timestamp: DateTime<FixedOffset>,
    host: std::ops::Range<usize>,
    program: std::ops::Range<usize>,
    pid: Option<i32>,
    colon: usize,
}

/// [`fast_3164`]'s header, from bytes: every byte it accepts is ASCII and none after the `:`
/// (and the space or end that follows it) is read, so the message needs no UTF-8 check.
fn header_3164(
    b: &[u8],
    year_of: impl Fn(u32) -> i32,
    offset: FixedOffset,
    seconds: Seconds,
) -> Option<Header3164> {
    let mut i = 0;
    if b.first() == Some(&b'<') {
        i = after_pri(b)?;
    }
    // Mmm dd hh:mm:ss + one space: 16 bytes.
    let ts = b.get(i..i + 16)?;
    let month = month_number([ts[0], ts[1], ts[2]])?;
    let num = |x: &[u8]| -> Option<u32> {
        x.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if ts[3] != b' ' || ts[6] != b' ' || ts[9] != b':' || ts[12] != b':' {
        return None;
    }
    let day = match ts[4] {
        b' ' => num(&ts[5..6])?,
        _ => num(&ts[4..6])?,
    };
    let (h, m, sec) = (num(&ts[7..9])?, num(&ts[10..12])?, num(&ts[13..15])?);
    i += 15;
    let mut nanos = 0;
    if seconds == Seconds::Fractional {
        if b.get(i) != Some(&b'.') {
            return None;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = num(&b[i + 1..i + 1 + digits])? * 10u32.pow(9 - digits as u32);
        i += 1 + digits;
    }
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    // The host runs to the first space and holds host bytes only, ending in a letter or digit
    // (a word rsyslog reads as the tag, and a host of `-`, syslog_loose's "none" the sender's
    // address fills, take the slow path).
    let host_len = host_len(b, i)?;
    let host = i..i + host_len;
    i += host_len + 1;
    // The tag's end is the first byte that is not a tag byte (None when there is none).
    let tag_len = header_run(b, i, TAG);
    if tag_len == 0 || i + tag_len == b.len() {
        return None;
    }
    let program = i..i + tag_len;
    // A tag of `-` is "none" too.
    if &b[program.clone()] == b"-" {
        return None;
    }
    i += tag_len;
    let mut pid = None;
    if b.get(i) == Some(&b'[') {
        let (n, end) = pid_digits(b, i + 1)?;
        pid = Some(n);
        i = end;
    }
    if b.get(i) != Some(&b':') || !matches!(b.get(i + 1), None | Some(b' ')) {
        return None;
    }
    let mut timestamp = stamp(year_of(month), month, day, (h, m, sec), offset)?;
    if nanos > 0 {
        timestamp = timestamp.with_nanosecond(nanos)?;
    }
    Some(Header3164 {
        timestamp,
        host,
        program,
        pid,
        colon: i,
    })
}

/// The time a 3164 header names, as `offset.with_ymd_and_hms(..).earliest()` gives it (None
/// for an impossible date), remembered for the next call on this thread: consecutive lines of
/// a log mostly share their second, and building the date through chrono costs more than
/// reading the rest of the header.
fn stamp(
    year: i32,
    month: u32,
    day: u32,
    (h, m, sec): (u32, u32, u32),
    offset: FixedOffset,
) -> Option<DateTime<FixedOffset>> {
    type Key = (i32, u32, u32, u32, u32, u32, i32);
    thread_local! {
        static LAST: std::cell::Cell<Option<(Key, DateTime<FixedOffset>)>> =
            const { std::cell::Cell::new(None) };
    }
    let key = (year, month, day, h, m, sec, offset.local_minus_utc());
    if let Some((k, t)) = LAST.get() {
        if k == key {
            return Some(t);
        }
    }
    let t = offset
        .with_ymd_and_hms(year, month, day, h, m, sec)
        .earliest()?;
    LAST.set(Some((key, t)));
    Some(t)
}

/// The month (1 to 12) three bytes of a 3164 date name, as their position in [`MONTHS`]
/// gives it: one switch over the three bytes read as one number, not twelve comparisons in
/// turn (66 instructions for `Nov`, the header's costliest step but the date).
#[inline]
fn month_number(m: [u8; 3]) -> Option<u32> {
    const fn key(name: &str) -> u32 {
        let b = name.as_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], 0])
    }
    const JAN: u32 = key(MONTHS[0]);
    const FEB: u32 = key(MONTHS[1]);
    const MAR: u32 = key(MONTHS[2]);
    const APR: u32 = key(MONTHS[3]);
    const MAY: u32 = key(MONTHS[4]);
    const JUN: u32 = key(MONTHS[5]);
    const JUL: u32 = key(MONTHS[6]);
    const AUG: u32 = key(MONTHS[7]);
    const SEP: u32 = key(MONTHS[8]);
    const OCT: u32 = key(MONTHS[9]);
    const NOV: u32 = key(MONTHS[10]);
    const DEC: u32 = key(MONTHS[11]);
    Some(match u32::from_le_bytes([m[0], m[1], m[2], 0]) {
        JAN => 1,
        FEB => 2,
        MAR => 3,
        APR => 4,
        MAY => 5,
        JUN => 6,
        JUL => 7,
        AUG => 8,
        SEP => 9,
        OCT => 10,
        NOV => 11,
        DEC => 12,
        _ => return None,
    })
}

/// The pid of a 3164 tag, `b[from..]` being what follows its `[`: 1 to 10 digits, then `]`,
/// the number fitting an i32; with where the header goes on (past the `]`). One pass over
/// the digits (it was a search for the `]`, a check of the digits, then their sum).
#[inline]
fn pid_digits(b: &[u8], from: usize) -> Option<(i32, usize)> {
    let mut n: i64 = 0;
    let mut j = from;
    while let Some(&c) = b.get(j) {
        if !c.is_ascii_digit() {
            break;
        }
        if j - from == 10 {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
        j += 1;
    }
    if j == from || b.get(j) != Some(&b']') {
        return None;
    }
    Some((i32::try_from(n).ok()?, j + 1))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Corrects what syslog_loose gets wrong on real 3164 traffic.
fn fix_up<'a>(text: &'a str, msg: Message<&'a str>) -> Event<'a> {
    let mut hostname = msg.hostname;
    let mut program = msg.appname;
    let mut message = msg.msg;
    let mut pid = msg.procid;
    // Whether the tag was read here as rsyslog reads it, message and all.
    let mut tag_read = false;
    if msg.protocol == Protocol::RFC3164 {
        // syslog_loose takes any first word for the host: a tag followed by no space
        // (`sshd[1]::x`, `sshd[1]:x`) or no colon (`sshd[1] x`) where there is no host, and a
        // word rsyslog refuses as a host name (`web1-`, `sshd(pam)`, `user@web1`). Such a
        // "host" is the tag, as rsyslog reads it (found by the generated shapes of
        // tests/ingest.rs); but an IPv6 address, and a name with its root dot
        // (`web1.example.org.`, see [`ends_as_host_name`]), stay the host.
        let misread = hostname.filter(|h| !could_be_host(h) && !ends_frame(text, h));
        // (Where the "host" starts in `text`: syslog_loose slices its parts out of `text`.)
        let at = misread.and_then(|h| (h.as_ptr() as usize).checked_sub(text.as_ptr() as usize));
        if let Some(tag) = at.and_then(|at| text.get(at..)) {
            (program, pid, message) = rsyslog_tag(tag);
            hostname = None;
            tag_read = true;
        }
        // `<13>Nov 29 18:52:54 myapp: text` has no hostname; syslog_loose takes the tag for one.
        if let (Some(host), None) = (hostname, program) {
            if text[end_of(text, host)..].starts_with(':') {
                program = Some(host);
                hostname = None;
            }
        }
        // 3164 has no structured data: `rsyslogd: [origin software=...] start` is all message,
        // and so is a leading `-` syslog_loose took for an empty one (`-- MARK --`, `-ERR`).
        // Only after a host or tag syslog_loose found: with neither, everything after the tag
        // would be the whole frame, PRI and timestamp included.
        // Either may end in spaces the other has not (found by fuzz/parse_fast: `-x ` lost
        // its `-`); the message is trimmed below anyway.
        let header_end = program.or(hostname).map_or(0, |s| end_of(text, s));
        let whole = after_tag(&text[header_end..]).trim_end();
        let taken = message.trim_end();
        if !tag_read
            && (!msg.structured_data.is_empty()
                || (header_end > 0 && whole.len() > taken.len() && whole.ends_with(taken)))
        {
            message = whole;
        }
        // rsyslog's program ends at the tag's first `[` (syslog_loose keeps one that opens no
        // digits-only pid: `sshd[1]x`, `sshd[a b]:`) or byte that is not printable ASCII (`w`
        // of `wéb1[5]: x`); the tags jailsink reads itself hold neither. (`-` is no program.)
        program = program.and_then(program_of);
    }
    let mut message = message.trim();
    message = message.strip_prefix(BOM).unwrap_or(message).trim_start();
    let (message, repeat) = split_repeat(message);
    Event {
        timestamp: msg.timestamp,
        hostname,
        program,
        pid,
        message,
        repeat,
    }
}

/// Where a 3164 program ends in its tag, as rsyslog ends it: at the tag's first `[` or byte
/// that is not printable ASCII.
fn program_end(tag: &str) -> usize {
    tag.find(|c: char| c == '[' || !c.is_ascii_graphic())
        .unwrap_or(tag.len())
}

/// The program a 3164 tag names ([`program_end`]); None when that is empty or `-`, jailsink's
/// "no program".
fn program_of(tag: &str) -> Option<&str> {
    Some(&tag[..program_end(tag)]).filter(|p| !p.is_empty() && *p != "-")
}

/// A tag's `[...]`: a process id when it is all digits (and fits), else a name, as rsyslog
/// and syslog_loose keep it.
fn proc_id(id: &str) -> ProcId<&str> {
    match id.parse() {
        Ok(n) if id.bytes().all(|c| c.is_ascii_digit()) => ProcId::PID(n),
        _ => ProcId::Name(id),
    }
}

/// Whether syslog_loose's 3164 host could be one: a name (host bytes that
/// [`ends_as_host_name`], as [`host_len`] takes one), or an IPv6 address (with or without a
/// zone, `fe80::1%eth0`). rsyslog takes no host with a `:` (it reads `2001` of
/// `2001:db8::1 sshd: x` as the tag); jailsink keeps an IPv6 address as the host, as it did
/// before, so its jails see the program.
fn could_be_host(host: &str) -> bool {
    let b = host.as_bytes();
    let name = ends_as_host_name(b) && header_run(b, 0, HOST) == b.len();
    let address = host
        .split_once('%')
        .map_or(host, |(address, _zone)| address);
    name || (host.contains(':') && address.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Whether `host`, a part of `text`, is host bytes ([`is_host_byte`]) running to the end of the
/// frame: rsyslog takes that for the host name whatever its last byte (`web1-` in
/// `Dec  7 10:00:00 web1-`).
fn ends_frame(text: &str, host: &str) -> bool {
    end_of(text, host) == text.len() && header_run(host.as_bytes(), 0, HOST) == host.len()
}

/// Byte offset in `text` just past `part`, which syslog_loose sliced out of `text`.
fn end_of(text: &str, part: &str) -> usize {
    let start = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    (start + part.len()).min(text.len())
}

/// What follows `[pid]`, `:` and spaces right after a 3164 tag (a pid of digits, or any
/// `[...]` the colon follows, as syslog_loose reads a named one: `sshd[abc]:`).
fn after_tag(rest: &str) -> &str {
    let mut rest = rest;
    if rest.starts_with('[') {
        if let Some(close) = rest.find(']') {
            if rest[1..close].bytes().all(|b| b.is_ascii_digit())
                || rest[close + 1..].starts_with(':')
            {
                rest = &rest[close + 1..];
            }
        }
    }
    let rest = rest.trim_start();
    rest.strip_prefix(':').unwrap_or(rest).trim_start()
}

/// rsyslog's RepeatedMsgReduction: `message repeated 3 times: [ X]` stands for 3 copies of X.
fn split_repeat(message: &str) -> (&str, u32) {
    let Some(rest) = message.strip_prefix("message repeated ") else {
        return (message, 1);
    };
    let Some((count, inner)) = rest.split_once(" times: [") else {
        return (message, 1);
    };
    match (count.parse::<u32>(), inner.strip_suffix(']')) {
        (Ok(n), Some(inner)) if n > 0 => (inner.trim(), n),
        _ => (message, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::PathBuf;

    /// The month remembered per thread is the month worked out, whatever the zone and time
    /// asked before (same time, other zone; same zone, another time; across a year and a
    /// zone's summer time).
    #[test]
    fn the_month_remembered_is_the_month_worked_out() {
        let zones = [
            Zone::Utc,
            Zone::Local,
            Zone::parse("Europe/Berlin").unwrap(),
            Zone::parse("Pacific/Kiritimati").unwrap(),
            Zone::parse("-09:30").unwrap(),
        ];
        let times = [
            Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 6, 30, 10, 0, 0).unwrap(),
        ];
        let mut x = 3u64;
        for _ in 0..500 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = x >> 24;
            let zone = zones[(r % 5) as usize];
            let now = times[((r >> 8) % 5) as usize]
                + chrono::Duration::milliseconds(((r >> 16) % 3) as i64);
            assert_eq!(month_at(&zone, now), month_of(&zone, now), "{zone:?} {now}");
        }
    }

    /// [`after_pri`] reads the PRI in place exactly as the `str` parse it replaced did, for
    /// every `<` followed by up to five bytes of digits, `>` and other bytes.
    /// The months read by one switch are the names' positions, for every three bytes below
    /// 128 (and a few above).
    #[test]
    fn the_month_switched_on_is_the_months_position() {
        let old = |m: [u8; 3]| {
            MONTHS
                .iter()
                .position(|n| n.as_bytes() == m)
                .map(|p| p as u32 + 1)
        };
        let mut months = 0;
        for a in (0u8..128).chain([0xc3, 0xff]) {
            for b in (0u8..128).chain([0xc3, 0xff]) {
                for c in (0u8..128).chain([0xc3, 0xff]) {
                    assert_eq!(month_number([a, b, c]), old([a, b, c]), "{:?}", [a, b, c]);
                    months += usize::from(old([a, b, c]).is_some());
                }
            }
        }
        assert_eq!(months, 12);
    }

    /// The pid read in one pass is the pid the search for `]`, the digit check and the sum
    /// read (what header_3164 did before), with where the header goes on, on every tag end
    /// of up to 13 bytes from a small alphabet and on random ones.
    #[test]
    fn the_pid_read_in_one_pass_is_the_pid_read_before() {
        fn old(b: &[u8], i: usize) -> Option<(i32, usize)> {
            let close = b[i..].iter().take(12).position(|&c| c == b']')?;
            let digits = &b[i + 1..i + close];
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = digits
                .iter()
                .fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
            Some((i32::try_from(n).ok()?, i + close + 1))
        }
        let check = |rest: &[u8]| {
            let mut b = b"x[".to_vec();
            b.extend_from_slice(rest);
            assert_eq!(
                pid_digits(&b, 2),
                old(&b, 1),
                "{:?}",
                String::from_utf8_lossy(&b)
            );
        };
        let alphabet = b"09]a:";
        let mut found = 0;
        for len in 0..=7u32 {
            for k in 0..alphabet.len().pow(len) {
                let mut k = k;
                let rest: Vec<u8> = (0..len)
                    .map(|_| {
                        let c = alphabet[k % alphabet.len()];
                        k /= alphabet.len();
                        c
                    })
                    .collect();
                check(&rest);
                found += usize::from(pid_digits(&[b"x[".as_slice(), &rest].concat(), 2).is_some());
            }
        }
        assert!(found > 1000, "{found}");
        let mut x: u64 = 5;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let digits = (x >> 60) as usize;
            let mut rest: Vec<u8> = (0..digits)
                .map(|d| b'0' + ((x >> (d * 3 + 4)) % 10) as u8)
                .collect();
            rest.push([b']', b']', b']', b'x', b':'][((x >> 50) % 5) as usize]);
            rest.extend_from_slice(b": message");
            check(&rest);
        }
        for edge in [
            "2147483647]",
            "2147483648]",
            "9999999999]",
            "99999999999]",
            "0000000001]",
            "]",
        ] {
            check(edge.as_bytes());
        }
    }

    #[test]
    fn the_header_byte_table_is_the_byte_tests() {
        for c in 0..=255u8 {
            let host = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_');
            assert_eq!(HEADER_BYTES[usize::from(c)] & HOST != 0, host, "{c}");
            assert_eq!(
                HEADER_BYTES[usize::from(c)] & TAG != 0,
                is_tag_byte(c),
                "{c}"
            );
            assert_eq!(
                HEADER_BYTES[usize::from(c)] & HOST_END != 0,
                c.is_ascii_alphanumeric(),
                "{c}"
            );
        }
        let b = b"host tag[1]: x";
        assert_eq!(header_run(b, 0, HOST), 4);
        assert_eq!(header_run(b, 5, TAG), 3);
        assert_eq!(header_run(b, 14, TAG), 0);
        assert_eq!(header_run(b"abc", 0, TAG), 3);
    }

    #[test]
    fn the_pri_read_in_place_is_the_pri_parsed() {
        fn parsed(b: &[u8]) -> Option<usize> {
            let close = b.iter().take(5).position(|&c| c == b'>')?;
            let digits = &b[1..close];
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            if std::str::from_utf8(digits).ok()?.parse::<u8>().ok()? > 191 {
                return None;
            }
            Some(close + 1)
        }
        let alphabet = b"0123456789> x+\xff";
        let mut checked = 0;
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut frame = vec![b'<'];
                for _ in 0..len {
                    frame.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(after_pri(&frame), parsed(&frame), "{frame:?}");
                checked += 1;
            }
        }
        assert!(checked > 800_000, "{checked}");
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/syslog")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
    }

    /// Strips RFC 6587 octet counting from a single-frame fixture.
    fn frame(bytes: &[u8]) -> &[u8] {
        if bytes.first().is_some_and(u8::is_ascii_digit) {
            let space = bytes.iter().position(|&b| b == b' ').unwrap();
            &bytes[space + 1..]
        } else {
            bytes
        }
    }

    struct Want {
        host: Option<&'static str>,
        program: Option<&'static str>,
        pid: Option<&'static str>,
        message: &'static str,
    }

    fn check(name: &str, want: Want) {
        let bytes = fixture(name);
        let text = decode(frame(&bytes));
        let event = parse(&text, &Zone::Utc, now()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.hostname, want.host, "{name} host");
        assert_eq!(event.program, want.program, "{name} program");
        let pid = event.pid.as_ref().map(|p| p.to_string());
        if want.pid == Some("*") {
            assert!(pid.is_some(), "{name} pid");
        } else {
            assert_eq!(pid.as_deref(), want.pid, "{name} pid");
        }
        if want.message.ends_with('…') {
            assert!(
                event
                    .message
                    .starts_with(want.message.trim_end_matches('…')),
                "{name}: {:?}",
                event.message
            );
        } else {
            assert_eq!(event.message, want.message, "{name} message");
        }
        assert!(event.timestamp.is_some(), "{name} timestamp");
    }

    const FAILED: &str = "Failed password for invalid user admin from 203.0.113.5 port 4242 ssh2";
    const SENDMAIL: &str = "s07EriLI028424: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: Password verification failed, relay=[203.0.113.9]";
    const POSTFIX: &str =
        "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: authentication failure";
    const KERNEL: &str =
        "[12345.678901] IN=eth0 OUT= SRC=203.0.113.5 DST=192.0.2.1 PROTO=TCP DPT=22";

    fn w(
        host: Option<&'static str>,
        program: &'static str,
        pid: Option<&'static str>,
        message: &'static str,
    ) -> Want {
        Want {
            host,
            program: Some(program),
            pid,
            message,
        }
    }

    /// The 14 phase-1 messages, as every rsyslog format carries them.
    fn phase_one(
        prefix: &str,
        app_postfix: &'static str,
        long_tag: &'static str,
        long_pid: Option<&'static str>,
    ) {
        let vm = Some("vm");
        let cases = [
            ("01", w(vm, "sshd", Some("7375"), FAILED)),
            ("02", w(vm, "sendmail", Some("28424"), SENDMAIL)),
            ("03", w(vm, app_postfix, Some("1234"), POSTFIX)),
            ("04", w(vm, "myapp", None, "tag without pid")),
            ("05", w(vm, "sshd", Some("7471"), "line one#012line two")),
            (
                "06",
                w(
                    vm,
                    "sshd",
                    Some("7480"),
                    "bad utf8 \u{fffd}\u{fffd} user \u{fffd}( café",
                ),
            ),
            ("07", w(vm, "longmsg", Some("7483"), "AAAA…")),
            ("08", w(vm, "kernel", None, KERNEL)),
            ("09", w(vm, long_tag, long_pid, "long tag")),
            ("10", w(vm, "sshd", Some("7523"), FAILED)),
            ("11", w(vm, "sshd", Some("7525"), "escaped sd")),
            ("12", w(vm, "sshd", Some("7527"), FAILED)),
            ("13", w(vm, "sshd", Some("7529"), "line one#012line two")),
            ("14", w(vm, "longmsg", Some("7532"), "AAAA…")),
        ];
        for (n, want) in cases {
            check(&format!("{prefix}{n}.bin"), want);
        }
    }

    #[test]
    fn rsyslog_traditional_tcp_udp_and_forward_format() {
        for prefix in ["a", "c", "x"] {
            phase_one(
                prefix,
                "postfix/smtpd",
                "averyveryverylongprogramname_exc",
                None,
            );
        }
    }

    #[test]
    fn rsyslog_rfc5424_octet_lf_and_udp() {
        for prefix in ["b", "y", "z"] {
            phase_one(
                prefix,
                "postfix",
                "averyveryverylongprogramname_exceeding_32chars",
                Some("7503"),
            );
        }
    }

    #[test]
    fn rsyslog_phase_two() {
        let vm = Some("vm");
        for prefix in ["a", "b", "c"] {
            let p = |n: &str| format!("{prefix}{n}.bin");
            let origin = "[origin software=\"rsyslogd\" swVersion=\"8.2302.0\" x-pid=\"8690\" x-info=\"https://www.rsyslog.com\"]";
            let start: &'static str = Box::leak(format!("{origin} start").into_boxed_str());
            let exit: &'static str =
                Box::leak(format!("{origin} exiting on signal 15.").into_boxed_str());
            check(&p("15"), w(vm, "rsyslogd", None, start));
            check(&p("18"), w(vm, "longmsg", Some("999"), "AAAA…"));
            check(&p("19"), w(vm, "sshd", Some("5555"), FAILED));
            check(
                &p("21"),
                w(
                    vm,
                    "sshd",
                    Some("5556"),
                    "Accepted publickey for root from 198.51.100.1 port 50000 ssh2",
                ),
            );
            check(&p("22"), w(vm, "rsyslogd", None, exit));
        }
    }

    #[test]
    fn repeated_message_summary_counts_n_failures() {
        for name in ["a20.bin", "b20.bin", "c20.bin"] {
            let bytes = fixture(name);
            let text = decode(frame(&bytes));
            let event = parse(&text, &Zone::Utc, now()).unwrap();
            assert_eq!(event.message, FAILED, "{name}");
            assert_eq!(event.repeat, 3, "{name}");
        }
    }

    #[test]
    fn raw_newline_splits_into_a_parsed_head_and_an_unparseable_tail() {
        let bytes = fixture("a16.bin");
        let mut lines = bytes.split_inclusive(|&b| b == b'\n');
        let head = decode(lines.next().unwrap());
        assert_eq!(parse(&head, &Zone::Utc, now()).unwrap().message, "line one");
        let tail = decode(lines.next().unwrap());
        assert_eq!(parse(&tail, &Zone::Utc, now()), Err(ParseError::NoHeader));
        // Octet counting keeps the message whole.
        let bytes = fixture("b16.bin");
        let text = decode(frame(&bytes));
        assert_eq!(
            parse(&text, &Zone::Utc, now()).unwrap().message,
            "line one\nline two"
        );
    }

    #[test]
    fn util_linux_logger_frames() {
        let vm = Some("vm");
        for n in ["01", "02", "03", "04", "05", "06", "07", "08", "15", "16"] {
            check(
                &format!("l{n}.bin"),
                w(vm, "sshd", None, FAILED).with_any_pid(),
            );
        }
        check(
            "l11.bin",
            w(
                vm,
                "sshd",
                Some("6239"),
                "bad utf8 \u{fffd}\u{fffd} user \u{fffd}( café",
            ),
        );
        check("l12.bin", w(vm, "sshd", Some("6286"), "AAAA…"));
        check("l13.bin", w(vm, "sshd", Some("6289"), "AAAA…"));
        check("l14.bin", w(None, "sshd", Some("5933"), FAILED));
        check(
            "l17.bin",
            Want {
                host: None,
                program: Some("kernel"),
                pid: None,
                message: "x",
            },
        );
    }

    impl Want {
        /// logger's pids differ per frame; only the rest is compared.
        fn with_any_pid(self) -> Want {
            Want {
                pid: Some("*"),
                ..self
            }
        }
    }

    #[test]
    fn synthetic_pitfalls() {
        let vm = Some("vm");
        check("s01.bin", w(vm, "kernel", None, KERNEL));
        check("s02.bin", w(vm, "kernel", None, "[UFW BLOCK] IN=eth0 OUT= MAC=00:00 SRC=203.0.113.5 DST=192.0.2.1 PROTO=TCP SPT=4242 DPT=22"));
        check("s04.bin", w(vm, "sshd", Some("7375"), FAILED));
        check("s05.bin", w(vm, "sshd", Some("7375"), FAILED));
        check("s06.bin", w(vm, "sshd", Some("7375"), FAILED));
        check("s07.bin", w(vm, "sshd", Some("7375"), FAILED));
        check(
            "s08.bin",
            Want {
                host: None,
                program: Some("myapp"),
                pid: None,
                message: "tag without pid, no hostname",
            },
        );
        check("s10.bin", w(vm, "sshd", Some("7375"), FAILED));
        check("s11.bin", w(vm, "sshd", None, FAILED));
        check("s13.bin", w(vm, "sshd", Some("1"), "no PRI at all"));
        check(
            "s14.bin",
            w(
                Some("vm-01.example.com"),
                "sshd",
                Some("7375"),
                "[ID 800047 auth.info] Failed password for admin from 203.0.113.5",
            ),
        );
        let bytes = fixture("s12.bin");
        assert_eq!(
            parse(&decode(&bytes), &Zone::Utc, now()),
            Err(ParseError::NoHeader)
        );
    }

    #[test]
    fn december_message_received_in_january_is_last_years() {
        let bytes = fixture("s09.bin");
        let text = decode(&bytes);
        let january = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 30).unwrap();
        let event = parse(&text, &Zone::Utc, january).unwrap();
        assert_eq!(
            event.timestamp.unwrap().to_rfc3339(),
            "2026-12-31T23:59:59+00:00"
        );
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        let event = parse(&text, &berlin, january).unwrap();
        assert_eq!(
            event.timestamp.unwrap().to_rfc3339(),
            "2026-12-31T23:59:59+01:00"
        );
    }

    /// Every frame the fast path reads must come out exactly as syslog_loose + fix_up read it.
    fn same_as_loose(text: &str, now: DateTime<Utc>) -> bool {
        let zone = Zone::parse("Europe/Berlin").unwrap();
        let offset = zone.offset_at(now);
        let local = now.with_timezone(&offset);
        let (year, month) = (local.year(), local.month() as i32);
        let resolve = move |(m, ..): syslog_loose::IncompleteDate| match m as i32 - month {
            d if d > 6 => year - 1,
            d if d < -6 => year + 1,
            _ => year,
        };
        let Some(fast) = fast_3164(text, |m| resolve((m, 0, 0, 0, 0)), offset, Seconds::Whole)
        else {
            return false;
        };
        assert_eq!(
            Ok(fast.clone()),
            parse_loose(text, resolve, offset),
            "{text:?}"
        );
        assert_eq!(Ok(fast), parse(text, &zone, now), "{text:?}");
        true
    }

    #[test]
    fn the_fast_header_parser_agrees_with_syslog_loose() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syslog");
        let mut fast = 0;
        let mut frames = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "bin") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut decoder = crate::listener::framing::FrameDecoder::new(1 << 20);
            let mut buf = bytes::BytesMut::from(&bytes[..]);
            let mut all = Vec::new();
            while let Ok(Some(f)) = decoder.decode(&mut buf) {
                all.push(f);
            }
            all.extend(decoder.finish(&mut buf));
            for frame in all {
                let crate::listener::framing::Frame::Message(frame) = frame else {
                    continue;
                };
                let text = decode(&frame);
                frames += 1;
                for at in [now(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 30).unwrap()] {
                    fast += usize::from(same_as_loose(&text, at));
                    for zone in ["UTC", "Europe/Berlin"] {
                        let zone = Zone::parse(zone).unwrap();
                        assert_eq!(fast_paths_agree(&frame, &zone, at), Ok(()));
                    }
                }
            }
        }
        assert!(frames > 100, "{frames} fixture frames");
        assert!(fast > 50, "the fast path read only {fast} fixture frames");
        // Shapes of the benchmark corpus and edge cases around what the fast path accepts.
        let fast_ones = [
            "<38>Nov 20 00:00:00 mail1 sshd[16804]: Failed password for invalid user postgres from 192.0.2.0 port 25449 ssh2",
            "Nov  2 07:01:09 build-3 sshd[1]: Invalid user a b c from 2001:db8:0:1::1 port 22",
            "<0>Dec 31 23:59:59 gw kernel: [UFW BLOCK] IN=eth0 SRC=203.0.113.5",
            "<191>Jan 01 00:00:00 web01 postfix/smtpd[1234]: connect from unknown[192.0.2.1]",
            "<38>Nov 29 18:52:53 vm sshd[7375]: message repeated 3 times: [ Failed password for root from 192.0.2.1 port 22 ssh2]",
            "<38>Nov 29 18:52:53 vm sshd[7375]:",
            "<38>Nov 29 18:52:53 vm sshd:   [x] y ",
            "<38>Nov 29 18:52:53 vm.example.org CRON[99]: (root) CMD (true)",
            "<13>Feb 28 12:00:00 vm app: short month",
            "<38>Nov 29 18:52:53 vm rsyslogd: -- MARK --",
            "<38>Nov 29 18:52:53 vm sshd[1]: -ERR x",
            "<38>Nov 29 18:52:53 vm sshd[1]: - y",
            "<38>Nov 29 18:52:53 vm sshd[1]: -ERR x ",
            "<38>Nov 29 18:52:53 vm sshd[1]: -ERR x\t",
        ];
        for line in fast_ones {
            assert!(same_as_loose(line, now()), "fast path refused {line:?}");
        }
        let slow_ones = [
            "<13>Nov 29 18:52:54 myapp: text",
            "<13>Nov 29 18:52:54 vm sshd[abc]: named pid",
            "<13>Nov 29 18:52:54.123 vm sshd[1]: fractional",
            "<13>Nov 29 2026 18:52:54 vm sshd[1]: with year",
            "<13>1 2026-11-29T18:52:54Z vm sshd 1 - - rfc 5424",
            "<13>Nov 29 18:52:54  vm sshd[1]: two spaces",
            "<13>Nov 29 25:52:54 vm sshd[1]: bad hour",
            "<999>Nov 29 18:52:54 vm sshd[1]: bad pri",
            "<13>Nov 29 18:52:54 vm sshd[1]no colon",
            "<13>Nov 29 18:52:54 vm sshd[99999999999]: huge pid",
            "<38>Nov 20 00:00:00 - sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2",
            "<38>Nov 20 00:00:00 vm -: x",
            // First words rsyslog reads as the tag, not the host.
            "<38>Nov 20 00:00:00 vm- sshd[1]: x",
            "<38>Nov 20 00:00:00 vm_ sshd[1]: x",
        ];
        for line in slow_ones {
            assert!(!same_as_loose(line, now()), "fast path took {line:?}");
        }
    }

    /// Shapes rsyslog reads that syslog_loose alone misread (found against a real rsyslogd by
    /// tests/ingest.rs's generated shapes): a fractional timestamp off the fast path, a tag
    /// with no space after its colon or no colon taken for the host, a tag with a pid and no
    /// colon after a PRI; an IPv6 host stays a host.
    #[test]
    fn shapes_syslog_loose_misreads_read_as_rsyslog_reads_them() {
        let at = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        fn read(line: &str, at: DateTime<Utc>) -> Event<'_> {
            parse(line, &Zone::Utc, at).unwrap_or_else(|e| panic!("{line}: {e:?}"))
        }
        for (line, host, program, pid, message) in [
            (
                "<13>Dec  6 04:50:00.123456 sshd[77]: - y",
                None,
                "sshd",
                Some(ProcId::PID(77)),
                "- y",
            ),
            (
                "Dec  6 04:50:00.5 postfix/smtpd[1234]::x",
                None,
                "postfix/smtpd",
                Some(ProcId::PID(1234)),
                ":x",
            ),
            (
                "<13>Dec  6 04:50:00.123456 web1 sshd[abc]: [x] y",
                Some("web1"),
                "sshd",
                Some(ProcId::Name("abc")),
                "[x] y",
            ),
            (
                "<38>2026-12-06T04:50:00Z sshd[abc]::no space",
                None,
                "sshd",
                Some(ProcId::Name("abc")),
                ":no space",
            ),
            (
                "2026-12-06T04:50:00Z sshd[77]:no space",
                None,
                "sshd",
                Some(ProcId::PID(77)),
                "no space",
            ),
            (
                "<13>2026-12-06T04:50:00.123+01:00 sshd[77] [x] y",
                None,
                "sshd",
                Some(ProcId::PID(77)),
                "[x] y",
            ),
            (
                "<38>Dec  6 04:50:00 2001:db8::1 sshd[1]: x",
                Some("2001:db8::1"),
                "sshd",
                Some(ProcId::PID(1)),
                "x",
            ),
            (
                "<38>sshd[77] -ERR x",
                None,
                "sshd",
                Some(ProcId::PID(77)),
                "-ERR x",
            ),
            (
                "<38>web1 sshd[77] x ",
                Some("web1"),
                "sshd",
                Some(ProcId::PID(77)),
                "x",
            ),
        ] {
            let event = read(line, at);
            assert_eq!(
                (event.hostname, event.program, event.pid, event.message),
                (host, Some(program), pid, message),
                "{line}"
            );
        }
        let fraction = read("<13>Dec  6 04:50:00.123456 sshd[77]: - y", at);
        assert_eq!(fraction.timestamp.unwrap().nanosecond(), 123_456_000);
        // Without a pid, a tag still needs its colon: `<38>web1 x` says nothing of a program.
        assert!(pri_then_tag("<38>web1 sshd x").is_none());
        // Nor with a "pid" holding a space (review-parse31 finding 3): rsyslog's tag ends there.
        assert!(pri_then_tag("<13>web1 app[x y] z").is_none());
        let spaced = read("Dec  6 04:50:00 app[x y] z", at);
        assert_eq!((spaced.program, spaced.pid), (Some("app"), None));
        // An IPv6 host with a zone stays the host (review-parse31 finding 2).
        let zoned = read(
            "<38>Dec  6 04:50:00 fe80::1%eth0 sshd[1]: Failed password",
            at,
        );
        assert_eq!(
            (zoned.hostname, zoned.program, zoned.message),
            (Some("fe80::1%eth0"), Some("sshd"), "Failed password")
        );
    }

    /// rsyslog takes a first word for the host name only when it is letters, digits, `.`, `-` and
    /// `_` ending in a letter or digit, followed by a space (or the end of the frame); any other
    /// first word is the tag, and its program what comes before a `[`, `:` or byte that is not
    /// printable ASCII. With or without timestamp, and the fast path leaves such a word to the
    /// slow path (jailsink took it for the host before, on both paths).
    #[test]
    fn a_first_word_rsyslog_refuses_as_a_host_name_is_the_tag() {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        for (line, host, program, message) in [
            (
                "<13>Dec  7 10:00:00 sshd(pam) x",
                None,
                Some("sshd(pam)"),
                "x",
            ),
            ("<13>sshd(pam) x", None, Some("sshd(pam)"), "x"),
            ("<13>web1- sshd[7]: x", None, Some("web1-"), "sshd[7]: x"),
            (
                "<13>2026-12-07T10:00:00Z user@web1 sshd: x",
                None,
                Some("user@web1"),
                "sshd: x",
            ),
            (
                "<13>Dec  7 10:00:00 wéb1 sshd: x",
                None,
                Some("w"),
                "sshd: x",
            ),
            ("<13>wéb1: x", None, Some("w"), "x"),
            (
                "<13>Dec  7 10:00:00 [192.0.2.4] sshd: x",
                None,
                None,
                "sshd: x",
            ),
            (
                "<13>Dec  7 10:00:00 web[1] sshd: x",
                None,
                Some("web"),
                "sshd: x",
            ),
            // The program ends at a byte that is not printable ASCII, and `-` is none.
            ("<13>Dec  7 10:00:00 wé[5]: y", None, Some("w"), "y"),
            ("<13>Dec  7 10:00:00 -é sshd: x", None, None, "sshd: x"),
            // A word beginning with a digit is a tag too, but for an RFC 3339 date.
            ("<13>1__[5]: y", None, Some("1__"), "y"),
            // The tag ends at its first space, even in a `[` left open.
            ("<13>a[[)! CRON[1]: x", None, Some("a"), "CRON[1]: x"),
            // No header at all after the PRI, to rsyslog.
            ("<13>[192.0.2.4] sshd: x", None, None, "[192.0.2.4] sshd: x"),
            ("<13>  {\"a\": 1}", None, None, "{\"a\": 1}"),
            // Host names, though odd ones.
            (
                "<13>Dec  7 10:00:00 _web1 sshd: x",
                Some("_web1"),
                Some("sshd"),
                "x",
            ),
            ("<13>.web1 sshd: x", Some(".web1"), Some("sshd"), "x"),
            ("<13>Dec  7 10:00:00 web1-", Some("web1-"), None, ""),
        ] {
            let event = parse(line, &Zone::Utc, at).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            assert_eq!(
                (event.hostname, event.program, event.message),
                (host, program, message),
                "{line}"
            );
            assert_eq!(fast_paths_agree(line.as_bytes(), &Zone::Utc, at), Ok(()));
        }
        // A first word of `-` stays jailsink's "no host" without a timestamp too.
        let nil = parse("<13>- sshd[1]: x", &Zone::Utc, at).unwrap();
        assert_eq!((nil.hostname, nil.program), (None, Some("sshd")));
    }

    /// A fully qualified host name with its root dot (`web1.example.org.`) stays the host, on
    /// purpose (rsyslog reads it as the tag): a sender configured with one keeps its messages'
    /// programs, so an sshd jail still sees its sshd. Only a dot after a letter or digit: `web1-`,
    /// `web1..` and a lone `.` are still the tag, as rsyslog reads them. The fast path takes
    /// such a header as the slow path reads it.
    #[test]
    fn a_host_name_with_its_root_dot_stays_the_host() {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let failed = "Failed password for root from 192.0.2.1 port 22 ssh2";
        for head in [
            "<13>Dec  7 10:00:00 ",
            "<13>Dec  7 10:00:00.5 ",
            "<13>2026-12-07T10:00:00Z ",
            "Dec  7 10:00:00 ",
            "<13>",
        ] {
            for host in ["web1.", "web1.example.org.", "192.0.2.4."] {
                let line = format!("{head}{host} sshd[7]: {failed}");
                let event =
                    parse(&line, &Zone::Utc, at).unwrap_or_else(|e| panic!("{line}: {e:?}"));
                assert_eq!(
                    (event.hostname, event.program, event.message),
                    (Some(host), Some("sshd"), failed),
                    "{line}"
                );
                assert_eq!(fast_paths_agree(line.as_bytes(), &Zone::Utc, at), Ok(()));
            }
            for word in ["web1..", ".", "web1-."] {
                let line = format!("{head}{word} sshd[7]: x");
                let event =
                    parse(&line, &Zone::Utc, at).unwrap_or_else(|e| panic!("{line}: {e:?}"));
                assert_eq!(
                    (event.hostname, event.program),
                    (None, Some(word)),
                    "{line}"
                );
            }
        }
        // After a host name, a program ends at its `[` whether or not a pid follows, as
        // rsyslog's does (syslog_loose kept `sshd[1]x`).
        for (line, program) in [
            ("<13>Dec  7 10:00:00 host sshd[1]x y", "sshd"),
            ("<13>Dec  7 10:00:00 host sshd[a b]: x", "sshd"),
            ("<13>Dec  7 10:00:00 host a[1]b: x", "a"),
        ] {
            let event = parse(line, &Zone::Utc, at).unwrap();
            assert_eq!(event.program, Some(program), "{line}");
        }
    }

    /// A 3164 message reads the same whatever its timestamp looks like and whether it names a
    /// host: a leading `-` is message (syslog_loose reads it as an empty structured data), a
    /// named pid is skipped, a host or tag of `-` is none.
    #[test]
    fn a_3164_message_reads_the_same_in_every_header_shape() {
        let zone = Zone::parse("UTC").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        for (lines, want) in [
            (
                [
                    "<38>Nov 29 18:52:53 vm rsyslogd: -- MARK --",
                    "<38>2026-11-29T18:52:53Z vm rsyslogd: -- MARK --",
                    "<38>Nov 29 18:52:53 rsyslogd: -- MARK --",
                ],
                "-- MARK --",
            ),
            (
                [
                    "<38>Nov 29 18:52:53 vm sshd[1]: -ERR x",
                    "<38>2026-11-29T18:52:53Z vm sshd[1]: -ERR x",
                    "<38>Nov 29 18:52:53 sshd[1]: -ERR x",
                ],
                "-ERR x",
            ),
            (
                // Spaces after the message (found by fuzz/parse_fast).
                [
                    "<38>Nov 29 18:52:53 sshd[1]: -ERR x ",
                    "<38>2026-11-29T18:52:53Z vm sshd[1]: -ERR x ",
                    "<13>Nov 29 18:52:54 myapp: -ERR x \t",
                ],
                "-ERR x",
            ),
            (
                [
                    "<13>Nov 29 18:52:54 vm sshd[abc]: [x a=\"b\"] y",
                    "<13>2026-11-29T18:52:54Z vm sshd[abc]: [x a=\"b\"] y",
                    "<13>Nov 29 18:52:54 vm sshd[abc]: [x a=\"b\"] y",
                ],
                "[x a=\"b\"] y",
            ),
        ] {
            for line in lines {
                let event = parse(line, &zone, at).unwrap_or_else(|e| panic!("{line}: {e:?}"));
                assert_eq!(event.message, want, "{line}");
            }
        }
        // Neither host nor tag (a tag of `-`, or none): the message is never the whole frame.
        for (line, want) in [
            ("<34>Oct 11 22:14:15 : a message", "a message"),
            ("<38>Nov 20 00:00:00 vm -: x", "x"),
        ] {
            assert_eq!(parse(line, &zone, at).unwrap().message, want, "{line}");
        }
        let hostless = parse("<38>Nov 20 00:00:00 - sshd[1]: Failed password", &zone, at).unwrap();
        assert_eq!(hostless.hostname, None);
        assert_eq!(hostless.program, Some("sshd"));
    }

    /// The remembered time is the one chrono builds, whatever came before (an impossible date
    /// stays impossible, another zone or year is another time).
    #[test]
    fn remembered_stamps_are_the_ones_chrono_builds() {
        let plus = FixedOffset::east_opt(3600).unwrap();
        let utc = Utc.fix();
        let calls = [
            (2026, 11, 29, (18, 52, 53), utc),
            (2026, 11, 29, (18, 52, 53), utc),
            (2026, 11, 29, (18, 52, 53), plus),
            (2025, 11, 29, (18, 52, 53), plus),
            (2026, 2, 30, (0, 0, 0), utc),
            (2026, 2, 30, (0, 0, 0), utc),
            (2024, 2, 29, (23, 59, 59), utc),
            (2026, 11, 29, (18, 52, 54), utc),
            (2026, 11, 29, (18, 52, 53), utc),
        ];
        for (year, month, day, (h, m, s), offset) in calls {
            let want = offset
                .with_ymd_and_hms(year, month, day, h, m, s)
                .earliest();
            assert_eq!(stamp(year, month, day, (h, m, s), offset), want);
        }
    }

    #[test]
    fn shapes_rsyslog_reads_are_read() {
        fn read(text: &str) -> Event<'_> {
            parse(text, &Zone::Utc, now()).unwrap()
        }
        let e = read("<38>sshd[77]: Failed password");
        assert_eq!(
            (e.hostname, e.program, e.pid, e.message, e.timestamp),
            (
                None,
                Some("sshd"),
                Some(ProcId::PID(77)),
                "Failed password",
                None
            )
        );
        let e = read("<38>sshd:no space");
        assert_eq!(
            (e.program, e.pid, e.message),
            (Some("sshd"), None, "no space")
        );
        let e = read("<38>web1 postfix/smtpd[x1]: named pid");
        assert_eq!(
            (e.hostname, e.program, e.pid),
            (
                Some("web1"),
                Some("postfix/smtpd"),
                Some(ProcId::Name("x1"))
            )
        );
        let e = read("<38>Nov 29 18:52:54.123456 vm sshd[1]: fractional");
        assert_eq!(
            (e.hostname, e.program, e.message),
            (Some("vm"), Some("sshd"), "fractional")
        );
        assert_eq!(
            e.timestamp.unwrap().to_rfc3339(),
            "2026-11-29T18:52:54.123456+00:00"
        );
        let nul = decode(b"<38>Nov 29 18:52:54 vm sshd[1]: trailing NUL\0");
        assert_eq!(read(&nul).message, "trailing NUL");
        // Not tags: a 5424 version, a timestamp, nothing after the PRI, a PRI out of range.
        for text in [
            "<38>1 x",
            "<38>Nov 29",
            "<38>",
            "<999>sshd: x",
            "<38>sshd no colon",
        ] {
            assert_eq!(pri_then_tag(text), None, "{text}");
        }
        // Fractions have 1 to 9 digits and are only read on the second pass.
        let zero = |_| 2026;
        let frac = "<38>Nov 29 18:52:54.1234567890 vm sshd[1]: x";
        assert_eq!(fast_3164(frac, zero, Utc.fix(), Seconds::Fractional), None);
        let frac = "<38>Nov 29 18:52:54.5 vm sshd[1]: x";
        assert_eq!(fast_3164(frac, zero, Utc.fix(), Seconds::Whole), None);
        assert!(fast_3164(frac, zero, Utc.fix(), Seconds::Fractional).is_some());
    }

    #[test]
    fn zones_parse() {
        assert_eq!(Zone::parse("UTC"), Ok(Zone::Utc));
        assert!(matches!(Zone::parse("+01:00"), Ok(Zone::Fixed(_))));
        assert!(Zone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn empty_frames_are_errors() {
        assert_eq!(parse("  ", &Zone::Utc, now()), Err(ParseError::Empty));
        assert_eq!(decode(b"\xef\xbb\xbf<13>x\r\n\0"), "<13>x");
    }
}
