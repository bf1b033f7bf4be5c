//! The figures of BENCHMARKS.md's "Sharing limits across a fleet (Redis)":
//! real worker processes (this binary, started again with `worker ...`),
//! each with its own Redis connection and 16 tasks (250 for the token
//! phase), against one loopback `parapet-testkit` server and one throwaway
//! `redis-server`.
//!
//! ```sh
//! cargo run --release -p parapet-redis --example fleet
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::num::NonZeroU32;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parapet_auth::{ProvideToken, Token, TokenCache, TokenError, TokenFuture};
use parapet_core::BoxError;
use parapet_ratelimit::{Quota, RateLimitLayer};
use parapet_redis::test_support::RedisServer;
use parapet_redis::{RedisRateLimitLayer, RedisStore, RedisThrottleLayer, RedisTokenProvider};
use parapet_testkit::{Reply, Server};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const PROCESSES: usize = 4;
const TASKS: usize = 16;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn quota(per_second: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap()).burst(NonZeroU32::MIN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("worker") {
        rt.block_on(worker(&args[2..]));
    } else {
        rt.block_on(parent());
    }
}

// ---------------------------------------------------------------- workers

/// `worker <mode> <redis-url> <server-url> <rate> <seconds>`; prints one
/// line of counts.
async fn worker(args: &[String]) {
    let (mode, redis_url, url) = (&args[0], &args[1], args[2].clone());
    let rate: u32 = args[3].parse().unwrap();
    let secs: f64 = args[4].parse().unwrap();
    let run_for = Duration::from_secs_f64(secs);
    let store = RedisStore::open(redis_url.as_str()).unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let client = http_client();

    if mode == "token" {
        token_worker(store, url, run_for, &ok, &failed).await;
        println!(
            "ok={} failed={}",
            ok.load(Ordering::SeqCst),
            failed.load(Ordering::SeqCst)
        );
        return;
    }

    let redis_limit = RedisRateLimitLayer::per_authority(store.clone(), quota(rate))
        .fail_open(NonZeroU32::new(u32::try_from(PROCESSES).unwrap()).unwrap());
    let svc: tower::util::BoxCloneSyncService<
        http::Request<Empty<Bytes>>,
        http::Response<hyper::body::Incoming>,
        BoxError,
    > = match mode.as_str() {
        "redis" => tower::util::BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(redis_limit.clone())
                .service(client),
        ),
        "local" => tower::util::BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(RateLimitLayer::per_authority(quota(rate)))
                .service(client),
        ),
        "gate" => tower::util::BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(RedisThrottleLayer::new(store.clone()))
                .layer(redis_limit.clone())
                .service(client),
        ),
        other => panic!("unknown mode {other}"),
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (svc, url) = (svc.clone(), url.clone());
        let (ok, failed, slowest_ms) = (ok.clone(), failed.clone(), slowest_ms.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                let req = http::Request::get(url.as_str()).body(Empty::new()).unwrap();
                let sent = Instant::now();
                match svc.clone().oneshot(req).await {
                    Ok(res) => {
                        let _ = res.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
                slowest_ms.fetch_max(ms, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "ok={} failed={} slowest_ms={} fallback_decisions={} outages={}",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        slowest_ms.load(Ordering::SeqCst),
        redis_limit.fallback_decisions(),
        store.outages()
    );
}

/// The identity provider: `GET /token` on the testkit server; each token
/// lives 2 s.
struct HttpIdp {
    client: HttpClient,
    url: String,
}

impl ProvideToken for HttpIdp {
    fn fetch_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let req = http::Request::get(self.url.as_str())
                .body(Empty::new())
                .unwrap();
            let res = self
                .client
                .request(req)
                .await
                .map_err(TokenError::transient)?;
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(TokenError::transient)?
                .to_bytes();
            let token = String::from_utf8_lossy(&body).into_owned();
            Ok(Token::new(token).with_expires_in(Duration::from_secs(2)))
        })
    }
}

/// 250 tasks asking the process's token cache for a token every 10 ms; the
/// cache refreshes at expiry (no margin), so all of them ask at once then.
async fn token_worker(
    store: RedisStore,
    base: String,
    run_for: Duration,
    ok: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) {
    let idp = HttpIdp {
        client: http_client(),
        url: format!("{}token", base.trim_end_matches("api")),
    };
    let shared = std::env::var_os("FLEET_TOKEN_LOCAL").is_none();
    let cache = if shared {
        TokenCache::builder(RedisTokenProvider::new(store, "idp", idp))
    } else {
        TokenCache::builder(idp)
    }
    .refresh_margin(Duration::ZERO)
    .build();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..250 {
        let (cache, ok, failed) = (cache.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                match cache.token().await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

// ----------------------------------------------------------------- parent

/// Starts the worker processes and waits for them; returns their lines.
async fn run_workers(
    mode: &str,
    redis: &str,
    url: &str,
    rate: u32,
    secs: f64,
    env: &[(&str, &str)],
) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "worker",
                mode,
                redis,
                url,
                &rate.to_string(),
                &secs.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    let mut lines = Vec::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "a worker failed");
        lines.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    lines
}

/// Arrivals per second over the middle of the run (the first and last
/// half second left out: processes start and stop at slightly different
/// times).
fn middle_rate(times: &[Instant]) -> (f64, usize) {
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return (0.0, 0);
    };
    let from = *first + Duration::from_millis(500);
    let to = *last - Duration::from_millis(500);
    let n = times.iter().filter(|t| **t >= from && **t < to).count();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / (to - from).as_secs_f64();
    (rate, n)
}

fn per_second(times: &[Instant], origin: Instant) -> Vec<usize> {
    let mut buckets = Vec::new();
    for t in times {
        let i = usize::try_from(t.saturating_duration_since(origin).as_secs()).unwrap();
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
    buckets
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn parent() {
    let mut redis = RedisServer::start().await.unwrap();
    let redis_url = redis.url();
    let server = Server::start().await;
    server.on("/api").reply(Reply::ok().body("ok"));
    let generation = Arc::new(AtomicUsize::new(0));
    let g = generation.clone();
    server
        .on("/token")
        .handle(move |_| Reply::ok().body(format!("token-{}", g.fetch_add(1, Ordering::SeqCst))));
    let api = server.url("/api");
    println!(
        "{PROCESSES} worker processes x {TASKS} tasks, each with its own Redis connection; one loopback testkit server"
    );

    // 1. The shared quota, at 200/s and 1000/s; the local limiter for contrast.
    for (mode, rate) in [("redis", 200), ("redis", 1000), ("local", 200)] {
        server.clear_arrivals();
        let lines = run_workers(mode, &redis_url, &api, rate, 5.0, &[]).await;
        let times: Vec<_> = server.arrivals_for("/api").iter().map(|a| a.at).collect();
        let (seen, n) = middle_rate(&times);
        println!(
            "rate   {mode:5} quota {rate:4}/s per authority: server saw {seen:7.1}/s ({n} arrivals in the middle of 5 s), {:+.2} % of the quota; workers: {lines:?}",
            (seen / f64::from(rate) - 1.0) * 100.0
        );
    }

    // 2. Redis killed at 2 s and restarted at 4 s, fail open to quota / 4.
    server.clear_arrivals();
    let origin = Instant::now();
    let workers = {
        let (r, a) = (redis_url.clone(), api.clone());
        tokio::spawn(async move { run_workers("redis", &r, &a, 200, 7.0, &[]).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let port = redis.port();
    redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis = RedisServer::start_on(port).await.unwrap();
    let lines = workers.await.unwrap();
    let times: Vec<_> = server.arrivals_for("/api").iter().map(|a| a.at).collect();
    println!(
        "outage quota 200/s, Redis down from 2 s to 4 s, fail_open(4): arrivals per second {:?}; workers: {lines:?}",
        per_second(&times, origin)
    );

    // 3. A 429 with Retry-After: 2 seen by one process.
    server.clear_arrivals();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    server.on("/api").handle(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 300 {
            Reply::status(429).header("retry-after", "2")
        } else {
            Reply::ok().body("ok")
        }
    });
    let lines = run_workers("gate", &redis_url, &api, 200, 5.0, &[]).await;
    let arrivals = server.arrivals_for("/api");
    let t429 = arrivals[300].at;
    let after: Vec<_> = arrivals[301..]
        .iter()
        .map(|a| a.at.saturating_duration_since(t429))
        .filter(|d| *d < Duration::from_secs(2))
        .collect();
    let resumed = arrivals[301..]
        .iter()
        .map(|a| a.at.saturating_duration_since(t429))
        .find(|d| *d >= Duration::from_millis(100));
    println!(
        "gate   429 Retry-After: 2 to one process (request 301): {} requests arrived in the 2 s after it, at {:?} after it (already past the gate); next arrival {:?} after it; workers: {lines:?}",
        after.len(),
        after,
        resumed
    );
    server.on("/api").reply(Reply::ok().body("ok"));

    // 4. Tokens: 4 processes x 250 tasks, tokens living 2 s, refreshed at expiry.
    for (label, env) in [
        ("shared (Redis)", vec![]),
        ("local caches", vec![("FLEET_TOKEN_LOCAL", "1")]),
    ] {
        server.clear_arrivals();
        generation.store(0, Ordering::SeqCst);
        let lines = run_workers("token", &redis_url, &api, 0, 5.0, &env).await;
        let fetches: Vec<_> = server.arrivals_for("/token").iter().map(|a| a.at).collect();
        let origin = fetches.first().copied().unwrap_or_else(Instant::now);
        let at: Vec<_> = fetches
            .iter()
            .map(|t| format!("{:.2}s", t.saturating_duration_since(origin).as_secs_f64()))
            .collect();
        println!(
            "token  {label}: {} token requests in 5 s (tokens live 2 s), at {at:?}; workers: {lines:?}",
            fetches.len()
        );
    }

    // 5. The cost of one decision (sequential, one task), and a client at concurrency 64.
    let store = RedisStore::open(redis_url.as_str()).unwrap();
    let roomy = Quota::per_second(NonZeroU32::new(1_000_000).unwrap())
        .burst(NonZeroU32::new(1_000_000).unwrap());
    let stub =
        tower::service_fn(|_req: http::Request<Empty<Bytes>>| async { Ok::<_, BoxError>(()) });
    for (label, mut svc) in [
        (
            "redis",
            tower::util::BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(RedisRateLimitLayer::per_authority(store.clone(), roomy))
                    .service(stub),
            ),
        ),
        (
            "local",
            tower::util::BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(RateLimitLayer::per_authority(roomy))
                    .service(stub),
            ),
        ),
    ] {
        let mut costs = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let req = http::Request::get(api.as_str()).body(Empty::new()).unwrap();
            let start = Instant::now();
            svc.ready().await.unwrap().call(req).await.unwrap();
            costs.push(start.elapsed());
        }
        costs.sort();
        println!(
            "cost   {label}: one decision (20 000 sequential calls to a stub): p50 {:?}, p99 {:?}",
            percentile(&costs, 0.5),
            percentile(&costs, 0.99)
        );
    }

    server.record_arrivals(false);
    let client = http_client();
    for label in ["redis", "local", "none"] {
        let svc: tower::util::BoxCloneSyncService<
            http::Request<Empty<Bytes>>,
            http::Response<hyper::body::Incoming>,
            BoxError,
        > = match label {
            "redis" => tower::util::BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(RedisRateLimitLayer::per_authority(store.clone(), roomy))
                    .service(client.clone()),
            ),
            "local" => tower::util::BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(RateLimitLayer::per_authority(roomy))
                    .service(client.clone()),
            ),
            _ => tower::util::BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .map_err(Into::<BoxError>::into)
                    .service(client.clone()),
            ),
        };
        let before = server.requests();
        let start = Instant::now();
        let run_for = Duration::from_secs(3);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (svc, api) = (svc.clone(), api.clone());
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run_for {
                    let req = http::Request::get(api.as_str()).body(Empty::new()).unwrap();
                    let res = svc.clone().oneshot(req).await.unwrap();
                    let _ = res.into_body().collect().await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        #[allow(clippy::cast_precision_loss)]
        let rps = (server.requests() - before) as f64 / start.elapsed().as_secs_f64();
        println!(
            "client {label:5} limiter, concurrency 64, 3 s against the testkit server: {rps:.0} requests/s"
        );
    }
    drop(redis);
}
