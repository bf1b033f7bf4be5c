//! [`RequestIdLayer`]: one `x-request-id` per outbound call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::Entry;
use http::{Extensions, HeaderMap, HeaderName, Request, Response};
use parapet_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::RequestId;

/// `x-request-id`, the header [`RequestIdLayer`] sets by default.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every outbound call one request id, the same on every attempt.
///
/// For each request, in this order:
///
/// 1. a request that already carries the header keeps it, untouched: a
///    caller-supplied id is never overwritten;
/// 2. otherwise, inside a task serving an inbound request
///    ([`InboundRequestIdLayer`](crate::InboundRequestIdLayer) or
///    [`RequestId::scope`]), that request's id is sent, so one id follows the
///    work across services without being passed by hand;
/// 3. otherwise a fresh [`RequestId`] (a UUID version 7) is made.
///
/// The id is then recorded in the response's extensions
/// ([`RequestId::get`]), whichever of the three it was, unless
/// [`record_in_response(false)`](Self::record_in_response) turns that off.
///
/// # Where it goes
///
/// Outermost, outside the retry layer: it runs once per call, and every
/// attempt the retry layer sends is a copy of the request it saw, header
/// included. Put it outside [`TraceLayer`](crate::TraceLayer) too, so the
/// call span records the id from its start.
///
/// ```
/// use http::{Request, Response};
/// use parapet_trace::{RequestId, RequestIdLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = service_fn(|req: Request<()>| async move {
///     let sent = req.headers()["x-request-id"].clone();
///     Ok::<_, std::convert::Infallible>(Response::new(sent))
/// });
/// let svc = RequestIdLayer::new().layer(inner);
///
/// let res = svc.clone().oneshot(Request::new(())).await.unwrap();
/// let id = RequestId::get(res.extensions()).unwrap();
/// assert_eq!(id.header_value(), res.body()); // what was sent
///
/// // A caller's own id is kept.
/// let req = Request::builder().header("x-request-id", "mine").body(()).unwrap();
/// let res = svc.oneshot(req).await.unwrap();
/// assert_eq!(res.body(), "mine");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    header: HeaderName,
    record: bool,
}

impl RequestIdLayer {
    /// Sets `x-request-id` and records the id in the response's extensions.
    #[must_use]
    pub fn new() -> Self {
        Self {
            header: X_REQUEST_ID,
            record: true,
        }
    }

    /// The header that carries the id.
    ///
    /// Default: `x-request-id`.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// Whether the id is recorded in the response's extensions, where
    /// [`RequestId::get`] finds it.
    ///
    /// Default: `true`. Turn it off when nothing reads the id from the
    /// response (a caller that made its own id, or only needs it in the
    /// logs): recording it is most of this layer's cost. `http::Extensions`
    /// allocates on its first insert, so on a response whose extensions are
    /// empty the record costs 3 allocations (the map's box, its table and
    /// the value's box) and about 50 ns; on one that already holds
    /// something it costs 1 allocation (the value's box). Responses from
    /// hyper-util's legacy client over its `HttpConnector` (and the TLS
    /// connectors that wrap it) already carry `HttpInfo`, so over the
    /// network the record usually costs 1 allocation.
    ///
    /// The header is sent either way, and a [`TraceLayer`](crate::TraceLayer)
    /// inside this layer (the recommended order, see
    /// [where it goes](Self#where-it-goes)) records the id from it. One
    /// placed outside reads the id from the response instead: keep the
    /// record on in that order.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use parapet_trace::{RequestId, RequestIdLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let inner = service_fn(|req: Request<()>| async move {
    ///     assert!(req.headers().contains_key("x-request-id"));
    ///     Ok::<_, std::convert::Infallible>(Response::new(()))
    /// });
    /// let svc = RequestIdLayer::new().record_in_response(false).layer(inner);
    /// let res = svc.oneshot(Request::new(())).await.unwrap();
    /// assert!(RequestId::get(res.extensions()).is_none());
    /// # }
    /// ```
    #[must_use]
    pub fn record_in_response(mut self, record: bool) -> Self {
        self.record = record;
        self
    }
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId {
            inner,
            header: self.header.clone(),
            record: self.record,
        }
    }
}

/// The service made by [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    inner: S,
    header: HeaderName,
    record: bool,
}

impl<S> SetRequestId<S> {
    /// Wraps `inner`, setting `x-request-id` and recording the id in the
    /// response's extensions.
    pub fn new(inner: S) -> Self {
        RequestIdLayer::new().layer(inner)
    }

    /// A [`RequestIdLayer`] that sets `x-request-id`.
    #[must_use]
    pub fn layer() -> RequestIdLayer {
        RequestIdLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for SetRequestId<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = SetRequestIdFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = id_for(&self.header, req.headers_mut(), self.record);
        SetRequestIdFuture {
            inner: self.inner.call(req),
            id,
        }
    }
}

pin_project! {
    /// The response future of [`SetRequestId`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct SetRequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<RequestId>,
    }
}

impl<F, RB, E> Future for SetRequestIdFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx)).map_err(Into::into)?;
        if let Some(id) = this.id.take() {
            record(res.extensions_mut(), id);
        }
        Poll::Ready(Ok(res))
    }
}

/// The id this call carries: the one already in `headers` under `name`,
/// else the current inbound one, else a fresh one, which is then set.
/// Returned only when `keep` (to be recorded in the response), so that a
/// call that does not record it moves the id into the header without a
/// second reference.
///
/// One lookup of the name (an entry, not `get` then `insert`), and no panic
/// on a header map that is full. Kept out of line, like [`record`], so that
/// `call` and `poll` stay small; it does not depend on the service's types.
#[inline(never)]
fn id_for(name: &HeaderName, headers: &mut HeaderMap, keep: bool) -> Option<RequestId> {
    match headers.try_entry(name) {
        Ok(Entry::Occupied(sent)) => keep.then(|| RequestId::from_header_value(sent.get().clone())),
        Ok(Entry::Vacant(slot)) => {
            let id = RequestId::current().unwrap_or_default();
            // Only fails if the map is full (`MaxSizeReached`): the request
            // then goes without the header, as it would go without any
            // other header the map could not take.
            if keep {
                let _ = slot.try_insert(id.header_value().clone());
                Some(id)
            } else {
                let _ = slot.try_insert(id.into_header_value());
                None
            }
        }
        Err(_) => keep.then(|| RequestId::current().unwrap_or_default()),
    }
}

/// Records `id` in a response's extensions.
#[inline(never)]
fn record(extensions: &mut Extensions, id: RequestId) {
    extensions.insert(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http::HeaderValue;
    use tower::{ServiceExt, service_fn};

    type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

    /// A stand-in that records the header it saw and answers 200.
    fn recorder(
        name: &'static str,
    ) -> (
        Seen,
        impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone,
    ) {
        let seen = Seen::default();
        let log = seen.clone();
        let svc = service_fn(move |req: Request<()>| {
            log.lock().unwrap().push(req.headers().get(name).cloned());
            async { Ok::<_, Infallible>(Response::new(())) }
        });
        (seen, svc)
    }

    #[tokio::test]
    async fn sets_a_fresh_id_and_records_it_in_the_response() {
        let (seen, inner) = recorder("x-request-id");
        let res = RequestIdLayer::new()
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let sent = seen.lock().unwrap()[0].clone().unwrap();
        assert_eq!(sent.len(), 36);
        assert_eq!(
            RequestId::get(res.extensions()).unwrap().header_value(),
            &sent
        );
    }

    #[tokio::test]
    async fn each_call_gets_its_own_id() {
        let (seen, inner) = recorder("x-request-id");
        let svc = RequestIdLayer::new().layer(inner);
        for _ in 0..3 {
            svc.clone().oneshot(Request::new(())).await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_ne!(seen[0], seen[1]);
        assert_ne!(seen[1], seen[2]);
    }

    #[tokio::test]
    async fn a_callers_id_is_never_overwritten() {
        let (seen, inner) = recorder("x-request-id");
        let req = Request::builder()
            .header("x-request-id", "caller-42")
            .body(())
            .unwrap();
        let res = RequestIdLayer::new()
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap()[0].as_ref().unwrap(), "caller-42");
        assert_eq!(
            RequestId::get(res.extensions()).unwrap().to_str(),
            Some("caller-42")
        );
    }

    #[tokio::test]
    async fn the_header_name_is_configurable() {
        let (seen, inner) = recorder("x-correlation-id");
        let layer = RequestIdLayer::new().header(HeaderName::from_static("x-correlation-id"));
        let res = layer.layer(inner).oneshot(Request::new(())).await.unwrap();
        let sent = seen.lock().unwrap()[0].clone().unwrap();
        assert_eq!(
            RequestId::get(res.extensions()).unwrap().header_value(),
            &sent
        );
    }

    #[tokio::test]
    async fn the_current_inbound_id_is_sent() {
        let (seen, inner) = recorder("x-request-id");
        let svc = RequestIdLayer::new().layer(inner);
        let inbound = RequestId::from_header_value(HeaderValue::from_static("inbound-7"));
        inbound
            .scope(async {
                svc.clone().oneshot(Request::new(())).await.unwrap();
                // A caller's explicit id still wins over the inbound one.
                let req = Request::builder()
                    .header("x-request-id", "explicit")
                    .body(())
                    .unwrap();
                svc.clone().oneshot(req).await.unwrap();
            })
            .await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].as_ref().unwrap(), "inbound-7");
        assert_eq!(seen[1].as_ref().unwrap(), "explicit");
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let inner = service_fn(|_: Request<()>| async {
            Err::<Response<()>, _>(std::io::Error::other("boom"))
        });
        let err = RequestIdLayer::new()
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<std::io::Error>().is_some());
    }

    /// A request whose header map refuses one more name.
    fn full_request() -> Request<()> {
        let mut req = Request::new(());
        let mut i = 0u32;
        while req
            .headers_mut()
            .try_insert(
                HeaderName::try_from(format!("h{i}")).unwrap(),
                HeaderValue::from_static("v"),
            )
            .is_ok()
        {
            i += 1;
        }
        req
    }

    #[tokio::test]
    async fn a_full_header_map_does_not_panic() {
        let (seen, inner) = recorder("x-request-id");
        let res = RequestIdLayer::new()
            .layer(inner)
            .oneshot(full_request())
            .await
            .unwrap();
        // The request went without the header; the call still has an id.
        assert!(seen.lock().unwrap()[0].is_none());
        assert!(RequestId::get(res.extensions()).is_some());
    }

    #[tokio::test]
    async fn without_the_record_the_id_is_sent_but_not_in_the_response() {
        let (seen, inner) = recorder("x-request-id");
        let svc = RequestIdLayer::new().record_in_response(false).layer(inner);
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert!(RequestId::get(res.extensions()).is_none());
        assert!(res.extensions().is_empty());

        // A caller's id and an inbound one are sent as with the record.
        let req = Request::builder()
            .header("x-request-id", "caller-42")
            .body(())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert!(RequestId::get(res.extensions()).is_none());
        let inbound = RequestId::from_header_value(HeaderValue::from_static("inbound-7"));
        inbound
            .scope(svc.clone().oneshot(Request::new(())))
            .await
            .unwrap();

        let seen = seen.lock().unwrap();
        let fresh = seen[0].as_ref().unwrap();
        assert_eq!(fresh.len(), 36);
        assert_eq!(
            RequestId::from_header_value(fresh.clone()).as_bytes()[14],
            b'7'
        );
        assert_eq!(seen[1].as_ref().unwrap(), "caller-42");
        assert_eq!(seen[2].as_ref().unwrap(), "inbound-7");
    }

    #[tokio::test]
    async fn the_record_keeps_what_the_response_already_carries() {
        #[derive(Clone, Debug, PartialEq)]
        struct Info(u8);
        let inner = service_fn(|req: Request<()>| async move {
            let mut res = Response::new(req.headers().get("x-request-id").cloned());
            res.extensions_mut().insert(Info(7));
            Ok::<_, Infallible>(res)
        });
        let res = RequestIdLayer::new()
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.extensions().get::<Info>(), Some(&Info(7)));
        assert_eq!(
            Some(RequestId::get(res.extensions()).unwrap().header_value()),
            res.body().as_ref()
        );
    }

    #[tokio::test]
    async fn a_full_header_map_without_the_record_does_not_panic() {
        let (seen, inner) = recorder("x-request-id");
        let res = RequestIdLayer::new()
            .record_in_response(false)
            .layer(inner)
            .oneshot(full_request())
            .await
            .unwrap();
        assert!(seen.lock().unwrap()[0].is_none());
        assert!(RequestId::get(res.extensions()).is_none());
    }

    #[test]
    fn service_accessors() {
        let mut svc = SetRequestId::new(7u8);
        assert_eq!(*svc.get_ref(), 7);
        *svc.get_mut() = 8;
        assert_eq!(svc.into_inner(), 8);
        let _ = SetRequestId::<u8>::layer();
    }
}
