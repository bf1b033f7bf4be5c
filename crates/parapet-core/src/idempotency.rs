//! Which requests may be sent more than once.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};

use crate::random::random_u64;

/// `idempotency-key` (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether RFC 9110 §9.2.2 defines the method as idempotent: GET, HEAD,
/// OPTIONS, TRACE, PUT and DELETE.
///
/// ```
/// use http::Method;
/// assert!(parapet_core::is_idempotent_method(&Method::PUT));
/// assert!(!parapet_core::is_idempotent_method(&Method::POST));
/// ```
#[must_use]
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether RFC 9110 §9.2.1 defines the method as safe: GET, HEAD, OPTIONS and
/// TRACE.
#[must_use]
pub fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// A per-request override of the idempotency rules, carried in the request's
/// extensions. It beats the method table and the `Idempotency-Key` rule.
///
/// ```
/// use http::{Method, Request};
/// use parapet_core::{Idempotency, IdempotencyRules};
///
/// // A POST that the caller knows is safe to repeat (a search endpoint, say).
/// let mut req = Request::post("/search").body(()).unwrap();
/// req.extensions_mut().insert(Idempotency::Idempotent);
/// assert!(IdempotencyRules::new().is_idempotent(&req));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Treat the request as safe to send again.
    Idempotent,
    /// Never send the request twice, whatever its method.
    NotIdempotent,
}

/// The rules that decide whether a request may be sent more than once.
///
/// In order: a per-request [`Idempotency`] override; then, when opted in, an
/// `Idempotency-Key` header (the server dedupes, so a repeat is harmless);
/// then the RFC 9110 method table.
///
/// Default: the method table and overrides only; an `Idempotency-Key` is not
/// trusted until [`trust_idempotency_key`](Self::trust_idempotency_key) is set,
/// because only the API's documentation can say that its server honours it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdempotencyRules {
    trust_key: bool,
}

impl IdempotencyRules {
    /// The default rules.
    #[must_use]
    pub const fn new() -> Self {
        Self { trust_key: false }
    }

    /// Count a request with an `Idempotency-Key` header as idempotent.
    /// Default: `false`.
    #[must_use]
    pub const fn trust_idempotency_key(mut self, trust: bool) -> Self {
        self.trust_key = trust;
        self
    }

    /// Whether `Idempotency-Key` headers are trusted.
    #[must_use]
    pub const fn trusts_idempotency_key(&self) -> bool {
        self.trust_key
    }

    /// Whether the request may be sent more than once.
    #[must_use]
    pub fn is_idempotent<B>(&self, req: &Request<B>) -> bool {
        self.classify(req.method(), req.headers(), req.extensions())
    }

    /// The same decision from the parts of a request.
    #[must_use]
    pub fn classify(&self, method: &Method, headers: &HeaderMap, ext: &http::Extensions) -> bool {
        match ext.get::<Idempotency>() {
            Some(Idempotency::Idempotent) => true,
            Some(Idempotency::NotIdempotent) => false,
            None => {
                is_idempotent_method(method)
                    || (self.trust_key && headers.contains_key(IDEMPOTENCY_KEY))
            }
        }
    }
}

/// A fresh idempotency key: a random (version 4) UUID.
///
/// Send the same key on every attempt of one logical request and never reuse
/// it for another. Many APIs (Stripe among them) take it bare, which is what
/// [`header_value`](Self::header_value) gives; the IETF draft defines it as a
/// structured-field string, which is what
/// [`structured_header_value`](Self::structured_header_value) gives.
///
/// ```
/// use parapet_core::{IdempotencyKey, IDEMPOTENCY_KEY};
///
/// let mut req = http::Request::post("/payments").body(()).unwrap();
/// let key = IdempotencyKey::ensure(&mut req).clone();
/// // A second call keeps the key that is there.
/// assert_eq!(IdempotencyKey::ensure(&mut req), &key);
/// assert_eq!(req.headers()[IDEMPOTENCY_KEY].len(), 36);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey([u8; 36]);

impl IdempotencyKey {
    /// A new random key.
    #[must_use]
    pub fn new() -> Self {
        let hi = (random_u64() & !0xF000) | 0x4000; // version 4
        let lo = (random_u64() >> 2) | (0b10 << 62); // RFC 9562 variant
        Self(crate::random::format_uuid(hi, lo))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // The buffer holds only ASCII hex digits and dashes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bare form: `8e03978e-40d5-43e8-bc93-6894a57f9324`.
    #[must_use]
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The structured-field string form: `"8e03978e-40d5-43e8-bc93-6894a57f9324"`.
    #[must_use]
    pub fn structured_header_value(&self) -> HeaderValue {
        let mut v = Vec::with_capacity(38);
        v.push(b'"');
        v.extend_from_slice(&self.0);
        v.push(b'"');
        HeaderValue::from_bytes(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Adds a fresh bare key unless the request already carries one, and
    /// returns the key in force.
    pub fn ensure<B>(req: &mut Request<B>) -> &HeaderValue {
        req.headers_mut()
            .entry(IDEMPOTENCY_KEY)
            .or_insert_with(|| Self::new().header_value())
    }
}

impl Default for IdempotencyKey {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method) -> Request<()> {
        Request::builder().method(method).uri("/").body(()).unwrap()
    }

    #[test]
    fn rfc9110_method_table() {
        let rules = IdempotencyRules::new();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(rules.is_idempotent(&req(m.clone())), "{m}");
        }
        for m in [
            Method::POST,
            Method::PATCH,
            Method::CONNECT,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert!(!rules.is_idempotent(&req(m.clone())), "{m}");
        }
        assert!(is_safe_method(&Method::GET) && !is_safe_method(&Method::PUT));
    }

    #[test]
    fn override_beats_the_method() {
        let rules = IdempotencyRules::new().trust_idempotency_key(true);
        let mut post = req(Method::POST);
        post.extensions_mut().insert(Idempotency::Idempotent);
        assert!(rules.is_idempotent(&post));
        let mut get = req(Method::GET);
        get.extensions_mut().insert(Idempotency::NotIdempotent);
        assert!(!rules.is_idempotent(&get));
        // And beats a trusted key.
        let mut keyed = req(Method::POST);
        IdempotencyKey::ensure(&mut keyed);
        keyed.extensions_mut().insert(Idempotency::NotIdempotent);
        assert!(!rules.is_idempotent(&keyed));
    }

    #[test]
    fn idempotency_key_counts_only_when_opted_in() {
        let mut post = req(Method::POST);
        IdempotencyKey::ensure(&mut post);
        assert!(!IdempotencyRules::new().is_idempotent(&post));
        assert!(
            IdempotencyRules::new()
                .trust_idempotency_key(true)
                .is_idempotent(&post)
        );
    }

    #[test]
    fn keys_are_fresh_v4_uuids() {
        let a = IdempotencyKey::new();
        let b = IdempotencyKey::new();
        assert_ne!(a, b);
        let s = a.as_str();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(s.matches('-').count(), 4);
        assert_eq!(
            a.structured_header_value().to_str().unwrap(),
            format!("\"{s}\"")
        );
    }

    #[test]
    fn ensure_keeps_a_callers_key() {
        let mut r = req(Method::POST);
        r.headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_static("mine"));
        assert_eq!(IdempotencyKey::ensure(&mut r), "mine");
    }
}
