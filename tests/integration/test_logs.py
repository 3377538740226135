"""Log lines as a person running `ringnet cluster` reads them: every line whole and
key=value (ts, level, node, msg) even with five nodes writing at once at debug level; a
node killed with -9 and restarted by the cluster says which peer is its successor, never
itself; leaving names where the keys go, never "nobody".

usage: test_logs.py RINGNET_BINARY"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import ringtest

LINE = re.compile(r'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(error|warn|info|debug) '
                  r'node=node-\d+ msg="([^"\\]|\\.)*"$')
CLUSTER = re.compile(r"^(ringnet cluster: |  node-\d+ +http://|try: curl |dashboard: http://)")


def main():
    binary = sys.argv[1]
    t = ringtest.Checks("logs")
    tmp = tempfile.mkdtemp(prefix="rnd-logs-")
    base = ringtest.free_port_range(10)
    proc = subprocess.Popen([binary, "cluster", "--nodes", "5", "--base-http", str(base),
                             "--base-peer", str(base + 5), "--data", tmp, "--log-level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []

    def read():
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        ok = False
        for _ in range(100):
            try:
                _, r = ringtest.get(base, "/ring")
                ok = len(r.get("successors") or []) >= 4
            except OSError:
                pass
            if ok:
                break
            time.sleep(0.2)
        t.check("the cluster's ring formed", ok)
        for k in range(30):  # traffic, so that the nodes log at once
            ringtest.request(base + k % 5, "/kv", "POST", {"key": f"log-{k}", "value": k})
        # kill -9 node-3; the cluster starts it again on the same data and address
        listed = [ln for ln in lines if ln.startswith("  node-3 ")]
        pid = int(listed[0].split()[-1]) if listed else None
        t.check("node-3 found", pid)
        if pid:
            os.kill(pid, signal.SIGKILL)
        time.sleep(6)  # restarted, rejoined, stabilized
        for k in range(30):
            ringtest.request(base + k % 5, "/kv", "POST", {"key": f"log2-{k}", "value": k})
    finally:
        ringtest.stop_process(proc)
        reader.join()
    bad = [ln for ln in lines if not (LINE.match(ln) or CLUSTER.match(ln))]
    t.check("every line is whole: key=value from a node, or the cluster's own", not bad, bad[:5])
    t.check("the cluster names the dashboard's address",
            f"dashboard: http://127.0.0.1:{base}/ (any node serves one)" in lines, lines[:12])
    t.check("debug lines came from several nodes",
            len({ln.split()[2] for ln in lines if LINE.match(ln)}) == 5, len(lines))
    me = f"127.0.0.1:{base + 7}"
    node3 = [ln for ln in lines if "node=node-3 " in ln]
    starts = [i for i, ln in enumerate(node3) if "peers saved by an earlier run" in ln]
    t.check("node-3 was restarted on its data", starts, node3[-10:])
    joins = [ln for ln in node3[starts[0]:] if "joined the ring" in ln] if starts else []
    t.check("... and rejoined", joins, node3[-10:])
    t.check("... naming a successor other than itself, or saying it is not known yet",
            joins and all(me not in ln for ln in joins), joins)
    leaves = [ln for ln in lines if "leaving" in ln and "signal 15" in ln]
    t.check("every node logged its leave", len(leaves) == 5, leaves)
    t.check("... saying where the records stay, never 'nobody'",
            all("records stay in" in ln and "nobody" not in ln for ln in leaves), leaves[:2])
    if t.failures:
        print("\n".join(lines[-60:]))
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
