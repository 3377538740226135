#!/usr/bin/env python3
"""Node certificates on the peer port (--peer-cert): a member can speak only for itself.

Three nodes share a cluster key and each proves who it is with a certificate from the
cluster CA (`ringnet cert issue NAME --peer HOST:PORT`); they form a ring and serve
keys. "mallory" holds the cluster key and a valid certificate of its own, and sends from
the same host (127.0.0.1) as a node's real predecessor, so the host check alone
(test_peer_spoof) would let it through: a LEAVE and a KV write claiming to be the
predecessor close the connection, are counted as spoofed, and change nothing; so does a
PING from mallory's own address under another node's id. A member with the key but no
certificate, a certificate from another CA for a real node's address, and mallory's
certificate with a signature made for an earlier session are all refused. The control:
mallory's PING from its own address and id is taken (the node dials mallory's address
to answer it, which it never did for the refused ones), which shows the refusals are
for what the frames claim. Bad settings stop a node with exit 2 and a reason."""
import os
import socket
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from peerauth import sealed_session
from ringtest import (closed, RING_PING, Checks, Node, connect_from, converge, free_port,
                      free_port_range, get, kv_put_frame, metrics, ring_frame, stop_all)

BIN = sys.argv[1]
t = Checks("peer_certs")
check = t.check
RING_LEAVE = 8
LABEL = b"ringnet peer identity v1\0"  # src/net/peer_ident.c, its NUL included


class Identity:
    """A certificate and its key, as `ringnet cert issue` wrote them."""

    def __init__(self, crt, key):
        with open(crt, "rb") as f:
            self.der = x509.load_pem_x509_certificate(f.read()).public_bytes(
                serialization.Encoding.DER)
        with open(key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)

    def sign(self, s):
        return self.key.sign(LABEL + s, ec.ECDSA(hashes.SHA256()))

    def frame(self, s, sig=None):
        """The WIRE_IDENT frame proving this identity in the session whose key is s."""
        body = len(self.der).to_bytes(2, "big") + self.der + (sig or self.sign(s))
        return (len(body) + 1).to_bytes(4, "big") + b"\x06" + body


def cli(args):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=60)


def counters(node):
    m = metrics(node.http)
    return {k: m.get(k, 0) for k in (
        "ringnet_peer_spoofed_frames_total", "ringnet_peer_auth_failed_total",
        'ringnet_peer_messages_total{dir="in",type="leave"}',
        'ringnet_peer_messages_total{dir="in",type="ping"}')}


def settled(node, before, key, want):
    """Waits for a /metrics snapshot (every 100 ms) in which counter key moved by want."""
    for _ in range(50):
        now = counters(node)
        if now[key] - before[key] >= want:
            return now
        time.sleep(0.1)
    return now


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ca, rogue = f"{tmp}/ca", f"{tmp}/rogue"
        for d in (ca, rogue):
            check(f"cert init {os.path.basename(d)}", cli(["cert", "init", "--dir", d])
                  .returncode == 0)
        keyfile = f"{tmp}/cluster.key"
        with open(keyfile, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        cluster_key = bytes.fromhex(open(keyfile).read().strip())
        base = free_port_range(4)
        port = {"a": base, "b": base + 1, "c": base + 2, "mallory": base + 3}
        for name, p in port.items():
            r = cli(["cert", "issue", name, "--dir", ca, "--peer", f"127.0.0.1:{p}"])
            check(f"cert issue {name} --peer", r.returncode == 0, r.stderr)
        r = cli(["cert", "issue", "b", "--dir", rogue, "--peer", f"127.0.0.1:{port['b']}"])
        check("cert issue from another CA", r.returncode == 0, r.stderr)
        keyed = ["--key", keyfile, "--ca", ca]

        nodes = []
        try:
            for name in ("a", "b", "c"):
                nodes.append(Node(BIN, name, tmp, join=nodes[0] if nodes else None,
                                  peer=port[name], args=keyed + [
                                      "--peer-cert", f"{ca}/{name}.crt,{ca}/{name}.key"]))
            ok, state = converge(nodes)
            check("3 nodes proving their certificates form a ring", ok, state)
            logs = open(f"{tmp}/a.log").read()
            check("a node's log says it proves itself with its certificate",
                  "proves itself to its peers as a at" in logs, logs[-1500:])

            victim = nodes[1]
            _, ring = get(victim.http, "/ring")
            pred = next(n for n in nodes if n.addr == ring["predecessor"]["addr"])
            mallory = Identity(f"{ca}/mallory.crt", f"{ca}/mallory.key")
            m_addr = f"127.0.0.1:{port['mallory']}"
            leave = 'ringnet_peer_messages_total{dir="in",type="leave"}'
            ping = 'ringnet_peer_messages_total{dir="in",type="ping"}'
            spoofed, failed = ("ringnet_peer_spoofed_frames_total",
                               "ringnet_peer_auth_failed_total")

            # mallory's own address: the node dials it only to answer a frame it took
            answers = socket.socket()
            answers.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            answers.bind(("127.0.0.1", port["mallory"]))
            answers.listen(8)

            def dialled(wait):
                answers.settimeout(wait)
                try:
                    answers.accept()[0].close()
                    return True
                except socket.timeout:
                    return False

            def session(frames):
                """mallory's connection from 127.0.0.1 (pred's host): True if closed."""
                s = connect_from("127.0.0.1", victim.peer)
                sealed_session(s, cluster_key, victim.addr, frames)
                shut = closed(s, wait=3)
                s.close()
                return shut

            # a valid member speaking for its neighbour, from the neighbour's own host
            before = counters(victim)
            check("mallory's LEAVE claiming the predecessor closes the connection",
                  session(lambda s: [mallory.frame(s),
                                     ring_frame(RING_LEAVE, pred.addr, from_name=pred.name)]))
            check("mallory's KV write claiming the predecessor closes the connection",
                  session(lambda s: [mallory.frame(s),
                                     kv_put_frame("forged", b'"by mallory"', pred.addr)]))
            now = settled(victim, before, spoofed, 2)
            check("both are counted as spoofed", now[spoofed] - before[spoofed] == 2,
                  (before, now))
            check("no LEAVE reached the ring", now[leave] == before[leave], (before, now))
            st, _ = get(victim.http, "/kv/forged")
            check("the forged key was not stored", st in (404, 503), st)
            check("mallory's PING from its own address under b's id closes the connection",
                  session(lambda s: [mallory.frame(s),
                                     ring_frame(RING_PING, m_addr, from_name="b")]))

            check("the node answered none of them (it never dialled mallory)",
                  not dialled(1.0))

            # the control: mallory speaking for itself is a member like any other
            s = connect_from("127.0.0.1", victim.peer)
            sealed_session(s, cluster_key, victim.addr, lambda k: [
                mallory.frame(k), ring_frame(RING_PING, m_addr, from_name="mallory", req=90)])
            check("mallory's PING as itself is taken: the node dials mallory to answer",
                  dialled(5.0))
            s.close()

            # proofs that do not hold
            before = counters(victim)
            check("the cluster key without a certificate: closed",
                  session(lambda s: [ring_frame(RING_PING, m_addr, from_name="mallory")]))
            fake = Identity(f"{rogue}/b.crt", f"{rogue}/b.key")
            check("a certificate for b from another CA: closed",
                  session(lambda s: [fake.frame(s),
                                     ring_frame(RING_PING, pred.addr, from_name="b")]))
            old = mallory.sign(os.urandom(32))  # signed for another session
            check("a signature made for another session: closed",
                  session(lambda s: [mallory.frame(s, sig=old),
                                     ring_frame(RING_PING, m_addr, from_name="mallory")]))
            now = settled(victim, before, failed, 3)
            check("the three are counted as failed authentications",
                  now[failed] - before[failed] == 3, (before, now))
            while dialled(0.2):  # the answer to the control, redialled
                pass
            check("none of them is answered", not dialled(1.0))
            answers.close()

            ok, state = converge(nodes, timeout=15)
            check("the ring is still whole", ok, state)
            _, after = get(victim.http, "/ring")
            check("the victim's predecessor is still the real one",
                  (after["predecessor"] or {}).get("addr") == pred.addr, after)

            # bad settings stop the node at once
            for args, said in (
                    (["--peer-cert", f"{ca}/a.crt,{ca}/a.key"], "needs --key"),
                    (keyed + ["--peer-cert", f"{ca}/a.crt,{ca}/a.key"], "not for this one"),
                    (keyed + ["--peer-cert", f"{rogue}/b.crt,{rogue}/b.key"], "refused by"),
                    (keyed + ["--peer-cert", f"{ca}/a.crt,{ca}/b.key"], "is not the key")):
                r = subprocess.run([BIN, "node", "--id", "z", "--listen",
                                    f"127.0.0.1:{free_port()}", "--http",
                                    f"127.0.0.1:{free_port()}", "--data", f"{tmp}/z"] + args,
                                   capture_output=True, text=True, timeout=30)
                check(f"{said}: exit 2 with the reason", r.returncode == 2
                      and said in r.stderr, (r.returncode, r.stderr[-400:]))
        finally:
            stop_all(nodes, t, tmp)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
