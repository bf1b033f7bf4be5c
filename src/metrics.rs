//! Metrics (cargo feature `metrics`): [`parapet_metrics`]'s layers, through
//! the `metrics` facade, with the facade's own `error.type` names and the
//! retry layer's refusals.
//!
//! ```text
//! request id → call span → METRICS (call) → [cache] → deadline → retry → redirect
//!   → attempt span → METRICS (attempt) → auth → ...
//! ```
//!
//! The call layer sits right below the call span, so it sees each call
//! once, a cache hit included; the attempt layer right below the attempt
//! span, so it sees each request that leaves (redirect hops too) and names
//! each retry's reason.
//!
//! The feature also turns on the layers' own event metrics (retry waits,
//! the throttle's gate, the limiters' waits and refusals, token fetches
//! and re-auths after a 401: the second table in
//! [`parapet::metrics`](crate::metrics)). Those are recorded by the layers
//! themselves when the event happens, whether or not
//! [`ClientBuilder::metrics`](crate::ClientBuilder::metrics) is on: a call
//! that meets none of them records nothing.
//!
//! The call and attempt layers are off unless
//! [`ClientBuilder::metrics`](crate::ClientBuilder::metrics) says so;
//! then the client takes the stack shape with on/off layers, and the
//! default shape (no layer that is off by default turned on) is left as
//! it is. Built without the feature, the layers are not compiled in.

use std::error::Error as StdError;

/// How the stack names an error class.
pub(crate) type ErrorTypeFn = fn(&(dyn StdError + 'static)) -> &'static str;

/// The call-level layer.
#[cfg(feature = "metrics")]
pub(crate) type CallMetrics = parapet_metrics::MetricsLayer;

/// The per-attempt layer.
#[cfg(feature = "metrics")]
pub(crate) type AttemptMetrics = parapet_metrics::AttemptMetricsLayer;

/// Without the `metrics` feature there is no metrics layer: this type has
/// no value, so an `Option` of it is always `None`.
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone)]
pub(crate) enum CallMetrics {}

/// See [`CallMetrics`].
#[cfg(not(feature = "metrics"))]
pub(crate) type AttemptMetrics = CallMetrics;

#[cfg(not(feature = "metrics"))]
impl<S> tower::Layer<S> for CallMetrics {
    type Service = S;

    fn layer(&self, _inner: S) -> S {
        match *self {}
    }
}

/// The two metrics layers when `on`, with the stack's `error.type` names.
#[cfg(feature = "metrics")]
pub(crate) fn layers(
    on: bool,
    error_type: ErrorTypeFn,
) -> (Option<CallMetrics>, Option<AttemptMetrics>) {
    if !on {
        return (None, None);
    }
    let call = parapet_metrics::MetricsLayer::new()
        .error_type(error_type)
        .retry_refusal(retry_refusal as parapet_metrics::RetryRefusalFn);
    let attempt = parapet_metrics::AttemptMetricsLayer::new().error_type(error_type);
    (Some(call), Some(attempt))
}

/// No metrics layers: the feature is off.
#[cfg(not(feature = "metrics"))]
pub(crate) fn layers(
    _on: bool,
    _error_type: ErrorTypeFn,
) -> (Option<CallMetrics>, Option<AttemptMetrics>) {
    (None, None)
}

/// Why the retry layer returned a retryable failure without a retry, as
/// `parapet.client.retries_refused`'s `reason`.
#[cfg(feature = "metrics")]
fn retry_refusal(ext: &http::Extensions) -> Option<&'static str> {
    use parapet_retry::{NotRetried, NotRetriedReason};

    NotRetried::get(ext).map(|n| match n.reason() {
        NotRetriedReason::NotIdempotent => "not_idempotent",
        NotRetriedReason::NoAttemptsLeft => "no_attempts_left",
        NotRetriedReason::BodyNotReplayable => "body_not_replayable",
        NotRetriedReason::RetryAfterTooLong => "retry_after_too_long",
        NotRetriedReason::RetryAfterPastDeadline => "retry_after_past_deadline",
        NotRetriedReason::WaitPastDeadline => "wait_past_deadline",
        NotRetriedReason::BudgetExhausted => "budget_exhausted",
        _ => "_OTHER",
    })
}

#[cfg(feature = "metrics")]
impl crate::ClientBuilder {
    /// Records [`parapet_metrics`]' metrics (OpenTelemetry HTTP client
    /// names: `http.client.request.duration`,
    /// `http.client.active_requests`, body sizes; and parapet's attempts,
    /// retries by reason and retries refused) through the `metrics`
    /// facade, to whatever recorder the application installed. Every
    /// metric, its attributes and when it moves are in
    /// [`parapet::metrics`](crate::metrics)' table. Default: off. Needs
    /// the cargo feature `metrics`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/health").reply(Reply::ok());
    /// // With no recorder installed, the metrics go nowhere.
    /// let client = parapet::Client::builder().metrics(true).build().unwrap();
    /// let res = client.get(&api.url("/health")).send().await.unwrap();
    /// assert_eq!(res.status(), 200);
    /// # }
    /// ```
    pub fn metrics(mut self, on: bool) -> Self {
        self.layers.metrics = on;
        self
    }
}
