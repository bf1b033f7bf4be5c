//! Shared helpers of the fault-injection suite (`faults`, `storms`,
//! `hostile`, `cancellation`): log capture with the planted-secret check,
//! fast clients and a hand-built stack, and a transport that counts attempts.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parapet::retry::{RetryLayer, RetryPolicy};
use parapet::timeout::{AttemptTimeoutLayer, DeadlineLayer};
use parapet::trace::{AttemptTraceLayer, RequestIdLayer, TraceLayer};
use parapet::{Client, ClientBuilder};
use parapet_core::{BoxError, IDEMPOTENCY_KEY, IdempotencyRules, ReplayBody};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::format::FmtSpan;

// ---------------------------------------------------------------------------
// Secrets and log capture
// ---------------------------------------------------------------------------

/// Every secret the suite plants contains this marker, and no captured log
/// line of any test may contain it.
pub const MARKER: &str = "PLANTED";
/// A bearer token.
pub const BEARER: &str = "tok_PLANTED_bearer_5e1d9a";
/// An access token a token endpoint hands out.
pub const ISSUED: &str = "tok_PLANTED_issued_77c2";
/// An `OAuth2` client secret.
pub const CLIENT_SECRET: &str = "PLANTED-client-secret-31f";
/// A password in a URL's user information.
pub const URL_PASSWORD: &str = "PLANTED-url-pass";
/// An API key.
pub const API_KEY: &str = "PLANTED_api_key_0b8e";

/// Standard base64, for the Basic-auth forms of planted secrets.
pub fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Everything the secrets check looks for: the marker, and the base64 forms
/// of the planted credentials that travel encoded.
fn forbidden() -> Vec<String> {
    vec![
        MARKER.to_owned(),
        base64(format!("client-7:{CLIENT_SECRET}").as_bytes()),
        base64(format!("user:{URL_PASSWORD}").as_bytes()),
        base64(format!("user:{API_KEY}").as_bytes()),
    ]
}

/// Captures everything logged at TRACE level (events, and spans as they
/// open and close, with their fields) while it lives, and when dropped
/// asserts that no planted secret appears in any line.
///
/// Every test of every binary of the suite starts with `let logs =
/// capture();`: tracing caches "does anybody listen to this callsite"
/// process-wide, so a test without a subscriber could make another test's
/// capture miss lines. The tests run on tokio's current-thread runtime, so
/// the thread-local subscriber also sees the client's spawned tasks.
#[must_use]
pub fn capture() -> Capture {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&buf);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    Capture { buf, _guard: guard }
}

pub struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Capture {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Asserts that no planted secret was logged so far.
    pub fn assert_no_secrets(&self) {
        let text = self.text();
        for needle in forbidden() {
            if let Some(line) = text.lines().find(|l| l.contains(&needle)) {
                panic!("a planted secret was logged: {line}");
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_secrets();
        }
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that neither form of an error mentions a planted secret.
pub fn assert_clean_error(e: &dyn std::fmt::Debug, d: &dyn std::fmt::Display) {
    let text = format!("{e:?} {d}");
    for needle in forbidden() {
        assert!(!text.contains(&needle), "an error shows a secret: {text}");
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// The deadline of the suite's clients: short, so faults fail fast.
pub const DEADLINE: Duration = Duration::from_millis(1500);
/// The attempt timeout of the suite's clients.
pub const ATTEMPT: Duration = Duration::from_millis(250);

/// A retry policy with the defaults except a short backoff (10..40 ms),
/// trusting `Idempotency-Key` headers when asked, with the facade's
/// classifier.
pub fn fast_policy(trust_key: bool) -> RetryPolicy {
    policy_builder(trust_key).build().unwrap()
}

/// The builder behind [`fast_policy`], to adjust.
pub fn policy_builder(trust_key: bool) -> parapet::retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .base_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(40))
        .idempotency(IdempotencyRules::new().trust_idempotency_key(trust_key))
        .classify(parapet::retry_classifier)
}

/// The facade's builder with the suite's short timeouts and fast retries.
pub fn builder(trust_key: bool) -> ClientBuilder {
    Client::builder()
        .deadline(DEADLINE)
        .attempt_timeout(ATTEMPT)
        .connect_timeout(ATTEMPT)
        .retry(fast_policy(trust_key))
}

/// A plain hyper-util client (HTTP/1.1, no TLS) sending `ReplayBody`.
pub fn hyper_client() -> HyperClient<HttpConnector, ReplayBody> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(ATTEMPT));
    HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(http)
}

/// A transport that counts the attempts that reach it (connect failures
/// included), for faults the server cannot see.
#[derive(Clone)]
pub struct Counting<S> {
    pub inner: S,
    pub count: Arc<AtomicUsize>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> (Self, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        (
            Self {
                inner,
                count: Arc::clone(&count),
            },
            count,
        )
    }
}

impl<S, R> Service<R> for Counting<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

/// A response body as the hand-built stack returns it.
pub type AnyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The hand-built stack's type.
pub type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<AnyBody>, BoxError>;

/// The recommended order assembled by hand with `tower::ServiceBuilder`
/// (no facade): request id, trace, deadline, retry, attempt trace, attempt
/// timeout, hyper-util. No throttle, rate limit or auth unless `extra`
/// adds them between retry and the attempt timeout.
pub fn hand_built(policy: RetryPolicy) -> Stack {
    hand_built_over(policy, hyper_client())
}

/// [`hand_built`] over another transport.
pub fn hand_built_over<T>(policy: RetryPolicy, transport: T) -> Stack
where
    T: Service<Request<ReplayBody>, Response = Response<hyper::body::Incoming>>
        + Clone
        + Send
        + Sync
        + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
{
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .layer(DeadlineLayer::new(DEADLINE))
        .layer(RetryLayer::new(policy))
        .layer(AttemptTraceLayer::new())
        .layer(AttemptTimeoutLayer::new(ATTEMPT))
        .service(transport);
    let svc = ServiceExt::<Request<Full<Bytes>>>::map_response(svc, |r| {
        r.map(|b| b.map_err(Into::into).boxed_unsync())
    });
    BoxCloneSyncService::new(svc)
}

// ---------------------------------------------------------------------------
// One call, either way
// ---------------------------------------------------------------------------

/// How a call ended, in the terms the assertions need.
#[derive(Debug)]
pub enum Outcome {
    /// A complete response: status and whole body.
    Complete(u16, Bytes),
    /// The headers came, reading the body failed.
    BodyFailed(u16, String),
    /// No response.
    Failed(String),
}

impl Outcome {
    pub fn is_complete_ok(&self) -> bool {
        matches!(self, Self::Complete(200, _))
    }
}

/// The two clients of the suite: the facade, and a hand-built stack.
#[derive(Clone)]
pub enum Via {
    Facade(Client),
    Stack(Stack),
}

impl Via {
    /// Whether this is the facade (whose whole-body readers re-send a
    /// broken body) rather than the hand-built stack.
    pub fn is_facade(&self) -> bool {
        matches!(self, Self::Facade(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Facade(_) => "facade",
            Self::Stack(_) => "hand-built stack",
        }
    }

    /// Sends one request and reads its whole body. `key` adds an
    /// `Idempotency-Key` header.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: &'static str,
        key: Option<&str>,
    ) -> Outcome {
        match self {
            Self::Facade(client) => {
                let mut rb = client.request(method, url).body(body);
                if let Some(k) = key {
                    rb = rb.header(IDEMPOTENCY_KEY, k);
                }
                match rb.send().await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        match res.bytes().await {
                            Ok(b) => Outcome::Complete(status, b),
                            Err(e) => {
                                assert!(e.is_body() || e.is_timeout(), "{e:?}");
                                Outcome::BodyFailed(status, e.to_string())
                            }
                        }
                    }
                    Err(e) => Outcome::Failed(format!("{e} [{e:?}]")),
                }
            }
            Self::Stack(stack) => {
                let mut req = Request::builder().method(method).uri(url);
                if let Some(k) = key {
                    req = req.header(IDEMPOTENCY_KEY, k);
                }
                let req = req
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                match stack.clone().oneshot(req).await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        match res.into_body().collect().await {
                            Ok(c) => Outcome::Complete(status, c.to_bytes()),
                            Err(e) => Outcome::BodyFailed(status, e.to_string()),
                        }
                    }
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
        }
    }
}

/// A free loopback port with nothing listening: bind, read the port, close.
pub async fn refused_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}
