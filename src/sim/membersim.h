/* membersim.h — `ringnet sim --member`: the membership core (src/member) on every
 * simulated node, with message loss and crashes, measured against the truth.
 *
 * Every node starts knowing every other (a static bootstrap) and runs for warmup_s
 * virtual seconds; then `crashes` nodes crash at random times in the first half of the
 * next run_s seconds. For each crash the run records when each live node first stopped
 * taking the crashed node for alive (suspect) and when it took it for dead; and over the
 * whole run, every live node some node declared dead (a false positive) and the
 * messages sent. Deterministic: one seed, one result. */
#ifndef RN_MEMBERSIM_H
#define RN_MEMBERSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../member/member.h"

typedef struct {
	uint32_t nodes;
	uint32_t crashes;
	double loss; /* probability that a message is lost */
	uint64_t seed;
	uint32_t warmup_s, run_s;
	uint32_t latency_min_ms, latency_max_ms; /* one-way, uniform */
	member_config member;                    /* max_addr is set to nodes by the run */
} membersim_params;

typedef struct {
	/* ms from the crash: the first live node to suspect / declare dead, the last (when
	 * every live node did by the end; else known_by says how many did) */
	uint64_t first_suspect_ms, last_suspect_ms, first_dead_ms, last_dead_ms, median_dead_ms;
	uint32_t known_by;
	/* where the time goes: the first PING sent to it after the crash (UINT64_MAX: none),
	 * when 90% of the live nodes had declared it dead, and how many live nodes did so
	 * by their own suspicion timer (the others heard it) */
	uint64_t first_probe_ms, p90_dead_ms;
	uint32_t dead_by_timer;
} membersim_crash;

typedef struct {
	uint32_t nodes, live_nodes, crashes;
	membersim_crash *crash; /* crashes of them; free with membersim_result_free */
	/* medians and maxima over the crashes known everywhere */
	uint64_t med_first_dead_ms, med_last_dead_ms, max_last_dead_ms;
	uint64_t med_first_suspect_ms, med_last_suspect_ms, med_first_probe_ms, med_p90_dead_ms;
	uint32_t crashes_known_everywhere;
	/* live nodes: declared dead (transitions), distinct nodes so declared, suspected */
	uint64_t false_deaths, false_dead_nodes, live_suspicions, refutations;
	double msgs_per_node_s, updates_per_msg, bytes_per_node_s; /* the run_s window */
	uint64_t messages, lost, events;
	uint64_t suspicion_timeout_ms; /* at N nodes */
	unsigned retransmit_limit;
	double wall_ms;
	uint64_t node_bytes; /* memory the member cores own */
} membersim_result;

void membersim_params_default(membersim_params *p);
/* 0, or RN_EINVAL with a message in err. */
int membersim_params_check(const membersim_params *p, char *err, size_t errlen);
int membersim_run(const membersim_params *p, membersim_result *r);
void membersim_result_free(membersim_result *r);

#endif
