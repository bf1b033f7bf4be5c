//! Test helpers: a capturing subscriber, a tiny retry loop, a hyper client.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use parapet_core::{Attempt, BoxError};
use tower::{Service, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

/// One span as the capture layer saw it.
#[derive(Debug, Clone)]
pub struct SeenSpan {
    pub id: u64,
    pub name: &'static str,
    pub level: Level,
    pub parent: Option<u64>,
    pub fields: Vec<(String, String)>,
}

impl SeenSpan {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One event as the capture layer saw it.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub level: Level,
    pub span: Option<u64>,
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Captured {
    pub spans: Vec<SeenSpan>,
    pub events: Vec<SeenEvent>,
}

/// A layer that records every span, field and event.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Captured>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = if let Some(p) = attrs.parent() {
            Some(p.into_u64())
        } else if attrs.is_contextual() {
            ctx.current_span().id().map(Id::into_u64)
        } else {
            None
        };
        self.0.lock().unwrap().spans.push(SeenSpan {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            level: *attrs.metadata().level(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: LayerContext<'_, S>) {
        let mut captured = self.0.lock().unwrap();
        if let Some(span) = captured
            .spans
            .iter_mut()
            .rev()
            .find(|s| s.id == id.into_u64())
        {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let span = if let Some(p) = event.parent() {
            Some(p.into_u64())
        } else if event.is_contextual() {
            ctx.current_span().id().map(Id::into_u64)
        } else {
            None
        };
        self.0.lock().unwrap().events.push(SeenEvent {
            level: *event.metadata().level(),
            span,
            fields,
        });
    }
}

impl Capture {
    pub fn spans(&self) -> Vec<SeenSpan> {
        self.0.lock().unwrap().spans.clone()
    }
    pub fn events(&self) -> Vec<SeenEvent> {
        self.0.lock().unwrap().events.clone()
    }
}

/// Lines written by a `tracing_subscriber::fmt` layer.
#[derive(Clone, Default)]
pub struct Lines(pub Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A subscriber with both the capture layer and a fmt layer writing every
/// span event and field (TRACE, enter/exit/close included) into `Lines`.
pub fn subscriber() -> (impl Subscriber + Send + Sync, Capture, Lines) {
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;

    let capture = Capture::default();
    let lines = Lines::default();
    let writer = lines.clone();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_span_events(FmtSpan::FULL)
        .with_writer(move || writer.clone());
    let sub = tracing_subscriber::registry()
        .with(capture.clone())
        .with(fmt.with_filter(tracing_subscriber::filter::LevelFilter::TRACE));
    (sub, capture, lines)
}

/// A test-only retry loop: resends on 5xx or error, up to `max` attempts,
/// setting `parapet_core::Attempt` on each attempt, as a retry layer does.
#[derive(Clone)]
pub struct TestRetry<S> {
    pub inner: S,
    pub max: u32,
}

impl<S, RB> Service<Request<Full<Bytes>>> for TestRetry<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let inner = self.inner.clone();
        let max = self.max;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let mut number = 1;
            loop {
                let mut attempt = Request::new(body.clone());
                *attempt.method_mut() = parts.method.clone();
                *attempt.uri_mut() = parts.uri.clone();
                *attempt.version_mut() = parts.version;
                *attempt.headers_mut() = parts.headers.clone();
                *attempt.extensions_mut() = parts.extensions.clone();
                attempt.extensions_mut().insert(Attempt::new(number, max));
                let res = inner.clone().oneshot(attempt).await;
                let again = number < max
                    && match &res {
                        Ok(r) => r.status().is_server_error(),
                        Err(_) => true,
                    };
                if !again {
                    return res;
                }
                tracing::debug!(attempt = number, "test retry: trying again");
                number += 1;
            }
        })
    }
}

/// The requests a stand-in upstream saw.
pub type Seen = Arc<Mutex<Vec<Request<Full<Bytes>>>>>;

/// A stand-in upstream answering the given statuses in turn (the last one
/// repeats) and recording the requests it saw.
pub fn scripted(
    statuses: &'static [u16],
) -> (
    Seen,
    impl Service<
        Request<Full<Bytes>>,
        Response = Response<()>,
        Error = BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let svc = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let n = {
            let mut log = log.lock().unwrap();
            log.push(req);
            log.len() - 1
        };
        let status = statuses[n.min(statuses.len() - 1)];
        async move {
            let mut res = Response::new(());
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, BoxError>(res)
        }
    });
    (seen, svc)
}

/// A hyper-util client as a tower service with `BoxError`.
pub fn hyper_client() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<hyper::body::Incoming>,
    Error = BoxError,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move { client.request(req).await.map_err(BoxError::from) }
    })
}
