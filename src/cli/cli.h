/* cli.h — one entry point per subcommand; each returns the process exit code
 * (0 ok, 1 not found / failed, 2 usage error, 3 unreachable). */
#ifndef RN_CLI_H
#define RN_CLI_H

#ifndef RINGNET_VERSION
#define RINGNET_VERSION "0.1.0"
#endif

int cli_sim(int argc, char **argv);
int cli_node(int argc, char **argv);
int cli_client(const char *cmd, int argc, char **argv);
int cli_cluster(int argc, char **argv);

#endif
