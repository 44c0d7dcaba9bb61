# W2 plot: round-trip time against the adaptive-polling window.
# Called by run-all.sh as
#   gnuplot -e "datafile='...'; outfile='...'; term='pngcairo'" w2-poll-window.gp
if (!exists("term")) term = "pngcairo"
if (term eq "pngcairo") {
    set terminal pngcairo size 900,560 enhanced font "sans,10"
} else {
    set terminal png size 900,560
}
set output outfile
set title "aioloop cross-thread ping-pong vs poll\\_max\\_ns (median of 3 runs)"
set xlabel "poll\\_max\\_ns"
set ylabel "round trip (us, log scale)"
set logscale y
set yrange [0.1:*]
set grid ytics mytics xtics
set key top right
set datafile missing "NaN"
plot datafile using 0:($2 < 0 ? NaN : $2):xtic(1) with linespoints lw 2 pt 7 title "threads on different CPUs", \
     datafile using 0:($3 < 0 ? NaN : $3) with linespoints lw 2 pt 5 title "threads on the same CPU", \
     1 with lines dt 2 lc rgb "gray" title "goal: 1 us (split)"
