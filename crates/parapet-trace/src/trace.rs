//! [`TraceLayer`]: one span per logical call, however many attempts it
//! takes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, Request, Response};
use parapet_core::{Attempt, BoxError};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;
use tracing::field::{Empty, display};

use crate::common::{
    CallShared, ErrorTypeFn, client_span, default_error_type, method_name, method_original,
    server_address, server_port,
};
use crate::redact::RedactedUri;
use crate::{RequestId, X_REQUEST_ID};

/// A span per call (at `INFO`), named after the method, with the
/// OpenTelemetry HTTP client fields.
///
/// # Fields
///
/// | field | value |
/// | --- | --- |
/// | `otel.kind` | `client` (or `internal`, see [`internal_kind`](Self::internal_kind)) |
/// | `http.request.method` | `GET`, `POST`, ... or `_OTHER` |
/// | `http.request.method_original` | the method, when it is `_OTHER` |
/// | `server.address`, `server.port` | from the URI (or `Host`); the port defaults by scheme |
/// | `url.full` | the URI with userinfo and secret query values redacted ([`crate::redact`]) |
/// | `request_id` | the request id header (see [`request_id_header`](Self::request_id_header)) |
/// | `http.response.status_code` | the final status |
/// | `error.type` | the status code for 4xx and 5xx; an error class ([`ErrorTypeFn`]) when there was no response |
/// | `otel.status_code` | `ERROR` when `error.type` is set |
/// | `attempts` | how many attempts the call took (counted by [`AttemptTraceLayer`](crate::AttemptTraceLayer), else read from the response's [`Attempt`]) |
/// | `http.client.request.duration` | seconds from the call until its response head (or error), as the OpenTelemetry metric of that name |
///
/// No header is recorded except the request id, so `Authorization`,
/// cookies and API keys cannot reach a span. The one free-form text
/// recorded is the final error's message (`error.message`, when there was
/// no response): the errors of hyper-util and of the parapet layers carry
/// no URL or header, but an inner service of your own should not put
/// secrets in its error messages either.
///
/// # Events and levels
///
/// When the call is over, one event in the call span:
///
/// - `DEBUG` for 1xx to 3xx;
/// - `INFO` for 4xx: the server answered, and what a 404 or a 409 means is
///   the caller's business, not an incident;
/// - `WARN` for 5xx: the call failed, retries included, but the server is
///   there and answering;
/// - `ERROR` when there was no response at all (connection failure,
///   timeout, a layer refusing the call), with the error's message.
///
/// A 503 that a retry turns into a 200 therefore logs nothing above
/// `DEBUG`: each attempt is its own `DEBUG` span
/// ([`AttemptTraceLayer`](crate::AttemptTraceLayer)), and the retry layer's
/// own events about delays and reasons land inside this span.
///
/// # Cost
///
/// When no subscriber wants the span, the layer builds no string, reads no
/// clock and allocates nothing: the fields (the redacted URL among them) are
/// only evaluated for a span that is recorded.
///
/// # Where it goes
///
/// Outside the retry layer (so that it sees the call once) and inside
/// [`RequestIdLayer`](crate::RequestIdLayer) (so that it records the id from
/// the start; placed outside it, it records the id from the response).
/// Inside it the attempt spans open as children of this span.
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use parapet_trace::TraceLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = service_fn(|_req: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(()))
/// });
/// let svc = TraceLayer::new().layer(inner);
/// let req = Request::get("https://api.example.com/v1/things?api_key=s3cr3t").body(()).unwrap();
/// let res = svc.oneshot(req).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TraceLayer {
    request_id_header: HeaderName,
    error_type: ErrorTypeFn,
    kind: &'static str,
}

impl TraceLayer {
    /// The defaults: `x-request-id`, [`default_error_type`], kind `client`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            request_id_header: X_REQUEST_ID,
            error_type: default_error_type,
            kind: "client",
        }
    }

    /// The request header recorded as `request_id`.
    ///
    /// Default: `x-request-id`.
    #[must_use]
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.request_id_header = name;
        self
    }

    /// How an error becomes `error.type`.
    ///
    /// Default: [`default_error_type`].
    #[must_use]
    pub fn error_type(mut self, f: ErrorTypeFn) -> Self {
        self.error_type = f;
        self
    }

    /// Whether the call span is an OpenTelemetry `INTERNAL` span rather than
    /// a `CLIENT` one.
    ///
    /// The semantic conventions make each physical request a `CLIENT` span
    /// and allow an `INTERNAL` span around them for the logical call. Turn
    /// this on when an [`AttemptTraceLayer`](crate::AttemptTraceLayer) sits
    /// inside, so that trace backends count each request once; leave it off
    /// when this is the only span of the call.
    ///
    /// Default: `false` (`otel.kind = "client"`).
    #[must_use]
    pub fn internal_kind(mut self, internal: bool) -> Self {
        self.kind = if internal { "internal" } else { "client" };
        self
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S> Trace<S> {
    /// Wraps `inner` with the defaults of [`TraceLayer::new`].
    pub fn new(inner: S) -> Self {
        TraceLayer::new().layer(inner)
    }

    /// A [`TraceLayer`] with its defaults.
    #[must_use]
    pub fn layer() -> TraceLayer {
        TraceLayer::new()
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

impl<S, B, RB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let layer = &self.layer;
        let span = client_span!(
            tracing::Level::INFO,
            req.method(),
            otel.kind = layer.kind,
            http.request.method = method_name(req.method()),
            http.request.method_original = method_original(req.method()),
            server.address = server_address(&req),
            server.port = server_port(req.uri()),
            url.full = %RedactedUri::new(req.uri()),
            request_id = req
                .headers()
                .get(&layer.request_id_header)
                .and_then(|v| v.to_str().ok()),
            http.response.status_code = Empty,
            error.type = Empty,
            otel.status_code = Empty,
            attempts = Empty,
            http.client.request.duration = Empty,
        );
        let state = if span.is_disabled() {
            None
        } else {
            let shared = CallShared::default();
            req.extensions_mut().insert(shared.clone());
            #[cfg(feature = "opentelemetry")]
            crate::common::inject_traceparent(&mut req, &span, false);
            Some(CallState {
                start: Instant::now(),
                shared,
                error_type: layer.error_type,
                id_from_response: !req.headers().contains_key(&layer.request_id_header),
            })
        };
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TraceFuture { inner, span, state }
    }
}

/// What a recorded call span needs at the end.
#[derive(Debug)]
struct CallState {
    start: Instant,
    shared: CallShared,
    error_type: ErrorTypeFn,
    id_from_response: bool,
}

pin_project! {
    /// The response future of [`Trace`]: the inner future, polled inside
    /// the call span.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        state: Option<CallState>,
    }
}

impl<F, RB, E> Future for TraceFuture<F>
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

fn finish<RB>(span: &Span, state: &CallState, res: &Result<Response<RB>, BoxError>) {
    span.record(
        "http.client.request.duration",
        state.start.elapsed().as_secs_f64(),
    );
    let attempts = match state.shared.attempts() {
        0 => res
            .as_ref()
            .ok()
            .and_then(|r| Attempt::get(r.extensions()))
            .map(Attempt::number),
        n => Some(n),
    };
    if let Some(n) = attempts {
        span.record("attempts", n);
    }
    match res {
        Ok(res) => {
            if state.id_from_response {
                if let Some(id) = RequestId::get(res.extensions()) {
                    span.record("request_id", display(id));
                }
            }
            let status = res.status();
            let code = status.as_u16();
            span.record("http.response.status_code", code);
            if status.is_client_error() || status.is_server_error() {
                span.record("error.type", status.as_str());
                span.record("otel.status_code", "ERROR");
            }
            if status.is_server_error() {
                tracing::warn!(parent: span, http.response.status_code = code, attempts, "http call failed: server error");
            } else if status.is_client_error() {
                tracing::info!(parent: span, http.response.status_code = code, attempts, "http call answered with a client error");
            } else {
                tracing::debug!(parent: span, http.response.status_code = code, attempts, "http call finished");
            }
        }
        Err(err) => {
            let kind = (state.error_type)(&**err);
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
            tracing::error!(parent: span, error.type = kind, error.message = %err, attempts, "http call failed without a response");
        }
    }
}
