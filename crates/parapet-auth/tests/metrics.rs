//! The feature `metrics`: token fetches and re-auths after a 401 as
//! metrics-util's `DebuggingRecorder` sees them, for calls through the
//! layer to in-process stand-ins (an API, a token provider, a token
//! endpoint), with paused time.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)] // helpers outside #[test] fns

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use parapet_auth::metric_names::{REAUTHS, REAUTHS_REFUSED, TOKEN_FETCH_DURATION, TOKEN_FETCHES};
use parapet_auth::{
    AuthLayer, ClientCredentialsGrant, ProvideToken, Token, TokenCache, TokenEndpoint, TokenError,
    provider_fn,
};
use parapet_core::{BoxError, Jitter, ReplayBody};
use tower::{Layer, Service, ServiceExt, service_fn};

/// One recorded metric: name, labels, value.
#[derive(Debug)]
struct Seen {
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

impl Seen {
    fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(sk, sv)| sk == k && sv == v))
    }
}

/// Runs `fut` on a current-thread runtime with paused time and a fresh
/// recorder as this thread's (tests in parallel do not see each other's
/// metrics; the cache's fetch task runs on this thread too).
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

/// The counter `name` with (at least) these labels; 0 when never moved.
fn count(seen: &[Seen], name: &str, labels: &[(&str, &str)]) -> u64 {
    seen.iter()
        .filter(|s| s.name == name && s.has(labels))
        .map(|s| match &s.value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// Every value of the histogram `name` with (at least) these labels.
fn values(seen: &[Seen], name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    seen.iter()
        .filter(|s| s.name == name && s.has(labels))
        .flat_map(|s| match &s.value {
            DebugValue::Histogram(v) => v.iter().map(|f| f.into_inner()).collect::<Vec<_>>(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .collect()
}

/// Every series of `name`, as label lists.
fn series(seen: &[Seen], name: &str) -> Vec<Vec<(String, String)>> {
    seen.iter()
        .filter(|s| s.name == name)
        .map(|s| s.labels.clone())
        .collect()
}

/// Issues token-0, token-1, ... after 50 ms each, valid for `life`; the
/// fetches in `failing` fail instead, for good.
fn provider(life: Duration, failing: &'static [usize]) -> (impl ProvideToken, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n);
    let p = provider_fn(move || {
        let i = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if failing.contains(&i) {
                return Err(TokenError::permanent("the client is unknown"));
            }
            Ok(Token::new(format!("token-{i}")).with_expires_in(life))
        }
    });
    (p, n)
}

const HOUR: Duration = Duration::from_secs(3600);

fn cache(p: impl ProvideToken) -> TokenCache {
    TokenCache::builder(p).jitter(Jitter::fixed(0.0)).build()
}

/// An API stand-in that answers 401 to the tokens `revoked` (all of them
/// with `"*"`), else 200; it reads the whole request body first.
fn api(
    revoked: &'static [&'static str],
    hits: &Arc<AtomicUsize>,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let hits = Arc::clone(hits);
    service_fn(move |req: Request<ReplayBody>| {
        hits.fetch_add(1, Ordering::SeqCst);
        async move {
            let auth = req.headers().get(AUTHORIZATION).cloned();
            req.into_body().collect().await?;
            let auth = auth.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
            let refused = revoked
                .iter()
                .any(|r| *r == "*" || auth == format!("Bearer {r}"));
            let status = if refused { 401 } else { 200 };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    })
}

async fn send<S, B>(svc: &mut S, req: Request<B>) -> StatusCode
where
    S: Service<Request<B>, Response = Response<String>, Error = BoxError>,
{
    ServiceExt::<Request<B>>::ready(svc)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap()
        .status()
}

fn get(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

#[test]
fn a_first_call_records_one_initial_fetch_that_succeeded() {
    let ((first, second), seen) = recorded(async {
        let (p, _) = provider(HOUR, &[]);
        let hits = Arc::new(AtomicUsize::new(0));
        let mut svc = AuthLayer::token_cache(cache(p)).layer(api(&[], &hits));
        let first = send(&mut svc, get("https://api.test/v1/orders")).await;
        let second = send(&mut svc, get("https://api.test/v1/orders")).await;
        (first, second)
    });

    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        series(&seen, TOKEN_FETCHES),
        [vec![
            ("kind".to_owned(), "initial".to_owned()),
            ("outcome".to_owned(), "ok".to_owned()),
        ]],
    );
    assert_eq!(
        count(&seen, TOKEN_FETCHES, &[]),
        1,
        "the second call used the cached token"
    );
    // The provider took 50 ms (paused time: exactly).
    assert_eq!(
        values(&seen, TOKEN_FETCH_DURATION, &[("outcome", "ok")]),
        [0.05]
    );
    assert_eq!(count(&seen, REAUTHS, &[]), 0);
    assert_eq!(count(&seen, REAUTHS_REFUSED, &[]), 0);
}

#[test]
fn a_token_endpoint_answering_junk_records_a_failed_fetch() {
    let (err, seen) = recorded(async {
        let endpoint = service_fn(|_req: Request<Bytes>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(200)
                    .header("content-type", "text/html")
                    .body(http_body_util::Full::new(Bytes::from(
                        "<html>gateway</html>",
                    )))
                    .unwrap(),
            )
        });
        let endpoint = TokenEndpoint::new(endpoint, "https://auth.test/token").unwrap();
        let grant = ClientCredentialsGrant::new(endpoint, "id", "secret").unwrap();
        cache(grant).token().await.unwrap_err()
    });

    assert!(err.is_malformed(), "{err}");
    assert_eq!(
        count(
            &seen,
            TOKEN_FETCHES,
            &[("kind", "initial"), ("outcome", "error")]
        ),
        1
    );
    assert_eq!(count(&seen, TOKEN_FETCHES, &[("outcome", "ok")]), 0);
    assert_eq!(
        values(&seen, TOKEN_FETCH_DURATION, &[("outcome", "error")]).len(),
        1
    );
}

#[test]
fn a_token_the_cache_cannot_use_is_a_failed_fetch() {
    let (err, seen) = recorded(async {
        let p = provider_fn(|| async { Ok::<_, TokenError>(Token::new("line\nbreak")) });
        cache(p).token().await.unwrap_err()
    });

    assert!(err.is_malformed(), "{err}");
    assert_eq!(
        count(
            &seen,
            TOKEN_FETCHES,
            &[("kind", "initial"), ("outcome", "error")]
        ),
        1
    );
}

#[test]
fn a_401_then_200_records_one_reauth_and_a_reauth_fetch() {
    let ((status, hits), seen) = recorded(async {
        let (p, _) = provider(HOUR, &[]);
        let hits = Arc::new(AtomicUsize::new(0));
        let svc = AuthLayer::token_cache(cache(p)).layer(api(&["token-0"], &hits));
        let status = svc
            .oneshot(get("https://user:pw@api.test:8443/v1/orders?key=secret"))
            .await
            .unwrap()
            .status();
        (status, hits.load(Ordering::SeqCst))
    });

    assert_eq!(status, StatusCode::OK);
    assert_eq!(hits, 2);
    assert_eq!(
        series(&seen, REAUTHS),
        [vec![
            ("server.address".to_owned(), "api.test".to_owned()),
            ("server.port".to_owned(), "8443".to_owned()),
        ]],
    );
    assert_eq!(count(&seen, REAUTHS, &[]), 1);
    assert_eq!(
        count(
            &seen,
            TOKEN_FETCHES,
            &[("kind", "initial"), ("outcome", "ok")]
        ),
        1
    );
    assert_eq!(
        count(
            &seen,
            TOKEN_FETCHES,
            &[("kind", "reauth"), ("outcome", "ok")]
        ),
        1
    );
    assert_eq!(count(&seen, TOKEN_FETCHES, &[]), 2);
    assert_eq!(count(&seen, REAUTHS_REFUSED, &[]), 0);
}

#[test]
fn a_401_to_the_fresh_token_too_is_refused_then_held_by_the_cool_down() {
    let (statuses, seen) = recorded(async {
        let (p, _) = provider(HOUR, &[]);
        let hits = Arc::new(AtomicUsize::new(0));
        let mut svc = AuthLayer::token_cache(cache(p)).layer(api(&["*"], &hits));
        let first = send(&mut svc, get("http://api.test/")).await;
        // Within the re-auth cool-down of the token fetched after the 401.
        let second = send(&mut svc, get("http://api.test/")).await;
        (first, second, hits.load(Ordering::SeqCst))
    });

    assert_eq!(
        statuses,
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, 3)
    );
    assert_eq!(
        count(
            &seen,
            REAUTHS,
            &[("server.address", "api.test"), ("server.port", "80")]
        ),
        1
    );
    assert_eq!(
        count(&seen, REAUTHS_REFUSED, &[("reason", "already_reauthed")]),
        1
    );
    assert_eq!(
        count(&seen, REAUTHS_REFUSED, &[("reason", "reauth_cooldown")]),
        1
    );
    assert_eq!(count(&seen, REAUTHS_REFUSED, &[]), 2);
    assert_eq!(
        count(&seen, TOKEN_FETCHES, &[]),
        2,
        "no fetch in the cool-down"
    );
}

#[test]
fn a_401_with_no_fresh_token_is_refused_and_its_fetch_failed() {
    let (status, seen) = recorded(async {
        let (p, _) = provider(HOUR, &[1]);
        let hits = Arc::new(AtomicUsize::new(0));
        let svc = AuthLayer::token_cache(cache(p)).layer(api(&["token-0"], &hits));
        svc.oneshot(get("http://api.test/")).await.unwrap().status()
    });

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(count(&seen, REAUTHS, &[]), 0);
    assert_eq!(count(&seen, REAUTHS_REFUSED, &[("reason", "no_token")]), 1);
    assert_eq!(
        count(
            &seen,
            TOKEN_FETCHES,
            &[("kind", "reauth"), ("outcome", "error")]
        ),
        1
    );
}

/// A request body in two frames, so that a replay comes from the
/// recording (and the replay cap applies).
struct TwoFrames(VecDeque<Bytes>);

impl http_body::Body for TwoFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

#[test]
fn a_401_to_a_body_past_the_replay_cap_is_refused() {
    let (status, seen) = recorded(async {
        let (p, _) = provider(HOUR, &[]);
        let hits = Arc::new(AtomicUsize::new(0));
        let svc = AuthLayer::token_cache(cache(p))
            .replay_cap(4)
            .layer(api(&["token-0"], &hits));
        let body = TwoFrames(VecDeque::from([Bytes::from("12345"), Bytes::from("67890")]));
        let req = Request::post("http://api.test/").body(body).unwrap();
        svc.oneshot(req).await.unwrap().status()
    });

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(count(&seen, REAUTHS, &[]), 0);
    assert_eq!(
        count(&seen, REAUTHS_REFUSED, &[("reason", "body_not_replayable")]),
        1
    );
    assert_eq!(
        count(&seen, TOKEN_FETCHES, &[]),
        1,
        "no fetch for a re-send"
    );
}

#[test]
fn refreshes_and_invalidations_are_told_apart() {
    let ((), seen) = recorded(async {
        let (p, fetched) = provider(Duration::from_secs(60), &[]);
        let cache = cache(p);
        let first = cache.token().await.unwrap();
        // In the refresh margin (30 s before expiry): a background refresh.
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(
            cache.token().await.unwrap().generation(),
            first.generation()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let refreshed = cache.token().await.unwrap();
        assert_eq!(fetched.load(Ordering::SeqCst), 2);
        // The application says the server refused it.
        assert!(cache.invalidate(&refreshed));
        cache.token().await.unwrap();
        // Expired, never refreshed in time: a refresh too.
        tokio::time::sleep(Duration::from_secs(120)).await;
        cache.token().await.unwrap();
        assert_eq!(fetched.load(Ordering::SeqCst), 4);
    });

    assert_eq!(count(&seen, TOKEN_FETCHES, &[("kind", "initial")]), 1);
    assert_eq!(count(&seen, TOKEN_FETCHES, &[("kind", "refresh")]), 2);
    assert_eq!(count(&seen, TOKEN_FETCHES, &[("kind", "reauth")]), 1);
    assert_eq!(count(&seen, TOKEN_FETCHES, &[("outcome", "error")]), 0);
    assert_eq!(
        values(&seen, TOKEN_FETCH_DURATION, &[("outcome", "ok")]),
        [0.05; 4]
    );
}
