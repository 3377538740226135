#!/usr/bin/env python3
"""The link emulator on its own, between two namespaces: loss 100% delivers nothing, loss 0
delivers every frame, and whatever a lossy link delivers comes in order; two links in one
process are set apart by "@LINK" control lines; a --gso link carries a TCP stream intact in
bursts of several segments. Also the topology parser and the lower bound against answers
worked out by hand. No timing is asserted.

usage: test_linkemu.py LINKEMU     (exits 77, skipped, when not root or netns cannot be made)
"""
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "cast"))
import topo as topolib  # noqa: E402

SKIP = 77
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def sh(*a, check_rc=True):
    r = subprocess.run(a, capture_output=True, text=True)
    if check_rc and r.returncode:
        raise RuntimeError(f"{' '.join(a)}: {r.stderr.strip()}")
    return r


def test_bound():
    t = topolib.parse_topology("host src\nhost d1\nswitch s1\n"
                               "link src s1 100 10ms 100 0\nlink s1 d1 16 30ms 100 0\n")
    b = topolib.bound(t, 2_000_000)
    check(abs(b["cut_s"] - 16e6 / 16e6) < 1e-9, "cut bound: 16 Mbit over a 16 Mbit/s link is 1 s")
    check(abs(b["upload_s"] - 16e6 / 116e6) < 1e-9, "upload bound: one copy over 116 Mbit/s")
    check(abs(b["delay_s"] - 0.040) < 1e-9, "delay: 10 + 30 ms")
    check(abs(b["bound_s"] - 1.040) < 1e-9, "bound = max(cut, upload) + delay")
    # a star of 3 destinations behind a 10 Mbit/s source: the upload bound wins
    s = topolib.parse_topology("host src\nhost a\nhost b\nhost c\nswitch s\n"
                               "link src s 10 1ms 10 0\nlink s a 100 1ms 10 0\n"
                               "link s b 100 1ms 10 0\nlink s c 100 1ms 10 0\n")
    b = topolib.bound(s, 1_250_000)  # 10 Mbit
    check(abs(b["cut_s"] - 1.0) < 1e-9, "star: cut bound 10 Mbit / 10 Mbit/s")
    check(abs(b["upload_s"] - 30e6 / 310e6) < 1e-9, "star: upload bound 3 copies / 310 Mbit/s")
    # a trace halving the last hop after 0.5 s: 8 Mbit at 16 until 0.5 s, the rest at 8
    tr = topolib.parse_trace("500 link node1=d1 node2=s1 bw=8\n", t)
    b = topolib.bound(t, 2_000_000, tr)
    check(abs(b["cut_s"] - 1.5) < 1e-9, "trace: the cut bound integrates changing capacity")
    for bad in ("host a\nhost a\n", "host a\nhost b\nlink a c 1 1ms 1 0\n",
                "host a\nhost b\nlink a b 0 1ms 1 0\n", "host a\nhost b\nfoo\n"):
        try:
            topolib.parse_topology(bad)
            check(False, f"rejects {bad!r}")
        except topolib.TopologyError as e:
            check(":" in str(e), f"rejects {bad!r} with a line number: {e}")


class Pair:
    """Two namespaces joined by one linkemu link, with static neighbour entries (so that even
    a link that loses everything carries the test's datagrams to the emulator)."""

    def __init__(self, linkemu, tag, loss, rate=200, delay=1, queue=5000, extra=(), gso=False):
        self.a, self.b = f"rnb-{tag}-ea", f"rnb-{tag}-eb"
        self.more = [f"rnb-{tag}-e{x}" for x in "cd"] if extra else []
        for ns in (self.a, self.b, *self.more):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sh", "-c",
               "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
        link = ["--rate", str(rate), "--delay", str(delay), "--queue", str(queue)]
        cmd = [linkemu, "--seed", "7", "--a", f"{self.a}:rnb-ta", "--b", f"{self.b}:rnb-tb",
               *link, "--loss", str(loss), *(["--gso"] if gso else [])]
        if extra:  # a second link in the same process, between two more namespaces
            cmd += ["--a", f"{self.more[0]}:rnb-tc", "--b", f"{self.more[1]}:rnb-td", *link,
                    *extra]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.p.stdout.readline().strip() != "ready":
            raise RuntimeError("linkemu did not start")
        macs = {}
        for ns, dev, ip in ((self.a, "rnb-ta", "10.9.0.1"), (self.b, "rnb-tb", "10.9.0.2")):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            macs[ns] = json.loads(sh("ip", "-j", "-n", ns, "link", "show", dev).stdout)[0]["address"]
        sh("ip", "-n", self.a, "neigh", "replace", "10.9.0.2", "lladdr", macs[self.b], "dev", "rnb-ta")
        sh("ip", "-n", self.b, "neigh", "replace", "10.9.0.1", "lladdr", macs[self.a], "dev", "rnb-tb")

    def stats(self):
        self.p.stdin.write("stats\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        for ns in (self.a, self.b, *self.more):
            sh("ip", "netns", "del", ns, check_rc=False)


RECV = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("10.9.0.2", 9100))
s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
got = []
try:
    while True:
        got.append(int(s.recv(2048)[:8]))
        if got[-1] == -1:
            break
except socket.timeout:
    pass
print(" ".join(map(str, got)), flush=True)
"""

SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(sys.argv[1])
for i in range(n):
    s.sendto(b"%08d" % i + b"x" * 1000, ("10.9.0.2", 9100))
    if i % 50 == 49:
        time.sleep(0.005)  # stay inside the tap's own queue; the emulator's is what is tested
"""


TCP_RECV = r"""
import hashlib, socket
s = socket.socket()
s.bind(("10.9.0.2", 9101))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
h = hashlib.sha256()
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
print(h.hexdigest(), flush=True)
"""

TCP_SEND = r"""
import hashlib, os, socket
data = os.urandom(4 << 20)
s = socket.create_connection(("10.9.0.2", 9101))
s.sendall(data)
s.close()
print(hashlib.sha256(data).hexdigest())
"""


def send_and_receive(pair, n, wait_s):
    r = subprocess.Popen(["ip", "netns", "exec", pair.b, sys.executable, "-c", RECV, str(wait_s)],
                         stdout=subprocess.PIPE, text=True)
    assert r.stdout.readline().strip() == "ready"
    sh("ip", "netns", "exec", pair.a, sys.executable, "-c", SEND, str(n))
    out, _ = r.communicate(timeout=120)
    return [int(x) for x in out.split()]


def test_links(linkemu):
    tag = f"{os.getpid() % 65536:04x}"
    n = 1000
    pair = Pair(linkemu, tag, loss=0)
    try:
        got = send_and_receive(pair, n, 3.0)
        st = pair.stats()
        check(got == list(range(n)), f"loss 0: all {n} datagrams arrive, in order (got {len(got)})")
        check(st["a2b"]["lost"] == 0 and st["a2b"]["queue_drop"] == 0,
              "loss 0: the emulator dropped nothing")
        check(st["a2b"]["frames_out"] == st["a2b"]["frames_in"] >= n,
              "loss 0: every frame read was written")
    finally:
        pair.close()
    pair = Pair(linkemu, tag, loss=100)
    try:
        got = send_and_receive(pair, 300, 1.5)
        st = pair.stats()
        check(got == [], f"loss 100%: nothing arrives (got {len(got)})")
        check(st["a2b"]["frames_out"] == 0 and st["a2b"]["lost"] >= 300,
              f"loss 100%: the emulator counts every frame lost ({st['a2b']['lost']})")
    finally:
        pair.close()
    pair = Pair(linkemu, tag, loss=30)
    try:
        got = send_and_receive(pair, n, 3.0)
        st = pair.stats()
        check(0 < len(got) < n and got == sorted(set(got)),
              f"loss 30%: some arrive ({len(got)} of {n}), each once, in order")
        check(st["a2b"]["lost"] > 0 and st["a2b"]["frames_out"] + st["a2b"]["lost"] ==
              st["a2b"]["frames_in"], "loss 30%: frames in = frames out + lost")
        pair.p.stdin.write("loss=0\n")  # a trace line: the link heals
        pair.p.stdin.flush()
        got = send_and_receive(pair, 200, 2.0)
        check(got == list(range(200)), f"after 'loss=0' on stdin every datagram arrives ({len(got)})")
    finally:
        pair.close()
    # two links in one process: "@1 loss=100" silences the second one only
    pair = Pair(linkemu, tag, loss=0, extra=["--loss", "0"])
    try:
        pair.p.stdin.write("@1 loss=100\n")
        pair.p.stdin.flush()
        got = send_and_receive(pair, 200, 2.0)
        st = pair.stats()
        check(got == list(range(200)), f"two links: link 0 still delivers all ({len(got)})")
        check(len(st["links"]) == 2 and st["links"][1]["a2b"]["frames_out"] == 0,
              "two links: the stats list both, and link 1 was not used")
        other = Pair.__new__(Pair)  # the second link's namespaces, seen as a pair
        other.a, other.b = pair.more
        sh("ip", "-n", other.a, "addr", "add", "10.9.0.1/24", "dev", "rnb-tc")
        sh("ip", "-n", other.b, "addr", "add", "10.9.0.2/24", "dev", "rnb-td")
        for ns, dev in ((other.a, "rnb-tc"), (other.b, "rnb-td")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", other.a, "neigh", "replace", "10.9.0.2", "lladdr", "02:00:00:00:00:02",
           "dev", "rnb-tc")
        got = send_and_receive(other, 100, 1.5)
        st = pair.stats()
        check(got == [] and st["links"][1]["a2b"]["lost"] >= 100,
              f"two links: after '@1 loss=100' link 1 delivers nothing (got {len(got)})")
    finally:
        pair.close()
    # a --gso link: a TCP stream crosses it intact, in bursts of more than one segment
    pair = Pair(linkemu, tag, loss=0, rate=100, delay=2, queue=200, gso=True)
    try:
        r = subprocess.Popen(["ip", "netns", "exec", pair.b, sys.executable, "-c", TCP_RECV],
                             stdout=subprocess.PIPE, text=True)
        assert r.stdout.readline().strip() == "ready"
        sent = sh("ip", "netns", "exec", pair.a, sys.executable, "-c", TCP_SEND).stdout.strip()
        out, _ = r.communicate(timeout=60)
        st = pair.stats()["a2b"]
        check(out.strip() == sent and len(sent) == 64, "--gso: 4 MiB over TCP arrive intact")
        check(st["packets_out"] > st["frames_out"] > 0,
              f"--gso: {st['frames_out']} frames carried {st['packets_out']} segments")
    finally:
        pair.close()
    r = subprocess.run([linkemu, "--a", "x:y"], capture_output=True, text=True)
    check(r.returncode == 2 and "usage" in r.stderr, "bad arguments: exit 2 with usage")


def main():
    test_bound()
    if os.geteuid() != 0:
        print("SKIP: the emulator tests need root (network namespaces); the bound tests ran")
        return SKIP if not failures else 1
    probe = f"rnb-{os.getpid() % 65536:04x}-probe"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode:
        print("SKIP: cannot make a network namespace here; the bound tests ran")
        return SKIP if not failures else 1
    sh("ip", "netns", "del", probe)
    test_links(sys.argv[1])
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
