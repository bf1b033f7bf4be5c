//! [`InboundRequestIdLayer`]: the server side, so that an inbound request's
//! id follows every outbound call made while serving it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;

use crate::{RequestId, X_REQUEST_ID};

/// The longest inbound id accepted as it is, in bytes.
const MAX_INBOUND_LEN: usize = 128;

/// Server-side layer: takes the inbound request's id, or makes one, and makes
/// it the [current](RequestId::current) id of the task serving the request.
///
/// Every outbound call made while serving the request through a
/// [`RequestIdLayer`](crate::RequestIdLayer) then carries that id, without
/// the handler passing it by hand. The id is also
///
/// - stored in the inbound request's extensions (`Extension<RequestId>` in
///   axum);
/// - written back on the response, unless the response already has the
///   header (turn off with [`echo`](Self::echo)).
///
/// An inbound id is used as it came when it is 1 to 128 bytes of visible
/// ASCII; anything else (absent, empty, too long, control bytes, spaces) is
/// replaced by a fresh [`RequestId`], in the request's header too, so that a
/// client cannot push arbitrary bytes into every upstream's logs.
///
/// It is a plain tower layer: use it with axum's `Router::layer`, or around
/// any hyper service. The inner service's error passes through unchanged.
///
/// The id is task-local: it follows the handler's future, including
/// everything it awaits, but not a task it spawns. Carry it into one with
/// [`RequestId::scope`]:
/// `tokio::spawn(RequestId::current().unwrap_or_default().scope(work))`.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use parapet_trace::{InboundRequestIdLayer, RequestId};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A handler that would make outbound calls: it sees the inbound id.
/// let handler = service_fn(|_req: Request<()>| async {
///     let id = RequestId::current().unwrap();
///     Ok::<_, Infallible>(Response::new(id.to_string()))
/// });
/// let svc = InboundRequestIdLayer::new().layer(handler);
///
/// let req = Request::builder().header("x-request-id", "abc-123").body(()).unwrap();
/// let res = svc.oneshot(req).await.unwrap();
/// assert_eq!(res.body(), "abc-123");
/// assert_eq!(res.headers()["x-request-id"], "abc-123"); // echoed back
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct InboundRequestIdLayer {
    header: HeaderName,
    echo: bool,
}

impl InboundRequestIdLayer {
    /// Reads `x-request-id` and echoes it on the response.
    #[must_use]
    pub fn new() -> Self {
        Self {
            header: X_REQUEST_ID,
            echo: true,
        }
    }

    /// The header that carries the inbound id (and the echoed one).
    ///
    /// Default: `x-request-id`.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// Whether to write the id on the response when the response does not
    /// carry that header already.
    ///
    /// Default: `true`.
    #[must_use]
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }
}

impl Default for InboundRequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for InboundRequestIdLayer {
    type Service = InboundRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundRequestId {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`InboundRequestIdLayer`].
#[derive(Debug, Clone)]
pub struct InboundRequestId<S> {
    inner: S,
    layer: InboundRequestIdLayer,
}

impl<S> InboundRequestId<S> {
    /// Wraps `inner` with the defaults of [`InboundRequestIdLayer::new`].
    pub fn new(inner: S) -> Self {
        InboundRequestIdLayer::new().layer(inner)
    }

    /// An [`InboundRequestIdLayer`] with its defaults.
    #[must_use]
    pub fn layer() -> InboundRequestIdLayer {
        InboundRequestIdLayer::new()
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

fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_INBOUND_LEN
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl<S, B, RB> Service<Request<B>> for InboundRequestId<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = InboundFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let header = &self.layer.header;
        let id = match req.headers().get(header) {
            Some(v) if acceptable(v) => RequestId::from_header_value(v.clone()),
            _ => {
                let id = RequestId::new();
                req.headers_mut()
                    .insert(header.clone(), id.header_value().clone());
                id
            }
        };
        req.extensions_mut().insert(id.clone());
        // Work the inner service does in `call` itself sees the id too.
        let inner = &mut self.inner;
        let fut = id.clone().sync_scope(|| inner.call(req));
        InboundFuture {
            echo: self
                .layer
                .echo
                .then(|| (header.clone(), id.header_value().clone())),
            inner: id.scope(fut),
        }
    }
}

pin_project! {
    /// The response future of [`InboundRequestId`]: the inner future, run
    /// with the request's id as the current one.
    #[must_use = "futures do nothing unless polled"]
    pub struct InboundFuture<F> {
        #[pin]
        inner: TaskLocalFuture<RequestId, F>,
        echo: Option<(HeaderName, HeaderValue)>,
    }
}

impl<F> std::fmt::Debug for InboundFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for InboundFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some((name, value)) = this.echo.take() {
            if !res.headers().contains_key(&name) {
                res.headers_mut().insert(name, value);
            }
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    /// A handler that answers with the current id and the one in its
    /// request's extensions.
    fn handler() -> impl Service<
        Request<()>,
        Response = Response<(Option<RequestId>, Option<RequestId>)>,
        Error = Infallible,
        Future: Send,
    > + Clone {
        service_fn(|req: Request<()>| async move {
            tokio::task::yield_now().await;
            let ext = RequestId::get(req.extensions()).cloned();
            Ok::<_, Infallible>(Response::new((RequestId::current(), ext)))
        })
    }

    fn with_id(id: &[u8]) -> Request<()> {
        let mut req = Request::new(());
        req.headers_mut()
            .insert(X_REQUEST_ID, HeaderValue::from_bytes(id).unwrap());
        req
    }

    #[tokio::test]
    async fn the_inbound_id_becomes_the_current_one() {
        let res = InboundRequestId::new(handler())
            .oneshot(with_id(b"req-1"))
            .await
            .unwrap();
        let (current, ext) = res.body().clone();
        assert_eq!(current.unwrap().to_str(), Some("req-1"));
        assert_eq!(ext.unwrap().to_str(), Some("req-1"));
        assert_eq!(res.headers()[X_REQUEST_ID], "req-1");
        assert_eq!(RequestId::current(), None);
    }

    #[tokio::test]
    async fn a_missing_id_is_made_and_echoed() {
        let res = InboundRequestId::new(handler())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let (current, ext) = res.body().clone();
        let current = current.unwrap();
        assert_eq!(current.as_bytes().len(), 36);
        assert_eq!(ext, Some(current.clone()));
        assert_eq!(&res.headers()[X_REQUEST_ID], current.header_value());
    }

    #[tokio::test]
    async fn unusable_inbound_ids_are_replaced() {
        let long = vec![b'a'; MAX_INBOUND_LEN + 1];
        for bad in [&b""[..], b"has space", b"tab\there", b"\xff\xfe", &long] {
            let res = InboundRequestId::new(handler())
                .oneshot(with_id(bad))
                .await
                .unwrap();
            let current = res.body().0.clone().unwrap();
            assert_ne!(current.as_bytes(), bad);
            assert_eq!(current.as_bytes().len(), 36);
        }
        let ok = vec![b'a'; MAX_INBOUND_LEN];
        let res = InboundRequestId::new(handler())
            .oneshot(with_id(&ok))
            .await
            .unwrap();
        assert_eq!(res.body().0.as_ref().unwrap().as_bytes(), &ok[..]);
    }

    #[tokio::test]
    async fn echo_can_be_turned_off_and_never_overwrites() {
        let svc = InboundRequestIdLayer::new().echo(false).layer(handler());
        let res = svc.oneshot(with_id(b"req-2")).await.unwrap();
        assert!(!res.headers().contains_key(X_REQUEST_ID));

        let answers_own = service_fn(|_: Request<()>| async {
            let mut res = Response::new(());
            res.headers_mut()
                .insert(X_REQUEST_ID, HeaderValue::from_static("server-set"));
            Ok::<_, Infallible>(res)
        });
        let res = InboundRequestId::new(answers_own)
            .oneshot(with_id(b"req-3"))
            .await
            .unwrap();
        assert_eq!(res.headers()[X_REQUEST_ID], "server-set");
    }

    #[tokio::test]
    async fn a_custom_header_is_read() {
        let svc = InboundRequestIdLayer::new()
            .header(HeaderName::from_static("x-correlation-id"))
            .layer(handler());
        let req = Request::builder()
            .header("x-correlation-id", "corr-9")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.body().0.as_ref().unwrap().to_str(), Some("corr-9"));
        assert_eq!(res.headers()["x-correlation-id"], "corr-9");
    }

    #[tokio::test]
    async fn the_id_is_current_during_the_inner_call_too() {
        let mut seen_in_call = None;
        struct Probe<'a>(&'a mut Option<Option<RequestId>>);
        impl Service<Request<()>> for Probe<'_> {
            type Response = Response<()>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Response<()>, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                *self.0 = Some(RequestId::current());
                std::future::ready(Ok(Response::new(())))
            }
        }
        InboundRequestId::new(Probe(&mut seen_in_call))
            .oneshot(with_id(b"in-call"))
            .await
            .unwrap();
        assert_eq!(seen_in_call.unwrap().unwrap().to_str(), Some("in-call"));
    }
}
