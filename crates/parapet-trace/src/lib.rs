//! Request ids, a span per call and per attempt, and nothing secret in logs,
//! for outbound HTTP clients built from tower layers.
//!
//! - [`RequestIdLayer`]: one `x-request-id` per call, the same on every
//!   attempt; a caller's id is kept; the id ends up in the response's
//!   extensions ([`RequestId`], a time-ordered UUID version 7).
//! - [`InboundRequestIdLayer`]: the server side. It makes an inbound
//!   request's id the current one for the task serving it, so every outbound
//!   call made meanwhile carries that id without being passed by hand.
//! - [`TraceLayer`] and [`AttemptTraceLayer`]: a span per call (`INFO`) and a
//!   child span per attempt (`DEBUG`), with the OpenTelemetry HTTP client
//!   field names. A 503 that a retry fixes is never logged above `DEBUG`;
//!   see [`TraceLayer`] for the levels.
//! - [`redact`]: which headers and query parameters carry secrets, and a
//!   URL with them replaced by `REDACTED`. The spans use it for `url.full`
//!   and record no headers but the request id.
//!
//! # Where the layers go
//!
//! Outermost first:
//!
//! 1. [`RequestIdLayer`]: once per call, so all attempts share the id;
//! 2. [`TraceLayer`]: the call span; everything inside (deadline, retry and
//!    its events about delays) happens in it;
//! 3. deadline, then retry;
//! 4. [`AttemptTraceLayer`]: inside retry, once per attempt; outside the
//!    per-attempt layers (auth, throttle, rate limit, concurrency limit,
//!    attempt timeout) so that their waits count in the attempt.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use parapet_trace::{AttemptTraceLayer, RequestId, RequestIdLayer, TraceLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let client = service_fn(|req: Request<()>| async move {
//!     assert!(req.headers().contains_key("x-request-id"));
//!     Ok::<_, Infallible>(Response::new(()))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .layer(TraceLayer::new().internal_kind(true))
//!     // .layer(deadline).layer(retry)
//!     .layer(AttemptTraceLayer::new())
//!     .service(client);
//! let res = svc.oneshot(Request::get("http://127.0.0.1:8080/").body(()).unwrap()).await.unwrap();
//! assert!(RequestId::get(res.extensions()).is_some());
//! # }
//! ```
//!
//! # W3C trace context (feature `opentelemetry`)
//!
//! With the `opentelemetry` feature, and a subscriber that includes
//! `tracing_opentelemetry`'s layer, the trace layers send a `traceparent`
//! header (`00-<trace id>-<span id>-<flags>`) naming the span that sent the
//! request: each attempt's span when [`AttemptTraceLayer`] records it, else
//! the call span. The header is only sent when the span has a valid
//! context (all-zero ids are never sent), and a `traceparent` the caller
//! set is never replaced. Without that subscriber layer nothing is sent.
//! `tracestate` is not sent.
//!
//! # Cost
//!
//! Measured with the workspace's `benches/` (`cargo bench --bench layers`:
//! each layer alone over an always-ready in-memory service whose responses
//! have no extensions, no subscriber installed) on a 2-vCPU AMD EPYC (Zen 5)
//! virtual machine; the figures are differences from the bare service.
//!
//! - [`TraceLayer`] and [`AttemptTraceLayer`], with no subscriber
//!   listening: about 50 ns each, no allocation. They build no string, read
//!   no clock and allocate nothing (the fields, the redacted URL among them,
//!   are only evaluated for a span that is recorded); what remains is
//!   asking whether anyone listens and moving the inner future, then the
//!   response, through the layer's own future.
//! - [`RequestIdLayer`]: about 160 ns and 3 allocations per call (about
//!   110 ns and no allocation with
//!   [`record_in_response(false)`](RequestIdLayer::record_in_response)):
//!   - making the id, about 35 ns alone, about 50 in the layer: the coarse
//!     clock's reading, the formatting, `HeaderValue`'s check of the 36
//!     bytes, and the atomic reference counts of the per-thread buffer the
//!     id is cut from, for the id and for its copies (the header's, the
//!     extension's); see [`RequestId`];
//!   - setting the header, about 50 ns, the same for any header a layer
//!     adds: one lookup of the name (`HeaderMap` hashes it byte by byte),
//!     the insert, and dropping it with the request;
//!   - recording the id in the response's extensions, about 50 ns and all
//!     3 allocations: `http::Extensions` allocates its map, the map's table
//!     and a box for the value on its first insert. On a response that
//!     already has extensions it is one allocation (the value's box), and
//!     hyper-util's legacy client over its `HttpConnector` (TLS connectors
//!     wrap it) puts `HttpInfo` in every response, so over the network that
//!     is the usual case. Turn it off with
//!     [`record_in_response(false)`](RequestIdLayer::record_in_response)
//!     when nothing reads the id from the response.
//!
//!   So the layer does not meet the 100 ns per layer the benchmarks aim
//!   for, and without the record it is at the line: the header alone costs
//!   about 50 ns, and a fresh 36-byte id about 50 more. What would go below
//!   it allocates: a 36-byte allocation per id instead of the shared
//!   buffer is about 30 ns less for the layer alone without the record (no
//!   atomic operations), but one allocation per call, and two under a retry
//!   layer, whose copy of the header turns it into a shared allocation.

mod attempt;
mod common;
mod id;
mod inbound;
pub mod redact;
mod request_id;
mod trace;

pub use attempt::{AttemptTrace, AttemptTraceLayer};
pub use common::{ErrorTypeFn, default_error_type};
pub use id::RequestId;
pub use inbound::{InboundRequestId, InboundRequestIdLayer};
pub use request_id::{RequestIdLayer, SetRequestId, X_REQUEST_ID};
pub use trace::{Trace, TraceLayer};

/// The response futures of this crate's services.
pub mod future {
    pub use crate::attempt::AttemptTraceFuture;
    pub use crate::inbound::InboundFuture;
    pub use crate::request_id::SetRequestIdFuture;
    pub use crate::trace::TraceFuture;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}

    #[test]
    fn public_types_are_send_sync_and_clone() {
        type Inner = tower::util::BoxCloneSyncService<
            http::Request<()>,
            http::Response<()>,
            parapet_core::BoxError,
        >;
        type Fut = <Inner as tower_service::Service<http::Request<()>>>::Future;
        send_sync_clone::<RequestId>();
        send_sync_clone::<RequestIdLayer>();
        send_sync_clone::<SetRequestId<Inner>>();
        send_sync_clone::<InboundRequestIdLayer>();
        send_sync_clone::<InboundRequestId<Inner>>();
        send_sync_clone::<TraceLayer>();
        send_sync_clone::<Trace<Inner>>();
        send_sync_clone::<AttemptTraceLayer>();
        send_sync_clone::<AttemptTrace<Inner>>();
        send::<future::SetRequestIdFuture<Fut>>();
        send::<future::InboundFuture<Fut>>();
        send::<future::TraceFuture<Fut>>();
        send::<future::AttemptTraceFuture<Fut>>();
    }
}
