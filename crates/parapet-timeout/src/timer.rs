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

    /// Whether a tokio timer has been registered.
    pub(crate) const fn is_armed(&self) -> bool {
        matches!(self, Self::Armed { .. })
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
