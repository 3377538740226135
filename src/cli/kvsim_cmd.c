/* kvsim_cmd.c — `ringnet sim --replicas R ...`: the key-value core under churn
 * (src/sim/kvsim.h), checked against what the clients were told. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../lib/err.h"
#include "../sim/kvsim.h"
#include "cli.h"

static const char *kvsim_usage =
    "usage: ringnet sim --replicas R [--write-quorum W] [--nodes N] [--keys K]\n"
    "                   [--churn PER_SEC] [--fail FRACTION] [--run-s S] [--ops PER_SEC]\n"
    "                   [--value-bytes B] [--sync-ms MS] [--detect MIN-MAX]\n"
    "                   [--latency MIN-MAX] [--ring model|real] [--unreach-ms MS]\n"
    "                   [--probe-ms MS] [--one-hop on|off] [--one-hop-max N]\n"
    "                   [--join-known MIN-MAX] [--crash-known MIN-MAX] [--lease-ms MS]\n"
    "                   [--seed S] [--json]\n"
    "\n"
    "Runs the key-value core on every simulated node: K keys are written once, then for\n"
    "S virtual seconds (default 120) nodes crash and new ones join (PER_SEC of each,\n"
    "Poisson) while clients read (80%), write (15%) and delete (5%) random keys through\n"
    "random nodes at PER_SEC operations (--ops, default 1000). After 60 quiet seconds\n"
    "every key is checked against what was acknowledged. A node's view of the ring\n"
    "follows a crash or a join after a delay drawn from --detect (default 1000-3000 ms),\n"
    "or with --ring real every node runs the Chord core too: views are its successor\n"
    "lists, lookups its lookups, joins its joins, and a crash is found by its stabilize\n"
    "and check_predecessor (a send to a crashed node fails after --unreach-ms, 1000),\n"
    "and every --probe-ms (5000, as the node; 0: never) each node asks a random node\n"
    "for the successor of its own id (ring_probe), which mends rings churn broke.\n"
    "With --one-hop on every node also holds a member table and sends a request\n"
    "straight to the key's owner (kv.h, Routing): a join becomes known to each node\n"
    "after a delay drawn from --join-known (200-2000 ms), a crash after one drawn from\n"
    "--crash-known (4600-7400, what sim --member measured at 1,000 nodes); above\n"
    "--one-hop-max members (4096) the table is not used (an owner cache is). The\n"
    "routing line reports hops per request (messages in sequence from the entry node\n"
    "to the coordinator: REQs, MOVED corrections, lookups) and the stale rate (the\n"
    "first node sent to was not responsible or did not answer). --lease-ms is the\n"
    "read lease's length (600; 0: off): a replica that holds its owner's lease answers\n"
    "gets of the owner's range itself (kv.h, Read leases).\n"
    "Defaults: 1000 nodes, 100000 keys, W = 2, values of 100 bytes, anti-entropy every\n"
    "2000 ms, latency 10-50 ms, seed 1.\n";

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "ringnet sim: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", kvsim_usage);
	return 2;
}

static int num(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = s && *s ? strtod(s, &end) : 0;
	if (!s || !*s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int cli_range(const char *s, uint32_t *lo, uint32_t *hi)
{
	unsigned a, b;
	char tail;
	if (!s || sscanf(s, "%u-%u%c", &a, &b, &tail) != 2 || a > b)
		return -1;
	*lo = a;
	*hi = b;
	return 0;
}

int cli_kvsim(int argc, char **argv)
{
	kvsim_params p;
	kvsim_params_default(&p);
	bool json = false, wq = false;
	static const char *const opts[] = {
	    "--replicas", "--write-quorum", "--nodes",       "--keys",        "--churn",
	    "--fail",     "--run-s",        "--ops",         "--value-bytes", "--sync-ms",
	    "--detect",   "--latency",      "--seed",        "--ring",        "--unreach-ms",
	    "--probe-ms", "--one-hop",      "--one-hop-max", "--join-known",  "--crash-known",
	    "--lease-ms"};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		double x;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(kvsim_usage, stdout);
			return 0;
		}
		if (!strcmp(a, "--json")) {
			json = true;
			continue;
		}
		if (!cli_one_of(a, opts, CLI_NELEM(opts)))
			return bad("unknown option with --replicas: '%s'", a);
		if (!v)
			return bad("%s needs a value", a);
		i++;
		if (!strcmp(a, "--replicas") && num(v, 1, KV_MAX_R, &x) == 0)
			p.net.kv.replicas = (unsigned)x;
		else if (!strcmp(a, "--write-quorum") && num(v, 1, KV_MAX_R, &x) == 0)
			p.net.kv.write_quorum = (unsigned)x, wq = true;
		else if (!strcmp(a, "--nodes") && num(v, 1, 1e6, &x) == 0)
			p.nodes = (uint32_t)x;
		else if (!strcmp(a, "--keys") && num(v, 1, 1e8, &x) == 0)
			p.keys = (uint64_t)x;
		else if (!strcmp(a, "--churn") && num(v, 0, 1000, &x) == 0)
			p.churn = x;
		else if (!strcmp(a, "--fail") && num(v, 0, 0.999999, &x) == 0)
			p.fail = x;
		else if (!strcmp(a, "--run-s") && num(v, 1, 1e6, &x) == 0)
			p.run_ms = (uint64_t)(x * 1000);
		else if (!strcmp(a, "--ops") && num(v, 0, 1e7, &x) == 0)
			p.ops_per_sec = x;
		else if (!strcmp(a, "--value-bytes") && num(v, 16, 65536, &x) == 0)
			p.value_bytes = (uint32_t)x;
		else if (!strcmp(a, "--sync-ms") && num(v, 10, 1e6, &x) == 0)
			p.net.kv.sync_ms = (uint32_t)x;
		else if (!strcmp(a, "--seed") && num(v, 0, 1.8e19, &x) == 0)
			p.net.seed = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--ring") && (!strcmp(v, "real") || !strcmp(v, "model")))
			p.net.real_ring = !strcmp(v, "real");
		else if (!strcmp(a, "--unreach-ms") && num(v, 1, 1e6, &x) == 0)
			p.net.unreach_ms = (uint32_t)x;
		else if (!strcmp(a, "--probe-ms") && num(v, 0, 1e7, &x) == 0)
			p.net.probe_ms = (uint32_t)x;
		else if (!strcmp(a, "--one-hop") && (!strcmp(v, "on") || !strcmp(v, "off")))
			p.net.members = !strcmp(v, "on");
		else if (!strcmp(a, "--lease-ms") && num(v, 0, 1e6, &x) == 0)
			p.net.kv.lease_ms = (uint32_t)x;
		else if (!strcmp(a, "--one-hop-max") && num(v, 0, 1e6, &x) == 0)
			p.net.kv.one_hop_max = (uint32_t)x;
		else if (!strcmp(a, "--join-known") &&
		         cli_range(v, &p.net.join_known_min_ms, &p.net.join_known_max_ms) == 0)
			;
		else if (!strcmp(a, "--crash-known") &&
		         cli_range(v, &p.net.crash_known_min_ms, &p.net.crash_known_max_ms) == 0)
			;
		else if (!strcmp(a, "--detect") &&
		         cli_range(v, &p.net.detect_min_ms, &p.net.detect_max_ms) == 0)
			;
		else if (!strcmp(a, "--latency") &&
		         cli_range(v, &p.net.latency_min_ms, &p.net.latency_max_ms) == 0)
			;
		else
			return bad("bad value '%s' (see the ranges below)", v);
	}
	if (!wq && p.net.kv.write_quorum > p.net.kv.replicas)
		p.net.kv.write_quorum = p.net.kv.replicas;
	p.net.kv.read_quorum = p.net.kv.replicas + 1 - p.net.kv.write_quorum;
	p.net.kv.cover_ms = 4 * p.net.kv.sync_ms;
	char err[160];
	if (kvsim_params_check(&p, err, sizeof err) < 0)
		return bad("%s", err);
	kvsim_result r;
	int rc = kvsim_run(&p, &r);
	if (rc < 0) {
		fprintf(stderr, "ringnet sim: %s\n", rn_strerror(rc));
		return 1;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double ratio = r.forced_bytes ? (double)r.repair_data_bytes / (double)r.forced_bytes : 0;
	if (json) {
		printf(
		    "{\"nodes\":%u,\"live_nodes\":%u,\"keys\":%llu,\"replicas\":%u,"
		    "\"write_quorum\":%u,\"churn\":%g,\"fail\":%g,\"seed\":%llu,"
		    "\"joins\":%llu,\"crashes\":%llu,\"writes\":%llu,\"writes_acked\":%llu,"
		    "\"writes_unknown\":%llu,\"writes_failed\":%llu,\"reads\":%llu,"
		    "\"reads_ok\":%llu,\"reads_not_found\":%llu,\"reads_unsure\":%llu,"
		    "\"reads_stale\":%llu,\"reads_false_404\":%llu,\"reads_of_lost\":%llu,"
		    "\"lost_writes\":%llu,\"lost_explained\":%llu,\"repair_interval_ms\":%llu,"
		    "\"under_replicated\":%llu,\"over_replicated\":%llu,"
		    "\"repair_bytes\":%llu,\"repair_data_bytes\":%llu,\"forced_bytes\":%llu,"
		    "\"repair_data_over_forced\":%.3f,"
		    "\"repair_bytes_per_node_sec\":%.1f,\"ring\":\"%s\",\"ring_messages\":%llu,"
		    "\"ring_unjoined\":%u,\"ring_wrong_succ\":%u,\"ring_wrong_pred\":%u,"
		    "\"messages\":%llu,\"events\":%llu,\"one_hop\":%s,\"client_ops\":%llu,"
		    "\"route_local\":%llu,\"route_successors\":%llu,\"route_onehop\":%llu,"
		    "\"route_cache\":%llu,\"route_lookup\":%llu,\"route_first\":%llu,"
		    "\"route_stale\":%llu,\"route_hints\":%llu,\"moved\":%llu,"
		    "\"forwarded\":%llu,\"entry_lookups\":%llu,\"replica_reads\":%llu,"
		    "\"cache_reads\":%llu,"
		    "\"lookup_hops\":%.3f,"
		    "\"hops_per_request\":%.4f,\"stale_rate\":%.5f,\"member_events\":%llu,"
		    "\"virtual_ms\":%llu,\"wall_ms\":%.0f,\"peak_rss_kb\":%ld}\n",
		    r.nodes, r.live_nodes, (unsigned long long)r.keys, p.net.kv.replicas,
		    p.net.kv.write_quorum, p.churn, p.fail, (unsigned long long)p.net.seed,
		    (unsigned long long)r.joins, (unsigned long long)r.crashes,
		    (unsigned long long)r.writes, (unsigned long long)r.writes_acked,
		    (unsigned long long)r.writes_unknown, (unsigned long long)r.writes_failed,
		    (unsigned long long)r.reads, (unsigned long long)r.reads_ok,
		    (unsigned long long)r.reads_not_found, (unsigned long long)r.reads_unsure,
		    (unsigned long long)r.reads_stale, (unsigned long long)r.reads_false_404,
		    (unsigned long long)r.reads_of_lost, (unsigned long long)r.lost,
		    (unsigned long long)r.lost_explained, (unsigned long long)r.repair_interval_ms,
		    (unsigned long long)r.under_replicated, (unsigned long long)r.over_replicated,
		    (unsigned long long)r.repair_bytes, (unsigned long long)r.repair_data_bytes,
		    (unsigned long long)r.forced_bytes, ratio, r.repair_per_node_sec,
		    p.net.real_ring ? "real" : "model", (unsigned long long)r.ring_messages,
		    r.ring_unjoined, r.ring_wrong_succ, r.ring_wrong_pred,
		    (unsigned long long)r.messages, (unsigned long long)r.events,
		    p.net.members ? "true" : "false", (unsigned long long)r.client_ops,
		    (unsigned long long)r.route_local, (unsigned long long)r.route_succ,
		    (unsigned long long)r.route_onehop, (unsigned long long)r.route_cache,
		    (unsigned long long)r.route_lookup, (unsigned long long)r.route_first,
		    (unsigned long long)r.route_stale, (unsigned long long)r.route_hints,
		    (unsigned long long)r.moved, (unsigned long long)r.forwarded,
		    (unsigned long long)r.entry_lookups, (unsigned long long)r.replica_reads,
		    (unsigned long long)r.cache_reads, r.lookup_hops, r.hops_per_request,
		    r.stale_rate, (unsigned long long)r.member_events,
		    (unsigned long long)r.virtual_ms, r.wall_ms, ru.ru_maxrss);
		return 0;
	}
	printf("ringnet sim: %u nodes (%u live at the end), %llu keys, R = %u, W = %u, churn "
	       "%g/s, seed %llu\n",
	       r.nodes, r.live_nodes, (unsigned long long)r.keys, p.net.kv.replicas,
	       p.net.kv.write_quorum, p.churn, (unsigned long long)p.net.seed);
	printf("churn: %llu crashes, %llu joins over %llu s\n", (unsigned long long)r.crashes,
	       (unsigned long long)r.joins, (unsigned long long)(p.run_ms / 1000));
	printf("writes: %llu acknowledged, %llu unknown, %llu failed (of %llu, the load "
	       "included)\n",
	       (unsigned long long)r.writes_acked, (unsigned long long)r.writes_unknown,
	       (unsigned long long)r.writes_failed, (unsigned long long)r.writes);
	printf("reads: %llu found, %llu not found, %llu unsure (503); %llu stale, %llu false "
	       "404; %llu answered by a replica under a lease, %llu from a read cache\n",
	       (unsigned long long)r.reads_ok, (unsigned long long)r.reads_not_found,
	       (unsigned long long)r.reads_unsure, (unsigned long long)r.reads_stale,
	       (unsigned long long)r.reads_false_404, (unsigned long long)r.replica_reads,
	       (unsigned long long)r.cache_reads);
	printf("repair: %.1f bytes per node per second (%.0f%% records, the rest digests); "
	       "records %.2fx what the churn forces\n",
	       r.repair_per_node_sec,
	       r.repair_bytes ? 100.0 * (double)r.repair_data_bytes / (double)r.repair_bytes : 0,
	       ratio);
	double ops = r.client_ops ? (double)r.client_ops : 1;
	printf("routing (%s): %.2f hops per request; first sent by own range %.1f%%, "
	       "successors %.1f%%, member table %.1f%%, owner cache %.1f%%, lookup %.1f%%; "
	       "stale %.2f%% of %llu sent to another node; %llu MOVED, %llu hints followed, "
	       "%llu lookups (%.2f messages each)\n",
	       p.net.members ? "one hop" : "Chord", r.hops_per_request,
	       100.0 * (double)r.route_local / ops, 100.0 * (double)r.route_succ / ops,
	       100.0 * (double)r.route_onehop / ops, 100.0 * (double)r.route_cache / ops,
	       100.0 * (double)r.route_lookup / ops, 100.0 * r.stale_rate,
	       (unsigned long long)r.route_first, (unsigned long long)r.moved,
	       (unsigned long long)r.route_hints, (unsigned long long)r.entry_lookups,
	       r.lookup_hops);
	printf("memory: peak RSS %ld MB; %llu events in %.1f s\n", ru.ru_maxrss / 1024,
	       (unsigned long long)r.events, r.wall_ms / 1000);
	if (r.lost)
		printf("lost: %llu keys, %llu of them after %u nodes holding their newest version "
		       "crashed within %llu ms (one repair interval); %llu reads of them\n",
		       (unsigned long long)r.lost, (unsigned long long)r.lost_explained,
		       p.net.kv.write_quorum, (unsigned long long)r.repair_interval_ms,
		       (unsigned long long)r.reads_of_lost);
	uint64_t unexplained = r.lost - r.lost_explained;
	printf("%s: %llu acknowledged writes lost%s, %llu keys with fewer than %u live copies, "
	       "%llu with copies outside their replicas\n",
	       unexplained ? "LOST" : "No write lost", (unsigned long long)unexplained,
	       r.lost ? " but to W crashes in one repair interval" : "",
	       (unsigned long long)r.under_replicated, p.net.kv.replicas,
	       (unsigned long long)r.over_replicated);
	return 0;
}
