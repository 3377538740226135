/* drive.c — feeding the cores. Node i has ring_addr i. Every message a core emits
 * becomes one DELIVER event after a random latency; a message to a dead node comes back to
 * its sender as an UNREACHABLE notice after the connect timeout, which is the driver
 * contract of ring.h. Each node has at most one live TICK event (tick_at[i]); earlier
 * wake-ups push a new one and the stale one is skipped when it pops. The workloads'
 * events are handed to their files. See sim_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "sim_internal.h"

static int drain(sim *s, uint32_t from)
{
	ring_out *o = &s->out;
	for (size_t k = 0; k < o->nmsgs; k++) {
		ring_msg *m = &o->msgs[k]; /* the output is reset before the next step */
		if (m->npeers) {
			ring_peer *copy = malloc(m->npeers * sizeof *copy);
			if (!copy)
				return RN_ENOMEM;
			memcpy(copy, m->peers, m->npeers * sizeof *copy);
			m->peers = copy;
		} else {
			m->peers = NULL;
		}
		s->r->messages++;
		uint64_t t;
		uint32_t kind;
		if (m->to < s->n && node_alive(s, m->to)) {
			t = s->now + s->p->latency_min_ms +
			    rn_rng_below_lim(&s->rng, s->lat_span, s->lat_limit);
			kind = EV_DELIVER;
		} else {
			t = s->now + CONNECT_TIMEOUT_MS;
			kind = EV_UNREACH;
		}
		int rc = push_msg(s, t, kind, from, m);
		if (rc < 0) {
			free((void *)m->peers);
			return rc;
		}
	}
	for (size_t k = 0; k < o->nevents; k++) {
		const ring_event *e = &o->events[k];
		if (e->type == RING_EV_LOOKUP_DONE)
			lookup_done(s, from, e);
		else if (e->type == RING_EV_JOINED)
			node_in_ring(s, from);
	}
	/* a deadline already past (a static node's timers start at 0) is due now: the queue
	 * files it under now, and tick_at must say the same, or the tick looks stale when it
	 * pops, is skipped, and the node never ticks again */
	uint64_t wake = o->wake_at > s->now ? o->wake_at : s->now;
	if (s->maintain && wake < s->tick_at[from]) {
		s->tick_at[from] = wake;
		int rc = push(s, wake, EV_TICK, from);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int step_node(sim *s, uint32_t i, int (*fn)(sim *, uint32_t, void *), void *arg)
{
	ring_out_reset(&s->out);
	int rc = fn(s, i, arg);
	if (rc < 0)
		return rc;
	if (s->out.dropped)
		fprintf(stderr, "sim: node %u: core output overflow\n", i);
	return drain(s, i);
}

static int do_msg(sim *s, uint32_t i, void *arg)
{
	ring_on_msg(NODE(s, i), s->now, arg, &s->out);
	return 0;
}
static int do_unreach(sim *s, uint32_t i, void *arg)
{
	ring_on_unreachable(NODE(s, i), s->now, arg, &s->out);
	return 0;
}
static int do_tick(sim *s, uint32_t i, void *arg)
{
	(void)arg;
	ring_tick(NODE(s, i), s->now, &s->out);
	/* a round of maintenance is a tick that asked the successor for its predecessor */
	for (size_t k = 0; k < s->out.nmsgs; k++)
		if (s->out.msgs[k].type == RING_MSG_GET_PRED) {
			s->rounds[i]++;
			break;
		}
	return 0;
}
int do_create(sim *s, uint32_t i, void *arg)
{
	(void)arg;
	ring_create(NODE(s, i), s->now, &s->out);
	node_in_ring(s, i);
	return 0;
}
int do_join(sim *s, uint32_t i, void *arg)
{
	ring_join(NODE(s, i), s->now, *(ring_addr *)arg, &s->out);
	return 0;
}

/* The node it meant to join through is dead, and the core would ask it again: ask
 * another node of the ring, as a real node goes down its list of addresses. */
static int rejoin(sim *s, uint32_t i)
{
	ring_addr via = random_joined(s);
	if (via == UINT32_MAX || via == i)
		return 0;
	return step_node(s, i, do_join, &via);
}

static int handle(sim *s, popped *e)
{
	switch (e->kind) {
	case EV_DELIVER: {
		ring_msg *m = &e->msg.m;
		int rc = 0;
		if (node_alive(s, m->to)) {
			rc = step_node(s, m->to, do_msg, m);
		} else if (s->alive[e->msg.sender]) {
			/* died while the message was on the wire: the sender learns it the hard way
			 */
			return push_msg(s, s->now + CONNECT_TIMEOUT_MS, EV_UNREACH, e->msg.sender,
			                m);
		}
		free((void *)m->peers);
		return rc;
	}
	case EV_UNREACH: {
		ring_msg *m = &e->msg.m;
		int rc = 0;
		uint32_t from = e->msg.sender;
		s->r->timeouts++;
		if (m->type == RING_MSG_FIND_SUCC && (rc = lookup_met_dead(s, m)) < 0)
			return rc;
		if (s->alive[from])
			rc = step_node(s, from, do_unreach, m);
		if (rc == 0 && s->alive[from] && m->type == RING_MSG_FIND_SUCC &&
		    m->purpose == RING_FOR_JOIN && m->origin.addr == from &&
		    !ring_joined(NODE(s, from)))
			rc = rejoin(s, from);
		free((void *)m->peers);
		return rc;
	}
	case EV_TICK:
		if (!s->alive[e->ref] || s->tick_at[e->ref] != e->t || !s->maintain)
			return 0;
		s->tick_at[e->ref] = UINT64_MAX;
		return step_node(s, e->ref, do_tick, NULL);
	case EV_ISSUE:
		return on_issue(s, e);
	case EV_JOIN:
		return on_join(s, e);
	case EV_CHURN_JOIN:
		return on_churn_join(s, e);
	case EV_CHURN_FAIL:
		return on_churn_fail(s, e);
	default:
		return 0;
	}
}

/* Publishes how far the run is (once per CHECK_EVERY_MS of virtual time). */
static void tell_progress(sim *s)
{
	sim_progress *pr = s->p->progress;
	if (!pr)
		return;
	if (s->lookups_on) {
		uint64_t done = s->lookups_done + s->abandoned;
		atomic_fetch_add(&pr->done, done - s->progress_told);
		s->progress_told = done;
	} else {
		atomic_store(&pr->done, s->njoined);
	}
}

int run_until(sim *s, bool (*stop)(sim *), uint64_t deadline)
{
	uint64_t next_check = s->now + CHECK_EVERY_MS;
	popped e;
	while (!stop(s) && pop(s, &e)) {
		if (e.t > deadline) {
			unpop(s, &e);
			return 0;
		}
		s->now = e.t;
		s->r->events++;
		int rc = handle(s, &e);
		if (rc < 0)
			return rc;
		if (s->now >= next_check) {
			next_check = s->now + CHECK_EVERY_MS;
			tell_progress(s);
			if (stop(s))
				break;
		}
	}
	return 0;
}

bool never(sim *s)
{
	(void)s;
	return false;
}
