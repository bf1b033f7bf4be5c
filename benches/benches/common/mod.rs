//! What the two criterion benches share: the runtime context the layers
//! need, criterion's settings, and one whole call per iteration.

use std::time::Duration;

use criterion::Criterion;

/// Times each case that `cases` makes (called inside the runtime context)
/// in a criterion group named `group`.
pub fn bench(group: &str, cases: impl FnOnce() -> Vec<parapet_bench::Case>) {
    let rt = parapet_bench::timer_runtime();
    let _guard = rt.enter();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(60)
        .configure_from_args();
    let mut group = c.benchmark_group(group);
    for mut case in cases() {
        group.bench_function(case.name, |b| b.iter(&mut case.run));
    }
    group.finish();
    c.final_summary();
}
