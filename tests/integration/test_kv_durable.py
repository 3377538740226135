#!/usr/bin/env python3
"""An acknowledged put is durable: the node writes each commit as a frame into its
write-ahead log and makes it durable with one fdatasync of the log on its thread pool
(docs/architecture.md, Store). With that sync held back (tests/integration/fsync_gate.c,
LD_PRELOAD: fdatasync off the loop thread waits while a gate file exists):
  - a put is not answered while its commit is not durable, and is answered once the gate
    opens;
  - a later put's commit makes no earlier one durable (nothing on the loop syncs it): both
    wait, and both are answered when the gate opens;
  - gets of a key whose write is not durable wait too; nothing is lost: after the gate
    opens and a kill -9 (which takes LMDB's open transaction with it: the log gives the
    records back), every acknowledged key is read back.
Usage: test_kv_durable.py path/to/ringnet path/to/libfsync_gate.so"""
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ringtest import Checks, Node  # noqa: E402

BIN, SHIM = sys.argv[1], sys.argv[2]
t = Checks("kv_durable")


class Call(threading.Thread):
    """One HTTP request on its own connection, answered whenever the node answers."""

    def __init__(self, port, method, path, body=None):
        super().__init__(daemon=True)
        self.args, self.status, self.body = (port, method, path, body), None, None
        self.start()

    def run(self):
        port, method, path, body = self.args
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request(method, path, body=body)
        r = c.getresponse()
        self.body = r.read()
        self.status = r.status

    def answered(self, secs):
        self.join(secs)
        return not self.is_alive()


def put(port, key, value):
    return Call(port, "POST", "/kv", json.dumps({"key": key, "value": value}))


def main():
    logdir = tempfile.mkdtemp(prefix="rnf-durable-")
    gate = os.path.join(logdir, "gate")
    env_before = dict(os.environ)
    os.environ["LD_PRELOAD"] = SHIM
    os.environ["RN_FSYNC_GATE"] = gate
    # the sanitizer runtime of the test build wants to come first; the shim only adds
    os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                  ":verify_asan_link_order=0").lstrip(":")
    node = None
    try:
        node = Node(BIN, "d1", logdir, args=["--replicas", "1", "--write-quorum", "1",
                                             "--log-level", "warn"])
        port = node.http
        a0 = put(port, "before", 0)
        t.check("a put with the gate open is answered", a0.answered(20) and a0.status == 200,
                f"{a0.status} {a0.body}")
        open(gate, "w").close()  # syncs off the loop wait from here
        time.sleep(0.2)  # (a sync begun before the gate closed ends first)
        a = put(port, "a", 1)
        t.check("a put whose commit is not durable is not answered",
                not a.answered(1.5), f"{a.status} {a.body}")
        g = Call(port, "GET", "/kv/a")
        t.check("a get of that key waits too", not g.answered(0.5), f"{g.status} {g.body}")
        b = put(port, "b", 2)
        t.check("a second put waits too", not b.answered(1.5), f"{b.status} {b.body}")
        t.check("... and it made the first no more durable", not a.answered(0.1),
                f"{a.status} {a.body}")
        os.unlink(gate)
        t.check("the gate open: the first answered", a.answered(20) and a.status == 200,
                f"{a.status} {a.body}")
        t.check("... and the get with it", g.answered(20) and g.status == 200 and
                json.loads(g.body).get("value") == 1, f"{g.status} {g.body}")
        t.check("... and the second", b.answered(20) and b.status == 200,
                f"{b.status} {b.body}")
        # many puts at once, then kill -9: every acknowledged one is read back
        calls = [put(port, f"m{i}", i) for i in range(40)]
        acked = [i for i, c in enumerate(calls) if c.answered(30) and c.status == 200]
        t.check("40 concurrent puts acknowledged", len(acked) == 40, str(len(acked)))
        node.stop(signal.SIGKILL)
        node.start()
        lost = []
        for key, want in [("before", 0), ("a", 1), ("b", 2)] + [(f"m{i}", i) for i in acked]:
            c = Call(port, "GET", f"/kv/{key}")
            ok = c.answered(20) and c.status == 200 and json.loads(c.body).get("value") == want
            if not ok:
                lost.append(key)
        t.check("after kill -9 every acknowledged put is there", not lost, str(lost))
    finally:
        if os.path.exists(gate):
            os.unlink(gate)
        if node:
            node.stop()
        os.environ.clear()
        os.environ.update(env_before)
        if t.failures:
            for name in os.listdir(logdir):
                if name.endswith(".log"):
                    print("----", name)
                    print(open(os.path.join(logdir, name)).read()[-3000:])
        shutil.rmtree(logdir, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
