#!/bin/bash
# The query benchmark on two "hosts": network namespaces rnq-h1 (A, B, C and the client)
# and rnq-h2 (D, E, F) joined by a veth pair, addresses as configs/two_hosts.json says.
# Needs root; without it, says so and exits 0 (skipped). Everything it makes is named
# rnq-* and removed on exit, even on failure.
# usage: bench/query_netns.sh [OUT_DIR] [RUNS]
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "query_netns: skipped (needs root for network namespaces)"; exit 0; fi
source "$(dirname "$0")/query_lib.sh"
out=${1:-$repo/bench/out/query-netns}
runs=${2:-3}
mkdir -p "$out"
tmp=$(mktemp -d /tmp/rnq-netns.XXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del rnq-h1 2>/dev/null || true
	ip netns del rnq-h2 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add rnq-h1
ip netns add rnq-h2
ip link add rnq-v1 type veth peer name rnq-v2
ip link set rnq-v1 netns rnq-h1
ip link set rnq-v2 netns rnq-h2
ip -n rnq-h1 addr add 10.77.0.1/24 dev rnq-v1
ip -n rnq-h2 addr add 10.77.0.2/24 dev rnq-v2
for h in rnq-h1 rnq-h2; do ip -n $h link set lo up; done
ip -n rnq-h1 link set rnq-v1 up
ip -n rnq-h2 link set rnq-v2 up
host_of() { case $1 in A | B | C) echo rnq-h1 ;; *) echo rnq-h2 ;; esac; }
ip_of() { case $1 in A | B | C) echo 10.77.0.1 ;; *) echo 10.77.0.2 ;; esac; }
port_of() { case $1 in A) echo 61051 ;; B) echo 61052 ;; C) echo 61053 ;; D) echo 61054 ;; E) echo 61055 ;; F) echo 61056 ;; esac; }
# the API asks for a token on a non-loopback address: one for the nodes and the client
tok=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$tok" >"$tmp/api.token"
export RINGNET_API_TOKEN=$tok
summary=$out/summary.txt
: >"$summary"
for strategy in strict weighted hybrid; do
	cfg=$tmp/$strategy.json
	python3 - "$strategy" >"$cfg" <<'PY'
import json, sys
c = json.load(open("configs/two_hosts.json"))
c["strategies"]["fairness_strategy"] = sys.argv[1]
print(json.dumps(c))
PY
	pids=()
	t0=$(date +%s%N)
	for id in A B C D E F; do
		ip netns exec "$(host_of $id)" "$bin" node --config "$cfg" --id $id --data "$tmp/ring-$strategy-$id" --log-level warn --api-token "$tmp/api.token" --http-tls none >"$tmp/$id.log" 2>&1 &
		pids+=($!)
	done
	for id in A B C D E F; do
		until ip netns exec "$(host_of $id)" curl -sf -H "Authorization: Bearer $tok" "http://$(ip_of $id):$(port_of $id)/query/status" >/dev/null; do sleep 0.01; done
	done
	echo "$strategy: start-up $(( ($(date +%s%N) - t0) / 1000000 )) ms, load average $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$summary"
	until ip netns exec rnq-h1 curl -sf -H "Authorization: Bearer $tok" http://10.77.0.1:61051/query/status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if all(v["state"]=="up" for v in s["neighbors"].values()) else 1)'; do sleep 0.05; done
	for r in $(seq 1 "$runs"); do
		ip netns exec rnq-h1 "$bin" bench-query --config "$cfg" --leader 10.77.0.1:61051 --num-requests 400 \
			--concurrency 20 --workload original --output-dir "$out/original-$r" >/dev/null
		grep -E "whole request|query call|served" "$out/original-$r/benchmark_fairness_$strategy.txt" | sed "s/^/  original run $r: /" | tee -a "$summary"
	done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
done
