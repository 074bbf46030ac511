//! Durations as operators write them, in the config and on the command line: one parser, a leaf
//! that config and the control translation both use.

use std::time::Duration;

/// `permanent` or `-1` is `Ok(None)`, a bare number is seconds, anything else humantime's words
/// (`1h 30m`).
pub(crate) fn parse(text: &str) -> Result<Option<Duration>, humantime::DurationError> {
    match text.trim() {
        "-1" | "permanent" => Ok(None),
        t => match t.parse::<u64>() {
            Ok(secs) => Ok(Some(Duration::from_secs(secs))),
            Err(_) => humantime::parse_duration(t).map(Some),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_seconds_and_permanent() {
        assert_eq!(parse(" permanent "), Ok(None));
        assert_eq!(parse("-1"), Ok(None));
        assert_eq!(parse("90"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse("1h 30m"), Ok(Some(Duration::from_secs(5400))));
        assert!(parse("soon").is_err());
    }
}
