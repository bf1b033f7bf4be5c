//! Per-layer overhead in memory: each parapet layer alone over an
//! always-ready in-process service, the stacks, and the facade. Every
//! iteration is one whole call (ready, call, response future to its end,
//! body read to its end and dropped). Allocations are counted separately by
//! the `allocs` binary (a counting allocator would slow these timings).

use std::time::Duration;

use criterion::Criterion;

fn main() {
    // The layers read tokio's clock and make timers: give them a runtime
    // context. The futures are polled by hand (they never wait).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(60)
        .configure_from_args();
    let mut group = c.benchmark_group("layers");
    for mut case in parapet_bench::cases() {
        group.bench_function(case.name, |b| b.iter(&mut case.run));
    }
    group.finish();
    c.final_summary();
}
