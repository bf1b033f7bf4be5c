//! The metrics of the cargo feature `metrics`, read back from an in-memory
//! recorder (`metrics-util`'s `DebuggingRecorder`, installed for this thread
//! only) while the layers run on a current-thread runtime with paused time.
//! Each test checks that a metric moves when its event happens, with the
//! value and labels the crate docs give, and stays put otherwise.

#![cfg(feature = "metrics")]
// Test helpers outside #[test] functions may fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use parapet_core::{BoxError, Deadline, Jitter};
use parapet_ratelimit::metric_names as names;
use parapet_ratelimit::{
    ConcurrencyLimitLayer, ConcurrencyLimited, Quota, RateLimitLayer, RateLimited, ThrottleLayer,
    Throttled,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// What the recorder holds after a run.
struct Recorded(Vec<(CompositeKey, DebugValue)>);

impl Recorded {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        let mut want: Vec<(&str, &str)> = labels.to_vec();
        want.sort_unstable();
        self.0.iter().filter_map(move |(key, value)| {
            let mut have: Vec<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            have.sort_unstable();
            (key.key().name() == name && have == want).then_some(value)
        })
    }

    /// The counter `name` with exactly these labels (0 when never touched).
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The values recorded in histogram `name` with exactly these labels.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .flat_map(|v| match v {
                DebugValue::Histogram(values) => values.iter().map(|f| f.0).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    /// Every metric name touched, with its kind, sorted.
    fn names(&self) -> Vec<(String, MetricKind)> {
        let mut names: Vec<_> = self
            .0
            .iter()
            .map(|(k, _)| (k.key().name().to_owned(), k.kind()))
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        names.dedup();
        names
    }

    /// No label value anywhere names a path, a query or userinfo.
    fn assert_no_path_in_labels(&self) {
        for (key, _) in &self.0 {
            for label in key.key().labels() {
                let v = label.value();
                assert!(
                    !v.contains('/') && !v.contains('?') && !v.contains('@'),
                    "{}: label {}={v}",
                    key.key().name(),
                    label.key()
                );
            }
        }
    }
}

/// Runs `fut` on a current-thread runtime with paused time, with a
/// debugging recorder installed for this thread; returns its output and
/// what was recorded.
fn run<F: Future>(fut: F) -> (F::Output, Recorded) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || rt.block_on(fut));
    let recorded = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    (out, Recorded(recorded))
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

fn reply(status: u16, headers: &[(&str, &str)]) -> Response<()> {
    let mut res = Response::builder().status(status);
    for (k, v) in headers {
        res = res.header(*k, *v);
    }
    res.body(()).unwrap()
}

fn n32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn assert_close(values: &[f64], expected: &[f64]) {
    assert_eq!(values.len(), expected.len(), "{values:?} vs {expected:?}");
    for (v, e) in values.iter().zip(expected) {
        assert!((v - e).abs() < 0.002, "{values:?} vs {expected:?}");
    }
}

const API_443: [(&str, &str); 2] = [
    ("server.address", "api.example.com"),
    ("server.port", "443"),
];

/// A server that answers its first call with `first`, every later one 200.
fn first_then_ok(
    first: Response<()>,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    let calls = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(std::sync::Mutex::new(Some(first)));
    service_fn(move |_req: Request<()>| {
        let res = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            first.lock().unwrap().take().unwrap()
        } else {
            reply(200, &[])
        };
        async move { Ok::<_, BoxError>(res) }
    })
}

#[test]
fn the_names_are_the_documented_ones() {
    assert_eq!(names::THROTTLE_CLOSURES, "parapet.client.throttle.closures");
    assert_eq!(names::THROTTLE_HELD, "parapet.client.throttle.held");
    assert_eq!(names::THROTTLE_WAIT, "parapet.client.throttle.wait");
    assert_eq!(
        names::THROTTLE_REJECTIONS,
        "parapet.client.throttle.rejections"
    );
    assert_eq!(names::RATE_LIMIT_WAIT, "parapet.client.rate_limit.wait");
    assert_eq!(
        names::RATE_LIMIT_REJECTIONS,
        "parapet.client.rate_limit.rejections"
    );
    assert_eq!(names::CONCURRENCY_QUEUE, "parapet.client.concurrency.queue");
    assert_eq!(
        names::CONCURRENCY_REJECTIONS,
        "parapet.client.concurrency.rejections"
    );
}

#[test]
fn calls_that_meet_no_limit_record_nothing() {
    let ((), recorded) = run(async {
        let svc = ServiceBuilder::new()
            .layer(ThrottleLayer::new())
            .layer(RateLimitLayer::per_authority(Quota::per_second(n32(10))))
            .layer(ConcurrencyLimitLayer::new(NonZeroUsize::MIN))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, BoxError>(Response::new(Full::new(Bytes::from("{}"))))
            });
        for _ in 0..5 {
            let res = svc
                .clone()
                .oneshot(get("https://api.example.com/v1"))
                .await
                .unwrap();
            res.into_body().collect().await.unwrap();
        }
    });
    assert_eq!(recorded.names(), []);
}

#[test]
fn a_429_with_retry_after_closes_the_gate_and_a_request_sent_while_closed_waits_the_rest() {
    let (elapsed, recorded) = run(async {
        // Arrange: the server's first answer is 429 Retry-After: 2.
        let svc = ThrottleLayer::new()
            .jitter(Jitter::fixed(0.0))
            .layer(first_then_ok(reply(429, &[("retry-after", "2")])));
        let start = Instant::now();
        // Act: the 429, then a request 500 ms later, then one once open.
        let res = svc
            .clone()
            .oneshot(get("https://user:pw@api.example.com/v1/items?page=2"))
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let res = svc
            .clone()
            .oneshot(get("https://api.example.com/v1/items"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let elapsed = start.elapsed();
        svc.oneshot(get("https://api.example.com/v1/items"))
            .await
            .unwrap();
        elapsed
    });
    assert_eq!(elapsed, Duration::from_secs(2));
    let closed = [API_443[0], API_443[1], ("source", "retry_after")];
    assert_eq!(recorded.counter(names::THROTTLE_CLOSURES, &closed), 1);
    assert_close(&recorded.histogram(names::THROTTLE_HELD, &closed), &[2.0]);
    // Only the request sent while closed waited: the 1.5 s left.
    assert_close(&recorded.histogram(names::THROTTLE_WAIT, &API_443), &[1.5]);
    assert_eq!(recorded.counter(names::THROTTLE_REJECTIONS, &API_443), 0);
    assert_eq!(
        recorded.names(),
        [
            (names::THROTTLE_CLOSURES.to_owned(), MetricKind::Counter),
            (names::THROTTLE_HELD.to_owned(), MetricKind::Histogram),
            (names::THROTTLE_WAIT.to_owned(), MetricKind::Histogram),
        ]
    );
    recorded.assert_no_path_in_labels();
}

#[test]
fn rate_limit_headers_close_the_gate_with_source_rate_limit() {
    let ((), recorded) = run(async {
        let svc = ThrottleLayer::new()
            .jitter(Jitter::fixed(0.0))
            .layer(first_then_ok(reply(
                200,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "3")],
            )));
        svc.clone()
            .oneshot(get("http://api.example.com:8081/search?q=x"))
            .await
            .unwrap();
        svc.oneshot(get("http://api.example.com:8081/search?q=y"))
            .await
            .unwrap();
    });
    let at = [
        ("server.address", "api.example.com"),
        ("server.port", "8081"),
    ];
    let closed = [at[0], at[1], ("source", "rate_limit")];
    assert_eq!(recorded.counter(names::THROTTLE_CLOSURES, &closed), 1);
    assert_close(&recorded.histogram(names::THROTTLE_HELD, &closed), &[3.0]);
    assert_close(&recorded.histogram(names::THROTTLE_WAIT, &at), &[3.0]);
}

#[test]
fn responses_without_a_wait_close_nothing() {
    let ((), recorded) = run(async {
        let svc = ThrottleLayer::new().layer(first_then_ok(reply(
            429,
            &[("x-ratelimit-remaining", "50"), ("x-ratelimit-reset", "3")],
        )));
        svc.clone()
            .oneshot(get("https://api.example.com/"))
            .await
            .unwrap();
        svc.oneshot(get("https://api.example.com/")).await.unwrap();
    });
    assert_eq!(recorded.names(), []);
}

#[test]
fn throttle_rejections_count_reject_mode_and_a_gate_opening_past_max_wait() {
    let (errors, recorded) = run(async {
        let layer = ThrottleLayer::new().jitter(Jitter::fixed(0.0));
        let svc = layer
            .clone()
            .layer(first_then_ok(reply(429, &[("retry-after", "2")])));
        svc.oneshot(get("https://api.example.com/")).await.unwrap();

        // Reject mode, and a wait past max_wait: both fail at once.
        let rejecting = layer.clone().reject().layer(first_then_ok(reply(200, &[])));
        let bounded = layer
            .clone()
            .max_wait(Duration::from_secs(1))
            .layer(first_then_ok(reply(200, &[])));
        let start = Instant::now();
        let a = rejecting.oneshot(get("https://api.example.com/")).await;
        let b = bounded.oneshot(get("https://api.example.com/")).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        [a.unwrap_err(), b.unwrap_err()]
    });
    assert!(errors.iter().all(|e| e.is::<Throttled>()));
    assert_eq!(recorded.counter(names::THROTTLE_REJECTIONS, &API_443), 2);
    assert_eq!(recorded.histogram(names::THROTTLE_WAIT, &API_443), []);
}

#[test]
fn a_waiter_failed_when_the_gate_closes_again_counts_a_rejection() {
    let (result, recorded) = run(async {
        // The first call is slow and its answer (at 500 ms) closes the gate
        // until 2.5 s; the second closes it at once until 1 s.
        let calls = Arc::new(AtomicUsize::new(0));
        let server = service_fn(move |_req: Request<()>| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let res = match call {
                    0 => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        reply(429, &[("retry-after", "2")])
                    }
                    1 => reply(429, &[("retry-after", "1")]),
                    _ => reply(200, &[]),
                };
                Ok::<_, BoxError>(res)
            }
        });
        let layer = ThrottleLayer::new().jitter(Jitter::fixed(0.0));
        let svc = layer.clone().layer(server.clone());
        let slow = tokio::spawn(svc.clone().oneshot(get("https://api.example.com/")));
        tokio::task::yield_now().await;
        svc.oneshot(get("https://api.example.com/")).await.unwrap();
        // Waits at the gate (until 1 s, within its 1.5 s), and finds it
        // closed until 2.5 s when it checks again.
        let waiter = layer
            .max_wait(Duration::from_millis(1500))
            .layer(server)
            .oneshot(get("https://api.example.com/"));
        let result = waiter.await;
        assert_eq!(slow.await.unwrap().unwrap().status(), 429);
        result
    });
    assert!(result.unwrap_err().is::<Throttled>());
    let closed = [API_443[0], API_443[1], ("source", "retry_after")];
    assert_eq!(recorded.counter(names::THROTTLE_CLOSURES, &closed), 2);
    assert_close(
        &recorded.histogram(names::THROTTLE_HELD, &closed),
        &[1.0, 2.0],
    );
    assert_eq!(recorded.counter(names::THROTTLE_REJECTIONS, &API_443), 1);
    assert_eq!(recorded.histogram(names::THROTTLE_WAIT, &API_443), []);
}

fn ok_server()
-> impl Service<Request<()>, Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static
{
    service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(()) })
}

#[test]
fn a_second_request_under_one_per_second_records_its_wait() {
    let ((), recorded) = run(async {
        let svc = RateLimitLayer::new(Quota::per_second(n32(1))).layer(ok_server());
        for _ in 0..2 {
            svc.clone()
                .oneshot(get("https://api.example.com/v1/items?page=3"))
                .await
                .unwrap();
        }
    });
    assert_close(
        &recorded.histogram(names::RATE_LIMIT_WAIT, &API_443),
        &[1.0],
    );
    assert_eq!(recorded.counter(names::RATE_LIMIT_REJECTIONS, &API_443), 0);
    assert_eq!(
        recorded.names(),
        [(names::RATE_LIMIT_WAIT.to_owned(), MetricKind::Histogram)]
    );
    recorded.assert_no_path_in_labels();
}

#[test]
fn rate_limit_rejections_count_reject_mode_and_a_turn_past_max_wait() {
    let (errors, recorded) = run(async {
        let quota = Quota::per_second(n32(1));
        let rejecting = RateLimitLayer::new(quota).reject().layer(ok_server());
        rejecting
            .clone()
            .oneshot(get("https://api.example.com/"))
            .await
            .unwrap();
        let a = rejecting.oneshot(get("https://api.example.com/")).await;

        let bounded = RateLimitLayer::new(quota)
            .max_wait(Duration::from_millis(500))
            .layer(ok_server());
        bounded
            .clone()
            .oneshot(get("https://api.example.com/"))
            .await
            .unwrap();
        let b = bounded.oneshot(get("https://api.example.com/")).await;
        [a.unwrap_err(), b.unwrap_err()]
    });
    assert!(errors.iter().all(|e| e.is::<RateLimited>()));
    assert_eq!(recorded.counter(names::RATE_LIMIT_REJECTIONS, &API_443), 2);
    assert_eq!(recorded.histogram(names::RATE_LIMIT_WAIT, &API_443), []);
}

#[test]
fn a_queued_request_whose_turn_passes_its_bound_counts_a_rejection() {
    let (result, recorded) = run(async {
        let mut svc = RateLimitLayer::new(Quota::per_second(n32(1))).layer(ok_server());
        svc.ready().await.unwrap();
        svc.call(get("https://api.example.com/")).await.unwrap();
        // Queued first, and never polled: it holds the head of the queue.
        svc.ready().await.unwrap();
        let stuck = svc.call(get("https://api.example.com/"));
        // Its turn (2 s) is within its bound (2.5 s) when it arrives, but the
        // call ahead never goes.
        svc.ready().await.unwrap();
        let mut req = get("https://api.example.com/");
        Deadline::after(Duration::from_millis(2500)).apply(req.extensions_mut());
        let result = svc.call(req).await;
        drop(stuck);
        result
    });
    assert!(result.unwrap_err().is::<RateLimited>());
    assert_eq!(recorded.counter(names::RATE_LIMIT_REJECTIONS, &API_443), 1);
    assert_eq!(recorded.histogram(names::RATE_LIMIT_WAIT, &API_443), []);
}

/// A server whose response bodies hold their concurrency slot until read.
fn body_server()
-> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from("{}"))))
    })
}

#[test]
fn a_second_request_queues_for_the_one_permit_until_the_first_body_ends() {
    let ((), recorded) = run(async {
        let svc = ConcurrencyLimitLayer::new(NonZeroUsize::MIN).layer(body_server());
        let first = svc
            .clone()
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap();
        let second = tokio::spawn(svc.oneshot(get("https://api.example.com/b")));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Reading the first body to its end frees the permit.
        first.into_body().collect().await.unwrap();
        let second = second.await.unwrap().unwrap();
        second.into_body().collect().await.unwrap();
    });
    assert_close(
        &recorded.histogram(names::CONCURRENCY_QUEUE, &API_443),
        &[0.3],
    );
    assert_eq!(recorded.counter(names::CONCURRENCY_REJECTIONS, &API_443), 0);
    assert_eq!(
        recorded.names(),
        [(names::CONCURRENCY_QUEUE.to_owned(), MetricKind::Histogram)]
    );
}

#[test]
fn concurrency_rejections_count_reject_mode_and_a_wait_past_max_wait() {
    let (errors, recorded) = run(async {
        let rejecting = ConcurrencyLimitLayer::new(NonZeroUsize::MIN)
            .reject()
            .layer(body_server());
        let held = rejecting
            .clone()
            .oneshot(get("https://api.example.com/"))
            .await
            .unwrap();
        let a = rejecting.oneshot(get("https://api.example.com/")).await;
        drop(held);

        let bounded = ConcurrencyLimitLayer::per_authority(NonZeroUsize::MIN)
            .max_wait(Duration::from_millis(200))
            .layer(body_server());
        let held = bounded
            .clone()
            .oneshot(get("https://api.example.com/"))
            .await
            .unwrap();
        let start = Instant::now();
        let b = bounded.oneshot(get("https://api.example.com/")).await;
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        drop(held);
        [a.unwrap_err(), b.unwrap_err()]
    });
    assert!(errors.iter().all(|e| e.is::<ConcurrencyLimited>()));
    assert_eq!(recorded.counter(names::CONCURRENCY_REJECTIONS, &API_443), 2);
    assert_eq!(recorded.histogram(names::CONCURRENCY_QUEUE, &API_443), []);
}
