//! Fast, non-cryptographic randomness for jitter and identifiers, and an
//! injectable jitter source so that tests are deterministic.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is seeded from the OS once per thread; mixing in the
    // address of a local separates threads that share a seed.
    let mut h = RandomState::new().build_hasher();
    let local = 0u8;
    h.write_usize(std::ptr::addr_of!(local) as usize);
    h.finish() | 1
}

/// A random `u64` from a per-thread `SplitMix64` generator seeded by the OS.
///
/// Fast (a few nanoseconds, no lock, no allocation) and good enough for
/// jitter and for identifiers that must not collide; not for secrets.
#[must_use]
pub fn random_u64() -> u64 {
    STATE.with(|s| {
        let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Formats 16 bytes as the 36 characters of a UUID.
pub(crate) fn format_uuid(bytes: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut o = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            o += 1;
        }
        if let Some([hi, lo]) = out.get_mut(o..o + 2) {
            *hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            *lo = HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0');
        }
        o += 2;
    }
    out
}

/// Where jitter comes from: random in production, fixed or scripted in
/// tests.
///
/// [`sample`](Self::sample) yields a number in `[0, 1)`.
///
/// ```
/// use std::time::Duration;
/// use parapet_core::Jitter;
///
/// let half = Jitter::fixed(0.5);
/// assert_eq!(half.sample(), 0.5);
/// // Spread a wait upwards by at most 10 %.
/// assert_eq!(half.spread_up(Duration::from_secs(10), 0.1), Duration::from_millis(10_500));
/// let r = Jitter::random().sample();
/// assert!((0.0..1.0).contains(&r));
/// ```
#[derive(Clone, Default)]
pub struct Jitter(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    Random,
    Fixed(f64),
    Fn(Arc<dyn Fn() -> f64 + Send + Sync>),
}

impl Jitter {
    /// Random jitter (the default).
    #[must_use]
    pub fn random() -> Self {
        Self(Source::Random)
    }

    /// Always the same value, clamped into `[0, 1)`; NaN means 0.
    #[must_use]
    pub fn fixed(value: f64) -> Self {
        Self(Source::Fixed(clamp_unit(value)))
    }

    /// Values from a function (a scripted sequence, say), each clamped into
    /// `[0, 1)`.
    #[must_use]
    pub fn from_fn(f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Source::Fn(Arc::new(f)))
    }

    /// The next value, in `[0, 1)`.
    #[must_use]
    pub fn sample(&self) -> f64 {
        match &self.0 {
            // 53 random bits make every f64 in [0, 1) with that spacing.
            #[allow(clippy::cast_precision_loss)]
            Source::Random => (random_u64() >> 11) as f64 / (1u64 << 53) as f64,
            Source::Fixed(v) => *v,
            Source::Fn(f) => clamp_unit(f()),
        }
    }

    /// `d` plus up to `fraction` of itself, never less than `d`; saturating.
    #[must_use]
    pub fn spread_up(&self, d: Duration, fraction: f64) -> Duration {
        let extra = d.mul_f64_saturating(fraction.max(0.0) * self.sample());
        d.saturating_add(extra)
    }
}

trait MulF64Saturating {
    fn mul_f64_saturating(self, by: f64) -> Duration;
}

impl MulF64Saturating for Duration {
    fn mul_f64_saturating(self, by: f64) -> Duration {
        Duration::try_from_secs_f64(self.as_secs_f64() * by).unwrap_or(if by > 0.0 {
            Duration::MAX
        } else {
            Duration::ZERO
        })
    }
}

fn clamp_unit(v: f64) -> f64 {
    if v.is_nan() || v < 0.0 {
        0.0
    } else if v >= 1.0 {
        1.0 - f64::EPSILON
    } else {
        v
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Random => f.write_str("Jitter::Random"),
            Source::Fixed(v) => write!(f, "Jitter::Fixed({v})"),
            Source::Fn(_) => f.write_str("Jitter::Fn"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn random_samples_lie_in_the_unit_interval_and_vary() {
        let j = Jitter::random();
        let samples: Vec<f64> = (0..1000).map(|_| j.sample()).collect();
        assert!(samples.iter().all(|s| (0.0..1.0).contains(s)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }

    #[test]
    fn fixed_and_scripted_values_are_clamped() {
        assert_eq!(Jitter::fixed(-1.0).sample(), 0.0);
        assert_eq!(Jitter::fixed(f64::NAN).sample(), 0.0);
        assert!(Jitter::fixed(7.0).sample() < 1.0);
        let seq = [0.1, 0.9, 2.0];
        let i = AtomicUsize::new(0);
        let j = Jitter::from_fn(move || seq[i.fetch_add(1, Ordering::Relaxed) % 3]);
        assert_eq!(j.sample(), 0.1);
        assert_eq!(j.sample(), 0.9);
        assert!(j.sample() < 1.0);
    }

    #[test]
    fn spread_up_never_goes_down_or_overflows() {
        let j = Jitter::fixed(0.99);
        assert!(j.spread_up(Duration::from_secs(1), 0.1) >= Duration::from_secs(1));
        assert_eq!(j.spread_up(Duration::MAX, 0.5), Duration::MAX);
        assert_eq!(
            j.spread_up(Duration::from_secs(1), -3.0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn threads_get_different_streams() {
        let a = std::thread::spawn(random_u64).join().unwrap();
        let b = std::thread::spawn(random_u64).join().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn uuid_formatting() {
        let bytes = [0x12u8; 16];
        let s = format_uuid(&bytes);
        assert_eq!(
            std::str::from_utf8(&s).unwrap(),
            "12121212-1212-1212-1212-121212121212"
        );
    }
}
