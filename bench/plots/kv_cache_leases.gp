# The cache-lease change on bench/kv_http.sh's GET rows: ringnet / nginx (1 worker) in the
# same run, main before (8c12e96, read leases) and with cache leases, medians of 3 rounds,
# 2026-12-03 19:51-19:59 UTC (docs/benchmarks.md, "Cache leases"). The dashed lines are
# issue #15's targets. Run from the repository's root: gnuplot bench/plots/kv_cache_leases.gp
set terminal pngcairo size 860,460 font "sans,11"
set output "docs/kv-cache-leases.png"
set title "GET /kv through a 5-node ring (R = 3): ringnet / nginx, same run"
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "ratio to nginx (1 worker)"
set yrange [0:1.4]
set grid ytics
set key top left
set xtics nomirror
set bmargin 4
$d << END
"all to node 1\n16 conns" 0.64 1.25
"all to node 1\n64 conns" 0.69 1.11
"spread over 5\n16 conns" 0.45 0.96
"spread over 5\n64 conns" 0.71 1.03
END
set arrow from -0.5,0.6 to 1.5,0.6 nohead dt 2 lw 2 lc rgb "#444444" front
set arrow from 1.5,0.8 to 3.5,0.8 nohead dt 2 lw 2 lc rgb "#444444" front
set label "target 0.6" at -0.45,0.62 font "sans,9" front
set label "target 0.8" at 1.55,0.82 font "sans,9" front
plot $d using 2:xtic(1) title "main before (read leases)" lc rgb "#9e9e9e", \
     '' using 3 title "with cache leases" lc rgb "#2b7bba"
