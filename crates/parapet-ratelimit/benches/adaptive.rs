//! The adaptive rate learning a quota it is not told, in real time.
//!
//! A loopback `parapet-testkit` server lets through `quota` requests per
//! fixed one-second window and answers `429` (no `Retry-After`, no
//! rate-limit fields) to the rest; the quota is 50/s for the first phase
//! and 200/s for the second. 64 tasks call it in a loop through
//! `AdaptiveRateLayer` over hyper-util's client. Counted on the server's
//! side, per second: requests let through and requests refused.
//!
//! Reported per phase: the settling time (from the phase's start to the
//! first second from which the let-through rate, averaged over 5 s, stays
//! at 95 % of the quota or more for the rest of the phase, and from which
//! at most 1 % of the requests are answered `429`), then, after settling,
//! the share of the quota used and the share of requests answered `429`.
//!
//! `cargo bench -p parapet-ratelimit --bench adaptive [-- --secs S]`
//! (S seconds per phase, default 30; `--beta B` and `--scale C` set the
//! layer's.)

#![allow(clippy::expect_used, clippy::cast_precision_loss)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parapet_core::BoxError;
use parapet_ratelimit::AdaptiveRateLayer;
use parapet_testkit::{Reply, Server};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Per second of the run: (let through, refused).
type Counts = Arc<Mutex<Vec<(u64, u64)>>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut secs = 30;
    let mut layer = AdaptiveRateLayer::new();
    while let Some(arg) = args.next() {
        let value = args.next();
        match arg.as_str() {
            "--secs" => secs = value.and_then(|s| s.parse().ok()).unwrap_or(secs),
            "--beta" => layer = layer.beta(value.and_then(|s| s.parse().ok()).unwrap_or(0.8)),
            "--scale" => layer = layer.scale(value.and_then(|s| s.parse().ok()).unwrap_or(0.4)),
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, layer));
}

async fn run(secs: u64, layer: AdaptiveRateLayer) {
    let server = Server::start().await;
    server.record_arrivals(false);
    let quota = Arc::new(AtomicU64::new(50));
    let counts: Counts = Arc::default();
    let start = Instant::now();
    {
        let quota = Arc::clone(&quota);
        let counts = Arc::clone(&counts);
        let window = Mutex::new((0u64, 0u64));
        server.on("/api").handle(move |_| {
            let second = start.elapsed().as_secs();
            let ok = {
                let mut w = window.lock().expect("lock");
                if w.0 != second {
                    *w = (second, 0);
                }
                let ok = w.1 < quota.load(Ordering::Relaxed);
                w.1 += u64::from(ok);
                ok
            };
            let mut c = counts.lock().expect("lock");
            let i = usize::try_from(second).expect("seconds");
            if c.len() <= i {
                c.resize(i + 1, (0, 0));
            }
            if let Some(slot) = c.get_mut(i) {
                if ok {
                    slot.0 += 1;
                } else {
                    slot.1 += 1;
                }
            }
            if ok { Reply::ok() } else { Reply::status(429) }
        });
    }

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .map_err(|e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) })
        .service(client);
    let url: http::Uri = server.url("/api").parse().expect("url");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut svc = svc.clone();
        let stop = Arc::clone(&stop);
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(url.clone())
                    .body(Empty::new())
                    .expect("request");
                let Ok(svc) = svc.ready().await else { break };
                match svc.call(req).await {
                    Ok(res) => drop(res.into_body().collect().await),
                    Err(e) => eprintln!("error: {e}"),
                }
            }
        }));
    }
    tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
    quota.store(200, Ordering::Relaxed);
    tokio::time::sleep_until(start + Duration::from_secs(2 * secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        drop(t.await);
    }

    let counts = counts.lock().expect("lock").clone();
    let s = usize::try_from(secs).expect("secs");
    println!("adaptive rate, 64 callers, fixed 1 s windows, {secs} s per phase");
    for (phase, quota, range) in [(1, 50u64, 0..s), (2, 200, s..2 * s)] {
        let series: Vec<(u64, u64)> = range
            .map(|i| counts.get(i).copied().unwrap_or_default())
            .collect();
        report(phase, quota, &series);
    }
    let rate = layer.current_rate(&url);
    println!("rate at the end: {rate:?}");
}

fn report(phase: u32, quota: u64, series: &[(u64, u64)]) {
    let line: Vec<String> = series.iter().map(|(ok, no)| format!("{ok}/{no}")).collect();
    println!(
        "phase {phase} (quota {quota}/s), let through/refused per second: {}",
        line.join(" ")
    );
    // Settled: from the first second from which every 5-s average of the
    // let-through rate is at 95 % of the quota or more, and at most 1 % of
    // the requests from then to the end of the phase were answered 429.
    let avg = |i: usize| {
        let w = series.get(i..(i + 5).min(series.len())).unwrap_or_default();
        w.iter().map(|(ok, _)| *ok as f64).sum::<f64>() / w.len().max(1) as f64
    };
    let refused_share = |i: usize| {
        let w = series.get(i..).unwrap_or_default();
        let ok: u64 = w.iter().map(|(ok, _)| ok).sum();
        let no: u64 = w.iter().map(|(_, no)| no).sum();
        no as f64 / (ok + no).max(1) as f64
    };
    let q = quota as f64;
    let last = series.len().saturating_sub(5);
    let settled =
        (0..=last).find(|&i| refused_share(i) <= 0.01 && (i..=last).all(|j| avg(j) >= 0.95 * q));
    let Some(settled) = settled else {
        println!("  did not settle (95 % of the quota, at most 1 % answered 429)");
        return;
    };
    let after = series.get(settled..).unwrap_or_default();
    let ok: u64 = after.iter().map(|(ok, _)| ok).sum();
    let no: u64 = after.iter().map(|(_, no)| no).sum();
    let used = ok as f64 / (q * after.len() as f64) * 100.0;
    let refused = no as f64 / (ok + no).max(1) as f64 * 100.0;
    println!(
        "  settled after {settled} s; then {used:.1} % of the quota used, {refused:.2} % answered 429 ({no} of {})",
        ok + no
    );
}
