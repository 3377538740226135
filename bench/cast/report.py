#!/usr/bin/env python3
"""report.py — the cast bench's JSON runs (bench/out/cast/*.json, from suite.sh) as a markdown
table (stdout) and a gnuplot PNG of per-destination completion times.

usage: bench/cast/report.py [OUT_DIR] [PNG]
With several runs of one case the table shows medians (U, naive, BitTorrent each over their
own runs) and the run count; the plot shows the run whose cast U is the median.
"""
import glob
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def load(out):
    cases = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        name = os.path.basename(path).rsplit(".", 2)[0]
        try:
            with open(path) as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
            cases.setdefault(name, []).append(json.loads(lines[-1]))
        except (ValueError, IndexError):
            print(f"report: {path} holds no JSON result, left out", file=sys.stderr)
    return cases


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".2f"):
    return "failed" if x is None else format(x, spec)


def ran_fmt(ran, x):
    return fmt(x) if ran else "not run"


ORDER = ["chain4", "ring-of-stars", "star-uneven", "scenario1", "scenario2", "scenario3",
         "scenario4", "scenario5", "scenario6", "scenario1+sc1-trace1", "scenario1+sc1-trace2",
         "star20", "mesh12"]


def table(cases):
    rows = ["| topology | runs | bound s | cast U s | efficiency | naive U s | BitTorrent U s | "
            "naive / cast | BitTorrent / cast | emulator p99 late ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    names = sorted(cases, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n))
    for name in names:
        runs = cases[name]
        bound = runs[0]["bound_s"]
        u = med(r.get("u_s") for r in runs)
        naive = med(r.get("naive", {}).get("u_s") for r in runs)
        bt = med(r.get("bittorrent", {}).get("u_s") for r in runs)
        ran = {k: any(k in r for r in runs) for k in ("naive", "bittorrent")}
        late = med(max((s["late_p99_us"] for s in r.get("emulator") or [] if s), default=None)
                   for r in runs)
        rows.append(
            f"| {name} | {len(runs)} | {bound:.2f} | {fmt(u)} | "
            f"{fmt(bound / u if u else None, '.3f')} | {ran_fmt(ran['naive'], naive)} | "
            f"{ran_fmt(ran['bittorrent'], bt)} | "
            f"{ran_fmt(ran['naive'], naive / u if u and naive else None)} | "
            f"{ran_fmt(ran['bittorrent'], bt / u if u and bt else None)} | "
            f"{fmt(late / 1000 if late is not None else None, '.1f')} |")
    return "\n".join(rows), names


def plot(cases, names, png):
    """One cluster per topology: each destination's completion time divided by the bound,
    for cast, naive and BitTorrent (log scale: naive's tail is long)."""
    data = os.path.join(os.path.dirname(png) or ".", ".cast-completion.dat")
    with open(data, "w") as f:
        for k, name in enumerate(names):
            runs = cases[name]
            run = sorted(runs, key=lambda r: r.get("u_s") or float("inf"))[len(runs) // 2]
            for col, key in enumerate(("cast", "naive", "bittorrent")):
                for d in (run.get(key) or {}).get("destinations", []):
                    if d.get("done_s") is not None:
                        f.write(f"{k + (col - 1) * 0.25} {d['done_s'] / run['bound_s']} {col}\n")
    labels = ", ".join(f'"{n}" {k}' for k, n in enumerate(names))
    script = f"""
set terminal pngcairo size 1400,600 font ",10"
set output "{png}"
set title "ringnet cast bench: each destination's completion time / the lower bound"
set ylabel "completion time / bound (log)"
set logscale y
set grid ytics
set xtics ({labels}) rotate by -30
set xrange [-0.6:{len(names) - 0.4}]
set key top left
plot "{data}" using 1:(column(3)==0?$2:1/0) with points pt 7 ps 0.8 title "ringnet cast", \\
     "{data}" using 1:(column(3)==1?$2:1/0) with points pt 5 ps 0.8 title "naive", \\
     "{data}" using 1:(column(3)==2?$2:1/0) with points pt 9 ps 0.8 title "BitTorrent (aria2)", \\
     1 with lines dt 2 lc rgb "black" title "bound"
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    os.remove(data)
    if r.returncode:
        print(f"report: gnuplot failed: {r.stderr}", file=sys.stderr)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "bench", "out", "cast")
    png = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "docs", "cast-completion.png")
    cases = load(out)
    if not cases:
        sys.exit(f"report: no runs in {out}")
    text, names = table(cases)
    print(text)
    plot(cases, names, png)


if __name__ == "__main__":
    main()
