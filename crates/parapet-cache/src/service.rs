//! [`Cache`]: the service, and what it decides before a request is sent.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, COOKIE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE, VARY,
};
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use http_cache_semantics::BeforeRequest;
use tower_service::Service;

use crate::body::CacheBody;
use crate::future_impl::{Ctx, Lookup, ResponseFuture};
use crate::layer::{CacheLayer, Config};
use crate::status::CacheStatus;
use crate::store::{CacheKey, Store};

/// A private HTTP cache in front of `S`; made by [`CacheLayer`].
///
/// - GET and HEAD requests are looked up: a fresh stored response is
///   returned without calling `S` ([`CacheStatus::Hit`]); a stale one with
///   a validator is revalidated with a conditional request, and a `304`
///   returns the stored body with refreshed headers
///   ([`CacheStatus::Revalidated`]); otherwise the request goes to `S`
///   ([`CacheStatus::Miss`]) and a storable answer is stored when its body
///   ends.
/// - A request that is itself conditional (`If-None-Match`,
///   `If-Modified-Since`, `If-Match`, `If-Unmodified-Since`, `If-Range`) or
///   asks for a `Range` passes through ([`CacheStatus::Bypass`]): its caller
///   handles `304` and `206` answers itself.
/// - Any other safe method passes through; an unsafe one (POST, PUT, PATCH,
///   DELETE, ...) answered with a status below 400 removes what is stored
///   for its URI (RFC 9111 §4.4).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use parapet_cache::{Cache, CacheStatus, MemoryStore};
/// use tower::{Service, ServiceExt};
///
/// let inner = tower::service_fn(|_req: http::Request<()>| async {
///     let res = http::Response::builder()
///         .header("cache-control", "max-age=60")
///         .body(http_body_util::Empty::<bytes::Bytes>::new())
///         .unwrap();
///     Ok::<_, std::convert::Infallible>(res)
/// });
/// let mut svc = Cache::new(inner, MemoryStore::new(1 << 20));
/// let req = || http::Request::get("http://example.com/").body(()).unwrap();
/// let first = svc.ready().await.unwrap().call(req()).await.unwrap();
/// let second = svc.ready().await.unwrap().call(req()).await.unwrap();
/// assert_eq!(CacheStatus::of(&first), Some(CacheStatus::Miss));
/// assert_eq!(CacheStatus::of(&second), Some(CacheStatus::Hit));
/// # }
/// ```
pub struct Cache<S> {
    inner: S,
    store: Arc<dyn Store>,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: Arc::clone(&self.store),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S> Cache<S> {
    /// `inner` behind a cache over `store`, with [`CacheLayer::new`]'s
    /// defaults.
    ///
    /// See [`Cache`] for an example.
    #[must_use]
    pub fn new(inner: S, store: impl Store) -> Self {
        tower_layer::Layer::layer(&CacheLayer::new(store), inner)
    }

    /// A layer over `store`: the same as [`CacheLayer::new`].
    ///
    /// ```
    /// let layer = parapet_cache::Cache::<()>::layer(parapet_cache::MemoryStore::new(1024));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn layer(store: impl Store) -> CacheLayer {
        CacheLayer::new(store)
    }

    pub(crate) fn from_parts(inner: S, store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        Self {
            inner,
            store,
            config,
        }
    }

    /// The inner service.
    ///
    /// ```
    /// let svc = parapet_cache::Cache::new(7_u8, parapet_cache::MemoryStore::new(1024));
    /// assert_eq!(*svc.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// let mut svc = parapet_cache::Cache::new(7_u8, parapet_cache::MemoryStore::new(1024));
    /// *svc.get_mut() += 1;
    /// assert_eq!(*svc.get_ref(), 8);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the cache.
    ///
    /// ```
    /// let svc = parapet_cache::Cache::new(7_u8, parapet_cache::MemoryStore::new(1024));
    /// assert_eq!(svc.into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Whether the request is conditional or asks for a range of its own.
fn is_conditional(headers: &HeaderMap) -> bool {
    [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
}

/// A keyed fingerprint of the request's credentials (`Authorization` and
/// `Cookie`), or `None` when it has none. A stored response is reused only
/// for a request with the same credentials: one client may act for several
/// users with per-request credentials, and a private cache is one user's.
pub(crate) fn credentials(config: &Config, headers: &HeaderMap) -> Option<u64> {
    if !headers.contains_key(AUTHORIZATION) && !headers.contains_key(COOKIE) {
        return None;
    }
    let mut h = config.hasher.build_hasher();
    for name in [AUTHORIZATION, COOKIE] {
        h.write(name.as_str().as_bytes());
        for v in headers.get_all(&name) {
            h.write(v.as_bytes());
            h.write_u8(0);
        }
        h.write_u8(1);
    }
    Some(h.finish())
}

/// Which variant a response stored for this request is: a hash of the
/// request's values of the headers the response's `Vary` names, and of its
/// credentials.
pub(crate) fn variant(
    config: &Config,
    req: &HeaderMap,
    res: &HeaderMap,
    credentials: Option<u64>,
) -> u64 {
    let mut h = config.hasher.build_hasher();
    h.write_u64(credentials.unwrap_or(0));
    for value in res.get_all(VARY) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            h.write(name.as_bytes());
            h.write_u8(0);
            for v in req.get_all(name.as_str()) {
                h.write(v.as_bytes());
                h.write_u8(0);
            }
            h.write_u8(1);
        }
    }
    h.finish()
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Cache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let method = req.method();
        if *method != Method::GET && *method != Method::HEAD {
            if parapet_core::is_safe_method(method) {
                return ResponseFuture::call(self.inner.call(req), Ctx::Bypass);
            }
            let host = req.headers().get(http::header::HOST);
            let keys = [
                CacheKey::new(&Method::GET, req.uri(), host),
                CacheKey::new(&Method::HEAD, req.uri(), host),
            ];
            let ctx = Ctx::Invalidate {
                store: Arc::clone(&self.store),
                keys,
            };
            return ResponseFuture::call(self.inner.call(req), ctx);
        }
        if is_conditional(req.headers()) {
            return ResponseFuture::call(self.inner.call(req), Ctx::Bypass);
        }

        let key = CacheKey::from_request(&req);
        let now = (self.config.clock)();
        let creds = credentials(&self.config, req.headers());
        let mut stale = None;
        for stored in self.store.get(&key) {
            if stored.credentials != creds {
                continue;
            }
            match stored.policy.before_request(&req, now) {
                BeforeRequest::Fresh(parts) => {
                    let mut res =
                        Response::from_parts(parts, CacheBody::stored(stored.body.clone()));
                    res.extensions_mut().insert(CacheStatus::Hit);
                    return ResponseFuture::hit(res);
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } if stale.is_none() => stale = Some((stored, request.headers)),
                BeforeRequest::Stale { .. } => {}
            }
        }

        // What the policy is made from: the request as its caller sent it.
        let mut sent = Request::new(());
        *sent.method_mut() = req.method().clone();
        *sent.uri_mut() = req.uri().clone();
        *sent.headers_mut() = req.headers().clone();

        let stale = stale.and_then(|(stored, conditional)| {
            let headers = req.headers_mut();
            let mut any = false;
            for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE] {
                if let Some(v) = conditional.get(&name) {
                    headers.insert(name, v.clone());
                    any = true;
                }
            }
            // Without a validator there is nothing to revalidate: an
            // ordinary miss, whose answer replaces the stored one.
            any.then_some(stored)
        });
        let ctx = Ctx::Lookup(Box::new(Lookup {
            store: Arc::clone(&self.store),
            config: Arc::clone(&self.config),
            key,
            sent,
            stale,
            credentials: creds,
        }));
        ResponseFuture::call(self.inner.call(req), ctx)
    }
}
