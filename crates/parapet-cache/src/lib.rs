//! A private HTTP cache (RFC 9111) for outbound calls, as a tower layer.
//!
//! [`CacheLayer`] answers a GET or HEAD from its [`Store`] while the stored
//! response is fresh, revalidates it with a conditional request when it is
//! stale, and stores what the server lets it store. Every response says what
//! happened in its extensions: [`CacheStatus::Hit`], `Revalidated`, `Miss`
//! or `Bypass`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use http_body_util::BodyExt;
//! use parapet_cache::{CacheLayer, CacheStatus, MemoryStore};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let sent = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&sent);
//! let mut svc = ServiceBuilder::new()
//!     .layer(CacheLayer::new(MemoryStore::new(16 << 20)))
//!     .service_fn(move |req: http::Request<()>| {
//!         counter.fetch_add(1, Ordering::SeqCst);
//!         let revalidating = req.headers().contains_key("if-none-match");
//!         async move {
//!             let res = http::Response::builder()
//!                 .status(if revalidating { 304 } else { 200 })
//!                 .header("cache-control", "max-age=60")
//!                 .header("etag", "\"v1\"")
//!                 .body(String::from(if revalidating { "" } else { "the report" }))
//!                 .unwrap();
//!             Ok::<_, std::convert::Infallible>(res)
//!         }
//!     });
//! let mut seen = Vec::new();
//! for wait in [0, 30, 31] {
//!     tokio::time::advance(Duration::from_secs(wait)).await; // stale after 60 s
//!     let req = http::Request::get("http://api.example.com/report").body(()).unwrap();
//!     let res = svc.ready().await.unwrap().call(req).await.unwrap();
//!     let status = CacheStatus::of(&res).unwrap();
//!     seen.push((status, res.into_body().collect().await.unwrap().to_bytes()));
//! }
//! assert_eq!(seen, [
//!     (CacheStatus::Miss, "the report".into()),
//!     (CacheStatus::Hit, "the report".into()),
//!     (CacheStatus::Revalidated, "the report".into()), // a 304: the stored body
//! ]);
//! assert_eq!(sent.load(Ordering::SeqCst), 2); // the hit sent nothing
//! # }
//! ```
//!
//! # The rules
//!
//! The RFC 9111 rules come from the `http-cache-semantics` crate (3.x, on
//! `http` 1.x types), evaluated as a **private** cache (`shared: false`):
//!
//! - freshness from `Cache-Control: max-age` or `Expires` (and the `Date`
//!   and `Age` the server sent); `no-store` is never stored; `no-cache`
//!   (in the response or the request) is always revalidated; a request's
//!   `max-age`, `min-fresh` and `max-stale` are obeyed;
//! - `private` responses are stored, and so are responses to requests with
//!   `Authorization`; `s-maxage` is ignored (it is for shared caches);
//! - a stale response with an `ETag` or a `Last-Modified` is revalidated
//!   with `If-None-Match` / `If-Modified-Since`; a `304` refreshes the stored
//!   headers and returns the stored body with the stored status (200);
//! - `Vary`: a stored response is reused only for a request whose named
//!   headers match; `Vary: *` never matches; each combination is stored as
//!   its own variant;
//! - heuristic freshness is off by default
//!   ([`CacheLayer::heuristic_freshness`]): a response without an explicit
//!   lifetime is stored only to be revalidated.
//!
//! This crate adds:
//!
//! - only GET and HEAD are looked up and stored. A request that is itself
//!   conditional or asks for a `Range` passes through untouched
//!   ([`CacheStatus::Bypass`]), so `304` and `206` answers reach the caller
//!   that asked for them;
//! - an unsafe method (POST, PUT, PATCH, DELETE) answered below 400 removes
//!   what is stored for its URI (RFC 9111 §4.4; `Location` and
//!   `Content-Location` are not invalidated);
//! - credentials: a stored response is reused only for a request with the
//!   same `Authorization` and `Cookie` (compared through a keyed hash), so
//!   one client sending per-request credentials for several users never
//!   hands one user's response to another;
//! - an `Age` above 2^31 seconds counts as 2^31 (RFC 9111 §1.2.2), so no
//!   header makes the arithmetic overflow.
//!
//! # Bodies
//!
//! A response that may be stored streams to the caller as it arrives and is
//! copied on the way, up to [`CacheLayer::max_body_size`] (1 MiB by
//! default); it is stored when its body ends. A larger one (by
//! `Content-Length`, or once it passes the limit) streams on uncached; a
//! body that fails or is dropped before its end is not stored. Hits and
//! revalidations answer with the stored bytes ([`CacheBody`]).
//!
//! # The store
//!
//! [`Store`] is a synchronous trait, so a hit costs no boxed future and no
//! await (its docs say why). [`MemoryStore`] is bounded in bytes and evicts
//! the least recently used responses; the total never exceeds its bound.
//!
//! # Time
//!
//! The rules need wall-clock times (the server's `Date`, `Expires`). By
//! default the layer takes the wall-clock time once, when it wraps a
//! service, and advances it by `tokio::time`, so tests on paused time move
//! it; [`CacheLayer::clock`] sets another clock (tests against real
//! sockets use one they advance by hand).
//!
//! # Where the layer goes
//!
//! ```text
//! request id, call span
//! CacheLayer          a hit costs no attempt, no limiter token, no token fetch
//! deadline
//! retry, redirects, auth, throttle, rate limit, concurrency limit, attempt timeout
//! decompression
//! hyper-util client
//! ```
//!
//! Outermost after the request id and the call span, so a hit is still
//! traced with its id, but spends nothing below: no deadline, no attempt,
//! no rate-limit token, no concurrency slot, no credentials. A miss or a
//! revalidation is an ordinary call through everything below: retried,
//! limited and timed like any other. Above the retry layer it sees only the
//! final answer of a call, never a failed attempt. Above decompression it
//! stores decoded bodies. Above auth it sees the request before credentials
//! are added, so a stored response is shared by every call of a client that
//! authenticates through its auth layer (one user); credentials set on the
//! request itself separate entries (see above).
//!
//! # Cost
//!
//! `cargo run --release -p parapet-cache --example cost` measures a miss
//! through the layer against the same inner service without it (an inner
//! service that answers from memory, a 20-byte JSON body; one run on a
//! shared 2-core machine, so read the ratios, not the digits):
//!
//! | path | per call |
//! |---|---|
//! | no cache layer | 0.9 µs |
//! | miss, not storable (`no-store`) | 1.7 µs |
//! | miss, stored (a new URL each time, 100 000 entries) | 5.2 µs |
//! | hit | 2.7 µs |
//!
//! A miss pays for the request's head cloned for the policy, the RFC 9111
//! evaluation and, when storable, the copy of the body and the store's
//! insert; a hit for the lookup and the stored headers copied with a new
//! `Age` and `Date`. Against a call over the network (tens of µs on
//! loopback, milliseconds to a real API) a miss adds little; a hit saves
//! the whole call.

mod body;
mod future_impl;
mod layer;
mod service;
mod status;
mod store;

pub use body::CacheBody;
pub use layer::{CacheLayer, DEFAULT_MAX_BODY_SIZE};
pub use service::Cache;
pub use status::CacheStatus;
pub use store::{CacheKey, CachedResponse, MemoryStore, Store};

/// The response future of [`Cache`].
pub mod future {
    pub use crate::future_impl::ResponseFuture;
}
