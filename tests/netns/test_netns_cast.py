#!/usr/bin/env python3
"""ringnet cast on emulated networks (bench/cast/run): a chain whose last host is reached only
through a relay, and a star of uneven links with a lossy one. Every destination must end
with a byte-identical copy of the file; the runner's JSON must name them all done and
none failed. No timing is asserted.

usage: test_netns_cast.py RINGNET LINKEMU   (exits 77, skipped, when not root or netns cannot
                                            be made)
"""
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "..", "bench", "cast", "run")
SKIP = 77
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def cast_on(topology, ringnet, linkemu, size):
    name = os.path.basename(topology)
    r = subprocess.run([sys.executable, RUN, topology, "--size", str(size), "--baseline", "none",
                        "--json", "--keep", "--ringnet", ringnet, "--linkemu", linkemu],
                       capture_output=True, text=True, timeout=240)
    kept = [ln.split(": ", 1)[1] for ln in r.stderr.splitlines()
            if ln.startswith("work directory kept: ")]
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(r.stderr)
        check(False, f"{name}: the runner's last stdout line is JSON")
        return
    check(r.returncode == 0, f"{name}: bench/cast/run exits 0 (got {r.returncode})")
    hosts = [ln.split()[1] for ln in open(topology) if ln.startswith("host ")]
    dests = {d["id"]: d for d in res.get("destinations", [])}
    check(sorted(dests) == sorted(hosts[1:]), f"{name}: every destination is reported")
    check(all(d["done_s"] is not None for d in dests.values()) and "failed" not in res.get("cast", {}),
          f"{name}: every destination completed")
    if not kept:
        check(False, f"{name}: the work directory was kept")
        return
    work = kept[0]
    src = glob.glob(os.path.join(work, "src", "*.bin"))
    data = open(src[0], "rb").read() if src else None
    check(data is not None and len(data) == size, f"{name}: the source file is {size} bytes")
    for h in hosts[1:]:
        got = os.path.join(work, "data", h, "cast", os.path.basename(src[0]) if src else "?")
        same = os.path.exists(got) and open(got, "rb").read() == data
        check(same, f"{name}: {h} holds a byte-identical copy")
        folder = os.path.dirname(got)
        others = [f for f in os.listdir(folder) if f != os.path.basename(got)] \
            if os.path.isdir(folder) else []
        check(not [f for f in others if f.startswith(os.path.basename(got))],
              f"{name}: {h} has no partial copy beside it ({others})")
    subprocess.run(["rm", "-rf", work])


def main():
    ringnet, linkemu = sys.argv[1], sys.argv[2]
    if os.geteuid() != 0:
        print("SKIP: ringnet cast on emulated networks needs root (network namespaces)")
        return SKIP
    probe = f"rnb-{os.getpid() % 65536:04x}-probe"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode:
        print("SKIP: cannot make a network namespace here")
        return SKIP
    subprocess.run(["ip", "netns", "del", probe])
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True).stdout.split())
    for topo in ("chain3.txt", "star4.txt"):
        cast_on(os.path.join(HERE, topo), ringnet, linkemu, 700_001)
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout.split())
    check(not [n for n in after - before if n.startswith("rnb-")],
          "every namespace the runs made is gone")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
