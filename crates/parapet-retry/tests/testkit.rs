//! The retry layer over a real hyper-util client against loopback servers,
//! checked from the server's side: how many requests arrived, how far
//! apart, with which headers and bodies.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // helpers outside #[test] fns

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_core::{IdempotencyKey, IdempotencyRules, ReplayBody, fmt_http_date};
use parapet_retry::{BackoffJitter, Retry, RetryPolicy, RetryPolicyBuilder};
use parapet_testkit::{Reply, Server, body_hash};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Short, deterministic waits so the tests run fast.
fn quick() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .base_delay(Duration::from_millis(20))
        .jitter(BackoffJitter::None)
}

async fn call(
    svc: &mut Retry<HttpClient>,
    req: Request<ReplayBody>,
) -> Result<(StatusCode, Bytes), parapet_core::BoxError> {
    let res = ServiceExt::<Request<ReplayBody>>::ready(svc)
        .await?
        .call(req)
        .await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn get(url: &str) -> Request<ReplayBody> {
    Request::get(url).body(ReplayBody::empty()).unwrap()
}

#[tokio::test]
async fn get_answered_503_503_200_arrives_three_times() {
    let server = Server::start().await;
    server
        .on("/items")
        .fail_times(2, Reply::status(503))
        .then(Reply::ok().body("items"));
    let mut svc = Retry::new(client(), quick().build().unwrap());

    let (status, body) = call(&mut svc, get(&server.url("/items"))).await.unwrap();

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "items");
    assert_eq!(server.hits("/items"), 3);
}

#[tokio::test]
async fn post_answered_503_arrives_once() {
    let server = Server::start().await;
    server
        .on("/charges")
        .fail_times(1, Reply::status(503))
        .then(Reply::ok());
    let mut svc = Retry::new(client(), quick().build().unwrap());

    let req = Request::post(server.url("/charges"))
        .body(ReplayBody::from(r#"{"amount":100}"#))
        .unwrap();
    let (status, _) = call(&mut svc, req).await.unwrap();

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.hits("/charges"), 1);
}

#[tokio::test]
async fn post_with_an_idempotency_key_arrives_three_times_with_one_key_and_one_body() {
    let server = Server::start().await;
    server
        .on("/charges")
        .fail_times(2, Reply::status(503))
        .then(Reply::status(201));
    let policy = quick()
        .idempotency(IdempotencyRules::new().trust_idempotency_key(true))
        .build()
        .unwrap();
    let mut svc = Retry::new(client(), policy);

    // A streamed body, so the replay really comes from the recording.
    let chunks = futures_stream(vec![
        Bytes::from_static(b"{\"amount\":"),
        Bytes::from_static(b"100}"),
    ]);
    let mut req = Request::post(server.url("/charges"))
        .body(ReplayBody::new(
            http_body_util::StreamBody::new(chunks),
            1024,
        ))
        .unwrap();
    IdempotencyKey::ensure(&mut req);
    let (status, _) = call(&mut svc, req).await.unwrap();

    assert_eq!(status, StatusCode::CREATED);
    let seen = server.arrivals_for("/charges");
    assert_eq!(seen.len(), 3);
    let key = seen[0].header("idempotency-key").unwrap().to_owned();
    assert_eq!(key.len(), 36);
    assert!(
        seen.iter()
            .all(|a| a.header("idempotency-key") == Some(&key))
    );
    assert!(
        seen.iter()
            .all(|a| a.body_hash == body_hash(b"{\"amount\":100}"))
    );
}

#[tokio::test]
async fn retry_after_1_on_429_holds_the_second_arrival_back_a_second() {
    let server = Server::start().await;
    server
        .on("/limited")
        .fail_times(1, Reply::status(429).header("retry-after", "1"))
        .then(Reply::ok());
    let mut svc = Retry::new(client(), quick().build().unwrap());

    let (status, _) = call(&mut svc, get(&server.url("/limited"))).await.unwrap();

    assert_eq!(status, StatusCode::OK);
    let seen = server.arrivals_for("/limited");
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    // At most 10 % of upward spread, plus generous room for a slow machine.
    assert!(gap < Duration::from_secs(3), "{gap:?}");
}

#[tokio::test]
async fn an_http_date_retry_after_is_obeyed() {
    let server = Server::start().await;
    let served = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&served);
    server.on("/maintenance").handle(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            // Whole seconds: between 2 and 3 s from now.
            let at = fmt_http_date(SystemTime::now() + Duration::from_secs(3));
            Reply::status(503).header("retry-after", at)
        } else {
            Reply::ok()
        }
    });
    let mut svc = Retry::new(client(), quick().build().unwrap());

    let (status, _) = call(&mut svc, get(&server.url("/maintenance")))
        .await
        .unwrap();

    assert_eq!(status, StatusCode::OK);
    let seen = server.arrivals_for("/maintenance");
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(1900), "{gap:?}");
    assert!(gap < Duration::from_secs(6), "{gap:?}");
}

#[tokio::test]
async fn retry_after_86400_returns_at_once() {
    let server = Server::start().await;
    server
        .on("/down")
        .reply(Reply::status(503).header("retry-after", "86400"));
    let mut svc = Retry::new(client(), quick().build().unwrap());

    let start = Instant::now();
    let res = ServiceExt::<Request<ReplayBody>>::ready(&mut svc)
        .await
        .unwrap()
        .call(get(&server.url("/down")))
        .await
        .unwrap();

    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "86400");
    assert_eq!(server.hits("/down"), 1);
}

/// A bare listener that answers every request `200` and counts them.
async fn late_listener(listener: TcpListener, arrivals: Arc<AtomicUsize>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let arrivals = Arc::clone(&arrivals);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // Read the head and the (small, content-length) body.
            loop {
                let Ok(n) = tcp.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            arrivals.fetch_add(1, Ordering::SeqCst);
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
    }
}

#[tokio::test]
async fn connection_refused_then_a_late_listener_gets_the_post_exactly_once() {
    // A port with nothing listening on it: connections are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let arrivals = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&arrivals);
    // Attempts at 0, 100, 300, 700 ms, ...; the listener comes up at about
    // 150 ms (more attempts than needed, for a slow machine).
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        late_listener(listener, counted).await;
    });
    let policy = RetryPolicy::builder()
        .max_attempts(6)
        .base_delay(Duration::from_millis(100))
        .jitter(BackoffJitter::None)
        .build()
        .unwrap();
    let mut svc = Retry::new(client(), policy);

    let req = Request::post(format!("http://{addr}/orders"))
        .body(ReplayBody::from("order=1"))
        .unwrap();
    let (status, _) = call(&mut svc, req).await.unwrap();

    assert_eq!(status, StatusCode::OK);
    assert_eq!(arrivals.load(Ordering::SeqCst), 1);
    starter.abort();
}

#[tokio::test]
async fn a_post_refused_every_time_fails_after_the_attempts() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut svc = Retry::new(client(), quick().build().unwrap());
    let req = Request::post(format!("http://{addr}/orders"))
        .body(ReplayBody::from("order=1"))
        .unwrap();
    let start = Instant::now();
    let err = call(&mut svc, req).await.unwrap_err();
    // Two waits of 20 and 40 ms: the three attempts were made.
    assert!(start.elapsed() >= Duration::from_millis(60));
    assert!(parapet_retry::request_never_sent(&*err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_outage_is_not_hammered() {
    const CALLS: usize = 1000;
    const CONCURRENCY: usize = 50;
    let server = Server::start().await;
    server.on("/down").reply(Reply::status(503));
    let policy = RetryPolicy::builder()
        .base_delay(Duration::from_millis(1))
        .min_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    // Default budget: 20 %, plus 10 retries per second.
    let svc = Retry::new(client(), policy);
    let url = server.url("/down");

    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let mut svc = svc.clone();
        let next = Arc::clone(&next);
        let url = url.clone();
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < CALLS {
                let (status, _) = call(&mut svc, get(&url)).await.unwrap();
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    let elapsed = start.elapsed();

    let arrivals = server.hits("/down");
    // At most 1.2 × the calls plus the floor times the elapsed seconds.
    let bound = 1.2 * CALLS as f64 + 10.0 * elapsed.as_secs_f64();
    assert!(
        arrivals as f64 <= bound,
        "{arrivals} arrivals > {bound} in {elapsed:?}"
    );
    // Retries did happen, up to the budget (without one there would be 3000).
    assert!(arrivals > CALLS + 100, "{arrivals}");
}

fn futures_stream(
    chunks: Vec<Bytes>,
) -> impl futures_core::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> {
    struct Iter(std::vec::IntoIter<Bytes>);
    impl futures_core::Stream for Iter {
        type Item = Result<http_body::Frame<Bytes>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(|b| Ok(http_body::Frame::data(b))))
        }
    }
    Iter(chunks.into_iter())
}
