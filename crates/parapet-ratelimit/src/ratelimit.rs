//! [`RateLimitLayer`]: a client-side token bucket, shared or per authority.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use http::Request;
use parapet_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::{Authority, Janitor, Sweep};
use crate::clock::{TokioClock, TokioInstant};
use crate::error::RateLimited;
use crate::quota::Quota;
use crate::wait::WaitPolicy;

type Direct =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;
type Keyed = governor::RateLimiter<
    Authority,
    HashMapStateStore<Authority>,
    TokioClock,
    NoOpMiddleware<TokioInstant>,
>;

/// The bucket(s) every clone shares.
struct Buckets {
    kind: Kind,
    quota: Quota,
    janitor: Janitor,
}

enum Kind {
    Direct(Direct),
    Keyed(Keyed),
}

impl Buckets {
    fn new(quota: Quota, keyed: bool) -> Arc<Self> {
        let kind = if keyed {
            Kind::Keyed(Keyed::hashmap_with_clock(quota.0, TokioClock))
        } else {
            Kind::Direct(Direct::direct_with_clock(quota.0, TokioClock))
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
            quota,
            janitor: Janitor::new(every),
        })
    }

    /// Takes a token, or says when the next one will be there.
    fn check(self: &Arc<Self>, key: Option<&Authority>) -> Result<(), Instant> {
        let outcome = match (&self.kind, key) {
            (Kind::Direct(d), _) => d.check(),
            (Kind::Keyed(k), Some(key)) => {
                let outcome = k.check_key(key);
                Janitor::ensure(self);
                outcome
            }
            // NOTE: `call` always computes a key for a keyed limiter.
            (Kind::Keyed(_), None) => Ok(()),
        };
        outcome.map_err(|not_until| not_until.earliest_possible().0)
    }

    fn key_for<B>(&self, req: &Request<B>) -> Option<Authority> {
        match self.kind {
            Kind::Direct(_) => None,
            Kind::Keyed(_) => Some(Authority::of(req)),
        }
    }

    fn len(&self) -> usize {
        match &self.kind {
            Kind::Direct(_) => 0,
            Kind::Keyed(k) => k.len(),
        }
    }
}

impl Sweep for Buckets {
    fn sweep(&self) -> usize {
        match &self.kind {
            Kind::Direct(_) => 0,
            Kind::Keyed(k) => {
                k.retain_recent();
                k.shrink_to_fit();
                k.len()
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
            .field("per_authority", &matches!(self.kind, Kind::Keyed(_)))
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
/// Per-authority state is dropped once its bucket has filled up again and it
/// has seen no call, so memory stays bounded however many hosts are called.
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
        let key = self.buckets.key_for(&req);
        let earliest = match self.buckets.check(key.as_ref()) {
            // The common path: a token was there; no clone, no allocation.
            Ok(()) => return RateLimitFuture::called(self.inner.call(req)),
            Err(earliest) => earliest,
        };
        let now = Instant::now();
        let latest = self.wait.latest(now, req.extensions());
        if latest.is_some_and(|latest| earliest > latest) {
            return RateLimitFuture::failed(RateLimited::new(earliest, now));
        }
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
                    ready!(sleep.as_mut().poll(cx));
                    let Some(p) = parked.as_mut() else {
                        // NOTE: unreachable: `parked` is only taken on the way
                        // out of this state.
                        return Poll::Pending;
                    };
                    // Check again: others may have woken at the same moment.
                    match p.buckets.check(p.key.as_ref()) {
                        Ok(()) => {
                            if let Some(p) = parked.take() {
                                let Parked { mut svc, req, .. } = *p;
                                state.set(State::Called { fut: svc.call(req) });
                            }
                        }
                        Err(earliest) if p.latest.is_some_and(|l| earliest > l) => {
                            let error = RateLimited::new(earliest, Instant::now());
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
