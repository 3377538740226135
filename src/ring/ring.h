/* ring.h — the Chord core: one node's ring state, maintenance and lookup.
 *
 * Sans-IO: the core never touches a socket, clock, file or random generator. Its driver
 * (src/net for real TCP peers, src/sim for the simulator) hands it the time, incoming
 * messages and "that message could not be delivered" notices; the core answers by
 * filling a ring_out with messages to send, events for the application, and the time at
 * which it wants ring_tick called next.
 *
 * Peers are named by a ring_addr, a 32-bit handle the driver maps to a transport address
 * (a TCP endpoint, or a node index in the simulator). Every message a driver accepts
 * from ring_out must either be delivered to its destination or be handed back through
 * ring_on_unreachable; that is how the core learns of dead peers without timers on
 * every hop.
 *
 * Lookups are recursive: a FIND_SUCC is forwarded hop by hop (to the successor for the
 * simple lookup, to the closest preceding finger for the scalable one) and the node that
 * finds the key between itself and its successor answers the origin directly. */
#ifndef RN_RING_H
#define RN_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/id.h"

typedef uint32_t ring_addr;
#define RING_ADDR_NONE  UINT32_MAX
#define RING_MAX_SUCC   32
#define RING_OUT_MSGS   16
#define RING_OUT_EVENTS 8

typedef struct {
	rn_id id;
	ring_addr addr; /* RING_ADDR_NONE: no peer */
} ring_peer;

typedef enum { RING_LOOKUP_SIMPLE = 0, RING_LOOKUP_SCALABLE = 1 } ring_lookup_mode;

typedef struct {
	unsigned bits;       /* m: ids live on a 2^m ring, 1..160 */
	unsigned successors; /* r: length of the successor list, 1..RING_MAX_SUCC */
	ring_lookup_mode lookup;
	uint32_t stabilize_ms;
	uint32_t fix_fingers_ms;
	uint32_t check_pred_ms;
	uint32_t rpc_timeout_ms; /* a successor or predecessor silent this long is dead */
	uint32_t max_hops;       /* a lookup forwarded this often is answered as failed */
	unsigned finger_slots;   /* finger runs stored inside the node before spilling to the
	                          * heap: about log2(N) + 4 keeps a node in one allocation */
} ring_config;

void ring_config_default(ring_config *c);
/* 0, or a negative RN_E* code when a field is out of range. */
int ring_config_check(const ring_config *c);

typedef enum {
	RING_MSG_FIND_SUCC = 1, /* key, origin, req, hops, purpose: forwarded toward the key */
	RING_MSG_FOUND,         /* key, req, hops, result = successor(key); ok = 0 when failed */
	RING_MSG_GET_PRED,      /* stabilize: "who is your predecessor, and your successors?" */
	RING_MSG_PRED_REPLY,    /* result = predecessor (addr NONE if none), peers = successors */
	RING_MSG_NOTIFY,        /* "I think I am your predecessor" */
	RING_MSG_PING,          /* check_predecessor */
	RING_MSG_PONG,
	RING_MSG_LEAVE, /* graceful departure: result = the leaver's pred or succ */
} ring_msg_type;

/* Why the origin of a lookup asked: the answer goes to the application or to the ring. */
typedef enum {
	RING_FOR_USER = 0,
	RING_FOR_JOIN = 1,
	RING_FOR_FINGER = 2,
	RING_FOR_MERGE = 3, /* ring_probe: is our successor the one another ring would give? */
} ring_purpose;

typedef struct {
	uint8_t type;    /* ring_msg_type */
	uint8_t purpose; /* ring_purpose, for FIND_SUCC / FOUND */
	uint8_t finger;  /* finger index, for RING_FOR_FINGER */
	uint8_t ok;      /* FOUND: 1 when result is the key's successor */
	uint8_t npeers;  /* PRED_REPLY: entries in peers */
	uint32_t hops;
	ring_addr to;     /* destination */
	ring_peer from;   /* sender */
	ring_peer origin; /* FIND_SUCC / FOUND: the node that started the lookup */
	rn_id key;
	uint64_t req;
	ring_peer result;
	const ring_peer *peers; /* valid until the sender's ring_out is reset */
} ring_msg;

typedef enum {
	RING_EV_LOOKUP_DONE = 1, /* req, key, result, hops, ok */
	RING_EV_JOINED,          /* the node has a successor in a ring */
	RING_EV_ID_TAKEN,        /* join found another node with our id */
	RING_EV_PRED_CHANGED,    /* result = new predecessor (addr NONE: none); keys may move */
	RING_EV_SUCC_CHANGED,    /* result = new successor */
} ring_event_type;

typedef struct {
	uint8_t type;
	uint8_t ok;
	uint32_t hops;
	uint64_t req;
	rn_id key;
	ring_peer result;
} ring_event;

typedef struct {
	ring_msg msgs[RING_OUT_MSGS];
	size_t nmsgs;
	ring_event events[RING_OUT_EVENTS];
	size_t nevents;
	ring_peer peers[RING_OUT_MSGS][RING_MAX_SUCC]; /* storage for msgs[i].peers */
	/* call ring_tick no later than this. UINT64_MAX: nothing new, keep the timer you
	 * have (forwarding a lookup changes no deadline, and skipping that bookkeeping on
	 * the hot path is measurable); after ring_tick it is always the next due time. */
	uint64_t wake_at;
	uint32_t dropped; /* messages or events that did not fit (a core bug if ever > 0) */
} ring_out;

void ring_out_reset(ring_out *o);

typedef struct ring_node ring_node;

/* A node with the given id and own address, alone (not yet in a ring). cfg is borrowed
 * and must outlive the node (a simulator shares one config among a million nodes). */
ring_node *ring_node_new(const ring_config *cfg, const rn_id *id, ring_addr self);
void ring_node_free(ring_node *n);
/* The same, placed in memory the caller owns (the simulator keeps a million nodes in
 * one array): ring_node_size bytes, suitably aligned for any object. */
size_t ring_node_size(const ring_config *cfg);
ring_node *ring_node_init(void *mem, const ring_config *cfg, const rn_id *id, ring_addr self);
void ring_node_fini(ring_node *n);
/* A hint: the node is about to route key (NULL: something else), so start loading the
 * memory that step reads. Does nothing observable. */
void ring_prefetch(const ring_node *n, const rn_id *key);
size_t ring_node_mem(const ring_node *n); /* bytes this node owns, for memory accounting */

/* Start a new ring of one. */
void ring_create(ring_node *n, uint64_t now, ring_out *out);
/* Join the ring that the peer at addr belongs to. */
void ring_join(ring_node *n, uint64_t now, ring_addr bootstrap, ring_out *out);
/* Leave gracefully: tell predecessor and successor about each other. */
void ring_leave(ring_node *n, uint64_t now, ring_out *out);

/* Handle one message addressed to this node. */
void ring_on_msg(ring_node *n, uint64_t now, const ring_msg *m, ring_out *out);
/* A message this node sent could not be delivered: its destination is taken as dead. */
void ring_on_unreachable(ring_node *n, uint64_t now, const ring_msg *m, ring_out *out);
/* The membership service declared the peer at addr dead (or left): drop it from the
 * successor list, the predecessor and the finger table at once, as if a message to it
 * had come back undeliverable. The self address and RING_ADDR_NONE are ignored. */
void ring_forget(ring_node *n, uint64_t now, ring_addr addr, ring_out *out);
/* Periodic work that is due: stabilize, fix_fingers, check_predecessor, timeouts. */
void ring_tick(ring_node *n, uint64_t now, ring_out *out);

/* Ask the peer at addr, which may belong to another ring (after a partition healed, say),
 * for the successor of our own id. An answer between us and our successor becomes our
 * successor (RING_EV_SUCC_CHANGED), and stabilize and notify then zip the two rings
 * together; a stabilize alone never merges two rings that each closed on themselves.
 * The driver calls it now and then with a peer it knows of outside its successor list.
 * An unreachable addr is simply forgotten. */
void ring_probe(ring_node *n, uint64_t now, ring_addr addr, ring_out *out);
/* Start a lookup of key; the answer arrives as RING_EV_LOOKUP_DONE with the same req. */
void ring_lookup(ring_node *n, uint64_t now, const rn_id *key, uint64_t req, ring_out *out);

/* Accessors. */
const rn_id *ring_self_id(const ring_node *n);
ring_addr ring_self_addr(const ring_node *n);
bool ring_joined(const ring_node *n);
ring_peer ring_successor(const ring_node *n);
ring_peer ring_predecessor(const ring_node *n);
/* Copies up to max successors; returns how many. */
size_t ring_successors(const ring_node *n, ring_peer *outp, size_t max);
/* finger[i] for i in 0..bits-1 (addr NONE when unknown). */
ring_peer ring_finger(const ring_node *n, unsigned i);
/* Number of distinct finger runs stored (the finger table is kept run-length encoded). */
size_t ring_finger_runs(const ring_node *n);
/* The id where finger i starts: self + 2^(160 - bits + i). */
void ring_finger_start(const ring_node *n, unsigned i, rn_id *out);

/* The first finger index after i whose start lies outside (self, r]: when r is the
 * successor of finger i's start, fingers i .. span-1 all resolve to r. */
unsigned ring_finger_span(const ring_node *n, unsigned i, const rn_id *r);

/* Direct state setting, for drivers that build a ring from outside (the simulator's
 * static bootstrap, tests). fingers [lo, hi) are set to p. */
void ring_set_successors(ring_node *n, const ring_peer *succ, size_t count);
void ring_set_predecessor(ring_node *n, const ring_peer *p);
void ring_set_fingers(ring_node *n, unsigned lo, unsigned hi, const ring_peer *p);

/* Sorts peers by id, ties by address (a total order: every sort gives the same array).
 * Several times faster than qsort on large arrays of uniform ids. 0 or RN_ENOMEM. */
int ring_peers_sort(ring_peer *a, size_t n);

#endif
