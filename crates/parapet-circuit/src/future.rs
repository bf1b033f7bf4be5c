//! [`ResponseFuture`]: drives the inner call, and reports its outcome to the
//! authority's circuit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use parapet_core::BoxError;
use pin_project_lite::pin_project;

use crate::error::CircuitOpen;
use crate::policy::Outcome;
use crate::state::{Report, Shared};
use parapet_core::authority::Target;

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker):
    /// the inner call's, or an immediate [`CircuitOpen`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F, call: Call },
        Refused { error: CircuitOpen },
    }
}

/// A call that was let through: where it went, and its probe ticket until
/// its outcome is recorded.
///
/// Dropped with the future; a probe dropped before its outcome (the caller
/// gave up) frees the probe slot, so that the next call can probe.
struct Call {
    shared: Arc<Shared>,
    target: Target,
    ticket: Option<u64>,
}

impl Call {
    fn finish<B>(&mut self, result: &Result<Response<B>, BoxError>) {
        let policy = self.shared.policy();
        let report = match result {
            Ok(res) => match self.shared.hint(res.status(), res.headers()) {
                Some(wait) => Report::Hint(wait),
                None => Report::Verdict(policy.verdict(&Outcome::Response {
                    status: res.status(),
                    headers: res.headers(),
                })),
            },
            Err(e) => Report::Verdict(policy.verdict(&Outcome::Error(e.as_ref()))),
        };
        self.shared.record(&self.target, self.ticket.take(), report);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared
                .record(&self.target, Some(ticket), Report::Abandoned);
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F, shared: Arc<Shared>, target: Target, ticket: Option<u64>) -> Self {
        Self {
            state: State::Called {
                fut,
                call: Call {
                    shared,
                    target,
                    ticket,
                },
            },
        }
    }

    pub(crate) fn refused(error: CircuitOpen) -> Self {
        Self {
            state: State::Refused { error },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut, call } => {
                let result = ready!(fut.poll(cx)).map_err(Into::into);
                call.finish(&result);
                Poll::Ready(result)
            }
            StateProj::Refused { error } => Poll::Ready(Err(Box::new(error.clone()))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { call, .. } if call.ticket.is_some() => "probing",
            State::Called { .. } => "called",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
