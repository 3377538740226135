#!/usr/bin/env python3
"""The node's image and deploy/compose.yaml under the Docker engine (Debian's docker.io 20.10
and docker-compose 1.29), as a user runs them. The test starts a dockerd of its own: its
--data-root, --exec-root, socket, pidfile and config file in a temporary directory, and
--iptables=false --ip-masq=false --ip-forward=false --bridge=none, so that it changes
neither the host's firewall nor its sysctls nor any bridge but the one of the compose
network (docker names it br-<network id>; it goes with the network). It builds the image
with BuildKit from the tree deploy/rootfs.sh makes of this build's binary (no registry here;
the legacy builder would pull the Debian stage's base even though the host-rootfs target does
not use it), brings deploy/compose.yaml up unchanged with DOCKER_HOST on that daemon, and runs
the README's curl commands against node 1's published port (5001 when it is free, else a free
one): upload, download, POST /kv, GET /kv/color. Then: the health checks docker runs, the uid
of every node's process, the volumes, `docker-compose down` and `up` again with the data
still there, one node killed with everything still readable through node 1, `down -v`.
Everything goes at the end, the daemon and its directories too, even on a failure.

usage: test_docker.py REPO BINARY   exit 0 pass, 1 fail, 77 dockerd cannot run here"""
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from ringtest import Checks, free_port, request  # noqa: E402

REPO, BIN = sys.argv[1], sys.argv[2]
t = Checks("docker")
check = t.check
TAG = f"rnk-{os.getpid()}"
IMAGE = f"{TAG}-img"
PROJECT = TAG
# Debian's client, the one that matches the daemon (a newer client elsewhere on PATH, say
# Docker 28's, builds through buildx, which Debian 12 does not package)
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
# what dockerd or runc say when this machine cannot run containers at all (as opposed to a
# fault of the image or of the test): cgroup v1 without the devices controller, no cgroup
# mounted at all, no storage driver that works on this kernel and file system (overlay2,
# then vfs, are tried)
T0 = time.time()


def step(what):
    """A line of progress with the seconds since the start: where the test's time goes."""
    print(f"[{time.time() - T0:5.1f} s] {what}", flush=True)


CANNOT = ("Devices cgroup isn't mounted", "cgroup mountpoint does not exist",
          "error initializing graphdriver")


class Daemon:
    """A private dockerd under dir: started, asked, stopped, its traces removed."""

    def __init__(self, dir_):
        self.dir = dir_
        self.sock = os.path.join(dir_, "docker.sock")
        self.log = os.path.join(dir_, "dockerd.log")
        self.proc = None
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        for other in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            self.env.pop(other, None)  # a user's settings for another daemon
        self.networks = set()  # ids of the networks it made: their bridges must go too

    def start(self, driver):
        """None when the daemon answers; else the log line that says why it stopped."""
        conf = os.path.join(self.dir, "daemon.json")
        with open(conf, "w") as f:
            # dockerd 20.10 keeps its identity key in /etc/docker unless told otherwise
            json.dump({"deprecated-key-path": os.path.join(self.dir, "key.json")}, f)
        cmd = [DOCKERD, "--config-file", conf, "--data-root", os.path.join(self.dir, "data"),
               "--exec-root", os.path.join(self.dir, "exec"), "-H", f"unix://{self.sock}",
               "--pidfile", os.path.join(self.dir, "docker.pid"), "--storage-driver", driver,
               "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            if self.docker("version", timeout=10).returncode == 0:
                return None
            time.sleep(0.3)
        if self.proc.poll() is None:
            return ""  # alive but not answering: a failure, not a reason to skip
        lines = self.log_tail().splitlines()
        why = [ln for ln in lines if any(c in ln for c in CANNOT)]
        return why[-1] if why else ""

    def log_tail(self, n=3000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def docker(self, *args, timeout=120, env=None):
        return subprocess.run([DOCKER, *args], capture_output=True, text=True,
                              timeout=timeout, env=env or self.env)

    def compose(self, *args, extra=None, timeout=240):
        env = dict(self.env, **(extra or {}))
        return subprocess.run(["docker-compose", "-p", PROJECT, "-f",
                               os.path.join(REPO, "deploy", "compose.yaml"), *args],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def stop(self):
        if not self.proc:
            return
        if self.proc.poll() is None:
            # what compose left behind first, while the daemon can still remove it
            ids = self.docker("ps", "-aq").stdout.split()
            if ids:
                self.docker("rm", "-f", *ids)
            for line in self.docker("network", "ls", "--no-trunc", "--format",
                                    "{{.ID}} {{.Name}}").stdout.splitlines():
                nid, name = line.split()
                if name not in ("bridge", "host", "none"):
                    self.networks.add(nid)
                    self.docker("network", "rm", nid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # dockerd and its containerd
                self.proc.wait(timeout=10)
        # mounts left under the directory (overlays, network namespaces), deepest first
        with open("/proc/self/mountinfo") as f:
            points = [ln.split()[4] for ln in f]
        for p in sorted((p for p in points if p.startswith(self.dir + "/")), reverse=True):
            subprocess.run(["umount", "-l", p], capture_output=True)
        for nid in self.networks:
            if os.path.exists(f"/sys/class/net/br-{nid[:12]}"):
                subprocess.run(["ip", "link", "del", f"br-{nid[:12]}"], capture_output=True)


def host_state():
    """What the daemon must leave alone: docker's firewall chains, ip_forward, bridges."""
    rules = ""
    for table in ("filter", "nat"):
        r = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
        rules += r.stdout
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        fwd = f.read().strip()
    return {"docker chains": "DOCKER" in rules, "ip_forward": fwd}


def free_subnet():
    """The first three octets of a 10.x.y.0/24 no route of this host overlaps."""
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True).stdout
    taken = []
    for ln in out.split("\n"):
        w = ln.split()
        for word in w[:2]:
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    while True:
        a, b = random.randrange(90, 250), random.randrange(256)
        net = ipaddress.ip_network(f"10.{a}.{b}.0/24")
        if not any(net.overlaps(x) for x in taken if x.prefixlen > 0):
            return f"10.{a}.{b}"


def host_port():
    """5001, the README's port, when nothing holds it; else a free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 5001))
            return 5001
        except OSError:
            return free_port()


def curl(*args, cwd=None):
    return subprocess.run(["curl", "-sS", "--fail-with-body", "--max-time", "60", *args],
                          capture_output=True, cwd=cwd, timeout=90)


def answer(r):
    try:
        return json.loads(r.stdout or b"{}")
    except ValueError:
        return {"raw": r.stdout[:300]}


def same_file(a, b):
    try:
        with open(a, "rb") as f, open(b, "rb") as g:
            return f.read() == g.read()
    except OSError:
        return False


class Cluster:
    """The five nodes of deploy/compose.yaml, found by compose's labels."""

    def __init__(self, d, port):
        self.d, self.port = d, port

    def ids(self):
        """service name -> container id, of the running ones"""
        r = self.d.docker("ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                          "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}')
        return {s: i for i, s in (ln.split() for ln in r.stdout.splitlines())}

    def inspect(self, cid):
        r = self.d.docker("inspect", cid)
        return json.loads(r.stdout)[0] if r.returncode == 0 else {}

    def healthy(self, timeout=90):
        """Waits for docker's own health checks (the image's HEALTHCHECK) on every node."""
        deadline = time.time() + timeout
        states = {}
        while time.time() < deadline:
            states = {s: self.inspect(i).get("State", {}).get("Health", {}).get("Status")
                      for s, i in self.ids().items()}
            if len(states) == 5 and all(v == "healthy" for v in states.values()):
                return True, states
            time.sleep(1)
        return False, states

    def ring(self, timeout=60):
        """Node 1's view of the ring once it has the four others as successors."""
        deadline = time.time() + timeout
        ring = {}
        while time.time() < deadline:
            try:
                _, ring = request(self.port, "/ring")
                if len({s["addr"] for s in ring.get("successors") or []}) >= 4:
                    return True, ring
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        return False, ring

    def unread(self, keys, timeout=40):
        """The keys node 1 does not answer with the value written (retried to a deadline:
        a ring that has just come back or lost a node needs a few stabilize rounds)."""
        deadline = time.time() + timeout
        bad = list(keys)
        while bad and time.time() < deadline:
            left = []
            for k in bad:
                try:
                    status, body = request(self.port, f"/kv/{k}")
                except OSError as e:
                    status, body = str(e), {}
                if status != 200 or body.get("value") != keys[k]:
                    left.append((k, status, body.get("value")))
            bad = [k for k, _, _ in left]
            if bad:
                time.sleep(1)
        return bad

    def download(self, tmp, name, want, what, timeout=40):
        """curl -O of the file through node 1 (retried to a deadline), byte for byte."""
        out = tempfile.mkdtemp(dir=tmp)
        deadline = time.time() + timeout
        r = None
        while time.time() < deadline:
            r = curl("-O", f"http://localhost:{self.port}/download/{name}", cwd=out)
            if r.returncode == 0:
                break
            time.sleep(1)
        got = os.path.join(out, name)
        check(f"{what}: curl -O http://localhost:PORT/download/{name} gives the bytes uploaded",
              r.returncode == 0 and same_file(got, want), (r.returncode, r.stderr[-300:]))

    def volumes(self):
        """name -> (mount point, {file: uid}) of the project's volumes"""
        r = self.d.docker("volume", "ls", "-q", "--filter",
                          f"label=com.docker.compose.project={PROJECT}")
        out = {}
        for v in r.stdout.split():
            mp = self.d.docker("volume", "inspect", "--format", "{{.Mountpoint}}", v)
            files = {}
            for root, dirs, fs in os.walk(mp.stdout.strip()):
                for f in fs + dirs:
                    files[os.path.relpath(os.path.join(root, f), mp.stdout.strip())] = \
                        os.lstat(os.path.join(root, f)).st_uid
            out[v] = (mp.stdout.strip(), files)
        return out


def image_tree(d, tmp):
    """The image's file tree, from its layers as `docker save` gives them (so nothing a
    container adds, like /etc/mtab or /.dockerenv): {path: (type, uid)}."""
    tar = os.path.join(tmp, "image.tar")
    with open(tar, "wb") as out:
        subprocess.run([DOCKER, "save", IMAGE], stdout=out, env=d.env, timeout=120)
    tree = {}
    with tarfile.open(tar) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=saved.extractfile(layer)) as tf:
                for m in tf.getmembers():
                    tree["/" + m.name.removeprefix("./").strip("/")] = (m.type, m.uid)
    os.unlink(tar)
    return tree


def rootfs_tree(rootfs):
    """What deploy/rootfs.sh made: the same {path: (type, uid)}, user/ given to 10001."""
    tree = {}
    for part, uid in (("system", 0), ("user", 10001)):
        top = os.path.join(rootfs, part)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                full = os.path.join(root, name)
                kind = tarfile.DIRTYPE if os.path.isdir(full) else tarfile.REGTYPE
                tree["/" + os.path.relpath(full, top)] = (kind, uid)
    return tree


def image_checks(d, tmp):
    r = d.docker("image", "inspect", IMAGE)
    img = json.loads(r.stdout)[0] if r.returncode == 0 else {}
    cfg = img.get("Config") or {}
    check("docker sees the image's user 10001:10001", cfg.get("User") == "10001:10001", cfg)
    check("... its volume /data", "/data" in (cfg.get("Volumes") or {}), cfg)
    check("... its ports 7000 and 8080",
          {"7000/tcp", "8080/tcp"} <= set(cfg.get("ExposedPorts") or {}), cfg)
    check("... its HEALTHCHECK, the binary",
          (cfg.get("Healthcheck") or {}).get("Test")
          == ["CMD", "/usr/local/bin/ringnet", "health"], cfg)
    check("... its entrypoint `ringnet node`",
          cfg.get("Entrypoint") == ["/usr/local/bin/ringnet", "node"], cfg)
    layers = len((img.get("RootFS") or {}).get("Layers") or [])
    print(f"image size (docker): {img.get('Size', 0) / 1e6:.1f} MB, {layers} layers "
          f"(this build's binary: {BIN})")
    r = d.docker("run", "--rm", "--entrypoint", "/usr/local/bin/ringnet", IMAGE, "version")
    check("docker run of the image: `ringnet version`",
          r.returncode == 0 and r.stdout.startswith("ringnet "), (r.returncode, r.stderr))
    r = d.docker("run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", "true")
    check("... and it has no shell", r.returncode != 0, r.returncode)
    # files and their owners, beside the tree it was made of
    got = image_tree(d, tmp)
    want = rootfs_tree(os.path.join(tmp, "ctx", "rootfs"))
    files = {p: v for p, v in got.items() if v[0] != tarfile.DIRTYPE}
    wfiles = {p: v for p, v in want.items() if v[0] != tarfile.DIRTYPE}
    check("the image holds exactly the files of deploy/rootfs.sh's tree, all root's",
          files == wfiles, (sorted(set(files.items()) ^ set(wfiles.items()))[:10]))
    check("... and /data belongs to 10001",
          got.get("/data") == (tarfile.DIRTYPE, 10001), got.get("/data"))


def up(d, extra):
    """docker-compose up -d of deploy/compose.yaml; a /24 docker finds taken: another."""
    r = None
    for _ in range(5):
        r = d.compose("up", "-d", "--no-build", extra=extra)
        if r.returncode == 0 or "overlap" not in (r.stdout + r.stderr).lower():
            break
        d.compose("down", "-v", "-t", "2", extra=extra)
        extra["RINGNET_SUBNET"] = free_subnet()
    return r


def scenario(d, tmp):
    image_checks(d, tmp)
    port = host_port()
    extra = {"RINGNET_IMAGE": IMAGE, "RINGNET_PORT": str(port),
             "RINGNET_SUBNET": free_subnet()}
    c = Cluster(d, port)
    r = up(d, extra)
    step("compose up")
    check("docker-compose -f deploy/compose.yaml up -d starts five nodes",
          r.returncode == 0 and len(c.ids()) == 5, (r.returncode, r.stderr[-800:]))
    if r.returncode != 0:
        return
    net = d.docker("network", "ls", "-q", "--no-trunc", "--filter",
                   f"label=com.docker.compose.project={PROJECT}").stdout.split()
    d.networks.update(net)
    print(f"compose: node 1 on 127.0.0.1:{port}, network {extra['RINGNET_SUBNET']}.0/24 "
          f"(bridge {', '.join('br-' + n[:12] for n in net)})")
    ok, states = c.healthy()
    step("five healthy")
    check("docker's health checks pass on all five nodes", ok, states)
    ok, ring = c.ring()
    check("node 1, through the published port, has the four others as successors", ok, ring)
    uids = {}
    for s, cid in c.ids().items():
        pid = c.inspect(cid).get("State", {}).get("Pid")
        try:
            with open(f"/proc/{pid}/status") as f:
                uids[s] = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
        except (OSError, IndexError):
            uids[s] = None
    check("every node's process runs as uid 10001 (real, effective, saved, fs)",
          len(uids) == 5 and all(u == ["10001"] * 4 for u in uids.values()), uids)

    # the classic commands, as the issue gives them, from the host
    work = tempfile.mkdtemp(dir=tmp)
    doc = os.path.join(work, "mydoc.txt")
    with open(doc, "wb") as f:
        f.write(random.randbytes(2 * 1024 * 1024 + 4099))  # three chunks
    r = curl("-F", "file=@mydoc.txt", f"http://localhost:{port}/upload", cwd=work)
    ans = answer(r)
    check("curl -F 'file=@mydoc.txt' http://localhost:PORT/upload",
          r.returncode == 0 and ans.get("status") == "uploaded"
          and ans.get("size") == os.path.getsize(doc) and ans.get("chunks") == 3,
          (r.returncode, ans, r.stderr[-300:]))
    c.download(tmp, "mydoc.txt", doc, "after the upload")
    r = curl("-X", "POST", f"http://localhost:{port}/kv", "-H",
             "Content-Type: application/json", "-d", '{"key": "color", "value": "blue"}')
    stored = answer(r)
    check("curl -X POST http://localhost:PORT/kv ... color blue",
          r.returncode == 0 and stored.get("status") == "stored", (r.returncode, stored))
    r = curl(f"http://localhost:{port}/kv/color")
    check("curl http://localhost:PORT/kv/color answers blue",
          r.returncode == 0 and answer(r).get("value") == "blue", (r.returncode, r.stdout))
    keys = {f"k{i}": {"i": i, "r": random.random()} for i in range(30)}
    for k, v in keys.items():
        status, body = request(port, "/kv", "POST", {"key": k, "value": v})
        if status != 200:
            check(f"write {k} through node 1", False, (status, body))
    keys["color"] = "blue"
    # read through another node than the one published: inside its container, no shell
    ids = c.ids()
    r = d.docker("exec", ids.get("node3", "?"), "/usr/local/bin/ringnet", "get", "color",
                 "--node", "node3:8080")
    check("ringnet get color inside node 3's container", r.returncode == 0
          and r.stdout.strip() == "blue", (r.returncode, r.stdout, r.stderr[-300:]))
    r = d.docker("exec", ids.get("node4", "?"), "/usr/local/bin/ringnet", "download",
                 "mydoc.txt", "-o", "/tmp/mydoc.txt", "--node", "node4:8080")
    got = os.path.join(work, "from-node4")
    cp = d.docker("cp", f"{ids.get('node4', '?')}:/tmp/mydoc.txt", got)
    check("ringnet download inside node 4's container gives the bytes uploaded",
          r.returncode == 0 and cp.returncode == 0 and same_file(got, doc),
          (r.returncode, r.stderr[-300:], cp.stderr[-200:]))

    # down (containers and network go, the volumes stay) and up again
    r = d.compose("down", "-t", "10", extra=extra)
    step("compose down")
    check("docker-compose down", r.returncode == 0 and not c.ids(), r.stderr[-500:])
    vols = c.volumes()
    check("the five volumes stay after down, each holding its node's store, owned by 10001",
          len(vols) == 5 and all(len(fs) > 1 and all(u == 10001 for u in fs.values())
                                 for _, fs in vols.values()),
          {v: (p, fs) for v, (p, fs) in vols.items()})
    r = up(d, extra)
    step("compose up again")
    check("docker-compose up -d again, on the same volumes",
          r.returncode == 0 and len(c.ids()) == 5, (r.returncode, r.stderr[-800:]))
    d.networks.update(d.docker("network", "ls", "-q", "--no-trunc", "--filter",
                               f"label=com.docker.compose.project={PROJECT}").stdout.split())
    ok, states = c.healthy()
    step("five healthy again")
    check("all five healthy again", ok, states)
    ok, ring = c.ring()
    check("the ring is whole again after down and up", ok, ring)
    bad = c.unread(keys)
    check("every key reads through node 1 after down and up", not bad, bad[:5])
    c.download(tmp, "mydoc.txt", doc, "after down and up")

    # one node killed: the data still reads through node 1
    _, ring = request(port, "/ring")
    addr = {p["id"]: p["addr"] for p in (ring.get("successors") or []) + [ring.get("self", {})]}
    victim = "node2"
    for nid in [stored.get("node")] + (stored.get("replicas") or []):
        # compose gives node N the address SUBNET.(10 + N); node 1 must stay
        last = addr.get(nid, "0.0.0.0:0").rsplit(":", 1)[0].rsplit(".", 1)[1]
        if 12 <= int(last) <= 15:
            victim = f"node{int(last) - 10}"
            break
    cid = c.ids().get(victim, "?")
    r = d.docker("kill", cid)
    state = c.inspect(cid).get("State", {})
    step(f"{victim} killed")
    check(f"docker kill {victim} (a holder of color)", r.returncode == 0
          and not state.get("Running"), (r.stderr, state.get("Status")))
    bad = c.unread(keys)
    check(f"every key still reads through node 1 with {victim} killed", not bad, bad[:5])
    c.download(tmp, "mydoc.txt", doc, f"with {victim} killed")
    if t.failures:
        for s, i in c.ids().items():
            lg = d.docker("logs", "--tail", "30", i)
            print(f"--- {s}\n{(lg.stdout + lg.stderr)[-2000:]}")

    r = d.compose("down", "-v", "-t", "10", extra=extra)
    step("compose down -v")
    check("docker-compose down -v removes containers and volumes",
          r.returncode == 0 and not c.ids() and not c.volumes(), r.stderr[-500:])


def main():
    random.seed(os.getpid())
    # a SIGTERM (ctest's timeout, a Ctrl-C'd make) still runs the cleanup below: the daemon
    # lives in a session of its own and would outlive this process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    if os.geteuid() != 0:
        print(f"SKIP: dockerd needs root (this is uid {os.geteuid()})")
        return 77
    missing = [p for p in (DOCKER, DOCKERD) if not os.access(p, os.X_OK)]
    if missing:
        print(f"SKIP: docker.io is not installed ({', '.join(missing)}; "
              "scripts/deps.sh --test installs it)")
        return 77
    for tool in ("docker-compose", "curl", "ip"):
        check(f"{tool} is installed (scripts/deps.sh --test)", shutil.which(tool), tool)
    if t.failures:
        return t.finish()
    before = host_state()
    with open("/proc/filesystems") as f:
        driver = "overlay2" if "overlay" in f.read().split() else "vfs"
    tmp = tempfile.mkdtemp(prefix=f"{TAG}-")
    d = Daemon(tmp)
    try:
        why = d.start(driver)
        if why and driver == "overlay2" and "graphdriver" in why:
            d.stop()
            driver = "vfs"
            why = d.start(driver)
        if why:
            print(f"SKIP: dockerd cannot run here: {why}")
            return 77
        check("the private dockerd answers", why is None, d.log_tail())
        if why is None:
            print(f"dockerd {d.docker('version', '--format', '{{.Server.Version}}').stdout.strip()}"
                  f", storage {driver}, in {tmp}")
            ctx = os.path.join(tmp, "ctx")
            os.mkdir(ctx)
            r = subprocess.run(["sh", os.path.join(REPO, "deploy", "rootfs.sh"), BIN,
                                os.path.join(ctx, "rootfs")], capture_output=True, text=True)
            check("deploy/rootfs.sh makes the image's tree", r.returncode == 0, r.stderr)
            shutil.copy(os.path.join(REPO, "Dockerfile"), ctx)
            r = d.docker("build", "-q", "--build-arg", "ROOTFS=host", "-t", IMAGE, ctx,
                         env=dict(d.env, DOCKER_BUILDKIT="1"), timeout=300)
            step("image built")
            check("DOCKER_BUILDKIT=1 docker build --build-arg ROOTFS=host", r.returncode == 0,
                  r.stderr[-800:])
            if r.returncode == 0:
                r = d.docker("run", "--rm", "--entrypoint", "/usr/local/bin/ringnet", IMAGE,
                             "version")
                cannot = [ln for ln in r.stderr.splitlines() if any(c in ln for c in CANNOT)]
                if r.returncode != 0 and cannot:
                    print(f"SKIP: docker cannot run a container here: {cannot[-1]}")
                    return 77
                scenario(d, tmp)
    except Exception as e:  # a docker call that could not even run is a failure too
        check("the scenario ran to its end", False, repr(e))
    finally:
        if d.proc and d.proc.poll() is None:
            d.compose("down", "-v", "-t", "2")
        d.stop()
        if t.failures:
            print("--- dockerd\n" + d.log_tail(2000))
        shutil.rmtree(tmp, ignore_errors=True)
        left = [f"br-{n[:12]}" for n in d.networks
                if os.path.exists(f"/sys/class/net/br-{n[:12]}")]
        check("no bridge of the compose network is left", not left, left)
        check("nothing is left of the daemon's directory", not os.path.exists(tmp), tmp)
        after = host_state()
        check("the host's firewall (no DOCKER chains) and ip_forward are as they were",
              after == before, (before, after))
        step("daemon stopped, all removed")
    return t.finish()


sys.exit(main())
