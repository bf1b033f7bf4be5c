//! The response body wrapper that enforces the body time limits.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Extensions;
use http_body::{Body, Frame, SizeHint};
use parapet_core::{BoxError, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::{BodyTimedOut, DeadlineExceeded};

/// Per-request override of whether the call's deadline also covers reading
/// the response body.
///
/// By default the deadline of [`DeadlineLayer`](crate::DeadlineLayer) runs
/// until the body's last frame. A streaming download (a large file, a
/// server-sent event stream) that may legitimately take longer than any
/// deadline puts [`BodyDeadline::exempt`] in its request's extensions: the
/// deadline then stops at the response headers and the body is bounded only
/// by the idle timeout
/// ([`AttemptTimeoutLayer::body_idle_timeout`](crate::AttemptTimeoutLayer::body_idle_timeout)).
/// [`BodyDeadline::covered`] does the opposite on a layer built with
/// [`DeadlineLayer::cover_body(false)`](crate::DeadlineLayer::cover_body).
///
/// ```
/// use parapet_timeout::BodyDeadline;
///
/// let mut req = http::Request::get("http://127.0.0.1/large.tar").body(()).unwrap();
/// req.extensions_mut().insert(BodyDeadline::exempt());
/// assert_eq!(BodyDeadline::get(req.extensions()), Some(BodyDeadline::exempt()));
/// assert!(!BodyDeadline::exempt().is_covered());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyDeadline {
    covered: bool,
}

impl BodyDeadline {
    /// The call's deadline stops at the response headers; the body is
    /// bounded only by the idle timeout.
    #[must_use]
    pub const fn exempt() -> Self {
        Self { covered: false }
    }

    /// The call's deadline runs until the body's last frame.
    #[must_use]
    pub const fn covered() -> Self {
        Self { covered: true }
    }

    /// Whether the call's deadline covers the body.
    #[must_use]
    pub const fn is_covered(self) -> bool {
        self.covered
    }

    /// The override carried by these extensions, if any.
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }
}

/// Which limit a [`TimeoutBody`] enforces as its hard end.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The call's deadline (from the deadline layer).
    Call(Deadline),
    /// A total time for the body, from the response headers (from the
    /// attempt layer); the `Duration` is the configured limit.
    Total(Instant, Duration),
}

impl End {
    const fn instant(self) -> Instant {
        match self {
            Self::Call(d) => d.instant(),
            Self::Total(at, _) => at,
        }
    }

    const fn failure(self) -> Failure {
        match self {
            Self::Call(d) => Failure::Deadline(d),
            Self::Total(_, limit) => Failure::Total(limit),
        }
    }
}

pin_project! {
    /// A response body with time limits: the call's deadline, an idle
    /// timeout between frames, and a total time for the body, whichever
    /// applies.
    ///
    /// The response body type of both [`CallDeadline`](crate::CallDeadline)
    /// and [`AttemptTimeout`](crate::AttemptTimeout). The timers run only
    /// while the body is waiting for the server (its inner body returned
    /// `Pending`), never while the reader is busy elsewhere. When one fires:
    ///
    /// - the inner body is dropped at once (for a hyper body that closes the
    ///   connection, which is then never reused, and releases whatever the
    ///   layers beneath held until the body's end);
    /// - `poll_frame` yields the typed error — [`DeadlineExceeded`] (with
    ///   [`is_body`](DeadlineExceeded::is_body)) or [`BodyTimedOut`] — and
    ///   keeps yielding it if polled again: the body never ends cleanly, and
    ///   [`is_end_stream`](Body::is_end_stream) stays `false`, so a truncated
    ///   body is never taken for a complete one.
    ///
    /// It creates its one timer only when the body first has to wait (with
    /// a limit to keep), and boxes it then: a body read without waiting, as
    /// most small responses are (their body arrives with the headers),
    /// allocates nothing and carries 8 bytes for the timer instead of a
    /// 112-byte tokio `Sleep`, which every layer above moves with the
    /// response. A body that waits pays one allocation, once: the timer is
    /// reset in place for each later wait. The body is `Unpin` when `B` is.
    pub struct TimeoutBody<B> {
        #[pin]
        inner: Option<B>,
        timer: Option<Pin<Box<Sleep>>>,
        end: Option<End>,
        idle: Option<Duration>,
        // What the timer stands for in the current wait; `None` when it is
        // not armed for it (never armed, or a frame arrived since). Once
        // the body has failed it stays what failed it.
        armed: Option<Armed>,
        failed: bool,
    }
}

/// What the timer is armed for (one byte; the `Failure` it stands for is
/// derived from the body's limits when needed).
#[derive(Debug, Clone, Copy)]
enum Armed {
    // For the fixed end (`end`).
    End,
    // For the idle limit (`idle`).
    Idle,
}

impl Armed {
    /// What the timer armed for this stands for.
    fn failure(self, end: Option<End>, idle: Option<Duration>) -> Failure {
        match (self, end, idle) {
            (Self::End, Some(end), _) | (Self::Idle, Some(end), None) => end.failure(),
            (_, _, Some(idle)) => Failure::Idle(idle),
            // Unreachable: a timer is armed only for a limit that is set.
            (_, None, None) => Failure::Idle(Duration::ZERO),
        }
    }
}

/// The timeout a body fails with.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Deadline(Deadline),
    Idle(Duration),
    Total(Duration),
}

impl Failure {
    fn to_error(self) -> BoxError {
        match self {
            Self::Deadline(d) => Box::new(DeadlineExceeded::new(d, true)),
            Self::Idle(limit) => Box::new(BodyTimedOut::new(limit, true)),
            Self::Total(limit) => Box::new(BodyTimedOut::new(limit, false)),
        }
    }
}

impl<B> TimeoutBody<B> {
    /// A body with no limits: frames pass through untouched.
    pub(crate) const fn unlimited(inner: B) -> Self {
        Self {
            inner: Some(inner),
            timer: None,
            end: None,
            idle: None,
            armed: None,
            failed: false,
        }
    }

    /// Bounds the body by the call's deadline.
    pub(crate) const fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.end = Some(End::Call(deadline));
        self
    }

    /// Bounds the body by a total time starting now (at the headers).
    pub(crate) fn with_total(mut self, limit: Duration) -> Self {
        let now = Instant::now();
        let at = now
            .checked_add(limit)
            .unwrap_or_else(|| parapet_core::far_future(now));
        self.end = Some(End::Total(at, limit));
        self
    }

    /// Bounds each wait for a frame by `idle`.
    pub(crate) const fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// The wrapped body, unless a timeout already dropped it.
    #[must_use]
    pub fn get_ref(&self) -> Option<&B> {
        self.inner.as_ref()
    }

    /// Whether a time limit ended this body.
    #[must_use]
    pub const fn is_timed_out(&self) -> bool {
        self.failed
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let (true, Some(armed)) = (*this.failed, *this.armed) {
            let failure = armed.failure(*this.end, *this.idle);
            return Poll::Ready(Some(Err(failure.to_error())));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Progress: the idle window restarts at the next wait. A
                // fixed end needs no re-arming.
                if this.idle.is_some() {
                    *this.armed = None;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                // The timer goes with the wait it was armed for; a poll
                // after the error (a body that restarts, as the retry
                // layer's can) arms a new one.
                *this.timer = None;
                *this.armed = None;
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => {
                *this.timer = None;
                *this.armed = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }

        let armed = match *this.armed {
            Some(armed) => armed,
            None => {
                let (at, armed) = match (*this.idle, *this.end) {
                    (None, None) => return Poll::Pending,
                    (None, Some(end)) => (end.instant(), Armed::End),
                    (Some(idle), end) => {
                        let now = Instant::now();
                        let idle_at = now
                            .checked_add(idle)
                            .unwrap_or_else(|| parapet_core::far_future(now));
                        match end {
                            // NOTE: on a tie the hard end wins; it is the
                            // stricter promise to the caller.
                            Some(end) if end.instant() <= idle_at => (end.instant(), Armed::End),
                            _ => (idle_at, Armed::Idle),
                        }
                    }
                };
                match this.timer.as_mut() {
                    // Re-use the timer: moving a pending one later is cheap.
                    Some(timer) => timer.as_mut().reset(at),
                    None => *this.timer = Some(Box::pin(sleep_until(at))),
                }
                *this.armed = Some(armed);
                armed
            }
        };
        match this.timer.as_mut() {
            Some(timer) => ready!(timer.as_mut().poll(cx)),
            None => return Poll::Pending,
        }

        *this.failed = true;
        *this.timer = None;
        // Drop the inner body now: its connection must not be reused, and
        // whatever was held until the body's end is released.
        this.inner.set(None);
        Poll::Ready(Some(Err(armed.failure(*this.end, *this.idle).to_error())))
    }

    fn is_end_stream(&self) -> bool {
        !self.failed && self.inner.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) if !self.failed => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

impl<B> fmt::Debug for TimeoutBody<B>
where
    B: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("inner", &self.inner)
            .field("end", &self.end)
            .field("idle", &self.idle)
            .field(
                "failed",
                &self
                    .armed
                    .filter(|_| self.failed)
                    .map(|armed| armed.failure(self.end, self.idle)),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::task::Waker;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::test_support::{DropFlag, Script, assert_elapsed};

    const SEC: Duration = Duration::from_secs(1);

    /// Reads the body to its end or first error, counting data frames.
    async fn read<B: Body<Error = BoxError>>(body: B) -> (usize, Result<(), BoxError>) {
        let mut body = std::pin::pin!(body);
        let mut frames = 0;
        loop {
            match body.frame().await {
                None => return (frames, Ok(())),
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => return (frames, Err(e)),
            }
        }
    }

    fn limit(body: Result<(), BoxError>) -> BodyTimedOut {
        let err = body.unwrap_err();
        err.downcast_ref::<BodyTimedOut>()
            .unwrap_or_else(|| panic!("{err}"))
            .clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_fires_when_a_steady_body_stalls() {
        let start = Instant::now();
        let body = TimeoutBody::unlimited(Script::drip(2, SEC).then_stall())
            .with_total(10 * SEC)
            .with_idle(2 * SEC);

        let (frames, end) = read(body).await;

        assert_elapsed(start, 4 * SEC);
        assert_eq!(frames, 2);
        let err = limit(end);
        assert!(err.is_idle() && !err.is_total());
        assert_eq!(err.limit(), 2 * SEC);
        assert_eq!(err.to_string(), "response body idle for 2s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_limit_fires_on_a_slow_drip_that_is_never_idle() {
        let start = Instant::now();
        let body = TimeoutBody::unlimited(Script::drip(100, SEC))
            .with_total(Duration::from_millis(3500))
            .with_idle(2 * SEC);

        let (frames, end) = read(body).await;

        assert_elapsed(start, Duration::from_millis(3500));
        assert_eq!(frames, 3);
        let err = limit(end);
        assert!(err.is_total());
        assert_eq!(err.to_string(), "response body not finished within 3.5s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_call_deadline_fires_on_a_slow_drip_that_is_never_idle() {
        let start = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(3500));
        let body = TimeoutBody::unlimited(Script::drip(100, SEC))
            .with_deadline(deadline)
            .with_idle(2 * SEC);

        let (frames, end) = read(body).await;

        assert_elapsed(start, Duration::from_millis(3500));
        assert_eq!(frames, 3);
        let err = end.unwrap_err();
        let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
        assert!(exceeded.is_body());
        assert_eq!(exceeded.deadline(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_fires_before_a_later_call_deadline() {
        let start = Instant::now();
        let body = TimeoutBody::unlimited(Script::drip(1, SEC).then_stall())
            .with_deadline(Deadline::after(10 * SEC))
            .with_idle(2 * SEC);

        let (frames, end) = read(body).await;

        assert_elapsed(start, 3 * SEC);
        assert_eq!(frames, 1);
        assert!(limit(end).is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_tie_the_deadline_is_reported() {
        let body = TimeoutBody::unlimited(Script::drip(1, SEC))
            .with_deadline(Deadline::after(SEC / 2))
            .with_idle(SEC / 2);
        let (_, end) = read(body).await;
        assert!(end.unwrap_err().is::<DeadlineExceeded>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_window_restarts_with_every_frame() {
        let start = Instant::now();
        let body = TimeoutBody::unlimited(Script::drip(10, Duration::from_millis(1500)))
            .with_idle(2 * SEC);

        let (frames, end) = read(body).await;

        assert!(end.is_ok());
        assert_eq!(frames, 10);
        assert_elapsed(start, 15 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_idle_window_starts_at_the_headers() {
        let start = Instant::now();
        let body = TimeoutBody::unlimited(Script::new([(3 * SEC, "late")])).with_idle(2 * SEC);
        let (frames, end) = read(body).await;
        assert_elapsed(start, 2 * SEC);
        assert_eq!(frames, 0);
        assert!(limit(end).is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_body_never_ends_cleanly_and_drops_its_inner_body() {
        let (flag, dropped) = DropFlag::new();
        let body = TimeoutBody::unlimited(Script::drip(1, SEC).then_stall().with_flag(flag))
            .with_idle(2 * SEC);
        let mut body = Box::pin(body);

        assert!(body.frame().await.unwrap().is_ok());
        assert!(!dropped.load(Ordering::SeqCst));
        assert!(
            body.frame()
                .await
                .unwrap()
                .unwrap_err()
                .is::<BodyTimedOut>()
        );

        assert!(dropped.load(Ordering::SeqCst));
        assert!(body.is_timed_out());
        assert!(!body.is_end_stream());
        assert!(body.get_ref().is_none());
        // Polled again, it fails again rather than ending.
        for _ in 0..3 {
            assert!(
                body.frame()
                    .await
                    .unwrap()
                    .unwrap_err()
                    .is::<BodyTimedOut>()
            );
        }
        // Collected, it is an error, never a short body.
        assert!(body.collect().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_waits_never_creates_a_timer() {
        let body = TimeoutBody::unlimited(Full::new(Bytes::from_static(b"hello")))
            .with_deadline(Deadline::after(SEC))
            .with_idle(SEC);
        assert_eq!(body.size_hint().exact(), Some(5));
        let mut body = Box::pin(body);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "hello"
        );
        assert!(body.timer.is_none());
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_without_limits_waits_without_a_timer() {
        let mut body = Box::pin(TimeoutBody::unlimited(Script::drip(1, SEC).then_stall()));
        assert!(body.frame().await.unwrap().is_ok());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert!(body.timer.is_none());
        tokio::time::advance(3600 * SEC).await;
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_moves_with_each_frame_and_the_deadline_stays_put() {
        let start = Instant::now();
        let mut idle = Box::pin(TimeoutBody::unlimited(Script::drip(3, SEC)).with_idle(2 * SEC));
        let deadline = Deadline::after(10 * SEC);
        let mut fixed =
            Box::pin(TimeoutBody::unlimited(Script::drip(3, SEC)).with_deadline(deadline));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(idle.as_mut().poll_frame(&mut cx).is_pending());
        assert!(fixed.as_mut().poll_frame(&mut cx).is_pending());
        for n in 1..=2 {
            tokio::time::advance(SEC).await;
            assert!(matches!(
                idle.as_mut().poll_frame(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
            assert!(matches!(
                fixed.as_mut().poll_frame(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
            assert!(idle.as_mut().poll_frame(&mut cx).is_pending());
            assert!(fixed.as_mut().poll_frame(&mut cx).is_pending());
            let idle_at = idle.timer.as_ref().unwrap().deadline();
            assert_eq!(idle_at, start + n * SEC + 2 * SEC);
            assert_eq!(fixed.timer.as_ref().unwrap().deadline(), deadline.instant());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_inner_body_error_passes_through() {
        struct Broken;
        impl Body for Broken {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                Poll::Ready(Some(Err(std::io::Error::other("reset by peer"))))
            }
        }
        let body = TimeoutBody::unlimited(Broken).with_idle(SEC);
        let err = body.collect().await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<std::io::Error>().unwrap().to_string(),
            "reset by peer"
        );
    }

    /// A body polled again after an error (the retry layer's restarts)
    /// is still bounded: the timer armed before the error went with it,
    /// and the next wait arms a new one at the same deadline.
    #[tokio::test(start_paused = true)]
    async fn a_body_polled_on_after_an_error_is_still_cut_at_the_deadline() {
        /// Waits 1 s, fails once, then never yields again.
        struct FailsThenStalls {
            sleep: Pin<Box<Sleep>>,
            failed: bool,
        }
        impl Body for FailsThenStalls {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                if self.failed {
                    return Poll::Pending;
                }
                std::task::ready!(self.sleep.as_mut().poll(cx));
                self.failed = true;
                Poll::Ready(Some(Err(std::io::Error::other("reset by peer"))))
            }
        }
        let start = Instant::now();
        let deadline = Deadline::after(3 * SEC);
        let body = TimeoutBody::unlimited(FailsThenStalls {
            sleep: Box::pin(tokio::time::sleep(SEC)),
            failed: false,
        })
        .with_deadline(deadline);
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.unwrap().unwrap_err();
        assert!(first.downcast_ref::<std::io::Error>().is_some());
        assert_elapsed(start, SEC);
        let second = body.frame().await.unwrap().unwrap_err();
        assert!(
            second.downcast_ref::<DeadlineExceeded>().is_some(),
            "{second}"
        );
        assert_elapsed(start, 3 * SEC);
    }
}
