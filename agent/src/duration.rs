//! Durations as Kubernetes and Go spell them in configuration: `10s`, `1h30m`, `500ms`, `0`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration read from `10s`, `4h`, `1h30m`, `250ms` or `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

/// Text that is not a duration the agent can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDuration {
    /// Not written as a duration.
    #[error("{0:?} is not a duration; write e.g. 10s, 1m, 4h, 1h30m, 500ms, or 0")]
    Syntax(String),
    /// A duration longer than the agent can wait.
    #[error("{0:?} is longer than any duration the agent can wait; write e.g. 4h or 168h")]
    TooLong(String),
}

impl GoDuration {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<GoDuration, InvalidDuration> {
        let bad = || InvalidDuration::Syntax(text.to_owned());
        let too_long = || InvalidDuration::TooLong(text.to_owned());
        let text = text.trim();
        if text == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(bad)?;
            let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let seconds = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            // Found by fuzzing: a huge number panicked in from_secs_f64 or in the sum.
            let part = Duration::try_from_secs_f64(number * seconds).map_err(|_| too_long())?;
            total = total.checked_add(part).ok_or_else(too_long)?;
            rest = &rest[unit_len..];
        }
        Ok(GoDuration(total))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_millis() != 0 || secs == 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 4h, 1h30m, or 0")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<GoDuration, E> {
                GoDuration::parse(text).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<GoDuration, E> {
                match n {
                    0 => Ok(GoDuration(Duration::ZERO)),
                    n => Err(E::custom(format!(
                        "{n} has no unit; write e.g. {n}s, {n}m or {n}h"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<GoDuration, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is negative; durations are not")))
                    .and_then(|n| self.visit_u64(n))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings_parse_and_print() {
        for (text, secs, shown) in [
            ("10s", 10.0, "10s"),
            ("4h", 14400.0, "4h"),
            ("1h30m", 5400.0, "1h30m"),
            ("168h", 604_800.0, "168h"),
            ("500ms", 0.5, "500ms"),
            ("0", 0.0, "0ms"),
        ] {
            let d = GoDuration::parse(text).unwrap();
            assert_eq!(d.0.as_secs_f64(), secs, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        for bad in ["", "10", "ten seconds", "1d", "-5s", "5 s"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad}");
        }
        // What the fuzzer found: huge values are errors, not panics.
        for huge in [
            "99999999999999999999s",
            "10000000000000000000s10000000000000000000s",
        ] {
            let err = GoDuration::parse(huge).unwrap_err().to_string();
            assert!(err.contains("longer than any duration"), "{err}");
        }
    }
}
