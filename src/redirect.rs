//! Redirects: tower-http's `FollowRedirect` with parapet's policy; the
//! public account (what is followed, where the layer sits and why, the
//! default, the cost) is on [`RedirectPolicy`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::LOCATION;
use http::{Method, Request, Response, StatusCode, Uri};
use parapet_auth::{Auth, AuthLayer};
use parapet_core::{Attempt, BoxError, ReplayBody};
use parapet_trace::redact::RedactedUri;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::follow_redirect::FollowRedirect;
use tower_http::follow_redirect::policy::{
    Action, Attempt as Hop, FilterCredentials, Policy as FollowPolicy,
};

use crate::builder::ClientBuilder;
use crate::client::RequestBuilder;

/// The redirects a call follows: [`none`](Self::none) or
/// [`limited`](Self::limited) to a number of hops.
///
/// Set it for a client with [`ClientBuilder::redirect`], for one request
/// with [`RequestBuilder::redirect`], or put it in the extensions of a
/// request sent through [`Client`](crate::Client) as a `tower::Service`.
/// Default: [`limited(10)`](Self::limited), as reqwest (see below).
///
/// # What is followed
///
/// A 301, 302, 303, 307 or 308 with a `Location` (relative or absolute,
/// `http` or `https`), up to the policy's limit, with the
/// browsers' rules (tower-http's):
///
/// - 301 and 302 turn a POST into a GET without a body; 303 turns anything
///   but HEAD into a GET without a body (`Content-Type`, `Content-Length`,
///   `Content-Encoding` and `Transfer-Encoding` dropped with it);
/// - 307 and 308 (and 301/302 of other methods) keep the method and send
///   the same body again, which needs the body to be replayable
///   ([`ReplayBody`]): a body already in memory always is, a streamed one
///   while it is under the replay cap. When it is not, the redirect is
///   returned as it is, with [`RedirectNotFollowed`] saying so;
/// - a hop to another origin (scheme, host or port) drops `Authorization`,
///   `Cookie` and `Proxy-Authorization` (tower-http's `FilterCredentials`),
///   and the client's auth layer puts no credentials on it; once dropped,
///   they stay dropped for the rest of the chain, even back on the first
///   origin;
/// - an `https` URL never redirects to `http`: [`InsecureRedirect`];
/// - the same method and URL twice in one chain is [`RedirectLoop`], more
///   hops than the limit [`TooManyRedirects`]; neither is retried.
///
/// # Where it sits
///
/// ```text
/// request id → call span → deadline → retry → REDIRECT → attempt span → auth → throttle → ...
/// ```
///
/// - **Below the deadline**: every hop is spent from the call's budget.
/// - **Below retry**: a 503 from the hop's target comes back to the retry
///   layer, which sends the call again from its first URL (the redirect may
///   be different next time). Redirect errors are never retried
///   ([`retry_classifier`](crate::retry_classifier)).
/// - **Above the attempt span**: each hop is a request of its own on the
///   wire, so it gets its own attempt span, counted in the call span's
///   `attempts`; the hop carries an [`Attempt`] one higher than the request
///   it follows, so its `http.request.resend_count` counts it as a resend
///   (OpenTelemetry counts redirects as resends). The request id is a
///   header set above, copied to every hop.
/// - **Above auth, throttle, limits and the attempt timeout**: each hop
///   waits at the throttle and limiter of its own host, is bounded by its
///   own attempt timeout, and on its own origin gets a current token (and
///   the 401 re-send). Because auth sits below, it would put the token back
///   on a hop to another origin after `FilterCredentials` took it off: the
///   filter marks such a hop, and the auth layer is skipped for it.
///
/// # Default: up to 10 redirects
///
/// As reqwest, curl `-L`'s users and browsers expect: an API that moved a
/// resource (`301`), or answers a POST with `303 See Other`, works with a
/// plain `client.get(url)`. httpx does not follow by default, on the
/// grounds that a redirect is information the caller may want to see; set
/// [`RedirectPolicy::none`] on the builder for that behaviour (or per
/// request).
///
/// # Cost
///
/// tower-http's future keeps a copy of the request head (method, URI,
/// headers, extensions) for the next hop and a replay handle of the body,
/// and tags each response with the URL that answered (its `RequestUri`
/// extension, `tower_http::follow_redirect::RequestUri`): three
/// allocations per call (the header map's copy, the record), measured with
/// the in-memory bench (`facade_service`, 8 → 11 allocations besides the
/// two the decompression layer shows there). With
/// [`RedirectPolicy::none`] none of that happens: the request goes straight
/// through. With an auth layer, each attempt looks up one extension to know
/// whether it left the first origin.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use parapet::{Client, RedirectPolicy};
/// use parapet_testkit::{Reply, Server};
///
/// let api = Server::start().await;
/// api.on("/old").reply(Reply::status(301).header("location", "/new"));
/// api.on("/new").reply(Reply::ok().body("here"));
///
/// let client = Client::new().unwrap();
/// let resp = client.get(&api.url("/old")).send().await.unwrap();
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.text().await.unwrap(), "here");
///
/// // One request that wants to see the redirect itself.
/// let resp = client.get(&api.url("/old")).redirect(RedirectPolicy::none()).send().await.unwrap();
/// assert_eq!(resp.status(), 301);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RedirectPolicy {
    /// `None`: redirects are returned as they are.
    limit: Option<u32>,
}

impl RedirectPolicy {
    /// The default limit: 10 hops, as reqwest (browsers stop at 20, curl
    /// `-L` at 50).
    pub const DEFAULT_LIMIT: u32 = 10;

    /// Redirects are not followed: a 3xx is returned as the response, with
    /// [`RedirectNotFollowed`] in its extensions.
    #[must_use]
    pub const fn none() -> Self {
        Self { limit: None }
    }

    /// Follow at most `hops` redirects in one call; one more is
    /// [`TooManyRedirects`]. `limited(0)` makes any redirect that error.
    #[must_use]
    pub const fn limited(hops: u32) -> Self {
        Self { limit: Some(hops) }
    }

    /// The most redirects followed, or `None` when none are.
    #[must_use]
    pub const fn max_hops(&self) -> Option<u32> {
        self.limit
    }
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self::limited(Self::DEFAULT_LIMIT)
    }
}

impl ClientBuilder {
    /// Which redirects the client follows; a request may say otherwise with
    /// [`RequestBuilder::redirect`]. Default:
    /// [`RedirectPolicy::limited(10)`](RedirectPolicy::limited), as reqwest
    /// (httpx follows none by default; see [`RedirectPolicy`]).
    pub fn redirect(mut self, policy: RedirectPolicy) -> Self {
        self.layers.redirect = policy;
        self
    }
}

impl RequestBuilder {
    /// Which redirects this request follows, in place of the client's.
    /// Default: the client's ([`ClientBuilder::redirect`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet::{Client, RedirectNotFollowed, RedirectPolicy};
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/login").reply(Reply::status(302).header("location", "/home"));
    /// let client = Client::new().unwrap();
    /// let resp = client.post(&api.url("/login")).redirect(RedirectPolicy::none()).send().await.unwrap();
    /// assert_eq!(resp.status(), 302);
    /// assert!(RedirectNotFollowed::get(resp.extensions()).unwrap().is_disabled());
    /// # }
    /// ```
    pub fn redirect(self, policy: RedirectPolicy) -> Self {
        self.with(|req| {
            req.extensions_mut().insert(policy);
            Ok(())
        })
    }
}

/// A call was redirected more times than its [`RedirectPolicy`] allows.
/// [`Error::is_redirect`](crate::Error::is_redirect) is true; never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyRedirects {
    hops: u32,
}

impl TooManyRedirects {
    /// The redirects that were followed before the one refused.
    #[must_use]
    pub fn hops(&self) -> u32 {
        self.hops
    }
}

impl fmt::Display for TooManyRedirects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "too many redirects: {} followed", self.hops)
    }
}

impl std::error::Error for TooManyRedirects {}

/// A redirect led to a URL the call had already requested with the same
/// method. [`Error::is_redirect`](crate::Error::is_redirect) is true; never
/// retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectLoop {
    /// The URL, with credentials and sensitive query values redacted.
    url: String,
}

impl RedirectLoop {
    /// The URL reached twice, with user information and sensitive query
    /// values (`token`, `signature`, ...) redacted.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for RedirectLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redirect loop: {} was reached twice", self.url)
    }
}

impl std::error::Error for RedirectLoop {}

/// An `https` URL redirected to an `http` one, which would send the rest
/// of the call in clear text. [`Error::is_redirect`](crate::Error::is_redirect)
/// is true; never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureRedirect {
    /// The `http` URL, redacted.
    to: String,
}

impl InsecureRedirect {
    /// The `http` URL the redirect pointed to, redacted as in
    /// [`RedirectLoop::url`].
    #[must_use]
    pub fn to(&self) -> &str {
        &self.to
    }
}

impl fmt::Display for InsecureRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused to follow a redirect from https to {}: it would downgrade to plain http",
            self.to
        )
    }
}

impl std::error::Error for InsecureRedirect {}

/// Set on a redirect (a 301, 302, 303, 307 or 308 with a `Location`) that
/// was returned as the response instead of being followed, saying why.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use parapet::{Client, NotFollowedReason, RedirectNotFollowed};
/// use parapet_testkit::{Reply, Server};
///
/// let api = Server::start().await;
/// api.on("/files").reply(Reply::status(307).header("location", "ftp://files.test/x"));
/// let resp = Client::new().unwrap().get(&api.url("/files")).send().await.unwrap();
/// assert_eq!(resp.status(), 307);
/// let why = RedirectNotFollowed::get(resp.extensions()).unwrap();
/// assert_eq!(why.reason(), NotFollowedReason::UnsupportedScheme);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RedirectNotFollowed {
    reason: NotFollowedReason,
}

/// Why a redirect was not followed; see [`RedirectNotFollowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotFollowedReason {
    /// The call's [`RedirectPolicy`] is [`none`](RedirectPolicy::none).
    Disabled,
    /// The redirect keeps the method and body (307, 308, or 301/302 of
    /// anything but POST) and the body cannot be sent again: a streamed
    /// body past the replay cap, or one whose stream failed.
    BodyNotReplayable,
    /// The `Location` is not an `http` or `https` URL.
    UnsupportedScheme,
}

impl RedirectNotFollowed {
    /// Why.
    #[must_use]
    pub fn reason(&self) -> NotFollowedReason {
        self.reason
    }

    /// The call's policy follows no redirects.
    #[must_use]
    pub fn is_disabled(&self) -> bool {
        self.reason == NotFollowedReason::Disabled
    }

    /// The body could not be sent again to the new location.
    #[must_use]
    pub fn is_body_not_replayable(&self) -> bool {
        self.reason == NotFollowedReason::BodyNotReplayable
    }

    /// The value in these (response) extensions, if any.
    #[must_use]
    pub fn get(ext: &http::Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }
}

impl fmt::Display for RedirectNotFollowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.reason {
            NotFollowedReason::Disabled => "redirect not followed: the policy follows none",
            NotFollowedReason::BodyNotReplayable => {
                "redirect not followed: the request body cannot be sent again"
            }
            NotFollowedReason::UnsupportedScheme => {
                "redirect not followed: the location is not an http or https URL"
            }
        })
    }
}

/// Marks a hop that left the call's first origin: the auth layer puts no
/// credentials on it ([`OriginAuth`]). Carried to the later hops with the
/// other extensions.
#[derive(Debug, Clone, Copy)]
struct OtherOrigin;

/// The redirect layer: [`FollowRedirect`] with [`Hops`] as its policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RedirectLayer {
    default: RedirectPolicy,
}

impl RedirectLayer {
    pub(crate) fn new(default: RedirectPolicy) -> Self {
        Self { default }
    }
}

impl<S: Clone> Layer<S> for RedirectLayer {
    type Service = Redirect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Redirect {
            follow: FollowRedirect::with_policy(inner, Hops::new(self.default)),
            default: self.default,
        }
    }
}

/// The service of [`RedirectLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Redirect<S> {
    follow: FollowRedirect<S, Hops>,
    default: RedirectPolicy,
}

impl<S, B> Service<Request<ReplayBody>> for Redirect<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError> + Clone,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = RedirectFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.follow.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let policy = req
            .extensions()
            .get::<RedirectPolicy>()
            .copied()
            .unwrap_or(self.default);
        if policy.limit.is_none() {
            // NOTE: `FollowRedirect::poll_ready` forwarded to this inner
            // service, so it is the ready one.
            return RedirectFuture {
                inner: Inner::Direct {
                    f: self.follow.get_mut().call(req),
                },
                note: Note::Disabled,
            };
        }
        let note = Note::Follow {
            body: req.body().try_replay().ok(),
            post: req.method() == Method::POST,
        };
        RedirectFuture {
            inner: Inner::Follow {
                f: self.follow.call(req),
            },
            note,
        }
    }
}

/// What the future needs to say why a redirect came back unfollowed.
enum Note {
    Disabled,
    Follow {
        /// A replay handle of the first request's body: if it cannot be
        /// replayed at the end, a body-keeping redirect could not be
        /// followed.
        body: Option<ReplayBody>,
        post: bool,
    },
}

impl Note {
    fn reason<B>(&self, res: &Response<B>) -> Option<NotFollowedReason> {
        let status = res.status();
        let keeps_body = match status {
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => true,
            StatusCode::SEE_OTHER => false,
            _ => return None,
        };
        let location = res.headers().get(LOCATION)?;
        match self {
            Self::Disabled => Some(NotFollowedReason::Disabled),
            Self::Follow { body, post } => {
                if !location_scheme_ok(location.as_bytes()) {
                    return Some(NotFollowedReason::UnsupportedScheme);
                }
                let keeps_body = keeps_body
                    && !(*post
                        && status != StatusCode::TEMPORARY_REDIRECT
                        && status != StatusCode::PERMANENT_REDIRECT);
                let replayable = body.as_ref().is_none_or(ReplayBody::can_replay);
                (keeps_body && !replayable).then_some(NotFollowedReason::BodyNotReplayable)
            }
        }
    }
}

pin_project! {
    /// The response future of [`Redirect`].
    pub(crate) struct RedirectFuture<S>
    where
        S: Service<Request<ReplayBody>>,
    {
        #[pin]
        inner: Inner<S>,
        note: Note,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<S>
    where
        S: Service<Request<ReplayBody>>,
    {
        Follow { #[pin] f: tower_http::follow_redirect::ResponseFuture<S, ReplayBody, Hops> },
        Direct { #[pin] f: S::Future },
    }
}

impl<S, B> Future for RedirectFuture<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError> + Clone,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = match this.inner.project() {
            InnerProj::Follow { f } => ready!(f.poll(cx))?,
            InnerProj::Direct { f } => ready!(f.poll(cx))?,
        };
        if status_is_redirect(res.status()) {
            if let Some(reason) = this.note.reason(&res) {
                res.extensions_mut().insert(RedirectNotFollowed { reason });
            }
        }
        Poll::Ready(Ok(res))
    }
}

fn status_is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Whether a `Location` value leads to `http` or `https`: relative
/// references do (they keep the scheme of the URL they are resolved
/// against), absolute ones when they name one of the two.
fn location_scheme_ok(location: &[u8]) -> bool {
    // RFC 3986 §3.1: a scheme is a letter, then letters, digits, `+`, `-`
    // or `.`, then `:`; what comes before the first `/`, `?` or `#` only.
    let end = location
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#' | b':'))
        .unwrap_or(location.len());
    match location.get(end) {
        Some(b':') => {}
        _ => return true,
    }
    let scheme = location.get(..end).unwrap_or_default();
    let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    !is_scheme || scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")
}

/// The per-call policy given to tower-http's `FollowRedirect` (cloned from
/// the layer's for each call).
pub(crate) struct Hops {
    limit: Option<u32>,
    /// Redirects followed so far.
    hops: u32,
    /// Whether `on_request` has seen the first request.
    started: bool,
    /// The attempt the first request was (the retry layer's), which the
    /// hops count on from.
    base: Attempt,
    /// Method and URL of every request of the chain, filled from the first
    /// redirect on (a call without one allocates nothing).
    seen: Vec<(Method, Uri)>,
    /// A replay handle of the body the next hop would send, to tell
    /// whether it can be.
    body: Option<ReplayBody>,
    other_origin: bool,
    filter: FilterCredentials,
}

impl Hops {
    fn new(default: RedirectPolicy) -> Self {
        Self {
            limit: default.limit,
            hops: 0,
            started: false,
            base: Attempt::new(1, 1),
            seen: Vec::new(),
            body: None,
            other_origin: false,
            // Extensions are the layers' per-call state (the deadline, the
            // call span's counters, per-request settings), not credentials:
            // kept. The auth layer is kept off other origins by
            // `OtherOrigin` instead.
            filter: FilterCredentials::new().keep_all_extensions(),
        }
    }
}

impl Clone for Hops {
    /// The layer's template: the call's state starts afresh.
    fn clone(&self) -> Self {
        Self {
            limit: self.limit,
            hops: 0,
            started: false,
            base: Attempt::new(1, 1),
            seen: Vec::new(),
            body: None,
            other_origin: false,
            filter: self.filter.clone(),
        }
    }
}

impl fmt::Debug for Hops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hops")
            .field("limit", &self.limit)
            .field("hops", &self.hops)
            .finish_non_exhaustive()
    }
}

impl FollowPolicy<ReplayBody, BoxError> for Hops {
    fn redirect(&mut self, hop: &Hop<'_>) -> Result<Action, BoxError> {
        let Some(limit) = self.limit else {
            return Ok(Action::Stop);
        };
        let to = hop.location();
        if !matches!(to.scheme_str(), Some("http" | "https")) {
            return Ok(Action::Stop);
        }
        if hop.previous().scheme_str() == Some("https") && to.scheme_str() == Some("http") {
            return Err(InsecureRedirect {
                to: RedactedUri::new(to).to_string(),
            }
            .into());
        }
        let keeps_body =
            hop.method() == hop.previous_method() && hop.status() != StatusCode::SEE_OTHER;
        if keeps_body {
            if self.body.as_ref().is_some_and(|b| !b.can_replay()) {
                return Ok(Action::Stop);
            }
        } else {
            self.body = None;
        }
        if self.seen.is_empty() {
            self.seen
                .push((hop.previous_method().clone(), hop.previous().clone()));
        }
        if self.seen.iter().any(|(m, u)| m == hop.method() && u == to) {
            return Err(RedirectLoop {
                url: RedactedUri::new(to).to_string(),
            }
            .into());
        }
        if self.hops >= limit {
            return Err(TooManyRedirects { hops: self.hops }.into());
        }
        self.seen.push((hop.method().clone(), to.clone()));
        if !same_origin(hop.previous(), to) {
            self.other_origin = true;
        }
        self.hops += 1;
        FollowPolicy::<ReplayBody, BoxError>::redirect(&mut self.filter, hop)
    }

    fn on_request(&mut self, req: &mut Request<ReplayBody>) {
        if !self.started {
            self.started = true;
            if let Some(p) = req.extensions().get::<RedirectPolicy>() {
                self.limit = p.limit;
            }
            if let Some(a) = Attempt::get(req.extensions()) {
                self.base = a;
            }
            self.body = req.body().try_replay().ok();
            return;
        }
        FollowPolicy::<ReplayBody, BoxError>::on_request(&mut self.filter, req);
        let ext = req.extensions_mut();
        if self.other_origin {
            ext.insert(OtherOrigin);
        }
        ext.insert(Attempt::new(
            self.base.number().saturating_add(self.hops),
            self.base.max().saturating_add(self.hops),
        ));
    }

    fn clone_body(&self, body: &ReplayBody) -> Option<ReplayBody> {
        body.try_replay().ok()
    }
}

/// Same scheme, host and port (the default port of the scheme when none is
/// given).
fn same_origin(a: &Uri, b: &Uri) -> bool {
    let port = |u: &Uri| {
        u.port_u16().or(match u.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        })
    };
    a.scheme() == b.scheme()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && port(a) == port(b)
}

/// The auth layer, skipped for a hop that left the call's first origin and
/// for a request that carries its own `Authorization`.
#[derive(Debug, Clone)]
pub(crate) struct OriginAuthLayer(pub(crate) AuthLayer);

impl<S: Clone> Layer<S> for OriginAuthLayer {
    type Service = OriginAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginAuth {
            auth: self.0.layer(inner.clone()),
            plain: inner,
        }
    }
}

/// The service of [`OriginAuthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct OriginAuth<S> {
    auth: Auth<S>,
    plain: S,
}

impl<S, B> Service<Request<ReplayBody>> for OriginAuth<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = OriginAuthFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Either may be called: both must be ready.
        ready!(Service::<Request<ReplayBody>>::poll_ready(
            &mut self.auth,
            cx
        ))?;
        self.plain.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        // A hop to another origin gets no credentials; a request that brings
        // its own `Authorization` (`bearer_auth`, `basic_auth`, a header
        // set by hand) is sent with it.
        if req.extensions().get::<OtherOrigin>().is_some()
            || req.headers().contains_key(http::header::AUTHORIZATION)
        {
            OriginAuthFuture::Plain {
                f: self.plain.call(req),
            }
        } else {
            OriginAuthFuture::Auth {
                f: self.auth.call(req),
            }
        }
    }
}

pin_project! {
    /// The response future of [`OriginAuth`].
    #[project = OriginAuthProj]
    pub(crate) enum OriginAuthFuture<S>
    where
        S: Service<Request<ReplayBody>>,
    {
        Auth { #[pin] f: parapet_auth::ResponseFuture<S> },
        Plain { #[pin] f: S::Future },
    }
}

impl<S, B> Future for OriginAuthFuture<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OriginAuthProj::Auth { f } => f.poll(cx),
            OriginAuthProj::Plain { f } => f.poll(cx).map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Uri {
        s.parse().unwrap_or_default()
    }

    /// Redirects `https://a.test/...` to `to`, answers anything else 200;
    /// returns the redirect layer's verdict.
    async fn follow(to: &'static str) -> Result<Response<()>, BoxError> {
        let server = tower::service_fn(move |req: Request<ReplayBody>| async move {
            let res = if req.uri().host() == Some("a.test") && req.uri().path() == "/" {
                Response::builder().status(302).header(LOCATION, to)
            } else {
                Response::builder()
            };
            Ok::<_, BoxError>(res.body(()).unwrap_or_default())
        });
        let svc = RedirectLayer::new(RedirectPolicy::default()).layer(server);
        let req = Request::get("https://a.test/")
            .body(ReplayBody::empty())
            .unwrap_or_default();
        tower::ServiceExt::oneshot(svc, req).await
    }

    #[tokio::test]
    async fn https_never_redirects_to_http() {
        for to in ["http://a.test/x", "http://b.test/", "HTTP://a.test/"] {
            let err = follow(to).await.err().unwrap_or_else(|| "followed".into());
            let insecure = err.downcast_ref::<InsecureRedirect>();
            assert!(insecure.is_some(), "{to}: {err}");
        }
        for to in ["https://b.test/x", "/x", "//b.test/y"] {
            let res = follow(to).await.ok().map(|r| r.status());
            assert_eq!(res, Some(StatusCode::OK), "{to}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_effective_port() {
        assert!(same_origin(
            &u("https://a.test/x"),
            &u("https://a.test:443/y")
        ));
        assert!(same_origin(&u("http://A.test/"), &u("http://a.test:80/")));
        assert!(!same_origin(&u("https://a.test/"), &u("http://a.test/")));
        assert!(!same_origin(&u("http://a.test/"), &u("http://b.test/")));
        assert!(!same_origin(
            &u("http://a.test:8080/"),
            &u("http://a.test/")
        ));
    }

    #[test]
    fn location_schemes_other_than_http_are_recognised() {
        for ok in [
            &b"/next"[..],
            b"next?u=ftp://x",
            b"//other.test/x",
            b"https://a.test/",
            b"HTTP://a.test/",
            b"",
        ] {
            assert!(location_scheme_ok(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"ftp://a.test/"[..],
            b"file:///etc/passwd",
            b"javascript:alert(1)",
        ] {
            assert!(!location_scheme_ok(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
