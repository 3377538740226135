#!/usr/bin/env python3
"""The command line's usage errors and help, as a user meets them."""
import os
import random
import subprocess
import sys
import tempfile

from ringtest import Checks, Node, free_port_range, request, stop_all

BIN = sys.argv[1]
t = Checks("cli_usage")
check = t.check


def run(*args, timeout=60):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def main():
    random.seed(os.getpid())
    # a bad --log-level stops the cluster at once: exit 2, one message, no node started
    with tempfile.TemporaryDirectory() as tmp:
        base = free_port_range(60)
        r = run("cluster", "--nodes", "2", "--base-http", str(base), "--base-peer",
                str(base + 50), "--data", f"{tmp}/d", "--log-level", "loud")
        check("cluster --log-level loud exits 2", r.returncode == 2, (r.returncode, r.stderr))
        check("... naming the bad value once", r.stderr.count("loud") == 1, r.stderr)
        check("... starting no node", "; starting it again" not in r.stderr
              and not os.path.exists(f"{tmp}/d"), r.stderr)

        # a node that exits 2 is not started again: the cluster stops with status 2.
        # A data directory whose node-1 path is longer than a node takes makes node-1
        # exit with a usage error.
        deep = os.path.join(tmp, "x" * 120, "y" * 120)
        os.makedirs(deep)
        r = run("cluster", "--nodes", "2", "--base-http", str(base), "--base-peer",
                str(base + 50), "--data", os.path.join(deep, "d"))
        check("a node's usage error stops the cluster with status 2", r.returncode == 2,
              (r.returncode, r.stderr[-600:]))
        check("... printed once, not restarted",
              r.stderr.count("--data wants a directory path") == 1
              and "; starting it again" not in r.stderr,
              (r.stderr.count("--data wants a directory path"), r.stderr[:300]))

        # the failure detector's flags go to every node, which checks them
        r = run("cluster", "--nodes", "2", "--base-http", str(base), "--base-peer",
                str(base + 50), "--data", f"{tmp}/lg", "--lifeguard", "0")
        check("cluster --lifeguard 0: the nodes refuse it, the cluster exits 2",
              r.returncode == 2 and "--lifeguard wants a whole number, 1 to 100" in r.stderr,
              (r.returncode, r.stderr[-400:]))

    # ringnet node --help names every option and every route
    r = run("node", "--help")
    words = ("--id", "--listen", "--http", "--join", "--data", "--config", "--log-level",
             "POST /kv", "/kv/KEY", "/ring", "/peers", "/health", "/metrics")
    check("node --help lists every option and route",
          r.returncode == 0 and all(w in r.stdout for w in words),
          [w for w in words if w not in r.stdout])

    # a missing required option is named
    for args, missing, present in (
            (["--id", "a", "--listen", "127.0.0.1:1"], "--http", "--listen"),
            (["--id", "a", "--http", "127.0.0.1:1"], "--listen", "--http"),
            (["--listen", "127.0.0.1:1", "--http", "127.0.0.1:2"], "--id", "--listen")):
        r = run("node", *args)
        first = r.stderr.splitlines()[0] if r.stderr else ""
        check(f"node {args} names {missing} as missing",
              r.returncode == 2 and f"missing {missing}" in first
              and f"missing {present}" not in first, first)

    # --node takes HOST:PORT as well as a URL
    with tempfile.TemporaryDirectory() as logdir:
        node = None
        try:
            node = Node(BIN, "a", logdir)
            status, _ = request(node.http, "/kv", "POST", {"key": "color", "value": "blue"})
            check("a key is stored", status == 200, status)
            for url in (f"localhost:{node.http}", f"127.0.0.1:{node.http}",
                        f"http://127.0.0.1:{node.http}"):
                r = run("get", "color", "--node", url)
                check(f"get --node {url}", r.returncode == 0 and r.stdout.strip() == "blue",
                      (r.returncode, r.stdout, r.stderr))
            r = run("get", "color", "--node", "ftp://127.0.0.1:1")
            check("a URL of another scheme is a usage error", r.returncode == 2, r.stderr)
        finally:
            stop_all([node], t, logdir)
    return t.finish()


sys.exit(main())
