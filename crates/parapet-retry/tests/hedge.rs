//! Hedged requests over a real hyper-util client against a loopback
//! server, counted from the server's side.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_core::ReplayBody;
use parapet_retry::{HedgePolicy, RetryLayer};
use parapet_testkit::{Reply, Server};
use tower::{ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn a_request_whose_first_copy_hangs_is_answered_by_the_hedge() {
    let server = Server::start().await;
    let n = Arc::new(AtomicUsize::new(0));
    server.on("/items").handle(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::hang()
        } else {
            Reply::ok().body("from the hedge")
        }
    });
    let retry = RetryLayer::default();
    let hedge = retry.hedge_layer(HedgePolicy::fixed(Duration::from_millis(50)));
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .service(client());

    let req = Request::get(server.url("/items"))
        .body(ReplayBody::empty())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "from the hedge");
    assert_eq!(server.hits("/items"), 2);
    let arrivals = server.arrivals_for("/items");
    assert_eq!(arrivals.len(), 2);
}

#[tokio::test]
async fn a_slow_post_through_the_same_stack_arrives_once() {
    let server = Server::start().await;
    server
        .on("/charges")
        .reply(Reply::status(201).delay(Duration::from_millis(300)));
    let retry = RetryLayer::default();
    let hedge = retry.hedge_layer(HedgePolicy::fixed(Duration::from_millis(20)));
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .service(client());

    let req = Request::post(server.url("/charges"))
        .body(ReplayBody::from(r#"{"amount":100}"#))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();

    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(server.hits("/charges"), 1);
}
