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
    ) -> Pin<Box<dyn Future<Output = Result<(StatusCode, Bytes), TokenError>> + Send>>
    + Send
    + Sync;

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
                    .map_err(|e| TokenError::transport(e.into()))?;
                let resp = svc
                    .call(req.map(B::from))
                    .await
                    .map_err(|e| TokenError::transport(e.into()))?;
                let status = resp.status();
                let body = match Limited::new(resp.into_body(), max).collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                        return Err(TokenError::too_large(max));
                    }
                    Err(e) => return Err(TokenError::transport(e)),
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

    /// POSTs the form and parses the answer.
    async fn request(
        &self,
        form: String,
        basic: Option<HeaderValue>,
    ) -> Result<(Token, Option<SecretString>), TokenError> {
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
        let (status, body) = (self.send)(req, self.max_body).await?;
        parse_token_response(status, &body)
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
        let (token, _refresh) = self.endpoint.request(form::pairs(fields), basic).await?;
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
#[derive(Debug)]
pub struct RefreshTokenGrant {
    endpoint: TokenEndpoint,
    refresh: Mutex<SecretString>,
    client: Option<Client>,
    scope: Option<String>,
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
        let refresh = refresh_token.into();
        if refresh.is_empty() {
            return Err(InvalidCredential::empty("refresh token"));
        }
        if refresh.expose().chars().any(char::is_control) {
            return Err(InvalidCredential::control_character("refresh token"));
        }
        Ok(Self {
            endpoint,
            refresh: Mutex::new(refresh),
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

    /// The refresh token in use: the newest one the server sent.
    pub fn refresh_token(&self) -> SecretString {
        self.refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        let refresh = self.refresh_token();
        let mut fields = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ];
        if let Some(s) = &self.scope {
            fields.push(("scope", s));
        }
        let basic = self.client.as_ref().and_then(|c| c.apply(&mut fields));
        let (token, rotated) = self.endpoint.request(form::pairs(fields), basic).await?;
        if let Some(new) = rotated {
            let mut slot = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
            // Only replace the token this fetch spent (a concurrent fetch
            // through another cache may have rotated it already).
            if *slot == refresh {
                *slot = new;
                tracing::debug!("refresh token rotated");
            }
        }
        Ok(token)
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
