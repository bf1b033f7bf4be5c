//! W3C `traceparent` injection (feature `opentelemetry`).
#![cfg(feature = "opentelemetry")]
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // helpers outside #[test] fns

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use opentelemetry::testing::trace::TestSpan;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use parapet_trace::{AttemptTraceLayer, TraceLayer};
use support::{Capture, TestRetry, scripted};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: [u8; 16] = [0xab; 16];

/// A tracer that starts every root span in trace `abab...` and numbers
/// span ids 1, 2, 3, ...
#[derive(Debug, Clone, Default)]
struct CountingTracer(Arc<AtomicU64>);

impl Tracer for CountingTracer {
    type Span = TestSpan;

    fn build_with_context(
        &self,
        _builder: SpanBuilder,
        parent_cx: &opentelemetry::Context,
    ) -> TestSpan {
        let parent = parent_cx.span().span_context().clone();
        let trace_id = if parent.is_valid() {
            parent.trace_id()
        } else {
            TraceId::from_bytes(TRACE_ID)
        };
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        TestSpan(SpanContext::new(
            trace_id,
            SpanId::from_bytes(n.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ))
    }
}

/// A subscriber with the OpenTelemetry layer (up to `level`) and the
/// capture layer.
fn otel(level: LevelFilter) -> (impl Subscriber + Send + Sync, Capture) {
    let capture = Capture::default();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(CountingTracer::default())
        .with_filter(level);
    let sub = tracing_subscriber::registry()
        .with(capture.clone())
        .with(layer);
    (sub, capture)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://127.0.0.1:1/x")
        .body(Full::default())
        .unwrap()
}

fn traceparents(seen: &[Request<Full<Bytes>>]) -> Vec<Option<String>> {
    seen.iter()
        .map(|r| {
            r.headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

fn span_id(n: u64) -> String {
    format!("{n:016x}")
}

#[tokio::test]
async fn each_attempt_names_its_own_span() {
    let (sub, _capture) = otel(LevelFilter::TRACE);
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[503, 503, 200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new().internal_kind(true))
        .layer_fn(|inner| TestRetry { inner, max: 3 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);
    svc.oneshot(get()).await.unwrap();

    let sent = traceparents(&seen.lock().unwrap());
    let trace = "ab".repeat(16);
    // The call span is span 1; attempts are spans 2, 3 and 4.
    assert_eq!(
        sent,
        [2, 3, 4].map(|n| Some(format!("00-{trace}-{}-01", span_id(n))))
    );
}

#[tokio::test]
async fn without_attempt_spans_the_call_span_is_named() {
    // Attempt spans are DEBUG: filtered out here.
    let (sub, _capture) = otel(LevelFilter::INFO);
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[503, 200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer_fn(|inner| TestRetry { inner, max: 3 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);
    svc.oneshot(get()).await.unwrap();

    let expected = Some(format!("00-{}-{}-01", "ab".repeat(16), span_id(1)));
    assert_eq!(
        traceparents(&seen.lock().unwrap()),
        [expected.clone(), expected]
    );
}

#[tokio::test]
async fn a_callers_traceparent_is_never_replaced() {
    let (sub, _capture) = otel(LevelFilter::TRACE);
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[503, 200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer_fn(|inner| TestRetry { inner, max: 3 })
        .layer(AttemptTraceLayer::new())
        .service(upstream);
    let theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut req = get();
    req.headers_mut()
        .insert("traceparent", http::HeaderValue::from_static(theirs));
    svc.oneshot(req).await.unwrap();

    let sent = traceparents(&seen.lock().unwrap());
    assert_eq!(sent, [Some(theirs.to_owned()), Some(theirs.to_owned())]);
}

#[tokio::test]
async fn an_invalid_context_sends_nothing() {
    // The default tracer of tracing-opentelemetry makes no ids: every span
    // context is all zeros, which must never be sent.
    let sub = tracing_subscriber::registry().with(tracing_opentelemetry::layer());
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(AttemptTraceLayer::new())
        .service(upstream);
    svc.oneshot(get()).await.unwrap();
    assert_eq!(traceparents(&seen.lock().unwrap()), [None]);
}

#[tokio::test]
async fn without_the_opentelemetry_layer_nothing_is_sent() {
    let (sub, capture, _lines) = support::subscriber();
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(AttemptTraceLayer::new())
        .service(upstream);
    svc.oneshot(get()).await.unwrap();
    assert_eq!(capture.spans().len(), 2);
    assert_eq!(traceparents(&seen.lock().unwrap()), [None]);
}

#[tokio::test]
async fn a_parent_from_upstream_keeps_its_trace_id() {
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let (sub, _capture) = otel(LevelFilter::TRACE);
    let _guard = tracing::subscriber::set_default(sub);
    let (seen, upstream) = scripted(&[200]);
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(AttemptTraceLayer::new())
        .service(upstream);

    // An inbound request's context, as a server-side propagator would set it.
    let remote = SpanContext::new(
        TraceId::from_bytes([0x11; 16]),
        SpanId::from_bytes([0x22; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let handler = tracing::info_span!("handler");
    handler
        .set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
        .unwrap();
    tracing::Instrument::instrument(svc.oneshot(get()), handler)
        .await
        .unwrap();

    let sent = traceparents(&seen.lock().unwrap());
    let sent = sent[0].as_deref().unwrap();
    assert!(
        sent.starts_with(&format!("00-{}-", "11".repeat(16))),
        "{sent}"
    );
    assert!(sent.ends_with("-01"));
    assert_eq!(sent.len(), 55);
}
