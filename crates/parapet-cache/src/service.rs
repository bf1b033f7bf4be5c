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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http_body_util::BodyExt;
    use parapet_core::fmt_http_date;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::MemoryStore;

    /// The cache's clock and the server's: a fixed date advanced by
    /// tokio's (paused) time.
    fn clock() -> impl Fn() -> SystemTime + Clone + Send + Sync + 'static {
        let start = tokio::time::Instant::now();
        move || UNIX_EPOCH + Duration::from_secs(1_750_000_000) + start.elapsed()
    }

    /// A cache over a service answering every request with `headers`
    /// (a `Date` of now added) and the body "body"; counts the requests.
    fn cache(
        layer: CacheLayer,
        headers: &'static [(&'static str, &'static str)],
    ) -> (
        impl Service<
            Request<()>,
            Response = Response<CacheBody<String>>,
            Error = Infallible,
            Future: Send,
        > + Clone,
        Arc<AtomicUsize>,
    ) {
        let now = clock();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let svc = ServiceBuilder::new()
            .layer(layer.clock(now.clone()))
            .service_fn(move |_req: Request<()>| {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut res = Response::builder().header("date", fmt_http_date(now()));
                for (k, v) in headers {
                    res = res.header(*k, *v);
                }
                let res = res.body(String::from("body")).unwrap();
                async move { Ok::<_, Infallible>(res) }
            });
        (svc, sent)
    }

    async fn status<S>(svc: &mut S, method: Method) -> CacheStatus
    where
        S: Service<Request<()>, Response = Response<CacheBody<String>>, Error = Infallible>,
    {
        let req = Request::builder()
            .method(method)
            .uri("http://api.test/x")
            .body(())
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        let status = CacheStatus::of(&res).unwrap();
        res.into_body().collect().await.unwrap();
        status
    }

    #[tokio::test(start_paused = true)]
    async fn expires_keeps_a_response_fresh_until_then() {
        // Expires 60 s after the server's Date (formatted from the same clock).
        let now = clock();
        let expires: &'static str =
            Box::leak(fmt_http_date(now() + Duration::from_secs(60)).into_boxed_str());
        let headers: &'static [(&str, &str)] = Box::leak(Box::new([("expires", expires)]));
        let (mut svc, sent) = cache(CacheLayer::in_memory(1 << 20), headers);

        assert_eq!(status(&mut svc, Method::GET).await, CacheStatus::Miss);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(status(&mut svc, Method::GET).await, CacheStatus::Hit);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(status(&mut svc, Method::GET).await, CacheStatus::Miss);
        assert_eq!(sent.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn heuristic_freshness_is_off_by_default() {
        const HEADERS: &[(&str, &str)] = &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")];
        let (mut off, off_sent) = cache(CacheLayer::in_memory(1 << 20), HEADERS);
        let (mut on, on_sent) = cache(
            CacheLayer::in_memory(1 << 20).heuristic_freshness(0.1),
            HEADERS,
        );

        for svc in [&mut off, &mut on] {
            assert_eq!(status(svc, Method::GET).await, CacheStatus::Miss);
            tokio::time::advance(Duration::from_secs(3600)).await;
        }
        // Off: stored, but stale at once; the 200 answer replaces it.
        assert_eq!(status(&mut off, Method::GET).await, CacheStatus::Miss);
        // On: a tenth of a year and a half since Last-Modified is weeks.
        assert_eq!(status(&mut on, Method::GET).await, CacheStatus::Hit);
        assert_eq!(off_sent.load(Ordering::SeqCst), 2);
        assert_eq!(on_sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_age_is_clamped_not_a_panic() {
        for age in ["18446744073709551615", "99999999999999999999999", "-5", "x"] {
            let headers: &'static [(&str, &str)] =
                Box::leak(Box::new([("cache-control", "max-age=60"), ("age", age)]));
            let (mut svc, _) = cache(CacheLayer::in_memory(1 << 20), headers);
            status(&mut svc, Method::GET).await;
            tokio::time::advance(Duration::from_secs(1)).await;
            let second = status(&mut svc, Method::GET).await;
            let expected = if age.starts_with('1') {
                CacheStatus::Miss // older than its max-age
            } else {
                CacheStatus::Hit // unreadable: no age
            };
            assert_eq!(second, expected, "age {age}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn head_and_get_are_stored_apart_and_other_methods_bypass() {
        const HEADERS: &[(&str, &str)] = &[("cache-control", "max-age=60")];
        let (mut svc, sent) = cache(CacheLayer::in_memory(1 << 20), HEADERS);

        assert_eq!(status(&mut svc, Method::HEAD).await, CacheStatus::Miss);
        assert_eq!(status(&mut svc, Method::GET).await, CacheStatus::Miss);
        assert_eq!(status(&mut svc, Method::HEAD).await, CacheStatus::Hit);
        assert_eq!(status(&mut svc, Method::GET).await, CacheStatus::Hit);
        assert_eq!(status(&mut svc, Method::OPTIONS).await, CacheStatus::Bypass);
        assert_eq!(sent.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_dropped_before_its_end_is_not_stored() {
        const HEADERS: &[(&str, &str)] = &[("cache-control", "max-age=60")];
        let store = MemoryStore::new(1 << 20);
        let (mut svc, _) = cache(CacheLayer::new(store.clone()), HEADERS);
        let req = Request::get("http://api.test/x").body(()).unwrap();

        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        drop(res);

        assert!(store.is_empty());
    }
}
