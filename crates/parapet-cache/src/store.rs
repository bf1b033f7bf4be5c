//! Where cached responses live: the [`Store`] trait, its keys and entries,
//! and the in-memory [`MemoryStore`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_cache_semantics::CachePolicy;

/// The primary key of a stored response: its request's method and
/// effective URI (RFC 9111 §2), such as `GET http://api.example.com/v1/items?page=2`.
///
/// Responses that differ by the request headers their `Vary` names share a
/// key; a [`Store`] keeps them side by side as variants
/// ([`CachedResponse::variant`]).
///
/// ```
/// use parapet_cache::CacheKey;
///
/// let req = http::Request::get("http://api.example.com/v1/items?page=2").body(()).unwrap();
/// let key = CacheKey::from_request(&req);
/// assert_eq!(key.as_str(), "GET http://api.example.com/v1/items?page=2");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// The key of `method` on `uri`. A URI without an authority (origin
    /// form) is completed with the `Host` header's value when there is one.
    ///
    /// ```
    /// use http::{HeaderValue, Method, Uri};
    /// use parapet_cache::CacheKey;
    ///
    /// let host = HeaderValue::from_static("api.example.com");
    /// let key = CacheKey::new(&Method::HEAD, &Uri::from_static("/v1/items"), Some(&host));
    /// assert_eq!(key.as_str(), "HEAD //api.example.com/v1/items");
    /// ```
    #[must_use]
    pub fn new(method: &Method, uri: &Uri, host: Option<&HeaderValue>) -> Self {
        let key = match (uri.authority(), host.and_then(|h| h.to_str().ok())) {
            (None, Some(host)) => format!("{method} //{host}{uri}"),
            _ => format!("{method} {uri}"),
        };
        Self(key.into())
    }

    /// The key of a request: its method, URI and (for a URI without an
    /// authority) its `Host` header.
    ///
    /// ```
    /// use parapet_cache::CacheKey;
    ///
    /// let req = http::Request::head("http://example.com/").body(()).unwrap();
    /// assert_eq!(CacheKey::from_request(&req).as_str(), "HEAD http://example.com/");
    /// ```
    #[must_use]
    pub fn from_request<B>(req: &Request<B>) -> Self {
        Self::new(
            req.method(),
            req.uri(),
            req.headers().get(http::header::HOST),
        )
    }

    /// The key as text: the method, a space, the URI.
    ///
    /// ```
    /// use http::{Method, Uri};
    /// use parapet_cache::CacheKey;
    ///
    /// let key = CacheKey::new(&Method::GET, &Uri::from_static("http://a.test/x"), None);
    /// assert_eq!(key.as_str(), "GET http://a.test/x");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CacheKey").field(&self.as_str()).finish()
    }
}

/// One stored response: its headers and the rules that say when it may be
/// reused (an [`http_cache_semantics::CachePolicy`], kept private), and its
/// whole body.
///
/// Only the cache layer makes these; a [`Store`] keeps them and hands them
/// back. Its `Debug` shows no header: the stored request headers may carry
/// credentials.
///
/// ```
/// use parapet_cache::{CacheKey, CachedResponse, Store};
///
/// fn report(store: &impl Store, key: &CacheKey) {
///     for stored in store.get(key) {
///         println!("{} bytes of body, {} counted, status {}",
///             stored.body().len(), stored.size(), stored.status());
///     }
/// }
/// # report(&parapet_cache::MemoryStore::new(1024), &CacheKey::new(&http::Method::GET, &http::Uri::from_static("/"), None));
/// ```
pub struct CachedResponse {
    pub(crate) policy: CachePolicy,
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) variant: u64,
    pub(crate) credentials: Option<u64>,
    pub(crate) size: usize,
}

/// What every entry is counted for on top of its bytes: the policy's own
/// fields, the map and list slots, the `Arc`.
const ENTRY_OVERHEAD: usize = 512;

impl CachedResponse {
    pub(crate) fn new(
        policy: CachePolicy,
        status: StatusCode,
        body: Bytes,
        variant: u64,
        credentials: Option<u64>,
        headers: usize,
    ) -> Self {
        let size = body
            .len()
            .saturating_add(headers)
            .saturating_add(ENTRY_OVERHEAD);
        Self {
            policy,
            status,
            body,
            variant,
            credentials,
            size,
        }
    }

    /// The stored body, whole.
    ///
    /// See [`CachedResponse`] for an example.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The stored response's status.
    ///
    /// See [`CachedResponse`] for an example.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Which variant of its key this is: a hash of the request header
    /// values its `Vary` names (and of the request's credentials). A store
    /// keeps one response per key and variant; a new one replaces the old.
    ///
    /// ```
    /// # use parapet_cache::{CacheKey, Store, MemoryStore};
    /// # let store = MemoryStore::new(1024);
    /// # let key = CacheKey::new(&http::Method::GET, &http::Uri::from_static("/"), None);
    /// let variants: std::collections::HashSet<u64> =
    ///     store.get(&key).iter().map(|r| r.variant()).collect();
    /// assert!(variants.is_empty());
    /// ```
    #[must_use]
    pub fn variant(&self) -> u64 {
        self.variant
    }

    /// The bytes this entry counts against a store's bound: the body, the
    /// stored request and response headers, and a fixed 512 for the rest.
    ///
    /// See [`CachedResponse`] for an example.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }
}

impl fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("variant", &self.variant)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The bytes a header map holds: names and values.
pub(crate) fn headers_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len().saturating_add(v.len()))
        .fold(0, usize::saturating_add)
}

/// Storage for cached responses, keyed by [`CacheKey`], several variants
/// per key.
///
/// The trait is synchronous, on purpose: the cache layer looks a request up
/// in `call` and stores a body when it ends, and with a synchronous store a
/// hit is answered with no future to box, no task to wake and no await
/// point, and the layer's response future stays a nameable type. Keep each
/// method short (a lock held for a map operation, as [`MemoryStore`] does);
/// a store that needs I/O (a disk, a remote cache) does not fit this trait.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use parapet_cache::{CacheKey, CacheLayer, CachedResponse, Store};
///
/// /// Unbounded, one variant per key: a sketch, not for production.
/// #[derive(Default)]
/// struct Everything(Mutex<HashMap<CacheKey, Arc<CachedResponse>>>);
///
/// impl Store for Everything {
///     fn get(&self, key: &CacheKey) -> Vec<Arc<CachedResponse>> {
///         self.0.lock().unwrap().get(key).cloned().into_iter().collect()
///     }
///     fn put(&self, key: CacheKey, response: Arc<CachedResponse>) {
///         self.0.lock().unwrap().insert(key, response);
///     }
///     fn remove(&self, key: &CacheKey) {
///         self.0.lock().unwrap().remove(key);
///     }
/// }
///
/// let layer = CacheLayer::new(Everything::default());
/// # drop(layer);
/// ```
pub trait Store: Send + Sync + 'static {
    /// Every stored variant under `key` (empty when there is none). The
    /// layer picks the one the request matches.
    fn get(&self, key: &CacheKey) -> Vec<Arc<CachedResponse>>;

    /// Stores `response` under `key`, replacing the stored response with
    /// the same [`variant`](CachedResponse::variant), if any.
    fn put(&self, key: CacheKey, response: Arc<CachedResponse>);

    /// Removes every variant under `key`.
    fn remove(&self, key: &CacheKey);
}

/// An in-memory [`Store`] bounded in bytes: when a new response would pass
/// the bound, the least recently used responses are evicted first.
///
/// Each response counts its [`size`](CachedResponse::size) (its body, its
/// headers and a fixed overhead); the total never exceeds the bound, and a
/// response larger than the whole bound is not stored. Reading a key marks
/// all its variants as used. Clones share the same entries, so keep one to
/// look inside a store a layer uses.
///
/// ```
/// use parapet_cache::{CacheLayer, MemoryStore};
///
/// let store = MemoryStore::new(64 * 1024 * 1024); // 64 MiB
/// let layer = CacheLayer::new(store.clone());
/// assert_eq!(store.len(), 0);
/// assert_eq!(store.bytes(), 0);
/// # drop(layer);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Lru>>,
    max_bytes: usize,
}

#[derive(Default)]
struct Lru {
    map: HashMap<CacheKey, Vec<Slot>>,
    /// Use order: the smallest tick is the least recently used.
    order: BTreeMap<u64, (CacheKey, u64)>,
    tick: u64,
    bytes: usize,
    len: usize,
}

struct Slot {
    response: Arc<CachedResponse>,
    tick: u64,
}

impl Lru {
    fn next_tick(&mut self) -> u64 {
        self.tick = self.tick.wrapping_add(1);
        self.tick
    }

    /// Removes the variant `variant` of `key`, if stored.
    fn remove_variant(&mut self, key: &CacheKey, variant: u64) {
        let Some(slots) = self.map.get_mut(key) else {
            return;
        };
        if let Some(i) = slots.iter().position(|s| s.response.variant == variant) {
            let slot = slots.swap_remove(i);
            self.order.remove(&slot.tick);
            self.bytes = self.bytes.saturating_sub(slot.response.size);
            self.len = self.len.saturating_sub(1);
        }
        if slots.is_empty() {
            self.map.remove(key);
        }
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes` (see [`CachedResponse::size`]
    /// for what counts).
    ///
    /// ```
    /// let store = parapet_cache::MemoryStore::new(1 << 20);
    /// assert_eq!(store.max_bytes(), 1 << 20);
    /// ```
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Lru::default())),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // NOTE: no code under this lock panics on anything from the
        // network; a poisoned lock still holds consistent counts.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bound given to [`new`](Self::new).
    ///
    /// See [`new`](Self::new) for an example.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The bytes stored now, never more than [`max_bytes`](Self::max_bytes).
    ///
    /// See [`MemoryStore`] for an example.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many responses are stored (every variant counts).
    ///
    /// See [`MemoryStore`] for an example.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether nothing is stored.
    ///
    /// ```
    /// assert!(parapet_cache::MemoryStore::new(1024).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every stored response.
    ///
    /// ```
    /// let store = parapet_cache::MemoryStore::new(1024);
    /// store.clear();
    /// assert!(store.is_empty());
    /// ```
    pub fn clear(&self) {
        *self.lock() = Lru::default();
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &CacheKey) -> Vec<Arc<CachedResponse>> {
        let mut lru = self.lock();
        let lru = &mut *lru;
        let Some(slots) = lru.map.get_mut(key) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots.iter_mut() {
            lru.tick = lru.tick.wrapping_add(1);
            if let Some(entry) = lru.order.remove(&slot.tick) {
                lru.order.insert(lru.tick, entry);
            }
            slot.tick = lru.tick;
            out.push(Arc::clone(&slot.response));
        }
        out
    }

    fn put(&self, key: CacheKey, response: Arc<CachedResponse>) {
        let mut lru = self.lock();
        // The new response supersedes the old one even when it is too
        // large to keep: the old one would be out of date.
        lru.remove_variant(&key, response.variant);
        if response.size > self.max_bytes {
            return;
        }
        while lru.bytes.saturating_add(response.size) > self.max_bytes {
            let Some((_, (old_key, old_variant))) = lru.order.pop_first() else {
                break;
            };
            lru.remove_variant(&old_key, old_variant);
        }
        let tick = lru.next_tick();
        lru.order.insert(tick, (key.clone(), response.variant));
        lru.bytes = lru.bytes.saturating_add(response.size);
        lru.len = lru.len.saturating_add(1);
        lru.map
            .entry(key)
            .or_default()
            .push(Slot { response, tick });
    }

    fn remove(&self, key: &CacheKey) {
        let mut lru = self.lock();
        if let Some(slots) = lru.map.remove(key) {
            for slot in slots {
                lru.order.remove(&slot.tick);
                lru.bytes = lru.bytes.saturating_sub(slot.response.size);
                lru.len = lru.len.saturating_sub(1);
            }
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lru = self.lock();
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &lru.bytes)
            .field("len", &lru.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(variant: u64, body: usize) -> Arc<CachedResponse> {
        let req = Request::get("http://a.test/").body(()).unwrap();
        let res = http::Response::new(());
        let policy = CachePolicy::new(&req, &res);
        Arc::new(CachedResponse::new(
            policy,
            StatusCode::OK,
            Bytes::from(vec![0; body]),
            variant,
            None,
            0,
        ))
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Method::GET, &path.parse().unwrap(), None)
    }

    #[test]
    fn the_total_never_passes_the_bound() {
        let store = MemoryStore::new(3 * (ENTRY_OVERHEAD + 100));
        for i in 0..20 {
            store.put(key(&format!("/{i}")), entry(0, 100));
            assert!(store.bytes() <= store.max_bytes());
        }
        assert_eq!(store.len(), 3);
        assert!(store.get(&key("/16")).is_empty());
        assert_eq!(store.get(&key("/19")).len(), 1);
    }

    #[test]
    fn a_response_larger_than_the_bound_is_not_stored_and_drops_the_old_one() {
        let store = MemoryStore::new(ENTRY_OVERHEAD + 100);
        store.put(key("/"), entry(7, 10));
        store.put(key("/"), entry(7, 1000));
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn variants_are_kept_side_by_side_and_replaced_one_by_one() {
        let store = MemoryStore::new(1 << 20);
        store.put(key("/"), entry(1, 10));
        store.put(key("/"), entry(2, 10));
        store.put(key("/"), entry(1, 20));
        let mut bodies: Vec<_> = store
            .get(&key("/"))
            .iter()
            .map(|r| (r.variant(), r.body().len()))
            .collect();
        bodies.sort_unstable();
        assert_eq!(bodies, [(1, 20), (2, 10)]);
        store.remove(&key("/"));
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }
}
