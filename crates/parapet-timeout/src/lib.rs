//! Timeouts for outbound HTTP calls: a deadline for the whole call, a bound
//! on each attempt, and time limits on the response body.
//!
//! - [`DeadlineLayer`] sets the call's [`Deadline`](parapet_core::Deadline)
//!   (an earlier one the caller set wins) and fails the call with
//!   [`DeadlineExceeded`] when it passes. Inner layers read the deadline and
//!   never start a wait that would end after it. By default it also bounds
//!   the response body.
//! - [`AttemptTimeoutLayer`] bounds each attempt by the smaller of its own
//!   limit and the time left before the deadline, and fails it with
//!   [`AttemptTimedOut`], which says which of the two applied. It can also
//!   bound the attempt's response body: an idle timeout between frames and a
//!   total time, failing the body with [`BodyTimedOut`].
//!
//! # What each timer covers
//!
//! One call through a full stack, whose first attempt failed and was retried:
//!
//! ```text
//! time ────────────────────────────────────────────────────────────────────────────────────────────▶
//! call    attempt 1   backoff waits in   pool checkout,     request          response  body     last
//! starts  (failed)            the stack  connect            written          headers   frames   frame
//! │       │          │        │          │                                   │                    │
//! ├─ call deadline (DeadlineLayer; the body part unless exempt) ──────────────────────────────────┤
//!         ├─ attempt ┤                   ├─ attempt limit (AttemptTimeout) ──┤
//!                                                                            ├idle┤ ├idle┤ ├─idle┤
//!                                                                            ├─ body_timeout ─────┤
//! ```
//!
//! - *call deadline*: [`DeadlineLayer`], from the call to the body's last
//!   frame (to the headers only, for an exempt body);
//! - *attempt limit*: [`AttemptTimeoutLayer`], from the attempt's call to
//!   its response headers, cut short by the deadline;
//! - *idle*: [`AttemptTimeoutLayer::body_idle_timeout`], each wait for the
//!   next body frame;
//! - *`body_timeout`*: [`AttemptTimeoutLayer::body_timeout`], from the
//!   headers to the body's last frame.
//!
//! | phase                                              | deadline | attempt limit | body idle | body total |
//! |----------------------------------------------------|:--------:|:-------------:|:---------:|:----------:|
//! | readiness (`poll_ready`)                           |    no    |      no       |    no     |     no     |
//! | waits between the two layers (backoff, throttle, rate limit, token fetch, concurrency slot) | yes | no | no | no |
//! | pool checkout and connect                          |   yes    |      yes      |    no     |     no     |
//! | writing the request, waiting for the headers       |   yes    |      yes      |    no     |     no     |
//! | reading the body                                   | yes, unless exempt | no  |    yes    |    yes     |
//!
//! - **Readiness** is never timed: every parapet service's `poll_ready` only
//!   forwards, and the hyper-util client is always ready. The timers start
//!   when the service is *called*, and all waiting happens in the response
//!   future.
//! - **Connect** happens inside the client's response future, so the
//!   attempt limit covers it; the connector's own connect timeout, if set,
//!   bounds the TCP connect alone.
//! - **The attempt limit ends at the response headers.** After them the
//!   attempt has its answer (a retry layer decides on it then); the body is
//!   bounded by the deadline and the body limits.
//! - **The body** is bounded by the call's deadline by default. A streaming
//!   download opts out per request with [`BodyDeadline::exempt`] (or for the
//!   whole layer with [`DeadlineLayer::cover_body`]) and relies on
//!   [`AttemptTimeoutLayer::body_idle_timeout`] to notice a stalled server.
//!   Body timers are checked while the body waits for the server: a frame
//!   already received is handed over even if a limit passed meanwhile, and
//!   time the reader spends elsewhere never counts as idle.
//! - **Why the body limits are options of the attempt layer** rather than a
//!   layer of their own: they bound one attempt's response, read over one
//!   connection, and belong where that layer already is, just above the
//!   client. Both layers wrap the response body in a [`TimeoutBody`]: the
//!   deadline layer's enforces the call's deadline, the attempt layer's the
//!   idle and total limits (it is a pass-through when neither is set).
//!
//! When a body limit fires, the body yields the typed error
//! ([`DeadlineExceeded`] with [`is_body`](DeadlineExceeded::is_body), or
//! [`BodyTimedOut`]) and never a clean end, so a truncated body is never
//! taken for a complete one; the inner body is dropped at once, which for a
//! hyper body closes its connection instead of returning it to the pool.
//! Dropping a response future or a body at any moment cancels everything it
//! started: the inner future or body and the timer are dropped with it.
//!
//! # Where the layers go
//!
//! ```text
//! RequestId / trace
//! DeadlineLayer          outside retry: one budget for every attempt and every wait
//! Retry
//! Auth, Throttle, RateLimit, ConcurrencyLimit
//! AttemptTimeoutLayer    inside retry, innermost, just above the client
//! hyper-util client
//! ```
//!
//! Inside the retry layer the deadline would restart with every attempt; an
//! attempt limit outside it would bound the whole retry loop. Above the
//! rate-limit and concurrency layers the attempt limit would count local
//! queueing as time on the wire; those waits are bounded by the deadline,
//! which they read. A retry policy can tell the two errors apart: an
//! [`AttemptTimedOut`] with [`is_attempt_limit`](AttemptTimedOut::is_attempt_limit)
//! may be retried, one with [`is_deadline`](AttemptTimedOut::is_deadline)
//! may not. The deadline layer reports an attempt cut short by its own
//! deadline as [`DeadlineExceeded`] (with the attempt's error as its source).
//!
//! # Cost per call
//!
//! Measured with the workspace's `benches` (an inner service that answers
//! at once, so no timer is ever armed; see `BENCHMARKS.md` for the method):
//!
//! - [`DeadlineLayer`]: no allocation. It does not write the request's
//!   extensions (a first insert into empty `http::Extensions` costs three
//!   allocations, and a retry layer's copy of the request three more): the
//!   layers beneath read the deadline in scope ([`Deadline::current`](parapet_core::Deadline::current)),
//!   unless [`DeadlineLayer::in_extensions`] asks for both. It reads the clock
//!   once and holds that reading for the layers beneath while it calls them
//!   ([`parapet_core::clock`]), so the attempt timeout and the limiters do not
//!   read it again. Its response future adds 24 bytes to the inner one (its
//!   timer is boxed when armed, which under an attempt timeout is seldom:
//!   see below).
//! - [`AttemptTimeoutLayer`]: about 55–80 ns and no allocation; its
//!   response future adds 168 bytes.
//! - Each layer wraps the body in a [`TimeoutBody`], which adds 72 bytes
//!   to the inner body.
//!
//! **Timers.** No timer exists until it is needed: a response future holds
//! only the instant to fire at until the inner future is first pending.
//! Over the network every call waits once, and the attempt layer then
//! creates a tokio `Sleep` in place, inline, where the instant was, and
//! registers it (a few hundred instructions, the largest cost of these
//! layers in real use). The attempt future keeps that `Sleep` inline rather
//! than boxing it: a box would make it about 100 bytes smaller, but every
//! call over the network would pay an allocation for it. The deadline's
//! timer is the other way round: with an attempt timeout beneath it, as in
//! the recommended stack, it is seldom armed (see below), so it is boxed
//! when armed and the deadline future carries 16 bytes instead of a `Sleep`
//! through every layer above. (A stack with a deadline and no attempt
//! timeout pays that box, one allocation, on every call that waits.) A [`TimeoutBody`] boxes its timer too,
//! when it first waits: most small bodies arrive with the headers and never
//! wait, and a body that waits allocates once (the timer is reset in place
//! for later waits).
//!
//! **One timer per call, not two.** The attempt layer's timer fires at the
//! earlier of its limit and the call's deadline, so while it is armed the
//! deadline's own timer is not needed: the attempt layer says so when its
//! timer is registered ([`parapet_core::clock::will_wake_by`]), and the
//! deadline layer then skips arming its own, looking again at every poll.
//! parapet's other timers promise the same: a retry's backoff, a rate
//! limiter's or a throttle's wait. When nothing beneath holds a timer (a
//! wait for a concurrency slot or a token, an inner service of your own),
//! the deadline arms its own. The attempt layer always arms its timer, even
//! when the deadline is the earlier limit: it cannot know that a layer above
//! enforces the deadline it reads (a caller may set one by hand).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use http_body_util::BodyExt;
//! use parapet_timeout::{AttemptTimeoutLayer, DeadlineLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(10)))
//!     // (a retry layer goes here)
//!     .layer(AttemptTimeoutLayer::new(Duration::from_secs(2))
//!         .body_idle_timeout(Duration::from_secs(5)))
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//!     });
//!
//! let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");
//! # }
//! ```

mod attempt;
mod body;
mod deadline;
mod error;
mod timer;

pub use attempt::{AttemptLimit, AttemptTimeout, AttemptTimeoutLayer};
pub use body::{BodyDeadline, TimeoutBody};
pub use deadline::{CallDeadline, DeadlineLayer};
pub use error::{AttemptTimedOut, BodyTimedOut, DeadlineExceeded};

/// The response futures of the services.
pub mod future {
    pub use crate::attempt::AttemptTimeoutFuture;
    pub use crate::deadline::CallDeadlineFuture;
}

#[cfg(test)]
mod test_support;
