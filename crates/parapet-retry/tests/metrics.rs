//! The feature `metrics`: `parapet.client.retry.wait` as metrics-util's
//! `DebuggingRecorder` sees it, for calls through the layer to an
//! in-process stand-in server, with paused time.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // helpers outside #[test] fns

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use parapet_core::{Jitter, ReplayBody};
use parapet_retry::metric_names::RETRY_WAIT;
use parapet_retry::{BackoffJitter, RetryLayer, RetryPolicy, RetryPolicyBuilder};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

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

    fn values(&self) -> Vec<f64> {
        match &self.value {
            DebugValue::Histogram(v) => v.iter().map(|f| f.into_inner()).collect(),
            other => panic!("{} is not a histogram: {other:?}", self.name),
        }
    }
}

/// Runs `fut` on a current-thread runtime with paused time and a fresh
/// recorder as this thread's (tests in parallel do not see each other's
/// metrics).
fn recorded<Fut: Future>(fut: Fut) -> (Fut::Output, Vec<Seen>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
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

fn waits(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.name == RETRY_WAIT).collect()
}

fn reply(status: u16, retry_after: Option<&str>) -> Response<String> {
    let mut res = Response::builder().status(status);
    if let Some(v) = retry_after {
        res = res.header(http::header::RETRY_AFTER, v);
    }
    res.body(String::new()).unwrap()
}

/// Sends one request through the layer to a stand-in server answering
/// the scripted replies in turn (the last repeats); returns the final
/// status and when each request arrived.
async fn call(
    policy: RetryPolicyBuilder,
    method: Method,
    uri: &str,
    replies: Vec<(u16, Option<&'static str>)>,
) -> (StatusCode, Vec<Instant>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&arrivals);
    let server = service_fn(move |_req: Request<ReplayBody>| {
        let mut log = log.lock().unwrap();
        log.push(Instant::now());
        let (status, retry_after) = replies[(log.len() - 1).min(replies.len() - 1)];
        async move { Ok::<_, Infallible>(reply(status, retry_after)) }
    });
    let svc = RetryLayer::new(policy.build().unwrap()).layer(server);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(String::new())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let at = arrivals.lock().unwrap().clone();
    (res.status(), at)
}

#[test]
fn a_503_with_retry_after_2_records_the_wait_from_retry_after() {
    let policy = RetryPolicy::builder().jitter_source(Jitter::fixed(0.5));
    let ((status, at), seen) = recorded(call(
        policy,
        Method::GET,
        "https://user:pw@api.test:8443/v1/items?key=secret",
        vec![(503, Some("2")), (200, None)],
    ));

    assert_eq!(status, StatusCode::OK);
    assert_eq!(at.len(), 2);
    let waits = waits(&seen);
    assert_eq!(waits.len(), 1, "{seen:?}");
    let wait = waits[0];
    assert_eq!(wait.label("source"), Some("retry_after"));
    assert_eq!(wait.label("server.address"), Some("api.test"));
    assert_eq!(wait.label("server.port"), Some("8443"));
    assert_eq!(wait.labels.len(), 3, "{:?}", wait.labels);
    let values = wait.values();
    assert_eq!(values.len(), 1);
    // 2 s spread up by at most 10 %: half of that with this jitter.
    assert!((values[0] - 2.1).abs() < 1e-6, "{values:?}");
    // The recorded wait is the one the server saw between the attempts.
    let gap = (at[1] - at[0]).as_secs_f64();
    assert!((gap - values[0]).abs() < 1e-3, "{gap} vs {values:?}");
}

#[test]
fn a_503_without_retry_after_records_the_backoff() {
    let policy = RetryPolicy::builder()
        .base_delay(Duration::from_millis(100))
        .jitter(BackoffJitter::None);
    let ((status, at), seen) = recorded(call(
        policy,
        Method::GET,
        "http://api.test/v1/items",
        vec![(503, None), (503, None), (200, None)],
    ));

    assert_eq!(status, StatusCode::OK);
    assert_eq!(at.len(), 3);
    let waits = waits(&seen);
    assert_eq!(waits.len(), 1, "one series: {seen:?}");
    let wait = waits[0];
    assert_eq!(wait.label("source"), Some("backoff"));
    assert_eq!(wait.label("server.address"), Some("api.test"));
    assert_eq!(wait.label("server.port"), Some("80"));
    assert_eq!(wait.values(), [0.1, 0.2]);
}

#[test]
fn a_retry_after_shorter_than_the_backoff_is_recorded_as_backoff() {
    let policy = RetryPolicy::builder()
        .base_delay(Duration::from_secs(3))
        .jitter(BackoffJitter::None);
    let ((status, _), seen) = recorded(call(
        policy,
        Method::GET,
        "https://api.test/",
        vec![(429, Some("1")), (200, None)],
    ));

    assert_eq!(status, StatusCode::OK);
    let waits = waits(&seen);
    assert_eq!(waits.len(), 1, "{seen:?}");
    assert_eq!(waits[0].label("source"), Some("backoff"));
    assert_eq!(waits[0].label("server.port"), Some("443"));
    assert_eq!(waits[0].values(), [3.0]);
}

#[test]
fn a_retry_refused_or_not_needed_records_no_wait() {
    // A POST is not sent again; a Retry-After past the maximum is not
    // waited for; a 200 needs no retry.
    let cases = [
        (Method::POST, vec![(503, None), (200, None)], 1),
        (Method::GET, vec![(503, Some("3600")), (200, None)], 1),
        (Method::GET, vec![(200, None)], 1),
    ];
    for (method, replies, arrivals) in cases {
        let ((_, at), seen) = recorded(call(
            RetryPolicy::builder(),
            method.clone(),
            "http://api.test/",
            replies,
        ));
        assert_eq!(at.len(), arrivals, "{method}");
        assert!(waits(&seen).is_empty(), "{method}: {seen:?}");
    }
}
