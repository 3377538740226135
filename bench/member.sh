#!/usr/bin/env bash
# The membership experiments of docs/experiments.md section 6: `ringnet sim --member` at
# N = 100 .. 10,000 with 0% and 5% message loss (5 crashes each, 10 s warm-up, 40 s
# measured), a sweep of the suspicion timeout at 10,000 nodes, Lifeguard's dynamic
# suspicion at 10,000 nodes, CSV in docs/data/member.csv,
# docs/data/member_suspicion.csv and docs/data/member_lifeguard.csv, plot in
# docs/exp-member.png.
# About 25 minutes on one core; the 10,000-node runs take 2 GB of memory each.
#   bash bench/member.sh [path/to/ringnet]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/ringnet}
OUT=docs/data
mkdir -p "$OUT"
command -v gnuplot >/dev/null || { echo "member: gnuplot is missing (scripts/deps.sh installs it)" >&2; exit 1; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" "$@"; }
F="median_first_suspect_ms median_last_suspect_ms median_first_dead_ms median_last_dead_ms max_last_dead_ms crashes_known_everywhere false_dead_nodes false_deaths msgs_per_node_s bytes_per_node_s suspicion_timeout_ms"

if [ "${PLOTS_ONLY:-0}" != 1 ]; then
echo "loss nodes first_suspect last_suspect first_dead last_dead worst_dead known false_dead_nodes false_deaths msgs_per_node_s bytes_per_node_s suspicion_ms" > $OUT/member.csv
for loss in 0 0.05; do
  for n in 100 300 1000 3000 10000; do
    echo "$loss $n $($BIN sim --member -n $n --loss $loss --crash 5 --run-s 40 --warmup-s 10 --json | field $F)" >> $OUT/member.csv
  done
done
echo "suspicion_ms nodes first_suspect last_suspect first_dead last_dead worst_dead known false_dead_nodes false_deaths msgs_per_node_s bytes_per_node_s timeout_ms" > $OUT/member_suspicion.csv
for s in 500 750; do
  echo "$s 10000 $($BIN sim --member -n 10000 --loss 0.05 --crash 5 --run-s 40 --warmup-s 10 --suspicion-ms $s --json | field $F)" >> $OUT/member_suspicion.csv
done
echo "suspicion_ms lifeguard confirm seed nodes first_suspect last_suspect first_dead last_dead worst_dead known false_dead_nodes false_deaths msgs_per_node_s bytes_per_node_s timeout_ms" > $OUT/member_lifeguard.csv
# seed 1 for each setting; seeds 2 and 3 too for the default and the one that meets the target
for cfg in "1000 1 3 1 2 3" "500 1 3 1" "500 3 3 1" "500 4 2 1" "500 6 3 1" "400 4 2 1 2 3" "375 6 2 1"; do
  set -- $cfg
  for seed in "${@:4}"; do
    echo "$1 $2 $3 $seed 10000 $($BIN sim --member -n 10000 --loss 0.05 --crash 5 --run-s 40 --warmup-s 10 --suspicion-ms $1 --lifeguard $2 --confirm $3 --seed $seed --json | field $F)" >> $OUT/member_lifeguard.csv
  done
done
fi

gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "docs/exp-member.png"
set multiplot layout 1,2
set logscale x
set xlabel "nodes"
set key top left
set ylabel "seconds from the crash (median of 5 crashes)"
set title "Crash detection, 5% loss"
plot "< awk '\$1==0.05' $OUT/member.csv" using 2:(\$3/1000) with linespoints title "first suspects", \
     "" using 2:(\$4/1000) with linespoints title "last suspects", \
     "" using 2:(\$5/1000) with linespoints title "first declares dead", \
     "" using 2:(\$6/1000) with linespoints title "last declares dead", \
     5 with lines dashtype 2 title "target: 5 s"
set title "Messages sent per node per second"
set ylabel "messages / node / s"
set yrange [0:*]
plot "< awk '\$1==0' $OUT/member.csv" using 2:11 with linespoints title "no loss", \
     "< awk '\$1==0.05' $OUT/member.csv" using 2:11 with linespoints title "5% loss"
unset multiplot
GP
echo "member: $OUT/member.csv, $OUT/member_suspicion.csv, $OUT/member_lifeguard.csv, docs/exp-member.png"
