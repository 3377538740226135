#!/usr/bin/env python3
"""`ringnet cast` with five real nodes on 127.0.0.1, joined in a line (n0 - n1 - n2 - n3 - n4),
so that data for n4 is relayed by three nodes:

- a file of a few MiB reaches every node, byte-identical, under DATA/cast/<name>; the
  CLI exits 0 and its last stdout line is the JSON the contract names;
- a destination killed (SIGKILL) halfway through a slower cast, with one of the pieces it
  holds corrupted on disk, restarts, resumes from the pieces that still match their hash
  (exactly those: the status counts them) and ends with a byte-identical file;
- bad requests get clear errors: a missing file, a body that is not JSON, a wrong method,
  and usage errors of the CLI;
- with a cluster key the same cast works over sealed links, and a node with another key
  gets no link and no file."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from ringtest import Checks, Node, get, request, stop_all

BIN = sys.argv[1]
t = Checks("cast")
check = t.check


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cast(args, timeout=60):
    return subprocess.run([BIN, "cast"] + args, capture_output=True, text=True, timeout=timeout)


def status(n):
    return get(n.http, "/cast/status")[1]


def wait_known(nodes, count, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(len(status(n).get("known", [])) == count for n in nodes):
            return True
        time.sleep(0.2)
    return False


with tempfile.TemporaryDirectory(prefix="rnk-cast-") as tmp:
    nodes = []
    try:
        for i in range(5):
            nodes.append(Node(BIN, f"n{i}", tmp, join=nodes[-1] if nodes else None))
        check("every node knows all five through the links", wait_known(nodes, 5),
              json.dumps([status(n).get("known") for n in nodes]))
        check("n4 has one link (to n3): the line is real",
              [l["id"] for l in status(nodes[4])["links"]] == ["n3"], status(nodes[4])["links"])

        # ---- one file to every node ----
        src = os.path.join(tmp, "payload.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(3 * 1024 * 1024 + 12345))
        r = cast([src, "--node", f"http://127.0.0.1:{nodes[0].http}", "--json",
                  "--timeout", "40"])
        check("cast exits 0", r.returncode == 0, r.stderr + r.stdout)
        check("stderr has no progress lines when piped", "\033[" not in r.stderr, r.stderr)
        try:
            last = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            last = {}
        check("the last stdout line is the JSON summary",
              last.get("file") == "payload.bin" and last.get("size") == os.path.getsize(src),
              r.stdout)
        dests = {d["id"]: d for d in last.get("destinations", [])}
        check("four destinations, each with a completion time and a rate",
              sorted(dests) == ["n1", "n2", "n3", "n4"] and
              all(d["done_s"] > 0 and d["rate_bps"] > 0 and d["bytes"] == last["size"]
                  for d in dests.values()), r.stdout)
        check("U is the last completion",
              dests and abs(last["u_s"] - max(d["done_s"] for d in dests.values())) < 1e-6,
              r.stdout)
        want = sha(src)
        for n in nodes[1:]:
            p = os.path.join(n.data, "cast", "payload.bin")
            check(f"{n.name} holds a byte-identical copy", os.path.exists(p) and sha(p) == want)
            check(f"{n.name} left no part file",
                  not os.path.exists(os.path.join(n.data, "cast", ".payload.bin.part")))

        # ---- a destination killed halfway, a piece corrupted, restarted ----
        big = os.path.join(tmp, "second.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(4 * 1024 * 1024))
        piece = 65536
        # every node sends at most 1.5 MB/s, so the cast takes a few seconds
        bg = subprocess.Popen([BIN, "cast", big, "--node", f"127.0.0.1:{nodes[0].http}",
                               "--piece-size", str(piece), "--rate", "1500000", "--json",
                               "--timeout", "45"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        victim = nodes[4]
        total = (os.path.getsize(big) + piece - 1) // piece
        held = 0
        deadline = time.time() + 30
        while time.time() < deadline:
            x = status(victim).get("transfer") or {}
            if x.get("file") == "second.bin":
                held = x.get("held", 0)
                if held >= total // 3:
                    break
            time.sleep(0.05)
        check("the victim got part of the file before the kill", 0 < held < total,
              f"{held} of {total}")
        victim.stop(signal.SIGKILL)
        part = os.path.join(victim.data, "cast", ".second.bin.part")
        with open(big, "rb") as f:
            orig = f.read()
        with open(part, "r+b") as f:
            disk = f.read()
            good = [i for i in range(total)
                    if disk[i * piece:(i + 1) * piece] == orig[i * piece:(i + 1) * piece]]
            check("the part file holds whole verified pieces", len(good) >= held - 1,
                  f"{len(good)} match, status said {held}")
            bad = good[len(good) // 2] if good else 0
            f.seek(bad * piece + 100)
            f.write(bytes([orig[bad * piece + 100] ^ 0xFF]))
        victim.start()
        try:
            out, err = bg.communicate(timeout=50)
        except subprocess.TimeoutExpired:
            bg.kill()
            out, err = bg.communicate()
        check("the cast completes after the restart", bg.returncode == 0, err + out)
        p = os.path.join(victim.data, "cast", "second.bin")
        check("the restarted node holds a byte-identical copy",
              os.path.exists(p) and sha(p) == sha(big))
        st = status(victim).get("stats", {})
        check("it resumed from exactly the pieces that still matched",
              st.get("resumed") == len(good) - 1, f"{st} vs {len(good) - 1}")
        check("it fetched only what it lacked (and the corrupted piece)",
              st.get("pieces_in", 0) <= total - (len(good) - 1) + 2, st)
        for n in nodes[1:4]:
            q = os.path.join(n.data, "cast", "second.bin")
            check(f"{n.name} holds the second file", os.path.exists(q) and sha(q) == sha(big))

        # ---- bad input ----
        code, body = request(nodes[0].http, "/cast", "POST", {"path": "/no/such/file"})
        check("a missing file is a 400 that names it",
              code == 400 and "/no/such/file" in body.get("error", ""), (code, body))
        code, body = request(nodes[0].http, "/cast", "POST", b"not json")
        check("a body that is not JSON is a 400", code == 400 and "JSON" in body.get("error", ""),
              (code, body))
        code, body = request(nodes[0].http, "/cast", "POST", {"path": src, "piece_size": 7})
        check("a piece size out of range is a 400", code == 400, (code, body))
        code, body = request(nodes[0].http, "/cast", "GET")
        check("GET /cast is a 405", code == 405, (code, body))
        r = cast(["--node", f"127.0.0.1:{nodes[0].http}"])
        check("cast without a FILE is a usage error", r.returncode == 2 and "FILE" in r.stderr,
              r.stderr)
        r = cast([src, "--piece-size", "12"])
        check("a bad --piece-size is a usage error", r.returncode == 2, r.stderr)
        r = cast([src, "--node", "127.0.0.1:1", "--timeout", "2"])
        check("an unreachable node exits 3", r.returncode == 3, r.stderr)
    finally:
        stop_all(nodes, t, tmp)

# ---- with a cluster key (as `make run`'s cluster has): links are sealed both ways ----
with tempfile.TemporaryDirectory(prefix="rnk-castkey-") as tmp:
    nodes = []
    try:
        for name, k in (("key", os.urandom(32)), ("wrong", os.urandom(32))):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(k.hex() + "\n")
        keyed = ["--key", os.path.join(tmp, "key")]
        for i in range(3):
            nodes.append(Node(BIN, f"k{i}", tmp, join=nodes[-1] if nodes else None, args=keyed))
        stranger = Node(BIN, "kx", tmp, join=nodes[2], args=["--key", os.path.join(tmp, "wrong")])
        check("keyed nodes link up through the line", wait_known(nodes, 3),
              json.dumps([status(n).get("known") for n in nodes]))
        src = os.path.join(tmp, "keyed.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(2 * 1024 * 1024 + 777))
        r = cast([src, "--node", f"127.0.0.1:{nodes[0].http}", "--json", "--timeout", "40"])
        check("a cast over keyed links exits 0", r.returncode == 0, r.stderr + r.stdout)
        for n in nodes[1:]:
            p = os.path.join(n.data, "cast", "keyed.bin")
            check(f"{n.name} holds a byte-identical copy over sealed links",
                  os.path.exists(p) and sha(p) == sha(src))
        check("a node with another key gets no link and no file",
              not status(stranger).get("links") and
              not os.path.exists(os.path.join(stranger.data, "cast", "keyed.bin")),
              status(stranger))
        nodes.append(stranger)
    finally:
        stop_all(nodes, t, tmp)

sys.exit(t.finish())
