//! What the cache layer costs: a miss through the layer against the same
//! inner service without it, and a hit. The inner service answers at once
//! from memory, so the figures are the layer's own work (cloning the
//! request's head for the policy, the RFC 9111 evaluation, copying the
//! body for the store). Measures; asserts nothing.
//!
//! ```sh
//! cargo run --release -p parapet-cache --example cost
//! ```

// An example: a failed unwrap ends it with a message.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::convert::Infallible;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use parapet_cache::{CacheLayer, MemoryStore};
use tower::{Service, ServiceBuilder, ServiceExt};

const N: u32 = 100_000;

fn inner(
    cache_control: &'static str,
) -> impl Service<Request<()>, Response = Response<Full<bytes::Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(move |_req: Request<()>| async move {
        let res = Response::builder()
            .header("cache-control", cache_control)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(
                b"{\"id\":1,\"name\":\"x\"}",
            )))
            .unwrap();
        Ok::<_, Infallible>(res)
    })
}

fn request(i: u32) -> Request<()> {
    Request::get(format!("http://api.example.com/items/{i}"))
        .header("accept", "application/json")
        .body(())
        .unwrap()
}

/// Sends `N` requests through `svc` (reading every body) and prints the
/// time per call.
async fn measure<S, B>(name: &str, mut svc: S, same_url: bool)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = bytes::Bytes, Error = Infallible>,
{
    let start = Instant::now();
    for i in 0..N {
        let req = request(if same_url { 0 } else { i });
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let per_call = start.elapsed() / N;
    println!("{name:<58} {per_call:>10.2?} per call");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    measure("no cache layer", inner("max-age=60"), false).await;
    // A miss that is stored: every URL is new (the store is large enough).
    let layer = CacheLayer::new(MemoryStore::new(1 << 30));
    measure(
        "miss, stored (a new URL each time)",
        ServiceBuilder::new()
            .layer(layer)
            .service(inner("max-age=60")),
        false,
    )
    .await;
    // A miss that is not stored: looked up, evaluated, passed through.
    let layer = CacheLayer::new(MemoryStore::new(1 << 30));
    measure(
        "miss, not storable (no-store)",
        ServiceBuilder::new()
            .layer(layer)
            .service(inner("no-store")),
        false,
    )
    .await;
    let layer = CacheLayer::new(MemoryStore::new(1 << 30));
    measure(
        "hit (the same URL each time)",
        ServiceBuilder::new()
            .layer(layer)
            .service(inner("max-age=60")),
        true,
    )
    .await;
}
