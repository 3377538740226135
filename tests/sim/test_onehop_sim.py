#!/usr/bin/env python3
"""`ringnet sim --replicas ... --one-hop on` as a user runs it: the key-value cores route by
member tables that a model of membership dissemination keeps (joins and crashes become
known late). Under churn, the same checks as without it (no acknowledged write lost, no
stale read, no false 404, every key on its replicas at the end; on the real ring, whose
views lag, no more stale reads than plain Chord) and what one hop must
show against plain Chord routing in the same run: fewer hops per request, requests sent
first by the member table, no stale first send when nothing changes, some when nodes
crash and join."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from ringtest import Checks  # noqa: E402

BIN = sys.argv[1]
t = Checks("onehop_sim")
check = t.check


def run(*args):
    return subprocess.run([BIN, "sim", "--replicas", *args], capture_output=True, text=True,
                          timeout=300)


def sim(*args):
    r = run(*args, "--json")
    check(f"{args} exits 0", r.returncode == 0, r.stderr[-300:])
    try:
        return json.loads(r.stdout)
    except ValueError:
        check(f"{args} prints JSON", False, r.stdout[:200])
        return None


for args, word in [(["3", "--one-hop", "yes"], "bad value"),
                   (["3", "--one-hop-max", "-1"], "bad value"),
                   (["3", "--join-known", "9-1"], "bad value"),
                   (["3", "--crash-known", "x"], "bad value")]:
    r = run(*args)
    check(f"{args} exits 2 and names the problem", r.returncode == 2 and word in r.stderr,
          (r.returncode, r.stderr[-200:]))

base = ["3", "--nodes", "120", "--keys", "3000", "--run-s", "25", "--ops", "300"]
kept = None
for ring, churns in (("model", ("0", "3")), ("real", ("1",))):
    for churn in churns:
        on = sim(*base, "--churn", churn, "--ring", ring, "--one-hop", "on")
        off = sim(*base, "--churn", churn, "--ring", ring, "--one-hop", "off")
        if not on or not off:
            continue
        tag = f"{ring} ring, churn {churn}"
        if churn == "0":
            check(f"{tag}: no acknowledged write lost", on["lost_writes"] == 0, on)
            check(f"{tag}: no stale read", on["reads_stale"] == 0, on)
        else:
            # under churn a key whose R holders all crash within one repair interval is
            # lost (the simulator tells those apart: there must be no other kind), and
            # views that lag the churn give a few stale reads, with one hop and with
            # plain Chord alike: seeds 1-8 of 8c12e96, 4f83193 and this build gave 0-61
            # explained losses and 0-3 stale reads a run at model churn 3, and 13 (one
            # hop) against 10 (Chord) stale reads over seeds 1-6 at real churn 1 (session
            # 26); one seed's counts are too small to compare, so bound the rate
            check(f"{tag}: no acknowledged write lost but to R crashes in one interval",
                  on["lost_writes"] == on["lost_explained"], on)
            check(f"{tag}: stale reads at most 1 in 1,000 (plain Chord: {off['reads_stale']})",
                  on["reads_stale"] * 1000 <= on["reads"], (on, off))
        check(f"{tag}: no false 404", on["reads_false_404"] == 0, on)
        check(f"{tag}: every key on its replicas at the end",
              on["under_replicated"] == 0 and on["over_replicated"] == 0, on)
        check(f"{tag}: the clients did work",
              on["writes_acked"] > 4000 and on["reads"] > 5000, on)
        if ring == "model" and churn == "3":
            kept = on
        ops = on["client_ops"]
        check(f"{tag}: one hop was on, Chord off", on["one_hop"] and not off["one_hop"])
        check(f"{tag}: most requests go by the member table",
              on["route_onehop"] > 0.85 * ops, on)
        check(f"{tag}: without it, by lookups", off["route_onehop"] == 0 and
              off["route_lookup"] > 0.85 * off["client_ops"], off)
        check(f"{tag}: one hop takes fewer hops", on["hops_per_request"] < 1.3 and
              off["hops_per_request"] > 3, (on["hops_per_request"], off["hops_per_request"]))
        routed = (on["route_local"] + on["route_successors"] + on["route_onehop"] +
                  on["route_cache"] + on["route_lookup"])
        # a node still joining answers at once (503), without routing
        check(f"{tag}: every routed request counted once", 0.95 * ops <= routed <= ops, on)
        if churn == "0":
            check(f"{tag}: exact tables, no stale first send", on["route_stale"] == 0, on)
        else:
            check(f"{tag}: late news, some stale first sends, each corrected",
                  on["route_stale"] > 0 and on["stale_rate"] < 0.2, on)
            check(f"{tag}: churn happened", on["crashes"] > 10 and on["joins"] > 10, on)

# above --one-hop-max members: the owner cache, and lookups for the keys it lacks
j = sim(*base, "--churn", "1", "--one-hop", "on", "--one-hop-max", "50")
if j:
    check("above --one-hop-max: no member-table routes, some cache routes",
          j["route_onehop"] == 0 and j["route_cache"] > 0 and j["route_lookup"] > 0, j)
    check("above --one-hop-max: no write lost, no stale read",
          j["lost_writes"] == 0 and j["reads_stale"] == 0, j)

again = sim(*base, "--churn", "3", "--ring", "model", "--one-hop", "on")
if kept and again:
    for k in ("wall_ms", "peak_rss_kb"):
        kept.pop(k)
        again.pop(k)
    check("same seed, same run", kept == again, (kept, again))

r = run("3", "--nodes", "40", "--keys", "500", "--run-s", "5", "--churn", "1", "--one-hop", "on")
check("the text report has the routing line",
      any(x.startswith("routing (one hop): ") for x in r.stdout.splitlines()), r.stdout)

sys.exit(t.finish())
