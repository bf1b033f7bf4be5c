//! parapet's metrics scraped by Prometheus: an axum service whose
//! `/metrics` route renders, in Prometheus' text format, what its parapet
//! client recorded while calling a flaky upstream.
//!
//! Run it with `cargo run --example prometheus --features metrics`.
//! Everything runs on loopback; it prints the scrape and exits.
//!
//! The recorder is metrics-exporter-prometheus's, installed as the
//! process's `metrics` recorder without its own HTTP listener (the
//! application's axum router serves the text); any other `metrics`
//! exporter works the same way.

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
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parapet::Client;
use parapet::metrics::{DURATION_BUCKETS, names};
use parapet_testkit::{Reply, Server};

/// `GET /metrics`: the text Prometheus scrapes.
async fn scrape(State(handle): State<PrometheusHandle>) -> String {
    handle.render()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder, with the OpenTelemetry buckets for the two durations
    // (the `metrics` facade carries no buckets; without them the exporter
    // renders summaries).
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::REQUEST_DURATION.into()),
            &DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::ATTEMPT_DURATION.into()),
            &DURATION_BUCKETS,
        )?
        .install_recorder()?;
    parapet::metrics::describe();

    // A flaky upstream: a 503, then a 429 that says wait 1 s, then answers.
    let upstream = Server::start().await;
    upstream.on("/v1/orders").replies([
        Reply::status(503),
        Reply::status(429).header("retry-after", "1"),
        Reply::json(r#"{"orders":[]}"#),
    ]);
    upstream.on("/v1/missing").reply(Reply::status(404));

    let client = Client::builder()
        .base_url(upstream.url("/"))
        .deadline(Duration::from_secs(10))
        .metrics(true)
        .build()?;
    let orders = client.get("/v1/orders").send().await?;
    println!(
        "GET /v1/orders: {} after {} attempts",
        orders.status(),
        orders.attempts()
    );
    let missing = client.get("/v1/missing").send().await?;
    println!("GET /v1/missing: {}", missing.status());

    // The application's own router serves the scrape.
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Scrape it as Prometheus would (a client without metrics, so the
    // scrape does not count itself).
    let scraper = Client::builder().build()?;
    let text = scraper
        .get(&format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    println!("--- GET /metrics\n{text}");
    Ok(())
}
