#!/usr/bin/env python3
"""The address book: a stranger who names thousands of made-up peers must not fill it
for good, and one address written several ways is one entry.

Three nodes; the stranger sends 6,000 PINGs, each "from" another made-up address
(127.0.0.99, where nothing listens, so the node's PONGs are refused at once). Then a
fourth node joins through the flooded node: it can only if the book made room for it."""
import sys
import tempfile
import time

from ringtest import (RING_PING, Checks, Node, connect_from, converge, get, metrics,
                      ring_frame, start_ring, stop_all)

BIN = sys.argv[1]
t = Checks("peer_book")
check = t.check


def send_pings(port, addrs, src="127.0.0.1", budget_s=60):
    """PINGs from each of addrs, 100 to a write, on a new connection from src (the host the
    addresses claim, or the node refuses them) whenever the node closes one (it does when
    it cannot learn an address); how many were written."""
    sent, deadline, s = 0, time.time() + budget_s, None
    for i in range(0, len(addrs), 100):
        if time.time() > deadline:
            break
        batch = addrs[i:i + 100]
        try:
            s = s or connect_from(src, port, timeout=10)
            s.sendall(b"".join(ring_frame(RING_PING, a, req=i + k) for k, a in enumerate(batch)))
            sent += len(batch)
        except OSError:
            if s:
                s.close()
            s = None
        time.sleep(0.01)  # a bounded pace, so the node answers as it goes
    if s:
        s.close()
    return sent


def main():
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            ok, state = start_ring(BIN, ["a", "b", "c"], logdir, nodes)
            check("3 nodes converge", ok, state)
            victim = nodes[1]

            # one address, written four ways, is one entry of the book
            port = 7  # nothing listens on 127.0.0.1:7
            send_pings(victim.peer, [f"127.0.0.1:{port}", f"localhost:{port}",
                                     f"127.0.0.1:0{port}", f"127.0.0.1:+{port}"])
            time.sleep(0.5)
            _, peers = get(victim.http, "/peers")
            same = [p for p in peers["peers"] if p["addr"] == f"127.0.0.1:{port}"]
            check("an address is compared in its canonical form", len(same) == 1,
                  [p["addr"] for p in peers["peers"]])

            # thousands of made-up peers
            fakes = [f"127.0.0.99:{p}" for p in range(20000, 26000)]
            sent = send_pings(victim.peer, fakes, src="127.0.0.99")
            check("the stranger named 6,000 peers", sent == len(fakes), sent)
            time.sleep(1)
            check("the flooded node is alive", victim.proc.poll() is None)
            status, _ = get(victim.http, "/health")
            check("the flooded node answers HTTP", status == 200)
            _, peers = get(victim.http, "/peers")
            check("the book stays within its bound", len(peers["peers"]) < 4096,
                  len(peers["peers"]))

            nodes.append(Node(BIN, "d", logdir, join=victim))
            ok, state = converge(nodes, timeout=40)
            check("a new node joins through the flooded node", ok, state)
            m = metrics(victim.http)
            check("forgotten addresses are counted",
                  m.get('ringnet_limit_hits_total{limit="book_evicted"}', 0) >= 1, m)
        finally:
            stop_all(nodes, t, logdir)
    return t.finish()


sys.exit(main())
