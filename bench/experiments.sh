#!/usr/bin/env bash
# Regenerates every simulator experiment of docs/experiments.md: CSV files in docs/data/
# and plots in docs/*.png. Runs `ringnet sim` only; about 4 minutes on 2 cores.
#   bash bench/experiments.sh [path/to/ringnet]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/ringnet}
OUT=docs/data
mkdir -p "$OUT"
command -v gnuplot >/dev/null || { echo "experiments: gnuplot is missing (scripts/deps.sh installs it)" >&2; exit 1; }

# PLOTS_ONLY=1 redraws the plots from the CSV files already there
if [ "${PLOTS_ONLY:-0}" != 1 ]; then
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" "$@"; }

# 1. Path length against N (paper: mean about 1/2 log2 N, figure 10)
echo "log2n nodes mean p1 p99 half_log2n" > $OUT/pathlen.csv
for k in $(seq 3 20); do
  n=$((1 << k))
  req=$(( 2000000 / n )); [ $req -lt 4 ] && req=4; [ $req -gt 1000 ] && req=1000
  read -r mean p1 p99 < <($BIN sim --nodes $n --requests $req --seed $k --json | field avg_hops p1_hops p99_hops)
  echo "$k $n $mean $p1 $p99 $(python3 -c "print($k/2)")" >> $OUT/pathlen.csv
done

# 2. Keys per node, 10^4 nodes (paper figures 8 and 9)
echo "keys mean p1 p99 max" > $OUT/load_keys.csv
for k in 100000 200000 300000 400000 500000 600000 700000 800000 900000 1000000; do
  echo "$k $($BIN sim --nodes 10000 --requests 0 --keys $k --seed 3 --json | field keys_per_node_mean keys_per_node_p1 keys_per_node_p99 keys_per_node_max)" >> $OUT/load_keys.csv
done
echo "vnodes mean p1 p99 max" > $OUT/load_vnodes.csv
for v in 1 2 5 10 20; do
  echo "$v $($BIN sim --nodes 10000 --requests 0 --keys 1000000 --vnodes $v --seed 3 --json | field keys_per_node_mean keys_per_node_p1 keys_per_node_p99 keys_per_node_max)" >> $OUT/load_vnodes.csv
done

# 3. Lookups after a fraction p of 10^4 nodes fail at once (paper figure 11)
echo "p failed_fraction avg_hops timeouts_per_lookup" > $OUT/fail.csv
for p in 0.05 0.1 0.15 0.2 0.25 0.3 0.35 0.4 0.45 0.5; do
  read -r ff hops to lk < <($BIN sim --nodes 10000 --requests 10 --fail $p --seed 5 --json | field failed_fraction avg_hops timeouts lookups)
  echo "$p $ff $hops $(python3 -c "print(round($to/$lk, 4))")" >> $OUT/fail.csv
done

# 4. Lookups under churn: R joins and R failures per second. Not successful = answered
# wrong or not within 30 s, over the lookups that could be judged (not those whose origin
# crashed first); by the paper's rule also those forwarded to a dead node on the way
# (its simulator does not retry them). churn_row prints: failed timed_out not_successful
# avg_hops min_rounds not_successful_paper_rule isolated_nodes
churn_row() {
  $BIN sim "$@" --json | python3 -c "
import json, sys
d = json.load(sys.stdin)
judged = d['lookups'] - d['lookups_abandoned'] - d['lookups_unfinished']
bad = d['failed_lookups'] + d['lookup_timeouts']
print(round(d['failed_lookups'] / judged, 6), round(d['lookup_timeouts'] / judged, 6),
      round(bad / judged, 6), d['avg_hops'], d['stabilize_rounds_min'],
      round((bad + d['lookups_rerouted']) / judged, 6), d['isolated_nodes'])"
}
# 4a. 1000 nodes stabilizing every second
echo "rate failed timed_out not_successful avg_hops min_rounds paper_rule isolated" > $OUT/churn.csv
for r in 0.5 1 2 4 8 16 32; do
  echo "$r $(churn_row --nodes 1000 --requests 60 --churn $r --seed 7)" >> $OUT/churn.csv
done
# 4b. The paper's setting (section 6.5): 500 nodes, stabilization every 30 s, R from 0.01
# to 0.1 per second, two virtual hours a run; mean of three seeds, and their range
echo "rate not_successful min max failed timed_out avg_hops paper_rule paper_rule_min paper_rule_max" > $OUT/churn_paper.csv
for r in 0.01 0.02 0.03 0.04 0.05 0.06 0.07 0.08 0.09 0.1; do
  rows=$(for seed in 1 2 3; do churn_row --nodes 500 --requests 7200 --stabilize-ms 30000 --churn $r --seed $seed; done)
  echo "$r $(echo "$rows" | python3 -c "
import sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
col = lambda i: [r[i] for r in rows]
mean = lambda v: round(sum(v) / len(v), 6)
print(mean(col(2)), min(col(2)), max(col(2)), mean(col(0)), mean(col(1)), mean(col(3)),
      mean(col(5)), min(col(5)), max(col(5)))")" >> $OUT/churn_paper.csv
done

fi

gnuplot <<GP
set terminal pngcairo size 800,500 font "sans,11"
set grid
set key top left

set output "docs/exp-pathlen.png"
set title "Lookup path length against ring size (scalable lookup, 160-bit ids)"
set xrange [2:21]
set xlabel "log2 N"
set ylabel "hops"
plot "$OUT/pathlen.csv" skip 1 using 1:3:4:5 with yerrorbars title "ringnet sim: mean, 1st-99th pct", \
     "" skip 1 using 1:6 with lines lw 2 title "1/2 log2 N (the paper's fit)"

set autoscale x
set output "docs/exp-load.png"
set title "Keys per node, 10^4 nodes, one id each"
set xlabel "keys (thousands)"
set ylabel "keys per node"
plot "$OUT/load_keys.csv" skip 1 using (\$1/1000):2:3:4 with yerrorbars title "mean, 1st-99th pct", \
     "" skip 1 using (\$1/1000):5 with points pt 6 title "max"

set output "docs/exp-vnodes.png"
set title "Keys per node with virtual nodes, 10^4 nodes, 10^6 keys"
set xlabel "virtual nodes per node"
set ylabel "keys per node"
set logscale x
set xrange [0.8:30]
plot "$OUT/load_vnodes.csv" skip 1 using 1:2:3:4 with yerrorbars title "mean, 1st-99th pct", \
     "" skip 1 using 1:5 with linespoints title "max"
unset logscale x
set autoscale x

set output "docs/exp-fail.png"
set title "Lookups after a fraction p of 10^4 nodes fail at once (no repair)"
set xlabel "fraction of nodes failed"
set ylabel "fraction of lookups failed"
plot "$OUT/fail.csv" skip 1 using 1:2 with linespoints lw 2 title "ringnet sim", \
     x with lines dt 2 title "p (keys whose holder died)"

set output "docs/exp-churn.png"
set title "Lookups under churn, 1000 nodes, stabilize every 1 s"
set xlabel "joins and failures per second (each)"
set ylabel "fraction of lookups not successful"
set logscale x
set xrange [0.4:40]
plot "$OUT/churn.csv" skip 1 using 1:4 with linespoints lw 2 title "ringnet sim: wrong or timed out", \
     "" skip 1 using 1:7 with linespoints lw 2 title "ringnet sim, the paper's rule: also failed when it meets a dead node"
unset logscale x
set autoscale x

set output "docs/exp-churn-paper.png"
set title "Lookups under churn as in the Chord paper: 500 nodes, stabilize every 30 s"
set xlabel "node joins and failures per second (each)"
set ylabel "fraction of lookups not successful"
set xrange [0:0.105]
set yrange [0:*]
set key top left Left reverse
plot "$OUT/churn_paper.csv" skip 1 using 1:2:3:4 with yerrorlines lw 2 title "ringnet sim: wrong or timed out (mean, range of 3 seeds)", \
     "" skip 1 using 1:8:9:10 with yerrorlines lw 2 title "ringnet sim, the paper's rule: also failed when it meets a dead node", \
     (x * 30 * 5 / 500) with lines dt 2 title "the paper's estimate (sec. 6.5): 5-hop paths, R x 30 s failures, 500 nodes"
GP
echo "experiments: wrote $OUT/*.csv and docs/exp-*.png"
