/* node_cmd.c — `ringnet node`: arguments, then the real driver. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../net/node.h"
#include "cli.h"

static const char *node_usage =
    "usage: ringnet node --id NAME --listen HOST:PORT --http HOST:PORT [--join HOST:PORT]...\n"
    "                    [--data DIR] [--key FILE] [--replicas R] [--write-quorum W]\n"
    "                    [--api-token FILE|none] [--http-tls CERT,KEY|none] [--ca DIR]\n"
    "                    [--peer-cert CERT,KEY]\n"
    "                    [--max-file SIZE] [--suspicion-ms MS] [--lifeguard MULT]\n"
    "                    [--confirm K] [--eager-gossip R] [--suspect-probes P]\n"
    "                    [--files-gc-delay-ms MS] [--read-lease-ms MS]\n"
    "                    [--log-level error|warn|info|debug] [--config FILE]\n"
    "\n"
    "Runs one node of a ring. Its ring id is SHA-1 of NAME. Without --join it starts a new\n"
    "ring (or, restarted on the same --data, rejoins the peers it knew); with --join (up\n"
    "to 8) it joins the ring of the node listening there. Peers talk to it on --listen (an\n"
    "IPv4 address other nodes can reach, not 0.0.0.0); the HTTP API is on --http. A HOST\n"
    "may be a name (a container's, say): --listen's and --http's are resolved at start, a\n"
    "--join name on every try to join (one that does not resolve yet is waited for).\n"
    "  --data DIR      its LMDB key-value store and saved peers (default ringnet-data/NAME)\n"
    "  --key FILE      the cluster key (64 hex digits): only peers that know it may send\n"
    "                  this node frames, and it sends its own only to them; without it, anyone\n"
    "                  who reaches --listen is a peer. `ringnet cluster` makes one itself\n"
    "  --replicas R    copies of every key, 1-8 (default 3; every node of a ring alike)\n"
    "  --write-quorum W  copies on disk before a write is acknowledged, 1-R (default 2)\n"
    "  --max-file SIZE the largest file it takes, in bytes or with K, M, G (default 4G)\n"
    "  --suspicion-ms MS  the failure detector's suspicion timeout is MS x max(2, log10 N)\n"
    "                  before a suspect member is declared dead (default 1000)\n"
    "  --lifeguard MULT  a suspicion starts at MULT times that timeout and shrinks to it\n"
    "                  as other members confirm it (Lifeguard; 1 to 100, default 4; 1: off)\n"
    "  --confirm K     confirmations that bring a suspicion down to the timeout, 1-8\n"
    "                  (default 1)\n"
    "  --eager-gossip R  a death this node learns, or a refutation it makes, goes to 3\n"
    "                  members at once; R such rounds a second at most (0-1000, default\n"
    "                  10; 0: only the 200 ms gossip rounds)\n"
    "  --suspect-probes P  about P members that hear of a fresh suspicion probe the\n"
    "                  suspect at once, out of turn (0-64, default 3; 0: off)\n"
    "  --files-gc-delay-ms MS  a deleted or replaced file's chunks are collected MS later\n"
    "                  (default 3600000, 1 h; every node of a ring alike: it also bounds the\n"
    "                  clock skew between nodes that collection tolerates, MS / 4)\n"
    "  --read-lease-ms MS  a replica the key's owner granted a read lease answers gets\n"
    "                  from its own copy, any other node granted a cache lease from its\n"
    "                  read cache; the owner acknowledges a write only once every holder\n"
    "                  has it (0-900, default 600; 0: every get goes to the owner). Every\n"
    "                  node of a ring alike\n"
    "  --api-token FILE  HTTP requests (but /health) need 'Authorization: Bearer TOKEN',\n"
    "                  the token in FILE; none: they do not. Default: none on a loopback\n"
    "                  --http, else a token made in DATA/api.token on the first start\n"
    "  --http-tls CERT,KEY  serve the API over HTTPS with these PEM files; none: plain\n"
    "                  HTTP. Default: plain on a loopback --http, else HTTPS with\n"
    "                  DATA/tls/node.crt, issued at start by the CA of --ca (else DATA/ca,\n"
    "                  made if missing); clients trust DATA/tls/ca.crt (RINGNET_CACERT)\n"
    "  --ca DIR        the cluster CA (`ringnet cert init --dir DIR`) for that certificate\n"
    "  --peer-cert CERT,KEY  with --key and --ca: prove to peers that this node is --id at\n"
    "                  --listen (`ringnet cert issue NAME --peer HOST:PORT`), and take a\n"
    "                  peer's frames only for the node its own certificate names\n"
    "  --config FILE   the same settings as JSON: {\"id\": ..., \"listen\": ..., \"http\": ...,\n"
    "                  \"join\": [...], \"data\": ..., \"key\": ..., \"log_level\": ...,\n"
    "                  \"api_token\": ..., \"http_tls\": ..., \"ca\": ..., \"peer_cert\": ...,\n"
    "                  \"replicas\": 3, \"write_quorum\": 2, \"suspicion_ms\": 1000,\n"
    "                  \"lifeguard\": 4, \"confirm\": 1, \"eager_gossip\": 10,\n"
    "                  \"suspect_probes\": 3, \"files_gc_delay_ms\": 3600000,\n"
    "                  \"read_lease_ms\": 600}; flags win\n"
    "                  over it\n"
    "Environment: RINGNET_ID, RINGNET_LISTEN, RINGNET_HTTP, RINGNET_JOIN (addresses apart\n"
    "  by commas), RINGNET_DATA, RINGNET_KEY, RINGNET_API_TOKEN_FILE (--api-token),\n"
    "  RINGNET_HTTP_TLS, RINGNET_CA, RINGNET_PEER_CERT, RINGNET_REPLICAS, RINGNET_WRITE_QUORUM, "
    "RINGNET_MAX_FILE,\n"
    "  RINGNET_SUSPICION_MS, RINGNET_LIFEGUARD, RINGNET_CONFIRM, RINGNET_EAGER_GOSSIP,\n"
    "  RINGNET_SUSPECT_PROBES, RINGNET_FILES_GC_DELAY_MS, RINGNET_READ_LEASE_MS,\n"
    "  RINGNET_LOG_LEVEL: the same settings; they win over --config,\n"
    "  flags win over them; an empty one is unset\n"
    "HTTP routes:\n"
    "  POST /kv {\"key\": K, \"value\": V}   store V (any JSON) under K\n"
    "  GET /kv/KEY, DELETE /kv/KEY       read or remove a key (any node forwards to its owner,\n"
    "                                    which coordinates the key's R replicas)\n"
    "  POST /upload (multipart, field \"file\"), PUT /files/NAME (raw body)  store a file\n"
    "  GET /download/NAME (Range, HEAD)   read it back; GET /files lists, DELETE /files/NAME\n"
    "  GET /ring     this node, its predecessor, successors and fingers\n"
    "  GET /peers    every peer it knows, with roles and connection state\n"
    "  GET /health   status and frame counters\n"
    "  GET /metrics  Prometheus text\n"
    "  GET /         the dashboard (its JSON: /api/node, /api/ring, /api/peers, /api/traffic,\n"
    "                /api/files, /api/transfers; docs/metrics.md)\n"
    "SIGINT or SIGTERM pushes its keys to their new replica, leaves the ring and exits 0.\n"
    "Exit status: 0 after a signal, 1 when it cannot start, 2 on a usage error.\n";

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "ringnet node: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", node_usage);
	return 2;
}

static int copy(char *dst, size_t len, const char *src)
{
	if (strlen(src) >= len)
		return -1;
	strcpy(dst, src);
	return 0;
}

static int set_option(node_opts *o, const char *a, const char *v);

/* The settings, as a config file names them and as flags. */
enum { NODE_NOPTS = 21, NODE_FIRST_NUMBER = 11 };
static const char *const names[NODE_NOPTS] = {
    "id",           "listen",   "http",         "join",           "data",
    "log_level",    "key",      "api_token",    "http_tls",       "ca",
    "peer_cert",    "replicas", "write_quorum", "max_file",       "suspicion_ms",
    "lifeguard",    "confirm",  "eager_gossip", "suspect_probes", "files_gc_delay_ms",
    "read_lease_ms"};
static const char *const flags[NODE_NOPTS] = {
    "--id",           "--listen",   "--http",         "--join",           "--data",
    "--log-level",    "--key",      "--api-token",    "--http-tls",       "--ca",
    "--peer-cert",    "--replicas", "--write-quorum", "--max-file",       "--suspicion-ms",
    "--lifeguard",    "--confirm",  "--eager-gossip", "--suspect-probes", "--files-gc-delay-ms",
    "--read-lease-ms"};

/* The same settings from the environment (see the usage). RINGNET_API_TOKEN is the clients'
 * token itself, so the node's --api-token FILE|none is RINGNET_API_TOKEN_FILE. */
static const struct {
	const char *var, *flag;
} envs[] = {{"RINGNET_ID", "--id"},
            {"RINGNET_LISTEN", "--listen"},
            {"RINGNET_HTTP", "--http"},
            {"RINGNET_JOIN", "--join"},
            {"RINGNET_DATA", "--data"},
            {"RINGNET_LOG_LEVEL", "--log-level"},
            {"RINGNET_KEY", "--key"},
            {"RINGNET_API_TOKEN_FILE", "--api-token"},
            {"RINGNET_HTTP_TLS", "--http-tls"},
            {"RINGNET_CA", "--ca"},
            {"RINGNET_PEER_CERT", "--peer-cert"},
            {"RINGNET_REPLICAS", "--replicas"},
            {"RINGNET_WRITE_QUORUM", "--write-quorum"},
            {"RINGNET_MAX_FILE", "--max-file"},
            {"RINGNET_SUSPICION_MS", "--suspicion-ms"},
            {"RINGNET_LIFEGUARD", "--lifeguard"},
            {"RINGNET_CONFIRM", "--confirm"},
            {"RINGNET_EAGER_GOSSIP", "--eager-gossip"},
            {"RINGNET_SUSPECT_PROBES", "--suspect-probes"},
            {"RINGNET_FILES_GC_DELAY_MS", "--files-gc-delay-ms"},
            {"RINGNET_READ_LEASE_MS", "--read-lease-ms"}};

static bool is_flag(const char *a)
{
	return cli_one_of(a, flags, NODE_NOPTS) || !strcmp(a, "--config");
}

/* Reads settings from a JSON file: the same names as the flags, without dashes. */
static int load_config(node_opts *o, const char *path)
{
	json_error_t err;
	json_t *doc = json_load_file(path, 0, &err);
	if (!doc) {
		if (err.line < 0) /* not a parse error: the file could not be read */
			fprintf(stderr, "ringnet node: config %s: %s\n", path, err.text);
		else
			fprintf(stderr, "ringnet node: config %s: %s (line %d, column %d)\n", path,
			        err.text, err.line, err.column);
		return 2;
	}
	int rc = 0;
	if (!json_is_object(doc)) {
		fprintf(stderr, "ringnet node: config %s: want a JSON object of settings\n", path);
		rc = 2;
	}
	const char *k;
	json_t *v;
	json_object_foreach(doc, k, v)
	{
		if (rc)
			break;
		int which = -1;
		for (int i = 0; i < NODE_NOPTS; i++)
			if (!strcmp(k, names[i]))
				which = i;
		if (which < 0) {
			fprintf(stderr, "ringnet node: config %s: unknown setting \"%s\"\n", path,
			        k);
			rc = 2;
		} else if (which == 3 && json_is_array(v)) {
			size_t i;
			json_t *e;
			json_array_foreach(v, i, e)
			{
				if (!json_is_string(e)) {
					fprintf(stderr,
					        "ringnet node: config %s: \"join\" wants strings\n",
					        path);
					rc = 2;
					break;
				}
				if ((rc = set_option(o, "--join", json_string_value(e))) != 0)
					break;
			}
		} else if (which >= NODE_FIRST_NUMBER && json_is_integer(v)) {
			char num[32];
			snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
			rc = set_option(o, flags[which], num);
		} else if (!json_is_string(v)) {
			fprintf(stderr, "ringnet node: config %s: \"%s\" wants a %s\n", path, k,
			        which >= NODE_FIRST_NUMBER ? "number" : "string");
			rc = 2;
		} else {
			rc = set_option(o, flags[which], json_string_value(v));
		}
	}
	json_decref(doc);
	return rc;
}

/* Reads the RINGNET_* variables; one whose flag is on the command line is left out (the flag
 * wins), and RINGNET_JOIN replaces the config file's join list. */
static int load_env(node_opts *o, int argc, char **argv)
{
	for (size_t i = 0; i < CLI_NELEM(envs); i++) {
		const char *v = getenv(envs[i].var);
		bool flagged = false;
		for (int k = 1; k < argc; k++)
			flagged |= !strcmp(argv[k], envs[i].flag);
		if (!v || !*v || flagged)
			continue;
		int rc = 0;
		if (!strcmp(envs[i].flag, "--join")) {
			o->njoin = 0;
			char list[NODE_MAX_JOIN * 64 + 64];
			if (strlen(v) >= sizeof list)
				rc = bad("RINGNET_JOIN is too long: '%s'", v);
			else
				strcpy(list, v);
			char *save = NULL;
			for (char *a = rc ? NULL : strtok_r(list, ", ", &save); a && !rc;
			     a = strtok_r(NULL, ", ", &save))
				rc = set_option(o, "--join", a);
		} else {
			rc = set_option(o, envs[i].flag, v);
		}
		if (rc) {
			fprintf(stderr, "ringnet node: (the bad value is %s's)\n", envs[i].var);
			return rc;
		}
	}
	return 0;
}

int cli_node(int argc, char **argv)
{
	if (cli_query_is_cluster(argc, argv)) /* a query cluster file (query_cmd.c) */
		return cli_query_node(argc, argv);
	node_opts o;
	memset(&o, 0, sizeof o);
	o.log_level = 2;
	/* the config file first, so that flags win over it */
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--config")) {
			int rc = load_config(&o, argv[i + 1]);
			if (rc)
				return rc;
		}
	int erc = load_env(&o, argc, argv);
	if (erc)
		return erc;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(node_usage, stdout);
			return 0;
		}
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!is_flag(a))
			return bad("unknown option '%s'", a);
		if (!v)
			return bad("%s needs a value", a);
		i++;
		if (!strcmp(a, "--config"))
			continue;
		int rc = set_option(&o, a, v);
		if (rc)
			return rc;
	}
	if (!o.name[0] || !o.listen[0] || !o.http[0]) {
		char missing[64] = "";
		const char *req[] = {o.name, o.listen, o.http},
		           *what[] = {"--id", "--listen", "--http"};
		for (int k = 0; k < 3; k++)
			if (!req[k][0])
				snprintf(missing + strlen(missing),
				         sizeof missing - strlen(missing), "%s%s",
				         missing[0] ? " " : "", what[k]);
		return bad("missing %s (--id, --listen and --http are required)", missing);
	}
	if (o.replicas && o.write_quorum > o.replicas)
		return bad("--write-quorum cannot exceed --replicas%s", "");
	if (!o.replicas && o.write_quorum > 3)
		return bad("--write-quorum cannot exceed --replicas (3 unless given)%s", "");
	if (!o.data[0]) {
		mkdir("ringnet-data", 0755);
		snprintf(o.data, sizeof o.data, "ringnet-data/%s", o.name);
	}
	return node_run(&o);
}

static int set_option(node_opts *o, const char *a, const char *v)
{
	{
		char host[64];
		int port;
		char resolved[64];
		if (!strcmp(a, "--id")) {
			if (!*v || copy(o->name, sizeof o->name, v) < 0)
				return bad("--id wants a name of 1 to 63 characters, not '%s'", v);
		} else if (!strcmp(a, "--listen") || !strcmp(a, "--http") || !strcmp(a, "--join")) {
			/* a name that is not an address is resolved once, here */
			const char *given = v;
			if (strcmp(a, "--join") &&
			    node_parse_hostport(v, host, sizeof host, &port) < 0 &&
			    node_resolve_hostport(v, resolved, sizeof resolved) == 0)
				v = resolved;
			if (!strcmp(a, "--http")) /* the name goes in its HTTPS certificate */
				snprintf(o->http_name, sizeof o->http_name, "%.*s",
				         v == resolved ? (int)(strrchr(given, ':') - given) : 0,
				         given);
			/* a --join name is kept as a name: the node looks it up on every try to
			 * join (join.c), so a peer container that is not up yet, or came back on
			 * another address, is still found */
			bool later = !strcmp(a, "--join") &&
			             node_parse_hostport(given, host, sizeof host, &port) < 0 &&
			             node_is_hostname_port(given);
			if (!later && (node_parse_hostport(v, host, sizeof host, &port) < 0 ||
			               !strcmp(host, "0.0.0.0"))) {
				char what[160];
				snprintf(what, sizeof what,
				         "%s wants HOST:PORT with an IPv4 address, localhost or a "
				         "name that resolves to one, not '%%s'",
				         a);
				return bad(what, v);
			}
			char *dst = !strcmp(a, "--listen") ? o->listen
			            : !strcmp(a, "--http") ? o->http
			                                   : NULL;
			if (!dst) {
				if (o->njoin == NODE_MAX_JOIN)
					return bad("at most 8 --join addresses%s", "");
				dst = o->join[o->njoin++];
			}
			if (copy(dst, 64, v) < 0)
				return bad("address too long: '%s'", v);
		} else if (!strcmp(a, "--data")) {
			if (!*v || copy(o->data, sizeof o->data, v) < 0)
				return bad("--data wants a directory path, not '%s'", v);
		} else if (!strcmp(a, "--replicas") || !strcmp(a, "--write-quorum")) {
			char *end;
			long x = strtol(v, &end, 10);
			if (!*v || *end || x < 1 || x > 8)
				return bad(
				    !strcmp(a, "--replicas")
				        ? "--replicas wants a number of copies, 1 to 8, not '%s'"
				        : "--write-quorum wants a number, 1 to --replicas, not "
				          "'%s'",
				    v);
			*(!strcmp(a, "--replicas") ? &o->replicas : &o->write_quorum) = (int)x;
		} else if (!strcmp(a, "--max-file")) {
			char *end;
			unsigned long long x = strtoull(v, &end, 10);
			int shift = 0;
			if (*end && strchr("KkMmGgTt", *end)) {
				shift = strchr("Kk", *end)   ? 10
				        : strchr("Mm", *end) ? 20
				        : strchr("Gg", *end) ? 30
				                             : 40;
				end++;
				if (*end == 'i')
					end++;
				if (*end == 'B')
					end++;
			}
			if (!*v || *v == '-' || *end || x < 1 || x > (16ull << 30) >> shift)
				return bad("--max-file wants a size from 1 byte to 16G (like 4G or "
				           "500M), not "
				           "'%s'",
				           v);
			o->max_file = x << shift;
		} else if (!strcmp(a, "--suspicion-ms")) {
			char *end;
			long x = strtol(v, &end, 10);
			if (!*v || *end || x < 100 || x > 600000)
				return bad(
				    "--suspicion-ms wants milliseconds, 100 to 600000, not '%s'",
				    v);
			o->suspicion_ms = (unsigned)x;
		} else if (!strcmp(a, "--lifeguard") || !strcmp(a, "--confirm") ||
		           !strcmp(a, "--eager-gossip") || !strcmp(a, "--suspect-probes")) {
			char *end;
			long x = strtol(v, &end, 10);
			bool lg = !strcmp(a, "--lifeguard"), cf = !strcmp(a, "--confirm");
			bool sp = !strcmp(a, "--suspect-probes");
			long lo = lg || cf ? 1 : 0, hi = lg ? 100 : cf ? 8 : sp ? 64 : 1000;
			if (!*v || *end || x < lo || x > hi) {
				char msg[96];
				snprintf(msg, sizeof msg,
				         "%s wants a whole number, %ld to %ld, not '%%s'", a, lo,
				         hi);
				return bad(msg, v);
			}
			if (lg)
				o->lifeguard = (unsigned)x;
			else if (cf)
				o->confirm = (unsigned)x;
			else if (sp) {
				o->suspect_probes = (unsigned)x;
				o->suspect_probes_set = true;
			} else {
				o->eager_gossip = (unsigned)x;
				o->eager_gossip_set = true;
			}
		} else if (!strcmp(a, "--files-gc-delay-ms")) {
			char *end;
			long x = strtol(v, &end, 10);
			if (!*v || *end || x < 100 || x > 86400000)
				return bad(
				    "--files-gc-delay-ms wants milliseconds, 100 to 86400000, "
				    "not '%s'",
				    v);
			o->files_gc_delay_ms = (unsigned)x;
		} else if (!strcmp(a, "--read-lease-ms")) {
			char *end;
			long x = strtol(v, &end, 10);
			if (!*v || *end || x < 0 || x > 900)
				return bad(
				    "--read-lease-ms wants milliseconds, 0 (off) to 900, not '%s'",
				    v);
			o->read_lease_ms = (unsigned)x;
			o->read_lease_set = true;
		} else if (!strcmp(a, "--key")) {
			if (!*v || copy(o->key, sizeof o->key, v) < 0)
				return bad("--key wants the path of a cluster key file, not '%s'",
				           v);
		} else if (!strcmp(a, "--api-token")) {
			if (!*v || copy(o->api_token, sizeof o->api_token, v) < 0)
				return bad(
				    "--api-token wants the path of a file holding the token, "
				    "or none, not '%s'",
				    v);
		} else if (!strcmp(a, "--http-tls")) {
			if ((!strchr(v, ',') && strcmp(v, "none")) ||
			    copy(o->http_tls, sizeof o->http_tls, v) < 0)
				return bad(
				    "--http-tls wants CERT,KEY (the paths of two PEM files) or "
				    "none, not '%s'",
				    v);
		} else if (!strcmp(a, "--peer-cert")) {
			if (!strchr(v, ',') || copy(o->peer_cert, sizeof o->peer_cert, v) < 0)
				return bad(
				    "--peer-cert wants CERT,KEY (the paths of two PEM files), "
				    "not '%s'",
				    v);
		} else if (!strcmp(a, "--ca")) {
			if (!*v || copy(o->ca, sizeof o->ca, v) < 0)
				return bad(
				    "--ca wants the folder of a CA (ca.crt, ca.key), not '%s'", v);
		} else if (!strcmp(a, "--log-level")) {
			static const char *levels[] = {"error", "warn", "info", "debug"};
			o->log_level = -1;
			for (int k = 0; k < 4; k++)
				if (!strcmp(v, levels[k]))
					o->log_level = k;
			if (o->log_level < 0)
				return bad("--log-level is error, warn, info or debug, not '%s'",
				           v);
		} else {
			return bad("unknown option '%s'", a);
		}
	}
	return 0;
}
