//! A per-authority circuit breaker that opens on failures and on the
//! server's own `Retry-After`.
//!
//! TODO docs

mod authority;
mod error;
mod future;
mod layer;
mod policy;
mod service;
mod state;

pub use error::{CircuitOpen, OpenedBy};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use policy::{
    CircuitPolicy, DEFAULT_MAX_AUTHORITIES, DEFAULT_MAX_SERVER_WAIT, DEFAULT_OPEN_FOR,
    InvalidCircuitPolicy, Outcome, Verdict, default_classifier,
};
pub use service::CircuitBreaker;
