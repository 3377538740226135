#!/usr/bin/env python3
"""`ringnet sim --member` as a user runs it: bad arguments exit 2 and name the problem;
the same seed gives the same run; and what a run must show against the simulator's
truth: every crash known dead by every live node, and with no loss no live node ever
suspected or declared dead; with loss, suspicions that are refuted."""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from ringtest import Checks  # noqa: E402

BIN = sys.argv[1]
WALL = ("wall_ms", "peak_rss_kb")
t = Checks("membersim_cli")
check = t.check


def run(*args):
    return subprocess.run([BIN, "sim", "--member", *args], capture_output=True, text=True,
                          timeout=300)


for args, word in [
    (["-n", "1"], "--nodes"),
    (["-n", "10", "--crash", "10"], "--crash"),
    (["--loss", "1"], "--loss"),
    (["--loss", "x"], "--loss"),
    (["--interval-ms", "400"], "probe timeout"),
    (["--indirect", "99"], "k at most"),
    (["--latency", "10-900"], "--latency"),
    (["--bogus", "1"], "unknown option"),
    (["--crash"], "needs a value"),
    (["--eager-gossip", "x"], "--eager-gossip"),
    (["--suspect-probes", "-1"], "--suspect-probes"),
    (["--lifeguard", "0"], "out of range"),
]:
    r = run(*args)
    check(f"{args} exits 2", r.returncode == 2, (r.returncode, r.stderr[-200:]))
    check(f"{args} names the problem", word in r.stderr, r.stderr[:300])

r = run("--help")
check("--help exits 0 and shows usage", r.returncode == 0 and "usage:" in r.stdout, r.stdout)

common = ["-n", "300", "--crash", "4", "--run-s", "30", "--warmup-s", "5", "--json"]
a = run(*common, "--seed", "3")
b = run(*common, "--seed", "3")
check("a run exits 0", a.returncode == 0, a.stderr[-300:])
ja, jb = json.loads(a.stdout), json.loads(b.stdout)
for k in WALL:
    ja.pop(k), jb.pop(k)
check("the same seed gives the same run", ja == jb, (ja, jb))
check("every crash is known dead by every live node",
      ja["crashes_known_everywhere"] == 4 and
      all(c["known_by"] == 296 for c in ja["crash"]), ja["crash"])
check("without loss no live node is suspected or declared dead",
      ja["false_deaths"] == 0 and ja["live_suspicions"] == 0, ja)
check("first before last", all(c["first_dead_ms"] <= c["median_dead_ms"] <= c["last_dead_ms"]
                               and c["first_suspect_ms"] <= c["first_dead_ms"]
                               for c in ja["crash"]), ja["crash"])
# the shortest timeout is 400 ms x log10 of the members alive or suspect: 296 after the
# crashes (Lifeguard starts at 4 times that and shrinks to it once another member confirms)
check("dead no sooner than the suspicion timeout after a suspicion",
      all(c["first_dead_ms"] >= c["first_suspect_ms"] + int(400 * math.log10(296))
          for c in ja["crash"]), ja["crash"])
check("where the time goes: the first probe, then the suspicion, 90% knowing before all",
      all(0 <= c["first_probe_ms"] <= c["first_suspect_ms"] and
          c["median_dead_ms"] <= c["p90_dead_ms"] <= c["last_dead_ms"] and
          1 <= c["dead_by_timer"] <= c["known_by"] for c in ja["crash"]), ja["crash"])
plain = json.loads(run(*common, "--seed", "3", "--lifeguard", "1", "--suspicion-ms", "1000",
                       "--eager-gossip", "0", "--suspect-probes", "0").stdout)
check("plain SWIM (no Lifeguard): dead no sooner than 1000 ms x log10 N after a suspicion",
      plain["crashes_known_everywhere"] == 4 and
      all(c["first_dead_ms"] >= c["first_suspect_ms"] + int(1000 * math.log10(296))
          for c in plain["crash"]), plain["crash"])

lossy = json.loads(run(*common, "--loss", "0.05").stdout)
check("with 5% loss crashes are still found everywhere", lossy["crashes_known_everywhere"] == 4,
      lossy["crash"])
check("with 5% loss live nodes are suspected and refute",
      lossy["live_suspicions"] > 0 and lossy["refutations"] > 0, lossy)
check("with 5% loss no live node is declared dead", lossy["false_deaths"] == 0, lossy)
check("messages are lost at about the rate asked",
      0.03 < lossy["lost"] / max(1, lossy["messages"]) < 0.07, lossy)

text = run("-n", "200", "--crash", "2", "--run-s", "20")
check("the text report names detection and false positives",
      text.returncode == 0 and "last dead" in text.stdout and "false positives" in text.stdout,
      text.stdout)

sys.exit(t.finish())
