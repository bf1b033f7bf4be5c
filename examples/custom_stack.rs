//! The same layers the `ClientBuilder` assembles, composed by hand with
//! `tower::ServiceBuilder` over a hyper-util client: take the ones you want,
//! in the recommended order, and add your own.
//!
//! Run it with `cargo run --example custom_stack`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::num::NonZeroU32;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use parapet::auth::AuthLayer;
use parapet::core::{BoxError, ReplayBody};
use parapet::ratelimit::{Quota, RateLimitLayer, ThrottleLayer};
use parapet::retry::{RetryLayer, RetryPolicy};
use parapet::timeout::{AttemptTimeoutLayer, DeadlineLayer};
use parapet::trace::{AttemptTraceLayer, RequestIdLayer, TraceLayer};
use parapet_testkit::{Reply, Server};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let api = Server::start().await;
    api.on("/v1/things")
        .replies([Reply::status(503), Reply::ok().body("a thing")]);

    // The innermost service takes `Request<ReplayBody>`: the retry and auth
    // layers record the body as it is sent, so that they can send it again.
    // A service for another body type (`Full<Bytes>`, `String`, axum's
    // `Body`) fails to compile with "the trait bound `Service<Request<
    // ReplayBody>>` is not satisfied"; take `ReplayBody` or put
    // `tower::ServiceExt::map_request` in front of it.
    let hyper: HyperClient<_, ReplayBody> = HyperClient::builder(TokioExecutor::new()).build_http();

    // `parapet::default_retry_policy()` is the builder's own policy; this one
    // changes two settings and keeps the classifier, which knows the
    // sibling layers' errors.
    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .base_delay(Duration::from_millis(50))
        .classify(parapet::retry_classifier)
        .build()?;

    // Outermost first, as in the recommended order.
    let client = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new().internal_kind(true))
        .layer(DeadlineLayer::new(Duration::from_secs(10)))
        .layer(RetryLayer::new(policy))
        .layer(AttemptTraceLayer::new())
        // Auth above the limiters: its re-send after a 401 is gated and
        // counted like every request that leaves.
        .layer(AuthLayer::bearer("example-token")?)
        .layer(ThrottleLayer::new())
        .layer(RateLimitLayer::new(Quota::per_second(
            NonZeroU32::new(20).unwrap(),
        )))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(2)))
        .service(hyper);

    let req = Request::get(api.url("/v1/things")).body(ReplayBody::empty())?;
    let resp = client.oneshot(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    println!("{status}: {}", String::from_utf8_lossy(&body));

    for a in api.arrivals() {
        println!(
            "server saw {} {} with authorization {:?} and request id {}",
            a.method,
            a.path,
            a.header("authorization").map(|v| &v[..6]),
            a.header("x-request-id").unwrap_or("-"),
        );
    }
    Ok(())
}
