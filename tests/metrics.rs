//! `ClientBuilder::metrics` (feature `metrics`): the metrics of the table
//! in `parapet::metrics`, recorded by metrics-util's `DebuggingRecorder`
//! for calls to a loopback testkit server through the whole stack.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::panic)] // helpers outside #[test] fns

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
