//! An axum service that calls an upstream API while serving a request: the
//! inbound `x-request-id` reaches the upstream without being passed by hand,
//! so one id finds the request in both services' logs.
//!
//! Run it with `cargo run --example axum_outbound`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use parapet::Client;
use parapet::trace::InboundRequestIdLayer;
use parapet_testkit::{Reply, Server};

/// The handler: look the price up upstream and answer with it.
async fn checkout(State(upstream): State<Client>) -> String {
    match upstream.get("/prices/widget").send().await {
        Ok(resp) => match resp.text().await {
            Ok(price) => format!("widget costs {price}"),
            Err(e) => format!("upstream body failed: {e}"),
        },
        Err(e) => format!("upstream failed: {e}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The upstream API (answers 503 once, to show a retry keeps the id).
    let upstream = Server::start().await;
    upstream
        .on("/prices/widget")
        .replies([Reply::status(503), Reply::ok().body("9.99")]);

    // Our service, with a parapet client in its state.
    let client = Client::builder()
        .base_url(upstream.url("/"))
        .deadline(Duration::from_secs(5))
        .build()?;
    let app = Router::new()
        .route("/checkout", get(checkout))
        .with_state(client)
        .layer(InboundRequestIdLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // A caller with its own id.
    let caller = Client::builder().build()?;
    let resp = caller
        .get(&format!("http://{addr}/checkout"))
        .header("x-request-id", "order-7f3a")
        .send()
        .await?;
    let echoed = resp.headers().get("x-request-id").cloned();
    println!("the service echoed x-request-id {echoed:?}");
    println!("body: {}", resp.text().await?);
    for a in upstream.arrivals() {
        println!(
            "upstream saw {} {} with x-request-id {:?}",
            a.method,
            a.path,
            a.header("x-request-id")
        );
    }
    Ok(())
}
