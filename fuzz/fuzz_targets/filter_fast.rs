//! The shipped filters' fast paths (literal dispatch and prefixes, the split at the user group,
//! the address scanner, the small matcher) against the verdicts by the definition (each
//! failregex's whole capturing regex in order): any message, the same verdict and the same
//! successful login's address (fuzz/fuzz_targets/dispatch.rs checks the dispatch alone: its
//! RegexSet would make every run here ~20x slower).
#![no_main]

mod shipped;

use libfuzzer_sys::fuzz_target;
use shipped::filters;

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
