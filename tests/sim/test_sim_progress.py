"""`ringnet sim` shows progress on a terminal and nothing when piped: the same run, once
with stderr on a pseudo-terminal and once on a pipe. The report on stdout is the same.

usage: test_sim_progress.py RINGNET_BINARY"""
import os
import pty
import subprocess
import sys

ARGS = ["sim", "--nodes", "100000", "--requests", "3", "--seed", "7"]  # about 2 s under ASan
# a run is quiet for its first second; here the line may start at once, so that a fast
# machine still shows it (the piped run must stay silent all the same)
ENV = dict(os.environ, RINGNET_PROGRESS_AFTER_S="0")


def on_terminal(binary):
    """stdout on a pipe, stderr on a pseudo-terminal; returns (stdout, what the tty got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([binary] + ARGS, stdout=subprocess.PIPE, stderr=slave, env=ENV)
    os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        tty += chunk
    out = p.stdout.read()
    p.wait()
    os.close(master)
    return p.returncode, out.decode(), tty.decode(errors="replace")


def main():
    binary = sys.argv[1]
    fails = []
    rc, out_tty, tty = on_terminal(binary)
    piped = subprocess.run([binary] + ARGS, capture_output=True, text=True, env=ENV)
    if rc != 0 or piped.returncode != 0:
        fails.append(f"exit codes {rc}, {piped.returncode}")
    if "ringnet sim: lookups: " not in tty and "ringnet sim: building" not in tty:
        fails.append(f"no progress line on the terminal: {tty[:300]!r}")
    if not tty.endswith("\r\x1b[K") and tty:
        fails.append(f"the progress line is not cleared at the end: {tty[-80:]!r}")
    if piped.stderr:
        fails.append(f"piped stderr is not empty: {piped.stderr[:200]!r}")
    strip = lambda s: [ln for ln in s.splitlines() if "ms" not in ln and "RSS" not in ln]
    if strip(out_tty) != strip(piped.stdout):
        fails.append("the report differs between the two runs")
    for f in fails:
        print("FAIL", f)
    print(f"sim_progress: {4 - len(fails)} passed, {len(fails)} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
