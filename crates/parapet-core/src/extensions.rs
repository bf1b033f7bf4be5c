//! Request extensions that the layers share.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use http::Extensions;
use tokio::time::Instant;

thread_local! {
    /// The deadline of the call being polled on this thread, if any: set by
    /// [`Deadline::enter`] for as long as its guard lives.
    static IN_SCOPE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The instant by which the whole call must be finished, retries and waits
/// included.
///
/// Every layer reads it with [`Deadline::current`] and never starts a wait
/// that would end after it. It reaches them in one of two ways, and when
/// two deadlines meet the earlier one wins:
///
/// - **in the request's extensions**, where a caller may put one per request
///   ([`Deadline::apply`]); it travels with the request wherever it goes,
///   across tasks too;
/// - **in scope**: the deadline layer makes the call's deadline the one in
///   force ([`Deadline::enter`]) while it calls the inner service and while
///   it polls the inner future, the way a tracing span is entered. Every
///   layer inside it sees the deadline during its `call` and its `poll`,
///   and the request does not carry it. This is what the deadline layer
///   does by default, because it is free: inserting a value into a
///   request's empty extensions costs three heap allocations, and a retry
///   layer that keeps a copy of the request pays them again, six per call
///   for a number every layer could have read from scope.
///
/// A deadline in scope does not cross a task boundary: an inner layer that
/// hands the request to another task (`tower::buffer`, a spawned future)
/// does not see it there, while one in the extensions travels along; the
/// deadline layer can put it in the extensions too when asked. A call made
/// from inside another call's future (a lookup a custom layer makes while
/// it is polled) inherits the outer deadline, like a context in Go.
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

    /// The deadline carried by these extensions, if any (only that one;
    /// [`current`](Self::current) is what layers should read).
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }

    /// The deadline in force for a request with these extensions: the
    /// earlier of the one they carry and the one [in scope](Self::in_scope).
    ///
    /// ```
    /// use std::time::Duration;
    /// use parapet_core::Deadline;
    ///
    /// let mut req = http::Request::new(());
    /// assert_eq!(Deadline::current(req.extensions()), None);
    ///
    /// let call = Deadline::after(Duration::from_secs(10));
    /// let _in_scope = call.enter();
    /// assert_eq!(Deadline::current(req.extensions()), Some(call));
    ///
    /// // One the request carries counts when it is earlier.
    /// let sooner = Deadline::after(Duration::from_secs(1));
    /// sooner.apply(req.extensions_mut());
    /// assert_eq!(Deadline::current(req.extensions()), Some(sooner));
    /// ```
    #[must_use]
    pub fn current(ext: &Extensions) -> Option<Self> {
        match (Self::get(ext), Self::in_scope()) {
            (Some(carried), Some(scoped)) => Some(carried.min(scoped)),
            (carried, scoped) => carried.or(scoped),
        }
    }

    /// The deadline of the call whose future (or `call`) is running on this
    /// thread, if a deadline layer (or anyone) [entered](Self::enter) one.
    #[must_use]
    pub fn in_scope() -> Option<Self> {
        IN_SCOPE.try_with(Cell::get).ok().flatten().map(Self)
    }

    /// Makes this deadline the one in scope on this thread until the guard
    /// is dropped (if one is in scope already, the earlier of the two), then
    /// restores the one before.
    ///
    /// A layer enters its call's deadline around its inner service's `call`
    /// and around each poll of the inner future, never across an `.await`
    /// of its own: the guard is not `Send`, so it cannot be held across one
    /// in a future that must be.
    ///
    /// ```
    /// use std::time::Duration;
    /// use parapet_core::Deadline;
    ///
    /// let outer = Deadline::after(Duration::from_secs(5));
    /// {
    ///     let _a = outer.enter();
    ///     {
    ///         // A later deadline does not extend the one in scope.
    ///         let _b = Deadline::after(Duration::from_secs(60)).enter();
    ///         assert_eq!(Deadline::in_scope(), Some(outer));
    ///     }
    ///     assert_eq!(Deadline::in_scope(), Some(outer));
    /// }
    /// assert_eq!(Deadline::in_scope(), None);
    /// ```
    #[must_use = "the deadline is in scope only while the guard lives"]
    pub fn enter(self) -> DeadlineScope {
        let before = IN_SCOPE
            .try_with(|cell| {
                let before = cell.get();
                let now_in_force = before.map_or(self.0, |b| b.min(self.0));
                cell.set(Some(now_in_force));
                before
            })
            .ok()
            .flatten();
        DeadlineScope {
            before,
            _not_send: PhantomData,
        }
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

/// The guard of [`Deadline::enter`]: while it lives, the deadline is the one
/// in scope on this thread; dropping it restores the one before.
#[derive(Debug)]
pub struct DeadlineScope {
    before: Option<Instant>,
    // Entered on one thread, restored on the same one.
    _not_send: PhantomData<*const ()>,
}

impl Drop for DeadlineScope {
    fn drop(&mut self) {
        let before = self.before;
        // Fails only while the thread is being torn down.
        let _ = IN_SCOPE.try_with(|cell| cell.set(before));
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

    #[tokio::test(start_paused = true)]
    async fn scope_nests_restores_and_meets_the_extension() {
        let mut ext = Extensions::new();
        let outer = Deadline::after(Duration::from_secs(10));
        let inner = Deadline::after(Duration::from_secs(3));
        assert_eq!(Deadline::current(&ext), None);
        {
            let _o = outer.enter();
            assert_eq!(Deadline::current(&ext), Some(outer));
            {
                let _i = inner.enter();
                assert_eq!(Deadline::in_scope(), Some(inner));
            }
            assert_eq!(Deadline::in_scope(), Some(outer));
            let carried = Deadline::after(Duration::from_secs(20));
            carried.apply(&mut ext);
            // The later one the request carries does not extend the scope's.
            assert_eq!(Deadline::current(&ext), Some(outer));
        }
        assert_eq!(Deadline::in_scope(), None);
        assert_eq!(Deadline::current(&ext), Deadline::get(&ext));
    }

    #[tokio::test(start_paused = true)]
    async fn scope_is_restored_when_a_panic_unwinds() {
        let d = Deadline::after(Duration::from_secs(1));
        let caught = std::panic::catch_unwind(|| {
            let _s = d.enter();
            panic!("unwinding through the scope");
        });
        assert!(caught.is_err());
        assert_eq!(Deadline::in_scope(), None);
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
