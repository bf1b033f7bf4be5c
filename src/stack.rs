//! The layers of the recommended stack, in DESIGN.md's order:
//!
//! ```text
//! request id → trace (call span) → [cache] → deadline → retry → [hedge] → redirect
//!   → trace (attempt span) → [circuit breaker] → auth → throttle → [adaptive rate]
//!   → rate limit → concurrency limit → attempt timeout → decompression → transport
//! ```
//!
//! The bracketed layers are off unless set, and then absent from the stack.
//! Hedging sits right below retry (a hedge is another copy of one attempt,
//! spending the retry layer's budget) and above redirects, so each copy
//! follows its own redirects and passes every layer below. The circuit
//! breaker sits below the attempt span, so a refused attempt is traced, and
//! above auth and the limiters, so a refused call waits for nothing. The
//! adaptive rate sits below the throttle (which obeys an explicit
//! `Retry-After` by closing the gate) and above a fixed rate limit.
//!
//! Auth sits above the throttle and the rate limit (DESIGN.md had it below
//! them): its one re-send after a 401 is a request that leaves like any
//! other, so it must pass the server's gate and count against the quota.
//! Below them, the re-send went out 70 µs after the refused request with a
//! quota of 1/s. The token fetch still happens before a concurrency slot
//! is taken.
//!
//! The HTTP cache (off unless set, cargo feature `cache`) sits right below
//! the call span: a fresh hit needs nothing below it; `src/http_cache.rs`
//! says why. With no cache set it is not in the stack at all.
//!
//! Redirects sit below retry and above the attempt span (each hop is an
//! attempt of its own, gated, limited and timed like any request that
//! leaves); auth is skipped on a hop to another origin. Decompression is
//! innermost, so every layer sees decoded bodies and every request that
//! leaves offers the encodings. `src/redirect.rs` and `src/decompress.rs`
//! say why in full.

use std::error::Error as StdError;
use std::time::Duration;

use parapet_auth::{AuthLayer, TokenError};
use parapet_circuit::{CircuitBreakerLayer, CircuitOpen, CircuitPolicy};
use parapet_core::{BoxError, IdempotencyRules, ReplayBody};
use parapet_ratelimit::{
    AdaptiveRateLayer, ConcurrencyLimitLayer, ConcurrencyLimited, RateLimitLayer, RateLimited,
    ThrottleLayer, Throttled,
};
use parapet_retry::{
    HedgeLayer, HedgePolicy, Outcome, RetryLayer, RetryPolicy, RetryQuota, Verdict,
};
use parapet_timeout::{
    AttemptTimedOut, AttemptTimeoutLayer, BodyTimedOut, DeadlineExceeded, DeadlineLayer,
};
use parapet_trace::{AttemptTraceLayer, RequestIdLayer, TraceLayer, default_error_type};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::attempts::RecordAttemptLayer;
use crate::body::Body;
use crate::client::Stack;
use crate::error::{InvalidConfig, Kind, WaitSource};
use crate::http_cache::CacheSetting;
use crate::optional::Optional;
use crate::redirect::{
    InsecureRedirect, OriginAuthLayer, RedirectLayer, RedirectLoop, RedirectPolicy,
    TooManyRedirects,
};

/// The longest the facade's throttle keeps a host's gate closed on one
/// server signal: 5 minutes (Envoy ignores `Retry-After` above 300 s). A
/// server asking for longer is probed again after that, so one bogus
/// `Retry-After: 86400` cannot stop a client for a day, and a real outage
/// costs one request every 5 minutes.
pub const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(300);

/// How retries are configured.
#[derive(Debug, Clone)]
pub(crate) enum RetrySetting {
    /// The crate's defaults with the facade's classifier, optionally with
    /// another number of attempts and trusted `Idempotency-Key`s.
    Default {
        max_attempts: u32,
        trust_idempotency_key: bool,
    },
    /// A policy the user built.
    Custom(Box<RetryPolicy>),
    /// No retries.
    Off,
}

/// The configuration of every layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerConfig {
    pub(crate) attempt_timeout: Option<Duration>,
    /// Whether the attempt timeout was set by the user (then a value longer
    /// than the deadline is an error) or is the default (then it is
    /// shortened to the deadline).
    pub(crate) attempt_timeout_set: bool,
    pub(crate) deadline: Option<Duration>,
    pub(crate) body_idle_timeout: Option<Duration>,
    pub(crate) retry: RetrySetting,
    pub(crate) throttle: Option<ThrottleLayer>,
    pub(crate) rate_limit: Option<RateLimitLayer>,
    /// The adaptive rate (off unless set).
    pub(crate) adaptive_rate: Option<AdaptiveRateLayer>,
    /// The circuit breaker's policy (off unless set); the layer is made
    /// when the client is built.
    pub(crate) circuit: Option<CircuitPolicy>,
    /// Hedged reads (off unless set), spending the retry layer's budget.
    pub(crate) hedge: Option<HedgePolicy>,
    /// An AWS-style retry quota in place of the default policy's budget.
    pub(crate) retry_quota: Option<RetryQuota>,
    pub(crate) concurrency_limit: Option<ConcurrencyLimitLayer>,
    pub(crate) auth: Option<AuthLayer>,
    pub(crate) request_id: Option<RequestIdLayer>,
    pub(crate) tracing: bool,
    pub(crate) redirect: RedirectPolicy,
    pub(crate) decompress: bool,
    /// The HTTP cache (feature `cache`); always `None` without it.
    pub(crate) cache: Option<CacheSetting>,
    /// Metrics (feature `metrics`); always `false` without it.
    pub(crate) metrics: bool,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_secs(10)),
            attempt_timeout_set: false,
            deadline: Some(Duration::from_secs(30)),
            body_idle_timeout: None,
            retry: RetrySetting::Default {
                max_attempts: 3,
                trust_idempotency_key: false,
            },
            throttle: Some(ThrottleLayer::new().max_server_wait(DEFAULT_MAX_SERVER_WAIT)),
            rate_limit: None,
            adaptive_rate: None,
            circuit: None,
            hedge: None,
            retry_quota: None,
            concurrency_limit: None,
            auth: None,
            request_id: Some(RequestIdLayer::new()),
            tracing: true,
            redirect: RedirectPolicy::default(),
            decompress: crate::decompress::COMPILED_IN,
            cache: None,
            metrics: false,
        }
    }
}

/// The facade's retry classifier: the verdicts the retry crate cannot
/// reach alone because it does not know its sibling layers' errors.
///
/// - A local limiter (rate limit, throttle, concurrency limit) that refused
///   to wait longer has already waited all it may: retrying would only wait
///   again. Returned as it is.
/// - An attempt cut short by the call's deadline, or the deadline itself:
///   no time is left. Returned.
/// - A token fetch that failed for good (rejected credentials, a malformed
///   answer): sending again cannot help. Returned. A transient token
///   failure is retried like any transport error.
/// - A redirect refused ([`TooManyRedirects`], [`RedirectLoop`],
///   [`InsecureRedirect`]): the server would send the same one again.
///   Returned.
/// - Everything else: the retry crate's defaults.
///
/// Use it in a policy of your own with
/// `RetryPolicy::builder().classify(parapet::retry_classifier)`.
#[must_use]
pub fn retry_classifier(outcome: &Outcome<'_>) -> Verdict {
    let Some(err) = outcome.error() else {
        return Verdict::Default;
    };
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<RateLimited>()
            || e.is::<Throttled>()
            || e.is::<ConcurrencyLimited>()
            || e.is::<DeadlineExceeded>()
            || is_redirect_error(e)
        {
            return Verdict::Return;
        }
        if let Some(t) = e.downcast_ref::<AttemptTimedOut>() {
            return if t.is_deadline() {
                Verdict::Return
            } else {
                Verdict::Default
            };
        }
        if let Some(t) = e.downcast_ref::<TokenError>() {
            return if t.is_transient() {
                Verdict::Default
            } else {
                Verdict::Return
            };
        }
        cur = e.source();
    }
    Verdict::Default
}

/// The retry policy [`ClientBuilder`](crate::ClientBuilder) uses unless told
/// otherwise: parapet-retry's defaults (3 attempts, idempotent requests
/// only, backoff from 100 ms with full jitter capped at 20 s, `Retry-After`
/// obeyed up to 60 s, a 20 % retry budget) with [`retry_classifier`].
///
/// A hand-built stack takes it as it is, so that its retry layer decides as
/// the builder's does:
///
/// ```
/// use parapet::retry::RetryLayer;
///
/// let policy = parapet::default_retry_policy();
/// assert_eq!(policy.max_attempts(), 3);
/// let layer = RetryLayer::new(policy);
/// # drop(layer);
/// ```
///
/// To change a setting, start from `RetryPolicy::builder()` and add the
/// classifier with `.classify(parapet::retry_classifier)`.
#[must_use]
pub fn default_retry_policy() -> RetryPolicy {
    // NOTE: parapet-retry's defaults with three attempts always build (a
    // unit test below says so); were that ever to change, the crate's own
    // default would be the closest policy.
    default_policy(3, false, None).unwrap_or_default()
}

/// The default policy with `max_attempts`, trusted `Idempotency-Key`s and
/// a retry quota in place of the budget as given.
fn default_policy(
    max_attempts: u32,
    trust_idempotency_key: bool,
    quota: Option<RetryQuota>,
) -> Result<RetryPolicy, parapet_retry::InvalidRetryPolicy> {
    let builder = RetryPolicy::builder()
        .max_attempts(max_attempts)
        .idempotency(IdempotencyRules::new().trust_idempotency_key(trust_idempotency_key))
        .classify(retry_classifier);
    match quota {
        Some(q) => builder.retry_quota(q.timeout_when(is_timeout)),
        None => builder,
    }
    .build()
}

/// What a retry quota counts as a timeout (at its higher cost) in the
/// facade's stack: an attempt timeout or a body timeout, besides the retry
/// crate's own test (an `io::Error` of kind `TimedOut` or tokio's
/// `Elapsed` in the chain).
fn is_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(e) = cur {
        if e.is::<AttemptTimedOut>() || e.is::<BodyTimedOut>() {
            return true;
        }
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.is::<tokio::time::error::Elapsed>()
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// `error.type` for spans: parapet's own errors by name, then the trace
/// crate's defaults.
fn error_type(e: &(dyn StdError + 'static)) -> &'static str {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(e) = cur {
        if e.is::<DeadlineExceeded>() {
            return "deadline_exceeded";
        }
        if e.is::<AttemptTimedOut>() || e.is::<BodyTimedOut>() {
            return "timeout";
        }
        if e.is::<RateLimited>() || e.is::<Throttled>() || e.is::<ConcurrencyLimited>() {
            return "rate_limited";
        }
        if e.is::<TokenError>() {
            return "auth";
        }
        if e.is::<CircuitOpen>() {
            return "circuit_open";
        }
        if is_redirect_error(e) {
            return "redirect";
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return "connect";
            }
        }
        cur = e.source();
    }
    default_error_type(e)
}

impl LayerConfig {
    fn retry_layer(&self) -> Result<Option<RetryLayer>, InvalidConfig> {
        match &self.retry {
            RetrySetting::Off => Ok(None),
            RetrySetting::Custom(policy) => Ok(Some(RetryLayer::new((**policy).clone()))),
            RetrySetting::Default {
                max_attempts,
                trust_idempotency_key,
            } => {
                if *max_attempts == 0 {
                    return Err(InvalidConfig::new(
                        "zero attempts: a call needs at least one (use retry_off() for no retries)",
                    ));
                }
                let policy =
                    default_policy(*max_attempts, *trust_idempotency_key, self.retry_quota)
                        .map_err(|e| InvalidConfig::new(e.to_string()))?;
                Ok(Some(RetryLayer::new(policy)))
            }
        }
    }

    fn check(&self) -> Result<(), InvalidConfig> {
        let zero =
            |name: &str| InvalidConfig::new(format!("{name} is zero: every call would fail"));
        if self.deadline == Some(Duration::ZERO) {
            return Err(zero("the deadline"));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(zero("the attempt timeout"));
        }
        if self.body_idle_timeout == Some(Duration::ZERO) {
            return Err(zero("the body idle timeout"));
        }
        if let (Some(a), Some(d)) = (self.attempt_timeout, self.deadline) {
            if a > d && self.attempt_timeout_set {
                return Err(InvalidConfig::new(format!(
                    "attempt timeout ({a:?}) is longer than the deadline ({d:?})"
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn assemble<S, B>(&self, transport: S) -> Result<Stack, InvalidConfig>
    where
        S: tower::Service<http::Request<ReplayBody>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.check()?;
        let transport = crate::decompress::transport(transport);
        let retry = self.retry_layer()?;
        let attempt_timeout = self
            .attempt_timeout
            .map(|a| match self.deadline {
                Some(d) if !self.attempt_timeout_set => a.min(d),
                _ => a,
            })
            .map(|limit| AttemptTimeoutLayer::new(limit).body_idle_timeout(self.body_idle_timeout));
        let trace = self
            .tracing
            .then(|| TraceLayer::new().internal_kind(true).error_type(error_type));
        let attempt_trace = self
            .tracing
            .then(|| AttemptTraceLayer::new().error_type(error_type));
        let redirect = RedirectLayer::new(self.redirect);
        // Skipped on a redirect hop to another origin.
        let auth = self.auth.clone().map(OriginAuthLayer);
        let decompress = crate::decompress::layer(self.decompress);
        let (metrics, attempt_metrics) = crate::client_metrics::layers(self.metrics, error_type);
        let circuit = self
            .circuit
            .clone()
            .map(CircuitBreakerLayer::new)
            .transpose()
            .map_err(|e| InvalidConfig::new(format!("circuit breaker: {e}")))?;
        // Hedges spend the retry layer's budget (or quota) when there is one.
        let hedge = self.hedge.map(|policy| match &retry {
            Some(retry) => retry.hedge_layer(policy),
            None => HedgeLayer::new(policy),
        });
        // The protection layers that are off by default take the last shape.
        let extras = self.adaptive_rate.is_some() || circuit.is_some() || hedge.is_some();
        if let (
            false,
            Some(request_id),
            Some(trace),
            Some(deadline),
            Some(retry),
            Some(attempt_trace),
            Some(throttle),
            Some(attempt_timeout),
        ) = (
            extras,
            &self.request_id,
            &trace,
            self.deadline,
            &retry,
            &attempt_trace,
            &self.throttle,
            &attempt_timeout,
        ) {
            // The default shape: every layer that is on by default is on,
            // so none of them needs the on/off wrapper, which costs a branch
            // and a re-wrapped response and body per layer per call. With
            // the layers that are off by default all off (the default
            // configuration), none at all; otherwise only they keep it.
            if self.rate_limit.is_none()
                && self.auth.is_none()
                && self.concurrency_limit.is_none()
                && self.cache.is_none()
                && !self.metrics
            {
                let svc = ServiceBuilder::new()
                    .layer(request_id.clone())
                    .layer(trace.clone())
                    .layer(DeadlineLayer::new(deadline))
                    .layer(retry.clone())
                    .layer(redirect)
                    .layer(attempt_trace.clone())
                    .layer(throttle.clone())
                    .layer(*attempt_timeout)
                    .layer(RecordAttemptLayer)
                    .layer(decompress)
                    .service(transport);
                let svc = ServiceExt::<http::Request<ReplayBody>>::map_response(svc, boxed_body);
                return Ok(Stack::new(svc));
            }
            let svc = ServiceBuilder::new()
                .layer(request_id.clone())
                .layer(trace.clone())
                .layer(Optional(metrics.clone()))
                .layer(Optional(self.cache.clone()))
                .layer(DeadlineLayer::new(deadline))
                .layer(retry.clone())
                .layer(redirect)
                .layer(attempt_trace.clone())
                .layer(Optional(attempt_metrics.clone()))
                .layer(Optional(auth))
                .layer(throttle.clone())
                .layer(Optional(self.rate_limit.clone()))
                .layer(Optional(self.concurrency_limit.clone()))
                .layer(*attempt_timeout)
                .layer(RecordAttemptLayer)
                .layer(decompress)
                .service(transport);
            let svc = ServiceExt::<http::Request<ReplayBody>>::map_response(svc, boxed_body);
            return Ok(Stack::new(svc));
        }
        // Every other shape: each layer on or off, and the layers that are
        // off by default (circuit breaker, hedging, adaptive rate) only
        // here. NOTE: one boxed boundary below retry (and the hedge) splits
        // the stack's type in two: type-checking one nested type of all
        // sixteen layers took rustc over 10 minutes and 10 GB; the box
        // costs this shape one allocation for the future and one for the
        // body per attempt.
        let lower = ServiceBuilder::new()
            .layer(redirect)
            .layer(Optional(attempt_trace))
            .layer(Optional(attempt_metrics))
            .layer(Optional(circuit))
            .layer(Optional(auth))
            .layer(Optional(self.throttle.clone()))
            .layer(Optional(self.adaptive_rate.clone()))
            .layer(Optional(self.rate_limit.clone()))
            .layer(Optional(self.concurrency_limit.clone()))
            .layer(Optional(attempt_timeout))
            .layer(RecordAttemptLayer)
            .layer(decompress)
            .service(transport);
        let lower = ServiceExt::<http::Request<ReplayBody>>::map_response(lower, boxed_body);
        let lower: BoxCloneSyncService<http::Request<ReplayBody>, http::Response<Body>, BoxError> =
            BoxCloneSyncService::new(lower);
        let svc = ServiceBuilder::new()
            .layer(Optional(self.request_id.clone()))
            .layer(Optional(trace))
            .layer(Optional(metrics))
            .layer(Optional(self.cache.clone()))
            .layer(Optional(self.deadline.map(DeadlineLayer::new)))
            .layer(Optional(retry))
            .layer(Optional(hedge))
            .service(lower);
        let svc = ServiceExt::<http::Request<ReplayBody>>::map_response(svc, boxed_body);
        Ok(Stack::new(svc))
    }
}

/// The stack's response with its body boxed into the facade's [`Body`].
fn boxed_body<B>(res: http::Response<B>) -> http::Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(Body::new)
}

/// What a layer's own error type says happened, if `e` is one: its kind,
/// the wait it reports (unclamped) and who said to wait.
///
/// The throttle's [`Throttled`] is the server's wait remembered by the
/// client's gate ([`WaitSource::ServerGate`]); the rate limit's
/// [`RateLimited`] and the concurrency limit's [`ConcurrencyLimited`] are
/// the client's own ([`WaitSource::Local`]). All three mean nothing was
/// sent.
pub(crate) fn layer_kind(e: &(dyn StdError + 'static)) -> Option<Classified> {
    if e.is::<DeadlineExceeded>() || e.is::<AttemptTimedOut>() || e.is::<BodyTimedOut>() {
        return Some((Kind::Timeout, None, None));
    }
    if let Some(r) = e.downcast_ref::<RateLimited>() {
        return Some((Kind::RateLimited, Some(r.wait()), Some(WaitSource::Local)));
    }
    if let Some(t) = e.downcast_ref::<Throttled>() {
        return Some((
            Kind::RateLimited,
            Some(t.wait()),
            Some(WaitSource::ServerGate),
        ));
    }
    if e.is::<ConcurrencyLimited>() {
        return Some((Kind::RateLimited, None, Some(WaitSource::Local)));
    }
    if e.is::<TokenError>() {
        return Some((Kind::Auth, None, None));
    }
    if let Some(c) = e.downcast_ref::<CircuitOpen>() {
        return Some((Kind::CircuitOpen, Some(c.retry_after()), None));
    }
    if is_redirect_error(e) {
        return Some((Kind::Redirect, None, None));
    }
    None
}

/// An error's kind, the wait it reports and who said to wait.
pub(crate) type Classified = (Kind, Option<Duration>, Option<WaitSource>);

/// Whether `e` is one of the redirect layer's errors.
fn is_redirect_error(e: &(dyn StdError + 'static)) -> bool {
    e.is::<TooManyRedirects>() || e.is::<RedirectLoop>() || e.is::<InsecureRedirect>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_retry_policy_is_the_builders_with_its_classifier() {
        let policy = default_policy(3, false, None).expect("the defaults build");
        let public = default_retry_policy();
        assert_eq!(public.max_attempts(), policy.max_attempts());
        assert_eq!(public.max_retry_after(), policy.max_retry_after());
        assert_eq!(public.budget(), policy.budget());
        assert_eq!(format!("{public:?}"), format!("{policy:?}"));
    }
}
