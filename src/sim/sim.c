/* sim.c — see sim.h.
 *
 * Node i has ring_addr i. Every message a core emits becomes one DELIVER event after a
 * random latency; a message to a dead node comes back to its sender as an UNREACHABLE
 * notice after the connect timeout, which is the driver contract of ring.h. Each node has
 * at most one live TICK event (tick_at[i]); earlier wake-ups push a new one and the stale
 * one is skipped when it pops. */
#define _GNU_SOURCE /* mremap */
#include "sim.h"

#include <sys/mman.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "../lib/rng.h"
#include "../lib/touch.h"

enum { EV_DELIVER, EV_UNREACH, EV_TICK, EV_ISSUE, EV_JOIN, EV_CHECK, EV_CHURN_JOIN, EV_CHURN_FAIL };

#define CONNECT_TIMEOUT_MS 1000
#define CHECK_EVERY_MS     1000
#define JOIN_GROWTH        0.05  /* joins per second per node already in the ring */
#define LOOKUP_TIMEOUT_MS  30000 /* a lookup unanswered this long has failed, as for a client */

typedef struct {
	uint64_t t;
	uint64_t seq;
	uint32_t kind;
	uint32_t ref;
} ev;

/* ---- event queue ----
 * A timing wheel of 1 ms buckets covers the next WHEEL ms: nearly every event (message
 * latencies, timeouts, the next lookup) lands there, and a bucket is a FIFO, so pushes
 * and pops are O(1) and walk memory in order. Events further out wait in a binary heap
 * and move into the wheel when their time comes within reach, before anything else can
 * be pushed for that millisecond, so the order stays (time, push order): deterministic. */

#define WHEEL 4096u

typedef struct {
	uint32_t kind, ref;
} wev;

/* a message in flight, kept inline in its bucket so the wheel is read in order */
typedef struct {
	uint32_t kind, sender;
	ring_msg m;
} mev;

typedef struct {
	wev *v; /* timers and other small events */
	mev *m; /* messages, drained before the small events of the same millisecond */
	uint32_t n, cap, head;
	uint32_t mn, mcap, mhead;
} wbucket;

/* what pop hands out */
typedef struct {
	uint64_t t;
	uint32_t kind, ref;
	mev msg; /* for EV_DELIVER / EV_UNREACH */
} popped;

typedef struct {
	ring_msg m;
	uint32_t sender;
	uint32_t next_free;
} slot;

typedef struct {
	const sim_params *p;
	sim_result *r;
	ring_config cfg;
	rn_rng rng;
	uint64_t lat_span, lat_limit; /* message latencies: min + below(lat_span) */
	uint64_t now, seq;
	/* events */
	wbucket *wheel;
	/* drained message arrays, handed to the buckets being filled: only the next few
	 * tens of milliseconds hold messages, so a few arrays circulate instead of 4096
	 * growing to their peak */
	struct {
		mev *m;
		uint32_t cap;
	} spare[64];
	uint32_t nspare;
	uint64_t wtime; /* the bucket being drained */
	size_t wcount;
	ev *heap; /* events WHEEL ms or more ahead */
	size_t nheap, capheap;
	/* messages in flight */
	slot *slots;
	uint32_t nslots, capslots, free_slot;
	/* nodes */
	uint32_t n, cap;
	char *arena; /* node i lives at arena + i * stride */
	size_t stride;
	uint8_t *alive;
	uint32_t ndead; /* alive[] is all ones while this is 0: skip reading it */
	uint64_t *tick_at;
	uint32_t *issued;
	bool maintain;
	/* oracle: live nodes sorted by id */
	ring_peer *live;
	uint32_t nlive;
	/* rank[a]: where node a sits in live[], while rank_ok (live[] unchanged since it was
	 * computed). Checking a lookup's answer then reads two neighbours of live[] that can
	 * be prefetched, instead of searching live[] for the key. */
	uint32_t *rank;
	bool rank_ok;
	/* joined nodes (bootstrap candidates) */
	uint32_t *joined;
	uint32_t njoined;
	/* lookups */
	bool lookups_on;
	uint64_t lookups_done, next_req; /* answered, issued (by this lane) */
	uint64_t req_space;              /* req = node * requests + k is below this */
	uint64_t lookups_start, last_issue;
	uint32_t issuers; /* nodes that still have lookups to issue */
	uint64_t *hops_hist;
	uint32_t hist_len;
	double latency_sum;
	uint64_t hops_sum;
	bool churn_on;
	ring_out out;
} sim;

/* Where key should sit in live[] if ids were spread evenly (they are uniform). */
static inline uint32_t live_guess(const sim *s, const rn_id *key)
{
	double frac = (double)rn_id_top64(key) / 18446744073709551616.0;
	uint32_t g = (uint32_t)(frac * s->nlive);
	return g >= s->nlive ? (s->nlive ? s->nlive - 1 : 0) : g;
}

static inline ring_node *NODE(const sim *s, uint32_t i)
{
	return (ring_node *)(s->arena + (size_t)i * s->stride);
}

/* ---- heap for far events ---- */

static bool ev_less(const ev *a, const ev *b)
{
	return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static int heap_push(sim *s, uint64_t t, uint32_t kind, uint32_t ref)
{
	if (s->nheap == s->capheap) {
		size_t cap = s->capheap ? s->capheap * 2 : 1024;
		ev *h = realloc(s->heap, cap * sizeof *h);
		if (!h)
			return RN_ENOMEM;
		s->heap = h;
		s->capheap = cap;
	}
	ev e = {t, s->seq++, kind, ref};
	size_t i = s->nheap++;
	while (i) {
		size_t up = (i - 1) / 2;
		if (!ev_less(&e, &s->heap[up]))
			break;
		s->heap[i] = s->heap[up];
		i = up;
	}
	s->heap[i] = e;
	return 0;
}

static ev heap_pop(sim *s)
{
	ev top = s->heap[0];
	ev last = s->heap[--s->nheap];
	size_t i = 0, n = s->nheap;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && ev_less(&s->heap[c + 1], &s->heap[c]))
			c++;
		if (!ev_less(&s->heap[c], &last))
			break;
		s->heap[i] = s->heap[c];
		i = c;
	}
	if (n)
		s->heap[i] = last;
	return top;
}

static int bucket_add(sim *s, uint64_t t, uint32_t kind, uint32_t ref)
{
	wbucket *b = &s->wheel[t & (WHEEL - 1)];
	if (b->n == b->cap) {
		uint32_t cap = b->cap ? b->cap * 2 : 64;
		wev *v = realloc(b->v, cap * sizeof *v);
		if (!v)
			return RN_ENOMEM;
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = (wev){kind, ref};
	s->wcount++;
	return 0;
}

#ifndef WRITE_AHEAD
#define WRITE_AHEAD 4
#endif

static mev *bucket_add_msg(sim *s, uint64_t t)
{
	wbucket *b = &s->wheel[t & (WHEEL - 1)];
	if (!b->mcap && s->nspare) {
		s->nspare--;
		b->m = s->spare[s->nspare].m;
		b->mcap = s->spare[s->nspare].cap;
	}
	if (b->mn == b->mcap) {
		uint32_t cap = b->mcap ? b->mcap * 2 : 64;
		mev *v = realloc(b->m, cap * sizeof *v);
		if (!v)
			return NULL;
		b->m = v;
		b->mcap = cap;
	}
	s->wcount++;
	/* each bucket fills in order but the buckets in turn at random, which the hardware
	 * does not follow: ask for the lines a few messages on */
	if (b->mn + WRITE_AHEAD < b->mcap) {
		const char *w = (const char *)&b->m[b->mn + WRITE_AHEAD];
		__builtin_prefetch(w, 1);
		__builtin_prefetch(w + sizeof(mev) - 1, 1);
	}
	return &b->m[b->mn++];
}

static int push(sim *s, uint64_t t, uint32_t kind, uint32_t ref)
{
	if (t < s->wtime)
		t = s->wtime;
	if (t - s->wtime < WHEEL)
		return bucket_add(s, t, kind, ref);
	return heap_push(s, t, kind, ref);
}

static uint32_t slot_alloc(sim *s)
{
	if (s->free_slot != UINT32_MAX) {
		uint32_t id = s->free_slot;
		s->free_slot = s->slots[id].next_free;
		return id;
	}
	if (s->nslots == s->capslots) {
		uint32_t cap = s->capslots ? s->capslots * 2 : 64;
		slot *q = realloc(s->slots, (size_t)cap * sizeof *q);
		if (!q)
			return UINT32_MAX;
		s->slots = q;
		s->capslots = cap;
	}
	return s->nslots++;
}

/* A message event: inline in the wheel, or parked in a slot while it is far ahead.
 * The message's peer list, if any, is owned by the event from here on. */
static int push_msg(sim *s, uint64_t t, uint32_t kind, uint32_t sender, const ring_msg *m)
{
	if (t < s->wtime)
		t = s->wtime;
	if (t - s->wtime < WHEEL) {
		mev *e = bucket_add_msg(s, t);
		if (!e)
			return RN_ENOMEM;
		e->kind = kind;
		e->sender = sender;
		e->m = *m;
		return 0;
	}
	uint32_t id = slot_alloc(s);
	if (id == UINT32_MAX)
		return RN_ENOMEM;
	s->slots[id].m = *m;
	s->slots[id].sender = sender;
	return heap_push(s, t, kind, id);
}

static size_t pending(const sim *s)
{
	return s->wcount + s->nheap;
}

static bool is_msg(uint32_t kind)
{
	return kind == EV_DELIVER || kind == EV_UNREACH;
}

/* alive[i], without reading alive[] while nobody has died (a cache miss per message in a
 * large ring) */
static inline bool node_alive(const sim *s, uint32_t i)
{
	return !s->ndead || s->alive[i];
}

#ifndef PF_BATCH
#define PF_BATCH 16
#endif

/* Working ahead. In a large ring every message lands on a cold node. Prefetch
 * instructions one message ahead did not help here: on the VM this was measured on
 * most of them were dropped, and the handler's loads stalled as if there had been none.
 * So pop works ahead in batches of PF_BATCH messages, with plain loads (rn_touch), which
 * cannot be dropped and, a dozen close together, miss in parallel: the bucket's own lines
 * three batches ahead, the first line each message's handler reads two batches ahead
 * (its address is in the message), and one batch ahead a prefetch of the lines that
 * first line points to. Measured on 1M nodes: half the time of one prefetch per message
 * (docs/benchmarks.md). */

/* An answer to a lookup that lookup_done will check through rank[]. */
static inline bool found_checked(const sim *s, const mev *f)
{
	return s->rank_ok && f->kind == EV_DELIVER && f->m.type == RING_MSG_FOUND &&
	       f->m.result.addr < s->n;
}

/* stage 1: the node a message is handled at, or the oracle's rank entry for an answer */
static inline void pf_first(const sim *s, const mev *f)
{
	if (found_checked(s, f)) {
		rn_touch(&s->rank[f->m.result.addr]);
		return;
	}
	uint32_t to = f->kind == EV_DELIVER ? f->m.to : f->sender;
	if (to < s->n) {
		const char *nd = (const char *)NODE(s, to);
		rn_touch(nd);
		rn_touch(nd + 64);
	}
}

/* stage 2: what the handler reads after that */
static inline void pf_second(const sim *s, const mev *f)
{
	if (found_checked(s, f)) {
		/* the answer's entry in live[] and the one before it */
		uint32_t k = s->rank[f->m.result.addr];
		__builtin_prefetch(&s->live[k ? k - 1 : 0]);
		__builtin_prefetch((const char *)&s->live[k + 1] - 1);
		return;
	}
	uint32_t to = f->kind == EV_DELIVER ? f->m.to : f->sender;
	if (f->m.type == RING_MSG_FOUND && f->kind == EV_DELIVER)
		__builtin_prefetch(&s->live[live_guess(s, &f->m.key)]);
	else if (to < s->n)
		ring_prefetch(NODE(s, to), f->m.type == RING_MSG_FIND_SUCC && f->kind == EV_DELIVER
		                               ? &f->m.key
		                               : NULL);
}

static inline uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* Called when the drain of b's messages reaches h, a multiple of PF_BATCH. */
static void pf_messages(const sim *s, const wbucket *b, uint32_t h)
{
	const uint32_t B = PF_BATCH, n = b->mn;
	/* at the start of a bucket nothing is under way yet: start the first batches too */
	uint32_t first = h ? h + 2 * B : 0, second = h ? h + B : 0;
	uint32_t lines = h ? h + 3 * B : 0;
	const char *lo = (const char *)&b->m[min_u32(lines, n)];
	const char *hi = (const char *)&b->m[min_u32(h + 4 * B, n)];
	for (; lo < hi; lo += 64)
		rn_touch(lo);
	for (uint32_t k = first; k < min_u32(h + 3 * B, n); k++)
		pf_first(s, &b->m[k]);
	for (uint32_t k = second; k < min_u32(h + 2 * B, n); k++)
		pf_second(s, &b->m[k]);
}

/* The same for the other events: a lookup to issue lands on a cold node too. */
static void pf_events(const sim *s, const wbucket *b, uint32_t h)
{
	const uint32_t B = PF_BATCH;
	for (uint32_t k = h ? h + B : 0; k < min_u32(h + 2 * B, b->n); k++)
		if (b->v[k].kind == EV_ISSUE && b->v[k].ref < s->n) {
			const char *nd = (const char *)NODE(s, b->v[k].ref);
			rn_touch(nd);
			rn_touch(nd + 64);
		}
}

/* The next event; false when none is left. Messages come with a copy of themselves. */
static bool pop(sim *s, popped *out)
{
	for (;;) {
		wbucket *b = &s->wheel[s->wtime & (WHEEL - 1)];
		if (b->mhead < b->mn) {
			if (b->mhead % PF_BATCH == 0)
				pf_messages(s, b, b->mhead);
			const mev *e = &b->m[b->mhead++];
			s->wcount--;
			out->t = s->wtime;
			out->kind = e->kind;
			out->ref = 0;
			out->msg = *e;
			return true;
		}
		if (b->head < b->n) {
			if (b->head % PF_BATCH == 0)
				pf_events(s, b, b->head);
			wev w = b->v[b->head++];
			s->wcount--;
			out->t = s->wtime;
			out->kind = w.kind;
			out->ref = w.ref;
			return true;
		}
		b->n = b->head = 0;
		b->mn = b->mhead = 0;
		if (b->mcap && s->nspare < sizeof s->spare / sizeof *s->spare) {
			s->spare[s->nspare].m = b->m;
			s->spare[s->nspare++].cap = b->mcap;
			b->m = NULL;
			b->mcap = 0;
		}
		if (s->wcount)
			s->wtime++;
		else if (s->nheap)
			s->wtime = s->heap[0].t;
		else
			return false;
		while (s->nheap && s->heap[0].t < s->wtime + WHEEL) {
			ev e = heap_pop(s);
			if (is_msg(e.kind)) {
				slot *sl = &s->slots[e.ref];
				mev *m = bucket_add_msg(s, e.t);
				if (!m)
					return false;
				*m = (mev){e.kind, sl->sender, sl->m};
				sl->next_free = s->free_slot;
				s->free_slot = e.ref;
			} else if (bucket_add(s, e.t, e.kind, e.ref) < 0) {
				return false;
			}
		}
	}
}

/* Put back the event pop just returned (it was past a deadline). */
static void unpop(sim *s, const popped *e)
{
	wbucket *b = &s->wheel[s->wtime & (WHEEL - 1)];
	if (is_msg(e->kind))
		b->mhead--;
	else
		b->head--;
	s->wcount++;
}

/* ---- oracle ---- */

static int peer_cmp(const void *a, const void *b)
{
	return rn_id_cmp(&((const ring_peer *)a)->id, &((const ring_peer *)b)->id);
}

/* index in live[] of the first id >= key (wrapping to 0). Ids are uniformly random, so
 * the key's share of the id space is a good guess at its position; gallop from there. */
static uint32_t live_lower(const sim *s, const rn_id *key)
{
	uint32_t n = s->nlive;
	if (n == 0)
		return 0;
	uint32_t g = live_guess(s, key), lo, hi;
	if (rn_id_cmp(&s->live[g].id, key) < 0) {
		uint32_t a = g, b = g + 1, step = 1;
		while (b < n && rn_id_cmp(&s->live[b].id, key) < 0) {
			a = b;
			step *= 2;
			b = a + step > n ? n : a + step;
		}
		lo = a + 1;
		hi = b;
	} else {
		uint32_t b = g, step = 1;
		lo = 0;
		while (b > 0) {
			uint32_t a = b > step ? b - step : 0;
			if (rn_id_cmp(&s->live[a].id, key) < 0) {
				lo = a + 1;
				break;
			}
			b = a;
			step *= 2;
		}
		hi = b;
	}
	/* live[lo-1] < key <= live[hi] (hi may be n): binary search in between */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (rn_id_cmp(&s->live[mid].id, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == n ? 0 : lo;
}

static const ring_peer *true_succ(const sim *s, const rn_id *key)
{
	return &s->live[live_lower(s, key)];
}

static void live_insert(sim *s, const ring_peer *p)
{
	uint32_t i = s->nlive ? live_lower(s, &p->id) : 0;
	if (s->nlive && i == 0 && rn_id_cmp(&s->live[0].id, &p->id) < 0)
		i = s->nlive;
	memmove(&s->live[i + 1], &s->live[i], (s->nlive - i) * sizeof *s->live);
	s->live[i] = *p;
	s->nlive++;
	s->rank_ok = false;
}

static void live_remove(sim *s, const ring_peer *p)
{
	uint32_t i = live_lower(s, &p->id);
	if (s->nlive && s->live[i].addr == p->addr) {
		memmove(&s->live[i], &s->live[i + 1], (s->nlive - i - 1) * sizeof *s->live);
		s->nlive--;
		s->rank_ok = false;
	}
}

/* ---- nodes ---- */

static bool id_taken(const sim *s, const rn_id *id)
{
	if (!s->nlive)
		return false;
	return rn_id_eq(&s->live[live_lower(s, id)].id, id);
}

static int grow_mapping(void **p, size_t old, size_t len)
{
	void *q = *p ? mremap(*p, old, len, MREMAP_MAYMOVE)
	             : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (q == MAP_FAILED)
		return RN_ENOMEM;
	madvise(q, len, MADV_HUGEPAGE);
	*p = q;
	return 0;
}

static int grow_nodes(sim *s, uint32_t want)
{
	if (want <= s->cap)
		return 0;
	uint32_t cap = s->cap ? s->cap : 16;
	while (cap < want)
		cap *= 2;
#define GROW(f)                                                                                    \
	do {                                                                                       \
		void *q = realloc(s->f, (size_t)cap * sizeof *s->f);                               \
		if (!q)                                                                            \
			return RN_ENOMEM;                                                          \
		s->f = q;                                                                          \
	} while (0)
	/* the nodes and the oracle are read at random on every hop: one mapping each, in
	 * huge pages, or each access would also miss the TLB */
	if (grow_mapping((void **)&s->arena, (size_t)s->cap * s->stride, (size_t)cap * s->stride) <
	        0 ||
	    grow_mapping((void **)&s->live, (size_t)s->cap * sizeof *s->live,
	                 (size_t)cap * sizeof *s->live) < 0)
		return RN_ENOMEM;
	GROW(alive);
	GROW(tick_at);
	GROW(issued);
	GROW(joined);
#undef GROW
	s->cap = cap;
	return 0;
}

/* A new node with a fresh id not used by any live node (ids are positions on the ring). */
static int add_node(sim *s, const rn_id *fixed)
{
	int rc = grow_nodes(s, s->n + 1);
	if (rc < 0)
		return rc;
	rn_id id;
	if (fixed)
		id = *fixed;
	else
		do
			rn_id_random(&id, &s->rng, s->cfg.bits);
		while (id_taken(s, &id));
	uint32_t i = s->n;
	if (!ring_node_init(NODE(s, i), &s->cfg, &id, i))
		return RN_ENOMEM;
	s->alive[i] = 1;
	s->tick_at[i] = UINT64_MAX;
	s->issued[i] = 0;
	s->n++;
	ring_peer p = {id, i};
	live_insert(s, &p);
	return 0;
}

/* Distinct random ids for n nodes: on a small ring, a random subset of all positions. */
static int make_ids(sim *s, uint32_t n, rn_id **out)
{
	rn_id *ids = malloc((size_t)n * sizeof *ids);
	if (!ids)
		return RN_ENOMEM;
	unsigned m = s->cfg.bits;
	if (m <= 24) {
		uint32_t space = 1u << m;
		uint32_t *pos = malloc((size_t)space * sizeof *pos);
		if (!pos) {
			free(ids);
			return RN_ENOMEM;
		}
		for (uint32_t i = 0; i < space; i++)
			pos[i] = i;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t j = i + (uint32_t)rn_rng_below(&s->rng, space - i);
			uint32_t t = pos[i];
			pos[i] = pos[j];
			pos[j] = t;
			rn_id_from_u64(&ids[i], pos[i], m);
		}
		free(pos);
	} else {
		/* 2^25 positions or more: draw, sort, redraw the few duplicates */
		for (uint32_t i = 0; i < n; i++)
			rn_id_random(&ids[i], &s->rng, m);
		for (;;) {
			ring_peer *tmp = malloc((size_t)n * sizeof *tmp);
			if (!tmp) {
				free(ids);
				return RN_ENOMEM;
			}
			for (uint32_t i = 0; i < n; i++) {
				tmp[i].id = ids[i];
				tmp[i].addr = i;
			}
			if (ring_peers_sort(tmp, n) < 0) {
				free(tmp);
				free(ids);
				return RN_ENOMEM;
			}
			uint32_t dups = 0;
			for (uint32_t i = 1; i < n; i++)
				if (rn_id_eq(&tmp[i].id, &tmp[i - 1].id)) {
					rn_id_random(&ids[tmp[i].addr], &s->rng, m);
					dups++;
				}
			free(tmp);
			if (!dups)
				break;
		}
	}
	*out = ids;
	return 0;
}

static void kill_node(sim *s, uint32_t i)
{
	if (!s->alive[i])
		return;
	s->alive[i] = 0;
	s->ndead++;
	ring_peer p = {*ring_self_id(NODE(s, i)), i};
	live_remove(s, &p);
	s->r->failures++;
}

/* ---- driving the cores ---- */

static void lookup_done(sim *s, uint32_t origin, const ring_event *e);

static int drain(sim *s, uint32_t from)
{
	ring_out *o = &s->out;
	for (size_t k = 0; k < o->nmsgs; k++) {
		ring_msg *m = &o->msgs[k]; /* the output is reset before the next step */
		if (m->npeers) {
			ring_peer *copy = malloc(m->npeers * sizeof *copy);
			if (!copy)
				return RN_ENOMEM;
			memcpy(copy, m->peers, m->npeers * sizeof *copy);
			m->peers = copy;
		} else {
			m->peers = NULL;
		}
		s->r->messages++;
		uint64_t t;
		uint32_t kind;
		if (m->to < s->n && node_alive(s, m->to)) {
			t = s->now + s->p->latency_min_ms +
			    rn_rng_below_lim(&s->rng, s->lat_span, s->lat_limit);
			kind = EV_DELIVER;
		} else {
			t = s->now + CONNECT_TIMEOUT_MS;
			kind = EV_UNREACH;
		}
		int rc = push_msg(s, t, kind, from, m);
		if (rc < 0) {
			free((void *)m->peers);
			return rc;
		}
	}
	for (size_t k = 0; k < o->nevents; k++) {
		const ring_event *e = &o->events[k];
		if (e->type == RING_EV_LOOKUP_DONE)
			lookup_done(s, from, e);
		else if (e->type == RING_EV_JOINED)
			s->joined[s->njoined++] = from;
	}
	if (s->maintain && o->wake_at < s->tick_at[from]) {
		s->tick_at[from] = o->wake_at;
		int rc = push(s, o->wake_at, EV_TICK, from);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void lookup_done(sim *s, uint32_t origin, const ring_event *e)
{
	(void)origin;
	uint32_t idx = (uint32_t)e->req, issued = (uint32_t)(e->req >> 32);
	if (!s->lookups_on || idx >= s->req_space)
		return;
	s->lookups_done++;
	bool ok;
	if (s->rank_ok) {
		/* the answer is right when it is live and the key falls between it and the live
		 * node before it */
		uint32_t a = e->result.addr;
		ok = e->ok && a < s->n && node_alive(s, a);
		if (ok && s->nlive > 1) {
			uint32_t k = s->rank[a];
			const ring_peer *prev = &s->live[k ? k - 1 : s->nlive - 1];
			ok = rn_id_in_oc(&e->key, &prev->id, &s->live[k].id);
		}
	} else {
		const ring_peer *want = true_succ(s, &e->key);
		ok = e->ok && e->result.addr == want->addr && s->alive[want->addr];
	}
	if (!ok)
		s->r->failed_lookups++;
	uint32_t h = e->hops < s->hist_len ? e->hops : s->hist_len - 1;
	s->hops_hist[h]++;
	s->hops_sum += e->hops;
	s->latency_sum += (double)(s->now - s->lookups_start - issued);
}

/* ---- experiments ---- */

typedef struct {
	sim *s;
	uint32_t from, to; /* positions in live[] */
} fill_job;

static void *fill_range(void *arg)
{
	fill_job *j = arg;
	sim *s = j->s;
	unsigned m = s->cfg.bits, r = s->cfg.successors;
	ring_peer succ[RING_MAX_SUCC];
	for (uint32_t k = j->from; k < j->to; k++) {
		ring_node *nd = NODE(s, s->live[k].addr);
		size_t c = 0;
		for (unsigned i = 1; i <= r && i < s->nlive; i++)
			succ[c++] = s->live[(k + i) % s->nlive];
		ring_set_successors(nd, succ, c);
		if (s->nlive > 1)
			ring_set_predecessor(nd, &s->live[(k + s->nlive - 1) % s->nlive]);
		for (unsigned i = 0; i < m;) {
			rn_id start;
			ring_finger_start(nd, i, &start);
			const ring_peer *f = true_succ(s, &start);
			unsigned e = ring_finger_span(nd, i, &f->id);
			ring_set_fingers(nd, i, e, f);
			i = e;
		}
	}
	return NULL;
}

typedef struct {
	sim *s;
	const rn_id *ids;
	uint32_t from, to;
	int rc;
} init_job;

static void *init_range(void *arg)
{
	init_job *j = arg;
	sim *s = j->s;
	for (uint32_t i = j->from; i < j->to; i++) {
		/* ids are distinct by construction: skip add_node's search */
		if (!ring_node_init(NODE(s, i), &s->cfg, &j->ids[i], i))
			j->rc = RN_ENOMEM;
		s->alive[i] = 1;
		s->tick_at[i] = UINT64_MAX;
		s->issued[i] = 0;
		s->live[i].id = j->ids[i];
		s->live[i].addr = i;
		s->joined[i] = i;
	}
	return NULL;
}

static int build_static(sim *s)
{
	rn_id *ids;
	int rc = make_ids(s, s->p->nodes, &ids);
	if (rc < 0)
		return rc;
	rc = grow_nodes(s, s->p->nodes);
	if (rc == 0) {
		/* two threads: most of this is the kernel handing out the arena's pages */
		init_job jobs[2] = {{s, ids, 0, s->p->nodes / 2, 0},
		                    {s, ids, s->p->nodes / 2, s->p->nodes, 0}};
		pthread_t tid;
		bool threaded = pthread_create(&tid, NULL, init_range, &jobs[1]) == 0;
		init_range(&jobs[0]);
		if (threaded)
			pthread_join(tid, NULL);
		else
			init_range(&jobs[1]);
		rc = jobs[0].rc < 0 ? jobs[0].rc : jobs[1].rc;
		s->n = s->njoined = s->p->nodes;
	}
	free(ids);
	if (rc < 0)
		return rc;
	s->nlive = s->n;
	if ((rc = ring_peers_sort(s->live, s->nlive)) < 0)
		return rc;
	/* every node's tables come from the oracle alone: fill halves of the ring on two
	 * threads */
	fill_job jobs[2] = {{s, 0, s->nlive / 2}, {s, s->nlive / 2, s->nlive}};
	pthread_t tid;
	bool threaded = pthread_create(&tid, NULL, fill_range, &jobs[1]) == 0;
	fill_range(&jobs[0]);
	if (threaded)
		pthread_join(tid, NULL);
	else
		fill_range(&jobs[1]);
	return 0;
}

/* Is every live node's successor, predecessor and finger table what the oracle says? */
static bool ring_correct(sim *s)
{
	for (uint32_t k = 0; k < s->nlive; k++) {
		uint32_t i = s->live[k].addr;
		ring_node *nd = NODE(s, i);
		if (!ring_joined(nd))
			return false;
		const ring_peer *ts = &s->live[(k + 1) % s->nlive];
		const ring_peer *tp = &s->live[(k + s->nlive - 1) % s->nlive];
		ring_peer succ = ring_successor(nd), pred = ring_predecessor(nd);
		if (s->nlive > 1 && (succ.addr != ts->addr || pred.addr != tp->addr))
			return false;
	}
	for (uint32_t k = 0; k < s->nlive; k++) {
		ring_node *nd = NODE(s, s->live[k].addr);
		for (unsigned i = 0; i < s->cfg.bits;) {
			rn_id start;
			ring_finger_start(nd, i, &start);
			const ring_peer *f = true_succ(s, &start);
			unsigned j = ring_finger_span(nd, i, &f->id);
			/* fingers [i, j) must all be f: check both ends of the span */
			ring_peer a = ring_finger(nd, i), b = ring_finger(nd, j - 1);
			bool self = f->addr == (uint32_t)s->live[k].addr;
			if (!self && (a.addr != f->addr || b.addr != f->addr))
				return false;
			i = j;
		}
	}
	return true;
}

static int step_node(sim *s, uint32_t i, int (*fn)(sim *, uint32_t, void *), void *arg)
{
	ring_out_reset(&s->out);
	int rc = fn(s, i, arg);
	if (rc < 0)
		return rc;
	if (s->out.dropped)
		fprintf(stderr, "sim: node %u: core output overflow\n", i);
	return drain(s, i);
}

static int do_msg(sim *s, uint32_t i, void *arg)
{
	ring_on_msg(NODE(s, i), s->now, arg, &s->out);
	return 0;
}
static int do_unreach(sim *s, uint32_t i, void *arg)
{
	ring_on_unreachable(NODE(s, i), s->now, arg, &s->out);
	return 0;
}
static int do_tick(sim *s, uint32_t i, void *arg)
{
	(void)arg;
	ring_tick(NODE(s, i), s->now, &s->out);
	return 0;
}
static int do_create(sim *s, uint32_t i, void *arg)
{
	(void)arg;
	ring_create(NODE(s, i), s->now, &s->out);
	s->joined[s->njoined++] = i;
	return 0;
}
static int do_join(sim *s, uint32_t i, void *arg)
{
	ring_join(NODE(s, i), s->now, *(ring_addr *)arg, &s->out);
	return 0;
}
static int do_lookup(sim *s, uint32_t i, void *arg)
{
	uint64_t req = *(uint64_t *)arg;
	rn_id key;
	rn_id_random(&key, &s->rng, s->cfg.bits);
	/* the issue time rides in the request id's top half, where lookup_done finds it */
	req |= (s->now - s->lookups_start) << 32;
	ring_lookup(NODE(s, i), s->now, &key, req, &s->out);
	return 0;
}

static uint32_t random_joined(sim *s)
{
	while (s->njoined) {
		uint32_t k = (uint32_t)rn_rng_below(&s->rng, s->njoined);
		uint32_t i = s->joined[k];
		if (s->alive[i])
			return i;
		s->joined[k] = s->joined[--s->njoined]; /* drop the dead */
	}
	return UINT32_MAX;
}

static int handle(sim *s, popped *e)
{
	switch (e->kind) {
	case EV_DELIVER: {
		ring_msg *m = &e->msg.m;
		int rc = 0;
		if (node_alive(s, m->to)) {
			rc = step_node(s, m->to, do_msg, m);
		} else if (s->alive[e->msg.sender]) {
			/* died while the message was on the wire: the sender learns it the hard way
			 */
			return push_msg(s, s->now + CONNECT_TIMEOUT_MS, EV_UNREACH, e->msg.sender,
			                m);
		}
		free((void *)m->peers);
		return rc;
	}
	case EV_UNREACH: {
		ring_msg *m = &e->msg.m;
		int rc = 0;
		s->r->timeouts++;
		if (s->alive[e->msg.sender])
			rc = step_node(s, e->msg.sender, do_unreach, m);
		free((void *)m->peers);
		return rc;
	}
	case EV_TICK:
		if (!s->alive[e->ref] || s->tick_at[e->ref] != e->t || !s->maintain)
			return 0;
		s->tick_at[e->ref] = UINT64_MAX;
		return step_node(s, e->ref, do_tick, NULL);
	case EV_ISSUE: {
		uint32_t i = e->ref;
		if (!s->alive[i]) {
			s->issuers--; /* died before asking everything it meant to */
			return 0;
		}
		uint64_t req = (uint64_t)i * s->p->requests + s->issued[i]++;
		s->next_req++;
		s->last_issue = s->now;
		int rc = step_node(s, i, do_lookup, &req);
		if (rc == 0 && s->issued[i] < s->p->requests)
			rc = push(s, s->now + 1000, EV_ISSUE, i);
		else
			s->issuers--;
		return rc;
	}
	case EV_JOIN: {
		uint32_t i = e->ref;
		if (!s->njoined)
			return step_node(s, i, do_create, NULL);
		ring_addr via = random_joined(s);
		if (via == UINT32_MAX)
			return step_node(s, i, do_create, NULL);
		return step_node(s, i, do_join, &via);
	}
	case EV_CHURN_JOIN: {
		int rc = add_node(s, NULL);
		if (rc < 0)
			return rc;
		s->r->joins++;
		ring_addr via = random_joined(s);
		if (via != UINT32_MAX)
			rc = step_node(s, s->n - 1, do_join, &via);
		if (rc == 0)
			rc = push(s,
			          s->now + (uint64_t)rn_rng_exp(&s->rng, 1000.0 / s->p->churn) + 1,
			          EV_CHURN_JOIN, 0);
		return rc;
	}
	case EV_CHURN_FAIL: {
		if (s->nlive > 1) {
			uint32_t k = (uint32_t)rn_rng_below(&s->rng, s->nlive);
			kill_node(s, s->live[k].addr);
		}
		return push(s, s->now + (uint64_t)rn_rng_exp(&s->rng, 1000.0 / s->p->churn) + 1,
		            EV_CHURN_FAIL, 0);
	}
	default:
		return 0;
	}
}

/* Run events until done() says stop, the heap runs dry, or time runs out. */
static int run_until(sim *s, bool (*stop)(sim *), uint64_t deadline)
{
	uint64_t next_check = s->now + CHECK_EVERY_MS;
	popped e;
	while (!stop(s) && pop(s, &e)) {
		if (e.t > deadline) {
			unpop(s, &e);
			return 0;
		}
		s->now = e.t;
		s->r->events++;
		int rc = handle(s, &e);
		if (rc < 0)
			return rc;
		if (s->now >= next_check) {
			next_check = s->now + CHECK_EVERY_MS;
			if (stop(s))
				break;
		}
	}
	return 0;
}

static bool never(sim *s)
{
	(void)s;
	return false;
}

static bool lookups_finished(sim *s)
{
	return s->issuers == 0 &&
	       (s->lookups_done >= s->next_req || s->now >= s->last_issue + LOOKUP_TIMEOUT_MS);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int build_join(sim *s)
{
	uint32_t n = s->p->nodes;
	rn_id *ids;
	int rc = make_ids(s, n, &ids);
	if (rc < 0)
		return rc;
	s->maintain = true;
	double t = 0;
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		rc = add_node(s, &ids[i]);
		if (rc == 0)
			rc = push(s, (uint64_t)t, EV_JOIN, i);
		/* a ring grows in proportion to its size: JOIN_GROWTH of it per second, at most
		 * --join-rate. Thousands of nodes joining a ring of a few at once would all
		 * land in the same gaps, and stabilize untangles such a pile one node per
		 * round: Chord assumes joins are spread out, and so does this schedule. */
		double rate = JOIN_GROWTH * (i + 1);
		if (rate > s->p->join_rate)
			rate = s->p->join_rate;
		t += rn_rng_exp(&s->rng, 1000.0 / rate);
	}
	free(ids);
	if (rc < 0)
		return rc;
	/* run until every node joined, then check the ring once per virtual second */
	uint64_t limit = s->p->max_virtual_ms;
	while (s->now < limit && pending(s)) {
		uint64_t until = s->now + CHECK_EVERY_MS;
		rc = run_until(s, never, until);
		if (rc < 0)
			return rc;
		s->now = until;
		if (s->njoined >= n && ring_correct(s)) {
			s->r->converged = true;
			s->r->converge_ms = s->now;
			return 0;
		}
	}
	return 0;
}

static void load_figures(sim *s)
{
	const sim_params *p = s->p;
	uint64_t nv = (uint64_t)p->nodes * p->vnodes;
	ring_peer *v = malloc(nv * sizeof *v);
	uint64_t *count = calloc(p->nodes, sizeof *count);
	if (!v || !count) {
		free(v);
		free(count);
		return;
	}
	rn_rng rng;
	rn_rng_seed(&rng, p->seed ^ 0x6b657973ull); /* its own stream: independent of the rest */
	for (uint64_t i = 0; i < nv; i++) {
		rn_id_random(&v[i].id, &rng, s->cfg.bits);
		v[i].addr = (uint32_t)(i / p->vnodes);
	}
	qsort(v, nv, sizeof *v, peer_cmp);
	for (uint64_t k = 0; k < p->keys; k++) {
		rn_id key;
		rn_id_random(&key, &rng, s->cfg.bits);
		uint64_t lo = 0, hi = nv;
		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;
			if (rn_id_cmp(&v[mid].id, &key) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		count[v[lo == nv ? 0 : lo].addr]++;
	}
	/* percentiles by counting sort over the key counts */
	uint64_t maxc = 0;
	for (uint32_t i = 0; i < p->nodes; i++)
		if (count[i] > maxc)
			maxc = count[i];
	uint64_t *hist = calloc(maxc + 1, sizeof *hist);
	if (hist) {
		for (uint32_t i = 0; i < p->nodes; i++)
			hist[count[i]]++;
		uint64_t p1 = (uint64_t)ceil(0.01 * p->nodes),
		         p99 = (uint64_t)ceil(0.99 * p->nodes);
		uint64_t acc = 0;
		bool got1 = false, got99 = false;
		for (uint64_t c = 0; c <= maxc; c++) {
			acc += hist[c];
			if (!got1 && acc >= p1) {
				s->r->keys_p1 = (double)c;
				got1 = true;
			}
			if (!got99 && acc >= p99) {
				s->r->keys_p99 = (double)c;
				got99 = true;
			}
		}
		free(hist);
	}
	s->r->keys_mean = (double)p->keys / p->nodes;
	s->r->keys_max = (double)maxc;
	free(v);
	free(count);
}

static int queue_init(sim *s)
{
	s->free_slot = UINT32_MAX;
	s->wheel = calloc(WHEEL, sizeof *s->wheel);
	return s->wheel ? 0 : RN_ENOMEM;
}

static void queue_free(sim *s)
{
	/* messages still in flight own their peer lists */
	for (size_t k = 0; k < s->nheap; k++)
		if (is_msg(s->heap[k].kind))
			free((void *)s->slots[s->heap[k].ref].m.peers);
	for (uint32_t i = 0; s->wheel && i < WHEEL; i++) {
		for (uint32_t k = s->wheel[i].mhead; k < s->wheel[i].mn; k++)
			free((void *)s->wheel[i].m[k].m.peers);
		free(s->wheel[i].v);
		free(s->wheel[i].m);
	}
	for (uint32_t i = 0; i < s->nspare; i++)
		free(s->spare[i].m);
	free(s->wheel);
	free(s->heap);
	free(s->slots);
	s->wheel = NULL;
	s->heap = NULL;
	s->slots = NULL;
}

/* Lookups run in SIM_LANES independent lanes when nothing can change a node while they
 * run (static ring, no failures, no churn): each lane has its own clock, queue, random
 * stream and counters and issues the lookups of the nodes i with i % SIM_LANES == lane.
 * Lanes only read the shared nodes, so they run on separate threads and the result
 * depends on the seed alone, never on how the threads were scheduled. */
#define SIM_LANES 2

static void *lane_main(void *arg)
{
	sim *s = arg;
	int rc = run_until(s, lookups_finished, s->now + s->p->max_virtual_ms);
	return (void *)(intptr_t)rc;
}

static void lane_merge(sim *into, const sim *l)
{
	into->r->events += l->r->events;
	into->r->messages += l->r->messages;
	into->r->timeouts += l->r->timeouts;
	into->r->failed_lookups += l->r->failed_lookups;
	into->lookups_done += l->lookups_done;
	into->next_req += l->next_req;
	into->hops_sum += l->hops_sum;
	into->latency_sum += l->latency_sum;
	for (uint32_t h = 0; h < into->hist_len; h++)
		into->hops_hist[h] += l->hops_hist[h];
	if (l->now > into->now)
		into->now = l->now;
}

void sim_params_default(sim_params *p)
{
	memset(p, 0, sizeof *p);
	p->nodes = 1000;
	p->requests = 100;
	p->lookup = RING_LOOKUP_SCALABLE;
	p->bits = 160;
	p->successors = 8;
	p->bootstrap = SIM_BOOT_STATIC;
	p->vnodes = 1;
	p->seed = 1;
	p->latency_min_ms = 10;
	p->latency_max_ms = 50;
	p->join_rate = 2000;
	p->max_virtual_ms = 24ull * 3600 * 1000;
}

int sim_params_check(const sim_params *p, char *err, size_t len)
{
#define BAD(...)                                                                                   \
	do {                                                                                       \
		snprintf(err, len, __VA_ARGS__);                                                   \
		return RN_EINVAL;                                                                  \
	} while (0)
	if (p->nodes < 1)
		BAD("--nodes must be at least 1");
	if (p->bits < 1 || p->bits > 160)
		BAD("--bits must be between 1 and 160");
	if (p->bits < 32 && p->nodes > (1ull << p->bits))
		BAD("--nodes %u do not fit on a %u-bit ring (at most %llu positions)", p->nodes,
		    p->bits, 1ull << p->bits);
	if (p->successors < 1 || p->successors > RING_MAX_SUCC)
		BAD("--successors must be between 1 and %d", RING_MAX_SUCC);
	if (!(p->fail >= 0 && p->fail <= 1))
		BAD("--fail must be a fraction between 0 and 1");
	if (!(p->churn >= 0 && p->churn <= 1e6))
		BAD("--churn must be a rate between 0 and 1000000 per second");
	if (p->vnodes < 1 || p->vnodes > 1024)
		BAD("--vnodes must be between 1 and 1024");
	if ((uint64_t)p->nodes * p->requests > 4000000000ull)
		BAD("--nodes x --requests is over 4e9 lookups");
	if (p->latency_min_ms > p->latency_max_ms)
		BAD("latency range is empty");
	if (p->join_rate < 1)
		BAD("--join-rate must be at least 1");
	if (p->max_virtual_ms >= (1ull << 32))
		BAD("the virtual time limit must be below 2^32 ms"); /* issue times are 32-bit */
	return 0;
#undef BAD
}

int sim_run(const sim_params *p, sim_result *r)
{
	memset(r, 0, sizeof *r);
	sim s;
	memset(&s, 0, sizeof s);
	s.p = p;
	s.r = r;
	if (queue_init(&s) < 0)
		return RN_ENOMEM;
	ring_config_default(&s.cfg);
	s.cfg.bits = p->bits;
	s.cfg.successors = p->successors;
	s.cfg.lookup = p->lookup;
	s.cfg.max_hops =
	    p->nodes * 2u + 64u > s.cfg.max_hops ? p->nodes * 2u + 64u : s.cfg.max_hops;
	/* room inline for the ~log2(N) distinct fingers a node has, and some to spare */
	unsigned lg = 0;
	while ((1ull << lg) < p->nodes)
		lg++;
	s.cfg.finger_slots = lg + 6 < s.cfg.bits + 1 ? lg + 6 : s.cfg.bits + 1;
	s.stride = ring_node_size(&s.cfg);
	rn_rng_seed(&s.rng, p->seed);
	s.lat_span = p->latency_max_ms - p->latency_min_ms + 1ull;
	s.lat_limit = rn_rng_limit(s.lat_span);
	double t0 = now_ms();
	int rc = p->bootstrap == SIM_BOOT_STATIC ? build_static(&s) : build_join(&s);
	r->build_wall_ms = now_ms() - t0;
	if (rc < 0)
		goto out;

	if (p->fail > 0) {
		uint32_t kill = (uint32_t)floor(p->fail * s.n + 0.5);
		if (kill >= s.n)
			kill = s.n - 1; /* someone must be left to ask */
		/* choose victims by a partial shuffle of the live list */
		uint32_t *idx = malloc((size_t)s.n * sizeof *idx);
		if (!idx) {
			rc = RN_ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i < s.n; i++)
			idx[i] = i;
		for (uint32_t i = 0; i < kill; i++) {
			uint32_t j = i + (uint32_t)rn_rng_below(&s.rng, s.n - i);
			uint32_t t = idx[i];
			idx[i] = idx[j];
			idx[j] = t;
		}
		/* the oracle keeps the dead: a key whose holder died is a failed lookup */
		for (uint32_t i = 0; i < kill; i++)
			s.alive[idx[i]] = 0;
		s.ndead += kill;
		free(idx);
		r->failures = kill;
		s.maintain = false; /* no stabilization between the failure and the lookups */
	}
	if (p->churn > 0) {
		s.maintain = true;
		s.churn_on = true;
		for (uint32_t i = 0; i < s.n; i++)
			if (s.alive[i] && s.tick_at[i] == UINT64_MAX) {
				s.tick_at[i] = s.now + rn_rng_below(&s.rng, 1000);
				if ((rc = push(&s, s.tick_at[i], EV_TICK, i)) < 0)
					goto out;
			}
		if ((rc = push(&s, s.now + (uint64_t)rn_rng_exp(&s.rng, 1000.0 / p->churn),
		               EV_CHURN_JOIN, 0)) < 0 ||
		    (rc = push(&s, s.now + (uint64_t)rn_rng_exp(&s.rng, 1000.0 / p->churn),
		               EV_CHURN_FAIL, 0)) < 0)
			goto out;
	}

	/* lookups: every live node asks requests keys, one per virtual second */
	s.req_space = (uint64_t)s.n * p->requests;
	s.hist_len = s.cfg.max_hops + 2;
	s.hops_hist = calloc(s.hist_len, sizeof *s.hops_hist);
	if (!s.hops_hist) {
		rc = RN_ENOMEM;
		goto out;
	}
	/* live[] stays as it is from here unless nodes come and go (churn) */
	s.rank = malloc((size_t)(s.n ? s.n : 1) * sizeof *s.rank);
	if (!s.rank) {
		rc = RN_ENOMEM;
		goto out;
	}
	for (uint32_t k = 0; k < s.nlive; k++)
		s.rank[s.live[k].addr] = k;
	s.rank_ok = s.nlive == s.n;
	s.lookups_on = true;
	s.lookups_start = s.now;
	bool read_only = !s.maintain && !(p->fail > 0);
	unsigned nlanes = read_only ? SIM_LANES : 1;
	sim lane[SIM_LANES];
	sim_result lane_r[SIM_LANES];
	sim *lanes[SIM_LANES] = {&s};
	for (unsigned k = 1; k < nlanes; k++) {
		lane[k] = s; /* shares the nodes and the oracle, which nobody writes now */
		memset(&lane_r[k], 0, sizeof lane_r[k]);
		lane[k].r = &lane_r[k];
		lane[k].nspare = 0;
		lane[k].nheap = lane[k].capheap = 0;
		lane[k].nslots = lane[k].capslots = 0;
		lane[k].wcount = 0;
		rn_rng_seed(&lane[k].rng, rn_rng_next(&s.rng));
		lane[k].hops_hist = calloc(s.hist_len, sizeof *s.hops_hist);
		if (queue_init(&lane[k]) < 0 || !lane[k].hops_hist) {
			free(lane[k].hops_hist);
			for (unsigned j = 1; j < k; j++) {
				queue_free(&lane[j]);
				free(lane[j].hops_hist);
			}
			rc = RN_ENOMEM;
			goto out;
		}
		lanes[k] = &lane[k];
	}
	for (uint32_t i = 0; i < s.n && p->requests; i++)
		if (s.alive[i]) {
			sim *l = lanes[i % nlanes];
			if ((rc = push(l, l->now + rn_rng_below(&l->rng, 1000), EV_ISSUE, i)) < 0)
				break;
			l->issuers++;
		}
	double t1 = now_ms();
	pthread_t tid[SIM_LANES];
	unsigned started = 1;
	for (unsigned k = 1; k < nlanes && rc == 0; k++, started++)
		if (pthread_create(&tid[k], NULL, lane_main, lanes[k]) != 0)
			break;
	if (rc == 0)
		rc = (int)(intptr_t)lane_main(&s);
	for (unsigned k = 1; k < nlanes; k++) {
		void *ret = NULL;
		if (k < started)
			pthread_join(tid[k], &ret);
		else if (rc == 0)
			ret = lane_main(lanes[k]); /* no thread to be had: run it here */
		if (rc == 0 && (intptr_t)ret < 0)
			rc = (int)(intptr_t)ret;
		lane_merge(&s, lanes[k]);
		queue_free(lanes[k]);
		free(lanes[k]->hops_hist);
	}
	r->wall_ms = now_ms() - t1;
	if (rc < 0)
		goto out;

	r->nodes = s.n;
	for (uint32_t i = 0; i < s.n; i++)
		r->live_nodes += s.alive[i];
	r->lookups = s.next_req;
	/* lookups never answered (their origin died, or they timed out) count as failed */
	r->failed_lookups += s.next_req - s.lookups_done;
	r->virtual_ms = s.now - s.lookups_start;
	if (s.lookups_done) {
		r->avg_hops = (double)s.hops_sum / (double)s.lookups_done;
		r->avg_latency_ms = s.latency_sum / (double)s.lookups_done;
		uint64_t acc = 0, p50 = (s.lookups_done + 1) / 2,
		         p1 = (uint64_t)ceil(0.01 * (double)s.lookups_done),
		         p99 = (uint64_t)ceil(0.99 * (double)s.lookups_done);
		bool g1 = false, g50 = false, g99 = false;
		for (uint32_t h = 0; h < s.hist_len; h++) {
			acc += s.hops_hist[h];
			if (s.hops_hist[h])
				r->max_hops = h;
			if (!g1 && acc >= p1) {
				r->p1_hops = h;
				g1 = true;
			}
			if (!g50 && acc >= p50) {
				r->p50_hops = h;
				g50 = true;
			}
			if (!g99 && acc >= p99) {
				r->p99_hops = h;
				g99 = true;
			}
		}
	}
	for (uint32_t i = 0; i < s.n; i++)
		r->node_bytes += ring_node_mem(NODE(&s, i));
	if (p->keys)
		load_figures(&s);
out:
	for (uint32_t i = 0; i < s.n; i++)
		ring_node_fini(NODE(&s, i));
	queue_free(&s);
	if (s.arena)
		munmap(s.arena, (size_t)s.cap * s.stride);
	free(s.alive);
	free(s.tick_at);
	free(s.issued);
	if (s.live)
		munmap(s.live, (size_t)s.cap * sizeof *s.live);
	free(s.joined);
	free(s.hops_hist);
	free(s.rank);
	return rc;
}
