//! The control protocol in the jail task's words and back: requests become [`Query`]s (with
//! their addresses parsed here, at the edge), answers become [`Response`]s.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};

use super::proto::{
    BanEntry, EvidenceLine, JailStatus, LineNote, ListLine, ListSummary, Reply, Request, Response,
    WhyBan, WhyJail,
};
use crate::address::{parse_named, show_target, Named, NotAnAddress};
use crate::evidence::Line;
use crate::jail::query::{Answer, BanInfo, Query, Refused, Why};

/// A request in the jail task's words, with the lines of a list that were not addresses (the
/// jail never sees them; the response reports them).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Translated {
    /// What the jail task is asked.
    pub query: Query,
    /// List lines that are not an address or network.
    pub invalid: Vec<LineNote>,
}

impl From<Query> for Translated {
    fn from(query: Query) -> Self {
        Translated {
            query,
            invalid: Vec::new(),
        }
    }
}

/// A request that is not a question for the jail task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotAQuery {
    /// The address given is not one.
    #[error(transparent)]
    Address(#[from] NotAnAddress),
    /// `unban` needs exactly one of an address and `--all`.
    #[error("give an address, or --all")]
    AddressOrAll,
    /// `--bantime` is not a duration.
    #[error("bantime `{0}` is not a duration like 10m, 1h 30m or permanent")]
    Bantime(String),
    /// `--bantime` past [`crate::duration::LONGEST`].
    #[error("bantime `{0}` is longer than 100 years (write permanent for a ban that never ends)")]
    BantimeTooLong(String),
    /// `--bantime 0` would ban nothing.
    #[error("a bantime of zero bans nothing")]
    ZeroBantime,
    /// `reload` is answered by the supervisor.
    #[error("reload is handled by the supervisor")]
    Reload,
    /// `tail` is a stream, served by the control server itself.
    #[error("tail is a stream, served by the control server")]
    Tail,
}

/// The query for a request the jail task answers; `Reload` is the supervisor's, not the jail's.
pub(crate) fn query(request: Request) -> Result<Translated, NotAQuery> {
    let query = match request {
        Request::BanList {
            jail,
            lines,
            bantime,
        } => {
            let bantime = parse_bantime(bantime.as_deref())?;
            let (targets, invalid) = parse_lines(lines);
            return Ok(Translated {
                query: Query::BanMany {
                    jail,
                    targets,
                    bantime,
                },
                invalid,
            });
        }
        Request::UnbanList { jail, lines } => {
            let (targets, invalid) = parse_lines(lines);
            return Ok(Translated {
                query: Query::UnbanMany { jail, targets },
                invalid,
            });
        }
        Request::Status { jail } => Query::Status { jail },
        Request::Banned { jail } => Query::Banned { jail },
        Request::Ban {
            jail,
            addr,
            bantime,
        } => Query::Ban {
            jail,
            target: parse_named(&addr)?,
            bantime: parse_bantime(bantime.as_deref())?,
        },
        Request::Unban { jail, addr, all } => match (addr, all) {
            (Some(addr), false) => Query::Unban {
                jail,
                target: Some(parse_named(&addr)?),
            },
            (None, true) => Query::Unban { jail, target: None },
            _ => return Err(NotAQuery::AddressOrAll),
        },
        Request::Reload => return Err(NotAQuery::Reload),
        Request::Tail { .. } => return Err(NotAQuery::Tail),
        Request::Why { addr } => Query::Why {
            ip: crate::address::parse_address(&addr)?,
        },
    };
    Ok(query.into())
}

/// The targets of a list with their line numbers, and the lines that are not targets.
fn parse_lines(lines: Vec<ListLine>) -> (Vec<(u32, Named)>, Vec<LineNote>) {
    let mut targets = Vec::with_capacity(lines.len());
    let mut invalid = Vec::new();
    for ListLine { line, text } in lines {
        match parse_named(&text) {
            Ok(target) => targets.push((line, target)),
            Err(error) => invalid.push(LineNote {
                line,
                reason: error.to_string(),
            }),
        }
    }
    (targets, invalid)
}

/// `--bantime`: None keeps the jail's; `permanent` (or -1) is Some(None); else a duration in
/// seconds or humantime's words (`1h 30m`).
fn parse_bantime(text: Option<&str>) -> Result<Option<Option<Duration>>, NotAQuery> {
    let Some(text) = text.map(str::trim) else {
        return Ok(None);
    };
    match crate::duration::parse(text) {
        Ok(None) => Ok(Some(None)),
        Ok(Some(d)) if !d.is_zero() => Ok(Some(Some(d))),
        Ok(Some(_)) => Err(NotAQuery::ZeroBantime),
        Err(crate::duration::DurationError::TooLong) => {
            Err(NotAQuery::BantimeTooLong(text.to_string()))
        }
        Err(crate::duration::DurationError::Words(_)) => Err(NotAQuery::Bantime(text.to_string())),
    }
}

/// The protocol's response for the jail task's answer, with the list lines that were invalid.
pub(crate) fn response(
    answer: Result<Answer, Refused>,
    invalid: Vec<LineNote>,
    node: &str,
) -> Response {
    let note = |(line, reason)| LineNote { line, reason };
    let reply = match answer {
        Ok(Answer::Applied(applied)) => Reply::Applied(ListSummary {
            done: applied.done,
            unchanged: applied.unchanged.into_iter().map(note).collect(),
            ignored: applied.ignored.into_iter().map(note).collect(),
            invalid,
        }),
        Err(Refused(message)) => return Response::Error { message },
        Ok(Answer::Jails(jails)) => Reply::Jails { jails },
        Ok(Answer::Status(counts)) => Reply::JailStatus(JailStatus {
            jail: counts.jail,
            currently_failed: counts.currently_failed,
            total_failed: counts.total_failed,
            currently_banned: counts.banned.len() as u64,
            total_banned: counts.total_banned,
            banned: counts.banned.into_iter().map(show_target).collect(),
        }),
        Ok(Answer::Bans(bans)) => Reply::Banned {
            bans: bans.into_iter().map(|b| entry(b, node)).collect(),
        },
        Ok(Answer::Done(message)) => Reply::Done { message },
        Ok(Answer::Why(jails)) => Reply::Why {
            jails: jails.into_iter().map(why_jail).collect(),
        },
    };
    Response::Ok { reply }
}

/// One active ban as `banned --json` and `/bans.json` show it; `node` is this node's name, the
/// origin of every ban its jails decided.
pub(crate) fn entry(b: BanInfo, node: &str) -> BanEntry {
    BanEntry {
        jail: b.jail,
        ip: show_target(b.target),
        banned_at: rfc3339(b.banned_at),
        expires_at: b.expires_at.map(rfc3339),
        ban_count: b.ban_count,
        origin: node.to_string(),
        hosts: b.hosts,
    }
}

/// One jail's `why` in the protocol's words.
fn why_jail(why: Why) -> WhyJail {
    let lines = |lines: Vec<Line>| lines.into_iter().map(evidence_line).collect();
    WhyJail {
        jail: why.jail,
        counted_as: show_target(why.key),
        failures: why.failures,
        maxretry: why.maxretry,
        recent: lines(why.recent),
        active: why
            .active
            .into_iter()
            .map(|a| WhyBan {
                ip: show_target(a.ban.target),
                banned_at: rfc3339(a.ban.banned_at),
                expires_at: a.ban.expires_at.map(rfc3339),
                bantime: None,
                ban_count: Some(a.ban.ban_count),
                failures: a.failures,
                hosts: a.ban.hosts,
                evidence: lines(a.evidence),
            })
            .collect(),
        past: why
            .past
            .into_iter()
            .map(|p| WhyBan {
                ip: show_target(p.target),
                banned_at: rfc3339(p.banned_at),
                expires_at: None,
                bantime: Some(crate::state::show_bantime(
                    p.bantime.map(Duration::from_secs),
                )),
                ban_count: None,
                failures: p.failures,
                hosts: p.hosts,
                evidence: lines(p.evidence),
            })
            .collect(),
    }
}

/// An evidence line with its time in RFC 3339.
fn evidence_line(line: Line) -> EvidenceLine {
    EvidenceLine {
        at: DateTime::<Utc>::from_timestamp_millis(line.at_ms)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default(),
        host: line.host,
        program: line.program,
        message: line.message,
        count: line.count,
    }
}

/// A wall-clock time as the CLI and `banned --json` show it.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    // A time chrono cannot show (a state.db edited by hand) is shown as seconds, not a panic.
    DateTime::<Utc>::from_timestamp(secs, 0).map_or_else(
        || format!("@{secs}"),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_at_the_edge() {
        let bad = Request::Ban {
            jail: "sshd".into(),
            addr: "example.org".into(),
            bantime: None,
        };
        assert_eq!(
            query(bad).map_err(|e| e.to_string()),
            Err("`example.org` is not an IP address".into())
        );
        let neither = Request::Unban {
            jail: None,
            addr: None,
            all: false,
        };
        assert_eq!(
            query(neither).map_err(|e| e.to_string()),
            Err("give an address, or --all".into())
        );
        let net = Request::Ban {
            jail: "sshd".into(),
            addr: "198.51.100.0/24".into(),
            bantime: Some("1h".into()),
        };
        assert_eq!(
            query(net),
            Ok(Query::Ban {
                jail: "sshd".into(),
                target: "198.51.100.0/24".parse().unwrap(),
                bantime: Some(Some(Duration::from_secs(3600))),
            }
            .into())
        );
    }

    #[test]
    fn list_lines_that_are_not_targets_are_reported_by_number() {
        let line = |line, text: &str| ListLine {
            line,
            text: text.into(),
        };
        let list = Request::BanList {
            jail: "sshd".into(),
            lines: vec![
                line(2, "192.0.2.1"),
                line(5, "bogus"),
                line(7, "2001:db8::/48"),
            ],
            bantime: Some("permanent".into()),
        };
        let Translated { query: q, invalid } = query(list).unwrap();
        assert_eq!(
            q,
            Query::BanMany {
                jail: "sshd".into(),
                targets: vec![
                    (2, "192.0.2.1".parse().unwrap()),
                    (7, "2001:db8::/48".parse().unwrap())
                ],
                bantime: Some(None),
            }
        );
        assert_eq!(
            invalid,
            [LineNote {
                line: 5,
                reason: "`bogus` is not an IP address".into()
            }]
        );
        assert!(parse_bantime(Some("soon")).is_err());
        assert!(parse_bantime(Some("0")).is_err());
        for too_long in ["18446744073709551615", "1000000y"] {
            let refused = parse_bantime(Some(too_long)).unwrap_err();
            assert!(
                matches!(refused, NotAQuery::BantimeTooLong(_)),
                "{too_long}"
            );
            assert!(refused.to_string().contains("permanent"));
        }
    }

    #[test]
    fn a_time_chrono_cannot_show_is_shown_as_seconds() {
        let far = std::time::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        assert_eq!(rfc3339(far), format!("@{}", i64::MAX));
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
