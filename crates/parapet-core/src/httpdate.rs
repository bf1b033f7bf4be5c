//! HTTP-date parsing and formatting (RFC 9110 §5.6.7), with no allocation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an HTTP-date in any of the three forms a recipient must accept.
///
/// - IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
/// - obsolete RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
/// - asctime: `Sun Nov  6 08:49:37 1994`
///
/// `now` is needed only for the RFC 850 form's two-digit year: a year that
/// would land more than 50 years after `now` means the previous century, as
/// RFC 9110 requires. Dates before 1970 are clamped to the Unix epoch (they
/// are in the past either way). Anything else returns `None`; this function
/// never panics.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use parapet_core::parse_http_date;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", now).unwrap();
/// assert_eq!(t, UNIX_EPOCH + Duration::from_secs(784_111_777));
/// assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(t));
/// assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994", now), Some(t));
/// assert_eq!(parse_http_date("yesterday", now), None);
/// ```
#[must_use]
pub fn parse_http_date(s: &str, now: SystemTime) -> Option<SystemTime> {
    let b = s.as_bytes();
    let parts = if b.get(3) == Some(&b',') {
        parse_imf(b)?
    } else if b.get(3) == Some(&b' ') {
        parse_asctime(b)?
    } else {
        parse_rfc850(b, now)?
    };
    parts.to_system_time()
}

/// Formats a time as an IMF-fixdate, the form senders use.
///
/// Times before the Unix epoch format as the epoch itself.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use parapet_core::fmt_http_date;
///
/// let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
/// assert_eq!(fmt_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
#[must_use]
pub fn fmt_http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 in DAYS).
    let weekday = usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS.get(weekday).copied().unwrap_or("Mon"),
        day,
        MONTHS
            .get(usize::try_from(month - 1).unwrap_or(0))
            .copied()
            .unwrap_or("Jan"),
        year,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Parts {
    fn to_system_time(self) -> Option<SystemTime> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        // A leap second (60) is read as the last second of the minute.
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second.min(59));
        match u64::try_from(secs) {
            Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
            Err(_) => Some(UNIX_EPOCH),
        }
    }
}

fn parse_imf(b: &[u8]) -> Option<Parts> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    if b.len() != 29 {
        return None;
    }
    day_name(b.get(0..3)?, &DAYS)?;
    expect(b, 3, b", ")?;
    let day = digits(b.get(5..7)?)?;
    expect(b, 7, b" ")?;
    let month = month(b.get(8..11)?)?;
    expect(b, 11, b" ")?;
    let year = digits(b.get(12..16)?)?;
    expect(b, 16, b" ")?;
    let (hour, minute, second) = time_of_day(b.get(17..25)?)?;
    expect(b, 25, b" GMT")?;
    Some(Parts {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn parse_rfc850(b: &[u8], now: SystemTime) -> Option<Parts> {
    // "Sunday, 06-Nov-94 08:49:37 GMT"
    let comma = b.iter().position(|&c| c == b',')?;
    day_name(b.get(..comma)?, &LONG_DAYS)?;
    let rest = b.get(comma..)?;
    if rest.len() != 24 {
        return None;
    }
    expect(rest, 0, b", ")?;
    let day = digits(rest.get(2..4)?)?;
    expect(rest, 4, b"-")?;
    let month = month(rest.get(5..8)?)?;
    expect(rest, 8, b"-")?;
    let yy = i64::from(digits(rest.get(9..11)?)?);
    expect(rest, 11, b" ")?;
    let (hour, minute, second) = time_of_day(rest.get(12..20)?)?;
    expect(rest, 20, b" GMT")?;
    let now_year = civil_from_days(
        i64::try_from(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) / 86_400)
            .unwrap_or(0),
    )
    .0;
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    }
    Some(Parts {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn parse_asctime(b: &[u8]) -> Option<Parts> {
    // "Sun Nov  6 08:49:37 1994"
    if b.len() != 24 {
        return None;
    }
    day_name(b.get(0..3)?, &DAYS)?;
    expect(b, 3, b" ")?;
    let month = month(b.get(4..7)?)?;
    expect(b, 7, b" ")?;
    let day = match b.get(8..10)? {
        [b' ', d] => digits(&[*d])?,
        two => digits(two)?,
    };
    expect(b, 10, b" ")?;
    let (hour, minute, second) = time_of_day(b.get(11..19)?)?;
    expect(b, 19, b" ")?;
    let year = digits(b.get(20..24)?)?;
    Some(Parts {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn expect(b: &[u8], at: usize, lit: &[u8]) -> Option<()> {
    (b.get(at..at + lit.len())? == lit).then_some(())
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

fn time_of_day(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() != 8 || b.get(2) != Some(&b':') || b.get(5) != Some(&b':') {
        return None;
    }
    Some((
        digits(b.get(0..2)?)?,
        digits(b.get(3..5)?)?,
        digits(b.get(6..8)?)?,
    ))
}

fn month(b: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.as_bytes() == b)
        .and_then(|i| u32::try_from(i + 1).ok())
}

fn day_name(b: &[u8], names: &[&str]) -> Option<()> {
    names.iter().any(|n| n.as_bytes() == b).then_some(())
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW_2026: u64 = 1_795_000_000; // 2026-11-17

    #[test]
    fn three_forms_agree() {
        let now = at(NOW_2026);
        let want = at(784_111_777);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(want)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", now),
            Some(want)
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994", now), Some(want));
        assert_eq!(
            parse_http_date("Sun Nov 16 08:49:37 1994", now),
            Some(want + Duration::from_secs(10 * 86_400))
        );
    }

    #[test]
    fn rfc850_two_digit_year_more_than_50_years_ahead_is_last_century() {
        let now = at(NOW_2026);
        // 2076 is exactly 50 years ahead: kept in this century.
        let y76 = parse_http_date("Thursday, 01-Jan-76 00:00:00 GMT", now).unwrap();
        assert_eq!(fmt_http_date(y76), "Wed, 01 Jan 2076 00:00:00 GMT");
        // 2077 would be 51 years ahead: it means 1977.
        let y77 = parse_http_date("Saturday, 01-Jan-77 00:00:00 GMT", now).unwrap();
        assert_eq!(fmt_http_date(y77), "Sat, 01 Jan 1977 00:00:00 GMT");
        let y25 = parse_http_date("Wednesday, 01-Jan-25 00:00:00 GMT", now).unwrap();
        assert_eq!(fmt_http_date(y25), "Wed, 01 Jan 2025 00:00:00 GMT");
    }

    #[test]
    fn invalid_dates_are_rejected() {
        let now = at(NOW_2026);
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 29 Feb 2023 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT ",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Funday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}",
            "Sun, 00 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad, now), None, "{bad:?}");
        }
        assert!(parse_http_date("Sun, 29 Feb 2024 08:49:37 GMT", now).is_some());
    }

    #[test]
    fn dates_before_the_epoch_clamp_to_the_epoch() {
        assert_eq!(
            parse_http_date("Mon, 01 Jan 1900 00:00:00 GMT", at(NOW_2026)),
            Some(UNIX_EPOCH)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC*") {
            let _ = parse_http_date(&s, at(NOW_2026));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let s = String::from_utf8_lossy(&b);
            let _ = parse_http_date(&s, at(NOW_2026));
        }

        #[test]
        fn formatted_date_parses_back(secs in 0u64..253_402_300_799) {
            let t = at(secs);
            prop_assert_eq!(parse_http_date(&fmt_http_date(t), at(NOW_2026)), Some(t));
        }
    }
}
