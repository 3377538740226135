/* kvsim.c — see kvsim.h. The network (events, views, the driver of the cores) first, then
 * the experiment (workload, churn, the final check against what was acknowledged). */
#include "kvsim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "../lib/grow.h"

enum {
	EV_MSG = 1,
	EV_LOOKUP,
	EV_UNREACH,
	EV_VIEW,
	EV_TICK,
	EV_RING,
	EV_RING_BACK,
	EV_RING_TICK,
	EV_MEMBER
};

typedef struct kvs_event {
	uint64_t at, seq;
	uint8_t kind;
	uint32_t from, to;
	uint64_t req;
	rn_id key;
	kv_msg m;
	ring_msg rm; /* EV_RING, EV_RING_BACK: its peers live in blob */
	uint8_t *blob;
	/* EV_MEMBER: node `from` went up or down (change number seq_of) at `base`; blob holds
	 * the nodes that learn of it, by when, in order (member_news); next is the next one */
	uint64_t base;
	uint32_t seq_of, nnews, next;
	bool up;
} kvs_event;

typedef struct {
	uint32_t delay, node;
} member_news;

/* ---- event heap ---- */

static bool ev_before(const kvs_event *a, const kvs_event *b)
{
	return a->at != b->at ? a->at < b->at : a->seq < b->seq;
}

static void heap_push(kvs_net *t, kvs_event e)
{
	if (rn_grow((void **)&t->heap, &t->caph, t->nh + 1, sizeof *t->heap, 1024) < 0) {
		free(e.blob); /* out of memory: the message is lost, as on a real network */
		return;
	}
	e.seq = t->seq++;
	size_t i = t->nh++;
	while (i && ev_before(&e, &t->heap[(i - 1) / 2])) {
		t->heap[i] = t->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	t->heap[i] = e;
}

static kvs_event heap_pop(kvs_net *t)
{
	kvs_event top = t->heap[0], last = t->heap[--t->nh];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= t->nh)
			break;
		if (c + 1 < t->nh && ev_before(&t->heap[c + 1], &t->heap[c]))
			c++;
		if (!ev_before(&t->heap[c], &last))
			break;
		t->heap[i] = t->heap[c];
		i = c;
	}
	if (t->nh)
		t->heap[i] = last;
	return top;
}

/* ---- membership: in-ring nodes sorted by id ---- */

static uint32_t lower_index(const kvs_net *t, const rn_id *pos)
{
	uint32_t lo = 0, hi = t->nlive;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (rn_id_cmp(&t->n[t->live[mid]]->id, pos) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == t->nlive ? 0 : lo;
}

uint32_t kvs_replicas(const kvs_net *t, const rn_id *kid, uint32_t *out)
{
	if (!t->nlive)
		return 0;
	rn_id pos = *kid;
	rn_id_truncate(&pos, t->p.kv.bits);
	uint32_t s = lower_index(t, &pos), r = 0;
	for (uint32_t k = 0; k < t->nlive && r < t->p.kv.replicas; k++)
		out[r++] = t->live[(s + k) % t->nlive];
	return r;
}

uint32_t kvs_random_live(kvs_net *t)
{
	return t->live[rn_rng_below(&t->rng, t->nlive)];
}

static void schedule(kvs_net *t, uint32_t i);

/* The view the true membership gives node i now. */
static void set_view_now(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	x->view_due = UINT64_MAX;
	if (!x->alive || !x->in_ring || t->p.real_ring)
		return;
	uint32_t k = lower_index(t, &x->id), n = t->nlive;
	ring_peer pred = {t->n[t->live[(k + n - 1) % n]]->id, t->live[(k + n - 1) % n]};
	ring_peer succ[KVS_NSUCC];
	size_t ns = 0;
	for (uint32_t j = 1; j <= KVS_NSUCC && j < n; j++) {
		uint32_t s = t->live[(k + j) % n];
		succ[ns++] = (ring_peer){t->n[s]->id, s};
	}
	if (n == 1)
		pred.addr = RING_ADDR_NONE;
	kv_set_view(x->kv, t->now, true, pred, succ, ns);
	schedule(t, i);
}

/* Membership changed at sorted position k: the nodes whose view depends on it (the
 * KVS_NSUCC before it and the one after) learn of it after their detection delay. */
static void views_changed(kvs_net *t, uint32_t k)
{
	uint32_t n = t->nlive;
	if (!n || t->p.real_ring) /* the ring cores find out by themselves */
		return;
	for (uint32_t d = 0; d <= KVS_NSUCC + 2; d++) {
		uint32_t i = t->live[(k + n - KVS_NSUCC - 1 + d) % n];
		uint32_t span = t->p.detect_max_ms - t->p.detect_min_ms;
		uint64_t delay = t->p.detect_min_ms + (span ? rn_rng_below(&t->rng, span + 1) : 0);
		if (!delay) {
			set_view_now(t, i);
			continue;
		}
		if (t->n[i]->view_due <= t->now + delay)
			continue; /* a refresh is coming anyway: it reads the membership then */
		t->n[i]->view_due = t->now + delay;
		kvs_event e = {.kind = EV_VIEW, .to = i, .at = t->now + delay};
		heap_push(t, e);
	}
}

/* ---- members: tables fed by a model of membership dissemination ---- */

static int news_cmp(const void *a, const void *b)
{
	const member_news *x = a, *y = b;
	return x->delay < y->delay ? -1 : x->delay > y->delay;
}

static void member_apply(kvs_net *t, uint32_t to, uint32_t subj, bool up)
{
	kvs_node *x = t->n[to];
	if (!x->alive || to == subj)
		return;
	if (up)
		kv_member_up(x->kv, t->now, (ring_peer){t->n[subj]->id, subj});
	else
		kv_member_down(x->kv, t->now, &t->n[subj]->id);
	t->member_events++;
	schedule(t, to);
}

/* Node i went up or down: every other live node learns of it after its own delay. */
static void members_changed(kvs_net *t, uint32_t i, bool up)
{
	t->n[i]->member_seq++;
	if (!t->p.members || t->members_quiet || !t->nlive)
		return;
	uint32_t lo = up ? t->p.join_known_min_ms : t->p.crash_known_min_ms;
	uint32_t hi = up ? t->p.join_known_max_ms : t->p.crash_known_max_ms;
	member_news *nw = malloc(t->nlive * sizeof *nw);
	if (!nw)
		return; /* as news that never came: routing corrects itself */
	uint32_t n = 0;
	for (uint32_t k = 0; k < t->nlive; k++)
		if (t->live[k] != i)
			nw[n++] = (member_news){
			    lo + (hi > lo ? (uint32_t)rn_rng_below(&t->rng, hi - lo + 1) : 0),
			    t->live[k]};
	qsort(nw, n, sizeof *nw, news_cmp);
	if (!n) {
		free(nw);
		return;
	}
	kvs_event e = {.kind = EV_MEMBER, .from = i, .to = i, .base = t->now, .up = up};
	e.seq_of = t->n[i]->member_seq;
	e.nnews = n;
	e.blob = (uint8_t *)nw;
	e.at = t->now + nw[0].delay;
	heap_push(t, e);
}

/* One node learns of the change; the event goes back in the heap for the next one.
 * News overtaken by a newer change of the same node is dropped. */
static void member_deliver(kvs_net *t, kvs_event *e)
{
	const member_news *nw = (const member_news *)e->blob;
	if (e->seq_of != t->n[e->from]->member_seq)
		return;
	member_apply(t, nw[e->next].node, e->from, e->up);
	if (++e->next >= e->nnews)
		return;
	kvs_event next = *e;
	next.at = e->base + nw[e->next].delay;
	e->blob = NULL; /* the next one owns it */
	heap_push(t, next);
}

/* Node i's whole table: the live membership now. */
static void members_all(kvs_net *t, uint32_t i)
{
	if (!t->p.members || !t->n[i]->alive)
		return;
	ring_peer *l = malloc((t->nlive + 1) * sizeof *l);
	if (!l)
		return;
	for (uint32_t k = 0; k < t->nlive; k++)
		l[k] = (ring_peer){t->n[t->live[k]]->id, t->live[k]};
	kv_set_members(t->n[i]->kv, t->now, l, t->nlive);
	free(l);
	t->member_events++;
}

void kvs_members_bootstrap(kvs_net *t)
{
	for (uint32_t k = 0; k < t->nlive; k++)
		members_all(t, t->live[k]);
}

static void live_insert(kvs_net *t, uint32_t i)
{
	uint32_t lo = 0, hi = t->nlive;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (rn_id_cmp(&t->n[t->live[mid]]->id, &t->n[i]->id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(&t->live[lo + 1], &t->live[lo], (t->nlive - lo) * sizeof *t->live);
	t->live[lo] = i;
	t->nlive++;
	t->n[i]->in_ring = true;
	views_changed(t, lo);
}

static void live_remove(kvs_net *t, uint32_t i)
{
	for (uint32_t k = 0; k < t->nlive; k++)
		if (t->live[k] == i) {
			memmove(&t->live[k], &t->live[k + 1], (t->nlive - k - 1) * sizeof *t->live);
			t->nlive--;
			t->n[i]->in_ring = false;
			views_changed(t, t->nlive ? k % t->nlive : 0);
			return;
		}
}

/* ---- the driver of the cores ---- */

static memstore *st_of(void *ctx)
{
	return ((kvs_node *)ctx)->st;
}

static int d_get(void *ctx, const rn_id *kid, kv_record *out)
{
	return memstore_get(st_of(ctx), kid, out);
}

static int d_put(void *ctx, const kv_record *r)
{
	return memstore_put(st_of(ctx), r);
}

static int d_del(void *ctx, const rn_id *kid)
{
	return memstore_del(st_of(ctx), kid);
}

static int d_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
                  int (*fn)(void *, const kv_record *), void *arg)
{
	return memstore_scan(st_of(ctx), lo, hi, values, fn, arg);
}

static uint64_t d_count(void *ctx)
{
	return memstore_count(st_of(ctx));
}

/* A deep copy of m: its arrays and bytes in one blob, as a wire would carry them. */
static uint8_t *copy_msg(const kv_msg *m, kv_msg *out, size_t *bytes)
{
	size_t n = m->rec.klen + m->rec.vlen + m->rec.ridlen + m->rec.histlen +
	           (m->hashes ? KV_BUCKETS * 8 : 0) + m->nbuckets + m->nentries * sizeof(kv_entry) +
	           m->nkids * sizeof(rn_id) + m->nacked * sizeof(ring_peer) + 64;
	uint8_t *b = malloc(n), *p = b;
	if (!b)
		return NULL;
	*out = *m;
	*bytes = n + 48;
#define COPY(field, len)                                                                           \
	do {                                                                                       \
		p = (uint8_t *)(((uintptr_t)p + 7) & ~(uintptr_t)7);                               \
		if (m->field && (len) != 0) {                                                      \
			memcpy(p, m->field, (len));                                                \
			out->field = (void *)p;                                                    \
			p += (len);                                                                \
		}                                                                                  \
	} while (0)
	COPY(hashes, KV_BUCKETS * 8);
	COPY(entries, m->nentries * sizeof(kv_entry));
	COPY(kids, m->nkids * sizeof(rn_id));
	COPY(acked, m->nacked * sizeof(ring_peer));
	COPY(rec.key, m->rec.klen);
	COPY(rec.val, m->rec.vlen);
	COPY(rec.rid, m->rec.ridlen);
	COPY(rec.hist, m->rec.histlen);
	COPY(buckets, m->nbuckets);
#undef COPY
	return b;
}

static kvs_net *net_of(void *ctx)
{
	return ((kvs_node *)ctx)->t;
}

static uint32_t index_of(void *ctx)
{
	return ((kvs_node *)ctx)->i;
}

/* After any call into node i: make sure a tick is due when it wants one. */
static void schedule(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	if (!x->alive)
		return;
	uint64_t w = kv_wake_at(x->kv);
	if (w >= x->tick_due || w == UINT64_MAX)
		return;
	x->tick_due = w < t->now ? t->now : w;
	kvs_event e = {.kind = EV_TICK, .to = i, .at = x->tick_due};
	heap_push(t, e);
}

static void d_send(void *ctx, const kv_msg *m)
{
	kvs_net *t = net_of(ctx);
	if (m->to >= t->count)
		return;
	if (t->p.on_send)
		t->p.on_send(t->p.arg, index_of(ctx), m);
	if (t->p.drop && t->p.drop(t->p.arg, index_of(ctx), m))
		return;
	kvs_event e = {.kind = EV_MSG, .from = index_of(ctx), .to = m->to};
	uint32_t span = t->p.latency_max_ms - t->p.latency_min_ms;
	e.at = t->now + t->p.latency_min_ms + (span ? rn_rng_below(&t->rng, span + 1) : 0);
	size_t bytes = 0;
	e.blob = copy_msg(m, &e.m, &bytes);
	if (!e.blob)
		return;
	t->messages++;
	t->msg_bytes += bytes;
	heap_push(t, e);
}

static void d_lookup(void *ctx, const rn_id *kid, uint64_t req)
{
	kvs_net *t = net_of(ctx);
	kvs_event e = {.kind = EV_LOOKUP, .from = index_of(ctx), .req = req, .key = *kid};
	/* modelled: a lookup takes a few hops; real_ring: the ring core takes them, after the
	 * kv core has returned */
	e.at = t->p.real_ring ? t->now : t->now + 2 * t->p.latency_max_ms;
	heap_push(t, e);
}

static void d_reply(void *ctx, uint64_t client, const kv_reply *r)
{
	kvs_net *t = net_of(ctx);
	if (t->p.on_reply)
		t->p.on_reply(t->p.arg, client, r);
}

/* ---- real_ring: the Chord core on every node, driven as src/net drives it ---- */

static uint32_t latency(kvs_net *t)
{
	uint32_t span = t->p.latency_max_ms - t->p.latency_min_ms;
	return t->p.latency_min_ms + (span ? rn_rng_below(&t->rng, span + 1) : 0);
}

/* The kv core's view from the ring core's state, as the node's kv_view does. */
static void ring_view(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(x->ring, succ, RING_MAX_SUCC);
	kv_set_view(x->kv, t->now, ring_joined(x->ring), ring_predecessor(x->ring), succ, ns);
}

static void ring_schedule(kvs_net *t, uint32_t i, uint64_t wake)
{
	kvs_node *x = t->n[i];
	if (wake == UINT64_MAX || !x->alive || wake >= x->ring_due)
		return;
	x->ring_due = wake < t->now ? t->now : wake;
	heap_push(t, (kvs_event){.kind = EV_RING_TICK, .to = i, .at = x->ring_due});
}

/* Sends what one call of node i's ring core put in t->out, and hands its events to the
 * kv core (outside any kv call: the cores are not re-entrant). */
static void ring_drain(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	ring_out *o = &t->out;
	for (size_t j = 0; j < o->nmsgs; j++) {
		const ring_msg *m = &o->msgs[j];
		if (m->to >= t->count)
			continue;
		kvs_event e = {.kind = EV_RING, .from = i, .to = m->to, .rm = *m};
		e.at = t->now + latency(t);
		if (m->npeers) {
			e.blob = malloc(m->npeers * sizeof *m->peers);
			if (!e.blob)
				continue; /* as a frame lost: the core's timers cover it */
			memcpy(e.blob, m->peers, m->npeers * sizeof *m->peers);
			e.rm.peers = (const ring_peer *)e.blob;
		}
		t->ring_messages++;
		heap_push(t, e);
	}
	bool view = false;
	for (size_t j = 0; j < o->nevents; j++) {
		const ring_event *ev = &o->events[j];
		if (ev->type == RING_EV_LOOKUP_DONE) {
			t->lookups_done++;
			t->lookup_hops += ev->hops;
			kv_on_lookup(x->kv, t->now, ev->req, ev->ok, ev->result);
		} else
			view = true;
	}
	uint64_t wake = o->wake_at;
	ring_out_reset(o);
	if (view)
		ring_view(t, i);
	ring_schedule(t, i, wake);
	schedule(t, i);
}

/* A new ring core for node i, joined through a random live node (or a ring of its own);
 * while t->booting, left alone for kvs_ring_bootstrap. */
static int ring_start(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	ring_node_free(x->ring);
	x->ring = ring_node_new(&t->p.ring, &x->id, i);
	if (!x->ring)
		return RN_ENOMEM;
	x->ring_due = UINT64_MAX;
	uint32_t boot = UINT32_MAX;
	for (int tries = 0; tries < 8 && t->nlive && boot == UINT32_MAX; tries++) {
		uint32_t b = t->live[rn_rng_below(&t->rng, t->nlive)];
		if (b != i && t->n[b]->alive && ring_joined(t->n[b]->ring))
			boot = b;
	}
	ring_out_reset(&t->out);
	if (t->booting)
		return 0;
	if (boot == UINT32_MAX)
		ring_create(x->ring, t->now, &t->out);
	else
		ring_join(x->ring, t->now, boot, &t->out);
	ring_drain(t, i);
	ring_view(t, i);
	return 0;
}

void kvs_ring_bootstrap(kvs_net *t)
{
	t->booting = false;
	uint32_t n = t->nlive;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = t->live[k];
		kvs_node *x = t->n[i];
		ring_peer succ[RING_MAX_SUCC];
		size_t ns = 0;
		for (uint32_t j = 1; j <= t->p.ring.successors && j < n; j++) {
			uint32_t s = t->live[(k + j) % n];
			succ[ns++] = (ring_peer){t->n[s]->id, s};
		}
		if (!ns)
			succ[ns++] = (ring_peer){x->id, i}; /* a ring of one */
		ring_set_successors(x->ring, succ, ns);
		uint32_t pi = t->live[(k + n - 1) % n];
		ring_peer pred = {t->n[pi]->id, pi};
		ring_set_predecessor(x->ring, &pred);
		for (unsigned f = 0; f < t->p.ring.bits;) {
			rn_id start;
			ring_finger_start(x->ring, f, &start);
			uint32_t s = t->live[lower_index(t, &start) % n];
			ring_peer fp = {t->n[s]->id, s};
			unsigned end = ring_finger_span(x->ring, f, &fp.id);
			if (end <= f)
				end = f + 1;
			ring_set_fingers(x->ring, f, end, &fp);
			f = end;
		}
		ring_view(t, i);
		ring_out_reset(&t->out);
		ring_tick(x->ring, t->now, &t->out);
		ring_drain(t, i);
	}
}

static void ring_deliver(kvs_net *t, kvs_event *e)
{
	kvs_node *to = t->n[e->to], *from = t->n[e->from];
	ring_out_reset(&t->out);
	if (e->kind == EV_RING_TICK) {
		if (!to->alive || to->ring_due != e->at)
			return;
		to->ring_due = UINT64_MAX;
		ring_tick(to->ring, t->now, &t->out);
		ring_drain(t, e->to);
		if (t->p.probe_ms && t->now - to->probe_at >= t->p.probe_ms) {
			/* any node it may have heard of, dead ones too, as the node's book */
			to->probe_at = t->now;
			ring_out_reset(&t->out);
			ring_probe(to->ring, t->now, (ring_addr)rn_rng_below(&t->rng, t->count),
			           &t->out);
			ring_drain(t, e->to);
		}
		ring_view(t, e->to); /* the successor list may have moved without an event */
	} else if (e->kind == EV_RING && to->alive) {
		ring_on_msg(to->ring, t->now, &e->rm, &t->out);
		ring_drain(t, e->to);
	} else if (e->kind == EV_RING && from->alive) {
		/* a connect to a dead node fails: the message comes back to its sender */
		kvs_event b = *e;
		b.kind = EV_RING_BACK;
		b.at = t->now + t->p.unreach_ms;
		e->blob = NULL; /* now b's */
		heap_push(t, b);
	} else if (e->kind == EV_RING_BACK && from->alive) {
		ring_on_unreachable(from->ring, t->now, &e->rm, &t->out);
		ring_drain(t, e->from);
	}
}

static int start_core(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	x->t = t;
	x->i = i;
	kv_driver d = {x, d_get, d_put, d_del, d_scan, d_count, d_send, d_lookup, d_reply};
	kv_config c = t->p.kv;
	if (i % 2) /* the odd nodes' clocks are off by odd_skew_ms */
		c.wall_offset_ms = (uint64_t)((int64_t)c.wall_offset_ms + t->p.odd_skew_ms);
	x->kv = kv_new(&c, &d, &x->id, i);
	if (!x->kv)
		return RN_ENOMEM;
	x->alive = true;
	x->view_due = UINT64_MAX;
	x->tick_due = UINT64_MAX;
	schedule(t, i);
	return t->p.real_ring ? ring_start(t, i) : 0;
}

kvs_net *kvs_new(const kvs_params *p)
{
	if (kv_config_check(&p->kv) < 0 || p->latency_min_ms > p->latency_max_ms ||
	    p->detect_min_ms > p->detect_max_ms ||
	    (p->real_ring && (ring_config_check(&p->ring) < 0 || p->ring.bits != p->kv.bits)))
		return NULL;
	kvs_net *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->p = *p;
	rn_rng_seed(&t->rng, p->seed);
	return t;
}

void kvs_free(kvs_net *t)
{
	if (!t)
		return;
	for (uint32_t i = 0; i < t->count; i++) {
		ring_node_free(t->n[i]->ring);
		kv_free(t->n[i]->kv);
		memstore_free(t->n[i]->st);
		free(t->n[i]);
	}
	for (size_t i = 0; i < t->nh; i++)
		free(t->heap[i].blob);
	free(t->heap);
	free(t->n);
	free(t->live);
	free(t);
}

uint32_t kvs_add(kvs_net *t, const rn_id *id)
{
	if (t->count == t->cap) {
		uint32_t cap = t->cap ? 2 * t->cap : 64;
		kvs_node **n = realloc(t->n, cap * sizeof *n);
		if (n)
			t->n = n;
		uint32_t *l = n ? realloc(t->live, cap * sizeof *l) : NULL;
		if (!l)
			return UINT32_MAX;
		t->live = l;
		t->cap = cap;
	}
	kvs_node *x = calloc(1, sizeof *x);
	if (!x)
		return UINT32_MAX;
	uint32_t i = t->count++;
	t->n[i] = x;
	if (id)
		x->id = *id;
	else
		rn_id_random(&x->id, &t->rng, t->p.kv.bits);
	x->st = memstore_new();
	if (!x->st || start_core(t, i) < 0)
		return UINT32_MAX;
	live_insert(t, i);
	members_all(t, i);
	members_changed(t, i, true);
	set_view_now(t, i); /* a node that joins knows its neighbours from its join */
	schedule(t, i);
	return i;
}

void kvs_kill(kvs_net *t, uint32_t i)
{
	if (!t->n[i]->alive)
		return;
	t->n[i]->alive = false;
	live_remove(t, i);
	members_changed(t, i, false);
}

void kvs_revive(kvs_net *t, uint32_t i)
{
	kv_free(t->n[i]->kv);
	start_core(t, i);
	if (!t->n[i]->in_ring)
		live_insert(t, i);
	members_all(t, i);
	members_changed(t, i, true);
	set_view_now(t, i);
	schedule(t, i);
}

void kvs_client(kvs_net *t, uint32_t entry, uint64_t client, const kv_request *r)
{
	kv_client(t->n[entry]->kv, t->now, client, r);
	schedule(t, entry);
}

static void deliver(kvs_net *t, kvs_event *e)
{
	kvs_node *to = t->n[e->to], *from = t->n[e->from];
	switch (e->kind) {
	case EV_MSG:
		if (to->alive) {
			kv_on_msg(to->kv, t->now, &e->m);
			schedule(t, e->to);
		} else if (from->alive && e->m.req) {
			/* a connect to a dead node fails: the sender hears of it */
			kvs_event u = {.kind = EV_UNREACH,
			               .from = e->from,
			               .to = e->to,
			               .req = e->m.req,
			               .at = t->now + t->p.latency_max_ms};
			heap_push(t, u);
		}
		break;
	case EV_RING:
	case EV_RING_BACK:
	case EV_RING_TICK:
		ring_deliver(t, e);
		break;
	case EV_LOOKUP:
		if (from->alive && t->p.real_ring) {
			ring_out_reset(&t->out);
			ring_lookup(from->ring, t->now, &e->key, e->req, &t->out);
			ring_drain(t, e->from);
		} else if (from->alive && t->nlive) {
			uint32_t s = t->live[lower_index(t, &e->key)];
			kv_on_lookup(from->kv, t->now, e->req, true, (ring_peer){t->n[s]->id, s});
			schedule(t, e->from);
		}
		break;
	case EV_UNREACH:
		if (from->alive) {
			kv_on_unreachable(from->kv, t->now, e->req, e->to);
			schedule(t, e->from);
		}
		break;
	case EV_VIEW:
		if (to->view_due == e->at) {
			set_view_now(t, e->to);
			schedule(t, e->to);
		}
		break;
	case EV_MEMBER:
		member_deliver(t, e);
		break;
	case EV_TICK:
		if (to->alive && to->tick_due == e->at) {
			to->tick_due = UINT64_MAX;
			kv_tick(to->kv, t->now);
			schedule(t, e->to);
		}
		break;
	}
}

void kvs_run(kvs_net *t, uint64_t until)
{
	while (t->nh && t->heap[0].at <= until) {
		kvs_event e = heap_pop(t);
		if (e.at > t->now)
			t->now = e.at;
		t->events++;
		deliver(t, &e);
		free(e.blob);
	}
	if (until > t->now)
		t->now = until;
}

/* ---- the experiment ---- */

/* What the clients were told about one key. */
typedef struct {
	rn_id kid;
	kv_version acked;           /* newest acknowledged write (stamp 0: none) */
	uint64_t crashes[KV_MAX_R]; /* when the last nodes holding its newest acknowledged
	                             * version crashed (a ring of R) */
	uint8_t ncrash;
	bool gone;      /* a crash took its last copy of the newest acknowledged version */
	bool explained; /* ... and W of its holders had crashed within one repair interval */
} key_state;

typedef struct {
	uint32_t key;
	uint8_t op;
	kv_version before; /* a read: the newest acknowledged version when it was issued */
} pending_op;

typedef struct {
	const kvsim_params *p;
	kvs_net *t;
	key_state *keys;   /* by key index */
	ring_peer *by_kid; /* (kid, key index) sorted by kid: ring_peers_sort's order */
	pending_op *ops;
	size_t nops, capops;
	kvsim_result *r;
	uint8_t *val;
} experiment;

static void key_name(char *out, size_t len, uint64_t i)
{
	snprintf(out, len, "key-%llu", (unsigned long long)i);
}

static long key_of_kid(const experiment *x, const rn_id *kid)
{
	size_t lo = 0, hi = x->p->keys;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = rn_id_cmp(&x->by_kid[mid].id, kid);
		if (!c)
			return x->by_kid[mid].addr;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static void on_reply(void *arg, uint64_t client, const kv_reply *rep)
{
	experiment *x = arg;
	if (client >= x->nops)
		return;
	pending_op *o = &x->ops[client];
	key_state *k = &x->keys[o->key];
	kvsim_result *r = x->r;
	if (o->op == KV_GET) {
		r->reads++;
		if (k->gone) {
			r->reads_of_lost++; /* its data is gone: no answer could be right */
		} else if (rep->status == KV_OK || rep->status == KV_NOT_FOUND) {
			r->reads_ok += rep->status == KV_OK;
			r->reads_not_found += rep->status == KV_NOT_FOUND;
			bool has = rep->has_rec;
			if (o->before.stamp &&
			    (!has || kv_version_cmp(&rep->rec.v, &o->before) < 0)) {
				r->reads_stale++;
				r->reads_false_404 += !has;
			}
		} else {
			r->reads_unsure++;
		}
		return;
	}
	r->writes++;
	if (rep->status == KV_OK) {
		r->writes_acked++;
		if (rep->has_rec && kv_version_cmp(&rep->rec.v, &k->acked) > 0)
			k->acked = rep->rec.v;
	} else if (rep->status == KV_UNKNOWN) {
		r->writes_unknown++;
	} else {
		r->writes_failed++;
	}
}

static int issue(experiment *x, uint32_t key, uint8_t op)
{
	if (rn_grow((void **)&x->ops, &x->capops, x->nops + 1, sizeof *x->ops, 1 << 16) < 0)
		return RN_ENOMEM;
	size_t id = x->nops++;
	x->ops[id] = (pending_op){key, op, x->keys[key].acked};
	char name[32];
	key_name(name, sizeof name, key);
	/* the value: the key's index and the op's, in value_bytes (at least 16) */
	size_t vlen = x->p->value_bytes;
	snprintf((char *)x->val, vlen + 1, "%08x%08x", key, (unsigned)id);
	kv_request q = {.op = (kv_op)op,
	                .key = (const uint8_t *)name,
	                .klen = strlen(name),
	                .val = x->val,
	                .vlen = vlen};
	kvs_client(x->t, kvs_random_live(x->t), id, &q);
	return 0;
}

static size_t record_bytes(const kv_record *r)
{
	return r->klen + r->vlen + 48; /* what a record costs on the wire, roughly */
}

typedef struct {
	uint64_t bytes;
} sum_ctx;

static int sum_one(void *arg, const kv_record *r)
{
	((sum_ctx *)arg)->bytes += record_bytes(r);
	return 0;
}

static uint64_t node_bytes(kvs_node *x)
{
	sum_ctx s = {0};
	rn_id z;
	memset(&z, 0, sizeof z);
	memstore_scan(x->st, &z, &z, true, sum_one, &s);
	return s.bytes;
}

static uint64_t mean_node_bytes(kvs_net *t)
{
	uint64_t b = 0;
	for (uint32_t k = 0; k < t->nlive; k++)
		b += node_bytes(t->n[t->live[k]]);
	return t->nlive ? b / t->nlive : 0;
}

typedef struct {
	uint32_t key;
	bool newest; /* the record held was the key's newest acknowledged version */
} held_key;

typedef struct {
	experiment *x;
	held_key *keys;
	size_t n, cap;
} held_ctx;

static int held_one(void *arg, const kv_record *r)
{
	held_ctx *h = arg;
	long k = key_of_kid(h->x, &r->kid);
	if (k < 0)
		return 0;
	if (rn_grow((void **)&h->keys, &h->cap, h->n + 1, sizeof *h->keys, 256) < 0)
		return 1;
	h->keys[h->n++] = (held_key){(uint32_t)k, kv_version_cmp(&r->v, &h->x->keys[k].acked) >= 0};
	h->x->r->forced_bytes += record_bytes(r); /* each copy it held must be made again */
	return 0;
}

/* Does a live node near the key's position (its replicas and a few stand-ins) hold its
 * newest acknowledged version? */
static bool newest_alive(experiment *x, const key_state *k)
{
	kvs_net *t = x->t;
	rn_id pos = k->kid;
	rn_id_truncate(&pos, t->p.kv.bits);
	uint32_t first = t->nlive ? lower_index(t, &pos) : 0;
	for (uint32_t j = 0; j < t->p.kv.replicas + 4 && j < t->nlive; j++) {
		kv_record rec;
		if (memstore_get(t->n[t->live[(first + j) % t->nlive]]->st, &k->kid, &rec) == 0 &&
		    kv_version_cmp(&rec.v, &k->acked) >= 0)
			return true;
	}
	return false;
}

/* A crash: the records the node held are each one copy fewer. A key whose last copy of
 * its newest acknowledged write goes with it is marked gone, and explained when W of the
 * nodes that held that version crashed within one repair interval: an acknowledged write
 * is on at least W nodes, and on R once repair has run, so fewer than W such crashes in
 * one interval must never lose it. */
static void crash(experiment *x, uint32_t v)
{
	kvs_net *t = x->t;
	held_ctx h = {x, NULL, 0, 0};
	rn_id z;
	memset(&z, 0, sizeof z);
	memstore_scan(t->n[v]->st, &z, &z, true, held_one, &h); /* values: their bytes count */
	kvs_kill(t, v);
	unsigned R = t->p.kv.replicas, W = t->p.kv.write_quorum;
	for (size_t i = 0; i < h.n; i++) {
		key_state *k = &x->keys[h.keys[i].key];
		if (h.keys[i].newest)
			k->crashes[k->ncrash++ % R] = t->now;
		if (k->gone || !k->acked.stamp || newest_alive(x, k))
			continue;
		k->gone = true;
		unsigned recent = 0; /* holders of the newest version that crashed lately */
		for (unsigned j = 0; j < R && j < k->ncrash; j++)
			recent += t->now - k->crashes[j] <= x->r->repair_interval_ms;
		k->explained = recent >= W;
	}
	free(h.keys);
}

/* Crashes and joins as Poisson processes, each at p->churn per second, while the clients
 * go on; then quiet, then the check. */
static void churn_phase(experiment *x)
{
	kvs_net *t = x->t;
	const kvsim_params *p = x->p;
	uint64_t start = t->now, end = start + p->run_ms;
	double next_crash = start, next_join = start, next_op = start;
	if (p->churn > 0) {
		next_crash += rn_rng_exp(&t->rng, 1000.0 / p->churn);
		next_join += rn_rng_exp(&t->rng, 1000.0 / p->churn);
	}
	double op_gap = p->ops_per_sec > 0 ? 1000.0 / p->ops_per_sec : 0;
	if (!op_gap)
		next_op = (double)UINT64_MAX;
	for (;;) {
		double next = next_op;
		if (p->churn > 0 && next_crash < next)
			next = next_crash;
		if (p->churn > 0 && next_join < next)
			next = next_join;
		if (next >= (double)end)
			break;
		kvs_run(t, (uint64_t)next);
		if (next == next_op) {
			uint32_t key = (uint32_t)rn_rng_below(&t->rng, p->keys);
			uint64_t dice = rn_rng_below(&t->rng, 100);
			issue(x, key, dice < 80 ? KV_GET : dice < 95 ? KV_PUT : KV_DEL);
			next_op += rn_rng_exp(&t->rng, op_gap);
		} else if (next == next_crash) {
			if (t->nlive > p->net.kv.replicas + 1) {
				crash(x, kvs_random_live(t));
				x->r->crashes++;
			}
			next_crash += rn_rng_exp(&t->rng, 1000.0 / p->churn);
		} else {
			x->r->forced_bytes += mean_node_bytes(t); /* a newcomer's share */
			kvs_add(t, NULL);
			x->r->joins++;
			next_join += rn_rng_exp(&t->rng, 1000.0 / p->churn);
		}
	}
	kvs_run(t, end);
}

typedef struct {
	experiment *x;
	kv_version *maxv;
	uint32_t *holders;
} tally_ctx;

static int tally_one(void *arg, const kv_record *r)
{
	tally_ctx *c = arg;
	long k = key_of_kid(c->x, &r->kid);
	if (k < 0)
		return 0;
	c->holders[k]++;
	if (kv_version_cmp(&r->v, &c->maxv[k]) > 0)
		c->maxv[k] = r->v;
	return 0;
}

/* Every key: is its newest acknowledged write on a live node, and on how many of its R
 * replicas is its newest version. */
static int final_check(experiment *x)
{
	kvs_net *t = x->t;
	kvsim_result *r = x->r;
	uint64_t nk = x->p->keys;
	kv_version *maxv = calloc(nk, sizeof *maxv);
	uint32_t *holders = calloc(nk, sizeof *holders);
	if (!maxv || !holders) {
		free(maxv);
		free(holders);
		return RN_ENOMEM;
	}
	tally_ctx c = {x, maxv, holders};
	rn_id z;
	memset(&z, 0, sizeof z);
	for (uint32_t k = 0; k < t->nlive; k++) {
		kvs_node *n = t->n[t->live[k]];
		memstore_scan(n->st, &z, &z, false, tally_one, &c);
		r->store_bytes += memstore_bytes(n->st);
	}
	/* real_ring: how far the Chord cores are from the true ring at the end */
	for (uint32_t k = 0; k < t->nlive && t->p.real_ring; k++) {
		ring_node *rn = t->n[t->live[k]]->ring;
		uint32_t next = t->live[(k + 1) % t->nlive],
		         prev = t->live[(k + t->nlive - 1) % t->nlive];
		if (!ring_joined(rn))
			r->ring_unjoined++;
		else if (t->nlive > 1 && ring_successor(rn).addr != next)
			r->ring_wrong_succ++;
		if (t->nlive > 1 && ring_predecessor(rn).addr != prev)
			r->ring_wrong_pred++;
	}
	uint32_t want = t->nlive < t->p.kv.replicas ? t->nlive : t->p.kv.replicas;
	for (uint64_t i = 0; i < nk; i++) {
		key_state *k = &x->keys[i];
		/* lost: the newest acknowledged write is on no live node. A delete whose
		 * tombstone was collected leaves nothing, which is its answer; but an older
		 * value left behind would be the delete undone */
		if (k->acked.stamp && kv_version_cmp(&maxv[i], &k->acked) < 0 &&
		    (!k->acked.tomb || holders[i])) {
			r->lost++;
			r->lost_explained += k->gone && k->explained;
			continue;
		}
		if (!holders[i])
			continue;
		uint32_t reps[KV_MAX_R], good = 0;
		uint32_t nr = kvs_replicas(t, &k->kid, reps);
		for (uint32_t j = 0; j < nr; j++) {
			kv_record rec;
			if (memstore_get(t->n[reps[j]]->st, &k->kid, &rec) == 0 &&
			    kv_version_cmp(&rec.v, &maxv[i]) == 0)
				good++;
		}
		r->under_replicated += good < want;
		r->over_replicated += holders[i] > good;
	}
	free(maxv);
	free(holders);
	return 0;
}

void kvsim_params_default(kvsim_params *p)
{
	memset(p, 0, sizeof *p);
	p->nodes = 1000;
	p->keys = 100000;
	p->churn = 0;
	p->run_ms = 120000;
	p->ops_per_sec = 1000;
	p->value_bytes = 100;
	p->settle_ms = 60000;
	kv_config_default(&p->net.kv);
	p->net.kv.wall_offset_ms = 1700000000000ull;
	p->net.latency_min_ms = 10;
	p->net.latency_max_ms = 50;
	p->net.detect_min_ms = 1000; /* a ring notices a crash or a join in 1-3 s */
	p->net.detect_max_ms = 3000;
	p->net.unreach_ms = 1000; /* a connect to a crashed host gives up */
	p->net.probe_ms = 5000;   /* as the node (MERGE_EVERY_MS) */
	/* members: `sim --member` at 1,000 nodes: the first and the last live node to declare
	 * a crashed node dead, 4.6 s and 7.4 s (the worst crash); a join spreads by gossip
	 * alone (no suspicion timeout), a few 200 ms rounds */
	p->net.join_known_min_ms = 200;
	p->net.join_known_max_ms = 2000;
	p->net.crash_known_min_ms = 4600;
	p->net.crash_known_max_ms = 7400;
	ring_config_default(&p->net.ring);
	p->net.ring.bits = p->net.kv.bits;
	p->net.seed = 1;
}

int kvsim_params_check(const kvsim_params *p, char *err, size_t len)
{
	if (p->nodes < 1 || p->nodes > 1000000)
		snprintf(err, len, "--nodes must be 1..1000000");
	else if (p->keys < 1 || p->keys > 100000000)
		snprintf(err, len, "--keys must be 1..100000000 with --replicas");
	else if (kv_config_check(&p->net.kv) < 0)
		snprintf(err, len,
		         "--replicas must be 1..%d, --write-quorum 1..replicas and --lease-ms "
		         "below the replica timeout (%u ms)",
		         KV_MAX_R, p->net.kv.op_timeout_ms);
	else if (p->churn < 0 || p->churn > 1000)
		snprintf(err, len, "--churn must be 0..1000 per second");
	else if (p->fail < 0 || p->fail >= 1)
		snprintf(err, len, "--fail must be at least 0 and below 1");
	else if (p->value_bytes < 16 || p->value_bytes > 65536)
		snprintf(err, len, "--value-bytes must be 16..65536");
	else if (p->net.latency_min_ms > p->net.latency_max_ms)
		snprintf(err, len, "--latency wants MIN-MAX with MIN <= MAX");
	else if (p->net.join_known_min_ms > p->net.join_known_max_ms ||
	         p->net.crash_known_min_ms > p->net.crash_known_max_ms)
		snprintf(err, len, "--join-known and --crash-known want MIN-MAX with MIN <= MAX");
	else
		return 0;
	return RN_EINVAL;
}

enum { ROUTE_FIELDS = 14 };

/* A result's route counters, in the order of route_vals. */
static void route_fields(kvsim_result *r, uint64_t *f[ROUTE_FIELDS])
{
	uint64_t *a[ROUTE_FIELDS] = {&r->client_ops,    &r->route_local, &r->route_succ,
	                             &r->route_onehop,  &r->route_cache, &r->route_lookup,
	                             &r->route_first,   &r->route_stale, &r->route_hints,
	                             &r->moved,         &r->forwarded,   &r->entry_lookups,
	                             &r->replica_reads, &r->cache_reads};
	memcpy(f, a, sizeof a);
}

static void route_vals(const kv_stats *s, uint64_t v[ROUTE_FIELDS])
{
	const uint64_t a[ROUTE_FIELDS] = {
	    s->client_ops,   s->route_local,   s->route_succ,    s->route_onehop, s->route_cache,
	    s->route_lookup, s->route_first,   s->route_stale,   s->route_hints,  s->moved,
	    s->forwarded,    s->entry_lookups, s->replica_reads, s->cache_reads};
	memcpy(v, a, sizeof a);
}

/* The route counters of every core (crashed ones keep theirs), less those of *minus. */
static void routes_sum(kvs_net *t, kvsim_result *r, const kvsim_result *minus)
{
	uint64_t *f[ROUTE_FIELDS], v[ROUTE_FIELDS];
	route_fields(r, f);
	for (size_t j = 0; j < ROUTE_FIELDS; j++)
		*f[j] = 0;
	for (uint32_t i = 0; i < t->count; i++) {
		route_vals(kv_get_stats(t->n[i]->kv), v);
		for (size_t j = 0; j < ROUTE_FIELDS; j++)
			*f[j] += v[j];
	}
	if (minus) {
		kvsim_result m = *minus;
		uint64_t *g[ROUTE_FIELDS];
		route_fields(&m, g);
		for (size_t j = 0; j < ROUTE_FIELDS; j++)
			*f[j] -= *g[j];
	}
}

/* Hops per request: every REQ an entry sent, and for each lookup the messages it takes:
 * its hops and the answer (real_ring: as the ring cores counted them; the model: Chord's
 * expected path, half of log2 N). */
static void routes_rates(const kvsim_params *p, kvsim_result *r, uint64_t hops, uint64_t done,
                         uint32_t nlive)
{
	double l = nlive > 1 ? 0.5 * log2((double)nlive) : 0;
	if (p->net.real_ring && done)
		l = (double)hops / (double)done;
	r->lookup_hops = l + 1;
	r->hops_per_request =
	    r->client_ops ? ((double)r->forwarded + (double)r->entry_lookups * r->lookup_hops) /
	                        (double)r->client_ops
	                  : 0;
	r->stale_rate = r->route_first ? (double)r->route_stale / (double)r->route_first : 0;
}

static double wall_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int kvsim_run(const kvsim_params *p, kvsim_result *r)
{
	char err[128];
	if (kvsim_params_check(p, err, sizeof err) < 0)
		return RN_EINVAL;
	memset(r, 0, sizeof *r);
	double t0 = wall_now_ms();
	experiment x = {.p = p, .r = r};
	/* noticing (the detection delay), a digest round that finds the gap, its answer and
	 * the copy: what it takes to make a lost copy again */
	uint64_t detect = p->net.real_ring ? (uint64_t)p->net.ring.check_pred_ms +
	                                         p->net.ring.stabilize_ms + p->net.unreach_ms
	                                   : p->net.detect_max_ms;
	r->repair_interval_ms = detect + 2ull * p->net.kv.sync_ms + 4ull * p->net.latency_max_ms;
	kvs_params np = p->net;
	np.on_reply = on_reply;
	np.arg = &x;
	x.t = kvs_new(&np);
	x.keys = calloc(p->keys, sizeof *x.keys);
	x.by_kid = calloc(p->keys, sizeof *x.by_kid);
	x.val = malloc(p->value_bytes + 1);
	int rc = RN_ENOMEM;
	if (!x.t || !x.keys || !x.by_kid || !x.val)
		goto out;
	for (uint64_t i = 0; i < p->keys; i++) {
		char name[32];
		key_name(name, sizeof name, i);
		rn_id_hash(&x.keys[i].kid, name, strlen(name), RN_ID_BITS);
		x.by_kid[i] = (ring_peer){x.keys[i].kid, (ring_addr)i};
	}
	if (ring_peers_sort(x.by_kid, p->keys) < 0)
		goto out;
	x.t->booting = p->net.real_ring;
	x.t->members_quiet = true; /* at the start everyone knows everyone */
	for (uint32_t i = 0; i < p->nodes; i++)
		if (kvs_add(x.t, NULL) == UINT32_MAX)
			goto out;
	x.t->members_quiet = false;
	kvs_members_bootstrap(x.t);
	if (p->net.real_ring)
		kvs_ring_bootstrap(x.t);
	kvs_run(x.t, 5000); /* the views settle */
	/* load: every key written once, spread over time so no node is flooded */
	uint64_t load_ms = p->keys * 1000 / (p->nodes * 50ull) + 1000;
	for (uint64_t i = 0; i < p->keys; i++) {
		kvs_run(x.t, 5000 + i * load_ms / p->keys);
		if (issue(&x, (uint32_t)i, KV_PUT) < 0)
			goto out;
	}
	kvs_run(x.t, x.t->now + 30000);
	if (p->fail > 0) {
		uint32_t kill = (uint32_t)(p->fail * x.t->nlive);
		for (uint32_t k = 0; k < kill && x.t->nlive > 1; k++) {
			crash(&x, kvs_random_live(x.t));
			r->crashes++;
		}
	}
	uint64_t churn_start = x.t->now;
	uint64_t repair_before = 0, data_before = 0;
	for (uint32_t i = 0; i < x.t->count; i++) {
		repair_before += kv_get_stats(x.t->n[i]->kv)->sync_bytes;
		data_before += kv_get_stats(x.t->n[i]->kv)->repair_data_bytes;
	}
	kvsim_result before;
	routes_sum(x.t, &before, NULL);
	uint64_t hops_before = x.t->lookup_hops, done_before = x.t->lookups_done;
	churn_phase(&x);
	routes_sum(x.t, r, &before);
	routes_rates(p, r, x.t->lookup_hops - hops_before, x.t->lookups_done - done_before,
	             x.t->nlive);
	r->member_events = x.t->member_events;
	kvs_run(x.t, x.t->now + p->settle_ms);
	for (uint32_t i = 0; i < x.t->count; i++) {
		r->repair_bytes += kv_get_stats(x.t->n[i]->kv)->sync_bytes;
		r->repair_data_bytes += kv_get_stats(x.t->n[i]->kv)->repair_data_bytes;
	}
	r->repair_bytes -= repair_before;
	r->repair_data_bytes -= data_before;
	rc = final_check(&x);
	r->nodes = x.t->count;
	r->live_nodes = x.t->nlive;
	r->keys = p->keys;
	r->messages = x.t->messages;
	r->ring_messages = x.t->ring_messages;
	r->events = x.t->events;
	r->virtual_ms = x.t->now;
	uint64_t secs = (x.t->now - churn_start) / 1000;
	r->repair_per_node_sec =
	    secs && x.t->nlive ? (double)r->repair_bytes / (double)x.t->nlive / (double)secs : 0;
out:
	r->wall_ms = wall_now_ms() - t0;
	kvs_free(x.t);
	free(x.keys);
	free(x.by_kid);
	free(x.val);
	free(x.ops);
	return rc;
}
