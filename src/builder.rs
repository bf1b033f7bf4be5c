//! [`ClientBuilder`]: the recommended stack with safe defaults.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, USER_AGENT};
use http::{HeaderMap, Uri};
use parapet_core::DEFAULT_REPLAY_CAP;

use crate::client::{Client, Shared};
use crate::error::InvalidConfig;
use crate::oauth::ClientCredentials;
use crate::stack::{LayerConfig, RetrySetting};
use crate::transport::{Certificate, Identity, TransportConfig};

/// The `User-Agent` sent unless another is set: `parapet/<version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("parapet/", env!("CARGO_PKG_VERSION"));

/// Builds a [`Client`]: the recommended stack of layers over hyper-util and
/// rustls, with safe defaults. Every setter says its default.
///
/// Settings are checked once, in [`build`](Self::build), which fails with a
/// typed [`InvalidConfig`] for an inconsistent configuration (an attempt
/// timeout longer than the deadline, zero attempts, a base URL that is not
/// absolute, ...).
///
/// ```
/// use std::time::Duration;
///
/// let client = parapet::Client::builder()
///     .base_url("https://api.example.com/v1")
///     .deadline(Duration::from_secs(10))
///     .attempt_timeout(Duration::from_secs(3))
///     .build()
///     .unwrap();
/// # drop(client);
///
/// // Inconsistent settings are refused, not silently fixed.
/// let err = parapet::Client::builder()
///     .deadline(Duration::from_secs(1))
///     .attempt_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap_err();
/// assert!(err.message().contains("attempt timeout"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct ClientBuilder {
    pub(crate) base_url: Option<String>,
    pub(crate) default_headers: HeaderMap,
    pub(crate) header_error: Option<String>,
    pub(crate) transport: TransportConfig,
    pub(crate) replay_cap: usize,
    pub(crate) layers: LayerConfig,
    pub(crate) oauth2: Option<ClientCredentials>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The base URL may carry `user:password@`: shown redacted, never as
        // given.
        let base = self.base_url.as_ref().map(|url| match url.parse::<Uri>() {
            Ok(uri) => parapet_trace::redact::redact_uri(&uri),
            Err(_) => "(not a valid URL)".to_owned(),
        });
        f.debug_struct("ClientBuilder")
            .field("base_url", &base)
            .field("default_headers", &self.default_headers)
            .field("transport", &self.transport)
            .field("replay_cap", &self.replay_cap)
            .field("layers", &self.layers)
            .field("oauth2", &self.oauth2)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// The defaults described on each setter.
    pub fn new() -> Self {
        let mut default_headers = HeaderMap::new();
        default_headers.insert(USER_AGENT, HeaderValue::from_static(DEFAULT_USER_AGENT));
        Self {
            base_url: None,
            default_headers,
            header_error: None,
            transport: TransportConfig::default(),
            replay_cap: DEFAULT_REPLAY_CAP,
            layers: LayerConfig::default(),
            oauth2: None,
        }
    }

    /// The URL that relative request paths are resolved against, like
    /// `https://api.example.com/v1`. Default: none (every request needs an
    /// absolute URL).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// A header added to every request that does not set it itself.
    /// Default: only `User-Agent: parapet/<version>`.
    pub fn default_header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(n), Ok(v)) => {
                self.default_headers.insert(n, v);
            }
            (Ok(n), Err(_)) => {
                self.header_error = Some(crate::error::invalid_default_header(Some(&n)));
            }
            _ => self.header_error = Some(crate::error::invalid_default_header(None)),
        }
        self
    }

    /// The `User-Agent`. Default: `parapet/<version>`.
    pub fn user_agent(self, value: impl TryInto<HeaderValue>) -> Self {
        self.default_header(USER_AGENT, value)
    }

    /// The bound on opening a TCP connection (and, for `https`, not the TLS
    /// handshake, which the attempt timeout covers). `None` disables it.
    /// Default: 5 s.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.transport.connect_timeout = timeout.into();
        self
    }

    /// The budget of a whole call: every attempt, every backoff and every
    /// wait at a limiter, and by default the reading of the response body
    /// too. `None` disables it. Default: 30 s.
    pub fn deadline(mut self, budget: impl Into<Option<Duration>>) -> Self {
        self.layers.deadline = budget.into();
        self
    }

    /// The bound on one attempt, from sending the request to the response
    /// headers; shortened to the time left before the deadline. `None`
    /// disables it. A value set here that is longer than the deadline fails
    /// [`build`](Self::build). Default: 10 s, or the deadline if that is
    /// shorter.
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.layers.attempt_timeout = timeout.into();
        self.layers.attempt_timeout_set = true;
        self
    }

    /// The longest pause between two frames of a response body before the
    /// body fails with a timeout: the guard for streaming downloads that
    /// opt out of the deadline. `None` disables it. Default: none (the
    /// deadline covers the body).
    pub fn body_idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.layers.body_idle_timeout = idle.into();
        self
    }

    /// Retries with this policy instead of the default one. Note that the
    /// default policy adds [`retry_classifier`](crate::retry_classifier),
    /// which knows the other layers' errors; add it to yours with
    /// `.classify(parapet::retry_classifier)`. Default: parapet-retry's
    /// defaults (3 attempts, backoff from 100 ms with full jitter, capped at
    /// 20 s, `Retry-After` obeyed up to 60 s, a 20 % retry budget) plus that
    /// classifier.
    pub fn retry(mut self, policy: parapet_retry::RetryPolicy) -> Self {
        self.layers.retry = RetrySetting::Custom(Box::new(policy));
        self
    }

    /// The number of attempts in all, with the default policy otherwise.
    /// Zero fails [`build`](Self::build). Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        let trust = match self.layers.retry {
            RetrySetting::Default {
                trust_idempotency_key,
                ..
            } => trust_idempotency_key,
            _ => false,
        };
        self.layers.retry = RetrySetting::Default {
            max_attempts: attempts,
            trust_idempotency_key: trust,
        };
        self
    }

    /// Counts any request carrying an `Idempotency-Key` header as safe to
    /// retry (the API dedupes on it), with the default policy otherwise.
    /// Requests built with
    /// [`RequestBuilder::idempotency_key`](crate::RequestBuilder::idempotency_key)
    /// are retryable either way. Default: off.
    pub fn trust_idempotency_key(mut self, trust: bool) -> Self {
        let attempts = match self.layers.retry {
            RetrySetting::Default { max_attempts, .. } => max_attempts,
            _ => 3,
        };
        self.layers.retry = RetrySetting::Default {
            max_attempts: attempts,
            trust_idempotency_key: trust,
        };
        self
    }

    /// No retries at all: every call makes one attempt. Default: retries on.
    pub fn retry_off(mut self) -> Self {
        self.layers.retry = RetrySetting::Off;
        self
    }

    /// The per-host gate that holds requests while a server has said "not
    /// before T" (429/503 `Retry-After`, exhausted `X-RateLimit-*`, IETF
    /// `RateLimit`), configured as given; `None` turns it off. Default: on,
    /// with `ThrottleLayer::new()`'s settings except that one server signal
    /// closes a gate for at most
    /// [`DEFAULT_MAX_SERVER_WAIT`](crate::DEFAULT_MAX_SERVER_WAIT) (5 min).
    pub fn throttle(
        mut self,
        throttle: impl Into<Option<parapet_ratelimit::ThrottleLayer>>,
    ) -> Self {
        self.layers.throttle = throttle.into();
        self
    }

    /// A client-side token bucket (overall or per host). Default: none.
    ///
    /// ```
    /// use parapet::ratelimit::{Quota, RateLimitLayer};
    ///
    /// // A plain number (0 is refused), or a fraction: Quota::rate(0.5).
    /// let quota = Quota::rate(50).expect("a rate above zero");
    /// let client = parapet::Client::builder()
    ///     .rate_limit(RateLimitLayer::per_authority(quota))
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn rate_limit(
        mut self,
        limit: impl Into<Option<parapet_ratelimit::RateLimitLayer>>,
    ) -> Self {
        self.layers.rate_limit = limit.into();
        self
    }

    /// A rate per host learned from the server's throttling answers (429,
    /// 503 with `Retry-After`), for APIs that do not publish their quota:
    /// a CUBIC-style rate as in the AWS SDKs' adaptive retry mode; see
    /// [`AdaptiveRateLayer`](parapet_ratelimit::AdaptiveRateLayer).
    /// It sits below the throttle and above the fixed rate limit, so every
    /// attempt and re-send is paced. Default: none.
    ///
    /// ```
    /// use parapet::ratelimit::AdaptiveRateLayer;
    ///
    /// let client = parapet::Client::builder()
    ///     .adaptive_rate(AdaptiveRateLayer::new())
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn adaptive_rate(
        mut self,
        layer: impl Into<Option<parapet_ratelimit::AdaptiveRateLayer>>,
    ) -> Self {
        self.layers.adaptive_rate = layer.into();
        self
    }

    /// A circuit breaker per host: after the failures the policy counts
    /// (consecutive, or a failure rate), or at once when a 429 or 503
    /// carries `Retry-After`, calls to that host fail fast with
    /// [`Error::is_circuit_open`](crate::Error::is_circuit_open) until the
    /// circuit reopens, when a single probe goes through. It sits below
    /// retry (each attempt counts; a refusal is never retried) and above
    /// auth and the limiters; see [`parapet::circuit`](crate::circuit).
    /// The policy is checked by [`build`](Self::build). Default: none.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use parapet::circuit::CircuitPolicy;
    ///
    /// let client = parapet::Client::builder()
    ///     .circuit_breaker(CircuitPolicy::consecutive_failures(NonZeroU32::new(5).unwrap()))
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn circuit_breaker(
        mut self,
        policy: impl Into<Option<parapet_circuit::CircuitPolicy>>,
    ) -> Self {
        self.layers.circuit = policy.into();
        self
    }

    /// Hedged reads: when an idempotent read (GET, HEAD, OPTIONS) has no
    /// answer after the policy's delay (fixed, or a percentile of the
    /// host's recent latency), a second copy is sent and the first answer
    /// wins; the other is dropped. Each hedge is taken from the retry
    /// budget (or quota), so hedging cannot add more load than retries
    /// may; with [`retry_off`](Self::retry_off) only the policy bounds it.
    /// It sits right below retry; see
    /// [`HedgeLayer`](parapet_retry::HedgeLayer). Default: none.
    ///
    /// ```
    /// use parapet::retry::HedgePolicy;
    ///
    /// let client = parapet::Client::builder()
    ///     .hedge(HedgePolicy::percentile(90.0))
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn hedge(mut self, policy: impl Into<Option<parapet_retry::HedgePolicy>>) -> Self {
        self.layers.hedge = policy.into();
        self
    }

    /// The AWS SDKs' retry quota in place of the default retry budget: a
    /// token bucket per host that retries spend (5 tokens, 10 after a
    /// timeout) and successes refill; see
    /// [`RetryQuota`](parapet_retry::RetryQuota). Applies to the default
    /// retry policy (a policy given to [`retry`](Self::retry) carries its
    /// own budget or quota). What counts as a timeout (at the higher cost)
    /// is the facade's: an attempt or body timeout, an `io::Error` of kind
    /// `TimedOut` or tokio's `Elapsed` in the error's chain; a
    /// [`timeout_when`](parapet_retry::RetryQuota::timeout_when) set on
    /// `quota` is replaced (give a policy of your own to
    /// [`retry`](Self::retry) to keep it). Default: none (the 20 % retry
    /// budget).
    ///
    /// ```
    /// use parapet::retry::RetryQuota;
    ///
    /// let client = parapet::Client::builder()
    ///     .retry_quota(RetryQuota::aws_standard())
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn retry_quota(mut self, quota: impl Into<Option<parapet_retry::RetryQuota>>) -> Self {
        self.layers.retry_quota = quota.into();
        self
    }

    /// A limit on calls in flight (overall or per host), each holding its
    /// slot until its response body ends. Default: none.
    pub fn concurrency_limit(
        mut self,
        limit: impl Into<Option<parapet_ratelimit::ConcurrencyLimitLayer>>,
    ) -> Self {
        self.layers.concurrency_limit = limit.into();
        self
    }

    /// Credentials put on every attempt (bearer, basic, API key, refreshing
    /// `OAuth2` tokens), with one re-send after a 401. Default: none.
    ///
    /// A request that carries its own `Authorization` header
    /// ([`RequestBuilder::bearer_auth`](crate::RequestBuilder::bearer_auth),
    /// [`basic_auth`](crate::RequestBuilder::basic_auth), a header set by
    /// hand or by [`default_header`](Self::default_header)) is sent with it
    /// and this layer is skipped for it, as it is on a redirect to another
    /// origin.
    pub fn auth(mut self, auth: impl Into<Option<parapet_auth::AuthLayer>>) -> Self {
        self.layers.auth = auth.into();
        self
    }

    /// A service's own `OAuth2` token on every request (the
    /// client-credentials grant): fetched from `token_url` with
    /// `client_id` and `client_secret` once for any number of concurrent
    /// calls, refreshed ahead of its expiry, replaced once after a 401.
    /// The short form of [`oauth2`](Self::oauth2) with
    /// [`ClientCredentials::new`], for a token without a scope or an
    /// audience. Default: none.
    ///
    /// Every mistake (an empty client id, a token URL that is not `http`
    /// or `https`, an [`auth`](Self::auth) layer set as well) fails
    /// [`build`](Self::build) with an [`InvalidConfig`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// // A loopback authorization server and API.
    /// let server = Server::start().await;
    /// server.on("/oauth/token").reply(Reply::json(
    ///     r#"{"access_token":"issued-1","token_type":"Bearer","expires_in":3600}"#,
    /// ));
    /// server.on("/v1/orders").reply(Reply::json("[]"));
    ///
    /// let client = parapet::Client::builder()
    ///     .base_url(server.url("/v1"))
    ///     .oauth2_client_credentials(server.url("/oauth/token"), "my-service", "s3cret")
    ///     .build()?;
    /// client.get("orders").send().await?.error_for_status().await?;
    /// client.get("orders").send().await?.error_for_status().await?;
    ///
    /// assert_eq!(server.hits("/oauth/token"), 1);
    /// let orders = server.arrivals_for("/v1/orders");
    /// assert!(orders.iter().all(|a| a.header("authorization") == Some("Bearer issued-1")));
    /// # Ok(()) }
    /// ```
    pub fn oauth2_client_credentials(
        self,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<parapet_auth::SecretString>,
    ) -> Self {
        self.oauth2(ClientCredentials::new(token_url, client_id, client_secret))
    }

    /// A service's own `OAuth2` token on every request, with the scope,
    /// audience and client authentication of `credentials`; `None` turns it
    /// off. The token requests go through a client built from the same
    /// settings without the auth layer they feed (see
    /// [`ClientCredentials`]). Set this or [`auth`](Self::auth), not both.
    /// Default: none.
    pub fn oauth2(mut self, credentials: impl Into<Option<ClientCredentials>>) -> Self {
        self.oauth2 = credentials.into();
        self
    }

    /// The request-id layer (an `x-request-id` per call, the same on every
    /// attempt, the caller's or the inbound request's kept); `None` turns it
    /// off. Default: on, header `x-request-id`.
    pub fn request_id(mut self, layer: impl Into<Option<parapet_trace::RequestIdLayer>>) -> Self {
        self.layers.request_id = layer.into();
        self
    }

    /// A span per call and per attempt (OpenTelemetry HTTP client names,
    /// secrets redacted). Default: on. Spans cost next to nothing when no
    /// subscriber listens.
    pub fn tracing(mut self, on: bool) -> Self {
        self.layers.tracing = on;
        self
    }

    /// How long an idle pooled connection is kept. `None` keeps it until the
    /// server closes it. Default: 30 s, below the 60 s and 75 s keep-alive
    /// timeouts of common load balancers, so we close first.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.transport.pool_idle_timeout = timeout.into();
        self
    }

    /// The most idle connections kept per host. Set it at or above the
    /// number of calls you make to one host at once, or connections are
    /// closed and opened again between calls. Default: 256.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.transport.pool_max_idle_per_host = max;
        self
    }

    /// TCP keepalive probes on idle connections. `None` disables them.
    /// Default: 60 s.
    pub fn tcp_keepalive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.transport.tcp_keepalive = interval.into();
        self
    }

    /// `TCP_NODELAY`. Default: on (requests are small and latency matters).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.transport.tcp_nodelay = on;
        self
    }

    /// Offer HTTP/2 by ALPN on TLS connections. Default: on (plain `http`
    /// connections always use HTTP/1.1).
    pub fn http2(mut self, on: bool) -> Self {
        self.transport.http2 = on;
        self
    }

    /// Refuse plain `http` URLs. Default: off.
    pub fn https_only(mut self, on: bool) -> Self {
        self.transport.https_only = on;
        self
    }

    /// Trust the built-in webpki (Mozilla) roots. Default: on.
    pub fn webpki_roots(mut self, on: bool) -> Self {
        self.transport.webpki_roots = on;
        self
    }

    /// Trust one more root certificate (a private CA). Default: none.
    pub fn add_root_certificate(mut self, cert: Certificate) -> Self {
        self.transport.roots.push(cert);
        self
    }

    /// A client certificate and key for mutual TLS. Default: none.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.transport.identity = Some(identity);
        self
    }

    /// How many bytes of a streamed request body are kept so that it can be
    /// sent again (by retry or after a 401). Bodies given as bytes, JSON or
    /// forms are always replayable. Default: 64 KiB.
    pub fn replay_cap(mut self, bytes: usize) -> Self {
        self.replay_cap = bytes;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] when a setting is out of range or the settings
    /// contradict each other.
    pub fn build(self) -> Result<Client, InvalidConfig> {
        let transport = crate::transport::SharedTransport::new(self.transport.build()?);
        self.build_with(transport)
    }

    /// Builds the client over another innermost service instead of
    /// hyper-util (an in-process service for tests and benchmarks, say).
    ///
    /// # What the service must take
    ///
    /// The stack hands its innermost service an
    /// `http::Request<`[`ReplayBody`](parapet_core::ReplayBody)`>`: the
    /// request body is recorded as it is sent, so that a retry or the
    /// re-send after a 401 can send it again. A service written for
    /// `Request<Full<Bytes>>`, `Request<String>` or axum's `Request<Body>`
    /// does not fit, and the compiler says the trait bound
    /// `Service<Request<ReplayBody>>` is not satisfied: take
    /// `Request<ReplayBody>` (it is an `http_body::Body` of `Bytes`, read it
    /// like any other), or map the request before your service with
    /// `tower::ServiceExt::map_request`. The response may have any body of
    /// `Bytes`; errors go into [`BoxError`](parapet_core::BoxError).
    ///
    /// The same holds for the innermost service of a stack built by hand
    /// from the layer crates (`examples/custom_stack.rs`): hyper-util's
    /// client there is a `Client<_, ReplayBody>`.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use parapet::core::ReplayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// // An in-process upstream that echoes the request body.
    /// let echo = tower::service_fn(|req: Request<ReplayBody>| async move {
    ///     let body = req.into_body().collect().await?.to_bytes();
    ///     Ok::<_, parapet::core::BoxError>(Response::new(Full::new(body)))
    /// });
    /// let client = parapet::Client::builder()
    ///     .base_url("http://in-process.test")
    ///     .build_with(echo)
    ///     .expect("valid configuration");
    /// let text = client.post("echo").body("ping").send().await?.text().await?;
    /// assert_eq!(text, "ping");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_with<S, B>(mut self, transport: S) -> Result<Client, InvalidConfig>
    where
        S: tower::Service<http::Request<parapet_core::ReplayBody>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<parapet_core::BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<parapet_core::BoxError>,
    {
        if let Some(e) = self.header_error.take() {
            return Err(InvalidConfig::new(e));
        }
        if let Some(credentials) = self.oauth2.take() {
            if self.layers.auth.is_some() {
                return Err(InvalidConfig::new(
                    "both an auth layer (auth) and OAuth2 client credentials (oauth2) are set: \
                     keep one",
                ));
            }
            self.layers.auth = Some(credentials.layer(&self, transport.clone())?);
        }
        let mut default_headers = self.default_headers;
        let base = match self.base_url {
            None => None,
            Some(url) => {
                let uri: Uri = url.parse().map_err(|_| {
                    InvalidConfig::new(if url.contains("://") {
                        "base URL is not a valid URL"
                    } else {
                        "base URL is missing its scheme: write it like https://host/path"
                    })
                })?;
                if uri.scheme().is_none() {
                    return Err(InvalidConfig::new(
                        "base URL is missing its scheme: write it like https://host/path",
                    ));
                }
                if uri.authority().is_none() {
                    return Err(InvalidConfig::new(
                        "base URL must be absolute, like https://host/path",
                    ));
                }
                crate::client::check_scheme(&uri)
                    .map_err(|e| InvalidConfig::new(format!("base URL: {e}")))?;
                if uri.query().is_some() {
                    return Err(InvalidConfig::new("base URL must not have a query"));
                }
                // Credentials in the base URL become a default
                // `Authorization: Basic` header, so that no URI the client
                // keeps, logs or pools by carries them.
                let (uri, basic) = crate::client::split_userinfo(uri)
                    .map_err(|e| InvalidConfig::new(format!("base URL: {e}")))?;
                if let Some(basic) = basic {
                    if !default_headers.contains_key(http::header::AUTHORIZATION) {
                        default_headers.insert(http::header::AUTHORIZATION, basic);
                    }
                }
                Some(uri)
            }
        };
        let stack = self.layers.assemble(transport)?;
        Ok(Client::from_parts(Shared {
            stack,
            base,
            default_headers,
            replay_cap: self.replay_cap,
        }))
    }
}
