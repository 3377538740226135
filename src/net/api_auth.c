/* api_auth.c — the HTTP API's guards: a bearer token (--api-token) and TLS (--http-tls).
 *
 * A node whose API is reachable only from this machine (--http on 127.0.0.0/8) asks for
 * nothing unless told to. One that listens on any other address asks for a token by
 * default: the token of --api-token FILE, or one it makes on its first start in
 * DATA/api.token (0600) and names in its log. `--api-token none` turns the check off, for
 * a network that is private by other means. /health is always open, so that a load
 * balancer or a container runtime can probe it. Such a node serves HTTPS by default too
 * (api_tls.c); `--http-tls CERT,KEY` names the files, `--http-tls none` turns it off. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node_internal.h"

/* The whole of a small file, NUL-terminated; NULL with a message in err. */
static char *slurp(const char *path, size_t max, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	char *b = malloc(max + 1);
	size_t len = b ? fread(b, 1, max + 1, f) : 0;
	fclose(f);
	if (!b || len > max) {
		snprintf(err, errlen, "%s is %s", path,
		         b ? "too big" : "unreadable: out of memory");
		free(b);
		return NULL;
	}
	b[len] = '\0';
	return b;
}

/* Reads a token file: one word of 16 to API_TOKEN_MAX visible characters. */
static int load_token(node *n, const char *path, char *err, size_t errlen)
{
	char *t = slurp(path, 4 * API_TOKEN_MAX, err, errlen);
	if (!t)
		return -1;
	char *p = t + strspn(t, " \t\r\n");
	size_t len = strcspn(p, " \t\r\n");
	bool rest = p[len + strspn(p + len, " \t\r\n")] != '\0';
	bool visible = true;
	for (size_t i = 0; i < len; i++)
		visible = visible && p[i] > ' ' && p[i] < 127;
	if (len < 16 || len > API_TOKEN_MAX || rest || !visible) {
		snprintf(err, errlen,
		         "the API token in %s should be one word of 16 to %d visible characters",
		         path, API_TOKEN_MAX);
		OPENSSL_cleanse(t, strlen(t));
		free(t);
		return -1;
	}
	memcpy(n->api_token, p, len);
	n->api_token[len] = '\0';
	OPENSSL_cleanse(t, strlen(t));
	free(t);
	return 0;
}

/* DATA/api.token: made with 32 random bytes (64 hex digits) when it does not exist. */
static int data_token(node *n, char *path, size_t pathlen, char *err, size_t errlen)
{
	snprintf(path, pathlen, "%s/api.token", n->o->data);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd >= 0) {
		uint8_t r[32];
		char hex[2 * sizeof r + 2];
		bool ok = auth_random(r, sizeof r) == 0;
		for (size_t i = 0; i < sizeof r; i++)
			snprintf(hex + 2 * i, 3, "%02x", r[i]);
		hex[2 * sizeof r] = '\n';
		ok = ok && write(fd, hex, 2 * sizeof r + 1) == (ssize_t)(2 * sizeof r + 1);
		ok = close(fd) == 0 && ok;
		OPENSSL_cleanse(r, sizeof r);
		OPENSSL_cleanse(hex, sizeof hex);
		if (!ok) {
			unlink(path);
			snprintf(err, errlen, "cannot write a new API token to %s", path);
			return -1;
		}
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	return load_token(n, path, err, errlen);
}

static bool loopback(const char *host)
{
	return !strcmp(host, "localhost") || !strncmp(host, "127.", 4);
}

int nd_api_auth_setup(node *n, const char *host, char *err, size_t errlen)
{
	const node_opts *o = n->o;
	char path[300];
	if (!strcmp(o->api_token, "none")) {
		n->api_token[0] = '\0';
	} else if (o->api_token[0]) {
		if (load_token(n, o->api_token, err, errlen) < 0)
			return -1;
	} else if (!loopback(host)) {
		if (data_token(n, path, sizeof path, err, errlen) < 0)
			return -1;
		LOG_I(n,
		      "http: %s is reachable beyond this machine, so requests need "
		      "'Authorization: Bearer TOKEN' with the token in %s (--api-token none turns "
		      "this off; /health stays open)",
		      o->http, path);
	}
	char cert[512], key[512];
	if (!strcmp(o->http_tls, "none") || (!o->http_tls[0] && loopback(host)))
		return 0;      /* plain HTTP */
	if (!o->http_tls[0]) { /* beyond loopback: HTTPS with a certificate of its own */
		if (nd_api_tls_auto(n, host, cert, key, sizeof cert, err, errlen) < 0)
			return -1;
	} else {
		const char *comma = strchr(o->http_tls, ',');
		size_t clen = comma ? (size_t)(comma - o->http_tls) : 0;
		if (!comma || !clen || !comma[1] || clen >= sizeof cert ||
		    strlen(comma + 1) >= sizeof key) {
			snprintf(err, errlen,
			         "--http-tls wants CERT,KEY (two PEM files) or none, not '%s'",
			         o->http_tls);
			return -1;
		}
		memcpy(cert, o->http_tls, clen);
		cert[clen] = '\0';
		snprintf(key, sizeof key, "%s", comma + 1);
	}
	n->tls_cert = slurp(cert, 1u << 20, err, errlen);
	n->tls_key = n->tls_cert ? slurp(key, 1u << 20, err, errlen) : NULL;
	return n->tls_key ? 0 : -1;
}

bool nd_api_authorized(const node *n, const char *authorization)
{
	size_t want = strlen(n->api_token);
	if (!want)
		return true;
	if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
		return false;
	const char *t = authorization + 7;
	t += strspn(t, " ");
	size_t len = strcspn(t, " \t");
	return len == want && CRYPTO_memcmp(t, n->api_token, want) == 0;
}

void nd_api_auth_free(node *n)
{
	OPENSSL_cleanse(n->api_token, sizeof n->api_token);
	if (n->tls_key) {
		OPENSSL_cleanse(n->tls_key, strlen(n->tls_key));
		free(n->tls_key);
	}
	free(n->tls_cert);
	n->tls_key = n->tls_cert = NULL;
}
