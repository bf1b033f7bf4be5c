//! [`CircuitBreakerLayer`]: the configuration and the circuits its
//! services share.

use std::sync::Arc;

use tower_layer::Layer;

use crate::policy::{CircuitPolicy, InvalidCircuitPolicy};
use crate::service::CircuitBreaker;
use crate::state::Shared;

/// Wraps services in a [`CircuitBreaker`].
///
/// Every service this layer makes, every clone of them and every clone of
/// the layer share one table of circuits: an authority's circuit opens and
/// closes for all of them at once. Two layers made by two
/// [`new`](Self::new) calls track their authorities separately.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A breaker with `policy`.
    ///
    /// # Errors
    ///
    /// [`InvalidCircuitPolicy`] when a setting makes no sense: a failure
    /// rate of 0 % or above 100 %, a zero failure-rate window, a zero
    /// `open_for`.
    pub fn new(policy: CircuitPolicy) -> Result<Self, InvalidCircuitPolicy> {
        policy.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(policy)),
        })
    }

    /// The policy it was made with.
    #[must_use]
    pub fn policy(&self) -> &CircuitPolicy {
        self.shared.policy()
    }

    /// How many authorities the breaker holds state for now (open,
    /// half-open, or closed with failures counted).
    #[must_use]
    pub fn tracked_authorities(&self) -> usize {
        self.shared.tracked()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker::from_shared(inner, Arc::clone(&self.shared))
    }
}
