//! How long a call may wait: the layer's `max_wait`, the call's deadline, or
//! not at all (reject mode).

use std::time::Duration;

use http::Extensions;
use parapet_core::Deadline;
use tokio::time::Instant;

/// Wait mode and bound, shared by the three layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WaitPolicy {
    pub(crate) max_wait: Option<Duration>,
    pub(crate) reject: bool,
}

impl WaitPolicy {
    /// The latest instant a wait starting at `now` may end, or `None` when
    /// nothing bounds it. In reject mode that is `now` itself.
    pub(crate) fn latest(self, now: Instant, ext: &Extensions) -> Option<Instant> {
        if self.reject {
            return Some(now);
        }
        let own = self.max_wait.map(|w| {
            now.checked_add(w)
                .unwrap_or_else(|| parapet_core::far_future(now))
        });
        let deadline = Deadline::current(ext).map(Deadline::instant);
        match (own, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_earlier_of_max_wait_and_deadline_bounds_the_wait() {
        let now = Instant::now();
        let mut ext = Extensions::new();
        let unbounded = WaitPolicy::default();
        assert_eq!(unbounded.latest(now, &ext), None);
        let own = WaitPolicy {
            max_wait: Some(Duration::from_secs(5)),
            reject: false,
        };
        assert_eq!(own.latest(now, &ext), Some(now + Duration::from_secs(5)));
        Deadline::at(now + Duration::from_secs(2)).apply(&mut ext);
        assert_eq!(own.latest(now, &ext), Some(now + Duration::from_secs(2)));
        assert_eq!(
            unbounded.latest(now, &ext),
            Some(now + Duration::from_secs(2))
        );
        let reject = WaitPolicy {
            max_wait: None,
            reject: true,
        };
        assert_eq!(reject.latest(now, &ext), Some(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_in_scope_bounds_the_wait_too() {
        let now = Instant::now();
        let ext = Extensions::new();
        let own = WaitPolicy {
            max_wait: Some(Duration::from_secs(5)),
            reject: false,
        };
        let _scope = Deadline::at(now + Duration::from_secs(1)).enter();
        assert_eq!(own.latest(now, &ext), Some(now + Duration::from_secs(1)));
        assert_eq!(
            WaitPolicy::default().latest(now, &ext),
            Some(now + Duration::from_secs(1))
        );
    }
}
