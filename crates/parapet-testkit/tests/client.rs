//! Every scripted reply and fault, seen through a real HTTP client
//! (hyper-util's legacy client), and what the server recorded meanwhile.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_testkit::{Reply, Server, body_hash};
use tokio::time::Instant;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response whose body was read to its end (or failed on the way).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, hyper::Error>,
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: &'static str,
) -> Result<Answer, hyper_util::client::legacy::Error> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes);
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn get(client: &HttpClient, url: &str) -> Result<Answer, hyper_util::client::legacy::Error> {
    send(client, Method::GET, url, "").await
}

#[tokio::test]
async fn replies_follow_the_request_number_and_the_last_repeats() {
    let server = Server::start().await;
    server.on("/x").replies([
        Reply::status(503),
        Reply::status(502),
        Reply::ok().body("fine"),
    ]);
    let client = client();

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            get(&client, &server.url("/x"))
                .await
                .unwrap()
                .status
                .as_u16(),
        );
    }

    assert_eq!(statuses, [503, 502, 200, 200, 200]);
    assert_eq!(server.hits("/x"), 5);
}

#[tokio::test]
async fn fail_times_then_succeeds() {
    let server = Server::start().await;
    server
        .on("/flaky")
        .fail_times(2, Reply::status(503).header("retry-after", "0"))
        .then(Reply::json(r#"{"ok":true}"#));
    let client = client();

    let first = get(&client, &server.url("/flaky")).await.unwrap();
    let second = get(&client, &server.url("/flaky")).await.unwrap();
    let third = get(&client, &server.url("/flaky")).await.unwrap();

    assert_eq!(first.status, 503);
    assert_eq!(first.headers["retry-after"], "0");
    assert_eq!(second.status, 503);
    assert_eq!(third.status, 200);
    assert_eq!(third.headers["content-type"], "application/json");
    assert_eq!(third.body.unwrap(), r#"{"ok":true}"#);
}

#[tokio::test]
async fn unmatched_paths_get_404_and_the_query_does_not_matter_for_matching() {
    let server = Server::start().await;
    server.on("/items").reply(Reply::ok().body("items"));
    let client = client();

    let with_query = get(&client, &server.url("/items?page=2&per=10"))
        .await
        .unwrap();
    let other = get(&client, &server.url("/items/1")).await.unwrap();

    assert_eq!(with_query.status, 200);
    assert_eq!(with_query.body.unwrap(), "items");
    assert_eq!(other.status, 404);
    let seen = server.arrivals();
    assert_eq!(seen[0].path, "/items");
    assert_eq!(seen[0].query.as_deref(), Some("page=2&per=10"));
    assert_eq!(seen[1].path, "/items/1");
    assert_eq!(seen[1].query, None);
}

#[tokio::test]
async fn a_handler_decides_from_headers_and_body() {
    let server = Server::start().await;
    server.on("/private").handle(|arrival| {
        match (
            arrival.header("authorization"),
            arrival.body_text().as_str(),
        ) {
            (Some("Bearer good"), "ping") => Reply::ok().body("pong"),
            (Some("Bearer good"), _) => Reply::status(400),
            _ => Reply::status(401).header("www-authenticate", r#"Bearer error="invalid_token""#),
        }
    });
    let client = client();
    let call = |token: &'static str, body: &'static str| {
        let req = Request::post(server.url("/private"))
            .header("authorization", token)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        client.request(req)
    };

    let good = call("Bearer good", "ping").await.unwrap();
    let bad_body = call("Bearer good", "pong").await.unwrap();
    let bad_token = call("Bearer stale", "ping").await.unwrap();

    assert_eq!(good.status(), 200);
    assert_eq!(good.into_body().collect().await.unwrap().to_bytes(), "pong");
    assert_eq!(bad_body.status(), 400);
    assert_eq!(bad_token.status(), 401);
    assert!(bad_token.headers().contains_key("www-authenticate"));
    // The recorded credentials are readable, but never printed.
    let seen = server.arrivals_for("/private");
    assert_eq!(seen[2].header("authorization"), Some("Bearer stale"));
    assert!(!format!("{seen:?}").contains("stale"));
}

#[tokio::test]
async fn keep_alive_serves_sequential_requests_on_one_connection() {
    let server = Server::start().await;
    server.on("/k").reply(Reply::ok().body("k"));
    let client = client();

    for _ in 0..4 {
        let answer = get(&client, &server.url("/k")).await.unwrap();
        assert_eq!(answer.body.unwrap(), "k");
    }

    assert_eq!(server.connections(), 1);
    assert!(server.arrivals().iter().all(|a| a.connection == 1));
}

#[tokio::test]
async fn then_close_forces_a_new_connection_for_the_next_request() {
    let server = Server::start().await;
    server.on("/c").reply(Reply::ok().body("bye").then_close());
    let client = client();

    let first = get(&client, &server.url("/c")).await.unwrap();
    let second = get(&client, &server.url("/c")).await.unwrap();
    let third = get(&client, &server.url("/c")).await.unwrap();

    assert_eq!(first.headers["connection"], "close");
    assert_eq!(first.body.unwrap(), "bye");
    assert_eq!(second.body.unwrap(), "bye");
    assert_eq!(third.body.unwrap(), "bye");
    let ids: Vec<u64> = server.arrivals().iter().map(|a| a.connection).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn delay_holds_back_the_headers() {
    let server = Server::start().await;
    let wait = Duration::from_millis(60);
    server
        .on("/slow")
        .reply(Reply::ok().body("late").delay(wait));
    let client = client();

    let started = Instant::now();
    let answer = get(&client, &server.url("/slow")).await.unwrap();
    let took = started.elapsed();

    assert_eq!(answer.body.unwrap(), "late");
    assert!(
        took >= wait,
        "answered after {took:?}, before the {wait:?} delay"
    );
    assert!(took < wait + Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn drip_sends_the_body_over_time_and_it_arrives_whole() {
    let server = Server::start().await;
    let every = Duration::from_millis(25);
    let body: Vec<u8> = (0..=255u8).collect();
    server
        .on("/drip")
        .reply(Reply::ok().body(body.clone()).drip(64, every));
    let client = client();

    let started = Instant::now();
    let answer = get(&client, &server.url("/drip")).await.unwrap();
    let took = started.elapsed();

    assert_eq!(answer.headers["content-length"], "256");
    assert_eq!(answer.body.unwrap(), body);
    // Four chunks, each after one interval.
    assert!(took >= every * 4, "whole body after {took:?}");
}

#[tokio::test]
async fn reset_after_headers_gives_the_client_a_body_error() {
    let server = Server::start().await;
    server
        .on("/rst")
        .reply(Reply::reset_after_headers().with_status(200));
    let client = client();

    let answer = get(&client, &server.url("/rst")).await.unwrap();

    assert_eq!(answer.status, 200, "the head arrives");
    assert!(
        answer.body.is_err(),
        "the body must fail, got {:?}",
        answer.body
    );
    assert_eq!(server.hits("/rst"), 1);
}

#[tokio::test]
async fn truncated_body_is_an_error_not_a_short_success() {
    let server = Server::start().await;
    server
        .on("/short")
        .reply(Reply::ok().body(vec![b'x'; 1000]).truncate_body(10));
    let client = client();

    let answer = get(&client, &server.url("/short")).await.unwrap();

    assert_eq!(answer.headers["content-length"], "1000");
    assert!(answer.body.is_err(), "got {:?}", answer.body);
}

#[tokio::test]
async fn close_without_answer_is_a_request_error_after_the_request_arrived() {
    let server = Server::start().await;
    server.on("/gone").reply(Reply::close());
    let client = client();

    let result = send(&client, Method::POST, &server.url("/gone"), "payload").await;

    assert!(result.is_err(), "a closed connection is not an answer");
    let seen = server.arrivals_for("/gone");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "payload", "the whole request was read first");
}

#[tokio::test]
async fn reset_before_reading_is_a_request_error_and_records_an_empty_body() {
    let server = Server::start().await;
    server.on("/nope").reply(Reply::reset());
    let client = client();

    let result = send(&client, Method::POST, &server.url("/nope"), "never read").await;

    assert!(result.is_err());
    let seen = server.arrivals_for("/nope");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].body_len, 0);
    assert_eq!(seen[0].body_hash, body_hash(b""));
    assert_eq!(seen[0].header("content-length"), Some("10"));
}

#[tokio::test]
async fn a_malformed_status_code_is_a_client_error() {
    let server = Server::start().await;
    server.on("/weird").reply(Reply::status(1000));
    let client = client();

    assert!(get(&client, &server.url("/weird")).await.is_err());
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let server = Server::start().await;
    server.on("/hang").reply(Reply::hang());
    let client = client();

    let gave_up = tokio::time::timeout(
        Duration::from_millis(80),
        get(&client, &server.url("/hang")),
    )
    .await;

    assert!(gave_up.is_err(), "no answer may come");
    assert_eq!(server.hits("/hang"), 1);
    // The abandoned request ends once hyper closes the connection.
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), server.wait_idle())
        .await
        .expect("the server notices the client has gone");
}

#[tokio::test]
async fn max_in_flight_counts_concurrent_slow_requests() {
    let server = Server::start().await;
    server
        .on("/slow")
        .reply(Reply::ok().delay(Duration::from_millis(300)));
    let client = client();

    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let url = server.url("/slow");
            tokio::spawn(async move { get(&client, &url).await.map(|a| a.status) })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }

    assert_eq!(server.max_in_flight(), 4);
    assert_eq!(server.in_flight(), 0);
    assert_eq!(
        server.connections(),
        4,
        "one connection per concurrent request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_never_exceeds_what_the_client_allows() {
    // A client that keeps at most 2 requests outstanding, each released only
    // once its body has been read, must never be seen with 3 in flight, even
    // when the next request is sent the instant a body ends.
    let server = Server::start().await;
    server
        .on("/w")
        .reply(Reply::ok().body("w").delay(Duration::from_millis(2)));
    let client = client();
    let slots = Arc::new(tokio::sync::Semaphore::new(2));

    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (client, slots, url) = (client.clone(), Arc::clone(&slots), server.url("/w"));
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                get(&client, &url).await.unwrap().body.unwrap()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "w");
    }

    assert_eq!(server.hits("/w"), 40);
    assert_eq!(server.max_in_flight(), 2);
}

#[tokio::test]
async fn equal_bodies_have_equal_hashes() {
    let server = Server::start().await;
    server.on("/p").reply(Reply::ok());
    let client = client();

    for body in ["{\"amount\":100}", "{\"amount\":100}", "{\"amount\":101}"] {
        send(&client, Method::POST, &server.url("/p"), body)
            .await
            .unwrap();
    }

    let seen = server.arrivals_for("/p");
    assert_eq!(seen[0].body_hash, seen[1].body_hash);
    assert_ne!(seen[1].body_hash, seen[2].body_hash);
    assert_eq!(seen[0].body_hash, body_hash(b"{\"amount\":100}"));
    assert_eq!(seen[2].body_len, 14);
}

#[tokio::test]
async fn arrivals_are_timestamped_in_order() {
    let server = Server::start().await;
    server.on("/t").reply(Reply::ok());
    let client = client();
    let before = Instant::now();

    get(&client, &server.url("/t")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    get(&client, &server.url("/t")).await.unwrap();

    let seen = server.arrivals();
    assert!(seen[0].at >= before);
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(30));
}

#[tokio::test]
async fn rescripting_a_route_numbers_its_requests_from_one_again() {
    let server = Server::start().await;
    let client = client();
    server.on("/r").replies([Reply::status(500), Reply::ok()]);
    assert_eq!(get(&client, &server.url("/r")).await.unwrap().status, 500);
    assert_eq!(get(&client, &server.url("/r")).await.unwrap().status, 200);

    server.on("/r").replies([Reply::status(503), Reply::ok()]);

    assert_eq!(get(&client, &server.url("/r")).await.unwrap().status, 503);
    assert_eq!(get(&client, &server.url("/r")).await.unwrap().status, 200);
    assert_eq!(server.hits("/r"), 4, "arrivals are kept");
}

#[tokio::test]
async fn head_requests_get_headers_without_a_body() {
    let server = Server::start().await;
    server.on("/h").reply(Reply::ok().body("twelve bytes"));
    let client = client();

    let answer = send(&client, Method::HEAD, &server.url("/h"), "")
        .await
        .unwrap();
    let after = get(&client, &server.url("/h")).await.unwrap();

    assert_eq!(answer.headers["content-length"], "12");
    assert_eq!(answer.body.unwrap(), "");
    assert_eq!(
        after.body.unwrap(),
        "twelve bytes",
        "the connection stayed in step"
    );
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_timed_out_attempt_and_its_retry_are_not_counted_together() {
    // What a retry layer's tests rely on: an attempt abandoned on a timeout
    // (hyper then closes its connection) is no longer in flight once the
    // retry arrives.
    let server = Server::start().await;
    let client = client();

    for _ in 0..10 {
        server.on("/").replies([Reply::hang(), Reply::ok()]);
        let first =
            tokio::time::timeout(Duration::from_millis(20), get(&client, &server.url("/"))).await;
        assert!(first.is_err(), "the first attempt hangs");
        assert_eq!(get(&client, &server.url("/")).await.unwrap().status, 200);
    }

    assert_eq!(server.hits("/"), 20);
    assert_eq!(server.max_in_flight(), 1);
}

#[tokio::test]
async fn turning_recording_off_keeps_counting_but_stores_nothing() {
    let server = Server::start().await;
    server.on("/b").reply(Reply::ok());
    let client = client();
    get(&client, &server.url("/b")).await.unwrap();

    server.record_arrivals(false);
    for _ in 0..5 {
        get(&client, &server.url("/b")).await.unwrap();
    }
    server.record_arrivals(true);
    get(&client, &server.url("/b")).await.unwrap();

    assert_eq!(server.requests(), 7);
    assert_eq!(server.hits("/b"), 2);
    server.clear_arrivals();
    assert!(server.arrivals().is_empty());
    assert_eq!(server.requests(), 7);
}

#[tokio::test]
async fn route_paths_are_normalised_like_urls() {
    let server = Server::start().await;
    server
        .on("v1/items?ignored=1")
        .reply(Reply::ok().body("items"));
    let client = client();

    let answer = get(&client, &server.url("v1/items?page=3")).await.unwrap();

    assert_eq!(answer.body.unwrap(), "items");
    assert_eq!(server.hits("v1/items"), 1);
    assert_eq!(server.arrivals_for("/v1/items?x").len(), 1);
}

#[tokio::test]
async fn large_bodies_travel_whole_both_ways() {
    let server = Server::start().await;
    let big: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i: u32| i.to_le_bytes()[0] ^ (i >> 11).to_le_bytes()[0])
        .collect();
    server.on("/big").reply(Reply::ok().body(big.clone()));
    let client = client();

    let req = Request::put(server.url("/big"))
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();

    assert_eq!(body, big);
    let seen = &server.arrivals()[0];
    assert_eq!(seen.body_len, big.len());
    assert_eq!(seen.body_hash, body_hash(&big));
}
