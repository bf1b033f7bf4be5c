//! The client and its request builder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body::Body as HttpBody;
use parapet_core::{BoxError, Deadline, Idempotency, IdempotencyKey, ReplayBody};
use serde::Serialize;
use tower::{Service, ServiceExt};

use crate::body::Body;
use crate::error::Error;
use crate::overrides::BodyLimit;
use crate::response::Response;

/// The boxed future of one call through the stack.
type StackFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

/// The assembled stack, its type erased so that [`Client`] has one type
/// whatever its configuration.
///
/// Unlike `tower::util::BoxCloneSyncService`, cloning the client does not
/// clone the stack (a `Client` is one `Arc`), and a call does not allocate a
/// clone of it either: the concrete stack is cloned on the call's own
/// frame, as tower's readiness contract asks, driven ready and called; only
/// the response future is boxed.
pub(crate) struct Stack(Box<dyn ErasedStack>);

impl Stack {
    pub(crate) fn new(svc: impl ErasedStack + 'static) -> Self {
        Self(Box::new(svc))
    }

    fn call(&self, req: Request<ReplayBody>) -> StackFuture {
        ErasedStack::call(&*self.0, req)
    }
}

pub(crate) trait ErasedStack: Send + Sync {
    fn call(&self, req: Request<ReplayBody>) -> StackFuture;
}

impl<S> ErasedStack for S
where
    S: Service<Request<ReplayBody>, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request<ReplayBody>) -> StackFuture {
        let mut svc = self.clone();
        // Every parapet layer's `poll_ready` only forwards, and hyper-util's
        // client is always ready, so the first look nearly always finds the
        // stack ready and the call goes ahead at once. A transport that is
        // not ready is waited for inside the future, with the caller's
        // waker (`oneshot` polls readiness again).
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Service::poll_ready(&mut svc, &mut cx) {
            Poll::Ready(Ok(())) => Box::pin(Service::call(&mut svc, req)),
            Poll::Ready(Err(e)) => Box::pin(std::future::ready(Err(e))),
            Poll::Pending => Box::pin(svc.oneshot(req)),
        }
    }
}

/// A resilient HTTP client: the recommended stack of parapet layers over
/// hyper-util, built by [`ClientBuilder`](crate::ClientBuilder).
///
/// `Clone + Send + Sync` and cheap to clone (the shared state is behind
/// `Arc`s): hand clones to tasks and to axum state freely.
///
/// Two ways to use it:
/// - the convenience API: [`get`](Self::get), [`post`](Self::post), ...,
///   [`request`](Self::request) give a [`RequestBuilder`] whose
///   [`send`](RequestBuilder::send) returns a [`Response`];
/// - as a `tower::Service<http::Request<B>>`, to add your own layers on top.
///   Relative URIs are resolved against the base URL and the default headers
///   are added in both cases.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) stack: Stack,
    pub(crate) base: Option<Uri>,
    pub(crate) default_headers: HeaderMap,
    pub(crate) replay_cap: usize,
}

impl Client {
    pub(crate) fn from_parts(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// A client with the default configuration; see
    /// [`ClientBuilder`](crate::ClientBuilder) for what that is.
    ///
    /// # Errors
    ///
    /// Never with the defaults; the signature matches
    /// [`ClientBuilder::build`](crate::ClientBuilder::build).
    pub fn new() -> Result<Self, crate::InvalidConfig> {
        crate::ClientBuilder::new().build()
    }

    /// A builder to configure a client.
    pub fn builder() -> crate::ClientBuilder {
        crate::ClientBuilder::new()
    }

    /// Starts a request with any method. `url` is a path resolved against
    /// the base URL, or an absolute URL: a string (`&str`, `&String`),
    /// parsed on each call, or an [`http::Uri`] parsed once beforehand
    /// (`Uri`, `&Uri`); see [`IntoUrl`].
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        let uri = url.resolve(self);
        RequestBuilder {
            client: self.clone(),
            parts: uri.map(|uri| {
                let mut req = Request::new(());
                *req.method_mut() = method;
                *req.uri_mut() = uri;
                req
            }),
            body: ReplayBody::empty(),
        }
    }

    /// Starts a GET; `url` as for [`request`](Self::request).
    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a POST; `url` as for [`request`](Self::request).
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Starts a PUT; `url` as for [`request`](Self::request).
    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// Starts a PATCH; `url` as for [`request`](Self::request).
    pub fn patch(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// Starts a DELETE; `url` as for [`request`](Self::request).
    pub fn delete(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// An `OAuth2` token endpoint reached through this client, for
    /// [`ClientCredentialsGrant`](parapet_auth::ClientCredentialsGrant) and
    /// [`RefreshTokenGrant`](parapet_auth::RefreshTokenGrant). Build the
    /// client for the token endpoint *without* the auth layer it feeds;
    /// `url` may be relative to this client's base URL.
    ///
    /// # Errors
    ///
    /// When `url` does not resolve to an absolute `http` or `https` URL.
    pub fn token_endpoint(&self, url: &str) -> Result<parapet_auth::TokenEndpoint, Error> {
        let uri = self.resolve(url)?;
        parapet_auth::TokenEndpoint::new::<_, ReplayBody, _>(self.clone(), &uri.to_string())
            .map_err(Error::request)
    }

    fn resolve(&self, url: &str) -> Result<Uri, Error> {
        if let Some(scheme) = scheme_of(url) {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(Error::request(UnsupportedScheme {
                    scheme: scheme.chars().take(32).collect(),
                }));
            }
        }
        let uri: Uri = if scheme_of(url).is_some() || url.starts_with('/') {
            url.parse()
        } else {
            // A path relative to the base, like `users/7` or
            // `search?next=https://x.test/`.
            format!("/{url}").parse()
        }
        .map_err(Error::request)?;
        self.absolute(uri)
    }

    /// An already parsed URI: absolute as it is, relative (a path and
    /// query) resolved against the base URL as a string's would be.
    fn resolve_uri(&self, uri: Uri) -> Result<Uri, Error> {
        if uri.scheme().is_none() && uri.authority().is_some() {
            // `Uri` parses `api.example.com` or `users` as an authority:
            // sending it to the base URL's host would lose what was meant.
            return Err(Error::request(format!(
                "URL {uri} has a host but no scheme: write it like https://{uri}/ or, for a \
                 path, /{uri}"
            )));
        }
        if uri.scheme().is_some() {
            check_scheme(&uri).map_err(Error::request)?;
        }
        self.absolute(uri)
    }

    fn absolute(&self, uri: Uri) -> Result<Uri, Error> {
        if uri.scheme().is_some() {
            return Ok(uri);
        }
        let Some(base) = &self.shared.base else {
            return Err(Error::request(format!(
                "relative URL {uri} and no base URL is configured"
            )));
        };
        let base_path = base.path().trim_end_matches('/');
        let path_and_query = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let sep = if path_and_query.starts_with('/') {
            ""
        } else {
            "/"
        };
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(
            format!("{base_path}{sep}{path_and_query}")
                .parse()
                .map_err(Error::request)?,
        );
        Uri::from_parts(parts).map_err(Error::request)
    }

    /// The most bytes of a streamed request body kept for a re-send
    /// ([`ClientBuilder::replay_cap`](crate::ClientBuilder::replay_cap)).
    pub(crate) fn replay_cap(&self) -> usize {
        self.shared.replay_cap
    }

    fn prepare<B>(&self, req: Request<B>) -> Result<Request<ReplayBody>, Error>
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        if parts.uri.scheme().is_none() {
            parts.uri = self.absolute(parts.uri)?;
        }
        check_scheme(&parts.uri).map_err(Error::request)?;
        if parts
            .uri
            .authority()
            .is_some_and(|a| a.as_str().contains('@'))
        {
            userinfo_to_basic_auth(&mut parts)?;
        }
        for (name, value) in &self.shared.default_headers {
            if !parts.headers.contains_key(name) {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        Ok(Request::from_parts(
            parts,
            into_replay(body, self.shared.replay_cap),
        ))
    }
}

/// What [`Client::get`] and the other request methods take as a URL: a
/// string (`&str`, `&String`) or an [`http::Uri`] (`Uri`, `&Uri`).
///
/// A string is parsed on every call; a `Uri` parsed once and kept (a
/// `static`, a field of your API client) is not parsed again. Either is
/// resolved the same way: an absolute URL (`https://host/path`) is used as
/// it is, a relative one (`orders/7`, `/orders/7?page=2`) is appended to the
/// base URL's path.
///
/// ```
/// use http::Uri;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
/// # let api = parapet_testkit::Server::start().await;
/// # api.on("/v1/orders").reply(parapet_testkit::Reply::json("[]"));
/// let client = parapet::Client::builder().base_url(api.url("/v1")).build().unwrap();
///
/// // Parsed once, sent many times.
/// let orders: Uri = "/orders?page=1".parse().unwrap();
/// for _ in 0..3 {
///     client.get(&orders).send().await?.error_for_status().await?;
/// }
/// assert_eq!(api.arrivals_for("/v1/orders").len(), 3);
/// # Ok(()) }
/// ```
///
/// The trait is sealed: only the types above implement it. A `String` is
/// lent (`&url`, `&format!(..)`), not given: were it taken by value too,
/// clippy would ask every `&String` call site to drop its `&`.
pub trait IntoUrl: into_url::Sealed {}

mod into_url {
    use http::Uri;

    use super::Client;
    use crate::error::Error;

    /// Resolves the URL against the client's base URL.
    pub trait Sealed {
        fn resolve(self, client: &Client) -> Result<Uri, Error>;
    }

    impl Sealed for &str {
        fn resolve(self, client: &Client) -> Result<Uri, Error> {
            client.resolve(self)
        }
    }

    impl Sealed for &String {
        fn resolve(self, client: &Client) -> Result<Uri, Error> {
            client.resolve(self)
        }
    }

    impl Sealed for Uri {
        fn resolve(self, client: &Client) -> Result<Uri, Error> {
            client.resolve_uri(self)
        }
    }

    impl Sealed for &Uri {
        fn resolve(self, client: &Client) -> Result<Uri, Error> {
            client.resolve_uri(self.clone())
        }
    }
}

impl IntoUrl for &str {}
impl IntoUrl for &String {}
impl IntoUrl for Uri {}
impl IntoUrl for &Uri {}

/// The response with its body bounded to `limit` bytes, when the request
/// set a [`BodyLimit`] (one more box then; none otherwise).
fn limited(resp: http::Response<Body>, limit: Option<usize>) -> http::Response<Body> {
    match limit {
        Some(limit) => resp.map(|b| Body::new(http_body_util::Limited::new(b, limit))),
        None => resp,
    }
}

/// A request body as a [`ReplayBody`]. Bodies whose bytes are already in
/// memory (`ReplayBody`, `Full<Bytes>`, `Bytes`, `String`, `Vec<u8>`,
/// `&'static str`, `Empty<Bytes>`) stay replayable whatever their size, as
/// they do through the convenience API: keeping them costs nothing more.
/// Any other body is streamed and kept up to `cap` bytes for a re-send.
fn into_replay<B>(body: B, cap: usize) -> ReplayBody
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    let any: &mut dyn std::any::Any = &mut slot;
    if let Some(replay) = any
        .downcast_mut::<Option<ReplayBody>>()
        .and_then(Option::take)
    {
        return replay;
    }
    if let Some(full) = any
        .downcast_mut::<Option<http_body_util::Full<Bytes>>>()
        .and_then(Option::take)
    {
        return ReplayBody::from_bytes(full_bytes(full));
    }
    if let Some(bytes) = any.downcast_mut::<Option<Bytes>>().and_then(Option::take) {
        return ReplayBody::from_bytes(bytes);
    }
    if let Some(s) = any.downcast_mut::<Option<String>>().and_then(Option::take) {
        return ReplayBody::from_bytes(Bytes::from(s));
    }
    if let Some(v) = any.downcast_mut::<Option<Vec<u8>>>().and_then(Option::take) {
        return ReplayBody::from_bytes(Bytes::from(v));
    }
    if let Some(s) = any
        .downcast_mut::<Option<&'static str>>()
        .and_then(Option::take)
    {
        return ReplayBody::from_bytes(Bytes::from_static(s.as_bytes()));
    }
    if any
        .downcast_mut::<Option<http_body_util::Empty<Bytes>>>()
        .is_some()
    {
        return ReplayBody::empty();
    }
    match slot {
        Some(body) => ReplayBody::new(body, cap),
        None => ReplayBody::empty(),
    }
}

/// The bytes of a `Full` body: it yields them all in its first frame,
/// without waiting.
fn full_bytes(mut full: http_body_util::Full<Bytes>) -> Bytes {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(&mut full).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The URI scheme `url` starts with (RFC 3986 §3.1: a letter, then
/// letters, digits, `+`, `-` or `.`, then `:`), if any: then it is
/// absolute. Only what comes before the first `/`, `?` or `#` is looked
/// at, so a relative path whose query holds a URL
/// (`search?next=https://x.test/`) has none.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Refuses a URL whose scheme the client cannot speak. Checked before the
/// request enters the stack, so a configuration mistake is never retried
/// as if it were a connect failure.
pub(crate) fn check_scheme(uri: &Uri) -> Result<(), UnsupportedScheme> {
    match uri.scheme_str() {
        Some("http" | "https") => Ok(()),
        other => Err(UnsupportedScheme {
            scheme: other.unwrap_or_default().chars().take(32).collect(),
        }),
    }
}

/// A URL whose scheme is not `http` or `https` (`ftp://`, `file://`, a
/// host name mistaken for a scheme in `localhost:8080/x`). The error's
/// [`Error::is_request`] is true, and it is never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedScheme {
    scheme: String,
}

impl UnsupportedScheme {
    /// The scheme that was given (at most 32 characters of it).
    #[must_use]
    pub fn scheme(&self) -> &str {
        &self.scheme
    }
}

impl fmt::Display for UnsupportedScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported URL scheme `{}`: only http and https are supported (a relative path \
             with a colon in its first segment needs `./` in front)",
            self.scheme.escape_debug()
        )
    }
}

impl std::error::Error for UnsupportedScheme {}

/// Moves `user:password@` out of the URL into a sensitive
/// `Authorization: Basic` header (unless the request has one already), as
/// browsers, curl and reqwest do.
///
/// Credentials must never travel further down the stack inside the URI:
/// the connection pool keys and logs by authority, and the URI reaches
/// every layer's spans and errors.
fn userinfo_to_basic_auth(parts: &mut http::request::Parts) -> Result<(), Error> {
    let (uri, basic) = split_userinfo(std::mem::take(&mut parts.uri)).map_err(Error::request)?;
    parts.uri = uri;
    if let Some(value) = basic {
        if !parts.headers.contains_key(http::header::AUTHORIZATION) {
            parts.headers.insert(http::header::AUTHORIZATION, value);
        }
    }
    Ok(())
}

/// Takes `user:password@` out of `uri`: the URI without it, and the
/// sensitive `Basic` header value it makes (none when there was none).
pub(crate) fn split_userinfo(uri: Uri) -> Result<(Uri, Option<HeaderValue>), &'static str> {
    use base64::Engine as _;

    let Some(authority) = uri.authority() else {
        return Ok((uri, None));
    };
    let Some((userinfo, host)) = authority.as_str().rsplit_once('@') else {
        return Ok((uri, None));
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = format!("{}:{}", percent_decode(user), percent_decode(password));
    let host: http::uri::Authority = host.parse().map_err(|_| "the URL's host is not valid")?;
    let mut uri_parts = uri.into_parts();
    uri_parts.authority = Some(host);
    let uri = Uri::from_parts(uri_parts).map_err(|_| "the URL is not valid")?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "the URL's credentials are not valid")?;
    value.set_sensitive(true);
    Ok((uri, Some(value)))
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |c: Option<&u8>| c.and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "base",
                &self
                    .shared
                    .base
                    .as_ref()
                    .map(|b| DisplayAsDebug(parapet_trace::redact::RedactedUri::new(b))),
            )
            .finish_non_exhaustive()
    }
}

/// Formats a value's `Display` where `Debug` is asked for.
pub(crate) struct DisplayAsDebug<T>(pub(crate) T);

impl<T: fmt::Display> fmt::Debug for DisplayAsDebug<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl<B> Service<Request<B>> for Client
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: the stack is driven ready inside each call's future
    /// (every parapet layer waits there, never in `poll_ready`).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.prepare(req) {
            Ok(req) => ResponseFuture {
                limit: BodyLimit::get(req.extensions()),
                inner: Inner::Call(self.shared.stack.call(req)),
            },
            Err(e) => ResponseFuture {
                limit: None,
                inner: Inner::Failed(Some(e)),
            },
        }
    }
}

/// The future of [`Client`]'s `Service::call`.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: Inner,
    /// The request's [`BodyLimit`], applied to the response body.
    limit: Option<usize>,
}

enum Inner {
    Call(StackFuture),
    Failed(Option<Error>),
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Call(f) => f
                .as_mut()
                .poll(cx)
                .map(|r| r.map(|resp| limited(resp, this.limit))),
            Inner::Failed(e) => Poll::Ready(Err(match e.take() {
                Some(e) => Box::new(e),
                None => "response future polled after completion".into(),
            })),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A request being put together; [`send`](Self::send) sends it.
///
/// Mistakes (an invalid header value, a query that does not serialize) are
/// kept and returned by `send` as an [`Error`] for which
/// [`is_request`](Error::is_request) is true; nothing panics.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    pub(crate) client: Client,
    pub(crate) parts: Result<Request<()>, Error>,
    pub(crate) body: ReplayBody,
}

impl RequestBuilder {
    pub(crate) fn with(mut self, f: impl FnOnce(&mut Request<()>) -> Result<(), Error>) -> Self {
        if let Ok(req) = &mut self.parts {
            if let Err(e) = f(req) {
                self.parts = Err(e);
            }
        }
        self
    }

    /// Adds a header (replacing one of the same name).
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>,
    {
        self.with(|req| {
            let name = name.try_into().map_err(|e| Error::request(e.into()))?;
            let value = value
                .try_into()
                .map_err(|_| Error::invalid_header_value(&name))?;
            req.headers_mut().insert(name, value);
            Ok(())
        })
    }

    /// Adds every header of `headers` (replacing those of the same names).
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.with(|req| {
            for (name, value) in headers {
                if let Some(name) = name {
                    req.headers_mut().insert(name, value);
                }
            }
            Ok(())
        })
    }

    /// Appends query parameters serialized from `query` (a struct, a map or
    /// a slice of pairs).
    pub fn query<T: Serialize + ?Sized>(self, query: &T) -> Self {
        self.with(|req| {
            let encoded = serde_urlencoded::to_string(query).map_err(Error::request)?;
            if encoded.is_empty() {
                return Ok(());
            }
            let uri = req.uri().clone();
            let path = uri.path();
            let pq = match uri.query() {
                Some(q) if !q.is_empty() => format!("{path}?{q}&{encoded}"),
                _ => format!("{path}?{encoded}"),
            };
            let mut parts = uri.into_parts();
            parts.path_and_query = Some(pq.parse().map_err(Error::request)?);
            *req.uri_mut() = Uri::from_parts(parts).map_err(Error::request)?;
            Ok(())
        })
    }

    /// A JSON body (and `Content-Type: application/json`).
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.body = ReplayBody::from(bytes);
                self.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            }
            Err(e) => {
                self.parts = Err(Error::request(e));
                self
            }
        }
    }

    /// A form body (and `Content-Type: application/x-www-form-urlencoded`).
    pub fn form<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_urlencoded::to_string(value) {
            Ok(s) => {
                self.body = ReplayBody::from(s);
                self.header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
            }
            Err(e) => {
                self.parts = Err(Error::request(e));
                self
            }
        }
    }

    /// A body of bytes, as they are.
    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        self.body = ReplayBody::from_bytes(bytes.into());
        self
    }

    /// A deadline for this call, retries and waits included. The earlier of
    /// this and the client's deadline applies.
    pub fn deadline(self, budget: Duration) -> Self {
        self.with(|req| {
            Deadline::after(budget).apply(req.extensions_mut());
            Ok(())
        })
    }

    /// Adds a fresh `Idempotency-Key` (unless one is set) and marks the
    /// request as safe to retry: by asking for a key, the caller says the
    /// API dedupes on it.
    pub fn idempotency_key(self) -> Self {
        self.with(|req| {
            IdempotencyKey::ensure(req);
            req.extensions_mut().insert(Idempotency::Idempotent);
            Ok(())
        })
    }

    /// Overrides whether this request may be retried: `true` marks it
    /// idempotent whatever its method, `false` forbids any retry.
    pub fn retry(self, allowed: bool) -> Self {
        self.with(|req| {
            req.extensions_mut().insert(if allowed {
                Idempotency::Idempotent
            } else {
                Idempotency::NotIdempotent
            });
            Ok(())
        })
    }

    /// Adds a value to the request's extensions, for custom layers.
    pub fn extension<T: Clone + Send + Sync + 'static>(self, value: T) -> Self {
        self.with(|req| {
            req.extensions_mut().insert(value);
            Ok(())
        })
    }

    /// The request as it would be sent (before the client's default
    /// headers and layers).
    ///
    /// # Errors
    ///
    /// When something given to the builder was invalid.
    pub fn build(self) -> Result<Request<ReplayBody>, Error> {
        let (parts, ()) = self.parts?.into_parts();
        Ok(Request::from_parts(parts, self.body))
    }

    /// Sends the request through the whole stack.
    ///
    /// # Errors
    ///
    /// Whatever the stack could not get through: see [`Error`]. A response
    /// with an error status is not an error here; use
    /// [`Response::error_for_status`].
    pub async fn send(self) -> Result<Response, Error> {
        let Self {
            client,
            parts,
            body,
        } = self;
        let (parts, ()) = parts?.into_parts();
        let req = client.prepare(Request::from_parts(parts, body))?;
        let url = req.uri().clone();
        let limit = BodyLimit::get(req.extensions());
        let started = tokio::time::Instant::now();
        let (result, attempts) =
            crate::attempts::count_attempts(|| client.shared.stack.call(req)).await;
        match result {
            Ok(resp) => {
                let elapsed = started.elapsed();
                Ok(Response::new(limited(resp, limit), url, elapsed, limit))
            }
            Err(e) => Err(crate::classify::classify(e).after_call(started, Some(attempts))),
        }
    }
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RequestBuilder");
        if let Ok(req) = &self.parts {
            d.field("method", req.method());
        }
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Response, Uri};
    use http_body_util::Full;

    use super::*;

    /// A client over an in-process service that records each request's URI.
    fn recording_client(base: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let svc = tower::service_fn(move |req: Request<ReplayBody>| {
            log.lock().unwrap().push(req.uri().to_string());
            async { Ok::<_, BoxError>(Response::new(Full::new(Bytes::new()))) }
        });
        let client = Client::builder()
            .base_url(base)
            .retry_off()
            .build_with(svc)
            .unwrap();
        (client, seen)
    }

    #[tokio::test]
    async fn a_uri_is_taken_as_a_string_would_be() {
        let (client, seen) = recording_client("http://api.test/v1");
        let absolute: Uri = "http://other.test/x?y=1".parse().unwrap();
        let relative: Uri = "/orders?page=2".parse().unwrap();
        client.get(&absolute).send().await.unwrap();
        client.get(absolute).send().await.unwrap();
        client.get(&relative).send().await.unwrap();
        client.delete(relative).send().await.unwrap();
        client.get("/orders?page=2").send().await.unwrap();
        client.post(&String::from("orders/7")).send().await.unwrap();
        client.put(&format!("orders/{}", 8)).send().await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "http://other.test/x?y=1",
                "http://other.test/x?y=1",
                "http://api.test/v1/orders?page=2",
                "http://api.test/v1/orders?page=2",
                "http://api.test/v1/orders?page=2",
                "http://api.test/v1/orders/7",
                "http://api.test/v1/orders/8",
            ]
        );
    }

    #[tokio::test]
    async fn a_uri_with_a_host_and_no_scheme_is_refused_before_sending() {
        let (client, seen) = recording_client("http://api.test/v1");
        let hostlike: Uri = "api.example.com".parse().unwrap();
        let err = client.get(hostlike).send().await.unwrap_err();
        assert!(err.is_request());
        assert!(err.to_string().contains("no scheme"), "{err}");
        let ftp: Uri = "ftp://files.test/a".parse().unwrap();
        let err = client.get(&ftp).send().await.unwrap_err();
        assert!(err.is_request());
        assert!(seen.lock().unwrap().is_empty());
    }
}
