/* fuzz_http.c — libFuzzer target for the HTTP request path: a whole node (node_run, in a
 * thread of the fuzzer's process, on loopback ports of its own, a ring of one) gets each
 * input as the bytes of one HTTP connection, which is then closed for writing and read to
 * its end. libmicrohttpd parses; ringnet's routes, body handling, JSON and key checks, the
 * kv core and the store do the rest, with ASan and UBSan watching. A node that stops
 * answering fails the run (the input is then a crash file). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "net/node.h"

static node_opts opts; /* the node's settings; read by its thread for its whole life */
static int http_port;

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &len) < 0)
		abort();
	close(s);
	return ntohs(a.sin_port);
}

static int connect_http(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)http_port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0)
		return s;
	if (s >= 0)
		close(s);
	return -1;
}

static void *run_node(void *arg)
{
	node_run(arg);
	return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	static char dir[] = "/tmp/ringnet-fuzz-http-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	http_port = free_port();
	snprintf(opts.name, sizeof opts.name, "fuzz");
	snprintf(opts.listen, sizeof opts.listen, "127.0.0.1:%d", free_port());
	snprintf(opts.http, sizeof opts.http, "127.0.0.1:%d", http_port);
	snprintf(opts.data, sizeof opts.data, "%s", dir);
	opts.log_level = 0;
	pthread_t t;
	if (pthread_create(&t, NULL, run_node, &opts) != 0)
		abort();
	for (int i = 0; i < 500; i++) {
		int s = connect_http();
		if (s >= 0) {
			close(s);
			return 0;
		}
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	}
	fprintf(stderr, "fuzz_http: the node never served HTTP\n");
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int s = -1;
	for (int i = 0; i < 200 && s < 0; i++) { /* a connection slot frees up soon */
		s = connect_http();
		if (s < 0)
			nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
	if (s < 0) {
		fprintf(stderr, "fuzz_http: the node stopped accepting connections\n");
		abort();
	}
	struct timeval tv = {0, 300000}; /* an answer begins within this, or never */
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	size_t off = 0;
	while (off < size) {
		ssize_t n = send(s, data + off, size - off, MSG_NOSIGNAL);
		if (n <= 0)
			break; /* the node may close early on garbage: that is an answer */
		off += (size_t)n;
	}
	shutdown(s, SHUT_WR);
	/* read to the end; once an answer has begun, a pause of 20 ms ends it (a connection
	 * the node keeps alive after answering would otherwise hold us to its timeout) */
	char buf[4096];
	while (recv(s, buf, sizeof buf, 0) > 0) {
		struct timeval pause = {0, 20000};
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &pause, sizeof pause);
	}
	close(s);
	return 0;
}
