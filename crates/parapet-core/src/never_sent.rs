//! Telling "the request never left" apart from "it may have been sent".

use std::error::Error;
use std::io;

/// How deep a source chain is followed before giving up (a guard against
/// cycles in hand-written `source()` implementations).
const MAX_DEPTH: usize = 32;

/// Whether an error proves that the request never reached the server, so
/// that sending it again cannot repeat a side effect, whatever its method.
///
/// The error and its `source()` chain are searched (up to 32 levels deep):
///
/// - With the crate feature `hyper-util`, a
///   `hyper_util::client::legacy::Error` in the chain decides alone: the
///   answer is its `is_connect()`, true when the connector failed (DNS, TCP
///   connect, connect timeout, TLS handshake, proxy tunnel) before any byte
///   of the request was written. Nothing beneath it is looked at: an
///   `io::Error` under a non-connect hyper error came from a connection
///   that was already established, where the request may have been written.
/// - Otherwise, a [`std::io::Error`] of kind `ConnectionRefused` (the peer
///   refused the connection) or `AddrNotAvailable` (no local address could
///   be bound) anywhere in the chain.
///
/// `HostUnreachable` and `NetworkUnreachable` do **not** count: Linux
/// reports them (`EHOSTUNREACH`, `ENETUNREACH`) not only for a connect that
/// failed but also for an established connection whose retransmissions
/// timed out after an ICMP error, that is after the request may have been
/// written. Where they come from a failed connect, hyper-util's connector
/// marks the error as a connect error, and that answer is trusted.
/// `ConnectionReset`, `BrokenPipe`, `TimedOut` and every other error do not
/// count either: the request may have been sent, so only an idempotent one
/// may be sent again.
///
/// Why a feature and not a dependency: a DNS failure or a TLS handshake
/// failure is not visible as an `io::Error` at all, and only hyper-util's
/// own predicate says reliably on which side of the first written byte an
/// error happened. Code using another client goes without it; the `parapet`
/// facade, built on hyper-util, turns it on (through `parapet-retry`'s
/// feature of the same name).
///
/// ```
/// use std::io;
/// use parapet_core::request_never_sent;
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert!(request_never_sent(&refused));
/// let reset = io::Error::from(io::ErrorKind::ConnectionReset);
/// assert!(!request_never_sent(&reset));
/// // Linux also reports this after the request was written.
/// let unreachable = io::Error::from(io::ErrorKind::HostUnreachable);
/// assert!(!request_never_sent(&unreachable));
/// // Wrapped errors are searched too.
/// let wrapped = io::Error::other(io::Error::from(io::ErrorKind::ConnectionRefused));
/// assert!(request_never_sent(&wrapped));
/// ```
#[must_use]
pub fn request_never_sent(error: &(dyn Error + 'static)) -> bool {
    let mut refused = false;
    let mut next = Some(error);
    for _ in 0..MAX_DEPTH {
        let Some(e) = next else {
            break;
        };
        #[cfg(feature = "hyper-util")]
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            // NOTE: hyper-util knows whether the connector failed; what lies
            // beneath it may come from an established connection.
            return client.is_connect();
        }
        next = match e.downcast_ref::<io::Error>() {
            Some(io) => {
                refused |= matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable
                );
                // `io::Error::source` skips the error it wraps and goes
                // straight to that error's source, so look at the wrapped
                // one itself.
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn Error + 'static)),
                    None => e.source(),
                }
            }
            None => e.source(),
        };
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Wrap(Box<dyn Error + Send + Sync>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn refused_anywhere_in_the_chain() {
        let deep = Wrap(Box::new(Wrap(Box::new(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )))));
        assert!(request_never_sent(&deep));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(deep);
        assert!(request_never_sent(&*boxed));
        let unbound = Wrap(Box::new(io::Error::from(io::ErrorKind::AddrNotAvailable)));
        assert!(request_never_sent(&unbound));
    }

    #[test]
    fn errors_after_the_write_do_not_count() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::Other,
        ] {
            assert!(!request_never_sent(&Wrap(Box::new(io::Error::from(kind)))));
        }
        assert!(!request_never_sent(&Wrap("plain".into())));
    }

    #[test]
    fn unreachable_host_or_network_may_come_after_the_write() {
        for kind in [
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
        ] {
            let wrapped = Wrap(Box::new(io::Error::other(io::Error::from(kind))));
            assert!(!request_never_sent(&wrapped), "{kind:?}");
        }
    }

    #[test]
    fn a_cycle_is_not_followed_forever() {
        #[derive(Debug)]
        struct Loop;
        impl fmt::Display for Loop {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("loop")
            }
        }
        impl Error for Loop {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&Loop)
            }
        }
        assert!(!request_never_sent(&Loop));
    }

    #[cfg(feature = "hyper-util")]
    mod hyper_util_client {
        use super::super::request_never_sent;
        use bytes::Bytes;
        use http_body_util::Empty;
        use hyper::rt::{Read, ReadBufCursor, Write};
        use hyper_util::client::legacy::Client;
        use hyper_util::client::legacy::connect::{Connected, Connection};
        use hyper_util::rt::TokioExecutor;
        use std::io;
        use std::pin::Pin;
        use std::task::{Context, Poll};

        #[tokio::test]
        async fn a_refused_connect_through_hyper_util_was_never_sent() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            drop(listener);

            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
            let err = client.get(uri).await.unwrap_err();

            assert!(err.is_connect(), "{err:?}");
            assert!(request_never_sent(&err));
        }

        /// A connection that was made, takes every byte written to it, and
        /// then fails reading the answer the way Linux fails an established
        /// connection whose host became unreachable.
        struct Unreachable;

        impl Connection for Unreachable {
            fn connected(&self) -> Connected {
                Connected::new()
            }
        }

        impl Read for Unreachable {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::ErrorKind::HostUnreachable.into()))
            }
        }

        impl Write for Unreachable {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }

        #[tokio::test]
        async fn host_unreachable_after_the_write_through_hyper_util_may_have_been_sent() {
            let client =
                Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(ConnectUnreachable);
            let err = client
                .get("http://127.0.0.1:9/".parse().unwrap())
                .await
                .unwrap_err();

            assert!(!err.is_connect(), "{err:?}");
            let mut io_kind = None;
            let mut cause = std::error::Error::source(&err);
            while let Some(e) = cause {
                if let Some(io) = e.downcast_ref::<io::Error>() {
                    io_kind = Some(io.kind());
                }
                cause = e.source();
            }
            assert_eq!(io_kind, Some(io::ErrorKind::HostUnreachable), "{err:?}");
            assert!(!request_never_sent(&err));
        }

        /// A connector (a `tower::Service<Uri>`) whose every connection is
        /// [`Unreachable`].
        #[derive(Clone)]
        struct ConnectUnreachable;

        impl tower_service::Service<http::Uri> for ConnectUnreachable {
            type Response = Unreachable;
            type Error = io::Error;
            type Future = std::future::Ready<io::Result<Unreachable>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, _: http::Uri) -> Self::Future {
                std::future::ready(Ok(Unreachable))
            }
        }
    }
}
