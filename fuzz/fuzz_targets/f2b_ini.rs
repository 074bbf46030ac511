//! fail2ban INI text: parsed or refused, never a panic.
#![no_main]

use std::path::Path;

use jailsink::filter::fail2ban::ini;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ini::parse(&text, Path::new("fuzz.conf"));
});
