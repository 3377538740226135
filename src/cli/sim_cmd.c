/* sim_cmd.c — `ringnet sim`: argument parsing and the report. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../sim/sim.h"
#include "cli.h"

static const char *sim_usage =
    "usage: ringnet sim [--nodes N] [--requests R] [--lookup simple|scalable] [--bits M]\n"
    "                   [--bootstrap static|join] [--successors r] [--fail FRACTION]\n"
    "                   [--churn PER_SEC] [--vnodes V] [--keys K] [--seed S] [--json]\n"
    "                   [--latency MIN-MAX] [--join-rate PER_SEC] [--stabilize-ms MS]\n"
    "       ringnet sim N R [simple|scalable]\n"
    "\n"
    "Simulates a Chord ring with the node's own protocol code. Defaults: 1000 nodes,\n"
    "100 requests per node (one per virtual second), scalable lookup, 160-bit ids,\n"
    "static bootstrap, 8 successors, message latency 10-50 ms, seed 1.\n"
    "  --bootstrap static  place nodes and fill fingers directly\n"
    "  --bootstrap join    every node joins through the protocol; reports when the ring\n"
    "                      (successors, predecessors, fingers) became correct\n"
    "  --fail F            kill a fraction F of the nodes at once before the lookups\n"
    "  --churn R           R joins and R failures per virtual second during the lookups\n"
    "  --stabilize-ms MS   each node's stabilize / fix_fingers period (default 1000; the\n"
    "                      Chord paper's churn experiment uses 30000)\n"
    "  --keys K            place K keys and report keys per node (with --vnodes V)\n"
    "  --replicas R        run the key-value core on every node instead (see\n"
    "                      'ringnet sim --replicas 3 --help')\n"
    "  --member            run the membership core on every node instead (see\n"
    "                      'ringnet sim --member --help')\n"
    "  --cast TOPOLOGY     run the cast scheduler on a topology file instead (see\n"
    "                      'ringnet sim --cast x --help')\n";

/* ---- a progress line on a terminal (stderr), nothing when it is piped ---- */

typedef struct {
	sim_progress prog;
	uint32_t nodes;
	pthread_t tid;
	_Atomic bool stop;
	bool shown;
} watcher;

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *watch(void *arg)
{
	watcher *w = arg;
	double t0 = mono_s();
	/* RINGNET_PROGRESS_AFTER_S: how long a run is quiet first (tests set 0) */
	const char *env = getenv("RINGNET_PROGRESS_AFTER_S");
	double after = env && *env ? atof(env) : 1.0;
	while (!atomic_load(&w->stop)) {
		struct timespec ts = {0, 250 * 1000 * 1000};
		nanosleep(&ts, NULL);
		double el = mono_s() - t0;
		if (el < after || atomic_load(&w->stop))
			continue; /* a short run prints nothing */
		int ph = atomic_load(&w->prog.phase);
		uint64_t done = atomic_load(&w->prog.done), total = atomic_load(&w->prog.total);
		char line[160];
		if (ph == SIM_PHASE_BUILD && !total)
			snprintf(line, sizeof line, "building the ring of %u nodes", w->nodes);
		else if (ph == SIM_PHASE_BUILD)
			snprintf(line, sizeof line, "joining: %llu of %llu nodes in",
			         (unsigned long long)done, (unsigned long long)total);
		else if (ph == SIM_PHASE_LOOKUPS)
			snprintf(line, sizeof line, "lookups: %llu of %llu (%.0f%%)",
			         (unsigned long long)done, (unsigned long long)total,
			         total
			             ? 100.0 * (double)(done < total ? done : total) / (double)total
			             : 100.0);
		else if (ph == SIM_PHASE_REPORT)
			snprintf(line, sizeof line, "computing the report");
		else
			continue;
		fprintf(stderr, "\r\033[Kringnet sim: %s, %.0f s", line, el);
		w->shown = true;
	}
	return NULL;
}

static void watch_start(watcher *w, sim_params *p)
{
	memset(w, 0, sizeof *w);
	w->nodes = p->nodes;
	p->progress = &w->prog;
	if (!isatty(STDERR_FILENO) || pthread_create(&w->tid, NULL, watch, w) != 0)
		atomic_store(&w->stop, true);
}

static void watch_stop(watcher *w)
{
	if (atomic_load(&w->stop))
		return;
	atomic_store(&w->stop, true);
	pthread_join(w->tid, NULL);
	if (w->shown)
		fputs("\r\033[K", stderr); /* the line goes; the report follows */
}

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "ringnet sim: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", sim_usage);
	return 2;
}

/* The options that take a value, so that an unknown one is named as such even when it
 * comes last. */
static bool takes_value(const char *a)
{
	static const char *const names[] = {
	    "--nodes",      "--requests",  "--lookup",  "--bits",        "--bootstrap",
	    "--successors", "--fail",      "--churn",   "--vnodes",      "--keys",
	    "--seed",       "--join-rate", "--latency", "--stabilize-ms"};
	return cli_one_of(a, names, CLI_NELEM(names));
}

static int parse_u64(const char *s, uint64_t *out)
{
	if (!s || !*s || *s == '-')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;
	if (parse_u64(s, &v) < 0 || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int parse_lookup(const char *s, ring_lookup_mode *m)
{
	if (s && !strcmp(s, "simple"))
		*m = RING_LOOKUP_SIMPLE;
	else if (s && !strcmp(s, "scalable"))
		*m = RING_LOOKUP_SCALABLE;
	else
		return -1;
	return 0;
}

static long peak_rss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

int cli_sim(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--replicas"))
			return cli_kvsim(argc, argv); /* the key-value core under churn */
		if (!strcmp(argv[i], "--cast"))
			return cli_castsim(argc, argv); /* the cast core on a topology */
		if (!strcmp(argv[i], "--member"))
			return cli_membersim(argc, argv); /* the membership core */
	}
	sim_params p;
	sim_params_default(&p);
	bool json = false;
	int positional = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint32_t u32;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(sim_usage, stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = true;
			continue;
		} else if (a[0] != '-' || a[1] == '\0') {
			/* the classic positional form: N R [simple|scalable] */
			if (positional == 0 && parse_u32(a, &p.nodes) == 0)
				;
			else if (positional == 1 && parse_u32(a, &p.requests) == 0)
				;
			else if (positional == 2 && parse_lookup(a, &p.lookup) == 0)
				;
			else
				return bad("unexpected argument '%s'", a);
			positional++;
			continue;
		}
		if (!takes_value(a))
			return bad("unknown option '%s'", a);
		if (!v)
			return bad("%s needs a value", a);
		i++;
		if (!strcmp(a, "--nodes")) {
			if (parse_u32(v, &p.nodes) < 0)
				return bad("--nodes wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--requests")) {
			if (parse_u32(v, &p.requests) < 0)
				return bad("--requests wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--lookup")) {
			if (parse_lookup(v, &p.lookup) < 0)
				return bad("--lookup is simple or scalable, not '%s'", v);
		} else if (!strcmp(a, "--bits")) {
			if (parse_u32(v, &u32) < 0)
				return bad("--bits wants a number from 1 to 160, not '%s'", v);
			p.bits = u32;
		} else if (!strcmp(a, "--bootstrap")) {
			if (!strcmp(v, "static"))
				p.bootstrap = SIM_BOOT_STATIC;
			else if (!strcmp(v, "join"))
				p.bootstrap = SIM_BOOT_JOIN;
			else
				return bad("--bootstrap is static or join, not '%s'", v);
		} else if (!strcmp(a, "--successors")) {
			if (parse_u32(v, &u32) < 0)
				return bad("--successors wants a whole number, not '%s'", v);
			p.successors = u32;
		} else if (!strcmp(a, "--fail")) {
			if (parse_double(v, &p.fail) < 0)
				return bad("--fail wants a fraction between 0 and 1, not '%s'", v);
		} else if (!strcmp(a, "--churn")) {
			if (parse_double(v, &p.churn) < 0)
				return bad("--churn wants a rate per second, not '%s'", v);
		} else if (!strcmp(a, "--vnodes")) {
			if (parse_u32(v, &p.vnodes) < 0)
				return bad("--vnodes wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--keys")) {
			if (parse_u64(v, &p.keys) < 0)
				return bad("--keys wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--seed")) {
			if (parse_u64(v, &p.seed) < 0)
				return bad("--seed wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--join-rate")) {
			if (parse_u32(v, &p.join_rate) < 0)
				return bad("--join-rate wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--stabilize-ms")) {
			if (parse_u32(v, &p.stabilize_ms) < 0)
				return bad(
				    "--stabilize-ms wants a whole number of milliseconds, not '%s'",
				    v);
		} else if (!strcmp(a, "--latency")) {
			unsigned lo, hi;
			char tail;
			if (sscanf(v, "%u-%u%c", &lo, &hi, &tail) != 2)
				return bad("--latency wants MIN-MAX in milliseconds, not '%s'", v);
			p.latency_min_ms = lo;
			p.latency_max_ms = hi;
		}
	}
	char err[200];
	if (sim_params_check(&p, err, sizeof err) < 0)
		return bad("%s", err);

	sim_result r;
	watcher w;
	watch_start(&w, &p);
	int rc = sim_run(&p, &r);
	watch_stop(&w);
	if (rc < 0) {
		fprintf(stderr, "ringnet sim: %s\n", rn_strerror(rc));
		return 1;
	}
	long rss = peak_rss_kb();
	double lps = r.wall_ms > 0 ? (double)r.lookups / (r.wall_ms / 1000.0) : 0;
	const char *mode = p.lookup == RING_LOOKUP_SIMPLE ? "simple" : "scalable";
	if (json) {
		printf(
		    "{\"nodes\":%u,\"live_nodes\":%u,\"bits\":%u,\"lookup\":\"%s\","
		    "\"bootstrap\":\"%s\","
		    "\"seed\":%llu,\"lookups\":%llu,\"avg_hops\":%.4f,\"p1_hops\":%u,\"p50_"
		    "hops\":%u,\"p99_hops\":%u,"
		    "\"max_hops\":%u,\"failed_lookups\":%llu,\"failed_fraction\":%.6f,"
		    "\"lookup_timeouts\":%llu,\"lookups_abandoned\":%llu,"
		    "\"lookups_unfinished\":%llu,\"lookups_rerouted\":%llu,"
		    "\"timeouts\":%llu,\"avg_latency_ms\":%.2f,\"virtual_ms\":%llu,",
		    r.nodes, r.live_nodes, p.bits, mode,
		    p.bootstrap == SIM_BOOT_STATIC ? "static" : "join", (unsigned long long)p.seed,
		    (unsigned long long)r.lookups, r.avg_hops, r.p1_hops, r.p50_hops, r.p99_hops,
		    r.max_hops, (unsigned long long)r.failed_lookups,
		    r.lookups ? (double)r.failed_lookups / (double)r.lookups : 0.0,
		    (unsigned long long)r.lookup_timeouts, (unsigned long long)r.lookups_abandoned,
		    (unsigned long long)r.lookups_unfinished,
		    (unsigned long long)r.lookups_rerouted, (unsigned long long)r.timeouts,
		    r.avg_latency_ms, (unsigned long long)r.virtual_ms);
		if (p.bootstrap == SIM_BOOT_JOIN)
			printf("\"converged\":%s,\"converge_virtual_ms\":%llu,",
			       r.converged ? "true" : "false", (unsigned long long)r.converge_ms);
		if (p.churn > 0)
			printf("\"churn_joins\":%llu,\"churn_failures\":%llu,",
			       (unsigned long long)r.joins, (unsigned long long)r.failures);
		if (r.stabilized)
			printf("\"stabilize_rounds_min\":%u,\"stabilize_rounds_median\":%u,"
			       "\"isolated_nodes\":%u,",
			       r.rounds_min, r.rounds_median, r.isolated_nodes);
		if (p.keys)
			printf("\"keys\":%llu,\"vnodes\":%u,\"keys_per_node_mean\":%.3f,"
			       "\"keys_per_node_p1\":%.0f,\"keys_per_node_p99\":%.0f,"
			       "\"keys_per_node_max\":%.0f,",
			       (unsigned long long)p.keys, p.vnodes, r.keys_mean, r.keys_p1,
			       r.keys_p99, r.keys_max);
		printf("\"events\":%llu,\"messages\":%llu,\"node_bytes\":%llu,\"wall_ms\":%.0f,"
		       "\"build_wall_ms\":%.0f,\"lookups_per_sec\":%.0f,\"peak_rss_kb\":%ld}\n",
		       (unsigned long long)r.events, (unsigned long long)r.messages,
		       (unsigned long long)r.node_bytes, r.wall_ms, r.build_wall_ms, lps, rss);
		return 0;
	}
	printf("ringnet sim: %u nodes (%u live), %u-bit ids, %s lookup, %s bootstrap, seed %llu\n",
	       r.nodes, r.live_nodes, p.bits, mode,
	       p.bootstrap == SIM_BOOT_STATIC ? "static" : "join", (unsigned long long)p.seed);
	if (p.bootstrap == SIM_BOOT_JOIN) {
		if (r.converged)
			printf("ring correct after %.1f s virtual (%.0f ms wall)\n",
			       r.converge_ms / 1000.0, r.build_wall_ms);
		else
			printf("ring NOT correct after %.1f s virtual: stopped at the time limit\n",
			       r.converge_ms / 1000.0);
	}
	printf("hops: p50 %u, p99 %u, max %u; failed lookups %llu (%.2f%%), timed out %llu; "
	       "connect timeouts %llu\n",
	       r.p50_hops, r.p99_hops, r.max_hops, (unsigned long long)r.failed_lookups,
	       r.lookups ? 100.0 * (double)r.failed_lookups / (double)r.lookups : 0.0,
	       (unsigned long long)r.lookup_timeouts, (unsigned long long)r.timeouts);
	if (r.lookups_abandoned || r.lookups_unfinished)
		printf(
		    "not judged: %llu lookups whose origin crashed before the answer, %llu still "
		    "under way at the time limit\n",
		    (unsigned long long)r.lookups_abandoned,
		    (unsigned long long)r.lookups_unfinished);
	if (r.lookups_rerouted)
		printf("rerouted: %llu lookups met a dead node on the way and still found the key "
		       "(counted as successes)\n",
		       (unsigned long long)r.lookups_rerouted);
	if (r.stabilized)
		printf("stabilize rounds per node during the lookups: min %u, median %u (%u nodes "
		       "live throughout)\n",
		       r.rounds_min, r.rounds_median, r.rounds_nodes);
	if (r.isolated_nodes)
		printf(
		    "isolated: %u nodes in the ring lost every successor and are cut off from it\n",
		    r.isolated_nodes);
	if (p.keys)
		printf("keys per node (%llu keys, %u vnodes): mean %.1f, p1 %.0f, p99 %.0f, max "
		       "%.0f\n",
		       (unsigned long long)p.keys, p.vnodes, r.keys_mean, r.keys_p1, r.keys_p99,
		       r.keys_max);
	printf("memory: %.0f bytes per node in the ring cores, peak RSS %ld MB\n",
	       r.nodes ? (double)r.node_bytes / r.nodes : 0.0, rss / 1024);
	printf(
	    "All %u nodes are done: %llu lookups in %.0f ms (virtual %llu ms), average hops %.2f\n",
	    r.live_nodes, (unsigned long long)r.lookups, r.wall_ms,
	    (unsigned long long)r.virtual_ms, r.avg_hops);
	return 0;
}
