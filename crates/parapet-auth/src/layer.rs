//! `AuthLayer`: which credentials go on each request.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use parapet_core::DEFAULT_REPLAY_CAP;
use tower_layer::Layer;

use crate::token::is_visible_ascii;
use crate::{Auth, InvalidCredential, ProvideToken, SecretString, TokenCache};

/// What to do with a 401 answer to a request sent with a cached token.
///
/// Static credentials (bearer, basic, API keys) have nothing to refresh: a
/// 401 is always returned as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum On401 {
    /// Return the 401 to the caller.
    Return,
    /// Invalidate the token the request was sent with, get a fresh one and
    /// send the request once more (the default). A token that was itself
    /// fetched after a 401 is not replaced within the cache's
    /// [re-auth cool-down](crate::TokenCacheBuilder::reauth_cooldown): its
    /// 401 is returned as it is.
    #[default]
    Refresh,
    /// As [`Refresh`](Self::Refresh), but only when the server's
    /// `WWW-Authenticate` challenge says `error="invalid_token"` (RFC 6750);
    /// any other 401 is returned as it is.
    RefreshIfInvalidToken,
}

/// Puts credentials on every request that passes through it, and on every
/// attempt of a retried call.
///
/// Named constructors choose the credential:
///
/// | constructor | sends |
/// |---|---|
/// | [`bearer`](Self::bearer) | `Authorization: Bearer <token>` |
/// | [`basic`](Self::basic) | `Authorization: Basic base64(user:password)` |
/// | [`api_key_header`](Self::api_key_header) | `<name>: <key>` |
/// | [`api_key_query`](Self::api_key_query) | `?<name>=<key>` appended to the URI |
/// | [`provider`](Self::provider), [`token_cache`](Self::token_cache) | `Authorization: Bearer <token>` from a refreshing [`TokenCache`] |
///
/// Values are validated here, once: an empty value or one holding
/// whitespace or a control character is an [`InvalidCredential`]. Every
/// header value the layer sets is marked sensitive (HTTP/2 never indexes it,
/// and well-behaved loggers hide it); the layer replaces any credential
/// header of the same name already on the request.
///
/// ```
/// use http::{Request, Response, header::AUTHORIZATION};
/// use parapet_auth::AuthLayer;
/// use parapet_core::ReplayBody;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(AuthLayer::bearer("s3cr3t").unwrap())
///     .service(service_fn(|req: Request<ReplayBody>| async move {
///         let auth = req.headers()[AUTHORIZATION].clone();
///         assert!(auth.is_sensitive());
///         assert_eq!(auth, "Bearer s3cr3t");
///         Ok::<_, std::convert::Infallible>(Response::new(()))
///     }));
/// svc.oneshot(Request::new(String::new())).await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    pub(crate) config: Arc<Config>,
}

pub(crate) struct Config {
    pub(crate) credential: Credential,
    pub(crate) on_401: On401,
    pub(crate) replay_cap: usize,
}

pub(crate) enum Credential {
    Header(HeaderName, HeaderValue),
    Query(SecretString),
    Tokens(TokenCache),
}

fn check(what: &'static str, value: &str) -> Result<(), InvalidCredential> {
    if value.is_empty() {
        Err(InvalidCredential::empty(what))
    } else if !is_visible_ascii(value) {
        Err(InvalidCredential::not_visible(what))
    } else {
        Ok(())
    }
}

fn sensitive(value: &str, what: &'static str) -> Result<HeaderValue, InvalidCredential> {
    let mut v =
        HeaderValue::try_from(value).map_err(|_| InvalidCredential::control_character(what))?;
    v.set_sensitive(true);
    Ok(v)
}

impl AuthLayer {
    fn with(credential: Credential) -> Self {
        Self {
            config: Arc::new(Config {
                credential,
                on_401: On401::default(),
                replay_cap: DEFAULT_REPLAY_CAP,
            }),
        }
    }

    /// `Authorization: Bearer <token>` with a token that does not change.
    ///
    /// # Errors
    ///
    /// The token is empty, or holds whitespace or a control character.
    pub fn bearer(token: impl Into<SecretString>) -> Result<Self, InvalidCredential> {
        let token = token.into();
        check("bearer token", token.expose())?;
        let value = sensitive(&format!("Bearer {}", token.expose()), "bearer token")?;
        Ok(Self::with(Credential::Header(AUTHORIZATION, value)))
    }

    /// `Authorization: Basic <base64(username:password)>` (RFC 7617, UTF-8).
    ///
    /// ```
    /// use parapet_auth::AuthLayer;
    ///
    /// assert!(AuthLayer::basic("aladdin", "open sesame").is_ok());
    /// assert!(AuthLayer::basic("a:b", "pw").is_err()); // a user id holds no colon
    /// ```
    ///
    /// # Errors
    ///
    /// The username is empty or holds a colon, or either value holds a
    /// control character.
    pub fn basic(
        username: &str,
        password: impl Into<SecretString>,
    ) -> Result<Self, InvalidCredential> {
        let password = password.into();
        if username.is_empty() {
            return Err(InvalidCredential::empty("username"));
        }
        if username.contains(':') {
            return Err(InvalidCredential::colon("username"));
        }
        if username.chars().any(char::is_control) {
            return Err(InvalidCredential::control_character("username"));
        }
        if password.expose().chars().any(char::is_control) {
            return Err(InvalidCredential::control_character("password"));
        }
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose()));
        let value = sensitive(&format!("Basic {encoded}"), "password")?;
        Ok(Self::with(Credential::Header(AUTHORIZATION, value)))
    }

    /// An API key in a header of the given name (`x-api-key`, say).
    ///
    /// ```
    /// use parapet_auth::AuthLayer;
    ///
    /// assert!(AuthLayer::api_key_header("x-api-key", "k-123").is_ok());
    /// assert!(AuthLayer::api_key_header("bad name", "k-123").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The name is not a valid header name, or the key is empty or holds
    /// whitespace or a control character.
    pub fn api_key_header(
        name: &str,
        key: impl Into<SecretString>,
    ) -> Result<Self, InvalidCredential> {
        let name = HeaderName::try_from(name)
            .map_err(|_| InvalidCredential::not_a_header_name("header name"))?;
        let key = key.into();
        check("API key", key.expose())?;
        let value = sensitive(key.expose(), "API key")?;
        Ok(Self::with(Credential::Header(name, value)))
    }

    /// An API key as the query parameter `name`, appended to every request
    /// URI (both form-urlencoded).
    ///
    /// The less safe choice: URIs end up in access logs, proxy logs,
    /// tracing spans and error messages, where a header does not. Use it only
    /// for APIs that accept nothing else; place this layer inside the
    /// tracing layer, which then records the URI before the key is added.
    ///
    /// ```
    /// use parapet_auth::AuthLayer;
    ///
    /// assert!(AuthLayer::api_key_query("api_key", "k-123").is_ok());
    /// assert!(AuthLayer::api_key_query("", "k-123").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The name or the key is empty, or the key holds a control character.
    pub fn api_key_query(
        name: &str,
        key: impl Into<SecretString>,
    ) -> Result<Self, InvalidCredential> {
        let key = key.into();
        if name.is_empty() {
            return Err(InvalidCredential::empty("query parameter name"));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidCredential::control_character("query parameter name"));
        }
        if key.is_empty() {
            return Err(InvalidCredential::empty("API key"));
        }
        if key.expose().chars().any(char::is_control) {
            return Err(InvalidCredential::control_character("API key"));
        }
        let mut pair = crate::form::encode(name);
        pair.push('=');
        pair.push_str(&crate::form::encode(key.expose()));
        Ok(Self::with(Credential::Query(SecretString::new(pair))))
    }

    /// `Authorization: Bearer <token>` with tokens from `provider`, cached
    /// and refreshed by a [`TokenCache`] with default settings.
    pub fn provider(provider: impl ProvideToken) -> Self {
        Self::token_cache(TokenCache::new(provider))
    }

    /// `Authorization: Bearer <token>` with tokens from `cache` (which may be
    /// shared with other layers or code).
    #[must_use]
    pub fn token_cache(cache: TokenCache) -> Self {
        Self::with(Credential::Tokens(cache))
    }

    /// What to do with a 401 to a request sent with a cached token.
    ///
    /// To be able to send a request again, the layer keeps a copy of its
    /// head (method, URI, headers, extensions), a replay of its body and a
    /// clone of the inner service, boxed, for the duration of the call;
    /// [`On401::Return`] saves that per-call copy and allocation. Static
    /// credentials never keep it (they have nothing to refresh: a 401 to
    /// them is returned as it is, whatever this setting).
    ///
    /// Default: [`On401::Refresh`].
    #[must_use]
    pub fn on_401(mut self, on_401: On401) -> Self {
        self.config_mut(|c| c.on_401 = on_401);
        self
    }

    /// How much of a streamed request body is kept so that it can be sent
    /// again after a 401 (bodies already in memory are kept whole for free).
    /// A body over the cap is sent once and its 401 returned as it is. When
    /// an outer layer (retry) already made the body replayable, its cap
    /// applies and this one is ignored.
    ///
    /// Default: [`DEFAULT_REPLAY_CAP`] (64 KiB).
    #[must_use]
    pub fn replay_cap(mut self, cap: usize) -> Self {
        self.config_mut(|c| c.replay_cap = cap);
        self
    }

    /// The token cache, for token-based credentials.
    #[must_use]
    pub fn cache(&self) -> Option<&TokenCache> {
        match &self.config.credential {
            Credential::Tokens(c) => Some(c),
            Credential::Header(..) | Credential::Query(_) => None,
        }
    }

    fn config_mut(&mut self, f: impl FnOnce(&mut Config)) {
        if let Some(c) = Arc::get_mut(&mut self.config) {
            f(c);
        } else {
            let mut c = Config {
                credential: match &self.config.credential {
                    Credential::Header(n, v) => Credential::Header(n.clone(), v.clone()),
                    Credential::Query(q) => Credential::Query(q.clone()),
                    Credential::Tokens(t) => Credential::Tokens(t.clone()),
                },
                on_401: self.config.on_401,
                replay_cap: self.config.replay_cap,
            };
            f(&mut c);
            self.config = Arc::new(c);
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::new(inner, self.clone())
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AuthLayer");
        match &self.config.credential {
            Credential::Header(name, _) => d.field("header", name).field("value", &"[REDACTED]"),
            Credential::Query(_) => d.field("query", &"[REDACTED]"),
            Credential::Tokens(cache) => d.field("tokens", cache),
        };
        d.field("on_401", &self.config.on_401)
            .field("replay_cap", &self.config.replay_cap)
            .finish()
    }
}
