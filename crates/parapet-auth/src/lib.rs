//! Credentials on every attempt: static bearer, basic and API keys, and
//! refreshing tokens fetched once for everyone, with one re-send after a 401.
//!
//! [`AuthLayer`] puts credentials on each request that passes through it:
//!
//! - static ones: [`AuthLayer::bearer`], [`AuthLayer::basic`],
//!   [`AuthLayer::api_key_header`], [`AuthLayer::api_key_query`] (the less
//!   safe choice: URIs reach logs);
//! - tokens from a [`ProvideToken`] ([`AuthLayer::provider`]), kept by a
//!   [`TokenCache`] ([`AuthLayer::token_cache`]) that fetches once for any
//!   number of concurrent callers, refreshes ahead of expiry in the
//!   background, retries a failing token endpoint with backoff while a valid
//!   token stays in use, and bounds each fetch with a timeout;
//! - OAuth 2.0 providers: [`ClientCredentialsGrant`] and
//!   [`RefreshTokenGrant`] (which keeps the newest refresh token when the
//!   server rotates it, and never sends a refresh token again once a
//!   request spending it may have arrived unanswered: see
//!   [its docs](RefreshTokenGrant#a-refresh-token-is-never-sent-twice-by-chance)),
//!   reaching the token endpoint through any
//!   `tower::Service` you give a [`TokenEndpoint`], normally the same hyper
//!   client without this layer.
//!
//! With a token cache, a 401 ([`On401`]) invalidates exactly the token the
//! request carried (never a newer one another task fetched meanwhile), gets
//! a fresh one and sends the request once more, its body replayed through
//! [`parapet_core::ReplayBody`]. Never more than once: a second 401 is
//! returned, and so is a 401 whose body cannot be replayed (over the replay
//! cap). A token that was itself fetched after a 401 and is refused too
//! within its [re-auth cool-down](TokenCacheBuilder::reauth_cooldown) (5 s,
//! jittered) is not replaced at once: the 401 is returned with no fetch and
//! no re-send, so an API that refuses every token costs one token fetch per
//! cool-down, not one per call. A 403 (`insufficient_scope`) never
//! refreshes: a new token would carry the same scope.
//!
//! Secrets never print: every injected header value is marked sensitive,
//! and every type holding a secret ([`SecretString`], [`Token`],
//! [`CachedToken`], the layer, the grants) redacts it in `Debug`. Errors
//! and tracing events name what went wrong, never a credential.
//!
//! # Where the layer goes
//!
//! ```text
//! RequestId/trace → Deadline → Retry → Auth → Throttle → RateLimit → ConcurrencyLimit → AttemptTimeout → client
//! ```
//!
//! - **Inside retry**, so that each attempt gets the credentials current at
//!   the time it is sent: an attempt after a token refresh carries the new
//!   token, not the one the first attempt had. The retry layer arms the
//!   replayable body; this layer reuses it (one recording per call).
//! - **Above the throttle and the rate limit** (... retry → auth → throttle
//!   → rate limit → concurrency limit → attempt timeout ...): auth sits
//!   above the limiters so that its re-send after a 401 is counted and
//!   gated like every request that leaves. A request then waits at the
//!   limiters with its token already on. The cache replaces tokens ahead of
//!   their expiry (by the [refresh margin](TokenCacheBuilder::refresh_margin),
//!   30 s by default), so a token rarely expires during such a wait; one
//!   that does is refused with a 401 and replaced for the one re-send.
//! - **Outside the concurrency limit**, so that a token fetch (which may take
//!   a while, or wait for another task's fetch) happens before a connection
//!   slot is taken: callers waiting for a token never starve others of
//!   slots. The re-send after a 401 takes its own slot.
//! - **Inside tracing**, so that spans never see the credentials (and an API
//!   key in the query string is added after the URI was recorded).
//!
//! The token endpoint's own service must not go through this layer.
//!
//! # Cost per call
//!
//! - **Static credentials** (bearer, basic, API key): the header is inserted
//!   (or the query pair appended, which builds a new URI) and the request
//!   goes straight to the inner service. Nothing is kept for a re-send (a
//!   static credential has nothing to refresh, so a 401 is returned as it
//!   is): no copy of the request and no clone of the inner service; a
//!   header credential allocates nothing (an API key in the query builds a
//!   new URI, which does). The response future is the inner one plus a
//!   discriminant and a pointer (16 bytes on 64-bit targets). As with every
//!   credential, a body not yet replayable and not at its end is wrapped in
//!   a [`parapet_core::ReplayBody`], which allocates its shared state.
//! - **A cached token** with [`On401::Return`]: the same.
//! - **A cached token** with [`On401::Refresh`] (the default) or
//!   [`On401::RefreshIfInvalidToken`], and a body that can be replayed: to be
//!   able to send the request again after a 401, a copy of its head
//!   (method, URI, headers, extensions; the header map's copy allocates) and
//!   a clone of the inner service are kept in one `Box` for the duration of
//!   the call. The future stays the inner one plus 16 bytes.
//! - **No token cached yet** (or one being fetched): the request and the
//!   ready inner service wait in that same `Box`, beside the boxed wait for
//!   the token; a clone of the inner service takes the ready one's place.
//!
//! # Metrics
//!
//! With the cargo feature `metrics`, the token cache and the layer record
//! through the [`metrics`](https://docs.rs/metrics/0.24) facade (the
//! application installs the recorder; with none installed, every record is
//! discarded):
//!
//! | name | kind | unit | labels | moves when |
//! | --- | --- | --- | --- | --- |
//! | [`parapet.client.token.fetches`](metric_names::TOKEN_FETCHES) | counter | `{fetch}` | `kind`, `outcome` | a [`TokenCache`] fetch ended |
//! | [`parapet.client.token.fetch.duration`](metric_names::TOKEN_FETCH_DURATION) | histogram | `s` | `outcome` | a [`TokenCache`] fetch ended: how long it took |
//! | [`parapet.client.reauths`](metric_names::REAUTHS) | counter | `{request}` | `server.address`, `server.port` | the layer re-sends a request after a 401, with a fresh token |
//! | [`parapet.client.reauths_refused`](metric_names::REAUTHS_REFUSED) | counter | `{response}` | `reason` | the layer returns a 401 it would have answered with a fresh token and a re-send, without one |
//!
//! - **A fetch** is one fetch of the cache, shared by every caller that
//!   waits for it: from its start to the token installed (or the error
//!   kept), its retries of a transient failure
//!   ([`fetch_attempts`](TokenCacheBuilder::fetch_attempts), with their
//!   backoff) and its [timeout](TokenCacheBuilder::fetch_timeout) included.
//!   So the counter counts what the cache decided, not the requests to the
//!   token endpoint (a fetch retried twice sent three). A caller served
//!   from the cache, or failed at once during a cool-down after a failed
//!   fetch, records nothing. A fetch whose task the runtime drops (at its
//!   shutdown) records nothing either.
//! - `kind` is what the cache knows when the fetch starts: `initial` (no
//!   token fetched yet, the first fetch and its retries after failures),
//!   `reauth` (the server refused the current token: a 401 to the layer,
//!   or [`TokenCache::invalidate`]), else `refresh` (the token is due for
//!   its refresh ahead of expiry, or expired).
//! - `outcome` is `ok` when the cache installed a token, `error` when the
//!   fetch failed: the provider's error (an endpoint refusing, answering
//!   junk, unreachable), a timeout, or a token the cache cannot use (empty,
//!   or not visible ASCII). There is no separate failure counter: failures
//!   are `parapet.client.token.fetches{outcome="error"}`.
//! - **A re-auth** is counted when the re-send leaves (after the fresh
//!   token came and the inner service was ready), by the request's
//!   `server.address` (its URI's host: never user information, a path or
//!   a query) and `server.port` (the URI's, else the scheme's default).
//! - **A refused re-auth** has a `reason`: `body_not_replayable` (the
//!   request body went past the replay cap), `reauth_cooldown` (the refused
//!   token was itself fetched after a 401 moments ago), `no_token` (the
//!   fetch for a fresh token failed, or a failed fetch's cool-down is on),
//!   `already_reauthed` (the re-sent request got a 401 too: there is one
//!   re-send at most). A 401 the layer is not set to answer records
//!   nothing: static credentials, [`On401::Return`], a challenge without
//!   `invalid_token` under [`On401::RefreshIfInvalidToken`], and a request
//!   whose body was known not to be replayable before it was sent (a
//!   [`ReplayBody`](parapet_core::ReplayBody) an outer layer found past its
//!   cap), for which no re-send was ever armed.
//!
//! Records happen on these events only: a request served with a cached
//! token costs nothing, and without the feature nothing of it is compiled
//! in. The names are in [`metric_names`] whether or not the feature is on.
//!
//! # Features
//!
//! - `metrics` (off by default): records the [metrics](#metrics) through
//!   the `metrics` crate (0.24).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode, header::AUTHORIZATION};
//! use parapet_auth::{AuthLayer, Token, TokenError, provider_fn};
//! use parapet_core::ReplayBody;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A token source: token-0, token-1, ...
//! let issued = Arc::new(AtomicUsize::new(0));
//! let n = issued.clone();
//! let provider = provider_fn(move || {
//!     let i = n.fetch_add(1, Ordering::SeqCst);
//!     async move { Ok::<_, TokenError>(Token::new(format!("token-{i}")).with_expires_in(Duration::from_secs(3600))) }
//! });
//! // An API that has revoked token-0.
//! let api = service_fn(|req: Request<ReplayBody>| async move {
//!     let status = if req.headers()[AUTHORIZATION] == "Bearer token-0" {
//!         StatusCode::UNAUTHORIZED
//!     } else {
//!         StatusCode::OK
//!     };
//!     Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(()).unwrap())
//! });
//! let svc = ServiceBuilder::new().layer(AuthLayer::provider(provider)).service(api);
//!
//! let resp = svc.oneshot(Request::new(String::from("{}"))).await.unwrap();
//! assert_eq!(resp.status(), StatusCode::OK); // 401, new token, sent again
//! assert_eq!(issued.load(Ordering::SeqCst), 2);
//! # }
//! ```

mod cache;
mod error;
mod form;
mod future;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod oauth2;
mod secret;
mod service;
mod token;

pub use cache::{
    CachedToken, DEFAULT_FETCH_TIMEOUT, DEFAULT_REAUTH_COOLDOWN, DEFAULT_REFRESH_MARGIN,
    TokenCache, TokenCacheBuilder,
};
pub use error::{InvalidCredential, TokenError};
pub use future::ResponseFuture;
pub use layer::{AuthLayer, On401};
pub use oauth2::{
    ClientAuth, ClientCredentialsGrant, DEFAULT_MAX_TOKEN_RESPONSE, RefreshTokenGrant,
    TokenEndpoint, parse_token_response,
};
pub use secret::SecretString;
pub use service::Auth;
pub use token::{FnProvider, ProvideToken, Token, TokenFuture, provider_fn};

/// The names of the metrics this crate records with the feature `metrics`
/// (see [the table](crate#metrics)).
pub mod metric_names {
    /// `parapet.client.token.fetches`: counter of the token cache's
    /// fetches, by `kind` (`initial`, `refresh`, `reauth`) and `outcome`
    /// (`ok`, `error`).
    pub const TOKEN_FETCHES: &str = "parapet.client.token.fetches";
    /// `parapet.client.token.fetch.duration`: histogram, seconds; how long
    /// each fetch took, retries included, by `outcome`.
    pub const TOKEN_FETCH_DURATION: &str = "parapet.client.token.fetch.duration";
    /// `parapet.client.reauths`: counter of the requests re-sent after a
    /// 401 with a fresh token, by `server.address` and `server.port`.
    pub const REAUTHS: &str = "parapet.client.reauths";
    /// `parapet.client.reauths_refused`: counter of the 401s returned
    /// without the re-send they would have had, by `reason`
    /// (`body_not_replayable`, `reauth_cooldown`, `no_token`,
    /// `already_reauthed`).
    pub const REAUTHS_REFUSED: &str = "parapet.client.reauths_refused";
}
