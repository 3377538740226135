#!/usr/bin/env python3
"""The node as a container image, as a user runs it with podman: build the image from the
Dockerfile (its host-rootfs target: no registry here, so the binary of this build and its
shared libraries are made into the tree by deploy/rootfs.sh), start three containers on a
user network configured by RINGNET_* variables, write keys through one and read them through
the others, check the health check, the user, the volume, restart one container and then all
of them and find the data again. Everything it makes is named rnc-<pid>-... and removed.

usage: test_container.py REPO BINARY     exit 0 pass, 1 fail, 77 podman cannot run here"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from ringtest import Checks, free_port, get, request  # noqa: E402

REPO, BIN = sys.argv[1], sys.argv[2]
t = Checks("container")
check = t.check
TAG = f"rnc-{os.getpid()}"
IMAGE = f"localhost/{TAG}-img"
NET = f"{TAG}-net"
# this machine's cgroups defeat podman's default runtime and its default limits
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# what podman says when it cannot run a container on this machine at all
RUNTIME_WORDS = ("OCI runtime", "runc", "cgroup", "OCI permission", "newuidmap",
                 "user namespace", "cannot re-exec", "storage driver")
NOISE = ("failed to connect to syslog", "systemd", "CNI config")


def podman(*args, timeout=120, check_rc=False):
    r = subprocess.run(PODMAN + list(args), capture_output=True, text=True, timeout=timeout)
    r.stderr = "\n".join(ln for ln in r.stderr.splitlines() if not any(n in ln for n in NOISE))
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {r.stderr.strip()[-500:]}")
    return r


class Box:
    """One node container: name n<i>, its volume, its HTTP port published on 127.0.0.1."""

    def __init__(self, i):
        self.i = i
        self.name = f"{TAG}-n{i}"
        self.volume = f"{TAG}-v{i}"
        self.http = free_port()
        self.token = None  # the API token the node made in its volume on its first start

    def run(self, subnet, env, args=()):
        # a fixed address: the others know a node by it, so it must survive a restart
        cmd = ["run", "-d", *LIMITS, "--name", self.name, "--network", NET,
               "--ip", f"{subnet}.{10 + self.i}",
               "-v", f"{self.volume}:/data", "-p", f"127.0.0.1:{self.http}:8080"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        podman(*cmd, IMAGE, *args, check_rc=True)

    def healthy(self, timeout=30):
        """Runs the image's HEALTHCHECK until it passes (no systemd here runs it by itself)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if podman("healthcheck", "run", self.name).returncode == 0:
                return True
            time.sleep(0.3)
        return False

    def read_token(self):
        path, _ = volume_files(self.volume)
        try:
            with open(os.path.join(path or "", "api.token")) as f:
                self.token = f.read().strip()
        except OSError:
            self.token = None
        return self.token

    def call(self, path, method="GET", body=None, ctype=None, token=True):
        """An HTTP request to the node with its token (token=False: without); status, bytes."""
        if isinstance(body, dict):
            body, ctype = json.dumps(body).encode(), "application/json"
        headers = {"Authorization": f"Bearer {self.token}"} if token and self.token else {}
        return http_raw(self.http, path, method, body, ctype, headers=headers)

    def kv(self, path, method="GET", body=None):
        status, raw = self.call(path, method, body)
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            return status, {"raw": raw[:200]}

    def logs(self):
        r = podman("logs", self.name)
        return (r.stdout + r.stderr)[-2500:]


def ring_of(box):
    _, r = box.kv("/ring")
    return r


def converged(boxes, timeout=40):
    """Every node's successor list holds the other nodes' addresses."""
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        try:
            rings = [ring_of(b) for b in boxes]
            addrs = {r["self"]["addr"] for r in rings}
            seen = [(r["self"]["addr"], [s["addr"] for s in r["successors"]]) for r in rings]
            if len(addrs) == len(boxes) and all(
                    addrs - {a} <= set(s) for a, s in seen):
                return True, seen
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    return False, seen


def read_all(box, keys):
    """The keys whose value read through box is not the one written."""
    bad = []
    for k, v in keys.items():
        try:
            status, body = box.kv(f"/kv/{k}")
        except OSError as e:
            status, body = str(e), {}
        if status != 200 or body.get("value") != v:
            bad.append((k, status, body.get("value")))
    return bad


def multipart(field, filename, data):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def http_raw(port, path, method="GET", body=None, ctype=None, timeout=60, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers=headers or {})
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def has_files_route(box):
    """Whether this build serves the files API (another part of issue 11)."""
    status, body = box.call("/files")
    return not (status == 404 and b"no such route" in body)


def file_round_trip(up, downs, name, data, what):
    body, ctype = multipart("file", name, data)
    status, raw = up.call("/upload", "POST", body, ctype)
    ans = json.loads(raw or b"{}") if status == 200 else {}
    check(f"{what}: upload through {up.name}", status == 200
          and ans.get("sha256") == hashlib.sha256(data).hexdigest()
          and ans.get("size") == len(data), (status, raw[:300]))
    for d in downs:
        status, got = d.call(f"/download/{name}")
        check(f"{what}: download through {d.name} is byte for byte the upload",
              status == 200 and got == data, (status, len(got)))


def volume_files(volume):
    r = podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
    path = r.stdout.strip()
    if r.returncode != 0 or not os.path.isdir(path):
        return None, {}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            out[os.path.relpath(os.path.join(root, f), path)] = (st.st_size, st.st_uid)
    return path, out


def build_image(ctx):
    """The runtime tree from this build's binary, then the Dockerfile's host-rootfs target."""
    r = subprocess.run(["sh", os.path.join(REPO, "deploy", "rootfs.sh"), BIN,
                        os.path.join(ctx, "rootfs")], capture_output=True, text=True)
    check("deploy/rootfs.sh makes the image's tree", r.returncode == 0, r.stderr)
    shutil.copy(os.path.join(REPO, "Dockerfile"), ctx)
    r = podman("build", "--format", "docker", "--layers=false", "--build-arg", "ROOTFS=host",
               "-t", IMAGE, ctx, timeout=300)
    if r.returncode != 0 and any(w in r.stderr for w in RUNTIME_WORDS):
        return r  # podman itself cannot work here (no user namespaces, say)
    check("podman build of the Dockerfile (ROOTFS=host)", r.returncode == 0,
          r.stderr[-800:])
    return r


def can_run():
    """None when podman runs the image here, else the one-line reason it cannot."""
    r = podman("run", "--rm", *LIMITS, "--entrypoint", "/usr/local/bin/ringnet", IMAGE,
               "version", timeout=120)
    if r.returncode == 0:
        return None, r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    # an image without its binary or a library also fails in runc's words: that is a failure
    broken = ("no such file", "not found", "exec format", "error while loading")
    if any(w in r.stderr for w in RUNTIME_WORDS) and not any(b in r.stderr for b in broken):
        return (lines[-1] if lines else f"exit {r.returncode}"), r
    return None, r


def cleanup(boxes, keep_image=False):
    for b in boxes:
        podman("rm", "-f", "-t", "2", b.name)
    podman("network", "rm", "-f", NET)
    for b in boxes:
        podman("volume", "rm", "-f", b.volume)
    remove_named(TAG)
    if not keep_image:
        podman("rmi", "-f", IMAGE)


def leftovers():
    out = []
    for what in (["ps", "-a", "--format", "{{.Names}}"], ["network", "ls", "--format",
                 "{{.Name}}"], ["volume", "ls", "--format", "{{.Name}}"],
                 ["images", "--format", "{{.Repository}}"]):
        out += [ln for ln in podman(*what).stdout.split() if TAG in ln]
    return out


def ldd_closure(binary):
    """The shared objects the binary loads, by the paths ldd names."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    paths = set()
    for ln in out.splitlines():
        w = ln.split()
        if len(w) >= 3 and w[1] == "=>" and w[2].startswith("/"):
            paths.add(w[2])
        elif w and w[0].startswith("/"):
            paths.add(w[0])
    return paths


def image_files():
    """Every regular file in the image (mounted on the host), as paths inside it."""
    r = podman("image", "mount", IMAGE)
    root = r.stdout.strip()
    found = set()
    try:
        for d, _, fs in os.walk(root):
            for f in fs:
                if os.path.isfile(os.path.join(d, f)):
                    found.add("/" + os.path.relpath(os.path.join(d, f), root))
    finally:
        podman("image", "unmount", IMAGE)
    return found


def make_network():
    """A user network on a /24 no other network holds; its first three octets."""
    err = ""
    for _ in range(10):
        subnet = f"10.{random.randrange(90, 250)}.{random.randrange(0, 256)}"
        r = podman("network", "create", "--subnet", f"{subnet}.0/24", NET)
        if r.returncode == 0:
            return subnet
        err = r.stderr
    raise RuntimeError(f"podman network create: {err.strip()[-300:]}")


def scenario(boxes):
    n1, n2, n3 = boxes
    # the image: built on scratch, so nothing in it but the binary and its libraries
    r = podman("image", "inspect", IMAGE)
    cfg = json.loads(r.stdout)[0]["Config"] if r.returncode == 0 else {}
    check("the image runs as user 10001, not root", cfg.get("User") == "10001:10001", cfg)
    check("... has /data as a volume", "/data" in (cfg.get("Volumes") or {}), cfg)
    check("... exposes the peer and HTTP ports",
          {"7000/tcp", "8080/tcp"} <= set(cfg.get("ExposedPorts") or {}), cfg)
    hc = (json.loads(r.stdout)[0].get("Healthcheck") or cfg.get("Healthcheck") or {}
          if r.returncode == 0 else {})
    check("... has the binary as its HEALTHCHECK",
          hc.get("Test") == ["CMD", "/usr/local/bin/ringnet", "health"], hc)
    r = podman("run", "--rm", *LIMITS, "--entrypoint", "/bin/sh", IMAGE, "-c", "true")
    check("... has no shell (FROM scratch)", r.returncode != 0, r.returncode)
    files = image_files()
    want = ldd_closure(BIN) | {"/usr/local/bin/ringnet", "/etc/passwd", "/etc/group",
                               "/etc/nsswitch.conf"}
    check("... holds the binary, its ldd closure and three /etc files, nothing else",
          files == want, (sorted(files - want), sorted(want - files)))
    size = podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(f"image size: {int(size or 0) / 1e6:.1f} MB (this build's binary: {BIN})")

    subnet = make_network()
    # configured by the environment; node 3's --id flag wins over its RINGNET_ID
    for i, b in enumerate(boxes, 1):
        # plain HTTP on the published port (a node beyond loopback serves HTTPS by default:
        # tests/integration/test_http_certs covers that); the token stays on
        env = {"RINGNET_ID": f"n{i}", "RINGNET_LISTEN": f"{b.name}:7000",
               "RINGNET_HTTP": f"{b.name}:8080", "RINGNET_HTTP_TLS": "none"}
        if i > 1:
            env["RINGNET_JOIN"] = f"{n1.name}:7000"
        args = ()
        if i == 3:
            env["RINGNET_ID"] = "not-this"
            args = ("--id", "n3")
        b.run(subnet, env, args)
        check(f"{b.name} passes its health check", b.healthy(), b.logs())
        b.read_token()
    ok, seen = converged(boxes)
    check("three containers make one ring, by container name", ok, seen)
    _, h = get(n3.http, "/health")
    check("a flag given to `podman run IMAGE` wins over RINGNET_ID", h.get("name") == "n3", h)

    # an API reachable beyond loopback asks for a token by default: each node made one in
    # its volume; /health (the health check) stays open
    tokens = [b.token for b in boxes]
    check("each node made its API token in its volume", all(tokens)
          and len(set(tokens)) == 3, [bool(x) for x in tokens])
    status, _ = n1.call("/kv/color", token=False)
    check("a request without the token gets 401", status == 401, status)

    # the user: the node's process, seen from the host, and the files in its volume
    pid = podman("inspect", "--format", "{{.State.Pid}}", n1.name).stdout.strip()
    uid = None
    try:
        with open(f"/proc/{pid}/status") as f:
            uid = [ln.split()[1] for ln in f if ln.startswith("Uid:")][0]
    except (OSError, IndexError):
        pass
    check("the node's process runs as uid 10001", uid == "10001", (pid, uid))

    # the classic commands, through node 1's published port; read through the others
    keys = {f"key-{i}": {"n": i, "r": random.random()} for i in range(40)}
    keys["color"] = "blue"
    for k, v in keys.items():
        status, body = n1.kv("/kv", "POST", {"key": k, "value": v})
        if status != 200:
            check(f"write {k} through {n1.name}", False, (status, body))
    for b in (n2, n3):
        bad = read_all(b, keys)
        check(f"every key written through {n1.name} reads back through {b.name}",
              not bad, bad[:5])
    r = podman("exec", "-e", f"RINGNET_API_TOKEN={n3.token}", n3.name,
               "/usr/local/bin/ringnet", "get", "color", "--node", f"{n3.name}:8080")
    check("ringnet get inside a container", r.returncode == 0 and r.stdout.strip() == "blue",
          (r.returncode, r.stdout, r.stderr))

    files = has_files_route(n1)
    blob = random.randbytes(300 * 1024 + 7)
    if files:
        file_round_trip(n1, (n2, n3), "blob.bin", blob, "a file")
    else:
        print("note: this build has no files API (POST /upload); its round trip is not run")

    # restart one container: it comes back on its volume and serves every key
    r = podman("restart", "-t", "10", n2.name)
    check(f"podman restart {n2.name}", r.returncode == 0, r.stderr)
    check(f"{n2.name} is healthy again", n2.healthy(), n2.logs())
    ok, seen = converged(boxes)
    check("the ring is whole again after the restart", ok, seen)
    bad = read_all(n2, keys)
    check(f"every key reads through the restarted {n2.name}", not bad, bad[:5])

    # all of them stopped: no process holds a key, only the volumes do
    for b in boxes:
        podman("stop", "-t", "10", b.name)
    hr = subprocess.run([BIN, "health", "--node", f"127.0.0.1:{n1.http}"],
                        capture_output=True, text=True, timeout=60)
    check("ringnet health fails when the node is down", hr.returncode == 1,
          (hr.returncode, hr.stdout))
    for b in boxes:
        path, fs = volume_files(b.volume)
        big = {f: v for f, v in fs.items() if v[0] > 0}
        check(f"{b.volume} holds the node's store, owned by 10001",
              big and all(v[1] == 10001 for v in fs.values()), (path, fs))
    # all at once, as the restart policies of a rebooted host would start them
    starts = [subprocess.Popen(PODMAN + ["start", b.name], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for b in boxes]
    for b, p in zip(boxes, starts):
        _, err = p.communicate(timeout=120)
        check(f"podman start {b.name}", p.returncode == 0, err[-300:])
    for b in boxes:
        check(f"{b.name} is healthy after a full stop", b.healthy(), b.logs())
    ok, seen = converged(boxes)
    check("the ring forms again from the volumes", ok, seen)
    for b in boxes:
        bad = read_all(b, keys)
        check(f"every key reads through {b.name} after all three were stopped",
              not bad, bad[:5])
    if files:
        for b in boxes:
            status, got = b.call("/download/blob.bin")
            check(f"the file downloads through {b.name} after the stop", status == 200
                  and got == blob, (status, len(got)))
    https_default(Box(4), subnet, n1)


def https_default(b, subnet, join):
    """The image as it comes: beyond loopback it serves HTTPS with a certificate it issues
    itself, its health check trusts the CA's copy in its volume, and so can a client."""
    b.run(subnet, {"RINGNET_ID": "n4", "RINGNET_LISTEN": f"{b.name}:7000",
                   "RINGNET_HTTP": f"{b.name}:8080", "RINGNET_JOIN": f"{join.name}:7000"})
    check(f"{b.name} with the image's defaults passes its health check over HTTPS",
          b.healthy(), b.logs())
    path, fs = volume_files(b.volume)
    check("it issued its certificate in its volume (tls/node.crt, tls/ca.crt)",
          {"tls/node.crt", "tls/node.key", "tls/ca.crt"} <= set(fs), sorted(fs))
    url = f"https://{b.name}:{b.http}/health"
    curl = ["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
            f"{b.name}:{b.http}:127.0.0.1"]
    r = subprocess.run(curl + ["--cacert", os.path.join(path or "", "tls", "ca.crt"), url],
                       capture_output=True, text=True, timeout=60)
    check("curl from the host with --cacert tls/ca.crt, by the container's name: 200",
          r.stdout == "200", (r.returncode, r.stdout))
    r = subprocess.run(curl + [url], capture_output=True, text=True, timeout=60)
    check("curl without it fails verification", r.returncode == 60, (r.returncode, r.stdout))
    podman("rm", "-f", "-t", "10", b.name)


def compose_scenario(tmp):
    """deploy/compose.yaml under docker-compose, talking to podman's Docker API (a `podman
    system service` on a socket of this test's own): five nodes, node 1 on the published port
    (RINGNET_PORT, 5001 for a user; a free one here), the README's commands against it."""
    if not shutil.which("docker-compose"):
        check("docker-compose is installed (scripts/deps.sh --test)", False)
        return
    sock = os.path.join(tmp, "api.sock")
    api = subprocess.Popen(PODMAN + ["system", "service", "--time=0", f"unix://{sock}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    project = f"{TAG}-compose"
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        port = free_port()
        env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", RINGNET_IMAGE=IMAGE,
                   RINGNET_PORT=str(port))
        base = ["docker-compose", "-p", project, "-f",
                os.path.join(REPO, "deploy", "compose.yaml")]
        r = None
        for _ in range(5):  # a /24 another network holds: another one
            env["RINGNET_SUBNET"] = f"10.{random.randrange(90, 250)}.{random.randrange(256)}"
            r = subprocess.run(base + ["up", "-d", "--no-build"], env=env,
                               capture_output=True, text=True, timeout=180)
            if r.returncode == 0 or "overlap" not in (r.stdout + r.stderr).lower():
                break
            remove_named(project)
        names = podman("ps", "--format", "{{.Names}}").stdout.split()
        mine = sorted(n for n in names if project in n)
        check("docker-compose up starts the five nodes of deploy/compose.yaml",
              r.returncode == 0 and len(mine) == 5, (r.returncode, mine, r.stderr[-800:]))
        ring = None
        for _ in range(80 if r.returncode == 0 else 0):
            try:
                _, ring = get(port, "/ring")
                if len(ring.get("successors") or []) >= 4:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        check("node 1 on the published port sees a ring of five",
              len((ring or {}).get("successors") or []) >= 4, ring)
        status, body = request(port, "/kv", "POST", {"key": "color", "value": "blue"})
        check("curl -X POST http://localhost:PORT/kv ... works from the host",
              status == 200, (status, body))
        status, body = request(port, "/kv/color")
        check("curl http://localhost:PORT/kv/color answers blue",
              status == 200 and body.get("value") == "blue", (status, body))
        vols = [v for v in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
                if project in v]
        check("each node has its own named volume", len(vols) == 5, vols)
        if t.failures:
            for n in mine:
                print(f"--- {n}\n" + podman("logs", n).stderr[-1500:])
        r = subprocess.run(base + ["down", "-v"], env=env, capture_output=True, text=True,
                           timeout=120)
        check("docker-compose down -v", r.returncode == 0, r.stderr[-500:])
    finally:
        api.terminate()
        try:
            api.wait(timeout=10)
        except subprocess.TimeoutExpired:
            api.kill()
        remove_named(project)


def remove_named(part):
    """Removes the containers, networks and volumes whose names hold part."""
    for what, fmt in (("ps", "{{.Names}}"), ("network", "{{.Name}}"),
                      ("volume", "{{.Name}}")):
        cmd = ["ps", "-a"] if what == "ps" else [what, "ls"]
        names = [n for n in podman(*cmd, "--format", fmt).stdout.split() if part in n]
        if names:
            rm = ["rm", "-f", "-t", "2"] if what == "ps" else [what, "rm", "-f"]
            podman(*rm, *names)


def main():
    random.seed(os.getpid())
    if not shutil.which("podman"):
        print("SKIP: podman is not installed (scripts/deps.sh --test installs it)")
        return 77
    boxes = [Box(i) for i in (1, 2, 3)]
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="rnc-") as ctx:
            r = build_image(ctx)
            if r.returncode != 0 and not t.failures:
                print("SKIP: podman cannot build here: " + r.stderr.strip().splitlines()[-1])
                return 77
            if r.returncode != 0:
                return t.finish()
            reason, r = can_run()
            if reason:
                print(f"SKIP: podman cannot run containers here: {reason}")
                return 77
            check("the image runs `ringnet version`", r.returncode == 0
                  and r.stdout.startswith("ringnet "), (r.returncode, r.stdout,
                                                        r.stderr[-500:]))
            if r.returncode == 0:
                scenario(boxes)
                if t.failures:
                    for b in boxes:
                        print(f"--- {b.name}\n{b.logs()}")
                cleanup(boxes, keep_image=True)
                compose_scenario(ctx)
    except Exception as e:  # a podman call that could not even run is a failure too
        check("the scenario ran to its end", False, repr(e))
    finally:
        cleanup(boxes)
        left = leftovers()
        check("nothing named rnc-<pid> is left (containers, network, volumes, image)",
              not left, left)
        print(f"container test: {time.time() - started:.1f} s")
    return t.finish()


sys.exit(main())
