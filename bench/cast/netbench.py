"""netbench.py — a topology built as network namespaces joined by linkemu links.

Net(topo, tag).build() makes, for a topology parsed by topo.py:
  - a namespace rnb-TAG-h-NAME per host (loopback up, IP forwarding off) whose one address
    (10.0.X.Y/32, on each of its taps) is the host's identity;
  - a namespace rnb-TAG-s-NAME per switch holding bridge rnb-br;
  - per link, tap rnb-Ia at one end and rnb-Ib at the other (in the host's namespace, or
    enslaved to the switch's bridge), both owned by the one linkemu process that shapes
    every link in both directions; links that never lose packets (gso_links) pass TCP bursts
    through whole (linkemu --gso: a read and a write per burst, not per packet), the others
    one packet at a time;
  - per host, a /32 route to each host that shares a link or a switch with it (the route a
    `path` line names when there is one) and to no other: hosts never forward, so data that
    must cross a host is relayed by a program on it.
teardown() kills what it started and deletes every namespace carrying its tag, and is safe to
call twice or on a half-built net.
"""
import json
import os
import shutil
import subprocess
import time

import topo as topolib


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def stop_all(procs, timeout=5.0):
    """SIGTERM to every process still running, then SIGKILL to those not gone by timeout."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Net:
    def __init__(self, topo, tag, linkemu, seed=1, gso_links=()):
        self.topo, self.tag, self.linkemu, self.seed = topo, tag, linkemu, seed
        self.gso_links = set(gso_links)
        self.ns = {h: f"rnb-{tag}-h-{h}" for h in topo["hosts"]}
        self.ns.update({s: f"rnb-{tag}-s-{s}" for s in topo["switches"]})
        self.ip = {h: f"10.0.{(i + 1) // 256}.{(i + 1) % 256}" for i, h in enumerate(topo["hosts"])}
        self.emus = []  # the linkemu process (one for every link)
        self.procs = []  # everything else started in a namespace
        self.nodes = []  # the ringnet nodes among them
        self.made = []  # namespaces made
        self.neighbours = {h: [] for h in topo["hosts"]}  # hosts reachable directly, in order
        self.rate = {}  # (host, neighbour) -> Mbit/s of the slower link between them
        self.segment_of = self._segments()

    def _segments(self):
        """Link index -> L2 segment id: a switch's segment spans the switches linked to it."""
        parent = {s: s for s in self.topo["switches"]}

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        sw = set(self.topo["switches"])
        for l in self.topo["links"]:
            if l["a"] in sw and l["b"] in sw:
                parent[find(l["a"])] = find(l["b"])
        seg = {}
        for i, l in enumerate(self.topo["links"]):
            ends = [e for e in (l["a"], l["b"]) if e in sw]
            seg[i] = ("sw", find(ends[0])) if ends else ("link", i)
        return seg

    def run_in(self, host, *args, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.ns[host], *args], **kw)

    def exec_in(self, host, *args, check=True):
        return sh("ip", "netns", "exec", self.ns[host], *args, check=check)

    def build(self):
        t = self.topo
        for name, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # no IPv6 chatter (router solicitations, DAD) on the emulated links
            sh("ip", "netns", "exec", ns, "sh", "-c", "for k in all default; do echo 1 > "
               "/proc/sys/net/ipv6/conf/$k/disable_ipv6; done", check=False)
            if name in self.topo["hosts"]:
                for knob in ("ip_forward", "conf/all/rp_filter", "conf/default/rp_filter"):
                    self.exec_in(name, "sh", "-c", f"echo 0 > /proc/sys/net/ipv4/{knob}")
            else:
                sh("ip", "-n", ns, "link", "add", "rnb-br", "type", "bridge", "forward_delay", "0")
                sh("ip", "-n", ns, "link", "set", "rnb-br", "up")
        taps = {}  # (link index, end name) -> tap name
        cmd = [self.linkemu, "--seed", str(self.seed)]
        for i, l in enumerate(t["links"]):
            cmd += ["--a", f"{self.ns[l['a']]}:rnb-{i}a", "--b", f"{self.ns[l['b']]}:rnb-{i}b",
                    "--rate", str(l["mbits"]), "--delay", str(l["delay_ms"]), "--queue",
                    str(l["queue"]), "--loss", str(l["loss"])]
            cmd += ["--gso"] if i in self.gso_links else []
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.emus.append(p)
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("linkemu did not start")
        for i, l in enumerate(t["links"]):
            a, b = f"rnb-{i}a", f"rnb-{i}b"
            taps[(i, l["a"])], taps[(i, l["b"])] = a, b
            for end, tap in ((l["a"], a), (l["b"], b)):
                ns = self.ns[end]
                if i not in self.gso_links and shutil.which("ethtool"):
                    # single packets on the wire: loss hits each one
                    sh("ip", "netns", "exec", ns, "ethtool", "-K", tap, "tso", "off", "gso", "off",
                       "gro", "off", check=False)
                if end in t["switches"]:
                    sh("ip", "-n", ns, "link", "set", tap, "master", "rnb-br")
                else:
                    sh("ip", "-n", ns, "addr", "add", f"{self.ip[end]}/32", "dev", tap)
                sh("ip", "-n", ns, "link", "set", tap, "up")
        # hosts on each segment, and each host's taps by segment
        members, tap_for, link_rate = {}, {}, {}
        for i, l in enumerate(t["links"]):
            for end in (l["a"], l["b"]):
                if end in self.ip:
                    seg = self.segment_of[i]
                    if end not in members.setdefault(seg, []):
                        members[seg].append(end)
                    tap_for.setdefault((end, seg), taps[(i, end)])
                    link_rate.setdefault((end, seg), l["mbits"])
        for h in t["hosts"]:
            routes = {}  # neighbour -> tap
            for (end, seg), tap in tap_for.items():
                if end != h:
                    continue
                for n in members[seg]:
                    if n == h:
                        continue
                    path = t["paths"].get((h, n)) or list(reversed(t["paths"].get((n, h), [])))
                    if path and len(path) > 1:
                        first = path[1]
                        via = [i for i, l in enumerate(t["links"])
                               if {l["a"], l["b"]} == {h, first}]
                        if via and self.segment_of[via[0]] != seg:
                            continue  # the path names another way to n
                    if n not in routes:
                        routes[n] = tap
                        self.rate[(h, n)] = min(link_rate[(h, seg)], link_rate[(n, seg)])
            for n in t["hosts"]:
                if n in routes:
                    sh("ip", "-n", self.ns[h], "route", "add", f"{self.ip[n]}/32", "dev", routes[n],
                       "src", self.ip[h])
                    self.neighbours[h].append(n)

    def host_routes(self):
        """Relay routes from the source for the naive sender: the widest path (largest
        bottleneck rate) through hosts, fewer hops on a tie. Returns ({dest: [hop, ..., dest]},
        hosts in the order they were reached)."""
        src = self.topo["source"]
        best = {src: (float("inf"), 0)}
        prev, done, order = {src: None}, set(), []
        while True:
            todo = [h for h in best if h not in done]
            if not todo:
                break
            u = max(todo, key=lambda h: (best[h][0], -best[h][1]))
            done.add(u)
            order.append(u)
            for v in self.neighbours[u]:
                cand = (min(best[u][0], self.rate[(u, v)]), best[u][1] + 1)
                if v not in done and (v not in best or (cand[0], -cand[1]) >
                                      (best[v][0], -best[v][1])):
                    best[v], prev[v] = cand, u
        routes = {}
        for d in self.topo["hosts"]:
            if d == src:
                continue
            if d not in prev:
                raise RuntimeError(f"{d} cannot be reached from {src} through hosts")
            hops, v = [], d
            while v != src:
                hops.append(v)
                v = prev[v]
            routes[d] = list(reversed(hops))
        return routes, order

    def set_link(self, i, link):
        """Sets link i to the settings of `link` (a topology link dict)."""
        p = self.emus[0] if self.emus else None
        if p and p.poll() is None:
            p.stdin.write(f"@{i} bw={link['mbits']} delay={link['delay_ms']} "
                          f"loss={link['loss']} max_queue_size={link['queue']}\n")
            p.stdin.flush()

    def emu_stats(self):
        """The emulator's counters: a list of dicts, one per link (each with the process's
        lateness figures), or Nones when it is gone."""
        p = self.emus[0] if self.emus else None
        if not p or p.poll() is not None:
            return [None] * len(self.topo["links"])
        p.stdin.write("stats\n")
        p.stdin.flush()
        try:
            st = json.loads(p.stdout.readline())
        except ValueError:
            return [None] * len(self.topo["links"])
        common = {k: v for k, v in st.items() if k not in ("a2b", "b2a", "links")}
        return [{**common, "a2b": l["a2b"], "b2a": l["b2a"]} for l in st["links"]]

    def teardown(self):
        stop_all(self.procs)
        stop_all(self.emus, 2.0)
        self.procs, self.emus = [], []
        for ns in self.made:
            # pids still in it (a program a test started and lost) go first
            r = sh("ip", "netns", "pids", ns, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


def leftover_namespaces(tag):
    r = sh("ip", "netns", "list", check=False)
    prefix = f"rnb-{tag}-" if tag else "rnb-"
    return [w.split()[0] for w in r.stdout.splitlines() if w.startswith(prefix)]


__all__ = ["Net", "leftover_namespaces", "topolib"]
