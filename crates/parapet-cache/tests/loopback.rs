//! The cache over a real hyper-util client against a loopback server that
//! counts what arrives. Time is a clock the tests advance by hand: the
//! sockets are real, so tokio's time is never paused here.

// The helpers below are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_cache::{Cache, CacheLayer, CacheStatus, MemoryStore};
use parapet_core::ReplayBody;
use parapet_testkit::{Reply, Server};
use tower::{Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody>;

/// A wall clock the test moves.
#[derive(Clone)]
struct ManualClock {
    base: SystemTime,
    offset_secs: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> Self {
        Self {
            base: SystemTime::now(),
            offset_secs: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, secs: u64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }

    fn now(&self) -> SystemTime {
        self.base + Duration::from_secs(self.offset_secs.load(Ordering::SeqCst))
    }
}

struct Fixture {
    server: Server,
    store: MemoryStore,
    clock: ManualClock,
    svc: Cache<HttpClient>,
}

async fn fixture_with(store_bytes: usize, layer: impl Fn(CacheLayer) -> CacheLayer) -> Fixture {
    let server = Server::start().await;
    let store = MemoryStore::new(store_bytes);
    let clock = ManualClock::new();
    let c = clock.clone();
    let layer = layer(CacheLayer::new(store.clone()).clock(move || c.now()));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new().layer(layer).service(client);
    Fixture {
        server,
        store,
        clock,
        svc,
    }
}

async fn fixture() -> Fixture {
    fixture_with(1 << 20, |l| l).await
}

/// The status, the cache status, the headers and the whole body.
struct Got {
    status: StatusCode,
    cache: CacheStatus,
    res: Response<()>,
    body: Bytes,
}

impl Fixture {
    async fn send(&mut self, req: Request<ReplayBody>) -> Got {
        let res = self.svc.ready().await.unwrap().call(req).await.unwrap();
        let cache = CacheStatus::of(&res).unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Got {
            status: parts.status,
            cache,
            res: Response::from_parts(parts, ()),
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Got {
        let req = Request::get(self.server.url(path))
            .body(ReplayBody::default())
            .unwrap();
        self.send(req).await
    }

    async fn get_with(&mut self, path: &str, name: &str, value: &str) -> Got {
        let req = Request::get(self.server.url(path))
            .header(name, value)
            .body(ReplayBody::default())
            .unwrap();
        self.send(req).await
    }
}

#[tokio::test]
async fn a_fresh_response_is_answered_without_a_request() {
    let mut f = fixture().await;
    f.server.on("/fresh").reply(
        Reply::ok()
            .header("cache-control", "max-age=60")
            .body("hello"),
    );

    let first = f.get("/fresh").await;
    f.clock.advance(59);
    let second = f.get("/fresh").await;

    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, "hello");
    assert_eq!(second.res.headers()["age"], "59");
    assert_eq!(f.server.hits("/fresh"), 1, "the hit sent a request");
}

#[tokio::test]
async fn a_stale_response_is_revalidated_and_a_304_returns_the_stored_body() {
    let mut f = fixture().await;
    f.server.on("/doc").handle(|a| {
        if a.header("if-none-match") == Some("\"v1\"") {
            Reply::status(304)
                .header("cache-control", "max-age=60")
                .header("etag", "\"v1\"")
                .header("x-revision", "checked")
        } else {
            Reply::ok()
                .header("cache-control", "max-age=60")
                .header("etag", "\"v1\"")
                .header("last-modified", "Tue, 01 Jul 2025 10:00:00 GMT")
                .header("x-revision", "first")
                .body("the document")
        }
    });

    let first = f.get("/doc").await;
    f.clock.advance(61);
    let revalidated = f.get("/doc").await;
    let after = f.get("/doc").await;

    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(revalidated.cache, CacheStatus::Revalidated);
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.body, "the document");
    assert_eq!(revalidated.res.headers()["x-revision"], "checked");
    // The 304 refreshed the stored response: fresh again for 60 s.
    assert_eq!(after.cache, CacheStatus::Hit);
    assert_eq!(after.body, "the document");
    assert_eq!(after.res.headers()["x-revision"], "checked");
    let seen = f.server.arrivals_for("/doc");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("if-none-match"), None);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        seen[1].header("if-modified-since"),
        Some("Tue, 01 Jul 2025 10:00:00 GMT")
    );
}

#[tokio::test]
async fn a_stale_response_replaced_by_a_200_is_a_miss_and_stores_the_new_one() {
    let mut f = fixture().await;
    f.server.on("/doc").replies([
        Reply::ok()
            .header("cache-control", "max-age=10")
            .header("etag", "\"v1\"")
            .body("one"),
        Reply::ok()
            .header("cache-control", "max-age=10")
            .header("etag", "\"v2\"")
            .body("two"),
    ]);

    f.get("/doc").await;
    f.clock.advance(11);
    let changed = f.get("/doc").await;
    let then = f.get("/doc").await;

    assert_eq!(changed.cache, CacheStatus::Miss);
    assert_eq!(changed.body, "two");
    assert_eq!(then.cache, CacheStatus::Hit);
    assert_eq!(then.body, "two");
    assert_eq!(f.server.hits("/doc"), 2);
    assert_eq!(f.store.len(), 1);
}

#[tokio::test]
async fn no_store_is_never_stored() {
    let mut f = fixture().await;
    f.server.on("/secret").reply(
        Reply::ok()
            .header("cache-control", "no-store, max-age=60")
            .body("secret"),
    );

    let first = f.get("/secret").await;
    let second = f.get("/secret").await;

    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(second.cache, CacheStatus::Miss);
    assert_eq!(second.body, "secret");
    assert_eq!(f.server.hits("/secret"), 2);
    assert!(f.store.is_empty());
}

#[tokio::test]
async fn no_cache_is_revalidated_every_time() {
    let mut f = fixture().await;
    f.server.on("/live").handle(|a| {
        if a.header("if-none-match").is_some() {
            Reply::status(304).header("etag", "\"x\"")
        } else {
            Reply::ok()
                .header("cache-control", "no-cache")
                .header("etag", "\"x\"")
                .body("live")
        }
    });

    f.get("/live").await;
    let second = f.get("/live").await;

    assert_eq!(second.cache, CacheStatus::Revalidated);
    assert_eq!(second.body, "live");
    assert_eq!(f.server.hits("/live"), 2);
}

#[tokio::test]
async fn vary_keeps_one_response_per_language() {
    let mut f = fixture().await;
    f.server.on("/greeting").handle(|a| {
        let body = match a.header("accept-language") {
            Some("fr") => "bonjour",
            _ => "hello",
        };
        Reply::ok()
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language")
            .body(body)
    });

    let en = f.get_with("/greeting", "accept-language", "en").await;
    let fr = f.get_with("/greeting", "accept-language", "fr").await;
    let en_again = f.get_with("/greeting", "accept-language", "en").await;
    let fr_again = f.get_with("/greeting", "accept-language", "fr").await;

    assert_eq!((en.cache, fr.cache), (CacheStatus::Miss, CacheStatus::Miss));
    assert_eq!(
        (en_again.cache, fr_again.cache),
        (CacheStatus::Hit, CacheStatus::Hit)
    );
    assert_eq!(en_again.body, "hello");
    assert_eq!(fr_again.body, "bonjour");
    let seen = f.server.arrivals_for("/greeting");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("accept-language"), Some("en"));
    assert_eq!(seen[1].header("accept-language"), Some("fr"));
    assert_eq!(f.store.len(), 2);
}

#[tokio::test]
async fn the_memory_bound_is_held_and_the_least_recently_used_goes_first() {
    // Room for three of these responses (1000 bytes of body, a few hundred
    // of headers and overhead each), not four.
    let mut f = fixture_with(5_500, |l| l).await;
    for i in 1..=6 {
        f.server.on(&format!("/item/{i}")).reply(
            Reply::ok()
                .header("cache-control", "max-age=60")
                .body(vec![b'x'; 1000]),
        );
    }

    for i in 1..=3 {
        f.get(&format!("/item/{i}")).await;
        assert!(f.store.bytes() <= 5_500);
    }
    assert_eq!(f.store.len(), 3);
    // Item 1 is used again, so item 2 is now the least recently used.
    assert_eq!(f.get("/item/1").await.cache, CacheStatus::Hit);
    for i in 4..=6 {
        f.get(&format!("/item/{i}")).await;
        assert!(f.store.bytes() <= 5_500, "{} bytes", f.store.bytes());
        assert_eq!(f.store.len(), 3);
    }

    // 2 and 3 went first, then 1: only 4, 5 and 6 are left.
    for i in 4..=6 {
        assert_eq!(f.get(&format!("/item/{i}")).await.cache, CacheStatus::Hit);
    }
    let one = f.get("/item/1").await;
    assert_eq!(one.cache, CacheStatus::Miss);
    assert_eq!(one.body.len(), 1000);
    assert_eq!(f.server.hits("/item/1"), 2);
    assert_eq!(f.server.hits("/item/5"), 1);
}

#[tokio::test]
async fn a_body_over_the_entry_limit_streams_through_uncached() {
    let mut f = fixture_with(1 << 20, |l| l.max_body_size(100)).await;
    f.server.on("/big").reply(
        Reply::ok()
            .header("cache-control", "max-age=60")
            .body(vec![b'y'; 1000]),
    );

    let first = f.get("/big").await;
    let second = f.get("/big").await;

    assert_eq!(first.body.len(), 1000);
    assert_eq!(second.cache, CacheStatus::Miss);
    assert_eq!(second.body.len(), 1000);
    assert_eq!(f.server.hits("/big"), 2);
    assert!(f.store.is_empty());
}

#[tokio::test]
async fn private_responses_to_authorized_requests_are_kept_per_credential() {
    let mut f = fixture().await;
    f.server.on("/me").handle(|a| {
        let who = a.header("authorization").unwrap_or("nobody").to_owned();
        Reply::ok()
            .header("cache-control", "private, max-age=60")
            .body(who)
    });

    let alice = f.get_with("/me", "authorization", "Bearer alice").await;
    let alice_again = f.get_with("/me", "authorization", "Bearer alice").await;
    let bob = f.get_with("/me", "authorization", "Bearer bob").await;

    // A private cache stores `private` and authorized responses ...
    assert_eq!(alice.cache, CacheStatus::Miss);
    assert_eq!(alice_again.cache, CacheStatus::Hit);
    assert_eq!(alice_again.body, "Bearer alice");
    // ... but never hands them to a request with other credentials.
    assert_eq!(bob.cache, CacheStatus::Miss);
    assert_eq!(bob.body, "Bearer bob");
    assert_eq!(f.server.hits("/me"), 2);
}

#[tokio::test]
async fn a_post_invalidates_the_stored_responses_of_its_uri() {
    let mut f = fixture().await;
    f.server.on("/orders").handle(|a| {
        if a.method == http::Method::POST {
            Reply::status(201)
        } else {
            Reply::ok()
                .header("cache-control", "max-age=60")
                .body("orders")
        }
    });

    f.get("/orders").await;
    assert_eq!(f.get("/orders").await.cache, CacheStatus::Hit);
    let post = Request::post(f.server.url("/orders"))
        .body(ReplayBody::from_bytes(Bytes::from_static(b"{}")))
        .unwrap();
    let posted = f.send(post).await;
    let after = f.get("/orders").await;

    assert_eq!(posted.cache, CacheStatus::Bypass);
    assert_eq!(after.cache, CacheStatus::Miss);
    let methods: Vec<_> = f
        .server
        .arrivals_for("/orders")
        .iter()
        .map(|a| a.method.to_string())
        .collect();
    assert_eq!(methods, ["GET", "POST", "GET"]);
}

#[tokio::test]
async fn a_conditional_request_of_the_caller_passes_through() {
    let mut f = fixture().await;
    f.server.on("/c").reply(
        Reply::ok()
            .header("cache-control", "max-age=60")
            .header("etag", "\"e\"")
            .body("c"),
    );

    f.get("/c").await;
    let conditional = f.get_with("/c", "if-none-match", "\"other\"").await;

    assert_eq!(conditional.cache, CacheStatus::Bypass);
    assert_eq!(
        f.server.arrivals_for("/c")[1].header("if-none-match"),
        Some("\"other\"")
    );
}
