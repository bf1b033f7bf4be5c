//! parapet: resilient outbound HTTP API clients from independent `tower`
//! layers.
//!
//! This facade re-exports the shared vocabulary; the layer crates and the
//! `ClientBuilder` arrive in it as they land.

pub use parapet_core as core;
