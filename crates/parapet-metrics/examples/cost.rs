//! What the metrics layers cost per call, in process (no sockets: the
//! inner service answers at once, so the figure is the layers' own work).
//!
//! ```text
//! cargo run --release -p parapet-metrics --example cost
//! ```
//!
//! Three stacks, the same calls: no metrics layers; both layers with no
//! recorder installed (the `metrics` facade's no-op); both layers with
//! metrics-util's `DebuggingRecorder` (a real registry that stores every
//! value). Not a benchmark suite: a quick figure for the docs.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)] // an example's shortcuts

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use metrics_util::debugging::DebuggingRecorder;
use parapet_metrics::{AttemptMetricsLayer, MetricsLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const CALLS: u32 = 200_000;

async fn run<S>(mut svc: S) -> Duration
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let req = || {
        Request::get("http://api.example.com:8443/v1/things")
            .body(())
            .unwrap()
    };
    // Warm up (handles registered, caches hot).
    for _ in 0..10_000 {
        svc.ready().await.unwrap().call(req()).await.unwrap();
    }
    #[allow(clippy::disallowed_methods)] // a wall-clock figure, not layer code
    let start = std::time::Instant::now();
    for _ in 0..CALLS {
        svc.ready().await.unwrap().call(req()).await.unwrap();
    }
    start.elapsed()
}

fn per_call(d: Duration) -> f64 {
    d.as_nanos() as f64 / f64::from(CALLS)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inner = || service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let with_layers = || {
        ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(AttemptMetricsLayer::new())
            .service(inner())
    };

    let none = rt.block_on(run(inner()));
    let noop = rt.block_on(run(with_layers()));
    let recorder = DebuggingRecorder::new();
    let recorded = metrics::with_local_recorder(&recorder, || rt.block_on(run(with_layers())));

    let base = per_call(none);
    println!("{CALLS} calls each, ns per call:");
    println!("  no metrics layers:                 {base:8.0}");
    let n = per_call(noop);
    println!(
        "  layers, no recorder (no-op):       {n:8.0}  (+{:.0})",
        n - base
    );
    let r = per_call(recorded);
    println!(
        "  layers, DebuggingRecorder:         {r:8.0}  (+{:.0})",
        r - base
    );
}
