/* query.c — the node's driver of the query core (src/query): `ringnet node --config
 * CLUSTER --id A`. It reads the cluster file, loads this process's slices with the data
 * module, and gives the core what query.h asks: WIRE_QUERY frames over the node's own peer
 * connections (nd_send_frame; undeliverable ones come back through hand_back), local scans,
 * client replies, random numbers, log lines, and a timer at q_wake_at. The core is not
 * re-entrant: an undeliverable notice that arrives while it runs waits in a queue.
 *
 * HTTP (the HTTP thread): GET /query?..., GET /query/<uid>/chunk/<i> and GET /query/status
 * are checked there, then handed to the loop as jobs, like the key-value routes; the loop
 * answers and resumes the connection. /metrics gets the query lines from a snapshot the
 * loop publishes every SNAPSHOT_MS. */
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "../lib/rng.h"
#include "../query/data.h"
#include "../query/query.h"
#include "node_internal.h"

enum { QJ_QUERY, QJ_CHUNK, QJ_STATUS };

/* An HTTP query the core has not answered in this long gets 503 (the core's own timeouts
 * answer far sooner; this bounds what a client can make the loop hold if they did not). */
#define QUERY_DEADLINE_NS (30ull * 1000000000ull)

struct qjob {
	struct qjob *next;
	struct MHD_Connection *conn;
	int kind;
	q_filter f;
	uint32_t limit;
	char uid[24];
	uint32_t chunk;
	uint64_t req, started_ns;
	unsigned status;
	unsigned retry_s; /* Retry-After on a 429 */
	char *body;
	bool done;
};

typedef struct {
	uint64_t req;
	int to;
} unreach_item;

struct nq {
	node *n;
	q_config c;
	q_plan p;
	int self;
	q_node *core;
	q_data *data;
	ring_addr addr[Q_MAX_PROCS];
	uv_timer_t timer, snap;
	uv_async_t wake;
	bool busy;
	unreach_item *uq;
	size_t nuq, uqcap;
	struct qjob *incoming; /* from the HTTP thread, under n->lock */
	struct qjob *active;   /* waiting on the core */
	uint64_t seq;
	rn_rng rng;
	q_rec *rx;                   /* decoded records of one frame */
	double load_ms, load_cpu_ms; /* wall and this process's CPU time to load its slices */
	uint64_t slices;
	q_data_stats ds;
	char *snap_prom; /* the /metrics lines, under n->lock */
	uint64_t frames_in, frames_out, bad_frames;
};

/* ---- the core's calls into the driver ---- */

static void pump(nq *q);

static void d_send(void *ctx, const q_msg *m)
{
	nq *q = ctx;
	node *n = q->n;
	if (m->to >= q->c.nprocs || q->addr[m->to] == RING_ADDR_NONE)
		return;
	size_t body = q_wire_size(m);
	pending *f = calloc(1, sizeof *f);
	uint8_t *buf = f ? malloc(WIRE_HEADER + body) : NULL;
	if (!buf || 1 + body > WIRE_MAX_FRAME) {
		free(buf);
		free(f);
		if (m->req) {
			unreach_item it = {m->req, m->to};
			if (q->nuq < q->uqcap ||
			    !rn_grow((void **)&q->uq, &q->uqcap, q->nuq + 1, sizeof *q->uq, 16))
				q->uq[q->nuq++] = it;
		}
		return;
	}
	uint32_t len = (uint32_t)(1 + body);
	buf[0] = (uint8_t)(len >> 24);
	buf[1] = (uint8_t)(len >> 16);
	buf[2] = (uint8_t)(len >> 8);
	buf[3] = (uint8_t)len;
	buf[4] = WIRE_QUERY;
	q_wire_encode(m, buf + WIRE_HEADER);
	f->buf = buf;
	f->len = WIRE_HEADER + body;
	f->kind = FRAME_QUERY;
	f->kv_req = m->req;
	f->kv_to = q->addr[m->to];
	q->frames_out++;
	nd_send_frame(n, q->addr[m->to], f);
}

static uint32_t d_scan(void *ctx, int32_t lo, int32_t hi, const q_filter *f, uint32_t limit,
                       uint32_t count_to, q_rec *out)
{
	return q_data_scan(((nq *)ctx)->data, lo, hi, f, limit, count_to, out);
}

static uint32_t d_random(void *ctx)
{
	return (uint32_t)rn_rng_next(&((nq *)ctx)->rng);
}

static void d_log(void *ctx, const char *line)
{
	LOG_I(((nq *)ctx)->n, "query: %s", line);
}

static void day_text(int32_t day, char out[12])
{
	int y, m, d;
	q_civil(day, &y, &m, &d);
	snprintf(out, 12, "%04d%02d%02d", y % 10000, m % 100, d % 100);
}

static json_t *hops_json(const nq *q, uint32_t hops)
{
	json_t *a = json_array();
	for (int i = 0; i < q->c.nprocs; i++)
		if (hops & (1u << i))
			json_array_append_new(a, json_string(q->c.procs[i].id));
	return a;
}

static json_t *slices_json(const nq *q, uint64_t mask)
{
	json_t *a = json_array();
	for (int s = 0; s < q->p.n; s++) {
		if (!(mask & (1ull << s)))
			continue;
		const q_slice *sl = &q->p.s[s];
		char lo[12], hi[12];
		day_text(sl->day_lo, lo);
		day_text(sl->day_hi, hi);
		json_array_append_new(a, json_pack("{s:i, s:s, s:s, s:s, s:s, s:s}", "slice", s,
		                                   "team", q->c.teams[sl->team].name, "from", lo,
		                                   "to", hi, "owner", q->c.procs[sl->owner].id,
		                                   "copy", q->c.procs[sl->copy].id));
	}
	return a;
}

static void job_done(nq *q, struct qjob *j, unsigned status, char *body)
{
	for (struct qjob **pp = &q->active; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	j->status = status;
	j->body = body ? body : strdup("{\"error\":\"out of memory\"}");
	pthread_mutex_lock(&q->n->lock);
	j->done = true;
	pthread_mutex_unlock(&q->n->lock);
	MHD_resume_connection(j->conn); /* the HTTP thread owns j from here on */
}

static void d_reply(void *ctx, uint64_t req, const q_answer *a)
{
	nq *q = ctx;
	struct qjob *j = q->active;
	while (j && j->req != req)
		j = j->next;
	if (!j)
		return;
	double ms = (double)(uv_hrtime() - j->started_ns) / 1e6;
	if (a->status == Q_ANS_BUSY) {
		j->retry_s = (a->retry_ms + 999) / 1000;
		job_done(q, j, 429,
		         nd_json_text(json_pack("{s:s, s:i, s:s}", "error",
		                                "too many requests for this team: try again later",
		                                "retry_after_ms", (int)a->retry_ms, "node",
		                                q->c.procs[q->self].id)));
		return;
	}
	json_t *o =
	    json_pack("{s:s, s:i, s:i, s:o, s:s, s:s, s:f}", "uid", a->uid, "total_chunks",
	              (int)a->total_chunks, "total_records", (int)a->total_records, "hops",
	              hops_json(q, a->hops), "status", a->status == Q_ANS_OK ? "ok" : "partial",
	              "node", q->c.procs[q->self].id, "ms", ms);
	if (a->missing)
		json_object_set_new(o, "missing", slices_json(q, a->missing));
	job_done(q, j, 200, nd_json_text(o));
}

/* ---- running the core ---- */

static void on_timer(uv_timer_t *t);

static void rearm(nq *q)
{
	uint64_t now = uv_now(&q->n->loop), at = q_wake_at(q->core);
	uv_timer_start(&q->timer, on_timer, at > now ? at - now : 0, 0);
}

#define Q_CALL(q, call)                                                                            \
	do {                                                                                       \
		(q)->busy = true;                                                                  \
		call;                                                                              \
		(q)->busy = false;                                                                 \
		pump(q);                                                                           \
	} while (0)

static void pump(nq *q)
{
	while (q->nuq && !q->busy) {
		unreach_item it = q->uq[--q->nuq];
		q->busy = true;
		q_on_unreachable(q->core, uv_now(&q->n->loop), it.req, it.to);
		q->busy = false;
	}
	if (!q->busy)
		rearm(q);
}

static void on_timer(uv_timer_t *t)
{
	nq *q = t->data;
	Q_CALL(q, q_tick(q->core, uv_now(&q->n->loop)));
}

void nd_query_unreachable(node *n, uint64_t req, ring_addr to)
{
	nq *q = n->query;
	if (!q || !req)
		return;
	int proc = -1;
	for (int i = 0; i < q->c.nprocs; i++)
		if (q->addr[i] == to)
			proc = i;
	if (proc < 0)
		return;
	if (q->nuq == q->uqcap &&
	    rn_grow((void **)&q->uq, &q->uqcap, q->nuq + 1, sizeof *q->uq, 16) < 0)
		return; /* the call times out instead */
	q->uq[q->nuq++] = (unreach_item){req, proc};
	pump(q);
}

int nd_query_on_frame(node *n, const uint8_t *body, size_t len,
                      bool (*sender_ok)(void *conn, ring_addr from), void *conn)
{
	nq *q = n->query;
	if (!q)
		return 0; /* not a query node: ignored, like an unknown request id */
	q_msg m;
	if (q_wire_decode(body, len, &m, q->rx) < 0 || m.from >= q->c.nprocs) {
		q->bad_frames++;
		return RN_EPROTO;
	}
	/* the process it claims to be from must listen on the host it came from (and not be
	 * this one, whose frames never come over a connection) */
	if (m.from == q->self || q->addr[m.from] == RING_ADDR_NONE ||
	    !sender_ok(conn, q->addr[m.from]))
		return RN_EPROTO;
	q->frames_in++;
	/* it is up: a frame to it may go at once, not after a connect backoff */
	if (q->addr[m.from] != RING_ADDR_NONE)
		n->peers[q->addr[m.from]].backoff_ms = 0;
	Q_CALL(q, q_on_msg(q->core, uv_now(&n->loop), &m));
	return 0;
}

/* ---- JSON of records ---- */

typedef struct {
	char *b;
	size_t len, cap;
	bool oom;
} sbuf;

static void tput(sbuf *t, const char *fmt, ...)
{
	if (t->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(t->b + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (k >= 0 && (size_t)k < t->cap - t->len) {
			t->len += (size_t)k;
			return;
		}
		size_t cap = t->cap * 2 + (size_t)(k > 0 ? k : 64);
		char *nb = realloc(t->b, cap);
		if (!nb) {
			t->oom = true;
			return;
		}
		t->b = nb;
		t->cap = cap;
	}
}

static char *chunk_body(const char *uid, uint32_t i, uint32_t total, bool last, const q_rec *r,
                        uint32_t n)
{
	sbuf t = {malloc(4096), 0, 4096, false};
	if (!t.b)
		return NULL;
	tput(&t, "{\"uid\":\"%s\",\"chunk\":%u,\"total_chunks\":%u,\"is_last\":%s,\"records\":[",
	     uid, i, total, last ? "true" : "false");
	/* a record is at most ~150 bytes: room for all first, then plain copies (this is the
	 * leader's hottest loop) */
	size_t need = t.len + (size_t)n * 192 + 16;
	if (need > t.cap) {
		char *nb = realloc(t.b, need);
		if (!nb) {
			free(t.b);
			return NULL;
		}
		t.b = nb;
		t.cap = need;
	}
	char tm[20] = "";
	int32_t tm_of = INT32_MIN;
	for (uint32_t k = 0; k < n; k++) {
		if (r[k].minute != tm_of) {
			q_format_time(r[k].minute, tm);
			tm_of = r[k].minute;
		}
		char *o = t.b + t.len;
		if (k)
			*o++ = ',';
		memcpy(o, "{\"lat\":", 7);
		o += 7;
		o += q_format_number(o, r[k].lat, r[k].lat_s);
		memcpy(o, ",\"lon\":", 7);
		o += 7;
		o += q_format_number(o, r[k].lon, r[k].lon_s);
		memcpy(o, ",\"time\":\"", 9);
		o += 9;
		memcpy(o, tm, 16);
		o += 16;
		memcpy(o, "\",\"param\":\"", 11);
		o += 11;
		size_t pl = strlen(q_param_names[r[k].param]);
		memcpy(o, q_param_names[r[k].param], pl);
		o += pl;
		memcpy(o, "\",\"value\":", 10);
		o += 10;
		o += q_format_number(o, r[k].value, r[k].val_s);
		memcpy(o, ",\"aqi\":", 7);
		o += 7;
		o += q_format_number(o, r[k].aqi, 0);
		*o++ = '}';
		t.len = (size_t)(o - t.b);
	}
	tput(&t, "]}");
	if (t.oom) {
		free(t.b);
		return NULL;
	}
	return t.b;
}

/* ---- status: /query/status and the /metrics lines (loop thread) ---- */

static char *status_json(nq *q, const q_stats *s)
{
	const q_proc *me = &q->c.procs[q->self];
	json_t *o = json_pack(
	    "{s:s, s:s, s:s, s:s, s:i, s:i, s:f, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:i}",
	    "id", me->id, "role", q_role_name(me->role), "team", q->c.teams[me->team].name,
	    "strategy", q_strategy_name(q->c.strategy), "active", (int)s->active, "queued",
	    (int)s->queued, "avg_ms", s->avg_ms, "served", (json_int_t)s->served, "rejected",
	    (json_int_t)s->rejected, "partial", (json_int_t)s->partial, "rows_loaded",
	    (json_int_t)q->ds.rows, "bad_rows", (json_int_t)q->ds.bad_rows, "load_ms", q->load_ms,
	    "data_bytes", (json_int_t)q_data_bytes(q->data), "heartbeats", (json_int_t)s->beats,
	    "result_sets", (int)s->results);
	json_object_set_new(o, "slices_loaded", slices_json(q, q->slices));
	json_object_set_new(o, "load_cpu_ms", json_real(q->load_cpu_ms));
	json_t *teams = json_object();
	for (int t = 0; t < q->c.nteams; t++)
		json_object_set_new(teams, q->c.teams[t].name,
		                    json_pack("{s:i, s:i, s:i}", "active", (int)s->team_active[t],
		                              "queued", (int)s->team_queued[t], "cap",
		                              (int)s->team_cap[t]));
	json_object_set_new(o, "teams", teams);
	json_t *nb = json_object();
	for (int i = 0; i < s->nneigh; i++)
		json_object_set_new(nb, q->c.procs[s->neigh[i].proc].id,
		                    json_pack("{s:s, s:b, s:I, s:I}", "state",
		                              s->neigh[i].up ? "up" : "failed", "breaker_open",
		                              s->neigh[i].breaker_open, "failures",
		                              (json_int_t)s->neigh[i].failures, "recoveries",
		                              (json_int_t)s->neigh[i].recoveries));
	json_object_set_new(o, "neighbors", nb);
	json_t *log = json_array();
	for (int i = 0; i < s->nlog; i++)
		json_array_append_new(log, json_string(s->log[i]));
	json_object_set_new(o, "log", log);
	return nd_json_text(o);
}

static char *prom_text(nq *q, const q_stats *s)
{
	const q_proc *me = &q->c.procs[q->self];
	sbuf t = {malloc(8192), 0, 8192, false};
	if (!t.b)
		return NULL;
	tput(&t,
	     "# HELP ringnet_query_info This process of the query tree.\n"
	     "# TYPE ringnet_query_info gauge\n"
	     "ringnet_query_info{id=\"%s\",role=\"%s\",team=\"%s\",strategy=\"%s\"} 1\n"
	     "# TYPE ringnet_query_active gauge\nringnet_query_active %u\n"
	     "# TYPE ringnet_query_queued gauge\nringnet_query_queued %u\n"
	     "# TYPE ringnet_query_avg_ms gauge\nringnet_query_avg_ms %.3f\n"
	     "# TYPE ringnet_query_served_total counter\nringnet_query_served_total %llu\n"
	     "# TYPE ringnet_query_rejected_total counter\nringnet_query_rejected_total %llu\n"
	     "# TYPE ringnet_query_partial_total counter\nringnet_query_partial_total %llu\n"
	     "# TYPE ringnet_query_slices_loaded gauge\nringnet_query_slices_loaded %d\n"
	     "# TYPE ringnet_query_rows_loaded gauge\nringnet_query_rows_loaded %llu\n"
	     "# TYPE ringnet_query_bad_rows gauge\nringnet_query_bad_rows %llu\n"
	     "# TYPE ringnet_query_load_ms gauge\nringnet_query_load_ms %.1f\n"
	     "# TYPE ringnet_query_heartbeats_total counter\nringnet_query_heartbeats_total %llu\n",
	     me->id, q_role_name(me->role), q->c.teams[me->team].name,
	     q_strategy_name(q->c.strategy), s->active, s->queued, s->avg_ms,
	     (unsigned long long)s->served, (unsigned long long)s->rejected,
	     (unsigned long long)s->partial, __builtin_popcountll(q->slices),
	     (unsigned long long)q->ds.rows, (unsigned long long)q->ds.bad_rows, q->load_ms,
	     (unsigned long long)s->beats);
	tput(&t, "# TYPE ringnet_query_team_active gauge\n");
	for (int k = 0; k < q->c.nteams; k++)
		tput(&t,
		     "ringnet_query_team_active{team=\"%s\"} "
		     "%u\nringnet_query_team_queued{team=\"%s\"} "
		     "%u\nringnet_query_team_cap{team=\"%s\"} %u\n",
		     q->c.teams[k].name, s->team_active[k], q->c.teams[k].name, s->team_queued[k],
		     q->c.teams[k].name, s->team_cap[k]);
	tput(&t, "# TYPE ringnet_query_neighbor_up gauge\n");
	for (int i = 0; i < s->nneigh; i++) {
		const char *id = q->c.procs[s->neigh[i].proc].id;
		tput(&t,
		     "ringnet_query_neighbor_up{neighbor=\"%s\"} %d\n"
		     "ringnet_query_neighbor_breaker_open{neighbor=\"%s\"} %d\n"
		     "ringnet_query_neighbor_failures_total{neighbor=\"%s\"} %llu\n"
		     "ringnet_query_neighbor_recoveries_total{neighbor=\"%s\"} %llu\n",
		     id, s->neigh[i].up, id, s->neigh[i].breaker_open, id,
		     (unsigned long long)s->neigh[i].failures, id,
		     (unsigned long long)s->neigh[i].recoveries);
	}
	for (int i = 0; i < s->nlog; i++)
		tput(&t, "# query log: %s\n", s->log[i]);
	if (t.oom) {
		free(t.b);
		return NULL;
	}
	return t.b;
}

static void on_snap(uv_timer_t *t)
{
	nq *q = t->data;
	uint64_t ns = uv_hrtime();
	for (struct qjob *j = q->active, *next; j; j = next) {
		next = j->next;
		if (ns - j->started_ns > QUERY_DEADLINE_NS)
			job_done(q, j, 503,
			         nd_json_text(json_pack("{s:s, s:i}", "error",
			                                "no answer in time; try again",
			                                "retry_after_ms", 1000)));
	}
	q_stats s;
	q_get_stats(q->core, uv_now(&q->n->loop), &s);
	char *p = prom_text(q, &s);
	pthread_mutex_lock(&q->n->lock);
	free(q->snap_prom);
	q->snap_prom = p;
	pthread_mutex_unlock(&q->n->lock);
}

/* ---- jobs from the HTTP thread (loop thread) ---- */

static void on_wake(uv_async_t *a)
{
	nq *q = a->data;
	pthread_mutex_lock(&q->n->lock);
	struct qjob *list = q->incoming;
	q->incoming = NULL;
	pthread_mutex_unlock(&q->n->lock);
	struct qjob *rev = NULL;
	while (list) {
		struct qjob *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	uint64_t now = uv_now(&q->n->loop);
	while (rev) {
		struct qjob *j = rev;
		rev = rev->next;
		j->next = q->active;
		q->active = j;
		if (q->n->stopping) {
			job_done(q, j, 503, strdup("{\"error\":\"the node is shutting down\"}"));
			continue;
		}
		if (j->kind == QJ_QUERY) {
			j->req = ++q->seq;
			Q_CALL(q, q_client(q->core, now, j->req, &j->f, j->limit));
		} else if (j->kind == QJ_CHUNK) {
			const q_rec *r;
			uint32_t n, total;
			bool last;
			if (q_chunk(q->core, now, j->uid, j->chunk, &r, &n, &last, &total) < 0)
				job_done(q, j, 404,
				         nd_json_text(json_pack(
				             "{s:s}", "error",
				             "no such result set or chunk (result sets expire; "
				             "chunks count from 0)")));
			else
				job_done(q, j, 200,
				         chunk_body(j->uid, j->chunk, total, last, r, n));
		} else {
			q_stats s;
			q_get_stats(q->core, now, &s);
			job_done(q, j, 200, status_json(q, &s));
		}
	}
}

/* ---- HTTP (HTTP thread) ---- */

static enum MHD_Result send_reply(http_req *r, struct MHD_Connection *c, unsigned status,
                                  const char *body, unsigned retry_s)
{
	r->status = status;
	struct MHD_Response *resp = MHD_create_response_from_buffer(
	    strlen(body), (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (retry_s) {
		char v[16];
		snprintf(v, sizeof v, "%u", retry_s);
		MHD_add_response_header(resp, "Retry-After", v);
	}
	enum MHD_Result ok = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ok;
}

static enum MHD_Result refuse(http_req *r, struct MHD_Connection *c, unsigned status,
                              const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	char *t = nd_json_text(json_pack("{s:s}", "error", why));
	enum MHD_Result rc = send_reply(r, c, status, t ? t : "{}", 0);
	free(t);
	return rc;
}

/* A number argument: absent leaves *v, else it must be a finite number. */
static bool arg_num(struct MHD_Connection *c, const char *name, double *v)
{
	const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	if (!s)
		return true;
	char *end;
	errno = 0;
	double x = strtod(s, &end);
	if (!*s || *end || errno || !isfinite(x))
		return false;
	*v = x;
	return true;
}

static enum MHD_Result hand_over(nq *q, struct MHD_Connection *c, http_req *r, struct qjob *j)
{
	j->conn = c;
	j->started_ns = uv_hrtime();
	r->qjob = j;
	MHD_suspend_connection(c);
	pthread_mutex_lock(&q->n->lock);
	j->next = q->incoming;
	q->incoming = j;
	pthread_mutex_unlock(&q->n->lock);
	uv_async_send(&q->wake);
	return MHD_YES;
}

static enum MHD_Result query_request(nq *q, struct MHD_Connection *c, http_req *r)
{
	const char *param = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "param");
	if (!param)
		return refuse(r, c, 400, "param is missing: GET /query?param=PM2.5&min=10&max=50");
	int p = q_param_find(param);
	if (p < 0)
		return refuse(
		    r, c, 400,
		    "param: unknown parameter \"%.40s\" (PM2.5, PM10, OZONE, NO2, CO, SO2)", param);
	struct qjob *j = calloc(1, sizeof *j);
	if (!j)
		return refuse(r, c, 500, "out of memory");
	j->kind = QJ_QUERY;
	q_filter_all(&j->f, p);
	static const char *const nums[] = {"min",     "max",     "lat_min",
	                                   "lat_max", "lon_min", "lon_max"};
	double *dst[] = {&j->f.vmin,    &j->f.vmax,    &j->f.lat_min,
	                 &j->f.lat_max, &j->f.lon_min, &j->f.lon_max};
	for (int i = 0; i < 6; i++)
		if (!arg_num(c, nums[i], dst[i])) {
			free(j);
			return refuse(r, c, 400, "%s: wants a number", nums[i]);
		}
	static const char *const times[] = {"from", "to"};
	int32_t *tdst[] = {&j->f.t_from, &j->f.t_to};
	for (int i = 0; i < 2; i++) {
		const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, times[i]);
		if (s && !q_parse_time(s, tdst[i])) {
			free(j);
			return refuse(
			    r, c, 400,
			    "%s: wants a UTC time YYYY-MM-DDTHH:MM, YYYY-MM-DD or YYYYMMDD",
			    times[i]);
		}
		if (s && i == 1 && strlen(s) != 16)
			j->f.t_to += 1439; /* a date as "to" includes its whole day */
	}
	const char *lim = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
	if (lim) {
		char *end;
		long v = strtol(lim, &end, 10);
		if (!*lim || *end || v < 1) {
			free(j);
			return refuse(r, c, 400,
			              "limit: wants a whole number of records, 1 or more");
		}
		j->limit = v > Q_MAX_RECORDS ? Q_MAX_RECORDS : (uint32_t)v;
	}
	return hand_over(q, c, r, j);
}

enum MHD_Result nd_query_http(node *n, struct MHD_Connection *c, http_req *r, const char *url,
                              const char *method)
{
	nq *q = n->query;
	if (r->qjob) { /* resumed: the loop has answered */
		pthread_mutex_lock(&n->lock);
		bool done = r->qjob->done;
		pthread_mutex_unlock(&n->lock);
		if (!done)
			return MHD_YES;
		return send_reply(r, c, r->qjob->status, r->qjob->body, r->qjob->retry_s);
	}
	r->route = "/query";
	if (!q)
		return refuse(
		    r, c, 404,
		    "this node serves no queries: run it with --config CLUSTER --id NAME");
	if (strcmp(method, "GET") != 0)
		return refuse(r, c, 405, "use GET on /query routes");
	if (!strcmp(url, "/query"))
		return query_request(q, c, r);
	if (!strcmp(url, "/query/status")) {
		r->route = "/query/status";
		struct qjob *j = calloc(1, sizeof *j);
		if (!j)
			return refuse(r, c, 500, "out of memory");
		j->kind = QJ_STATUS;
		return hand_over(q, c, r, j);
	}
	r->route = "/query/<uid>/chunk/<i>";
	const char *rest = url + strlen("/query/"), *slash = strchr(rest, '/');
	size_t ulen = slash ? (size_t)(slash - rest) : 0;
	const char *idx = slash && !strncmp(slash, "/chunk/", 7) ? slash + 7 : NULL;
	char *end = NULL;
	long i = idx ? strtol(idx, &end, 10) : -1;
	if (!idx || !ulen || ulen >= sizeof(((struct qjob *)0)->uid) || !*idx || *end || i < 0 ||
	    i > UINT32_MAX)
		return refuse(r, c, 404,
		              "no such route: GET /query?param=..., /query/<uid>/chunk/<i> or "
		              "/query/status");
	struct qjob *j = calloc(1, sizeof *j);
	if (!j)
		return refuse(r, c, 500, "out of memory");
	j->kind = QJ_CHUNK;
	memcpy(j->uid, rest, ulen);
	j->chunk = (uint32_t)i;
	return hand_over(q, c, r, j);
}

void nd_query_job_free(struct qjob *j)
{
	if (j) {
		free(j->body);
		free(j);
	}
}

char *nd_query_metrics(node *n, char *body)
{
	nq *q = n->query;
	if (!q || !q->snap_prom || !body)
		return body;
	size_t a = strlen(body), b = strlen(q->snap_prom);
	char *t = realloc(body, a + b + 1);
	if (!t) {
		free(body);
		return NULL;
	}
	memcpy(t + a, q->snap_prom, b + 1);
	return t;
}

/* ---- start and stop (loop thread) ---- */

static bool dir_exists(void *ctx, const char *path)
{
	(void)ctx;
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int nd_query_load_config(const char *path, q_config *c, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "config %s: %s", path, strerror(errno));
		return RN_EIO;
	}
	char *text = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (rn_grow((void **)&text, &cap, len + 4096, 1, 8192) < 0) {
			fclose(f);
			free(text);
			snprintf(err, errlen, "out of memory");
			return RN_ENOMEM;
		}
		size_t k = fread(text + len, 1, cap - len, f);
		len += k;
		if (!k)
			break;
	}
	fclose(f);
	char why[400];
	int rc = q_config_parse(text, len, c, dir_exists, NULL, why, sizeof why);
	free(text);
	if (rc)
		snprintf(err, errlen, "config %s: %s", path, why);
	return rc;
}

int nd_query_start(node *n)
{
	nq *q = calloc(1, sizeof *q);
	if (!q)
		return RN_ENOMEM;
	q->n = n;
	char err[600];
	int rc = nd_query_load_config(n->o->query_config, &q->c, err, sizeof err);
	if (rc) {
		fprintf(stderr, "ringnet node: %s\n", err);
		free(q);
		return rc;
	}
	q->self = q_proc_find(&q->c, n->o->name);
	q_plan_build(&q->c, &q->p);
	uint64_t t0 = uv_hrtime();
	struct timespec c0, c1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	q->slices = q_plan_held(&q->p, q->self);
	int32_t lo = INT32_MAX, hi = INT32_MIN;
	for (int s = 0; s < q->p.n; s++)
		if (q->slices & (1ull << s)) {
			lo = q->p.s[s].day_lo < lo ? q->p.s[s].day_lo : lo;
			hi = q->p.s[s].day_hi > hi ? q->p.s[s].day_hi : hi;
		}
	q->data = q_data_new();
	q->rx = malloc(Q_MAX_RECORDS * sizeof *q->rx);
	uint8_t *want = lo <= hi ? calloc((size_t)(hi - lo) / 8 + 1, 1) : NULL;
	if (!q->data || !q->rx || (lo <= hi && !want)) {
		rc = RN_ENOMEM;
		snprintf(err, sizeof err, "out of memory");
	}
	for (int s = 0; !rc && s < q->p.n; s++)
		if (q->slices & (1ull << s))
			for (int32_t d = q->p.s[s].day_lo; d <= q->p.s[s].day_hi; d++)
				want[(d - lo) / 8] |= (uint8_t)(1u << ((d - lo) % 8));
	if (!rc && lo <= hi)
		rc = q_data_load_days(q->data, q->c.data_dir, lo, hi, want, err, sizeof err);
	if (!rc)
		rc = q_data_finish(q->data);
	free(want);
	if (rc) {
		fprintf(stderr, "ringnet node: loading %s: %s\n", q->c.data_dir,
		        rc == RN_ENOMEM ? "out of memory" : err);
		q_data_free(q->data);
		free(q->rx);
		free(q);
		return rc;
	}
	q->load_ms = (double)(uv_hrtime() - t0) / 1e6;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
	q->load_cpu_ms =
	    (double)(c1.tv_sec - c0.tv_sec) * 1e3 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e6;
	q_data_stats_get(q->data, &q->ds);
	for (int i = 0; i < q->c.nprocs; i++) {
		char a[WIRE_ADDR_MAX];
		snprintf(a, sizeof a, "%s:%d", q->c.procs[i].host, q->c.procs[i].port);
		q->addr[i] = i == q->self ? 0 : nd_book_intern(n, a);
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	rn_rng_seed(&q->rng,
	            (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid());
	uv_update_time(&n->loop); /* the load took a while: the loop's clock is stale */
	q_driver d = {q, d_send, d_scan, d_reply, d_random, d_log};
	q->core = q_new(&q->c, &q->p, q->self, &d, uv_now(&n->loop), rn_rng_next(&q->rng));
	if (!q->core) {
		q_data_free(q->data);
		free(q->rx);
		free(q);
		return RN_ENOMEM;
	}
	n->query = q;
	uv_timer_init(&n->loop, &q->timer);
	q->timer.data = q;
	uv_timer_init(&n->loop, &q->snap);
	q->snap.data = q;
	uv_async_init(&n->loop, &q->wake, on_wake);
	q->wake.data = q;
	on_snap(&q->snap);
	uv_timer_start(&q->snap, on_snap, SNAPSHOT_MS, SNAPSHOT_MS);
	const q_proc *me = &q->c.procs[q->self];
	LOG_I(n,
	      "query: %s (%s of team %s, %s): %llu rows of %d slices in %.0f ms (%llu rows did "
	      "not parse), %.1f MB in columns",
	      me->id, q_role_name(me->role), q->c.teams[me->team].name,
	      q_strategy_name(q->c.strategy), (unsigned long long)q->ds.rows,
	      __builtin_popcountll(q->slices), q->load_ms, (unsigned long long)q->ds.bad_rows,
	      (double)q_data_bytes(q->data) / 1e6);
	Q_CALL(q, q_tick(q->core, uv_now(&n->loop))); /* the first heartbeats */
	return 0;
}

/* Answers what still waits (the HTTP thread goes away next). */
void nd_query_stop(node *n)
{
	nq *q = n->query;
	if (!q)
		return;
	on_wake(&q->wake);
	while (q->active)
		job_done(q, q->active, 503, strdup("{\"error\":\"the node is shutting down\"}"));
}

void nd_query_free(node *n)
{
	nq *q = n->query;
	if (!q)
		return;
	q_free(q->core);
	q_data_free(q->data);
	free(q->rx);
	free(q->uq);
	free(q->snap_prom);
	free(q);
	n->query = NULL;
}
