//! Stay under the limits of the APIs you call: a client-side token bucket,
//! a gate that obeys what servers say, and a cap on calls in flight.
//!
//! Four independent `tower` layers over `http::Request` / `http::Response`:
//!
//! - [`RateLimitLayer`]: a client-side [`Quota`] ("n per period" plus a
//!   burst; a GCRA on tokio's clock that keeps the rate even though tokio's
//!   timer wakes waiters up to a millisecond late), one bucket for every call
//!   or one per authority (scheme, host, port), idle keys evicted.
//! - [`ThrottleLayer`]: reads each response's rate-limit signals (`429`/`503`
//!   with `Retry-After`, exhausted `X-RateLimit-*`, the IETF `RateLimit`
//!   field, GitHub's `403`) and closes that authority's gate until the time
//!   given, for every task sharing the client; spreads the last few requests
//!   of a server's window over it.
//! - [`ConcurrencyLimitLayer`]: at most N calls in flight, overall or per
//!   authority, each holding its slot until its response body has ended.
//! - [`AdaptiveRateLayer`]: for servers that publish no quota, a rate per
//!   authority learned from their throttling answers (429, 503 with
//!   `Retry-After`): a CUBIC-style controller as in the AWS SDKs' adaptive
//!   mode. Below the throttle and above a fixed rate limit; see its docs.
//!
//! All of them share their state behind an `Arc` among every service the
//! layer makes and all their clones. `poll_ready` only forwards to the inner
//! service; every wait happens inside the response future, so an idle clone
//! holds nothing, and dropping a future gives back whatever it held.
//!
//! # Waiting or rejecting
//!
//! By default a call that must wait does so, within the layer's `max_wait`
//! (unset by default) and the call's [`Deadline`](parapet_core::Deadline)
//! (read with [`Deadline::current`](parapet_core::Deadline::current): the
//! deadline layer's, in scope while it calls and polls the layers beneath,
//! or one set by hand in the request's extensions). When
//! the wait would end past either, the call fails at once, without waiting
//! first, with the layer's own error: [`RateLimited`] (with the earliest
//! moment it could have gone), [`Throttled`] (with the time left before the
//! gate opens) or [`ConcurrencyLimited`]. Waiters for one rate-limit
//! bucket go first come, first served. With `.reject()` a layer fails
//! every call that would have to wait, for load shedding. The services
//! return [`BoxError`](parapet_core::BoxError); downcast it to tell these
//! apart.
//!
//! # Where these layers go
//!
//! The recommended stack (the one `parapet::Client` assembles), outermost
//! first:
//!
//! ```text
//! request id → call span → deadline → retry → redirect → attempt span
//!     → auth → THROTTLE → RATE LIMIT → CONCURRENCY LIMIT
//!     → attempt timeout → decompression → transport
//! ```
//!
//! - **Inside retry**, all three: every attempt waits at the gate, spends a
//!   token and takes a slot, because every attempt is a request the server
//!   counts. A retry that waits out a `Retry-After` finds the gate open; one
//!   that did not honour it waits at the gate. Each redirect hop is such an
//!   attempt too.
//! - **Throttle outside the rate limit**: a call held at a closed gate has
//!   spent no token, so the bucket is full when the server lets us back in,
//!   and the gate sees the response of every attempt.
//! - **Throttle and rate limit inside auth**: every request that leaves,
//!   auth's re-send after a 401 included, passes the gate and counts
//!   against the quota. (With auth below them, that re-send went out
//!   within a millisecond of the refused request whatever the quota.) The
//!   price: a call that will wait at a limiter fetches its credential
//!   first, and waits with it on; the token fetch itself goes to the token
//!   endpoint through its own client and is not rate limited as an API
//!   call.
//! - **Concurrency limit inside auth**: a slow token fetch does not sit on
//!   a slot that another call could use; the re-send after a 401 takes a
//!   slot of its own.
//! - **Concurrency limit outside the attempt timeout**: the wait for a slot
//!   is not counted against the attempt (only the deadline bounds it), and
//!   an attempt that times out is dropped, which frees its slot.
//!
//! [`ConcurrencyLimit`] wraps the response body ([`ConcurrencyLimitBody`])
//! so that the slot is held until the body ends; layers outside it see that
//! body type.
//!
//! ```
//! use std::num::{NonZeroU32, NonZeroUsize};
//! use std::time::Duration;
//! use http_body_util::{BodyExt, Full};
//! use parapet_core::BoxError;
//! use parapet_ratelimit::{ConcurrencyLimitLayer, Quota, RateLimitLayer, ThrottleLayer};
//! use tokio::time::Instant;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let quota = Quota::per_second(NonZeroU32::new(50).unwrap()).burst(NonZeroU32::new(5).unwrap());
//! let client = ServiceBuilder::new()
//!     .layer(ThrottleLayer::new().max_wait(Duration::from_secs(30)))
//!     .layer(RateLimitLayer::per_authority(quota))
//!     .layer(ConcurrencyLimitLayer::per_authority(NonZeroUsize::new(8).unwrap()))
//!     // Stands in for the hyper-util client.
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, BoxError>(http::Response::new(Full::new(bytes::Bytes::from("{}"))))
//!     });
//!
//! let start = Instant::now();
//! for _ in 0..10 {
//!     let req = http::Request::get("https://api.example.com/v1/items").body(()).unwrap();
//!     let res = client.clone().oneshot(req).await.unwrap();
//!     res.into_body().collect().await.unwrap();
//! }
//! // A burst of 5, then one every 20 ms.
//! assert_eq!(start.elapsed(), Duration::from_millis(100));
//! # }
//! ```
//!
//! # Time and cost
//!
//! Everything runs on `tokio::time`, so tests with paused time control the
//! buckets, gates and waits. On the common path (nothing to wait for) a call
//! through the shared rate limiter costs a clock read (none beneath a
//! deadline layer, which holds its reading for the layers it calls: see
//! [`parapet_core::clock`]), an atomic load (does anyone wait?) and one
//! atomic compare-and-swap, and no allocation; the per-authority variants add a
//! hash-map lookup under a mutex, keyed by the request's own authority bytes
//! (one short scan, no copy, no allocation except for an authority seen for
//! the first time; parapet-core's `HostHasher`, `FxHash`, instead of `SipHash`, as
//! the keys are the hosts this client itself calls). The throttle keeps a
//! reference-counted handle on the request's authority, reads neither the
//! clock nor its map while no gate is closed, and reads the system clock
//! only for a response that carries a rate-limit signal (found in one pass
//! over the header names).
//!
//! Per-authority state is swept by a small background task that runs only
//! while there is state to sweep and stops by itself.
//!
//! # Metrics
//!
//! With the cargo feature `metrics` (off by default) the layers report
//! what they did through the [`metrics`](https://docs.rs/metrics/0.24)
//! facade, to whatever recorder the application installed (none: nothing
//! is kept). They record on the event only, a wait, a gate closing, a
//! refusal, so a call that meets no limit records nothing and costs
//! nothing more; with the feature off none of it is compiled in. The names
//! are constants in [`metric_names`], there with the feature off too.
//!
//! | name | kind | unit | labels | moves when |
//! | --- | --- | --- | --- | --- |
//! | `parapet.client.throttle.closures` | counter | `{closure}` | `server.address`, `server.port`, `source` | a response closed its authority's gate: `Retry-After` on a 403, 429 or 503 (`source` = `retry_after`), or `X-RateLimit-*` / `RateLimit` saying nothing remains (`rate_limit`) |
//! | `parapet.client.throttle.held` | histogram | `s` | as closures | with each closure: how long the response closed the gate for, after the [`max_server_wait`](ThrottleLayer::max_server_wait) cap |
//! | `parapet.client.throttle.wait` | histogram | `s` | `server.address`, `server.port` | a request held at the gate (closed, or pacing the last requests of a window) goes on: how long it waited, release jitter included; waits above zero only |
//! | `parapet.client.throttle.rejections` | counter | `{request}` | `server.address`, `server.port` | the throttle fails a request with [`Throttled`]: reject mode, or the gate opening past `max_wait` or the deadline (when it arrives, or on a gate closed again while it waited) |
//! | `parapet.client.rate_limit.wait` | histogram | `s` | `server.address`, `server.port` | a request that queued for the client-side rate limit takes its token: how long it waited; waits above zero only |
//! | `parapet.client.rate_limit.rejections` | counter | `{request}` | `server.address`, `server.port` | the rate limiter fails a request with [`RateLimited`]: reject mode, or a turn past `max_wait` or the deadline |
//! | `parapet.client.concurrency.queue` | histogram | `s` | `server.address`, `server.port` | a request that found every slot taken gets one: how long it queued |
//! | `parapet.client.concurrency.rejections` | counter | `{request}` | `server.address`, `server.port` | the concurrency limiter fails a request with [`ConcurrencyLimited`]: reject mode, or no slot within `max_wait` or the deadline |
//!
//! Durations are in seconds, as `f64`, measured on tokio's clock (so
//! paused-time tests see exact values). `server.address` is the request's
//! host (from its URI, or its `Host` header when the URI is relative),
//! never a path, a query or userinfo; `server.port` is the URI's port, else
//! the scheme's default (443, 80), and is left out when neither is known.
//! Labels are the request's, whether the limiter keeps one state for every
//! call or one per authority; a closure carries those of the request whose
//! response closed the gate.

mod adaptive;
mod authority;
mod concurrency;
mod error;
mod gcra;
pub mod metric_names;
#[cfg(feature = "metrics")]
mod metrics;
mod queue;
mod quota;
mod ratelimit;
mod shared;
mod throttle;
mod wait;

pub use adaptive::{AdaptiveRate, AdaptiveRateFuture, AdaptiveRateLayer};
pub use concurrency::{
    ConcurrencyLimit, ConcurrencyLimitBody, ConcurrencyLimitFuture, ConcurrencyLimitLayer,
};
pub use error::{ConcurrencyLimited, RateLimited, Throttled};
pub use quota::{InvalidQuota, Quota};
pub use ratelimit::{RateLimit, RateLimitFuture, RateLimitLayer};
pub use throttle::{DEFAULT_MAX_SERVER_WAIT, Throttle, ThrottleFuture, ThrottleLayer};

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;
    use http_body_util::Empty;
    use parapet_core::BoxError;
    use tower_layer::Layer;
    use tower_service::Service;

    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    fn send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn services_are_send_sync_clone_and_futures_are_send() {
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::new(Empty::<bytes::Bytes>::new()))
        });
        let mut rate = RateLimitLayer::new(Quota::per_second(NonZeroU32::MIN)).layer(inner);
        let mut throttle = ThrottleLayer::new().layer(inner);
        let mut conc = ConcurrencyLimitLayer::new(NonZeroUsize::MIN).layer(inner);
        send_sync(&rate);
        send_sync(&throttle);
        send_sync(&conc);
        send(&rate.call(http::Request::new(())));
        send(&throttle.call(http::Request::new(())));
        send(&conc.call(http::Request::new(())));
        send_sync(&RateLimitLayer::per_authority(Quota::per_hour(
            NonZeroU32::MIN,
        )));
        send_sync(&ThrottleLayer::default());
        send_sync(&ConcurrencyLimitLayer::per_authority(NonZeroUsize::MIN));
    }
}
