#!/usr/bin/env python3
"""naive.py — the naive baseline of the cast bench: the source sends the whole file to each
destination in turn; hosts between them pipe the bytes on as they arrive (hosts do not
forward IP, so a relay is a program).

  naive.py serve IP PORT OUTDIR     on every host: receive, or relay to the next hop
  naive.py send FILE PORT JSON      on the source; JSON = [[dest, [hop IP, ..., dest IP]], ...]

A connection starts with one JSON line {"name", "size", "route": [remaining hop IPs]}. A
destination (empty route) writes OUTDIR/NAME, then OUTDIR/NAME.done holding the wall-clock
time it had the last byte, and answers "ok"; a relay answers what the next hop answered.
send prints one JSON line: {"start": t0, "sent": {dest: t when its "ok" came back}}.
"""
import json
import os
import socket
import sys
import threading
import time

CHUNK = 1 << 18


def read_line(conn):
    buf = b""
    while not buf.endswith(b"\n"):
        b = conn.recv(1)
        if not b or len(buf) > 65536:
            raise ConnectionError("no header")
        buf += b
    return json.loads(buf)


def pass_on(conn, left, sink):
    """Hands the next `left` bytes of conn to sink as they arrive."""
    while left:
        b = conn.recv(min(CHUNK, left))
        if not b:
            raise ConnectionError("short file")
        sink(b)
        left -= len(b)


def handle(conn, port, outdir):
    try:
        hdr = read_line(conn)
        size, route = int(hdr["size"]), hdr["route"]
        name = os.path.basename(hdr["name"])
        if not route:
            path = os.path.join(outdir, name)
            with open(path + ".part", "wb") as f:
                pass_on(conn, size, f.write)
            done = time.time()
            os.rename(path + ".part", path)
            with open(path + ".done", "w") as f:
                f.write(f"{done}\n")
            conn.sendall(b"ok\n")
            return
        nxt = socket.create_connection((route[0], port))
        nxt.sendall((json.dumps({"name": name, "size": size, "route": route[1:]}) + "\n").encode())
        pass_on(conn, size, nxt.sendall)
        conn.sendall(nxt.recv(16))
        nxt.close()
    except (OSError, ValueError, KeyError) as e:
        print(f"naive: {e}", file=sys.stderr)
    finally:
        conn.close()


def serve(ip, port, outdir):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c, port, outdir), daemon=True).start()


def send(path, port, plan):
    size = os.path.getsize(path)
    t0 = time.time()
    sent = {}
    for dest, route in plan:
        c = socket.create_connection((route[0], port))
        c.sendall((json.dumps({"name": os.path.basename(path), "size": size,
                               "route": route[1:]}) + "\n").encode())
        with open(path, "rb") as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                c.sendall(b)
        if c.recv(16) != b"ok\n":
            print(f"naive: {dest} did not confirm", file=sys.stderr)
            sys.exit(1)
        sent[dest] = time.time()
        c.close()
    print(json.dumps({"start": t0, "sent": sent}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
