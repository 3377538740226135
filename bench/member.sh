#!/usr/bin/env bash
# The membership experiments of docs/experiments.md section 6: `ringnet sim --member` at
# N = 100 .. 10,000 with 0% and 5% message loss (5 crashes each, 10 s warm-up, 40 s
# measured) with the defaults; then, at 10,000 nodes and 5% loss over seeds 1-5, the
# defaults beside plain SWIM (the defaults before issue #14's target was met) and each of
# the three changes taken out. CSV in docs/data/member.csv and docs/data/member_configs.csv,
# plot in docs/exp-member.png.
# Runs JOBS simulations at once (default 2); about 25 minutes with 2 on a loaded 2-core
# machine; each 10,000-node run takes 2 GB of memory. PARTS="sweep cfg" (the default)
# names what to run: the N sweep, the settings at 10,000; the other CSV is kept.
#   bash bench/member.sh [path/to/ringnet]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/ringnet}
OUT=docs/data
JOBS=${JOBS:-2}
PARTS=${PARTS:-sweep cfg}
mkdir -p "$OUT"
command -v gnuplot >/dev/null || { echo "member: gnuplot is missing (scripts/deps.sh installs it)" >&2; exit 1; }
F="median_first_probe_ms median_first_suspect_ms median_last_suspect_ms median_first_dead_ms median_p90_dead_ms median_last_dead_ms max_last_dead_ms crashes_known_everywhere false_dead_nodes false_deaths msgs_per_node_s bytes_per_node_s suspicion_timeout_ms"
COLS="first_probe first_suspect last_suspect first_dead p90_dead last_dead worst_dead known false_dead_nodes false_deaths msgs_per_node_s bytes_per_node_s timeout_ms"

# one run: its label, then the flags; prints the label and the fields
one() {
  local label=$1; shift
  echo "$label $("$BIN" sim --member --crash 5 --run-s 40 --warmup-s 10 --json "$@" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" $F)"
}
export -f one
export BIN F

want() { [[ " $PARTS " == *" $1 "* ]]; }

if [ "${PLOTS_ONLY:-0}" != 1 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # the runs, one a line: an index (for the order), a label, the flags
  {
    i=0
    if want sweep; then
      for loss in 0 0.05; do
        for n in 100 300 1000 3000 10000; do
          echo "$i sweep|$loss|$n -n $n --loss $loss"; i=$((i + 1))
        done
      done
    fi
    want cfg && while IFS='|' read -r name flags; do
      for seed in 1 2 3 4 5; do
        echo "$i cfg|$name|$seed -n 10000 --loss 0.05 --seed $seed $flags"; i=$((i + 1))
      done
    done <<'CFG' || true
default|
plain-swim|--suspicion-ms 1000 --lifeguard 1 --confirm 3 --eager-gossip 0 --suspect-probes 0
plain+eager|--suspicion-ms 1000 --lifeguard 1 --confirm 3 --suspect-probes 0
lifeguard-400-4-2+eager|--suspicion-ms 400 --lifeguard 4 --confirm 2 --suspect-probes 0
no-eager|--eager-gossip 0
no-suspect-probes|--suspect-probes 0
300-5-1|--suspicion-ms 300 --lifeguard 5
500-4-1|--suspicion-ms 500
CFG
  } | sed 's/ *$//' > "$tmp/runs" # a blank at the end would join xargs's lines
  xargs -P "$JOBS" -L 1 bash -c 'i=$0; label=$1; shift; one "$label" "$@" > "'"$tmp"'/out.$i"' < "$tmp/runs"
  collect() { # part, header: that part's rows in the runs' order
    echo "$2 $COLS"
    for f in $(ls "$tmp"/out.* | sort -t. -k2 -n); do
      grep "^$1|" "$f" | sed "s/^$1|//; s/|/ /" || true
    done
  }
  if want sweep; then collect sweep "loss nodes" > $OUT/member.csv; fi
  if want cfg; then collect cfg "setting seed" > $OUT/member_configs.csv; fi
fi

gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "docs/exp-member.png"
set multiplot layout 1,2
set logscale x
set xlabel "nodes"
set key top left
set ylabel "seconds from the crash (median of 5 crashes)"
set title "Crash detection, 5% loss (defaults)"
set yrange [0:6]
plot "< awk '\$1==0.05' $OUT/member.csv" using 2:(\$4/1000) with linespoints title "first suspects", \
     "" using 2:(\$5/1000) with linespoints title "last suspects", \
     "" using 2:(\$6/1000) with linespoints title "first declares dead", \
     "" using 2:(\$8/1000) with linespoints title "last declares dead", \
     5 with lines dashtype 2 title "target: 5 s"
set title "Messages sent per node per second"
set ylabel "messages / node / s"
set yrange [0:*]
plot "< awk '\$1==0' $OUT/member.csv" using 2:13 with linespoints title "no loss", \
     "< awk '\$1==0.05' $OUT/member.csv" using 2:13 with linespoints title "5% loss"
unset multiplot
GP
echo "member: $OUT/member.csv, $OUT/member_configs.csv, docs/exp-member.png"
