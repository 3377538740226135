/* castsim.c — see castsim.h. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "../lib/rng.h"
#include "castsim.h"

/* ---- topology and trace files ---- */

static int vfind(const cs_topo *t, const char *name)
{
	for (int i = 0; i < t->nv; i++)
		if (!strcmp(t->v[i].name, name))
			return i;
	return -1;
}

static int lfind(const cs_topo *t, int a, int b)
{
	for (int i = 0; i < t->nl; i++)
		if ((t->l[i].a == a && t->l[i].b == b) || (t->l[i].a == b && t->l[i].b == a))
			return i;
	return -1;
}

/* "10ms", "10", "1.5s" -> ms; -1 when malformed. */
static double parse_ms(const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || v < 0)
		return -1;
	if (!*end || !strcmp(end, "ms"))
		return v;
	if (!strcmp(end, "s"))
		return v * 1000;
	if (!strcmp(end, "us"))
		return v / 1000;
	return -1;
}

int cs_hosts(const cs_topo *t)
{
	int n = 0;
	for (int i = 0; i < t->nv; i++)
		n += !t->v[i].is_switch;
	return n;
}

void cs_topo_free(cs_topo *t)
{
	free(t->v);
	free(t->l);
	free(t->ch);
	free(t->via);
	memset(t, 0, sizeof *t);
}

/* The next line of f without its comment (NULL at the end); *ln counts lines. */
static char *next_line(FILE *f, char *line, int size, int *ln)
{
	if (!fgets(line, size, f))
		return NULL;
	(*ln)++;
	char *hash = strchr(line, '#');
	if (hash)
		*hash = 0;
	return line;
}

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		snprintf(err, errlen, __VA_ARGS__);                                                \
		goto fail;                                                                         \
	} while (0)

int cs_topo_load(const char *path, cs_topo *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof *t);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read %s", path);
		return -1;
	}
	size_t capv = 0, capl = 0, capp = 0;
	char line[1024];
	int ln = 0;
	while (next_line(f, line, sizeof line, &ln)) {
		char w[8][128];
		int n = sscanf(line, "%127s %127s %127s %127s %127s %127s %127s %127s", w[0], w[1],
		               w[2], w[3], w[4], w[5], w[6], w[7]);
		if (n <= 0)
			continue;
		if (!strcmp(w[0], "host") || !strcmp(w[0], "switch")) {
			if (n != 2 || strlen(w[1]) >= CAST_NAME_MAX)
				FAIL("%s:%d: '%s NAME' (a name of 1..63 bytes)", path, ln, w[0]);
			if (vfind(t, w[1]) >= 0)
				FAIL("%s:%d: '%s' is named twice", path, ln, w[1]);
			if (t->nv >= CS_MAX_VERTS ||
			    rn_grow((void **)&t->v, &capv, (size_t)t->nv + 1, sizeof *t->v, 16) < 0)
				FAIL("%s:%d: too many hosts and switches", path, ln);
			cs_vertex *v = &t->v[t->nv++];
			memcpy(v->name, w[1], strlen(w[1]) + 1);
			v->is_switch = w[0][0] == 's';
		} else if (!strcmp(w[0], "link")) {
			if (n != 7)
				FAIL("%s:%d: 'link A B MBITS DELAY QUEUE LOSS'", path, ln);
			int a = vfind(t, w[1]), b = vfind(t, w[2]);
			double mbps = atof(w[3]), d = parse_ms(w[4]), loss = atof(w[6]);
			if (a < 0 || b < 0 || a == b)
				FAIL("%s:%d: a link between two different hosts or switches named "
				     "before",
				     path, ln);
			if (mbps <= 0 || d < 0 || loss < 0 || loss > 100)
				FAIL(
				    "%s:%d: a link needs MBITS > 0, a DELAY like 10ms, LOSS 0..100",
				    path, ln);
			if (rn_grow((void **)&t->l, &capl, (size_t)t->nl + 1, sizeof *t->l, 16) < 0)
				FAIL("out of memory");
			t->l[t->nl++] = (cs_link){a, b, mbps, d, loss};
		} else if (!strcmp(w[0], "path")) {
			/* a route between two hosts through one switch picks that switch; longer
			 * routes cross hosts, which the model relays through their nodes anyway */
			int a = vfind(t, w[1]), sw = n > 2 ? vfind(t, w[2]) : -1,
			    b = n == 4 ? vfind(t, w[3]) : -1;
			if (n == 4 && a >= 0 && b >= 0 && sw >= 0 && t->v[sw].is_switch) {
				if (rn_grow((void **)&t->via, &capp, (size_t)t->nvia + 1,
				            sizeof *t->via, 8) < 0)
					FAIL("out of memory");
				t->via[t->nvia][0] = a;
				t->via[t->nvia][1] = sw;
				t->via[t->nvia++][2] = b;
			}
		} else {
			FAIL("%s:%d: unknown statement '%s' (host, switch, link, path)", path, ln,
			     w[0]);
		}
	}
	fclose(f);
	f = NULL;
	t->src = vfind(t, "src");
	for (int i = 0; i < t->nv && t->src < 0; i++)
		if (!t->v[i].is_switch)
			t->src = i;
	if (t->src < 0 || t->v[t->src].is_switch || cs_hosts(t) < 2)
		FAIL("%s: needs at least two hosts", path);
	return 0;
fail:
	if (f)
		fclose(f);
	cs_topo_free(t);
	return -1;
}

int cs_trace_load(const char *path, cs_topo *t, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read %s", path);
		return -1;
	}
	size_t cap = (size_t)t->nch;
	char line[1024];
	int ln = 0;
	while (next_line(f, line, sizeof line, &ln)) {
		char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);
		if (!tok)
			continue;
		cs_change c = {atof(tok), -1, -1, -1};
		char a[CAST_NAME_MAX] = "", b[CAST_NAME_MAX] = "";
		tok = strtok_r(NULL, " \t\r\n", &save);
		if (!tok || strcmp(tok, "link"))
			FAIL("%s:%d: '<ms> link node1=A node2=B KEY=VALUE...'", path, ln);
		while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
			char *eq = strchr(tok, '=');
			if (!eq)
				FAIL("%s:%d: '%s' is not KEY=VALUE", path, ln, tok);
			*eq++ = 0;
			if (strlen(eq) >= CAST_NAME_MAX)
				FAIL("%s:%d: '%s' is too long for a name", path, ln, eq);
			if (!strcmp(tok, "node1"))
				memcpy(a, eq, strlen(eq) + 1);
			else if (!strcmp(tok, "node2"))
				memcpy(b, eq, strlen(eq) + 1);
			else if (!strcmp(tok, "bw"))
				c.mbps = atof(eq);
			else if (!strcmp(tok, "delay"))
				c.delay_ms = parse_ms(eq);
			/* loss and max_queue_size: not in a fluid model */
		}
		c.link = lfind(t, vfind(t, a), vfind(t, b));
		if (c.link < 0)
			FAIL("%s:%d: no link between '%s' and '%s'", path, ln, a, b);
		if (rn_grow((void **)&t->ch, &cap, (size_t)t->nch + 1, sizeof *t->ch, 16) < 0)
			FAIL("out of memory");
		t->ch[t->nch++] = c;
	}
	fclose(f);
	return 0;
fail:
	fclose(f);
	return -1;
}

/* ---- the lower bound ---- */

/* Max flow from s to d over directed capacities cap[u * nv + v] (Edmonds-Karp). */
static double maxflow(int nv, const double *cap, int s, int d)
{
	double *r = malloc((size_t)nv * nv * sizeof *r);
	int *prev = malloc((size_t)nv * sizeof *prev), *q = malloc((size_t)nv * sizeof *q);
	double flow = 0;
	if (!r || !prev || !q)
		goto out;
	memcpy(r, cap, (size_t)nv * nv * sizeof *r);
	for (;;) {
		for (int i = 0; i < nv; i++)
			prev[i] = -1;
		prev[s] = s;
		int qh = 0, qt = 0;
		q[qt++] = s;
		while (qh < qt && prev[d] < 0) {
			int u = q[qh++];
			for (int v = 0; v < nv; v++)
				if (prev[v] < 0 && r[u * nv + v] > 1e-9) {
					prev[v] = u;
					q[qt++] = v;
				}
		}
		if (prev[d] < 0)
			break;
		double aug = DBL_MAX;
		for (int v = d; v != s; v = prev[v])
			aug = fmin(aug, r[prev[v] * nv + v]);
		for (int v = d; v != s; v = prev[v]) {
			r[prev[v] * nv + v] -= aug;
			r[v * nv + prev[v]] += aug;
		}
		flow += aug;
	}
out:
	free(r);
	free(prev);
	free(q);
	return flow;
}

void cs_lower_bound(const cs_topo *t, uint64_t bytes, cs_bound *b)
{
	int nv = t->nv;
	double bits = (double)bytes * 8;
	memset(b, 0, sizeof *b);
	double *cap = calloc((size_t)nv * nv, sizeof *cap);
	double *dist = malloc((size_t)nv * sizeof *dist);
	bool *seen = calloc((size_t)nv, 1);
	if (!cap || !dist || !seen)
		goto out;
	double upload = 0;
	for (int i = 0; i < t->nl; i++) {
		const cs_link *l = &t->l[i];
		cap[l->a * nv + l->b] += l->mbps * 1e6;
		cap[l->b * nv + l->a] += l->mbps * 1e6;
		if (!t->v[l->a].is_switch)
			upload += l->mbps * 1e6;
		if (!t->v[l->b].is_switch)
			upload += l->mbps * 1e6;
	}
	/* shortest propagation delay from the source (Dijkstra, small graphs) */
	for (int i = 0; i < nv; i++)
		dist[i] = DBL_MAX;
	dist[t->src] = 0;
	for (int it = 0; it < nv; it++) {
		int u = -1;
		for (int i = 0; i < nv; i++)
			if (!seen[i] && dist[i] < DBL_MAX && (u < 0 || dist[i] < dist[u]))
				u = i;
		if (u < 0)
			break;
		seen[u] = true;
		for (int i = 0; i < t->nl; i++) {
			const cs_link *l = &t->l[i];
			int v = l->a == u ? l->b : l->b == u ? l->a : -1;
			if (v >= 0 && dist[u] + l->delay_ms < dist[v])
				dist[v] = dist[u] + l->delay_ms;
		}
	}
	double minflow = DBL_MAX, far = 0;
	int m = 0;
	for (int d = 0; d < nv; d++) {
		if (t->v[d].is_switch || d == t->src)
			continue;
		m++;
		minflow = fmin(minflow, maxflow(nv, cap, t->src, d));
		far = fmax(far, dist[d]);
	}
	b->cut_s = minflow > 0 && minflow < DBL_MAX ? bits / minflow : INFINITY;
	b->upload_s = upload > 0 ? m * bits / upload : INFINITY;
	b->delay_s = far / 1000.0;
	b->bound_s = fmax(b->cut_s, b->upload_s) + b->delay_s;
out:
	free(cap);
	free(dist);
	free(seen);
}

/* ---- the simulated network ---- */

typedef struct item {
	struct item *next;
	bool piece;
	uint32_t idx, len;
	double left;  /* bytes of a piece still to send */
	uint8_t *msg; /* an encoded control message */
	size_t mlen;
} item;

typedef struct {
	int from, to; /* hosts (vertex indices) */
	int edge[2];  /* directed edges: 2 * link + (0: a -> b, 1: b -> a) */
	int nedge;
	uint32_t link; /* the core's link id: the pair's index */
	item *head, *tail;
	double rate;
	double last_arrival;
	bool frozen; /* max-min filling */
} conn;

enum { EV_ARRIVE, EV_TICK, EV_TRACE };

typedef struct {
	double t;
	uint64_t seq;
	int kind;
	int a;
	item *it;
} event;

typedef struct sim_host {
	struct csim *s;
	int v;
	cast_node *core;
	uint8_t *disk; /* pieces held on (simulated) disk */
	uint8_t *dups; /* per piece: arrivals while held */
	double tick_at;
	double done;
} sim_host;

typedef struct csim {
	const cs_topo *t;
	const cs_opts *o;
	rn_rng rng;
	double now;
	sim_host *h; /* per vertex (switches unused) */
	conn *c;
	int nc;
	double *cap; /* per directed edge, bytes/s */
	double *delay;
	event *heap;
	size_t nheap, capheap;
	uint64_t seq;
	double flows_at; /* flows advanced to this time */
	double next_done;
	uint8_t *zero; /* the bytes every simulated piece carries */
	cast_info info;
	cs_result *r;
	int ndest_left;
	uint32_t npieces;
} csim;

static void push_ev(csim *s, double t, int kind, int a, item *it)
{
	if (rn_grow((void **)&s->heap, &s->capheap, s->nheap + 1, sizeof *s->heap, 256) < 0)
		return;
	event e = {t, s->seq++, kind, a, it};
	size_t i = s->nheap++;
	while (i) {
		size_t up = (i - 1) / 2;
		event *p = &s->heap[up];
		if (p->t < e.t || (p->t == e.t && p->seq < e.seq))
			break;
		s->heap[i] = *p;
		i = up;
	}
	s->heap[i] = e;
}

static event pop_ev(csim *s)
{
	event top = s->heap[0], last = s->heap[--s->nheap];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		const event *best = &last;
		if (l < s->nheap && (s->heap[l].t < best->t ||
		                     (s->heap[l].t == best->t && s->heap[l].seq < best->seq))) {
			m = l;
			best = &s->heap[l];
		}
		if (l + 1 < s->nheap &&
		    (s->heap[l + 1].t < best->t ||
		     (s->heap[l + 1].t == best->t && s->heap[l + 1].seq < best->seq)))
			m = l + 1;
		if (m == i)
			break;
		s->heap[i] = s->heap[m];
		i = m;
	}
	if (s->nheap)
		s->heap[i] = last;
	return top;
}

static uint64_t now_ms(const csim *s)
{
	return (uint64_t)(s->now * 1000.0 + 1e-6); /* 0.7 s is 700 ms, not 699 */
}

/* The directed connection from host `from` on link `link`. */
static conn *conn_of(csim *s, int from, uint32_t link)
{
	conn *c = &s->c[2 * link];
	return c->from == from ? c : c + 1;
}

static double conn_delay(const csim *s, const conn *c)
{
	double d = 0;
	for (int i = 0; i < c->nedge; i++)
		d += s->delay[c->edge[i]];
	return d;
}

/* Moves every flow on to s->now. */
static void advance(csim *s)
{
	double dt = s->now - s->flows_at;
	if (dt > 0)
		for (int i = 0; i < s->nc; i++) {
			conn *c = &s->c[i];
			if (c->head && c->head->piece && c->rate > 0)
				c->head->left -= c->rate * dt;
		}
	s->flows_at = s->now;
}

/* Max-min fair rates for the flows (progressive filling), and the next completion. */
static void reflow(csim *s)
{
	int ne = 2 * s->t->nl;
	double *left = malloc((size_t)ne * sizeof *left);
	int *users = calloc((size_t)ne, sizeof *users);
	if (!left || !users) {
		free(left);
		free(users);
		return;
	}
	memcpy(left, s->cap, (size_t)ne * sizeof *left);
	int active = 0;
	for (int i = 0; i < s->nc; i++) {
		conn *c = &s->c[i];
		c->rate = 0;
		c->frozen = !(c->head && c->head->piece);
		if (c->frozen)
			continue;
		active++;
		for (int k = 0; k < c->nedge; k++)
			users[c->edge[k]]++;
	}
	while (active) {
		int best = -1;
		double share = DBL_MAX;
		for (int e = 0; e < ne; e++)
			if (users[e] && left[e] / users[e] < share) {
				share = left[e] / users[e];
				best = e;
			}
		if (best < 0)
			break;
		if (share < 0)
			share = 0;
		for (int i = 0; i < s->nc; i++) {
			conn *c = &s->c[i];
			if (c->frozen)
				continue;
			bool on = false;
			for (int k = 0; k < c->nedge; k++)
				on |= c->edge[k] == best;
			if (!on)
				continue;
			c->rate = share;
			c->frozen = true;
			active--;
			for (int k = 0; k < c->nedge; k++) {
				left[c->edge[k]] -= share;
				users[c->edge[k]]--;
			}
		}
	}
	free(left);
	free(users);
	s->next_done = INFINITY;
	for (int i = 0; i < s->nc; i++) {
		conn *c = &s->c[i];
		if (c->head && c->head->piece && c->rate > 0)
			s->next_done =
			    fmin(s->next_done, s->now + fmax(c->head->left, 0) / c->rate);
	}
}

/* The head of c has left: it arrives one propagation delay later, after what left before. */
static void send_head(csim *s, conn *c)
{
	item *it = c->head;
	c->head = it->next;
	if (!c->head)
		c->tail = NULL;
	double at = fmax(s->now + conn_delay(s, c) / 1000.0, c->last_arrival);
	c->last_arrival = at;
	push_ev(s, at, EV_ARRIVE, (int)(c - s->c), it);
}

/* Sends the control messages at the head of c (they take no bandwidth). */
static void flush_control(csim *s, conn *c)
{
	while (c->head && !c->head->piece)
		send_head(s, c);
}

static void enqueue(csim *s, conn *c, item *it)
{
	it->next = NULL;
	bool was_idle = !c->head;
	if (c->tail)
		c->tail->next = it;
	else
		c->head = it;
	c->tail = it;
	if (was_idle) {
		flush_control(s, c);
		if (it->piece) {
			advance(s);
			reflow(s);
		}
	}
}

static void arm_tick(csim *s, sim_host *h)
{
	double w = (double)cast_wake_at(h->core) / 1000.0;
	if (w < s->now)
		w = s->now;
	if (w < h->tick_at) {
		h->tick_at = w;
		push_ev(s, w, EV_TICK, h->v, NULL);
	}
}

/* ---- the driver each simulated host gives its core ---- */

static void d_send(void *ctx, uint32_t link, const cast_msg *m)
{
	sim_host *h = ctx;
	csim *s = h->s;
	item *it = calloc(1, sizeof *it);
	if (!it)
		return;
	it->mlen = cast_encoded_size(m);
	it->msg = malloc(it->mlen);
	if (!it->msg) {
		free(it);
		return;
	}
	cast_encode(m, it->msg);
	enqueue(s, conn_of(s, h->v, link), it);
}

static uint32_t plen(const cast_info *x, uint32_t p)
{
	return p + 1 == x->npieces ? (uint32_t)(x->size - (uint64_t)p * x->piece_size)
	                           : x->piece_size;
}

static int d_send_piece(void *ctx, uint32_t link, const cast_info *x, uint32_t p)
{
	sim_host *h = ctx;
	if (!h->disk[p])
		return RN_EPROTO;
	item *it = calloc(1, sizeof *it);
	if (!it)
		return RN_ENOMEM;
	it->piece = true;
	it->idx = p;
	it->len = plen(x, p);
	it->left = it->len;
	enqueue(h->s, conn_of(h->s, h->v, link), it);
	return 0;
}

static int d_open(void *ctx, const cast_info *x, uint8_t *held)
{
	sim_host *h = ctx;
	memcpy(held, h->disk, x->npieces);
	return 0;
}

static int d_store(void *ctx, const cast_info *x, uint32_t p, const uint8_t *data, uint32_t len)
{
	(void)data;
	(void)len;
	(void)x;
	sim_host *h = ctx;
	csim *s = h->s;
	if (s->o->corrupt_p > 0 && rn_rng_unit(&s->rng) < s->o->corrupt_p) {
		s->r->corrupt_injected++;
		return RN_EPROTO;
	}
	h->disk[p] = 1;
	return 0;
}

static int d_complete(void *ctx, const cast_info *x, bool publish, uint8_t *bad)
{
	(void)bad;
	(void)publish;
	sim_host *h = ctx;
	for (uint32_t p = 0; p < x->npieces; p++)
		if (!h->disk[p])
			return RN_EIO; /* the core thinks it is done: the oracle says not */
	if (h->done < 0) {
		h->done = h->s->now;
		h->s->ndest_left--;
	}
	return 0;
}

/* ---- running ---- */

static void deliver(csim *s, conn *c, item *it)
{
	sim_host *h = &s->h[c->to];
	cast_msg m;
	cast_info info;
	void *scratch = NULL;
	if (it->piece) {
		s->r->deliveries++;
		if (h->disk[it->idx]) {
			s->r->dup_arrivals++;
			if (h->dups[it->idx] < 255)
				h->dups[it->idx]++;
			if (h->dups[it->idx] > s->r->max_dup_per_piece)
				s->r->max_dup_per_piece = h->dups[it->idx];
		}
		if (s->o->preheld && s->o->preheld[c->to] && s->o->preheld[c->to][it->idx])
			s->r->preheld_received++;
		m = (cast_msg){.type = CAST_MSG_PIECE,
		               .xfer = s->info.xfer,
		               .piece = it->idx,
		               .data = s->zero,
		               .len = it->len};
		cast_on_msg(h->core, now_ms(s), c->link, &m);
	} else if (cast_decode(it->msg, it->mlen, &m, &info, &scratch) == 0) {
		if (m.type == CAST_MSG_ANNOUNCE)
			s->info.xfer = m.info->xfer;
		cast_on_msg(h->core, now_ms(s), c->link, &m);
	}
	free(scratch);
	arm_tick(s, h);
}

/* Pieces whose last byte left: they go on their way, the senders hear of it. */
static void complete_flows(csim *s)
{
	advance(s);
	for (int i = 0; i < s->nc; i++) {
		conn *c = &s->c[i];
		if (!c->head || !c->head->piece || c->rate <= 0 || c->head->left > 1e-6 * c->rate)
			continue;
		send_head(s, c);
		flush_control(s, c);
		sim_host *h = &s->h[c->from];
		cast_on_sent(h->core, now_ms(s), c->link);
		arm_tick(s, h);
	}
	advance(s);
	reflow(s);
}

static void free_item(item *it)
{
	free(it->msg);
	free(it);
}

int cs_run(const cs_topo *t, const cs_opts *o, cs_result *r)
{
	memset(r, 0, sizeof *r);
	if (!o->size)
		return RN_EINVAL;
	csim S, *s = &S;
	memset(s, 0, sizeof *s);
	s->t = t;
	s->o = o;
	s->r = r;
	rn_rng_seed(&s->rng, o->seed ^ 0x5eed);
	uint32_t piece = o->piece_size ? o->piece_size : cast_default_piece(o->size);
	uint64_t np64 = (o->size + piece - 1) / piece;
	if (piece < CAST_PIECE_MIN || piece > CAST_PIECE_MAX || np64 > CAST_MAX_PIECES)
		return RN_EINVAL;
	uint32_t np = (uint32_t)np64;
	s->npieces = np;
	r->npieces = np;
	r->piece_size = piece;
	int nv = t->nv, ne = 2 * t->nl;
	s->h = calloc((size_t)nv, sizeof *s->h);
	s->cap = malloc((size_t)ne * sizeof *s->cap);
	s->delay = malloc((size_t)ne * sizeof *s->delay);
	s->zero = calloc(piece, 1);
	r->done_s = malloc((size_t)nv * sizeof *r->done_s);
	r->held = calloc((size_t)nv, sizeof *r->held);
	uint8_t *hashes = calloc(np, 32);
	int rc = RN_ENOMEM;
	if (!s->h || !s->cap || !s->delay || !s->zero || !r->done_s || !r->held || !hashes)
		goto out;
	for (int i = 0; i < t->nl; i++) {
		s->cap[2 * i] = s->cap[2 * i + 1] = t->l[i].mbps * 1e6 / 8;
		s->delay[2 * i] = s->delay[2 * i + 1] = t->l[i].delay_ms;
	}
	/* neighbours: hosts that share a link or a switch */
	size_t capc = 0;
	for (int a = 0; a < nv; a++)
		for (int b = a + 1; b < nv; b++) {
			if (t->v[a].is_switch || t->v[b].is_switch)
				continue;
			int ea[2], eb[2], n = 0;
			int direct = lfind(t, a, b);
			if (direct >= 0) {
				ea[0] = 2 * direct + (t->l[direct].a == a ? 0 : 1);
				eb[0] = ea[0] ^ 1;
				n = 1;
			} else {
				int pick = -1; /* a "path" statement names the switch */
				for (int i = 0; i < t->nvia; i++)
					if ((t->via[i][0] == a && t->via[i][2] == b) ||
					    (t->via[i][0] == b && t->via[i][2] == a))
						pick = t->via[i][1];
				for (int sw = 0; sw < nv && !n; sw++) {
					if (!t->v[sw].is_switch || (pick >= 0 && sw != pick))
						continue;
					int la = lfind(t, a, sw), lb = lfind(t, sw, b);
					if (la < 0 || lb < 0)
						continue;
					ea[0] = 2 * la + (t->l[la].a == a ? 0 : 1);  /* a -> sw */
					ea[1] = 2 * lb + (t->l[lb].a == sw ? 0 : 1); /* sw -> b */
					eb[0] = ea[1] ^ 1;
					eb[1] = ea[0] ^ 1;
					n = 2;
				}
			}
			if (!n)
				continue;
			if (rn_grow((void **)&s->c, &capc, (size_t)s->nc + 2, sizeof *s->c, 64) < 0)
				goto out;
			uint32_t link = (uint32_t)(s->nc / 2);
			conn *x = &s->c[s->nc++], *y = &s->c[s->nc++];
			memset(x, 0, sizeof *x);
			memset(y, 0, sizeof *y);
			*x = (conn){.from = a, .to = b, .nedge = n, .link = link};
			*y = (conn){.from = b, .to = a, .nedge = n, .link = link};
			memcpy(x->edge, ea, sizeof ea);
			memcpy(y->edge, eb, sizeof eb);
		}
	for (int v = 0; v < nv; v++) {
		sim_host *h = &s->h[v];
		r->done_s[v] = -1;
		if (t->v[v].is_switch)
			continue;
		h->s = s;
		h->v = v;
		h->done = -1;
		h->tick_at = INFINITY;
		h->disk = calloc(np, 1);
		h->dups = calloc(np, 1);
		if (!h->disk || !h->dups)
			goto out;
		if (v == t->src)
			memset(h->disk, 1, np); /* the source holds the file */
		else if (o->preheld && o->preheld[v])
			memcpy(h->disk, o->preheld[v], np);
		cast_config cfg;
		cast_config_default(&cfg);
		snprintf(cfg.self, sizeof cfg.self, "%s", t->v[v].name);
		cfg.seed = o->seed * 1000003 + (uint64_t)v;
		cast_driver d = {h, d_send, d_send_piece, d_open, d_store, d_complete};
		h->core = cast_new(&cfg, &d);
		if (!h->core)
			goto out;
		if (v != t->src)
			s->ndest_left++;
	}
	for (int i = 0; i < s->nc; i += 2) {
		conn *c = &s->c[i];
		cast_link_up(s->h[c->from].core, 0, c->link, t->v[c->to].name);
		cast_link_up(s->h[c->to].core, 0, c->link, t->v[c->from].name);
	}
	for (int i = 0; i < t->nch; i++)
		push_ev(s, t->ch[i].at_ms / 1000.0, EV_TRACE, i, NULL);
	cast_info x = {.size = o->size,
	               .piece_size = piece,
	               .npieces = np,
	               .hashes = hashes,
	               .start_wall_ms = 1};
	snprintf(x.name, sizeof x.name, "sim.bin");
	rc = cast_start(s->h[t->src].core, 0, &x);
	if (rc < 0)
		goto out;
	s->info.xfer = cast_current(s->h[t->src].core)->xfer;
	for (int v = 0; v < nv; v++)
		if (!t->v[v].is_switch)
			arm_tick(s, &s->h[v]);
	reflow(s);
	double max_s = o->max_s > 0 ? o->max_s : 3600;
	while (s->ndest_left > 0) {
		double te = s->nheap ? s->heap[0].t : INFINITY;
		if (fmin(te, s->next_done) > max_s)
			break;
		r->events++;
		if (s->next_done <= te) {
			s->now = s->next_done;
			complete_flows(s);
			continue;
		}
		event e = pop_ev(s);
		s->now = e.t;
		if (e.kind == EV_ARRIVE) {
			deliver(s, &s->c[e.a], e.it);
			free_item(e.it);
		} else if (e.kind == EV_TICK) {
			sim_host *h = &s->h[e.a];
			if (e.t != h->tick_at)
				continue;
			h->tick_at = INFINITY;
			cast_tick(h->core, now_ms(s));
			arm_tick(s, h);
		} else {
			const cs_change *ch = &t->ch[e.a];
			advance(s);
			if (ch->mbps >= 0)
				s->cap[2 * ch->link] = s->cap[2 * ch->link + 1] =
				    ch->mbps * 1e6 / 8;
			if (ch->delay_ms >= 0)
				s->delay[2 * ch->link] = s->delay[2 * ch->link + 1] = ch->delay_ms;
			reflow(s);
		}
	}
	rc = 0;
	r->complete = s->ndest_left == 0;
	for (int v = 0; v < nv; v++) {
		sim_host *h = &s->h[v];
		if (t->v[v].is_switch)
			continue;
		for (uint32_t p = 0; p < np; p++)
			r->held[v] += h->disk[p];
		if (v != t->src) {
			r->done_s[v] = h->done;
			r->u_s = fmax(r->u_s, h->done);
		}
		const cast_stats *st = cast_get_stats(h->core);
		if (v == t->src)
			r->src_pieces_out = st->pieces_out;
		r->total.pieces_in += st->pieces_in;
		r->total.pieces_out += st->pieces_out;
		r->total.bytes_in += st->bytes_in;
		r->total.bytes_out += st->bytes_out;
		r->total.dup_in += st->dup_in;
		r->total.endgame_req += st->endgame_req;
		r->total.corrupt += st->corrupt;
		r->total.resumed += st->resumed;
		r->total.stalls += st->stalls;
		r->total.cancels += st->cancels;
		r->total.capped += st->capped;
	}
	if (!r->complete)
		r->u_s = -1;
out:
	for (int v = 0; s->h && v < nv; v++) {
		cast_free(s->h[v].core);
		free(s->h[v].disk);
		free(s->h[v].dups);
	}
	for (int i = 0; i < s->nc; i++)
		for (item *it = s->c[i].head, *nx; it; it = nx) {
			nx = it->next;
			free_item(it);
		}
	while (s->nheap) {
		event e = pop_ev(s);
		if (e.it)
			free_item(e.it);
	}
	free(s->heap);
	free(s->h);
	free(s->c);
	free(s->cap);
	free(s->delay);
	free(s->zero);
	free(hashes);
	return rc;
}

void cs_result_free(cs_result *r)
{
	free(r->done_s);
	free(r->held);
	r->done_s = NULL;
	r->held = NULL;
}
