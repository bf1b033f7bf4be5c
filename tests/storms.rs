//! Status storms and `Retry-After` edge values, from the server's side.
//!
//! - A total outage (always 503) over 1000 calls: the arrivals stay within
//!   the retry budget (20 % of the calls, or 10 retries a second, whichever
//!   is more).
//! - A brownout (30 % random 503s): with three attempts, at least
//!   1 − 0.3³ − 2 % of the calls succeed.
//! - `Retry-After` values a server really sends: 0, negative, a past date,
//!   garbage, two headers, a day, a number too large for any integer type.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod reliability;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use parapet::Client;
use parapet::retry::RetryBudget;
use parapet_testkit::{Arrival, Reply, Rng, Server};
use reliability::{Outcome, Via, builder, capture, fast_policy, hand_built, policy_builder};
use tokio::task::JoinSet;
use tokio::time::Instant;

const CALLS: usize = 1000;
const WORKERS: usize = 25;

/// Makes `CALLS` GETs to `url`, `WORKERS` at a time; returns the outcomes
/// and the time it took.
async fn storm(via: &Via, url: &str) -> (Vec<Outcome>, Duration) {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..WORKERS {
        let via = via.clone();
        let url = url.to_owned();
        set.spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..CALLS / WORKERS {
                outcomes.push(via.call(Method::GET, &url, "", None).await);
            }
            outcomes
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    assert_eq!(all.len(), CALLS);
    (all, start.elapsed())
}

async fn total_outage(via: Via) {
    let server = Server::start().await;
    server.on("/down").reply(Reply::status(503).body("down"));
    let (outcomes, took) = storm(&via, &server.url("/down")).await;

    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Complete(503, _))),
        "every call ends with the server's 503"
    );
    let arrivals = server.requests() as f64;
    let secs = took.as_secs_f64().ceil();
    // The budget: retries add at most 20 % of the calls, or 10 a second
    // since the first call, whichever is more.
    let budget = (0.2 * CALLS as f64).max(10.0 * secs);
    eprintln!(
        "outage via {}: {arrivals} arrivals for {CALLS} calls in {took:?} (allowed {})",
        via.name(),
        CALLS as f64 + budget
    );
    assert!(
        arrivals <= CALLS as f64 + budget,
        "{}: {arrivals} arrivals for {CALLS} calls in {took:?} (budget {budget})",
        via.name()
    );
    // Without a budget the three attempts would have made 3000; the budget
    // let some retries through, not none.
    assert!(arrivals > CALLS as f64, "{}: no retry at all", via.name());
}

#[tokio::test]
async fn a_total_outage_stays_within_the_retry_budget() {
    let _logs = capture();
    total_outage(Via::Facade(builder(false).build().unwrap())).await;
    total_outage(Via::Stack(hand_built(fast_policy(false)))).await;
}

async fn brownout(via: Via) {
    let server = Server::start().await;
    // 30 % of the arrivals, drawn from a seeded generator, get a 503.
    let rng = Arc::new(Mutex::new(Rng::new(0x5eed_b10c)));
    server.on("/brown").handle(move |_a: &Arrival| {
        if rng.lock().unwrap().unit() < 0.3 {
            Reply::status(503)
        } else {
            Reply::ok().body("ok")
        }
    });
    let (outcomes, _) = storm(&via, &server.url("/brown")).await;
    let ok = outcomes.iter().filter(|o| o.is_complete_ok()).count();
    let rate = ok as f64 / CALLS as f64;
    let floor = 1.0 - 0.3f64.powi(3) - 0.02;
    eprintln!(
        "brownout via {}: {ok} of {CALLS} succeeded, {} arrivals",
        via.name(),
        server.requests()
    );
    assert!(
        rate >= floor,
        "{}: {ok} of {CALLS} succeeded ({rate}); at least {floor} expected",
        via.name()
    );
    // Every call that did not succeed got the server's 503, after three
    // attempts; none failed otherwise.
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Complete(200 | 503, _)))
    );
    assert!(server.requests() <= 3 * CALLS as u64);
}

#[tokio::test]
async fn a_brownout_of_30_percent_503s_is_absorbed_by_three_attempts() {
    let _logs = capture();
    // The retry budget is raised to 100 % here, deliberately: with 30 % of
    // attempts failing, a call needs 0.3 + 0.3² = 0.39 retries on average
    // (39 % more load than calls; ~43 % of the first attempts' load, at the
    // start of the window), which the default 20 % budget would refuse in
    // part. The figure under test, 1 − 0.3³, assumes all three attempts are
    // available: this test checks the retries, the outage test above checks
    // the budget.
    let policy = || {
        policy_builder(false)
            .budget(RetryBudget::new().percent(100))
            .build()
            .unwrap()
    };
    let client = builder(false).retry(policy()).build().unwrap();
    brownout(Via::Facade(client)).await;
    brownout(Via::Stack(hand_built(policy()))).await;
}

// ---------------------------------------------------------------------------
// Retry-After
// ---------------------------------------------------------------------------

/// What came of one call against `503 + these Retry-After values`, then 200.
struct Seen {
    res: parapet::Response,
    took: Duration,
    arrivals: Vec<Arrival>,
}

impl Seen {
    fn gap(&self) -> Duration {
        self.arrivals[1].at - self.arrivals[0].at
    }
}

/// A client with room for a `Retry-After` of a second or two.
fn patient() -> Client {
    builder(false)
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn retry_after(client: &Client, server: &Server, values: &[&str]) -> Seen {
    let mut first = Reply::status(503).body("busy");
    for v in values {
        first = first.header("retry-after", v);
    }
    server.on("/ra").replies([first, Reply::ok().body("done")]);
    let start = Instant::now();
    let res = client.get(&server.url("/ra")).send().await.unwrap();
    let took = start.elapsed();
    Seen {
        res,
        took,
        arrivals: server.arrivals_for("/ra"),
    }
}

/// A value that means "now" or nothing: retried after the usual backoff
/// (at most 40 ms here; a second is the generous bound).
async fn retried_promptly(values: &[&str]) {
    let server = Server::start().await;
    let seen = retry_after(&patient(), &server, values).await;
    assert_eq!(seen.arrivals.len(), 2, "{values:?}");
    assert!(
        seen.gap() < Duration::from_secs(1),
        "{values:?}: {:?}",
        seen.gap()
    );
    assert_eq!(seen.res.status(), 200);
    assert_eq!(seen.res.text().await.unwrap(), "done");
}

#[tokio::test]
async fn retry_after_zero_means_now() {
    let _logs = capture();
    retried_promptly(&["0"]).await;
}

#[tokio::test]
async fn retry_after_negative_is_ignored() {
    let _logs = capture();
    retried_promptly(&["-1"]).await;
    retried_promptly(&["-86400"]).await;
}

#[tokio::test]
async fn retry_after_in_the_past_means_now() {
    let _logs = capture();
    retried_promptly(&["Sun, 06 Nov 1994 08:49:37 GMT"]).await;
    retried_promptly(&["Sunday, 06-Nov-94 08:49:37 GMT"]).await;
    retried_promptly(&["Sun Nov  6 08:49:37 1994"]).await;
}

#[tokio::test]
async fn retry_after_garbage_is_ignored() {
    let _logs = capture();
    for v in [
        "soon",
        "1.5",
        "+1",
        "1 s",
        "",
        "Sun, 31 Feb 2026 08:49:37 GMT",
        "\u{7f}",
    ] {
        retried_promptly(&[v]).await;
    }
}

#[tokio::test]
async fn two_retry_after_headers_the_first_valid_one_wins() {
    let _logs = capture();
    let server = Server::start().await;
    let seen = retry_after(&patient(), &server, &["garbage", "1", "86400"]).await;
    assert_eq!(seen.arrivals.len(), 2);
    // Waited the second asked for (plus up to 10 % spread), not a day.
    let gap = seen.gap();
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert!(
        gap < Duration::from_millis(1100) + Duration::from_secs(1),
        "{gap:?}"
    );
    assert_eq!(seen.res.status(), 200);
}

/// A wait too long to obey: the 503 is returned at once, and its error
/// carries the server's `Retry-After`; the host's gate stays closed, so the
/// next call fails at once without reaching the server.
/// A wait longer than the client honours comes back at once: the error
/// reports the wait cut to what the client honours (the 5-minute maximum),
/// the response's header keeps the server's own value.
async fn returned_at_once(value: &str) {
    let server = Server::start().await;
    let client = patient();
    let seen = retry_after(&client, &server, &[value]).await;
    assert_eq!(seen.arrivals.len(), 1, "{value}");
    assert!(
        seen.took < Duration::from_secs(1),
        "{value}: {:?}",
        seen.took
    );
    assert_eq!(seen.res.headers()["retry-after"], value);
    let e = seen.res.error_for_status().await.unwrap_err();
    assert!(e.is_status() && e.is_retryable());
    assert_eq!(e.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(e.retry_after(), Some(parapet::DEFAULT_MAX_SERVER_WAIT));
    assert_eq!(e.body_snippet(), Some(&b"busy"[..]));

    // The throttle remembers: the host said "not before tomorrow" (cut to
    // the facade's 5-minute maximum), which no deadline allows.
    let start = Instant::now();
    let e = client.get(&server.url("/ra")).send().await.unwrap_err();
    assert!(e.is_rate_limited(), "{e:?}");
    let wait = e.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(290) && wait <= parapet::DEFAULT_MAX_SERVER_WAIT,
        "{wait:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(server.hits("/ra"), 1);
    // Other hosts are not affected.
    let other = Server::start().await;
    other.on("/ok").reply(Reply::ok());
    assert_eq!(
        client.get(&other.url("/ok")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn retry_after_of_a_day_is_returned_at_once_with_the_wait() {
    let _logs = capture();
    returned_at_once("86400").await;
}

#[tokio::test]
async fn retry_after_too_large_for_any_integer_saturates() {
    let _logs = capture();
    returned_at_once("99999999999999999999999999999999999999999999").await;
}

#[tokio::test]
async fn retry_after_edge_values_through_a_hand_built_stack() {
    let _logs = capture();
    let stack = hand_built(fast_policy(false));
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    let huge = "99999999999999999999999999999999999999999999";
    for (value, arrivals) in [
        ("0", 2),
        ("-1", 2),
        (past, 2),
        ("soon", 2),
        ("86400", 1),
        (huge, 1),
    ] {
        let server = Server::start().await;
        server.on("/ra").replies([
            Reply::status(503).header("retry-after", value),
            Reply::ok().body("done"),
        ]);
        let req = http::Request::get(server.url("/ra"))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        let start = Instant::now();
        let res = tower::ServiceExt::oneshot(stack.clone(), req)
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(1), "{value}");
        assert_eq!(server.hits("/ra"), arrivals, "{value}");
        if arrivals == 2 {
            assert_eq!(res.status(), 200, "{value}");
        } else {
            // Returned at once, saying why and what the server asked for.
            assert_eq!(res.status(), 503, "{value}");
            let why = parapet::retry::NotRetried::get(res.extensions()).unwrap();
            assert_eq!(
                why.reason(),
                parapet::retry::NotRetriedReason::RetryAfterTooLong
            );
            assert_eq!(why.attempts(), 1);
            let expected = value.parse::<u64>().unwrap_or(u64::MAX);
            assert_eq!(why.retry_after(), Some(Duration::from_secs(expected)));
        }
    }
}
