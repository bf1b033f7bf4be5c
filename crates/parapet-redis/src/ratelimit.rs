//! [`RedisRateLimitLayer`]: one GCRA per key, in Redis, shared by every
//! process.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use parapet_core::{BoxError, Deadline};
use parapet_ratelimit::{Quota, RateLimitLayer, RateLimited};
use redis::Script;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::authority_of;
use crate::store::RedisStore;
use crate::throttle::SharedGate;

/// The GCRA decision, atomically, on Redis's clock (microseconds).
///
/// KEYS[1]: the bucket's theoretical arrival time. ARGV: the interval, the
/// burst tolerance (`(burst - 1) × interval`) and the longest the call may
/// wait. Returns `{1, wait}` when the call takes the slot `wait` from now
/// (0: at once), `{0, wait}` when that slot is further than it may wait
/// (nothing taken).
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local wait = tat - tau - now
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, wait} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 1000)
return {1, wait}
";

/// "No bound" for the script's `max_wait`.
const UNBOUNDED_US: i64 = 1 << 60;

/// What a Redis-backed layer does while Redis is unreachable, slow or
/// failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Fail every call with [`RedisUnavailable`](crate::RedisUnavailable)
    /// (nothing is sent): the shared limit is never exceeded, at the price
    /// of the calls.
    Closed,
    /// Go on without Redis: the rate limit runs a local limiter at the
    /// quota divided by `replicas` (so the fleet of `replicas` processes
    /// stays within the quota), the throttle keeps its local gate only.
    Open {
        /// How many processes share the quota.
        replicas: NonZeroU32,
    },
}

/// Applies one [`Quota`] to the calls of every process that uses the same
/// Redis, key prefix and key: a GCRA whose state (the key's theoretical
/// arrival time) lives in Redis.
///
/// Each decision is one Lua script run atomically by Redis, on Redis's own
/// clock (`TIME`), so the processes' clocks do not matter; the script is
/// sent by its hash and loaded again when Redis says it does not know it
/// (after a restart or a failover). A call that may go takes its slot, and
/// waits inside its response future until that slot comes (a reservation:
/// calls go in the order Redis decided them); one whose slot is further
/// away than [`max_wait`](Self::max_wait) or its
/// [`Deadline`](parapet_core::Deadline) fails at once with
/// [`RateLimited`], taking nothing. Beneath a [`RedisThrottleLayer`](crate::RedisThrottleLayer),
/// a call that waited for its slot checks the shared gate once more before
/// it goes (a server may have closed it meanwhile), waits it out and takes
/// a new slot. In [`reject`](Self::reject) mode every
/// call that would have to wait fails. A waiting call that is dropped has
/// used its slot (the fleet under-admits by that call, never over-admits).
///
/// While Redis is unreachable or slower than the store's call timeout the
/// layer takes its [`Fallback`]: by default [`Fallback::Closed`] (calls fail
/// with [`RedisUnavailable`](crate::RedisUnavailable)); with
/// [`fail_open`](Self::fail_open), a local [`RateLimitLayer`] at the quota
/// divided by the number of replicas. Shared limiting resumes as soon as
/// Redis answers again (see [`RedisStore`]).
///
/// Put it where the local [`RateLimitLayer`] goes (inside retry and auth,
/// outside the concurrency limit); `parapet::ClientBuilder::rate_limit`
/// takes only the local layer, so a stack with this one is built by hand.
///
/// ```
/// use std::num::NonZeroU32;
/// use parapet_core::BoxError;
/// use parapet_ratelimit::Quota;
/// use parapet_redis::{RedisRateLimitLayer, RedisStore};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let server = parapet_redis::test_support::RedisServer::start().await.unwrap();
/// # let url = server.url();
/// let store = RedisStore::open(url.as_str()).unwrap();
/// // 100 calls per second per host, for the whole fleet of 4 replicas; a
/// // replica that cannot reach Redis allows itself 25 per second.
/// let quota = Quota::per_second(NonZeroU32::new(100).unwrap());
/// let layer = RedisRateLimitLayer::per_authority(store, quota)
///     .fail_open(NonZeroU32::new(4).unwrap());
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, BoxError>("ok") });
///
/// let req = http::Request::get("https://api.example.com/").body(()).unwrap();
/// assert_eq!(svc.oneshot(req).await.unwrap(), "ok");
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimitLayer {
    shared: Arc<Shared>,
}

struct Shared {
    store: RedisStore,
    quota: Quota,
    /// `Some(key)`: one bucket for every call; `None`: one per authority.
    key: Option<String>,
    interval_us: i64,
    tau_us: i64,
    max_wait: Option<Duration>,
    reject: bool,
    fallback: Fallback,
    /// The local limiter of `Fallback::Open`.
    local: Option<RateLimitLayer>,
    fallbacks: AtomicU64,
    script: Script,
}

impl RedisRateLimitLayer {
    /// One bucket for every call of every process that uses `name` (with
    /// the same store key prefix).
    #[must_use]
    pub fn new(store: RedisStore, name: &str, quota: Quota) -> Self {
        let key = store.key("rl", name);
        Self::build(store, quota, Some(key))
    }

    /// One bucket per authority (scheme, host and port of the request URI,
    /// or its `Host` header when the URI is relative), shared by every
    /// process.
    #[must_use]
    pub fn per_authority(store: RedisStore, quota: Quota) -> Self {
        Self::build(store, quota, None)
    }

    fn build(store: RedisStore, quota: Quota, key: Option<String>) -> Self {
        let interval_us = micros(quota.interval()).max(1);
        let tau_us = interval_us.saturating_mul(i64::from(quota.burst_size().get() - 1));
        Self {
            shared: Arc::new(Shared {
                store,
                quota,
                key,
                interval_us,
                tau_us,
                max_wait: None,
                reject: false,
                fallback: Fallback::Closed,
                local: None,
                fallbacks: AtomicU64::new(0),
                script: Script::new(GCRA),
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|s| s.duplicate());
        change(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The longest a call waits for its slot; past it, the call fails with
    /// [`RateLimited`] without waiting. `None` leaves only the call's
    /// deadline as the bound.
    ///
    /// Default: `None`.
    #[must_use]
    pub fn max_wait(self, max_wait: impl Into<Option<Duration>>) -> Self {
        let max_wait = max_wait.into();
        self.with(|s| {
            s.max_wait = max_wait;
            s.local = s.local.take().map(|l| l.max_wait(max_wait));
        })
    }

    /// Fail a call with [`RateLimited`] at once when it would have to wait
    /// (load shedding).
    ///
    /// Default: wait.
    #[must_use]
    pub fn reject(self) -> Self {
        self.with(|s| {
            s.reject = true;
            s.local = s.local.take().map(RateLimitLayer::reject);
        })
    }

    /// While Redis is unreachable, limit locally at the quota divided by
    /// `replicas` (the interval times `replicas`, the burst divided by it,
    /// at least 1), per authority or for every call as the shared limit is.
    ///
    /// Default: fail closed ([`Fallback::Closed`]).
    #[must_use]
    pub fn fail_open(self, replicas: NonZeroU32) -> Self {
        self.with(|s| {
            s.fallback = Fallback::Open { replicas };
            let local = divided(s.quota, replicas);
            let layer = if s.key.is_some() {
                RateLimitLayer::new(local)
            } else {
                RateLimitLayer::per_authority(local)
            };
            s.local = Some(s.local_wait(layer));
        })
    }

    /// While Redis is unreachable, fail every call with
    /// [`RedisUnavailable`](crate::RedisUnavailable), sending nothing.
    ///
    /// Default: this.
    #[must_use]
    pub fn fail_closed(self) -> Self {
        self.with(|s| {
            s.fallback = Fallback::Closed;
            s.local = None;
        })
    }

    /// The quota this layer applies across the fleet.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.shared.quota
    }

    /// The declared fallback.
    #[must_use]
    pub fn fallback(&self) -> Fallback {
        self.shared.fallback
    }

    /// How many calls were decided by the fallback (failed closed or
    /// limited locally) because Redis did not answer.
    #[must_use]
    pub fn fallback_decisions(&self) -> u64 {
        self.shared.fallbacks.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// A copy with its own fallback counter (a layer reconfigured after it
    /// was cloned).
    fn duplicate(&self) -> Self {
        Self {
            store: self.store.clone(),
            quota: self.quota,
            key: self.key.clone(),
            interval_us: self.interval_us,
            tau_us: self.tau_us,
            max_wait: self.max_wait,
            reject: self.reject,
            fallback: self.fallback,
            local: self.local.clone(),
            fallbacks: AtomicU64::new(self.fallbacks.load(Ordering::Relaxed)),
            script: self.script.clone(),
        }
    }

    fn local_wait(&self, layer: RateLimitLayer) -> RateLimitLayer {
        let layer = layer.max_wait(self.max_wait);
        if self.reject { layer.reject() } else { layer }
    }

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

/// The quota divided among `replicas`.
fn divided(quota: Quota, replicas: NonZeroU32) -> Quota {
    let interval = quota.interval().saturating_mul(replicas.get());
    let burst =
        NonZeroU32::new(quota.burst_size().get() / replicas.get()).unwrap_or(NonZeroU32::MIN);
    Quota::every(interval).map_or(quota, |q| q.burst(burst))
}

/// Whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl fmt::Debug for RedisRateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("RedisRateLimitLayer")
            .field("store", &s.store)
            .field("quota", &s.quota)
            .field("per_authority", &s.key.is_none())
            .field("max_wait", &s.max_wait)
            .field("reject", &s.reject)
            .field("fallback", &s.fallback)
            .finish()
    }
}

impl<S> Layer<S> for RedisRateLimitLayer {
    type Service = RedisRateLimit<S>;

    fn layer(&self, inner: S) -> RedisRateLimit<S> {
        RedisRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RedisRateLimitLayer`].
#[derive(Clone)]
pub struct RedisRateLimit<S> {
    inner: S,
    layer: RedisRateLimitLayer,
}

impl<S> RedisRateLimit<S> {
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
}

impl<S: fmt::Debug> fmt::Debug for RedisRateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimit")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The response future of [`RedisRateLimit`] and
/// [`RedisThrottle`](crate::RedisThrottle): the Redis round trip, the wait
/// and the inner call, boxed (a Redis call costs far more than the box).
pub struct RedisFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
}

impl<T> RedisFuture<T> {
    pub(crate) fn new(fut: impl Future<Output = Result<T, BoxError>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(fut),
        }
    }
}

impl<T> Future for RedisFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for RedisFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFuture").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RedisRateLimit<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RedisFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let shared = Arc::clone(&self.layer.shared);
        let latest = shared.latest(start, req.extensions());
        let key = match &shared.key {
            Some(key) => key.clone(),
            None => shared.store.key("rl", &authority_of(&req)),
        };
        let gate = req.extensions().get::<SharedGate>().cloned();
        // NOTE: `self.inner` is the service that was driven ready; it goes
        // into the future and a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        RedisFuture::new(async move {
            let mut now = start;
            loop {
                let max_wait_us =
                    latest.map_or(UNBOUNDED_US, |l| micros(l.saturating_duration_since(now)));
                let args = [shared.interval_us, shared.tau_us, max_wait_us];
                let decision = shared
                    .store
                    .run::<(i64, i64)>(&shared.script, &[&key], &args)
                    .await;
                match decision {
                    Ok((1, wait_us)) => {
                        if wait_us > 0 {
                            tokio::time::sleep(Duration::from_micros(wait_us.unsigned_abs())).await;
                            // A server may have closed the shared gate while
                            // this call waited for its slot: wait that out
                            // too, then take a new slot.
                            if let Some(gate) = &gate {
                                if gate.wait_out(latest).await? {
                                    now = Instant::now();
                                    continue;
                                }
                            }
                        }
                        return svc.call(req).await.map_err(Into::into);
                    }
                    Ok((_, wait_us)) => {
                        let wait = Duration::from_micros(wait_us.unsigned_abs());
                        let earliest = now
                            .checked_add(wait)
                            .unwrap_or_else(|| parapet_core::far_future(now));
                        return Err(RateLimited::shared(earliest, now).into());
                    }
                    Err(unavailable) => {
                        shared.fallbacks.fetch_add(1, Ordering::Relaxed);
                        return match &shared.local {
                            Some(local) => local.layer(svc).call(req).await,
                            None => Err(unavailable.into()),
                        };
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_quota_is_the_quota_divided_among_replicas() {
        let quota =
            Quota::per_second(NonZeroU32::new(200).unwrap()).burst(NonZeroU32::new(8).unwrap());
        let local = divided(quota, NonZeroU32::new(4).unwrap());
        assert_eq!(local.interval(), Duration::from_millis(20));
        assert_eq!(local.burst_size().get(), 2);
        let local = divided(quota, NonZeroU32::new(20).unwrap());
        assert_eq!(local.interval(), Duration::from_millis(100));
        assert_eq!(local.burst_size(), NonZeroU32::MIN);
    }
}
