/* files_cmd.c — `ringnet upload|download|files|rm`: files on the ring, over a node's HTTP API.
 * A transfer shows a progress bar (bytes, rate, ETA) when stderr is a terminal, nothing
 * when it is not. A download goes to a temporary file beside the output, which is renamed
 * into place only once its size and SHA-256 match what the node announced.
 * Exit codes: 0 ok, 1 no such file, 2 usage or a request the node refused, 3 node
 * unreachable or failing. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char *files_usage =
    "usage: ringnet upload FILE [--name NAME] [--node URL]\n"
    "       ringnet download NAME [-o OUT] [--node URL]\n"
    "       ringnet files [--node URL]\n"
    "       ringnet rm NAME [--node URL]\n"
    "\n"
    "upload stores FILE on the ring under NAME (default: FILE's last path component);\n"
    "FILE '-' reads standard input (then --name is needed). download writes NAME to OUT\n"
    "(default: NAME in the current directory; '-o -' is standard output) through a\n"
    "temporary file renamed into place once its SHA-256 matches. files lists the files;\n"
    "rm deletes one. URL is http://HOST:PORT or HOST:PORT (default $RINGNET_NODE, else\n"
    "http://127.0.0.1:5001). A progress bar is shown on a terminal. A node that asks\n"
    "for a token gets $RINGNET_API_TOKEN; $RINGNET_CACERT is the CA for an https:// node.\n"
    "Exit status: 0 ok, 1 no such file, 2 usage error or refused, 3 node unreachable or "
    "failing.\n";

static int usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "ringnet: ");
	fprintf(stderr, msg, arg);
	fprintf(stderr, "\n%s", files_usage);
	return 2;
}

/* ---- progress ---- */

typedef struct {
	bool on;
	double start, last;
	const char *what;
} progress;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void human(double b, char *out, size_t len)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(out, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void bar(progress *p, double done, double total, bool last)
{
	double t = now_s();
	if (!p->on || (!last && t - p->last < 0.1))
		return;
	p->last = t;
	double el = t - p->start, rate = el > 0 ? done / el : 0;
	char d[32], tt[32], r[32], eta[32] = "";
	human(done, d, sizeof d);
	human(total, tt, sizeof tt);
	human(rate, r, sizeof r);
	int width = 24, fill = total > 0 ? (int)(width * done / total) : (last ? width : 0);
	char b[32];
	for (int i = 0; i < width; i++)
		b[i] = i < fill ? '#' : '.';
	b[width] = '\0';
	if (total > 0 && rate > 0 && !last)
		snprintf(eta, sizeof eta, " ETA %.0fs", (total - done) / rate);
	fprintf(stderr, "\r%s [%s] %3.0f%% %s / %s  %s/s%s   ", p->what, b,
	        total > 0 ? 100 * done / total : 100.0, d, tt, r, eta);
	if (last)
		fputc('\n', stderr);
	fflush(stderr);
}

static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	progress *p = ctx;
	if (ultotal || ulnow)
		bar(p, (double)ulnow, (double)ultotal, false);
	else
		bar(p, (double)dlnow, (double)dltotal, false);
	return 0;
}

/* ---- requests ---- */

/* A handle for url with the node's token and CA (cli_auth); *h holds the header list the
 * caller frees after the transfer. */
static CURL *easy(const char *url, progress *p, struct curl_slist **h)
{
	CURL *c = curl_easy_init();
	if (!c)
		return NULL;
	/* no "Expect: 100-continue" wait before an upload's body */
	*h = cli_auth(c, curl_slist_append(NULL, "Expect:"));
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, *h);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	/* a transfer that moves nothing for a minute has stalled */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	if (p && p->on) {
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, p);
	}
	return c;
}

static int perform(CURL *c, const char *url, long *status)
{
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		cli_curl_failed(c, url, rc);
		return -1;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	return 0;
}

static int exit_for(long status)
{
	return status == 404 ? 1 : status >= 400 && status < 500 ? 2 : 3;
}

/* The node's retry hint on a 503, in ms (0: do not retry). */
static long retry_hint(long status, const char *body)
{
	if (status != 503 || !body)
		return 0;
	json_t *j = json_loads(body, 0, NULL);
	json_int_t after = json_integer_value(json_object_get(j, "retry_after_ms"));
	json_decref(j);
	return after > 0 ? (long)after : 1000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- upload ---- */

static int cmd_upload(const char *base, const char *path, const char *name)
{
	bool in = !strcmp(path, "-");
	if (in && !name)
		return usage_error("uploading standard input needs --name NAME%s", "");
	if (!name) {
		const char *slash = strrchr(path, '/');
		name = slash ? slash + 1 : path;
		if (!*name)
			return usage_error("'%s' names no file: give --name", path);
	}
	FILE *f = in ? stdin : fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "ringnet: cannot read %s: %s\n", path, strerror(errno));
		return 2;
	}
	struct stat sb;
	curl_off_t size = -1;
	if (!in && fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode))
		size = (curl_off_t)sb.st_size;
	progress p = {isatty(2), now_s(), 0, "upload"};
	int exit_code = 3;
	for (int attempt = 0; attempt < 5; attempt++) {
		struct curl_slist *h = NULL;
		CURL *c = easy("", &p, &h);
		char *esc = c ? curl_easy_escape(c, name, 0) : NULL;
		char url[4096];
		snprintf(url, sizeof url, "%s/files/%s", base, esc ? esc : "");
		curl_free(esc);
		cli_buf b = {NULL, 0};
		long status = 0;
		if (!c) {
			fclose(f);
			return 3;
		}
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READDATA, f);
		if (size >= 0)
			curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, size);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, cli_collect);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
		int rc = perform(c, url, &status);
		curl_slist_free_all(h);
		curl_easy_cleanup(c);
		long after = rc == 0 ? retry_hint(status, b.data) : 0;
		if (after && !in && fseek(f, 0, SEEK_SET) == 0) { /* 503: the ring is settling */
			free(b.data);
			sleep_ms(after);
			continue;
		}
		if (rc == 0 && status == 200) {
			json_t *j = json_loads(b.data ? b.data : "", 0, NULL);
			bar(&p, (double)json_integer_value(json_object_get(j, "size")),
			    (double)json_integer_value(json_object_get(j, "size")), true);
			printf("uploaded %s: %lld bytes in %lld chunks, sha256 %s\n", name,
			       (long long)json_integer_value(json_object_get(j, "size")),
			       (long long)json_integer_value(json_object_get(j, "chunks")),
			       json_string_value(json_object_get(j, "sha256")));
			json_decref(j);
			exit_code = 0;
		} else if (rc == 0) {
			if (p.on)
				fputc('\n', stderr);
			cli_print_error(status, b.data);
			exit_code = exit_for(status);
		} else if (p.on) {
			fputc('\n', stderr);
		}
		free(b.data);
		break;
	}
	if (!in)
		fclose(f);
	return exit_code;
}

/* ---- download ---- */

typedef struct {
	FILE *out;
	EVP_MD_CTX *sha;
	curl_off_t got;
	long status;
	cli_buf err; /* the body of an answer that is not the file */
	CURL *c;
} sink;

static size_t to_file(char *p, size_t size, size_t n, void *ctx)
{
	sink *s = ctx;
	if (!s->status)
		curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &s->status);
	if (s->status != 200)
		return cli_collect(p, size, n, &s->err);
	if (fwrite(p, size, n, s->out) != n)
		return 0;
	EVP_DigestUpdate(s->sha, p, size * n);
	s->got += (curl_off_t)(size * n);
	return size * n;
}

static size_t header_etag(char *p, size_t size, size_t n, void *ctx)
{
	char *etag = ctx;
	size_t len = size * n;
	if (len > 6 && !strncasecmp(p, "ETag:", 5)) {
		const char *q = strchr(p, '"');
		if (q && strlen(q + 1) >= 64) {
			memcpy(etag, q + 1, 64);
			etag[64] = '\0';
		}
	}
	return len;
}

static int cmd_download(const char *base, const char *name, const char *out)
{
	bool to_stdout = out && !strcmp(out, "-");
	if (!out) {
		if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
			return usage_error("'%s' is not a file name here: give -o OUT", name);
		out = name;
	}
	char tmp[4096];
	progress p = {isatty(2), now_s(), 0, "download"};
	int exit_code = 3;
	for (int attempt = 0; attempt < 10; attempt++) {
		int fd = -1;
		FILE *f = stdout;
		if (!to_stdout) {
			snprintf(tmp, sizeof tmp, "%s.ringnet-XXXXXX", out);
			fd = mkstemp(tmp);
			if (fd < 0 || !(f = fdopen(fd, "wb"))) {
				fprintf(stderr, "ringnet: cannot write beside %s: %s\n", out,
				        strerror(errno));
				if (fd >= 0)
					close(fd);
				return 2;
			}
		}
		sink s = {f, EVP_MD_CTX_new(), 0, 0, {NULL, 0}, NULL};
		EVP_DigestInit_ex(s.sha, EVP_sha256(), NULL);
		struct curl_slist *h = NULL;
		CURL *c = easy("", &p, &h);
		char *esc = c ? curl_easy_escape(c, name, 0) : NULL;
		char url[4096], etag[65] = "";
		snprintf(url, sizeof url, "%s/download/%s", base, esc ? esc : "");
		curl_free(esc);
		s.c = c;
		long status = 0;
		int rc = -1;
		if (c) {
			curl_easy_setopt(c, CURLOPT_URL, url);
			curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_file);
			curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
			curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_etag);
			curl_easy_setopt(c, CURLOPT_HEADERDATA, etag);
			rc = perform(c, url, &status);
			curl_easy_cleanup(c);
		}
		curl_slist_free_all(h);
		uint8_t md[32];
		unsigned hl = 32;
		EVP_DigestFinal_ex(s.sha, md, &hl);
		EVP_MD_CTX_free(s.sha);
		char hex[65];
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		bool good = rc == 0 && status == 200 && !strcmp(hex, etag);
		if (!to_stdout) {
			good = good && fflush(f) == 0 && fsync(fileno(f)) == 0;
			good = fclose(f) == 0 && good;
			if (good && rename(tmp, out) < 0) {
				fprintf(stderr, "ringnet: cannot rename to %s: %s\n", out,
				        strerror(errno));
				good = false;
			}
			if (!good)
				unlink(tmp);
		}
		long after = rc == 0 ? retry_hint(status, s.err.data) : 0;
		if (after && !to_stdout) {
			free(s.err.data);
			sleep_ms(after);
			continue;
		}
		if (good) {
			bar(&p, (double)s.got, (double)s.got, true);
			if (!to_stdout)
				printf("downloaded %s to %s: %lld bytes, sha256 %s (verified)\n",
				       name, out, (long long)s.got, hex);
			exit_code = 0;
		} else if (rc == 0 && status == 200) {
			if (p.on)
				fputc('\n', stderr);
			fprintf(stderr,
			        "ringnet: the download of %s does not match its sha256 (got "
			        "%s, want %s): nothing written\n",
			        name, hex, etag[0] ? etag : "none announced");
		} else if (rc == 0) {
			cli_print_error(status, s.err.data);
			exit_code = exit_for(status);
		} else if (p.on) {
			fputc('\n', stderr);
		}
		free(s.err.data);
		break;
	}
	return exit_code;
}

/* ---- list, delete ---- */

static int simple(const char *method, const char *url, long *status, char **body)
{
	for (int waited = 0;;) {
		struct curl_slist *h = NULL;
		CURL *c = easy(url, NULL, &h);
		if (!c)
			return -1;
		cli_buf b = {NULL, 0};
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, cli_collect);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
		int rc = perform(c, url, status);
		curl_easy_cleanup(c);
		curl_slist_free_all(h);
		long after = rc == 0 ? retry_hint(*status, b.data) : 0;
		if (after && waited + after <= 10000) {
			free(b.data);
			waited += (int)after;
			sleep_ms(after);
			continue;
		}
		*body = b.data;
		return rc;
	}
}

static int cmd_list(const char *base)
{
	char url[1024];
	snprintf(url, sizeof url, "%s/files", base);
	long status = 0;
	char *body = NULL;
	if (simple("GET", url, &status, &body) < 0)
		return 3;
	if (status != 200) {
		cli_print_error(status, body);
		free(body);
		return exit_for(status);
	}
	json_t *j = json_loads(body ? body : "", 0, NULL);
	json_t *fl = json_object_get(j, "files");
	size_t i;
	json_t *e;
	json_array_foreach(fl, i, e)
	{
		char sz[32];
		human((double)json_integer_value(json_object_get(e, "size")), sz, sizeof sz);
		printf("%12lld  %10s  %s  %.12s  %s\n",
		       (long long)json_integer_value(json_object_get(e, "size")), sz,
		       json_string_value(json_object_get(e, "uploaded_at")),
		       json_string_value(json_object_get(e, "sha256")),
		       json_string_value(json_object_get(e, "name")));
	}
	if (!json_array_size(fl))
		fprintf(stderr, "no files\n");
	json_decref(j);
	free(body);
	return 0;
}

static int cmd_rm(const char *base, const char *name)
{
	CURL *c = curl_easy_init();
	char *esc = c ? curl_easy_escape(c, name, 0) : NULL;
	char url[4096];
	snprintf(url, sizeof url, "%s/files/%s", base, esc ? esc : "");
	curl_free(esc);
	curl_easy_cleanup(c);
	long status = 0;
	char *body = NULL;
	if (simple("DELETE", url, &status, &body) < 0)
		return 3;
	int rc = 0;
	if (status == 200)
		printf("deleted %s\n", name);
	else {
		cli_print_error(status, body);
		rc = exit_for(status);
	}
	free(body);
	return rc;
}

int cli_files(const char *cmd, int argc, char **argv)
{
	const char *node = getenv("RINGNET_NODE");
	if (!node || !*node)
		node = "http://127.0.0.1:5001";
	const char *pos = NULL, *name = NULL, *out = NULL;
	bool upload = !strcmp(cmd, "upload"), download = !strcmp(cmd, "download");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(files_usage, stdout);
			return 0;
		}
		bool takes = !strcmp(a, "--node") || (upload && !strcmp(a, "--name")) ||
		             (download && (!strcmp(a, "-o") || !strcmp(a, "--output")));
		if (takes) {
			if (i + 1 >= argc)
				return usage_error("%s needs a value", a);
			const char *v = argv[++i];
			if (!strcmp(a, "--node"))
				node = v;
			else if (!strcmp(a, "--name"))
				name = v;
			else
				out = v;
		} else if (a[0] == '-' && a[1]) {
			return usage_error("unknown option '%s'", a);
		} else if (!pos && strcmp(cmd, "files") != 0) {
			pos = a;
		} else {
			return usage_error("unexpected argument '%s'", a);
		}
	}
	if (strcmp(cmd, "files") != 0 && (!pos || !*pos))
		return usage_error(upload ? "upload needs a FILE%s" : "%s needs a file NAME",
		                   upload ? "" : cmd);
	char base[512];
	const char *b = cli_node_url(node, base, sizeof base);
	if (!b)
		return usage_error(
		    "--node wants a URL like http://127.0.0.1:5001 or HOST:PORT, not '%s'", node);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = upload               ? cmd_upload(b, pos, name)
	         : download           ? cmd_download(b, pos, out)
	         : !strcmp(cmd, "rm") ? cmd_rm(b, pos)
	                              : cmd_list(b);
	curl_global_cleanup();
	return rc;
}
