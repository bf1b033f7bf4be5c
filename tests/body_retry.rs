//! A response whose body breaks after the headers (a reset halfway, an end
//! before its `Content-Length`): re-sent for an idempotent request when the
//! body is read whole, never for a POST or a streaming read. Checked from
//! the server's side: how many requests arrived, with which request id.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::error::Error as _;
use std::time::Duration;

use futures_util::StreamExt;
use parapet::{Client, ClientBuilder};
use parapet_testkit::{Reply, Server};

const DOC: &str = r#"{"items":[1,2,3,4,5,6,7,8,9,10],"next":null}"#;

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
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
}

/// A 200 announcing all of `DOC` that sends its first 10 bytes and resets.
fn reset_halfway() -> Reply {
    Reply::reset_after_headers()
        .header("content-type", "application/json")
        .body(DOC)
        .truncate_body(10)
}

/// A 200 announcing all of `DOC` that sends its first 10 bytes and closes
/// (an end before the `Content-Length`).
fn short_body() -> Reply {
    Reply::json(DOC).truncate_body(10)
}

/// Whether `e`'s chain holds an error of type `T`.
fn chain_has<T: std::error::Error + 'static>(e: &parapet::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<T>() {
            return true;
        }
        cur = c.source();
    }
    false
}

#[tokio::test]
async fn a_get_whose_body_resets_halfway_is_read_whole_from_the_second_attempt() {
    let server = Server::start().await;
    server
        .on("/doc")
        .replies([reset_halfway(), Reply::json(DOC)]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/doc").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), DOC.as_bytes());

    let arrivals = server.arrivals_for("/doc");
    assert_eq!(arrivals.len(), 2);
    let id = arrivals[0].header("x-request-id").unwrap();
    assert_eq!(arrivals[1].header("x-request-id"), Some(id));
}

#[tokio::test]
async fn a_get_whose_body_ends_short_decodes_from_the_second_attempt() {
    let server = Server::start().await;
    server.on("/doc").replies([short_body(), Reply::json(DOC)]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/doc").send().await.unwrap();
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["items"][9], 10);

    let arrivals = server.arrivals_for("/doc");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(
        arrivals[0].header("x-request-id"),
        arrivals[1].header("x-request-id")
    );
}

#[tokio::test]
async fn a_post_without_a_key_whose_body_breaks_arrives_once_and_fails_with_a_body_error() {
    let server = Server::start().await;
    server
        .on("/charges")
        .replies([reset_halfway(), Reply::json(DOC)]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.post("/charges").body("{}").send().await.unwrap();
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_body(), "{err:?}");
    assert!(!chain_has::<parapet::retry::BodyRestart>(&err), "{err:?}");
    assert_eq!(server.hits("/charges"), 1);
}

#[tokio::test]
async fn a_body_that_breaks_on_every_attempt_fails_after_the_last_one() {
    let server = Server::start().await;
    server.on("/doc").reply(reset_halfway());
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/doc").send().await.unwrap();
    let err = resp.text().await.unwrap_err();
    assert!(err.is_body(), "{err:?}");
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(server.hits("/doc"), 3);
}

#[tokio::test]
async fn a_streaming_read_of_a_broken_body_fails_and_sends_nothing_more() {
    let server = Server::start().await;
    server
        .on("/doc")
        .replies([reset_halfway(), Reply::json(DOC)]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/doc").send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut read = Vec::new();
    let mut errors = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => read.extend_from_slice(&chunk),
            // A reader that goes on after an error gets the end.
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(errors.len(), 1);
    assert!(errors[0].is_body(), "{:?}", errors[0]);
    assert_eq!(read, DOC.as_bytes()[..10]);
    drop(stream);
    assert_eq!(server.hits("/doc"), 1);
}

#[tokio::test]
async fn an_error_status_whose_body_breaks_keeps_the_second_body_as_its_snippet() {
    let server = Server::start().await;
    server.on("/gone").replies([
        Reply::reset_after_headers()
            .with_status(404)
            .body("no such document")
            .truncate_body(3),
        Reply::status(404).body("no such document"),
    ]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/gone").send().await.unwrap();
    let err = resp.error_for_status().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(err.body_snippet(), Some(&b"no such document"[..]));
    assert_eq!(server.hits("/gone"), 2);
}

#[tokio::test]
async fn a_restart_answered_with_another_status_is_a_body_error() {
    let server = Server::start().await;
    server
        .on("/doc")
        .replies([reset_halfway(), Reply::status(404).body("gone")]);
    let client = fast().base_url(server.url("/")).build().unwrap();

    let resp = client.get("/doc").send().await.unwrap();
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_body(), "{err:?}");
    assert!(
        chain_has::<parapet::retry::BodyRestartFailed>(&err),
        "{err:?}"
    );
    assert!(err.source().is_some());
    assert_eq!(server.hits("/doc"), 2);
}
