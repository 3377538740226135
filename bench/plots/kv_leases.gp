# The read-lease change on bench/kv_http.sh's GET rows: ringnet / nginx (1 worker) in the
# same run, main before (0159191) and with read leases (8ed5491), medians of 3 rounds,
# 2026-12-03 17:22-17:28 UTC (docs/benchmarks.md, "Read leases"). The dashed lines are
# issue #15's targets. Run from the repository's root: gnuplot bench/plots/kv_leases.gp
set terminal pngcairo size 860,460 font "sans,11"
set output "docs/kv-leases.png"
set title "GET /kv through a 5-node ring (R = 3): ringnet / nginx, same run"
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "ratio to nginx (1 worker)"
set yrange [0:1.0]
set grid ytics
set key top left
set xtics nomirror
set bmargin 4
$d << END
"all to node 1\n16 conns" 0.42 0.63
"all to node 1\n64 conns" 0.49 0.71
"spread over 5\n16 conns" 0.30 0.47
"spread over 5\n64 conns" 0.46 0.57
END
set arrow from -0.5,0.6 to 1.5,0.6 nohead dt 2 lw 2 lc rgb "#444444"
set arrow from 1.5,0.8 to 3.5,0.8 nohead dt 2 lw 2 lc rgb "#444444"
set label "target 0.6" at -0.45,0.62 font "sans,9"
set label "target 0.8" at 1.55,0.82 font "sans,9"
plot $d using 2:xtic(1) title "main before" lc rgb "#9e9e9e", \
     '' using 3 title "with read leases" lc rgb "#2b7bba"
