#!/usr/bin/env bash
# Reproduces every figure of BENCHMARKS.md: `cd benches && ./run.sh`.
# About 3.5 minutes once built; a cold build adds about 2.5 minutes on 2 cores.
# Results are printed and kept in target/results/ (or $CARGO_TARGET_DIR/results/).
set -euo pipefail
cd "$(dirname "$0")"
tgt=${CARGO_TARGET_DIR:-target}
bin=$tgt/release
out=$tgt/results
mkdir -p "$out"

echo "== machine"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') model $(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), $(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') MHz$(grep -q hypervisor /proc/cpuinfo && echo ', virtual machine')"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- .. 2>/dev/null || echo ' (work tree has changes)')"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "busiest processes before:"
  ps -eo pcpu,etime,comm --sort=-pcpu | head -6
  echo "versions (Cargo.lock):"
  for c in hyper hyper-util tokio tower http reqwest reqwest-middleware reqwest-retry reqwest-tracing governor tracing tracing-subscriber criterion stats_alloc; do
    awk -v c="$c" '$0 == "name = \"" c "\"" { getline; gsub(/version = |"/, ""); print "  " c " " $0 }' Cargo.lock
  done
} | tee "$out/machine.txt"

echo "== build"
cargo build --release --bins
cargo bench --no-run --bench layers --bench layers_subscriber

echo "== per-layer cost in memory (criterion, then allocation counts)"
cargo bench --bench layers -- --output-format bencher | tee "$out/layers.txt"
cargo bench --bench layers_subscriber -- --output-format bencher | tee "$out/layers_subscriber.txt"
"$bin"/allocs "$out/layers.txt" | tee "$out/layers.md"
"$bin"/allocs --subscriber "$out/layers_subscriber.txt" | tee "$out/layers_subscriber.md"

echo "== limiter accuracy"
"$bin"/limiter --secs 3 | tee "$out/limiter.md"

echo "== loopback throughput"
"$bin"/loopback --runs 15 --secs 0.5 --warmup 1 2>&1 | tee "$out/loopback.md"

{
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "busiest processes after:"
  ps -eo pcpu,etime,comm --sort=-pcpu | head -6
} | tee -a "$out/machine.txt"
echo "results in $out/"
