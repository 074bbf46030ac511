//! `jailsink regex LOG FILTER`: a filter tried offline against a log, as `fail2ban-regex` does.
//!
//! Lines are read as on-disk syslog (`Nov 29 18:52:53 host prog[pid]: message`); a line with no
//! syslog header is matched whole. Times come from the lines themselves, since a file has no
//! receipt time.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::config::raw::RawFilter;
use crate::config::read_toml;
use crate::filter::{Filter, FilterSource, Verdict};
use crate::parse::{self, Zone};

/// Where a filter named on the command line came from, for the report.
#[derive(Debug, Clone)]
pub struct LoadedFilter {
    /// The compiled filter.
    pub filter: Filter,
    /// A file path, or "literal".
    pub origin: String,
}

/// Resolves FILTER: a literal regex with `<HOST>`, a path to a `.toml` filter, or a name looked
/// up in `dirs`.
pub fn load_filter(spec: &str, dirs: &[PathBuf]) -> Result<LoadedFilter, String> {
    let source = if spec.contains("<HOST>") || spec.contains("<ADDR>") || spec.contains("<SUBNET>")
    {
        return compile(
            FilterSource {
                failregex: vec![spec.to_string()],
                ..Default::default()
            },
            "literal".into(),
        );
    } else if spec.ends_with(".toml") || spec.contains('/') {
        PathBuf::from(spec)
    } else {
        dirs.iter()
            .map(|d| d.join(format!("{spec}.toml")))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                format!("no filter `{spec}.toml` in {}", searched.join(", "))
            })?
    };
    if source.extension().is_some_and(|e| e == "conf") {
        return Err(format!(
            "{}: fail2ban .conf filters are not supported yet",
            source.display()
        ));
    }
    let raw: RawFilter = read_toml(&source).map_err(|e| e.to_string())?;
    compile(
        FilterSource {
            failregex: raw.failregex,
            ignoreregex: raw.ignoreregex,
            prefregex: raw.prefregex,
        },
        source.display().to_string(),
    )
}

fn compile(source: FilterSource, origin: String) -> Result<LoadedFilter, String> {
    Filter::compile(&source)
        .map(|filter| LoadedFilter {
            filter,
            origin: origin.clone(),
        })
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{origin}: {}: {}", e.key, e.reason))
                .collect::<Vec<_>>()
                .join("\n")
        })
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
    /// `<F-USER>`.
    pub user: Option<String>,
}

/// Judges one line of a log.
pub fn judge(filter: &Filter, number: u64, line: &str, zone: &Zone) -> LineResult {
    let (message, time) = match parse::parse(line, zone, Utc::now()) {
        Ok(event) => (
            event.message,
            event
                .timestamp
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string()),
        ),
        Err(_) => (line.trim(), None),
    };
    let (result, host, regex, user) = match filter.check(message) {
        Verdict::Failure(m) => ("matched", Some(m.ip), Some(m.regex), m.user),
        Verdict::Ignored(i) => ("ignored", None, Some(i), None),
        Verdict::Missed => ("missed", None, None, None),
    };
    LineResult {
        line: number,
        result,
        host,
        regex,
        time,
        user,
    }
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
    /// Addresses with the times they failed.
    pub hosts: BTreeMap<IpAddr, Vec<String>>,
}

/// Reads LOG (`-`, a file, or one literal line), judges every line, and writes the report.
pub fn run(
    log: &str,
    loaded: &LoadedFilter,
    zone: &Zone,
    options: Options,
    out: &mut impl Write,
) -> std::io::Result<Summary> {
    let started = Instant::now();
    let source = loaded.filter.source();
    let mut summary = Summary {
        fail_hits: vec![0; source.failregex.len()],
        ignore_hits: vec![0; source.ignoreregex.len()],
        ..Default::default()
    };
    let mut printed = Vec::new();
    let mut each = |number: u64, line: &str, out: &mut dyn Write| -> std::io::Result<()> {
        let r = judge(&loaded.filter, number, line, zone);
        summary.lines += 1;
        match (r.result, r.regex) {
            ("matched", Some(i)) => {
                summary.matched += 1;
                summary.fail_hits[i] += 1;
                if let Some(ip) = r.host {
                    summary
                        .hosts
                        .entry(ip)
                        .or_default()
                        .push(r.time.clone().unwrap_or_else(|| "-".into()));
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
            printed.push((r.result, line.to_string()));
        }
        Ok(())
    };
    let log_name = if log == "-" {
        for (i, line) in std::io::stdin().lock().split(b'\n').enumerate() {
            each(i as u64 + 1, &String::from_utf8_lossy(&line?), out)?;
        }
        "stdin".to_string()
    } else if Path::new(log).is_file() {
        let file = std::io::BufReader::new(std::fs::File::open(log)?);
        for (i, line) in file.split(b'\n').enumerate() {
            each(i as u64 + 1, &String::from_utf8_lossy(&line?), out)?;
        }
        log.to_string()
    } else {
        each(1, log, out)?;
        "literal line".to_string()
    };
    if options.json {
        return Ok(summary);
    }
    let secs = started.elapsed().as_secs_f64();
    report(out, &log_name, loaded, &summary, &printed, secs)?;
    Ok(summary)
}

fn report(
    out: &mut impl Write,
    log_name: &str,
    loaded: &LoadedFilter,
    s: &Summary,
    printed: &[(&str, String)],
    secs: f64,
) -> std::io::Result<()> {
    let source = loaded.filter.source();
    writeln!(out, "\nRunning tests\n=============\n")?;
    writeln!(out, "Use   failregex filter : {}", loaded.origin)?;
    writeln!(out, "Use         log file : {log_name}\n")?;
    writeln!(out, "Results\n=======\n")?;
    writeln!(out, "Failregex: {} total", s.matched)?;
    writeln!(out, "|-  #) [# of hits] regular expression")?;
    for (i, (hits, pattern)) in s.fail_hits.iter().zip(&source.failregex).enumerate() {
        writeln!(out, "|  {:>2}) [{hits}] {pattern}", i + 1)?;
    }
    writeln!(out, "`-\n")?;
    writeln!(out, "Ignoreregex: {} total", s.ignored)?;
    if !source.ignoreregex.is_empty() {
        writeln!(out, "|-  #) [# of hits] regular expression")?;
        for (i, (hits, pattern)) in s.ignore_hits.iter().zip(&source.ignoreregex).enumerate() {
            writeln!(out, "|  {:>2}) [{hits}] {pattern}", i + 1)?;
        }
        writeln!(out, "`-")?;
    }
    writeln!(out, "\nAddresses found: {}", s.hosts.len())?;
    for (ip, times) in &s.hosts {
        writeln!(
            out,
            "|  {ip} ({} failures: {})",
            times.len(),
            times.join(", ")
        )?;
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
        )
        .unwrap();
        let r = judge(
            &loaded.filter,
            1,
            "Nov 29 18:52:53 vm sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2",
            &Zone::Utc,
        );
        assert_eq!(r.result, "matched");
        assert_eq!(r.host, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.user.as_deref(), Some("root"));
        assert!(r.time.unwrap().ends_with("-11-29T18:52:53"));
        let r = judge(&loaded.filter, 2, "hello", &Zone::Utc);
        assert_eq!(r.result, "missed");
    }

    #[test]
    fn report_counts_lines() {
        let loaded = load_filter(r"^bad <HOST>$", &[]).unwrap();
        let mut out = Vec::new();
        let s = run(
            "bad 192.0.2.1",
            &loaded,
            &Zone::Utc,
            Options::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!((s.lines, s.matched), (1, 1));
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"),
            "{text}"
        );
    }
}
