//! Connection faults, checked from the server's side, through the facade's
//! default stack and through a stack assembled by hand with
//! `tower::ServiceBuilder`.
//!
//! For every fault: a GET is retried within its limits (three attempts) and
//! a body cut short is never returned as a success; a POST arrives exactly
//! once, unless it carries an `Idempotency-Key` and the caller opted in, in
//! which case every arrival has the same key and a byte-identical body.
//! No call outlives its deadline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod reliability;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use parapet::Client;
use parapet_core::IDEMPOTENCY_KEY;
use parapet_testkit::{Arrival, Reply, Server, body_hash};
use reliability::{
    ATTEMPT, Counting, DEADLINE, Outcome, Via, builder, capture, fast_policy, hand_built,
    hand_built_over, hyper_client, refused_port,
};
use tokio::time::Instant;

const BODY: &str = r#"{"amount":1250,"currency":"EUR","memo":"fault suite"}"#;
/// What "no call outlives its deadline" allows on a busy machine.
const SLACK: Duration = Duration::from_secs(1);

/// The faults a server or network can produce, before or after the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// TCP RST as soon as the request has been read.
    ResetBeforeResponse,
    /// FIN without a response.
    CloseWithoutResponse,
    /// Headers, 1000 of 4096 body bytes, then RST.
    ResetMidBody,
    /// Headers announcing 4096 bytes, 1000 sent, then FIN.
    ShortBody,
    /// The headers never come.
    StalledHeaders,
    /// The headers come, the body never does.
    StalledBody,
}

impl Fault {
    fn reply(self) -> Reply {
        let big = vec![b'x'; 4096];
        match self {
            Self::ResetBeforeResponse => Reply::reset(),
            Self::CloseWithoutResponse => Reply::close(),
            Self::ResetMidBody => Reply::reset_after_headers().body(big).truncate_body(1000),
            Self::ShortBody => Reply::ok().body(big).truncate_body(1000),
            Self::StalledHeaders => Reply::hang(),
            Self::StalledBody => Reply::ok().body(big).drip(1024, Duration::from_secs(60)),
        }
    }

    /// Whether the caller has its response headers before the fault: the
    /// retry layer has handed the response over, so nothing can be retried
    /// and the failure surfaces when the body is read.
    fn after_headers(self) -> bool {
        matches!(
            self,
            Self::ResetMidBody | Self::ShortBody | Self::StalledBody
        )
    }

    /// Whether a body broken this way is re-sent when read whole through
    /// `via`: a reset or an early end, by the facade's readers (a stall is
    /// a timeout, never re-sent; a hand-built stack read with `collect()`
    /// stops at the retry layer's first `BodyRestart`).
    fn body_restarts(self, via: &Via) -> bool {
        via.is_facade() && matches!(self, Self::ResetMidBody | Self::ShortBody)
    }
}

/// Scripts `/pay` (through a handler, so every arrival records its whole
/// body): the first `faults` requests get `fault`, the rest `200 done`.
fn script(server: &Server, fault: Fault, faults: usize) {
    let n = Arc::new(AtomicUsize::new(0));
    server.on("/pay").handle(move |_a: &Arrival| {
        if n.fetch_add(1, Ordering::SeqCst) < faults {
            fault.reply()
        } else {
            Reply::ok().body("done")
        }
    });
}

/// The clients under test: the facade (trusting `Idempotency-Key` or not)
/// and the hand-built stack (likewise).
fn clients(trust_key: bool) -> [Via; 2] {
    [
        Via::Facade(builder(trust_key).build().unwrap()),
        Via::Stack(hand_built(fast_policy(trust_key))),
    ]
}

async fn timed_call(via: &Via, method: Method, url: &str, key: Option<&str>) -> Outcome {
    let start = Instant::now();
    let out = via.call(method, url, BODY, key).await;
    let took = start.elapsed();
    assert!(
        took <= DEADLINE + SLACK,
        "{}: the call took {took:?}, past its deadline of {DEADLINE:?}",
        via.name()
    );
    out
}

/// Every arrival carries `key` and the body sent, byte for byte.
fn assert_same_key_and_body(arrivals: &[Arrival], key: &str) {
    for a in arrivals {
        assert_eq!(a.header(IDEMPOTENCY_KEY.as_str()), Some(key));
        assert_eq!(a.body_hash, body_hash(BODY.as_bytes()));
        assert_eq!(a.body, BODY);
    }
}

async fn get_is_retried_within_limits(fault: Fault) {
    for via in clients(false) {
        // Always failing: never a success; three attempts for a fault
        // before the headers or a body re-sent (`body_restarts`), one for
        // any other fault after the headers.
        let server = Server::start().await;
        script(&server, fault, usize::MAX);
        let out = timed_call(&via, Method::GET, &server.url("/pay"), None).await;
        let arrivals = server.arrivals_for("/pay");
        if fault.after_headers() {
            assert!(
                matches!(out, Outcome::BodyFailed(200, _)),
                "{fault:?} via {}: {out:?}",
                via.name()
            );
            let expected = if fault.body_restarts(&via) { 3 } else { 1 };
            assert_eq!(arrivals.len(), expected, "{fault:?} via {}", via.name());
        } else {
            assert!(
                matches!(out, Outcome::Failed(_)),
                "{fault:?} via {}: {out:?}",
                via.name()
            );
            assert_eq!(arrivals.len(), 3, "{fault:?} via {}", via.name());
        }

        // Failing twice, then answering: retried to the answer (a fault
        // after the headers only where the body is read whole by the
        // facade).
        if !fault.after_headers() || fault.body_restarts(&via) {
            let server = Server::start().await;
            script(&server, fault, 2);
            let out = timed_call(&via, Method::GET, &server.url("/pay"), None).await;
            match out {
                Outcome::Complete(200, body) => assert_eq!(body, "done"),
                other => panic!("{fault:?} via {}: {other:?}", via.name()),
            }
            assert_eq!(server.hits("/pay"), 3);
        }
    }
}

async fn post_arrives_once(fault: Fault) {
    // Not opted in: once, with or without a key.
    for via in clients(false) {
        for key in [None, Some("key-not-trusted")] {
            let server = Server::start().await;
            script(&server, fault, 2);
            let out = timed_call(&via, Method::POST, &server.url("/pay"), key).await;
            assert!(
                !out.is_complete_ok(),
                "{fault:?} via {}: {out:?}",
                via.name()
            );
            let arrivals = server.arrivals_for("/pay");
            assert_eq!(
                arrivals.len(),
                1,
                "{fault:?} via {} key {key:?}",
                via.name()
            );
            assert_eq!(arrivals[0].body, BODY);
        }
    }
    // Opted in (the client trusts the header): retried like a GET, and
    // every arrival is the same request.
    for via in clients(true) {
        let server = Server::start().await;
        script(&server, fault, 2);
        let key = "4f1c2a7e-5b7d-4f39-9d4e-0c1b2a3d4e5f";
        let out = timed_call(&via, Method::POST, &server.url("/pay"), Some(key)).await;
        let arrivals = server.arrivals_for("/pay");
        assert_same_key_and_body(&arrivals, key);
        if fault.after_headers() && !fault.body_restarts(&via) {
            assert!(
                matches!(out, Outcome::BodyFailed(200, _)),
                "{fault:?}: {out:?}"
            );
            assert_eq!(arrivals.len(), 1);
        } else {
            assert!(
                out.is_complete_ok(),
                "{fault:?} via {}: {out:?}",
                via.name()
            );
            assert_eq!(arrivals.len(), 3);
        }
    }
}

/// Both halves of a fault's suite, with the log captured (and checked for
/// planted secrets) for the whole of it.
async fn fault_suite(fault: Fault) {
    let _logs = capture();
    get_is_retried_within_limits(fault).await;
    post_arrives_once(fault).await;
}

#[tokio::test]
async fn reset_before_any_response() {
    fault_suite(Fault::ResetBeforeResponse).await;
}

#[tokio::test]
async fn clean_close_without_a_response() {
    fault_suite(Fault::CloseWithoutResponse).await;
}

#[tokio::test]
async fn reset_after_the_headers_mid_body() {
    fault_suite(Fault::ResetMidBody).await;
}

#[tokio::test]
async fn body_shorter_than_its_content_length() {
    fault_suite(Fault::ShortBody).await;
}

#[tokio::test]
async fn stalled_headers() {
    fault_suite(Fault::StalledHeaders).await;
}

#[tokio::test]
async fn stalled_body() {
    fault_suite(Fault::StalledBody).await;
}

#[tokio::test]
async fn truncated_bodies_are_errors_for_every_reader() {
    let _logs = capture();
    let server = Server::start().await;
    server
        .on("/short")
        .reply(Reply::json(r#"{"items":[1,2,3],"next":null}"#).truncate_body(12));
    let client = builder(false).build().unwrap();
    let url = server.url("/short");

    let e = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap_err();
    assert!(e.is_body(), "{e:?}");
    let e = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_err();
    assert!(e.is_body(), "{e:?}");
    let e = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert!(
        e.is_body() && !e.is_decode(),
        "a cut body is a body error, not bad JSON: {e:?}"
    );
    // Streamed: the chunks that came, then an error, never a clean end.
    let mut stream = client.get(&url).send().await.unwrap().bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(chunk) = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    })
    .await
    {
        match chunk {
            Ok(b) => got.extend_from_slice(&b),
            Err(e) => {
                assert!(e.is_body());
                failed = true;
                break;
            }
        }
    }
    assert!(failed && got.len() <= 12);
    // bytes, text and json read the body whole: each re-sent it up to the
    // 3 attempts; the stream is never restarted: 3 + 3 + 3 + 1.
    assert_eq!(server.hits("/short"), 10);
}

#[tokio::test]
async fn connection_refused_is_retried_for_any_method_and_fails_fast() {
    let _logs = capture();
    let port = refused_port().await;
    let url = format!("http://127.0.0.1:{port}/pay");

    let (transport, attempts) = Counting::new(hyper_client());
    let client = builder(false).build_with(transport).unwrap();
    for method in [Method::GET, Method::POST] {
        attempts.store(0, Ordering::SeqCst);
        let start = Instant::now();
        let e = client
            .request(method.clone(), &url)
            .body(BODY)
            .send()
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{method}: {e:?}");
        assert!(e.is_retryable());
        // The request never left, so even a POST may be sent again.
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "{method}");
        assert!(start.elapsed() <= DEADLINE + SLACK);
    }

    let (transport, attempts) = Counting::new(hyper_client());
    let via = Via::Stack(hand_built_over(fast_policy(false), transport));
    for method in [Method::GET, Method::POST] {
        attempts.store(0, Ordering::SeqCst);
        let out = timed_call(&via, method.clone(), &url, None).await;
        assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "{method}");
    }
}

/// The server closes a kept-alive connection just as the next request
/// arrives on it (it has read the request: the worst case for a POST).
fn close_on_second_request(server: &Server) {
    let n = Arc::new(AtomicUsize::new(0));
    server
        .on("/pay")
        .handle(move |_a: &Arrival| match n.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::ok().body("first"),
            1 => Reply::close(),
            _ => Reply::ok().body("done"),
        });
}

#[tokio::test]
async fn a_pooled_connection_closed_under_a_request() {
    let _logs = capture();
    for trust in [false, true] {
        for via in clients(trust) {
            // GET: retried on a fresh connection.
            let server = Server::start().await;
            close_on_second_request(&server);
            let url = server.url("/pay");
            assert!(
                timed_call(&via, Method::GET, &url, None)
                    .await
                    .is_complete_ok()
            );
            let out = timed_call(&via, Method::GET, &url, None).await;
            assert!(out.is_complete_ok(), "{out:?}");
            let a = server.arrivals_for("/pay");
            assert_eq!(a.len(), 3);
            assert_eq!(
                a[1].connection, a[0].connection,
                "the second call reused the pool"
            );
            assert_ne!(a[2].connection, a[1].connection);

            // POST: once, unless keyed and trusted.
            let server = Server::start().await;
            close_on_second_request(&server);
            let url = server.url("/pay");
            assert!(
                timed_call(&via, Method::GET, &url, None)
                    .await
                    .is_complete_ok()
            );
            let key = "0e9d8c7b-pooled";
            let out = timed_call(&via, Method::POST, &url, Some(key)).await;
            let posts: Vec<_> = server
                .arrivals_for("/pay")
                .into_iter()
                .filter(|a| a.method == Method::POST)
                .collect();
            assert_same_key_and_body(&posts, key);
            if trust {
                assert!(out.is_complete_ok(), "{} {out:?}", via.name());
                assert_eq!(posts.len(), 2);
            } else {
                assert!(matches!(out, Outcome::Failed(_)), "{} {out:?}", via.name());
                assert_eq!(posts.len(), 1);
            }
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_while_idle() {
    let _logs = capture();
    // The server closes every connection after answering, without saying
    // so (`connection: keep-alive`), as an idle timeout would.
    for via in clients(false) {
        let server = Server::start().await;
        server.on("/pay").reply(
            Reply::ok()
                .body("done")
                .header("connection", "keep-alive")
                .then_close(),
        );
        let url = server.url("/pay");
        for i in 0..5 {
            let out = timed_call(&via, Method::GET, &url, None).await;
            assert!(out.is_complete_ok(), "GET {i} via {}: {out:?}", via.name());
        }
        // A POST may find the dead connection before the client noticed
        // the close: then it fails without having arrived. Either way it
        // arrives at most once, and succeeds only if it arrived.
        for i in 0..5 {
            let before = server.hits("/pay");
            let out = timed_call(&via, Method::POST, &url, None).await;
            let arrived = server.hits("/pay") - before;
            assert!(arrived <= 1, "POST {i} arrived {arrived} times");
            assert_eq!(out.is_complete_ok(), arrived == 1, "POST {i}: {out:?}");
        }
    }
}

#[tokio::test]
async fn request_builder_idempotency_key_opts_in_per_request() {
    let _logs = capture();
    let server = Server::start().await;
    script(&server, Fault::ResetBeforeResponse, 2);
    // A client that does not trust keys in general...
    let client: Client = builder(false).build().unwrap();
    // ...retries a request that asked for a key of its own.
    let res = client
        .post(&server.url("/pay"))
        .body(BODY)
        .idempotency_key()
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "done");
    let arrivals = server.arrivals_for("/pay");
    assert_eq!(arrivals.len(), 3);
    let key = arrivals[0].header("idempotency-key").unwrap().to_owned();
    assert!(!key.is_empty());
    assert_same_key_and_body(&arrivals, &key);
}

#[tokio::test]
async fn stalled_headers_are_bounded_by_the_attempt_timeout_not_the_deadline() {
    let _logs = capture();
    let server = Server::start().await;
    server
        .on("/slow")
        .reply(Reply::ok().delay(Duration::from_secs(30)));
    let client = builder(false).build().unwrap();
    let start = Instant::now();
    let e = client.get(&server.url("/slow")).send().await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let arrivals = server.wait_for_arrivals(3).await;
    // Three attempts, each a fresh connection (a timed-out one is closed).
    assert_eq!(arrivals.len(), 3);
    let mut conns: Vec<_> = arrivals.iter().map(|a| a.connection).collect();
    conns.dedup();
    assert_eq!(conns.len(), 3);
    // Each attempt waited for its timeout (250 ms) before the next one
    // started; the bound leaves room for a slow connect of the first.
    for pair in arrivals.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= ATTEMPT - Duration::from_millis(100), "{gap:?}");
    }
    assert!(start.elapsed() <= DEADLINE + SLACK);
}
