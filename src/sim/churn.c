/* churn.c — the workloads that break a ring: --fail kills a fraction of the nodes at once
 * and turns maintenance off; --churn runs joins and crashes as Poisson processes with
 * maintenance on. See sim_internal.h. */
#include <math.h>
#include <stdlib.h>

#include "../lib/err.h"
#include "sim_internal.h"

int fail_nodes(sim *s)
{
	/* sim_params_check leaves someone to ask */
	uint32_t kill = (uint32_t)floor(s->p->fail * s->n + 0.5);
	/* choose victims by a partial shuffle of the live list */
	uint32_t *idx = malloc((size_t)s->n * sizeof *idx);
	if (!idx)
		return RN_ENOMEM;
	for (uint32_t i = 0; i < s->n; i++)
		idx[i] = i;
	for (uint32_t i = 0; i < kill; i++) {
		uint32_t j = i + (uint32_t)rn_rng_below(&s->rng, s->n - i);
		uint32_t t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
	/* the oracle keeps the dead: a key whose holder died is a failed lookup */
	for (uint32_t i = 0; i < kill; i++)
		s->alive[idx[i]] = 0;
	s->ndead += kill;
	free(idx);
	s->r->failures = kill;
	s->maintain = false; /* no stabilization between the failure and the lookups */
	return 0;
}

int churn_start(sim *s)
{
	s->maintain = true;
	s->churn_on = true;
	int rc;
	for (uint32_t i = 0; i < s->n; i++)
		if (s->alive[i] && s->tick_at[i] == UINT64_MAX) {
			/* a random phase: the nodes of a static ring do not stabilize in step */
			s->tick_at[i] = s->now + rn_rng_below(&s->rng, s->p->stabilize_ms);
			if ((rc = push(s, s->tick_at[i], EV_TICK, i)) < 0)
				return rc;
		}
	if ((rc = push(s, s->now + (uint64_t)rn_rng_exp(&s->rng, 1000.0 / s->p->churn),
	               EV_CHURN_JOIN, 0)) < 0 ||
	    (rc = push(s, s->now + (uint64_t)rn_rng_exp(&s->rng, 1000.0 / s->p->churn),
	               EV_CHURN_FAIL, 0)) < 0)
		return rc;
	return 0;
}

int on_churn_join(sim *s, const popped *e)
{
	(void)e;
	int rc = add_node(s, NULL);
	if (rc < 0)
		return rc;
	s->r->joins++;
	ring_addr via = random_joined(s);
	if (via != UINT32_MAX)
		rc = step_node(s, s->n - 1, do_join, &via);
	if (rc == 0)
		rc = push(s, s->now + (uint64_t)rn_rng_exp(&s->rng, 1000.0 / s->p->churn) + 1,
		          EV_CHURN_JOIN, 0);
	return rc;
}

int on_churn_fail(sim *s, const popped *e)
{
	(void)e;
	if (s->nlive > 1) {
		uint32_t k = (uint32_t)rn_rng_below(&s->rng, s->nlive);
		kill_node(s, s->live[k].addr);
	}
	return push(s, s->now + (uint64_t)rn_rng_exp(&s->rng, 1000.0 / s->p->churn) + 1,
	            EV_CHURN_FAIL, 0);
}
