//! What a subscriber sees: one call span, one child span per attempt, levels
//! that keep a fixed 503 quiet, and no secret anywhere.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // helpers outside #[test] fns

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use parapet_trace::{AttemptTraceLayer, RequestId, RequestIdLayer, TraceLayer};
use support::{TestRetry, scripted, subscriber};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tracing::Level;

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

#[tokio::test]
async fn one_call_span_and_an_attempt_span_per_attempt() {
    let (sub, capture, _lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[503, 503, 200]);
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new().internal_kind(true))
        .layer_fn(|inner| TestRetry { inner, max: 3 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);

    let res = svc
        .oneshot(get("http://127.0.0.1:8080/v1/items?page=2"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 3);

    let spans = capture.spans();
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let call = &spans[0];
    assert_eq!(call.name, "GET");
    assert_eq!(call.level, Level::INFO);
    assert_eq!(call.parent, None);
    assert_eq!(call.field("otel.kind"), Some("internal"));
    assert_eq!(call.field("http.request.method"), Some("GET"));
    assert_eq!(call.field("server.address"), Some("127.0.0.1"));
    assert_eq!(call.field("server.port"), Some("8080"));
    assert_eq!(
        call.field("url.full"),
        Some("http://127.0.0.1:8080/v1/items?page=2")
    );
    assert_eq!(call.field("http.response.status_code"), Some("200"));
    assert_eq!(call.field("attempts"), Some("3"));
    assert_eq!(call.field("error.type"), None);
    let id = RequestId::get(res.extensions()).unwrap();
    assert_eq!(call.field("request_id"), id.to_str());
    let duration: f64 = call
        .field("http.client.request.duration")
        .unwrap()
        .parse()
        .unwrap();
    assert!(duration >= 0.0);

    let attempts = &spans[1..];
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.name, "GET");
        assert_eq!(attempt.level, Level::DEBUG);
        assert_eq!(attempt.parent, Some(call.id), "attempt {n} is a child");
        assert_eq!(attempt.field("otel.kind"), Some("client"));
        assert_eq!(
            attempt.field("http.request.resend_count"),
            Some(n.to_string().as_str())
        );
        assert_eq!(
            attempt.field("url.full"),
            Some("http://127.0.0.1:8080/v1/items?page=2")
        );
    }
    let statuses: Vec<_> = attempts
        .iter()
        .map(|a| a.field("http.response.status_code").unwrap())
        .collect();
    assert_eq!(statuses, ["503", "503", "200"]);
    assert_eq!(attempts[0].field("error.type"), Some("503"));
    assert_eq!(attempts[0].field("otel.status_code"), Some("ERROR"));
    assert_eq!(attempts[2].field("error.type"), None);

    // A 503 that a retry fixed is not an error, not even a warning.
    let events = capture.events();
    assert!(
        events.iter().all(|e| e.level >= Level::DEBUG),
        "{events:#?}"
    );
    // The retry loop's own events land in the call span.
    let retry_events: Vec<_> = events
        .iter()
        .filter(|e| e.fields.iter().any(|(_, v)| v.contains("test retry")))
        .collect();
    assert_eq!(retry_events.len(), 2);
    assert!(retry_events.iter().all(|e| e.span == Some(call.id)));
}

#[tokio::test]
async fn a_call_that_stays_503_warns_once() {
    let (sub, capture, _lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (_, upstream) = scripted(&[503]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer_fn(|inner| TestRetry { inner, max: 2 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);

    let res = svc.oneshot(get("https://api.example.com/x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    let spans = capture.spans();
    let call = &spans[0];
    assert_eq!(call.field("otel.kind"), Some("client"));
    assert_eq!(call.field("server.port"), Some("443"));
    assert_eq!(call.field("error.type"), Some("503"));
    assert_eq!(call.field("otel.status_code"), Some("ERROR"));
    assert_eq!(call.field("attempts"), Some("2"));
    assert_eq!(call.field("request_id"), None);
    let loud: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.level <= Level::INFO)
        .collect();
    assert_eq!(loud.len(), 1, "{loud:#?}");
    assert_eq!(loud[0].level, Level::WARN);
    assert_eq!(loud[0].span, Some(call.id));
}

#[tokio::test]
async fn a_final_transport_failure_is_an_error_with_its_class() {
    let (sub, capture, _lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let refused = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Err::<http::Response<()>, _>(parapet_core::BoxError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    });
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer_fn(|inner| TestRetry { inner, max: 2 })
        .layer(AttemptTraceLayer::new())
        .service(refused);

    let err = svc.oneshot(get("http://127.0.0.1:9/")).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());

    let spans = capture.spans();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].field("error.type"), Some("connection_refused"));
    assert_eq!(spans[0].field("http.response.status_code"), None);
    assert_eq!(spans[2].field("error.type"), Some("connection_refused"));
    let errors: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.level == Level::ERROR)
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].span, Some(spans[0].id));
    // Attempt failures are only DEBUG.
    assert!(
        capture
            .events()
            .iter()
            .filter(|e| e.span == Some(spans[1].id))
            .all(|e| e.level == Level::DEBUG)
    );
}

#[tokio::test]
async fn the_request_id_is_read_from_the_response_when_trace_is_outermost() {
    let (sub, capture, _lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (_, upstream) = scripted(&[200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(RequestIdLayer::new())
        .service(upstream);
    let res = svc.oneshot(get("http://h.test/")).await.unwrap();
    let id = RequestId::get(res.extensions()).unwrap();
    let spans = capture.spans();
    assert_eq!(spans[0].field("request_id"), id.to_str());
    // Without an attempt layer the count comes from nowhere: left empty.
    assert_eq!(spans[0].field("attempts"), None);
}

#[tokio::test]
async fn without_the_response_record_the_call_span_still_has_the_id() {
    let (sub, capture, _lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[200]);
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new().record_in_response(false))
        .layer(TraceLayer::new())
        .service(upstream);
    let res = svc.oneshot(get("http://h.test/")).await.unwrap();
    assert!(RequestId::get(res.extensions()).is_none());
    let sent = seen.lock().unwrap()[0].headers()["x-request-id"].clone();
    let spans = capture.spans();
    assert_eq!(spans[0].field("request_id"), sent.to_str().ok());
}

#[tokio::test]
async fn an_unknown_method_is_named_http() {
    let (sub, capture, _lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (_, upstream) = scripted(&[200]);
    let svc = TraceLayer::new().layer(upstream);
    let req = Request::builder()
        .method("PURGE")
        .uri("http://cache.test/x")
        .body(Full::default())
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let spans = capture.spans();
    assert_eq!(spans[0].name, "HTTP");
    assert_eq!(spans[0].field("http.request.method"), Some("_OTHER"));
    assert_eq!(
        spans[0].field("http.request.method_original"),
        Some("PURGE")
    );
}

#[tokio::test]
async fn a_planted_secret_is_absent_from_every_line() {
    const SECRET: &str = "PLANTED-SECRET-4f9c";
    let (sub, capture, lines) = subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[500, 200]);
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .layer_fn(|inner| TestRetry { inner, max: 2 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);

    let uri = format!(
        "https://user:{SECRET}@api.example.com/v1/x?page=1&access_token={SECRET}&X-Amz-Signature={SECRET}&apiKey={SECRET}"
    );
    let mut sensitive = http::HeaderValue::from_static(SECRET);
    sensitive.set_sensitive(true);
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {SECRET}"))
        .header("proxy-authorization", format!("Basic {SECRET}"))
        .header("cookie", format!("sid={SECRET}"))
        .header("x-api-key", SECRET)
        .header("x-custom-secretive", sensitive)
        .body(Full::default())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The secret did reach the upstream: it was there to be leaked.
    assert_eq!(seen.lock().unwrap()[1].headers()["x-api-key"], SECRET);

    let text = lines.text();
    assert!(text.lines().count() > 5, "{text}");
    for line in text.lines() {
        assert!(!line.contains(SECRET), "leaked: {line}");
    }
    assert!(text.contains("REDACTED:REDACTED@api.example.com"), "{text}");
    assert!(text.contains("access_token=REDACTED"), "{text}");
    assert!(text.contains("X-Amz-Signature=REDACTED"), "{text}");
    assert!(text.contains("page=1"), "{text}");
    for span in capture.spans() {
        for (name, value) in &span.fields {
            assert!(!value.contains(SECRET), "{name} = {value}");
        }
    }
    for event in capture.events() {
        for (name, value) in &event.fields {
            assert!(!value.contains(SECRET), "{name} = {value}");
        }
    }
}
