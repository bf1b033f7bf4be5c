//! [`RateLimitLayer`]: a client-side token bucket, shared or per authority.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use parapet_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::{Authority, AuthorityKey, AuthorityMap, AuthorityRef, Janitor, Sweep, lock};
use crate::error::RateLimited;
use crate::gcra::{AtomicState, Gcra, State as BucketState, nanos};
use crate::quota::Quota;
use crate::wait::WaitPolicy;

/// The bucket(s) every clone shares.
struct Buckets {
    kind: Kind,
    gcra: Gcra,
    quota: Quota,
    /// The instant the buckets' times count from.
    epoch: Instant,
    janitor: Janitor,
}

enum Kind {
    Direct(AtomicState),
    Keyed(Mutex<AuthorityMap<BucketState>>),
}

impl Buckets {
    fn new(quota: Quota, keyed: bool) -> Arc<Self> {
        let kind = if keyed {
            Kind::Keyed(Mutex::default())
        } else {
            Kind::Direct(AtomicState::default())
        };
        // An idle key is dropped once its bucket is full again; look for such
        // keys every refill time, but no more often than once a second and no
        // less often than once a minute.
        let every = quota
            .refill_time()
            .saturating_add(quota.interval())
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        Arc::new(Self {
            kind,
            gcra: Gcra::new(quota),
            quota,
            epoch: Instant::now(),
            janitor: Janitor::new(every),
        })
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }

    /// Takes a token at `now` (for a waiter that woke up, `late` after the
    /// instant it waited for), or says when the next one will be there.
    fn check(
        self: &Arc<Self>,
        key: Option<&dyn AuthorityKey>,
        now: Instant,
        late: Option<Duration>,
    ) -> Result<(), Instant> {
        let t = self.since_epoch(now);
        let late = late.map(nanos);
        let outcome = match (&self.kind, key) {
            (Kind::Direct(bucket), _) => bucket.check(self.gcra, t, late),
            (Kind::Keyed(map), Some(key)) => {
                let mut map = lock(map);
                if let Some(state) = map.get_mut(key) {
                    self.gcra.decide(*state, t, late).map(|next| *state = next)
                } else {
                    // A new key's bucket is full: the call goes.
                    let outcome = self.gcra.decide(BucketState::default(), t, late);
                    if let Ok(state) = outcome {
                        map.insert(key.parts().to_owned(), state);
                        drop(map);
                        Janitor::ensure(self);
                    }
                    outcome.map(drop)
                }
            }
            // NOTE: `call` always passes a key to a keyed limiter.
            (Kind::Keyed(_), None) => Ok(()),
        };
        outcome.map_err(|earliest| {
            self.epoch
                .checked_add(Duration::from_nanos(earliest))
                .unwrap_or_else(|| parapet_core::far_future(self.epoch))
        })
    }

    fn is_keyed(&self) -> bool {
        matches!(self.kind, Kind::Keyed(_))
    }

    fn len(&self) -> usize {
        match &self.kind {
            Kind::Direct(_) => 0,
            Kind::Keyed(map) => lock(map).len(),
        }
    }
}

impl Sweep for Buckets {
    fn sweep(&self) -> usize {
        match &self.kind {
            Kind::Direct(_) => 0,
            Kind::Keyed(map) => {
                let now = self.since_epoch(Instant::now());
                let mut map = lock(map);
                map.retain(|_, state| !Gcra::is_full(*state, now));
                map.shrink_to_fit();
                map.len()
            }
        }
    }

    fn janitor(&self) -> &Janitor {
        &self.janitor
    }
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buckets")
            .field("quota", &self.quota)
            .field("per_authority", &self.is_keyed())
            .field("keys", &self.len())
            .finish()
    }
}

/// Applies a client-side rate limit ([`Quota`]) to calls: one bucket for
/// every call, or one per authority (scheme, host, port).
///
/// Every service this layer makes, and every clone of those, shares the
/// layer's bucket(s); build a second layer for an independent limit.
///
/// In wait mode (the default) a call that finds the bucket empty waits for
/// its token inside its response future, as long as that ends within
/// [`max_wait`](Self::max_wait) and before the call's
/// [`Deadline`](parapet_core::Deadline); otherwise it fails at once with
/// [`RateLimited`], which says when it could have gone. A waiter checks the
/// bucket again when it wakes (many waking together do not over-admit), and
/// a waiter that is dropped has consumed nothing. In reject mode
/// ([`reject`](Self::reject)) an empty bucket fails the call at once.
///
/// **Late timers.** tokio's timer fires on whole milliseconds, so a waiter
/// wakes up to a millisecond or two after its token was due. The limiter
/// does not hold that lateness against the rate: the waiter takes the slot
/// it waited for, and calls arriving just after it take the slots that
/// passed meanwhile, so the quota is kept even at 10 000 calls per second
/// with a burst of 1. It never over-admits for it: every call goes as of a
/// slot the quota grants (over any span since the limiter was made, at most
/// `burst + rate × span` calls go), no slot is claimed before the call goes,
/// and no call claims a slot more than 4 ms old, so late timers bunch calls
/// within that much and no more. When timers fire on time (paused time,
/// intervals of whole milliseconds) no window of length `w` sees more than
/// `burst + rate × w` calls.
///
/// Per-authority state is dropped once the authority has been idle long
/// enough for its bucket to be full again (at most `(burst + 1) × interval`
/// after its last call, then at the next sweep: sweeps run every refill time,
/// between once a second and once a minute), so memory stays bounded however
/// many hosts are called.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use parapet_core::BoxError;
/// use parapet_ratelimit::{Quota, RateLimitLayer};
/// use tokio::time::Instant;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // 10 calls per second, evenly spaced, per host.
/// let quota = Quota::per_second(NonZeroU32::new(10).unwrap()).burst(NonZeroU32::MIN);
/// let mut svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::per_authority(quota).max_wait(Duration::from_secs(5)))
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, BoxError>("ok") });
///
/// let start = Instant::now();
/// for _ in 0..3 {
///     let req = http::Request::get("http://api.example.com/").body(()).unwrap();
///     svc.ready().await.unwrap().call(req).await.unwrap();
/// }
/// assert_eq!(start.elapsed(), Duration::from_millis(200));
///
/// // Another host has its own bucket.
/// let req = http::Request::get("http://other.example.com/").body(()).unwrap();
/// svc.ready().await.unwrap().call(req).await.unwrap();
/// assert_eq!(start.elapsed(), Duration::from_millis(200));
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    buckets: Arc<Buckets>,
    wait: WaitPolicy,
}

impl RateLimitLayer {
    /// One bucket for every call made through this layer's services.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self {
            buckets: Buckets::new(quota, false),
            wait: WaitPolicy::default(),
        }
    }

    /// One bucket per authority (scheme, host and port of the request URI,
    /// or its `Host` header when the URI is relative).
    #[must_use]
    pub fn per_authority(quota: Quota) -> Self {
        Self {
            buckets: Buckets::new(quota, true),
            wait: WaitPolicy::default(),
        }
    }

    /// The longest a call waits for a token; past it, the call fails with
    /// [`RateLimited`] without waiting at all. `None` leaves only the call's
    /// deadline as the bound.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn max_wait(mut self, max_wait: impl Into<Option<Duration>>) -> Self {
        self.wait.max_wait = max_wait.into();
        self
    }

    /// Fail a call with [`RateLimited`] at once when there is no token,
    /// instead of waiting (load shedding).
    ///
    /// Default: wait.
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.wait.reject = true;
        self
    }

    /// The quota this layer applies.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.buckets.quota
    }

    /// How many authorities the limiter currently keeps state for (always 0
    /// for a limiter shared by every call).
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("buckets", &self.buckets)
            .field("max_wait", &self.wait.max_wait)
            .field("reject", &self.wait.reject)
            .finish()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            buckets: Arc::clone(&self.buckets),
            wait: self.wait,
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    buckets: Arc<Buckets>,
    wait: WaitPolicy,
}

impl<S> RateLimit<S> {
    /// Wraps `inner` with its own bucket for every call (see
    /// [`RateLimitLayer::new`]).
    pub fn new(inner: S, quota: Quota) -> Self {
        RateLimitLayer::new(quota).layer(inner)
    }

    /// A layer with one bucket for every call; same as
    /// [`RateLimitLayer::new`].
    #[must_use]
    pub fn layer(quota: Quota) -> RateLimitLayer {
        RateLimitLayer::new(quota)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// How many authorities the limiter currently keeps state for (always 0
    /// for a limiter shared by every call).
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("buckets", &self.buckets)
            .field("max_wait", &self.wait.max_wait)
            .field("reject", &self.wait.reject)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RateLimitFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let now = parapet_core::clock::now();
        let earliest = {
            let key = self.buckets.is_keyed().then(|| AuthorityRef::of(&req));
            let key = key.as_ref().map(|k| k as &dyn AuthorityKey);
            match self.buckets.check(key, now, None) {
                // The common path: a token was there; no clone, no allocation.
                Ok(()) => return RateLimitFuture::called(self.inner.call(req)),
                Err(earliest) => earliest,
            }
        };
        let latest = self.wait.latest(now, req.extensions());
        if latest.is_some_and(|latest| earliest > latest) {
            return RateLimitFuture::failed(RateLimited::new(earliest, now));
        }
        let key = self
            .buckets
            .is_keyed()
            .then(|| AuthorityRef::of(&req).to_owned());
        // NOTE: `self.inner` is the service that was driven ready; it goes
        // into the future and a fresh clone takes its place.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        RateLimitFuture {
            state: State::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(earliest)),
                parked: Some(Box::new(Parked {
                    svc,
                    req,
                    buckets: Arc::clone(&self.buckets),
                    key,
                    latest,
                })),
            },
        }
    }
}

/// A call waiting for its token.
struct Parked<S, B> {
    svc: S,
    req: Request<B>,
    buckets: Arc<Buckets>,
    key: Option<Authority>,
    latest: Option<Instant>,
}

pin_project! {
    /// The response future of [`RateLimit`].
    ///
    /// Waits for a token (when it must), then drives the inner call.
    /// Dropping it while it waits gives nothing back because it took nothing.
    #[must_use = "futures do nothing unless polled"]
    pub struct RateLimitFuture<S, B>
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
        Called { #[pin] fut: S::Future },
        Waiting { sleep: Pin<Box<Sleep>>, parked: Option<Box<Parked<S, B>>> },
        Failed { error: RateLimited },
    }
}

impl<S, B> RateLimitFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn called(fut: S::Future) -> Self {
        Self {
            state: State::Called { fut },
        }
    }

    fn failed(error: RateLimited) -> Self {
        Self {
            state: State::Failed { error },
        }
    }
}

impl<S, B> Future for RateLimitFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Failed { error } => return Poll::Ready(Err((*error).into())),
                StateProj::Waiting { sleep, parked } => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        // A deadline layer above need not arm a timer of
                        // its own while this one will wake the task.
                        parapet_core::clock::will_wake_by(sleep.deadline());
                        return Poll::Pending;
                    }
                    let Some(p) = parked.as_mut() else {
                        // NOTE: unreachable: `parked` is only taken on the way
                        // out of this state.
                        return Poll::Pending;
                    };
                    // Check again: others may have woken at the same moment.
                    // The time since the instant waited for (the timer's
                    // lateness) is not held against this call: see `gcra`.
                    let now = Instant::now();
                    let late = now.saturating_duration_since(sleep.deadline());
                    let key = p.key.as_ref().map(|k| k as &dyn AuthorityKey);
                    match p.buckets.check(key, now, Some(late)) {
                        Ok(()) => {
                            if let Some(p) = parked.take() {
                                let Parked { mut svc, req, .. } = *p;
                                state.set(State::Called { fut: svc.call(req) });
                            }
                        }
                        Err(earliest) if p.latest.is_some_and(|l| earliest > l) => {
                            let error = RateLimited::new(earliest, now);
                            state.set(State::Failed { error });
                        }
                        Err(earliest) => sleep.as_mut().reset(earliest),
                    }
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for RateLimitFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("RateLimitFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::sync::Mutex;

    use parapet_core::Deadline;
    use tower::{ServiceExt, service_fn};

    fn n(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    type Log = Arc<Mutex<Vec<Instant>>>;

    /// A stand-in for the client: records when each call reached it.
    fn recorder(
        log: &Log,
    ) -> impl Service<Request<()>, Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let log = Arc::clone(log);
        service_fn(move |_req: Request<()>| {
            log.lock().unwrap().push(Instant::now());
            async { Ok::<_, BoxError>(()) }
        })
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn thousand_calls_at_100_per_second_burst_1_take_ten_seconds() {
        let log = Log::default();
        let mut svc =
            RateLimitLayer::new(Quota::per_second(n(100)).burst(n(1))).layer(recorder(&log));
        let start = Instant::now();
        for _ in 0..1000 {
            svc.ready().await.unwrap().call(get("/")).await.unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        assert!((9.9..=10.1).contains(&took), "took {took} s");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1000);
        // Evenly spaced, 10 ms apart.
        for pair in log.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(10));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_never_exceed_burst_plus_rate_in_any_window() {
        let (rate, burst) = (100u32, 5u32);
        let log = Log::default();
        let layer = RateLimitLayer::new(Quota::per_second(n(rate)).burst(n(burst)));
        let svc = layer.layer(recorder(&log));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        svc.clone().oneshot(get("/")).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 640);
        for window_ms in [0u64, 1, 10, 35, 100, 1000] {
            let window = Duration::from_millis(window_ms);
            let allowed = burst as usize + (window_ms * u64::from(rate) / 1000) as usize;
            for (i, &from) in log.iter().enumerate() {
                let admitted = log[i..].iter().take_while(|&&t| t - from <= window).count();
                assert!(
                    admitted <= allowed,
                    "{admitted} calls within {window:?} (at most {allowed} allowed)"
                );
            }
        }
        // All the capacity was used: 5 at once, then 635 at 100/s.
        let took = log[639] - log[0];
        assert_eq!(took, Duration::from_millis(6350));
    }

    /// Calls through a shared limiter from `callers` tasks, each calling in
    /// a loop, for `secs`; the times the calls reached the service, and the
    /// instant the limiter was made.
    async fn saturate(rate: u32, burst: u32, callers: usize, secs: u64) -> (Vec<Instant>, Instant) {
        let log = Log::default();
        let start = Instant::now();
        let layer = RateLimitLayer::new(Quota::per_second(n(rate)).burst(n(burst)));
        let svc = layer.layer(recorder(&log));
        let end = start + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    while Instant::now() < end {
                        svc.clone().oneshot(get("/")).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut log = log.lock().unwrap().clone();
        log.retain(|&t| t < end);
        log.sort();
        (log, start)
    }

    /// Checks that no span from the limiter's start admits more than
    /// `burst + rate × span`, and no window of length `w` more than
    /// `burst + rate × (w + slack)`.
    fn assert_never_over(log: &[Instant], start: Instant, rate: u32, burst: u32, slack: Duration) {
        let allowed =
            |span: Duration| f64::from(burst) + f64::from(rate) * span.as_secs_f64() + 1e-6;
        for (i, &t) in log.iter().enumerate() {
            let admitted = (i + 1) as f64;
            assert!(
                admitted <= allowed(t - start),
                "{admitted} calls by {:?} (burst {burst}, {rate}/s)",
                t - start
            );
        }
        for window_us in [0u64, 50, 100, 1000, 3333, 10_000, 100_000] {
            let window = Duration::from_micros(window_us);
            for (i, &from) in log.iter().enumerate() {
                let admitted = log[i..].iter().take_while(|&&t| t - from <= window).count();
                assert!(
                    admitted as f64 <= allowed(window + slack),
                    "{admitted} calls within {window:?} (burst {burst}, {rate}/s)"
                );
            }
        }
    }

    /// tokio's timer fires on whole milliseconds, with paused time too: a
    /// wait for 0.1 ms or 3.33 ms ends up to a millisecond late. Those late
    /// wake-ups used to cost their lateness every time (10 000/s with a
    /// burst of 1 gave 1000/s, 300/s gave 250/s).
    #[tokio::test(start_paused = true)]
    async fn late_timer_ticks_cost_no_capacity_and_never_over_admit() {
        for (rate, burst) in [(10_000, 1), (300, 1), (1000, 1), (10_000, 7), (300, 4)] {
            for callers in [1, 64] {
                let (log, start) = saturate(rate, burst, callers, 2).await;
                let expected = f64::from(burst) + f64::from(rate) * 2.0;
                let got = log.len() as f64;
                assert!(
                    got >= expected * 0.99,
                    "{rate}/s burst {burst}, {callers} callers: {got} of {expected}"
                );
                // Calls go at most a tick after their slot here: they bunch
                // within that much, and never beyond `burst + rate × span`
                // in all.
                assert_never_over(&log, start, rate, burst, Duration::from_millis(1));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn whole_millisecond_intervals_are_spaced_exactly() {
        for callers in [1, 64] {
            let (log, start) = saturate(1000, 1, callers, 1).await;
            assert_eq!(log.len(), 1000);
            assert_never_over(&log, start, 1000, 1, Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_takes_nothing_at_high_rates_either() {
        // 10 000/s, burst 1: a slot every 0.1 ms.
        let log = Log::default();
        let mut svc =
            RateLimitLayer::new(Quota::per_second(n(10_000)).burst(n(1))).layer(recorder(&log));
        let start = Instant::now();
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        // A waiter for the 0.1 ms slot, polled once, then dropped.
        let mut waiter = Box::pin(svc.ready().await.unwrap().call(get("/")));
        let first = std::future::poll_fn(|cx| Poll::Ready(waiter.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        drop(waiter);
        // One caller for 10 ms gets every slot from 0.1 ms to 10 ms.
        let end = start + Duration::from_millis(10);
        while Instant::now() <= end {
            svc.ready().await.unwrap().call(get("/")).await.unwrap();
        }
        let log = log.lock().unwrap();
        assert_eq!(log.iter().filter(|&&t| t <= end).count(), 101);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_promises_to_wake_the_task_when_its_slot_comes() {
        let log = Log::default();
        let mut svc = RateLimitLayer::new(Quota::per_second(n(1))).layer(recorder(&log));
        let start = Instant::now();
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        let mut waiter = std::pin::pin!(svc.ready().await.unwrap().call(get("/")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (polled, promised) =
            parapet_core::clock::watch_wakeups(|| waiter.as_mut().poll(&mut cx));
        assert!(polled.is_pending());
        // The slot is at 1 s; a deadline layer above may rely on this timer.
        let by = promised.unwrap();
        assert!(by >= start + Duration::from_secs(1) && by <= start + Duration::from_millis(1005));
        waiter.await.unwrap();
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_leaves_the_bucket_as_it_was() {
        let log = Log::default();
        let mut svc = RateLimitLayer::new(Quota::per_second(n(1))).layer(recorder(&log));
        let start = Instant::now();
        svc.ready().await.unwrap().call(get("/")).await.unwrap();

        // A waiter that gives up half way.
        let waiter = svc.ready().await.unwrap().call(get("/"));
        let gave_up = tokio::time::timeout(Duration::from_millis(500), waiter).await;
        assert!(gave_up.is_err());

        // The token it waited for is still there at 1 s, and the next at 2 s.
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_max_wait_fails_at_once_with_the_earliest_time() {
        let log = Log::default();
        let mut svc = RateLimitLayer::new(Quota::per_second(n(1)))
            .max_wait(Duration::from_millis(500))
            .layer(recorder(&log));
        let start = Instant::now();
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        let err = svc.ready().await.unwrap().call(get("/")).await.unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().unwrap();
        assert_eq!(limited.earliest(), start + Duration::from_secs(1));
        assert_eq!(limited.wait(), Duration::from_secs(1));
        assert_eq!(start.elapsed(), Duration::ZERO, "it did not wait first");
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_call_deadline_bounds_the_wait() {
        let log = Log::default();
        let mut svc = RateLimitLayer::new(Quota::per_second(n(1))).layer(recorder(&log));
        let start = Instant::now();
        svc.ready().await.unwrap().call(get("/")).await.unwrap();

        let mut short = get("/");
        Deadline::after(Duration::from_millis(999)).apply(short.extensions_mut());
        let err = svc.ready().await.unwrap().call(short).await.unwrap_err();
        assert!(err.is::<RateLimited>());
        assert_eq!(start.elapsed(), Duration::ZERO);

        let mut enough = get("/");
        Deadline::after(Duration::from_secs(1)).apply(enough.extensions_mut());
        svc.ready().await.unwrap().call(enough).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn reject_mode_fails_at_once() {
        let log = Log::default();
        let mut svc = RateLimitLayer::new(Quota::per_minute(n(2)))
            .reject()
            .layer(recorder(&log));
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        svc.ready().await.unwrap().call(get("/")).await.unwrap();
        let err = svc.ready().await.unwrap().call(get("/")).await.unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().unwrap();
        assert_eq!(limited.wait(), Duration::from_secs(30));
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_loses_the_race_rechecks_its_bound() {
        let log = Log::default();
        let svc = RateLimitLayer::new(Quota::per_second(n(1)))
            .max_wait(Duration::from_millis(1500))
            .layer(recorder(&log));
        svc.clone().oneshot(get("/")).await.unwrap();
        // Both see the token due at 1 s; only one can have it, and the other
        // would then have to wait until 2 s, past its bound.
        let (a, b) = tokio::join!(svc.clone().oneshot(get("/")), svc.clone().oneshot(get("/")));
        assert!(a.is_ok() != b.is_ok(), "exactly one goes");
        let err = a.err().or(b.err()).unwrap();
        assert!(err.is::<RateLimited>());
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_and_services_of_one_layer_share_the_bucket() {
        let log = Log::default();
        let layer = RateLimitLayer::new(Quota::per_second(n(1))).reject();
        let mut a = layer.layer(recorder(&log));
        let mut b = layer.layer(recorder(&log)).clone();
        a.ready().await.unwrap().call(get("/")).await.unwrap();
        assert!(b.ready().await.unwrap().call(get("/")).await.is_err());
        // A separate layer has its own.
        let mut c = RateLimitLayer::new(Quota::per_second(n(1))).layer(recorder(&log));
        c.ready().await.unwrap().call(get("/")).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn per_authority_buckets_are_independent() {
        let log = Log::default();
        let layer = RateLimitLayer::per_authority(Quota::per_second(n(1))).reject();
        let mut svc = layer.layer(recorder(&log));
        svc.ready()
            .await
            .unwrap()
            .call(get("http://a.example/"))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(get("http://b.example/"))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(get("http://a.example:8080/"))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(get("https://a.example/"))
            .await
            .unwrap();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(get("http://A.EXAMPLE:80/other"))
            .await
            .unwrap_err();
        assert!(err.is::<RateLimited>());
        assert_eq!(layer.tracked_keys(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_of_100_000_hosts_are_evicted() {
        let log = Log::default();
        let layer = RateLimitLayer::per_authority(Quota::per_second(n(10)).burst(n(1)));
        let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(())
        }));
        for i in 0..100_000 {
            let req = get(&format!("http://host-{i}.example/"));
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        assert_eq!(svc.tracked_keys(), 100_000);
        // Idle past the eviction time (refill 100 ms; sweeps every second).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(layer.tracked_keys(), 0);
        assert!(log.lock().unwrap().is_empty());

        // The limiter still works afterwards, and a busy key survives sweeps.
        let mut svc = layer.reject().layer(recorder(&log));
        for _ in 0..5 {
            let ok = svc
                .ready()
                .await
                .unwrap()
                .call(get("http://busy.example/"))
                .await;
            assert!(ok.is_ok());
            assert_eq!(svc.tracked_keys(), 1);
            assert!(
                svc.ready()
                    .await
                    .unwrap()
                    .call(get("http://busy.example/"))
                    .await
                    .is_err()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn poll_ready_only_forwards() {
        let log = Log::default();
        let layer = RateLimitLayer::new(Quota::per_second(n(1))).reject();
        let svc = layer.layer(recorder(&log));
        // Many clones made ready hold nothing.
        let mut clones: Vec<_> = (0..10).map(|_| svc.clone()).collect();
        for c in &mut clones {
            c.ready().await.unwrap();
        }
        clones[3].call(get("/")).await.unwrap();
        assert_eq!(log.lock().unwrap().len(), 1);
    }
}
