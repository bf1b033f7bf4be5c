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
//! ## The layers' own events
//!
//! The layers that decide to wait, hold or fetch record what they did
//! themselves, each behind its crate's cargo feature `metrics` (the
//! facade's feature `metrics` turns all of them on). They record on the
//! event only (a wait, a gate closing, a token fetch), so a call that
//! meets none costs nothing; and with the feature off nothing is compiled
//! in. They do not depend on this crate's layers and record whether or
//! not `ClientBuilder::metrics` is on.
//!
//! | name | kind | unit | attributes | moves when | crate |
//! | --- | --- | --- | --- | --- | --- |
//! | `parapet.client.retry.wait` | histogram | `s` | `server.address`, `server.port`, `source` (`retry_after` when the server's wait was the longer, else `backoff`) | the retry layer chose a wait before a re-send (a body restart's too) | parapet-retry |
//! | `parapet.client.throttle.closures` | counter | `{closure}` | `server.address`, `server.port`, `source` | a response said wait (`source`: `retry_after`, or `rate_limit` for the rate-limit headers) and the throttle's gate closed, each such response counted | parapet-ratelimit |
//! | `parapet.client.throttle.held` | histogram | `s` | as closures | the gate closed: for how long | parapet-ratelimit |
//! | `parapet.client.throttle.wait` | histogram | `s` | `server.address`, `server.port` | a request waited at a closed gate, or for the throttle's pacing of a server's last few requests | parapet-ratelimit |
//! | `parapet.client.throttle.rejections` | counter | `{request}` | `server.address`, `server.port` | the throttle refused a request (reject mode, or the gate opens past its bound) | parapet-ratelimit |
//! | `parapet.client.rate_limit.wait` | histogram | `s` | `server.address`, `server.port` | a request waited for the client-side rate limit | parapet-ratelimit |
//! | `parapet.client.rate_limit.rejections` | counter | `{request}` | `server.address`, `server.port` | the rate limiter refused a request | parapet-ratelimit |
//! | `parapet.client.concurrency.queue` | histogram | `s` | `server.address`, `server.port` | a request that queued for a concurrency permit got it | parapet-ratelimit |
//! | `parapet.client.concurrency.rejections` | counter | `{request}` | `server.address`, `server.port` | the concurrency limit refused a request (reject mode, or no permit within its bound) | parapet-ratelimit |
//! | `parapet.client.token.fetches` | counter | `{fetch}` | `kind` (`initial`, `refresh`, `reauth`), `outcome` (`ok`, `error`) | a token cache fetch ended (its own retries included: one fetch, however many requests); a failure is `outcome=error` | parapet-auth |
//! | `parapet.client.token.fetch.duration` | histogram | `s` | `outcome` | a token fetch ended | parapet-auth |
//! | `parapet.client.reauths` | counter | `{request}` | `server.address`, `server.port` | the auth layer re-sent a request after a 401 with a fresh token | parapet-auth |
//! | `parapet.client.reauths_refused` | counter | `{response}` | `reason` (`body_not_replayable`, `reauth_cooldown`, `no_token`, `already_reauthed`) | the auth layer returned a 401 without a re-send | parapet-auth |
//!
//! Each crate's docs hold the exact moment and attributes of its own.
//!
//! # Cost
//!
//! Each layer registers its handles once per method, host and port (and
//! then per outcome) at the first call that needs them, and afterwards
//! looks them up by a hash: a call costs a map lookup, the shared record
//! of its attempts, and the records themselves. The map is bounded (1 024
//! label sets per layer; past that a new host's calls register their
//! metrics call by call). A handle is bound to the recorder installed when
//! it was registered: install the recorder before the first call.
//!
//! The facade builds none of this unless asked (`ClientBuilder::metrics`,
//! cargo feature `metrics`). BENCHMARKS.md ("Metrics") has the figures
//! per call; `examples/cost.rs` measures the two layers alone.

mod attempt;
mod call;
mod common;
mod handles;

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

    // The layers' own events (each crate's `metric_names` holds the same
    // strings; the facade's tests check that they agree).

    /// `parapet.client.retry.wait`: histogram, seconds (parapet-retry).
    pub const RETRY_WAIT: &str = "parapet.client.retry.wait";
    /// `parapet.client.throttle.closures`: counter (parapet-ratelimit).
    pub const THROTTLE_CLOSURES: &str = "parapet.client.throttle.closures";
    /// `parapet.client.throttle.held`: histogram, seconds (parapet-ratelimit).
    pub const THROTTLE_HELD: &str = "parapet.client.throttle.held";
    /// `parapet.client.throttle.wait`: histogram, seconds (parapet-ratelimit).
    pub const THROTTLE_WAIT: &str = "parapet.client.throttle.wait";
    /// `parapet.client.throttle.rejections`: counter (parapet-ratelimit).
    pub const THROTTLE_REJECTIONS: &str = "parapet.client.throttle.rejections";
    /// `parapet.client.rate_limit.wait`: histogram, seconds (parapet-ratelimit).
    pub const RATE_LIMIT_WAIT: &str = "parapet.client.rate_limit.wait";
    /// `parapet.client.rate_limit.rejections`: counter (parapet-ratelimit).
    pub const RATE_LIMIT_REJECTIONS: &str = "parapet.client.rate_limit.rejections";
    /// `parapet.client.concurrency.queue`: histogram, seconds (parapet-ratelimit).
    pub const CONCURRENCY_QUEUE: &str = "parapet.client.concurrency.queue";
    /// `parapet.client.concurrency.rejections`: counter (parapet-ratelimit).
    pub const CONCURRENCY_REJECTIONS: &str = "parapet.client.concurrency.rejections";
    /// `parapet.client.token.fetches`: counter (parapet-auth).
    pub const TOKEN_FETCHES: &str = "parapet.client.token.fetches";
    /// `parapet.client.token.fetch.duration`: histogram, seconds (parapet-auth).
    pub const TOKEN_FETCH_DURATION: &str = "parapet.client.token.fetch.duration";
    /// `parapet.client.reauths`: counter (parapet-auth).
    pub const REAUTHS: &str = "parapet.client.reauths";
    /// `parapet.client.reauths_refused`: counter (parapet-auth).
    pub const REAUTHS_REFUSED: &str = "parapet.client.reauths_refused";
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
    let events: [(&'static str, Unit, &'static str); 13] = [
        (
            names::RETRY_WAIT,
            Unit::Seconds,
            "Waits chosen before a retry, by source",
        ),
        (
            names::THROTTLE_CLOSURES,
            Unit::Count,
            "Responses that closed the throttle's gate, by source",
        ),
        (
            names::THROTTLE_HELD,
            Unit::Seconds,
            "How long each closing held the throttle's gate",
        ),
        (
            names::THROTTLE_WAIT,
            Unit::Seconds,
            "Time requests waited at the throttle",
        ),
        (
            names::THROTTLE_REJECTIONS,
            Unit::Count,
            "Requests the throttle refused",
        ),
        (
            names::RATE_LIMIT_WAIT,
            Unit::Seconds,
            "Time requests waited for the client-side rate limit",
        ),
        (
            names::RATE_LIMIT_REJECTIONS,
            Unit::Count,
            "Requests the client-side rate limit refused",
        ),
        (
            names::CONCURRENCY_QUEUE,
            Unit::Seconds,
            "Time requests queued for a concurrency permit",
        ),
        (
            names::CONCURRENCY_REJECTIONS,
            Unit::Count,
            "Requests the concurrency limit refused",
        ),
        (
            names::TOKEN_FETCHES,
            Unit::Count,
            "Token cache fetches, by kind and outcome",
        ),
        (
            names::TOKEN_FETCH_DURATION,
            Unit::Seconds,
            "Duration of token cache fetches",
        ),
        (
            names::REAUTHS,
            Unit::Count,
            "Requests re-sent after a 401 with a fresh token",
        ),
        (
            names::REAUTHS_REFUSED,
            Unit::Count,
            "401s returned without a re-send, by reason",
        ),
    ];
    for (name, unit, text) in events {
        if unit == Unit::Seconds {
            describe_histogram!(name, unit, text);
        } else {
            describe_counter!(name, unit, text);
        }
    }
}
