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
