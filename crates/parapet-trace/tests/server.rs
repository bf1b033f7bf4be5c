//! From the server's side (parapet-testkit): one id on every attempt of a
//! call, and a caller's id kept.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // helpers outside #[test] fns

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use parapet_testkit::{Reply, Server};
use parapet_trace::{AttemptTraceLayer, RequestId, RequestIdLayer, TraceLayer};
use support::{TestRetry, hyper_client};
use tower::{ServiceBuilder, ServiceExt};

/// Every test in this binary listens with a subscriber: a test without one
/// could cache "nobody listens" for a callsite while another test registers
/// its subscriber (tracing's interest cache is process-wide).
fn listen() -> tracing::subscriber::DefaultGuard {
    tracing::subscriber::set_default(support::subscriber().0)
}

fn stack(
    max: u32,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = parapet_core::BoxError,
> + Clone {
    ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .layer_fn(move |inner| TestRetry { inner, max })
        .layer(AttemptTraceLayer::new())
        .service(hyper_client())
}

#[tokio::test]
async fn every_attempt_carries_the_same_id() {
    let _guard = listen();
    let server = Server::start().await;
    server
        .on("/flaky")
        .replies([Reply::status(503), Reply::status(503), Reply::ok()]);

    let req = Request::get(server.url("/flaky"))
        .body(Full::default())
        .unwrap();
    let res = stack(3).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);

    let arrivals = server.arrivals_for("/flaky");
    assert_eq!(arrivals.len(), 3);
    let id = RequestId::get(res.extensions()).unwrap();
    for arrival in &arrivals {
        assert_eq!(arrival.header("x-request-id"), id.to_str());
    }
    assert_eq!(id.as_bytes().len(), 36);
}

#[tokio::test]
async fn separate_calls_get_separate_ids() {
    let _guard = listen();
    let server = Server::start().await;
    server.on("/x").reply(Reply::ok());
    let svc = stack(1);
    for _ in 0..2 {
        let req = Request::get(server.url("/x"))
            .body(Full::default())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    let arrivals = server.arrivals_for("/x");
    assert_ne!(
        arrivals[0].header("x-request-id"),
        arrivals[1].header("x-request-id")
    );
}

#[tokio::test]
async fn a_callers_id_is_kept_on_every_attempt() {
    let _guard = listen();
    let server = Server::start().await;
    server
        .on("/flaky")
        .fail_times(1, Reply::status(502))
        .then(Reply::ok());

    let req = Request::get(server.url("/flaky"))
        .header("x-request-id", "caller-chosen-id")
        .body(Full::default())
        .unwrap();
    let res = stack(3).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);

    let arrivals = server.arrivals_for("/flaky");
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals
            .iter()
            .all(|a| a.header("x-request-id") == Some("caller-chosen-id"))
    );
    assert_eq!(
        RequestId::get(res.extensions()).unwrap().to_str(),
        Some("caller-chosen-id")
    );
}

#[tokio::test]
async fn without_the_response_record_every_attempt_still_carries_the_id() {
    let _guard = listen();
    let server = Server::start().await;
    server
        .on("/flaky")
        .fail_times(1, Reply::status(503))
        .then(Reply::ok());
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new().record_in_response(false))
        .layer_fn(|inner| TestRetry { inner, max: 2 })
        .service(hyper_client());

    let req = Request::get(server.url("/flaky"))
        .body(Full::default())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(RequestId::get(res.extensions()).is_none());
    // Over hyper-util's `HttpConnector` the response's extensions are not
    // empty (`HttpInfo`): what `record_in_response`'s docs count on.
    assert!(
        res.extensions()
            .get::<hyper_util::client::legacy::connect::HttpInfo>()
            .is_some()
    );

    let arrivals = server.arrivals_for("/flaky");
    assert_eq!(arrivals.len(), 2);
    let sent = arrivals[0].header("x-request-id").unwrap();
    assert_eq!(sent.len(), 36);
    assert_eq!(arrivals[1].header("x-request-id"), Some(sent));
}

#[tokio::test]
async fn a_planted_secret_reaches_the_server_but_no_log_line() {
    const SECRET: &str = "PLANTED-9d1e77";
    let (sub, capture, lines) = support::subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let server = Server::start().await;
    server
        .on("/v1/items")
        .fail_times(1, Reply::status(503))
        .then(Reply::ok());

    let url = server.url(&format!("/v1/items?limit=5&token={SECRET}&sig={SECRET}"));
    let req = Request::get(url)
        .header("authorization", format!("Bearer {SECRET}"))
        .header("x-api-key", SECRET)
        .header("cookie", format!("session={SECRET}"))
        .body(Full::default())
        .unwrap();
    let res = stack(2).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);

    let arrivals = server.arrivals_for("/v1/items");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[1].header("x-api-key"), Some(SECRET));
    assert!(arrivals[1].query.as_deref().unwrap().contains(SECRET));

    let text = lines.text();
    assert!(text.lines().count() > 5);
    for line in text.lines() {
        assert!(!line.contains(SECRET), "leaked: {line}");
    }
    assert!(
        text.contains("limit=5&token=REDACTED&sig=REDACTED"),
        "{text}"
    );
    assert_eq!(capture.spans().len(), 3);
}
