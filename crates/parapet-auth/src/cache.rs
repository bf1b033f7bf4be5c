//! A token cache: one fetch for many callers, refreshed ahead of expiry.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use http::HeaderValue;
use parapet_core::Jitter;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::token::is_visible_ascii;
use crate::{ProvideToken, SecretString, Token, TokenError};

/// Default [`refresh_margin`](TokenCacheBuilder::refresh_margin): 30 s.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Default [`fetch_timeout`](TokenCacheBuilder::fetch_timeout): 10 s.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`reauth_cooldown`](TokenCacheBuilder::reauth_cooldown): 5 s.
pub const DEFAULT_REAUTH_COOLDOWN: Duration = Duration::from_secs(5);

/// A token as the cache hands it out: the ready-made `Authorization` value
/// and the generation that identifies it.
///
/// Cloning copies a reference count. `Debug` prints the generation and the
/// expiry, never the token.
#[derive(Clone)]
pub struct CachedToken(Arc<Entry>);

struct Entry {
    header: HeaderValue,
    secret: SecretString,
    generation: u64,
    expires_at: Option<Instant>,
    refresh_at: Option<Instant>,
    // For a token fetched because a 401 refused its predecessor: until
    // then, a 401 to it is returned as it is (no fetch, no re-send).
    reauth_from: Option<Instant>,
}

impl CachedToken {
    /// `Bearer <token>`, marked sensitive.
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0.header
    }

    /// The token itself.
    #[must_use]
    pub fn secret(&self) -> &SecretString {
        &self.0.secret
    }

    /// Which fetch produced this token: 1 for the first, then 2, 3... Used
    /// to invalidate exactly the token a request was sent with.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// When the token expires, if known.
    #[must_use]
    pub fn expires_at(&self) -> Option<Instant> {
        self.0.expires_at
    }

    /// When the cache starts fetching the next token, if the token expires.
    #[must_use]
    pub fn refresh_at(&self) -> Option<Instant> {
        self.0.refresh_at
    }

    fn is_valid(&self, now: Instant) -> bool {
        self.0.expires_at.is_none_or(|e| now < e)
    }

    fn wants_refresh(&self, now: Instant) -> bool {
        self.0.refresh_at.is_some_and(|r| now >= r)
    }

    fn in_reauth_cooldown(&self, now: Instant) -> bool {
        self.0.reauth_from.is_some_and(|t| now < t)
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("generation", &self.0.generation)
            .field("expires_at", &self.0.expires_at)
            .field("refresh_at", &self.0.refresh_at)
            .finish_non_exhaustive()
    }
}

/// Caches the tokens a [`ProvideToken`] yields and decides when to fetch
/// the next one.
///
/// - **Single flight.** However many callers find no valid token, one fetch
///   runs and they all get its answer.
/// - **Refresh ahead of expiry.** A token with an expiry is refreshed at
///   `expiry - margin`, the margin being
///   [`refresh_margin`](TokenCacheBuilder::refresh_margin) (30 s) clamped
///   to half the token's lifetime (so a 20 s token is refreshed after 10 s,
///   not never), plus up to a quarter more of jitter so that many clients do
///   not refresh in step. The caller that notices starts the fetch in the
///   background and goes on with the current token: nobody waits for a
///   refresh while a valid token exists.
/// - **Failures.** A fetch is bounded by
///   [`fetch_timeout`](TokenCacheBuilder::fetch_timeout) (10 s), which
///   covers its retries: a transient failure (timeout, transport error, 5xx,
///   429) is retried up to [`fetch_attempts`](TokenCacheBuilder::fetch_attempts)
///   (3) with exponential [`backoff`](TokenCacheBuilder::backoff). The
///   provider says what is transient: a [`RefreshTokenGrant`](crate::RefreshTokenGrant)
///   whose request may have reached the server unanswered reports it as
///   not transient (its refresh token may be spent), so it is not retried. A fetch
///   that failed in the end leaves a still-valid token in use and starts a
///   cool-down (the same backoff, growing with each failed fetch) during
///   which no new fetch starts; callers with no valid token get the last
///   error at once instead of hammering a failing token endpoint.
/// - **Invalidation.** [`invalidate`](Self::invalidate) drops the given token
///   only if it is still the current one, so a late 401 for an old token
///   never throws away a newer one.
/// - **Bounded re-auth.** When the [`AuthLayer`](crate::AuthLayer) gets a
///   401, the token is replaced and the request sent once more. A token
///   fetched that way that is refused too is not replaced again at once:
///   for [`reauth_cooldown`](TokenCacheBuilder::reauth_cooldown) (5 s, plus
///   up to half again of jitter) after its fetch, a 401 to it comes back to
///   the caller as it is, with no fetch and no re-send. An API that
///   refuses every token (a wrong audience, a clock skew, an outage of its
///   token validation) costs one token fetch per cool-down, not one per
///   call; a token revoked for real is still replaced by the first 401
///   after the cool-down.
/// - **Cheap reads.** A valid token is served under a briefly held read
///   lock, by cloning an `Arc`: no allocation, no await.
///
/// Fetches run on a spawned tokio task, so that a refresh outlives the
/// request that started it and a caller that gives up does not cancel the
/// fetch others wait for; the cache must be used within a tokio runtime.
/// `Clone` shares the cache.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use parapet_auth::{provider_fn, Token, TokenCache, TokenError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let fetches = Arc::new(AtomicUsize::new(0));
/// let counter = fetches.clone();
/// let cache = TokenCache::builder(provider_fn(move || {
///     let n = counter.fetch_add(1, Ordering::SeqCst);
///     async move { Ok::<_, TokenError>(Token::new(format!("token-{n}")).with_expires_in(Duration::from_secs(3600))) }
/// }))
/// .refresh_margin(Duration::from_secs(60))
/// .build();
///
/// let a = cache.token().await.unwrap();
/// let b = cache.token().await.unwrap();
/// assert_eq!(a.generation(), b.generation());
/// assert_eq!(fetches.load(Ordering::SeqCst), 1);
///
/// // The server said 401: drop that token; the next call fetches a new one.
/// assert!(cache.invalidate(&a));
/// assert_eq!(cache.token().await.unwrap().secret().expose(), "token-1");
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<dyn ProvideToken>,
    config: Config,
    state: RwLock<State>,
}

#[derive(Debug, Clone)]
struct Config {
    margin: Duration,
    fetch_timeout: Duration,
    attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    reauth_cooldown: Duration,
    jitter: Jitter,
}

type Outcome = Option<Result<CachedToken, TokenError>>;

#[derive(Default)]
struct State {
    current: Option<CachedToken>,
    generation: u64,
    fetch: Option<watch::Receiver<Outcome>>,
    fetch_id: u64,
    failures: u32,
    cooldown_until: Option<Instant>,
    last_error: Option<TokenError>,
    // A 401 invalidated the current token: the next token fetched gets a
    // re-auth cool-down.
    reauth_pending: bool,
    // `invalidate` dropped the current token (the server refused it): the
    // next fetch is a re-auth, for the metrics.
    #[cfg(feature = "metrics")]
    invalidated: bool,
}

impl State {
    /// What a fetch starting now is for, as the cache knows it.
    #[cfg(feature = "metrics")]
    fn fetch_kind(&self) -> crate::metrics::FetchKind {
        use crate::metrics::FetchKind;
        if self.reauth_pending || self.invalidated {
            FetchKind::Reauth
        } else if self.generation == 0 {
            FetchKind::Initial
        } else {
            FetchKind::Refresh
        }
    }

    fn in_cooldown(&self, now: Instant) -> bool {
        self.cooldown_until.is_some_and(|t| now < t)
    }

    fn may_fetch(&self, now: Instant) -> bool {
        self.fetch.is_none() && !self.in_cooldown(now)
    }
}

/// What a caller gets right away.
pub(crate) enum Acquire {
    Ready(CachedToken),
    Failed(TokenError),
    Wait(watch::Receiver<Outcome>),
}

/// Waiting for a fetch in flight (the slow path only).
pub(crate) type WaitFuture =
    Pin<Box<dyn Future<Output = Result<CachedToken, TokenError>> + Send + 'static>>;

/// Configures a [`TokenCache`]; made by [`TokenCache::builder`].
#[derive(Debug)]
#[must_use]
pub struct TokenCacheBuilder {
    provider: Arc<dyn ProvideToken>,
    config: Config,
}

impl fmt::Debug for dyn ProvideToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn ProvideToken")
    }
}

impl TokenCacheBuilder {
    /// How long before a token's expiry the next one is fetched; clamped to
    /// half of each token's lifetime, plus up to a quarter more of jitter.
    ///
    /// Default: 30 s.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.config.margin = margin;
        self
    }

    /// How long after a token was fetched because a 401 refused the one
    /// before it a 401 to that token too is returned as it is, without
    /// another fetch or re-send; spread up by as much as half again by
    /// jitter, so that many clients of one API do not fetch in step.
    /// `Duration::ZERO` replaces the token after every 401.
    ///
    /// The first 401 to a token always gets a fresh token and the one
    /// re-send (a revoked token recovers at once); only a token that was
    /// itself the answer to a 401 waits out the cool-down. Once it has
    /// passed, a 401 replaces that token as usual.
    ///
    /// Default: [`DEFAULT_REAUTH_COOLDOWN`] (5 s).
    pub fn reauth_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.reauth_cooldown = cooldown;
        self
    }

    /// The most time one fetch may take, its retries included; past it the
    /// waiting callers get a [`TokenError`] for which
    /// [`is_timeout`](TokenError::is_timeout) holds.
    ///
    /// Default: 10 s.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// How many times one fetch tries the provider when it fails
    /// transiently (at least 1).
    ///
    /// Default: 3.
    pub fn fetch_attempts(mut self, attempts: u32) -> Self {
        self.config.attempts = attempts.max(1);
        self
    }

    /// The backoff between the attempts of a fetch, and the cool-down after
    /// a fetch that failed: `base`, doubling each time up to `max`, then
    /// spread up by as much as half again by jitter.
    ///
    /// Default: 100 ms doubling to at most 5 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max.max(base);
        self
    }

    /// Where jitter comes from.
    ///
    /// Default: [`Jitter::random`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Builds the cache. No token is fetched until one is asked for.
    #[must_use]
    pub fn build(self) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                provider: self.provider,
                config: self.config,
                state: RwLock::new(State::default()),
            }),
        }
    }
}

impl TokenCache {
    /// A cache with the default settings around `provider`.
    pub fn new(provider: impl ProvideToken) -> Self {
        Self::builder(provider).build()
    }

    /// Starts configuring a cache around `provider`.
    pub fn builder(provider: impl ProvideToken) -> TokenCacheBuilder {
        Self::builder_dyn(Arc::new(provider))
    }

    /// Starts configuring a cache around a shared provider.
    pub fn builder_dyn(provider: Arc<dyn ProvideToken>) -> TokenCacheBuilder {
        TokenCacheBuilder {
            provider,
            config: Config {
                margin: DEFAULT_REFRESH_MARGIN,
                fetch_timeout: DEFAULT_FETCH_TIMEOUT,
                attempts: 3,
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
                reauth_cooldown: DEFAULT_REAUTH_COOLDOWN,
                jitter: Jitter::random(),
            },
        }
    }

    /// A valid token: the cached one, or the answer of the fetch this call
    /// starts or joins.
    ///
    /// # Errors
    ///
    /// The [`TokenError`] of the fetch, or, during the cool-down after a
    /// failed fetch, that fetch's error.
    pub async fn token(&self) -> Result<CachedToken, TokenError> {
        match self.acquire() {
            Acquire::Ready(t) => Ok(t),
            Acquire::Failed(e) => Err(e),
            Acquire::Wait(rx) => wait(rx).await,
        }
    }

    /// The cached token if it is still valid, without fetching.
    #[must_use]
    pub fn current(&self) -> Option<CachedToken> {
        let now = Instant::now();
        read(&self.inner.state)
            .current
            .as_ref()
            .filter(|t| t.is_valid(now))
            .cloned()
    }

    /// Drops `used` if it is still the current token (the server rejected
    /// it); returns whether it was. A newer token fetched meanwhile is kept.
    ///
    /// An explicit call, so the [re-auth
    /// cool-down](TokenCacheBuilder::reauth_cooldown) that bounds the
    /// layer's own re-auth after a 401 does not apply.
    pub fn invalidate(&self, used: &CachedToken) -> bool {
        let mut st = write(&self.inner.state);
        if st
            .current
            .as_ref()
            .is_some_and(|c| c.generation() == used.generation())
        {
            st.current = None;
            #[cfg(feature = "metrics")]
            {
                st.invalidated = true;
            }
            tracing::debug!(
                generation = used.generation(),
                "token invalidated after the server rejected it"
            );
            true
        } else {
            false
        }
    }

    /// After a 401 to `used`: the token to send the request again with
    /// (a newer one, or the answer of a fetch this starts or joins), or
    /// `None` when `used` is current and still in its re-auth cool-down
    /// (the 401 is to be returned).
    pub(crate) fn reauth(&self, used: &CachedToken) -> Option<Acquire> {
        let now = Instant::now();
        {
            let mut st = write(&self.inner.state);
            if let Some(cur) = &st.current {
                if cur.generation() == used.generation() {
                    if cur.in_reauth_cooldown(now) {
                        return None;
                    }
                    st.current = None;
                    st.reauth_pending = true;
                    tracing::debug!(
                        generation = used.generation(),
                        "token invalidated after the server rejected it"
                    );
                }
            }
        }
        Some(self.acquire())
    }

    pub(crate) fn acquire(&self) -> Acquire {
        let now = Instant::now();
        {
            let st = read(&self.inner.state);
            if let Some(cur) = &st.current {
                if cur.is_valid(now) && !(cur.wants_refresh(now) && st.may_fetch(now)) {
                    return Acquire::Ready(cur.clone());
                }
            }
        }
        let mut st = write(&self.inner.state);
        if let Some(cur) = st.current.as_ref().filter(|c| c.is_valid(now)).cloned() {
            if cur.wants_refresh(now) && st.may_fetch(now) {
                tracing::debug!(
                    generation = cur.generation(),
                    "refreshing the token ahead of its expiry"
                );
                // The current token stays in use; a failure to start is
                // retried by the next caller.
                let _ = self.start_fetch(&mut st);
            }
            return Acquire::Ready(cur);
        }
        if let Some(rx) = &st.fetch {
            return Acquire::Wait(rx.clone());
        }
        if st.in_cooldown(now) {
            return Acquire::Failed(st.last_error.clone().unwrap_or_else(TokenError::closed));
        }
        match self.start_fetch(&mut st) {
            Some(rx) => Acquire::Wait(rx),
            None => Acquire::Failed(TokenError::closed()),
        }
    }

    fn start_fetch(&self, st: &mut State) -> Option<watch::Receiver<Outcome>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: a token cannot be fetched");
            return None;
        };
        let (tx, rx) = watch::channel(None);
        st.fetch_id = st.fetch_id.wrapping_add(1);
        st.fetch = Some(rx.clone());
        let inner = Arc::clone(&self.inner);
        let id = st.fetch_id;
        #[cfg(feature = "metrics")]
        let kind = st.fetch_kind();
        drop(runtime.spawn(fetch_task(
            inner,
            id,
            tx,
            #[cfg(feature = "metrics")]
            kind,
        )));
        Some(rx)
    }
}

pub(crate) async fn wait(mut rx: watch::Receiver<Outcome>) -> Result<CachedToken, TokenError> {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(TokenError::closed())),
        Err(_) => Err(TokenError::closed()),
    }
}

/// Clears the fetch in flight if its task ends without installing an
/// answer (the runtime shut down), so that a later caller starts another.
struct FetchGuard<'a> {
    inner: &'a Inner,
    id: u64,
    armed: bool,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = write(&self.inner.state);
            if st.fetch_id == self.id {
                st.fetch = None;
            }
        }
    }
}

async fn fetch_task(
    inner: Arc<Inner>,
    id: u64,
    tx: watch::Sender<Outcome>,
    #[cfg(feature = "metrics")] kind: crate::metrics::FetchKind,
) {
    let mut guard = FetchGuard {
        inner: &inner,
        id,
        armed: true,
    };
    #[cfg(feature = "metrics")]
    let started = Instant::now();
    let result = inner.fetch().await;
    let outcome = inner.install(result, id);
    // NOTE: after `install`, so that a token the endpoint sent but the
    // cache cannot use (empty, not visible ASCII) counts as an error.
    #[cfg(feature = "metrics")]
    crate::metrics::token_fetch(kind, outcome.is_ok(), started.elapsed());
    guard.armed = false;
    drop(guard);
    tx.send_replace(Some(outcome));
}

impl Inner {
    async fn fetch(&self) -> Result<Token, TokenError> {
        let timeout = self.config.fetch_timeout;
        let start = Instant::now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| parapet_core::far_future(start));
        let mut attempt = 1u32;
        loop {
            let result = match tokio::time::timeout_at(deadline, self.provider.fetch_token()).await
            {
                Ok(r) => r,
                Err(_) => Err(TokenError::timeout(timeout)),
            };
            match result {
                Ok(token) => return Ok(token),
                Err(e) if e.is_transient() && !e.is_timeout() && attempt < self.config.attempts => {
                    let wait = self.backoff(attempt);
                    if Instant::now()
                        .checked_add(wait)
                        .is_none_or(|t| t >= deadline)
                    {
                        return Err(e);
                    }
                    tracing::debug!(attempt, error = %e, ?wait, "token fetch failed; trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `base * 2^(n-1)`, at most `max`, spread up by up to half by jitter.
    fn backoff(&self, n: u32) -> Duration {
        let c = &self.config;
        let exp = n.saturating_sub(1).min(31);
        let d = c
            .backoff_base
            .checked_mul(1u32 << exp)
            .unwrap_or(c.backoff_max)
            .min(c.backoff_max);
        c.jitter.spread_up(d, 0.5)
    }

    fn install(
        &self,
        result: Result<Token, TokenError>,
        id: u64,
    ) -> Result<CachedToken, TokenError> {
        let now = Instant::now();
        let mut st = write(&self.state);
        if st.fetch_id == id {
            st.fetch = None;
        }
        let generation = st.generation.wrapping_add(1);
        let after_401 = st.reauth_pending;
        let entry = result.and_then(|token| self.entry(&token, generation, now, after_401));
        match entry {
            Ok(entry) => {
                st.generation = generation;
                st.reauth_pending = false;
                #[cfg(feature = "metrics")]
                {
                    st.invalidated = false;
                }
                st.current = Some(entry.clone());
                st.failures = 0;
                st.cooldown_until = None;
                st.last_error = None;
                tracing::debug!(
                    generation,
                    expires_in = ?entry.expires_at().map(|e| e.saturating_duration_since(now)),
                    "token fetched"
                );
                Ok(entry)
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                let cooldown = self.backoff(st.failures);
                st.cooldown_until = now.checked_add(cooldown);
                st.last_error = Some(e.clone());
                tracing::warn!(
                    error = %e,
                    failures = st.failures,
                    ?cooldown,
                    still_valid = st.current.as_ref().is_some_and(|c| c.is_valid(now)),
                    "token fetch failed"
                );
                Err(e)
            }
        }
    }

    fn entry(
        &self,
        token: &Token,
        generation: u64,
        now: Instant,
        after_401: bool,
    ) -> Result<CachedToken, TokenError> {
        let secret = token.secret().clone();
        if secret.is_empty() || !is_visible_ascii(secret.expose()) {
            return Err(TokenError::invalid_token());
        }
        let mut header = HeaderValue::try_from(format!("Bearer {}", secret.expose()))
            .map_err(|_| TokenError::invalid_token())?;
        header.set_sensitive(true);
        let expires_at = token.expires_at();
        let refresh_at = expires_at.map(|exp| {
            let life = exp.saturating_duration_since(now);
            let margin = self.config.margin.min(life / 2);
            let margin = self.config.jitter.spread_up(margin, 0.25);
            exp.checked_sub(margin).unwrap_or(now)
        });
        let reauth_from = if after_401 && !self.config.reauth_cooldown.is_zero() {
            let cooldown = self
                .config
                .jitter
                .spread_up(self.config.reauth_cooldown, 0.5);
            Some(
                now.checked_add(cooldown)
                    .unwrap_or_else(|| parapet_core::far_future(now)),
            )
        } else {
            None
        };
        Ok(CachedToken(Arc::new(Entry {
            header,
            secret,
            generation,
            expires_at,
            refresh_at,
            reauth_from,
        })))
    }
}

fn read(lock: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    // Every update is a few assignments, consistent at any panic point.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = read(&self.inner.state);
        f.debug_struct("TokenCache")
            .field("config", &self.inner.config)
            .field("current", &st.current)
            .field("fetching", &st.fetch.is_some())
            .field("failures", &st.failures)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider_fn;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A provider scripted per fetch; it records when each fetch started.
    struct Script {
        fetches: AtomicUsize,
        started: Mutex<Vec<Instant>>,
        plan: Box<dyn Fn(usize) -> Step + Send + Sync>,
    }

    #[derive(Clone)]
    enum Step {
        Ok(Duration, Option<Duration>),
        Fail(TokenError, Duration),
        Hang,
    }

    impl ProvideToken for Script {
        fn fetch_token(&self) -> crate::TokenFuture<'_> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst);
            self.started.lock().unwrap().push(Instant::now());
            let step = (self.plan)(n);
            Box::pin(async move {
                match step {
                    Step::Ok(delay, life) => {
                        tokio::time::sleep(delay).await;
                        let t = Token::new(format!("token-{n}"));
                        Ok(match life {
                            Some(l) => t.with_expires_in(l),
                            None => t,
                        })
                    }
                    Step::Fail(e, delay) => {
                        tokio::time::sleep(delay).await;
                        Err(e)
                    }
                    Step::Hang => std::future::pending().await,
                }
            })
        }
    }

    fn script(plan: impl Fn(usize) -> Step + Send + Sync + 'static) -> Arc<Script> {
        Arc::new(Script {
            fetches: AtomicUsize::new(0),
            started: Mutex::new(Vec::new()),
            plan: Box::new(plan),
        })
    }

    fn unavailable() -> TokenError {
        TokenError::rejected(http::StatusCode::SERVICE_UNAVAILABLE, None, None)
    }

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn cache_of(p: &Arc<Script>) -> TokenCacheBuilder {
        TokenCache::builder(Arc::clone(p)).jitter(Jitter::fixed(0.0))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let p = script(|_| Step::Ok(50 * MS, Some(60 * SEC)));
        let cache = cache_of(&p).build();
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.token().await.unwrap().generation() })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 1);
        }
        assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn at_expiry_concurrent_callers_cause_one_fetch() {
        let p = script(|_| Step::Ok(10 * MS, Some(2 * SEC)));
        let cache = cache_of(&p).build();
        assert_eq!(cache.token().await.unwrap().generation(), 1);
        tokio::time::sleep(3 * SEC).await; // expired, never refreshed
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.token().await.unwrap().generation() })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 2);
        }
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_starts_at_expiry_minus_the_margin_and_nobody_waits() {
        let p = script(|_| Step::Ok(100 * MS, Some(3600 * SEC)));
        let cache = cache_of(&p).refresh_margin(60 * SEC).build();
        let first = cache.token().await.unwrap();
        let t0 = Instant::now();
        assert_eq!(first.refresh_at(), Some(t0 + 3540 * SEC));
        tokio::time::sleep(3539 * SEC).await;
        assert_eq!(cache.token().await.unwrap().generation(), 1);
        assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(SEC).await;
        // In the margin: the current token comes back at once, a fetch starts.
        let before = Instant::now();
        assert_eq!(cache.token().await.unwrap().generation(), 1);
        assert_eq!(Instant::now(), before, "the caller did not wait");
        tokio::time::sleep(200 * MS).await;
        assert_eq!(cache.token().await.unwrap().generation(), 2);
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_margin_is_clamped_to_half_the_lifetime() {
        let p = script(|_| Step::Ok(Duration::ZERO, Some(20 * SEC)));
        let cache = cache_of(&p).build(); // 30 s margin on a 20 s token
        let t = cache.token().await.unwrap();
        assert_eq!(t.refresh_at(), Some(Instant::now() + 10 * SEC));
        // Jitter moves the refresh earlier, by at most a quarter of the margin.
        let p = script(|_| Step::Ok(Duration::ZERO, Some(20 * SEC)));
        let cache = cache_of(&p).jitter(Jitter::fixed(0.999)).build();
        let t = cache.token().await.unwrap();
        let at = t.refresh_at().unwrap() - Instant::now();
        assert!(
            at > Duration::from_millis(7_400) && at <= 10 * SEC,
            "{at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn three_lifetimes_of_use_never_see_an_expired_token() {
        let p = script(|_| Step::Ok(200 * MS, Some(2 * SEC)));
        let cache = TokenCache::builder(Arc::clone(&p)).build();
        let end = Instant::now() + 6 * SEC;
        let mut seen = 0;
        while Instant::now() < end {
            let t = cache.token().await.unwrap();
            assert!(t.expires_at().unwrap() > Instant::now());
            seen = seen.max(t.generation());
            tokio::time::sleep(50 * MS).await;
        }
        assert!(seen >= 3, "{seen}");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_backoff_within_one_fetch() {
        let p = script(|n| {
            if n < 2 {
                Step::Fail(unavailable(), Duration::ZERO)
            } else {
                Step::Ok(Duration::ZERO, None)
            }
        });
        let cache = cache_of(&p).backoff(100 * MS, SEC).build();
        let t0 = Instant::now();
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-2");
        let started = p.started.lock().unwrap().clone();
        assert_eq!(started, [t0, t0 + 100 * MS, t0 + 300 * MS]);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let p = script(|_| {
            Step::Fail(
                TokenError::rejected(http::StatusCode::BAD_REQUEST, Some("invalid_client"), None),
                Duration::ZERO,
            )
        });
        let cache = cache_of(&p).build();
        let e = cache.token().await.unwrap_err();
        assert_eq!(e.oauth_error(), Some("invalid_client"));
        assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
        // During the cool-down the same error comes back without a fetch.
        let e = cache.token().await.unwrap_err();
        assert_eq!(e.oauth_error(), Some("invalid_client"));
        assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(SEC).await;
        let _ = cache.token().await.unwrap_err();
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_refresh_keeps_the_valid_token_and_retries_later() {
        let p = script(|n| {
            if n == 0 {
                Step::Ok(Duration::ZERO, Some(100 * SEC))
            } else {
                Step::Fail(unavailable(), Duration::ZERO)
            }
        });
        let cache = cache_of(&p)
            .refresh_margin(50 * SEC)
            .fetch_attempts(1)
            .backoff(SEC, 4 * SEC)
            .build();
        assert_eq!(cache.token().await.unwrap().generation(), 1);
        tokio::time::sleep(50 * SEC).await;
        // From here on, every call gets token 1 until it expires; refreshes
        // are attempted with growing cool-downs: 1 s, 2 s, 4 s, 4 s...
        let end = Instant::now() + 20 * SEC;
        while Instant::now() < end {
            assert_eq!(cache.token().await.unwrap().generation(), 1);
            tokio::time::sleep(100 * MS).await;
        }
        let started = p.started.lock().unwrap().clone();
        let gaps: Vec<_> = started
            .windows(2)
            .skip(1)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert_eq!(&gaps[..4], [1000, 2000, 4000, 4000]);
        // Past the expiry, callers get the error instead of a dead token.
        tokio::time::sleep(40 * SEC).await;
        assert!(cache.token().await.unwrap_err().is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_fetch_times_out_with_a_typed_error() {
        let p = script(|_| Step::Hang);
        let cache = cache_of(&p).fetch_timeout(2 * SEC).build();
        let t0 = Instant::now();
        let e = cache.token().await.unwrap_err();
        assert!(e.is_timeout() && e.is_transient());
        assert_eq!(e.timeout_after(), Some(2 * SEC));
        assert_eq!(Instant::now() - t0, 2 * SEC);
        assert_eq!(e.to_string(), "token fetch timed out after 2s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_covers_the_retries() {
        let p = script(|_| Step::Fail(unavailable(), 700 * MS));
        let cache = cache_of(&p)
            .fetch_timeout(SEC)
            .backoff(100 * MS, SEC)
            .build();
        let t0 = Instant::now();
        let e = cache.token().await.unwrap_err();
        assert!(Instant::now() - t0 <= SEC);
        assert!(e.is_timeout() || e.status().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_drops_only_the_token_it_names() {
        let p = script(|_| Step::Ok(Duration::ZERO, None));
        let cache = cache_of(&p).build();
        let old = cache.token().await.unwrap();
        assert!(cache.invalidate(&old));
        let new = cache.token().await.unwrap();
        assert_eq!(new.generation(), 2);
        // A late 401 for the old token does not throw the new one away.
        assert!(!cache.invalidate(&old));
        assert_eq!(cache.current().unwrap().generation(), 2);
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn unusable_tokens_are_errors_not_panics() {
        let cache = TokenCache::new(provider_fn(|| async {
            Ok::<_, TokenError>(Token::new("line\nbreak"))
        }));
        assert!(cache.token().await.unwrap_err().is_malformed());
        let cache = TokenCache::new(provider_fn(|| async {
            Ok::<_, TokenError>(Token::new(""))
        }));
        assert!(cache.token().await.unwrap_err().is_malformed());
    }

    #[tokio::test(start_paused = true)]
    async fn header_values_are_sensitive_and_debug_is_redacted() {
        let cache = TokenCache::new(provider_fn(|| async {
            Ok::<_, TokenError>(Token::new("planted-abc").with_expires_in(SEC * 60))
        }));
        let t = cache.token().await.unwrap();
        assert!(t.header_value().is_sensitive());
        assert_eq!(t.header_value(), "Bearer planted-abc");
        let debug = format!("{t:?} {cache:?} {:?}", t.secret());
        assert!(!debug.contains("planted"), "{debug}");
    }
}
