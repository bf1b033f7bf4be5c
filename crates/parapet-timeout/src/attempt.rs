//! The bound on one attempt, and the body limits of its response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use parapet_core::{BoxError, Deadline, far_future};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::TimeoutBody;
use crate::error::AttemptTimedOut;

/// Bounds each attempt, from the call until the response headers, and
/// optionally the reading of its response body.
///
/// The limit of an attempt is the smaller of the layer's own limit and the
/// time left before the call's [`Deadline`] (if the request carries one). An
/// attempt that runs out fails with [`AttemptTimedOut`], which says which of
/// the two applied.
///
/// The response body can be bounded too, per attempt:
/// [`body_idle_timeout`](Self::body_idle_timeout) (the longest wait for the
/// next frame) and [`body_timeout`](Self::body_timeout) (the longest time
/// from the headers to the body's end). They fail the body with
/// [`BodyTimedOut`](crate::BodyTimedOut).
///
/// Place it inside the retry layer, just above the HTTP client, so that each
/// attempt gets its own limit and only the time on the wire counts.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use parapet_core::Deadline;
/// use parapet_timeout::{AttemptTimedOut, AttemptTimeoutLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// let mut svc = ServiceBuilder::new()
///     .layer(AttemptTimeoutLayer::new(Duration::from_secs(5))
///         .body_idle_timeout(Duration::from_secs(2)))
///     .service_fn(|_req: http::Request<()>| async {
///         tokio::time::sleep(Duration::from_secs(60)).await;
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
///
/// // Only one second is left before the call's deadline: it is the limit.
/// let mut req = http::Request::new(());
/// Deadline::after(Duration::from_secs(1)).apply(req.extensions_mut());
/// let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
/// let timed_out = err.downcast_ref::<AttemptTimedOut>().unwrap();
/// assert!(timed_out.is_deadline());
/// assert_eq!(timed_out.limit(), Duration::from_secs(1));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    limit: Duration,
    body_idle: Option<Duration>,
    body_total: Option<Duration>,
}

impl AttemptTimeoutLayer {
    /// A limit of `limit` on each attempt, until its response headers.
    /// `Duration::MAX` means no limit of the layer's own (the call's
    /// deadline still applies).
    #[must_use]
    pub const fn new(limit: Duration) -> Self {
        Self {
            limit,
            body_idle: None,
            body_total: None,
        }
    }

    /// The longest the response body may wait for its next frame (for the
    /// first one, counted from the headers); `None` disables it.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn body_idle_timeout(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.body_idle = idle.into();
        self
    }

    /// The longest the response body may take, from the response headers to
    /// its last frame; `None` disables it. The call's deadline, which by
    /// default covers the body too, is set on
    /// [`DeadlineLayer`](crate::DeadlineLayer) instead.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn body_timeout(mut self, total: impl Into<Option<Duration>>) -> Self {
        self.body_total = total.into();
        self
    }

    /// The layer's own limit on each attempt.
    #[must_use]
    pub const fn limit(&self) -> Duration {
        self.limit
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            config: *self,
        }
    }
}

/// The service of [`AttemptTimeoutLayer`]: bounds each attempt.
///
/// Its response body is a [`TimeoutBody`] with the layer's body limits, if
/// any.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    config: AttemptTimeoutLayer,
}

impl<S> AttemptTimeout<S> {
    /// Wraps `inner` with a limit of `limit` on each attempt (no body limits;
    /// see [`AttemptTimeoutLayer`] for those).
    pub const fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            config: AttemptTimeoutLayer::new(limit),
        }
    }

    /// An [`AttemptTimeoutLayer`] with this limit.
    #[must_use]
    pub const fn layer(limit: Duration) -> AttemptTimeoutLayer {
        AttemptTimeoutLayer::new(limit)
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AttemptTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<ResBody>>;
    type Error = BoxError;
    type Future = AttemptTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        let own = now
            .checked_add(self.config.limit)
            .unwrap_or_else(|| far_future(now));
        let (at, by_deadline) = match Deadline::get(req.extensions()) {
            // NOTE: on a tie the deadline is reported: no attempt can follow.
            Some(deadline) if deadline.instant() <= own => (deadline.instant(), true),
            _ => (own, false),
        };
        AttemptTimeoutFuture {
            inner: self.inner.call(req),
            sleep: None,
            at,
            error: AttemptTimedOut::new(at.saturating_duration_since(now), by_deadline),
            body_idle: self.config.body_idle,
            body_total: self.config.body_total,
        }
    }
}

pin_project! {
    /// The response future of [`AttemptTimeout`].
    ///
    /// Holds the inner future and, once it has had to wait, the attempt's
    /// timer, both inline. Dropping it drops both.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct AttemptTimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        at: Instant,
        error: AttemptTimedOut,
        body_idle: Option<Duration>,
        body_total: Option<Duration>,
    }
}

impl<F, B, E> Future for AttemptTimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // NOTE: a limit of zero (the deadline had already passed) fails
        // without polling the inner future, so nothing is sent.
        if this.error.limit().is_zero() {
            return Poll::Ready(Err(this.error.clone().into()));
        }
        match this.inner.poll(cx) {
            Poll::Ready(Ok(res)) => {
                let (idle, total) = (*this.body_idle, *this.body_total);
                return Poll::Ready(Ok(res.map(|body| {
                    let mut body = TimeoutBody::unlimited(body);
                    if let Some(total) = total {
                        body = body.with_total(total);
                    }
                    if let Some(idle) = idle {
                        body = body.with_idle(idle);
                    }
                    body
                })));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => {}
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(*this.at)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        Poll::Ready(Err(this.error.clone().into()))
    }
}
