//! [`CircuitPolicy`]: when a circuit opens, for how long, and what counts as
//! a failure.

use std::error::Error;
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

/// How long a circuit opened by failures stays open by default (see
/// [`CircuitPolicy::open_for`]): 30 seconds.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);

/// The longest a server's `Retry-After` opens a circuit for by default (see
/// [`CircuitPolicy::max_server_wait`]): 5 minutes, the same cap as the
/// `parapet` client's other layers.
pub const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(300);

/// How many authorities a breaker keeps state for by default (see
/// [`CircuitPolicy::max_authorities`]).
pub const DEFAULT_MAX_AUTHORITIES: usize = 1024;

/// How many slices a failure-rate window is counted in.
pub(crate) const WINDOW_SLICES: u32 = 10;

/// What happened to one call, as a classifier sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// The inner service answered; the body has not been read.
    Response {
        /// The response's status.
        status: StatusCode,
        /// The response's headers.
        headers: &'a HeaderMap,
    },
    /// The inner service failed: a transport error, a timeout from a layer
    /// below, anything it returned as an error.
    Error(&'a (dyn Error + Send + Sync + 'static)),
}

/// What a classifier makes of an [`Outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The authority is healthy: counts as a success (and a probe that
    /// succeeds closes the circuit).
    Success,
    /// Counts as a failure (and a probe that fails reopens the circuit).
    Failure,
    /// Counts neither way; a probe with this outcome only frees the probe
    /// slot for the next call.
    Ignore,
}

/// The classifier [`CircuitPolicy`] uses unless given another: an error
/// from the inner service and the statuses 500, 502, 503 and 504 are
/// failures; everything else, every other 4xx and 5xx included, is a
/// success.
///
/// In particular a `429 Too Many Requests` is a success here: the server is
/// up and refusing on purpose, which is the rate limiter's and the
/// throttle's business. A 429 or 503 that carries a `Retry-After` never
/// reaches the classifier: it opens the circuit for the time given (see the
/// crate docs). A custom classifier can call this one for the cases it does
/// not care about.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use parapet_circuit::{Outcome, Verdict, default_classifier};
///
/// let headers = HeaderMap::new();
/// let status = |code| Outcome::Response { status: StatusCode::from_u16(code).unwrap(), headers: &headers };
/// assert_eq!(default_classifier(&status(503)), Verdict::Failure);
/// assert_eq!(default_classifier(&status(404)), Verdict::Success);
/// assert_eq!(default_classifier(&status(429)), Verdict::Success);
/// ```
#[must_use]
pub fn default_classifier(outcome: &Outcome<'_>) -> Verdict {
    match outcome {
        Outcome::Error(_) => Verdict::Failure,
        Outcome::Response { status, .. } => match status.as_u16() {
            500 | 502 | 503 | 504 => Verdict::Failure,
            _ => Verdict::Success,
        },
    }
}

type Classifier = Arc<dyn Fn(&Outcome<'_>) -> Verdict + Send + Sync>;

/// When a circuit trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// After this many failures in a row.
    Consecutive(NonZeroU32),
    /// When at least `percent` of the calls in the last `window` failed,
    /// once there were `min_calls` of them.
    Rate {
        percent: u8,
        window: Duration,
        min_calls: NonZeroU32,
    },
}

/// The configuration of a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer):
/// when a circuit opens (one of two modes, picked by the constructor), how
/// long it stays open, how far a server's `Retry-After` is trusted, how many
/// authorities are tracked, and what counts as a failure.
///
/// The settings are checked once, when the layer is made
/// ([`CircuitBreakerLayer::new`](crate::CircuitBreakerLayer::new)).
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use parapet_circuit::{CircuitBreakerLayer, CircuitPolicy};
///
/// // Open after 5 failures in a row, for 10 s.
/// let policy = CircuitPolicy::consecutive_failures(NonZeroU32::new(5).unwrap())
///     .open_for(Duration::from_secs(10));
/// let layer = CircuitBreakerLayer::new(policy).unwrap();
///
/// // Open when half the calls of the last minute failed, once there were 20.
/// let policy = CircuitPolicy::failure_rate(50, Duration::from_secs(60), NonZeroU32::new(20).unwrap());
/// assert!(CircuitBreakerLayer::new(policy).is_ok());
/// ```
#[derive(Clone)]
pub struct CircuitPolicy {
    pub(crate) mode: Mode,
    pub(crate) open_for: Duration,
    pub(crate) max_server_wait: Duration,
    pub(crate) max_authorities: NonZeroUsize,
    pub(crate) classifier: Option<Classifier>,
}

impl Default for CircuitPolicy {
    /// Five consecutive failures, and the other defaults.
    fn default() -> Self {
        Self::consecutive_failures(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN))
    }
}

impl CircuitPolicy {
    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            open_for: DEFAULT_OPEN_FOR,
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            max_authorities: NonZeroUsize::new(DEFAULT_MAX_AUTHORITIES)
                .unwrap_or(NonZeroUsize::MIN),
            classifier: None,
        }
    }

    /// A circuit opens after `n` failures in a row to its authority; any
    /// success in between starts the count again.
    #[must_use]
    pub fn consecutive_failures(n: NonZeroU32) -> Self {
        Self::with_mode(Mode::Consecutive(n))
    }

    /// A circuit opens when at least `percent` (1 to 100) of the calls to
    /// its authority that ended within the last `window` failed, provided
    /// there were at least `min_calls` of them (so that two calls, one
    /// failed, do not make a 50 % failure rate).
    ///
    /// The window slides in tenths: calls are counted in ten slices of
    /// `window / 10`, and the oldest slice is dropped as a new one starts,
    /// so the rate covers between 90 % and 100 % of `window`.
    ///
    /// A `percent` of 0 or above 100, or a zero `window`, is refused when
    /// the layer is made.
    #[must_use]
    pub fn failure_rate(percent: u8, window: Duration, min_calls: NonZeroU32) -> Self {
        Self::with_mode(Mode::Rate {
            percent,
            window,
            min_calls,
        })
    }

    /// How long a circuit stays open after it tripped on failures, or after
    /// a failed probe; then one probe is let through. (A server's
    /// `Retry-After` sets its own time instead.) Zero is refused when the
    /// layer is made.
    ///
    /// Default: [`DEFAULT_OPEN_FOR`] (30 s).
    #[must_use]
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }

    /// The longest a server's `Retry-After` opens a circuit for; a longer
    /// one (a date days away, a garbage number) is cut to this.
    /// `Duration::ZERO` turns the server's hints off: a 429 or 503 with
    /// `Retry-After` is then only classified like any other response.
    ///
    /// Default: [`DEFAULT_MAX_SERVER_WAIT`] (5 min).
    #[must_use]
    pub fn max_server_wait(mut self, max: Duration) -> Self {
        self.max_server_wait = max;
        self
    }

    /// How many authorities the breaker keeps state for. When a new one
    /// needs an entry and the table is full, the least recently used closed
    /// circuit is forgotten (or, if every circuit is open, the least
    /// recently used one). In consecutive-failures mode a closed circuit
    /// with no failure pending takes no entry at all.
    ///
    /// Default: [`DEFAULT_MAX_AUTHORITIES`] (1024).
    #[must_use]
    pub fn max_authorities(mut self, n: NonZeroUsize) -> Self {
        self.max_authorities = n;
        self
    }

    /// Decides what counts as a failure, instead of
    /// [`default_classifier`]. It runs once per call that reached the inner
    /// service, after the response head (or the error) arrived, outside any
    /// lock; keep it cheap. A 429 or 503 carrying a usable `Retry-After` is
    /// not passed to it (it opens the circuit on the server's word).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use parapet_circuit::{CircuitPolicy, Outcome, Verdict, default_classifier};
    ///
    /// // Also count 429s without Retry-After as failures.
    /// let policy = CircuitPolicy::consecutive_failures(NonZeroU32::new(3).unwrap())
    ///     .classify(|outcome| match outcome {
    ///         Outcome::Response { status, .. } if status.as_u16() == 429 => Verdict::Failure,
    ///         other => default_classifier(other),
    ///     });
    /// ```
    #[must_use]
    pub fn classify<F>(mut self, classifier: F) -> Self
    where
        F: Fn(&Outcome<'_>) -> Verdict + Send + Sync + 'static,
    {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), InvalidCircuitPolicy> {
        let fail = |reason| Err(InvalidCircuitPolicy { reason });
        if let Mode::Rate {
            percent, window, ..
        } = self.mode
        {
            if percent == 0 || percent > 100 {
                return fail("failure rate percent is not within 1 ..= 100");
            }
            if window.is_zero() {
                return fail("failure rate window is zero");
            }
        }
        if self.open_for.is_zero() {
            return fail("open_for is zero");
        }
        Ok(())
    }

    pub(crate) fn verdict(&self, outcome: &Outcome<'_>) -> Verdict {
        match &self.classifier {
            None => default_classifier(outcome),
            Some(classify) => classify(outcome),
        }
    }
}

impl fmt::Debug for CircuitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CircuitPolicy");
        match self.mode {
            Mode::Consecutive(n) => d.field("consecutive_failures", &n),
            Mode::Rate {
                percent,
                window,
                min_calls,
            } => d
                .field("failure_rate_percent", &percent)
                .field("window", &window)
                .field("min_calls", &min_calls),
        };
        d.field("open_for", &self.open_for)
            .field("max_server_wait", &self.max_server_wait)
            .field("max_authorities", &self.max_authorities)
            .field(
                "classifier",
                &if self.classifier.is_some() {
                    "custom"
                } else {
                    "default"
                },
            )
            .finish()
    }
}

/// A [`CircuitPolicy`] setting that makes no sense, found when the layer
/// is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCircuitPolicy {
    reason: &'static str,
}

impl InvalidCircuitPolicy {
    /// What is wrong, in a few words.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidCircuitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit breaker policy: {}", self.reason)
    }
}

impl Error for InvalidCircuitPolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn defaults() {
        let p = CircuitPolicy::default();
        assert_eq!(p.mode, Mode::Consecutive(n(5)));
        assert_eq!(p.open_for, Duration::from_secs(30));
        assert_eq!(p.max_server_wait, Duration::from_secs(300));
        assert_eq!(p.max_authorities.get(), 1024);
        assert!(p.validate().is_ok());
        let debug = format!("{p:?}");
        assert!(debug.contains("consecutive_failures: 5"), "{debug}");
        assert!(debug.contains("classifier: \"default\""), "{debug}");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let minute = Duration::from_secs(60);
        let cases = [
            (
                CircuitPolicy::failure_rate(0, minute, n(1)),
                "failure rate percent is not within 1 ..= 100",
            ),
            (
                CircuitPolicy::failure_rate(101, minute, n(1)),
                "failure rate percent is not within 1 ..= 100",
            ),
            (
                CircuitPolicy::failure_rate(50, Duration::ZERO, n(1)),
                "failure rate window is zero",
            ),
            (
                CircuitPolicy::consecutive_failures(n(1)).open_for(Duration::ZERO),
                "open_for is zero",
            ),
        ];
        for (policy, reason) in cases {
            let err = policy.validate().unwrap_err();
            assert_eq!(err.reason(), reason);
            assert_eq!(
                err.to_string(),
                format!("invalid circuit breaker policy: {reason}")
            );
        }
        assert!(
            CircuitPolicy::failure_rate(100, minute, n(1))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn the_default_classifier() {
        let headers = HeaderMap::new();
        let status = |code| Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            headers: &headers,
        };
        for code in [500, 502, 503, 504] {
            assert_eq!(
                default_classifier(&status(code)),
                Verdict::Failure,
                "{code}"
            );
        }
        for code in [200, 204, 301, 400, 401, 404, 409, 429, 501, 505] {
            assert_eq!(
                default_classifier(&status(code)),
                Verdict::Success,
                "{code}"
            );
        }
        let io = std::io::Error::other("reset");
        assert_eq!(default_classifier(&Outcome::Error(&io)), Verdict::Failure);
    }
}
