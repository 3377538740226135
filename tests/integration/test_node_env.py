#!/usr/bin/env python3
"""`ringnet node` configured by RINGNET_* variables (how a container is configured), flags
winning over them, host names resolved, and `ringnet health` (a container's health check)."""
import os
import socket
import subprocess
import sys
import tempfile
import time

import ringtest
from ringtest import Checks, free_port, get, request

BIN = sys.argv[1]
t = Checks("node_env")
check = t.check
VARS = ("RINGNET_ID", "RINGNET_LISTEN", "RINGNET_HTTP", "RINGNET_JOIN", "RINGNET_DATA",
        "RINGNET_KEY", "RINGNET_REPLICAS", "RINGNET_WRITE_QUORUM", "RINGNET_LOG_LEVEL",
        "RINGNET_NODE", "RINGNET_API_TOKEN", "RINGNET_API_TOKEN_FILE", "RINGNET_HTTP_TLS",
        "RINGNET_CACERT", "RINGNET_SUSPICION_MS", "RINGNET_LIFEGUARD", "RINGNET_CONFIRM",
        "RINGNET_EAGER_GOSSIP", "RINGNET_SUSPECT_PROBES")


def env_with(**kw):
    e = {k: v for k, v in os.environ.items() if k not in VARS}
    e.update(kw)
    return e


def start(logdir, name, env, args=()):
    log = open(os.path.join(logdir, name + ".log"), "a")
    return subprocess.Popen([BIN, "node", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_http(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            return False
        try:
            get(port, "/health")
            return True
        except OSError:
            time.sleep(0.05)
    return False


def loopback_name():
    """A host name other than localhost that resolves to 127.0.0.0/8, or None."""
    for n in (socket.gethostname(), "localhost4", "loopback"):
        try:
            if n != "localhost" and socket.gethostbyname(n).startswith("127."):
                return n
        except OSError:
            pass
    return None


def health(port_or_env):
    env = env_with(**port_or_env) if isinstance(port_or_env, dict) else env_with()
    args = [] if isinstance(port_or_env, dict) else ["--node", f"127.0.0.1:{port_or_env}"]
    return subprocess.run([BIN, "health", *args], env=env, capture_output=True, text=True,
                          timeout=30)


def late_join_name(tmp, procs, p1, h1):
    """A --join name that does not resolve yet (a peer container not up) is waited for, and
    looked up again on every try: the node neither exits nor starts a ring of its own. The
    node gets an /etc/hosts of its own (a private mount namespace), which the test fills in
    later; glibc reads the file on every lookup."""
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n")
    hl = free_port()
    listen = f"127.0.0.1:{free_port()}"
    cmd = (f"mount --bind {hosts} /etc/hosts && exec {BIN} node --id late --listen {listen}"
           f" --http 127.0.0.1:{hl} --data {tmp}/late --join ringnet-late-peer:{p1}")
    late = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                            env=env_with(), stdout=open(f"{tmp}/late.log", "a"),
                            stderr=subprocess.STDOUT)
    procs.append(late)
    check("a node whose --join name does not resolve yet starts (no usage error)",
          wait_http(hl, late), (late.poll(), open(f"{tmp}/late.log").read()[-400:]))
    time.sleep(2.5)  # two tries to join, at least
    _, hj = get(hl, "/health")
    check("... and waits: it is in no ring (it did not start one of its own)",
          hj.get("joined") is False, hj)
    log = open(f"{tmp}/late.log").read()
    check("... its log says the name does not resolve, once",
          log.count("ringnet-late-peer:%d does not resolve" % p1) == 1, log[-600:])
    with open(hosts, "w") as f:  # the peer container comes up: its name resolves
        f.write("127.0.0.1 localhost\n127.0.0.1 ringnet-late-peer\n")
    joined = False
    for _ in range(150):
        _, r = get(h1, "/ring")
        if any(s["addr"] == listen for s in r["successors"]):
            joined = True
            break
        time.sleep(0.1)
    check("... and joins the peer once its name resolves", joined, r)
    log = open(f"{tmp}/late.log").read()
    check("... saying what it resolved to", f"ringnet-late-peer:{p1} is 127.0.0.1:{p1}" in log,
          log[-600:])


def main():
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # a node configured by the environment alone
            p1, h1 = free_port(), free_port()
            a = start(tmp, "a", env_with(RINGNET_ID="env-a", RINGNET_LISTEN=f"127.0.0.1:{p1}",
                                         RINGNET_HTTP=f"127.0.0.1:{h1}",
                                         RINGNET_DATA=f"{tmp}/a", RINGNET_JOIN="",
                                         RINGNET_LOG_LEVEL="debug", RINGNET_REPLICAS="2",
                                         RINGNET_SUSPICION_MS="1500", RINGNET_LIFEGUARD="2",
                                         RINGNET_CONFIRM="2", RINGNET_EAGER_GOSSIP="5",
                                         RINGNET_SUSPECT_PROBES="0"))
            procs.append(a)
            check("a node starts from RINGNET_* alone (an empty RINGNET_JOIN is unset)",
                  wait_http(h1, a), a.poll())
            _, hj = get(h1, "/health")
            check("... named by RINGNET_ID", hj.get("name") == "env-a", hj)
            gauge = None
            for _ in range(100):  # the membership service starts with the ring
                gauge = ringtest.metrics(h1).get("ringnet_member_suspicion_timeout_seconds")
                if gauge is not None:
                    break
                time.sleep(0.1)
            check("... its suspicion timeout from RINGNET_SUSPICION_MS (2 x 1500 ms)",
                  gauge == 3.0, gauge)
            _, r = get(h1, "/ring")
            check("... its peer address is RINGNET_LISTEN",
                  r["self"]["addr"] == f"127.0.0.1:{p1}", r["self"])
            check("... its store is in RINGNET_DATA", os.path.isdir(f"{tmp}/a"),
                  os.listdir(tmp))

            # flags win over the environment; RINGNET_JOIN takes a comma-separated list
            p2, h2 = free_port(), free_port()
            name = loopback_name()
            host = name or "127.0.0.1"
            b = start(tmp, "b", env_with(RINGNET_ID="ignored", RINGNET_LISTEN="127.0.0.1:1",
                                         RINGNET_HTTP=f"127.0.0.1:{h2}",
                                         RINGNET_JOIN=f"127.0.0.1:{free_port()}, {host}:{p1}",
                                         RINGNET_DATA=f"{tmp}/b"),
                      ["--id", "flag-b", "--listen", f"127.0.0.1:{p2}"])
            procs.append(b)
            check("a node with flags and variables starts", wait_http(h2, b), b.poll())
            _, hj = get(h2, "/health")
            check("--id wins over RINGNET_ID", hj.get("name") == "flag-b", hj)
            _, r = get(h2, "/ring")
            check("--listen wins over RINGNET_LISTEN", r["self"]["addr"] == f"127.0.0.1:{p2}",
                  r["self"])
            joined = False
            for _ in range(100):
                _, r = get(h1, "/ring")
                if any(s["addr"] == f"127.0.0.1:{p2}" for s in r["successors"]):
                    joined = True
                    break
                time.sleep(0.1)
            check("RINGNET_JOIN's second address (the first is dead) is joined", joined, r)
            if name:
                check(f"a host name ({name}) in RINGNET_JOIN was resolved", joined)
            else:
                print("note: no loopback host name besides localhost; name resolution is "
                      "checked by tests/container only")

            # a bad value is named with the variable it came from; nothing starts
            for var, val in (("RINGNET_REPLICAS", "many"), ("RINGNET_LISTEN", "0.0.0.0:7"),
                             ("RINGNET_JOIN", "no_such_host!:7000"),
                             ("RINGNET_JOIN", "no-such-host.invalid"),
                             ("RINGNET_LOG_LEVEL", "loud")):
                env = env_with(RINGNET_ID="x", RINGNET_LISTEN=f"127.0.0.1:{free_port()}",
                               RINGNET_HTTP=f"127.0.0.1:{free_port()}",
                               RINGNET_DATA=f"{tmp}/bad")
                env[var] = val
                rr = subprocess.run([BIN, "node"], env=env, capture_output=True, text=True,
                                    timeout=30)
                check(f"{var}={val} is a usage error naming {var}",
                      rr.returncode == 2 and f"{var}'s" in rr.stderr and val in rr.stderr,
                      (rr.returncode, rr.stderr[-300:]))
            check("... and no store was made", not os.path.exists(f"{tmp}/bad"))
            env = env_with(RINGNET_ID="x", RINGNET_LISTEN=f"127.0.0.1:{free_port()}",
                           RINGNET_HTTP=f"127.0.0.1:{free_port()}", RINGNET_REPLICAS="many",
                           RINGNET_DATA=f"{tmp}/flagged")
            c = start(tmp, "c", env, ["--replicas", "3"])
            procs.append(c)
            check("a bad variable overridden by its flag is not looked at",
                  wait_http(int(env["RINGNET_HTTP"].split(":")[1]), c), c.poll())

            late_join_name(tmp, procs, p1, h1)

            # RINGNET_API_TOKEN_FILE is the node's --api-token (RINGNET_API_TOKEN, the
            # clients' token itself, is not read by the node)
            with open(f"{tmp}/token", "w") as f:
                f.write("0123456789abcdef0123456789abcdef\n")
            ht = free_port()
            tk = start(tmp, "t", env_with(RINGNET_ID="t", RINGNET_LISTEN=f"127.0.0.1:{free_port()}",
                                          RINGNET_HTTP=f"127.0.0.1:{ht}", RINGNET_DATA=f"{tmp}/t",
                                          RINGNET_API_TOKEN_FILE=f"{tmp}/token",
                                          RINGNET_API_TOKEN="not-read-by-the-node"))
            procs.append(tk)
            check("a node with RINGNET_API_TOKEN_FILE starts", wait_http(ht, tk), tk.poll())
            status, _ = request(ht, "/ring")
            check("... and asks for that token (even on loopback)", status == 401, status)
            got = subprocess.run([BIN, "ring", "--node", f"127.0.0.1:{ht}"], capture_output=True,
                                 text=True, timeout=30,
                                 env=env_with(RINGNET_API_TOKEN="0123456789abcdef0123456789abcdef"))
            check("... which a client sends from RINGNET_API_TOKEN", got.returncode == 0
                  and '"t"' in got.stdout, (got.returncode, got.stderr[-300:]))
            hr = health(ht)
            check("ringnet health needs no token", hr.returncode == 0, (hr.returncode, hr.stderr))

            # ringnet health: 0 for a live node (by --node or RINGNET_HTTP), 1 otherwise
            hr = health(h1)
            check("health --node of a live node exits 0 and prints its /health",
                  hr.returncode == 0 and '"env-a"' in hr.stdout, (hr.returncode, hr.stderr))
            hr = health({"RINGNET_HTTP": f"127.0.0.1:{h2}"})
            check("health finds the node by RINGNET_HTTP", hr.returncode == 0
                  and '"flag-b"' in hr.stdout, (hr.returncode, hr.stdout, hr.stderr))
            dead = free_port()
            hr = health(dead)
            check("health of nothing listening exits 1", hr.returncode == 1,
                  (hr.returncode, hr.stderr))
            with socket.socket() as s:  # a server that answers 404 to everything
                s.bind(("127.0.0.1", 0))
                s.listen(1)
                port = s.getsockname()[1]
                srv = subprocess.Popen([sys.executable, "-c", f"""
import socket
s = socket.fromfd({s.fileno()}, socket.AF_INET, socket.SOCK_STREAM)
c, _ = s.accept(); c.recv(4096)
c.sendall(b"HTTP/1.1 404 Not Found\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\n{{}}")
c.close()
"""], pass_fds=(s.fileno(),))
                hr = health(port)
                srv.wait(timeout=10)
            check("health of a server answering 404 exits 1", hr.returncode == 1,
                  (hr.returncode, hr.stdout, hr.stderr))
            # a node serving HTTPS (RINGNET_HTTP_TLS): health finds it by the same variables
            cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                "-keyout", key, "-out", cert, "-days", "1", "-subj",
                                "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                               capture_output=True, text=True, timeout=60)
            check("openssl made a certificate", r.returncode == 0, r.stderr)
            hs = free_port()
            tlsenv = env_with(RINGNET_ID="s", RINGNET_LISTEN=f"127.0.0.1:{free_port()}",
                              RINGNET_HTTP=f"localhost:{hs}", RINGNET_DATA=f"{tmp}/s",
                              RINGNET_HTTP_TLS=f"{cert},{key}")
            sn = start(tmp, "s", tlsenv)
            procs.append(sn)
            up = False
            for _ in range(100):
                if subprocess.run([BIN, "health"], env=dict(tlsenv, RINGNET_CACERT=cert),
                                  capture_output=True, timeout=30).returncode == 0:
                    up = True
                    break
                time.sleep(0.1)
            check("health reaches a node over HTTPS by RINGNET_HTTP and RINGNET_HTTP_TLS", up,
                  sn.poll())
            hr = subprocess.run([BIN, "health"], env=tlsenv, capture_output=True, text=True,
                                timeout=30)
            check("... and fails when it does not trust the certificate", hr.returncode == 1,
                  (hr.returncode, hr.stderr[-200:]))

            status, _ = request(h1, "/kv", "POST", {"key": "k", "value": 1})
            check("the env-configured ring stores a key", status == 200, status)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            if t.failures:
                for f in sorted(os.listdir(tmp)):
                    if f.endswith(".log"):
                        print(f"--- {f}\n" + open(os.path.join(tmp, f)).read()[-1500:])
    return t.finish()


sys.exit(main())
