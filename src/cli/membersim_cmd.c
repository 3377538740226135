/* membersim_cmd.c — `ringnet sim --member ...`: the membership core on every simulated
 * node (src/sim/membersim.h), with loss and crashes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../lib/err.h"
#include "../sim/membersim.h"
#include "cli.h"

static const char *membersim_usage =
    "usage: ringnet sim --member [-n N | --nodes N] [--loss P] [--crash K] [--run-s S]\n"
    "                   [--warmup-s S] [--latency MIN-MAX] [--interval-ms MS]\n"
    "                   [--probe-timeout-ms MS] [--indirect K] [--suspicion-ms MS]\n"
    "                   [--retransmit-mult M] [--gossip-ms MS] [--seed S] [--json]\n"
    "                   [--lifeguard MULT] [--confirm K] [--eager-gossip R]\n"
    "                   [--suspect-probes P]\n"
    "\n"
    "Runs the SWIM membership core on every simulated node. All N nodes start knowing\n"
    "each other and run --warmup-s virtual seconds (default 20); then K nodes (--crash,\n"
    "default 5) crash at random times in the first half of the next --run-s seconds\n"
    "(default 60). Every message is lost with probability P (--loss, default 0).\n"
    "Reports, from each crash, when the first and the last live node suspected it and\n"
    "declared it dead; live nodes declared dead (false positives); messages per node per\n"
    "second. Defaults: 1000 nodes, probe every 1000 ms, probe timeout 500 ms, 3 indirect\n"
    "probers, suspicion 1000 ms x max(2, log10 N), retransmit 6 x ceil(log10(N+1)),\n"
    "gossip every 200 ms to 3 members, latency 10-50 ms, seed 1.\n"
    "--lifeguard MULT: a suspicion starts at MULT times the suspicion timeout and\n"
    "shrinks with each member that confirms it, to the timeout after K (--confirm,\n"
    "default 3) of them (Lifeguard's dynamic suspicion; default 1: off).\n"
    "--eager-gossip R: a death a node learns, and a refutation it makes, go out to the gossip\n"
    "members at once, not at the next gossip round; R such rounds a second at most\n"
    "(default 10; 0: off).\n"
    "--suspect-probes P: about P members that hear of a fresh suspicion probe the\n"
    "suspect at once, out of turn (default 3; 0: off).\n";

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "ringnet sim: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", membersim_usage);
	return 2;
}

static int whole(const char *s, uint64_t max, uint32_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static const char *const opts[] = {"-n",          "--nodes",        "--loss",
                                   "--crash",     "--run-s",        "--warmup-s",
                                   "--latency",   "--interval-ms",  "--probe-timeout-ms",
                                   "--indirect",  "--suspicion-ms", "--retransmit-mult",
                                   "--gossip-ms", "--seed",         "--lifeguard",
                                   "--confirm",   "--eager-gossip", "--suspect-probes"};

static void print_ms(uint64_t ms)
{
	printf("%.2f s", (double)ms / 1000.0);
}

int cli_membersim(int argc, char **argv)
{
	membersim_params p;
	membersim_params_default(&p);
	bool json = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--member"))
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(membersim_usage, stdout);
			return 0;
		}
		if (!strcmp(a, "--json")) {
			json = true;
			continue;
		}
		if (!cli_one_of(a, opts, CLI_NELEM(opts)))
			return bad(a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'",
			           a);
		if (!v)
			return bad("%s needs a value", a);
		i++;
		uint32_t *field = NULL;
		if (!strcmp(a, "-n") || !strcmp(a, "--nodes"))
			field = &p.nodes;
		else if (!strcmp(a, "--crash"))
			field = &p.crashes;
		else if (!strcmp(a, "--run-s"))
			field = &p.run_s;
		else if (!strcmp(a, "--warmup-s"))
			field = &p.warmup_s;
		else if (!strcmp(a, "--interval-ms"))
			field = &p.member.interval_ms;
		else if (!strcmp(a, "--probe-timeout-ms"))
			field = &p.member.probe_timeout_ms;
		else if (!strcmp(a, "--suspicion-ms"))
			field = &p.member.suspicion_ms;
		else if (!strcmp(a, "--gossip-ms"))
			field = &p.member.gossip_ms;
		if (field) {
			if (whole(v, UINT32_MAX, field) < 0)
				return bad("%s wants a whole number", a);
			continue;
		}
		uint32_t u;
		if (!strcmp(a, "--indirect") || !strcmp(a, "--retransmit-mult") ||
		    !strcmp(a, "--lifeguard") || !strcmp(a, "--confirm") ||
		    !strcmp(a, "--eager-gossip") || !strcmp(a, "--suspect-probes")) {
			if (whole(v, 1000, &u) < 0)
				return bad("%s wants a whole number", a);
			if (!strcmp(a, "--indirect"))
				p.member.indirect_k = u;
			else if (!strcmp(a, "--retransmit-mult"))
				p.member.retransmit_mult = u;
			else if (!strcmp(a, "--lifeguard"))
				p.member.suspicion_max_mult = u;
			else if (!strcmp(a, "--eager-gossip"))
				p.member.eager_per_s = u;
			else if (!strcmp(a, "--suspect-probes"))
				p.member.suspect_probes = u;
			else
				p.member.suspicion_confirm = u;
		} else if (!strcmp(a, "--seed")) {
			char *end;
			if (!*v || *v == '-')
				return bad("--seed wants a whole number, not '%s'", v);
			p.seed = strtoull(v, &end, 10);
			if (*end)
				return bad("--seed wants a whole number, not '%s'", v);
		} else if (!strcmp(a, "--loss")) {
			char *end;
			p.loss = strtod(v, &end);
			if (!*v || *end)
				return bad("--loss wants a probability, not '%s'", v);
		} else if (!strcmp(a, "--latency") &&
		           cli_range(v, &p.latency_min_ms, &p.latency_max_ms) < 0) {
			return bad("--latency wants MIN-MAX in milliseconds, not '%s'", v);
		}
	}
	char err[200];
	if (membersim_params_check(&p, err, sizeof err) < 0)
		return bad("%s", err);
	membersim_result r;
	int rc = membersim_run(&p, &r);
	if (rc < 0) {
		fprintf(stderr, "ringnet sim: %s\n", rn_strerror(rc));
		return 1;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	if (json) {
		printf(
		    "{\"nodes\":%u,\"loss\":%g,\"crashes\":%u,\"seed\":%llu,\"run_s\":%u,"
		    "\"suspicion_timeout_ms\":%llu,\"retransmit_limit\":%u,"
		    "\"crashes_known_everywhere\":%u,\"median_first_suspect_ms\":%llu,"
		    "\"median_last_suspect_ms\":%llu,\"median_first_dead_ms\":%llu,"
		    "\"median_last_dead_ms\":%llu,\"max_last_dead_ms\":%llu,"
		    "\"median_first_probe_ms\":%llu,\"median_p90_dead_ms\":%llu,"
		    "\"false_deaths\":%llu,\"false_dead_nodes\":%llu,\"live_suspicions\":%llu,"
		    "\"refutations\":%llu,\"msgs_per_node_s\":%.3f,\"updates_per_msg\":%.3f,"
		    "\"bytes_per_node_s\":%.0f,\"messages\":%llu,\"lost\":%llu,\"events\":%llu,"
		    "\"node_bytes\":%llu,\"wall_ms\":%.0f,\"peak_rss_kb\":%ld,\"crash\":[",
		    r.nodes, p.loss, r.crashes, (unsigned long long)p.seed, p.run_s,
		    (unsigned long long)r.suspicion_timeout_ms, r.retransmit_limit,
		    r.crashes_known_everywhere, (unsigned long long)r.med_first_suspect_ms,
		    (unsigned long long)r.med_last_suspect_ms,
		    (unsigned long long)r.med_first_dead_ms, (unsigned long long)r.med_last_dead_ms,
		    (unsigned long long)r.max_last_dead_ms,
		    (unsigned long long)r.med_first_probe_ms, (unsigned long long)r.med_p90_dead_ms,
		    (unsigned long long)r.false_deaths, (unsigned long long)r.false_dead_nodes,
		    (unsigned long long)r.live_suspicions, (unsigned long long)r.refutations,
		    r.msgs_per_node_s, r.updates_per_msg, r.bytes_per_node_s,
		    (unsigned long long)r.messages, (unsigned long long)r.lost,
		    (unsigned long long)r.events, (unsigned long long)r.node_bytes, r.wall_ms,
		    ru.ru_maxrss);
		for (uint32_t k = 0; k < r.crashes; k++) {
			const membersim_crash *c = &r.crash[k];
			printf(
			    "%s{\"known_by\":%u,\"first_suspect_ms\":%llu,\"last_suspect_ms\":%llu,"
			    "\"first_dead_ms\":%llu,\"median_dead_ms\":%llu,\"p90_dead_ms\":%llu,"
			    "\"last_dead_ms\":%llu,\"first_probe_ms\":%lld,\"dead_by_timer\":%u}",
			    k ? "," : "", c->known_by, (unsigned long long)c->first_suspect_ms,
			    (unsigned long long)c->last_suspect_ms,
			    (unsigned long long)c->first_dead_ms,
			    (unsigned long long)c->median_dead_ms,
			    (unsigned long long)c->p90_dead_ms, (unsigned long long)c->last_dead_ms,
			    c->first_probe_ms == UINT64_MAX ? -1LL : (long long)c->first_probe_ms,
			    c->dead_by_timer);
		}
		printf("]}\n");
		membersim_result_free(&r);
		return 0;
	}
	printf("ringnet sim --member: %u nodes, %u crashed, loss %g, seed %llu; suspicion "
	       "timeout %.1f s, each update sent %u times\n",
	       r.nodes, r.crashes, p.loss, (unsigned long long)p.seed,
	       (double)r.suspicion_timeout_ms / 1000.0, r.retransmit_limit);
	printf("crashes known dead by every live node: %u of %u\n", r.crashes_known_everywhere,
	       r.crashes);
	if (r.crashes_known_everywhere) {
		printf("from a crash (median over crashes): first suspect ");
		print_ms(r.med_first_suspect_ms);
		printf(", last suspect ");
		print_ms(r.med_last_suspect_ms);
		printf("; first dead ");
		print_ms(r.med_first_dead_ms);
		printf(", last dead ");
		print_ms(r.med_last_dead_ms);
		printf(" (worst ");
		print_ms(r.max_last_dead_ms);
		printf(")\n");
		printf("where the time goes (medians): first probe of the crashed node ");
		print_ms(r.med_first_probe_ms);
		printf(", first suspect ");
		print_ms(r.med_first_suspect_ms);
		printf(", first dead ");
		print_ms(r.med_first_dead_ms);
		printf(", 90%% of live nodes know ");
		print_ms(r.med_p90_dead_ms);
		printf(", all ");
		print_ms(r.med_last_dead_ms);
		printf("\n");
	}
	for (uint32_t k = 0; k < r.crashes; k++)
		if (r.crash[k].known_by < r.live_nodes)
			printf("crash %u: known dead by only %u of %u live nodes at the end\n", k,
			       r.crash[k].known_by, r.live_nodes);
	printf("false positives: %llu live nodes declared dead (%llu declarations); %llu "
	       "suspicions of live nodes, %llu refutations\n",
	       (unsigned long long)r.false_dead_nodes, (unsigned long long)r.false_deaths,
	       (unsigned long long)r.live_suspicions, (unsigned long long)r.refutations);
	printf("traffic: %.2f messages per node per second (%.2f updates each, ~%.0f bytes per "
	       "node per second); %llu lost\n",
	       r.msgs_per_node_s, r.updates_per_msg, r.bytes_per_node_s,
	       (unsigned long long)r.lost);
	printf("memory: %.0f bytes per node in the member cores, peak RSS %ld MB; %.0f ms wall\n",
	       (double)r.node_bytes / r.nodes, ru.ru_maxrss / 1024, r.wall_ms);
	membersim_result_free(&r);
	return 0;
}
