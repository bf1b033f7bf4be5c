//! What a response says about its call (issue 16): the URL that answered,
//! the server's address, how many times the request was sent and how long
//! the call took; `error_for_status_ref` leaves the response readable.
//! Each is checked against what the loopback server saw.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use http_body_util::BodyExt as _;
use parapet::Client;
use parapet_testkit::{Reply, Server};
use tower::ServiceExt as _;

fn client() -> Client {
    // Short backoff so retries do not slow the suite; no throttle, so the
    // 429's Retry-After does not hold the next call to the host.
    Client::builder()
        .throttle(None)
        .retry(
            parapet::retry::RetryPolicy::builder()
                .max_attempts(3)
                .base_delay(Duration::from_millis(5))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_first_attempt_answer_reports_one_attempt_its_url_and_the_server_address() {
    let server = Server::start().await;
    server.on("/one").reply(Reply::ok().body("hi"));
    let resp = client().get(&server.url("/one?x=1")).send().await.unwrap();
    assert_eq!(resp.attempts(), 1);
    assert_eq!(resp.url().to_string(), server.url("/one?x=1"));
    assert_eq!(resp.remote_addr(), Some(server.addr()));
    assert_eq!(server.hits("/one"), 1);
}

#[tokio::test]
async fn retries_count_as_attempts_and_the_elapsed_time_covers_them() {
    let server = Server::start().await;
    server.on("/flaky").replies([
        Reply::status(503),
        Reply::status(503),
        Reply::ok().body("done"),
    ]);
    let resp = client().get(&server.url("/flaky")).send().await.unwrap();
    let arrivals = server.arrivals_for("/flaky");
    assert_eq!(arrivals.len(), 3);
    assert_eq!(resp.attempts(), 3);
    // The call began before the first attempt arrived and ended after the
    // last was answered: it spans at least the server's first-to-last gap.
    assert!(resp.elapsed() >= arrivals[2].at - arrivals[0].at);
    assert_eq!(resp.text().await.unwrap(), "done");
}

#[tokio::test]
async fn a_redirect_hop_counts_as_an_attempt_and_the_final_url_is_reported() {
    let first = Server::start().await;
    let second = Server::start().await;
    first
        .on("/old")
        .reply(Reply::status(302).header("location", second.url("/new")));
    second.on("/new").reply(Reply::ok().body("moved"));
    let resp = client().get(&first.url("/old")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.attempts(), 2);
    assert_eq!(resp.url().to_string(), second.url("/new"));
    assert_eq!(resp.remote_addr(), Some(second.addr()));
    assert_eq!((first.hits("/old"), second.hits("/new")), (1, 1));
}

#[tokio::test]
async fn error_for_status_ref_reports_the_status_and_leaves_the_body_readable() {
    let server = Server::start().await;
    server.on("/limited").reply(
        Reply::status(429)
            .header("retry-after", "7")
            .body("slow down"),
    );
    server.on("/fine").reply(Reply::ok().body("fine"));
    let client = client();

    let resp = client
        .get(&server.url("/limited"))
        .retry(false)
        .send()
        .await
        .unwrap();
    let err = resp.error_for_status_ref().unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.status().map(|s| s.as_u16()), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(err.body_snippet().is_none());
    assert_eq!(resp.text().await.unwrap(), "slow down");

    let ok = client.get(&server.url("/fine")).send().await.unwrap();
    assert!(ok.error_for_status_ref().is_ok());
    assert_eq!(ok.text().await.unwrap(), "fine");
}

#[tokio::test]
async fn the_client_as_a_service_records_resends_on_the_response() {
    let server = Server::start().await;
    server
        .on("/svc")
        .replies([Reply::status(503), Reply::ok().body("ok")]);
    let client = client();
    let req = http::Request::get(server.url("/svc"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(
        parapet::core::Attempt::get(resp.extensions()).map(parapet::core::Attempt::number),
        Some(2)
    );
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(server.hits("/svc"), 2);
}
