"""The dashboard at 200 nodes beside 5, in the same run: the page served from web/ with
/api/ answers in the node's own format for a ring of N (made up here: 200 real nodes do
not fit this machine), in headless chromium. Reports, per poll, the bytes the page
fetches and the time its drawing and the layout it causes take (median of RUNS runs of
20 polls), and the ratios 200 / 5.

usage: python3 bench/dashboard_scale.py   (RUNS=5 by default)"""
import hashlib
import http.server
import json
import os
import statistics
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "browser"))
from cdp import Browser  # noqa: E402

TYPES = ["find_succ", "found", "get_pred", "pred_reply", "notify", "ping", "pong", "leave",
         "kv_req", "kv_resp", "kv_repl", "kv_ack", "kv_read", "kv_read_ans", "kv_digest",
         "kv_keys", "kv_pull", "kv_purge"]


def ring_of(n):
    nodes = []
    for i in range(n):
        h = hashlib.sha1(f"node-{i + 1}".encode()).hexdigest()
        nodes.append({"addr": f"127.0.0.1:{6001 + i}", "id": h, "pos": int(h[:16], 16) / 2**64,
                      "state": "alive" if i % 10 else "suspect"})
    nodes[0]["self"] = True
    order = sorted(nodes, key=lambda e: e["pos"])
    k = order.index(nodes[0])
    succ = [order[(k + j) % n]["addr"] for j in range(1, min(9, n))]
    fingers = [{"from": f, "addr": order[(k + (1 << (f // 20))) % n]["addr"]} for f in range(0, 160, 20)]
    ring = {"self": nodes[0]["addr"], "nodes": nodes, "successors": succ, "fingers": fingers,
            "predecessor": order[k - 1]["addr"], "walk": {"active": True, "laps": 1}}
    node = {"name": "node-1", "id": nodes[0]["id"], "pos": nodes[0]["pos"], "addr": nodes[0]["addr"],
            "http": "127.0.0.1:5001", "version": "0.1.0", "joined": True, "uptime_ms": 60000,
            "keys": 1234, "tombstones": 0, "bytes": 409600, "bits": 160}
    peers = [dict(node, state="alive", self=True)] + [
        {"addr": e["addr"], "id": e["id"], "pos": e["pos"], "state": e["state"],
         "roles": ["successor-list"] if e["addr"] in succ else [], "connected": True,
         "heard_ms_ago": 800, "failing_since_ms_ago": None, "keys": None, "bytes": None}
        for e in nodes[1:]]
    return node, ring, {"self": node["addr"], "peers": peers, "source": "ring view"}


def sample(seq):
    return {"seq": seq, "at": 1000 * seq, "ms": 1000,
            "msgs": {t: [3 + seq % 5, 2] for t in TYPES[:12]},
            "bytes": {t: [300 + seq % 50, 200] for t in TYPES[:12]}}


def serve(n):
    node, ring, peers = ring_of(n)
    docs = {"/api/node": node, "/api/ring": ring, "/api/peers": peers,
            "/api/files": {"files": [], "transfers": [], "available": False}}
    state = {"next": 180}

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path == "/api/traffic":
                since = int(query.split("=")[1]) if query.startswith("since=") else 0
                first = max(since, state["next"] - 180)
                body = {"interval_ms": 1000, "slots": 180, "next": state["next"], "types": TYPES,
                        "samples": [sample(k) for k in range(first, state["next"])]}
                state["next"] += 1  # one new sample per poll, as a live node has
            elif path in docs:
                body = docs[path]
            else:
                f = os.path.join(REPO, "web", "index.html" if path == "/" else path.lstrip("/"))
                if not os.path.isfile(f):
                    self.send_error(404)
                    return
                data = open(f, "rb").read()
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if f.endswith("html") else
                                 "text/javascript" if f.endswith("js") else "text/css")
                self.end_headers()
                self.wfile.write(data)
                return
            data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sizes = {p: len(json.dumps(d, separators=(",", ":"))) + 1 for p, d in docs.items() if p != "/api/files"}
    sizes["/api/traffic (one new sample)"] = len(json.dumps({"interval_ms": 1000, "slots": 180, "next": 1,
                                                            "types": TYPES, "samples": [sample(1)]})) + 1
    return srv, sizes


def measure(browser, n, runs):
    srv, sizes = serve(n)
    try:
        browser.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
        browser.wait_for(f"document.querySelectorAll('#ring circle.node').length === {n} && "
                         "+document.getElementById('msgs').dataset.samples >= 180", 20)
        # a poll as it usually is (the same ring, new ages and counters: the page writes
        # only what changed) and one where everything changed (caches dropped first)
        reset = "ringDrawn = ''; rows.clear(); document.querySelector('#peers tbody').textContent = '';"
        cases = {"steady": "", "full": reset}
        times = {k: [] for k in cases}
        for _ in range(runs):
            for k, pre in cases.items():
                times[k].append(browser.eval(
                    "(() => { let t = 0; for (let i = 0; i < 20; i++) { "
                    f"{pre} dash.peers.peers.forEach((e, j) => {{ e.heard_ms_ago = (e.heard_ms_ago + 1000 * j) % 9000; }}); "
                    "const t0 = performance.now(); drawTraffic(); drawRing(); drawPeers(); "
                    "document.body.offsetHeight; t += performance.now() - t0; } return t / 20; })()"))
        drawn = browser.eval("document.querySelectorAll('#ring circle.node').length")
        rows = browser.eval("document.querySelectorAll('#peers tbody tr').length")
        med = {k: statistics.median(v) for k, v in times.items()}
        return med, sum(sizes.values()), drawn, rows
    finally:
        srv.shutdown()


def main():
    runs = int(os.environ.get("RUNS", "5"))
    b = Browser()
    try:
        small = measure(b, 5, runs)
        big = measure(b, 200, runs)
    finally:
        b.close()
    print(f"| nodes | a poll, steady (median of {runs}) | a poll, everything changed | bytes fetched per poll | nodes drawn | peer rows |")
    print("|---|---|---|---|---|---|")
    for n, (ms, by, drawn, rows) in ((5, small), (200, big)):
        print(f"| {n} | {ms['steady']:.1f} ms | {ms['full']:.1f} ms | {by:,} | {drawn} | {rows} |")
    print(f"| ratio 200 / 5 | {big[0]['steady'] / small[0]['steady']:.1f} | "
          f"{big[0]['full'] / small[0]['full']:.1f} | {big[1] / small[1]:.1f} | | |")

if __name__ == "__main__":
    main()
