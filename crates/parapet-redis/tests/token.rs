//! One token fetch for a fleet: several "processes" (each with its own
//! store, provider and token cache) against a real `redis-server`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parapet_auth::{ProvideToken, Token, TokenCache, TokenError, TokenFuture};
use parapet_redis::test_support::RedisServer;
use parapet_redis::{RedisStore, RedisTokenProvider};

/// The identity provider: counts its token requests, answers `t<n>`.
#[derive(Clone, Default)]
struct Idp {
    requests: Arc<AtomicUsize>,
    /// Never answer the first request (a fetch that hangs or whose process died).
    hang_first: bool,
}

impl Idp {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl ProvideToken for Idp {
    fn fetch_token(&self) -> TokenFuture<'_> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let hang = self.hang_first && n == 0;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            // Slow enough for every caller to arrive while it runs.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, TokenError>(
                Token::new(format!("t{n}")).with_expires_in(Duration::from_secs(300)),
            )
        })
    }
}

fn process(server: &RedisServer, idp: &Idp) -> (TokenCache, Arc<RedisTokenProvider<Idp>>) {
    let store = RedisStore::open(server.url().as_str()).unwrap();
    let provider = Arc::new(RedisTokenProvider::new(store, "idp", idp.clone()));
    (TokenCache::new(Arc::clone(&provider)), provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_and_a_thousand_callers_cause_one_token_request() {
    let server = RedisServer::start().await.unwrap();
    let idp = Idp::default();
    let caches: Vec<_> = (0..4).map(|_| process(&server, &idp).0).collect();

    let mut calls = Vec::new();
    for cache in &caches {
        for _ in 0..250 {
            let cache = cache.clone();
            calls.push(tokio::spawn(async move { cache.token().await }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().secret().expose(), "t0");
    }
    assert_eq!(idp.requests(), 1);
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_for_the_fleet_and_only_that_generation() {
    let server = RedisServer::start().await.unwrap();
    let idp = Idp::default();
    let (a, _) = process(&server, &idp);
    let (b, _) = process(&server, &idp);
    let t0 = a.token().await.unwrap();
    assert_eq!(b.token().await.unwrap().secret().expose(), "t0");
    assert_eq!(idp.requests(), 1);

    // A 401 to A's token: A drops it and asks again; one new token.
    assert!(a.invalidate(&t0));
    let t1 = a.token().await.unwrap();
    assert_eq!(t1.secret().expose(), "t1");
    assert_eq!(idp.requests(), 2);

    // B is refused the same old token later: it gets A's new one, no request.
    let b0 = b.current().unwrap();
    assert!(b.invalidate(&b0));
    assert_eq!(b.token().await.unwrap().secret().expose(), "t1");
    assert_eq!(idp.requests(), 2);
}

#[tokio::test]
async fn a_lease_that_expires_without_a_token_lets_another_process_fetch() {
    let server = RedisServer::start().await.unwrap();
    let stuck = Idp {
        hang_first: true,
        ..Idp::default()
    };
    let store = || RedisStore::open(server.url().as_str()).unwrap();
    let a =
        RedisTokenProvider::new(store(), "idp", stuck.clone()).lease(Duration::from_millis(200));
    let hung = tokio::spawn(async move { a.fetch_token().await.map(|_| ()) });
    // Let A take the lease.
    while stuck.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = Idp::default();
    let b = TokenCache::new(RedisTokenProvider::new(store(), "idp", other.clone()));
    assert_eq!(b.token().await.unwrap().secret().expose(), "t0");
    assert_eq!(other.requests(), 1);
    hung.abort();
}

#[tokio::test]
async fn without_redis_each_process_fetches_for_itself() {
    let mut server = RedisServer::start().await.unwrap();
    let idp = Idp::default();
    let (a, pa) = process(&server, &idp);
    let (b, pb) = process(&server, &idp);
    server.stop();
    let ta = a.token().await.unwrap();
    let tb = b.token().await.unwrap();
    assert_ne!(ta.secret().expose(), tb.secret().expose());
    assert_eq!(idp.requests(), 2);
    assert_eq!((pa.fallback_fetches(), pb.fallback_fetches()), (1, 1));
}

#[tokio::test]
async fn the_token_never_shows_in_debug() {
    let server = RedisServer::start().await.unwrap();
    let idp = Idp::default();
    let (a, provider) = process(&server, &idp);
    let token = a.token().await.unwrap();
    for shown in [
        format!("{provider:?}"),
        format!("{a:?}"),
        format!("{token:?}"),
    ] {
        assert!(!shown.contains("t0"), "{shown}");
    }
}
