//! Syslog parsing: any bytes give an event or an error, never a panic; the message is a slice
//! of the decoded text.
#![no_main]

use chrono::{TimeZone, Utc};
use jailsink::parse::{decode, parse, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = decode(data);
    let now = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 30).unwrap();
    if let Ok(event) = parse(&text, &Zone::Utc, now) {
        assert!(event.repeat >= 1);
        assert!(event.message.len() <= text.len());
    }
});
