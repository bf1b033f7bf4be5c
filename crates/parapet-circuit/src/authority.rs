//! Keying circuits by authority: scheme, host (ASCII case-insensitive) and
//! port (the scheme's default when the URI names none).
//!
//! A request's key is borrowed from its own bytes, so that looking a circuit
//! up allocates nothing; only an authority seen for the first time is copied
//! into the table ([`Key`]), without its userinfo.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::uri::{self, Scheme};
use http::{HeaderValue, Request};

/// A scheme, as far as keys care.
#[derive(Clone, Copy, Debug)]
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
}

/// Where a request goes, borrowed from the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyRef<'a> {
    scheme: SchemeRef<'a>,
    host: &'a str,
    port: u16,
}

impl<'a> KeyRef<'a> {
    /// The key every request without an authority shares.
    const NONE: KeyRef<'static> = KeyRef {
        scheme: SchemeRef::None,
        host: "",
        port: 0,
    };

    fn parse(scheme: SchemeRef<'a>, authority: &'a str) -> Self {
        // The host is after the last '@' (the userinfo is never part of a
        // key: it may carry credentials); the port after the last ':' that
        // is not inside an IPv6 literal's brackets.
        let host_port = authority
            .rsplit_once('@')
            .map_or(authority, |(_, rest)| rest);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().ok()),
            _ => (host_port, None),
        };
        Self {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        }
    }

    /// An owned copy for the table: the host and an unusual scheme
    /// lowercased, and the text [`CircuitOpen`](crate::CircuitOpen) shows.
    pub(crate) fn to_key(self) -> Key {
        Key {
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
}

impl PartialEq for KeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        let scheme = match (self.scheme, other.scheme) {
            (SchemeRef::Other(a), SchemeRef::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a.tag() == b.tag(),
        };
        self.port == other.port && scheme && self.host.eq_ignore_ascii_case(other.host)
    }
}

impl Eq for KeyRef<'_> {}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.scheme.tag()) << 16 | u64::from(self.port));
        hash_lowercase(self.host, state);
        if let SchemeRef::Other(s) = self.scheme {
            hash_lowercase(s, state);
        }
    }
}

/// Hashes `s` as if lowercased, eight bytes at a time, without a buffer.
fn hash_lowercase<H: Hasher>(s: &str, state: &mut H) {
    let mut rest = s.as_bytes();
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(8));
        let mut word = [0u8; 8];
        for (w, b) in word.iter_mut().zip(chunk) {
            *w = b.to_ascii_lowercase();
        }
        state.write_u64(u64::from_le_bytes(word));
        rest = tail;
    }
    state.write_usize(s.len());
}

#[derive(Clone, PartialEq, Eq)]
enum SchemeOwned {
    None,
    Http,
    Https,
    Other(Box<str>),
}

/// A [`KeyRef`] the table keeps: scheme, lowercased host and port; never
/// the userinfo.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key {
    scheme: SchemeOwned,
    host: Box<str>,
    port: u16,
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
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

    /// The authority as people read it: `https://api.example.com:443`, or
    /// `(no authority)`.
    pub(crate) fn label(&self) -> Arc<str> {
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

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// What the table can be looked up with: an owned key or one borrowed from a
/// request. (`HashMap::get` wants a `&Q` the key type borrows as; a trait
/// object lets both kinds of key lend themselves as the same `Q`.)
pub(crate) trait Lookup {
    fn parts(&self) -> KeyRef<'_>;
}

impl Lookup for KeyRef<'_> {
    fn parts(&self) -> KeyRef<'_> {
        *self
    }
}

impl Lookup for Key {
    fn parts(&self) -> KeyRef<'_> {
        self.as_ref()
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Lookup + '_ {}

impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl<'a> Borrow<dyn Lookup + 'a> for Key {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

/// A request's authority, kept by its response future to record the
/// outcome once the request itself is gone. Cloning a request's scheme,
/// authority or `Host` value only bumps a reference count.
#[derive(Clone)]
pub(crate) struct Target {
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
    /// Where `req` goes: its URI's authority, or its `Host` header's when
    /// the URI is relative, or nowhere in particular.
    pub(crate) fn of<B>(req: &Request<B>) -> Self {
        let uri = req.uri();
        let source = match uri.authority() {
            Some(a) => Source::Uri(a.clone()),
            None => req
                .headers()
                .get(http::header::HOST)
                .map_or(Source::None, |h| Source::Host(h.clone())),
        };
        Self {
            scheme: uri.scheme().cloned(),
            source,
        }
    }

    /// The key it stands for.
    pub(crate) fn key(&self) -> KeyRef<'_> {
        let authority = match &self.source {
            Source::None => None,
            Source::Uri(a) => Some(a.as_str()),
            Source::Host(h) => h.to_str().ok(),
        };
        match authority {
            Some(a) if !a.is_empty() => KeyRef::parse(SchemeRef::of(self.scheme.as_ref()), a),
            _ => KeyRef::NONE,
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key().to_key().label())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    use parapet_core::HostHashBuilder;

    use super::*;

    fn target(uri: &str) -> Target {
        Target::of(&Request::get(uri).body(()).unwrap())
    }

    fn hash(k: &dyn Lookup) -> u64 {
        HostHashBuilder::default().hash_one(k)
    }

    #[test]
    fn case_default_ports_and_userinfo_do_not_split_an_authority() {
        let same = [
            "http://example.com/a",
            "HTTP://EXAMPLE.COM:80/b",
            "http://user:secret@Example.com/",
        ];
        let first = target(same[0]);
        for uri in same {
            let t = target(uri);
            assert_eq!(t.key(), first.key(), "{uri}");
            assert_eq!(hash(&t.key()), hash(&first.key()), "{uri}");
            assert_eq!(hash(&t.key().to_key()), hash(&first.key()), "{uri}");
        }
        for other in [
            "https://example.com/",
            "http://example.com:8080/",
            "http://example.org/",
        ] {
            assert_ne!(target(other).key(), first.key(), "{other}");
        }
        assert_eq!(target("https://a.example/").key().port, 443);
        assert_eq!(target("http://[::1]/").key().host, "[::1]");
        assert_eq!(target("http://[::1]:8080/").key().port, 8080);
    }

    #[test]
    fn a_borrowed_key_finds_the_owned_one() {
        let mut map: HashMap<Key, u32, HostHashBuilder> = HashMap::default();
        map.insert(target("http://A.example:81/").key().to_key(), 1);
        let t = target("http://a.EXAMPLE:81/x");
        assert_eq!(map.get(&t.key() as &dyn Lookup), Some(&1));
        assert_eq!(
            map.get(&target("http://a.example/").key() as &dyn Lookup),
            None
        );
    }

    #[test]
    fn labels_never_show_userinfo() {
        let t = target("https://user:secret@API.example.com/v1");
        let label = t.key().to_key().label();
        assert_eq!(&*label, "https://api.example.com:443");
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn requests_without_an_authority_share_one_key() {
        let bare = target("/x");
        let other = Target::of(&Request::get("*").body(()).unwrap());
        assert_eq!(bare.key(), other.key());
        assert_eq!(&*bare.key().to_key().label(), "(no authority)");
        let host = Target::of(
            &Request::get("/x")
                .header("host", "api.example.com:8443")
                .body(())
                .unwrap(),
        );
        assert_eq!(host.key().host, "api.example.com");
        assert_eq!(host.key().port, 8443);
    }
}
