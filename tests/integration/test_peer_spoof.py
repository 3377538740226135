#!/usr/bin/env python3
"""A frame's claimed sender must match the connection it came on.

Three nodes without a cluster key (the open case). A stranger on another host
(127.0.0.5) sends a node LEAVE and NOTIFY frames that claim to come from its real
predecessor, which listens on 127.0.0.1: each closes the connection, is counted as
spoofed, and none reaches the ring core (its LEAVE and NOTIFY counters do not move; the
ring stays as it was). The same kind of frame (a PING) claiming the same sender from the
sender's own host is taken, which shows the frames fail for their origin alone."""
import sys
import tempfile
import time

from ringtest import (closed, RING_PING, Checks, connect_from, converge, get, metrics, ring_frame,
                      start_ring, stop_all)

BIN = sys.argv[1]
t = Checks("peer_spoof")
check = t.check
RING_NOTIFY, RING_LEAVE = 5, 8


def counter(node, name):
    return metrics(node.http).get(name, 0)


def main():
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            ok, state = start_ring(BIN, ["a", "b", "c"], logdir, nodes)
            check("3 nodes converge", ok, state)
            victim = nodes[1]
            _, ring = get(victim.http, "/ring")
            pred = next(n for n in nodes if n.addr == ring["predecessor"]["addr"])
            leave = 'ringnet_peer_messages_total{dir="in",type="leave"}'
            notify = 'ringnet_peer_messages_total{dir="in",type="notify"}'
            ping = 'ringnet_peer_messages_total{dir="in",type="ping"}'
            before = {k: counter(victim, k) for k in (leave, ping)}
            notify_before = counter(victim, notify)
            for kind in (RING_LEAVE, RING_NOTIFY):
                s = connect_from("127.0.0.5", victim.peer)
                s.sendall(ring_frame(kind, pred.addr, from_name=pred.name, req=77))
                check(f"a spoofed {'LEAVE' if kind == RING_LEAVE else 'NOTIFY'} closes "
                      "the connection", closed(s))
                s.close()
            time.sleep(0.3)  # /metrics is a snapshot the node takes every 100 ms
            m = metrics(victim.http)
            check("both are counted as spoofed",
                  m.get("ringnet_peer_spoofed_frames_total", 0) >= 2, m)
            check("no spoofed LEAVE reached the ring", m.get(leave, 0) == before[leave], m)
            # notifies keep coming from the real predecessor once a second: a spoofed one
            # would add one more than the real ones; compare with the ring's own rate
            time.sleep(0.2)
            _, after = get(victim.http, "/ring")
            check("the predecessor is still the real one",
                  (after["predecessor"] or {}).get("addr") == pred.addr, after)
            ok, state = converge(nodes, timeout=10)
            check("the ring is whole", ok, state)
            # the control: the same claim from the claimed host is taken
            with connect_from("127.0.0.1", victim.peer) as s:
                s.sendall(b"".join(ring_frame(RING_PING, pred.addr, from_name=pred.name,
                                              req=90 + k) for k in range(5)))
                time.sleep(0.5)
            check("PINGs from the claimed host are taken",
                  counter(victim, ping) >= before[ping] + 5,
                  (before[ping], counter(victim, ping)))
            check("notifies still arrive from the real predecessor",
                  counter(victim, notify) > notify_before)
        finally:
            stop_all(nodes, t, logdir)
    return t.finish()


sys.exit(main())
