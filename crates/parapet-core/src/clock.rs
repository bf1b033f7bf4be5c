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
}
