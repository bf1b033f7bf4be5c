//! [`ThrottleLayer`]: a per-authority gate that obeys what servers say about
//! their limits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response, StatusCode};
use parapet_core::{BoxError, Jitter, RATELIMIT, ServerLimit, X_RATELIMIT_REMAINING};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::{AuthorityKey, AuthorityMap, AuthorityRef, Janitor, Sweep, Target, lock};
use crate::error::Throttled;
use crate::wait::WaitPolicy;

/// The longest wait a server can impose by default (see
/// [`ThrottleLayer::max_server_wait`]): one hour, the longest window of the
/// common API quotas (GitHub's primary limit among them).
pub const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);

/// The default release jitter: a waiter leaves the gate up to this fraction
/// of its wait after the gate opens.
const DEFAULT_RELEASE_JITTER: f64 = 0.1;

/// Release jitter never delays a waiter by more than this.
const MAX_RELEASE_JITTER: Duration = Duration::from_secs(1);

/// When the server does not state its quota, "few remain" means at most this
/// many.
const FEW_REMAINING: u64 = 10;

/// How often expired gates are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What the servers said, per authority.
#[derive(Debug, Clone, Copy)]
struct Gate {
    /// No call goes before this (the server's "not before").
    closed_until: Instant,
    /// While pacing, calls go at most one per `spacing`...
    spacing: Duration,
    /// ...until this instant (the server's window reset)...
    pace_until: Instant,
    /// ...and the next one not before this.
    next_at: Instant,
}

impl Gate {
    fn open(now: Instant) -> Self {
        Self {
            closed_until: now,
            spacing: Duration::ZERO,
            pace_until: now,
            next_at: now,
        }
    }

    /// Lets a call through (taking its paced slot), or says until when it
    /// must wait and whether that is a closed gate (as opposed to pacing).
    fn admit(&mut self, now: Instant) -> Result<(), (Instant, bool)> {
        if now < self.closed_until {
            return Err((self.closed_until, true));
        }
        if now < self.pace_until {
            if now < self.next_at {
                return Err((self.next_at, false));
            }
            self.next_at = now.checked_add(self.spacing).unwrap_or(self.pace_until);
        }
        Ok(())
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.closed_until && now >= self.pace_until
    }
}

/// The gates every clone shares.
#[derive(Debug)]
struct Gates {
    map: Mutex<AuthorityMap<Gate>>,
    /// `map.len()`, readable without the lock: calls skip the map when 0.
    active: AtomicUsize,
    janitor: Janitor,
}

impl Gates {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::default(),
            active: AtomicUsize::new(0),
            janitor: Janitor::new(SWEEP_EVERY),
        })
    }

    /// Lets a call to `target` through, or says until when it must wait,
    /// whether that is a closed gate, and the time it was checked.
    fn admit(&self, target: &Target) -> Result<(), (Instant, bool, Instant)> {
        // The common path: no gate is closed anywhere; no clock read, no lock.
        if self.active.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let now = parapet_core::clock::now();
        let key = target.key();
        let key = &key as &dyn AuthorityKey;
        let mut map = lock(&self.map);
        let Some(gate) = map.get_mut(key) else {
            return Ok(());
        };
        let outcome = gate.admit(now);
        if gate.expired(now) {
            map.remove(key);
            self.active.store(map.len(), Ordering::Release);
        }
        outcome.map_err(|(until, closed)| (until, closed, now))
    }

    fn update(self: &Arc<Self>, key: AuthorityRef<'_>, now: Instant, f: impl FnOnce(&mut Gate)) {
        let mut map = lock(&self.map);
        if let Some(gate) = map.get_mut(&key as &dyn AuthorityKey) {
            f(gate);
        } else {
            let mut gate = Gate::open(now);
            f(&mut gate);
            if gate.expired(now) {
                return;
            }
            map.insert(key.to_authority(), gate);
            self.active.store(map.len(), Ordering::Release);
            drop(map);
            Janitor::ensure(self);
        }
    }

    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

impl Sweep for Gates {
    fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut map = lock(&self.map);
        map.retain(|_, gate| !gate.expired(now));
        map.shrink_to_fit();
        self.active.store(map.len(), Ordering::Release);
        map.len()
    }

    fn janitor(&self) -> &Janitor {
        &self.janitor
    }
}

/// Configuration of a [`ThrottleLayer`].
#[derive(Debug, Clone)]
struct Config {
    wait: WaitPolicy,
    max_server_wait: Duration,
    jitter: Jitter,
    release_jitter: f64,
    spread: bool,
}

/// State and configuration shared by a [`Throttle`] and its clones.
#[derive(Debug)]
struct Shared {
    gates: Arc<Gates>,
    config: Config,
}

impl Shared {
    /// Reads a response's rate-limit signals and updates the authority's gate.
    fn observe(&self, target: &Target, status: StatusCode, headers: &HeaderMap) {
        // Only a few responses carry a signal: do not read the system clock
        // or parse anything for the others.
        if !may_carry_signal(status, headers) {
            return;
        }
        let Some(limit) = ServerLimit::from_response(status, headers, SystemTime::now()) else {
            return;
        };
        let now = Instant::now();
        let cap = self.config.max_server_wait;
        let at = |d: Duration| now.checked_add(d.min(cap)).unwrap_or(now);

        if let Some(wait) = limit.wait() {
            if !wait.is_zero() {
                let until = at(wait);
                self.gates.update(target.key(), now, |gate| {
                    gate.closed_until = gate.closed_until.max(until);
                });
                #[cfg(feature = "metrics")]
                crate::metrics::throttle_closed(
                    target.key(),
                    limit.source(),
                    until.saturating_duration_since(now),
                );
            }
            return;
        }
        if !self.config.spread {
            return;
        }
        let (Some(remaining), Some(reset)) = (limit.remaining(), limit.reset()) else {
            return;
        };
        let few = limit.limit().map_or(FEW_REMAINING, |l| (l / 10).max(1));
        if remaining > 0 && remaining <= few && !reset.is_zero() {
            let window = reset.min(cap);
            let spacing = window / u32::try_from(remaining).unwrap_or(u32::MAX);
            self.gates.update(target.key(), now, |gate| {
                if gate.pace_until <= now {
                    gate.next_at = now.checked_add(spacing).unwrap_or(now);
                }
                gate.spacing = spacing;
                gate.pace_until = at(window);
            });
        } else if remaining > few && self.gates.active.load(Ordering::Acquire) > 0 {
            // A fresh window: stop pacing (a closed gate stays closed).
            self.gates
                .update(target.key(), now, |gate| gate.pace_until = now);
        }
    }

    /// When a call that must wait until `until` leaves: an upward-only
    /// jitter after a closed gate opens, so that waiters do not stampede.
    fn release_at(&self, until: Instant, closed: bool, now: Instant) -> Instant {
        if !closed {
            return until;
        }
        let wait = until.saturating_duration_since(now);
        let extra = self
            .config
            .jitter
            .spread_up(wait, self.config.release_jitter)
            .saturating_sub(wait)
            .min(MAX_RELEASE_JITTER);
        until.checked_add(extra).unwrap_or(until)
    }
}

/// Whether a response may carry a rate-limit signal worth parsing: a 403,
/// 429 or 503, or an `X-RateLimit-Remaining` or `RateLimit` field. One pass
/// over the header names (none at all when there are no headers) rather than
/// a hashed lookup per name.
fn may_carry_signal(status: StatusCode, headers: &HeaderMap) -> bool {
    if matches!(status.as_u16(), 403 | 429 | 503) {
        return true;
    }
    if headers.is_empty() {
        return false;
    }
    let (remaining, ratelimit) = (X_RATELIMIT_REMAINING, RATELIMIT);
    headers
        .keys()
        .any(|name| *name == remaining || *name == ratelimit)
}

/// Holds calls back from an authority while its server has said "not
/// before T", and spreads the last few requests of a server's window over
/// that window.
///
/// Each response is read for the signals [`ServerLimit`] understands: 429,
/// 503 (or GitHub's 403) with `Retry-After`, `X-RateLimit-Remaining: 0` with
/// its reset, the IETF `RateLimit` field with `r=0`, GitHub's 403 with
/// remaining 0. Such a response closes the gate of its authority (scheme,
/// host, port) until the time given, for every clone of the service and
/// every task, not just the caller that got it. Other authorities are
/// unaffected. A wait longer than [`max_server_wait`](Self::max_server_wait)
/// (default [`DEFAULT_MAX_SERVER_WAIT`], one hour) is cut to it, so a garbage
/// reset cannot block an authority for ever; the call's deadline bounds every
/// wait anyway.
///
/// Calls to a closed authority wait at the gate inside their response
/// future (as long as it opens within [`max_wait`](Self::max_wait) and
/// before the call's [`Deadline`](parapet_core::Deadline)), or fail at once
/// with [`Throttled`], which says how long was left. When the gate opens,
/// each waiter leaves after an upward-only jitter of up to 10 % of its wait
/// (at most 1 s), so they do not stampede; each checks the gate again as it
/// leaves.
///
/// **Spreading the last requests.** When a response says `r` requests remain
/// in a window that resets in `t`, and `r` is "few" (at most a tenth of the
/// server's stated quota, or at most 10 when it states none), calls to that
/// authority go at most one per `t / r` until the window resets, instead of
/// spending the `r` at once and then hitting a wall. A later response that
/// reports more than "few" remaining (a new window) ends the pacing.
/// [`spread_remaining(false)`](Self::spread_remaining) turns this off.
///
/// ```
/// use std::time::Duration;
/// use parapet_core::BoxError;
/// use parapet_ratelimit::ThrottleLayer;
/// use tokio::time::Instant;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut svc = ServiceBuilder::new()
///     .layer(ThrottleLayer::new())
///     .service_fn(|req: http::Request<()>| async move {
///         // The first host is over its quota.
///         let status = if req.uri().host() == Some("busy.example") { 429 } else { 200 };
///         let res = http::Response::builder().status(status).header("retry-after", "2");
///         Ok::<_, BoxError>(res.body(()).unwrap())
///     });
///
/// let start = Instant::now();
/// let get = |host: &str| http::Request::get(format!("http://{host}/")).body(()).unwrap();
/// let res = svc.ready().await.unwrap().call(get("busy.example")).await.unwrap();
/// assert_eq!(res.status(), 429);
///
/// // Another authority goes at once...
/// svc.ready().await.unwrap().call(get("calm.example")).await.unwrap();
/// assert_eq!(start.elapsed(), Duration::ZERO);
/// // ...while this one waits at least the 2 s the server asked for.
/// svc.ready().await.unwrap().call(get("busy.example")).await.unwrap();
/// assert!(start.elapsed() >= Duration::from_secs(2));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ThrottleLayer {
    gates: Arc<Gates>,
    config: Config,
}

impl Default for ThrottleLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ThrottleLayer {
    /// A throttle with the defaults: wait mode, no `max_wait`, server waits
    /// cut to one hour, release jitter on, spreading on.
    #[must_use]
    pub fn new() -> Self {
        Self {
            gates: Gates::new(),
            config: Config {
                wait: WaitPolicy::default(),
                max_server_wait: DEFAULT_MAX_SERVER_WAIT,
                jitter: Jitter::random(),
                release_jitter: DEFAULT_RELEASE_JITTER,
                spread: true,
            },
        }
    }

    /// The longest a call waits at a closed gate; past it, the call fails
    /// with [`Throttled`] without waiting at all. `None` leaves only the
    /// call's deadline as the bound.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn max_wait(mut self, max_wait: impl Into<Option<Duration>>) -> Self {
        self.config.wait.max_wait = max_wait.into();
        self
    }

    /// Fail a call with [`Throttled`] at once while its authority's gate is
    /// closed, instead of waiting.
    ///
    /// Default: wait.
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.config.wait.reject = true;
        self
    }

    /// The longest a server can close a gate for; longer waits (a reset
    /// days away, a garbage date) are cut to this.
    ///
    /// Default: [`DEFAULT_MAX_SERVER_WAIT`] (one hour).
    #[must_use]
    pub fn max_server_wait(mut self, max: Duration) -> Self {
        self.config.max_server_wait = max;
        self
    }

    /// Whether the last few requests of a server's window are spread over
    /// it (see the type's docs for the rule).
    ///
    /// Default: `true`.
    #[must_use]
    pub fn spread_remaining(mut self, spread: bool) -> Self {
        self.config.spread = spread;
        self
    }

    /// The source of the release jitter (random by default; fixed or
    /// scripted in tests). [`Jitter::fixed(0.0)`](Jitter::fixed) releases
    /// every waiter the moment the gate opens.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// How many authorities currently have a closed or pacing gate.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.gates.len()
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Throttle {
            inner,
            shared: Arc::new(Shared {
                gates: Arc::clone(&self.gates),
                config: self.config.clone(),
            }),
        }
    }
}

/// The service made by [`ThrottleLayer`].
#[derive(Debug, Clone)]
pub struct Throttle<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Throttle<S> {
    /// Wraps `inner` in a throttle with the defaults and gates of its own.
    pub fn new(inner: S) -> Self {
        ThrottleLayer::new().layer(inner)
    }

    /// A throttle layer with the defaults; same as [`ThrottleLayer::new`].
    #[must_use]
    pub fn layer() -> ThrottleLayer {
        ThrottleLayer::new()
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

    /// How many authorities currently have a closed or pacing gate.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.shared.gates.len()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Throttle<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ThrottleFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let key = Target::of(&req);
        let (until, closed, now) = match self.shared.gates.admit(&key) {
            // The common path: no gate is closed for this authority.
            Ok(()) => {
                return ThrottleFuture::called(self.inner.call(req), Arc::clone(&self.shared), key);
            }
            Err(wait) => wait,
        };
        let latest = self.shared.config.wait.latest(now, req.extensions());
        if latest.is_some_and(|latest| until > latest) {
            #[cfg(feature = "metrics")]
            crate::metrics::throttle_rejected(key.key());
            return ThrottleFuture::failed(Throttled::new(until, now));
        }
        let release = self.shared.release_at(until, closed, now);
        let release = latest.map_or(release, |latest| release.min(latest));
        // NOTE: `self.inner` is the service that was driven ready; it goes
        // into the future and a fresh clone takes its place.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ThrottleFuture {
            state: State::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(release)),
                parked: Some(Box::new(Parked {
                    svc,
                    req,
                    shared: Arc::clone(&self.shared),
                    key,
                    latest,
                    #[cfg(feature = "metrics")]
                    since: now,
                })),
            },
        }
    }
}

/// A call waiting at a gate.
struct Parked<S, B> {
    svc: S,
    req: Request<B>,
    shared: Arc<Shared>,
    key: Target,
    latest: Option<Instant>,
    /// When it started waiting.
    #[cfg(feature = "metrics")]
    since: Instant,
}

pin_project! {
    /// The response future of [`Throttle`].
    ///
    /// Waits at the authority's gate (when it must), drives the inner call,
    /// and reads the response's rate-limit signals.
    #[must_use = "futures do nothing unless polled"]
    pub struct ThrottleFuture<S, B>
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
        Called { #[pin] fut: S::Future, shared: Arc<Shared>, key: Target },
        Waiting { sleep: Pin<Box<Sleep>>, parked: Option<Box<Parked<S, B>>> },
        Failed { error: Throttled },
    }
}

impl<S, B> ThrottleFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn called(fut: S::Future, shared: Arc<Shared>, key: Target) -> Self {
        Self {
            state: State::Called { fut, shared, key },
        }
    }

    fn failed(error: Throttled) -> Self {
        Self {
            state: State::Failed { error },
        }
    }
}

impl<S, B, ResB> Future for ThrottleFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called { fut, shared, key } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                    shared.observe(key, res.status(), res.headers());
                    return Poll::Ready(Ok(res));
                }
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
                    // Check again: the gate may have closed anew, or another
                    // waiter may have taken the paced slot.
                    match p.shared.gates.admit(&p.key) {
                        Ok(()) => {
                            if let Some(p) = parked.take() {
                                #[cfg(feature = "metrics")]
                                crate::metrics::throttle_waited(
                                    p.key.key(),
                                    Instant::now().saturating_duration_since(p.since),
                                );
                                let Parked {
                                    mut svc,
                                    req,
                                    shared,
                                    key,
                                    ..
                                } = *p;
                                state.set(State::Called {
                                    fut: svc.call(req),
                                    shared,
                                    key,
                                });
                            }
                        }
                        Err((until, _, now)) if p.latest.is_some_and(|l| until > l) => {
                            #[cfg(feature = "metrics")]
                            crate::metrics::throttle_rejected(p.key.key());
                            state.set(State::Failed {
                                error: Throttled::new(until, now),
                            });
                        }
                        Err((until, closed, now)) => {
                            let release = p.shared.release_at(until, closed, now);
                            let release = p.latest.map_or(release, |l| release.min(l));
                            sleep.as_mut().reset(release);
                        }
                    }
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ThrottleFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ThrottleFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    use parapet_core::Deadline;
    use tower::{ServiceExt, service_fn};

    type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;
    type Script = Arc<dyn Fn(&Request<()>, usize) -> Response<()> + Send + Sync>;

    /// A stand-in server: records arrivals (host, time) and answers with
    /// `script(request, number of earlier arrivals for that host)`.
    fn server(
        arrivals: &Arrivals,
        script: impl Fn(&Request<()>, usize) -> Response<()> + Send + Sync + 'static,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        let arrivals = Arc::clone(arrivals);
        let script: Script = Arc::new(script);
        service_fn(move |req: Request<()>| {
            let host = req.uri().host().unwrap_or_default().to_owned();
            let mut log = arrivals.lock().unwrap();
            let before = log.iter().filter(|(h, _)| *h == host).count();
            log.push((host, Instant::now()));
            let res = script(&req, before);
            async move { Ok::<_, BoxError>(res) }
        })
    }

    fn reply(status: u16, headers: &[(&'static str, &str)]) -> Response<()> {
        let mut res = Response::builder().status(status);
        for (k, v) in headers {
            res = res.header(*k, *v);
        }
        res.body(()).unwrap()
    }

    fn get(host: &str) -> Request<()> {
        Request::get(format!("http://{host}/")).body(()).unwrap()
    }

    fn times(arrivals: &Arrivals, host: &str, start: Instant) -> Vec<Duration> {
        arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, t)| *t - start)
            .collect()
    }

    /// The first call to `busy` gets 429 with Retry-After: 1; all else 200.
    fn busy_once(req: &Request<()>, before: usize) -> Response<()> {
        if req.uri().host() == Some("busy") && before == 0 {
            reply(429, &[("retry-after", "1")])
        } else {
            reply(200, &[])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_closes_only_that_authority() {
        let arrivals = Arrivals::default();
        let layer = ThrottleLayer::new().jitter(Jitter::fixed(0.0));
        let svc = layer.layer(server(&arrivals, busy_once));
        let start = Instant::now();
        let res = svc.clone().oneshot(get("busy")).await.unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(layer.tracked_keys(), 1);

        let waiting = tokio::spawn(svc.clone().oneshot(get("busy")));
        for _ in 0..10 {
            svc.clone().oneshot(get("calm")).await.unwrap();
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "calm was served without pause"
        );
        assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
        assert_eq!(
            times(&arrivals, "busy", start),
            [Duration::ZERO, Duration::from_secs(1)]
        );
        // The gate is forgotten once open.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(layer.tracked_keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_leave_the_gate_with_upward_jitter() {
        let arrivals = Arrivals::default();
        let i = Arc::new(AtomicU64::new(0));
        let jitter = Jitter::from_fn(move || {
            let k = i.fetch_add(1, Ordering::Relaxed);
            (k % 10) as f64 / 10.0
        });
        let svc = ThrottleLayer::new()
            .jitter(jitter)
            .layer(server(&arrivals, busy_once));
        let start = Instant::now();
        svc.clone().oneshot(get("busy")).await.unwrap();
        let waiters: Vec<_> = (0..10)
            .map(|_| tokio::spawn(svc.clone().oneshot(get("busy"))))
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap().status(), 200);
        }
        let mut t = times(&arrivals, "busy", start);
        t.sort();
        let released = &t[1..];
        assert!(released.iter().all(|&d| d >= Duration::from_secs(1)));
        assert!(released.iter().all(|&d| d <= Duration::from_millis(1100)));
        let mut distinct = released.to_vec();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            10,
            "released at distinct moments: {released:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reject_mode_and_bounds_fail_with_the_time_left() {
        let arrivals = Arrivals::default();
        let layer = ThrottleLayer::new().jitter(Jitter::fixed(0.0));
        let svc = layer.clone().layer(server(&arrivals, busy_once));
        svc.clone().oneshot(get("busy")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;

        let rejecting = layer.clone().reject().layer(server(&arrivals, busy_once));
        let err = rejecting.oneshot(get("busy")).await.unwrap_err();
        let throttled = err.downcast_ref::<Throttled>().unwrap();
        assert_eq!(throttled.wait(), Duration::from_millis(750));
        assert_eq!(
            err.to_string(),
            "throttled by the server: the next call may go in 750ms"
        );

        let bounded = layer
            .clone()
            .max_wait(Duration::from_millis(500))
            .layer(server(&arrivals, busy_once));
        let err = bounded.oneshot(get("busy")).await.unwrap_err();
        assert!(err.is::<Throttled>());

        let mut req = get("busy");
        Deadline::after(Duration::from_millis(700)).apply(req.extensions_mut());
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert!(err.is::<Throttled>());

        // Nothing waited, nothing was sent.
        assert_eq!(times(&arrivals, "busy", Instant::now()).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn every_server_signal_closes_the_gate() {
        type Case = (u16, &'static [(&'static str, &'static str)], u64);
        let cases: [Case; 5] = [
            (503, &[("retry-after", "3")], 3),
            (
                200,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "4")],
                4,
            ),
            (200, &[("ratelimit", r#""burst";r=0;t=5"#)], 5),
            (403, &[("x-ratelimit-remaining", "0")], 60),
            (
                429,
                &[("retry-after", "2"), ("ratelimit", r#""a";r=0;t=30"#)],
                2,
            ),
        ];
        for (status, headers, secs) in cases {
            let arrivals = Arrivals::default();
            let svc = ThrottleLayer::new()
                .jitter(Jitter::fixed(0.0))
                .layer(server(&arrivals, move |_, before| {
                    if before == 0 {
                        reply(status, headers)
                    } else {
                        reply(200, &[])
                    }
                }));
            let start = Instant::now();
            svc.clone().oneshot(get("h")).await.unwrap();
            svc.clone().oneshot(get("h")).await.unwrap();
            assert_eq!(
                times(&arrivals, "h", start),
                [Duration::ZERO, Duration::from_secs(secs)],
                "{status} {headers:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_server_waits_are_capped() {
        let arrivals = Arrivals::default();
        let far = (SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 10 * 365 * 86_400)
            .to_string();
        let svc = ThrottleLayer::new()
            .jitter(Jitter::fixed(0.0))
            .max_server_wait(Duration::from_secs(90))
            .layer(server(&arrivals, move |_, before| {
                if before == 0 {
                    reply(
                        200,
                        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &far)],
                    )
                } else {
                    reply(200, &[])
                }
            }));
        let start = Instant::now();
        svc.clone().oneshot(get("h")).await.unwrap();
        svc.clone().oneshot(get("h")).await.unwrap();
        assert_eq!(
            times(&arrivals, "h", start),
            [Duration::ZERO, Duration::from_secs(90)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_few_requests_of_a_window_are_spread_over_it() {
        // A server in the last 10 s of its window with 5 of 100 requests left.
        let arrivals = Arrivals::default();
        let start = Instant::now();
        let window_end = start + Duration::from_secs(10);
        let svc = ThrottleLayer::new()
            .jitter(Jitter::fixed(0.0))
            .layer(server(&arrivals, move |_, before| {
                let now = Instant::now();
                if before >= 5 && now < window_end {
                    return reply(429, &[]);
                }
                let remaining = if now < window_end { 4 - before } else { 99 };
                let reset = window_end.saturating_duration_since(now).as_secs_f64();
                reply(
                    200,
                    &[
                        ("x-ratelimit-limit", "100"),
                        ("x-ratelimit-remaining", &remaining.to_string()),
                        ("x-ratelimit-reset-after", &format!("{reset}")),
                    ],
                )
            }));
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(
                svc.clone()
                    .oneshot(get("h"))
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses, [200; 6], "no request hit the wall");
        let t = times(&arrivals, "h", start);
        // 4 left in 10 s: one every 2.5 s, the fourth landing in the new
        // window, which is not paced.
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            t.iter().map(|&d| ms(d)).collect::<Vec<_>>(),
            [0, 2500, 5000, 7500, 10_000, 10_000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn spreading_can_be_turned_off() {
        let arrivals = Arrivals::default();
        let svc = ThrottleLayer::new()
            .spread_remaining(false)
            .layer(server(&arrivals, |_, _| {
                reply(
                    200,
                    &[("x-ratelimit-remaining", "3"), ("x-ratelimit-reset", "30")],
                )
            }));
        let start = Instant::now();
        for _ in 0..3 {
            svc.clone().oneshot(get("h")).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_closed_again_while_waiting_holds_the_waiter() {
        let arrivals = Arrivals::default();
        // `busy` answers 429 Retry-After: 1 to its first two calls.
        let svc = ThrottleLayer::new()
            .jitter(Jitter::fixed(0.0))
            .layer(server(&arrivals, |_, before| {
                if before < 2 {
                    reply(429, &[("retry-after", "1")])
                } else {
                    reply(200, &[])
                }
            }));
        let start = Instant::now();
        svc.clone().oneshot(get("busy")).await.unwrap();
        let waiter = tokio::spawn(svc.clone().oneshot(get("busy")));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A response to a call that was already in flight closes the gate
        // further while the waiter waits.
        svc.get_ref()
            .clone()
            .oneshot(get("busy"))
            .await
            .map(|res| {
                svc.shared
                    .observe(&Target::of(&get("busy")), res.status(), res.headers());
            })
            .unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().status(), 200);
        let t = times(&arrivals, "busy", start);
        assert_eq!(
            t,
            [
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_millis(1500)
            ]
        );
    }
}
