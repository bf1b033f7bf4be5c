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
///
/// A rate read from configuration is a plain number, maybe a fraction:
/// [`rate`](Self::rate) takes it and refuses 0.
///
/// ```
/// # use std::time::Duration;
/// # use parapet_ratelimit::Quota;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = Quota::rate(0.5)?; // one call every 2 s
/// assert_eq!(q.interval(), Duration::from_secs(2));
/// assert_eq!(q.burst_size().get(), 1);
///
/// let per_second: u32 = "50".parse()?;
/// assert_eq!(Quota::rate(per_second)?.interval(), Duration::from_millis(20));
///
/// let err = Quota::rate(0).unwrap_err();
/// assert_eq!(err.to_string(), "invalid rate limit quota: a rate of 0 calls per second admits no call");
/// # Ok(()) }
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

    /// `n` calls per second, burst `n`. For a plain number (a `u32` from
    /// configuration, where 0 must be refused) or a fractional rate, see
    /// [`rate`](Self::rate).
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

    /// `calls_per_second` calls per second: a whole number (`50`, a `u32`)
    /// or a fraction (`0.5`, one call every 2 s). The burst is one second's
    /// whole calls, at least 1 (`50` → 50, `2.5` → 2, `0.5` → 1); change it
    /// with [`burst`](Self::burst).
    ///
    /// A whole number gives exactly [`per_second`](Self::per_second)'s
    /// quota. A fraction gives the interval `1 s / calls_per_second`
    /// rounded to the nanosecond, the unit the bucket counts in, so the
    /// rate is kept to within a nanosecond per call (`1.0 / 3.0` is one
    /// call every 3 s exactly).
    ///
    /// # Errors
    ///
    /// `InvalidQuota` for 0, a negative rate, NaN or infinity, and for a
    /// rate above 10⁹ per second (an interval under a nanosecond) or so low
    /// that its interval does not fit a `Duration`.
    pub fn rate(calls_per_second: impl Into<f64>) -> Result<Self, InvalidQuota> {
        let r: f64 = calls_per_second.into();
        if r == 0.0 {
            return Err(InvalidQuota(Invalid::Zero));
        }
        if !(r.is_finite() && r > 0.0) {
            return Err(InvalidQuota(Invalid::NotPositive));
        }
        if r > 1e9 {
            return Err(InvalidQuota(Invalid::TooFast));
        }
        if r.fract() == 0.0 {
            // NOTE: a whole number in 1..=10^9: the cast is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = r as u32;
            return NonZeroU32::new(n)
                .map(Self::per_second)
                .ok_or(InvalidQuota(Invalid::Zero));
        }
        let nanos = (1e9 / r).round();
        if nanos < 1.0 {
            return Err(InvalidQuota(Invalid::TooFast));
        }
        let interval = if nanos < 18_446_744_073_709_551_615.0 {
            // NOTE: in 1..u64::MAX and whole after `round`: exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let nanos = nanos as u64;
            Duration::from_nanos(nanos)
        } else {
            Duration::try_from_secs_f64(1.0 / r).map_err(|_| InvalidQuota(Invalid::TooSlow))?
        };
        // NOTE: in 0..10^9 and whole after `floor`: exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = r.floor() as u32;
        let burst = NonZeroU32::new(whole).unwrap_or(NonZeroU32::MIN);
        Ok(Self { interval, burst })
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

/// A rate that [`Quota::rate`] refuses: 0, negative, not a number, or out
/// of the range a bucket can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidQuota(Invalid);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invalid {
    Zero,
    NotPositive,
    TooFast,
    TooSlow,
}

impl InvalidQuota {
    /// Whether the rate was 0 (a limiter that admits nothing, most likely a
    /// setting left unset).
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.0 == Invalid::Zero
    }
}

impl fmt::Display for InvalidQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid rate limit quota: ")?;
        f.write_str(match self.0 {
            Invalid::Zero => "a rate of 0 calls per second admits no call",
            Invalid::NotPositive => "the rate is not a positive number",
            Invalid::TooFast => "a rate above 10^9 calls per second is under a nanosecond per call",
            Invalid::TooSlow => {
                "the rate is so low that one call's interval does not fit a Duration"
            }
        })
    }
}

impl std::error::Error for InvalidQuota {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcra::{Gcra, State};

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_whole_rate_is_per_second() {
        for n in [1, 3, 7, 50, 1000, 999_999_999, 1_000_000_000] {
            let per_second = Quota::per_second(NonZeroU32::new(n).unwrap());
            assert_eq!(Quota::rate(n).unwrap(), per_second, "{n}");
            assert_eq!(Quota::rate(f64::from(n)).unwrap(), per_second, "{n}");
        }
    }

    #[test]
    fn a_fractional_rate_keeps_its_interval_to_the_nanosecond() {
        let q = Quota::rate(0.5).unwrap();
        assert_eq!(q.interval(), Duration::from_secs(2));
        assert_eq!(q.burst_size(), NonZeroU32::MIN);
        assert_eq!(
            Quota::rate(1.0 / 3.0).unwrap().interval(),
            Duration::from_secs(3)
        );
        let q = Quota::rate(2.5).unwrap();
        assert_eq!(q.interval(), Duration::from_millis(400));
        assert_eq!(q.burst_size().get(), 2);
        assert_eq!(
            Quota::rate(1.0 / 3600.0).unwrap().interval(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            Quota::rate(0.7).unwrap().interval(),
            Duration::from_nanos(1_428_571_429)
        );
    }

    #[test]
    fn zero_negative_and_non_numbers_are_refused() {
        assert!(Quota::rate(0).unwrap_err().is_zero());
        assert!(!Quota::rate(u32::MAX).unwrap_err().is_zero());
        assert!(Quota::rate(0.0).unwrap_err().is_zero());
        assert!(Quota::rate(-0.0).unwrap_err().is_zero());
        for bad in [
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            2e9,
            1e-300,
        ] {
            let err = Quota::rate(bad).unwrap_err();
            assert!(!err.is_zero(), "{bad}");
            assert!(err.to_string().starts_with("invalid rate limit quota: "));
        }
        assert_eq!(
            Quota::rate(1e9).unwrap().interval(),
            Duration::from_nanos(1)
        );
    }

    #[test]
    fn half_a_call_per_second_admits_one_call_every_two_seconds() {
        let g = Gcra::new(Quota::rate(0.5).unwrap());
        let s = g.decide(State::default(), 0, None).unwrap();
        assert_eq!(g.decide(s, S, None), Err(2 * S));
        let s = g.decide(s, 2 * S, None).unwrap();
        assert_eq!(g.decide(s, 3 * S, None), Err(4 * S));
        // Over 100 s from the start, 51 calls (the first at 0).
        let (mut state, mut admitted, mut now) = (State::default(), 0, 0);
        while now <= 100 * S {
            match g.decide(state, now, None) {
                Ok(next) => {
                    state = next;
                    admitted += 1;
                }
                Err(at) => now = at,
            }
        }
        assert_eq!(admitted, 51);
    }
}
