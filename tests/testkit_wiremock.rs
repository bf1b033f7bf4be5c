//! The testkit's wiremock helpers as the upstream of an axum service, and
//! its chaos layer under a `parapet::Client`.
//!
//! Each test arranges the upstream with `parapet_testkit::wiremock`
//! (`FailTimes`, the "wait" answers, the mock OAuth 2.0 `TokenIssuer`),
//! acts through the axum router in process, and asserts from the
//! upstream's side with the kit's assertions. wiremock runs on real
//! sockets, so these run on real time with short waits (one or two
//! seconds where the server says "wait"); the chaos tests use an
//! in-process upstream and paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use parapet::auth::{AuthLayer, ClientCredentialsGrant, RefreshTokenGrant, TokenCache};
use parapet::core::{BoxError, ReplayBody};
use parapet_testkit::chaos::{ChaosError, ChaosLayer, Rate};
use parapet_testkit::wiremock::{
    ArrivalTimes, FailTimes, TokenIssuer, assert_arrived_once, assert_key_arrived_once,
    assert_one_request_id, ratelimit, retry_after, retry_after_date, x_ratelimit,
};
use tower::{Layer, ServiceExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The service's state: one client for the upstream's API.
#[derive(Clone)]
struct App {
    api: parapet::Client,
}

/// The service under test: `GET /orders/{id}`, `POST /orders` (no
/// idempotency key), `POST /payments` (with one) and `GET /me`, each
/// answered by the upstream's `/v1` API through `api`.
fn service(api: parapet::Client) -> Router {
    Router::new()
        .route("/orders/{id}", get(get_order))
        .route("/orders", post(create_order))
        .route("/payments", post(pay))
        .route("/me", get(me))
        .with_state(App { api })
}

/// A client of the upstream's `/v1` API, quick to give up.
fn builder(upstream: &MockServer) -> parapet::ClientBuilder {
    parapet::Client::builder()
        .base_url(format!("{}/v1", upstream.uri()))
        .attempt_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(10))
}

async fn get_order(State(app): State<App>, Path(id): Path<u32>) -> (StatusCode, String) {
    relay(app.api.get(&format!("orders/{id}")).send().await).await
}

async fn create_order(State(app): State<App>, body: String) -> (StatusCode, String) {
    relay(app.api.post("orders").body(body).send().await).await
}

async fn pay(State(app): State<App>, body: String) -> (StatusCode, String) {
    relay(
        app.api
            .post("payments")
            .idempotency_key()
            .body(body)
            .send()
            .await,
    )
    .await
}

async fn me(State(app): State<App>) -> (StatusCode, String) {
    relay(app.api.get("me").send().await).await
}

/// The upstream's answer passed on, or 502 when there was none.
async fn relay(sent: Result<parapet::Response, parapet::Error>) -> (StatusCode, String) {
    match sent {
        Ok(resp) => {
            let status = resp.status();
            match resp.text().await {
                Ok(text) => (status, text),
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
            }
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// One request through the router, in process.
async fn call(app: &Router, method: Method, uri: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from("{}"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn a_get_failing_twice_is_retried_under_one_request_id() {
    let upstream = MockServer::start().await;
    let flaky = FailTimes::new(
        2,
        ResponseTemplate::new(503),
        ResponseTemplate::new(200).set_body_string(r#"{"id":7}"#),
    );
    Mock::given(method("GET"))
        .and(path("/v1/orders/7"))
        .respond_with(flaky.clone())
        .mount(&upstream)
        .await;
    let app = service(builder(&upstream).build().unwrap());

    let got = call(&app, Method::GET, "/orders/7").await;

    assert_eq!(got, (StatusCode::OK, r#"{"id":7}"#.to_owned()));
    assert_eq!(flaky.requests(), 3);
    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    assert_one_request_id(&received);
}

#[tokio::test]
async fn a_post_arrives_once_and_a_keyed_post_is_retried_under_its_key() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/orders"))
        .respond_with(FailTimes::new(
            1,
            ResponseTemplate::new(503),
            ResponseTemplate::new(201),
        ))
        .mount(&upstream)
        .await;
    let payments = FailTimes::new(1, ResponseTemplate::new(503), ResponseTemplate::new(201));
    Mock::given(method("POST"))
        .and(path("/v1/payments"))
        .respond_with(payments.clone())
        .mount(&upstream)
        .await;
    let app = service(builder(&upstream).build().unwrap());

    let order = call(&app, Method::POST, "/orders").await;
    let first_payment = call(&app, Method::POST, "/payments").await;
    let second_payment = call(&app, Method::POST, "/payments").await;

    // Without a key, the 503 comes back: the POST was sent once.
    assert_eq!(order.0, StatusCode::SERVICE_UNAVAILABLE);
    let received = upstream.received_requests().await.unwrap();
    assert_arrived_once(&received, "POST", "/v1/orders");
    // With one, the 503 was retried under the same key, and the next
    // payment (a new key) arrived once.
    assert_eq!(first_payment.0, StatusCode::CREATED);
    assert_eq!(second_payment.0, StatusCode::CREATED);
    assert_eq!(payments.requests(), 3);
    let keys: Vec<_> = received
        .iter()
        .filter(|r| r.url.path() == "/v1/payments")
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
    assert_key_arrived_once(&received, &keys[2]);
    assert_one_request_id(
        received
            .iter()
            .filter(|r| r.url.path() == "/v1/payments")
            .take(2),
    );
}

/// Mounts "answer `first` once, then 200" at `GET /v1/orders/1`, timed.
async fn once_then_ok(upstream: &MockServer, first: ResponseTemplate) -> ArrivalTimes {
    let times = ArrivalTimes::new();
    Mock::given(method("GET"))
        .and(path("/v1/orders/1"))
        .respond_with(times.record(FailTimes::new(1, first, ResponseTemplate::new(200))))
        .mount(upstream)
        .await;
    times
}

#[tokio::test]
async fn retry_after_in_seconds_spaces_the_retry() {
    let upstream = MockServer::start().await;
    let times = once_then_ok(&upstream, retry_after(429, Duration::from_secs(1))).await;
    let app = service(builder(&upstream).build().unwrap());

    let got = call(&app, Method::GET, "/orders/1").await;

    assert_eq!(got.0, StatusCode::OK);
    assert_eq!(times.len(), 2);
    times.assert_spaced_at_least(Duration::from_secs(1));
    assert_one_request_id(&upstream.received_requests().await.unwrap());
}

#[tokio::test]
async fn retry_after_as_a_date_spaces_the_retry() {
    let upstream = MockServer::start().await;
    // Truncated to the second: between one and two seconds from now.
    let at = SystemTime::now() + Duration::from_secs(2);
    let times = once_then_ok(&upstream, retry_after_date(503, at)).await;
    let app = service(builder(&upstream).build().unwrap());

    let got = call(&app, Method::GET, "/orders/1").await;

    assert_eq!(got.0, StatusCode::OK);
    assert_eq!(times.len(), 2);
    times.assert_spaced_at_least(Duration::from_millis(900));
}

/// Mounts `first` at `GET /v1/orders/1` and 200 at `GET /v1/orders/2`, both
/// timed in one log.
async fn spent_then_other(upstream: &MockServer, first: ResponseTemplate) -> ArrivalTimes {
    let times = ArrivalTimes::new();
    Mock::given(method("GET"))
        .and(path("/v1/orders/1"))
        .respond_with(times.record(first))
        .mount(upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/orders/2"))
        .respond_with(times.record(ResponseTemplate::new(200)))
        .mount(upstream)
        .await;
    times
}

#[tokio::test]
async fn an_exhausted_x_ratelimit_holds_the_next_call_until_the_reset() {
    let upstream = MockServer::start().await;
    let times = spent_then_other(&upstream, x_ratelimit(200, 60, 0, Duration::from_secs(1))).await;
    let app = service(builder(&upstream).build().unwrap());

    let first = call(&app, Method::GET, "/orders/1").await;
    let second = call(&app, Method::GET, "/orders/2").await;

    assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(times.len(), 2);
    times.assert_spaced_at_least(Duration::from_secs(1));
}

#[tokio::test]
async fn an_exhausted_ietf_ratelimit_holds_the_next_call_until_the_reset() {
    let upstream = MockServer::start().await;
    let times = spent_then_other(&upstream, ratelimit(200, 100, 0, Duration::from_secs(1))).await;
    let app = service(builder(&upstream).build().unwrap());

    let first = call(&app, Method::GET, "/orders/1").await;
    let second = call(&app, Method::GET, "/orders/2").await;

    assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(times.len(), 2);
    times.assert_spaced_at_least(Duration::from_secs(1));
}

/// Mounts `issuer` at `POST /oauth/token` and `GET /v1/me` behind it.
async fn mount_oauth(upstream: &MockServer, issuer: &TokenIssuer) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(issuer.clone())
        .mount(upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/me"))
        .respond_with(issuer.require_bearer(ResponseTemplate::new(200).set_body_string("ada")))
        .mount(upstream)
        .await;
}

/// The `/v1/me` requests the upstream received.
async fn me_requests(upstream: &MockServer) -> Vec<wiremock::Request> {
    let mut received = upstream.received_requests().await.unwrap();
    received.retain(|r| r.url.path() == "/v1/me");
    received
}

#[tokio::test]
async fn a_client_credentials_token_is_fetched_once_and_replaced_after_a_revocation() {
    let upstream = MockServer::start().await;
    let issuer = TokenIssuer::new();
    mount_oauth(&upstream, &issuer).await;
    let plain = parapet::Client::builder()
        .base_url(upstream.uri())
        .build()
        .unwrap();
    let grant = ClientCredentialsGrant::new(
        plain.token_endpoint("/oauth/token").unwrap(),
        "app",
        "s3cret",
    )
    .unwrap();
    let api = builder(&upstream)
        .auth(AuthLayer::token_cache(TokenCache::new(grant)))
        .build()
        .unwrap();
    let app = service(api);

    // Two calls, one token.
    assert_eq!(
        call(&app, Method::GET, "/me").await,
        (StatusCode::OK, "ada".to_owned())
    );
    assert_eq!(call(&app, Method::GET, "/me").await.0, StatusCode::OK);
    assert_eq!(issuer.fetches(), 1);
    let first = issuer.last_access_token().unwrap();

    // Revoked: the API answers 401, the client fetches a new token and
    // sends the call once more.
    assert!(issuer.revoke(&first));
    assert_eq!(call(&app, Method::GET, "/me").await.0, StatusCode::OK);

    assert_eq!(issuer.fetches(), 2);
    assert_eq!(issuer.client_credentials_grants(), 2);
    let second = issuer.last_access_token().unwrap();
    let me = me_requests(&upstream).await;
    let bearers: Vec<_> = me
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        bearers,
        [&first, &first, &first, &second].map(|t| format!("Bearer {t}"))
    );
    assert_one_request_id(&me[2..]);
}

#[tokio::test]
async fn a_refresh_token_grant_rotates_its_refresh_token_at_the_issuer() {
    let upstream = MockServer::start().await;
    let issuer = TokenIssuer::new();
    mount_oauth(&upstream, &issuer).await;
    let plain = parapet::Client::builder()
        .base_url(upstream.uri())
        .build()
        .unwrap();
    let grant = RefreshTokenGrant::new(
        plain.token_endpoint("/oauth/token").unwrap(),
        issuer.login(),
    )
    .unwrap()
    .client_id("app")
    .unwrap();
    let api = builder(&upstream)
        .auth(AuthLayer::token_cache(TokenCache::new(grant)))
        .build()
        .unwrap();
    let app = service(api);

    assert_eq!(call(&app, Method::GET, "/me").await.0, StatusCode::OK);
    assert_eq!(issuer.refresh_grants(), 1);
    issuer.revoke(&issuer.last_access_token().unwrap());
    assert_eq!(call(&app, Method::GET, "/me").await.0, StatusCode::OK);

    // The second refresh spent the refresh token the first one issued.
    assert_eq!(issuer.refresh_grants(), 2);
    assert_eq!(issuer.fetches(), 2);
    let received = upstream.received_requests().await.unwrap();
    let refresh_bodies: Vec<_> = received
        .iter()
        .filter(|r| r.url.path() == "/oauth/token")
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    assert!(
        refresh_bodies[0].contains("refresh_token=refresh-1"),
        "{refresh_bodies:?}"
    );
    assert!(
        refresh_bodies[1].contains("refresh_token=refresh-2"),
        "{refresh_bodies:?}"
    );
}

#[tokio::test]
async fn an_expired_token_is_fetched_again() {
    let upstream = MockServer::start().await;
    let issuer = TokenIssuer::new().expires_in(Duration::from_secs(1));
    mount_oauth(&upstream, &issuer).await;
    let plain = parapet::Client::builder()
        .base_url(upstream.uri())
        .build()
        .unwrap();
    let grant = ClientCredentialsGrant::new(
        plain.token_endpoint("/oauth/token").unwrap(),
        "app",
        "s3cret",
    )
    .unwrap();
    let cache = TokenCache::builder(grant)
        .refresh_margin(Duration::ZERO)
        .build();
    let app = service(
        builder(&upstream)
            .auth(AuthLayer::token_cache(cache))
            .build()
            .unwrap(),
    );

    assert_eq!(call(&app, Method::GET, "/me").await.0, StatusCode::OK);
    let first = issuer.last_access_token().unwrap();
    // The token's lifetime is what this test is about: let it pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!issuer.is_live(&first));
    assert_eq!(call(&app, Method::GET, "/me").await.0, StatusCode::OK);

    assert_eq!(issuer.fetches(), 2);
    assert_ne!(issuer.last_access_token().unwrap(), first);
    // No request went out with the expired token.
    assert!(me_requests(&upstream).await.len() == 2);
}

/// An in-process upstream that answers 200 "ok".
fn in_process() -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from("ok"))))
    })
}

#[tokio::test(start_paused = true)]
async fn chaos_statuses_are_retried_like_the_upstreams_own() {
    let chaos = ChaosLayer::new()
        .seed(1)
        .status(Rate::ALWAYS, StatusCode::SERVICE_UNAVAILABLE);
    let client = parapet::Client::builder()
        .base_url("http://in-process.test")
        .build_with(chaos.layer(in_process()))
        .unwrap();

    let resp = client.get("orders").send().await.unwrap();

    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_chaos_error_reaches_the_caller_as_the_source_of_the_error() {
    let chaos = ChaosLayer::new().seed(1).error(Rate::ALWAYS);
    let client = parapet::Client::builder()
        .base_url("http://in-process.test")
        .retry_off()
        .build_with(chaos.layer(in_process()))
        .unwrap();

    let err = client.get("orders").send().await.unwrap_err();

    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut found = false;
    while let Some(e) = source {
        found |= e.is::<ChaosError>();
        source = e.source();
    }
    assert!(found, "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn chaos_latency_past_the_attempt_timeout_times_the_attempt_out() {
    let chaos = ChaosLayer::new().latency(Rate::ALWAYS, Duration::from_secs(5));
    let client = parapet::Client::builder()
        .base_url("http://in-process.test")
        .attempt_timeout(Duration::from_secs(1))
        .retry_off()
        .build_with(chaos.layer(in_process()))
        .unwrap();

    let started = tokio::time::Instant::now();
    let err = client.get("orders").send().await.unwrap_err();

    assert!(err.is_timeout());
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_seeded_chaos_rate_fails_the_same_calls_every_run() {
    async fn failures(seed: u64) -> Vec<bool> {
        let chaos = ChaosLayer::new().seed(seed).error(Rate::percent(30));
        let client = parapet::Client::builder()
            .base_url("http://in-process.test")
            .retry_off()
            .build_with(chaos.layer(in_process()))
            .unwrap();
        let mut failed = Vec::new();
        for _ in 0..500 {
            failed.push(client.get("orders").send().await.is_err());
        }
        failed
    }

    let run = failures(5).await;
    let n = run.iter().filter(|f| **f).count();
    // 30 % of 500 is 150; within about four standard deviations.
    assert!((110..190).contains(&n), "{n}");
    assert_eq!(failures(5).await, run);
}
