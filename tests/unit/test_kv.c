/* test_kv.c — the key-value core against a brute-force oracle.
 *
 The driver is the simulator's (src/sim/kvsim.c): N kv cores with in-memory stores, an
 * event heap with random message latency (so messages overtake each other), lookups
 * answered from the true membership, and each node's view (predecessor, successors) given
 * to it whenever membership changes. Crashed nodes keep their stores, as disks would, and
 * bounce what is sent to them. The oracle keeps every write the clients made
 * and which were acknowledged, and checks reads and placement against it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kv/kv.h"
#include "kv/memstore.h"
#include "kv/near.h"
#include "lib/err.h"
#include "lib/id.h"
#include "lib/rng.h"
#include "sim/kvsim.h"

#define MAXN   48
#define MAXOPS 20000

typedef struct {
	uint8_t op;
	char key[32];
	char val[32];
	uint32_t entry;
	bool replied;
	kv_status status;
	kv_version v; /* a write's version (as stamped) */
	bool has_v;
	char got[64]; /* a get's value */
	bool replayed;
	bool orphaned; /* its entry node crashed before answering: the client saw an error */
} cop;

/* The simulator's network of kv cores (src/sim/kvsim.h) and the clients' log. */
/* Repair pushes (REPL without a request id) watched through kvs_params.on_send: the
 * record bytes one delivery made a node push to one destination (an exchange). */
typedef struct {
	uint32_t to;        /* the node watched */
	uint64_t event;     /* the delivery being summed */
	uint32_t from;      /* ... and its pusher */
	uint64_t bytes;     /* record bytes pushed to `to` in it */
	uint64_t max_bytes; /* the largest such sum seen */
	uint64_t exchanges; /* deliveries that pushed anything to `to` */
} push_watch;

typedef struct {
	kvs_net *k;
	cop *ops;
	size_t nops;
	push_watch *watch;
	bool unchecked; /* gets ask to skip the check of the copy (kv_request.unchecked) */
	uint64_t reqs_from[MAXN]; /* requests (REQ) each node sent */
	bool cutting;             /* replication to node `cut` is lost on the way */
	uint32_t cut;
} net;

static void on_reply(void *arg, uint64_t client, const kv_reply *r)
{
	net *t = arg;
	assert_true(client < t->nops);
	cop *o = &t->ops[client];
	assert_false(o->replied); /* one answer per request */
	o->replied = true;
	o->status = r->status;
	o->replayed = r->replayed;
	if (r->has_rec) {
		o->v = r->rec.v;
		o->has_v = true;
		if (o->op == KV_GET && r->rec.vlen < sizeof o->got)
			memcpy(o->got, r->rec.val, r->rec.vlen);
	}
}

static bool drop(void *arg, uint32_t from, const kv_msg *m)
{
	net *t = arg;
	(void)from;
	return t->cutting && m->to == t->cut && m->type == KV_MSG_REPL;
}

static void on_send(void *arg, uint32_t from, const kv_msg *m)
{
	net *t = arg;
	if (m->type == KV_MSG_REQ && from < MAXN)
		t->reqs_from[from]++;
	push_watch *w = t->watch;
	if (!w || m->type != KV_MSG_REPL || m->req || !m->has_rec || m->to != w->to)
		return;
	if (!w->exchanges || w->event != t->k->events || w->from != from) {
		w->event = t->k->events;
		w->from = from;
		w->bytes = 0;
		w->exchanges++;
	}
	w->bytes += m->rec.klen + m->rec.vlen;
	if (w->bytes > w->max_bytes)
		w->max_bytes = w->bytes;
}

#define CFG(t)     ((t)->k->p.kv)
#define NODE(t, i) ((t)->k->n[i])

/* a test's own changes to the kv config of the next net made, or NULL */
static void (*kv_tweak)(kv_config *c);

/* real: every node runs the Chord core too (kvs_params.real_ring), with fast timers */
static net *net_new_ring(uint32_t n, uint64_t seed, bool real)
{
	net *t = calloc(1, sizeof *t);
	assert_non_null(t);
	kvs_params p = {
	    .latency_min_ms = 1, .latency_max_ms = 5, .seed = seed, .on_reply = on_reply, .arg = t};
	p.on_send = on_send;
	p.drop = drop;
	p.real_ring = real;
	p.unreach_ms = 20;
	p.probe_ms = 250; /* as the node probes (ring_probe), on the fast timers */
	ring_config_default(&p.ring);
	p.ring.stabilize_ms = 50;
	p.ring.fix_fingers_ms = 50;
	p.ring.check_pred_ms = 100;
	p.ring.rpc_timeout_ms = 150;
	kv_config_default(&p.kv);
	p.kv.op_timeout_ms = 100;
	p.kv.lease_ms = 60;
	p.kv.req_timeout_ms = 1000;
	p.kv.sync_ms = 200;
	p.kv.settle_ms = 500;
	p.kv.cover_ms = 800;
	p.kv.tomb_grace_ms = 600000; /* test_tombstone_collected sets its own */
	p.kv.wall_offset_ms = 1700000000000ull;
	if (kv_tweak)
		kv_tweak(&p.kv);
	t->k = kvs_new(&p);
	assert_non_null(t->k);
	t->ops = calloc(MAXOPS, sizeof *t->ops);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_not_equal(kvs_add(t->k, NULL), UINT32_MAX);
		kvs_run(t->k, t->k->now + (real ? 100 : 0)); /* a join at a time */
	}
	return t;
}

static net *net_new(uint32_t n, uint64_t seed)
{
	return net_new_ring(n, seed, false);
}

/* The ring cores' successors and predecessors against the sorted live ids. */
static void check_ring(net *t)
{
	uint32_t live[MAXN], n = 0;
	for (uint32_t i = 0; i < t->k->count; i++)
		if (NODE(t, i)->alive)
			live[n++] = i;
	for (uint32_t a = 1; a < n; a++) /* brute force: insertion sort by id */
		for (uint32_t b = a;
		     b > 0 && rn_id_cmp(&NODE(t, live[b - 1])->id, &NODE(t, live[b])->id) > 0;
		     b--) {
			uint32_t x = live[b];
			live[b] = live[b - 1];
			live[b - 1] = x;
		}
	for (uint32_t k = 0; k < n; k++) {
		ring_node *r = NODE(t, live[k])->ring;
		assert_true(ring_joined(r));
		assert_int_equal(ring_successor(r).addr, live[(k + 1) % n]);
		assert_int_equal(ring_predecessor(r).addr, live[(k + n - 1) % n]);
		ring_peer pred, succ[KVS_NSUCC];
		size_t ns = kv_get_view(NODE(t, live[k])->kv, &pred, succ, KVS_NSUCC);
		assert_true(ns >= 1);
		assert_int_equal(succ[0].addr, live[(k + 1) % n]); /* the kv core sees the same */
	}
}

static void net_free(net *t)
{
	kvs_free(t->k);
	free(t->ops);
	free(t);
}

static void run(net *t, uint64_t until)
{
	kvs_run(t->k, until);
}

static size_t client_if(net *t, uint32_t entry, uint8_t op, const char *key, const char *val,
                        const char *rid, const kv_version *cond);

static size_t client(net *t, uint32_t entry, uint8_t op, const char *key, const char *val,
                     const char *rid)
{
	return client_if(t, entry, op, key, val, rid, NULL);
}

/* A request, conditional on the key's version being *cond when cond is not NULL. */
static size_t client_if(net *t, uint32_t entry, uint8_t op, const char *key, const char *val,
                        const char *rid, const kv_version *cond)
{
	assert_true(t->nops < MAXOPS);
	size_t id = t->nops++;
	cop *o = &t->ops[id];
	memset(o, 0, sizeof *o);
	o->op = op;
	o->entry = entry;
	snprintf(o->key, sizeof o->key, "%s", key);
	if (val)
		snprintf(o->val, sizeof o->val, "%s", val);
	kv_request r = {.op = (kv_op)op,
	                .key = (const uint8_t *)key,
	                .klen = strlen(key),
	                .val = (const uint8_t *)val,
	                .vlen = val ? strlen(val) : 0,
	                .rid = (const uint8_t *)rid,
	                .ridlen = rid ? strlen(rid) : 0,
	                .unchecked = t->unchecked};
	if (cond) {
		r.has_cond = true;
		r.cond = *cond;
	}
	kvs_client(t->k, entry, id, &r);
	return id;
}

static uint32_t random_live(net *t)
{
	return kvs_random_live(t->k);
}

static void kill(net *t, uint32_t i)
{
	for (size_t j = 0; j < t->nops; j++)
		if (t->ops[j].entry == i && !t->ops[j].replied)
			t->ops[j].orphaned = true;
	kvs_kill(t->k, i);
}

/* A restart: the core's memory is gone, its store is not. */
static void revive(net *t, uint32_t i)
{
	kvs_revive(t->k, i);
}

static uint32_t add_node(net *t)
{
	return kvs_add(t->k, NULL);
}

static uint32_t true_replicas(net *t, const rn_id *kid, uint32_t *out)
{
	return kvs_replicas(t->k, kid, out);
}

/* ---- oracle checks ---- */

static void kid_of(const char *key, rn_id *kid)
{
	rn_id_hash(kid, key, strlen(key), RN_ID_BITS);
}

/* For every key, the newest write any client saw acknowledged (index into ops, or -1). */
static long newest_acked(net *t, const char *key)
{
	long best = -1;
	for (size_t i = 0; i < t->nops; i++) {
		cop *o = &t->ops[i];
		if (o->op == KV_GET || !o->replied || o->status != KV_OK || strcmp(o->key, key))
			continue;
		if (best < 0 || kv_version_cmp(&o->v, &t->ops[best].v) > 0)
			best = (long)i;
	}
	return best;
}

/* The write (acknowledged or not) that made version v of key. */
static cop *write_of(net *t, const char *key, const kv_version *v)
{
	for (size_t i = 0; i < t->nops; i++) {
		cop *o = &t->ops[i];
		if (o->op != KV_GET && o->has_v && !strcmp(o->key, key) &&
		    kv_version_cmp(&o->v, v) == 0)
			return o;
	}
	return NULL;
}

/* Reads key through a random live node and checks it against what was acknowledged. */
static void check_read(net *t, const char *key)
{
	size_t id = client(t, random_live(t), KV_GET, key, NULL, NULL);
	run(t, t->k->now + 3000);
	cop *g = &t->ops[id];
	assert_true(g->replied);
	long w = newest_acked(t, key);
	if (w < 0) { /* never acknowledged: anything but an error */
		assert_true(g->status == KV_OK || g->status == KV_NOT_FOUND);
		return;
	}
	cop *a = &t->ops[w];
	if (g->status != KV_OK && g->status != KV_NOT_FOUND)
		fail_msg("read of %s: status %d, acknowledged %s", key, g->status,
		         a->op == KV_PUT ? a->val : "(delete)");
	if (g->status == KV_NOT_FOUND) {
		assert_int_equal(a->op, KV_DEL); /* never a lost put */
		assert_true(g->has_v);           /* a tombstone, not a guess */
		assert_true(kv_version_cmp(&g->v, &a->v) >= 0);
		return;
	}
	assert_true(g->has_v);
	assert_true(kv_version_cmp(&g->v, &a->v) >= 0); /* never older than acknowledged */
	cop *src = write_of(t, key, &g->v);
	if (!src) {
		/* a write whose entry node crashed before answering has no version in the log,
		 * yet may have been applied: the value must be one of those */
		for (size_t i = 0; i < t->nops && !src; i++) {
			cop *o = &t->ops[i];
			if (o->op == KV_PUT && !o->has_v && !strcmp(o->key, key) &&
			    !strcmp(o->val, g->got))
				src = o;
		}
		assert_non_null(src);
		return;
	}
	assert_non_null(src);
	assert_int_equal(src->op, KV_PUT);
	assert_string_equal(g->got, src->val);
}

typedef struct {
	uint32_t holders;
} count_ctx;

/* Every live node that holds key, with the version v. */
static uint32_t holders(net *t, const rn_id *kid, const kv_version *v, uint32_t *out)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < t->k->count; i++) {
		kv_record r;
		if (NODE(t, i)->alive && memstore_get(NODE(t, i)->st, kid, &r) == 0 &&
		    (!v || kv_version_cmp(&r.v, v) == 0))
			out[n++] = i;
	}
	return n;
}

/* After repair: each key held by exactly its true replicas, all with the same version. */
static void check_placement(net *t, const char *key)
{
	rn_id kid;
	kid_of(key, &kid);
	uint32_t want[KV_MAX_R], have[MAXN], any[MAXN];
	uint32_t nw = true_replicas(t, &kid, want);
	uint32_t na = holders(t, &kid, NULL, any);
	if (!na)
		return; /* a key never written, or a tombstone collected everywhere */
	kv_record r;
	memstore_get(NODE(t, any[0])->st, &kid, &r);
	kv_version v = r.v;
	for (uint32_t i = 1; i < na; i++) {
		memstore_get(NODE(t, any[i])->st, &kid, &r);
		if (kv_version_cmp(&r.v, &v) > 0)
			v = r.v;
	}
	uint32_t nh = holders(t, &kid, &v, have);
	if (nh != nw || na != nw)
		fail_msg("key %s: %u live holders (%u with the newest version), want %u", key, na,
		         nh, nw);
	for (uint32_t i = 0; i < nw; i++) {
		bool found = false;
		for (uint32_t j = 0; j < nh && !found; j++)
			found = have[j] == want[i];
		assert_true(found);
	}
}

/* ---- tests ---- */

static void test_record_codec(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 7);
	uint8_t buf[4096];
	for (int i = 0; i < 2000; i++) {
		uint8_t key[300], val[1000], rid[KV_RID_MAX], hist[KV_HIST_MAX * KV_HIST_ENTRY];
		kv_record r = {.klen = 1 + rn_rng_below(&rng, sizeof key),
		               .vlen = rn_rng_below(&rng, sizeof val),
		               .ridlen = rn_rng_below(&rng, KV_RID_MAX + 1),
		               .histlen = KV_HIST_ENTRY * rn_rng_below(&rng, KV_HIST_MAX + 1)};
		for (size_t j = 0; j < sizeof hist; j++)
			hist[j] = (uint8_t)rn_rng_next(&rng);
		r.hist = hist;
		for (size_t j = 0; j < sizeof key; j++)
			key[j] = (uint8_t)rn_rng_next(&rng);
		for (size_t j = 0; j < sizeof val; j++)
			val[j] = (uint8_t)rn_rng_next(&rng);
		for (size_t j = 0; j < sizeof rid; j++)
			rid[j] = (uint8_t)rn_rng_next(&rng);
		r.key = key;
		r.val = val;
		r.rid = rid;
		r.v = (kv_version){rn_rng_next(&rng), rn_rng_next(&rng), rn_rng_below(&rng, 2)};
		rn_id_random(&r.kid, &rng, 160);
		size_t n = kv_record_size(&r);
		assert_true(n <= sizeof buf);
		kv_record_encode(&r, buf);
		kv_record d;
		assert_int_equal(kv_record_decode(buf, n, &r.kid, &d), 0);
		assert_int_equal(kv_version_cmp(&d.v, &r.v), 0);
		assert_int_equal(d.klen, r.klen);
		assert_memory_equal(d.key, key, r.klen);
		assert_int_equal(d.vlen, r.vlen);
		assert_memory_equal(d.val, val, r.vlen);
		assert_int_equal(d.ridlen, r.ridlen);
		assert_memory_equal(d.rid, rid, r.ridlen);
		assert_int_equal(d.histlen, r.histlen);
		assert_memory_equal(d.hist, hist, r.histlen);
		/* cut short or bad bytes: an error, never a record pointing past the end */
		size_t cut = rn_rng_below(&rng, 22);
		assert_int_equal(kv_record_decode(buf, cut, &r.kid, &d), RN_EPROTO);
		buf[0] ^= 0xff;
		assert_int_equal(kv_record_decode(buf, n, &r.kid, &d), RN_EPROTO);
		buf[0] ^= 0xff;
		buf[22] = KV_HIST_ENTRY + 1; /* not a whole number of entries */
		assert_int_equal(kv_record_decode(buf, n, &r.kid, &d), RN_EPROTO);
	}
	/* format 1, as stores wrote it before the history: no history length, no history */
	static const uint8_t old[] = {'K', 1, 1,   0,   0,   0,   0,   0,   0,   0,
	                              7,   0, 0,   0,   0,   0,   0,   0,   9,   0,
	                              2,   3, 'k', '1', 'r', 'i', 'd', '"', 'x', '"'};
	kv_record d;
	rn_id kid = {0};
	assert_int_equal(kv_record_decode(old, sizeof old, &kid, &d), 0);
	assert_true(d.v.tomb);
	assert_int_equal(d.v.stamp, 7);
	assert_int_equal(d.v.writer, 9);
	assert_int_equal(d.klen, 2);
	assert_memory_equal(d.key, "k1", 2);
	assert_int_equal(d.ridlen, 3);
	assert_memory_equal(d.rid, "rid", 3);
	assert_int_equal(d.histlen, 0);
	assert_int_equal(d.vlen, 3);
	assert_memory_equal(d.val, "\"x\"", 3);
}

/* memstore's ring-interval scan against a filter over every record. */
static int collect_kid(void *arg, const kv_record *r)
{
	rn_id **p = arg;
	*(*p)++ = r->kid;
	return 0;
}

static void test_memstore_scan(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 11);
	memstore *s = memstore_new();
	rn_id ids[300];
	for (int i = 0; i < 300; i++) {
		rn_id_random(&ids[i], &rng, 160);
		kv_record r = {.kid = ids[i], .key = (const uint8_t *)"k", .klen = 1};
		assert_int_equal(memstore_put(s, &r), 0);
	}
	assert_int_equal(memstore_count(s), 300);
	for (int round = 0; round < 200; round++) {
		rn_id lo = ids[rn_rng_below(&rng, 300)], hi;
		if (round % 3)
			rn_id_random(&hi, &rng, 160);
		else
			hi = round % 2 ? lo : ids[rn_rng_below(&rng, 300)];
		rn_id got[300], *p = got;
		memstore_scan(s, &lo, &hi, false, collect_kid, &p);
		size_t n = (size_t)(p - got), want = 0;
		for (int i = 0; i < 300; i++)
			want += rn_id_in_oc(&ids[i], &lo, &hi);
		assert_int_equal(n, want);
		for (size_t i = 0; i < n; i++) {
			assert_true(rn_id_in_oc(&got[i], &lo, &hi));
			if (i) { /* ring order from lo: lo + 1 first, lo itself last */
				rn_id a, b, lo1 = lo;
				rn_id_add_pow2(&lo1, &lo1, 0);
				rn_id_sub(&a, &got[i - 1], &lo1);
				rn_id_sub(&b, &got[i], &lo1);
				assert_true(rn_id_cmp(&a, &b) < 0);
			}
		}
	}
	for (int i = 0; i < 300; i += 2)
		assert_int_equal(memstore_del(s, &ids[i]), 0);
	assert_int_equal(memstore_del(s, &ids[0]), RN_ENOTFOUND);
	assert_int_equal(memstore_count(s), 150);
	memstore_free(s);
}

static void test_put_get_delete(void **state)
{
	(void)state;
	net *t = net_new(10, 1);
	run(t, 1000);
	size_t p = client(t, 3, KV_PUT, "color", "\"blue\"", NULL);
	run(t, t->k->now + 500);
	assert_true(t->ops[p].replied);
	assert_int_equal(t->ops[p].status, KV_OK);
	for (uint32_t e = 0; e < 10; e++) { /* any node answers */
		size_t g = client(t, e, KV_GET, "color", NULL, NULL);
		run(t, t->k->now + 500);
		assert_int_equal(t->ops[g].status, KV_OK);
		assert_string_equal(t->ops[g].got, "\"blue\"");
		assert_int_equal(kv_version_cmp(&t->ops[g].v, &t->ops[p].v), 0);
	}
	check_placement(t, "color");
	/* a key nobody wrote: sure it is absent once the ring is settled */
	size_t g = client(t, 5, KV_GET, "nothing", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[g].status, KV_NOT_FOUND);
	assert_false(t->ops[g].has_v);
	size_t d = client(t, 7, KV_DEL, "color", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[d].status, KV_OK);
	assert_true(kv_version_cmp(&t->ops[d].v, &t->ops[p].v) > 0);
	g = client(t, 0, KV_GET, "color", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[g].status, KV_NOT_FOUND);
	assert_true(t->ops[g].has_v && t->ops[g].v.tomb);
	net_free(t);
}

/* A fresh view is not sure enough to say "not found". */
static void test_no_false_not_found(void **state)
{
	(void)state;
	net *t = net_new(8, 2);
	run(t, 1000);
	uint32_t fresh = add_node(t);
	char key[32];
	for (int i = 0;; i++) { /* a key the new node owns: its range just moved */
		snprintf(key, sizeof key, "never-%d", i);
		rn_id kid;
		kid_of(key, &kid);
		uint32_t reps[KV_MAX_R];
		true_replicas(t, &kid, reps);
		if (reps[0] == fresh)
			break;
	}
	size_t g = client(t, 0, KV_GET, key, NULL, NULL);
	run(t, t->k->now + 300);
	assert_true(t->ops[g].replied);
	assert_int_equal(t->ops[g].status, KV_UNSURE);
	/* still for settle_ms: the owner would answer from its own copy, but a key no replica
	 * holds may still be on its way from an old owner (the test below) */
	run(t, t->k->now + CFG(t).settle_ms);
	g = client(t, 0, KV_GET, key, NULL, NULL);
	run(t, t->k->now + 50);
	assert_int_equal(t->ops[g].status, KV_UNSURE);
	run(t, t->k->now + CFG(t).cover_ms + 2 * CFG(t).sync_ms);
	g = client(t, 0, KV_GET, key, NULL, NULL);
	run(t, t->k->now + 300);
	assert_int_equal(t->ops[g].status, KV_NOT_FOUND);
	net_free(t);
}

/* A record only an old owner holds (written while the ring grew), and a change of the ring
 * that reaches the key's owner and that node at the same moment: the owner must not be
 * sure the key is absent before that node's handoff, which waits for its view to be still
 * for cover_ms. Every read until then is the value or unsure, never "not found"; then
 * the value. */
static void test_no_not_found_before_handoff(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++) {
		net *t = net_new(8, seed);
		run(t, 3000);
		const char *key = "held-by-an-old-owner";
		rn_id kid;
		kid_of(key, &kid);
		uint32_t reps[KV_MAX_R];
		true_replicas(t, &kid, reps);
		uint32_t n = t->k->nlive, at = 0;
		while (t->k->live[at] != reps[0])
			at++;
		uint32_t old = t->k->live[(at + 3) % n]; /* the node after the key's replicas */
		kv_record r = {.kid = kid,
		               .key = (const uint8_t *)key,
		               .klen = strlen(key),
		               .val = (const uint8_t *)"\"kept\"",
		               .vlen = 6,
		               .v = {(t->k->now + CFG(t).wall_offset_ms) << 16, 1, false}};
		assert_int_equal(memstore_put(NODE(t, old)->st, &r), 0);
		/* a node just before it: its predecessor changes, and so does the owner's third
		 * successor, at once */
		rn_id id, one;
		memset(&one, 0, sizeof one);
		one.b[RN_ID_BYTES - 1] = 1;
		rn_id_sub(&id, &NODE(t, old)->id, &one);
		kvs_add(t->k, &id);
		size_t first = t->nops;
		for (uint32_t i = 0; i < 3 * CFG(t).cover_ms / 20; i++) {
			client(t, random_live(t), KV_GET, key, NULL, NULL);
			run(t, t->k->now + 20);
		}
		run(t, t->k->now + 1000);
		for (size_t i = first; i < t->nops; i++) {
			assert_true(t->ops[i].replied);
			if (t->ops[i].status == KV_NOT_FOUND)
				fail_msg("seed %llu: read %zu of %zu answered not found",
				         (unsigned long long)seed, i - first, t->nops - first);
			if (t->ops[i].status == KV_OK)
				assert_string_equal(t->ops[i].got, "\"kept\"");
		}
		size_t g = client(t, random_live(t), KV_GET, key, NULL, NULL);
		run(t, t->k->now + 500);
		assert_int_equal(t->ops[g].status, KV_OK);
		net_free(t);
	}
}

/* A node that joins owns keys it does not hold yet: reads still find them. */
static void test_join_reads_and_repair(void **state)
{
	(void)state;
	net *t = net_new(6, 3);
	run(t, 1000);
	char key[32], val[32];
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "k%d", i);
		snprintf(val, sizeof val, "%d", i);
		client(t, random_live(t), KV_PUT, key, val, NULL);
	}
	run(t, t->k->now + 2000);
	for (int j = 0; j < 4; j++)
		add_node(t);
	for (int i = 0; i < 200; i++) { /* at once, before any repair has run */
		snprintf(key, sizeof key, "k%d", i);
		size_t g = client(t, random_live(t), KV_GET, key, NULL, NULL);
		run(t, t->k->now + 20);
		(void)g;
	}
	run(t, t->k->now + 1000);
	for (size_t i = 0; i < t->nops; i++)
		if (t->ops[i].op == KV_GET) {
			assert_true(t->ops[i].replied);
			assert_int_not_equal(t->ops[i].status, KV_NOT_FOUND);
		}
	run(t, t->k->now + 10 * CFG(t).cover_ms); /* repair and handoff */
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "k%d", i);
		check_placement(t, key);
		check_read(t, key);
	}
	net_free(t);
}

/* Random puts and deletes through random nodes while nodes crash and come back, fewer
 * than R at a time between repairs: every acknowledged write survives, and once things
 * settle every key is on exactly its R replicas. */
static void churn_ring(uint64_t seed, uint32_t nodes, unsigned R, unsigned W, bool real)
{
	net *t = net_new_ring(nodes, seed, real);
	CFG(t).replicas = R;
	CFG(t).write_quorum = W;
	CFG(t).read_quorum = R + 1 - W;
	for (uint32_t i = 0; i < t->k->count; i++) {
		revive(t, i);
		run(t, t->k->now + (real ? 100 : 0));
	}
	run(t, t->k->now + 1000);
	const int keys = 60;
	char key[32], val[32];
	uint32_t down = UINT32_MAX;
	for (int step = 0; step < 1500; step++) {
		int k = (int)rn_rng_below(&t->k->rng, keys);
		snprintf(key, sizeof key, "key-%d", k);
		snprintf(val, sizeof val, "v%d", step);
		uint8_t op = rn_rng_below(&t->k->rng, 5) == 0 ? KV_DEL : KV_PUT;
		client(t, random_live(t), op, key, op == KV_PUT ? val : NULL, NULL);
		run(t, t->k->now + rn_rng_below(&t->k->rng, 8));
		if (step % 100 == 50) { /* one node at a time down, then back after a repair */
			if (down != UINT32_MAX) {
				revive(t, down);
				down = UINT32_MAX;
			} else {
				down = random_live(t);
				kill(t, down);
			}
		}
		if (step % 300 == 299 && t->k->count < MAXN)
			add_node(t);
		if (step % 100 == 99)
			run(t, t->k->now + 3 * CFG(t).sync_ms);
	}
	if (down != UINT32_MAX)
		revive(t, down);
	run(t, t->k->now + 20 * CFG(t).cover_ms);
	size_t acked = 0;
	for (size_t i = 0; i < t->nops; i++) {
		/* every request got an answer, unless its entry node crashed */
		assert_true(t->ops[i].replied || t->ops[i].orphaned);
		acked += t->ops[i].status == KV_OK;
	}
	assert_true(acked > t->nops / 2); /* the run did something */
	for (int k = 0; k < keys; k++) {
		snprintf(key, sizeof key, "key-%d", k);
		check_read(t, key);
	}
	run(t, t->k->now + 20 * CFG(t).cover_ms);
	for (int k = 0; k < keys; k++) {
		snprintf(key, sizeof key, "key-%d", k);
		check_placement(t, key);
	}
	if (real)
		check_ring(t);
	net_free(t);
}

static void churn_run(uint64_t seed, uint32_t nodes, unsigned R, unsigned W)
{
	churn_ring(seed, nodes, R, W, false);
}

/* The same churn with the real Chord core on every node: its joins, its failure
 * detection, its lookups. After the quiet time the rings are exact and no acknowledged
 * write is lost or misplaced. */
static void test_churn_real_ring(void **state)
{
	(void)state;
	for (uint64_t seed = 40; seed < 43; seed++)
		churn_ring(seed, 12, 3, 2, true);
	churn_ring(43, 16, 5, 3, true);
}

static void test_churn_r3w2(void **state)
{
	(void)state;
	for (uint64_t seed = 10; seed < 14; seed++)
		churn_run(seed, 12, 3, 2);
}

static void test_churn_r2w1_r5w3(void **state)
{
	(void)state;
	churn_run(20, 10, 2, 1);
	churn_run(21, 16, 5, 3);
}

/* A late repair never brings back an older value: a node that was down during an
 * overwrite and a delete returns with its old copy, and the newer versions win. */
static void test_stale_replica_loses(void **state)
{
	(void)state;
	net *t = net_new(7, 4);
	run(t, 1000);
	client(t, 0, KV_PUT, "x", "\"old\"", NULL);
	client(t, 0, KV_PUT, "y", "\"old\"", NULL);
	run(t, t->k->now + 1000);
	rn_id kid;
	kid_of("x", &kid);
	uint32_t reps[KV_MAX_R];
	true_replicas(t, &kid, reps);
	kill(t, reps[0]); /* the owner of x goes away with "old" */
	size_t p = client(t, 1, KV_PUT, "x", "\"new\"", NULL);
	size_t d = client(t, 1, KV_DEL, "y", NULL, NULL);
	run(t, t->k->now + 2000);
	assert_int_equal(t->ops[p].status, KV_OK);
	assert_int_equal(t->ops[d].status, KV_OK);
	revive(t, reps[0]);
	run(t, t->k->now + 10 * CFG(t).cover_ms);
	check_read(t, "x");
	check_read(t, "y");
	check_placement(t, "x");
	net_free(t);
}

/* The check a driver can give (kv_set_check): here a value is good unless it starts with
 * '!', which is how damage() spoils a copy on one node's "disk" (same version). */
static bool check_bang(void *ctx, const kv_record *r)
{
	(void)ctx;
	return !(r->vlen && r->val[0] == '!');
}

static void damage(net *t, uint32_t i, const char *key)
{
	rn_id kid;
	kid_of(key, &kid);
	kv_record cur;
	assert_int_equal(memstore_get(NODE(t, i)->st, &kid, &cur), 0);
	uint8_t k[64], v[64];
	assert_true(cur.klen <= sizeof k && cur.vlen <= sizeof v && cur.vlen > 0);
	memcpy(k, cur.key, cur.klen);
	memcpy(v, cur.val, cur.vlen);
	v[0] = '!';
	kv_record r = cur;
	r.key = k;
	r.val = v;
	r.rid = NULL;
	r.ridlen = 0;
	assert_int_equal(memstore_put(NODE(t, i)->st, &r), 0);
}

static bool copy_good(net *t, uint32_t i, const char *key, const kv_version *v)
{
	rn_id kid;
	kid_of(key, &kid);
	kv_record cur;
	return memstore_get(NODE(t, i)->st, &kid, &cur) == 0 && check_bang(NULL, &cur) &&
	       kv_version_cmp(&cur.v, v) == 0;
}

/* Six nodes with the check, "blob" written and the ring settled (the owner reads its own
 * copy); *w is the write, reps its 3 replicas, whose copies are good. */
static net *blob_net(uint64_t seed, size_t *w, uint32_t reps[KV_MAX_R])
{
	net *t = net_new(6, seed);
	for (uint32_t i = 0; i < 6; i++)
		kv_set_check(NODE(t, i)->kv, check_bang);
	run(t, 1000);
	*w = client(t, 0, KV_PUT, "blob", "\"good\"", NULL);
	run(t, t->k->now + CFG(t).settle_ms + 1000);
	assert_int_equal(t->ops[*w].status, KV_OK);
	rn_id kid;
	kid_of("blob", &kid);
	assert_int_equal(true_replicas(t, &kid, reps), 3);
	for (int k = 0; k < 3; k++)
		assert_true(copy_good(t, reps[k], "blob", &t->ops[*w].v));
	return t;
}

/* A get of "blob" through node at, run for ms: it must be found with the value want. */
static void get_blob_is(net *t, uint32_t at, uint64_t ms, const char *want)
{
	size_t g = client(t, at, KV_GET, "blob", NULL, NULL);
	run(t, t->k->now + ms);
	assert_int_equal(t->ops[g].status, KV_OK);
	assert_string_equal(t->ops[g].got, want);
}

/* A copy damaged on disk has the version of a good one, so repair by versions cannot see
 * it: a get must not serve it (not even the settled owner from its own copy), must answer
 * with a good copy and rewrite the damaged one; with every copy damaged it is unsure. */
static void test_damaged_copy(void **state)
{
	(void)state;
	size_t w;
	uint32_t reps[KV_MAX_R];
	net *t = blob_net(31, &w, reps);
	/* the owner's copy damaged */
	damage(t, reps[0], "blob");
	get_blob_is(t, reps[2], 2000, "\"good\"");
	assert_true(copy_good(t, reps[0], "blob", &t->ops[w].v));
	assert_true(kv_get_stats(NODE(t, reps[0])->kv)->damaged_repaired >= 1);
	/* every copy damaged: unsure, never the damaged bytes, never "not found" */
	for (int k = 0; k < 3; k++)
		damage(t, reps[k], "blob");
	size_t g = client(t, reps[1], KV_GET, "blob", NULL, NULL);
	run(t, t->k->now + 3000);
	assert_true(t->ops[g].replied);
	assert_int_equal(t->ops[g].status, KV_UNSURE);
	/* one good copy left and the owner gone: the next replica coordinates, answers with
	 * the good copy and rewrites its own */
	for (int k = 0; k < 3; k++)
		assert_false(copy_good(t, reps[k], "blob", &t->ops[w].v));
	rn_id k2;
	kid_of("blob", &k2);
	kv_record cur;
	assert_int_equal(memstore_get(NODE(t, reps[2])->st, &k2, &cur), 0);
	kv_record fixed = cur;
	uint8_t key[8], val[8];
	memcpy(key, cur.key, cur.klen);
	memcpy(val, "\"good\"", 6);
	fixed.key = key;
	fixed.val = val;
	fixed.vlen = 6;
	fixed.rid = NULL;
	fixed.ridlen = 0;
	assert_int_equal(memstore_put(NODE(t, reps[2])->st, &fixed), 0);
	kill(t, reps[0]);
	run(t, t->k->now + 2000);
	get_blob_is(t, reps[2], 3000, "\"good\"");
	assert_true(copy_good(t, reps[1], "blob", &t->ops[w].v));
	net_free(t);
}

/* A get whose caller checks the value itself (kv_request.unchecked) is served from the
 * settled owner's copy without the check, damaged or not; the caller's get without the
 * flag then finds the damage, answers with a good copy and rewrites the owner's. */
static void test_unchecked_get(void **state)
{
	(void)state;
	size_t w;
	uint32_t reps[KV_MAX_R];
	net *t = blob_net(37, &w, reps);
	damage(t, reps[0], "blob");
	uint32_t entry = 0; /* not a replica: a replica under a lease answers itself */
	while (entry == reps[0] || entry == reps[1] || entry == reps[2])
		entry++;
	t->unchecked = true;
	get_blob_is(t, entry, 2000, "!good\""); /* the owner's copy, as it is */
	assert_false(copy_good(t, reps[0], "blob", &t->ops[w].v));
	t->unchecked = false;
	get_blob_is(t, entry, 2000, "\"good\"");
	assert_true(copy_good(t, reps[0], "blob", &t->ops[w].v));
	/* a good copy asked for unchecked is the same answer */
	t->unchecked = true;
	get_blob_is(t, entry, 2000, "\"good\"");
	net_free(t);
}

/* The background scrub finds damaged copies nobody reads, on the owner and on the other
 * replicas, and anti-entropy puts good ones back; with every copy of a key damaged the key
 * ends up absent (told, never served). */
static void test_scrub(void **state)
{
	(void)state;
	net *t = net_new(6, 33);
	for (uint32_t i = 0; i < 6; i++)
		kv_set_check(NODE(t, i)->kv, check_bang);
	run(t, 1000);
	enum { NK = 12 };
	char keys[NK][16];
	size_t w[NK];
	for (int i = 0; i < NK; i++) {
		snprintf(keys[i], sizeof keys[i], "cold-%d", i);
		w[i] = client(t, (uint32_t)i % 6, KV_PUT, keys[i], "\"good\"", NULL);
	}
	run(t, t->k->now + 2000);
	uint32_t reps[NK][KV_MAX_R];
	for (int i = 0; i < NK; i++) {
		assert_int_equal(t->ops[w[i]].status, KV_OK);
		rn_id kid;
		kid_of(keys[i], &kid);
		assert_int_equal(true_replicas(t, &kid, reps[i]), 3);
	}
	uint64_t found0 = 0;
	for (uint32_t n = 0; n < 6; n++)
		found0 += kv_get_stats(NODE(t, n)->kv)->scrub_damaged;
	/* key i: the copy on its replica i % 3 (0: the owner) is damaged; the last key on all */
	for (int i = 0; i < NK - 1; i++)
		damage(t, reps[i][i % 3], keys[i]);
	for (int r = 0; r < 3; r++)
		damage(t, reps[NK - 1][r], keys[NK - 1]);
	run(t, t->k->now + 31 * CFG(t).scrub_ms + 3 * CFG(t).sync_ms); /* a pass and repair */
	uint64_t found = 0, passes = 0;
	for (uint32_t n = 0; n < 6; n++) {
		found += kv_get_stats(NODE(t, n)->kv)->scrub_damaged;
		passes += kv_get_stats(NODE(t, n)->kv)->scrub_passes;
	}
	assert_int_equal(found - found0, NK - 1 + 3);
	assert_true(passes >= 6);
	for (int i = 0; i < NK - 1; i++)
		for (int r = 0; r < 3; r++)
			assert_true(copy_good(t, reps[i][r], keys[i], &t->ops[w[i]].v));
	rn_id kid;
	kid_of(keys[NK - 1], &kid);
	kv_record cur;
	for (int r = 0; r < 3; r++)
		assert_int_equal(memstore_get(NODE(t, reps[NK - 1][r])->st, &kid, &cur),
		                 RN_ENOTFOUND);
	size_t g = client(t, 2, KV_GET, keys[NK - 1], NULL, NULL);
	run(t, t->k->now + 2000);
	assert_true(t->ops[g].replied);
	assert_true(t->ops[g].status == KV_NOT_FOUND || t->ops[g].status == KV_UNSURE);
	net_free(t);
}

/* A retried write with the same request id is applied once. */
static void test_idempotent_retry(void **state)
{
	(void)state;
	net *t = net_new(6, 5);
	run(t, 1000);
	size_t a = client(t, 0, KV_PUT, "order-17", "\"paid\"", "req-abc");
	run(t, t->k->now + 500);
	size_t b = client(t, 4, KV_PUT, "order-17", "\"paid\"", "req-abc");
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[a].status, KV_OK);
	assert_false(t->ops[a].replayed);
	assert_int_equal(t->ops[b].status, KV_OK);
	assert_true(t->ops[b].replayed);
	assert_int_equal(kv_version_cmp(&t->ops[a].v, &t->ops[b].v), 0);
	size_t c = client(t, 4, KV_PUT, "order-17", "\"refunded\"", "req-def");
	run(t, t->k->now + 500);
	assert_false(t->ops[c].replayed);
	assert_true(kv_version_cmp(&t->ops[c].v, &t->ops[a].v) > 0);
	/* a newer write replaced it, and then the first request arrives again (a node that
	 * was stopped with it in a socket reads it, a client retries late): a replay with the
	 * first write's version, not a write over the newer one */
	size_t d = client(t, 2, KV_DEL, "order-17", NULL, "req-ghi");
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[d].status, KV_OK);
	size_t late = client(t, 3, KV_PUT, "order-17", "\"paid\"", "req-abc");
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[late].status, KV_OK);
	assert_true(t->ops[late].replayed);
	assert_int_equal(kv_version_cmp(&t->ops[late].v, &t->ops[a].v), 0);
	size_t g = client(t, 1, KV_GET, "order-17", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[g].status, KV_NOT_FOUND);
	net_free(t);
}

/* Request ids against a brute-force log of every write applied to each key: a request
 * sent again is a replay (the version of the newest write it made; nothing changes) when
 * it made one of the key's last KV_HIST_MAX + 1 writes, and a new write otherwise; after
 * each, a get reads what the log's last write made the key. */
static void test_request_id_history(void **state)
{
	(void)state;
	enum { KEYS = 3, STEPS = 300 };
	static size_t log[KEYS][STEPS]; /* the requests (t->ops) that made each key's writes */
	static char rids[STEPS][16];    /* the new requests' ids */
	static size_t rid_of[MAXOPS];   /* a request's id (rids index) */
	size_t nlog[KEYS] = {0}, nrid = 0, replays = 0, applied_again = 0;
	net *t = net_new(6, 21);
	run(t, 1000);
	rn_rng rng;
	rn_rng_seed(&rng, 5);
	for (int i = 0; i < STEPS; i++) {
		int kk = (int)rn_rng_below(&rng, KEYS);
		char key[8], val[32];
		snprintf(key, sizeof key, "h-%d", kk);
		size_t n = nlog[kk], r, o;
		bool again = n && rn_rng_below(&rng, 3) == 0;
		if (again) { /* one of the last 8 writes half the time, else any */
			size_t back = rn_rng_below(&rng, 2) ? n : (n < 8 ? n : 8);
			const cop *a = &t->ops[log[kk][n - 1 - rn_rng_below(&rng, (uint32_t)back)]];
			r = rid_of[a - t->ops];
			snprintf(val, sizeof val, "%s", a->val);
			o = client(t, random_live(t), a->op, key, a->op == KV_PUT ? val : NULL,
			           rids[r]);
		} else {
			r = nrid++;
			snprintf(rids[r], sizeof rids[r], "r-%d", i);
			bool del = rn_rng_below(&rng, 4) == 0;
			snprintf(val, sizeof val, "\"v%d\"", i);
			o = client(t, random_live(t), del ? KV_DEL : KV_PUT, key, del ? NULL : val,
			           rids[r]);
		}
		rid_of[o] = r;
		run(t, t->k->now + 500);
		assert_true(t->ops[o].replied);
		assert_int_equal(t->ops[o].status, KV_OK);
		size_t newest = SIZE_MAX; /* the newest of the last KV_HIST_MAX + 1 with its id */
		for (size_t j = n > KV_HIST_MAX + 1 ? n - KV_HIST_MAX - 1 : 0; again && j < n; j++)
			if (rid_of[log[kk][j]] == r)
				newest = log[kk][j];
		if (newest != SIZE_MAX) {
			assert_true(t->ops[o].replayed);
			assert_int_equal(kv_version_cmp(&t->ops[o].v, &t->ops[newest].v), 0);
			replays++;
		} else {
			assert_false(t->ops[o].replayed);
			log[kk][nlog[kk]++] = o;
			applied_again += again;
		}
		const cop *last = &t->ops[log[kk][nlog[kk] - 1]];
		size_t g = client(t, random_live(t), KV_GET, key, NULL, NULL);
		run(t, t->k->now + 500);
		if (last->op == KV_DEL) {
			assert_int_equal(t->ops[g].status, KV_NOT_FOUND);
		} else {
			assert_int_equal(t->ops[g].status, KV_OK);
			assert_string_equal(t->ops[g].got, last->val);
		}
	}
	assert_true(replays >= 20);
	assert_true(applied_again >= 20);
	net_free(t);
}

/* Compare-and-set. Of two creations conditional on absence exactly one succeeds; a write
 * conditional on an old version is refused with the version held and changes nothing; and
 * clients on every node incrementing one counter by read, then write-if-unchanged, lose no
 * increment: the counter ends at the number of conditional writes acknowledged. */
static void test_conditional_writes(void **state)
{
	(void)state;
	net *t = net_new(8, 11);
	run(t, 1000);
	kv_version absent = {0, 0, false};
	size_t a = client_if(t, 1, KV_PUT, "lock", "\"a\"", NULL, &absent);
	size_t b = client_if(t, 6, KV_PUT, "lock", "\"b\"", NULL, &absent);
	run(t, t->k->now + 500);
	assert_true(t->ops[a].replied && t->ops[b].replied);
	assert_true((t->ops[a].status == KV_OK) != (t->ops[b].status == KV_OK));
	size_t won = t->ops[a].status == KV_OK ? a : b, lost = won == a ? b : a;
	assert_int_equal(t->ops[lost].status, KV_CONFLICT);
	assert_true(t->ops[lost].has_v); /* told what is there */
	assert_int_equal(kv_version_cmp(&t->ops[lost].v, &t->ops[won].v), 0);
	/* the winner's version moves on; a write conditional on the old one is refused */
	kv_version old = t->ops[won].v;
	size_t c = client_if(t, 3, KV_PUT, "lock", "\"c\"", NULL, &old);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[c].status, KV_OK);
	size_t d = client_if(t, 5, KV_PUT, "lock", "\"d\"", NULL, &old);
	size_t e = client_if(t, 2, KV_DEL, "lock", NULL, NULL, &old);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[d].status, KV_CONFLICT);
	assert_int_equal(t->ops[e].status, KV_CONFLICT);
	assert_int_equal(kv_version_cmp(&t->ops[d].v, &t->ops[c].v), 0);
	size_t g = client(t, 7, KV_GET, "lock", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[g].status, KV_OK);
	assert_string_equal(t->ops[g].got, "\"c\"");

	/* the counter: every node runs read-then-conditional-write loops at once */
	enum { CLIENTS = 8, EACH = 6 };
	size_t cur[CLIENTS];
	unsigned done[CLIENTS] = {0}, acked = 0, conflicts = 0;
	size_t z = client(t, 0, KV_PUT, "counter", "0", NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[z].status, KV_OK);
	for (unsigned i = 0; i < CLIENTS; i++)
		cur[i] = client(t, i, KV_GET, "counter", NULL, NULL);
	for (int step = 0; step < 4000 && acked < CLIENTS * EACH; step++) {
		run(t, t->k->now + 3);
		for (unsigned i = 0; i < CLIENTS; i++) {
			cop *o = &t->ops[cur[i]];
			if (!o->replied || done[i] == EACH)
				continue;
			if (o->op == KV_GET) {
				assert_int_equal(o->status, KV_OK);
				char next[32];
				snprintf(next, sizeof next, "%ld", strtol(o->got, NULL, 10) + 1);
				kv_version v = o->v;
				cur[i] = client_if(t, i, KV_PUT, "counter", next, NULL, &v);
				continue;
			}
			if (o->status == KV_OK) {
				acked++;
				done[i]++;
			} else {
				assert_int_equal(o->status, KV_CONFLICT);
				conflicts++;
			}
			if (done[i] < EACH)
				cur[i] = client(t, i, KV_GET, "counter", NULL, NULL);
		}
	}
	assert_int_equal(acked, CLIENTS * EACH);
	assert_true(conflicts > 0); /* they did race */
	size_t f = client(t, 4, KV_GET, "counter", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[f].status, KV_OK);
	assert_int_equal(strtol(t->ops[f].got, NULL, 10), CLIENTS * EACH);
	net_free(t);
}

/* Writes fail honestly: with too few replicas up the answer is "unknown", never OK. */
static void test_quorum_not_met(void **state)
{
	(void)state;
	net *t = net_new(5, 6);
	run(t, 1000);
	rn_id kid;
	kid_of("q", &kid);
	uint32_t reps[KV_MAX_R];
	true_replicas(t, &kid, reps);
	/* the owner is up but both other replicas and every stand-in are gone */
	for (uint32_t i = 0; i < 5; i++)
		if (i != reps[0])
			NODE(t, i)->alive = false; /* crashed, and the ring has not noticed yet */
	size_t p = client(t, reps[0], KV_PUT, "q", "1", NULL);
	run(t, t->k->now + 3000);
	assert_true(t->ops[p].replied);
	assert_int_equal(t->ops[p].status, KV_UNKNOWN);
	net_free(t);
}

/* Tombstones go once every replica has them and the grace period has passed. */
static void test_tombstone_collected(void **state)
{
	(void)state;
	net *t = net_new(6, 8);
	CFG(t).tomb_grace_ms = 5000;
	for (uint32_t i = 0; i < t->k->count; i++)
		revive(t, i);
	run(t, 1000);
	client(t, 0, KV_PUT, "gone", "1", NULL);
	run(t, t->k->now + 500);
	client(t, 2, KV_DEL, "gone", NULL, NULL);
	run(t, t->k->now + 500);
	rn_id kid;
	kid_of("gone", &kid);
	uint32_t any[MAXN];
	assert_int_equal(holders(t, &kid, NULL, any), 3); /* tombstones on the 3 replicas */
	run(t, t->k->now + CFG(t).tomb_grace_ms / 2);
	assert_int_equal(holders(t, &kid, NULL, any), 3); /* not before the grace period */
	run(t, t->k->now + CFG(t).tomb_grace_ms + 10 * CFG(t).sync_ms);
	assert_int_equal(holders(t, &kid, NULL, any), 0);
	size_t g = client(t, 1, KV_GET, "gone", NULL, NULL);
	run(t, t->k->now + 500);
	assert_int_equal(t->ops[g].status, KV_NOT_FOUND);
	net_free(t);
}

/* Repair sends what differs, not the whole range: a replica missing 5 of 500 keys gets
 * about 5 records. */
static void test_repair_sends_only_differences(void **state)
{
	(void)state;
	net *t = net_new(5, 9);
	run(t, 1000);
	char key[32];
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof key, "d%d", i);
		client(t, 0, KV_PUT, key, "1", NULL);
		run(t, t->k->now + 2);
	}
	run(t, t->k->now + 3000);
	/* drop 5 keys from one node's store behind its back */
	uint32_t victim = 2;
	int dropped = 0;
	for (int i = 0; i < 500 && dropped < 5; i++) {
		snprintf(key, sizeof key, "d%d", i);
		rn_id kid;
		kid_of(key, &kid);
		dropped += memstore_del(NODE(t, victim)->st, &kid) == 0;
	}
	assert_int_equal(dropped, 5);
	uint64_t pushed = 0, pulled = 0;
	for (uint32_t i = 0; i < t->k->count; i++) {
		pushed += kv_get_stats(NODE(t, i)->kv)->sync_keys_pushed;
		pulled += kv_get_stats(NODE(t, i)->kv)->sync_keys_pulled;
	}
	run(t, t->k->now + 5 * CFG(t).sync_ms);
	uint64_t moved = 0;
	for (uint32_t i = 0; i < t->k->count; i++)
		moved += kv_get_stats(NODE(t, i)->kv)->sync_keys_pushed +
		         kv_get_stats(NODE(t, i)->kv)->sync_keys_pulled;
	moved -= pushed + pulled;
	assert_true(moved >= 5);
	assert_true(moved <= 10);
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof key, "d%d", i);
		check_placement(t, key);
	}
	net_free(t);
}

static void leave_config(kv_config *c)
{
	c->leave_bytes = 1000; /* a few records a batch */
	c->sync_ms = 600000;   /* no anti-entropy while the test runs: only the leave moves */
	c->cover_ms = 600000;
	c->req_timeout_ms = 60000;
}

/* A graceful leave of a node holding many times leave_bytes: it pushes its range in
 * batches of at most leave_bytes (plus the record that crossed it), each after the last
 * was acknowledged, and in the end the node that becomes a replica of that range holds
 * every record of it at the version acknowledged: after the leaver is gone, each of its
 * keys is on exactly its new true replicas. Anti-entropy is off, so only the leave can
 * have put them there. */
static void test_leave_paced(void **state)
{
	(void)state;
	kv_tweak = leave_config;
	net *t = net_new(6, 21);
	kv_tweak = NULL;
	run(t, 1000);
	char key[32];
	enum { NK = 400 };
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof key, "leave-%d", i);
		client(t, random_live(t), KV_PUT, key, "some value of thirty bytes..", NULL);
		run(t, t->k->now + 2);
	}
	run(t, t->k->now + 1000);
	for (size_t i = 0; i < t->nops; i++)
		assert_int_equal(t->ops[i].status, KV_OK);
	/* the leaver: the node that is primary of the most keys */
	uint32_t prim[MAXN] = {0}, reps[KV_MAX_R];
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof key, "leave-%d", i);
		rn_id kid;
		kid_of(key, &kid);
		true_replicas(t, &kid, reps);
		prim[reps[0]]++;
	}
	uint32_t L = 0;
	for (uint32_t i = 1; i < t->k->count; i++)
		if (prim[i] > prim[L])
			L = i;
	const kv_stats *ls = kv_get_stats(NODE(t, L)->kv);
	kv_leave(NODE(t, L)->kv, t->k->now);
	run(t, t->k->now + 2000);
	assert_false(kv_leaving(NODE(t, L)->kv)); /* every batch acknowledged */
	assert_int_equal(ls->leave_pushed, prim[L]);
	/* each record is about 80 bytes: many batches, none much over the bound */
	assert_true(ls->leave_batches >= prim[L] * 60 / 1000);
	assert_true(ls->leave_batch_max < 1000 + 100);
	bool primary[NK]; /* (the keys it was a second or third replica of wait for repair) */
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof key, "leave-%d", i);
		rn_id kid;
		kid_of(key, &kid);
		true_replicas(t, &kid, reps);
		primary[i] = reps[0] == L;
	}
	kill(t, L);
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof key, "leave-%d", i);
		if (primary[i])
			check_placement(t, key);
	}
	net_free(t);
}

/* A node whose clock is behind writes conditionally on a version a node ahead made: the
 * write is newer than what it replaces (the writer read it), so it must be stored, not
 * acknowledged and dropped as older. Found by the file core's tests (the file index is
 * changed that way from every node). */
static void test_conditional_write_clock_behind(void **state)
{
	(void)state;
	for (int64_t skew = -60000; skew <= 60000; skew += 120000) {
		net *t = calloc(1, sizeof *t);
		assert_non_null(t);
		kvs_params p = {.latency_min_ms = 1,
		                .latency_max_ms = 5,
		                .seed = 77,
		                .on_reply = on_reply,
		                .arg = t,
		                .odd_skew_ms = skew};
		kv_config_default(&p.kv);
		p.kv.op_timeout_ms = 100;
		p.kv.lease_ms = 60;
		p.kv.req_timeout_ms = 1000;
		p.kv.wall_offset_ms = 1700000000000ull;
		t->k = kvs_new(&p);
		t->ops = calloc(MAXOPS, sizeof *t->ops);
		for (int i = 0; i < 4; i++)
			assert_int_not_equal(kvs_add(t->k, NULL), UINT32_MAX);
		run(t, 1000);
		uint32_t ahead = skew < 0 ? 0 : 1, behind = 1 - ahead;
		/* a key the behind node holds no copy of (a copy would advance its clock) */
		char key[16];
		for (unsigned c = 0;; c++) {
			snprintf(key, sizeof key, "idx%u", c);
			rn_id kid;
			kid_of(key, &kid);
			uint32_t reps[KV_MAX_R], nr = true_replicas(t, &kid, reps);
			bool holds = false;
			for (uint32_t r = 0; r < nr; r++)
				holds |= reps[r] == behind;
			if (!holds)
				break;
		}
		size_t w = client(t, ahead, KV_PUT, key, "\"v1\"", NULL);
		run(t, t->k->now + 500);
		assert_int_equal(t->ops[w].status, KV_OK);
		kv_version v1 = t->ops[w].v;
		size_t c = client_if(t, behind, KV_PUT, key, "\"v2\"", NULL, &v1);
		run(t, t->k->now + 500);
		assert_int_equal(t->ops[c].status, KV_OK);
		assert_true(kv_version_cmp(&t->ops[c].v, &v1) > 0); /* told a newer version */
		for (uint32_t e = 0; e < 4; e++) {
			size_t g = client(t, e, KV_GET, key, NULL, NULL);
			run(t, t->k->now + 500);
			assert_int_equal(t->ops[g].status, KV_OK);
			assert_string_equal(t->ops[g].got, "\"v2\"");
		}
		/* and a write conditional on v1 again is refused: v2 is what is held */
		size_t d = client_if(t, ahead, KV_PUT, key, "\"v3\"", NULL, &v1);
		run(t, t->k->now + 500);
		assert_int_equal(t->ops[d].status, KV_CONFLICT);
		net_free(t);
	}
}

/* A chunk-sized value for big record i: bytes only it has. */
static void big_value(uint32_t i, uint8_t *v, size_t n)
{
	uint64_t x = 0x9e3779b97f4a7c15ull * (i + 1);
	for (size_t j = 0; j < n; j++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		v[j] = (uint8_t)(x >> 56);
	}
}

#define BIG_N     1000
#define BIG_BYTES (64u << 10) /* 1,000 of them: 62.5 MiB, about four times the cap */

/* Every true replica of every big key holds its acknowledged version with its bytes. */
static uint32_t big_missing(net *t, const uint32_t *idx, const size_t *ops, uint8_t *buf)
{
	uint32_t missing = 0;
	for (uint32_t i = 0; i < BIG_N; i++) {
		cop *o = &t->ops[ops[i]];
		rn_id kid;
		kid_of(o->key, &kid);
		uint32_t reps[KV_MAX_R];
		uint32_t nr = true_replicas(t, &kid, reps);
		big_value(idx[i], buf, BIG_BYTES);
		for (uint32_t r = 0; r < nr; r++) {
			kv_record rec;
			bool good = memstore_get(NODE(t, reps[r])->st, &kid, &rec) == 0 &&
			            kv_version_cmp(&rec.v, &o->v) == 0 && rec.vlen == BIG_BYTES &&
			            memcmp(rec.val, buf, BIG_BYTES) == 0;
			missing += !good;
		}
	}
	return missing;
}

/* Wipes node i's copies of the big keys behind its back and lets anti-entropy restore
 * them; no exchange pushes more than KV_REPAIR_BYTES of records to it, and it takes as
 * many exchanges as the cap implies. */
static void big_restore(net *t, uint32_t victim, const uint32_t *idx, const size_t *ops,
                        uint8_t *buf)
{
	for (uint32_t i = 0; i < BIG_N; i++) {
		rn_id kid;
		kid_of(t->ops[ops[i]].key, &kid);
		assert_int_equal(memstore_del(NODE(t, victim)->st, &kid), 0);
	}
	assert_int_equal(big_missing(t, idx, ops, buf), BIG_N);
	push_watch w = {.to = victim};
	t->watch = &w;
	uint64_t deadline = t->k->now + 200 * CFG(t).sync_ms;
	for (uint32_t back = 0; back < BIG_N && t->k->now < deadline;) {
		run(t, t->k->now + CFG(t).sync_ms);
		back = 0; /* cheap: versions on the victim; the bytes everywhere at the end */
		for (uint32_t i = 0; i < BIG_N; i++) {
			rn_id kid;
			kv_record rec;
			kid_of(t->ops[ops[i]].key, &kid);
			back += memstore_get(NODE(t, victim)->st, &kid, &rec) == 0 &&
			        kv_version_cmp(&rec.v, &t->ops[ops[i]].v) == 0;
		}
	}
	t->watch = NULL;
	assert_int_equal(big_missing(t, idx, ops, buf), 0);
	if (w.max_bytes > KV_REPAIR_BYTES)
		fail_msg("one exchange pushed %llu record bytes to node %u, cap %u",
		         (unsigned long long)w.max_bytes, victim, KV_REPAIR_BYTES);
	uint64_t total = (uint64_t)BIG_N * BIG_BYTES;
	assert_true(w.exchanges >= (total + KV_REPAIR_BYTES - 1) / KV_REPAIR_BYTES);
}

/* The anti-entropy push cap (KV_REPAIR_BYTES): 1,000 records of 64 KiB in one node's
 * range; a replica that lost them all, and then the primary that lost them all (restored
 * by pull answers), end with every one of them, no exchange past the cap. */
static void test_repair_push_cap(void **state)
{
	(void)state;
	net *t = net_new(5, 12);
	run(t, 1000);
	uint32_t primary = 1, idx[BIG_N];
	size_t ops[BIG_N];
	uint8_t *buf = malloc(BIG_BYTES);
	assert_non_null(buf);
	char key[32];
	uint32_t n = 0;
	for (uint32_t c = 0; n < BIG_N; c++) {
		snprintf(key, sizeof key, "big%u", c);
		rn_id kid;
		kid_of(key, &kid);
		uint32_t reps[KV_MAX_R];
		true_replicas(t, &kid, reps);
		if (reps[0] != primary)
			continue;
		big_value(c, buf, BIG_BYTES);
		assert_true(t->nops < MAXOPS);
		size_t id = t->nops++;
		cop *o = &t->ops[id];
		memset(o, 0, sizeof *o);
		o->op = KV_PUT;
		o->entry = 0;
		snprintf(o->key, sizeof o->key, "%s", key);
		kv_request r = {.op = KV_PUT,
		                .key = (const uint8_t *)key,
		                .klen = strlen(key),
		                .val = buf,
		                .vlen = BIG_BYTES};
		kvs_client(t->k, 0, id, &r);
		idx[n] = c;
		ops[n++] = id;
		run(t, t->k->now + 2);
	}
	run(t, t->k->now + 3000);
	for (uint32_t i = 0; i < BIG_N; i++) {
		assert_true(t->ops[ops[i]].replied);
		assert_int_equal(t->ops[ops[i]].status, KV_OK);
	}
	assert_int_equal(big_missing(t, idx, ops, buf), 0);
	rn_id kid;
	kid_of(t->ops[ops[0]].key, &kid);
	uint32_t reps[KV_MAX_R];
	assert_int_equal(true_replicas(t, &kid, reps), 3);
	big_restore(t, reps[1], idx, ops, buf); /* a replica: the primary pushes */
	big_restore(t, primary, idx, ops, buf); /* the primary: it pulls */
	free(buf);
	net_free(t);
}

/* The simulator's driver: after joins and crashes in any order, and once the detection
 * delay has passed, every node's view is what a scan of all live ids gives. */
static void test_sim_views_follow_membership(void **state)
{
	(void)state;
	for (uint32_t delay = 0; delay <= 300; delay += 300) {
		net *t = net_new(20, 30 + delay);
		t->k->p.detect_min_ms = delay / 3;
		t->k->p.detect_max_ms = delay;
		for (int step = 0; step < 200; step++) {
			if (rn_rng_below(&t->k->rng, 2) && t->k->nlive > 3)
				kill(t, random_live(t));
			else if (t->k->count < MAXN)
				add_node(t);
			else
				revive(t, (uint32_t)rn_rng_below(&t->k->rng, t->k->count));
			run(t, t->k->now + rn_rng_below(&t->k->rng, 2 * delay + 1));
			if (step % 20)
				continue;
			run(t, t->k->now + delay + 1);
			/* brute force: sort the live ids by scanning */
			uint32_t live[MAXN], n = 0;
			for (uint32_t i = 0; i < t->k->count; i++)
				if (NODE(t, i)->alive)
					live[n++] = i;
			for (uint32_t a = 1; a < n; a++)
				for (uint32_t b = a; b > 0 && rn_id_cmp(&NODE(t, live[b - 1])->id,
				                                        &NODE(t, live[b])->id) > 0;
				     b--) {
					uint32_t x = live[b];
					live[b] = live[b - 1];
					live[b - 1] = x;
				}
			for (uint32_t k = 0; k < n; k++) {
				ring_peer pred, succ[KVS_NSUCC];
				size_t ns =
				    kv_get_view(NODE(t, live[k])->kv, &pred, succ, KVS_NSUCC);
				assert_int_equal(ns, n - 1 < KVS_NSUCC ? n - 1 : KVS_NSUCC);
				assert_int_equal(pred.addr, live[(k + n - 1) % n]);
				for (size_t j = 0; j < ns; j++)
					assert_int_equal(succ[j].addr, live[(k + 1 + j) % n]);
			}
		}
		net_free(t);
	}
}

/* ---- read leases ---- */

static uint64_t sum_stat(net *t, size_t off)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < t->k->count; i++)
		n += *(const uint64_t *)((const char *)kv_get_stats(NODE(t, i)->kv) + off);
	return n;
}

/* Gets of key at node at, one every 20 ms, until one is answered there by the path whose
 * counter (a kv_stats field at offset stat) grows (at most tries of them); each must be
 * found with value want, and that one asked no one. */
static bool local_read_at(net *t, uint32_t at, const char *key, const char *want, int tries,
                          size_t stat)
{
	for (int i = 0; i < tries; i++) {
		const char *st = (const char *)kv_get_stats(NODE(t, at)->kv) + stat;
		uint64_t before = *(const uint64_t *)st;
		uint64_t reqs = t->reqs_from[at];
		size_t g = client(t, at, KV_GET, key, NULL, NULL);
		run(t, t->k->now + 20);
		assert_true(t->ops[g].replied);
		assert_int_equal(t->ops[g].status, KV_OK);
		assert_string_equal(t->ops[g].got, want);
		if (*(const uint64_t *)st > before) {
			assert_int_equal(t->reqs_from[at], reqs); /* it asked no one */
			return true;
		}
	}
	return false;
}

/* ... answered from the node's own copy under a read lease */
static bool replica_read_at(net *t, uint32_t at, const char *key, const char *want, int tries)
{
	return local_read_at(t, at, key, want, tries, offsetof(kv_stats, replica_reads));
}

/* Writes alone take no leases (their owners wait for W, no more); gets forwarded from a
 * replica make it ask its owner for one, after which it answers them itself, with the
 * newest acknowledged value, also right after a write. */
static void test_replica_reads(void **state)
{
	(void)state;
	net *t = net_new(6, 41);
	run(t, 1000);
	enum { NK = 16 };
	char keys[NK][16], val[16];
	for (int i = 0; i < NK; i++) {
		snprintf(keys[i], sizeof keys[i], "lk-%d", i);
		client(t, (uint32_t)i % 6, KV_PUT, keys[i], "\"a\"", NULL);
	}
	run(t, t->k->now + CFG(t).settle_ms + 1000);
	for (size_t j = 0; j < t->nops; j++) {
		assert_true(t->ops[j].replied);
		assert_int_equal(t->ops[j].status, KV_OK);
	}
	assert_int_equal(sum_stat(t, offsetof(kv_stats, leases_granted)), 0);
	assert_int_equal(sum_stat(t, offsetof(kv_stats, leases_held)), 0);
	for (int i = 0; i < NK; i++) {
		rn_id kid;
		uint32_t reps[KV_MAX_R];
		kid_of(keys[i], &kid);
		assert_int_equal(true_replicas(t, &kid, reps), 3);
		for (int r = 1; r < 3; r++)
			assert_true(replica_read_at(t, reps[r], keys[i], "\"a\"", 10));
		/* a write through any node, then gets at the replicas right after its answer */
		snprintf(val, sizeof val, "\"b%d\"", i);
		size_t w = client(t, (uint32_t)(i + 3) % 6, KV_PUT, keys[i], val, NULL);
		while (!t->ops[w].replied)
			run(t, t->k->now + 1);
		assert_int_equal(t->ops[w].status, KV_OK);
		for (int r = 0; r < 3; r++) {
			size_t g = client(t, reps[r], KV_GET, keys[i], NULL, NULL);
			run(t, t->k->now + 20);
			assert_int_equal(t->ops[g].status, KV_OK);
			assert_string_equal(t->ops[g].got, val);
		}
	}
	assert_true(sum_stat(t, offsetof(kv_stats, leases_granted)) > 0);
	net_free(t);
}

/* A holder that stops storing the owner's writes (they are lost on the way): the owner
 * answers a write only once that holder's lease has ended, and from the answer on the
 * holder no longer answers from its old copy; once repaired it takes a lease again. */
static void test_lease_holder_cut_off(void **state)
{
	(void)state;
	net *t = net_new(6, 43);
	run(t, 1000);
	size_t w = client(t, 0, KV_PUT, "cut", "\"old\"", NULL);
	run(t, t->k->now + CFG(t).settle_ms + 1000);
	assert_int_equal(t->ops[w].status, KV_OK);
	rn_id kid;
	uint32_t reps[KV_MAX_R];
	kid_of("cut", &kid);
	assert_int_equal(true_replicas(t, &kid, reps), 3);
	uint32_t owner = reps[0], x = reps[1];
	assert_true(replica_read_at(t, x, "cut", "\"old\"", 10));
	t->cut = x;
	t->cutting = true;
	uint64_t waits = kv_get_stats(NODE(t, owner)->kv)->lease_waits;
	w = client(t, owner, KV_PUT, "cut", "\"new\"", NULL);
	size_t during[64];
	int nd = 0;
	while (!t->ops[w].replied) {
		if (nd < 64)
			during[nd++] = client(t, x, KV_GET, "cut", NULL, NULL);
		run(t, t->k->now + 5);
	}
	assert_int_equal(t->ops[w].status, KV_OK);
	assert_true(kv_get_stats(NODE(t, owner)->kv)->lease_waits > waits);
	assert_true(nd > 1);           /* it did wait */
	for (int i = 0; i < 10; i++) { /* after the answer: never the old value */
		size_t g = client(t, x, KV_GET, "cut", NULL, NULL);
		run(t, t->k->now + 30);
		assert_int_equal(t->ops[g].status, KV_OK);
		assert_string_equal(t->ops[g].got, "\"new\"");
	}
	run(t, t->k->now + 200);
	for (int i = 0; i < nd; i++) /* while it waited: either, answered */
		assert_true(t->ops[during[i]].replied);
	t->cutting = false;
	run(t, t->k->now + 3 * CFG(t).sync_ms);
	assert_true(replica_read_at(t, x, "cut", "\"new\"", 20));
	net_free(t);
}

/* ---- cache leases ---- */

/* The read cache against a model of what it was last told for each key: a hit is always
 * that (value, version, tag); a copy just put is there; a tombstone or a newer version
 * replaces any copy; the bounds hold. */
static void test_near_cache_oracle(void **state)
{
	(void)state;
	enum { NKEYS = 48, SETS = 4, MAXB = 900, VMAX = 40 };
	struct {
		bool has;
		uint32_t tag;
		kv_version v;
		char val[VMAX + 8];
		size_t vlen;
	} model[NKEYS];
	memset(model, 0, sizeof model);
	char keys[NKEYS][12];
	rn_id kids[NKEYS];
	for (int i = 0; i < NKEYS; i++) {
		snprintf(keys[i], sizeof keys[i], "n%d", i);
		kid_of(keys[i], &kids[i]);
	}
	kvn_cache *c = kvn_new(SETS, MAXB, VMAX);
	assert_non_null(c);
	rn_rng rng;
	rn_rng_seed(&rng, 7);
	uint64_t stamp = 1, hits = 0;
	for (uint64_t now = 1; now < 40000; now++) {
		int i = (int)rn_rng_below(&rng, NKEYS);
		kv_record r;
		memset(&r, 0, sizeof r);
		r.kid = kids[i];
		r.key = (const uint8_t *)keys[i];
		r.klen = strlen(keys[i]);
		char val[VMAX + 8];
		size_t vlen = rn_rng_below(&rng, VMAX + 8);
		memset(val, 'a' + (int)(now % 26), vlen);
		r.val = (const uint8_t *)val;
		r.vlen = vlen;
		r.v.stamp = stamp++;
		uint32_t tag = 1 + (uint32_t)rn_rng_below(&rng, 3);
		switch (rn_rng_below(&rng, 4)) {
		case 0: { /* put */
			bool kept = kvn_put(c, &r, tag, now);
			assert_true(kept || vlen > VMAX || r.klen + vlen > MAXB ||
			            kvn_bytes(c) + r.klen + vlen > MAXB);
			model[i].has = kept;
			if (kept) {
				model[i].tag = tag;
				model[i].v = r.v;
				memcpy(model[i].val, val, vlen);
				model[i].vlen = vlen;
				kv_record g;
				assert_true(kvn_get(c, &kids[i], tag, &g, now));
			}
			break;
		}
		case 1: { /* a newer version, or a tombstone, or an older one */
			int kind = (int)rn_rng_below(&rng, 3);
			if (kind == 1) {
				r.v.tomb = true;
				r.vlen = 0;
				r.val = NULL;
			} else if (kind == 2 && model[i].has) {
				r.v = model[i].v; /* not newer: no change */
			}
			kvn_update(c, &r);
			if (model[i].has && kv_version_cmp(&model[i].v, &r.v) < 0) {
				if (r.v.tomb || vlen > VMAX) {
					model[i].has = false;
				} else {
					model[i].v = r.v;
					memcpy(model[i].val, val, vlen);
					model[i].vlen = vlen;
				}
			}
			break;
		}
		default: { /* get */
			kv_record g;
			bool hit = kvn_get(c, &kids[i], tag, &g, now);
			if (hit) {
				hits++;
				assert_true(model[i].has);
				assert_int_equal(model[i].tag, tag);
				assert_int_equal(g.v.stamp, model[i].v.stamp);
				assert_int_equal(g.vlen, model[i].vlen);
				assert_memory_equal(g.val, model[i].val, g.vlen);
				assert_int_equal(g.klen, strlen(keys[i]));
				assert_memory_equal(g.key, keys[i], g.klen);
			}
			break;
		}
		}
		assert_true(kvn_count(c) <= SETS * 4);
		assert_true(kvn_bytes(c) <= MAXB);
	}
	assert_true(hits > 1000);
	kvn_free(c);
}

/* A node of the 6 that holds no replica of key. */
static uint32_t non_replica(net *t, const char *key, uint32_t skip)
{
	rn_id kid;
	uint32_t reps[KV_MAX_R];
	kid_of(key, &kid);
	uint32_t nr = true_replicas(t, &kid, reps);
	for (uint32_t i = 0; i < t->k->count; i++) {
		bool rep = i == skip || !t->k->n[i]->alive;
		for (uint32_t r = 0; r < nr && !rep; r++)
			rep = reps[r] == i;
		if (!rep)
			return i;
	}
	fail_msg("no node outside %s's replicas", key);
	return 0;
}

/* ... answered from its read cache under a cache lease */
static bool cache_read_at(net *t, uint32_t at, const char *key, const char *want, int tries)
{
	return local_read_at(t, at, key, want, tries, offsetof(kv_stats, cache_reads));
}

/* A node that forwards gets of keys it does not replicate takes a cache lease of their
 * owners and answers later gets itself; a write through any node is pushed to it before
 * the write's answer, so a get right after the answer sees the new value. */
static void test_cache_reads(void **state)
{
	(void)state;
	net *t = net_new(6, 47);
	run(t, 1000);
	enum { NK = 12 };
	char keys[NK][16], val[16];
	for (int i = 0; i < NK; i++) {
		snprintf(keys[i], sizeof keys[i], "ck-%d", i);
		client(t, (uint32_t)i % 6, KV_PUT, keys[i], "\"a\"", NULL);
	}
	run(t, t->k->now + CFG(t).settle_ms + 1000);
	for (size_t j = 0; j < t->nops; j++)
		assert_int_equal(t->ops[j].status, KV_OK);
	assert_int_equal(sum_stat(t, offsetof(kv_stats, cache_leases)), 0); /* writes: none */
	for (int i = 0; i < NK; i++) {
		uint32_t x = non_replica(t, keys[i], UINT32_MAX);
		uint32_t y = non_replica(t, keys[i], x);
		assert_true(cache_read_at(t, x, keys[i], "\"a\"", 10));
		assert_true(cache_read_at(t, y, keys[i], "\"a\"", 10));
		snprintf(val, sizeof val, "\"b%d\"", i);
		size_t w = client(t, (uint32_t)(i + 3) % 6, KV_PUT, keys[i], val, NULL);
		while (!t->ops[w].replied)
			run(t, t->k->now + 1);
		assert_int_equal(t->ops[w].status, KV_OK);
		for (uint32_t at = 0; at < 6; at++) { /* right after the answer, everywhere */
			size_t g = client(t, at, KV_GET, keys[i], NULL, NULL);
			run(t, t->k->now + 20);
			assert_int_equal(t->ops[g].status, KV_OK);
			assert_string_equal(t->ops[g].got, val);
		}
		assert_true(cache_read_at(t, x, keys[i], val, 10)); /* the push refilled it */
	}
	assert_true(sum_stat(t, offsetof(kv_stats, cache_pushes)) > 0);
	assert_true(sum_stat(t, offsetof(kv_stats, cache_fills)) > 0);
	net_free(t);
}

/* A cache holder whose pushes are lost: the owner answers the write only once the holder's
 * lease has ended, after which the holder never answers the old value; later it takes a
 * new lease (its old copies go with the old one) and caches the new value. */
static void test_cache_holder_cut_off(void **state)
{
	(void)state;
	net *t = net_new(6, 53);
	run(t, 1000);
	size_t w = client(t, 0, KV_PUT, "cc", "\"old\"", NULL);
	run(t, t->k->now + CFG(t).settle_ms + 1000);
	assert_int_equal(t->ops[w].status, KV_OK);
	uint32_t x = non_replica(t, "cc", UINT32_MAX);
	assert_true(cache_read_at(t, x, "cc", "\"old\"", 10));
	t->cut = x;
	t->cutting = true;
	w = client(t, (x + 1) % 6, KV_PUT, "cc", "\"new\"", NULL);
	int nd = 0;
	while (!t->ops[w].replied) {
		client(t, x, KV_GET, "cc", NULL, NULL);
		nd++;
		run(t, t->k->now + 5);
	}
	assert_int_equal(t->ops[w].status, KV_OK);
	assert_true(nd > 2); /* it waited for the lease */
	for (int i = 0; i < 10; i++) {
		size_t g = client(t, x, KV_GET, "cc", NULL, NULL);
		run(t, t->k->now + 30);
		assert_int_equal(t->ops[g].status, KV_OK);
		assert_string_equal(t->ops[g].got, "\"new\"");
	}
	t->cutting = false;
	run(t, t->k->now + 200);
	assert_true(cache_read_at(t, x, "cc", "\"new\"", 20));
	net_free(t);
}

/* Gets at a cache holder racing writes at the owner: the owner's answer (the old value)
 * may arrive after the push of the write (messages take 1-5 ms each, in any order); such
 * an answer is not kept, so after a write's answer the holder never serves older. */
static void test_cache_fill_race(void **state)
{
	(void)state;
	net *t = net_new(6, 59);
	run(t, 1000);
	size_t w = client(t, 0, KV_PUT, "race", "\"v0\"", NULL);
	run(t, t->k->now + CFG(t).settle_ms + 1000);
	assert_int_equal(t->ops[w].status, KV_OK);
	rn_id kid;
	uint32_t reps[KV_MAX_R];
	kid_of("race", &kid);
	assert_int_equal(true_replicas(t, &kid, reps), 3);
	uint32_t x = non_replica(t, "race", UINT32_MAX);
	assert_true(cache_read_at(t, x, "race", "\"v0\"", 10));
	rn_rng rng;
	rn_rng_seed(&rng, 59);
	char val[16];
	for (int i = 1; i <= 300; i++) {
		/* a delete's push takes the copy out of the holder's cache; the get then goes
		 * to the owner, and the next write races its answer */
		w = client(t, reps[0], KV_DEL, "race", NULL, NULL);
		while (!t->ops[w].replied)
			run(t, t->k->now + 1);
		w = client(t, reps[0], KV_PUT, "race", "\"before\"", NULL);
		while (!t->ops[w].replied)
			run(t, t->k->now + 1);
		run(t, t->k->now + 6);
		client(t, x, KV_GET, "race", NULL, NULL);
		run(t, t->k->now + 1 + rn_rng_below(&rng, 6));
		snprintf(val, sizeof val, "\"v%d\"", i);
		w = client(t, reps[0], KV_PUT, "race", val, NULL);
		while (!t->ops[w].replied)
			run(t, t->k->now + 1);
		assert_int_equal(t->ops[w].status, KV_OK);
		run(t, t->k->now + 6); /* every message sent before the answer has arrived */
		size_t g = client(t, x, KV_GET, "race", NULL, NULL);
		run(t, t->k->now + 20);
		assert_int_equal(t->ops[g].status, KV_OK);
		assert_string_equal(t->ops[g].got, val);
	}
	assert_true(kv_get_stats(NODE(t, x)->kv)->cache_fills > 100);
	net_free(t);
}

/* The owner crashes while a node holds its cache lease: a write the next replica then
 * coordinates (a fallback) is answered only once that lease has ended, so the holder
 * never answers the old value after the write's answer. */
static void test_cache_owner_crash(void **state)
{
	(void)state;
	for (uint64_t seed = 61; seed < 64; seed++) {
		net *t = net_new_ring(6, seed, true);
		run(t, t->k->now + 3000);
		check_ring(t);
		size_t w = client(t, 0, KV_PUT, "oc", "\"old\"", NULL);
		run(t, t->k->now + CFG(t).settle_ms + 1000);
		assert_int_equal(t->ops[w].status, KV_OK);
		rn_id kid;
		uint32_t reps[KV_MAX_R];
		kid_of("oc", &kid);
		assert_int_equal(true_replicas(t, &kid, reps), 3);
		uint32_t x = non_replica(t, "oc", UINT32_MAX);
		uint32_t e = non_replica(t, "oc", x);
		bool ok = cache_read_at(t, x, "oc", "\"old\"", 10);
		const kv_stats *xs = kv_get_stats(NODE(t, x)->kv);
		const char *how;
		kv_route(NODE(t, x)->kv, &kid, &how);
		print_message("x %u fills %llu leases %llu route %s owner %u\n", x,
		              (unsigned long long)xs->cache_fills,
		              (unsigned long long)xs->cache_leases, how, reps[0]);
		assert_true(ok);
		run(t, t->k->now + 7); /* in the middle of a lease */
		kill(t, reps[0]);
		w = client(t, e, KV_PUT, "oc", "\"new\"", NULL);
		while (!t->ops[w].replied)
			run(t, t->k->now + 1);
		assert_int_equal(t->ops[w].status, KV_OK);
		for (int i = 0; i < 20; i++) {
			size_t g = client(t, x, KV_GET, "oc", NULL, NULL);
			run(t, t->k->now + 2);
			if (t->ops[g].replied && t->ops[g].status == KV_OK)
				assert_string_equal(t->ops[g].got, "\"new\"");
		}
		run(t, t->k->now + 1000);
		net_free(t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_record_codec),
	    cmocka_unit_test(test_memstore_scan),
	    cmocka_unit_test(test_put_get_delete),
	    cmocka_unit_test(test_no_false_not_found),
	    cmocka_unit_test(test_no_not_found_before_handoff),
	    cmocka_unit_test(test_join_reads_and_repair),
	    cmocka_unit_test(test_stale_replica_loses),
	    cmocka_unit_test(test_damaged_copy),
	    cmocka_unit_test(test_unchecked_get),
	    cmocka_unit_test(test_replica_reads),
	    cmocka_unit_test(test_lease_holder_cut_off),
	    cmocka_unit_test(test_near_cache_oracle),
	    cmocka_unit_test(test_cache_reads),
	    cmocka_unit_test(test_cache_holder_cut_off),
	    cmocka_unit_test(test_cache_fill_race),
	    cmocka_unit_test(test_cache_owner_crash),
	    cmocka_unit_test(test_idempotent_retry),
	    cmocka_unit_test(test_request_id_history),
	    cmocka_unit_test(test_conditional_writes),
	    cmocka_unit_test(test_conditional_write_clock_behind),
	    cmocka_unit_test(test_scrub),
	    cmocka_unit_test(test_quorum_not_met),
	    cmocka_unit_test(test_tombstone_collected),
	    cmocka_unit_test(test_repair_sends_only_differences),
	    cmocka_unit_test(test_leave_paced),
	    cmocka_unit_test(test_repair_push_cap),
	    cmocka_unit_test(test_sim_views_follow_membership),
	    cmocka_unit_test(test_churn_r3w2),
	    cmocka_unit_test(test_churn_r2w1_r5w3),
	    cmocka_unit_test(test_churn_real_ring),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
