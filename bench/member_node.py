#!/usr/bin/env python3
"""Crash detection on real nodes: a local ring of N `ringnet node` processes with a
failure-detector setting, kill -9 of one node at a time, and the time from the kill to
each other node logging it dead (`member ... is dead`, the node's own millisecond
timestamps); then the node is restarted and the next is killed. Meanwhile a client
writes keys to random nodes, and any other member some node declares dead is a false
positive. Then a node is stopped (SIGSTOP, as a host starved of CPU would hold it) for
1, 2, 3, 4 and 6 s in turn and let go (SIGCONT): the longest stall after which no node
declared it dead is reported. Settings side by side in one run, as `NAME=FLAGS` (flags of
`ringnet node`):

    python3 bench/member_node.py BIN NODES KILLS 'old=--lifeguard 1' 'new=--lifeguard 3'

Prints, per setting, one markdown row: first and last node to know (medians over the
kills, and the worst last), false positives, membership messages per node per second
(from /metrics), and the longest stall survived. Loopback only; every wait is bounded."""
import os
import random
import re
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import ringtest  # noqa: E402
from ringtest import get, request  # noqa: E402

BIN, NODES, KILLS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SETTINGS = [a.split("=", 1) for a in sys.argv[4:]] or [["default", ""]]
DEAD = re.compile(r'ts=(\S+) level=info node=\S+ msg="member (\S+) is dead')


def members(node):
    try:
        status, body = get(node.http, "/members")
    except OSError:
        return None
    return {m["addr"]: m["state"] for m in body["members"]} if status == 200 else None


def wait_for(cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.25)
    return cond()


def all_see(viewers, target, state):
    return lambda: all((members(v) or {}).get(target.addr) == state for v in viewers)


def deaths(node):
    """(time, addr) of every 'member ADDR is dead' line in node's log."""
    out = []
    with open(os.path.join(node.logdir, node.name + ".log")) as f:
        for line in f:
            m = DEAD.search(line)
            if m:
                t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
                out.append((t.replace(tzinfo=timezone.utc).timestamp(), m.group(2)))
    return out


def member_msgs(nodes):
    total = 0.0
    for n in nodes:
        m = ringtest.metrics(n.http)
        total += sum(v for k, v in m.items()
                     if k.startswith("ringnet_member_messages_total") and 'dir="out"' in k)
    return total


def writer(nodes, stop):
    """Keys written to random nodes, a few a second each, until stop (the load)."""
    i = 0
    while not stop.is_set():
        n = random.choice(nodes)
        if n.proc.poll() is None:
            try:
                request(n.http, "/kv", method="POST",
                        body={"key": f"k{i % 500}", "value": "x" * 200}, timeout=5)
            except OSError:
                pass
        i += 1
        time.sleep(0.02)


def run(name, flags):
    args = shlex.split(flags)
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        stop = threading.Event()
        try:
            ok, _ = ringtest.start_ring(BIN, [f"{name}{i}" for i in range(NODES)], logdir,
                                        nodes, args=args)
            everyone = lambda: all(
                (members(v) or {}).get(o.addr) == "alive" for v in nodes for o in nodes)
            if not ok or not wait_for(everyone, 60):
                return f"| {name} | the ring of {NODES} did not form |"
            load = threading.Thread(target=writer, args=(nodes, stop))
            load.start()
            t0, m0 = time.time(), member_msgs(nodes)
            firsts, lasts, missed, kills = [], [], 0, []
            for k in range(KILLS):
                victim = nodes[1 + (k * 7) % (NODES - 1)]
                rest = [n for n in nodes if n is not victim]
                time.sleep(2 + random.random())  # a random phase against the probes
                at = time.time()
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                kills.append((victim.addr, at))
                if not wait_for(all_see(rest, victim, "dead"), 60):
                    missed += 1
                seen = []
                for n in rest:
                    ts = [t for t, a in deaths(n) if a == victim.addr and t >= at]
                    if ts:
                        seen.append(min(ts) - at)
                if len(seen) == len(rest):
                    firsts.append(min(seen))
                    lasts.append(max(seen))
                victim.start()
                wait_for(all_see(nodes, victim, "alive"), 60)
            secs, msgs = time.time() - t0, member_msgs(nodes) - m0
            # a false positive: a member declared dead other than a killed node after
            # its kill (and before it was alive again everywhere)
            killed = {}
            for a, t in kills:
                killed.setdefault(a, []).append(t)
            false = 0
            for n in nodes:
                for t, a in deaths(n):
                    if t >= t0 and not any(t >= k for k in killed.get(a, [])):
                        false += 1
            survived = 0.0
            for stall in (1, 2, 3, 4, 6):
                frozen = nodes[2]
                rest = [n for n in nodes if n is not frozen]
                if not wait_for(all_see(nodes, frozen, "alive"), 30):
                    break
                at = time.time()
                frozen.proc.send_signal(signal.SIGSTOP)
                time.sleep(stall)
                frozen.proc.send_signal(signal.SIGCONT)
                time.sleep(8)  # its refutation, or the verdicts, have gone round
                if any(a == frozen.addr and t >= at for n in rest for t, a in deaths(n)):
                    break
                survived = stall
            if not lasts:
                return f"| {name} | no kill was seen dead by every node |"
            return (f"| {name} | `{flags}` | {statistics.median(firsts):.2f} s | "
                    f"{statistics.median(lasts):.2f} s ({max(lasts):.2f}) | "
                    f"{len(lasts)} of {KILLS}{'' if not missed else f', {missed} missed'} | "
                    f"{false} | {msgs / secs / NODES:.1f} | {survived:g} s |")
        finally:
            stop.set()
            ringtest.stop_all(nodes, ringtest.Checks(name), logdir)


def main():
    print(f"{NODES} nodes, {KILLS} kills each; load average {os.getloadavg()[0]:.1f}")
    print("| setting | flags | first knows | last knows, median (worst) | kills seen by "
          "all | false positives | member msgs / node / s | longest stall survived |")
    print("|---|---|---|---|---|---|---|---|")
    for name, flags in SETTINGS:
        print(run(name, flags), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
