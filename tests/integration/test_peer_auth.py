#!/usr/bin/env python3
"""The cluster key (--key): only peers that know it can send a node frames.

Three nodes share a key. A stranger who reaches the peer port tries to store a key on the
node that owns it, with a KvMsg frame: without the handshake, with a wrong key, and by
replaying a good session on a new connection; none may be stored. The same frame sent
by this test's own implementation of the protocol with the right key is stored, which
shows the attempts fail for the key and not for the test. A node with a wrong key, or
none, cannot join. `ringnet cluster` makes a key of its own and its nodes form a ring."""
import os
import random
import subprocess
import sys
import tempfile
import time

from peerauth import seal, sealed_session
from ringtest import (closed, Checks, Node, connect_from, converge, free_port_range, get,
                      kv_put_frame, metrics, owner, start_ring, stop_all, stop_process)

BIN = sys.argv[1]
t = Checks("peer_auth")
check = t.check


def write_key(path, key):
    with open(path, "w") as f:
        f.write(key.hex() + "\n")


def stored(node, key):
    status, body = get(node.http, f"/kv/{key}")
    return status == 200, body


def main():
    with tempfile.TemporaryDirectory() as logdir:
        nodes, others = [], []
        key, wrong = os.urandom(32), os.urandom(32)
        write_key(f"{logdir}/k", key)
        write_key(f"{logdir}/wrong", wrong)
        keyed = ["--key", f"{logdir}/k"]
        try:
            ok, state = start_ring(BIN, ["a", "b", "c"], logdir, nodes, args=keyed)
            check("3 nodes with the key converge", ok, state)
            victim = nodes[1]
            names = [f"k{i}" for i in range(200)]
            k_plain, k_wrong, k_replay, k_good = [n for n in names
                                                  if owner(nodes, n) is victim][:4]
            reply = "127.0.0.99:9"

            # no handshake: a plain frame, as an unkeyed node would send it
            s = connect_from("127.0.0.99", victim.peer)
            s.sendall(kv_put_frame(k_plain, b'"evil, and long enough to pass for a hello"', reply))
            check("a frame without the handshake closes the connection", closed(s))
            s.close()
            # the handshake with a wrong key
            s = connect_from("127.0.0.99", victim.peer)
            sealed_session(s, wrong, victim.addr, [kv_put_frame(k_wrong, b'"evil"', reply)])
            check("a wrong key closes the connection", closed(s))
            s.close()
            # the right key: stored (so the two above failed for the key alone)
            s = connect_from("127.0.0.99", victim.peer)
            sent = sealed_session(s, key, victim.addr,
                                  [kv_put_frame(k_good, b'"ok"', reply)])
            time.sleep(0.5)
            ok, body = stored(victim, k_good)
            check("a frame with the right key is taken", ok and body.get("value") == "ok",
                  body)
            s.close()
            # replaying that session's bytes on a new connection (a fresh nonce)
            s = connect_from("127.0.0.99", victim.peer)
            s.recv(16)
            s.sendall(sent.replace(k_good.encode(), k_replay.encode()))
            check("a replayed session closes the connection", closed(s))
            s.close()
            time.sleep(0.5)
            for k in (k_plain, k_wrong, k_replay):
                ok, body = stored(victim, k)
                check(f"nothing was stored by a stranger ({k})", not ok, body)
            m = metrics(victim.http)
            check("the failures are counted",
                  m.get("ringnet_peer_auth_failed_total", 0) >= 3, m)

            # nodes with a wrong key, or none, stay out of the ring
            others.append(Node(BIN, "w", logdir, join=nodes[0],
                               args=["--key", f"{logdir}/wrong"]))
            others.append(Node(BIN, "n", logdir, join=nodes[0]))
            time.sleep(8)
            for o in others:
                _, h = get(o.http, "/health")
                check(f"node {o.name} without the key has not joined", not h.get("joined"), h)
            with open(f"{logdir}/n.log") as f:
                said = f.read()
            check("the node without a key says why it cannot join",
                  "asks for the cluster key" in said and "--key FILE" in said, said[-2000:])
            ok, state = converge(nodes, timeout=10)
            check("the keyed ring is unchanged", ok, state)
        finally:
            stop_all(nodes + others, t, logdir)

    # ringnet cluster makes its own key and its nodes form a ring
    with tempfile.TemporaryDirectory() as tmp:
        random.seed(os.getpid())
        base = free_port_range(60)
        proc = subprocess.Popen([BIN, "cluster", "--nodes", "3", "--base-http", str(base),
                                 "--base-peer", str(base + 50), "--data", f"{tmp}/d"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            joined = False
            deadline = time.time() + 40
            while time.time() < deadline and not joined and proc.poll() is None:
                time.sleep(0.5)
                try:
                    joined = all(get(base + i, "/health")[1].get("joined") for i in range(3))
                except OSError:
                    pass
            check("ringnet cluster's nodes join with the key it made", joined,
                  proc.poll())
            path = f"{tmp}/d/cluster.key"
            check("the key is kept with the data, for its owner only",
                  os.path.exists(path) and os.stat(path).st_mode & 0o077 == 0)
        finally:
            stop_process(proc)
    return t.finish()


sys.exit(main())
