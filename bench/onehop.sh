#!/usr/bin/env bash
# One-hop routing against plain Chord routing in `ringnet sim --replicas` (docs/experiments.md
# section 7): 1,000 nodes, R = 3, W = 2, 20,000 keys, 60 s of churn at 1..16 crashes and
# as many joins per second, 500 client operations a second, the same seed for both;
# on the modelled ring and on the real Chord ring (--ring real). CSV in
# docs/data/onehop.csv, plot in docs/exp-onehop.png (gnuplot, when installed); then six
# seeds of a smaller real-ring run, docs/data/onehop_seeds.csv.
# About 15 minutes of one core.
#   bash bench/onehop.sh [path/to/ringnet]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build-rel/ringnet}
OUT=docs/data
mkdir -p "$OUT"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" "$@"; }
F="hops_per_request stale_rate route_onehop route_successors route_lookup route_local client_ops moved route_hints entry_lookups lookup_hops lost_writes lost_explained reads_stale reads_false_404 reads_unsure writes_acked writes_unknown crashes joins messages"

if [ "${PLOTS_ONLY:-0}" != 1 ]; then
echo "ring churn routing hops stale_rate onehop successors lookup local client_ops moved hints lookups lookup_msgs lost lost_explained stale_reads false_404 unsure acked unknown crashes joins messages" > $OUT/onehop.csv
for ring in model real; do
  for churn in 1 2 4 8 16; do
    for oh in off on; do
      echo "$ring $churn $oh $($BIN sim --replicas 3 --nodes 1000 --keys 20000 --run-s 60 --ops 500 \
        --churn $churn --ring $ring --one-hop $oh --json | field $F)" >> $OUT/onehop.csv
    done
  done
done
# the real ring's safety counters are noisy at heavy churn: six seeds at 200 nodes, 4
# crashes and 4 joins a second (2% of the nodes a second), both routings
echo "seed routing hops lost lost_explained stale_reads false_404 unsure" > $OUT/onehop_seeds.csv
for seed in 1 2 3 4 5 6; do
  for oh in off on; do
    echo "$seed $oh $($BIN sim --replicas 3 --nodes 200 --keys 3000 --run-s 30 --ops 300 --churn 4 \
      --ring real --seed $seed --one-hop $oh --json | field hops_per_request lost_writes lost_explained reads_stale reads_false_404 reads_unsure)" >> $OUT/onehop_seeds.csv
  done
done
fi

command -v gnuplot >/dev/null || { echo "onehop: gnuplot is missing: CSV only" >&2; exit 0; }
gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "docs/exp-onehop.png"
set multiplot layout 1,2
set logscale x 2
set xlabel "crashes per second (and as many joins), 1,000 nodes"
set key center right
set ylabel "messages in sequence, entry to coordinator"
set title "Hops per client request"
set yrange [0:*]
plot "< awk '\$1==\"model\" && \$3==\"off\"' $OUT/onehop.csv" using 2:4 with linespoints title "Chord (modelled ring)", \
     "< awk '\$1==\"real\" && \$3==\"off\"' $OUT/onehop.csv" using 2:4 with linespoints title "Chord (real ring)", \
     "< awk '\$1==\"model\" && \$3==\"on\"' $OUT/onehop.csv" using 2:4 with linespoints title "one hop (modelled ring)", \
     "< awk '\$1==\"real\" && \$3==\"on\"' $OUT/onehop.csv" using 2:4 with linespoints title "one hop (real ring)"
set key top left
set ylabel "% first sent to a node not responsible or down"
set title "Stale first sends"
plot "< awk '\$1==\"model\" && \$3==\"off\"' $OUT/onehop.csv" using 2:(\$5*100) with linespoints title "Chord (modelled ring)", \
     "< awk '\$1==\"real\" && \$3==\"off\"' $OUT/onehop.csv" using 2:(\$5*100) with linespoints title "Chord (real ring)", \
     "< awk '\$1==\"model\" && \$3==\"on\"' $OUT/onehop.csv" using 2:(\$5*100) with linespoints title "one hop (modelled ring)", \
     "< awk '\$1==\"real\" && \$3==\"on\"' $OUT/onehop.csv" using 2:(\$5*100) with linespoints title "one hop (real ring)"
unset multiplot
GP
