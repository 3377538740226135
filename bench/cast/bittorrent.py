"""bittorrent.py — the BitTorrent baseline of the cast bench: aria2c on every host, seeded at
the source, with opentracker as the tracker; DHT, local peer discovery and peer exchange off.

The tracker lives in its own namespace, rnb-TAG-m, reached from each host over a veth whose
only route is a /32 to the tracker with the host's identity address as source: the tracker
therefore hands out identity addresses, and a peer reaches exactly the peers the topology
lets it reach (the others answer "network unreachable" at once). The management namespace
does not forward, so it cannot carry data between hosts.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import time

from netbench import sh, stop_all

TRACKER_IP, TRACKER_PORT, BT_PORT = "10.250.0.1", 6969, 6881
PIECE = 256 << 10


def bencode(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(v) for v in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(bencode(k) + bencode(x[k]) for k in sorted(x)) + b"e"
    raise TypeError(type(x))


def make_torrent(path, out):
    pieces = []
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(PIECE), b""):
            pieces.append(hashlib.sha1(b).digest())
    info = {"name": os.path.basename(path), "length": os.path.getsize(path),
            "piece length": PIECE, "pieces": b"".join(pieces)}
    with open(out, "wb") as f:
        f.write(bencode({"announce": f"http://{TRACKER_IP}:{TRACKER_PORT}/announce",
                         "info": info}))
    return hashlib.sha1(bencode(info)).hexdigest()


def add_tracker_net(net):
    m = f"rnb-{net.tag}-m"
    sh("ip", "netns", "add", m)
    net.made.append(m)
    sh("ip", "-n", m, "link", "set", "lo", "up")
    sh("ip", "-n", m, "link", "add", "rnb-mbr", "type", "bridge", "forward_delay", "0")
    sh("ip", "-n", m, "addr", "add", f"{TRACKER_IP}/32", "dev", "rnb-mbr")
    sh("ip", "-n", m, "link", "set", "rnb-mbr", "up")
    sh("ip", "-n", m, "route", "add", "10.0.0.0/16", "dev", "rnb-mbr", "src", TRACKER_IP)
    sh("ip", "netns", "exec", m, "sh", "-c",
       "echo 0 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter")
    for i, h in enumerate(net.topo["hosts"]):
        port = f"rnb-p{i}"
        sh("ip", "-n", m, "link", "add", port, "type", "veth", "peer", "name", "rnb-m", "netns",
           net.ns[h])
        sh("ip", "-n", m, "link", "set", port, "master", "rnb-mbr", "up")
        sh("ip", "-n", net.ns[h], "link", "set", "rnb-m", "up")
        sh("ip", "-n", net.ns[h], "route", "add", f"{TRACKER_IP}/32", "dev", "rnb-m", "src",
           net.ip[h])
    return m


def aria2(dirname, torrent, hook, extra=()):
    return ["aria2c", f"--dir={dirname}", "--enable-dht=false", "--enable-dht6=false",
            "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-ratio=0.0",
            "--bt-tracker-interval=2", "--bt-max-peers=0", "--max-upload-limit=0",
            "--file-allocation=none", "--disable-ipv6=true", f"--listen-port={BT_PORT}",
            "--summary-interval=0", "--console-log-level=warn", "--bt-stop-timeout=0",
            "--bt-request-peer-speed-limit=1000M",
            f"--on-bt-download-complete={hook}", *extra, torrent]


def run(net, work, path, digest, bound_s, tracer, summary, sha256):
    if not shutil.which("aria2c") or not shutil.which("opentracker"):
        print("bittorrent: aria2c or opentracker missing: scripts/deps.sh --bench",
              file=sys.stderr)
        return {"u_s": None, "failed": ["aria2c/opentracker missing"]}
    t = net.topo
    root = os.path.join(work, "bt")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    torrent = os.path.join(root, "file.torrent")
    with open(os.path.join(root, "whitelist.txt"), "w") as f:  # Debian's build wants one
        f.write(make_torrent(path, torrent) + "\n")
    hook = os.path.join(root, "done.sh")
    with open(hook, "w") as f:  # aria2 passes GID, file count, path: note when it completed
        f.write('#!/bin/sh\ndate +%s.%N > "$3.done"\n')
    os.chmod(hook, 0o755)
    m = add_tracker_net(net)
    procs = []

    def start(cmd, logname, ns=None, host=None):
        logf = open(os.path.join(root, logname), "w")
        full = ["ip", "netns", "exec", ns or net.ns[host], *cmd]
        p = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT, cwd=root)
        net.procs.append(p)
        procs.append(p)
        return p

    start(["opentracker", "-i", TRACKER_IP, "-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT),
           "-d", root, "-w", "whitelist.txt"],
          "tracker.log", ns=m)
    src = t["source"]
    sdir = os.path.dirname(path)
    start(aria2(sdir, torrent, "/bin/true", ["--bt-seed-unverified=true"]), "aria2-src.log",
          host=src)
    time.sleep(1.5)  # the seeder has announced before anyone asks
    dests = [h for h in t["hosts"] if h != src]
    tracer.start()
    t0 = time.time()
    for h in dests:
        d = os.path.join(root, h)
        os.makedirs(d)
        start(aria2(d, torrent, hook), f"aria2-{h}.log", host=h)
    timeout = max(60.0, 6 * bound_s * len(dests) + 60)
    name = os.path.basename(path)
    while time.time() - t0 < timeout:
        if all(os.path.exists(os.path.join(root, h, name + ".done")) for h in dests):
            break
        time.sleep(0.2)
    tracer.end()
    times = {}
    for h in dests:
        got = os.path.join(root, h, name)
        ok = os.path.exists(got + ".done") and sha256(got) == digest
        times[h] = float(open(got + ".done").read()) - t0 if ok else None
    stop_all(procs)
    net.procs = [p for p in net.procs if p not in procs]
    sh("ip", "netns", "del", m, check=False)  # its veths go with it
    net.made.remove(m)
    for h in t["hosts"]:
        sh("ip", "-n", net.ns[h], "link", "del", "rnb-m", check=False)
    return summary("bittorrent", times, bound_s, os.path.getsize(path))
