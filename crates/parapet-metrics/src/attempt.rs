//! [`AttemptMetricsLayer`]: the metrics of each request that leaves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::sync::Arc;

use http::{Request, Response};
use metrics::{Histogram, Label, counter, histogram};
use parapet_core::{Attempt, BoxError};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::common::{CallShared, ErrorTypeFn, Outcome, default_error_type};
use crate::handles::{ByOutcome, Registry, Target};
use crate::names;

/// Records each attempt's duration (`parapet.client.attempt.duration`)
/// and, under a [`MetricsLayer`](crate::MetricsLayer), counts the call's
/// attempts and its retries by reason (`parapet.client.retries`).
///
/// Place it below the retry layer (and below redirects), so that it sees
/// every request that leaves. A retry's reason is what the attempt before
/// it ended with: its status code (`503`, `429`) or its `error.type`
/// (`connection_refused`, `timeout`). A redirect hop is an attempt but not
/// a retry. Without a [`MetricsLayer`](crate::MetricsLayer) above, there
/// is no call to count in, and retries are not counted.
///
/// ```
/// use http::{Request, Response};
/// use parapet_metrics::{AttemptMetricsLayer, MetricsLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = service_fn(|_req: Request<()>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(()))
/// });
/// let svc = ServiceBuilder::new()
///     .layer(MetricsLayer::new())
///     // ... a retry layer goes here ...
///     .layer(AttemptMetricsLayer::new())
///     .service(inner);
/// let res = svc.oneshot(Request::get("http://api.test/").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptMetricsLayer {
    error_type: ErrorTypeFn,
    targets: Registry<ByOutcome<Histogram>>,
}

impl AttemptMetricsLayer {
    /// The defaults: [`default_error_type`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            error_type: default_error_type,
            targets: Registry::new(),
        }
    }

    /// How an error becomes `error.type` (and a retry's `reason`).
    ///
    /// Default: [`default_error_type`].
    #[must_use]
    pub fn error_type(mut self, f: ErrorTypeFn) -> Self {
        self.error_type = f;
        self
    }
}

impl Default for AttemptMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for AttemptMetricsLayer {
    type Service = AttemptMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`AttemptMetricsLayer`].
#[derive(Debug, Clone)]
pub struct AttemptMetrics<S> {
    inner: S,
    layer: AttemptMetricsLayer,
}

impl<S> AttemptMetrics<S> {
    /// Wraps `inner` with the defaults of [`AttemptMetricsLayer::new`].
    pub fn new(inner: S) -> Self {
        AttemptMetricsLayer::new().layer(inner)
    }

    /// An [`AttemptMetricsLayer`] with its defaults.
    #[must_use]
    pub fn layer() -> AttemptMetricsLayer {
        AttemptMetricsLayer::new()
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

impl<S, B, RB> Service<Request<B>> for AttemptMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = AttemptMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let target = self
            .layer
            .targets
            .get(&req, |_| ByOutcome::<Histogram>::new());
        let shared = req.extensions().get::<CallShared>().cloned();
        if let Some(shared) = &shared {
            shared.count_attempt();
            let number = Attempt::get(req.extensions()).map_or(1, Attempt::number);
            let retry_of = shared
                .last()
                .filter(|o| !matches!(o, Outcome::Status(s) if s.is_redirection()));
            if let (true, Some(last)) = (number > 1, retry_of) {
                let mut labels = target.labels.clone();
                labels.push(Label::new("reason", last.reason()));
                counter!(names::RETRIES, labels).increment(1);
            }
        }
        AttemptMetricsFuture {
            inner: self.inner.call(req),
            state: Some(AttemptState {
                start: Instant::now(),
                target,
                shared,
                error_type: self.layer.error_type,
            }),
        }
    }
}

/// What an attempt needs at its end.
#[derive(Debug)]
struct AttemptState {
    start: Instant,
    target: Arc<Target<ByOutcome<Histogram>>>,
    shared: Option<CallShared>,
    error_type: ErrorTypeFn,
}

pin_project! {
    /// The response future of [`AttemptMetrics`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct AttemptMetricsFuture<F> {
        #[pin]
        inner: F,
        state: Option<AttemptState>,
    }
}

impl<F, RB, E> Future for AttemptMetricsFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(state) = this.state.take() {
            let elapsed = state.start.elapsed().as_secs_f64();
            let outcome = match &res {
                Ok(r) => Outcome::Status(r.status()),
                Err(e) => Outcome::Error((state.error_type)(&**e)),
            };
            if let Some(shared) = &state.shared {
                shared.set_last(outcome);
            }
            let target = &state.target;
            target
                .value
                .get(outcome, &target.labels, |labels| {
                    histogram!(names::ATTEMPT_DURATION, labels)
                })
                .record(elapsed);
        }
        Poll::Ready(res)
    }
}
