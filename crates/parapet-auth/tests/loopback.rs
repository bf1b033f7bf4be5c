//! The layer and the OAuth 2.0 grants against a real loopback server
//! (`parapet-testkit`), counted from the server's side. Real time, short
//! token lifetimes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_auth::{
    AuthLayer, ClientAuth, ClientCredentialsGrant, RefreshTokenGrant, TokenCache, TokenEndpoint,
    TokenError,
};
use parapet_core::{BoxError, Jitter, ReplayBody};
use parapet_testkit::{Arrival, Reply, Server};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Http = Client<HttpConnector, ReplayBody>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The client behind a semaphore that waits inside the future, as the
/// stack's concurrency limit does (the auth layer sits outside it).
fn limited(
    client: Http,
    slots: usize,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let sem = Arc::new(Semaphore::new(slots));
    service_fn(move |req: Request<ReplayBody>| {
        let client = client.clone();
        let sem = Arc::clone(&sem);
        async move {
            let _slot = sem.acquire_owned().await?;
            Ok::<_, BoxError>(client.request(req).await?)
        }
    })
}

/// A token server: `/token` issues `tok-N` valid for `lifetime`
/// (server-side), `/protected` accepts only issued, unexpired, unrevoked
/// tokens and answers 401 `invalid_token` otherwise.
struct Fixture {
    server: Server,
    rejected: Arc<AtomicUsize>,
    revoked: Arc<Mutex<HashSet<String>>>,
}

const PLANT: &str = "PLANTED7f3a";

impl Fixture {
    async fn start(lifetime: Duration) -> Self {
        let server = Server::start().await;
        let tokens: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let issued = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let t = Arc::clone(&tokens);
        server.on("/token").handle(move |_a: &Arrival| {
            let n = issued.fetch_add(1, Ordering::SeqCst);
            let token = format!("tok-{n}-{PLANT}");
            t.lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + lifetime);
            Reply::json(format!(
                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{}}}"#,
                lifetime.as_secs()
            ))
        });
        let (t, rj, rv) = (tokens, Arc::clone(&rejected), Arc::clone(&revoked));
        server.on("/protected").handle(move |a: &Arrival| {
            let token = a
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let valid = t
                .lock()
                .unwrap()
                .get(token)
                .is_some_and(|exp| Instant::now() < *exp)
                && !rv.lock().unwrap().contains(token);
            if valid {
                Reply::ok().body("fine")
            } else {
                rj.fetch_add(1, Ordering::SeqCst);
                Reply::status(401).header(
                    "www-authenticate",
                    r#"Bearer realm="test", error="invalid_token""#,
                )
            }
        });
        Self {
            server,
            rejected,
            revoked,
        }
    }

    fn grant(&self, client: &Http) -> ClientCredentialsGrant {
        let endpoint = TokenEndpoint::new(client.clone(), &self.server.url("/token")).unwrap();
        ClientCredentialsGrant::new(endpoint, "client-1", format!("secret-{PLANT}")).unwrap()
    }

    fn revoke(&self, token: &str) {
        self.revoked.lock().unwrap().insert(token.to_owned());
    }
}

async fn get(
    svc: &(
         impl Service<
        Request<Full<Bytes>>,
        Response = Response<Incoming>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
     ),
    url: &str,
) -> StatusCode {
    let resp = svc
        .clone()
        .oneshot(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_at_expiry_cause_exactly_one_token_request() {
    let fx = Fixture::start(Duration::from_secs(2)).await;
    let client = http();
    // A margin of zero: no proactive refresh, so the token really expires.
    let cache = TokenCache::builder(fx.grant(&client))
        .refresh_margin(Duration::ZERO)
        .build();
    let svc = AuthLayer::token_cache(cache).layer(limited(client, 64));
    let url = fx.server.url("/protected");
    assert_eq!(get(&svc, &url).await, StatusCode::OK);
    assert_eq!(fx.server.hits("/token"), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let (svc, url) = (svc.clone(), url.clone());
            tokio::spawn(async move { get(&svc, &url).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        fx.server.hits("/token"),
        2,
        "one token request for 1000 calls"
    );
    assert_eq!(fx.server.hits("/protected"), 1001);
    assert_eq!(fx.rejected.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_refresh_means_no_401_over_three_lifetimes() {
    let fx = Fixture::start(Duration::from_secs(2)).await;
    let client = http();
    let svc = AuthLayer::provider(fx.grant(&client)).layer(limited(client, 8));
    let url = fx.server.url("/protected");
    let end = Instant::now() + Duration::from_millis(6500);
    let mut calls = 0;
    while Instant::now() < end {
        assert_eq!(get(&svc, &url).await, StatusCode::OK);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(fx.rejected.load(Ordering::SeqCst), 0, "no 401 arrived");
    assert_eq!(fx.server.hits("/protected"), calls);
    // The 30 s margin is clamped to half of the 2 s lifetime (+ up to a
    // quarter of jitter): a refresh every 0.75 to 1 s.
    let tokens = fx.server.hits("/token");
    assert!((6..=10).contains(&tokens), "{tokens} token requests");
    // Each refresh happened before the previous token expired.
    let at: Vec<_> = fx
        .server
        .arrivals_for("/token")
        .iter()
        .map(|a| a.at)
        .collect();
    for w in at.windows(2) {
        assert!(w[1] - w[0] < Duration::from_secs(2), "{:?}", w[1] - w[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_costs_one_token_request_and_one_replay() {
    let fx = Fixture::start(Duration::from_secs(3600)).await;
    let client = http();
    let svc = AuthLayer::provider(fx.grant(&client)).layer(limited(client, 8));
    let url = fx.server.url("/protected");
    assert_eq!(get(&svc, &url).await, StatusCode::OK);
    fx.revoke(&format!("tok-0-{PLANT}"));
    fx.server.clear_arrivals();

    let body = Bytes::from(vec![b'x'; 10_000]);
    let resp = svc
        .clone()
        .oneshot(Request::post(&url).body(Full::new(body.clone())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fx.server.hits("/token"), 1);
    let seen = fx.server.arrivals_for("/protected");
    assert_eq!(seen.len(), 2, "the request and its one replay");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer tok-0-{PLANT}").as_str())
    );
    assert_eq!(
        seen[1].header("authorization"),
        Some(format!("Bearer tok-1-{PLANT}").as_str())
    );
    assert!(seen.iter().all(|a| a.body == body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_401_is_returned_after_two_arrivals() {
    let fx = Fixture::start(Duration::from_secs(3600)).await;
    fx.server
        .on("/always-401")
        .reply(Reply::status(401).header("www-authenticate", r#"Bearer error="invalid_token""#));
    let client = http();
    let svc = AuthLayer::provider(fx.grant(&client)).layer(limited(client, 8));
    let status = get(&svc, &fx.server.url("/always-401")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(fx.server.hits("/always-401"), 2);
    assert_eq!(fx.server.hits("/token"), 2);
}

fn endpoint(server: &Server) -> TokenEndpoint {
    TokenEndpoint::new(http(), &server.url("/token")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_503_twice_then_200() {
    let server = Server::start().await;
    server.on("/token").replies([
        Reply::status(503),
        Reply::status(503),
        Reply::json(r#"{"access_token":"ok-token","token_type":"bearer","expires_in":60}"#),
    ]);
    let grant = ClientCredentialsGrant::new(endpoint(&server), "id", "secret").unwrap();
    let cache = TokenCache::builder(grant)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .jitter(Jitter::fixed(0.0))
        .build();
    assert_eq!(cache.token().await.unwrap().secret().expose(), "ok-token");
    let at: Vec<_> = server.arrivals_for("/token").iter().map(|a| a.at).collect();
    assert_eq!(at.len(), 3);
    assert!(at[1] - at[0] >= Duration::from_millis(100));
    assert!(at[2] - at[1] >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_is_a_typed_timeout() {
    let server = Server::start().await;
    server.on("/token").reply(Reply::hang());
    let grant = ClientCredentialsGrant::new(endpoint(&server), "id", "secret").unwrap();
    let cache = TokenCache::builder(grant)
        .fetch_timeout(Duration::from_millis(500))
        .build();
    let t0 = Instant::now();
    let err = cache.token().await.unwrap_err();
    let took = t0.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(500 + 250), "{took:?}");
    assert_eq!(server.hits("/token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_oauth_errors_are_typed() {
    let server = Server::start().await;
    server.on("/token").replies([
        Reply::ok().body("<html>gateway</html>"),
        Reply::json(r#"{"token_type":"Bearer"}"#),
        Reply::json(r#"{"access_token":"x","token_type":"MAC"}"#),
        Reply::status(400)
            .header("content-type", "application/json")
            .body(r#"{"error":"invalid_client","error_description":"no such client"}"#),
        Reply::json(vec![b' '; 100_000]),
    ]);
    let grant = Arc::new(ClientCredentialsGrant::new(endpoint(&server), "id", "secret").unwrap());
    let fetch = || async {
        // A fresh cache each time: no cool-down between the cases.
        TokenCache::new(Arc::clone(&grant))
            .token()
            .await
            .unwrap_err()
    };
    let e = fetch().await;
    assert!(
        e.is_malformed() && e.to_string().contains("not JSON"),
        "{e}"
    );
    let e = fetch().await;
    assert!(
        e.is_malformed() && e.to_string().contains("access_token"),
        "{e}"
    );
    let e = fetch().await;
    assert!(e.is_malformed() && e.to_string().contains("MAC"), "{e}");
    let e = fetch().await;
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(e.oauth_error(), Some("invalid_client"));
    assert_eq!(e.error_description(), Some("no such client"));
    let e = fetch().await;
    assert!(
        e.is_malformed() && e.to_string().contains("larger than"),
        "{e}"
    );
    assert_eq!(server.hits("/token"), 5, "none of these is retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_requests_are_well_formed() {
    let server = Server::start().await;
    server
        .on("/token")
        .reply(Reply::json(r#"{"access_token":"t","token_type":"Bearer"}"#));
    let basic = ClientCredentialsGrant::new(endpoint(&server), "my client", "s3:cr/et+")
        .unwrap()
        .scope("read write")
        .audience("https://api.example.com/");
    TokenCache::new(basic).token().await.unwrap();
    let in_body = ClientCredentialsGrant::new(endpoint(&server), "my client", "s3:cr/et+")
        .unwrap()
        .client_auth(ClientAuth::RequestBody);
    TokenCache::new(in_body).token().await.unwrap();

    let seen = server.arrivals_for("/token");
    assert!(seen.iter().all(|a| a.method == http::Method::POST));
    assert!(
        seen.iter()
            .all(|a| { a.header("content-type") == Some("application/x-www-form-urlencoded") })
    );
    // base64("my+client:s3%3Acr%2Fet%2B")
    assert_eq!(
        seen[0].header("authorization"),
        Some("Basic bXkrY2xpZW50OnMzJTNBY3IlMkZldCUyQg==")
    );
    assert_eq!(
        seen[0].body_text(),
        "grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example.com%2F"
    );
    assert_eq!(seen[1].header("authorization"), None);
    assert_eq!(
        seen[1].body_text(),
        "grant_type=client_credentials&client_id=my+client&client_secret=s3%3Acr%2Fet%2B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_grant_keeps_the_newest_refresh_token() {
    let server = Server::start().await;
    let current = Arc::new(Mutex::new(String::from("r-0")));
    let n = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&current);
    server.on("/token").handle(move |a: &Arrival| {
        let form: HashMap<String, String> = a
            .body_text()
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut cur = c.lock().unwrap();
        if form.get("refresh_token") != Some(&*cur) || form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return Reply::status(400)
                .header("content-type", "application/json")
                .body(r#"{"error":"invalid_grant"}"#);
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        *cur = format!("r-{i}");
        Reply::json(format!(
            r#"{{"access_token":"a-{i}","token_type":"Bearer","expires_in":3600,"refresh_token":"r-{i}"}}"#
        ))
    });
    let grant = Arc::new(
        RefreshTokenGrant::new(endpoint(&server), "r-0")
            .unwrap()
            .client_id("app")
            .unwrap(),
    );
    let cache = TokenCache::new(Arc::clone(&grant));
    for i in 1..=3 {
        let t = cache.token().await.unwrap();
        assert_eq!(t.secret().expose(), format!("a-{i}"));
        assert_eq!(grant.refresh_token().expose(), format!("r-{i}"));
        cache.invalidate(&t);
    }
    assert_eq!(server.hits("/token"), 3);
    assert!(
        server.arrivals_for("/token")[0]
            .body_text()
            .contains("client_id=app")
    );
}

/// A refresh-token grant starting from `r-0` against `server`'s `/token`.
fn refresh_grant(server: &Server) -> Arc<RefreshTokenGrant> {
    Arc::new(
        RefreshTokenGrant::new(endpoint(server), "r-0")
            .unwrap()
            .client_id("app")
            .unwrap(),
    )
}

/// A cache that tries a fetch up to 3 times, with millisecond backoff.
fn three_tries(provider: impl parapet_auth::ProvideToken) -> TokenCache {
    TokenCache::builder(provider)
        .fetch_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build()
}

/// Issue 15, must-fix 1: a refresh-token POST whose connection is reset
/// after it arrived may have spent (and rotated) the refresh token: it is
/// never sent again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_request_reset_after_it_arrived_reaches_the_server_once() {
    let server = Server::start().await;
    server.on("/token").reply(Reply::reset());
    let grant = refresh_grant(&server);

    let e = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert!(e.is_refresh_outcome_unknown() && !e.is_transient(), "{e}");
    assert!(e.to_string().contains("re-authorisation"), "{e}");
    assert!(e.source().is_some(), "the transport failure is kept");
    assert_eq!(server.hits("/token"), 1, "the refresh token was sent once");

    // Another cache (no cool-down to wait out) gets the same answer
    // without a request: the grant keeps the old token and reports it.
    let e = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert!(e.is_refresh_outcome_unknown(), "{e}");
    assert_eq!(server.hits("/token"), 1);
    assert!(grant.refresh_outcome_unknown());
    assert_eq!(grant.refresh_token().expose(), "r-0");

    // A refresh token given back (after a new authorisation) is used.
    server.on("/token").reply(Reply::json(
        r#"{"access_token":"a-1","token_type":"Bearer","refresh_token":"r-1"}"#,
    ));
    grant.set_refresh_token("r-new").unwrap();
    assert!(!grant.refresh_outcome_unknown());
    let t = three_tries(Arc::clone(&grant)).token().await.unwrap();
    assert_eq!(t.secret().expose(), "a-1");
    assert_eq!(grant.refresh_token().expose(), "r-1");
    let seen = server.arrivals_for("/token");
    assert_eq!(seen.len(), 2);
    assert!(seen[1].body_text().contains("refresh_token=r-new"));
}

/// A refused connection proves the request never left: the refresh token
/// was not spent, and the fetch is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_request_to_a_refused_port_is_retried() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let client = http();
    let counted = service_fn(move |req: Request<ReplayBody>| {
        counter.fetch_add(1, Ordering::SeqCst);
        client.request(req)
    });
    let grant = Arc::new(
        RefreshTokenGrant::new(TokenEndpoint::new(counted, &url).unwrap(), "r-0").unwrap(),
    );

    let e = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert!(e.is_transport() && e.is_transient(), "{e}");
    assert!(!e.is_refresh_outcome_unknown());
    assert_eq!(calls.load(Ordering::SeqCst), 3, "every attempt was made");
    // Nothing was spent: a later fetch tries again.
    let _ = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert!(!grant.refresh_outcome_unknown());
}

/// A client-credentials request spends nothing: one reset after it
/// arrived is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_credentials_request_reset_after_it_arrived_is_retried() {
    let server = Server::start().await;
    server
        .on("/token")
        .fail_times(2, Reply::reset())
        .then(Reply::json(
            r#"{"access_token":"cc-1","token_type":"Bearer"}"#,
        ));
    let grant = ClientCredentialsGrant::new(endpoint(&server), "id", "secret").unwrap();
    let t = three_tries(grant).token().await.unwrap();
    assert_eq!(t.secret().expose(), "cc-1");
    assert_eq!(server.hits("/token"), 3);
}

/// The answer arrived, but its body broke off: the server may have rotated
/// the refresh token in it. The old one is kept and reported, never
/// silently dropped or sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answer_cut_off_keeps_the_old_refresh_token_and_says_so() {
    let server = Server::start().await;
    server.on("/token").reply(
        Reply::reset_after_headers()
            .header("content-type", "application/json")
            .body(r#"{"access_token":"a-1","token_type":"Bearer","refresh_token":"r-1"}"#)
            .truncate_body(20),
    );
    let grant = refresh_grant(&server);
    let e = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert!(e.is_refresh_outcome_unknown(), "{e}");
    assert_eq!(server.hits("/token"), 1);
    assert_eq!(grant.refresh_token().expose(), "r-0");
    let _ = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert_eq!(server.hits("/token"), 1);
}

/// A refresh that the cache's fetch timeout cut off may have arrived too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cut_off_by_the_fetch_timeout_is_not_sent_again() {
    let server = Server::start().await;
    server.on("/token").reply(Reply::hang());
    let grant = refresh_grant(&server);
    let cache = TokenCache::builder(Arc::clone(&grant))
        .fetch_timeout(Duration::from_millis(200))
        .build();
    assert!(cache.token().await.unwrap_err().is_timeout());
    assert_eq!(server.hits("/token"), 1);
    let e = three_tries(Arc::clone(&grant)).token().await.unwrap_err();
    assert!(e.is_refresh_outcome_unknown(), "{e}");
    assert_eq!(server.hits("/token"), 1);
}

/// An answer the server finished (an error status) is an outcome: the
/// refresh token is kept for the next try, a 5xx is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answered_with_503_is_retried() {
    let server = Server::start().await;
    server
        .on("/token")
        .fail_times(1, Reply::status(503))
        .then(Reply::json(
            r#"{"access_token":"a-1","token_type":"Bearer","refresh_token":"r-1"}"#,
        ));
    let grant = refresh_grant(&server);
    let t = three_tries(Arc::clone(&grant)).token().await.unwrap();
    assert_eq!(t.secret().expose(), "a-1");
    assert_eq!(server.hits("/token"), 2);
    assert_eq!(grant.refresh_token().expose(), "r-1");
}

#[tokio::test]
async fn planted_secrets_never_reach_tracing_output_or_debug_strings() {
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .finish();
    // Current-thread runtime: every task (the spawned fetches too) runs on
    // this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let fx = Fixture::start(Duration::from_secs(3600)).await;
    let client = http();
    let grant = Arc::new(fx.grant(&client));
    let layer = AuthLayer::token_cache(TokenCache::new(Arc::clone(&grant)));
    let svc = layer.clone().layer(limited(client.clone(), 8));
    let url = fx.server.url("/protected");
    let mut debug = String::new();

    // A 401 and a refresh.
    assert_eq!(get(&svc, &url).await, StatusCode::OK);
    fx.revoke(&format!("tok-0-{PLANT}"));
    assert_eq!(get(&svc, &url).await, StatusCode::OK);
    let token = layer.cache().unwrap().token().await.unwrap();
    debug += &format!("{layer:?} {grant:?} {token:?} {:?}", token.secret());

    // Failures of every kind, with planted secrets in the request.
    fx.server.on("/bad-token").replies([
        Reply::status(503),
        Reply::status(400).body(r#"{"error":"invalid_client"}"#),
        Reply::json(format!(
            r#"{{"access_token":"{PLANT} x","token_type":"Bearer"}}"#
        )),
        Reply::json(format!(
            r#"{{"access_token":"{PLANT}","token_type":"MAC"}}"#
        )),
    ]);
    let ep = TokenEndpoint::new(client.clone(), &fx.server.url("/bad-token")).unwrap();
    let failing = ClientCredentialsGrant::new(ep.clone(), "id", PLANT).unwrap();
    let failing = Arc::new(failing);
    for _ in 0..4 {
        let cache = TokenCache::builder(Arc::clone(&failing))
            .fetch_attempts(1)
            .build();
        let e: TokenError = cache.token().await.unwrap_err();
        let svc = AuthLayer::token_cache(cache.clone()).layer(limited(client.clone(), 1));
        let boxed = svc
            .oneshot(Request::new(Full::new(Bytes::new())))
            .await
            .unwrap_err();
        debug += &format!("{e} {e:?} {boxed} {boxed:?} {cache:?} {failing:?} {ep:?}");
    }
    assert_eq!(fx.server.hits("/bad-token"), 4);
    let refresh = RefreshTokenGrant::new(ep, PLANT).unwrap();
    debug += &format!("{refresh:?}");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token fetched"),
        "the events were captured: {logs}"
    );
    assert!(logs.contains("token fetch failed"), "{logs}");
    assert!(!logs.contains(PLANT), "{logs}");
    assert!(!debug.contains(PLANT), "{debug}");
}
