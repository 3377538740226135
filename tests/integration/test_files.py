#!/usr/bin/env python3
"""Files on 5 real node processes (R = 3), through HTTP as a user would send it.

Round trips of 0 B, 1 B, one chunk, one chunk + 1 and 50 MiB of random bytes, each
uploaded through one node and downloaded through another, byte for byte (one by
multipart POST /upload as curl -F sends it); Range requests at the edges; HEAD; the
listing; bad names (400 with a reason); a body over --max-file (413 before any of it is
sent); a client that disconnects mid-upload (no manifest, its chunks collected); a chunk
corrupted on disk in its owner's LMDB file (the download is still right, the copy is
rewritten); then kill -9 of the two other holders of that chunk: every file still
downloads intact (that chunk from the one copy that was repaired); DELETE."""
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ringtest import Checks, Node, converge, metrics, start_ring, stop_all

BIN = sys.argv[1]
MiB = 1 << 20
t = Checks("files")


def call(node, method, path, body=None, headers=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", node.http, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def js(b):
    try:
        return json.loads(b or b"{}")
    except ValueError:
        return {"raw": b[:200]}


def put_file(node, name, data):
    st, _, body = call(node, "PUT", "/files/" + name, body=data)
    return st, js(body)


def download(node, name, headers=None, tries=30):
    """GET /download/name; a 503 (the ring is healing) is tried again, anything else is
    the answer."""
    for _ in range(tries):
        try:
            st, h, body = call(node, "GET", "/download/" + name, headers=headers)
        except (http.client.HTTPException, OSError) as e:
            st, h, body = 0, {}, str(e).encode()
        if st not in (0, 503):
            return st, h, body
        time.sleep(1)
    return st, h, body


def multipart(field, filename, data):
    boundary = "----ringnet%016x" % random.getrandbits(64)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def live_records(nodes):
    total = 0
    for n in nodes:
        m = metrics(n.http)
        total += m["ringnet_keys_stored"] - m["ringnet_tombstones_stored"]
    return total


def wait_for(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return pred()


def chunk_key(chunk):
    return b"\x00Fc" + hashlib.sha256(chunk).digest()


def holders(nodes, key):
    """The oracle of placement: the owner (first node id at or after SHA-1 of the key)
    and the R - 1 = 2 nodes after it, in ring order."""
    kid = hashlib.sha1(key).hexdigest()
    ring = sorted(nodes, key=lambda n: n.id)
    i = next((k for k, n in enumerate(ring) if n.id >= kid), 0)
    return [ring[(i + j) % len(ring)] for j in range(3)]


def cli(*args, stdin=None):
    p = subprocess.run([BIN, *args], input=stdin, capture_output=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def cli_checks(nodes, logdir, data):
    src = os.path.join(logdir, "cli-src.bin")
    open(src, "wb").write(data)
    node_a, node_b = f"127.0.0.1:{nodes[0].http}", f"127.0.0.1:{nodes[3].http}"
    rc, out, err = cli("upload", src, "--name", "cli file.bin", "--node", node_a)
    t.check("ringnet upload: exit 0, no progress bar when not a terminal",
            rc == 0 and b"uploaded cli file.bin" in out and b"[" not in err, f"{rc} {out} {err}")
    dst = os.path.join(logdir, "cli-out.bin")
    rc, out, err = cli("download", "cli file.bin", "-o", dst, "--node", node_b)
    t.check("ringnet download through another node: verified and renamed",
            rc == 0 and open(dst, "rb").read() == data and
            not [f for f in os.listdir(logdir) if ".ringnet-" in f], f"{rc} {out} {err}")
    rc, out, _ = cli("download", "cli file.bin", "-o", "-", "--node", node_b)
    t.check("ringnet download -o - writes standard output", rc == 0 and out == data, str(rc))
    rc, out, _ = cli("files", "--node", node_b)
    t.check("ringnet files lists it", rc == 0 and b"cli file.bin" in out, str(out[-300:]))
    rc, _, _ = cli("download", "no such", "-o", dst + "2", "--node", node_b)
    t.check("ringnet download of a missing file: exit 1, nothing written",
            rc == 1 and not os.path.exists(dst + "2"), str(rc))
    rc, _, _ = cli("rm", "cli file.bin", "--node", node_a)
    rc2, _, _ = cli("rm", "cli file.bin", "--node", node_a)
    t.check("ringnet rm: exit 0, then 1", (rc, rc2) == (0, 1), f"{rc} {rc2}")
    big = b'{"list": [' + b",".join(b"%d" % i for i in range(40000)) + b"]}"
    rc, _, err = cli("put", "from-stdin", "-", "--node", node_a, stdin=big)
    st, body = call(nodes[2], "GET", "/kv/from-stdin")[0::2]
    t.check("ringnet put KEY - stores standard input (over 128 KiB, as JSON)",
            rc == 0 and st == 200 and json.loads(body)["value"] == json.loads(big),
            f"{rc} {st} {err}")
    txt = os.path.join(logdir, "value.txt")
    open(txt, "w").write("a line\nand another")
    rc, _, _ = cli("put", "from-file", "@" + txt, "--node", node_a)
    st, body = call(nodes[1], "GET", "/kv/from-file")[0::2]
    t.check("ringnet put KEY @FILE stores the file's text",
            rc == 0 and json.loads(body)["value"] == "a line\nand another", f"{rc} {body}")
    rc, _, _ = cli("put", "k", "@" + txt + ".missing", "--node", node_a)
    t.check("ringnet put KEY @missing: exit 2", rc == 2, str(rc))


def main():
    logdir = tempfile.mkdtemp(prefix="rnf-files-")
    nodes = []
    rng = random.Random(11)
    try:
        ok, _ = start_ring(BIN, [f"f{i}" for i in range(5)], logdir, nodes,
                           args=["--max-file", "60M", "--log-level", "warn",
                                 "--files-gc-delay-ms", "12000"])
        t.check("5 nodes converge", ok)
        files = {
            "empty": b"",
            "one.txt": b"x",
            "chunk.bin": rng.randbytes(MiB),
            "chunk+1.bin": rng.randbytes(MiB + 1),
            "big.bin": rng.randbytes(50 * MiB),
        }
        # ---- round trips, each through another node than its upload ----
        for i, (name, data) in enumerate(files.items()):
            st, ans = put_file(nodes[i % 5], name, data)
            t.check(f"upload {name}: 200", st == 200, f"{st} {ans}")
            t.check(f"upload {name}: the answer", ans.get("status") == "uploaded" and
                    ans.get("filename") == name and ans.get("size") == len(data) and
                    ans.get("sha256") == hashlib.sha256(data).hexdigest() and
                    ans.get("chunks") == (len(data) + MiB - 1) // MiB, str(ans))
        for i, (name, data) in enumerate(files.items()):
            st, h, body = download(nodes[(i + 2) % 5], name)
            t.check(f"download {name} through another node: byte for byte",
                    st == 200 and body == data, f"{st} {len(body)} of {len(data)}")
            t.check(f"download {name}: headers", h.get("content-length") == str(len(data)) and
                    h.get("etag") == '"%s"' % hashlib.sha256(data).hexdigest() and
                    name in h.get("content-disposition", ""), str(h))
        # multipart, as curl -F 'file=@mydoc.txt' sends it
        doc = b"hello from a form\n" * 1000
        body, hdrs = multipart("file", "mydoc.txt", doc)
        st, _, ans = call(nodes[1], "POST", "/upload", body=body, headers=hdrs)
        t.check("POST /upload multipart: 200", st == 200 and js(ans).get("filename") == "mydoc.txt"
                and js(ans).get("size") == len(doc), f"{st} {ans[:200]}")
        st, h, got = download(nodes[4], "mydoc.txt")
        t.check("the form's file downloads", st == 200 and got == doc, f"{st} {len(got)}")
        t.check("a .txt is text/plain", h.get("content-type", "").startswith("text/plain"),
                h.get("content-type"))
        # ---- Range at the edges ----
        data = files["chunk+1.bin"]
        n = len(data)
        ranges = [("bytes=0-0", 0, 0), (f"bytes={MiB - 1}-{MiB}", MiB - 1, MiB),
                  (f"bytes={n - 1}-", n - 1, n - 1), ("bytes=-1", n - 1, n - 1),
                  (f"bytes=-{n + 10}", 0, n - 1), (f"bytes=5-{n + 100}", 5, n - 1),
                  (f"bytes={MiB}-{MiB}", MiB, MiB)]
        for spec, a, b in ranges:
            st, h, body = download(nodes[3], "chunk+1.bin", headers={"Range": spec})
            t.check(f"Range {spec}", st == 206 and body == data[a:b + 1] and
                    h.get("content-range") == f"bytes {a}-{b}/{n}", f"{st} {h.get('content-range')}")
        big = files["big.bin"]
        a, b = 17 * MiB - 3, 19 * MiB + 5
        st, h, body = download(nodes[0], "big.bin", headers={"Range": f"bytes={a}-{b}"})
        t.check("Range inside the 50 MiB file, across chunks", st == 206 and body == big[a:b + 1],
                f"{st} {len(body)}")
        for spec in (f"bytes={n}-", f"bytes={n + 5}-{n + 9}"):
            st, h, _ = download(nodes[3], "chunk+1.bin", headers={"Range": spec})
            t.check(f"Range {spec} outside the file: 416", st == 416 and
                    h.get("content-range") == f"bytes */{n}", f"{st} {h}")
        st, h, _ = download(nodes[3], "empty", headers={"Range": "bytes=0-0"})
        t.check("Range on an empty file: 416", st == 416, str(st))
        # ---- HEAD ----
        st, h, body = call(nodes[2], "HEAD", "/download/big.bin")
        t.check("HEAD: headers, no body", st == 200 and body == b"" and
                h.get("content-length") == str(len(big)) and
                h.get("accept-ranges") == "bytes", f"{st} {h}")
        st, _, _ = call(nodes[2], "HEAD", "/download/nothing-here")
        t.check("HEAD of a missing file: 404", st == 404, str(st))
        st, _, body = call(nodes[2], "GET", "/download/nothing-here")
        t.check("GET of a missing file: 404 with a reason", st == 404 and "error" in js(body),
                f"{st} {body}")
        # ---- listing ----
        st, _, body = call(nodes[4], "GET", "/files")
        listed = {f["name"]: f for f in js(body).get("files", [])}
        want = set(files) | {"mydoc.txt"}
        t.check("GET /files lists every file", st == 200 and set(listed) == want,
                f"{st} {sorted(listed)}")
        t.check("the listing's sizes and hashes", all(
            listed[k]["size"] == len(v) and listed[k]["sha256"] == hashlib.sha256(v).hexdigest()
            and listed[k]["uploaded_at"].endswith("Z") for k, v in files.items() if k in listed))
        # ---- bad names ----
        for path, what in (("/files/..%2Fetc", "'../'"), ("/files/%2Fabs", "absolute path"),
                           ("/files/a%2Fb", "a '/'"), ("/files/a%01b", "a control byte"),
                           ("/files/a%00b", "NUL"), ("/files/..", "'..'"),
                           ("/files/" + "n" * 256, "256 bytes")):
            st, _, body = call(nodes[0], "PUT", path, body=b"data")
            t.check(f"a name with {what}: 400 with a reason", st == 400 and
                    js(body).get("error"), f"{st} {body[:120]}")
        st, _, _ = call(nodes[0], "PUT", "/files/" + "n" * 255, body=b"ok")
        t.check("a name of 255 bytes is fine", st == 200, str(st))
        body, hdrs = multipart("file", "../escape.txt", b"nope")
        st, _, ans = call(nodes[0], "POST", "/upload", body=body, headers=hdrs)
        t.check("multipart filename '../escape.txt': 400", st == 400 and js(ans).get("error"),
                f"{st} {ans[:120]}")
        # ---- over --max-file: 413 before the body is sent ----
        s = socket.create_connection(("127.0.0.1", nodes[1].http), timeout=10)
        s.sendall(b"PUT /files/huge HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % (61 * MiB))
        s.settimeout(10)
        first = s.recv(4096)
        s.close()
        t.check("61 MiB over --max-file 60M: 413 with no body sent", first.startswith(b"HTTP/1.1 413"),
                first[:80])
        st, _, _ = call(nodes[1], "GET", "/download/huge")
        t.check("... and no file", st == 404, str(st))
        # ---- a client that goes away mid-upload ----
        wait_for(lambda: False, 3)  # let replication and repair settle
        before = live_records(nodes)
        s = socket.create_connection(("127.0.0.1", nodes[2].http), timeout=10)
        s.sendall(b"PUT /files/gone.bin HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % (10 * MiB))
        s.sendall(rng.randbytes(4 * MiB + 123))
        time.sleep(1.5)
        s.close()
        quiet = wait_for(lambda: metrics(nodes[2].http)["ringnet_files_transfers"] == 0 and
                         metrics(nodes[2].http)['ringnet_files_total{op="aborted"}'] >= 1, 45)
        t.check("the aborted upload ends on its node", quiet)
        st, _, _ = call(nodes[0], "GET", "/download/gone.bin")
        t.check("a disconnected upload leaves no manifest", st == 404, str(st))
        back = wait_for(lambda: live_records(nodes) == before, 45)
        t.check("... and its chunks are collected (live records as before)", back,
                f"{before} before, {live_records(nodes)} now")
        # ---- at most 32 transfers at once per node ----
        held = []
        for _ in range(32):
            s = socket.create_connection(("127.0.0.1", nodes[4].http), timeout=10)
            s.sendall(b"PUT /files/slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
            held.append(s)
        time.sleep(0.5)
        st, _, body = call(nodes[4], "PUT", "/files/one-more", body=b"x")
        t.check("the 33rd transfer at once: 503 with a retry hint", st == 503 and
                js(body).get("retry_after_ms"), f"{st} {body}")
        for s in held:
            s.close()
        time.sleep(0.5)
        st, _, body = call(nodes[4], "PUT", "/files/one-more", body=b"x")
        t.check("... and once they are gone, 200", st == 200, f"{st} {body}")
        st, _, _ = call(nodes[4], "GET", "/download/slow.bin")
        t.check("the 32 dropped uploads left no file", st == 404, str(st))
        # ---- the command line ----
        cli_checks(nodes, logdir, files["chunk+1.bin"])
        # ---- a chunk corrupted on disk ----
        victim = files["chunk+1.bin"][:MiB]
        key = chunk_key(victim)
        hold = holders(nodes, key)
        owner = hold[0]
        owner.stop(signal.SIGKILL)
        path = os.path.join(owner.data, "data.mdb")
        raw = bytearray(open(path, "rb").read())
        probe = victim[1000:1064]
        at = raw.find(probe)
        t.check("the chunk is in its owner's LMDB file", at >= 0)
        count = 0
        while at >= 0:  # every copy of those bytes in the file (old pages too)
            for k in range(0, 64, 7):
                raw[at + k] ^= 0xFF
            count += 1
            at = raw.find(probe, at + 1)
        open(path, "wb").write(bytes(raw))
        owner.start()
        ok, _ = converge(nodes)
        t.check("the owner restarts with its damaged copy", ok)
        seen0 = sum(metrics(n.http)['ringnet_kv_damaged_total{what="seen"}'] for n in nodes)
        other = next(n for n in nodes if n not in hold)
        st, _, body = download(other, "chunk+1.bin")
        t.check("the download with a damaged copy is still right", st == 200 and
                body == files["chunk+1.bin"], f"{st} {len(body)}")
        def damage():  # the metrics are snapshots, at most 100 ms old
            m = [metrics(n.http) for n in nodes]
            return (sum(x['ringnet_kv_damaged_total{what="seen"}'] for x in m),
                    sum(x['ringnet_kv_damaged_total{what="repaired"}'] for x in m))
        def scrubbed(n):
            return metrics(n.http)['ringnet_kv_scrub_total{what="damaged"}']
        # the download rewrites the damaged copy, unless the owner's scrub found it first
        # (then it was dropped and the read copied a good one back)
        wait_for(lambda: damage()[1] >= 1 or scrubbed(owner) >= 1, 5)
        seen, fixed = damage()
        t.check("the damaged copy was seen and rewritten (by the read or the scrub)",
                (seen > seen0 and fixed >= 1) or scrubbed(owner) >= 1,
                f"seen {seen0}->{seen}, repaired {fixed}, scrubbed {scrubbed(owner)}")
        # ---- a chunk damaged on a replica that nobody reads: the scrub finds it ----
        name2 = next(k for k, v in files.items() if len(v) > 2 * MiB and k != "chunk+1.bin")
        victim2 = files[name2][MiB:2 * MiB]
        hold2 = holders(nodes, chunk_key(victim2))
        replica = next(n for n in hold2[1:] if n is not owner)
        replica.stop(signal.SIGKILL)
        path = os.path.join(replica.data, "data.mdb")
        raw = bytearray(open(path, "rb").read())
        probe = victim2[5000:5064]
        at = raw.find(probe)
        t.check("the second chunk is in its replica's LMDB file", at >= 0)
        while at >= 0:
            for k in range(0, 64, 7):
                raw[at + k] ^= 0xFF
            at = raw.find(probe, at + 1)
        open(path, "wb").write(bytes(raw))
        replica.start()
        ok, _ = converge(nodes)
        t.check("the replica restarts with its damaged copy", ok)
        t.check("its scrub finds the damaged copy without any read of it",
                wait_for(lambda: scrubbed(replica) >= 1, 60), str(scrubbed(replica)))
        # two whole anti-entropy rounds of the chunk's primary after that: the one that
        # follows the drop pushes the copy back (the download below is the proof)
        def rounds():
            return metrics(hold2[0].http)["ringnet_kv_sync_rounds_total"]
        r0 = rounds()
        t.check("the chunk's primary runs two more anti-entropy rounds",
                wait_for(lambda: rounds() >= r0 + 4, 30), f"{r0} -> {rounds()}")
        others = [n for n in hold2 if n is not replica]
        for n in others:  # the repaired copy is the only one left
            n.stop(signal.SIGKILL)
        reader = next(n for n in nodes if n not in hold2)
        st, _, body = download(reader, name2)
        t.check("with the chunk's two other holders down, the file downloads intact from "
                "the scrubbed replica's copy", st == 200 and body == files[name2],
                f"{st} {len(body)}")
        for n in others:
            n.start()
        ok, _ = converge(nodes)
        t.check("the two come back", ok)
        # ---- a copy damaged under a running node that has checked it before ----
        # (src/files/seen.h: a node that has checked a chunk's contents with SHA-256 checks
        # them again by their GMAC tag; damage must still be caught)
        big = files["big.bin"]
        victim3 = big[7 * MiB:8 * MiB]
        entry = holders(nodes, chunk_key(victim3))[1]  # a replica: it reads its own copy
        def checks(n, by):
            return metrics(n.http)[f'ringnet_files_checks_total{{by="{by}"}}']
        st, _, body = download(entry, "big.bin")  # checks what it has not seen yet
        t.check("a download through a chunk's replica", st == 200 and body == big, str(st))
        time.sleep(0.3)  # the metrics are snapshots, at most 100 ms old
        tag0 = checks(entry, "tag")
        st, _, body = download(entry, "big.bin")
        t.check("the same again: every chunk, its own copies and the others' alike, is "
                "checked by its tag", st == 200 and body == big and wait_for(
                    lambda: checks(entry, "tag") >= tag0 + len(big) // MiB, 5),
                f"{st} tag checks {tag0} -> {checks(entry, 'tag')}")
        path = os.path.join(entry.data, "data.mdb")
        raw = open(path, "rb").read()
        probe = victim3[9000:9064]
        spots = []
        at = raw.find(probe)
        while at >= 0:
            spots.append(at)
            at = raw.find(probe, at + 1)
        t.check("the chunk is in the replica's LMDB file", spots != [])
        with open(path, "r+b") as f:  # under the running node: its map sees the change
            for at in spots:
                f.seek(at)
                f.write(bytes(b ^ 0xFF for b in probe))
        bad0, scr0 = metrics(entry.http)["ringnet_files_bad_local_total"], scrubbed(entry)
        st, _, body = download(entry, "big.bin")
        t.check("its copy damaged while it runs: the download is still right", st == 200 and
                body == big, f"{st} {len(body)}")
        # caught by the download's read of its own copy, unless the scrub came first
        t.check("... and the damaged copy was caught", wait_for(
            lambda: metrics(entry.http)["ringnet_files_bad_local_total"] >= bad0 + 1 or
            scrubbed(entry) >= scr0 + 1, 5),
                f"bad local reads {bad0} -> {metrics(entry.http)['ringnet_files_bad_local_total']}")
        # the copy was dropped: two rounds of the chunk's primary bring it back before two
        # of its holders may go down below
        prim3 = holders(nodes, chunk_key(victim3))[0]
        r3 = metrics(prim3.http)["ringnet_kv_sync_rounds_total"]
        t.check("the chunk's primary runs two more anti-entropy rounds", wait_for(
            lambda: metrics(prim3.http)["ringnet_kv_sync_rounds_total"] >= r3 + 4, 30))
        # ---- kill -9 the chunk's two other holders: two of five nodes ----
        for n in hold[1:]:
            n.stop(signal.SIGKILL)
        alive = [n for n in nodes if n not in hold[1:]]
        for name, data in list(files.items()) + [("mydoc.txt", doc)]:
            st, _, body = download(alive[len(name) % len(alive)], name)
            t.check(f"after kill -9 of 2 of 5: {name} intact", st == 200 and body == data,
                    f"{st} {len(body)} of {len(data)}")
        # ---- delete ----
        st, _, body = call(alive[0], "DELETE", "/files/big.bin")
        t.check("DELETE: 200", st == 200 and js(body).get("status") == "deleted", f"{st} {body}")
        st, _, _ = call(alive[1], "GET", "/download/big.bin")
        t.check("a deleted file is gone", st == 404, str(st))
        st, _, body = call(alive[1], "DELETE", "/files/big.bin")
        t.check("DELETE again: 404", st == 404, str(st))
    finally:
        stop_all(nodes, t, logdir)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
