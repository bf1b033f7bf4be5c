//! A new user's case: a small axum service whose handlers call an upstream
//! API through a `parapet::Client`, tested with wiremock as the upstream.
//!
//! Arrange the upstream's answers (sequences with `up_to_n_times`, a slow
//! answer with `set_delay`), act through the axum router, and assert from
//! wiremock's `received_requests` what the upstream saw. TESTING.md walks
//! through it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The service's state: one client for the upstream, cloned per request.
#[derive(Clone)]
struct App {
    orders: parapet::Client,
}

/// The service: `GET /orders/{id}` and `POST /orders`, each answered by the
/// upstream's `/v1/orders` API. Configuration mistakes come out as one
/// error type, `parapet::InvalidConfig`.
fn service(upstream: &str) -> Result<Router, parapet::InvalidConfig> {
    let orders = parapet::Client::builder()
        .base_url(format!("{upstream}/v1"))
        .attempt_timeout(Duration::from_millis(300))
        .deadline(Duration::from_secs(5))
        .build()?;
    Ok(Router::new()
        .route("/orders/{id}", get(get_order))
        .route("/orders", post(create_order))
        .with_state(App { orders }))
}

async fn get_order(State(app): State<App>, Path(id): Path<u32>) -> (StatusCode, String) {
    relay(app.orders.get(&format!("orders/{id}")).send().await).await
}

async fn create_order(State(app): State<App>, body: String) -> (StatusCode, String) {
    let sent = app
        .orders
        .post("orders")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    relay(sent).await
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
async fn call(app: &Router, method: Method, uri: &str, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn a_retried_get_keeps_one_request_id_and_a_post_arrives_once() {
    // Arrange: the upstream fails twice, then answers; its POST always fails.
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/orders/7"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/orders/7"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"id":7}"#))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/orders"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = service(&upstream.uri()).unwrap();

    // Act.
    let got = call(&app, Method::GET, "/orders/7", "").await;
    let posted = call(&app, Method::POST, "/orders", r#"{"total":"12.50"}"#).await;

    // Assert, from the upstream's side.
    assert_eq!(got, (StatusCode::OK, r#"{"id":7}"#.to_owned()));
    assert_eq!(posted.0, StatusCode::SERVICE_UNAVAILABLE);
    let received = upstream.received_requests().await.unwrap();
    let gets: Vec<_> = received.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 3);
    let id = gets[0].headers.get("x-request-id").expect("a request id");
    assert!(
        gets.iter()
            .all(|r| r.headers.get("x-request-id") == Some(id))
    );
    let posts: Vec<_> = received.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "a POST is never sent twice by itself");
    assert_eq!(posts[0].body, br#"{"total":"12.50"}"#);
    assert_ne!(posts[0].headers.get("x-request-id"), Some(id));
    // Dropping `upstream` checks every `expect`.
}

#[tokio::test]
async fn a_slow_first_answer_times_out_and_the_retry_gets_through() {
    let upstream = MockServer::start().await;
    // Slower than the 300 ms attempt timeout, once.
    Mock::given(method("GET"))
        .and(path("/v1/orders/8"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("late")
                .set_delay(Duration::from_secs(2)),
        )
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/orders/8"))
        .respond_with(ResponseTemplate::new(200).set_body_string("on time"))
        .mount(&upstream)
        .await;
    let app = service(&upstream.uri()).unwrap();

    let got = call(&app, Method::GET, "/orders/8", "").await;

    assert_eq!(got, (StatusCode::OK, "on time".to_owned()));
    let received = upstream.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].headers.get("x-request-id"),
        received[1].headers.get("x-request-id")
    );
}
