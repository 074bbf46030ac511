//! One dispatch of every shipped pattern (failure, held and success, every filter in every
//! mode, as `jailsink regex` with all filters in one file meets them) offers, for any message,
//! every pattern a plain `RegexSet` of the same patterns says matches.
#![no_main]

mod shipped;

use std::sync::OnceLock;

use jailsink::filter::DispatchCheck;
use libfuzzer_sys::fuzz_target;
use shipped::filters;

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
});
