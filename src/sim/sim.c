/* sim.c — see sim.h. The parameters, and sim_run, which runs the phases in order: build
 * the ring, break it (--fail, --churn), run the lookups, report. The rest of the simulator
 * is split by concern over the files sim_internal.h lists. */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "sim_internal.h"

double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
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
	p->stabilize_ms = 1000;
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
	if (p->fail > 0 && floor(p->fail * p->nodes + 0.5) >= p->nodes)
		BAD("--fail %g of %u nodes kills every node, leaving nobody to look a key up; use "
		    "a smaller fraction",
		    p->fail, p->nodes);
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
	if (p->stabilize_ms < 1 || p->stabilize_ms > 3600000)
		BAD("--stabilize-ms must be between 1 and 3600000 (an hour)");
	if (p->max_virtual_ms >= (1ull << 32))
		BAD("the virtual time limit must be below 2^32 ms"); /* issue times are 32-bit */
	return 0;
#undef BAD
}
int sim_init(sim *s, const sim_params *p, sim_result *r)
{
	memset(r, 0, sizeof *r);
	memset(s, 0, sizeof *s);
	s->p = p;
	s->r = r;
	if (queue_init(s) < 0)
		return RN_ENOMEM;
	ring_config_default(&s->cfg);
	s->cfg.bits = p->bits;
	s->cfg.successors = p->successors;
	s->cfg.lookup = p->lookup;
	s->cfg.stabilize_ms = s->cfg.fix_fingers_ms = p->stabilize_ms;
	s->cfg.check_pred_ms = 2 * p->stabilize_ms;
	s->cfg.max_hops =
	    p->nodes * 2u + 64u > s->cfg.max_hops ? p->nodes * 2u + 64u : s->cfg.max_hops;
	/* room inline for the ~log2(N) distinct fingers a node has, and some to spare */
	unsigned lg = 0;
	while ((1ull << lg) < p->nodes)
		lg++;
	s->cfg.finger_slots = lg + 6 < s->cfg.bits + 1 ? lg + 6 : s->cfg.bits + 1;
	s->stride = ring_node_size(&s->cfg);
	rn_rng_seed(&s->rng, p->seed);
	s->lat_span = p->latency_max_ms - p->latency_min_ms + 1ull;
	s->lat_limit = rn_rng_limit(s->lat_span);
	return 0;
}

void sim_fini(sim *s)
{
	queue_free(s);
	nodes_free(s);
	free(s->hops_hist);
	free(s->rank);
	free(s->answered);
	free(s->met);
}

int sim_run(const sim_params *p, sim_result *r)
{
	sim s;
	int rc = sim_init(&s, p, r);
	if (rc < 0)
		goto out;
	sim_progress *pr = p->progress;
	if (pr) {
		atomic_store(&pr->total, p->bootstrap == SIM_BOOT_JOIN ? p->nodes : 0);
		atomic_store(&pr->phase, SIM_PHASE_BUILD);
	}
	double t0 = now_ms();
	rc = p->bootstrap == SIM_BOOT_STATIC ? build_static(&s) : build_join(&s);
	r->build_wall_ms = now_ms() - t0;
	if (rc < 0)
		goto out;
	if (p->fail > 0 && (rc = fail_nodes(&s)) < 0)
		goto out;
	if (p->churn > 0 && (rc = churn_start(&s)) < 0)
		goto out;
	if (pr) {
		atomic_store(&pr->done, 0);
		atomic_store(&pr->total, (uint64_t)s.nlive * p->requests);
		atomic_store(&pr->phase, SIM_PHASE_LOOKUPS);
	}
	if ((rc = run_lookups(&s)) < 0)
		goto out;
	if (pr)
		atomic_store(&pr->phase, SIM_PHASE_REPORT);
	report_lookups(&s);
	if (p->keys)
		load_figures(&s);
out:
	sim_fini(&s);
	if (pr)
		atomic_store(&pr->phase, SIM_PHASE_DONE);
	return rc;
}
