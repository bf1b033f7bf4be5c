//! Hostile token endpoints, hostile callers, and secrets.
//!
//! - Auth through the facade and a hand-built stack: the token endpoint
//!   down, slow, answering junk; a 401 that persists (two arrivals, never a
//!   loop).
//! - Bad input from the caller: invalid header values and URLs, a URL with
//!   credentials in it (never logged, never sent), absurd configuration
//!   values (a typed `InvalidConfig`, or a documented reason to accept).
//! - Secrets: every test captures TRACE output and asserts, when it ends,
//!   that no planted secret appears in any line (see `reliability::capture`;
//!   every binary of the suite does the same).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod reliability;

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use parapet::auth::{
    AuthLayer, ClientAuth, ClientCredentialsGrant, TokenCache, TokenEndpoint, TokenError,
};
use parapet::retry::RetryLayer;
use parapet::{Client, InvalidConfig};
use parapet_core::ReplayBody;
use parapet_testkit::{Arrival, Reply, Server};
use reliability::{
    API_KEY, BEARER, CLIENT_SECRET, DEADLINE, ISSUED, MARKER, URL_PASSWORD, assert_clean_error,
    base64, builder, capture, fast_policy, hyper_client, refused_port,
};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const SLACK: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------

/// A token endpoint reached through a `parapet::Client` built without auth
/// (and without retries: the token cache retries itself), the way an
/// application would wire it.
fn endpoint_via_facade(url: &str) -> TokenEndpoint {
    let client = Client::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(5))
        .retry_off()
        .build()
        .unwrap();
    TokenEndpoint::new::<_, Full<Bytes>, _>(client, url).unwrap()
}

/// The client-credentials grant (client secret planted), cached with short
/// timeouts so failures show fast.
fn cache(endpoint: TokenEndpoint) -> TokenCache {
    cache_with_backoff(endpoint, Duration::from_millis(10))
}

/// [`cache`] with another backoff (and cool-down after a failed fetch).
fn cache_with_backoff(endpoint: TokenEndpoint, base: Duration) -> TokenCache {
    let grant = ClientCredentialsGrant::new(endpoint, "client-7", CLIENT_SECRET)
        .unwrap()
        .client_auth(ClientAuth::Basic);
    TokenCache::builder(grant)
        .fetch_timeout(Duration::from_millis(400))
        .fetch_attempts(2)
        .backoff(base, base * 5)
        .build()
}

/// The facade with a token cache.
fn api_client(cache: TokenCache) -> Client {
    builder(false)
        .auth(AuthLayer::token_cache(cache))
        .build()
        .unwrap()
}

/// A token endpoint that issues `ISSUED-<n>` tokens for an hour.
fn issue_tokens(server: &Server, delay: Duration) {
    let n = Arc::new(AtomicUsize::new(0));
    server.on("/token").handle(move |_a: &Arrival| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Reply::json(format!(
            r#"{{"access_token":"{ISSUED}-{i}","token_type":"Bearer","expires_in":3600}}"#
        ))
        .delay(delay)
    });
}

/// The `TokenError` in an error's chain.
fn token_error(e: &parapet::Error) -> &TokenError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = cur {
        if let Some(t) = s.downcast_ref::<TokenError>() {
            return t;
        }
        cur = s.source();
    }
    panic!("no TokenError in {e:?}");
}

#[tokio::test]
async fn token_endpoint_down() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/me").reply(Reply::ok());
    let port = refused_port().await;
    let client = api_client(cache(endpoint_via_facade(&format!(
        "http://127.0.0.1:{port}/token"
    ))));

    for _ in 0..3 {
        let start = Instant::now();
        let e = client.get(&api.url("/me")).send().await.unwrap_err();
        assert!(e.is_auth(), "{e:?}");
        assert!(token_error(&e).is_transient());
        assert_clean_error(&e, &e);
        assert!(start.elapsed() <= DEADLINE + SLACK);
    }
    // Nothing reached the API without credentials.
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn token_endpoint_slow() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/me").reply(Reply::ok());

    // Slower than the fetch timeout: an auth error within the deadline,
    // nothing sent to the API.
    let idp = Server::start().await;
    issue_tokens(&idp, Duration::from_secs(5));
    let client = api_client(cache(endpoint_via_facade(&idp.url("/token"))));
    let start = Instant::now();
    let e = client.get(&api.url("/me")).send().await.unwrap_err();
    assert!(e.is_auth(), "{e:?}");
    assert!(token_error(&e).is_timeout(), "{e:?}");
    assert!(start.elapsed() <= DEADLINE + SLACK);
    assert_eq!(api.requests(), 0);

    // Slow but within it: the call waits for the token and goes through.
    let idp = Server::start().await;
    issue_tokens(&idp, Duration::from_millis(150));
    let client = api_client(cache(endpoint_via_facade(&idp.url("/token"))));
    let res = client.get(&api.url("/me")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = api.arrivals_for("/me");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {ISSUED}-0").as_str())
    );
    // The token endpoint saw the client authenticate with Basic.
    let token_req = &idp.arrivals_for("/token")[0];
    let basic = format!(
        "Basic {}",
        base64(format!("client-7:{CLIENT_SECRET}").as_bytes())
    );
    assert_eq!(token_req.header("authorization"), Some(basic.as_str()));
    assert!(
        token_req
            .body_text()
            .contains("grant_type=client_credentials")
    );
}

#[tokio::test]
async fn token_endpoint_answering_junk() {
    let _logs = capture();
    let huge = format!(
        r#"{{"access_token":"{ISSUED}","token_type":"Bearer","pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    let deep = "[".repeat(50_000);
    let junk: Vec<(Reply, &str)> = vec![
        (Reply::ok().body("<html>502 Bad Gateway</html>"), "not JSON"),
        (Reply::json("[]"), "object"),
        (Reply::json("{}"), "access_token"),
        (Reply::json(deep), "not JSON"),
        (
            Reply::json(format!(
                r#"{{"access_token":"{ISSUED}","token_type":"mac"}}"#
            )),
            "\"mac\" token",
        ),
        (
            Reply::json(format!(
                r#"{{"access_token":"{ISSUED}","token_type":"Bearer","expires_in":-5}}"#
            )),
            "expires_in",
        ),
        (
            Reply::json(format!(
                r#"{{"access_token":"{ISSUED} x","token_type":"Bearer"}}"#
            )),
            "",
        ),
        (Reply::json(huge), ""),
        (
            Reply::status(400).body(r#"{"error":"invalid_client","error_description":"no"}"#),
            "invalid_client",
        ),
        (Reply::status(401).body("go away"), "401"),
    ];
    for (reply, needle) in junk {
        let api = Server::start().await;
        api.on("/me").reply(Reply::ok());
        let idp = Server::start().await;
        idp.on("/token").reply(reply);
        // A cool-down of a second at least after a failed fetch.
        let client = api_client(cache_with_backoff(
            endpoint_via_facade(&idp.url("/token")),
            Duration::from_secs(1),
        ));
        for _ in 0..2 {
            let e = client.get(&api.url("/me")).send().await.unwrap_err();
            assert!(e.is_auth(), "{e:?}");
            let t = token_error(&e);
            assert!(!t.is_transient(), "{t:?}");
            assert!(e.to_string().contains(needle), "{needle}: {e}");
            assert_clean_error(&e, &e);
        }
        assert_eq!(api.requests(), 0);
        // A permanent failure is not retried: one fetch, then a cool-down
        // that answers the second call with the same error.
        assert_eq!(idp.requests(), 1);
    }
}

#[tokio::test]
async fn a_persistent_401_is_sent_twice_never_looped() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/me")
        .reply(Reply::status(401).header("www-authenticate", r#"Bearer error="invalid_token""#));
    let idp = Server::start().await;
    issue_tokens(&idp, Duration::ZERO);

    // Through the facade.
    let client = api_client(cache(endpoint_via_facade(&idp.url("/token"))));
    let res = client.get(&api.url("/me")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let e = res.error_for_status().await.unwrap_err();
    assert!(e.is_status() && !e.is_retryable());
    let seen = api.arrivals_for("/me");
    assert_eq!(
        seen.len(),
        2,
        "the request and one re-send with a fresh token"
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {ISSUED}-0").as_str())
    );
    assert_eq!(
        seen[1].header("authorization"),
        Some(format!("Bearer {ISSUED}-1").as_str())
    );
    assert_eq!(idp.requests(), 2);

    // Through a hand-built stack, the token endpoint reached through a
    // plain hyper-util client: the same two arrivals.
    let api = Server::start().await;
    api.on("/me").reply(Reply::status(401));
    let idp = Server::start().await;
    issue_tokens(&idp, Duration::ZERO);
    let endpoint =
        TokenEndpoint::new::<_, ReplayBody, _>(hyper_client(), &idp.url("/token")).unwrap();
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(fast_policy(false)))
        .layer(AuthLayer::token_cache(cache(endpoint)))
        .service(hyper_client());
    let req = Request::get(api.url("/me"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = stack.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 401);
    res.into_body().collect().await.unwrap();
    assert_eq!(api.hits("/me"), 2);
    assert_eq!(idp.hits("/token"), 2);
}

// ---------------------------------------------------------------------------
// Bad input from the caller
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_header_values_are_request_errors_and_nothing_is_sent() {
    let _logs = capture();
    let server = Server::start().await;
    server.on("/x").reply(Reply::ok());
    let client = builder(false).build().unwrap();
    let url = server.url("/x");
    let cases: Vec<(&str, &str)> = vec![
        ("x-note", "line\nbreak"),
        ("x-note", "carriage\rreturn"),
        ("x-note", "\r\nx-injected: 1"),
        ("x-note", "nul\0byte"),
        ("x-note", "del\u{7f}"),
        ("bad name", "v"),
        ("", "v"),
        ("x-note\n", "v"),
        ("x:note", "v"),
    ];
    for (name, value) in cases {
        let e = client
            .get(&url)
            .header(name, value)
            .send()
            .await
            .unwrap_err();
        assert!(e.is_request(), "{name:?}: {value:?}: {e:?}");
        assert!(!e.is_retryable());
    }
    // A planted secret in a bad header value does not leak into the error.
    let e = client
        .get(&url)
        .header("authorization", format!("Bearer {BEARER}\n"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_request());
    assert_clean_error(&e, &e);
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn invalid_urls_are_errors_not_panics() {
    let _logs = capture();
    let client = builder(false).build().unwrap();
    for url in [
        "",
        "not a url",
        "http://[::1",
        "http://127.0.0.1:99999/",
        "http:///nohost",
        "relative/without/base",
        "ftp://127.0.0.1/file",
        "http://exa mple.test/",
    ] {
        let start = Instant::now();
        let e = client.get(url).send().await.unwrap_err();
        assert!(start.elapsed() <= DEADLINE + SLACK, "{url}");
        assert!(!e.to_string().is_empty(), "{url}");
    }
}

#[tokio::test]
async fn a_url_with_credentials_is_never_logged_nor_sent_in_clear() {
    // FOUND by this test: the trace layers redacted the URL, but the facade
    // handed the URI with its user information to hyper-util, whose
    // connection pool logs its key at TRACE
    // (`checkout waiting for idle connection: ("http", user:<password>@host)`).
    // Fixed in the facade (875b3b9): the credentials move into a sensitive
    // `Authorization: Basic` header before the stack sees the URI.
    let logs = capture();
    let server = Server::start().await;
    server
        .on("/creds")
        .replies([Reply::status(503), Reply::ok()]);
    let client = builder(false).build().unwrap();
    // The testkit server's own loopback URL, with credentials added.
    let url = server.url("/creds?token=x").replacen(
        "http://",
        &format!("http://user:{URL_PASSWORD}@"),
        1,
    );
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // Two attempts; each carried the credentials as Basic auth only: not
    // in the request line, not in `Host`.
    let basic = format!(
        "Basic {}",
        base64(format!("user:{URL_PASSWORD}").as_bytes())
    );
    let arrivals = server.arrivals_for("/creds");
    assert_eq!(arrivals.len(), 2);
    for a in &arrivals {
        assert_eq!(a.header("authorization"), Some(basic.as_str()));
        let mut headers = a.headers.clone();
        headers.remove("authorization");
        let all = format!("{} {:?} {headers:?}", a.path, a.query);
        assert!(!all.contains(MARKER), "sent: {all}");
        assert!(!all.contains("user:"), "sent: {all}");
        assert_eq!(a.header("host"), Some(server.authority().as_str()));
    }
    // The spans were logged, with the URL redacted, so the check of the
    // logs when this test ends is not vacuous.
    assert!(logs.text().contains("/creds"), "{}", logs.text());

    // A failing call to such a URL says nothing of it either.
    let port = refused_port().await;
    let e = client
        .get(&format!(
            "http://user:{URL_PASSWORD}@127.0.0.1:{port}/creds"
        ))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert_clean_error(&e, &e);

    // Odd user information: never a panic, never in the clear.
    for userinfo in [
        URL_PASSWORD.to_owned(),
        format!(":{URL_PASSWORD}"),
        format!("user:{URL_PASSWORD}%zz%"),
        format!("us%3Aer:{URL_PASSWORD}%40x"),
        format!("user:{URL_PASSWORD}:more"),
    ] {
        let url = format!("http://{userinfo}@{}/creds", server.authority());
        match client.get(&url).send().await {
            Ok(res) => assert_eq!(res.status(), 200, "{userinfo}"),
            Err(e) => {
                assert!(e.is_request(), "{userinfo}: {e:?}");
                assert_clean_error(&e, &e);
            }
        }
    }
    for a in server.arrivals_for("/creds") {
        assert_eq!(a.header("host"), Some(server.authority().as_str()));
        assert!(!a.path.contains(MARKER));
    }
}

/// Builds and reports: `Ok` or the `InvalidConfig` message.
fn build(b: parapet::ClientBuilder) -> Result<Client, InvalidConfig> {
    b.build()
}

#[tokio::test]
async fn absurd_configuration_is_a_typed_invalid_config() {
    let _logs = capture();
    let refused: Vec<(&str, parapet::ClientBuilder)> = vec![
        ("zero attempts", Client::builder().max_attempts(0)),
        ("zero deadline", Client::builder().deadline(Duration::ZERO)),
        (
            "zero attempt timeout",
            Client::builder().attempt_timeout(Duration::ZERO),
        ),
        (
            "zero body idle timeout",
            Client::builder().body_idle_timeout(Duration::ZERO),
        ),
        (
            "attempt timeout above the deadline",
            Client::builder()
                .deadline(Duration::from_secs(1))
                .attempt_timeout(Duration::from_secs(2)),
        ),
        ("base URL not a URL", Client::builder().base_url("::::")),
        ("relative base URL", Client::builder().base_url("/v1")),
        (
            "base URL with a query",
            Client::builder().base_url("https://api.example.com/v1?key=x"),
        ),
        (
            "invalid default header",
            Client::builder().default_header("x-a", "bad\nvalue"),
        ),
        (
            "invalid default header name",
            Client::builder().default_header("bad name", "v"),
        ),
        ("invalid user agent", Client::builder().user_agent("a\r\nb")),
        ("no roots", Client::builder().webpki_roots(false)),
    ];
    for (what, b) in refused {
        let e = build(b).unwrap_err();
        assert!(!e.message().is_empty(), "{what}");
        assert!(
            e.to_string().starts_with("invalid client configuration"),
            "{what}: {e}"
        );
    }

    // A custom retry policy is refused one step earlier, by its own
    // builder, with its own typed error.
    for (what, budget) in [
        (
            "window",
            parapet::retry::RetryBudget::new().window(Duration::ZERO),
        ),
        (
            "percent",
            parapet::retry::RetryBudget::new().percent(u32::MAX),
        ),
        ("host", parapet::retry::RetryBudget::new().max_hosts(0)),
    ] {
        let e = reliability::policy_builder(false)
            .budget(budget)
            .build()
            .unwrap_err();
        assert!(e.reason().contains(what), "{e}");
    }
    let e = reliability::policy_builder(false)
        .factor(f64::NAN)
        .build()
        .unwrap_err();
    assert!(e.reason().contains("factor"), "{e}");

    // Values that are extreme but mean something, accepted on purpose (and
    // each still gives a working client).
    let server = Server::start().await;
    server.on("/x").reply(Reply::ok().body("fine"));
    let accepted: Vec<(&str, parapet::ClientBuilder)> = vec![
        // "No deadline in practice": saturates to the far future.
        (
            "deadline of Duration::MAX",
            Client::builder().deadline(Duration::MAX),
        ),
        (
            "attempt timeout of Duration::MAX without a deadline",
            Client::builder()
                .deadline(None)
                .attempt_timeout(Duration::MAX),
        ),
        // Bounded by the deadline and the retry budget anyway.
        (
            "u32::MAX attempts",
            Client::builder().max_attempts(u32::MAX),
        ),
        // A cap of 0 makes streamed bodies unreplayable; bodies in memory
        // (bytes, JSON, forms) are always replayable. Legitimate.
        ("replay cap 0", Client::builder().replay_cap(0)),
        // An upper bound, not an allocation.
        (
            "pool of usize::MAX idle connections",
            Client::builder().pool_max_idle_per_host(usize::MAX),
        ),
        (
            "pool of 0 idle connections",
            Client::builder().pool_max_idle_per_host(0),
        ),
        (
            "pool idle timeout of zero",
            Client::builder().pool_idle_timeout(Duration::ZERO),
        ),
        (
            "body idle timeout of Duration::MAX",
            Client::builder().body_idle_timeout(Duration::MAX),
        ),
    ];
    for (what, b) in accepted {
        let client = build(b).unwrap_or_else(|e| panic!("{what}: {e}"));
        let res = client
            .get(&server.url("/x"))
            .deadline(Duration::MAX)
            .send()
            .await;
        let res = res.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(res.text().await.unwrap(), "fine", "{what}");
    }
}

#[tokio::test]
async fn a_zero_connect_timeout_is_a_typed_invalid_config() {
    let _logs = capture();
    // hyper-util polls the connect once before its timer, so a zero connect
    // timeout would let loopback connections through and fail every remote
    // one: a mistake that only shows in production. It is refused instead.
    let e = Client::builder()
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(e.message().contains("connect timeout"), "{e}");
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_capture_sees_what_the_stack_logs() {
    let logs = capture();
    let server = Server::start().await;
    server
        .on("/flaky")
        .replies([Reply::status(503), Reply::ok()]);
    let client = builder(false).build().unwrap();
    client.get(&server.url("/flaky")).send().await.unwrap();
    let text = logs.text();
    // The retry layer's DEBUG event, and the spans at TRACE with their
    // fields: the secrets check of every test reads all of this.
    assert!(text.contains("retrying request"), "{text}");
    assert!(text.contains("http.request.method"), "{text}");
    assert!(text.contains("/flaky"), "{text}");
}

#[tokio::test]
async fn planted_credentials_reach_the_server_and_never_a_log() {
    let logs = capture();
    let server = Server::start().await;
    // Each path fails once (a retry, with its events), then answers.
    for p in ["/bearer", "/basic", "/header", "/query", "/caller"] {
        server.on(p).replies([Reply::status(503), Reply::ok()]);
    }
    let with = |auth: AuthLayer| builder(false).auth(auth).build().unwrap();
    let bearer = with(AuthLayer::bearer(BEARER).unwrap());
    let basic = with(AuthLayer::basic("user", API_KEY).unwrap());
    let header = with(AuthLayer::api_key_header("x-api-key", API_KEY).unwrap());
    let query = with(AuthLayer::api_key_query("api_key", API_KEY).unwrap());
    let plain = builder(false).build().unwrap();

    bearer.get(&server.url("/bearer")).send().await.unwrap();
    basic.get(&server.url("/basic")).send().await.unwrap();
    header.get(&server.url("/header")).send().await.unwrap();
    query.get(&server.url("/query")).send().await.unwrap();
    plain
        .get(&server.url("/caller"))
        .header("authorization", format!("Bearer {BEARER}"))
        .header("cookie", format!("session={API_KEY}"))
        .send()
        .await
        .unwrap();

    // The credentials were really sent, on both attempts...
    let last = |p: &str| server.arrivals_for(p).pop().unwrap();
    assert_eq!(server.requests(), 10);
    let bearer_value = format!("Bearer {BEARER}");
    assert_eq!(
        last("/bearer").header("authorization"),
        Some(bearer_value.as_str())
    );
    let basic_value = format!("Basic {}", base64(format!("user:{API_KEY}").as_bytes()));
    assert_eq!(
        last("/basic").header("authorization"),
        Some(basic_value.as_str())
    );
    assert_eq!(last("/header").header("x-api-key"), Some(API_KEY));
    assert!(last("/query").query.unwrap().contains(API_KEY));
    assert_eq!(
        last("/caller").header("authorization"),
        Some(bearer_value.as_str())
    );
    // ...while the logs (checked again when `logs` drops) show the calls
    // and not one of them.
    assert!(logs.text().contains("/query"));
    logs.assert_no_secrets();
}

#[tokio::test]
async fn errors_and_debug_output_redact_credentials() {
    let _logs = capture();
    let layer = AuthLayer::bearer(BEARER).unwrap();
    let basic = AuthLayer::basic("user", API_KEY).unwrap();
    let grant = ClientCredentialsGrant::new(
        endpoint_via_facade("http://127.0.0.1:9/token"),
        "client-7",
        CLIENT_SECRET,
    )
    .unwrap();
    for text in [
        format!("{layer:?}"),
        format!("{basic:?}"),
        format!("{grant:?}"),
        format!("{:?}", builder(false).auth(layer.clone())),
        format!("{:?}", builder(false).auth(layer).build().unwrap()),
    ] {
        assert!(!text.contains(MARKER), "{text}");
    }
}
