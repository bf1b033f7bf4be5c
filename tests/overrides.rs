//! Per-request overrides (issue 16): attempt timeout, max attempts, body
//! limit, `bearer_auth` / `basic_auth`, through the convenience API and
//! through the client used as a `tower::Service`; checked from the
//! server's side (arrivals, the headers they carried).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use parapet::auth::AuthLayer;
use parapet::{BodyLimit, Client, ClientBuilder};
use parapet_testkit::{Reply, Server};
use tower::ServiceExt as _;

fn fast() -> ClientBuilder {
    Client::builder()
        .retry(
            parapet::retry::RetryPolicy::builder()
                .max_attempts(3)
                .base_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(20))
                .classify(parapet::retry_classifier)
                .build()
                .unwrap(),
        )
        .throttle(None)
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn a_request_s_max_attempts_replaces_the_client_s_both_ways() {
    let server = Server::start().await;
    server.on("/down").reply(Reply::status(503));
    let client = fast().build().unwrap();

    let resp = client
        .get(&server.url("/down"))
        .max_attempts(5)
        .send()
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), resp.attempts()), (503, 5));
    assert_eq!(server.hits("/down"), 5);

    server.clear_arrivals();
    let resp = client
        .get(&server.url("/down"))
        .max_attempts(1)
        .send()
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), resp.attempts()), (503, 1));
    assert_eq!(server.hits("/down"), 1);

    // It does not make a POST retryable.
    server.clear_arrivals();
    let resp = client
        .post(&server.url("/down"))
        .max_attempts(5)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(server.hits("/down"), 1);
}

#[tokio::test]
async fn a_request_s_attempt_timeout_bounds_each_of_its_attempts() {
    let server = Server::start().await;
    server
        .on("/slow")
        .reply(Reply::ok().delay(Duration::from_secs(3)));
    let client = fast().build().unwrap();
    let err = client
        .get(&server.url("/slow"))
        .attempt_timeout(Duration::from_millis(100))
        .max_attempts(2)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // Each attempt was cut at its own limit and retried: two arrived.
    assert_eq!(server.wait_for_arrivals(2).await.len(), 2);
}

#[tokio::test]
async fn a_request_s_body_limit_bounds_its_readers() {
    let server = Server::start().await;
    server.on("/body").reply(Reply::ok().body(vec![b'x'; 200]));
    let client = fast().build().unwrap();

    let resp = client
        .get(&server.url("/body"))
        .body_limit(100)
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.unwrap_err().is_body());
    let resp = client
        .get(&server.url("/body"))
        .body_limit(100)
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap_err().is_body());
    let resp = client
        .get(&server.url("/body"))
        .body_limit(200)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), 200);
}

#[tokio::test]
async fn the_client_as_a_service_honours_the_same_extensions() {
    let server = Server::start().await;
    server.on("/down").reply(Reply::status(503));
    server.on("/body").reply(Reply::ok().body(vec![b'x'; 200]));
    let client = fast().build().unwrap();

    let mut req = http::Request::get(server.url("/down"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut().insert(parapet::retry::MaxAttempts(4));
    let resp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(server.hits("/down"), 4);

    let mut req = http::Request::get(server.url("/body"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut().insert(BodyLimit(100));
    let resp = client.clone().oneshot(req).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());

    let mut req = http::Request::get(server.url("/body"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(parapet::timeout::AttemptLimit(Duration::from_secs(1)));
    let resp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        200
    );
}

#[tokio::test]
async fn per_request_credentials_are_sent_in_place_of_the_client_s_and_never_shown() {
    let server = Server::start().await;
    server.on("/me").reply(Reply::ok());
    let client = fast()
        .auth(AuthLayer::bearer("client-wide-SECRET").unwrap())
        .build()
        .unwrap();

    let builder = client
        .get(&server.url("/me"))
        .bearer_auth("per-request-SECRET");
    assert!(!format!("{builder:?}").contains("SECRET"));
    builder.send().await.unwrap();
    client
        .get(&server.url("/me"))
        .basic_auth("aladdin", Some("open sesame"))
        .send()
        .await
        .unwrap();
    client
        .get(&server.url("/me"))
        .basic_auth("only-user", None::<&str>)
        .send()
        .await
        .unwrap();
    client.get(&server.url("/me")).send().await.unwrap();

    let seen: Vec<_> = server
        .arrivals_for("/me")
        .iter()
        .map(|a| a.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        seen,
        [
            "Bearer per-request-SECRET",
            "Basic YWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "Basic b25seS11c2VyOg==",
            "Bearer client-wide-SECRET",
        ]
    );
}

#[tokio::test]
async fn credentials_that_cannot_be_a_header_are_a_request_error_that_does_not_repeat_them() {
    let client = fast().build().unwrap();
    let err = client
        .get("http://127.0.0.1:9/")
        .bearer_auth("bad\nSECRET")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request());
    assert!(!format!("{err} {err:?}").contains("SECRET"));
}
