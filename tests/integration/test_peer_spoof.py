#!/usr/bin/env python3
"""A frame's claimed sender must match the connection it came on.

Three nodes without a cluster key (the open case). A stranger on another host
(127.0.0.5) sends a node LEAVE and NOTIFY frames that claim to come from its real
predecessor, which listens on 127.0.0.1: each closes the connection, is counted as
spoofed, and none reaches the ring core (its LEAVE and NOTIFY counters do not move; the
ring stays as it was). The same kind of frame (a PING) claiming the same sender from the
sender's own host is taken, which shows the frames fail for their origin alone.

The query service's frames (WIRE_QUERY) too: a query leader whose one neighbour never
started marks it failed; a heartbeat "from" that neighbour sent out of another host
closes the connection, is counted as spoofed and leaves it failed; the same heartbeat
from the neighbour's own host brings it back up."""
import json
import os
import subprocess
import sys
import tempfile
import time

from ringtest import (closed, RING_PING, Checks, connect_from, converge, free_port, get, metrics,
                      ring_frame, start_ring, stop_all)

BIN = sys.argv[1]
t = Checks("peer_spoof")
check = t.check
RING_NOTIFY, RING_LEAVE = 5, 8


def counter(node, name):
    return metrics(node.http).get(name, 0)


def query_heartbeat(sender, to, from_proc=1, to_proc=0):
    """A whole WIRE_QUERY frame: a heartbeat (type 3) from process from_proc to to_proc."""
    body = bytes([3, from_proc, to_proc]) + (0).to_bytes(8, "big")
    return (len(body) + 1).to_bytes(4, "big") + b"\x05" + body


def neighbour_state(http):
    try:
        _, s = get(http, "/query/status")
    except OSError:  # not listening yet
        return {}
    return (s or {}).get("neighbors", {}).get("B", {})


def query_spoof(logdir):
    """A leader A whose neighbour B (127.0.0.1) is configured but never started."""
    os.makedirs(f"{logdir}/qdata/data", exist_ok=True)
    a_peer, a_http, b_peer = free_port(), free_port(), free_port()
    cfg = {"strategies": {"fairness_strategy": "strict"},
           "heartbeat": {"interval_ms": 200, "timeout_ms": 600, "call_timeout_ms": 1000},
           "data": {"dir": f"{logdir}/qdata", "teams": {"t": ["20200810", "20200811"]}},
           "processes": {
               "A": {"id": "A", "role": "leader", "team": "t", "host": "127.0.0.1",
                     "port": a_peer, "http_port": a_http, "neighbors": ["B"]},
               "B": {"id": "B", "role": "worker", "team": "t", "host": "127.0.0.1",
                     "port": b_peer, "http_port": free_port()}}}
    with open(f"{logdir}/cluster.json", "w") as f:
        json.dump(cfg, f)
    log = open(f"{logdir}/query-A.log", "w")
    p = subprocess.Popen([sys.argv[1], "node", "--config", f"{logdir}/cluster.json", "--id",
                          "A", "--data", f"{logdir}/ring-A"], stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        state = {}
        for _ in range(200):
            state = neighbour_state(a_http) if p.poll() is None else {}
            if state.get("state") == "failed":
                break
            time.sleep(0.05)
        check("the query leader marks its neighbour that never started failed",
              state.get("state") == "failed", (p.poll(), state))
        spoofed = metrics(a_http).get("ringnet_peer_spoofed_frames_total", 0)
        s = connect_from("127.0.0.5", a_peer)
        s.sendall(query_heartbeat(a_peer, b_peer))
        check("a query heartbeat claiming B from another host closes the connection",
              closed(s))
        s.close()
        for _ in range(50):  # /metrics is a snapshot taken every 100 ms
            now = metrics(a_http).get("ringnet_peer_spoofed_frames_total", 0)
            if now != spoofed:
                break
            time.sleep(0.1)
        check("... is counted as spoofed", now == spoofed + 1, (spoofed, now))
        state = neighbour_state(a_http)
        check("... and B stays failed", state.get("state") == "failed"
              and state.get("recoveries") == 0, state)
        with connect_from("127.0.0.1", a_peer) as s:  # the control: B's own host
            s.sendall(query_heartbeat(a_peer, b_peer))
            for _ in range(50):
                state = neighbour_state(a_http)
                if state.get("recoveries"):
                    break
                time.sleep(0.1)
        check("the same heartbeat from B's host brings B up", state.get("recoveries") == 1,
              state)
    finally:
        p.terminate()
        p.wait(timeout=15)


def main():
    with tempfile.TemporaryDirectory() as logdir:
        try:
            query_spoof(logdir)
        except Exception as e:  # a failure here must not hide the ring's checks
            check("the query spoof case ran", False, repr(e))
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
