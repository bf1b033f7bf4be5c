//! The convenience API over an in-process transport: URL resolution,
//! default headers, bodies, JSON errors that name the failing field, NDJSON,
//! status errors, and invalid configuration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use parapet::{Client, ClientBuilder};
use parapet_core::{IDEMPOTENCY_KEY, Idempotency, ReplayBody};
use serde::Deserialize;
use tower::service_fn;

/// A transport that answers with a description of the request it got.
fn echo() -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|req: Request<ReplayBody>| async move {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let mut headers: Vec<String> = parts
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
            .collect();
        headers.sort();
        let idem = match parts.extensions.get::<Idempotency>() {
            Some(Idempotency::Idempotent) => "idempotent",
            Some(Idempotency::NotIdempotent) => "not-idempotent",
            None => "default",
        };
        let text = format!(
            "{} {}\n{}\n{}\n{}",
            parts.method,
            parts.uri,
            headers.join(";"),
            idem,
            String::from_utf8_lossy(&body)
        );
        Ok(Response::new(Full::new(Bytes::from(text))))
    })
}

type Ready = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// A transport that answers every request with this status and body.
fn answer(
    status: u16,
    body: &'static str,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = Ready,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp.headers_mut()
            .insert("retry-after", "7".parse().unwrap());
        std::future::ready(Ok(resp))
    })
}

fn client_with(base: &str) -> Client {
    ClientBuilder::new()
        .base_url(base)
        .build_with(echo())
        .unwrap()
}

async fn echo_text(rb: parapet::RequestBuilder) -> String {
    rb.send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn relative_paths_resolve_against_the_base_url() {
    let c = client_with("http://api.test/v1/");
    assert!(
        echo_text(c.get("users/7"))
            .await
            .starts_with("GET http://api.test/v1/users/7\n")
    );
    assert!(
        echo_text(c.get("/users/7?x=1"))
            .await
            .starts_with("GET http://api.test/v1/users/7?x=1\n")
    );
    // An absolute URL is used as it is.
    assert!(
        echo_text(c.delete("http://other.test/a"))
            .await
            .starts_with("DELETE http://other.test/a\n")
    );
}

#[tokio::test]
async fn a_relative_path_without_a_base_url_is_a_request_error() {
    let c = ClientBuilder::new().build_with(echo()).unwrap();
    let err = c.get("/users").send().await.unwrap_err();
    assert!(err.is_request(), "{err:?}");
}

#[tokio::test]
async fn default_headers_and_user_agent_are_sent_unless_overridden() {
    let c = ClientBuilder::new()
        .base_url("http://api.test")
        .default_header("x-team", "payments")
        .build_with(echo())
        .unwrap();
    let text = echo_text(c.get("/")).await;
    assert!(
        text.contains(&format!("user-agent={}", parapet::DEFAULT_USER_AGENT)),
        "{text}"
    );
    assert!(text.contains("x-team=payments"));
    let text = echo_text(c.get("/").header("x-team", "search")).await;
    assert!(text.contains("x-team=search") && !text.contains("x-team=payments"));
}

#[tokio::test]
async fn query_json_form_and_bytes_bodies() {
    let c = client_with("http://api.test");
    let text = echo_text(c.get("/s?a=1").query(&[("q", "rust lang"), ("page", "2")])).await;
    assert!(
        text.starts_with("GET http://api.test/s?a=1&q=rust+lang&page=2\n"),
        "{text}"
    );

    let text = echo_text(c.post("/j").json(&serde_json::json!({"amount": 10}))).await;
    assert!(text.contains("content-type=application/json"));
    assert!(text.ends_with("{\"amount\":10}"));

    let text = echo_text(c.post("/f").form(&[("grant_type", "client_credentials")])).await;
    assert!(text.contains("content-type=application/x-www-form-urlencoded"));
    assert!(text.ends_with("grant_type=client_credentials"));

    let text = echo_text(c.put("/b").body("raw bytes")).await;
    assert!(text.ends_with("raw bytes"));
}

#[tokio::test]
async fn idempotency_key_and_retry_override_reach_the_stack() {
    let c = client_with("http://api.test");
    let text = echo_text(c.post("/pay").idempotency_key()).await;
    assert!(text.contains(&format!("{IDEMPOTENCY_KEY}=")), "{text}");
    assert!(text.contains("\nidempotent\n"));
    let text = echo_text(c.get("/x").retry(false)).await;
    assert!(text.contains("\nnot-idempotent\n"));
}

#[tokio::test]
async fn invalid_header_values_are_request_errors_not_panics() {
    let c = client_with("http://api.test");
    let err = c
        .get("/")
        .header("x-bad", "line\nbreak")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request());
    let err = c.get("/").header("bad name", "v").send().await.unwrap_err();
    assert!(err.is_request());
    let err = c.get("http://[::1").send().await.unwrap_err();
    assert!(err.is_request());
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Page {
    data: Data,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Data {
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Item {
    id: u64,
}

#[tokio::test]
async fn json_mismatch_names_the_failing_field_path() {
    let c = ClientBuilder::new()
        .base_url("http://api.test")
        .retry_off()
        .build_with(answer(
            200,
            r#"{"data":{"items":[{"id":1},{"id":2},{"id":"three"}]}}"#,
        ))
        .unwrap();
    let err = c
        .get("/")
        .send()
        .await
        .unwrap()
        .json::<Page>()
        .await
        .unwrap_err();
    assert!(err.is_decode());
    let json = std::error::Error::source(&err)
        .unwrap()
        .downcast_ref::<parapet::JsonError>()
        .unwrap();
    assert_eq!(json.path(), "data.items[2].id");
    assert!(err.to_string().contains("data.items[2].id"), "{err}");
}

#[tokio::test]
async fn error_for_status_carries_status_retry_after_and_a_bounded_snippet() {
    let c = ClientBuilder::new()
        .base_url("http://api.test")
        .retry_off()
        .build_with(answer(503, "upstream is down for maintenance"))
        .unwrap();
    let err = c
        .get("/")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    assert!(err.is_status() && err.is_retryable());
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(
        err.body_snippet(),
        Some(&b"upstream is down for maintenance"[..])
    );

    let c = ClientBuilder::new()
        .base_url("http://api.test")
        .retry_off()
        .build_with(answer(404, "no such thing"))
        .unwrap();
    let err = c
        .get("/")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    let ok = ClientBuilder::new()
        .base_url("http://api.test")
        .retry_off()
        .build_with(answer(200, "fine"))
        .unwrap();
    assert!(
        ok.get("/")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn ndjson_items_stream_and_a_bad_line_is_reported_with_its_number() {
    let c = ClientBuilder::new()
        .base_url("http://api.test")
        .retry_off()
        .build_with(answer(
            200,
            "{\"id\":1}\n\n{\"id\":2}\r\n{\"id\":\"x\"}\n{\"id\":4}",
        ))
        .unwrap();
    let mut stream = c.get("/").send().await.unwrap().ndjson::<Item>();
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    while let Some(item) = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    })
    .await
    {
        match item {
            Ok(i) => ids.push(i.id),
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert_eq!(ids, [1, 2, 4]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("line 4") && errors[0].contains("id"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn bytes_limited_refuses_a_body_over_the_limit() {
    let c = ClientBuilder::new()
        .base_url("http://api.test")
        .retry_off()
        .build_with(answer(200, "0123456789"))
        .unwrap();
    let err = c
        .get("/")
        .send()
        .await
        .unwrap()
        .bytes_limited(4)
        .await
        .unwrap_err();
    assert!(err.is_body());
    let all = c
        .get("/")
        .send()
        .await
        .unwrap()
        .bytes_limited(10)
        .await
        .unwrap();
    assert_eq!(all, "0123456789");
}

#[test]
fn inconsistent_configuration_is_refused() {
    let err = ClientBuilder::new()
        .deadline(Duration::from_secs(1))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert!(err.message().contains("attempt timeout"), "{err}");
    for bad in [
        "not a url",
        "/relative/only",
        "http://host.test/path?query=1",
    ] {
        let err = ClientBuilder::new().base_url(bad).build().unwrap_err();
        assert!(err.message().contains("base URL"), "{bad}: {err}");
    }
    let err = ClientBuilder::new()
        .default_header("x", "a\nb")
        .build()
        .unwrap_err();
    assert!(err.message().contains("default header"));
    let err = ClientBuilder::new()
        .webpki_roots(false)
        .build()
        .unwrap_err();
    assert!(err.message().contains("root"));
}

#[test]
fn the_client_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Client>();
}

#[test]
fn a_deadline_alone_shortens_the_default_attempt_timeout() {
    // Only an attempt timeout the caller set can contradict the deadline.
    assert!(
        ClientBuilder::new()
            .deadline(Duration::from_secs(2))
            .build()
            .is_ok()
    );
    assert!(
        ClientBuilder::new()
            .deadline(Duration::from_secs(2))
            .attempt_timeout(Duration::from_secs(3))
            .build()
            .is_err()
    );
    let err = ClientBuilder::new().max_attempts(0).build().unwrap_err();
    assert!(err.message().contains("zero attempts"), "{err}");
    let err = ClientBuilder::new()
        .deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.message().contains("deadline"), "{err}");
}

#[tokio::test]
async fn credentials_in_the_url_become_a_sensitive_basic_header() {
    let c = ClientBuilder::new().build_with(echo()).unwrap();
    let text = echo_text(c.get("http://ada:p%40ss@api.test/me")).await;
    // "ada:p@ss" in base64, and no userinfo left in the URI.
    assert!(text.starts_with("GET http://api.test/me\n"), "{text}");
    assert!(text.contains("authorization=Basic YWRhOnBAc3M="), "{text}");
    // A caller's own Authorization header wins.
    let text = echo_text(
        c.get("http://ada:x@api.test/me")
            .header("authorization", "Bearer t"),
    )
    .await;
    assert!(
        text.contains("authorization=Bearer t") && text.starts_with("GET http://api.test/me\n")
    );
}
