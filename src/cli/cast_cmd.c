/* cast_cmd.c — `ringnet cast FILE`: asks a node to send a file to every node (or some),
 * follows their progress through the node's GET /cast/status, and prints when each one
 * held the whole file. Exit codes: 0 every destination done, 1 timeout or failure,
 * 2 usage, 3 node unreachable. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char *cast_usage =
    "usage: ringnet cast FILE [--node URL] [--to all|ID,ID...] [--piece-size BYTES]\n"
    "                    [--rate BYTES_PER_S] [--json] [--timeout S]\n"
    "\n"
    "The node behind --node (default $RINGNET_NODE, else http://127.0.0.1:5001) reads FILE\n"
    "from its own filesystem and sends it to every node it reaches through its links and\n"
    "their relays (--to all, the default) or to the nodes named; each destination writes\n"
    "it to DATA_DIR/cast/<name of FILE>, whole and verified. Progress per destination goes\n"
    "to stderr on a terminal; at the end a table: destination, bytes, completion time\n"
    "(seconds since the source started), mean rate, and U, the time of the last one.\n"
    "--json: the last line of stdout is one JSON object with the same.\n"
    "--rate caps what every node sends (bytes/s, for tests); --timeout defaults to 600 s.\n"
    "Exit status: 0 all done, 1 timeout or failure, 2 usage error, 3 node unreachable.\n";

static int usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "ringnet cast: ");
	fprintf(stderr, msg, arg);
	fprintf(stderr, "\n%s", cast_usage);
	return 2;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* GET /cast/status as JSON, or NULL. */
static json_t *status(const char *base)
{
	char url[600];
	snprintf(url, sizeof url, "%s/cast/status", base);
	long st = 0;
	char *body = NULL;
	if (cli_http("GET", url, NULL, NULL, &st, &body) < 0 || st != 200) {
		free(body);
		return NULL;
	}
	json_t *j = json_loads(body, 0, NULL);
	free(body);
	return j;
}

/* Waits until the set of nodes the source knows has not changed for 2 s (at most 20 s:
 * "--to all" means every node reachable, and links may still be forming: a dial that
 * failed is retried within 2 s). */
static void settle(const char *base)
{
	size_t last = 0;
	int same = 0;
	for (int i = 0; i < 100 && same < 10; i++) {
		json_t *j = status(base);
		size_t n = j ? json_array_size(json_object_get(j, "known")) : 0;
		json_decref(j);
		same = n == last && n > 0 ? same + 1 : 0;
		last = n;
		sleep_ms(200);
	}
}

int cli_cast(int argc, char **argv)
{
	const char *node = getenv("RINGNET_NODE");
	if (!node || !*node)
		node = "http://127.0.0.1:5001";
	const char *file = NULL, *to = "all";
	long piece = 0, rate = 0;
	double timeout = 600;
	bool as_json = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(cast_usage, stdout);
			return 0;
		} else if (!strcmp(a, "--node") && more) {
			node = argv[++i];
		} else if (!strcmp(a, "--to") && more) {
			to = argv[++i];
		} else if (!strcmp(a, "--piece-size") && more) {
			char *end;
			piece = strtol(argv[++i], &end, 10);
			if (*end || piece < 4096 || piece > 1048576)
				return usage_error(
				    "--piece-size must be 4096..1048576 bytes, not '%s'", argv[i]);
		} else if (!strcmp(a, "--rate") && more) {
			char *end;
			rate = strtol(argv[++i], &end, 10);
			if (*end || rate < 0)
				return usage_error("--rate must be bytes per second, not '%s'",
				                   argv[i]);
		} else if (!strcmp(a, "--timeout") && more) {
			char *end;
			timeout = strtod(argv[++i], &end);
			if (*end || timeout <= 0)
				return usage_error("--timeout must be seconds > 0, not '%s'",
				                   argv[i]);
		} else if (!strcmp(a, "--json")) {
			as_json = true;
		} else if (a[0] == '-' && a[1] == '-') {
			return usage_error(more ? "unknown option '%s'"
			                        : "'%s' needs a value (or is "
			                          "unknown)",
			                   a);
		} else if (!file) {
			file = a;
		} else {
			return usage_error("unexpected argument '%s'", a);
		}
	}
	if (!file)
		return usage_error("which FILE?%s", "");
	char base[512];
	snprintf(base, sizeof base, "%s%s", strstr(node, "://") ? "" : "http://", node);
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		base[--bl] = 0;
	char abs[PATH_MAX];
	if (!realpath(file, abs)) /* not here: it may be on the node's filesystem */
		snprintf(abs, sizeof abs, "%s", file);

	json_t *req = json_pack("{s:s}", "path", abs);
	if (strcmp(to, "all")) {
		json_t *list = json_array();
		char *copy = strdup(to), *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
			json_array_append_new(list, json_string(t));
		free(copy);
		json_object_set_new(req, "to", list);
	} else {
		json_object_set_new(req, "to", json_string("all"));
	}
	if (piece)
		json_object_set_new(req, "piece_size", json_integer(piece));
	if (rate)
		json_object_set_new(req, "rate", json_integer(rate));
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);

	json_t *first = status(base);
	if (!first) {
		fprintf(stderr, "ringnet cast: no answer from %s/cast/status\n", base);
		free(body);
		return 3;
	}
	json_decref(first);
	if (!strcmp(to, "all"))
		settle(base);
	char url[600];
	snprintf(url, sizeof url, "%s/cast", base);
	long st = 0;
	char *out = NULL;
	int rc = cli_http("POST", url, body, NULL, &st, &out);
	free(body);
	if (rc < 0) {
		free(out);
		return 3;
	}
	if (st != 200) {
		cli_print_error(st, out);
		free(out);
		return 1;
	}
	json_t *started = json_loads(out, 0, NULL);
	free(out);
	const char *xfer = json_string_value(json_object_get(started, "xfer"));
	char xid[32];
	snprintf(xid, sizeof xid, "%s", xfer ? xfer : "");
	json_decref(started);

	bool tty = isatty(2);
	double t0 = mono_s();
	int drawn = 0;
	json_t *last = NULL;
	bool all_done = false;
	while (!all_done && mono_s() - t0 < timeout) {
		json_t *j = status(base);
		json_t *t = j ? json_object_get(j, "transfer") : NULL;
		const char *id = json_string_value(json_object_get(t, "xfer"));
		if (!id || strcmp(id, xid)) { /* another transfer replaced ours, or no answer */
			json_decref(j);
			sleep_ms(100);
			continue;
		}
		json_decref(last);
		last = j;
		json_t *dests = json_object_get(t, "destinations"), *d;
		size_t i, ndest = 0, ndone = 0;
		json_array_foreach(dests, i, d)
		{
			if (!json_is_true(json_object_get(d, "dest")))
				continue;
			ndest++;
			ndone += json_is_number(json_object_get(d, "done_s"));
		}
		/* named destinations must all have been heard of */
		size_t want = ndest;
		if (strcmp(to, "all")) {
			want = 1;
			for (const char *p = to; *p; p++)
				want += *p == ',';
		}
		all_done = ndest > 0 && ndest >= want && ndone == ndest;
		if (tty) {
			if (drawn)
				fprintf(stderr, "\033[%dA", drawn);
			drawn = 0;
			json_array_foreach(dests, i, d)
			{
				if (!json_is_true(json_object_get(d, "dest")))
					continue;
				double held =
				    (double)json_integer_value(json_object_get(d, "held"));
				double total =
				    (double)json_integer_value(json_object_get(d, "total"));
				fprintf(stderr, "\033[K  %-20s %5.1f%%%s\n",
				        json_string_value(json_object_get(d, "id")),
				        total > 0 ? 100.0 * held / total : 0.0,
				        json_is_number(json_object_get(d, "done_s")) ? "  done"
				                                                     : "");
				drawn++;
			}
		}
		if (!all_done)
			sleep_ms(100);
	}
	if (!last) {
		fprintf(stderr, "ringnet cast: the node never showed the transfer\n");
		return 1;
	}
	json_t *t = json_object_get(last, "transfer");
	json_t *dests = json_object_get(t, "destinations"), *d;
	size_t i;
	double u = 0;
	json_t *rows = json_array();
	printf("%-20s %14s %10s %14s\n", "destination", "bytes", "done (s)", "rate (Mbit/s)");
	json_array_foreach(dests, i, d)
	{
		if (!json_is_true(json_object_get(d, "dest")))
			continue;
		const char *name = json_string_value(json_object_get(d, "id"));
		json_int_t bytes = json_integer_value(json_object_get(d, "bytes"));
		json_t *ds = json_object_get(d, "done_s");
		if (json_is_number(ds)) {
			double s = json_number_value(ds);
			double r = s > 0 ? (double)bytes / s : 0;
			u = s > u ? s : u;
			printf("%-20s %14lld %10.3f %14.2f\n", name, (long long)bytes, s,
			       r * 8 / 1e6);
			json_array_append_new(rows,
			                      json_pack("{s:s, s:I, s:f, s:f}", "id", name, "bytes",
			                                bytes, "done_s", s, "rate_bps", r * 8));
		} else {
			printf("%-20s %14lld %10s %14s\n", name, (long long)bytes, "-", "-");
			json_array_append_new(rows,
			                      json_pack("{s:s, s:I, s:n, s:n}", "id", name, "bytes",
			                                bytes, "done_s", "rate_bps"));
		}
	}
	printf("U = %.3f s%s\n", u, all_done ? "" : " (not every destination finished)");
	if (as_json) {
		json_t *o =
		    json_pack("{s:s, s:O, s:O, s:o, s:o}", "file",
		              json_string_value(json_object_get(t, "file")), "size",
		              json_object_get(t, "size"), "pieces", json_object_get(t, "pieces"),
		              "u_s", all_done ? json_real(u) : json_null(), "destinations", rows);
		json_object_set_new(o, "complete", json_boolean(all_done));
		char *text = json_dumps(o, JSON_COMPACT);
		printf("%s\n", text);
		free(text);
		json_decref(o);
	} else {
		json_decref(rows);
	}
	json_decref(last);
	if (!all_done) {
		fprintf(stderr,
		        "ringnet cast: timed out after %.0f s: not every destination holds the "
		        "file\n",
		        timeout);
		return 1;
	}
	return 0;
}
