//! The control protocol in the jail task's words and back: requests become [`Query`]s (with
//! their addresses parsed here, at the edge), answers become [`Response`]s.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use super::proto::{BanEntry, JailStatus, Reply, Request, Response};
use crate::address::{parse_address, parse_target, show_target, NotAnAddress};
use crate::jail::query::{Answer, Query, Refused};

/// A request that is not a question for the jail task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotAQuery {
    /// The address given is not one.
    #[error(transparent)]
    Address(#[from] NotAnAddress),
    /// `unban` needs exactly one of an address and `--all`.
    #[error("give an address, or --all")]
    AddressOrAll,
    /// `reload` is answered by the supervisor.
    #[error("reload is handled by the supervisor")]
    Reload,
}

/// The query for a request the jail task answers; `Reload` is the supervisor's, not the jail's.
pub(crate) fn query(request: Request) -> Result<Query, NotAQuery> {
    match request {
        Request::Status { jail } => Ok(Query::Status { jail }),
        Request::Banned { jail } => Ok(Query::Banned { jail }),
        Request::Ban { jail, addr } => {
            let ip = parse_address(&addr)?;
            Ok(Query::Ban { jail, ip })
        }
        Request::Unban { jail, addr, all } => match (addr, all) {
            (Some(addr), false) => {
                let target = parse_target(&addr)?;
                Ok(Query::Unban {
                    jail,
                    target: Some(target),
                })
            }
            (None, true) => Ok(Query::Unban { jail, target: None }),
            _ => Err(NotAQuery::AddressOrAll),
        },
        Request::Reload => Err(NotAQuery::Reload),
    }
}

/// The protocol's response for the jail task's answer.
pub(crate) fn response(answer: Result<Answer, Refused>) -> Response {
    let reply = match answer {
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
            bans: bans
                .into_iter()
                .map(|b| BanEntry {
                    jail: b.jail,
                    ip: show_target(b.target),
                    banned_at: rfc3339(b.banned_at),
                    expires_at: b.expires_at.map(rfc3339),
                    ban_count: b.ban_count,
                    origin: String::new(),
                })
                .collect(),
        },
        Ok(Answer::Done(message)) => Reply::Done { message },
    };
    Response::Ok { reply }
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_at_the_edge() {
        let bad = Request::Ban {
            jail: "sshd".into(),
            addr: "example.org".into(),
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
        let mapped = Request::Ban {
            jail: "sshd".into(),
            addr: "::ffff:192.0.2.1".into(),
        };
        assert_eq!(
            query(mapped),
            Ok(Query::Ban {
                jail: "sshd".into(),
                ip: "192.0.2.1".parse().unwrap()
            })
        );
    }
}
