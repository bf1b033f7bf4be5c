//! Dropping a call's future while it waits: during a backoff, at the rate
//! limiter, at a closed throttle gate, for a token, and mid-attempt.
//!
//! Afterwards nothing more reaches the server (checked after waiting longer
//! than the abandoned wait would have lasted), and nothing leaked: each
//! client has a concurrency limit of one slot with a short `max_wait`, so a
//! slot held by a dropped call would make the next call fail, and the next
//! call goes through promptly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod reliability;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use parapet::auth::{AuthLayer, TokenCache, TokenEndpoint};
use parapet::ratelimit::{ConcurrencyLimitLayer, Quota, RateLimitLayer};
use parapet::retry::BackoffJitter;
use parapet::{Client, ClientBuilder};
use parapet_testkit::{Arrival, Reply, Server};
use reliability::{ISSUED, Outcome, Via, capture, hand_built, policy_builder};
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

/// Longer than any wait these tests abandon (one second each).
const AFTERWARDS: Duration = Duration::from_millis(1600);
/// What "promptly" means for the call after a cancellation.
const PROMPTLY: Duration = Duration::from_millis(900);

/// The suite's client base for these tests: a 5 s deadline (the waits must
/// not run into it), and one concurrency slot that a later call may wait
/// for 300 ms at most.
fn base() -> ClientBuilder {
    Client::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
        .concurrency_limit(
            ConcurrencyLimitLayer::new(NonZeroUsize::MIN).max_wait(Duration::from_millis(300)),
        )
}

/// A retry policy whose backoff is one whole second, no jitter.
fn slow_backoff() -> parapet::retry::RetryPolicy {
    policy_builder(false)
        .base_delay(Duration::from_secs(1))
        .max_delay(Duration::from_secs(1))
        .jitter(BackoffJitter::None)
        .build()
        .unwrap()
}

/// Runs `call` until `cancel_when` completes, then drops it; panics if the
/// call finished first.
async fn cancel<F, C>(call: F, cancel_when: C)
where
    F: Future,
    F::Output: std::fmt::Debug,
    C: Future<Output = ()>,
{
    tokio::select! {
        out = call => panic!("the call ended before it was cancelled: {out:?}"),
        () = cancel_when => {}
    }
}

/// Waits until `server` has seen `n` requests and answered them all, then
/// a moment more for the answer to reach the client.
async fn answered(server: &Server, n: usize) {
    server.wait_for_arrivals(n).await;
    server.wait_idle().await;
    sleep(Duration::from_millis(100)).await;
}

/// Starts a GET of `url`, drops it 200 ms into its wait, then gives
/// anything it might still send time to arrive.
async fn abandon_while_waiting(client: &Client, url: &str) {
    cancel(client.get(url).send(), sleep(Duration::from_millis(200))).await;
    sleep(AFTERWARDS).await;
}

async fn later_call_is_normal(client: &Client, server: &Server, path: &str) {
    let start = Instant::now();
    let res = client.get(&server.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "fine");
    assert!(start.elapsed() < PROMPTLY, "{:?}", start.elapsed());
}

#[tokio::test]
async fn dropped_during_a_backoff() {
    let _logs = capture();
    let server = Server::start().await;
    server
        .on("/x")
        .replies([Reply::status(503), Reply::ok().body("fine")]);
    let client = base().retry(slow_backoff()).build().unwrap();

    cancel(client.get(&server.url("/x")).send(), answered(&server, 1)).await;
    sleep(AFTERWARDS).await;
    assert_eq!(server.hits("/x"), 1, "the abandoned retry was never sent");

    later_call_is_normal(&client, &server, "/x").await;
    assert_eq!(server.hits("/x"), 2);
}

#[tokio::test]
async fn dropped_during_a_backoff_in_a_hand_built_stack() {
    let _logs = capture();
    let server = Server::start().await;
    server
        .on("/x")
        .replies([Reply::status(503), Reply::ok().body("fine")]);
    let via = Via::Stack(hand_built(slow_backoff()));
    let url = server.url("/x");

    cancel(via.call(Method::GET, &url, "", None), answered(&server, 1)).await;
    sleep(AFTERWARDS).await;
    assert_eq!(server.hits("/x"), 1);

    let start = Instant::now();
    let out = via.call(Method::GET, &url, "", None).await;
    assert!(
        matches!(out, Outcome::Complete(200, ref b) if b == "fine"),
        "{out:?}"
    );
    assert!(start.elapsed() < PROMPTLY);
    assert_eq!(server.hits("/x"), 2);
}

#[tokio::test]
async fn dropped_while_waiting_at_the_rate_limiter() {
    let _logs = capture();
    let server = Server::start().await;
    server.on("/x").reply(Reply::ok().body("fine"));
    // One call a second, no burst: the second call waits about a second.
    let quota = Quota::per_second(NonZeroU32::MIN);
    let client = base()
        .rate_limit(RateLimitLayer::new(quota))
        .build()
        .unwrap();

    client.get(&server.url("/x")).send().await.unwrap();
    abandon_while_waiting(&client, &server.url("/x")).await;
    assert_eq!(server.hits("/x"), 1, "the abandoned call was never sent");

    later_call_is_normal(&client, &server, "/x").await;
    assert_eq!(server.hits("/x"), 2);
}

#[tokio::test]
async fn dropped_while_waiting_at_a_closed_throttle_gate() {
    let _logs = capture();
    let server = Server::start().await;
    server.on("/x").replies([
        Reply::status(429).header("retry-after", "1"),
        Reply::ok().body("fine"),
    ]);
    // No retries, so the 429 comes back and the gate stays closed for the
    // next call, which waits at it.
    let client = base().retry_off().build().unwrap();

    let res = client.get(&server.url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    abandon_while_waiting(&client, &server.url("/x")).await;
    assert_eq!(server.hits("/x"), 1, "the abandoned call was never sent");

    later_call_is_normal(&client, &server, "/x").await;
    assert_eq!(server.hits("/x"), 2);
}

#[tokio::test]
async fn dropped_while_waiting_for_a_token() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/me").reply(Reply::ok().body("fine"));
    let idp = Server::start().await;
    let n = Arc::new(AtomicUsize::new(0));
    idp.on("/token").handle(move |_a: &Arrival| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Reply::json(format!(
            r#"{{"access_token":"{ISSUED}-{i}","token_type":"Bearer","expires_in":3600}}"#
        ))
        .delay(Duration::from_secs(1))
    });
    let token_client = Client::builder().retry_off().build().unwrap();
    let endpoint =
        TokenEndpoint::new::<_, Full<Bytes>, _>(token_client, &idp.url("/token")).unwrap();
    let grant = parapet::auth::ClientCredentialsGrant::new(
        endpoint,
        "client-7",
        reliability::CLIENT_SECRET,
    )
    .unwrap();
    let client = base()
        .auth(AuthLayer::token_cache(TokenCache::new(grant)))
        .build()
        .unwrap();

    abandon_while_waiting(&client, &api.url("/me")).await;
    assert_eq!(api.requests(), 0, "the abandoned call was never sent");
    // The fetch itself was not abandoned: it runs for whoever needs the
    // token next (the cache's documented single-flight behaviour).
    assert_eq!(idp.requests(), 1);

    later_call_is_normal(&client, &api, "/me").await;
    assert_eq!(
        idp.requests(),
        1,
        "the later call used the token fetched meanwhile"
    );
    let seen = api.arrivals_for("/me");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {ISSUED}-0").as_str())
    );
}

#[tokio::test]
async fn dropped_mid_attempt_closes_the_connection() {
    let _logs = capture();
    let server = Server::start().await;
    server
        .on("/x")
        .replies([Reply::hang(), Reply::ok().body("fine")]);
    let client = base().build().unwrap();

    cancel(
        client.get(&server.url("/x")).send(),
        server.wait_for_arrivals(1).map_unit(),
    )
    .await;
    // The server sees the client go away: nothing stays in flight.
    tokio::time::timeout(Duration::from_secs(5), server.wait_idle())
        .await
        .expect("the dropped attempt's connection was closed");
    later_call_is_normal(&client, &server, "/x").await;
    let arrivals = server.arrivals_for("/x");
    assert_eq!(arrivals.len(), 2);
    assert_ne!(arrivals[0].connection, arrivals[1].connection);
}

#[tokio::test]
async fn dropped_tower_calls_release_their_slot_too() {
    let _logs = capture();
    // The same through the `tower::Service` interface of the client.
    let server = Server::start().await;
    server
        .on("/x")
        .replies([Reply::status(503), Reply::ok().body("fine")]);
    let client = base().retry(slow_backoff()).build().unwrap();
    let req = || {
        Request::get(server.url("/x"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };

    cancel(client.clone().oneshot(req()), answered(&server, 1)).await;
    sleep(AFTERWARDS).await;
    assert_eq!(server.hits("/x"), 1);

    let res = client.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "fine");
}

/// `Future<Output = T>` to `Future<Output = ()>`.
trait MapUnit: Future + Sized {
    async fn map_unit(self) {
        self.await;
    }
}

impl<F: Future> MapUnit for F {}
