//! [`CacheLayer`]: the cache's configuration.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_layer::Layer;

use crate::service::Cache;
use crate::store::{MemoryStore, Store};

/// The per-entry body limit by default: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

/// Where the cache reads the time.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The configuration a service and its response futures share.
pub(crate) struct Config {
    pub(crate) max_body_size: usize,
    pub(crate) heuristic: Option<f32>,
    pub(crate) clock: Clock,
    /// Keys the credential fingerprints, so a stored entry never holds a
    /// plain hash an attacker could precompute.
    pub(crate) hasher: RandomState,
}

impl Config {
    pub(crate) fn options(&self) -> http_cache_semantics::CacheOptions {
        let defaults = http_cache_semantics::CacheOptions::default();
        http_cache_semantics::CacheOptions {
            // A private cache: `private` responses and responses to
            // requests with `Authorization` are stored, `s-maxage` ignored.
            shared: false,
            cache_heuristic: self.heuristic.unwrap_or(0.0),
            // `immutable` without a max-age would otherwise get a day of
            // freshness: a heuristic too.
            immutable_min_time_to_live: if self.heuristic.is_some() {
                defaults.immutable_min_time_to_live
            } else {
                Duration::ZERO
            },
            ..defaults
        }
    }
}

/// A clock on tokio's time: the wall-clock time when the layer was made,
/// advanced by `tokio::time`, so paused-time tests move it.
fn tokio_clock() -> Clock {
    let wall = SystemTime::now();
    let start = tokio::time::Instant::now();
    Arc::new(move || wall + start.elapsed())
}

/// A private HTTP cache (RFC 9111) for outbound calls, as a tower layer.
///
/// Holds the store and the configuration; [`layer`](Layer::layer) wraps a
/// service in a [`Cache`]. Cloning it is cheap and clones share the store.
///
/// ```
/// use parapet_cache::{CacheLayer, MemoryStore};
///
/// let layer = CacheLayer::new(MemoryStore::new(64 << 20))
///     .max_body_size(256 * 1024)
///     .heuristic_freshness(None);
/// # drop(layer);
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) store: Arc<dyn Store>,
    max_body_size: usize,
    heuristic: Option<f32>,
    clock: Option<Clock>,
    hasher: RandomState,
}

impl CacheLayer {
    /// A cache over `store`, with the defaults: bodies up to 1 MiB stored
    /// ([`DEFAULT_MAX_BODY_SIZE`]), no heuristic freshness, time from
    /// `tokio::time`.
    ///
    /// ```
    /// use parapet_cache::{CacheLayer, MemoryStore};
    ///
    /// let store = MemoryStore::new(8 << 20);
    /// let layer = CacheLayer::new(store.clone());
    /// assert!(store.is_empty());
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn new(store: impl Store) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A cache over a store shared behind an `Arc`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use parapet_cache::{CacheLayer, MemoryStore, Store};
    ///
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new(8 << 20));
    /// let layer = CacheLayer::from_arc(Arc::clone(&store));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn from_arc(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            heuristic: None,
            clock: None,
            hasher: RandomState::new(),
        }
    }

    /// A cache over a new [`MemoryStore`] of `max_bytes`.
    ///
    /// ```
    /// let layer = parapet_cache::CacheLayer::in_memory(16 << 20);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn in_memory(max_bytes: usize) -> Self {
        Self::new(MemoryStore::new(max_bytes))
    }

    /// The largest body stored. A response whose `Content-Length` says more
    /// passes through without being copied; one without a length is copied
    /// as it streams until it passes the limit, then only streamed. Either
    /// way the caller reads it whole. Default: 1 MiB.
    ///
    /// ```
    /// let layer = parapet_cache::CacheLayer::in_memory(16 << 20).max_body_size(64 * 1024);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Heuristic freshness (RFC 9111 §4.2.2) for responses with a
    /// `Last-Modified` and no explicit lifetime: fresh for this fraction of
    /// the time since they were last modified (0.1 is the usual choice), and
    /// `immutable` responses without a `max-age` fresh for a day. A fraction
    /// below 0 or not a number counts as 0, one above 1 as 1. Default:
    /// `None`, off: only `max-age` and `Expires` make a response fresh, and
    /// the others are revalidated every time (when they carry a validator).
    ///
    /// ```
    /// let layer = parapet_cache::CacheLayer::in_memory(16 << 20).heuristic_freshness(0.1);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn heuristic_freshness(mut self, fraction: impl Into<Option<f32>>) -> Self {
        self.heuristic = fraction.into().map(|f| {
            if f.is_nan() || f < 0.0 {
                0.0
            } else {
                f.min(1.0)
            }
        });
        self
    }

    /// The clock the cache reads: freshness, ages and the stored responses'
    /// `Date` and `Age` use it. Default: the wall-clock time when the
    /// service is made, advanced by `tokio::time` (so paused-time tests
    /// move it, and a wall-clock jump does not).
    ///
    /// ```
    /// use std::time::SystemTime;
    ///
    /// let layer = parapet_cache::CacheLayer::in_memory(16 << 20).clock(SystemTime::now);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn clock(mut self, now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(now));
        self
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        let config = Config {
            max_body_size: self.max_body_size,
            heuristic: self.heuristic,
            clock: self.clock.clone().unwrap_or_else(tokio_clock),
            hasher: self.hasher.clone(),
        };
        Cache::from_parts(inner, Arc::clone(&self.store), Arc::new(config))
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("max_body_size", &self.max_body_size)
            .field("heuristic_freshness", &self.heuristic)
            .field(
                "clock",
                &if self.clock.is_some() {
                    "custom"
                } else {
                    "tokio"
                },
            )
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_body_size", &self.max_body_size)
            .field("heuristic_freshness", &self.heuristic)
            .finish_non_exhaustive()
    }
}
