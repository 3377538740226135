#!/usr/bin/env python3
"""What HTTPS costs the API: GET /kv/<key> on a node serving plain HTTP beside the same
node serving HTTPS with a certificate from `ringnet cert` (EC P-256), in the same run.

Two single-node rings on 127.0.0.1 (one plain, one --http-tls), the same 64-byte value in
each; wrk -t1 -cCONNS -dSECS s, alternating plain and HTTPS run by run so that the
machine's other load falls on both, RUNS times, in two modes: keep-alive connections
(TLS costs the record layer only) and `Connection: close` (a TCP connect and a full TLS
handshake per request). Prints medians and the ratio HTTPS / plain.

usage: python3 bench/http_tls.py [path/to/ringnet]     (wrk: scripts/deps.sh --bench)
settings: RUNS (5), SECS (4), CONNS (16)"""
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(HERE, "..", "build", "ringnet"))
RUNS, SECS, CONNS = (int(os.environ.get(k, d)) for k, d in
                     (("RUNS", 5), ("SECS", 4), ("CONNS", 16)))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from ringtest import free_port  # noqa: E402


def wrk(url, close):
    """One wrk run: (requests/s, p99 ms); exits on any non-2xx answer."""
    args = ["wrk", "-t1", f"-c{CONNS}", f"-d{SECS}s", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=SECS + 60).stdout
    if "Non-2xx" in out or "Requests/sec" not in out:
        sys.exit(f"http_tls: wrk did not measure 200s at {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    return rps, float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]


def main():
    if not shutil.which("wrk"):
        sys.exit("http_tls: wrk is missing: run scripts/deps.sh --bench")
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run([BIN, "cert", "init", "--dir", f"{tmp}/ca"], check=True,
                           capture_output=True)
            subprocess.run([BIN, "cert", "issue", "t", "--dir", f"{tmp}/ca", "--ip",
                            "127.0.0.1"], check=True, capture_output=True)
            ctx = ssl.create_default_context(cafile=f"{tmp}/ca/ca.crt")
            urls = {}
            for name, extra in (("plain", []),
                                ("https", ["--http-tls", f"{tmp}/ca/t.crt,{tmp}/ca/t.key"])):
                http = free_port()
                procs.append(subprocess.Popen(
                    [BIN, "node", "--id", name, "--listen", f"127.0.0.1:{free_port()}",
                     "--http", f"127.0.0.1:{http}", "--data", f"{tmp}/{name}",
                     "--log-level", "warn"] + extra))
                base = f"{'https' if extra else 'http'}://127.0.0.1:{http}"
                body = json.dumps({"key": "bench-key", "value": "v" * 64}).encode()
                for _ in range(200):
                    try:
                        urllib.request.urlopen(urllib.request.Request(
                            base + "/kv", data=body, method="POST"), timeout=2,
                            context=ctx if extra else None).read()
                        break
                    except OSError:
                        time.sleep(0.1)
                urls[name] = base + "/kv/bench-key"
            rows = {(mode, name): [] for mode in ("keep-alive", "close") for name in urls}
            for _ in range(RUNS):
                for mode in ("keep-alive", "close"):
                    for name, url in urls.items():
                        rows[(mode, name)].append(wrk(url, mode == "close"))
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=20)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the "
          f"end; wrk -t1 -c{CONNS} -d{SECS}s, median of {RUNS}, alternating\n")
    print("| connections | plain HTTP: req/s (p99) | HTTPS: req/s (p99) | ratio HTTPS / plain |")
    print("|---|---|---|---|")
    for mode in ("keep-alive", "close"):
        med = {name: (statistics.median(r[0] for r in rows[(mode, name)]),
                      statistics.median(r[1] for r in rows[(mode, name)])) for name in urls}
        runs = {name: ", ".join(f"{r[0]:,.0f}" for r in rows[(mode, name)]) for name in urls}
        print(f"| {mode} | {med['plain'][0]:,.0f} ({med['plain'][1]:.2f} ms; runs {runs['plain']})"
              f" | {med['https'][0]:,.0f} ({med['https'][1]:.2f} ms; runs {runs['https']}) | "
              f"{med['https'][0] / med['plain'][0]:.2f} |")


if __name__ == "__main__":
    main()
