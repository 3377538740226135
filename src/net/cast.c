/* cast.c — the cast core's driver in the node (loop thread, except where said).
 *
 * Links. Bulk data does not share the ring's connections (a 1 MiB piece queued there
 * would hold up ring and kv frames): every cast link is a TCP connection of its own,
 * used in both directions. A node dials the addresses it was given with --join; the
 * dialled node's peer port sees a WIRE_CAST hello as the connection's first frame and
 * hands the socket over to this file (nd_cast_accept), which answers with its own hello.
 * Frames on a link are the peer protocol's (u32 length | u8 WIRE_CAST | body), bodies as
 * src/cast/codec.c writes them. When two nodes dial each other, both keep the connection
 * the smaller name opened. A link that sends nothing for link_idle_ms is closed (the core
 * pings every second); at most CAST_MAX_LINKS links, and one frame buffer each.
 *
 * Storage. DATA/cast/.<name>.part holds the pieces of a transfer this node receives, at
 * their offsets; each piece is checked against its SHA-256 when it comes and when it is
 * read to be sent. When every piece is held, a destination renames it to DATA/cast/<name>:
 * the file appears there only whole and verified. A restart hashes the part file (or the
 * finished file) and resumes from the pieces that match. The source reads the file where
 * it is.
 *
 * HTTP. POST /cast (body: {"path": FILE on this node's filesystem, "to": "all" or [ids],
 * "piece_size": N, "rate": bytes/s}) starts a transfer with this node as source; GET
 * /cast/status is a snapshot made on the loop every 100 ms. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../cast/cast.h"
#include "../lib/err.h"
#include "cast_tcp.h"
#include "node_internal.h"

#define CL_BUF        (WIRE_HEADER + WIRE_MAX_FRAME + AUTH_SEAL)
#define TIMER_MS      10
#define INFO_MS       500
#define SNAP_MS       100
#define HELLO_WAIT_MS 3000
#define DIAL_MIN_MS   250
#define DIAL_MAX_MS   2000
#define CAST_LOWAT    131072 /* TCP_NOTSENT_LOWAT of a link (below) */
#define HELLO_TYPE    0      /* a body whose first byte is 0 is the driver's hello, not a msg */

typedef struct clink {
	struct nd_cast *c;
	uv_tcp_t *tcp;
	uint32_t id;
	int dial; /* the --join address it dialled, or -1: accepted */
	bool up, dead, connecting, told;
	bool gone; /* out of the table, closing: freed by the handle's close callback, which
	            * libuv calls after every write and connect callback of the handle */
	char peer[CAST_NAME_MAX];
	uint8_t *rx;
	size_t rxlen;
	uint64_t rx_at, opened_at;
	uv_connect_t conn;
	/* with a cluster key (auth.h): the dialler reads the acceptor's nonce first, and then
	 * every frame either way is sealed, each direction with its own key and sequence */
	bool sealed;
	unsigned nna; /* dialler: nonce bytes in so far (AUTH_NONCE: the hello went out) */
	uint8_t na[AUTH_NONCE];
	auth_session tx, rx_s;
	uint64_t seq_tx, seq_rx;
} clink;

typedef struct {
	char addr[WIRE_ADDR_MAX];
	struct sockaddr_in sa;
	clink *link;
	uint64_t next_try;
	uint32_t backoff;
	bool self;                /* it was this node */
	char peer[CAST_NAME_MAX]; /* the name behind it, once a hello said */
} dial_t;

typedef struct {
	uv_write_t req;
	clink *l;
	uint8_t *buf;
	bool piece;
} cwreq;

typedef struct post_job {
	cast_info info;
	uint8_t *hashes;
	char (*dests)[CAST_NAME_MAX];
	int fd;
	int rc;
} post_job;

typedef struct nd_cast {
	node *n;
	cast_node *core;
	cast_config cfg;
	uv_timer_t timer;
	clink *links[CAST_MAX_LINKS];
	uint32_t next_id;
	dial_t dials[NODE_MAX_JOIN];
	int ndial;
	char dir[300];
	/* storage of the current transfer */
	uint64_t xfer;
	int fd;
	bool src;
	char part[400], final[400];
	uint64_t info_at, snap_at;
	bool busy; /* inside the core */
	char cc[16];
	unsigned lowat; /* TCP_NOTSENT_LOWAT of every link (0: the kernel's default) */
	char *snap;     /* GET /cast/status */
	uint64_t bytes_sent_piece, links_total;
} nd_cast;

static void close_link(clink *l);

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static clink *link_by_id(nd_cast *c, uint32_t id)
{
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (c->links[i] && c->links[i]->id == id)
			return c->links[i];
	return NULL;
}

static void on_link_closed(uv_handle_t *h)
{
	clink *l = h->data;
	auth_session_clear(&l->tx);
	auth_session_clear(&l->rx_s);
	free(l->rx);
	free(l);
	free(h);
}

/* After every core call: the links the core's sends found broken go down now. */
static void reap(nd_cast *c)
{
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		clink *l = c->links[i];
		if (!l || !l->dead)
			continue;
		c->links[i] = NULL;
		if (l->dial >= 0 && c->dials[l->dial].link == l)
			c->dials[l->dial].link = NULL;
		if (l->told) {
			c->busy = true;
			cast_link_down(c->core, uv_now(&c->n->loop), l->id);
			c->busy = false;
		}
		l->gone = true;
		uv_close((uv_handle_t *)l->tcp, on_link_closed);
		i = -1; /* telling the core may have broken more links: scan again */
	}
}

static void close_link(clink *l)
{
	l->dead = true;
	if (!l->c->busy)
		reap(l->c);
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
	cwreq *w = (cwreq *)req;
	clink *l = w->l;
	free(w->buf);
	bool piece = w->piece;
	free(w);
	if (l->gone) /* its link went while the write was out */
		return;
	nd_cast *c = l->c;
	if (status < 0) {
		close_link(l);
		return;
	}
	if (piece && l->told) {
		c->busy = true;
		cast_on_sent(c->core, uv_now(&c->n->loop), l->id);
		c->busy = false;
		reap(c);
	}
}

/* Writes a frame (buf: WIRE_HEADER free bytes, then the body of blen, then AUTH_SEAL bytes
 * of room for the tag on a sealed link); takes buf. */
static void write_frame(clink *l, uint8_t *buf, size_t blen, bool piece)
{
	if (l->dead) {
		free(buf);
		return;
	}
	uint32_t len = (uint32_t)blen + 1;
	buf[0] = (uint8_t)(len >> 24);
	buf[1] = (uint8_t)(len >> 16);
	buf[2] = (uint8_t)(len >> 8);
	buf[3] = (uint8_t)len;
	buf[4] = WIRE_CAST;
	size_t flen = WIRE_HEADER + blen;
	if (l->sealed) { /* in place: every frame buffer has room for the tag */
		if (auth_seal(&l->tx, l->seq_tx++, buf, flen, WIRE_HEADER, buf + flen) < 0) {
			free(buf);
			close_link(l);
			return;
		}
		flen += AUTH_SEAL;
	}
	cwreq *w = malloc(sizeof *w);
	if (!w) {
		free(buf);
		close_link(l);
		return;
	}
	w->l = l;
	w->buf = buf;
	w->piece = piece;
	uv_buf_t b = uv_buf_init((char *)buf, (unsigned)flen);
	if (uv_write(&w->req, (uv_stream_t *)l->tcp, &b, 1, on_written) < 0) {
		free(buf);
		free(w);
		close_link(l);
	}
}

static void drv_send(void *ctx, uint32_t id, const cast_msg *m)
{
	nd_cast *c = ctx;
	clink *l = link_by_id(c, id);
	if (!l || l->dead)
		return;
	size_t blen = cast_encoded_size(m);
	uint8_t *buf = malloc(WIRE_HEADER + blen + AUTH_SEAL);
	if (!buf) {
		close_link(l);
		return;
	}
	cast_encode(m, buf + WIRE_HEADER);
	write_frame(l, buf, blen, false);
}

static bool hash_ok(const cast_info *x, uint32_t p, const uint8_t *data, size_t len)
{
	uint8_t h[32];
	SHA256(data, len, h);
	return !memcmp(h, x->hashes + 32 * (size_t)p, 32);
}

static uint32_t piece_len(const cast_info *x, uint32_t p)
{
	return p + 1 == x->npieces ? (uint32_t)(x->size - (uint64_t)p * x->piece_size)
	                           : x->piece_size;
}

/* Reads (or writes) all len bytes at off; false on an error or a short file. */
static bool io_all(int fd, uint8_t *buf, size_t len, uint64_t off, bool write)
{
	while (len) {
		ssize_t r =
		    write ? pwrite(fd, buf, len, (off_t)off) : pread(fd, buf, len, (off_t)off);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return false;
		}
		buf += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return true;
}

static bool read_all(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	return io_all(fd, buf, len, off, false);
}

static int drv_send_piece(void *ctx, uint32_t id, const cast_info *x, uint32_t p)
{
	nd_cast *c = ctx;
	clink *l = link_by_id(c, id);
	if (!l || l->dead || c->fd < 0 || x->xfer != c->xfer)
		return RN_EIO;
	uint32_t len = piece_len(x, p);
	size_t blen = CAST_PIECE_HEAD + (size_t)len;
	uint8_t *buf = malloc(WIRE_HEADER + blen + AUTH_SEAL);
	if (!buf)
		return RN_ENOMEM;
	uint8_t *data = buf + WIRE_HEADER + CAST_PIECE_HEAD;
	if (!read_all(c->fd, data, len, (uint64_t)p * x->piece_size) || !hash_ok(x, p, data, len)) {
		LOG_W(c->n,
		      "cast: piece %u of %s on disk does not match its hash: fetching it again", p,
		      x->name);
		free(buf);
		return RN_EPROTO;
	}
	cast_piece_head(x->xfer, p, len, buf + WIRE_HEADER);
	c->bytes_sent_piece += len;
	write_frame(l, buf, blen, true);
	return 0;
}

/* A name a file may have in DATA/cast: no path, no leading dot. */
static bool name_ok(const char *s)
{
	return s[0] && s[0] != '.' && !strchr(s, '/') && strlen(s) < CAST_NAME_MAX;
}

static void close_storage(nd_cast *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->xfer = 0;
	c->src = false;
}

static int drv_open(void *ctx, const cast_info *x, uint8_t *held)
{
	nd_cast *c = ctx;
	close_storage(c);
	if (!name_ok(x->name)) {
		LOG_W(c->n, "cast: refusing a transfer named '%s' (not a plain file name)",
		      x->name);
		return RN_EINVAL;
	}
	mkdir(c->dir, 0755);
	snprintf(c->part, sizeof c->part, "%s/.%s.part", c->dir, x->name);
	snprintf(c->final, sizeof c->final, "%s/%s", c->dir, x->name);
	struct stat st;
	if (stat(c->part, &st) < 0 && stat(c->final, &st) == 0)
		rename(c->final, c->part); /* resume from a finished copy: it may be this file */
	int fd = open(c->part, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || fstat(fd, &st) < 0) {
		LOG_E(c->n, "cast: cannot open %s: %s", c->part, strerror(errno));
		if (fd >= 0)
			close(fd);
		return RN_EIO;
	}
	uint64_t old = (uint64_t)st.st_size;
	if (old != x->size && ftruncate(fd, (off_t)x->size) < 0) {
		close(fd);
		return RN_EIO;
	}
	uint8_t *buf = malloc(x->piece_size);
	uint32_t resumed = 0;
	for (uint32_t p = 0; buf && p < x->npieces; p++) {
		uint32_t len = piece_len(x, p);
		uint64_t off = (uint64_t)p * x->piece_size;
		if (off + len > old)
			break;
		if (read_all(fd, buf, len, off) && hash_ok(x, p, buf, len)) {
			held[p] = 1;
			resumed++;
		}
	}
	free(buf);
	if (resumed)
		LOG_I(c->n, "cast: %s: resuming from %u of %u pieces already held", x->name,
		      resumed, x->npieces);
	c->fd = fd;
	c->xfer = x->xfer;
	return 0;
}

static int drv_store(void *ctx, const cast_info *x, uint32_t p, const uint8_t *data, uint32_t len)
{
	nd_cast *c = ctx;
	if (x->xfer != c->xfer || c->fd < 0)
		return RN_EIO;
	if (!hash_ok(x, p, data, len)) {
		LOG_W(c->n, "cast: piece %u of %s came corrupt: asking again", p, x->name);
		return RN_EPROTO;
	}
	if (!io_all(c->fd, (uint8_t *)(uintptr_t)data, len, (uint64_t)p * x->piece_size, true)) {
		LOG_E(c->n, "cast: cannot write %s: %s", c->part, strerror(errno));
		return RN_EIO;
	}
	return 0;
}

static int drv_complete(void *ctx, const cast_info *x, bool publish, uint8_t *bad)
{
	nd_cast *c = ctx;
	(void)bad;
	if (x->xfer != c->xfer)
		return RN_EIO;
	if (publish && rename(c->part, c->final) < 0) {
		LOG_E(c->n, "cast: cannot rename %s: %s", c->part, strerror(errno));
		return RN_EIO;
	}
	LOG_I(c->n, "cast: %s complete (%llu bytes)%s", x->name, (unsigned long long)x->size,
	      publish ? "" : ", kept as a relay's part file");
	return 0;
}

/* ---- links ---- */

static clink *link_new(nd_cast *c, int dial)
{
	int slot = -1;
	for (int i = 0; i < CAST_MAX_LINKS && slot < 0; i++)
		if (!c->links[i])
			slot = i;
	if (slot < 0)
		return NULL;
	clink *l = calloc(1, sizeof *l);
	uv_tcp_t *t = malloc(sizeof *t);
	uint8_t *rx = malloc(CL_BUF);
	if (!l || !t || !rx) {
		free(l);
		free(t);
		free(rx);
		return NULL;
	}
	uv_tcp_init(&c->n->loop, t);
	t->data = l;
	l->c = c;
	l->tcp = t;
	l->rx = rx;
	l->id = ++c->next_id;
	l->dial = dial;
	l->opened_at = l->rx_at = uv_now(&c->n->loop);
	c->links[slot] = l;
	c->links_total++;
	return l;
}

static void send_hello(clink *l)
{
	nd_cast *c = l->c;
	size_t nl = strlen(c->cfg.self);
	uint8_t *buf = malloc(WIRE_HEADER + 2 + nl + AUTH_SEAL);
	if (!buf) {
		close_link(l);
		return;
	}
	buf[WIRE_HEADER] = HELLO_TYPE;
	buf[WIRE_HEADER + 1] = (uint8_t)nl;
	memcpy(buf + WIRE_HEADER + 2, c->cfg.self, nl);
	write_frame(l, buf, 2 + nl, false);
}

/* Dialler, with a cluster key: the acceptor's nonce is in; answer as a peer connection
 * does (auth.h), then the cast hello, sealed. The acceptor's address in the session is
 * the dialled one as the address book writes it, which is how the acceptor names itself. */
static void send_auth_hello(clink *l)
{
	node *n = l->c->n;
	ring_addr a = nd_book_intern(n, l->c->dials[l->dial].addr);
	if (a == RING_ADDR_NONE || a >= n->npeers ||
	    nd_write_auth_hello(n, (uv_stream_t *)l->tcp, l->na, n->peers[a].addr, &l->tx) < 0) {
		close_link(l);
		return;
	}
	auth_session_back(&l->tx, &l->rx_s);
	l->seq_tx = l->seq_rx = 0;
	send_hello(l);
}

/* Parses a hello body into name; false when it is not one. */
static bool parse_hello(const uint8_t *b, size_t len, char *name)
{
	if (len < 2 || b[0] != HELLO_TYPE || b[1] == 0 || b[1] >= CAST_NAME_MAX ||
	    len != 2 + (size_t)b[1] || memchr(b + 2, 0, b[1]))
		return false;
	memcpy(name, b + 2, b[1]);
	name[b[1]] = 0;
	return true;
}

/* Whether a link opened by `opener` to/from `peer` is the one both sides keep. */
static bool keeper(const nd_cast *c, const clink *l)
{
	const char *opener = l->dial >= 0 ? c->cfg.self : l->peer;
	const char *min = strcmp(c->cfg.self, l->peer) < 0 ? c->cfg.self : l->peer;
	return !strcmp(opener, min);
}

static void link_up(clink *l)
{
	nd_cast *c = l->c;
	if (!strcmp(l->peer, c->cfg.self)) { /* we dialled ourselves */
		if (l->dial >= 0)
			c->dials[l->dial].self = true;
		close_link(l);
		return;
	}
	if (l->dial >= 0) /* who is behind that address: a link to it, either way, will do */
		snprintf(c->dials[l->dial].peer, CAST_NAME_MAX, "%s", l->peer);
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		clink *o = c->links[i];
		if (!o || o == l || !o->up || o->dead || strcmp(o->peer, l->peer))
			continue;
		/* two links to one node: keep the one the smaller name opened (a reconnect by
		 * the same side replaces the old one) */
		bool same_opener = (o->dial >= 0) == (l->dial >= 0);
		if (!same_opener && keeper(c, o)) {
			close_link(l);
			return;
		}
		close_link(o);
	}
	l->up = true;
	l->told = true;
	int fd;
	if (uv_fileno((uv_handle_t *)l->tcp, &fd) == 0) {
		if (c->cc[0])
			cast_tcp_congestion(fd, c->cc);
		if (c->lowat)
			cast_tcp_notsent_lowat(fd, c->lowat);
	}
	LOG_D(c->n, "cast: link to %s up", l->peer);
	c->busy = true;
	cast_link_up(c->core, uv_now(&c->n->loop), l->id, l->peer);
	c->busy = false;
	reap(c);
}

static void on_frame(clink *l, const uint8_t *body, size_t blen)
{
	nd_cast *c = l->c;
	if (!l->up) {
		if (l->dial < 0 || !parse_hello(body, blen, l->peer)) {
			close_link(l);
			return;
		}
		link_up(l);
		return;
	}
	cast_msg m;
	cast_info info;
	void *scratch = NULL;
	if (cast_decode(body, blen, &m, &info, &scratch) < 0) {
		free(scratch);
		nd_log_rl(c->n, LOG_BAD_FRAME, 1, "cast: malformed frame from %s: closing the link",
		          l->peer);
		close_link(l);
		return;
	}
	c->busy = true;
	cast_on_msg(c->core, uv_now(&c->n->loop), l->id, &m);
	c->busy = false;
	free(scratch);
	reap(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	clink *l = h->data;
	*b = uv_buf_init((char *)l->rx + l->rxlen, (unsigned)(CL_BUF - l->rxlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	(void)b;
	clink *l = s->data;
	if (l->dead || l->gone)
		return;
	if (nread < 0) {
		LOG_D(l->c->n, "cast: link to %s closed: %s", l->peer[0] ? l->peer : "?",
		      uv_strerror((int)nread));
		close_link(l);
		return;
	}
	l->rxlen += (size_t)nread;
	l->rx_at = uv_now(&l->c->n->loop);
	size_t off = 0;
	if (l->sealed && l->dial >= 0 && l->nna < AUTH_NONCE) {
		size_t k = AUTH_NONCE - l->nna < l->rxlen ? AUTH_NONCE - l->nna : l->rxlen;
		memcpy(l->na + l->nna, l->rx, k);
		l->nna += (unsigned)k;
		off = k;
		if (l->nna == AUTH_NONCE)
			send_auth_hello(l);
	}
	size_t tag = l->sealed ? AUTH_SEAL : 0;
	while (!l->dead && (!l->sealed || l->dial < 0 || l->nna == AUTH_NONCE) &&
	       l->rxlen - off >= WIRE_HEADER) {
		uint32_t blen;
		uint8_t type;
		if (wire_header(l->rx + off, &blen, &type) < 0 || type != WIRE_CAST) {
			close_link(l);
			return;
		}
		size_t flen = WIRE_HEADER + (size_t)blen;
		if (l->rxlen - off < flen + tag)
			break;
		if (l->sealed && !auth_open(&l->rx_s, l->seq_rx++, l->rx + off, flen, WIRE_HEADER,
		                            l->rx + off + flen)) {
			nd_log_rl(
			    l->c->n, LOG_AUTH, 1,
			    "cast: a link's frame does not open with the cluster key: closing it");
			close_link(l);
			return;
		}
		on_frame(l, l->rx + off + WIRE_HEADER, blen);
		off += flen + tag;
	}
	if (l->dead)
		return;
	memmove(l->rx, l->rx + off, l->rxlen - off);
	l->rxlen -= off;
}

static void on_connect(uv_connect_t *req, int status)
{
	clink *l = req->data;
	if (l->gone || l->dead)
		return;
	nd_cast *c = l->c;
	l->connecting = false;
	if (status < 0) {
		LOG_D(c->n, "cast: cannot connect to %s: %s", c->dials[l->dial].addr,
		      uv_strerror(status));
		close_link(l);
		return;
	}
	c->dials[l->dial].backoff = 0;
	uv_tcp_nodelay(l->tcp, 1);
	uv_read_start((uv_stream_t *)l->tcp, on_alloc, on_read);
	l->sealed = c->n->keyed; /* then the hello waits for the acceptor's nonce */
	if (!l->sealed)
		send_hello(l);
}

static void dial(nd_cast *c, int i, uint64_t now)
{
	dial_t *d = &c->dials[i];
	if (d->self || d->link || now < d->next_try)
		return;
	for (int j = 0; j < CAST_MAX_LINKS; j++) /* linked already, by its own dial to us */
		if (d->peer[0] && c->links[j] && c->links[j]->up &&
		    !strcmp(c->links[j]->peer, d->peer))
			return;
	d->backoff = !d->backoff                    ? DIAL_MIN_MS
	             : d->backoff * 2 > DIAL_MAX_MS ? DIAL_MAX_MS
	                                            : d->backoff * 2;
	d->next_try = now + d->backoff;
	clink *l = link_new(c, i);
	if (!l)
		return;
	d->link = l;
	l->connecting = true;
	l->conn.data = l;
	if (uv_tcp_connect(&l->conn, l->tcp, (const struct sockaddr *)&d->sa, on_connect) < 0)
		close_link(l);
}

bool nd_cast_accept(node *n, uv_tcp_t *from, const uint8_t *body, size_t len,
                    const auth_session *sess, uint64_t seq_in)
{
	nd_cast *c = n->cast;
	char name[CAST_NAME_MAX];
	int fd, nfd;
	if (!c || (n->keyed && !sess) || !parse_hello(body, len, name) ||
	    uv_fileno((uv_handle_t *)from, &fd) < 0)
		return false;
	uv_read_stop((uv_stream_t *)from);
	nfd = dup(fd);
	if (nfd < 0)
		return false;
	clink *l = link_new(c, -1);
	if (!l) {
		close(nfd);
		nd_limit(n, LIM_IN_FULL, "cast: %d links already: refusing another",
		         CAST_MAX_LINKS);
		return true;
	}
	if (uv_tcp_open(l->tcp, nfd) < 0) {
		close(nfd);
		close_link(l);
		return true;
	}
	snprintf(l->peer, sizeof l->peer, "%s", name);
	if (n->keyed) { /* the dialler's frames go on in its session; ours the other way */
		l->sealed = true;
		l->rx_s = *sess;
		l->rx_s.cx = NULL; /* the connection's cipher context goes with it; ours is new */
		l->seq_rx = seq_in;
		auth_session_back(sess, &l->tx);
		l->seq_tx = 0;
	}
	uv_tcp_nodelay(l->tcp, 1);
	uv_read_start((uv_stream_t *)l->tcp, on_alloc, on_read);
	send_hello(l);
	if (!l->dead)
		link_up(l);
	return true;
}

/* ---- the status snapshot ---- */

typedef struct {
	json_t *dests;
	const cast_info *x;
	uint64_t held_self;
} status_ctx;

static void status_one(void *arg, const cast_prog *p, bool dest, bool self)
{
	status_ctx *s = arg;
	if (!dest && !self)
		return;
	json_t *d =
	    json_pack("{s:s, s:I, s:I, s:b, s:b}", "id", p->name, "held", (json_int_t)p->held,
	              "total", (json_int_t)s->x->npieces, "dest", dest, "self", self);
	uint64_t bytes =
	    p->held >= s->x->npieces ? s->x->size : (uint64_t)p->held * s->x->piece_size;
	json_object_set_new(d, "bytes", json_integer((json_int_t)bytes));
	if (p->done_ms && p->held >= s->x->npieces)
		json_object_set_new(
		    d, "done_s",
		    json_real(p->done_ms >= s->x->start_wall_ms
		                  ? (double)(p->done_ms - s->x->start_wall_ms) / 1000.0
		                  : 0.0));
	else
		json_object_set_new(d, "done_s", json_null());
	json_array_append_new(s->dests, d);
}

/* The current transfer (pieces held, per destination and by this node), or JSON null. */
static json_t *transfer_json(nd_cast *c)
{
	const cast_info *x = cast_current(c->core);
	if (!x)
		return json_null();
	char id[17];
	snprintf(id, sizeof id, "%016llx", (unsigned long long)x->xfer);
	json_t *t = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "xfer", id, "file",
	                      x->name, "source", x->source, "size", (json_int_t)x->size,
	                      "piece_size", (json_int_t)x->piece_size, "pieces",
	                      (json_int_t)x->npieces, "start_wall_ms", (json_int_t)x->start_wall_ms,
	                      "held", (json_int_t)cast_held(c->core), "all", x->ndests == 0);
	status_ctx s = {json_array(), x, 0};
	cast_status(c->core, status_one, &s);
	json_object_set_new(t, "destinations", s.dests);
	return t;
}

json_t *nd_cast_transfer(node *n)
{
	return n->cast && n->cast->core ? transfer_json(n->cast) : json_null();
}

static void make_snapshot(nd_cast *c)
{
	json_t *j = json_object();
	json_object_set_new(j, "node", json_string(c->cfg.self));
	json_t *links = json_array();
	char names[CAST_MAX_LINKS][CAST_NAME_MAX];
	double rate[CAST_MAX_LINKS];
	uint32_t rtt[CAST_MAX_LINKS];
	size_t nl = cast_links(c->core, names, rate, rtt, CAST_MAX_LINKS);
	for (size_t i = 0; i < nl; i++)
		json_array_append_new(links, json_pack("{s:s, s:f, s:f}", "id", names[i], "rx_bps",
		                                       rate[i], "rtt_ms", rtt[i] / 1000.0));
	json_object_set_new(j, "links", links);
	cast_known *known = malloc(CAST_MAX_NODES * sizeof *known);
	json_t *kn = json_array();
	size_t nk = known ? cast_known_nodes(c->core, known, CAST_MAX_NODES) : 0;
	for (size_t i = 0; i < nk; i++)
		json_array_append_new(
		    kn, json_pack("{s:s, s:i}", "id", known[i].name, "hops", known[i].hops));
	free(known);
	json_object_set_new(j, "known", kn);
	json_object_set_new(j, "transfer", transfer_json(c));
	const cast_stats *st = cast_get_stats(c->core);
	json_object_set_new(
	    j, "stats",
	    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "pieces_in",
	              (json_int_t)st->pieces_in, "pieces_out", (json_int_t)st->pieces_out, "dup_in",
	              (json_int_t)st->dup_in, "endgame_requests", (json_int_t)st->endgame_req,
	              "corrupt", (json_int_t)st->corrupt, "resumed", (json_int_t)st->resumed,
	              "stalls", (json_int_t)st->stalls, "cancels", (json_int_t)st->cancels,
	              "capped", (json_int_t)st->capped, "links_opened", (json_int_t)c->links_total,
	              "congestion", c->cc[0] ? c->cc : "default"));
	free(c->snap);
	c->snap = nd_json_text(j);
}

/* ---- POST /cast starts a transfer (from its HTTP handler, on the loop) ---- */

static void start_post(nd_cast *c, post_job *j)
{
	close_storage(c);
	c->busy = true;
	int rc = cast_start(c->core, uv_now(&c->n->loop), &j->info);
	c->busy = false;
	if (rc == 0) {
		const cast_info *x = cast_current(c->core);
		c->fd = j->fd;
		c->xfer = x->xfer;
		c->src = true;
		j->info.xfer = x->xfer;
		j->fd = -1;
		LOG_I(c->n, "cast: sending %s (%llu bytes, %u pieces of %u)", x->name,
		      (unsigned long long)x->size, x->npieces, x->piece_size);
	}
	reap(c);
	make_snapshot(c);
	j->rc = rc;
}

static void on_timer(uv_timer_t *t)
{
	nd_cast *c = t->data;
	uint64_t now = uv_now(&c->n->loop);
	for (int i = 0; i < c->ndial; i++)
		dial(c, i, now);
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		clink *l = c->links[i];
		if (!l || l->dead)
			continue;
		if ((!l->up && now - l->opened_at > HELLO_WAIT_MS && !l->connecting) ||
		    (l->up && now - l->rx_at > c->cfg.link_idle_ms) ||
		    (l->connecting && now - l->opened_at > HELLO_WAIT_MS * 2)) {
			LOG_D(c->n, "cast: link to %s silent: closing it", l->peer);
			close_link(l);
		}
	}
	bool info = now - c->info_at >= INFO_MS;
	c->busy = true;
	if (info) {
		c->info_at = now;
		for (int i = 0; i < CAST_MAX_LINKS; i++) {
			clink *l = c->links[i];
			int fd;
			cast_tcp_sample s;
			if (l && l->up && !l->dead && uv_fileno((uv_handle_t *)l->tcp, &fd) == 0 &&
			    cast_tcp_info(fd, &s) == 0)
				cast_on_link_info(c->core, now, l->id, s.delivery_rate, s.rtt_us,
				                  s.min_rtt_us, s.bytes_acked);
		}
	}
	if (now >= cast_wake_at(c->core))
		cast_tick(c->core, now);
	c->busy = false;
	reap(c);
	if (now - c->snap_at >= SNAP_MS) {
		c->snap_at = now;
		make_snapshot(c);
	}
}

int nd_cast_start(node *n)
{
	nd_cast *c = calloc(1, sizeof *c);
	if (!c)
		return RN_ENOMEM;
	c->n = n;
	c->fd = -1;
	cast_config_default(&c->cfg);
	snprintf(c->cfg.self, sizeof c->cfg.self, "%s", n->o->name);
	c->cfg.seed = wall_ms() ^ ((uint64_t)getpid() << 32);
	c->cfg.wall_offset_ms = wall_ms() - uv_now(&n->loop);
	const char *cc = getenv("RINGNET_CAST_CC");
	snprintf(c->cc, sizeof c->cc, "%s", cc ? cc : "bbr");
	if (!strcmp(c->cc, "default"))
		c->cc[0] = 0;
	/* the bytes a link's socket holds unsent: the kernel's default let it take 4 MB of
	 * pieces (1.6 s at 20 Mbit/s), committing them to one receiver long before the link
	 * could carry them and queueing every HAVE, REQUEST and CANCEL behind them */
	const char *lw = getenv("RINGNET_CAST_LOWAT");
	c->lowat = CAST_LOWAT;
	if (lw) {
		char *end;
		unsigned long v = strtoul(lw, &end, 10);
		if (*lw && !*end && v <= UINT32_MAX)
			c->lowat = (unsigned)v;
		else
			LOG_W(n, "RINGNET_CAST_LOWAT=%s is not a byte count: cast links keep %u",
			      lw, CAST_LOWAT);
	}
	snprintf(c->dir, sizeof c->dir, "%s/cast", n->o->data);
	cast_driver d = {c, drv_send, drv_send_piece, drv_open, drv_store, drv_complete};
	c->core = cast_new(&c->cfg, &d);
	if (!c->core) {
		free(c);
		return RN_ENOMEM;
	}
	for (int i = 0; i < n->o->njoin && c->ndial < NODE_MAX_JOIN; i++) {
		char host[24];
		int port;
		dial_t *dl = &c->dials[c->ndial];
		char addr[64]; /* a --join name: its address now, if it has one */
		snprintf(addr, sizeof addr, "%s", n->o->join[i]);
		if (node_parse_hostport(addr, host, sizeof host, &port) < 0 &&
		    node_resolve_hostport(n->o->join[i], addr, sizeof addr) < 0)
			continue;
		if (node_parse_hostport(addr, host, sizeof host, &port) < 0 ||
		    uv_ip4_addr(host, port, &dl->sa) != 0)
			continue;
		snprintf(dl->addr, sizeof dl->addr, "%s", addr);
		c->ndial++;
	}
	uv_timer_init(&n->loop, &c->timer);
	c->timer.data = c;
	uv_timer_start(&c->timer, on_timer, TIMER_MS, TIMER_MS);
	n->cast = c;
	make_snapshot(c);
	return 0;
}

void nd_cast_stop(node *n)
{
	nd_cast *c = n->cast;
	if (!c)
		return;
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (c->links[i])
			c->links[i]->dead = true;
	c->busy = false;
	reap(c);
	uv_close((uv_handle_t *)&c->timer, NULL);
}

void nd_cast_free(node *n)
{
	nd_cast *c = n->cast;
	if (!c)
		return;
	cast_free(c->core);
	close_storage(c);
	free(c->snap);
	free(c);
	n->cast = NULL;
}

/* ---- HTTP (handlers, on the loop: prepare hashes the whole file before answering) ---- */

static char *err_json(unsigned *status, unsigned code, const char *fmt, const char *arg)
{
	char msg[512];
	snprintf(msg, sizeof msg, fmt, arg ? arg : "");
	*status = code;
	return nd_json_text(json_pack("{s:s}", "error", msg));
}

/* Reads the file and hashes its pieces; 0, or an error answer in *ans. */
static int prepare(post_job *j, const char *path, uint32_t piece, unsigned *status, char **ans)
{
	j->fd = open(path, O_RDONLY);
	struct stat st;
	if (j->fd < 0 || fstat(j->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*ans = err_json(status, 400,
		                "cannot read %s on this node (a regular file's path on "
		                "the source node's filesystem)",
		                path);
		return -1;
	}
	if (st.st_size <= 0) {
		*ans = err_json(status, 400, "%s is empty: nothing to cast", path);
		return -1;
	}
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (!name_ok(base)) {
		*ans = err_json(
		    status, 400,
		    "the file's name '%s' cannot be used (at most 63 bytes, no leading dot)", base);
		return -1;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (!piece)
		piece = cast_default_piece(size);
	while (piece < CAST_PIECE_MAX && (size + piece - 1) / piece > CAST_MAX_PIECES)
		piece *= 2;
	uint64_t np = (size + piece - 1) / piece;
	if (piece < CAST_PIECE_MIN || piece > CAST_PIECE_MAX || np > CAST_MAX_PIECES) {
		*ans = err_json(status, 400,
		                "piece size must be 4096..1048576 bytes, with at most "
		                "32768 pieces%s",
		                NULL);
		return -1;
	}
	j->hashes = malloc(32 * np);
	uint8_t *buf = malloc(piece);
	if (!j->hashes || !buf) {
		free(buf);
		*ans = err_json(status, 500, "out of memory%s", NULL);
		return -1;
	}
	for (uint64_t p = 0; p < np; p++) {
		size_t len = p + 1 == np ? (size_t)(size - p * piece) : piece;
		if (!read_all(j->fd, buf, len, p * piece)) {
			free(buf);
			*ans = err_json(status, 500, "cannot read %s", path);
			return -1;
		}
		SHA256(buf, len, j->hashes + 32 * p);
	}
	free(buf);
	snprintf(j->info.name, sizeof j->info.name, "%s", base);
	j->info.size = size;
	j->info.piece_size = piece;
	j->info.npieces = (uint32_t)np;
	j->info.hashes = j->hashes;
	return 0;
}

static char *post_cast(nd_cast *c, const char *body, size_t len, unsigned *status)
{
	json_error_t e;
	json_t *req = json_loadb(body ? body : "", len, 0, &e);
	if (!json_is_object(req)) {
		json_decref(req);
		return err_json(
		    status, 400,
		    "the body must be a JSON object: {\"path\": FILE, \"to\": \"all\" or "
		    "[ids], \"piece_size\": N, \"rate\": BYTES_PER_S}%s",
		    NULL);
	}
	uint64_t start = wall_ms();
	const char *path = json_string_value(json_object_get(req, "path"));
	json_t *to = json_object_get(req, "to");
	json_t *ps = json_object_get(req, "piece_size"), *rate = json_object_get(req, "rate");
	char *ans = NULL;
	post_job j;
	memset(&j, 0, sizeof j);
	j.fd = -1;
	if (!path) {
		ans = err_json(status, 400, "missing \"path\": the file on this node to send%s",
		               NULL);
		goto out;
	}
	if ((ps && (!json_is_integer(ps) || json_integer_value(ps) < CAST_PIECE_MIN ||
	            json_integer_value(ps) > CAST_PIECE_MAX)) ||
	    (rate && (!json_is_integer(rate) || json_integer_value(rate) < 0))) {
		ans = err_json(
		    status, 400,
		    "\"piece_size\" must be 4096..1048576 and \"rate\" a byte rate >= 0%s", NULL);
		goto out;
	}
	if (to && !(json_is_string(to) && !strcmp(json_string_value(to), "all")) &&
	    !(json_is_array(to) && json_array_size(to) > 0 &&
	      json_array_size(to) <= CAST_MAX_DESTS)) {
		ans = err_json(status, 400, "\"to\" must be \"all\" or a list of node ids%s", NULL);
		goto out;
	}
	if (json_is_array(to)) {
		size_t nd = json_array_size(to);
		j.dests = calloc(nd, CAST_NAME_MAX);
		if (!j.dests) {
			ans = err_json(status, 500, "out of memory%s", NULL);
			goto out;
		}
		for (size_t i = 0; i < nd; i++) {
			const char *s = json_string_value(json_array_get(to, i));
			if (!s || !s[0] || strlen(s) >= CAST_NAME_MAX) {
				ans = err_json(status, 400,
				               "\"to\" must list node ids (1..63 bytes)%s", NULL);
				goto out;
			}
			snprintf(j.dests[i], CAST_NAME_MAX, "%s", s);
		}
		j.info.dests = (const char(*)[CAST_NAME_MAX])j.dests;
		j.info.ndests = (uint32_t)nd;
	}
	if (prepare(&j, path, ps ? (uint32_t)json_integer_value(ps) : 0, status, &ans) < 0)
		goto out;
	j.info.start_wall_ms = start;
	j.info.rate_cap = rate ? (uint64_t)json_integer_value(rate) : 0;
	if (c->busy) { /* cannot happen: handlers do not run inside the core */
		ans = err_json(status, 503, "busy; try again%s", NULL);
		goto out;
	}
	start_post(c, &j);
	if (j.rc < 0) {
		ans = err_json(status, 500, "the cast could not start (%s)", rn_strerror(j.rc));
		goto out;
	}
	char id[17];
	snprintf(id, sizeof id, "%016llx", (unsigned long long)j.info.xfer);
	*status = 200;
	ans = nd_json_text(json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "xfer", id, "file",
	                             j.info.name, "size", (json_int_t)j.info.size, "piece_size",
	                             (json_int_t)j.info.piece_size, "pieces",
	                             (json_int_t)j.info.npieces, "start_wall_ms", (json_int_t)start,
	                             "hash_ms", (json_int_t)(wall_ms() - start)));
out:
	if (j.fd >= 0)
		close(j.fd);
	free(j.hashes);
	free(j.dests);
	json_decref(req);
	return ans;
}

char *nd_cast_http(node *n, const char *method, const char *url, const char *body, size_t len,
                   bool too_big, unsigned *status)
{
	nd_cast *c = n->cast;
	if (!c)
		return err_json(status, 503, "cast is not running on this node%s", NULL);
	if (!strcmp(url, "/cast/status")) {
		if (strcmp(method, "GET"))
			return err_json(status, 405, "use GET on /cast/status%s", NULL);
		char *s = strdup(c->snap ? c->snap : "{}");
		*status = 200;
		return s;
	}
	if (strcmp(method, "POST"))
		return err_json(status, 405, "use POST on /cast%s", NULL);
	if (too_big)
		return err_json(status, 413, "the body is too large%s", NULL);
	return post_cast(c, body, len, status);
}
