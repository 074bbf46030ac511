//! Any pattern text compiles or is refused with an error: never a panic or a hang.
#![no_main]

use jailsink::filter::{Filter, FilterSource, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, line) = text.split_once('\n').unwrap_or((&text, "fail from 192.0.2.1"));
    let source = FilterSource { failregex: vec![pattern.to_string()], ..Default::default() };
    if let Ok(filter) = Filter::compile(&source) {
        if let Verdict::Failure(m) = filter.check(line) {
            let _ = m.ip;
        }
    }
});
