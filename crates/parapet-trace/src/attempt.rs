//! [`AttemptTraceLayer`]: one span per attempt, inside the call span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use parapet_core::{Attempt, BoxError};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

use crate::common::{
    CallShared, ErrorTypeFn, client_span, default_error_type, method_name, method_original,
    server_address, server_port,
};
use crate::redact::RedactedUri;

/// A span per attempt (at `DEBUG`), a child of the current span (the call
/// span of [`TraceLayer`](crate::TraceLayer)), named after the method, kind
/// `client`.
///
/// Its fields are those of the call span, less `attempts` and `request_id`,
/// plus `http.request.resend_count`: 0 on the first attempt, then 1, 2, ...,
/// read from the [`Attempt`] the retry layer puts in the extensions of each
/// resend (a first attempt carries none, which reads as 0). `error.type` and `otel.status_code`
/// mark every attempt that failed, so a 503 shows on its attempt span;
/// the span's level stays `DEBUG` regardless, and a failed attempt adds a
/// `DEBUG` event. Whether the *call* failed is the call span's to say.
///
/// With the `opentelemetry` feature each attempt sends a `traceparent`
/// naming its own span, unless the caller set one (see the crate docs).
///
/// # Where it goes
///
/// Inside the retry layer, so that it runs once per attempt, and outside
/// the layers that work per attempt (auth, concurrency limit, attempt
/// timeout), so that their waits and errors count in the attempt. It also
/// counts the attempts for the call span.
///
/// ```
/// use http::{Request, Response};
/// use parapet_core::Attempt;
/// use parapet_trace::AttemptTraceLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = service_fn(|_req: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(()))
/// });
/// let svc = AttemptTraceLayer::new().layer(inner);
/// let mut req = Request::get("http://127.0.0.1/health").body(()).unwrap();
/// req.extensions_mut().insert(Attempt::new(2, 3)); // what a retry layer does
/// svc.oneshot(req).await.unwrap(); // a span with http.request.resend_count = 1
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptTraceLayer {
    error_type: ErrorTypeFn,
}

impl AttemptTraceLayer {
    /// The defaults: [`default_error_type`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            error_type: default_error_type,
        }
    }

    /// How an error becomes `error.type`.
    ///
    /// Default: [`default_error_type`].
    #[must_use]
    pub fn error_type(mut self, f: ErrorTypeFn) -> Self {
        self.error_type = f;
        self
    }
}

impl Default for AttemptTraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for AttemptTraceLayer {
    type Service = AttemptTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTrace {
            inner,
            error_type: self.error_type,
        }
    }
}

/// The service made by [`AttemptTraceLayer`].
#[derive(Debug, Clone)]
pub struct AttemptTrace<S> {
    inner: S,
    error_type: ErrorTypeFn,
}

impl<S> AttemptTrace<S> {
    /// Wraps `inner` with the defaults of [`AttemptTraceLayer::new`].
    pub fn new(inner: S) -> Self {
        AttemptTraceLayer::new().layer(inner)
    }

    /// An [`AttemptTraceLayer`] with its defaults.
    #[must_use]
    pub fn layer() -> AttemptTraceLayer {
        AttemptTraceLayer::new()
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

impl<S, B, RB> Service<Request<B>> for AttemptTrace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = AttemptTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    #[cfg_attr(not(feature = "opentelemetry"), allow(unused_mut))]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(shared) = req.extensions().get::<CallShared>() {
            shared.count_attempt();
        }
        let span = client_span!(
            tracing::Level::DEBUG,
            req.method(),
            otel.kind = "client",
            http.request.method = method_name(req.method()),
            http.request.method_original = method_original(req.method()),
            http.request.resend_count =
                Attempt::get(req.extensions()).map_or(0, Attempt::resend_count),
            server.address = server_address(&req),
            server.port = server_port(req.uri()),
            url.full = %RedactedUri::new(req.uri()),
            http.response.status_code = Empty,
            error.type = Empty,
            otel.status_code = Empty,
            http.client.request.duration = Empty,
        );
        let state = if span.is_disabled() {
            None
        } else {
            #[cfg(feature = "opentelemetry")]
            crate::common::inject_traceparent(&mut req, &span, true);
            Some(AttemptState {
                start: Instant::now(),
                error_type: self.error_type,
            })
        };
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        AttemptTraceFuture { inner, span, state }
    }
}

#[derive(Debug)]
struct AttemptState {
    start: Instant,
    error_type: ErrorTypeFn,
}

pin_project! {
    /// The response future of [`AttemptTrace`]: the inner future, polled
    /// inside the attempt span.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct AttemptTraceFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        state: Option<AttemptState>,
    }
}

impl<F, RB, E> Future for AttemptTraceFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = {
            let _entered = this.span.enter();
            ready!(this.inner.poll(cx)).map_err(Into::into)
        };
        if let Some(state) = this.state.take() {
            finish(this.span, &state, &res);
        }
        Poll::Ready(res)
    }
}

fn finish<RB>(span: &Span, state: &AttemptState, res: &Result<Response<RB>, BoxError>) {
    span.record(
        "http.client.request.duration",
        state.start.elapsed().as_secs_f64(),
    );
    match res {
        Ok(res) => {
            let status = res.status();
            let code = status.as_u16();
            span.record("http.response.status_code", code);
            if status.is_client_error() || status.is_server_error() {
                span.record("error.type", status.as_str());
                span.record("otel.status_code", "ERROR");
                tracing::debug!(parent: span, http.response.status_code = code, "attempt failed");
            }
        }
        Err(err) => {
            let kind = (state.error_type)(&**err);
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
            tracing::debug!(parent: span, error.type = kind, error.message = %err, "attempt failed without a response");
        }
    }
}
