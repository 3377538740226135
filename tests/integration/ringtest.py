"""Helpers for tests that run real `ringnet node` processes on 127.0.0.1."""
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


class Checks:
    def __init__(self, name):
        self.name, self.failures, self.passed = name, [], 0

    def check(self, what, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failures.append(f"{what}: {detail}")

    def finish(self):
        for f in self.failures:
            print("FAIL", f)
        print(f"{self.name}: {self.passed} passed, {len(self.failures)} failed")
        return 1 if self.failures else 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n):
    """A base port with n free ports from it on 127.0.0.1."""
    for _ in range(100):
        base = random.randrange(20000, 40000, 100)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def request(port, path, method="GET", body=None, timeout=10, headers=None):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}")
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


class Client:
    """One keep-alive connection per node, for one thread."""

    def __init__(self):
        self.conns = {}

    def req(self, node, method, path, body=None, headers=None, timeout=6):
        for attempt in range(2):
            c = self.conns.get(node.http)
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", node.http, timeout=timeout)
                self.conns[node.http] = c
            try:
                h = {"Content-Type": "application/json"}
                h.update(headers or {})
                c.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers=h)
                r = c.getresponse()
                data = r.read()
                return r.status, json.loads(data or b"{}")
            except (OSError, http.client.HTTPException, ValueError):
                c.close()
                self.conns.pop(node.http, None)
                if attempt:
                    return None, {}
        return None, {}


def get(port, path):
    return request(port, path)


def sha1_hex(s):
    return hashlib.sha1(s.encode()).hexdigest()


class Node:
    def __init__(self, bin_, name, logdir, join=None, data=None, peer=None, http=None,
                 args=()):
        self.bin, self.name, self.logdir, self.args = bin_, name, logdir, list(args)
        self.peer, self.http = peer or free_port(), http or free_port()
        self.data = data or os.path.join(logdir, "data-" + name)
        self.join = join
        self.addr = f"127.0.0.1:{self.peer}"
        self.id = sha1_hex(name)
        self.start()

    def start(self):
        args = [self.bin, "node", "--id", self.name, "--listen", self.addr,
                "--http", f"127.0.0.1:{self.http}", "--data", self.data]
        if self.join:
            args += ["--join", self.join.addr]
        args += self.args
        self.log = open(os.path.join(self.logdir, self.name + ".log"), "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                get(self.http, "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} never served HTTP")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def stop_process(proc, sig=signal.SIGTERM, timeout=30):
    """Sends sig, waits up to timeout seconds, then kills; returns the exit status."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def owner(nodes, key):
    """The oracle: the first node id at or after SHA-1(key), wrapping around."""
    k = sha1_hex(key)
    ring = sorted(nodes, key=lambda n: n.id)
    for n in ring:
        if n.id >= k:
            return n
    return ring[0]


def expected(nodes):
    ring = sorted(nodes, key=lambda n: n.id)
    succ = {n.addr: ring[(i + 1) % len(ring)].addr for i, n in enumerate(ring)}
    pred = {n.addr: ring[i - 1].addr for i, n in enumerate(ring)}
    return succ, pred


def ring_state(nodes):
    state = {}
    for n in nodes:
        _, r = get(n.http, "/ring")
        s = r["successors"][0]["addr"] if r["successors"] else None
        state[n.addr] = (s, (r["predecessor"] or {}).get("addr"))
    return state


def converge(nodes, timeout=40):
    succ, pred = expected(nodes)
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = ring_state(nodes)
        if all(state[a] == (succ[a], pred[a]) for a in succ):
            return True, state
        time.sleep(0.5)
    return False, state


def start_ring(bin_, names, logdir, nodes, args=()):
    """Starts a node per name, each joining through the first, appending to nodes (so a
    start that fails still leaves the others to stop); then waits for the ring."""
    for name in names:
        nodes.append(Node(bin_, name, logdir, join=nodes[0] if nodes else None, args=args))
    return converge(nodes)


def stop_all(nodes, checks, logdir):
    """Stops the nodes (None entries are skipped); prints their logs if a check failed."""
    for n in nodes:
        if n:
            n.stop()
    if checks.failures:
        dump_logs(logdir)


def dump_logs(logdir):
    for f in sorted(os.listdir(logdir)):
        if f.endswith(".log"):
            print(f"--- {f}")
            print(open(os.path.join(logdir, f)).read()[-2000:])


# ---- raw peer frames, for tests that play a misbehaving peer ----

RING_PING = 6


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num, wire_type, payload):
    if wire_type == 0:
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def kv_put_frame(key, value, reply_to, req=1, stamp=None):
    """One whole frame (type 2, KvMsg, proto/ringnet.proto) asking the node to coordinate
    a put of value (bytes) under key, as an entry node would: a REQ from the peer at
    reply_to (a "host:port"), with a record stamped now."""
    if stamp is None:
        stamp = int(time.time() * 1000) << 16
    kid = hashlib.sha1(key.encode()).digest()
    rec = (_field(1, 2, kid) + _field(2, 2, key.encode()) + _field(3, 2, value)
           + _field(4, 0, stamp) + _field(5, 0, 7))
    peer = _field(1, 2, bytes.fromhex(sha1_hex("stranger"))) + _field(2, 2, reply_to.encode())
    body = (_field(1, 0, 1) + _field(2, 0, 1) + _field(5, 0, req) + _field(6, 2, peer)
            + _field(7, 2, rec))
    return (len(body) + 1).to_bytes(4, "big") + b"\x02" + body


def ring_frame(msg_type, from_addr, from_name="stranger", key=b"\x00" * 20, req=1):
    """One whole frame (u32 length | u8 type 1 | RingMsg) that claims to come from
    from_addr, a "host:port" string."""
    peer = _field(1, 2, bytes.fromhex(sha1_hex(from_name))) + _field(2, 2, from_addr.encode())
    body = _field(1, 0, msg_type) + _field(6, 2, peer) + _field(8, 2, key) + _field(9, 0, req)
    return (len(body) + 1).to_bytes(4, "big") + b"\x01" + body


def connect_from(src_ip, port, timeout=5):
    """A TCP connection to 127.0.0.1:port whose source is src_ip (another loopback
    address, so that a test can play a second host)."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src_ip, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed(sock, wait=5):
    """True when the node closes sock within wait seconds (a keyed node's nonce may come
    first: what it sends before closing is read and dropped)."""
    sock.settimeout(wait)
    try:
        for _ in range(32):
            if sock.recv(64) == b"":
                return True
        return False
    except ConnectionResetError:
        return True
    except OSError:
        return False


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metrics(port):
    """The node's Prometheus samples as {name{labels}: value}: a snapshot the node takes
    every 100 ms, so a counter read right after a request may not count it yet."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
