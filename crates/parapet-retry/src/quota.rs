//! The retry quota: a token bucket per host, as the AWS SDKs' "standard"
//! retry mode keeps one per client.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::hash::Hasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, PoisonError, RwLock};

use parapet_core::{HostHashBuilder, HostHasher};
use tokio::time::Instant;

use crate::budget::LastHost;

/// How deep an error's `source()` chain is searched for a timeout.
const MAX_DEPTH: usize = 32;

/// Which errors count as timeouts, for the higher cost of their retry.
type IsTimeout = fn(&(dyn Error + 'static)) -> bool;

/// A retry quota: a bucket of tokens per host that retries spend and
/// successes earn back, the alternative to a [`RetryBudget`](crate::RetryBudget)
/// that users of the AWS SDKs know from their "standard" retry mode.
///
/// Each host starts with a full bucket ([`capacity`](Self::capacity), 500
/// tokens). A retry costs [`retry_cost`](Self::retry_cost) (5) tokens, a
/// retry after a [timeout](Self::timeout_when)
/// [`timeout_cost`](Self::timeout_cost) (10); when the bucket holds less
/// than the cost, the retry is not made: the response or error at hand is
/// returned (a response carries [`NotRetried`](crate::NotRetried) with
/// [`QuotaExhausted`](crate::NotRetriedReason::QuotaExhausted)) and an
/// `INFO` event says "not retrying: retry quota exhausted". A call that
/// succeeds at its first attempt puts
/// [`success_increment`](Self::success_increment) (1) token back; a call
/// that succeeds after retries gives back what the retry that succeeded
/// cost. The bucket never holds more than its capacity.
///
/// A call succeeds when its final answer is a response below 400 that the
/// policy does not retry (a 404 is the server answering, but like the AWS
/// SDKs, which count only operations that succeed, it earns nothing back).
/// An error, a 4xx or a 5xx earns nothing, and a call that may make a
/// single attempt (`max_attempts(1)`, or its
/// [`MaxAttempts`](crate::MaxAttempts)) is not counted at all.
///
/// So while a dependency is healthy, the bucket stays full; when it fails
/// every call, 500 tokens allow 100 retries (50 after timeouts), and then
/// none until successes refill it: unlike the budget, which allows a share
/// of the calls made in a sliding window whatever happened before, the
/// quota remembers, and only successes (not time) refill it.
///
/// The constants and the rules follow the AWS SDKs' standard mode, as
/// their sources define them (`INITIAL_RETRY_TOKENS`, `RETRY_COST`,
/// `TIMEOUT_RETRY_COST` and `NO_RETRY_INCREMENT` in the JavaScript SDK's
/// `@aws-sdk/middleware-retry`, and the `TokenBucket` of the Rust SDK's
/// `aws-smithy-runtime`; see also "Retry behavior" in the AWS SDKs and
/// Tools reference guide). Two differences: a bucket is kept per host (the
/// URI's authority without user information), in a table of at most
/// [`max_hosts`](Self::max_hosts) entries, like the budget (a host
/// forgotten to make room for another starts again with a full bucket);
/// and the first attempt never waits for or spends a token.
///
/// The quota is shared by every clone of the service and by every service
/// one [`RetryLayer`](crate::RetryLayer) makes, and by its
/// [hedges](crate::RetryLayer::hedge_layer) (a hedge costs a retry's
/// tokens and is never refunded). Counting a success is one
/// atomic operation on the host's bucket, which the call found when it
/// started; a retry takes its tokens with a compare-and-swap, no lock.
///
/// ```
/// use parapet_retry::{RetryPolicy, RetryQuota};
///
/// let policy = RetryPolicy::builder()
///     .retry_quota(RetryQuota::aws_standard().capacity(100))
///     .build()
///     .unwrap();
/// assert_eq!(policy.retry_quota().map(|q| q.get_capacity()), Some(100));
/// assert_eq!(policy.budget(), None, "the quota replaces the budget");
/// ```
#[derive(Clone, Copy)]
pub struct RetryQuota {
    capacity: u32,
    retry_cost: u32,
    timeout_cost: u32,
    success_increment: u32,
    max_hosts: usize,
    is_timeout: IsTimeout,
}

impl RetryQuota {
    /// The AWS SDKs' standard quota: 500 tokens, 5 per retry, 10 per retry
    /// after a timeout, 1 back per call that succeeds at once; 1024 hosts.
    #[must_use]
    pub const fn aws_standard() -> Self {
        Self {
            capacity: 500,
            retry_cost: 5,
            timeout_cost: 10,
            success_increment: 1,
            max_hosts: 1024,
            is_timeout,
        }
    }

    /// The same as [`aws_standard`](Self::aws_standard).
    #[must_use]
    pub const fn new() -> Self {
        Self::aws_standard()
    }

    /// How many tokens a host's bucket holds, and starts with; at least 1.
    /// Default: 500.
    #[must_use]
    pub const fn capacity(mut self, tokens: u32) -> Self {
        self.capacity = tokens;
        self
    }

    /// What a retry costs; at least 1 and at most the capacity. Default: 5.
    #[must_use]
    pub const fn retry_cost(mut self, tokens: u32) -> Self {
        self.retry_cost = tokens;
        self
    }

    /// What a retry after a timeout costs; at least 1 and at most the
    /// capacity. Default: 10.
    #[must_use]
    pub const fn timeout_cost(mut self, tokens: u32) -> Self {
        self.timeout_cost = tokens;
        self
    }

    /// What a call that succeeds at its first attempt puts back (0 for
    /// nothing). Default: 1.
    #[must_use]
    pub const fn success_increment(mut self, tokens: u32) -> Self {
        self.success_increment = tokens;
        self
    }

    /// How many hosts are tracked at once; at least 1. Default: 1024.
    #[must_use]
    pub const fn max_hosts(mut self, hosts: usize) -> Self {
        self.max_hosts = hosts;
        self
    }

    /// Which failed attempts count as timeouts, whose retry costs
    /// [`timeout_cost`](Self::timeout_cost): the function sees the error
    /// (never a response). Default: an error with, in its `source()` chain,
    /// a `std::io::Error` of kind `TimedOut` (the OS's, hyper-util's
    /// connect timeout) or a `tokio::time::error::Elapsed` (tokio's and
    /// tower's `timeout`). This crate knows no other crate's timeout types:
    /// a stack whose attempt timeout fails with its own error (as
    /// parapet-timeout's `AttemptTimedOut` does) passes a function that
    /// knows it, such as `|e| e.is::<AttemptTimedOut>() || my_default(e)`.
    #[must_use]
    pub const fn timeout_when(mut self, is_timeout: fn(&(dyn Error + 'static)) -> bool) -> Self {
        self.is_timeout = is_timeout;
        self
    }

    /// The tokens a bucket holds at most.
    #[must_use]
    pub const fn get_capacity(&self) -> u32 {
        self.capacity
    }

    /// What a retry costs.
    #[must_use]
    pub const fn get_retry_cost(&self) -> u32 {
        self.retry_cost
    }

    /// What a retry after a timeout costs.
    #[must_use]
    pub const fn get_timeout_cost(&self) -> u32 {
        self.timeout_cost
    }

    /// What a first-attempt success puts back.
    #[must_use]
    pub const fn get_success_increment(&self) -> u32 {
        self.success_increment
    }

    /// The most hosts tracked.
    #[must_use]
    pub const fn get_max_hosts(&self) -> usize {
        self.max_hosts
    }

    /// Whether `error` counts as a timeout, by [`timeout_when`](Self::timeout_when).
    #[must_use]
    pub fn is_timeout(&self, error: &(dyn Error + 'static)) -> bool {
        (self.is_timeout)(error)
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.capacity == 0 {
            return Err("retry quota capacity is 0");
        }
        if self.retry_cost == 0 || self.timeout_cost == 0 {
            return Err("retry quota cost is 0");
        }
        if self.retry_cost > self.capacity || self.timeout_cost > self.capacity {
            return Err("retry quota cost is above the capacity");
        }
        if self.max_hosts == 0 {
            return Err("retry quota tracks no host");
        }
        Ok(())
    }
}

impl Default for RetryQuota {
    fn default() -> Self {
        Self::aws_standard()
    }
}

impl PartialEq for RetryQuota {
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity
            && self.retry_cost == other.retry_cost
            && self.timeout_cost == other.timeout_cost
            && self.success_increment == other.success_increment
            && self.max_hosts == other.max_hosts
            && std::ptr::fn_addr_eq(self.is_timeout, other.is_timeout)
    }
}

impl Eq for RetryQuota {}

impl fmt::Debug for RetryQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryQuota")
            .field("capacity", &self.capacity)
            .field("retry_cost", &self.retry_cost)
            .field("timeout_cost", &self.timeout_cost)
            .field("success_increment", &self.success_increment)
            .field("max_hosts", &self.max_hosts)
            .finish_non_exhaustive()
    }
}

/// The default timeout test: an `io::Error` of kind `TimedOut`, or tokio's
/// `Elapsed`, in the chain.
fn is_timeout(error: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(error);
    for _ in 0..MAX_DEPTH {
        let Some(e) = cur else { return false };
        if e.is::<tokio::time::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The shared state of a quota: one bucket per host.
pub(crate) struct Quotas {
    config: RetryQuota,
    origin: Instant,
    hosts: RwLock<HashMap<Box<str>, Arc<Bucket>, HostHashBuilder>>,
}

/// One host's bucket.
pub(crate) struct Bucket {
    name: Box<str>,
    /// Set when the entry leaves the table.
    evicted: AtomicBool,
    tokens: AtomicU32,
    /// When the bucket was last used, in 100 ms steps from `origin`: the
    /// least recent is forgotten first.
    last_used: AtomicU64,
}

impl Bucket {
    /// Takes `cost` tokens, if there are as many.
    fn take(&self, cost: u32) -> bool {
        self.tokens
            .fetch_update(Relaxed, Relaxed, |t| t.checked_sub(cost))
            .is_ok()
    }

    /// Puts `tokens` back, up to `capacity`.
    #[inline]
    pub(crate) fn give(&self, tokens: u32, capacity: u32) {
        // A full bucket (the healthy case) is left alone: read, no write.
        if tokens == 0 || self.tokens.load(Relaxed) >= capacity {
            return;
        }
        let _ = self.tokens.fetch_update(Relaxed, Relaxed, |t| {
            (t < capacity).then(|| t.saturating_add(tokens).min(capacity))
        });
    }

    fn used(&self, step: u64) {
        if self.last_used.load(Relaxed) != step {
            self.last_used.store(step, Relaxed);
        }
    }

    #[cfg(test)]
    pub(crate) fn tokens(&self) -> u32 {
        self.tokens.load(Relaxed)
    }
}

impl fmt::Debug for Quotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quotas")
            .field("config", &self.config)
            .field(
                "hosts",
                &self
                    .hosts
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            )
            .finish_non_exhaustive()
    }
}

impl Quotas {
    pub(crate) fn new(config: RetryQuota) -> Self {
        Self {
            config,
            origin: Instant::now(),
            hosts: RwLock::new(HashMap::default()),
        }
    }

    pub(crate) fn config(&self) -> &RetryQuota {
        &self.config
    }

    fn step(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis() / 100)
            .unwrap_or(u64::MAX)
    }

    /// The bucket of `host`, for a call that starts now. `last` is the
    /// caller's memory of the host it called last: when the host is the
    /// same and still in the table, its bucket is taken from there, with
    /// no lookup and no lock.
    #[inline]
    pub(crate) fn bucket(&self, last: &mut LastHost, host: &str, now: Instant) -> Arc<Bucket> {
        if let Some(b) = &last.quota {
            if *b.name == *host && !b.evicted.load(Relaxed) {
                b.used(self.step(now));
                return Arc::clone(b);
            }
        }
        self.bucket_looked_up(last, host, now)
    }

    #[cold]
    fn bucket_looked_up(&self, last: &mut LastHost, host: &str, now: Instant) -> Arc<Bucket> {
        let hash = {
            let mut hasher = HostHasher::default();
            hasher.write(host.as_bytes());
            hasher.finish()
        };
        let keep = std::mem::replace(&mut last.looked_up, hash) == hash;
        let b = self.find(host, now);
        if keep {
            last.quota = Some(Arc::clone(&b));
        }
        b
    }

    /// The bucket of `host`, added (full) if the table has none.
    pub(crate) fn find(&self, host: &str, now: Instant) -> Arc<Bucket> {
        let step = self.step(now);
        {
            let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(b) = hosts.get(host) {
                b.used(step);
                return Arc::clone(b);
            }
        }
        self.add(host, step)
    }

    #[cold]
    fn add(&self, host: &str, step: u64) -> Arc<Bucket> {
        let mut hosts = self.hosts.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = hosts.get(host) {
            return Arc::clone(b);
        }
        if hosts.len() >= self.config.max_hosts {
            // NOTE: only when a new host arrives at a full table: one scan.
            let oldest = hosts
                .iter()
                .min_by_key(|(_, b)| b.last_used.load(Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(gone) = oldest.and_then(|k| hosts.remove(&k)) {
                gone.evicted.store(true, Relaxed);
            }
        }
        let b = Arc::new(Bucket {
            name: host.into(),
            evicted: AtomicBool::new(false),
            tokens: AtomicU32::new(self.config.capacity),
            last_used: AtomicU64::new(step),
        });
        hosts.insert(host.into(), Arc::clone(&b));
        b
    }

    /// Takes `cost` tokens from the bucket of `host` (`known`, unless it
    /// has been forgotten since), if there are as many.
    pub(crate) fn withdraw(
        &self,
        known: Option<&Arc<Bucket>>,
        host: &str,
        cost: u32,
        now: Instant,
    ) -> bool {
        match known {
            Some(b) if !b.evicted.load(Relaxed) => b.take(cost),
            _ => self.find(host, now).take(cost),
        }
    }

    /// The cost of a retry after `error` (none: after a response).
    pub(crate) fn cost(&self, error: Option<&(dyn Error + 'static)>) -> u32 {
        match error {
            Some(e) if self.config.is_timeout(e) => self.config.timeout_cost,
            _ => self.config.retry_cost,
        }
    }

    #[cfg(test)]
    pub(crate) fn tokens(&self, host: &str) -> Option<u32> {
        self.hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .map(|b| b.tokens())
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn the_aws_standard_constants() {
        let q = RetryQuota::aws_standard();
        assert_eq!(q, RetryQuota::new());
        assert_eq!(q, RetryQuota::default());
        assert_eq!(q.get_capacity(), 500);
        assert_eq!(q.get_retry_cost(), 5);
        assert_eq!(q.get_timeout_cost(), 10);
        assert_eq!(q.get_success_increment(), 1);
        assert_eq!(q.get_max_hosts(), 1024);
        assert!(q.validate().is_ok());
    }

    #[test]
    fn validation() {
        assert!(RetryQuota::new().capacity(0).validate().is_err());
        assert!(RetryQuota::new().retry_cost(0).validate().is_err());
        assert!(RetryQuota::new().timeout_cost(0).validate().is_err());
        assert!(RetryQuota::new().capacity(8).validate().is_err());
        assert!(RetryQuota::new().max_hosts(0).validate().is_err());
        assert!(RetryQuota::new().success_increment(0).validate().is_ok());
        assert!(RetryQuota::new().capacity(10).validate().is_ok());
    }

    #[test]
    fn timeouts_are_found_in_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let q = RetryQuota::new();
        assert!(q.is_timeout(&Wrapper(io::Error::from(io::ErrorKind::TimedOut))));
        assert!(!q.is_timeout(&Wrapper(io::Error::from(io::ErrorKind::ConnectionReset))));
        let custom = q.timeout_when(|e| e.to_string() == "wrapped");
        assert!(custom.is_timeout(&Wrapper(io::Error::other("x"))));
        assert_ne!(custom, q);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_taken_and_given_back_up_to_the_capacity() {
        let quotas = Quotas::new(RetryQuota::new().capacity(12));
        let now = Instant::now();
        let b = quotas.bucket(&mut LastHost::default(), "h", now);
        assert!(quotas.withdraw(Some(&b), "h", 5, now));
        assert!(quotas.withdraw(Some(&b), "h", 5, now));
        assert!(!quotas.withdraw(Some(&b), "h", 5, now), "2 left");
        assert_eq!(b.tokens(), 2);
        b.give(1, 12);
        b.give(5, 12);
        assert_eq!(b.tokens(), 8);
        b.give(100, 12);
        assert_eq!(b.tokens(), 12);
        assert_eq!(quotas.tokens("other"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_are_bounded_and_a_forgotten_one_starts_full() {
        let quotas = Quotas::new(RetryQuota::new().capacity(10).max_hosts(1));
        let now = Instant::now();
        let a = quotas.bucket(&mut LastHost::default(), "a", now);
        assert!(quotas.withdraw(Some(&a), "a", 10, now));
        assert_eq!(quotas.tokens("a"), Some(0));
        let _b = quotas.bucket(&mut LastHost::default(), "b", now);
        assert_eq!(quotas.tokens("a"), None, "evicted");
        // The call that knew "a" finds it again, full.
        assert!(quotas.withdraw(Some(&a), "a", 10, now));
        assert_eq!(quotas.tokens("a"), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_bucket_is_reused() {
        let quotas = Quotas::new(RetryQuota::new());
        let now = Instant::now();
        let mut last = LastHost::default();
        let first = quotas.bucket(&mut last, "a", now);
        assert!(last.quota.is_none(), "kept after two calls in a row");
        let second = quotas.bucket(&mut last, "a", now);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(last.quota.is_some());
        let third = quotas.bucket(&mut last, "a", now);
        assert!(Arc::ptr_eq(&first, &third));
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let quotas = Quotas::new(RetryQuota::new().capacity(500));
        let now = Instant::now();
        let b = quotas.find("h", now);
        let granted = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while quotas.withdraw(Some(&b), "h", 5, now) {
                        granted.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        assert_eq!(granted.load(Relaxed), 100);
        assert_eq!(b.tokens(), 0);
    }
}
