/* query.c — the query core (see query.h): fan-out by slices with limit splitting, merging,
 * result sets in chunks, per-team admission, heartbeats, retries and breakers. */
#include "query.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"

#define LOCAL           (-1)
#define NONE            (-2)
#define WORKER_MAX_TASK 4096 /* tasks a worker holds at once (it has no admission control) */
#define LOAD_BUCKETS    10   /* the recent load of weighted admission: 10 buckets ... */
#define LOAD_BUCKET_MS  1000 /* ... of one second */

typedef enum { PT_WAIT, PT_BACKOFF, PT_DONE, PT_DEAD } part_state;

typedef struct {
	int target; /* LOCAL or a child process */
	uint64_t slices;
	uint32_t limit;
	uint64_t req;
	unsigned tries;
	uint64_t deadline, retry_at;
	part_state state;
	bool have; /* recs hold a valid answer (kept if a second-round ask fails) */
	q_rec *recs;
	uint32_t nrec, matched, hops;
} part;

typedef struct task {
	struct task *next;
	uint64_t id;
	bool client;
	uint64_t creq; /* the client's request id */
	int parent;    /* or the process that asked, and its request id */
	uint64_t preq;
	q_filter f;
	uint32_t limit, count_to;
	uint64_t slices, missing;
	uint32_t hops, teams;
	uint32_t excl[Q_MAX_SLICES]; /* children that cannot answer a slice */
	part *parts;
	size_t nparts, cap;
	int round;
	bool busy_seen, admitted;
	uint64_t arrived;
} task;

typedef struct {
	int proc;
	bool child, up;
	uint64_t last_heard, down_since, open_until;
	unsigned consec_fail;
	uint64_t failures, recoveries;
} link_t;

typedef struct {
	char uid[24];
	q_rec *recs;
	uint32_t n;
	uint64_t expires;
} result_set;

struct q_node {
	q_config c;
	q_plan p;
	int self;
	q_driver d;
	uint64_t held;
	link_t links[Q_MAX_PROCS];
	int nlinks;
	uint64_t next_hb, beats;
	task *tasks;  /* admitted */
	task *queued; /* waiting for admission, oldest first */
	unsigned ntasks, nqueued;
	unsigned team_active[Q_MAX_TEAMS], team_queued[Q_MAX_TEAMS];
	uint32_t load[Q_MAX_TEAMS][LOAD_BUCKETS];
	uint64_t load_epoch; /* bucket index of load[.][epoch % LOAD_BUCKETS] */
	uint64_t seq, uid_state;
	result_set *results;
	unsigned nresults;
	uint64_t served, rejected, partial, total_ms;
	char log[Q_LOG_LINES][160];
	int log_head, nlog;
	q_rec *scratch; /* local scans */
	bool in_tick;
};

static void logf_(q_node *q, const char *fmt, ...)
{
	char *line = q->log[(q->log_head + q->nlog) % Q_LOG_LINES];
	if (q->nlog == Q_LOG_LINES)
		q->log_head = (q->log_head + 1) % Q_LOG_LINES;
	else
		q->nlog++;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, 160, fmt, ap);
	va_end(ap);
	if (q->d.log)
		q->d.log(q->d.ctx, line);
}

static link_t *link_of(q_node *q, int proc)
{
	for (int i = 0; i < q->nlinks; i++)
		if (q->links[i].proc == proc)
			return &q->links[i];
	return NULL;
}

static const char *pname(const q_node *q, int proc)
{
	return q->c.procs[proc].id;
}

q_node *q_new(const q_config *c, const q_plan *p, int self, const q_driver *d, uint64_t now,
              uint64_t uid_seed)
{
	if (self < 0 || self >= c->nprocs)
		return NULL;
	q_node *q = calloc(1, sizeof *q);
	if (!q)
		return NULL;
	q->c = *c;
	q->p = *p;
	q->self = self;
	q->d = *d;
	q->held = q_plan_held(p, self);
	q->uid_state = uid_seed;
	q->results = calloc(c->max_results, sizeof *q->results);
	q->scratch = malloc((size_t)c->max_records * sizeof *q->scratch);
	if (!q->results || !q->scratch) {
		q_free(q);
		return NULL;
	}
	/* links: the processes it sends down to, and those that send down to it */
	for (int i = 0; i < c->nprocs; i++) {
		bool down = false, up = false;
		for (int k = 0; k < c->procs[self].nneigh; k++)
			down |= c->procs[self].neigh[k] == i;
		for (int k = 0; k < c->procs[i].nneigh; k++)
			up |= c->procs[i].neigh[k] == self;
		if (down || up)
			q->links[q->nlinks++] =
			    (link_t){.proc = i, .child = down, .up = true, .last_heard = now};
	}
	q->next_hb = now; /* the first heartbeat at once: a restart is seen quickly */
	q->load_epoch = now / LOAD_BUCKET_MS;
	return q;
}

static void task_free(task *t)
{
	for (size_t i = 0; i < t->nparts; i++)
		free(t->parts[i].recs);
	free(t->parts);
	free(t);
}

void q_free(q_node *q)
{
	if (!q)
		return;
	for (task *lists[2] = {q->tasks, q->queued}, **l = lists; l < lists + 2; l++)
		while (*l) {
			task *t = *l;
			*l = t->next;
			task_free(t);
		}
	for (unsigned i = 0; q->results && i < q->nresults; i++)
		free(q->results[i].recs);
	free(q->results);
	free(q->scratch);
	free(q);
}

/* ---- admission ---- */

static void roll_load(q_node *q, uint64_t now)
{
	uint64_t epoch = now / LOAD_BUCKET_MS;
	for (uint64_t e = q->load_epoch + 1; e <= epoch && e <= q->load_epoch + LOAD_BUCKETS; e++)
		for (int t = 0; t < q->c.nteams; t++)
			q->load[t][e % LOAD_BUCKETS] = 0;
	if (epoch > q->load_epoch)
		q->load_epoch = epoch;
}

static bool admits(const q_node *q)
{
	return q->c.procs[q->self].role != Q_WORKER;
}

/* The cap on team t's concurrent requests under the configured strategy. */
static unsigned team_cap(const q_node *q, int t)
{
	unsigned strict = q->c.max_concurrent, total = strict * (unsigned)q->c.nteams;
	q_strategy s = q->c.strategy;
	if (s == Q_HYBRID) {
		unsigned active = 0;
		for (int k = 0; k < q->c.nteams; k++)
			active += q->team_active[k];
		s = active * 5 >= total * 4 ? Q_STRICT : Q_WEIGHTED;
	}
	if (s == Q_STRICT)
		return strict;
	uint64_t mine = 0, all = 0;
	for (int k = 0; k < q->c.nteams; k++)
		for (int b = 0; b < LOAD_BUCKETS; b++) {
			all += q->load[k][b];
			if (k == t)
				mine += q->load[k][b];
		}
	if (!all)
		return strict;
	uint64_t cap = total * mine / all;
	return cap ? (unsigned)cap : 1;
}

static bool fits(const q_node *q, const task *t)
{
	if (!admits(q))
		return q->ntasks < WORKER_MAX_TASK;
	for (int k = 0; k < q->c.nteams; k++)
		if ((t->teams & (1u << k)) && q->team_active[k] >= team_cap(q, k))
			return false;
	return true;
}

static unsigned retry_hint(const q_node *q)
{
	uint64_t avg = q->served ? q->total_ms / q->served : 20;
	uint64_t ms = avg * (1 + q->nqueued / (q->c.max_concurrent ? q->c.max_concurrent : 1));
	return ms < 50 ? 50 : ms > 5000 ? 5000 : (unsigned)ms;
}

/* Adds delta (+1 or -1, never below 0) to ctr[k] for each team k in the mask. */
static void team_count(const q_node *q, unsigned *ctr, uint32_t teams, int delta)
{
	for (int k = 0; k < q->c.nteams; k++)
		if (teams & (1u << k)) {
			if (delta > 0)
				ctr[k]++;
			else if (ctr[k])
				ctr[k]--;
		}
}

/* Takes the task at *pp off the admission queue. */
static task *dequeue(q_node *q, task **pp)
{
	task *t = *pp;
	*pp = t->next;
	q->nqueued--;
	team_count(q, q->team_queued, t->teams, -1);
	return t;
}

/* ---- routing ---- */

static int route(q_node *q, task *t, int s)
{
	const q_slice *sl = &q->p.s[s];
	int holders[2] = {sl->owner, sl->copy};
	for (int h = 0; h < 2; h++) {
		int who = holders[h];
		if (who == q->self && (q->held & (1ull << s)))
			return LOCAL;
		/* children of the slice's team first: a cross link is for routing around */
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; i < q->nlinks; i++) {
				link_t *l = &q->links[i];
				bool same = q->c.procs[l->proc].team == sl->team;
				if (!l->child || same != (pass == 0) || !l->up ||
				    (t->excl[s] & (1u << l->proc)) ||
				    !(q->p.reach[l->proc] & (1u << who)))
					continue;
				return l->proc;
			}
	}
	return NONE;
}

static int32_t slice_days(const q_node *q, uint64_t mask)
{
	int32_t d = 0;
	for (int s = 0; s < q->p.n; s++)
		if (mask & (1ull << s))
			d += q->p.s[s].day_hi - q->p.s[s].day_lo + 1;
	return d;
}

static part *add_part(task *t, int target, uint64_t slices)
{
	if (rn_grow((void **)&t->parts, &t->cap, t->nparts + 1, sizeof *t->parts, 4) < 0)
		return NULL;
	part *p = &t->parts[t->nparts++];
	memset(p, 0, sizeof *p);
	p->target = target;
	p->slices = slices;
	return p;
}

static bool breaker_open(const q_node *q, const link_t *l, uint64_t now)
{
	(void)q;
	return !l->up || now < l->open_until;
}

static void send_req(q_node *q, uint64_t now, task *t, part *p)
{
	p->req = ++q->seq;
	p->state = PT_WAIT;
	p->deadline = now + q->c.call_timeout_ms;
	q_msg m = {.type = Q_MSG_REQ,
	           .from = (uint8_t)q->self,
	           .to = (uint8_t)p->target,
	           .req = p->req,
	           .f = t->f,
	           .limit = p->limit,
	           .count_to = t->count_to,
	           .slices = p->slices};
	q->d.send(q->d.ctx, &m);
}

static void run_local(q_node *q, task *t, part *p)
{
	uint32_t got = 0, matched = 0;
	free(p->recs);
	p->recs = malloc(((size_t)p->limit + 1) * sizeof *p->recs);
	for (int s = 0; s < q->p.n; s++) {
		if (!(p->slices & (1ull << s)))
			continue;
		uint32_t room = p->recs ? p->limit - got : 0;
		uint32_t k = q->d.scan(q->d.ctx, q->p.s[s].day_lo, q->p.s[s].day_hi, &t->f, room,
		                       matched < t->count_to ? t->count_to - matched : 0,
		                       p->recs ? p->recs + got : q->scratch);
		matched += k;
		got += k < room ? k : room;
	}
	p->nrec = got;
	p->matched = matched;
	p->hops = 1u << q->self;
	p->state = PT_DONE;
	p->have = true;
}

/* Splits `limit` over the slices `mask` by their routes and starts the parts. */
static void dispatch(q_node *q, uint64_t now, task *t, uint64_t mask, uint32_t limit)
{
	uint64_t by[Q_MAX_PROCS + 1] = {0}; /* [Q_MAX_PROCS]: local */
	for (int s = 0; s < q->p.n; s++) {
		if (!(mask & (1ull << s)))
			continue;
		int r = route(q, t, s);
		if (r == NONE)
			t->missing |= 1ull << s;
		else
			by[r == LOCAL ? Q_MAX_PROCS : r] |= 1ull << s;
	}
	int32_t total = slice_days(q, mask & ~t->missing);
	uint32_t given = 0;
	size_t first = t->nparts;
	for (int r = 0; r <= Q_MAX_PROCS; r++) {
		if (!by[r])
			continue;
		part *p = add_part(t, r == Q_MAX_PROCS ? LOCAL : r, by[r]);
		if (!p) {
			t->missing |= by[r];
			continue;
		}
		p->limit = total ? (uint32_t)((uint64_t)limit * slice_days(q, by[r]) / total) : 0;
		given += p->limit;
	}
	/* what rounding left goes to the first parts, one each */
	for (size_t i = first; given < limit && i < t->nparts; i++, given++)
		t->parts[i].limit++;
	for (size_t i = first; i < t->nparts; i++) {
		part *p = &t->parts[i];
		if (p->target == LOCAL)
			run_local(q, t, p);
		else
			send_req(q, now, t, p);
	}
}

/* ---- finishing ---- */

static void store_result(q_node *q, uint64_t now, task *t, q_rec *recs, uint32_t n, q_answer *a)
{
	/* a uid nobody can guess from the last one: splitmix64 of a counter */
	uint64_t z = (q->uid_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	if (q->nresults == q->c.max_results) { /* full: the oldest goes */
		free(q->results[0].recs);
		memmove(q->results, q->results + 1, (q->nresults - 1) * sizeof *q->results);
		q->nresults--;
	}
	result_set *r = &q->results[q->nresults++];
	snprintf(r->uid, sizeof r->uid, "%016llx", (unsigned long long)z);
	r->recs = recs;
	r->n = n;
	r->expires = now + q->c.result_ttl_ms;
	(void)t;
	strcpy(a->uid, r->uid);
	a->total_records = n;
	a->total_chunks = (n + q->c.chunk_size - 1) / q->c.chunk_size;
}

static void release(q_node *q, task *t)
{
	if (t->admitted) {
		team_count(q, q->team_active, t->teams, -1);
		q->ntasks--;
	}
}

static void unlink_task(task **list, task *t)
{
	for (task **pp = list; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			return;
		}
}

/* The answer to the process that asked for task t. */
static q_msg resp_for(const q_node *q, const task *t, uint8_t status)
{
	return (q_msg){.type = Q_MSG_RESP,
	               .from = (uint8_t)q->self,
	               .to = (uint8_t)t->parent,
	               .req = t->preq,
	               .status = status};
}

static void answer_busy(q_node *q, task *t)
{
	q->rejected++;
	if (t->client) {
		q_answer a = {.status = Q_ANS_BUSY, .retry_ms = retry_hint(q)};
		q->d.reply(q->d.ctx, t->creq, &a);
	} else {
		q_msg m = resp_for(q, t, Q_ST_BUSY);
		m.missing = t->slices;
		q->d.send(q->d.ctx, &m);
	}
}

static void admit_waiting(q_node *q, uint64_t now);

static void finish(q_node *q, uint64_t now, task *t)
{
	uint32_t n = 0, matched = 0;
	for (size_t i = 0; i < t->nparts; i++)
		if (t->parts[i].have) {
			n += t->parts[i].nrec;
			matched += t->parts[i].matched;
			t->hops |= t->parts[i].hops;
		}
	if (n > t->limit)
		n = t->limit;
	q_rec *recs = malloc(((size_t)n + 1) * sizeof *recs);
	uint32_t at = 0;
	for (size_t i = 0; recs && i < t->nparts && at < n; i++) {
		part *p = &t->parts[i];
		if (!p->have)
			continue;
		uint32_t k = p->nrec < n - at ? p->nrec : n - at;
		memcpy(recs + at, p->recs, k * sizeof *recs);
		at += k;
	}
	if (!recs) {
		n = 0;
		t->missing = t->slices;
	}
	t->hops |= 1u << q->self;
	uint64_t took = now - t->arrived;
	q->served++;
	q->total_ms += took;
	if (t->missing)
		q->partial++;
	if (t->client) {
		q_answer a = {0};
		a.hops = t->hops;
		a.missing = t->missing;
		if (t->missing && t->busy_seen) {
			a.status = Q_ANS_BUSY;
			a.retry_ms = retry_hint(q);
			free(recs);
		} else {
			a.status = t->missing ? Q_ANS_PARTIAL : Q_ANS_OK;
			if (recs)
				store_result(q, now, t, recs, n, &a);
		}
		q->d.reply(q->d.ctx, t->creq, &a);
	} else {
		q_msg m = resp_for(q, t, t->missing && t->busy_seen ? Q_ST_BUSY : Q_ST_OK);
		m.matched = matched < t->count_to ? matched : t->count_to;
		m.missing = t->missing;
		m.hops = t->hops;
		m.recs = recs;
		m.nrec = n;
		q->d.send(q->d.ctx, &m);
		free(recs);
	}
	release(q, t);
	unlink_task(&q->tasks, t);
	task_free(t);
	admit_waiting(q, now);
}

/* Every part answered or given up: a second round when the split left records behind,
 * else the answer. */
static void check_done(q_node *q, uint64_t now, task *t)
{
	for (size_t i = 0; i < t->nparts; i++)
		if (t->parts[i].state == PT_WAIT || t->parts[i].state == PT_BACKOFF)
			return;
	if (t->round == 1) {
		t->round = 2;
		uint32_t total = 0;
		bool short_ = false;
		for (size_t i = 0; i < t->nparts; i++)
			if (t->parts[i].have) {
				total += t->parts[i].nrec;
				short_ |= t->parts[i].matched > t->parts[i].nrec;
			}
		if (total < t->limit && short_) {
			/* the counts are known now: give each part what it matched, in order */
			uint32_t left = t->limit;
			bool asked = false;
			for (size_t i = 0; i < t->nparts; i++) {
				part *p = &t->parts[i];
				if (!p->have)
					continue;
				uint32_t give = p->matched < left ? p->matched : left;
				left -= give;
				if (give <= p->nrec)
					continue;
				p->limit = give;
				p->tries = 0;
				if (p->target == LOCAL) {
					run_local(q, t, p);
				} else {
					send_req(q, now, t, p);
					asked = true;
				}
			}
			if (asked)
				return;
		}
	}
	finish(q, now, t);
}

/* ---- starting work ---- */

static void start(q_node *q, uint64_t now, task *t)
{
	t->admitted = true;
	q->ntasks++;
	team_count(q, q->team_active, t->teams, 1);
	t->next = q->tasks;
	q->tasks = t;
	t->round = 1;
	dispatch(q, now, t, t->slices, t->limit);
	check_done(q, now, t);
}

static void admit_waiting(q_node *q, uint64_t now)
{
	task **pp = &q->queued;
	while (*pp) {
		task *t = *pp;
		if (!fits(q, t)) {
			pp = &t->next;
			continue;
		}
		start(q, now, dequeue(q, pp));
		pp = &q->queued; /* start may have finished tasks and changed the list */
	}
}

static void arrive(q_node *q, uint64_t now, task *t)
{
	t->arrived = now;
	t->id = ++q->seq;
	for (int s = 0; s < q->p.n; s++)
		if (t->slices & (1ull << s))
			t->teams |= 1u << q->p.s[s].team;
	roll_load(q, now);
	for (int k = 0; k < q->c.nteams; k++)
		if (t->teams & (1u << k))
			q->load[k][q->load_epoch % LOAD_BUCKETS]++;
	if (fits(q, t) && !q->queued) {
		start(q, now, t);
		return;
	}
	bool room = admits(q);
	for (int k = 0; k < q->c.nteams; k++)
		if ((t->teams & (1u << k)) && q->team_queued[k] >= q->c.queue_max)
			room = false;
	if (!room) {
		answer_busy(q, t);
		task_free(t);
		return;
	}
	team_count(q, q->team_queued, t->teams, 1);
	q->nqueued++;
	t->next = NULL;
	task **pp = &q->queued;
	while (*pp)
		pp = &(*pp)->next;
	*pp = t;
	admit_waiting(q, now); /* it may fit behind others that do not */
}

static int32_t floor_div(int32_t a, int32_t b)
{
	return a >= 0 ? a / b : -((-a + b - 1) / b);
}

void q_client(q_node *q, uint64_t now, uint64_t req, const q_filter *f, uint32_t limit)
{
	task *t = calloc(1, sizeof *t);
	if (!t) {
		q_answer a = {.status = Q_ANS_BUSY, .retry_ms = 1000};
		q->d.reply(q->d.ctx, req, &a);
		return;
	}
	t->client = true;
	t->creq = req;
	t->f = *f;
	t->limit = limit && limit < q->c.max_records ? limit : q->c.max_records;
	t->count_to = t->limit;
	int32_t lo = f->t_from == INT32_MIN ? INT32_MIN : floor_div(f->t_from, 1440);
	int32_t hi = f->t_to == INT32_MAX ? INT32_MAX : floor_div(f->t_to, 1440);
	t->slices = q_plan_overlap(&q->p, lo, hi);
	arrive(q, now, t);
}

/* ---- messages ---- */

static void heard(q_node *q, uint64_t now, int proc)
{
	link_t *l = link_of(q, proc);
	if (!l)
		return;
	l->last_heard = now;
	if (!l->up) {
		l->up = true;
		l->recoveries++;
		l->consec_fail = 0;
		l->open_until = 0;
		logf_(q, "neighbor_recovered %s after %llu ms down", pname(q, proc),
		      (unsigned long long)(now - l->down_since));
	}
}

static bool find_part(q_node *q, uint64_t req, task **tt, part **pp)
{
	for (task *t = q->tasks; t; t = t->next)
		for (size_t i = 0; i < t->nparts; i++)
			if (t->parts[i].req == req && t->parts[i].target != LOCAL) {
				*tt = t;
				*pp = &t->parts[i];
				return true;
			}
	return false;
}

/* Gives up on part p (its answer too, if a second-round ask failed: the slices go again
 * with the limit that ask had, so the answer is never silently short) and routes its
 * slices another way, not through p's target. p may move: not touched after this. */
static void reroute(q_node *q, uint64_t now, task *t, part *p)
{
	p->state = PT_DEAD;
	p->have = false;
	free(p->recs);
	p->recs = NULL;
	p->nrec = p->matched = 0;
	uint64_t slices = p->slices;
	uint32_t limit = p->limit;
	for (int s = 0; s < q->p.n; s++)
		if (slices & (1ull << s))
			t->excl[s] |= 1u << p->target;
	dispatch(q, now, t, slices, limit);
}

/* A call failed (no answer in time, undeliverable): retry after a backoff while the
 * neighbour's breaker is closed, else route its slices another way. */
static void part_failed(q_node *q, uint64_t now, task *t, part *p)
{
	link_t *l = link_of(q, p->target);
	if (l && ++l->consec_fail >= q->c.breaker_threshold && now >= l->open_until) {
		l->open_until = now + 2ull * q->c.hb_timeout_ms;
		logf_(q, "breaker_open %s after %u failed calls", pname(q, p->target),
		      l->consec_fail);
	}
	if (l && !breaker_open(q, l, now) && p->tries < q->c.retries) {
		uint64_t base = (uint64_t)q->c.backoff_ms << p->tries;
		p->tries++;
		p->state = PT_BACKOFF;
		p->retry_at = now + base + (q->d.random ? q->d.random(q->d.ctx) % (base + 1) : 0);
		return;
	}
	reroute(q, now, t, p);
	check_done(q, now, t);
}

static void on_resp(q_node *q, uint64_t now, const q_msg *m)
{
	task *t;
	part *p;
	if (!find_part(q, m->req, &t, &p) || p->target != m->from || p->state != PT_WAIT)
		return; /* late, duplicate or not ours: ignored */
	link_t *l = link_of(q, p->target);
	if (m->status == Q_ST_BUSY && !m->nrec) {
		t->busy_seen = true;
		reroute(q, now, t, p);
		check_done(q, now, t);
		return;
	}
	if (l) {
		l->consec_fail = 0;
		l->open_until = 0;
	}
	if (m->status == Q_ST_BUSY)
		t->busy_seen = true;
	q_rec *recs = malloc(((size_t)m->nrec + 1) * sizeof *recs);
	if (!recs) {
		part_failed(q, now, t, p);
		return;
	}
	memcpy(recs, m->recs, (size_t)m->nrec * sizeof *recs);
	free(p->recs);
	p->recs = recs;
	p->nrec = m->nrec < p->limit ? m->nrec : p->limit;
	p->matched = m->matched;
	p->hops = m->hops;
	p->have = true;
	p->state = PT_DONE;
	uint64_t lost = m->missing & p->slices;
	if (lost) {
		p->slices &= ~lost;
		for (int s = 0; s < q->p.n; s++)
			if (lost & (1ull << s))
				t->excl[s] |= 1u << m->from;
		uint32_t limit = p->limit > p->nrec ? p->limit - p->nrec : 0;
		dispatch(q, now, t, lost, limit);
	}
	check_done(q, now, t);
}

void q_on_msg(q_node *q, uint64_t now, const q_msg *m)
{
	if (m->from >= q->c.nprocs || m->from == q->self || m->to != q->self)
		return;
	heard(q, now, m->from);
	if (m->type == Q_MSG_RESP) {
		on_resp(q, now, m);
	} else if (m->type == Q_MSG_REQ) {
		if (m->f.param >= Q_NPARAMS)
			return;
		task *t = calloc(1, sizeof *t);
		if (!t)
			return;
		t->parent = m->from;
		t->preq = m->req;
		t->f = m->f;
		t->limit = m->limit < q->c.max_records ? m->limit : q->c.max_records;
		t->count_to = m->count_to > t->limit ? m->count_to : t->limit;
		if (t->count_to > Q_MAX_RECORDS)
			t->count_to = Q_MAX_RECORDS;
		t->slices = m->slices & (q->p.n >= 64 ? ~0ull : (1ull << q->p.n) - 1);
		arrive(q, now, t);
	}
}

void q_on_unreachable(q_node *q, uint64_t now, uint64_t req, int to)
{
	task *t;
	part *p;
	if (!req || !find_part(q, req, &t, &p) || p->target != to || p->state != PT_WAIT)
		return;
	part_failed(q, now, t, p);
}

/* ---- time ---- */

void q_tick(q_node *q, uint64_t now)
{
	if (now >= q->next_hb) {
		q->beats++;
		for (int i = 0; i < q->nlinks; i++) {
			q_msg m = {.type = Q_MSG_HB,
			           .from = (uint8_t)q->self,
			           .to = (uint8_t)q->links[i].proc};
			q->d.send(q->d.ctx, &m);
		}
		q->next_hb = now + q->c.hb_interval_ms;
	}
	for (int i = 0; i < q->nlinks; i++) {
		link_t *l = &q->links[i];
		if (l->up && now - l->last_heard > q->c.hb_timeout_ms) {
			l->up = false;
			l->down_since = now;
			l->failures++;
			logf_(q, "neighbor_failed %s (silent for %llu ms)", pname(q, l->proc),
			      (unsigned long long)(now - l->last_heard));
		}
	}
	/* parts overdue, parts to retry, calls to a neighbour now down; a failure can finish
	 * its task (and free it), so the walk starts over after each */
restart:
	for (task *t = q->tasks; t; t = t->next)
		for (size_t i = 0; i < t->nparts; i++) {
			part *p = &t->parts[i];
			link_t *l = p->target == LOCAL ? NULL : link_of(q, p->target);
			if (p->state == PT_WAIT && (now >= p->deadline || (l && !l->up))) {
				part_failed(q, now, t, p);
				goto restart;
			}
			if (p->state == PT_BACKOFF && now >= p->retry_at) {
				if (l && breaker_open(q, l, now)) {
					p->tries = q->c.retries;
					part_failed(q, now, t, p);
					goto restart;
				}
				send_req(q, now, t, p);
			}
		}
	/* requests that waited too long for admission */
	for (task **pp = &q->queued; *pp;) {
		task *t = *pp;
		if (now - t->arrived < q->c.queue_timeout_ms) {
			pp = &t->next;
			continue;
		}
		dequeue(q, pp);
		answer_busy(q, t);
		task_free(t);
	}
	admit_waiting(q, now); /* weighted caps move with the load */
	/* expired result sets (kept in creation order, so the expired ones come first) */
	unsigned drop = 0;
	while (drop < q->nresults && q->results[drop].expires <= now)
		free(q->results[drop++].recs);
	if (drop) {
		memmove(q->results, q->results + drop, (q->nresults - drop) * sizeof *q->results);
		q->nresults -= drop;
	}
	roll_load(q, now);
}

uint64_t q_wake_at(const q_node *q)
{
	uint64_t at = q->next_hb;
	for (int i = 0; i < q->nlinks; i++)
		if (q->links[i].up && q->links[i].last_heard + q->c.hb_timeout_ms + 1 < at)
			at = q->links[i].last_heard + q->c.hb_timeout_ms + 1;
	for (const task *t = q->tasks; t; t = t->next)
		for (size_t i = 0; i < t->nparts; i++) {
			const part *p = &t->parts[i];
			if (p->state == PT_WAIT && p->deadline < at)
				at = p->deadline;
			if (p->state == PT_BACKOFF && p->retry_at < at)
				at = p->retry_at;
		}
	if (q->queued && q->queued->arrived + q->c.queue_timeout_ms < at)
		at = q->queued->arrived + q->c.queue_timeout_ms;
	if (q->nresults && q->results[0].expires < at)
		at = q->results[0].expires;
	return at;
}

/* ---- chunks and stats ---- */

int q_chunk(q_node *q, uint64_t now, const char *uid, uint32_t i, const q_rec **recs, uint32_t *n,
            bool *is_last, uint32_t *total_chunks)
{
	for (unsigned k = 0; k < q->nresults; k++) {
		result_set *r = &q->results[k];
		if (strcmp(r->uid, uid) != 0)
			continue;
		uint32_t chunks = (r->n + q->c.chunk_size - 1) / q->c.chunk_size;
		if (r->expires <= now || i >= chunks)
			return RN_ENOTFOUND;
		uint32_t from = i * q->c.chunk_size;
		*recs = r->recs + from;
		*n = r->n - from < q->c.chunk_size ? r->n - from : q->c.chunk_size;
		*is_last = i + 1 == chunks;
		*total_chunks = chunks;
		return 0;
	}
	return RN_ENOTFOUND;
}

void q_get_stats(const q_node *q, uint64_t now, q_stats *s)
{
	memset(s, 0, sizeof *s);
	s->active = q->ntasks;
	s->queued = q->nqueued;
	for (int k = 0; k < q->c.nteams; k++) {
		s->team_active[k] = q->team_active[k];
		s->team_queued[k] = q->team_queued[k];
		s->team_cap[k] = admits(q) ? team_cap(q, k) : 0;
	}
	s->served = q->served;
	s->rejected = q->rejected;
	s->partial = q->partial;
	s->avg_ms = q->served ? (double)q->total_ms / (double)q->served : 0;
	s->beats = q->beats;
	s->nneigh = q->nlinks;
	for (int i = 0; i < q->nlinks; i++) {
		const link_t *l = &q->links[i];
		s->neigh[i].proc = l->proc;
		s->neigh[i].up = l->up;
		s->neigh[i].breaker_open = breaker_open(q, l, now);
		s->neigh[i].failures = l->failures;
		s->neigh[i].recoveries = l->recoveries;
	}
	s->results = q->nresults;
	for (int i = 0; i < q->nlog; i++)
		s->log[i] = q->log[(q->log_head + i) % Q_LOG_LINES];
	s->nlog = q->nlog;
}
