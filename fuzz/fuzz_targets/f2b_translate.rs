//! Python regex to Rust: translated and compiled, or refused; matching stays within the
//! backtrack limit.
#![no_main]

use jailsink::filter::fail2ban::translate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, line) = text.split_once('\n').unwrap_or((&text, "sshd[1]: fail from 192.0.2.1"));
    if let Ok(compiled) = translate::compile(pattern) {
        let _ = compiled.captures(line);
    }
});
