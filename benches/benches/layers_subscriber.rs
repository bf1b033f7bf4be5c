//! Per-call cost with a tracing subscriber installed (a `fmt` subscriber at
//! INFO writing to `io::sink`): the trace layers, the stacks and the facade.
//! A process of its own, see `install_fmt_subscriber`. Every
//! iteration is one whole call (ready, call, response future to its end,
//! body read to its end and dropped). Allocations are counted separately by
//! the `allocs` binary (a counting allocator would slow these timings).

mod common;

fn main() {
    common::bench("layers_subscriber", || {
        parapet_bench::install_fmt_subscriber();
        parapet_bench::cases()
            .into_iter()
            .filter(|c| parapet_bench::SUBSCRIBER_CASES.contains(&c.name))
            .collect()
    });
}
