#!/usr/bin/env bash
# Runs bench/cast/run (cast + naive + BitTorrent) on every topology of ../shared/topologies,
# the two contest traces on scenario 1, and bench/cast/topologies; one JSON per run in
# bench/out/cast/, then bench/cast/report.py turns them into docs/benchmarks.md's table and
# docs/cast-completion.png. usage: bench/cast/suite.sh [SIZE_BYTES] [FIRST_RUN] [LAST_RUN]
# (root; make build). Runs are numbered so that later calls add to earlier ones.
# BASELINE=none|naive|bittorrent|all (default all) picks the baselines run beside each
# cast; OUT=DIR (default bench/out/cast) keeps one size's runs apart from another's.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
shared="$repo/../shared/topologies"
size="${1:-20971520}"
first="${2:-1}"
last="${3:-$first}"
out="${OUT:-$repo/bench/out/cast}"
baseline="${BASELINE:-all}"
mkdir -p "$out"
cases=()
for t in "$shared"/*.txt "$shared"/contest/scenario*.txt "$repo"/bench/cast/topologies/star20.txt \
         "$repo"/bench/cast/topologies/mesh12.txt; do
  cases+=("$t|")
done
for tr in "$shared"/contest/sc1-trace*.txt; do
  cases+=("$shared/contest/scenario1.txt|$tr")
done
for r in $(seq "$first" "$last"); do
  for c in "${cases[@]}"; do
    t="${c%%|*}" tr="${c#*|}"
    name="$(basename "$t" .txt)${tr:++$(basename "$tr" .txt)}"
    echo "== $name run $r ($(date -u +%H:%M:%S))" >&2
    "$repo/bench/cast/run" "$t" ${tr:+--trace "$tr"} --size "$size" --baseline "$baseline" --json \
      > "$out/$name.$r.json" 2> "$out/$name.$r.log" || echo "   (exit $?; see $out/$name.$r.log)" >&2
    tail -n 1 "$out/$name.$r.json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("   cast U=%s eff=%s naive U=%s bt U=%s" % (d.get("u_s"), d.get("efficiency"), d.get("naive",{}).get("u_s"), d.get("bittorrent",{}).get("u_s")))' >&2 || true
  done
done
