// The ringnet dashboard: polls this node's small JSON routes under /api/ (one node's view,
// so it stays light at any ring size) and draws the ring, the peers and the traffic itself.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const R = 160; // the ring's radius in the SVG's units
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
  '#7f7f7f', '#bcbd22', '#17becf', '#393b79', '#637939', '#8c6d31', '#843c39', '#7b4173',
  '#3182bd', '#e6550d', '#31a354'];

const state = { node: null, ring: null, peers: null, samples: [], next: 0, types: [],
  slots: 180, interval: 1000, hovered: null, failures: 0 };
window.dash = state; // for the browser test and for anyone curious in the console

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + u[i];
}

function fmtAgo(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return 'now';
  if (ms < 120000) return Math.round(ms / 1000) + ' s ago';
  return Math.round(ms / 60000) + ' min ago';
}

// A node with --api-token wants 'Authorization: Bearer TOKEN' on /api/: the page takes the
// token from the address's #token=... (which browsers never send to the server) or asks
// for it, and keeps it in this tab's sessionStorage.
function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('ringnet-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname); // out of the address bar
    $('token').hidden = true;
  }
}
takeToken();
window.addEventListener('hashchange', takeToken);

function askToken() {
  const box = $('token');
  if (box.hidden) {
    box.hidden = false;
    $('token-input').focus();
  }
}

$('token').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('ringnet-token', $('token-input').value.trim());
  $('token').hidden = true;
});

async function getJSON(path) {
  const token = sessionStorage.getItem('ringnet-token');
  const r = await fetch(path, { cache: 'no-store',
    headers: token ? { Authorization: 'Bearer ' + token } : {} });
  if (r.status === 401) {
    askToken();
    throw new Error('this node wants its API token (--api-token)');
  }
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}

// ---- the ring ----

function xy(pos, radius) {
  const a = pos * 2 * Math.PI - Math.PI / 2; // id 0 at the top, clockwise
  return [radius * Math.cos(a), radius * Math.sin(a)];
}

// The next node clockwise that is not known to be down: its successor as this node sees it.
function successorOf(nodes, i) {
  for (let k = 1; k < nodes.length; k++) {
    const c = nodes[(i + k) % nodes.length];
    if (c.state === 'alive' || c.state === 'suspect') return c;
  }
  return null;
}

let ringDrawn = '';

function drawRing() {
  const svg = $('ring'), ring = state.ring;
  if (!ring) return;
  // the drawing changes only when the ring, a state or the hovered node does
  const key = JSON.stringify([ring, state.hovered]);
  if (key === ringDrawn) return;
  ringDrawn = key;
  const nodes = ring.nodes.slice().sort((a, b) => a.pos - b.pos);
  svg.textContent = '';
  svg.appendChild(el('svg:circle', { class: 'track', cx: 0, cy: 0, r: R }));
  const links = el('svg:g', { id: 'links' });
  svg.appendChild(links);
  const byAddr = new Map(nodes.map((n) => [n.addr, n]));
  const dot = nodes.length > 60 ? 3 : nodes.length > 20 ? 5 : 8;
  const h = state.hovered && byAddr.get(state.hovered);
  if (h) {
    const targets = [];
    if (h.self) {
      for (const f of ring.fingers) if (byAddr.has(f.addr)) targets.push(['', byAddr.get(f.addr)]);
      if (ring.successors.length && byAddr.has(ring.successors[0]))
        targets.push(['succ', byAddr.get(ring.successors[0])]);
    } else {
      const s = successorOf(nodes, nodes.indexOf(h));
      if (s) targets.push(['succ', s]);
    }
    const [x1, y1] = xy(h.pos, R);
    for (const [cls, t] of targets) {
      const [x2, y2] = xy(t.pos, R);
      // a chord bowed toward the centre, so that neighbours' links stay visible
      const mx = (x1 + x2) / 4, my = (y1 + y2) / 4;
      links.appendChild(el('svg:path', { class: 'link ' + cls,
        d: `M${x1.toFixed(1)},${y1.toFixed(1)} Q${mx.toFixed(1)},${my.toFixed(1)} ${x2.toFixed(1)},${y2.toFixed(1)}` }));
    }
  }
  for (const n of nodes) {
    const [x, y] = xy(n.pos, R);
    const c = el('svg:circle', { class: `node ${n.state}${n.self ? ' self' : ''}`, cx: x.toFixed(1),
      cy: y.toFixed(1), r: n.self ? dot + 2 : dot, 'data-addr': n.addr, 'data-state': n.state });
    c.appendChild(el('svg:title', {}, `${n.addr} (${n.state}) id ${n.id.slice(0, 12)}…`));
    c.addEventListener('mouseenter', () => hover(n));
    svg.appendChild(c);
    if (nodes.length <= 24) {
      const [lx, ly] = xy(n.pos, R + 22);
      svg.appendChild(el('svg:text', { class: 'label', x: lx.toFixed(1), y: ly.toFixed(1),
        'text-anchor': 'middle', 'dominant-baseline': 'middle' }, n.addr.replace('127.0.0.1:', ':')));
    }
  }
  const alive = nodes.filter((n) => n.state === 'alive').length;
  const walk = ring.walk || {};
  const how = walk.laps ? ', walked round the whole ring' : walk.active ? ', walking the ring…' : '';
  $('ring-count').textContent = `${nodes.length} nodes known${how}, ${alive} alive`;
}

function hover(n) {
  if (state.hovered === n.addr) return;
  state.hovered = n.addr;
  const what = n.self ? 'this node: its successor (green) and fingers (blue)'
    : 'its successor as this node sees it (green)';
  $('hover').textContent = `${n.addr} · ${n.state} · id ${n.id.slice(0, 16)}… · ${what}`;
  drawRing();
}

// ---- the peers ----

// Rows are kept by address and only the cells that changed are written, so a poll of a
// ring of 200 touches a few cells, not 1,400 new elements.
const rows = new Map();

function setText(td, text) {
  if (td.textContent !== text) td.textContent = text;
}

function peerRow(addr) {
  let tr = rows.get(addr);
  if (!tr) {
    tr = el('tr', { 'data-addr': addr });
    for (let k = 0; k < 7; k++) tr.appendChild(el('td', k === 4 || k === 5 ? { class: 'num' } : {}));
    rows.set(addr, tr);
  }
  return tr;
}

function drawPeers() {
  const p = state.peers;
  if (!p) return;
  const body = $('peers').tBodies[0];
  const counts = { alive: 0, suspect: 0, dead: 0, left: 0 };
  const seen = new Set();
  let prev = null;
  for (const e of p.peers) {
    counts[e.state] = (counts[e.state] || 0) + 1;
    seen.add(e.addr);
    const tr = peerRow(e.addr), c = tr.children;
    if (tr.dataset.state !== e.state) tr.dataset.state = e.state;
    setText(c[0], e.addr + (e.self ? ' (this node)' : ''));
    setText(c[1], e.state);
    if (c[1].className !== e.state) c[1].className = e.state;
    setText(c[2], e.id.slice(0, 10) + '…');
    if (c[2].title !== e.id) c[2].title = e.id;
    setText(c[3], e.self ? '' : (e.roles || []).join(', '));
    setText(c[4], e.keys === null ? '—' : String(e.keys));
    setText(c[5], fmtBytes(e.bytes));
    setText(c[6], e.self ? '' : fmtAgo(e.heard_ms_ago));
    const at = prev ? prev.nextSibling : body.firstChild; // keep the node's order
    if (at !== tr) body.insertBefore(tr, at);
    prev = tr;
  }
  for (const [addr, tr] of rows)
    if (!seen.has(addr)) { tr.remove(); rows.delete(addr); }
  $('peer-count').textContent = Object.entries(counts).filter(([, v]) => v)
    .map(([k, v]) => `${v} ${k}`).join(', ');
  $('peers-source').textContent = 'states from ' + p.source +
    '; keys and bytes as each node last told this one (— when it has not in 10 s)';
}

// ---- traffic ----

function addSamples(t) {
  state.types = t.types;
  state.slots = t.slots;
  state.interval = t.interval_ms;
  if (t.samples.length && state.samples.length &&
      t.samples[0].seq !== state.samples[state.samples.length - 1].seq + 1)
    state.samples = []; // a gap (or the node restarted): start over from what it sent
  state.samples.push(...t.samples);
  if (state.samples.length > state.slots) state.samples.splice(0, state.samples.length - state.slots);
  state.next = t.next;
  $('window').textContent = Math.round(state.slots * state.interval / 60000);
}

// Rates per second of each type that appears in the window, in + out.
function series(kind) {
  const out = new Map();
  state.samples.forEach((s, i) => {
    for (const [type, v] of Object.entries(s[kind])) {
      if (!out.has(type)) out.set(type, new Array(state.samples.length).fill(0));
      out.get(type)[i] = (v[0] + v[1]) * 1000 / Math.max(s.ms, 1);
    }
  });
  return out;
}

function color(type) {
  const i = state.types.indexOf(type);
  return COLORS[(i < 0 ? 0 : i) % COLORS.length];
}

function drawChart(canvas, kind, fmt) {
  const dpr = window.devicePixelRatio || 1, want = Math.round(canvas.clientWidth * dpr);
  if (want && canvas.width !== want) { // sharp text at any width
    canvas.width = want;
    canvas.height = Math.round(canvas.clientHeight * dpr);
  }
  const s = series(kind), ctx = canvas.getContext('2d');
  const W = canvas.width / dpr, H = canvas.height / dpr, L = 56, B = 16;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.scale(dpr, dpr);
  let max = 0, total = 0;
  // stacked: each type on top of the ones before it
  const types = [...s.keys()].sort((a, b) => state.types.indexOf(a) - state.types.indexOf(b));
  const n = state.samples.length;
  const stack = new Array(n).fill(0);
  const layers = types.map((t) => {
    const lo = stack.slice();
    s.get(t).forEach((v, i) => { stack[i] += v; total += v; });
    return [t, lo, stack.slice()];
  });
  for (const v of stack) max = Math.max(max, v);
  max = max > 0 ? max * 1.1 : 1;
  const X = (i) => L + (W - L - 4) * (state.slots - n + i) / Math.max(state.slots - 1, 1);
  const Y = (v) => H - B - (H - B - 6) * v / max;
  ctx.strokeStyle = '#ddd';
  ctx.fillStyle = '#777';
  ctx.font = '10px sans-serif';
  for (let k = 0; k <= 3; k++) {
    const v = max * k / 3, y = Y(v);
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - 4, y); ctx.stroke();
    ctx.fillText(fmt(v), 2, y + 3);
  }
  ctx.fillText(`-${Math.round(state.slots * state.interval / 1000)} s`, L, H - 3);
  ctx.fillText('now', W - 26, H - 3);
  for (const [t, lo, hi] of layers) {
    if (!n) break;
    ctx.beginPath();
    ctx.moveTo(X(0), Y(hi[0]));
    for (let i = 1; i < n; i++) ctx.lineTo(X(i), Y(hi[i]));
    for (let i = n - 1; i >= 0; i--) ctx.lineTo(X(i), Y(lo[i]));
    ctx.closePath();
    ctx.fillStyle = color(t);
    ctx.globalAlpha = 0.8;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
  // what the test reads: how much is drawn, and of the key-value types
  canvas.dataset.samples = n;
  canvas.dataset.total = total.toFixed(1);
  canvas.dataset.kv = layers.filter(([t]) => t.startsWith('kv_'))
    .reduce((a, [t]) => a + s.get(t).reduce((x, y) => x + y, 0), 0).toFixed(1);
  return types;
}

function drawTraffic() {
  const t1 = drawChart($('msgs'), 'msgs', (v) => v < 10 ? v.toFixed(1) : Math.round(v));
  const t2 = drawChart($('bytes'), 'bytes', (v) => fmtBytes(v));
  const legend = $('legend');
  legend.textContent = '';
  for (const t of [...new Set([...t1, ...t2])]) {
    const span = el('span');
    const sw = el('i');
    sw.style.background = color(t);
    span.appendChild(sw);
    span.appendChild(document.createTextNode(t));
    legend.appendChild(span);
  }
}

// ---- files and transfers ----

function bar(done, total, cls) {
  const b = el('div', { class: 'bar' + (cls ? ' ' + cls : '') }), fill = el('div');
  fill.style.width = (total ? Math.min(100, 100 * done / total) : 0).toFixed(1) + '%';
  b.appendChild(fill);
  return b;
}

function drawFiles(f) {
  const body = $('files').tBodies[0];
  body.textContent = '';
  for (const x of f.files || []) {
    const tr = el('tr', { 'data-name': x.name });
    tr.appendChild(el('td', {}, x.name));
    tr.appendChild(el('td', { class: 'num' }, fmtBytes(x.size)));
    tr.appendChild(el('td', {}, x.uploaded_at ? x.uploaded_at.replace('T', ' ').slice(0, 19) : ''));
    body.appendChild(tr);
  }
  $('files-note').textContent = f.note || '';
  $('files').dataset.count = (f.files || []).length;
}

// One row of the transfers table; the test reads data-name, data-state and data-percent.
function transferRow(kind, name, done, total, state, ms, unit) {
  const pct = total ? 100 * done / total : null;
  const tr = el('tr', { 'data-kind': kind, 'data-name': name, 'data-state': state,
    'data-percent': pct === null ? '' : pct.toFixed(1) });
  tr.appendChild(el('td', {}, kind));
  tr.appendChild(el('td', {}, name));
  const td = el('td');
  td.appendChild(bar(done, total, total ? state : 'unknown'));
  td.appendChild(document.createTextNode(pct === null ? ' ?' : ` ${pct.toFixed(1)} %`));
  tr.appendChild(td);
  const fmt = unit === 'pieces' ? (v) => v + ' pieces' : fmtBytes;
  tr.appendChild(el('td', { class: 'num' }, fmt(done)));
  tr.appendChild(el('td', { class: 'num' }, total === null ? 'unknown' : fmt(total)));
  tr.appendChild(el('td', { class: state }, state));
  tr.appendChild(el('td', { class: 'num' }, ms === null ? '' : (ms / 1000).toFixed(1) + ' s'));
  return tr;
}

const CAST_SHOWN = 24; // destinations drawn one by one; the rest are summed up

let transfersDrawn = '';

function drawTransfers(t) {
  const key = JSON.stringify(t);
  if (key === transfersDrawn) return; // nothing moved: the DOM stays as it is
  const body = $('transfers').tBodies[0], dests = $('cast-dests');
  body.textContent = '';
  dests.textContent = '';
  let running = 0;
  for (const x of t.files || []) {
    running += x.state === 'running';
    body.appendChild(transferRow(x.kind, x.name, x.done, x.total, x.state, x.ms, 'bytes'));
  }
  const c = t.cast;
  if (c) {
    const others = (c.destinations || []).filter((d) => d.dest && !d.self);
    const isSource = !!state.node && c.source === state.node.name;
    // this node's own pieces, then every destination's as this node has heard
    const held = c.held, st = held >= c.pieces ? 'done' : 'running';
    running += st === 'running';
    body.appendChild(transferRow(isSource ? 'cast (source)' : 'cast', c.file, held, c.pieces,
      st, null, 'pieces'));
    if (others.length) {
      const whole = others.filter((d) => d.held >= d.total).length;
      const sum = others.reduce((a, d) => a + d.held, 0);
      body.appendChild(transferRow('cast destinations', `${c.file}: ${whole} of ${others.length} whole`,
        sum, others.length * c.pieces, whole === others.length ? 'done' : 'running', null, 'pieces'));
      const slow = others.slice().sort((a, b) => a.held - b.held || (a.id < b.id ? -1 : 1));
      for (const d of slow.slice(0, CAST_SHOWN)) {
        const span = el('span', { 'data-dest': d.id, title: `${d.id}: ${d.held} of ${d.total} pieces` });
        span.appendChild(el('b', {}, d.id));
        span.appendChild(bar(d.held, d.total, d.held >= d.total ? 'done' : ''));
        dests.appendChild(span);
      }
      if (slow.length > CAST_SHOWN)
        dests.appendChild(el('span', {}, `and ${slow.length - CAST_SHOWN} more, the furthest along`));
    }
  }
  $('transfers-count').textContent = running ? `${running} in progress` : 'none in progress';
  transfersDrawn = key; // only once drawn whole
  const r = t.repair;
  $('repair').textContent = r ? `key-value repair from this node: ${fmtBytes(r.repair_bytes)} sent ` +
    `(${fmtBytes(r.repair_record_bytes)} of records), ${r.handoffs_done} handoffs done, ` +
    `${r.handoffs_pending} pending` : '';
}

// ---- polling ----

async function poll() {
  try {
    const [node, ring, peers, traffic] = await Promise.all([getJSON('/api/node'),
      getJSON('/api/ring'), getJSON('/api/peers'), getJSON('/api/traffic?since=' + state.next)]);
    state.node = node; state.ring = ring; state.peers = peers;
    if (traffic.next < state.next) { state.samples = []; state.next = 0; } // restarted
    else addSamples(traffic);
    $('name').textContent = node.name;
    $('summary').textContent = `${node.addr} · http ${node.http} · ${node.joined ? 'in the ring' : 'not in a ring'}` +
      ` · ${node.keys} keys · ${fmtBytes(node.bytes)} stored · up ${Math.round(node.uptime_ms / 1000)} s · v${node.version}`;
    $('status').textContent = '';
    state.failures = 0;
    drawTraffic(); drawRing(); drawPeers(); // charts first: they read sizes before the DOM changes
  } catch (e) {
    state.failures++;
    $('status').textContent = 'cannot reach this node: ' + e.message;
  }
  setTimeout(poll, state.failures ? 2000 : 1000);
}

// The files stored: the file service's own listing (GET /files, the whole ring's).
async function pollFiles() {
  try {
    const f = await getJSON('/api/files');
    try {
      const listed = await getJSON('/files');
      f.files = listed.files || [];
      f.note = f.files.length ? '' : 'no files stored';
    } catch (e) { /* no file service on this node: /api/files says so */ }
    drawFiles(f);
  } catch (e) { /* shown by poll() */ }
  setTimeout(pollFiles, 5000);
}

// Transfers in progress: this node's snapshot, every second.
async function pollTransfers() {
  try {
    drawTransfers(await getJSON('/api/transfers'));
  } catch (e) { /* shown by poll() */ }
  setTimeout(pollTransfers, 1000);
}

$('ring').addEventListener('mouseleave', () => { state.hovered = null; drawRing(); });
poll();
pollFiles();
pollTransfers();
