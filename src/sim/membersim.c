/* membersim.c — the membership core at scale (see membersim.h).
 *
 * Two queues: messages in flight, a binary heap by delivery time (ties by send order);
 * and the nodes' own timers, an indexed heap keyed by each node's member_wake_at, updated
 * after every call into a core. Messages carry a copy of their updates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "../lib/rng.h"
#include "membersim.h"

typedef struct {
	uint64_t at, order;
	member_msg m;
	member_update *u;
} flight;

struct msim;

typedef struct {
	struct msim *s;
	uint32_t i;
} who;

typedef struct msim {
	const membersim_params *p;
	member_config cfg;
	member_node **node;
	who *ctx;
	bool *up;
	rn_rng rng;
	uint64_t now, order;
	flight *q;
	size_t nq, capq;
	uint32_t *th, *tpos; /* timer heap of node indices; tpos[i]: i's place, or UINT32_MAX */
	uint32_t nth;
	/* crashes: which ones, when, and what each live node saw of them */
	int32_t *crash_of; /* node -> crash index, or -1 */
	uint32_t *crashed;
	uint64_t *crash_at;
	uint64_t *sus_at, *dead_at; /* [crash * nodes + viewer], UINT64_MAX: not yet */
	bool *falsely_dead;
	uint64_t *first_probe;   /* [crash]: the first PING to it after the crash */
	uint32_t *dead_by_timer; /* [crash]: live nodes whose own timer declared it */
	uint64_t *declared;      /* [node]: its declared_dead counter when last seen */
	bool measuring;
	uint64_t false_deaths, live_suspicions, msgs, updates, bytes, lost;
	uint64_t events;
	int err;
} msim;

void membersim_params_default(membersim_params *p)
{
	memset(p, 0, sizeof *p);
	p->nodes = 1000;
	p->crashes = 5;
	p->loss = 0.0;
	p->seed = 1;
	p->warmup_s = 20;
	p->run_s = 60;
	p->latency_min_ms = 10;
	p->latency_max_ms = 50;
	member_config_default(&p->member, 1000);
}

int membersim_params_check(const membersim_params *p, char *err, size_t errlen)
{
	member_config c = p->member;
	c.max_addr = c.max_members = p->nodes ? p->nodes : 1;
	if (p->nodes < 2 || p->nodes > 100000)
		snprintf(err, errlen, "--nodes must be between 2 and 100000");
	else if (p->crashes >= p->nodes)
		snprintf(err, errlen, "--crash must leave at least one node running");
	else if (!(p->loss >= 0.0 && p->loss < 1.0))
		snprintf(err, errlen, "--loss must be at least 0 and below 1");
	else if (p->run_s < 2 || p->run_s > 86400 || p->warmup_s > 86400)
		snprintf(err, errlen, "--run-s must be 2..86400, --warmup-s at most 86400");
	else if (p->latency_min_ms > p->latency_max_ms ||
	         p->latency_max_ms >= p->member.probe_timeout_ms)
		snprintf(err, errlen, "--latency MIN-MAX must have MIN <= MAX < the probe timeout");
	else if (member_config_check(&c) < 0)
		snprintf(err, errlen,
		         "the membership settings are out of range (the probe timeout must be "
		         "below the interval, k at most %d)",
		         MEMBER_K_MAX);
	else
		return 0;
	return RN_EINVAL;
}

/* ---- the message heap ---- */

static bool fl_less(const flight *a, const flight *b)
{
	return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static void q_push(msim *s, const flight *f)
{
	if (s->nq == s->capq) {
		size_t cap = s->capq ? 2 * s->capq : 4096;
		flight *q = realloc(s->q, cap * sizeof *q);
		if (!q) {
			s->err = RN_ENOMEM;
			free(f->u);
			return;
		}
		s->q = q;
		s->capq = cap;
	}
	size_t i = s->nq++;
	while (i) {
		size_t up = (i - 1) / 2;
		if (!fl_less(f, &s->q[up]))
			break;
		s->q[i] = s->q[up];
		i = up;
	}
	s->q[i] = *f;
}

static flight q_pop(msim *s)
{
	flight top = s->q[0], last = s->q[--s->nq];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= s->nq)
			break;
		if (c + 1 < s->nq && fl_less(&s->q[c + 1], &s->q[c]))
			c++;
		if (!fl_less(&s->q[c], &last))
			break;
		s->q[i] = s->q[c];
		i = c;
	}
	if (s->nq)
		s->q[i] = last;
	return top;
}

/* ---- the timer heap ---- */

static uint64_t wake(const msim *s, uint32_t i)
{
	return member_wake_at(s->node[i]);
}

static void th_swap(msim *s, uint32_t a, uint32_t b)
{
	uint32_t x = s->th[a];
	s->th[a] = s->th[b];
	s->th[b] = x;
	s->tpos[s->th[a]] = a;
	s->tpos[s->th[b]] = b;
}

static void th_fix(msim *s, uint32_t node)
{
	uint32_t i = s->tpos[node];
	while (i && wake(s, s->th[i]) < wake(s, s->th[(i - 1) / 2])) {
		th_swap(s, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		uint32_t c = 2 * i + 1, m = i;
		if (c < s->nth && wake(s, s->th[c]) < wake(s, s->th[m]))
			m = c;
		if (c + 1 < s->nth && wake(s, s->th[c + 1]) < wake(s, s->th[m]))
			m = c + 1;
		if (m == i)
			break;
		th_swap(s, i, m);
		i = m;
	}
}

static void th_remove(msim *s, uint32_t node)
{
	uint32_t i = s->tpos[node];
	if (i == UINT32_MAX)
		return;
	uint32_t last = s->th[--s->nth];
	s->tpos[node] = UINT32_MAX;
	if (last == node)
		return;
	s->th[i] = last;
	s->tpos[last] = i;
	th_fix(s, last);
}

/* ---- the driver ---- */

static void on_send(void *ctx, const member_msg *m)
{
	msim *s = ((who *)ctx)->s;
	if (s->measuring) {
		s->msgs++;
		s->updates += m->nupdates;
		/* about what the node's frames take: header, seq, target, and per update an
		 * address (~20 bytes of "host:port"), a 20-byte id, incarnation and state */
		s->bytes += 5 + 8 + 4 + 24 + 46 * (uint64_t)m->nupdates;
	}
	if (m->type == MEMBER_MSG_PING && m->to < s->p->nodes && !s->up[m->to] &&
	    s->crash_of[m->to] >= 0 && s->first_probe[s->crash_of[m->to]] == UINT64_MAX)
		s->first_probe[s->crash_of[m->to]] = s->now;
	if (rn_rng_unit(&s->rng) < s->p->loss) {
		s->lost++;
		return;
	}
	const membersim_params *p = s->p;
	flight f = {.at = s->now + p->latency_min_ms +
	                  rn_rng_below(&s->rng, p->latency_max_ms - p->latency_min_ms + 1u),
	            .order = s->order++,
	            .m = *m};
	f.u = malloc((m->nupdates ? m->nupdates : 1) * sizeof *f.u);
	if (!f.u) {
		s->err = RN_ENOMEM;
		return;
	}
	memcpy(f.u, m->updates, m->nupdates * sizeof *f.u);
	f.m.updates = f.u;
	q_push(s, &f);
}

static void on_changed(void *ctx, member_addr a, member_state from, member_state to, uint32_t inc)
{
	(void)from;
	(void)inc;
	msim *s = ((who *)ctx)->s;
	uint32_t viewer = ((who *)ctx)->i;
	if (to == MEMBER_ALIVE)
		return;
	/* the core counts a death of its own timer just before it reports it */
	uint64_t declared = member_get_stats(s->node[viewer])->declared_dead;
	bool by_timer = to == MEMBER_DEAD && declared != s->declared[viewer];
	s->declared[viewer] = declared;
	if (s->up[a]) {
		if (to == MEMBER_DEAD) {
			s->false_deaths++;
			s->falsely_dead[a] = true;
		} else if (to == MEMBER_SUSPECT) {
			s->live_suspicions++;
		}
		return;
	}
	int32_t k = s->crash_of[a];
	if (k < 0)
		return;
	size_t at = (size_t)k * s->p->nodes + viewer;
	if (s->sus_at[at] == UINT64_MAX)
		s->sus_at[at] = s->now;
	if (to == MEMBER_DEAD && s->dead_at[at] == UINT64_MAX) {
		s->dead_at[at] = s->now;
		s->dead_by_timer[k] += by_timer;
	}
}

static double wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void run_until(msim *s, uint64_t end)
{
	while (!s->err) {
		uint64_t tw = s->nth ? wake(s, s->th[0]) : UINT64_MAX;
		uint64_t tm = s->nq ? s->q[0].at : UINT64_MAX;
		if (tw > end && tm > end)
			break;
		s->events++;
		if (tm <= tw) {
			flight f = q_pop(s);
			s->now = f.at;
			uint32_t to = f.m.to;
			if (to < s->p->nodes && s->up[to]) {
				member_on_msg(s->node[to], s->now, &f.m);
				th_fix(s, to);
			}
			free(f.u);
		} else {
			uint32_t i = s->th[0];
			if (tw > s->now) /* a wake-up already due is due now, not in the past */
				s->now = tw;
			member_tick(s->node[i], s->now);
			th_fix(s, i);
		}
	}
	s->now = end;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof *v, cmp_u64);
	return v[n / 2];
}

static void measure(msim *s, membersim_result *r)
{
	const membersim_params *p = s->p;
	uint32_t n = p->nodes, K = p->crashes;
	uint64_t *tmp = malloc((size_t)(n > K ? n : K) * 7 * sizeof *tmp);
	if (!tmp) {
		s->err = RN_ENOMEM;
		return;
	}
	uint64_t *fd = tmp + n, *ld = fd + K, *fs = ld + K, *ls = fs + K, *fp = ls + K,
	         *p9 = fp + K;
	uint32_t everywhere = 0;
	for (uint32_t k = 0; k < K; k++) {
		membersim_crash *c = &r->crash[k];
		c->first_suspect_ms = c->first_dead_ms = UINT64_MAX;
		c->last_suspect_ms = c->last_dead_ms = 0;
		uint32_t known = 0, suspected = 0;
		size_t nt = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (!s->up[i])
				continue;
			uint64_t sa = s->sus_at[(size_t)k * n + i],
			         da = s->dead_at[(size_t)k * n + i];
			if (sa != UINT64_MAX) {
				suspected++;
				sa -= s->crash_at[k];
				c->first_suspect_ms =
				    sa < c->first_suspect_ms ? sa : c->first_suspect_ms;
				c->last_suspect_ms =
				    sa > c->last_suspect_ms ? sa : c->last_suspect_ms;
			}
			if (da != UINT64_MAX) {
				known++;
				da -= s->crash_at[k];
				tmp[nt++] = da;
				c->first_dead_ms = da < c->first_dead_ms ? da : c->first_dead_ms;
				c->last_dead_ms = da > c->last_dead_ms ? da : c->last_dead_ms;
			}
		}
		c->known_by = known;
		c->median_dead_ms = median(tmp, nt); /* sorts tmp */
		c->p90_dead_ms = nt ? tmp[(nt * 9) / 10 < nt ? (nt * 9) / 10 : nt - 1] : 0;
		c->first_probe_ms = s->first_probe[k] == UINT64_MAX
		                        ? UINT64_MAX
		                        : s->first_probe[k] - s->crash_at[k];
		c->dead_by_timer = s->dead_by_timer[k];
		if (known == r->live_nodes && suspected == r->live_nodes) {
			fd[everywhere] = c->first_dead_ms;
			ld[everywhere] = c->last_dead_ms;
			fs[everywhere] = c->first_suspect_ms;
			ls[everywhere] = c->last_suspect_ms;
			fp[everywhere] = c->first_probe_ms;
			p9[everywhere] = c->p90_dead_ms;
			if (c->last_dead_ms > r->max_last_dead_ms)
				r->max_last_dead_ms = c->last_dead_ms;
			everywhere++;
		}
	}
	r->crashes_known_everywhere = everywhere;
	r->med_first_dead_ms = median(fd, everywhere);
	r->med_last_dead_ms = median(ld, everywhere);
	r->med_first_suspect_ms = median(fs, everywhere);
	r->med_last_suspect_ms = median(ls, everywhere);
	r->med_first_probe_ms = median(fp, everywhere);
	r->med_p90_dead_ms = median(p9, everywhere);
	free(tmp);
}

static void msim_free(msim *s)
{
	if (s->node)
		for (uint32_t i = 0; i < s->p->nodes; i++)
			member_free(s->node[i]);
	for (size_t i = 0; i < s->nq; i++)
		free(s->q[i].u);
	free(s->q);
	free(s->node);
	free(s->ctx);
	free(s->up);
	free(s->th);
	free(s->tpos);
	free(s->crash_of);
	free(s->crashed);
	free(s->crash_at);
	free(s->sus_at);
	free(s->dead_at);
	free(s->falsely_dead);
	free(s->first_probe);
	free(s->dead_by_timer);
	free(s->declared);
}

int membersim_run(const membersim_params *p, membersim_result *r)
{
	memset(r, 0, sizeof *r);
	uint32_t n = p->nodes, K = p->crashes;
	msim s = {.p = p, .cfg = p->member};
	s.cfg.max_addr = s.cfg.max_members = n;
	if (member_config_check(&s.cfg) < 0)
		return RN_EINVAL;
	rn_rng_seed(&s.rng, p->seed);
	double t0 = wall_ms();
	s.node = calloc(n, sizeof *s.node);
	s.ctx = calloc(n, sizeof *s.ctx);
	s.up = calloc(n, sizeof *s.up);
	s.th = calloc(n, sizeof *s.th);
	s.tpos = calloc(n, sizeof *s.tpos);
	s.crash_of = malloc(n * sizeof *s.crash_of);
	s.crashed = calloc(K + 1, sizeof *s.crashed);
	s.crash_at = calloc(K + 1, sizeof *s.crash_at);
	s.sus_at = malloc(((size_t)K * n + 1) * sizeof *s.sus_at);
	s.dead_at = malloc(((size_t)K * n + 1) * sizeof *s.dead_at);
	s.falsely_dead = calloc(n, sizeof *s.falsely_dead);
	s.first_probe = malloc((K + 1) * sizeof *s.first_probe);
	s.dead_by_timer = calloc(K + 1, sizeof *s.dead_by_timer);
	s.declared = calloc(n, sizeof *s.declared);
	r->crash = calloc(K + 1, sizeof *r->crash);
	int rc = RN_ENOMEM;
	if (!s.node || !s.ctx || !s.up || !s.th || !s.tpos || !s.crash_of || !s.crashed ||
	    !s.crash_at || !s.sus_at || !s.dead_at || !s.falsely_dead || !s.first_probe ||
	    !s.dead_by_timer || !s.declared || !r->crash)
		goto out;
	for (uint32_t k = 0; k <= K; k++)
		s.first_probe[k] = UINT64_MAX;
	for (size_t i = 0; i < (size_t)K * n; i++)
		s.sus_at[i] = s.dead_at[i] = UINT64_MAX;
	for (uint32_t i = 0; i < n; i++) {
		s.crash_of[i] = -1;
		s.ctx[i] = (who){&s, i};
		member_driver d = {on_send, on_changed, &s.ctx[i]};
		s.node[i] = member_new(&s.cfg, &d, i, 0, rn_rng_next(&s.rng), 0);
		if (!s.node[i])
			goto out;
		s.up[i] = true;
	}
	/* static bootstrap: everyone knows everyone, as after a long quiet time */
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < n; j++)
			member_add(s.node[i], 0, j);
		s.th[i] = i;
		s.tpos[i] = i;
		r->node_bytes += member_mem(s.node[i]);
	}
	s.nth = n;
	for (uint32_t i = n; i-- > 0;)
		th_fix(&s, i);
	r->suspicion_timeout_ms = member_suspicion_timeout(s.node[0]);
	r->retransmit_limit = member_retransmit_limit(s.node[0]);
	/* which nodes crash, and when: in the first half of the measured run */
	for (uint32_t k = 0; k < K; k++) {
		uint32_t c;
		do
			c = (uint32_t)rn_rng_below(&s.rng, n);
		while (s.crash_of[c] >= 0);
		s.crash_of[c] = (int32_t)k;
		s.crashed[k] = c;
		s.crash_at[k] = (uint64_t)p->warmup_s * 1000 + 1 +
		                rn_rng_below(&s.rng, (uint64_t)p->run_s * 500);
	}
	run_until(&s, (uint64_t)p->warmup_s * 1000);
	s.measuring = true;
	/* crashes in time order (K is small: a selection each time) */
	bool *done = calloc(K + 1, sizeof *done);
	if (!done)
		goto out;
	for (uint32_t step = 0; step < K && !s.err; step++) {
		uint32_t k = UINT32_MAX;
		for (uint32_t j = 0; j < K; j++)
			if (!done[j] && (k == UINT32_MAX || s.crash_at[j] < s.crash_at[k]))
				k = j;
		done[k] = true;
		run_until(&s, s.crash_at[k]);
		s.up[s.crashed[k]] = false;
		th_remove(&s, s.crashed[k]);
	}
	free(done);
	run_until(&s, ((uint64_t)p->warmup_s + p->run_s) * 1000);
	if (s.err) {
		rc = s.err;
		goto out;
	}
	r->nodes = n;
	r->crashes = K;
	r->live_nodes = n - K;
	for (uint32_t i = 0; i < n; i++) {
		r->false_dead_nodes += s.falsely_dead[i];
		r->refutations += member_get_stats(s.node[i])->refuted;
	}
	r->false_deaths = s.false_deaths;
	r->live_suspicions = s.live_suspicions;
	r->messages = s.msgs;
	r->lost = s.lost;
	r->events = s.events;
	double secs = (double)p->run_s;
	r->msgs_per_node_s = (double)s.msgs / secs / (double)n;
	r->bytes_per_node_s = (double)s.bytes / secs / (double)n;
	r->updates_per_msg = s.msgs ? (double)s.updates / (double)s.msgs : 0.0;
	measure(&s, r);
	rc = s.err;
	r->wall_ms = wall_ms() - t0;
out:
	msim_free(&s);
	if (rc < 0)
		membersim_result_free(r);
	return rc;
}

void membersim_result_free(membersim_result *r)
{
	free(r->crash);
	r->crash = NULL;
}
