//! The control protocol, one definition for the daemon and the CLI: one JSON request line in,
//! one JSON response line out, then the connection closes.

use serde::{Deserialize, Serialize};

/// The largest request line the daemon reads.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What the CLI asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The jail list, or one jail's counts.
    Status {
        /// One jail, or all.
        jail: Option<String>,
    },
    /// Ban an address or a network by hand.
    Ban {
        /// The jail.
        jail: String,
        /// An address, or a network in CIDR notation.
        addr: String,
        /// Replaces the jail's bantime: `1h`, `3600`, `permanent`; None keeps the jail's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bantime: Option<String>,
    },
    /// Ban the addresses and networks of a list (one chunk of a file; the CLI sends a long file
    /// as several requests, each under [`MAX_REQUEST_BYTES`]).
    BanList {
        /// The jail.
        jail: String,
        /// The file's lines that are not blank or comments, with their numbers.
        lines: Vec<ListLine>,
        /// As for `Ban`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bantime: Option<String>,
    },
    /// Lift the bans of a list in one jail (one chunk of a file).
    UnbanList {
        /// The jail.
        jail: String,
        /// The file's lines that are not blank or comments, with their numbers.
        lines: Vec<ListLine>,
    },
    /// Lift one ban, or every ban.
    Unban {
        /// The jail; None with an address means every jail.
        jail: Option<String>,
        /// The address; None with `all`.
        addr: Option<String>,
        /// Every ban of every jail (or of `jail`).
        all: bool,
    },
    /// Active bans.
    Banned {
        /// One jail, or all.
        jail: Option<String>,
    },
    /// Re-read the config.
    Reload,
    /// Why an address is or was banned, per jail.
    Why {
        /// The address.
        addr: String,
    },
    /// Stream every message routed to the jails (or one jail) with what became of it, and
    /// every ban and unban: one JSON [`TailEvent`] per line until the client hangs up.
    Tail {
        /// One jail, or all.
        jail: Option<String>,
    },
}

/// One line of the `tail` stream.
pub use crate::evidence::tail::Event as TailEvent;

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Done; `reply` says what came of it.
    Ok {
        /// The answer.
        reply: Reply,
    },
    /// Refused or failed; the message says why.
    Error {
        /// For the operator.
        message: String,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Jail names.
    Jails {
        /// In config order.
        jails: Vec<String>,
    },
    /// One jail's counts.
    JailStatus(JailStatus),
    /// Active bans.
    Banned {
        /// Oldest first.
        bans: Vec<BanEntry>,
    },
    /// A command that changed something.
    Done {
        /// What happened, for the operator.
        message: String,
    },
    /// What a list ban or unban did, by line.
    Applied(ListSummary),
    /// `why ADDR`: every jail that counts, bans or once banned the address.
    Why {
        /// The jails, in config order.
        jails: Vec<WhyJail>,
    },
}

/// One jail's part of `why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyJail {
    /// The jail.
    pub jail: String,
    /// What the jail counts the address as: itself, or its prefix network.
    pub counted_as: String,
    /// Failures counted now, inside findtime.
    pub failures: u32,
    /// The jail's maxretry.
    pub maxretry: u32,
    /// The lines of those failures the jail still holds.
    pub recent: Vec<EvidenceLine>,
    /// Active bans of the address or of networks holding it.
    pub active: Vec<WhyBan>,
    /// Past bans, newest first.
    pub past: Vec<WhyBan>,
}

/// A ban as `why` shows it, active or past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyBan {
    /// The address or network banned.
    pub ip: String,
    /// RFC 3339.
    pub banned_at: String,
    /// RFC 3339 end of an active ban; null when permanent or past.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// A past ban's length (`10m`, `permanent`); null for active bans.
    #[serde(default)]
    pub bantime: Option<String>,
    /// Offence number (active bans).
    #[serde(default)]
    pub ban_count: Option<u32>,
    /// Failures that led to it.
    pub failures: u32,
    /// Syslog host names the deciding failures came from.
    pub hosts: Vec<String>,
    /// The deciding lines, oldest first.
    pub evidence: Vec<EvidenceLine>,
}

/// One line of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLine {
    /// Receipt time, RFC 3339 with milliseconds.
    pub at: String,
    /// The syslog host name.
    pub host: Option<String>,
    /// The syslog program.
    pub program: Option<String>,
    /// The message (cut at 512 bytes).
    pub message: String,
    /// Failures it stood for (1 unless an rsyslog repeat summary).
    pub count: u32,
}

/// One line of a ban list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListLine {
    /// Its number in the file, from 1.
    pub line: u32,
    /// The address or network, as written.
    pub text: String,
}

/// One line of a list that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineNote {
    /// Its number in the file.
    pub line: u32,
    /// Why, for the operator.
    pub reason: String,
}

/// What became of a list: how many lines were applied, and each line that was not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSummary {
    /// Lines banned (or unbanned).
    pub done: u64,
    /// Lines already banned (or, unbanning, not banned).
    pub unchanged: Vec<LineNote>,
    /// Lines refused because they are, hold or lie in an ignored address.
    pub ignored: Vec<LineNote>,
    /// Lines that are not an address or network.
    pub invalid: Vec<LineNote>,
}

impl ListSummary {
    /// Adds the outcome of another chunk of the same list.
    pub fn merge(&mut self, other: ListSummary) {
        self.done += other.done;
        self.unchanged.extend(other.unchanged);
        self.ignored.extend(other.ignored);
        self.invalid.extend(other.invalid);
    }
}

/// `status JAIL`, as fail2ban-client shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailStatus {
    /// The jail.
    pub jail: String,
    /// Addresses with failures inside findtime.
    pub currently_failed: u64,
    /// Failures since start.
    pub total_failed: u64,
    /// Addresses banned now.
    pub currently_banned: u64,
    /// Bans since start.
    pub total_banned: u64,
    /// Who is banned.
    pub banned: Vec<String>,
}

/// One active ban, as `banned --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanEntry {
    /// The jail.
    pub jail: String,
    /// The address (or network).
    pub ip: String,
    /// RFC 3339.
    pub banned_at: String,
    /// RFC 3339, or null for a permanent ban.
    pub expires_at: Option<String>,
    /// Offence number.
    pub ban_count: u32,
    /// The node that decided the ban: this node's name for its own bans, the sink's for
    /// bans applied from the fleet.
    #[serde(default)]
    pub origin: String,
    /// The syslog host names the deciding failures came from (on a central sink, the servers
    /// that were attacked); empty for bans by hand.
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_as_json() {
        let req = Request::Unban {
            jail: None,
            addr: None,
            all: true,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"command":"unban","jail":null,"addr":null,"all":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let resp = Response::Ok {
            reply: Reply::Done {
                message: "ok".into(),
            },
        };
        let text = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), resp);
        assert!(serde_json::from_str::<Request>(r#"{"command":"rm -rf"}"#).is_err());
    }
}
