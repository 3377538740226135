/* client_cmd.c — `ringnet put|get|del|peers|ring`: a thin HTTP client for a node.
 * Exit codes: 0 ok, 1 not found, 2 usage, 3 node unreachable or failing. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *client_usage =
    "usage: ringnet put KEY VALUE [--string] [--node URL]\n"
    "       ringnet get KEY [--node URL]\n"
    "       ringnet del KEY [--node URL]\n"
    "       ringnet peers [--node URL]\n"
    "       ringnet ring [--node URL]\n"
    "\n"
    "Talks to any node of the ring; it forwards to the key's owner. URL is\n"
    "http://HOST:PORT or just HOST:PORT; it defaults to $RINGNET_NODE, else\n"
    "http://127.0.0.1:5001. VALUE is taken as JSON when it parses as\n"
    "JSON (42, true, {\"a\":1}) and as a string otherwise, or always with --string.\n"
    "A node that asks for a token (its --api-token) gets $RINGNET_API_TOKEN; for an\n"
    "https:// node, $RINGNET_CACERT names the CA file to trust (else the system's).\n"
    "Exit status: 0 ok, 1 key not found, 2 usage error, 3 node unreachable or failing.\n";

typedef struct {
	char *data;
	size_t len;
} buf;

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
	buf *b = ctx;
	char *q = realloc(b->data, b->len + size * n + 1);
	if (!q)
		return 0;
	memcpy(q + b->len, p, size * n);
	b->data = q;
	b->len += size * n;
	b->data[b->len] = '\0';
	return size * n;
}

/* One request; the status in *status, the body in *out (caller frees). 0 or -1. rid: the
 * Idempotency-Key that makes a retried write safe, or NULL. */
static int http(const char *method, const char *url, const char *body, const char *rid,
                long *status, char **out)
{
	CURL *c = curl_easy_init();
	if (!c)
		return -1;
	buf b = {NULL, 0};
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	char idem[96], bearer[300];
	if (rid) {
		snprintf(idem, sizeof idem, "Idempotency-Key: %s", rid);
		h = curl_slist_append(h, idem);
	}
	/* a node that asks for a token (its --api-token), a CA for an https:// node */
	const char *token = getenv("RINGNET_API_TOKEN"), *ca = getenv("RINGNET_CACERT");
	if (token && *token && strlen(token) < sizeof bearer - 32) {
		snprintf(bearer, sizeof bearer, "Authorization: Bearer %s", token);
		h = curl_slist_append(h, bearer);
	}
	if (ca && *ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 15L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	CURLcode rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	else
		fprintf(stderr, "ringnet: cannot reach %s: %s\n", url, curl_easy_strerror(rc));
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	*out = b.data;
	return rc == CURLE_OK ? 0 : -1;
}

static int usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "ringnet: ");
	fprintf(stderr, msg, arg);
	fprintf(stderr, "\n%s", client_usage);
	return 2;
}

/* The node's error message, or the raw body. */
static void print_error(long status, const char *body)
{
	json_t *j = body ? json_loads(body, 0, NULL) : NULL;
	const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
	fprintf(stderr, "ringnet: %s (HTTP %ld)\n", msg ? msg : (body ? body : "no answer"),
	        status);
	json_decref(j);
}

int cli_client(const char *cmd, int argc, char **argv)
{
	const char *node = getenv("RINGNET_NODE");
	if (!node || !*node)
		node = "http://127.0.0.1:5001";
	const char *pos[3] = {NULL, NULL, NULL};
	int npos = 0;
	bool as_string = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(client_usage, stdout);
			return 0;
		} else if (!strcmp(argv[i], "--node")) {
			if (i + 1 >= argc)
				return usage_error("--node needs a URL%s", "");
			node = argv[++i];
		} else if (!strcmp(argv[i], "--string")) {
			as_string = true;
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			return usage_error("unknown option '%s'", argv[i]);
		} else if (npos < 3) {
			pos[npos++] = argv[i];
		} else {
			return usage_error("unexpected argument '%s'", argv[i]);
		}
	}
	bool put = !strcmp(cmd, "put"), get = !strcmp(cmd, "get"), del = !strcmp(cmd, "del");
	int want = put ? 2 : (get || del) ? 1 : 0;
	if (npos != want)
		return usage_error("wrong number of arguments for '%s'", cmd);
	if ((put || get || del) && !*pos[0])
		return usage_error("the key is empty%s", "");
	/* HOST:PORT is taken as http://HOST:PORT */
	char node_url[512];
	const char *colon = strrchr(node, ':');
	if (strncmp(node, "http://", 7) != 0 && !strstr(node, "://") && colon && colon != node &&
	    colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
	    !strchr(node, '/') && strlen(node) < sizeof node_url - 8) {
		snprintf(node_url, sizeof node_url, "http://%s", node);
		node = node_url;
	}
	if (strncmp(node, "http://", 7) != 0 && strncmp(node, "https://", 8) != 0)
		return usage_error(
		    "--node wants a URL like http://127.0.0.1:5001, https://HOST:PORT "
		    "or HOST:PORT, not '%s'",
		    node);

	curl_global_init(CURL_GLOBAL_DEFAULT);
	char url[2048];
	char *body = NULL, *out = NULL;
	const char *method = "GET";
	if (put || get || del) {
		CURL *c = curl_easy_init();
		char *esc = c ? curl_easy_escape(c, pos[0], 0) : NULL;
		if (put) {
			snprintf(url, sizeof url, "%s/kv", node);
			json_t *v = as_string ? NULL : json_loads(pos[1], JSON_DECODE_ANY, NULL);
			if (!v)
				v = json_string(pos[1]);
			json_t *doc = json_pack("{s:s, s:o}", "key", pos[0], "value", v);
			body = json_dumps(doc, JSON_COMPACT);
			json_decref(doc);
			method = "POST";
		} else {
			snprintf(url, sizeof url, "%s/kv/%s", node, esc ? esc : pos[0]);
			method = get ? "GET" : "DELETE";
		}
		curl_free(esc);
		curl_easy_cleanup(c);
	} else {
		snprintf(url, sizeof url, "%s/%s", node, cmd);
	}
	/* a write carries a request id, so that retrying it after an unclear answer is safe */
	char rid[40] = "";
	if (put || del) {
		FILE *ur = fopen("/dev/urandom", "rb");
		unsigned char r[16];
		if (ur && fread(r, 1, sizeof r, ur) == sizeof r)
			for (int i = 0; i < 16; i++)
				snprintf(rid + 2 * i, 3, "%02x", r[i]);
		if (ur)
			fclose(ur);
	}
	/* 503 says "cannot tell now, try again" (the ring is still settling, a replica did not
	 * answer): retry as the node suggests, for up to 10 s */
	long status = 0;
	int rc;
	for (int waited = 0;;) {
		free(out);
		out = NULL;
		rc = http(method, url, body, rid[0] ? rid : NULL, &status, &out);
		json_t *j = rc == 0 && status == 503 && out ? json_loads(out, 0, NULL) : NULL;
		json_int_t after = json_integer_value(json_object_get(j, "retry_after_ms"));
		json_decref(j);
		if (!after || waited + after > 10000)
			break;
		waited += (int)after;
		struct timespec ts = {after / 1000, (after % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	int exit_code = 3;
	if (rc == 0 && status == 200) {
		exit_code = 0;
		json_t *j = out ? json_loads(out, 0, NULL) : NULL;
		if (get) {
			json_t *v = json_object_get(j, "value");
			if (json_is_string(v)) {
				puts(json_string_value(v));
			} else {
				char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
				puts(t ? t : "null");
				free(t);
			}
		} else if (put || del) {
			printf("%s %s on node %s\n", put ? "stored" : "deleted", pos[0],
			       json_string_value(json_object_get(j, "node")));
		} else {
			char *t = json_dumps(j, JSON_INDENT(2));
			puts(t ? t : out);
			free(t);
		}
		json_decref(j);
	} else if (rc == 0) {
		print_error(status, out);
		exit_code = status == 404 && (get || del)   ? 1
		            : status >= 400 && status < 500 ? 2
		                                            : 3;
	}
	free(body);
	free(out);
	curl_global_cleanup();
	return exit_code;
}
