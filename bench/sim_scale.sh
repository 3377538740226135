#!/usr/bin/env bash
# Scale benchmark of `ringnet sim` (issue #2). Each figure is the median of RUNS runs.
# References beside it: the issue's targets (20 s wall and 1.5 GB for a million nodes
# with 10 lookups each; 60 s for 100k nodes to converge by joining), the Chord paper's
# 1/2 log2 N path length, and the F#/Akka.NET simulator's published 212 s for
# 1,010 nodes x 100 lookups (quoted: no .NET runtime is installable here to rerun it).
#   bash bench/sim_scale.sh [path/to/ringnet]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/ringnet}
RUNS=${RUNS:-3}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run() { # args -> "wall_total_s rss_mb avg_hops converge_s"
  /usr/bin/time -f '%e %M' -o /tmp/rn_time.$$ "$BIN" sim "$@" --json > /tmp/rn_out.$$
  read -r wall rss < /tmp/rn_time.$$
  python3 - "$wall" "$rss" /tmp/rn_out.$$ <<'PY'
import json, sys
d = json.load(open(sys.argv[3]))
print(sys.argv[1], int(sys.argv[2]) // 1024, d["avg_hops"], d.get("converge_virtual_ms", 0) / 1000)
PY
}
col() { awk -v c="$1" '{print $c}'; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
echo

for spec in "1000000 10 static" "100000 1 join" "1010 100 static"; do
  set -- $spec
  rows=()
  for i in $(seq "$RUNS"); do rows+=("$(run --nodes "$1" --requests "$2" --bootstrap "$3" --seed "$i")"); done
  wall=$(printf '%s\n' "${rows[@]}" | col 1 | median)
  rss=$(printf '%s\n' "${rows[@]}" | col 2 | median)
  hops=$(printf '%s\n' "${rows[@]}" | col 3 | median)
  conv=$(printf '%s\n' "${rows[@]}" | col 4 | median)
  half=$(python3 -c "import math; print(round(math.log2($1)/2, 2))")
  case "$1 $3" in
    "1000000 static") ref="target 20 s, 1536 MB"; ratio=$(python3 -c "print(f'{$wall/20:.2f}x the time target, {$rss/1536:.2f}x the memory target')");;
    "100000 join") ref="target 60 s"; ratio=$(python3 -c "print(f'{$wall/60:.2f}x the time target; ring correct after {$conv} s virtual')");;
    *) ref="F#/Akka.NET: 212 s, 5.73 hops (quoted)"; ratio=$(python3 -c "print(f'{212/$wall:.0f}x faster than the quoted figure')");;
  esac
  echo "| $1 nodes x $2, $3 | $wall s | $rss MB | $hops (1/2 log2 N = $half) | $ref | $ratio |"
done
rm -f /tmp/rn_time.$$ /tmp/rn_out.$$
