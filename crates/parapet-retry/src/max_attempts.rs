//! [`MaxAttempts`]: a per-request override of the policy's attempt count.

use http::Extensions;

/// A request extension that sets the most attempts of this one call, the
/// first included, in place of the policy's
/// [`max_attempts`](crate::RetryPolicyBuilder::max_attempts).
///
/// `MaxAttempts(1)` turns retries off for the call (and, as with a policy
/// of one attempt, the request head is not copied); `MaxAttempts(0)` counts
/// as 1. Everything else still applies: which requests may be sent again,
/// which failures are retried, the backoff, the deadline and the
/// [budget](crate::RetryBudget). The [`Attempt`](parapet_core::Attempt)
/// each retry carries states this maximum.
///
/// The extension stays on the request (and on each retry's copy), so a
/// second retry layer beneath reads it too.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use http::{Request, Response, StatusCode};
/// use parapet_core::ReplayBody;
/// use parapet_retry::{MaxAttempts, RetryLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// // A stand-in server that always answers 503.
/// let hits = Arc::new(AtomicU32::new(0));
/// let seen = Arc::clone(&hits);
/// let server = service_fn(move |_req: Request<ReplayBody>| {
///     seen.fetch_add(1, Ordering::SeqCst);
///     async { Ok::<_, Infallible>(Response::builder().status(503).body(String::new()).unwrap()) }
/// });
/// // The policy allows 3 attempts; this call asks for 5.
/// let client = ServiceBuilder::new().layer(RetryLayer::default()).service(server);
/// let mut req = Request::get("http://api.test/items").body(String::new()).unwrap();
/// req.extensions_mut().insert(MaxAttempts(5));
///
/// let res = client.oneshot(req).await.unwrap();
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(hits.load(Ordering::SeqCst), 5);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxAttempts(pub u32);

impl MaxAttempts {
    /// The value in these (request) extensions, if any.
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }

    /// The attempt count this override allows: at least 1.
    #[must_use]
    pub fn attempts(self) -> u32 {
        self.0.max(1)
    }
}
