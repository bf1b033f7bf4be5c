//! The maps' hasher and the sweeping of idle keys; the keys themselves are
//! parapet-core's ([`parapet_core::authority`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

pub(crate) use parapet_core::authority::{Authority, AuthorityKey, AuthorityRef, Target};

/// The maps' hasher: parapet-core's `FxHash` for per-host tables.
pub(crate) type FxBuildHasher = parapet_core::HostHashBuilder;

/// A map keyed by authority, with the fast hasher.
pub(crate) type AuthorityMap<V> = std::collections::HashMap<Authority, V, FxBuildHasher>;

/// Locks a mutex, carrying on with the data if another thread panicked while
/// holding it (every critical section here leaves the map consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State that holds per-authority entries and can drop the idle ones.
pub(crate) trait Sweep: Send + Sync + 'static {
    /// Drops idle entries and returns how many remain.
    fn sweep(&self) -> usize;
    /// The janitor that sweeps this state.
    fn janitor(&self) -> &Janitor;
}

/// Runs [`Sweep::sweep`] periodically while a keyed state holds entries.
///
/// A background task is started when the first entry appears and ends by
/// itself once the state is empty or has been dropped (it holds only a weak
/// reference), so an idle limiter costs no task and no timer. (Outside a
/// tokio runtime no task can be started; the next insertion made inside one
/// starts it.)
#[derive(Debug)]
pub(crate) struct Janitor {
    running: AtomicBool,
    every: Duration,
}

impl Janitor {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            running: AtomicBool::new(false),
            every,
        }
    }

    /// Makes sure a sweeping task runs for `state`; call after inserting.
    pub(crate) fn ensure<T: Sweep>(state: &Arc<T>) {
        let janitor = state.janitor();
        if janitor.running.load(Ordering::Acquire) || janitor.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            janitor.running.store(false, Ordering::Release);
            return;
        };
        // NOTE: the guard is made here, not in the task, so that it is
        // dropped (lowering the flag) even if the task is never polled.
        let guard = Running {
            weak: Arc::downgrade(state),
            armed: true,
        };
        drop(handle.spawn(run(guard, janitor.every)));
    }
}

/// The sweeping task. If the runtime drops it (it is shutting down), `guard`
/// lowers the flag, or no sweeping task would ever start again.
async fn run<T: Sweep>(mut guard: Running<T>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(state) = guard.weak.upgrade() else {
            guard.armed = false;
            return;
        };
        if state.sweep() > 0 {
            continue;
        }
        let janitor = state.janitor();
        janitor.running.store(false, Ordering::SeqCst);
        // NOTE: an entry inserted between the sweep and the store above saw
        // `running == true` and started no task: take the flag back and go on.
        // If an inserter got the flag first, its task takes over.
        if state.sweep() == 0 || janitor.running.swap(true, Ordering::SeqCst) {
            guard.armed = false;
            return;
        }
    }
}

/// Lowers the janitor's flag when its task is dropped before it ends.
struct Running<T: Sweep> {
    weak: Weak<T>,
    armed: bool,
}

impl<T: Sweep> Drop for Running<T> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(state) = self.weak.upgrade() {
                state.janitor().running.store(false, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter {
        entries: std::sync::atomic::AtomicUsize,
        sweeps: std::sync::atomic::AtomicUsize,
        janitor: Option<Janitor>,
    }

    impl Sweep for Counter {
        fn sweep(&self) -> usize {
            self.sweeps.fetch_add(1, Ordering::SeqCst);
            self.entries.store(0, Ordering::SeqCst);
            0
        }
        fn janitor(&self) -> &Janitor {
            self.janitor.as_ref().unwrap()
        }
    }

    fn counter() -> Arc<Counter> {
        Arc::new(Counter {
            janitor: Some(Janitor::new(Duration::from_secs(1))),
            ..Counter::default()
        })
    }

    #[test]
    fn a_janitor_dropped_with_its_runtime_can_start_again() {
        let state = counter();
        state.entries.store(1, Ordering::SeqCst);
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        rt().block_on(async { Janitor::ensure(&state) });
        // That runtime is gone, and its task with it.
        assert!(!state.janitor().running.load(Ordering::SeqCst));
        rt().block_on(async {
            Janitor::ensure(&state);
            tokio::time::sleep(Duration::from_millis(2500)).await;
        });
        assert_eq!(state.entries.load(Ordering::SeqCst), 0);
        assert!(state.sweeps.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_janitor_stops_when_empty_and_restarts_on_demand() {
        let state = counter();
        state.entries.store(3, Ordering::SeqCst);
        Janitor::ensure(&state);
        Janitor::ensure(&state);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!state.janitor().running.load(Ordering::SeqCst));
        let sweeps = state.sweeps.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(state.sweeps.load(Ordering::SeqCst), sweeps, "no task left");
        state.entries.store(1, Ordering::SeqCst);
        Janitor::ensure(&state);
        assert!(state.janitor().running.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(state.entries.load(Ordering::SeqCst), 0);
    }
}
