//! HTTP client metrics with OpenTelemetry names, emitted through the
//! [`metrics`] facade: the application installs the recorder (Prometheus,
//! OpenTelemetry, statsd, ...); with none installed, every record is
//! discarded.
//!
//! Two tower layers:
//!
//! - [`MetricsLayer`], once per logical call: right below the call span,
//!   outside the retry layer.
//! - [`AttemptMetricsLayer`], once per request that leaves: below the
//!   retry and redirect layers. It reports the call's attempts and the
//!   reasons of its retries to the [`MetricsLayer`] above it through the
//!   request's extensions.
//!
//! ```
//! use http::{Request, Response};
//! use parapet_metrics::{AttemptMetricsLayer, MetricsLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! parapet_metrics::describe(); // units and descriptions, for exporters that show them
//! let transport = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(MetricsLayer::new())
//!     // deadline, retry, redirects ...
//!     .layer(AttemptMetricsLayer::new())
//!     // auth, limiters, attempt timeout ...
//!     .service(transport);
//! let res = client.oneshot(Request::get("http://api.test/v1/orders").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```
//!
//! # The metrics
//!
//! Attributes common to all: `http.request.method` (a known method, else
//! `_OTHER`), `server.address` (the host, never a path or a query) and
//! `server.port` (the URI's, else the scheme's default), as the
//! OpenTelemetry HTTP client conventions name them. A response adds
//! `http.response.status_code`, and `error.type` = the status code for
//! 4xx and 5xx; a call without a response adds only `error.type`, a short
//! fixed class ([`default_error_type`], or the stack's own
//! [`ErrorTypeFn`]). Cardinality is bounded by hosts × methods × statuses
//! × error classes.
//!
//! | name | kind | unit | attributes | moves when | layer |
//! | --- | --- | --- | --- | --- | --- |
//! | `http.client.request.duration` | histogram | `s` | common, status, `error.type` | a call's response head arrives or it fails: seconds from the call, attempts and waits included | [`MetricsLayer`] |
//! | `http.client.active_requests` | gauge, up and down | `{request}` | common | +1 when a call starts; −1 when its response head arrives, it fails, or its future is dropped | [`MetricsLayer`] |
//! | `http.client.request.body.size` | histogram | `By` | as the duration | a call ends whose request had a `Content-Length` | [`MetricsLayer`] |
//! | `http.client.response.body.size` | histogram | `By` | as the duration | a call ends with a response carrying `Content-Length` (not for `HEAD`) | [`MetricsLayer`] |
//! | `parapet.client.attempts` | histogram | `{attempt}` | common | a call ends: how many requests it sent (redirect hops included); read from the [`AttemptMetricsLayer`]'s count, else from the response's [`Attempt`](parapet_core::Attempt) (not known for a failed call without the attempt layer) | [`MetricsLayer`] |
//! | `parapet.client.retries_refused` | counter | `{call}` | common, `reason` | a retryable failure came back without a retry: `not_idempotent`, `no_attempts_left`, `body_not_replayable`, `retry_after_too_long`, `retry_after_past_deadline`, `wait_past_deadline`, `budget_exhausted` (needs [`MetricsLayer::retry_refusal`]) | [`MetricsLayer`] |
//! | `parapet.client.retries` | counter | `{retry}` | common, `reason` | an attempt after the first leaves; `reason` is what the attempt before it ended with, its status (`503`) or `error.type` (`connection_refused`) | [`AttemptMetricsLayer`] |
//! | `parapet.client.attempt.duration` | histogram | `s` | common, status, `error.type` | an attempt's response head arrives or it fails | [`AttemptMetricsLayer`] |
//!
//! OpenTelemetry's `http.client.request.duration` is defined per physical
//! request; here it measures the call (what the caller waited for), and
//! `parapet.client.attempt.duration` is the per-request figure. A stack
//! without retries has one attempt per call and the two agree.
//!
//! ## Not covered yet
//!
//! The issue's list has more; each needs the layer that knows to say so,
//! and these layers emit nothing a layer above can read today:
//!
//! | wanted | what it would need |
//! | --- | --- |
//! | `Retry-After` waits and their source | the retry layer to put the wait it chose (and whether it came from `Retry-After` or backoff) in the next attempt's extensions, or a `NotRetried`-like record on the response |
//! | throttle gate closures, time held | the throttle (parapet-ratelimit) to report a gate closing and reopening: an event hook or a counter of its own |
//! | rate-limit waits and rejections | the rate limiter to leave its wait in the request's extensions (rejections are visible today as `error.type = rate_limited` with the facade's classifier) |
//! | concurrency-limit queue time | the concurrency limiter to leave its queue time in the extensions |
//! | token fetches, refreshes, failures; re-auths after 401 | parapet-auth's token cache and auth layer to emit events (a fetch happens outside any request this crate sees) |
//!
//! # Cost
//!
//! Per call, the call layer builds its attributes (the host is copied
//! into a `String`), allocates the shared record for its attempts, and
//! hands the recorder one gauge and two to five histograms or counters;
//! the attempt layer builds its attributes and one histogram per attempt.
//! The facade builds none of this unless asked
//! (`ClientBuilder::metrics`, cargo feature `metrics`). `examples/cost.rs`
//! measures it.

mod attempt;
mod call;
mod common;

pub use attempt::{AttemptMetrics, AttemptMetricsFuture, AttemptMetricsLayer};
pub use call::{Metrics, MetricsFuture, MetricsLayer};
pub use common::{ErrorTypeFn, RetryRefusalFn, default_error_type};

/// The metric names, as constants.
pub mod names {
    /// `http.client.request.duration`: histogram, seconds, per call.
    pub const REQUEST_DURATION: &str = "http.client.request.duration";
    /// `http.client.active_requests`: gauge, calls in flight.
    pub const ACTIVE_REQUESTS: &str = "http.client.active_requests";
    /// `http.client.request.body.size`: histogram, bytes.
    pub const REQUEST_BODY_SIZE: &str = "http.client.request.body.size";
    /// `http.client.response.body.size`: histogram, bytes.
    pub const RESPONSE_BODY_SIZE: &str = "http.client.response.body.size";
    /// `parapet.client.attempts`: histogram, attempts per call.
    pub const ATTEMPTS: &str = "parapet.client.attempts";
    /// `parapet.client.retries`: counter, by `reason`.
    pub const RETRIES: &str = "parapet.client.retries";
    /// `parapet.client.retries_refused`: counter, by `reason`.
    pub const RETRIES_REFUSED: &str = "parapet.client.retries_refused";
    /// `parapet.client.attempt.duration`: histogram, seconds, per attempt.
    pub const ATTEMPT_DURATION: &str = "parapet.client.attempt.duration";
}

/// The bucket boundaries, in seconds, that the OpenTelemetry HTTP
/// semantic conventions advise for `http.client.request.duration`. The
/// `metrics` facade carries no buckets: give these to the exporter (for
/// Prometheus, `PrometheusBuilder::set_buckets_for_metric`), for the
/// call and the attempt durations alike.
///
/// ```
/// assert_eq!(parapet_metrics::DURATION_BUCKETS.first(), Some(&0.005));
/// assert_eq!(parapet_metrics::DURATION_BUCKETS.last(), Some(&10.0));
/// ```
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Gives the installed recorder each metric's unit and description, for
/// exporters that show them. Call it once, after installing the recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    describe_histogram!(
        names::REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP client calls, retries and waits included"
    );
    describe_gauge!(
        names::ACTIVE_REQUESTS,
        Unit::Count,
        "HTTP client calls in flight"
    );
    describe_histogram!(
        names::REQUEST_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP client request bodies (from Content-Length)"
    );
    describe_histogram!(
        names::RESPONSE_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP client response bodies (from Content-Length)"
    );
    describe_histogram!(
        names::ATTEMPTS,
        Unit::Count,
        "Requests sent per HTTP client call"
    );
    describe_counter!(
        names::RETRIES,
        Unit::Count,
        "HTTP client retries, by the reason the attempt before failed"
    );
    describe_counter!(
        names::RETRIES_REFUSED,
        Unit::Count,
        "Retryable HTTP client failures returned without a retry, by reason"
    );
    describe_histogram!(
        names::ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of each HTTP client request sent"
    );
}
