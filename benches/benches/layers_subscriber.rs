//! Per-call cost with a tracing subscriber installed (a `fmt` subscriber at
//! INFO writing to `io::sink`): the trace layers, the stacks and the facade.
//! A process of its own, see `install_fmt_subscriber`. Every
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
    parapet_bench::install_fmt_subscriber();
    let mut group = c.benchmark_group("layers_subscriber");
    for mut case in parapet_bench::cases()
        .into_iter()
        .filter(|c| parapet_bench::SUBSCRIBER_CASES.contains(&c.name))
    {
        group.bench_function(case.name, |b| b.iter(&mut case.run));
    }
    group.finish();
    c.final_summary();
}
