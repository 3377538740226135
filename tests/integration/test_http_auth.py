#!/usr/bin/env python3
"""The HTTP API's guards: --api-token and --http-tls, as a user meets them.

A node with --api-token answers 401 (with WWW-Authenticate) to a request without the
token or with a wrong one, serves one with it, and keeps /health open; `ringnet put/get`
pass $RINGNET_API_TOKEN. A node whose --http is not a loopback address makes a token in
its data folder by itself and names it in its log (checked in a network namespace, where
an address of the test's own is not loopback; skipped without root). With --http-tls the
API is HTTPS only: a client that trusts the certificate gets its answers, plain HTTP gets
none, and `ringnet get` trusts $RINGNET_CACERT. Bad settings stop the node at once with
exit 2 and a message naming the setting."""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from ringtest import Checks, free_port

BIN = sys.argv[1]
t = Checks("http_auth")
check = t.check


def call(url, method="GET", body=None, headers=None, ctx=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def start(args, logdir, name):
    peer, http = free_port(), free_port()
    log = open(os.path.join(logdir, name + ".log"), "w")
    p = subprocess.Popen([BIN, "node", "--id", name, "--listen", f"127.0.0.1:{peer}",
                          "--http", f"127.0.0.1:{http}", "--data", f"{logdir}/d-{name}"]
                         + args, stdout=log, stderr=subprocess.STDOUT)
    return p, http


def wait_up(url, ctx=None):
    for _ in range(200):
        try:
            call(url + "/health", ctx=ctx, timeout=1)
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cli(args, env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([BIN] + args, capture_output=True, text=True, env=e, timeout=60)


def token_checks(logdir):
    token = "s3cret-token-for-the-test-0123456789"
    with open(f"{logdir}/token", "w") as f:
        f.write(token + "\n")
    p, http = start(["--api-token", f"{logdir}/token"], logdir, "tok")
    base = f"http://127.0.0.1:{http}"
    try:
        check("the node with a token serves", wait_up(base))
        st, body, hdr = call(base + "/kv/a")
        check("no token: 401", st == 401, (st, body))
        check("no token: it says how to authenticate",
              hdr.get("WWW-Authenticate", "").startswith("Bearer") and b"Bearer" in body, hdr)
        st, _, _ = call(base + "/kv", "POST", {"key": "a", "value": 1},
                        {"Authorization": "Bearer wrong-token-wrong-token-00"})
        check("a wrong token: 401", st == 401, st)
        st, _, _ = call(base + "/kv", "POST", {"key": "a", "value": 1},
                        {"Authorization": "Bearer " + token[:-1]})
        check("a token one character short: 401", st == 401, st)
        st, body, _ = call(base + "/kv/a", headers={"Authorization": "Bearer " + token})
        check("the right token gets through (an unknown key: 404 or 503)",
              st in (404, 503), (st, body))
        st, body, _ = call(base + "/kv", "POST", {"key": "a", "value": 1},
                           {"Authorization": "Bearer " + token})
        check("a write with the token is stored", st == 200, (st, body))
        st, _, _ = call(base + "/metrics")
        check("/metrics needs the token too", st == 401, st)
        st, _, _ = call(base + "/health")
        check("/health stays open for probes", st == 200, st)
        r = cli(["get", "a", "--node", base], {"RINGNET_API_TOKEN": token})
        check("ringnet get passes $RINGNET_API_TOKEN", r.returncode == 0
              and r.stdout.strip() == "1", (r.returncode, r.stdout, r.stderr))
        r = cli(["put", "b", "2", "--node", base], {"RINGNET_API_TOKEN": ""})
        check("ringnet put without the token fails with the node's reason",
              r.returncode == 2 and "Bearer" in r.stderr, (r.returncode, r.stderr))
        st, _, _ = call(base + "/kv/a")
        check("the node still refuses strangers after serving its client", st == 401, st)
    finally:
        stop(p)


def tls_checks(logdir):
    cert, key = f"{logdir}/cert.pem", f"{logdir}/key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, text=True)
    check("openssl made a certificate", r.returncode == 0, r.stderr)
    p, http = start(["--http-tls", f"{cert},{key}"], logdir, "tls")
    ctx = ssl.create_default_context(cafile=cert)
    base = f"https://127.0.0.1:{http}"
    try:
        check("the HTTPS node serves", wait_up(base, ctx))
        st, body, _ = call(base + "/kv", "POST", {"key": "t", "value": "over tls"}, ctx=ctx)
        check("a write over HTTPS is stored", st == 200, (st, body))
        st, body, _ = call(base + "/kv/t", ctx=ctx)
        check("and reads back", st == 200 and json.loads(body)["value"] == "over tls", body)
        plain_answered = True
        try:
            call(f"http://127.0.0.1:{http}/health", timeout=3)
        except (OSError, ValueError, Exception):
            plain_answered = False
        check("plain HTTP gets no answer from an HTTPS node", not plain_answered)
        untrusted = True
        try:
            call(base + "/health", ctx=ssl.create_default_context())
        except (ssl.SSLError, urllib.error.URLError):
            untrusted = False
        check("a client that does not trust the certificate refuses it", not untrusted)
        r = cli(["get", "t", "--node", base], {"RINGNET_CACERT": cert})
        check("ringnet get trusts $RINGNET_CACERT", r.returncode == 0
              and r.stdout.strip() == "over tls", (r.returncode, r.stdout, r.stderr))
    finally:
        stop(p)


def bad_settings(logdir):
    with open(f"{logdir}/short", "w") as f:
        f.write("abc\n")
    cases = [(["--api-token", f"{logdir}/missing"], "cannot read"),
             (["--api-token", f"{logdir}/short"], "16 to"),
             (["--http-tls", f"{logdir}/nocert.pem,{logdir}/nokey.pem"], "cannot read"),
             (["--http-tls", "just-one-file.pem"], "CERT,KEY")]
    for args, said in cases:
        p, _ = start(args, logdir, "bad")
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = None
        with open(f"{logdir}/bad.log") as f:
            out = f.read()
        check(f"{args[0]} {args[1].rsplit('/', 1)[-1]}: exit 2 with a reason",
              rc == 2 and said in out, (rc, out))


def non_loopback(logdir):
    """In a namespace of the test's own, 10.77.0.1 is not loopback: the node makes a token."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("http_auth: skipping the non-loopback case: needs root for a network namespace")
        return
    ns = f"rnh-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        print("http_auth: skipping the non-loopback case: cannot make a network namespace")
        return
    p = None
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                    ["ip", "addr", "add", "10.77.0.1/24", "dev", "v0"],
                    ["ip", "link", "set", "v0", "up"],
                    ["ip", "link", "set", "v1", "up"]):
            subprocess.run(["ip", "netns", "exec", ns] + cmd, check=True)
        data = f"{logdir}/d-wide"
        log = open(f"{logdir}/wide.log", "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns, BIN, "node", "--id", "wide",
                              "--listen", "10.77.0.1:7000", "--http", "10.77.0.1:8000",
                              "--data", data, "--http-tls", "none"],  # HTTPS: test_http_certs
                             stdout=log, stderr=subprocess.STDOUT)

        def inside(*args):
            return subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-o",
                                   "/dev/null", "-w", "%{http_code}", *args],
                                  capture_output=True, text=True).stdout

        for _ in range(100):
            if inside("http://10.77.0.1:8000/health") == "200":
                break
            time.sleep(0.1)
        check("a node on a non-loopback address made its token file",
              os.path.exists(f"{data}/api.token")
              and os.stat(f"{data}/api.token").st_mode & 0o077 == 0)
        token = open(f"{data}/api.token").read().strip() if os.path.exists(
            f"{data}/api.token") else ""
        with open(f"{logdir}/wide.log") as f:
            said = f.read()
        check("its log names the token file", "api.token" in said, said)
        check("without the token: 401", inside("http://10.77.0.1:8000/ring") == "401")
        check("with it: 200", inside("-H", f"Authorization: Bearer {token}",
                                     "http://10.77.0.1:8000/ring") == "200")
    finally:
        if p:
            p.terminate()
            p.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns])


def main():
    with tempfile.TemporaryDirectory() as logdir:
        token_checks(logdir)
        tls_checks(logdir)
        bad_settings(logdir)
        non_loopback(logdir)
        if t.failures:
            for f in sorted(os.listdir(logdir)):
                if f.endswith(".log"):
                    print(f"--- {f}\n" + open(os.path.join(logdir, f)).read()[-1500:])
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
