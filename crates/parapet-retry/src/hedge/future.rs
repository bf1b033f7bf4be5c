//! [`ResponseFuture`]: the first copy, its hedges, and the race between them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use parapet_core::{BoxError, ReplayBody, far_future};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use super::{HedgeCopy, HedgeShared};
use crate::budget::Limits;
use crate::future::host_of;

pin_project! {
    /// The response future of [`Hedge`](crate::Hedge): the request's first
    /// copy and, once the hedge delay has passed with no answer, its hedges.
    /// The first answer wins; the copies still in flight are dropped then.
    ///
    /// Waiting happens here, never in `poll_ready`; dropping the future
    /// drops every copy in flight.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, F> {
        #[pin]
        first: Slot<F>,
        // `None` when the request is not hedged (and its latency not
        // recorded): a POST, a body that cannot be replayed, hedging off.
        // Out of line: only a hedgeable call pays for it.
        race: Option<Pin<Box<Race<S, F>>>>,
        // The error of a copy that failed while another was in flight.
        error: Option<BoxError>,
    }
}

pin_project! {
    #[project = SlotProj]
    enum Slot<F> {
        Running { #[pin] future: F },
        Done,
    }
}

pin_project! {
    pub(crate) struct Race<S, F> {
        // Until the next hedge.
        #[pin] sleep: Sleep,
        pub(crate) service: S,
        pub(crate) shared: Arc<HedgeShared>,
        // The request head, without its body, and a handle on the body to
        // replay it from.
        pub(crate) head: Request<()>,
        pub(crate) body: ReplayBody,
        pub(crate) started: Instant,
        // `None`: no hedge is sent (the percentile is not known yet), only
        // the latency is recorded.
        pub(crate) delay: Option<Duration>,
        // Hedges sent so far, and the most.
        pub(crate) sent: u32,
        pub(crate) max: u32,
        // A hedge the budget has allowed, waiting for the service to be ready.
        pending: Option<Request<ReplayBody>>,
        hedges: Vec<Pin<Box<F>>>,
    }
}

impl<S, F> Race<S, F> {
    pub(crate) fn boxed(
        service: S,
        shared: Arc<HedgeShared>,
        head: Request<()>,
        body: ReplayBody,
        started: Instant,
        delay: Option<Duration>,
        max: u32,
    ) -> Pin<Box<Self>> {
        let at = delay.map_or_else(|| far_future(started), |d| deadline(started, d));
        Box::pin(Self {
            sleep: sleep_until(at),
            service,
            shared,
            head,
            body,
            started,
            delay,
            sent: 0,
            max: if delay.is_some() { max } else { 0 },
            pending: None,
            hedges: Vec::new(),
        })
    }

    /// Records the latency of the call's answer (percentile mode).
    fn record(&self) {
        if let Some(latencies) = &self.shared.latencies {
            let elapsed = Instant::now().saturating_duration_since(self.started);
            latencies.record(host_of(self.head.uri()), elapsed);
        }
    }
}

/// The next copy's request, if the budget and the body allow it; `None`
/// stops hedging this call.
fn next_request(
    shared: &HedgeShared,
    head: &Request<()>,
    body: &ReplayBody,
    delay: Option<Duration>,
    number: u32,
) -> Option<Request<ReplayBody>> {
    let method = head.method();
    let host = host_of(head.uri());
    if let Some(limits) = shared.limits.as_ref().and_then(|s| s.limits.as_ref()) {
        let now = Instant::now();
        let allowed = match limits {
            Limits::Budget(budgets) => budgets.withdraw(host, now),
            Limits::Quota(quotas) => {
                let cost = quotas.config().get_retry_cost();
                quotas.withdraw(None, host, cost, now)
            }
        };
        if !allowed {
            match limits {
                Limits::Budget(_) => {
                    tracing::debug!(%method, host, "not hedging: retry budget exhausted");
                }
                Limits::Quota(_) => {
                    tracing::debug!(%method, host, "not hedging: retry quota exhausted");
                }
            }
            return None;
        }
    }
    let body = match body.try_replay() {
        Ok(body) => body,
        Err(e) => {
            tracing::debug!(%method, host, error = %e, "not hedging: the request body cannot be replayed");
            return None;
        }
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method().clone();
    *req.uri_mut() = head.uri().clone();
    *req.version_mut() = head.version();
    req.headers_mut().clone_from(head.headers());
    *req.extensions_mut() = head.extensions().clone();
    req.extensions_mut().insert(HedgeCopy { number });
    tracing::debug!(
        %method,
        host,
        hedge = number,
        delay_ms = delay.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "sending a hedge"
    );
    Some(req)
}

fn deadline(from: Instant, delay: Duration) -> Instant {
    from.checked_add(delay).unwrap_or_else(|| far_future(from))
}

impl<S, F> ResponseFuture<S, F> {
    pub(crate) fn new(future: F, race: Option<Pin<Box<Race<S, F>>>>) -> Self {
        Self {
            first: Slot::Running { future },
            race,
            error: None,
        }
    }
}

impl<S, F> fmt::Debug for ResponseFuture<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field(
                "first_in_flight",
                &matches!(self.first, Slot::Running { .. }),
            )
            .field("hedges_sent", &self.race.as_ref().map_or(0, |r| r.sent))
            .finish_non_exhaustive()
    }
}

const POLLED_AFTER_COMPLETION: &str = "hedge future polled after completion";

impl<S, F, R, E> Future for ResponseFuture<S, F>
where
    S: Service<Request<ReplayBody>, Response = R, Error = E, Future = F>,
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // The first copy.
            let mut won = None;
            if let SlotProj::Running { future } = this.first.as_mut().project() {
                if let Poll::Ready(result) = future.poll(cx) {
                    this.first.set(Slot::Done);
                    match result {
                        Ok(res) => won = Some(res),
                        Err(e) => *this.error = Some(e.into()),
                    }
                }
            }
            // The hedges in flight.
            if won.is_none() {
                if let Some(race) = this.race.as_mut() {
                    won = poll_hedges(race.as_mut(), cx, this.error);
                }
            }
            if let Some(res) = won {
                // The race ends here: every copy still in flight is dropped.
                this.first.set(Slot::Done);
                if let Some(race) = this.race.take() {
                    race.record();
                }
                return Poll::Ready(Ok(res));
            }
            let first_running = matches!(*this.first, Slot::Running { .. });
            let in_flight =
                first_running || this.race.as_ref().is_some_and(|r| !r.hedges.is_empty());
            if !in_flight {
                // Every copy sent has failed: the last error. (A first copy
                // that fails before its hedge is due is not hedged: the
                // retry layer above decides what to do with its error.)
                *this.race = None;
                return Poll::Ready(Err(this
                    .error
                    .take()
                    .unwrap_or_else(|| POLLED_AFTER_COMPLETION.into())));
            }
            let Some(race) = this.race.as_mut() else {
                // Only the first copy, not hedged.
                return Poll::Pending;
            };
            let r = race.as_mut().project();
            if *r.sent >= *r.max {
                return Poll::Pending;
            }
            let mut sleep = r.sleep;
            if r.pending.is_none() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The delay has passed with no answer: a hedge, if allowed.
                match next_request(r.shared, r.head, r.body, *r.delay, *r.sent + 1) {
                    Some(req) => *r.pending = Some(req),
                    None => *r.max = *r.sent,
                }
                continue;
            }
            match r.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    // The hedge cannot be sent; the copies in flight go on.
                    let e: BoxError = e.into();
                    tracing::debug!(error = %e, "not hedging: the service is not ready");
                    *r.pending = None;
                    *r.max = *r.sent;
                }
                Poll::Ready(Ok(())) => {
                    if let Some(req) = r.pending.take() {
                        let future = r.service.call(req);
                        r.hedges.push(Box::pin(future));
                        *r.sent += 1;
                        if let Some(delay) = *r.delay {
                            sleep.as_mut().reset(deadline(Instant::now(), delay));
                        }
                    }
                }
            }
        }
    }
}

/// Polls the hedges in flight: the first answer, if one came; an error
/// is kept in `error` (the last one wins).
fn poll_hedges<S, F, R, E>(
    race: Pin<&mut Race<S, F>>,
    cx: &mut Context<'_>,
    error: &mut Option<BoxError>,
) -> Option<R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    let hedges = race.project().hedges;
    let mut i = 0;
    while let Some(hedge) = hedges.get_mut(i) {
        match hedge.as_mut().poll(cx) {
            Poll::Pending => i += 1,
            Poll::Ready(result) => {
                hedges.swap_remove(i);
                match result {
                    Ok(res) => return Some(res),
                    Err(e) => *error = Some(e.into()),
                }
            }
        }
    }
    None
}
