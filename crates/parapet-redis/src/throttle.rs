//! [`RedisThrottleLayer`]: the server's "not before T", per authority,
//! shared by every process.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response, StatusCode};
use parapet_core::{BoxError, Deadline, RATELIMIT, ServerLimit, X_RATELIMIT_REMAINING};
use parapet_ratelimit::{DEFAULT_MAX_SERVER_WAIT, Throttle, ThrottleLayer, Throttled};
use redis::Script;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::authority_of;
use crate::ratelimit::RedisFuture;
use crate::store::RedisStore;

/// How long the gate stays closed, in milliseconds (0 when open).
const CHECK: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
return ttl
";

/// Closes the gate for ARGV[1] milliseconds unless it is already closed
/// for longer: the gate only ever moves later.
const CLOSE: &str = r"
local want = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('SET', KEYS[1], '1', 'PX', want)
end
return 0
";

/// A per-authority gate that every process sharing the Redis obeys: a
/// response that tells one process to hold back (429 or 503 with
/// `Retry-After`, an exhausted `X-RateLimit-*` or IETF `RateLimit`,
/// GitHub's 403) closes the authority's gate in Redis until the time given,
/// and every process's calls to that authority wait at it (inside their
/// response futures, within [`max_wait`](Self::max_wait) and the call's
/// [`Deadline`](parapet_core::Deadline)) or fail at once with
/// [`Throttled`].
///
/// The signals are read by [`parapet_core::ServerLimit`], as the local
/// [`ThrottleLayer`] reads them; the gate is one key per authority whose
/// expiry (Redis's clock) is the time left, and closing it only ever moves
/// it later. Each call costs one Redis round trip to check the gate, and a
/// response carrying a signal a second one.
///
/// The layer wraps a local [`ThrottleLayer`] (by default
/// `ThrottleLayer::new()`, or the one given to [`local`](Self::local)),
/// which keeps working beside the shared gate: it spreads the last requests
/// of a server's window and holds this process's calls even while Redis is
/// unreachable. What happens then is the [`Fallback`](crate::Fallback): by
/// default open (only the local gate holds calls); with
/// [`fail_closed`](Self::fail_closed), calls fail with
/// [`RedisUnavailable`](crate::RedisUnavailable).
///
/// Put it where the local [`ThrottleLayer`] goes (inside retry and auth,
/// outside the rate limit).
///
/// ```
/// use parapet_core::BoxError;
/// use parapet_ratelimit::Throttled;
/// use parapet_redis::{RedisStore, RedisThrottleLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let server = parapet_redis::test_support::RedisServer::start().await.unwrap();
/// # let url = server.url();
/// let store = RedisStore::open(url.as_str()).unwrap();
/// let answer = |status: u16| {
///     tower::service_fn(move |_req: http::Request<()>| async move {
///         let res = http::Response::builder().status(status).header("retry-after", "30");
///         Ok::<_, BoxError>(res.body(()).unwrap())
///     })
/// };
/// // One process is told 429 with Retry-After: 30...
/// let one = ServiceBuilder::new().layer(RedisThrottleLayer::new(store.clone())).service(answer(429));
/// let req = || http::Request::get("https://api.example.com/").body(()).unwrap();
/// assert_eq!(one.oneshot(req()).await.unwrap().status(), 429);
///
/// // ...and another (here, in reject mode) does not send for 30 s.
/// let other = ServiceBuilder::new().layer(RedisThrottleLayer::new(store).reject()).service(answer(200));
/// let err = other.oneshot(req()).await.unwrap_err();
/// assert!(err.downcast_ref::<Throttled>().is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct RedisThrottleLayer {
    shared: Arc<Shared>,
    local: ThrottleLayer,
}

#[derive(Debug)]
struct Shared {
    store: RedisStore,
    max_wait: Option<Duration>,
    reject: bool,
    max_server_wait: Duration,
    fail_closed: bool,
    fallbacks: AtomicU64,
    check: Script,
    close: Script,
}

impl RedisThrottleLayer {
    /// A gate per authority in `store`, shared by every process using it.
    #[must_use]
    pub fn new(store: RedisStore) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                max_wait: None,
                reject: false,
                max_server_wait: DEFAULT_MAX_SERVER_WAIT,
                fail_closed: false,
                fallbacks: AtomicU64::new(0),
                check: Script::new(CHECK),
                close: Script::new(CLOSE),
            }),
            local: ThrottleLayer::new(),
        }
    }

    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|s| Shared {
            store: s.store.clone(),
            max_wait: s.max_wait,
            reject: s.reject,
            max_server_wait: s.max_server_wait,
            fail_closed: s.fail_closed,
            fallbacks: AtomicU64::new(s.fallbacks.load(Ordering::Relaxed)),
            check: s.check.clone(),
            close: s.close.clone(),
        });
        change(&mut shared);
        Self {
            shared: Arc::new(shared),
            local: self.local,
        }
    }

    /// The in-process gate that runs beside the shared one (configure its
    /// own `max_wait`, `reject`, pacing and jitter there).
    ///
    /// Default: `ThrottleLayer::new()`.
    #[must_use]
    pub fn local(mut self, local: ThrottleLayer) -> Self {
        self.local = local;
        self
    }

    /// The longest a call waits at the shared gate; past it, the call fails
    /// with [`Throttled`] without waiting. `None` leaves only the call's
    /// deadline as the bound.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn max_wait(self, max_wait: impl Into<Option<Duration>>) -> Self {
        let max_wait = max_wait.into();
        self.with(|s| s.max_wait = max_wait)
    }

    /// Fail a call with [`Throttled`] at once while the shared gate is
    /// closed.
    ///
    /// Default: wait.
    #[must_use]
    pub fn reject(self) -> Self {
        self.with(|s| s.reject = true)
    }

    /// The longest a server can close the shared gate for; longer waits are
    /// cut to it.
    ///
    /// Default: [`DEFAULT_MAX_SERVER_WAIT`] (one hour).
    #[must_use]
    pub fn max_server_wait(self, max: Duration) -> Self {
        self.with(|s| s.max_server_wait = max)
    }

    /// While Redis is unreachable, fail every call with
    /// [`RedisUnavailable`](crate::RedisUnavailable), sending nothing.
    ///
    /// Default: fail open (only the local gate holds calls).
    #[must_use]
    pub fn fail_closed(self) -> Self {
        self.with(|s| s.fail_closed = true)
    }

    /// While Redis is unreachable, go on with the local gate only.
    ///
    /// Default: this.
    #[must_use]
    pub fn fail_open(self) -> Self {
        self.with(|s| s.fail_closed = false)
    }

    /// How many calls were decided by the fallback because Redis did not
    /// answer.
    #[must_use]
    pub fn fallback_decisions(&self) -> u64 {
        self.shared.fallbacks.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RedisThrottleLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottleLayer")
            .field("store", &self.shared.store)
            .field("max_wait", &self.shared.max_wait)
            .field("reject", &self.shared.reject)
            .field("max_server_wait", &self.shared.max_server_wait)
            .field("fail_closed", &self.shared.fail_closed)
            .field("local", &self.local)
            .finish()
    }
}

impl<S> Layer<S> for RedisThrottleLayer {
    type Service = RedisThrottle<S>;

    fn layer(&self, inner: S) -> RedisThrottle<S> {
        RedisThrottle {
            inner: self.local.layer(inner),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`RedisThrottleLayer`]: the shared gate around the
/// local [`Throttle`].
#[derive(Clone)]
pub struct RedisThrottle<S> {
    inner: Throttle<S>,
    shared: Arc<Shared>,
}

impl<S> RedisThrottle<S> {
    /// The local throttle this wraps.
    pub fn get_ref(&self) -> &Throttle<S> {
        &self.inner
    }

    /// The local throttle this wraps, mutably.
    pub fn get_mut(&mut self) -> &mut Throttle<S> {
        &mut self.inner
    }

    /// Unwraps the local throttle.
    pub fn into_inner(self) -> Throttle<S> {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for RedisThrottle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottle")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RedisThrottle<S>
where
    Throttle<S>: Service<Request<ReqB>, Response = Response<ResB>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    <Throttle<S> as Service<Request<ReqB>>>::Future: Send,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = RedisFuture<Response<ResB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let latest = shared.latest(now, req.extensions());
        let key = shared.store.key("gate", &authority_of(&req));
        let mut req = req;
        req.extensions_mut().insert(SharedGate {
            shared: Arc::clone(&shared),
            key: key.clone(),
        });
        // NOTE: `self.inner` is the service that was driven ready; it goes
        // into the future and a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        RedisFuture::new(async move {
            match shared
                .store
                .run::<i64>(&shared.check, &[&key], &[0u8; 0])
                .await
            {
                Ok(ms) if ms > 0 => {
                    let wait = Duration::from_millis(ms.unsigned_abs());
                    let until = now
                        .checked_add(wait)
                        .unwrap_or_else(|| parapet_core::far_future(now));
                    if latest.is_some_and(|latest| until > latest) {
                        return Err(Throttled::shared(until, now).into());
                    }
                    tokio::time::sleep_until(until).await;
                }
                Ok(_) => {}
                Err(unavailable) => {
                    shared.fallbacks.fetch_add(1, Ordering::Relaxed);
                    if shared.fail_closed {
                        return Err(unavailable.into());
                    }
                }
            }
            let res = svc.call(req).await?;
            if let Some(wait) = server_wait(res.status(), res.headers()) {
                let ms = wait.min(shared.max_server_wait).as_millis().max(1);
                let ms = i64::try_from(ms).unwrap_or(i64::MAX);
                // NOTE: a failure is logged by the store; the response is
                // the caller's either way, and the local gate has it.
                let _ = shared.store.run::<i64>(&shared.close, &[&key], &[ms]).await;
            }
            Ok(res)
        })
    }
}

/// The shared gate of a request's authority, in its extensions for a
/// [`RedisRateLimit`](crate::RedisRateLimit) beneath to check again after
/// waiting for its slot.
#[derive(Clone)]
pub(crate) struct SharedGate {
    shared: Arc<Shared>,
    key: String,
}

impl SharedGate {
    /// Waits while the gate is closed, if it opens by `latest`; returns
    /// whether it waited.
    pub(crate) async fn wait_out(&self, latest: Option<Instant>) -> Result<bool, BoxError> {
        let shared = &self.shared;
        // NOTE: Redis not answering was the throttle's to decide; here the
        // call goes on.
        let Ok(ms) = shared
            .store
            .run::<i64>(&shared.check, &[&self.key], &[0u8; 0])
            .await
        else {
            return Ok(false);
        };
        if ms <= 0 {
            return Ok(false);
        }
        let now = Instant::now();
        let until = now
            .checked_add(Duration::from_millis(ms.unsigned_abs()))
            .unwrap_or_else(|| parapet_core::far_future(now));
        if latest.is_some_and(|latest| until > latest) {
            return Err(Throttled::shared(until, now).into());
        }
        tokio::time::sleep_until(until).await;
        Ok(true)
    }
}

impl fmt::Debug for SharedGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedGate")
            .field("key", &self.key)
            .finish()
    }
}

impl Shared {
    /// The latest instant a call arriving at `now` may go, or `None`.
    fn latest(&self, now: Instant, ext: &http::Extensions) -> Option<Instant> {
        if self.reject {
            return Some(now);
        }
        let own = self.max_wait.map(|w| {
            now.checked_add(w)
                .unwrap_or_else(|| parapet_core::far_future(now))
        });
        let deadline = Deadline::current(ext).map(Deadline::instant);
        match (own, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The "not before" a response asks for, if any: only a few responses
/// carry a signal, and the others are not parsed (nor the clock read).
fn server_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let may_carry = matches!(status.as_u16(), 403 | 429 | 503)
        || headers
            .keys()
            .any(|name| *name == X_RATELIMIT_REMAINING || *name == RATELIMIT);
    if !may_carry {
        return None;
    }
    ServerLimit::from_response(status, headers, SystemTime::now())?
        .wait()
        .filter(|w| !w.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_signal_closes_the_gate() {
        let mut headers = HeaderMap::new();
        assert_eq!(server_wait(StatusCode::OK, &headers), None);
        assert_eq!(server_wait(StatusCode::TOO_MANY_REQUESTS, &headers), None);
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            server_wait(StatusCode::TOO_MANY_REQUESTS, &headers),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            server_wait(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Some(Duration::from_secs(2))
        );
    }
}
