//! fail2ban's date detection for file lines: its default templates (syslog, ISO 8601,
//! Apache/nginx, epoch, TAI64N, ...) or a filter's `datepattern`, found in a line and cut out of
//! it before the failregex runs, as fail2ban's `DateDetector` and `DateTemplate` do.
//!
//! Live syslog events carry their date in the header, so this is only used for log files
//! (`jailsink regex`). Templates use fancy-regex: fail2ban's word boundaries are lookarounds.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

use super::translate;

/// fail2ban's `DEFAULT_TEMPLATES`, in its order.
const DEFAULT_TEMPLATES: &[&str] = &[
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    r"EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"TAI64N",
];

const EPOCH: &str = r"\d{10,11}\b(?:\.\d{3,6})?";
const LONG_EPOCH: &str = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?";
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// The regex (Python syntax) for one strptime directive, as fail2ban's `timeRE` has it.
fn directive(d: &str) -> Option<&'static str> {
    Some(match d {
        "a" => r"(?P<a>mon|tue|wed|thu|fri|sat|sun)",
        "A" => r"(?P<A>wednesday|saturday|thursday|tuesday|monday|friday|sunday)",
        "b" => r"(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        "B" => {
            r"(?P<B>september|february|november|december|january|october|august|april|march|july|june|may)"
        }
        "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])",
        "f" => r"(?P<f>[0-9]{1,6})",
        "H" => r"(?P<H>[0-1]?\d|2[0-3])",
        "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])",
        "j" => r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])",
        "k" => r" ?(?P<H>[0-2]?\d)",
        "l" => r" ?(?P<I>1?\d)",
        "m" => r"(?P<m>0?[1-9]|1[0-2])",
        "M" => r"(?P<M>[0-5]?\d)",
        "p" => r"(?P<p>am|pm)",
        "S" => r"(?P<S>[0-5]?\d|6[0-1])",
        "U" | "W" => r"(?P<U>5[0-3]|[0-4]\d|\d)",
        "w" => r"(?P<w>[0-6])",
        "y" | "Exy" => r"(?P<y>\d{2})",
        "Y" => r"(?P<Y>\d{4})",
        "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
        "Z" => r"(?P<Z>Z|[A-Z]{3,5})",
        "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])",
        "Exm" => r"(?P<m>0[1-9]|1[0-2])",
        "ExH" => r"(?P<H>[0-1]\d|2[0-3])",
        "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])",
        "Exl" => r" ?(?P<I>1[0-2]|\d)",
        "ExM" => r"(?P<M>[0-5]\d)",
        "ExS" => r"(?P<S>[0-5]\d|6[0-1])",
        "ExY" => r"(?P<Y>20\d\d)",
        "ExZ" => r"(?P<Z>[A-Z](?:[A-Z]{2,4})?)",
        "Exz" => r"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)",
        "%" => "%",
        _ => return None,
    })
}

/// How a template turns its match into a time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Pattern,
    Epoch { long: bool, group: usize },
    Tai64n,
}

/// One compiled date template.
#[derive(Debug, Clone)]
pub(crate) struct DateTemplate {
    /// fail2ban's display name for the template (the pattern as written).
    pub name: String,
    regex: translate::Compiled,
    names: Vec<Option<String>>,
    kind: Kind,
    line_begin: bool,
}

/// A date found in a line: where it is (the part cut out) and what it says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoundDate {
    /// Byte range of the date text in the line.
    pub span: (usize, usize),
    /// The time it names (local wall-clock time of the log), when it could be read.
    pub time: Option<NaiveDateTime>,
    /// Index of the template that matched, for hit counts.
    pub template: usize,
}

/// Why a `datepattern` cannot be used; each names the pattern.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatePatternError {
    /// A `%` directive fail2ban does not know.
    #[error("datepattern `{pattern}`: unknown directive %{directive}")]
    UnknownDirective {
        /// The pattern as written.
        pattern: String,
        /// The directive, without its `%`.
        directive: String,
    },
    /// The expanded pattern is not a regex either engine takes.
    #[error("datepattern `{pattern}`: {reason}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// Why it does not compile.
        reason: translate::TranslateError,
    },
}

/// The templates a filter uses, tried in order.
#[derive(Debug, Clone)]
pub struct DateDetector {
    templates: Vec<DateTemplate>,
}

impl DateDetector {
    /// Templates for a filter's `datepattern` (None: all of fail2ban's defaults).
    pub(crate) fn new(datepattern: Option<&str>) -> Result<DateDetector, DatePatternError> {
        let mut templates = Vec::new();
        let lines: Vec<&str> = match datepattern {
            None => vec!["{DEFAULT}"],
            Some(p) => p.lines().map(str::trim).filter(|l| !l.is_empty()).collect(),
        };
        // Each line of a datepattern adds templates, as fail2ban's appendTemplate does.
        for p in lines {
            let upper = p.to_uppercase();
            if upper == "{DEFAULT}" {
                templates.extend(defaults()?);
            } else if upper == "{^LN-BEG}" {
                templates.extend(defaults()?.into_iter().filter(|t| t.line_begin));
            } else if upper == "{NONE}" {
                continue;
            } else if p.contains("{DATE}") {
                for d in DEFAULT_TEMPLATES {
                    let unbound = d.trim_start_matches("{^LN-BEG}");
                    if let Ok(t) = pattern_template(&p.replace("{DATE}", unbound)) {
                        templates.push(t);
                    }
                }
            } else {
                templates.push(pattern_template(p)?);
            }
        }
        Ok(DateDetector { templates })
    }

    /// Names of the templates, for the report's hit counts.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.templates.iter().map(|t| t.name.as_str()).collect()
    }

    /// The first template that finds a date in `line`.
    pub(crate) fn find(&self, line: &str, now: NaiveDateTime) -> Option<FoundDate> {
        for (index, t) in self.templates.iter().enumerate() {
            let Ok(Some(spans)) = t.regex.captures(line) else {
                continue;
            };
            let group = match t.kind {
                Kind::Epoch { group, .. } => group,
                _ => 1,
            };
            let Some((start, end)) = spans.get(group).copied().flatten() else {
                continue;
            };
            let time = t.time(line, &spans, (start, end), now);
            return Some(FoundDate {
                span: (start, end),
                time,
                template: index,
            });
        }
        None
    }
}

impl DateTemplate {
    fn group(&self, line: &str, spans: &translate::Spans, name: &str) -> Option<String> {
        let i = self.names.iter().position(|n| n.as_deref() == Some(name))?;
        let (a, b) = spans.get(i).copied().flatten()?;
        Some(line[a..b].to_string())
    }

    fn time(
        &self,
        line: &str,
        spans: &translate::Spans,
        span: (usize, usize),
        now: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        let text = &line[span.0..span.1];
        match self.kind {
            Kind::Epoch { long, .. } => {
                let digits: String = text
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                let mut secs: f64 = digits.parse().ok()?;
                if long && digits.len() >= 13 {
                    secs /= if digits.len() >= 16 && !digits.contains('.') {
                        1_000_000.0
                    } else {
                        1000.0
                    };
                }
                Utc.timestamp_opt(secs as i64, 0)
                    .single()
                    .map(|t| t.naive_utc())
            }
            Kind::Tai64n => {
                let hex = text.trim_start_matches('@');
                let secs = i64::from_str_radix(hex.get(1..16)?, 16).ok()?;
                Utc.timestamp_opt(secs, 0).single().map(|t| t.naive_utc())
            }
            Kind::Pattern => {
                let g = |n: &str| self.group(line, spans, n);
                let num = |n: &str| g(n).and_then(|v| v.trim().parse::<u32>().ok());
                let month = num("m").or_else(|| {
                    let b = g("b").or_else(|| g("B"))?.to_lowercase();
                    MONTHS
                        .iter()
                        .position(|m| b.starts_with(m))
                        .map(|i| i as u32 + 1)
                });
                let mut hour = num("H").unwrap_or(0);
                if let Some(h12) = num("I") {
                    let pm = g("p").is_some_and(|p| p.eq_ignore_ascii_case("pm"));
                    hour = h12 % 12 + if pm { 12 } else { 0 };
                }
                let (minute, second) = (num("M").unwrap_or(0), num("S").unwrap_or(0).min(59));
                let micros = g("f").map_or(0, |f| {
                    let f = format!("{f:0<6}");
                    f[..6].parse::<u32>().unwrap_or(0)
                });
                let year = num("Y")
                    .map(|y| y as i32)
                    .or_else(|| num("y").map(|y| 2000 + y as i32));
                let (year_given, year) = match year {
                    Some(y) => (true, y),
                    None => (false, now.year()),
                };
                let (month, day) = match (month, num("d")) {
                    (Some(m), Some(d)) => (m, d),
                    _ => (now.month(), now.day()),
                };
                let date = NaiveDate::from_ymd_opt(year, month, day)?;
                let mut t = date.and_hms_micro_opt(hour, minute, second, micros)?;
                // A year-less date more than two days ahead is last year's, as fail2ban has it.
                if !year_given && t > now + chrono::Duration::days(2) {
                    t = t.with_year(year - 1).unwrap_or(t);
                }
                Some(t.with_nanosecond(micros * 1000).unwrap_or(t))
            }
        }
    }
}

/// fail2ban's default list: line-begin anchored copies first, then every template as written.
fn defaults() -> Result<Vec<DateTemplate>, DatePatternError> {
    let mut anchored = Vec::new();
    let mut plain = Vec::new();
    for d in DEFAULT_TEMPLATES {
        if !d.starts_with("{^LN-BEG}") && !d.starts_with('^') {
            anchored.push(pattern_template(&format!("{{^LN-BEG}}{d}"))?);
        }
        plain.push(pattern_template(d)?);
    }
    anchored.extend(plain);
    Ok(anchored)
}

/// fail2ban's `DatePatternRegex` / `DateEpoch` / `DateTai64n` for one pattern.
fn pattern_template(pattern: &str) -> Result<DateTemplate, DatePatternError> {
    let name = pattern.to_string();
    let mut p = pattern.trim();
    let (mut word_begin, mut word_end) = (Begin::Word, true);
    if let Some(rest) = p.strip_prefix("{UNB}") {
        p = rest;
        word_begin = Begin::None;
        word_end = false;
    }
    if word_begin == Begin::Word {
        if let Some(rest) = p.strip_prefix("{^LN-BEG}") {
            p = rest;
            word_begin = Begin::Start;
        }
    }
    let upper = p.to_uppercase();
    let (regex, kind) = if !p.contains('%')
        && (upper == "EPOCH" || upper == "LEPOCH" || upper == "^EPOCH")
    {
        let long = upper.contains("LEPOCH");
        let epoch = if long { LONG_EPOCH } else { EPOCH };
        if word_begin == Begin::Start || upper.starts_with('^') {
            (
                format!(r"((?P<square>(?<=^\[))?{epoch})(?(square)(?=\]))"),
                Kind::Epoch { long, group: 1 },
            )
        } else {
            word_begin = Begin::None;
            (
                format!(
                    r"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))({epoch}))(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))"
                ),
                Kind::Epoch { long, group: 1 },
            )
        }
    } else if upper == "TAI64N" {
        ("@[0-9a-f]{24}".to_string(), Kind::Tai64n)
    } else if upper.contains("{EPOCH}") || upper.contains("{LEPOCH}") {
        let long = upper.contains("{LEPOCH}");
        let epoch = if long { LONG_EPOCH } else { EPOCH };
        let replaced = p
            .replace("{EPOCH}", &format!("({epoch})"))
            .replace("{LEPOCH}", &format!("({epoch})"));
        (format!("({replaced})"), Kind::Epoch { long, group: 2 })
    } else {
        (expand_directives(p)?, Kind::Pattern)
    };
    let full = bound(&regex, word_begin, word_end);
    let compiled = translate::compile(&full).map_err(|reason| DatePatternError::Regex {
        pattern: pattern.to_string(),
        reason,
    })?;
    let names = compiled.names();
    let line_begin = word_begin == Begin::Start || starts_at_line_begin(&regex);
    Ok(DateTemplate {
        name,
        regex: compiled,
        names,
        kind,
        line_begin,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Begin {
    None,
    Word,
    Start,
}

/// `%Y`-style directives into their regexes; `(?iu)` in front when names of months/days occur.
fn expand_directives(pattern: &str) -> Result<String, DatePatternError> {
    let mut out = String::new();
    let mut alpha = false;
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (key, len) = if let Some(ex) = after.strip_prefix("Ex").and_then(|r| r.get(..1)) {
            if directive(&format!("Ex{ex}")).is_some() {
                (format!("Ex{ex}"), 3)
            } else {
                (after.get(..1).unwrap_or("").to_string(), 1)
            }
        } else {
            (after.get(..1).unwrap_or("").to_string(), 1)
        };
        let re = directive(&key).ok_or_else(|| DatePatternError::UnknownDirective {
            pattern: pattern.to_string(),
            directive: key.clone(),
        })?;
        alpha |= matches!(key.as_str(), "a" | "A" | "b" | "B" | "p");
        out.push_str(re);
        rest = &after[len.min(after.len())..];
    }
    out.push_str(rest);
    Ok(if alpha { format!("(?i){out}") } else { out })
}

fn starts_at_line_begin(regex: &str) -> bool {
    let r = regex.trim_start_matches("(?i)");
    r.starts_with('^') || r.starts_with("(^") || r.starts_with("(?:^")
}

/// fail2ban's `DateTemplate.setRegex`: one group around the date and word boundaries.
fn bound(regex: &str, begin: Begin, end: bool) -> String {
    let mut r = regex.trim().to_string();
    let mut flags = String::new();
    if let Some(rest) = r.strip_prefix("(?i)") {
        flags = "(?i)".into();
        r = rest.to_string();
    }
    let trimmed = r.trim_start_matches('(');
    let no_begin =
        trimmed.starts_with('^') || trimmed.starts_with("**") || trimmed.starts_with("?:^");
    let no_end = r.ends_with('$')
        || r.ends_with("$)")
        || r.ends_with(r"\b")
        || r.ends_with(r"\s")
        || r.trim_end_matches(')').ends_with("**");
    if !has_capture(&r) {
        let (head, body) = match r.strip_prefix('^') {
            Some(b) => ("^", b.to_string()),
            None => ("", r.clone()),
        };
        let (body, tail) = match body.strip_suffix('$') {
            Some(b) if !b.ends_with('\\') => (b.to_string(), "$"),
            _ => (body, ""),
        };
        r = format!("{head}({body}){tail}");
    }
    match begin {
        Begin::Word if !no_begin => r = format!(r"(?=^|\b|\W){r}"),
        Begin::Start if !no_begin => r = format!(r"^(?:\W{{0,2}})?{r}"),
        _ => {}
    }
    if end && !no_end {
        r.push_str(r"(?=\b|\W|$)");
    }
    let r = r.replace("**", "");
    format!("{flags}{r}")
}

/// True when the pattern has a capturing group (`(` not followed by `?`, not escaped).
fn has_capture(r: &str) -> bool {
    let b = r.as_bytes();
    (0..b.len())
        .any(|i| b[i] == b'(' && (i == 0 || b[i - 1] != b'\\') && b.get(i + 1) != Some(&b'?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2005, 8, 14)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
    }

    fn cut(detector: &DateDetector, line: &str) -> (String, Option<String>) {
        let found = detector.find(line, now()).expect("a date");
        let rest = format!("{}{}", &line[..found.span.0], &line[found.span.1..]);
        (
            rest,
            found
                .time
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string()),
        )
    }

    #[test]
    fn syslog_iso_apache_and_epoch_dates_are_cut() {
        let d = DateDetector::new(None).unwrap();
        assert_eq!(
            cut(&d, "Jun 21 16:47:48 host sshd[1]: msg"),
            (
                " host sshd[1]: msg".into(),
                Some("2005-06-21T16:47:48".into())
            )
        );
        assert_eq!(
            cut(&d, "2013-01-31 12:00:01,123 x").1.as_deref(),
            Some("2013-01-31T12:00:01")
        );
        let (rest, time) = cut(
            &d,
            r#"192.0.2.1 - - [01/Aug/2013:23:25:07 +0000] "GET / HTTP/1.1""#,
        );
        assert_eq!(rest, r#"192.0.2.1 - - [] "GET / HTTP/1.1""#);
        assert_eq!(time.as_deref(), Some("2013-08-01T23:25:07"));
        assert_eq!(
            cut(&d, "1125000000 x").1.as_deref(),
            Some("2005-08-25T20:00:00")
        );
    }

    #[test]
    fn line_begin_only_skips_dates_later_in_the_line() {
        let d = DateDetector::new(Some("{^LN-BEG}")).unwrap();
        assert!(d.find("user at Jun 21 16:47:48 failed", now()).is_none());
        assert!(d.find("[Jun 21 16:47:48] failed", now()).is_some());
    }

    #[test]
    fn custom_patterns_and_date_placeholder() {
        let d = DateDetector::new(Some(r"^%Y:%m:%d-%H:%M:%S")).unwrap();
        assert_eq!(cut(&d, "2013:01:31-12:00:01 x").0, " x");
        let d = DateDetector::new(Some(r"^[^\[]*\[({DATE})")).unwrap();
        let (rest, time) = cut(&d, "host [2013-01-31 12:00:01] x");
        assert_eq!(rest, "host [] x");
        assert_eq!(time.as_deref(), Some("2013-01-31T12:00:01"));
    }
}
