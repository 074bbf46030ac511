//! fail2ban's own sample corpus replayed through jailsink's loader and `jailsink regex` logic.
//!
//! Reads the stock filters from /etc/fail2ban/filter.d and the samples (with their
//! `# failJSON:` expectations) from the installed fail2ban package, never from this repository.
//! Interpretation follows fail2ban/tests/samplestestcase.py: `# filterOptions:` starts a block
//! judged once per option set (each with its own multi-line state), `# addFILE:` appends a file,
//! a failJSON line describes the line after it; `match` and `host` are compared, and `time` is
//! compared and reported (a time mismatch alone does not fail the test). Expectations
//! that need Python `eval` (`constraint`, a `test.condition` other than `name=='x'`) are skipped
//! and counted. A DNS name (or non-address id) the filter matches is never banned by jailsink:
//! it passes when jailsink names the same host as unbannable.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use jailsink::parse::Zone;
use jailsink::regex_tool::{load_filter, Judge, LoadFilterError, LoadedFilter};

const FILTERS: &str = "/etc/fail2ban/filter.d";
const SAMPLES: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs";

#[derive(Default)]
struct Tally {
    pass: usize,
    fail: usize,
    skipped: usize,
    unbannable: usize,
    failures: Vec<String>,
    /// Matched expectations that carry a `time`.
    timed: usize,
    time_mismatches: Vec<String>,
}

fn now() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2005, 8, 14)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("valid date")
}

/// `name=='sshd'` is the only test.condition form the samples use beyond what needs Python.
fn condition_holds(cond: &str, name: &str) -> Option<bool> {
    let cond = cond.replace(' ', "");
    let want = cond
        .strip_prefix("name==")?
        .trim_matches(|c| c == '\'' || c == '"');
    Some(want == name)
}

struct FilterTest {
    key: String,
    judge: Judge<'static>,
}

/// The filter `make` loads, judged under `key` once: kept unless `filters` has one under `key`.
/// Returns `key`.
fn once(
    filters: &mut BTreeMap<String, FilterTest>,
    key: String,
    make: impl FnOnce() -> &'static LoadedFilter,
) -> String {
    if !filters.contains_key(&key) {
        let test = FilterTest {
            key: key.clone(),
            judge: Judge::new(make(), Zone::Utc, now()),
        };
        filters.insert(key.clone(), test);
    }
    key
}

fn load(
    name: &str,
    opts: &BTreeMap<String, String>,
) -> Result<&'static LoadedFilter, LoadFilterError> {
    let mut spec = format!("{FILTERS}/{name}.conf");
    if !opts.is_empty() {
        let list: Vec<String> = opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        spec = format!("{spec}[{}]", list.join(", "));
    }
    load_filter(&spec, &[], &Default::default()).map(|l| &*Box::leak(Box::new(l)))
}

fn string_opts(
    v: &serde_json::Value,
) -> (BTreeMap<String, String>, Option<String>, Option<String>) {
    let mut opts = BTreeMap::new();
    let (mut cond, mut prefix) = (None, None);
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            match k.as_str() {
                "test.condition" => cond = Some(text),
                "test.prefix-line" => prefix = Some(text),
                k if k.starts_with("test.") => {}
                k => {
                    opts.insert(k.to_string(), text);
                }
            }
        }
    }
    (opts, cond, prefix)
}

fn run_sample(name: &str, tally: &mut Tally) {
    let mut files = vec![PathBuf::from(SAMPLES).join(name)];
    // Every option combination seen so far keeps its filter and multi-line state, keyed by its
    // options, as samplestestcase.py's `_filters` does; `tests` names the current block's.
    let mut filters: BTreeMap<String, FilterTest> = BTreeMap::new();
    let mut tests: Vec<(String, Option<String>)> = Vec::new();
    let mut common: serde_json::Map<String, serde_json::Value> = Default::default();
    let mut ignore_block = false;
    let mut i = 0;
    while i < files.len() {
        let text = String::from_utf8_lossy(&std::fs::read(&files[i]).expect("sample")).into_owned();
        i += 1;
        let mut lines = text.split('\n').map(|l| l.trim_end_matches(['\r', '\n']));
        let mut number = 0u64;
        while let Some(line) = lines.next() {
            number += 1;
            let directive = line
                .trim_start_matches('#')
                .trim_start()
                .split_once(':')
                .filter(|_| line.starts_with('#'))
                .filter(|(k, _)| {
                    matches!(*k, "failJSON" | "filterOptions" | "fileOptions" | "addFILE")
                });
            let faildata: serde_json::Value;
            let sample: &str;
            if let Some((kind, json)) = directive {
                let value: serde_json::Value = serde_json::from_str(json.trim())
                    .unwrap_or_else(|e| panic!("{name}:{number}: {e}"));
                match kind {
                    "fileOptions" => {
                        common = value.as_object().cloned().unwrap_or_default();
                        continue;
                    }
                    "filterOptions" => {
                        tests.clear();
                        ignore_block = false;
                        let list = match value {
                            serde_json::Value::Array(a) => a,
                            v => vec![v],
                        };
                        for opts in list {
                            let mut merged = common.clone();
                            merged.extend(opts.as_object().cloned().unwrap_or_default());
                            let merged = serde_json::Value::Object(merged);
                            let (opts, cond, prefix) = string_opts(&merged);
                            if let Some(c) = cond {
                                // Conditions other than name=='x' need Python: skip the block.
                                if condition_holds(&c, name) != Some(true) {
                                    ignore_block = true;
                                    continue;
                                }
                            }
                            let key = once(&mut filters, format!("{opts:?}"), || {
                                load(name, &opts).unwrap_or_else(|e| panic!("{name} {opts:?}: {e}"))
                            });
                            tests.push((key, prefix));
                        }
                        continue;
                    }
                    "addFILE" => {
                        let f = value.as_str().unwrap_or_default();
                        files.push(PathBuf::from(SAMPLES).join(f));
                        continue;
                    }
                    _ => {}
                }
                faildata = value;
                number += 1;
                sample = match lines.next() {
                    Some(l) => l,
                    None => break,
                };
            } else if ignore_block || line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                faildata = serde_json::json!({});
                sample = line;
            }
            if ignore_block {
                if directive.is_some() {
                    tally.skipped += 1;
                }
                continue;
            }
            if tests.is_empty() {
                let key = once(&mut filters, "{}".to_string(), || {
                    load(name, &BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"))
                });
                tests.push((key, None));
            }
            for (key, prefix) in &tests {
                let Some(test) = filters.get_mut(key) else {
                    continue;
                };
                let labelled = directive.is_some();
                if labelled && faildata.get("constraint").is_some() {
                    tally.skipped += 1;
                    continue;
                }
                // Journal entries carry no date; the test's journal prefix is prepended.
                let line = match prefix {
                    Some(p) => format!("{p}{sample}"),
                    None => sample.to_string(),
                };
                let r = test.judge.line(number, &line);
                if !labelled {
                    continue;
                }
                let want_match = faildata
                    .get("match")
                    .and_then(|m| m.as_bool())
                    .unwrap_or(false);
                let want_host = faildata.get("host").and_then(|h| h.as_str());
                let got_match = r.result == "matched" || r.unbannable.is_some();
                let host_ok = match (want_host, r.host, &r.unbannable) {
                    (None, ..) => true,
                    (Some(w), Some(ip), _) => w
                        .parse::<IpAddr>()
                        .is_ok_and(|w| jailsink::address::normalise(w) == ip),
                    (Some(w), None, Some(name)) => w == name,
                    (Some(_), None, None) => !want_match,
                };
                let label = if test.key == "{}" {
                    String::new()
                } else {
                    test.key.clone()
                };
                if want_match == got_match && (!want_match || host_ok) {
                    tally.pass += 1;
                    if want_match && r.unbannable.is_some() {
                        tally.unbannable += 1;
                    }
                    // fail2ban compares times of matched lines only (samplestestcase.py).
                    let want_time = faildata.get("time").and_then(|t| t.as_str());
                    if let (true, Some(want)) = (want_match, want_time) {
                        tally.timed += 1;
                        let got = r.time.as_deref();
                        if !times_agree(want, got) {
                            tally.time_mismatches.push(format!(
                                "{name}{label} line {number}: want time {want}, got {got:?}\n    {sample}"
                            ));
                        }
                    }
                } else {
                    tally.fail += 1;
                    tally.failures.push(format!(
                        "{name}{label} line {number}: want match={want_match} host={want_host:?}, got {} host={:?} unbannable={:?}\n    {sample}",
                        r.result,
                        r.host,
                        r.unbannable
                    ));
                }
            }
        }
    }
}

/// samplestestcase.py reads a failJSON `time` as local time in the test's zone (TZ set to
/// `CET-01CEST-02`, Europe/Zurich) and compares it with the epoch fail2ban found. jailsink's
/// `regex` reports a line's local wall-clock time, so the two are compared as local times, to
/// the second (jailsink's report has no fraction).
fn times_agree(want: &str, got: Option<&str>) -> bool {
    let parse = |t: &str| {
        let t = t.split('.').next().unwrap_or(t);
        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok()
    };
    matches!((parse(want), got.and_then(parse)), (Some(w), Some(g)) if w == g)
}

#[test]
fn fail2ban_sample_corpus_agrees() {
    assert!(
        Path::new(FILTERS).join("sshd.conf").is_file(),
        "fail2ban's filters are missing: install the fail2ban package (scripts/test does)"
    );
    let started = std::time::Instant::now();
    let mut names: Vec<String> = std::fs::read_dir(FILTERS)
        .expect("filter.d")
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            let n = n.strip_suffix(".conf")?.to_string();
            (n != "common" && Path::new(SAMPLES).join(&n).is_file()).then_some(n)
        })
        .collect();
    names.sort();
    let mut total = Tally::default();
    for name in &names {
        let mut t = Tally::default();
        run_sample(name, &mut t);
        println!(
            "{name:<28} {:>4}/{:<4} skipped {:<3} dns/id-only {}",
            t.pass,
            t.pass + t.fail,
            t.skipped,
            t.unbannable
        );
        total.pass += t.pass;
        total.fail += t.fail;
        total.skipped += t.skipped;
        total.unbannable += t.unbannable;
        total.failures.extend(t.failures);
        total.timed += t.timed;
        total.time_mismatches.extend(t.time_mismatches);
    }
    for f in &total.failures {
        println!("FAIL {f}");
    }
    for f in &total.time_mismatches {
        println!("TIME {f}");
    }
    let checked = total.pass + total.fail;
    let rate = total.pass as f64 * 100.0 / checked.max(1) as f64;
    println!(
        "fail2ban corpus: {} of {checked} expectations pass ({rate:.1}%), {} skipped (need Python eval), {} matched a DNS name/id jailsink never bans; {} filters, {:.1}s",
        total.pass,
        total.skipped,
        total.unbannable,
        names.len(),
        started.elapsed().as_secs_f64()
    );
    let timed_ok = total.timed - total.time_mismatches.len();
    println!(
        "fail2ban corpus times: {timed_ok} of {} matched lines with a failJSON time agree",
        total.timed
    );
    assert!(checked > 1000, "only {checked} expectations found");
    assert!(rate >= 95.0, "pass rate {rate:.1}% is below 95%");
    // A time mismatch alone does not fail the corpus; together with the match/host results it
    // must stay above the same 95%.
    let overall = (total.pass - total.time_mismatches.len()) as f64 * 100.0 / checked.max(1) as f64;
    assert!(
        overall >= 95.0,
        "pass rate counting time mismatches {overall:.1}% is below 95%"
    );
}
