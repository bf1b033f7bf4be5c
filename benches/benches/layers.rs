//! Per-layer overhead in memory: each parapet layer alone over an
//! always-ready in-process service, the stacks, and the facade. Every
//! iteration is one whole call (ready, call, response future to its end,
//! body read to its end and dropped). Allocations are counted separately by
//! the `allocs` binary (a counting allocator would slow these timings).

mod common;

fn main() {
    common::bench("layers", parapet_bench::cases);
}
