//! What the cache did for a response.

/// What the cache did for a call, in the response's extensions.
///
/// ```
/// use parapet_cache::CacheStatus;
///
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(CacheStatus::Hit);
/// assert_eq!(CacheStatus::of(&res), Some(CacheStatus::Hit));
/// assert!(CacheStatus::Hit.is_from_cache());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Answered from the store: nothing was sent.
    Hit,
    /// A stored response was stale; the server answered `304 Not Modified`
    /// to a conditional request, and the stored body was returned with the
    /// stored status and the refreshed headers.
    Revalidated,
    /// Sent to the server: nothing usable was stored (or the stored response
    /// was replaced by the server's new one). The response is stored if the
    /// rules allow, once its body has been read to the end.
    Miss,
    /// Not looked up and not stored: a method other than GET and HEAD (an
    /// unsafe one also invalidates the URI's stored responses), or a
    /// request that is conditional or asks for a range itself.
    Bypass,
}

impl CacheStatus {
    /// The status a response carries, if it went through the cache layer.
    ///
    /// See [`CacheStatus`] for an example.
    #[must_use]
    pub fn of<B>(res: &http::Response<B>) -> Option<Self> {
        res.extensions().get::<Self>().copied()
    }

    /// Whether the body came from the store ([`Hit`](Self::Hit) or
    /// [`Revalidated`](Self::Revalidated)).
    ///
    /// See [`CacheStatus`] for an example.
    #[must_use]
    pub fn is_from_cache(self) -> bool {
        matches!(self, Self::Hit | Self::Revalidated)
    }
}
