//! Hedged requests: a second copy of a slow idempotent read.
//!
//! [`HedgeLayer`] sends a request and, when no answer has come after a
//! delay, sends a copy of it; the first answer wins and the other copy is
//! dropped (its connection closed or its HTTP/2 stream reset, by the
//! client beneath). A slow answer from one server, one connection or one
//! pool is thereby cut short at the cost of a few extra requests: with the
//! delay at the host's 95th percentile, about 5 % more.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use http::{Request, Response};
//! use parapet_core::ReplayBody;
//! use parapet_retry::{HedgeLayer, HedgePolicy};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // A stand-in server whose first answer takes a second, the next 10 ms.
//! let hits = Arc::new(AtomicU32::new(0));
//! let seen = Arc::clone(&hits);
//! let server = service_fn(move |_req: Request<ReplayBody>| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let wait = if n == 0 { 1000 } else { 10 };
//!         tokio::time::sleep(Duration::from_millis(wait)).await;
//!         Ok::<_, Infallible>(Response::new(format!("copy {n}")))
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(HedgeLayer::new(HedgePolicy::fixed(Duration::from_millis(50))))
//!     .service(server);
//!
//! let start = tokio::time::Instant::now();
//! let res = client.oneshot(Request::get("http://api.test/items").body(ReplayBody::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.body(), "copy 1");
//! assert_eq!(start.elapsed(), Duration::from_millis(60));
//! # }
//! ```
//!
//! # What is hedged
//!
//! - **Only reads that may be sent twice**: by default the safe methods
//!   GET, HEAD and OPTIONS (RFC 9110 §9.2.1). A request's
//!   [`Idempotency`] extension decides instead
//!   when it has one: `Idempotent` hedges any method (the explicit opt-in
//!   for a POST that is really a query), `NotIdempotent` none. No POST,
//!   PATCH, PUT or DELETE is ever hedged without it.
//! - **Only a body that can be sent again**: the body is wrapped in a
//!   [`ReplayBody`] (one an outer layer armed,
//!   such as the retry layer's, is reused); past its cap, or when its
//!   stream failed, no hedge is sent.
//! - **When**: after [`HedgePolicy::fixed`] delay, or after the host's
//!   recent [`HedgePolicy::percentile`] of latency (no hedge until the
//!   host has [`min_samples`](HedgePolicy::min_samples) answers); at most
//!   [`max_hedges`](HedgePolicy::max_hedges) (1) per request, each a delay
//!   after the one before.
//! - **Who wins**: the first copy to answer with a response (whatever its
//!   status: a 503 is an answer; the retry layer above judges it). A copy
//!   that fails with an error while another is in flight is forgotten
//!   (the other may still answer); when every copy has failed, the last
//!   error is returned. A first copy that fails before its hedge is due
//!   returns its error at once: that is the retry layer's business.
//! - **How many in all**: with [`RetryLayer::hedge_layer`](crate::RetryLayer::hedge_layer),
//!   each hedge is spent from the retry layer's
//!   [budget](crate::RetryBudget) like a retry (or costs a retry's tokens
//!   from its [quota](crate::RetryQuota), never refunded): a hedge the
//!   budget refuses is simply not sent, and hedges and retries together
//!   stay within it. A [`HedgeLayer::new`] stands alone, with no budget:
//!   its hedges are bounded by the policy only (the percentile's share,
//!   `max_hedges`), so prefer the percentile mode there.
//!
//! Each hedge carries a [`HedgeCopy`] extension (1 for the first hedge);
//! the first copy carries none. Every other extension the request arrived
//! with, the retry layer's [`Attempt`](parapet_core::Attempt) included, is
//! on every copy: a hedge is the same attempt, sent twice.
//!
//! # Where it goes in a stack
//!
//! Just below the retry layer: each attempt may be hedged, and a hedge
//! passes the throttle, the rate limit, auth, the concurrency limit and the
//! attempt timeout below like any request that leaves (it takes its own
//! slot and its own token, and cannot outrun a server that said "wait").
//! Above the retry layer, a hedge would copy the whole call, retries and
//! waits included; below the concurrency limit, it would share its first
//! copy's slot and pass the rate limit unseen.
//!
//! ```text
//! deadline → retry → HEDGE → throttle → rate limit → auth
//!     → concurrency limit → attempt timeout → transport
//! ```
//!
//! ```
//! use std::time::Duration;
//! use parapet_retry::{HedgePolicy, RetryLayer};
//! use tower::ServiceBuilder;
//!
//! let retry = RetryLayer::default();
//! let hedge = retry.hedge_layer(HedgePolicy::percentile(95.0));
//! let stack = ServiceBuilder::new().layer(retry).layer(hedge);
//! # let _ = stack;
//! ```
//!
//! # Cost
//!
//! A request that is not hedged (a POST, or hedging off) costs one branch
//! and its body's `ReplayBody` (none when it already is one). A hedgeable
//! request costs a clock read, one box holding a copy of its head (the
//! header map and extensions cloned), the service cloned and a timer; in
//! percentile mode, a lookup under a shared read lock to find the delay and
//! one to record the answer's latency (every tenth of a window, one
//! recorder copies the window and selects the percentile). A hedge costs
//! its request and a boxed future.
//!
//! # Trace events
//!
//! All at `DEBUG`, with `method` and `host`: `sending a hedge` (`hedge`,
//! its number; `delay_ms`), `not hedging: retry budget exhausted` or
//! `not hedging: retry quota exhausted`, `not hedging: the request body cannot be
//! replayed` (`error`), `not hedging: the service is not ready` (`error`).

mod future;
mod policy;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, Request, Response};
use http_body::Body;
use parapet_core::{BoxError, Idempotency, ReplayBody, clock, is_safe_method};
use tower_layer::Layer;
use tower_service::Service;

use self::future::Race;
pub use self::future::ResponseFuture;
pub use self::policy::HedgePolicy;
use self::policy::{HedgeDelay, Latencies};
use crate::future::host_of;
use crate::layer::{RetryLayer, Shared};

/// Marks a hedge: a copy of a request sent because the first had no
/// answer yet. The first copy carries none.
///
/// ```
/// use parapet_retry::HedgeCopy;
///
/// let ext = http::Extensions::new();
/// assert_eq!(HedgeCopy::get(&ext), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HedgeCopy {
    number: u32,
}

impl HedgeCopy {
    /// Which hedge this is: 1 for the first.
    #[must_use]
    pub const fn number(self) -> u32 {
        self.number
    }

    /// The value in these (request) extensions, if any.
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<Self> {
        ext.get::<Self>().copied()
    }
}

/// State shared by a hedge layer, its services and their clones.
#[derive(Debug)]
pub(crate) struct HedgeShared {
    policy: HedgePolicy,
    /// Percentile mode only.
    latencies: Option<Latencies>,
    /// The retry layer whose budget or quota hedges are spent from.
    limits: Option<Arc<Shared>>,
}

impl HedgeShared {
    fn new(policy: HedgePolicy, limits: Option<Arc<Shared>>) -> Arc<Self> {
        let policy = policy.normalised();
        let latencies = match policy.delay {
            HedgeDelay::Percentile(p) => Some(Latencies::new(&policy, p)),
            HedgeDelay::Fixed(_) => None,
        };
        Arc::new(Self {
            policy,
            latencies,
            limits,
        })
    }
}

/// Applies [`Hedge`] to a service; see the [module docs](crate::hedge).
///
/// Every service it makes, and every clone of them, shares the latencies
/// learnt (percentile mode) and the budget (when made by
/// [`RetryLayer::hedge_layer`]).
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    shared: Arc<HedgeShared>,
}

impl HedgeLayer {
    /// A layer hedging by `policy`, on its own: no budget bounds its hedges
    /// but the policy. Beneath a [`RetryLayer`], prefer
    /// [`RetryLayer::hedge_layer`].
    #[must_use]
    pub fn new(policy: HedgePolicy) -> Self {
        Self {
            shared: HedgeShared::new(policy, None),
        }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &HedgePolicy {
        &self.shared.policy
    }
}

impl RetryLayer {
    /// A [`HedgeLayer`] that spends its hedges from this layer's
    /// [budget](crate::RetryBudget) or [quota](crate::RetryQuota), like
    /// retries; with neither, it has none. Put it just below this layer.
    #[must_use]
    pub fn hedge_layer(&self, policy: HedgePolicy) -> HedgeLayer {
        HedgeLayer {
            shared: HedgeShared::new(policy, Some(Arc::clone(&self.shared))),
        }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Sends a copy of a slow idempotent read and takes the first answer; see
/// the [module docs](crate::hedge).
///
/// The request body is wrapped in a [`ReplayBody`] (reusing one that is
/// already there) and the inner service sees `Request<ReplayBody>`. Cheap
/// to clone: the policy, the latencies and the budget are shared.
#[derive(Debug, Clone)]
pub struct Hedge<S> {
    inner: S,
    shared: Arc<HedgeShared>,
}

impl<S> Hedge<S> {
    /// Wraps `inner`, hedging by `policy`, with no budget.
    pub fn new(inner: S, policy: HedgePolicy) -> Self {
        Self {
            inner,
            shared: HedgeShared::new(policy, None),
        }
    }

    /// A layer making this service; see [`HedgeLayer::new`].
    #[must_use]
    pub fn layer(policy: HedgePolicy) -> HedgeLayer {
        HedgeLayer::new(policy)
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &HedgePolicy {
        &self.shared.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Whether a request may be hedged: its `Idempotency` extension, else a
/// safe method.
fn may_hedge<B>(req: &Request<B>) -> bool {
    match req.extensions().get::<Idempotency>() {
        Some(Idempotency::Idempotent) => true,
        Some(Idempotency::NotIdempotent) => false,
        None => is_safe_method(req.method()),
    }
}

impl<S, B, ResBody> Service<Request<B>> for Hedge<S>
where
    S: Service<Request<ReplayBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        let req = req.map(|body| ReplayBody::new(body, policy.replay_cap));
        let race = if policy.max_hedges > 0 && may_hedge(&req) {
            self.race(&req)
        } else {
            None
        };
        ResponseFuture::new(self.inner.call(req), race)
    }
}

impl<S: Clone> Hedge<S> {
    /// What a hedgeable request needs to be hedged: a copy of its head, a
    /// handle on its body, a clone of the service, the delay.
    fn race<F>(&self, req: &Request<ReplayBody>) -> Option<std::pin::Pin<Box<Race<S, F>>>> {
        let shared = &self.shared;
        let body = req.body().try_replay().ok()?;
        let delay = match (&shared.policy.delay, &shared.latencies) {
            (HedgeDelay::Fixed(d), _) => Some(*d),
            (HedgeDelay::Percentile(_), Some(latencies)) => latencies.delay(host_of(req.uri())),
            (HedgeDelay::Percentile(_), None) => None,
        };
        if delay.is_none() && shared.latencies.is_none() {
            return None;
        }
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        head.headers_mut().clone_from(req.headers());
        *head.extensions_mut() = req.extensions().clone();
        Some(Race::boxed(
            self.inner.clone(),
            Arc::clone(shared),
            head,
            body,
            clock::now(),
            delay,
            shared.policy.max_hedges,
        ))
    }
}

#[cfg(test)]
mod tests;
