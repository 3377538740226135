/* linkemu.c — emulated full-duplex links between pairs of tap devices.
 *
 * usage: linkemu [--seed N] LINK [LINK...]
 *   LINK: --a NETNS:IFNAME --b NETNS:IFNAME --rate MBITS [--delay MS] [--queue PKTS]
 *         [--loss PCT] [--gso]        (each --a starts the next link)
 *
 * One process emulates every link it is given, in one epoll loop: on a busy machine one
 * process that handles whatever frames are ready at each wake-up costs far less than one
 * process per link woken once per frame (star20's 20 links: see docs/benchmarks.md).
 *
 * It creates tap IFNAME inside network namespace NETNS (a name under /var/run/netns, or
 * "-" for the namespace it runs in) for each end, prints "ready" on stdout, and then
 * forwards every Ethernet frame read from one tap to the other, per direction:
 *   - a frame is lost with probability LOSS percent;
 *   - otherwise it joins a drop-tail queue of at most PKTS frames that drains at MBITS
 *     (serialisation: length * 8 / rate), and
 *   - it is written to the other tap DELAY ms after it left the queue, never before the
 *     frame ahead of it (frames keep their order).
 * Lines on stdin change a link at once (a trace): "[@LINK] bw=MBITS delay=MS loss=PCT
 * max_queue_size=PKTS" (any subset; LINK is its index in the order given, 0 when left out),
 * "stats" prints a JSON line of counters (link 0's at the top level, every link's in
 * "links"), and EOF or SIGTERM/SIGINT prints it and exits (the taps vanish with the process). The
 * counters say how late frames were written compared with their due time, so that a run on a busy
 * machine can be recognised. It asks for SCHED_FIFO priority and reports whether it got it.
 *
 * --gso opens the taps with a virtio-net header and TCP segmentation offload, so that the
 * kernel hands over a TCP burst of several segments (as TSO sizes it, about a millisecond
 * of the sender's pacing rate) as one frame and takes it back as one: the emulator then
 * costs a read and a write per burst, not per packet. The link still counts packets: a
 * burst of n segments takes n slots of the queue (it is dropped whole when they do not
 * fit, unless the queue is empty) and its serialisation time is that of its n packets,
 * headers included. Loss would hit a whole burst, so a lossy link is run without --gso.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "lib/rng.h"

enum { FRAME_MAX = 65536 + 256, RING_CAP = 1 << 15, LATE_BUCKETS = 40 };

typedef struct frame {
	uint64_t depart_ns;  /* when its last bit leaves the queue */
	uint64_t deliver_ns; /* when it is written to the far tap */
	uint32_t len;
	uint32_t segs; /* packets on the wire: 1, or a --gso burst's segments */
	uint32_t wire; /* their bytes */
	unsigned char *data;
} frame;

typedef struct dir {
	int in, out; /* read from in, write to out */
	frame ring[RING_CAP];
	size_t head, tail, qhead; /* [head, tail) pending; [qhead, tail) still queued */
	uint64_t last_depart, last_deliver;
	long qsegs; /* packets in [qhead, tail) */
	uint64_t frames_in, segs_out, frames_out, bytes_out, lost, qdrop, overflow, write_err;
} dir;

typedef struct link_params {
	double mbits, delay_ms, loss_pct;
	long queue;
} link_params;

typedef struct emu_link {
	char ns_a[256], ns_b[256], if_a[IFNAMSIZ], if_b[IFNAMSIZ];
	bool gso; /* --gso: its taps carry virtio-net headers and TSO bursts */
	bool have_rate;
	link_params p;
	rn_rng rng;
	dir ab, ba;
} emu_link;

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

static void print_dirs(const dir *ab, const dir *ba)
{
	const dir *d[2] = {ab, ba};
	const char *names[2] = {"a2b", "b2a"};
	for (int i = 0; i < 2; i++)
		printf(",\"%s\":{\"frames_in\":%llu,\"frames_out\":%llu,\"packets_out\":%llu,"
		       "\"bytes_out\":%llu,"
		       "\"lost\":%llu,\"queue_drop\":%llu,\"overflow\":%llu,\"write_err\":%llu}",
		       names[i], (unsigned long long)d[i]->frames_in,
		       (unsigned long long)d[i]->frames_out, (unsigned long long)d[i]->segs_out,
		       (unsigned long long)d[i]->bytes_out, (unsigned long long)d[i]->lost,
		       (unsigned long long)d[i]->qdrop, (unsigned long long)d[i]->overflow,
		       (unsigned long long)d[i]->write_err);
}

static void print_stats(const emu_link *links, int n)
{
	printf("{\"rt\":%s,\"late_p50_us\":%llu,\"late_p99_us\":%llu,\"late_max_us\":%llu",
	       got_rt ? "true" : "false", (unsigned long long)late_quantile(0.5),
	       (unsigned long long)late_quantile(0.99), (unsigned long long)late_max_us);
	print_dirs(&links[0].ab, &links[0].ba);
	printf(",\"links\":[");
	for (int i = 0; i < n; i++) {
		printf("%s{\"_\":0", i ? "," : "");
		print_dirs(&links[i].ab, &links[i].ba);
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
}

/* Opens tap `ifname` inside namespace `ns` ("-" = the current one), then returns to the
 * namespace it started in. */
static int open_tap(const char *ns, const char *ifname, int home, bool gso)
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
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (gso ? IFF_VNET_HDR : 0);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
		fprintf(stderr, "linkemu: cannot create tap %s in %s: %s\n", ifname, ns,
		        strerror(errno));
		return -1;
	}
	if (gso && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
		fprintf(stderr, "linkemu: cannot turn on offloads of tap %s: %s\n", ifname,
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

/* With --gso: the packets a frame stands for and the bytes they take on the wire (each
 * segment carries the Ethernet, IP and TCP headers again). buf starts with the virtio-net
 * header. */
static uint32_t wire_size(const unsigned char *buf, size_t len, uint64_t *wire)
{
	const struct virtio_net_hdr *h = (const void *)buf;
	size_t hl = sizeof *h, flen = len - hl;
	const unsigned char *f = buf + hl;
	*wire = flen;
	if (h->gso_type == VIRTIO_NET_HDR_GSO_NONE || !h->gso_size || flen < 14 + 20)
		return 1;
	size_t l3 = 14, hdr;
	if ((f[12] << 8 | f[13]) == 0x0800)
		hdr = l3 + (size_t)(f[l3] & 15) * 4;
	else if ((f[12] << 8 | f[13]) == 0x86dd)
		hdr = l3 + 40;
	else
		return 1;
	if (hdr + 20 > flen)
		return 1;
	hdr += (size_t)(f[hdr + 12] >> 4) * 4;
	if (hdr >= flen)
		return 1;
	uint32_t segs = (uint32_t)((flen - hdr + h->gso_size - 1) / h->gso_size);
	*wire = flen + (uint64_t)(segs - 1) * hdr;
	return segs ? segs : 1;
}

/* Frames whose last bit left the queue by t leave the queue's count. */
static void depart_until(dir *d, uint64_t t)
{
	while (d->qhead != d->tail && d->ring[d->qhead % RING_CAP].depart_ns <= t) {
		d->qsegs -= d->ring[d->qhead % RING_CAP].segs;
		d->qhead++;
	}
}

/* A frame arrives at time t: lose it, drop it at a full queue, or schedule it. */
static void admit(dir *d, const link_params *p, rn_rng *rng, bool gso, const unsigned char *buf,
                  size_t len, uint64_t t)
{
	d->frames_in++;
	if (p->loss_pct > 0 && rn_rng_unit(rng) * 100.0 < p->loss_pct) {
		d->lost++;
		return;
	}
	if (gso && len < sizeof(struct virtio_net_hdr))
		return;
	uint64_t wire = len;
	uint32_t segs = gso ? wire_size(buf, len, &wire) : 1;
	depart_until(d, t);
	if (d->qsegs > 0 && d->qsegs + (long)segs > p->queue) {
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
	f->segs = segs;
	f->wire = (uint32_t)wire;
	uint64_t start = d->last_depart > t ? d->last_depart : t;
	f->depart_ns = start + (uint64_t)((double)wire * 8.0 * 1000.0 / p->mbits);
	uint64_t due = f->depart_ns + (uint64_t)(p->delay_ms * 1e6);
	f->deliver_ns = due > d->last_deliver ? due : d->last_deliver;
	d->last_depart = f->depart_ns;
	d->last_deliver = f->deliver_ns;
	d->qsegs += segs;
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
			d->segs_out += f->segs;
			d->bytes_out += f->wire;
		} else {
			d->write_err++;
		}
		note_late(t - f->deliver_ns);
		free(f->data);
		if (d->qhead == d->head) { /* it was still counted as queued */
			d->qsegs -= f->segs;
			d->qhead++;
		}
		d->head++;
	}
	return 0;
}

static void drain_input(emu_link *l, dir *d, unsigned char *buf)
{
	for (int i = 0; i < 256; i++) {
		ssize_t n = read(d->in, buf, FRAME_MAX);
		if (n <= 0)
			return;
		admit(d, &l->p, &l->rng, l->gso, buf, (size_t)n, now_ns());
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

/* One control line: [@LINK] KEY=VALUE words, or "stats". */
static void control(char *line, emu_link *links, int n)
{
	line[strcspn(line, "\r\n")] = 0;
	if (!strcmp(line, "stats")) {
		print_stats(links, n);
		return;
	}
	int which = 0;
	char *save = NULL, *w = strtok_r(line, " \t", &save);
	if (w && w[0] == '@') {
		char *end;
		long i = strtol(w + 1, &end, 10);
		if (end == w + 1 || *end || i < 0 || i >= n) {
			fprintf(stderr, "linkemu: ignored control line for link '%s' (0..%d)\n",
			        w + 1, n - 1);
			return;
		}
		which = (int)i;
		w = strtok_r(NULL, " \t", &save);
	}
	link_params *p = &links[which].p;
	link_params next = *p;
	for (; w; w = strtok_r(NULL, " \t", &save)) {
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
    "usage: linkemu [--seed N] LINK [LINK...]\n"
    "  LINK: --a NETNS:IFNAME --b NETNS:IFNAME --rate MBITS [--delay MS] [--queue PKTS]\n"
    "        [--loss PCT] [--gso]   (each --a starts the next link)\n";

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

enum { LINKS_MAX = 128 };

static void free_ring(dir *d)
{
	for (; d->head != d->tail; d->head++)
		free(d->ring[d->head % RING_CAP].data);
}

static int run(int argc, char **argv, emu_link *links)
{
	int n = 0;
	uint64_t seed = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		emu_link *l = n ? &links[n - 1] : NULL;
		if (!strcmp(a, "--gso") && l) {
			l->gso = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "linkemu: %s wants a value\n%s", a, usage);
			return 2;
		}
		int bad = 0;
		if (!strcmp(a, "--a")) {
			if (n == LINKS_MAX) {
				fprintf(stderr, "linkemu: at most %d links\n", LINKS_MAX);
				return 2;
			}
			l = &links[n++];
			l->p =
			    (link_params){.mbits = 0, .delay_ms = 0, .loss_pct = 0, .queue = 100};
			bad = split_end(v, l->ns_a, sizeof l->ns_a, l->if_a);
		} else if (!strcmp(a, "--seed")) {
			seed = strtoull(v, NULL, 10);
		} else if (!l) {
			bad = -1; /* a link's setting before its --a */
		} else if (!strcmp(a, "--b")) {
			bad = split_end(v, l->ns_b, sizeof l->ns_b, l->if_b);
		} else if (!strcmp(a, "--rate") && (l->have_rate = true)) {
			bad = set_param(&l->p, "bw", v);
		} else if (!strcmp(a, "--delay")) {
			bad = set_param(&l->p, "delay", v);
		} else if (!strcmp(a, "--queue")) {
			bad = set_param(&l->p, "queue", v);
		} else if (!strcmp(a, "--loss")) {
			bad = set_param(&l->p, "loss", v);
		} else {
			bad = -1;
		}
		if (bad) {
			fprintf(stderr, "linkemu: bad argument %s %s\n%s", a, v, usage);
			return 2;
		}
		i++;
	}
	if (!n) {
		fprintf(stderr, "linkemu: no link given\n%s", usage);
		return 2;
	}
	for (int i = 0; i < n; i++)
		if (!links[i].if_a[0] || !links[i].if_b[0] || !links[i].have_rate) {
			fprintf(stderr, "linkemu: link %d: --a, --b and --rate are required\n%s", i,
			        usage);
			return 2;
		}
	int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home < 0) {
		fprintf(stderr, "linkemu: cannot open its netns: %s\n", strerror(errno));
		return 1;
	}
	/* epoll: a wake-up costs the taps that are ready, not all of them (poll's cost) */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(2 * n)};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) {
		fprintf(stderr, "linkemu: epoll: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		emu_link *l = &links[i];
		int ta = open_tap(l->ns_a, l->if_a, home, l->gso);
		int tb = ta < 0 ? -1 : open_tap(l->ns_b, l->if_b, home, l->gso);
		if (ta < 0 || tb < 0)
			return 1;
		l->ab.in = ta, l->ab.out = tb, l->ba.in = tb, l->ba.out = ta;
		rn_rng_seed(&l->rng, seed + (uint64_t)i);
		for (int e = 0; e < 2; e++) {
			ev = (struct epoll_event){.events = EPOLLIN,
			                          .data.u32 = (uint32_t)(2 * i + e)};
			if (epoll_ctl(ep, EPOLL_CTL_ADD, e ? tb : ta, &ev) < 0) {
				fprintf(stderr, "linkemu: epoll: %s\n", strerror(errno));
				return 1;
			}
		}
	}
	struct sched_param sp = {.sched_priority = 50};
	got_rt = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	static unsigned char buf[FRAME_MAX];
	static char line[1024];
	size_t line_len = 0;
	bool stdin_open = true;
	printf("ready\n");
	fflush(stdout);

	while (!stop && stdin_open) {
		uint64_t next = 0;
		for (int i = 0; i < n; i++) {
			uint64_t t1 = deliver(&links[i].ab), t2 = deliver(&links[i].ba);
			if (t1 && (!next || t1 < next))
				next = t1;
			if (t2 && (!next || t2 < next))
				next = t2;
		}
		struct timespec ts, *tp = NULL;
		if (next) {
			uint64_t t = now_ns(), wait = next > t ? next - t : 0;
			ts.tv_sec = (time_t)(wait / 1000000000u);
			ts.tv_nsec = (long)(wait % 1000000000u);
			tp = &ts;
		}
		struct epoll_event evs[64];
		int nev = epoll_pwait2(ep, evs, 64, tp, NULL);
		if (nev < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "linkemu: epoll_wait: %s\n", strerror(errno));
			break;
		}
		bool ctl = false;
		for (int e = 0; e < nev; e++) {
			uint32_t k = evs[e].data.u32;
			if (k == (uint32_t)(2 * n))
				ctl = true;
			else
				drain_input(&links[k / 2],
				            k % 2 ? &links[k / 2].ba : &links[k / 2].ab, buf);
		}
		if (ctl) {
			ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
			if (r <= 0) {
				stdin_open = false;
			} else {
				line_len += (size_t)r;
				line[line_len] = 0;
				char *nl;
				while ((nl = strchr(line, '\n'))) {
					*nl = 0;
					control(line, links, n);
					size_t used = (size_t)(nl + 1 - line);
					memmove(line, nl + 1, line_len - used + 1);
					line_len -= used;
				}
				if (line_len >= sizeof line - 1) /* an overlong line: drop it */
					line_len = 0;
			}
		}
	}
	print_stats(links, n);
	for (int i = 0; i < n; i++) {
		free_ring(&links[i].ab);
		free_ring(&links[i].ba);
	}
	close(ep);
	return 0;
}

int main(int argc, char **argv)
{
	emu_link *links = calloc(LINKS_MAX, sizeof *links); /* large rings: on the heap */
	if (!links) {
		fprintf(stderr, "linkemu: out of memory\n");
		return 1;
	}
	int rc = run(argc, argv, links);
	free(links);
	return rc;
}
