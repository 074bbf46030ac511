//! The shipped filters against any message: a failure always names a valid address that
//! appears in the message.
#![no_main]

use std::sync::OnceLock;

use jailsink::config::raw::RawFilter;
use jailsink::config::read_toml;
use jailsink::filter::{Filter, FilterSource, Verdict};
use libfuzzer_sys::fuzz_target;

fn filters() -> &'static Vec<Filter> {
    static FILTERS: OnceLock<Vec<Filter>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/filter.d");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("conf/filter.d") {
            let path = entry.expect("entry").path();
            let raw: RawFilter = read_toml(&path).expect("shipped filter reads");
            let source = FilterSource { failregex: raw.failregex, ignoreregex: raw.ignoreregex, prefregex: raw.prefregex, successregex: raw.successregex, pendingregex: raw.pendingregex, echoregex: raw.echoregex, ..Default::default() };
            out.push(Filter::compile(&source).expect("shipped filter compiles"));
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let message = text.trim();
    for filter in filters() {
        if let Verdict::Failure(m) = filter.check(message) {
            // IPv6 has many spellings of one address; a dotted quad has one.
            if m.ip.is_ipv4() {
                let shown = m.ip.to_string();
                assert!(message.contains(&shown), "failure names {shown}, which is not in {message:?}");
            }
        }
    }
});
