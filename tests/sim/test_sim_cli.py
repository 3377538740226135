#!/usr/bin/env python3
"""`ringnet sim` as a user runs it: exit codes, the classic sentence, --json fields,
the positional form, and byte-for-byte reproducibility of everything but wall time."""
import json
import re
import subprocess
import sys

BIN = sys.argv[1]
WALL = ("wall_ms", "build_wall_ms", "lookups_per_sec", "peak_rss_kb")
failures = []
passed = 0


def run(*args):
    return subprocess.run([BIN, "sim", *args], capture_output=True, text=True, timeout=300)


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")


# bad arguments: usage error, exit 2, a message naming the problem
for args, word in [
    (["--nodes", "0"], "--nodes"),
    (["--fail", "1.5"], "--fail"),
    (["--fail", "1"], "kills every node"),
    (["--nodes", "300", "--fail", "0.999"], "kills every node"),
    (["--fail", "-0.1"], "--fail"),
    (["--bits", "0"], "--bits"),
    (["--bits", "161"], "--bits"),
    (["--frobnicate", "3"], "unknown option"),
    (["--frobnicate"], "unknown option"),
    (["--json", "--frobnicate"], "unknown option"),
    (["--lookup", "fast"], "--lookup"),
    (["--nodes", "ten"], "--nodes"),
    (["--nodes"], "needs a value"),
    (["--bits", "3", "--nodes", "9"], "do not fit"),
    (["--stabilize-ms", "0"], "--stabilize-ms"),
    (["--stabilize-ms", "soon"], "--stabilize-ms"),
]:
    r = run(*args)
    check(f"usage {args}", r.returncode == 2 and word in r.stderr and "usage:" in r.stderr,
          f"rc={r.returncode} stderr={r.stderr[:200]!r}")

# the classic sentence
r = run("--nodes", "200", "--requests", "10")
check("text rc", r.returncode == 0, r.stderr)
m = re.search(r"All (\d+) nodes are done: (\d+) lookups in \d+ ms \(virtual \d+ ms\), average hops ([\d.]+)",
              r.stdout)
check("classic sentence", m is not None, r.stdout)
if m:
    check("sentence counts", m.group(1) == "200" and m.group(2) == "2000", m.group(0))

# --json carries the documented fields
r = run("--nodes", "300", "--requests", "5", "--keys", "3000", "--vnodes", "4", "--json")
j = json.loads(r.stdout)
for k in ("nodes", "lookups", "avg_hops", "p50_hops", "p99_hops", "max_hops", "failed_lookups",
          "virtual_ms", "wall_ms", "lookups_per_sec", "peak_rss_kb", "keys_per_node_mean",
          "keys_per_node_p1", "keys_per_node_p99", "keys_per_node_max", "lookup_timeouts",
          "lookups_abandoned", "lookups_unfinished", "lookups_rerouted"):
    check(f"json field {k}", k in j, sorted(j))
check("json values", j["nodes"] == 300 and j["lookups"] == 1500 and j["failed_lookups"] == 0, j)
check("keys mean", abs(j["keys_per_node_mean"] - 10.0) < 1e-9, j)


def stable(out):
    d = json.loads(out)
    for k in WALL:
        d.pop(k)
    return d


# same seed, same output; another seed, another run
a = run("--nodes", "500", "--requests", "10", "--fail", "0.3", "--json", "--seed", "7")
b = run("--nodes", "500", "--requests", "10", "--fail", "0.3", "--json", "--seed", "7")
c = run("--nodes", "500", "--requests", "10", "--fail", "0.3", "--json", "--seed", "8")
check("deterministic", stable(a.stdout) == stable(b.stdout), (a.stdout, b.stdout))
check("seed matters", stable(a.stdout) != stable(c.stdout), c.stdout)

# the positional form means the same as the flags
p = run("1000", "10", "simple", "--json")
f = run("--nodes", "1000", "--requests", "10", "--lookup", "simple", "--json")
check("positional", stable(p.stdout) == stable(f.stdout), (p.stdout, f.stdout))
hops = json.loads(p.stdout)["avg_hops"]
check("simple is about N/2", 400 < hops < 600, hops)

# join bootstrap converges and says so
r = run("--nodes", "300", "--requests", "5", "--bootstrap", "join", "--json")
j = json.loads(r.stdout)
check("join converged", j.get("converged") is True and j["failed_lookups"] == 0, j)

# under churn every node that lived through the run stabilized once a period
for period in (1000, 5000):
    r = run("--nodes", "200", "--requests", "40", "--churn", "0.5", "--stabilize-ms", str(period),
            "--json")
    j = json.loads(r.stdout)
    periods = j["virtual_ms"] // period
    check(f"rounds at {period} ms",
          abs(j["stabilize_rounds_median"] - periods) <= 1
          and j["stabilize_rounds_min"] * 10 >= periods * 8, j)

for f_ in failures:
    print("FAIL", f_)
print(f"sim_cli: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
