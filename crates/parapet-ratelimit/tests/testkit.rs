//! The three layers over a real HTTP client (hyper-util's legacy client),
//! checked from the side of loopback servers (`parapet-testkit`), on real
//! time. Timing bounds are generous: they tell "waited" from "did not wait",
//! never how fast anything is.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_core::BoxError;
use parapet_ratelimit::{
    AdaptiveRateLayer, ConcurrencyLimitLayer, ConcurrencyLimited, Quota, RateLimitLayer,
    ThrottleLayer,
};
use parapet_testkit::{Reply, Server};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn boxed(e: hyper_util::client::legacy::Error) -> BoxError {
    Box::new(e)
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// Sends a GET through `svc` and reads the body to its end; the status.
async fn fetch<S, B>(svc: S, url: &str) -> Result<u16, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<B>, Error = BoxError>,
    B: http_body::Body<Error: Into<BoxError>>,
{
    let res = svc.oneshot(get(url)).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(Into::into)?;
    Ok(status)
}

#[tokio::test]
async fn after_a_429_nothing_reaches_that_authority_for_the_retry_after() {
    let limited = Server::start().await;
    let other = Server::start().await;
    limited
        .on("/x")
        .replies([Reply::status(429).header("retry-after", "1"), Reply::ok()]);
    other.on("/y").reply(Reply::ok());
    let svc = ServiceBuilder::new()
        .layer(ThrottleLayer::new())
        .map_err(boxed)
        .service(client());

    assert_eq!(fetch(svc.clone(), &limited.url("/x")).await.unwrap(), 429);
    // Several tasks want the limited authority; they wait at its gate.
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            let url = limited.url("/x");
            tokio::spawn(async move { fetch(svc, &url).await })
        })
        .collect();
    // Meanwhile the other authority is served without pause.
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(fetch(svc.clone(), &other.url("/y")).await.unwrap(), 200);
    }
    let other_took = start.elapsed();
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap(), 200);
    }

    let first = limited.arrivals()[0].at;
    let later: Vec<Duration> = limited.arrivals()[1..]
        .iter()
        .map(|a| a.at - first)
        .collect();
    assert_eq!(later.len(), 5);
    assert!(
        later.iter().all(|&d| d >= Duration::from_secs(1)),
        "arrived too early: {later:?}"
    );
    // Released within the jitter (10 %) plus generous slack.
    assert!(
        later.iter().all(|&d| d < Duration::from_millis(1600)),
        "{later:?}"
    );
    assert!(other_took < Duration::from_millis(800), "{other_took:?}");
    let others = other.arrivals();
    assert_eq!(others.len(), 10);
    assert!(others.iter().all(|a| a.at - first < Duration::from_secs(1)));
}

#[tokio::test]
async fn a_client_at_the_servers_own_rate_gets_no_429() {
    // The server allows 20 requests per second (GCRA, with two requests of
    // tolerance for scheduling jitter on a busy machine) and answers 429
    // beyond.
    let server = Server::start().await;
    let tat: Arc<Mutex<Option<Instant>>> = Arc::default();
    let interval = Duration::from_millis(50);
    server.on("/api").handle(move |arrival| {
        let mut tat = tat.lock().unwrap();
        let now = arrival.at;
        let due = tat.unwrap_or(now);
        if due > now + 2 * interval {
            return Reply::status(429).header("retry-after", "1");
        }
        *tat = Some(due.max(now) + interval);
        Reply::ok()
    });

    let quota = Quota::per_second(NonZeroU32::new(20).unwrap()).burst(NonZeroU32::MIN);
    let svc = ServiceBuilder::new()
        .layer(ThrottleLayer::new())
        .layer(RateLimitLayer::new(quota))
        .map_err(boxed)
        .service(client());
    // Eight tasks share the client's rate.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let svc = svc.clone();
            let url = server.url("/api");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..(if i < 2 { 7 } else { 6 }) {
                    statuses.push(fetch(svc.clone(), &url).await.unwrap());
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    assert_eq!(statuses.len(), 50);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(server.hits("/api"), 50);
}

#[tokio::test]
async fn slow_bodies_keep_their_slot_so_the_server_never_sees_more_than_the_limit() {
    let server = Server::start().await;
    // 8 bytes, one every 15 ms: each response streams for about 100 ms.
    server.on("/drip").reply(
        Reply::ok()
            .body("abcdefgh")
            .drip(1, Duration::from_millis(15)),
    );
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(NonZeroUsize::new(3).unwrap()))
        .map_err(boxed)
        .service(client());

    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let svc = svc.clone();
            let url = server.url("/drip");
            tokio::spawn(async move {
                let res = svc.oneshot(get(&url)).await.unwrap();
                res.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "abcdefgh");
    }
    assert_eq!(server.hits("/drip"), 12);
    assert_eq!(
        server.max_in_flight(),
        3,
        "the limit was used, never exceeded"
    );
}

#[tokio::test]
async fn a_per_authority_limit_does_not_block_another_authority() {
    let slow = Server::start().await;
    let fast = Server::start().await;
    slow.on("/slow").reply(
        Reply::ok()
            .body("0123456789abcdefghij")
            .drip(1, Duration::from_millis(50)),
    );
    fast.on("/fast").reply(Reply::ok().body("done"));
    let layer = ConcurrencyLimitLayer::per_authority(NonZeroUsize::MIN);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .map_err(boxed)
        .service(client());
    let rejecting = ServiceBuilder::new()
        .layer(layer.reject())
        .map_err(boxed)
        .service(client());

    // The slow authority's only slot is taken while its body streams.
    let res = svc.clone().oneshot(get(&slow.url("/slow"))).await.unwrap();
    let err = rejecting
        .clone()
        .oneshot(get(&slow.url("/slow")))
        .await
        .unwrap_err();
    assert!(err.is::<ConcurrencyLimited>());

    // The other authority goes at once, several times, meanwhile.
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(fetch(svc.clone(), &fast.url("/fast")).await.unwrap(), 200);
    }
    assert!(start.elapsed() < Duration::from_millis(600));
    assert_eq!(slow.in_flight(), 1, "the slow body is still streaming");

    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "0123456789abcdefghij");
    // Its slot is free again.
    assert_eq!(fetch(rejecting, &slow.url("/slow")).await.unwrap(), 200);
    assert_eq!(slow.hits("/slow"), 2);
}

/// The adaptive rate under the testkit's faults: resets and 500s are not
/// throttles (nothing is paced), a 503 without `Retry-After` is not one
/// either, and the first 429 paces that authority only, as the server sees.
#[tokio::test]
async fn the_adaptive_rate_learns_only_from_throttles_and_per_authority() {
    let server = Server::start().await;
    let other = Server::start().await;
    server.on("/reset").reply(Reply::reset());
    server.on("/500").reply(Reply::status(500));
    server.on("/503").reply(Reply::status(503));
    server
        .on("/api")
        .replies([Reply::ok(), Reply::ok(), Reply::status(429), Reply::ok()]);
    other.on("/api").reply(Reply::ok());
    let layer = AdaptiveRateLayer::new();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .map_err(boxed)
        .service(client());

    // Faults that are not throttles: errors pass through, nothing is paced.
    let err = svc.clone().oneshot(get(&server.url("/reset"))).await;
    assert!(err.is_err(), "a reset is an error");
    assert_eq!(fetch(svc.clone(), &server.url("/500")).await.unwrap(), 500);
    assert_eq!(fetch(svc.clone(), &server.url("/503")).await.unwrap(), 503);
    let url: http::Uri = server.url("/api").parse().unwrap();
    assert_eq!(layer.current_rate(&url), None);

    for _ in 0..3 {
        fetch(svc.clone(), &server.url("/api")).await.unwrap();
    }
    // The 429 paced this authority, at 0.85 × the 4 answers not throttled
    // in the last second (the 500, the 503 and two 200s): 3.4/s.
    let rate = layer.current_rate(&url).unwrap();
    assert!((3.0..=4.0).contains(&rate), "{rate}");
    let start = Instant::now();
    for _ in 0..2 {
        assert_eq!(fetch(svc.clone(), &server.url("/api")).await.unwrap(), 200);
    }
    let arrivals = server.arrivals_for("/api");
    let gap = arrivals[4].at - arrivals[3].at;
    assert!(
        gap >= Duration::from_millis(200),
        "{gap:?} between paced requests"
    );
    // Another authority is not paced.
    let other_start = Instant::now();
    for _ in 0..5 {
        assert_eq!(fetch(svc.clone(), &other.url("/api")).await.unwrap(), 200);
    }
    assert!(other_start.elapsed() < Duration::from_millis(400));
    assert!(start.elapsed() >= Duration::from_millis(400));
}
