#!/usr/bin/env python3
"""`ringnet sim --replicas` as a user runs it: the key-value core on every simulated node
under churn. Exit codes and messages for bad arguments, the report's fields, the same
seed giving the same run, and what the run must show: no acknowledged write lost, no
stale read, no false 404, every key on its R replicas at the end."""
import json
import subprocess
import sys

BIN = sys.argv[1]
WALL = ("wall_ms", "peak_rss_kb")
failures, passed = [], 0


def run(*args):
    return subprocess.run([BIN, "sim", "--replicas", *args], capture_output=True, text=True,
                          timeout=300)


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")


for args, word in [
    (["0"], "bad value"),
    (["9"], "bad value"),
    (["3", "--write-quorum", "4"], "--write-quorum"),
    (["3", "--churn", "-1"], "bad value"),
    (["3", "--fail", "1"], "bad value"),
    (["3", "--lookup", "simple"], "unknown option"),
    (["3", "--detect", "300-100"], "bad value"),
    (["3", "--keys"], "needs a value"),
]:
    r = run(*args)
    check(f"{args} exits 2", r.returncode == 2, (r.returncode, r.stderr[-200:]))
    check(f"{args} names the problem", word in r.stderr, r.stderr[:200])

r = run("3", "--help")
check("--help exits 0 and explains", r.returncode == 0 and "--churn" in r.stdout, r.stdout[:100])

base = ["3", "--nodes", "150", "--keys", "6000", "--run-s", "40", "--ops", "300"]
runs = {}
for churn in ("0", "1", "3", "8"):
    r = run(*base, "--churn", churn, "--json")
    check(f"churn {churn} exits 0", r.returncode == 0, r.stderr[-300:])
    try:
        j = json.loads(r.stdout)
    except ValueError:
        check(f"churn {churn} prints JSON", False, r.stdout[:200])
        continue
    runs[churn] = j
    # a write may be lost only when every one of its R holders crashed within one repair
    # interval; the simulator tells such losses apart, and there must be no other kind
    check(f"churn {churn}: no acknowledged write lost but to R crashes in one interval",
          j["lost_writes"] == j["lost_explained"], j)
    if churn in ("0", "1"):
        check(f"churn {churn}: no acknowledged write lost", j["lost_writes"] == 0, j)
    if churn != "8":
        check(f"churn {churn}: no stale read", j["reads_stale"] == 0, j)
    else:
        # at 8 crashes and 8 joins a second on 150 nodes the ring's views lag so far that
        # an owner whose view has been still for 5 s can still miss a write a fallback
        # coordinated (the window architecture.md names under "Read leases"): 1 read in
        # about 9,400 on 2 of 20 seeds, with and without cache leases (session 26 note)
        check(f"churn {churn}: stale reads at most 1 in 1,000",
              j["reads_stale"] * 1000 <= j["reads"], j)
    check(f"churn {churn}: no false 404", j["reads_false_404"] == 0, j)
    check(f"churn {churn}: every key on its replicas at the end",
          j["under_replicated"] == 0 and j["over_replicated"] == 0, j)
    check(f"churn {churn}: the clients did work", j["writes_acked"] > 6000 and j["reads"] > 5000, j)
if "8" in runs:  # most of the ring dies: some keys lose all their holders in one interval
    check("at heavy churn the losses are there, and all explained",
          runs["8"]["lost_writes"] > 0 and runs["8"]["reads_of_lost"] >= 0, runs["8"])
if "3" in runs:
    j = runs["3"]
    check("churn happened", j["crashes"] > 50 and j["joins"] > 50, j)
    check("repair moved records", j["repair_data_bytes"] > 0 and j["forced_bytes"] > 0, j)
if "0" in runs:
    # without churn, repair only meets writes racing a digest or a read: a sliver of the data
    j = runs["0"]
    check("no churn, almost no record repair",
          j["repair_data_bytes"] < 0.01 * j["writes"] * (100 + 10 + 48), j)

# the same seed, the same run (but the wall clock)
a = run(*base, "--churn", "2", "--seed", "7", "--json")
b = run(*base, "--churn", "2", "--seed", "7", "--json")
c = run(*base, "--churn", "2", "--seed", "8", "--json")
try:
    ja, jb, jc = (json.loads(x.stdout) for x in (a, b, c))
    for w in WALL:
        ja.pop(w), jb.pop(w), jc.pop(w)
    check("same seed, same run", ja == jb, (ja, jb))
    check("another seed, another run", ja != jc)
except ValueError:
    check("deterministic runs print JSON", False, a.stdout[:200])

# --ring real: the Chord core on every node too; its own joins, lookups and detection
for churn in ("0", "1"):
    r = run(*base, "--churn", churn, "--ring", "real", "--json")
    check(f"real ring, churn {churn} exits 0", r.returncode == 0, r.stderr[-300:])
    try:
        j = json.loads(r.stdout)
    except ValueError:
        check(f"real ring, churn {churn} prints JSON", False, r.stdout[:200])
        continue
    check(f"real ring, churn {churn}: the Chord cores ran",
          j["ring"] == "real" and j["ring_messages"] > 150 * 40, j)
    check(f"real ring, churn {churn}: no acknowledged write lost", j["lost_writes"] == 0, j)
    check(f"real ring, churn {churn}: no false 404", j["reads_false_404"] == 0, j)
    check(f"real ring, churn {churn}: every key on its replicas at the end",
          j["under_replicated"] == 0 and j["over_replicated"] == 0, j)
    check(f"real ring, churn {churn}: the clients did work",
          j["writes_acked"] > 6000 and j["reads"] > 5000, j)
    check(f"real ring, churn {churn}: the rings are exact at the end",
          j["ring_unjoined"] == 0 and j["ring_wrong_succ"] == 0 and j["ring_wrong_pred"] == 0, j)
    if churn == "0":
        check("real ring, no churn: no stale read", j["reads_stale"] == 0, j)
r = run("3", "--ring", "chord")
check("--ring chord exits 2 and names the problem", r.returncode == 2 and "bad value" in r.stderr,
      r.stderr[:200])

# the text form ends with the verdict
r = run(*base, "--churn", "1")
check("text report ends with the verdict", r.stdout.strip().splitlines()[-1].startswith("No write lost"),
      r.stdout[-300:])

for f in failures:
    print("FAIL", f)
print(f"kvsim_cli: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
