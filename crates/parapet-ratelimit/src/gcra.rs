//! The token bucket as a GCRA (one "theoretical arrival time" per bucket),
//! with credit for timer lateness.
//!
//! # Why credit lateness
//!
//! tokio's timer fires on 1 ms ticks: a call told to wait until `t` wakes up
//! to a tick or two after `t`. A plain GCRA checks the woken call against
//! `now` and, when the bucket was full by then (always so with a burst of 1),
//! throws away the capacity between `t` and `now`: every wait loses up to a
//! tick, which at 1000/s halves the rate and at 10 000/s leaves one call per
//! tick (about 860/s).
//!
//! Two ways out were weighed:
//!
//! - A tolerance of one tick for everyone (an internal burst of
//!   `max(burst, rate × 1 ms + 1)`). Rejected: it admits that many calls at
//!   once after any idle spell, so it over-admits whenever the timer was *not*
//!   late (visible with paused time, where timers fire on time).
//! - Letting a woken waiter claim the slot it was told to wait for, as if it
//!   had woken on time. That alone is not enough for a caller that calls in a
//!   loop: its next call comes right after the late wake-up and finds the
//!   bucket "full" again, so half of the capacity is still lost at high rates.
//!
//! What is done here is the second, carried one step further. A woken waiter
//! is admitted as of the slot it waited for (its lateness, capped at
//! [`MAX_LAG`], is not counted against it) and the bucket remembers that lag;
//! a call arriving next while the bucket's schedule is still within that lag
//! of `now` takes the next slot of the schedule instead of forfeiting the gap,
//! which lets the schedule catch up with the clock. Once a call finds the
//! bucket further behind than the lag (the bucket idled, nobody was late),
//! the gap is forfeited as usual and the lag is forgotten.
//!
//! What it guarantees: every admission is as of a slot that a plain GCRA
//! would have granted (so over any span from the limiter's start, and over
//! any window when timers fire on time, at most `burst + rate × window`
//! calls go); a slot is claimed only when the call is actually admitted (a
//! dropped waiter consumes nothing; waiters take slots one at a time, in the
//! order they arrived: see `queue`); and a call goes at most [`MAX_LAG`]
//! after its slot, so late timers bunch calls within that much and never
//! more. Without late timers (paused time, whole-millisecond intervals) the
//! lag stays zero and this is the plain GCRA.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::quota::Quota;

/// The most lateness credited. A tokio timer is up to about three ticks
/// late by itself (the deadline is rounded up to the next millisecond, the
/// driver's sleep to whole milliseconds from a truncated "now", and the
/// system's timeout to whole milliseconds again), plus scheduling; with two
/// ticks, 64 callers at 10 000/s on a busy two-core machine still lost 2 %.
pub(crate) const MAX_LAG: Duration = Duration::from_millis(4);

/// The bucket's parameters, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gcra {
    /// One call's worth of time (the interval).
    t: u64,
    /// How far ahead of `now` the schedule may run: `(burst - 1) × t`.
    tau: u64,
}

/// One bucket's state, in nanoseconds since the limiter's epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// The theoretical arrival time: the next call conforms from `tat - tau`.
    pub(crate) tat: u64,
    /// How far behind `now` the schedule may be without losing the gap.
    pub(crate) lag: u64,
}

/// Nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Gcra {
    pub(crate) fn new(quota: Quota) -> Self {
        let t = nanos(quota.interval()).max(1);
        let tau = t.saturating_mul(u64::from(quota.burst_size().get() - 1));
        Self { t, tau }
    }

    /// Decides on a call at `now`. `late` is `None` for a call arriving, and
    /// for a waiter that woke up the time since the instant it waited for.
    /// Returns the new state, or the earliest instant the call could go.
    pub(crate) fn decide(self, state: State, now: u64, late: Option<u64>) -> Result<State, u64> {
        let earliest = state.tat.saturating_sub(self.tau);
        if now < earliest {
            return Err(earliest);
        }
        let (floor, lag) = match late {
            // A waiter: not charged for its lateness, up to MAX_LAG; the
            // bucket remembers the lag when it had to use it.
            Some(late) => {
                let credit = late.min(nanos(MAX_LAG));
                let lag = if state.tat < now { credit } else { state.lag };
                (now.saturating_sub(credit), lag)
            }
            // An arrival while the schedule is behind by no more than the lag:
            // it takes the schedule's next slot.
            None if state.tat.saturating_add(state.lag) >= now => (state.tat, state.lag),
            // The bucket idled: the gap is lost, and so is the lag.
            None => (now, 0),
        };
        Ok(State {
            tat: state.tat.max(floor).saturating_add(self.t),
            lag,
        })
    }

    /// Decides on the call at the head of the bucket's queue at `now`: it
    /// waited for the schedule's next slot, so its lateness is the time
    /// since that slot (credited as for any waiter). Returns the new state,
    /// or the earliest instant it could go.
    pub(crate) fn decide_turn(self, state: State, now: u64) -> Result<State, u64> {
        let earliest = state.tat.saturating_sub(self.tau);
        self.decide(state, now, Some(now.saturating_sub(earliest)))
    }

    /// When the call with `ahead` calls queued before it could go, if each
    /// of those goes as soon as the schedule lets it: the schedule's
    /// `ahead`-th next slot from `now`, or `now` itself.
    pub(crate) fn eta(self, state: State, now: u64, ahead: usize) -> u64 {
        let ahead = u64::try_from(ahead).unwrap_or(u64::MAX);
        state
            .tat
            .max(now)
            .saturating_add(self.t.saturating_mul(ahead))
            .saturating_sub(self.tau)
            .max(now)
    }

    /// Whether a bucket in `state` is full at `now` (indistinguishable from a
    /// new one), so that its key can be forgotten.
    pub(crate) fn is_full(state: State, now: u64) -> bool {
        state.tat <= now
    }
}

/// A bucket shared by every call: the state in two atomics. The time is
/// updated by compare-and-swap; the lag is a bounded hint beside it (a race
/// on it can only give or withhold at most [`MAX_LAG`] of credit).
#[derive(Debug, Default)]
pub(crate) struct AtomicState {
    tat: AtomicU64,
    lag: AtomicU64,
}

impl AtomicState {
    pub(crate) fn check(&self, gcra: Gcra, now: u64, late: Option<u64>) -> Result<(), u64> {
        self.update(|state| gcra.decide(state, now, late))
    }

    /// The state as it is now.
    pub(crate) fn load(&self) -> State {
        State {
            tat: self.tat.load(Ordering::Acquire),
            lag: self.lag.load(Ordering::Relaxed),
        }
    }

    /// Applies `decide` to the current state until it fails or its answer
    /// is stored.
    pub(crate) fn update(&self, decide: impl Fn(State) -> Result<State, u64>) -> Result<(), u64> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let lag = self.lag.load(Ordering::Relaxed);
            let next = decide(State { tat, lag })?;
            match self
                .tat
                .compare_exchange_weak(tat, next.tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if next.lag != lag {
                        self.lag.store(next.lag, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const MS: u64 = 1_000_000;

    fn gcra(per_second: u32, burst: u32) -> Gcra {
        Gcra::new(
            Quota::per_second(NonZeroU32::new(per_second).unwrap())
                .burst(NonZeroU32::new(burst).unwrap()),
        )
    }

    #[test]
    fn without_lateness_it_is_the_plain_gcra() {
        let g = gcra(100, 1);
        let s = g.decide(State::default(), 5 * MS, None).unwrap();
        assert_eq!(
            s,
            State {
                tat: 15 * MS,
                lag: 0
            }
        );
        assert_eq!(g.decide(s, 14 * MS, None), Err(15 * MS));
        // On time: the next slot.
        let s = g.decide(s, 15 * MS, Some(0)).unwrap();
        assert_eq!(
            s,
            State {
                tat: 25 * MS,
                lag: 0
            }
        );
        // An arrival after an idle spell starts from now.
        let s = g.decide(s, 40 * MS, None).unwrap();
        assert_eq!(
            s,
            State {
                tat: 50 * MS,
                lag: 0
            }
        );

        let g = gcra(100, 3);
        let mut s = State::default();
        for _ in 0..3 {
            s = g.decide(s, 0, None).unwrap();
        }
        assert_eq!(g.decide(s, 0, None), Err(10 * MS));
    }

    #[test]
    fn a_late_waiter_gets_its_slot_and_the_next_arrival_catches_up() {
        // 10 000/s: a slot every 0.1 ms.
        let g = gcra(10_000, 1);
        let s = g.decide(State::default(), 0, None).unwrap();
        assert_eq!(s.tat, MS / 10);
        // Told to wait until 0.1 ms, it wakes at 1 ms.
        let mut s = g.decide(s, MS, Some(MS - MS / 10)).unwrap();
        assert_eq!(
            s,
            State {
                tat: 2 * MS / 10,
                lag: 9 * MS / 10
            }
        );
        // The calls arriving at 1 ms take the slots 0.2 .. 1.0 ms, then wait.
        let mut admitted = 0;
        while let Ok(next) = g.decide(s, MS, None) {
            s = next;
            admitted += 1;
        }
        assert_eq!(admitted, 9);
        assert_eq!(g.decide(s, MS, None), Err(MS + MS / 10));
    }

    #[test]
    fn lateness_is_credited_up_to_max_lag_and_idling_forfeits_it() {
        let g = gcra(10_000, 1);
        let s = g.decide(State::default(), 0, None).unwrap();
        // A waiter 50 ms late is credited MAX_LAG only.
        let max = nanos(MAX_LAG);
        let s = g.decide(s, 50 * MS, Some(50 * MS - MS / 10)).unwrap();
        assert_eq!(s.tat, 50 * MS - max + MS / 10);
        assert_eq!(s.lag, max);
        // An arrival 10 ms later: the bucket idled, the gap is lost.
        let s = g.decide(s, 60 * MS, None).unwrap();
        assert_eq!(
            s,
            State {
                tat: 60 * MS + MS / 10,
                lag: 0
            }
        );
        assert_eq!(g.decide(s, 60 * MS, None), Err(60 * MS + MS / 10));
    }

    #[test]
    fn the_atomic_bucket_admits_what_the_gcra_does() {
        let g = gcra(1000, 2);
        let b = AtomicState::default();
        assert_eq!(b.check(g, 0, None), Ok(()));
        assert_eq!(b.check(g, 0, None), Ok(()));
        assert_eq!(b.check(g, 0, None), Err(MS));
        assert_eq!(b.check(g, 3 * MS, Some(2 * MS)), Ok(()));
        assert_eq!(b.lag.load(Ordering::Relaxed), 2 * MS);
        assert_eq!(b.tat.load(Ordering::Relaxed), 3 * MS);
    }
}
