//! A GitHub-style primary rate limit: a 403 with `X-RateLimit-Remaining: 0`
//! and `X-RateLimit-Reset` in epoch seconds. parapet's throttle reads it and
//! holds every call to that host until the reset, instead of hammering an
//! API that has already said no.
//!
//! Run it with `cargo run --example github_style`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parapet::Client;
use parapet_testkit::{Reply, Server};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), parapet::Error> {
    let api = Server::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    api.on("/repos/acme/widgets/issues").handle(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            // Out of quota: try again at the next whole second plus one.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            Reply::status(403)
                .header("x-ratelimit-limit", "5000")
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", (now + 2).to_string())
                .body(r#"{"message":"API rate limit exceeded"}"#)
        } else {
            Reply::json(r#"[{"number":1,"title":"Widgets wobble"}]"#)
                .header("x-ratelimit-remaining", "4999")
        }
    });

    let client = Client::builder().base_url(api.url("/")).build().unwrap();
    let started = Instant::now();

    let first = client.get("/repos/acme/widgets/issues").send().await?;
    println!(
        "first call: {} with x-ratelimit-remaining: {} (a 403 is not retried, but the throttle now knows)",
        first.status(),
        first.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap_or("?"),
    );
    let err = first.error_for_status().await.unwrap_err();
    println!(
        "  as an error: {err}; rate limited: {}",
        err.is_rate_limited()
    );

    // Three tasks call the same API at once: all wait for the reset.
    let tasks: Vec<_> = (1..=3)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let resp = client.get("/repos/acme/widgets/issues").send().await?;
                Ok::<_, parapet::Error>((n, resp.status(), started.elapsed()))
            })
        })
        .collect();
    for t in tasks {
        let (n, status, at) = t.await.expect("task")?;
        println!("task {n}: {status} after {:.2} s", at.as_secs_f64());
    }

    let arrivals = api.arrivals();
    let gap = arrivals[1].at.duration_since(arrivals[0].at);
    println!(
        "the server saw {} calls; nothing arrived for {:.2} s after the 403",
        arrivals.len(),
        gap.as_secs_f64()
    );
    assert!(gap >= Duration::from_millis(900));
    Ok(())
}
