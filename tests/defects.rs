//! Regression tests for the defects an outside review found (issue 15),
//! through the facade's public API, checked from the server's side.

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

use parapet::auth::{AuthLayer, Token, TokenError, provider_fn};
use parapet::ratelimit::{Quota, RateLimitLayer};
use parapet::{Client, ClientBuilder, Response};
use parapet_testkit::{Reply, Server};

fn fast() -> ClientBuilder {
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

/// Issue 15, must-fix 5: the one re-send after a 401 is a request that
/// leaves like any other: it waits for the rate limit.
#[tokio::test]
async fn the_resend_after_a_401_waits_for_the_rate_limit() {
    let server = Server::start().await;
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
    // 4 a second, burst 1: requests that leave are 250 ms apart.
    let quota = Quota::per_second(NonZeroU32::new(4).unwrap()).burst(NonZeroU32::MIN);
    let client = fast()
        .auth(AuthLayer::provider(provider))
        .rate_limit(RateLimitLayer::new(quota))
        .base_url(server.url("/"))
        .build()
        .unwrap();
    let resp = client.get("/me").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "hello");
    let arrivals = server.arrivals_for("/me");
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1].at.duration_since(arrivals[0].at);
    // Below the rate limit, the re-send left microseconds after the 401.
    assert!(gap >= Duration::from_millis(200), "re-sent after {gap:?}");
}

/// Issue 15: a relative URL whose query holds `://` is a path, not an
/// absolute URL.
#[tokio::test]
async fn a_relative_url_with_a_url_in_its_query_is_resolved_against_the_base() {
    let server = Server::start().await;
    server.on("/v1/search").reply(Reply::ok());
    let client = fast().base_url(server.url("/v1")).build().unwrap();
    let resp = client
        .get("search?next=https://x.test/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let arrivals = server.arrivals_for("/v1/search");
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].query.as_deref(), Some("next=https://x.test/"));
}

/// Issue 15: an unsupported scheme is refused up front, typed, and never
/// reaches the stack (so it is never retried as a connect error).
#[tokio::test]
async fn an_unsupported_scheme_is_refused_before_the_stack() {
    let err = Client::builder()
        .base_url("ftp://files.test/pub")
        .build()
        .unwrap_err();
    assert!(
        err.message().contains("unsupported URL scheme `ftp`"),
        "{err}"
    );

    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let transport = tower::service_fn(move |_req: http::Request<parapet::core::ReplayBody>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }
    });
    let client = Client::builder().build_with(transport).unwrap();
    for url in ["ftp://files.test/a", "gopher://x.test/", "localhost:8080/x"] {
        let err = client.get(url).send().await.unwrap_err();
        assert!(err.is_request(), "{url}: {err}");
        assert!(!err.is_retryable(), "{url}");
        let typed = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<parapet::UnsupportedScheme>())
            .unwrap_or_else(|| panic!("{url}: {err:?}"));
        assert!(!typed.scheme().is_empty());
    }
    // `file:///` is not even an HTTP URI (no authority).
    let err = client.get("file:///etc/passwd").send().await.unwrap_err();
    assert!(err.is_request() && !err.is_retryable(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing entered the stack");
}

/// Issue 15: nothing prints a URL's user info.
#[tokio::test]
async fn no_debug_output_prints_the_password_of_a_url() {
    let server = Server::start().await;
    server.on("/v1/me").reply(Reply::ok());
    let with_password = server.url("/v1").replacen("://", "://alice:hunter2@", 1);
    let builder = fast().base_url(with_password);
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("alice"),
        "{shown}"
    );
    let client = builder.build().unwrap();
    let shown = format!("{client:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("alice"),
        "{shown}"
    );
    // The credentials still work: they travel as a Basic header.
    client.get("me").send().await.unwrap();
    let arrivals = server.arrivals_for("/v1/me");
    assert_eq!(
        arrivals[0].header("authorization"),
        Some("Basic YWxpY2U6aHVudGVyMg==")
    );
}

/// Issue 15: `Response` is `Send + Sync`, so `&Response` may be held across
/// an await in a spawned task.
#[tokio::test]
async fn a_response_can_be_borrowed_across_an_await_in_a_spawned_task() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let server = Server::start().await;
    server.on("/x").reply(Reply::ok().body("abc"));
    let client = fast().build().unwrap();
    let url = server.url("/x");
    let task = tokio::spawn(async move {
        let resp: Response = client.get(&url).send().await.unwrap();
        let borrowed = &resp;
        send_sync(borrowed);
        tokio::task::yield_now().await;
        let status = borrowed.status();
        (status, resp.text().await.unwrap())
    });
    let (status, text) = task.await.unwrap();
    assert_eq!((status.as_u16(), text.as_str()), (200, "abc"));
}

/// Issue 15: `Error::retry_after` never reports more than the client would
/// honour, whatever the server sent.
#[tokio::test]
async fn a_huge_retry_after_is_reported_clamped() {
    let server = Server::start().await;
    server
        .on("/busy")
        .reply(Reply::status(429).header("retry-after", "99999999999999"));
    let client = fast()
        .retry_off()
        .base_url(server.url("/"))
        .build()
        .unwrap();
    let err = client
        .get("busy")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.retry_after(), Some(parapet::DEFAULT_MAX_SERVER_WAIT));
}

/// A provider that issues `token-1`, `token-2`, ... and counts its fetches.
fn counting_provider() -> (AuthLayer, Arc<AtomicU32>) {
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
    (AuthLayer::provider(provider), fetches)
}

/// Issue 15, must-fix 5, the throttle's half: a 401 whose headers close the
/// host's gate (an exhausted `RateLimit` window of 1 s) holds auth's
/// re-send until the gate opens again.
#[tokio::test]
async fn the_resend_after_a_401_waits_for_the_throttle_gate() {
    let server = Server::start().await;
    server.on("/me").handle(|a| {
        if a.header("authorization") == Some("Bearer token-2") {
            Reply::ok().body("hello")
        } else {
            Reply::status(401)
                .header("www-authenticate", "Bearer error=\"invalid_token\"")
                .header("ratelimit", "\"default\";r=0;t=1")
        }
    });
    let (auth, fetches) = counting_provider();
    let client = fast().auth(auth).base_url(server.url("/")).build().unwrap();
    let resp = client.get("/me").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "hello");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let arrivals = server.arrivals_for("/me");
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1].at.duration_since(arrivals[0].at);
    // Below the throttle, the re-send left at once, into a closed window.
    assert!(gap >= Duration::from_millis(900), "re-sent after {gap:?}");
}

/// Issue 15, must-fix 4, against a real API: one that refuses every token
/// costs two fetches for 50 calls (the first 401 recovers at once, the
/// token fetched for it, refused too, is not refetched within the
/// cool-down), and each call after the first sends one request and returns
/// the 401.
#[tokio::test]
async fn an_api_refusing_every_token_does_not_cost_a_fetch_per_call() {
    let server = Server::start().await;
    server
        .on("/me")
        .reply(Reply::status(401).header("www-authenticate", "Bearer error=\"invalid_token\""));
    let (auth, fetches) = counting_provider();
    let client = fast().auth(auth).base_url(server.url("/")).build().unwrap();
    for _ in 0..50 {
        let resp = client.get("/me").send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(server.hits("/me"), 51);
}
