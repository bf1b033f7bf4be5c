//! What is retried, how often and how long to wait.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, Uri};
use parapet_core::{DEFAULT_REPLAY_CAP, IdempotencyRules, Jitter};

use crate::backoff::{Backoff, BackoffJitter};
use crate::budget::RetryBudget;
use crate::quota::RetryQuota;

/// One attempt's result as a [classifier](RetryPolicyBuilder::classify)
/// sees it: the request's method and URI, and either the response's status
/// and headers or the error.
///
/// One more case: the body of a response that was returned broke after its
/// headers ([`is_body`](Self::is_body)). The outcome then has the status
/// of that response, no headers (they went to the caller), and the body's
/// error. [`Verdict::Default`] re-sends the request when the error says
/// the connection broke (an `io::Error` in its chain reporting a reset, an
/// abort, a broken pipe or an unexpected end), never on a timeout; see
/// [`RetryBody`](crate::RetryBody).
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) status: Option<StatusCode>,
    pub(crate) headers: Option<&'a HeaderMap>,
    pub(crate) error: Option<&'a (dyn Error + 'static)>,
    pub(crate) attempt: u32,
    pub(crate) body: bool,
}

impl<'a> Outcome<'a> {
    /// The request's method.
    #[must_use]
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's URI.
    #[must_use]
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The response's status, when there was a response (the response whose
    /// body broke, for [`is_body`](Self::is_body)).
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The response's headers, when there was a response.
    #[must_use]
    pub fn headers(&self) -> Option<&'a HeaderMap> {
        self.headers
    }

    /// The error, when the attempt failed without a response (or its body
    /// failed, for [`is_body`](Self::is_body)).
    #[must_use]
    pub fn error(&self) -> Option<&'a (dyn Error + 'static)> {
        self.error
    }

    /// Whether this is the failure of a returned response's body, after its
    /// headers: [`status`](Self::status) is that response's, and
    /// [`error`](Self::error) the body's.
    #[must_use]
    pub fn is_body(&self) -> bool {
        self.body
    }

    /// The number of the attempt that ended so (1 for the first).
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A [classifier's](RetryPolicyBuilder::classify) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A transient failure: retry it (if the request may be sent again and
    /// the attempts, the deadline and the budget allow).
    Retry,
    /// Final: return it as it is.
    Return,
    /// No opinion: use the status list and the default error rules.
    Default,
}

type Classifier = Arc<dyn Fn(&Outcome<'_>) -> Verdict + Send + Sync>;

/// A set of status codes, one bit each: O(1) to test, no allocation.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StatusSet([u64; 16]);

impl StatusSet {
    fn of(codes: impl IntoIterator<Item = StatusCode>) -> Self {
        let mut set = Self::default();
        for c in codes {
            let c = usize::from(c.as_u16());
            if let Some(word) = set.0.get_mut(c / 64) {
                *word |= 1 << (c % 64);
            }
        }
        set
    }

    pub(crate) fn contains(&self, code: StatusCode) -> bool {
        let c = usize::from(code.as_u16());
        self.0.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0)
    }

    fn iter(&self) -> impl Iterator<Item = StatusCode> + '_ {
        (100u16..1000)
            .filter_map(|c| StatusCode::from_u16(c).ok())
            .filter(|c| self.contains(*c))
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|c| c.as_u16()))
            .finish()
    }
}

/// The statuses retried by default: 408, 429, 500, 502, 503 and 504.
pub const DEFAULT_RETRY_STATUSES: [StatusCode; 6] = [
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// What the retry layer retries, how often, and how long it waits.
///
/// Built by [`RetryPolicy::builder`], validated once by
/// [`build`](RetryPolicyBuilder::build); [`RetryPolicy::default`] is the
/// builder's defaults. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use parapet_retry::{BackoffJitter, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(4)
///     .base_delay(Duration::from_millis(50))
///     .jitter(BackoffJitter::Equal)
///     .retry_on([StatusCode::SERVICE_UNAVAILABLE, StatusCode::TOO_MANY_REQUESTS])
///     .build()
///     .unwrap();
/// assert_eq!(policy.max_attempts(), 4);
/// assert!(policy.retries_status(StatusCode::SERVICE_UNAVAILABLE));
/// assert!(!policy.retries_status(StatusCode::BAD_GATEWAY));
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) backoff: Backoff,
    pub(crate) statuses: StatusSet,
    pub(crate) retry_after_statuses: StatusSet,
    pub(crate) max_retry_after: Duration,
    pub(crate) retry_after_jitter: f64,
    pub(crate) idempotency: IdempotencyRules,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) quota: Option<RetryQuota>,
    pub(crate) replay_cap: usize,
    pub(crate) drain_max_bytes: usize,
    pub(crate) drain_max_time: Duration,
    pub(crate) classifier: Option<Classifier>,
}

impl RetryPolicy {
    /// A builder holding the defaults.
    #[must_use]
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: Self {
                max_attempts: 3,
                max_elapsed: None,
                backoff: Backoff {
                    base: Duration::from_millis(100),
                    factor: 2.0,
                    cap: Duration::from_secs(20),
                    min_delay: Duration::from_millis(10),
                    kind: BackoffJitter::Full,
                    jitter: Jitter::random(),
                },
                statuses: StatusSet::of(DEFAULT_RETRY_STATUSES),
                retry_after_statuses: StatusSet::of([
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::SERVICE_UNAVAILABLE,
                ]),
                max_retry_after: Duration::from_secs(60),
                retry_after_jitter: 0.1,
                idempotency: IdempotencyRules::new(),
                budget: Some(RetryBudget::new()),
                quota: None,
                replay_cap: DEFAULT_REPLAY_CAP,
                drain_max_bytes: 4 * 1024,
                drain_max_time: Duration::from_millis(100),
                classifier: None,
            },
        }
    }

    /// The most attempts of one call, the first included.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The cap on the whole call's time for starting retries, if any.
    #[must_use]
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// Whether a response with this status is retried (before the
    /// classifier, idempotency, attempts, deadline and budget have their say).
    #[must_use]
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.statuses.contains(status)
    }

    /// Whether a `Retry-After` on a response with this status is obeyed.
    #[must_use]
    pub fn honours_retry_after(&self, status: StatusCode) -> bool {
        self.retry_after_statuses.contains(status)
    }

    /// The longest `Retry-After` the layer waits for.
    #[must_use]
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The rules that say which requests may be sent again.
    #[must_use]
    pub fn idempotency(&self) -> IdempotencyRules {
        self.idempotency
    }

    /// The retry budget, if any (none when a quota replaces it).
    #[must_use]
    pub fn budget(&self) -> Option<RetryBudget> {
        self.budget
    }

    /// The retry quota, if one replaces the budget.
    #[must_use]
    pub fn retry_quota(&self) -> Option<RetryQuota> {
        self.quota
    }

    /// The most bytes of a streamed request body kept for a replay.
    #[must_use]
    pub fn replay_cap(&self) -> usize {
        self.replay_cap
    }

    /// The backoff delay before retry number `retry` (1 for the first),
    /// given the previous delay (`Duration::ZERO` before the first retry;
    /// only [`BackoffJitter::Decorrelated`] uses it). Draws from the jitter
    /// source once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use parapet_core::Jitter;
    /// use parapet_retry::{BackoffJitter, RetryPolicy};
    ///
    /// let policy = RetryPolicy::builder()
    ///     .jitter(BackoffJitter::None)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.backoff_delay(1, Duration::ZERO), Duration::from_millis(100));
    /// assert_eq!(policy.backoff_delay(3, Duration::ZERO), Duration::from_millis(400));
    /// assert_eq!(policy.backoff_delay(1_000_000, Duration::ZERO), Duration::from_secs(20));
    /// ```
    #[must_use]
    pub fn backoff_delay(&self, retry: u32, previous: Duration) -> Duration {
        self.backoff.delay(retry, previous)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::builder().policy
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("backoff", &self.backoff)
            .field("statuses", &self.statuses)
            .field("retry_after_statuses", &self.retry_after_statuses)
            .field("max_retry_after", &self.max_retry_after)
            .field("retry_after_jitter", &self.retry_after_jitter)
            .field("idempotency", &self.idempotency)
            .field("budget", &self.budget)
            .field("quota", &self.quota)
            .field("replay_cap", &self.replay_cap)
            .field("drain_max_bytes", &self.drain_max_bytes)
            .field("drain_max_time", &self.drain_max_time)
            .field("classifier", &self.classifier.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// Builds a [`RetryPolicy`]; every setter states its default.
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl RetryPolicyBuilder {
    /// The most attempts of one call, the first included; 1 turns retries
    /// off. Must be at least 1. Default: 3.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts;
        self
    }

    /// A cap on the call's total time: no wait is started that would end
    /// more than this after the call began (whichever of this and the
    /// attempt limit comes first). `None` disables it; the call's
    /// [`Deadline`](parapet_core::Deadline), when it has one, applies
    /// either way. Default: `None`.
    #[must_use]
    pub fn max_elapsed(mut self, max: impl Into<Option<Duration>>) -> Self {
        self.policy.max_elapsed = max.into();
        self
    }

    /// The backoff before the first retry, doubled (by the
    /// [factor](Self::factor)) for each one after. Must not exceed the
    /// [cap](Self::max_delay). Default: 100 ms.
    #[must_use]
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.policy.backoff.base = base;
        self
    }

    /// How much each backoff grows over the one before; finite and at
    /// least 1. Default: 2.
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        self.policy.backoff.factor = factor;
        self
    }

    /// The cap on any backoff delay, applied after jitter. Default: 20 s.
    #[must_use]
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.policy.backoff.cap = cap;
        self
    }

    /// The shortest backoff delay: a jittered delay below it is raised to
    /// it, so a retry never follows at once. `Duration::ZERO` allows
    /// zero-delay retries. Must not exceed the cap. Default: 10 ms.
    #[must_use]
    pub fn min_delay(mut self, floor: Duration) -> Self {
        self.policy.backoff.min_delay = floor;
        self
    }

    /// How backoff delays are jittered. Default: [`BackoffJitter::Full`].
    #[must_use]
    pub fn jitter(mut self, kind: BackoffJitter) -> Self {
        self.policy.backoff.kind = kind;
        self
    }

    /// Where the jitter's randomness comes from ([`Jitter::fixed`] or
    /// [`Jitter::from_fn`] in tests). Also used for the upward spread of
    /// server-told waits. Default: [`Jitter::random`].
    #[must_use]
    pub fn jitter_source(mut self, source: Jitter) -> Self {
        self.policy.backoff.jitter = source;
        self
    }

    /// The statuses that are retried, replacing the list. Default:
    /// [`DEFAULT_RETRY_STATUSES`] (408, 429, 500, 502, 503, 504).
    #[must_use]
    pub fn retry_on(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.policy.statuses = StatusSet::of(statuses);
        self
    }

    /// The statuses whose `Retry-After` is obeyed, replacing the list
    /// (a status must also be retried for it to matter). Default: 429
    /// and 503.
    #[must_use]
    pub fn retry_after_on(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.policy.retry_after_statuses = StatusSet::of(statuses);
        self
    }

    /// The longest `Retry-After` worth waiting for. A server asking for
    /// more gets its response returned at once (no wait, no retry).
    /// Default: 60 s.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.policy.max_retry_after = max;
        self
    }

    /// How far a server-told wait is spread upwards, as a fraction of it
    /// (so that many clients told "60" do not all return at the same
    /// second); in `[0, 1]`. Default: 0.1 (up to 10 % longer).
    #[must_use]
    pub fn retry_after_jitter(mut self, fraction: f64) -> Self {
        self.policy.retry_after_jitter = fraction;
        self
    }

    /// Which requests may be sent again. Default: [`IdempotencyRules::new`]
    /// (RFC 9110 idempotent methods and per-request overrides; an
    /// `Idempotency-Key` only counts once trusted).
    #[must_use]
    pub fn idempotency(mut self, rules: IdempotencyRules) -> Self {
        self.policy.idempotency = rules;
        self
    }

    /// The retry budget, or `None` for no budget; either way it replaces a
    /// [quota](Self::retry_quota) set before. Default: [`RetryBudget::new`]
    /// (20 %, 10 retries per second, 10 s window).
    #[must_use]
    pub fn budget(mut self, budget: impl Into<Option<RetryBudget>>) -> Self {
        self.policy.budget = budget.into();
        self.policy.quota = None;
        self
    }

    /// A [retry quota](RetryQuota) (the AWS SDKs' token bucket) in place of
    /// the budget: setting it clears the budget, and setting a budget
    /// clears it. Default: none (the [`RetryBudget`]).
    ///
    /// ```
    /// use parapet_retry::{RetryBudget, RetryPolicy, RetryQuota};
    ///
    /// let quota = RetryPolicy::builder().retry_quota(RetryQuota::aws_standard()).build().unwrap();
    /// assert_eq!((quota.budget(), quota.retry_quota()), (None, Some(RetryQuota::aws_standard())));
    ///
    /// let budget = RetryPolicy::builder()
    ///     .retry_quota(RetryQuota::aws_standard())
    ///     .budget(RetryBudget::new())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!((budget.budget(), budget.retry_quota()), (Some(RetryBudget::new()), None));
    /// ```
    #[must_use]
    pub fn retry_quota(mut self, quota: RetryQuota) -> Self {
        self.policy.quota = Some(quota);
        self.policy.budget = None;
        self
    }

    /// The most bytes of a streamed request body kept so that it can be
    /// sent again; a longer body is sent once and not retried. Bodies
    /// already in memory replay at no cost and ignore the cap. Default:
    /// [`DEFAULT_REPLAY_CAP`] (64 KiB).
    #[must_use]
    pub fn replay_cap(mut self, cap: usize) -> Self {
        self.policy.replay_cap = cap;
        self
    }

    /// How much of a discarded response's body is read (while waiting for
    /// the retry) so its connection can be reused: at most `max_bytes`, for
    /// at most `max_time`; past either the body is dropped, which closes
    /// the connection. Default: 4 KiB and 100 ms.
    #[must_use]
    pub fn drain(mut self, max_bytes: usize, max_time: Duration) -> Self {
        self.policy.drain_max_bytes = max_bytes;
        self.policy.drain_max_time = max_time;
        self
    }

    /// A classifier that sees each attempt's [`Outcome`] and says whether
    /// it is a retryable failure ([`Verdict::Retry`]), final
    /// ([`Verdict::Return`]) or left to the defaults ([`Verdict::Default`]).
    /// It never makes a non-idempotent request retryable; the idempotency
    /// rules, attempts, deadline and budget still apply. Default: none.
    ///
    /// ```
    /// use http::StatusCode;
    /// use parapet_retry::{RetryPolicy, Verdict};
    ///
    /// // This API answers 409 while a resource is being created; retry it,
    /// // but never retry its 500s, which are not transient.
    /// let policy = RetryPolicy::builder()
    ///     .classify(|o| match o.status() {
    ///         Some(StatusCode::CONFLICT) if o.uri().path().starts_with("/jobs") => Verdict::Retry,
    ///         Some(StatusCode::INTERNAL_SERVER_ERROR) => Verdict::Return,
    ///         _ => Verdict::Default,
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn classify(mut self, f: impl Fn(&Outcome<'_>) -> Verdict + Send + Sync + 'static) -> Self {
        self.policy.classifier = Some(Arc::new(f));
        self
    }

    /// Checks the settings and builds the policy.
    ///
    /// # Errors
    ///
    /// [`InvalidRetryPolicy`] when the attempts are 0, the factor is below 1
    /// or not finite, the base or the floor exceeds the cap, the
    /// `Retry-After` spread is outside `[0, 1]`, or the budget or the quota
    /// is invalid (see [`RetryBudget`] and [`RetryQuota`]).
    pub fn build(self) -> Result<RetryPolicy, InvalidRetryPolicy> {
        let p = &self.policy;
        let b = &p.backoff;
        let fail = |reason| Err(InvalidRetryPolicy { reason });
        if p.max_attempts == 0 {
            return fail("max attempts is 0");
        }
        if !b.factor.is_finite() || b.factor < 1.0 {
            return fail("backoff factor is below 1 or not finite");
        }
        if b.base > b.cap {
            return fail("backoff base is longer than the cap");
        }
        if b.min_delay > b.cap {
            return fail("minimum delay is longer than the cap");
        }
        if !(0.0..=1.0).contains(&p.retry_after_jitter) {
            return fail("retry-after jitter is outside 0 ..= 1");
        }
        if let Some(budget) = &p.budget {
            if let Err(reason) = budget.validate() {
                return fail(reason);
            }
        }
        if let Some(quota) = &p.quota {
            if let Err(reason) = quota.validate() {
                return fail(reason);
            }
        }
        Ok(self.policy)
    }
}

/// A [`RetryPolicy`] setting that makes no sense, found by
/// [`build`](RetryPolicyBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRetryPolicy {
    reason: &'static str,
}

impl InvalidRetryPolicy {
    /// What is wrong, in a few words.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidRetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry policy: {}", self.reason)
    }
}

impl Error for InvalidRetryPolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.max_elapsed(), None);
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(p.retries_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 201, 400, 401, 404, 409, 501, 505, 599] {
            assert!(!p.retries_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        assert!(p.honours_retry_after(StatusCode::TOO_MANY_REQUESTS));
        assert!(p.honours_retry_after(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!p.honours_retry_after(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(p.max_retry_after(), Duration::from_secs(60));
        assert_eq!(p.replay_cap(), 64 * 1024);
        assert_eq!(p.budget(), Some(RetryBudget::new()));
        assert_eq!(p.retry_quota(), None);
        assert!(!p.idempotency().trusts_idempotency_key());
        assert_eq!(
            format!("{:?}", p.statuses),
            "[408, 429, 500, 502, 503, 504]"
        );
    }

    #[test]
    fn invalid_settings_are_refused_once_at_build() {
        let cases: [(RetryPolicyBuilder, &str); 7] = [
            (RetryPolicy::builder().max_attempts(0), "max attempts is 0"),
            (
                RetryPolicy::builder().factor(0.5),
                "backoff factor is below 1 or not finite",
            ),
            (
                RetryPolicy::builder().factor(f64::NAN),
                "backoff factor is below 1 or not finite",
            ),
            (
                RetryPolicy::builder().base_delay(Duration::from_secs(30)),
                "backoff base is longer than the cap",
            ),
            (
                RetryPolicy::builder()
                    .max_delay(Duration::from_millis(5))
                    .base_delay(Duration::ZERO),
                "minimum delay is longer than the cap",
            ),
            (
                RetryPolicy::builder().retry_after_jitter(1.5),
                "retry-after jitter is outside 0 ..= 1",
            ),
            (
                RetryPolicy::builder().budget(RetryBudget::new().percent(5000)),
                "retry budget percent is above 1000",
            ),
        ];
        for (builder, reason) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.reason(), reason);
            assert_eq!(err.to_string(), format!("invalid retry policy: {reason}"));
        }
        assert!(RetryPolicy::builder().budget(None).build().is_ok());
        assert!(
            RetryPolicy::builder()
                .min_delay(Duration::ZERO)
                .base_delay(Duration::ZERO)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn status_sets_ignore_nothing_valid() {
        let set = StatusSet::of([
            StatusCode::from_u16(100).unwrap(),
            StatusCode::from_u16(999).unwrap(),
        ]);
        assert!(set.contains(StatusCode::CONTINUE));
        assert!(set.contains(StatusCode::from_u16(999).unwrap()));
        assert!(!set.contains(StatusCode::OK));
    }
}
