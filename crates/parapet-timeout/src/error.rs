//! The errors this crate's layers create.
//!
//! Each one reaches the caller inside a [`BoxError`] (from a service) or as a
//! body error (from a [`TimeoutBody`](crate::TimeoutBody)); downcast to tell
//! them apart.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use parapet_core::RoundedDuration as Rounded;
use parapet_core::{BoxError, Deadline};

/// The call's deadline passed before the call finished.
///
/// Created by [`CallDeadline`](crate::CallDeadline): while waiting for the
/// response (retries and waits included), or, when the deadline covers the
/// body, while the response body was being read
/// ([`is_body`](Self::is_body)); the body read so far is then incomplete.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use parapet_timeout::{DeadlineExceeded, DeadlineLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// let mut svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_secs(1)))
///     .service_fn(|_req: http::Request<()>| async {
///         tokio::time::sleep(Duration::from_secs(5)).await;
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
/// let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
/// assert!(!exceeded.is_body());
/// assert_eq!(exceeded.to_string(), "call deadline exceeded");
/// # }
/// ```
#[derive(Debug)]
pub struct DeadlineExceeded {
    deadline: Deadline,
    body: bool,
    source: Option<BoxError>,
}

impl DeadlineExceeded {
    pub(crate) const fn new(deadline: Deadline, body: bool) -> Self {
        Self {
            deadline,
            body,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: BoxError) -> Self {
        self.source = Some(source);
        self
    }

    /// The deadline that passed (the one in force: the earlier of the
    /// layer's and the caller's).
    #[must_use]
    pub const fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Whether the deadline passed while the response body was being read,
    /// after the response headers had arrived.
    #[must_use]
    pub const fn is_body(&self) -> bool {
        self.body
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.body {
            f.write_str("call deadline exceeded while reading the response body")
        } else {
            f.write_str("call deadline exceeded")
        }
    }
}

impl Error for DeadlineExceeded {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// One attempt did not get its response headers in time.
///
/// Created by [`AttemptTimeout`](crate::AttemptTimeout). The limit that
/// applied is the smaller of the layer's own limit and the time that was left
/// before the call's deadline; [`is_deadline`](Self::is_deadline) tells which,
/// so a retry policy can retry an attempt that hit its own limit and give up
/// on one that hit the deadline.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use parapet_timeout::{AttemptTimedOut, AttemptTimeoutLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// let mut svc = ServiceBuilder::new()
///     .layer(AttemptTimeoutLayer::new(Duration::from_secs(2)))
///     .service_fn(|_req: http::Request<()>| async {
///         tokio::time::sleep(Duration::from_secs(5)).await;
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
/// let timed_out = err.downcast_ref::<AttemptTimedOut>().unwrap();
/// assert!(timed_out.is_attempt_limit());
/// assert_eq!(timed_out.limit(), Duration::from_secs(2));
/// assert_eq!(timed_out.to_string(), "attempt timed out after 2s (attempt limit)");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptTimedOut {
    limit: Duration,
    deadline: bool,
}

impl AttemptTimedOut {
    pub(crate) const fn new(limit: Duration, deadline: bool) -> Self {
        Self { limit, deadline }
    }

    /// The limit that applied to this attempt: the layer's own limit, or the
    /// time that was left before the call's deadline when the attempt
    /// started, whichever was smaller.
    #[must_use]
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// Whether the call's deadline was the limit that applied (it was nearer
    /// than the layer's own limit): no further attempt can succeed.
    #[must_use]
    pub const fn is_deadline(&self) -> bool {
        self.deadline
    }

    /// Whether the layer's own per-attempt limit applied: another attempt
    /// may still fit before the deadline.
    #[must_use]
    pub const fn is_attempt_limit(&self) -> bool {
        !self.deadline
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.deadline {
            "call deadline"
        } else {
            "attempt limit"
        };
        write!(
            f,
            "attempt timed out after {} ({which})",
            Rounded(self.limit)
        )
    }
}

impl Error for AttemptTimedOut {}

/// The response body stalled or took too long, and is incomplete.
///
/// Created by the body of [`AttemptTimeout`](crate::AttemptTimeout) when
/// [`body_idle_timeout`](crate::AttemptTimeoutLayer::body_idle_timeout) or
/// [`body_timeout`](crate::AttemptTimeoutLayer::body_timeout) is set. It is
/// the body's error: the frames read before it are not the whole body.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use http_body_util::BodyExt;
/// use parapet_timeout::{AttemptTimeoutLayer, BodyTimedOut};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// // A body that never sends a frame.
/// struct Stalled;
/// impl http_body::Body for Stalled {
///     type Data = bytes::Bytes;
///     type Error = std::convert::Infallible;
///     fn poll_frame(
///         self: std::pin::Pin<&mut Self>,
///         _: &mut std::task::Context<'_>,
///     ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
///         std::task::Poll::Pending
///     }
/// }
///
/// let mut svc = ServiceBuilder::new()
///     .layer(AttemptTimeoutLayer::new(Duration::from_secs(2))
///         .body_idle_timeout(Duration::from_secs(1)))
///     .service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(Stalled))
///     });
/// let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// let err = res.into_body().collect().await.unwrap_err();
/// let timed_out = err.downcast_ref::<BodyTimedOut>().unwrap();
/// assert!(timed_out.is_idle());
/// assert_eq!(timed_out.to_string(), "response body idle for 1s");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BodyTimedOut {
    limit: Duration,
    idle: bool,
}

impl BodyTimedOut {
    pub(crate) const fn new(limit: Duration, idle: bool) -> Self {
        Self { limit, idle }
    }

    /// The limit that was exceeded: the idle timeout, or the total time
    /// allowed for the body.
    #[must_use]
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// Whether no frame arrived for the whole idle timeout.
    #[must_use]
    pub const fn is_idle(&self) -> bool {
        self.idle
    }

    /// Whether the body was still not finished when its total time limit
    /// ran out.
    #[must_use]
    pub const fn is_total(&self) -> bool {
        !self.idle
    }
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.idle {
            write!(f, "response body idle for {}", Rounded(self.limit))
        } else {
            write!(
                f,
                "response body not finished within {}",
                Rounded(self.limit)
            )
        }
    }
}

impl Error for BodyTimedOut {}
