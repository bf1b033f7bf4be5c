//! The breaker over a real HTTP client (hyper-util's legacy client), checked
//! from the side of loopback fault servers (`parapet-testkit`), on real time.
//! The only waits are the short open times the tests set (a second at most).

// Test helpers outside #[test] functions may fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen, CircuitPolicy, OpenedBy};
use parapet_core::{BoxError, is_fail_fast};
use parapet_testkit::{Reply, Server};
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn breaker(policy: CircuitPolicy) -> CircuitBreaker<HttpClient> {
    ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(policy).unwrap())
        .service(client())
}

fn consecutive(n: u32) -> CircuitPolicy {
    CircuitPolicy::consecutive_failures(NonZeroU32::new(n).unwrap())
}

/// Sends a GET through `svc` and reads the body to its end; the status.
async fn fetch<S, B>(svc: S, url: &str) -> Result<u16, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<B>, Error = BoxError>,
    B: http_body::Body<Error: Into<BoxError>>,
{
    let req = Request::get(url).body(Empty::new()).unwrap();
    let res = svc.oneshot(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(Into::into)?;
    Ok(status)
}

/// Runs `n` fetches of `url` from concurrent tasks.
async fn fetch_concurrently(
    svc: &CircuitBreaker<HttpClient>,
    url: &str,
    n: usize,
) -> Vec<Result<u16, BoxError>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let svc = svc.clone();
            let url = url.to_owned();
            tokio::spawn(async move { fetch(svc, &url).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

fn refusal(result: &Result<u16, BoxError>) -> &CircuitOpen {
    let err = result.as_ref().unwrap_err();
    assert!(is_fail_fast(err.as_ref()), "{err}");
    err.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("not a CircuitOpen: {err}"))
}

#[tokio::test]
async fn after_a_503_with_retry_after_nothing_arrives_until_one_probe() {
    let server = Server::start().await;
    server.on("/x").replies([
        Reply::status(503).header("retry-after", "1"),
        // The probe takes a moment, so that the others meet it in flight.
        Reply::ok().delay(Duration::from_millis(200)),
        Reply::ok(),
    ]);
    let svc = breaker(consecutive(5));
    let url = server.url("/x");

    // The server's own answer comes back to its caller.
    let res = svc
        .clone()
        .oneshot(Request::get(&url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");

    // For every caller, the authority is closed for that second.
    let refused = fetch_concurrently(&svc, &url, 20).await;
    let reopens_at = refusal(&refused[0]).reopens_at();
    for r in &refused {
        let open = refusal(r);
        assert_eq!(open.opened_by(), OpenedBy::Server);
        assert_eq!(open.reopens_at(), reopens_at);
        assert!(open.retry_after() <= Duration::from_secs(1));
    }
    assert_eq!(server.hits("/x"), 1, "nothing arrived while open");

    // Then exactly one probe arrives; the others meet it in flight.
    tokio::time::sleep_until(reopens_at).await;
    let results = fetch_concurrently(&svc, &url, 20).await;
    let probes: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(probes.len(), 1, "{results:?}");
    assert_eq!(*probes[0].as_ref().unwrap(), 200);
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| refusal(r).is_probing())
    );
    assert_eq!(server.hits("/x"), 2);

    // The probe succeeded: traffic flows again.
    for status in fetch_concurrently(&svc, &url, 5).await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(server.hits("/x"), 7);
}

#[tokio::test]
async fn connection_resets_open_the_circuit_for_the_whole_authority_only() {
    let flaky = Server::start().await;
    let healthy = Server::start().await;
    flaky.on("/reset").reply(Reply::reset());
    flaky.on("/fine").reply(Reply::ok());
    healthy.on("/fine").reply(Reply::ok());
    let svc = breaker(consecutive(3));

    for _ in 0..3 {
        let err = fetch(svc.clone(), &flaky.url("/reset")).await.unwrap_err();
        assert!(err.is::<hyper_util::client::legacy::Error>(), "{err}");
    }
    assert_eq!(flaky.hits("/reset"), 3);

    // Every path of that authority is refused, without a request.
    for path in ["/reset", "/fine"] {
        let result = fetch(svc.clone(), &flaky.url(path)).await;
        let open = refusal(&result);
        assert_eq!(open.opened_by(), OpenedBy::Failures);
        assert!(open.retry_after() > Duration::from_secs(29));
        assert_eq!(open.authority(), format!("http://{}", flaky.addr()));
    }
    assert_eq!(flaky.hits("/reset"), 3);
    assert_eq!(flaky.hits("/fine"), 0);

    // Another authority is served as usual.
    for _ in 0..3 {
        assert_eq!(
            fetch(svc.clone(), &healthy.url("/fine")).await.unwrap(),
            200
        );
    }
    assert_eq!(healthy.hits("/fine"), 3);
}

#[tokio::test]
async fn a_hanging_probe_abandoned_by_its_caller_lets_the_next_call_probe() {
    let server = Server::start().await;
    server
        .on("/h")
        .replies([Reply::status(500), Reply::hang(), Reply::ok()]);
    let svc = breaker(consecutive(1).open_for(Duration::from_millis(200)));
    let url = server.url("/h");

    assert_eq!(fetch(svc.clone(), &url).await.unwrap(), 500);
    let result = fetch(svc.clone(), &url).await;
    tokio::time::sleep_until(refusal(&result).reopens_at()).await;

    // The probe arrives and hangs; meanwhile nobody else gets through.
    let probe = tokio::spawn({
        let (svc, url) = (svc.clone(), url.clone());
        async move { fetch(svc, &url).await }
    });
    server.wait_for_arrivals(2).await;
    assert!(refusal(&fetch(svc.clone(), &url).await).is_probing());

    // Its caller gives up: the next call is the probe, and closes it.
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());
    assert_eq!(fetch(svc.clone(), &url).await.unwrap(), 200);
    assert_eq!(fetch(svc.clone(), &url).await.unwrap(), 200);
    assert_eq!(server.hits("/h"), 4);
    assert_eq!(svc.tracked_authorities(), 0);
}
