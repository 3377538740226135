#!/usr/bin/env python3
"""Real `ringnet node` processes on 127.0.0.1, checked as a user would: over HTTP.

The oracle: a node's ring id is SHA-1 of its --id, so the correct successor and
predecessor of every node follow from sorting the hashes of the live names."""
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time

import json

from ringtest import Checks, Node, converge, dump_logs, free_port, get, metrics, sha1_hex

BIN = sys.argv[1]
t = Checks("ring_nodes")
check = t.check


def frame_garbage(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(5)
        try:
            return s.recv(1) == b""  # closed by the node
        except (ConnectionResetError, socket.timeout):
            return True


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))
    random.seed(1)
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            nodes.append(Node(BIN, "node-0", logdir))
            for i in range(1, 5):  # each joins through a random node already there
                nodes.append(Node(BIN, f"node-{i}", logdir, join=random.choice(nodes)))
            ok, state = converge(nodes)
            check("5 nodes converge to the oracle's ring", ok, state)

            # garbage on the peer port closes that connection only
            victim = nodes[2]
            check("garbage frame closes the connection",
                  frame_garbage(victim.peer, b"\x00\x00\x00\x08\x01garbage!"))
            check("oversized frame closes the connection",
                  frame_garbage(victim.peer, b"\xff\xff\xff\xff\x01"))
            # /health is a snapshot refreshed every 100 ms
            for _ in range(40):
                status, health = get(victim.http, "/health")
                if health.get("bad_frames", 0) >= 2:
                    break
                time.sleep(0.05)
            check("node still serves and counts the bad frames",
                  status == 200 and health["bad_frames"] >= 2, health)
            ok, state = converge(nodes, timeout=10)
            check("ring intact after garbage", ok, state)

            # a flood of idle connections on the peer port: the node bounds them and
            # keeps serving its ring and its HTTP clients
            flood = []
            try:
                for _ in range(1100):
                    flood.append(socket.create_connection(("127.0.0.1", victim.peer), timeout=5))
                m = {}
                for _ in range(40):
                    m = metrics(victim.http)
                    if m.get("ringnet_peer_connections_refused_total", 0) >= 76:
                        break
                    time.sleep(0.05)
                check("incoming connections are bounded",
                      m.get('ringnet_peer_connections{dir="in"}', 1e9) <= 1024
                      and m.get("ringnet_peer_connections_refused_total", 0) >= 76, m)
                status, _ = get(victim.http, "/health")
                check("node serves HTTP during the flood", status == 200)
            finally:
                for s in flood:
                    s.close()
            ok, state = converge(nodes, timeout=20)
            check("ring intact after the flood", ok, state)

            # errors a person can act on
            status, body = get(victim.http, "/no-such-route")
            check("unknown route is 404 with a message", status == 404 and "error" in body, body)

            # a crashed node: the rest close the gap
            dead = nodes.pop(3)
            dead.proc.kill()
            dead.proc.wait()
            ok, state = converge(nodes, timeout=40)
            check("ring heals after kill -9", ok, state)

            # a node joining after the crash finds its place
            nodes.append(Node(BIN, "node-late", logdir, join=nodes[0]))
            # one more, configured by a file instead of flags
            cfg_peer, cfg_http = free_port(), free_port()
            with open(f"{logdir}/cfg.json", "w") as f:
                json.dump({"id": "node-cfg", "listen": f"127.0.0.1:{cfg_peer}",
                           "http": f"127.0.0.1:{cfg_http}", "join": [nodes[1].addr],
                           "data": f"{logdir}/data-cfg", "log_level": "info",
                           "suspicion_ms": 1500, "lifeguard": 3, "confirm": 2,
                           "eager_gossip": 5, "suspect_probes": 2}, f)
            cfg_node = Node.__new__(Node)
            cfg_node.name, cfg_node.peer, cfg_node.http = "node-cfg", cfg_peer, cfg_http
            cfg_node.addr, cfg_node.id = f"127.0.0.1:{cfg_peer}", sha1_hex("node-cfg")
            cfg_node.proc = subprocess.Popen([BIN, "node", "--config", f"{logdir}/cfg.json"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                try:
                    get(cfg_http, "/health")
                    break
                except OSError:
                    time.sleep(0.05)
            nodes.append(cfg_node)
            ok, state = converge(nodes, timeout=40)
            check("a late joiner is placed correctly", ok, state)
            check("its failure detector's settings came from the file (2 x 1500 ms)",
                  metrics(cfg_http).get("ringnet_member_suspicion_timeout_seconds") == 3.0)

            # graceful stop: exit 0
            leaver = nodes.pop(1)
            check("SIGTERM exits 0", leaver.stop() == 0)
            ok, state = converge(nodes, timeout=40)
            check("ring closes after a graceful leave", ok, state)
        finally:
            for n in nodes:
                n.stop()
            if t.failures:
                dump_logs(logdir)

    # usage errors exit 2
    for args in (["node"], ["node", "--id", "x", "--listen", "nope", "--http", "127.0.0.1:1"],
                 ["node", "--id", "x", "--listen", "0.0.0.0:5", "--http", "127.0.0.1:1"],
                 ["node", "--bogus", "1"]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=10)
        check(f"usage {args}", r.returncode == 2 and "usage:" in r.stderr, r.stderr[:200])
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10)
    check("top-level help names every command", r.returncode == 0 and all(
        c in r.stdout for c in ("cluster", "node", "put", "get", "del", "peers", "ring", "sim")),
        r.stdout)
    for args, word in ((["node", "--bogus"], "unknown option"),
                       (["node", "--id"], "needs a value"),
                       (["node", "--suspicion-ms", "50"], "100 to 600000"),
                       (["node", "--suspicion-ms", "2s"], "100 to 600000"),
                       (["node", "--lifeguard", "0"], "1 to 100"),
                       (["node", "--confirm", "9"], "1 to 8"),
                       (["node", "--eager-gossip", "x"], "0 to 1000"),
                       (["node", "--suspect-probes", "65"], "0 to 64"),
                       (["cluster", "--bogus"], "unknown option"),
                       (["cluster", "--nodes"], "needs a value")):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=10)
        check(f"usage {args}", r.returncode == 2 and word in r.stderr, r.stderr[:200])

    # a wrong config file: exit 2 and say what is wrong
    with tempfile.TemporaryDirectory() as d:
        for text, word in (('{"id": "a", "lisen": "127.0.0.1:1"}', "unknown setting"),
                           ('{"id": 7}', "wants a string"),
                           ('{"id": ', "line"),
                           (None, "No such file"),
                           ('{"id": "a", "listen": "0.0.0.0:9", "http": "127.0.0.1:9"}', "--listen")):
            path = f"{d}/c.json" if text is not None else f"{d}/missing.json"
            if text is not None:
                with open(path, "w") as f:
                    f.write(text)
            r = subprocess.run([BIN, "node", "--config", path], capture_output=True, text=True,
                               timeout=10)
            check(f"bad config {text!r}", r.returncode == 2 and word in r.stderr
                  and "line -1" not in r.stderr, r.stderr[:200])
    return t.finish()


sys.exit(main())
