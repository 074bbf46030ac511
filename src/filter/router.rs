//! Routes a parsed event to the jails that take its program, finding the native failregexes
//! that could match by literal prefix or a literal every match contains (a `RegexSet` pass only
//! for patterns with neither; captures run only for the patterns that hit), and handing the whole event to the jails whose filter
//! is a fail2ban `.conf` filter.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use super::dispatch::Dispatch;
use super::fail2ban::{FailureId, LineState};
use super::session::{self, Sessions};
use super::{FailClass, Filter, FilterMatch, JailFilter, UserName, Verdict};
use crate::parse::{Event, ProcId};

mod explain;
pub(crate) use explain::Explained;

/// What a jail's filter made of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hit {
    /// This many failures of the address count now.
    Failures(FilterMatch, u32),
    /// A successful login from the address: its failures are forgiven.
    Success(std::net::IpAddr),
}

/// A native filter's verdict on an event, before the jail's held failures count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matched {
    /// A failregex (pendingregex, echoregex) of jail number `.0` matched.
    Failure(usize, FilterMatch),
    /// A successregex of jail number `.0` matched.
    Success(usize, std::net::IpAddr),
}

/// What the router needs to know about one jail.
#[derive(Debug, Clone)]
pub(crate) struct JailRoute {
    /// The jail's name, as failures carry it.
    pub name: Arc<str>,
    /// The jail's compiled filter.
    pub filter: JailFilter,
    /// Program names that feed the jail; empty means every event.
    pub programs: Vec<String>,
    /// Host names that feed the jail; empty means every host.
    pub hosts: Vec<String>,
}

/// The work for one program name: the patterns' dispatch and who owns each pattern.
#[derive(Debug, Default, Clone)]
struct Route {
    /// Which patterns could match a message.
    dispatch: Dispatch,
    /// (jail, failregex index, is a successregex) for each pattern, grouped by jail.
    owners: Vec<(usize, usize, bool)>,
    /// Jails whose native filter has a prefregex: checked one by one.
    direct: Vec<usize>,
    /// Jails with a fail2ban filter: each sees the event as a syslog file line.
    fail2ban: Vec<usize>,
}

/// The jails' failregexes, each fine alone, could not be combined into one set (too big).
#[derive(Debug, thiserror::Error)]
#[error("combined failregex set: {0}")]
pub struct RouterError(regex::Error);

/// Program-keyed dispatch of events to jail filters.
#[derive(Debug, Default)]
pub(crate) struct Router {
    jails: Vec<JailRoute>,
    /// Multi-line state of each fail2ban jail (None for native jails); bounded by
    /// `maxlines` and the failure-id cache. Listener tasks share it, hence the lock, taken only
    /// by fail2ban jails and only for one line's matching.
    states: Vec<Option<Mutex<LineState>>>,
    /// Held failures of each native jail whose filter holds some (pendingregex, echoregex);
    /// the lock is taken only for lines such a filter matched.
    /// Shared with the router a reload replaces this one by, for each jail whose filter the
    /// reload left as it was ([`Router::keep_held_from`]).
    sessions: Vec<Option<Arc<Mutex<Sessions>>>>,
    /// Looked up once per message: foldhash rather than SipHash (program names are not a
    /// flooding risk here: the table is fixed at build, a miss costs one hash). Keyed by
    /// the name's bytes, so a 3164 header's tag is looked up without a UTF-8 check
    /// ([`Router::wants`]).
    by_program: HashMap<Box<[u8]>, Route, foldhash::fast::RandomState>,
    fallback: Route,
    /// True when some jail has a fail2ban filter: without one, [`Router::apply`] needs no
    /// route (its verdicts name their jails).
    any_fail2ban: bool,
}

impl Router {
    /// Takes over the held failures of `old` (the router a reload replaces) for every jail
    /// whose filter is the same in both: a reload, even one that changed nothing, would
    /// otherwise drop sshd's held `Failed publickey` lines uncounted. A jail whose filter
    /// changed starts a table of its own.
    pub(crate) fn keep_held_from(&mut self, old: &Router) {
        for (jail, held) in self.jails.iter().zip(self.sessions.iter_mut()) {
            let (JailFilter::Native(filter), Some(_)) = (&jail.filter, &held) else {
                continue;
            };
            let kept = old.jails.iter().zip(&old.sessions).find_map(|(o, table)| {
                match (&o.filter, table) {
                    (JailFilter::Native(f), Some(table))
                        if o.name == jail.name && f.source() == filter.source() =>
                    {
                        Some(table.clone())
                    }
                    _ => None,
                }
            });
            if let Some(table) = kept {
                *held = Some(table);
            }
        }
    }

    /// Builds one route per program named by any jail, plus one for every other program.
    pub(crate) fn new(jails: Vec<JailRoute>) -> Result<Router, RouterError> {
        let mut programs: Vec<&str> = jails
            .iter()
            .flat_map(|j| j.programs.iter().map(String::as_str))
            .collect();
        programs.sort_unstable();
        programs.dedup();
        let mut by_program = HashMap::default();
        for program in programs {
            let members = (0..jails.len()).filter(|&i| {
                jails[i].programs.is_empty() || jails[i].programs.iter().any(|p| p == program)
            });
            by_program.insert(program.as_bytes().into(), build_route(&jails, members)?);
        }
        let fallback = build_route(
            &jails,
            (0..jails.len()).filter(|&i| jails[i].programs.is_empty()),
        )?;
        let states = jails
            .iter()
            .map(|j| match j.filter {
                JailFilter::Fail2ban(_) => Some(Mutex::new(LineState::default())),
                JailFilter::Native(_) => None,
            })
            .collect();
        let sessions = jails
            .iter()
            .map(|j| match &j.filter {
                JailFilter::Native(f) if f.holds_failures() => {
                    Some(Arc::new(Mutex::new(Sessions::new(
                        f.source().session_ttl.unwrap_or(session::DEFAULT_TTL),
                        session::DEFAULT_CAP,
                    ))))
                }
                _ => None,
            })
            .collect();
        let any_fail2ban = jails
            .iter()
            .any(|j| matches!(j.filter, JailFilter::Fail2ban(_)));
        Ok(Router {
            states,
            sessions,
            jails,
            by_program,
            fallback,
            any_fail2ban,
        })
    }

    /// A copy for one matching thread: the same jails and routes with regexes of its own.
    /// The regex crate gives a regex's scratch space cheaply only to the first thread that
    /// uses it; any other takes it from a shared pool each search (3% of a TCP worker's time
    /// with two workers). Only [`Router::matches`] may use the copy: its held-failure and
    /// multi-line tables are empty and not shared.
    pub(crate) fn matcher_copy(&self) -> Router {
        let jails = self
            .jails
            .iter()
            .map(|j| JailRoute {
                filter: match &j.filter {
                    // Cloning a regex gives it a scratch-space pool of its own.
                    JailFilter::Native(f) => JailFilter::Native(Arc::new(Filter::clone(f))),
                    other => other.clone(),
                },
                ..j.clone()
            })
            .collect::<Vec<_>>();
        // Empty tables (never shared), one per jail so no index can fail.
        Router {
            states: jails.iter().map(|_| None).collect(),
            sessions: jails.iter().map(|_| None).collect(),
            jails,
            by_program: self.by_program.clone(),
            fallback: self.fallback.clone(),
            any_fail2ban: self.any_fail2ban,
        }
    }

    /// The name of jail number `jail`, as [`Router::route`] numbers them.
    pub(crate) fn name(&self, jail: usize) -> &Arc<str> {
        &self.jails[jail].name
    }

    /// How many jails the router numbers.
    pub(crate) fn len(&self) -> usize {
        self.jails.len()
    }

    /// True when no jail could take any event (nothing to do per message).
    pub(crate) fn is_empty(&self) -> bool {
        self.jails.is_empty()
    }

    /// Calls `on_hit(jail, hit)` for every jail that finds a failure or a success in `event`.
    #[cfg(test)]
    pub(crate) fn route(&self, event: &Event<'_>, on_hit: impl FnMut(usize, Hit)) {
        let mut matched = Vec::new();
        self.matches(event, &mut matched);
        self.apply(event, matched, on_hit);
    }

    /// The native filters' verdicts on `event`, in the order [`Router::apply`] takes them:
    /// the stateless part of [`Router::route`] (no session or multi-line state is read or
    /// changed), so events can be matched in parallel and applied in their order. True when
    /// [`Router::apply`] has anything to do (a verdict, or a fail2ban jail on the route).
    pub(crate) fn matches(&self, event: &Event<'_>, out: &mut Vec<Matched>) -> bool {
        let (program, hostname, message) = (event.program, event.hostname, event.message);
        let route = self.route_of(program);
        let first = out.len();
        let mut decided: Option<usize> = None;
        let try_pattern = |index: usize, loose: bool| {
            let (jail, regex, success) = route.owners[index];
            if decided == Some(jail) || !self.takes_host(jail, hostname) {
                return;
            }
            let JailFilter::Native(filter) = &self.jails[jail].filter else {
                return;
            };
            if loose && filter.gated(regex, success) && !filter.could_match(regex, success, message)
            {
                return;
            }
            if success {
                if let Some(ip) = filter.success_for(regex, message) {
                    decided = Some(jail);
                    out.push(Matched::Success(jail, ip));
                }
                return;
            }
            match filter.verdict_for(regex, message) {
                Some(Verdict::Failure(m)) => {
                    decided = Some(jail);
                    out.push(Matched::Failure(jail, m));
                }
                Some(_) => decided = Some(jail),
                None => {}
            }
        };
        route.dispatch.candidates(message, try_pattern);
        for &jail in &route.direct {
            if self.takes_host(jail, hostname) {
                if let JailFilter::Native(filter) = &self.jails[jail].filter {
                    if let Verdict::Failure(m) = filter.check(message) {
                        out.push(Matched::Failure(jail, m));
                    } else if let Some(ip) = filter.success(message) {
                        out.push(Matched::Success(jail, ip));
                    }
                }
            }
        }
        out.len() > first || !route.fail2ban.is_empty()
    }

    /// False when no jail could take an event of `program`: its route has no pattern, no
    /// jail checked directly and no fail2ban jail, so [`Router::matches`] finds nothing,
    /// [`Router::apply`] does nothing and [`Router::explain`] names no jail, whatever the
    /// message says.
    pub(crate) fn wants(&self, program: Option<&[u8]>) -> bool {
        let route = self.route_named(program);
        !(route.owners.is_empty() && route.direct.is_empty() && route.fail2ban.is_empty())
    }

    /// The route of a program name.
    fn route_of(&self, program: Option<&str>) -> &Route {
        self.route_named(program.map(str::as_bytes))
    }

    /// The route of a program name, by its bytes.
    fn route_named(&self, program: Option<&[u8]>) -> &Route {
        program
            .and_then(|p| self.by_program.get(p))
            .unwrap_or(&self.fallback)
    }

    /// Counts what [`Router::matches`] found in `event` through the jails' held failures, and
    /// runs the fail2ban jails (their multi-line state): the part of [`Router::route`] whose
    /// outcome depends on the order of events.
    pub(crate) fn apply(
        &self,
        event: &Event<'_>,
        matched: impl IntoIterator<Item = Matched>,
        mut on_hit: impl FnMut(usize, Hit),
    ) {
        for found in matched {
            match found {
                Matched::Failure(jail, m) => {
                    if let JailFilter::Native(filter) = &self.jails[jail].filter {
                        self.native_failure(jail, filter, event, m, &mut on_hit);
                    }
                }
                Matched::Success(jail, ip) => self.native_success(jail, event, ip, &mut on_hit),
            }
        }
        if !self.any_fail2ban {
            return;
        }
        let hostname = event.hostname;
        let route = self.route_of(event.program);
        if route.fail2ban.is_empty() {
            return;
        }
        let line = syslog_line(event);
        for &jail in &route.fail2ban {
            if !self.takes_host(jail, hostname) {
                continue;
            }
            let (JailFilter::Fail2ban(filter), Some(state)) =
                (&self.jails[jail].filter, &self.states[jail])
            else {
                continue;
            };
            // A poisoned lock only means another listener panicked mid-line; the state is
            // still a valid (bounded) buffer and cache, so keep using it.
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            let verdict = filter.process(&mut state, &line);
            drop(state);
            if let Some(found) = verdict.failure() {
                // A DNS name or a non-address <F-ID> is never resolved, so never banned.
                if let Some(FailureId::Addr(ip)) = found.id {
                    on_hit(
                        jail,
                        Hit::Failures(
                            FilterMatch {
                                ip,
                                regex: found.regex,
                                user: found.user.as_deref().map(UserName::from),
                            },
                            event.repeat,
                        ),
                    );
                }
            }
        }
    }

    /// A native failure: counted at once, or through the jail's held failures.
    fn native_failure(
        &self,
        jail: usize,
        filter: &Filter,
        event: &Event<'_>,
        m: FilterMatch,
        on_hit: &mut impl FnMut(usize, Hit),
    ) {
        let Some(sessions) = &self.sessions[jail] else {
            let repeat = event.repeat;
            on_hit(jail, Hit::Failures(m, repeat));
            return;
        };
        let mut released = Vec::new();
        // A poisoned lock only means another listener panicked mid-line; the table is still
        // a valid bounded map.
        let mut table = sessions.lock().unwrap_or_else(|p| p.into_inner());
        let class = filter.class_of(m.regex);
        // A counted failure with nothing held anywhere needs no key (the common case).
        let key = if class == FailClass::Count && table.is_empty() {
            None
        } else {
            table.key(event.hostname, event.pid.as_ref(), m.ip)
        };
        let now = std::time::Instant::now();
        let count = table.failure(key, m.ip, class, event.repeat, now, &mut released);
        drop(table);
        release(jail, released, on_hit);
        if count > 0 {
            on_hit(jail, Hit::Failures(m, count));
        }
    }

    /// A native success: held failures of its connection are dropped, and the jail forgives.
    fn native_success(
        &self,
        jail: usize,
        event: &Event<'_>,
        ip: std::net::IpAddr,
        on_hit: &mut impl FnMut(usize, Hit),
    ) {
        if let Some(sessions) = &self.sessions[jail] {
            let mut released = Vec::new();
            let mut table = sessions.lock().unwrap_or_else(|p| p.into_inner());
            let key = table.key(event.hostname, event.pid.as_ref(), ip);
            table.success(key, std::time::Instant::now(), &mut released);
            drop(table);
            release(jail, released, on_hit);
        }
        on_hit(jail, Hit::Success(ip));
    }

    fn takes_host(&self, jail: usize, hostname: Option<&str>) -> bool {
        let hosts = &self.jails[jail].hosts;
        hosts.is_empty()
            || hostname.is_some_and(|h| hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
    }
}

/// Counts what forgotten connections held.
fn release(
    jail: usize,
    released: Vec<(std::net::IpAddr, u32)>,
    on_hit: &mut impl FnMut(usize, Hit),
) {
    for (ip, count) in released {
        if count > 0 {
            let m = FilterMatch {
                ip,
                regex: usize::MAX,
                user: None,
            };
            on_hit(jail, Hit::Failures(m, count));
        }
    }
}

fn build_route(
    jails: &[JailRoute],
    members: impl Iterator<Item = usize>,
) -> Result<Route, RouterError> {
    let mut route = Route::default();
    let mut patterns: Vec<&str> = Vec::new();
    for jail in members {
        let filter = match &jails[jail].filter {
            JailFilter::Native(f) => f,
            JailFilter::Fail2ban(_) => {
                route.fail2ban.push(jail);
                continue;
            }
        };
        if filter.has_prefregex() {
            route.direct.push(jail);
            continue;
        }
        for (regex, text) in filter.fail_patterns().iter().enumerate() {
            patterns.push(text);
            route.owners.push((jail, regex, false));
        }
        for (regex, text) in filter.success_patterns().iter().enumerate() {
            patterns.push(text);
            route.owners.push((jail, regex, true));
        }
    }
    route.dispatch = Dispatch::new(&patterns).map_err(RouterError)?;
    Ok(route)
}

/// The event as fail2ban reads it from a syslog file once the date is cut out:
/// ` HOSTNAME PROGRAM[PID]: MESSAGE` (the leading space is where the date was).
pub(crate) fn syslog_line(event: &Event<'_>) -> String {
    let mut line = String::with_capacity(event.message.len() + 64);
    if let Some(host) = event.hostname {
        line.push(' ');
        line.push_str(host);
    }
    if let Some(program) = event.program {
        line.push(' ');
        line.push_str(program);
        match &event.pid {
            Some(ProcId::PID(pid)) => {
                let _ = write!(line, "[{pid}]");
            }
            Some(ProcId::Name(name)) => {
                let _ = write!(line, "[{name}]");
            }
            None => {}
        }
        line.push(':');
    }
    line.push(' ');
    line.push_str(event.message);
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{Filter, FilterSource};
    use std::sync::Arc;

    fn jail(fail: &str, programs: &[&str], hosts: &[&str]) -> JailRoute {
        JailRoute {
            name: Arc::from("test"),
            filter: JailFilter::Native(Arc::new(
                Filter::compile(&FilterSource {
                    failregex: vec![fail.to_string()],
                    ..Default::default()
                })
                .unwrap(),
            )),
            programs: programs.iter().map(|s| s.to_string()).collect(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn failures(
        router: &Router,
        program: Option<&str>,
        host: Option<&str>,
        msg: &str,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let event = Event {
            timestamp: None,
            hostname: host,
            program,
            pid: None,
            message: msg,
            repeat: 1,
        };
        router.route(&event, |jail, _| out.push(jail));
        out
    }

    #[test]
    fn routes_by_program_and_host() {
        let router = Router::new(vec![
            jail(r"^bad <HOST>$", &["sshd"], &[]),
            jail(r"^bad <HOST>$", &["sendmail"], &[]),
            jail(r"^bad <HOST>$", &[], &["web1"]),
        ])
        .unwrap();
        assert_eq!(
            failures(&router, Some("sshd"), Some("vm"), "bad 192.0.2.1"),
            [0]
        );
        assert_eq!(
            failures(&router, Some("sshd"), Some("WEB1"), "bad 192.0.2.1"),
            [0, 2]
        );
        assert_eq!(
            failures(&router, Some("nginx"), Some("web1"), "bad 192.0.2.1"),
            [2]
        );
        assert!(failures(&router, None, None, "bad 192.0.2.1").is_empty());
    }

    /// Every shipped filter (in every mode it declares) as a jail of its own, all fed every
    /// program, so one combined
    /// dispatch holds every pattern: the router's verdicts on every fail2ban sample and sshd
    /// fixture line (parsed as the daemon parses it, or whole when it has no syslog header)
    /// are each jail's by the definition ([`Filter::reference_check`], then
    /// [`Filter::reference_success`] when it missed): no pattern skipped by the dispatch, none
    /// tried out of order.
    #[test]
    fn the_combined_dispatch_gives_every_jail_the_verdict_of_its_definition() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<_> = std::fs::read_dir(root.join("conf/filter.d"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let jail = |name: String, source: &FilterSource| JailRoute {
            name: Arc::from(name.as_str()),
            filter: JailFilter::Native(Arc::new(Filter::compile(source).unwrap())),
            programs: Vec::new(),
            hosts: Vec::new(),
        };
        let mut jails = Vec::new();
        for path in &names {
            let raw: crate::config::raw::RawFilter = crate::config::read_toml(path).unwrap();
            let others = raw
                .modes
                .keys()
                .map(String::as_str)
                .filter(|m| *m != "normal");
            for mode in std::iter::once("normal").chain(others) {
                // As a jail gets it: held and success patterns included.
                let source = crate::config::filter_file::read_native(path, Some(mode)).unwrap();
                let stem = path.file_stem().unwrap().to_string_lossy();
                jails.push(jail(format!("{stem} ({mode})"), &source));
            }
        }
        // The shipped config's inline pattern (conf/jailsink.toml).
        let smtp = FilterSource {
            failregex: vec![r"AUTH failure \(\w+\): authentication failure \(-13\) SASL\(-13\): authentication failure: .*relay=.*\[<HOST>\]".into()],
            ..Default::default()
        };
        jails.push(jail("smtp-auth".into(), &smtp));
        assert!(jails.len() >= 20, "{} shipped filters", jails.len());
        let router = Router::new(jails.clone()).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(root.join("tests/fixtures/fail2ban-logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.extend(
            ["attacks.log", "benign.log"].map(|f| root.join("tests/fixtures/sshd").join(f)),
        );
        let zone = crate::parse::Zone::parse("UTC").unwrap();
        let now = chrono::Utc::now();
        let (mut lines, mut failures, mut successes) = (0, 0, 0);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            {
                let event = crate::parse::parse(line, &zone, now).unwrap_or(Event {
                    timestamp: None,
                    hostname: None,
                    program: None,
                    pid: None,
                    message: line.trim(),
                    repeat: 1,
                });
                let mut got = Vec::new();
                router.matches(&event, &mut got);
                got.sort_by_key(|m| match m {
                    Matched::Failure(j, _) | Matched::Success(j, _) => *j,
                });
                let want: Vec<Matched> = jails
                    .iter()
                    .enumerate()
                    .filter_map(|(j, jail)| {
                        let JailFilter::Native(f) = &jail.filter else {
                            return None;
                        };
                        match f.reference_check(event.message) {
                            crate::filter::Verdict::Failure(m) => Some(Matched::Failure(j, m)),
                            crate::filter::Verdict::Ignored(_) => None,
                            crate::filter::Verdict::Missed => f
                                .reference_success(event.message)
                                .map(|ip| Matched::Success(j, ip)),
                        }
                    })
                    .collect();
                assert_eq!(got, want, "{}: {line:?}", file.display());
                lines += 1;
                failures += want
                    .iter()
                    .filter(|m| matches!(m, Matched::Failure(..)))
                    .count();
                successes += want
                    .iter()
                    .filter(|m| matches!(m, Matched::Success(..)))
                    .count();
            }
        }
        assert!(
            lines > 600 && failures > 300 && successes > 0,
            "{lines} lines, {failures} failures, {successes} successes"
        );
    }

    #[test]
    fn one_failure_per_jail_even_when_two_patterns_hit() {
        let mut j = jail(r"^bad <HOST>", &["sshd"], &[]);
        j.filter = JailFilter::Native(Arc::new(
            Filter::compile(&FilterSource {
                failregex: vec![r"^bad <HOST>".into(), r"<HOST>$".into()],
                ..Default::default()
            })
            .unwrap(),
        ));
        let router = Router::new(vec![j]).unwrap();
        assert_eq!(failures(&router, Some("sshd"), None, "bad 192.0.2.1"), [0]);
    }
}
