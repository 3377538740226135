#!/usr/bin/env python3
"""Real `ringnet node` processes on 127.0.0.1, checked as a user would: over HTTP.

The oracle: a node's ring id is SHA-1 of its --id, so the correct successor and
predecessor of every node follow from sorting the hashes of the live names."""
import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = sys.argv[1]
failures, passed = [], 0


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Node:
    def __init__(self, name, join=None, logdir="."):
        self.name, self.peer, self.http = name, free_port(), free_port()
        args = [BIN, "node", "--id", name, "--listen", f"127.0.0.1:{self.peer}",
                "--http", f"127.0.0.1:{self.http}"]
        if join:
            args += ["--join", f"127.0.0.1:{join.peer}"]
        self.log = open(f"{logdir}/{name}.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.addr = f"127.0.0.1:{self.peer}"
        self.id = hashlib.sha1(name.encode()).hexdigest()

    def wait_http(self):
        for _ in range(100):
            try:
                return get(self.http, "/health")
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} never served HTTP")


def expected(nodes):
    ring = sorted(nodes, key=lambda n: n.id)
    succ = {n.addr: ring[(i + 1) % len(ring)].addr for i, n in enumerate(ring)}
    pred = {n.addr: ring[i - 1].addr for i, n in enumerate(ring)}
    return succ, pred


def ring_state(nodes):
    state = {}
    for n in nodes:
        _, r = get(n.http, "/ring")
        state[n.addr] = ((r["successors"] or [{}])[0].get("addr") if r["successors"] else None,
                         (r["predecessor"] or {}).get("addr"))
    return state


def converge(nodes, timeout=40):
    succ, pred = expected(nodes)
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = ring_state(nodes)
        if all(state[a] == (succ[a], pred[a]) for a in succ):
            return True, state
        time.sleep(0.5)
    return False, state


def frame_garbage(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(5)
        try:
            return s.recv(1) == b""  # closed by the node
        except (ConnectionResetError, socket.timeout):
            return True


def main():
    random.seed(1)
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            first = Node("node-0", logdir=logdir)
            first.wait_http()
            nodes.append(first)
            for i in range(1, 5):  # each joins through a random node already there
                n = Node(f"node-{i}", join=random.choice(nodes), logdir=logdir)
                n.wait_http()
                nodes.append(n)
            ok, state = converge(nodes)
            check("5 nodes converge to the oracle's ring", ok, state)

            # garbage on the peer port closes that connection only
            victim = nodes[2]
            check("garbage frame closes the connection",
                  frame_garbage(victim.peer, b"\x00\x00\x00\x08\x01garbage!"))
            check("oversized frame closes the connection",
                  frame_garbage(victim.peer, b"\xff\xff\xff\xff\x01"))
            # /health is a snapshot refreshed every 100 ms
            for _ in range(40):
                status, health = get(victim.http, "/health")
                if health.get("bad_frames", 0) >= 2:
                    break
                time.sleep(0.05)
            check("node still serves and counts the bad frames",
                  status == 200 and health["bad_frames"] >= 2, health)
            ok, state = converge(nodes, timeout=10)
            check("ring intact after garbage", ok, state)

            # errors a person can act on
            status, body = get(victim.http, "/no-such-route")
            check("unknown route is 404 with a message", status == 404 and "error" in body, body)

            # a crashed node: the rest close the gap
            dead = nodes.pop(3)
            dead.proc.kill()
            dead.proc.wait()
            ok, state = converge(nodes, timeout=40)
            check("ring heals after kill -9", ok, state)

            # a node joining after the crash finds its place
            late = Node("node-late", join=nodes[0], logdir=logdir)
            late.wait_http()
            nodes.append(late)
            ok, state = converge(nodes, timeout=40)
            check("a late joiner is placed correctly", ok, state)

            # graceful stop: exit 0
            leaver = nodes.pop(1)
            leaver.proc.send_signal(signal.SIGTERM)
            check("SIGTERM exits 0", leaver.proc.wait(timeout=10) == 0)
            ok, state = converge(nodes, timeout=40)
            check("ring closes after a graceful leave", ok, state)
        finally:
            for n in nodes:
                if n.proc.poll() is None:
                    n.proc.send_signal(signal.SIGTERM)
            for n in nodes:
                try:
                    n.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
            if failures:
                for f in sorted(__import__("os").listdir(logdir)):
                    print(f"--- {f}")
                    print(open(f"{logdir}/{f}").read()[-2000:])

    # usage errors exit 2
    for args in (["node"], ["node", "--id", "x", "--listen", "nope", "--http", "127.0.0.1:1"],
                 ["node", "--id", "x", "--listen", "0.0.0.0:5", "--http", "127.0.0.1:1"],
                 ["node", "--bogus", "1"]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=10)
        check(f"usage {args}", r.returncode == 2 and "usage:" in r.stderr, r.stderr[:200])

    for f in failures:
        print("FAIL", f)
    print(f"ring_nodes: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


sys.exit(main())
