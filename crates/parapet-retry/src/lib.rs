//! Safe, bounded, `Retry-After`-aware retries with body replay.
//!
//! [`RetryLayer`] retries a transient failure with backoff, never sends a
//! POST twice by accident, obeys a server that says "wait", and does not
//! hammer a failing dependency.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use http::{Request, Response, StatusCode};
//! use parapet_core::ReplayBody;
//! use parapet_retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // A stand-in server that fails twice with 503, then answers.
//! let hits = Arc::new(AtomicU32::new(0));
//! let seen = Arc::clone(&hits);
//! let server = service_fn(move |_req: Request<ReplayBody>| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap())
//!     }
//! });
//! let client = ServiceBuilder::new().layer(RetryLayer::default()).service(server);
//!
//! let res = client.oneshot(Request::get("http://api.test/items").body(String::new()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(hits.load(Ordering::SeqCst), 3);
//! # }
//! ```
//!
//! # What is retried
//!
//! - **Who may be sent again**: only an idempotent request, by
//!   parapet-core's [`IdempotencyRules`](parapet_core::IdempotencyRules)
//!   (RFC 9110 methods; the per-request
//!   [`Idempotency`](parapet_core::Idempotency) override; an
//!   `Idempotency-Key` header once trusted). A failure that proves the
//!   request never left ([`request_never_sent`]: connection refused,
//!   connect or DNS failure; not an unreachable host or network, which
//!   Linux also reports after the request was written) is retried for any
//!   method. Attempt timeouts and transport errors after the request may
//!   have been written are retried for idempotent requests only.
//! - **What is never retried**: an error that refused the request locally
//!   on purpose, before it left: one with a
//!   [`FailFast`](parapet_core::FailFast) in its `source()` chain
//!   ([`is_fail_fast`](parapet_core::is_fail_fast)), such as an open
//!   circuit breaker below this layer. Sending it again now would be
//!   refused the same way, so it is returned at once, whatever the
//!   classifier says, and spends no attempt, wait or budget.
//! - **What counts as transient**: by default the statuses 408, 429, 500,
//!   502, 503, 504 and every error from the inner service; configurable by
//!   a status list ([`RetryPolicyBuilder::retry_on`]) and a classifier
//!   ([`RetryPolicyBuilder::classify`]) that sees the method, URI, status,
//!   headers and error.
//! - **How often**: 3 attempts in all by default (a request's
//!   [`MaxAttempts`] extension sets its own), and optionally no retry
//!   that would start more than [`max_elapsed`](RetryPolicyBuilder::max_elapsed)
//!   after the call began, whichever comes first.
//! - **When**: after an exponential backoff (base 100 ms, factor 2, cap 20 s,
//!   [full jitter](BackoffJitter) by default, a floor of 10 ms). On 429 and
//!   503 (others opt in) a `Retry-After` is obeyed: the wait is the longer
//!   of the backoff and the server's, the server's spread up to 10 %
//!   upwards. A `Retry-After` longer than
//!   [`max_retry_after`](RetryPolicyBuilder::max_retry_after) (60 s) or than
//!   the time left before the call's [`Deadline`](parapet_core::Deadline)
//!   means: no wait, the response is returned at once (a facade can turn
//!   it into an error carrying the `Retry-After`). A malformed
//!   `Retry-After` is ignored (plain backoff). No wait is started that
//!   would end after the deadline. The deadline is read with
//!   [`Deadline::current`](parapet_core::Deadline::current) when a retry
//!   is weighed: the earlier of the one the request carries in its
//!   extensions and the one in scope (the deadline layer puts its call's
//!   deadline in scope while it polls this layer's future, and the request
//!   then carries none).
//! - **How much in all**: a [`RetryBudget`] per host, shared by every
//!   clone: retries add at most 20 % to the calls made, with a floor of 10
//!   retries per second for quiet clients. Or, in its place
//!   ([`RetryPolicyBuilder::retry_quota`]), a [`RetryQuota`]: the AWS
//!   SDKs' token bucket per host (500 tokens; a retry costs 5, one after a
//!   timeout 10; a call that succeeds at once earns 1 back, one that
//!   succeeds after retries the cost of its last retry). The budget bounds
//!   the share of retries over a sliding window, whatever came before; the
//!   quota remembers: a long outage spends it, and only successes refill
//!   it. Pick the budget for a steady share, the quota to behave as the
//!   AWS SDKs do.
//! - **Bodies**: the request body is wrapped in a
//!   [`ReplayBody`](parapet_core::ReplayBody) capped at 64 KiB (a
//!   `ReplayBody` an outer layer armed is reused). A body that cannot be
//!   replayed (over the cap, or its stream failed) is not retried: the
//!   attempt's result is returned and a trace event says why.
//!
//! # A body that breaks
//!
//! A response's body can still fail after its headers came: a reset
//! halfway, or an end before its `Content-Length`. The layer's response
//! body is a [`RetryBody`]: frames pass through untouched, and when the
//! call could still be retried as the response arrived (the request may
//! be sent again, its body can be replayed, attempts remain), the body
//! keeps the call. If it then breaks in a way the policy retries (by
//! default a reset, an abort or an early end; never a timeout), and the
//! attempts, the deadline and the budget allow, the body yields one
//! [`BodyRestart`] error. **Polling the body again after it is the opt-in
//! to a restart**: the layer waits the backoff, re-sends the request
//! (retrying that call as any other) and, when the final answer has the
//! same status, goes on with the new response's body from its start;
//! otherwise the body ends with [`BodyRestartFailed`]. A reader that
//! collects the whole body (the `parapet` facade's `bytes`, `text`,
//! `json`) drops what it had and reads on; a streaming reader stops at
//! the error, and nothing is re-sent. A body whose call cannot be
//! retried (a POST without a trusted key, no attempts left, the budget
//! spent) fails with the inner body's error, unchanged.
//!
//! This costs the common call nothing but moves: the call (the service
//! and the copy of the head made anyway) goes into the body instead of
//! being dropped; a timer and the next attempt are boxed only when a body
//! breaks. The copy of the request (and a streamed request body's
//! recording) then lives until the response body ends, fails or is
//! dropped.
//!
//! A retryable failure returned without a retry carries a [`NotRetried`]
//! response extension saying why (not idempotent, no attempts left, body
//! not replayable, `Retry-After` too long or past the deadline, wait past
//! the deadline, budget spent) and the `Retry-After` if there was one.
//! Errors are returned exactly as the inner service gave them.
//!
//! A response discarded for a retry has its body read (up to 4 KiB, for at
//! most 100 ms, while the wait runs) so its connection can go back to the
//! pool, or is dropped.
//!
//! Each retry's request carries an [`Attempt`](parapet_core::Attempt)
//! extension (number 2, 3, ... and the maximum). The first attempt carries
//! none: its absence means attempt 1, as parapet-trace reads it
//! (`http.request.resend_count` 0). A request that arrives with an
//! `Attempt` (an outer retry layer's) has it replaced by attempt 1 of this
//! layer. Every extension the request arrived with reaches every attempt.
//!
//! # Trace events
//!
//! All at `DEBUG`, except the two that point at configuration, at `INFO`.
//! Each has the fields `method`, `host` (the URI's authority without user
//! information), `attempt` and `reason` (`status 503`, `request not sent`,
//! `transport error` or `response body broke`), and `error` (the error's
//! message) when the attempt ended in an error.
//!
//! | message | level | extra fields |
//! | --- | --- | --- |
//! | `retrying request` | DEBUG | `attempt` is the one about to start; `delay_ms`, `delay_source` (`backoff` or `server`) |
//! | `not retrying: the request is not idempotent` | DEBUG | |
//! | `not retrying: no attempts left` | DEBUG | |
//! | `not retrying: Retry-After is longer than the maximum` | DEBUG | `retry_after_s` |
//! | `not retrying: Retry-After ends after the deadline` | DEBUG | `retry_after_s` |
//! | `not retrying: the wait would end after the deadline` | DEBUG | `delay_ms` |
//! | `not retrying: the request body cannot be replayed` | INFO | `error` is why the body cannot be replayed |
//! | `not retrying: retry budget exhausted` | INFO | |
//! | `not retrying: retry quota exhausted` | INFO | `cost`, the tokens the retry would have taken |
//!
//! No event is at `WARN` or `ERROR`: a retried 503 is the layer working.
//!
//! # Where it goes in a stack
//!
//! Inside the deadline layer (so the whole call, waits included, has one
//! budget of time, and the retry layer can see it; its body timer bounds a
//! body's restart too), outside auth, the per-host throttle, rate limit,
//! concurrency limit and attempt timeout (each attempt passes through them
//! again: a fresh token, a new slot, its own timeout). The `parapet`
//! facade's order:
//!
//! ```text
//! request id → call span → deadline → RETRY → redirect → attempt span
//!     → auth → throttle → rate limit → concurrency limit
//!     → attempt timeout → decompression → transport
//! ```
//!
//! # Hedged requests
//!
//! The [`hedge`] module's [`HedgeLayer`] sends a second copy of a slow
//! idempotent read (GET, HEAD, OPTIONS by default) once a delay has passed
//! with no answer ([`HedgePolicy::fixed`], or the host's recent
//! [`HedgePolicy::percentile`] of latency), and takes the first answer.
//! It goes just below this layer, made by [`RetryLayer::hedge_layer`] so
//! that hedges are spent from the same budget or quota as retries; see
//! the module for what is hedged and why it goes there.
//!
//! # Cost per call
//!
//! The future is not boxed and holds the inner service (cloned once per
//! call, as tower's `Retry` does), the shared policy and one pointer. What
//! only a retry needs is out of line: the copy of the request head in one
//! box made at the call, the timer, the discarded response's body being
//! drained and the next request in another made when a retry happens. So
//! the future of a call is the inner future plus 16 bytes.
//!
//! On the common path (one attempt that succeeds) a call allocates:
//!
//! - one box holding the copy of the request head, so that it can be sent
//!   again: method, URI, version, the first four headers in place (header
//!   values and the URI are `Bytes`, shared by reference count, not
//!   copied; a request with more headers adds one allocation for the
//!   others, and the list is turned back into a `HeaderMap` only when a
//!   retry is considered) and the extensions (free when there are none; a
//!   map and one box per extension otherwise);
//! - for a request body that is not already a
//!   [`ReplayBody`](parapet_core::ReplayBody) and not already at its end,
//!   the `ReplayBody`'s box and shared recording (frames are kept by
//!   reference count, up to the cap). Pass `ReplayBody::from(bytes)` for a
//!   body in memory: it replays with no copy, no recording and no cap.
//!
//! So a GET with up to four headers, no extensions and an empty body costs
//! one allocation, below parapet-timeout's `DeadlineLayer` too (it puts the
//! deadline in scope, not in the extensions).
//!
//! With a [`RetryQuota`] in place of the budget, a call finds its host's
//! bucket the same way (and holds a reference to it, one atomic add), and
//! its success puts tokens back with one atomic operation on the bucket (a
//! read alone when the bucket is full); a retry takes its tokens with a
//! compare-and-swap. No lock either way once the host is known.
//!
//! The budget counts the call with one atomic add on the host's counter.
//! A service remembers its host's entry once two calls in a row went to
//! the same host, and then finds it with a string comparison; otherwise
//! the entry is looked up under a read lock that calls share (a fast
//! non-cryptographic hash, no allocation but for a new host). A service
//! cloned for each call (as the `parapet` facade does) never keeps an
//! entry, which would cost a reference count per clone. Only a retry
//! decision takes a lock, the host's own.
//!
//! The clock is read once per call when the budget or
//! [`max_elapsed`](RetryPolicyBuilder::max_elapsed) needs the time, or not
//! at all when an outer layer holds its reading ([`parapet_core::clock`]:
//! the deadline layer does), and this layer holds its reading for the
//! layers beneath. A clock read is the largest single cost of this layer
//! used alone (a `clock_gettime` through the vDSO: tens of nanoseconds on a
//! virtual machine). With
//! [`max_attempts(1)`](RetryPolicyBuilder::max_attempts) there is no copy
//! of the head, no budget bookkeeping and no clock read.
//!
//! Measured (`benches/`, `cargo bench --bench layers -- 'retry|bare|default_stack'`,
//! over an always-ready service that answers at once, on the 2-vCPU
//! machine of `BENCHMARKS.md`, with other builds running): about 125 ns
//! over the bare service when used alone, of which the clock read is about
//! 45 ns; about 100 ns beneath a `DeadlineLayer` that holds its reading.
//! One allocation per call (544 bytes, the head's box), and a 160-byte
//! future over a 144-byte inner one (it was 416, which every layer above
//! moved: the hand-assembled default stack went from about 665 to 585 ns
//! per call). What remains is the copy of the head (its box filled and
//! freed, its `Bytes` cloned and dropped), the clock read, the budget's
//! atomic add, the policy's reference count taken and released, and moving
//! the request.
//!
//! # Metrics
//!
//! With the cargo feature `metrics`, the layer records through the
//! [`metrics`](https://docs.rs/metrics/0.24) facade (the application
//! installs the recorder; with none installed, every record is discarded):
//!
//! | name | kind | unit | labels | moves when |
//! | --- | --- | --- | --- | --- |
//! | [`parapet.client.retry.wait`](metric_names::RETRY_WAIT) | histogram | `s` | `server.address`, `server.port`, `source` | the layer has decided to re-send a request and chosen how long to wait first: once per retry, before the wait starts |
//!
//! - `server.address` is the request URI's host (never its user
//!   information, path or query), `server.port` its port, else the
//!   scheme's default (443 for `https`, 80 for `http`); each is left out
//!   when the URI has none (a relative URI).
//! - `source` is `retry_after` when the wait is the server's
//!   `Retry-After` (spread upwards by the
//!   [jitter](RetryPolicyBuilder::retry_after_jitter)) because it was longer
//!   than the backoff, and `backoff` otherwise: no `Retry-After`, one
//!   malformed or not obeyed for the status, or one shorter than the
//!   backoff. The layer reads no other rate-limit header, so there is no
//!   `rate_limit` source.
//! - The value is the wait chosen, in seconds, as a `f64`. A retry that is
//!   refused (see [`NotRetried`]) records nothing; nor does a wait cut
//!   short because the caller dropped the future. The restart of a
//!   [response body that broke](#a-body-that-breaks) records its wait like
//!   any retry.
//!
//! The record is made on a retry only: a call answered at once costs
//! nothing, and without the feature nothing of it is compiled in. The names
//! are in [`metric_names`] whether or not the feature is on.
//!
//! # Features
//!
//! - `hyper-util` (off by default; the `parapet` facade turns it on): turns
//!   on parapet-core's feature of the same name, so that a
//!   `hyper_util::client::legacy::Error` decides by its `is_connect()`
//!   whether "the request never left"; see [`request_never_sent`].
//! - `metrics` (off by default): records the [metrics](#metrics) through
//!   the `metrics` crate (0.24).

mod backoff;
mod body;
mod budget;
mod error;
mod future;
pub mod hedge;
mod layer;
mod max_attempts;
#[cfg(feature = "metrics")]
mod metrics;
mod never_sent;
mod not_retried;
mod policy;
mod quota;
mod service;

pub use backoff::BackoffJitter;
pub use body::RetryBody;
pub use budget::RetryBudget;
pub use error::{BodyRestart, BodyRestartFailed};
pub use future::ResponseFuture;
pub use hedge::{Hedge, HedgeCopy, HedgeLayer, HedgePolicy};
pub use layer::RetryLayer;
pub use max_attempts::MaxAttempts;
pub use not_retried::{NotRetried, NotRetriedReason};
pub use parapet_core::request_never_sent;
pub use policy::{
    DEFAULT_RETRY_STATUSES, InvalidRetryPolicy, Outcome, RetryPolicy, RetryPolicyBuilder, Verdict,
};
pub use quota::RetryQuota;
pub use service::Retry;

/// The names of the metrics this crate records with the feature `metrics`
/// (see [the table](crate#metrics)).
pub mod metric_names {
    /// `parapet.client.retry.wait`: histogram, seconds; the wait chosen
    /// before a re-send, by `server.address`, `server.port` and `source`
    /// (`retry_after` or `backoff`).
    pub const RETRY_WAIT: &str = "parapet.client.retry.wait";
}
