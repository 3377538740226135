#!/usr/bin/env bash
# The key-value benchmark (issues #3, #9 and #15's judge): the node beside nginx and etcd in
# one run, loopback only; bench/kv_http.py says what each row measures. Needs
# `scripts/deps.sh --bench` (wrk, nginx-light, etcd-server). Every process it starts is
# stopped when it exits, also on Ctrl-C.
#   bash bench/kv_http.sh [path/to/ringnet]     RUNS=5 SECS=3 CONNS="1 16 64" ROWS=... QUICK=1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/kv_http.py" "${1:-$here/../build/ringnet}"
