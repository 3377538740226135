/* report.c — the result: counts, hop percentiles, latency, memory, and the load figures
 * of --keys. See sim_internal.h. */
#include <math.h>
#include <stdlib.h>

#include "sim_internal.h"

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Maintenance rounds per node over the nodes that were there when the lookups began and
 * are still alive: each should have stabilized about once per period all along. */
static void report_rounds(sim *s)
{
	sim_result *r = s->r;
	r->stabilized = true;
	uint32_t *v = malloc((size_t)(s->n_start ? s->n_start : 1) * sizeof *v), k = 0;
	if (!v)
		return;
	for (uint32_t i = 0; i < s->n_start; i++)
		if (s->alive[i])
			v[k++] = s->rounds[i];
	if (k) {
		qsort(v, k, sizeof *v, u32_cmp);
		r->rounds_min = v[0];
		r->rounds_median = v[(k - 1) / 2];
	}
	r->rounds_nodes = k;
	free(v);
	/* in the ring but cut off from it: every successor it knew is gone and nothing is
	 * left to fall back on, so it stabilizes with nobody (the core does not rejoin) */
	for (uint32_t i = 0; i < s->n && s->nlive > 1; i++)
		if (s->alive[i] && ring_joined(NODE(s, i)) && ring_successor(NODE(s, i)).addr == i)
			r->isolated_nodes++;
}

void report_lookups(sim *s)
{
	sim_result *r = s->r;
	r->nodes = s->n;
	for (uint32_t i = 0; i < s->n; i++)
		r->live_nodes += s->alive[i];
	r->lookups = s->next_req;
	/* a lookup not answered when the run stopped: a timeout, unless its origin died
	 * first or the time limit cut the run short */
	uint64_t open = s->next_req - s->lookups_done - s->abandoned;
	if (s->cut)
		r->lookups_unfinished = open;
	else
		r->lookup_timeouts = open; /* all past their deadline when the run stopped */
	r->lookup_timeouts += s->late;
	r->lookups_abandoned = s->abandoned;
	r->lookups_rerouted = s->rerouted;
	r->virtual_ms = s->now - s->lookups_start;
	if (s->lookups_done) {
		r->avg_hops = (double)s->hops_sum / (double)s->lookups_done;
		r->avg_latency_ms = s->latency_sum / (double)s->lookups_done;
		uint64_t acc = 0, p50 = (s->lookups_done + 1) / 2,
		         p1 = (uint64_t)ceil(0.01 * (double)s->lookups_done),
		         p99 = (uint64_t)ceil(0.99 * (double)s->lookups_done);
		bool g1 = false, g50 = false, g99 = false;
		for (uint32_t h = 0; h < s->hist_len; h++) {
			acc += s->hops_hist[h];
			if (s->hops_hist[h])
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
	for (uint32_t i = 0; i < s->n; i++)
		r->node_bytes += ring_node_mem(NODE(s, i));
	if (s->maintain)
		report_rounds(s);
}

void load_figures(sim *s)
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
