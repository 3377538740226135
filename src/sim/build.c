/* build.c — the workloads that make a ring: --bootstrap static places the nodes and
 * fills their tables from the oracle, --bootstrap join has them join through the protocol.
 * See sim_internal.h. */
#include <pthread.h>
#include <stdlib.h>

#include "../lib/err.h"
#include "sim_internal.h"

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
		s->rounds[i] = 0;
		s->live[i].id = j->ids[i];
		s->live[i].addr = i;
		s->joined[i] = i;
	}
	return NULL;
}

int build_static(sim *s)
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

int build_join(sim *s)
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

int on_join(sim *s, const popped *e)
{
	uint32_t i = e->ref;
	if (!s->njoined)
		return step_node(s, i, do_create, NULL);
	ring_addr via = random_joined(s);
	if (via == UINT32_MAX)
		return step_node(s, i, do_create, NULL);
	return step_node(s, i, do_join, &via);
}
