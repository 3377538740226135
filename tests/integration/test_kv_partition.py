#!/usr/bin/env python3
"""A network partition, and its healing, with real nodes on two hosts.

Two network namespaces on one bridge play two hosts: a1-a3 on 10.78.X.1, b1-b2 on
10.78.X.2 (X from the process id), one ring of five (R = 3, W = 2). Keys are written; then the bridge isolates
the two hosts from each other (this test still reaches both). Each side goes on as a
ring of its own, and clients keep writing on both sides: their own keys, and keys that
both sides overwrite (the later write must win). After the partition heals, the two
rings must find each other (ring_probe) and become one again, and every key must read
the same from every node: its newest acknowledged value. Needs root (skipped, saying
so, without it)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from ringtest import Checks, sha1_hex

BIN = sys.argv[1]
t = Checks("kv_partition")
check = t.check
P = f"rnp{os.getpid() % 100000}"
BR, NS = f"{P}br", {"a": f"{P}-a", "b": f"{P}-b"}
NET = f"10.78.{os.getpid() % 250}"  # a subnet of this run's own: runs side by side do not meet
IP = {"a": f"{NET}.1", "b": f"{NET}.2"}


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def call(host, port, path, method="GET", body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}
    except OSError as e:
        return 0, {"error": str(e)}


class N:
    def __init__(self, name, side, k, logdir, join=None):
        self.name, self.side = name, side
        self.host, self.peer, self.http = IP[side], 7000 + k, 8000 + k
        self.addr = f"{self.host}:{self.peer}"
        self.id = sha1_hex(name)
        args = ["ip", "netns", "exec", NS[side], BIN, "node", "--id", name,
                "--listen", self.addr, "--http", f"{self.host}:{self.http}",
                "--data", f"{logdir}/d-{name}", "--api-token", "none",
                "--http-tls", "none"]
        if join:
            args += ["--join", join.addr]
        self.log = open(f"{logdir}/{name}.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path):
        return call(self.host, self.http, path)

    def put(self, key, value):
        """A write as `ringnet put` makes it: retried while the node says 503."""
        for _ in range(40):
            st, body = call(self.host, self.http, "/kv", "POST", {"key": key, "value": value})
            if st != 503:
                return st, body
            time.sleep(0.25)
        return st, body


def one_ring(nodes):
    """Every node's successor and predecessor are the true ones, for these nodes."""
    ring = sorted(nodes, key=lambda n: n.id)
    for i, n in enumerate(ring):
        st, r = n.get("/ring")
        if st != 200 or not r.get("successors"):
            return False
        if r["successors"][0]["addr"] != ring[(i + 1) % len(ring)].addr:
            return False
        if (r.get("predecessor") or {}).get("addr") != ring[i - 1].addr:
            return False
    return True


def wait(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


def setup():
    sh("ip", "link", "add", BR, "type", "bridge")
    sh("ip", "addr", "add", f"{NET}.254/24", "dev", BR)
    sh("ip", "link", "set", BR, "up")
    for side, ns in NS.items():
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{P}{side}0", "type", "veth", "peer", "name", f"{P}{side}1")
        sh("ip", "link", "set", f"{P}{side}1", "netns", ns)
        sh("ip", "link", "set", f"{P}{side}0", "master", BR)
        sh("ip", "link", "set", f"{P}{side}0", "up")
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", f"{IP[side]}/24", "dev", f"{P}{side}1"],
                    ["ip", "link", "set", f"{P}{side}1", "up"]):
            sh("ip", "netns", "exec", ns, *cmd)


def isolate(on):
    for side in NS:
        sh("bridge", "link", "set", "dev", f"{P}{side}0", "isolated", "on" if on else "off")


def teardown():
    for ns in NS.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", BR], capture_output=True)
    for side in NS:
        subprocess.run(["ip", "link", "del", f"{P}{side}0"], capture_output=True)


def main():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("bridge"):
        print("kv_partition: skipped: needs root and iproute2 to make network namespaces")
        return 0
    nodes = []
    with tempfile.TemporaryDirectory() as logdir:
        try:
            setup()
            a1 = N("a1", "a", 1, logdir)
            time.sleep(0.5)
            nodes = [a1] + [N(n, s, k, logdir, join=a1)
                            for n, s, k in (("a2", "a", 2), ("a3", "a", 3),
                                            ("b1", "b", 4), ("b2", "b", 5))]
            check("five nodes on two hosts form one ring", wait(lambda: one_ring(nodes), 60))
            truth = {}
            for i in range(120):
                st, _ = nodes[i % 5].put(f"k{i}", "before")
                check(f"k{i} written before the partition", st == 200, st)
                truth[f"k{i}"] = "before"

            isolate(True)
            side_a = [n for n in nodes if n.side == "a"]
            side_b = [n for n in nodes if n.side == "b"]
            check("side a becomes a ring of its own", wait(lambda: one_ring(side_a), 60))
            check("side b becomes a ring of its own", wait(lambda: one_ring(side_b), 60))
            # each side writes keys of its own, and the same conflict keys, b's later
            acked_a = acked_b = 0
            for i in range(40):
                st, _ = side_a[i % 3].put(f"k{i}", "from a")
                if st == 200:
                    truth[f"k{i}"] = "from a"
                    acked_a += 1
                st, _ = side_a[i % 3].put(f"both{i}", "a, earlier")
                if st == 200:
                    truth[f"both{i}"] = "a, earlier"
            time.sleep(0.05)
            for i in range(40, 80):
                st, _ = side_b[i % 2].put(f"k{i}", "from b")
                if st == 200:
                    truth[f"k{i}"] = "from b"
                    acked_b += 1
            for i in range(40):
                st, _ = side_b[i % 2].put(f"both{i}", "b, later")
                if st == 200:
                    truth[f"both{i}"] = "b, later"
            check("writes go on on side a during the partition", acked_a > 30, acked_a)
            check("writes go on on side b during the partition", acked_b > 30, acked_b)

            isolate(False)
            check("after healing, the two rings become one again",
                  wait(lambda: one_ring(nodes), 90))

            def all_agree():
                for key, want in truth.items():
                    for n in nodes:
                        st, body = n.get(f"/kv/{key}")
                        if st != 200 or body.get("value") != want:
                            return False
                return True

            check("every key reads its newest acknowledged value from every node",
                  wait(all_agree, 90))
            wrong = []
            for key, want in truth.items():
                for n in nodes:
                    st, body = n.get(f"/kv/{key}")
                    if st != 200 or body.get("value") != want:
                        wrong.append((key, n.name, st, body.get("value"), want))
            check("no key disagrees", not wrong, wrong[:10])
        finally:
            for n in nodes:
                n.proc.terminate()
            for n in nodes:
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
            teardown()
            if t.failures:
                for f in sorted(os.listdir(logdir)):
                    if f.endswith(".log"):
                        print(f"--- {f}\n" + open(f"{logdir}/{f}").read()[-2500:])
    return t.finish()


sys.exit(main())
