//! The deadline of the whole call.

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

use crate::body::{BodyDeadline, TimeoutBody};
use crate::error::{AttemptTimedOut, DeadlineExceeded};

/// Sets a deadline for the whole call, retries and waits included, and fails
/// the call with [`DeadlineExceeded`] when it passes.
///
/// On each call the layer stores a [`Deadline`] `budget` from now in the
/// request's extensions, unless the caller already put an earlier one there
/// (the earlier deadline always wins, see [`Deadline::apply`]). Every layer
/// beneath reads it and never starts a wait that would end after it. By
/// default the deadline also covers reading the response body; see
/// [`cover_body`](Self::cover_body) and [`BodyDeadline`].
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
///     .service_fn(|req: http::Request<()>| async move {
///         // Inner layers see the deadline.
///         let left = Deadline::get(req.extensions()).unwrap().remaining();
///         Ok::<_, std::convert::Infallible>(http::Response::new(format!("{left:?}")))
///     });
/// let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// assert_eq!(res.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    budget: Duration,
    cover_body: bool,
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        let own = now
            .checked_add(self.config.budget)
            .unwrap_or_else(|| far_future(now));
        let deadline = Deadline::at(own).apply(req.extensions_mut());
        let cover_body = BodyDeadline::get(req.extensions())
            .map_or(self.config.cover_body, BodyDeadline::is_covered);
        CallDeadlineFuture {
            inner: self.inner.call(req),
            sleep: None,
            deadline,
            cover_body,
            expired: deadline.instant() <= now,
        }
    }
}

pin_project! {
    /// The response future of [`CallDeadline`].
    ///
    /// Holds the inner future and, once it has had to wait, the deadline's
    /// timer, both inline. Dropping it drops both.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct CallDeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Deadline,
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let deadline = *this.deadline;
        // NOTE: a deadline already past when the call started (a caller's)
        // fails without polling the inner future, so nothing is sent.
        if *this.expired {
            return Poll::Ready(Err(DeadlineExceeded::new(deadline, false).into()));
        }
        match this.inner.poll(cx) {
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
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(deadline.instant())));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
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
