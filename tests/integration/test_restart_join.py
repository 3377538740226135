"""A restarted node joins the ring at once with its true successor (issue #14): the first
"joined the ring; successor X" line it logs after the restart names the node after it on
the ring (the oracle: the sorted ids), never itself and never "not known yet". Twice:
kill -9 and an immediate restart (the others still list it, the case that used to answer
the node with itself), and SIGTERM (it left) then a restart. Both restarts are on the same
--data and without --join: the node rejoins through the peers it saved.

usage: test_restart_join.py RINGNET_BINARY"""
import os
import re
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringtest  # noqa: E402

JOINED = re.compile(r'msg="joined the ring; ([^"]*)"')


def first_join_line(path, offset, wait=30):
    """The first 'joined the ring' message logged after offset, or None."""
    deadline = time.time() + wait
    while time.time() < deadline:
        with open(path, errors="replace") as f:
            f.seek(offset)
            for line in f:
                m = JOINED.search(line)
                if m:
                    return m.group(1)
        time.sleep(0.1)
    return None


def main():
    binary = sys.argv[1]
    t = ringtest.Checks("restart_join")
    logdir = tempfile.mkdtemp(prefix="rnd-rejoin-")
    nodes = []
    try:
        ok, _ = ringtest.start_ring(binary, [f"rj-{i}" for i in range(1, 6)], logdir, nodes)
        t.check("the 5-node ring converged", ok)
        succ, _ = ringtest.expected(nodes)
        time.sleep(1.5)  # every node has saved its peers (once a second)
        for k, (victim, sig) in enumerate([(nodes[2], signal.SIGKILL), (nodes[4], signal.SIGTERM)]):
            victim.join = None  # the restart finds the ring through its saved peers
            victim.stop(sig)
            path = os.path.join(logdir, victim.name + ".log")
            offset = os.path.getsize(path)
            victim.start()
            line = first_join_line(path, offset)
            want = f"successor {succ[victim.addr]}"
            t.check(f"after {signal.Signals(sig).name} and a restart, the first join line names "
                    "the node after it", line == want, (line, want))
            t.check("... not the node itself", line and victim.addr not in line, line)
            ok, state = ringtest.converge(nodes)
            t.check(f"the ring is whole again after restart {k + 1}", ok, state)
    finally:
        ringtest.stop_all(nodes, t, logdir)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
