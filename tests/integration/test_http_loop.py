#!/usr/bin/env python3
"""HTTP runs on the node's event loop: no client can hold that loop (issue #15).

Three nodes (R = 3, so every put waits for acks from the two others over the peer port).
Node A then holds 150 stalled HTTP clients from three addresses: some stop in the middle
of their headers, some send a put's headers and half its body, a dozen ask for a 1 MiB
value and never read the answer. With all of them open, a normal client puts and reads
back 60 keys through A and B (each put is acknowledged by W = 2 replicas over the peer
port), for at least four rounds of the stalled clients' trickles, and A's peers keep
seeing it alive. Then the half-sent puts are finished: each must be stored and readable. Last, with B and C
stopped (SIGSTOP), puts to A wait for acks when A gets SIGTERM: each must still get an
answer (a 503 saying the outcome), not a closed connection.
Every request here has a timeout, and the stalled clients are closed at the end."""
import json
import signal
import socket
import sys
import tempfile
import threading
import urllib.parse
import urllib.request

from ringtest import Checks, Node, converge, request, stop_all

BIN = sys.argv[1]
t = Checks("http_loop")
check = t.check


def stalled(port, ip, kind, i):
    s = socket.socket()
    s.settimeout(5)
    s.bind((ip, 0))
    s.connect(("127.0.0.1", port))
    if kind == "headers":
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ")
    elif kind == "body":
        body = json.dumps({"key": f"slow-{ip}-{i}", "value": {"n": i, "pad": "p" * 200}}).encode()
        s.sendall(b"POST /kv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        return s, body[len(body) // 2:], f"slow-{ip}-{i}", i
    else:  # asks for the big value, reads nothing
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /kv/big HTTP/1.1\r\nHost: x\r\n\r\n")
    return s, None, None, None


def keep_alive(slow, heads, stop, rounds):
    """One more byte every 0.5 s on each stalled request (never its last), so that the
    node's 10 s idle timeout does not close them: they stay open, unfinished, and the node
    keeps getting work from them while the normal client runs."""
    while not stop.wait(0.5):
        for item in slow:
            if len(item[1]) > 1:
                try:
                    item[0].sendall(item[1][:1])
                    item[1] = item[1][1:]
                except OSError:
                    pass
        for s in heads:
            try:
                s.sendall(b"a")
            except OSError:
                pass
        rounds.append(1)


def answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    return status, rest


def main():
    with tempfile.TemporaryDirectory() as logdir:
        nodes, socks, stop, frozen = [], [], threading.Event(), False
        try:
            a = Node(BIN, "loop-a", logdir)
            nodes.append(a)
            nodes.append(Node(BIN, "loop-b", logdir, join=a))
            nodes.append(Node(BIN, "loop-c", logdir, join=a))
            ok, state = converge(nodes)
            check("ring of three converges", ok, state)
            st, body = request(a.http, "/kv", "POST", {"key": "big", "value": "x" * ((1 << 20) - 64)})
            check("a 1 MiB value is stored", st == 200, (st, body))
            # a get's answer is written without jansson: keys that need escapes read back
            odd = ["quo\"te", "back\\slash", "tab\tnl\n", "ctl\x01\x1f\x7f", "ünï €", "sp ace/x"]
            bad = []
            for k in odd:
                request(a.http, "/kv", "POST", {"key": k, "value": {"k": k}})
                st, body = request(a.http, "/kv/" + urllib.parse.quote(k, safe=""))
                if st != 200 or body.get("key") != k or body.get("value") != {"k": k}:
                    bad.append((k, st, body))
            check("keys with escapes come back as they were put", not bad, bad)
            # a connection's request memory is 8 KiB: a longer header is refused, clearly
            s = socket.create_connection(("127.0.0.1", a.http), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
            st, raw = answer(s)
            s.close()
            check("a 10 KB header gets 431 and says why", st == 431 and b"too big" in raw,
                  (st, raw[:200]))
            req = urllib.request.Request(f"http://127.0.0.1:{a.http}/health",
                                         headers={"X-Fine": "b" * 6000})
            with urllib.request.urlopen(req, timeout=10) as r:
                check("a 6 KB header is served", r.status == 200, r.status)

            slow, heads = [], []
            for k, ip in enumerate(["127.0.0.2", "127.0.0.3", "127.0.0.4"]):
                for i in range(50):
                    kind = ("headers", "body")[(i + k) % 2] if i >= 4 else "reader"
                    s, rest, key, n = stalled(a.http, ip, kind, i)
                    socks.append(s)
                    if rest is not None:
                        slow.append([s, rest, key, n])
                    elif kind == "headers":
                        heads.append(s)
            check("stalled clients connected", len(socks) == 150, len(socks))
            rounds = []
            keeper = threading.Thread(target=keep_alive, args=(slow, heads, stop, rounds))
            keeper.start()

            # the loop keeps answering: puts that need the two peers' acks, reads, status
            wrong, i = [], 0
            while (i < 60 or len(rounds) < 4) and i < 2000:  # overlaps 4 rounds of trickles
                via = nodes[i % 2]
                st, body = request(via.http, "/kv", "POST", {"key": f"k{i}", "value": [i, "v"]})
                if st != 200 or len(body.get("replicas", [])) < 2:
                    wrong.append(("put", i, st, body))
                st, body = request(nodes[(i + 1) % 2].http, f"/kv/k{i}")
                if st != 200 or body.get("value") != [i, "v"]:
                    wrong.append(("get", i, st, body))
                i += 1
            check("puts acknowledged by the write quorum and read back while A is held",
                  not wrong, wrong[:3])
            st, ring = request(a.http, "/ring")
            check("A's ring view is whole", st == 200 and len(ring.get("successors", [])) == 2,
                  ring)
            for n in nodes[1:]:
                st, mem = request(n.http, "/members")
                states = {m["addr"]: m["state"] for m in mem.get("members", [])}
                check(f"{n.name} sees A alive", states.get(a.addr) == "alive", states)

            # the half-sent puts, finished now, are stored
            stop.set()
            keeper.join()
            bad = []
            for s, rest, key, n in slow:
                try:
                    s.sendall(rest)
                    st, raw = answer(s)
                    if st != 200:
                        bad.append((key, st, raw[:200]))
                except OSError as e:
                    bad.append((key, str(e)))
            check("every finished slow put is stored", not bad, bad[:3])
            missing = []
            for _, _, key, n in slow:
                st, body = request(nodes[2].http, f"/kv/{key}")
                if st != 200 or body.get("value", {}).get("n") != n:
                    missing.append((key, st))
            check("and readable through another node", not missing and len(slow) > 60,
                  (len(slow), missing[:3]))
            check("every node is alive", all(n.proc.poll() is None for n in nodes))

            # puts waiting on replicas that do not answer (stopped) when A is told to stop:
            # each still gets an answer, none a closed connection
            for n in nodes[1:]:
                n.proc.send_signal(signal.SIGSTOP)
            frozen = True
            waiting = []
            for i in range(4):
                body = json.dumps({"key": f"late-{i}", "value": i}).encode()
                w = socket.create_connection(("127.0.0.1", a.http), timeout=30)
                w.sendall(b"POST /kv HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % len(body) + body)
                waiting.append(w)
            a.proc.send_signal(signal.SIGTERM)
            answers = []
            for w in waiting:
                try:
                    st, raw = answer(w)
                    answers.append((st, json.loads(raw or b"{}")))
                except (OSError, ValueError) as e:
                    answers.append((0, str(e)))
                w.close()
            check("puts waiting at shutdown are answered (stored, or 503 with an outcome)",
                  all(st == 200 or (st == 503 and b.get("outcome") in ("unknown", "not_applied"))
                      for st, b in answers), answers)
            check("and the node exits 0", a.proc.wait(timeout=30) == 0, a.proc.returncode)
        finally:
            if frozen:
                for n in nodes[1:]:
                    n.proc.send_signal(signal.SIGCONT)
            stop.set()
            for s in socks:
                s.close()
            stop_all(nodes, t, logdir)
    return t.finish()


sys.exit(main())
