//! Shared pieces of parapet's benchmarks: an always-ready in-process inner
//! service, a driver that runs one call to its end without an executor, and
//! the list of in-memory cases (each layer alone, the stacks, the facade).
//!
//! The criterion bench (`benches/layers.rs`) times these cases; the
//! `allocs` binary counts their heap allocations with a counting global
//! allocator. Both run the very same closures.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::{Empty, Full};
use parapet_auth::AuthLayer;
use parapet_ratelimit::{ConcurrencyLimitLayer, Quota, RateLimitLayer, ThrottleLayer};
use parapet_retry::RetryLayer;
use parapet_timeout::{AttemptTimeoutLayer, DeadlineLayer};
use parapet_trace::{AttemptTraceLayer, RequestIdLayer, TraceLayer};
use tower::{Layer, Service, ServiceBuilder};

/// The URI every in-memory request goes to (static: cloning it allocates nothing).
pub const URL: &str = "http://api.example.com/v1/items";

/// The innermost service of the in-memory cases: always ready, answers at
/// once with `200 OK` and a two-byte `Full` body, allocating nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready;

impl<B> Service<Request<B>> for Ready {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        drop(req);
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"{}")))))
    }
}

/// A fresh GET request with an empty body and one header
/// (`accept: application/json`), as a caller would make it. Its header map
/// is allocated here (two allocations, counted in `bare`), so that a layer
/// adding a header is charged for the header, not for the map; its
/// extensions are empty, as a caller's usually are.
#[must_use]
pub fn request(uri: &Uri) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = uri.clone();
    req.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    req
}

/// Polls `fut` once with a no-op waker; the in-memory cases never wait, so a
/// pending future is a bug in the case (or a layer that waited).
fn poll_once<F: Future>(fut: F, what: &str) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("{what}: the future was pending on an always-ready path"),
    }
}

/// Reads `body` to its end (frames are passed to `black_box` and dropped).
fn drain<B>(body: B)
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = pin!(body);
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(None) => break,
            Poll::Ready(Some(Ok(frame))) => drop(black_box(frame)),
            Poll::Ready(Some(Err(e))) => panic!("body failed: {e:?}"),
            Poll::Pending => panic!("body was pending on an always-ready path"),
        }
    }
}

/// One whole call: `poll_ready`, `call`, the response future polled to its
/// end, the response body read to its end and dropped.
pub fn drive<S, B, RB>(svc: &mut S, req: Request<B>)
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
    RB: Body,
    RB::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("poll_ready failed: {e:?}"),
        Poll::Pending => panic!("poll_ready was pending"),
    }
    let res = match poll_once(svc.call(req), "call") {
        Ok(res) => res,
        Err(e) => panic!("call failed: {e:?}"),
    };
    drain(black_box(res).into_body());
}

/// One in-memory case: a name and a closure that makes one whole call.
pub struct Case {
    /// Short name (criterion id and table row).
    pub name: &'static str,
    /// What the case runs.
    pub what: &'static str,
    /// Makes one call.
    pub run: Box<dyn FnMut()>,
    /// `size_of` the service's response future (moved by every layer above).
    pub future_bytes: usize,
}

fn case<S, RB>(name: &'static str, what: &'static str, mut svc: S) -> Case
where
    S: Service<Request<Empty<Bytes>>, Response = Response<RB>> + 'static,
    S::Error: std::fmt::Debug,
    RB: Body,
    RB::Error: std::fmt::Debug,
{
    let uri = Uri::from_static(URL);
    Case {
        name,
        what,
        future_bytes: std::mem::size_of::<S::Future>(),
        run: Box::new(move || drive(&mut svc, request(&uri))),
    }
}

/// The runtime whose context the in-memory cases run in: the layers read
/// tokio's clock and make timers, while the futures are polled by hand
/// (they never wait).
///
/// # Panics
///
/// When tokio cannot build a current-thread runtime.
#[must_use]
pub fn timer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// The number after `name` on the command line, or `default`.
#[must_use]
pub fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A quota no benchmark can exhaust: a billion per second, burst of a billion.
#[must_use]
pub fn generous_quota() -> Quota {
    let n = NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(n).burst(n)
}

fn slots() -> NonZeroUsize {
    NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)
}

fn bearer() -> AuthLayer {
    AuthLayer::bearer("bench-token-0123456789").expect("valid token")
}

/// The facade's default layers (issue 8: request id and tracing on,
/// deadline 30 s, retry with its defaults, throttle on, attempt timeout
/// 10 s; rate limit, auth and concurrency limit off), in DESIGN.md's order.
macro_rules! default_stack {
    ($inner:expr) => {
        default_stack!($inner, RequestIdLayer::new())
    };
    ($inner:expr, $request_id:expr) => {
        ServiceBuilder::new()
            .layer($request_id)
            .layer(TraceLayer::new())
            .layer(DeadlineLayer::new(Duration::from_secs(30)))
            .layer(RetryLayer::default())
            .layer(AttemptTraceLayer::new())
            .layer(ThrottleLayer::new())
            .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
            .service($inner)
    };
}

/// The facade's default layers, hand-assembled in DESIGN.md's order.
pub type DefaultStack<S> = parapet_trace::SetRequestId<
    parapet_trace::Trace<
        parapet_timeout::CallDeadline<
            parapet_retry::Retry<
                parapet_trace::AttemptTrace<
                    parapet_ratelimit::Throttle<parapet_timeout::AttemptTimeout<S>>,
                >,
            >,
        >,
    >,
>;

/// The facade's default layers over `inner`, hand-assembled with
/// `tower::ServiceBuilder` (see the `default_stack` case).
pub fn default_stack<S>(inner: S) -> DefaultStack<S> {
    default_stack!(inner)
}

/// Every layer, in DESIGN.md's order.
macro_rules! full_stack {
    ($inner:expr) => {
        ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .layer(TraceLayer::new())
            .layer(DeadlineLayer::new(Duration::from_secs(30)))
            .layer(RetryLayer::default())
            .layer(AttemptTraceLayer::new())
            .layer(ThrottleLayer::new())
            .layer(RateLimitLayer::new(generous_quota()))
            .layer(bearer())
            .layer(ConcurrencyLimitLayer::new(slots()))
            .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
            .service($inner)
    };
}

/// The facade client over the in-process service, with `ClientBuilder`'s defaults.
///
/// # Panics
///
/// When the builder refuses its own defaults.
#[must_use]
pub fn facade() -> parapet::Client {
    parapet::Client::builder()
        .build_with(Ready)
        .expect("the default configuration builds")
}

/// Every in-memory case, `bare` first. Must be called inside a tokio
/// runtime context (the layers read tokio's clock and make timers).
#[must_use]
pub fn cases() -> Vec<Case> {
    let mut v = vec![
        case("bare", "the inner service alone", Ready),
        case(
            "request_id",
            "RequestIdLayer",
            RequestIdLayer::new().layer(Ready),
        ),
        case(
            "request_id_no_record",
            "RequestIdLayer, record_in_response(false)",
            RequestIdLayer::new().record_in_response(false).layer(Ready),
        ),
        case(
            "trace",
            "TraceLayer (no subscriber)",
            TraceLayer::new().layer(Ready),
        ),
        case(
            "attempt_trace",
            "AttemptTraceLayer (no subscriber)",
            AttemptTraceLayer::new().layer(Ready),
        ),
        case(
            "deadline",
            "DeadlineLayer (30 s)",
            DeadlineLayer::new(Duration::from_secs(30)).layer(Ready),
        ),
        case(
            "retry",
            "RetryLayer::default()",
            RetryLayer::default().layer(Ready),
        ),
        case(
            "throttle",
            "ThrottleLayer::new()",
            ThrottleLayer::new().layer(Ready),
        ),
        case(
            "rate_limit",
            "RateLimitLayer::new (shared bucket, never waits)",
            RateLimitLayer::new(generous_quota()).layer(Ready),
        ),
        case(
            "rate_limit_per_authority",
            "RateLimitLayer::per_authority (never waits)",
            RateLimitLayer::per_authority(generous_quota()).layer(Ready),
        ),
        case("auth", "AuthLayer::bearer (static)", bearer().layer(Ready)),
        case(
            "concurrency_limit",
            "ConcurrencyLimitLayer::new(1024)",
            ConcurrencyLimitLayer::new(slots()).layer(Ready),
        ),
        case(
            "attempt_timeout",
            "AttemptTimeoutLayer (10 s)",
            AttemptTimeoutLayer::new(Duration::from_secs(10)).layer(Ready),
        ),
        case(
            "default_stack",
            "the facade's default layers, hand-assembled",
            default_stack!(Ready),
        ),
        case(
            "default_stack_no_record",
            "the same, the request id not recorded in the response",
            default_stack!(Ready, RequestIdLayer::new().record_in_response(false)),
        ),
        case(
            "full_stack",
            "every layer (ten), hand-assembled",
            full_stack!(Ready),
        ),
        case(
            "facade_service",
            "parapet::Client (build_with) as a tower::Service",
            facade(),
        ),
    ];
    let client = facade();
    v.push(Case {
        future_bytes: 0,
        name: "facade_send",
        what: "parapet::Client: get(url).send() then bytes()",
        run: Box::new(move || {
            let resp = poll_once(client.get(URL).send(), "send").expect("send");
            black_box(poll_once(resp.bytes(), "bytes").expect("bytes"));
        }),
    });
    // The stack shape a client takes with a layer that is off by default
    // set (issue 21), or with a default layer turned off: split by one
    // boxed service below retry.
    let shaped: [(&'static str, &'static str, parapet::ClientBuilder); 4] = [
        (
            "facade_send_retry_off",
            "facade_send with ClientBuilder::retry_off() (the split shape, no new layer)",
            parapet::Client::builder().retry_off(),
        ),
        (
            "facade_send_circuit",
            "facade_send with a circuit breaker (5 consecutive failures)",
            parapet::Client::builder()
                .circuit_breaker(parapet::circuit::CircuitPolicy::default()),
        ),
        (
            "facade_send_adaptive",
            "facade_send with the adaptive rate (not yet throttled: unpaced)",
            parapet::Client::builder()
                .adaptive_rate(parapet::ratelimit::AdaptiveRateLayer::new()),
        ),
        (
            "facade_send_hedge",
            "facade_send with hedging after 100 ms (answered before: no hedge sent)",
            parapet::Client::builder().hedge(parapet::retry::HedgePolicy::fixed(
                std::time::Duration::from_millis(100),
            )),
        ),
    ];
    for (name, what, builder) in shaped {
        let client = builder.build_with(Ready).expect("the configuration builds");
        v.push(Case {
            future_bytes: 0,
            name,
            what,
            run: Box::new(move || {
                let resp = poll_once(client.get(URL).send(), "send").expect("send");
                black_box(poll_once(resp.bytes(), "bytes").expect("bytes"));
            }),
        });
    }
    #[cfg(feature = "metrics")]
    {
        let client = parapet::Client::builder()
            .metrics(true)
            .build_with(Ready)
            .expect("the configuration builds");
        v.push(Case {
            future_bytes: 0,
            name: "facade_send_metrics",
            what: "facade_send with ClientBuilder::metrics(true) (recorder: whatever is installed)",
            run: Box::new(move || {
                let resp = poll_once(client.get(URL).send(), "send").expect("send");
                black_box(poll_once(resp.bytes(), "bytes").expect("bytes"));
            }),
        });
    }
    v
}

/// The cases the `layers_subscriber` bench and `allocs --subscriber` run
/// with a tracing subscriber installed.
pub const SUBSCRIBER_CASES: &[&str] = &[
    "bare",
    "trace",
    "attempt_trace",
    "default_stack",
    "full_stack",
    "facade_service",
];

/// Installs, as the global default, a `fmt` subscriber at INFO writing to
/// `io::sink` (everything is formatted, nothing is written).
///
/// Run the subscriber cases in a process of their own: tracing caches each
/// callsite's interest for the whole process, counting every subscriber
/// that exists, so once one does, the no-subscriber cases would no longer
/// measure the no-subscriber path.
pub fn install_fmt_subscriber() {
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish(),
    )
    .expect("no subscriber installed yet");
}
