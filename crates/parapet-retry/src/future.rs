//! [`ResponseFuture`]: attempts, waits and the decisions between them.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Buf;
use http::header::RETRY_AFTER;
use http::{Request, Response, StatusCode, Uri, request::Parts};
use http_body::Body;
use parapet_core::{Attempt, BoxError, Deadline, ReplayBody, ReplayError, far_future, retry_after};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::layer::Shared;
use crate::never_sent::request_never_sent;
use crate::policy::{Outcome, Verdict};

pin_project! {
    /// The response future of [`Retry`](crate::Retry): the attempt in
    /// flight, or the wait before the next one.
    ///
    /// Waiting happens here, never in `poll_ready`; dropping the future
    /// ends the wait and releases everything it holds.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, F, B> {
        #[pin]
        state: State<F, B>,
        call: Call<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // An attempt is in flight.
        Attempt { #[pin] future: F },
        // Waiting before the next attempt; the discarded response's body is
        // drained meanwhile.
        Waiting {
            #[pin] sleep: Sleep,
            #[pin] drain: Drain<B>,
            retry_at: Instant,
            request: Option<Request<ReplayBody>>,
        },
        // Waiting for the service to be ready for the next attempt.
        Ready { request: Option<Request<ReplayBody>> },
    }
}

pin_project! {
    #[project = DrainProj]
    enum Drain<B> {
        Reading { #[pin] body: B, read: usize, until: Instant },
        Finished,
    }
}

/// What a call carries from one attempt to the next.
pub(crate) struct Call<S> {
    pub(crate) service: S,
    pub(crate) shared: Arc<Shared>,
    /// `None` when the policy allows a single attempt.
    pub(crate) retry: Option<RetryState>,
}

pub(crate) struct RetryState {
    /// The request head as this layer received it; each attempt gets a copy.
    pub(crate) parts: Parts,
    /// A handle on the body's recording, from which each attempt replays.
    pub(crate) body: Result<ReplayBody, ReplayError>,
    /// The number of the attempt in flight, from 1.
    pub(crate) attempt: u32,
    pub(crate) started: Instant,
    pub(crate) previous_delay: Duration,
}

impl<S, F, B> ResponseFuture<S, F, B> {
    pub(crate) fn new(future: F, call: Call<S>) -> Self {
        Self {
            state: State::Attempt { future },
            call,
        }
    }
}

impl<S, F, B> fmt::Debug for ResponseFuture<S, F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Attempt { .. } => "attempt",
            State::Waiting { .. } => "waiting",
            State::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field(
                "attempt",
                &self.call.retry.as_ref().map_or(1, |r| r.attempt),
            )
            .finish_non_exhaustive()
    }
}

impl<S, F, B, E> Future for ResponseFuture<S, F, B>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = E, Future = F>,
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Attempt { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let Some((retry_at, request)) = this.call.decide(&result) else {
                        return Poll::Ready(result);
                    };
                    let now = Instant::now();
                    let drain = match result {
                        Ok(res) if this.call.shared.policy.drain_max_bytes > 0 => Drain::Reading {
                            body: res.into_body(),
                            read: 0,
                            until: now + this.call.shared.policy.drain_max_time,
                        },
                        // An error, or draining turned off: the response
                        // (if any) is dropped here.
                        _ => Drain::Finished,
                    };
                    let wake = match &drain {
                        Drain::Reading { until, .. } => retry_at.min(*until),
                        Drain::Finished => retry_at,
                    };
                    this.state.set(State::Waiting {
                        sleep: sleep_until(wake),
                        drain,
                        retry_at,
                        request: Some(request),
                    });
                }
                StateProj::Waiting {
                    mut sleep,
                    mut drain,
                    retry_at,
                    request,
                } => {
                    let retry_at = *retry_at;
                    if let DrainProj::Reading { body, read, .. } = drain.as_mut().project() {
                        if drain_some(body, read, this.call.shared.policy.drain_max_bytes, cx) {
                            drain.set(Drain::Finished);
                            if sleep.deadline() != retry_at {
                                sleep.as_mut().reset(retry_at);
                            }
                        }
                    }
                    ready!(sleep.as_mut().poll(cx));
                    if matches!(*drain, Drain::Reading { .. }) {
                        // The drain's time is up: drop the body (and with
                        // it, for HTTP/1, the connection).
                        drain.set(Drain::Finished);
                        if sleep.deadline() < retry_at {
                            sleep.as_mut().reset(retry_at);
                            continue;
                        }
                    }
                    let request = request.take();
                    this.state.set(State::Ready { request });
                }
                StateProj::Ready { request } => {
                    ready!(this.call.service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = request.take() else {
                        // NOTE: `Ready` always holds a request until it
                        // calls the service and moves on; only a poll after
                        // completion gets here.
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    };
                    let future = this.call.service.call(request);
                    this.state.set(State::Attempt { future });
                }
            }
        }
    }
}

/// Reads the body until it ends, fails, passes `max` bytes or has nothing
/// ready; whether the drain is over.
fn drain_some<B: Body>(
    mut body: Pin<&mut B>,
    read: &mut usize,
    max: usize,
    cx: &mut Context<'_>,
) -> bool {
    loop {
        if body.is_end_stream() {
            return true;
        }
        match body.as_mut().poll_frame(cx) {
            Poll::Pending => return false,
            Poll::Ready(None | Some(Err(_))) => return true,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *read = read.saturating_add(data.remaining());
                }
                if *read > max {
                    return true;
                }
            }
        }
    }
}

/// The host a budget is kept for: the authority without user information.
pub(crate) fn host_of(uri: &Uri) -> &str {
    uri.authority().map_or("", |a| {
        a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h)
    })
}

/// Why an attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Status(StatusCode),
    /// The request never left (connect failure).
    NotSent,
    /// A transport error or timeout after the request may have been sent.
    Error,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {}", s.as_u16()),
            Self::NotSent => f.write_str("request not sent"),
            Self::Error => f.write_str("transport error"),
        }
    }
}

impl<S> Call<S> {
    /// Whether to retry after this result: when to, and the request to send.
    /// Emits the trace event that says what was decided.
    fn decide<B>(
        &mut self,
        result: &Result<Response<B>, BoxError>,
    ) -> Option<(Instant, Request<ReplayBody>)> {
        let rs = self.retry.as_mut()?;
        let policy = &self.shared.policy;
        let (status, headers, error) = match result {
            Ok(res) => (Some(res.status()), Some(res.headers()), None),
            Err(e) => (None, None, Some(&**e as &(dyn Error + 'static))),
        };
        let outcome = Outcome {
            method: &rs.parts.method,
            uri: &rs.parts.uri,
            status,
            headers,
            error,
            attempt: rs.attempt,
        };
        let verdict = policy
            .classifier
            .as_ref()
            .map_or(Verdict::Default, |c| c(&outcome));
        let reason = match (verdict, status, error) {
            (Verdict::Return, ..) => return None,
            (Verdict::Retry, Some(s), _) => Reason::Status(s),
            (Verdict::Default, Some(s), _) if policy.statuses.contains(s) => Reason::Status(s),
            (Verdict::Default, Some(_), _) | (_, None, None) => return None,
            (_, None, Some(e)) if request_never_sent(e) => Reason::NotSent,
            (_, None, Some(_)) => Reason::Error,
        };
        let method = &rs.parts.method;
        let host = host_of(&rs.parts.uri);
        let attempt = rs.attempt;

        let idempotent =
            policy
                .idempotency
                .classify(method, &rs.parts.headers, &rs.parts.extensions);
        if !idempotent && reason != Reason::NotSent {
            tracing::debug!(%method, host, attempt, %reason, "not retrying: the request is not idempotent");
            return None;
        }
        if attempt >= policy.max_attempts {
            tracing::debug!(%method, host, attempt, %reason, "not retrying: no attempts left");
            return None;
        }
        let body = match rs
            .body
            .as_ref()
            .map_err(Clone::clone)
            .and_then(ReplayBody::try_replay)
        {
            Ok(body) => body,
            Err(e) => {
                tracing::info!(%method, host, attempt, %reason, error = %e, "not retrying: the request body cannot be replayed");
                return None;
            }
        };

        let now = Instant::now();
        let mut limit = Deadline::get(&rs.parts.extensions).map(Deadline::instant);
        if let Some(max) = policy.max_elapsed {
            let end = rs
                .started
                .checked_add(max)
                .unwrap_or_else(|| far_future(rs.started));
            limit = Some(limit.map_or(end, |l| l.min(end)));
        }
        let time_left = limit.map(|l| l.saturating_duration_since(now));

        let backoff = policy.backoff.delay(attempt, rs.previous_delay);
        let mut delay = backoff;
        let mut source = "backoff";
        let told = match (status, headers) {
            (Some(s), Some(h))
                if policy.retry_after_statuses.contains(s) && h.contains_key(RETRY_AFTER) =>
            {
                retry_after(h, SystemTime::now())
            }
            _ => None,
        };
        if let Some(told) = told {
            let told_secs = told.as_secs();
            if told > policy.max_retry_after {
                tracing::debug!(%method, host, attempt, %reason, retry_after_s = told_secs, "not retrying: Retry-After is longer than the maximum");
                return None;
            }
            if time_left.is_some_and(|left| told > left) {
                tracing::debug!(%method, host, attempt, %reason, retry_after_s = told_secs, "not retrying: Retry-After ends after the deadline");
                return None;
            }
            if told >= backoff {
                delay = policy
                    .backoff
                    .jitter
                    .spread_up(told, policy.retry_after_jitter);
                source = "server";
            }
        }
        if time_left.is_some_and(|left| delay > left) {
            tracing::debug!(%method, host, attempt, %reason, delay_ms = millis(delay), "not retrying: the wait would end after the deadline");
            return None;
        }
        if let Some(budgets) = &self.shared.budgets {
            if !budgets.withdraw(host, now) {
                tracing::info!(%method, host, attempt, %reason, "not retrying: retry budget exhausted");
                return None;
            }
        }

        rs.attempt += 1;
        rs.previous_delay = backoff;
        tracing::debug!(
            %method,
            host,
            attempt = rs.attempt,
            %reason,
            delay_ms = millis(delay),
            delay_source = source,
            "retrying request"
        );
        let mut parts = rs.parts.clone();
        parts
            .extensions
            .insert(Attempt::new(rs.attempt, policy.max_attempts));
        let at = now.checked_add(delay).unwrap_or_else(|| far_future(now));
        Some((at, Request::from_parts(parts, body)))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
