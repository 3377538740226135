#!/bin/bash
# The query service benchmark (issue #13): for each fairness strategy, six release-build
# processes on loopback (configs/one_host.json, data/2020-fire: the full 46 days), their
# start-up time and memory, then `ringnet bench-query` with the gRPC system's workload
# (PM2.5 in [10, 50], limit 5000 capped at 2000, 20 clients x 20 requests, RUNS times),
# the mixed workload, and the skewed one (one team asked 10x as often, 200 clients).
# usage: bench/query_bench.sh [OUT_DIR] [RUNS]     (results in OUT_DIR, default bench/out/query)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/build/ringnet
out=${1:-$repo/bench/out/query}
runs=${2:-3}
skew_cap=${SKEW_CAP:-60}
mkdir -p "$out"
cd "$repo"
[ -x "$bin" ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null && cmake --build build -j2 >/dev/null; }
[ -d data/2020-fire/data ] || "$bin" data fetch --config configs/one_host.json
tmp=$(mktemp -d /tmp/rnq-bench.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start_cluster() { # $1 config
	pids=()
	local t0 t1
	t0=$(date +%s%N)
	for id in A B C D E F; do
		"$bin" node --config "$1" --id "$id" --data "$tmp/ring-$id" --log-level warn >"$tmp/$id.log" 2>&1 &
		pids+=($!)
	done
	for port in 61051 61052 61053 61054 61055 61056; do
		until curl -sf "http://127.0.0.1:$port/query/status" >/dev/null; do sleep 0.01; done
	done
	t1=$(date +%s%N)
	startup_ms=$(( (t1 - t0) / 1000000 ))
	# every neighbour seen up by the leader before measuring
	until curl -sf http://127.0.0.1:61051/query/status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if all(v["state"]=="up" for v in s["neighbors"].values()) else 1)'; do sleep 0.05; done
	rss_kb=0
	for p in "${pids[@]}"; do rss_kb=$(( rss_kb + $(awk '/VmRSS/{print $2}' /proc/$p/status) )); done
	load_ms=$(for port in 61051 61052 61053 61054 61055 61056; do curl -s "http://127.0.0.1:$port/query/status"; echo; done | python3 -c 'import json,sys; print(max(json.loads(l)["load_ms"] for l in sys.stdin if l.strip()))')
}

stop_cluster() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}

summary=$out/summary.txt
: >"$summary"
for strategy in strict weighted hybrid; do
	cfg=$tmp/$strategy.json
	python3 - "$strategy" "$skew_cap" >"$cfg" <<'PY'
import json, sys
c = json.load(open("configs/one_host.json"))
c["strategies"]["fairness_strategy"] = sys.argv[1]
c["strategies"]["max_concurrent"] = int(sys.argv[2])
print(json.dumps(c))
PY
	start_cluster "$cfg"
	echo "$strategy: start-up $startup_ms ms (slowest load $load_ms ms), RSS of six $((rss_kb / 1024)) MiB" | tee -a "$summary"
	for r in $(seq 1 "$runs"); do
		"$bin" bench-query --config "$cfg" --leader 127.0.0.1:61051 --num-requests 400 --concurrency 20 \
			--workload original --output-dir "$out/original-$r" >/dev/null
		grep -E "whole request|query call|served" "$out/original-$r/benchmark_fairness_$strategy.txt" | sed "s/^/  original run $r: /" | tee -a "$summary"
	done
	"$bin" bench-query --config "$cfg" --leader 127.0.0.1:61051 --num-requests 400 --concurrency 20 \
		--workload mix --output-dir "$out/mix" >/dev/null
	"$bin" bench-query --config "$cfg" --leader 127.0.0.1:61051 --num-requests 4000 --concurrency 200 \
		--workload skewed --output-dir "$out/skewed" >/dev/null || true
	sed "s/^/  skewed: /" "$out/skewed/benchmark_fairness_$strategy.txt" | grep -E "served|green|pink|Jain" | tee -a "$summary"
	stop_cluster
done
echo "machine: $(nproc) cores, $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2 | xargs)" | tee -a "$summary"
