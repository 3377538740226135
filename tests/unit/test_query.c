/* test_query.c — the query core against brute force: config checks naming the field, the
 * partition plan, the wire codec, the CSV module, and six cores in one process (messages
 * delayed at random, so they overtake each other; processes killed and restarted) whose
 * answers, chunk by chunk, must equal a scan of all the data, or say "partial" and miss
 * exactly the slices they name. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/err.h"
#include "lib/rng.h"
#include "query/data.h"
#include "query/query.h"

static const char *cluster_json =
    "{\"strategies\": {\"fairness_strategy\": \"strict\", \"chunk_size\": 7, "
    "\"max_records\": 5000, \"max_concurrent\": 4, \"queue_max\": 3, "
    "\"queue_timeout_ms\": 400},"
    " \"heartbeat\": {\"interval_ms\": 100, \"timeout_ms\": 300, \"call_timeout_ms\": 250},"
    " \"data\": {\"dir\": \"d\", \"teams\": {\"green\": [\"20200810\", \"20200820\"],"
    "   \"pink\": [\"20200821\", \"20200924\"]}},"
    " \"processes\": {"
    "  \"A\": {\"id\": \"A\", \"role\": \"leader\", \"team\": \"green\", \"host\": \"127.0.0.1\","
    "         \"port\": 60051, \"neighbors\": [\"B\", \"E\"]},"
    "  \"B\": {\"id\": \"B\", \"role\": \"team_leader\", \"team\": \"green\", \"host\": "
    "\"127.0.0.1\", \"port\": 60052, \"neighbors\": [\"C\", \"D\"]},"
    "  \"C\": {\"id\": \"C\", \"role\": \"worker\", \"team\": \"green\", \"host\": \"127.0.0.1\","
    "         \"port\": 60053},"
    "  \"D\": {\"id\": \"D\", \"role\": \"worker\", \"team\": \"pink\", \"host\": \"127.0.0.1\","
    "         \"port\": 60054},"
    "  \"E\": {\"id\": \"E\", \"role\": \"team_leader\", \"team\": \"pink\", \"host\": "
    "\"127.0.0.1\", \"port\": 60055, \"neighbors\": [\"F\", \"D\"]},"
    "  \"F\": {\"id\": \"F\", \"role\": \"worker\", \"team\": \"pink\", \"host\": \"127.0.0.1\","
    "         \"port\": 60056}}}";

static char *replace(const char *s, const char *from, const char *to)
{
	const char *at = strstr(s, from);
	assert_non_null(at);
	size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
	char *r = malloc(n);
	snprintf(r, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
	return r;
}

static bool no_dir(void *ctx, const char *p)
{
	(void)ctx;
	(void)p;
	return false;
}

/* ---- configuration ---- */

static void expect_refused(const char *from, const char *to, const char *field)
{
	char *j = replace(cluster_json, from, to);
	q_config c;
	char err[256] = "";
	int rc = q_config_parse(j, strlen(j), &c, NULL, NULL, err, sizeof err);
	if (rc != RN_EINVAL || !strstr(err, field))
		fail_msg("'%s' -> '%s': rc %d, message \"%s\" does not name %s", from, to, rc, err,
		         field);
	free(j);
}

static void test_config(void **st)
{
	(void)st;
	q_config c;
	char err[256];
	assert_int_equal(
	    q_config_parse(cluster_json, strlen(cluster_json), &c, NULL, NULL, err, sizeof err), 0);
	assert_int_equal(c.nprocs, 6);
	assert_int_equal(c.leader, q_proc_find(&c, "A"));
	assert_int_equal(c.procs[q_proc_find(&c, "E")].http_port, 61055);
	assert_int_equal(c.chunk_size, 7);
	expect_refused("\"role\": \"worker\", \"team\": \"green\"",
	               "\"role\": \"boss\", \"team\": \"green\"", "processes.C.role");
	expect_refused("[\"F\", \"D\"]", "[\"F\", \"Z\"]", "processes.E.neighbors");
	expect_refused("\"port\": 60053}", "\"port\": 60053, \"neighbors\": [\"A\"]}",
	               "processes.C.neighbors");
	expect_refused("[\"20200821\", \"20200924\"]", "[\"20200820\", \"20200924\"]",
	               "data.teams.pink");
	expect_refused("\"fairness_strategy\": \"strict\"", "\"fairness_strategy\": \"fifo\"",
	               "strategies.fairness_strategy");
	expect_refused("\"team\": \"pink\", \"host\": \"127.0.0.1\",", "\"team\": \"blue\", ",
	               "processes.D.team");
	expect_refused("\"role\": \"leader\"", "\"role\": \"team_leader\"", "leader");
	expect_refused("\"chunk_size\": 7", "\"chunk_size\": 0", "strategies.chunk_size");
	/* a missing data folder */
	assert_int_equal(
	    q_config_parse(cluster_json, strlen(cluster_json), &c, no_dir, NULL, err, sizeof err),
	    RN_EINVAL);
	assert_non_null(strstr(err, "data.dir"));
	assert_int_equal(q_config_parse("{", 1, &c, NULL, NULL, err, sizeof err), RN_EINVAL);
}

static void test_config_cycle_message(void **st)
{
	(void)st;
	/* B -> C -> B: a cycle among team members, named with its path */
	char *j =
	    replace(cluster_json, "\"port\": 60053}", "\"port\": 60053, \"neighbors\": [\"B\"]}");
	q_config c;
	char err[256];
	assert_int_equal(q_config_parse(j, strlen(j), &c, NULL, NULL, err, sizeof err), RN_EINVAL);
	assert_non_null(strstr(err, "cycle"));
	free(j);
}

/* ---- plan ---- */

static void test_plan(void **st)
{
	(void)st;
	q_config c;
	char err[256];
	assert_int_equal(
	    q_config_parse(cluster_json, strlen(cluster_json), &c, NULL, NULL, err, sizeof err), 0);
	q_plan p;
	assert_int_equal(q_plan_build(&c, &p), 0);
	assert_int_equal(p.n, 6);
	/* every day of every team in exactly one slice, owned by a member of that team */
	for (int t = 0; t < c.nteams; t++)
		for (int32_t d = c.teams[t].day_lo; d <= c.teams[t].day_hi; d++) {
			int in = 0;
			for (int s = 0; s < p.n; s++)
				if (p.s[s].day_lo <= d && d <= p.s[s].day_hi) {
					in++;
					assert_int_equal(p.s[s].team, t);
					assert_int_equal(c.procs[p.s[s].owner].team, t);
					assert_int_equal(c.procs[p.s[s].copy].team, t);
					assert_int_not_equal(p.s[s].owner, p.s[s].copy);
				}
			assert_int_equal(in, 1);
		}
	/* weights: green has 11 days for A (1), B (2), C (3); pink 35 for E (2), F, D (3) */
	int32_t days[Q_MAX_PROCS] = {0};
	for (int s = 0; s < p.n; s++)
		days[p.s[s].owner] += p.s[s].day_hi - p.s[s].day_lo + 1;
	assert_int_equal(days[q_proc_find(&c, "A")], 2);
	assert_int_equal(days[q_proc_find(&c, "B")], 4);
	assert_int_equal(days[q_proc_find(&c, "C")], 5);
	assert_int_equal(days[q_proc_find(&c, "E")], 9);
	assert_int_equal(days[q_proc_find(&c, "F")], 13);
	assert_int_equal(days[q_proc_find(&c, "D")], 13);
	/* every process holds two slices: its own and one copy */
	for (int i = 0; i < c.nprocs; i++)
		assert_int_equal(__builtin_popcountll(q_plan_held(&p, i)), 2);
}

/* ---- dates and codec ---- */

static void test_dates(void **st)
{
	(void)st;
	for (int32_t d = -800; d < 80000; d += 7) {
		int y, m, dd;
		q_civil(d, &y, &m, &dd);
		assert_int_equal(q_days(y, m, dd), d);
	}
	int32_t t;
	assert_true(q_parse_time("2020-08-10T01:00", &t));
	assert_int_equal(t, q_days(2020, 8, 10) * 1440 + 60);
	char out[20];
	q_format_time(t, out);
	assert_string_equal(out, "2020-08-10T01:00");
	assert_false(q_parse_time("2020-02-30T01:00", &t));
	assert_false(q_parse_time("2020-08-10T24:00", &t));
	assert_false(q_parse_time("yesterday", &t));
	assert_true(q_parse_time("20200810", &t));
}

static void test_wire(void **st)
{
	(void)st;
	static q_rec recs[3] = {{37.5, -122.25, 12.5, 26000000, 51, 0, 1, 2, 1},
	                        {-1e-9, 180, 0, -5, -1, 5, Q_SCALE_NONE, 0, 0},
	                        {1, 2, 3, 4, 32767, 2, 3, 4, 5}};
	q_msg m = {.type = Q_MSG_RESP,
	           .from = 3,
	           .to = 1,
	           .req = 0x0102030405060708ull,
	           .matched = 99,
	           .missing = 1ull << 63,
	           .hops = 0x15,
	           .recs = recs,
	           .nrec = 3};
	size_t n = q_wire_size(&m);
	assert_int_equal(n, 11 + 21 + 3 * Q_WIRE_REC);
	/* every byte of the body is written: two encodings over different fill agree (no
	 * uninitialised memory goes out on the wire) */
	uint8_t *buf = malloc(n), *again = malloc(n);
	memset(buf, 0xAA, n);
	memset(again, 0x55, n);
	q_wire_encode(&m, buf);
	q_wire_encode(&m, again);
	assert_memory_equal(buf, again, n);
	free(again);
	static q_rec back[Q_MAX_RECORDS];
	q_msg d;
	assert_int_equal(q_wire_decode(buf, n, &d, back), 0);
	assert_int_equal(d.req, m.req);
	assert_int_equal(d.missing, m.missing);
	assert_int_equal(d.nrec, 3);
	assert_memory_equal(&back[1].lat, &recs[1].lat, sizeof(double));
	assert_int_equal(back[1].minute, -5);
	assert_int_equal(back[1].aqi, -1);
	assert_int_equal(back[2].aqi, 32767);
	assert_int_equal(back[1].lat_s, Q_SCALE_NONE);
	assert_int_equal(back[2].val_s, 5);
	/* every truncation and a bad record count are refused */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(q_wire_decode(buf, k, &d, back), RN_EPROTO);
	buf[31] ^= 1; /* the low byte of the record count */
	assert_int_equal(q_wire_decode(buf, n, &d, back), RN_EPROTO);
	free(buf);
	q_msg r = {.type = Q_MSG_REQ, .from = 0, .to = 1, .req = 7, .limit = 100, .slices = 5};
	q_filter_all(&r.f, 1);
	uint8_t rb[256];
	q_wire_encode(&r, rb);
	assert_int_equal(q_wire_decode(rb, q_wire_size(&r), &d, back), 0);
	assert_true(isinf(d.f.vmin) && d.f.vmin < 0);
	assert_int_equal(d.f.t_to, INT32_MAX);
	rb[11] = Q_NPARAMS; /* the parameter byte */
	assert_int_equal(q_wire_decode(rb, q_wire_size(&r), &d, back), RN_EPROTO);
}

/* ---- the data module ---- */

typedef struct {
	q_rec *r;
	size_t n, cap;
} recset;

static void push(recset *s, q_rec r)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->r = realloc(s->r, s->cap * sizeof *s->r);
	}
	s->r[s->n++] = r;
}

/* Random readings over [day0, day0 + ndays), as CSV text and as records. */
static char *make_csv(rn_rng *g, int32_t day0, int ndays, int per_day, recset *all, size_t *len,
                      unsigned *bad)
{
	size_t cap = (size_t)ndays * per_day * 220 + 4096, n = 0;
	char *b = malloc(cap);
	for (int d = 0; d < ndays; d++)
		for (int k = 0; k < per_day; k++) {
			q_rec r = {0};
			r.minute = (day0 + d) * 1440 + (int32_t)rn_rng_below(g, 24) * 60;
			r.param = (uint8_t)rn_rng_below(g, Q_NPARAMS);
			r.lat = 25 + (double)rn_rng_below(g, 2500000) / 100000.0;
			r.lon = -125 + (double)rn_rng_below(g, 5000000) / 100000.0;
			r.value = (double)rn_rng_below(g, 3000) / 10.0;
			r.aqi = (int16_t)rn_rng_below(g, 500);
			/* the numbers as the text says them */
			char num[64];
			snprintf(num, sizeof num, "%.5f", r.lat);
			r.lat = strtod(num, NULL);
			snprintf(num, sizeof num, "%.5f", r.lon);
			r.lon = strtod(num, NULL);
			snprintf(num, sizeof num, "%.1f", r.value);
			r.value = strtod(num, NULL);
			char t[20];
			q_format_time(r.minute, t);
			if (rn_rng_below(g, 50) == 0) { /* a bad row now and then */
				n += (size_t)snprintf(b + n, cap - n,
				                      "\"%.5f\",\"x\",\"%s\",\"PM2.5\",\"1\"\n",
				                      r.lat, t);
				(*bad)++;
				continue;
			}
			n += (size_t)snprintf(
			    b + n, cap - n,
			    "\"%.5f\",\"%.5f\",\"%s\",\"%s\",\"%.1f\",\"UG/"
			    "M3\",\"1.0\",\"%d\",\"1\","
			    "\"Site, \"\"quoted\"\"\",\"Agency\",\"123\",\"840123\"\n",
			    r.lat, r.lon, t, q_param_names[r.param], r.value, r.aqi);
			push(all, r);
		}
	*len = n;
	return b;
}

static int rec_cmp(const void *a, const void *b)
{
	const q_rec *x = a, *y = b;
	if (x->minute != y->minute)
		return x->minute < y->minute ? -1 : 1;
	if (x->param != y->param)
		return x->param < y->param ? -1 : 1;
	if (x->lat != y->lat)
		return x->lat < y->lat ? -1 : 1;
	if (x->lon != y->lon)
		return x->lon < y->lon ? -1 : 1;
	if (x->value != y->value)
		return x->value < y->value ? -1 : 1;
	return x->aqi - y->aqi;
}

static void random_filter(rn_rng *g, q_filter *f, int32_t day0, int ndays)
{
	q_filter_all(f, (int)rn_rng_below(g, Q_NPARAMS));
	double a = (double)rn_rng_below(g, 300), b = (double)rn_rng_below(g, 300);
	f->vmin = a < b ? a : b;
	f->vmax = a < b ? b : a;
	if (rn_rng_below(g, 2)) {
		int32_t x = (day0 + (int32_t)rn_rng_below(g, (uint64_t)ndays)) * 1440,
		        y = (day0 + (int32_t)rn_rng_below(g, (uint64_t)ndays)) * 1440 +
		            (int32_t)rn_rng_below(g, 1440);
		f->t_from = x < y ? x : y;
		f->t_to = x < y ? y : x;
	}
	if (rn_rng_below(g, 3) == 0) {
		f->lat_min = 30;
		f->lat_max = 30 + (double)rn_rng_below(g, 20);
		f->lon_min = -120 + (double)rn_rng_below(g, 20);
		f->lon_max = -60;
	}
}

static size_t oracle(const recset *all, const q_filter *f, int32_t dlo, int32_t dhi, q_rec *out)
{
	size_t n = 0;
	for (size_t i = 0; i < all->n; i++) {
		int32_t day = all->r[i].minute / 1440;
		if (day >= dlo && day <= dhi && q_filter_match(f, &all->r[i]))
			out[n++] = all->r[i];
	}
	return n;
}

static void test_data(void **st)
{
	(void)st;
	rn_rng g;
	rn_rng_seed(&g, 11);
	recset all = {0};
	size_t len;
	unsigned bad = 0;
	int32_t day0 = q_days(2020, 8, 10);
	char *csv = make_csv(&g, day0, 12, 400, &all, &len, &bad);
	q_data *d = q_data_new();
	/* fed in two pieces, the second first: out of time order, so finish must sort */
	size_t cut = len / 2;
	while (csv[cut - 1] != '\n')
		cut++;
	assert_int_equal(q_data_add_csv(d, csv + cut, len - cut), 0);
	assert_int_equal(q_data_add_csv(d, csv, cut), 0);
	assert_int_equal(q_data_finish(d), 0);
	q_data_stats s;
	q_data_stats_get(d, &s);
	assert_int_equal(s.rows, all.n);
	assert_int_equal(s.bad_rows, bad);
	q_rec *want = malloc(all.n * sizeof *want), *got = malloc(all.n * sizeof *got);
	for (int k = 0; k < 300; k++) {
		q_filter f;
		random_filter(&g, &f, day0, 12);
		int32_t dlo = day0 + (int32_t)rn_rng_below(&g, 12),
		        dhi = dlo + (int32_t)rn_rng_below(&g, 6);
		size_t nw = oracle(&all, &f, dlo, dhi, want);
		uint32_t ng = q_data_scan(d, dlo, dhi, &f, (uint32_t)all.n, UINT32_MAX, got);
		assert_int_equal(ng, nw);
		qsort(want, nw, sizeof *want, rec_cmp);
		qsort(got, ng, sizeof *got, rec_cmp);
		for (size_t i = 0; i < nw; i++)
			assert_int_equal(rec_cmp(&want[i], &got[i]), 0);
		/* a limit returns that many, all of them matches, and still counts them all */
		uint32_t lim = (uint32_t)(nw / 2);
		assert_int_equal(q_data_scan(d, dlo, dhi, &f, lim, UINT32_MAX, got), nw);
		/* counting stops at count_to, never below the limit */
		assert_int_equal(q_data_scan(d, dlo, dhi, &f, lim, lim + 3, got),
		                 nw < lim + 3 ? nw : lim + 3);
		assert_int_equal(q_data_scan(d, dlo, dhi, &f, lim, 0, got), nw < lim ? nw : lim);
		for (uint32_t i = 0; i < lim; i++)
			assert_true(q_filter_match(&f, &got[i]) && got[i].minute / 1440 >= dlo &&
			            got[i].minute / 1440 <= dhi);
	}
	free(want);
	free(got);
	free(csv);
	free(all.r);
	q_data_free(d);
}

/* Numbers come back out as the digits they were read from (so a client reads the same
 * double the CSV said), and the fast parse gives strtod's double. */
static void test_numbers(void **st)
{
	(void)st;
	static const char *const texts[] = {
	    "37.7749",       "-124.20347", "11.0",     "0.5",      "-0.0",
	    "163.9",         "7",          "0.000001", "-3.14",    "1e3",
	    "123456.654321", "99999999.9", "-0.30000", "40.776943"};
	for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
		char line[256];
		int n =
		    snprintf(line, sizeof line,
		             "\"%s\",\"%s\",\"2020-08-10T01:00\",\"PM10\",\"%s\",\"U\",\"1\",\"5\","
		             "\"1\",\"S\",\"A\",\"1\",\"2\"\n",
		             texts[k], texts[k], texts[k]);
		q_data *d = q_data_new();
		assert_int_equal(q_data_add_csv(d, line, (size_t)n), 0);
		assert_int_equal(q_data_finish(d), 0);
		q_filter f;
		q_filter_all(&f, 1);
		q_rec r;
		assert_int_equal(q_data_scan(d, 0, 30000, &f, 1, 1, &r), 1);
		assert_true(r.lat == strtod(texts[k], NULL) && r.value == strtod(texts[k], NULL));
		assert_true(signbit(r.lat) == signbit(strtod(texts[k], NULL)));
		char out[32];
		q_format_number(out, r.lat, r.lat_s);
		if (strchr(texts[k], 'e'))
			assert_true(strtod(out, NULL) == 1e3); /* not plain: %.17g */
		else
			assert_string_equal(out, texts[k]);
		q_data_free(d);
	}
}

/* ---- six cores in one process ---- */

typedef struct {
	uint64_t at;
	q_msg m;
	q_rec *recs;
	bool undeliverable; /* handed back to m.from */
} event;

typedef struct cluster cluster;

typedef struct {
	cluster *cl;
	int id;
	q_node *q;
	q_data *data;
	bool dead;
	bool busy;
	/* answers to clients */
	uint64_t ans_req[64];
	q_answer ans[64];
	int nans;
} proc;

struct cluster {
	q_config c;
	q_plan p;
	proc pr[6];
	event *ev;
	size_t nev, cap;
	uint64_t now;
	rn_rng g;
	recset all;
};

static void schedule(cluster *cl, const q_msg *m, bool undeliverable)
{
	if (cl->nev == cl->cap) {
		cl->cap = cl->cap ? cl->cap * 2 : 256;
		cl->ev = realloc(cl->ev, cl->cap * sizeof *cl->ev);
	}
	event *e = &cl->ev[cl->nev++];
	e->at = cl->now + 1 + rn_rng_below(&cl->g, 20);
	e->m = *m;
	e->undeliverable = undeliverable;
	e->recs = NULL;
	if (m->nrec) {
		e->recs = malloc(m->nrec * sizeof *e->recs);
		memcpy(e->recs, m->recs, m->nrec * sizeof *e->recs);
		e->m.recs = e->recs;
	}
}

static void d_send(void *ctx, const q_msg *m)
{
	proc *p = ctx;
	assert_false(p->busy == false); /* only from inside a core call */
	schedule(p->cl, m, p->cl->pr[m->to].dead);
}

static uint32_t d_scan(void *ctx, int32_t lo, int32_t hi, const q_filter *f, uint32_t limit,
                       uint32_t count_to, q_rec *out)
{
	proc *p = ctx;
	return q_data_scan(p->data, lo, hi, f, limit, count_to, out);
}

static void d_reply(void *ctx, uint64_t req, const q_answer *a)
{
	proc *p = ctx;
	assert_true(p->nans < 64);
	p->ans_req[p->nans] = req;
	p->ans[p->nans++] = *a;
}

static uint32_t d_random(void *ctx)
{
	proc *p = ctx;
	return (uint32_t)rn_rng_next(&p->cl->g);
}

#define CALL(p, call)                                                                              \
	do {                                                                                       \
		(p)->busy = true;                                                                  \
		call;                                                                              \
		(p)->busy = false;                                                                 \
	} while (0)

static void start_proc(cluster *cl, int i)
{
	proc *p = &cl->pr[i];
	p->cl = cl;
	p->id = i;
	p->dead = false;
	q_driver d = {p, d_send, d_scan, d_reply, d_random, NULL};
	p->q = q_new(&cl->c, &cl->p, i, &d, cl->now, 1000 + (uint64_t)i);
	assert_non_null(p->q);
}

static void kill_proc(cluster *cl, int i)
{
	q_free(cl->pr[i].q);
	cl->pr[i].q = NULL;
	cl->pr[i].dead = true;
	cl->pr[i].nans = 0;
}

/* Runs events and ticks until time `until`. */
static void run_until(cluster *cl, uint64_t until)
{
	while (cl->now < until) {
		/* the earliest event due now, else advance a millisecond and tick */
		size_t best = SIZE_MAX;
		for (size_t k = 0; k < cl->nev; k++)
			if (cl->ev[k].at <= cl->now &&
			    (best == SIZE_MAX || cl->ev[k].at < cl->ev[best].at))
				best = k;
		if (best == SIZE_MAX) {
			cl->now++;
			for (int i = 0; i < 6; i++)
				if (!cl->pr[i].dead && q_wake_at(cl->pr[i].q) <= cl->now)
					CALL(&cl->pr[i], q_tick(cl->pr[i].q, cl->now));
			continue;
		}
		event e = cl->ev[best];
		cl->ev[best] = cl->ev[--cl->nev];
		if (e.undeliverable) {
			proc *s = &cl->pr[e.m.from];
			if (!s->dead)
				CALL(s, q_on_unreachable(s->q, cl->now, e.m.req, e.m.to));
		} else if (!cl->pr[e.m.to].dead) {
			/* through the codec, as the real driver does */
			size_t n = q_wire_size(&e.m);
			uint8_t *buf = malloc(n);
			q_wire_encode(&e.m, buf);
			static q_rec back[Q_MAX_RECORDS];
			q_msg m;
			assert_int_equal(q_wire_decode(buf, n, &m, back), 0);
			free(buf);
			proc *r = &cl->pr[e.m.to];
			CALL(r, q_on_msg(r->q, cl->now, &m));
		} else if (e.m.type != Q_MSG_HB) {
			/* a dead process: the sender learns it (a refused connection) */
			proc *s = &cl->pr[e.m.from];
			if (!s->dead)
				CALL(s, q_on_unreachable(s->q, cl->now, e.m.req, e.m.to));
		}
		free(e.recs);
	}
}

static void cluster_init(cluster *cl, const char *json, uint64_t seed)
{
	memset(cl, 0, sizeof *cl);
	char err[256];
	assert_int_equal(q_config_parse(json, strlen(json), &cl->c, NULL, NULL, err, sizeof err),
	                 0);
	assert_int_equal(q_plan_build(&cl->c, &cl->p), 0);
	rn_rng_seed(&cl->g, seed);
	cl->now = 1000;
	size_t len;
	unsigned bad = 0;
	int32_t day0 = cl->c.teams[0].day_lo;
	int ndays = cl->c.teams[1].day_hi - day0 + 1;
	char *csv = make_csv(&cl->g, day0, ndays, 120, &cl->all, &len, &bad);
	/* each process loads only the days of the slices it holds */
	for (int i = 0; i < 6; i++) {
		cl->pr[i].data = q_data_new();
		uint64_t held = q_plan_held(&cl->p, i);
		const char *line = csv, *end = csv + len;
		while (line < end) {
			/* memchr, not strchr: ASan's strchr measures the rest of the text each time
			 */
			const char *nl = memchr(line, '\n', (size_t)(end - line));
			const char *t = line;
			for (int commas = 0; commas < 2; t++)
				commas += *t == ',';
			t++; /* the opening quote of the time */
			int32_t day = q_days(atoi(t), atoi(t + 5), atoi(t + 8));
			for (int s = 0; s < cl->p.n; s++)
				if ((held & (1ull << s)) && cl->p.s[s].day_lo <= day &&
				    day <= cl->p.s[s].day_hi)
					q_data_add_csv(cl->pr[i].data, line,
					               (size_t)(nl - line) + 1);
			line = nl + 1;
		}
		assert_int_equal(q_data_finish(cl->pr[i].data), 0);
		start_proc(cl, i);
	}
	free(csv);
	run_until(cl, cl->now + 50);
}

static void cluster_free(cluster *cl)
{
	for (int i = 0; i < 6; i++) {
		q_free(cl->pr[i].q);
		q_data_free(cl->pr[i].data);
	}
	for (size_t k = 0; k < cl->nev; k++)
		free(cl->ev[k].recs);
	free(cl->ev);
	free(cl->all.r);
}

/* Asks process `at`, runs until it answers, collects every chunk. */
static q_answer ask(cluster *cl, int at, const q_filter *f, uint32_t limit, recset *out)
{
	proc *p = &cl->pr[at];
	static uint64_t req = 100;
	req++;
	p->nans = 0;
	CALL(p, q_client(p->q, cl->now, req, f, limit));
	uint64_t deadline = cl->now + 20000;
	while (p->nans == 0 && cl->now < deadline)
		run_until(cl, cl->now + 5);
	assert_int_equal(p->nans, 1);
	assert_int_equal(p->ans_req[0], req);
	q_answer a = p->ans[0];
	out->n = 0;
	if (a.status == Q_ANS_OK || a.status == Q_ANS_PARTIAL) {
		for (uint32_t i = 0; i < a.total_chunks; i++) {
			const q_rec *r;
			uint32_t n, total;
			bool last;
			assert_int_equal(q_chunk(p->q, cl->now, a.uid, i, &r, &n, &last, &total),
			                 0);
			assert_int_equal(total, a.total_chunks);
			assert_int_equal(last, i + 1 == a.total_chunks);
			assert_true(n >= 1 && n <= cl->c.chunk_size);
			for (uint32_t k = 0; k < n; k++)
				push(out, r[k]);
		}
		const q_rec *r;
		uint32_t n, total;
		bool last;
		assert_int_equal(
		    q_chunk(p->q, cl->now, a.uid, a.total_chunks, &r, &n, &last, &total),
		    RN_ENOTFOUND);
		assert_int_equal(out->n, a.total_records);
	}
	return a;
}

/* The answer against the scan of all data minus the slices it names missing. */
static void check_answer(cluster *cl, const q_filter *f, uint32_t limit, const q_answer *a,
                         recset *got, uint64_t must_miss)
{
	assert_true(a->status == Q_ANS_OK || a->status == Q_ANS_PARTIAL);
	assert_int_equal(a->status == Q_ANS_PARTIAL, a->missing != 0);
	assert_int_equal(a->missing & must_miss, must_miss);
	q_rec *want = malloc((cl->all.n + 1) * sizeof *want);
	size_t nw = 0;
	for (size_t i = 0; i < cl->all.n; i++) {
		int32_t day = cl->all.r[i].minute / 1440;
		bool missing = false;
		for (int s = 0; s < cl->p.n; s++)
			if ((a->missing & (1ull << s)) && cl->p.s[s].day_lo <= day &&
			    day <= cl->p.s[s].day_hi)
				missing = true;
		if (!missing && q_filter_match(f, &cl->all.r[i]))
			want[nw++] = cl->all.r[i];
	}
	if (nw <= limit) {
		assert_int_equal(got->n, nw);
		qsort(want, nw, sizeof *want, rec_cmp);
		qsort(got->r, got->n, sizeof *got->r, rec_cmp);
		for (size_t i = 0; i < nw; i++)
			assert_int_equal(rec_cmp(&want[i], &got->r[i]), 0);
	} else {
		/* more matches than the limit: exactly limit records, each a distinct match */
		assert_int_equal(got->n, limit);
		qsort(want, nw, sizeof *want, rec_cmp);
		qsort(got->r, got->n, sizeof *got->r, rec_cmp);
		size_t j = 0;
		for (size_t i = 0; i < got->n; i++) {
			while (j < nw && rec_cmp(&want[j], &got->r[i]) < 0)
				j++;
			assert_true(j < nw && rec_cmp(&want[j], &got->r[i]) == 0);
			j++;
		}
	}
	free(want);
}

static void test_cluster_exact(void **st)
{
	(void)st;
	cluster cl;
	cluster_init(&cl, cluster_json, 5);
	recset got = {0};
	int leader = cl.c.leader;
	for (int k = 0; k < 60; k++) {
		q_filter f;
		random_filter(&cl.g, &f, cl.c.teams[0].day_lo, 46);
		uint32_t limit = k % 3 == 0 ? 5000 : (uint32_t)rn_rng_below(&cl.g, 200) + 1;
		q_answer a = ask(&cl, leader, &f, limit, &got);
		check_answer(&cl, &f, limit, &a, &got, 0);
		assert_int_equal(a.status, Q_ANS_OK);
		if (k % 3 == 0)
			assert_int_equal(__builtin_popcount(a.hops) >= 1, true);
	}
	/* a query of everything of one parameter touches all six */
	q_filter all;
	q_filter_all(&all, 0);
	q_answer a = ask(&cl, leader, &all, 5000, &got);
	check_answer(&cl, &all, 5000, &a, &got, 0);
	assert_int_equal(a.hops, 0x3f);
	free(got.r);
	cluster_free(&cl);
}

static uint64_t owned_by(const cluster *cl, int who)
{
	uint64_t m = 0;
	for (int s = 0; s < cl->p.n; s++)
		if (cl->p.s[s].owner == who)
			m |= 1ull << s;
	return m;
}

/* The slices that neither holder of which is reachable from the leader through live
 * processes: what a partial answer must name, no more, no less. */
static uint64_t unreachable_slices(const cluster *cl)
{
	uint32_t seen = 1u << cl->c.leader;
	int stack[Q_MAX_PROCS], n = 0;
	stack[n++] = cl->c.leader;
	while (n) {
		int v = stack[--n];
		for (int k = 0; k < cl->c.procs[v].nneigh; k++) {
			int w = cl->c.procs[v].neigh[k];
			if (!(seen & (1u << w)) && !cl->pr[w].dead) {
				seen |= 1u << w;
				stack[n++] = w;
			}
		}
	}
	uint64_t m = 0;
	for (int s = 0; s < cl->p.n; s++)
		if (!(seen & (1u << cl->p.s[s].owner)) && !(seen & (1u << cl->p.s[s].copy)))
			m |= 1ull << s;
	return m;
}

static void test_cluster_faults(void **st)
{
	(void)st;
	cluster cl;
	cluster_init(&cl, cluster_json, 9);
	recset got = {0};
	int A = q_proc_find(&cl.c, "A"), B = q_proc_find(&cl.c, "B"), C = q_proc_find(&cl.c, "C"),
	    D = q_proc_find(&cl.c, "D"), E = q_proc_find(&cl.c, "E"), F = q_proc_find(&cl.c, "F");
	q_filter f;
	q_filter_all(&f, 0);
	/* one dead worker at a time: still exact (its slice's copy answers) */
	int workers[] = {C, D, F};
	for (int w = 0; w < 3; w++) {
		kill_proc(&cl, workers[w]);
		for (int k = 0; k < 4; k++) { /* before and after the heartbeats notice */
			q_answer a = ask(&cl, A, &f, 5000, &got);
			check_answer(&cl, &f, 5000, &a, &got, 0);
			assert_int_equal(a.status, Q_ANS_OK);
			assert_int_equal(a.hops & (1u << workers[w]), 0);
			run_until(&cl, cl.now + 150);
		}
		start_proc(&cl, workers[w]);
		run_until(&cl, cl.now + 3 * cl.c.hb_interval_ms);
		q_answer a = ask(&cl, A, &f, 5000, &got);
		check_answer(&cl, &f, 5000, &a, &got, 0);
		assert_true(a.hops & (1u << workers[w])); /* used again */
	}
	/* a dead team leader E: D is reached through B (the cross link); E's own slice
	 * has its copy on F, only reachable through E: partial, naming exactly that slice */
	kill_proc(&cl, E);
	uint64_t gone = unreachable_slices(&cl);
	assert_int_equal(gone, owned_by(&cl, E));
	for (int k = 0; k < 4; k++) {
		q_answer a = ask(&cl, A, &f, 5000, &got);
		check_answer(&cl, &f, 5000, &a, &got, gone);
		assert_int_equal(a.missing, gone);
		assert_true(a.hops & (1u << D));
		run_until(&cl, cl.now + 150);
	}
	/* and B dead too: only A's slice and its copy of B's slice are left */
	kill_proc(&cl, B);
	gone = unreachable_slices(&cl);
	assert_int_equal(gone, ~(owned_by(&cl, A) | owned_by(&cl, B)) & ((1ull << cl.p.n) - 1));
	q_answer a = ask(&cl, A, &f, 5000, &got);
	check_answer(&cl, &f, 5000, &a, &got, gone);
	assert_int_equal(a.missing, gone);
	start_proc(&cl, E);
	start_proc(&cl, B);
	run_until(&cl, cl.now + 3 * cl.c.hb_interval_ms);
	a = ask(&cl, A, &f, 5000, &got);
	check_answer(&cl, &f, 5000, &a, &got, 0);
	assert_int_equal(a.status, Q_ANS_OK);
	free(got.r);
	cluster_free(&cl);
}

/* Kills a process in the middle of queries (at a random moment: before its first answer,
 * between the two rounds of a limit that the split left short, or after), with limits
 * set to the exact match count so the second round is needed: every answer must be the
 * scan, or partial naming only slices the dead process leaves unreachable. */
static void test_midquery_kills(void **st)
{
	(void)st;
	cluster cl;
	cluster_init(&cl, cluster_json, 77);
	recset got = {0};
	q_rec *tmp = malloc((cl.all.n + 1) * sizeof *tmp);
	int leader = cl.c.leader;
	for (int k = 0; k < 40; k++) {
		int victim = 1 + (int)rn_rng_below(&cl.g, 5);
		if (victim == leader)
			victim = 0;
		q_filter f;
		random_filter(&cl.g, &f, cl.c.teams[0].day_lo, 46);
		size_t nw = oracle(&cl.all, &f, INT32_MIN, INT32_MAX, tmp);
		uint32_t limit = nw ? (uint32_t)nw : 1;
		proc *p = &cl.pr[leader];
		p->nans = 0;
		CALL(p, q_client(p->q, cl.now, 9000 + (uint64_t)k, &f, limit));
		run_until(&cl, cl.now + rn_rng_below(&cl.g, 40));
		kill_proc(&cl, victim);
		uint64_t allowed = unreachable_slices(&cl);
		uint64_t deadline = cl.now + 20000;
		while (p->nans == 0 && cl.now < deadline)
			run_until(&cl, cl.now + 5);
		assert_int_equal(p->nans, 1);
		q_answer a = p->ans[0];
		got.n = 0;
		for (uint32_t i = 0; i < a.total_chunks; i++) {
			const q_rec *r;
			uint32_t n, total;
			bool last;
			assert_int_equal(q_chunk(p->q, cl.now, a.uid, i, &r, &n, &last, &total), 0);
			for (uint32_t j = 0; j < n; j++)
				push(&got, r[j]);
		}
		check_answer(&cl, &f, limit, &a, &got, 0);
		assert_int_equal(a.missing & ~allowed, 0);
		start_proc(&cl, victim);
		run_until(&cl, cl.now + 3 * cl.c.hb_interval_ms);
	}
	free(tmp);
	free(got.r);
	cluster_free(&cl);
}

static void test_admission(void **st)
{
	(void)st;
	/* max_concurrent 4 and queue_max 3 per team at A: 12 requests for green data at once
	 * (no time passes, so none is answered): 4 run, 3 wait, 5 get "busy" at once */
	cluster cl;
	cluster_init(&cl, cluster_json, 3);
	proc *p = &cl.pr[cl.c.leader];
	q_filter f;
	q_filter_all(&f, 1);
	f.t_from = (cl.c.teams[0].day_lo + 6) * 1440; /* C's slice: A asks B, and waits */
	f.t_to = f.t_from + 1000;
	p->nans = 0;
	for (int k = 0; k < 12; k++)
		CALL(p, q_client(p->q, cl.now, 500 + (uint64_t)k, &f, 10));
	assert_int_equal(p->nans, 5);
	for (int k = 0; k < 5; k++) {
		assert_int_equal(p->ans[k].status, Q_ANS_BUSY);
		assert_true(p->ans[k].retry_ms > 0);
	}
	q_stats s;
	q_get_stats(p->q, cl.now, &s);
	assert_int_equal(s.active, 4);
	assert_int_equal(s.queued, 3);
	/* a pink request is not held up by green's queue */
	q_filter g = f;
	g.t_from = cl.c.teams[1].day_lo * 1440;
	g.t_to = g.t_from + 1000;
	CALL(p, q_client(p->q, cl.now, 900, &g, 10));
	q_get_stats(p->q, cl.now, &s);
	assert_int_equal(s.active, 5);
	run_until(&cl, cl.now + 1000);
	assert_int_equal(p->nans, 13);
	int ok = 0;
	for (int k = 0; k < p->nans; k++)
		ok += p->ans[k].status == Q_ANS_OK;
	assert_int_equal(ok, 8);
	cluster_free(&cl);
}

/* weighted: caps follow the recent load (10 green arrivals to 1 pink: green gets 10/11 of
 * the 2 x 4 slots, pink 1); hybrid: the same until 80% of the slots are busy, then strict */
static void test_weighted_hybrid(void **st)
{
	(void)st;
	for (int m = 0; m < 2; m++) {
		char *j = replace(cluster_json, "\"fairness_strategy\": \"strict\"",
		                  m ? "\"fairness_strategy\": \"hybrid\""
		                    : "\"fairness_strategy\": \"weighted\"");
		char *j2 = replace(j, "\"queue_max\": 3", "\"queue_max\": 50");
		cluster cl;
		cluster_init(&cl, j2, 21);
		proc *p = &cl.pr[cl.c.leader];
		q_filter g, k;
		q_filter_all(&g, 1);
		g.t_from = (cl.c.teams[0].day_lo + 6) * 1440; /* C's days: answered through B */
		g.t_to = g.t_from + 1000;
		k = g;
		k.t_from = (cl.c.teams[1].day_lo + 10) * 1440; /* D's days: through E */
		k.t_to = k.t_from + 1000;
		p->nans = 0;
		for (int i = 0; i < 10; i++)
			CALL(p, q_client(p->q, cl.now, 700 + (uint64_t)i, &g, 10));
		CALL(p, q_client(p->q, cl.now, 800, &k, 10));
		q_stats s;
		q_get_stats(p->q, cl.now, &s);
		int green = 0, pink = 1;
		if (m == 0) {
			assert_int_equal(s.team_cap[green], 8 * 10 / 11);
			assert_int_equal(s.team_cap[pink], 1);
			/* green alone had all the load while its 10 came in: 8 were admitted (a cap
			 * that drops later does not take back admitted work), 2 wait */
			assert_int_equal(s.team_active[green], 8);
			assert_int_equal(s.team_queued[green], 2);
		} else {
			/* weighted (green has all the load: cap 8) until 7 of 8 slots are busy,
			 * over 80%: then the strict caps of 4, which still admit pink's first */
			assert_int_equal(s.team_cap[green], 4);
			assert_int_equal(s.team_active[green], 7);
			assert_int_equal(s.team_queued[green], 3);
		}
		assert_int_equal(s.team_active[pink], 1);
		run_until(&cl, cl.now + 2000);
		assert_int_equal(p->nans, 11);
		for (int i = 0; i < 11; i++)
			assert_int_equal(p->ans[i].status, Q_ANS_OK);
		cluster_free(&cl);
		free(j);
		free(j2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config),         cmocka_unit_test(test_config_cycle_message),
	    cmocka_unit_test(test_plan),           cmocka_unit_test(test_dates),
	    cmocka_unit_test(test_wire),           cmocka_unit_test(test_data),
	    cmocka_unit_test(test_numbers),        cmocka_unit_test(test_cluster_exact),
	    cmocka_unit_test(test_cluster_faults), cmocka_unit_test(test_admission),
	    cmocka_unit_test(test_midquery_kills), cmocka_unit_test(test_weighted_hybrid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
