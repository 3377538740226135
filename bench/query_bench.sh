#!/bin/bash
# The query service benchmark (issue #13): for each fairness strategy, six release-build
# processes on loopback (configs/one_host.json, data/2020-fire: the full 46 days), their
# start-up time and memory, then `ringnet bench-query` with the gRPC system's workload
# (PM2.5 in [10, 50], limit 5000 capped at 2000, 20 clients x 20 requests, RUNS times),
# the mixed workload, and the skewed one (one team asked 10x as often, 200 clients).
# usage: bench/query_bench.sh [OUT_DIR] [RUNS]     (results in OUT_DIR, default bench/out/query)
set -euo pipefail
source "$(dirname "$0")/query_lib.sh"
out=${1:-$repo/bench/out/query}
runs=${2:-3}
skew_cap=${SKEW_CAP:-10} # per-team cap in the skewed run: low enough that 200 clients reach it
mkdir -p "$out"
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
	load_ms=$(for port in 61051 61052 61053 61054 61055 61056; do curl -s "http://127.0.0.1:$port/query/status"; echo; done | python3 -c 'import json,sys; s=[json.loads(l) for l in sys.stdin if l.strip()]; print("%.0f ms wall, %.0f ms CPU" % (max(x["load_ms"] for x in s), max(x["load_cpu_ms"] for x in s)))')
}

cpu_ticks() { local t=0; for p in "${pids[@]}"; do t=$(( t + $(awk '{print $14 + $15}' /proc/$p/stat) )); done; echo $t; }
rss_mib() { local k=0; for p in "${pids[@]}"; do k=$(( k + $(awk '/VmRSS/{print $2}' /proc/$p/status) )); done; echo $(( k / 1024 )); }

stop_cluster() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}

summary=$out/summary.txt
: >"$summary"
for strategy in strict weighted hybrid; do
	cfg=$tmp/$strategy.json
	for cap in 60 "$skew_cap"; do
		python3 - "$strategy" "$cap" >"$tmp/$strategy-$cap.json" <<'PY'
import json, sys
c = json.load(open("configs/one_host.json"))
c["strategies"]["fairness_strategy"] = sys.argv[1]
c["strategies"]["max_concurrent"] = int(sys.argv[2])
print(json.dumps(c))
PY
	done
	cp "$tmp/$strategy-60.json" "$cfg"
	start_cluster "$cfg"
	echo "$strategy: start-up $startup_ms ms (slowest load $load_ms), RSS of six $((rss_kb / 1024)) MiB, load average $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$summary"
	for r in $(seq 1 "$runs"); do
		c0=$(cpu_ticks)
		"$bin" bench-query --config "$cfg" --leader 127.0.0.1:61051 --num-requests 400 --concurrency 20 \
			--workload original --output-dir "$out/original-$r" >/dev/null
		c1=$(cpu_ticks)
		grep -E "whole request|query call|served" "$out/original-$r/benchmark_fairness_$strategy.txt" | sed "s/^/  original run $r: /" | tee -a "$summary"
		echo "  original run $r: CPU of the six processes $(( (c1 - c0) * 10 )) ms for 400 requests, RSS now $(rss_mib) MiB" | tee -a "$summary"
	done
	"$bin" bench-query --config "$cfg" --leader 127.0.0.1:61051 --num-requests 400 --concurrency 20 \
		--workload mix --output-dir "$out/mix" >/dev/null
	grep -E "whole request|served|green|pink|Jain" "$out/mix/benchmark_fairness_$strategy.txt" | sed "s/^/  mix: /" | tee -a "$summary"
	stop_cluster
	start_cluster "$tmp/$strategy-$skew_cap.json"
	"$bin" bench-query --config "$tmp/$strategy-$skew_cap.json" --leader 127.0.0.1:61051 --num-requests 4000 --concurrency 200 \
		--workload skewed --output-dir "$out/skewed" >/dev/null || true
	sed "s/^/  skewed: /" "$out/skewed/benchmark_fairness_$strategy.txt" | grep -E "served|green|pink|Jain" | tee -a "$summary"
	stop_cluster
done
echo "machine: $(nproc) cores, $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2 | xargs)" | tee -a "$summary"
