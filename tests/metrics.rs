//! `ClientBuilder::metrics` (feature `metrics`): the metrics of the table
//! in `parapet::metrics`, recorded by metrics-util's `DebuggingRecorder`
//! for calls to a loopback testkit server through the whole stack.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // helpers outside #[test] fns

use std::future::Future;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use parapet::metrics::names;
use parapet_testkit::{Reply, Server};

/// One recorded metric: name, labels, value.
#[derive(Debug)]
struct Seen {
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

impl Seen {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `fut` on a current-thread runtime with a fresh recorder as this
/// thread's (tests in parallel do not see each other's metrics).
fn recorded<Fut: Future>(fut: Fut) -> (Fut::Output, Vec<Seen>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || rt.block_on(fut));
    let seen = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            Seen {
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value,
            }
        })
        .collect();
    (out, seen)
}

fn named<'a>(seen: &'a [Seen], name: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.name == name).collect()
}

fn histogram(s: &Seen) -> Vec<f64> {
    match &s.value {
        DebugValue::Histogram(v) => v.iter().map(|f| f.into_inner()).collect(),
        other => panic!("{} is not a histogram: {other:?}", s.name),
    }
}

fn active(seen: &[Seen]) -> f64 {
    named(seen, names::ACTIVE_REQUESTS)
        .iter()
        .map(|s| match &s.value {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("not a gauge: {other:?}"),
        })
        .sum()
}

#[test]
fn a_call_retried_twice_records_one_duration_three_attempts_and_two_retries() {
    let (port, seen) = recorded(async {
        let api = Server::start().await;
        api.on("/v1/orders")
            .replies([Reply::status(503), Reply::status(503), Reply::json("[]")]);
        let client = parapet::Client::builder().metrics(true).build().unwrap();
        let res = client.get(&api.url("/v1/orders")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(api.hits("/v1/orders"), 3);
        api.addr().port()
    });
    let duration = named(&seen, names::REQUEST_DURATION);
    assert_eq!(duration.len(), 1, "{seen:#?}");
    assert_eq!(histogram(duration[0]).len(), 1);
    let d = duration[0];
    assert_eq!(d.label("http.request.method"), Some("GET"));
    assert_eq!(d.label("http.response.status_code"), Some("200"));
    assert_eq!(d.label("server.address"), Some("127.0.0.1"));
    assert_eq!(d.label("server.port"), Some(port.to_string().as_str()));
    assert_eq!(d.label("error.type"), None);
    assert_eq!(histogram(named(&seen, names::ATTEMPTS)[0]), [3.0]);
    let retries = named(&seen, names::RETRIES);
    assert_eq!(retries.len(), 1, "{retries:#?}");
    assert!(matches!(retries[0].value, DebugValue::Counter(2)));
    assert_eq!(retries[0].label("reason"), Some("503"));
    assert_eq!(active(&seen), 0.0);
}

#[test]
fn a_refused_connection_is_an_error_type_without_a_status() {
    let (_, seen) = recorded(async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = parapet::Client::builder()
            .metrics(true)
            .retry_off()
            .build()
            .unwrap();
        let err = client
            .get(&format!("http://127.0.0.1:{port}/x"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    });
    let duration = named(&seen, names::REQUEST_DURATION);
    assert_eq!(duration.len(), 1, "{seen:#?}");
    assert_eq!(duration[0].label("error.type"), Some("connect"));
    assert_eq!(duration[0].label("http.response.status_code"), None);
    assert_eq!(active(&seen), 0.0);
}

#[test]
fn a_client_without_metrics_records_nothing() {
    let (_, seen) = recorded(async {
        let api = Server::start().await;
        api.on("/x").reply(Reply::ok());
        let client = parapet::Client::builder().build().unwrap();
        let res = client.get(&api.url("/x")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    });
    assert!(seen.is_empty(), "{seen:#?}");
}

// ---- The layers' own events, through the whole client ----------------

fn counter(s: &Seen) -> u64 {
    match &s.value {
        DebugValue::Counter(n) => *n,
        other => panic!("{} is not a counter: {other:?}", s.name),
    }
}

/// The one metric `name` whose labels include every pair of `labels`.
fn one<'a>(seen: &'a [Seen], name: &str, labels: &[(&str, &str)]) -> &'a Seen {
    let found: Vec<&Seen> = named(seen, name)
        .into_iter()
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {seen:#?}");
    found[0]
}

#[test]
fn the_event_names_are_the_layer_crates_own() {
    use parapet::auth::metric_names as auth;
    use parapet::ratelimit::metric_names as rl;
    use parapet::retry::metric_names as retry;

    assert_eq!(names::RETRY_WAIT, retry::RETRY_WAIT);
    assert_eq!(names::THROTTLE_CLOSURES, rl::THROTTLE_CLOSURES);
    assert_eq!(names::THROTTLE_HELD, rl::THROTTLE_HELD);
    assert_eq!(names::THROTTLE_WAIT, rl::THROTTLE_WAIT);
    assert_eq!(names::THROTTLE_REJECTIONS, rl::THROTTLE_REJECTIONS);
    assert_eq!(names::RATE_LIMIT_WAIT, rl::RATE_LIMIT_WAIT);
    assert_eq!(names::RATE_LIMIT_REJECTIONS, rl::RATE_LIMIT_REJECTIONS);
    assert_eq!(names::CONCURRENCY_QUEUE, rl::CONCURRENCY_QUEUE);
    assert_eq!(names::CONCURRENCY_REJECTIONS, rl::CONCURRENCY_REJECTIONS);
    assert_eq!(names::TOKEN_FETCHES, auth::TOKEN_FETCHES);
    assert_eq!(names::TOKEN_FETCH_DURATION, auth::TOKEN_FETCH_DURATION);
    assert_eq!(names::REAUTHS, auth::REAUTHS);
    assert_eq!(names::REAUTHS_REFUSED, auth::REAUTHS_REFUSED);
}

/// A 503 (backoff) then a 429 with `Retry-After: 1`: two retry waits
/// told apart by source, and the throttle's gate closed once for 1 s;
/// the server saw the third attempt at least 1 s after the second.
#[test]
fn a_503_then_a_429_with_retry_after_records_both_waits_and_the_gate() {
    let (gap, seen) = recorded(async {
        let api = Server::start().await;
        api.on("/v1/orders").replies([
            Reply::status(503),
            Reply::status(429).header("retry-after", "1"),
            Reply::json("[]"),
        ]);
        let client = parapet::Client::builder().build().unwrap();
        let res = client.get(&api.url("/v1/orders")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let at: Vec<_> = api.arrivals().iter().map(|a| a.at).collect();
        assert_eq!(at.len(), 3);
        at[2] - at[1]
    });
    assert!(gap >= std::time::Duration::from_secs(1), "{gap:?}");
    let backoff = one(&seen, names::RETRY_WAIT, &[("source", "backoff")]);
    assert_eq!(backoff.label("server.address"), Some("127.0.0.1"));
    let waited = histogram(backoff);
    assert_eq!(waited.len(), 1);
    assert!(waited[0] < 1.0, "{waited:?}");
    let server = histogram(one(&seen, names::RETRY_WAIT, &[("source", "retry_after")]));
    assert_eq!(server.len(), 1);
    assert!((1.0..1.5).contains(&server[0]), "{server:?}");
    let closed = one(
        &seen,
        names::THROTTLE_CLOSURES,
        &[("source", "retry_after")],
    );
    assert_eq!(counter(closed), 1);
    assert_eq!(closed.label("server.address"), Some("127.0.0.1"));
    assert_eq!(
        histogram(one(
            &seen,
            names::THROTTLE_HELD,
            &[("source", "retry_after")]
        )),
        [1.0]
    );
    // Events are recorded without ClientBuilder::metrics: no call metrics.
    assert!(named(&seen, names::REQUEST_DURATION).is_empty());
}

/// Two calls under 5 calls/s with a burst of 1: the second waits ~200 ms
/// for its turn.
#[test]
fn the_second_call_under_a_quota_records_its_wait() {
    use parapet::ratelimit::{Quota, RateLimitLayer};

    let ((), seen) = recorded(async {
        let api = Server::start().await;
        api.on("/x").reply(Reply::ok());
        let client = parapet::Client::builder()
            .rate_limit(RateLimitLayer::new(
                Quota::rate(5).unwrap().burst(std::num::NonZeroU32::MIN),
            ))
            .build()
            .unwrap();
        for _ in 0..2 {
            let res = client.get(&api.url("/x")).send().await.unwrap();
            assert_eq!(res.status(), 200);
        }
    });
    let wait = histogram(one(
        &seen,
        names::RATE_LIMIT_WAIT,
        &[("server.address", "127.0.0.1")],
    ));
    assert_eq!(wait.len(), 1, "the first call goes at once: {wait:?}");
    assert!((0.1..0.3).contains(&wait[0]), "{wait:?}");
    assert!(named(&seen, names::RATE_LIMIT_REJECTIONS).is_empty());
}

/// One permit, two calls at once against a slow answer: the second
/// queues until the first one's body ends.
#[test]
fn a_call_queued_for_the_one_permit_records_its_queue_time() {
    use parapet::ratelimit::ConcurrencyLimitLayer;

    let ((), seen) = recorded(async {
        let api = Server::start().await;
        api.on("/slow").reply(
            Reply::ok()
                .body("done")
                .delay(std::time::Duration::from_millis(200)),
        );
        let client = parapet::Client::builder()
            .concurrency_limit(ConcurrencyLimitLayer::new(std::num::NonZeroUsize::MIN))
            .build()
            .unwrap();
        let call = || async {
            let res = client.get(&api.url("/slow")).send().await.unwrap();
            res.text().await.unwrap()
        };
        let (a, b) = tokio::join!(call(), call());
        assert_eq!((a.as_str(), b.as_str()), ("done", "done"));
        assert_eq!(api.max_in_flight(), 1);
    });
    let queued = histogram(one(
        &seen,
        names::CONCURRENCY_QUEUE,
        &[("server.address", "127.0.0.1")],
    ));
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0] >= 0.15, "{queued:?}");
}

/// `OAuth2` client credentials: the first call fetches a token (initial);
/// the API refuses it once, the client fetches again (reauth) and re-sends.
#[test]
fn a_revoked_token_records_the_fetches_and_the_reauth() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    let ((), seen) = recorded(async {
        let api = Server::start().await;
        let issued = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&issued);
        api.on("/token").handle(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::json(format!(
                r#"{{"access_token":"t{n}","token_type":"Bearer","expires_in":3600}}"#
            ))
        });
        api.on("/v1/me").handle(|a| {
            if a.header("authorization") == Some("Bearer t2") {
                Reply::json("{}")
            } else {
                Reply::status(401).header("www-authenticate", r#"Bearer error="invalid_token""#)
            }
        });
        let client = parapet::Client::builder()
            .oauth2_client_credentials(api.url("/token"), "svc", "s3cret")
            .build()
            .unwrap();
        let res = client.get(&api.url("/v1/me")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        assert_eq!(api.hits("/v1/me"), 2);
    });
    let initial = one(&seen, names::TOKEN_FETCHES, &[("kind", "initial")]);
    assert_eq!(initial.label("outcome"), Some("ok"));
    assert_eq!(counter(initial), 1);
    let reauth = one(&seen, names::TOKEN_FETCHES, &[("kind", "reauth")]);
    assert_eq!(reauth.label("outcome"), Some("ok"));
    assert_eq!(counter(reauth), 1);
    assert_eq!(
        histogram(one(
            &seen,
            names::TOKEN_FETCH_DURATION,
            &[("outcome", "ok")]
        ))
        .len(),
        2
    );
    let resent = one(&seen, names::REAUTHS, &[("server.address", "127.0.0.1")]);
    assert_eq!(counter(resent), 1);
    assert!(named(&seen, names::REAUTHS_REFUSED).is_empty());
}
