/* sim_internal.h — internal to src/sim, not for other modules (they use sim.h): the
 * simulator's state, its event queue's types, and the functions one of its files calls in
 * another, each declared here under the file that defines it.
 *
 * The files, by concern:
 *   queue.c    the event queue: a timing wheel of 1 ms buckets and a heap for far events
 *   oracle.c   the live nodes sorted by id: a key's true successor, is the ring correct
 *   nodes.c    the node arena, fresh ids, adding and killing nodes
 *   drive.c    feeding the cores: one event to one node, its output back into the queue
 *   build.c    the workloads that make a ring: static placement, joining
 *   churn.c    the workloads that break it: --fail, --churn
 *   lookups.c  the lookup workload: issuing, lanes, checking each answer
 *   report.c   the result: hop percentiles, load figures
 *   sim.c      parameters and sim_run, which runs the phases in order
 * A new workload (the key-value service, say) adds its event kinds to the enum below, a
 * handler that drive.c's dispatch calls, and its counters to sim. */
#ifndef RN_SIM_INTERNAL_H
#define RN_SIM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/rng.h"
#include "../ring/ring.h"
#include "sim.h"

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

/* ---- event queue (queue.c) ----
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
	uint32_t *rounds; /* rounds[i]: ring_tick calls at which node i stabilized */
	bool maintain;
	/* oracle: live nodes sorted by id */
	ring_peer *live;
	uint32_t nlive;
	/* rank[a]: where node a sits in live[], while rank_ok (live[] unchanged since it was
	 * computed). Checking a lookup's answer then reads two neighbours of live[] that can
	 * be prefetched, instead of searching live[] for the key. */
	uint32_t *rank;
	bool rank_ok;
	/* joined nodes (bootstrap candidates; the dead are dropped lazily) */
	uint32_t *joined;
	uint32_t njoined;
	/* churn joiners whose join has not returned yet: their ids are taken, but they are
	 * not in live[] (a key's owner is the live node that has joined) */
	uint32_t *joining;
	uint32_t njoining, capjoining;
	/* lookups */
	bool lookups_on;
	uint64_t progress_told;          /* lookups this lane has added to p->progress->done */
	uint64_t lookups_done, next_req; /* answered, issued (by this lane) */
	uint32_t n_start;                /* nodes when the lookups began */
	uint64_t req_space;              /* req = node * requests + k is below this */
	uint64_t lookups_start, last_issue;
	uint32_t issuers;   /* nodes that still have lookups to issue */
	uint64_t late;      /* answers that came after LOOKUP_TIMEOUT_MS: timeouts */
	uint64_t abandoned; /* open lookups of origins that died (churn) */
	uint32_t *answered; /* answered[i]: answers node i had, while origins can die */
	bool cut;           /* the time limit stopped the lookups with some under way */
	uint64_t rerouted;  /* right and in time, though forwarded to a dead node on the way */
	uint64_t *met;      /* the lookups that were (lookups.c) */
	size_t met_n, met_cap;
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
/* alive[i], without reading alive[] while nobody has died (a cache miss per message in a
 * large ring) */
static inline bool node_alive(const sim *s, uint32_t i)
{
	return !s->ndead || s->alive[i];
}

static inline bool is_msg(uint32_t kind)
{
	return kind == EV_DELIVER || kind == EV_UNREACH;
}

/* queue.c */
int queue_init(sim *s);
void queue_free(sim *s);
int push(sim *s, uint64_t t, uint32_t kind, uint32_t ref);
/* A message event: inline in the wheel, or parked in a slot while it is far ahead.
 * The message's peer list, if any, is owned by the event from here on. */
int push_msg(sim *s, uint64_t t, uint32_t kind, uint32_t sender, const ring_msg *m);
/* The next event; false when none is left. Messages come with a copy of themselves. */
bool pop(sim *s, popped *out);
/* Put back the event pop just returned (it was past a deadline). */
void unpop(sim *s, const popped *e);
size_t pending(const sim *s);

/* oracle.c */
int peer_cmp(const void *a, const void *b);
/* index in live[] of the first id >= key (wrapping to 0) */
uint32_t live_lower(const sim *s, const rn_id *key);
const ring_peer *true_succ(const sim *s, const rn_id *key);
void live_insert(sim *s, const ring_peer *p);
void live_remove(sim *s, const ring_peer *p);
bool id_taken(const sim *s, const rn_id *id);
/* Is every live node's successor, predecessor and finger table what the oracle says? */
bool ring_correct(sim *s);

/* nodes.c */
int grow_nodes(sim *s, uint32_t want);
/* A new node with a fresh id not used by any live or joining node (ids are positions on
 * the ring), or with id fixed. It enters the oracle only with node_in_ring. */
int add_node(sim *s, const rn_id *fixed);
/* Node i is in the ring (it created it, or its join lookup returned): from now on it is
 * the owner of the keys up to its id, and a bootstrap for others. */
void node_in_ring(sim *s, uint32_t i);
/* Distinct random ids for n nodes: on a small ring, a random subset of all positions. */
int make_ids(sim *s, uint32_t n, rn_id **out);
void kill_node(sim *s, uint32_t i);
/* A random live node that is in the ring (UINT32_MAX: none). */
uint32_t random_joined(sim *s);
void nodes_free(sim *s); /* the nodes, the oracle and the per-node arrays */

/* drive.c */
/* One call into node i's core (fn makes it), then its output into the queue. */
int step_node(sim *s, uint32_t i, int (*fn)(sim *, uint32_t, void *), void *arg);
int do_create(sim *s, uint32_t i, void *arg);
int do_join(sim *s, uint32_t i, void *arg); /* arg: the ring_addr to join through */
/* Run events until stop() says so, the queue runs dry, or time runs out. */
int run_until(sim *s, bool (*stop)(sim *), uint64_t deadline);
bool never(sim *s);

/* build.c */
int build_static(sim *s);
int build_join(sim *s);
int on_join(sim *s, const popped *e); /* EV_JOIN */

/* churn.c */
int fail_nodes(sim *s);  /* --fail: kill a fraction at once */
int churn_start(sim *s); /* --churn: maintenance on, the first join and failure */
int on_churn_join(sim *s, const popped *e);
int on_churn_fail(sim *s, const popped *e);

/* lookups.c */
int run_lookups(sim *s);               /* every live node asks requests keys, one per second */
int on_issue(sim *s, const popped *e); /* EV_ISSUE */
int do_lookup(sim *s, uint32_t i, void *arg);
void lookup_done(sim *s, uint32_t origin, const ring_event *e);
void lookups_origin_died(sim *s, uint32_t i); /* from kill_node */
/* m, a FIND_SUCC, came back from a dead node (a lookup's first meeting of one counts) */
int lookup_met_dead(sim *s, const ring_msg *m);

/* report.c */
void report_lookups(sim *s); /* the result's lookup figures, after run_lookups */
void load_figures(sim *s);

/* sim.c */
double now_ms(void);
/* A simulator with p's configuration and no nodes yet (sim_fini frees it, also after a
 * failed init); sim_run's phases, or a test, go on from there. */
int sim_init(sim *s, const sim_params *p, sim_result *r);
void sim_fini(sim *s);

#endif
