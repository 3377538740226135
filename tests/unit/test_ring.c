/* test_ring.c — the Chord core against a brute-force oracle.
 *
 * A tiny driver lives here: a FIFO of messages delivered instantly, dead nodes bouncing
 * messages back through ring_on_unreachable, and ring_tick called on a virtual clock.
 * Every answer is compared with the true successor found by scanning all live ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/id.h"
#include "lib/rng.h"
#include "ring/ring.h"

#define MAXN 300
#define QCAP 200000

typedef struct {
	ring_msg m;
	ring_peer peers[RING_MAX_SUCC];
	uint32_t from;
} qmsg;

typedef struct {
	ring_config cfg;
	ring_node *node[MAXN];
	bool alive[MAXN];
	int n;
	qmsg *q;
	size_t head, tail;
	uint64_t now;
	ring_out out;
	uint64_t bounced; /* messages handed back through ring_on_unreachable */
	/* last lookup answer */
	bool got;
	ring_event ev;
	/* the last RING_EV_JOINED, and how many there were */
	int joins;
	ring_event joined;
} net;

static net *net_new(unsigned bits, ring_lookup_mode mode, unsigned r)
{
	net *t = calloc(1, sizeof *t);
	ring_config_default(&t->cfg);
	t->cfg.bits = bits;
	t->cfg.lookup = mode;
	t->cfg.successors = r;
	t->cfg.max_hops = 4 * MAXN;
	t->q = calloc(QCAP, sizeof *t->q);
	return t;
}

static void net_free(net *t)
{
	for (int i = 0; i < t->n; i++)
		ring_node_free(t->node[i]);
	free(t->q);
	free(t);
}

static void collect(net *t, uint32_t from)
{
	for (size_t k = 0; k < t->out.nmsgs; k++) {
		assert_true(t->tail < QCAP);
		qmsg *qm = &t->q[t->tail++];
		qm->m = t->out.msgs[k];
		qm->from = from;
		if (qm->m.npeers)
			memcpy(qm->peers, qm->m.peers, qm->m.npeers * sizeof(ring_peer));
		qm->m.peers = qm->peers;
	}
	for (size_t k = 0; k < t->out.nevents; k++)
		if (t->out.events[k].type == RING_EV_LOOKUP_DONE) {
			t->got = true;
			t->ev = t->out.events[k];
		} else if (t->out.events[k].type == RING_EV_JOINED) {
			t->joins++;
			t->joined = t->out.events[k];
		}
	assert_int_equal(t->out.dropped, 0);
	ring_out_reset(&t->out);
}

/* deliver until quiet */
static void pump(net *t)
{
	while (t->head < t->tail) {
		qmsg qm = t->q[t->head++];
		qm.m.peers = qm.peers;
		uint32_t to = qm.m.to;
		if (to < (uint32_t)t->n && t->alive[to]) {
			ring_on_msg(t->node[to], t->now, &qm.m, &t->out);
			collect(t, to);
		} else if (t->alive[qm.from]) {
			t->bounced++;
			ring_on_unreachable(t->node[qm.from], t->now, &qm.m, &t->out);
			collect(t, qm.from);
		}
		if (t->head == t->tail)
			t->head = t->tail = 0;
	}
}

static void tick_all(net *t, uint64_t dt)
{
	t->now += dt;
	for (int i = 0; i < t->n; i++)
		if (t->alive[i]) {
			ring_tick(t->node[i], t->now, &t->out);
			collect(t, (uint32_t)i);
			pump(t);
		}
}

static int add(net *t, const rn_id *id)
{
	int i = t->n++;
	t->node[i] = ring_node_new(&t->cfg, id, (ring_addr)i);
	t->alive[i] = true;
	return i;
}

/* brute force: the live node whose id is the first at or after key, by linear scan */
static int oracle(net *t, const rn_id *key)
{
	int best = -1, lowest = -1;
	for (int i = 0; i < t->n; i++) {
		if (!t->alive[i])
			continue;
		const rn_id *id = ring_self_id(t->node[i]);
		if (lowest < 0 || rn_id_cmp(id, ring_self_id(t->node[lowest])) < 0)
			lowest = i;
		if (rn_id_cmp(id, key) >= 0 &&
		    (best < 0 || rn_id_cmp(id, ring_self_id(t->node[best])) < 0))
			best = i;
	}
	return best >= 0 ? best : lowest;
}

static int oracle_after(net *t, int i)
{
	rn_id k;
	rn_id_add_pow2(&k, ring_self_id(t->node[i]), RN_ID_BITS - t->cfg.bits);
	return oracle(t, &k);
}

static int oracle_before(net *t, int i)
{
	int best = -1;
	for (int j = 0; j < t->n; j++)
		if (t->alive[j] && oracle_after(t, j) == i)
			best = j;
	return best;
}

/* place nodes with distinct random ids and fill all state from the oracle */
static void build_static(net *t, int n, rn_rng *rng)
{
	for (int i = 0; i < n; i++) {
		rn_id id;
		bool dup;
		do {
			rn_id_random(&id, rng, t->cfg.bits);
			dup = false;
			for (int j = 0; j < t->n; j++)
				dup |= rn_id_eq(&id, ring_self_id(t->node[j]));
		} while (dup);
		add(t, &id);
	}
	for (int i = 0; i < n; i++) {
		ring_peer succ[RING_MAX_SUCC];
		int c = 0, cur = i;
		for (unsigned k = 0; k < t->cfg.successors && k + 1 < (unsigned)n; k++) {
			cur = oracle_after(t, cur);
			succ[c].id = *ring_self_id(t->node[cur]);
			succ[c++].addr = (ring_addr)cur;
		}
		ring_set_successors(t->node[i], succ, (size_t)c);
		int p = oracle_before(t, i);
		ring_peer pp = {*ring_self_id(t->node[p]), (ring_addr)p};
		if (n > 1)
			ring_set_predecessor(t->node[i], &pp);
		for (unsigned f = 0; f < t->cfg.bits; f++) {
			rn_id start;
			ring_finger_start(t->node[i], f, &start);
			int s = oracle(t, &start);
			ring_peer fp = {*ring_self_id(t->node[s]), (ring_addr)s};
			ring_set_fingers(t->node[i], f, f + 1, &fp);
		}
	}
}

static int lookup(net *t, int from, const rn_id *key, uint32_t *hops)
{
	t->got = false;
	ring_lookup(t->node[from], t->now, key, 99, &t->out);
	collect(t, (uint32_t)from);
	pump(t);
	assert_true(t->got);
	assert_int_equal(t->ev.req, 99);
	if (hops)
		*hops = t->ev.hops;
	return t->ev.ok ? (int)t->ev.result.addr : -1;
}

/* edge keys: zero, the top of the ring, every node id and its neighbours, and random */
static void check_lookups(net *t, rn_rng *rng, int random_keys, uint32_t max_hops)
{
	int n = t->n;
	for (int from = 0; from < n; from += (n > 20 ? 7 : 1)) {
		if (!t->alive[from])
			continue;
		rn_id keys[8];
		int nk = 0;
		memset(&keys[nk++], 0, sizeof(rn_id));
		memset(&keys[nk], 0xff, sizeof(rn_id));
		rn_id_truncate(&keys[nk++], t->cfg.bits);
		for (int j = 0; j < n && nk < 8; j += 1 + n / 3) {
			keys[nk++] = *ring_self_id(t->node[j]);
			rn_id_add_pow2(&keys[nk++], ring_self_id(t->node[j]),
			               RN_ID_BITS - t->cfg.bits);
		}
		for (int k = 0; k < nk + random_keys; k++) {
			rn_id key;
			if (k < nk)
				key = keys[k];
			else
				rn_id_random(&key, rng, t->cfg.bits);
			uint32_t hops;
			int got = lookup(t, from, &key, &hops);
			assert_int_equal(got, oracle(t, &key));
			assert_true(hops <= max_hops);
		}
	}
}

static void test_static_rings_many_sizes(void **state)
{
	(void)state;
	static const unsigned bits[] = {1, 2, 3, 5, 8, 15, 32, 64, 160};
	static const int sizes[] = {1, 2, 3, 4, 5, 8, 17, 64, 200};
	rn_rng rng;
	rn_rng_seed(&rng, 1);
	for (size_t b = 0; b < sizeof bits / sizeof *bits; b++)
		for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
			if (bits[b] < 16 && (uint64_t)sizes[s] > (1ull << bits[b]))
				continue; /* more nodes than ring positions */
			for (int mode = 0; mode < 2; mode++) {
				net *t = net_new(bits[b], (ring_lookup_mode)mode, 4);
				build_static(t, sizes[s], &rng);
				uint32_t bound =
				    mode == RING_LOOKUP_SIMPLE ? (uint32_t)sizes[s] : bits[b] + 1;
				check_lookups(t, &rng, 5, bound);
				net_free(t);
			}
		}
}

static void test_full_small_ring(void **state)
{
	/* every position of a 5-bit ring taken: ids collide nowhere, keys hit ids exactly */
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 3);
	net *t = net_new(5, RING_LOOKUP_SCALABLE, 3);
	build_static(t, 32, &rng);
	for (int from = 0; from < 32; from++)
		for (uint64_t k = 0; k < 32; k++) {
			rn_id key;
			rn_id_from_u64(&key, k, 5);
			assert_int_equal(lookup(t, from, &key, NULL), oracle(t, &key));
		}
	net_free(t);
}

static void test_scalable_hops_logarithmic(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 5);
	net *t = net_new(160, RING_LOOKUP_SCALABLE, 8);
	build_static(t, 256, &rng);
	uint64_t total = 0;
	int count = 0;
	for (int i = 0; i < 2000; i++) {
		rn_id key;
		rn_id_random(&key, &rng, 160);
		uint32_t hops;
		int from = (int)rn_rng_below(&rng, 256);
		assert_int_equal(lookup(t, from, &key, &hops), oracle(t, &key));
		total += hops;
		count++;
	}
	/* 1/2 log2(256) = 4; a linear walk would average 128 */
	double avg = (double)total / count;
	assert_true(avg > 2.0 && avg < 6.0);
	net_free(t);
}

/* every live node's successor, predecessor and fingers agree with the oracle */
static bool ring_is_correct(net *t)
{
	for (int i = 0; i < t->n; i++) {
		if (!t->alive[i])
			continue;
		if (!ring_joined(t->node[i]))
			return false;
		int live = 0;
		for (int j = 0; j < t->n; j++)
			live += t->alive[j];
		if (live == 1)
			continue;
		if ((int)ring_successor(t->node[i]).addr != oracle_after(t, i))
			return false;
		if ((int)ring_predecessor(t->node[i]).addr != oracle_before(t, i))
			return false;
		for (unsigned f = 0; f < t->cfg.bits; f++) {
			rn_id start;
			ring_finger_start(t->node[i], f, &start);
			int s = oracle(t, &start);
			ring_peer fp = ring_finger(t->node[i], f);
			if (s != i && (int)fp.addr != s)
				return false;
		}
	}
	return true;
}

static int converge(net *t, int max_rounds)
{
	for (int round = 1; round <= max_rounds; round++) {
		tick_all(t, 1000);
		if (ring_is_correct(t))
			return round;
	}
	return -1;
}

static void join_ring(net *t, int n, rn_rng *rng, bool all_at_once)
{
	for (int i = 0; i < n; i++) {
		rn_id id;
		bool dup;
		do {
			rn_id_random(&id, rng, t->cfg.bits);
			dup = false;
			for (int j = 0; j < t->n; j++)
				dup |= rn_id_eq(&id, ring_self_id(t->node[j]));
		} while (dup);
		int k = add(t, &id);
		if (k == 0)
			ring_create(t->node[0], t->now, &t->out);
		else
			ring_join(t->node[k], t->now, (ring_addr)rn_rng_below(rng, (uint64_t)k),
			          &t->out);
		collect(t, (uint32_t)k);
		pump(t);
		if (!all_at_once)
			tick_all(t, 1000);
	}
}

static void test_join_one_by_one(void **state)
{
	(void)state;
	static const unsigned bits[] = {6, 16, 160};
	for (size_t b = 0; b < 3; b++) {
		rn_rng rng;
		rn_rng_seed(&rng, 10 + b);
		net *t = net_new(bits[b], RING_LOOKUP_SCALABLE, 4);
		join_ring(t, 30, &rng, false);
		assert_true(converge(t, 400) > 0);
		check_lookups(t, &rng, 10, bits[b] + 1);
		net_free(t);
	}
}

static void test_concurrent_joins(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 21);
	net *t = net_new(160, RING_LOOKUP_SCALABLE, 4);
	/* everyone joins through node 0 before anyone stabilizes */
	join_ring(t, 1, &rng, true);
	for (int i = 1; i < 40; i++) {
		rn_id id;
		rn_id_random(&id, &rng, 160);
		int k = add(t, &id);
		ring_join(t->node[k], t->now, 0, &t->out);
		collect(t, (uint32_t)k);
	}
	pump(t);
	assert_true(converge(t, 600) > 0);
	check_lookups(t, &rng, 10, 161);
	net_free(t);
}

/* Two rings that formed apart (a partition) stay two under stabilize alone; nodes that
 * now and then probe a peer they know of (ring_probe) zip them into the one ring of all. */
static void test_partitioned_rings_merge(void **state)
{
	(void)state;
	for (uint64_t seed = 0; seed < 3; seed++) {
		rn_rng rng;
		rn_rng_seed(&rng, 70 + seed);
		net *t = net_new(160, RING_LOOKUP_SCALABLE, 4);
		const int half = 16;
		for (int side = 0; side < 2; side++)
			for (int i = 0; i < half; i++) {
				rn_id id;
				rn_id_random(&id, &rng, 160);
				int k = add(t, &id);
				if (i == 0)
					ring_create(t->node[k], t->now, &t->out);
				else /* through a node of its own side only */
					ring_join(t->node[k], t->now,
					          (ring_addr)(side * half +
					                      (int)rn_rng_below(&rng, (uint64_t)i)),
					          &t->out);
				collect(t, (uint32_t)k);
				pump(t);
				tick_all(t, 1000);
			}
		for (int round = 0; round < 100; round++)
			tick_all(t, 1000);
		assert_false(ring_is_correct(t)); /* still two rings */
		int rounds = -1;
		for (int round = 1; round <= 300 && rounds < 0; round++) {
			for (int i = 0; i < t->n;
			     i++) /* a fifth of the nodes probe a random peer */
				if (rn_rng_below(&rng, 5) == 0) {
					ring_probe(t->node[i], t->now,
					           (ring_addr)rn_rng_below(&rng, (uint64_t)t->n),
					           &t->out);
					collect(t, (uint32_t)i);
					pump(t);
				}
			tick_all(t, 1000);
			if (ring_is_correct(t))
				rounds = round;
		}
		assert_true(rounds > 0);
		check_lookups(t, &rng, 10, 161);
		net_free(t);
	}
}

static void test_two_nodes_and_leave(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 2);
	net *t = net_new(8, RING_LOOKUP_SCALABLE, 2);
	join_ring(t, 2, &rng, false);
	assert_true(converge(t, 50) > 0);
	assert_int_equal(ring_successor(t->node[0]).addr, 1);
	assert_int_equal(ring_successor(t->node[1]).addr, 0);
	join_ring(t, 1, &rng, false);
	assert_true(converge(t, 100) > 0);
	/* node 1 leaves gracefully: the other two close the gap */
	ring_leave(t->node[1], t->now, &t->out);
	collect(t, 1);
	t->alive[1] = false;
	pump(t);
	assert_int_equal(ring_successor(t->node[0]).addr, 2);
	assert_int_equal(ring_successor(t->node[2]).addr, 0);
	assert_true(converge(t, 100) > 0);
	net_free(t);
}

static void test_failures_repaired(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 77);
	net *t = net_new(160, RING_LOOKUP_SCALABLE, 6);
	build_static(t, 60, &rng);
	rn_id keys[200];
	int holder[200];
	for (int k = 0; k < 200; k++) {
		rn_id_random(&keys[k], &rng, 160);
		holder[k] = oracle(t, &keys[k]);
	}
	/* kill a third of the ring at once */
	for (int i = 0; i < 60; i += 3)
		t->alive[i] = false;
	/* before any repair a lookup routes around the dead it meets and answers either the
	 * live successor of the key or a dead node between the key and that live successor
	 * (the answering node has not noticed that death yet): never anything else */
	int live_answers = 0;
	for (int k = 0; k < 200; k++) {
		int from = 1 + 3 * (int)rn_rng_below(&rng, 20);
		int got = lookup(t, from, &keys[k], NULL);
		int live = oracle(t, &keys[k]);
		if (t->alive[holder[k]])
			assert_int_equal(got, holder[k]);
		else if (got != live && (got < 0 || t->alive[got] ||
		                         !rn_id_in_oc(ring_self_id(t->node[got]), &keys[k],
		                                      ring_self_id(t->node[live]))))
			fail_msg("key %d: got %d, holder %d (dead), live successor %d", k, got,
			         holder[k], live);
		live_answers += got == live;
	}
	assert_true(live_answers >= 100);
	assert_true(converge(t, 400) > 0);
	check_lookups(t, &rng, 10, 161);
	net_free(t);
}

/* A node restarts (a new core, same id and address) and joins while the ring still lists
 * it from before: its join must name its true successor at once, not the node itself. */
static void test_restarted_node_joins_its_successor(void **state)
{
	(void)state;
	static const unsigned bits[] = {8, 160};
	for (size_t b = 0; b < 2; b++) {
		rn_rng rng;
		rn_rng_seed(&rng, 91 + b);
		net *t = net_new(bits[b], RING_LOOKUP_SCALABLE, 4);
		build_static(t, 24, &rng);
		for (int r = 0; r < 24; r += 5) {
			rn_id id = *ring_self_id(t->node[r]);
			ring_node_free(t->node[r]);
			t->node[r] = ring_node_new(&t->cfg, &id, (ring_addr)r);
			int via = (r + 7) % 24;
			t->joins = 0;
			ring_join(t->node[r], t->now, (ring_addr)via, &t->out);
			collect(t, (uint32_t)r);
			pump(t);
			assert_int_equal(t->joins, 1);
			assert_int_equal(t->joined.result.addr, oracle_after(t, r));
			assert_int_equal(ring_successor(t->node[r]).addr, oracle_after(t, r));
		}
		assert_true(converge(t, 200) > 0);
		check_lookups(t, &rng, 10, bits[b] + 1);
		net_free(t);
	}
}

/* ring_forget: the membership service's word that a peer is dead takes it out of every
 * table at once, so lookups answer right without meeting a single dead node */
static void test_forget_dead_peers(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 91);
	net *t = net_new(160, RING_LOOKUP_SCALABLE, 6);
	build_static(t, 60, &rng);
	ring_peer before[60][RING_MAX_SUCC];
	size_t nbefore[60];
	for (int i = 0; i < 60; i++)
		nbefore[i] = ring_successors(t->node[i], before[i], RING_MAX_SUCC);
	for (int i = 0; i < 60; i += 3)
		t->alive[i] = false;
	t->bounced = 0;
	for (int i = 0; i < 60; i++)
		if (t->alive[i]) {
			for (int d = 0; d < 60; d += 3)
				ring_forget(t->node[i], t->now, (ring_addr)d, &t->out);
			ring_forget(t->node[i], t->now, (ring_addr)i, &t->out); /* self: ignored */
			ring_forget(t->node[i], t->now, RING_ADDR_NONE, &t->out);
			collect(t, (uint32_t)i);
			pump(t);
		}
	for (int i = 0; i < 60; i++) {
		if (!t->alive[i])
			continue;
		ring_peer s[RING_MAX_SUCC];
		size_t ns = ring_successors(t->node[i], s, RING_MAX_SUCC);
		assert_true(ns > 0);
		for (size_t k = 0; k < ns; k++)
			assert_true(t->alive[s[k].addr]);
		/* the first live entry of the old list, when it had one, is the successor now */
		for (size_t k = 0; k < nbefore[i]; k++)
			if (t->alive[before[i][k].addr]) {
				assert_int_equal(s[0].addr, before[i][k].addr);
				assert_int_equal(s[0].addr, oracle_after(t, i));
				break;
			}
		ring_peer p = ring_predecessor(t->node[i]);
		assert_true(p.addr == RING_ADDR_NONE || t->alive[p.addr]);
		for (unsigned f = 0; f < t->cfg.bits; f++) {
			ring_peer fp = ring_finger(t->node[i], f);
			assert_true(fp.addr == RING_ADDR_NONE || t->alive[fp.addr]);
		}
	}
	/* the ring repairs the rest (successor lists that held only dead nodes) by
	 * stabilizing, and from the forgetting on no message goes to a dead node */
	assert_true(converge(t, 400) > 0);
	check_lookups(t, &rng, 10, 161);
	assert_int_equal(t->bounced, 0);
	net_free(t);
}

static void test_finger_runs_match_plain_array(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 9);
	for (unsigned m = 1; m <= 160; m += 13) {
		ring_config cfg;
		ring_config_default(&cfg);
		cfg.bits = m;
		rn_id id;
		rn_id_random(&id, &rng, m);
		ring_node *n = ring_node_new(&cfg, &id, 0);
		uint32_t plain[160];
		for (unsigned i = 0; i < m; i++)
			plain[i] = RING_ADDR_NONE;
		for (int op = 0; op < 400; op++) {
			unsigned lo = (unsigned)rn_rng_below(&rng, m);
			unsigned hi = lo + 1 + (unsigned)rn_rng_below(&rng, m - lo);
			ring_peer p;
			p.addr = (uint32_t)rn_rng_below(&rng, 5) + 1;
			memset(&p.id, (int)p.addr, sizeof p.id);
			ring_set_fingers(n, lo, hi, &p);
			for (unsigned i = lo; i < hi; i++)
				plain[i] = p.addr;
			size_t runs = 1;
			for (unsigned i = 0; i < m; i++) {
				assert_int_equal(ring_finger(n, i).addr, plain[i]);
				if (i && plain[i] != plain[i - 1])
					runs++;
			}
			assert_int_equal(ring_finger_runs(n), runs);
		}
		ring_node_free(n);
	}
}

static void test_config_check(void **state)
{
	(void)state;
	ring_config c;
	ring_config_default(&c);
	assert_int_equal(ring_config_check(&c), 0);
	c.bits = 0;
	assert_true(ring_config_check(&c) < 0);
	c.bits = 161;
	assert_true(ring_config_check(&c) < 0);
	ring_config_default(&c);
	c.successors = RING_MAX_SUCC + 1;
	assert_true(ring_config_check(&c) < 0);
}

/* The oracle for ring_peers_sort: qsort with the same total order, written out here. */
static int oracle_cmp(const void *a, const void *b)
{
	const ring_peer *x = a, *y = b;
	int c = memcmp(x->id.b, y->id.b, RN_ID_BYTES);
	if (c)
		return c;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static void test_peers_sort_matches_qsort(void **state)
{
	(void)state;
	rn_rng rng;
	rn_rng_seed(&rng, 7);
	/* sizes on both sides of the bucketing threshold; small rings make equal ids */
	const size_t sizes[] = {0, 1, 2, 100, 4095, 4096, 5000, 70000, 200000};
	const unsigned bits[] = {160, 12, 20};
	for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
		for (size_t bi = 0; bi < sizeof bits / sizeof *bits; bi++) {
			size_t n = sizes[si];
			ring_peer *a = malloc((n ? n : 1) * sizeof *a);
			ring_peer *want = malloc((n ? n : 1) * sizeof *want);
			assert_non_null(a);
			assert_non_null(want);
			for (size_t i = 0; i < n; i++) {
				rn_id_random(&a[i].id, &rng, bits[bi]);
				a[i].addr = (ring_addr)rn_rng_below(&rng, 1000);
			}
			memcpy(want, a, n * sizeof *a);
			qsort(want, n, sizeof *want, oracle_cmp);
			assert_int_equal(ring_peers_sort(a, n), 0);
			for (size_t i = 0; i < n; i++) {
				assert_memory_equal(a[i].id.b, want[i].id.b, RN_ID_BYTES);
				assert_int_equal(a[i].addr, want[i].addr);
			}
			free(a);
			free(want);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_static_rings_many_sizes),
	    cmocka_unit_test(test_peers_sort_matches_qsort),
	    cmocka_unit_test(test_full_small_ring),
	    cmocka_unit_test(test_scalable_hops_logarithmic),
	    cmocka_unit_test(test_join_one_by_one),
	    cmocka_unit_test(test_concurrent_joins),
	    cmocka_unit_test(test_two_nodes_and_leave),
	    cmocka_unit_test(test_partitioned_rings_merge),
	    cmocka_unit_test(test_failures_repaired),
	    cmocka_unit_test(test_forget_dead_peers),
	    cmocka_unit_test(test_restarted_node_joins_its_successor),
	    cmocka_unit_test(test_finger_runs_match_plain_array),
	    cmocka_unit_test(test_config_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
