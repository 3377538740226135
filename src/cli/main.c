/* main.c — the ringnet command: one binary, one subcommand per file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: ringnet <command> [options]\n"
	    "\n"
	    "commands:\n"
	    "  cluster   run a local ring of N nodes, Ctrl-C stops them (ringnet cluster --help)\n"
	    "  node      run one node of a ring (ringnet node --help)\n"
	    "  cast      send a file to every node, relayed through the swarm (ringnet cast "
	    "--help)\n"
	    "  put, get, del, peers, ring\n"
	    "            talk to a running node over HTTP (ringnet get --help)\n"
	    "  sim       simulate a Chord ring of up to millions of nodes (ringnet sim --help)\n"
	    "  version   print the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "sim"))
		return cli_sim(argc - 1, argv + 1);
	if (!strcmp(cmd, "node"))
		return cli_node(argc - 1, argv + 1);
	if (!strcmp(cmd, "cast"))
		return cli_cast(argc - 1, argv + 1);
	if (!strcmp(cmd, "cluster"))
		return cli_cluster(argc - 1, argv + 1);
	static const char *const client[] = {"put", "get", "del", "peers", "ring"};
	if (cli_one_of(cmd, client, CLI_NELEM(client)))
		return cli_client(cmd, argc - 1, argv + 1);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("ringnet %s\n", RINGNET_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "ringnet: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
