//! Assertions on what wiremock received, and arrival times.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::wiremock::{Request, Respond, ResponseTemplate};
use tokio::time::Instant;

/// Asserts that `requests` (the attempts of one call: filter
/// `received_requests()` down to them) all carry the same `x-request-id`,
/// and returns it.
///
/// # Panics
///
/// When `requests` is empty, when one has no `x-request-id` (or one that is
/// not visible ASCII), or when two differ; the message lists the ids seen.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::wiremock::assert_one_request_id;
/// use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
///
/// let upstream = MockServer::start().await;
/// Mock::given(any()).respond_with(ResponseTemplate::new(503)).mount(&upstream).await;
/// # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
/// #     .build_http::<String>();
/// for _ in 0..2 {
///     let attempt = http::Request::get(upstream.uri()).header("x-request-id", "r-1").body(String::new()).unwrap();
///     http.request(attempt).await.unwrap();
/// }
///
/// let received = upstream.received_requests().await.unwrap();
/// assert_eq!(assert_one_request_id(&received), "r-1");
/// # }
/// ```
#[track_caller]
pub fn assert_one_request_id<'a>(requests: impl IntoIterator<Item = &'a Request>) -> String {
    let ids: Vec<Option<&str>> = requests
        .into_iter()
        .map(|r| r.headers.get("x-request-id").and_then(|v| v.to_str().ok()))
        .collect();
    let first = ids.first().copied().flatten();
    assert!(
        !ids.is_empty() && first.is_some() && ids.iter().all(|id| *id == first),
        "expected one x-request-id on every attempt, saw {ids:?}"
    );
    first.unwrap_or_default().to_owned()
}

/// Asserts that exactly one request with `method` arrived at `path`
/// (the URL's path, without the query), for "a POST is sent once".
///
/// # Panics
///
/// When none or more than one arrived; the message says how many.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::wiremock::assert_arrived_once;
/// use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
///
/// let upstream = MockServer::start().await;
/// Mock::given(any()).respond_with(ResponseTemplate::new(503)).mount(&upstream).await;
/// # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
/// #     .build_http::<String>();
/// let post = http::Request::post(format!("{}/orders?x=1", upstream.uri())).body("{}".to_owned()).unwrap();
/// http.request(post).await.unwrap();
///
/// assert_arrived_once(&upstream.received_requests().await.unwrap(), "POST", "/orders");
/// # }
/// ```
#[track_caller]
pub fn assert_arrived_once<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    method: &str,
    path: &str,
) {
    let n = requests
        .into_iter()
        .filter(|r| r.method.as_str().eq_ignore_ascii_case(method) && r.url.path() == path)
        .count();
    assert!(n == 1, "expected one {method} {path}, {n} arrived");
}

/// Asserts that exactly one request carrying `Idempotency-Key: key`
/// arrived: the operation it names reached the server once.
///
/// # Panics
///
/// When none or more than one arrived; the message says how many.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::wiremock::assert_key_arrived_once;
/// use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
///
/// let upstream = MockServer::start().await;
/// Mock::given(any()).respond_with(ResponseTemplate::new(201)).mount(&upstream).await;
/// # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
/// #     .build_http::<String>();
/// for key in ["k-1", "k-2"] {
///     let post = http::Request::post(upstream.uri()).header("idempotency-key", key).body(String::new()).unwrap();
///     http.request(post).await.unwrap();
/// }
///
/// assert_key_arrived_once(&upstream.received_requests().await.unwrap(), "k-2");
/// # }
/// ```
#[track_caller]
pub fn assert_key_arrived_once<'a>(requests: impl IntoIterator<Item = &'a Request>, key: &str) {
    let n = requests
        .into_iter()
        .filter(|r| {
            r.headers
                .get("idempotency-key")
                .is_some_and(|v| v.as_bytes() == key.as_bytes())
        })
        .count();
    assert!(
        n == 1,
        "expected one request with idempotency-key {key:?}, {n} arrived"
    );
}

/// When requests arrived, for assertions on spacing (backoff,
/// `Retry-After`, rate limits).
///
/// wiremock's [`Request`] has no arrival time, so this records one: wrap a
/// responder with [`record`](Self::record), and each request it answers is
/// stamped with `tokio::time::Instant::now()` when wiremock asks the
/// responder for its answer: after the request (head and body) was read,
/// before any `set_delay`. Clones share one log.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use parapet_testkit::wiremock::ArrivalTimes;
/// use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};
///
/// let upstream = MockServer::start().await;
/// let times = ArrivalTimes::new();
/// Mock::given(any()).respond_with(times.record(ResponseTemplate::new(200))).mount(&upstream).await;
/// # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
/// #     .build_http::<String>();
/// let url: http::Uri = upstream.uri().parse().unwrap();
/// http.get(url.clone()).await.unwrap();
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// http.get(url).await.unwrap();
///
/// assert_eq!(times.len(), 2);
/// times.assert_spaced_at_least(Duration::from_millis(50));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ArrivalTimes {
    log: Arc<Mutex<Vec<Instant>>>,
}

impl ArrivalTimes {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `responder`, stamping each request it answers in this log.
    #[must_use]
    pub fn record<R: Respond>(&self, responder: R) -> Timed<R> {
        Timed {
            times: self.clone(),
            inner: responder,
        }
    }

    /// The arrival times, in order.
    #[must_use]
    pub fn times(&self) -> Vec<Instant> {
        self.lock().clone()
    }

    /// How many arrivals were stamped.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none were.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The time between each arrival and the next.
    #[must_use]
    pub fn gaps(&self) -> Vec<Duration> {
        self.lock()
            .windows(2)
            .filter_map(|w| match w {
                [a, b] => Some(b.saturating_duration_since(*a)),
                _ => None,
            })
            .collect()
    }

    /// Asserts that every arrival came at least `min` after the one before.
    ///
    /// # Panics
    ///
    /// When two arrivals were closer; the message lists the gaps.
    #[track_caller]
    pub fn assert_spaced_at_least(&self, min: Duration) {
        let gaps = self.gaps();
        assert!(
            gaps.iter().all(|g| *g >= min),
            "expected arrivals at least {min:?} apart, the gaps were {gaps:?}"
        );
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Instant>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ArrivalTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrivalTimes")
            .field("arrivals", &self.len())
            .finish()
    }
}

/// A responder that stamps each request in an [`ArrivalTimes`], then
/// answers as the responder it wraps (see [`ArrivalTimes::record`]).
#[derive(Clone, Debug)]
pub struct Timed<R> {
    times: ArrivalTimes,
    inner: R,
}

impl<R: Respond> Respond for Timed<R> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.times.lock().push(Instant::now());
        self.inner.respond(request)
    }
}
