/* member.c — the membership core (see member.h for the protocol and what the driver
 * provides).
 *
 * State: a table indexed by member_addr (incarnation, state, since when); the probe
 * order, a shuffled list of the members alive or suspect, rebuilt each round; the
 * suspects' timers; the gossip queue, a deque of addresses whose current entry is sent
 * (new updates at the front, each moved to the back when sent, dropped once sent
 * retransmit-limit times, so the least sent go first); the probe in flight and the
 * PING_REQs this node relays. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "../lib/rng.h"
#include "member.h"

#define F_TIMER    1u /* in the suspects' list */
#define F_QUEUED   2u /* in the gossip queue */
#define F_ORDER    4u /* in the probe order */
#define PIGGY_MAX  32
#define GQ_BUCKETS 256
#define GQ_NONE    UINT32_MAX
#define TOLD_MAX   8 /* suspects of this node's own probes it keeps telling */

typedef struct {
	uint64_t at; /* when it entered its state */
	uint32_t inc;
	uint8_t state;
	uint8_t flags;
	uint8_t sent; /* gossip transmissions of the current update */
	uint8_t gen;  /* which gossip queue slot is the live one (older ones are stale) */
} entry;

typedef struct {
	member_addr a;
	uint32_t next; /* the slot below in its bucket, or the next free one */
	uint8_t gen;
} gslot;

typedef struct {
	member_addr a;
	uint64_t deadline;
	member_addr first; /* who suspected it first (MEMBER_ADDR_NONE: not said) */
	member_addr last;  /* the newest confirmation's member, told on in gossip */
	uint8_t nconf;     /* distinct members besides first that confirmed it */
	member_addr conf[MEMBER_CONFIRM_MAX];
} suspect;

typedef struct {
	uint64_t mine, theirs; /* the PING's seq, the PING_REQ's */
	member_addr requester, target;
	uint64_t deadline; /* 0: free */
} relay;

struct member_node {
	const member_config *cfg;
	member_driver d;
	rn_rng rng;
	member_addr self;
	uint32_t inc;
	bool leaving;
	entry *e;
	uint32_t count[MEMBER_LEFT + 1]; /* [MEMBER_NONE]: all known */
	member_addr *order;
	uint32_t norder, next;
	suspect *sus;
	size_t nsus, sus_cap;
	/* the gossip queue: gossip_queue slots, each on the stack of the bucket of its
	 * transmission count */
	gslot *gq;
	uint32_t gq_top[GQ_BUCKETS], gq_freel, gq_len;
	unsigned gq_lo, gq_hi; /* no slot below lo, none above hi */
	/* a member this node heard became suspect and probes out of turn (none: NONE) */
	member_addr prio;
	/* the probe in flight */
	member_addr ptarget;
	uint64_t pseq, psent;
	bool packed, pindirect;
	relay relays[MEMBER_RELAYS];
	/* members this node's own probes made suspect: told of it on every gossip round
	 * until they refute or the timeout runs out, so a lost notice costs 200 ms, not
	 * the refutation */
	member_addr told[TOLD_MAX];
	uint64_t told_until[TOLD_MAX];
	uint64_t pull_window; /* PULLs answered since then (a one-second window) */
	unsigned pulls;
	/* a death this node just learned, or a refutation it just made: gossiped at once
	 * (an eager round) rather than at the next tick; eager rounds since eager_window */
	bool eager;
	uint64_t eager_window;
	unsigned eager_rounds;
	uint64_t seq;
	uint64_t next_probe, next_gossip, next_pushpull, wake;
	member_stats st;
};

const char *member_state_name(member_state s)
{
	switch (s) {
	case MEMBER_ALIVE:
		return "alive";
	case MEMBER_SUSPECT:
		return "suspect";
	case MEMBER_DEAD:
		return "dead";
	case MEMBER_LEFT:
		return "left";
	default:
		return "none";
	}
}

void member_config_default(member_config *c, uint32_t max_addr)
{
	c->interval_ms = 1000;
	c->probe_timeout_ms = 500;
	c->indirect_k = 3;
	c->suspicion_ms = 400;
	c->suspicion_max_mult = 4;
	c->suspicion_confirm = 1;
	c->retransmit_mult = 6;
	c->gossip_ms = 200;
	c->gossip_nodes = 3;
	c->eager_per_s = 10;
	c->suspect_probes = 3;
	c->piggyback = 8;
	c->pushpull_ms = 30000;
	c->max_addr = max_addr;
	c->max_members = max_addr;
	c->gossip_queue = 1024;
}

int member_config_check(const member_config *c)
{
	if (c->interval_ms == 0 || c->probe_timeout_ms == 0 ||
	    c->probe_timeout_ms >= c->interval_ms || c->indirect_k > MEMBER_K_MAX ||
	    c->suspicion_ms == 0 || c->suspicion_max_mult == 0 || c->suspicion_max_mult > 100 ||
	    c->suspicion_confirm == 0 || c->suspicion_confirm > MEMBER_CONFIRM_MAX ||
	    c->retransmit_mult == 0 || c->retransmit_mult > 60 || c->gossip_nodes > 64 ||
	    c->eager_per_s > 1000 || c->suspect_probes > 64 || c->piggyback == 0 ||
	    c->piggyback > PIGGY_MAX || c->pushpull_ms == 0 || c->max_addr == 0 ||
	    c->max_addr >= MEMBER_ADDR_NONE || c->max_members == 0 ||
	    c->max_members > c->max_addr || c->gossip_queue == 0 || c->gossip_queue > (1u << 20))
		return RN_EINVAL;
	return 0;
}

static uint32_t live_count(const member_node *n)
{
	return n->count[MEMBER_ALIVE] + n->count[MEMBER_SUSPECT];
}

uint64_t member_suspicion_timeout(const member_node *n)
{
	double l = log10((double)live_count(n));
	return (uint64_t)((double)n->cfg->suspicion_ms * (l > 2.0 ? l : 2.0));
}

/* Confirmations that bring a suspicion down to the minimum: none in a ring too small to
 * have that many other members to confirm (as memberlist). */
static unsigned confirm_k(const member_node *n)
{
	unsigned k = n->cfg->suspicion_confirm;
	return live_count(n) < k + 2 ? 0 : k;
}

/* A suspicion's timeout with c confirmations (Lifeguard): from max_mult times the minimum
 * down to the minimum, by log(c + 1) / log(k + 1). */
static uint64_t sus_timeout(const member_node *n, unsigned c)
{
	uint64_t min = member_suspicion_timeout(n);
	unsigned k = confirm_k(n);
	if (n->cfg->suspicion_max_mult <= 1 || c >= k)
		return min;
	uint64_t max = min * n->cfg->suspicion_max_mult;
	double drop = (double)(max - min) * log((double)c + 1.0) / log((double)k + 1.0);
	uint64_t t = max - (uint64_t)drop;
	return t < min ? min : t;
}

static suspect *sus_find(member_node *n, member_addr a)
{
	if (!(n->e[a].flags & F_TIMER))
		return NULL;
	for (size_t i = 0; i < n->nsus; i++)
		if (n->sus[i].a == a)
			return &n->sus[i];
	return NULL;
}

/* What this node tells of a: for a suspect, who suspects it (the newest confirmation). */
static member_update update_of(member_node *n, member_addr a)
{
	const entry *e = &n->e[a];
	member_update u = {a, e->inc, e->state, false, MEMBER_ADDR_NONE};
	const suspect *s = e->state == MEMBER_SUSPECT ? sus_find(n, a) : NULL;
	if (s && s->last != MEMBER_ADDR_NONE) {
		u.has_by = true;
		u.by = s->last;
	}
	return u;
}

unsigned member_retransmit_limit(const member_node *n)
{
	unsigned l = n->cfg->retransmit_mult * (unsigned)ceil(log10((double)live_count(n) + 1.0));
	return l > 255 ? 255 : l < 1 ? 1 : l;
}

/* ---- gossip queue ---- */

static bool gq_live(const member_node *n, const gslot *s)
{
	const entry *e = &n->e[s->a];
	return (e->flags & F_QUEUED) && e->gen == s->gen;
}

static void gq_put(member_node *n, uint32_t slot, unsigned bucket)
{
	n->gq[slot].next = n->gq_top[bucket];
	n->gq_top[bucket] = slot;
	if (bucket < n->gq_lo)
		n->gq_lo = bucket;
	if (bucket > n->gq_hi)
		n->gq_hi = bucket;
}

/* The slot on top of a bucket, off it; GQ_NONE when empty. */
static uint32_t gq_pop(member_node *n, unsigned bucket)
{
	uint32_t slot = n->gq_top[bucket];
	if (slot != GQ_NONE)
		n->gq_top[bucket] = n->gq[slot].next;
	return slot;
}

static void gq_free(member_node *n, uint32_t slot)
{
	n->gq[slot].next = n->gq_freel;
	n->gq_freel = slot;
	n->gq_len--;
}

/* A change to a: on top of the bucket of updates never sent (an older change to a that
 * is still queued turns stale and is skipped when reached). When every slot is taken,
 * one of the most sent updates goes. */
static void gq_push(member_node *n, member_addr a)
{
	entry *e = &n->e[a];
	e->sent = 0;
	e->gen++;
	if (n->gq_freel == GQ_NONE) {
		while (n->gq_hi > 0 && n->gq_top[n->gq_hi] == GQ_NONE)
			n->gq_hi--;
		uint32_t old = gq_pop(n, n->gq_hi);
		if (old == GQ_NONE)
			return; /* cannot happen: a full queue has a slot in some bucket */
		if (gq_live(n, &n->gq[old]) && n->gq[old].a != a)
			n->e[n->gq[old].a].flags &= (uint8_t)~F_QUEUED;
		gq_free(n, old);
	}
	uint32_t slot = n->gq_freel;
	n->gq_freel = n->gq[slot].next;
	n->gq[slot].a = a;
	n->gq[slot].gen = e->gen;
	n->gq_len++;
	e->flags |= F_QUEUED;
	gq_put(n, slot, 0);
}

/* Takes up to max updates into u, the least sent first and, among those sent as often,
 * the newest (as memberlist's queue orders them); skip is left in the queue. */
static size_t gq_take(member_node *n, member_update *u, size_t max, member_addr skip)
{
	unsigned limit = member_retransmit_limit(n);
	uint32_t taken[PIGGY_MAX + 1], held = GQ_NONE;
	size_t k = 0;
	while (k < max && n->gq_len) {
		while (n->gq_lo < GQ_BUCKETS - 1 && n->gq_top[n->gq_lo] == GQ_NONE)
			n->gq_lo++;
		uint32_t slot = gq_pop(n, n->gq_lo);
		if (slot == GQ_NONE)
			break;
		gslot *s = &n->gq[slot];
		entry *e = &n->e[s->a];
		if (!gq_live(n, s) || e->state == MEMBER_NONE) { /* stale, or dropped since */
			if (gq_live(n, s))
				e->flags &= (uint8_t)~F_QUEUED;
			gq_free(n, slot);
			continue;
		}
		if (s->a == skip) { /* put back after the others are taken */
			s->next = held;
			held = slot;
			continue;
		}
		u[k] = update_of(n, s->a);
		taken[k++] = slot;
		e->sent++;
	}
	for (size_t i = 0; i < k; i++) {
		entry *e = &n->e[n->gq[taken[i]].a];
		if (e->sent >= limit) {
			e->flags &= (uint8_t)~F_QUEUED;
			gq_free(n, taken[i]);
		} else {
			gq_put(n, taken[i], e->sent);
		}
	}
	while (held != GQ_NONE) {
		uint32_t next = n->gq[held].next;
		entry *e = &n->e[n->gq[held].a];
		gq_put(n, held, e->sent);
		held = next;
	}
	return k;
}

/* ---- sending ---- */

static void send_msg(member_node *n, uint8_t type, member_addr to, uint64_t seq, member_addr target)
{
	member_update u[PIGGY_MAX + 1];
	size_t k = 0;
	/* what we think of the addressee when it is not "alive", so it can refute at once */
	if (to < n->cfg->max_addr && n->e[to].state > MEMBER_ALIVE)
		u[k++] = update_of(n, to);
	k += gq_take(n, u + k, n->cfg->piggyback, k ? to : MEMBER_ADDR_NONE);
	if (type == MEMBER_MSG_GOSSIP && k == 0)
		return;
	member_msg m = {.type = type,
	                .to = to,
	                .from = n->self,
	                .seq = seq,
	                .target = target,
	                .updates = u,
	                .nupdates = k};
	n->st.sent[type]++;
	n->st.updates_sent += k;
	n->d.send(n->d.ctx, &m);
}

static void send_table(member_node *n, uint8_t type, member_addr to)
{
	uint32_t total = n->count[MEMBER_NONE];
	member_update *u = malloc((size_t)total * sizeof *u);
	if (!u)
		return; /* the next push-pull tries again */
	size_t k = 0;
	for (member_addr a = 0; a < n->cfg->max_addr && k < total; a++)
		if (n->e[a].state != MEMBER_NONE)
			u[k++] = update_of(n, a);
	member_msg m = {.type = type, .to = to, .from = n->self, .updates = u, .nupdates = k};
	n->st.sent[type]++;
	n->st.updates_sent += k;
	n->d.send(n->d.ctx, &m);
	free(u);
}

/* ---- the table ---- */

static bool probeable(const member_node *n, member_addr a)
{
	uint8_t s = n->e[a].state;
	return a != n->self && (s == MEMBER_ALIVE || s == MEMBER_SUSPECT);
}

static void order_add(member_node *n, member_addr a)
{
	entry *e = &n->e[a];
	if ((e->flags & F_ORDER) || a == n->self)
		return;
	e->flags |= F_ORDER;
	/* at a random place among those not yet probed this round */
	uint32_t at = n->next + (uint32_t)rn_rng_below(&n->rng, n->norder - n->next + 1u);
	n->order[n->norder++] = n->order[at];
	n->order[at] = a;
}

static void order_rebuild(member_node *n)
{
	n->norder = n->next = 0;
	for (member_addr a = 0; a < n->cfg->max_addr; a++) {
		n->e[a].flags &= (uint8_t)~F_ORDER;
		if (probeable(n, a)) {
			n->e[a].flags |= F_ORDER;
			n->order[n->norder++] = a;
		}
	}
	for (uint32_t i = n->norder; i > 1; i--) {
		uint32_t j = (uint32_t)rn_rng_below(&n->rng, i);
		member_addr t = n->order[i - 1];
		n->order[i - 1] = n->order[j];
		n->order[j] = t;
	}
}

/* A random member alive or suspect, other than self and except, or MEMBER_ADDR_NONE. */
static member_addr random_member(member_node *n, member_addr except)
{
	for (int tries = 0; tries < 16 && n->norder; tries++) {
		member_addr a = n->order[rn_rng_below(&n->rng, n->norder)];
		if (a != except && probeable(n, a))
			return a;
	}
	return MEMBER_ADDR_NONE;
}

/* A member taken for dead (not one that left), from a random place in the table. */
static member_addr random_dead(member_node *n)
{
	if (!n->count[MEMBER_DEAD])
		return MEMBER_ADDR_NONE;
	uint32_t max = n->cfg->max_addr, at = (uint32_t)rn_rng_below(&n->rng, max);
	for (uint32_t i = 0; i < max; i++) {
		member_addr a = (at + i) % max;
		if (n->e[a].state == MEMBER_DEAD)
			return a;
	}
	return MEMBER_ADDR_NONE;
}

/* by: for a suspicion, the member that suspects a (MEMBER_ADDR_NONE: not known). */
static void set_state_by(member_node *n, uint64_t now, member_addr a, uint8_t state, uint32_t inc,
                         bool tell, member_addr by)
{
	entry *e = &n->e[a];
	uint8_t old = e->state;
	if (old == MEMBER_NONE)
		n->count[MEMBER_NONE]++; /* known from now on */
	else
		n->count[old]--;
	n->count[state]++;
	if (old != state)
		e->at = now;
	e->state = state;
	e->inc = inc;
	if (state == MEMBER_SUSPECT) {
		e->at = now; /* a newer suspicion starts the timeout again, unconfirmed */
		suspect fresh = {a, now + sus_timeout(n, 0), by, by, 0, {0}};
		suspect *s = sus_find(n, a);
		if (s) {
			*s = fresh;
		} else if (rn_grow((void **)&n->sus, &n->sus_cap, n->nsus + 1, sizeof *n->sus,
		                   16) == 0) {
			e->flags |= F_TIMER;
			n->sus[n->nsus++] = fresh;
		}
	}
	if (state == MEMBER_ALIVE || state == MEMBER_SUSPECT)
		order_add(n, a);
	if (tell)
		gq_push(n, a);
	if (tell && state == MEMBER_DEAD && old != MEMBER_DEAD)
		n->eager = true;
	if (old != state && n->d.changed)
		n->d.changed(n->d.ctx, a, (member_state)old, (member_state)state, inc);
}

static void set_state(member_node *n, uint64_t now, member_addr a, uint8_t state, uint32_t inc,
                      bool tell)
{
	set_state_by(n, now, a, state, inc, tell, MEMBER_ADDR_NONE);
}

/* Another member suspects a, which this node suspects already: a confirmation, when it is
 * new (Lifeguard), shortens the timeout and goes round in gossip. */
static void confirm(member_node *n, uint64_t now, member_addr a, member_addr by)
{
	suspect *s = n->e[a].state == MEMBER_SUSPECT ? sus_find(n, a) : NULL;
	if (!s || by == a || by == s->first || n->cfg->suspicion_max_mult <= 1)
		return;
	if (s->first == MEMBER_ADDR_NONE) { /* the first notice did not say whose it was */
		s->first = s->last = by;
		return;
	}
	if (s->nconf >= confirm_k(n) || s->nconf >= MEMBER_CONFIRM_MAX)
		return;
	for (unsigned i = 0; i < s->nconf; i++)
		if (s->conf[i] == by)
			return;
	s->conf[s->nconf++] = by;
	s->last = by;
	n->st.confirmations++;
	uint64_t due = n->e[a].at + sus_timeout(n, s->nconf);
	if (due < s->deadline)
		s->deadline = due > now ? due : now;
	gq_push(n, a);
}

/* One update from a peer; from_table: it came in a PUSH or PULL (a member merely listed
 * as alive there is no news worth gossiping). */
static void merge(member_node *n, uint64_t now, const member_update *u, bool from_table)
{
	if (u->addr >= n->cfg->max_addr || u->state < MEMBER_ALIVE || u->state > MEMBER_LEFT) {
		n->st.malformed++;
		return;
	}
	if (u->addr == n->self) {
		if (n->leaving)
			return;
		if ((u->state != MEMBER_ALIVE && u->inc >= n->inc) ||
		    (u->state == MEMBER_ALIVE && u->inc > n->inc)) {
			n->inc = u->inc == UINT32_MAX ? u->inc : u->inc + 1;
			n->e[n->self].inc = n->inc;
			gq_push(n, n->self);
			n->st.refuted++;
			n->eager = true;
		} else if (u->state != MEMBER_ALIVE) {
			/* a notice this node refuted already is still going round: send the
			 * refutation round again (from the front of the queue) */
			gq_push(n, n->self);
		}
		return;
	}
	entry *e = &n->e[u->addr];
	member_addr suspecter = u->state == MEMBER_SUSPECT && u->has_by && u->by < n->cfg->max_addr
	                            ? u->by
	                            : MEMBER_ADDR_NONE;
	if (e->state == MEMBER_NONE) {
		if (n->count[MEMBER_NONE] >= n->cfg->max_members) {
			n->st.refused++;
			return;
		}
		set_state_by(n, now, u->addr, u->state, u->inc,
		             !(from_table && u->state == MEMBER_ALIVE), suspecter);
		return;
	}
	bool take;
	switch (u->state) {
	case MEMBER_ALIVE:
		take = u->inc > e->inc;
		break;
	case MEMBER_SUSPECT:
		take = e->state == MEMBER_ALIVE ? u->inc >= e->inc : u->inc > e->inc;
		break;
	default: /* DEAD, LEFT */
		take = (e->state == MEMBER_ALIVE || e->state == MEMBER_SUSPECT) ? u->inc >= e->inc
		                                                                : u->inc > e->inc;
		break;
	}
	if (take && u->state == MEMBER_SUSPECT && e->state == MEMBER_ALIVE && !from_table &&
	    n->cfg->suspect_probes && rn_rng_below(&n->rng, live_count(n)) < n->cfg->suspect_probes)
		n->prio = u->addr; /* one of about suspect_probes members to check it at once */
	if (take)
		set_state_by(n, now, u->addr, u->state, u->inc, true, suspecter);
	else if (u->state == MEMBER_SUSPECT && e->state == MEMBER_SUSPECT && u->inc == e->inc &&
	         suspecter != MEMBER_ADDR_NONE)
		confirm(n, now, u->addr, suspecter);
}

/* A gossip round now, to gossip_nodes random members, when a death was just learned or a
 * refutation just made: each hop of such news then costs a message's latency, not the
 * wait for the next gossip tick (up to gossip_ms), which at 10,000 members is most of the
 * time a verdict takes to reach everyone. Bounded: eager_per_s rounds a second, so that
 * notices from a stranger cannot make this node send more than that. */
static void gossip_eager(member_node *n, uint64_t now)
{
	if (!n->eager)
		return;
	n->eager = false;
	if (!n->cfg->eager_per_s || !n->cfg->gossip_ms)
		return;
	if (now >= n->eager_window + 1000) {
		n->eager_window = now;
		n->eager_rounds = 0;
	}
	if (n->eager_rounds >= n->cfg->eager_per_s)
		return; /* the next tick's round carries it */
	n->eager_rounds++;
	n->st.eager_rounds++;
	for (unsigned i = 0; i < n->cfg->gossip_nodes && n->gq_len; i++) {
		member_addr a = random_member(n, MEMBER_ADDR_NONE);
		if (a != MEMBER_ADDR_NONE)
			send_msg(n, MEMBER_MSG_GOSSIP, a, 0, MEMBER_ADDR_NONE);
	}
}

/* ---- lifecycle ---- */

static void rewake(member_node *n)
{
	uint64_t w = n->next_probe;
	if (n->next_pushpull < w)
		w = n->next_pushpull;
	if (n->ptarget != MEMBER_ADDR_NONE && !n->packed && !n->pindirect &&
	    n->psent + n->cfg->probe_timeout_ms < w)
		w = n->psent + n->cfg->probe_timeout_ms;
	bool telling = false;
	for (unsigned i = 0; i < TOLD_MAX; i++)
		telling |= n->told_until[i] > n->next_gossip;
	if (n->cfg->gossip_ms && (n->gq_len || telling) && n->next_gossip < w)
		w = n->next_gossip;
	for (size_t i = 0; i < n->nsus; i++)
		if (n->sus[i].deadline < w)
			w = n->sus[i].deadline;
	n->wake = w;
}

member_node *member_new(const member_config *cfg, const member_driver *d, member_addr self,
                        uint32_t inc, uint64_t seed, uint64_t now)
{
	if (member_config_check(cfg) < 0 || self >= cfg->max_addr)
		return NULL;
	member_node *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	n->e = calloc(cfg->max_addr, sizeof *n->e);
	n->order = malloc((size_t)cfg->max_addr * sizeof *n->order);
	n->gq = malloc((size_t)cfg->gossip_queue * sizeof *n->gq);
	if (!n->e || !n->order || !n->gq) {
		member_free(n);
		return NULL;
	}
	for (unsigned b = 0; b < GQ_BUCKETS; b++)
		n->gq_top[b] = GQ_NONE;
	for (uint32_t i = 0; i < cfg->gossip_queue; i++)
		n->gq[i].next = i + 1 < cfg->gossip_queue ? i + 1 : GQ_NONE;
	n->gq_freel = 0;
	n->gq_lo = GQ_BUCKETS - 1;
	n->cfg = cfg;
	n->d = *d;
	rn_rng_seed(&n->rng, seed);
	n->self = self;
	n->inc = inc;
	n->ptarget = n->prio = MEMBER_ADDR_NONE;
	set_state(n, now, self, MEMBER_ALIVE, inc, true);
	/* random phases, so that a thousand nodes started together do not probe in step */
	n->next_probe = now + rn_rng_below(&n->rng, cfg->interval_ms);
	n->next_gossip = now + rn_rng_below(&n->rng, cfg->gossip_ms ? cfg->gossip_ms : 1);
	n->next_pushpull = now + rn_rng_below(&n->rng, cfg->pushpull_ms);
	rewake(n);
	return n;
}

void member_free(member_node *n)
{
	if (!n)
		return;
	free(n->e);
	free(n->order);
	free(n->gq);
	free(n->sus);
	free(n);
}

static bool add(member_node *n, uint64_t now, member_addr a)
{
	if (a >= n->cfg->max_addr || a == n->self)
		return false;
	if (n->e[a].state == MEMBER_NONE) {
		if (n->count[MEMBER_NONE] >= n->cfg->max_members) {
			n->st.refused++;
			return false;
		}
		set_state(n, now, a, MEMBER_ALIVE, 0, false);
	}
	return true;
}

void member_add(member_node *n, uint64_t now, member_addr a)
{
	add(n, now, a);
	rewake(n);
}

void member_seed(member_node *n, uint64_t now, member_addr a)
{
	if (add(n, now, a))
		send_table(n, MEMBER_MSG_PUSH, a);
	rewake(n);
}

static relay *relay_slot(member_node *n, uint64_t now)
{
	for (unsigned i = 0; i < MEMBER_RELAYS; i++)
		if (n->relays[i].deadline <= now)
			return &n->relays[i];
	return NULL;
}

static void probe_prio(member_node *n, uint64_t now);

void member_on_msg(member_node *n, uint64_t now, const member_msg *m)
{
	if (m->type < MEMBER_MSG_PING || m->type > MEMBER_MSG_PULL || m->from >= n->cfg->max_addr ||
	    m->from == n->self) {
		n->st.malformed++;
		return;
	}
	n->st.received[m->type]++;
	n->st.updates_received += m->nupdates;
	bool table = m->type == MEMBER_MSG_PUSH || m->type == MEMBER_MSG_PULL;
	for (size_t i = 0; i < m->nupdates; i++)
		merge(n, now, &m->updates[i], table);
	switch (m->type) {
	case MEMBER_MSG_PING:
		if (m->target == n->self) /* a PING meant for an earlier holder of this address
		                           * is not answered */
			send_msg(n, MEMBER_MSG_ACK, m->from, m->seq, n->self);
		break;
	case MEMBER_MSG_ACK:
		if (m->seq == n->pseq && m->target == n->ptarget &&
		    n->ptarget != MEMBER_ADDR_NONE) {
			n->packed = true;
			break;
		}
		for (unsigned i = 0; i < MEMBER_RELAYS; i++) {
			relay *r = &n->relays[i];
			if (r->deadline > now && r->mine == m->seq && r->target == m->target) {
				send_msg(n, MEMBER_MSG_ACK, r->requester, r->theirs, r->target);
				r->deadline = 0;
				break;
			}
		}
		break;
	case MEMBER_MSG_PING_REQ: {
		if (m->target >= n->cfg->max_addr || m->target == n->self || m->target == m->from) {
			n->st.malformed++;
			break;
		}
		relay *r = relay_slot(n, now);
		if (!r) {
			n->st.relays_refused++;
			break;
		}
		*r = (relay){++n->seq, m->seq, m->from, m->target, now + n->cfg->interval_ms};
		send_msg(n, MEMBER_MSG_PING, m->target, r->mine, m->target);
		break;
	}
	case MEMBER_MSG_PUSH:
		/* a whole table for a small message: answered MEMBER_PULLS_PER_S times a
		 * second at most, so that nobody can make this node a bandwidth amplifier */
		if (now >= n->pull_window + 1000) {
			n->pull_window = now;
			n->pulls = 0;
		}
		if (n->pulls >= MEMBER_PULLS_PER_S) {
			n->st.pulls_refused++;
			break;
		}
		n->pulls++;
		send_table(n, MEMBER_MSG_PULL, m->from);
		break;
	default: /* GOSSIP, PULL: the updates were all */
		break;
	}
	probe_prio(n, now);
	gossip_eager(n, now);
	rewake(n);
}

static void probe_start(member_node *n, uint64_t now, member_addr t)
{
	n->ptarget = t;
	n->pseq = ++n->seq;
	n->psent = now;
	n->packed = n->pindirect = false;
	n->st.probes++;
	send_msg(n, MEMBER_MSG_PING, t, n->pseq, t);
}

static void probe_next(member_node *n, uint64_t now)
{
	if (n->ptarget != MEMBER_ADDR_NONE && !n->packed) {
		entry *e = &n->e[n->ptarget];
		if (e->state == MEMBER_SUSPECT) {
			/* this node's own probe failed too: a confirmation (Lifeguard) */
			confirm(n, now, n->ptarget, n->self);
		} else if (e->state == MEMBER_ALIVE) {
			n->st.probes_failed++;
			n->st.suspected++;
			set_state_by(n, now, n->ptarget, MEMBER_SUSPECT, e->inc, true, n->self);
			/* tell it, so that it can refute before anyone's timer runs out */
			send_msg(n, MEMBER_MSG_GOSSIP, n->ptarget, 0, MEMBER_ADDR_NONE);
			unsigned slot = 0;
			for (unsigned i = 1; i < TOLD_MAX; i++)
				if (n->told_until[i] < n->told_until[slot])
					slot = i;
			n->told[slot] = n->ptarget;
			n->told_until[slot] = now + member_suspicion_timeout(n);
		}
	}
	n->ptarget = MEMBER_ADDR_NONE;
	member_addr t = MEMBER_ADDR_NONE;
	if (n->prio != MEMBER_ADDR_NONE && n->prio != n->self &&
	    n->e[n->prio].state == MEMBER_SUSPECT)
		t = n->prio; /* a suspect heard of while the last probe was out: first */
	n->prio = MEMBER_ADDR_NONE;
	for (int pass = 0; pass < 2 && t == MEMBER_ADDR_NONE; pass++) {
		while (n->next < n->norder && t == MEMBER_ADDR_NONE) {
			member_addr a = n->order[n->next++];
			if (probeable(n, a))
				t = a;
		}
		if (t == MEMBER_ADDR_NONE)
			order_rebuild(n);
	}
	if (t != MEMBER_ADDR_NONE)
		probe_start(n, now, t);
}

/* A member this node just heard became suspect, and drew to check (about suspect_probes
 * members do, whatever N): probed now, out of turn, once this node's own probe is done
 * (else first at the next interval). Its failure is a confirmation sooner than the
 * members' turns bring one (about one probe a second reaches any member), which is what
 * lets Lifeguard's timeout shrink for a crashed member; a live one mostly answers. */
static void probe_prio(member_node *n, uint64_t now)
{
	if (n->prio == MEMBER_ADDR_NONE || n->leaving ||
	    (n->ptarget != MEMBER_ADDR_NONE && !n->packed))
		return;
	member_addr t = n->prio;
	n->prio = MEMBER_ADDR_NONE;
	if (t == n->self || n->e[t].state != MEMBER_SUSPECT)
		return;
	n->st.probes_out_of_turn++;
	n->next_probe = now + n->cfg->interval_ms; /* a whole interval for it, as for any */
	probe_start(n, now, t);
}

static void probe_indirect(member_node *n)
{
	n->pindirect = true;
	n->st.probes_indirect++;
	member_addr asked[MEMBER_K_MAX];
	unsigned k = 0;
	for (unsigned tries = 0; k < n->cfg->indirect_k && tries < 4 * n->cfg->indirect_k;
	     tries++) {
		member_addr a = random_member(n, n->ptarget);
		if (a == MEMBER_ADDR_NONE)
			break;
		bool dup = n->e[a].state != MEMBER_ALIVE;
		for (unsigned i = 0; i < k; i++)
			dup |= asked[i] == a;
		if (dup)
			continue;
		asked[k++] = a;
		send_msg(n, MEMBER_MSG_PING_REQ, a, n->pseq, n->ptarget);
	}
}

static void expire_suspects(member_node *n, uint64_t now)
{
	size_t i = 0;
	while (i < n->nsus) {
		if (n->sus[i].deadline > now) {
			i++;
			continue;
		}
		suspect s = n->sus[i];
		entry *e = &n->e[s.a];
		n->sus[i] = n->sus[--n->nsus];
		e->flags &= (uint8_t)~F_TIMER;
		if (e->state != MEMBER_SUSPECT)
			continue;
		uint64_t due = e->at + sus_timeout(n, s.nconf);
		if (now >= due) {
			n->st.declared_dead++;
			set_state(n, now, s.a, MEMBER_DEAD, e->inc, true);
		} else { /* suspected again since, or the timeout grew */
			e->flags |= F_TIMER;
			s.deadline = due;
			n->sus[n->nsus++] = s;
		}
	}
}

static uint32_t pushpull_period(const member_node *n)
{
	/* as memberlist: past 32 members, once more for every doubling */
	uint32_t live = live_count(n), mult = 1;
	while (live > 32u << (mult - 1) && mult < 16)
		mult++;
	return n->cfg->pushpull_ms * mult;
}

void member_tick(member_node *n, uint64_t now)
{
	if (n->ptarget != MEMBER_ADDR_NONE && !n->packed && !n->pindirect &&
	    now >= n->psent + n->cfg->probe_timeout_ms)
		probe_indirect(n);
	if (now >= n->next_probe) {
		n->next_probe += n->cfg->interval_ms;
		if (n->next_probe <= now)
			n->next_probe = now + n->cfg->interval_ms;
		if (!n->leaving)
			probe_next(n, now);
	}
	expire_suspects(n, now);
	if (n->cfg->gossip_ms && now >= n->next_gossip) {
		n->eager = false; /* this round carries it */
		n->next_gossip = now + n->cfg->gossip_ms;
		for (unsigned i = 0; i < n->cfg->gossip_nodes && n->gq_len; i++) {
			member_addr a = random_member(n, MEMBER_ADDR_NONE);
			if (a != MEMBER_ADDR_NONE)
				send_msg(n, MEMBER_MSG_GOSSIP, a, 0, MEMBER_ADDR_NONE);
		}
		for (unsigned i = 0; i < TOLD_MAX; i++)
			if (n->told_until[i] > now && n->e[n->told[i]].state == MEMBER_SUSPECT)
				send_msg(n, MEMBER_MSG_GOSSIP, n->told[i], 0, MEMBER_ADDR_NONE);
	}
	if (now >= n->next_pushpull && !n->leaving) {
		n->next_pushpull = now + pushpull_period(n);
		member_addr a = random_member(n, MEMBER_ADDR_NONE);
		if (a != MEMBER_ADDR_NONE)
			send_table(n, MEMBER_MSG_PUSH, a);
		/* and one member taken for dead (as Serf reconnects): if it lives, it learns of
		 * its death and refutes it, which is how the sides of a healed partition, and
		 * a node restarted without seeds, find each other again */
		a = random_dead(n);
		if (a != MEMBER_ADDR_NONE)
			send_table(n, MEMBER_MSG_PUSH, a);
	} else if (now >= n->next_pushpull) {
		n->next_pushpull = now + pushpull_period(n);
	}
	probe_prio(n, now);
	gossip_eager(n, now);
	rewake(n);
}

uint64_t member_wake_at(const member_node *n)
{
	return n->wake;
}

void member_leave(member_node *n, uint64_t now, unsigned max_notices)
{
	if (n->leaving)
		return;
	n->leaving = true;
	n->inc++;
	set_state(n, now, n->self, MEMBER_LEFT, n->inc, true);
	for (unsigned i = 0; i < max_notices && i < n->norder; i++) {
		member_addr a = random_member(n, MEMBER_ADDR_NONE);
		if (a == MEMBER_ADDR_NONE)
			break;
		send_msg(n, MEMBER_MSG_GOSSIP, a, 0, MEMBER_ADDR_NONE);
		/* every notice carries the LEFT update, however often it has gone already */
		n->e[n->self].sent = 0;
	}
	rewake(n);
}

void member_drop(member_node *n, member_addr a)
{
	if (a >= n->cfg->max_addr || a == n->self || n->e[a].state == MEMBER_NONE)
		return;
	entry *e = &n->e[a];
	n->count[e->state]--;
	n->count[MEMBER_NONE]--;
	if (n->ptarget == a)
		n->ptarget = MEMBER_ADDR_NONE;
	if (n->prio == a)
		n->prio = MEMBER_ADDR_NONE;
	/* the flags stay: the lists they mark skip an entry with no state */
	*e = (entry){.flags = e->flags};
	rewake(n);
}

member_state member_get(const member_node *n, member_addr a, uint32_t *inc, uint64_t *since)
{
	if (a >= n->cfg->max_addr)
		return MEMBER_NONE;
	const entry *e = &n->e[a];
	if (inc)
		*inc = e->inc;
	if (since)
		*since = e->at;
	return (member_state)e->state;
}

uint32_t member_count(const member_node *n, member_state s)
{
	return s <= MEMBER_LEFT ? n->count[s] : 0;
}

uint32_t member_incarnation(const member_node *n)
{
	return n->inc;
}

member_addr member_self(const member_node *n)
{
	return n->self;
}

const member_stats *member_get_stats(const member_node *n)
{
	return &n->st;
}

size_t member_mem(const member_node *n)
{
	return sizeof *n + (size_t)n->cfg->max_addr * (sizeof *n->e + sizeof *n->order) +
	       (size_t)n->cfg->gossip_queue * sizeof *n->gq + n->sus_cap * sizeof *n->sus;
}
