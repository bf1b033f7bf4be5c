//! A mock OAuth 2.0 token endpoint, and the API side that checks its tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::wiremock::{Request, Respond, ResponseTemplate};
use tokio::time::Instant;

/// A mock OAuth 2.0 authorization server (RFC 6749): it issues access tokens
/// for the `client_credentials` and `refresh_token` grants, lets them
/// expire after [`expires_in`](Self::expires_in), revokes them on
/// [`revoke`](Self::revoke), and counts every token request.
///
/// An issuer is a handle on shared state: its clones see the same tokens.
/// Mount a clone as the token endpoint's responder, guard the API's mocks
/// with [`require_bearer`](Self::require_bearer), and keep one to revoke
/// tokens and read counts.
///
/// The token endpoint answers a `POST` with a form body:
///
/// | request | answer |
/// |---|---|
/// | `grant_type=client_credentials` | `200` `{"access_token":"access-N","token_type":"Bearer","expires_in":S}` |
/// | `grant_type=refresh_token&refresh_token=R`, `R` live | the same, plus a new `"refresh_token"`; `R` is spent (rotation) |
/// | `refresh_token` with a spent, revoked or unknown `R` | `400` `{"error":"invalid_grant"}` |
/// | any other grant | `400` `{"error":"unsupported_grant_type"}` |
///
/// Client authentication is not checked. Tokens are `access-1`,
/// `access-2`, ... and `refresh-1`, ... in the order they were issued.
/// Expiry runs on `tokio::time::Instant`, that is on real time with
/// wiremock (which needs real sockets).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::wiremock::TokenIssuer;
/// use wiremock::matchers::{method, path};
/// use wiremock::{Mock, MockServer, ResponseTemplate};
///
/// let upstream = MockServer::start().await;
/// let issuer = TokenIssuer::new();
/// Mock::given(method("POST")).and(path("/oauth/token"))
///     .respond_with(issuer.clone())
///     .mount(&upstream).await;
/// Mock::given(path("/v1/me"))
///     .respond_with(issuer.require_bearer(ResponseTemplate::new(200)))
///     .mount(&upstream).await;
///
/// # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
/// #     .build_http::<String>();
/// # let send = |req| http.request(req);
/// let token_request = http::Request::post(format!("{}/oauth/token", upstream.uri()))
///     .header("content-type", "application/x-www-form-urlencoded")
///     .body("grant_type=client_credentials".to_owned())
///     .unwrap();
/// let answer = send(token_request).await.unwrap();
/// assert_eq!(answer.status(), 200);
/// assert_eq!(issuer.fetches(), 1);
/// let token = issuer.last_access_token().unwrap(); // "access-1"
///
/// let me = |bearer: &str| {
///     http::Request::get(format!("{}/v1/me", upstream.uri()))
///         .header("authorization", format!("Bearer {bearer}"))
///         .body(String::new())
///         .unwrap()
/// };
/// assert_eq!(send(me(&token)).await.unwrap().status(), 200);
/// assert!(issuer.revoke(&token));
/// assert_eq!(send(me(&token)).await.unwrap().status(), 401);
/// assert_eq!(send(me("made-up")).await.unwrap().status(), 401);
/// # }
/// ```
#[derive(Clone)]
pub struct TokenIssuer {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    expires_in: Option<Duration>,
    issued: usize,
    /// Access token -> when it expires.
    access: HashMap<String, Instant>,
    /// Refresh tokens not yet spent or revoked.
    refresh: Vec<String>,
    last_access: Option<String>,
    last_refresh: Option<String>,
    fetches: usize,
    client_credentials: usize,
    refreshes: usize,
}

/// How long tokens live unless [`TokenIssuer::expires_in`] says otherwise.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);

impl TokenIssuer {
    /// An issuer whose tokens live [`DEFAULT_EXPIRES_IN`] (one hour).
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// How long each access token lives, sent as `expires_in` (in seconds,
    /// rounded up) and enforced by [`require_bearer`](Self::require_bearer)
    /// to the millisecond.
    ///
    /// Default: [`DEFAULT_EXPIRES_IN`].
    #[must_use]
    pub fn expires_in(self, lifetime: Duration) -> Self {
        self.lock().expires_in = Some(lifetime);
        self
    }

    /// A live refresh token, as a user's login would have left the client
    /// with: the `refresh_token` to give a refresh-token grant.
    ///
    /// ```
    /// let issuer = parapet_testkit::wiremock::TokenIssuer::new();
    /// assert_eq!(issuer.login(), "refresh-1");
    /// ```
    #[must_use]
    pub fn login(&self) -> String {
        let mut state = self.lock();
        state.issued += 1;
        let token = format!("refresh-{}", state.issued);
        state.refresh.push(token.clone());
        state.last_refresh = Some(token.clone());
        token
    }

    /// Revokes an access or refresh token: from now on the API answers
    /// `401` for it, or the endpoint `invalid_grant`. Returns whether the
    /// token was live.
    ///
    /// ```
    /// let issuer = parapet_testkit::wiremock::TokenIssuer::new();
    /// let refresh = issuer.login();
    /// assert!(issuer.revoke(&refresh));
    /// assert!(!issuer.revoke(&refresh));
    /// ```
    #[allow(clippy::must_use_candidate)] // revoking is the point; the answer is optional
    pub fn revoke(&self, token: &str) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let was_live = state.access.remove(token).is_some_and(|at| at > now);
        let before = state.refresh.len();
        state.refresh.retain(|t| t != token);
        was_live || state.refresh.len() != before
    }

    /// Whether `token` is an access token that was issued, has not expired
    /// and was not revoked.
    ///
    /// ```
    /// let issuer = parapet_testkit::wiremock::TokenIssuer::new();
    /// assert!(!issuer.is_live("access-1"));
    /// ```
    #[must_use]
    pub fn is_live(&self, token: &str) -> bool {
        self.lock()
            .access
            .get(token)
            .is_some_and(|at| *at > Instant::now())
    }

    /// How many requests reached the token endpoint, answered or refused.
    #[must_use]
    pub fn fetches(&self) -> usize {
        self.lock().fetches
    }

    /// How many tokens the `client_credentials` grant issued.
    #[must_use]
    pub fn client_credentials_grants(&self) -> usize {
        self.lock().client_credentials
    }

    /// How many tokens the `refresh_token` grant issued.
    #[must_use]
    pub fn refresh_grants(&self) -> usize {
        self.lock().refreshes
    }

    /// The access token issued last, if any.
    #[must_use]
    pub fn last_access_token(&self) -> Option<String> {
        self.lock().last_access.clone()
    }

    /// The refresh token issued last (by [`login`](Self::login) or a
    /// refresh), if any.
    #[must_use]
    pub fn last_refresh_token(&self) -> Option<String> {
        self.lock().last_refresh.clone()
    }

    /// A responder for the API's mocks: `ok` when the request carries
    /// `Authorization: Bearer <token>` with a live token of this issuer,
    /// otherwise `401` with
    /// `WWW-Authenticate: Bearer error="invalid_token"`.
    #[must_use]
    pub fn require_bearer(&self, ok: ResponseTemplate) -> RequireBearer {
        RequireBearer {
            issuer: self.clone(),
            ok,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue(state: &mut State, with_refresh: bool) -> ResponseTemplate {
        let lifetime = state.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
        state.issued += 1;
        let n = state.issued;
        let access = format!("access-{n}");
        state
            .access
            .insert(access.clone(), Instant::now() + lifetime);
        state.last_access = Some(access.clone());
        let secs = lifetime
            .as_secs()
            .saturating_add(u64::from(lifetime.subsec_nanos() > 0));
        let refresh = if with_refresh {
            let token = format!("refresh-{n}");
            state.refresh.push(token.clone());
            state.last_refresh = Some(token.clone());
            format!(r#","refresh_token":"{token}""#)
        } else {
            String::new()
        };
        ResponseTemplate::new(200)
            .insert_header("cache-control", "no-store")
            .set_body_raw(
                format!(
                    r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":{secs}{refresh}}}"#
                ),
                "application/json",
            )
    }
}

impl Default for TokenIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        // Token values are test data, but still not printed.
        f.debug_struct("TokenIssuer")
            .field("live_access_tokens", &state.access.len())
            .field("fetches", &state.fetches)
            .finish_non_exhaustive()
    }
}

fn oauth_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400)
        .insert_header("cache-control", "no-store")
        .set_body_raw(format!(r#"{{"error":"{code}"}}"#), "application/json")
}

impl Respond for TokenIssuer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form_fields(&request.body);
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut state = self.lock();
        state.fetches += 1;
        match field("grant_type") {
            Some("client_credentials") => {
                state.client_credentials += 1;
                Self::issue(&mut state, false)
            }
            Some("refresh_token") => {
                let Some(presented) = field("refresh_token") else {
                    return oauth_error("invalid_request");
                };
                let before = state.refresh.len();
                state.refresh.retain(|t| t != presented);
                if state.refresh.len() == before {
                    return oauth_error("invalid_grant");
                }
                state.refreshes += 1;
                Self::issue(&mut state, true)
            }
            _ => oauth_error("unsupported_grant_type"),
        }
    }
}

/// The API side of a [`TokenIssuer`]: answers its template to requests
/// with a live bearer token, and `401` to the rest (see
/// [`TokenIssuer::require_bearer`]).
///
/// ```
/// use parapet_testkit::wiremock::TokenIssuer;
/// use wiremock::{Mock, ResponseTemplate, matchers::path};
///
/// let issuer = TokenIssuer::new();
/// let _mock = Mock::given(path("/v1/orders"))
///     .respond_with(issuer.require_bearer(ResponseTemplate::new(200).set_body_string("[]")));
/// ```
#[derive(Clone, Debug)]
pub struct RequireBearer {
    issuer: TokenIssuer,
    ok: ResponseTemplate,
}

impl Respond for RequireBearer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match token {
            Some(token) if self.issuer.is_live(token) => self.ok.clone(),
            _ => ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        }
    }
}

/// The fields of an `application/x-www-form-urlencoded` body, decoded.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let f = form_fields(b"grant_type=refresh_token&refresh_token=a%2Bb+c&x");
        assert_eq!(
            f,
            [
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), "a+b c".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
