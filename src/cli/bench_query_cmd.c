/* bench_query_cmd.c — `ringnet bench-query`: a closed-loop load on a query leader. Each
 * client thread sends its share of the requests one after another; a request is the query
 * and then every chunk of its result set, in turn (a 429 waits the hint and tries again,
 * the wait counted in its latency). It writes DIR/benchmark_fairness_<strategy>.txt: the
 * processes per host, latency (whole request, and the query call alone), throughput,
 * records, and per team: requests, served, rejections, latency, Jain's fairness index. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../query/query.h"
#include "cli.h"
#include "query_http.h"

enum { W_MIX, W_ORIGINAL, W_SKEWED };

typedef struct {
	double total_ms, query_ms;
	int team; /* -1: the request spans every team */
	bool served;
	unsigned rejections;
	uint32_t records;
} sample;

typedef struct {
	const q_config *c;
	const char *base;
	int workload;
	int id, nthreads, nreq;
	bool spread_source; /* bind to 127.0.0.x: the node allows 64 connections per address */
	sample *out;        /* this thread's samples: id, id + nthreads, ... */
	int total;
} worker;

static void request_url(const worker *w, unsigned seq, char *url, size_t len, int *team)
{
	static const char *const params[] = {"PM2.5", "PM10", "OZONE"};
	static const double lo[] = {10, 20, 30}, hi[] = {50, 150, 70};
	if (w->workload == W_ORIGINAL) { /* the system this replaces: one query, both teams */
		*team = -1;
		snprintf(url, len, "%s/query?param=PM2.5&min=10&max=50&limit=5000", w->base);
		return;
	}
	/* one team's days; skewed: the first team is asked 10 times as often as each other */
	unsigned r = seq * 2654435761u + (unsigned)w->id * 40503u;
	if (w->workload == W_SKEWED && w->c->nteams > 1)
		*team = r % (10 + (unsigned)w->c->nteams - 1) < 10
		            ? 0
		            : 1 + (int)(r % (unsigned)(w->c->nteams - 1));
	else
		*team = (int)(seq % (unsigned)w->c->nteams);
	const q_team *t = &w->c->teams[*team];
	int p = (int)((r >> 8) % 3);
	int y, m, d, y2, m2, d2;
	q_civil(t->day_lo, &y, &m, &d);
	q_civil(t->day_hi, &y2, &m2, &d2);
	snprintf(url, len,
	         "%s/query?param=%s&min=%g&max=%g&from=%04d%02d%02d&to=%04d%02d%02d&limit=5000",
	         w->base, params[p], lo[p] + (double)((r >> 12) % 5), hi[p], y % 10000, m % 100,
	         d % 100, y2 % 10000, m2 % 100, d2 % 100);
}

static void *run_worker(void *arg)
{
	worker *w = arg;
	CURL *c = curl_easy_init();
	if (!c)
		return NULL;
	char iface[32];
	if (w->spread_source) {
		snprintf(iface, sizeof iface, "127.0.%d.%d", 1 + w->id / 250, 1 + w->id % 250);
		curl_easy_setopt(c, CURLOPT_INTERFACE, iface);
	}
	qh_buf b = {NULL, 0};
	char url[600];
	for (int k = w->id; k < w->total; k += w->nthreads) {
		sample *s = &w->out[k];
		memset(s, 0, sizeof *s);
		request_url(w, (unsigned)k, url, sizeof url, &s->team);
		double t0 = qh_now_ms();
		long status = 0;
		json_t *ans = NULL;
		for (int tries = 0; tries < 50; tries++) {
			double q0 = qh_now_ms();
			if (qh_get(c, url, &status, &b) < 0)
				break;
			s->query_ms = qh_now_ms() - q0;
			if (status != 429)
				break;
			s->rejections++;
			json_t *e = json_loads(b.data ? b.data : "", 0, NULL);
			long long ms = json_integer_value(json_object_get(e, "retry_after_ms"));
			json_decref(e);
			if (ms <= 0)
				ms = 100;
			struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (status == 200)
			ans = json_loads(b.data ? b.data : "", 0, NULL);
		const char *uid = json_string_value(json_object_get(ans, "uid"));
		long long chunks = json_integer_value(json_object_get(ans, "total_chunks"));
		bool ok = uid != NULL;
		for (long long i = 0; ok && i < chunks; i++) {
			char curl_[300];
			snprintf(curl_, sizeof curl_, "%s/query/%s/chunk/%lld", w->base, uid, i);
			ok = qh_get(c, curl_, &status, &b) == 0 && status == 200;
		}
		s->records = (uint32_t)json_integer_value(json_object_get(ans, "total_records"));
		s->served = ok;
		if (!ok)
			fprintf(stderr, "ringnet bench-query: a request failed: %ld %.200s\n",
			        status, b.data ? b.data : "");
		s->total_ms = qh_now_ms() - t0;
		json_decref(ans);
	}
	free(b.data);
	curl_easy_cleanup(c);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
	if (!n)
		return 0;
	int k = (int)ceil(p / 100.0 * n) - 1;
	return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static double jain(const double *x, int n)
{
	double s = 0, s2 = 0;
	for (int i = 0; i < n; i++) {
		s += x[i];
		s2 += x[i] * x[i];
	}
	return s2 > 0 ? s * s / (n * s2) : 1;
}

static void latency_line(FILE *f, const char *what, double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += v[i];
	fprintf(f, "%-28s avg %8.2f  min %8.2f  max %8.2f  p50 %8.2f  p95 %8.2f  p99 %8.2f ms\n",
	        what, n ? sum / n : 0, n ? v[0] : 0, n ? v[n - 1] : 0, pct(v, n, 50), pct(v, n, 95),
	        pct(v, n, 99));
}

static const char *bench_usage =
    "usage: ringnet bench-query --config CLUSTER.json --leader HOST:PORT [--num-requests 400]\n"
    "                           [--concurrency 20] [--output-dir DIR]\n"
    "                           [--workload mix|original|skewed]\n"
    "Runs the query workload against a leader's HTTP port and writes\n"
    "DIR/benchmark_fairness_<strategy>.txt (DIR defaults to .). mix: each request asks one\n"
    "team's days for PM2.5, PM10 or OZONE, teams in turn; original: every request PM2.5 in\n"
    "[10, 50] with limit 5000, as the gRPC system's benchmark; skewed: mix with the first\n"
    "team asked 10 times as often as the other.\n";

int cli_bench_query(int argc, char **argv)
{
	const char *config = NULL, *leader = NULL, *dir = ".", *wl = "mix";
	int nreq = 400, conc = 20;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help")) {
			fputs(bench_usage, stdout);
			return 0;
		}
		if (!v) {
			fprintf(stderr, "ringnet bench-query: %s needs a value\n%s", a,
			        bench_usage);
			return 2;
		}
		i++;
		if (!strcmp(a, "--config"))
			config = v;
		else if (!strcmp(a, "--leader"))
			leader = v;
		else if (!strcmp(a, "--output-dir"))
			dir = v;
		else if (!strcmp(a, "--workload"))
			wl = v;
		else if (!strcmp(a, "--num-requests"))
			nreq = atoi(v);
		else if (!strcmp(a, "--concurrency"))
			conc = atoi(v);
		else {
			fprintf(stderr, "ringnet bench-query: unknown option '%s'\n%s", a,
			        bench_usage);
			return 2;
		}
	}
	int workload = !strcmp(wl, "mix")        ? W_MIX
	               : !strcmp(wl, "original") ? W_ORIGINAL
	               : !strcmp(wl, "skewed")   ? W_SKEWED
	                                         : -1;
	if (!config || !leader || nreq < 1 || conc < 1 || conc > 1000 || workload < 0) {
		fprintf(stderr,
		        "ringnet bench-query: want --config, --leader, a workload of mix, "
		        "original or skewed, 1 to 1000 clients\n%s",
		        bench_usage);
		return 2;
	}
	static q_config c;
	if (qh_load_config("bench-query", config, &c))
		return 2;
	char base[256];
	qh_base(leader, base, sizeof base);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	sample *out = calloc((size_t)nreq, sizeof *out);
	worker *ws = calloc((size_t)conc, sizeof *ws);
	pthread_t *th = calloc((size_t)conc, sizeof *th);
	if (!out || !ws || !th)
		return 1;
	bool loop = !strncmp(base, "http://127.", 11);
	double t0 = qh_now_ms();
	for (int k = 0; k < conc; k++) {
		ws[k] = (worker){&c, base, workload, k, conc, nreq, loop && conc > 50, out, nreq};
		pthread_create(&th[k], NULL, run_worker, &ws[k]);
	}
	for (int k = 0; k < conc; k++)
		pthread_join(th[k], NULL);
	double wall = qh_now_ms() - t0;

	char path[600];
	mkdir(dir, 0755);
	snprintf(path, sizeof path, "%s/benchmark_fairness_%s.txt", dir,
	         q_strategy_name(c.strategy));
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "ringnet bench-query: cannot write %s\n", path);
		return 1;
	}
	fprintf(
	    f,
	    "ringnet bench-query: strategy %s, workload %s, %d requests, %d clients, leader %s\n\n",
	    q_strategy_name(c.strategy), wl, nreq, conc, leader);
	fprintf(f, "processes per host:\n");
	for (int i = 0; i < c.nprocs; i++) {
		bool first = true;
		for (int k = 0; k < i; k++)
			first &= strcmp(c.procs[k].host, c.procs[i].host) != 0;
		if (!first)
			continue;
		fprintf(f, "  %-16s", c.procs[i].host);
		for (int k = i; k < c.nprocs; k++)
			if (!strcmp(c.procs[k].host, c.procs[i].host))
				fprintf(f, " %s (%s, %s)", c.procs[k].id,
				        q_role_name(c.procs[k].role),
				        c.teams[c.procs[k].team].name);
		fprintf(f, "\n");
	}
	double *tot = malloc((size_t)nreq * sizeof *tot), *qm = malloc((size_t)nreq * sizeof *qm);
	int n = 0;
	uint64_t records = 0, rejections = 0;
	for (int k = 0; k < nreq; k++) {
		rejections += out[k].rejections;
		if (!out[k].served)
			continue;
		tot[n] = out[k].total_ms;
		qm[n++] = out[k].query_ms;
		records += out[k].records;
	}
	fprintf(f, "\n");
	latency_line(f, "whole request (query+chunks)", tot, n);
	latency_line(f, "query call alone", qm, n);
	fprintf(f,
	        "served %d of %d in %.2f s: %.1f requests/s, %llu records (%.0f records/s), %llu "
	        "429 answers retried\n",
	        n, nreq, wall / 1000, n / (wall / 1000), (unsigned long long)records,
	        (double)records / (wall / 1000), (unsigned long long)rejections);
	fprintf(f, "\nper team:\n");
	double served_x[Q_MAX_TEAMS + 1], norm_x[Q_MAX_TEAMS + 1], lat_x[Q_MAX_TEAMS + 1];
	int nt = 0;
	for (int t = -1; t < c.nteams; t++) {
		int asked = 0, got = 0;
		unsigned rej = 0;
		int m = 0;
		for (int k = 0; k < nreq; k++)
			if (out[k].team == t) {
				asked++;
				rej += out[k].rejections;
				if (out[k].served) {
					got++;
					tot[m++] = out[k].total_ms;
				}
			}
		if (!asked)
			continue;
		char label[64];
		snprintf(label, sizeof label, "  %s", t < 0 ? "(both teams)" : c.teams[t].name);
		fprintf(f, "%-14s asked %5d served %5d  429s %5u  ", label, asked, got, rej);
		latency_line(f, "", tot, m);
		double sum = 0;
		for (int i = 0; i < m; i++)
			sum += tot[i];
		served_x[nt] = got;
		norm_x[nt] = (double)got / asked;
		lat_x[nt] = m ? m / sum : 0; /* requests per ms of latency: higher is better */
		nt++;
	}
	fprintf(f,
	        "\nJain's fairness index over teams: served counts %.3f, served/asked %.3f, "
	        "1/mean latency %.3f\n",
	        jain(served_x, nt), jain(norm_x, nt), jain(lat_x, nt));
	fclose(f);
	f = fopen(path, "r");
	char line[512];
	while (f && fgets(line, sizeof line, f))
		fputs(line, stdout);
	if (f)
		fclose(f);
	free(tot);
	free(qm);
	free(out);
	free(ws);
	free(th);
	curl_global_cleanup();
	return n == nreq ? 0 : 1;
}
