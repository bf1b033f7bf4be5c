//! `Retry-After` and HTTP-date parsing never panic, and what parses is sane.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use parapet_core::{fmt_http_date, parse_http_date, parse_retry_after};

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let _ = parse_retry_after(&value, now);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(at) = parse_http_date(text, now) {
            // Whatever parses formats back to a date that parses to itself.
            let again = parse_http_date(&fmt_http_date(at), now);
            assert_eq!(again, Some(at));
            assert!(at >= SystemTime::UNIX_EPOCH);
        }
    }
});
