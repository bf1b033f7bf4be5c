//! Inbound to outbound: an axum server serving a request with an id calls an
//! upstream (parapet-testkit), which sees the same id.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // helpers outside #[test] fns

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use parapet_testkit::{Reply, Server};
use parapet_trace::{InboundRequestIdLayer, RequestIdLayer};
use support::hyper_client;
use tower::{ServiceBuilder, ServiceExt};

/// The handler: one outbound call, no id passed by hand.
async fn proxy(State(upstream): State<String>) -> String {
    let client = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .service(hyper_client());
    let req = Request::get(upstream)
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    res.status().to_string()
}

async fn start_app(upstream: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/work", get(proxy))
        .with_state(upstream)
        .layer(InboundRequestIdLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

async fn call_app(addr: SocketAddr, id: Option<&str>) -> http::Response<Bytes> {
    let mut req = Request::get(format!("http://{addr}/work"));
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    let res = hyper_client()
        .oneshot(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    http::Response::from_parts(parts, body)
}

#[tokio::test]
async fn the_upstream_sees_the_inbound_id() {
    let upstream = Server::start().await;
    upstream.on("/data").reply(Reply::ok());
    let (addr, app) = start_app(upstream.url("/data")).await;

    let res = call_app(addr, Some("inbound-7f3a")).await;
    assert_eq!(res.body(), "200 OK");
    assert_eq!(res.headers()["x-request-id"], "inbound-7f3a");

    let arrivals = upstream.arrivals_for("/data");
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].header("x-request-id"), Some("inbound-7f3a"));
    app.abort();
}

#[tokio::test]
async fn without_an_inbound_id_the_made_one_reaches_the_upstream_and_the_caller() {
    let upstream = Server::start().await;
    upstream.on("/data").reply(Reply::ok());
    let (addr, app) = start_app(upstream.url("/data")).await;

    let res = call_app(addr, None).await;
    let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(echoed.len(), 36);

    let arrivals = upstream.arrivals_for("/data");
    assert_eq!(arrivals[0].header("x-request-id"), Some(echoed.as_str()));

    // Two inbound requests, two ids: nothing leaks between them.
    call_app(addr, Some("second")).await;
    let arrivals = upstream.arrivals_for("/data");
    assert_eq!(arrivals[1].header("x-request-id"), Some("second"));
    app.abort();
}
