//! Durations as operators write them, in the config and on the command line: one parser, a leaf
//! that config and the control translation both use.

use std::time::Duration;

/// The longest duration any setting takes: a century. Past it, end times stop fitting the
/// clocks they are added to (a panic), the fleet's events (which refuse times past 2200) and
/// the CLI's dates; `permanent` is how a ban that never ends is written.
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Not a number of seconds, `permanent` or humantime's words.
    #[error("{0}")]
    Words(#[from] humantime::DurationError),
    /// Longer than [`LONGEST`].
    #[error("longer than 100 years (write permanent for one that never ends)")]
    TooLong,
}

/// `permanent` or `-1` is `Ok(None)`, a bare number is seconds, anything else humantime's words
/// (`1h 30m`); at most [`LONGEST`].
pub(crate) fn parse(text: &str) -> Result<Option<Duration>, DurationError> {
    let parsed = match text.trim() {
        "-1" | "permanent" => return Ok(None),
        t => match t.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => humantime::parse_duration(t)?,
        },
    };
    at_most_longest(parsed).map(Some)
}

/// `d`, unless it is longer than [`LONGEST`].
pub(crate) fn at_most_longest(d: Duration) -> Result<Duration, DurationError> {
    if d > LONGEST {
        Err(DurationError::TooLong)
    } else {
        Ok(d)
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

    #[test]
    fn a_century_is_the_longest() {
        assert_eq!(parse("100y"), Ok(Some(LONGEST)));
        assert_eq!(parse(&LONGEST.as_secs().to_string()), Ok(Some(LONGEST)));
        for too_long in ["101y", "1000000y", "18446744073709551615", "3155760001"] {
            assert_eq!(parse(too_long), Err(DurationError::TooLong), "{too_long}");
        }
        assert!(DurationError::TooLong.to_string().contains("permanent"));
    }
}
