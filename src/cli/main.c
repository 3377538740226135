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
	    "  upload, download, files, rm\n"
	    "            files on the ring (ringnet upload --help)\n"
	    "  health    exit 0 when a node answers GET /health (a container's health check)\n"
	    "  cert      a cluster CA and node certificates for HTTPS (ringnet cert --help)\n"
	    "  sim       simulate a Chord ring of up to millions of nodes (ringnet sim --help)\n"
	    "  query, metrics, data, bench-query\n"
	    "            the partitioned query service: ringnet node --config "
	    "configs/one_host.json\n"
	    "            --id A runs a process of it (ringnet query --help)\n"
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
	if (!strcmp(cmd, "cert"))
		return cli_cert(argc - 1, argv + 1);
	if (!strcmp(cmd, "cluster"))
		return cli_cluster(argc - 1, argv + 1);
	if (!strcmp(cmd, "query"))
		return cli_query(argc - 1, argv + 1);
	if (!strcmp(cmd, "metrics"))
		return cli_query_metrics(argc - 1, argv + 1);
	if (!strcmp(cmd, "data"))
		return cli_data(argc - 1, argv + 1);
	if (!strcmp(cmd, "bench-query"))
		return cli_bench_query(argc - 1, argv + 1);
	static const char *const client[] = {"put", "get", "del", "peers", "ring", "health"};
	if (cli_one_of(cmd, client, CLI_NELEM(client)))
		return cli_client(cmd, argc - 1, argv + 1);
	static const char *const files[] = {"upload", "download", "files", "rm"};
	if (cli_one_of(cmd, files, CLI_NELEM(files)))
		return cli_files(cmd, argc - 1, argv + 1);
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
