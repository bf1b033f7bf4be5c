//! The errors a [`RetryBody`](crate::RetryBody) yields of its own.

use std::error::Error;
use std::fmt;

use http::StatusCode;
use parapet_core::BoxError;

use crate::not_retried::NotRetried;

/// A response body broke (a reset, or an end before its `Content-Length`)
/// and the request will be sent again if the body is polled again.
///
/// Yielded once by a [`RetryBody`](crate::RetryBody) in place of the
/// body's error, when the request may be re-sent (see the
/// [crate docs](crate#a-body-that-breaks)). What was read of the body so
/// far is to be thrown away: polling the body again waits the backoff,
/// re-sends the request and goes on with the new response's body *from its
/// start*. A reader that does not want that (one that streams the body on)
/// treats this as the body's error and stops; nothing is re-sent then.
///
/// ```
/// use parapet_retry::BodyRestart;
///
/// fn restarts(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
///     e.downcast_ref::<BodyRestart>().map(BodyRestart::bytes_seen)
/// }
/// # let _ = restarts;
/// ```
#[derive(Debug)]
pub struct BodyRestart {
    pub(crate) seen: u64,
    pub(crate) attempt: u32,
    pub(crate) source: BoxError,
}

impl BodyRestart {
    /// How many bytes of the broken body were passed on before it broke
    /// (the bytes a reader must drop).
    #[must_use]
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// The number of the attempt that polling again starts (2 or more).
    #[must_use]
    pub fn next_attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Display for BodyRestart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body broke after {} bytes; polling again re-sends the request",
            self.seen
        )
    }
}

impl Error for BodyRestart {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The request re-sent after a [`BodyRestart`] did not bring a body to go
/// on with: its final answer had another status than the first response,
/// or it failed. The [`RetryBody`](crate::RetryBody) ends with this error.
///
/// ```
/// use parapet_retry::BodyRestartFailed;
///
/// fn why(e: &BodyRestartFailed) -> String {
///     match e.status() {
///         Some(status) => format!("answered {status} the second time"),
///         None => format!("failed: {:?}", std::error::Error::source(e)),
///     }
/// }
/// # let _ = why;
/// ```
#[derive(Debug)]
pub struct BodyRestartFailed {
    pub(crate) kind: RestartFailure,
    pub(crate) expected: StatusCode,
}

#[derive(Debug)]
pub(crate) enum RestartFailure {
    /// Another status, and why that one was not retried, if it was a
    /// retryable failure.
    Status(StatusCode, Option<NotRetried>),
    /// The re-sent request failed (after its own retries, if any).
    Error(BoxError),
}

impl BodyRestartFailed {
    /// The status the re-sent request's final answer had, when it had one
    /// (it differs from [`expected`](Self::expected)).
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match &self.kind {
            RestartFailure::Status(status, _) => Some(*status),
            RestartFailure::Error(_) => None,
        }
    }

    /// The status of the response whose body broke.
    #[must_use]
    pub fn expected(&self) -> StatusCode {
        self.expected
    }

    /// Why the answer with another status was not retried, when it was a
    /// retryable failure (a 503 on the last attempt, say).
    #[must_use]
    pub fn not_retried(&self) -> Option<NotRetried> {
        match &self.kind {
            RestartFailure::Status(_, why) => *why,
            RestartFailure::Error(_) => None,
        }
    }
}

impl fmt::Display for BodyRestartFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RestartFailure::Status(status, _) => write!(
                f,
                "response body broke, and the re-sent request was answered with status {} instead of {}",
                status.as_u16(),
                self.expected.as_u16()
            ),
            RestartFailure::Error(_) => {
                f.write_str("response body broke, and the re-sent request failed")
            }
        }
    }
}

impl Error for BodyRestartFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            RestartFailure::Error(e) => Some(&**e),
            RestartFailure::Status(..) => None,
        }
    }
}
