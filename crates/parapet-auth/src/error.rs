//! The errors this crate creates.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// A credential given to a constructor that cannot be sent as it is.
///
/// Construction validates every value once, so a malformed token (say, one
/// with a trailing newline read from a file) is reported here instead of
/// failing, or panicking, on every request. The message names the value
/// and the problem, never the value's content.
///
/// ```
/// use parapet_auth::AuthLayer;
///
/// let err = AuthLayer::bearer("abc\n").unwrap_err();
/// assert!(err.is_control_character());
/// assert_eq!(err.to_string(), "invalid bearer token: it contains whitespace or a control character");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCredential {
    what: &'static str,
    problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Empty,
    NotVisible,
    ControlCharacter,
    Colon,
    NotAHeaderName,
    NotAnAbsoluteUrl,
    UnusableUri,
}

impl InvalidCredential {
    pub(crate) const fn empty(what: &'static str) -> Self {
        Self {
            what,
            problem: Problem::Empty,
        }
    }

    pub(crate) const fn not_visible(what: &'static str) -> Self {
        Self {
            what,
            problem: Problem::NotVisible,
        }
    }

    pub(crate) const fn control_character(what: &'static str) -> Self {
        Self {
            what,
            problem: Problem::ControlCharacter,
        }
    }

    pub(crate) const fn colon(what: &'static str) -> Self {
        Self {
            what,
            problem: Problem::Colon,
        }
    }

    pub(crate) const fn not_a_header_name(what: &'static str) -> Self {
        Self {
            what,
            problem: Problem::NotAHeaderName,
        }
    }

    pub(crate) const fn not_an_absolute_url(what: &'static str) -> Self {
        Self {
            what,
            problem: Problem::NotAnAbsoluteUrl,
        }
    }

    pub(crate) const fn unusable_uri() -> Self {
        Self {
            what: "request URI",
            problem: Problem::UnusableUri,
        }
    }

    /// Which value was rejected: `"bearer token"`, `"username"`, `"API key"`,
    /// `"header name"`, `"token URL"`...
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The value was empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.problem == Problem::Empty
    }

    /// The value holds whitespace or a control character (a newline, say)
    /// where none may be.
    #[must_use]
    pub fn is_control_character(&self) -> bool {
        matches!(
            self.problem,
            Problem::ControlCharacter | Problem::NotVisible
        )
    }
}

impl fmt::Display for InvalidCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.what;
        match self.problem {
            Problem::Empty => write!(f, "invalid {what}: it is empty"),
            Problem::NotVisible => write!(
                f,
                "invalid {what}: it contains whitespace or a control character"
            ),
            Problem::ControlCharacter => {
                write!(f, "invalid {what}: it contains a control character")
            }
            Problem::Colon => write!(f, "invalid {what}: it contains a colon"),
            Problem::NotAHeaderName => write!(f, "invalid {what}: it is not a valid header name"),
            Problem::NotAnAbsoluteUrl => {
                write!(f, "invalid {what}: it is not an absolute http(s) URL")
            }
            Problem::UnusableUri => write!(f, "invalid {what}: the API key cannot be added to it"),
        }
    }
}

impl Error for InvalidCredential {}

type Source = Arc<dyn Error + Send + Sync>;

/// A token could not be obtained.
///
/// Created by the OAuth 2.0 providers, by the [`TokenCache`](crate::TokenCache)
/// (timeouts) and by custom providers ([`TokenError::transient`],
/// [`TokenError::permanent`]). The layer returns it, boxed, when a request
/// could not get a token; downcast the `BoxError` to read it.
///
/// `Display` fits on one log line: what the token endpoint sent (its
/// `error`, `error_description`, a token type) is shown cut to 256 bytes,
/// with every control, line-separator and bidirectional or invisible
/// formatting character replaced by U+FFFD, so a hostile server cannot
/// forge or hide log lines.
///
/// Transient errors (timeouts, transport failures, 5xx, 429) are retried by
/// the cache with backoff; the others are not. A refresh-token request that
/// may have reached the server unanswered is not transient
/// ([`is_refresh_outcome_unknown`](Self::is_refresh_outcome_unknown)): its
/// refresh token may be spent. `Clone` (its source is
/// shared) because one failed fetch answers every caller that waited for it.
///
/// ```
/// use http::StatusCode;
/// use parapet_auth::TokenError;
///
/// let e = TokenError::transient(std::io::Error::other("connection refused"));
/// assert!(e.is_transient());
/// assert_eq!(e.status(), None);
/// ```
#[derive(Debug, Clone)]
pub struct TokenError {
    kind: Kind,
    source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Timeout(Duration),
    Status {
        status: StatusCode,
        error: Option<String>,
        description: Option<String>,
    },
    Malformed(&'static str),
    TokenType(String),
    TooLarge(usize),
    InvalidToken,
    Transport,
    Provider {
        transient: bool,
    },
    Closed,
    RefreshOutcomeUnknown,
}

/// Server-supplied strings kept in an error are cut to this many bytes.
const MAX_SERVER_TEXT: usize = 256;

/// What a server-supplied string becomes before an error keeps it: every
/// character that could forge or hide log text (control characters, line
/// and paragraph separators, bidirectional and invisible formatting
/// characters) replaced by U+FFFD, the result cut to [`MAX_SERVER_TEXT`]
/// bytes at a character boundary.
fn server_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_SERVER_TEXT));
    for c in s.chars() {
        let c = if is_hidden_or_control(c) {
            char::REPLACEMENT_CHARACTER
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_SERVER_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

/// C0 and C1 controls (`\r`, `\n`, `\t`, ESC, NEL...), Unicode line and
/// paragraph separators, bidirectional marks, embeddings, overrides and
/// isolates (U+202E...), and invisible characters (zero-width spaces and
/// joiners, word joiner, BOM).
fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

impl TokenError {
    /// A custom provider's failure that may go away on its own (the token
    /// service is down, a connection failed): the cache retries it with
    /// backoff.
    pub fn transient(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            kind: Kind::Provider { transient: true },
            source: Some(Arc::from(source.into())),
        }
    }

    /// A custom provider's failure that retrying will not fix (credentials
    /// rejected): the cache does not retry it.
    pub fn permanent(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            kind: Kind::Provider { transient: false },
            source: Some(Arc::from(source.into())),
        }
    }

    pub(crate) const fn timeout(after: Duration) -> Self {
        Self {
            kind: Kind::Timeout(after),
            source: None,
        }
    }

    pub(crate) fn rejected(
        status: StatusCode,
        error: Option<&str>,
        description: Option<&str>,
    ) -> Self {
        Self {
            kind: Kind::Status {
                status,
                error: error.map(server_text),
                description: description.map(server_text),
            },
            source: None,
        }
    }

    pub(crate) const fn malformed(what: &'static str) -> Self {
        Self {
            kind: Kind::Malformed(what),
            source: None,
        }
    }

    pub(crate) fn token_type(token_type: &str) -> Self {
        Self {
            kind: Kind::TokenType(server_text(token_type)),
            source: None,
        }
    }

    pub(crate) const fn too_large(limit: usize) -> Self {
        Self {
            kind: Kind::TooLarge(limit),
            source: None,
        }
    }

    pub(crate) const fn invalid_token() -> Self {
        Self {
            kind: Kind::InvalidToken,
            source: None,
        }
    }

    pub(crate) fn transport(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            kind: Kind::Transport,
            source: Some(Arc::from(source.into())),
        }
    }

    pub(crate) fn refresh_outcome_unknown(cause: TokenError) -> Self {
        Self {
            kind: Kind::RefreshOutcomeUnknown,
            source: Some(Arc::new(cause)),
        }
    }

    pub(crate) const fn closed() -> Self {
        Self {
            kind: Kind::Closed,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Whether retrying later may succeed: a timeout, a transport failure,
    /// a 5xx, 408 or 429 answer, a fetch that ended without an answer, or a
    /// custom provider's [`transient`](Self::transient) error.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            Kind::Timeout(_) | Kind::Transport | Kind::Closed => true,
            Kind::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Kind::Provider { transient } => *transient,
            Kind::Malformed(_)
            | Kind::TokenType(_)
            | Kind::TooLarge(_)
            | Kind::InvalidToken
            | Kind::RefreshOutcomeUnknown => false,
        }
    }

    /// The token fetch did not finish within the cache's fetch timeout.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }

    /// The timeout that ran out, for [`is_timeout`](Self::is_timeout).
    #[must_use]
    pub fn timeout_after(&self) -> Option<Duration> {
        match self.kind {
            Kind::Timeout(d) => Some(d),
            _ => None,
        }
    }

    /// The token endpoint refused: a non-2xx answer, or a 2xx one carrying an
    /// OAuth `error`. See [`status`](Self::status) and
    /// [`oauth_error`](Self::oauth_error).
    #[must_use]
    pub fn is_rejected(&self) -> bool {
        matches!(self.kind, Kind::Status { .. })
    }

    /// The token endpoint's HTTP status, when it answered with an error.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match &self.kind {
            Kind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The OAuth `error` code the token endpoint sent (`invalid_client`,
    /// `invalid_grant`...), when it sent one (cleaned and bounded as
    /// [`error_description`](Self::error_description) says).
    #[must_use]
    pub fn oauth_error(&self) -> Option<&str> {
        match &self.kind {
            Kind::Status { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// The OAuth `error_description`, when the token endpoint sent one (cut
    /// to 256 bytes, control and bidirectional formatting characters
    /// replaced by U+FFFD, as in every server-sent text this error keeps).
    #[must_use]
    pub fn error_description(&self) -> Option<&str> {
        match &self.kind {
            Kind::Status { description, .. } => description.as_deref(),
            _ => None,
        }
    }

    /// The token response could not be understood: not JSON, a required
    /// field missing or of the wrong type, a token type other than Bearer,
    /// a body over the size limit, or a token that cannot be sent in a
    /// header.
    #[must_use]
    pub fn is_malformed(&self) -> bool {
        matches!(
            self.kind,
            Kind::Malformed(_) | Kind::TokenType(_) | Kind::TooLarge(_) | Kind::InvalidToken
        )
    }

    /// The token request could not be sent or its answer not read.
    #[must_use]
    pub fn is_transport(&self) -> bool {
        matches!(self.kind, Kind::Transport)
    }

    /// A refresh-token request may have reached the token endpoint without
    /// its answer being read (a reset after it was written, a timeout, a 2xx
    /// answer cut off or unreadable): the refresh token may be spent, and a
    /// rotated one lost. The [`RefreshTokenGrant`](crate::RefreshTokenGrant)
    /// keeps the old refresh token and does not send it again until it is
    /// given one ([`set_refresh_token`](crate::RefreshTokenGrant::set_refresh_token)):
    /// the grant may need re-authorisation. Never transient; the
    /// [`source`](Error::source) says what happened.
    #[must_use]
    pub fn is_refresh_outcome_unknown(&self) -> bool {
        matches!(self.kind, Kind::RefreshOutcomeUnknown)
    }

    /// A custom provider failed ([`transient`](Self::transient) or
    /// [`permanent`](Self::permanent)).
    #[must_use]
    pub fn is_provider(&self) -> bool {
        matches!(self.kind, Kind::Provider { .. })
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Timeout(d) => write!(
                f,
                "token fetch timed out after {}",
                parapet_core::RoundedDuration(*d)
            ),
            Kind::Status {
                status,
                error,
                description,
            } => {
                write!(f, "token endpoint answered {status}")?;
                if let Some(e) = error {
                    write!(f, ": {e}")?;
                }
                if let Some(d) = description {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            Kind::Malformed(what) => write!(f, "malformed token response: {what}"),
            Kind::TokenType(t) => {
                write!(f, "token endpoint issued a {t:?} token, not a Bearer one")
            }
            Kind::TooLarge(limit) => write!(f, "token response is larger than {limit} bytes"),
            Kind::InvalidToken => {
                f.write_str("token endpoint issued a token that cannot be sent in a header")
            }
            Kind::Transport => f.write_str("token request failed"),
            Kind::Provider { .. } => f.write_str("token provider failed"),
            Kind::Closed => f.write_str("token fetch ended without an answer"),
            Kind::RefreshOutcomeUnknown => f.write_str(
                "refresh outcome unknown: the refresh token request may have reached the server \
                 unanswered, so the refresh token (possibly spent) is kept and not sent again; \
                 the grant may need re-authorisation",
            ),
        }
    }
}

impl Error for TokenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_carry_the_oauth_code() {
        let e = TokenError::rejected(
            StatusCode::BAD_REQUEST,
            Some("invalid_client"),
            Some("unknown client"),
        );
        assert!(e.is_rejected() && !e.is_transient());
        assert_eq!(e.oauth_error(), Some("invalid_client"));
        assert_eq!(e.error_description(), Some("unknown client"));
        assert_eq!(
            e.to_string(),
            "token endpoint answered 400 Bad Request: invalid_client (unknown client)"
        );
        assert!(TokenError::rejected(StatusCode::SERVICE_UNAVAILABLE, None, None).is_transient());
    }

    #[test]
    fn server_text_is_bounded() {
        let long = "é".repeat(1000);
        let e = TokenError::rejected(StatusCode::BAD_REQUEST, Some(&long), None);
        assert!(e.oauth_error().unwrap().len() <= MAX_SERVER_TEXT);
    }

    #[test]
    fn server_text_in_display_holds_no_control_or_bidi_characters() {
        // A hostile token endpoint tries to forge log lines, recolour a
        // terminal and reverse the text around it.
        let body = "{\"error\":\"invalid_grant\\u001b]0;x\\u0007\",\
                     \"error_description\":\"bad\\r\\nERROR forged line\\t\\u001b[31mred\\u202eevil\\u2066\\u200f\\u0085\\u2028end\"}";
        let e = crate::parse_token_response(StatusCode::BAD_REQUEST, body.as_bytes()).unwrap_err();
        let shown = e.to_string();
        for c in [
            '\r', '\n', '\t', '\u{1b}', '\u{7}', '\u{202e}', '\u{2066}', '\u{200f}', '\u{85}',
            '\u{2028}',
        ] {
            assert!(!shown.contains(c), "{c:?} in {shown:?}");
            assert!(!e.error_description().unwrap().contains(c), "{c:?}");
            assert!(!e.oauth_error().unwrap().contains(c), "{c:?}");
        }
        assert!(shown.contains("ERROR forged line"), "{shown:?}");
        assert!(shown.starts_with("token endpoint answered 400 Bad Request: invalid_grant"));
        // The token type a server names is cleaned the same way.
        let body = "{\"access_token\":\"a\",\"token_type\":\"MAC\\n\\u202eX\"}";
        let e = crate::parse_token_response(StatusCode::OK, body.as_bytes()).unwrap_err();
        let shown = e.to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{202e}') && !shown.contains("\\n"),
            "{shown:?}"
        );
        // And it stays bounded, however many characters are replaced.
        let long = "\u{202e}".repeat(1000);
        let e = TokenError::rejected(StatusCode::BAD_REQUEST, None, Some(&long));
        assert!(e.error_description().unwrap().len() <= MAX_SERVER_TEXT);
        assert!(e.to_string().len() < MAX_SERVER_TEXT + 64);
    }

    #[test]
    fn sources_are_kept() {
        let e = TokenError::permanent(std::io::Error::other("nope"));
        assert!(!e.is_transient() && e.is_provider());
        assert_eq!(e.source().unwrap().to_string(), "nope");
        assert_eq!(e.to_string(), "token provider failed");
    }
}
