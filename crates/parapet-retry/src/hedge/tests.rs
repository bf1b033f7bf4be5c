use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Frame;
use parapet_core::{BoxError, Idempotency, ReplayBody};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use crate::{RetryBudget, RetryPolicy, RetryQuota};

const MS: Duration = Duration::from_millis(1);

/// What one copy does: answer (or fail) after a while.
#[derive(Clone, Copy)]
enum Act {
    Ok(u32),
    Fail(u32),
}

/// A stand-in server: the n-th copy to arrive (from 0) acts by the script;
/// it records each copy's hedge mark and counts the futures dropped.
#[derive(Clone)]
struct Stub {
    script: Arc<dyn Fn(usize) -> Act + Send + Sync>,
    arrived: Arc<Mutex<Vec<Option<HedgeCopy>>>>,
    dropped: Arc<AtomicUsize>,
}

struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Stub {
    fn new(script: impl Fn(usize) -> Act + Send + Sync + 'static) -> Self {
        Self {
            script: Arc::new(script),
            arrived: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn arrivals(&self) -> usize {
        self.arrived.lock().unwrap().len()
    }
}

type StubFuture = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

impl Service<Request<ReplayBody>> for Stub {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = StubFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> StubFuture {
        let n = {
            let mut arrived = self.arrived.lock().unwrap();
            arrived.push(HedgeCopy::get(req.extensions()));
            arrived.len() - 1
        };
        let act = (self.script)(n);
        let guard = DropGuard(Arc::clone(&self.dropped));
        Box::pin(async move {
            let _guard = guard;
            // The body is read first, as a server would.
            let body = http_body_util::BodyExt::collect(req.into_body()).await?;
            drop(body);
            match act {
                Act::Ok(ms) => {
                    tokio::time::sleep(ms * MS).await;
                    Ok(Response::new(format!("copy {n}")))
                }
                Act::Fail(ms) => {
                    tokio::time::sleep(ms * MS).await;
                    Err(format!("copy {n} failed").into())
                }
            }
        })
    }
}

fn get() -> Request<ReplayBody> {
    Request::get("http://api.test/items")
        .body(ReplayBody::empty())
        .unwrap()
}

fn fixed(ms: u32) -> HedgePolicy {
    HedgePolicy::fixed(ms * MS)
}

async fn send(
    svc: &Hedge<Stub>,
    req: Request<ReplayBody>,
) -> (Result<Response<String>, BoxError>, Duration) {
    let start = Instant::now();
    let res = svc.clone().oneshot(req).await;
    (res, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_answer_comes_before_the_delay() {
    let stub = Stub::new(|_| Act::Ok(10));
    let svc = Hedge::new(stub.clone(), fixed(50));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap().body(), "copy 0");
    assert_eq!(took, 10 * MS);
    assert_eq!(stub.arrivals(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_sent_after_the_delay_and_the_faster_answer_wins() {
    let stub = Stub::new(|n| if n == 0 { Act::Ok(1000) } else { Act::Ok(10) });
    let svc = Hedge::new(stub.clone(), fixed(50));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap().body(), "copy 1");
    assert_eq!(took, 60 * MS);
    assert_eq!(
        *stub.arrived.lock().unwrap(),
        [None, Some(HedgeCopy { number: 1 })]
    );

    // The first copy wins when it is faster than the hedge.
    let stub = Stub::new(|n| if n == 0 { Act::Ok(70) } else { Act::Ok(100) });
    let svc = Hedge::new(stub.clone(), fixed(50));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap().body(), "copy 0");
    assert_eq!(took, 70 * MS);
    assert_eq!(stub.arrivals(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_loser_is_dropped_when_the_winner_answers() {
    let stub = Stub::new(|n| if n == 0 { Act::Ok(1000) } else { Act::Ok(10) });
    let svc = Hedge::new(stub.clone(), fixed(50));
    let mut fut = svc.clone().oneshot(get());
    // Until the hedge answers, both copies are in flight.
    tokio::time::timeout(55 * MS, &mut fut).await.unwrap_err();
    assert_eq!(stub.arrivals(), 2);
    assert_eq!(stub.dropped.load(Ordering::SeqCst), 0);
    let res = fut.await.unwrap();
    // The winner's future completed and the loser's was dropped by the
    // time the answer came back, not when the caller drops anything.
    assert_eq!(stub.dropped.load(Ordering::SeqCst), 2);
    assert_eq!(res.body(), "copy 1");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_drops_every_copy() {
    let stub = Stub::new(|_| Act::Ok(1000));
    let svc = Hedge::new(stub.clone(), fixed(50));
    let mut fut = svc.clone().oneshot(get());
    tokio::time::timeout(100 * MS, &mut fut).await.unwrap_err();
    assert_eq!(stub.arrivals(), 2);
    drop(fut);
    assert_eq!(stub.dropped.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn post_is_never_hedged_without_an_override() {
    let stub = Stub::new(|_| Act::Ok(1000));
    let svc = Hedge::new(stub.clone(), fixed(50));
    for method in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
        let req = Request::builder()
            .method(method)
            .uri("http://api.test/charges")
            .body(ReplayBody::from("{}"))
            .unwrap();
        let (res, took) = send(&svc, req).await;
        assert_eq!(
            *res.unwrap().body(),
            format!("copy {}", stub.arrivals() - 1)
        );
        assert_eq!(took, 1000 * MS);
    }
    assert_eq!(stub.arrivals(), 4);

    // An explicit override hedges a POST (a query sent as a POST); one
    // that says "not idempotent" stops a GET.
    let stub = Stub::new(|_| Act::Ok(1000));
    let svc = Hedge::new(stub.clone(), fixed(50));
    let mut post = Request::post("http://api.test/search")
        .body(ReplayBody::from("{}"))
        .unwrap();
    post.extensions_mut().insert(Idempotency::Idempotent);
    send(&svc, post).await.0.unwrap();
    assert_eq!(stub.arrivals(), 2);
    let mut get_once = get();
    get_once.extensions_mut().insert(Idempotency::NotIdempotent);
    send(&svc, get_once).await.0.unwrap();
    assert_eq!(stub.arrivals(), 3);
}

/// A streamed body of `chunks` frames of 8 bytes.
struct Chunks(usize);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"01234567")))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_replayed_is_never_hedged() {
    let stub = Stub::new(|_| Act::Ok(1000));
    let svc = Hedge::new(stub.clone(), fixed(50).replay_cap(10));
    let req = Request::get("http://api.test/items")
        .body(Chunks(2))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.body(), "copy 0");
    assert_eq!(stub.arrivals(), 1, "16 bytes over a cap of 10");

    // Under the cap, the streamed body is replayed for the hedge.
    let svc = Hedge::new(stub.clone(), fixed(50).replay_cap(64));
    let req = Request::get("http://api.test/items")
        .body(Chunks(2))
        .unwrap();
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!(stub.arrivals(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_error_waits_for_the_other_copy_and_the_last_error_is_returned() {
    // The first copy fails while the hedge is in flight: the hedge answers.
    let stub = Stub::new(|n| if n == 0 { Act::Fail(100) } else { Act::Ok(100) });
    let svc = Hedge::new(stub.clone(), fixed(50));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap().body(), "copy 1");
    assert_eq!(took, 150 * MS);

    // Both fail: the last error.
    let stub = Stub::new(|n| {
        if n == 0 {
            Act::Fail(100)
        } else {
            Act::Fail(200)
        }
    });
    let svc = Hedge::new(stub.clone(), fixed(50));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap_err().to_string(), "copy 1 failed");
    assert_eq!(took, 250 * MS);

    // A first copy that fails before the delay is not hedged.
    let stub = Stub::new(|_| Act::Fail(10));
    let svc = Hedge::new(stub.clone(), fixed(50));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap_err().to_string(), "copy 0 failed");
    assert_eq!((took, stub.arrivals()), (10 * MS, 1));
}

#[tokio::test(start_paused = true)]
async fn more_hedges_follow_one_delay_apart_when_allowed() {
    let stub = Stub::new(|n| if n < 2 { Act::Ok(1000) } else { Act::Ok(10) });
    let svc = Hedge::new(stub.clone(), fixed(50).max_hedges(2));
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap().body(), "copy 2");
    assert_eq!(took, 110 * MS);
    assert_eq!(stub.dropped.load(Ordering::SeqCst), 3);

    let svc = Hedge::new(stub.clone(), fixed(50).max_hedges(0));
    let (_, took) = send(&svc, get()).await;
    assert_eq!(took, 10 * MS, "hedging off");
}

/// The retry layer's response over the hedged stand-in.
type RetriedBody = crate::RetryBody<Hedge<Stub>, ResponseFuture<Stub, StubFuture>, String>;

/// A retry layer over a hedge layer spending from its budget or quota.
fn retry_over_hedge(
    policy: RetryPolicy,
    stub: &Stub,
) -> impl Service<Request<ReplayBody>, Response = Response<RetriedBody>, Error = BoxError> + Clone {
    let retry = RetryLayer::new(policy);
    let hedge = retry.hedge_layer(fixed(50));
    ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .service(stub.clone())
}

#[tokio::test(start_paused = true)]
async fn a_hedge_the_budget_refuses_is_not_sent() {
    let stub = Stub::new(|_| Act::Ok(1000));
    let none = RetryBudget::new().percent(0).min_per_second(0);
    let svc = retry_over_hedge(RetryPolicy::builder().budget(none).build().unwrap(), &stub);
    let res = svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    assert_eq!(stub.arrivals(), 1);

    // The default budget allows it.
    let stub = Stub::new(|_| Act::Ok(1000));
    let svc = retry_over_hedge(RetryPolicy::default(), &stub);
    svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(stub.arrivals(), 2);

    // A quota of one hedge's cost: the first call's hedge takes it all.
    let stub = Stub::new(|_| Act::Ok(1000));
    let quota = RetryQuota::new().capacity(5).retry_cost(5).timeout_cost(5);
    let policy = RetryPolicy::builder().retry_quota(quota).build().unwrap();
    let svc = retry_over_hedge(policy, &stub);
    svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(stub.arrivals(), 2);
    svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(
        stub.arrivals(),
        3,
        "1 token back from the success, 5 needed"
    );
}

#[tokio::test(start_paused = true)]
async fn percentile_mode_hedges_once_there_are_enough_samples() {
    // Calls 0..10 answer in 10 ms; then a first copy that takes a second.
    let slow = Arc::new(AtomicUsize::new(usize::MAX));
    let when = Arc::clone(&slow);
    let stub = Stub::new(move |n| {
        if n == when.load(Ordering::SeqCst) {
            Act::Ok(1000)
        } else {
            Act::Ok(10)
        }
    });
    let policy = HedgePolicy::percentile(90.0).min_samples(10).window(100);
    let svc = Hedge::new(stub.clone(), policy);
    // Nine samples: a slow call is not hedged yet.
    for _ in 0..9 {
        send(&svc, get()).await.0.unwrap();
    }
    slow.store(9, Ordering::SeqCst);
    let (_, took) = send(&svc, get()).await;
    assert_eq!((took, stub.arrivals()), (1000 * MS, 10));
    // Ten samples now: the next slow call is hedged at the 90th
    // percentile (10 ms) and answered by its hedge 10 ms later.
    slow.store(10, Ordering::SeqCst);
    let (res, took) = send(&svc, get()).await;
    assert_eq!(res.unwrap().body(), "copy 11");
    assert_eq!((took, stub.arrivals()), (20 * MS, 12));
}

#[test]
fn types_can_be_shared_across_tasks() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    type Inner = tower::util::BoxCloneSyncService<Request<ReplayBody>, Response<String>, BoxError>;
    send_sync_clone::<Hedge<Inner>>();
    send_sync_clone::<HedgeLayer>();
    send_sync_clone::<HedgePolicy>();
}

#[tokio::test]
async fn the_response_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let stub = Stub::new(|_| Act::Ok(0));
    let mut svc = Hedge::new(stub, fixed(50));
    let fut = svc.call(get());
    is_send(&fut);
    fut.await.unwrap();
}

#[test]
fn accessors_reach_the_inner_service() {
    let mut hedge = Hedge::new(7u8, fixed(5));
    *hedge.get_mut() += 1;
    assert_eq!(*hedge.get_ref(), 8);
    assert_eq!(hedge.policy().get_fixed_delay(), Some(5 * MS));
    assert_eq!(hedge.into_inner(), 8);
    assert_eq!(Hedge::<u8>::layer(fixed(5)).policy().get_max_hedges(), 1);
}
