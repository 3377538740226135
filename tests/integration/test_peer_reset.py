#!/usr/bin/env python3
"""A peer that resets the connection while the node writes to it must not kill the node.

The stranger sends PINGs "from" the address of a listener of its own that accepts every
connection and resets it at once (SO_LINGER 0), so the node's PONGs go out on connections
that are reset under them. On a node that does not ignore SIGPIPE, a write to a reset
connection kills it. The node must survive, keep answering HTTP and keep its ring."""
import socket
import struct
import sys
import tempfile
import threading
import time

from ringtest import (RING_PING, Checks, Node, connect_from, converge, get, metrics,
                      ring_frame, start_ring, stop_all)

BIN = sys.argv[1]
t = Checks("peer_reset")
check = t.check


def resetting_listener(stop):
    """A listener on 127.0.0.1 that resets every connection it accepts; its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    srv.settimeout(0.2)

    def reset(c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    def run():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            # hold it a moment so the node is writing to it, then reset it
            threading.Timer(0.1, reset, (c,)).start()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def main():
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        stop = threading.Event()
        try:
            ok, state = start_ring(BIN, ["a", "b", "c"], logdir, nodes)
            check("3 nodes converge", ok, state)
            victim = nodes[1]
            fake = f"127.0.0.1:{resetting_listener(stop)}"
            # bounded: 300 bursts of 20 PINGs over at most ~20 s, each PING answered by
            # a PONG to the resetting listener; a burst arrives in one read, so its PONGs
            # are written back to back, and some land after the reset
            deadline = time.time() + 20
            sent = 0
            with connect_from("127.0.0.1", victim.peer) as s:
                for i in range(300):
                    if time.time() > deadline or victim.proc.poll() is not None:
                        break
                    try:
                        s.sendall(b"".join(ring_frame(RING_PING, fake, req=20 * i + k)
                                           for k in range(20)))
                    except OSError:
                        break
                    sent += 1
                    time.sleep(0.05)
            check("the stranger sent its PINGs", sent >= 100, sent)
            check("the node survives writes to reset connections",
                  victim.proc.poll() is None, f"exit status {victim.proc.poll()}")
            if victim.proc.poll() is None:
                status, health = get(victim.http, "/health")
                check("the node still answers HTTP", status == 200, health)
                m = metrics(victim.http)
                check("its failed sends are counted as undeliverable",
                      m.get("ringnet_peer_undeliverable_total", 0) >= 1, m)
                ok, state = converge(nodes, timeout=20)
                check("the ring is whole", ok, state)
        finally:
            stop.set()
            stop_all(nodes, t, logdir)
    return t.finish()


sys.exit(main())
