//! parapet: resilient outbound HTTP API clients from independent `tower`
//! layers.
//!
//! [`ClientBuilder`] assembles the recommended stack over hyper-util and
//! rustls; [`Client`] gives the convenient API (`get`, `post`, `json`, ...)
//! and is a `tower::Service` for your own layers.

mod body;
mod builder;
mod classify;
mod client;
mod error;
mod optional;
mod response;
mod stack;
mod transport;

pub use body::{Body, BytesStream, NdjsonStream};
pub use builder::{ClientBuilder, DEFAULT_USER_AGENT};
pub use client::{Client, RequestBuilder, ResponseFuture};
pub use error::{Error, InvalidConfig};
pub use response::{DEFAULT_BODY_LIMIT, JsonError, Response};
pub use transport::{Certificate, Identity};

pub use stack::retry_classifier;

pub use parapet_auth as auth;
pub use parapet_core as core;
pub use parapet_ratelimit as ratelimit;
pub use parapet_retry as retry;
pub use parapet_timeout as timeout;
pub use parapet_trace as trace;
