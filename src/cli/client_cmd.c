/* client_cmd.c — `ringnet put|get|del|peers|ring`: a thin HTTP client for a node.
 * Exit codes: 0 ok, 1 not found, 2 usage, 3 node unreachable or failing. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *client_usage =
    "usage: ringnet put KEY VALUE|-|@FILE [--string] [--node URL]\n"
    "       ringnet get KEY [--node URL]\n"
    "       ringnet del KEY [--node URL]\n"
    "       ringnet peers [--node URL]\n"
    "       ringnet ring [--node URL]\n"
    "       ringnet health [--node URL]\n"
    "\n"
    "Talks to any node of the ring; it forwards to the key's owner. URL is\n"
    "http://HOST:PORT, https://HOST:PORT or just HOST:PORT (https when $RINGNET_CACERT\n"
    "is set, else http); it defaults to $RINGNET_NODE, else\n"
    "http://127.0.0.1:5001. VALUE is taken as JSON when it parses as\n"
    "JSON (42, true, {\"a\":1}) and as a string otherwise, or always with --string.\n"
    "A node that asks for a token (its --api-token) gets $RINGNET_API_TOKEN; for an\n"
    "https:// node, $RINGNET_CACERT names the CA file to trust (else the system's):\n"
    "the cluster's ca.crt (ringnet cert init), or DATA/tls/ca.crt of a node that made\n"
    "its own; the node's certificate must be signed by it and name the host in URL.\n"
    "VALUE '-' reads the value from standard input, '@FILE' from a file (up to 1 MiB);\n"
    "to store a string that starts with '@', or is '-', give it as JSON: '\"@x\"'.\n"
    "Exit status: 0 ok, 1 key not found, 2 usage error, 3 node unreachable or failing.\n"
    "`ringnet health` is a container's health check: it asks the node's GET /health\n"
    "(URL defaults to $RINGNET_NODE, else $RINGNET_HTTP, the address `ringnet node`\n"
    "serves on, over HTTPS when $RINGNET_HTTP_TLS is set too, or when that address is\n"
    "not loopback and $RINGNET_HTTP_TLS is not none, trusting $RINGNET_CACERT, else\n"
    "DATA/tls/ca.crt of $RINGNET_DATA) and exits 0 when the node answers \"ok\", 1\n"
    "otherwise.\n";

size_t cli_collect(char *p, size_t size, size_t n, void *ctx)
{
	cli_buf *b = ctx;
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
int cli_http(const char *method, const char *url, const char *body, const char *rid, long *status,
             char **out)
{
	CURL *c = curl_easy_init();
	if (!c)
		return -1;
	cli_buf b = {NULL, 0};
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	char idem[96];
	if (rid) {
		snprintf(idem, sizeof idem, "Idempotency-Key: %s", rid);
		h = curl_slist_append(h, idem);
	}
	h = cli_auth(c, h);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, cli_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 15L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	CURLcode rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	else
		cli_curl_failed(c, url, rc);
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
void cli_print_error(long status, const char *body)
{
	json_t *j = body ? json_loads(body, 0, NULL) : NULL;
	const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
	fprintf(stderr, "ringnet: %s (HTTP %ld)\n", msg ? msg : (body ? body : "no answer"),
	        status);
	json_decref(j);
}

/* For `ringnet health` of a node that serves HTTPS with a certificate of its own: its copy
 * of the CA's certificate, DATA/tls/ca.crt, unless $RINGNET_CACERT names one. */
static void own_ca(void)
{
	const char *ca = getenv("RINGNET_CACERT"), *data = getenv("RINGNET_DATA"),
	           *id = getenv("RINGNET_ID");
	char path[600];
	if (ca && *ca)
		return;
	if (data && *data)
		snprintf(path, sizeof path, "%s/tls/ca.crt", data);
	else
		snprintf(path, sizeof path, "ringnet-data/%s/tls/ca.crt", id ? id : "");
	setenv("RINGNET_CACERT", path, 1);
}

int cli_client(const char *cmd, int argc, char **argv)
{
	bool health = !strcmp(cmd, "health"), tls = false;
	const char *node = getenv("RINGNET_NODE");
	if (health && (!node || !*node)) {
		node = getenv("RINGNET_HTTP");
		const char *t = getenv("RINGNET_HTTP_TLS"); /* the node's own --http-tls */
		bool plain = t && !strcmp(t, "none");
		tls = !plain &&
		      ((t && *t) || (node && *node && !strstr(node, "://") &&
		                     strncmp(node, "127.", 4) && strncmp(node, "localhost:", 10)));
		if (tls && (!t || !*t))
			own_ca(); /* its certificate is one it issued itself (api_tls.c) */
	}
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
	char node_url[512];
	char tls_url[512];
	if (tls && !strstr(node, "://") && strlen(node) + 9 < sizeof tls_url) {
		snprintf(tls_url, sizeof tls_url, "https://%s", node); /* the node's --http-tls */
		node = tls_url;
	}
	const char *base = cli_node_url(node, node_url, sizeof node_url);
	if (!base)
		return usage_error(
		    "--node wants a URL like http://127.0.0.1:5001, https://HOST:PORT "
		    "or HOST:PORT, not '%s'",
		    node);
	node = base;
	char *loaded = NULL;
	if (put && (!strcmp(pos[1], "-") || pos[1][0] == '@')) {
		size_t vlen;
		loaded = cli_read_value(pos[1], &vlen);
		if (!loaded)
			return 2;
		pos[1] = loaded;
		if (strlen(loaded) != vlen) {
			fprintf(stderr,
			        "ringnet: the value holds NUL bytes: store binary data with "
			        "ringnet upload\n");
			free(loaded);
			return 2;
		}
	}

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
			if (!v) {
				fprintf(stderr,
				        "ringnet: the value is neither JSON nor UTF-8 text: "
				        "store binary data with ringnet upload\n");
				curl_free(esc);
				curl_easy_cleanup(c);
				free(loaded);
				curl_global_cleanup();
				return 2;
			}
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
	 * answer): retry as the node suggests, for up to 20 s, longer than the 12 s an owner
	 * waits after its view changed before it may say "not found" */
	long status = 0;
	int rc;
	for (int waited = 0;;) {
		free(out);
		out = NULL;
		rc = cli_http(method, url, body, rid[0] ? rid : NULL, &status, &out);
		json_t *j = rc == 0 && status == 503 && out ? json_loads(out, 0, NULL) : NULL;
		json_int_t after = json_integer_value(json_object_get(j, "retry_after_ms"));
		json_decref(j);
		if (!after || waited + after > 20000)
			break;
		waited += (int)after;
		struct timespec ts = {after / 1000, (after % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	int exit_code = 3;
	if (health) {
		json_t *j = rc == 0 && out ? json_loads(out, 0, NULL) : NULL;
		const char *st = json_string_value(json_object_get(j, "status"));
		exit_code = status == 200 && st && !strcmp(st, "ok") ? 0 : 1;
		printf("%s\n", exit_code == 0 ? out : "unhealthy");
		if (rc == 0 && exit_code)
			cli_print_error(status, out);
		json_decref(j);
	} else if (rc == 0 && status == 200) {
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
		cli_print_error(status, out);
		exit_code = status == 404 && (get || del)   ? 1
		            : status >= 400 && status < 500 ? 2
		                                            : 3;
	}
	free(body);
	free(out);
	free(loaded);
	curl_global_cleanup();
	return exit_code;
}

struct curl_slist *cli_auth(void *c, struct curl_slist *h)
{
	/* a node that asks for a token (its --api-token), a CA for an https:// node */
	const char *token = getenv("RINGNET_API_TOKEN"), *ca = getenv("RINGNET_CACERT");
	char bearer[300];
	if (token && *token && strlen(token) < sizeof bearer - 32) {
		snprintf(bearer, sizeof bearer, "Authorization: Bearer %s", token);
		h = curl_slist_append(h, bearer);
	}
	if (ca && *ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	cli_tls_errors(c);
	return h;
}

/* libcurl's words for the last failure on this thread's handles (cli_curl_failed) */
static _Thread_local char curl_err[CURL_ERROR_SIZE];

void cli_tls_errors(void *c)
{
	curl_err[0] = '\0';
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
}

const char *cli_node_url(const char *node, char *out, size_t len)
{
	/* HOST:PORT is taken as http://HOST:PORT, or https:// when a CA to trust is named */
	const char *colon = strrchr(node, ':'), *ca = getenv("RINGNET_CACERT");
	if (strncmp(node, "http://", 7) != 0 && !strstr(node, "://") && colon && colon != node &&
	    colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
	    !strchr(node, '/') && strlen(node) + 9 < len) {
		snprintf(out, len, "%s://%s", ca && *ca ? "https" : "http", node);
		return out;
	}
	if (strncmp(node, "http://", 7) != 0 && strncmp(node, "https://", 8) != 0)
		return NULL;
	/* no trailing '/': routes are appended */
	size_t n = strlen(node);
	if (n && node[n - 1] == '/' && n < len) {
		memcpy(out, node, n - 1);
		out[n - 1] = '\0';
		return out;
	}
	return node;
}

/* "-": standard input; "@PATH": the file. The bytes, NUL-terminated, or NULL (said why). */
char *cli_read_value(const char *arg, size_t *len)
{
	bool in = !strcmp(arg, "-");
	FILE *f = in ? stdin : fopen(arg + 1, "rb");
	if (!f) {
		fprintf(stderr, "ringnet: cannot read %s: %s\n", arg + 1, strerror(errno));
		return NULL;
	}
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	size_t k;
	while (b && (k = fread(b + n, 1, cap - n - 1, f)) > 0) {
		n += k;
		if (n + 1 == cap) {
			if (cap >= (2u << 20)) { /* the node takes at most 1 MiB per request */
				fprintf(stderr,
				        "ringnet: %s is over 1 MiB, more than a value can be: "
				        "store it with ringnet upload\n",
				        in ? "standard input" : arg + 1);
				free(b);
				b = NULL;
				break;
			}
			char *q = realloc(b, cap * 2);
			if (!q) {
				free(b);
				b = NULL;
				break;
			}
			b = q;
			cap *= 2;
		}
	}
	if (b && ferror(f)) {
		fprintf(stderr, "ringnet: cannot read %s: %s\n", in ? "standard input" : arg + 1,
		        strerror(errno));
		free(b);
		b = NULL;
	}
	if (!in)
		fclose(f);
	if (b) {
		b[n] = '\0';
		*len = n;
	}
	return b;
}

void cli_curl_failed(void *c, const char *url, int rc)
{
	const char *ca = getenv("RINGNET_CACERT"), *what = curl_easy_strerror((CURLcode)rc);
	bool https = !strncmp(url, "https://", 8);
	long vr = 0;
	char trust[700];
	if (ca && *ca)
		snprintf(trust, sizeof trust, "the CA in RINGNET_CACERT=%s", ca);
	else
		snprintf(
		    trust, sizeof trust,
		    "a CA this machine trusts (set RINGNET_CACERT to the cluster's ca.crt, or to "
		    "DATA/tls/ca.crt of a node that made its own)");
	/* a chain that does not end at the CA, as against a name that does not match */
	bool chain = strstr(curl_err, "certificate problem") != NULL;
	if (rc == CURLE_PEER_FAILED_VERIFICATION && chain &&
	    curl_easy_getinfo(c, CURLINFO_SSL_VERIFYRESULT, &vr) == CURLE_OK && vr != 0)
		fprintf(
		    stderr,
		    "ringnet: %s: the node's certificate is not signed by %s (%s): not trusting "
		    "it\n",
		    url, trust, X509_verify_cert_error_string(vr));
	else if (rc == CURLE_PEER_FAILED_VERIFICATION)
		fprintf(stderr,
		        "ringnet: %s: the node's certificate does not name this host (%s): use the "
		        "address it was issued for, or issue one that names this one\n",
		        url, curl_err[0] ? curl_err : what);
	else if (rc == CURLE_SSL_CACERT_BADFILE)
		fprintf(stderr, "ringnet: %s: cannot use RINGNET_CACERT=%s as a CA file (%s)\n",
		        url, ca ? ca : "", what);
	else if (https && rc == CURLE_SSL_CONNECT_ERROR)
		fprintf(stderr,
		        "ringnet: %s: no TLS handshake (%s): does the node serve HTTPS? One on a "
		        "loopback --http, or with --http-tls none, serves plain http://\n",
		        url, what);
	else if (!https && (rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR))
		fprintf(stderr,
		        "ringnet: cannot reach %s: %s (a node whose --http is not loopback serves "
		        "HTTPS by default: use https://HOST:PORT, with RINGNET_CACERT)\n",
		        url, what);
	else
		fprintf(stderr, "ringnet: cannot reach %s: %s\n", url, what);
}
