//! One rate limit and one throttle gate for a whole fleet: parapet's
//! limiting layers with their state in Redis.
//!
//! When a service runs as 20 replicas, each replica's in-process
//! [`RateLimitLayer`](parapet_ratelimit::RateLimitLayer) lets the quota
//! through 20 times over, and a 429 teaches only the replica that got it.
//! The layers here keep that state in Redis, so that every process using
//! the same Redis (and key prefix) shares it:
//!
//! - [`RedisRateLimitLayer`]: a [`Quota`](parapet_ratelimit::Quota) per key
//!   (per authority, or one named bucket) for the whole fleet: a GCRA
//!   decided by one atomic Lua script per call, on Redis's clock.
//! - [`RedisThrottleLayer`]: a server's "not before T" (429/503
//!   `Retry-After`, exhausted `X-RateLimit-*` or `RateLimit`) seen by one
//!   process holds every process's calls to that authority.
//! - [`RedisTokenProvider`]: one token request for the whole fleet (a
//!   lease-based single flight) behind each process's
//!   [`TokenCache`](parapet_auth::TokenCache); a 401 replaces exactly the
//!   refused generation, for everyone.
//!
//! Both fail calls with the local layers' own errors
//! ([`RateLimited`](parapet_ratelimit::RateLimited),
//! [`Throttled`](parapet_ratelimit::Throttled)), so code that downcasts them
//! needs no change.
//!
//! # When Redis is unreachable or slow
//!
//! Every Redis call is bounded by the [`RedisStore`]'s call timeout (50 ms
//! by default): no call waits on Redis longer than that. A call that fails
//! marks Redis unreachable (one `warn` event, target `parapet_redis`); then
//! each layer takes its declared [`Fallback`] at once, without trying Redis,
//! except one call per probe interval that tries it again; when that
//! succeeds, shared limiting resumes (one `info` event).
//! [`RedisStore::is_available`] and [`RedisStore::outages`], and each
//! layer's `fallback_decisions()`, say what happened.
//!
//! | layer | default fallback | the other one |
//! |---|---|---|
//! | rate limit | closed: [`RedisUnavailable`], nothing sent | [`fail_open(replicas)`](RedisRateLimitLayer::fail_open): a local limiter at quota ÷ replicas |
//! | throttle | open: the local gate only | [`fail_closed()`](RedisThrottleLayer::fail_closed): [`RedisUnavailable`] |
//! | token provider | open: each process fetches for itself | none |
//!
//! # Where these layers go
//!
//! Where their local counterparts go (see `parapet_ratelimit`): inside
//! retry and auth, throttle outside the rate limit, both outside the
//! concurrency limit. The facade's `ClientBuilder` takes only the local
//! layers, so a stack with these is built by hand with
//! `tower::ServiceBuilder`:
//!
//! ```
//! use std::num::NonZeroU32;
//! use parapet_core::BoxError;
//! use parapet_ratelimit::Quota;
//! use parapet_redis::{RedisRateLimitLayer, RedisStore, RedisThrottleLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let server = parapet_redis::test_support::RedisServer::start().await.unwrap();
//! # let url = server.url();
//! let store = RedisStore::open(url.as_str()).unwrap();
//! let quota = Quota::per_second(NonZeroU32::new(200).unwrap());
//! let client = ServiceBuilder::new()
//!     .layer(RedisThrottleLayer::new(store.clone()))
//!     .layer(RedisRateLimitLayer::per_authority(store, quota).fail_open(NonZeroU32::new(4).unwrap()))
//!     // Stands in for the hyper-util client.
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, BoxError>(http::Response::new(()))
//!     });
//!
//! let req = http::Request::get("https://api.example.com/v1/items").body(()).unwrap();
//! assert_eq!(client.oneshot(req).await.unwrap().status(), 200);
//! # }
//! ```
//!
//! # Pointing at a real Redis
//!
//! [`RedisStore::open`] takes a URL: `redis://host:6379/0`,
//! `redis://:password@host/` or `redis://user:password@host/` (ACL),
//! `rediss://host/` for TLS (enable one of the `redis` crate's TLS features,
//! `tls-rustls` with `tls-rustls-webpki-roots`, in your own `Cargo.toml`),
//! `redis+unix:///run/redis.sock`. For settings a URL cannot say, build a
//! `redis::Client` and use [`RedisStore::from_client`]. Processes that share
//! a limit must use the same Redis, key prefix and key names.
//!
//! # Tests
//!
//! With the `test-support` feature, [`test_support::RedisServer`] starts a
//! throwaway `redis-server` on a free loopback port and stops it when
//! dropped.

mod authority;
mod error;
mod ratelimit;
mod store;
mod throttle;
mod token;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use error::RedisUnavailable;
pub use ratelimit::{Fallback, RedisFuture, RedisRateLimit, RedisRateLimitLayer};
pub use store::{DEFAULT_CALL_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_PROBE_EVERY, RedisStore};
pub use throttle::{RedisThrottle, RedisThrottleLayer};
pub use token::{DEFAULT_LEASE, DEFAULT_POLL_EVERY, RedisTokenProvider};
