//! [`MetricsLayer`]: the metrics of one logical call, however many
//! attempts it takes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::sync::{Arc, OnceLock};

use http::{Request, Response};
use metrics::{Gauge, Histogram, Label, counter, gauge, histogram};
use parapet_core::{Attempt, BoxError};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::common::{
    CallShared, ErrorTypeFn, Outcome, RetryRefusalFn, content_length, default_error_type,
};
use crate::handles::{ByOutcome, Registry, Target};
use crate::names;

/// Records the call-level metrics of the crate's table: the call's
/// duration, the requests in flight, the body sizes (from
/// `Content-Length`), the attempts per call and the retries refused.
///
/// Place it right below the call span (outside the retry layer), so that
/// it sees each logical call once; an
/// [`AttemptMetricsLayer`](crate::AttemptMetricsLayer) below the retry
/// layer reports to it (attempt counts, retry reasons) through the
/// request's extensions.
///
/// ```
/// use http::{Request, Response};
/// use parapet_metrics::MetricsLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = service_fn(|_req: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(()))
/// });
/// // With no recorder installed, the `metrics` facade discards everything.
/// let svc = MetricsLayer::new().layer(inner);
/// let res = svc.oneshot(Request::get("http://api.test/v1/things").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    error_type: ErrorTypeFn,
    retry_refusal: Option<RetryRefusalFn>,
    targets: Registry<CallHandles>,
}

impl MetricsLayer {
    /// The defaults: [`default_error_type`], no retry refusals read.
    #[must_use]
    pub fn new() -> Self {
        Self {
            error_type: default_error_type,
            retry_refusal: None,
            targets: Registry::new(),
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

    /// How a response says why it was not retried, for
    /// `parapet.client.retries_refused`.
    ///
    /// Default: none (the counter never moves).
    #[must_use]
    pub fn retry_refusal(mut self, f: impl Into<Option<RetryRefusalFn>>) -> Self {
        self.retry_refusal = f.into();
        self
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S> Metrics<S> {
    /// Wraps `inner` with the defaults of [`MetricsLayer::new`].
    pub fn new(inner: S) -> Self {
        MetricsLayer::new().layer(inner)
    }

    /// A [`MetricsLayer`] with its defaults.
    #[must_use]
    pub fn layer() -> MetricsLayer {
        MetricsLayer::new()
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

impl<S, B, RB> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let target = self.layer.targets.get(&req, |labels| CallHandles {
            active: gauge!(names::ACTIVE_REQUESTS, labels.to_vec()),
            attempts: histogram!(names::ATTEMPTS, labels.to_vec()),
            ended: ByOutcome::new(),
        });
        let active = Active::start(target.value.active.clone());
        let shared = CallShared::default();
        req.extensions_mut().insert(shared.clone());
        let state = CallState {
            start: Instant::now(),
            request_size: content_length(req.headers()),
            head: req.method() == http::Method::HEAD,
            target,
            shared,
            error_type: self.layer.error_type,
            retry_refusal: self.layer.retry_refusal,
            _active: active,
        };
        MetricsFuture {
            inner: self.inner.call(req),
            state: Some(state),
        }
    }
}

/// The handles of one method, host and port.
#[derive(Debug)]
pub(crate) struct CallHandles {
    active: Gauge,
    attempts: Histogram,
    ended: ByOutcome<Ended>,
}

/// The handles of one method, host, port and outcome. The body sizes are
/// registered only once a call has one to record.
#[derive(Debug)]
struct Ended {
    labels: Vec<Label>,
    duration: Histogram,
    request_size: OnceLock<Histogram>,
    response_size: OnceLock<Histogram>,
}

/// One request in flight: `http.client.active_requests` went up when it
/// was made and goes down when it is dropped, whether the call finished
/// or its future was dropped first.
#[derive(Debug)]
struct Active(Gauge);

impl Active {
    fn start(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What the call needs at its end.
#[derive(Debug)]
struct CallState {
    start: Instant,
    request_size: Option<u64>,
    head: bool,
    target: Arc<Target<CallHandles>>,
    shared: CallShared,
    error_type: ErrorTypeFn,
    retry_refusal: Option<RetryRefusalFn>,
    _active: Active,
}

pin_project! {
    /// The response future of [`Metrics`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        state: Option<CallState>,
    }
}

impl<F, RB, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(state) = this.state.take() {
            finish(state, &res);
        }
        Poll::Ready(res)
    }
}

#[allow(clippy::cast_precision_loss)] // byte counts far below 2^53
fn finish<RB>(state: CallState, res: &Result<Response<RB>, BoxError>) {
    let elapsed = state.start.elapsed().as_secs_f64();
    let target = &state.target;
    let mut response_size = None;
    let mut refusal = None;
    let attempts = match state.shared.attempts() {
        0 => res
            .as_ref()
            .ok()
            .map(|r| Attempt::get(r.extensions()).map_or(1, Attempt::number)),
        n => Some(n),
    };
    let outcome = match res {
        Ok(r) => {
            if !state.head {
                response_size = content_length(r.headers());
            }
            refusal = state.retry_refusal.and_then(|f| f(r.extensions()));
            Outcome::Status(r.status())
        }
        Err(e) => Outcome::Error((state.error_type)(&**e)),
    };
    let ended = target
        .value
        .ended
        .get(outcome, &target.labels, |labels| Ended {
            duration: histogram!(names::REQUEST_DURATION, labels.clone()),
            labels,
            request_size: OnceLock::new(),
            response_size: OnceLock::new(),
        });
    if let Some(n) = state.request_size {
        ended
            .request_size
            .get_or_init(|| histogram!(names::REQUEST_BODY_SIZE, ended.labels.clone()))
            .record(n as f64);
    }
    if let Some(n) = response_size {
        ended
            .response_size
            .get_or_init(|| histogram!(names::RESPONSE_BODY_SIZE, ended.labels.clone()))
            .record(n as f64);
    }
    ended.duration.record(elapsed);
    if let Some(n) = attempts {
        target.value.attempts.record(f64::from(n));
    }
    if let Some(reason) = refusal {
        let mut labels = target.labels.clone();
        labels.push(Label::from_static_parts("reason", reason));
        counter!(names::RETRIES_REFUSED, labels).increment(1);
    }
    // The gauge goes down: the call is no longer in flight.
    drop(state);
}
