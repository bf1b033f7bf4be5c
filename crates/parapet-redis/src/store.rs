//! [`RedisStore`]: the connection every Redis-backed layer shares, the
//! timeout on each call, and whether Redis is reachable.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, FromRedisValue, IntoConnectionInfo, Script, ToRedisArgs};
use tokio::time::Instant;

use crate::error::RedisUnavailable;

/// The default bound on one Redis call ([`RedisStore::call_timeout`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// The default time between probes while Redis is unreachable
/// ([`RedisStore::probe_every`]).
pub const DEFAULT_PROBE_EVERY: Duration = Duration::from_millis(500);

/// The default prefix of every key ([`RedisStore::key_prefix`]).
pub const DEFAULT_KEY_PREFIX: &str = "parapet:";

/// A Redis connection shared by the layers of a process, with a short
/// timeout on every call and a record of whether Redis answers.
///
/// It wraps the `redis` crate's reconnecting `ConnectionManager` (one
/// multiplexed connection, reconnected in the background after a failure).
/// Every call is bounded by [`call_timeout`](Self::call_timeout); a call that
/// fails or times out marks Redis unreachable (logged once, at `warn`), and
/// from then on the layers skip Redis and take their declared fallback at
/// once, while one call every [`probe_every`](Self::probe_every) tries Redis
/// again; the first that succeeds marks it reachable (logged once, at
/// `info`). So while Redis is down no call waits on it more than one call
/// timeout, and most do not wait at all.
///
/// Clones share the connection and that record.
///
/// ```
/// use std::time::Duration;
/// use parapet_redis::RedisStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let server = parapet_redis::test_support::RedisServer::start().await.unwrap();
/// # let url = server.url();
/// // "redis://127.0.0.1:6379/", "rediss://…" (TLS), "redis://:password@host/"…
/// let store = RedisStore::open(url.as_str())
///     .unwrap()
///     .call_timeout(Duration::from_millis(20))
///     .key_prefix("billing:");
/// assert!(store.is_available());
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    shared: Arc<Health>,
    call_timeout: Duration,
    probe_every: Duration,
    prefix: Arc<str>,
}

/// Whether Redis answers, shared by every clone.
#[derive(Debug)]
struct Health {
    down: AtomicBool,
    /// While down: nanoseconds since `epoch` before which nobody probes.
    next_probe: AtomicU64,
    outages: AtomicU64,
    epoch: Instant,
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://[user][:password@]host[:port][/db]`,
    /// `rediss://` for TLS when the `redis` crate's TLS feature is on, or
    /// `redis+unix:///path`). Nothing is connected yet: the first call
    /// connects, and a Redis that is down at start is handled like one that
    /// went down later.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// The URL does not parse.
    pub fn open(url: impl IntoConnectionInfo) -> Result<Self, RedisUnavailable> {
        let client = Client::open(url).map_err(RedisUnavailable::from_redis)?;
        Self::from_client(client)
    }

    /// A store over an existing `redis::Client` (for settings a URL cannot
    /// say: TLS certificates, credentials providers).
    ///
    /// # Errors
    ///
    /// The connection manager refused the client's settings.
    pub fn from_client(client: Client) -> Result<Self, RedisUnavailable> {
        // NOTE: each call has its own, shorter timeout (`run`); these only
        // bound what the manager does in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(RedisUnavailable::from_redis)?;
        Ok(Self {
            conn,
            shared: Arc::new(Health {
                down: AtomicBool::new(false),
                next_probe: AtomicU64::new(0),
                outages: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            probe_every: DEFAULT_PROBE_EVERY,
            prefix: Arc::from(DEFAULT_KEY_PREFIX),
        })
    }

    /// The bound on each Redis call, connecting included; past it the call
    /// counts as failed and the layer takes its fallback.
    ///
    /// Default: [`DEFAULT_CALL_TIMEOUT`] (50 ms).
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// While Redis is unreachable, how often one call tries it again.
    ///
    /// Default: [`DEFAULT_PROBE_EVERY`] (500 ms).
    #[must_use]
    pub fn probe_every(mut self, every: Duration) -> Self {
        self.probe_every = every;
        self
    }

    /// The prefix of every key the layers write (so that several services
    /// or environments can share one Redis). Processes that share a limit
    /// must use the same prefix.
    ///
    /// Default: [`DEFAULT_KEY_PREFIX`] (`"parapet:"`).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl AsRef<str>) -> Self {
        self.prefix = Arc::from(prefix.as_ref());
        self
    }

    /// Whether the last call to Redis succeeded (or none failed yet).
    #[must_use]
    pub fn is_available(&self) -> bool {
        !self.shared.down.load(Ordering::Acquire)
    }

    /// How many times Redis went from reachable to unreachable.
    #[must_use]
    pub fn outages(&self) -> u64 {
        self.shared.outages.load(Ordering::Relaxed)
    }

    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + name.len() + 1);
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push(':');
        key.push_str(name);
        key
    }

    /// Whether this call should try Redis: always while it is reachable,
    /// and while it is not, only the one call per probe interval.
    fn should_try(&self) -> bool {
        if !self.shared.down.load(Ordering::Acquire) {
            return true;
        }
        let now = self.since_epoch();
        let next = self.shared.next_probe.load(Ordering::Acquire);
        now >= next
            && self
                .shared
                .next_probe
                .compare_exchange(
                    next,
                    now.saturating_add(nanos(self.probe_every)),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn since_epoch(&self) -> u64 {
        nanos(self.shared.epoch.elapsed())
    }

    fn succeeded(&self) {
        if self.shared.down.swap(false, Ordering::AcqRel) {
            tracing::info!(
                target: "parapet_redis",
                "redis is reachable again: shared limits resume"
            );
        }
    }

    fn failed(&self, err: &RedisUnavailable) {
        self.shared.next_probe.store(
            self.since_epoch().saturating_add(nanos(self.probe_every)),
            Ordering::Release,
        );
        if !self.shared.down.swap(true, Ordering::AcqRel) {
            self.shared.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "parapet_redis",
                error = %err,
                "redis is unreachable: the layers take their fallback until it answers again"
            );
        }
    }

    /// Runs `script` on `keys` and `args`, bounded by the call timeout;
    /// records whether Redis answered. While Redis is marked unreachable
    /// (and it is not this call's turn to probe) fails at once.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[impl ToRedisArgs],
    ) -> Result<T, RedisUnavailable> {
        if !self.should_try() {
            return Err(RedisUnavailable::skipped());
        }
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.conn.clone();
        let answer = tokio::time::timeout(self.call_timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisUnavailable::timed_out(self.call_timeout))
            .and_then(|r| r.map_err(RedisUnavailable::from_redis));
        match &answer {
            Ok(_) => self.succeeded(),
            Err(err) => self.failed(err),
        }
        answer
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("available", &self.is_available())
            .field("call_timeout", &self.call_timeout)
            .field("probe_every", &self.probe_every)
            .field("key_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
