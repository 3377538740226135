/* cli.h — one entry point per subcommand; each returns the process exit code
 * (0 ok, 1 not found / failed, 2 usage error, 3 unreachable). */
#ifndef RN_CLI_H
#define RN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#ifndef RINGNET_VERSION
#define RINGNET_VERSION "0.1.0"
#endif

int cli_sim(int argc, char **argv);
/* `ringnet sim --replicas ...`: the key-value core under churn. */
int cli_kvsim(int argc, char **argv);
int cli_node(int argc, char **argv);
int cli_client(const char *cmd, int argc, char **argv);
int cli_cluster(int argc, char **argv);
/* `ringnet cast FILE`: swarm broadcast from a node (cast_cmd.c). */
int cli_cast(int argc, char **argv);
/* `ringnet sim --cast TOPOLOGY`: the cast core on a simulated network (castsim_cmd.c). */
int cli_castsim(int argc, char **argv);

/* One HTTP request (client_cmd.c): the status in *status, the body in *out (the caller
 * frees it). rid: an Idempotency-Key, or NULL. 0, or -1 when the node cannot be reached. */
int cli_http(const char *method, const char *url, const char *body, const char *rid, long *status,
             char **out);
/* Prints a node's {"error": ...} answer, or the raw body, on stderr. */
void cli_print_error(long status, const char *body);

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
