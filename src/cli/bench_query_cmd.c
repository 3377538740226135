/* bench_query_cmd.c — `ringnet bench-query` (to come). */
#include <stdio.h>

#include "cli.h"

int cli_bench_query(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "ringnet bench-query: not built yet\n");
	return 2;
}
