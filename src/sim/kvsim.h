/* kvsim.h — the key-value core under simulation: many kv cores (src/kv) in one process,
 * an event heap with random message latency, crashes that keep a node's store (as a disk
 * would) and bounce what is sent to it, joins, and a ring view per node that follows the
 * true membership after a detection delay drawn per node and change (what a ring's
 * stabilization or a failure detector would give it), with lookups answered from the true
 * membership; or (real_ring) the Chord core itself on every node, whose successor lists,
 * lookups and failure detection the kv cores then live with, as in the node.
 * Deterministic: one seed, one run.
 *
 * Two layers: the network (kvs_*: the driver of the cores, used by tests/unit/test_kv.c
 * to build scenarios) and the experiment (kvsim_run: a workload of writes and reads under
 * churn, checked against what was acknowledged, for `ringnet sim --replicas`). */
#ifndef RN_KVSIM_H
#define RN_KVSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../kv/kv.h"
#include "../kv/memstore.h"
#include "../lib/rng.h"
#include "../ring/ring.h"

#define KVS_NSUCC 8 /* successors in a node's view */

typedef struct kvs_net kvs_net;

typedef struct {
	kv_node *kv;
	memstore *st;
	rn_id id;
	bool alive;
	bool in_ring;      /* counted in the membership (alive and joined) */
	uint64_t view_due; /* a view refresh is scheduled (UINT64_MAX: none) */
	uint64_t tick_due; /* a tick is scheduled for then (UINT64_MAX: none) */
	kvs_net *t;        /* the driver's context: nodes never move */
	uint32_t i;
	ring_node *ring;     /* with real_ring: the node's Chord core (src/ring) */
	uint64_t ring_due;   /* its tick is scheduled for then (UINT64_MAX: none) */
	uint64_t probe_at;   /* its last ring_probe */
	uint32_t member_seq; /* members: its last change (a join or a crash) */
} kvs_node;

/* Called for every client reply: the client handle given to kvs_client. */
typedef void (*kvs_reply_fn)(void *arg, uint64_t client, const kv_reply *r);

typedef struct {
	kv_config kv;
	uint32_t latency_min_ms, latency_max_ms; /* one-way */
	uint32_t detect_min_ms, detect_max_ms;   /* 0, 0: views change at once */
	/* Run the real Chord core (src/ring) on every node, as the node does: views come from
	 * its successor list and predecessor, lookups are its lookups, joins its joins, and a
	 * crash is found by its own stabilize and check_predecessor (a message to a dead node
	 * comes back as undeliverable after unreach_ms). The detect_* delays are then unused. */
	bool real_ring;
	uint32_t unreach_ms; /* real_ring: a send to a crashed node fails after this */
	uint32_t probe_ms;   /* real_ring: each node probes a random known node this often,
	                      * as the node does (ring_probe); 0: never */
	ring_config ring;    /* real_ring: the cores' settings (bits = kv.bits) */
	/* Member tables (one-hop routing, kv.one_hop_max): a node that joins gets the whole
	 * live membership (as from a push-pull with its contact); every other live node
	 * learns of a join after a delay drawn from join_known_*, and of a crash after one
	 * drawn from crash_known_* (what `sim --member` measured for the first and the last
	 * node to declare a crashed one dead). Off: no member table, routing as before. */
	bool members;
	uint32_t join_known_min_ms, join_known_max_ms;
	uint32_t crash_known_min_ms, crash_known_max_ms;
	uint64_t seed;
	kvs_reply_fn on_reply;
	void *arg;
	/* Optional: every kv message a node sends, before latency (tests watch repair traffic
	 * with it; t->events tells which delivery the sender was handling). */
	void (*on_send)(void *arg, uint32_t from, const kv_msg *m);
	/* Optional: a message for which it answers true is lost on the way (never delivered,
	 * never reported undeliverable): a link that drops some frames, or a replica whose
	 * store takes nothing. */
	bool (*drop)(void *arg, uint32_t from, const kv_msg *m);
	int64_t odd_skew_ms; /* the wall clock of odd-numbered nodes is off by this */
} kvs_params;

struct kvs_net {
	kvs_params p;
	kvs_node **n; /* each allocated alone, so a core's driver context stays put */
	uint32_t count, cap;
	uint32_t *live; /* in-ring nodes sorted by id */
	uint32_t nlive;
	struct kvs_event *heap;
	size_t nh, caph;
	uint64_t seq, now;
	rn_rng rng;
	uint64_t messages, events, msg_bytes;
	uint64_t ring_messages; /* real_ring: Chord messages sent */
	ring_out out;           /* real_ring: one core call's output (calls never nest) */
	bool booting;           /* real_ring: nodes added now wait for kvs_ring_bootstrap */
	bool members_quiet;     /* members: nodes added now are not disseminated (the start:
	                         * kvs_members_bootstrap gives everyone the whole list) */
	uint64_t member_events; /* members: table updates delivered */
	uint64_t lookup_hops, lookups_done; /* real_ring: lookups the kv cores asked for */
};

kvs_net *kvs_new(const kvs_params *p);
void kvs_free(kvs_net *t);
/* A node with a random id (or *id), joined at once. Returns its index. */
uint32_t kvs_add(kvs_net *t, const rn_id *id);
/* real_ring: the nodes added while t->booting was set get their successor lists,
 * predecessors and fingers from the true membership (as `ringnet sim` builds a static
 * ring); nodes added later join through the ring protocol. */
void kvs_ring_bootstrap(kvs_net *t);
/* members: every live node's table becomes the true live membership. */
void kvs_members_bootstrap(kvs_net *t);
/* Crash: the core stops, its store stays. */
void kvs_kill(kvs_net *t, uint32_t i);
/* Restart a crashed node: a new core on the old store. */
void kvs_revive(kvs_net *t, uint32_t i);
/* A client request through node `entry`. */
void kvs_client(kvs_net *t, uint32_t entry, uint64_t client, const kv_request *r);
/* Runs every event and tick due up to `until` (virtual ms). */
void kvs_run(kvs_net *t, uint64_t until);
/* The first R in-ring nodes at or after kid's position; returns how many. */
uint32_t kvs_replicas(const kvs_net *t, const rn_id *kid, uint32_t *out);
/* A random live in-ring node. */
uint32_t kvs_random_live(kvs_net *t);

/* ---- the experiment ---- */

typedef struct {
	uint32_t nodes;
	uint64_t keys;      /* written once each before churn starts */
	double churn;       /* crashes per second and joins per second, each (Poisson) */
	double fail;        /* fraction of nodes crashed at once after loading */
	uint64_t run_ms;    /* virtual time of the churn phase */
	double ops_per_sec; /* client operations during churn: 80% reads, 15% writes, 5% deletes */
	uint32_t value_bytes;
	uint64_t settle_ms; /* after churn: quiet time before the final check */
	kvs_params net;
} kvsim_params;

typedef struct {
	uint32_t nodes, live_nodes;
	uint64_t keys, joins, crashes;
	uint64_t writes, writes_acked, writes_unknown, writes_failed;
	uint64_t reads, reads_ok, reads_not_found, reads_unsure, reads_stale, reads_false_404;
	uint64_t lost;               /* acknowledged writes no live node holds at the end */
	uint64_t lost_explained;     /* of which: each of its R holders crashed within one
	                              * repair interval (the loss replication cannot prevent) */
	uint64_t repair_interval_ms; /* what "within one repair interval" meant */
	uint64_t reads_of_lost;      /* reads of a key whose data was gone (not counted stale) */
	uint64_t under_replicated;   /* keys with fewer than R live copies at the end */
	uint64_t over_replicated;    /* keys with copies outside their R replicas at the end */
	uint64_t repair_bytes;       /* anti-entropy and handoff traffic, whole run */
	uint64_t repair_data_bytes;  /* of which records; the rest is digests and listings */
	uint64_t forced_bytes;       /* what churn forces: records that lost a holder or must
	                              * reach a new one, counted once each */
	double repair_per_node_sec;  /* bytes per live node per second of churn */
	uint64_t messages, events;
	uint64_t ring_messages; /* real_ring: Chord messages (not in messages) */
	/* real_ring, at the end: live nodes not in a ring, or whose successor or predecessor
	 * is not the true one */
	uint32_t ring_unjoined, ring_wrong_succ, ring_wrong_pred;
	uint64_t virtual_ms;
	double wall_ms;
	uint64_t store_bytes; /* records held, all nodes, at the end */
	/* routing of the client requests of the churn phase (kv_stats' route_*, summed) */
	uint64_t client_ops, route_local, route_succ, route_onehop, route_cache, route_lookup;
	uint64_t route_first, route_stale, route_hints, moved, forwarded, entry_lookups;
	uint64_t replica_reads;  /* gets a replica answered itself under a read lease */
	uint64_t cache_reads;    /* gets a node answered from its read cache (cache lease) */
	double lookup_hops;      /* messages one lookup takes (its hops and the answer) */
	double hops_per_request; /* (forwarded + entry_lookups * lookup_hops) / client_ops */
	double stale_rate;       /* route_stale / route_first */
	uint64_t member_events;
} kvsim_result;

void kvsim_params_default(kvsim_params *p);
int kvsim_params_check(const kvsim_params *p, char *err, size_t errlen);
int kvsim_run(const kvsim_params *p, kvsim_result *r);

#endif
