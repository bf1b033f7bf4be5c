//! [`RedisTokenProvider`]: one token fetch for the whole fleet.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parapet_auth::{ProvideToken, Token, TokenError, TokenFuture};
use redis::{Script, Value};
use tokio::time::Instant;

use crate::error::RedisUnavailable;
use crate::store::RedisStore;

/// Default [`RedisTokenProvider::lease`]: 10 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default [`RedisTokenProvider::poll_every`]: 25 ms.
pub const DEFAULT_POLL_EVERY: Duration = Duration::from_millis(25);

/// Hands out the shared token, or decides who fetches.
///
/// KEYS: the token (a hash: `token`, `gen`), the lease. ARGV: the generation
/// the caller no longer wants (0: none), the lease's length in ms, the
/// caller's lease id. Returns `{1, token, gen, ttl_ms}` (ttl -1: no
/// expiry) for a shared token to use, `{2}` when the caller holds the lease
/// and fetches, `{3}` when another holds it.
const CLAIM: &str = r"
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if gen ~= 0 and gen ~= tonumber(ARGV[1]) then
  return {1, redis.call('HGET', KEYS[1], 'token'), gen, redis.call('PTTL', KEYS[1])}
end
if gen ~= 0 then redis.call('DEL', KEYS[1]) end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}
";

/// Publishes a fetched token as the next generation and gives up the
/// lease. KEYS: the token, the lease, the generation counter. ARGV: the
/// token, its lifetime in ms (0: none), the lease id. Returns the
/// generation.
const PUBLISH: &str = r"
local gen = redis.call('INCR', KEYS[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'gen', gen)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return gen
";

/// Gives up the lease (after a failed fetch). KEYS: the lease. ARGV: the
/// lease id.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// A [`ProvideToken`] that shares one token among every process using the
/// same Redis and name: wrap the real provider (a
/// [`ClientCredentialsGrant`](parapet_auth::ClientCredentialsGrant), say)
/// in it, and the [`TokenCache`](parapet_auth::TokenCache) of each process
/// around that.
///
/// When a process's cache needs a token, this hands it the shared one from
/// Redis if there is one it has not already been handed; otherwise one
/// process takes a lease (`SET NX PX`, [`lease`](Self::lease)) and fetches
/// from the real provider while the others wait for its token (checking
/// every [`poll_every`](Self::poll_every)), or take the lease and fetch
/// themselves once it has expired (the fetch failed or its process died).
/// So any number of processes and callers at expiry cause one token
/// request.
///
/// The token is stored with its expiry (the key expires with it, on
/// Redis's clock) and a generation number. A process's cache asks again
/// for the token it was handed when a 401 refused it or when it is about
/// to expire: that generation, and only that one, is then dropped for the
/// whole fleet and the next fetched (a newer generation published
/// meanwhile is handed out instead). Each process's cache keeps its own
/// refresh margin, re-auth cool-down and fetch timeout.
///
/// The token is in Redis in the clear: protect it as you protect the
/// token (`AUTH`/ACL, TLS, a private network). It is never logged, and
/// `Debug` shows no token.
///
/// While Redis is unreachable each process fetches for itself from the
/// real provider (failing open: a token is worth more than a fetch saved).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use parapet_auth::{provider_fn, TokenCache, Token, TokenError};
/// use parapet_redis::{RedisStore, RedisTokenProvider};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let server = parapet_redis::test_support::RedisServer::start().await.unwrap();
/// # let url = server.url();
/// let fetches = Arc::new(AtomicUsize::new(0));
/// let cache = |fetches: Arc<AtomicUsize>| {
///     // The identity provider (a ClientCredentialsGrant in real life).
///     let idp = provider_fn(move || {
///         let n = fetches.fetch_add(1, Ordering::SeqCst);
///         async move { Ok::<_, TokenError>(Token::new(format!("t{n}")).with_expires_in(Duration::from_secs(300))) }
///     });
///     let store = RedisStore::open(url.as_str()).unwrap();
///     TokenCache::new(RedisTokenProvider::new(store, "idp", idp))
/// };
/// // Two processes: one token request.
/// let (a, b) = (cache(fetches.clone()), cache(fetches.clone()));
/// assert_eq!(a.token().await.unwrap().secret().expose(), "t0");
/// assert_eq!(b.token().await.unwrap().secret().expose(), "t0");
/// assert_eq!(fetches.load(Ordering::SeqCst), 1);
/// # }
/// ```
pub struct RedisTokenProvider<P> {
    store: RedisStore,
    provider: P,
    token_key: String,
    lease_key: String,
    gen_key: String,
    lease: Duration,
    poll_every: Duration,
    /// The generation this process was last handed (0: none).
    last: Mutex<i64>,
    fetches: AtomicU64,
    fallbacks: AtomicU64,
    claim: Script,
    publish: Script,
    release: Script,
}

impl<P: ProvideToken> RedisTokenProvider<P> {
    /// Shares the tokens of `provider` under `name` (with the store's key
    /// prefix) among every process that uses the same.
    pub fn new(store: RedisStore, name: &str, provider: P) -> Self {
        Self {
            token_key: store.key("token", name),
            lease_key: store.key("token-lease", name),
            gen_key: store.key("token-gen", name),
            store,
            provider,
            lease: DEFAULT_LEASE,
            poll_every: DEFAULT_POLL_EVERY,
            last: Mutex::new(0),
            fetches: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            claim: Script::new(CLAIM),
            publish: Script::new(PUBLISH),
            release: Script::new(RELEASE),
        }
    }

    /// How long a process that fetches holds the lease; the others fetch
    /// themselves once it expires without a token (keep it above the
    /// provider's slowest fetch).
    ///
    /// Default: [`DEFAULT_LEASE`] (10 s).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// How often a process waiting for another's fetch checks for the
    /// token.
    ///
    /// Default: [`DEFAULT_POLL_EVERY`] (25 ms).
    #[must_use]
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    /// How many tokens this process fetched from the real provider (for
    /// the fleet, while Redis answered; for itself, while it did not).
    #[must_use]
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many of those were fetched without Redis (it did not answer).
    #[must_use]
    pub fn fallback_fetches(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn last(&self) -> i64 {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_last(&self, generation: i64) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = generation;
    }

    async fn fetch_shared(&self) -> Result<Token, TokenError> {
        let lease_ms = crate::ratelimit::micros(self.lease) / 1000;
        let id = parapet_core::random_u64().to_string();
        loop {
            let stale = self.last().to_string();
            let answer = self
                .store
                .run::<Value>(
                    &self.claim,
                    &[&self.token_key, &self.lease_key],
                    &[&stale, &lease_ms.max(1).to_string(), &id],
                )
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(unavailable) => return self.fetch_alone(&unavailable).await,
            };
            match Claim::from(answer) {
                Claim::Shared {
                    token,
                    generation,
                    ttl_ms,
                } => {
                    self.set_last(generation);
                    let token = Token::new(token);
                    return Ok(match ttl_ms {
                        Some(ms) => token.with_expires_in(Duration::from_millis(ms)),
                        None => token,
                    });
                }
                Claim::Lease => return self.fetch_leader(&id).await,
                Claim::Wait => tokio::time::sleep(self.poll_every).await,
            }
        }
    }

    /// Holding the lease: fetches, publishes, gives the lease up.
    async fn fetch_leader(&self, id: &str) -> Result<Token, TokenError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let token = match self.provider.fetch_token().await {
            Ok(token) => token,
            Err(err) => {
                let _ = self
                    .store
                    .run::<i64>(&self.release, &[&self.lease_key], &[id])
                    .await;
                return Err(err);
            }
        };
        let ttl_ms = token.expires_at().map_or(0, |at| {
            let left = at.saturating_duration_since(Instant::now());
            i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1)
        });
        let published = self
            .store
            .run::<i64>(
                &self.publish,
                &[&self.token_key, &self.lease_key, &self.gen_key],
                &[token.secret().expose(), &ttl_ms.to_string(), id],
            )
            .await;
        // NOTE: when publishing fails the others fetch once the lease
        // expires; this process keeps its token either way.
        if let Ok(generation) = published {
            self.set_last(generation);
        }
        Ok(token)
    }

    /// Redis did not answer: fetch for this process only.
    async fn fetch_alone(&self, _why: &RedisUnavailable) -> Result<Token, TokenError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.set_last(0);
        self.provider.fetch_token().await
    }
}

/// What the claim script said.
enum Claim {
    Shared {
        token: String,
        generation: i64,
        ttl_ms: Option<u64>,
    },
    Lease,
    Wait,
}

impl From<Value> for Claim {
    fn from(value: Value) -> Self {
        let Value::Array(items) = value else {
            return Self::Wait;
        };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        match int(items.first()) {
            Some(1) => {
                let token = match items.get(1) {
                    Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
                    _ => None,
                };
                match (token, int(items.get(2))) {
                    (Some(token), Some(generation)) => Self::Shared {
                        token,
                        generation,
                        ttl_ms: int(items.get(3)).and_then(|ms| u64::try_from(ms).ok()),
                    },
                    // A malformed entry: the lease decides who replaces it.
                    _ => Self::Wait,
                }
            }
            Some(2) => Self::Lease,
            _ => Self::Wait,
        }
    }
}

impl<P: ProvideToken> ProvideToken for RedisTokenProvider<P> {
    fn fetch_token(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch_shared())
    }
}

impl<P> fmt::Debug for RedisTokenProvider<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenProvider")
            .field("store", &self.store)
            .field("key", &self.token_key)
            .field("lease", &self.lease)
            .field("poll_every", &self.poll_every)
            .finish_non_exhaustive()
    }
}
