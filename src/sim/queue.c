/* queue.c — the event queue: a timing wheel of 1 ms buckets for the next few seconds,
 * a binary heap beyond, and the work-ahead loads that hide the cache misses of the
 * events being drained. See sim_internal.h. */
#include <stdlib.h>

#include "../lib/err.h"
#include "../lib/touch.h"
#include "sim_internal.h"

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

int push(sim *s, uint64_t t, uint32_t kind, uint32_t ref)
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

int push_msg(sim *s, uint64_t t, uint32_t kind, uint32_t sender, const ring_msg *m)
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

size_t pending(const sim *s)
{
	return s->wcount + s->nheap;
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

bool pop(sim *s, popped *out)
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

void unpop(sim *s, const popped *e)
{
	wbucket *b = &s->wheel[s->wtime & (WHEEL - 1)];
	if (is_msg(e->kind))
		b->mhead--;
	else
		b->head--;
	s->wcount++;
}

int queue_init(sim *s)
{
	s->free_slot = UINT32_MAX;
	s->wheel = calloc(WHEEL, sizeof *s->wheel);
	return s->wheel ? 0 : RN_ENOMEM;
}

void queue_free(sim *s)
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
