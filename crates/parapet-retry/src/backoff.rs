//! Exponential backoff with jitter.

use std::time::Duration;

use parapet_core::Jitter;

/// How the exponential backoff is spread out, so that clients that failed
/// together do not all come back together.
///
/// With `ceiling = min(cap, base × factor^(retry − 1))`, the delay before
/// retry number `retry` (1 for the first retry) is:
///
/// | kind | delay |
/// | --- | --- |
/// | [`Full`](Self::Full) (default) | random in `[0, ceiling)` |
/// | [`Equal`](Self::Equal) | `ceiling / 2` + random in `[0, ceiling / 2)` |
/// | [`Decorrelated`](Self::Decorrelated) | random in `[base, 3 × previous delay)` |
/// | [`None`](Self::None) | `ceiling` |
///
/// Then the floor (`min_delay`) is applied and, last of all, the cap, so no
/// delay is ever longer than the cap whatever the jitter did. The names and
/// formulas are those of the AWS Architecture Blog's "Exponential Backoff
/// And Jitter".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackoffJitter {
    /// Random in `[0, ceiling)`: the least synchronised, the default.
    #[default]
    Full,
    /// Half fixed, half random: never shorter than half the ceiling.
    Equal,
    /// Each delay random between the base and three times the previous one
    /// (capped); ignores the factor.
    Decorrelated,
    /// No jitter: exactly the exponential ceiling.
    None,
}

/// The validated backoff settings of a policy.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) factor: f64,
    pub(crate) cap: Duration,
    pub(crate) min_delay: Duration,
    pub(crate) kind: BackoffJitter,
    pub(crate) jitter: Jitter,
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry), given
    /// the delay before the previous retry (`Duration::ZERO` before the
    /// first). Total for every input: it never panics or overflows, and the
    /// result lies in `[min(min_delay, cap), cap]`.
    pub(crate) fn delay(&self, retry: u32, previous: Duration) -> Duration {
        let jittered = match self.kind {
            BackoffJitter::None => self.ceiling(retry),
            BackoffJitter::Full => scale(self.ceiling(retry), self.jitter.sample()),
            BackoffJitter::Equal => {
                let ceiling = self.ceiling(retry);
                let half = ceiling / 2;
                // `ceiling - half` rather than `half` so that odd nanoseconds are kept.
                half.saturating_add(scale(ceiling - half, self.jitter.sample()))
            }
            BackoffJitter::Decorrelated => {
                let low = self.base;
                let high = previous.max(self.base).saturating_mul(3);
                low.saturating_add(scale(high.saturating_sub(low), self.jitter.sample()))
            }
        };
        // NOTE: the cap comes last, after jitter and the floor; validation
        // guarantees `min_delay <= cap`, so the floor cannot lift a delay over it.
        jittered.max(self.min_delay).min(self.cap)
    }

    /// `min(cap, base × factor^(retry − 1))`, saturating.
    fn ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.factor.powi(exponent);
        // `secs` is finite or +inf (factor >= 1 and finite, base finite); NaN
        // cannot occur, but would fall to the cap as well.
        if secs.is_nan() || secs >= self.cap.as_secs_f64() {
            self.cap
        } else {
            Duration::try_from_secs_f64(secs).map_or(self.cap, |d| d.min(self.cap))
        }
    }
}

/// `d × by` for `by` in `[0, 1)`, saturating instead of panicking.
pub(crate) fn scale(d: Duration, by: f64) -> Duration {
    if by <= 0.0 || by.is_nan() {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(d.as_secs_f64() * by).map_or(d, |x| x.min(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MS: Duration = Duration::from_millis(1);

    fn backoff(kind: BackoffJitter, jitter: Jitter) -> Backoff {
        Backoff {
            base: 100 * MS,
            factor: 2.0,
            cap: Duration::from_secs(20),
            min_delay: 10 * MS,
            kind,
            jitter,
        }
    }

    fn sequence(b: &Backoff, n: u32) -> Vec<Duration> {
        let mut prev = Duration::ZERO;
        (1..=n)
            .map(|retry| {
                prev = b.delay(retry, prev);
                prev
            })
            .collect()
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let b = backoff(BackoffJitter::None, Jitter::fixed(0.5));
        assert_eq!(
            sequence(&b, 10),
            ms(&[100, 200, 400, 800, 1600, 3200, 6400, 12_800, 20_000, 20_000])
        );
    }

    #[test]
    fn full_jitter_scales_the_ceiling() {
        let b = backoff(BackoffJitter::Full, Jitter::fixed(0.5));
        assert_eq!(
            sequence(&b, 10),
            ms(&[50, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000])
        );
        // A zero sample does not mean a zero delay: the floor applies.
        let zero = backoff(BackoffJitter::Full, Jitter::fixed(0.0));
        assert_eq!(sequence(&zero, 3), ms(&[10, 10, 10]));
    }

    #[test]
    fn equal_jitter_keeps_half() {
        let b = backoff(BackoffJitter::Equal, Jitter::fixed(0.5));
        assert_eq!(
            sequence(&b, 9),
            ms(&[75, 150, 300, 600, 1200, 2400, 4800, 9600, 15_000])
        );
        let low = backoff(BackoffJitter::Equal, Jitter::fixed(0.0));
        assert_eq!(sequence(&low, 3), ms(&[50, 100, 200]));
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_delay_and_is_capped() {
        let b = backoff(BackoffJitter::Decorrelated, Jitter::fixed(0.5));
        // 100 + 0.5 × (3 × max(prev, 100) − 100), in microseconds.
        let expected = [200_000, 350_000, 575_000, 912_500, 1_418_750, 2_178_125];
        let got = sequence(&b, 6);
        for (e, g) in expected.iter().zip(&got) {
            assert!(
                Duration::from_micros(*e).abs_diff(*g) < Duration::from_micros(1),
                "{got:?}"
            );
        }
        let top = backoff(BackoffJitter::Decorrelated, Jitter::fixed(0.999_999));
        let seq = sequence(&top, 40);
        assert_eq!(seq.last(), Some(&Duration::from_secs(20)));
        // Scripted: the lowest sample always gives the base.
        let low = backoff(BackoffJitter::Decorrelated, Jitter::fixed(0.0));
        assert_eq!(sequence(&low, 3), ms(&[100, 100, 100]));
    }

    #[test]
    fn scripted_jitter_is_used_once_per_delay() {
        let samples = [0.1, 0.9, 0.5];
        let i = Arc::new(AtomicUsize::new(0));
        let j = Arc::clone(&i);
        let jitter = Jitter::from_fn(move || samples[j.fetch_add(1, Ordering::Relaxed) % 3]);
        let b = backoff(BackoffJitter::Full, jitter);
        assert_eq!(sequence(&b, 3), ms(&[10, 180, 200]));
        assert_eq!(i.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn zero_delays_only_when_configured() {
        let mut b = backoff(BackoffJitter::Full, Jitter::fixed(0.0));
        b.min_delay = Duration::ZERO;
        assert_eq!(b.delay(1, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn extreme_inputs_saturate() {
        let mut b = backoff(BackoffJitter::None, Jitter::fixed(0.999));
        b.cap = Duration::MAX;
        b.factor = 1e300;
        assert_eq!(b.delay(u32::MAX, Duration::MAX), Duration::MAX);
        b.kind = BackoffJitter::Decorrelated;
        assert!(b.delay(u32::MAX, Duration::MAX) > Duration::from_secs(u64::MAX / 2));
        b.kind = BackoffJitter::Equal;
        assert!(b.delay(1_000_000, Duration::ZERO) <= Duration::MAX);
        assert!(scale(Duration::MAX, 0.999_999_999) > Duration::from_secs(u64::MAX / 2));
        assert_eq!(scale(Duration::MAX, f64::NAN), Duration::ZERO);
    }

    fn any_kind() -> impl Strategy<Value = BackoffJitter> {
        prop_oneof![
            Just(BackoffJitter::Full),
            Just(BackoffJitter::Equal),
            Just(BackoffJitter::Decorrelated),
            Just(BackoffJitter::None),
        ]
    }

    proptest! {
        #[test]
        fn every_delay_lies_within_zero_and_the_cap(
            kind in any_kind(),
            base_ms in 0u64..100_000,
            cap_ms in 0u64..10_000_000,
            min_ms in 0u64..1_000,
            factor in 1.0f64..100.0,
            sample in 0.0f64..1.0,
            retry in 0u32..=u32::MAX,
            prev_ms in 0u64..=u64::MAX,
        ) {
            let cap = Duration::from_millis(cap_ms);
            let b = Backoff {
                base: Duration::from_millis(base_ms),
                factor,
                cap,
                min_delay: Duration::from_millis(min_ms).min(cap),
                kind,
                jitter: Jitter::fixed(sample),
            };
            let d = b.delay(retry, Duration::from_millis(prev_ms));
            prop_assert!(d <= cap);
            prop_assert!(d >= b.min_delay);
        }

        #[test]
        fn no_panic_or_overflow_at_attempt_a_million(kind in any_kind(), sample in 0.0f64..1.0) {
            let b = Backoff {
                base: Duration::from_millis(100),
                factor: 2.0,
                cap: Duration::from_secs(20),
                min_delay: Duration::from_millis(10),
                kind,
                jitter: Jitter::fixed(sample),
            };
            let mut prev = Duration::ZERO;
            for retry in [999_999u32, 1_000_000, 1_000_001, u32::MAX] {
                prev = b.delay(retry, prev);
                prop_assert!(prev <= Duration::from_secs(20));
            }
        }
    }
}
