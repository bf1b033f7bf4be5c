//! With no subscriber at all (its own test binary, so that no other test's
//! scoped subscriber is registered), the trace layers only pass through.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // helpers outside #[test] fns

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use parapet_trace::{AttemptTraceLayer, RequestIdLayer, TraceLayer};
use support::{TestRetry, scripted};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test]
async fn without_a_subscriber_everything_still_works() {
    // No subscriber: spans are disabled; the layers only pass through.
    let (seen, upstream) = scripted(&[503, 200]);
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .layer_fn(|inner| TestRetry { inner, max: 2 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);
    let res = svc
        .oneshot(
            Request::get("http://h.test/?token=x")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].headers()["x-request-id"],
        seen[1].headers()["x-request-id"]
    );
    // No subscriber, so no trace bookkeeping was put in the request.
    assert!(
        seen[0]
            .extensions()
            .get::<parapet_core::Attempt>()
            .is_some()
    );
    assert_eq!(seen[0].extensions().len(), 1);
}
