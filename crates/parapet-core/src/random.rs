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

/// `hi` and `lo`, the UUID's 128 bits (most significant first), as the
/// 36 characters of its 8-4-4-4-12 lowercase hex form. The caller sets the
/// version and variant bits.
///
/// All sixteen digits of a word are computed at once (no loop, no table),
/// since request ids are made on every call.
///
/// ```
/// let text = parapet_core::format_uuid(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
/// assert_eq!(&text, b"01234567-89ab-cdef-fedc-ba9876543210");
/// ```
#[must_use]
#[allow(clippy::cast_possible_truncation)] // Taking the low 32 bits is the point.
pub fn format_uuid(hi: u64, lo: u64) -> [u8; 36] {
    let a = hex8((hi >> 32) as u32);
    let b = hex8(hi as u32);
    let c = hex8((lo >> 32) as u32);
    let d = hex8(lo as u32);
    let mut out = [b'-'; 36];
    out[0..8].copy_from_slice(&a);
    out[9..13].copy_from_slice(&b[..4]);
    out[14..18].copy_from_slice(&b[4..]);
    out[19..23].copy_from_slice(&c[..4]);
    out[24..28].copy_from_slice(&c[4..]);
    out[28..36].copy_from_slice(&d);
    out
}

/// The 8 lowercase hex digits of `x`: each nibble is spread into its own
/// byte, then shifted into `0-9` or `a-f`.
fn hex8(x: u32) -> [u8; 8] {
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
    v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // 1 in each byte whose nibble is 10 or more.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * (u64::from(b'a' - b'0') - 10)).to_be_bytes()
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
        let s = format_uuid(0x1212_1212_1212_1212, 0x1212_1212_1212_1212);
        assert_eq!(
            std::str::from_utf8(&s).unwrap(),
            "12121212-1212-1212-1212-121212121212"
        );
        assert_eq!(
            std::str::from_utf8(&format_uuid(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210))
                .unwrap(),
            "01234567-89ab-cdef-fedc-ba9876543210"
        );
    }

    #[test]
    fn hex_digits() {
        assert_eq!(&hex8(0x0123_4567), b"01234567");
        assert_eq!(&hex8(0x89ab_cdef), b"89abcdef");
        assert_eq!(&hex8(0), b"00000000");
        assert_eq!(&hex8(u32::MAX), b"ffffffff");
        for x in [0x9a9a_0f0fu32, 0xa0b1_c2d3, 0x1234_5678, 0xdead_beef] {
            assert_eq!(std::str::from_utf8(&hex8(x)).unwrap(), format!("{x:08x}"));
        }
    }
}
