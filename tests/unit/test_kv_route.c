/* test_kv_route.c — the kv core's one-hop routing against brute force.
 *
 * The oracle is the sorted list of live node ids: a key's owner is the first at or after
 * its position. Random rings and member tables check that the node a request goes to is
 * the owner whenever the table is exact (and that incremental updates and a whole-list
 * update give the same table); random stale tables (members missing, dead nodes still
 * listed) check that a request still reaches a coordinator, that MOVED hints converge on
 * the true owner, and that the corrections stay bounded. The network is a FIFO queue in
 * this file: every message, lookup and undeliverable notice is delivered after the core
 * call that made it returns (the cores are not re-entrant). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kv/kv.h"
#include "kv/members.h"
#include "kv/memstore.h"
#include "lib/err.h"
#include "lib/id.h"
#include "lib/rng.h"

#define MAXN 200
#define BITS 32

enum { Q_MSG = 1, Q_LOOKUP, Q_UNREACH };

typedef struct qitem {
	struct qitem *next;
	int kind;
	uint32_t from, to;
	kv_msg m;
	uint8_t *blob;
	rn_id key;
	uint64_t req;
} qitem;

typedef struct world world;

typedef struct {
	world *w;
	uint32_t i;
	rn_id id;
	bool alive;
	kv_node *kv;
	memstore *st;
} wnode;

struct world {
	wnode n[MAXN];
	uint32_t count;
	qitem *head, *tail;
	rn_rng rng;
	uint64_t now;
	/* what the clients were told */
	bool replied;
	kv_reply last;
	rn_id coordinator;
	uint64_t reqs_to_dead; /* REQs sent to a crashed node */
	uint64_t lookups;
};

static void push(world *w, qitem *q)
{
	q->next = NULL;
	if (w->tail)
		w->tail->next = q;
	else
		w->head = q;
	w->tail = q;
}

static int d_get(void *ctx, const rn_id *kid, kv_record *out)
{
	return memstore_get(((wnode *)ctx)->st, kid, out);
}
static int d_put(void *ctx, const kv_record *r)
{
	return memstore_put(((wnode *)ctx)->st, r);
}
static int d_del(void *ctx, const rn_id *kid)
{
	return memstore_del(((wnode *)ctx)->st, kid);
}
static int d_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
                  int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	return memstore_scan(((wnode *)ctx)->st, lo, hi, values, fn, arg);
}
static uint64_t d_count(void *ctx)
{
	return memstore_count(((wnode *)ctx)->st);
}

/* Appends a copy of n bytes at *p, 8-byte aligned (the lists hold 64-bit fields); returns
 * where it went (NULL for none). */
static const void *copy_in(uint8_t **p, const void *src, size_t n)
{
	if (!src || !n)
		return src;
	*p = (uint8_t *)(((uintptr_t)*p + 7) & ~(uintptr_t)7);
	memcpy(*p, src, n);
	*p += n;
	return *p - n;
}

/* Every message is copied whole (its record, hint, and the lists anti-entropy sends). */
static void d_send(void *ctx, const kv_msg *m)
{
	wnode *x = ctx;
	world *w = x->w;
	qitem *q = calloc(1, sizeof *q);
	assert_non_null(q);
	size_t n = m->rec.klen + m->rec.vlen + m->rec.ridlen + m->rec.histlen +
	           m->nacked * sizeof(ring_peer) + (m->hashes ? KV_BUCKETS * sizeof(uint64_t) : 0) +
	           m->nbuckets + m->nentries * sizeof(kv_entry) + m->nkids * sizeof(rn_id);
	q->blob = malloc(n + 8 * 8); /* (room for each list's alignment) */
	assert_non_null(q->blob);
	q->kind = Q_MSG;
	q->from = x->i;
	q->to = m->to;
	q->m = *m;
	uint8_t *p = q->blob;
	q->m.acked = copy_in(&p, m->acked, m->nacked * sizeof(ring_peer));
	q->m.rec.key = copy_in(&p, m->rec.key, m->rec.klen);
	q->m.rec.val = copy_in(&p, m->rec.val, m->rec.vlen);
	q->m.rec.rid = copy_in(&p, m->rec.rid, m->rec.ridlen);
	q->m.rec.hist = copy_in(&p, m->rec.hist, m->rec.histlen);
	q->m.hashes = copy_in(&p, m->hashes, m->hashes ? KV_BUCKETS * sizeof(uint64_t) : 0);
	q->m.buckets = copy_in(&p, m->buckets, m->nbuckets);
	q->m.entries = copy_in(&p, m->entries, m->nentries * sizeof(kv_entry));
	q->m.kids = copy_in(&p, m->kids, m->nkids * sizeof(rn_id));
	if (m->type == KV_MSG_REQ && m->to < w->count && !w->n[m->to].alive)
		w->reqs_to_dead++;
	push(w, q);
}

static void d_lookup(void *ctx, const rn_id *kid, uint64_t req)
{
	wnode *x = ctx;
	qitem *q = calloc(1, sizeof *q);
	assert_non_null(q);
	q->kind = Q_LOOKUP;
	q->from = x->i;
	q->key = *kid;
	q->req = req;
	x->w->lookups++;
	push(x->w, q);
}

static void d_reply(void *ctx, uint64_t client, const kv_reply *r)
{
	world *w = ((wnode *)ctx)->w;
	(void)client;
	assert_false(w->replied);
	w->replied = true;
	w->last = *r;
	w->coordinator = r->coordinator;
}

/* The oracle: the first live node at or after pos (brute force over every node). */
static uint32_t true_owner(const world *w, const rn_id *pos)
{
	uint32_t best = UINT32_MAX, first = UINT32_MAX;
	for (uint32_t i = 0; i < w->count; i++) {
		if (!w->n[i].alive)
			continue;
		if (first == UINT32_MAX || rn_id_cmp(&w->n[i].id, &w->n[first].id) < 0)
			first = i;
		if (rn_id_cmp(&w->n[i].id, pos) >= 0 &&
		    (best == UINT32_MAX || rn_id_cmp(&w->n[i].id, &w->n[best].id) < 0))
			best = i;
	}
	return best != UINT32_MAX ? best : first;
}

/* The live node right after (or, back = true, before) node i. */
static uint32_t neighbour(const world *w, uint32_t i, bool back)
{
	uint32_t best = UINT32_MAX;
	rn_id bd;
	for (uint32_t j = 0; j < w->count; j++) {
		if (j == i || !w->n[j].alive)
			continue;
		rn_id d;
		if (back)
			rn_id_sub(&d, &w->n[i].id, &w->n[j].id);
		else
			rn_id_sub(&d, &w->n[j].id, &w->n[i].id);
		if (best == UINT32_MAX || rn_id_cmp(&d, &bd) < 0) {
			best = j;
			bd = d;
		}
	}
	return best;
}

static void deliver_all(world *w);

/* Delivers everything, then lets time pass (ticks: timeouts, fallbacks) until the client
 * has its answer; the core's own deadlines bound it. */
static void run_to_reply(world *w)
{
	for (int i = 0; i < 400 && !w->replied; i++) {
		deliver_all(w);
		if (w->replied)
			break;
		w->now += 50;
		for (uint32_t j = 0; j < w->count; j++)
			if (w->n[j].alive)
				kv_tick(w->n[j].kv, w->now);
	}
}

static void deliver_all(world *w)
{
	while (w->head) {
		qitem *q = w->head;
		w->head = q->next;
		if (!w->head)
			w->tail = NULL;
		wnode *from = &w->n[q->from];
		if (q->kind == Q_MSG && q->to < w->count && w->n[q->to].alive) {
			kv_on_msg(w->n[q->to].kv, w->now, &q->m);
		} else if (q->kind == Q_MSG && q->m.req && from->alive) {
			qitem *u = calloc(1, sizeof *u);
			assert_non_null(u);
			u->kind = Q_UNREACH;
			u->from = q->from;
			u->to = q->to;
			u->req = q->m.req;
			push(w, u);
		} else if (q->kind == Q_LOOKUP && from->alive) {
			uint32_t o = true_owner(w, &q->key);
			kv_on_lookup(from->kv, w->now, q->req, true, (ring_peer){w->n[o].id, o});
		} else if (q->kind == Q_UNREACH && from->alive) {
			kv_on_unreachable(from->kv, w->now, q->req, q->to);
		}
		free(q->blob);
		free(q);
	}
}

/* A world of n live nodes with random ids, R replicas, W; every view exact. */
static world *world_new_w(uint32_t n, uint64_t seed, unsigned replicas, unsigned w_quorum);

static world *world_new(uint32_t n, uint64_t seed, unsigned replicas)
{
	return world_new_w(n, seed, replicas, 1);
}

static world *world_new_w(uint32_t n, uint64_t seed, unsigned replicas, unsigned w_quorum)
{
	world *w = calloc(1, sizeof *w);
	assert_non_null(w);
	rn_rng_seed(&w->rng, seed);
	w->now = 1000;
	kv_config c;
	kv_config_default(&c);
	c.bits = BITS;
	c.replicas = replicas;
	c.write_quorum = w_quorum;
	c.read_quorum = 1;
	c.wall_offset_ms = 1700000000000ull;
	c.sync_ms = c.cover_ms = 1u << 30; /* no anti-entropy: only the client path */
	for (uint32_t i = 0; i < n; i++) {
		wnode *x = &w->n[i];
		x->w = w;
		x->i = i;
		x->alive = true;
		rn_id_random(&x->id, &w->rng, BITS);
		x->st = memstore_new();
		kv_driver d = {x, d_get, d_put, d_del, d_scan, d_count, d_send, d_lookup, d_reply};
		x->kv = kv_new(&c, &d, &x->id, i);
		assert_non_null(x->kv);
	}
	w->count = n;
	return w;
}

/* Each live node's ring view from the true membership. */
static void world_views(world *w)
{
	for (uint32_t i = 0; i < w->count; i++) {
		if (!w->n[i].alive)
			continue;
		uint32_t p = neighbour(w, i, true);
		ring_peer pred = {.addr = RING_ADDR_NONE};
		if (p != UINT32_MAX)
			pred = (ring_peer){w->n[p].id, p};
		ring_peer succ[4];
		size_t ns = 0;
		for (uint32_t s = i; ns < 4;) {
			s = neighbour(w, s, false);
			if (s == UINT32_MAX || s == i)
				break;
			succ[ns++] = (ring_peer){w->n[s].id, s};
		}
		kv_set_view(w->n[i].kv, w->now, true, pred, succ, ns);
	}
}

static void world_free(world *w)
{
	for (uint32_t i = 0; i < w->count; i++) {
		kv_free(w->n[i].kv);
		memstore_free(w->n[i].st);
	}
	free(w);
}

static void key_of(char *buf, size_t len, uint64_t i)
{
	snprintf(buf, len, "key-%llu", (unsigned long long)i);
}

/* Exact tables, given incrementally on some nodes and as a whole on others: every
 * request's first destination is its true owner (one hop, or none for this node's own
 * keys), for random rings of 2..MAXN nodes. */
static void test_exact_table_routes_to_owner(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 7);
	for (int round = 0; round < 12; round++) {
		uint32_t n = 2 + (uint32_t)rn_rng_below(&rng, MAXN - 1);
		world *w = world_new(n, 100 + (uint64_t)round, 3);
		/* crash a few: the tables must leave them out */
		for (uint32_t i = 0; i < n / 5; i++)
			w->n[rn_rng_below(&rng, n)].alive = false;
		w->n[0].alive = true;
		world_views(w);
		ring_peer all[MAXN];
		size_t na = 0;
		for (uint32_t i = 0; i < n; i++)
			all[na++] = (ring_peer){w->n[i].id, i};
		for (uint32_t i = 0; i < n; i++) {
			if (!w->n[i].alive)
				continue;
			kv_node *k = w->n[i].kv;
			if (i % 2) { /* everyone up, then the dead go down, in a random order */
				ring_peer order[MAXN];
				memcpy(order, all, na * sizeof *all);
				for (size_t j = na - 1; j > 0; j--) {
					size_t r = (size_t)rn_rng_below(&rng, j + 1);
					ring_peer tmp = order[j];
					order[j] = order[r];
					order[r] = tmp;
				}
				for (size_t j = 0; j < na; j++)
					kv_member_up(k, w->now, order[j]);
				for (uint32_t j = 0; j < n; j++)
					if (!w->n[j].alive)
						kv_member_down(k, w->now, &w->n[j].id);
			} else { /* the whole list, twice: the second changes nothing */
				ring_peer live[MAXN];
				size_t nl = 0;
				for (uint32_t j = 0; j < n; j++)
					if (w->n[j].alive)
						live[nl++] = all[j];
				kv_set_members(k, w->now, all,
				               na); /* first all, then only the live */
				kv_set_members(k, w->now, live, nl);
				kv_set_members(k, w->now, live, nl);
			}
			uint32_t nlive = 0;
			for (uint32_t j = 0; j < n; j++)
				nlive += w->n[j].alive;
			assert_int_equal(kv_get_stats(k)->members_up, nlive);
		}
		/* an empty list from the feed: everyone but this node goes down, and back */
		kv_set_members(w->n[0].kv, w->now, NULL, 0);
		assert_int_equal(kv_get_stats(w->n[0].kv)->members_up, 1);
		kv_set_members(w->n[0].kv, w->now, all, na);
		for (uint32_t j = 0; j < n; j++)
			if (!w->n[j].alive)
				kv_member_down(w->n[0].kv, w->now, &w->n[j].id);
		for (int q = 0; q < 400; q++) {
			uint32_t e = (uint32_t)rn_rng_below(&rng, n);
			if (!w->n[e].alive)
				continue;
			rn_id kid, pos;
			rn_id_random(&kid, &rng, RN_ID_BITS);
			pos = kid;
			rn_id_truncate(&pos, BITS);
			const char *how;
			ring_peer to = kv_route(w->n[e].kv, &kid, &how);
			uint32_t o = true_owner(w, &pos);
			if (to.addr != o)
				fprintf(stderr, "n %u entry %u how %s to %u owner %u alive %d\n", n,
				        e, how, to.addr, o, to.addr < n ? w->n[to.addr].alive : -1);
			assert_int_equal(to.addr, o);
			assert_true(rn_id_eq(&to.id, &w->n[o].id));
			assert_string_not_equal(how, "lookup");
			assert_string_not_equal(how, "cache");
			if (o == e)
				assert_string_equal(how, "local");
		}
		world_free(w);
	}
}

/* A put through a random node with a stale table: members it does not know of yet
 * (joins), dead members it still lists (crashes not yet disseminated). Every request is
 * answered; without dead members in the way the coordinator is the true owner (the MOVED
 * chain converged, or the lookup after KV_MAX_CORRECTIONS did); with an exact table no
 * request is ever stale. */
static void run_stale(world *w, rn_rng *rng, double missing, double ghosts, uint64_t *stale,
                      uint64_t *first, uint64_t *not_owner)
{
	uint32_t n = w->count;
	for (uint32_t i = 0; i < n; i++) {
		if (!w->n[i].alive)
			continue;
		ring_peer list[MAXN];
		size_t nl = 0;
		for (uint32_t j = 0; j < n; j++) {
			bool alive = w->n[j].alive;
			double u = rn_rng_unit(rng);
			if (j == i || (alive && u >= missing) || (!alive && u < ghosts))
				list[nl++] = (ring_peer){w->n[j].id, j};
		}
		kv_set_members(w->n[i].kv, w->now, list, nl);
	}
	for (int q = 0; q < 300; q++) {
		uint32_t e = (uint32_t)rn_rng_below(rng, n);
		if (!w->n[e].alive)
			continue;
		char key[32];
		key_of(key, sizeof key, (uint64_t)q);
		kv_request r = {.op = KV_PUT,
		                .key = (const uint8_t *)key,
		                .klen = strlen(key),
		                .val = (const uint8_t *)"\"v\"",
		                .vlen = 3};
		const kv_stats *s = kv_get_stats(w->n[e].kv);
		uint64_t hints0 = s->route_hints, lk0 = w->lookups;
		w->replied = false;
		kv_client(w->n[e].kv, w->now, (uint64_t)q, &r);
		run_to_reply(w);
		assert_true(w->replied);
		assert_int_equal(w->last.status, KV_OK);
		assert_true(s->route_hints - hints0 <= KV_MAX_CORRECTIONS);
		assert_true(w->lookups - lk0 <= 2); /* the route's, and one fallback's */
		rn_id kid, pos;
		rn_id_hash(&kid, key, strlen(key), RN_ID_BITS);
		pos = kid;
		rn_id_truncate(&pos, BITS);
		uint32_t o = true_owner(w, &pos);
		*not_owner += !rn_id_eq(&w->coordinator, &w->n[o].id);
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!w->n[i].alive)
			continue;
		*stale += kv_get_stats(w->n[i].kv)->route_stale;
		*first += kv_get_stats(w->n[i].kv)->route_first;
	}
}

static void test_stale_tables_converge(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 11);
	uint64_t stale_total = 0;
	for (int round = 0; round < 8; round++) {
		uint32_t n = 20 + (uint32_t)rn_rng_below(&rng, MAXN - 20);
		/* exact tables: never stale, always the owner */
		world *w = world_new(n, 500 + (uint64_t)round, 3);
		world_views(w);
		uint64_t stale = 0, first = 0, not_owner = 0;
		run_stale(w, &rng, 0, 0, &stale, &first, &not_owner);
		assert_int_equal(stale, 0);
		assert_true(first > 0);
		assert_int_equal(not_owner, 0);
		world_free(w);
		/* members missing (a third of them, and more in the later rounds): MOVED
		 * hints (or a lookup after them) still end at the true owner */
		w = world_new(n, 600 + (uint64_t)round, 3);
		world_views(w);
		stale = first = not_owner = 0;
		run_stale(w, &rng, 0.3 + 0.08 * round, 0, &stale, &first, &not_owner);
		assert_true(stale > 0);
		assert_int_equal(not_owner, 0);
		assert_true(w->lookups < stale / 2); /* most chains end by hints alone */
		stale_total += stale;
		world_free(w);
		/* dead members listed too: answered through the next member (a fallback) */
		w = world_new(n, 700 + (uint64_t)round, 3);
		for (uint32_t i = 1; i < n; i += 4)
			w->n[i].alive = false;
		world_views(w);
		stale = first = not_owner = 0;
		run_stale(w, &rng, 0.2, 0.8, &stale, &first, &not_owner);
		assert_true(w->reqs_to_dead > 0);
		world_free(w);
	}
	assert_true(stale_total > 0);
}

/* Above one_hop_max members the table is not used: a lookup, then the owner cache. */
static void test_cache_above_max(void **state)
{
	(void)state;
	world *w = world_new(40, 900, 3);
	for (uint32_t i = 0; i < w->count; i++) {
		kv_free(w->n[i].kv);
		kv_config c;
		kv_config_default(&c);
		c.bits = BITS;
		c.write_quorum = 1;
		c.read_quorum = 1;
		c.one_hop_max = 10;
		kv_driver d = {&w->n[i], d_get,  d_put,    d_del,  d_scan,
		               d_count,  d_send, d_lookup, d_reply};
		w->n[i].kv = kv_new(&c, &d, &w->n[i].id, i);
		assert_non_null(w->n[i].kv);
		for (uint32_t j = 0; j < w->count; j++)
			kv_member_up(w->n[i].kv, w->now, (ring_peer){w->n[j].id, j});
	}
	world_views(w);
	kv_node *k = w->n[0].kv;
	const kv_stats *s = kv_get_stats(k);
	assert_int_equal(s->members_up, 40);
	int remote = 0;
	for (int q = 0; q < 50; q++) {
		char key[32];
		key_of(key, sizeof key, (uint64_t)q);
		kv_request r = {.op = KV_PUT,
		                .key = (const uint8_t *)key,
		                .klen = strlen(key),
		                .val = (const uint8_t *)"1",
		                .vlen = 1};
		rn_id kid;
		rn_id_hash(&kid, key, strlen(key), RN_ID_BITS);
		const char *how;
		kv_route(k, &kid, &how);
		if (strcmp(how, "lookup"))
			continue; /* its own range or its successors' */
		remote++;
		uint64_t lk = w->lookups;
		w->replied = false;
		kv_client(k, w->now, 1, &r);
		run_to_reply(w);
		assert_int_equal(w->last.status, KV_OK);
		assert_int_equal(w->lookups, lk + 1);
		ring_peer to = kv_route(k, &kid, &how);
		assert_string_equal(how, "cache");
		rn_id pos = kid;
		rn_id_truncate(&pos, BITS);
		assert_int_equal(to.addr, true_owner(w, &pos));
		w->replied = false; /* again: no lookup */
		kv_client(k, w->now, 2, &r);
		run_to_reply(w);
		assert_int_equal(w->last.status, KV_OK);
		assert_int_equal(w->lookups, lk + 1);
	}
	assert_true(remote > 10);
	assert_int_equal(s->route_onehop, 0);
	world_free(w);
}

/* The table alone against a brute-force model: random ups (from the feed and from hints),
 * downs, and successor queries over a small id space (collisions and wrap-around). */
static void test_member_table_oracle(void **state)
{
	(void)state;
	enum { IDS = 300 };
	rn_rng rng;
	rn_rng_seed(&rng, 3);
	for (int round = 0; round < 20; round++) {
		size_t max = 40 + rn_rng_below(&rng, 400);
		kvm_table t;
		kvm_init(&t, max);
		/* the model: per id, 0 never seen, 1 up, 2 down; its address and source */
		uint8_t st[IDS] = {0}, src[IDS] = {0};
		uint32_t addr[IDS] = {0};
		rn_id ids[IDS];
		for (int i = 0; i < IDS; i++)
			rn_id_from_u64(&ids[i], (uint64_t)i * 7919 % 1000, 10);
		for (int i = 0; i < IDS; i++)
			for (int j = 0; j < i; j++)
				if (rn_id_eq(&ids[i], &ids[j]))
					ids[i] = ids[0]; /* collisions stay collisions of id 0 */
		for (int step = 0; step < 3000; step++) {
			int i = (int)rn_rng_below(&rng, IDS);
			int j = 0; /* the model's entry for this id: the first index with it */
			while (!rn_id_eq(&ids[j], &ids[i]))
				j++;
			uint64_t dice = rn_rng_below(&rng, 10);
			if (dice < 5) {
				uint8_t from = dice < 3 ? KVM_FEED : KVM_HINT;
				uint32_t a = (uint32_t)rn_rng_below(&rng, 1000);
				int rc = kvm_up(&t, (ring_peer){ids[i], a}, from);
				if (rc >= 0 && !(from == KVM_HINT && st[j])) {
					st[j] = 1;
					addr[j] = a;
					src[j] = from;
				}
				if (rc < 0) /* full: only when max live entries are up */
					assert_true(t.nup >= max || t.n >= max);
			} else if (dice < 8) {
				kvm_down(&t, &ids[i]);
				if (st[j] == 1)
					st[j] = 2;
			} else {
				rn_id pos;
				rn_id_from_u64(&pos, rn_rng_below(&rng, 1000), 10);
				ring_peer got[4];
				size_t n = kvm_succ(&t, &pos, NULL, got, 4);
				/* brute force: the live ids in ring order from pos */
				ring_peer want[4];
				size_t nw = 0;
				for (uint64_t d = 0; d < 1024 && nw < 4; d++) {
					rn_id p;
					rn_id_from_u64(&p, (rn_id_to_u64(&pos, 10) + d) % 1024, 10);
					for (int x = 0; x < IDS; x++)
						if (st[x] == 1 && rn_id_eq(&ids[x], &p))
							want[nw++] = (ring_peer){ids[x], addr[x]};
				}
				assert_int_equal(n, nw);
				for (size_t x = 0; x < n; x++) {
					assert_true(rn_id_eq(&got[x].id, &want[x].id));
					assert_int_equal(got[x].addr, want[x].addr);
				}
			}
			if (t.n == t.nup) /* no tombstone left: purged (or none was there) */
				for (int x = 0; x < IDS; x++)
					st[x] = st[x] == 2 ? 0 : st[x];
			size_t up = 0;
			for (int x = 0; x < IDS; x++)
				up += st[x] == 1;
			assert_int_equal(t.nup, up);
			(void)src;
		}
		kvm_free(&t);
	}
}

/* A node cut off from every successor while its member table still holds the others: a
 * write it coordinates is refused (nothing applied) instead of acknowledged with one copy
 * at W = 2; once the table too says it is alone, it is a ring of one and takes it. */
static void test_cut_off_node_refuses_writes(void **state)
{
	(void)state;
	world *w = world_new_w(5, 21, 3, 2);
	world_views(w);
	ring_peer all[5];
	for (uint32_t i = 0; i < 5; i++)
		all[i] = (ring_peer){w->n[i].id, i};
	for (uint32_t i = 0; i < 5; i++)
		kv_set_members(w->n[i].kv, w->now, all, 5);
	/* a key node 0 owns */
	char key[32];
	uint64_t q = 0;
	for (;; q++) {
		key_of(key, sizeof key, q);
		rn_id pos;
		rn_id_hash(&pos, key, strlen(key), RN_ID_BITS);
		rn_id_truncate(&pos, BITS);
		if (true_owner(w, &pos) == 0)
			break;
	}
	kv_request r = {.op = KV_PUT,
	                .key = (const uint8_t *)key,
	                .klen = strlen(key),
	                .val = (const uint8_t *)"\"v\"",
	                .vlen = 3};
	w->replied = false;
	kv_client(w->n[0].kv, w->now, 1, &r); /* the whole ring in view: stored */
	run_to_reply(w);
	assert_int_equal(w->last.status, KV_OK);
	assert_int_equal(w->last.nacked, 3);
	ring_peer pred = {w->n[neighbour(w, 0, true)].id, neighbour(w, 0, true)};
	kv_set_view(w->n[0].kv, w->now, true, pred, NULL, 0); /* its successors are gone */
	w->replied = false;
	kv_client(w->n[0].kv, w->now, 2, &r);
	run_to_reply(w);
	assert_int_equal(w->last.status, KV_NOT_APPLIED);
	ring_peer self = {w->n[0].id, 0};
	kv_set_members(w->n[0].kv, w->now, &self, 1); /* the others are gone: alone */
	w->replied = false;
	kv_client(w->n[0].kv, w->now, 3, &r);
	run_to_reply(w);
	assert_int_equal(w->last.status, KV_OK);
	world_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_member_table_oracle),
	    cmocka_unit_test(test_exact_table_routes_to_owner),
	    cmocka_unit_test(test_stale_tables_converge),
	    cmocka_unit_test(test_cache_above_max),
	    cmocka_unit_test(test_cut_off_node_refuses_writes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
