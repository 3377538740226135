/* fsync_gate.c — an LD_PRELOAD shim for test_kv_durable.py: fdatasync on any thread but
 * the process's first (the node's loop runs there; libuv's thread pool does not) waits
 * while the file named by RN_FSYNC_GATE exists. So a test can hold back the syncs the
 * node runs off its loop and see what it answers meanwhile. Test-only: not in ringnet. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	const char *gate = getenv("RN_FSYNC_GATE");
	if (gate && syscall(SYS_gettid) != getpid()) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		while (access(gate, F_OK) == 0)
			nanosleep(&ts, NULL);
	}
	return real(fd);
}
