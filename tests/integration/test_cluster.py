#!/usr/bin/env python3
"""`ringnet cluster` and the client commands, as a user runs them."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import ringtest
from ringtest import Checks

BIN = sys.argv[1]
t = Checks("cluster")


def ports_free(base, n):
    for p in range(base, base + n):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def cli(*args, node):
    r = subprocess.run([BIN, *args, "--node", node], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.strip(), r.stderr


def cluster(base, tmp, *args):
    """`ringnet cluster` of 5 on ports from base, data under tmp."""
    return subprocess.Popen([BIN, "cluster", "--nodes", "5", "--base-http", str(base),
                             "--base-peer", str(base + 50), "--data", os.path.join(tmp, "d"),
                             *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(proc):
    """Ctrl-C, as a user stops the cluster: its exit status, or None if it hangs."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def main():
    random.seed(os.getpid())
    while True:
        base = random.randrange(20000, 40000, 100)
        if ports_free(base, 5) and ports_free(base + 50, 5):
            break
    with tempfile.TemporaryDirectory() as tmp:
        proc = cluster(base, tmp)
        try:
            lines = [proc.stdout.readline() for _ in range(6)]
            pids = {l.split()[0]: int(l.split()[-1]) for l in lines[1:] if "pid" in l}
            t.check("cluster prints 5 nodes", len(pids) == 5, lines)
            nodes = [f"http://127.0.0.1:{base + i}" for i in range(5)]
            time.sleep(3)  # let the ring settle

            # client commands and their exit codes
            rc, out, err = cli("put", "color", "blue", node=nodes[0])
            t.check("put exits 0", rc == 0 and out.startswith("stored color"), (rc, out, err))
            rc, out, err = cli("put", "n", '{"a": [1, 2]}', node=nodes[1])
            t.check("put JSON", rc == 0, (rc, out, err))
            for n in nodes:
                rc, out, _ = cli("get", "color", node=n)
                t.check(f"get via {n}", rc == 0 and out == "blue", (rc, out))
            rc, out, _ = cli("get", "n", node=nodes[4])
            t.check("JSON value comes back as JSON", rc == 0 and out == '{"a":[1,2]}', out)
            rc, out, err = cli("get", "nope", node=nodes[2])
            t.check("missing key exits 1", rc == 1 and "not found" in err, (rc, err))
            rc, out, err = cli("del", "n", node=nodes[3])
            t.check("del exits 0", rc == 0, (rc, err))
            rc, out, err = cli("get", "n", node=nodes[0])
            t.check("deleted key exits 1", rc == 1, (rc, err))
            rc, out, err = cli("get", node=nodes[0])
            t.check("usage error exits 2", rc == 2 and "usage:" in err, (rc, err))
            rc, out, err = cli("get", "x", node="http://127.0.0.1:1")
            t.check("unreachable node exits 3", rc == 3, (rc, err))
            rc, out, err = cli("peers", node=nodes[0])
            t.check("peers prints JSON", rc == 0 and '"peers"' in out, (rc, out))
            rc, out, err = cli("ring", node=nodes[0])
            t.check("ring prints JSON", rc == 0 and '"successors"' in out, (rc, out))

            # the supervisor restarts a node that dies, on its data
            for i in range(20):
                cli("put", f"k{i}", str(i), node=nodes[i % 5])
            os.kill(pids["node-3"], signal.SIGKILL)
            deadline, back = time.time() + 30, False
            while time.time() < deadline and not back:
                time.sleep(0.5)
                back = cli("get", "color", node=nodes[2])[0] == 0
            t.check("a killed node is started again and serves", back)
            deadline = time.time() + 30
            while time.time() < deadline:
                got = [cli("get", f"k{i}", node=nodes[(i + 2) % 5]) for i in range(20)]
                if all(g[0] == 0 and g[1] == str(i) for i, g in enumerate(got)):
                    break
                time.sleep(1)
            t.check("every key readable after the restart",
                    all(g[0] == 0 and g[1] == str(i) for i, g in enumerate(got)), got)
        finally:
            rc = interrupt(proc)
            t.check("Ctrl-C stops the cluster with exit 0", rc == 0, rc)
            # restarted nodes have new pids: look for anything still using our data dir
            left = subprocess.run(["pgrep", "-f", tmp], capture_output=True, text=True).stdout
            t.check("no node left running", not left.strip(), left)

        # `make run` a second time: the same cluster on the same data comes back whole,
        # with no --join telling the first node where a ring is
        if rc == 0:
            # ... started with the failure detector's flags, which reach every node
            proc = cluster(base, tmp, "--suspicion-ms", "1500", "--lifeguard", "1")
            try:
                deadline = time.time() + 40
                while time.time() < deadline:
                    time.sleep(1)
                    joined = [json.loads(cli("ring", node=n)[1] or "{}").get("successors")
                              for n in nodes]
                    got = [cli("get", f"k{i}", node=nodes[(i + 3) % 5]) for i in range(20)]
                    whole = all(joined) and all(g[0] == 0 and g[1] == str(i)
                                                for i, g in enumerate(got))
                    if whole:
                        break
                t.check("after a restart of the cluster every node is in the ring",
                        all(joined), joined)
                t.check("after a restart of the cluster every key is readable",
                        all(g[0] == 0 and g[1] == str(i) for i, g in enumerate(got)), got)
                timeouts = [ringtest.metrics(base + i).get(
                    "ringnet_member_suspicion_timeout_seconds") for i in range(5)]
                t.check("--suspicion-ms 1500 reached every node: a 3 s timeout (2 x, 5 nodes)",
                        timeouts == [3.0] * 5, timeouts)
                rc, out, err = cli("put", "after", "restart", node=nodes[4])
                t.check("writes work after the restart", rc == 0, (rc, out, err))
                t.check("and read back through another node",
                        cli("get", "after", node=nodes[1])[:2] == (0, "restart"))
            finally:
                rc = interrupt(proc)
                t.check("Ctrl-C stops the restarted cluster with exit 0", rc == 0, rc)

        # a port already taken: a clear message and exit 1, before anything starts
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
            s.bind(("127.0.0.1", base + 52))
            s.listen()
            r = subprocess.run([BIN, "cluster", "--nodes", "5", "--base-http", str(base),
                                "--base-peer", str(base + 50), "--data", os.path.join(tmp, "p")],
                               capture_output=True, text=True, timeout=30)
        t.check("a port in use is named and the cluster exits 1",
                r.returncode == 1 and f"port {base + 52}" in r.stderr and "in use" in r.stderr,
                (r.returncode, r.stderr[-300:]))

        # a node that cannot start (its data directory is a file) is not restarted forever
        os.makedirs(os.path.join(tmp, "q"))
        open(os.path.join(tmp, "q", "node-2"), "w").close()
        r = subprocess.run([BIN, "cluster", "--nodes", "3", "--base-http", str(base),
                            "--base-peer", str(base + 50), "--data", os.path.join(tmp, "q")],
                           capture_output=True, text=True, timeout=60)
        t.check("a node failing at every start makes the cluster give up with exit 1",
                r.returncode == 1 and "node-2 failed 5 times" in r.stderr
                and "Not a directory" in r.stderr, (r.returncode, r.stderr[-300:]))
        left = subprocess.run(["pgrep", "-f", tmp], capture_output=True, text=True).stdout
        t.check("and stops the others", not left.strip(), left)
    return t.finish()


sys.exit(main())
