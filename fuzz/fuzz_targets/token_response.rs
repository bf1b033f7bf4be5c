//! A token endpoint's answer never panics the parser, whatever its status
//! and bytes; what parses is a usable bearer token, and no error message
//! carries the access token the body offered.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use parapet_auth::{SecretString, parse_token_response};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    // Mostly 200, sometimes another status: 2xx, 4xx and 5xx all matter.
    let status = match first {
        0..=127 => StatusCode::OK,
        n => StatusCode::from_u16(100 + u16::from(n) * 3).unwrap_or(StatusCode::BAD_REQUEST),
    };
    match parse_token_response(status, body) {
        Ok((token, refresh)) => {
            assert!(status.is_success());
            let secret = token.secret().expose();
            assert!(!secret.is_empty());
            assert!(secret.bytes().all(|b| b.is_ascii_graphic()));
            if let Some(r) = refresh {
                assert!(!r.is_empty());
            }
            // Debug output redacts the token: it reads the same whatever
            // the token is.
            assert_eq!(
                format!("{:?}", token.secret()),
                format!("{:?}", SecretString::new("x"))
            );
        }
        Err(e) => {
            let text = format!("{e} {e:?}");
            // A token the body offered never reaches the error's text.
            if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(body) {
                if let Some(serde_json::Value::String(t)) = obj.get("access_token") {
                    // Only tokens that cannot be mistaken for the
                    // error's own words (the seed corpus has some).
                    if t.starts_with("tok_") && t.len() >= 8 && !t.contains(['"', '\\']) {
                        let in_other_fields = ["error", "error_description", "token_type"]
                            .iter()
                            .filter_map(|k| obj.get(*k).and_then(|v| v.as_str()))
                            .any(|v| v.contains(t.as_str()));
                        assert!(in_other_fields || !text.contains(t.as_str()), "{text}");
                    }
                }
            }
        }
    }
});
