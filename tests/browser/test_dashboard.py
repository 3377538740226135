"""The dashboard as a person sees it: headless chromium against a 5-node ring of real
processes. The page must show 5 alive peers and draw 5 nodes on the ring; its traffic chart
must move when keys are written; a node killed with -9 must turn not alive and then dead
(the failure detector's verdicts, src/member: on a quiet machine the page shows suspect,
then dead; under load its once-a-second poll can miss the few seconds of suspicion, so
the test asks for dead and prints what it saw) and alive again after it restarts. Saves docs/dashboard.png for the README.

usage: test_dashboard.py RINGNET_BINARY"""
import os
import signal
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

PEER_STATES = "[...document.querySelectorAll('#peers tbody tr')].map(r => [r.dataset.addr, r.dataset.state])"
RING_NODES = "document.querySelectorAll('#ring circle.node').length"


def state_of(b, addr):
    return dict(b.eval(PEER_STATES) or []).get(addr)


T0 = time.time()


def phase(what):
    print(f"{time.time() - T0:5.1f} s  {what}", flush=True)


def main():
    binary = sys.argv[1]
    t = ringtest.Checks("dashboard")
    logdir = tempfile.mkdtemp(prefix="rnd-dash-")
    nodes, browser = [], None
    try:
        ok, _ = ringtest.start_ring(binary, [f"dash-{i}" for i in range(1, 6)], logdir, nodes)
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
        t.check("the killed node is shown not alive", any(s in ("suspect", "dead") for s in seen), seen)
        t.check("... dead once the ring dropped it", "dead" in seen, seen)
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
