//! The shipped filters' fast paths (literal dispatch and prefixes, the split at the user group,
//! the address scanner, the small matcher) against the verdicts by the definition (each
//! failregex's whole capturing regex in order): any message, the same verdict and the same
//! successful login's address.
#![no_main]

use std::sync::OnceLock;

use jailsink::config::raw::RawFilter;
use jailsink::config::read_toml;
use jailsink::filter::{Filter, FilterSource};
use libfuzzer_sys::fuzz_target;

fn filters() -> &'static Vec<(String, Filter)> {
    static FILTERS: OnceLock<Vec<(String, Filter)>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/filter.d");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("conf/filter.d") {
            let path = entry.expect("entry").path();
            let raw: RawFilter = read_toml(&path).expect("shipped filter reads");
            let source = FilterSource {
                failregex: raw.failregex,
                ignoreregex: raw.ignoreregex,
                prefregex: raw.prefregex,
                successregex: raw.successregex,
                pendingregex: raw.pendingregex,
                echoregex: raw.echoregex,
                ..Default::default()
            };
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((
                name,
                Filter::compile(&source).expect("shipped filter compiles"),
            ));
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let message = text.trim();
    for (name, filter) in filters() {
        assert_eq!(
            filter.check(message),
            filter.reference_check(message),
            "{name}: {message:?}"
        );
        assert_eq!(
            filter.success(message),
            filter.reference_success(message),
            "{name}: {message:?}"
        );
    }
});
