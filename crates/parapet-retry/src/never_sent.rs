//! Telling "the request never left" apart from "it may have been sent".

use std::error::Error;
use std::io;

/// How deep a source chain is followed before giving up (a guard against
/// cycles in hand-written `source()` implementations).
const MAX_DEPTH: usize = 32;

/// Whether an error proves that the request never reached the server, so
/// that sending it again cannot repeat a side effect, whatever its method.
///
/// The error and its `source()` chain are searched for:
///
/// - a [`std::io::Error`] of kind `ConnectionRefused`, `AddrNotAvailable`,
///   `NetworkUnreachable` or `HostUnreachable` (the connection was never
///   made; `ConnectionReset`, `BrokenPipe` and `TimedOut` do **not**
///   count, since they may come after the request was written);
/// - with the crate feature `hyper-util`, a `hyper_util::client::legacy::Error`
///   whose `is_connect()` is true: the connector failed (DNS, TCP connect,
///   connect timeout, TLS handshake), before any byte of the request was
///   written.
///
/// Why a feature and not a dependency: a connect failure is mostly visible
/// through the `io::Error` at the bottom of the chain, but a DNS failure or
/// a TLS handshake failure is not, and only hyper-util's own predicate says
/// so reliably. The layer is usable over any client, so hyper-util stays
/// optional (off by default); the `parapet` facade, which is built on
/// hyper-util, turns it on.
///
/// Attempt timeouts and all other transport errors return `false`: the
/// request may have been sent, so only an idempotent one is retried.
///
/// ```
/// use std::io;
/// use parapet_retry::request_never_sent;
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert!(request_never_sent(&refused));
/// let reset = io::Error::from(io::ErrorKind::ConnectionReset);
/// assert!(!request_never_sent(&reset));
/// // Wrapped errors are searched too.
/// let wrapped = io::Error::other(io::Error::from(io::ErrorKind::ConnectionRefused));
/// assert!(request_never_sent(&wrapped));
/// ```
#[must_use]
pub fn request_never_sent(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    for _ in 0..MAX_DEPTH {
        let Some(e) = next else {
            return false;
        };
        if connect_failure(e) {
            return true;
        }
        next = match e.downcast_ref::<io::Error>() {
            // `io::Error::source` skips the error it wraps and goes straight
            // to that error's source, so look at the wrapped one itself.
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn Error + 'static)),
                None => e.source(),
            },
            None => e.source(),
        };
    }
    false
}

fn connect_failure(e: &(dyn Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::HostUnreachable
        ) {
            return true;
        }
    }
    #[cfg(feature = "hyper-util")]
    if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        if client.is_connect() {
            return true;
        }
    }
    false
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
}
