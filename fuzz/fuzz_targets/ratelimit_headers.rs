//! Server rate-limit signals never panic on any header values, and a wait is
//! only ever reported together with a source.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use parapet_core::ServerLimit;

const NAMES: [&str; 7] = [
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "ratelimit",
    "ratelimit-policy",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let status = StatusCode::from_u16(200 + u16::from(first) % 400).unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    // Fields are separated by 0xff; each goes to the next header name in turn.
    for (i, field) in rest.split(|&b| b == 0xff).enumerate() {
        let name = HeaderName::from_static(NAMES[i % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(field) {
            headers.append(name, value);
        }
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    if let Some(limit) = ServerLimit::from_response(status, &headers, now) {
        assert_eq!(limit.wait().is_some(), limit.source().is_some());
    }
});
