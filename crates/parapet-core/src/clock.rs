//! One clock read for the layers of one call.
//!
//! Setting a call up reads the clock in several layers: the deadline layer
//! to place the deadline, the retry budget to age its window, the attempt
//! timeout to place its limit, the limiters to check their buckets. Each
//! read of a monotonic clock costs about 25 ns (a virtual machine's vDSO
//! `clock_gettime`), more than some of those layers' own work, and all of
//! them happen within the same microsecond.
//!
//! So a layer that has just read the clock may *hold* that reading while it
//! calls its inner service ([`hold`]); [`now`] returns the held reading on
//! this thread while the guard lives, and reads the clock otherwise. Holding
//! is only for the synchronous descent of `call`, never across a poll: a
//! future that waited must see the time it woke at.
//!
//! A second saving is for timers. Over the network every call waits, and
//! each layer with a limit (the call's deadline, the attempt's timeout)
//! would register a timer with tokio, about as costly as the rest of the
//! layer. But a deadline layer only needs its own timer if nothing beneath
//! it will wake the task before its deadline: a future that has just
//! registered a timer with the context it was polled with says so with
//! [`will_wake_by`], and a layer above learns the earliest such promise of
//! one poll of its inner future with [`watch_wakeups`]. A promise is only
//! ever a reason to *skip* a timer whose instant is no earlier: the worst a
//! missing promise costs is one more timer.
//!
//! ```
//! use parapet_core::clock;
//! use tokio::time::Instant;
//!
//! let read = Instant::now();
//! {
//!     let _held = clock::hold(read);
//!     // Inner layers' `call`s see the same instant, without a clock read.
//!     assert_eq!(clock::now(), read);
//! }
//! assert!(clock::now() >= read);
//! ```

use std::cell::Cell;
use std::marker::PhantomData;

use tokio::time::Instant;

thread_local! {
    static HELD: Cell<Option<Instant>> = const { Cell::new(None) };
    static WAKE_BY: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The current instant: the one [held](hold) on this thread, if any, else a
/// fresh read of tokio's clock (paused time included).
#[inline]
#[must_use]
pub fn now() -> Instant {
    HELD.try_with(Cell::get)
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now)
}

/// Makes [`now`] return `at` on this thread until the guard is dropped, then
/// restores what was held before. Hold a reading only around a synchronous
/// call of an inner service, never across an `.await` or a poll.
#[inline]
#[must_use = "the reading is held only while the guard lives"]
pub fn hold(at: Instant) -> Held {
    let before = HELD.try_with(|cell| cell.replace(Some(at))).ok().flatten();
    Held {
        before,
        _not_send: PhantomData,
    }
}

/// Says that the future being polled holds a timer, registered during this
/// poll with the context it was given, that will wake its task at `at` or
/// earlier.
///
/// Call it only right after a timer's `poll` returned `Pending`: a promise
/// that is not kept could let a layer above skip the timer it needed. For
/// the same reason, a layer that drops an inner future in the very poll in
/// which it polled it, and then returns `Pending`, must run that poll in
/// [`watch_wakeups`] and not pass its promises on (no parapet layer does:
/// each returns `Pending` only while its inner future lives).
#[inline]
pub fn will_wake_by(at: Instant) {
    let _ = WAKE_BY.try_with(|cell| {
        let earliest = cell.get().map_or(at, |e| e.min(at));
        cell.set(Some(earliest));
    });
}

/// Runs `poll` (one poll of an inner future) and returns, with its result,
/// the earliest [`will_wake_by`] made during it, if any.
///
/// Promises made inside are not seen by an enclosing `watch_wakeups`: a
/// layer that wants to pass one on makes it again itself.
///
/// ```
/// use std::time::Duration;
/// use parapet_core::clock;
/// use tokio::time::Instant;
///
/// let soon = Instant::now() + Duration::from_secs(1);
/// let ((), promised) = clock::watch_wakeups(|| clock::will_wake_by(soon));
/// assert_eq!(promised, Some(soon));
/// let ((), promised) = clock::watch_wakeups(|| ());
/// assert_eq!(promised, None);
/// ```
#[inline]
pub fn watch_wakeups<R>(poll: impl FnOnce() -> R) -> (R, Option<Instant>) {
    let outer = WAKE_BY.try_with(|cell| cell.replace(None)).ok().flatten();
    let out = poll();
    let inner = WAKE_BY.try_with(|cell| cell.replace(outer)).ok().flatten();
    (out, inner)
}

/// The guard of [`hold`].
#[derive(Debug)]
pub struct Held {
    before: Option<Instant>,
    // Held on one thread, restored on the same one.
    _not_send: PhantomData<*const ()>,
}

impl Drop for Held {
    #[inline]
    fn drop(&mut self) {
        let before = self.before;
        // Fails only while the thread is being torn down.
        let _ = HELD.try_with(|cell| cell.set(before));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn held_readings_nest_and_are_released() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        {
            let _a = hold(t0);
            assert_eq!(now(), t0);
            {
                let t1 = t0 + Duration::from_millis(5);
                let _b = hold(t1);
                assert_eq!(now(), t1);
            }
            assert_eq!(now(), t0);
        }
        assert_eq!(now(), t0 + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn promises_are_seen_by_the_nearest_watch_only() {
        let t = Instant::now();
        let (a, b) = (t + Duration::from_secs(2), t + Duration::from_secs(1));
        let (inner_seen, outer_seen) = watch_wakeups(|| {
            will_wake_by(a);
            let ((), inner) = watch_wakeups(|| {
                will_wake_by(a);
                will_wake_by(b);
            });
            inner
        });
        assert_eq!(inner_seen, Some(b));
        // The outer watch saw only the promise made at its own level.
        assert_eq!(outer_seen, Some(a));
        // Outside any watch a promise is harmless and forgotten.
        will_wake_by(b);
        assert_eq!(watch_wakeups(|| ()).1, None);
    }
}
