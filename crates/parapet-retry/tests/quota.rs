//! The retry quota over a real hyper-util client against a loopback server
//! that answers 503 to everything, counted from the server's side.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parapet_core::ReplayBody;
use parapet_retry::{BackoffJitter, NotRetried, NotRetriedReason, Retry, RetryPolicy, RetryQuota};
use parapet_testkit::{Reply, Server};
use tower::ServiceExt;

#[tokio::test]
async fn once_the_quota_is_spent_every_call_arrives_exactly_once() {
    let server = Server::start().await;
    server.on("/items").reply(Reply::status(503));
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(1))
        .min_delay(Duration::from_millis(1))
        .jitter(BackoffJitter::None)
        .retry_quota(RetryQuota::aws_standard().capacity(50).retry_cost(5))
        .build()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let svc = Retry::new(client, policy);
    let get = || {
        Request::get(server.url("/items"))
            .body(ReplayBody::empty())
            .unwrap()
    };

    // 50 tokens at 5 a retry: 10 retries, two for each of the first five
    // calls (three attempts each).
    for call in 1..=5 {
        let res = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let why = NotRetried::get(res.extensions()).unwrap();
        assert_eq!(
            why.reason(),
            NotRetriedReason::NoAttemptsLeft,
            "call {call}"
        );
        assert_eq!(server.hits("/items"), 3 * call);
    }
    // Then every call arrives once, and says why it was not retried.
    for call in 1..=5 {
        let res = svc.clone().oneshot(get()).await.unwrap();
        let why = NotRetried::get(res.extensions()).unwrap();
        assert_eq!(why.reason(), NotRetriedReason::QuotaExhausted);
        assert_eq!(why.attempts(), 1);
        assert_eq!(server.hits("/items"), 15 + call);
    }
    assert_eq!(server.arrivals().len(), 20);
}
