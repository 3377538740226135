#!/usr/bin/env python3
"""Replication as a user would rely on it, on 5 real node processes (R = 3, W = 2).

20 concurrent writers put and delete KEYS keys through random nodes while two nodes are
killed with kill -9 at once and a third is paused (SIGSTOP) for 10 s. A write whose
answer was unclear (503 "unknown", a timeout) is retried with the same Idempotency-Key
until it is acknowledged, so each key's latest acknowledged state is known. Afterwards:
every key reads back with that state from every node, every key is on exactly 3 nodes
again (the records stored over all nodes add up to 3 per key), nothing deleted comes
back (a delete's tombstone may since have been collected). Then a kill -9 of all five and a restart: the same holds. Then a graceful restart of
all five, reading from the first moment on: every answer is the right value or a 503,
never a 404."""
import random
import signal
import sys
import tempfile
import threading
import time

from ringtest import Checks, Client, Node, converge, dump_logs, get, metrics

BIN = sys.argv[1]
KEYS = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
WRITERS = 20
t = Checks("kv_replication")


class Cluster:
    def __init__(self, nodes):
        self.nodes = nodes
        self.usable = set(range(len(nodes)))
        self.lock = threading.Lock()

    def pick(self):
        with self.lock:
            return self.nodes[random.choice(sorted(self.usable))]

    def set_usable(self, idx, ok):
        with self.lock:
            (self.usable.add if ok else self.usable.discard)(idx)


def writer(cl, wid, keys, final, stats, stop_at):
    rnd = random.Random(wid)
    cli = Client()
    ops = []
    for k in keys:
        ops.append((k, "put"))
    for k in rnd.sample(keys, len(keys) // 5):
        ops.append((k, "put"))
    for k in rnd.sample(keys, len(keys) // 10):
        ops.append((k, "del"))
    for n, (k, op) in enumerate(ops):
        rid = f"w{wid}-{n}"
        value = {"w": wid, "n": n} if op == "put" else None
        for attempt in range(400):  # until acknowledged: a retry is safe, same request id
            if time.time() > stop_at:
                stats["gave_up"] += 1
                final[k] = ("uncertain", final.get(k), value)
                break
            node = cl.pick()
            if op == "put":
                status, body = cli.req(node, "POST", "/kv", {"key": k, "value": value},
                                       {"Idempotency-Key": rid})
            else:
                status, body = cli.req(node, "DELETE", f"/kv/{k}", None,
                                       {"Idempotency-Key": rid})
            if status == 200:
                final[k] = ("value", value) if op == "put" else ("deleted",)
                stats["acked"] += 1
                stats["replayed"] += bool(body.get("replayed"))
                break
            stats["retries"] += 1
            if status == 503 and body.get("outcome") not in ("unknown", "not_applied"):
                stats["bad_503"] += 1
            time.sleep(0.05 if status is None else 0.2)


def check_reads(cl, final, nodes, what, sample=None):
    """Every key from every node (or from `sample` nodes each): the latest acknowledged state."""
    keys = sorted(final)
    wrong = []
    lock = threading.Lock()

    def worker(part):
        cli = Client()
        for k in part:
            targets = nodes if sample is None else random.Random(k).sample(nodes, sample)
            for n in targets:
                st = final[k]
                for attempt in range(20):
                    status, body = cli.req(n, "GET", f"/kv/{k}")
                    if status != 503 and status is not None:
                        break
                    time.sleep(0.25)
                ok = (st[0] == "value" and status == 200 and body.get("value") == st[1]) or \
                     (st[0] == "deleted" and status == 404)
                if st[0] == "uncertain":
                    prev, value = st[1], st[2]
                    ok = (status == 200 and body.get("value") in (value, prev and prev[-1])) or \
                         status == 404
                if not ok:
                    with lock:
                        wrong.append((k, n.name, st, status, body))
    parts = [keys[i::16] for i in range(16)]
    th = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for x in th:
        x.start()
    for x in th:
        x.join()
    t.check(f"every key reads back its latest acknowledged state {what}", not wrong,
            (len(wrong), wrong[:5]))


def stored_totals(nodes):
    """Records and tombstones stored over all nodes, from /metrics."""
    total = tombs = 0
    for n in nodes:
        try:
            m = metrics(n.http)
        except OSError:
            return None, None
        total += int(m.get("ringnet_keys_stored", 0))
        tombs += int(m.get("ringnet_tombstones_stored", 0))
    return total, tombs


def wait_replicated(nodes, final, what, timeout=120):
    """Every key that has a value on exactly 3 nodes: the values stored over all nodes add
    up to 3 per such key (tombstones counted apart: they are collected after a while, and
    there are never more than 3 per deleted key)."""
    live = sum(1 for st in final.values() if st[0] == "value")
    dead = len(final) - live
    start, last = time.time(), 0
    values = tombs = None
    while time.time() - start < timeout:
        total, tombs = stored_totals(nodes)
        values = None if total is None else total - tombs
        if values == 3 * live and tombs <= 3 * dead:
            break
        if time.time() - last > 10:
            print(f"kv_replication: {what}: {values} values, {tombs} tombstones after "
                  f"{time.time() - start:.0f} s")
            last = time.time()
        time.sleep(0.5)
    took = time.time() - start
    print(f"kv_replication: {what}: {values} values for {live} keys, {tombs} tombstones for "
          f"{dead} deleted keys, after {took:.1f} s")
    ok = values == 3 * live and tombs is not None and tombs <= 3 * dead
    if not ok:  # what each node holds and sees, for whoever reads the failure
        for n in sorted(nodes, key=lambda n: n.id):
            m = {k: v for k, v in metrics(n.http).items()
                 if k.startswith(("ringnet_keys_stored", "ringnet_tombstones", "ringnet_kv_sync",
                                  "ringnet_kv_repair", "ringnet_kv_handoffs", "ringnet_kv_pending"))}
            _, r = get(n.http, "/ring")
            print(n.name, n.id[:8], "pred", (r["predecessor"] or {}).get("id", "")[:8],
                  "succ", [s["id"][:8] for s in r["successors"]], m)
    t.check(f"every key on exactly 3 nodes {what}", ok, (values, tombs, live, dead))
    return took


def main():
    random.seed(5)
    with tempfile.TemporaryDirectory() as logdir:
        nodes = []
        try:
            nodes.append(Node(BIN, "rep-0", logdir))
            for i in range(1, 5):
                nodes.append(Node(BIN, f"rep-{i}", logdir, join=nodes[0]))
            ok, state = converge(nodes)
            t.check("ring converges", ok, state)
            time.sleep(6)  # past the settle time: the ring is still

            cl = Cluster(nodes)
            allkeys = [f"k-{i}" for i in range(KEYS)]
            final = {}
            stats = {"acked": 0, "retries": 0, "replayed": 0, "gave_up": 0, "bad_503": 0}
            stop_at = time.time() + 240
            th = [threading.Thread(target=writer,
                                   args=(cl, w, allkeys[w::WRITERS], final, stats, stop_at))
                  for w in range(WRITERS)]
            t0 = time.time()
            for x in th:
                x.start()
            total_ops = KEYS + KEYS // 5 + KEYS // 10
            # two nodes die at once a third of the way in, a third pauses half-way
            while stats["acked"] < total_ops // 3 and any(x.is_alive() for x in th):
                time.sleep(0.05)
            victims = [1, 3]
            for v in victims:
                cl.set_usable(v, False)
            for v in victims:
                nodes[v].proc.kill()
            print(f"kv_replication: killed {[nodes[v].name for v in victims]} after "
                  f"{stats['acked']} acknowledged writes")
            while stats["acked"] < total_ops // 2 and any(x.is_alive() for x in th):
                time.sleep(0.05)
            cl.set_usable(4, False)
            nodes[4].proc.send_signal(signal.SIGSTOP)
            time.sleep(10)
            nodes[4].proc.send_signal(signal.SIGCONT)
            cl.set_usable(4, True)
            for x in th:
                x.join()
            print(f"kv_replication: {stats} in {time.time() - t0:.1f} s")
            t.check("every write was acknowledged in the end", stats["gave_up"] == 0, stats)
            t.check("every 503 said whether the write may be applied", stats["bad_503"] == 0, stats)
            for v in victims:
                nodes[v].join = None
                nodes[v].proc.wait()
                nodes[v].start()
            ok, state = converge(nodes)
            t.check("ring whole after the nodes return", ok, state)
            wait_replicated(nodes, final, "after two kill -9 and a SIGSTOP")
            check_reads(cl, final, nodes, "from every node, after the failures")

            # a power cut: every node at once, then all back on their data
            for n in nodes:
                n.proc.kill()
            for n in nodes:
                n.proc.wait()
                n.join = None
                n.start()
            ok, state = converge(nodes)
            t.check("ring whole after every node was killed", ok, state)
            check_reads(cl, final, nodes, "after a power cut", sample=2)
            wait_replicated(nodes, final, "after a power cut")

            # a graceful restart of all five, read from the first moment on: the right
            # value or a 503, never a 404 for a key that exists
            present = [k for k in sorted(final) if final[k][0] == "value"][:1000]
            for n in nodes:
                n.proc.send_signal(signal.SIGTERM)
            codes = [n.proc.wait(timeout=20) for n in nodes]
            t.check("every node exits 0", codes == [0] * 5, codes)
            for n in nodes:
                n.join = None
                n.start()
            cli = Client()
            seen = {"ok": 0, "503": 0, "404": 0, "wrong": 0, "other": 0}
            bad = []
            end = time.time() + 20
            i = 0
            while time.time() < end:
                k = present[i % len(present)]
                i += 1
                n = nodes[i % 5]
                status, body = cli.req(n, "GET", f"/kv/{k}", timeout=3)
                if status == 200 and body.get("value") == final[k][1]:
                    seen["ok"] += 1
                elif status == 503:
                    seen["503"] += 1
                elif status == 404:
                    seen["404"] += 1
                    bad.append((k, n.name, body))
                elif status == 200:
                    seen["wrong"] += 1
                    bad.append((k, n.name, body))
                else:
                    seen["other"] += 1
            print(f"kv_replication: reads during a restart: {seen}")
            t.check("no false 404 and no wrong value while the ring restarts",
                    seen["404"] == 0 and seen["wrong"] == 0, bad[:5])
            t.check("the restarted ring answers", seen["ok"] > 0, seen)
        except Exception:
            t.check("the test ran to its end", False, "exception")
            raise
        finally:
            for n in nodes:
                if n.proc.poll() is None:
                    try:
                        n.proc.send_signal(signal.SIGCONT)
                    except OSError:
                        pass
                n.stop()
            if t.failures:
                dump_logs(logdir)
    return t.finish()


sys.exit(main())
