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
use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
    Version,
};
use http_body::Body;
use parapet_core::{
    Attempt, BoxError, Deadline, IDEMPOTENCY_KEY, Idempotency, ReplayBody, ReplayError, far_future,
    is_fail_fast, is_idempotent_method, retry_after,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::body::RetryBody;
use crate::budget::Limits;
use crate::layer::Shared;
use crate::never_sent::request_never_sent;
use crate::not_retried::{NotRetried, NotRetriedReason};
use crate::policy::{Outcome, Verdict};
use crate::quota::Bucket;

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
        // `None` once the future has completed: a response that may still
        // be retried (its body could break) took the call with it.
        call: Option<Call<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // An attempt is in flight.
        Attempt { #[pin] future: F },
        // Between two attempts: the wait, then the service's readiness. Out
        // of line, so that the common case (one attempt) does not carry (and
        // every layer above does not move) a timer, a response body and a
        // request; only a call that is retried pays for the box.
        Between { between: Pin<Box<Between<B>>> },
    }
}

pin_project! {
    struct Between<B> {
        // Until the next attempt; the discarded response's body is drained
        // meanwhile.
        #[pin] sleep: Sleep,
        #[pin] drain: Drain<B>,
        retry_at: Instant,
        // Whether the wait is over (and the service's readiness is awaited).
        waited: bool,
        request: Option<Request<ReplayBody>>,
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
    /// `None` when the policy allows a single attempt. Boxed: every layer
    /// above moves this future, and most calls never read the copy again.
    pub(crate) retry: Option<Box<RetryState>>,
}

/// Headers kept in the head's box itself: a request with at most this many
/// (most have a handful) costs no allocation beyond the box.
const INLINE_HEADERS: usize = 4;

type HeaderPair = (HeaderName, HeaderValue);

/// The request's headers, as copied for the attempts after the first.
#[expect(
    clippy::large_enum_variant,
    reason = "the list is the common variant, in a box already; a second box would cost the allocation it saves"
)]
enum Headers {
    /// As a list, in order: the first few in place, any others after them.
    /// Copying them so costs no allocation (a `HeaderMap` costs two).
    List {
        first: [Option<HeaderPair>; INLINE_HEADERS],
        rest: Vec<HeaderPair>,
    },
    /// As a map, once a retry has been considered.
    Map(HeaderMap),
}

impl Headers {
    /// Whether a header of this name is there.
    fn contains(&self, name: &HeaderName) -> bool {
        match self {
            Self::List { first, rest } => {
                first.iter().flatten().chain(rest).any(|(n, _)| n == name)
            }
            Self::Map(map) => map.contains_key(name),
        }
    }
}

pub(crate) struct RetryState {
    // The request head as this layer received it; each retry gets a copy.
    method: Method,
    /// Always set (`None` only while the box is being filled).
    uri: Option<Uri>,
    version: Version,
    headers: Headers,
    extensions: Extensions,
    /// A handle on the body's recording, from which each attempt replays.
    body: Result<ReplayBody, ReplayError>,
    /// The number of the attempt in flight, from 1.
    pub(crate) attempt: u32,
    /// The most attempts of this call: the policy's, or the request's
    /// [`MaxAttempts`](crate::MaxAttempts).
    max: u32,
    /// When the call began, if `max_elapsed` (or the budget) needed it.
    started: Option<Instant>,
    /// The deadline that was in scope when the response came (the deadline
    /// layer's), kept for a restart of its body: the body is polled
    /// outside that scope.
    scope: Option<Deadline>,
    previous_delay: Duration,
    /// The host's bucket, when the policy has a quota.
    quota: Option<Arc<Bucket>>,
    /// What the last retry took from the quota: given back if it succeeds.
    last_cost: u32,
}

impl RetryState {
    /// A copy of `head` (all of it: method, URI, version, headers and every
    /// extension) for the attempts after the first, in one allocation for a
    /// request with at most [`INLINE_HEADERS`] headers (header values, the
    /// URI and the method are shared by reference count, not copied; an
    /// empty `Extensions` copies for free).
    #[inline]
    pub(crate) fn boxed(
        head: &Request<ReplayBody>,
        started: Option<Instant>,
        max: u32,
        quota: Option<Arc<Bucket>>,
    ) -> Box<Self> {
        // Made of constants first, so that it is written in the box itself,
        // then filled in place: a state built on the stack and moved into
        // the box would be copied whole (about 550 bytes).
        let mut state = Box::new(Self {
            method: Method::GET,
            uri: None,
            version: Version::HTTP_11,
            headers: Headers::List {
                first: [const { None }; INLINE_HEADERS],
                rest: Vec::new(),
            },
            extensions: Extensions::new(),
            body: Ok(ReplayBody::empty()),
            attempt: 1,
            max,
            started,
            scope: None,
            previous_delay: Duration::ZERO,
            quota,
            last_cost: 0,
        });
        state.method = head.method().clone();
        state.uri = Some(head.uri().clone());
        state.version = head.version();
        state.extensions = head.extensions().clone();
        state.body = head.body().try_replay();
        if let Headers::List { first, rest } = &mut state.headers {
            let mut headers = head.headers().iter();
            for (slot, (name, value)) in first.iter_mut().zip(&mut headers) {
                *slot = Some((name.clone(), value.clone()));
            }
            rest.extend(headers.map(|(k, v)| (k.clone(), v.clone())));
        }
        state
    }

    /// The headers as a map, made from the list the first time. Names keep
    /// their order, and each name its values' order.
    fn restore_headers(&mut self) {
        if let Headers::List { first, rest } = &mut self.headers {
            let first = std::mem::take(first);
            let rest = std::mem::take(rest);
            let mut map = HeaderMap::with_capacity(first.len() + rest.len());
            for (name, value) in first.into_iter().flatten().chain(rest) {
                map.append(name, value);
            }
            self.headers = Headers::Map(map);
        }
    }

    /// The request for the next attempt (after
    /// [`restore_headers`](Self::restore_headers)).
    fn request(&self, body: ReplayBody) -> Request<ReplayBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        if let Some(uri) = &self.uri {
            *req.uri_mut() = uri.clone();
        }
        *req.version_mut() = self.version;
        if let Headers::Map(map) = &self.headers {
            req.headers_mut().clone_from(map);
        }
        *req.extensions_mut() = self.extensions.clone();
        req.extensions_mut()
            .insert(Attempt::new(self.attempt, self.max));
        req
    }
}

impl<S, F, B> ResponseFuture<S, F, B> {
    #[inline]
    pub(crate) fn new(future: F, call: Call<S>) -> Self {
        Self {
            state: State::Attempt { future },
            call: Some(call),
        }
    }

    /// The deadline to put in scope around a poll of a restart.
    pub(crate) fn scope(&self) -> Option<Deadline> {
        self.call.as_ref().and_then(Call::scope)
    }

    /// A future that waits until `retry_at`, then sends `request`: the
    /// restart of a body that broke.
    pub(crate) fn restart(call: Call<S>, retry_at: Instant, request: Request<ReplayBody>) -> Self {
        Self {
            state: State::Between {
                between: Box::pin(Between {
                    sleep: sleep_until(retry_at),
                    drain: Drain::Finished,
                    retry_at,
                    waited: false,
                    request: Some(request),
                }),
            },
            call: Some(call),
        }
    }
}

impl<S, F, B> fmt::Debug for ResponseFuture<S, F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Attempt { .. } => "attempt",
            State::Between { between } if between.waited => "ready",
            State::Between { .. } => "waiting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field(
                "attempt",
                &self
                    .call
                    .as_ref()
                    .and_then(|c| c.retry.as_ref())
                    .map_or(1, |r| r.attempt),
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
    type Output = Result<Response<RetryBody<S, F, B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(call) = this.call.as_mut() else {
                return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
            };
            match this.state.as_mut().project() {
                StateProj::Attempt { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let (retry_at, request) = match call.decide(&result) {
                        Ok(retry) => retry,
                        Err(why) => {
                            let mut res = result?;
                            let status = res.status();
                            if why.is_none() {
                                call.succeeded(status);
                            }
                            let call = match why {
                                Some(why) => {
                                    res.extensions_mut().insert(why);
                                    None
                                }
                                // A final answer whose body may still break:
                                // the call goes with the body, if the
                                // request could be sent again.
                                None => this.call.take().and_then(Call::for_body),
                            };
                            return Poll::Ready(Ok(
                                res.map(|body| RetryBody::new(body, status, call))
                            ));
                        }
                    };
                    let now = Instant::now();
                    let drain = match result {
                        Ok(res) if call.shared.policy.drain_max_bytes > 0 => Drain::Reading {
                            body: res.into_body(),
                            read: 0,
                            until: now + call.shared.policy.drain_max_time,
                        },
                        // An error, or draining turned off: the response
                        // (if any) is dropped here.
                        _ => Drain::Finished,
                    };
                    let wake = match &drain {
                        Drain::Reading { until, .. } => retry_at.min(*until),
                        Drain::Finished => retry_at,
                    };
                    this.state.set(State::Between {
                        between: Box::pin(Between {
                            sleep: sleep_until(wake),
                            drain,
                            retry_at,
                            waited: false,
                            request: Some(request),
                        }),
                    });
                }
                StateProj::Between { between } => {
                    let b = between.as_mut().project();
                    if !*b.waited {
                        let mut sleep = b.sleep;
                        let mut drain = b.drain;
                        let retry_at = *b.retry_at;
                        if let DrainProj::Reading { body, read, .. } = drain.as_mut().project() {
                            if drain_some(body, read, call.shared.policy.drain_max_bytes, cx) {
                                drain.set(Drain::Finished);
                                if sleep.deadline() != retry_at {
                                    sleep.as_mut().reset(retry_at);
                                }
                            }
                        }
                        if sleep.as_mut().poll(cx).is_pending() {
                            // A deadline layer above need not arm a timer of
                            // its own while this one will wake the task.
                            parapet_core::clock::will_wake_by(sleep.deadline());
                            return Poll::Pending;
                        }
                        if matches!(*drain, Drain::Reading { .. }) {
                            // The drain's time is up: drop the body (and with
                            // it, for HTTP/1, the connection).
                            drain.set(Drain::Finished);
                            if sleep.deadline() < retry_at {
                                sleep.as_mut().reset(retry_at);
                                continue;
                            }
                        }
                        *b.waited = true;
                    }
                    ready!(call.service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = b.request.take() else {
                        // NOTE: `Between` always holds a request until it
                        // calls the service and moves on; only a poll after
                        // completion gets here.
                        return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                    };
                    let future = call.service.call(request);
                    this.state.set(State::Attempt { future });
                }
            }
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "retry future polled after completion";

/// Whether a body's error says the connection broke: a reset, an abort, or
/// an end before the announced length (hyper reports these as an
/// `io::Error` in the error's chain). Not a timeout, and nothing a layer
/// made of its own.
fn body_broke(error: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        cur = e.source();
    }
    false
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
        let a = a.as_str();
        // Almost no authority has user information: look for an `@` eight
        // bytes at a time, and search backwards only when there is one.
        if !has_at(a.as_bytes()) {
            return a;
        }
        match a.bytes().rposition(|b| b == b'@') {
            Some(at) => a.get(at + 1..).unwrap_or(""),
            None => a,
        }
    })
}

/// Whether `bytes` holds an `@`.
fn has_at(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const ATS: u64 = u64::from_ne_bytes([b'@'; 8]);
    // A byte of `x` is zero where the byte was `@`; the classic test for a
    // zero byte has no false positives as a yes/no answer.
    let word_has_at = |word: &[u8; 8]| {
        let x = u64::from_ne_bytes(*word) ^ ATS;
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    };
    let Some(last) = bytes.last_chunk::<8>() else {
        return bytes.contains(&b'@');
    };
    let mut rest = bytes;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        if word_has_at(word) {
            return true;
        }
        rest = tail;
    }
    // The last eight bytes (overlapping those seen) cover what is left.
    !rest.is_empty() && word_has_at(last)
}

/// Why an attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Status(StatusCode),
    /// The request never left (connect failure).
    NotSent,
    /// A transport error or timeout after the request may have been sent.
    Error,
    /// The response's body broke after its headers.
    Body,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {}", s.as_u16()),
            Self::NotSent => f.write_str("request not sent"),
            Self::Error => f.write_str("transport error"),
            Self::Body => f.write_str("response body broke"),
        }
    }
}

impl<S> Call<S> {
    /// Whether to retry after this result: when to, and the request to send.
    /// Emits the trace event that says what was decided.
    fn decide<B>(
        &mut self,
        result: &Result<Response<B>, BoxError>,
    ) -> Result<(Instant, Request<ReplayBody>), Option<NotRetried>> {
        let Some(rs) = self.retry.as_mut() else {
            return Err(None);
        };
        let policy = &self.shared.policy;
        let (status, headers, error) = match result {
            Ok(res) => (Some(res.status()), Some(res.headers()), None),
            Err(e) => (None, None, Some(&**e as &(dyn Error + 'static))),
        };
        // A layer below refused the request on purpose (an open circuit):
        // sending it again now would be refused the same way. Returned at
        // once, whatever a classifier would say.
        if error.is_some_and(is_fail_fast) {
            return Err(None);
        }
        // NOTE: `boxed` always sets the URI.
        let Some(uri) = &rs.uri else {
            return Err(None);
        };
        let outcome = Outcome {
            method: &rs.method,
            uri,
            status,
            headers,
            error,
            attempt: rs.attempt,
            body: false,
        };
        let verdict = policy
            .classifier
            .as_ref()
            .map_or(Verdict::Default, |c| c(&outcome));
        let reason = match (verdict, status, error) {
            (Verdict::Return, ..) => return Err(None),
            (Verdict::Retry, Some(s), _) => Reason::Status(s),
            (Verdict::Default, Some(s), _) if policy.statuses.contains(s) => Reason::Status(s),
            (Verdict::Default, Some(_), _) | (_, None, None) => return Err(None),
            (_, None, Some(e)) if request_never_sent(e) => Reason::NotSent,
            (_, None, Some(_)) => Reason::Error,
        };
        self.weigh(reason, status, headers, error)
    }

    /// Counts a final answer that is not a retryable failure: with a quota,
    /// a status below 400 puts tokens back in the host's bucket (the
    /// increment after a first attempt, else what the retry that succeeded
    /// cost). One branch when there is no quota.
    #[inline]
    fn succeeded(&self, status: StatusCode) {
        if let Some(Limits::Quota(quotas)) = &self.shared.limits {
            if let Some(rs) = &self.retry {
                if let (Some(bucket), true) = (&rs.quota, status.as_u16() < 400) {
                    let config = quotas.config();
                    let tokens = if rs.attempt == 1 {
                        config.get_success_increment()
                    } else {
                        rs.last_cost
                    };
                    bucket.give(tokens, config.get_capacity());
                }
            }
        }
    }

    /// The call, if a response's body that breaks could be retried: the
    /// request may be sent again (its method or override says so; the
    /// body's replay is checked when it breaks), attempts remain. Cheap:
    /// this runs for every call that gets an answer.
    fn for_body(mut self) -> Option<Self> {
        let rs = self.retry.as_mut()?;
        if rs.attempt >= rs.max || rs.body.is_err() {
            return None;
        }
        let rules = self.shared.policy.idempotency;
        let idempotent = match rs.extensions.get::<Idempotency>() {
            Some(Idempotency::Idempotent) => true,
            Some(Idempotency::NotIdempotent) => false,
            None => {
                is_idempotent_method(&rs.method)
                    || (rules.trusts_idempotency_key() && rs.headers.contains(&IDEMPOTENCY_KEY))
            }
        };
        if !idempotent {
            return None;
        }
        // The deadline layer's deadline is in scope while it polls this
        // future, not while it polls the body: kept for a restart.
        rs.scope = Deadline::in_scope();
        Some(self)
    }

    /// The deadline to put in scope around a restart.
    pub(crate) fn scope(&self) -> Option<Deadline> {
        self.retry.as_ref().and_then(|rs| rs.scope)
    }

    /// Whether to re-send the request after the body of the response with
    /// `status` failed with `error`: when to, and the request to send.
    /// Emits the trace event that says what was decided.
    pub(crate) fn decide_body(
        &mut self,
        status: StatusCode,
        error: &(dyn Error + 'static),
    ) -> Option<(Instant, Request<ReplayBody>)> {
        let rs = self.retry.as_ref()?;
        // NOTE: `boxed` always sets the URI.
        let uri = rs.uri.as_ref()?;
        let outcome = Outcome {
            method: &rs.method,
            uri,
            status: Some(status),
            headers: None,
            error: Some(error),
            attempt: rs.attempt,
            body: true,
        };
        let verdict = self
            .shared
            .policy
            .classifier
            .as_ref()
            .map_or(Verdict::Default, |c| c(&outcome));
        let retry = match verdict {
            Verdict::Retry => true,
            Verdict::Return => false,
            Verdict::Default => body_broke(error),
        };
        if !retry {
            return None;
        }
        self.weigh(Reason::Body, None, None, Some(error)).ok()
    }

    /// The checks every retry passes, after the failure was found
    /// retryable: may the request be sent again, do attempts, the deadline
    /// and the budget allow it, and after how long.
    fn weigh(
        &mut self,
        reason: Reason,
        status: Option<StatusCode>,
        headers: Option<&HeaderMap>,
        error: Option<&(dyn Error + 'static)>,
    ) -> Result<(Instant, Request<ReplayBody>), Option<NotRetried>> {
        let Some(rs) = self.retry.as_mut() else {
            return Err(None);
        };
        let policy = &self.shared.policy;
        rs.restore_headers();
        let method = &rs.method;
        let host = rs.uri.as_ref().map_or("", host_of);
        let attempt = rs.attempt;
        // The server's wait, on a status whose Retry-After is obeyed; a
        // malformed value is `None` (plain backoff).
        let told = match (status, headers) {
            (Some(s), Some(h))
                if policy.retry_after_statuses.contains(s) && h.contains_key(RETRY_AFTER) =>
            {
                retry_after(h, SystemTime::now())
            }
            _ => None,
        };
        let stop = |reason| {
            Err(Some(NotRetried {
                reason,
                attempts: attempt,
                retry_after: told,
            }))
        };

        let no_headers = HeaderMap::new();
        let request_headers = match &rs.headers {
            Headers::Map(map) => map,
            // NOTE: `restore_headers` made the map above.
            Headers::List { .. } => &no_headers,
        };
        let idempotent = policy
            .idempotency
            .classify(method, request_headers, &rs.extensions);
        if !idempotent && reason != Reason::NotSent {
            tracing::debug!(%method, host, attempt, %reason, error = error.map(tracing::field::display), "not retrying: the request is not idempotent");
            return stop(NotRetriedReason::NotIdempotent);
        }
        if attempt >= rs.max {
            tracing::debug!(%method, host, attempt, %reason, error = error.map(tracing::field::display), "not retrying: no attempts left");
            return stop(NotRetriedReason::NoAttemptsLeft);
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
                return stop(NotRetriedReason::BodyNotReplayable);
            }
        };

        let now = Instant::now();
        // The deadline the request carries, or the one the deadline layer
        // put in scope while it polls this future.
        let mut limit = Deadline::current(&rs.extensions).map(Deadline::instant);
        // NOTE: the call's start is known whenever `max_elapsed` is set.
        if let (Some(max), Some(started)) = (policy.max_elapsed, rs.started) {
            let end = started
                .checked_add(max)
                .unwrap_or_else(|| far_future(started));
            limit = Some(limit.map_or(end, |l| l.min(end)));
        }
        let time_left = limit.map(|l| l.saturating_duration_since(now));

        let backoff = policy.backoff.delay(attempt, rs.previous_delay);
        let mut delay = backoff;
        let mut from_server = false;
        if let Some(told) = told {
            let told_secs = told.as_secs();
            if told > policy.max_retry_after {
                tracing::debug!(%method, host, attempt, %reason, retry_after_s = told_secs, "not retrying: Retry-After is longer than the maximum");
                return stop(NotRetriedReason::RetryAfterTooLong);
            }
            if time_left.is_some_and(|left| told > left) {
                tracing::debug!(%method, host, attempt, %reason, retry_after_s = told_secs, "not retrying: Retry-After ends after the deadline");
                return stop(NotRetriedReason::RetryAfterPastDeadline);
            }
            if told >= backoff {
                delay = policy
                    .backoff
                    .jitter
                    .spread_up(told, policy.retry_after_jitter);
                from_server = true;
            }
        }
        if time_left.is_some_and(|left| delay > left || left.is_zero()) {
            tracing::debug!(%method, host, attempt, %reason, error = error.map(tracing::field::display), delay_ms = millis(delay), "not retrying: the wait would end after the deadline");
            return stop(NotRetriedReason::WaitPastDeadline);
        }
        match &self.shared.limits {
            Some(Limits::Budget(budgets)) if !budgets.withdraw(host, now) => {
                tracing::info!(%method, host, attempt, %reason, error = error.map(tracing::field::display), "not retrying: retry budget exhausted");
                return stop(NotRetriedReason::BudgetExhausted);
            }
            Some(Limits::Quota(quotas)) => {
                let cost = quotas.cost(error);
                if !quotas.withdraw(rs.quota.as_ref(), host, cost, now) {
                    tracing::info!(%method, host, attempt, %reason, error = error.map(tracing::field::display), cost, "not retrying: retry quota exhausted");
                    return stop(NotRetriedReason::QuotaExhausted);
                }
                rs.last_cost = cost;
            }
            Some(Limits::Budget(_)) | None => {}
        }

        rs.attempt += 1;
        rs.previous_delay = backoff;
        tracing::debug!(
            %method,
            host,
            attempt = rs.attempt,
            %reason, error = error.map(tracing::field::display),
            delay_ms = millis(delay),
            delay_source = if from_server { "server" } else { "backoff" },
            "retrying request"
        );
        #[cfg(feature = "metrics")]
        if let Some(uri) = &rs.uri {
            let source = if from_server {
                crate::metrics::WaitSource::RetryAfter
            } else {
                crate::metrics::WaitSource::Backoff
            };
            crate::metrics::retry_wait(uri, source, delay);
        }
        let request = rs.request(body);
        let at = now.checked_add(delay).unwrap_or_else(|| far_future(now));
        Ok((at, request))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Method, StatusCode};
    use http_body::{Frame, SizeHint};
    use http_body_util::{BodyExt, Full, StreamBody};
    use parapet_core::{
        Attempt, BoxError, Deadline, IDEMPOTENCY_KEY, Idempotency, IdempotencyKey,
        IdempotencyRules, Jitter, ReplayBody, fmt_http_date,
    };
    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        BackoffJitter, BodyRestart, BodyRestartFailed, Retry, RetryBudget, RetryLayer, RetryPolicy,
        RetryPolicyBuilder, RetryQuota,
    };

    const MS: Duration = Duration::from_millis(1);

    /// What the stand-in server saw of one attempt.
    #[derive(Debug, Clone)]
    struct Seen {
        at: Instant,
        method: Method,
        attempt: Option<Attempt>,
        body: Bytes,
        key: Option<HeaderValue>,
        headers: HeaderMap,
        extensions: Extensions,
    }

    type Reply = Result<Response<TestBody>, BoxError>;

    /// The retry layer's response body over the stand-in server.
    type StubBody = RetryBody<Stub, Pin<Box<dyn Future<Output = Reply> + Send>>, TestBody>;

    /// A stand-in server: answers the n-th attempt with the n-th scripted
    /// reply (the last repeats) and records what arrived.
    #[derive(Clone)]
    struct Stub {
        seen: Arc<Mutex<Vec<Seen>>>,
        script: Arc<dyn Fn(usize) -> Reply + Send + Sync>,
    }

    impl Stub {
        fn new(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
            Self {
                seen: Arc::default(),
                script: Arc::new(script),
            }
        }

        fn statuses(codes: &'static [u16]) -> Self {
            Self::new(move |n| Ok(status(codes[n.min(codes.len() - 1)])))
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        fn gaps(&self) -> Vec<Duration> {
            let seen = self.seen();
            seen.windows(2).map(|w| w[1].at - w[0].at).collect()
        }
    }

    impl Service<Request<ReplayBody>> for Stub {
        type Response = Response<TestBody>;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let at = Instant::now();
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                let n = {
                    let mut seen = this.seen.lock().unwrap();
                    seen.push(Seen {
                        at,
                        method: parts.method.clone(),
                        attempt: Attempt::get(&parts.extensions),
                        body,
                        key: parts.headers.get(IDEMPOTENCY_KEY).cloned(),
                        headers: parts.headers.clone(),
                        extensions: parts.extensions.clone(),
                    });
                    seen.len() - 1
                };
                (this.script)(n)
            })
        }
    }

    /// A response body: in memory, or endless, noting when it is dropped.
    enum TestBody {
        Full(Full<Bytes>),
        Endless {
            polled: Arc<AtomicUsize>,
            dropped: Arc<AtomicBool>,
        },
        Frames(VecDeque<Bytes>, Arc<AtomicUsize>),
        /// These frames, then this error.
        Breaks(VecDeque<Bytes>, Option<io::ErrorKind>),
    }

    impl fmt::Debug for TestBody {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("TestBody")
        }
    }

    impl Drop for TestBody {
        fn drop(&mut self) {
            if let Self::Endless { dropped, .. } = self {
                dropped.store(true, Ordering::SeqCst);
            }
        }
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.get_mut() {
                Self::Full(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
                Self::Endless { polled, .. } => {
                    polled.fetch_add(1, Ordering::SeqCst);
                    Poll::Pending
                }
                Self::Frames(frames, read) => Poll::Ready(frames.pop_front().map(|f| {
                    read.fetch_add(f.len(), Ordering::SeqCst);
                    Ok(Frame::data(f))
                })),
                Self::Breaks(frames, error) => Poll::Ready(match frames.pop_front() {
                    Some(f) => Some(Ok(Frame::data(f))),
                    None => error.take().map(|kind| Err(io::Error::from(kind).into())),
                }),
            }
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::new()
        }
    }

    fn status(code: u16) -> Response<TestBody> {
        Response::builder()
            .status(code)
            .body(TestBody::Full(Full::new(Bytes::new())))
            .unwrap()
    }

    fn with_retry_after(code: u16, value: &str) -> Response<TestBody> {
        let mut res = status(code);
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        res
    }

    /// A deterministic policy: no jitter, no budget.
    fn plain() -> RetryPolicyBuilder {
        RetryPolicy::builder()
            .jitter(BackoffJitter::None)
            .jitter_source(Jitter::fixed(0.5))
            .budget(None)
    }

    fn get() -> Request<ReplayBody> {
        Request::get("http://api.test/items")
            .body(ReplayBody::empty())
            .unwrap()
    }

    fn post(body: &'static str) -> Request<ReplayBody> {
        Request::post("http://api.test/charges")
            .body(ReplayBody::from(body))
            .unwrap()
    }

    async fn send(
        policy: RetryPolicyBuilder,
        stub: &Stub,
        req: Request<ReplayBody>,
    ) -> Result<Response<StubBody>, BoxError> {
        Retry::new(stub.clone(), policy.build().unwrap())
            .oneshot(req)
            .await
    }

    fn refused() -> BoxError {
        Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))
    }

    fn reset() -> BoxError {
        Box::new(io::Error::from(io::ErrorKind::ConnectionReset))
    }

    #[tokio::test(start_paused = true)]
    async fn get_503_503_200_is_sent_three_times() {
        let stub = Stub::statuses(&[503, 503, 200]);
        let res = send(plain(), &stub, get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = stub.seen();
        assert_eq!(seen.len(), 3);
        // The first attempt carries no `Attempt` (absence means attempt 1);
        // each retry carries its number.
        let attempts: Vec<_> = seen.iter().map(|s| s.attempt).collect();
        assert_eq!(
            attempts,
            [None, Some(Attempt::new(2, 3)), Some(Attempt::new(3, 3))]
        );
        assert!(seen.iter().all(|s| s.method == Method::GET));
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_carries_the_same_headers_and_extensions() {
        #[derive(Debug, Clone, PartialEq)]
        struct Marker(&'static str);

        let stub = Stub::statuses(&[503, 503, 200]);
        let mut req = Request::get("http://api.test/items")
            .header("x-a", "1")
            .header("accept", "text/plain")
            .header("x-a", "2")
            .header("x-custom-name", "v")
            .header("x-a", "3")
            .body(ReplayBody::empty())
            .unwrap();
        req.extensions_mut().insert(Marker("mine"));
        let sent = req.headers().clone();
        let res = send(plain(), &stub, req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = stub.seen();
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert_eq!(s.headers, sent);
            let a: Vec<_> = s.headers.get_all("x-a").iter().collect();
            assert_eq!(a, ["1", "2", "3"]);
            let names: Vec<_> = s.headers.keys().map(HeaderName::as_str).collect();
            assert_eq!(names, ["x-a", "accept", "x-custom-name"]);
            assert_eq!(s.extensions.get::<Marker>(), Some(&Marker("mine")));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_never_exceed_the_maximum() {
        let stub = Stub::statuses(&[503]);
        let res = send(plain().max_attempts(5), &stub, get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stub.seen().len(), 5);

        let stub = Stub::statuses(&[503]);
        send(plain().max_attempts(1), &stub, get()).await.unwrap();
        assert_eq!(stub.seen().len(), 1);
        assert_eq!(stub.seen()[0].attempt, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outer_attempt_is_replaced_on_every_attempt() {
        // A request that arrives with an `Attempt` (an outer retry layer's)
        // carries this layer's instead, from the first attempt on.
        let stub = Stub::statuses(&[503, 200]);
        let mut req = get();
        req.extensions_mut().insert(Attempt::new(3, 4));
        send(plain().max_attempts(2), &stub, req).await.unwrap();
        let attempts: Vec<_> = stub.seen().iter().map(|s| s.attempt).collect();
        assert_eq!(
            attempts,
            [Some(Attempt::new(1, 2)), Some(Attempt::new(2, 2))]
        );

        let stub = Stub::statuses(&[200]);
        let mut req = get();
        req.extensions_mut().insert(Attempt::new(3, 4));
        send(plain().max_attempts(1), &stub, req).await.unwrap();
        assert_eq!(stub.seen()[0].attempt, Some(Attempt::new(1, 1)));
    }

    fn with_max(mut req: Request<ReplayBody>, max: u32) -> Request<ReplayBody> {
        req.extensions_mut().insert(crate::MaxAttempts(max));
        req
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_s_max_attempts_replaces_the_policy_s() {
        // More than the policy allows, and every retry says so.
        let stub = Stub::statuses(&[503]);
        let res = send(plain(), &stub, with_max(get(), 5)).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let attempts: Vec<_> = stub.seen().iter().map(|s| s.attempt).collect();
        let expected: Vec<_> = (1..=5)
            .map(|n| (n > 1).then(|| Attempt::new(n, 5)))
            .collect();
        assert_eq!(attempts, expected);
        assert_eq!(why(&res), Some((NotRetriedReason::NoAttemptsLeft, 5, None)));

        // Fewer; the backoff is the policy's.
        let stub = Stub::statuses(&[503]);
        send(plain(), &stub, with_max(get(), 2)).await.unwrap();
        assert_eq!(stub.seen().len(), 2);
        assert_eq!(stub.gaps(), [100 * MS]);

        // More than a policy of one attempt.
        let stub = Stub::statuses(&[503, 200]);
        let policy = plain().max_attempts(1);
        let res = send(policy, &stub, with_max(get(), 2)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(stub.seen().len(), 2);

        // 1, and 0 taken as 1: no retry.
        for max in [1, 0] {
            let stub = Stub::statuses(&[503, 200]);
            let res = send(plain(), &stub, with_max(get(), max)).await.unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(stub.seen().len(), 1);
            assert_eq!(stub.seen()[0].attempt, None);
        }

        // An outer layer's `Attempt` is replaced by one with this maximum.
        let stub = Stub::statuses(&[200]);
        let mut req = with_max(get(), 4);
        req.extensions_mut().insert(Attempt::new(3, 9));
        send(plain(), &stub, req).await.unwrap();
        assert_eq!(stub.seen()[0].attempt, Some(Attempt::new(1, 4)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_s_max_attempts_leaves_idempotency_and_budget_alone() {
        let stub = Stub::statuses(&[503]);
        let post = with_max(post("{}"), 5);
        send(plain(), &stub, post).await.unwrap();
        assert_eq!(stub.seen().len(), 1);

        let stub = Stub::statuses(&[503]);
        let policy = plain().budget(RetryBudget::new().percent(0).min_per_second(0));
        let res = send(policy, &stub, with_max(get(), 5)).await.unwrap();
        assert_eq!(stub.seen().len(), 1);
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::BudgetExhausted, 1, None))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn post_503_is_sent_once() {
        let stub = Stub::statuses(&[503, 200]);
        let res = send(plain(), &stub, post("{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn post_with_a_trusted_idempotency_key_is_retried_with_the_same_key_and_body() {
        let stub = Stub::statuses(&[503, 503, 200]);
        let mut req = post(r#"{"amount":100}"#);
        IdempotencyKey::ensure(&mut req);
        let policy = plain().idempotency(IdempotencyRules::new().trust_idempotency_key(true));
        let res = send(policy, &stub, req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = stub.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.key == seen[0].key && s.key.is_some()));
        assert!(seen.iter().all(|s| s.body == r#"{"amount":100}"#));

        // Not trusted: sent once.
        let stub = Stub::statuses(&[503, 200]);
        let mut req = post("{}");
        IdempotencyKey::ensure(&mut req);
        send(plain(), &stub, req).await.unwrap();
        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn per_request_overrides_decide() {
        let stub = Stub::statuses(&[503, 200]);
        let mut req = post("{}");
        req.extensions_mut().insert(Idempotency::Idempotent);
        send(plain(), &stub, req).await.unwrap();
        assert_eq!(stub.seen().len(), 2);

        let stub = Stub::statuses(&[503, 200]);
        let mut req = get();
        req.extensions_mut().insert(Idempotency::NotIdempotent);
        send(plain(), &stub, req).await.unwrap();
        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_that_never_left_is_retried() {
        let stub = Stub::new(|n| {
            if n < 2 {
                Err(refused())
            } else {
                Ok(status(201))
            }
        });
        let res = send(plain(), &stub, post("{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(stub.seen().len(), 3);
        assert!(stub.seen().iter().all(|s| s.body == "{}"));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_after_sending_are_retried_for_idempotent_requests_only() {
        let stub = Stub::new(|n| if n < 1 { Err(reset()) } else { Ok(status(200)) });
        let err = send(plain(), &stub, post("{}")).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<io::Error>().unwrap().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(stub.seen().len(), 1);

        let stub = Stub::new(|n| if n < 1 { Err(reset()) } else { Ok(status(200)) });
        let res = send(plain(), &stub, get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(stub.seen().len(), 2);

        // The last error is returned as it is.
        let stub = Stub::new(|_| Err(reset()));
        let err = send(plain(), &stub, get()).await.unwrap_err();
        assert!(err.downcast_ref::<io::Error>().is_some());
        assert_eq!(stub.seen().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_refusal_is_not_retried() {
        #[derive(Debug)]
        struct CircuitOpen(parapet_core::FailFast);
        impl fmt::Display for CircuitOpen {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("circuit open")
            }
        }
        impl Error for CircuitOpen {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }

        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let inner = tower::service_fn(move |_: Request<ReplayBody>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Response<String>, BoxError>(Box::new(CircuitOpen(
                    parapet_core::FailFast::default(),
                )))
            }
        });
        // Even a classifier that asks for a retry of every error does not
        // get one.
        let policy = plain().classify(|_| Verdict::Retry).build().unwrap();
        let err = Retry::new(inner, policy).oneshot(get()).await.unwrap_err();
        assert!(err.downcast_ref::<CircuitOpen>().is_some(), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_not_listed_are_returned() {
        for code in [200, 201, 400, 404, 409, 501] {
            let stub = Stub::new(move |n| Ok(status(if n == 0 { code } else { 200 })));
            let res = send(plain(), &stub, get()).await.unwrap();
            assert_eq!(res.status().as_u16(), code);
            assert_eq!(stub.seen().len(), 1, "{code}");
        }
        let stub = Stub::statuses(&[409, 200]);
        send(plain().retry_on([StatusCode::CONFLICT]), &stub, get())
            .await
            .unwrap();
        assert_eq!(stub.seen().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_classifier_sees_the_outcome_and_decides() {
        let seen_by_classifier = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen_by_classifier);
        let policy = plain().classify(move |o| {
            log.lock().unwrap().push((
                o.method().clone(),
                o.uri().path().to_owned(),
                o.status(),
                o.headers().map(HeaderMap::len),
                o.error().map(ToString::to_string),
                o.attempt(),
            ));
            match o.status() {
                Some(StatusCode::CONFLICT) => Verdict::Retry,
                Some(StatusCode::BAD_GATEWAY) => Verdict::Return,
                _ => Verdict::Default,
            }
        });
        let stub = Stub::new(|n| match n {
            0 => Ok(status(409)),
            1 => Err(reset()),
            _ => Ok(status(502)),
        });
        let res = send(policy, &stub, get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(stub.seen().len(), 3);
        let log = seen_by_classifier.lock().unwrap().clone();
        assert_eq!(log[0].2, Some(StatusCode::CONFLICT));
        assert_eq!(log[0].1, "/items");
        assert_eq!(log[1].4.as_deref(), Some("connection reset"));
        assert_eq!(log[1].2, None);
        assert_eq!(log[2].5, 3);

        // A classifier cannot make a POST retryable.
        let stub = Stub::statuses(&[409, 200]);
        send(plain().classify(|_| Verdict::Retry), &stub, post("x"))
            .await
            .unwrap();
        assert_eq!(stub.seen().len(), 1);
    }

    /// The gaps between arrivals for the given jitter, with a fixed sample of 0.5.
    async fn gaps(kind: BackoffJitter, attempts: u32) -> Vec<Duration> {
        let stub = Stub::statuses(&[503]);
        let policy = plain().jitter(kind).max_attempts(attempts);
        send(policy, &stub, get()).await.unwrap();
        stub.gaps()
    }

    #[tokio::test(start_paused = true)]
    async fn delay_sequence_without_jitter() {
        assert_eq!(
            gaps(BackoffJitter::None, 6).await,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_sequence_with_full_jitter() {
        assert_eq!(
            gaps(BackoffJitter::Full, 5).await,
            [50 * MS, 100 * MS, 200 * MS, 400 * MS]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_sequence_with_equal_jitter() {
        assert_eq!(
            gaps(BackoffJitter::Equal, 5).await,
            [75 * MS, 150 * MS, 300 * MS, 600 * MS]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_sequence_with_decorrelated_jitter() {
        let got = gaps(BackoffJitter::Decorrelated, 5).await;
        let expected = [200_000u64, 350_000, 575_000, 912_500];
        assert_eq!(got.len(), 4);
        for (g, e) in got.iter().zip(expected) {
            assert!(g.abs_diff(Duration::from_micros(e)) <= MS, "{got:?}");
            // tokio timers tick in whole milliseconds.
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_capped_and_floored() {
        let policy = plain()
            .max_attempts(5)
            .base_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(3));
        let stub = Stub::statuses(&[503]);
        send(policy, &stub, get()).await.unwrap();
        assert_eq!(stub.gaps(), [1000 * MS, 2000 * MS, 3000 * MS, 3000 * MS]);

        let stub = Stub::statuses(&[503]);
        let zero = plain()
            .jitter(BackoffJitter::Full)
            .jitter_source(Jitter::fixed(0.0));
        send(zero, &stub, get()).await.unwrap();
        assert_eq!(stub.gaps(), [10 * MS, 10 * MS]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_on_429_is_obeyed_with_an_upward_spread() {
        let stub = Stub::new(|n| {
            Ok(if n == 0 {
                with_retry_after(429, "5")
            } else {
                status(200)
            })
        });
        let res = send(plain(), &stub, get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // 5 s plus half of the 10 % spread.
        assert_eq!(stub.gaps(), [Duration::from_millis(5250)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_longer_of_backoff_and_retry_after_wins() {
        let stub = Stub::new(|n| {
            Ok(if n < 2 {
                with_retry_after(503, "0")
            } else {
                status(200)
            })
        });
        send(plain(), &stub, get()).await.unwrap();
        assert_eq!(stub.gaps(), [100 * MS, 200 * MS]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http_date_retry_after_is_obeyed() {
        let stub = Stub::new(|n| {
            Ok(if n == 0 {
                let date = fmt_http_date(SystemTime::now() + Duration::from_secs(3));
                with_retry_after(503, &date)
            } else {
                status(200)
            })
        });
        send(plain().retry_after_jitter(0.0), &stub, get())
            .await
            .unwrap();
        let gap = stub.gaps()[0];
        // The date has a resolution of one second.
        assert!(
            gap > Duration::from_secs(2) && gap <= Duration::from_secs(3),
            "{gap:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_retry_after_falls_back_to_backoff() {
        let stub = Stub::new(|n| {
            Ok(if n == 0 {
                with_retry_after(503, "soon")
            } else {
                status(200)
            })
        });
        send(plain(), &stub, get()).await.unwrap();
        assert_eq!(stub.gaps(), [100 * MS]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_on_other_statuses_is_opt_in() {
        let script = |n| {
            Ok(if n == 0 {
                with_retry_after(500, "7")
            } else {
                status(200)
            })
        };
        let stub = Stub::new(script);
        send(plain(), &stub, get()).await.unwrap();
        assert_eq!(stub.gaps(), [100 * MS]);

        let stub = Stub::new(script);
        let policy = plain()
            .retry_after_on([StatusCode::INTERNAL_SERVER_ERROR])
            .retry_after_jitter(0.0);
        send(policy, &stub, get()).await.unwrap();
        assert_eq!(stub.gaps(), [Duration::from_secs(7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_maximum_returns_at_once() {
        let stub = Stub::new(|_| Ok(with_retry_after(429, "86400")));
        let start = Instant::now();
        let res = send(plain(), &stub, get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[RETRY_AFTER], "86400");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_past_the_deadline_fails_fast() {
        let stub = Stub::new(|_| Ok(with_retry_after(503, "5")));
        let mut req = get();
        Deadline::after(Duration::from_secs(2)).apply(req.extensions_mut());
        let start = Instant::now();
        let res = send(plain(), &stub, req).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(stub.seen().len(), 1);
    }

    /// Polls `fut` with `deadline` in scope around each poll, as the
    /// deadline layer does; the request carries no deadline.
    async fn in_scope<F: Future>(deadline: Deadline, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let _scope = deadline.enter();
            fut.as_mut().poll(cx)
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_promises_to_wake_the_task_when_it_ends() {
        let stub = Stub::statuses(&[503]);
        let retry = Retry::new(stub.clone(), plain().build().unwrap());
        let start = Instant::now();
        let mut fut = std::pin::pin!(retry.oneshot(get()));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (polled, promised) = parapet_core::clock::watch_wakeups(|| fut.as_mut().poll(&mut cx));
        assert!(polled.is_pending());
        // The first attempt got its 503; the first backoff (100 ms) holds a
        // timer that wakes the task.
        assert_eq!(stub.seen().len(), 1);
        assert_eq!(promised, Some(start + 100 * MS));
        fut.await.unwrap();
        assert_eq!(stub.seen().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_in_scope_stops_a_wait_that_would_pass_it() {
        // Waits of 100 ms and then 200 ms: the second would pass 250 ms.
        let stub = Stub::statuses(&[503]);
        let retry = Retry::new(stub.clone(), plain().build().unwrap());
        let start = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(250));
        let res = in_scope(deadline, retry.oneshot(get())).await.unwrap();
        assert_eq!(stub.seen().len(), 2);
        assert_eq!(start.elapsed(), 100 * MS);
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::WaitPastDeadline, 2, None))
        );
        assert!(
            stub.seen()
                .iter()
                .all(|s| Deadline::get(&s.extensions).is_none())
        );

        // A Retry-After past the deadline in scope: returned at once.
        let stub = Stub::new(|_| Ok(with_retry_after(503, "5")));
        let retry = Retry::new(stub.clone(), plain().build().unwrap());
        let deadline = Deadline::after(Duration::from_secs(2));
        let res = in_scope(deadline, retry.oneshot(get())).await.unwrap();
        assert_eq!(stub.seen().len(), 1);
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::RetryAfterPastDeadline, 1, five))
        );

        // The earlier of the scope's and the request's wins.
        let stub = Stub::statuses(&[503]);
        let retry = Retry::new(stub.clone(), plain().build().unwrap());
        let mut req = get();
        Deadline::after(Duration::from_secs(60)).apply(req.extensions_mut());
        let deadline = Deadline::after(50 * MS);
        in_scope(deadline, retry.oneshot(req)).await.unwrap();
        assert_eq!(stub.seen().len(), 1);

        // Without a deadline, the same calls are retried to the last attempt.
        let stub = Stub::statuses(&[503]);
        send(plain(), &stub, get()).await.unwrap();
        assert_eq!(stub.seen().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_ends_after_the_deadline() {
        let stub = Stub::statuses(&[503]);
        let mut req = get();
        // Waits of 100 ms and then 200 ms: the second would pass 250 ms.
        Deadline::after(Duration::from_millis(250)).apply(req.extensions_mut());
        let start = Instant::now();
        send(plain(), &stub, req).await.unwrap();
        assert_eq!(stub.seen().len(), 2);
        assert_eq!(start.elapsed(), 100 * MS);

        // The same with max_elapsed.
        let stub = Stub::statuses(&[503]);
        send(
            plain().max_elapsed(Duration::from_millis(250)),
            &stub,
            get(),
        )
        .await
        .unwrap();
        assert_eq!(stub.seen().len(), 2);
    }

    /// A streamed body of `n` bytes in chunks of 10.
    fn streamed(n: usize) -> ReplayBody {
        let chunks: Vec<Result<Frame<Bytes>, io::Error>> = (0..n)
            .step_by(10)
            .map(|i| Ok(Frame::data(Bytes::from(vec![b'a'; 10.min(n - i)]))))
            .collect();
        ReplayBody::new(StreamBody::new(Iter(chunks.into_iter())), usize::MAX)
    }

    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T: Unpin> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.next())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streamed_bodies_are_replayed_byte_for_byte() {
        let stub = Stub::statuses(&[503, 503, 200]);
        let req = Request::put("http://api.test/doc")
            .body(streamed(95))
            .unwrap();
        send(plain(), &stub, req).await.unwrap();
        let seen = stub.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.body == vec![b'a'; 95]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_cap_is_sent_once() {
        let stub = Stub::statuses(&[503, 200]);
        let body = ReplayBody::new(
            StreamBody::new(Iter(
                vec![Ok::<_, io::Error>(Frame::data(Bytes::from(vec![1u8; 100])))].into_iter(),
            )),
            64,
        );
        let req = Request::put("http://api.test/doc").body(body).unwrap();
        let res = send(plain(), &stub, req).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stub.seen().len(), 1);
        assert_eq!(stub.seen()[0].body.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_policy_cap_applies_to_streamed_bodies() {
        let stub = Stub::statuses(&[503, 200]);
        let stream = StreamBody::new(Iter(
            vec![Ok::<_, io::Error>(Frame::data(Bytes::from(vec![1u8; 100])))].into_iter(),
        ));
        let req = Request::put("http://api.test/doc").body(stream).unwrap();
        let res = Retry::new(stub.clone(), plain().replay_cap(50).build().unwrap())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_stops_retries() {
        let policy = plain().budget(RetryBudget::new().percent(0).min_per_second(1));
        let layer = RetryLayer::new(policy.build().unwrap());
        let stub = Stub::statuses(&[503]);
        let svc = tower::Layer::layer(&layer, stub.clone());
        // One retry per second for the host, shared by clones.
        svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(stub.seen().len(), 2);
        svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(stub.seen().len(), 3);
        // Another host has its own budget.
        let other = Request::get("http://other.test/")
            .body(ReplayBody::empty())
            .unwrap();
        svc.clone().oneshot(other).await.unwrap();
        assert_eq!(stub.seen().len(), 5);
    }

    fn on(host: &str) -> Request<ReplayBody> {
        Request::get(format!("http://{host}/items"))
            .body(ReplayBody::empty())
            .unwrap()
    }

    fn timed_out() -> BoxError {
        Box::new(io::Error::from(io::ErrorKind::TimedOut))
    }

    fn with_quota(quota: RetryQuota) -> RetryPolicy {
        plain().retry_quota(quota).build().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_drains_by_5_per_retry_and_10_per_retry_after_a_timeout() {
        let stub = Stub::statuses(&[503]);
        let svc = Retry::new(stub.clone(), with_quota(RetryQuota::aws_standard()));
        let res = svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(
            why(&res).map(|w| w.0),
            Some(NotRetriedReason::NoAttemptsLeft)
        );
        assert_eq!(stub.seen().len(), 3);
        assert_eq!(svc.quota_tokens("a.test"), Some(490));

        let stub = Stub::new(|_| Err(timed_out()));
        let svc = Retry::new(stub.clone(), with_quota(RetryQuota::aws_standard()));
        svc.clone().oneshot(on("a.test")).await.unwrap_err();
        assert_eq!(stub.seen().len(), 3);
        assert_eq!(svc.quota_tokens("a.test"), Some(480));
        // Any other error costs the plain 5.
        let stub = Stub::new(|_| Err(reset()));
        let svc = Retry::new(stub.clone(), with_quota(RetryQuota::aws_standard()));
        svc.clone().oneshot(on("a.test")).await.unwrap_err();
        assert_eq!(svc.quota_tokens("a.test"), Some(490));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_quota_refuses_the_retry_and_hosts_are_independent() {
        let stub = Stub::statuses(&[503]);
        let svc = Retry::new(stub.clone(), with_quota(RetryQuota::new().capacity(12)));
        svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(stub.seen().len(), 3);
        assert_eq!(svc.quota_tokens("a.test"), Some(2));
        // 2 tokens left, a retry costs 5: the 503 comes back at once.
        let res = svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(why(&res), Some((NotRetriedReason::QuotaExhausted, 1, None)));
        assert_eq!(stub.seen().len(), 4);
        assert_eq!(svc.quota_tokens("a.test"), Some(2));
        // Another host has a bucket of its own, full.
        svc.clone().oneshot(on("b.test")).await.unwrap();
        assert_eq!(stub.seen().len(), 7);
        assert_eq!(svc.quota_tokens("b.test"), Some(2));
        // An error is returned as it is when the quota is short.
        let stub = Stub::new(|_| Err(timed_out()));
        let svc = Retry::new(stub.clone(), with_quota(RetryQuota::new().capacity(15)));
        svc.clone().oneshot(on("a.test")).await.unwrap_err();
        assert_eq!(stub.seen().len(), 2, "one timeout retry, then 5 < 10");
        assert_eq!(svc.quota_tokens("a.test"), Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_refills_by_one_per_first_try_success_and_refunds_a_retry_that_succeeds() {
        let stub = Stub::statuses(&[503, 503, 503, 503, 200, 200, 404, 200]);
        let svc = Retry::new(stub.clone(), with_quota(RetryQuota::new().capacity(20)));
        svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(svc.quota_tokens("a.test"), Some(10), "two retries");
        // 503 then 200: the retry's 5 taken, then given back.
        let res = svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(stub.seen().len(), 5);
        assert_eq!(svc.quota_tokens("a.test"), Some(10));
        // A first-try success: one back.
        svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(svc.quota_tokens("a.test"), Some(11));
        // A 404 is not a success: nothing back.
        let res = svc.clone().oneshot(on("a.test")).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(svc.quota_tokens("a.test"), Some(11));
        // Never above the capacity.
        for _ in 0..20 {
            svc.clone().oneshot(on("a.test")).await.unwrap();
        }
        assert_eq!(svc.quota_tokens("a.test"), Some(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_discarded_body_is_drained_while_waiting() {
        let read = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&read);
        let stub = Stub::new(move |n| {
            Ok(if n == 0 {
                let frames = VecDeque::from([
                    Bytes::from_static(b"busy "),
                    Bytes::from_static(b"try later"),
                ]);
                Response::builder()
                    .status(503)
                    .body(TestBody::Frames(frames, Arc::clone(&r)))
                    .unwrap()
            } else {
                status(200)
            })
        });
        send(plain(), &stub, get()).await.unwrap();
        assert_eq!(read.load(Ordering::SeqCst), 14);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_discarded_body_is_dropped_past_the_limit() {
        let read = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&read);
        let stub = Stub::new(move |n| {
            Ok(if n == 0 {
                let frames = (0..100).map(|_| Bytes::from(vec![0u8; 1024])).collect();
                Response::builder()
                    .status(503)
                    .body(TestBody::Frames(frames, Arc::clone(&r)))
                    .unwrap()
            } else {
                status(200)
            })
        });
        send(plain(), &stub, get()).await.unwrap();
        assert_eq!(read.load(Ordering::SeqCst), 5 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_discarded_body_is_dropped_after_the_drain_time() {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&dropped);
        let stub = Stub::new(move |n| {
            Ok(if n == 0 {
                with_body(
                    with_retry_after(503, "2"),
                    TestBody::Endless {
                        polled: Arc::default(),
                        dropped: Arc::clone(&d),
                    },
                )
            } else {
                status(200)
            })
        });
        let retry = Retry::new(
            stub.clone(),
            plain().retry_after_jitter(0.0).build().unwrap(),
        );
        let mut fut = std::pin::pin!(retry.oneshot(get()));
        assert!(futures_poll(&mut fut).is_pending());
        assert!(!dropped.load(Ordering::SeqCst));
        tokio::time::advance(99 * MS).await;
        assert!(futures_poll(&mut fut).is_pending());
        assert!(!dropped.load(Ordering::SeqCst));
        tokio::time::advance(2 * MS).await;
        assert!(futures_poll(&mut fut).is_pending());
        assert!(dropped.load(Ordering::SeqCst), "dropped after 100 ms");
        assert_eq!(stub.seen().len(), 1);
        let res = fut.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(stub.gaps(), [Duration::from_secs(2)]);
    }

    fn with_body(res: Response<TestBody>, body: TestBody) -> Response<TestBody> {
        let (parts, _) = res.into_parts();
        Response::from_parts(parts, body)
    }

    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_future_ends_the_wait() {
        let stub = Stub::statuses(&[503]);
        let retry = Retry::new(stub.clone(), plain().build().unwrap());
        let mut fut = Box::pin(retry.oneshot(get()));
        assert!(futures_poll(&mut fut).is_pending());
        assert_eq!(stub.seen().len(), 1);
        drop(fut);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(stub.seen().len(), 1);
    }

    #[test]
    fn hosts_drop_user_information() {
        let uri: Uri = "http://user:secret@api.test:8080/x".parse().unwrap();
        assert_eq!(host_of(&uri), "api.test:8080");
        for (authority, host) in [
            ("a", "a"),
            ("@h", "h"),
            ("u@h", "h"),
            ("user:pw@api.example.com:443", "api.example.com:443"),
            ("abcdefg@h", "h"),
            ("abcdefgh@h", "h"),
            (
                "abcdefghijklmno@hostname.example:8080",
                "hostname.example:8080",
            ),
            ("a@b@c.example", "c.example"),
            (
                "a.very.long.host.name.example.com:8443",
                "a.very.long.host.name.example.com:8443",
            ),
            ("\u{7f}\u{80}", "\u{7f}\u{80}"),
        ] {
            let uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query("/")
                .build();
            let Ok(uri) = uri else { continue };
            assert_eq!(host_of(&uri), host, "{authority}");
        }
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                assert!(!has_at(&bytes));
                bytes[at] = b'@';
                assert!(has_at(&bytes), "{len} {at}");
                bytes[at] = b'@' ^ 0x80;
                assert!(!has_at(&bytes), "{len} {at}");
                bytes[at] = b'A';
                assert!(!has_at(&bytes), "{len} {at}");
            }
        }
        assert_eq!(host_of(&"/relative".parse().unwrap()), "");
    }

    fn why<B>(res: &Response<B>) -> Option<(NotRetriedReason, u32, Option<Duration>)> {
        NotRetried::get(res.extensions()).map(|n| (n.reason(), n.attempts(), n.retry_after()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_returned_failure_says_why_it_was_not_retried() {
        let stub = Stub::statuses(&[503]);
        let res = send(plain(), &stub, post("{}")).await.unwrap();
        assert_eq!(why(&res), Some((NotRetriedReason::NotIdempotent, 1, None)));

        let stub = Stub::statuses(&[503]);
        let res = send(plain(), &stub, get()).await.unwrap();
        assert_eq!(why(&res), Some((NotRetriedReason::NoAttemptsLeft, 3, None)));

        let stub = Stub::new(|_| Ok(with_retry_after(429, "86400")));
        let res = send(plain(), &stub, get()).await.unwrap();
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::RetryAfterTooLong, 1, day))
        );

        let stub = Stub::new(|_| Ok(with_retry_after(503, "5")));
        let mut req = get();
        Deadline::after(Duration::from_secs(2)).apply(req.extensions_mut());
        let res = send(plain(), &stub, req).await.unwrap();
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::RetryAfterPastDeadline, 1, five))
        );

        let stub = Stub::statuses(&[503]);
        let mut req = get();
        Deadline::after(50 * MS).apply(req.extensions_mut());
        let res = send(plain(), &stub, req).await.unwrap();
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::WaitPastDeadline, 1, None))
        );

        let stub = Stub::statuses(&[503]);
        let policy = plain().budget(RetryBudget::new().percent(0).min_per_second(0));
        let res = send(policy, &stub, get()).await.unwrap();
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::BudgetExhausted, 1, None))
        );

        let stub = Stub::statuses(&[503]);
        let stream = StreamBody::new(Iter(
            vec![Ok::<_, io::Error>(Frame::data(Bytes::from(vec![1u8; 100])))].into_iter(),
        ));
        let req = Request::put("http://api.test/doc").body(stream).unwrap();
        let res = Retry::new(stub.clone(), plain().replay_cap(10).build().unwrap())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(
            why(&res),
            Some((NotRetriedReason::BodyNotReplayable, 1, None))
        );

        // Not a failure, or not one the policy retries: nothing to say.
        for code in [200, 404] {
            let stub = Stub::new(move |_| Ok(status(code)));
            let res = send(plain(), &stub, get()).await.unwrap();
            assert_eq!(why(&res), None);
        }
    }

    // RetryBody: a body that breaks after the headers.

    fn breaks_after(code: u16, sent: &'static str, kind: io::ErrorKind) -> Response<TestBody> {
        with_body(
            status(code),
            TestBody::Breaks(VecDeque::from([Bytes::from(sent)]), Some(kind)),
        )
    }

    fn full(code: u16, body: &'static str) -> Response<TestBody> {
        with_body(status(code), TestBody::Full(Full::new(Bytes::from(body))))
    }

    /// The frames' data until the body ends or fails.
    async fn read_until_error(body: &mut StubBody) -> (Vec<u8>, Option<BoxError>) {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => data.extend_from_slice(&frame.into_data().unwrap()),
                Err(e) => return (data, Some(e)),
            }
        }
        (data, None)
    }

    fn is_reset(e: &BoxError) -> bool {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_body_is_restarted_when_polled_again() {
        let stub = Stub::new(|n| {
            Ok(match n {
                0 => breaks_after(200, "hel", io::ErrorKind::ConnectionReset),
                _ => full(200, "hello"),
            })
        });
        let res = send(plain(), &stub, get()).await.unwrap();
        let mut body = res.into_body();
        assert!(body.can_restart());

        let (data, error) = read_until_error(&mut body).await;
        assert_eq!(data, b"hel");
        let error = error.unwrap();
        let restart = error.downcast_ref::<BodyRestart>().unwrap();
        assert_eq!(restart.bytes_seen(), 3);
        assert_eq!(restart.next_attempt(), 2);
        assert!(restart.source().unwrap().is::<io::Error>());
        assert_eq!(
            error.to_string(),
            "response body broke after 3 bytes; polling again re-sends the request"
        );
        // Nothing is sent until the body is polled again.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(stub.seen().len(), 1);

        let (data, error) = read_until_error(&mut body).await;
        assert_eq!(data, b"hello");
        assert!(error.is_none());
        assert!(!body.can_restart());
        let seen = stub.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].attempt, Some(Attempt::new(2, 3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_waits_the_backoff_each_time_and_stops_at_the_last_attempt() {
        let stub = Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::UnexpectedEof)));
        let res = send(plain(), &stub, get()).await.unwrap();
        let mut body = res.into_body();
        let mut errors = Vec::new();
        loop {
            let (_, error) = read_until_error(&mut body).await;
            let error = error.unwrap();
            let restart = error
                .downcast_ref::<BodyRestart>()
                .map(BodyRestart::next_attempt);
            errors.push(restart);
            if restart.is_none() {
                // The last attempt's error, as the body gave it.
                let io = error.downcast_ref::<io::Error>().unwrap();
                assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
                break;
            }
        }
        assert_eq!(errors, [Some(2), Some(3), None]);
        assert_eq!(stub.seen().len(), 3);
        assert_eq!(stub.gaps(), [100 * MS, 200 * MS]);
        // After its error the body has ended; nothing more is sent.
        assert!(body.frame().await.is_none());
        assert_eq!(stub.seen().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_polled_after_its_restart_error_sends_nothing() {
        let stub = Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::ConnectionReset)));
        let res = send(plain(), &stub, get()).await.unwrap();
        let mut body = res.into_body();
        let (_, error) = read_until_error(&mut body).await;
        assert!(error.unwrap().is::<BodyRestart>());
        drop(body);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_s_broken_body_passes_its_error_through() {
        let stub = Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::ConnectionReset)));
        let res = send(plain(), &stub, post("{}")).await.unwrap();
        let mut body = res.into_body();
        assert!(!body.can_restart());
        let (_, error) = read_until_error(&mut body).await;
        assert!(is_reset(&error.unwrap()));
        assert!(body.frame().await.is_none());
        assert_eq!(stub.seen().len(), 1);

        // With a trusted Idempotency-Key it is restarted.
        let stub = Stub::new(|n| {
            Ok(match n {
                0 => breaks_after(200, "x", io::ErrorKind::ConnectionReset),
                _ => full(200, "ok"),
            })
        });
        let mut req = post("{}");
        IdempotencyKey::ensure(&mut req);
        let policy = plain().idempotency(IdempotencyRules::new().trust_idempotency_key(true));
        let mut body = send(policy, &stub, req).await.unwrap().into_body();
        assert!(body.can_restart());
        let (_, error) = read_until_error(&mut body).await;
        assert!(error.unwrap().is::<BodyRestart>());
        assert_eq!(read_until_error(&mut body).await.0, b"ok");
        let seen = stub.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].key, seen[1].key);
        assert_eq!(seen[1].body, "{}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_body_is_not_restarted_without_attempts_budget_or_time() {
        let broken = || Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::ConnectionReset)));

        // One attempt in all.
        let stub = broken();
        let mut body = send(plain().max_attempts(1), &stub, get())
            .await
            .unwrap()
            .into_body();
        assert!(is_reset(&read_until_error(&mut body).await.1.unwrap()));

        // The budget is spent.
        let stub = broken();
        let policy = plain().budget(RetryBudget::new().percent(0).min_per_second(0));
        let mut body = send(policy, &stub, get()).await.unwrap().into_body();
        assert!(body.can_restart());
        assert!(is_reset(&read_until_error(&mut body).await.1.unwrap()));

        // The backoff would end after the deadline the request carries.
        let stub = broken();
        let mut req = get();
        Deadline::after(50 * MS).apply(req.extensions_mut());
        let mut body = send(plain(), &stub, req).await.unwrap().into_body();
        assert!(is_reset(&read_until_error(&mut body).await.1.unwrap()));

        // The same, the deadline in scope only while the call's future was
        // polled (as the deadline layer does): the body keeps it.
        let stub = broken();
        let svc = Retry::new(stub.clone(), plain().build().unwrap());
        let mut fut = std::pin::pin!(svc.oneshot(get()));
        let polled = {
            let _scope = Deadline::after(50 * MS).enter();
            futures_poll(&mut fut)
        };
        let Poll::Ready(Ok(res)) = polled else {
            panic!("the stand-in answers at once");
        };
        let mut body = res.into_body();
        assert!(is_reset(&read_until_error(&mut body).await.1.unwrap()));

        // A timeout is not a broken connection.
        let stub = Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::TimedOut)));
        let mut body = send(plain(), &stub, get()).await.unwrap().into_body();
        let error = read_until_error(&mut body).await.1.unwrap();
        assert!(!error.is::<BodyRestart>());

        assert_eq!(stub.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_answered_with_another_status_ends_the_body() {
        // 200 breaks; the re-sent request gets 503 twice: the second is the
        // last attempt's, returned.
        let stub = Stub::new(|n| {
            Ok(match n {
                0 => breaks_after(200, "x", io::ErrorKind::ConnectionReset),
                _ => status(503),
            })
        });
        let mut body = send(plain(), &stub, get()).await.unwrap().into_body();
        assert!(
            read_until_error(&mut body)
                .await
                .1
                .unwrap()
                .is::<BodyRestart>()
        );
        let error = read_until_error(&mut body).await.1.unwrap();
        let failed = error.downcast_ref::<BodyRestartFailed>().unwrap();
        assert_eq!(failed.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(failed.expected(), StatusCode::OK);
        assert_eq!(
            failed.not_retried().map(|n| n.reason()),
            Some(NotRetriedReason::NoAttemptsLeft)
        );
        assert_eq!(
            error.to_string(),
            "response body broke, and the re-sent request was answered with status 503 instead of 200"
        );
        assert!(body.frame().await.is_none());
        assert_eq!(stub.seen().len(), 3);
        assert_eq!(stub.gaps(), [100 * MS, 200 * MS]);

        // The re-sent request fails on its last attempt.
        let stub = Stub::new(|n| match n {
            0 => Ok(breaks_after(200, "x", io::ErrorKind::ConnectionReset)),
            _ => Err(reset()),
        });
        let policy = plain().max_attempts(2);
        let mut body = send(policy, &stub, get()).await.unwrap().into_body();
        assert!(
            read_until_error(&mut body)
                .await
                .1
                .unwrap()
                .is::<BodyRestart>()
        );
        let error = read_until_error(&mut body).await.1.unwrap();
        let failed = error.downcast_ref::<BodyRestartFailed>().unwrap();
        assert_eq!(failed.status(), None);
        assert!(failed.source().unwrap().is::<io::Error>());
        assert!(body.frame().await.is_none());
        assert_eq!(stub.seen().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_classifier_sees_a_body_failure_and_decides() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let policy = plain().classify(move |o| {
            s.lock()
                .unwrap()
                .push((o.is_body(), o.status(), o.error().is_some()));
            if o.is_body() {
                Verdict::Return
            } else {
                Verdict::Default
            }
        });
        let stub = Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::ConnectionReset)));
        let mut body = send(policy, &stub, get()).await.unwrap().into_body();
        assert!(is_reset(&read_until_error(&mut body).await.1.unwrap()));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (false, Some(StatusCode::OK), false),
                (true, Some(StatusCode::OK), true)
            ]
        );

        // Retry widens the default: an error that is not a broken
        // connection is restarted too.
        let policy = plain().classify(|o| {
            if o.is_body() {
                Verdict::Retry
            } else {
                Verdict::Default
            }
        });
        let stub = Stub::new(|n| {
            Ok(match n {
                0 => breaks_after(200, "x", io::ErrorKind::TimedOut),
                _ => full(200, "ok"),
            })
        });
        let mut body = send(policy, &stub, get()).await.unwrap().into_body();
        assert!(
            read_until_error(&mut body)
                .await
                .1
                .unwrap()
                .is::<BodyRestart>()
        );
        assert_eq!(read_until_error(&mut body).await.0, b"ok");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_s_wait_promises_its_wake_up() {
        let stub = Stub::new(|_| Ok(breaks_after(200, "x", io::ErrorKind::ConnectionReset)));
        let mut body = send(plain(), &stub, get()).await.unwrap().into_body();
        assert!(
            read_until_error(&mut body)
                .await
                .1
                .unwrap()
                .is::<BodyRestart>()
        );
        let start = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (polled, promised) =
            parapet_core::clock::watch_wakeups(|| Pin::new(&mut body).poll_frame(&mut cx));
        assert!(polled.is_pending());
        assert_eq!(promised, Some(start + 100 * MS));
    }

    type Recorded = (tracing::Level, std::collections::BTreeMap<String, String>);

    /// A subscriber that keeps every event's level and fields.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Recorded>>>);

    struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = std::collections::BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), fields));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    impl Capture {
        fn events(&self) -> Vec<Recorded> {
            self.0.lock().unwrap().clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_retry_emits_an_event_with_attempt_reason_delay_and_source() {
        let capture = Capture::default();
        let _guard = tracing::subscriber::set_default(capture.clone());
        let stub = Stub::new(|n| match n {
            0 => Ok(status(503)),
            1 => Ok(with_retry_after(503, "2")),
            _ => Ok(status(503)),
        });
        let svc = Retry::new(stub.clone(), plain().build().unwrap());
        svc.oneshot(get()).await.unwrap();
        assert_eq!(stub.seen().len(), 3);
        // No share and no floor: the budget refuses at once.
        let policy = plain().budget(RetryBudget::new().percent(0).min_per_second(0));
        let refused = Stub::statuses(&[503]);
        send(policy, &refused, get()).await.unwrap();

        let events = capture.events();
        let field = |i: usize, k: &str| events[i].1.get(k).cloned().unwrap_or_default();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0].0, tracing::Level::DEBUG);
        assert_eq!(field(0, "message"), "retrying request");
        assert_eq!(field(0, "attempt"), "2");
        assert_eq!(field(0, "reason"), "status 503");
        assert_eq!(field(0, "delay_ms"), "100");
        assert_eq!(field(0, "delay_source"), "backoff");
        assert_eq!(field(0, "method"), "GET");
        assert_eq!(field(0, "host"), "api.test");
        assert_eq!(events[1].0, tracing::Level::DEBUG);
        assert_eq!(field(1, "attempt"), "3");
        assert_eq!(field(1, "delay_ms"), "2100");
        assert_eq!(field(1, "delay_source"), "server");
        assert_eq!(events[2].0, tracing::Level::DEBUG);
        assert_eq!(field(2, "message"), "not retrying: no attempts left");
        assert_eq!(events[3].0, tracing::Level::INFO);
        assert_eq!(field(3, "message"), "not retrying: retry budget exhausted");
        assert_eq!(field(3, "attempt"), "1");
        // A retried 503 is the layer working, never a warning or an error.
        assert!(
            events
                .iter()
                .all(|(level, _)| *level >= tracing::Level::INFO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreplayable_body_is_explained_in_an_event() {
        let capture = Capture::default();
        let _guard = tracing::subscriber::set_default(capture.clone());
        let stub = Stub::statuses(&[503]);
        let stream = StreamBody::new(Iter(
            vec![Ok::<_, io::Error>(Frame::data(Bytes::from(vec![1u8; 100])))].into_iter(),
        ));
        let req = Request::put("http://api.test/doc").body(stream).unwrap();
        Retry::new(stub.clone(), plain().replay_cap(10).build().unwrap())
            .oneshot(req)
            .await
            .unwrap();
        let events = capture.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, tracing::Level::INFO);
        assert_eq!(
            events[0].1["message"],
            "not retrying: the request body cannot be replayed"
        );
        assert_eq!(
            events[0].1["error"],
            "request body is larger than the replay cap of 10 bytes"
        );
    }

    proptest::proptest! {
        #[test]
        fn attempts_never_exceed_the_maximum_whatever_the_failures(
            max in 1u32..8,
            script in proptest::collection::vec(0u8..5, 1..12),
            idempotent in proptest::bool::ANY,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let calls = rt.block_on(async {
                let script = script.clone();
                let stub = Stub::new(move |n| match script[n.min(script.len() - 1)] {
                    0 => Ok(status(200)),
                    1 => Ok(status(503)),
                    2 => Ok(with_retry_after(429, "1")),
                    3 => Err(refused()),
                    _ => Err(reset()),
                });
                let req = if idempotent { get() } else { post("x") };
                let _ = send(plain().max_attempts(max), &stub, req).await;
                stub.seen().len()
            });
            let calls = u32::try_from(calls).unwrap();
            proptest::prop_assert!(calls >= 1 && calls <= max);
            // Every attempt but the last was a retryable failure.
            let first_final = script.iter().position(|&s| s == 0 || (!idempotent && s != 3));
            let expected = first_final.map_or(max, |i| max.min(u32::try_from(i).unwrap() + 1));
            proptest::prop_assert_eq!(calls, expected);
        }
    }

    #[cfg(feature = "hyper-util")]
    #[tokio::test]
    async fn hyper_util_connect_errors_count_as_never_sent() {
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        // A connector that fails without an io::Error: only hyper-util's
        // `is_connect` says the request never left.
        let tries = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&tries);
        let connector = tower::service_fn(move |_: Uri| {
            t.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err::<TokioIo<tokio::net::TcpStream>, BoxError>(
                "no such host".into(),
            ))
        });
        let client: Client<_, ReplayBody> = Client::builder(TokioExecutor::new()).build(connector);
        let policy = plain().base_delay(MS).min_delay(MS).build().unwrap();
        let err = Retry::new(client, policy)
            .oneshot(post("{}"))
            .await
            .unwrap_err();
        assert!(request_never_sent(&*err));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }
}
