//! What the router did with one event, jail by jail, for `jailsink tail`: run only while a tail
//! client watches, after the real routing, so the hot path never pays for it.

use super::{JailFilter, Router, Verdict};
use crate::parse::Event;

/// What a jail that took an event made of it, besides failures (which the jail reports with
/// their count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Explained<'a> {
    /// No failregex matched (or the match named no usable address).
    Missed,
    /// A failregex matched, and ignoreregex number `.0` (text `.1`) let it go.
    Ignored(usize, &'a str),
}

impl Router {
    /// Calls `explained(jail, what)` for every jail that takes `event` (its program and host)
    /// and did not find a failure in it; `failed` are the jails that did. A fail2ban jail's
    /// multi-line state is not run twice: one without a failure is reported as missed.
    pub(crate) fn explain(
        &self,
        event: &Event<'_>,
        failed: &[usize],
        mut explained: impl FnMut(usize, Explained<'_>),
    ) {
        let route = self.route_named(event.program.map(str::as_bytes));
        let mut jails: Vec<usize> = route
            .owners
            .iter()
            .map(|&(jail, _, _)| jail)
            .chain(route.direct.iter().copied())
            .chain(route.fail2ban.iter().copied())
            .collect();
        jails.sort_unstable();
        jails.dedup();
        for jail in jails {
            if failed.contains(&jail) || !self.takes_host(jail, event.hostname) {
                continue;
            }
            match &self.jails[jail].filter {
                JailFilter::Native(filter) => match filter.check(event.message) {
                    Verdict::Ignored(i) => {
                        let text = filter
                            .source()
                            .ignoreregex
                            .get(i)
                            .map_or("", String::as_str);
                        explained(jail, Explained::Ignored(i, text));
                    }
                    // A failure here that routing did not report was vetoed by <F-NOFAIL>
                    // or an unusable address: missed, as far as the jail is concerned.
                    _ => explained(jail, Explained::Missed),
                },
                JailFilter::Fail2ban(_) => explained(jail, Explained::Missed),
            }
        }
    }

    /// The text of failregex `regex` of jail number `jail`, for the tail's `matched` events.
    pub(crate) fn pattern(&self, jail: usize, regex: usize) -> &str {
        let patterns = match &self.jails[jail].filter {
            JailFilter::Native(f) => &f.source().failregex,
            JailFilter::Fail2ban(f) => &f.failregex,
        };
        patterns.get(regex).map_or("", String::as_str)
    }
}
