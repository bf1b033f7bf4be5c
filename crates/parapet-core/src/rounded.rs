//! Durations for people: what every parapet error message prints.

use std::fmt;
use std::time::Duration;

/// A duration as a person reads it in a message: milliseconds to two
/// significant digits (`7ms`, `110ms`, `800ms`), seconds to a tenth
/// (`1.5s`, `42s`), then minutes and hours (`2min 30s`, `1h 5min`); never
/// `108.569534ms`. The style of `Duration`'s `Debug` for round values.
///
/// ```
/// use std::time::Duration;
/// use parapet_core::RoundedDuration;
///
/// assert_eq!(RoundedDuration(Duration::from_nanos(108_569_534)).to_string(), "110ms");
/// assert_eq!(RoundedDuration(Duration::from_secs(150)).to_string(), "2min 30s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundedDuration(pub Duration);

impl fmt::Display for RoundedDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MS: u128 = 1_000_000;
        const S: u128 = 1_000 * MS;
        let nanos = self.0.as_nanos();
        let round = |unit: u128| (nanos + unit / 2) / unit;
        if nanos == 0 {
            return f.write_str("0ms");
        }
        if nanos < MS / 2 {
            return f.write_str("<1ms");
        }
        let ms = round(MS);
        if ms < 100 {
            return write!(f, "{ms}ms");
        }
        // Two significant digits: 110ms, 800ms; 995ms and up is 1s.
        let tens = round(10 * MS);
        if tens < 100 {
            return write!(f, "{}ms", tens * 10);
        }
        let tenths = round(S / 10);
        if tenths < 600 {
            return match tenths % 10 {
                0 => write!(f, "{}s", tenths / 10),
                t => write!(f, "{}.{t}s", tenths / 10),
            };
        }
        let secs = round(S);
        if secs < 3_600 {
            return match secs % 60 {
                0 => write!(f, "{}min", secs / 60),
                s => write!(f, "{}min {s}s", secs / 60),
            };
        }
        let mins = round(60 * S);
        match mins % 60 {
            0 => write!(f, "{}h", mins / 60),
            m => write!(f, "{}h {m}min", mins / 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_messages_are_rounded() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(200), "<1ms"),
            (Duration::from_nanos(108_569_534), "110ms"),
            (Duration::from_micros(7_400), "7ms"),
            (Duration::from_micros(99_600), "100ms"),
            (Duration::from_millis(994), "990ms"),
            (Duration::from_millis(995), "1s"),
            (Duration::from_micros(999_700), "1s"),
            (Duration::from_millis(1_549), "1.5s"),
            (Duration::from_millis(59_980), "1min"),
            (Duration::from_secs(150), "2min 30s"),
            (Duration::from_secs(3_900), "1h 5min"),
        ];
        for (d, text) in cases {
            assert_eq!(RoundedDuration(d).to_string(), text, "{d:?}");
        }
        assert!(!RoundedDuration(Duration::MAX).to_string().is_empty());
    }
}
