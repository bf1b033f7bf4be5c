//! The Redis-backed layers against a real `redis-server`: several
//! "processes" (each with its own store, so its own connection) share one
//! quota and one gate; Redis killed and restarted mid-run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parapet_core::{BoxError, Deadline};
use parapet_ratelimit::{Quota, RateLimited, Throttled};
use parapet_redis::test_support::RedisServer;
use parapet_redis::{RedisRateLimitLayer, RedisStore, RedisThrottleLayer, RedisUnavailable};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_layer::Layer;

type Answer = http::Response<()>;

/// An upstream that counts the requests that reached it and answers
/// `status` with `headers`.
#[derive(Clone)]
struct Upstream {
    hits: Arc<AtomicUsize>,
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
}

impl Upstream {
    fn ok() -> Self {
        Self {
            hits: Arc::default(),
            status: 200,
            headers: Vec::new(),
        }
    }

    fn answering(status: u16, headers: &[(&'static str, &'static str)]) -> Self {
        Self {
            status,
            headers: headers.to_vec(),
            ..Self::ok()
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Service<http::Request<()>> for Upstream {
    type Response = Answer;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Answer, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<()>) -> Self::Future {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let mut res = http::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            res = res.header(*name, *value);
        }
        std::future::ready(Ok(res.body(()).unwrap()))
    }
}

fn get(uri: &str) -> http::Request<()> {
    http::Request::get(uri).body(()).unwrap()
}

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::open(server.url().as_str()).unwrap()
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap()).burst(NonZeroU32::new(n).unwrap())
}

#[tokio::test]
async fn processes_share_one_quota_per_authority() {
    let server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    // Three processes, each with its own connection, 4 calls a minute in all.
    let layers: Vec<_> = (0..3)
        .map(|_| RedisRateLimitLayer::per_authority(store(&server), per_minute(4)).reject())
        .collect();

    let mut refused = 0;
    for i in 0..9 {
        let svc = layers[i % 3].layer(upstream.clone());
        match svc.oneshot(get("https://api.example.com/a")).await {
            Ok(_) => {}
            Err(err) => {
                let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
                assert!(limited.wait() > Duration::from_secs(5), "{limited:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(upstream.hits(), 4);
    assert_eq!(refused, 5);

    // Another authority has its own bucket.
    let svc = layers[0].layer(upstream.clone());
    svc.oneshot(get("https://other.example.com/"))
        .await
        .unwrap();
    assert_eq!(upstream.hits(), 5);
}

#[tokio::test]
async fn a_named_bucket_is_shared_by_every_authority() {
    let server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    let a = RedisRateLimitLayer::new(store(&server), "billing", per_minute(2)).reject();
    let b = RedisRateLimitLayer::new(store(&server), "billing", per_minute(2)).reject();
    a.layer(upstream.clone())
        .oneshot(get("https://one.example.com/"))
        .await
        .unwrap();
    b.layer(upstream.clone())
        .oneshot(get("https://two.example.com/"))
        .await
        .unwrap();
    let err = a
        .layer(upstream.clone())
        .oneshot(get("https://three.example.com/"))
        .await
        .unwrap_err();
    assert!(err.is::<RateLimited>());
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_wait_past_the_deadline_fails_at_once_and_takes_nothing() {
    let server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    let layer = RedisRateLimitLayer::per_authority(store(&server), per_minute(1));
    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();

    // The next slot is a minute away: a call with a 1 s deadline fails at once.
    let start = Instant::now();
    let _scope = Deadline::at(start + Duration::from_secs(1)).enter();
    let err = layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert!(limited.wait() > Duration::from_secs(50));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn waiting_callers_take_their_slots_in_turn() {
    let server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    // 20 per second, burst 1: the second call waits for its slot, and goes.
    let quota = Quota::per_second(NonZeroU32::new(20).unwrap()).burst(NonZeroU32::MIN);
    let layer =
        RedisRateLimitLayer::per_authority(store(&server), quota).max_wait(Duration::from_secs(5));
    let other = RedisRateLimitLayer::per_authority(store(&server), quota).reject();
    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    let start = Instant::now();
    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    // It waited for its slot (a lower bound only: this is not a timing test).
    assert!(start.elapsed() >= Duration::from_millis(40));
    assert_eq!(upstream.hits(), 2);
    // Right after a slot was taken, a process in reject mode is refused.
    assert!(
        other
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_script_is_loaded_again_after_redis_forgets_it() {
    let server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    let layer = RedisRateLimitLayer::per_authority(store(&server), per_minute(3)).reject();
    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();

    let client = redis::Client::open(server.url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();

    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    assert!(
        layer
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await
            .is_err()
    );
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn a_retry_after_seen_by_one_process_holds_the_others() {
    let server = RedisServer::start().await.unwrap();
    let limited = Upstream::answering(429, &[("retry-after", "2")]);
    let upstream = Upstream::ok();
    let one = RedisThrottleLayer::new(store(&server));
    let other = RedisThrottleLayer::new(store(&server)).reject();

    let res = one
        .layer(limited.clone())
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);

    // Another process, any path on that host: nothing is sent.
    let err = other
        .layer(upstream.clone())
        .oneshot(get("https://api.example.com/b"))
        .await
        .unwrap_err();
    let throttled = err.downcast_ref::<Throttled>().expect("a Throttled");
    assert!(
        throttled.wait() > Duration::from_millis(1500)
            && throttled.wait() <= Duration::from_secs(2)
    );
    assert_eq!(upstream.hits(), 0);
    // Another host is not held.
    other
        .layer(upstream.clone())
        .oneshot(get("https://other.example.com/"))
        .await
        .unwrap();
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn an_exhausted_ratelimit_header_closes_the_gate_and_a_wait_past_the_deadline_fails() {
    let server = RedisServer::start().await.unwrap();
    let spent = Upstream::answering(
        200,
        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "30")],
    );
    let upstream = Upstream::ok();
    let one = RedisThrottleLayer::new(store(&server));
    let other = RedisThrottleLayer::new(store(&server));
    one.layer(spent)
        .oneshot(get("https://api.example.com/"))
        .await
        .unwrap();

    let start = Instant::now();
    let _scope = Deadline::at(start + Duration::from_secs(1)).enter();
    let err = other
        .layer(upstream.clone())
        .oneshot(get("https://api.example.com/"))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<Throttled>().unwrap().wait() > Duration::from_secs(20));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(upstream.hits(), 0);
}

/// Calls until the store has seen Redis again (one probe per call here).
async fn until_available(layer: &RedisRateLimitLayer, store: &RedisStore, upstream: &Upstream) {
    for _ in 0..500 {
        let _ = layer
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await;
        if store.is_available() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("redis never came back");
}

#[tokio::test]
async fn redis_killed_mid_run_fails_open_to_the_divided_quota_then_sharing_resumes() {
    let mut server = RedisServer::start().await.unwrap();
    let port = server.port();
    let upstream = Upstream::ok();
    let store = store(&server).probe_every(Duration::ZERO);
    // 4 a minute for a fleet of 2: 2 a minute each without Redis.
    let layer = RedisRateLimitLayer::per_authority(store.clone(), per_minute(4))
        .reject()
        .fail_open(NonZeroU32::new(2).unwrap());
    layer
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    assert!(store.is_available());

    server.stop();
    let start = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let res = layer
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await;
        outcomes.push(res.map(|_| ()).map_err(|e| e.is::<RateLimited>()));
    }
    // No hang: each call waited one call timeout at most.
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!store.is_available());
    assert_eq!(store.outages(), 1);
    // The local limiter at 4 / 2 = 2 a minute decided.
    assert_eq!(outcomes, [Ok(()), Ok(()), Err(true), Err(true)]);
    assert_eq!(layer.fallback_decisions(), 4);

    // Back on the same port, empty: the shared bucket (4 a minute) decides again.
    let _server = RedisServer::start_on(port).await.unwrap();
    until_available(&layer, &store, &upstream).await;
    let before = upstream.hits();
    let mut admitted = 0;
    for _ in 0..6 {
        if layer
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await
            .is_ok()
        {
            admitted += 1;
        }
    }
    assert!(store.is_available());
    assert_eq!(store.outages(), 1);
    // The probe that found Redis again may have taken a slot.
    assert!((3..=4).contains(&admitted), "{admitted}");
    assert!(upstream.hits() - before <= 4);
}

#[tokio::test]
async fn redis_killed_mid_run_fails_closed_with_a_typed_error() {
    let mut server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    let store = store(&server);
    let limit = RedisRateLimitLayer::per_authority(store.clone(), per_minute(100));
    let throttle = RedisThrottleLayer::new(store.clone()).fail_closed();
    limit
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    throttle
        .layer(upstream.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();

    server.stop();
    let start = Instant::now();
    for _ in 0..3 {
        let err = limit
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await
            .unwrap_err();
        assert!(err.is::<RedisUnavailable>(), "{err}");
        let err = throttle
            .layer(upstream.clone())
            .oneshot(get("http://api.example.com/"))
            .await
            .unwrap_err();
        assert!(err.is::<RedisUnavailable>(), "{err}");
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(upstream.hits(), 2);
    assert_eq!(limit.fallback_decisions(), 3);
    assert_eq!(throttle.fallback_decisions(), 3);
}

#[tokio::test]
async fn a_throttle_failing_open_keeps_its_local_gate() {
    let mut server = RedisServer::start().await.unwrap();
    let limited = Upstream::answering(429, &[("retry-after", "30")]);
    let store = store(&server);
    let throttle = RedisThrottleLayer::new(store.clone())
        .local(parapet_ratelimit::ThrottleLayer::new().reject());
    server.stop();
    // Redis is gone; the 429 still closes this process's own gate.
    let res = throttle
        .layer(limited.clone())
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let svc = throttle.layer(limited.clone());
    let err = svc
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap_err();
    assert!(err.is::<Throttled>());
    assert_eq!(limited.hits(), 1);
}

#[tokio::test]
async fn a_call_waiting_for_its_slot_obeys_a_gate_closed_meanwhile() {
    let server = RedisServer::start().await.unwrap();
    let upstream = Upstream::ok();
    let limited = Upstream::answering(429, &[("retry-after", "30")]);
    // 2 a second, burst 1: the second call waits 500 ms for its slot.
    let quota = Quota::per_second(NonZeroU32::new(2).unwrap()).burst(NonZeroU32::MIN);
    let a = tower::ServiceBuilder::new()
        .layer(RedisThrottleLayer::new(store(&server)))
        .layer(RedisRateLimitLayer::per_authority(store(&server), quota))
        .service(upstream.clone());
    a.clone()
        .oneshot(get("https://api.example.com/"))
        .await
        .unwrap();
    let mut req = get("https://api.example.com/");
    Deadline::at(Instant::now() + Duration::from_secs(5)).apply(req.extensions_mut());
    let waiting = tokio::spawn(a.clone().oneshot(req));
    // Meanwhile another process is told to hold back for 30 s.
    let b = RedisThrottleLayer::new(store(&server)).layer(limited.clone());
    b.oneshot(get("https://api.example.com/")).await.unwrap();

    let err = waiting.await.unwrap().unwrap_err();
    assert!(err.is::<Throttled>(), "{err}");
    assert_eq!(upstream.hits(), 1);
}
