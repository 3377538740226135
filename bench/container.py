#!/usr/bin/env python3
"""What a container costs a node: GET /kv/<key> (100 keys, random order) on a 3-node ring
of `ringnet node` processes on 127.0.0.1, beside the same ring as 3 podman containers on a
user network, read through node 1's port published on 127.0.0.1 and straight at node 1's
address on the bridge. wrk -t1 -c16, medians of RUNS runs of SECS seconds, taken in turn, all in one run.
Needs root, podman with runc, wrk (scripts/deps.sh --test --bench).
    python3 bench/container.py [build/ringnet]"""
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build/ringnet"))
RUNS, SECS, CONNS = int(os.environ.get("RUNS", 3)), int(os.environ.get("SECS", 5)), 16
TAG = f"rnc-bench-{os.getpid()}"
PM = ["podman", "--runtime", "runc"]


def sh(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)


def up(url, tries=200):
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url + "/ring", timeout=2) as r:
                if len(json.loads(r.read()).get("successors") or []) >= 2:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no 3-node ring behind {url}")


def put_keys(url):
    for i in range(100):
        req = urllib.request.Request(url + "/kv", method="POST", data=json.dumps(
            {"key": f"k{i}", "value": f"value-k{i}"}).encode(),
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()


def wrk(url, lua):
    out = sh("wrk", "-t1", f"-c{CONNS}", f"-d{SECS}s", "-s", lua, url).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk against {url} got error answers: not a measurement")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    for t in ("podman", "wrk"):
        if not shutil.which(t):
            raise SystemExit(f"container bench: {t} missing (scripts/deps.sh --test --bench)")
    tmp = tempfile.mkdtemp(prefix="rnc-")
    procs, subnet = [], f"10.{random.randrange(90, 250)}.{random.randrange(256)}"
    lua = os.path.join(tmp, "get.lua")
    with open(lua, "w") as f:
        f.write("math.randomseed(11)\n"
                "request = function() return wrk.format('GET', '/kv/k' .. math.random(0, 99)) end\n")
    try:
        # the image, the way tests/container makes it
        sh("sh", os.path.join(REPO, "deploy/rootfs.sh"), BIN, f"{tmp}/ctx/rootfs", check=True)
        shutil.copy(os.path.join(REPO, "Dockerfile"), f"{tmp}/ctx")
        sh(*PM, "build", "--format", "docker", "--layers=false", "--build-arg", "ROOTFS=host",
           "-t", f"localhost/{TAG}", f"{tmp}/ctx", check=True)
        # the ring of processes
        base = random.randrange(20000, 40000, 100)
        for i in range(3):
            args = [BIN, "node", "--id", f"h{i}", "--listen", f"127.0.0.1:{base + 10 + i}",
                    "--http", f"127.0.0.1:{base + i}", "--data", f"{tmp}/h{i}",
                    "--log-level", "warn"]
            if i:
                args += ["--join", f"127.0.0.1:{base + 10}"]
            procs.append(subprocess.Popen(args))
            time.sleep(0.5)
        host = f"http://127.0.0.1:{base}"
        # the ring of containers
        sh(*PM, "network", "create", "--subnet", f"{subnet}.0/24", f"{TAG}-net", check=True)
        for i in range(3):
            name = f"{TAG}-n{i}"
            cmd = [*PM, "run", "-d", "--ulimit", "nofile=8192:8192", "--ulimit",
                   "nproc=4096:4096", "--name", name, "--network", f"{TAG}-net", "--ip",
                   f"{subnet}.{11 + i}", "-v", f"{name}:/data", "-e",
                   "RINGNET_API_TOKEN_FILE=none", "-e", "RINGNET_HTTP_TLS=none", "-e",
                   f"RINGNET_ID=c{i}", "-e",
                   f"RINGNET_LISTEN={name}:7000", "-e", f"RINGNET_HTTP={name}:8080", "-e",
                   "RINGNET_LOG_LEVEL=warn"]
            if i == 0:
                cmd += ["-p", f"127.0.0.1:{base + 50}:8080"]
            else:
                cmd += ["-e", f"RINGNET_JOIN={TAG}-n0:7000"]
            sh(*cmd, f"localhost/{TAG}", check=True)
            time.sleep(0.5)
        published, bridge = f"http://127.0.0.1:{base + 50}", f"http://{subnet}.11:8080"
        for url in (host, published):
            up(url)
            put_keys(url)
        rows = [("processes on 127.0.0.1", host), ("containers, port published on 127.0.0.1",
                                                   published),
                ("containers, node 1's bridge address", bridge)]
        # round robin, so that the machine's other load falls on all three alike
        runs = {name: [] for name, _ in rows}
        for _ in range(RUNS):
            for name, url in rows:
                runs[name].append(wrk(url + "/", lua))
        res = [(name, statistics.median(runs[name]), runs[name]) for name, _ in rows]
        ref = res[0][1]
        print(f"machine: {os.cpu_count()} cores; wrk -t1 -c{CONNS} -d{SECS}s, GET of 100 keys "
              f"on a 3-node ring, median of {RUNS}\n")
        print("| ring | GET req/s (runs) | ratio to processes |\n|---|---|---|")
        for name, med, runs in res:
            print(f"| {name} | {med:,.0f} ({', '.join(f'{r:,.0f}' for r in runs)}) | "
                  f"{med / ref:.2f} |")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
        names = [f"{TAG}-n{i}" for i in range(3)]
        sh(*PM, "rm", "-f", "-t", "2", *names)
        sh(*PM, "network", "rm", "-f", f"{TAG}-net")
        sh(*PM, "volume", "rm", "-f", *names)
        sh(*PM, "rmi", "-f", f"localhost/{TAG}")
        shutil.rmtree(tmp, ignore_errors=True)


main()
