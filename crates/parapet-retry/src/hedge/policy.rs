//! [`HedgePolicy`]: when a hedge is sent; the latencies it learns from.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use parapet_core::{DEFAULT_REPLAY_CAP, HostHashBuilder};

/// When a [`Hedge`](crate::Hedge) sends a second copy of a request.
///
/// Two named constructors: [`fixed`](Self::fixed), a delay you choose, and
/// [`percentile`](Self::percentile), a delay learnt from the latencies of
/// the host's recent answers. Cheap to copy.
///
/// ```
/// use std::time::Duration;
/// use parapet_retry::HedgePolicy;
///
/// let fixed = HedgePolicy::fixed(Duration::from_millis(20));
/// assert_eq!(fixed.get_fixed_delay(), Some(Duration::from_millis(20)));
///
/// // After the host's 95th percentile, once 200 answers have been seen.
/// let learnt = HedgePolicy::percentile(95.0).min_samples(200);
/// assert_eq!(learnt.get_percentile(), Some(95.0));
/// assert_eq!(learnt.get_max_hedges(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    pub(crate) delay: HedgeDelay,
    pub(crate) max_hedges: u32,
    pub(crate) min_samples: usize,
    pub(crate) window: usize,
    pub(crate) max_hosts: usize,
    pub(crate) replay_cap: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HedgeDelay {
    Fixed(Duration),
    Percentile(f64),
}

impl HedgePolicy {
    const fn with(delay: HedgeDelay) -> Self {
        Self {
            delay,
            max_hedges: 1,
            min_samples: 100,
            window: 1000,
            max_hosts: 1024,
            replay_cap: DEFAULT_REPLAY_CAP,
        }
    }

    /// A hedge once `delay` has passed with no answer. `Duration::ZERO`
    /// sends both copies at once (twice the load: rarely what you want).
    #[must_use]
    pub const fn fixed(delay: Duration) -> Self {
        Self::with(HedgeDelay::Fixed(delay))
    }

    /// A hedge once the request has waited longer than the `p`-th
    /// percentile of the host's recent latencies (the time from sending a
    /// request to its answer's headers, over the last
    /// [`window`](Self::window) answers). So about `100 - p` % of the
    /// requests are hedged, whatever the host's speed. `p` is clamped to
    /// `1 ..= 99.9` (a NaN counts as 95). While the host has fewer than
    /// [`min_samples`](Self::min_samples) answers recorded, nothing is
    /// hedged: a guess would hedge a slow host's every request.
    ///
    /// The latency recorded for a call is the time from its first copy to
    /// the answer that won, so a call a hedge answered counts as at least
    /// the delay: the share of samples above the delay stays what `p` says,
    /// and the delay does not drift down as hedges make calls faster.
    #[must_use]
    pub fn percentile(p: f64) -> Self {
        let p = if p.is_nan() { 95.0 } else { p.clamp(1.0, 99.9) };
        Self::with(HedgeDelay::Percentile(p))
    }

    /// The most hedges of one request, each sent a delay after the one
    /// before while no answer has come; 0 turns hedging off. Default: 1.
    #[must_use]
    pub const fn max_hedges(mut self, hedges: u32) -> Self {
        self.max_hedges = hedges;
        self
    }

    /// With [`percentile`](Self::percentile): how many answers a host needs
    /// before its requests are hedged; at least 1, at most the window.
    /// Default: 100.
    #[must_use]
    pub const fn min_samples(mut self, samples: usize) -> Self {
        self.min_samples = samples;
        self
    }

    /// With [`percentile`](Self::percentile): how many of a host's latest
    /// latencies are kept (4 bytes each); at least 1. The percentile is
    /// worked out again each tenth of a window. Default: 1000.
    #[must_use]
    pub const fn window(mut self, samples: usize) -> Self {
        self.window = samples;
        self
    }

    /// With [`percentile`](Self::percentile): how many hosts' latencies are
    /// kept at once; at least 1. When full, a new host replaces another,
    /// which starts again with no samples. Default: 1024.
    #[must_use]
    pub const fn max_hosts(mut self, hosts: usize) -> Self {
        self.max_hosts = hosts;
        self
    }

    /// The most bytes of a streamed request body kept so that a hedge can
    /// send it again (a body already in memory, or a
    /// [`ReplayBody`](parapet_core::ReplayBody) an outer layer armed, keeps
    /// its own). Default: [`DEFAULT_REPLAY_CAP`] (64 KiB).
    #[must_use]
    pub const fn replay_cap(mut self, cap: usize) -> Self {
        self.replay_cap = cap;
        self
    }

    /// The fixed delay, for a policy made by [`fixed`](Self::fixed).
    #[must_use]
    pub const fn get_fixed_delay(&self) -> Option<Duration> {
        match self.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile(_) => None,
        }
    }

    /// The percentile, for a policy made by [`percentile`](Self::percentile).
    #[must_use]
    pub const fn get_percentile(&self) -> Option<f64> {
        match self.delay {
            HedgeDelay::Percentile(p) => Some(p),
            HedgeDelay::Fixed(_) => None,
        }
    }

    /// The most hedges of one request.
    #[must_use]
    pub const fn get_max_hedges(&self) -> u32 {
        self.max_hedges
    }

    /// The answers a host needs before hedging starts (percentile mode).
    #[must_use]
    pub const fn get_min_samples(&self) -> usize {
        self.min_samples
    }

    /// The latencies kept per host (percentile mode).
    #[must_use]
    pub const fn get_window(&self) -> usize {
        self.window
    }

    /// Normalised settings: at least one sample and one host, the minimum
    /// within the window.
    pub(crate) fn normalised(mut self) -> Self {
        self.window = self.window.clamp(1, 1 << 20);
        self.min_samples = self.min_samples.clamp(1, self.window);
        self.max_hosts = self.max_hosts.max(1);
        self
    }
}

/// The latencies of each host's recent answers, and the delay they give.
pub(crate) struct Latencies {
    percentile: f64,
    min_samples: usize,
    window: usize,
    max_hosts: usize,
    hosts: RwLock<HashMap<Box<str>, Arc<Ring>, HostHashBuilder>>,
}

/// One host's last latencies, in microseconds, and the delay worked out
/// from them.
struct Ring {
    samples: Box<[AtomicU32]>,
    recorded: AtomicU64,
    /// The delay in microseconds; `u64::MAX` until there are enough samples.
    delay: AtomicU64,
    /// Held while the delay is worked out again (by whichever recorder gets
    /// it; the others skip).
    working: Mutex<()>,
}

const UNKNOWN: u64 = u64::MAX;

impl fmt::Debug for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latencies")
            .field("percentile", &self.percentile)
            .field(
                "hosts",
                &self
                    .hosts
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            )
            .finish_non_exhaustive()
    }
}

impl Latencies {
    pub(crate) fn new(policy: &HedgePolicy, percentile: f64) -> Self {
        Self {
            percentile,
            min_samples: policy.min_samples,
            window: policy.window,
            max_hosts: policy.max_hosts,
            hosts: RwLock::new(HashMap::default()),
        }
    }

    /// The delay for `host`, once it has enough samples.
    pub(crate) fn delay(&self, host: &str) -> Option<Duration> {
        let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
        let micros = hosts.get(host)?.delay.load(Relaxed);
        (micros != UNKNOWN).then(|| Duration::from_micros(micros))
    }

    /// Records one answer's latency for `host`.
    pub(crate) fn record(&self, host: &str, latency: Duration) {
        let ring = {
            let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
            hosts.get(host).map(Arc::clone)
        };
        let ring = ring.unwrap_or_else(|| self.add(host));
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let n = ring.recorded.fetch_add(1, Relaxed);
        let len = ring.samples.len() as u64;
        if let Some(slot) = usize::try_from(n % len)
            .ok()
            .and_then(|i| ring.samples.get(i))
        {
            slot.store(micros, Relaxed);
        }
        let n = n.saturating_add(1);
        let min = self.min_samples as u64;
        let every = (len / 10).max(1);
        if n == min || (n > min && n % every == 0) {
            self.work_out(&ring, n.min(len));
        }
    }

    /// Works the delay out again from the `len` samples kept: one copy of
    /// the ring and a selection, every tenth of a window.
    #[cold]
    fn work_out(&self, ring: &Ring, len: u64) {
        let Ok(_one) = ring.working.try_lock() else {
            return;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut copy: Vec<u32> = ring
            .samples
            .iter()
            .take(len)
            .map(|s| s.load(Relaxed))
            .collect();
        if copy.is_empty() {
            return;
        }
        // The nearest-rank percentile.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within the window, from a percentile in 1 ..= 99.9"
        )]
        let rank = ((self.percentile / 100.0 * copy.len() as f64).ceil() as usize)
            .clamp(1, copy.len())
            - 1;
        let (_, value, _) = copy.select_nth_unstable(rank);
        ring.delay.store(u64::from(*value), Relaxed);
    }

    #[cold]
    fn add(&self, host: &str) -> Arc<Ring> {
        let mut hosts = self.hosts.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = hosts.get(host) {
            return Arc::clone(r);
        }
        if hosts.len() >= self.max_hosts {
            // NOTE: only when a new host arrives at a full table: the one
            // with the fewest answers recorded makes room.
            let fewest = hosts
                .iter()
                .min_by_key(|(_, r)| r.recorded.load(Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(k) = fewest {
                hosts.remove(&k);
            }
        }
        let ring = Arc::new(Ring {
            samples: (0..self.window).map(|_| AtomicU32::new(0)).collect(),
            recorded: AtomicU64::new(0),
            delay: AtomicU64::new(UNKNOWN),
            working: Mutex::new(()),
        });
        hosts.insert(host.into(), Arc::clone(&ring));
        ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn defaults_and_clamps() {
        let p = HedgePolicy::fixed(MS);
        assert_eq!(p.get_max_hedges(), 1);
        assert_eq!(p.get_min_samples(), 100);
        assert_eq!(p.get_window(), 1000);
        assert_eq!(p.get_percentile(), None);
        assert_eq!(HedgePolicy::percentile(100.0).get_percentile(), Some(99.9));
        assert_eq!(
            HedgePolicy::percentile(f64::NAN).get_percentile(),
            Some(95.0)
        );
        let n = HedgePolicy::fixed(MS).window(0).min_samples(5).normalised();
        assert_eq!((n.window, n.min_samples), (1, 1));
    }

    #[test]
    fn the_delay_is_the_percentile_once_there_are_enough_samples() {
        let policy = HedgePolicy::percentile(90.0).min_samples(10).window(100);
        let l = Latencies::new(&policy, 90.0);
        for ms in 1..=9 {
            l.record("h", ms * MS);
        }
        assert_eq!(l.delay("h"), None, "9 samples");
        l.record("h", 10 * MS);
        assert_eq!(l.delay("h"), Some(9 * MS), "nearest rank of 1..=10 ms");
        assert_eq!(l.delay("other"), None);
        // A window of 100: the old samples leave it.
        for _ in 0..100 {
            l.record("h", 50 * MS);
        }
        assert_eq!(l.delay("h"), Some(50 * MS));
    }

    #[test]
    fn hosts_are_bounded() {
        let policy = HedgePolicy::percentile(50.0).min_samples(1).max_hosts(1);
        let l = Latencies::new(&policy, 50.0);
        l.record("a", MS);
        l.record("b", 2 * MS);
        assert_eq!(l.delay("a"), None);
        assert_eq!(l.delay("b"), Some(2 * MS));
    }
}
