//! How many calls per period, and how many at once.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// A rate: `n` calls per period, with a burst of up to `burst` calls at once.
///
/// The bucket holds `burst` tokens and gains one every `period / n`; a call
/// takes one (kept as a GCRA, the "generic cell rate algorithm": one
/// timestamp per bucket, which behaves as this token bucket without a refill
/// task). Unless [`burst`](Self::burst) says otherwise, the burst is `n`: a
/// full period's worth may go at once, the way a server's fixed window would
/// allow. Use `.burst(NonZeroU32::MIN)` to space calls evenly.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use parapet_ratelimit::Quota;
///
/// let n = |n| NonZeroU32::new(n).unwrap();
/// let q = Quota::per_second(n(100)).burst(n(1));
/// assert_eq!(q.interval(), Duration::from_millis(10));
/// assert_eq!(q.burst_size(), n(1));
///
/// let q = Quota::n_per(n(5), Duration::from_secs(10)).unwrap();
/// assert_eq!(q.interval(), Duration::from_secs(2));
/// assert_eq!(q.burst_size(), n(5));
/// assert!(Quota::n_per(n(5), Duration::ZERO).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    interval: Duration,
    burst: NonZeroU32,
}

impl Quota {
    const fn per(period_ns: u64, n: NonZeroU32) -> Self {
        Self {
            interval: Duration::from_nanos(period_ns / n.get() as u64),
            burst: n,
        }
    }

    /// `n` calls per second, burst `n`.
    #[must_use]
    pub const fn per_second(n: NonZeroU32) -> Self {
        Self::per(1_000_000_000, n)
    }

    /// `n` calls per minute, burst `n`.
    #[must_use]
    pub const fn per_minute(n: NonZeroU32) -> Self {
        Self::per(60 * 1_000_000_000, n)
    }

    /// `n` calls per hour, burst `n`.
    #[must_use]
    pub const fn per_hour(n: NonZeroU32) -> Self {
        Self::per(3600 * 1_000_000_000, n)
    }

    /// `n` calls per `period`, burst `n`; `None` when `period / n` is under
    /// a nanosecond.
    #[must_use]
    pub fn n_per(n: NonZeroU32, period: Duration) -> Option<Self> {
        Some(Self::every(period / n.get())?.burst(n))
    }

    /// One call every `interval`, burst 1; `None` when `interval` is zero.
    #[must_use]
    pub fn every(interval: Duration) -> Option<Self> {
        (!interval.is_zero()).then_some(Self {
            interval,
            burst: NonZeroU32::MIN,
        })
    }

    /// The same rate, with up to `burst` calls at once.
    #[must_use]
    pub const fn burst(self, burst: NonZeroU32) -> Self {
        Self {
            interval: self.interval,
            burst,
        }
    }

    /// The time it takes to earn one call.
    #[must_use]
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// The most calls that may go at once.
    #[must_use]
    pub const fn burst_size(&self) -> NonZeroU32 {
        self.burst
    }

    /// The time an empty bucket takes to fill up again.
    pub(crate) fn refill_time(&self) -> Duration {
        self.interval().saturating_mul(self.burst_size().get())
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("interval", &self.interval())
            .field("burst", &self.burst_size())
            .finish()
    }
}
