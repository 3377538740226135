#!/usr/bin/env python3
"""Time from kill -9 of a node to every key being on R = 3 live nodes again, for a local
ring of N nodes holding K keys, beside its bound measured in the same run: the time the
ring takes to notice (the dead node's predecessor drops it when a connect is refused,
and its next stabilize round follows within 1 s) plus the time to copy the records the
dead node held over loopback TCP in one stream (measured here with the same bytes).

    python3 bench/kv_repair.py BIN NODES KEYS [RUNS]

Prints one markdown row: nodes, keys, repair time (median of RUNS kills), the bound, and
the ratio. Loopback only; every loop is bounded."""
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BIN, NODES, KEYS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from ringtest import Node, converge  # noqa: E402


def metric(node, name):
    c = http.client.HTTPConnection("127.0.0.1", node.http, timeout=5)
    try:
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
    except OSError:
        return None
    finally:
        c.close()
    return 0


def values(nodes):
    total = 0
    for n in nodes:
        s, t = metric(n, "ringnet_keys_stored"), metric(n, "ringnet_tombstones_stored")
        if s is None or t is None:
            return None
        total += s - t
    return total


def load(nodes, keys):
    def worker(part):
        conns = {}
        for k in part:
            n = random.choice(nodes)
            c = conns.get(n.http) or http.client.HTTPConnection("127.0.0.1", n.http, timeout=20)
            conns[n.http] = c
            for _ in range(50):
                try:
                    c.request("POST", "/kv", body=json.dumps({"key": k, "value": "v" * 100}),
                              headers={"Content-Type": "application/json",
                                       "Idempotency-Key": k})
                    r = c.getresponse()
                    r.read()
                    if r.status == 200:
                        break
                except (OSError, http.client.HTTPException):
                    c.close()
                    c = conns[n.http] = http.client.HTTPConnection("127.0.0.1", n.http, timeout=20)
                time.sleep(0.1)
    th = [threading.Thread(target=worker, args=(keys[i::16],)) for i in range(16)]
    [t.start() for t in th]
    [t.join() for t in th]


def copy_time(nbytes):
    """One TCP stream over loopback carrying nbytes, in seconds."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = [0]

    def sink():
        c, _ = srv.accept()
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            got[0] += len(b)
        c.close()
    t = threading.Thread(target=sink)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    chunk = b"x" * (1 << 20)
    t0 = time.time()
    left = nbytes
    while left > 0:
        s.sendall(chunk[:min(left, len(chunk))])
        left -= min(left, len(chunk))
    s.close()
    t.join()
    srv.close()
    return time.time() - t0


def main():
    random.seed(1)
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            nodes.append(Node(BIN, "rp-0", logdir, data=None))
            for i in range(1, NODES):
                nodes.append(Node(BIN, f"rp-{i}", logdir, join=nodes[0]))
            ok, _ = converge(nodes, timeout=120)
            if not ok:
                print("kv_repair: the ring did not converge", file=sys.stderr)
                return 1
            time.sleep(6)
            keys = [f"rk-{i}" for i in range(KEYS)]
            t0 = time.time()
            load(nodes, keys)
            print(f"kv_repair: loaded {KEYS} keys in {time.time() - t0:.1f} s", file=sys.stderr)
            deadline = time.time() + 120
            while values(nodes) != 3 * KEYS and time.time() < deadline:
                time.sleep(0.5)
            repairs, bounds = [], []
            for run in range(RUNS):
                victim = nodes[1 + run % (len(nodes) - 1)]
                held = metric(victim, "ringnet_keys_stored")
                live = [n for n in nodes if n is not victim]
                record = 11 + 100 + 22  # key, value, header at rest
                bound = 1.0 + copy_time(held * record)
                t0 = time.time()
                victim.proc.kill()
                victim.proc.wait()
                took = None
                while time.time() - t0 < 300:
                    if values(live) == 3 * KEYS:
                        took = time.time() - t0
                        break
                    time.sleep(0.1)
                repairs.append(took if took is not None else float("inf"))
                bounds.append(bound)
                print(f"kv_repair: kill {victim.name} ({held} records): {took} s, bound {bound:.2f} s",
                      file=sys.stderr)
                # bring it back and let the ring and the copies settle for the next run
                victim.join = None
                victim.start()
                converge(nodes, timeout=120)
                deadline = time.time() + 180
                while values(nodes) != 3 * KEYS and time.time() < deadline:
                    time.sleep(0.5)
            r, b = statistics.median(repairs), statistics.median(bounds)
            print(f"| {NODES} nodes, {KEYS:,} keys | {r:.1f} s | {b:.2f} s | {r / b:.1f} |")
        finally:
            for n in nodes:
                n.stop()
    return 0


sys.exit(main())
