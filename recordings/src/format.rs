//! The two asciicast versions, and how event times are written in them.
//!
//! Both versions are newline-delimited JSON: a header object, then one `[time, code, data]`
//! array per event. They differ in the header's shape (see [`crate::header`]), in the meaning
//! of `time`, and in v3's extra exit code. Times are written in whole [`TIME_UNIT`]s with
//! integer arithmetic only, so a file is the same on every machine.

use std::time::Duration;

/// The asciicast version a recording is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// asciicast v2, the default: read by asciinema 2.x and 3.x and by every asciinema-player.
    ///
    /// `time` is seconds since the start. v2 has no exit event, so [`crate::EventKind::Exit`]
    /// is written as a marker labelled [`EXIT_MARKER_PREFIX`] and the status (`exit 0`):
    /// markers are part of v2, asciinema 2.2 `cat` and `play` skip every non-output event
    /// (checked against its source and by this crate's tests), asciinema 3 reads them, and
    /// asciinema-player lists them as chapters, so the status stays visible. Reading a v2 file
    /// back gives that marker, not an exit: a user's marker might carry the same label.
    #[default]
    V2,
    /// asciicast v3 (asciinema 3.x, asciinema-player 3.10 and later).
    ///
    /// `time` is the interval since the previous event, and exits are written as code `"x"`
    /// with the status as a string. asciinema 2.2 cannot read v3 at all: it refuses the file
    /// with "only asciicast v1 and v2 formats can be opened" (checked by this crate's tests),
    /// which is why v2 is the default.
    V3,
}

impl Format {
    /// The header's `version` number.
    pub const fn version(self) -> u8 {
        match self {
            Format::V2 => 2,
            Format::V3 => 3,
        }
    }
}

/// The resolution of written times: event times are rounded to the nearest microsecond.
///
/// In v3, each interval is the difference between the rounded absolute times of an event and
/// the one before it. That is error diffusion in integer form: the rounding error of one
/// interval is carried into the next, so the sum of any number of written intervals is the
/// rounded absolute time, never more than half a unit away from the true time.
pub const TIME_UNIT: Duration = Duration::from_micros(1);

/// The label prefix of the marker that stands for an exit in v2: `exit 0`, `exit 137`.
pub const EXIT_MARKER_PREFIX: &str = "exit ";

/// The label prefix of the marker that ends a recording cut short by
/// [`crate::Recording::end_incomplete`]: `incomplete: <reason>`.
pub const INCOMPLETE_MARKER_PREFIX: &str = "incomplete: ";

/// `time` in whole [`TIME_UNIT`]s, rounded to the nearest (half a unit rounds up).
pub(crate) fn to_units(time: Duration) -> u64 {
    let units = (time.as_nanos() + 500) / 1000;
    u64::try_from(units).unwrap_or(u64::MAX)
}

/// A number of [`TIME_UNIT`]s as a duration.
pub(crate) fn from_units(units: u64) -> Duration {
    Duration::from_micros(units)
}

/// Appends `units` as seconds with six decimals (`12.000300`): exact, no floating point.
pub(crate) fn push_seconds(out: &mut Vec<u8>, units: u64) {
    // By hand rather than with `write!`: this runs for every event, and the formatting
    // machinery costs as much as escaping a line of text.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut whole = units / 1_000_000;
    loop {
        at -= 1;
        digits[at] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.push(b'.');
    let mut fraction = units % 1_000_000;
    let mut six = [b'0'; 6];
    for digit in six.iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    out.extend_from_slice(&six);
}

/// A time read from a file (seconds as a JSON number) as a duration, to the nanosecond.
pub(crate) fn parse_seconds(seconds: f64) -> Option<Duration> {
    let nanos = (seconds * 1e9).round();
    (nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64)
        .then(|| Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_to_the_nearest_microsecond() {
        assert_eq!(to_units(Duration::from_nanos(1_499)), 1);
        assert_eq!(to_units(Duration::from_nanos(1_500)), 2);
        assert_eq!(to_units(Duration::from_secs(3)), 3_000_000);
    }

    #[test]
    fn seconds_are_written_with_six_decimals() {
        let mut out = Vec::new();
        push_seconds(&mut out, 12_000_300);
        assert_eq!(out, b"12.000300");
        for (units, text) in [
            (0, "0.000000"),
            (999_999, "0.999999"),
            (u64::MAX, "18446744073709.551615"),
        ] {
            out.clear();
            push_seconds(&mut out, units);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), text);
        }
    }

    #[test]
    fn parsed_seconds_keep_microseconds_exact() {
        assert_eq!(parse_seconds(0.000333), Some(Duration::from_micros(333)));
        assert_eq!(
            parse_seconds(333333.333333),
            Some(Duration::from_micros(333_333_333_333))
        );
        assert_eq!(parse_seconds(-1.0), None);
        assert_eq!(parse_seconds(f64::NAN), None);
    }
}
