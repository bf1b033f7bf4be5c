//! `Retry-After` (RFC 9110 §10.2.3): how long the server asked us to wait.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};

use crate::httpdate::parse_http_date;

/// Reads the `Retry-After` of a response as a wait from `now`.
///
/// Both forms are accepted: `delay-seconds` (`120`) and an HTTP-date in any
/// of its three forms. A date in the past means [`Duration::ZERO`].
/// Surrounding spaces and tabs are tolerated. When the response carries the
/// field more than once, the first valid value wins.
///
/// Anything malformed (negative, signed, fractional, with a unit, empty,
/// non-ASCII, a date that does not exist) means "absent": `None`, never a
/// panic and never an error. An enormous number saturates to
/// `Duration::from_secs(u64::MAX)` instead of overflowing; callers clamp it to
/// their own maximum.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
/// use parapet_core::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.append(RETRY_AFTER, HeaderValue::from_static("soon"));
/// headers.append(RETRY_AFTER, HeaderValue::from_static(" 30 "));
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_secs(30)));
/// ```
#[must_use]
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get_all(RETRY_AFTER)
        .iter()
        .find_map(|v| parse_retry_after(v, now))
}

/// Parses one `Retry-After` field value; see [`retry_after`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use http::HeaderValue;
/// use parapet_core::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
/// let value = HeaderValue::from_static("Sun, 06 Nov 1994 08:50:37 GMT");
/// assert_eq!(parse_retry_after(&value, now), Some(Duration::from_secs(60)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("-1"), now), None);
/// ```
#[must_use]
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = trim_ows(value.as_bytes());
    if s.is_empty() {
        return None;
    }
    if s.iter().all(u8::is_ascii_digit) {
        let secs = s.iter().fold(0u64, |acc, &d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let s = std::str::from_utf8(s).ok()?;
    let at = parse_http_date(s, now)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Strips optional whitespace (spaces and horizontal tabs) at both ends.
pub(crate) fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmt_http_date;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_000_000)
    }

    fn parse(s: &'static str) -> Option<Duration> {
        parse_retry_after(&HeaderValue::from_static(s), now())
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse("007"), Some(Duration::from_secs(7)));
        assert_eq!(parse("86400"), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn whitespace_around_is_tolerated() {
        assert_eq!(parse("  5\t"), Some(Duration::from_secs(5)));
        let date = fmt_http_date(now() + Duration::from_secs(9));
        let v = HeaderValue::from_str(&format!(" {date} ")).unwrap();
        assert_eq!(parse_retry_after(&v, now()), Some(Duration::from_secs(9)));
    }

    #[test]
    fn malformed_values_are_absent() {
        for bad in [
            "",
            "   ",
            "-1",
            "+5",
            "1.5",
            "5s",
            "1e3",
            "0x10",
            "five",
            "5 5",
            "5,6",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let non_ascii = HeaderValue::from_bytes(b"12\xff").unwrap();
        assert_eq!(parse_retry_after(&non_ascii, now()), None);
        let non_ascii_date =
            HeaderValue::from_bytes("Sun, 06 Nov 1994 08:49:37 GMT\u{e9}".as_bytes()).unwrap();
        assert_eq!(parse_retry_after(&non_ascii_date, now()), None);
    }

    #[test]
    fn enormous_values_saturate() {
        assert_eq!(
            parse("99999999999999999999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse("18446744073709551616"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn http_date_in_the_future_is_the_distance_to_it() {
        let v = HeaderValue::from_str(&fmt_http_date(now() + Duration::from_secs(90))).unwrap();
        assert_eq!(parse_retry_after(&v, now()), Some(Duration::from_secs(90)));
    }

    #[test]
    fn http_date_in_the_past_means_now() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(Duration::ZERO));
    }

    #[test]
    fn first_valid_value_wins() {
        let mut h = HeaderMap::new();
        h.append(RETRY_AFTER, HeaderValue::from_static("-3"));
        h.append(RETRY_AFTER, HeaderValue::from_static("7"));
        h.append(RETRY_AFTER, HeaderValue::from_static("9"));
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&HeaderMap::new(), now()), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = HeaderValue::from_bytes(&b) {
                let _ = parse_retry_after(&v, now());
            }
        }

        #[test]
        fn any_u64_round_trips(n in any::<u64>()) {
            let v = HeaderValue::from(n);
            prop_assert_eq!(parse_retry_after(&v, now()), Some(Duration::from_secs(n)));
        }
    }
}
