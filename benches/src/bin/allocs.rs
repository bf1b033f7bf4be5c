//! Heap allocations per call of every in-memory case, counted by a counting
//! global allocator (`stats_alloc`), and, given criterion's `bencher` output,
//! one Markdown table with both.
//!
//! - `allocs [BENCHER_OUTPUT]`: the no-subscriber cases;
//! - `allocs --subscriber [BENCHER_OUTPUT]`: the cases with a `fmt`
//!   subscriber installed (a process of its own, like the bench);
//! - `allocs --only NAME[,NAME...] [--calls N]`: run cases alone and print
//!   their counts (for `valgrind --tool=dhat` or `--tool=callgrind`);
//!   built with `--features metrics`, `--prometheus` after them installs
//!   metrics-exporter-prometheus's recorder first.

#![forbid(unsafe_code)]

use std::alloc::System;
use std::collections::HashMap;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: usize = 10_000;

/// `test GROUP/NAME ... bench:  123 ns/iter (+/- 4)` lines, by name.
fn read_bencher(path: &str, group: &str) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let prefix = format!("test {group}/");
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some((name, tail)) = rest.split_once(" ... bench:") else {
            continue;
        };
        let ns = tail
            .split_whitespace()
            .next()
            .map(|n| n.replace(',', ""))
            .and_then(|n| n.parse::<f64>().ok());
        if let Some(ns) = ns {
            out.insert(name.trim().to_owned(), ns);
        }
    }
    out
}

/// Allocations and bytes per call over `calls` calls.
fn count(run: &mut dyn FnMut(), calls: usize) -> (f64, f64) {
    let region = Region::new(GLOBAL);
    for _ in 0..calls {
        run();
    }
    let stats = region.change();
    #[allow(clippy::cast_precision_loss)]
    (
        stats.allocations as f64 / calls as f64,
        stats.bytes_allocated as f64 / calls as f64,
    )
}

fn main() {
    let rt = parapet_bench::timer_runtime();
    let _guard = rt.enter();
    let mut args: Vec<String> = std::env::args().skip(1).collect();

    if args.first().is_some_and(|a| a == "--only") {
        let names = args.get(1).expect("--only NAME").clone();
        let calls = match args.get(2..4) {
            Some([f, n]) if f == "--calls" => n.parse().expect("--calls N"),
            _ => CALLS,
        };
        if args.iter().any(|a| a == "--subscriber") {
            parapet_bench::install_fmt_subscriber();
        }
        #[cfg(feature = "metrics")]
        if args.iter().any(|a| a == "--prometheus") {
            // The recorder an application would install: every metric
            // registered and stored, rendered only on a scrape.
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("no recorder installed yet");
        }
        let mut all = parapet_bench::cases();
        for name in names.split(',') {
            let case = all
                .iter_mut()
                .find(|c| c.name == name)
                .expect("no such case");
            let (a, b) = count(&mut case.run, calls);
            println!("{name}: {a:.2} allocations, {b:.0} bytes per call over {calls} calls");
        }
        return;
    }

    let subscriber = args.first().is_some_and(|a| a == "--subscriber");
    if subscriber {
        args.remove(0);
        parapet_bench::install_fmt_subscriber();
    }
    let group = if subscriber {
        "layers_subscriber"
    } else {
        "layers"
    };
    let timings = args.first().map(|p| read_bencher(p, group));
    let bare_ns = timings.as_ref().and_then(|t| t.get("bare").copied());

    println!(
        "| case | what | ns/call | ns over bare | allocs/call over bare | bytes allocated/call | response future bytes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut bare_allocs = 0.0;
    for case in &mut parapet_bench::cases() {
        if subscriber && !parapet_bench::SUBSCRIBER_CASES.contains(&case.name) {
            continue;
        }
        // Warm up: first-seen keys, lazily made state, thread locals.
        for _ in 0..100 {
            (case.run)();
        }
        let (allocs, bytes) = count(&mut case.run, CALLS);
        let is_bare = case.name == "bare";
        if is_bare {
            bare_allocs = allocs;
        }
        let ns = timings.as_ref().and_then(|t| t.get(case.name).copied());
        let fmt_ns = ns.map_or_else(|| "-".into(), |n| format!("{n:.0}"));
        let over = match (ns, bare_ns) {
            (Some(n), Some(b)) if !is_bare => format!("{:.0}", n - b),
            _ => "-".into(),
        };
        let allocs_over = if is_bare {
            allocs
        } else {
            allocs - bare_allocs
        };
        let fut = if case.future_bytes == 0 {
            "-".to_owned()
        } else {
            case.future_bytes.to_string()
        };
        let what = if subscriber {
            case.what.replace("(no subscriber)", "(fmt subscriber)")
        } else {
            case.what.to_owned()
        };
        println!(
            "| `{}` | {what} | {fmt_ns} | {over} | {allocs_over:.2} | {bytes:.0} | {fut} |",
            case.name
        );
    }
    println!();
    println!(
        "(bare itself: {bare_allocs:.2} allocations per call; bytes/call is the total allocated per call, bare included; {CALLS} calls per case after 100 of warm-up{})",
        if subscriber {
            "; fmt subscriber at INFO to io::sink installed globally"
        } else {
            "; no tracing subscriber"
        }
    );
}
