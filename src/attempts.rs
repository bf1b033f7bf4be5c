//! How many times a call's request was sent, for [`Response::attempts`].
//!
//! [`Response::attempts`]: crate::Response::attempts

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use parapet_core::Attempt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

tokio::task_local! {
    /// The highest attempt number that reached the transport during one
    /// `RequestBuilder::send`, for `Error::attempts`.
    static LAST_ATTEMPT: Cell<u32>;
}

/// Runs `call` (the stack's call, set up and awaited) counting the
/// attempts that reach [`RecordAttempt`]: the highest [`Attempt`] number
/// seen, 0 when none left (a limiter refused the first).
pub(crate) async fn count_attempts<F, Fut>(call: F) -> (Fut::Output, u32)
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    LAST_ATTEMPT
        .scope(Cell::new(0), async move {
            let out = call().await;
            (out, LAST_ATTEMPT.with(Cell::get))
        })
        .await
}

/// Copies the request's [`Attempt`] (set by the retry layer on each
/// attempt and by the redirect layer on each hop) onto the response when
/// it is a resend. A first attempt's response gets nothing, so the common
/// path costs one extension lookup and no allocation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordAttemptLayer;

impl<S> Layer<S> for RecordAttemptLayer {
    type Service = RecordAttempt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordAttempt { inner }
    }
}

/// See [`RecordAttemptLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RecordAttempt<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for RecordAttempt<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let attempt = Attempt::get(req.extensions());
        let number = attempt.map_or(1, Attempt::number);
        // Outside `send` (the client as a Service) there is no count.
        let _ = LAST_ATTEMPT.try_with(|n| n.set(n.get().max(number)));
        let resend = attempt.filter(|a| a.number() > 1);
        RecordFuture {
            inner: self.inner.call(req),
            resend,
        }
    }
}

pin_project! {
    /// The response future of [`RecordAttempt`].
    #[derive(Debug)]
    pub(crate) struct RecordFuture<F> {
        #[pin]
        inner: F,
        resend: Option<Attempt>,
    }
}

impl<F, B, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx));
        if let (Some(a), Ok(res)) = (this.resend.take(), res.as_mut()) {
            res.extensions_mut().insert(a);
        }
        Poll::Ready(res)
    }
}
