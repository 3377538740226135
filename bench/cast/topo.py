"""topo.py — topology and trace files (../shared/topologies/FORMAT.md) and their lower bound.

Pure functions, no I/O beyond reading the files: bench/cast/run builds the network from what
parse_topology returns, and tests check bound() against hand-computed answers.
"""
import heapq
import re

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class TopologyError(ValueError):
    pass


def parse_delay(text):
    """'10ms' -> 10.0, '1.5s' -> 1500.0, '7' -> 7.0 (milliseconds)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|us)?", text)
    if not m:
        raise ValueError(f"bad delay '{text}'")
    v = float(m.group(1))
    return {"ms": v, None: v, "s": v * 1000.0, "us": v / 1000.0}[m.group(2)]


def parse_topology(text, name="topology"):
    """Returns {hosts: [..], switches: [..], links: [dict], paths: {(a,b): [..]}, source}."""
    hosts, switches, links, paths = [], [], [], {}
    seen = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{name}:{lineno}"
        kind = words[0]
        if kind in ("host", "switch"):
            if len(words) != 2 or not NAME.match(words[1]):
                raise TopologyError(f"{where}: want '{kind} NAME' (letters, digits, _.-)")
            if words[1] in seen:
                raise TopologyError(f"{where}: '{words[1]}' is defined twice")
            seen.add(words[1])
            (hosts if kind == "host" else switches).append(words[1])
        elif kind == "link":
            if len(words) != 7:
                raise TopologyError(f"{where}: want 'link A B MBITS DELAY QUEUE LOSS'")
            a, b = words[1], words[2]
            for n in (a, b):
                if n not in seen:
                    raise TopologyError(f"{where}: '{n}' is not a host or switch defined above")
            if a == b:
                raise TopologyError(f"{where}: a link from '{a}' to itself")
            try:
                link = {"a": a, "b": b, "mbits": float(words[3]), "delay_ms": parse_delay(words[4]),
                        "queue": int(words[5]), "loss": float(words[6])}
            except ValueError as e:
                raise TopologyError(f"{where}: {e}") from None
            if link["mbits"] <= 0 or link["queue"] < 1 or not 0 <= link["loss"] <= 100:
                raise TopologyError(f"{where}: want MBITS > 0, QUEUE >= 1, 0 <= LOSS <= 100")
            links.append(link)
        elif kind == "path":
            if len(words) < 3 or any(w not in seen for w in words[1:]):
                raise TopologyError(f"{where}: want 'path A X ... B' over defined names")
            paths[(words[1], words[-1])] = words[1:]
        else:
            raise TopologyError(f"{where}: unknown statement '{kind}'")
    if len(hosts) < 2:
        raise TopologyError(f"{name}: want at least two hosts")
    source = "src" if "src" in hosts else hosts[0]
    return {"hosts": hosts, "switches": switches, "links": links, "paths": paths, "source": source}


def parse_trace(text, topo, name="trace"):
    """Returns [(ms, link index, {key: value})] sorted by time."""
    index = {}
    for i, l in enumerate(topo["links"]):
        index.setdefault(frozenset((l["a"], l["b"])), i)
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{name}:{lineno}"
        if len(words) < 4 or words[1] != "link":
            raise TopologyError(f"{where}: want 'MS link node1=A node2=B KEY=VALUE...'")
        try:
            ms = float(words[0])
        except ValueError:
            raise TopologyError(f"{where}: '{words[0]}' is not milliseconds") from None
        kv = dict(w.split("=", 1) for w in words[2:] if "=" in w)
        if len(kv) != len(words) - 2 or "node1" not in kv or "node2" not in kv:
            raise TopologyError(f"{where}: want node1=A node2=B and KEY=VALUE words")
        key = frozenset((kv.pop("node1"), kv.pop("node2")))
        if key not in index:
            raise TopologyError(f"{where}: no link between {' and '.join(sorted(key))}")
        change = {}
        for k, v in kv.items():
            try:
                if k == "delay":
                    change[k] = parse_delay(v)
                elif k in ("bw", "loss", "max_queue_size"):
                    change[k] = float(v)
                else:
                    raise ValueError(f"unknown key '{k}'")
            except ValueError as e:
                raise TopologyError(f"{where}: {e}") from None
        out.append((ms, index[key], change))
    out.sort(key=lambda x: x[0])
    return out


def apply_change(link, change):
    """A link dict with a trace change applied (a copy)."""
    l = dict(link)
    for k, v in change.items():
        l[{"bw": "mbits", "delay": "delay_ms", "loss": "loss", "max_queue_size": "queue"}[k]] = v
    return l


def max_flow(nodes, cap, s, t):
    """Edmonds-Karp on a dict {(u, v): capacity}."""
    res = dict(cap)
    adj = {n: set() for n in nodes}
    for (u, v) in cap:
        adj[u].add(v)
        adj[v].add(u)
        res.setdefault((v, u), 0.0)
    flow = 0.0
    while True:
        parent = {s: None}
        queue = [s]
        for u in queue:
            for v in adj[u]:
                if v not in parent and res[(u, v)] > 1e-9:
                    parent[v] = u
                    queue.append(v)
        if t not in parent:
            return flow
        push, v = float("inf"), t
        while parent[v] is not None:
            push = min(push, res[(parent[v], v)])
            v = parent[v]
        v = t
        while parent[v] is not None:
            res[(parent[v], v)] -= push
            res[(v, parent[v])] += push
            v = parent[v]
        flow += push


def _capacities(links):
    cap = {}
    for l in links:
        for u, v in ((l["a"], l["b"]), (l["b"], l["a"])):
            cap[(u, v)] = cap.get((u, v), 0.0) + l["mbits"] * 1e6
    return cap


def _farthest_delay_s(topo, links):
    nodes = topo["hosts"] + topo["switches"]
    adj = {n: [] for n in nodes}
    for l in links:
        adj[l["a"]].append((l["b"], l["delay_ms"]))
        adj[l["b"]].append((l["a"], l["delay_ms"]))
    dist = {topo["source"]: 0.0}
    heap = [(0.0, topo["source"])]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist.get(u, float("inf")):
            continue
        for v, w in adj[u]:
            if d + w < dist.get(v, float("inf")):
                dist[v] = d + w
                heapq.heappush(heap, (d + w, v))
    dests = [h for h in topo["hosts"] if h != topo["source"]]
    if any(d not in dist for d in dests):
        raise TopologyError("some destination cannot be reached from the source")
    return max(dist[d] for d in dests) / 1000.0


def rates(topo, links):
    """([maxflow(src, d) for every destination d], total host upload), in bit/s."""
    nodes = topo["hosts"] + topo["switches"]
    cap = _capacities(links)
    dests = [h for h in topo["hosts"] if h != topo["source"]]
    flows = [max_flow(nodes, cap, topo["source"], d) for d in dests]
    hosts = set(topo["hosts"])
    upload = sum(c for (u, _), c in cap.items() if u in hosts)
    return flows, upload


def bound(topo, size_bytes, trace=None):
    """The lower bound of FORMAT.md in seconds, with its parts. With a trace the capacities
    are piecewise constant: each bound is the first time its integral reaches the bits it
    must carry (a lower bound still), and the delay is the smallest the trace ever sets."""
    bits = size_bytes * 8.0
    dests = len(topo["hosts"]) - 1
    links = [dict(l) for l in topo["links"]]
    steps = []  # (start s, links at that time)
    t_prev = 0.0
    for ms, i, change in trace or []:
        t = ms / 1000.0
        if t > t_prev:
            steps.append((t_prev, [dict(l) for l in links]))
            t_prev = t
        links[i] = apply_change(links[i], change)
    steps.append((t_prev, [dict(l) for l in links]))
    delay = min(_farthest_delay_s(topo, ls) for _, ls in steps)

    def finish(need, rate_of):
        done = 0.0
        for k, (start, ls) in enumerate(steps):
            end = steps[k + 1][0] if k + 1 < len(steps) else float("inf")
            r = rate_of(ls)
            if r > 0 and done + r * (end - start) >= need:
                return start + (need - done) / r
            done += r * (end - start) if end != float("inf") else 0.0
        return float("inf")

    per_step = {id(ls): rates(topo, ls) for _, ls in steps}
    cut = max(finish(bits, lambda ls, k=k: per_step[id(ls)][0][k]) for k in range(dests))
    upload = finish(dests * bits, lambda ls: per_step[id(ls)][1])
    return {"bound_s": max(cut, upload) + delay, "cut_s": cut, "upload_s": upload,
            "delay_s": delay}
