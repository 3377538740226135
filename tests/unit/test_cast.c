/* test_cast.c — the cast core (src/cast) in a network of cores (src/sim/castsim.c: an
 * event heap, rates per link direction, propagation delays), checked against what the
 * simulated disks hold: every destination ends with every piece, no piece arrives at a
 * host that holds it more often than the end-game allows, relays carry data where hosts
 * cannot reach each other, resume, corrupt pieces, a link that dies; and the codec. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cast/cast.h"
#include "lib/err.h"
#include "lib/rng.h"
#include "sim/castsim.h"

/* ---- building topologies in memory ---- */

static int vert(cs_topo *t, const char *name, bool sw)
{
	t->v = realloc(t->v, (size_t)(t->nv + 1) * sizeof *t->v);
	assert_non_null(t->v);
	memset(&t->v[t->nv], 0, sizeof *t->v);
	snprintf(t->v[t->nv].name, CAST_NAME_MAX, "%s", name);
	t->v[t->nv].is_switch = sw;
	return t->nv++;
}

static int link(cs_topo *t, int a, int b, double mbps, double delay_ms)
{
	t->l = realloc(t->l, (size_t)(t->nl + 1) * sizeof *t->l);
	assert_non_null(t->l);
	t->l[t->nl] = (cs_link){a, b, mbps, delay_ms, 0};
	return t->nl++;
}

/* src - s - h1 - s - h2 ... : every host reaches only the next one */
static void chain(cs_topo *t, int hosts, double mbps)
{
	memset(t, 0, sizeof *t);
	int prev = vert(t, "src", false);
	for (int i = 1; i < hosts; i++) {
		char n[16];
		snprintf(n, sizeof n, "s%d", i);
		int sw = vert(t, n, true);
		snprintf(n, sizeof n, "h%d", i);
		int h = vert(t, n, false);
		link(t, prev, sw, mbps, 5);
		link(t, sw, h, mbps, 5);
		prev = h;
	}
	t->src = 0;
}

/* every host on one switch; uplinks of the given rates (rates[0] the source's) */
static void star(cs_topo *t, int hosts, const double *rates)
{
	memset(t, 0, sizeof *t);
	int sw = vert(t, "sw", true);
	for (int i = 0; i < hosts; i++) {
		char n[16];
		snprintf(n, sizeof n, i ? "h%d" : "src", i);
		int h = vert(t, n, false);
		link(t, h, sw, rates[i], 2 + i % 7);
	}
	t->src = 1;
}

/* a random connected mesh of direct host-to-host links of uneven rates */
static void mesh(cs_topo *t, int hosts, int extra, uint64_t seed)
{
	memset(t, 0, sizeof *t);
	rn_rng r;
	rn_rng_seed(&r, seed);
	for (int i = 0; i < hosts; i++) {
		char n[16];
		snprintf(n, sizeof n, i ? "h%d" : "src", i);
		vert(t, n, false);
	}
	for (int i = 1; i < hosts; i++) /* a random spanning tree ... */
		link(t, i, (int)rn_rng_below(&r, (uint64_t)i), 5 + (double)rn_rng_below(&r, 95),
		     1 + (double)rn_rng_below(&r, 20));
	for (int k = 0; k < extra; k++) { /* ... and some more links */
		int a = (int)rn_rng_below(&r, (uint64_t)hosts),
		    b = (int)rn_rng_below(&r, (uint64_t)hosts);
		bool dup = a == b;
		for (int i = 0; i < t->nl && !dup; i++)
			dup = (t->l[i].a == a && t->l[i].b == b) ||
			      (t->l[i].a == b && t->l[i].b == a);
		if (!dup)
			link(t, a, b, 5 + (double)rn_rng_below(&r, 95),
			     1 + (double)rn_rng_below(&r, 20));
	}
	t->src = 0;
}

static void topo_free(cs_topo *t)
{
	cs_topo_free(t);
}

/* The oracle: every destination's disk holds every piece, it finished, and the source
 * still holds everything. */
static void check_all_hold(const cs_topo *t, const cs_result *r)
{
	assert_true(r->complete);
	for (int v = 0; v < t->nv; v++) {
		if (t->v[v].is_switch)
			continue;
		assert_int_equal(r->held[v], r->npieces);
		if (v != t->src)
			assert_true(r->done_s[v] > 0);
	}
	/* every piece reached every destination at least once */
	assert_true(r->deliveries >= (uint64_t)(cs_hosts(t) - 1) * r->npieces - r->total.resumed);
}

static void run(const cs_topo *t, uint64_t size, uint32_t piece, uint64_t seed, cs_result *r)
{
	cs_opts o = {.size = size, .piece_size = piece, .seed = seed, .max_s = 3600};
	assert_int_equal(cs_run(t, &o, r), 0);
}

/* ---- the tests ---- */

static void test_chain_relays(void **state)
{
	(void)state;
	cs_topo t;
	chain(&t, 5, 40);
	cs_result r;
	run(&t, 2u << 20, 16384, 1, &r);
	check_all_hold(&t, &r);
	/* a chain has one way in: never a second copy of a piece */
	assert_int_equal(r.dup_arrivals, 0);
	assert_int_equal(r.deliveries, 4ull * r.npieces);
	/* the last host is behind three relays: it cannot finish before the whole file has
	 * crossed one 40 Mbit/s link */
	double one_link = (2u << 20) * 8 / 40e6;
	assert_true(r.done_s[t.nv - 1] > one_link);
	cs_result_free(&r);
	topo_free(&t);
}

static void test_star_uneven(void **state)
{
	(void)state;
	const double rates[8] = {30, 100, 50, 20, 10, 80, 60, 5};
	for (uint64_t seed = 1; seed <= 3; seed++) {
		cs_topo t;
		star(&t, 8, rates);
		cs_result r;
		run(&t, 3u << 20, 32768, seed, &r);
		check_all_hold(&t, &r);
		assert_int_equal(r.total.stalls, 0);
		/* the end-game bound: at most CAST_ENDGAME requesters, so one extra copy */
		assert_true(r.max_dup_per_piece <= CAST_ENDGAME - 1);
		/* duplicates come only from end-game requests */
		assert_true(r.dup_arrivals <= r.total.endgame_req);
		/* the faster receivers finish first: 100 Mbit/s before 5 Mbit/s */
		assert_true(r.done_s[2] < r.done_s[8]);
		cs_result_free(&r);
		topo_free(&t);
	}
}

/* Incast: one host behind a slow link among fast ones asks each of them for pieces. The
 * node-wide cap (twice its measured receive rate over the rtt + 0.1 s, plus
 * CAST_NODE_SPARE pieces) holds requests back there, and the file still arrives whole,
 * the slow host no later than its link allows (its own rate alone bounds it below). */
static void test_incast_capped(void **state)
{
	(void)state;
	double rates[16];
	for (int i = 0; i < 16; i++)
		rates[i] = 100;
	rates[9] = 4; /* h9: 4 Mbit/s */
	cs_topo t;
	star(&t, 16, rates);
	cs_result r;
	uint64_t size = 4u << 20;
	run(&t, size, 65536, 5, &r);
	check_all_hold(&t, &r);
	assert_true(r.total.capped > 0);
	double floor_s = (double)size * 8 / 4e6;
	assert_true(r.done_s[10] >= floor_s);          /* vertex 10 is h9 (0 is the switch) */
	assert_true(r.done_s[10] < 1.5 * floor_s + 1); /* ... and not starved by the cap */
	cs_result_free(&r);
	topo_free(&t);
}

static void test_random_mesh(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++) {
		cs_topo t;
		mesh(&t, 10, 8, seed);
		cs_result r;
		run(&t, 2u << 20, 16384, seed, &r);
		check_all_hold(&t, &r);
		assert_int_equal(r.total.stalls, 0);
		assert_true(r.max_dup_per_piece <= CAST_ENDGAME - 1);
		assert_true(r.dup_arrivals <= r.total.endgame_req);
		/* no destination beats the lower bound */
		cs_bound b;
		cs_lower_bound(&t, 2u << 20, &b);
		assert_true(r.u_s >= b.bound_s * 0.999);
		cs_result_free(&r);
		topo_free(&t);
	}
}

/* The source reaches four hosts on links of its own, and they form a cycle of faster links:
 * the source's upload is the bottleneck, and a piece it sends twice is upload lost. Two
 * hosts across the cycle see no PENDING of each other; GIVEN tells them what the source
 * took requests for, and the source serves the pieces it never sent first. Before both,
 * the source sent 449-455 pieces of 400 (seeds 1-5); with them 423-425. */
static void test_source_sends_few_twice(void **state)
{
	(void)state;
	cs_topo t;
	memset(&t, 0, sizeof t);
	int src = vert(&t, "src", false), d[4];
	for (int i = 0; i < 4; i++) {
		char n[8];
		snprintf(n, sizeof n, "d%d", i + 1);
		d[i] = vert(&t, n, false);
		link(&t, src, d[i], 20, 10);
	}
	for (int i = 0; i < 4; i++)
		link(&t, d[i], d[(i + 1) % 4], 40, 5);
	t.src = src;
	for (uint64_t seed = 1; seed <= 3; seed++) {
		cs_result r;
		run(&t, 25u << 20, 65536, seed, &r);
		check_all_hold(&t, &r);
		assert_int_equal(r.npieces, 400);
		assert_true(r.src_pieces_out >= r.npieces);
		assert_true(r.src_pieces_out <= r.npieces + r.npieces * 8 / 100);
		cs_result_free(&r);
	}
	topo_free(&t);
}

static void test_resume(void **state)
{
	(void)state;
	cs_topo t;
	mesh(&t, 6, 4, 7);
	uint32_t np = (2u << 20) / 16384;
	uint8_t *held = calloc(np, 1);
	uint8_t *pre[6] = {0};
	for (uint32_t p = 0; p < np; p++)
		held[p] = p % 3 != 0; /* host 3 restarts holding two pieces in three */
	pre[3] = held;
	cs_opts o = {.size = 2u << 20, .piece_size = 16384, .seed = 3, .preheld = pre};
	cs_result r;
	assert_int_equal(cs_run(&t, &o, &r), 0);
	check_all_hold(&t, &r);
	assert_int_equal(r.preheld_received, 0); /* nothing it held came again */
	assert_int_equal(r.total.resumed, np - (np + 2) / 3);
	cs_result_free(&r);
	free(held);
	topo_free(&t);
}

static void test_corrupt_pieces(void **state)
{
	(void)state;
	const double rates[5] = {50, 50, 20, 40, 10};
	cs_topo t;
	star(&t, 5, rates);
	cs_opts o = {.size = 1u << 20, .piece_size = 16384, .seed = 5, .corrupt_p = 0.05};
	cs_result r;
	assert_int_equal(cs_run(&t, &o, &r), 0);
	check_all_hold(&t, &r);
	assert_true(r.corrupt_injected > 0);
	assert_int_equal(r.total.corrupt, r.corrupt_injected); /* each one noticed */
	/* each corrupt copy was fetched again: as many extra arrivals as corrupt ones, at
	 * least */
	assert_true(r.deliveries >= 4ull * r.npieces + r.corrupt_injected);
	cs_result_free(&r);
	topo_free(&t);
}

static void test_link_dies(void **state)
{
	(void)state;
	/* src reaches h1 and h2 directly; h1-h2 too. src-h1 dies after 0.5 s: h1 must get
	 * the rest through h2 */
	cs_topo t;
	memset(&t, 0, sizeof t);
	int s = vert(&t, "src", false), h1 = vert(&t, "h1", false), h2 = vert(&t, "h2", false);
	int dying = link(&t, s, h1, 20, 5);
	link(&t, s, h2, 20, 5);
	link(&t, h1, h2, 20, 5);
	t.src = s;
	t.ch = calloc(1, sizeof *t.ch);
	t.ch[0] = (cs_change){500, dying, 0, -1};
	t.nch = 1;
	cs_result r;
	run(&t, 16u << 20, 65536, 9, &r);
	check_all_hold(&t, &r);
	/* the core noticed and asked elsewhere: it could not have finished in time otherwise
	 * (h1 held at most 0.5 s worth of pieces from src when the link died) */
	assert_true(r.total.stalls > 0);
	assert_true(r.done_s[h1] > 0.5 + (16u << 20) * 8 / 40e6);
	(void)h2;
	cs_result_free(&r);
	topo_free(&t);
}

static void test_lower_bound(void **state)
{
	(void)state;
	/* src -40- h1 -10- h2 (direct links): the cut to h2 is 10 Mbit/s */
	cs_topo t;
	memset(&t, 0, sizeof t);
	vert(&t, "src", false);
	vert(&t, "h1", false);
	vert(&t, "h2", false);
	link(&t, 0, 1, 40, 10);
	link(&t, 1, 2, 10, 20);
	cs_bound b;
	cs_lower_bound(&t, 1000000, &b);
	assert_true(fabs(b.cut_s - 0.8) < 1e-9);
	/* upload: 2 destinations * 8e6 bits / (40 + 40 + 10 + 10) Mbit/s */
	assert_true(fabs(b.upload_s - 0.16) < 1e-9);
	assert_true(fabs(b.delay_s - 0.030) < 1e-9);
	assert_true(fabs(b.bound_s - 0.83) < 1e-9);
	/* a second path through h3 adds its 5 Mbit/s to the cut */
	vert(&t, "h3", false);
	link(&t, 0, 3, 5, 1);
	link(&t, 3, 2, 50, 1);
	cs_lower_bound(&t, 1000000, &b);
	assert_true(fabs(b.cut_s - 8e6 / 15e6) < 1e-9);
	topo_free(&t);
}

static void roundtrip(const cast_msg *m, cast_msg *out, cast_info *info, void **scratch,
                      uint8_t **buf)
{
	size_t n = cast_encoded_size(m);
	*buf = malloc(n);
	cast_encode(m, *buf);
	assert_int_equal(cast_decode(*buf, n, out, info, scratch), 0);
	/* every shorter body is malformed, never a crash */
	for (size_t cut = 0; cut < n; cut++) {
		cast_msg x;
		cast_info xi;
		void *s = NULL;
		assert_int_equal(cast_decode(*buf, cut, &x, &xi, &s), RN_EPROTO);
		free(s);
	}
}

static void test_codec(void **state)
{
	(void)state;
	uint8_t hashes[4 * 32] = {0}; /* room for the bad announce below */
	for (int i = 0; i < 96; i++)
		hashes[i] = (uint8_t)i;
	char dests[2][CAST_NAME_MAX] = {"d1", "node-two"};
	cast_info x = {.xfer = 77,
	               .size = 40000,
	               .piece_size = 16384,
	               .npieces = 3,
	               .start_wall_ms = 123456789,
	               .rate_cap = 5,
	               .hashes = hashes,
	               .dests = (const char(*)[CAST_NAME_MAX])dests,
	               .ndests = 2};
	snprintf(x.name, sizeof x.name, "file.bin");
	snprintf(x.source, sizeof x.source, "src");
	cast_msg m = {.type = CAST_MSG_ANNOUNCE, .xfer = 77, .info = &x}, o;
	cast_info oi;
	void *scr;
	uint8_t *buf;
	roundtrip(&m, &o, &oi, &scr, &buf);
	assert_string_equal(oi.name, "file.bin");
	assert_string_equal(oi.source, "src");
	assert_int_equal(oi.size, 40000);
	assert_int_equal(oi.npieces, 3);
	assert_int_equal(oi.ndests, 2);
	assert_string_equal(oi.dests[1], "node-two");
	assert_memory_equal(oi.hashes, hashes, 96);
	free(scr);
	free(buf);
	/* an announce whose piece count does not match its size is refused */
	x.npieces = 4;
	m.info = &x;
	size_t n = cast_encoded_size(&m);
	buf = malloc(n);
	cast_encode(&m, buf);
	assert_int_equal(cast_decode(buf, n, &o, &oi, &scr), RN_EPROTO);
	free(scr);
	free(buf);

	uint32_t list[3] = {0, 5, 99};
	m = (cast_msg){.type = CAST_MSG_REQUEST, .xfer = 9, .pieces = list, .npieces = 3};
	roundtrip(&m, &o, &oi, &scr, &buf);
	assert_int_equal(o.npieces, 3);
	assert_int_equal(o.pieces[2], 99);
	free(scr);
	free(buf);
	m.type = CAST_MSG_GIVEN;
	roundtrip(&m, &o, &oi, &scr, &buf);
	assert_int_equal(o.type, CAST_MSG_GIVEN);
	assert_int_equal(o.npieces, 3);
	assert_int_equal(o.pieces[1], 5);
	free(scr);
	free(buf);

	cast_known k[2] = {{"a", 0}, {"bb", 3}};
	m = (cast_msg){.type = CAST_MSG_NODES, .known = k, .nknown = 2};
	roundtrip(&m, &o, &oi, &scr, &buf);
	assert_int_equal(o.nknown, 2);
	assert_string_equal(o.known[1].name, "bb");
	assert_int_equal(o.known[1].hops, 3);
	free(scr);
	free(buf);

	cast_prog pr[1] = {{"d9", 4, 17, 99999}};
	m = (cast_msg){.type = CAST_MSG_PROGRESS, .xfer = 3, .prog = pr, .nprog = 1};
	roundtrip(&m, &o, &oi, &scr, &buf);
	assert_int_equal(o.prog[0].held, 17);
	assert_int_equal(o.prog[0].done_ms, 99999);
	free(scr);
	free(buf);

	uint8_t data[100];
	memset(data, 7, sizeof data);
	m = (cast_msg){.type = CAST_MSG_PIECE, .xfer = 3, .piece = 2, .data = data, .len = 100};
	roundtrip(&m, &o, &oi, &scr, &buf);
	assert_int_equal(o.len, 100);
	assert_memory_equal(o.data, data, 100);
	/* the driver's way of writing a piece's head matches the codec */
	uint8_t head[CAST_PIECE_HEAD];
	cast_piece_head(3, 2, 100, head);
	assert_memory_equal(head, buf, CAST_PIECE_HEAD);
	free(scr);
	free(buf);

	/* random bytes: malformed or well-formed, never a crash (ASan watches) */
	rn_rng r;
	rn_rng_seed(&r, 42);
	uint8_t junk[300];
	for (int i = 0; i < 20000; i++) {
		size_t len = rn_rng_below(&r, sizeof junk);
		for (size_t j = 0; j < len; j++)
			junk[j] = (uint8_t)rn_rng_next(&r);
		if (len)
			junk[0] = (uint8_t)(1 + rn_rng_below(&r, CAST_MSG_PING));
		cast_msg jm;
		cast_info ji;
		void *js = NULL;
		(void)cast_decode(junk, len, &jm, &ji, &js);
		free(js);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec),
	    cmocka_unit_test(test_lower_bound),
	    cmocka_unit_test(test_chain_relays),
	    cmocka_unit_test(test_star_uneven),
	    cmocka_unit_test(test_random_mesh),
	    cmocka_unit_test(test_incast_capped),
	    cmocka_unit_test(test_source_sends_few_twice),
	    cmocka_unit_test(test_resume),
	    cmocka_unit_test(test_corrupt_pieces),
	    cmocka_unit_test(test_link_dies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
