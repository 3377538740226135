#!/usr/bin/env python3
"""What a stranger on the peer port can make a node hold, and that the ring survives it.

Five nodes on 127.0.0.1; the stranger plays other hosts from other loopback addresses
(127.0.0.2 and up: the whole 127/8 reaches the node's listener on 127.0.0.1).
  1. idle floods: 1,100 connections from one address, then 1,200 from 20 more; while
     they are held a new node joins through the flooded node and the ring converges
  2. partial frames: 10 connections and then 900 more each send a header announcing
     1 MiB and 200 KiB of body; the first 10 (within the node's budget) are held until
     their frame is overdue and then closed, the node's RSS stays bounded, and HTTP and
     the ring go on
  3. idle connections are closed after the idle timeout
Every load loop is bounded in count and time."""
import os
import resource
import socket
import sys
import tempfile
import time

from ringtest import (Checks, Node, connect_from, converge, get, metrics, rss_kb,
                      start_ring, stop_all)

BIN = sys.argv[1]
t = Checks("peer_flood")
check = t.check


def open_many(src_ips, per_ip, port, budget_s=30):
    """Connections to 127.0.0.1:port, per_ip from each source address; stops early
    after budget_s. The node may close some of them at once: they are kept anyway."""
    socks, deadline = [], time.time() + budget_s
    for ip in src_ips:
        for _ in range(per_ip):
            if time.time() > deadline:
                return socks
            try:
                socks.append(connect_from(ip, port))
            except OSError:
                pass
    return socks


def closed_by_peer(s, wait):
    """True when the other side closed s within wait seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, OSError):
        return False
    finally:
        s.settimeout(5)


def metric_soon(port, name, pred, wait=5):
    """The node's metrics once name satisfies pred (they are a snapshot of the last
    100 ms), or as they are after wait seconds."""
    deadline = time.time() + wait
    while True:
        m = metrics(port)
        if pred(m.get(name, 0)) or time.time() > deadline:
            return m
        time.sleep(0.2)


def close_all(socks):
    for s in socks:
        s.close()
    socks.clear()


def main():
    # The sanitizer build keeps freed memory in a quarantine (256 MB by default) that
    # would count as the node's RSS: what is measured here is the node, not that.
    os.environ["ASAN_OPTIONS"] = ":".join(
        filter(None, [os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=1"]))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(8192, hard)), hard))
    with tempfile.TemporaryDirectory() as logdir:
        nodes, flood = [], []
        try:
            ok, state = start_ring(BIN, [f"node-{i}" for i in range(5)], logdir, nodes)
            check("5 nodes converge", ok, state)
            victim = nodes[2]

            # 1. idle floods, from one address and then from many
            flood += open_many(["127.0.0.2"], 1100, victim.peer)
            m = metric_soon(victim.http, 'ringnet_limit_hits_total{limit="in_per_address"}',
                            lambda v: v >= 1100 - 128)
            check("one address gets at most its share of the incoming slots",
                  m.get('ringnet_limit_hits_total{limit="in_per_address"}', 0) >= 1100 - 128, m)
            flood += open_many([f"127.0.0.{k}" for k in range(10, 30)], 60, victim.peer)
            time.sleep(1)
            m = metrics(victim.http)
            check("incoming connections stay bounded",
                  m.get('ringnet_peer_connections{dir="in"}', 1e9) <= 1024, m)
            status, _ = get(victim.http, "/health")
            check("the flooded node answers HTTP", status == 200)
            nodes.append(Node(BIN, "node-late", logdir, join=victim))
            ok, state = converge(nodes, timeout=40)
            check("a node joins through the flooded node while the flood holds", ok, state)
            close_all(flood)

            # 3 (started now, checked at the end): idle connections time out
            idle = open_many(["127.0.0.3"], 20, victim.peer)
            idle_since = time.time()

            # 2. partial frames: a header announcing 1 MiB, then 200 KiB of body. First a
            # few, within the node's budget for partial frames (4 MiB), checked at once: they
            # must be held until their frame is overdue (5 s). Then the flood, which on a
            # busy machine takes longer than those 5 s, so it cannot show what is held.
            base_rss = rss_kb(victim.proc.pid)
            header = (1 << 20).to_bytes(4, "big") + b"\x01"
            chunk = b"\x00" * (200 * 1024)
            probes = []
            for _ in range(10):
                try:
                    s = connect_from("127.0.0.39", victim.peer)
                    s.sendall(header)
                    s.settimeout(0.5)
                    s.sendall(chunk)
                except OSError:
                    continue
                probes.append(s)
            time.sleep(1)
            held = [s for s in probes if not closed_by_peer(s, 0.01)]
            check("the node keeps partial frames within its budget",
                  len(held) == 10, f"{len(held)} of 10 held, {len(probes)} sent")
            flood += probes
            deadline = time.time() + 60
            for ip in [f"127.0.0.{k}" for k in range(40, 49)]:
                for _ in range(100):
                    if time.time() > deadline:
                        break
                    try:
                        s = connect_from(ip, victim.peer)
                        s.sendall(header)
                        s.settimeout(0.5)
                        s.sendall(chunk)
                    except OSError:
                        continue  # closed by the node, or its buffers are full
                    flood.append(s)
            time.sleep(1)
            grown = rss_kb(victim.proc.pid) - base_rss
            print(f"RSS {base_rss} kB before the partial frames, grown by {grown} kB")
            m = metrics(victim.http)
            check("partial frames do not grow the node's memory past its bounds",
                  grown < 64 * 1024, f"RSS grew by {grown} kB; {m}")
            check("held partial frames are bounded",
                  m.get("ringnet_peer_buffered_bytes", 1e12) <= 8 << 20, m)
            status, _ = get(victim.http, "/health")
            check("the node answers HTTP under partial frames", status == 200)
            ok, state = converge(nodes, timeout=20)
            check("the ring is whole under partial frames", ok, state)
            # overdue frames are closed: the probes the node kept must see EOF within a
            # generous wait
            check("a connection whose frame is overdue is closed",
                  held and all(closed_by_peer(s, 20) for s in held))
            m = metric_soon(victim.http, 'ringnet_limit_hits_total{limit="frame_read_timeout"}',
                            lambda v: v >= len(held))
            check("overdue frames are counted",
                  m.get('ringnet_limit_hits_total{limit="frame_read_timeout"}', 0) >= len(held), m)
            m = metric_soon(victim.http, "ringnet_peer_buffered_bytes", lambda v: v == 0)
            check("the buffers are given back",
                  m.get("ringnet_peer_buffered_bytes", 1e12) == 0, m)
            close_all(flood)

            # 3. the idle connections, opened before the partial frames
            wait = max(1, idle_since + 90 - time.time())
            check("an idle incoming connection is closed",
                  idle and closed_by_peer(idle[0], wait))
            check("all idle ones are", all(closed_by_peer(s, 2) for s in idle))
            m = metric_soon(victim.http, 'ringnet_limit_hits_total{limit="in_idle_timeout"}',
                            lambda v: v >= len(idle))
            check("idle closes are counted",
                  m.get('ringnet_limit_hits_total{limit="in_idle_timeout"}', 0) >= len(idle), m)
            close_all(idle)
            ok, state = converge(nodes, timeout=20)
            check("the ring is whole at the end", ok, state)
            check("every node is alive", all(n.proc.poll() is None for n in nodes),
                  [n.proc.poll() for n in nodes])
        finally:
            close_all(flood)
            stop_all(nodes, t, logdir)
    return t.finish()


sys.exit(main())
