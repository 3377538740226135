/* member.c — the membership core's driver in the node (src/member/member.h).
 *
 * Messages go as WIRE_MEMBER frames (proto/member.proto) over the peer connections the
 * ring uses, so the cluster key covers them when one is set; a frame that cannot be
 * delivered is dropped (to the core that is a missed ACK). Members are address-book
 * handles: the core's table has MAX_PEERS entries, and a handle the book evicts is
 * dropped from it first. The core's verdicts are queued while it runs and handled once it
 * returns: a member dead or gone leaves the ring's successor list, predecessor and
 * fingers at once (ring_forget). Members are seeded from the join candidates and, every
 * tick, from the ring's successors and predecessor.
 *
 * The list the HTTP layer serves (GET /members, nd_member_list) is a JSON snapshot made
 * on the loop thread with the node's other snapshots. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "../member/member.h"
#include "member.pb-c.h"
#include "node_internal.h"

#define MEMBER_TICK_MS 50
/* The node's failure detector (bench/member_node.py, docs/benchmarks.md): a suspicion
 * starts at 4 x 1 s x max(2, log10 N) and falls to 1 s x that once another member
 * confirms it (Lifeguard). On 20 real nodes a kill -9 is known everywhere in 3.6 s
 * (5.6 s with the former 2 s and no Lifeguard), and a node stalled 3 s (SIGSTOP, a host
 * starved of CPU) is not declared dead (4 s before). */
#define NODE_SUSPICION_MS 1000
#define NODE_LIFEGUARD    4 /* Lifeguard's multiple (1: off) */
#define NODE_CONFIRM      1
#define KV_FEED_MS                                                                                 \
	1000 /* the kv core's member table is refreshed this often, and at                         \
	      * once after a verdict */

typedef struct {
	member_addr a;
	uint8_t to;
} verdict;

struct nd_member {
	node *n;
	member_config cfg;
	member_node *core;
	uv_timer_t timer;
	bool busy;
	verdict *q;
	size_t nq, capq;
	rn_id *ids; /* MAX_PEERS: the ring id of each handle, when known */
	uint8_t *has_id;
	uint64_t frames_bad;
	char *snap;      /* the /members JSON */
	uint64_t fed_at; /* the kv core's member table was last given then */
	bool kv_dirty;   /* a verdict since */
};

static const char *const type_names[] = {"", "ping", "ack", "ping_req", "gossip", "push", "pull"};

static uint64_t now_ms(node *n)
{
	return uv_now(&n->loop);
}

/* ---- the core's calls ---- */

static void learn_id(struct nd_member *m, ring_addr a, const ProtobufCBinaryData *id)
{
	if (a < MAX_PEERS && id->len == RN_ID_BYTES) {
		memcpy(m->ids[a].b, id->data, RN_ID_BYTES);
		m->has_id[a] = 1;
	}
}

static void on_send(void *ctx, const member_msg *mm)
{
	struct nd_member *m = ctx;
	node *n = m->n;
	const char *target = mm->target != MEMBER_ADDR_NONE ? nd_book_name(n, mm->target) : NULL;
	Ringnet__MemberMsg w;
	ringnet__member_msg__init(&w);
	w.type = mm->type;
	w.from = n->peers[0].addr;
	w.from_id.data = (uint8_t *)(uintptr_t)ring_self_id(n->ring)->b;
	w.from_id.len = RN_ID_BYTES;
	w.seq = mm->seq;
	w.target = (char *)(uintptr_t)(target ? target : "");
	Ringnet__MemberUpdate *ul = malloc((mm->nupdates + 1) * sizeof *ul);
	Ringnet__MemberUpdate **up = malloc((mm->nupdates + 1) * sizeof *up);
	if (!ul || !up)
		goto out;
	size_t k = 0;
	for (size_t i = 0; i < mm->nupdates; i++) {
		const member_update *u = &mm->updates[i];
		const char *name = nd_book_name(n, u->addr);
		if (!name)
			continue;
		ringnet__member_update__init(&ul[k]);
		ul[k].addr = (char *)(uintptr_t)name;
		if (u->addr == 0) {
			ul[k].id.data = (uint8_t *)(uintptr_t)ring_self_id(n->ring)->b;
			ul[k].id.len = RN_ID_BYTES;
		} else if (m->has_id[u->addr]) {
			ul[k].id.data = m->ids[u->addr].b;
			ul[k].id.len = RN_ID_BYTES;
		}
		ul[k].inc = u->inc;
		ul[k].state = u->state;
		const char *by = u->has_by ? nd_book_name(n, u->by) : NULL;
		if (by)
			ul[k].by = (char *)(uintptr_t)by;
		up[k] = &ul[k];
		k++;
	}
	w.n_updates = k;
	w.updates = up;
	size_t body = ringnet__member_msg__get_packed_size(&w);
	if (body + 1 > WIRE_MAX_FRAME)
		goto out;
	pending *f = calloc(1, sizeof *f);
	uint8_t *buf = wire_frame_alloc(body, WIRE_MEMBER);
	if (!f || !buf) {
		free(f);
		free(buf);
		goto out;
	}
	ringnet__member_msg__pack(&w, buf + WIRE_HEADER);
	f->buf = buf;
	f->len = WIRE_HEADER + body;
	f->kind = FRAME_MEMBER;
	nd_send_frame(n, mm->to, f);
out:
	free(ul);
	free(up);
}

static void on_changed(void *ctx, member_addr a, member_state from, member_state to, uint32_t inc)
{
	struct nd_member *m = ctx;
	(void)inc;
	if (from == MEMBER_NONE && to == MEMBER_ALIVE)
		return; /* learned, not news */
	if (rn_grow((void **)&m->q, &m->capq, m->nq + 1, sizeof *m->q, 16) == 0)
		m->q[m->nq++] = (verdict){a, (uint8_t)to};
}

/* After every call into the core: what it decided, handed to the ring and the log. */
static void settle(struct nd_member *m)
{
	node *n = m->n;
	m->busy = false;
	for (size_t i = 0; i < m->nq; i++) {
		verdict v = m->q[i];
		const char *who = nd_book_name(n, v.a);
		uint32_t inc = 0;
		member_get(m->core, v.a, &inc, NULL);
		if (v.to == MEMBER_DEAD || v.to == MEMBER_LEFT) {
			LOG_I(n, "member %s is %s (incarnation %u): it leaves the ring's tables",
			      who ? who : "?", member_state_name((member_state)v.to), inc);
			ring_out_reset(&n->out);
			ring_forget(n->ring, now_ms(n), v.a, &n->out);
			nd_drain(n);
		} else {
			LOG_I(n, "member %s is %s (incarnation %u)", who ? who : "?",
			      member_state_name((member_state)v.to), inc);
		}
	}
	m->kv_dirty |= m->nq > 0;
	m->nq = 0;
}

/* The kv core's member table (one-hop routing): every member taken for alive or suspect
 * whose ring id is known, with its handle as the address the kv core sends to. */
static void feed_kv(struct nd_member *m, uint64_t now)
{
	node *n = m->n;
	if (!n->kv || n->kv_busy || (!m->kv_dirty && now - m->fed_at < KV_FEED_MS))
		return;
	ring_peer *l = malloc(MAX_PEERS * sizeof *l);
	if (!l)
		return; /* the next tick tries again; routing corrects itself meanwhile */
	size_t k = 0;
	for (ring_addr a = 1; a < n->npeers && a < MAX_PEERS; a++) {
		member_state st = member_get(m->core, a, NULL, NULL);
		if ((st == MEMBER_ALIVE || st == MEMBER_SUSPECT) && m->has_id[a])
			l[k++] = (ring_peer){m->ids[a], a};
	}
	kv_set_members(n->kv, now, l, k);
	free(l);
	m->fed_at = now;
	m->kv_dirty = false;
}

static void on_timer(uv_timer_t *t);

static void rearm(struct nd_member *m)
{
	uint64_t w = member_wake_at(m->core), now = now_ms(m->n);
	uint64_t in = w > now ? w - now : 0;
	if (in > MEMBER_TICK_MS)
		in = MEMBER_TICK_MS; /* the ring's peers are added on each tick too */
	uv_timer_start(&m->timer, on_timer, in, 0);
}

static void after(struct nd_member *m)
{
	settle(m);
	rearm(m);
}

static void seed_ring_peers(struct nd_member *m, uint64_t now)
{
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(m->n->ring, succ, RING_MAX_SUCC);
	for (size_t i = 0; i < ns; i++)
		if (succ[i].addr < MAX_PEERS) {
			if (member_get(m->core, succ[i].addr, NULL, NULL) == MEMBER_NONE)
				member_add(m->core, now, succ[i].addr);
			m->ids[succ[i].addr] = succ[i].id;
			m->has_id[succ[i].addr] = 1;
		}
	ring_peer p = ring_predecessor(m->n->ring);
	if (p.addr < MAX_PEERS && member_get(m->core, p.addr, NULL, NULL) == MEMBER_NONE)
		member_add(m->core, now, p.addr);
}

static void on_timer(uv_timer_t *t)
{
	struct nd_member *m = t->data;
	if (m->n->stopping)
		return;
	uint64_t now = now_ms(m->n);
	m->busy = true;
	seed_ring_peers(m, now);
	member_tick(m->core, now);
	after(m);
	feed_kv(m, now);
}

/* ---- the node's calls ---- */

int nd_member_start(node *n)
{
	struct nd_member *m = calloc(1, sizeof *m);
	if (!m)
		return RN_ENOMEM;
	m->n = n;
	m->ids = calloc(MAX_PEERS, sizeof *m->ids);
	m->has_id = calloc(MAX_PEERS, 1);
	member_config_default(&m->cfg, MAX_PEERS);
	/* real nodes get 2.5 times the simulator's shortest suspicion timeout (2 s below 100
	 * members) and the same Lifeguard: a node starved of CPU (a loaded host, a sanitizer
	 * build) answers late, and a false death here costs the ring a repair */
	m->cfg.suspicion_ms = n->o->suspicion_ms ? n->o->suspicion_ms : NODE_SUSPICION_MS;
	m->cfg.suspicion_max_mult = n->o->lifeguard ? n->o->lifeguard : NODE_LIFEGUARD;
	m->cfg.suspicion_confirm = n->o->confirm ? n->o->confirm : NODE_CONFIRM;
	if (n->o->eager_gossip_set)
		m->cfg.eager_per_s = n->o->eager_gossip;
	if (n->o->suspect_probes_set)
		m->cfg.suspect_probes = n->o->suspect_probes;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	/* a restarted process starts above its last incarnation: seconds since 2024 */
	uint32_t inc = ts.tv_sec > 1704067200 ? (uint32_t)(ts.tv_sec - 1704067200) : 1;
	uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
	member_driver d = {on_send, on_changed, m};
	if (m->ids && m->has_id)
		m->core = member_new(&m->cfg, &d, 0, inc, seed, now_ms(n));
	if (!m->core) {
		free(m->ids);
		free(m->has_id);
		free(m);
		return RN_ENOMEM;
	}
	uv_timer_init(&n->loop, &m->timer);
	m->timer.data = m;
	n->mem = m;
	for (unsigned i = 0; i < n->ncandidates; i++) {
		ring_addr a = nd_book_intern(n, n->candidates[i].addr);
		if (a != RING_ADDR_NONE && a != 0)
			member_seed(m->core, now_ms(n), a);
	}
	after(m);
	return 0;
}

void nd_member_stop(node *n)
{
	struct nd_member *m = n->mem;
	if (!m)
		return;
	member_free(m->core);
	free(m->q);
	free(m->ids);
	free(m->has_id);
	free(m->snap);
	free(m);
	n->mem = NULL;
}

void nd_member_leave(node *n)
{
	struct nd_member *m = n->mem;
	if (!m)
		return;
	uv_timer_stop(&m->timer);
	member_leave(m->core, now_ms(n), 8);
	settle(m);
}

void nd_member_forget(node *n, ring_addr a)
{
	if (n->mem && a < MAX_PEERS) {
		member_drop(n->mem->core, a);
		n->mem->has_id[a] = 0;
	}
}

static ring_addr intern_name(node *n, const char *s)
{
	if (!s || !s[0] || strlen(s) >= WIRE_ADDR_MAX)
		return RING_ADDR_NONE;
	return nd_book_intern(n, s);
}

bool nd_member_on_frame(node *n, const uint8_t *body, size_t len,
                        bool (*sender_ok)(void *conn, ring_addr from), void *conn)
{
	struct nd_member *m = n->mem;
	if (!m)
		return true;
	Ringnet__MemberMsg *w = ringnet__member_msg__unpack(NULL, len, body);
	if (!w)
		return false;
	bool ok = false;
	member_update *u = NULL;
	if (w->type < MEMBER_MSG_PING || w->type > MEMBER_MSG_PULL || w->n_updates > MAX_PEERS)
		goto out;
	member_msg mm = {
	    .type = (uint8_t)w->type, .to = 0, .seq = w->seq, .target = MEMBER_ADDR_NONE};
	mm.from = intern_name(n, w->from);
	if (mm.from == RING_ADDR_NONE || mm.from == 0 || !sender_ok(conn, mm.from))
		goto out;
	learn_id(m, mm.from, &w->from_id);
	if (w->target && w->target[0]) {
		mm.target = intern_name(n, w->target);
		if (mm.target == RING_ADDR_NONE)
			goto out;
	}
	u = malloc((w->n_updates + 1) * sizeof *u);
	if (!u)
		goto out;
	size_t k = 0;
	for (size_t i = 0; i < w->n_updates; i++) {
		const Ringnet__MemberUpdate *x = w->updates[i];
		if (x->state < MEMBER_ALIVE || x->state > MEMBER_LEFT)
			goto out;
		ring_addr a = intern_name(n, x->addr);
		if (a == RING_ADDR_NONE)
			continue; /* the book is full: not learned (counted by the book) */
		if (a != 0)
			learn_id(m, a, &x->id);
		u[k] = (member_update){a, x->inc, (uint8_t)x->state, false, MEMBER_ADDR_NONE};
		if (x->by && x->by[0] && x->state == MEMBER_SUSPECT) {
			ring_addr by = intern_name(n, x->by);
			u[k].has_by = by != RING_ADDR_NONE;
			u[k].by = by;
		}
		k++;
	}
	mm.updates = u;
	mm.nupdates = k;
	n->frames_in++;
	if (m->busy) { /* cannot happen: the core sends nothing that comes back at once */
		ok = true;
		goto out;
	}
	m->busy = true;
	member_on_msg(m->core, now_ms(n), &mm);
	after(m);
	ok = true;
out:
	free(u);
	ringnet__member_msg__free_unpacked(w, NULL);
	if (!ok)
		m->frames_bad++;
	return ok;
}

/* ---- what the HTTP routes read ---- */

static char *list_json(struct nd_member *m)
{
	node *n = m->n;
	uint64_t now = now_ms(n);
	json_t *a = json_array();
	for (ring_addr i = 0; i < n->npeers && i < MAX_PEERS; i++) {
		uint32_t inc;
		uint64_t since;
		member_state s = member_get(m->core, i, &inc, &since);
		const char *name = nd_book_name(n, i);
		if (s == MEMBER_NONE || !name)
			continue;
		char hex[RN_ID_HEX] = "";
		if (i == 0)
			rn_id_to_hex(ring_self_id(n->ring), hex);
		else if (m->has_id[i])
			rn_id_to_hex(&m->ids[i], hex);
		json_array_append_new(
		    a, json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "id", hex, "addr", name, "state",
		                 member_state_name(s), "incarnation", (json_int_t)inc, "since_ms",
		                 (json_int_t)(now > since ? now - since : 0), "self", i == 0));
	}
	json_t *doc = json_pack("{s:s, s:o}", "self", n->peers[0].addr, "members", a);
	char *t = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return t;
}

void nd_member_publish(node *n)
{
	struct nd_member *m = n->mem;
	if (!m)
		return;
	char *s = list_json(m);
	free(m->snap);
	m->snap = s;
}

const char *nd_member_state(node *n, ring_addr a)
{
	struct nd_member *m = n->mem;
	if (!m || !m->core)
		return NULL;
	uint32_t inc;
	uint64_t since;
	member_state st = member_get(m->core, a, &inc, &since);
	return st == MEMBER_NONE ? NULL : member_state_name(st);
}

char *nd_member_list(node *n)
{
	char *s = n->mem && n->mem->snap ? strdup(n->mem->snap) : NULL;
	return s;
}

char *nd_member_metrics(node *n)
{
	struct nd_member *m = n->mem;
	if (!m)
		return NULL;
	const member_stats *st = member_get_stats(m->core);
	size_t cap = 8192, len = 0;
	char *b = malloc(cap);
	if (!b)
		return NULL;
#define P(...) len += (size_t)snprintf(b + len, len < cap ? cap - len : 0, __VA_ARGS__)
	P("# HELP ringnet_member_members Members this node knows, by the state it takes them "
	  "in (itself included).\n# TYPE ringnet_member_members gauge\n");
	for (int s = MEMBER_ALIVE; s <= MEMBER_LEFT; s++)
		P("ringnet_member_members{state=\"%s\"} %u\n", member_state_name((member_state)s),
		  member_count(m->core, (member_state)s));
	P("# HELP ringnet_member_messages_total Membership messages by direction and type.\n"
	  "# TYPE ringnet_member_messages_total counter\n");
	for (int t = MEMBER_MSG_PING; t <= MEMBER_MSG_PULL; t++) {
		P("ringnet_member_messages_total{dir=\"in\",type=\"%s\"} %llu\n", type_names[t],
		  (unsigned long long)st->received[t]);
		P("ringnet_member_messages_total{dir=\"out\",type=\"%s\"} %llu\n", type_names[t],
		  (unsigned long long)st->sent[t]);
	}
#define C(name, help, v)                                                                           \
	P("# HELP ringnet_member_" name " " help "\n# TYPE ringnet_member_" name " counter\n"      \
	  "ringnet_member_" name " %llu\n",                                                        \
	  (unsigned long long)(v))
	C("updates_total", "Membership updates sent on messages (gossip and tables).",
	  st->updates_sent);
	C("probes_total", "Probes (direct pings) this node started.", st->probes);
	C("probes_indirect_total", "Probes not answered in time and retried through others.",
	  st->probes_indirect);
	C("probes_failed_total", "Probes no one answered: the member became suspect.",
	  st->probes_failed);
	C("declared_dead_total", "Suspects this node declared dead when their timeout ran out.",
	  st->declared_dead);
	C("refuted_total", "Suspicion or death notices about this node it refuted.", st->refuted);
	C("confirmations_total",
	  "Distinct members heard to confirm a suspicion this node holds (Lifeguard).",
	  st->confirmations);
	C("probes_out_of_turn_total", "Probes of a member just heard to be suspect.",
	  st->probes_out_of_turn);
	C("eager_rounds_total", "Gossip rounds sent at once for a death or a refutation.",
	  st->eager_rounds);
	C("refused_total", "Members not learned because the table was full.", st->refused);
	C("malformed_total",
	  "Membership messages or updates dropped for a field out of range (frames too).",
	  st->malformed + m->frames_bad);
	C("relays_refused_total", "Indirect probe requests refused (too many at once).",
	  st->relays_refused);
	C("pulls_refused_total", "Table pushes not answered (over the per-second bound).",
	  st->pulls_refused);
#undef C
	P("# HELP ringnet_member_incarnation This node's incarnation number.\n"
	  "# TYPE ringnet_member_incarnation gauge\nringnet_member_incarnation %u\n",
	  member_incarnation(m->core));
	P("# HELP ringnet_member_suspicion_timeout_seconds How long a suspect has to refute.\n"
	  "# TYPE ringnet_member_suspicion_timeout_seconds gauge\n"
	  "ringnet_member_suspicion_timeout_seconds %.3f\n",
	  (double)member_suspicion_timeout(m->core) / 1000.0);
#undef P
	if (len >= cap) {
		free(b);
		return NULL;
	}
	return b;
}

size_t nd_kv_route_metrics(node *n, char *b, size_t cap)
{
	if (!n->kv)
		return 0;
	const kv_stats *s = kv_get_stats(n->kv);
	int k = snprintf(
	    b, cap,
	    "# HELP ringnet_kv_route_total Client requests by how their first destination was "
	    "chosen (local: this node's range; successors: its successor list; onehop: the "
	    "member table; cache: the owner cache; lookup: a ring lookup), and MOVED answers "
	    "(moved) and the hints followed after them (hint).\n"
	    "# TYPE ringnet_kv_route_total counter\n"
	    "ringnet_kv_route_total{how=\"local\"} %llu\n"
	    "ringnet_kv_route_total{how=\"successors\"} %llu\n"
	    "ringnet_kv_route_total{how=\"onehop\"} %llu\n"
	    "ringnet_kv_route_total{how=\"cache\"} %llu\n"
	    "ringnet_kv_route_total{how=\"lookup\"} %llu\n"
	    "ringnet_kv_route_total{how=\"moved\"} %llu\n"
	    "ringnet_kv_route_total{how=\"hint\"} %llu\n"
	    "# HELP ringnet_kv_route_stale_total Requests whose first destination (another "
	    "node) was not responsible or did not answer.\n"
	    "# TYPE ringnet_kv_route_stale_total counter\nringnet_kv_route_stale_total %llu\n"
	    "# HELP ringnet_kv_route_remote_total Requests first sent to another node.\n"
	    "# TYPE ringnet_kv_route_remote_total counter\nringnet_kv_route_remote_total %llu\n"
	    "# HELP ringnet_kv_route_lookups_total Ring lookups for client requests (first "
	    "route, after MOVED, fallbacks).\n"
	    "# TYPE ringnet_kv_route_lookups_total counter\nringnet_kv_route_lookups_total "
	    "%llu\n"
	    "# HELP ringnet_kv_members Members in the kv core's routing table (itself "
	    "included).\n# TYPE ringnet_kv_members gauge\nringnet_kv_members %llu\n",
	    (unsigned long long)s->route_local, (unsigned long long)s->route_succ,
	    (unsigned long long)s->route_onehop, (unsigned long long)s->route_cache,
	    (unsigned long long)s->route_lookup, (unsigned long long)s->moved,
	    (unsigned long long)s->route_hints, (unsigned long long)s->route_stale,
	    (unsigned long long)s->route_first, (unsigned long long)s->entry_lookups,
	    (unsigned long long)s->members_up);
	return k < 0 ? 0 : (size_t)k;
}
