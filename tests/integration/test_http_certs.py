#!/usr/bin/env python3
"""HTTPS by default beyond loopback, with a cluster CA: `ringnet cert`, as a user meets it.

`ringnet cert init` makes a CA (and will not overwrite one), `ringnet cert issue` makes a
node certificate it signs (openssl verifies it) and refuses bad requests with exit 2. In a
network namespace of the test's own (prefix rnc; skipped without root), where 10.78.0.1
is not loopback, a node started with --ca serves HTTPS by default with a certificate it
issued itself for its address: curl with --cacert gets answers, curl without fails
verification, plain HTTP gets none, the CLI with RINGNET_CACERT works (put, get,
upload, download) and with another CA's certificate says the node is not signed by it, `ringnet health` finds the node's
own copy of the CA. A restart reuses the certificate; a node with no CA makes its own and
names the file clients need; switching it to the cluster CA issues a new certificate; a
certificate for another address is refused by the CLI with that reason; `--http-tls
none` serves plain HTTP; `--ca` naming a folder without a CA stops the node with exit 2."""
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ringtest import Checks, dump_logs

BIN = sys.argv[1]
t = Checks("http_certs")
check = t.check
IP = "10.78.0.1"


def run(args, env=None, ns=None):
    e = dict(os.environ)
    for k in ("RINGNET_CACERT", "RINGNET_API_TOKEN", "RINGNET_NODE", "RINGNET_HTTP",
              "RINGNET_HTTP_TLS", "RINGNET_DATA", "RINGNET_ID"):
        e.pop(k, None)
    e.update(env or {})
    pre = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run(pre + args, capture_output=True, text=True, env=e, timeout=60)


def cert_cli(tmp):
    ca = f"{tmp}/ca"
    r = run([BIN, "cert", "init", "--dir", ca])
    check("cert init exits 0 and names ca.crt", r.returncode == 0 and "ca.crt" in r.stdout,
          (r.returncode, r.stdout, r.stderr))
    check("the CA key is readable by its owner only",
          os.path.exists(f"{ca}/ca.key") and os.stat(f"{ca}/ca.key").st_mode & 0o077 == 0)
    before = open(f"{ca}/ca.key", "rb").read() if os.path.exists(f"{ca}/ca.key") else b""
    r = run([BIN, "cert", "init", "--dir", ca])
    check("a second cert init refuses, and the key is unchanged",
          r.returncode == 1 and "not overwriting" in r.stderr
          and open(f"{ca}/ca.key", "rb").read() == before, (r.returncode, r.stderr))
    r = run([BIN, "cert", "issue", "web", "--dir", ca, "--ip", IP, "--dns", "web.example"])
    check("cert issue exits 0", r.returncode == 0, (r.returncode, r.stderr))
    v = run(["openssl", "verify", "-CAfile", f"{ca}/ca.crt", f"{ca}/web.crt"])
    check("openssl verifies the issued certificate against ca.crt", v.returncode == 0,
          v.stdout + v.stderr)
    txt = run(["openssl", "x509", "-in", f"{ca}/web.crt", "-noout", "-ext",
               "subjectAltName"]).stdout
    check("it names the address and the host asked for",
          f"IP Address:{IP}" in txt and "DNS:web.example" in txt, txt)
    for args, said in ((["web2", "--dir", ca], "--ip ADDRESS"),
                       (["../x", "--dir", ca, "--ip", IP], "NAME is"),
                       (["web3", "--dir", ca, "--ip", "1.2.3"], "not an IP address"),
                       (["web4", "--dir", f"{tmp}/nothing", "--ip", IP], "no CA in")):
        r = run([BIN, "cert", "issue"] + args)
        check(f"cert issue {' '.join(args[:1])}...: an error naming the problem",
              r.returncode in (1, 2) and said in r.stderr, (r.returncode, r.stderr))
    return ca


class NsNode:
    def __init__(self, ns, tmp, name, port, args):
        self.ns, self.name, self.port = ns, name, port
        self.data, self.logf = f"{tmp}/d-{name}", f"{tmp}/{name}.log"
        self.args, self.p = args, None

    def start(self):
        log = open(self.logf, "a")
        self.p = subprocess.Popen(["ip", "netns", "exec", self.ns, BIN, "node", "--id",
                                   self.name, "--listen", f"{IP}:{self.port}", "--http",
                                   f"{IP}:{self.port + 1}", "--data", self.data]
                                  + self.args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def log(self):
        return open(self.logf).read() if os.path.exists(self.logf) else ""

    def token(self):
        path = f"{self.data}/api.token"
        return open(path).read().strip() if os.path.exists(path) else ""

    def curl(self, url_path, *args, https=True):
        """curl inside the namespace: (exit code, HTTP status)."""
        scheme = "https" if https else "http"
        r = run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", *args,
                 f"{scheme}://{IP}:{self.port + 1}{url_path}"], ns=self.ns)
        return r.returncode, r.stdout

    def wait_https(self, cacert):
        for _ in range(150):
            if self.curl("/health", "--cacert", cacert) == (0, "200"):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def cli(self, args, env):
        return run([BIN] + args + ["--node", f"{IP}:{self.port + 1}"], env, ns=self.ns)


def in_namespace(tmp, ca):
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("http_certs: skipping the node cases: a network namespace needs root")
        return
    ns = f"rnc-{os.getpid()}"
    if run(["ip", "netns", "add", ns]).returncode != 0:
        print("http_certs: skipping the node cases: cannot make a network namespace")
        return
    nodes = []
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                    ["ip", "addr", "add", f"{IP}/24", "dev", "v0"],
                    ["ip", "link", "set", "v0", "up"], ["ip", "link", "set", "v1", "up"]):
            subprocess.run(["ip", "netns", "exec", ns] + cmd, check=True)
        a = NsNode(ns, tmp, "a", 7000, ["--ca", ca]).start()
        own = NsNode(ns, tmp, "own", 7100, []).start()
        plain = NsNode(ns, tmp, "plain", 7200, ["--http-tls", "none"]).start()
        other = f"{tmp}/other"
        run([BIN, "cert", "issue", "elsewhere", "--dir", ca, "--ip", "10.78.0.9"])
        wrong = NsNode(ns, tmp, "wrong", 7300, ["--http-tls", f"{ca}/elsewhere.crt,"
                                                f"{ca}/elsewhere.key"]).start()
        nodes += [a, own, plain, wrong]
        run([BIN, "cert", "init", "--dir", other])

        # a: HTTPS by default, with a certificate issued from the cluster CA
        check("node a serves HTTPS, trusted through the CA's certificate",
              a.wait_https(f"{ca}/ca.crt"), a.log()[-2000:])
        crt = f"{a.data}/tls/node.crt"
        v = run(["openssl", "verify", "-CAfile", f"{ca}/ca.crt", crt])
        check("its certificate DATA/tls/node.crt is signed by the cluster CA",
              v.returncode == 0, v.stdout + v.stderr)
        san = run(["openssl", "x509", "-in", crt, "-noout", "-ext", "subjectAltName"]).stdout
        check("... and names its --http address", f"IP Address:{IP}" in san, san)
        check("its key is readable by its owner only",
              os.path.exists(f"{a.data}/tls/node.key")
              and os.stat(f"{a.data}/tls/node.key").st_mode & 0o077 == 0)
        check("its log says it serves HTTPS and what a client needs",
              "HTTPS" in a.log() and f"RINGNET_CACERT={a.data}/tls/ca.crt" in a.log(),
              a.log()[-2000:])
        check("DATA/tls/ca.crt is the CA's certificate",
              os.path.exists(f"{a.data}/tls/ca.crt")
              and filecmp.cmp(f"{a.data}/tls/ca.crt", f"{ca}/ca.crt", shallow=False))
        rc, code = a.curl("/health")
        check("curl without --cacert fails verification (exit 60)", rc == 60, (rc, code))
        rc, code = a.curl("/health", https=False)
        check("plain HTTP gets no answer", code != "200", (rc, code))
        rc, code = a.curl("/ring", "--cacert", f"{ca}/ca.crt")
        check("the API token is still asked for over HTTPS", code == "401", (rc, code))
        env = {"RINGNET_CACERT": f"{ca}/ca.crt", "RINGNET_API_TOKEN": a.token()}
        r = a.cli(["put", "color", "blue"], env)
        check("ringnet put over HTTPS with RINGNET_CACERT (HOST:PORT)", r.returncode == 0,
              (r.returncode, r.stderr))
        r = a.cli(["get", "color"], env)
        check("ringnet get reads it back", r.returncode == 0 and r.stdout.strip() == "blue",
              (r.returncode, r.stdout, r.stderr))
        blob = os.urandom(200_000)
        with open(f"{tmp}/blob.bin", "wb") as f:
            f.write(blob)
        r = a.cli(["upload", f"{tmp}/blob.bin"], env)
        check("ringnet upload over HTTPS", r.returncode == 0, (r.returncode, r.stderr))
        r = a.cli(["download", "blob.bin", "-o", f"{tmp}/back.bin"], env)
        check("ringnet download over HTTPS gets the same bytes", r.returncode == 0
              and open(f"{tmp}/back.bin", "rb").read() == blob, (r.returncode, r.stderr))
        r = a.cli(["download", "blob.bin", "-o", f"{tmp}/no.bin"],
                  dict(env, RINGNET_CACERT=f"{other}/ca.crt"))
        check("ringnet download with another CA's certificate: refused, nothing written",
              r.returncode != 0 and "not signed by" in r.stderr
              and not os.path.exists(f"{tmp}/no.bin"), (r.returncode, r.stderr))
        r = a.cli(["get", "color"], dict(env, RINGNET_CACERT=f"{other}/ca.crt"))
        check("with another CA's certificate: exit 3, saying the node is not signed by it",
              r.returncode == 3 and "not signed by the CA in RINGNET_CACERT" in r.stderr
              and r.stdout == "", (r.returncode, r.stdout, r.stderr))
        r = run([BIN, "get", "color", "--node", f"https://{IP}:7001"],
                {"RINGNET_API_TOKEN": a.token()}, ns=ns)
        check("with no CA named: exit 3, saying so", r.returncode == 3
              and "RINGNET_CACERT" in r.stderr, (r.returncode, r.stderr))
        r = run([BIN, "health"], {"RINGNET_HTTP": f"{IP}:7001", "RINGNET_DATA": a.data}, ns=ns)
        check("ringnet health finds a node on HTTPS by its own settings", r.returncode == 0,
              (r.returncode, r.stdout, r.stderr))
        before = open(crt, "rb").read()
        a.stop()
        a.start()
        check("node a serves HTTPS again after a restart", a.wait_https(f"{ca}/ca.crt"),
              a.log()[-2000:])
        check("... with the same certificate, which its log says it made before",
              open(crt, "rb").read() == before and "earlier start" in a.log())

        # own: no CA anywhere, so it makes one in its data folder and says which file to trust
        owned = f"{own.data}/tls/ca.crt"
        check("a node without a CA makes its own and serves HTTPS with it",
              own.wait_https(owned), own.log()[-2000:])
        check("... its log names the CA it made and the file clients need",
              f"{own.data}/ca" in own.log() and f"RINGNET_CACERT={owned}" in own.log(),
              own.log()[-2000:])
        check("... that CA is not the cluster's: its certificate fails against ca.crt",
              own.curl("/health", "--cacert", f"{ca}/ca.crt")[0] == 60)
        own.stop()
        own.args = ["--ca", ca]
        own.start()
        check("started with --ca, it issues a certificate from the cluster CA",
              own.wait_https(f"{ca}/ca.crt"), own.log()[-2000:])
        check("... and its log says why the old one went",
              "not signed by the CA" in own.log(), own.log()[-2000:])

        # plain: --http-tls none
        for _ in range(100):
            if plain.curl("/health", https=False)[1] == "200":
                break
            time.sleep(0.1)
        check("--http-tls none serves plain HTTP beyond loopback",
              plain.curl("/health", https=False)[1] == "200", plain.log()[-2000:])
        check("... and no HTTPS", plain.curl("/health", "--cacert", f"{ca}/ca.crt")[1]
              != "200")
        r = plain.cli(["get", "x"], {"RINGNET_API_TOKEN": plain.token()})
        check("the CLI reaches it over http:// when no CA is named", r.returncode in (1, 3)
              and "cannot reach" not in r.stderr, (r.returncode, r.stderr))
        r = run([BIN, "get", "x", "--node", f"https://{IP}:7201"],
                {"RINGNET_CACERT": f"{ca}/ca.crt"}, ns=ns)
        check("https:// to a plain node: exit 3, asking whether it serves HTTPS",
              r.returncode == 3 and "serve HTTPS?" in r.stderr, (r.returncode, r.stderr))

        # wrong: a certificate for another address
        for _ in range(100):
            if wrong.curl("/health", "--cacert", f"{ca}/ca.crt", "-k")[1] == "200":
                break
            time.sleep(0.1)
        r = wrong.cli(["get", "x"], {"RINGNET_CACERT": f"{ca}/ca.crt",
                                     "RINGNET_API_TOKEN": wrong.token()})
        check("a certificate naming another address: exit 3, saying so",
              r.returncode == 3 and "does not name this host" in r.stderr,
              (r.returncode, r.stderr))

        # --ca naming a folder with no CA: stops at once
        bad = NsNode(ns, tmp, "bad", 7400, ["--ca", f"{tmp}/nothing"]).start()
        nodes.append(bad)
        try:
            rc = bad.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            rc = None
        check("--ca without a CA there: exit 2 naming `ringnet cert init`",
              rc == 2 and "ringnet cert init" in bad.log(), (rc, bad.log()[-500:]))
    finally:
        for n in nodes:
            n.stop()
        run(["ip", "netns", "del", ns])


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ca = cert_cli(tmp)
        in_namespace(tmp, ca)
        if t.failures:
            dump_logs(tmp)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
