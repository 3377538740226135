/* kvsim.c — see kvsim.h. The network (events, views, the driver of the cores) first, then
 * the experiment (workload, churn, the final check against what was acknowledged). */
#include "kvsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"

enum { EV_MSG = 1, EV_LOOKUP, EV_UNREACH, EV_VIEW, EV_TICK };

typedef struct kvs_event {
	uint64_t at, seq;
	uint8_t kind;
	uint32_t from, to;
	uint64_t req;
	rn_id key;
	kv_msg m;
	uint8_t *blob;
} kvs_event;

/* ---- event heap ---- */

static bool ev_before(const kvs_event *a, const kvs_event *b)
{
	return a->at != b->at ? a->at < b->at : a->seq < b->seq;
}

static void heap_push(kvs_net *t, kvs_event e)
{
	if (t->nh == t->caph) {
		size_t cap = t->caph ? t->caph * 2 : 1024;
		kvs_event *h = realloc(t->heap, cap * sizeof *h);
		if (!h) {
			free(e.blob); /* out of memory: the message is lost, as on a real network */
			return;
		}
		t->heap = h;
		t->caph = cap;
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
	if (!x->alive || !x->in_ring)
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
	if (!n)
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
	size_t n = m->rec.klen + m->rec.vlen + m->rec.ridlen + (m->hashes ? KV_BUCKETS * 8 : 0) +
	           m->nbuckets + m->nentries * sizeof(kv_entry) + m->nkids * sizeof(rn_id) +
	           m->nacked * sizeof(ring_peer) + 64;
	uint8_t *b = malloc(n), *p = b;
	if (!b)
		return NULL;
	*out = *m;
	*bytes = n + 48;
#define COPY(field, len)                                                                      \
	do {                                                                                  \
		p = (uint8_t *)(((uintptr_t)p + 7) & ~(uintptr_t)7);                          \
		if (m->field && (len) != 0) {                                                 \
			memcpy(p, m->field, (len));                                           \
			out->field = (void *)p;                                               \
			p += (len);                                                           \
		}                                                                             \
	} while (0)
	COPY(hashes, KV_BUCKETS * 8);
	COPY(entries, m->nentries * sizeof(kv_entry));
	COPY(kids, m->nkids * sizeof(rn_id));
	COPY(acked, m->nacked * sizeof(ring_peer));
	COPY(rec.key, m->rec.klen);
	COPY(rec.val, m->rec.vlen);
	COPY(rec.rid, m->rec.ridlen);
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
	e.at = t->now + 2 * t->p.latency_max_ms; /* a lookup takes a few hops */
	heap_push(t, e);
}

static void d_reply(void *ctx, uint64_t client, const kv_reply *r)
{
	kvs_net *t = net_of(ctx);
	if (t->p.on_reply)
		t->p.on_reply(t->p.arg, client, r);
}

static int start_core(kvs_net *t, uint32_t i)
{
	kvs_node *x = t->n[i];
	x->t = t;
	x->i = i;
	kv_driver d = {x, d_get, d_put, d_del, d_scan, d_count, d_send, d_lookup, d_reply};
	x->kv = kv_new(&t->p.kv, &d, &x->id, i);
	if (!x->kv)
		return RN_ENOMEM;
	x->alive = true;
	x->view_due = UINT64_MAX;
	x->tick_due = UINT64_MAX;
	schedule(t, i);
	return 0;
}

kvs_net *kvs_new(const kvs_params *p)
{
	if (kv_config_check(&p->kv) < 0 || p->latency_min_ms > p->latency_max_ms ||
	    p->detect_min_ms > p->detect_max_ms)
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
}

void kvs_revive(kvs_net *t, uint32_t i)
{
	kv_free(t->n[i]->kv);
	start_core(t, i);
	if (!t->n[i]->in_ring)
		live_insert(t, i);
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
			kvs_event u = {.kind = EV_UNREACH, .from = e->from, .to = e->to,
			               .req = e->m.req, .at = t->now + t->p.latency_max_ms};
			heap_push(t, u);
		}
		break;
	case EV_LOOKUP:
		if (from->alive && t->nlive) {
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
