#!/usr/bin/env python3
"""The judge of issue #15 (bench/kv_http.sh runs it): the key-value node beside nginx and
etcd in one run, on loopback, 1,000 keys of 100-byte values, wrk with a Lua script that
picks a random key per request. Every row alternates ringnet and its reference, round by
round (which goes first alternates too), and reports medians of RUNS rounds:

  get1      GET /kv/KEY on one node           vs nginx, 1 worker, each answer as a file
  get5      GET through a 5-node ring, every request to node 1            vs that nginx
  get5all   the same, spread over the five nodes (wrk -t5, one node a thread; -t1 at
            1 connection) vs that nginx with the same wrk threads
  put1      POST /kv on one node started with --replicas 1 --write-quorum 1 (so a put is
            acknowledged after one fsync, as etcd's one member does) vs a one-member etcd
  put3      POST /kv on a 3-node `ringnet cluster` (R = 3, W = 2: acknowledged after
            fsync on 2 replicas) vs a 3-member etcd (after fsync on a majority, 2 of 3)

Beside each: p99, the ratio of requests per second, and CPU microseconds per request
(utime + stime of every server process, ringnet's all its nodes, from /proc/PID/stat
across the wrk run, divided by the requests wrk counted). At the end: resident memory of
each node, nginx and each etcd member at idle, after the runs.

Both stores answer a write only once it is on disk: ringnet writes the puts of one loop
iteration as one frame into its write-ahead log and holds every answer that depends on
them until an fdatasync of the log has returned (src/store/store.h, "Durability"); etcd
fsyncs its WAL before it answers.

Environment: RUNS (5), SECS (3), CONNS ("1 16 64"), ROWS (all), QUICK=1 (RUNS=1 SECS=1
CONNS=16: a smoke run). Usage: bench/kv_http.py path/to/ringnet"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

QUICK = os.environ.get("QUICK") == "1"
RUNS = int(os.environ.get("RUNS", "1" if QUICK else "5"))
SECS = int(os.environ.get("SECS", "1" if QUICK else "3"))
CONNS = [int(c) for c in os.environ.get("CONNS", "16" if QUICK else "1 16 64").split()]
ROWS = os.environ.get("ROWS", "get1 get5 get5all put1 put3").split()
KEYS = 1000
VALUE = '"' + "v" * 98 + '"'  # 100 bytes of JSON
TICK = os.sysconf("SC_CLK_TCK")
procs = []


def die(msg):
    sys.stderr.write(f"kv_http: {msg}\n")
    sys.exit(1)


def start(args, log):
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_http(port, path="/health", want=lambda s, b: s == 200, secs=60):
    t = time.time() + secs
    while time.time() < t:
        try:
            s, b = request(port, "GET", path)
            if want(s, b):
                return
        except OSError:
            pass
        time.sleep(0.2)
    die(f"no answer from 127.0.0.1:{port}{path}")


def descendants(pid):
    """pid and every process below it (a cluster's nodes, nginx's worker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return t


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024 if m else 0.0


def wrk(url, script, conns, threads, pids):
    """One wrk run: (req/s, p99 ms, CPU us per request of pids)."""
    before = cpu_ticks(pids)
    r = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{SECS}s", "--latency",
                        "-s", script, url], capture_output=True, text=True, timeout=SECS + 60)
    cpu = (cpu_ticks(pids) - before) * 1e6 / TICK
    t = r.stdout
    if r.returncode != 0 or "Requests/sec" not in t:
        die(f"wrk failed on {url}: {r.stderr.strip() or t}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    if bad or (errs and sum(map(int, errs.groups())) > 0):
        # a run that measured error pages or broken connections measures nothing
        die(f"wrk on {url}: not a valid measurement:\n{t}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    n = int(re.search(r"(\d+) requests in", t).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return rps, p99, cpu / max(n, 1), n


COUNTERS = ("ringnet_peer_frames_total{dir=\"out\"}", "ringnet_peer_writes_total",
            "ringnet_store_commits_total", "ringnet_store_commit_writes_total")


def counters(ports):
    """The sums over the nodes at ports of COUNTERS (None: a build without that one)."""
    out = [0.0] * len(COUNTERS)
    for port in ports:
        for attempt in range(50):  # right after wrk, its 64 connections may still count
            try:
                status, text = request(port, "GET", "/metrics")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            die(f"no /metrics from port {port}")
        for i, name in enumerate(COUNTERS):
            m = re.search(r"^" + re.escape(name) + r" ([\d.e+]+)$", text.decode(), re.M)
            out[i] = None if m is None or out[i] is None else out[i] + float(m.group(1))
    return out


def counted(ports, run):
    """run() (a wrk run) with what the nodes at ports did per request during it."""
    a = counters(ports)
    rps, p99, cpu, n = run()
    b = counters(ports)
    per = [None if x is None or y is None else (y - x) / max(n, 1) for x, y in zip(a, b)]
    return rps, p99, cpu, n, per


def lua(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def get_script(tmp, name, prefix, nodes=None):
    """GET prefix<i> for a random key i; with nodes, thread k of wrk talks to nodes[k]."""
    lines = [f"math.randomseed({len(name)})"]
    if nodes:
        lines += ["local addrs = {}", "local k = 0"]
        lines += [f'addrs[{i + 1}] = wrk.lookup("127.0.0.1", "{p}")[1]'
                  for i, p in enumerate(nodes)]
        lines += ["function setup(thread) k = k % #addrs + 1; thread.addr = addrs[k] end"]
    lines += ["request = function() return wrk.format('GET', '%s' .. math.random(0, %d)) end"
              % (prefix, KEYS - 1)]
    return lua(f"{tmp}/{name}.lua", lines)


def put_scripts(tmp):
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    rn = [f'{{"key":"k{i}","value":{VALUE}}}' for i in range(KEYS)]
    et = [f'{{"key":"{b64(f"k{i}")}","value":"{b64(VALUE)}"}}' for i in range(KEYS)]
    out = []
    for name, path, bodies in (("rn_put", "/kv", rn), ("etcd_put", "/v3/kv/put", et)):
        lines = ["math.randomseed(11)", 'wrk.method = "POST"',
                 'wrk.headers["Content-Type"] = "application/json"', "bodies = {"]
        lines += ["  '" + x + "'," for x in bodies]
        lines += ["}", "request = function() return wrk.format(nil, '%s', nil, "
                  "bodies[math.random(#bodies)]) end" % path]
        out.append(lua(f"{tmp}/{name}.lua", lines))
    return out


def load_keys(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(KEYS):
        for _ in range(50):
            c.request("POST", "/kv", body=f'{{"key":"k{i}","value":{VALUE}}}')
            r = c.getresponse()
            r.read()
            if r.status == 200:
                break
            time.sleep(0.1)  # a ring still settling answers 503 with a retry hint
        else:
            die(f"cannot store k{i} through port {port}")
    c.close()


def fill_www(www, port):
    """Each key's GET answer from the node at port, as a file nginx serves."""
    os.makedirs(www, exist_ok=True)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sizes = []
    for i in range(KEYS):
        c.request("GET", f"/kv/k{i}")
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            die(f"GET /kv/k{i} on port {port}: {r.status}")
        with open(f"{www}/k{i}", "wb") as f:
            f.write(body)
        os.chmod(f"{www}/k{i}", 0o644)
        sizes.append(len(body))
    c.close()
    return statistics.median(sizes)


def main():
    if len(sys.argv) != 2:
        die("usage: kv_http.py path/to/ringnet")
    rn = os.path.realpath(sys.argv[1])
    for t in ("wrk", "nginx", "etcd"):
        if not shutil.which(t):
            die(f"{t} missing: run scripts/deps.sh --bench")
    if not os.access(rn, os.X_OK):
        die(f"{rn} is not an executable (build it: make)")
    tmp = tempfile.mkdtemp(prefix="kv_http.")
    os.chmod(tmp, 0o755)  # nginx's worker must read the files it serves
    log = open(f"{tmp}/servers.log", "w")
    servers = {}  # name -> (first http port, process or processes[, nodes])
    try:
        need = set(ROWS)
        for name, row in (("one", "get1"), ("put1", "put1")):
            if row in need:  # one node, alone: one copy of each key
                hp = free_port()
                p = start([rn, "node", "--id", f"bench-{name}", "--listen",
                           f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{hp}", "--data",
                           f"{tmp}/{name}", "--replicas", "1", "--write-quorum", "1",
                           "--log-level", "warn"], log)
                servers[name] = (hp, p)
        for name, count in (("ring5", 5), ("ring3", 3)):
            if (name == "ring5" and need & {"get5", "get5all"}) or (name == "ring3" and
                                                                    "put3" in need):
                base = free_port()
                while any(not port_free(base + i) for i in range(count)):
                    base = free_port()
                pbase = free_port()
                while any(not port_free(pbase + i) for i in range(count)):
                    pbase = free_port()
                p = start([rn, "cluster", "--nodes", str(count), "--base-http", str(base),
                           "--base-peer", str(pbase), "--data", f"{tmp}/{name}",
                           "--log-level", "warn"], log)
                servers[name] = (base, p, count)
        if need & {"get1", "get5", "get5all"}:
            ng = free_port()
            with open(f"{tmp}/nginx.conf", "w") as f:
                f.write(f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; "
                        f"error_log {tmp}/nginx.err;\nevents {{ worker_connections 1024; }}\n"
                        f"http {{ access_log off; server {{ listen 127.0.0.1:{ng}; "
                        f"root {tmp}/www; default_type application/json; }} }}\n")
            servers["nginx"] = (ng, start(["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp], log))
        for name, members in (("etcd1", 1), ("etcd3", 3)):
            if (name == "etcd1" and "put1" in need) or (name == "etcd3" and "put3" in need):
                cl = [free_port() for _ in range(members)]
                pe = [free_port() for _ in range(members)]
                init = ",".join(f"{name}m{i}=http://127.0.0.1:{pe[i]}" for i in range(members))
                ps = [start(["etcd", "--name", f"{name}m{i}", "--data-dir", f"{tmp}/{name}m{i}",
                             "--listen-client-urls", f"http://127.0.0.1:{cl[i]}",
                             "--advertise-client-urls", f"http://127.0.0.1:{cl[i]}",
                             "--listen-peer-urls", f"http://127.0.0.1:{pe[i]}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pe[i]}",
                             "--initial-cluster", init, "--initial-cluster-state", "new",
                             "--log-level", "error"], log) for i in range(members)]
                servers[name] = (cl[0], ps)
        # ready, and the keys in
        for name in ("one", "put1"):
            if name in servers:
                wait_http(servers[name][0])
        for name in ("ring5", "ring3"):
            if name in servers:
                base, _, count = servers[name]
                for i in range(count):
                    wait_http(base + i)
                # joined, with a predecessor and the 2 successors R = 3 needs
                for i in range(count):
                    wait_http(base + i, "/ring", lambda s, b: s == 200 and ring_ready(b),
                              secs=90)
        for name in ("etcd1", "etcd3"):
            if name in servers:
                wait_http(servers[name][0], "/v3/kv/range", secs=60,
                          want=lambda s, b: True)
                t = time.time() + 60
                while time.time() < t:
                    try:
                        s, b = request(servers[name][0], "POST", "/v3/kv/put",
                                       '{"key":"eA==","value":"eA=="}')
                        if s == 200 and b"header" in b:
                            break
                    except OSError:
                        pass
                    time.sleep(0.3)
                else:
                    die(f"{name} elects no leader")
        for name in ("one", "put1"):
            if name in servers:
                load_keys(servers[name][0])
        if "ring5" in servers:
            load_keys(servers["ring5"][0])
        if "ring3" in servers:
            load_keys(servers["ring3"][0])
        rn_put, etcd_put = put_scripts(tmp)
        g_rn = get_script(tmp, "rn_get", "/kv/k")
        g_ng = get_script(tmp, "nginx_get", "/k")
        sizes = {}

        def pids_of(name):
            return descendants(servers[name][1].pid) if name not in ("etcd1", "etcd3") else \
                [p.pid for p in servers[name][1]]

        def nginx_for(source_port, label):
            """Points nginx's files at the answers of the node at source_port."""
            if sizes.get("www") != label:
                sizes[label] = fill_www(f"{tmp}/www", source_port)
                sizes["www"] = label
                wait_http(servers["nginx"][0], "/k0")
                s, b = request(servers["nginx"][0], "GET", "/k0")
                with open(f"{tmp}/www/k0", "rb") as f:
                    if s != 200 or b != f.read():
                        die("nginx does not serve the answers' files")

        # the pairs: (row, ringnet run, reference run), each run a function of conns
        def pair(row, conns):
            ng = f"http://127.0.0.1:{servers['nginx'][0]}" if "nginx" in servers else ""
            if row == "get1":
                nginx_for(servers["one"][0], "one")
                return (lambda: counted([servers["one"][0]], lambda: wrk(
                    f"http://127.0.0.1:{servers['one'][0]}", g_rn, conns, 1, pids_of("one"))),
                        lambda: wrk(ng, g_ng, conns, 1, pids_of("nginx")))
            if row in ("get5", "get5all"):
                base = servers["ring5"][0]
                nginx_for(base, "ring5")
                t = 1 if row == "get5" else min(5, conns)
                script = g_rn if row == "get5" else get_script(
                    tmp, "rn_get5all", "/kv/k", [base + i for i in range(5)])
                return (lambda: counted([base + i for i in range(5)], lambda: wrk(
                    f"http://127.0.0.1:{base}", script, conns, t, pids_of("ring5"))),
                        lambda: wrk(ng, g_ng, conns, t, pids_of("nginx")))
            if row == "put1":
                return (lambda: counted([servers["put1"][0]], lambda: wrk(
                    f"http://127.0.0.1:{servers['put1'][0]}", rn_put, conns, 1, pids_of("put1"))),
                        lambda: wrk(f"http://127.0.0.1:{servers['etcd1'][0]}", etcd_put, conns,
                                    1, pids_of("etcd1")))
            if row == "put3":
                base = servers["ring3"][0]
                return (lambda: counted([base + i for i in range(3)], lambda: wrk(
                    f"http://127.0.0.1:{base}", rn_put, conns, 1, pids_of("ring3"))),
                        lambda: wrk(f"http://127.0.0.1:{servers['etcd3'][0]}", etcd_put, conns,
                                    1, pids_of("etcd3")))
            die(f"unknown row {row}")

        res = {}  # (row, conns) -> ([ringnet runs], [reference runs])
        for r in range(RUNS):
            for row in ROWS:
                for conns in CONNS:
                    a, b = pair(row, conns)
                    ra, rb = res.setdefault((row, conns), ([], []))
                    if r % 2 == 0:
                        ra.append(a())
                        rb.append(b())
                    else:
                        rb.append(b())
                        ra.append(a())
            sys.stderr.write(f"kv_http: round {r + 1} of {RUNS} done\n")
        time.sleep(3)  # idle again before the memory is read
        report(res, servers, sizes, pids_of)
    finally:
        stop_all()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def ring_ready(body):
    r = json.loads(body)
    return r.get("joined") and r.get("predecessor") and len(r.get("successors", [])) >= 2


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


NAMES = {
    "get1": ("GET, one node", "nginx, 1 worker, the same answers as files"),
    "get5": ("GET, 5-node ring, all to node 1", "nginx, 1 worker"),
    "get5all": ("GET, 5-node ring, spread over the 5", "nginx, 1 worker, same wrk threads"),
    "put1": ("PUT, one node, R = 1 (1 fsync)", "etcd 3.4, 1 member"),
    "put3": ("PUT, 3 nodes, R = 3, W = 2", "etcd 3.4, 3 members"),
}


def report(res, servers, sizes, pids_of):
    med = lambda runs, k: statistics.median(x[k] for x in runs)
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"{os.uname().sysname} {os.uname().release}; wrk {SECS} s a run, median of {RUNS} "
          f"rounds (ringnet and reference alternating), {KEYS} keys, 100-byte values")
    for k in ("one", "ring5"):
        if k in sizes:
            print(f"answer size (median bytes): {k} {sizes[k]:.0f}")
    print()
    print("| run | conns | ringnet req/s | p99 ms | CPU us/req | reference | req/s | p99 ms "
          "| CPU us/req | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (row, conns), (ra, rb) in res.items():
        a, b = [med(ra, i) for i in range(3)], [med(rb, i) for i in range(3)]
        print(f"| {NAMES[row][0]} | {conns} | {a[0]:,.0f} | {a[1]:.2f} | {a[2]:.0f} | "
              f"{NAMES[row][1]} | {b[0]:,.0f} | {b[1]:.2f} | {b[2]:.0f} | **{a[0] / b[0]:.2f}** |")
    print()
    print("ringnet's nodes per client request, medians (all nodes of the row together; '-': "
          "this build has no such counter):")
    print()
    print("| run | conns | peer frames | peer writes | store commits | writes per commit |")
    print("|---|---|---|---|---|---|")
    for (row, conns), (ra, _) in res.items():
        def m(i):
            v = [x[4][i] for x in ra]
            return None if None in v else statistics.median(v)
        fr, wr, co, cw = (m(i) for i in range(4))
        f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
        per = None if not co or cw is None else cw / co
        print(f"| {NAMES[row][0]} | {conns} | {f(fr)} | {f(wr)} | {f(co, 3)} | {f(per, 1)} |")
    print()
    print("resident memory at idle, after the runs (MiB):")
    for name in ("one", "put1", "ring5", "ring3"):
        if name in servers:
            nodes = [p for p in pids_of(name) if p != servers[name][1].pid] or [servers[name][1].pid]
            print(f"  ringnet {name}: " + ", ".join(f"{rss_mib(p):.1f}" for p in nodes))
    if "nginx" in servers:
        print("  nginx (master, worker): " + ", ".join(f"{rss_mib(p):.1f}" for p in pids_of("nginx")))
    for name in ("etcd1", "etcd3"):
        if name in servers:
            print(f"  {name}: " + ", ".join(f"{rss_mib(p.pid):.1f}" for p in servers[name][1]))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))  # runs the finally: kills all
    main()
