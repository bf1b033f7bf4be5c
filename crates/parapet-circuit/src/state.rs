//! The circuits of every authority, shared by a layer's services and their
//! clones: admission, outcomes, probes, and the table's bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use parapet_core::{HostHashBuilder, RoundedDuration};
use tokio::time::Instant;

use crate::error::{CircuitOpen, OpenedBy};
use crate::policy::{CircuitPolicy, Mode, Verdict, WINDOW_SLICES};
use parapet_core::authority::{Authority, AuthorityKey, AuthorityRef, Target};

/// Where one authority's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Refusing every call until `until`; the first call after it becomes
    /// the probe.
    Open {
        until: Instant,
        by: OpenedBy,
    },
    /// The open time is over; `probe` is the ticket of the call in flight
    /// that will decide, if any (none: the next call probes).
    HalfOpen {
        probe: Option<u64>,
        by: OpenedBy,
    },
}

/// Calls and failures that ended within one slice of a failure-rate window.
#[derive(Debug, Clone, Copy, Default)]
struct Slice {
    /// Which slice of time (since the breaker was made) these counts are for.
    epoch: u64,
    calls: u32,
    failures: u32,
}

/// What a closed circuit counts.
#[derive(Debug, Clone)]
enum Counts {
    Consecutive(u32),
    Window([Slice; WINDOW_SLICES as usize]),
}

/// One authority's entry.
#[derive(Debug)]
struct Circuit {
    /// The authority as text, for errors and events (made once).
    label: Arc<str>,
    state: State,
    counts: Counts,
    /// When it was last used, in table ticks: the least recent goes first
    /// when the table is full.
    used: u64,
}

/// The table behind the lock.
#[derive(Debug, Default)]
struct Table {
    map: HashMap<Authority, Circuit, HostHashBuilder>,
    /// How many circuits are not closed.
    not_closed: usize,
    /// Bumped on every use of an entry.
    tick: u64,
    /// The next probe ticket.
    next_ticket: u64,
}

/// A change worth an event, logged after the lock is released.
#[derive(Debug)]
pub(crate) enum Event {
    Opened {
        label: Arc<str>,
        reason: &'static str,
        open_for: Duration,
    },
    Closed {
        label: Arc<str>,
    },
    Probing {
        label: Arc<str>,
    },
}

impl Event {
    fn emit(self) {
        match self {
            Self::Opened {
                label,
                reason,
                open_for,
            } => tracing::warn!(
                authority = %label,
                reason,
                open_for = %RoundedDuration(open_for),
                "circuit opened"
            ),
            Self::Closed { label } => tracing::info!(authority = %label, "circuit closed"),
            Self::Probing { label } => {
                tracing::debug!(authority = %label, "circuit half-open: one probe let through");
            }
        }
    }
}

/// How a call ended, as the state machine needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Report {
    /// The server asked for this pause (already clamped, never zero).
    Hint(Duration),
    Verdict(Verdict),
    /// The probe's future was dropped before its outcome.
    Abandoned,
}

/// The state a layer's services and all their clones share.
#[derive(Debug)]
pub(crate) struct Shared {
    policy: CircuitPolicy,
    table: Mutex<Table>,
    /// `table.not_closed`, readable without the lock: admission skips the
    /// table when it is 0.
    not_closed: AtomicUsize,
    /// `table.map.len()`, readable without the lock: in consecutive mode a
    /// success skips the table when it is 0.
    entries: AtomicUsize,
    /// The origin of failure-rate slices.
    base: Instant,
    /// One slice of a failure-rate window, in nanoseconds (at least 1).
    slice_nanos: u64,
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Every critical section leaves the table consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Made from a policy already validated.
    pub(crate) fn new(policy: CircuitPolicy) -> Self {
        let slice_nanos = match policy.mode {
            Mode::Rate { window, .. } => {
                let nanos = window.as_nanos() / u128::from(WINDOW_SLICES);
                u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
            }
            Mode::Consecutive(_) => 1,
        };
        Self {
            policy,
            table: Mutex::default(),
            not_closed: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            base: Instant::now(),
            slice_nanos,
        }
    }

    pub(crate) fn policy(&self) -> &CircuitPolicy {
        &self.policy
    }

    pub(crate) fn tracked(&self) -> usize {
        lock(&self.table).map.len()
    }

    /// Lets a call to `target` through (`Some(ticket)` when it is the
    /// half-open probe), or refuses it.
    #[inline]
    pub(crate) fn admit(&self, target: &Target) -> Result<Option<u64>, CircuitOpen> {
        // The common path: every circuit is closed; no lock, no clock read.
        if self.not_closed.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        self.admit_slow(target.key())
    }

    fn admit_slow(&self, key: AuthorityRef<'_>) -> Result<Option<u64>, CircuitOpen> {
        let now = parapet_core::clock::now();
        let mut guard = lock(&self.table);
        let table = &mut *guard;
        table.tick += 1;
        let Some(circuit) = table.map.get_mut(&key as &dyn AuthorityKey) else {
            return Ok(None);
        };
        circuit.used = table.tick;
        let by = match circuit.state {
            State::Closed => return Ok(None),
            State::Open { until, by } if now < until => {
                return Err(CircuitOpen::open(
                    Arc::clone(&circuit.label),
                    until,
                    now,
                    by,
                ));
            }
            State::HalfOpen { probe: Some(_), by } => {
                return Err(CircuitOpen::probing(Arc::clone(&circuit.label), now, by));
            }
            State::Open { by, .. } | State::HalfOpen { probe: None, by } => by,
        };
        // This call is the probe.
        let ticket = table.next_ticket;
        table.next_ticket += 1;
        circuit.state = State::HalfOpen {
            probe: Some(ticket),
            by,
        };
        let event = Event::Probing {
            label: Arc::clone(&circuit.label),
        };
        drop(guard);
        event.emit();
        Ok(Some(ticket))
    }

    /// The pause a response asks for, if it is a 429 or 503 with a usable
    /// `Retry-After`, clamped to `max_server_wait`.
    pub(crate) fn hint(&self, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        let wait = parapet_core::retry_after(headers, SystemTime::now())?;
        let wait = wait.min(self.policy.max_server_wait);
        (!wait.is_zero()).then_some(wait)
    }

    /// Records how the call to `target` ended (`ticket`: it was the probe).
    pub(crate) fn record(&self, target: &Target, ticket: Option<u64>, report: Report) {
        let skip = match report {
            // In consecutive mode a success, or a call that counts for
            // nothing, has nothing to update while the table is empty.
            Report::Verdict(Verdict::Success) => {
                ticket.is_none()
                    && matches!(self.policy.mode, Mode::Consecutive(_))
                    && self.entries.load(Ordering::Acquire) == 0
            }
            Report::Verdict(Verdict::Ignore) | Report::Abandoned => ticket.is_none(),
            Report::Hint(_) | Report::Verdict(Verdict::Failure) => false,
        };
        if skip {
            return;
        }
        let now = parapet_core::clock::now();
        let mut table = lock(&self.table);
        let event = self.update(&mut table, target.key(), ticket, report, now);
        self.not_closed.store(table.not_closed, Ordering::Release);
        self.entries.store(table.map.len(), Ordering::Release);
        drop(table);
        if let Some(event) = event {
            event.emit();
        }
    }

    fn update(
        &self,
        table: &mut Table,
        key: AuthorityRef<'_>,
        ticket: Option<u64>,
        report: Report,
        now: Instant,
    ) -> Option<Event> {
        table.tick += 1;
        let tick = table.tick;
        let lookup = &key as &dyn AuthorityKey;
        let verdict = match report {
            Report::Hint(wait) => return self.open_on_hint(table, key, wait, now),
            Report::Verdict(v) => v,
            Report::Abandoned => Verdict::Ignore,
        };
        let Some(circuit) = table.map.get_mut(lookup) else {
            // A closed circuit without an entry: only a counted call needs one.
            let counts = match (self.policy.mode, verdict) {
                (_, Verdict::Ignore) | (Mode::Consecutive(_), Verdict::Success) => return None,
                (Mode::Consecutive(_), Verdict::Failure) => Counts::Consecutive(0),
                (Mode::Rate { .. }, _) => {
                    Counts::Window([Slice::default(); WINDOW_SLICES as usize])
                }
            };
            let circuit = self.insert(&mut table.map, &mut table.not_closed, key, counts, tick);
            return self.count(circuit, &mut table.not_closed, verdict, now);
        };
        circuit.used = tick;
        match circuit.state {
            State::Closed => {
                // NOTE: a probe whose circuit was meanwhile closed (or
                // forgotten and made anew) counts like any other call.
                if verdict == Verdict::Success && matches!(circuit.counts, Counts::Consecutive(_)) {
                    // Nothing left to remember.
                    table.map.remove(lookup);
                    return None;
                }
                self.count(circuit, &mut table.not_closed, verdict, now)
            }
            State::HalfOpen { probe, .. } if probe.is_some() && probe == ticket => match verdict {
                Verdict::Success => {
                    let label = Arc::clone(&circuit.label);
                    table.map.remove(lookup);
                    table.not_closed -= 1;
                    Some(Event::Closed { label })
                }
                Verdict::Failure => {
                    let open_for = self.policy.open_for;
                    circuit.state = State::Open {
                        until: later(now, open_for),
                        by: OpenedBy::Failures,
                    };
                    Some(Event::Opened {
                        label: Arc::clone(&circuit.label),
                        reason: "the half-open probe failed",
                        open_for,
                    })
                }
                Verdict::Ignore => {
                    if let State::HalfOpen { probe, .. } = &mut circuit.state {
                        *probe = None;
                    }
                    None
                }
            },
            // Open, or half-open with another probe (or none): only the
            // probe's outcome decides.
            State::Open { .. } | State::HalfOpen { .. } => None,
        }
    }

    /// A server's `Retry-After`: opens the circuit for `wait` from now,
    /// unless it is already open for longer.
    fn open_on_hint(
        &self,
        table: &mut Table,
        key: AuthorityRef<'_>,
        wait: Duration,
        now: Instant,
    ) -> Option<Event> {
        let tick = table.tick;
        let until = later(now, wait);
        let lookup = &key as &dyn AuthorityKey;
        if !table.map.contains_key(lookup) {
            let counts = match self.policy.mode {
                Mode::Consecutive(_) => Counts::Consecutive(0),
                Mode::Rate { .. } => Counts::Window([Slice::default(); WINDOW_SLICES as usize]),
            };
            self.insert(&mut table.map, &mut table.not_closed, key, counts, tick);
        }
        let circuit = table.map.get_mut(lookup)?;
        circuit.used = tick;
        match circuit.state {
            State::Open { until: open, .. } if open >= until => return None,
            State::Closed => table.not_closed += 1,
            State::Open { .. } | State::HalfOpen { .. } => {}
        }
        circuit.state = State::Open {
            until,
            by: OpenedBy::Server,
        };
        reset(&mut circuit.counts);
        Some(Event::Opened {
            label: Arc::clone(&circuit.label),
            reason: "the server's retry-after",
            open_for: wait,
        })
    }

    /// Counts a call's outcome in a closed circuit and trips it if needed.
    fn count(
        &self,
        circuit: &mut Circuit,
        not_closed: &mut usize,
        verdict: Verdict,
        now: Instant,
    ) -> Option<Event> {
        let failed = match verdict {
            Verdict::Ignore => return None,
            Verdict::Success => false,
            Verdict::Failure => true,
        };
        let reason = match (&mut circuit.counts, self.policy.mode) {
            (Counts::Consecutive(count), Mode::Consecutive(n)) => {
                *count = if failed { count.saturating_add(1) } else { 0 };
                (*count >= n.get()).then_some("consecutive failures")
            }
            (
                Counts::Window(slices),
                Mode::Rate {
                    percent, min_calls, ..
                },
            ) => {
                let epoch = self.epoch(now);
                if let Some(slice) = slices.get_mut(slot(epoch)) {
                    if slice.epoch != epoch {
                        *slice = Slice {
                            epoch,
                            ..Slice::default()
                        };
                    }
                    slice.calls = slice.calls.saturating_add(1);
                    slice.failures = slice.failures.saturating_add(u32::from(failed));
                }
                let (calls, failures) = totals(slices, epoch);
                (failed
                    && calls >= u64::from(min_calls.get())
                    && failures * 100 >= u64::from(percent) * calls)
                    .then_some("failure rate")
            }
            // NOTE: unreachable: an entry's counts are made for the mode.
            (Counts::Consecutive(_) | Counts::Window(_), _) => None,
        }?;
        let open_for = self.policy.open_for;
        circuit.state = State::Open {
            until: later(now, open_for),
            by: OpenedBy::Failures,
        };
        *not_closed += 1;
        reset(&mut circuit.counts);
        Some(Event::Opened {
            label: Arc::clone(&circuit.label),
            reason,
            open_for,
        })
    }

    /// Which failure-rate slice `now` falls in.
    fn epoch(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos / u128::from(self.slice_nanos)).unwrap_or(u64::MAX)
    }

    /// Adds an entry for `key`, first forgetting one if the table is full.
    fn insert<'t>(
        &self,
        map: &'t mut HashMap<Authority, Circuit, HostHashBuilder>,
        not_closed: &mut usize,
        key: AuthorityRef<'_>,
        counts: Counts,
        tick: u64,
    ) -> &'t mut Circuit {
        if map.len() >= self.policy.max_authorities.get() {
            // The least recently used closed circuit, else the least
            // recently used of all. A scan, but only when the table is full
            // and a new authority needs an entry.
            let victim = map
                .iter()
                .min_by_key(|(_, c)| (c.state != State::Closed, c.used))
                .map(|(k, c)| (k.clone(), c.state));
            if let Some((victim, state)) = victim {
                map.remove(&victim);
                if state != State::Closed {
                    *not_closed -= 1;
                }
            }
        }
        let key = key.to_authority();
        let label = key.label();
        map.entry(key).or_insert(Circuit {
            label,
            state: State::Closed,
            counts,
            used: tick,
        })
    }
}

/// A failure-rate slice's place in the ring.
fn slot(epoch: u64) -> usize {
    // The remainder is below WINDOW_SLICES: it fits.
    usize::try_from(epoch % u64::from(WINDOW_SLICES)).unwrap_or(0)
}

/// Calls and failures in the slices of the window that ends with `epoch`.
fn totals(slices: &[Slice], epoch: u64) -> (u64, u64) {
    let oldest = epoch.saturating_sub(u64::from(WINDOW_SLICES) - 1);
    slices
        .iter()
        .filter(|s| s.epoch >= oldest && s.epoch <= epoch)
        .fold((0, 0), |(calls, failures), s| {
            (calls + u64::from(s.calls), failures + u64::from(s.failures))
        })
}

fn reset(counts: &mut Counts) {
    match counts {
        Counts::Consecutive(n) => *n = 0,
        Counts::Window(slices) => *slices = [Slice::default(); WINDOW_SLICES as usize],
    }
}

/// `now + d`, or about thirty years ahead if that overflows.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| parapet_core::far_future(now))
}
