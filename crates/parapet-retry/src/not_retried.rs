//! [`NotRetried`]: why a retryable failure came back without a retry.

use std::time::Duration;

use http::Extensions;

/// Set on a response that was a retryable failure (by the status list or
/// the classifier) but was returned without a retry, saying why.
///
/// A response that was not a failure, or a call whose policy allows one
/// attempt, carries none. Errors carry none either: the inner service's
/// error is returned as it is, so that it can still be downcast.
///
/// Nothing turns such a response into an error: it comes back as it is
/// (status, headers, body), with this extension saying why it was not
/// retried. The `parapet` facade does not read it either; it hands the
/// response on, and the extension stays on it
/// (`parapet::retry::NotRetried::get(response.extensions())`). To act on
/// the server's wait, read the response's `Retry-After` header (or
/// [`retry_after`](Self::retry_after) here), or, with the facade, call
/// `error_for_status()` and read `parapet::Error::retry_after()` (which
/// the facade works out from the headers itself, and clamps: see its
/// docs).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response};
/// use parapet_core::ReplayBody;
/// use parapet_retry::{NotRetried, NotRetriedReason, Retry, RetryPolicy};
/// use tower::{ServiceExt, service_fn};
///
/// let server = service_fn(|_req: Request<ReplayBody>| async {
///     let res = Response::builder().status(503).header("retry-after", "86400").body(String::new());
///     Ok::<_, Infallible>(res.unwrap())
/// });
/// let client = Retry::new(server, RetryPolicy::default());
/// let res = client.oneshot(Request::get("http://api.test/").body(String::new()).unwrap()).await.unwrap();
/// let why = NotRetried::get(res.extensions()).unwrap();
/// assert_eq!(why.reason(), NotRetriedReason::RetryAfterTooLong);
/// assert_eq!(why.retry_after(), Some(Duration::from_secs(86400)));
/// assert_eq!(why.attempts(), 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotRetried {
    pub(crate) reason: NotRetriedReason,
    pub(crate) attempts: u32,
    pub(crate) retry_after: Option<Duration>,
}

/// Why a retryable failure was not retried; see [`NotRetried`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRetriedReason {
    /// The request may not be sent twice (and did not fail before leaving).
    NotIdempotent,
    /// It was the last attempt the policy allows.
    NoAttemptsLeft,
    /// The request body cannot be sent again (over the replay cap, or its
    /// stream failed).
    BodyNotReplayable,
    /// The server's `Retry-After` is longer than the policy's maximum.
    RetryAfterTooLong,
    /// The server's `Retry-After` ends after the call's deadline (or the
    /// policy's `max_elapsed`).
    RetryAfterPastDeadline,
    /// The backoff would end after the call's deadline (or the policy's
    /// `max_elapsed`).
    WaitPastDeadline,
    /// The host's retry budget is spent.
    BudgetExhausted,
    /// The host's [retry quota](crate::RetryQuota) holds fewer tokens than
    /// the retry costs.
    QuotaExhausted,
}

impl NotRetried {
    /// Why.
    #[must_use]
    pub fn reason(&self) -> NotRetriedReason {
        self.reason
    }

    /// How many attempts were made, this one included.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The server's `Retry-After`, when the response carried a valid one on
    /// a status whose `Retry-After` is obeyed (429 and 503 by default).
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The value in these (response) extensions, if any.
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }
}
