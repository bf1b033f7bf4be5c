//! [`ConcurrencyLimitLayer`]: at most N calls in flight, overall or per
//! authority, each holding its slot until its response body ends.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use parapet_core::BoxError;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::{AuthorityKey, AuthorityMap, AuthorityRef, Janitor, Sweep, lock};
use crate::error::ConcurrencyLimited;
use crate::wait::WaitPolicy;

/// How often idle per-authority state is forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The slots every clone shares.
#[derive(Debug)]
enum Slots {
    Overall(Arc<Semaphore>),
    PerAuthority(Arc<PerAuthority>),
}

#[derive(Debug)]
struct PerAuthority {
    map: Mutex<AuthorityMap<Arc<Semaphore>>>,
    janitor: Janitor,
}

impl PerAuthority {
    fn semaphore(self: &Arc<Self>, key: AuthorityRef<'_>, limit: usize) -> Arc<Semaphore> {
        let mut map = lock(&self.map);
        if let Some(sem) = map.get(&key as &dyn AuthorityKey) {
            return Arc::clone(sem);
        }
        let sem = Arc::new(Semaphore::new(limit));
        map.insert(key.to_authority(), Arc::clone(&sem));
        drop(map);
        Janitor::ensure(self);
        sem
    }
}

impl Sweep for PerAuthority {
    fn sweep(&self) -> usize {
        let mut map = lock(&self.map);
        // NOTE: every permit and every waiter holds a clone of its
        // semaphore, and new clones are only made under this lock: a count of
        // one means nobody is in flight or waiting for that authority.
        map.retain(|_, sem| Arc::strong_count(sem) > 1);
        map.shrink_to_fit();
        map.len()
    }

    fn janitor(&self) -> &Janitor {
        &self.janitor
    }
}

/// Limits how many calls are in flight at once, overall or per authority
/// (scheme, host, port).
///
/// A call takes its slot inside its response future (never in
/// `poll_ready`, so idle clones hold nothing) and keeps it until its
/// response body has been read to the end, has failed, or has been dropped:
/// the server is still busy with a response whose body is streaming. A call
/// that fails before a response gives its slot back at once, and so does a
/// response whose body is empty. Every service this layer makes, and every
/// clone of those, shares the layer's slots.
///
/// In wait mode (the default) calls queue for a slot first come, first
/// served (in the order their futures are first polled), as long as one
/// frees up within [`max_wait`](Self::max_wait) and before the call's
/// [`Deadline`](parapet_core::Deadline); otherwise they fail with
/// [`ConcurrencyLimited`]. A dropped waiter never holds or loses a slot. In
/// reject mode ([`reject`](Self::reject)) a call finding every slot taken
/// fails at once.
///
/// Per-authority state is dropped once nothing is in flight or waiting for
/// that authority.
///
/// ```
/// use std::num::NonZeroUsize;
/// use http_body_util::{BodyExt, Full};
/// use parapet_core::BoxError;
/// use parapet_ratelimit::{ConcurrencyLimitLayer, ConcurrencyLimited};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut svc = ServiceBuilder::new()
///     .layer(ConcurrencyLimitLayer::per_authority(NonZeroUsize::MIN).reject())
///     .service_fn(|_req: http::Request<()>| async {
///         Ok::<_, BoxError>(http::Response::new(Full::new(bytes::Bytes::from("hello"))))
///     });
/// let get = || http::Request::get("http://api.example.com/").body(()).unwrap();
///
/// let res = svc.ready().await.unwrap().call(get()).await.unwrap();
/// // The body is still unread: the one slot is taken.
/// let err = svc.ready().await.unwrap().call(get()).await.unwrap_err();
/// assert!(err.is::<ConcurrencyLimited>());
///
/// // Reading the body to its end gives the slot back.
/// let body = res.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, "hello");
/// svc.ready().await.unwrap().call(get()).await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    slots: Arc<Slots>,
    limit: usize,
    wait: WaitPolicy,
}

impl ConcurrencyLimitLayer {
    /// At most `limit` calls in flight through this layer's services, to
    /// any authority. A limit above [`Semaphore::MAX_PERMITS`] is cut to it.
    #[must_use]
    pub fn new(limit: NonZeroUsize) -> Self {
        let limit = limit.get().min(Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Slots::Overall(Arc::new(Semaphore::new(limit)))),
            limit,
            wait: WaitPolicy::default(),
        }
    }

    /// At most `limit` calls in flight to each authority (scheme, host and
    /// port of the request URI, or its `Host` header when the URI is
    /// relative).
    #[must_use]
    pub fn per_authority(limit: NonZeroUsize) -> Self {
        let limit = limit.get().min(Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Slots::PerAuthority(Arc::new(PerAuthority {
                map: Mutex::default(),
                janitor: Janitor::new(SWEEP_EVERY),
            }))),
            limit,
            wait: WaitPolicy::default(),
        }
    }

    /// The longest a call waits for a slot; past it, the call fails with
    /// [`ConcurrencyLimited`]. `None` leaves only the call's deadline as the
    /// bound.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn max_wait(mut self, max_wait: impl Into<Option<Duration>>) -> Self {
        self.wait.max_wait = max_wait.into();
        self
    }

    /// Fail a call with [`ConcurrencyLimited`] at once when every slot is
    /// taken, instead of waiting (load shedding).
    ///
    /// Default: wait.
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.wait.reject = true;
        self
    }

    /// The most calls in flight (overall, or per authority).
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many authorities the limiter currently keeps state for (always 0
    /// for an overall limit).
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.slots.len()
    }
}

impl Slots {
    fn len(&self) -> usize {
        match self {
            Self::Overall(_) => 0,
            Self::PerAuthority(p) => lock(&p.map).len(),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            slots: Arc::clone(&self.slots),
            limit: self.limit,
            wait: self.wait,
        }
    }
}

/// The service made by [`ConcurrencyLimitLayer`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    slots: Arc<Slots>,
    limit: usize,
    wait: WaitPolicy,
}

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner` with slots of its own for at most `limit` calls in
    /// flight (see [`ConcurrencyLimitLayer::new`]).
    pub fn new(inner: S, limit: NonZeroUsize) -> Self {
        ConcurrencyLimitLayer::new(limit).layer(inner)
    }

    /// A layer with an overall limit; same as [`ConcurrencyLimitLayer::new`].
    #[must_use]
    pub fn layer(limit: NonZeroUsize) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer::new(limit)
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
    /// for an overall limit).
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.slots.len()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ResB: Body,
{
    type Response = Response<ConcurrencyLimitBody<ResB>>;
    type Error = BoxError;
    type Future = ConcurrencyLimitFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let semaphore = |slots: &Slots| match slots {
            Slots::Overall(sem) => Arc::clone(sem),
            Slots::PerAuthority(p) => p.semaphore(AuthorityRef::of(&req), self.limit),
        };
        // The common path: a slot is free. The permit keeps the one clone of
        // the semaphore's `Arc`.
        if let Ok(permit) = semaphore(&self.slots).try_acquire_owned() {
            return ConcurrencyLimitFuture {
                state: State::Called {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                },
            };
        }
        let sem = semaphore(&self.slots);
        let error = ConcurrencyLimited::new(self.limit, Duration::ZERO);
        let now = parapet_core::clock::now();
        let latest = self.wait.latest(now, req.extensions());
        if latest.is_some_and(|latest| latest <= now) {
            #[cfg(feature = "metrics")]
            crate::metrics::concurrency_rejected(AuthorityRef::of(&req));
            return ConcurrencyLimitFuture {
                state: State::Failed { error },
            };
        }
        // NOTE: `self.inner` is the service that was driven ready; it goes
        // into the future and a fresh clone takes its place.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let acquire = async move {
            match latest {
                Some(latest) => tokio::time::timeout_at(latest, sem.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => sem.acquire_owned().await.ok(),
            }
        };
        ConcurrencyLimitFuture {
            state: State::Waiting {
                acquire: Box::pin(acquire),
                parked: Some(Box::new(Parked {
                    svc,
                    req,
                    since: now,
                    limit: self.limit,
                })),
            },
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A call waiting for a slot.
struct Parked<S, B> {
    svc: S,
    req: Request<B>,
    since: Instant,
    limit: usize,
}

pin_project! {
    /// The response future of [`ConcurrencyLimit`].
    ///
    /// Waits for a slot (when it must), drives the inner call, and hands the
    /// slot to the response body. Dropping it gives back whatever it held.
    #[must_use = "futures do nothing unless polled"]
    pub struct ConcurrencyLimitFuture<S, B>
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
        Called { #[pin] fut: S::Future, permit: Option<OwnedSemaphorePermit> },
        Waiting { acquire: Acquire, parked: Option<Box<Parked<S, B>>> },
        Failed { error: ConcurrencyLimited },
    }
}

impl<S, B, ResB> Future for ConcurrencyLimitFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
{
    type Output = Result<Response<ConcurrencyLimitBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called { fut, permit } => {
                    let result = ready!(fut.poll(cx));
                    // On an error the slot goes back now, not when this
                    // future is dropped.
                    let permit = permit.take();
                    let res = result.map_err(Into::into)?;
                    return Poll::Ready(
                        Ok(res.map(|body| ConcurrencyLimitBody::new(body, permit))),
                    );
                }
                StateProj::Failed { error } => return Poll::Ready(Err((*error).into())),
                StateProj::Waiting { acquire, parked } => {
                    let permit = ready!(acquire.as_mut().poll(cx));
                    let Some(p) = parked.take() else {
                        // NOTE: unreachable: `parked` is only taken on the way
                        // out of this state.
                        return Poll::Pending;
                    };
                    let Parked {
                        mut svc,
                        req,
                        since,
                        limit,
                    } = *p;
                    match permit {
                        Some(permit) => {
                            #[cfg(feature = "metrics")]
                            crate::metrics::concurrency_queued(
                                AuthorityRef::of(&req),
                                Instant::now().saturating_duration_since(since),
                            );
                            state.set(State::Called {
                                fut: svc.call(req),
                                permit: Some(permit),
                            });
                        }
                        None => {
                            #[cfg(feature = "metrics")]
                            crate::metrics::concurrency_rejected(AuthorityRef::of(&req));
                            state.set(State::Failed {
                                error: ConcurrencyLimited::new(limit, since.elapsed()),
                            });
                        }
                    }
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ConcurrencyLimitFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ConcurrencyLimitFuture")
            .field("state", &state)
            .finish()
    }
}

pin_project! {
    /// A response body that holds its call's concurrency slot until it ends,
    /// fails, or is dropped.
    ///
    /// Frames, trailers, errors and size hints pass through unchanged.
    pub struct ConcurrencyLimitBody<B> {
        #[pin]
        inner: B,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<B: Body> ConcurrencyLimitBody<B> {
    fn new(inner: B, permit: Option<OwnedSemaphorePermit>) -> Self {
        // A body that is already over (HEAD, 204, empty) holds nothing.
        let permit = if inner.is_end_stream() { None } else { permit };
        Self { inner, permit }
    }
}

impl<B> ConcurrencyLimitBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body; the slot goes back now.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Whether this body still holds its slot.
    #[must_use]
    pub fn holds_slot(&self) -> bool {
        self.permit.is_some()
    }
}

impl<B: Body> Body for ConcurrencyLimitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        // Over once it says so: a reader may stop at `is_end_stream` without
        // asking for the final `None`.
        let over = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
        };
        if over {
            drop(this.permit.take());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for ConcurrencyLimitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitBody")
            .field("inner", &self.inner)
            .field("holds_slot", &self.permit.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use parapet_core::Deadline;
    use tokio::time::Sleep;
    use tower::{ServiceExt, service_fn};

    fn n(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// What the stand-in server saw.
    #[derive(Default)]
    struct Seen {
        in_flight: AtomicUsize,
        most: AtomicUsize,
        order: Mutex<Vec<u64>>,
    }

    /// Leaves the server's in-flight count when the body ends or is dropped.
    struct InFlight(Arc<Seen>);

    impl InFlight {
        fn enter(seen: &Arc<Seen>) -> Self {
            let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most.fetch_max(now, Ordering::SeqCst);
            Self(Arc::clone(seen))
        }
    }

    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A body that drips `chunks` one-byte chunks, one every `every`.
    struct Drip {
        chunks: usize,
        every: Duration,
        sleep: Pin<Box<Sleep>>,
        in_flight: Option<InFlight>,
    }

    impl fmt::Debug for Drip {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Drip")
                .field("chunks", &self.chunks)
                .finish()
        }
    }

    impl Body for Drip {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.chunks == 0 {
                return Poll::Ready(None);
            }
            ready!(self.sleep.as_mut().poll(cx));
            let every = self.every;
            self.sleep.as_mut().reset(Instant::now() + every);
            self.chunks -= 1;
            if self.chunks == 0 {
                self.in_flight = None;
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }

        fn is_end_stream(&self) -> bool {
            self.chunks == 0
        }
    }

    /// A stand-in server that answers at once with a dripping body of
    /// `chunks(id)` chunks 1 ms apart (`x-id` names the call).
    fn server(
        seen: &Arc<Seen>,
        chunks: fn(u64) -> usize,
    ) -> impl Service<Request<()>, Response = Response<Drip>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        let seen = Arc::clone(seen);
        service_fn(move |req: Request<()>| {
            let id: u64 = req
                .headers()
                .get("x-id")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            seen.order.lock().unwrap().push(id);
            let every = Duration::from_millis(1);
            let body = Drip {
                chunks: chunks(id),
                every,
                sleep: Box::pin(tokio::time::sleep(every)),
                in_flight: Some(InFlight::enter(&seen)),
            };
            async move { Ok::<_, BoxError>(Response::new(body)) }
        })
    }

    fn req(uri: &str, id: u64) -> Request<()> {
        Request::get(uri).header("x-id", id).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn hundred_tasks_through_a_limit_of_8_go_in_arrival_order() {
        let seen = Arc::new(Seen::default());
        let svc =
            ConcurrencyLimitLayer::new(n(8)).layer(server(&seen, |id| 1 + (id * 7 % 13) as usize));
        let tasks: Vec<_> = (0..100)
            .map(|id| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let res = svc.oneshot(req("http://h/", id)).await.unwrap();
                    res.into_body().collect().await.unwrap().to_bytes().len()
                })
            })
            .collect();
        for (id, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), 1 + (id as u64 * 7 % 13) as usize);
        }
        assert_eq!(seen.most.load(Ordering::SeqCst), 8);
        assert_eq!(seen.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(*seen.order.lock().unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_slot_is_held_until_the_body_ends() {
        let seen = Arc::new(Seen::default());
        let layer = ConcurrencyLimitLayer::new(n(1)).reject();
        let svc = layer.layer(server(&seen, |_| 3));
        let res = svc.clone().oneshot(req("/", 0)).await.unwrap();
        assert!(res.body().holds_slot());
        let err = svc.clone().oneshot(req("/", 1)).await.unwrap_err();
        let limited = err.downcast_ref::<ConcurrencyLimited>().unwrap();
        assert_eq!(limited.limit(), 1);
        assert_eq!(limited.waited(), Duration::ZERO);

        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        assert!(
            svc.clone().oneshot(req("/", 2)).await.is_err(),
            "still streaming"
        );
        body.frame().await.unwrap().unwrap();
        body.frame().await.unwrap().unwrap();
        assert!(!body.holds_slot(), "released with the last chunk");
        let res = svc.clone().oneshot(req("/", 3)).await.unwrap();
        // A dropped body gives its slot back too.
        drop(res);
        let res = svc.clone().oneshot(req("/", 4)).await.unwrap();
        drop(res);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_body_or_call_releases_at_once() {
        #[derive(Debug)]
        struct Failing;
        impl Body for Failing {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                Poll::Ready(Some(Err("reset".into())))
            }
        }
        let failing_body =
            service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(Response::new(Failing)) });
        let svc = ConcurrencyLimitLayer::new(n(1))
            .reject()
            .layer(failing_body);
        let res = svc.clone().oneshot(req("/", 0)).await.unwrap();
        let mut body = res.into_body();
        assert!(body.frame().await.unwrap().is_err());
        assert!(!body.holds_slot());
        let _second = svc.clone().oneshot(req("/", 1)).await.unwrap();

        let failing_call = service_fn(|_req: Request<()>| async {
            Err::<Response<Empty<Bytes>>, BoxError>("connection refused".into())
        });
        let svc = ConcurrencyLimitLayer::new(n(1))
            .reject()
            .layer(failing_call);
        for _ in 0..3 {
            let err = svc.clone().oneshot(req("/", 0)).await.unwrap_err();
            assert_eq!(err.to_string(), "connection refused");
        }

        // An empty body holds nothing even while the response is kept.
        let empty = service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
        });
        let svc = ConcurrencyLimitLayer::new(n(1)).reject().layer(empty);
        let kept = svc.clone().oneshot(req("/", 0)).await.unwrap();
        let _also = svc.clone().oneshot(req("/", 1)).await.unwrap();
        drop(kept);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded_by_max_wait_and_the_deadline() {
        let seen = Arc::new(Seen::default());
        let layer = ConcurrencyLimitLayer::new(n(1));
        let svc = layer
            .clone()
            .max_wait(Duration::from_millis(300))
            .layer(server(&seen, |_| 1));
        let held = svc.clone().oneshot(req("/", 0)).await.unwrap();
        let start = Instant::now();
        let err = svc.clone().oneshot(req("/", 1)).await.unwrap_err();
        let limited = err.downcast_ref::<ConcurrencyLimited>().unwrap();
        assert_eq!(limited.waited(), Duration::from_millis(300));
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        let unbounded = layer.layer(server(&seen, |_| 1));
        let mut r = req("/", 2);
        Deadline::after(Duration::from_millis(100)).apply(r.extensions_mut());
        let err = unbounded.clone().oneshot(r).await.unwrap_err();
        assert!(err.is::<ConcurrencyLimited>());
        assert_eq!(start.elapsed(), Duration::from_millis(400));

        // A waiter gets the slot as soon as the body is done.
        let waiter = tokio::spawn(unbounded.clone().oneshot(req("/", 3)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        held.into_body().collect().await.unwrap();
        let res = waiter.await.unwrap().unwrap();
        // (The held body's one chunk was due long ago.)
        assert_eq!(start.elapsed(), Duration::from_millis(450));
        drop(res);
        assert_eq!(*seen.order.lock().unwrap(), [0, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn per_authority_limits_do_not_block_other_authorities() {
        let seen = Arc::new(Seen::default());
        let layer = ConcurrencyLimitLayer::per_authority(n(2)).reject();
        let svc = layer.layer(server(&seen, |_| 1));
        let a1 = svc.clone().oneshot(req("http://a/", 0)).await.unwrap();
        let a2 = svc.clone().oneshot(req("http://a/", 1)).await.unwrap();
        assert!(svc.clone().oneshot(req("http://a/", 2)).await.is_err());
        let b1 = svc.clone().oneshot(req("http://b/", 3)).await.unwrap();
        let b2 = svc.clone().oneshot(req("http://b/", 4)).await.unwrap();
        assert_eq!(layer.tracked_keys(), 2);
        drop((a1, a2, b1, b2));
        // Idle state is forgotten.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(layer.tracked_keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn poll_ready_takes_no_slot() {
        let seen = Arc::new(Seen::default());
        let svc = ConcurrencyLimitLayer::new(n(1))
            .reject()
            .layer(server(&seen, |_| 1));
        let mut clones: Vec<_> = (0..10).map(|_| svc.clone()).collect();
        for c in &mut clones {
            c.ready().await.unwrap();
        }
        let res = clones[7].call(req("/", 0)).await.unwrap();
        drop(res);
        clones[2].call(req("/", 1)).await.unwrap();
    }

    /// A small deterministic generator for "random" moments.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_at_random_moments_leaves_the_full_limit() {
        for per_authority in [false, true] {
            let seen = Arc::new(Seen::default());
            let layer = if per_authority {
                ConcurrencyLimitLayer::per_authority(n(4))
            } else {
                ConcurrencyLimitLayer::new(n(4))
            };
            let svc = layer.layer(server(&seen, |id| 1 + (id % 20) as usize));
            let mut rng = 0x9E37_79B9_7F4A_7C15u64;
            let tasks: Vec<_> = (0..300)
                .map(|id| {
                    let svc = svc.clone();
                    let give_up = Duration::from_micros(xorshift(&mut rng) % 30_000);
                    let host = ["a", "b"][(id % 2) as usize];
                    tokio::spawn(async move {
                        let call = async {
                            let res = svc.oneshot(req(&format!("http://{host}/"), id)).await?;
                            res.into_body().collect().await?;
                            Ok::<_, BoxError>(())
                        };
                        // Dropped while waiting, while calling, or mid-body.
                        let _ = tokio::time::timeout(give_up, call).await;
                    })
                })
                .collect();
            // And some aborted from outside.
            for (i, t) in tasks.iter().enumerate() {
                if i % 7 == 0 {
                    t.abort();
                }
            }
            for t in tasks {
                let _ = t.await;
            }
            assert_eq!(seen.in_flight.load(Ordering::SeqCst), 0);
            assert!(seen.most.load(Ordering::SeqCst) <= if per_authority { 8 } else { 4 });

            // The whole limit is free again: 4 calls (per authority) go at
            // once and hold their slots, a fifth is turned away.
            let reject = layer.clone().reject().layer(server(&seen, |_| 1));
            for host in if per_authority {
                &["a", "b"][..]
            } else {
                &["a"][..]
            } {
                let uri = format!("http://{host}/");
                let mut held = Vec::new();
                for id in 0..4 {
                    held.push(reject.clone().oneshot(req(&uri, id)).await.unwrap());
                }
                assert!(reject.clone().oneshot(req(&uri, 4)).await.is_err());
            }
        }
    }
}
