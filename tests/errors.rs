//! Issue 17: one shape for "the server said wait", and errors a newcomer
//! can read. Every test runs against the testkit's loopback server and
//! checks from the server's side what arrived.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parapet::ratelimit::{Quota, RateLimitLayer};
use parapet::{Client, InvalidConfig, WaitSource};
use parapet_testkit::{Reply, Server};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A wait measured later than the server's answer: a little under it.
fn about(wait: Option<Duration>, expected: Duration) -> bool {
    wait.is_some_and(|w| w <= expected && w + secs(2) > expected)
}

// ---------------------------------------------------------------------
// One shape for throttling
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_429_and_the_call_its_gate_holds_back_give_the_same_signal() {
    let api = Server::start().await;
    api.on("/busy")
        .reply(Reply::status(429).header("retry-after", "120"));
    api.on("/other").reply(Reply::ok());
    let client = Client::new().unwrap();

    // The answer arrived: send succeeds with it, and says to wait.
    let resp = client.get(&api.url("/busy")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.retry_after(), Some(secs(120)));
    let err = resp.error_for_status_ref().unwrap_err();
    assert!(err.is_rate_limited() && err.is_status());
    assert_eq!(err.wait_source(), Some(WaitSource::Server));
    assert_eq!(err.retry_after(), Some(secs(120)));

    // The next call to that host, on another path, is not sent: the same
    // predicate, the rest of the same wait, the gate as its source.
    let err = client.get(&api.url("/other")).send().await.unwrap_err();
    assert!(err.is_rate_limited() && !err.is_status(), "{err:?}");
    assert_eq!(err.wait_source(), Some(WaitSource::ServerGate));
    assert!(about(err.retry_after(), secs(120)), "{err:?}");
    assert!(err.is_retryable());

    assert_eq!(api.hits("/busy"), 1);
    assert_eq!(api.hits("/other"), 0, "the gated call went out");
    assert_eq!(api.arrivals().len(), 1);
}

#[tokio::test]
async fn a_503_with_retry_after_is_a_rate_limit_like_a_429() {
    let api = Server::start().await;
    // Longer than the retry layer waits (60 s): returned at once.
    api.on("/maintenance")
        .reply(Reply::status(503).header("retry-after", "90"));
    let client = Client::new().unwrap();

    let resp = client.get(&api.url("/maintenance")).send().await.unwrap();
    assert_eq!(resp.retry_after(), Some(secs(90)));
    let err = resp.error_for_status().await.unwrap_err();
    assert!(err.is_rate_limited(), "{err:?}");
    assert_eq!(err.wait_source(), Some(WaitSource::Server));
    assert_eq!(err.retry_after(), Some(secs(90)));

    let err = client
        .get(&api.url("/maintenance"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.wait_source(), Some(WaitSource::ServerGate));
    assert!(about(err.retry_after(), secs(90)), "{err:?}");
    assert_eq!(api.hits("/maintenance"), 1);
}

#[tokio::test]
async fn a_503_without_retry_after_is_a_server_error_not_a_rate_limit() {
    let api = Server::start().await;
    api.on("/down").reply(Reply::status(503));
    let client = Client::builder().retry_off().build().unwrap();

    let resp = client.get(&api.url("/down")).send().await.unwrap();
    assert_eq!(resp.retry_after(), None);
    let err = resp.error_for_status().await.unwrap_err();
    assert!(!err.is_rate_limited() && err.is_retryable());
    assert_eq!(err.wait_source(), None);

    // No gate closed: the next call goes out.
    client.get(&api.url("/down")).send().await.unwrap();
    assert_eq!(api.hits("/down"), 2);
}

#[tokio::test]
async fn a_spent_quota_403_is_a_rate_limit_with_the_windows_reset() {
    let api = Server::start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    api.on("/repos").reply(
        Reply::status(403)
            .header("x-ratelimit-limit", "60")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", (now + 100).to_string()),
    );
    let client = Client::new().unwrap();

    let resp = client.get(&api.url("/repos")).send().await.unwrap();
    assert!(
        about(resp.retry_after(), secs(100)),
        "{:?}",
        resp.retry_after()
    );
    let err = resp.error_for_status().await.unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.wait_source(), Some(WaitSource::Server));
    assert!(about(err.retry_after(), secs(100)));

    let err = client.get(&api.url("/repos")).send().await.unwrap_err();
    assert_eq!(err.wait_source(), Some(WaitSource::ServerGate));
    assert!(about(err.retry_after(), secs(100)), "{err:?}");
    assert_eq!(api.hits("/repos"), 1);
}

#[tokio::test]
async fn a_day_long_wait_is_the_same_five_minutes_on_every_path() {
    let api = Server::start().await;
    api.on("/busy")
        .reply(Reply::status(429).header("retry-after", "86400"));
    let client = Client::new().unwrap();
    let max = parapet::DEFAULT_MAX_SERVER_WAIT;

    let resp = client.get(&api.url("/busy")).send().await.unwrap();
    assert_eq!(resp.retry_after(), Some(max));
    assert_eq!(resp.headers()["retry-after"], "86400");
    assert_eq!(
        resp.error_for_status_ref().unwrap_err().retry_after(),
        Some(max)
    );

    let err = client.get(&api.url("/busy")).send().await.unwrap_err();
    assert!(about(err.retry_after(), max), "{err:?}");
    assert_eq!(api.hits("/busy"), 1);
}

#[tokio::test]
async fn the_local_rate_limit_refusing_is_the_same_signal_from_the_client() {
    let api = Server::start().await;
    api.on("/items").reply(Reply::ok());
    let client = Client::builder()
        .rate_limit(RateLimitLayer::new(Quota::every(secs(1)).unwrap()).reject())
        .build()
        .unwrap();

    client.get(&api.url("/items")).send().await.unwrap();
    let err = client.get(&api.url("/items")).send().await.unwrap_err();
    assert!(err.is_rate_limited() && err.is_retryable(), "{err:?}");
    assert_eq!(err.wait_source(), Some(WaitSource::Local));
    assert!(about(err.retry_after(), secs(1)), "{err:?}");
    // Rounded, and said once.
    assert_eq!(
        err.to_string(),
        "rate limited by this client's rate limit: not sent (retry after 1s)"
    );
    assert_eq!(api.hits("/items"), 1);
}

#[tokio::test]
async fn a_gated_call_says_in_words_who_said_to_wait() {
    let api = Server::start().await;
    api.on("/busy")
        .reply(Reply::status(429).header("retry-after", "120"));
    let client = Client::new().unwrap();
    client.get(&api.url("/busy")).send().await.unwrap();

    let err = client.get(&api.url("/busy")).send().await.unwrap_err();
    let text = err.to_string();
    let head =
        "rate limited by the server: not sent, an earlier answer from this host asked to wait";
    assert!(
        text == format!("{head} (retry after 2min)")
            || text == format!("{head} (retry after 1min 59s)"),
        "{text}"
    );
}

#[tokio::test]
async fn clones_of_one_builder_share_the_gate_and_separate_builders_do_not() {
    let api = Server::start().await;
    api.on("/busy")
        .reply(Reply::status(429).header("retry-after", "120"));
    let builder = Client::builder();
    let first = builder.clone().build().unwrap();
    let second = builder.build().unwrap();
    let separate = Client::builder().build().unwrap();

    assert_eq!(
        first.get(&api.url("/busy")).send().await.unwrap().status(),
        429
    );
    // Built from a clone of the same builder: the same gate.
    let err = second.get(&api.url("/busy")).send().await.unwrap_err();
    assert_eq!(err.wait_source(), Some(WaitSource::ServerGate));
    // And a clone of a client, of course.
    let err = first
        .clone()
        .get(&api.url("/busy"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.wait_source(), Some(WaitSource::ServerGate));
    assert_eq!(api.hits("/busy"), 1);

    // A client built from another builder has a gate of its own.
    let resp = separate.get(&api.url("/busy")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(api.hits("/busy"), 2);
}

// ---------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_bad_request_header_is_named_and_its_value_never_printed() {
    let api = Server::start().await;
    let client = Client::new().unwrap();
    let err = client
        .get(&api.url("/"))
        .header("x-api-key", "sk-live-123\nx-evil: 1")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request());
    let text = err.to_string();
    assert!(
        text.contains("invalid header value for `x-api-key`"),
        "{text}"
    );
    assert!(!text.contains("sk-live"), "{text}");
    assert!(!format!("{err:?}").contains("sk-live"));
    assert!(api.arrivals().is_empty());
}

#[test]
fn a_bad_default_header_is_named_and_its_value_never_printed() {
    let err = Client::builder()
        .default_header("x-api-key", "sk-live-123\r\n")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("default header"), "{text}");
    assert!(text.contains("`x-api-key`"), "{text}");
    assert!(!text.contains("sk-live"), "{text}");
}

#[test]
fn a_base_url_without_a_scheme_says_so() {
    for url in ["api.example.com/v1", "localhost:8080/v1"] {
        let err = Client::builder().base_url(url).build().unwrap_err();
        assert!(err.message().contains("missing its scheme"), "{url}: {err}");
    }
}

#[test]
fn a_bare_host_as_base_url_says_its_scheme_is_missing() {
    // `http::Uri` parses these as an authority alone.
    for url in ["api.example.com", "localhost:8080"] {
        let err = Client::builder().base_url(url).build().unwrap_err();
        assert!(err.message().contains("missing its scheme"), "{url}: {err}");
    }
}

#[tokio::test]
async fn a_status_error_says_how_many_attempts_and_why_it_stopped() {
    let api = Server::start().await;
    api.on("/down").reply(Reply::status(503));
    let client = Client::new().unwrap();

    let resp = client.get(&api.url("/down")).send().await.unwrap();
    let err = resp.error_for_status().await.unwrap_err();
    assert_eq!(err.attempts(), Some(3));
    assert_eq!(
        err.to_string(),
        "server answered 503 Service Unavailable (not retried after 3 attempts: no attempts left)"
    );
    assert_eq!(api.hits("/down"), 3);

    // A POST is sent once; its 503 is retryable, and says why it was not.
    let resp = client.post(&api.url("/down")).send().await.unwrap();
    let err = resp.error_for_status_ref().unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.attempts(), Some(1));
    let why = "(not retried after 1 attempt: the request is not idempotent)";
    assert!(err.to_string().ends_with(why), "{err}");
    assert_eq!(api.hits("/down"), 4);

    // An answer that is not retryable at all says only its status.
    api.on("/gone").reply(Reply::status(404));
    let resp = client.get(&api.url("/gone")).send().await.unwrap();
    let err = resp.error_for_status().await.unwrap_err();
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(err.to_string(), "server answered 404 Not Found");
}

#[tokio::test]
async fn durations_in_a_timeout_are_rounded() {
    let api = Server::start().await;
    api.on("/slow").reply(Reply::hang());
    let client = Client::builder()
        .deadline(Duration::from_millis(800))
        .retry_off()
        .build()
        .unwrap();

    let err = client.get(&api.url("/slow")).send().await.unwrap_err();
    assert!(err.is_timeout());
    let text = err.to_string();
    // The attempt was bounded by what was left of the deadline, 800 ms
    // less a few microseconds: said as 800ms, not 799.987654ms.
    assert!(text.contains("800ms"), "{text}");
    assert!(!text.contains("799."), "{text}");
    assert_eq!(api.hits("/slow"), 1);
}

#[tokio::test]
async fn a_deadline_error_says_its_budget_and_its_attempts() {
    let api = Server::start().await;
    api.on("/slow")
        .replies([Reply::status(503), Reply::status(503), Reply::hang()]);
    let client = Client::builder()
        .deadline(Duration::from_millis(800))
        .build()
        .unwrap();

    let err = client.get(&api.url("/slow")).send().await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.attempts(), Some(3));
    assert!(
        err.to_string()
            .starts_with("deadline 800ms exceeded after 3 attempts"),
        "{err}"
    );
    assert_eq!(api.hits("/slow"), 3);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_described_without_a_stray_path() {
    let api = Server::start().await;
    api.on("/html").reply(
        Reply::status(200)
            .header("content-type", "text/html; charset=utf-8")
            .body("<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>"),
    );
    let client = Client::new().unwrap();

    let err = client
        .get(&api.url("/html"))
        .send()
        .await
        .unwrap()
        .json::<Vec<u32>>()
        .await
        .unwrap_err();
    assert!(err.is_decode());
    let text = err.to_string();
    assert!(!text.contains(".:"), "{text}");
    assert_eq!(
        text,
        "response body did not decode: expected value at line 1 column 1 (the body is not \
         JSON: content-type text/html; charset=utf-8, starts with \
         \"<html> <head><title>502 Bad Gateway</title></head> <body>nginx</…\")"
    );
    let json = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<parapet::JsonError>())
        .unwrap();
    assert_eq!(json.path(), ".");
    assert_eq!(json.content_type(), Some("text/html; charset=utf-8"));
}

#[tokio::test]
async fn a_body_that_is_not_text_is_never_quoted() {
    let api = Server::start().await;
    api.on("/bin").reply(
        Reply::ok()
            .header("content-type", "application/octet-stream")
            .body(&b"\x00\x01secret-bytes"[..]),
    );
    api.on("/none").reply(Reply::ok().body("plain words"));
    api.on("/form").reply(
        Reply::ok()
            .header("content-type", "application/x-www-form-urlencoded")
            .body("access_token=abc"),
    );
    let client = Client::new().unwrap();

    for (path, ct) in [
        ("/bin", "content-type application/octet-stream"),
        ("/none", "no content-type"),
        ("/form", "content-type application/x-www-form-urlencoded"),
    ] {
        let err = client
            .get(&api.url(path))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.ends_with(&format!("(the body is not JSON: {ct})")),
            "{text}"
        );
        let json = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<parapet::JsonError>())
            .unwrap();
        assert_eq!(json.snippet(), None, "{path}");
    }
}

#[tokio::test]
async fn a_text_body_that_may_hold_a_credential_or_controls_is_cleaned() {
    let api = Server::start().await;
    api.on("/secret").reply(
        Reply::ok()
            .header("content-type", "text/plain")
            .body("error: bad api_key sk-live-123"),
    );
    api.on("/controls").reply(
        Reply::ok()
            .header("content-type", "text/plain")
            .body("oops\u{1b}[31m\u{202e}red"),
    );
    let client = Client::new().unwrap();

    let decode = |path: &'static str| {
        let client = client.clone();
        let url = api.url(path);
        async move {
            client
                .get(&url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let text = decode("/secret").await;
    assert!(!text.contains("sk-live"), "{text}");
    assert!(text.contains("withheld"), "{text}");

    let text = decode("/controls").await;
    assert!(
        text.contains("starts with \"oops\u{fffd}[31m\u{fffd}red\""),
        "{text}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'));
}

#[tokio::test]
async fn json_that_is_only_wrong_names_its_path_and_quotes_nothing() {
    let api = Server::start().await;
    api.on("/page").reply(Reply::json(r#"{"items":[1,"two"]}"#));
    let client = Client::new().unwrap();

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Page {
        items: Vec<u32>,
    }
    let err = client
        .get(&api.url("/page"))
        .send()
        .await
        .unwrap()
        .json::<Page>()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("response body did not decode: items[1]: invalid type"),
        "{text}"
    );
    assert!(!text.contains("not JSON"), "{text}");
}

/// Issue 17: a rate read from configuration is checked with one `?` in a
/// function returning the facade's `InvalidConfig`.
#[tokio::test]
async fn a_bad_rate_from_configuration_is_an_invalid_config() {
    fn build(rate: f64) -> Result<Client, InvalidConfig> {
        let quota = Quota::rate(rate)?;
        Client::builder()
            .rate_limit(RateLimitLayer::new(quota))
            .build()
    }
    let err = build(0.0).unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(build(f64::NAN).is_err());
    assert!(build(0.5).is_ok());
}
