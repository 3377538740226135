/* test_files.c — the file core against a brute-force oracle.
 *
 * The kv store under the core is a map held here, versioned as the kv core is: a write is
 * stamped when the core asks for it (its wall-clock time, then a sequence number), the
 * newest stamp wins whatever order writes arrive in, and a delete leaves a tombstone. Every
 * kv operation the core starts is queued and answered later in random order (answers
 * overtake each other), some answers are "unsure" (the core must retry), and a chunk read
 * can be made to return damaged bytes.
 * The oracle is the bytes the test uploaded: every download (of random ranges) must give
 * exactly them, and after uploads, overwrites, deletes and aborts the store must hold
 * exactly the chunks of the files listed, their manifests and an index naming them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "files/files.h"
#include "lib/err.h"
#include "lib/rng.h"

#define MAXREC 4096
#define MAXQ   4096
#define MAXX   64

typedef struct {
	uint8_t key[FILES_KEY_MAX];
	size_t klen;
	uint8_t *val;
	size_t vlen;
	uint64_t ver; /* its version: the stamp of the write that made it */
	bool tomb;    /* deleted: a tombstone, absent to readers */
} rec;

typedef struct {
	uint64_t req;
	kv_op op;
	uint8_t key[FILES_KEY_MAX];
	size_t klen;
	uint8_t *val;
	size_t vlen;
	unsigned core; /* which core asked */
	bool has_cond;
	uint64_t cond;
	uint64_t stamp; /* a write's version, made when the core asked (newest wins) */
} qop;

typedef struct {
	bool done, meta;
	files_status status;
	uint8_t *got; /* download bytes */
	size_t glen;
	uint64_t size; /* meta */
	unsigned outstanding, max_outstanding;
	unsigned rooms;
	size_t nlist;
	char list[16][FILES_NAME_MAX + 1];
	uint32_t repaired;
} xstate;

typedef struct {
	files_core *f;
	files_core *f2; /* a second node's core over the same store, when a test makes one */
	uint64_t vseq;
	rn_rng rng;
	rec recs[MAXREC];
	size_t nrec;
	qop q[MAXQ];
	size_t nq;
	uint64_t now;
	unsigned unsure_pct;   /* answers that say "unsure" */
	unsigned corrupt_left; /* chunk reads still to damage */
	bool corrupt_always;
	xstate xs[MAXX];
	unsigned inflight_chunks, max_inflight_chunks;
	/* the node's own copies (driver.local): which chunks it holds, which are damaged */
	bool local_on, take_on;
	unsigned local_good, local_bad, local_missing; /* local reads answered each way */
	unsigned kv_chunk_gets;                        /* chunk gets that reached the store */
	/* ... asking the store to skip its own check of the copy (the core checks), or not */
	unsigned chunk_gets_unchecked, chunk_gets_checked;
	unsigned reported; /* damaged calls, all for a damaged copy */
	int64_t skew_ms;   /* the second core's clock against the first's */
} world;

static world W;

/* The record under key, tombstones included. */
static rec *find_any(const uint8_t *key, size_t klen)
{
	for (size_t i = 0; i < W.nrec; i++)
		if (W.recs[i].klen == klen && !memcmp(W.recs[i].key, key, klen))
			return &W.recs[i];
	return NULL;
}

/* The live record under key (NULL: absent or deleted). */
static rec *find(const uint8_t *key, size_t klen)
{
	rec *r = find_any(key, klen);
	return r && !r->tomb ? r : NULL;
}

static size_t live_count(void)
{
	size_t n = 0;
	for (size_t i = 0; i < W.nrec; i++)
		n += !W.recs[i].tomb;
	return n;
}

/* A write's stamp: wall-clock ms (now + offset) and a sequence number, as an HLC. */
#define STAMP(ms) ((uint64_t)(ms) << 20)

/* Each core's wall clock is now + its offset: the second node's may be off (skew). */
#define WALL_BASE (24ull * 3600 * 1000)
static int64_t next_skew_ms; /* the second core's clock, ahead (> 0) or behind, by this */

static uint64_t wall_of(unsigned core)
{
	return W.now + WALL_BASE + (core ? (uint64_t)W.skew_ms : 0);
}

static uint64_t stamp_now(unsigned core)
{
	return STAMP(wall_of(core)) + ++W.vseq;
}

static unsigned core_ids[2] = {0, 1};

static files_core *core_of(unsigned i)
{
	return i ? W.f2 : W.f;
}

static void d_kv(void *ctx, uint64_t req, kv_op op, const uint8_t *key, size_t klen,
                 const uint8_t *val, size_t vlen, const kv_version *cond, uint64_t at_ms,
                 bool unchecked)
{
	assert_true(W.nq < MAXQ);
	bool chunk_get = klen == 3 + FILES_HASH && key[2] == 'c' && op == KV_GET;
	/* only a chunk, which the core checks against its name, may skip the store's check */
	assert_true(!unchecked || chunk_get);
	W.chunk_gets_unchecked += chunk_get && unchecked;
	W.chunk_gets_checked += chunk_get && !unchecked;
	qop *o = &W.q[W.nq++];
	o->core = *(const unsigned *)ctx;
	o->has_cond = cond != NULL;
	o->cond = cond ? cond->stamp : 0;
	o->req = req;
	o->op = op;
	o->stamp = stamp_now(o->core);
	if (op == KV_DEL && at_ms && STAMP(at_ms) < o->stamp)
		o->stamp = STAMP(at_ms); /* dated: loses to what was written since */
	memcpy(o->key, key, klen);
	o->klen = klen;
	o->val = NULL;
	o->vlen = vlen;
	if (op == KV_PUT) {
		o->val = malloc(vlen ? vlen : 1);
		memcpy(o->val, val, vlen);
	}
	if (klen == 3 + FILES_HASH && key[2] == 'c' && (op == KV_PUT || op == KV_GET))
		if (++W.inflight_chunks > W.max_inflight_chunks)
			W.max_inflight_chunks = W.inflight_chunks;
	W.kv_chunk_gets += klen == 3 + FILES_HASH && key[2] == 'c' && op == KV_GET;
}

#define OP_LOCAL ((kv_op)0) /* a queued driver.local read */

/* This node's own copies: about 3 chunks in 4 are held here, and some of those damaged. */
static bool held_here(const uint8_t *key)
{
	return key[3] % 4 != 0;
}
static bool damaged_here(const uint8_t *key)
{
	return key[4] % 5 == 0;
}

static void d_local(void *ctx, uint64_t req, const uint8_t *key, size_t klen)
{
	assert_true(W.nq < MAXQ);
	assert_true(klen == 3 + FILES_HASH && key[2] == 'c'); /* only chunks are read here */
	qop *o = &W.q[W.nq++];
	memset(o, 0, sizeof *o);
	o->core = *(const unsigned *)ctx;
	o->req = req;
	o->op = OP_LOCAL;
	memcpy(o->key, key, klen);
	o->klen = klen;
	if (++W.inflight_chunks > W.max_inflight_chunks)
		W.max_inflight_chunks = W.inflight_chunks;
}

static void d_damaged(void *ctx, const uint8_t *key, size_t klen)
{
	(void)ctx;
	assert_true(klen == 3 + FILES_HASH && held_here(key) && damaged_here(key));
	W.reported++;
}

/* An answer with the bytes in a buffer the core takes, hashed here half the time (as the
 * node's worker does) and by the core otherwise. */
static void answer_take(files_core *f, uint64_t req, kv_status st, const uint8_t *val, size_t vlen,
                        const kv_version *v)
{
	uint8_t *b = NULL;
	if (val) {
		b = malloc(vlen ? vlen : 1);
		memcpy(b, val, vlen);
	}
	uint8_t h[FILES_HASH];
	bool hashed = b && rn_rng_below(&W.rng, 2);
	if (hashed)
		files_sha256(b, vlen, h);
	files_on_kv_take(f, W.now, req, st, b, vlen, v, hashed ? h : NULL);
}

/* Answers a local read from the store map: the copy is the stored chunk (a chunk's bytes
 * are its name's), one byte off when damaged here. */
static void answer_local(files_core *f, const qop *o)
{
	rec *r = find(o->key, o->klen);
	if (!r || !held_here(o->key)) {
		W.local_missing++;
		files_on_kv(f, W.now, o->req, rn_rng_below(&W.rng, 2) ? KV_NOT_FOUND : KV_ERROR,
		            NULL, 0, NULL);
		return;
	}
	uint8_t *b = malloc(r->vlen ? r->vlen : 1);
	memcpy(b, r->val, r->vlen);
	if (damaged_here(o->key) && r->vlen) {
		b[rn_rng_below(&W.rng, r->vlen)] ^= 0x21;
		W.local_bad++;
	} else {
		W.local_good++;
	}
	answer_take(f, o->req, KV_OK, b, r->vlen, NULL);
	free(b);
}

static void d_meta(void *ctx, uint64_t x, const files_manifest *m)
{
	(void)ctx;
	W.xs[x].meta = true;
	W.xs[x].size = m->size;
}

static void d_data(void *ctx, uint64_t x, uint8_t *chunk, size_t off, size_t len)
{
	(void)ctx;
	xstate *s = &W.xs[x];
	s->got = realloc(s->got, s->glen + len + 1);
	memcpy(s->got + s->glen, chunk + off, len);
	free(chunk); /* the driver's to free */
	s->glen += len;
	if (++s->outstanding > s->max_outstanding)
		s->max_outstanding = s->outstanding;
}

static void d_room(void *ctx, uint64_t x)
{
	(void)ctx;
	W.xs[x].rooms++;
}

static void d_done(void *ctx, uint64_t x, const files_result *r)
{
	(void)ctx;
	xstate *s = &W.xs[x];
	assert_false(s->done);
	s->done = true;
	s->status = r->status;
	s->repaired = r->chunks_repaired;
	s->nlist = r->nlist;
	for (size_t i = 0; i < r->nlist && i < 16; i++)
		snprintf(s->list[i], sizeof s->list[i], "%s", r->list[i].name);
}

/* Answers one queued operation, chosen at random. */
static void answer_one(void)
{
	size_t i = rn_rng_below(&W.rng, W.nq);
	qop o = W.q[i];
	W.q[i] = W.q[--W.nq];
	if (o.klen == 3 + FILES_HASH && o.key[2] == 'c' &&
	    (o.op == KV_PUT || o.op == KV_GET || o.op == OP_LOCAL))
		W.inflight_chunks--;
	W.now += 1;
	files_core *f = core_of(o.core);
	if (o.op == OP_LOCAL) {
		answer_local(f, &o);
		return;
	}
	if (rn_rng_below(&W.rng, 100) < W.unsure_pct) {
		free(o.val);
		files_on_kv(f, W.now, o.req, KV_UNSURE, NULL, 0, NULL);
		return;
	}
	rec *r = find(o.key, o.klen), *any = find_any(o.key, o.klen);
	kv_version held = {r ? r->ver : 0, 0, false};
	if (o.has_cond && o.op != KV_GET && o.cond != held.stamp) { /* compare-and-set */
		free(o.val);
		files_on_kv(f, W.now, o.req, KV_CONFLICT, NULL, 0, r ? &held : NULL);
		return;
	}
	if (o.has_cond && r && o.stamp <= r->ver)
		o.stamp = r->ver + 1; /* as the kv coordinator: the writer saw r, so it is newer */
	if (o.op == KV_PUT || o.op == KV_DEL) {
		bool live = r != NULL;
		if (!any) {
			assert_true(W.nrec < MAXREC);
			any = &W.recs[W.nrec++];
			memset(any, 0, sizeof *any);
			memcpy(any->key, o.key, o.klen);
			any->klen = o.klen;
		}
		if (o.stamp > any->ver) { /* the newest version wins; an older write is stale */
			free(any->val);
			any->val = o.op == KV_PUT ? o.val : NULL;
			any->vlen = o.op == KV_PUT ? o.vlen : 0;
			any->ver = o.stamp;
			any->tomb = o.op == KV_DEL;
		} else {
			free(o.val);
		}
		kv_version v = {any->ver, 0, any->tomb};
		if (o.op == KV_PUT)
			files_on_kv(f, W.now, o.req, KV_OK, NULL, 0, &v);
		else
			files_on_kv(f, W.now, o.req, live ? KV_OK : KV_NOT_FOUND, NULL, 0, NULL);
	} else if (!r) {
		files_on_kv(f, W.now, o.req, KV_NOT_FOUND, NULL, 0, NULL);
	} else if (o.key[2] == 'c' && r->vlen && (W.corrupt_always || W.corrupt_left)) {
		W.corrupt_left -= W.corrupt_left > 0;
		uint8_t *bad = malloc(r->vlen);
		memcpy(bad, r->val, r->vlen);
		bad[rn_rng_below(&W.rng, r->vlen)] ^= 0x5a;
		files_on_kv(f, W.now, o.req, KV_OK, bad, r->vlen, &held);
		free(bad);
	} else if (W.take_on && rn_rng_below(&W.rng, 2)) {
		answer_take(f, o.req, KV_OK, r->val, r->vlen, &held);
	} else {
		uint8_t *copy = malloc(r->vlen ? r->vlen : 1); /* the store may change meanwhile */
		memcpy(copy, r->val, r->vlen);
		files_on_kv(f, W.now, o.req, KV_OK, copy, r->vlen, &held);
		free(copy);
	}
}

/* One answer, or when none is queued the cores' next tick (their retries). False: quiet. */
static bool step(void)
{
	if (W.nq) {
		answer_one();
		return true;
	}
	uint64_t at = files_wake_at(W.f), at2 = W.f2 ? files_wake_at(W.f2) : UINT64_MAX;
	if (at2 < at)
		at = at2;
	if (at == UINT64_MAX)
		return false;
	W.now = at > W.now ? at : W.now;
	files_tick(W.f, W.now);
	if (W.f2)
		files_tick(W.f2, W.now);
	return true;
}

/* Runs until nothing is queued: answers, ticks for the retries. */
static void settle(void)
{
	for (int guard = 0; guard < 1000000; guard++)
		if (!step())
			return;
	fail_msg("the core never went quiet");
}

static void consume_all(uint64_t x)
{
	while (W.xs[x].outstanding) {
		W.xs[x].outstanding--;
		files_download_consumed(W.f, W.now, x);
	}
}

static void world_init_with(uint32_t chunk, unsigned window, uint64_t seed, bool local)
{
	memset(&W, 0, sizeof W);
	rn_rng_seed(&W.rng, seed);
	files_config c;
	files_config_default(&c);
	c.chunk_size = chunk;
	c.window = window;
	c.max_file = (uint64_t)chunk * 1000;
	c.retries = 30;
	c.retry_ms = 10;
	c.wall_offset_ms = WALL_BASE;
	files_driver d = {&core_ids[0],
	                  d_kv,
	                  d_meta,
	                  d_data,
	                  d_room,
	                  d_done,
	                  local ? d_local : NULL,
	                  local ? d_damaged : NULL};
	W.local_on = W.take_on = local;
	W.f = files_new(&c, &d);
	assert_non_null(W.f);
	d.ctx = &core_ids[1];
	W.skew_ms = next_skew_ms;
	c.wall_offset_ms = (uint64_t)((int64_t)WALL_BASE + W.skew_ms);
	W.f2 = files_new(&c, &d); /* idle unless a test gives it work */
	assert_non_null(W.f2);
}

static void world_init(uint32_t chunk, unsigned window, uint64_t seed)
{
	world_init_with(chunk, window, seed, false);
}

static void world_free(void)
{
	files_free(W.f);
	files_free(W.f2);
	for (size_t i = 0; i < W.nrec; i++)
		free(W.recs[i].val);
	for (size_t i = 0; i < W.nq; i++)
		free(W.q[i].val);
	for (int i = 0; i < MAXX; i++)
		free(W.xs[i].got);
}

static uint8_t *random_bytes(size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rn_rng_below(&W.rng, 256);
	return b;
}

/* Feeds bytes in random pieces, only while the core wants them, answering kv operations
 * in between (as the network would). Returns the status done gave. */
static void feed_core(files_core *f, uint64_t x, const uint8_t *b, size_t n, size_t stop_at)
{
	size_t off = 0;
	while (off < n && off < stop_at) {
		if (!files_upload_wants(f, x)) {
			assert_true(W.nq > 0); /* something must be in flight to make room */
			answer_one();
			continue;
		}
		size_t k = 1 + rn_rng_below(&W.rng, 200);
		if (k > n - off)
			k = n - off;
		if (k > stop_at - off)
			k = stop_at - off;
		files_upload_data(f, W.now, x, b + off, k);
		off += k;
		if (W.nq && rn_rng_below(&W.rng, 2))
			answer_one();
	}
}

static void feed(uint64_t x, const uint8_t *b, size_t n, size_t stop_at)
{
	feed_core(W.f, x, b, n, stop_at);
}

static void upload(uint64_t x, const char *name, const uint8_t *b, size_t n)
{
	memset(&W.xs[x], 0, sizeof W.xs[x]);
	assert_int_equal(files_upload_begin(W.f, W.now, x, name, strlen(name)), 0);
	feed(x, b, n, n);
	files_upload_end(W.f, W.now, x);
	settle();
	assert_true(W.xs[x].done);
	assert_int_equal(W.xs[x].status, FILES_OK);
}

/* Downloads [off, off + len) and checks it against the oracle's bytes. */
static void download_check(uint64_t x, const char *name, const uint8_t *b, size_t n, uint64_t off,
                           uint64_t len)
{
	free(W.xs[x].got);
	memset(&W.xs[x], 0, sizeof W.xs[x]);
	assert_int_equal(files_download(W.f, W.now, x, name, strlen(name)), 0);
	settle();
	assert_true(W.xs[x].meta);
	assert_int_equal(W.xs[x].size, n);
	files_download_start(W.f, W.now, x, off, len);
	while (!W.xs[x].done) {
		if (W.nq && rn_rng_below(&W.rng, 3))
			answer_one();
		else if (W.xs[x].outstanding)
			consume_all(x);
		else if (W.nq)
			answer_one();
		else
			settle();
	}
	assert_int_equal(W.xs[x].status, FILES_OK);
	assert_int_equal(W.xs[x].glen, len);
	if (len)
		assert_memory_equal(W.xs[x].got, b + off, len);
	consume_all(x);
}

/* The store holds exactly: the index, each file's manifest, and the chunks they use. */
static void check_store(const char **names, uint8_t **bytes, const size_t *sizes, size_t nf,
                        uint32_t chunk)
{
	size_t want = nf ? 1 : 0; /* the index (absent until the first upload) */
	uint8_t hashes[256][FILES_HASH];
	size_t nh = 0;
	for (size_t i = 0; i < nf; i++) {
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_manifest_key(names[i], strlen(names[i]), key);
		rec *r = find(key, kl);
		assert_non_null(r);
		want++;
		for (size_t off = 0; off < sizes[i]; off += chunk) {
			size_t k = sizes[i] - off < chunk ? sizes[i] - off : chunk;
			uint8_t h[FILES_HASH];
			files_sha256(bytes[i] + off, k, h);
			bool seen = false;
			for (size_t j = 0; j < nh && !seen; j++)
				seen = !memcmp(hashes[j], h, FILES_HASH);
			if (!seen) {
				assert_true(nh < 256);
				memcpy(hashes[nh++], h, FILES_HASH);
			}
		}
	}
	for (size_t j = 0; j < nh; j++) {
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_chunk_key(hashes[j], key);
		rec *r = find(key, kl);
		assert_non_null(r);
		assert_true(files_record_valid(r->key, r->klen, r->val, r->vlen));
	}
	want += nh;
	size_t index_there = 0, live = 0;
	for (size_t i = 0; i < W.nrec; i++) {
		index_there += !W.recs[i].tomb && W.recs[i].klen == 3 && W.recs[i].key[2] == 'i';
		live += !W.recs[i].tomb;
	}
	if (!nf && index_there)
		want++;
	assert_int_equal(live, want);
}

static void list_check(uint64_t x, const char **sorted, size_t n)
{
	memset(&W.xs[x], 0, sizeof W.xs[x]);
	assert_int_equal(files_list(W.f, W.now, x), 0);
	settle();
	assert_true(W.xs[x].done);
	assert_int_equal(W.xs[x].status, FILES_OK);
	assert_int_equal(W.xs[x].nlist, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(W.xs[x].list[i], sorted[i]);
}

static void test_round_trips(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++) {
		const uint32_t cs = 64;
		world_init(cs, 3, seed);
		W.unsure_pct = seed > 2 ? 20 : 0; /* half the runs retry a fifth of everything */
		size_t sizes[] = {0, 1, cs - 1, cs, cs + 1, 5 * cs + 7};
		const char *names[] = {"zero", "one", "almost", "exact", "exact+1", "several"};
		uint8_t *bytes[6];
		for (int i = 0; i < 6; i++) {
			bytes[i] = random_bytes(sizes[i]);
			upload((uint64_t)i, names[i], bytes[i], sizes[i]);
		}
		assert_true(W.max_inflight_chunks <= 3);
		for (int i = 0; i < 6; i++) {
			download_check(10, names[i], bytes[i], sizes[i], 0, sizes[i]);
			assert_true(W.xs[10].max_outstanding <= 3);
			/* ranges at the edges and at random */
			size_t n = sizes[i];
			if (n) {
				download_check(11, names[i], bytes[i], n, 0, 1);
				download_check(11, names[i], bytes[i], n, n - 1, 1);
				if (n > cs) {
					download_check(11, names[i], bytes[i], n, cs - 1, 2);
					download_check(11, names[i], bytes[i], n, cs, n - cs);
				}
				for (int k = 0; k < 5; k++) {
					uint64_t a = rn_rng_below(&W.rng, n),
					         b = rn_rng_below(&W.rng, n);
					uint64_t lo = a < b ? a : b, hi = a < b ? b : a;
					download_check(11, names[i], bytes[i], n, lo, hi - lo + 1);
				}
			}
		}
		assert_true(W.max_inflight_chunks <= 3);
		const char *sorted[] = {"almost", "exact", "exact+1", "one", "several", "zero"};
		list_check(20, sorted, 6);
		check_store(names, bytes, sizes, 6, cs);
		for (int i = 0; i < 6; i++)
			free(bytes[i]);
		world_free();
	}
}

/* Two nodes list and unlist files at the same moment: every change reaches the index. The
 * uploads and deletes of both cores run interleaved, their kv answers in random order, so
 * both often read the same index version; the store refuses the second conditional write
 * and its core makes its change again on what is there. */
static void test_index_two_nodes(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 6; seed++) {
		const uint32_t cs = 16;
		world_init(cs, 2, 40 + seed);
		W.unsure_pct = seed > 3 ? 10 : 0;
		enum { NF = 10 };
		char names[NF][8];
		uint8_t *bytes[NF];
		size_t sizes[NF];
		for (unsigned i = 0; i < NF; i++) {
			snprintf(names[i], sizeof names[i], "f%u", i);
			sizes[i] = 1 + rn_rng_below(&W.rng, 3 * cs);
			bytes[i] = random_bytes(sizes[i]);
			memset(&W.xs[i], 0, sizeof W.xs[i]);
			assert_int_equal(files_upload_begin(core_of(i % 2), W.now, i, names[i],
			                                    strlen(names[i])),
			                 0);
		}
		size_t off[NF] = {0};
		for (bool more = true; more;) { /* a piece of each in turn, while it wants bytes */
			more = false;
			for (unsigned i = 0; i < NF; i++) {
				if (off[i] == sizes[i])
					continue;
				more = true;
				if (!files_upload_wants(core_of(i % 2), i)) {
					step(); /* an answer, or the retries' tick, makes room */
					continue;
				}
				size_t k = 1 + rn_rng_below(&W.rng, cs);
				k = k > sizes[i] - off[i] ? sizes[i] - off[i] : k;
				files_upload_data(core_of(i % 2), W.now, i, bytes[i] + off[i], k);
				off[i] += k;
			}
		}
		for (unsigned i = 0; i < NF; i++)
			files_upload_end(core_of(i % 2), W.now, i);
		settle();
		for (unsigned i = 0; i < NF; i++) {
			assert_true(W.xs[i].done);
			assert_int_equal(W.xs[i].status, FILES_OK);
		}
		const char *all[NF];
		for (unsigned i = 0; i < NF; i++)
			all[i] = names[i];
		list_check(30, all, NF); /* f0..f9 sort as they are numbered */
		/* both delete at once: the odd ones through one core, f2 and f4 through the other
		 */
		unsigned dels[] = {1, 3, 5, 7, 9, 2, 4};
		for (unsigned k = 0; k < 7; k++) {
			unsigned i = dels[k];
			memset(&W.xs[40 + k], 0, sizeof W.xs[40 + k]);
			assert_int_equal(files_delete(core_of(k >= 5), W.now, 40 + k, names[i],
			                              strlen(names[i])),
			                 0);
		}
		settle();
		for (unsigned k = 0; k < 7; k++)
			assert_int_equal(W.xs[40 + k].status, FILES_OK);
		const char *left[] = {names[0], names[6], names[8]};
		list_check(31, left, 3);
		uint8_t *lb[] = {bytes[0], bytes[6], bytes[8]};
		size_t ls[] = {sizes[0], sizes[6], sizes[8]};
		check_store(left, lb, ls, 3, cs);
		for (unsigned i = 0; i < 3; i++)
			download_check(32, left[i], lb[i], ls[i], 0, ls[i]);
		assert_true(files_get_stats(W.f)->index_conflicts +
		                files_get_stats(W.f2)->index_conflicts >
		            0); /* the race did happen */
		for (unsigned i = 0; i < NF; i++)
			free(bytes[i]);
		world_free();
	}
}

static void test_dedup_delete_overwrite(void **state)
{
	(void)state;
	const uint32_t cs = 32;
	world_init(cs, 2, 7);
	uint8_t *a = random_bytes(4 * cs), *b = random_bytes(3 * cs + 5);
	uint8_t *ab = malloc(7 * cs + 5); /* shares a's chunks */
	memcpy(ab, a, 4 * cs);
	memcpy(ab + 4 * cs, b, 3 * cs + 5);
	upload(0, "a", a, 4 * cs);
	upload(1, "a-copy", a, 4 * cs); /* the same bytes: no new chunks */
	upload(2, "ab", ab, 7 * cs + 5);
	{
		const char *n[] = {"a", "a-copy", "ab"};
		uint8_t *by[] = {a, a, ab};
		size_t sz[] = {4 * cs, 4 * cs, 7 * cs + 5};
		check_store(n, by, sz, 3, cs);
	}
	/* delete a: every chunk is still used by a-copy and ab */
	memset(&W.xs[3], 0, sizeof W.xs[3]);
	assert_int_equal(files_delete(W.f, W.now, 3, "a", 1), 0);
	settle();
	assert_int_equal(W.xs[3].status, FILES_OK);
	{
		const char *n[] = {"a-copy", "ab"};
		uint8_t *by[] = {a, ab};
		size_t sz[] = {4 * cs, 7 * cs + 5};
		check_store(n, by, sz, 2, cs);
		list_check(4, n, 2);
	}
	/* overwrite ab with b: its own tail chunks differ from b's (b starts a chunk there) */
	upload(5, "ab", b, 3 * cs + 5);
	{
		const char *n[] = {"a-copy", "ab"};
		uint8_t *by[] = {a, b};
		size_t sz[] = {4 * cs, 3 * cs + 5};
		check_store(n, by, sz, 2, cs);
	}
	download_check(6, "ab", b, 3 * cs + 5, 0, 3 * cs + 5);
	/* a missing file */
	memset(&W.xs[7], 0, sizeof W.xs[7]);
	assert_int_equal(files_delete(W.f, W.now, 7, "nothing", 7), 0);
	settle();
	assert_int_equal(W.xs[7].status, FILES_NOT_FOUND);
	memset(&W.xs[8], 0, sizeof W.xs[8]);
	assert_int_equal(files_download(W.f, W.now, 8, "nothing", 7), 0);
	settle();
	assert_int_equal(W.xs[8].status, FILES_NOT_FOUND);
	assert_false(W.xs[8].meta);
	/* delete everything: only the (empty) index is left */
	for (uint64_t x = 9; x <= 10; x++) {
		const char *nm = x == 9 ? "a-copy" : "ab";
		memset(&W.xs[x], 0, sizeof W.xs[x]);
		assert_int_equal(files_delete(W.f, W.now, x, nm, strlen(nm)), 0);
		settle();
		assert_int_equal(W.xs[x].status, FILES_OK);
	}
	check_store(NULL, NULL, NULL, 0, cs);
	list_check(11, NULL, 0);
	assert_int_equal(files_active(W.f), 0);
	free(a);
	free(b);
	free(ab);
	world_free();
}

static void test_abort_collects(void **state)
{
	(void)state;
	const uint32_t cs = 16;
	for (uint64_t seed = 1; seed <= 10; seed++) {
		world_init(cs, 3, 100 + seed);
		W.unsure_pct = seed % 2 ? 10 : 0;
		uint8_t *keep = random_bytes(5 * cs);
		upload(0, "kept", keep, 5 * cs);
		/* an upload that shares kept's first chunks, then the client goes */
		uint8_t *b = random_bytes(20 * cs);
		memcpy(b, keep, 2 * cs);
		memset(&W.xs[1], 0, sizeof W.xs[1]);
		assert_int_equal(files_upload_begin(W.f, W.now, 1, "gone", 4), 0);
		feed(1, b, 20 * cs, 1 + rn_rng_below(&W.rng, 20 * cs - 1));
		files_abort(W.f, W.now, 1);
		settle();
		assert_false(W.xs[1].done); /* nobody to tell */
		assert_int_equal(files_active(W.f), 0);
		const char *n[] = {"kept"};
		uint8_t *by[] = {keep};
		size_t sz[] = {5 * cs};
		check_store(n, by, sz, 1, cs); /* no manifest for "gone", none of its own chunks */
		download_check(2, "kept", keep, 5 * cs, 0, 5 * cs);
		free(keep);
		free(b);
		world_free();
	}
}

static void test_corrupt_chunks(void **state)
{
	(void)state;
	const uint32_t cs = 64;
	world_init(cs, 2, 9);
	uint8_t *b = random_bytes(6 * cs + 3);
	upload(0, "f", b, 6 * cs + 3);
	/* a few damaged reads: another read gets good bytes, the download is right */
	W.corrupt_left = 3;
	W.chunk_gets_unchecked = W.chunk_gets_checked = 0;
	download_check(1, "f", b, 6 * cs + 3, 0, 6 * cs + 3);
	assert_int_equal(W.xs[1].repaired, 3);
	assert_int_equal(files_get_stats(W.f)->bad_chunks, 3);
	/* each chunk is first asked for unchecked (the core checks it); each read again after
	 * a damaged answer asks the store to check its copies, so the bad one is repaired */
	assert_int_equal(W.chunk_gets_unchecked, 7);
	assert_int_equal(W.chunk_gets_checked, 3);
	/* every read damaged: the download fails, and what it sent is a right prefix */
	W.corrupt_always = true;
	memset(&W.xs[2], 0, sizeof W.xs[2]);
	assert_int_equal(files_download(W.f, W.now, 2, "f", 1), 0);
	settle();
	files_download_start(W.f, W.now, 2, 0, 6 * cs + 3);
	settle();
	assert_true(W.xs[2].done);
	assert_int_equal(W.xs[2].status, FILES_CORRUPT);
	assert_int_equal(W.xs[2].glen, 0);
	assert_int_equal(files_active(W.f), 0);
	free(b);
	world_free();
}

/* With the driver's local reads (this node's own copies, chunks named by their hash):
 * every download is still exactly the bytes uploaded; a chunk held here and good is never
 * asked of the store, one missing or damaged here is (and a damaged one is reported to the
 * driver, once per read, and only those); the window bounds local and store reads alike;
 * answers whose buffers the core takes, hashed by the driver or not, in random order. */
static void test_local_copies(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++) {
		const uint32_t cs = 32;
		world_init_with(cs, 3, 70 + seed, true);
		size_t n = 40 * cs + 5;
		uint8_t *b = random_bytes(n);
		upload(0, "f", b, n);
		uint8_t *b2 = random_bytes(3 * cs);
		upload(1, "g", b2, 3 * cs);
		W.kv_chunk_gets = 0;
		W.unsure_pct = seed > 2 ? 15 : 0;
		download_check(10, "f", b, n, 0, n);
		for (int k = 0; k < 6; k++) {
			uint64_t lo = rn_rng_below(&W.rng, n), hi = rn_rng_below(&W.rng, n);
			if (lo > hi) {
				uint64_t t = lo;
				lo = hi;
				hi = t;
			}
			download_check(11, "f", b, n, lo, hi - lo + 1);
		}
		download_check(12, "g", b2, 3 * cs, 0, 3 * cs);
		assert_true(W.max_inflight_chunks <= 3);
		const files_stats *st = files_get_stats(W.f);
		assert_true(W.local_good > 0 && W.local_bad > 0 && W.local_missing > 0);
		assert_int_equal(st->chunks_local, W.local_good);
		assert_int_equal(st->bad_local, W.local_bad);
		assert_int_equal(W.reported, W.local_bad);
		if (!W.unsure_pct) /* exactly the reads this node could not serve went out */
			assert_int_equal(W.kv_chunk_gets, W.local_bad + W.local_missing);
		/* a download given up mid-way, local reads still out: nothing leaks */
		memset(&W.xs[13], 0, sizeof W.xs[13]);
		assert_int_equal(files_download(W.f, W.now, 13, "f", 1), 0);
		settle();
		files_download_start(W.f, W.now, 13, 0, n);
		for (int i = 0; i < 3 && W.nq; i++)
			answer_one();
		files_abort(W.f, W.now, 13);
		settle();
		consume_all(13);
		assert_int_equal(files_active(W.f), 0);
		W.unsure_pct = 0;
		const char *names[] = {"f", "g"};
		uint8_t *bytes[] = {b, b2};
		size_t sizes[] = {n, 3 * cs};
		check_store(names, bytes, sizes, 2, cs);
		free(b);
		free(b2);
		world_free();
	}
}

static void test_limits_and_names(void **state)
{
	(void)state;
	world_init(64, 2, 3);
	const char *bad[] = {"", ".", "..", "a/b", "../x", "/abs", "a\\b", "tab\there", "nul\x01"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_non_null(files_name_problem(bad[i], strlen(bad[i])));
		assert_int_equal(files_upload_begin(W.f, 0, 1, bad[i], strlen(bad[i])), RN_EINVAL);
	}
	assert_non_null(files_name_problem("a\0b", 3));
	assert_non_null(files_name_problem("\xc3", 1));     /* cut UTF-8 */
	assert_non_null(files_name_problem("\xc0\xaf", 2)); /* overlong '/' */
	assert_null(files_name_problem("r\xc3\xa9sum\xc3\xa9.txt", 10));
	assert_null(files_name_problem("..hidden", 8));
	char longname[300];
	memset(longname, 'x', sizeof longname);
	assert_null(files_name_problem(longname, 255));
	assert_non_null(files_name_problem(longname, 256));
	/* over max_file: TOO_BIG, and nothing stays in the store */
	uint8_t *b = random_bytes(1000);
	memset(&W.xs[2], 0, sizeof W.xs[2]);
	assert_int_equal(files_upload_begin(W.f, W.now, 2, "big", 3), 0);
	size_t fed = 0;
	while (!W.xs[2].done && fed < 64 * 1000 + 5000) {
		if (!files_upload_wants(W.f, 2)) {
			if (!W.nq)
				break;
			answer_one();
			continue;
		}
		files_upload_data(W.f, W.now, 2, b, 1000);
		fed += 1000;
	}
	settle();
	assert_true(W.xs[2].done);
	assert_int_equal(W.xs[2].status, FILES_TOO_BIG);
	check_store(NULL, NULL, NULL, 0, 64);
	assert_int_equal(live_count(), 0);
	free(b);
	world_free();
}

/* Answers everything queued and runs both cores' timers due by t; the clock ends at t. */
static void run_until(uint64_t t)
{
	for (int guard = 0; guard < 1000000; guard++) {
		if (W.nq) {
			answer_one();
			continue;
		}
		uint64_t at = files_wake_at(W.f), at2 = files_wake_at(W.f2);
		at = at2 < at ? at2 : at;
		if (at > t)
			break;
		W.now = at > W.now ? at : W.now;
		files_tick(W.f, W.now);
		files_tick(W.f2, W.now);
	}
	if (W.now < t)
		W.now = t;
}

#define GC_DELAY_MS (60 * 60 * 1000u) /* files_config's default gc_delay_ms */

/* A delete's collection on one node races an upload on another that shares a chunk (the
 * same bytes): the upload has stored the chunk but not yet written its manifest when the
 * delete unlists the old file. Whatever the order (the chunk put before or after the
 * delete, the upload ending at once or long after), an upload that says OK downloads
 * intact through the other node, and the store ends exact: the old file's own chunk
 * collected, the shared one kept. The one upload that cannot land (its chunk put before
 * the delete, itself still running when the collection ran) fails and leaves nothing:
 * never listed with a chunk missing. The uploading node's clock is right, ahead or behind
 * (by less than the tolerated gc_delay_ms / 4). Before the fix (an immediate collection,
 * tombstones stamped when written) the download of "new" failed with FILES_CORRUPT. */
static void test_collect_races_upload(void **state)
{
	(void)state;
	const uint32_t cs = 16;
	/* the upload ends: at once; before it must refresh; after (its chunks re-put); just
	 * before the collection runs (the refresh and the collection interleave); long after */
	const uint64_t waits[] = {0, GC_DELAY_MS / 8, GC_DELAY_MS / 2, GC_DELAY_MS - 3,
	                          2 * GC_DELAY_MS};
	/* the uploading node's clock: right, ahead, behind (less than gc_delay_ms / 4) */
	const int64_t skews[] = {0, GC_DELAY_MS / 8, -(int64_t)GC_DELAY_MS / 8};
	for (unsigned put_first = 0; put_first < 2; put_first++)
		for (unsigned wi = 0; wi < 5; wi++)
			for (uint64_t seed = 1; seed <= 3; seed++) {
				next_skew_ms = skews[seed - 1];
				world_init(cs, 2, 500 + seed * 10 + wi + 100 * put_first);
				next_skew_ms = 0;
				W.unsure_pct = seed == 3 ? 10 : 0;
				uint8_t *old = random_bytes(2 * cs), *nw = random_bytes(2 * cs + 5);
				memcpy(nw, old, cs); /* chunk 0 is the same bytes in both */
				upload(0, "old", old, 2 * cs);
				run_until(W.now + 1000);
				/* node B's upload; node A's delete of the old file */
				memset(&W.xs[2], 0, sizeof W.xs[2]);
				assert_int_equal(files_upload_begin(W.f2, W.now, 2, "new", 3), 0);
				memset(&W.xs[1], 0, sizeof W.xs[1]);
				if (put_first) { /* the shared chunk is stored before the delete */
					feed_core(W.f2, 2, nw, 2 * cs + 5, cs);
					run_until(W.now + 1000);
				}
				uint64_t t_del = W.now;
				assert_int_equal(files_delete(W.f, W.now, 1, "old", 3), 0);
				run_until(W.now + 1000);
				if (!put_first) {
					feed_core(W.f2, 2, nw, 2 * cs + 5, cs);
					run_until(W.now + 1000);
				}
				assert_true(W.xs[1].done);
				assert_int_equal(W.xs[1].status, FILES_OK);
				if (t_del + waits[wi] > W.now)
					run_until(t_del +
					          waits[wi]); /* waits count from the delete */
				feed_core(W.f2, 2, nw + cs, cs + 5, cs + 5);
				files_upload_end(W.f2, W.now, 2);
				settle();
				assert_true(W.xs[2].done);
				assert_int_equal(files_active(W.f), 0);
				assert_int_equal(files_active(W.f2), 0);
				/* its chunk put before the delete and collected before it ended:
				 * the refresh finds it gone and the upload fails; everything else
				 * lands */
				bool late = waits[wi] >= GC_DELAY_MS;
				/* with clocks apart, which of the put and the dated delete is newer
				 * depends on them: either outcome, both checked below */
				bool lost = W.xs[2].status == FILES_UNAVAIL;
				if (!W.skew_ms)
					assert_int_equal(lost, put_first && late);
				else if (!late || (!put_first && W.skew_ms > 0))
					assert_false(lost);
				assert_true(lost || W.xs[2].status == FILES_OK);
				uint64_t refreshed = files_get_stats(W.f2)->chunks_refreshed;
				if (!lost && waits[wi] >= GC_DELAY_MS / 2)
					assert_true(refreshed >=
					            1); /* the shared chunk, put again */
				else
					assert_int_equal(refreshed, 0);
				if (W.xs[2].status == FILES_OK) {
					download_check(3, "new", nw, 2 * cs + 5, 0, 2 * cs + 5);
					const char *n[] = {"new"};
					uint8_t *by[] = {nw};
					size_t sz[] = {2 * cs + 5};
					check_store(n, by, sz, 1, cs);
					list_check(4, n, 1);
				} else {
					check_store(NULL, NULL, NULL, 0, cs);
					list_check(4, NULL, 0);
				}
				free(old);
				free(nw);
				world_free();
			}
}

static void test_manifest_codec(void **state)
{
	(void)state;
	uint8_t hashes[3 * FILES_HASH];
	for (size_t i = 0; i < sizeof hashes; i++)
		hashes[i] = (uint8_t)i;
	files_manifest m = {.nlen = 5,
	                    .size = 2 * 100 + 1,
	                    .chunk_size = 100,
	                    .uploaded_ms = 42,
	                    .nchunks = 3,
	                    .chunks = hashes};
	memcpy(m.name, "hello", 6);
	memset(m.sha, 7, FILES_HASH);
	size_t n = files_manifest_size(&m);
	uint8_t *buf = malloc(n);
	files_manifest_encode(&m, buf);
	files_manifest d;
	assert_int_equal(files_manifest_decode(buf, n, &d), 0);
	assert_string_equal(d.name, "hello");
	assert_int_equal(d.size, 201);
	assert_int_equal(d.chunk_size, 100);
	assert_int_equal(d.uploaded_ms, 42);
	assert_int_equal(d.nchunks, 3);
	assert_memory_equal(d.chunks, hashes, sizeof hashes);
	assert_memory_equal(d.sha, m.sha, FILES_HASH);
	for (size_t cut = 0; cut < n; cut++) /* every truncation is refused */
		assert_int_equal(files_manifest_decode(buf, cut, &d), RN_EPROTO);
	buf[6 + 5 + 11] ^= 1; /* chunk size 100 -> 101: the chunk count no longer fits */
	assert_int_equal(files_manifest_decode(buf, n, &d), RN_EPROTO);
	free(buf);
	/* the record check the kv layer can make */
	uint8_t key[FILES_KEY_MAX], h[FILES_HASH];
	files_sha256((const uint8_t *)"abc", 3, h);
	size_t kl = files_chunk_key(h, key);
	assert_true(files_record_valid(key, kl, (const uint8_t *)"abc", 3));
	assert_false(files_record_valid(key, kl, (const uint8_t *)"abd", 3));
	assert_true(files_record_valid((const uint8_t *)"user", 4, (const uint8_t *)"x", 1));
	char hex[2 * FILES_HASH + 1];
	files_hex(h, FILES_HASH, hex);
	assert_string_equal(hex,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_manifest_codec),         cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_dedup_delete_overwrite), cmocka_unit_test(test_abort_collects),
	    cmocka_unit_test(test_corrupt_chunks),         cmocka_unit_test(test_limits_and_names),
	    cmocka_unit_test(test_index_two_nodes),        cmocka_unit_test(test_local_copies),
	    cmocka_unit_test(test_collect_races_upload),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
