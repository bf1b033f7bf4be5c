//! [`AdaptiveRateLayer`]: a per-authority client rate learned from the
//! server's throttling answers, for APIs that do not publish their quota.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use parapet_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::{AuthorityKey, AuthorityMap, AuthorityRef, Janitor, Sweep, Target, lock};
use crate::error::RateLimited;
use crate::wait::WaitPolicy;

/// How long the measured rates' buckets are.
const BUCKET: Duration = Duration::from_millis(500);

/// The weight of the newest bucket in the measured rates' moving average.
const SMOOTHING: f64 = 0.8;

/// The slots of the last second's count of answers not throttled.
const OK_SLOTS: usize = 10;

/// How often idle authorities are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The configuration of an [`AdaptiveRateLayer`]; see its docs for each
/// value's meaning and default.
#[derive(Debug, Clone, Copy)]
struct Config {
    beta: f64,
    scale: f64,
    min_rate: f64,
    max_rate: Option<f64>,
    idle: Duration,
    max_authorities: usize,
    wait: WaitPolicy,
}

/// One authority's learned rate: a CUBIC-style controller and the pacing it
/// drives.
#[derive(Debug, Clone, Copy)]
struct Cubic {
    /// Whether the authority has throttled us yet; until then calls are
    /// not paced, only counted.
    active: bool,
    /// The rate calls are paced at, per second.
    rate: f64,
    /// The rate that last held: what the server let through when it last
    /// throttled us.
    w_max: f64,
    /// Seconds from the last decrease until the cubic is back at `w_max`.
    k: f64,
    /// When the rate was last cut.
    decreased_at: Instant,
    /// Bumped by every cut: a throttled answer to a call admitted before
    /// the last cut says nothing the cut did not already act on.
    epoch: u64,
    /// The next free slot of the pacing.
    next_at: Instant,
    /// The measured send rate: the bucket being filled and the moving
    /// average.
    bucket_start: Instant,
    sent_in_bucket: u32,
    sent_rate: f64,
    /// Answers not throttled over the last second, in tenths of a second
    /// (a ring indexed by the tenth's number since `created`).
    oks: [u32; OK_SLOTS],
    ok_slot: u64,
    created: Instant,
    last_used: Instant,
}

impl Cubic {
    fn new(now: Instant) -> Self {
        Self {
            active: false,
            rate: 0.0,
            w_max: 0.0,
            k: 0.0,
            decreased_at: now,
            epoch: 0,
            next_at: now,
            bucket_start: now,
            sent_in_bucket: 0,
            sent_rate: 0.0,
            oks: [0; OK_SLOTS],
            ok_slot: 0,
            created: now,
            last_used: now,
        }
    }

    /// Closes the send rate's bucket if it is over, folding it into the
    /// moving average.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.bucket_start);
        if elapsed < BUCKET {
            return;
        }
        let sent = f64::from(self.sent_in_bucket) / elapsed.as_secs_f64();
        // A long idle gap is a bucket of its own: the average decays.
        self.sent_rate = SMOOTHING * sent + (1.0 - SMOOTHING) * self.sent_rate;
        self.bucket_start = now;
        self.sent_in_bucket = 0;
    }

    /// Moves the last second's ring to `now`, emptying the tenths that
    /// went by.
    fn ok_ring(&mut self, now: Instant) -> &mut [u32; OK_SLOTS] {
        let tenth = u64::try_from(now.saturating_duration_since(self.created).as_millis() / 100)
            .unwrap_or(u64::MAX);
        let gone = tenth.saturating_sub(self.ok_slot);
        if gone >= OK_SLOTS as u64 {
            self.oks = [0; OK_SLOTS];
        } else {
            for t in self.ok_slot + 1..=tenth {
                if let Some(slot) = self.oks.get_mut(ring_index(t)) {
                    *slot = 0;
                }
            }
        }
        self.ok_slot = tenth;
        &mut self.oks
    }

    /// Answers not throttled over the last second, per second. (An
    /// authority younger than a second counts its whole life as the
    /// second: what a server let through at once is a burst, not a rate.)
    fn ok_last_second(&mut self, now: Instant) -> f64 {
        self.ok_ring(now).iter().map(|&n| f64::from(n)).sum()
    }

    fn spacing(&self) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.rate).unwrap_or(Duration::MAX)
    }

    /// Lets a call go now (in the current epoch), or says when to come
    /// back: the next free slot. Nothing is reserved for a waiter, so a
    /// rate that changes while calls wait applies to all of them at once;
    /// the waiters that wake together take the slots one by one.
    fn admit(&mut self, now: Instant, latest: Option<Instant>) -> Admission {
        self.roll(now);
        self.last_used = now;
        if self.active {
            if self.next_at > now {
                return if latest.is_some_and(|l| self.next_at > l) {
                    Admission::Refused(self.next_at)
                } else {
                    Admission::Wait(self.next_at)
                };
            }
            // A waiter woken late is credited up to one spacing, so that the
            // timer's lateness does not lower the rate.
            let spacing = self.spacing();
            let base = self.next_at.max(now.checked_sub(spacing).unwrap_or(now));
            self.next_at = base.checked_add(spacing).unwrap_or(now);
        }
        self.sent_in_bucket = self.sent_in_bucket.saturating_add(1);
        Admission::Go(self.epoch)
    }

    /// A throttled answer to a call admitted in `epoch`.
    fn throttled(&mut self, now: Instant, epoch: u64, config: &Config) {
        self.roll(now);
        self.last_used = now;
        if self.active && epoch != self.epoch {
            return;
        }
        // What held: the rate calls were paced at, or, when more, the rate
        // the server has been answering without throttling (a server that
        // refuses everything until its window ends would otherwise drag the
        // rate far below its quota, one cut per round). Before any pacing,
        // only the latter is known.
        let measured = self.ok_last_second(now);
        let held = if self.active {
            self.rate.max(measured)
        } else {
            measured
        }
        .max(config.min_rate);
        let held = config.max_rate.map_or(held, |m| held.min(m));
        self.w_max = held;
        self.k = (held * (1.0 - config.beta) / config.scale).cbrt();
        self.rate = (held * config.beta).max(config.min_rate);
        self.decreased_at = now;
        self.epoch = self.epoch.wrapping_add(1);
        self.active = true;
        // The schedule restarts at the new spacing.
        self.next_at = now.checked_add(self.spacing()).unwrap_or(now);
    }

    /// An answer that was not throttled: the rate grows along the cubic,
    /// never past twice the rate calls are actually sent at.
    fn succeeded(&mut self, now: Instant, config: &Config) {
        self.roll(now);
        self.ok_ring(now);
        let slot = ring_index(self.ok_slot);
        if let Some(n) = self.oks.get_mut(slot) {
            *n = n.saturating_add(1);
        }
        if !self.active {
            return;
        }
        let t = now
            .saturating_duration_since(self.decreased_at)
            .as_secs_f64()
            - self.k;
        let mut rate = config.scale * t * t * t + self.w_max;
        if self.sent_rate > 0.0 {
            rate = rate.min(2.0 * self.sent_rate.max(self.rate));
        }
        if let Some(max) = config.max_rate {
            rate = rate.min(max);
        }
        self.rate = rate.max(config.min_rate);
    }
}

/// Where tenth `t` is counted in the ring.
fn ring_index(t: u64) -> usize {
    usize::try_from(t % OK_SLOTS as u64).unwrap_or(0)
}

enum Admission {
    /// Go now; the epoch it went in.
    Go(u64),
    /// Come back then.
    Wait(Instant),
    /// The slot is later than the call may wait.
    Refused(Instant),
}

/// Every authority's controller, shared by the layer's services.
#[derive(Debug)]
struct Rates {
    map: Mutex<AuthorityMap<Cubic>>,
    config: Config,
    janitor: Janitor,
}

impl Rates {
    fn with<T>(
        self: &Arc<Self>,
        key: AuthorityRef<'_>,
        now: Instant,
        f: impl FnOnce(&mut Cubic) -> T,
    ) -> T {
        let mut map = lock(&self.map);
        if let Some(cubic) = map.get_mut(&key as &dyn AuthorityKey) {
            return f(cubic);
        }
        if map.len() >= self.config.max_authorities {
            // Full: the authority used least recently makes room.
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let mut cubic = Cubic::new(now);
        let out = f(&mut cubic);
        map.insert(key.to_authority(), cubic);
        drop(map);
        Janitor::ensure(self);
        out
    }
}

impl Rates {
    fn current_rate(&self, uri: &http::Uri) -> Option<f64> {
        let req = Request::get(uri.clone()).body(()).ok()?;
        let key = AuthorityRef::of(&req);
        let map = lock(&self.map);
        map.get(&key as &dyn AuthorityKey)
            .filter(|c| c.active)
            .map(|c| c.rate)
    }
}

impl Sweep for Rates {
    fn sweep(&self) -> usize {
        let now = Instant::now();
        let idle = self.config.idle;
        let mut map = lock(&self.map);
        map.retain(|_, c| now.saturating_duration_since(c.last_used) < idle);
        map.shrink_to_fit();
        map.len()
    }

    fn janitor(&self) -> &Janitor {
        &self.janitor
    }
}

/// Whether an answer says "slow down": a `429`, or a `503` carrying
/// `Retry-After`.
fn is_throttle(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE
            && headers.contains_key(http::header::RETRY_AFTER))
}

/// Learns an authority's unknown quota from its throttling answers, and
/// paces calls to it at the rate learned.
///
/// For the APIs that publish no quota (no `RateLimit` or `X-RateLimit-*`
/// fields for the [`ThrottleLayer`](crate::ThrottleLayer) to read, or a
/// quota that changes with the server's load), the way the AWS SDKs'
/// *adaptive* retry mode does: a CUBIC-style rate per authority (scheme,
/// host, port), as in TCP's congestion control.
///
/// - **Until an authority first throttles**, its calls go unpaced; the
///   layer only measures the rates calls are sent and answered at (moving
///   averages over half-second buckets, the newest bucket weighing 0.8).
/// - **On a throttling answer** (a `429`, or a `503` with `Retry-After`),
///   the rate that held, `W` (the rate calls were paced at, or the answers
///   not throttled over the last second when more), is remembered, and the rate is
///   cut to `β × W` (`β` is [`beta`](Self::beta), default 0.85). Calls are
///   then paced evenly at that rate; those already waiting queue again at
///   the new spacing. Throttled answers to calls admitted before that cut
///   do not cut it again: one cut per round, as TCP does per window.
/// - **On every other answer** the rate grows along the cubic
///   `C × (t − K)³ + W`, where `t` is the time since the cut and `K` the
///   time at which the cubic is back at `W`: fast when far below `W`, flat
///   around it (so the rate lingers where it last held), then probing
///   above it, faster and faster, to find a quota that grew. `C` is
///   [`scale`](Self::scale) (default 0.4, AWS's and TCP's). The rate never
///   grows past twice the rate calls are actually being sent at, so a
///   quiet client does not build up a rate it has never tried.
///
/// Choices where the AWS SDKs differ, each measured against the loopback
/// server of the benchmark:
///
/// - `β` is 0.85 rather than 0.7: the rate climbs back from `β × W` to
///   `W` along the concave part of the cubic, which averages about
///   `W × (1 − (1 − β)/4)`: 92.5 % of the quota for 0.7, 96 % for 0.85.
///   With 0.8 the benchmark used 96–97 % of the quota; with 0.9, 98 % at
///   200/s but more than 1 % of the requests at 50/s were answered `429`
///   (a shallower cut probes more often).
/// - The rate that held is the larger of the paced rate and the answers
///   not throttled over the last second, not the measured send rate
///   alone: while a server refuses everything until its window ends,
///   sends outrun the quota and each round's cut would otherwise drag the
///   rate far below it; the answers let through are the quota.
/// - One cut per round rather than one per throttled answer: 64 callers
///   would otherwise cut the rate many times for one overshoot.
///
/// The figures measured against a loopback server enforcing an unknown
/// 50/s, then 200/s quota with 64 callers are in BENCHMARKS.md.
///
/// # Where it goes
///
/// With the other limiters, inside retry and auth: every attempt and every
/// re-send after a 401 is a request the server counts. Below the
/// [`ThrottleLayer`](crate::ThrottleLayer) (which obeys an explicit
/// `Retry-After` by closing the gate; this layer only learns from the
/// answer), and in place of, or above, a fixed [`RateLimitLayer`](crate::RateLimitLayer)
/// when the quota is known. It returns every
/// response unchanged: a throttled answer still reaches the retry layer,
/// which decides whether to send it again (through this layer, paced).
///
/// # Waiting
///
/// A paced call waits in its response future, within
/// [`max_wait`](Self::max_wait) and the call's deadline; when its slot is
/// later than either, it fails at once with [`RateLimited`]. With
/// [`reject`](Self::reject) every call that would have to wait fails.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use parapet_core::BoxError;
/// use parapet_ratelimit::AdaptiveRateLayer;
/// use tokio::time::Instant;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // A server that answers 429 to its third call, and 200 to the others.
/// let calls = Arc::new(AtomicU32::new(0));
/// let counter = Arc::clone(&calls);
/// let mut svc = ServiceBuilder::new()
///     .layer(AdaptiveRateLayer::new())
///     .service_fn(move |_req: http::Request<()>| {
///         let n = counter.fetch_add(1, Ordering::Relaxed);
///         async move {
///             let status = if n == 2 { 429 } else { 200 };
///             Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
///         }
///     });
///
/// let get = || http::Request::get("http://api.example/").body(()).unwrap();
/// // Unpaced until the server throttles...
/// for _ in 0..3 {
///     svc.ready().await.unwrap().call(get()).await.unwrap();
/// }
/// // ...then paced: the next calls are spread out.
/// let start = Instant::now();
/// for _ in 0..3 {
///     assert_eq!(svc.ready().await.unwrap().call(get()).await.unwrap().status(), 200);
/// }
/// assert!(start.elapsed() > Duration::ZERO);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveRateLayer {
    rates: Arc<Rates>,
}

impl Default for AdaptiveRateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl AdaptiveRateLayer {
    /// An adaptive rate with the defaults: `β` 0.85, `C` 0.4, at least 0.5
    /// calls per second, no maximum, authorities forgotten after 10 minutes
    /// idle, at most 1024 of them, wait mode with no `max_wait`.
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(Config {
            beta: 0.85,
            scale: 0.4,
            min_rate: 0.5,
            max_rate: None,
            idle: Duration::from_secs(600),
            max_authorities: 1024,
            wait: WaitPolicy::default(),
        })
    }

    fn with_config(config: Config) -> Self {
        Self {
            rates: Arc::new(Rates {
                map: Mutex::default(),
                config,
                janitor: Janitor::new(SWEEP_EVERY),
            }),
        }
    }

    /// A layer with a fresh state and the configuration `f` made.
    fn configure(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.rates.config;
        f(&mut config);
        Self::with_config(config)
    }

    /// The share of the rate that held which a throttle cuts the rate to.
    /// Values outside `0.1..=0.95` are clamped. Default: 0.85.
    #[must_use]
    pub fn beta(self, beta: f64) -> Self {
        self.configure(|c| {
            c.beta = if beta.is_nan() {
                0.85
            } else {
                beta.clamp(0.1, 0.95)
            }
        })
    }

    /// The cubic's scale `C`, in calls per second per second cubed: larger
    /// grows back faster (and overshoots sooner). Values outside
    /// `0.01..=100` are clamped. Default: 0.4.
    #[must_use]
    pub fn scale(self, scale: f64) -> Self {
        self.configure(|c| {
            c.scale = if scale.is_nan() {
                0.4
            } else {
                scale.clamp(0.01, 100.0)
            }
        })
    }

    /// The lowest rate a throttle can cut to, in calls per second (at
    /// least 0.01). Default: 0.5 (one call every two seconds).
    #[must_use]
    pub fn min_rate(self, per_second: f64) -> Self {
        self.configure(|c| {
            c.min_rate = if per_second.is_nan() {
                0.5
            } else {
                per_second.max(0.01)
            };
            c.max_rate = c.max_rate.map(|m| m.max(c.min_rate));
        })
    }

    /// The highest rate the controller may reach once it paces, in calls
    /// per second; `None` for no bound. Default: `None`.
    #[must_use]
    pub fn max_rate(self, per_second: impl Into<Option<f64>>) -> Self {
        let max = per_second.into().filter(|r| !r.is_nan());
        self.configure(|c| c.max_rate = max.map(|r| r.max(c.min_rate)))
    }

    /// How long an authority may go unused before what was learned of it
    /// is forgotten. Default: 10 minutes.
    #[must_use]
    pub fn idle_timeout(self, idle: Duration) -> Self {
        self.configure(|c| c.idle = idle)
    }

    /// How many authorities are remembered at most; when full, the one used
    /// least recently is forgotten (at least 1). Default: 1024.
    #[must_use]
    pub fn max_authorities(self, n: usize) -> Self {
        self.configure(|c| c.max_authorities = n.max(1))
    }

    /// The longest a paced call waits for its slot; past it, the call fails
    /// with [`RateLimited`] without waiting. `None` leaves only the call's
    /// deadline as the bound. Default: `None`.
    #[must_use]
    pub fn max_wait(self, max_wait: impl Into<Option<Duration>>) -> Self {
        let max_wait = max_wait.into();
        self.configure(|c| c.wait.max_wait = max_wait)
    }

    /// Fails every paced call that would have to wait, at once, with
    /// [`RateLimited`] (load shedding). Default: off (calls wait).
    #[must_use]
    pub fn reject(self) -> Self {
        self.configure(|c| c.wait.reject = true)
    }

    /// The rate `uri`'s authority is paced at now, per second, or `None`
    /// while it has not throttled us (or is not known).
    ///
    /// Every service this layer value (and its clones) has made learns and
    /// paces together; a setter starts a new, empty state.
    #[must_use]
    pub fn current_rate(&self, uri: &http::Uri) -> Option<f64> {
        self.rates.current_rate(uri)
    }

    /// How many authorities are remembered now.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        lock(&self.rates.map).len()
    }
}

impl<S> Layer<S> for AdaptiveRateLayer {
    type Service = AdaptiveRate<S>;

    fn layer(&self, inner: S) -> AdaptiveRate<S> {
        AdaptiveRate {
            inner,
            rates: Arc::clone(&self.rates),
        }
    }
}

/// Paces calls per authority at a rate learned from throttling answers;
/// see [`AdaptiveRateLayer`].
#[derive(Debug, Clone)]
pub struct AdaptiveRate<S> {
    inner: S,
    rates: Arc<Rates>,
}

impl<S> AdaptiveRate<S> {
    /// Wraps `inner` with the default [`AdaptiveRateLayer`].
    pub fn new(inner: S) -> Self {
        AdaptiveRateLayer::new().layer(inner)
    }

    /// The default layer; see [`AdaptiveRateLayer::new`].
    #[must_use]
    pub fn layer() -> AdaptiveRateLayer {
        AdaptiveRateLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The rate `uri`'s authority is paced at now, per second, or `None`
    /// while it has not throttled us.
    #[must_use]
    pub fn current_rate(&self, uri: &http::Uri) -> Option<f64> {
        self.rates.current_rate(uri)
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for AdaptiveRate<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = AdaptiveRateFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let key = Target::of(&req);
        let now = parapet_core::clock::now();
        let latest = self.rates.config.wait.latest(now, req.extensions());
        let admission = self.rates.with(key.key(), now, |c| c.admit(now, latest));
        match admission {
            Admission::Go(epoch) => AdaptiveRateFuture {
                state: State::Called {
                    fut: self.inner.call(req),
                    rates: Arc::clone(&self.rates),
                    key,
                    epoch,
                },
            },
            Admission::Refused(slot) => AdaptiveRateFuture {
                state: State::Failed {
                    error: Some(RateLimited::new(slot, now)),
                },
            },
            Admission::Wait(slot) => {
                // NOTE: `self.inner` is the service that was driven ready; it
                // goes into the future and a fresh clone takes its place.
                let clone = self.inner.clone();
                let svc = std::mem::replace(&mut self.inner, clone);
                AdaptiveRateFuture {
                    state: State::Waiting {
                        sleep: Box::pin(tokio::time::sleep_until(slot)),
                        parked: Some(Box::new(Parked {
                            svc,
                            req,
                            rates: Arc::clone(&self.rates),
                            key,
                            latest,
                        })),
                    },
                }
            }
        }
    }
}

/// A call waiting for its slot.
struct Parked<S, B> {
    svc: S,
    req: Request<B>,
    rates: Arc<Rates>,
    key: Target,
    latest: Option<Instant>,
}

pin_project! {
    /// The response future of [`AdaptiveRate`]: waits for the call's slot
    /// (when the authority is paced), drives the inner call, and learns
    /// from its answer.
    #[must_use = "futures do nothing unless polled"]
    pub struct AdaptiveRateFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Called { #[pin] fut: S::Future, rates: Arc<Rates>, key: Target, epoch: u64 },
        Waiting { sleep: Pin<Box<Sleep>>, parked: Option<Box<Parked<S, B>>> },
        Failed { error: Option<RateLimited> },
    }
}

impl<S, B, ResB> Future for AdaptiveRateFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called {
                    fut,
                    rates,
                    key,
                    epoch,
                } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                    let now = Instant::now();
                    let config = rates.config;
                    let throttled = is_throttle(res.status(), res.headers());
                    let epoch = *epoch;
                    rates.with(key.key(), now, |c| {
                        if throttled {
                            c.throttled(now, epoch, &config);
                        } else {
                            c.succeeded(now, &config);
                        }
                    });
                    return Poll::Ready(Ok(res));
                }
                StateProj::Failed { error } => {
                    let error = error.take().ok_or(POLLED_AFTER_COMPLETION)?;
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Waiting { sleep, parked } => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        parapet_core::clock::will_wake_by(sleep.deadline());
                        return Poll::Pending;
                    }
                    let Some(p) = parked.as_mut() else {
                        return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                    };
                    let now = Instant::now();
                    let latest = p.latest;
                    let admission = p.rates.with(p.key.key(), now, |c| c.admit(now, latest));
                    match admission {
                        Admission::Go(epoch) => {
                            if let Some(p) = parked.take() {
                                let Parked {
                                    mut svc,
                                    req,
                                    rates,
                                    key,
                                    ..
                                } = *p;
                                state.set(State::Called {
                                    fut: svc.call(req),
                                    rates,
                                    key,
                                    epoch,
                                });
                            }
                        }
                        Admission::Wait(slot) => sleep.as_mut().reset(slot),
                        Admission::Refused(slot) => {
                            state.set(State::Failed {
                                error: Some(RateLimited::new(slot, now)),
                            });
                        }
                    }
                }
            }
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "adaptive rate future polled after completion";

impl<S, B> fmt::Debug for AdaptiveRateFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("AdaptiveRateFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use parapet_core::Deadline;
    use tower::{ServiceExt, service_fn};

    /// A stand-in server enforcing `quota` calls per fixed one-second
    /// window (changed through the handle), 2 ms away; counts per second
    /// of the run the calls it let through and the ones it refused.
    #[derive(Clone)]
    struct Quotaed {
        quota: Arc<AtomicU64>,
        window: Arc<Mutex<(u64, u64)>>,
        per_second: Arc<Mutex<Vec<(u64, u64)>>>,
        start: Instant,
    }

    impl Quotaed {
        fn new(quota: u64) -> Self {
            Self {
                quota: Arc::new(AtomicU64::new(quota)),
                window: Arc::default(),
                per_second: Arc::default(),
                start: Instant::now(),
            }
        }

        fn answer(&self) -> StatusCode {
            let now = Instant::now();
            let second = now.saturating_duration_since(self.start).as_secs();
            let mut window = self.window.lock().unwrap();
            if window.0 != second {
                *window = (second, 0);
            }
            let ok = window.1 < self.quota.load(Ordering::Relaxed);
            if ok {
                window.1 += 1;
            }
            let mut counts = self.per_second.lock().unwrap();
            let i = usize::try_from(second).unwrap();
            if counts.len() <= i {
                counts.resize(i + 1, (0, 0));
            }
            let slot = counts.get_mut(i).unwrap();
            if ok {
                slot.0 += 1;
                StatusCode::OK
            } else {
                slot.1 += 1;
                StatusCode::TOO_MANY_REQUESTS
            }
        }

        /// (let through, refused) over seconds `from..to`.
        fn totals(&self, from: usize, to: usize) -> (u64, u64) {
            let counts = self.per_second.lock().unwrap();
            counts
                .get(from..to)
                .unwrap()
                .iter()
                .fold((0, 0), |(a, b), (ok, no)| (a + ok, b + no))
        }
    }

    /// Runs `callers` tasks calling through `layer` in a loop for `secs`
    /// seconds of paused time; `change` runs at the half.
    async fn run(
        layer: AdaptiveRateLayer,
        server: &Quotaed,
        callers: usize,
        secs: u64,
        change: Option<u64>,
    ) {
        let stop = Arc::new(AtomicBool::new(false));
        let srv = server.clone();
        let svc = layer.layer(service_fn(move |_req: Request<()>| {
            let srv = srv.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let status = srv.answer();
                Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
            }
        }));
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let mut svc = svc.clone();
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::get("http://api.example/").body(()).unwrap();
                    svc.ready().await.unwrap().call(req).await.unwrap();
                }
            }));
        }
        if let Some(quota) = change {
            tokio::time::sleep(Duration::from_secs(secs / 2)).await;
            server.quota.store(quota, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(secs - secs / 2)).await;
        } else {
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn learns_an_unknown_quota_and_stays_under_it() {
        let server = Quotaed::new(50);
        let layer = AdaptiveRateLayer::new();
        run(layer.clone(), &server, 64, 40, None).await;
        let (ok, refused) = server.totals(10, 40);
        // After settling: most of the quota used, almost nothing refused.
        assert!(ok >= 30 * 50 * 90 / 100, "{ok} let through over 30 s");
        assert!(
            refused * 100 <= ok + refused,
            "{refused} refused of {}",
            ok + refused
        );
        let rate = layer
            .current_rate(&"http://api.example/".parse().unwrap())
            .unwrap();
        assert!((35.0..=60.0).contains(&rate), "paced at {rate}/s");
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_quota_that_grows() {
        let server = Quotaed::new(50);
        run(AdaptiveRateLayer::new(), &server, 64, 60, Some(200)).await;
        let (ok, _) = server.totals(45, 60);
        assert!(
            ok >= 15 * 200 * 85 / 100,
            "{ok} let through over 15 s at 200/s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_the_first_throttle_and_authorities_are_separate() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let layer = AdaptiveRateLayer::new();
        let mut svc = layer.layer(service_fn(move |req: Request<()>| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let busy = req.uri().host() == Some("busy.example") && n == 5;
            async move {
                let status = if busy { 429 } else { 200 };
                Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
            }
        }));
        let get = |host: &str| Request::get(format!("http://{host}/")).body(()).unwrap();
        let start = Instant::now();
        for _ in 0..6 {
            svc.ready()
                .await
                .unwrap()
                .call(get("busy.example"))
                .await
                .unwrap();
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "not paced before a throttle"
        );
        let busy = "http://busy.example/".parse().unwrap();
        let rate = layer.current_rate(&busy).unwrap();
        assert!(rate >= 0.5);
        // Another authority is not paced.
        for _ in 0..20 {
            svc.ready()
                .await
                .unwrap()
                .call(get("calm.example"))
                .await
                .unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(
            layer
                .current_rate(&"http://calm.example/".parse().unwrap())
                .is_none()
        );
        // The throttled one is.
        for _ in 0..3 {
            svc.ready()
                .await
                .unwrap()
                .call(get("BUSY.example:80"))
                .await
                .unwrap();
        }
        assert!(start.elapsed() > Duration::ZERO);
        assert_eq!(layer.tracked_keys(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_counts_only_with_retry_after() {
        assert!(is_throttle(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new()
        ));
        assert!(!is_throttle(
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new()
        ));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        assert!(is_throttle(StatusCode::SERVICE_UNAVAILABLE, &h));
        assert!(!is_throttle(StatusCode::INTERNAL_SERVER_ERROR, &h));
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_quota_that_shrinks() {
        let server = Quotaed::new(200);
        run(AdaptiveRateLayer::new(), &server, 64, 60, Some(50)).await;
        let (ok, refused) = server.totals(35, 60);
        assert!(
            ok >= 25 * 50 * 90 / 100,
            "{ok} let through over 25 s at 50/s"
        );
        assert!(
            refused * 100 <= ok + refused,
            "{refused} refused of {}",
            ok + refused
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_cut_per_round() {
        let config = AdaptiveRateLayer::new().rates.config;
        let now = Instant::now();
        let mut c = Cubic::new(now);
        // The server has been letting 50/s through.
        c.oks = [5; OK_SLOTS];
        c.sent_rate = 500.0;
        let Admission::Go(first) = c.admit(now, None) else {
            panic!("not paced before a throttle");
        };
        c.throttled(now, first, &config);
        assert!((c.rate - 42.5).abs() < 1e-9, "cut to {}", c.rate);
        let epoch = c.epoch;
        // Refusals of calls admitted before the cut change nothing.
        for _ in 0..49 {
            c.throttled(now, first, &config);
        }
        assert_eq!(c.epoch, epoch);
        assert!((c.rate - 42.5).abs() < 1e-9);
        // A refusal of a call admitted after it starts a new round; the cut
        // is from what held (the rate, or the answers let through when more).
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        let Admission::Go(second) = c.admit(now, None) else {
            panic!("the slot is free after a second");
        };
        c.rate = 60.0;
        c.throttled(now, second, &config);
        assert_ne!(c.epoch, epoch);
        assert!((c.rate - 51.0).abs() < 1e-9, "cut to {}", c.rate);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_grows_back_along_the_cubic() {
        let config = AdaptiveRateLayer::new().rates.config;
        let t0 = Instant::now();
        let mut c = Cubic::new(t0);
        c.oks = [10; OK_SLOTS];
        c.sent_rate = 1000.0;
        c.throttled(t0, 0, &config);
        assert!((c.rate - 85.0).abs() < 1e-9);
        // K = cbrt(100 × 0.15 / 0.4) = cbrt(37.5) ≈ 3.35 s: back at 100 then.
        let k = 37.5f64.cbrt();
        tokio::time::advance(Duration::from_secs_f64(k)).await;
        c.succeeded(Instant::now(), &config);
        assert!((c.rate - 100.0).abs() < 0.01, "{}", c.rate);
        // Flat around it, then probing above.
        tokio::time::advance(Duration::from_secs(1)).await;
        c.succeeded(Instant::now(), &config);
        assert!(c.rate > 100.0 && c.rate < 101.0, "{}", c.rate);
        tokio::time::advance(Duration::from_secs(4)).await;
        c.succeeded(Instant::now(), &config);
        assert!(c.rate > 140.0, "{}", c.rate);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_by_the_deadline_and_by_reject() {
        let throttle_first = |layer: AdaptiveRateLayer| {
            let calls = Arc::new(AtomicU64::new(0));
            layer.layer(service_fn(move |_req: Request<()>| {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    let status = if n == 0 { 429 } else { 200 };
                    Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
                }
            }))
        };
        // At the floor of 0.5/s, the second paced call waits 2 s.
        let mut svc = throttle_first(AdaptiveRateLayer::new().reject());
        let get = || Request::get("http://api.example/").body(()).unwrap();
        svc.ready().await.unwrap().call(get()).await.unwrap();
        let err = svc.ready().await.unwrap().call(get()).await.unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
        assert!(limited.wait() > Duration::ZERO);

        let mut svc = throttle_first(AdaptiveRateLayer::new());
        svc.ready().await.unwrap().call(get()).await.unwrap();
        let mut req = get();
        Deadline::at(Instant::now() + Duration::from_millis(1)).apply(req.extensions_mut());
        let start = Instant::now();
        let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
        assert!(err.is::<RateLimited>());
        assert_eq!(start.elapsed(), Duration::ZERO, "fails without waiting");
        // Without a bound it waits its turn.
        svc.ready().await.unwrap().call(get()).await.unwrap();
        assert!(start.elapsed() > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let layer = AdaptiveRateLayer::new().max_authorities(3);
        let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(()))
        }));
        for i in 0..10 {
            let req = Request::get(format!("http://h{i}.example/"))
                .body(())
                .unwrap();
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        assert_eq!(layer.tracked_keys(), 3);
    }
}
