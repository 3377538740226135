#!/usr/bin/env python3
"""Membership with real nodes: 5 nodes see each other alive on GET /members; one killed
with SIGKILL becomes dead on every other node, and leaves their ring tables; restarted, it
is alive again everywhere with a higher incarnation. States are checked, not times (the
deadlines below only bound how long the test waits)."""
import os
import signal
import sys
import tempfile
import time

import ringtest
from ringtest import Checks, Node, get

BIN = sys.argv[1]
t = Checks("member")


def members(node):
    """{addr: member} as node reports it, or None if it does not answer."""
    try:
        status, body = get(node.http, "/members")
    except OSError:
        return None
    if status != 200:
        return None
    return {m["addr"]: m for m in body["members"]}


def views(nodes):
    return {n.addr: members(n) for n in nodes}


def wait_for(cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    return cond()


def all_see(viewers, target, state):
    def check():
        for v in viewers:
            m = members(v)
            if not m or m.get(target.addr, {}).get("state") != state:
                return False
        return True
    return check


def ring_names(node):
    _, r = get(node.http, "/ring")
    names = [p["addr"] for p in r["successors"] if p]
    if r["predecessor"]:
        names.append(r["predecessor"]["addr"])
    names += [f["addr"] for f in r["fingers"] if f]
    return names


def main():
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            ok, _ = ringtest.start_ring(BIN, [f"m{i}" for i in range(5)], logdir, nodes)
            t.check("the ring of 5 forms", ok)
            everyone_alive = lambda: all(
                m and all(m.get(o.addr, {}).get("state") == "alive" for o in nodes)
                for m in (members(n) for n in nodes))
            t.check("every node lists all 5 as alive", wait_for(everyone_alive, 40),
                    str(views(nodes)))
            v = members(nodes[1])
            me = v.get(nodes[1].addr, {}) if v else {}
            t.check("a node lists itself", me.get("self") is True, str(me))
            other = v.get(nodes[2].addr, {}) if v else {}
            t.check("a member has its ring id", other.get("id") == nodes[2].id, str(other))
            t.check("since_ms and incarnation are numbers",
                    isinstance(other.get("since_ms"), int) and
                    isinstance(other.get("incarnation"), int), str(other))
            old_inc = other.get("incarnation", -1)

            # kill -9: no goodbye, only the failure detector can tell
            victim = nodes[2]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            rest = [n for n in nodes if n is not victim]
            t.check("the killed node becomes dead on every other node",
                    wait_for(all_see(rest, victim, "dead"), 60), str(views(rest)))
            t.check("... and the others stay alive everywhere",
                    all(members(a)[b.addr]["state"] == "alive" for a in rest for b in rest),
                    str(views(rest)))
            t.check("the dead node left every ring table",
                    wait_for(lambda: all(victim.addr not in ring_names(n) for n in rest), 10),
                    str({n.addr: ring_names(n) for n in rest}))
            m = ringtest.metrics(rest[0].http)
            t.check("/metrics counts the dead member",
                    m.get('ringnet_member_members{state="dead"}') == 1.0,
                    str({k: v for k, v in m.items() if k.startswith("ringnet_member_members")}))
            t.check("/metrics has the probe counter",
                    m.get("ringnet_member_probes_total", 0) > 0, "")
            # every node that learned the death sent a gossip round at once (eager)
            t.check("the death went out in an eager gossip round on every other node",
                    all(ringtest.metrics(n.http).get("ringnet_member_eager_rounds_total", 0)
                        >= 1 for n in rest), "")
            t.check("the default timeout: 1 s x max(2, log10 N) = 2 s",
                    m.get("ringnet_member_suspicion_timeout_seconds") == 2.0, "")

            # restarted with its data: rejoins, and its new incarnation beats the notices
            victim.start()
            t.check("the restarted node is alive again on every node",
                    wait_for(all_see(nodes, victim, "alive"), 60), str(views(nodes)))
            inc = members(nodes[0]).get(victim.addr, {}).get("incarnation", -1)
            t.check("with a higher incarnation", inc > old_inc, f"{inc} vs {old_inc}")
            ok, state = ringtest.converge(nodes)
            t.check("the ring is whole again", ok, str(state))

            # bad requests
            status, _ = ringtest.request(nodes[0].http, "/members", method="POST", body=b"x")
            t.check("POST /members is refused", status == 405, str(status))

            # a graceful stop: the others see it as left; every process exits cleanly
            # (under ASan a leak or a bad access would make the exit status non-zero)
            leaver = nodes[4]
            t.check("a node stopped with SIGTERM exits with 0", leaver.stop() == 0)
            t.check("... and is 'left' on the others",
                    wait_for(all_see(nodes[:4], leaver, "left"), 30), str(views(nodes[:4])))
            for n in nodes[:4]:
                rc = n.stop()
                t.check(f"{n.name} exits with 0", rc == 0, str(rc))
        finally:
            ringtest.stop_all(nodes, t, logdir)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
