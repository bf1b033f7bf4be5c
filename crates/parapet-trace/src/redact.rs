//! Keeping secrets out of logs and spans: which headers and query parameters
//! carry credentials, and a redacted form of a URL.
//!
//! - Headers: `Authorization`, `Proxy-Authorization`, `Cookie`,
//!   `Set-Cookie`, `X-API-Key`, any value marked
//!   [sensitive](http::HeaderValue::is_sensitive), and any name that looks
//!   secret by the rule below (`X-Auth-Token`, `X-Amz-Security-Token`, ...).
//! - Query parameters whose name looks secret: it contains `token`,
//!   `secret`, `password`, `passwd`, `signature`, `credential`, `apikey` or
//!   `authorization` (any case), or one of its words is `key`, `sig`, `pwd`,
//!   `auth` or `session` (words are split at `_`, `-`, `.`, `[`, `]` and
//!   lower-to-upper case changes, so `api_key`, `sessionKey` and
//!   `X-Amz-Signature` match while `monkey` and `design` do not). Names are
//!   percent-decoded first. Their values become `REDACTED`.
//! - Userinfo in a URL becomes `REDACTED:REDACTED`.
//!
//! The rules err towards redacting: a harmless parameter called `key` is
//! hidden along with the dangerous ones.
//!
//! ```
//! use http::Uri;
//! use parapet_trace::redact::{RedactedUri, is_sensitive_query_param};
//!
//! let uri: Uri = "https://bob:hunter2@api.example.com/v1/items?page=2&access_token=s3cr3t"
//!     .parse()
//!     .unwrap();
//! assert_eq!(
//!     RedactedUri::new(&uri).to_string(),
//!     "https://REDACTED:REDACTED@api.example.com/v1/items?page=2&access_token=REDACTED",
//! );
//! assert!(is_sensitive_query_param("X-Amz-Signature"));
//! assert!(!is_sensitive_query_param("page"));
//! ```

use std::fmt;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// What a secret is replaced by.
pub const REDACTED: &str = "REDACTED";

/// `x-api-key`.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Whether a header with this name and value must never be logged: a
/// credential header by name ([`is_sensitive_header_name`]) or a value
/// marked sensitive.
///
/// ```
/// use http::{HeaderName, HeaderValue};
/// use parapet_trace::redact::is_sensitive_header;
///
/// let mut v = HeaderValue::from_static("opaque");
/// assert!(!is_sensitive_header(&HeaderName::from_static("x-custom"), &v));
/// v.set_sensitive(true);
/// assert!(is_sensitive_header(&HeaderName::from_static("x-custom"), &v));
/// ```
#[must_use]
pub fn is_sensitive_header(name: &HeaderName, value: &HeaderValue) -> bool {
    value.is_sensitive() || is_sensitive_header_name(name)
}

/// Whether a header of this name carries credentials: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, `Set-Cookie`, `X-API-Key`, or a name
/// that looks secret (see the [module docs](self)).
///
/// ```
/// use http::HeaderName;
/// use parapet_trace::redact::is_sensitive_header_name;
///
/// assert!(is_sensitive_header_name(&http::header::AUTHORIZATION));
/// assert!(is_sensitive_header_name(&HeaderName::from_static("x-auth-token")));
/// assert!(!is_sensitive_header_name(&http::header::CONTENT_TYPE));
/// ```
#[must_use]
pub fn is_sensitive_header_name(name: &HeaderName) -> bool {
    *name == AUTHORIZATION
        || *name == PROXY_AUTHORIZATION
        || *name == COOKIE
        || *name == SET_COOKIE
        || *name == X_API_KEY
        || looks_secret(name.as_str().as_bytes())
}

/// Whether a query parameter of this name (raw, as it appears in the URL)
/// carries a secret (see the [module docs](self)).
///
/// ```
/// use parapet_trace::redact::is_sensitive_query_param;
///
/// for name in ["token", "access_token", "api_key", "apiKey", "X-Amz-Signature", "sig", "client%5Fsecret"] {
///     assert!(is_sensitive_query_param(name), "{name}");
/// }
/// for name in ["page", "q", "monkey", "design", "sort"] {
///     assert!(!is_sensitive_query_param(name), "{name}");
/// }
/// ```
#[must_use]
pub fn is_sensitive_query_param(name: &str) -> bool {
    let raw = name.as_bytes();
    if raw.iter().any(|b| matches!(b, b'%' | b'+')) {
        looks_secret(&percent_decode(raw))
    } else {
        looks_secret(raw)
    }
}

/// Substrings that mark a name as secret wherever they appear.
const SECRET_PARTS: [&[u8]; 8] = [
    b"token",
    b"secret",
    b"password",
    b"passwd",
    b"signature",
    b"credential",
    b"apikey",
    b"authorization",
];

/// Words that mark a name as secret when they stand alone.
const SECRET_WORDS: [&[u8]; 5] = [b"key", b"sig", b"pwd", b"auth", b"session"];

fn looks_secret(name: &[u8]) -> bool {
    contains_secret_part(name) || has_secret_word(name)
}

fn contains_secret_part(name: &[u8]) -> bool {
    SECRET_PARTS.iter().any(|part| {
        name.windows(part.len())
            .any(|w| w.eq_ignore_ascii_case(part))
    })
}

fn has_secret_word(name: &[u8]) -> bool {
    let mut start = 0;
    let mut prev_lower = false;
    for (i, &b) in name.iter().enumerate() {
        let separator = !b.is_ascii_alphanumeric();
        let camel = prev_lower && b.is_ascii_uppercase();
        if separator || camel {
            if is_secret_word(name.get(start..i).unwrap_or_default()) {
                return true;
            }
            start = if separator { i + 1 } else { i };
        }
        prev_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
    }
    is_secret_word(name.get(start..).unwrap_or_default())
}

fn is_secret_word(word: &[u8]) -> bool {
    SECRET_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

fn percent_decode(raw: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'%' => {
                let pair = raw
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(raw.get(i + 2).copied().and_then(hex));
                if let Some((hi, lo)) = pair {
                    out.push((hi << 4) | lo);
                    i += 3;
                    continue;
                }
                out.push(b);
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// A URI that formats with its secrets replaced by `REDACTED`: userinfo and
/// the values of sensitive query parameters (see the [module docs](self)).
///
/// It formats lazily, so it costs nothing until something displays it;
/// handing it to a span field with `%` defers the work to a subscriber that
/// actually records the field.
///
/// ```
/// use http::Uri;
/// use parapet_trace::redact::RedactedUri;
///
/// let uri = Uri::from_static("http://localhost:8080/a?sig=abc&sig=def&x=1");
/// assert_eq!(
///     RedactedUri::new(&uri).to_string(),
///     "http://localhost:8080/a?sig=REDACTED&sig=REDACTED&x=1",
/// );
/// ```
#[derive(Clone, Copy)]
pub struct RedactedUri<'a>(&'a Uri);

impl<'a> RedactedUri<'a> {
    /// Wraps `uri` for display.
    #[must_use]
    pub fn new(uri: &'a Uri) -> Self {
        Self(uri)
    }
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        if let Some(scheme) = uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            let text = authority.as_str();
            match text.rfind('@') {
                Some(at) => {
                    f.write_str("REDACTED:REDACTED@")?;
                    f.write_str(text.get(at + 1..).unwrap_or_default())?;
                }
                None => f.write_str(text)?,
            }
        }
        f.write_str(uri.path())?;
        if let Some(query) = uri.query() {
            f.write_str("?")?;
            write_redacted_query(f, query)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Writes `query` (without its `?`) with the values of sensitive parameters
/// replaced by `REDACTED`.
///
/// ```
/// use parapet_trace::redact::write_redacted_query;
///
/// let mut out = String::new();
/// write_redacted_query(&mut out, "a=1&password=p&b").unwrap();
/// assert_eq!(out, "a=1&password=REDACTED&b");
/// ```
///
/// # Errors
///
/// Only those of the writer.
pub fn write_redacted_query(out: &mut impl fmt::Write, query: &str) -> fmt::Result {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.write_char('&')?;
        }
        match pair.split_once('=') {
            Some((name, _)) if is_sensitive_query_param(name) => {
                write!(out, "{name}={REDACTED}")?;
            }
            _ => out.write_str(pair)?,
        }
    }
    Ok(())
}

/// `uri` as a string with its secrets redacted: [`RedactedUri`] formatted.
#[must_use]
pub fn redact_uri(uri: &Uri) -> String {
    RedactedUri::new(uri).to_string()
}

/// Headers that format (`Debug`) with the values of sensitive headers
/// replaced by `REDACTED`.
///
/// ```
/// use http::{HeaderMap, HeaderValue};
/// use parapet_trace::redact::RedactedHeaders;
///
/// let mut h = HeaderMap::new();
/// h.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
/// h.insert("accept", HeaderValue::from_static("application/json"));
/// let shown = format!("{:?}", RedactedHeaders::new(&h));
/// assert!(shown.contains("\"accept\": \"application/json\""));
/// assert!(shown.contains("\"authorization\": \"REDACTED\""));
/// assert!(!shown.contains("s3cr3t"));
/// ```
#[derive(Clone, Copy)]
pub struct RedactedHeaders<'a>(&'a HeaderMap);

impl<'a> RedactedHeaders<'a> {
    /// Wraps `headers` for display.
    #[must_use]
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self(headers)
    }
}

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Value<'v>(&'v HeaderValue, bool);
        impl fmt::Debug for Value<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.1 {
                    write!(f, "\"{REDACTED}\"")
                } else {
                    fmt::Debug::fmt(self.0, f)
                }
            }
        }
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(name, value)| (name, Value(value, is_sensitive_header(name, value)))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(uri: &str) -> String {
        redact_uri(&uri.parse::<Uri>().unwrap())
    }

    #[test]
    fn the_named_headers_are_sensitive_in_any_case() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "COOKIE",
            "set-cookie",
            "X-API-Key",
            "x-auth-token",
            "x-amz-security-token",
            "x-goog-api-key",
            "x-session-id",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(is_sensitive_header_name(&name), "{name}");
        }
        for name in [
            "accept",
            "content-type",
            "x-request-id",
            "user-agent",
            "traceparent",
            "x-monkey",
        ] {
            let name = HeaderName::from_static(name);
            assert!(!is_sensitive_header_name(&name), "{name}");
        }
    }

    #[test]
    fn secret_looking_query_names() {
        for name in [
            "token",
            "TOKEN",
            "access_token",
            "refresh-token",
            "id_token",
            "key",
            "api_key",
            "apikey",
            "apiKey",
            "ApiKey",
            "sessionKey",
            "secret",
            "client_secret",
            "signature",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "X-Amz-Security-Token",
            "sig",
            "Sig",
            "password",
            "db.password",
            "user[password]",
            "pwd",
            "auth",
            "access%5Ftoken",
            "api%5fkey",
        ] {
            assert!(is_sensitive_query_param(name), "{name}");
        }
        for name in [
            "",
            "page",
            "q",
            "limit",
            "monkey",
            "keyword",
            "design",
            "signal",
            "author",
            "X-Amz-Date",
            "%zz",
        ] {
            assert!(!is_sensitive_query_param(name), "{name}");
        }
    }

    #[test]
    fn userinfo_is_replaced() {
        assert_eq!(
            redacted("https://user:pa55@example.com:8443/p"),
            "https://REDACTED:REDACTED@example.com:8443/p"
        );
        assert_eq!(
            redacted("http://user@example.com/"),
            "http://REDACTED:REDACTED@example.com/"
        );
        assert_eq!(redacted("http://example.com/x"), "http://example.com/x");
    }

    #[test]
    fn sensitive_query_values_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redacted(
                "https://s3.example.com/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101&X-Amz-Date=20240101T000000Z&X-Amz-Signature=deadbeef"
            ),
            "https://s3.example.com/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20240101T000000Z&X-Amz-Signature=REDACTED"
        );
        assert_eq!(
            redacted("/p?a=1&&token&key=&b=="),
            "/p?a=1&&token&key=REDACTED&b=="
        );
        assert_eq!(redacted("/p?token=a=b"), "/p?token=REDACTED");
        assert_eq!(redacted("/p?"), "/p?");
        assert_eq!(redacted("/"), "/");
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode(b"a%41%4a%zz%4"), b"aAJ%zz%4");
        assert_eq!(percent_decode(b"a+b"), b"a b");
    }

    #[test]
    fn debug_of_a_redacted_uri_is_quoted() {
        let uri = Uri::from_static("http://h/?token=x");
        assert_eq!(
            format!("{:?}", RedactedUri::new(&uri)),
            "\"http://h/?token=REDACTED\""
        );
    }

    #[test]
    fn headers_marked_sensitive_are_redacted() {
        let mut h = HeaderMap::new();
        let mut v = HeaderValue::from_static("hidden-value");
        v.set_sensitive(true);
        h.insert("x-custom", v);
        h.insert("cookie", HeaderValue::from_static("sid=abc"));
        let shown = format!("{:?}", RedactedHeaders::new(&h));
        assert!(!shown.contains("hidden-value"), "{shown}");
        assert!(!shown.contains("sid=abc"), "{shown}");
    }
}
