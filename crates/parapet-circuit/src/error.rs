//! [`CircuitOpen`]: the error a call gets, at once, while its authority's
//! circuit is open.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parapet_core::{FailFast, RoundedDuration};
use tokio::time::Instant;

/// What opened a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenedBy {
    /// The calls to the authority failed (too many in a row, or too high a
    /// rate), or a half-open probe failed.
    Failures,
    /// The server asked for a pause: a 429 or 503 with `Retry-After`.
    Server,
}

/// The circuit of this call's authority is open: the call was refused
/// without being sent.
///
/// Its [`source()`](Error::source) is a [`FailFast`], so a retry layer above
/// returns it at once instead of spending attempts on it (the circuit would
/// refuse them the same way); the `FailFast` carries
/// [`retry_after`](Self::retry_after) while the circuit is open, and `None`
/// while a probe is in flight (nobody knows yet).
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use parapet_circuit::{CircuitBreakerLayer, CircuitOpen, CircuitPolicy, OpenedBy};
/// use parapet_core::{BoxError, FailFast};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(CircuitPolicy::default()).unwrap())
///     .service_fn(|_req: http::Request<()>| async {
///         let res = http::Response::builder().status(503).header("retry-after", "20");
///         Ok::<_, BoxError>(res.body(()).unwrap())
///     });
/// let get = || http::Request::get("https://user:pw@api.example.com/").body(()).unwrap();
///
/// // The server's 503 comes back as it is, and opens the circuit for 20 s.
/// let res = svc.ready().await.unwrap().call(get()).await.unwrap();
/// assert_eq!(res.status(), 503);
///
/// let err = svc.ready().await.unwrap().call(get()).await.unwrap_err();
/// let open = err.downcast_ref::<CircuitOpen>().unwrap();
/// assert_eq!(open.retry_after(), Duration::from_secs(20));
/// assert_eq!(open.opened_by(), OpenedBy::Server);
/// assert_eq!(open.authority(), "https://api.example.com:443");
/// assert_eq!(
///     err.to_string(),
///     "circuit open for https://api.example.com:443 on the server's retry-after; the next call may go in 20s"
/// );
/// let fail_fast = err.source().unwrap().downcast_ref::<FailFast>().unwrap();
/// assert_eq!(fail_fast.retry_after(), Some(Duration::from_secs(20)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    authority: Arc<str>,
    reopens_at: Instant,
    retry_after: Duration,
    opened_by: OpenedBy,
    probing: bool,
    fail_fast: FailFast,
}

impl CircuitOpen {
    /// Refused while open until `until`.
    pub(crate) fn open(
        authority: Arc<str>,
        until: Instant,
        now: Instant,
        opened_by: OpenedBy,
    ) -> Self {
        let retry_after = until.saturating_duration_since(now);
        Self {
            authority,
            reopens_at: until,
            retry_after,
            opened_by,
            probing: false,
            fail_fast: FailFast::new(Some(retry_after)),
        }
    }

    /// Refused while another call probes the authority.
    pub(crate) fn probing(authority: Arc<str>, now: Instant, opened_by: OpenedBy) -> Self {
        Self {
            authority,
            reopens_at: now,
            retry_after: Duration::ZERO,
            opened_by,
            probing: true,
            fail_fast: FailFast::new(None),
        }
    }

    /// When the circuit lets a call through again (as a probe). While a
    /// probe is already in flight ([`is_probing`](Self::is_probing)), the
    /// instant of the refusal: the circuit may close as soon as the probe
    /// succeeds.
    #[must_use]
    pub fn reopens_at(&self) -> Instant {
        self.reopens_at
    }

    /// How long until [`reopens_at`](Self::reopens_at), measured when the
    /// call was refused; zero while a probe is in flight.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Whether the server's `Retry-After` or the failures of calls opened
    /// the circuit.
    #[must_use]
    pub fn opened_by(&self) -> OpenedBy {
        self.opened_by
    }

    /// Whether the open time was over and the call was refused because
    /// another call is probing the authority (the circuit is half-open).
    #[must_use]
    pub fn is_probing(&self) -> bool {
        self.probing
    }

    /// The authority whose circuit is open, as `scheme://host:port` (host
    /// lowercased; never the userinfo), or `(no authority)` for requests
    /// that name none.
    #[must_use]
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.probing {
            return write!(
                f,
                "circuit half-open for {}: another call is probing it",
                self.authority
            );
        }
        let by = match self.opened_by {
            OpenedBy::Failures => "after failures",
            OpenedBy::Server => "on the server's retry-after",
        };
        write!(
            f,
            "circuit open for {} {by}; the next call may go in {}",
            self.authority,
            RoundedDuration(self.retry_after)
        )
    }
}

impl Error for CircuitOpen {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.fail_fast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_the_fail_fast_mark() {
        let now = Instant::now();
        let open = CircuitOpen::open(
            "http://a.example:80".into(),
            now + Duration::from_millis(1500),
            now,
            OpenedBy::Failures,
        );
        assert_eq!(
            open.to_string(),
            "circuit open for http://a.example:80 after failures; the next call may go in 1.5s"
        );
        assert!(parapet_core::is_fail_fast(&open));
        let boxed: parapet_core::BoxError = Box::new(open);
        assert!(parapet_core::is_fail_fast(boxed.as_ref()));

        let probing = CircuitOpen::probing("http://a.example:80".into(), now, OpenedBy::Server);
        assert_eq!(
            probing.to_string(),
            "circuit half-open for http://a.example:80: another call is probing it"
        );
        assert!(probing.is_probing());
        assert_eq!(probing.retry_after(), Duration::ZERO);
        let mark = probing
            .source()
            .unwrap()
            .downcast_ref::<FailFast>()
            .unwrap();
        assert_eq!(mark.retry_after(), None);
    }
}
