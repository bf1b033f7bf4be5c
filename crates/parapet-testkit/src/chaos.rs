//! A fault-injection layer for staging tests (feature `chaos`).
//!
//! [`ChaosLayer`] wraps any `tower::Service` over `http::Request` /
//! `http::Response` and, at rates you set, holds answers back (latency),
//! fails calls with a [`ChaosError`], or answers with a status code of its
//! own, so a service's staging environment sees the faults production
//! will. Every rate is 0 by default: a new layer injects nothing.
//!
//! Faults are drawn from a seeded [`Rng`] shared by the
//! layer's clones: with [`seed`](ChaosLayer::seed), the same sequence of
//! requests meets the same faults on every run. Each request draws three
//! numbers, one per kind of fault, whatever is turned on, so changing one
//! rate does not move which requests meet the others.
//!
//! | fault | what the caller sees | the inner service |
//! |---|---|---|
//! | [`error`](ChaosLayer::error) | `Err`, a [`ChaosError`] (boxed) | not called |
//! | [`status`](ChaosLayer::status) | `Ok`, a response with that status and an empty body, marked [`Injected`] | not called |
//! | [`latency`](ChaosLayer::latency) | the outcome, held for that long (on `tokio::time`, so paused-time tests control it) | called at once |
//!
//! An error wins over a status; latency adds to either. Latency holds the
//! *answer*, not the request: the inner service has already done the work
//! when a timeout above fires, the case where a non-idempotent call must
//! not simply be sent again.
//!
//! # Where it goes
//!
//! Below the layers that must react to faults (retry, timeouts, the
//! throttle) and above the transport: with parapet, give
//! `ClientBuilder::build_with` your transport wrapped in it. It lives in
//! this test crate, behind a feature, so it never reaches a build that
//! does not ask for it; within a build, `Option<ChaosLayer>` with tower's
//! `option_layer` turns it on from configuration.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use parapet_testkit::chaos::{ChaosLayer, Rate};
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[derive(Clone)] struct Upstream;
//! # impl Service<Request<()>> for Upstream {
//! #     type Response = Response<String>;
//! #     type Error = Infallible;
//! #     type Future = std::future::Ready<Result<Response<String>, Infallible>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, _: Request<()>) -> Self::Future { std::future::ready(Ok(Response::new("ok".into()))) }
//! # }
//! let chaos = ChaosLayer::new()
//!     .seed(7)
//!     .error(Rate::percent(10))
//!     .status(Rate::percent(20), StatusCode::SERVICE_UNAVAILABLE)
//!     .latency(Rate::percent(50), Duration::from_millis(300));
//! let mut svc = chaos.layer(Upstream); // any Service<Request<B>, Response = Response<B2>>, B2: Default
//!
//! let (mut errors, mut unavailable) = (0, 0);
//! for _ in 0..1000 {
//!     std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
//!     match svc.call(Request::new(())).await {
//!         Err(e) => { assert!(e.is::<parapet_testkit::chaos::ChaosError>()); errors += 1 }
//!         Ok(resp) if resp.status() == 503 => unavailable += 1,
//!         Ok(_) => {}
//!     }
//! }
//! assert!((60..140).contains(&errors), "{errors}");
//! assert!((140..260).contains(&unavailable), "{unavailable}");
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::Rng;

/// The error type of a [`Chaos`] service: its own [`ChaosError`] or the
/// inner service's error, boxed.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How often a fault happens: a share of requests, kept in parts per
/// million.
///
/// ```
/// use parapet_testkit::chaos::Rate;
///
/// assert_eq!(Rate::percent(5), Rate::per_mille(50));
/// assert_eq!(Rate::percent(250), Rate::ALWAYS); // saturates
/// assert_eq!(Rate::default(), Rate::NEVER);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u32);

const MILLION: u32 = 1_000_000;

impl Rate {
    /// No request.
    pub const NEVER: Rate = Rate(0);
    /// Every request.
    pub const ALWAYS: Rate = Rate(MILLION);

    /// `p` requests in a hundred; more than 100 counts as 100.
    #[must_use]
    pub const fn percent(p: u8) -> Self {
        let p = if p > 100 { 100 } else { p as u32 };
        Rate(p * 10_000)
    }

    /// `n` requests in a thousand; more than 1000 counts as 1000.
    #[must_use]
    pub const fn per_mille(n: u16) -> Self {
        let n = if n > 1000 { 1000 } else { n as u32 };
        Rate(n * 1_000)
    }

    /// Whether a draw from the generator falls under this rate.
    fn hit(self, draw: u64) -> bool {
        draw % u64::from(MILLION) < u64::from(self.0)
    }
}

/// The error a [`Chaos`] service injects.
///
/// ```
/// use parapet_testkit::chaos::ChaosError;
///
/// let e: Box<dyn std::error::Error + Send + Sync> = Box::new(ChaosError::new());
/// assert!(e.is::<ChaosError>());
/// assert_eq!(e.to_string(), "fault injected by the chaos layer");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChaosError {}

impl ChaosError {
    /// The error, as the layer injects it (for tests that build one).
    #[must_use]
    pub fn new() -> Self {
        Self {}
    }
}

impl fmt::Display for ChaosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fault injected by the chaos layer")
    }
}

impl StdError for ChaosError {}

/// A marker in the extensions of a response whose status the chaos layer
/// made up, so a test can tell it from the upstream's.
///
/// ```
/// use parapet_testkit::chaos::Injected;
///
/// let mut resp = http::Response::new(());
/// resp.extensions_mut().insert(Injected);
/// assert!(resp.extensions().get::<Injected>().is_some());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected;

#[derive(Clone, Debug, Default)]
struct Config {
    error: Rate,
    status: Option<(Rate, StatusCode)>,
    latency: Option<(Rate, Duration)>,
}

impl Config {
    fn is_off(&self) -> bool {
        self.error == Rate::NEVER
            && self.status.is_none_or(|(r, _)| r == Rate::NEVER)
            && self.latency.is_none_or(|(r, _)| r == Rate::NEVER)
    }
}

/// What one request meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Draw {
    error: bool,
    status: Option<StatusCode>,
    latency: Option<Duration>,
}

/// Injects latency, errors and statuses at configured rates (see the
/// [module docs](self)); off until a rate is set.
///
/// Clones share one generator, so a layer applied to several services
/// draws one sequence for all of them.
#[derive(Clone)]
pub struct ChaosLayer {
    config: Config,
    rng: Arc<Mutex<Rng>>,
}

impl ChaosLayer {
    /// A layer that injects nothing, seeded at random (see
    /// [`seed`](Self::seed)).
    #[must_use]
    pub fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x0063_6861_6f73); // any input: the keys are random
        Self {
            config: Config::default(),
            rng: Arc::new(Mutex::new(Rng::new(h.finish()))),
        }
    }

    /// Fixes the sequence of faults: the same seed and the same requests
    /// meet the same faults.
    ///
    /// Default: a random seed per layer.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(Rng::new(seed)));
        self
    }

    /// Fails `rate` of requests with a [`ChaosError`], without calling the
    /// inner service.
    ///
    /// Default: [`Rate::NEVER`].
    #[must_use]
    pub fn error(mut self, rate: Rate) -> Self {
        self.config.error = rate;
        self
    }

    /// Answers `rate` of requests with `status` and an empty body (the
    /// body type's `Default`), without calling the inner service; the
    /// response carries [`Injected`] in its extensions.
    ///
    /// Default: none.
    #[must_use]
    pub fn status(mut self, rate: Rate, status: StatusCode) -> Self {
        self.config.status = Some((rate, status));
        self
    }

    /// Holds `rate` of answers (responses and errors alike) for `delay`.
    ///
    /// Default: none.
    #[must_use]
    pub fn latency(mut self, rate: Rate, delay: Duration) -> Self {
        self.config.latency = Some((rate, delay));
        self
    }

    fn draw(&self) -> Draw {
        let off = Draw {
            error: false,
            status: None,
            latency: None,
        };
        if self.config.is_off() {
            return off;
        }
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let (e, s, l) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
        drop(rng);
        Draw {
            error: self.config.error.hit(e),
            status: self
                .config
                .status
                .and_then(|(r, st)| r.hit(s).then_some(st)),
            latency: self.config.latency.and_then(|(r, d)| r.hit(l).then_some(d)),
        }
    }
}

impl Default for ChaosLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ChaosLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("error", &self.config.error)
            .field("status", &self.config.status)
            .field("latency", &self.config.latency)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = Chaos<S>;

    fn layer(&self, inner: S) -> Chaos<S> {
        Chaos {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`ChaosLayer`].
///
/// ```
/// use parapet_testkit::chaos::{Chaos, ChaosLayer};
///
/// let mut svc = Chaos::new((), ChaosLayer::new());
/// let _: &mut () = svc.get_mut();
/// let _: () = svc.into_inner();
/// ```
#[derive(Clone, Debug)]
pub struct Chaos<S> {
    inner: S,
    layer: ChaosLayer,
}

impl<S> Chaos<S> {
    /// `inner`, with the faults `layer` configures.
    #[must_use]
    pub fn new(inner: S, layer: ChaosLayer) -> Self {
        Self { inner, layer }
    }

    /// The layer, to give to a `tower::ServiceBuilder` (the same as
    /// using a [`ChaosLayer`] directly).
    #[must_use]
    pub fn layer(layer: ChaosLayer) -> ChaosLayer {
        layer
    }

    /// The inner service.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    #[must_use]
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Chaos<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let draw = self.layer.draw();
        let made_up = if draw.error {
            Some(Err(Box::new(ChaosError::new()) as BoxError))
        } else {
            draw.status.map(|status| {
                let mut resp = Response::new(ResB::default());
                *resp.status_mut() = status;
                resp.extensions_mut().insert(Injected);
                Ok(resp)
            })
        };
        let state = match (made_up, draw.latency) {
            (Some(out), None) => State::Done { out: Some(out) },
            (Some(out), Some(delay)) => State::Held {
                sleep: sleep(delay),
                out: Some(out),
            },
            (None, delay) => State::Inner {
                future: self.inner.call(req),
                delay,
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response future of [`Chaos`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Waiting for the inner service, then maybe holding its answer.
        Inner { #[pin] future: F, delay: Option<Duration> },
        // Holding an answer for the injected latency.
        Held { #[pin] sleep: Sleep, out: Option<Result<Response<B>, BoxError>> },
        // A made-up answer, ready.
        Done { out: Option<Result<Response<B>, BoxError>> },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Polled again after it was ready: a bug in the caller, reported as an
/// error rather than a panic.
fn polled_after_completion() -> BoxError {
    "chaos response future polled after completion".into()
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future, delay } => {
                    let out = ready!(future.poll(cx)).map_err(Into::into);
                    match delay.take() {
                        None => return Poll::Ready(out),
                        Some(d) => state.set(State::Held {
                            sleep: sleep(d),
                            out: Some(out),
                        }),
                    }
                }
                StateProj::Held { sleep, out } => {
                    ready!(sleep.poll(cx));
                    return Poll::Ready(
                        out.take().unwrap_or_else(|| Err(polled_after_completion())),
                    );
                }
                StateProj::Done { out } => {
                    return Poll::Ready(
                        out.take().unwrap_or_else(|| Err(polled_after_completion())),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::Instant;

    /// An upstream that answers 200 "ok" at once and counts its calls.
    #[derive(Clone, Default)]
    struct Upstream(Arc<AtomicUsize>);

    impl Service<Request<()>> for Upstream {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new("ok".to_owned())))
        }
    }

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Tally {
        errors: usize,
        statuses: usize,
        ok: usize,
        delayed: usize,
        upstream: usize,
    }

    async fn run(layer: &ChaosLayer, n: usize) -> Tally {
        let upstream = Upstream::default();
        let mut svc = layer.layer(upstream.clone());
        let mut t = Tally::default();
        for _ in 0..n {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            let started = Instant::now();
            let out = svc.call(Request::new(())).await;
            match started.elapsed() {
                d if d == Duration::ZERO => {}
                d if d == Duration::from_millis(250) => t.delayed += 1,
                d => panic!("unexpected latency {d:?}"),
            }
            match out {
                Err(e) => {
                    assert!(e.is::<ChaosError>());
                    t.errors += 1;
                }
                Ok(resp) if resp.extensions().get::<Injected>().is_some() => {
                    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
                    assert_eq!(resp.body(), "");
                    t.statuses += 1;
                }
                Ok(resp) => {
                    assert_eq!(resp.body(), "ok");
                    t.ok += 1;
                }
            }
        }
        t.upstream = upstream.0.load(Ordering::SeqCst);
        t
    }

    fn layer(seed: u64) -> ChaosLayer {
        ChaosLayer::new()
            .seed(seed)
            .error(Rate::percent(5))
            .status(Rate::percent(10), StatusCode::TOO_MANY_REQUESTS)
            .latency(Rate::percent(20), Duration::from_millis(250))
    }

    #[tokio::test(start_paused = true)]
    async fn rates_hold_over_many_requests_and_a_seed_repeats_them() {
        let n = 20_000;
        let a = run(&layer(42), n).await;
        // Expected: errors 1000, statuses 10 % of the other 95 % = 1900,
        // delayed 4000; each within about 4 standard deviations.
        assert!((880..1120).contains(&a.errors), "{a:?}");
        assert!((1730..2070).contains(&a.statuses), "{a:?}");
        assert!((3780..4220).contains(&a.delayed), "{a:?}");
        assert_eq!(a.errors + a.statuses + a.ok, n);
        // The upstream was called exactly for the requests not made up.
        assert_eq!(a.upstream, a.ok);

        // The same seed meets the same faults; another seed, others.
        assert_eq!(run(&layer(42), n).await, a);
        assert_ne!(run(&layer(43), n).await, a);
    }

    #[tokio::test(start_paused = true)]
    async fn changing_one_rate_does_not_move_the_others() {
        let with_errors = run(&layer(9), 5_000).await;
        let without = run(&layer(9).error(Rate::NEVER), 5_000).await;
        // The latency draws are the same requests either way.
        assert_eq!(with_errors.delayed, without.delayed);
        assert_eq!(without.errors, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_layer_injects_nothing() {
        let t = run(&ChaosLayer::new(), 1_000).await;
        assert_eq!(
            t,
            Tally {
                ok: 1_000,
                upstream: 1_000,
                ..Tally::default()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn always_means_every_request() {
        let t = run(&ChaosLayer::new().error(Rate::ALWAYS), 100).await;
        assert_eq!((t.errors, t.upstream), (100, 0));
        let t = run(
            &ChaosLayer::new().latency(Rate::ALWAYS, Duration::from_millis(250)),
            100,
        )
        .await;
        assert_eq!((t.delayed, t.ok), (100, 100));
    }

    #[test]
    fn rates_saturate() {
        assert_eq!(Rate::percent(101), Rate::ALWAYS);
        assert_eq!(Rate::per_mille(1001), Rate::ALWAYS);
        assert!(Rate::ALWAYS.hit(u64::MAX));
        assert!(!Rate::NEVER.hit(0));
    }
}
