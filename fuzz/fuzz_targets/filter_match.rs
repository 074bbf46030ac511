//! The shipped filters against any message: a failure always names a valid address that
//! appears in the message.
#![no_main]

mod shipped;

use jailsink::filter::Verdict;
use libfuzzer_sys::fuzz_target;
use shipped::filters;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let message = text.trim();
    for (_, filter) in filters() {
        if let Verdict::Failure(m) = filter.check(message) {
            // IPv6 has many spellings of one address; a dotted quad has one.
            if m.ip.is_ipv4() {
                let shown = m.ip.to_string();
                assert!(
                    message.contains(&shown),
                    "failure names {shown}, which is not in {message:?}"
                );
            }
        }
    }
});
