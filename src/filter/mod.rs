//! Filters: failregex/ignoreregex patterns with fail2ban tags, compiled once, matched per message.
//!
//! A [`Filter`] answers for one message: a failure from an address, an ignored line, or a miss.
//! The live path goes through [`router::Router`], which puts every failregex of the jails fed by
//! one program into one dispatch (anchored prefixes, required literals, a `RegexSet` for the
//! rest) and runs a capturing regex only for the patterns that could match.

pub(crate) mod addr_scan;
pub(crate) mod dispatch;
pub(crate) mod engine;
pub mod fail2ban;
pub(crate) mod lookup;
pub(crate) mod mini;
pub(crate) mod prefix;
pub(crate) mod required;
pub(crate) mod router;
pub mod session;
pub(crate) mod template;
pub mod user_name;

use std::sync::Arc;

#[doc(hidden)]
pub use addr_scan::NEAR_ADDRESSES;
#[doc(hidden)]
pub use dispatch::DispatchCheck;
pub use engine::{
    parse_address, BadPattern, FailClass, Filter, FilterMatch, FilterSource, PatternError, Verdict,
};
pub(crate) use lookup::{locate, FilterFile};
#[doc(hidden)]
pub use mini::MiniTally;
pub use user_name::UserName;

/// A jail's compiled filter: a native TOML filter or a fail2ban `.conf` filter.
#[derive(Debug, Clone)]
pub enum JailFilter {
    /// `NAME.toml`: matched against the syslog message, through the router's shared set.
    Native(Arc<Filter>),
    /// `NAME.conf`: matched against the line fail2ban would read, with per-jail line state.
    Fail2ban(Arc<fail2ban::Fail2banFilter>),
}

impl JailFilter {
    /// Number of failure patterns (failregex, pendingregex, echoregex), for `check` output.
    pub fn failregex_count(&self) -> usize {
        match self {
            JailFilter::Native(f) => {
                let s = f.source();
                s.failregex.len() + s.pendingregex.len() + s.echoregex.len()
            }
            JailFilter::Fail2ban(f) => f.failregex.len(),
        }
    }
}
