//! The parse's fast paths against what they stand for (parse::fast_paths_agree): the fast
//! 3164 header against syslog_loose, and the header the listener reads from a frame's bytes
//! against the parse of the decoded frame, in two zones and across a new year.
#![no_main]

use chrono::{TimeZone, Utc};
use jailsink::parse::{fast_paths_agree, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let zones = [
        Zone::parse("UTC").expect("UTC"),
        Zone::parse("Europe/Berlin").expect("Berlin"),
    ];
    let times = [
        Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 30).unwrap(),
    ];
    for zone in &zones {
        for now in times {
            if let Err(why) = fast_paths_agree(data, zone, now) {
                panic!("{why}: {:?}", String::from_utf8_lossy(data));
            }
        }
    }
});
