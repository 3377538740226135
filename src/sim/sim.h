/* sim.h — the discrete-event simulator: a virtual clock, a binary heap of events, a
 * latency / crash model and many ring cores in one process. It drives the very same
 * src/ring code a real node runs. Deterministic: one seed, one result. */
#ifndef RN_SIM_H
#define RN_SIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../ring/ring.h"

typedef enum { SIM_BOOT_STATIC = 0, SIM_BOOT_JOIN = 1 } sim_bootstrap;

/* Where a run is, for a progress line: sim_run writes it, another thread of the caller may
 * read it at any time. done/total count nodes joined (SIM_PHASE_BUILD with --bootstrap
 * join; 0 of 0 while a static ring is built) or lookups finished (SIM_PHASE_LOOKUPS). */
enum { SIM_PHASE_START, SIM_PHASE_BUILD, SIM_PHASE_LOOKUPS, SIM_PHASE_REPORT, SIM_PHASE_DONE };
typedef struct {
	_Atomic int phase;
	_Atomic uint64_t done, total;
} sim_progress;

typedef struct {
	uint32_t nodes;
	uint32_t requests; /* lookups per node, one per virtual second */
	ring_lookup_mode lookup;
	unsigned bits;
	unsigned successors;
	sim_bootstrap bootstrap;
	double fail;     /* fraction of nodes killed at once before the lookups */
	double churn;    /* joins per second and failures per second (each) */
	uint32_t vnodes; /* virtual nodes per physical node, for the load figures */
	uint64_t keys;   /* keys placed for the load figures (0: none) */
	uint64_t seed;
	uint32_t latency_min_ms, latency_max_ms; /* one-way message latency, uniform */
	uint32_t join_rate;                      /* joins per virtual second for --bootstrap join */
	uint32_t stabilize_ms;   /* each node's stabilize and fix_fingers period (check_predecessor:
	                          * twice that); phases are random, the period fixed */
	uint64_t max_virtual_ms; /* give up after this much virtual time */
	sim_progress *progress;  /* NULL: nobody watches */
} sim_params;

typedef struct {
	uint32_t nodes, live_nodes;
	/* lookups issued; of those: answered wrong (or "failed") within the timeout; not
	 * answered within it (30 s); abandoned by an origin that crashed first (--churn);
	 * still under way when max_virtual_ms stopped the run. The rest succeeded.
	 * timeouts: messages that met a dead node (each costs the sender a connect timeout). */
	uint64_t lookups, failed_lookups, lookup_timeouts, lookups_abandoned, lookups_unfinished;
	/* of the successes: lookups forwarded to a dead node on the way, which the core routed
	 * around (the Chord paper's churn simulator, which does not retry, fails them) */
	uint64_t lookups_rerouted;
	uint64_t timeouts;
	double avg_hops;
	uint32_t p1_hops, p50_hops, p99_hops, max_hops;
	double avg_latency_ms;
	uint64_t virtual_ms;  /* virtual time the lookups phase took */
	uint64_t converge_ms; /* --bootstrap join: virtual time until the ring was correct */
	bool converged;
	uint64_t events, messages;
	uint64_t joins, failures; /* churn */
	/* maintenance rounds (ticks at which a node stabilized) during the lookups, over the
	 * nodes live from their start to their end; stabilized says whether there was any
	 * maintenance then (--churn, --bootstrap join) */
	bool stabilized;
	uint32_t rounds_min, rounds_median;
	uint32_t rounds_nodes;   /* how many nodes those figures are over */
	uint32_t isolated_nodes; /* live, joined, and without a successor at the end */
	double wall_ms, build_wall_ms;
	uint64_t node_bytes; /* memory the ring cores own */
	/* load (--keys) */
	double keys_mean, keys_p1, keys_p99, keys_max;
} sim_result;

void sim_params_default(sim_params *p);
/* 0, or a negative RN_E* code with a message in err (size errlen). */
int sim_params_check(const sim_params *p, char *err, size_t errlen);
/* Runs the whole experiment. 0 or a negative RN_E* code. */
int sim_run(const sim_params *p, sim_result *r);

#endif
