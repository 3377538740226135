#!/usr/bin/env bash
# GET /kv/<key> on one node against nginx (one worker) serving the same bytes as a static
# file, and optionally against an older ringnet build, side by side in one run (issue #15,
# "one thread"). Per server: requests/s and p99 at each connection count (medians of RUNS
# alternating wrk rounds of SECS s), then system calls per GET (strace -c on every thread
# during a wrk run) and context switches per GET (/proc/PID/task/*/status deltas during an
# untraced run). Loopback only; every process it starts is stopped on exit.
#   bash bench/http_loop.sh path/to/ringnet [path/to/older/ringnet]
# Needs wrk, nginx (scripts/deps.sh --bench) and strace.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx_static.sh
NEW=$(realpath "${1:?usage: http_loop.sh RINGNET [OLDER_RINGNET]}")
OLD=${2:+$(realpath "$2")}
RUNS=${RUNS:-5} SECS=${SECS:-3} CONNS_LIST=${CONNS_LIST:-"16 64"}
for t in wrk nginx strace curl; do
  command -v $t >/dev/null || { echo "http_loop: $t missing" >&2; exit 1; }
done
TMP=$(mktemp -d)
chmod 755 "$TMP"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# servers: name, pid, url
names=() spids=() urls=()
start_node() { # name binary
  local hp pp pid
  hp=$(port) pp=$(port)
  "$2" node --id "bench-$1" --listen 127.0.0.1:$pp --http 127.0.0.1:$hp --data "$TMP/$1" --log-level warn &
  pid=$!
  pids+=($pid)
  wait_http "http://127.0.0.1:$hp/health"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$hp/kv" -d '{"key":"bench-key","value":"'"$(printf 'v%.0s' $(seq 64))"'"}'
  names+=("$1") spids+=("$pid") urls+=("http://127.0.0.1:$hp/kv/bench-key")
}
start_node ringnet "$NEW"
[ -n "$OLD" ] && start_node before "$OLD"
mkdir -p "$TMP/www" && chmod 755 "$TMP/www"
curl -s "${urls[0]}" > "$TMP/www/bench-key"
chmod 644 "$TMP/www/bench-key"
np=$(port)
pids+=("$(nginx_static "$TMP" "$np")")
wait_http "http://127.0.0.1:$np/bench-key"
cmp -s <(curl -s "http://127.0.0.1:$np/bench-key") "$TMP/www/bench-key" || { echo "nginx does not serve the file" >&2; exit 1; }
nginx_worker=$(pgrep -P "$(cat "$TMP/nginx.pid")" | head -1)
names+=(nginx) spids+=("$nginx_worker") urls+=("http://127.0.0.1:$np/bench-key")

# wrk once: "requests_per_sec p99_ms requests"
wrk1() { # conns secs url
  wrk -t1 -c"$1" -d"$2s" --latency "$3" | python3 -c '
import re, sys
t = sys.stdin.read()
if re.search(r"Non-2xx or 3xx responses: (\d+)", t):
    sys.exit("wrk: non-2xx answers: not a valid measurement")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
print(rps, p99, re.search(r"(\d+) requests in", t).group(1))'
}
csw() { # pid: voluntary + involuntary switches of all its threads
  cat /proc/"$1"/task/*/status | awk '/ctxt_switches/{s+=$2} END{print s}'
}

echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB;" \
  "wrk -t1 -d${SECS}s, median of $RUNS alternating rounds"
echo
for c in $CONNS_LIST; do
  declare -A rps=() p99=()
  for _ in $(seq "$RUNS"); do
    for i in "${!names[@]}"; do
      read -r r p _ < <(wrk1 "$c" "$SECS" "${urls[$i]}")
      rps[$i]+="$r " p99[$i]+="$p "
    done
  done
  echo "### $c connections"
  echo
  echo "| server | req/s | p99 ms | req/s / nginx |"
  echo "|---|---|---|---|"
  ng=${#names[@]}
  ng=$((ng - 1))
  ngr=$(python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' ${rps[$ng]})
  for i in "${!names[@]}"; do
    python3 - "${names[$i]}" "$ngr" "${rps[$i]}" "${p99[$i]}" <<'PY'
import statistics, sys
name, ng, r, p = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
mr, mp = statistics.median(map(float, r)), statistics.median(map(float, p))
print(f"| {name} | {mr:,.0f} | {mp:.2f} | {mr / ng:.2f} |")
PY
  done
  echo
  unset rps p99
done

echo "### per GET, 16 connections"
echo
echo "| server | system calls | context switches |"
echo "|---|---|---|"
for i in "${!names[@]}"; do
  pid=${spids[$i]}
  a=$(csw "$pid")
  read -r _ _ n < <(wrk1 16 "$SECS" "${urls[$i]}")
  b=$(csw "$pid")
  tids=$(ls /proc/"$pid"/task | sed 's/^/-p /' | xargs)
  # shellcheck disable=SC2086
  strace -c -f $tids -o "$TMP/strace.$i" 2>/dev/null &
  st=$!
  sleep 0.5
  read -r _ _ ns < <(wrk1 16 "$SECS" "${urls[$i]}")
  kill -INT $st
  wait $st 2>/dev/null || true
  calls=$(awk '/^[ -]+$/{n++} n==1 && NF>=5 && $1 ~ /^[0-9.]+$/ {s+=$4} END{print s}' "$TMP/strace.$i")
  python3 -c 'import sys; n,c,ns,s=map(float,sys.argv[2:]); print(f"| {sys.argv[1]} | {s/ns:.2f} | {c/n:.2f} |")' \
    "${names[$i]}" "$n" "$((b - a))" "$ns" "$calls"
done

# Instructions per GET (IR=1; valgrind's callgrind, so independent of the machine's load):
# each server runs under callgrind, and the difference between the instructions counted
# over 3000 and over 1000 keep-alive GETs (one connection) is divided by 2000.
[ "${IR:-0}" = 1 ] || exit 0
command -v valgrind >/dev/null || { echo "http_loop: valgrind missing" >&2; exit 1; }
gets() { # port path count: keep-alive GETs on one connection
  python3 - "$@" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
for _ in range(int(sys.argv[3])):
    c.request("GET", sys.argv[2])
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
}
ir_of() { # kind binary count: total instructions of the server's run
  local out="$TMP/cg.$1.$3" hp pid
  hp=$(port)
  rm -rf "$TMP/ir-data"
  if [ "$1" = nginx ]; then
    # one process (master_process off: the worker's own request path, and one profile)
    sed -e "s/listen 127.0.0.1:$np/listen 127.0.0.1:$hp/" -e "s|nginx.pid|nginx-ir.pid|" \
      -e "s/daemon off;/daemon off; master_process off;/" "$TMP/nginx.conf" > "$TMP/nginx-ir.conf"
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
      nginx -c "$TMP/nginx-ir.conf" -p "$TMP" 2>/dev/null &
    pid=$!
    path=/bench-key
  else
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$2" node --id ir --listen 127.0.0.1:$(port) \
      --http 127.0.0.1:$hp --data "$TMP/ir-data" --log-level warn 2>/dev/null &
    pid=$!
    for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$hp/health" && break; sleep 0.2; done
    curl -s -o /dev/null -X POST "http://127.0.0.1:$hp/kv" -d '{"key":"bench-key","value":"'"$(printf 'v%.0s' $(seq 64))"'"}'
    path=/kv/bench-key
  fi
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$hp$path" && break; sleep 0.2; done
  gets "$hp" "$path" "$3"
  if [ "$1" = nginx ]; then kill -TERM "$(cat "$TMP/nginx-ir.pid")"; else kill -INT "$pid"; fi
  wait "$pid" 2>/dev/null || true
  cat "$out".* | awk '/^summary:/{s+=$2} END{print s}'
  rm -f "$out".*
}
echo
echo "### instructions per GET (callgrind, one keep-alive connection)"
echo
echo "| server | instructions | / nginx |"
echo "|---|---|---|"
ng_ir=$(( ($(ir_of nginx - 3000) - $(ir_of nginx - 1000)) / 2000 ))
for i in "${!names[@]}"; do
  [ "${names[$i]}" = nginx ] && continue
  bin=$NEW
  [ "${names[$i]}" = before ] && bin=$OLD
  v=$(( ($(ir_of node "$bin" 3000) - $(ir_of node "$bin" 1000)) / 2000 ))
  python3 -c 'import sys; print(f"| {sys.argv[1]} | {int(sys.argv[2]):,} | {int(sys.argv[2])/int(sys.argv[3]):.2f} |")' "${names[$i]}" "$v" "$ng_ir"
done
python3 -c 'import sys; print(f"| nginx | {int(sys.argv[1]):,} | 1.00 |")' "$ng_ir"
