//! governor's clock, backed by `tokio::time` so that paused-time tests
//! control the rate limiter.

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A [`Clock`] reading `tokio::time::Instant::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

/// A `tokio::time::Instant` as governor's [`Reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(pub(crate) Instant);

fn nanos(d: Duration) -> Nanos {
    // Saturates instead of panicking past ~584 years.
    Nanos::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, rhs: Nanos) -> Self {
        let d = Duration::from_nanos(rhs.as_u64());
        Self(
            self.0
                .checked_add(d)
                .unwrap_or_else(|| parapet_core::far_future(self.0)),
        )
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        nanos(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        let d = Duration::from_nanos(duration.as_u64());
        Self(self.0.checked_sub(d).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioClock;
        let t0 = clock.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let t1 = clock.now();
        assert_eq!(t1.duration_since(t0), nanos(Duration::from_millis(1500)));
        assert_eq!(t0.duration_since(t1), Nanos::from(0));
        assert_eq!(t0 + nanos(Duration::from_millis(1500)), t1);
        assert_eq!(t1.saturating_sub(nanos(Duration::from_millis(1500))), t0);
    }

    #[tokio::test(start_paused = true)]
    async fn arithmetic_saturates() {
        let t = TokioClock.now();
        assert!(t + Nanos::from(u64::MAX) > t);
        assert_eq!(nanos(Duration::MAX), Nanos::from(u64::MAX));
    }
}
