//! The default client against the loopback testkit server: the headline
//! behaviour of every layer, through the facade, checked from the server's
//! side.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parapet::auth::{AuthLayer, Token, TokenError, provider_fn};
use parapet::ratelimit::{ConcurrencyLimitLayer, Quota, RateLimitLayer};
use parapet::{Client, ClientBuilder};
use parapet_testkit::{Reply, Server};
use serde::Deserialize;
use tokio::time::Instant;

/// The value of header `name`, which every arrival carried, the same.
fn one_value(arrivals: &[parapet_testkit::Arrival], name: &str) -> String {
    let first = arrivals[0].header(name).expect("the header arrived");
    for a in arrivals {
        assert_eq!(
            a.header(name),
            Some(first),
            "{name} differs between attempts"
        );
    }
    first.to_owned()
}

fn fast() -> ClientBuilder {
    // Small waits so that the suite stays quick; the behaviour is the same.
    Client::builder()
        .retry(
            parapet::retry::RetryPolicy::builder()
                .base_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(50))
                .classify(parapet::retry_classifier)
                .build()
                .unwrap(),
        )
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
}

#[tokio::test]
async fn a_get_answered_503_503_200_succeeds_after_three_arrivals_with_one_request_id() {
    let server = Server::start().await;
    server.on("/items").replies([
        Reply::status(503),
        Reply::status(503),
        Reply::ok().body("[]"),
    ]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/items").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "[]");

    let arrivals = server.arrivals_for("/items");
    assert_eq!(arrivals.len(), 3);
    assert_eq!(one_value(&arrivals, "x-request-id").len(), 36);
    assert_eq!(
        one_value(&arrivals, "user-agent"),
        parapet::DEFAULT_USER_AGENT
    );
}

#[tokio::test]
async fn a_post_answered_503_arrives_once_and_the_503_is_returned() {
    let server = Server::start().await;
    server.on("/charges").reply(Reply::status(503));
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client
        .post("/charges")
        .json(&serde_json::json!({"amount": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let err = resp.error_for_status().await.unwrap_err();
    assert!(err.is_status() && err.is_retryable());
    assert_eq!(server.hits("/charges"), 1);
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_is_retried_with_the_same_key_and_body() {
    let server = Server::start().await;
    server
        .on("/charges")
        .replies([Reply::status(503), Reply::status(502), Reply::status(201)]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client
        .post("/charges")
        .json(&serde_json::json!({"amount": 5}))
        .idempotency_key()
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let arrivals = server.arrivals_for("/charges");
    assert_eq!(arrivals.len(), 3);
    one_value(&arrivals, "idempotency-key");
    assert!(
        arrivals
            .iter()
            .all(|a| a.body_hash == arrivals[0].body_hash && a.body_len > 0)
    );
}

#[tokio::test]
async fn a_hung_server_fails_with_a_timeout_within_the_deadline() {
    let server = Server::start().await;
    server.on("/slow").reply(Reply::hang());
    let client = fast()
        .deadline(Duration::from_millis(400))
        .attempt_timeout(Duration::from_millis(150))
        .base_url(server.url("/"))
        .build()
        .unwrap();

    let started = Instant::now();
    let err = client.get("/slow").send().await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took < Duration::from_millis(400 + 250), "{took:?}");
    // Each attempt was cut at the attempt timeout and retried, within the deadline.
    let hits = server.hits("/slow");
    assert!((2..=3).contains(&hits), "{hits}");
}

#[tokio::test]
async fn a_stalled_first_attempt_is_retried_on_a_fresh_connection() {
    let server = Server::start().await;
    server.on("/x").replies([
        Reply::ok().delay(Duration::from_secs(5)),
        Reply::ok().body("second"),
    ]);
    let client = fast()
        .attempt_timeout(Duration::from_millis(200))
        .base_url(server.url("/"))
        .build()
        .unwrap();
    let resp = client.get("/x").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "second");
    let arrivals = server.arrivals_for("/x");
    assert_eq!(arrivals.len(), 2);
    assert_ne!(arrivals[0].connection, arrivals[1].connection);
}

#[tokio::test]
async fn retry_after_beyond_the_maximum_is_returned_at_once_with_its_value() {
    let server = Server::start().await;
    server
        .on("/limited")
        .reply(Reply::status(429).header("retry-after", "86400"));
    let client = fast()
        .throttle(None)
        .base_url(server.url("/"))
        .build()
        .unwrap();

    let started = Instant::now();
    let resp = client.get("/limited").send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    // The server's own value stays in the header; the error reports the
    // wait cut to what the client honours.
    assert_eq!(resp.headers()["retry-after"], "86400");
    let err = resp.error_for_status().await.unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.retry_after(), Some(parapet::DEFAULT_MAX_SERVER_WAIT));
    assert_eq!(server.hits("/limited"), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_holds_every_call_to_that_host() {
    let server = Server::start().await;
    server
        .on("/a")
        .replies([Reply::status(429).header("retry-after", "1"), Reply::ok()]);
    server.on("/b").reply(Reply::ok());
    let client = fast()
        .retry_off()
        .base_url(server.url("/"))
        .build()
        .unwrap();

    let first = client.get("/a").send().await.unwrap();
    assert_eq!(first.status(), 429);
    // Another call to the same host, from another task, waits at the gate.
    let other = client.clone();
    let b = tokio::spawn(async move { other.get("/b").send().await.unwrap().status() });
    assert_eq!(b.await.unwrap(), 200);
    let a_at = server.arrivals_for("/a")[0].at;
    let b_at = server.arrivals_for("/b")[0].at;
    assert!(
        b_at.duration_since(a_at) >= Duration::from_millis(990),
        "{:?}",
        b_at - a_at
    );
}

#[tokio::test]
async fn the_rate_limit_spaces_calls_at_the_quota() {
    let server = Server::start().await;
    server.on("/q").reply(Reply::ok());
    let quota = Quota::per_second(NonZeroU32::new(20).unwrap()).burst(NonZeroU32::MIN);
    let client = fast()
        .rate_limit(RateLimitLayer::new(quota))
        .base_url(server.url("/"))
        .build()
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("/q").send().await.unwrap().status() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let mut times: Vec<_> = server.arrivals_for("/q").iter().map(|a| a.at).collect();
    times.sort();
    // Six calls at 20/s with burst 1: at least 5 × 50 ms from first to last.
    assert!(times[5].duration_since(times[0]) >= Duration::from_millis(240));
}

#[tokio::test]
async fn the_concurrency_limit_holds_slots_while_bodies_stream() {
    let server = Server::start().await;
    server.on("/drip").reply(
        Reply::ok()
            .body(vec![b'x'; 40])
            .drip(10, Duration::from_millis(20)),
    );
    let client = fast()
        .concurrency_limit(ConcurrencyLimitLayer::new(NonZeroUsize::new(2).unwrap()))
        .base_url(server.url("/"))
        .build()
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                c.get("/drip")
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 40);
    }
    assert_eq!(server.hits("/drip"), 6);
    assert_eq!(server.max_in_flight(), 2);
}

#[tokio::test]
async fn a_static_bearer_token_is_sent_on_every_attempt() {
    let server = Server::start().await;
    server
        .on("/me")
        .replies([Reply::status(503), Reply::ok().body("{}")]);
    let client = fast()
        .auth(AuthLayer::bearer("s3cr3t-token").unwrap())
        .base_url(server.url("/"))
        .build()
        .unwrap();
    assert_eq!(client.get("/me").send().await.unwrap().status(), 200);
    let arrivals = server.arrivals_for("/me");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(one_value(&arrivals, "authorization"), "Bearer s3cr3t-token");
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_request_replayed() {
    let server = Server::start().await;
    // The server accepts only the second token it ever issued.
    server.on("/me").handle(|a| {
        if a.header("authorization") == Some("Bearer token-2") {
            Reply::ok().body("hello")
        } else {
            Reply::status(401).header("www-authenticate", "Bearer error=\"invalid_token\"")
        }
    });
    let fetches = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&fetches);
    let provider = provider_fn(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, TokenError>(
                Token::new(format!("token-{n}")).with_expires_in(Duration::from_secs(600)),
            )
        }
    });
    let client = fast()
        .auth(AuthLayer::provider(provider))
        .base_url(server.url("/"))
        .build()
        .unwrap();
    let resp = client.put("/me").body("payload").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "hello");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let arrivals = server.arrivals_for("/me");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].body_hash, arrivals[1].body_hash);
}

#[derive(Debug, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[tokio::test]
async fn json_in_and_out_over_the_wire() {
    let server = Server::start().await;
    server.on("/users").handle(|a| {
        assert_eq!(a.header("content-type"), Some("application/json"));
        Reply::json(format!("{{\"id\":7,\"name\":{}}}", a.body_text().len()))
    });
    let client = fast().base_url(server.url("/")).build().unwrap();
    let err = client
        .post("/users")
        .json(&serde_json::json!({"name": "ada"}))
        .send()
        .await
        .unwrap()
        .json::<User>()
        .await
        .unwrap_err();
    // The server sent a number where a string was expected: the path says where.
    assert!(err.is_decode());
    assert!(err.to_string().contains("name"), "{err}");

    server
        .on("/users/7")
        .reply(Reply::json(r#"{"id":7,"name":"ada"}"#));
    let user: User = client
        .get("/users/7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((user.id, user.name.as_str()), (7, "ada"));
}

#[tokio::test]
async fn connection_refused_is_a_connect_error_and_a_post_is_tried_within_its_limits() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = fast().build().unwrap();
    let err = client
        .post(&format!("http://{addr}/x"))
        .body("once")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn the_client_is_a_tower_service_for_custom_layers() {
    use tower::ServiceExt;
    let server = Server::start().await;
    server.on("/svc").reply(Reply::ok().body("via tower"));
    let client = fast().base_url(server.url("/")).build().unwrap();
    let req = http::Request::get("/svc").body(String::new()).unwrap();
    let resp = client.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.extensions()
            .get::<parapet::trace::RequestId>()
            .is_some()
    );
}

#[tokio::test]
async fn a_github_style_403_is_a_rate_limit_error_with_the_reset() {
    let server = Server::start().await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30;
    server.on("/repos").reply(
        Reply::status(403)
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", reset.to_string()),
    );
    let client = fast().base_url(server.url("/")).build().unwrap();
    let resp = client.get("/repos").send().await.unwrap();
    let err = resp.error_for_status().await.unwrap_err();
    assert!(err.is_rate_limited() && err.is_status());
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    // A 403 is not retried.
    assert_eq!(server.hits("/repos"), 1);
}
