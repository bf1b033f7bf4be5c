#!/usr/bin/env bash
# The profiles behind BENCHMARKS.md's "Known costs" (valgrind; not part of
# run.sh). `./profile.sh [CASE...]` prints user-space instructions per call
# of each in-memory case (callgrind: the difference between 20 000 and
# 10 000 calls, so setup cancels out), and writes for each case
#   target/profile/cg.CASE.out    (callgrind_annotate --inclusive=yes ...)
#   target/profile/dhat.CASE.json (allocation sites: dh_view.html, or
#                                  the summary printed below)
#
# `./profile.sh --loopback` instead profiles each loopback client at
# concurrency 64 (about a minute): user-space instructions and heap
# allocations per request.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bins >/dev/null
out=target/profile
mkdir -p "$out"

if [ "${1:-}" = "--loopback" ]; then
  echo "| client | instructions per request | heap allocations per request | bytes allocated per request |"
  echo "|---|---:|---:|---:|"
  for k in hyper stack parapet reqwest middleware; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.loop.$k.out" \
      target/release/loopback --only "$k" --concurrency 64 --runs 1 --secs 3 --warmup 0.5 >/dev/null 2>&1
    valgrind --tool=dhat --dhat-out-file="$out/dhat.loop.$k.json" \
      target/release/loopback --only "$k" --concurrency 64 --runs 1 --secs 2 --warmup 0.5 >/dev/null 2>&1
    python3 - "$k" "$out/cg.loop.$k.out" "$out/dhat.loop.$k.json" <<'PY'
import json, re, subprocess, sys
name, cg, dh = sys.argv[1:4]
# Requests: calls of hyper's dispatch `Sender::try_send`, once per request.
text = subprocess.run(["callgrind_annotate", "--tree=caller", "--auto=no", "--threshold=100", cg],
                      capture_output=True, text=True).stdout
total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
lines = text.splitlines()
n = 0
for i, l in enumerate(lines):
    if re.search(r"\*\s+\S*dispatch\.rs:hyper::client::dispatch::Sender<T,U>::try_send \[", l):
        j = i - 1
        while j >= 0 and lines[j].strip():
            m = re.search(r"\(([\d,]+)x\)", lines[j])
            if m:
                n += int(m.group(1).replace(",", ""))
            j -= 1
        break
d = json.load(open(dh))
ftbl = d["ftbl"]
blocks = sum(p["tbk"] for p in d["pps"])
nbytes = sum(p["tb"] for p in d["pps"])
reqs = max(p["tbk"] for p in d["pps"]
           if any("try_send" in ftbl[f] and "dispatch" in ftbl[f] for f in p["fs"]))
print(f"| {name} | {total / n:.0f} | {blocks / reqs:.1f} | {nbytes / reqs:.0f} |")
PY
  done
  exit 0
fi

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=(bare request_id request_id_no_record trace attempt_trace deadline retry throttle rate_limit
         rate_limit_per_authority auth concurrency_limit attempt_timeout
         default_stack default_stack_no_record full_stack facade_service facade_send)
fi
ir() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2.out" \
    target/release/allocs --only "$1" --calls "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
# The biggest differences in self cost (instructions per call) between a
# case and `bare`, by function.
top() {
  python3 - "$out/cg.bare.out" "$out/cg.$1.out" <<'PY'
import collections, re, subprocess, sys
def load(path):
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                          capture_output=True, text=True).stdout
    d = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[/.*\]$", "", m.group(2))
        name = name.split(":", 1)[1] if ":" in name else name
        d[name] += int(m.group(1).replace(",", "")) / 20000
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
rows = sorted(set(a) | set(b), key=lambda k: a[k] - b[k])[:5]
def short(name):
    prev = None
    while prev != name:
        prev = name
        name = re.sub(r"<([^<>]*)>", lambda m: m.group(0) if " as " in m.group(1) else "", name)
    name = re.sub(r"<(?:\w+::)*(\w+) as (?:\w+::)*(\w+)>", r"<\1 as \2>", name)
    name = re.sub(r"(?:\w+::)*(\w+::\w+)", r"\1", name)
    return name[:60]
print("; ".join(f"{short(k)} +{b[k] - a[k]:.0f}" for k in rows if b[k] - a[k] > 10))
PY
}

echo "| case | instructions per call | allocation sites (per call) |"
echo "|---|---:|---|"
if [[ " ${cases[*]} " != *" bare "* ]]; then cases=(bare "${cases[@]}"); fi
for c in "${cases[@]}"; do
  a=$(ir "$c" 10000)
  b=$(ir "$c" 20000)
  mv "$out/cg.$c.20000.out" "$out/cg.$c.out"
  rm -f "$out/cg.$c.10000.out"
  valgrind --tool=dhat --dhat-out-file="$out/dhat.$c.json" \
    target/release/allocs --only "$c" --calls 1000 >/dev/null 2>&1
  sites=$(python3 - "$out/dhat.$c.json" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
ftbl = d["ftbl"]
sites = {}
for p in sorted(d["pps"], key=lambda p: -p["tbk"]):
    if p["tbk"] < 900:
        continue
    site = "the benchmark's own request"
    for f in p["fs"]:
        m = re.match(r"^0x[0-9A-Fa-f]+: (.*) \((\S+\.rs):(\d+)\)$", ftbl[f])
        if not m:
            continue
        fn, file, line = m.groups()
        head = fn[1:] if fn.startswith("<") else fn
        if not head.startswith(("parapet_", "parapet::")) or head.startswith("parapet_bench"):
            continue
        if "library/" in file or "/rustc/" in file:
            continue
        krate = re.search(r"(parapet(?:_[a-z]+)?)::", fn)
        krate = krate.group(1).replace("_", "-") if krate else "?"
        if krate == "parapet-bench":
            continue
        if not file.startswith("src/"):
            file = "src/" + file
        site = f"{krate}/{file}:{line}"
        break
    n, b = sites.get(site, (0.0, 0))
    sites[site] = (n + p["tbk"] / 1000, b + p["tb"] // 1000)
print("; ".join(f"{n:.0f} × ({b} B) at {s}" for s, (n, b) in sites.items()) or "none")
PY
)
  echo "| \`$c\` | $(( (b - a) / 10000 )) | $sites |"
done
echo
echo "| case | biggest self-cost differences from bare (instructions per call) |"
echo "|---|---|"
for c in "${cases[@]}"; do
  [ "$c" = bare ] && continue
  echo "| \`$c\` | $(top "$c") |"
done
