/* test_member.c — the membership core under an event-heap network, against an oracle.
 *
 * The network: every message gets a random latency (so messages overtake each other),
 * is lost with probability `loss`, and is dropped when its ends are on different sides
 * of a partition or its addressee has crashed. The oracle is the truth the test keeps:
 * which nodes run, and which side each is on. Each check scans every node's view of
 * every other node and compares it with that truth. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/rng.h"
#include "member/member.h"

#define MAXN 64

typedef struct {
	uint64_t at, order;
	member_msg m;
	member_update *u;
} event;

typedef struct {
	member_config cfg;
	member_node *node[MAXN];
	bool up[MAXN];
	int side[MAXN];
	bool partitioned;
	int n;
	double loss;
	rn_rng rng;
	uint64_t now, order;
	event *heap;
	size_t nheap, cap;
	/* a node declared dead while it ran and was reachable from the one declaring it */
	uint64_t false_deaths;
	uint64_t delivered;
} net;

static void heap_push(net *t, event e)
{
	if (t->nheap == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 1024;
		t->heap = realloc(t->heap, t->cap * sizeof *t->heap);
		assert_non_null(t->heap);
	}
	size_t i = t->nheap++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		event *q = &t->heap[p];
		if (q->at < e.at || (q->at == e.at && q->order < e.order))
			break;
		t->heap[i] = *q;
		i = p;
	}
	t->heap[i] = e;
}

static event heap_pop(net *t)
{
	event top = t->heap[0], last = t->heap[--t->nheap];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= t->nheap)
			break;
		if (c + 1 < t->nheap && (t->heap[c + 1].at < t->heap[c].at ||
		                         (t->heap[c + 1].at == t->heap[c].at &&
		                          t->heap[c + 1].order < t->heap[c].order)))
			c++;
		if (last.at < t->heap[c].at ||
		    (last.at == t->heap[c].at && last.order < t->heap[c].order))
			break;
		t->heap[i] = t->heap[c];
		i = c;
	}
	if (t->nheap)
		t->heap[i] = last;
	return top;
}

static bool reachable(const net *t, int a, int b)
{
	return !t->partitioned || t->side[a] == t->side[b];
}

static void on_send(void *ctx, const member_msg *m)
{
	net *t = ctx;
	assert_true(m->to < (member_addr)t->n);
	assert_true(m->nupdates <= (size_t)t->n);
	if (rn_rng_unit(&t->rng) < t->loss)
		return;
	event e = {.at = t->now + 5 + rn_rng_below(&t->rng, 36), .order = t->order++, .m = *m};
	e.u = malloc((m->nupdates + 1) * sizeof *e.u);
	assert_non_null(e.u);
	memcpy(e.u, m->updates, m->nupdates * sizeof *e.u);
	e.m.updates = e.u;
	heap_push(t, e);
}

static int cur; /* the node whose core is running, for on_changed */

static void on_changed(void *ctx, member_addr a, member_state from, member_state to, uint32_t inc)
{
	net *t = ctx;
	(void)from;
	(void)inc;
	if (to == MEMBER_DEAD && t->up[a] && reachable(t, cur, (int)a))
		t->false_deaths++;
}

/* The settings a test's network runs: 0 the defaults (Lifeguard, eager gossip, out-of-turn
 * probes of suspects); 1 plain SWIM as before them (a fixed suspicion timeout, gossip only
 * on the 200 ms rounds, probes only in turn). */
static int variant;

static net *net_new(int n, double loss, uint64_t seed)
{
	net *t = calloc(1, sizeof *t);
	assert_non_null(t);
	member_config_default(&t->cfg, MAXN);
	t->cfg.pushpull_ms = 10000;
	if (variant == 1) {
		t->cfg.suspicion_max_mult = 1;
		t->cfg.eager_per_s = 0;
		t->cfg.suspect_probes = 0;
	}
	assert_int_equal(member_config_check(&t->cfg), 0);
	t->n = n;
	t->loss = loss;
	rn_rng_seed(&t->rng, seed);
	return t;
}

static void start(net *t, int i, uint32_t inc)
{
	member_driver d = {on_send, on_changed, t};
	member_free(t->node[i]);
	t->node[i] = member_new(&t->cfg, &d, (member_addr)i, inc, rn_rng_next(&t->rng), t->now);
	assert_non_null(t->node[i]);
	t->up[i] = true;
	cur = i;
	if (i != 0)
		member_seed(t->node[i], t->now, 0);
}

static void net_free(net *t)
{
	for (int i = 0; i < t->n; i++)
		member_free(t->node[i]);
	for (size_t i = 0; i < t->nheap; i++)
		free(t->heap[i].u);
	free(t->heap);
	free(t);
}

/* Runs the network for ms of virtual time. */
static void run(net *t, uint64_t ms)
{
	uint64_t end = t->now + ms;
	for (;;) {
		uint64_t next = end;
		int who = -1;
		for (int i = 0; i < t->n; i++)
			if (t->up[i] && member_wake_at(t->node[i]) < next) {
				next = member_wake_at(t->node[i]);
				who = i;
			}
		if (t->nheap && t->heap[0].at <= next) {
			event e = heap_pop(t);
			t->now = e.at;
			int to = (int)e.m.to, from = (int)e.m.from;
			if (t->up[to] && reachable(t, from, to)) {
				cur = to;
				t->delivered++;
				member_on_msg(t->node[to], t->now, &e.m);
			}
			free(e.u);
			continue;
		}
		if (who < 0)
			break;
		if (next > t->now) /* a wake-up already due is due now, not in the past */
			t->now = next;
		cur = who;
		member_tick(t->node[who], t->now);
	}
	t->now = end;
}

static member_state view(const net *t, int i, int j)
{
	return member_get(t->node[i], (member_addr)j, NULL, NULL);
}

/* The oracle: every running node sees every running node it can reach as alive, and
 * every crashed node as dead (and, with check_sides, every node across the partition
 * as dead). Returns how many (viewer, member) pairs disagree. */
static int disagreements(const net *t, bool check_sides)
{
	int bad = 0;
	for (int i = 0; i < t->n; i++) {
		if (!t->up[i])
			continue;
		for (int j = 0; j < t->n; j++) {
			if (i == j)
				continue;
			member_state want =
			    t->up[j] && reachable(t, i, j) ? MEMBER_ALIVE : MEMBER_DEAD;
			if (!check_sides && t->up[j] && !reachable(t, i, j))
				continue;
			bad += view(t, i, j) != want;
		}
	}
	return bad;
}

/* Runs until the views agree with the oracle, up to max_ms; the virtual ms it took. */
static uint64_t run_until_agree(net *t, uint64_t max_ms, bool check_sides)
{
	uint64_t t0 = t->now;
	while (t->now - t0 < max_ms) {
		if (disagreements(t, check_sides) == 0)
			return t->now - t0;
		run(t, 250);
	}
	return disagreements(t, check_sides) == 0 ? t->now - t0 : UINT64_MAX;
}

static net *started(int n, double loss, uint64_t seed)
{
	net *t = net_new(n, loss, seed);
	for (int i = 0; i < n; i++) {
		start(t, i, 1);
		run(t, 50);
	}
	/* everyone learns everyone from node 0's table and the gossip */
	assert_true(run_until_agree(t, 120000, true) != UINT64_MAX);
	return t;
}

static void test_crashed_become_dead_everywhere(void **state)
{
	(void)state;
	net *t = started(40, 0.0, 11);
	assert_int_equal(t->false_deaths, 0);
	int crashed[] = {3, 17, 31};
	for (size_t k = 0; k < 3; k++)
		t->up[crashed[k]] = false;
	uint64_t took = run_until_agree(t, 60000, true);
	assert_true(took != UINT64_MAX);
	/* and the views stay so: nobody is resurrected, nobody else dies */
	run(t, 20000);
	assert_int_equal(disagreements(t, true), 0);
	assert_int_equal(t->false_deaths, 0);
	for (int i = 0; i < t->n; i++)
		if (t->up[i]) {
			assert_int_equal(member_count(t->node[i], MEMBER_DEAD), 3);
			assert_int_equal(member_count(t->node[i], MEMBER_ALIVE), 37);
		}
	net_free(t);
}

static void test_loss_without_crashes_kills_nobody(void **state)
{
	(void)state;
	for (int v = 0; v < 2; v++)
		for (uint64_t seed = 1; seed <= 3; seed++) {
			variant = v;
			net *t = started(32, 0.05, 100 + seed);
			uint64_t suspected = 0;
			run(t, 300000);
			for (int i = 0; i < t->n; i++)
				suspected += member_get_stats(t->node[i])->suspected;
			/* loss does make members suspect (so the test exercises refutation) ... */
			assert_true(suspected > 0);
			/* ... but with these parameters none is ever declared dead */
			assert_int_equal(t->false_deaths, 0);
			for (int i = 0; i < t->n; i++)
				assert_int_equal(member_get_stats(t->node[i])->declared_dead, 0);
			net_free(t);
		}
}

static void test_crash_under_loss(void **state)
{
	(void)state;
	for (variant = 0; variant < 2; variant++) {
		net *t = started(32, 0.10, 7);
		t->up[5] = t->up[20] = false;
		assert_true(run_until_agree(t, 90000, true) != UINT64_MAX);
		assert_int_equal(t->false_deaths, 0);
		net_free(t);
	}
	variant = 0;
}

/* A partition under 5% loss with a crash on one side: each side takes the other side and
 * the crashed node for dead, and none of its own; healed, everyone running is alive
 * everywhere again and the crashed node stays dead. (While it heals, a side's verdicts
 * reach the other side's members before their refutations do, as in memberlist: a dead
 * notice beats "alive" at the same incarnation; so deaths are not counted then.) */
static void test_partition_under_loss(void **state)
{
	(void)state;
	for (variant = 0; variant < 2; variant++) {
		net *t = started(24, 0.05, 61);
		for (int i = 0; i < t->n; i++)
			t->side[i] = i < 10;
		t->partitioned = true;
		t->up[3] = false;
		assert_true(run_until_agree(t, 90000, true) != UINT64_MAX);
		assert_int_equal(t->false_deaths, 0);
		for (int i = 0; i < t->n; i++)
			if (t->up[i])
				assert_int_equal(member_count(t->node[i], MEMBER_DEAD),
				                 i < 10 ? 14 + 1 : 10);
		t->partitioned = false;
		assert_true(run_until_agree(t, 240000, true) != UINT64_MAX);
		uint64_t healed = t->false_deaths;
		run(t, 30000); /* and it stays so: no live node dies again */
		assert_int_equal(disagreements(t, true), 0);
		assert_int_equal(t->false_deaths, healed);
		assert_int_equal(view(t, 0, 3), MEMBER_DEAD);
		assert_int_equal(view(t, 20, 3), MEMBER_DEAD);
		net_free(t);
	}
	variant = 0;
}

static void test_partition_and_heal(void **state)
{
	(void)state;
	net *t = started(20, 0.0, 23);
	for (int i = 0; i < t->n; i++)
		t->side[i] = i % 2;
	t->partitioned = true;
	/* each side takes the other for dead, and keeps its own alive */
	assert_true(run_until_agree(t, 60000, true) != UINT64_MAX);
	assert_int_equal(t->false_deaths, 0);
	for (int i = 0; i < t->n; i++)
		assert_int_equal(member_count(t->node[i], MEMBER_DEAD), 10);
	t->partitioned = false;
	/* healed: the push-pull to members taken for dead makes them refute, both ways */
	assert_true(run_until_agree(t, 240000, true) != UINT64_MAX);
	for (int i = 0; i < t->n; i++) {
		assert_int_equal(member_count(t->node[i], MEMBER_ALIVE), 20);
		assert_true(member_get_stats(t->node[i])->refuted > 0);
	}
	net_free(t);
}

static void test_restart_refutes_old_death(void **state)
{
	(void)state;
	net *t = started(24, 0.02, 31);
	uint32_t old_inc;
	member_get(t->node[1], 9, &old_inc, NULL);
	t->up[9] = false;
	assert_true(run_until_agree(t, 60000, true) != UINT64_MAX);
	/* back with the same incarnation its death notices carry: it must refute them */
	start(t, 9, old_inc);
	assert_true(run_until_agree(t, 60000, true) != UINT64_MAX);
	assert_true(member_get_stats(t->node[9])->refuted > 0);
	assert_true(member_incarnation(t->node[9]) > old_inc);
	for (int i = 0; i < t->n; i++) {
		uint32_t inc;
		assert_int_equal(member_get(t->node[i], 9, &inc, NULL), MEMBER_ALIVE);
		assert_int_equal(inc, member_incarnation(t->node[9]));
	}
	net_free(t);
}

static void test_leave_is_left_everywhere(void **state)
{
	(void)state;
	net *t = started(16, 0.0, 41);
	member_leave(t->node[4], t->now, 4);
	run(t, 10);
	t->up[4] = false;
	run(t, 20000);
	for (int i = 0; i < t->n; i++)
		if (i != 4)
			assert_int_equal(view(t, i, 4), MEMBER_LEFT);
	net_free(t);
}

/* a stranger cannot make a node hold more than max_members, nor anything out of range */
static void test_bounded_table(void **state)
{
	(void)state;
	net *t = net_new(MAXN, 0.0, 5);
	t->cfg.max_members = 8;
	start(t, 0, 1);
	member_update u[MAXN + 3];
	for (int i = 0; i < MAXN; i++)
		u[i] = (member_update){(member_addr)i, 1, MEMBER_ALIVE, false, 0};
	u[MAXN] = (member_update){MAXN + 5, 1, MEMBER_ALIVE, false, 0};      /* out of range */
	u[MAXN + 1] = (member_update){UINT32_MAX, 1, MEMBER_DEAD, false, 0}; /* out of range */
	u[MAXN + 2] = (member_update){7, 1, 9, false, 0};                    /* no such state */
	member_msg m = {
	    .type = MEMBER_MSG_GOSSIP, .to = 0, .from = 1, .updates = u, .nupdates = MAXN + 3};
	member_on_msg(t->node[0], t->now, &m);
	assert_int_equal(member_count(t->node[0], MEMBER_NONE), 8);
	const member_stats *st = member_get_stats(t->node[0]);
	assert_int_equal(st->refused, MAXN - 8);
	assert_int_equal(st->malformed, 3);
	/* a message from an address out of range, or of no known type, is dropped */
	m.from = MAXN + 1;
	member_on_msg(t->node[0], t->now, &m);
	m.from = 1;
	m.type = 77;
	member_on_msg(t->node[0], t->now, &m);
	assert_int_equal(st->malformed, 5);
	/* PING_REQs beyond MEMBER_RELAYS are refused, not queued without end */
	member_msg pr = {.type = MEMBER_MSG_PING_REQ, .to = 0, .from = 1, .target = 2};
	for (int i = 0; i < MEMBER_RELAYS + 10; i++) {
		pr.seq = (uint64_t)i;
		member_on_msg(t->node[0], t->now, &pr);
	}
	assert_int_equal(st->relays_refused, 10);
	/* and a flood of PUSHes is answered with the whole table only so often */
	member_msg push = {.type = MEMBER_MSG_PUSH, .to = 0, .from = 1};
	for (int i = 0; i < MEMBER_PULLS_PER_S + 30; i++)
		member_on_msg(t->node[0], t->now, &push);
	assert_int_equal(st->pulls_refused, 30);
	assert_int_equal(st->sent[MEMBER_MSG_PULL], MEMBER_PULLS_PER_S);
	member_on_msg(t->node[0], t->now + 1000, &push); /* a second later: answered */
	assert_int_equal(st->sent[MEMBER_MSG_PULL], MEMBER_PULLS_PER_S + 1);
	net_free(t);
}

/* the last message a lone node sent, for the queue test */
static member_update last_u[64];
static size_t last_n;
static void keep_last(void *ctx, const member_msg *m)
{
	(void)ctx;
	last_n = m->nupdates < 64 ? m->nupdates : 64;
	memcpy(last_u, m->updates, last_n * sizeof *last_u);
}

/* One GOSSIP from member `from` with updates u to the lone node n. */
static void tell(member_node *n, uint64_t now, member_addr from, const member_update *u, size_t k)
{
	member_msg g = {
	    .type = MEMBER_MSG_GOSSIP, .to = 0, .from = from, .updates = u, .nupdates = k};
	member_on_msg(n, now, &g);
}

/* A lone node 0 whose messages go to send, told members 1..count are alive. */
static member_node *lone(const member_config *c, void (*send)(void *, const member_msg *),
                         unsigned count)
{
	member_driver d = {send, NULL, NULL};
	member_node *n = member_new(c, &d, 0, 1, 9, 0);
	assert_non_null(n);
	member_update u[64];
	assert_true(count <= 64);
	for (unsigned i = 0; i < count; i++)
		u[i] = (member_update){(member_addr)(i + 1), 1, MEMBER_ALIVE, false, 0};
	tell(n, 0, 1, u, count);
	return n;
}

/* ... its messages kept by keep_last */
static member_node *knowing(const member_config *c, unsigned count)
{
	return lone(c, keep_last, count);
}

/* a change goes out on the very next message however full the queue, and each update
 * goes out retransmit-limit times, no more */
static void test_gossip_queue_order(void **state)
{
	(void)state;
	member_config c;
	member_config_default(&c, 64);
	member_node *n = knowing(&c, 60);
	member_msg ping = {.type = MEMBER_MSG_PING, .to = 0, .from = 1, .target = 0};
	for (int i = 0; i < 5; i++) { /* 5 answers take the 40 newest (21..60) once each */
		ping.seq = (uint64_t)i;
		member_on_msg(n, 0, &ping);
		assert_int_equal(last_n, c.piggyback);
	}
	member_update news = {61, 1, MEMBER_SUSPECT, false, 0};
	member_msg g2 = {
	    .type = MEMBER_MSG_GOSSIP, .to = 0, .from = 2, .updates = &news, .nupdates = 1};
	member_on_msg(n, 0, &g2);
	member_on_msg(n, 0, &ping);
	assert_int_equal(last_u[0].addr, 61);
	assert_int_equal(last_u[0].state, MEMBER_SUSPECT);
	/* then some of the 21 never sent (self and 1..20) before any sent once */
	bool seen[64] = {0};
	for (size_t i = 1; i < last_n; i++)
		seen[last_u[i].addr] = true;
	int old_ones = 0;
	for (int i = 1; i <= 20; i++)
		old_ones += seen[i];
	assert_int_equal(old_ones + seen[0], (int)c.piggyback - 1);
	/* a newer change to a member still queued goes to the top too */
	member_update news2 = {5, 1, MEMBER_SUSPECT, false, 0};
	g2.updates = &news2;
	member_on_msg(n, 0, &g2);
	member_on_msg(n, 0, &ping);
	assert_int_equal(last_u[0].addr, 5);
	/* every update is sent exactly the retransmit limit times in all */
	unsigned limit = member_retransmit_limit(n);
	unsigned count[64] = {0};
	for (int i = 0; i < 400; i++) {
		ping.seq = (uint64_t)(100 + i);
		member_on_msg(n, 0, &ping);
		for (size_t k = 0; k < last_n; k++)
			count[last_u[k].addr]++;
	}
	assert_int_equal(count[61], limit - 1);
	assert_int_equal(count[30], limit - 1); /* 30 went once in the first five answers */
	assert_int_equal(count[5], limit - 1);
	assert_int_equal(count[3], limit);
	member_free(n);
}

/* Lifeguard's timeout, as the paper and memberlist write it: max - (max - min) *
 * log(c + 1) / log(k + 1), never below min */
static double lifeguard_ms(double min, double max, unsigned c, unsigned k)
{
	double t = max - (max - min) * log(c + 1.0) / log(k + 1.0);
	return c >= k || t < min ? min : t;
}

static member_state state_at(member_node *n, uint64_t now, member_addr a)
{
	member_tick(n, now);
	return member_get(n, a, NULL, NULL);
}

/* A suspicion starts at max_mult times the timeout; each distinct member that confirms
 * it shortens it; the first suspecter again, or one already counted, does not. */
static void test_lifeguard_confirmations(void **state)
{
	(void)state;
	member_config c;
	member_config_default(&c, 64);
	c.interval_ms = 1000000; /* no probe of its own in the test's time: no confirmation */
	c.suspicion_ms = 1000;
	c.suspicion_max_mult = 4;
	c.suspicion_confirm = 3;
	member_node *n = knowing(&c, 20);
	double min = (double)member_suspicion_timeout(n), max = 4 * min; /* 21 known: 2 s */
	assert_int_equal((uint64_t)min, 2000);
	/* unconfirmed: the whole max */
	member_update sus = {5, 1, MEMBER_SUSPECT, true, 1};
	tell(n, 0, 1, &sus, 1);
	assert_int_equal(state_at(n, (uint64_t)max - 5, 5), MEMBER_SUSPECT);
	assert_int_equal(state_at(n, (uint64_t)max + 5, 5), MEMBER_DEAD);
	/* suspected at t0 by member 1; then confirmed by 1, 2 or 3 others (member 6, 7, 8),
	 * and member 9 by the first suspecter again and one other twice: 1 confirmation */
	uint64_t t0 = 10000;
	for (member_addr a = 6; a <= 9; a++) {
		sus.addr = a;
		sus.by = 1;
		tell(n, t0, 1, &sus, 1);
	}
	static const member_addr by[4][3] = {{2}, {2, 3}, {2, 3, 4}, {1, 2, 2}};
	static const unsigned nby[4] = {1, 2, 3, 3}, counted[4] = {1, 2, 3, 1};
	for (unsigned j = 0; j < 3; j++)
		for (member_addr a = 6; a <= 9; a++)
			if (j < nby[a - 6]) {
				sus.addr = a;
				sus.by = by[a - 6][j];
				tell(n, t0 + 1000 + 100 * j, sus.by, &sus, 1);
			}
	assert_int_equal(member_get_stats(n)->confirmations, 1 + 2 + 3 + 1);
	/* the suspicion goes round naming the newest confirmation */
	member_msg ping = {.type = MEMBER_MSG_PING, .to = 0, .from = 2, .seq = 1};
	member_on_msg(n, t0 + 1300, &ping);
	bool told = false;
	for (size_t k = 0; k < last_n; k++)
		told |= last_u[k].addr == 7 && last_u[k].has_by && last_u[k].by == 3;
	assert_true(told);
	/* each dead when its own timeout has run out (the minimum, for 3: at once) */
	double due[4];
	for (member_addr a = 6; a <= 9; a++)
		due[a - 6] = (double)t0 + lifeguard_ms(min, max, counted[a - 6], 3);
	for (uint64_t now = t0 + 1300; now < t0 + (uint64_t)max + 100; now += 10) {
		member_tick(n, now);
		for (member_addr a = 6; a <= 9; a++) {
			member_state st = member_get(n, a, NULL, NULL);
			double d2 = due[a - 6] < (double)t0 + 1200 ? (double)t0 + 1200 : due[a - 6];
			if ((double)now < d2 - 10)
				assert_int_equal(st, MEMBER_SUSPECT);
			else if ((double)now > d2 + 10)
				assert_int_equal(st, MEMBER_DEAD);
		}
	}
	member_free(n);
}

/* Off (--lifeguard 1), confirmations change nothing: the timeout is the minimum. */
static void test_lifeguard_off(void **state)
{
	(void)state;
	member_config c;
	member_config_default(&c, 64);
	c.interval_ms = 1000000;
	c.suspicion_ms = 1000;
	c.suspicion_max_mult = 1;
	member_node *n = knowing(&c, 20);
	member_update sus = {5, 1, MEMBER_SUSPECT, true, 1};
	tell(n, 0, 1, &sus, 1);
	sus.by = 2;
	tell(n, 500, 2, &sus, 1);
	assert_int_equal(state_at(n, 1995, 5), MEMBER_SUSPECT);
	assert_int_equal(state_at(n, 2005, 5), MEMBER_DEAD);
	assert_int_equal(member_get_stats(n)->confirmations, 0);
	member_free(n);
}

/* every message a lone node sent, for the eager test: its type, addressee, and whether it
 * carried `watch` in state `watch_state` */
static member_addr watch;
static uint8_t watch_state;
static unsigned sent_gossip, sent_watch;
static void count_sent(void *ctx, const member_msg *m)
{
	(void)ctx;
	sent_gossip += m->type == MEMBER_MSG_GOSSIP;
	for (size_t k = 0; k < m->nupdates; k++)
		if (m->updates[k].addr == watch && m->updates[k].state == watch_state) {
			sent_watch++;
			break;
		}
}

/* A death this node learns goes out at once to gossip_nodes members, not at the next
 * gossip round; so does a refutation; news it had already does not; and no more than
 * eager_per_s such rounds a second, whatever a peer sends (the rest wait for the tick). */
static void test_eager_gossip(void **state)
{
	(void)state;
	member_config c;
	member_config_default(&c, 64);
	c.interval_ms = 1000000; /* no probes in the test's time */
	c.pushpull_ms = 1000000;
	c.eager_per_s = 4;
	member_node *n = lone(&c, count_sent, 40);
	/* drain what learning 40 members queued: the ticks' rounds carry it all */
	for (uint64_t now = 0; now < 200000 && member_wake_at(n) < 1000000;)
		member_tick(n, now = member_wake_at(n));
	uint64_t now = 300000;
	sent_gossip = sent_watch = 0;
	/* a death heard from member 2: three GOSSIPs carrying it, before any tick */
	watch = 7;
	watch_state = MEMBER_DEAD;
	member_update dead = {7, 1, MEMBER_DEAD, false, 0};
	tell(n, now, 2, &dead, 1);
	assert_int_equal(sent_gossip, c.gossip_nodes);
	assert_int_equal(sent_watch, c.gossip_nodes);
	assert_int_equal(member_get_stats(n)->eager_rounds, 1);
	/* the same death again, and a suspicion: no eager round */
	tell(n, now + 1, 3, &dead, 1);
	member_update sus = {8, 1, MEMBER_SUSPECT, true, 3};
	tell(n, now + 2, 3, &sus, 1);
	assert_int_equal(sent_gossip, c.gossip_nodes);
	/* a notice of its own death: it refutes, and the refutation goes at once */
	watch = 0;
	watch_state = MEMBER_ALIVE;
	sent_watch = 0;
	member_update me = {0, 1, MEMBER_DEAD, false, 0};
	tell(n, now + 3, 4, &me, 1);
	assert_int_equal(member_get_stats(n)->refuted, 1);
	assert_int_equal(sent_gossip, 2 * c.gossip_nodes);
	assert_int_equal(sent_watch, c.gossip_nodes);
	/* a flood of deaths in one second: eager_per_s rounds in all, then only the ticks */
	for (member_addr a = 10; a < 30; a++) {
		dead.addr = a;
		tell(n, now + 10 + a, 5, &dead, 1);
	}
	assert_int_equal(member_get_stats(n)->eager_rounds, c.eager_per_s);
	assert_int_equal(sent_gossip, c.eager_per_s * c.gossip_nodes);
	/* ... and every one of those deaths still goes out, on the gossip rounds */
	watch = 29;
	watch_state = MEMBER_DEAD;
	sent_watch = 0;
	for (uint64_t end = now + 3000; member_wake_at(n) < end;)
		member_tick(n, member_wake_at(n));
	assert_true(sent_watch > 0);
	/* a second later the bound starts again */
	dead.addr = 31;
	unsigned before = sent_gossip;
	tell(n, now + 5000, 5, &dead, 1);
	assert_int_equal(sent_gossip, before + c.gossip_nodes);
	member_free(n);
	/* off: nothing but the ticks */
	c.eager_per_s = 0;
	n = lone(&c, count_sent, 40);
	sent_gossip = 0;
	dead.addr = 7;
	tell(n, 10, 2, &dead, 1);
	assert_int_equal(sent_gossip, 0);
	member_free(n);
}

/* the PINGs a lone node sent to `watch` */
static unsigned pings_to_watch;
static void count_pings(void *ctx, const member_msg *m)
{
	(void)ctx;
	pings_to_watch += m->type == MEMBER_MSG_PING && m->to == watch;
}

/* A member that hears of a fresh suspicion and draws to check it probes the suspect at
 * once, or, while its own probe waits for an answer, first at its next interval; news of
 * a suspect it knew already, a table, or suspect_probes 0 do not make it probe. */
static void test_suspect_probes(void **state)
{
	(void)state;
	member_config c;
	member_config_default(&c, 64);
	c.pushpull_ms = 1000000;
	c.suspect_probes = 64; /* more than the members: every draw checks */
	c.suspicion_max_mult = 4;
	c.suspicion_confirm = 3; /* room for more than one confirmation */
	member_node *n = lone(&c, count_pings, 40);
	watch = 7;
	pings_to_watch = 0;
	member_update sus = {7, 1, MEMBER_SUSPECT, true, 3};
	tell(n, 10, 3, &sus, 1); /* no probe of its own out yet: at once */
	assert_int_equal(pings_to_watch, 1);
	assert_int_equal(member_get_stats(n)->probes_out_of_turn, 1);
	/* the same suspicion again, from another member: a confirmation, no new probe */
	sus.by = 4;
	tell(n, 20, 4, &sus, 1);
	assert_int_equal(pings_to_watch, 1);
	/* its probe of 7 is not answered: at the next interval, 7 is confirmed (by itself) */
	uint64_t conf = member_get_stats(n)->confirmations;
	for (uint64_t now = 20; now < 1200;)
		member_tick(n, now = member_wake_at(n));
	assert_int_equal(member_get_stats(n)->confirmations, conf + 1);
	/* a suspicion heard while its own probe is out waits for the next interval */
	const member_stats *st = member_get_stats(n);
	uint64_t probes = st->probes;
	uint64_t at = member_wake_at(n);
	while (st->probes == probes) /* the next regular probe goes out */
		member_tick(n, at = member_wake_at(n));
	watch = 9;
	pings_to_watch = 0;
	sus = (member_update){9, 1, MEMBER_SUSPECT, true, 3};
	tell(n, at + 1, 3, &sus, 1);
	assert_int_equal(pings_to_watch, 0);
	for (uint64_t now = at + 1; now < at + 1001;)
		member_tick(n, now = member_wake_at(n));
	assert_int_equal(pings_to_watch, 1);
	/* a suspect listed in a table is not probed out of turn */
	watch = 11;
	pings_to_watch = 0;
	sus.addr = 11;
	member_msg pull = {
	    .type = MEMBER_MSG_PULL, .to = 0, .from = 3, .updates = &sus, .nupdates = 1};
	member_on_msg(n, at + 1500, &pull);
	assert_int_equal(member_get(n, 11, NULL, NULL), MEMBER_SUSPECT);
	assert_int_equal(pings_to_watch, 0);
	member_free(n);
	/* off */
	c.suspect_probes = 0;
	n = lone(&c, count_pings, 40);
	watch = 7;
	pings_to_watch = 0;
	sus = (member_update){7, 1, MEMBER_SUSPECT, true, 3};
	tell(n, 10, 3, &sus, 1);
	assert_int_equal(pings_to_watch, 0);
	assert_int_equal(member_get_stats(n)->probes_out_of_turn, 0);
	member_free(n);
}

static void test_config_check(void **state)
{
	(void)state;
	member_config c;
	member_config_default(&c, 100);
	assert_int_equal(member_config_check(&c), 0);
	c.probe_timeout_ms = c.interval_ms;
	assert_true(member_config_check(&c) < 0);
	member_config_default(&c, 100);
	c.indirect_k = MEMBER_K_MAX + 1;
	assert_true(member_config_check(&c) < 0);
	member_config_default(&c, 100);
	c.max_members = 101;
	assert_true(member_config_check(&c) < 0);
	member_config_default(&c, 0);
	assert_true(member_config_check(&c) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_check),
	    cmocka_unit_test(test_bounded_table),
	    cmocka_unit_test(test_gossip_queue_order),
	    cmocka_unit_test(test_crashed_become_dead_everywhere),
	    cmocka_unit_test(test_loss_without_crashes_kills_nobody),
	    cmocka_unit_test(test_crash_under_loss),
	    cmocka_unit_test(test_partition_under_loss),
	    cmocka_unit_test(test_partition_and_heal),
	    cmocka_unit_test(test_restart_refutes_old_death),
	    cmocka_unit_test(test_leave_is_left_everywhere),
	    cmocka_unit_test(test_lifeguard_confirmations),
	    cmocka_unit_test(test_lifeguard_off),
	    cmocka_unit_test(test_eager_gossip),
	    cmocka_unit_test(test_suspect_probes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
