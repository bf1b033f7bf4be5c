//! What the server saw of one request.

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::time::Instant;

/// One request as the server received it, kept for assertions.
///
/// An arrival is recorded once the request's head and body have been read,
/// before the server starts on its reply (before any
/// [`delay`](crate::Reply::delay)). So by the time a client sees anything of
/// the reply (a status, an error, a reset), the arrival is already in
/// [`Server::arrivals`](crate::Server::arrivals).
///
/// One exception: for [`Reply::reset`](crate::Reply::reset) the server resets
/// the connection without reading the body, so that arrival is recorded when
/// the head has been read, with an empty `body`, `body_len` 0 and the hash of
/// no bytes.
///
/// Values of `authorization`, `proxy-authorization` and `cookie` headers are
/// marked sensitive, so `Debug` does not print them; they are still readable
/// from [`headers`](Self::headers).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::{Reply, Server};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let server = Server::start().await;
/// server.on("/echo").reply(Reply::ok());
///
/// let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
/// tcp.write_all(b"POST /echo?x=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
///     .await
///     .unwrap();
/// let mut answer = String::new();
/// tcp.read_to_string(&mut answer).await.unwrap();
/// assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
///
/// let seen = &server.arrivals()[0];
/// assert_eq!(seen.method, http::Method::POST);
/// assert_eq!(seen.path, "/echo");
/// assert_eq!(seen.query.as_deref(), Some("x=1"));
/// assert_eq!(seen.header("host"), Some("a"));
/// assert_eq!(seen.body, "hello");
/// assert_eq!(seen.body_len, 5);
/// assert_eq!(seen.body_hash, parapet_testkit::body_hash(b"hello"));
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Arrival {
    /// When the request had been read (head and body).
    pub at: Instant,
    /// Which connection it came on: the server numbers the connections it
    /// accepts 1, 2, 3, ... in order.
    pub connection: u64,
    /// The request method.
    pub method: Method,
    /// The path of the request target, without the query (for an
    /// absolute-form target, the path part of the URI).
    pub path: String,
    /// The query, without the `?`; `None` when the target had no `?`.
    pub query: Option<String>,
    /// The request headers, as sent.
    pub headers: HeaderMap,
    /// The body, decoded from chunked transfer coding if it was chunked.
    pub body: Bytes,
    /// `body.len()`.
    pub body_len: usize,
    /// [`body_hash`](crate::body_hash) of the body.
    pub body_hash: u64,
}

impl Arrival {
    /// The first value of the header `name` as text, if present and visible
    /// ASCII.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 replaced by U+FFFD).
    #[must_use]
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The 64-bit hash the server records for every body
/// ([`Arrival::body_hash`]): FNV-1a, stable across runs, platforms and
/// versions, so a test may compare it with a constant. It is not a
/// cryptographic hash.
///
/// ```
/// use parapet_testkit::body_hash;
/// assert_eq!(body_hash(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(body_hash(b"abc"), body_hash(b"abc"));
/// assert_ne!(body_hash(b"abc"), body_hash(b"abd"));
/// ```
#[must_use]
pub fn body_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(body_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(body_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(body_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
