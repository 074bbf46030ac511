//! The shipped filters' fast paths (literal dispatch and prefixes, the split at the user group,
//! the address scanner, the small matcher) against the verdicts by the definition (each
//! failregex's whole capturing regex in order): any message, the same verdict and the same
//! successful login's address; and one dispatch of every shipped pattern (as `jailsink regex`
//! with all filters in one file meets them) offers every pattern a plain `RegexSet` says matches.
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
    assert!(
        missed.is_empty(),
        "the dispatch skipped {missed:?}: {message:?}"
    );
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
