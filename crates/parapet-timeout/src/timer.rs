//! The timer of a response future, armed only when it has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// Until the inner future is first pending, only the instant to fire
    /// at; from then on a tokio [`Sleep`] created in place.
    ///
    /// In memory a response is often ready at the first poll, and then no
    /// timer is ever registered. Over the network every call waits, so the
    /// `Sleep` is kept inline rather than boxed: a box would shrink the
    /// future by about a hundred bytes but allocate on every call that
    /// waits (see the crate docs' cost notes). The instant shares the
    /// `Sleep`'s space, which holds it once armed.
    #[project = TimerProj]
    #[derive(Debug)]
    pub(crate) enum Timer {
        Idle { at: Instant },
        Armed {
            #[pin]
            sleep: Sleep,
        },
    }
}

impl Timer {
    /// A timer to fire at `at`, not yet registered with tokio.
    pub(crate) const fn new(at: Instant) -> Self {
        Self::Idle { at }
    }

    /// The instant the timer fires at.
    pub(crate) fn instant(&self) -> Instant {
        match self {
            Self::Idle { at } => *at,
            Self::Armed { sleep } => sleep.deadline(),
        }
    }

    /// Arms the timer on first use, then polls it.
    pub(crate) fn poll_elapsed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let TimerProj::Idle { at } = self.as_mut().project() {
            let at = *at;
            self.set(Self::Armed {
                sleep: sleep_until(at),
            });
        }
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx),
            // Unreachable: armed just above.
            TimerProj::Idle { .. } => Poll::Pending,
        }
    }
}

/// Like [`Timer`], but the `Sleep` lives in a box made when it is armed.
///
/// For a timer that is seldom armed: the call's deadline, whose timer is
/// not needed while an attempt timer beneath will fire first (see
/// `parapet_core::clock::will_wake_by`), which is the whole of a call that
/// is not retried. Until armed it carries 16 bytes instead of a `Sleep`
/// (about 100) through every layer above; armed, it costs one allocation.
#[derive(Debug)]
pub(crate) enum BoxedTimer {
    Idle { at: Instant },
    Armed { sleep: Pin<Box<Sleep>> },
}

impl BoxedTimer {
    /// A timer to fire at `at`, not yet registered with tokio.
    pub(crate) const fn new(at: Instant) -> Self {
        Self::Idle { at }
    }

    /// The instant the timer fires at.
    pub(crate) fn instant(&self) -> Instant {
        match self {
            Self::Idle { at } => *at,
            Self::Armed { sleep } => sleep.deadline(),
        }
    }

    /// Whether a tokio timer has been registered.
    pub(crate) const fn is_armed(&self) -> bool {
        matches!(self, Self::Armed { .. })
    }

    /// Arms the timer on first use, then polls it.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Self::Idle { at } = *self {
            *self = Self::Armed {
                sleep: Box::pin(sleep_until(at)),
            };
        }
        match self {
            Self::Armed { sleep } => sleep.as_mut().poll(cx),
            // Unreachable: armed just above.
            Self::Idle { .. } => Poll::Pending,
        }
    }
}
