//! The layer against in-process stand-ins, with paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // helpers outside #[test] fns

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use parapet_auth::{AuthLayer, On401, Token, TokenCache, TokenError, provider_fn};
use parapet_core::{BoxError, Jitter, ReplayBody};
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the stand-in API saw: the credential header, the query and the body.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    auth: Option<String>,
    sensitive: bool,
    query: Option<String>,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An API stand-in: records what arrives, answers what `answer` says given
/// the `Authorization` value.
fn api(
    log: &Log,
    answer: impl Fn(&str) -> Response<String> + Clone + Send + Sync + 'static,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let log = Arc::clone(log);
    service_fn(move |req: Request<ReplayBody>| {
        let log = Arc::clone(&log);
        let answer = answer.clone();
        async move {
            let auth = req.headers().get(AUTHORIZATION).cloned();
            let query = req.uri().query().map(str::to_owned);
            let body = req.into_body().collect().await?.to_bytes();
            let value = auth
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap().push(Seen {
                auth: auth.as_ref().map(|v| v.to_str().unwrap().to_owned()),
                sensitive: auth.as_ref().is_some_and(HeaderValue::is_sensitive),
                query,
                body,
            });
            Ok::<_, BoxError>(answer(&value))
        }
    })
}

fn status(code: u16) -> Response<String> {
    Response::builder()
        .status(code)
        .body(String::new())
        .unwrap()
}

fn ok_unless(revoked: &'static [&'static str]) -> impl Fn(&str) -> Response<String> + Clone {
    move |auth: &str| {
        if revoked.iter().any(|r| auth == format!("Bearer {r}")) {
            status(401)
        } else {
            status(200)
        }
    }
}

/// Issues token-0, token-1, ... after `delay`, each valid for an hour.
fn counting(delay: Duration) -> (impl parapet_auth::ProvideToken, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n);
    let p = provider_fn(move || {
        let i = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, TokenError>(
                Token::new(format!("token-{i}")).with_expires_in(Duration::from_secs(3600)),
            )
        }
    });
    (p, n)
}

/// A body streamed in two chunks (so that a replay must come from the
/// recording).
type Streamed = StreamBody<futures_like::Iter<Result<http_body::Frame<Bytes>, Infallible>>>;

fn streamed(a: &'static str, b: &'static str) -> Streamed {
    StreamBody::new(futures_like::iter(vec![
        Ok(http_body::Frame::data(Bytes::from(a))),
        Ok(http_body::Frame::data(Bytes::from(b))),
    ]))
}

mod futures_like {
    pub(crate) use futures_core::Stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> Unpin for Iter<T> {}
    impl<T> Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.next())
        }
    }
    pub(crate) fn iter<T>(v: Vec<T>) -> Iter<T> {
        Iter(v.into_iter())
    }
}

/// `poll_ready` then `call`, naming the request type.
async fn call<S, B>(svc: &mut S, req: Request<B>) -> Result<S::Response, S::Error>
where
    S: Service<Request<B>>,
{
    ServiceExt::<Request<B>>::ready(svc).await?.call(req).await
}

fn log() -> Log {
    Arc::default()
}

#[tokio::test(start_paused = true)]
async fn static_bearer_goes_on_every_request_marked_sensitive() {
    let log = log();
    let mut svc = AuthLayer::bearer("s3cr3t")
        .unwrap()
        .layer(api(&log, |_| status(401)));
    for _ in 0..3 {
        let resp = call(&mut svc, Request::new(Full::new(Bytes::from("x"))))
            .await
            .unwrap();
        // Nothing to refresh: a 401 comes back as it is.
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some("Bearer s3cr3t") && s.sensitive)
    );
}

#[tokio::test(start_paused = true)]
async fn basic_and_api_keys_are_sent_as_documented() {
    let log = log();
    let req = || {
        Request::get("http://h.test/p?a=1")
            .body(String::new())
            .unwrap()
    };

    let basic = AuthLayer::basic("Aladdin", "open sesame").unwrap();
    basic
        .layer(api(&log, |_| status(200)))
        .oneshot(req())
        .await
        .unwrap();
    let key = AuthLayer::api_key_header("x-api-key", "k-1").unwrap();
    let svc = key.layer(api(&log, |_| status(200)));
    let log2 = Arc::clone(&log);
    svc.oneshot(req()).await.unwrap();
    let query = AuthLayer::api_key_query("api key", "k&2 =").unwrap();
    query
        .layer(api(&log, |_| status(200)))
        .oneshot(req())
        .await
        .unwrap();

    let seen = log2.lock().unwrap().clone();
    assert_eq!(
        seen[0].auth.as_deref(),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
    assert!(seen[0].sensitive);
    assert_eq!(seen[1].auth, None);
    assert_eq!(seen[2].query.as_deref(), Some("a=1&api+key=k%262+%3D"));
}

#[tokio::test(start_paused = true)]
async fn api_key_header_is_sensitive() {
    let seen = Arc::new(Mutex::new(None));
    let s2 = Arc::clone(&seen);
    let svc = AuthLayer::api_key_header("x-api-key", "k-1")
        .unwrap()
        .layer(service_fn(move |req: Request<ReplayBody>| {
            *s2.lock().unwrap() = req.headers().get("x-api-key").cloned();
            async { Ok::<_, Infallible>(Response::new(())) }
        }));
    svc.oneshot(Request::new(String::new())).await.unwrap();
    let v = seen.lock().unwrap().clone().unwrap();
    assert_eq!(v, "k-1");
    assert!(v.is_sensitive());
}

#[test]
fn malformed_credentials_are_typed_errors_not_panics() {
    for e in [
        AuthLayer::bearer("SECRET\n").unwrap_err(),
        AuthLayer::bearer("").unwrap_err(),
        AuthLayer::bearer("SECRET 1").unwrap_err(),
        AuthLayer::basic("user", "SECRET\r\nx-injected: 1").unwrap_err(),
        AuthLayer::basic("us:er", "SECRET").unwrap_err(),
        AuthLayer::api_key_header("x-api-key", "SECRET\n").unwrap_err(),
        AuthLayer::api_key_header("x api key", "SECRET").unwrap_err(),
        AuthLayer::api_key_query("k", "SECRET\n").unwrap_err(),
    ] {
        let text = format!("{e} {e:?}");
        assert!(text.starts_with("invalid "), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_costs_one_fetch_and_one_replay() {
    let log = log();
    let (p, fetches) = counting(Duration::from_millis(10));
    let svc = AuthLayer::provider(p).layer(api(&log, ok_unless(&["token-0"])));
    let resp = svc
        .oneshot(
            Request::post("/x")
                .body(streamed("hello ", "world"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer token-0"));
    assert_eq!(seen[1].auth.as_deref(), Some("Bearer token-1"));
    assert!(seen.iter().all(|s| s.body == "hello world" && s.sensitive));
}

#[tokio::test(start_paused = true)]
async fn a_persistent_401_is_returned_after_two_arrivals() {
    let log = log();
    let (p, fetches) = counting(Duration::ZERO);
    let svc = AuthLayer::provider(p).layer(api(&log, |_| status(401)));
    let resp = svc.oneshot(Request::new(String::from("b"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(log.lock().unwrap().len(), 2);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// Issue 15, must-fix 4: an API that answers 401 to every token used to
/// cost a token fetch and a re-send per call (50 calls: 51 fetches, 100
/// requests).
#[tokio::test(start_paused = true)]
async fn a_server_refusing_every_token_costs_a_bounded_number_of_fetches() {
    let log = log();
    let (p, fetches) = counting(Duration::ZERO);
    let cache = TokenCache::builder(p).jitter(Jitter::fixed(0.0)).build();
    let svc = AuthLayer::token_cache(cache).layer(api(&log, |_| status(401)));
    for i in 0..50 {
        let resp = svc
            .clone()
            .oneshot(Request::new(String::from("b")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        // The first call: its token, refused, is replaced once and the
        // request sent once more. Every later call, within the re-auth
        // cool-down of the token that replaced it: one request, no fetch.
        let sent = if i == 0 { 2 } else { i + 2 };
        assert_eq!(log.lock().unwrap().len(), sent, "call {i}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 51);
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.auth.as_deref() == Some("Bearer token-1"))
    );
}

/// The re-auth cool-down does not stop a genuine revocation from
/// recovering: once it has passed, a refused token is replaced.
#[tokio::test(start_paused = true)]
async fn after_the_reauth_cooldown_a_refused_token_is_replaced() {
    let log = log();
    let (p, fetches) = counting(Duration::ZERO);
    let cache = TokenCache::builder(p)
        .reauth_cooldown(Duration::from_secs(5))
        .jitter(Jitter::fixed(0.0))
        .build();
    let svc = AuthLayer::token_cache(cache).layer(api(&log, ok_unless(&["token-0", "token-1"])));
    let send = || async {
        svc.clone()
            .oneshot(Request::new(String::from("b")))
            .await
            .unwrap()
            .status()
    };
    // token-0 refused: token-1 fetched, refused too: the 401 comes back.
    assert_eq!(send().await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (fetches.load(Ordering::SeqCst), log.lock().unwrap().len()),
        (2, 2)
    );
    // Within the cool-down of token-1: its 401, no fetch, no re-send.
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(send().await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (fetches.load(Ordering::SeqCst), log.lock().unwrap().len()),
        (2, 3)
    );
    // Past it: token-1 is replaced and the request sent again with token-2.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(send().await, StatusCode::OK);
    assert_eq!(
        (fetches.load(Ordering::SeqCst), log.lock().unwrap().len()),
        (3, 5)
    );
    assert_eq!(
        log.lock().unwrap()[4].auth.as_deref(),
        Some("Bearer token-2")
    );
    assert_eq!(
        parapet_auth::DEFAULT_REAUTH_COOLDOWN,
        Duration::from_secs(5)
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_if_invalid_token_reads_the_challenge() {
    for (challenge, arrivals) in [
        (None, 1),
        (Some(r#"Bearer realm="api", error="insufficient_scope""#), 1),
        (
            Some(r#"Bearer realm="api", error="invalid_token", error_description="expired""#),
            2,
        ),
    ] {
        let log = log();
        let (p, _) = counting(Duration::ZERO);
        let layer = AuthLayer::provider(p).on_401(On401::RefreshIfInvalidToken);
        let svc = layer.layer(api(&log, move |_| {
            let mut r = status(401);
            if let Some(c) = challenge {
                r.headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static(c));
            }
            r
        }));
        let resp = svc.oneshot(Request::new(String::new())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(log.lock().unwrap().len(), arrivals, "{challenge:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn on_401_return_and_403_never_refresh() {
    let log = log();
    let (p, fetches) = counting(Duration::ZERO);
    let svc = AuthLayer::provider(p)
        .on_401(On401::Return)
        .layer(api(&log, |_| status(401)));
    assert_eq!(
        svc.oneshot(Request::new(String::new()))
            .await
            .unwrap()
            .status(),
        401
    );
    let (p, fetches403) = counting(Duration::ZERO);
    let svc = AuthLayer::provider(p).layer(api(&log, |_| {
        let mut r = status(403);
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static(r#"Bearer error="insufficient_scope""#),
        );
        r
    }));
    assert_eq!(
        svc.oneshot(Request::new(String::new()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(log.lock().unwrap().len(), 2);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(fetches403.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_cap_gets_its_401_back() {
    let log = log();
    let (p, fetches) = counting(Duration::ZERO);
    let svc = AuthLayer::provider(p)
        .replay_cap(4)
        .layer(api(&log, ok_unless(&["token-0"])));
    let resp = svc
        .oneshot(Request::new(streamed("12345", "67890")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outer_replay_body_is_reused() {
    // A retry layer outside armed the body with a cap of 4: that cap holds.
    let log = log();
    let (p, _) = counting(Duration::ZERO);
    let svc = AuthLayer::provider(p).layer(api(&log, ok_unless(&["token-0"])));
    let body = ReplayBody::new(streamed("12345", "67890"), 4);
    let resp = svc.oneshot(Request::new(body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let log = self::log();
    let (p, _) = counting(Duration::ZERO);
    let svc = AuthLayer::provider(p).layer(api(&log, ok_unless(&["token-0"])));
    let body = ReplayBody::new(streamed("12345", "67890"), 1024);
    let resp = svc.oneshot(Request::new(body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(log.lock().unwrap()[1].body, "1234567890");
}

#[tokio::test(start_paused = true)]
async fn concurrent_401s_for_one_token_cause_one_fetch() {
    let log = log();
    let (p, fetches) = counting(Duration::from_millis(50));
    let layer = AuthLayer::provider(p);
    let svc = layer.layer(api(&log, ok_unless(&["token-0"])));
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.oneshot(Request::new(format!("req-{i}")))
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    // One fetch for token-0, one for token-1: the 200 late 401s did not
    // throw token-1 away.
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 400);
    assert_eq!(
        seen.iter()
            .filter(|s| s.auth.as_deref() == Some("Bearer token-1"))
            .count(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_the_newest_token() {
    let log = log();
    let (p, _) = counting(Duration::ZERO);
    let layer = AuthLayer::provider(p);
    let cache = layer.cache().unwrap().clone();
    let mut svc = layer.layer(api(&log, |_| status(503)));
    // An outer retry layer sends the same request twice; between the
    // attempts the token was replaced.
    let body = ReplayBody::from("payload");
    let again = body.try_replay().unwrap();
    call(&mut svc, Request::new(body)).await.unwrap();
    let used = cache.current().unwrap();
    cache.invalidate(&used);
    call(&mut svc, Request::new(again)).await.unwrap();
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer token-0"));
    assert_eq!(seen[1].auth.as_deref(), Some("Bearer token-1"));
    assert_eq!(seen[1].body, "payload");
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_called_only_once_a_token_is_there() {
    let log = log();
    let (p, _) = counting(Duration::from_secs(1));
    let mut svc = AuthLayer::provider(p).layer(api(&log, |_| status(200)));
    ServiceExt::<Request<String>>::ready(&mut svc)
        .await
        .unwrap();
    let fut = svc.call(Request::new(String::new()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(log.lock().unwrap().is_empty());
    assert_eq!(fut.await.unwrap().status(), 200);
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_failure_is_a_downcastable_error() {
    let log = log();
    let cache = TokenCache::new(provider_fn(|| async {
        Err::<Token, _>(TokenError::permanent(std::io::Error::other("denied")))
    }));
    let svc = AuthLayer::token_cache(cache).layer(api(&log, |_| status(200)));
    let err = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    let token_error = err.downcast_ref::<TokenError>().unwrap();
    assert!(token_error.is_provider() && !token_error.is_transient());
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_secret_in_any_debug_string() {
    let (p, _) = counting(Duration::ZERO);
    let layer = AuthLayer::provider(p);
    let mut svc = layer.layer(service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    ServiceExt::<Request<String>>::ready(&mut svc)
        .await
        .unwrap();
    let fut = svc.call(Request::new(String::new()));
    let mut debug = format!("{fut:?} {svc:?}");
    debug += &format!("{:?}", fut.await.unwrap());
    debug += &format!("{:?}", layer.cache().unwrap().token().await.unwrap());
    debug += &format!("{:?}", layer.cache());
    for l in [
        AuthLayer::bearer("planted-1").unwrap(),
        AuthLayer::basic("u", "planted-2").unwrap(),
        AuthLayer::api_key_header("x-k", "planted-3").unwrap(),
        AuthLayer::api_key_query("k", "planted-4").unwrap(),
    ] {
        debug += &format!("{l:?} {:?}", l.layer(()));
    }
    assert!(
        !debug.contains("planted") && !debug.contains("token-0"),
        "{debug}"
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<AuthLayer>();
    check::<TokenCache>();
    check::<parapet_auth::CachedToken>();
    check::<TokenError>();
    check::<parapet_auth::InvalidCredential>();
    check::<parapet_auth::TokenEndpoint>();
    check::<parapet_auth::ClientCredentialsGrant>();
    check::<parapet_auth::RefreshTokenGrant>();
    check::<
        parapet_auth::Auth<
            tower::util::BoxCloneSyncService<Request<ReplayBody>, Response<()>, BoxError>,
        >,
    >();
    fn send<T: Send>(_: &T) {}
    let svc = AuthLayer::bearer("t")
        .unwrap()
        .layer(service_fn(|_r: Request<ReplayBody>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
    let mut svc = svc;
    send(&svc.call(Request::new(String::new())));
}

/// An inner service that counts its clones.
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    clones: Arc<AtomicUsize>,
}

impl<S: Clone> Clone for Counted<S> {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: self.inner.clone(),
            clones: Arc::clone(&self.clones),
        }
    }
}

impl<S: Service<Request<ReplayBody>>> Service<Request<ReplayBody>> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> S::Future {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_kept_for_a_resend_that_cannot_happen() {
    let clones = Arc::new(AtomicUsize::new(0));
    let get = || {
        Request::get("http://api.test/")
            .body(Full::new(Bytes::from("b")))
            .unwrap()
    };

    // Static credentials: a 401 is returned, the inner service never cloned.
    let seen = log();
    let mut svc = AuthLayer::bearer("static").unwrap().layer(Counted {
        inner: api(&seen, |_| status(401)),
        clones: Arc::clone(&clones),
    });
    assert_eq!(call(&mut svc, get()).await.unwrap().status(), 401);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(clones.load(Ordering::SeqCst), 0);

    // A cached token with On401::Return: no clone either.
    let (p, _) = counting(Duration::ZERO);
    let seen = log();
    let mut svc = AuthLayer::provider(p).on_401(On401::Return).layer(Counted {
        inner: api(&seen, |_| status(401)),
        clones: Arc::clone(&clones),
    });
    call(&mut svc, get()).await.unwrap(); // fetches the first token
    clones.store(0, Ordering::SeqCst);
    assert_eq!(call(&mut svc, get()).await.unwrap().status(), 401);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(clones.load(Ordering::SeqCst), 0);

    // With the default On401::Refresh, one spare clone per call for the
    // re-send.
    let (p, _) = counting(Duration::ZERO);
    let seen = log();
    let mut svc = AuthLayer::provider(p).layer(Counted {
        inner: api(&seen, |_| status(200)),
        clones: Arc::clone(&clones),
    });
    call(&mut svc, get()).await.unwrap();
    clones.store(0, Ordering::SeqCst);
    assert_eq!(call(&mut svc, get()).await.unwrap().status(), 200);
    assert_eq!(clones.load(Ordering::SeqCst), 1);
}
