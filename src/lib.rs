//! parapet: resilient outbound HTTP API clients from independent `tower`
//! layers.
//!
//! [`ClientBuilder`] assembles the recommended stack over hyper-util and
//! rustls with safe defaults; [`Client`] gives the convenient API (`get`,
//! `post`, `json`, ...) and is a `tower::Service` for your own layers;
//! [`Error`] is one opaque error with predicates.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
//! use parapet_testkit::{Reply, Server};
//!
//! // A loopback API that fails twice before it answers.
//! let api = Server::start().await;
//! api.on("/v1/orders").replies([Reply::status(503), Reply::status(503), Reply::json("[1, 2]")]);
//!
//! let client = parapet::Client::builder().base_url(api.url("/v1")).build().unwrap();
//! let orders: Vec<u32> = client.get("orders").send().await?.error_for_status().await?.json().await?;
//! assert_eq!(orders, [1, 2]);
//!
//! // Three attempts arrived, all with the same request id.
//! let arrivals = api.arrivals_for("/v1/orders");
//! assert_eq!(arrivals.len(), 3);
//! assert!(arrivals.iter().all(|a| a.header("x-request-id") == arrivals[0].header("x-request-id")));
//! # Ok(()) }
//! ```
//!
//! # The stack
//!
//! Outermost first: request id and call span → deadline (30 s) → retry (3
//! attempts, idempotent requests only, `Retry-After` obeyed) → redirects
//! (up to 10, [`RedirectPolicy`]) and attempt spans → auth (none unless
//! set; skipped on a redirect to another origin) → throttle (server-told
//! limits, per host) → rate limit (off unless set) → concurrency limit (off
//! unless set) → attempt timeout (10 s, shortened to the deadline) →
//! decompression (gzip by default, [`ClientBuilder::decompress`]) →
//! hyper-util with rustls (connect timeout 5 s, pool idle 30 s). Each layer
//! crate's docs say why it sits where it does; the layer crates are the
//! modules below, for configuring the builder and for hand-built stacks.
//!
//! # The layer crates
//!
//! | module | crate | what is there |
//! |---|---|---|
//! | [`auth`] | parapet-auth | [`AuthLayer`](auth::AuthLayer) (bearer, basic, API keys, tokens), [`TokenCache`](auth::TokenCache), [`ClientCredentialsGrant`](auth::ClientCredentialsGrant), [`RefreshTokenGrant`](auth::RefreshTokenGrant), [`TokenEndpoint`](auth::TokenEndpoint), [`SecretString`](auth::SecretString) |
//! | [`ratelimit`] | parapet-ratelimit | [`Quota`](ratelimit::Quota), [`RateLimitLayer`](ratelimit::RateLimitLayer), [`ThrottleLayer`](ratelimit::ThrottleLayer), [`ConcurrencyLimitLayer`](ratelimit::ConcurrencyLimitLayer) |
//! | [`retry`] | parapet-retry | [`RetryLayer`](retry::RetryLayer), [`RetryPolicy`](retry::RetryPolicy), [`RetryBudget`](retry::RetryBudget); the facade's [`default_retry_policy`] and [`retry_classifier`] |
//! | [`timeout`] | parapet-timeout | [`DeadlineLayer`](timeout::DeadlineLayer), [`AttemptTimeoutLayer`](timeout::AttemptTimeoutLayer) |
//! | [`trace`] | parapet-trace | [`RequestIdLayer`](trace::RequestIdLayer), [`TraceLayer`](trace::TraceLayer), [`AttemptTraceLayer`](trace::AttemptTraceLayer), redaction |
//! | [`core`] | parapet-core | [`ReplayBody`](core::ReplayBody) (the body every layer and the innermost service take), [`Deadline`](core::Deadline), [`IdempotencyRules`](core::IdempotencyRules), `Retry-After` and server rate-limit parsing |
//!
//! The common cases need none of them by name:
//! [`ClientBuilder::oauth2_client_credentials`] sets up a token cache for
//! a service's own `OAuth2` token, and [`ClientBuilder::build`] reports every
//! mistake as one [`InvalidConfig`].
//!
//! ```
//! use parapet::ratelimit::{Quota, RateLimitLayer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = parapet::Client::builder()
//!     .base_url("https://api.example.com/v1")
//!     .oauth2_client_credentials("https://auth.example.com/oauth/token", "my-service", "s3cret")
//!     .rate_limit(RateLimitLayer::per_authority(Quota::rate(0.5)?))
//!     .build()?;
//! # drop(client);
//! # Ok(()) }
//! ```
//!
//! Testing a service built on parapet (wiremock, in-process upstreams with
//! [`ClientBuilder::build_with`], the testkit's fault server, and why paused
//! time and real sockets do not mix) is the subject of `TESTING.md` at the
//! repository's root.
//!
//! # Choices made here
//!
//! - Only an attempt timeout the caller sets can contradict the deadline
//!   (and fails [`ClientBuilder::build`]); the default one is shortened to
//!   the deadline.
//! - A request built with [`RequestBuilder::idempotency_key`] is marked
//!   idempotent: asking for a key says the API dedupes on it.
//! - [`Response::error_for_status`] turns 4xx and 5xx into an [`Error`];
//!   `send` itself succeeds whenever a response arrived, as in reqwest.
//! - Local limiter errors (rate limit, throttle, concurrency limit) and
//!   deadline-caused timeouts are never retried ([`retry_classifier`]):
//!   they already waited all they were allowed to.

mod attempts;
mod body;
mod builder;
mod classify;
mod client;
#[path = "metrics.rs"]
mod client_metrics;
mod decompress;
pub mod download;
mod error;
mod http_cache;
pub mod multipart;
mod oauth;
mod optional;
mod overrides;
pub mod paginate;
mod proxy;
mod redirect;
mod response;
mod stack;
mod transport;
pub mod upload;

pub use body::{Body, BytesStream, NdjsonStream};
pub use builder::{ClientBuilder, DEFAULT_USER_AGENT};
pub use client::{Client, IntoUrl, RequestBuilder, ResponseFuture, UnsupportedScheme};
pub use error::{Error, InvalidConfig, WaitSource};
pub use oauth::ClientCredentials;
pub use overrides::BodyLimit;
pub use proxy::{Proxy, ProxyError};
pub use redirect::{
    InsecureRedirect, NotFollowedReason, RedirectLoop, RedirectNotFollowed, RedirectPolicy,
    TooManyRedirects,
};
pub use response::{DEFAULT_BODY_LIMIT, JsonError, Response};
pub use transport::{Certificate, Identity};

pub use stack::{DEFAULT_MAX_SERVER_WAIT, default_retry_policy, retry_classifier};

#[doc(inline)]
pub use parapet_auth as auth;
#[cfg(feature = "cache")]
#[doc(inline)]
pub use parapet_cache as cache;
#[doc(inline)]
pub use parapet_circuit as circuit;
#[doc(inline)]
pub use parapet_core as core;
#[cfg(feature = "metrics")]
#[doc(inline)]
pub use parapet_metrics as metrics;
#[doc(inline)]
pub use parapet_ratelimit as ratelimit;
#[doc(inline)]
pub use parapet_retry as retry;
#[doc(inline)]
pub use parapet_timeout as timeout;
#[doc(inline)]
pub use parapet_trace as trace;
