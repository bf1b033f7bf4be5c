//! The protection layers that are off by default (issue 21), through the
//! facade's `ClientBuilder`, against loopback testkit servers, checked from
//! the server's side: the circuit breaker, hedged reads, the AWS-style
//! retry quota and the adaptive rate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parapet::circuit::{CircuitOpen, CircuitPolicy};
use parapet::ratelimit::AdaptiveRateLayer;
use parapet::retry::{HedgePolicy, RetryQuota};
use parapet::{Client, ClientBuilder};
use parapet_testkit::{Reply, Server};

fn fast() -> ClientBuilder {
    Client::builder()
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
}

/// A 503 with `Retry-After: 1` opens the host's circuit for every caller:
/// a concurrent call fails fast without reaching the server, and the retry
/// that waited out the second is the one probe that closes it.
#[tokio::test]
async fn a_retry_after_opens_the_circuit_and_the_retry_is_the_probe() {
    let server = Server::start().await;
    server
        .on("/pay")
        .replies([Reply::status(503).header("retry-after", "1"), Reply::ok()]);
    server.on("/other").reply(Reply::ok());
    let client = fast()
        .circuit_breaker(CircuitPolicy::consecutive_failures(
            NonZeroU32::new(5).unwrap(),
        ))
        .build()
        .unwrap();

    let first = {
        let client = client.clone();
        let url = server.url("/pay");
        tokio::spawn(async move { client.get(&url).send().await })
    };
    // Wait until the 503 has arrived (the circuit opens as it is read).
    while server.hits("/pay") == 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = client.get(&server.url("/other")).send().await.unwrap_err();
    assert!(err.is_circuit_open(), "{err}");
    assert!(err.is_retryable());
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    let open = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .expect("the CircuitOpen is the source");
    assert!(open.authority().starts_with("http://127.0.0.1:"));
    assert_eq!(server.hits("/other"), 0, "refused calls never arrive");

    let res = first.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        server.hits("/pay"),
        2,
        "the 503, then the retry as the probe"
    );
    // Closed again: traffic flows.
    client.get(&server.url("/other")).send().await.unwrap();
    assert_eq!(server.hits("/other"), 1);
}

/// A read whose first copy hangs is answered by the hedge; a POST through
/// the same client is never hedged and arrives once.
#[tokio::test]
async fn a_hanging_read_is_answered_by_the_hedge_and_a_post_is_not_hedged() {
    let server = Server::start().await;
    server
        .on("/read")
        .replies([Reply::hang(), Reply::ok().body("fast")]);
    server
        .on("/write")
        .reply(Reply::ok().delay(Duration::from_millis(300)));
    let client = fast()
        .hedge(HedgePolicy::fixed(Duration::from_millis(100)))
        .build()
        .unwrap();

    let res = client.get(&server.url("/read")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "fast");
    assert_eq!(server.hits("/read"), 2);

    let res = client
        .post(&server.url("/write"))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.hits("/write"), 1, "a POST is never hedged");
}

/// Once the quota is spent, every call to the failing host arrives once.
#[tokio::test]
async fn a_spent_retry_quota_stops_the_retries() {
    let server = Server::start().await;
    server.on("/down").reply(Reply::status(500));
    // Room for two retries (5 tokens each).
    let client = fast()
        .retry_quota(RetryQuota::aws_standard().capacity(10))
        .build()
        .unwrap();
    for _ in 0..4 {
        let res = client.get(&server.url("/down")).send().await.unwrap();
        assert_eq!(res.status(), 500);
    }
    // 3 attempts for the first call, then one each.
    assert_eq!(server.hits("/down"), 6);
}

/// After the host's first 429 the adaptive rate paces what leaves: the
/// server allowed 5 in its first second, so the next requests arrive
/// about a quarter of a second apart, not back to back.
#[tokio::test]
async fn after_a_429_the_adaptive_rate_spaces_the_requests() {
    let server = Server::start().await;
    let served = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&served);
    server.on("/api").handle(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 5 {
            Reply::status(429)
        } else {
            Reply::ok()
        }
    });
    let client = fast()
        .retry_off()
        .adaptive_rate(AdaptiveRateLayer::new())
        .build()
        .unwrap();
    for i in 0..9 {
        let status = client
            .get(&server.url("/api"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status == 429, i == 5);
    }
    let at: Vec<_> = server.arrivals().iter().map(|a| a.at).collect();
    assert_eq!(at.len(), 9);
    // Before the 429: back to back.
    assert!(at[4] - at[0] < Duration::from_millis(200));
    // After it: paced at 0.85 × 5/s (235 ms apart).
    for pair in at[6..].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(150),
            "{:?}",
            pair[1] - pair[0]
        );
    }
}

/// A circuit policy the breaker refuses is a configuration error.
#[test]
fn an_invalid_circuit_policy_fails_the_build() {
    let policy = CircuitPolicy::failure_rate(0, Duration::from_secs(10), NonZeroU32::MIN);
    let err = Client::builder()
        .circuit_breaker(policy)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("circuit"), "{err}");
}
