#!/usr/bin/env python3
"""Read leases on real node processes, as a user and an operator see them.

Five nodes, R = 3. A GET through a replica of the key (not its owner) is answered by that
replica itself once it holds the owner's lease: ringnet_kv_replica_reads_total grows there
and the node forwards nothing for it. Every answer is the value last acknowledged, also
right after a write through another node (the owner acknowledges only once the lease
holders have it). Writes alone take no lease. Then the holder of a lease is killed: the
owner's write waits for that lease to end and is acknowledged, and every node reads it.
A GET through a node that holds no replica of the key makes that node take a cache lease
of the owner's range: later GETs of the key there are answered from its read cache
(ringnet_kv_cache_reads_total), forwarding nothing, and a write through any node is
pushed to it before the write is acknowledged. A killed cache holder delays the owner's
writes by at most one lease. With --read-lease-ms 0 no lease is granted and every get
goes to the owner."""
import signal
import sys
import tempfile
import time

from ringtest import Checks, metrics, owner, request, start_ring, stop_all

BIN = sys.argv[1]
t = Checks("kv_leases")


def ring_order(nodes):
    return sorted(nodes, key=lambda y: y.id)


def replicas(nodes, key):
    ring = ring_order(nodes)
    i = ring.index(owner(nodes, key))
    return [ring[(i + j) % len(ring)] for j in range(3)]


SNAPSHOT_S = 0.25  # /metrics is a snapshot the node takes every 100 ms: wait for the next


def m(node, name):
    return metrics(node.http).get(name, 0)


def put(node, key, value):
    return request(node.http, "/kv", "POST", {"key": key, "value": value})


def read_everywhere(nodes, key, value, timeout=20):
    """Gets of key through every node until all answer 200 with value: the answers."""
    deadline = time.time() + timeout
    while True:
        seen = [request(n.http, f"/kv/{key}") for n in nodes]
        if all(s == 200 and b["value"] == value for s, b in seen) or time.time() > deadline:
            return seen
        time.sleep(0.3)


LOCAL = ("ringnet_kv_forwarded_total", "ringnet_kv_replica_reads_total",
         "ringnet_kv_cache_reads_total", 'ringnet_kv_route_total{how="local"}',
         'ringnet_kv_route_total{how="successors"}', "ringnet_kv_client_requests_total")


def local_answer(node, key, counter, timeout=40):
    """Gets of key at node, until one is answered by the path counter counts (its lease
    granted; an owner grants none until its view has been still for 5 s, which after a
    kill is once the failure is detected, a few seconds more): (forwarded, counter) before
    and after that get, and what the last get saw (its answer and the counters of every
    local path, before and after), for a failure's message. Each get's counters are read
    once the node has taken a new snapshot of its metrics."""
    deadline = time.time() + timeout
    tries = 0
    while True:
        tries += 1
        was = metrics(node.http)
        got = request(node.http, f"/kv/{key}")
        time.sleep(SNAPSHOT_S)
        now = metrics(node.http)
        before = (was.get(LOCAL[0], 0), was.get(counter, 0))
        after = (now.get(LOCAL[0], 0), now.get(counter, 0))
        if after[1] > before[1] or time.time() > deadline:
            return before, after, (got, tries, [(was.get(x, 0), now.get(x, 0)) for x in LOCAL])


def kill_then_write(victim, key, own, value, counter):
    """victim gets key until it answers one itself (the path counter counts: it holds a
    lease), is killed, then a write of key through own: whether victim held the lease, the
    write's (status, body), and what victim's last get saw."""
    before, after, seen = local_answer(victim, key, counter)
    victim.stop(signal.SIGKILL)
    return after[1] > before[1], put(own, key, value), seen


def wait_ready(nodes, keys, timeout=60):
    """Until a get of every key through every node answers 200 (the ring is settled)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(request(n.http, f"/kv/{k}")[0] == 200 for n in nodes for k in keys):
            return True
        time.sleep(0.5)
    return False


def run(args, logdir):
    nodes = []
    try:
        ok, state = start_ring(BIN, [f"l{i}" for i in range(5)], logdir, nodes, args)
        t.check("ring converged", ok, state)
        keys = [f"lease-{i}" for i in range(30)]
        for i, k in enumerate(keys):
            st, body = put(nodes[i % 5], k, {"v": 0})
            t.check(f"put {k}", st == 200, body)
        time.sleep(1)
        granted = sum(m(n, "ringnet_kv_leases_granted_total") for n in nodes)
        t.check("writes alone take no lease", granted == 0, granted)
        t.check("every key readable", wait_ready(nodes, keys))
        return nodes, keys
    except Exception:
        stop_all(nodes, t, logdir)
        raise


def main():
    with tempfile.TemporaryDirectory(prefix="rn-leases-") as logdir:
        nodes, keys = run([], logdir)
        try:
            # gets through the replicas that do not own the key, until the ring has been
            # still long enough (5 s) for owners to grant leases
            deadline = time.time() + 30
            served = {}
            while time.time() < deadline and sum(served.values()) == 0:
                for k in keys:
                    for r in replicas(nodes, k)[1:]:
                        st, body = request(r.http, f"/kv/{k}")
                        t.check(f"get {k} at a replica",
                                st == 200 and body["value"] == {"v": 0}, (st, body))
                time.sleep(0.2)
                served = {n.name: m(n, "ringnet_kv_replica_reads_total") for n in nodes}
            t.check("replicas answered gets themselves", sum(served.values()) > 0, served)
            t.check("leases granted", sum(m(n, "ringnet_kv_leases_granted_total")
                                          for n in nodes) > 0)
            # a forward-free get: a replica holding the lease answers without a request
            before, after, seen = local_answer(replicas(nodes, keys[0])[1], keys[0],
                                               "ringnet_kv_replica_reads_total")
            t.check("a replica's own answer forwards nothing",
                    after[1] == before[1] + 1 and after[0] == before[0], seen)
            # gets through nodes outside the key's replicas: their read caches
            others = {k: [n for n in nodes if n not in replicas(nodes, k)] for k in keys}
            deadline = time.time() + 30
            cached = 0
            while time.time() < deadline and cached == 0:
                for k in keys:
                    for n in others[k]:
                        st, body = request(n.http, f"/kv/{k}")
                        t.check(f"get {k} outside its replicas",
                                st == 200 and body["value"] == {"v": 0}, (st, body))
                time.sleep(0.2)
                cached = sum(m(n, "ringnet_kv_cache_reads_total") for n in nodes)
            t.check("nodes answered gets from their read caches", cached > 0, cached)
            before, after, seen = local_answer(others[keys[2]][0], keys[2],
                                               "ringnet_kv_cache_reads_total")
            t.check("a cached answer forwards nothing",
                    after[1] == before[1] + 1 and after[0] == before[0], seen)
            # writes through one node, reads right after through every node
            for round_ in range(1, 4):
                for i, k in enumerate(keys):
                    st, body = put(nodes[(i + round_) % 5], k, {"v": round_})
                    t.check(f"write {k} round {round_}", st == 200, body)
                    for n in nodes:
                        st, body = request(n.http, f"/kv/{k}")
                        t.check(f"read {k} right after the write at {n.name}",
                                st == 200 and body["value"] == {"v": round_}, (st, body))
            # the holder of a lease dies: the owner's writes still complete
            k = keys[1]
            own, holder = replicas(nodes, k)[0], replicas(nodes, k)[1]
            held, (st, body), seen = kill_then_write(holder, k, own, {"v": "after"},
                                                     "ringnet_kv_replica_reads_total")
            t.check("the killed replica held a read lease", held, seen)
            t.check("a write with a dead lease holder is acknowledged", st == 200, (st, body))
            live = [n for n in nodes if n is not holder]
            seen = read_everywhere(live, k, {"v": "after"})
            t.check("every live node reads the write", all(
                s == 200 and b["value"] == {"v": "after"} for s, b in seen), seen)
            # a cache holder dies: the owner's writes still complete, and are read everywhere
            # (a key whose replicas are all alive, and a live node outside them)
            k = next(x for x in keys if holder not in replicas(nodes, x))
            own = replicas(nodes, k)[0]
            ch = next(n for n in live if n not in replicas(nodes, k))
            pushes = m(own, "ringnet_kv_cache_pushes_total")
            held, (st, body), seen = kill_then_write(ch, k, own, {"v": "after-cache"},
                                                     "ringnet_kv_cache_reads_total")
            t.check("the killed node held a cache lease", held, seen)
            t.check("a write with a dead cache holder is acknowledged", st == 200, (st, body))
            time.sleep(SNAPSHOT_S)
            t.check("the owner pushed writes to cache holders",
                    m(own, "ringnet_kv_cache_pushes_total") > pushes)
            seen = read_everywhere([n for n in live if n is not ch], k, {"v": "after-cache"})
            t.check("every live node reads it", all(
                s == 200 and b["value"] == {"v": "after-cache"} for s, b in seen), seen)
        finally:
            stop_all(nodes, t, logdir)

    with tempfile.TemporaryDirectory(prefix="rn-leases-off-") as logdir:
        nodes, keys = run(["--read-lease-ms", "0"], logdir)
        try:
            for k in keys[:10]:
                for r in replicas(nodes, k)[1:]:
                    for _ in range(3):
                        st, body = request(r.http, f"/kv/{k}")
                        t.check(f"get {k} with leases off", st == 200, (st, body))
                    time.sleep(0.05)
            time.sleep(SNAPSHOT_S)
            t.check("leases off: none granted",
                    sum(m(n, "ringnet_kv_leases_granted_total") for n in nodes) == 0)
            t.check("leases off: no replica answers itself",
                    sum(m(n, "ringnet_kv_replica_reads_total") for n in nodes) == 0)
            for k in keys[:10]:
                for n in [x for x in nodes if x not in replicas(nodes, k)]:
                    for _ in range(3):
                        st, body = request(n.http, f"/kv/{k}")
                        t.check(f"get {k} outside its replicas, leases off", st == 200)
            time.sleep(SNAPSHOT_S)
            t.check("leases off: no read cache",
                    sum(m(n, "ringnet_kv_cache_reads_total") for n in nodes) == 0)
        finally:
            stop_all(nodes, t, logdir)
    return t.finish()


sys.exit(main())
