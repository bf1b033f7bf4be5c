//! OAuth 2.0 token providers (RFC 6749): the client-credentials and the
//! refresh-token grants.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use parapet_core::BoxError;
use serde_json::{Map, Value};
use tower_service::Service;

use crate::form;
use crate::token::is_visible_ascii;
use crate::{InvalidCredential, ProvideToken, SecretString, Token, TokenError, TokenFuture};

/// Default [`max_response_bytes`](TokenEndpoint::max_response_bytes): 64 KiB.
pub const DEFAULT_MAX_TOKEN_RESPONSE: usize = 64 * 1024;

type Send_ = dyn Fn(
        Request<Bytes>,
        usize,
    ) -> Pin<Box<dyn Future<Output = Result<(StatusCode, Bytes), SendError>> + Send>>
    + Send
    + Sync;

/// A token request that failed, and how far it got.
struct SendError {
    error: TokenError,
    /// The request provably never left: the service was not ready, or the
    /// failure proves it ([`parapet_core::request_never_sent`]).
    never_sent: bool,
    /// The answer's status, when its head arrived before the failure.
    status: Option<StatusCode>,
}

impl SendError {
    fn before_answer(error: BoxError) -> Self {
        Self {
            never_sent: parapet_core::request_never_sent(&*error),
            error: TokenError::transport(error),
            status: None,
        }
    }

    fn not_sent(error: BoxError) -> Self {
        Self {
            error: TokenError::transport(error),
            never_sent: true,
            status: None,
        }
    }

    fn in_answer(error: TokenError, status: StatusCode) -> Self {
        Self {
            error,
            never_sent: false,
            status: Some(status),
        }
    }
}

/// Where tokens come from: the token endpoint's URL and the service that
/// reaches it.
///
/// The service is any `tower::Service<http::Request<B>>` whose body type
/// can be made from `Bytes` (`http_body_util::Full<Bytes>`, `ReplayBody`,
/// ...): normally the same hyper client the API calls go through, without
/// the auth layer (a token request must not need a token). Answers are read
/// up to [`max_response_bytes`](Self::max_response_bytes).
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use parapet_auth::TokenEndpoint;
/// use tower::service_fn;
///
/// let stand_in = service_fn(|_req: Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
///         br#"{"access_token":"t","token_type":"Bearer","expires_in":3600}"#,
///     ))))
/// });
/// let endpoint = TokenEndpoint::new(stand_in, "https://auth.example.com/oauth/token").unwrap();
/// assert_eq!(endpoint.url(), "https://auth.example.com/oauth/token");
/// ```
#[derive(Clone)]
pub struct TokenEndpoint {
    url: Uri,
    send: Arc<Send_>,
    max_body: usize,
}

impl TokenEndpoint {
    /// The endpoint at `url`, reached through `service`.
    ///
    /// # Errors
    ///
    /// `url` is not an absolute `http` or `https` URL.
    pub fn new<S, B, RB>(service: S, url: &str) -> Result<Self, InvalidCredential>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: From<Bytes> + Send + 'static,
        RB: Body + Send + 'static,
        RB::Data: Send,
        RB::Error: Into<BoxError>,
    {
        let url: Uri = url
            .parse()
            .map_err(|_| InvalidCredential::not_an_absolute_url("token URL"))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
            return Err(InvalidCredential::not_an_absolute_url("token URL"));
        }
        let send = move |req: Request<Bytes>, max: usize| {
            let mut svc = service.clone();
            let fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
                poll_fn(|cx| svc.poll_ready(cx))
                    .await
                    .map_err(|e| SendError::not_sent(e.into()))?;
                let resp = svc
                    .call(req.map(B::from))
                    .await
                    .map_err(|e| SendError::before_answer(e.into()))?;
                let status = resp.status();
                let body = match Limited::new(resp.into_body(), max).collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                        return Err(SendError::in_answer(TokenError::too_large(max), status));
                    }
                    Err(e) => {
                        return Err(SendError::in_answer(TokenError::transport(e), status));
                    }
                };
                Ok((status, body))
            });
            fut
        };
        Ok(Self {
            url,
            send: Arc::new(send),
            max_body: DEFAULT_MAX_TOKEN_RESPONSE,
        })
    }

    /// The most bytes of a token response that are read; a longer one is a
    /// [`TokenError`] ([`is_malformed`](TokenError::is_malformed)).
    ///
    /// Default: [`DEFAULT_MAX_TOKEN_RESPONSE`] (64 KiB).
    #[must_use]
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// The token endpoint's URL, as given: user info included, if it had
    /// any (`Debug` shows it as `REDACTED`; the client does not send it).
    #[must_use]
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// POSTs the form; the answer's status and body, read whole.
    async fn post(
        &self,
        form: String,
        basic: Option<HeaderValue>,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let mut req = Request::new(Bytes::from(form));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(b) = basic {
            h.insert(AUTHORIZATION, b);
        }
        (self.send)(req, self.max_body).await
    }
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &Redacted(&self.url))
            .field("max_response_bytes", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// A URL as it may be shown: user info (`user:password@`) replaced by
/// `REDACTED:REDACTED@` (or `REDACTED@` without a colon).
struct Redacted<'a>(&'a Uri);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        let Some((userinfo, host)) = url.authority().and_then(|a| a.as_str().rsplit_once('@'))
        else {
            return write!(f, "{url}");
        };
        let hidden = if userinfo.contains(':') {
            "REDACTED:REDACTED"
        } else {
            "REDACTED"
        };
        let scheme = url.scheme_str().unwrap_or("http");
        let rest = url.path_and_query().map_or("/", |pq| pq.as_str());
        write!(f, "{scheme}://{hidden}@{host}{rest}")
    }
}

/// How the client proves who it is to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `Authorization: Basic base64(urlencode(id):urlencode(secret))`, the
    /// method every server must support (the default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    RequestBody,
}

/// The client's identity: an id and, for a confidential client, a secret.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    secret: Option<SecretString>,
    auth: ClientAuth,
}

impl Client {
    fn new(id: &str, secret: Option<SecretString>) -> Result<Self, InvalidCredential> {
        if id.is_empty() {
            return Err(InvalidCredential::empty("client id"));
        }
        if id.chars().any(char::is_control) {
            return Err(InvalidCredential::control_character("client id"));
        }
        if let Some(s) = &secret {
            if s.expose().chars().any(char::is_control) {
                return Err(InvalidCredential::control_character("client secret"));
            }
        }
        Ok(Self {
            id: id.to_owned(),
            secret,
            auth: ClientAuth::Basic,
        })
    }

    /// Adds the client's credentials to the form or returns the Basic header.
    fn apply<'a>(&'a self, fields: &mut Vec<(&'static str, &'a str)>) -> Option<HeaderValue> {
        match (&self.secret, self.auth) {
            (Some(secret), ClientAuth::Basic) => {
                let joined = format!(
                    "{}:{}",
                    form::encode(&self.id),
                    form::encode(secret.expose())
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(joined);
                // Base64 is always a valid header value.
                let mut v = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            (Some(secret), ClientAuth::RequestBody) => {
                fields.push(("client_id", &self.id));
                fields.push(("client_secret", secret.expose()));
                None
            }
            (None, _) => {
                fields.push(("client_id", &self.id));
                None
            }
        }
    }
}

/// The client-credentials grant (RFC 6749 §4.4): a service's own token,
/// fetched with its client id and secret.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use parapet_auth::{AuthLayer, ClientAuth, ClientCredentialsGrant, TokenCache, TokenEndpoint};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let stand_in = tower::service_fn(|req: Request<Full<Bytes>>| async move {
///     assert_eq!(req.method(), "POST");
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
///         br#"{"access_token":"t-1","token_type":"bearer","expires_in":3600}"#,
///     ))))
/// });
/// let endpoint = TokenEndpoint::new(stand_in, "http://127.0.0.1:9/token").unwrap();
/// let grant = ClientCredentialsGrant::new(endpoint, "my-client", "my-secret")
///     .unwrap()
///     .client_auth(ClientAuth::Basic)
///     .scope("read write")
///     .audience("https://api.example.com");
/// let cache = TokenCache::builder(grant).refresh_margin(Duration::from_secs(60)).build();
/// assert_eq!(cache.token().await.unwrap().secret().expose(), "t-1");
/// let layer = AuthLayer::token_cache(cache);
/// # drop(layer);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientCredentialsGrant {
    endpoint: TokenEndpoint,
    client: Client,
    scope: Option<String>,
    audience: Option<String>,
}

impl ClientCredentialsGrant {
    /// The grant for the client `client_id` with `client_secret`,
    /// authenticated by HTTP Basic.
    ///
    /// # Errors
    ///
    /// The client id is empty, or either value holds a control character.
    pub fn new(
        endpoint: TokenEndpoint,
        client_id: &str,
        client_secret: impl Into<SecretString>,
    ) -> Result<Self, InvalidCredential> {
        Ok(Self {
            endpoint,
            client: Client::new(client_id, Some(client_secret.into()))?,
            scope: None,
            audience: None,
        })
    }

    /// How the client authenticates.
    ///
    /// Default: [`ClientAuth::Basic`].
    #[must_use]
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client.auth = auth;
        self
    }

    /// The `scope` to ask for (space-separated).
    ///
    /// Default: none (the server's default scope).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The `audience` to ask for (an extension many servers use, Auth0 and
    /// Okta among them).
    ///
    /// Default: none.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        let mut fields = vec![("grant_type", "client_credentials")];
        if let Some(s) = &self.scope {
            fields.push(("scope", s));
        }
        if let Some(a) = &self.audience {
            fields.push(("audience", a));
        }
        let basic = self.client.apply(&mut fields);
        // Nothing is spent by a client-credentials request: every
        // transient failure may be retried, wherever it happened.
        let (status, body) = self
            .endpoint
            .post(form::pairs(fields), basic)
            .await
            .map_err(|e| e.error)?;
        let (token, _refresh) = parse_token_response(status, &body)?;
        Ok(token)
    }
}

impl ProvideToken for ClientCredentialsGrant {
    fn fetch_token(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch())
    }
}

/// The refresh-token grant (RFC 6749 §6): access tokens from a long-lived
/// refresh token, as obtained once by an authorization-code flow.
///
/// When the server rotates the refresh token (sends a new one with each
/// access token), the newest is kept and used next;
/// [`refresh_token`](Self::refresh_token) reads it so that it can be
/// stored. Share the grant through an `Arc` to keep a handle on it:
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use parapet_auth::{RefreshTokenGrant, TokenCache, TokenEndpoint};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let stand_in = tower::service_fn(|_req: Request<Full<Bytes>>| async move {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
///         br#"{"access_token":"a-2","token_type":"Bearer","expires_in":600,"refresh_token":"r-2"}"#,
///     ))))
/// });
/// let endpoint = TokenEndpoint::new(stand_in, "http://127.0.0.1:9/token").unwrap();
/// let grant = Arc::new(RefreshTokenGrant::new(endpoint, "r-1").unwrap().client_id("app").unwrap());
/// let cache = TokenCache::new(Arc::clone(&grant));
/// assert_eq!(cache.token().await.unwrap().secret().expose(), "a-2");
/// assert_eq!(grant.refresh_token().expose(), "r-2");
/// # }
/// ```
///
/// # A refresh token is never sent twice by chance
///
/// A refresh request spends its refresh token when the server rotates
/// them, and a server that detects reuse (as the OAuth 2.0 security best
/// practice asks) takes a spent token sent again for a stolen one and
/// revokes the whole grant: the user is logged out until a person
/// authorises again. So the grant tells the [`TokenCache`](crate::TokenCache)
/// to retry a failed refresh only when the refresh token provably was not
/// spent:
///
/// - **The request never left** (the connection was refused, the connect
///   failed; with `parapet-core`'s `hyper-util` feature, which the `parapet`
///   facade turns on, whatever hyper-util's `is_connect()` says; see
///   [`parapet_core::request_never_sent`]): retried, as for any grant.
/// - **The server answered with an error** (a complete non-2xx answer: 5xx
///   and 429 are retried, `invalid_grant` and the like are not): the
///   server issued nothing, the refresh token stays as it was.
/// - **Anything else, once the request may have arrived**: a reset or
///   close after it was written, the cache's
///   [`fetch_timeout`](crate::TokenCacheBuilder::fetch_timeout) cutting
///   it off (or its future dropped mid-request in any other way, say by a
///   runtime shutting down), a 2xx answer whose body broke off, ran over
///   [`max_response_bytes`](TokenEndpoint::max_response_bytes) or cannot be
///   parsed. The answer may have carried a rotated refresh token that we
///   never read: it is lost, and the one we hold may be spent. The grant
///   **keeps the old refresh token** ([`refresh_token`](Self::refresh_token)
///   still returns it), **sends nothing more**, and answers this fetch and
///   every later one at once with a [`TokenError`] for which
///   [`is_refresh_outcome_unknown`](TokenError::is_refresh_outcome_unknown)
///   holds (its source says what happened), until
///   [`set_refresh_token`](Self::set_refresh_token) gives it a refresh
///   token: the one from a new authorisation, or the old one again when you
///   know that the server does not rotate refresh tokens or tolerates a
///   reuse. Nothing is dropped silently; the state is visible on
///   [`refresh_outcome_unknown`](Self::refresh_outcome_unknown).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use parapet_auth::{RefreshTokenGrant, TokenCache, TokenEndpoint};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A token endpoint whose connection resets once the request is written.
/// let sent = Arc::new(AtomicUsize::new(0));
/// let n = Arc::clone(&sent);
/// let flaky = tower::service_fn(move |_req: Request<Full<Bytes>>| {
///     n.fetch_add(1, Ordering::SeqCst);
///     async {
///         Err::<Response<Full<Bytes>>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
///     }
/// });
/// let endpoint = TokenEndpoint::new(flaky, "http://127.0.0.1:9/token").unwrap();
/// let grant = Arc::new(RefreshTokenGrant::new(endpoint, "r-1").unwrap());
///
/// let err = TokenCache::new(Arc::clone(&grant)).token().await.unwrap_err();
/// assert!(err.is_refresh_outcome_unknown());
/// assert_eq!(sent.load(Ordering::SeqCst), 1); // sent once, never again
/// assert!(grant.refresh_outcome_unknown());
/// assert_eq!(grant.refresh_token().expose(), "r-1"); // kept, to store or inspect
///
/// // Later fetches answer at once, without a request...
/// let err = TokenCache::new(Arc::clone(&grant)).token().await.unwrap_err();
/// assert!(err.is_refresh_outcome_unknown());
/// assert_eq!(sent.load(Ordering::SeqCst), 1);
/// // ...until the grant is given a refresh token (after re-authorising).
/// grant.set_refresh_token("r-from-a-new-login").unwrap();
/// assert!(!grant.refresh_outcome_unknown());
/// # }
/// ```
#[derive(Debug)]
pub struct RefreshTokenGrant {
    endpoint: TokenEndpoint,
    refresh: Mutex<Slot>,
    client: Option<Client>,
    scope: Option<String>,
}

/// The refresh token, and whether it may have been spent unseen.
#[derive(Debug)]
struct Slot {
    token: SecretString,
    /// Why the outcome of a request that spent `token` is unknown.
    unknown: Option<TokenError>,
}

fn checked_refresh_token(refresh: SecretString) -> Result<SecretString, InvalidCredential> {
    if refresh.is_empty() {
        return Err(InvalidCredential::empty("refresh token"));
    }
    if refresh.expose().chars().any(char::is_control) {
        return Err(InvalidCredential::control_character("refresh token"));
    }
    Ok(refresh)
}

impl RefreshTokenGrant {
    /// The grant that spends `refresh_token`.
    ///
    /// # Errors
    ///
    /// The refresh token is empty or holds a control character.
    pub fn new(
        endpoint: TokenEndpoint,
        refresh_token: impl Into<SecretString>,
    ) -> Result<Self, InvalidCredential> {
        Ok(Self {
            endpoint,
            refresh: Mutex::new(Slot {
                token: checked_refresh_token(refresh_token.into())?,
                unknown: None,
            }),
            client: None,
            scope: None,
        })
    }

    /// A public client: `client_id` is sent in the form body.
    ///
    /// Default: no client identification.
    ///
    /// # Errors
    ///
    /// The id is empty or holds a control character.
    pub fn client_id(mut self, client_id: &str) -> Result<Self, InvalidCredential> {
        self.client = Some(Client::new(client_id, None)?);
        Ok(self)
    }

    /// A confidential client, authenticated as `auth` says.
    ///
    /// # Errors
    ///
    /// The id is empty, or either value holds a control character.
    pub fn client(
        mut self,
        client_id: &str,
        client_secret: impl Into<SecretString>,
        auth: ClientAuth,
    ) -> Result<Self, InvalidCredential> {
        let mut c = Client::new(client_id, Some(client_secret.into()))?;
        c.auth = auth;
        self.client = Some(c);
        Ok(self)
    }

    /// The `scope` to ask for (must not exceed the original grant's).
    ///
    /// Default: none (the scope originally granted).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The refresh token in use: the newest one the server sent, or, after
    /// a refresh whose outcome is unknown, the one that request spent.
    pub fn refresh_token(&self) -> SecretString {
        self.slot().token.clone()
    }

    /// Whether a refresh request may have reached the server without its
    /// answer being read, so that the refresh token held may be spent (see
    /// [the type's docs](Self#a-refresh-token-is-never-sent-twice-by-chance)).
    /// While it holds, fetches fail at once and send nothing.
    #[must_use]
    pub fn refresh_outcome_unknown(&self) -> bool {
        self.slot().unknown.is_some()
    }

    /// Replaces the refresh token (with one from a new authorisation, say)
    /// and clears an unknown refresh outcome: the next fetch sends it.
    ///
    /// # Errors
    ///
    /// The refresh token is empty or holds a control character; the grant
    /// is left as it was.
    pub fn set_refresh_token(
        &self,
        refresh_token: impl Into<SecretString>,
    ) -> Result<(), InvalidCredential> {
        let token = checked_refresh_token(refresh_token.into())?;
        let mut slot = self.slot();
        slot.token = token;
        slot.unknown = None;
        Ok(())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.refresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        let refresh = {
            let slot = self.slot();
            if let Some(cause) = &slot.unknown {
                return Err(TokenError::refresh_outcome_unknown(cause.clone()));
            }
            slot.token.clone()
        };
        let mut fields = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ];
        if let Some(s) = &self.scope {
            fields.push(("scope", s));
        }
        let basic = self.client.as_ref().and_then(|c| c.apply(&mut fields));
        let form = form::pairs(fields);
        // From here on the refresh token may be spent: if this future is
        // dropped before the outcome is known (the cache's fetch timeout),
        // the guard records that it is unknown.
        let mut spending = Spending {
            grant: self,
            refresh: Some(refresh),
        };
        let outcome = match self.endpoint.post(form, basic).await {
            Ok((status, body)) => match parse_token_response(status, &body) {
                Ok((token, rotated)) => {
                    if let Some(new) = rotated {
                        spending.rotated(new);
                    }
                    Ok(token)
                }
                // An answer the server finished, refusing: nothing issued.
                Err(e) if !status.is_success() => Err(e),
                // A 2xx we cannot use may hold a rotated refresh token.
                Err(e) => Err(spending.unknown(e)),
            },
            Err(SendError {
                error,
                never_sent: true,
                ..
            }) => Err(error),
            Err(SendError {
                error,
                status: Some(status),
                ..
            }) if !status.is_success() => Err(error),
            Err(SendError { error, .. }) => Err(spending.unknown(error)),
        };
        spending.refresh = None;
        outcome
    }
}

/// A refresh request in flight: records an unknown outcome if dropped
/// before it is settled.
struct Spending<'a> {
    grant: &'a RefreshTokenGrant,
    /// The refresh token being spent; `None` once the outcome is known.
    refresh: Option<SecretString>,
}

impl Spending<'_> {
    /// The server sent `new` in place of the token spent.
    fn rotated(&mut self, new: SecretString) {
        let mut slot = self.grant.slot();
        // Only replace the token this fetch spent (a concurrent fetch
        // through another cache, or `set_refresh_token`, may have
        // replaced it already).
        if self.refresh.as_ref() == Some(&slot.token) {
            slot.token = new;
            tracing::debug!("refresh token rotated");
        }
    }

    /// The request may have spent the refresh token, its answer unread.
    fn unknown(&mut self, cause: TokenError) -> TokenError {
        let spent = self.refresh.take();
        let mut slot = self.grant.slot();
        if spent.as_ref() == Some(&slot.token) && slot.unknown.is_none() {
            tracing::warn!(
                error = %cause,
                "refresh token request may have reached the server unanswered: \
                 the refresh token is kept and not sent again"
            );
            slot.unknown = Some(cause.clone());
        }
        TokenError::refresh_outcome_unknown(cause)
    }
}

impl Drop for Spending<'_> {
    fn drop(&mut self) {
        if self.refresh.is_some() {
            // NOTE: dropped mid-request (a timeout, a runtime shutting
            // down): the request may have arrived.
            let _ = self.unknown(TokenError::closed());
        }
    }
}

impl ProvideToken for RefreshTokenGrant {
    fn fetch_token(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch())
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// Parses a token endpoint's answer (RFC 6749 §5.1, §5.2): its status and
/// body, as [`ClientCredentialsGrant`] and [`RefreshTokenGrant`] do, for a
/// custom [`ProvideToken`] that reaches its token endpoint its own way.
///
/// Returns the access token (with its expiry when `expires_in` was given)
/// and the new refresh token when the server sent one (rotation).
///
/// # Errors
///
/// A [`TokenError`] for any answer that is not a usable token: a non-2xx
/// status ([`status`](TokenError::status), with the `OAuth2`
/// [`oauth_error`](TokenError::oauth_error) code when the body has one), a
/// 2xx body carrying an `error`, a body that is not a JSON object, a missing
/// or unusable `access_token`, a `token_type` other than `Bearer`, a bad
/// `expires_in` or `refresh_token`. Never a panic, whatever the bytes, and
/// no error message carries a token.
///
/// ```
/// use http::StatusCode;
/// use parapet_auth::parse_token_response;
///
/// let body = br#"{"access_token":"a-1","token_type":"Bearer","expires_in":3600,"refresh_token":"r-2"}"#;
/// let (token, refresh) = parse_token_response(StatusCode::OK, body).unwrap();
/// assert_eq!(token.secret().expose(), "a-1");
/// assert_eq!(refresh.unwrap().expose(), "r-2");
///
/// let err = parse_token_response(StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant"}"#).unwrap_err();
/// assert_eq!(err.oauth_error(), Some("invalid_grant"));
/// assert!(!err.is_transient());
/// ```
pub fn parse_token_response(
    status: StatusCode,
    body: &[u8],
) -> Result<(Token, Option<SecretString>), TokenError> {
    // Parse into a `Value` first: serde_json's syntax errors name positions,
    // never content, so no token can leak through an error message.
    let parsed = serde_json::from_slice::<Value>(body);
    if !status.is_success() {
        let obj = parsed.as_ref().ok().and_then(Value::as_object);
        let code = obj.and_then(|o| str_field(o, "error"));
        let description = obj.and_then(|o| str_field(o, "error_description"));
        return Err(TokenError::rejected(status, code, description));
    }
    let json = parsed.map_err(|e| TokenError::malformed("the body is not JSON").with_source(e))?;
    let obj = json
        .as_object()
        .ok_or(TokenError::malformed("the body is not a JSON object"))?;
    let Some(access) = obj.get("access_token") else {
        if let Some(code) = str_field(obj, "error") {
            return Err(TokenError::rejected(
                status,
                Some(code),
                str_field(obj, "error_description"),
            ));
        }
        return Err(TokenError::malformed("`access_token` is missing"));
    };
    let access = access
        .as_str()
        .ok_or(TokenError::malformed("`access_token` is not a string"))?;
    if access.is_empty() || !is_visible_ascii(access) {
        return Err(TokenError::invalid_token());
    }
    let token_type = str_field(obj, "token_type").ok_or(TokenError::malformed(
        "`token_type` is missing or not a string",
    ))?;
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::token_type(token_type));
    }
    let mut token = Token::new(access);
    match obj.get("expires_in") {
        None | Some(Value::Null) => {}
        Some(v) => token = token.with_expires_in(seconds(v)?),
    }
    let refresh = match obj.get("refresh_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && !s.chars().any(char::is_control) => {
            Some(SecretString::new(s.as_str()))
        }
        Some(_) => {
            return Err(TokenError::malformed(
                "`refresh_token` is not a usable string",
            ));
        }
    };
    Ok((token, refresh))
}

/// `expires_in`: a non-negative number of seconds, or (as some servers send
/// it) a string of digits.
fn seconds(v: &Value) -> Result<Duration, TokenError> {
    let bad = || TokenError::malformed("`expires_in` is not a number of seconds");
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Duration::from_secs(u))
            } else {
                n.as_f64()
                    .filter(|f| *f >= 0.0)
                    .and_then(|f| Duration::try_from_secs_f64(f).ok())
                    .ok_or_else(bad)
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<(Token, Option<SecretString>), TokenError> {
        parse_token_response(StatusCode::OK, body.as_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn a_good_answer_is_parsed() {
        let (t, r) = ok(r#"{"access_token":"abc","token_type":"BEARER","expires_in":"60","refresh_token":"r2","scope":"x"}"#).unwrap();
        assert_eq!(t.secret().expose(), "abc");
        assert_eq!(
            t.expires_at().unwrap() - tokio::time::Instant::now(),
            Duration::from_secs(60)
        );
        assert_eq!(r.unwrap().expose(), "r2");
        let (t, r) = ok(r#"{"access_token":"abc","token_type":"bearer"}"#).unwrap();
        assert!(t.expires_at().is_none() && r.is_none());
    }

    #[test]
    fn debug_never_prints_user_info_in_the_token_url() {
        let svc = tower::service_fn(|_req: Request<Bytes>| async {
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        for url in [
            "http://user:secret@auth.test/token?x=1",
            "https://user:secret@auth.test:8443/oauth/token",
            "http://secret@auth.test/token",
            "http://user:p%40ss:secret@auth.test/token",
        ] {
            let endpoint = TokenEndpoint::new(svc, url).unwrap();
            let grant = ClientCredentialsGrant::new(endpoint.clone(), "id", "pw").unwrap();
            let refresh = RefreshTokenGrant::new(endpoint.clone(), "r").unwrap();
            let shown = format!("{endpoint:?} {endpoint:#?}");
            assert!(!shown.contains("secret"), "{shown}");
            assert!(!shown.contains("user:"), "{shown}");
            assert!(shown.contains("auth.test"), "{shown}");
            assert!(shown.contains("/token"), "{shown}");
            // The grants show their endpoint the same way (`secret` is also
            // the name of a redacted field there).
            let shown = format!("{grant:?} {refresh:?}");
            assert!(
                !shown.contains("secret@") && !shown.contains("user:"),
                "{shown}"
            );
        }
        let plain = TokenEndpoint::new(svc, "https://auth.test/token").unwrap();
        assert!(format!("{plain:?}").contains("url: https://auth.test/token"));
    }

    #[test]
    fn bad_answers_are_typed_errors_without_the_token() {
        for (body, needle) in [
            ("<html>502</html>", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"token_type":"Bearer"}"#, "`access_token` is missing"),
            (
                r#"{"access_token":5,"token_type":"Bearer"}"#,
                "not a string",
            ),
            (r#"{"access_token":"planted-xyz"}"#, "`token_type`"),
            (
                r#"{"access_token":"planted-xyz","token_type":"Bearer","expires_in":-3}"#,
                "expires_in",
            ),
            (
                r#"{"access_token":"planted-xyz","token_type":"Bearer","expires_in":"soon"}"#,
                "expires_in",
            ),
        ] {
            let e = ok(body).unwrap_err();
            assert!(e.is_malformed(), "{body}");
            assert!(e.to_string().contains(needle), "{e} for {body}");
            assert!(!format!("{e} {e:?}").contains("planted"));
        }
        let e = ok(r#"{"access_token":"planted-xyz","token_type":"mac"}"#).unwrap_err();
        assert!(e.is_malformed() && e.to_string().contains("\"mac\""));
        let e = ok("{\"access_token\":\"a\\nb\",\"token_type\":\"Bearer\"}").unwrap_err();
        assert!(e.is_malformed());
    }

    #[test]
    fn oauth_errors_carry_their_code() {
        let e = parse_token_response(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"refresh token revoked"}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(e.oauth_error(), Some("invalid_grant"));
        assert_eq!(e.error_description(), Some("refresh token revoked"));
        assert!(!e.is_transient());
        let e = parse_token_response(StatusCode::SERVICE_UNAVAILABLE, b"busy").unwrap_err();
        assert!(e.is_transient() && e.oauth_error().is_none());
        // A 200 that carries an error (GitHub does this).
        let e = ok(r#"{"error":"bad_verification_code"}"#).unwrap_err();
        assert_eq!(e.oauth_error(), Some("bad_verification_code"));
    }

    #[test]
    fn hostile_bodies_are_errors_never_panics() {
        let deep = "[".repeat(100_000);
        let huge_number = format!(
            r#"{{"access_token":"a","token_type":"Bearer","expires_in":1{}}}"#,
            "0".repeat(400)
        );
        for body in [
            &b""[..],
            b"\xff\xfe\x00",
            deep.as_bytes(),
            huge_number.as_bytes(),
            br#"{"access_token":"a","token_type":"Bearer","expires_in":1e308}"#,
            br#"{"access_token":"a","token_type":"Bearer","expires_in":"18446744073709551616"}"#,
            br#"{"access_token":"","token_type":"Bearer"}"#,
            br#"{"access_token":"a b","token_type":"Bearer"}"#,
            br#"{"access_token":"a","token_type":"Bearer","refresh_token":""}"#,
            br#"{"access_token":"a","token_type":"Bearer","refresh_token":7}"#,
        ] {
            assert!(parse_token_response(StatusCode::OK, body).is_err());
            assert!(parse_token_response(StatusCode::INTERNAL_SERVER_ERROR, body).is_err());
        }
        // A huge but finite lifetime is accepted (a cache caps it itself).
        for lifetime in ["1e9", "18446744073709551615", "\"18446744073709551615\""] {
            let body =
                format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{lifetime}}}"#);
            let (t, _) = ok(&body).unwrap();
            assert!(t.expires_at().is_some());
        }
    }
}
