//! The extension point for limiters whose state lives elsewhere (another
//! process, a shared store such as Redis): they fail calls with this crate's
//! own errors, so that code downcasting [`RateLimited`] or [`Throttled`]
//! handles them unchanged.

use tokio::time::Instant;

use crate::error::{RateLimited, Throttled};

impl RateLimited {
    /// The error a limiter with shared state returns when a call could go
    /// at `earliest` at the soonest, measured at `now`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use parapet_ratelimit::RateLimited;
    /// use tokio::time::Instant;
    ///
    /// let now = Instant::now();
    /// let err = RateLimited::shared(now + Duration::from_millis(5), now);
    /// assert_eq!(err.wait(), Duration::from_millis(5));
    /// ```
    #[must_use]
    pub fn shared(earliest: Instant, now: Instant) -> Self {
        Self::new(earliest, now)
    }
}

impl Throttled {
    /// The error a throttle gate with shared state returns when the gate
    /// opens at `until`, measured at `now`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use parapet_ratelimit::Throttled;
    /// use tokio::time::Instant;
    ///
    /// let now = Instant::now();
    /// let err = Throttled::shared(now + Duration::from_secs(2), now);
    /// assert_eq!(err.wait(), Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn shared(until: Instant, now: Instant) -> Self {
        Self::new(until, now)
    }
}
