/* nodes.c — the nodes: one mmap arena of ring cores, their ids, adding and killing
 * them. See sim_internal.h. */
#define _GNU_SOURCE /* mremap */
#include <sys/mman.h>

#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "sim_internal.h"

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

int grow_nodes(sim *s, uint32_t want)
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
	GROW(rounds);
	GROW(joined);
#undef GROW
	s->cap = cap;
	return 0;
}

int add_node(sim *s, const rn_id *fixed)
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
	s->rounds[i] = 0;
	s->n++;
	if (!fixed) { /* a churn joiner: its id is taken from now on, though not in the ring */
		if (s->njoining == s->capjoining) {
			uint32_t cap = s->capjoining ? s->capjoining * 2 : 16;
			uint32_t *q = realloc(s->joining, cap * sizeof *q);
			if (!q)
				return RN_ENOMEM;
			s->joining = q;
			s->capjoining = cap;
		}
		s->joining[s->njoining++] = i;
	}
	return 0;
}

void node_in_ring(sim *s, uint32_t i)
{
	s->joined[s->njoined++] = i;
	ring_peer p = {*ring_self_id(NODE(s, i)), i};
	live_insert(s, &p);
	for (uint32_t k = 0; k < s->njoining; k++)
		if (s->joining[k] == i) {
			s->joining[k] = s->joining[--s->njoining];
			break;
		}
}

int make_ids(sim *s, uint32_t n, rn_id **out)
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

void kill_node(sim *s, uint32_t i)
{
	if (!s->alive[i])
		return;
	s->alive[i] = 0;
	s->ndead++;
	ring_peer p = {*ring_self_id(NODE(s, i)), i};
	live_remove(s, &p);
	s->r->failures++;
	lookups_origin_died(s, i);
}

uint32_t random_joined(sim *s)
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

void nodes_free(sim *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		ring_node_fini(NODE(s, i));
	if (s->arena)
		munmap(s->arena, (size_t)s->cap * s->stride);
	free(s->alive);
	free(s->tick_at);
	free(s->issued);
	free(s->rounds);
	if (s->live)
		munmap(s->live, (size_t)s->cap * sizeof *s->live);
	free(s->joined);
	free(s->joining);
}
