//! The shipped filters as the fuzz targets judge them (a module of filter_fast and
//! filter_match).

use std::sync::OnceLock;

use jailsink::config::filter_file::read_native;
use jailsink::config::raw::RawFilter;
use jailsink::config::read_toml;
use jailsink::filter::{Filter, FilterSource};

/// Every shipped filter in every mode it declares (`read_native`: as a jail gets it, held and
/// success patterns included), and the shipped config's inline smtp-auth pattern
/// (conf/jailsink.toml).
pub fn filters() -> &'static Vec<(String, Filter)> {
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
