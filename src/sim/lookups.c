/* lookups.c — the lookup workload: every live node asks --requests random keys, one per
 * virtual second, and each answer is checked against the oracle. See sim_internal.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "sim_internal.h"

int do_lookup(sim *s, uint32_t i, void *arg)
{
	uint64_t req = *(uint64_t *)arg;
	rn_id key;
	rn_id_random(&key, &s->rng, s->cfg.bits);
	/* the issue time rides in the request id's top half, where lookup_done finds it */
	req |= (s->now - s->lookups_start) << 32;
	ring_lookup(NODE(s, i), s->now, &key, req, &s->out);
	return 0;
}

int on_issue(sim *s, const popped *e)
{
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

/* The set of lookups (req + 1; 0 marks a free slot) forwarded at least once to a dead
 * node: open addressing, never shrunk (each lookup meets it once or twice). */
static bool met_has(const sim *s, uint64_t key)
{
	if (!s->met_cap)
		return false;
	for (size_t k = (size_t)(key * 0x9e3779b97f4a7c15ull) & (s->met_cap - 1);;
	     k = (k + 1) & (s->met_cap - 1)) {
		if (s->met[k] == key)
			return true;
		if (!s->met[k])
			return false;
	}
}

static int met_add(sim *s, uint64_t key)
{
	if (met_has(s, key))
		return 0;
	if (2 * (s->met_n + 1) > s->met_cap) {
		size_t cap = s->met_cap ? 2 * s->met_cap : 1024;
		uint64_t *t = calloc(cap, sizeof *t), *old = s->met;
		if (!t)
			return RN_ENOMEM;
		size_t oldcap = s->met_cap;
		s->met = t;
		s->met_cap = cap;
		s->met_n = 0;
		for (size_t k = 0; k < oldcap; k++)
			if (old[k])
				met_add(s, old[k]);
		free(old);
	}
	size_t k = (size_t)(key * 0x9e3779b97f4a7c15ull) & (s->met_cap - 1);
	while (s->met[k])
		k = (k + 1) & (s->met_cap - 1);
	s->met[k] = key;
	s->met_n++;
	return 0;
}

int lookup_met_dead(sim *s, const ring_msg *m)
{
	if (m->purpose != RING_FOR_USER || !s->lookups_on || (uint32_t)m->req >= s->req_space)
		return 0;
	return met_add(s, m->req + 1);
}

void lookup_done(sim *s, uint32_t origin, const ring_event *e)
{
	uint32_t idx = (uint32_t)e->req, issued = (uint32_t)(e->req >> 32);
	if (!s->lookups_on || idx >= s->req_space)
		return;
	s->lookups_done++;
	if (s->answered)
		s->answered[origin]++;
	uint64_t took = s->now - s->lookups_start - issued;
	uint32_t h = e->hops < s->hist_len ? e->hops : s->hist_len - 1;
	s->hops_hist[h]++;
	s->hops_sum += e->hops;
	s->latency_sum += (double)took;
	if (took >= LOOKUP_TIMEOUT_MS) {
		s->late++; /* the asker gave up before this came: a timeout, right or wrong */
		return;
	}
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
	else if (met_has(s, e->req + 1))
		s->rerouted++;
}

void lookups_origin_died(sim *s, uint32_t i)
{
	/* its open lookups have nobody to answer to: not failures of the ring */
	if (s->answered && i < s->n_start)
		s->abandoned += s->issued[i] - s->answered[i];
}

static bool lookups_finished(sim *s)
{
	/* every lookup answered, abandoned by its dead origin, or past its deadline */
	return s->issuers == 0 && (s->lookups_done + s->abandoned >= s->next_req ||
	                           s->now >= s->last_issue + LOOKUP_TIMEOUT_MS);
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
	/* stopped by the time limit with lookups still under way (not by a queue run dry,
	 * which leaves only lookups nothing will ever answer) */
	s->cut = !lookups_finished(s) && pending(s) > 0;
	return (void *)(intptr_t)rc;
}

static void lane_merge(sim *into, const sim *l)
{
	into->r->events += l->r->events;
	into->r->messages += l->r->messages;
	into->r->timeouts += l->r->timeouts;
	into->r->failed_lookups += l->r->failed_lookups;
	into->lookups_done += l->lookups_done;
	into->late += l->late;
	into->rerouted += l->rerouted;
	into->abandoned += l->abandoned;
	into->cut |= l->cut;
	into->next_req += l->next_req;
	into->hops_sum += l->hops_sum;
	into->latency_sum += l->latency_sum;
	for (uint32_t h = 0; h < into->hist_len; h++)
		into->hops_hist[h] += l->hops_hist[h];
	if (l->now > into->now)
		into->now = l->now;
}

int run_lookups(sim *s)
{
	int rc = 0;
	s->n_start = s->n;
	s->req_space = (uint64_t)s->n * s->p->requests;
	s->hist_len = s->cfg.max_hops + 2;
	s->hops_hist = calloc(s->hist_len, sizeof *s->hops_hist);
	if (!s->hops_hist)
		return RN_ENOMEM;
	/* live[] stays as it is from here unless nodes come and go (churn) */
	s->rank = malloc((size_t)(s->n ? s->n : 1) * sizeof *s->rank);
	if (!s->rank)
		return RN_ENOMEM;
	for (uint32_t k = 0; k < s->nlive; k++)
		s->rank[s->live[k].addr] = k;
	s->rank_ok = s->nlive == s->n;
	for (uint32_t i = 0; i < s->n; i++)
		s->rounds[i] = 0; /* count the rounds the lookups see */
	if (s->churn_on) {        /* origins may die with lookups open */
		s->answered = calloc(s->n ? s->n : 1, sizeof *s->answered);
		if (!s->answered)
			return RN_ENOMEM;
	}
	s->lookups_on = true;
	s->lookups_start = s->now;
	bool read_only = !s->maintain && !(s->p->fail > 0);
	unsigned nlanes = read_only ? SIM_LANES : 1;
	sim lane[SIM_LANES];
	sim_result lane_r[SIM_LANES];
	sim *lanes[SIM_LANES] = {s};
	for (unsigned k = 1; k < nlanes; k++) {
		lane[k] = *s; /* shares the nodes and the oracle, which nobody writes now */
		memset(&lane_r[k], 0, sizeof lane_r[k]);
		lane[k].r = &lane_r[k];
		lane[k].nspare = 0;
		lane[k].nheap = lane[k].capheap = 0;
		lane[k].nslots = lane[k].capslots = 0;
		lane[k].wcount = 0;
		rn_rng_seed(&lane[k].rng, rn_rng_next(&s->rng));
		lane[k].hops_hist = calloc(s->hist_len, sizeof *s->hops_hist);
		if (queue_init(&lane[k]) < 0 || !lane[k].hops_hist) {
			free(lane[k].hops_hist);
			for (unsigned j = 1; j < k; j++) {
				queue_free(&lane[j]);
				free(lane[j].hops_hist);
			}
			return RN_ENOMEM;
		}
		lanes[k] = &lane[k];
	}
	for (uint32_t i = 0; i < s->n && s->p->requests; i++)
		if (s->alive[i]) {
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
		rc = (int)(intptr_t)lane_main(s);
	for (unsigned k = 1; k < nlanes; k++) {
		void *ret = NULL;
		if (k < started)
			pthread_join(tid[k], &ret);
		else if (rc == 0)
			ret = lane_main(lanes[k]); /* no thread to be had: run it here */
		if (rc == 0 && (intptr_t)ret < 0)
			rc = (int)(intptr_t)ret;
		lane_merge(s, lanes[k]);
		queue_free(lanes[k]);
		free(lanes[k]->hops_hist);
	}
	s->r->wall_ms = now_ms() - t1;
	return rc;
}
