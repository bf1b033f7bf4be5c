//! A per-authority circuit breaker that opens on failures and on the
//! server's own `Retry-After`.
//!
//! [`CircuitBreakerLayer`] keeps one circuit per authority (scheme, host
//! compared without regard to ASCII case, port with the scheme's default;
//! requests that name no authority share one circuit). A circuit is
//! **closed** while calls go through; it **opens** when its authority fails
//! too much, or when the server asks for a pause; while open, every call to
//! that authority fails at once with [`CircuitOpen`] and is never sent;
//! when the open time is over it is **half-open**: exactly one call, the
//! probe, goes through, every other call fails fast until the probe's
//! outcome is known, and that outcome closes the circuit or opens it again.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use parapet_circuit::{CircuitBreakerLayer, CircuitOpen, CircuitPolicy};
//! use parapet_core::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let policy = CircuitPolicy::consecutive_failures(NonZeroU32::new(3).unwrap())
//!     .open_for(Duration::from_secs(10));
//! let mut client = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(policy).unwrap())
//!     // Stands in for the hyper-util client: an upstream that is down.
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, BoxError>(http::Response::builder().status(502).body(()).unwrap())
//!     });
//! let get = || http::Request::get("https://api.example.com/v1/items").body(()).unwrap();
//!
//! for _ in 0..3 {
//!     let res = client.ready().await.unwrap().call(get()).await.unwrap();
//!     assert_eq!(res.status(), 502);
//! }
//! // Three failures in a row: the next calls are refused without being sent.
//! let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.retry_after(), Duration::from_secs(10));
//! # }
//! ```
//!
//! # When a circuit opens
//!
//! - **On failures**, in one of two modes picked by the [`CircuitPolicy`]
//!   constructor: [`consecutive_failures(n)`](CircuitPolicy::consecutive_failures)
//!   (n failures in a row), or
//!   [`failure_rate(percent, window, min_calls)`](CircuitPolicy::failure_rate)
//!   (that share of the calls of the last `window`, once there were
//!   `min_calls`). It then stays open for
//!   [`open_for`](CircuitPolicy::open_for) (default 30 s).
//! - **On the server's word**: a `503` or `429` with a `Retry-After`
//!   (seconds or an HTTP-date) opens the circuit of its authority for
//!   exactly that long, for every caller, whatever the mode, cut to
//!   [`max_server_wait`](CircuitPolicy::max_server_wait) (default 5 min).
//!   An open time already longer is not shortened. The response itself is
//!   returned to its caller unchanged, so a retry layer above still sees
//!   the status and the `Retry-After`.
//!
//! By default ([`default_classifier`]) a failure is an error from the inner
//! service (a connection refused or reset, a timeout from a layer below)
//! or a `500`, `502`, `503` or `504`. Other statuses are successes: a `4xx`
//! is the request's fault, not the server's health, and a `429` without
//! `Retry-After` is the rate limiter's business. [`CircuitPolicy::classify`]
//! replaces that rule. The outcome is taken when the response head arrives:
//! an error while the body streams is not seen by the breaker.
//!
//! # Failing fast
//!
//! A refused call gets a [`CircuitOpen`] (the services return
//! [`BoxError`](parapet_core::BoxError); downcast it) with when the circuit
//! lets a call through again ([`reopens_at`](CircuitOpen::reopens_at),
//! [`retry_after`](CircuitOpen::retry_after)), whether the server or the
//! failures opened it, and the authority (never its userinfo). Its
//! `source()` is a [`FailFast`](parapet_core::FailFast): a retry layer
//! above returns it at once rather than spending attempts and backoff on a
//! circuit that would refuse them all the same.
//!
//! A probe's outcome is awaited as long as its future lives. If its caller
//! drops it first (a timeout above, a cancelled task), the probe slot is
//! given back and the next call probes. Keep an attempt timeout below the
//! breaker, so that a hanging probe ends as a failure.
//!
//! # Where it goes
//!
//! Outermost first:
//!
//! ```text
//! request id → call span → deadline → retry → CIRCUIT BREAKER
//!     → auth → throttle → rate limit → concurrency limit
//!     → attempt timeout → transport
//! ```
//!
//! - **Below retry**, as in .NET's standard resilience pipeline (retry,
//!   then circuit breaker, then attempt timeout): the breaker sees every
//!   attempt, so each failed attempt counts, and a retry that waits out a
//!   `Retry-After` comes back just as the circuit half-opens and becomes its
//!   probe. Above retry, a whole call with three failed attempts would count
//!   once, and the retries would hammer a server the breaker believes down.
//! - **Above the throttle and the rate limit**: a refused call returns at
//!   once instead of first waiting at the throttle's gate or for a token it
//!   would then not use.
//! - **Above the attempt timeout**: a timed-out attempt is a failure here.
//!
//! It is not in the `parapet` client's default stack: add it where the
//! upstream's failures should stop traffic rather than only slow it.
//!
//! # The breaker and the throttle
//!
//! parapet-ratelimit's `ThrottleLayer` also reads `Retry-After`, but holds
//! the calls at the authority's gate until the time given, and then lets
//! them all go (spread by a jitter). The breaker refuses them at once, so
//! the caller can answer its own client now or try something else, and
//! lets exactly one through afterwards, because an upstream that failed may
//! still be down when its pause ends. The throttle waits; the breaker fails
//! fast. Both may be in one stack: the breaker above, which then refuses
//! what the throttle would have held.
//!
//! # Cost
//!
//! The services a layer makes and all their clones share one table behind
//! an `Arc`. `poll_ready` only forwards to the inner service. While every
//! circuit is closed, letting a call through is an atomic load, and keeping
//! its authority for the outcome only bumps reference counts. Recording
//! the outcome takes one lock for a hash-map lookup keyed by the request's
//! own authority bytes, with no allocation once the authority is known; in
//! consecutive mode a success skips even that while no authority has a
//! failure pending (a closed circuit with no failure pending takes no entry).
//! The table is bounded by [`max_authorities`](CircuitPolicy::max_authorities).
//!
//! Time is `tokio::time`, so tests with paused time drive the open times.
//! A circuit that opens logs a `WARN` event (authority, reason, how long),
//! one that closes an `INFO` event; neither carries headers or userinfo.

mod error;
mod future;
mod layer;
mod policy;
mod service;
mod state;

pub use error::{CircuitOpen, OpenedBy};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use policy::{
    CircuitPolicy, DEFAULT_MAX_AUTHORITIES, DEFAULT_MAX_SERVER_WAIT, DEFAULT_OPEN_FOR,
    InvalidCircuitPolicy, Outcome, Verdict, default_classifier,
};
pub use service::CircuitBreaker;
