"""The dashboard's routes and /metrics as a client reads them, on 10 real nodes (more than
one node's successor list of 8): /api/ring and /api/peers against the oracle (every node,
found by the ring walk while /api/ring is polled; its id = SHA-1 of its name, its
position on the circle; the successors sorted by id); /api/traffic's history against the
node's own /metrics counters; every JSON answer ends with a newline; every metric sample
has HELP and TYPE lines; the page and its files are served with their types; a
graceful leave shows as "left".

usage: test_dash_api.py RINGNET_BINARY"""
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
import urllib.request

import ringtest

SAMPLE = re.compile(r"^([a-z_:][a-z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+]+)$")


def raw(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def metrics(port):
    _, _, body = raw(port, "/metrics")
    return body.decode()


def main():
    binary = sys.argv[1]
    t = ringtest.Checks("dash_api")
    logdir = tempfile.mkdtemp(prefix="rnd-api-")
    nodes = []
    try:
        ok, _ = ringtest.start_ring(binary, [f"api-{c}" for c in "abcdefghij"], logdir, nodes)
        t.check("the ring converged", ok)
        n0 = nodes[0]
        for k in range(20):
            ringtest.request(n0.http, "/kv", "POST", {"key": f"api-{k}", "value": k})

        # ring and peers against the oracle; polling /api/ring starts the ring walk, which
        # finds the nodes beyond this one's successors and fingers
        want_all = sorted(n.addr for n in nodes)
        order = sorted(nodes, key=lambda n: n.id)
        i = order.index(n0)
        want = [order[(i + k) % len(order)].addr for k in range(1, 9)]
        ring, deadline = None, time.time() + 30
        while time.time() < deadline:  # (converge() waited for successor and predecessor
            _, ring = ringtest.get(n0.http, "/api/ring")  # only; the whole list takes longer)
            if sorted(e["addr"] for e in ring["nodes"]) == want_all and ring["walk"]["laps"] > 0 \
                    and ring["successors"] == want:
                break
            time.sleep(0.5)
        got = {e["addr"]: e for e in ring["nodes"]}
        t.check("/api/ring lists all 10 nodes", sorted(got) == want_all, (len(got), ring["walk"]))
        t.check("... and the walk went round the ring", ring["walk"]["laps"] > 0 and ring["walk"]["active"],
                ring["walk"])
        for n in nodes:
            e = got.get(n.addr, {})
            t.check(f"{n.name}: id is SHA-1 of its name", e.get("id") == n.id, e)
            t.check(f"{n.name}: pos is its id's fraction of the circle",
                    abs(e.get("pos", -1) - int(n.id[:16], 16) / 2**64) < 1e-12, e)
        t.check("successors in id order", ring["successors"] == want, (ring["successors"], want))
        t.check("predecessor", ring["predecessor"] == order[i - 1].addr, ring["predecessor"])
        # every peer's keys and bytes, as it told this node (WIRE_STATS), against what
        # each node says of itself; nothing is written now, so they agree once asked again
        own = {}
        for _ in range(30):
            own = {n.addr: ringtest.get(n.http, "/api/node")[1] for n in nodes}
            _, pv = ringtest.get(n0.http, "/api/peers")
            told = {e["addr"]: (e["keys"], e["bytes"]) for e in pv["peers"]}
            if all(told.get(a) == (d["keys"], d["bytes"]) for a, d in own.items()):
                break
            time.sleep(0.5)
        t.check("/api/peers: each node's keys and bytes as it reports them itself",
                all(told.get(a) == (d["keys"], d["bytes"]) for a, d in own.items()),
                [(a, told.get(a), (d["keys"], d["bytes"])) for a, d in own.items()][:4])
        t.check("... which hold each of the 20 acknowledged keys at least W = 2 times",
                sum(d["keys"] for d in own.values()) >= 40, sum(d["keys"] for d in own.values()))
        time.sleep(2.2)  # two traffic samples past the writes, then nothing but ring upkeep
        _, peers = ringtest.get(n0.http, "/api/peers")
        states = {p["addr"]: p["state"] for p in peers["peers"]}
        t.check("/api/peers: all alive", states == {n.addr: "alive" for n in nodes}, states)
        t.check("... this node first", peers["peers"][0]["addr"] == n0.addr and peers["peers"][0]["self"])
        me = peers["peers"][0]
        _, node = ringtest.get(n0.http, "/api/node")
        m = metrics(n0.http)
        stored = int(re.search(r"^ringnet_keys_stored (\d+)$", m, re.M).group(1))
        t.check("this node's keys in /api/node and /api/peers are the store's",
                node["keys"] == stored == me["keys"] and stored > 0, (node["keys"], me["keys"], stored))
        t.check("bytes stored are whole pages, > 0", node["bytes"] > 0 and node["bytes"] % 4096 == 0,
                node["bytes"])

        # the traffic history adds up to the totals of /metrics (kv requests, both ways)
        _, tr = ringtest.get(n0.http, "/api/traffic")
        t.check("traffic: 180 one-second slots", tr["slots"] == 180 and tr["interval_ms"] == 1000, tr)
        seqs = [s["seq"] for s in tr["samples"]]
        t.check("samples numbered without gaps up to next", seqs == list(range(seqs[0], tr["next"])) if seqs else False, seqs)
        for typ in ("kv_req", "kv_repl"):
            hist_out = sum(s["msgs"].get(typ, [0, 0])[1] for s in tr["samples"])
            total = int(re.search(rf'^ringnet_kv_messages_total{{dir="out",type="{typ[3:]}"}} (\d+)$', m, re.M).group(1))
            # the history ends at the last sample, /metrics a moment later: nothing was
            # written since, so they agree
            t.check(f"{typ} sent: the history's sum is the counter", hist_out == total, (hist_out, total))
        byt = sum(sum(v) for s in tr["samples"] for v in s["bytes"].values())
        tot = sum(int(x) for x in re.findall(r"^ringnet_peer_message_bytes_total\{[^}]*\} (\d+)$", m, re.M))
        t.check("bytes in the history at most the totals", 0 < byt <= tot, (byt, tot))
        _, later = ringtest.get(n0.http, f"/api/traffic?since={tr['next']}")
        t.check("?since= gives only newer samples",
                all(s["seq"] >= tr["next"] for s in later["samples"]), later["samples"][:1])
        _, junk = ringtest.get(n0.http, "/api/traffic?since=bogus")
        t.check("?since= that is not a number gives everything kept", len(junk["samples"]) >= len(seqs))

        # every JSON answer ends with a newline, and has the JSON type
        for path in ("/api/node", "/api/ring", "/api/peers", "/api/traffic", "/api/files",
                     "/api/transfers", "/ring", "/peers", "/health", "/kv/api-1", "/kv/none-such", "/nope"):
            status, ctype, body = raw(n0.http, path)
            t.check(f"{path} ends with a newline", body.endswith(b"\n"), body[-40:])
            t.check(f"{path} is JSON", ctype == "application/json", ctype)
        _, files = ringtest.get(n0.http, "/api/files")
        t.check("files: honestly empty", files["files"] == [] and files["transfers"] == []
                and files["available"] is False, files)

        # /api/transfers: a download whose client stops reading is shown running, with
        # the bytes the node handed to the connection (bounded: 16 MiB cannot all be in
        # flight), then done with all of them once the client reads the rest
        size = 16 * 1024 * 1024
        req = urllib.request.Request(f"http://127.0.0.1:{n0.http}/files/big.bin", data=os.urandom(size),
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=120) as r:
            t.check("a 16 MiB file stored", r.status == 200, r.status)
        dl = socket.socket()
        dl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        dl.settimeout(60)
        dl.connect(("127.0.0.1", nodes[1].http))
        dl.sendall(b"GET /download/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = dl.recv(65536)
        mine, deadline = [], time.time() + 30
        while time.time() < deadline:  # until the node has handed it some bytes
            _, tr = ringtest.get(nodes[1].http, "/api/transfers")
            mine = [x for x in tr["files"] if x["name"] == "big.bin"]
            if mine and mine[0]["done"] > 0:
                break
            time.sleep(0.2)
        t.check("a download the client holds up is running, part done, of the file's size",
                len(mine) == 1 and mine[0]["kind"] == "download" and mine[0]["state"] == "running"
                and 0 < mine[0]["done"] < size and mine[0]["total"] == size, mine)
        while True:
            b = dl.recv(1 << 20)
            if not b:
                break
            got += b
        dl.close()
        t.check("... the client gets all of it", len(got) > size and got.startswith(b"HTTP/1.1 200"), len(got))
        mine, deadline = [], time.time() + 10
        while time.time() < deadline:
            _, tr = ringtest.get(nodes[1].http, "/api/transfers")
            mine = [x for x in tr["files"] if x["name"] == "big.bin"]
            if mine and mine[0]["state"] != "running":
                break
            time.sleep(0.2)
        t.check("... then it is done, every byte", len(mine) == 1 and (mine[0]["state"], mine[0]["done"],
                mine[0]["percent"]) == ("done", size, 100.0), mine)

        # the page and its files
        for path, typ, word in (("/", "text/html", b"<svg id=\"ring\""), ("/app.js", "text/javascript", b"/api/traffic"),
                                ("/app.css", "text/css", b"#ring")):
            status, ctype, body = raw(n0.http, path)
            t.check(f"{path} served", status == 200 and ctype.startswith(typ) and word in body,
                    (status, ctype, body[:80]))
        status, _, body = raw(n0.http, "/api/nope")
        t.check("an unknown /api/ route is 404 with a hint", status == 404 and b"/api/peers" in body, body)

        # every sample in /metrics has HELP and TYPE
        helps = set(re.findall(r"^# HELP (\S+) ", m, re.M))
        types = dict(re.findall(r"^# TYPE (\S+) (counter|gauge)$", m, re.M))
        names = set()
        bad = []
        for line in m.splitlines():
            if line.startswith("#"):
                continue
            g = SAMPLE.match(line)
            if not g:
                bad.append(line)
                continue
            names.add(g.group(1))
        t.check("every metric line parses", not bad, bad[:3])
        t.check("every metric has HELP", names <= helps, sorted(names - helps))
        t.check("every metric has TYPE", names <= set(types), sorted(names - set(types)))
        t.check("counters end in _total", all(k.endswith("_total") for k, v in types.items() if v == "counter"),
                [k for k, v in types.items() if v == "counter" and not k.endswith("_total")])
        t.check("peer gauge counts 9 alive", 'ringnet_peers{state="alive"} 9' in m)
        for want_name in ("ringnet_ring_joined", "ringnet_ring_successors", "ringnet_store_bytes",
                          "ringnet_http_requests_total", "ringnet_kv_messages_total",
                          "ringnet_peer_message_bytes_total", "ringnet_uptime_seconds"):
            t.check(f"{want_name} present", want_name in names)

        # deploy/: the Grafana dashboard asks only for metrics that exist; Prometheus
        # scrapes the ports `ringnet cluster` uses by default
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        dash = json.load(open(os.path.join(repo, "deploy", "grafana-dashboard.json")))
        used = {name for p in dash["panels"] for tg in p["targets"]
                for name in re.findall(r"ringnet_[a-z_]+", tg["expr"])}
        t.check("the Grafana dashboard's metrics all exist", used and used <= names, sorted(used - names))
        prom = open(os.path.join(repo, "deploy", "prometheus.yml")).read()
        t.check("prometheus.yml scrapes the cluster's 5 nodes",
                all(f"127.0.0.1:{5001 + k}" in prom for k in range(5)) and "/metrics" in prom)

        # a graceful leave: the others show it as left, then not in the ring
        # (its successor: a leave notice goes to the leaver's predecessor and successor)
        leaver = next(n for n in nodes if n.addr == want[0])
        leaver.stop(signal.SIGTERM)
        st = None
        for _ in range(40):
            _, peers = ringtest.get(n0.http, "/api/peers")
            st = {p["addr"]: p["state"] for p in peers["peers"]}.get(leaver.addr)
            if st == "left":
                break
            time.sleep(0.25)
        t.check("a node that left is shown 'left'", st == "left", st)
    finally:
        ringtest.stop_all(nodes, t, logdir)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
