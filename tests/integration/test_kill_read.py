#!/usr/bin/env python3
"""No false 404 after a kill -9 right after a ring forms (real processes).

Five nodes start one after the other (R = 3, W = 2) while KEYS keys are written through
random nodes (each retried with its Idempotency-Key until acknowledged: a fifth while the
first node is alone, a fifth with two nodes, ...), the rest once the ring has formed; right
after the last acknowledgement one node is killed with kill -9. For READ_S seconds,
readers then GET every key in turn through the four others: an answer is the
acknowledged value or a 503 (unsure, retry), never a 404 and never another value. Then
every key must read back through every live node. Round 0 kills the node after the first
one: the first held every key written while it was alone, and is a replica of none of
that node's keys once it is gone. Their new owner used to be sure of "not found" once its
view had been still for settle_ms (5 s), before the first node's handoff, which waits for
its own view to be still for cover_ms (8 s): 451 false 404s from about 7 s after the kill
in one such round. Now "not found" waits cover_ms + 2 sync_ms (kv.c, sure_absent), so
READ_S should reach well past it (CTest: 20 s). Further rounds (argument ROUNDS): the
owner of the most keys, the first node, a random one.

usage: test_kill_read.py RINGNET [KEYS [READ_S [ROUNDS]]]"""
import random
import shutil
import sys
import tempfile
import threading
import time

from ringtest import Checks, Client, Node, converge, dump_logs, owner

BIN = sys.argv[1]
KEYS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
READ_S = float(sys.argv[3]) if len(sys.argv) > 3 else 10
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 2
t = Checks("kill_read")


def write_all(nodes, keys, rnd):
    """Each key once, through random nodes, until acknowledged; returns the values."""
    acked = {}
    lock = threading.Lock()

    def worker(part, seed):
        r = random.Random(seed)
        cli = Client()
        for k in part:
            value = {"k": k, "v": r.randrange(1 << 30)}
            for attempt in range(200):
                st, _ = cli.req(r.choice(nodes), "POST", "/kv", {"key": k, "value": value},
                                {"Idempotency-Key": "w-" + k})
                if st == 200:
                    with lock:
                        acked[k] = value
                    break
                time.sleep(0.1)
    parts = [keys[i::8] for i in range(8)]
    th = [threading.Thread(target=worker, args=(p, rnd.random())) for p in parts]
    for x in th:
        x.start()
    for x in th:
        x.join()
    return acked


def read_loop(live, acked, seconds):
    """Readers go round every key through the live nodes until the time is up; returns
    (answers by status, false 404s, wrong values, when the first false 404 came)."""
    keys = sorted(acked)
    stop_at = time.time() + seconds
    t0 = time.time()
    counts, bad404, wrong = {}, [], []
    lock = threading.Lock()

    def worker(i):
        cli = Client()
        n = i
        while time.time() < stop_at:
            for k in keys[i::6]:
                if time.time() >= stop_at:
                    break
                node = live[n % len(live)]
                n += 1
                st, body = cli.req(node, "GET", f"/kv/{k}", timeout=4)
                with lock:
                    counts[st] = counts.get(st, 0) + 1
                    if st == 404:
                        bad404.append((round(time.time() - t0, 2), k, node.name))
                    elif st == 200 and body.get("value") != acked[k]:
                        wrong.append((k, node.name, body.get("value")))
    th = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    return counts, bad404, wrong


def final_reads(live, acked):
    cli, missing = Client(), []
    for k, v in sorted(acked.items()):
        for node in live:
            for attempt in range(40):
                st, body = cli.req(node, "GET", f"/kv/{k}")
                if st != 503 and st is not None:
                    break
                time.sleep(0.25)
            if st != 200 or body.get("value") != v:
                missing.append((k, node.name, st))
    return missing


def one_round(rnd, logdir, rno, pick, early):
    nodes = []
    try:
        keys = [f"key-{rno}-{i}" for i in range(KEYS)]
        acked = {}
        for i in range(5):
            nodes.append(Node(BIN, f"r{rno}n{i}", logdir, join=nodes[0] if nodes else None,
                              args=["--log-level", "warn"]))
            if early and i < 4:  # a share of the keys written while the ring grows
                share = keys[i * len(keys) // 5:(i + 1) * len(keys) // 5]
                acked.update(write_all(nodes, share, rnd))
        ok, state = converge(nodes)
        t.check(f"round {rno}: 5 nodes form a ring", ok, str(state))
        acked.update(write_all(nodes, [k for k in keys if k not in acked], rnd))
        t.check(f"round {rno}: every write acknowledged", len(acked) == len(keys),
                f"{len(acked)} of {len(keys)}")
        if pick == "after-first":
            # the node after the seed: the seed held every key written while it was alone,
            # and once that node is gone the seed is a replica of none of its keys
            ring = sorted(nodes, key=lambda n: n.id)
            victim = ring[(ring.index(nodes[0]) + 1) % len(ring)]
        elif pick == "first":  # the seed: it held every key written while it was alone
            victim = nodes[0]
        elif pick == "owner":  # the node that owns the most keys
            by = {}
            for k in acked:
                by[owner(nodes, k).name] = by.get(owner(nodes, k).name, 0) + 1
            victim = next(n for n in nodes if n.name == max(by, key=by.get))
        else:
            victim = rnd.choice(nodes)
        victim.proc.kill()  # kill -9, at once
        victim.proc.wait()
        live = [n for n in nodes if n is not victim]
        counts, bad404, wrong = read_loop(live, acked, READ_S)
        print(f"round {rno}: killed {victim.name} ({pick}, early writes {early}); "
              f"answers {counts}; "
              f"false 404s {len(bad404)} {bad404[:5]}")
        t.check(f"round {rno}: no 404 for an acknowledged key while the ring repairs",
                not bad404, f"{len(bad404)} of them, first {bad404[:5]}")
        t.check(f"round {rno}: no other value than the acknowledged one", not wrong,
                str(wrong[:5]))
        t.check(f"round {rno}: the readers were answered", counts.get(200, 0) > 0,
                str(counts))
        missing = final_reads(live, acked)
        t.check(f"round {rno}: afterwards every key reads back through every live node",
                not missing, f"{len(missing)}: {missing[:5]}")
    finally:
        for n in nodes:
            n.stop()


def main():
    rnd = random.Random(int(time.time()))
    logdir = tempfile.mkdtemp(prefix="ringnet-killread-")
    picks = ["after-first", "owner", "first", "random"]
    for r in range(ROUNDS):
        one_round(rnd, logdir, r, picks[r % 4], r % 4 != 1)
    if t.failures:
        dump_logs(logdir)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
