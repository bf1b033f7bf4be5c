//! Request extensions that the layers share.

use std::time::Duration;

use http::Extensions;
use tokio::time::Instant;

/// The instant by which the whole call must be finished, retries and waits
/// included.
///
/// The deadline layer sets it; every inner layer reads it and never starts a
/// wait that would end after it. A caller may set it per request; when two
/// deadlines meet, the earlier one wins ([`Deadline::apply`]).
///
/// ```
/// use std::time::Duration;
/// use parapet_core::Deadline;
///
/// let mut req = http::Request::new(());
/// Deadline::after(Duration::from_secs(5)).apply(req.extensions_mut());
/// // A later deadline does not extend an earlier one.
/// Deadline::after(Duration::from_secs(60)).apply(req.extensions_mut());
/// let d = Deadline::get(req.extensions()).unwrap();
/// assert!(d.remaining() <= Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at the given instant.
    #[must_use]
    pub const fn at(at: Instant) -> Self {
        Self(at)
    }

    /// A deadline `budget` from now (saturating far in the future).
    #[must_use]
    pub fn after(budget: Duration) -> Self {
        let now = Instant::now();
        Self(now.checked_add(budget).unwrap_or_else(|| far_future(now)))
    }

    /// The instant itself.
    #[must_use]
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Time left before the deadline; zero once it has passed.
    #[must_use]
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    #[must_use]
    pub fn has_passed(self) -> bool {
        Instant::now() >= self.0
    }

    /// Whether a wait of `wait` starting now would end after the deadline.
    #[must_use]
    pub fn would_pass_during(self, wait: Duration) -> bool {
        wait > self.remaining()
    }

    /// The deadline carried by these extensions, if any.
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }

    /// Stores this deadline unless an earlier one is already there, and
    /// returns the one in force.
    pub fn apply(self, ext: &mut Extensions) -> Self {
        match ext.get::<Self>() {
            Some(existing) if *existing <= self => *existing,
            _ => {
                ext.insert(self);
                self
            }
        }
    }
}

/// An instant about thirty years ahead: far enough to mean "never" and close
/// enough that adding to it cannot overflow the platform clock.
#[must_use]
pub fn far_future(now: Instant) -> Instant {
    const THIRTY_YEARS: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(THIRTY_YEARS).unwrap_or(now)
}

/// Which attempt of a call this request is, set by the retry layer on every
/// resend.
///
/// `number` starts at 1; [`resend_count`](Self::resend_count) is the
/// OpenTelemetry `http.request.resend_count` (0 on the first attempt).
///
/// A request that carries no `Attempt` is a first attempt: the retry layer
/// inserts the extension from the second attempt on (and replaces one that
/// came with the request), so that the common call, answered at once, pays
/// no allocation for it. Readers treat absence as attempt 1.
///
/// ```
/// use parapet_core::Attempt;
///
/// let a = Attempt::new(2, 3);
/// assert_eq!(a.resend_count(), 1);
/// assert!(!a.is_last() && Attempt::new(3, 3).is_last());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    number: u32,
    max: u32,
}

impl Attempt {
    /// Attempt `number` (from 1) out of at most `max`.
    #[must_use]
    pub const fn new(number: u32, max: u32) -> Self {
        Self { number, max }
    }

    /// The attempt number, from 1.
    #[must_use]
    pub const fn number(self) -> u32 {
        self.number
    }

    /// The most attempts this call may make.
    #[must_use]
    pub const fn max(self) -> u32 {
        self.max
    }

    /// How many times the request was sent before this attempt.
    #[must_use]
    pub const fn resend_count(self) -> u32 {
        self.number.saturating_sub(1)
    }

    /// Whether no attempt may follow this one.
    #[must_use]
    pub const fn is_last(self) -> bool {
        self.number >= self.max
    }

    /// The attempt carried by these extensions, if any.
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn earlier_deadline_wins_either_way() {
        let mut ext = Extensions::new();
        let early = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(10));
        assert_eq!(late.apply(&mut ext), late);
        assert_eq!(early.apply(&mut ext), early);
        assert_eq!(late.apply(&mut ext), early);
        assert_eq!(Deadline::get(&ext), Some(early));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_and_saturates() {
        let d = Deadline::after(Duration::from_secs(2));
        assert_eq!(d.remaining(), Duration::from_secs(2));
        assert!(!d.would_pass_during(Duration::from_secs(2)));
        assert!(d.would_pass_during(Duration::from_millis(2001)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
        assert!(d.has_passed());
    }

    #[tokio::test(start_paused = true)]
    async fn huge_budget_does_not_overflow() {
        let d = Deadline::after(Duration::MAX);
        assert!(d.remaining() > Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn attempt_counts() {
        let first = Attempt::new(1, 3);
        assert_eq!(first.resend_count(), 0);
        assert!(!first.is_last());
        assert_eq!(Attempt::new(0, 0).resend_count(), 0);
        let mut ext = Extensions::new();
        ext.insert(Attempt::new(3, 3));
        assert!(Attempt::get(&ext).unwrap().is_last());
    }
}
