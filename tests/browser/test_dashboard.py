"""The dashboard as a person sees it: headless chromium against a 5-node ring of real
processes. The page must show 5 alive peers and draw 5 nodes on the ring; its traffic chart
must move when keys are written; a slow upload (a client trickling a PUT body) must show
in the transfers panel with the percentage the client has sent, then finished; a node
stopped with SIGSTOP (it answers no probe) must turn suspect, and alive again once SIGCONT
lets it refute, while a cast to all shows 3 of 4 destinations whole until it runs again; a node killed with -9 must turn suspect, then dead (the failure
detector's verdicts, src/member; the nodes run with --suspicion-ms SUSPICION_MS, so a
suspect stays one for 2 x SUSPICION_MS, long enough to be seen under load: the test polls
/api/peers and the page, never a clock) and alive again after it restarts. Saves
docs/dashboard.png for the README.

usage: test_dashboard.py RINGNET_BINARY"""
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)
import ringtest  # noqa: E402
from cdp import Browser  # noqa: E402

SUSPICION_MS = 5000  # the nodes' --suspicion-ms: a suspect stays one 10 s (2 x, 5 nodes)
PEER_STATES = "[...document.querySelectorAll('#peers tbody tr')].map(r => [r.dataset.addr, r.dataset.state])"
RING_NODES = "document.querySelectorAll('#ring circle.node').length"


def state_of(b, addr):
    return dict(b.eval(PEER_STATES) or []).get(addr)


def api_state(node, addr):
    """What node's /api/peers says of addr."""
    _, doc = ringtest.get(node.http, "/api/peers")
    return next((p["state"] for p in doc.get("peers", []) if p["addr"] == addr), None)


def wait_api_state(node, addr, want, timeout):
    """Polls node's /api/peers until it says addr is want; the states seen, in order."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        st = api_state(node, addr)
        if not seen or seen[-1] != st:
            seen.append(st)
        if st == want:
            break
        time.sleep(0.2)
    return seen


ROW = "document.querySelector('#transfers tr[data-name=\"slow.bin\"]')"


def slow_upload(t, browser, view):
    """A client trickles a 3,000,000-byte PUT /files/slow.bin: the page must show its
    progress at each pause as the share the client has sent, then the upload finished."""
    total = 3_000_000
    up = socket.create_connection(("127.0.0.1", view.http), timeout=60)
    up.sendall(f"PUT /files/slow.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {total}\r\n"
               "Connection: close\r\n\r\n".encode())
    sent = 0
    for share in (0.3, 0.7):
        while sent < int(total * share):
            n = min(65536, int(total * share) - sent)
            up.sendall(b"s" * n)
            sent += n
        pct = 100 * sent / total
        shown = browser.wait_for(
            f"(() => {{ const r = {ROW}; return r && r.dataset.state === 'running' && "
            f"Math.abs(+r.dataset.percent - {pct}) < 0.06 && +r.dataset.percent; }})()", 30)
        t.check(f"the transfers panel shows the upload running at {pct:.1f} %", shown,
                browser.eval(f"{ROW} && {ROW}.dataset.percent"))
        width = browser.eval(f"{ROW} && parseFloat({ROW}.querySelector('.bar > div').style.width)")
        t.check("... its progress bar that wide", width is not None and abs(width - pct) < 0.06, width)
        _, doc = ringtest.get(view.http, "/api/transfers")
        mine = [x for x in doc.get("files", []) if x["name"] == "slow.bin"]
        t.check("... and /api/transfers has the bytes the client sent, of the length it announced",
                len(mine) == 1 and (mine[0]["kind"], mine[0]["done"], mine[0]["total"], mine[0]["state"])
                == ("upload", sent, total, "running"), mine)
    while sent < total:
        n = min(65536, total - sent)
        up.sendall(b"s" * n)
        sent += n
    answer = b""
    while True:
        b = up.recv(65536)
        if not b:
            break
        answer += b
    up.close()
    t.check("the slow upload is stored", answer.startswith(b"HTTP/1.1 200"), answer[:200])
    done = browser.wait_for(f"(() => {{ const r = {ROW}; return r && r.dataset.state === 'done' && "
                            "r.dataset.percent; })()", 15)
    t.check("... and the page shows it done at 100 %", done == "100.0",
            browser.eval(f"{ROW} && [{ROW}.dataset.state, {ROW}.dataset.percent]"))


T0 = time.time()


def phase(what):
    print(f"{time.time() - T0:5.1f} s  {what}", flush=True)


def main():
    binary = sys.argv[1]
    t = ringtest.Checks("dashboard")
    logdir = tempfile.mkdtemp(prefix="rnd-dash-")
    nodes, browser = [], None
    try:
        ok, _ = ringtest.start_ring(binary, [f"dash-{i}" for i in range(1, 6)], logdir, nodes,
                                    args=["--suspicion-ms", str(SUSPICION_MS)])
        t.check("the 5-node ring converged", ok)
        phase("5 nodes up")
        view = nodes[0]
        browser = Browser()
        phase("chromium up")
        browser.goto(f"http://127.0.0.1:{view.http}/")
        five = browser.wait_for(
            f"(() => {{ const s = {PEER_STATES}; return s.length === 5 && "
            "s.every(([, st]) => st === 'alive') && s; })()", 20)
        t.check("the page lists 5 peers, all alive", five, browser.eval(PEER_STATES))
        addrs = sorted(a for a, _ in (five or []))
        t.check("... and they are the 5 nodes", addrs == sorted(n.addr for n in nodes), addrs)
        t.check("the ring is drawn with 5 nodes", browser.wait_for(f"{RING_NODES} === 5", 5),
                browser.eval(RING_NODES))
        # each node at its id's angle: the page places them by the fraction the API gives
        pos = browser.eval("Object.fromEntries(dash.ring.nodes.map(n => [n.addr, n.pos]))")
        want = {n.addr: int(n.id[:16], 16) / 2**64 for n in nodes}
        t.check("... each at its id's angle", pos and all(abs(pos[a] - want[a]) < 1e-9 for a in want),
                (pos, want))

        phase("5 alive peers, 5 nodes drawn")
        # the traffic chart moves when keys are written
        browser.wait_for("+document.getElementById('msgs').dataset.samples >= 2", 10)
        before = browser.eval("[+document.getElementById('msgs').dataset.kv, "
                              "document.getElementById('msgs').toDataURL()]")
        stored = 0
        for k in range(60):
            status, _ = ringtest.request(view.http, "/kv", "POST", {"key": f"dash-{k}", "value": k})
            stored += status == 200
        t.check("60 keys written", stored == 60, stored)
        moved = browser.wait_for(
            f"+document.getElementById('msgs').dataset.kv > {before[0] + 1}", 10)
        t.check("the chart's key-value traffic rose", moved,
                (before[0], browser.eval("document.getElementById('msgs').dataset.kv")))
        t.check("... and its pixels changed",
                browser.eval("document.getElementById('msgs').toDataURL()") != before[1])
        keys = browser.wait_for("(() => { const r = document.querySelector('#peers tbody tr'); "
                                "return r && +r.children[4].textContent; })()", 5)
        t.check("this node's row shows its keys", keys and keys > 0, keys)
        told = browser.wait_for("(() => { const r = [...document.querySelectorAll('#peers tbody tr')]; "
                                "return r.length === 5 && r.every(x => /^[0-9]+$/.test(x.children[4].textContent)) "
                                "&& r.reduce((a, x) => a + +x.children[4].textContent, 0) >= 120 && "
                                "r.reduce((a, x) => a + +x.children[4].textContent, 0); })()", 10)
        t.check("every peer's row shows the keys it holds, at least W = 2 copies of the 60",
                told and told >= 120, told)

        phase("the chart moved")
        # a file stored through another node shows in the files section, with its size
        req = urllib.request.Request(f"http://127.0.0.1:{nodes[2].http}/files/dash-file.txt",
                                     data=b"x" * 5000, method="PUT")
        with urllib.request.urlopen(req, timeout=30) as r:
            t.check("a file stored", r.status == 200, r.status)
        listed = browser.wait_for("(() => { const r = [...document.querySelectorAll('#files tbody tr')]; "
                                  "return r.length === 1 && r[0].children[0].textContent === 'dash-file.txt' "
                                  "&& r[0].children[1].textContent; })()", 15)
        t.check("... and listed on the page with its size", listed == "4.9 KB", listed)
        phase("the file listed")
        slow_upload(t, browser, view)
        phase("the slow upload shown, then done")

        # SIGSTOP: the node answers no probe: suspect for 2 x SUSPICION_MS; SIGCONT before
        # that, and it refutes the suspicion: alive again. Meanwhile this node casts a file
        # to all: the frozen node gets no piece, so 3 of the 4 destinations are whole
        frozen = next(n for n in nodes if n is not view)
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            cast_file = os.path.join(logdir, "dash-cast.bin")
            with open(cast_file, "wb") as f:
                f.write(os.urandom(2_000_000))
            st, ans = ringtest.request(view.http, "/cast", "POST", {"path": cast_file, "to": "all"})
            t.check("a cast to all started", st == 200, (st, ans))
            seen = wait_api_state(view, frozen.addr, "suspect", 30)
            t.check("a node stopped with SIGSTOP turns suspect on /api/peers", seen[-1] == "suspect", seen)
            t.check("... not dead on the way", "dead" not in seen, seen)
            shown = browser.wait_for(
                f"(() => {{ const s = new Map({PEER_STATES}); return s.get('{frozen.addr}'); }})() === 'suspect'", 8)
            t.check("... and the page shows it suspect", shown, state_of(browser, frozen.addr))
            t.check("... the ring drawing too", browser.wait_for(
                f"(document.querySelector('#ring circle[data-addr=\"{frozen.addr}\"]') || {{}})"
                ".dataset?.state === 'suspect'", 3))
            t.check("... and still suspect, not dead, on /api/peers", api_state(view, frozen.addr) == "suspect",
                    api_state(view, frozen.addr))
            cast_row = ("(() => { const r = document.querySelector('#transfers tr[data-kind=\"cast destinations\"]'); "
                        "return r && [r.dataset.name, r.dataset.state, r.dataset.percent]; })()")
            three = browser.wait_for(f"(() => {{ const r = {cast_row}; return r && r[0].endsWith('3 of 4 whole') && r; }})()", 30)
            t.check("the transfers panel shows the cast: 3 of 4 destinations whole, 75 % of the pieces",
                    three == ["dash-cast.bin: 3 of 4 whole", "running", "75.0"], browser.eval(cast_row))
            least = browser.eval("(document.querySelector('#cast-dests span[data-dest]') || {}).dataset?.dest")
            t.check("... the frozen node first among the destinations, at 0 pieces", least == frozen.name, least)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        seen = wait_api_state(view, frozen.addr, "alive", 30)
        t.check("after SIGCONT it refutes: alive again", seen[-1] == "alive", seen)
        t.check("... and the page shows it alive", browser.wait_for(
            f"(() => {{ const s = new Map({PEER_STATES}); return s.get('{frozen.addr}'); }})() === 'alive'", 8),
            state_of(browser, frozen.addr))
        whole = browser.wait_for(f"(() => {{ const r = {cast_row}; return r && r[1] === 'done' && r; }})()", 30)
        t.check("... and once it runs again, all 4 whole: done", whole == ["dash-cast.bin: 4 of 4 whole", "done", "100.0"],
                browser.eval(cast_row))
        phase("SIGSTOP shown suspect, SIGCONT alive again, the cast done")
        # kill -9 the node this one depends on most (its successor): it must turn not alive
        _, ring = ringtest.get(view.http, "/ring")
        victim = next(n for n in nodes if n.addr == ring["successors"][0]["addr"])
        victim.stop(signal.SIGKILL)
        seen, deadline = [], time.time() + 30
        while time.time() < deadline:
            st = state_of(browser, victim.addr)
            if not seen or seen[-1] != st:
                seen.append(st)
            if st == "dead":
                break
            time.sleep(0.25)
        print(f"states the page showed for the node killed with -9: {seen}")
        t.check("the killed node is shown suspect", "suspect" in seen, seen)
        t.check("... then dead", "suspect" in seen and "dead" in seen[seen.index("suspect"):], seen)
        t.check("the ring drawing colours it so", browser.eval(
            f"(document.querySelector('#ring circle[data-addr=\"{victim.addr}\"]') || {{}}).dataset?.state")
            in ("suspect", "dead"))
        phase("the killed node shown dead")
        victim.start()
        back = browser.wait_for(
            f"(() => {{ const s = new Map({PEER_STATES}); return s.get('{victim.addr}') === 'alive'; }})()", 30)
        t.check("alive again after it restarts", back, state_of(browser, victim.addr))
        browser.wait_for(f"(() => {{ const s = {PEER_STATES}; return s.length === 5 && "
                         "s.every(([, st]) => st === 'alive'); })()", 10)
        browser.eval("document.querySelector('#ring circle.self')"
                     ".dispatchEvent(new MouseEvent('mouseenter'))")  # its fingers, drawn
        t.check("hovering this node draws its successor and finger links",
                browser.wait_for("document.querySelectorAll('#ring .link').length >= 1", 3))
        time.sleep(1.2)  # one more poll, so the screenshot has the links and fresh charts
        browser.eval("document.querySelector('#ring circle.self')"
                     ".dispatchEvent(new MouseEvent('mouseenter'))")
        phase("alive again after the restart")
        shot = os.path.join(REPO, "docs", "dashboard.png")
        browser.screenshot(shot)
        t.check("the screenshot is a PNG", open(shot, "rb").read(8) == b"\x89PNG\r\n\x1a\n")

        # a node with --api-token: the page is served without it, its data only with it;
        # given as #token=..., the page sends it and shows the node
        tokfile = os.path.join(logdir, "api.token")
        with open(tokfile, "w") as f:
            f.write("dashboard-test-token-0123456789\n")
        guarded = ringtest.Node(binary, "dash-token", logdir, args=["--api-token", tokfile])
        nodes.append(guarded)
        with urllib.request.urlopen(f"http://127.0.0.1:{guarded.http}/", timeout=10) as r:
            st_page = r.status
        st_api, _ = ringtest.get(guarded.http, "/api/node")
        t.check("with --api-token: / without the token 200, /api/node 401", (st_page, st_api) == (200, 401),
                (st_page, st_api))
        browser.goto(f"http://127.0.0.1:{guarded.http}/")
        asked = browser.wait_for("!document.getElementById('token').hidden", 10)
        t.check("... the page asks for the token", asked)
        browser.goto(f"http://127.0.0.1:{guarded.http}/#token=dashboard-test-token-0123456789")
        shown = browser.wait_for("document.getElementById('name').textContent === 'dash-token'", 10)
        t.check("... and with #token= shows the node", shown, browser.eval("document.getElementById('status').textContent"))
        t.check("... the token leaves the address bar", "token" not in browser.eval("location.href"))
        phase("the token-guarded node")
    finally:
        if browser:
            browser.close()
        ringtest.stop_all(nodes, t, logdir)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
