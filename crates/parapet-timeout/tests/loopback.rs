//! The timeout layers over a real hyper-util client against a loopback
//! server that stalls, drips and hangs on cue (real time, short durations).

// The helpers below are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_core::BoxError;
use parapet_testkit::{Reply, Server};
use parapet_timeout::{
    AttemptTimedOut, AttemptTimeoutLayer, BodyDeadline, BodyTimedOut, DeadlineExceeded,
    DeadlineLayer,
};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// How late a timeout may fire: scheduling slack on a busy machine.
const SLACK: Duration = Duration::from_millis(50);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One pooled keep-alive client, shared by every request of a test.
fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(server: &Server, path: &str) -> Request<Empty<Bytes>> {
    Request::get(server.url(path)).body(Empty::new()).unwrap()
}

/// Sends one request through `svc` and returns the result with how long the
/// call took.
async fn timed<S, B>(
    svc: &mut S,
    req: Request<Empty<Bytes>>,
) -> (Result<Response<B>, BoxError>, Duration)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = BoxError>,
{
    let start = Instant::now();
    let res = svc.ready().await.unwrap().call(req).await;
    (res, start.elapsed())
}

#[track_caller]
fn assert_within(elapsed: Duration, limit: Duration) {
    assert!(elapsed >= limit, "fired early: {elapsed:?} < {limit:?}");
    assert!(
        elapsed <= limit + SLACK,
        "fired late: {elapsed:?} > {limit:?} + {SLACK:?}"
    );
}

/// Asserts, from the server's side, that the first `/fast` request and the
/// faulty one shared a connection (the pool does reuse), and that the
/// `/fast` request after the fault came on a new one.
fn assert_not_reused(server: &Server, faulty: &str) {
    let before = server.arrivals_for("/fast")[0].connection;
    let stalled = server.arrivals_for(faulty)[0].connection;
    let after = server.arrivals_for("/fast")[1].connection;
    assert_eq!(
        before, stalled,
        "the pool should have reused the warm connection"
    );
    assert_ne!(after, stalled, "the stalled connection was reused");
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn stalled_headers_fail_at_the_deadline_and_the_connection_is_not_reused() {
    let server = Server::start().await;
    server.on("/fast").reply(Reply::ok().body("hi"));
    server
        .on("/stalled")
        .reply(Reply::ok().body("late").delay(Duration::from_secs(5)));
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(200)))
        .service(client());

    let (warm, _) = timed(&mut svc, get(&server, "/fast")).await;
    assert_eq!(
        warm.unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes(),
        "hi"
    );
    let (res, elapsed) = timed(&mut svc, get(&server, "/stalled")).await;
    let (next, _) = timed(&mut svc, get(&server, "/fast")).await;

    assert_within(elapsed, ms(200));
    let err = res.unwrap_err();
    let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert!(!exceeded.is_body());
    assert_eq!(
        next.unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes(),
        "hi"
    );
    assert_not_reused(&server, "/stalled");
}

#[tokio::test]
async fn a_slow_drip_body_fails_at_the_deadline_and_is_never_complete() {
    let server = Server::start().await;
    server.on("/fast").reply(Reply::ok().body("hi"));
    // Headers at once, then a byte every 20 ms for 2 s.
    server
        .on("/drip")
        .reply(Reply::ok().body(vec![b'x'; 100]).drip(1, ms(20)));
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(300)))
        .service(client());

    let (warm, _) = timed(&mut svc, get(&server, "/fast")).await;
    warm.unwrap().into_body().collect().await.unwrap();
    let start = Instant::now();
    let (res, _) = timed(&mut svc, get(&server, "/drip")).await;
    let body = res.unwrap().into_body().collect().await;
    let elapsed = start.elapsed();
    let (next, _) = timed(&mut svc, get(&server, "/fast")).await;

    assert_within(elapsed, ms(300));
    let err = body.unwrap_err();
    assert!(err.downcast_ref::<DeadlineExceeded>().unwrap().is_body());
    assert!(next.is_ok());
    assert_not_reused(&server, "/drip");
}

#[tokio::test]
async fn an_exempt_download_outlives_the_deadline_while_it_keeps_flowing() {
    let server = Server::start().await;
    // 12 chunks 25 ms apart: about 300 ms, twice the deadline.
    server
        .on("/download")
        .reply(Reply::ok().body(vec![b'x'; 12]).drip(1, ms(25)));
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(150)))
        .layer(AttemptTimeoutLayer::new(ms(150)).body_idle_timeout(ms(200)))
        .service(client());
    let mut req = get(&server, "/download");
    req.extensions_mut().insert(BodyDeadline::exempt());

    let (res, _) = timed(&mut svc, req).await;
    let body = res.unwrap().into_body().collect().await.unwrap().to_bytes();

    assert_eq!(body.len(), 12);
}

#[tokio::test]
async fn a_stalled_body_fails_at_the_idle_timeout_and_the_connection_is_not_reused() {
    let server = Server::start().await;
    server.on("/fast").reply(Reply::ok().body("hi"));
    // Headers at once, then the first byte only after 5 s.
    server
        .on("/stalled-body")
        .reply(Reply::ok().body("xxxx").drip(1, Duration::from_secs(5)));
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(10)))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(1)).body_idle_timeout(ms(200)))
        .service(client());

    let (warm, _) = timed(&mut svc, get(&server, "/fast")).await;
    warm.unwrap().into_body().collect().await.unwrap();
    let start = Instant::now();
    let (res, _) = timed(&mut svc, get(&server, "/stalled-body")).await;
    let body = res.unwrap().into_body().collect().await;
    let elapsed = start.elapsed();
    let (next, _) = timed(&mut svc, get(&server, "/fast")).await;

    assert_within(elapsed, ms(200));
    let err = body.unwrap_err();
    let idle = err.downcast_ref::<BodyTimedOut>().unwrap();
    assert!(idle.is_idle());
    assert!(next.is_ok());
    assert_not_reused(&server, "/stalled-body");
}

#[tokio::test]
async fn a_hung_connection_fails_at_the_attempt_limit_and_is_abandoned() {
    let server = Server::start().await;
    server.on("/fast").reply(Reply::ok().body("hi"));
    server.on("/hang").reply(Reply::hang());
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .layer(AttemptTimeoutLayer::new(ms(200)))
        .service(client());

    let (warm, _) = timed(&mut svc, get(&server, "/fast")).await;
    warm.unwrap().into_body().collect().await.unwrap();
    let (res, elapsed) = timed(&mut svc, get(&server, "/hang")).await;
    // The server sees the client close the hung connection.
    tokio::time::timeout(Duration::from_secs(2), server.wait_idle())
        .await
        .unwrap();
    let (next, _) = timed(&mut svc, get(&server, "/fast")).await;

    assert_within(elapsed, ms(200));
    let err = res.unwrap_err();
    let timed_out = err.downcast_ref::<AttemptTimedOut>().unwrap();
    assert!(timed_out.is_attempt_limit());
    assert_eq!(timed_out.limit(), ms(200));
    assert!(next.is_ok());
    assert_not_reused(&server, "/hang");
}

#[tokio::test]
async fn a_hung_connection_with_little_time_left_fails_at_the_deadline() {
    let server = Server::start().await;
    server.on("/hang").reply(Reply::hang());
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(ms(150)))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(2)))
        .service(client());

    let (res, elapsed) = timed(&mut svc, get(&server, "/hang")).await;

    assert_within(elapsed, ms(150));
    let err = res.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(server.hits("/hang"), 1);
}
