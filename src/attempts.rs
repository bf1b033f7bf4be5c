//! How many times a call's request was sent, for [`Response::attempts`].
//!
//! [`Response::attempts`]: crate::Response::attempts

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use parapet_core::Attempt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

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
        let resend = Attempt::get(req.extensions()).filter(|a| a.number() > 1);
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
