#!/usr/bin/env python3
"""`ringnet sim --cast` as a user runs it, on the shared topologies: exit codes and
messages for bad input, the JSON line, every destination finishing, U never below the
lower bound, the bound's parts as FORMAT.md defines them (checked here from the file by
brute force on small graphs), and the same output for the same seed."""
import itertools
import json
import os
import subprocess
import sys
import tempfile

BIN = sys.argv[1]
TOPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                    "topologies")
failures = []
passed = 0


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")


def run(*args):
    return subprocess.run([BIN, "sim", *args], capture_output=True, text=True, timeout=300)


def load(path):
    hosts, switches, links = [], [], []
    for line in open(path):
        w = line.split("#")[0].split()
        if not w:
            continue
        if w[0] == "host":
            hosts.append(w[1])
        elif w[0] == "switch":
            switches.append(w[1])
        elif w[0] == "link":
            links.append((w[1], w[2], float(w[3]), float(w[4].rstrip("ms"))))
    return hosts, switches, links


def brute_cut(hosts, switches, links, src, dst):
    """Min cut by enumerating every vertex set that holds src and not dst (small graphs)."""
    others = [v for v in hosts + switches if v not in (src, dst)]
    best = float("inf")
    for k in range(len(others) + 1):
        for side in itertools.combinations(others, k):
            s = set(side) | {src}
            cut = sum(mb for a, b, mb, _ in links for x, y in ((a, b), (b, a))
                      if x in s and y not in s)
            best = min(best, cut)
    return best * 1e6


def brute_bound(path, size):
    hosts, switches, links = load(path)
    src = "src" if "src" in hosts else hosts[0]
    dests = [h for h in hosts if h != src]
    bits = size * 8
    cut = bits / min(brute_cut(hosts, switches, links, src, d) for d in dests)
    up = sum(mb for a, b, mb, _ in links for x in (a, b) if x in hosts) * 1e6
    upload = len(dests) * bits / up
    # shortest delay: Bellman-Ford over the undirected links
    dist = {v: float("inf") for v in hosts + switches}
    dist[src] = 0
    for _ in range(len(dist)):
        for a, b, _, d in links:
            dist[b] = min(dist[b], dist[a] + d)
            dist[a] = min(dist[a], dist[b] + d)
    return max(cut, upload) + max(dist[d] for d in dests) / 1000


for args, word in [
    (["--cast"], "--cast"),
    (["--cast", "/no/such/topology"], "cannot read"),
    (["--cast", os.path.join(TOPO, "chain4.txt"), "--size", "0"], "--size"),
    (["--cast", os.path.join(TOPO, "chain4.txt"), "--piece-size", "100"], "--piece-size"),
    (["--cast", os.path.join(TOPO, "chain4.txt"), "--frob"], "unknown"),
]:
    r = run(*args)
    check(f"{args} is refused", r.returncode in (1, 2) and word in r.stderr,
          f"rc {r.returncode}: {r.stderr}")

with tempfile.TemporaryDirectory(prefix="rnk-castsim-") as tmp:
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "w") as f:
        f.write("host src\nhost d1\nlink src d9 10 5ms 100 0\n")
    r = run("--cast", bad)
    check("a link to an unknown host is refused with its line", r.returncode == 1 and
          "bad.txt:3" in r.stderr, r.stderr)

size = 8 << 20
files = [os.path.join(TOPO, f) for f in ("chain4.txt", "star-uneven.txt", "ring-of-stars.txt")]
files += [os.path.join(TOPO, "contest", f"scenario{i}.txt") for i in range(1, 7)]
for path in files:
    name = os.path.basename(path)
    r = run("--cast", path, "--size", str(size), "--json")
    check(f"{name}: exit 0", r.returncode == 0, r.stderr)
    try:
        j = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check(f"{name}: JSON line", False, r.stdout)
        continue
    hosts, _, _ = load(path)
    check(f"{name}: every destination finished",
          len(j["destinations"]) == len(hosts) - 1 and
          all(d["done_s"] is not None for d in j["destinations"]), r.stdout)
    check(f"{name}: U is the last completion",
          abs(j["u_s"] - max(d["done_s"] for d in j["destinations"])) < 1e-3, r.stdout)
    want = brute_bound(path, size)
    check(f"{name}: the bound matches a brute-force min cut", abs(j["bound_s"] - want) < 1e-6,
          f"{j['bound_s']} vs {want}")
    check(f"{name}: U is never below the bound", j["u_s"] >= j["bound_s"] * 0.999,
          f"U {j['u_s']} bound {j['bound_s']}")
    check(f"{name}: efficiency is bound / U",
          abs(j["efficiency"] - j["bound_s"] / j["u_s"]) < 1e-9, r.stdout)

p = os.path.join(TOPO, "contest", "scenario5.txt")
a = run("--cast", p, "--size", str(size), "--seed", "7", "--json").stdout
b = run("--cast", p, "--size", str(size), "--seed", "7", "--json").stdout
check("the same seed gives the same output", a == b and a, a + "\n---\n" + b)
tr = os.path.join(TOPO, "contest", "sc1-trace1.txt")
r = run("--cast", os.path.join(TOPO, "contest", "scenario1.txt"), "--trace", tr, "--size",
        str(size), "--json")
j = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
# the trace sets the source's link to 8 Mbit/s from the start: no faster than that
check("a trace slows the transfer to its new rate",
      j.get("u_s", 0) >= size * 8 / 8e6, r.stdout + r.stderr)

for f in failures:
    print("FAIL", f)
print(f"castsim_cli: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
