#!/usr/bin/env bash
# File benchmark (issue #11), each ringnet figure beside its reference in the same run,
# medians of RUNS runs:
#   1. download of a SIZE file from a 5-node ring (R = 3) through one node
#      vs nginx serving the same file from disk
#   2. upload of it through one node vs nginx's WebDAV PUT of the same bytes, and vs cp
#      to the same disk (followed by sync)
#   3. the nodes' peak RSS during each, against their RSS before, and for a download of a
#      file 16 times smaller (memory must not grow with the file's size)
#   4. CPU seconds per GiB downloaded: the entry node, the other four, nginx's worker, and
#      curl (the client shares the machine with both)
#   5. the first download of another file through that node (it checks with SHA-256 the
#      chunks it has not checked before, instead of by their tag: src/files/seen.h)
# Needs: scripts/deps.sh --bench (nginx-light, curl). Loopback only.
#   bash bench/files_http.sh [path/to/ringnet]      (SIZE=1G RUNS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-build/ringnet}")
RUNS=${RUNS:-3}
SIZE=${SIZE:-1G}
for t in nginx curl; do command -v $t >/dev/null || { echo "files_http: $t missing: run scripts/deps.sh --bench" >&2; exit 1; }; done
TMP=$(mktemp -d /tmp/rnf-bench-XXXXXX)
chmod 755 "$TMP"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# --- 5 nodes ---------------------------------------------------------------------------
HB=18901 PB=18951
for i in 1 2 3 4 5; do
  join=(); [ $i -gt 1 ] && join=(--join 127.0.0.1:$PB)
  "$BIN" node --id fb-$i --listen 127.0.0.1:$((PB + i - 1)) --http 127.0.0.1:$((HB + i - 1)) \
    --data "$TMP/n$i" --max-file 16G --log-level warn "${join[@]}" &
  pids+=($!)
  wait_http http://127.0.0.1:$((HB + i - 1))/health
done
node_pids=("${pids[@]}")
for i in 1 2 3 4 5; do
  until curl -s http://127.0.0.1:$((HB + i - 1))/health | grep -q '"joined":true'; do sleep 0.2; done
done
sleep 8 # the ring settles (stabilize every 1 s; the owners' 5 s settle time)

# --- nginx: GET from disk, PUT (WebDAV) to disk -------------------------------------------
mkdir -p "$TMP/www/up" "$TMP/body" && chmod -R 777 "$TMP/www" "$TMP/body"
printf '%s\n' "daemon off; worker_processes 1; pid $TMP/nginx.pid; error_log $TMP/nginx.err;" \
  "events { worker_connections 1024; }" \
  "http { access_log off; client_body_temp_path $TMP/body; client_max_body_size 0;" \
  "  server { listen 127.0.0.1:18980; root $TMP/www;" \
  "    location /up/ { dav_methods PUT; create_full_put_path on; } } }" > "$TMP/nginx.conf"
nginx -c "$TMP/nginx.conf" -p "$TMP" &
pids+=($!)
wait_http http://127.0.0.1:18980/
ngx_worker=$(pgrep -P "${pids[-1]}" | head -1)

head -c "$SIZE" /dev/urandom > "$TMP/www/big.bin"
head -c "$(($(stat -c %s "$TMP/www/big.bin") / 16))" "$TMP/www/big.bin" > "$TMP/www/small.bin"
chmod 644 "$TMP/www/"*.bin
BYTES=$(stat -c %s "$TMP/www/big.bin")
SUM=$(sha256sum "$TMP/www/big.bin" | cut -d' ' -f1)

# peak anonymous RSS (KiB: the heap, not LMDB's mapped file) of the nodes while a command runs: prints "max_over_nodes sum_of_peaks"
rss() { awk '/RssAnon/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
with_rss() {
  local out=$TMP/rss.$$ ; : > "$out"
  ( while :; do l=""; for p in "${node_pids[@]}"; do l+="$(rss "$p") "; done; echo "$l" >> "$out"; sleep 0.1; done ) &
  local sampler=$!
  "$@"
  kill $sampler; wait $sampler 2>/dev/null || true
  python3 - "$out" <<'PY'
import sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
peaks = [max(c) for c in zip(*rows)]
print(max(peaks), sum(peaks))
PY
}
base_rss() { local m=0; for p in "${node_pids[@]}"; do r=$(rss "$p"); [ "$r" -gt "$m" ] && m=$r; done; echo $m; }
# CPU ticks (user + system) of a process so far
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# "wall_seconds client_cpu_seconds" of a command
secs_cpu() { python3 -c 'import sys,time,resource,subprocess; t=time.time(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); u=resource.getrusage(resource.RUSAGE_CHILDREN); print(time.time()-t, u.ru_utime+u.ru_stime)' "$@"; }
secs() { python3 -c 'import sys,time; t=time.time(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(time.time()-t)' "$@"; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
mbs() { python3 -c "import sys; print(f'{$BYTES/float(sys.argv[1])/1048576:,.0f}')" "$1"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(lsb_release -ds 2>/dev/null || uname -sr); file $SIZE ($BYTES bytes), median of $RUNS"
echo

# --- upload ------------------------------------------------------------------------------
before=$(base_rss)
up=(); upng=(); upcp=(); uprss=""
for r in $(seq "$RUNS"); do
  up+=("$(secs curl -sf -T "$TMP/www/big.bin" http://127.0.0.1:$HB/files/big.bin)")
  upng+=("$(secs curl -sf -T "$TMP/www/big.bin" http://127.0.0.1:18980/up/big.bin)")
  upcp+=("$(secs sh -c "cp '$TMP/www/big.bin' '$TMP/cp.bin' && sync")")
  rm -f "$TMP/www/up/big.bin" "$TMP/cp.bin"
done
uprss=$(with_rss curl -sf -o /dev/null -T "$TMP/www/big.bin" http://127.0.0.1:$HB/files/big.bin)
curl -s http://127.0.0.1:$HB/files | grep -q "$SUM" || { echo "the upload's sha256 is not the file's" >&2; exit 1; }

# --- download ----------------------------------------------------------------------------
curl -sf -T "$TMP/www/small.bin" http://127.0.0.1:$HB/files/small.bin -o /dev/null
got=$(curl -sf http://127.0.0.1:$((HB + 2))/download/big.bin | sha256sum | cut -d' ' -f1)
[ "$got" = "$SUM" ] || { echo "the download is not the file" >&2; exit 1; }
dl=(); dlng=(); c_entry=0; c_rest=0; c_ngx=0; c_curl=0; c_curlng=0
for r in $(seq "$RUNS"); do
  e0=$(ticks "${node_pids[2]}"); o0=0; for i in 0 1 3 4; do o0=$((o0 + $(ticks "${node_pids[$i]}"))); done
  read -r w c < <(secs_cpu curl -sf -o /dev/null http://127.0.0.1:$((HB + 2))/download/big.bin)
  dl+=("$w"); c_curl=$(python3 -c "print($c_curl + $c)")
  o1=0; for i in 0 1 3 4; do o1=$((o1 + $(ticks "${node_pids[$i]}"))); done
  c_entry=$((c_entry + $(ticks "${node_pids[2]}") - e0)); c_rest=$((c_rest + o1 - o0))
  g0=$(ticks "$ngx_worker")
  read -r w c < <(secs_cpu curl -sf -o /dev/null http://127.0.0.1:18980/big.bin)
  dlng+=("$w"); c_curlng=$(python3 -c "print($c_curlng + $c)")
  c_ngx=$((c_ngx + $(ticks "$ngx_worker") - g0))
done
per_gib() { python3 -c "import sys,os; print(f'{float(sys.argv[1]) / $RUNS / ($BYTES / 2**30):.2f}')" "$1"; }
hz=$(getconf CLK_TCK)
dlrss=$(with_rss curl -sf -o /dev/null http://127.0.0.1:$((HB + 2))/download/big.bin)
smrss=$(with_rss curl -sf -o /dev/null http://127.0.0.1:$((HB + 2))/download/small.bin)

# --- a cold read: a file this node has never read ---------------------------------------
# (src/files/seen.h: a node checks a chunk by its tag only once it has checked those
# contents with SHA-256; the runs above read through node 3, which the check download
# warmed). A second file, uploaded through node 1 as the first was, read once through node
# 3: its chunks are known there only if its scrub checked them meanwhile (the metrics say)
head -c "$BYTES" /dev/urandom > "$TMP/cold.bin"
curl -sf -T "$TMP/cold.bin" http://127.0.0.1:$HB/files/cold.bin -o /dev/null
sleep 1
checks() { curl -s http://127.0.0.1:$((HB + 2))/metrics | awk '/^ringnet_files_checks_total/{split($1, a, "\""); printf "%s %s ", a[2], $2}'; }
m0=$(checks)
c0=$(ticks "${node_pids[2]}")
read -r cold _ < <(secs_cpu curl -sf -o /dev/null http://127.0.0.1:$((HB + 2))/download/cold.bin)
c_cold=$(($(ticks "${node_pids[2]}") - c0))
read -r coldng _ < <(secs_cpu curl -sf -o /dev/null http://127.0.0.1:18980/big.bin) # beside it
sleep 0.3
m1=$(checks)
rm -f "$TMP/cold.bin"

m_up=$(median "${up[@]}") m_upng=$(median "${upng[@]}") m_upcp=$(median "${upcp[@]}")
m_dl=$(median "${dl[@]}") m_dlng=$(median "${dlng[@]}")
ratio() { python3 -c "import sys; print(f'{float(sys.argv[2])/float(sys.argv[1]):.2f}')" "$1" "$2"; }
echo "| run | ringnet | reference | ratio (ringnet / reference throughput) |"
echo "|---|---|---|---|"
echo "| download $SIZE through 1 of 5 nodes | $(mbs "$m_dl") MiB/s ($m_dl s) | nginx GET from disk: $(mbs "$m_dlng") MiB/s | $(ratio "$m_dl" "$m_dlng") |"
echo "| the same, another file's first read through that node (SHA-256 of the chunks it has not checked) | $(mbs "$cold") MiB/s ($cold s) | nginx GET right after it: $(mbs "$coldng") MiB/s | $(ratio "$cold" "$coldng") |"
echo "| upload $SIZE through 1 of 5 nodes (R = 3, W = 2) | $(mbs "$m_up") MiB/s ($m_up s) | nginx WebDAV PUT: $(mbs "$m_upng") MiB/s | $(ratio "$m_up" "$m_upng") |"
echo "| upload $SIZE through 1 of 5 nodes | $(mbs "$m_up") MiB/s | cp + sync to the same disk: $(mbs "$m_upcp") MiB/s | $(ratio "$m_up" "$m_upcp") |"
echo
echo "node anonymous RSS (KiB; LMDB's mapped file pages left out): before $before (largest node); peak of the largest node during an upload $(echo "$uprss" | cut -d' ' -f1)," \
  "a download of $SIZE $(echo "$dlrss" | cut -d' ' -f1), a download of 1/16 of it $(echo "$smrss" | cut -d' ' -f1)"
echo "CPU seconds per GiB downloaded (mean of $RUNS): ringnet entry node $(per_gib "$(python3 -c "print($c_entry / $hz)")"), the other four nodes $(per_gib "$(python3 -c "print($c_rest / $hz)")"), curl $(per_gib "$c_curl");" \
  "nginx worker $(per_gib "$(python3 -c "print($c_ngx / $hz)")"), curl $(per_gib "$c_curlng")"
echo "the first read: entry node CPU $(python3 -c "print(f'{$c_cold / $hz / ($BYTES / 2**30):.2f}')") s per GiB; its chunk checks (by tag, by sha256) before: $m0; after: $m1"
echo "load: $(uptime)"
echo "limit hits: $(for i in 1 2 3 4 5; do curl -s http://127.0.0.1:$((HB + i - 1))/metrics | awk '/^ringnet_limit_hits_total/ && $2 > 0 {printf "%s=%s ", $1, $2}'; done)"
