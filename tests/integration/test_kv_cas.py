#!/usr/bin/env python3
"""Conditional writes (compare-and-set) on 3 real node processes, as a user would send them.

If-None-Match: * creates a key only if it is absent; If-Match: "<version>" writes or
deletes only if the key still has the version the client read (the "version" of any
answer); a refused write is 412 with the version held, and changes nothing; a malformed
condition is 400. Then 12 clients, 4 through each node, increment one counter by read,
then write-if-unchanged, retrying on 412: the counter ends at the number of increments
acknowledged. Then 12 files are uploaded at once through the three nodes, and 6 deleted
at once: the listing (one index record every node changes) names exactly the others."""
import http.client
import json
import sys
import tempfile
import threading

from ringtest import Checks, start_ring, stop_all

BIN = sys.argv[1]
t = Checks("kv_cas")


def call(node, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", node.http, timeout=30)
    try:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body,
                  headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw or b"{}")
        except ValueError:
            return r.status, {"raw": raw.decode(errors="replace")}
    finally:
        c.close()


def put(node, key, value, cond=None):
    return call(node, "POST", "/kv", {"key": key, "value": value}, cond)


def read_until_ok(node, key):
    for _ in range(100):
        st, b = call(node, "GET", "/kv/" + key)
        if st == 200:
            return b
    raise RuntimeError(f"GET {key} never answered 200")


with tempfile.TemporaryDirectory() as logdir:
    nodes = []
    try:
        ok, _ = start_ring(BIN, ["a", "b", "c"], logdir, nodes)
        t.check("the ring converges", ok)
        a, b, c = nodes
        absent = {"If-None-Match": "*"}
        st1, r1 = put(a, "lock", "a", absent)
        st2, r2 = put(c, "lock", "c", absent)
        t.check("If-None-Match: * creates an absent key", st1 == 200, f"{st1} {r1}")
        t.check("... and refuses once it exists: 412 with the version held",
                st2 == 412 and r2.get("version") == r1.get("version"), f"{st2} {r2}")
        got = read_until_ok(b, "lock")
        t.check("the refused write changed nothing", got.get("value") == "a", str(got))
        v1 = got["version"]
        st3, r3 = put(b, "lock", "b", {"If-Match": f'"{v1}"'})
        t.check("If-Match with the version read writes", st3 == 200, f"{st3} {r3}")
        st4, r4 = put(a, "lock", "stale", {"If-Match": f'"{v1}"'})
        t.check("If-Match with an older version is 412, naming the current one",
                st4 == 412 and r4.get("version") == r3.get("version"), f"{st4} {r4}")
        st5, r5 = call(c, "DELETE", "/kv/lock", headers={"If-Match": f'"{v1}"'})
        t.check("a conditional delete with an older version is 412", st5 == 412, f"{st5} {r5}")
        st6, _ = call(c, "DELETE", "/kv/lock", headers={"If-Match": f'"{r3["version"]}"'})
        t.check("... and with the current one deletes", st6 == 200, str(st6))
        st7, r7 = put(a, "lock", "again", absent)
        t.check("a deleted key counts as absent", st7 == 200, f"{st7} {r7}")
        for hdr, why in [({"If-Match": "yesterday"}, "not a version"),
                         ({"If-None-Match": '"x"'}, "If-None-Match other than *"),
                         ({"If-Match": f'"{v1}"', "If-None-Match": "*"}, "both")]:
            st, r = put(b, "lock", "x", hdr)
            t.check(f"a malformed condition ({why}) is 400 with a reason",
                    st == 400 and "error" in r, f"{st} {r}")

        # the counter
        st, _ = put(a, "counter", 0)
        t.check("the counter starts at 0", st == 200, str(st))
        acked, conflicts, errors = [0], [0], []
        lock = threading.Lock()

        def incrementer(node, n):
            done = 0
            while done < n:
                cur = read_until_ok(node, "counter")
                st, r = put(node, "counter", cur["value"] + 1,
                            {"If-Match": f'"{cur["version"]}"'})
                with lock:
                    if st == 200:
                        acked[0] += 1
                        done += 1
                    elif st == 412:
                        conflicts[0] += 1
                    elif st != 503:  # 503: retried (its outcome is told by the next read)
                        errors.append(f"{st} {r}")
                        return

        threads = [threading.Thread(target=incrementer, args=(nodes[i % 3], 10))
                   for i in range(12)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        t.check("no increment failed otherwise than by 412", not errors, str(errors[:3]))
        final = read_until_ok(c, "counter")["value"]
        t.check("the counter is the number of increments acknowledged (none lost)",
                final == acked[0] and acked[0] == 120,
                f"counter {final}, acknowledged {acked[0]}, 412s {conflicts[0]}")
        t.check("the increments did race (some got 412)", conflicts[0] > 0)

        # the file index, changed by three nodes at once
        def upload(node, name, out):
            out[name] = call(node, "PUT", "/files/" + name, (name * 100).encode(),
                             {"Content-Type": "application/octet-stream"})[0]

        res = {}
        ups = [threading.Thread(target=upload, args=(nodes[i % 3], f"doc{i:02d}", res))
               for i in range(12)]
        for th in ups:
            th.start()
        for th in ups:
            th.join()
        t.check("12 uploads at once through 3 nodes all succeed",
                sorted(res.values()) == [200] * 12,
                str(res))
        st, lst = call(b, "GET", "/files")
        names = sorted(f["name"] for f in lst.get("files", []))
        t.check("the listing names all 12", names == [f"doc{i:02d}" for i in range(12)],
                str(names))
        dres = {}

        def delete(node, name):
            dres[name] = call(node, "DELETE", "/files/" + name)[0]

        dels = [threading.Thread(target=delete, args=(nodes[i % 3], f"doc{i:02d}"))
                for i in range(0, 12, 2)]
        for th in dels:
            th.start()
        for th in dels:
            th.join()
        t.check("6 deletes at once all succeed", all(s == 200 for s in dres.values()),
                str(dres))
        st, lst = call(a, "GET", "/files")
        names = sorted(f["name"] for f in lst.get("files", []))
        t.check("the listing names exactly the 6 left",
                names == [f"doc{i:02d}" for i in range(1, 12, 2)], str(names))
    finally:
        stop_all(nodes, t, logdir)
t.finish()
