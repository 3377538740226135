/* cli.h — one entry point per subcommand; each returns the process exit code
 * (0 ok, 1 not found / failed, 2 usage error, 3 unreachable). */
#ifndef RN_CLI_H
#define RN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef RINGNET_VERSION
#define RINGNET_VERSION "0.1.0"
#endif

int cli_sim(int argc, char **argv);
/* `ringnet sim --replicas ...`: the key-value core under churn. */
int cli_kvsim(int argc, char **argv);
/* `ringnet sim --member ...`: the membership core with loss and crashes. */
int cli_membersim(int argc, char **argv);
int cli_node(int argc, char **argv);
int cli_client(const char *cmd, int argc, char **argv);
int cli_cluster(int argc, char **argv);
/* `ringnet cert init|issue`: a cluster CA and node certificates (cert_cmd.c). */
int cli_cert(int argc, char **argv);
/* `ringnet upload|download|files|rm`: files on the ring. */
int cli_files(const char *cmd, int argc, char **argv);

/* Shared by the HTTP clients (client_cmd.c): a node given as HOST:PORT or http://HOST:PORT
 * as a base URL (in out, or node itself), NULL when it is neither; the node's error
 * message on stderr; a value argument "-" (stdin) or "@FILE" read whole. */
const char *cli_node_url(const char *node, char *out, size_t len);
void cli_print_error(long status, const char *body);
char *cli_read_value(const char *arg, size_t *len);
/* A libcurl write callback that collects an answer's body in a cli_buf (NUL-terminated). */
typedef struct {
	char *data;
	size_t len;
} cli_buf;
size_t cli_collect(char *p, size_t size, size_t n, void *ctx);
/* $RINGNET_API_TOKEN as a bearer header added to h (returned), $RINGNET_CACERT as the CA
 * file c trusts (a CURL * and a struct curl_slist *; cli.h does not include libcurl). */
struct curl_slist;
struct curl_slist *cli_auth(void *c, struct curl_slist *h);
/* Says on stderr why a request to url on curl handle c failed with libcurl code rc, in
 * words a user can act on for TLS trouble (a certificate $RINGNET_CACERT does not vouch
 * for, one that names another host, HTTP spoken to an HTTPS node or the other way). */
void cli_curl_failed(void *c, const char *url, int rc);
/* Points c's error buffer at the one cli_curl_failed reads (cli_auth does it too). */
void cli_tls_errors(void *c);
/* `ringnet cast FILE`: swarm broadcast from a node (cast_cmd.c). */
int cli_cast(int argc, char **argv);
/* `ringnet sim --cast TOPOLOGY`: the cast core on a simulated network (castsim_cmd.c). */
int cli_castsim(int argc, char **argv);

/* One HTTP request (client_cmd.c): the status in *status, the body in *out (the caller
 * frees it). rid: an Idempotency-Key, or NULL. 0, or -1 when the node cannot be reached. */
int cli_http(const char *method, const char *url, const char *body, const char *rid, long *status,
             char **out);
/* the query service (query_cmd.c, bench_query_cmd.c) */
bool cli_query_is_cluster(int argc, char **argv);
int cli_query_node(int argc, char **argv);
int cli_query(int argc, char **argv);
int cli_query_metrics(int argc, char **argv);
int cli_data(int argc, char **argv);
int cli_bench_query(int argc, char **argv);

/* "MIN-MAX" with MIN <= MAX, whole numbers (kvsim_cmd.c): 0, or -1 for anything else. */
int cli_range(const char *s, uint32_t *lo, uint32_t *hi);

/* Whether s is one of the n strings in list (an option or command name). */
static inline bool cli_one_of(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(s, list[i]))
			return true;
	return false;
}
#define CLI_NELEM(a) (sizeof(a) / sizeof((a)[0]))

#endif
