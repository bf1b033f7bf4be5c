//! A seeded generator for reproducible random faults.

/// A tiny seeded generator (xorshift64*), for tests and soaks that pick
/// faults at random and must be able to run the same picks again.
///
/// Not for anything secret, and not what the layers use for jitter (that
/// is `parapet_core::random_u64`, seeded by the OS).
///
/// ```
/// use parapet_testkit::Rng;
///
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.percent() < 100);
/// assert!((0.0..1.0).contains(&a.unit()));
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed` (0, the one state
    /// xorshift cannot leave, counts as 1).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A float in `0..1`.
    #[allow(clippy::cast_precision_loss)] // 53 bits: exact in an f64
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..100`.
    pub fn percent(&mut self) -> u64 {
        self.next_u64() % 100
    }
}
