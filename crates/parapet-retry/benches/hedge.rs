//! What hedging does to tail latency, and what it costs in requests.
//!
//! A loopback server answers most requests in about 5 ms and a few in
//! about 50 ms (each copy draws its own latency from a seeded generator),
//! so that p99 is about ten times p50. Callers send GETs through a retry
//! layer over hyper-util's client, without hedging and with it (at the
//! host's 95th percentile, and after a fixed delay), and the figures are
//! printed: latency percentiles as the callers saw them, and the extra
//! requests the server received.
//!
//! `cargo bench -p parapet-retry --bench hedge`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_core::ReplayBody;
use parapet_retry::{HedgePolicy, RetryLayer};
use parapet_testkit::{Reply, Rng, Server};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const CALLS: usize = 2000;
const CALLERS: usize = 16;
const WARM_UP: usize = 400;

type HttpClient = Client<HttpConnector, ReplayBody>;

/// 94 % of answers in 4-6 ms, 6 % in 40-60 ms.
fn latency(rng: &mut Rng) -> Duration {
    let ms = if rng.unit() < 0.94 {
        4.0 + 2.0 * rng.unit()
    } else {
        40.0 + 20.0 * rng.unit()
    };
    Duration::from_secs_f64(ms / 1000.0)
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `calls` GETs from `CALLERS` tasks; each call's latency.
async fn run<S, B>(svc: &S, url: &str, calls: usize) -> Vec<Duration>
where
    S: Service<Request<ReplayBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug,
    B: Body + Send,
    B::Data: Send,
    B::Error: Debug,
{
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let svc = svc.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            for _ in 0..calls / CALLERS {
                let req = Request::get(&url).body(ReplayBody::empty()).unwrap();
                let start = Instant::now();
                let res = ServiceExt::<Request<ReplayBody>>::oneshot(svc.clone(), req)
                    .await
                    .expect("call");
                res.into_body().collect().await.expect("body");
                took.push(start.elapsed());
            }
            took
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn case<S, B>(server: &Server, url: &str, name: &str, svc: S)
where
    S: Service<Request<ReplayBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug,
    B: Body + Send,
    B::Data: Send,
    B::Error: Debug,
{
    // Warm up: connections, and the percentile's samples.
    run(&svc, url, WARM_UP).await;
    let before = server.requests();
    let mut took = run(&svc, url, CALLS).await;
    let arrived = server.requests() - before;
    took.sort();
    #[allow(clippy::cast_precision_loss)]
    let extra = (arrived as f64 / took.len() as f64 - 1.0) * 100.0;
    println!(
        "{name:<26} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1} %",
        ms(pct(&took, 50.0)),
        ms(pct(&took, 90.0)),
        ms(pct(&took, 99.0)),
        ms(*took.last().unwrap()),
        extra
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::start().await;
        server.record_arrivals(false);
        let rng = Mutex::new(Rng::new(0x5eed));
        server.on("/item").handle(move |_| {
            let wait = latency(&mut rng.lock().unwrap());
            Reply::ok().body("item").delay(wait)
        });
        let url = server.url("/item");
        println!("{CALLS} GETs from {CALLERS} callers (after {WARM_UP} to warm up); latency in ms");
        println!(
            "{:<26} {:>7} {:>7} {:>7} {:>7} {:>10}",
            "case", "p50", "p90", "p99", "max", "extra"
        );
        let hedged = |policy| {
            let retry = RetryLayer::default();
            let hedge = retry.hedge_layer(policy);
            ServiceBuilder::new()
                .layer(retry)
                .layer(hedge)
                .service(client())
        };
        let plain = ServiceBuilder::new()
            .layer(RetryLayer::default())
            .service(client());
        case(&server, &url, "no hedging", plain).await;
        let p95 = hedged(HedgePolicy::percentile(95.0));
        case(&server, &url, "hedge at p95", p95).await;
        let p90 = hedged(HedgePolicy::percentile(90.0));
        case(&server, &url, "hedge at p90", p90).await;
        let fixed = hedged(HedgePolicy::fixed(Duration::from_millis(10)));
        case(&server, &url, "hedge after 10 ms", fixed).await;
    });
}
