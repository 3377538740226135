#!/usr/bin/env bash
# The replicated key-value core under churn (docs/experiments.md, "Durability under
# churn"): `ringnet sim --replicas 3` at rising crash-and-join rates, two detection
# delays, three seeds each. Writes docs/data/kv_churn.csv and docs/exp-kv-churn.png.
#   bash bench/kv_churn.sh [path/to/ringnet]      (NODES, KEYS, RUN_S override the size)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/ringnet}
NODES=${NODES:-1000} KEYS=${KEYS:-100000} RUN_S=${RUN_S:-120}
OUT=docs/data
mkdir -p "$OUT"
command -v gnuplot >/dev/null || { echo "kv_churn: gnuplot is missing (scripts/deps.sh installs it)" >&2; exit 1; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" "$@"; }
if [ "${PLOTS_ONLY:-0}" != 1 ]; then
  echo "detect churn seed crashes lost lost_explained under stale false404 unsure_reads repair_node_s data_over_forced" > $OUT/kv_churn.csv
  for detect in 1000-3000 5000-15000; do
    for churn in 0.5 1 2 4 8 16; do
      for seed in 1 2 3; do
        echo "$detect $churn $seed $($BIN sim --replicas 3 --nodes $NODES --keys $KEYS --run-s $RUN_S \
          --churn $churn --detect $detect --seed $seed --json | field crashes lost_writes lost_explained under_replicated \
          reads_stale reads_false_404 reads_unsure repair_bytes_per_node_sec repair_data_over_forced)" >> $OUT/kv_churn.csv
      done
    done
  done
fi
# medians over the seeds, per detection delay
python3 - "$OUT/kv_churn.csv" "$OUT" <<'PY'
import collections, statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
for detect in sorted({r[0] for r in rows}):
    by = collections.defaultdict(list)
    for r in rows:
        if r[0] == detect:
            by[float(r[1])].append(r)
    with open(f"{sys.argv[2]}/kv_churn_{detect}.dat", "w") as f:
        f.write("churn lost_sum repair_node_s data_over_forced\n")
        for c in sorted(by):
            g = by[c]
            f.write(f"{c} {sum(int(r[4]) for r in g)} {statistics.median(float(r[10]) for r in g)} "
                    f"{statistics.median(float(r[11]) for r in g)}\n")
PY
gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "docs/exp-kv-churn.png"
set multiplot layout 1,2 title "ringnet sim --replicas 3: ${NODES} nodes, ${KEYS} keys, ${RUN_S} s of churn (median of 3 seeds)"
set logscale x 2
set xlabel "crashes per second (and as many joins)"
set ylabel "records repaired / records churn forces"
set yrange [0:2.5]
set key top left
plot "$OUT/kv_churn_1000-3000.dat" using 1:4 with linespoints title "detection 1-3 s", \
     "$OUT/kv_churn_5000-15000.dat" using 1:4 with linespoints title "detection 5-15 s", \
     2 with lines dashtype 2 title "target: 2x"
set ylabel "repair bytes per node per second"
set yrange [0:*]
plot "$OUT/kv_churn_1000-3000.dat" using 1:3 with linespoints title "detection 1-3 s", \
     "$OUT/kv_churn_5000-15000.dat" using 1:3 with linespoints title "detection 5-15 s"
unset multiplot
GP
rm -f "$OUT"/kv_churn_*.dat
echo "kv_churn: $OUT/kv_churn.csv, docs/exp-kv-churn.png"
