//! [`CircuitBreaker`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use parapet_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::authority::Target;
use crate::future::ResponseFuture;
use crate::layer::CircuitBreakerLayer;
use crate::policy::{CircuitPolicy, InvalidCircuitPolicy};
use crate::state::Shared;

/// Fails calls fast while their authority's circuit is open; made by
/// [`CircuitBreakerLayer`]. See the [crate docs](crate) for the rules.
///
/// Cloning is cheap: the circuits are behind an `Arc`, shared with every
/// clone.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` in a breaker with `policy` and circuits of its own.
    ///
    /// # Errors
    ///
    /// [`InvalidCircuitPolicy`], as [`CircuitBreakerLayer::new`].
    pub fn new(inner: S, policy: CircuitPolicy) -> Result<Self, InvalidCircuitPolicy> {
        Ok(CircuitBreakerLayer::new(policy)?.layer(inner))
    }

    /// A layer with `policy`; same as [`CircuitBreakerLayer::new`].
    ///
    /// # Errors
    ///
    /// [`InvalidCircuitPolicy`], as [`CircuitBreakerLayer::new`].
    pub fn layer(policy: CircuitPolicy) -> Result<CircuitBreakerLayer, InvalidCircuitPolicy> {
        CircuitBreakerLayer::new(policy)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// How many authorities the breaker holds state for now; see
    /// [`CircuitBreakerLayer::tracked_authorities`].
    #[must_use]
    pub fn tracked_authorities(&self) -> usize {
        self.shared.tracked()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CircuitBreaker<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let target = Target::of(&req);
        match self.shared.admit(&target) {
            Ok(ticket) => {
                ResponseFuture::called(self.inner.call(req), Arc::clone(&self.shared), target, ticket)
            }
            // NOTE: the inner service was driven ready and is not called;
            // the readiness is simply not used (the hyper-util client, and
            // every parapet layer, reserves nothing in `poll_ready`).
            Err(open) => ResponseFuture::refused(open),
        }
    }
}
