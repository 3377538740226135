/* linkemu.c — one emulated full-duplex link between two tap devices.
 *
 * usage: linkemu --a NETNS:IFNAME --b NETNS:IFNAME --rate MBITS --delay MS --queue PKTS
 *                --loss PCT [--seed N]
 *
 * It creates tap IFNAME inside network namespace NETNS (a name under /var/run/netns, or
 * "-" for the namespace it runs in) for each end, prints "ready" on stdout, and then
 * forwards every Ethernet frame read from one tap to the other, per direction:
 *   - a frame is lost with probability LOSS percent;
 *   - otherwise it joins a drop-tail queue of at most PKTS frames that drains at MBITS
 *     (serialisation: length * 8 / rate), and
 *   - it is written to the other tap DELAY ms after it left the queue, never before the
 *     frame ahead of it (frames keep their order).
 * Lines on stdin change the link at once (a trace): "bw=MBITS delay=MS loss=PCT
 * max_queue_size=PKTS" (any subset), "stats" prints a JSON line of counters, and EOF or
 * SIGTERM/SIGINT prints it and exits (the taps vanish with the process). The counters say
 * how late frames were written compared with their due time, so that a run on a busy
 * machine can be recognised. It asks for SCHED_FIFO priority and reports whether it got it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "lib/rng.h"

enum { FRAME_MAX = 65536, RING_CAP = 1 << 15, LATE_BUCKETS = 40 };

typedef struct frame {
	uint64_t depart_ns;  /* when its last bit leaves the queue */
	uint64_t deliver_ns; /* when it is written to the far tap */
	uint32_t len;
	unsigned char *data;
} frame;

typedef struct dir {
	int in, out; /* read from in, write to out */
	frame ring[RING_CAP];
	size_t head, tail, qhead; /* [head, tail) pending; [qhead, tail) still queued */
	uint64_t last_depart, last_deliver;
	uint64_t frames_in, frames_out, bytes_out, lost, qdrop, overflow, write_err;
} dir;

typedef struct link_params {
	double mbits, delay_ms, loss_pct;
	long queue;
} link_params;

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* lateness histogram: bucket i holds frames written [2^(i-1), 2^i) microseconds late */
static uint64_t late_hist[LATE_BUCKETS];
static uint64_t late_max_us, late_count;
static bool got_rt;

static void note_late(uint64_t late_ns)
{
	uint64_t us = late_ns / 1000;
	int b = 0;
	while (b < LATE_BUCKETS - 1 && (1ull << b) <= us)
		b++;
	late_hist[b]++;
	late_count++;
	if (us > late_max_us)
		late_max_us = us;
}

/* the upper edge, in microseconds, of the bucket holding quantile q */
static uint64_t late_quantile(double q)
{
	uint64_t want = (uint64_t)(q * (double)late_count), seen = 0;
	for (int b = 0; b < LATE_BUCKETS; b++) {
		seen += late_hist[b];
		if (seen > want)
			return b == 0 ? 0 : (1ull << b);
	}
	return late_max_us;
}

static void print_stats(const dir *ab, const dir *ba)
{
	const dir *d[2] = {ab, ba};
	printf("{\"rt\":%s,\"late_p50_us\":%llu,\"late_p99_us\":%llu,\"late_max_us\":%llu",
	       got_rt ? "true" : "false", (unsigned long long)late_quantile(0.5),
	       (unsigned long long)late_quantile(0.99), (unsigned long long)late_max_us);
	const char *names[2] = {"a2b", "b2a"};
	for (int i = 0; i < 2; i++)
		printf(",\"%s\":{\"frames_in\":%llu,\"frames_out\":%llu,\"bytes_out\":%llu,"
		       "\"lost\":%llu,\"queue_drop\":%llu,\"overflow\":%llu,\"write_err\":%llu}",
		       names[i], (unsigned long long)d[i]->frames_in,
		       (unsigned long long)d[i]->frames_out, (unsigned long long)d[i]->bytes_out,
		       (unsigned long long)d[i]->lost, (unsigned long long)d[i]->qdrop,
		       (unsigned long long)d[i]->overflow, (unsigned long long)d[i]->write_err);
	printf("}\n");
	fflush(stdout);
}

/* Opens tap `ifname` inside namespace `ns` ("-" = the current one), then returns to the
 * namespace it started in. */
static int open_tap(const char *ns, const char *ifname, int home)
{
	int nsfd = -1;
	if (strcmp(ns, "-")) {
		char path[300];
		snprintf(path, sizeof path, "/var/run/netns/%s", ns);
		nsfd = open(path, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
			fprintf(stderr, "linkemu: cannot enter netns %s: %s\n", ns,
			        strerror(errno));
			return -1;
		}
	}
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
		fprintf(stderr, "linkemu: cannot create tap %s in %s: %s\n", ifname, ns,
		        strerror(errno));
		return -1;
	}
	if (nsfd >= 0) {
		close(nsfd);
		if (setns(home, CLONE_NEWNET) < 0) {
			fprintf(stderr, "linkemu: cannot return to its netns: %s\n",
			        strerror(errno));
			return -1;
		}
	}
	return fd;
}

/* A frame arrives at time t: lose it, drop it at a full queue, or schedule it. */
static void admit(dir *d, const link_params *p, rn_rng *rng, const unsigned char *buf, size_t len,
                  uint64_t t)
{
	d->frames_in++;
	if (p->loss_pct > 0 && rn_rng_unit(rng) * 100.0 < p->loss_pct) {
		d->lost++;
		return;
	}
	while (d->qhead != d->tail && d->ring[d->qhead % RING_CAP].depart_ns <= t)
		d->qhead++;
	if ((long)(d->tail - d->qhead) >= p->queue) {
		d->qdrop++;
		return;
	}
	if (d->tail - d->head >= RING_CAP) {
		d->overflow++;
		return;
	}
	frame *f = &d->ring[d->tail % RING_CAP];
	f->data = malloc(len);
	if (!f->data) {
		d->overflow++;
		return;
	}
	memcpy(f->data, buf, len);
	f->len = (uint32_t)len;
	uint64_t start = d->last_depart > t ? d->last_depart : t;
	f->depart_ns = start + (uint64_t)((double)len * 8.0 * 1000.0 / p->mbits);
	uint64_t due = f->depart_ns + (uint64_t)(p->delay_ms * 1e6);
	f->deliver_ns = due > d->last_deliver ? due : d->last_deliver;
	d->last_depart = f->depart_ns;
	d->last_deliver = f->deliver_ns;
	d->tail++;
}

/* Writes every frame due by now; returns the time the next one is due (0: none). */
static uint64_t deliver(dir *d)
{
	while (d->head != d->tail) {
		frame *f = &d->ring[d->head % RING_CAP];
		uint64_t t = now_ns();
		if (f->deliver_ns > t)
			return f->deliver_ns;
		if (write(d->out, f->data, f->len) == (ssize_t)f->len) {
			d->frames_out++;
			d->bytes_out += f->len;
		} else {
			d->write_err++;
		}
		note_late(t - f->deliver_ns);
		free(f->data);
		d->head++;
		if (d->qhead < d->head)
			d->qhead = d->head;
	}
	return 0;
}

static void drain_input(dir *d, const link_params *p, rn_rng *rng, unsigned char *buf)
{
	for (int i = 0; i < 256; i++) {
		ssize_t n = read(d->in, buf, FRAME_MAX);
		if (n <= 0)
			return;
		admit(d, p, rng, buf, (size_t)n, now_ns());
	}
}

static int set_param(link_params *p, const char *key, const char *val)
{
	char *end;
	double v = strtod(val, &end);
	if (end == val || v < 0)
		return -1;
	if (!strcmp(key, "bw") || !strcmp(key, "rate")) {
		if (v <= 0)
			return -1;
		p->mbits = v;
	} else if (!strcmp(key, "delay")) {
		p->delay_ms = v; /* "10ms" and "10" alike: strtod stops at the unit */
	} else if (!strcmp(key, "loss")) {
		if (v > 100)
			return -1;
		p->loss_pct = v;
	} else if (!strcmp(key, "max_queue_size") || !strcmp(key, "queue")) {
		if (v < 1)
			return -1;
		p->queue = (long)v;
	} else {
		return -1;
	}
	return 0;
}

/* One control line: KEY=VALUE words, or "stats". */
static void control(char *line, link_params *p, const dir *ab, const dir *ba)
{
	line[strcspn(line, "\r\n")] = 0;
	if (!strcmp(line, "stats")) {
		print_stats(ab, ba);
		return;
	}
	link_params next = *p;
	for (char *save = NULL, *w = strtok_r(line, " \t", &save); w;
	     w = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(w, '=');
		if (!eq) {
			fprintf(stderr, "linkemu: ignored control word '%s' (want KEY=VALUE)\n", w);
			return;
		}
		*eq = 0;
		if (set_param(&next, w, eq + 1) < 0) {
			fprintf(stderr, "linkemu: ignored bad setting %s=%s\n", w, eq + 1);
			return;
		}
	}
	*p = next;
}

static const char *usage =
    "usage: linkemu --a NETNS:IFNAME --b NETNS:IFNAME --rate MBITS --delay MS --queue PKTS\n"
    "               --loss PCT [--seed N]\n";

static int split_end(const char *arg, char *ns, size_t nslen, char *ifn)
{
	const char *colon = strrchr(arg, ':');
	if (!colon || (size_t)(colon - arg) >= nslen || strlen(colon + 1) >= IFNAMSIZ || !colon[1])
		return -1;
	memcpy(ns, arg, (size_t)(colon - arg));
	ns[colon - arg] = 0;
	strcpy(ifn, colon + 1);
	return 0;
}

static dir ab, ba; /* large rings: static, not on the stack */

int main(int argc, char **argv)
{
	link_params p = {.mbits = 0, .delay_ms = 0, .loss_pct = 0, .queue = 100};
	char ns_a[256] = "", ns_b[256] = "", if_a[IFNAMSIZ] = "", if_b[IFNAMSIZ] = "";
	uint64_t seed = 1;
	bool have_rate = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "linkemu: %s wants a value\n%s", a, usage);
			return 2;
		}
		int bad = 0;
		if (!strcmp(a, "--a"))
			bad = split_end(v, ns_a, sizeof ns_a, if_a);
		else if (!strcmp(a, "--b"))
			bad = split_end(v, ns_b, sizeof ns_b, if_b);
		else if (!strcmp(a, "--rate") && (have_rate = true))
			bad = set_param(&p, "bw", v);
		else if (!strcmp(a, "--delay"))
			bad = set_param(&p, "delay", v);
		else if (!strcmp(a, "--queue"))
			bad = set_param(&p, "queue", v);
		else if (!strcmp(a, "--loss"))
			bad = set_param(&p, "loss", v);
		else if (!strcmp(a, "--seed"))
			seed = strtoull(v, NULL, 10);
		else
			bad = -1;
		if (bad) {
			fprintf(stderr, "linkemu: bad argument %s %s\n%s", a, v, usage);
			return 2;
		}
		i++;
	}
	if (!if_a[0] || !if_b[0] || !have_rate) {
		fprintf(stderr, "linkemu: --a, --b and --rate are required\n%s", usage);
		return 2;
	}
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home < 0) {
		fprintf(stderr, "linkemu: cannot open its netns: %s\n", strerror(errno));
		return 1;
	}
	int ta = open_tap(ns_a, if_a, home), tb = ta < 0 ? -1 : open_tap(ns_b, if_b, home);
	if (ta < 0 || tb < 0)
		return 1;
	struct sched_param sp = {.sched_priority = 50};
	got_rt = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rn_rng rng;
	rn_rng_seed(&rng, seed);
	ab.in = ta, ab.out = tb, ba.in = tb, ba.out = ta;
	static unsigned char buf[FRAME_MAX];
	static char line[1024];
	size_t line_len = 0;
	bool stdin_open = true;
	printf("ready\n");
	fflush(stdout);

	while (!stop && stdin_open) {
		uint64_t n1 = deliver(&ab), n2 = deliver(&ba);
		uint64_t next = n1 && n2 ? (n1 < n2 ? n1 : n2) : (n1 ? n1 : n2);
		struct pollfd pf[3] = {{.fd = ta, .events = POLLIN},
		                       {.fd = tb, .events = POLLIN},
		                       {.fd = 0, .events = POLLIN}};
		struct timespec ts, *tp = NULL;
		if (next) {
			uint64_t t = now_ns(), wait = next > t ? next - t : 0;
			ts.tv_sec = (time_t)(wait / 1000000000u);
			ts.tv_nsec = (long)(wait % 1000000000u);
			tp = &ts;
		}
		if (ppoll(pf, 3, tp, NULL) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "linkemu: poll: %s\n", strerror(errno));
			break;
		}
		if (pf[0].revents & POLLIN)
			drain_input(&ab, &p, &rng, buf);
		if (pf[1].revents & POLLIN)
			drain_input(&ba, &p, &rng, buf);
		if (pf[2].revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
			if (n <= 0) {
				stdin_open = false;
			} else {
				line_len += (size_t)n;
				line[line_len] = 0;
				char *nl;
				while ((nl = strchr(line, '\n'))) {
					*nl = 0;
					control(line, &p, &ab, &ba);
					size_t used = (size_t)(nl + 1 - line);
					memmove(line, nl + 1, line_len - used + 1);
					line_len -= used;
				}
				if (line_len >= sizeof line - 1) /* an overlong line: drop it */
					line_len = 0;
			}
		}
	}
	print_stats(&ab, &ba);
	for (; ab.head != ab.tail; ab.head++)
		free(ab.ring[ab.head % RING_CAP].data);
	for (; ba.head != ba.tail; ba.head++)
		free(ba.ring[ba.head % RING_CAP].data);
	return 0;
}
