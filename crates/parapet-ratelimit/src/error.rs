//! The errors these layers create. Each is its own type so that a caller can
//! downcast it from the `BoxError` the services return.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use parapet_core::RoundedDuration as Rounded;
use tokio::time::Instant;

/// The client-side rate limit would not let the call go in time.
///
/// Returned by [`RateLimit`](crate::RateLimit) in reject mode as soon as the
/// bucket is empty, and in wait mode when the earliest moment the call could
/// go lies beyond the layer's `max_wait` or the call's
/// [`Deadline`](parapet_core::Deadline). Nothing was sent and no token was
/// consumed.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use parapet_core::BoxError;
/// use parapet_ratelimit::{Quota, RateLimitLayer, RateLimited};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
/// let mut svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(quota).reject())
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, BoxError>(()) });
///
/// svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
/// let limited = err.downcast_ref::<RateLimited>().unwrap();
/// assert_eq!(limited.wait(), Duration::from_secs(1));
/// assert_eq!(err.to_string(), "rate limited: the next call may go in 1s");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    earliest: Instant,
    wait: Duration,
}

impl RateLimited {
    pub(crate) fn new(earliest: Instant, now: Instant) -> Self {
        Self {
            earliest,
            wait: earliest.saturating_duration_since(now),
        }
    }

    /// The earliest instant at which the call could have gone.
    #[must_use]
    pub fn earliest(&self) -> Instant {
        self.earliest
    }

    /// How long the call would have had to wait, measured when it failed.
    #[must_use]
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited: the next call may go in {}",
            Rounded(self.wait)
        )
    }
}

impl Error for RateLimited {}

/// The server told us to hold back from this authority, and the gate would
/// not open in time.
///
/// Returned by [`Throttle`](crate::Throttle) in reject mode while the gate is
/// closed, and in wait mode when it opens only after the layer's `max_wait`
/// or the call's [`Deadline`](parapet_core::Deadline). Nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    until: Instant,
    wait: Duration,
}

impl Throttled {
    pub(crate) fn new(until: Instant, now: Instant) -> Self {
        Self {
            until,
            wait: until.saturating_duration_since(now),
        }
    }

    /// When the gate for this authority opens (before release jitter).
    #[must_use]
    pub fn until(&self) -> Instant {
        self.until
    }

    /// The time that was left before the gate opens, measured when the call
    /// failed.
    #[must_use]
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "throttled by the server: the next call may go in {}",
            Rounded(self.wait)
        )
    }
}

impl Error for Throttled {}

/// No concurrency slot became free in time.
///
/// Returned by [`ConcurrencyLimit`](crate::ConcurrencyLimit) in reject mode
/// when every slot is taken, and in wait mode when none frees up within the
/// layer's `max_wait` or before the call's
/// [`Deadline`](parapet_core::Deadline). Nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimited {
    limit: usize,
    waited: Duration,
}

impl ConcurrencyLimited {
    pub(crate) fn new(limit: usize, waited: Duration) -> Self {
        Self { limit, waited }
    }

    /// The most calls allowed in flight (overall, or to this authority).
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How long the call waited for a slot before giving up (zero in reject
    /// mode).
    #[must_use]
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for ConcurrencyLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "concurrency limit reached: {} calls already in flight",
            self.limit
        )
    }
}

impl Error for ConcurrencyLimited {}
