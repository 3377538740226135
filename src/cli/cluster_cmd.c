/* cluster_cmd.c — `ringnet cluster`: a local ring of N node processes on 127.0.0.1,
 * supervised: a node that dies is started again on its data directory, and Ctrl-C (or
 * SIGTERM) stops them all gracefully. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../net/auth.h"
#include "cli.h"

#define MAX_NODES 64

static const char *cluster_usage =
    "usage: ringnet cluster [--nodes N] [--base-http PORT] [--base-peer PORT] [--data DIR]\n"
    "                       [--log-level error|warn|info|debug] [--suspicion-ms MS]\n"
    "                       [--lifeguard MULT] [--confirm K] [--eager-gossip R]\n"
    "                       [--suspect-probes P] [--read-lease-ms MS]\n"
    "\n"
    "Starts N nodes (default 5) on 127.0.0.1: node-i serves HTTP on base-http + i - 1\n"
    "(default 5001..) and peers on base-peer + i - 1 (default 6001..), keeps its data in\n"
    "DIR/node-i (default ringnet-data), and joins through node-1. The nodes accept frames\n"
    "only from peers that know the cluster key in DIR/cluster.key, made on the first run.\n"
    "Restarts a node that dies, but not one that exits with status 2 (a usage error):\n"
    "then it stops them all and exits 2. Ctrl-C stops them all and exits 0.\n"
    "--suspicion-ms, --lifeguard, --confirm, --eager-gossip and --suspect-probes (the\n"
    "failure detector's settings) and --read-lease-ms are given to every node (see\n"
    "ringnet node --help).\n";

/* the failure detector's flags and the read leases', handed to every node as given (the
 * node checks them) */
static const char *const member_flags[] = {"--suspicion-ms", "--lifeguard",      "--confirm",
                                           "--eager-gossip", "--suspect-probes", "--read-lease-ms"};
static const char *member_args[2 * CLI_NELEM(member_flags)];
static int nmember_args;

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

typedef struct {
	pid_t pid;
	char name[32], http[32], peer[32], data[512];
	time_t started;
	int restarts, quick_fails; /* exits soon after a start, in a row */
} child;

#define GIVE_UP_AFTER 5 /* a node that fails this often in a row at start is not retried */

static pid_t spawn(const char *exe, child *c, const char *join, const char *level, const char *key)
{
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGINT, SIG_IGN); /* the terminal's Ctrl-C is for the supervisor to relay */
		char *args[20 + 2 * CLI_NELEM(member_flags)];
		int k = 0;
		args[k++] = (char *)exe;
		args[k++] = "node";
		args[k++] = "--id";
		args[k++] = c->name;
		args[k++] = "--listen";
		args[k++] = c->peer;
		args[k++] = "--http";
		args[k++] = c->http;
		args[k++] = "--data";
		args[k++] = c->data;
		args[k++] = "--log-level";
		args[k++] = (char *)level;
		args[k++] = "--key";
		args[k++] = (char *)key;
		if (join) {
			args[k++] = "--join";
			args[k++] = (char *)join;
		}
		for (int i = 0; i < nmember_args; i++)
			args[k++] = (char *)member_args[i];
		args[k] = NULL;
		execv(exe, args);
		fprintf(stderr, "ringnet cluster: cannot run %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	c->pid = pid;
	c->started = time(NULL);
	return pid;
}

/* Waits until something accepts connections on 127.0.0.1:port (at most ~5 s), or until
 * the node that should does exit (it is left for the main loop to reap). */
static int wait_port(int port, pid_t pid)
{
	for (int i = 0; i < 100 && !stop_requested; i++) {
		siginfo_t info = {0};
		if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    info.si_pid == pid)
			return -1;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
		close(fd);
		if (ok)
			return 0;
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* 0 when nothing listens on 127.0.0.1:port and we may bind it. */
static int port_free(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* as the node does */
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	close(fd);
	return rc;
}

/* A node exited with status 2, a usage error: the same arguments would fail the same way
 * again, so it is not restarted and the cluster stops with status 2. Reaps it. */
static void usage_exit(child *c, int *exit_code)
{
	if (c->pid)
		waitpid(c->pid, NULL, 0);
	c->pid = 0;
	fprintf(stderr,
	        "ringnet cluster: %s exited with status 2, a usage error (its message is "
	        "above); not starting it again, stopping\n",
	        c->name);
	stop_requested = 1;
	*exit_code = 2;
}

static int parse_port(const char *s, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < 1 || v > 65535)
		return -1;
	*out = (int)v;
	return 0;
}

int cli_cluster(int argc, char **argv)
{
	int n = 5, base_http = 5001, base_peer = 6001;
	const char *dir = "ringnet-data", *level = "info";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(cluster_usage, stdout);
			return 0;
		}
		static const char *const known[] = {"--nodes", "--base-http", "--base-peer",
		                                    "--data", "--log-level"};
		bool is_member = cli_one_of(a, member_flags, CLI_NELEM(member_flags));
		bool is_known = is_member || cli_one_of(a, known, CLI_NELEM(known));
		if (!is_known || !v) {
			fprintf(stderr,
			        is_known ? "ringnet cluster: %s needs a value\n%s"
			                 : "ringnet cluster: unknown option '%s'\n%s",
			        a, cluster_usage);
			return 2;
		}
		i++;
		int bad = 0;
		if (is_member) {
			int at = -1; /* given twice: the last one wins */
			for (int j = 0; j < nmember_args; j += 2)
				if (!strcmp(member_args[j], a))
					at = j;
			if (at < 0) {
				at = nmember_args;
				nmember_args += 2;
			}
			member_args[at] = a;
			member_args[at + 1] = v;
		} else if (!strcmp(a, "--nodes"))
			bad = parse_port(v, &n) < 0 || n > MAX_NODES;
		else if (!strcmp(a, "--base-http"))
			bad = parse_port(v, &base_http) < 0;
		else if (!strcmp(a, "--base-peer"))
			bad = parse_port(v, &base_peer) < 0;
		else if (!strcmp(a, "--data"))
			dir = v;
		else if (!strcmp(a, "--log-level")) {
			static const char *const levels[] = {"error", "warn", "info", "debug"};
			level = v;
			if (!cli_one_of(v, levels, CLI_NELEM(levels))) {
				fprintf(stderr,
				        "ringnet cluster: --log-level is error, warn, info or "
				        "debug, not "
				        "'%s'\n%s",
				        v, cluster_usage);
				return 2;
			}
		}
		if (bad) {
			fprintf(stderr,
			        "ringnet cluster: bad value '%s' for %s (nodes 1..%d, ports "
			        "1..65535)\n%s",
			        v, a, MAX_NODES, cluster_usage);
			return 2;
		}
	}
	if (base_http + n - 1 > 65535 || base_peer + n - 1 > 65535 ||
	    (base_peer < base_http + n && base_http < base_peer + n)) {
		fprintf(stderr,
		        "ringnet cluster: the HTTP and peer port ranges overlap or overflow\n");
		return 2;
	}
	for (int i = 0; i < 2 * n; i++) {
		int port = i < n ? base_http + i : base_peer + i - n;
		if (port_free(port) < 0) {
			fprintf(
			    stderr,
			    "ringnet cluster: port %d on 127.0.0.1 is in use (is another cluster "
			    "running? stop it, or choose --base-http and --base-peer)\n",
			    port);
			return 1;
		}
	}
	char exe[4096];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len <= 0) {
		fprintf(stderr, "ringnet cluster: cannot find my own executable\n");
		return 1;
	}
	exe[len] = '\0';
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "ringnet cluster: cannot create %s: %s\n", dir, strerror(errno));
		return 1;
	}
	/* the nodes talk only to peers that know this key; made once, kept with the data */
	char key[600];
	snprintf(key, sizeof key, "%s/cluster.key", dir);
	if (access(key, F_OK) != 0) {
		char err[700];
		if (auth_new_key_file(key, err, sizeof err) < 0) {
			fprintf(stderr, "ringnet cluster: %s\n", err);
			return 1;
		}
	}
	struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: waitpid wakes up */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	child kids[MAX_NODES];
	memset(kids, 0, sizeof kids);
	int exit_code = 0;
	for (int i = 0; i < n && !stop_requested; i++) {
		child *c = &kids[i];
		snprintf(c->name, sizeof c->name, "node-%d", i + 1);
		snprintf(c->http, sizeof c->http, "127.0.0.1:%d", base_http + i);
		snprintf(c->peer, sizeof c->peer, "127.0.0.1:%d", base_peer + i);
		snprintf(c->data, sizeof c->data, "%s/node-%d", dir, i + 1);
		spawn(exe, c, i ? kids[0].peer : NULL, level, key);
		/* node-1 must be up before the others join through it */
		if (wait_port(base_http + i, c->pid) < 0 && !stop_requested) {
			siginfo_t info = {0};
			if (waitid(P_PID, (id_t)c->pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 ||
			    info.si_pid != c->pid)
				fprintf(stderr,
				        "ringnet cluster: %s is slow to start; see its log lines\n",
				        c->name);
			else if (info.si_code == CLD_EXITED && info.si_status == 2)
				usage_exit(c, &exit_code);
			/* any other exit: the main loop starts it again */
		}
	}
	if (!stop_requested) {
		printf("ringnet cluster: %d nodes on 127.0.0.1, cluster key %s (Ctrl-C stops them "
		       "all)\n",
		       n, key);
		for (int i = 0; i < n; i++)
			printf("  %-8s http://%s  peer %s  data %s  pid %d\n", kids[i].name,
			       kids[i].http, kids[i].peer, kids[i].data, (int)kids[i].pid);
		printf("try: curl -X POST http://%s/kv -d '{\"key\": \"color\", \"value\": "
		       "\"blue\"}'\n",
		       kids[0].http);
		printf("dashboard: http://%s/ (any node serves one)\n", kids[0].http);
		fflush(stdout);
	}

	while (!stop_requested) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < n; i++) {
			child *c = &kids[i];
			if (c->pid != pid || stop_requested)
				continue;
			c->pid = 0;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
				usage_exit(c, &exit_code);
				break;
			}
			fprintf(stderr, "ringnet cluster: %s (pid %d) %s %d; starting it again\n",
			        c->name, (int)pid,
			        WIFSIGNALED(st) ? "was killed by signal" : "exited with",
			        WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			c->quick_fails = time(NULL) - c->started < 2 ? c->quick_fails + 1 : 0;
			if (c->quick_fails >= GIVE_UP_AFTER) {
				fprintf(
				    stderr,
				    "ringnet cluster: %s failed %d times in a row as it started; "
				    "giving up (its log lines above say why)\n",
				    c->name, GIVE_UP_AFTER);
				stop_requested = 1;
				exit_code = 1;
				break;
			}
			if (c->quick_fails) /* crashing at start: do not spin */
				sleep(1);
			const char *join = NULL;
			for (int k = 0; k < n && !join; k++)
				if (k != i && kids[k].pid)
					join = kids[k].peer;
			spawn(exe, c, join, level, key);
			c->restarts++;
		}
	}
	fprintf(stderr, "ringnet cluster: stopping %d nodes\n", n);
	for (int i = 0; i < n; i++)
		if (kids[i].pid)
			kill(kids[i].pid, SIGTERM);
	for (int i = 0; i < n; i++) {
		if (!kids[i].pid)
			continue;
		int st, waited = 0;
		while (waitpid(kids[i].pid, &st, WNOHANG) == 0 && waited < 100) {
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
			waited++;
		}
		if (waited >= 100) {
			kill(kids[i].pid, SIGKILL);
			waitpid(kids[i].pid, &st, 0);
		}
	}
	return exit_code;
}
