//! [`RateLimitLayer`]: a client-side token bucket, shared or per authority.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
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
use crate::queue::Queue;
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
    Direct {
        bucket: AtomicState,
        queue: Mutex<Queue>,
        /// How many calls `queue` holds, read without its lock: a call
        /// arriving while it is 0 tries the bucket straight away.
        waiting: AtomicUsize,
    },
    Keyed(Mutex<AuthorityMap<Entry>>),
}

/// One authority's bucket and the calls waiting for it.
#[derive(Debug, Default)]
struct Entry {
    state: BucketState,
    queue: Queue,
}

/// What a call arriving at the limiter is told (times as instants, or as
/// nanoseconds since the epoch inside the buckets).
enum Arrival<T = Instant> {
    /// A token was there: go.
    Go,
    /// Wait in the queue (as `id`); the turn should come at `at`.
    Wait { id: u64, at: T },
    /// The turn would come after the call's bound: fail, saying when.
    Refused(T),
}

/// What a waiting call is told when it is polled.
enum Turn<T = Instant> {
    /// Its turn: it has left the queue and taken its token.
    Go,
    /// Not yet: check again at this instant (or when woken sooner).
    At(T),
    /// The calls ahead are late to take their turns: check again when woken,
    /// or at this instant (to notice that its bound has passed), if any.
    Behind(Option<T>),
    /// Its turn would come after its bound: it has left the queue.
    Refused(T),
}

/// A bucket's schedule, whichever way it is stored.
trait Schedule {
    fn state(&self) -> BucketState;
    fn apply(
        &mut self,
        decide: impl Fn(BucketState) -> Result<BucketState, u64>,
    ) -> Result<(), u64>;
}

impl Schedule for &AtomicState {
    fn state(&self) -> BucketState {
        self.load()
    }

    fn apply(
        &mut self,
        decide: impl Fn(BucketState) -> Result<BucketState, u64>,
    ) -> Result<(), u64> {
        self.update(decide)
    }
}

impl Schedule for BucketState {
    fn state(&self) -> BucketState {
        *self
    }

    fn apply(
        &mut self,
        decide: impl Fn(BucketState) -> Result<BucketState, u64>,
    ) -> Result<(), u64> {
        *self = decide(*self)?;
        Ok(())
    }
}

/// The queueing rules, in nanoseconds since the epoch (`latest` is the
/// call's bound, `u64::MAX` for none).
///
/// A call that arrives while others wait joins the back of the queue, even
/// if a token is there (the head is about to take it); only the head takes
/// tokens. So calls on one bucket go in the order they arrived, except that
/// a call arriving at the same moment as another (on the shared bucket's
/// lock-free path) may go first.
impl Gcra {
    fn arrive(
        self,
        bucket: &mut impl Schedule,
        queue: &mut Queue,
        now: u64,
        latest: impl FnOnce() -> u64,
    ) -> Arrival<u64> {
        let at = if queue.is_empty() {
            match bucket.apply(|state| self.decide(state, now, None)) {
                Ok(()) => return Arrival::Go,
                Err(earliest) => earliest,
            }
        } else {
            self.eta(bucket.state(), now, queue.len())
        };
        if at > latest() {
            return Arrival::Refused(at);
        }
        Arrival::Wait {
            id: queue.push(),
            at,
        }
    }

    fn turn(
        self,
        bucket: &mut impl Schedule,
        queue: &mut Queue,
        id: u64,
        now: u64,
        latest: u64,
        waker: &Waker,
    ) -> (Turn<u64>, Option<Waker>) {
        // NOTE: a waiting call is in the queue until it gets `Go` or
        // `Refused`; were it not, it would go as the head.
        let ahead = queue.ahead(id);
        if ahead.unwrap_or(0) > 0 {
            let at = self.eta(bucket.state(), now, ahead.unwrap_or(0));
            if at > latest || now > latest {
                // Not the head, so nobody needs waking.
                let _ = queue.remove(id);
                return (Turn::Refused(at), None);
            }
            if let Some(ahead) = ahead {
                queue.register(ahead, waker);
            }
            if at > now {
                return (Turn::At(at), None);
            }
            return (Turn::Behind(latest.checked_add(1)), None);
        }
        match bucket.apply(|state| self.decide_turn(state, now)) {
            Ok(()) => (Turn::Go, queue.remove(id)),
            Err(earliest) if earliest > latest => (Turn::Refused(earliest), queue.remove(id)),
            Err(earliest) => {
                queue.register(0, waker);
                (Turn::At(earliest), None)
            }
        }
    }
}

impl Buckets {
    fn new(quota: Quota, keyed: bool) -> Arc<Self> {
        let kind = if keyed {
            Kind::Keyed(Mutex::default())
        } else {
            Kind::Direct {
                bucket: AtomicState::default(),
                queue: Mutex::default(),
                waiting: AtomicUsize::new(0),
            }
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

    fn instant(&self, t: u64) -> Instant {
        self.epoch
            .checked_add(Duration::from_nanos(t))
            .unwrap_or_else(|| parapet_core::far_future(self.epoch))
    }

    fn bound(&self, latest: Option<Instant>) -> u64 {
        latest.map_or(u64::MAX, |l| self.since_epoch(l))
    }

    /// A call arriving at `now`: takes a token if one is there and nobody
    /// waits, else joins the queue if its turn comes by `latest()`.
    fn arrive(
        self: &Arc<Self>,
        key: Option<&dyn AuthorityKey>,
        now: Instant,
        latest: impl FnOnce() -> Option<Instant>,
    ) -> Arrival {
        let t = self.since_epoch(now);
        let arrival = match (&self.kind, key) {
            (
                Kind::Direct {
                    bucket,
                    queue,
                    waiting,
                },
                _,
            ) => {
                // The common path: nobody waits and a token is there.
                if waiting.load(Ordering::Acquire) == 0 && bucket.check(self.gcra, t, None).is_ok()
                {
                    return Arrival::Go;
                }
                let mut queue = lock(queue);
                let latest = || self.bound(latest());
                let arrival = self.gcra.arrive(&mut &*bucket, &mut queue, t, latest);
                waiting.store(queue.len(), Ordering::Release);
                arrival
            }
            (Kind::Keyed(map), Some(key)) => {
                let mut map = lock(map);
                if let Some(entry) = map.get_mut(key) {
                    let latest = || self.bound(latest());
                    self.gcra
                        .arrive(&mut entry.state, &mut entry.queue, t, latest)
                } else {
                    // A new key's bucket is full: the call goes.
                    let mut entry = Entry::default();
                    let arrival = self
                        .gcra
                        .arrive(&mut entry.state, &mut entry.queue, t, || 0);
                    map.insert(key.parts().to_authority(), entry);
                    drop(map);
                    Janitor::ensure(self);
                    arrival
                }
            }
            // NOTE: `call` always passes a key to a keyed limiter.
            (Kind::Keyed(_), None) => Arrival::Go,
        };
        match arrival {
            Arrival::Go => Arrival::Go,
            Arrival::Wait { id, at } => Arrival::Wait {
                id,
                at: self.instant(at),
            },
            Arrival::Refused(at) => Arrival::Refused(self.instant(at)),
        }
    }

    /// The waiting call `id`, polled at `now`: goes if it is its turn.
    fn turn(
        &self,
        key: Option<&dyn AuthorityKey>,
        id: u64,
        now: Instant,
        latest: Option<Instant>,
        waker: &Waker,
    ) -> Turn {
        let t = self.since_epoch(now);
        let latest = self.bound(latest);
        let (turn, next) = match (&self.kind, key) {
            (
                Kind::Direct {
                    bucket,
                    queue,
                    waiting,
                },
                _,
            ) => {
                let mut queue = lock(queue);
                let turn = self
                    .gcra
                    .turn(&mut &*bucket, &mut queue, id, t, latest, waker);
                waiting.store(queue.len(), Ordering::Release);
                turn
            }
            (Kind::Keyed(map), Some(key)) => match lock(map).get_mut(key) {
                Some(entry) => {
                    self.gcra
                        .turn(&mut entry.state, &mut entry.queue, id, t, latest, waker)
                }
                // NOTE: unreachable: a key is not swept while calls wait.
                None => (Turn::Go, None),
            },
            (Kind::Keyed(_), None) => (Turn::Go, None),
        };
        if let Some(next) = next {
            next.wake();
        }
        match turn {
            Turn::Go => Turn::Go,
            Turn::At(at) => Turn::At(self.instant(at)),
            Turn::Behind(at) => Turn::Behind(at.map(|at| self.instant(at))),
            Turn::Refused(at) => Turn::Refused(self.instant(at)),
        }
    }

    /// The waiting call `id` is gone: the calls behind it move up.
    fn leave(&self, key: Option<&dyn AuthorityKey>, id: u64) {
        let next = match (&self.kind, key) {
            (Kind::Direct { queue, waiting, .. }, _) => {
                let mut queue = lock(queue);
                let next = queue.remove(id);
                waiting.store(queue.len(), Ordering::Release);
                next
            }
            (Kind::Keyed(map), Some(key)) => lock(map)
                .get_mut(key)
                .and_then(|entry| entry.queue.remove(id)),
            (Kind::Keyed(_), None) => None,
        };
        if let Some(next) = next {
            next.wake();
        }
    }

    fn is_keyed(&self) -> bool {
        matches!(self.kind, Kind::Keyed(_))
    }

    fn len(&self) -> usize {
        match &self.kind {
            Kind::Direct { .. } => 0,
            Kind::Keyed(map) => lock(map).len(),
        }
    }
}

impl Sweep for Buckets {
    fn sweep(&self) -> usize {
        match &self.kind {
            Kind::Direct { .. } => 0,
            Kind::Keyed(map) => {
                let now = self.since_epoch(Instant::now());
                let mut map = lock(map);
                map.retain(|_, entry| !entry.queue.is_empty() || !Gcra::is_full(entry.state, now));
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
/// [`RateLimited`], which says when it could have gone. In reject mode
/// ([`reject`](Self::reject)) an empty bucket fails the call at once.
///
/// **First come, first served.** Calls waiting for one bucket go in the
/// order they arrived (the order of `call`): they queue, and only the call at
/// the head takes the next token; a call arriving while others wait joins the
/// back even if a token is there. A call's turn is worked out when it
/// arrives (one interval per call ahead of it), and it fails at once if that
/// is past its bound. A waiter that is dropped (or fails) has consumed
/// nothing and leaves the queue: the calls behind it move up a turn. Calls
/// arriving at the very same moment on the shared bucket may go in either
/// order. As with tokio's fair locks, a waiter whose task is not polled when
/// its turn comes holds up the calls behind it (on the same key) until it
/// is polled or dropped.
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
        let wait = self.wait;
        // The call's bound, worked out only when it cannot go at once.
        let mut latest = None;
        let arrival = {
            let key = self.buckets.is_keyed().then(|| AuthorityRef::of(&req));
            let key = key.as_ref().map(|k| k as &dyn AuthorityKey);
            self.buckets.arrive(key, now, || {
                *latest.insert(wait.latest(now, req.extensions()))
            })
        };
        let (id, at) = match arrival {
            // The common path: a token was there; no clone, no allocation.
            Arrival::Go => return RateLimitFuture::called(self.inner.call(req)),
            Arrival::Refused(earliest) => {
                #[cfg(feature = "metrics")]
                crate::metrics::rate_limit_rejected(AuthorityRef::of(&req));
                return RateLimitFuture::failed(RateLimited::new(earliest, now));
            }
            Arrival::Wait { id, at } => (id, at),
        };
        let ticket = Ticket {
            buckets: Arc::clone(&self.buckets),
            key: self
                .buckets
                .is_keyed()
                .then(|| AuthorityRef::of(&req).to_authority()),
            id,
            queued: true,
        };
        let latest = latest.unwrap_or_else(|| wait.latest(now, req.extensions()));
        // NOTE: `self.inner` is the service that was driven ready; it goes
        // into the future and a fresh clone takes its place.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        RateLimitFuture {
            state: State::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(at)),
                parked: Some(Box::new(Parked {
                    svc,
                    req,
                    ticket,
                    latest,
                    #[cfg(feature = "metrics")]
                    since: now,
                })),
            },
        }
    }
}

/// A call's place in its bucket's queue; leaving it (by being dropped)
/// lets the calls behind move up.
struct Ticket {
    buckets: Arc<Buckets>,
    key: Option<Authority>,
    id: u64,
    /// Whether it is still in the queue.
    queued: bool,
}

impl Ticket {
    fn turn(&mut self, now: Instant, latest: Option<Instant>, waker: &Waker) -> Turn {
        let key = self.key.as_ref().map(|k| k as &dyn AuthorityKey);
        let turn = self.buckets.turn(key, self.id, now, latest, waker);
        if matches!(turn, Turn::Go | Turn::Refused(_)) {
            self.queued = false;
        }
        turn
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.queued {
            let key = self.key.as_ref().map(|k| k as &dyn AuthorityKey);
            self.buckets.leave(key, self.id);
        }
    }
}

/// A call waiting for its token.
struct Parked<S, B> {
    svc: S,
    req: Request<B>,
    ticket: Ticket,
    latest: Option<Instant>,
    /// When it arrived.
    #[cfg(feature = "metrics")]
    since: Instant,
}

pin_project! {
    /// The response future of [`RateLimit`].
    ///
    /// Waits for a token (when it must), in turn, then drives the inner call.
    /// Dropping it while it waits gives back its place in the queue (it had
    /// taken no token): the calls behind it move up.
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
                    let Some(p) = parked.as_mut() else {
                        // NOTE: unreachable: `parked` is only taken on the way
                        // out of this state.
                        return Poll::Pending;
                    };
                    // Polled by its timer, by the call ahead that left the
                    // queue, or by anything else driving the task: ask the
                    // queue whether it is this call's turn.
                    let now = Instant::now();
                    let at = match p.ticket.turn(now, p.latest, cx.waker()) {
                        Turn::Go => {
                            if let Some(p) = parked.take() {
                                #[cfg(feature = "metrics")]
                                crate::metrics::rate_limit_waited(
                                    AuthorityRef::of(&p.req),
                                    now.saturating_duration_since(p.since),
                                );
                                let Parked { mut svc, req, .. } = *p;
                                state.set(State::Called { fut: svc.call(req) });
                            }
                            continue;
                        }
                        Turn::Refused(earliest) => {
                            #[cfg(feature = "metrics")]
                            crate::metrics::rate_limit_rejected(AuthorityRef::of(&p.req));
                            let error = RateLimited::new(earliest, now);
                            state.set(State::Failed { error });
                            continue;
                        }
                        Turn::At(at) | Turn::Behind(Some(at)) => at,
                        // Woken by the queue when the calls ahead have gone.
                        Turn::Behind(None) => return Poll::Pending,
                    };
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        // A deadline layer above need not arm a timer of
                        // its own while this one will wake the task.
                        parapet_core::clock::will_wake_by(at);
                        return Poll::Pending;
                    }
                    // NOTE: `at` is after `now`, so the timer has not fired;
                    // if it had, the next round asks the queue again.
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
        let mut cx = Context::from_waker(Waker::noop());
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

    /// A stand-in for the client that records which call (numbered in the
    /// request's extensions) reached it, and when.
    fn numbered(
        log: &Arc<Mutex<Vec<(usize, Instant)>>>,
    ) -> impl Service<Request<()>, Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let log = Arc::clone(log);
        service_fn(move |req: Request<()>| {
            let i = *req.extensions().get::<usize>().unwrap();
            log.lock().unwrap().push((i, Instant::now()));
            async { Ok::<_, BoxError>(()) }
        })
    }

    fn log_clear(log: &Arc<Mutex<Vec<(usize, Instant)>>>) {
        log.lock().unwrap().clear();
    }

    fn numbered_get(uri: &str, i: usize) -> Request<()> {
        let mut req = get(uri);
        req.extensions_mut().insert(i);
        req
    }

    /// Makes calls `from..to` in that order (each arrives at the limiter
    /// when it is made) and hands each to a task of its own.
    async fn spawn_calls<S>(
        svc: &mut S,
        uri: &str,
        calls: std::ops::Range<usize>,
    ) -> Vec<tokio::task::JoinHandle<Result<(), BoxError>>>
    where
        S: Service<Request<()>, Response = (), Error = BoxError>,
        S::Future: Send + 'static,
    {
        let mut tasks = Vec::new();
        for i in calls {
            let call = svc.ready().await.unwrap().call(numbered_get(uri, i));
            tasks.push(tokio::spawn(call));
        }
        tasks
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_on_one_key_go_in_the_order_they_arrived() {
        for layer in [
            RateLimitLayer::new(Quota::per_second(n(1))),
            RateLimitLayer::per_authority(Quota::per_second(n(1))),
        ] {
            let log = Arc::default();
            let mut svc = layer.layer(numbered(&log));
            let start = Instant::now();
            // Five calls made in order 0..4 (the first goes at once)...
            let mut calls = Vec::new();
            for i in 0..5 {
                let req = numbered_get("http://api.example/", i);
                calls.push(svc.ready().await.unwrap().call(req));
            }
            // ...and polled newest first whenever their task wakes up.
            let [c0, c1, c2, c3, c4] = <[_; 5]>::try_from(calls).ok().unwrap();
            let (r4, r3, r2, r1, r0) = tokio::join!(c4, c3, c2, c1, c0);
            for r in [r0, r1, r2, r3, r4] {
                r.unwrap();
            }
            let got: Vec<(usize, Duration)> = log
                .lock()
                .unwrap()
                .iter()
                .map(|&(i, t)| (i, t - start))
                .collect();
            let secs = |s: u64| Duration::from_secs(s);
            assert_eq!(
                got,
                [
                    (0, secs(0)),
                    (1, secs(1)),
                    (2, secs(2)),
                    (3, secs(3)),
                    (4, secs(4))
                ],
                "{layer:?}"
            );

            // The same with each call in a task of its own.
            log_clear(&log);
            tokio::time::sleep(Duration::from_secs(10)).await;
            let start = Instant::now();
            let tasks = spawn_calls(&mut svc, "http://api.example/", 0..5).await;
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let order: Vec<usize> = log.lock().unwrap().iter().map(|&(i, _)| i).collect();
            assert_eq!(order, [0, 1, 2, 3, 4], "{layer:?}");
            assert_eq!(start.elapsed(), secs(4));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_lets_the_ones_behind_it_move_up() {
        for layer in [
            RateLimitLayer::new(Quota::per_second(n(1))),
            RateLimitLayer::per_authority(Quota::per_second(n(1))),
        ] {
            let log = Arc::default();
            let mut svc = layer.layer(numbered(&log));
            let start = Instant::now();
            let mut calls = Vec::new();
            for i in 0..5 {
                let req = numbered_get("http://api.example/", i);
                calls.push(svc.ready().await.unwrap().call(req));
            }
            let [c0, c1, c2, c3, c4] = <[_; 5]>::try_from(calls).ok().unwrap();
            // Call 2 (its turn would be at 2 s) gives up at 1.5 s.
            let c2 = async {
                tokio::select! {
                    r = c2 => Some(r),
                    () = tokio::time::sleep(Duration::from_millis(1500)) => None,
                }
            };
            let (r4, r3, r2, r1, r0) = tokio::join!(c4, c3, c2, c1, c0);
            assert!(r2.is_none());
            for r in [r0, r1, r3, r4] {
                r.unwrap();
            }
            let log = log.lock().unwrap().clone();
            let got: Vec<(usize, Duration)> = log.iter().map(|&(i, t)| (i, t - start)).collect();
            let secs = |s: u64| Duration::from_secs(s);
            // 3 and 4 move up to the turns at 2 s and 3 s, in their order.
            assert_eq!(
                got,
                [(0, secs(0)), (1, secs(1)), (3, secs(2)), (4, secs(3))],
                "{layer:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_behind_waiters_fails_at_once_when_its_turn_is_past_its_bound() {
        let log = Arc::default();
        let mut svc = RateLimitLayer::new(Quota::per_second(n(1)))
            .max_wait(Duration::from_millis(2500))
            .layer(numbered(&log));
        let start = Instant::now();
        let tasks = spawn_calls(&mut svc, "/", 0..3).await;
        // Two are waiting (for 1 s and 2 s): the next turn is at 3 s.
        let err = svc.clone().oneshot(numbered_get("/", 3)).await.unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().unwrap();
        assert_eq!(limited.earliest(), start + Duration::from_secs(3));
        assert_eq!(start.elapsed(), Duration::ZERO, "it did not wait first");
        for t in tasks {
            t.await.unwrap().unwrap();
        }
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
