/* member.h — the membership core: SWIM failure detection and gossip (sans-IO).
 *
 * One member_node per process. Every interval it probes one member, taken round-robin
 * from a list it shuffles each round: a PING that must be ACKed within probe_timeout_ms;
 * if not, PING_REQs ask k other members to probe it on its behalf, and their ACKs are
 * relayed back. A member that no probe reached before the next interval becomes suspect;
 * a suspect that has not refuted within the suspicion timeout (which grows with log10 of
 * the members known, and starts longer and shrinks as other members confirm the
 * suspicion: Lifeguard) is declared dead. About suspect_probes members that hear of a
 * fresh suspicion probe the suspect at once, so that a crashed member is confirmed within
 * a probe period. A member refutes a suspicion or death notice
 * about itself by raising its incarnation number: a newer incarnation beats any older
 * notice. Changes (alive, suspect, dead, left) ride on every message as gossip, each
 * retransmitted about retransmit_mult * log10(N) times; while any is pending the node
 * also sends it to gossip_nodes random members every gossip_ms (as HashiCorp
 * memberlist does), and a death it learns or a refutation it makes at once. Every pushpull_ms a
 * node swaps its whole table with a random member, which heals what gossip missed and lets a new
 * node learn everyone, and pushes it to one member it takes for dead: a live one refutes, so a
 * healed partition or a restarted node comes back by itself. (Past 32 members the period grows, as
 * memberlist's does: once more for every doubling.)
 *
 * Members are named by a member_addr, a handle below cfg.max_addr that the driver maps
 * to a transport address (the node's address book, the simulator's node index). The
 * table is indexed by it, so it is bounded by max_addr, and by max_members entries.
 *
 * ---- Provided by the driver (member_driver) ----
 * - send: deliver m to m->to (best effort: loss is a missed ACK, no notice needed).
 *   m->updates is valid only during the call: encode or copy it before returning.
 * - changed: a member's state changed (to alive, suspect, dead or left); the node tells
 *   the ring to forget a dead member. It must not call back into this core: queue the
 *   work and do it once the core returns (the core is not re-entrant).
 * - time: every call takes `now`, milliseconds on a clock that does not jump.
 * - ticks: call member_tick no later than member_wake_at().
 * - randomness: a seed at creation; the core's generator lives in its state. */
#ifndef RN_MEMBER_H
#define RN_MEMBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint32_t member_addr;
#define MEMBER_ADDR_NONE   UINT32_MAX
#define MEMBER_K_MAX       8  /* indirect probers at most */
#define MEMBER_RELAYS      64 /* PING_REQs this node relays at once; more are refused */
#define MEMBER_PULLS_PER_S 20 /* PUSHes answered with the whole table, per second */
#define MEMBER_CONFIRM_MAX 8  /* confirmations of a suspicion counted at most */

typedef enum {
	MEMBER_NONE = 0, /* not known */
	MEMBER_ALIVE,
	MEMBER_SUSPECT,
	MEMBER_DEAD,
	MEMBER_LEFT,
} member_state;

const char *member_state_name(member_state s); /* "alive", "suspect", "dead", "left" */

typedef struct {
	uint32_t interval_ms;      /* one probe per interval (1000) */
	uint32_t probe_timeout_ms; /* direct probe: then the indirect ones (500) */
	unsigned indirect_k;       /* members asked to probe indirectly (3) */
	uint32_t suspicion_ms;     /* suspicion timeout = suspicion_ms * max(2, log10 N) (400) */
	/* Lifeguard's dynamic suspicion (off when suspicion_max_mult <= 1): a suspicion starts
	 * at suspicion_max_mult times that timeout and shrinks, on a log scale, with each
	 * independent confirmation (a suspect notice from another member), down to the
	 * timeout above after suspicion_confirm of them. A live member wrongly suspected is
	 * confirmed by few (the others reach it), so it keeps the long timeout to refute. */
	unsigned suspicion_max_mult; /* (4; 1: off) */
	unsigned suspicion_confirm;  /* K, 1..MEMBER_CONFIRM_MAX (1) */
	unsigned retransmit_mult;    /* each update is sent mult * ceil(log10(N + 1)) times (6) */
	uint32_t gossip_ms;    /* pending updates go out this often (200; 0: only piggyback) */
	unsigned gossip_nodes; /* ... to this many random members (3) */
	/* a death this node just learned (declared or heard) and a refutation it just made
	 * go out at once, to gossip_nodes members, rather than at the next gossip round;
	 * this many such eager rounds a second at most (10; 0: off) */
	unsigned eager_per_s;
	/* a member that hears of a fresh suspicion probes the suspect at once (out of turn)
	 * with probability suspect_probes / N, so about this many members check each one
	 * whatever N (3; 0: off): their failed probes are the confirmations Lifeguard counts */
	unsigned suspect_probes;
	unsigned piggyback;    /* updates on one message at most (8) */
	uint32_t pushpull_ms;  /* full table exchange with a random member (30000) */
	uint32_t max_addr;     /* handles are below this (the table's size) */
	uint32_t max_members;  /* entries at most, self included (max_addr) */
	uint32_t gossip_queue; /* updates waiting for retransmission at most (1024) */
} member_config;

void member_config_default(member_config *c, uint32_t max_addr);
/* 0, or a negative RN_E* code when a field is out of range. */
int member_config_check(const member_config *c);

typedef enum {
	MEMBER_MSG_PING = 1, /* seq; target = the addressee: the ACK names it */
	MEMBER_MSG_ACK,      /* seq of the PING (or PING_REQ) answered; target = who answered */
	MEMBER_MSG_PING_REQ, /* seq; target = the member to probe for the sender */
	MEMBER_MSG_GOSSIP,   /* updates only */
	MEMBER_MSG_PUSH,     /* the sender's whole table; the addressee answers with PULL */
	MEMBER_MSG_PULL,     /* the answer to a PUSH */
} member_msg_type;

typedef struct {
	member_addr addr;
	uint32_t inc;
	uint8_t state;  /* member_state */
	bool has_by;    /* SUSPECT: the notice names who suspects it */
	member_addr by; /* ... that member (Lifeguard counts distinct ones as confirmations) */
} member_update;

typedef struct {
	uint8_t type; /* member_msg_type */
	member_addr to, from;
	uint64_t seq;
	member_addr target;
	const member_update *updates; /* gossip, or the table (PUSH, PULL) */
	size_t nupdates;
} member_msg;

typedef struct {
	void (*send)(void *ctx, const member_msg *m);
	void (*changed)(void *ctx, member_addr a, member_state from, member_state to, uint32_t inc);
	void *ctx;
} member_driver;

/* Counters, for /metrics and the simulator. */
typedef struct {
	uint64_t sent[MEMBER_MSG_PULL + 1], received[MEMBER_MSG_PULL + 1];
	uint64_t updates_sent, updates_received;
	uint64_t probes, probes_indirect, probes_failed; /* failed: the target became suspect */
	uint64_t suspected, declared_dead;               /* by this node's own timers */
	uint64_t refuted;                                /* notices about itself it refuted */
	uint64_t confirmations;      /* distinct suspecters heard of a suspect (Lifeguard) */
	uint64_t eager_rounds;       /* gossip rounds sent at once for a death or a refutation */
	uint64_t probes_out_of_turn; /* probes of a suspect heard of (suspect_probes) */
	uint64_t refused;            /* members not learned: table full, or addr out of range */
	uint64_t malformed;          /* messages with a field out of range, dropped */
	uint64_t relays_refused;
	uint64_t pulls_refused; /* PUSHes past MEMBER_PULLS_PER_S, not answered */
} member_stats;

typedef struct member_node member_node;

/* A node at self with incarnation inc (a restarted process should start above its last
 * one, e.g. from the wall clock; a lower one still works: it refutes its old death). cfg
 * is borrowed and must outlive the node. NULL when out of memory or self >= max_addr. */
member_node *member_new(const member_config *cfg, const member_driver *d, member_addr self,
                        uint32_t inc, uint64_t seed, uint64_t now);
void member_free(member_node *n);

/* A member known from elsewhere (the ring's peers, a static bootstrap): taken as alive
 * (incarnation 0) if unknown; no message is sent. */
void member_add(member_node *n, uint64_t now, member_addr a);
/* A member to start from (a join peer): member_add, and asked for its table at once. */
void member_seed(member_node *n, uint64_t now, member_addr a);
/* Handle one message addressed to this node. */
void member_on_msg(member_node *n, uint64_t now, const member_msg *m);
/* Periodic work that is due. */
void member_tick(member_node *n, uint64_t now);
uint64_t member_wake_at(const member_node *n);
/* Leave gracefully: a LEFT notice to every alive member (up to max_notices of them, at
 * random), and gossip of it from then on. */
void member_leave(member_node *n, uint64_t now, unsigned max_notices);

/* Forget a entirely (the driver is about to reuse its handle for another address). */
void member_drop(member_node *n, member_addr a);

/* What the node knows of a. MEMBER_NONE when nothing; since: ms of now when it entered
 * that state. */
member_state member_get(const member_node *n, member_addr a, uint32_t *inc, uint64_t *since);
/* Members in state s (MEMBER_NONE: all known, self included). */
uint32_t member_count(const member_node *n, member_state s);
uint32_t member_incarnation(const member_node *n);
member_addr member_self(const member_node *n);
const member_stats *member_get_stats(const member_node *n);
/* The suspicion timeout now, in ms (it depends on the members known). */
uint64_t member_suspicion_timeout(const member_node *n);
/* How often an update is sent now: retransmit_mult * ceil(log10(N + 1)). */
unsigned member_retransmit_limit(const member_node *n);
size_t member_mem(const member_node *n); /* bytes this node owns */

#endif
