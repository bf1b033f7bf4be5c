//! [`RetryBody`]: a response body whose request can be re-sent if it breaks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use parapet_core::{Attempt, BoxError, Deadline, ReplayBody};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::{BodyRestart, BodyRestartFailed, RestartFailure};
use crate::future::{Call, ResponseFuture};
use crate::not_retried::NotRetried;

pin_project! {
    /// The response body of [`Retry`](crate::Retry): the inner service's
    /// body, frames passed through untouched, which can re-send the request
    /// when the body breaks after the headers.
    ///
    /// # A body that breaks
    ///
    /// When the call could still be retried as its response arrived (the
    /// request may be sent again, its body can be replayed, attempts
    /// remain), the body keeps the call (the service, the copy of the
    /// request, the attempt count, the deadline that was in scope). If the
    /// inner body then fails in a way the policy retries (by default a
    /// reset, an abort or an end before the announced length; never a
    /// timeout; a [classifier](crate::RetryPolicyBuilder::classify) sees
    /// it as an [`Outcome`](crate::Outcome) with
    /// [`is_body`](crate::Outcome::is_body)), and the attempts, the
    /// deadline and the [budget](crate::RetryBudget) allow a retry (the
    /// budget is drawn on then), `poll_frame` yields one [`BodyRestart`]
    /// error instead of the body's error.
    ///
    /// **Polling again after a `BodyRestart` is the explicit opt-in to a
    /// restart**: the body waits the backoff (as between two attempts),
    /// sends the request again through the same service, retries that
    /// call as any other (a 503 may be retried within the attempts left),
    /// and if its final answer has the same status as the first response,
    /// goes on with *that* response's body, from its first byte. A reader
    /// that collects the whole body drops what it had and reads on; a
    /// reader that streams the body on must treat the `BodyRestart` as the
    /// body's error and stop polling, and then nothing is re-sent.
    ///
    /// If the re-sent call's final answer has another status, or it fails,
    /// the body yields [`BodyRestartFailed`] and ends. A body whose call
    /// can no longer be retried (a POST, no attempts left, the budget
    /// spent) yields the inner body's error unchanged, as does a body
    /// error the policy does not retry.
    ///
    /// A body that could not be retried from the start costs nothing but
    /// its size (the service and two pointers); one that could keeps the
    /// request's copy (and the replayable request body's recording) until
    /// it ends, fails or is dropped. Nothing is allocated for it unless it
    /// breaks.
    pub struct RetryBody<S, F, B> {
        // `None` once it broke: it may hold what the next attempt needs (a
        // concurrency slot).
        #[pin]
        body: Option<B>,
        // The call, while a restart of this body may follow.
        call: Option<Call<S>>,
        // The restart under way, after a `BodyRestart` was yielded.
        restart: Option<Pin<Box<ResponseFuture<S, F, B>>>>,
        // The status of the response this body belongs to.
        status: StatusCode,
        // Data bytes passed on so far.
        seen: u64,
    }
}

impl<S, F, B> RetryBody<S, F, B> {
    pub(crate) fn new(body: B, status: StatusCode, call: Option<Call<S>>) -> Self {
        Self {
            body: Some(body),
            call,
            restart: None,
            status,
            seen: 0,
        }
    }

    /// The inner body (the latest response's, after a restart), unless it
    /// broke.
    pub fn get_ref(&self) -> Option<&B> {
        self.body.as_ref()
    }

    /// Whether a restart is possible if the body breaks now.
    #[must_use]
    pub fn can_restart(&self) -> bool {
        self.call.is_some()
    }

    /// Data bytes passed on so far from the current response's body.
    #[must_use]
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }
}

impl<S, F, B, E> Body for RetryBody<S, F, B>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = E, Future = F>,
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        loop {
            let mut this = self.as_mut().project();
            if let Some(restart) = this.restart.as_mut() {
                // The deadline layer's deadline, in scope as when it polls
                // the call's future.
                let scope = restart.scope().map(Deadline::enter);
                let polled = restart.as_mut().poll(cx);
                drop(scope);
                let res = match polled {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(res)) => res,
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Some(Err(self.fail(RestartFailure::Error(e)))));
                    }
                };
                if res.status() != *this.status {
                    let kind =
                        RestartFailure::Status(res.status(), NotRetried::get(res.extensions()));
                    return Poll::Ready(Some(Err(self.fail(kind))));
                }
                // NOTE: the new response's body holds the call again if it
                // may still be restarted; this body's state is replaced
                // whole (the old body was dropped when it broke).
                self.set(res.into_body());
                continue;
            }
            let Some(body) = this.body.as_mut().as_pin_mut() else {
                // Failed, or broke with no restart.
                return Poll::Ready(None);
            };
            return match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        *this.seen = this.seen.saturating_add(data.remaining() as u64);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    let Some(mut call) = this.call.take() else {
                        return Poll::Ready(Some(Err(e)));
                    };
                    let scope = call.scope().map(Deadline::enter);
                    let decided = call.decide_body(*this.status, &*e);
                    drop(scope);
                    let Some((retry_at, request)) = decided else {
                        return Poll::Ready(Some(Err(e)));
                    };
                    let attempt = Attempt::get(request.extensions()).map_or(2, Attempt::number);
                    // The broken body goes now: it may hold what the next
                    // attempt needs (a concurrency slot).
                    this.body.set(None);
                    *this.restart =
                        Some(Box::pin(ResponseFuture::restart(call, retry_at, request)));
                    Poll::Ready(Some(Err(Box::new(BodyRestart {
                        seen: *this.seen,
                        attempt,
                        source: e,
                    }))))
                }
                Poll::Ready(None) => {
                    // Complete: what a restart needed is released now.
                    *this.call = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        // NOTE: a body that broke is gone and one that is restarting has
        // none: neither ever reports an end it did not reach.
        self.body.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

impl<S, F, B> RetryBody<S, F, B> {
    /// Ends the body after a failed restart, with the error that says why.
    fn fail(self: Pin<&mut Self>, kind: RestartFailure) -> BoxError {
        let mut this = self.project();
        *this.restart = None;
        this.body.set(None);
        Box::new(BodyRestartFailed {
            kind,
            expected: *this.status,
        })
    }
}

impl<S, F, B: fmt::Debug> fmt::Debug for RetryBody<S, F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBody")
            .field("body", &self.body)
            .field("can_restart", &self.call.is_some())
            .field("restarting", &self.restart.is_some())
            .field("seen", &self.seen)
            .finish()
    }
}
