//! Each metric moving as the crate's table says, recorded by metrics-util's
//! `DebuggingRecorder` (a real recorder) for calls to a loopback testkit
//! server through hyper-util, with parapet-retry between the layers.

#![allow(clippy::unwrap_used, clippy::panic)] // helpers outside #[test] fns

use std::future::Future;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use parapet_core::ReplayBody;
use parapet_metrics::{AttemptMetricsLayer, MetricsLayer, names};
use parapet_retry::{BackoffJitter, NotRetried, NotRetriedReason, RetryLayer, RetryPolicy};
use parapet_testkit::{Reply, Server};
use tower::{Service, ServiceBuilder, ServiceExt};

/// One recorded metric (a snapshot holds what changed since the one
/// before): name, labels (sorted), value.
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

/// Runs `f` on a current-thread runtime with a fresh `DebuggingRecorder`
/// as this thread's recorder (so tests running in parallel do not see
/// each other's metrics), then returns its output and what was recorded.
fn recorded<F, Fut>(f: F) -> (Fut::Output, Vec<Seen>)
where
    F: FnOnce(Snap) -> Fut,
    Fut: Future,
{
    let recorder = DebuggingRecorder::new();
    let snap = Snap::from(recorder.snapshotter());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || rt.block_on(f(snap.clone())));
    (out, snap.take())
}

#[derive(Clone)]
struct Snap(std::sync::Arc<metrics_util::debugging::Snapshotter>);

impl Snap {
    fn take(&self) -> Vec<Seen> {
        self.0
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _unit, _desc, value)| {
                let (_kind, key) = key.into_parts();
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                Seen {
                    name: key.name().to_owned(),
                    labels,
                    value,
                }
            })
            .collect()
    }

    fn active(&self) -> f64 {
        active(&self.take())
    }
}

impl From<metrics_util::debugging::Snapshotter> for Snap {
    fn from(s: metrics_util::debugging::Snapshotter) -> Self {
        Self(std::sync::Arc::new(s))
    }
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

fn counter(s: &Seen) -> u64 {
    match &s.value {
        DebugValue::Counter(n) => *n,
        other => panic!("{} is not a counter: {other:?}", s.name),
    }
}

/// The sum of `http.client.active_requests` over its label sets.
fn active(seen: &[Seen]) -> f64 {
    named(seen, names::ACTIVE_REQUESTS)
        .iter()
        .map(|s| match &s.value {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("active requests is not a gauge: {other:?}"),
        })
        .sum()
}

type HttpClient = Client<HttpConnector, ReplayBody>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<ReplayBody> {
    Request::get(url).body(ReplayBody::empty()).unwrap()
}

fn refusal(ext: &http::Extensions) -> Option<&'static str> {
    NotRetried::get(ext).map(|n| match n.reason() {
        NotRetriedReason::NoAttemptsLeft => "no_attempts_left",
        NotRetriedReason::BudgetExhausted => "budget_exhausted",
        _ => "other",
    })
}

fn retry() -> RetryLayer {
    RetryLayer::new(
        RetryPolicy::builder()
            .base_delay(Duration::from_millis(5))
            .jitter(BackoffJitter::None)
            .build()
            .unwrap(),
    )
}

#[test]
fn a_200_get_moves_the_duration_once_with_the_otel_attributes() {
    let ((port, body), seen) = recorded(|_| async {
        let api = Server::start().await;
        api.on("/v1/users/42").reply(Reply::json("[1,2,3]"));
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(AttemptMetricsLayer::new())
            .service(client());
        let res = svc
            .oneshot(get(&api.url("/v1/users/42?token=s3cret")))
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (api.addr().port(), body)
    });
    assert_eq!(&body[..], b"[1,2,3]");
    let duration = named(&seen, names::REQUEST_DURATION);
    assert_eq!(duration.len(), 1, "{seen:#?}");
    let d = duration[0];
    assert_eq!(histogram(d).len(), 1);
    assert!(histogram(d)[0] > 0.0);
    let port = port.to_string();
    assert_eq!(
        d.labels,
        [
            ("http.request.method".into(), "GET".into()),
            ("http.response.status_code".into(), "200".into()),
            ("server.address".into(), "127.0.0.1".into()),
            ("server.port".into(), port),
        ]
    );
    // No path, no query anywhere.
    assert!(
        seen.iter()
            .flat_map(|s| &s.labels)
            .all(|(_, v)| !v.contains("users") && !v.contains("s3cret"))
    );
    let attempts = named(&seen, names::ATTEMPTS);
    assert_eq!(histogram(attempts[0]), [1.0]);
    assert_eq!(
        histogram(named(&seen, names::RESPONSE_BODY_SIZE)[0]),
        [7.0],
        "Content-Length of the answer"
    );
    assert!(named(&seen, names::REQUEST_BODY_SIZE).is_empty());
    assert!(named(&seen, names::RETRIES).is_empty());
    assert_eq!(histogram(named(&seen, names::ATTEMPT_DURATION)[0]).len(), 1);
    assert_eq!(active(&seen), 0.0);
}

#[test]
fn two_503s_then_200_record_three_attempts_and_two_retries_for_503() {
    let (arrived, seen) = recorded(|_| async {
        let api = Server::start().await;
        api.on("/flaky")
            .replies([Reply::status(503), Reply::status(503), Reply::ok()]);
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new().retry_refusal(refusal as parapet_metrics::RetryRefusalFn))
            .layer(retry())
            .layer(AttemptMetricsLayer::new())
            .service(client());
        let res = svc.oneshot(get(&api.url("/flaky"))).await.unwrap();
        assert_eq!(res.status(), 200);
        api.hits("/flaky")
    });
    assert_eq!(arrived, 3, "from the server's side");
    assert_eq!(histogram(named(&seen, names::ATTEMPTS)[0]), [3.0]);
    let retries = named(&seen, names::RETRIES);
    assert_eq!(retries.len(), 1, "{retries:#?}");
    assert_eq!(counter(retries[0]), 2);
    assert_eq!(retries[0].label("reason"), Some("503"));
    assert_eq!(retries[0].label("server.address"), Some("127.0.0.1"));
    let duration = named(&seen, names::REQUEST_DURATION);
    assert_eq!(duration.len(), 1, "one call");
    assert_eq!(duration[0].label("http.response.status_code"), Some("200"));
    assert_eq!(duration[0].label("error.type"), None);
    // Per attempt: two 503s (error.type 503) and a 200.
    let mut per_attempt: Vec<_> = named(&seen, names::ATTEMPT_DURATION)
        .iter()
        .map(|s| {
            (
                s.label("http.response.status_code").map(str::to_owned),
                s.label("error.type").map(str::to_owned),
                histogram(s).len(),
            )
        })
        .collect();
    per_attempt.sort();
    assert_eq!(
        per_attempt,
        [
            (Some("200".into()), None, 1),
            (Some("503".into()), Some("503".into()), 2)
        ]
    );
    assert!(named(&seen, names::RETRIES_REFUSED).is_empty());
    assert_eq!(active(&seen), 0.0);
}

#[test]
fn a_503_on_the_last_attempt_counts_a_refused_retry() {
    let (_, seen) = recorded(|_| async {
        let api = Server::start().await;
        api.on("/down").reply(Reply::status(503));
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new().retry_refusal(refusal as parapet_metrics::RetryRefusalFn))
            .layer(retry())
            .layer(AttemptMetricsLayer::new())
            .service(client());
        let res = svc.oneshot(get(&api.url("/down"))).await.unwrap();
        assert_eq!(res.status(), 503);
    });
    let refused = named(&seen, names::RETRIES_REFUSED);
    assert_eq!(refused.len(), 1, "{seen:#?}");
    assert_eq!(counter(refused[0]), 1);
    assert_eq!(refused[0].label("reason"), Some("no_attempts_left"));
    assert_eq!(counter(named(&seen, names::RETRIES)[0]), 2);
    assert_eq!(histogram(named(&seen, names::ATTEMPTS)[0]), [3.0]);
    let d = named(&seen, names::REQUEST_DURATION);
    assert_eq!(d[0].label("error.type"), Some("503"));
}

#[test]
fn a_refused_connection_sets_error_type_and_no_status() {
    let (err, seen) = recorded(|_| async {
        // A port nobody listens on: bound, then closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(AttemptMetricsLayer::new())
            .service(client());
        svc.oneshot(get(&format!("http://127.0.0.1:{port}/x")))
            .await
            .unwrap_err()
    });
    assert!(!err.to_string().is_empty());
    let duration = named(&seen, names::REQUEST_DURATION);
    assert_eq!(duration.len(), 1, "{seen:#?}");
    assert_eq!(duration[0].label("error.type"), Some("connection_refused"));
    assert_eq!(duration[0].label("http.response.status_code"), None);
    assert_eq!(
        histogram(named(&seen, names::ATTEMPTS)[0]),
        [1.0],
        "counted by the attempt layer"
    );
    assert!(named(&seen, names::RESPONSE_BODY_SIZE).is_empty());
    assert_eq!(active(&seen), 0.0);
}

#[test]
fn active_requests_go_back_to_zero_when_a_call_is_dropped() {
    let ((during, after), seen) = recorded(|snap| async move {
        let api = Server::start().await;
        api.on("/slow").reply(Reply::hang());
        let mut svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(AttemptMetricsLayer::new())
            .service(client());
        let call = ServiceExt::<Request<ReplayBody>>::ready(&mut svc)
            .await
            .unwrap()
            .call(get(&api.url("/slow")));
        let mut call = Box::pin(call);
        tokio::select! {
            _ = &mut call => panic!("the server never answers"),
            _ = api.wait_for_arrivals(1) => {}
        }
        let during = snap.active();
        drop(call);
        (during, snap.active())
    });
    // A DebuggingRecorder snapshot reports each gauge's change since the
    // previous snapshot.
    assert_eq!(during, 1.0, "in flight while the server holds it");
    assert_eq!(during + after, 0.0, "dropping the call ends it");
    assert!(
        named(&seen, names::REQUEST_DURATION).is_empty(),
        "a dropped call has no duration"
    );
}

#[test]
fn request_body_size_comes_from_content_length() {
    let (_, seen) = recorded(|_| async {
        let api = Server::start().await;
        api.on("/upload").reply(Reply::status(201));
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .service(client());
        let req = Request::post(api.url("/upload"))
            .header("content-length", "5")
            .body(ReplayBody::from(bytes::Bytes::from_static(b"hello")))
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 201);
    });
    let size = named(&seen, names::REQUEST_BODY_SIZE);
    assert_eq!(histogram(size[0]), [5.0]);
    assert_eq!(size[0].label("http.request.method"), Some("POST"));
    assert_eq!(size[0].label("http.response.status_code"), Some("201"));
}
