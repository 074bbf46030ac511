//! The shipped filters' fast paths (literal dispatch and prefixes, the split at the user group,
//! the address scanner, the small matcher) against the verdicts by the definition (each
//! failregex's whole capturing regex in order): any message, the same verdict and the same
//! successful login's address; and one dispatch of every shipped pattern (as `jailsink regex`
//! with all filters in one file meets them) offers every pattern a plain `RegexSet` says matches.
#![no_main]

use std::sync::OnceLock;

use jailsink::config::raw::RawFilter;
use jailsink::config::filter_file::read_native;
use jailsink::config::read_toml;
use jailsink::filter::{DispatchCheck, Filter, FilterSource};
use libfuzzer_sys::fuzz_target;

/// Every shipped filter in every mode it declares (`read_native`: as a jail gets it, held and
/// success patterns included), and the shipped config's inline smtp-auth pattern
/// (conf/jailsink.toml).
fn filters() -> &'static Vec<(String, Filter)> {
    static FILTERS: OnceLock<Vec<(String, Filter)>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/filter.d");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("conf/filter.d") {
            let path = entry.expect("entry").path();
            let raw: RawFilter = read_toml(&path).expect("shipped filter reads");
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let others = raw.modes.keys().map(String::as_str).filter(|m| *m != "normal");
            for mode in std::iter::once("normal").chain(others) {
                let source = read_native(&path, Some(mode)).expect("shipped filter reads");
                let filter = Filter::compile(&source).expect("shipped filter compiles");
                out.push((format!("{name} ({mode})"), filter));
            }
        }
        let smtp = FilterSource {
            failregex: vec![r"AUTH failure \(\w+\): authentication failure \(-13\) SASL\(-13\): authentication failure: .*relay=.*\[<HOST>\]".into()],
            ..Default::default()
        };
        out.push(("smtp-auth (jailsink.toml)".into(), Filter::compile(&smtp).expect("compiles")));
        out
    })
}

fn library_dispatch() -> &'static DispatchCheck {
    static CHECK: OnceLock<DispatchCheck> = OnceLock::new();
    CHECK.get_or_init(|| {
        let mut patterns = Vec::new();
        for (_, f) in filters() {
            patterns.extend(f.fail_patterns().iter().cloned());
            patterns.extend(f.success_patterns().iter().cloned());
        }
        DispatchCheck::new(&patterns).expect("the library's dispatch builds")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let message = text.trim();
    let (missed, _) = library_dispatch().missed(message);
    assert!(missed.is_empty(), "the dispatch skipped {missed:?}: {message:?}");
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
