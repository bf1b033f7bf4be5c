//! The deadline of the whole call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use parapet_core::{BoxError, Deadline, far_future};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{BodyDeadline, TimeoutBody};
use crate::error::{AttemptTimedOut, DeadlineExceeded};
use crate::timer::BoxedTimer;

/// Sets a deadline for the whole call, retries and waits included, and fails
/// the call with [`DeadlineExceeded`] when it passes.
///
/// On each call the deadline is `budget` from now, or the one already in
/// force if that is earlier: a [`Deadline`] the caller put in the request's
/// extensions, or the deadline of an enclosing call (see
/// [`Deadline::current`]). The layer makes it the deadline *in scope*
/// ([`Deadline::enter`]) while it calls its inner service and while it polls
/// the inner future, so every layer beneath reads it with
/// [`Deadline::current`] and never starts a wait that would end after it.
/// By default the deadline also covers reading the response body; see
/// [`cover_body`](Self::cover_body) and [`BodyDeadline`].
///
/// The request's extensions are left alone unless you ask for
/// [`in_extensions`](Self::in_extensions): a value in empty extensions costs
/// three heap allocations, and a retry layer's copy of the request three
/// more, for a number the inner layers can read from scope for free. Ask for
/// it when a layer beneath hands the request to another task (a
/// `tower::buffer::Buffer`, say), where the scope does not reach.
///
/// Place it outside the retry layer, so that its budget spans every attempt
/// and the waits between them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use parapet_core::Deadline;
/// use parapet_timeout::DeadlineLayer;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// let mut svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_secs(10)))
///     .service_fn(|req: http::Request<()>| {
///         // Inner layers see the deadline while they are called and polled.
///         let left = Deadline::current(req.extensions()).unwrap().remaining();
///         async move { Ok::<_, std::convert::Infallible>(http::Response::new(left)) }
///     });
/// let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// assert_eq!(res.body().get_ref(), Some(&Duration::from_secs(10)));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    budget: Duration,
    cover_body: bool,
    in_extensions: bool,
}

impl DeadlineLayer {
    /// A deadline `budget` after each call starts. A budget of zero fails
    /// every call at once; `Duration::MAX` means no deadline of the layer's
    /// own (a caller's deadline still applies).
    #[must_use]
    pub const fn new(budget: Duration) -> Self {
        Self {
            budget,
            cover_body: true,
            in_extensions: false,
        }
    }

    /// Whether the deadline also runs until the response body's last frame.
    ///
    /// Default: `true`. A request's [`BodyDeadline`] extension overrides it.
    #[must_use]
    pub const fn cover_body(mut self, cover: bool) -> Self {
        self.cover_body = cover;
        self
    }

    /// Whether the deadline is also stored in each request's extensions
    /// ([`Deadline::apply`]), where it travels with the request to other
    /// tasks.
    ///
    /// Default: `false`: inner layers read the deadline from scope (see the
    /// type's docs), which costs nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use parapet_core::Deadline;
    /// use parapet_timeout::DeadlineLayer;
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(DeadlineLayer::new(Duration::from_secs(10)).in_extensions(true))
    ///     .service_fn(|req: http::Request<()>| async move {
    ///         // The request itself carries it, even inside the async block.
    ///         let carried = Deadline::get(req.extensions()).is_some();
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(carried))
    ///     });
    /// let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    /// assert_eq!(res.body().get_ref(), Some(&true));
    /// # }
    /// ```
    #[must_use]
    pub const fn in_extensions(mut self, store: bool) -> Self {
        self.in_extensions = store;
        self
    }

    /// The budget of each call.
    #[must_use]
    pub const fn budget(&self) -> Duration {
        self.budget
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = CallDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallDeadline {
            inner,
            config: *self,
        }
    }
}

/// The service of [`DeadlineLayer`]: bounds each call by its deadline.
///
/// Its response body is a [`TimeoutBody`] bounded by the same deadline,
/// unless the body is exempt.
#[derive(Debug, Clone)]
pub struct CallDeadline<S> {
    inner: S,
    config: DeadlineLayer,
}

impl<S> CallDeadline<S> {
    /// Wraps `inner` with a deadline `budget` after each call starts (the
    /// body covered; see [`DeadlineLayer`] for the options).
    pub const fn new(inner: S, budget: Duration) -> Self {
        Self {
            inner,
            config: DeadlineLayer::new(budget),
        }
    }

    /// A [`DeadlineLayer`] with this budget.
    #[must_use]
    pub const fn layer(budget: Duration) -> DeadlineLayer {
        DeadlineLayer::new(budget)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CallDeadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<ResBody>>;
    type Error = BoxError;
    type Future = CallDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let now = parapet_core::clock::now();
        let own = now
            .checked_add(self.config.budget)
            .unwrap_or_else(|| far_future(now));
        let cover_body = BodyDeadline::get(req.extensions())
            .map_or(self.config.cover_body, BodyDeadline::is_covered);
        let deadline = match Deadline::current(req.extensions()) {
            Some(earlier) if earlier.instant() <= own => earlier,
            _ => Deadline::at(own),
        };
        if self.config.in_extensions {
            deadline.apply(req.extensions_mut());
        }
        let inner = {
            let _scope = deadline.enter();
            // The layers beneath set the call up within the same
            // microsecond: they share this clock read.
            let _now = parapet_core::clock::hold(now);
            self.inner.call(req)
        };
        CallDeadlineFuture {
            inner,
            timer: BoxedTimer::new(deadline.instant()),
            cover_body,
            expired: deadline.instant() <= now,
        }
    }
}

pin_project! {
    /// The response future of [`CallDeadline`].
    ///
    /// Holds the inner future inline and, once it has had to wait with no
    /// earlier timer beneath it, the deadline's timer in a box (see the
    /// crate docs on timers). Dropping it drops both.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct CallDeadlineFuture<F> {
        #[pin]
        inner: F,
        timer: BoxedTimer,
        cover_body: bool,
        expired: bool,
    }
}

impl<F, B, E> Future for CallDeadlineFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<B>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let deadline = Deadline::at(this.timer.instant());
        // NOTE: a deadline already past when the call started (a caller's)
        // fails without polling the inner future, so nothing is sent.
        if *this.expired {
            return Poll::Ready(Err(DeadlineExceeded::new(deadline, false).into()));
        }
        let (polled, promised) = {
            let _scope = deadline.enter();
            parapet_core::clock::watch_wakeups(|| this.inner.poll(cx))
        };
        match polled {
            Poll::Ready(Ok(res)) => {
                let cover_body = *this.cover_body;
                return Poll::Ready(Ok(res.map(|body| {
                    let body = TimeoutBody::unlimited(body);
                    if cover_body {
                        body.with_deadline(deadline)
                    } else {
                        body
                    }
                })));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(fold_deadline(e.into(), deadline))),
            Poll::Pending => {}
        }
        // An inner timer (the attempt's, usually) that wakes the task by the
        // deadline makes this one unnecessary for now: the task is polled
        // again by then and looks again. Over the network that saves one
        // timer registration per call.
        if let Some(by) = promised {
            if by <= deadline.instant() && !this.timer.is_armed() {
                parapet_core::clock::will_wake_by(by);
                return Poll::Pending;
            }
        }
        if this.timer.poll_elapsed(cx).is_pending() {
            parapet_core::clock::will_wake_by(
                promised.map_or(deadline.instant(), |by| by.min(deadline.instant())),
            );
            return Poll::Pending;
        }
        Poll::Ready(Err(DeadlineExceeded::new(deadline, false).into()))
    }
}

/// An inner attempt cut short by this very deadline is reported as the
/// deadline passing, with the attempt's error as its source.
fn fold_deadline(err: BoxError, deadline: Deadline) -> BoxError {
    match err.downcast_ref::<AttemptTimedOut>() {
        Some(attempt) if attempt.is_deadline() && deadline.has_passed() => {
            DeadlineExceeded::new(deadline, false)
                .with_source(err)
                .into()
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::error::Error as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body::Body as _;
    use http_body_util::{BodyExt, Empty, Full};
    use tokio::time::sleep;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::test_support::{DropFlag, Script, assert_elapsed};
    use crate::{AttemptTimedOut, AttemptTimeoutLayer, BodyTimedOut};
    use tokio::time::Instant;

    const SEC: Duration = Duration::from_secs(1);

    /// A service that answers "ok" after `delay`, recording the deadline it saw.
    fn slow(
        delay: Duration,
        seen: Arc<std::sync::Mutex<Option<Deadline>>>,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>>,
    > + Clone {
        service_fn(move |req: Request<()>| {
            *seen.lock().unwrap() = Deadline::current(req.extensions());
            async move {
                sleep(delay).await;
                Ok(Response::new(Full::from("ok")))
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_slower_than_the_budget_fails_at_the_deadline() {
        let seen = Arc::default();
        let svc = DeadlineLayer::new(SEC).layer(slow(5 * SEC, Arc::clone(&seen)));
        let start = Instant::now();

        let err = svc.oneshot(Request::new(())).await.unwrap_err();

        assert_elapsed(start, SEC);
        let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
        assert!(!exceeded.is_body());
        assert_eq!(exceeded.deadline().instant(), start + SEC);
        assert_eq!(seen.lock().unwrap().unwrap().instant(), start + SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_in_scope_for_the_inner_call_and_polls_only() {
        let start = Instant::now();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let inner = service_fn(move |req: Request<()>| {
            let log = Arc::clone(&log);
            // In `call`: in scope, and not in the request's extensions.
            log.lock().unwrap().push(Deadline::in_scope());
            log.lock().unwrap().push(Deadline::get(req.extensions()));
            async move {
                sleep(SEC).await;
                // In every poll, after a wait too.
                log.lock().unwrap().push(Deadline::in_scope());
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let svc = DeadlineLayer::new(3 * SEC).layer(inner);
        svc.oneshot(Request::new(())).await.unwrap();

        let d = Some(Deadline::at(start + 3 * SEC));
        assert_eq!(*seen.lock().unwrap(), vec![d, None, d]);
        // Gone once the call's future is not being polled.
        assert_eq!(Deadline::in_scope(), None);
    }

    /// A service whose calls never answer and hold no timer.
    fn hang() -> impl Service<
        Request<()>,
        Response = Response<Empty<Bytes>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Empty<Bytes>>, Infallible>>,
    > + Clone {
        service_fn(|_req: Request<()>| std::future::pending())
    }

    /// Calls an always-ready service once, without driving it ready.
    fn call<S: Service<Request<()>>>(mut svc: S) -> S::Future {
        svc.call(Request::new(()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_attempt_timer_stands_in_for_the_deadline_timer() {
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(5 * SEC))
            .layer(AttemptTimeoutLayer::new(SEC))
            .service(hang());
        let mut fut = std::pin::pin!(svc.oneshot(Request::new(())));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // One poll in: the attempt's timer is armed, the deadline's is not.
        let start = Instant::now();
        let err = fut.await.unwrap_err();
        assert_elapsed(start, SEC);
        assert!(err.is::<AttemptTimedOut>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_timer_is_skipped_only_while_an_earlier_one_is_armed() {
        let inner = AttemptTimeoutLayer::new(SEC).layer(hang());
        let mut fut = std::pin::pin!(call(DeadlineLayer::new(5 * SEC).layer(inner)));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(
            !fut.timer.is_armed(),
            "the attempt's timer wakes the task first"
        );

        // A longer attempt limit is shortened to the deadline (it reads it
        // in scope), and its timer still stands in.
        let inner = AttemptTimeoutLayer::new(10 * SEC).layer(hang());
        let mut fut = std::pin::pin!(call(DeadlineLayer::new(5 * SEC).layer(inner)));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(!fut.timer.is_armed());

        // Nothing beneath holds a timer: the deadline arms its own.
        let mut fut = std::pin::pin!(call(DeadlineLayer::new(5 * SEC).layer(hang())));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.timer.is_armed());
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_covering_attempt_fails_the_deadline_still_fires() {
        // An attempt (1 s) fails, then the inner future waits with no timer
        // of its own: the deadline must arm then and fire at 3 s.
        let inner = service_fn(|req: Request<()>| async move {
            let attempt = AttemptTimeoutLayer::new(SEC)
                .layer(hang())
                .oneshot(req)
                .await;
            assert!(attempt.is_err());
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
        });
        let start = Instant::now();
        let err = DeadlineLayer::new(3 * SEC)
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        assert_elapsed(start, 3 * SEC);
        assert!(err.is::<DeadlineExceeded>());
    }

    #[tokio::test(start_paused = true)]
    async fn in_extensions_stores_it_in_the_request_too() {
        let start = Instant::now();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let log = Arc::clone(&seen);
        let inner = service_fn(move |req: Request<()>| {
            *log.lock().unwrap() = Deadline::get(req.extensions());
            async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
        });
        let svc = DeadlineLayer::new(3 * SEC).in_extensions(true).layer(inner);
        svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(Deadline::at(start + 3 * SEC)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_nested_deadline_layer_keeps_the_outer_earlier_deadline() {
        let seen = Arc::default();
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(SEC))
            .layer(DeadlineLayer::new(10 * SEC))
            .service(slow(5 * SEC, Arc::clone(&seen)));
        let start = Instant::now();

        let err = svc.oneshot(Request::new(())).await.unwrap_err();

        assert_elapsed(start, SEC);
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(seen.lock().unwrap().unwrap().instant(), start + SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_budget_passes_through() {
        let svc = DeadlineLayer::new(5 * SEC).layer(slow(SEC, Arc::default()));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_caller_set_deadline_wins() {
        let seen = Arc::default();
        let svc = DeadlineLayer::new(10 * SEC).layer(slow(5 * SEC, Arc::clone(&seen)));
        let start = Instant::now();
        let mut req = Request::new(());
        let caller = Deadline::after(2 * SEC);
        caller.apply(req.extensions_mut());

        let err = svc.oneshot(req).await.unwrap_err();

        assert_elapsed(start, 2 * SEC);
        assert_eq!(
            err.downcast_ref::<DeadlineExceeded>().unwrap().deadline(),
            caller
        );
        assert_eq!(*seen.lock().unwrap(), Some(caller));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_caller_set_deadline_does_not_extend_the_budget() {
        let seen = Arc::default();
        let svc = DeadlineLayer::new(SEC).layer(slow(5 * SEC, Arc::clone(&seen)));
        let start = Instant::now();
        let mut req = Request::new(());
        Deadline::after(60 * SEC).apply(req.extensions_mut());

        let err = svc.oneshot(req).await.unwrap_err();

        assert_elapsed(start, SEC);
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(seen.lock().unwrap().unwrap().instant(), start + SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_fails_without_polling_the_inner_future() {
        let polled = Arc::new(AtomicBool::new(false));
        let probe = Arc::clone(&polled);
        let inner = service_fn(move |_req: Request<()>| {
            let polled = Arc::clone(&probe);
            async move {
                polled.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let svc = DeadlineLayer::new(SEC).layer(inner);
        let mut req = Request::new(());
        Deadline::after(SEC).apply(req.extensions_mut());
        tokio::time::advance(2 * SEC).await;

        let err = svc.oneshot(req).await.unwrap_err();

        assert!(err.is::<DeadlineExceeded>());
        assert!(!polled.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_shorter_than_the_attempt_limit_wins_and_is_reported_as_the_deadline() {
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(SEC))
            .layer(AttemptTimeoutLayer::new(5 * SEC))
            .service(slow(60 * SEC, Arc::default()));
        let start = Instant::now();

        let err = svc.oneshot(Request::new(())).await.unwrap_err();

        assert_elapsed(start, SEC);
        let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
        // The attempt layer noticed first (same instant); its error says so.
        let attempt = exceeded
            .source()
            .unwrap()
            .downcast_ref::<AttemptTimedOut>()
            .unwrap();
        assert!(attempt.is_deadline());
        assert_eq!(attempt.limit(), SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_limit_shorter_than_the_deadline_is_reported_as_the_attempt_limit() {
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(10 * SEC))
            .layer(AttemptTimeoutLayer::new(2 * SEC))
            .service(slow(60 * SEC, Arc::default()));
        let start = Instant::now();

        let err = svc.oneshot(Request::new(())).await.unwrap_err();

        assert_elapsed(start, 2 * SEC);
        let attempt = err.downcast_ref::<AttemptTimedOut>().unwrap();
        assert!(attempt.is_attempt_limit());
        assert_eq!(attempt.limit(), 2 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_spans_every_attempt_of_a_retry_loop() {
        // A stand-in retry between the layers: retries attempt timeouts
        // that hit the attempt limit, forever.
        let inner = ServiceBuilder::new()
            .layer(AttemptTimeoutLayer::new(2 * SEC))
            .service(slow(60 * SEC, Arc::default()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&attempts);
        let retry = service_fn(move |req: Request<()>| {
            let inner = inner.clone();
            let attempts = Arc::clone(&counter);
            async move {
                loop {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let mut again = Request::new(());
                    *again.extensions_mut() = req.extensions().clone();
                    match inner.clone().oneshot(again).await {
                        Err(e)
                            if e.downcast_ref::<AttemptTimedOut>()
                                .is_some_and(AttemptTimedOut::is_attempt_limit) => {}
                        other => return other,
                    }
                }
            }
        });
        let svc = DeadlineLayer::new(5 * SEC).layer(retry);
        let start = Instant::now();

        let err = svc.oneshot(Request::new(())).await.unwrap_err();

        // Attempts at 0 s and 2 s hit their limit; the third is cut to 1 s.
        assert_elapsed(start, 5 * SEC);
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert!(err.is::<DeadlineExceeded>());
    }

    #[tokio::test(start_paused = true)]
    async fn by_default_the_deadline_covers_the_body() {
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Script::drip(10, SEC)))
        });
        let svc = DeadlineLayer::new(Duration::from_millis(3500)).layer(inner);
        let start = Instant::now();
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let mut body = std::pin::pin!(res.into_body());

        let mut frames = 0;
        let err = loop {
            match body.frame().await.unwrap() {
                Ok(_) => frames += 1,
                Err(e) => break e,
            }
        };

        assert_elapsed(start, Duration::from_millis(3500));
        assert_eq!(frames, 3);
        assert!(err.downcast_ref::<DeadlineExceeded>().unwrap().is_body());
    }

    #[tokio::test(start_paused = true)]
    async fn an_exempt_body_outlives_the_deadline() {
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Script::drip(10, SEC)))
        });
        let svc = DeadlineLayer::new(2 * SEC).layer(inner);
        let mut req = Request::new(());
        req.extensions_mut().insert(BodyDeadline::exempt());

        let res = svc.oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();

        assert_eq!(body, "xxxxxxxxxx");
    }

    #[tokio::test(start_paused = true)]
    async fn a_layer_that_does_not_cover_bodies_still_covers_a_request_that_asks() {
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Script::drip(10, SEC)))
        });
        let layer = DeadlineLayer::new(2 * SEC).cover_body(false);
        let res = layer.layer(inner).oneshot(Request::new(())).await.unwrap();
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes().len(),
            10
        );

        let mut req = Request::new(());
        req.extensions_mut().insert(BodyDeadline::covered());
        let res = layer.layer(inner).oneshot(req).await.unwrap();
        let err = res.into_body().collect().await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
    }

    #[tokio::test(start_paused = true)]
    async fn an_exempt_streaming_body_still_fails_when_idle() {
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Script::drip(3, SEC).then_stall()))
        });
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(SEC / 2))
            .layer(AttemptTimeoutLayer::new(SEC).body_idle_timeout(2 * SEC))
            .service(inner);
        let mut req = Request::new(());
        req.extensions_mut().insert(BodyDeadline::exempt());
        let start = Instant::now();

        let res = svc.oneshot(req).await.unwrap();
        let err = res.into_body().collect().await.unwrap_err();

        // Three frames at 1, 2, 3 s; then two idle seconds.
        assert_elapsed(start, 5 * SEC);
        let idle = err.downcast_ref::<BodyTimedOut>().unwrap();
        assert!(idle.is_idle());
        assert_eq!(idle.limit(), 2 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_future_mid_wait_drops_the_inner_future() {
        let (flag, dropped) = DropFlag::new();
        let flag = std::sync::Mutex::new(Some(flag));
        let inner = service_fn(move |_req: Request<()>| {
            let flag = flag.lock().unwrap().take();
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let mut svc = DeadlineLayer::new(10 * SEC).layer(inner);
        let fut = svc.ready().await.unwrap().call(Request::new(()));
        let mut fut = Box::pin(fut);

        // Waiting: both the inner future and the deadline timer are live.
        assert!(futures_poll(fut.as_mut()).is_pending());
        tokio::time::advance(SEC).await;
        assert!(futures_poll(fut.as_mut()).is_pending());
        assert!(!dropped.load(Ordering::SeqCst));

        drop(fut);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_mid_wait_drops_the_inner_body() {
        let (flag, dropped) = DropFlag::new();
        let flag = std::sync::Mutex::new(Some(flag));
        let inner = service_fn(move |_req: Request<()>| {
            let flag = flag.lock().unwrap().take().unwrap();
            async move {
                Ok::<_, Infallible>(Response::new(
                    Script::drip(1, SEC).then_stall().with_flag(flag),
                ))
            }
        });
        let res = DeadlineLayer::new(10 * SEC)
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let mut body = Box::pin(res.into_body());
        assert!(body.frame().await.unwrap().is_ok());
        let waker = std::task::Waker::noop();
        assert!(
            body.as_mut()
                .poll_frame(&mut Context::from_waker(waker))
                .is_pending()
        );
        assert!(!dropped.load(Ordering::SeqCst));

        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_ready_only_forwards() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = DeadlineLayer::new(SEC).layer(NotReady(Arc::clone(&calls)));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(svc.poll_ready(&mut cx).is_pending());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // No timer was started by readiness: a long wait changes nothing.
        tokio::time::advance(60 * SEC).await;
        assert!(svc.poll_ready(&mut cx).is_pending());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn inner_errors_pass_through_unchanged() {
        let inner = service_fn(|_req: Request<()>| async {
            Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("refused"))
        });
        let err = DeadlineLayer::new(SEC)
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<std::io::Error>().unwrap().to_string(),
            "refused"
        );
    }

    #[test]
    fn services_are_clone() {
        fn is_clone<T: Clone>(_: &T) {}
        let svc = CallDeadline::new(
            service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }),
            SEC,
        );
        is_clone(&svc);
        assert_eq!(CallDeadline::<()>::layer(SEC).budget(), SEC);
    }

    #[test]
    fn futures_and_bodies_are_send_and_sync_when_their_parts_are() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<
            CallDeadlineFuture<std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>>,
        >();
        send_sync::<
            crate::future::AttemptTimeoutFuture<
                std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
            >,
        >();
        send_sync::<TimeoutBody<Full<Bytes>>>();
        send_sync::<DeadlineExceeded>();
        send_sync::<AttemptTimedOut>();
        send_sync::<BodyTimedOut>();
    }

    /// A service that is never ready, counting how often it was asked.
    #[derive(Clone)]
    struct NotReady(Arc<AtomicUsize>);

    impl Service<Request<()>> for NotReady {
        type Response = Response<Empty<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(Empty::new())))
        }
    }

    fn futures_poll<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }
}
