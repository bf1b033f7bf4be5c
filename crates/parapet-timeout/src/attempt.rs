//! The bound on one attempt, and the body limits of its response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use parapet_core::{BoxError, Deadline, far_future};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::TimeoutBody;
use crate::error::AttemptTimedOut;
use crate::timer::Timer;

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

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clock read an outer layer holds for this call's set-up, if any.
        let now = parapet_core::clock::now();
        let limit = AttemptLimit::get(req.extensions()).unwrap_or(self.config.limit);
        let own = now.checked_add(limit).unwrap_or_else(|| far_future(now));
        let (at, by_deadline) = match Deadline::current(req.extensions()) {
            // NOTE: on a tie the deadline is reported: no attempt can follow.
            Some(deadline) if deadline.instant() <= own => (deadline.instant(), true),
            _ => (own, false),
        };
        AttemptTimeoutFuture {
            inner: self.inner.call(req),
            timer: Timer::new(at),
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
        timer: Timer,
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
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
        let mut timer = this.timer;
        if timer.as_mut().poll_elapsed(cx).is_pending() {
            // Registered with this context: a deadline above need not arm
            // its own timer, since this one fires no later.
            parapet_core::clock::will_wake_by(timer.instant());
            return Poll::Pending;
        }
        Poll::Ready(Err(this.error.clone().into()))
    }
}

/// A request extension that replaces the [`AttemptTimeout`]'s limit for
/// this request's attempts (the deadline, if earlier, still applies). The
/// body timeouts are unchanged. A stack without an attempt timeout layer
/// ignores it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use parapet_timeout::{AttemptLimit, AttemptTimedOut, AttemptTimeoutLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// let svc = ServiceBuilder::new()
///     .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
///     .service_fn(|_req: http::Request<()>| async {
///         tokio::time::sleep(Duration::from_secs(2)).await;
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
///     });
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(AttemptLimit(Duration::from_secs(1)));
/// let err = svc.oneshot(req).await.unwrap_err();
/// assert!(err.is::<AttemptTimedOut>());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptLimit(pub Duration);

impl AttemptLimit {
    /// The limit in these (request) extensions, if any.
    #[must_use]
    pub fn get(ext: &http::Extensions) -> Option<Duration> {
        ext.get::<Self>().map(|l| l.0)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tokio::time::sleep;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::BodyTimedOut;
    use crate::test_support::{DropFlag, Script, assert_elapsed};
    use tokio::time::Instant;

    const SEC: Duration = Duration::from_secs(1);

    fn after(
        delay: Duration,
    ) -> impl Service<
        Request<()>,
        Response = Response<Script>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Script>, Infallible>>,
    > + Clone {
        service_fn(move |_req: Request<()>| async move {
            sleep(delay).await;
            Ok(Response::new(Script::drip(5, SEC)))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_s_attempt_limit_replaces_the_layer_s() {
        let layer = AttemptTimeoutLayer::new(2 * SEC);
        // Shorter: times out at 1 s.
        let start = Instant::now();
        let mut req = Request::new(());
        req.extensions_mut().insert(AttemptLimit(SEC));
        let err = layer.layer(after(60 * SEC)).oneshot(req).await.unwrap_err();
        assert_elapsed(start, SEC);
        assert!(err.is::<AttemptTimedOut>());
        // Longer: a 5 s answer gets through a 2 s layer.
        let start = Instant::now();
        let mut req = Request::new(());
        req.extensions_mut().insert(AttemptLimit(10 * SEC));
        layer.layer(after(5 * SEC)).oneshot(req).await.unwrap();
        assert_elapsed(start, 5 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_the_own_limit_applies() {
        let start = Instant::now();
        let err = AttemptTimeoutLayer::new(2 * SEC)
            .layer(after(60 * SEC))
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        assert_elapsed(start, 2 * SEC);
        let timed_out = err.downcast_ref::<AttemptTimedOut>().unwrap();
        assert!(timed_out.is_attempt_limit() && !timed_out.is_deadline());
        assert_eq!(timed_out.limit(), 2 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nearer_caller_set_deadline_shortens_the_attempt() {
        let start = Instant::now();
        let mut req = Request::new(());
        Deadline::after(Duration::from_millis(1500)).apply(req.extensions_mut());
        let err = AttemptTimeoutLayer::new(2 * SEC)
            .layer(after(60 * SEC))
            .oneshot(req)
            .await
            .unwrap_err();
        assert_elapsed(start, Duration::from_millis(1500));
        let timed_out = err.downcast_ref::<AttemptTimedOut>().unwrap();
        assert!(timed_out.is_deadline());
        assert_eq!(timed_out.limit(), Duration::from_millis(1500));
        assert_eq!(
            timed_out.to_string(),
            "attempt timed out after 1.5s (call deadline)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_farther_deadline_leaves_the_own_limit() {
        let start = Instant::now();
        let mut req = Request::new(());
        Deadline::after(30 * SEC).apply(req.extensions_mut());
        let err = AttemptTimeoutLayer::new(2 * SEC)
            .layer(after(60 * SEC))
            .oneshot(req)
            .await
            .unwrap_err();
        assert_elapsed(start, 2 * SEC);
        assert!(
            err.downcast_ref::<AttemptTimedOut>()
                .unwrap()
                .is_attempt_limit()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_past_deadline_fails_the_attempt_without_polling_the_inner_future() {
        let polled = Arc::new(AtomicBool::new(false));
        let probe = Arc::clone(&polled);
        let inner = service_fn(move |_req: Request<()>| {
            let polled = Arc::clone(&probe);
            async move {
                polled.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let mut req = Request::new(());
        Deadline::after(SEC).apply(req.extensions_mut());
        tokio::time::advance(SEC).await;

        let err = AttemptTimeoutLayer::new(SEC)
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap_err();

        let timed_out = err.downcast_ref::<AttemptTimedOut>().unwrap();
        assert!(timed_out.is_deadline());
        assert_eq!(timed_out.limit(), Duration::ZERO);
        assert!(!polled.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_gets_a_fresh_limit() {
        let svc = AttemptTimeoutLayer::new(2 * SEC).layer(after(Duration::from_millis(1500)));
        for _ in 0..3 {
            let res = svc.clone().oneshot(Request::new(())).await;
            assert!(res.is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_attempt_limit_ends_at_the_headers() {
        let start = Instant::now();
        // Headers after 1 s, then five frames a second apart: 6 s in all.
        let res = AttemptTimeoutLayer::new(2 * SEC)
            .layer(after(SEC))
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "xxxxx");
        assert_elapsed(start, 6 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_limits_apply_to_the_attempts_body() {
        let layer = AttemptTimeoutLayer::new(2 * SEC).body_idle_timeout(SEC / 2);
        let start = Instant::now();
        let res = layer
            .layer(after(SEC))
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let err = res.into_body().collect().await.unwrap_err();
        // The first frame is a second after the headers: idle after half.
        assert_elapsed(start, Duration::from_millis(1500));
        assert!(err.downcast_ref::<BodyTimedOut>().unwrap().is_idle());

        let layer = AttemptTimeoutLayer::new(2 * SEC)
            .body_timeout(Duration::from_millis(2500))
            .body_idle_timeout(None);
        let start = Instant::now();
        let res = layer
            .layer(after(SEC))
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let err = res.into_body().collect().await.unwrap_err();
        // The total counts from the headers (at 1 s).
        assert_elapsed(start, Duration::from_millis(3500));
        let total = err.downcast_ref::<BodyTimedOut>().unwrap();
        assert!(total.is_total());
        assert_eq!(total.limit(), Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_future_mid_wait_drops_the_inner_future() {
        let (flag, dropped) = DropFlag::new();
        let flag = Mutex::new(Some(flag));
        let inner = service_fn(move |_req: Request<()>| {
            let flag = flag.lock().unwrap().take();
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let mut svc = AttemptTimeoutLayer::new(10 * SEC).layer(inner);
        let mut fut = Box::pin(svc.ready().await.unwrap().call(Request::new(())));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(SEC).await;
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(!dropped.load(Ordering::SeqCst));

        drop(fut);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn the_service_has_the_usual_accessors() {
        let mut svc = AttemptTimeout::new(0_u8, SEC);
        *svc.get_mut() += 1;
        assert_eq!(*svc.get_ref(), 1);
        assert_eq!(svc.clone().into_inner(), 1);
        assert_eq!(AttemptTimeout::<u8>::layer(SEC).limit(), SEC);
    }
}
