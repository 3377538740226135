#!/usr/bin/env python3
"""HTTP slowloris from one address must not starve the node's other HTTP clients.

The attacker, on 127.0.0.2, opens up to 2,000 connections to the node's HTTP port and
keeps each alive by trickling one header line every 5 s, never finishing a request.
Meanwhile a normal client on 127.0.0.1 asks for /health nine times; every one of those
requests must be answered. Bounded: the attack stops after at most 60 s."""
import resource
import socket
import sys
import tempfile
import threading
import time
import urllib.request

from ringtest import Checks, Node, metrics, stop_all

BIN = sys.argv[1]
t = Checks("http_slowloris")
check = t.check


def attacker(port, stop, held, n=2000, budget_s=60):
    socks, deadline = [], time.time() + budget_s
    for _ in range(n):
        if stop.is_set() or time.time() > deadline:
            break
        try:
            s = socket.socket()
            s.settimeout(2)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            s.close()
    held.append(len(socks))
    k = 0
    while not stop.is_set() and time.time() < deadline:
        alive = []
        for s in socks:
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % k)
                alive.append(s)
            except OSError:
                s.close()
        socks = alive
        k += 1
        stop.wait(5)
    for s in socks:
        s.close()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(8192, hard)), hard))
    with tempfile.TemporaryDirectory() as logdir:
        node, stop, held = None, threading.Event(), []
        try:
            node = Node(BIN, "a", logdir)
            th = threading.Thread(target=attacker, args=(node.http, stop, held))
            th.start()
            time.sleep(10)  # let the attacker open what it can
            answered, errors = 0, []
            for i in range(9):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/health",
                                                timeout=10) as r:
                        answered += r.status == 200
                except OSError as e:
                    errors.append(str(e))
                time.sleep(2)
            check("normal requests are answered during the slowloris", answered == 9,
                  f"{answered} of 9; {errors[:3]}")
            check("the node is alive", node.proc.poll() is None)
            stop.set()
            th.join(timeout=30)
            if node.proc.poll() is None:
                m = metrics(node.http)
                check("refused HTTP connections are counted",
                      m.get("ringnet_http_connections_refused_total", 0) >= 1, m)
        finally:
            stop.set()
            stop_all([node], t, logdir)
    return t.finish()


sys.exit(main())
