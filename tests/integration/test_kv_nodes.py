#!/usr/bin/env python3
"""The key-value API as a user would use it, on 5 real node processes."""
import json
import random
import signal
import socket
import sys
import tempfile
import time

from ringtest import Checks, Node, converge, dump_logs, free_port, owner, request

BIN = sys.argv[1]
t = Checks("kv_nodes")


def metrics(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        ctype = r.headers.get("Content-Type", "")
        lines = r.read().decode().splitlines()
    out = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    t.check("metrics are Prometheus text", ctype.startswith("text/plain"), ctype)
    return out


def wait_placed(nodes, live, when, timeout=30):
    """Every key readable with its value, answered by the oracle's owner."""
    deadline = time.time() + timeout
    while True:
        wrong = []
        for key, value in live.items():
            status, body = request(random.choice(nodes).http, f"/kv/{key}")
            if status != 200 or body.get("value") != value or body.get("node") != owner(nodes, key).id:
                wrong.append((key, status, body))
        if not wrong or time.time() > deadline:
            break
        time.sleep(1)
    t.check(f"every key on its owner {when}", not wrong, wrong[:5])


def main():
    random.seed(2)
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            nodes.append(Node(BIN, "kv-0", logdir))
            for i in range(1, 5):
                nodes.append(Node(BIN, f"kv-{i}", logdir, join=random.choice(nodes)))
            ok, state = converge(nodes)
            t.check("ring converges", ok, state)

            # every key put through any node is readable through every node, on its owner
            values = {}
            for i in range(40):
                key = f"key-{i}"
                value = random.choice([i, f"text {i}", {"nested": [i, None, True]}, [1.5, "x"]])
                values[key] = value
                status, body = request(random.choice(nodes).http, "/kv", "POST",
                                       {"key": key, "value": value})
                t.check(f"put {key}", status == 200 and body.get("status") == "stored", body)
                t.check(f"put {key} lands on the oracle's owner",
                        body.get("node") == owner(nodes, key).id, (body, owner(nodes, key).name))
            for key, value in values.items():
                for n in nodes:
                    status, body = request(n.http, f"/kv/{key}")
                    t.check(f"get {key} via {n.name}",
                            status == 200 and body.get("value") == value, (status, body))
            # overwrite, delete, not found
            status, _ = request(nodes[1].http, "/kv", "POST", {"key": "key-1", "value": "new"})
            status, body = request(nodes[3].http, "/kv/key-1")
            t.check("overwrite is visible everywhere", body.get("value") == "new", body)
            status, body = request(nodes[2].http, "/kv/key-2", "DELETE")
            t.check("delete", status == 200 and body.get("status") == "deleted", body)
            status, body = request(nodes[4].http, "/kv/key-2")
            t.check("deleted key is 404", status == 404 and "error" in body, body)
            t.check("a deleted key's 404 names the delete's version",
                    "deleted_version" in body, body)
            status, body = request(nodes[4].http, "/kv/key-2", "DELETE")
            t.check("deleting again is a new delete (idempotent)",
                    status == 200 and body.get("status") == "deleted", body)

            # a request read late (its node was stopped with it in a socket, the client
            # gave up and retried elsewhere) after a newer write: a replay, not a write
            # over the newer one
            ok_owner = owner(nodes, "key-2")
            status, body = request(nodes[1].http, "/kv", "POST",
                                   {"key": "key-2", "value": "late"}, headers={"Idempotency-Key": "late-a"})
            first = body.get("version")
            held = set(body.get("replicas", [])) | {ok_owner.id}
            late = next(n for n in nodes if n.id not in held and n is not nodes[1])
            late.proc.send_signal(signal.SIGSTOP)
            try:
                raw = json.dumps({"key": "key-2", "value": "late"}).encode()
                with socket.create_connection(("127.0.0.1", late.http), timeout=5) as s:
                    s.sendall(b"POST /kv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                              b"\r\nIdempotency-Key: late-a\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(raw), raw))
                status, body = request(nodes[1].http, "/kv/key-2", "DELETE",
                                       headers={"Idempotency-Key": "late-b"})
                t.check("a delete after the write", status == 200, (status, body))
            finally:
                late.proc.send_signal(signal.SIGCONT)
            time.sleep(2)  # it reads the request and sends it on
            status, body = request(nodes[1].http, "/kv", "POST", {"key": "key-2", "value": "late"},
                                   headers={"Idempotency-Key": "late-a"})
            t.check("a retry of the replaced write is a replay, with its first version",
                    status == 200 and body.get("replayed") is True and body.get("version") == first,
                    (status, body, first))
            for n in nodes:
                status, body = request(n.http, "/kv/key-2")
                t.check(f"the late request did not undo the delete (via {n.name})",
                        status == 404, (status, body))

            # bad input: its status and a message, and the node keeps serving
            n = nodes[0]
            for what, (method, path, body, code) in {
                "malformed JSON": ("POST", "/kv", b'{"key": "a", "value": ', 400),
                "not an object": ("POST", "/kv", b'[1, 2]', 400),
                "missing key": ("POST", "/kv", {"value": 1}, 400),
                "empty key": ("POST", "/kv", {"key": "", "value": 1}, 400),
                "missing value": ("POST", "/kv", {"key": "a"}, 400),
                "key too long": ("POST", "/kv", {"key": "k" * 2000, "value": 1}, 413),
                "huge body": ("POST", "/kv", b'{"key": "big", "value": "' + b"a" * (2 << 20) + b'"}', 413),
                "unknown route": ("GET", "/nope", None, 404),
                "wrong method": ("PUT", "/kv", b"{}", 405),
                "wrong method on a key": ("POST", "/kv/abc", b"{}", 405),
            }.items():
                status, reply = request(n.http, path, method, body)
                t.check(f"{what} -> {code}", status == code and "error" in reply, (status, reply))
            # a body in an encoding the node cannot read is refused at once, not waited for
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", n.http, timeout=5)
            c.putrequest("POST", "/kv")
            c.putheader("Transfer-Encoding", "gzip, chunked")
            c.endheaders()
            r = c.getresponse()
            t.check("Transfer-Encoding gzip -> 501 at once", r.status == 501 and b"chunked" in r.read(),
                    r.status)
            c.close()
            status, body = request(n.http, "/kv/key-3")
            t.check("still serving after bad input", status == 200, body)

            # /metrics in Prometheus text format; /peers lists the others
            # copies a write left outside its replicas while views moved are handed on
            # and dropped by the next repair rounds: wait (bounded) for exactly 3 of each
            deadline = time.time() + 30
            while True:
                time.sleep(0.3)  # metrics are a snapshot refreshed every 100 ms
                stored, tombs, http_ok = 0, 0, 0
                for x in nodes:
                    text = metrics(x.http)
                    stored += text.get("ringnet_keys_stored", 0)
                    tombs += text.get("ringnet_tombstones_stored", 0)
                    http_ok += text.get('ringnet_http_requests_total{route="/kv",status="200"}', 0)
                if (stored == 3 * len(values) and tombs == 3) or time.time() > deadline:
                    break
            for x in nodes:
                text = metrics(x.http)
                t.check(f"metrics of {x.name} have peer messages",
                        text.get('ringnet_peer_messages_total{dir="in",type="notify"}', 0) > 0, text)
            # every key (key-2 as its tombstone) on its 3 replicas, and nowhere else
            t.check("keys_stored over all nodes = 3 copies of each key", stored == 3 * len(values),
                    (stored, 3 * len(values)))
            t.check("the deleted key is 3 tombstones", tombs == 3, tombs)
            t.check("http_requests_total counts the puts", http_ok >= 41, http_ok)
            status, body = request(nodes[0].http, "/peers")
            known = {p["addr"] for p in body.get("peers", [])}
            t.check("/peers knows its neighbours", status == 200 and len(known) >= 2, body)

            # kill -9 a node and restart it on the same data: its keys are back
            victim = owner(nodes, "key-5")
            mine = [k for k in values if k not in ("key-1", "key-2") and owner(nodes, k) is victim]
            victim.stop(sig=9)
            victim.join = None  # it must find the ring again through the peers it saved
            victim.start()
            ok, state = converge(nodes)
            t.check("ring whole again after restart", ok, state)
            for key in mine:
                status, body = request(random.choice(nodes).http, f"/kv/{key}")
                t.check(f"{key} survives kill -9 and restart",
                        status == 200 and body.get("value") == values[key], (status, body))

            # nodes that join later take over the keys they now own
            live = {k: v for k, v in values.items() if k != "key-2"}
            live["key-1"] = "new"
            for i in range(5, 8):
                nodes.append(Node(BIN, f"kv-{i}", logdir, join=random.choice(nodes)))
            ok, state = converge(nodes)
            t.check("ring converges with 8 nodes", ok, state)
            wait_placed(nodes, live, "after joins")

            # a node that leaves gracefully hands its keys on first
            leaver = max(nodes, key=lambda n: sum(owner(nodes, k) is n for k in live))
            held = sum(owner(nodes, k) is leaver for k in live)
            nodes.remove(leaver)
            t.check("SIGTERM exits 0", leaver.stop() == 0)
            t.check("the leaver held keys", held > 0, held)
            ok, state = converge(nodes)
            t.check("ring converges after the leave", ok, state)
            wait_placed(nodes, live, "after a graceful leave")

            # the whole ring stops at once (as on Ctrl-C) and starts again on the same data,
            # each node finding the others through the peers it saved: every key is back
            for n in nodes:
                n.proc.send_signal(signal.SIGTERM)
            codes = [n.proc.wait(timeout=15) for n in nodes]
            t.check("every node exits 0 when all stop at once", codes == [0] * len(nodes), codes)
            for n in nodes:
                n.join = None
                n.start()
            ok, state = converge(nodes)
            t.check("ring converges after a restart of every node", ok, state)
            wait_placed(nodes, live, "after every node stopped and started again", timeout=60)

            # a power cut: every node killed at once, no handoff, then all started again
            for n in nodes:
                n.proc.kill()
            for n in nodes:
                n.proc.wait(timeout=15)
                n.start()
            ok, state = converge(nodes)
            t.check("ring converges after every node was killed and restarted", ok, state)
            wait_placed(nodes, live, "after every node was killed and started again", timeout=60)

            # a node that cannot join (its --join peer is down, and it was never in a ring)
            # does not answer for the whole ring: it says so, and does not start a ring
            class Nowhere:
                addr = f"127.0.0.1:{free_port()}"
            lonely = Node(BIN, "kv-lonely", logdir, join=Nowhere)
            nodes.append(lonely)
            status, body = request(lonely.http, "/kv", "POST", {"key": "k", "value": 1})
            t.check("a node not in a ring answers 503", status == 503 and "ring" in body.get("error", ""),
                    (status, body))
            time.sleep(2.5)
            status, health = request(lonely.http, "/health")
            t.check("and does not start a ring of its own",
                    status == 200 and health.get("joined") is False, health)
        finally:
            for n in nodes:
                n.stop()
            if t.failures:
                dump_logs(logdir)
    return t.finish()


sys.exit(main())
