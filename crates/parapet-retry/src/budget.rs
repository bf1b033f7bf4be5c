//! The retry budget: retries add at most a given share of load, per host.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use parapet_core::{HostHashBuilder, HostHasher};
use tokio::time::Instant;

/// How many retries a client may add on top of its calls, per host.
///
/// A retry budget keeps a failing dependency from being hammered: when
/// most calls fail, retrying each of them up to the attempt limit would
/// multiply the load on a server that is already in trouble. The budget
/// says "retries add at most `percent` % to the calls made", with a floor
/// of `min_per_second` retries per second so that a quiet client (or one
/// that has just started) can still retry. Like Finagle's and tower's
/// `TpsBudget` it counts calls made and retries spent over a sliding window
/// (default 10 s, in ten slots). A retry is allowed when, over the window,
///
/// ```text
/// retries + 1 <= max(percent/100 × calls, floor)
/// floor = min_per_second × min(⌊s⌋ + 1, window in whole seconds)
/// ```
///
/// where `s` is the time in seconds since the budget first saw the host (its
/// first call, or a retry weighed for a host it had forgotten).
///
/// The floor is a minimum, not an addition, and it builds up second by
/// second (it is not granted a whole window ahead): a host the budget has
/// just met may retry `min_per_second` times at once (one second's worth),
/// `min_per_second` more in each second after that, and once the window has
/// been open for its whole length, `min_per_second × window` over the
/// window, whatever the window's length. In a total outage of `n` calls
/// over the first `t` seconds (up to the window) a host sees at most
/// `n + max(percent/100 × n, min_per_second × (⌊t⌋ + 1))` requests.
/// (Finagle and tower add the two and grant the floor's whole window at
/// once, which lets a client that has just started send
/// `min_per_second × window` retries in its first second.) A host known
/// for a whole window or more that then idles finds the window's whole
/// floor there when it is called again.
///
/// The budget is shared by every clone of the service and by every service
/// one [`RetryLayer`](crate::RetryLayer) makes, and kept per host (the URI's
/// authority without any user information), in a table of at most
/// [`max_hosts`](Self::max_hosts) entries: when it is full, a new host
/// replaces the one used least recently. When the budget refuses a retry,
/// the response or error at hand is returned and a trace event says so.
///
/// ```
/// use std::time::Duration;
/// use parapet_retry::{RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .budget(RetryBudget::new().percent(10).min_per_second(5).window(Duration::from_secs(30)))
///     .build()
///     .unwrap();
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    percent: u32,
    min_per_second: u32,
    window: Duration,
    max_hosts: usize,
}

/// Slots in a window.
const SLOTS: usize = 10;

impl RetryBudget {
    /// The default budget: 20 %, 10 retries per second, a 10 s window,
    /// 1024 hosts.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            percent: 20,
            min_per_second: 10,
            window: Duration::from_secs(10),
            max_hosts: 1024,
        }
    }

    /// The share of calls, in percent, that retries may add. At most 1000.
    /// Default: 20.
    #[must_use]
    pub const fn percent(mut self, percent: u32) -> Self {
        self.percent = percent;
        self
    }

    /// Retries per second allowed whatever the share: one second's worth at
    /// once, as much again each second, up to a window's worth (see above).
    /// Default: 10.
    #[must_use]
    pub const fn min_per_second(mut self, retries: u32) -> Self {
        self.min_per_second = retries;
        self
    }

    /// How far back calls and retries count: at least 1 s and at most one
    /// hour. Default: 10 s.
    #[must_use]
    pub const fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many hosts are tracked at once; at least 1. Each takes about 250
    /// bytes plus its name. Default: 1024.
    #[must_use]
    pub const fn max_hosts(mut self, hosts: usize) -> Self {
        self.max_hosts = hosts;
        self
    }

    /// The share in percent.
    #[must_use]
    pub const fn get_percent(&self) -> u32 {
        self.percent
    }

    /// The floor in retries per second.
    #[must_use]
    pub const fn get_min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The window.
    #[must_use]
    pub const fn get_window(&self) -> Duration {
        self.window
    }

    /// The most hosts tracked.
    #[must_use]
    pub const fn get_max_hosts(&self) -> usize {
        self.max_hosts
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.percent > 1000 {
            return Err("retry budget percent is above 1000");
        }
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(3600) {
            return Err("retry budget window is outside 1 s ..= 1 h");
        }
        if self.max_hosts == 0 {
            return Err("retry budget tracks no host");
        }
        Ok(())
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// What bounds retries, shared by a layer's services (and its hedges): a
/// budget or a quota.
#[derive(Debug)]
pub(crate) enum Limits {
    Budget(Budgets),
    Quota(crate::quota::Quotas),
}

/// The shared state of a budget: one entry per host.
///
/// Counting a call (every call, [`deposit`](Self::deposit)) bumps one
/// atomic counter of the host's, found through the caller's [`LastHost`]
/// or under the table's read lock, which callers share and never wait for
/// one another on; it allocates only for a host the table does not know
/// yet. Spending a retry
/// ([`withdraw`](Self::withdraw), only when a retry is considered) takes a
/// lock of the host's own, so that two retries racing for the last unit of
/// the budget cannot both have it.
pub(crate) struct Budgets {
    config: RetryBudget,
    origin: Instant,
    /// A slot's length in nanoseconds (at least 100 ms: windows are 1 s or more).
    slot_nanos: u64,
    /// Milli-retries one call deposits: `percent × 10`.
    deposit: u64,
    /// Milli-retries the floor adds per second: `min_per_second × 1000`.
    floor_per_second: u64,
    /// The most seconds' worth of floor: the window, in whole seconds
    /// (at least 1).
    floor_seconds: u64,
    /// Looked up by `&str` (no key is allocated but a new host's), with a
    /// fast non-cryptographic hash: the table is bounded by `max_hosts`, so
    /// even hosts chosen to collide cost a bounded scan, not a blow-up.
    hosts: RwLock<HashMap<Box<str>, Arc<Host>, HostHashBuilder>>,
}

/// The host a service counts its calls for, so that a call to the same
/// host as the last is counted without a lookup or a lock. Its `Debug` does
/// not show the host.
///
/// Keeping an entry costs a reference count (an atomic add, and another to
/// release it), so an entry is kept only once two calls in a row went to
/// the same host: a service cloned for each call (as the `parapet` facade
/// does) or one that sends each call to another host never keeps one and
/// pays only the lookup.
#[derive(Clone, Default)]
pub(crate) struct LastHost {
    entry: Option<Arc<Host>>,
    /// The same for a [`RetryQuota`](crate::RetryQuota)'s bucket.
    pub(crate) quota: Option<Arc<crate::quota::Bucket>>,
    /// The hash of the host looked up last, when no entry is kept for it.
    pub(crate) looked_up: u64,
}

impl std::fmt::Debug for LastHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastHost { .. }")
    }
}

/// One slot's count, and which slot it belongs to, in one atomic word: the
/// slot's index (counted from `origin`, modulo 2³²) in the high half, the
/// count in the low half. A counter that still holds an older slot's
/// index is that slot's, and is reset by the first count of the new one.
#[derive(Default)]
struct Counter(AtomicU64);

const LOW: u64 = 0xFFFF_FFFF;

impl Counter {
    /// Counts one more in slot `index` (saturating).
    #[inline]
    fn bump(&self, index: u64) {
        let tag = index & LOW;
        let mut current = self.0.load(Relaxed);
        loop {
            let next = if current >> 32 != tag {
                (tag << 32) | 1
            } else if current & LOW == LOW {
                return;
            } else {
                current + 1
            };
            match self
                .0
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }

    /// The count, if it belongs to one of the `SLOTS` slots up to `index`.
    #[inline]
    fn in_window(&self, index: u64) -> u64 {
        let v = self.0.load(Relaxed);
        let age = (index & LOW).wrapping_sub(v >> 32) & LOW;
        if age < SLOTS as u64 { v & LOW } else { 0 }
    }
}

pub(crate) struct Host {
    /// The host's name, as in the table's key (a service's cached entry is
    /// checked against it).
    name: Box<str>,
    /// Set when the entry leaves the table: a service that kept it looks
    /// the host up again.
    evicted: AtomicBool,
    /// When the budget first saw the host, in nanoseconds from `origin`:
    /// the floor builds up from there.
    opened: u64,
    last_used: AtomicU64,
    calls: [Counter; SLOTS],
    retries: [Counter; SLOTS],
    /// Held while a retry is weighed and spent.
    withdrawing: Mutex<()>,
}

impl Host {
    fn new(name: &str, index: u64, opened: u64) -> Self {
        Self {
            name: name.into(),
            evicted: AtomicBool::new(false),
            opened,
            last_used: AtomicU64::new(index),
            calls: Default::default(),
            retries: Default::default(),
            withdrawing: Mutex::new(()),
        }
    }

    #[inline]
    fn slot(counters: &[Counter; SLOTS], index: u64) -> Option<&Counter> {
        counters.get(usize::try_from(index % SLOTS as u64).ok()?)
    }

    /// Counts a call in slot `index`.
    #[inline]
    fn count_call(&self, index: u64) {
        if let Some(c) = Self::slot(&self.calls, index) {
            c.bump(index);
        }
        self.used(index);
    }

    #[inline]
    fn used(&self, index: u64) {
        // Most calls fall in the slot the host was last used in: read
        // before writing, so that they leave the cache line shared.
        if self.last_used.load(Relaxed) != index {
            self.last_used.store(index, Relaxed);
        }
    }

    fn window_totals(&self, index: u64) -> (u64, u64) {
        let sum = |counters: &[Counter; SLOTS]| -> u64 {
            counters.iter().map(|c| c.in_window(index)).sum()
        };
        (sum(&self.calls), sum(&self.retries))
    }
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config and a count: the table itself can hold a thousand hosts.
        f.debug_struct("Budgets")
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

impl Budgets {
    pub(crate) fn new(config: RetryBudget) -> Self {
        let slot_len = config.window / u32::try_from(SLOTS).unwrap_or(10);
        Self {
            config,
            origin: Instant::now(),
            slot_nanos: u64::try_from(slot_len.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            deposit: u64::from(config.percent) * 10,
            floor_per_second: u64::from(config.min_per_second).saturating_mul(1000),
            floor_seconds: config.window.as_secs().max(1),
            hosts: RwLock::new(HashMap::default()),
        }
    }

    #[inline]
    fn slot_index(&self, now: Instant) -> u64 {
        self.nanos(now) / self.slot_nanos
    }

    /// Nanoseconds since `origin`, in a `u64` (584 years): a 128-bit
    /// division costs more than the rest of the bookkeeping.
    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }

    /// Counts a call to `host`. `last` is the caller's memory of the host
    /// it counted a call for last (a [`Retry`](crate::Retry)'s own): when
    /// the host is the same and still in the table, the call is counted
    /// there, with no lookup and no lock.
    #[inline]
    pub(crate) fn deposit(&self, last: &mut LastHost, host: &str, now: Instant) {
        let index = self.slot_index(now);
        if let Some(h) = &last.entry {
            if *h.name == *host && !h.evicted.load(Relaxed) {
                h.count_call(index);
                return;
            }
        }
        self.deposit_looked_up(last, host, index, now);
    }

    /// Counts a call to a host `last` keeps no entry for, and keeps the
    /// entry when the call before went to the same host.
    #[cold]
    fn deposit_looked_up(&self, last: &mut LastHost, host: &str, index: u64, now: Instant) {
        let hash = {
            let mut hasher = HostHasher::default();
            hasher.write(host.as_bytes());
            hasher.finish()
        };
        let keep = std::mem::replace(&mut last.looked_up, hash) == hash;
        let entry = self.find_and_count(host, index, now, keep);
        if entry.is_some() {
            last.entry = entry;
        }
    }

    /// Counts a call to `host`, adding it to the table if needed; its entry
    /// if `keep`.
    fn find_and_count(
        &self,
        host: &str,
        index: u64,
        now: Instant,
        keep: bool,
    ) -> Option<Arc<Host>> {
        {
            let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = hosts.get(host) {
                h.count_call(index);
                return keep.then(|| Arc::clone(h));
            }
        }
        let h = self.add(host, index, now);
        h.count_call(index);
        keep.then_some(h)
    }

    /// The entry of `host`, added to the table if it is not there (another
    /// call may have added it since the caller looked).
    #[cold]
    fn add(&self, host: &str, index: u64, now: Instant) -> Arc<Host> {
        let mut hosts = self.hosts.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = hosts.get(host) {
            return Arc::clone(h);
        }
        if hosts.len() >= self.config.max_hosts {
            // NOTE: only when a new host arrives at a full table: one scan.
            let oldest = hosts
                .iter()
                .min_by_key(|(_, h)| h.last_used.load(Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(gone) = oldest.and_then(|k| hosts.remove(&k)) {
                gone.evicted.store(true, Relaxed);
            }
        }
        let h = Arc::new(Host::new(host, index, self.nanos(now)));
        hosts.insert(host.into(), Arc::clone(&h));
        h
    }

    /// Spends one retry for `host` if the budget allows it.
    pub(crate) fn withdraw(&self, host: &str, now: Instant) -> bool {
        let index = self.slot_index(now);
        let found = self
            .hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .map(Arc::clone);
        // A host forgotten (evicted) since its call was counted starts again
        // with no history: one second's floor, counted like any other.
        let h = found.unwrap_or_else(|| self.add(host, index, now));
        // Calls counted meanwhile only raise the allowance; retries are
        // weighed and spent one at a time.
        let _one_at_a_time = h.withdrawing.lock().unwrap_or_else(PoisonError::into_inner);
        let (calls, retries) = h.window_totals(index);
        let open_seconds = (self.nanos(now).saturating_sub(h.opened) / 1_000_000_000)
            .saturating_add(1)
            .min(self.floor_seconds);
        let allowance = calls
            .saturating_mul(self.deposit)
            .max(self.floor_per_second.saturating_mul(open_seconds));
        if retries.saturating_add(1).saturating_mul(1000) > allowance {
            return false;
        }
        if let Some(c) = Host::slot(&h.retries, index) {
            c.bump(index);
        }
        h.used(index);
        true
    }

    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(percent: u32, floor: u32) -> Budgets {
        Budgets::new(RetryBudget::new().percent(percent).min_per_second(floor))
    }

    fn retries_allowed(b: &Budgets, host: &str, now: Instant) -> u32 {
        let mut n = 0;
        while b.withdraw(host, now) {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_host_gets_the_floor_of_one_second() {
        let b = budgets(20, 10);
        let now = Instant::now();
        b.deposit(&mut LastHost::default(), "a:80", now);
        // 0.2 from the call, but a floor of 10.
        assert_eq!(retries_allowed(&b, "a:80", now), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_add_at_most_the_share_or_the_floor() {
        let b = budgets(20, 10);
        let now = Instant::now();
        for _ in 0..1000 {
            b.deposit(&mut LastHost::default(), "h", now);
        }
        assert_eq!(retries_allowed(&b, "h", now), 200);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(retries_allowed(&b, "h", Instant::now()), 0);

        // A quiet host: the floor grows by ten each second, up to the window.
        let b = budgets(20, 10);
        b.deposit(&mut LastHost::default(), "q", Instant::now());
        assert_eq!(retries_allowed(&b, "q", Instant::now()), 10);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(retries_allowed(&b, "q", Instant::now()), 10);
        tokio::time::advance(Duration::from_secs(30)).await;
        b.deposit(&mut LastHost::default(), "q", Instant::now());
        assert_eq!(retries_allowed(&b, "q", Instant::now()), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_builds_up_second_by_second_whatever_the_window() {
        for window in [1, 10, 3600] {
            let b = Budgets::new(
                RetryBudget::new()
                    .percent(20)
                    .min_per_second(10)
                    .window(Duration::from_secs(window)),
            );
            let start = Instant::now();
            // A host's first call: one second's worth of floor, 10, at once
            // (the call's own share, 0.2, is below it).
            b.deposit(&mut LastHost::default(), "h", start);
            assert_eq!(retries_allowed(&b, "h", start), 10, "window {window} s");
            // Half a second on: still the first second.
            let at = start + Duration::from_millis(500);
            assert_eq!(retries_allowed(&b, "h", at), 0, "window {window} s");
            // k seconds on: (k + 1) seconds' worth in all, up to the window's.
            for k in [1u64, 2, 9, 10, 11, 3599, 3600, 3601] {
                tokio::time::advance(Duration::from_secs(k) - start.elapsed()).await;
                let now = Instant::now();
                let spent = retries_allowed(&b, "h", now);
                // What the window holds now, including what was spent earlier.
                let (_, in_window) = b.hosts.read().unwrap()["h"].window_totals(b.slot_index(now));
                assert_eq!(
                    in_window,
                    10 * (k + 1).min(window),
                    "window {window} s, {k} s on ({spent} granted now)"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_host_gets_one_seconds_floor_too() {
        // A retry weighed for a host with no call counted (evicted since).
        let b = Budgets::new(
            RetryBudget::new()
                .min_per_second(10)
                .window(Duration::from_secs(3600)),
        );
        assert_eq!(retries_allowed(&b, "gone", Instant::now()), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_still_applies_with_a_long_window() {
        let b = Budgets::new(
            RetryBudget::new()
                .percent(20)
                .min_per_second(10)
                .window(Duration::from_secs(3600)),
        );
        let now = Instant::now();
        let mut last = LastHost::default();
        for _ in 0..1000 {
            b.deposit(&mut last, "h", now);
        }
        // 20 % of 1000 calls is above the floor of one second (10).
        assert_eq!(retries_allowed(&b, "h", now), 200);
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..4000 {
            b.deposit(&mut last, "h", Instant::now());
        }
        // 5000 calls in the window: 1000 in all (above the floor of 61
        // seconds, 610), 200 spent.
        assert_eq!(retries_allowed(&b, "h", Instant::now()), 800);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let b = budgets(20, 0);
        for _ in 0..100 {
            b.deposit(&mut LastHost::default(), "h", Instant::now());
        }
        assert_eq!(retries_allowed(&b, "h", Instant::now()), 20);
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..50 {
            b.deposit(&mut LastHost::default(), "h", Instant::now());
        }
        // 150 calls in the window, 20 retries already spent.
        assert_eq!(retries_allowed(&b, "h", Instant::now()), 10);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first 100 calls and the first 20 retries have left the window.
        assert_eq!(retries_allowed(&b, "h", Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.deposit(&mut LastHost::default(), "h", Instant::now());
        assert_eq!(retries_allowed(&b, "h", Instant::now()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_are_separate_and_bounded() {
        let b = Budgets::new(
            RetryBudget::new()
                .percent(100)
                .min_per_second(0)
                .max_hosts(2),
        );
        let now = Instant::now();
        b.deposit(&mut LastHost::default(), "a", now);
        b.deposit(&mut LastHost::default(), "b", now);
        assert!(b.withdraw("a", now));
        assert!(!b.withdraw("a", now));
        assert!(b.withdraw("b", now));
        tokio::time::advance(Duration::from_secs(1)).await;
        b.deposit(&mut LastHost::default(), "a", Instant::now());
        b.deposit(&mut LastHost::default(), "c", Instant::now()); // evicts "b", used least recently
        assert_eq!(b.hosts(), 2);
        assert!(b.withdraw("c", Instant::now()));
        assert!(!b.withdraw("b", Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_host_is_counted_until_it_is_evicted() {
        let b = Budgets::new(
            RetryBudget::new()
                .percent(100)
                .min_per_second(0)
                .max_hosts(1),
        );
        let now = Instant::now();
        let mut last = LastHost::default();
        b.deposit(&mut last, "a", now);
        assert!(last.entry.is_none(), "kept after two calls in a row");
        b.deposit(&mut last, "a", now);
        assert!(last.entry.is_some());
        b.deposit(&mut last, "a", now);
        assert_eq!(retries_allowed(&b, "a", now), 3);
        // Another caller's new host evicts "a": the remembered entry is not
        // counted into any more, and "a" starts again.
        b.deposit(&mut LastHost::default(), "b", now);
        assert_eq!(b.hosts(), 1);
        b.deposit(&mut last, "a", now);
        assert_eq!(retries_allowed(&b, "a", now), 1);
        assert_eq!(retries_allowed(&b, "b", now), 0, "evicted by \"a\"");
        // A different host is looked up, not counted for the one remembered.
        b.deposit(&mut last, "c", now);
        b.deposit(&mut last, "c", now);
        assert_eq!(retries_allowed(&b, "c", now), 2);
        assert_eq!(b.hosts(), 1);
        // Calls that alternate between hosts keep no entry.
        let mut last = LastHost::default();
        for host in ["d", "e", "d", "e", "d"] {
            b.deposit(&mut last, host, now);
            assert!(last.entry.is_none());
        }
    }

    #[test]
    fn concurrent_calls_and_retries_keep_the_share() {
        // Four threads count 1000 calls each, then four race for retries:
        // exactly 20 % of the 4000 calls are granted, none twice.
        let b = budgets(20, 0);
        let now = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        b.deposit(&mut LastHost::default(), "h", now);
                    }
                });
            }
        });
        let granted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while b.withdraw("h", now) {
                        granted.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        assert_eq!(granted.load(Relaxed), 800);
    }

    #[test]
    fn counters_belong_to_their_slot() {
        let c = Counter::default();
        assert_eq!(c.in_window(0), 0);
        c.bump(7);
        c.bump(7);
        assert_eq!(c.in_window(7), 2);
        assert_eq!(c.in_window(16), 2);
        assert_eq!(c.in_window(17), 0, "out of the window");
        assert_eq!(c.in_window(6), 0, "a later slot's count");
        c.bump(17);
        assert_eq!(c.in_window(17), 1, "reset by the new slot");
        // Slot indexes past 2^32 wrap without mixing slots up.
        let far = (1u64 << 32) + 3;
        c.bump(far);
        assert_eq!(c.in_window(far), 1);
        assert_eq!(c.in_window(far + 9), 1);
        assert_eq!(c.in_window(far + 10), 0);
        // A count saturates rather than spill into the slot's index.
        let full = Counter(AtomicU64::new((5 << 32) | LOW));
        full.bump(5);
        assert_eq!(full.in_window(5), LOW);
    }

    #[test]
    fn validation() {
        assert!(RetryBudget::new().validate().is_ok());
        assert!(RetryBudget::new().percent(1001).validate().is_err());
        assert!(
            RetryBudget::new()
                .window(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(RetryBudget::new().max_hosts(0).validate().is_err());
    }
}
