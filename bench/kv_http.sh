#!/usr/bin/env bash
# Key-value benchmark of the node (issue #3), each ringnet figure beside its reference in
# the same run, medians of RUNS wrk runs of SECS seconds at CONNS connections:
#   1. GET /kv/<key> on one node   vs nginx serving a static file of the same size
#   2. GET through a 5-node ring (keys spread, ~4/5 forwarded) vs the same nginx
#   3. put and get on a 3-node ring vs a 3-node etcd cluster (v3 JSON gateway)
# Needs: scripts/deps.sh --bench (wrk, nginx-light, etcd-server). Loopback only.
#   bash bench/kv_http.sh [path/to/ringnet]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-build/ringnet}")
RUNS=${RUNS:-3} SECS=${SECS:-5} CONNS=${CONNS:-16}
for t in wrk nginx etcd; do command -v $t >/dev/null || { echo "kv_http: $t missing: run scripts/deps.sh --bench" >&2; exit 1; }; done
TMP=$(mktemp -d)
chmod 755 "$TMP" # nginx's workers must be able to read the file it serves
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
# wrk once: prints "requests_per_sec p99_ms"
wrk1() {
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs:  # a run that measured error pages measures nothing
    sys.stderr.write("wrk: %s non-2xx answers: not a valid measurement\n" % errs.group(1))
    sys.exit(1)
print(rps, p99)'
}
# median over RUNS of wrk1: prints "rps p99"
wrkm() {
  for _ in $(seq "$RUNS"); do wrk1 "$@"; done | python3 -c '
import sys, statistics
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
print(statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))'
}
row() { # name ringnet(rps p99) ref(rps p99) refname
  python3 - "$@" <<'PY'
import sys
name, a, ap, b, bp, ref = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
print(f"| {name} | {a:,.0f} req/s, p99 {ap:.2f} ms | {ref}: {b:,.0f} req/s, p99 {bp:.2f} ms | {a/b:.2f} |")
PY
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; wrk -t1 -c$CONNS -d${SECS}s, median of $RUNS"
echo
echo "| run | ringnet | reference | ratio (ringnet / reference) |"
echo "|---|---|---|---|"

# --- one node and nginx -------------------------------------------------------------
"$BIN" node --id bench-1 --listen 127.0.0.1:18601 --http 127.0.0.1:18501 --data "$TMP/n1" --log-level warn &
pids+=($!)
wait_http http://127.0.0.1:18501/health
curl -s -o /dev/null -X POST http://127.0.0.1:18501/kv -d '{"key":"bench-key","value":"'"$(printf 'v%.0s' $(seq 64))"'"}'
mkdir -p "$TMP/www" && chmod 755 "$TMP/www"
curl -s http://127.0.0.1:18501/kv/bench-key > "$TMP/www/bench-key"
chmod 644 "$TMP/www/bench-key"
printf '%s\n' "daemon off; worker_processes 1; pid $TMP/nginx.pid; error_log $TMP/nginx.err;" \
  "events { worker_connections 1024; }" \
  "http { access_log off; server { listen 127.0.0.1:18080; root $TMP/www; default_type application/json; } }" \
  > "$TMP/nginx.conf"
nginx -c "$TMP/nginx.conf" -p "$TMP" &
pids+=($!)
wait_http http://127.0.0.1:18080/bench-key
cmp -s <(curl -s http://127.0.0.1:18080/bench-key) "$TMP/www/bench-key" || { echo "nginx does not serve the file" >&2; exit 1; }
# and nginx with 2 workers: ringnet runs two threads (the loop, the HTTP server)
sed -e 's/worker_processes 1/worker_processes 2/' -e 's/18080/18081/' -e 's/nginx.pid/nginx2.pid/' \
  "$TMP/nginx.conf" > "$TMP/nginx2.conf"
nginx -c "$TMP/nginx2.conf" -p "$TMP" &
pids+=($!)
wait_http http://127.0.0.1:18081/bench-key
ng=$(wrkm http://127.0.0.1:18080/bench-key)
ng2=$(wrkm http://127.0.0.1:18081/bench-key)
one=$(wrkm http://127.0.0.1:18501/kv/bench-key)
size=$(stat -c %s "$TMP/www/bench-key")
row "GET, one node, $size-byte answer" $one $ng "nginx (1 worker), same file"
row "GET, one node, $size-byte answer" $one $ng2 "nginx (2 workers), same file"

# --- five nodes: keys spread over the ring -------------------------------------------
"$BIN" cluster --nodes 5 --base-http 18511 --base-peer 18611 --data "$TMP/c5" --log-level warn > /dev/null &
pids+=($!)
for i in 1 2 3 4 5; do wait_http http://127.0.0.1:$((18510 + i))/health; done
sleep 3
for i in $(seq 0 99); do curl -s -o /dev/null -X POST http://127.0.0.1:18511/kv -d "{\"key\":\"k$i\",\"value\":\"value-$i\"}"; done
fwd=$(curl -s http://127.0.0.1:18511/metrics | awk '/^ringnet_kv_forwarded_total /{f=$2} /^ringnet_kv_client_requests_total /{c=$2} END{printf "%.0f%%", 100*f/c}')
printf '%s\n' 'math.randomseed(7)' \
  'request = function() return wrk.format("GET", "/kv/k" .. math.random(0, 99)) end' > "$TMP/get.lua"
five=$(wrkm -s "$TMP/get.lua" http://127.0.0.1:18511)
row "GET, 5-node ring, 100 keys ($fwd forwarded)" $five $ng "nginx (1 worker), same file"

# --- three nodes and etcd -------------------------------------------------------------
"$BIN" cluster --nodes 3 --base-http 18521 --base-peer 18621 --data "$TMP/c3" --log-level warn > /dev/null &
pids+=($!)
members=e1=http://127.0.0.1:18381,e2=http://127.0.0.1:18382,e3=http://127.0.0.1:18383
for i in 1 2 3; do
  etcd --name e$i --data-dir "$TMP/e$i" --listen-client-urls http://127.0.0.1:1837$i \
    --advertise-client-urls http://127.0.0.1:1837$i --listen-peer-urls http://127.0.0.1:1838$i \
    --initial-advertise-peer-urls http://127.0.0.1:1838$i --initial-cluster $members \
    --initial-cluster-state new --log-level error > "$TMP/etcd$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do wait_http http://127.0.0.1:$((18520 + i))/health; done
for _ in $(seq 100); do curl -s -X POST http://127.0.0.1:18371/v3/kv/put -d '{"key":"eA==","value":"eA=="}' | grep -q header && break; sleep 0.2; done
sleep 2
python3 "$(dirname "$0")/kv_lua.py" "$TMP"
rput=$(wrkm -s "$TMP/rn_put.lua" http://127.0.0.1:18521)
eput=$(wrkm -s "$TMP/etcd_put.lua" http://127.0.0.1:18371)
row "put, 3-node ring vs 3-node etcd" $rput $eput "etcd 3.4 (Raft, fsync per write)"
rget=$(wrkm -s "$TMP/rn_get.lua" http://127.0.0.1:18521)
eget=$(wrkm -s "$TMP/etcd_get.lua" http://127.0.0.1:18371)
row "get, 3-node ring vs 3-node etcd" $rget $eget "etcd 3.4 (linearizable range)"
