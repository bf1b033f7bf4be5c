//! The optional HTTP cache (cargo feature `cache`): [`parapet_cache`]'s
//! private RFC 9111 cache, placed right below the call span.
//!
//! ```text
//! request id → call span → CACHE → deadline → retry → redirect → ...
//! ```
//!
//! Above the deadline and retry: a fresh hit is answered without an
//! attempt, a deadline timer, a limiter token or credentials (nothing is
//! sent); a stale entry's revalidation is an ordinary call through
//! everything below (retried, limited, authorised, timed). Below the
//! request id and the call span, so a hit is still a traced call with an
//! id. A response says which it was through
//! [`Response::cache_status`](crate::Response::cache_status).
//!
//! Off unless [`ClientBuilder::cache`](crate::ClientBuilder::cache) is
//! given one; built without the feature, the layer is not compiled in.

/// What the builder keeps for the cache layer.
#[cfg(feature = "cache")]
pub(crate) type CacheSetting = parapet_cache::CacheLayer;

/// Without the `cache` feature there is no cache layer: this type has no
/// value, so `Option<CacheSetting>` is always `None`.
#[cfg(not(feature = "cache"))]
#[derive(Debug, Clone)]
pub(crate) enum CacheSetting {}

#[cfg(not(feature = "cache"))]
impl<S> tower::Layer<S> for CacheSetting {
    type Service = S;

    fn layer(&self, _inner: S) -> S {
        match *self {}
    }
}

#[cfg(feature = "cache")]
impl crate::ClientBuilder {
    /// A private HTTP cache (RFC 9111, [`parapet_cache`]): fresh GET and
    /// HEAD answers come from the store, stale ones are revalidated
    /// (`If-None-Match` / `If-Modified-Since`, a 304 refreshes the entry),
    /// and only what the server allows is stored (`no-store`, `private`,
    /// `Vary`, credentials kept apart). A hit spends no attempt, no
    /// deadline, no limiter token and no credentials. Default: none.
    /// Needs the cargo feature `cache`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet::cache::{CacheLayer, CacheStatus};
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/config").reply(Reply::json("{}").header("cache-control", "max-age=60"));
    /// let client = parapet::Client::builder()
    ///     .cache(CacheLayer::in_memory(16 * 1024 * 1024))
    ///     .build()
    ///     .unwrap();
    /// let first = client.get(&api.url("/config")).send().await.unwrap();
    /// assert_eq!(first.cache_status(), Some(CacheStatus::Miss));
    /// assert_eq!(first.text().await.unwrap(), "{}");
    /// let second = client.get(&api.url("/config")).send().await.unwrap();
    /// assert_eq!(second.cache_status(), Some(CacheStatus::Hit));
    /// assert_eq!(second.text().await.unwrap(), "{}");
    /// assert_eq!(api.hits("/config"), 1);
    /// # }
    /// ```
    pub fn cache(mut self, cache: impl Into<Option<parapet_cache::CacheLayer>>) -> Self {
        self.layers.cache = cache.into();
        self
    }
}

#[cfg(feature = "cache")]
impl crate::Response {
    /// Whether the answer came from the cache ([`ClientBuilder::cache`](crate::ClientBuilder::cache)):
    /// a hit, a revalidated entry, a miss or a bypass; `None` without a
    /// cache. Needs the cargo feature `cache`.
    #[must_use]
    pub fn cache_status(&self) -> Option<parapet_cache::CacheStatus> {
        self.extensions()
            .get::<parapet_cache::CacheStatus>()
            .copied()
    }
}
