/* castsim_cmd.c — `ringnet sim --cast TOPOLOGY`: the cast core on a simulated network
 * (src/sim/castsim.h): per-destination completion times, U, FORMAT.md's lower bound and
 * the efficiency bound / U. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sim/castsim.h"

static const char *castsim_usage =
    "usage: ringnet sim --cast TOPOLOGY [--trace FILE] [--size BYTES] [--piece-size BYTES]\n"
    "                   [--seed N] [--json]\n"
    "\n"
    "Runs the cast scheduler of every host on the topology (../shared/topologies/FORMAT.md)\n"
    "under a fluid bandwidth model (max-min fair sharing of every link direction; delay\n"
    "as given; loss and queues not modelled) and prints when each destination held the\n"
    "whole file, U (the last of them), the lower bound of FORMAT.md and bound / U.\n"
    "--size defaults to 100 MiB; --trace applies bw= and delay= changes as they come.\n"
    "--json: one JSON object on the last line.\n";

static int usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "ringnet sim --cast: ");
	fprintf(stderr, msg, arg);
	fprintf(stderr, "\n%s", castsim_usage);
	return 2;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end || s[0] == '-')
		return false;
	*out = v;
	return true;
}

int cli_castsim(int argc, char **argv)
{
	const char *topo = NULL, *trace = NULL;
	uint64_t size = 100ull << 20, piece = 0, seed = 1;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(castsim_usage, stdout);
			return 0;
		} else if (!strcmp(a, "--cast") && more) {
			topo = argv[++i];
		} else if (!strcmp(a, "--trace") && more) {
			trace = argv[++i];
		} else if (!strcmp(a, "--size") && more) {
			if (!parse_u64(argv[++i], &size) || size == 0)
				return usage_error("--size must be bytes > 0, not '%s'", argv[i]);
		} else if (!strcmp(a, "--piece-size") && more) {
			if (!parse_u64(argv[++i], &piece) || piece < CAST_PIECE_MIN ||
			    piece > CAST_PIECE_MAX)
				return usage_error("--piece-size must be 4096..1048576, not '%s'",
				                   argv[i]);
		} else if (!strcmp(a, "--seed") && more) {
			if (!parse_u64(argv[++i], &seed))
				return usage_error("--seed must be a number, not '%s'", argv[i]);
		} else if (!strcmp(a, "--json")) {
			as_json = true;
		} else {
			return usage_error("unknown or incomplete option '%s'", a);
		}
	}
	if (!topo)
		return usage_error("--cast needs a TOPOLOGY file%s", "");
	cs_topo t;
	char err[512];
	if (cs_topo_load(topo, &t, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet sim --cast: %s\n", err);
		return 1;
	}
	if (trace && cs_trace_load(trace, &t, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet sim --cast: %s\n", err);
		cs_topo_free(&t);
		return 1;
	}
	cs_opts o = {.size = size, .piece_size = (uint32_t)piece, .seed = seed};
	uint64_t np = (size + (piece ? piece : cast_default_piece(size)) - 1) /
	              (piece ? piece : cast_default_piece(size));
	if (np > CAST_MAX_PIECES) {
		cs_topo_free(&t);
		return usage_error("more than 32768 pieces: use a larger --piece-size%s", "");
	}
	cs_result r;
	cs_bound b;
	cs_lower_bound(&t, size, &b);
	if (cs_run(&t, &o, &r) < 0) {
		fprintf(stderr, "ringnet sim --cast: out of memory\n");
		cs_topo_free(&t);
		return 1;
	}
	json_t *dests = json_array();
	printf("%-20s %10s %14s\n", "destination", "done (s)", "rate (Mbit/s)");
	for (int v = 0; v < t.nv; v++) {
		if (t.v[v].is_switch || v == t.src)
			continue;
		double d = r.done_s[v];
		if (d >= 0) {
			double rate = d > 0 ? (double)size * 8 / d : 0;
			printf("%-20s %10.3f %14.2f\n", t.v[v].name, d, rate / 1e6);
			json_array_append_new(dests, json_pack("{s:s, s:f, s:f}", "id", t.v[v].name,
			                                       "done_s", d, "rate_bps", rate));
		} else {
			printf("%-20s %10s %14s\n", t.v[v].name, "-", "-");
			json_array_append_new(dests, json_pack("{s:s, s:n, s:n}", "id", t.v[v].name,
			                                       "done_s", "rate_bps"));
		}
	}
	double eff = r.complete && r.u_s > 0 ? b.bound_s / r.u_s : 0;
	printf("U = %.3f s   bound = %.3f s (cut %.3f, upload %.3f, delay %.3f)   efficiency = "
	       "%.3f\n",
	       r.u_s, b.bound_s, b.cut_s, b.upload_s, b.delay_s, eff);
	printf("pieces %u of %u bytes; %llu delivered, %llu duplicates (at most %u of one piece "
	       "at one host), %llu end-game requests, %llu stalls; the source sent %llu\n",
	       r.npieces, r.piece_size, (unsigned long long)r.deliveries,
	       (unsigned long long)r.dup_arrivals, r.max_dup_per_piece,
	       (unsigned long long)r.total.endgame_req, (unsigned long long)r.total.stalls,
	       (unsigned long long)r.src_pieces_out);
	if (as_json) {
		json_t *j = json_pack(
		    "{s:s, s:I, s:I, s:I, s:o, s:f, s:f, s:f, s:f, s:f, s:o, s:I, s:I}", "topology",
		    topo, "size", (json_int_t)size, "pieces", (json_int_t)r.npieces, "piece_size",
		    (json_int_t)r.piece_size, "u_s", r.complete ? json_real(r.u_s) : json_null(),
		    "bound_s", b.bound_s, "cut_s", b.cut_s, "upload_s", b.upload_s, "delay_s",
		    b.delay_s, "efficiency", eff, "destinations", dests, "duplicates",
		    (json_int_t)r.dup_arrivals, "source_pieces_out", (json_int_t)r.src_pieces_out);
		char *text = json_dumps(j, JSON_COMPACT);
		printf("%s\n", text);
		free(text);
		json_decref(j);
	} else {
		json_decref(dests);
	}
	bool ok = r.complete;
	cs_result_free(&r);
	cs_topo_free(&t);
	if (!ok) {
		fprintf(stderr, "ringnet sim --cast: not every destination finished within the "
		                "simulated hour\n");
		return 1;
	}
	return 0;
}
