//! A per-authority circuit breaker (work in progress).
