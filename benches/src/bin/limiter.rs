//! Limiter accuracy in real time.
//!
//! 1. `parapet_ratelimit::RateLimitLayer` (shared bucket, wait mode) over
//!    an always-ready service at 100/s, 1000/s and 10 000/s, with burst 1
//!    (evenly spaced) and with the default burst (`n`), with one caller
//!    calling in a loop and with 64 concurrent callers: calls admitted in a
//!    fixed window against `burst + rate × window`, and the achieved rate
//!    after the burst.
//! 2. `parapet_auth::TokenCache` under 1000 concurrent callers with a cold
//!    cache and a token endpoint that takes 50 ms: how many fetches, and the
//!    time until every caller has its token; then the same 1000 callers
//!    against the warm cache.
//!
//! Runs on a two-worker multi-thread runtime. `limiter [--secs S]`

#![forbid(unsafe_code)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parapet_auth::{Token, TokenCache, TokenError, provider_fn};
use parapet_bench::{Ready, arg, request};
use parapet_ratelimit::{Quota, RateLimitLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// Calls through a limiter of `rate`/s from `tasks` callers for `secs`;
/// returns (calls admitted, seconds from the first admission to the end of
/// the window).
async fn rate(rate: u32, burst: u32, tasks: usize, secs: f64) -> (u64, f64) {
    let quota = Quota::per_second(NonZeroU32::new(rate).expect("non-zero"))
        .burst(NonZeroU32::new(burst).expect("non-zero"));
    let svc = RateLimitLayer::new(quota).layer(Ready);
    let uri = http::Uri::from_static(parapet_bench::URL);
    let admitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (svc, uri, admitted, stop) = (svc.clone(), uri.clone(), admitted.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                svc.clone().oneshot(request(&uri)).await.expect("call");
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                admitted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let n = admitted.load(Ordering::Relaxed);
    for h in handles {
        h.abort();
    }
    (n, elapsed)
}

async fn token_cache(callers: usize) {
    let fetches = Arc::new(AtomicU64::new(0));
    let counter = fetches.clone();
    let provider = provider_fn(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, TokenError>(
                Token::new("bench-token").with_expires_in(Duration::from_secs(3600)),
            )
        }
    });
    let cache = TokenCache::new(provider);
    for (label, cold) in [("cold cache", true), ("warm cache", false)] {
        let barrier = Arc::new(tokio::sync::Barrier::new(callers + 1));
        let before = fetches.load(Ordering::SeqCst);
        let mut handles = Vec::with_capacity(callers);
        for _ in 0..callers {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                cache.token().await.expect("token");
                t.elapsed()
            }));
        }
        barrier.wait().await;
        let start = Instant::now();
        let mut slowest = Duration::ZERO;
        for h in handles {
            slowest = slowest.max(h.await.expect("task"));
        }
        let all = start.elapsed();
        println!(
            "| {callers} | {label}{} | {} | {:.2} | {:.2} |",
            if cold { " (endpoint takes 50 ms)" } else { "" },
            fetches.load(Ordering::SeqCst) - before,
            all.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
        );
    }
}

fn main() {
    let secs = arg("--secs", 3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("**RateLimitLayer** (shared bucket, wait mode), {secs} s window per row:\n");
        println!("| quota | burst | callers | admitted | expected (burst + rate × window) | achieved rate after the burst /s | error |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for r in [100u32, 1_000, 10_000] {
            for burst in [1, r] {
                for tasks in [1usize, 64] {
                    let (n, elapsed) = rate(r, burst, tasks, secs).await;
                    let expected = f64::from(burst) + f64::from(r) * elapsed;
                    #[allow(clippy::cast_precision_loss)]
                    let achieved = (n as f64 - f64::from(burst)) / elapsed;
                    #[allow(clippy::cast_precision_loss)]
                    let error = (n as f64 - expected) / expected * 100.0;
                    println!(
                        "| {r}/s | {burst} | {tasks} | {n} | {expected:.0} | {achieved:.1} | {error:+.2} % |"
                    );
                }
            }
        }
        println!();
        println!("**TokenCache** (multi-thread runtime, 2 workers):\n");
        println!("| callers | cache | fetches | time until all served (ms) | slowest caller (ms) |");
        println!("|---:|---|---:|---:|---:|");
        token_cache(1000).await;
    });
}
