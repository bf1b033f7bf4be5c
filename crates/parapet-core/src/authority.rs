//! Keying per-authority state (scheme, host, port) by a request, without
//! allocating: what the per-host layers (throttle, rate limits, circuit
//! breaker, adaptive rate) share.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::uri::{self, Scheme};
use http::{HeaderValue, Request};

/// A request's scheme, as far as keys care.
#[derive(Clone, Copy)]
enum SchemeRef<'a> {
    None,
    Http,
    Https,
    Other(&'a str),
}

impl<'a> SchemeRef<'a> {
    fn of(scheme: Option<&'a Scheme>) -> Self {
        match scheme {
            None => Self::None,
            Some(s) if *s == Scheme::HTTP => Self::Http,
            Some(s) if *s == Scheme::HTTPS => Self::Https,
            Some(s) => Self::Other(s.as_str()),
        }
    }

    const fn default_port(self) -> u16 {
        match self {
            Self::Https => 443,
            Self::Http | Self::None => 80,
            Self::Other(_) => 0,
        }
    }

    const fn tag(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Http => 1,
            Self::Https => 2,
            Self::Other(_) => 3,
        }
    }

    fn as_str(self) -> &'a str {
        match self {
            Self::None => "",
            Self::Http => "http",
            Self::Https => "https",
            Self::Other(s) => s,
        }
    }
}

/// Where a request goes: scheme, host (compared without regard to ASCII
/// case) and port (the scheme's default when the URI names none), borrowed
/// from the request.
///
/// Made by one short scan of the authority string, without allocating;
/// the maps are looked up with it directly (see [`AuthorityKey`]), and only
/// an authority seen for the first time is copied ([`Authority`]).
#[derive(Clone, Copy)]
pub struct AuthorityRef<'a> {
    scheme: SchemeRef<'a>,
    host: &'a str,
    port: u16,
}

impl<'a> AuthorityRef<'a> {
    /// The authority a request is addressed to: its URI's, or its `Host`
    /// header's when the URI is relative, or "none" when it has neither.
    pub fn of<B>(req: &'a Request<B>) -> Self {
        let uri = req.uri();
        let scheme = SchemeRef::of(uri.scheme());
        let authority = match uri.authority() {
            Some(a) => Some(a.as_str()),
            None => req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
        };
        Self::parse(scheme, authority)
    }

    fn parse(scheme: SchemeRef<'a>, authority: Option<&'a str>) -> Self {
        let Some(authority) = authority else {
            return Self {
                scheme,
                host: "",
                port: 0,
            };
        };
        // One backward scan: the port is after the last ':' that is not
        // inside an IPv6 literal's brackets, the host after the last '@'
        // (never the userinfo: it is not part of the key, and may carry
        // credentials).
        let bytes = authority.as_bytes();
        let (mut start, mut colon, mut bracketed) = (0, None, false);
        for (i, &b) in bytes.iter().enumerate().rev() {
            match b {
                b'@' => {
                    start = i + 1;
                    break;
                }
                b']' => bracketed = true,
                b':' if !bracketed && colon.is_none() => colon = Some(i),
                _ => {}
            }
        }
        let end = colon.unwrap_or(bytes.len());
        let host = authority.get(start..end).unwrap_or_default();
        let port = colon
            .and_then(|c| authority.get(c + 1..))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(scheme.default_port());
        Self { scheme, host, port }
    }

    /// An owned copy for a map to keep: the host lowercased, nothing else.
    #[must_use]
    pub fn to_authority(self) -> Authority {
        Authority {
            scheme: match self.scheme {
                SchemeRef::None => SchemeOwned::None,
                SchemeRef::Http => SchemeOwned::Http,
                SchemeRef::Https => SchemeOwned::Https,
                SchemeRef::Other(s) => SchemeOwned::Other(s.to_ascii_lowercase().into()),
            },
            host: self.host.to_ascii_lowercase().into(),
            port: self.port,
        }
    }

    /// The host, as written (compare with [`eq_ignore_ascii_case`](str::eq_ignore_ascii_case)).
    #[must_use]
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The port as a `server.port` label: the URI's, else the scheme's
    /// default; `None` when neither is known (no scheme or an unknown one,
    /// and no port given).
    #[must_use]
    pub fn known_port(&self) -> Option<u16> {
        match self.scheme {
            _ if self.port == 0 => None,
            SchemeRef::Http | SchemeRef::Https => Some(self.port),
            SchemeRef::None | SchemeRef::Other(_) => {
                (self.port != self.scheme.default_port()).then_some(self.port)
            }
        }
    }

    /// The port: the authority's, else the scheme's default (443, 80), 0
    /// when neither is known.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl PartialEq for AuthorityRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        let scheme = match (self.scheme, other.scheme) {
            (SchemeRef::Other(a), SchemeRef::Other(b)) => eq_ignore_case(a, b),
            (a, b) => a.tag() == b.tag(),
        };
        self.port == other.port && scheme && eq_ignore_case(self.host, other.host)
    }
}

impl Eq for AuthorityRef<'_> {}

impl Hash for AuthorityRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word for scheme and port, then the host, case-folded.
        state.write_u64(u64::from(self.scheme.tag()) << 16 | u64::from(self.port));
        hash_folded(self.host, state);
        if let SchemeRef::Other(s) = self.scheme {
            hash_folded(s, state);
        }
    }
}

impl fmt::Debug for AuthorityRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            SchemeRef::None => write!(f, "{}:{}", self.host, self.port),
            s => write!(f, "{}://{}:{}", s.as_str(), self.host, self.port),
        }
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    // The common case (both lowercase, as written) is a plain comparison.
    a == b || a.eq_ignore_ascii_case(b)
}

/// Hashes `s` eight bytes at a time with every byte's 0x20 bit set, which
/// maps ASCII upper case onto lower case (and merges a few punctuation pairs
/// that hosts never tell apart anyway): equal keys hash equally, without
/// lowercasing into a buffer.
fn hash_folded<H: Hasher>(s: &str, state: &mut H) {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        state.write_u64(u64::from_le_bytes(word) | FOLD);
    }
    let rest = chunks.remainder();
    let mut word = [0u8; 8];
    if let Some(head) = word.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    // The length goes into the last word, so "a" and "a\0" differ.
    state.write_u64((u64::from_le_bytes(word) | FOLD) ^ (bytes.len() as u64) << 56);
}

#[derive(Clone, PartialEq, Eq)]
enum SchemeOwned {
    None,
    Http,
    Https,
    Other(Box<str>),
}

/// An [`AuthorityRef`] that a map keeps: a compact owned copy (scheme, the
/// host lowercased, port), never the userinfo, so that a stored key neither
/// pins a request's buffers nor retains credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Authority {
    scheme: SchemeOwned,
    host: Box<str>,
    port: u16,
}

impl Authority {
    fn as_ref(&self) -> AuthorityRef<'_> {
        AuthorityRef {
            scheme: match &self.scheme {
                SchemeOwned::None => SchemeRef::None,
                SchemeOwned::Http => SchemeRef::Http,
                SchemeOwned::Https => SchemeRef::Https,
                SchemeOwned::Other(s) => SchemeRef::Other(s),
            },
            host: &self.host,
            port: self.port,
        }
    }
}

impl Authority {
    /// The authority as people read it: `https://api.example.com:443`,
    /// `host:port` without a scheme, or `(no authority)`; never userinfo.
    #[must_use]
    pub fn label(&self) -> Arc<str> {
        let scheme = match &self.scheme {
            SchemeOwned::None if self.host.is_empty() => return Arc::from("(no authority)"),
            SchemeOwned::None => return format!("{}:{}", self.host, self.port).into(),
            SchemeOwned::Http => "http",
            SchemeOwned::Https => "https",
            SchemeOwned::Other(s) => s,
        };
        format!("{scheme}://{}:{}", self.host, self.port).into()
    }
}

impl Hash for Authority {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// What a map keyed by [`Authority`] can be looked up with: an owned key or
/// one borrowed from a request, so that a lookup allocates nothing.
///
/// (`HashMap::get` wants `&Q` where the key type is `Borrow<Q>`; a trait
/// object lets the owned key lend itself as the same `Q` a request's
/// borrowed parts are.)
pub trait AuthorityKey {
    /// The key's parts, borrowed.
    fn parts(&self) -> AuthorityRef<'_>;
}

impl AuthorityKey for AuthorityRef<'_> {
    fn parts(&self) -> AuthorityRef<'_> {
        *self
    }
}

impl AuthorityKey for Authority {
    fn parts(&self) -> AuthorityRef<'_> {
        self.as_ref()
    }
}

impl PartialEq for dyn AuthorityKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AuthorityKey + '_ {}

impl Hash for dyn AuthorityKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl<'a> Borrow<dyn AuthorityKey + 'a> for Authority {
    fn borrow(&self) -> &(dyn AuthorityKey + 'a) {
        self
    }
}

/// A request's authority kept for later (the throttle reads the response's
/// signals after the request is gone): reference-counted clones of the
/// request's own authority bytes, parsed only when used.
#[derive(Clone)]
pub struct Target {
    scheme: Option<Scheme>,
    source: Source,
}

#[derive(Clone)]
enum Source {
    None,
    Uri(uri::Authority),
    Host(HeaderValue),
}

impl Target {
    /// Captures where `req` goes, without allocating for `http`/`https`
    /// (cloning a `Scheme`, an `Authority` or a `HeaderValue` of a request
    /// only bumps a reference count).
    pub fn of<B>(req: &Request<B>) -> Self {
        let uri = req.uri();
        let source = match uri.authority() {
            Some(a) => Source::Uri(a.clone()),
            None => match req.headers().get(http::header::HOST) {
                Some(h) => Source::Host(h.clone()),
                None => Source::None,
            },
        };
        Self {
            scheme: uri.scheme().cloned(),
            source,
        }
    }

    /// The key it stands for.
    pub fn key(&self) -> AuthorityRef<'_> {
        let authority = match &self.source {
            Source::None => None,
            Source::Uri(a) => Some(a.as_str()),
            Source::Host(h) => h.to_str().ok(),
        };
        AuthorityRef::parse(SchemeRef::of(self.scheme.as_ref()), authority)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn key(uri: &str) -> Authority {
        AuthorityRef::of(&Request::get(uri).body(()).unwrap()).to_authority()
    }

    fn hash<K: Hash + ?Sized>(a: &K) -> u64 {
        crate::HostHashBuilder::default().hash_one(a)
    }

    #[test]
    fn scheme_host_and_port_make_the_key() {
        assert_eq!(
            key("http://Example.com/a"),
            key("http://example.COM:80/b?c")
        );
        assert_eq!(key("https://example.com/"), key("https://example.com:443/"));
        assert_eq!(key("http://example.com:/"), key("http://example.com/"));
        assert_ne!(key("http://example.com/"), key("https://example.com/"));
        assert_ne!(key("http://example.com:8080/"), key("http://example.com/"));
        assert_ne!(key("http://example.com/"), key("http://example.org/"));
        assert_ne!(key("http://example.com/"), key("http://example.co/"));
        assert_eq!(key("HTTP://example.com/"), key("http://example.com/"));
        assert_eq!(key("ftp://example.com/"), key("FTP://EXAMPLE.com/"));
        assert_ne!(key("ftp://example.com/"), key("sftp://example.com/"));
        assert_eq!(
            hash(&key("http://Example.com/a")),
            hash(&key("http://example.com/"))
        );
        assert_eq!(key("http://[::1]/").as_ref().host(), "[::1]");
        assert_eq!(key("http://[::1]/").as_ref().port(), 80);
        assert_eq!(key("http://[::1]:8080/").as_ref().port(), 8080);
        assert_ne!(key("http://[::1]:8080/"), key("http://[::1]/"));
    }

    #[test]
    fn a_borrowed_key_finds_the_owned_one() {
        let mut map =
            std::collections::HashMap::<Authority, usize, crate::HostHashBuilder>::default();
        for (i, host) in ["a.example", "B.example", "c.example:81"]
            .iter()
            .enumerate()
        {
            map.insert(key(&format!("http://{host}/")), i);
        }
        let uris = [
            ("http://A.EXAMPLE/x", Some(0)),
            ("http://b.example:80/", Some(1)),
            ("http://u:p@c.example:81/", Some(2)),
            ("https://a.example/", None),
            ("http://c.example/", None),
        ];
        for (uri, want) in uris {
            let req = Request::get(uri).body(()).unwrap();
            let k = AuthorityRef::of(&req);
            assert_eq!(hash(&k), hash(&k.to_authority()), "{uri}");
            assert_eq!(map.get(&k as &dyn AuthorityKey).copied(), want, "{uri}");
        }
    }

    #[test]
    fn owned_keys_are_compact_and_equal() {
        let long = format!("http://user:secret@{}.example.com:81/", "H".repeat(100));
        let req = Request::get(&long).body(()).unwrap();
        let k = AuthorityRef::of(&req);
        let c = k.to_authority();
        assert_eq!(&*c.host, format!("{}.example.com", "h".repeat(100)));
        assert!(k == c.as_ref());
        assert_eq!(hash(&k), hash(&c));
        let target = Target::of(&req);
        assert!(target.key() == k);
        let debug = format!("{c:?} {k:?} {target:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains(":81"));
    }

    #[test]
    fn userinfo_is_not_part_of_the_key() {
        assert_eq!(key("http://a:b@example.com/"), key("http://example.com/"));
        assert_eq!(
            key("http://a@b@example.com:80/"),
            key("http://example.com/")
        );
    }

    #[test]
    fn relative_uris_use_the_host_header() {
        let req = Request::get("/x")
            .header("host", "api.example.com:8443")
            .body(())
            .unwrap();
        let k = AuthorityRef::of(&req);
        assert_eq!(k.host(), "api.example.com");
        assert_eq!(k.port(), 8443);
        assert!(Target::of(&req).key() == k);
        let bare = Request::get("/x").body(()).unwrap();
        let none = AuthorityRef::of(&bare);
        assert!(none == none.to_authority().as_ref());
        assert!(none != k);
        assert!(Target::of(&bare).key() == none);
    }

    #[test]
    fn labels_never_show_userinfo() {
        let t = Target::of(
            &Request::get("https://user:secret@API.example.com/v1")
                .body(())
                .unwrap(),
        );
        let label = t.key().to_authority().label();
        assert_eq!(&*label, "https://api.example.com:443");
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn requests_without_an_authority_share_one_key() {
        let bare = Target::of(&Request::get("/x").body(()).unwrap());
        let other = Target::of(&Request::get("*").body(()).unwrap());
        assert!(bare.key() == other.key());
        assert_eq!(&*bare.key().to_authority().label(), "(no authority)");
    }
}
