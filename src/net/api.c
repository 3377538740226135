/* api.c — the dashboard's side of the node: the web page (web/, compiled in), the small JSON
 * routes under /api/ it polls, the per-type traffic history (traffic.h) and the metrics the
 * dashboard adds to /metrics. Like /ring and /health, the /api/ answers are snapshots the
 * loop publishes every SNAPSHOT_MS (nd_dash_publish); a request copies one out.
 *
 * Peer states come from ONE adapter, dash_peer_states(): the failure detector's verdict
 * (src/member) for every peer it knows, and for the others what the node knows now (the
 * ring core's successors, fingers and predecessor, connection failures, leave notices). */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"
#include "web.h"

/* ---- what the node learns of its peers (loop thread) ---- */

static void learn(node *n, const ring_peer *p, uint64_t now, bool heard)
{
	if (p->addr == RING_ADDR_NONE || p->addr == 0 || p->addr >= n->npeers)
		return;
	peer *q = &n->peers[p->addr];
	q->id = p->id;
	q->has_id = true;
	if (heard) {
		q->heard_at = now ? now : 1;
		q->left = false;
	}
}

void nd_dash_learn(node *n, const ring_msg *m)
{
	uint64_t now = uv_now(&n->loop);
	learn(n, &m->from, now, true);
	if (m->type == RING_MSG_LEAVE && m->from.addr < n->npeers && m->from.addr)
		n->peers[m->from.addr].left = true;
	if (m->type == RING_MSG_FOUND || m->type == RING_MSG_PRED_REPLY ||
	    m->type == RING_MSG_LEAVE)
		learn(n, &m->result, now, false);
	for (unsigned k = 0; k < m->npeers; k++)
		learn(n, &m->peers[k], now, false);
}

/* ---- the ring walk: while someone watches, learn every node, not only neighbours ---- */

/* One node sees its successors, fingers and predecessor: a few dozen of a ring of 200.
 * While the dashboard is open (a poll of /api/ring in the last DASH_VIEW_MS), the node
 * looks up the successor of the last node it found, plus one, every DASH_WALK_MS: the
 * walk goes round the whole ring, O(log N) messages a step, and stops when nobody looks. */
static void ask_stats(node *n, uint64_t now);

void nd_dash_walk(node *n, uint64_t now)
{
	uint64_t viewed = n->dash_viewed_at;
	if (n->stopping || !ring_joined(n->ring) || !viewed || now > viewed + DASH_VIEW_MS)
		return;
	ask_stats(n, now);
	if (now < n->dash_walk_at + (n->dash_walking ? DASH_WALK_GIVEUP_MS : DASH_WALK_MS))
		return;
	if (rn_id_is_zero(&n->dash_walk_next)) /* the start, or after a failed step */
		rn_id_add_pow2(&n->dash_walk_next, ring_self_id(n->ring), RN_ID_BITS - n->cfg.bits);
	n->dash_walk_at = now;
	n->dash_walking = true;
	ring_out_reset(&n->out);
	ring_lookup(n->ring, now, &n->dash_walk_next, DASH_BIT | ++n->dash_walk_seq, &n->out);
	nd_drain(n);
}

void nd_dash_on_lookup(node *n, const ring_event *e)
{
	if ((e->req & ~DASH_BIT) != n->dash_walk_seq)
		return; /* an answer to a step given up on */
	n->dash_walking = false;
	if (!e->ok || e->result.addr == RING_ADDR_NONE) {
		memset(&n->dash_walk_next, 0, sizeof n->dash_walk_next); /* from the start */
		return;
	}
	learn(n, &e->result, 0, false);
	rn_id_add_pow2(&n->dash_walk_next, &e->result.id, RN_ID_BITS - n->cfg.bits);
	if (e->result.addr == 0) /* round the ring: start again from here */
		n->dash_walk_laps++;
}

/* ---- other nodes' keys and bytes: WIRE_STATS asks and tells ---- */

/* Only a node knows what it stores. While the dashboard is open, every DASH_STATS_MS the
 * node asks up to DASH_STATS_MAX peers it believes alive; each answers with its counts
 * (at most DASH_TELLS_PER_S answers a second, so asks cannot make a node flood). */
static void send_stats(node *n, ring_addr to, uint8_t kind)
{
	wire_stats m = {.kind = kind, .from = 0};
	if (kind == WIRE_STATS_TELL && n->st) {
		m.keys = store_count(n->st);
		m.bytes = store_bytes(n->st);
	}
	pending *f = calloc(1, sizeof *f);
	if (!f || wire_encode_stats(&m, &n->book, &f->buf, &f->len) < 0) {
		free(f);
		return;
	}
	f->kind = FRAME_DASH;
	nd_send_frame(n, to, f);
}

static void ask_stats(node *n, uint64_t now)
{
	if (now < n->dash_asked_at + DASH_STATS_MS)
		return;
	n->dash_asked_at = now;
	unsigned asked = 0;
	for (uint32_t i = 1; i < n->npeers && asked < DASH_STATS_MAX; i++) {
		peer *p = &n->peers[i];
		if (p->unused || !p->has_id || p->left || p->backoff_ms)
			continue;
		send_stats(n, i, WIRE_STATS_ASK);
		asked++;
	}
}

void nd_dash_on_stats(node *n, const wire_stats *m)
{
	if (m->from == 0 || m->from >= n->npeers)
		return; /* names this node: nothing to answer or keep */
	uint64_t now = uv_now(&n->loop);
	if (m->kind == WIRE_STATS_TELL) {
		peer *p = &n->peers[m->from];
		p->stats_keys = m->keys;
		p->stats_bytes = m->bytes;
		p->stats_at = now ? now : 1;
		return;
	}
	if (now >= n->dash_told_at + 1000) {
		n->dash_told_at = now;
		n->dash_told = 0;
	}
	if (n->dash_told++ < DASH_TELLS_PER_S)
		send_stats(n, m->from, WIRE_STATS_TELL);
}

/* ---- peer states: the adapter the membership list replaces ---- */

enum { ROLE_PRED = 1, ROLE_SUCC = 2, ROLE_SUCCLIST = 4, ROLE_FINGER = 8 };

typedef struct {
	uint32_t addr;     /* address book handle */
	const char *state; /* "alive", "suspect", "dead" or "left" */
	unsigned roles;
} dash_peer;

/* Every peer of the address book whose ring id is known, with its state: the membership
 * core's (alive, suspect, dead, left) when it knows the peer; else
 *   left    it sent a leave notice and nothing since;
 *   suspect the last connection to it failed and it has sent nothing since, but the ring
 *           core still counts on it (successor, finger or predecessor);
 *   dead    the same, and the ring core has dropped it;
 *   alive   otherwise (nothing says it is down: a peer this node never talks to stays
 *           alive until something fails).
 * Returns how many it wrote into out (at most max). */
static size_t dash_peer_states(node *n, dash_peer *out, size_t max)
{
	/* roles first, one pass over the ring core's tables (out[i].roles, by handle) */
	for (uint32_t i = 0; i < n->npeers && i < max; i++)
		out[i].roles = 0;
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	for (size_t k = 0; k < ns; k++)
		if (succ[k].addr < max) {
			out[succ[k].addr].roles |= k ? ROLE_SUCCLIST : ROLE_SUCC;
			learn(n, &succ[k], 0, false);
		}
	ring_peer pred = ring_predecessor(n->ring);
	if (pred.addr < max) {
		out[pred.addr].roles |= ROLE_PRED;
		learn(n, &pred, 0, false);
	}
	for (unsigned f = 0; f < n->cfg.bits; f++) {
		ring_peer fp = ring_finger(n->ring, f);
		if (fp.addr < max) {
			out[fp.addr].roles |= ROLE_FINGER;
			learn(n, &fp, 0, false);
		}
	}
	/* then the states, packed to the front (cnt <= i: no entry is overwritten unread) */
	size_t cnt = 0;
	for (uint32_t i = 1; i < n->npeers && i < max; i++) {
		peer *p = &n->peers[i];
		unsigned roles = out[i].roles;
		if (p->unused || !p->has_id)
			continue;
		const char *st = nd_member_state(n, i);
		if (!st)
			st = p->left          ? "left"
			     : !p->backoff_ms ? "alive"
			     : roles          ? "suspect"
			                      : "dead";
		out[cnt++] = (dash_peer){i, st, roles};
	}
	return cnt;
}

/* ---- the snapshots (loop thread) ---- */

static json_t *id_json(const rn_id *id)
{
	char hex[RN_ID_HEX];
	rn_id_to_hex(id, hex);
	return json_string(hex);
}

/* Where an id sits on the ring, as a fraction of the circle in [0, 1). */
static double id_pos(const rn_id *id)
{
	return (double)rn_id_top64(id) / 18446744073709551616.0;
}

static json_t *roles_json(unsigned roles)
{
	json_t *a = json_array();
	static const char *names[] = {"predecessor", "successor", "successor-list", "finger"};
	for (int k = 0; k < 4; k++)
		if (roles & (1u << k))
			json_array_append_new(a, json_string(names[k]));
	return a;
}

static char *dumps_nl(json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!t)
		return NULL;
	size_t len = strlen(t);
	char *u = realloc(t, len + 2);
	if (!u) {
		free(t);
		return NULL;
	}
	u[len] = '\n';
	u[len + 1] = '\0';
	return u;
}

static json_t *node_doc(node *n, uint64_t now)
{
	const rn_id *self = ring_self_id(n->ring);
	return json_pack("{s:s, s:o, s:f, s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:i}", "name",
	                 n->o->name, "id", id_json(self), "pos", id_pos(self), "addr",
	                 n->peers[0].addr, "http", n->o->http, "version", RINGNET_VERSION, "joined",
	                 ring_joined(n->ring), "uptime_ms", (json_int_t)(now - n->dash_started_at),
	                 "keys", (json_int_t)(n->st ? store_count(n->st) : 0), "tombstones",
	                 (json_int_t)(n->st ? store_tombstones(n->st) : 0), "bytes",
	                 (json_int_t)(n->st ? store_bytes(n->st) : 0), "bits", (int)n->cfg.bits);
}

/* A peer's keys or bytes as it last told them, or null when it has not lately. */
static json_t *stats_json(const peer *p, uint64_t now, uint64_t v)
{
	return p->stats_at && now - p->stats_at <= DASH_STATS_FRESH_MS ? json_integer((json_int_t)v)
	                                                               : json_null();
}

/* /api/peers and /api/ring from one pass over the peers. */
static void peer_docs(node *n, uint64_t now, char **peers_s, char **ring_s, unsigned *counts)
{
	dash_peer *dp = malloc(MAX_PEERS * sizeof *dp);
	size_t cnt = dp ? dash_peer_states(n, dp, MAX_PEERS) : 0;
	json_t *pl = json_array(), *nodes = json_array();
	json_t *self = node_doc(n, now);
	json_object_set_new(self, "state", json_string("alive"));
	json_object_set_new(self, "self", json_true());
	json_array_append(pl, self);
	json_array_append_new(nodes,
	                      json_pack("{s:s, s:O, s:O, s:s, s:b}", "addr", n->peers[0].addr, "id",
	                                json_object_get(self, "id"), "pos",
	                                json_object_get(self, "pos"), "state", "alive", "self", 1));
	json_decref(self);
	for (size_t k = 0; k < cnt; k++) {
		peer *p = &n->peers[dp[k].addr];
		const char *st = dp[k].state;
		counts[st[0] == 'a' ? 0 : st[0] == 's' ? 1 : st[0] == 'd' ? 2 : 3]++;
		json_t *e = json_pack(
		    "{s:s, s:o, s:f, s:s, s:o, s:b, s:o, s:o, s:o, s:o}", "addr", p->addr, "id",
		    id_json(&p->id), "pos", id_pos(&p->id), "state", st, "roles",
		    roles_json(dp[k].roles), "connected", p->connected, "heard_ms_ago",
		    p->heard_at ? json_integer((json_int_t)(now - p->heard_at)) : json_null(),
		    "failing_since_ms_ago",
		    p->backoff_ms ? json_integer((json_int_t)(now - p->failed_at)) : json_null(),
		    "keys", stats_json(p, now, p->stats_keys), "bytes",
		    stats_json(p, now, p->stats_bytes));
		json_array_append_new(pl, e);
		json_array_append_new(nodes, json_pack("{s:s, s:o, s:f, s:s}", "addr", p->addr,
		                                       "id", id_json(&p->id), "pos", id_pos(&p->id),
		                                       "state", st));
	}
	free(dp);
	*peers_s = dumps_nl(
	    json_pack("{s:s, s:o, s:s}", "self", n->peers[0].addr, "peers", pl, "source",
	              "the failure detector (SWIM), and the ring view for peers it does not know"));
	json_t *fl = json_array();
	ring_addr last = RING_ADDR_NONE;
	for (unsigned i = 0; i < n->cfg.bits; i++) {
		ring_peer f = ring_finger(n->ring, i);
		if (f.addr == last || f.addr >= n->npeers)
			continue;
		last = f.addr;
		json_array_append_new(
		    fl, json_pack("{s:i, s:s}", "from", (int)i, "addr", n->peers[f.addr].addr));
	}
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	json_t *sl = json_array();
	for (size_t k = 0; k < ns; k++)
		if (succ[k].addr < n->npeers)
			json_array_append_new(sl, json_string(n->peers[succ[k].addr].addr));
	ring_peer pred = ring_predecessor(n->ring);
	bool watched = n->dash_viewed_at && now <= n->dash_viewed_at + DASH_VIEW_MS;
	*ring_s = dumps_nl(
	    json_pack("{s:s, s:o, s:o, s:o, s:o, s:{s:b, s:I}}", "self", n->peers[0].addr, "nodes",
	              nodes, "successors", sl, "fingers", fl, "predecessor",
	              pred.addr < n->npeers ? json_string(n->peers[pred.addr].addr) : json_null(),
	              "walk", "active", watched, "laps", (json_int_t)n->dash_walk_laps));
}

/* /api/transfers: uploads and downloads through this node (files.c), the cast in progress
 * (cast.c), and the key-value repair the node is doing (kv core counters). */
static char *transfers_doc(node *n)
{
	const kv_stats *ks = n->kv ? kv_get_stats(n->kv) : NULL;
	json_t *repair = ks ? json_pack("{s:I, s:I, s:I, s:I}", "handoffs_pending",
	                                (json_int_t)ks->pending_handoffs, "handoffs_done",
	                                (json_int_t)ks->handoffs_done, "repair_bytes",
	                                (json_int_t)ks->sync_bytes, "repair_record_bytes",
	                                (json_int_t)ks->repair_data_bytes)
	                    : json_null();
	return dumps_nl(json_pack("{s:o, s:o, s:o}", "files", nd_files_transfers(n), "cast",
	                          nd_cast_transfer(n), "repair", repair));
}

void nd_dash_publish(node *n)
{
	uint64_t now = uv_now(&n->loop);
	if (!n->dash_started_at) {
		n->dash_started_at = now ? now : 1;
		traffic_init(&n->tr, now);
	}
	char *node_s = dumps_nl(node_doc(n, now));
	char *peers_s = NULL, *ring_s = NULL;
	unsigned counts[4] = {0};
	peer_docs(n, now, &peers_s, &ring_s, counts);
	char *xfer_s = transfers_doc(n);
	if (traffic_due(&n->tr, now))
		traffic_sample(&n->tr, now);
	free(n->snap_api[0]);
	free(n->snap_api[1]);
	free(n->snap_api[2]);
	n->snap_api[0] = node_s;
	n->snap_api[1] = ring_s;
	n->snap_api[2] = peers_s;
	free(n->snap_transfers);
	n->snap_transfers = xfer_s;
	memcpy(n->dash_states, counts, sizeof counts);
	n->dash_pub_at = now;
}

void nd_dash_free(node *n)
{
	for (int k = 0; k < 3; k++)
		free(n->snap_api[k]);
	free(n->snap_transfers);
}

/* ---- /metrics (loop thread) ---- */

char *nd_dash_metrics(node *n, char *text)
{
	if (!text)
		return NULL;
	size_t len = strlen(text), cap = len + 8192 + TR_TYPES * 4 * 96;
	char *b = realloc(text, cap);
	if (!b) {
		free(text);
		return NULL;
	}
#define P(...) len += (size_t)snprintf(b + len, len < cap ? cap - len : 0, __VA_ARGS__)
	P("# HELP ringnet_build_info The node's name and version (always 1).\n"
	  "# TYPE ringnet_build_info gauge\nringnet_build_info{name=\"%s\",version=\"%s\"} 1\n",
	  n->o->name, RINGNET_VERSION);
	uint64_t now = uv_now(&n->loop);
	P("# HELP ringnet_uptime_seconds Seconds since the node started.\n"
	  "# TYPE ringnet_uptime_seconds gauge\nringnet_uptime_seconds %.1f\n",
	  n->dash_started_at ? (double)(now - n->dash_started_at) / 1000.0 : 0.0);
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	P("# HELP ringnet_ring_joined 1 when the node is in a ring.\n"
	  "# TYPE ringnet_ring_joined gauge\nringnet_ring_joined %d\n"
	  "# HELP ringnet_ring_successors Entries in the successor list (at most %u).\n"
	  "# TYPE ringnet_ring_successors gauge\nringnet_ring_successors %zu\n",
	  ring_joined(n->ring) ? 1 : 0, n->cfg.successors, ns);
	P("# HELP ringnet_ring_finger_runs Distinct runs of equal fingers in the finger table.\n"
	  "# TYPE ringnet_ring_finger_runs gauge\nringnet_ring_finger_runs %zu\n",
	  ring_finger_runs(n->ring));
	P("# HELP ringnet_ring_has_predecessor 1 when the node knows its predecessor.\n"
	  "# TYPE ringnet_ring_has_predecessor gauge\nringnet_ring_has_predecessor %d\n",
	  ring_predecessor(n->ring).addr != RING_ADDR_NONE ? 1 : 0);
	static const char *states[] = {"alive", "suspect", "dead", "left"};
	P("# HELP ringnet_peers Peers whose ring id this node knows, by state as it sees them.\n"
	  "# TYPE ringnet_peers gauge\n");
	for (int k = 0; k < 4; k++)
		P("ringnet_peers{state=\"%s\"} %u\n", states[k], n->dash_states[k]);
	P("# HELP ringnet_store_bytes Bytes of the store's B-tree pages (keys, values, "
	  "tombstones).\n# TYPE ringnet_store_bytes gauge\nringnet_store_bytes %llu\n",
	  (unsigned long long)(n->st ? store_bytes(n->st) : 0));
	P("# HELP ringnet_peer_frames_total Whole frames on peer connections (out: written).\n"
	  "# TYPE ringnet_peer_frames_total counter\n"
	  "ringnet_peer_frames_total{dir=\"in\"} %llu\nringnet_peer_frames_total{dir=\"out\"} "
	  "%llu\n",
	  (unsigned long long)n->frames_in, (unsigned long long)n->frames_out);
	uint64_t commits = 0, writes = 0;
	if (n->st)
		store_commit_stats(n->st, &commits, &writes);
	P("# HELP ringnet_peer_writes_total Writes on outgoing peer connections (each one "
	  "writev of the frames queued in a loop iteration).\n"
	  "# TYPE ringnet_peer_writes_total counter\nringnet_peer_writes_total %llu\n"
	  "# HELP ringnet_store_commits_total Store commits (one log frame each) that wrote "
	  "records.\n# TYPE ringnet_store_commits_total counter\nringnet_store_commits_total "
	  "%llu\n# HELP ringnet_store_commit_writes_total Puts and deletes those commits "
	  "carried.\n# TYPE ringnet_store_commit_writes_total counter\n"
	  "ringnet_store_commit_writes_total %llu\n",
	  (unsigned long long)n->peer_writes, (unsigned long long)commits,
	  (unsigned long long)writes);
	P("# HELP ringnet_peer_message_bytes_total Bytes of peer messages (frame header "
	  "included) by direction and type, ring and key-value alike (out: when queued).\n"
	  "# TYPE ringnet_peer_message_bytes_total counter\n");
	for (unsigned t = 0; t < TR_TYPES; t++)
		for (int d = 0; d < 2; d++)
			P("ringnet_peer_message_bytes_total{dir=\"%s\",type=\"%s\"} %llu\n",
			  d ? "out" : "in", traffic_type_name(t),
			  (unsigned long long)n->tr.bytes[d][t]);
#undef P
	if (len >= cap) {
		free(b);
		return NULL;
	}
	return b;
}

/* ---- the routes (HTTP thread) ---- */

/* /api/traffic: the samples from `since` on (all that are kept without it). */
static char *traffic_text(const traffic *t, uint64_t since)
{
	json_t *types = json_array();
	for (unsigned k = 0; k < TR_TYPES; k++)
		json_array_append_new(types, json_string(traffic_type_name(k)));
	json_t *samples = json_array();
	for (uint64_t k = traffic_first(t, since); k < t->seq; k++) {
		const tr_sample *s = traffic_get(t, k);
		json_t *m = json_object(), *b = json_object();
		for (unsigned y = 0; y < TR_TYPES; y++) {
			if (!s->msgs[0][y] && !s->msgs[1][y])
				continue;
			json_object_set_new(m, traffic_type_name(y),
			                    json_pack("[I, I]", (json_int_t)s->msgs[0][y],
			                              (json_int_t)s->msgs[1][y]));
			json_object_set_new(b, traffic_type_name(y),
			                    json_pack("[I, I]", (json_int_t)s->bytes[0][y],
			                              (json_int_t)s->bytes[1][y]));
		}
		json_array_append_new(samples, json_pack("{s:I, s:I, s:i, s:o, s:o}", "seq",
		                                         (json_int_t)k, "at", (json_int_t)s->at,
		                                         "ms", (int)s->ms, "msgs", m, "bytes", b));
	}
	return dumps_nl(json_pack("{s:i, s:i, s:I, s:o, s:o}", "interval_ms", TR_INTERVAL, "slots",
	                          TR_SLOTS, "next", (json_int_t)t->seq, "types", types, "samples",
	                          samples));
}

static const char files_doc[] =
    "{\"files\":[],\"transfers\":[],\"available\":false,"
    "\"note\":\"the files stored are listed by GET /files (the page reads it); transfers in "
    "progress by GET /api/transfers\"}\n";

static const rn_web_asset *asset(const char *url)
{
	for (size_t k = 0; k < rn_web_nassets; k++) {
		const rn_web_asset *w = &rn_web_assets[k];
		if (!strcmp(url, w->path) || (!strcmp(url, "/") && !strcmp(w->path, "/index.html")))
			return w;
	}
	return NULL;
}

bool nd_dash_is_asset(const char *url)
{
	return asset(url) != NULL;
}

bool nd_dash_get(node *n, struct MHD_Connection *c, const char *url, nd_answer *a)
{
	const rn_web_asset *w = asset(url);
	if (w) {
		a->route = "/";
		a->type = w->type;
		a->body = (const char *)w->data;
		a->len = w->len;
		a->owned = NULL;
		return true;
	}
	static const char *routes[] = {"/api/node",    "/api/ring",  "/api/peers",
	                               "/api/traffic", "/api/files", "/api/transfers"};
	int r = -1;
	for (int k = 0; k < 6; k++)
		if (!strcmp(url, routes[k]))
			r = k;
	if (r < 0)
		return false;
	a->route = routes[r];
	a->type = "application/json";
	char *t = NULL;
	if (r == 4) {
		t = strdup(files_doc);
	} else if (r == 5) {
		t = n->snap_transfers ? strdup(n->snap_transfers) : NULL;
	} else if (r == 3) {
		const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
		char *end = NULL;
		unsigned long long since = s ? strtoull(s, &end, 10) : 0;
		if (s && (!*s || *end))
			since = 0;               /* not a number: everything kept */
		t = traffic_text(&n->tr, since); /* one thread: the history as it is */
	} else {
		t = n->snap_api[r] ? strdup(n->snap_api[r]) : NULL;
		if (r == 1) /* someone watches the ring: walk it (nd_dash_walk) */
			n->dash_viewed_at = n->dash_pub_at;
	}
	a->owned = t;
	a->body = t;
	a->len = t ? strlen(t) : 0;
	return true;
}
