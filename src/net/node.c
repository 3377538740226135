/* node.c — see node.h.
 *
 * Connections: a node opens one outgoing TCP connection per peer address and sends
 * everything for that peer over it; what arrives on connections others opened to us is
 * read, framed and handed to the core. A connect that fails, a connection that drops with
 * messages still queued, or a queue that overflows hands those messages back to the core
 * with ring_on_unreachable: that is how the core learns a peer is gone.
 *
 * HTTP: libmicrohttpd answers on its own thread from snapshots the loop publishes under a
 * mutex every 100 ms, so the loop never blocks on a client and the ring core is only
 * ever touched by the loop thread. */
#include "node.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "../lib/err.h"
#include "../ring/ring.h"
#include "../store/store.h"
#include "wire.h"

#define MAX_PEERS           4096
#define MAX_QUEUE           1024 /* frames waiting for one peer's connection */
#define MAX_OUT_CONNS       256  /* outgoing connections; the least recently used idle one goes */
#define MAX_IN_CONNS        1024 /* incoming connections; more are closed at once */
#define SNAPSHOT_MS         100
#define CONNECT_BACKOFF_MS  500        /* after a failed connect; doubles with each failure */
#define CONNECT_BACKOFF_MAX 8000       /* ... up to this, until a connect works or it talks to us */
#define KV_DEADLINE_MS      5000       /* an HTTP request waiting on the ring longer gets 503 */
#define KV_BODY_MAX         (1u << 20) /* bytes in a POST body */
#define HANDOFF_BIT         (1ull << 63) /* request ids of key handoffs, not HTTP requests */
#define HANDOFF_EVERY_MS    5000         /* re-check for keys this node no longer owns */
#define REJOIN_EVERY_MS     1000         /* not in a ring yet: try the next known peer */
#define ANCHOR_EVERY_MS     5000         /* look up successor(0), the ring's smallest id */
#define ANCHOR_BIT          (1ull << 62) /* request ids of those lookups */
#define LEAVE_WAIT_MS       3000         /* on SIGTERM, wait this long for handed-off keys */

enum { FRAME_RING, FRAME_KV };

typedef struct pending {
	struct pending *next;
	uint8_t *buf;
	size_t len;
	uint8_t kind;    /* FRAME_RING: msg goes back to the core if undeliverable */
	uint64_t kv_req; /* FRAME_KV: the request that fails if undeliverable */
	ring_msg msg;    /* handed back to the core if it cannot be delivered */
	ring_peer peers[RING_MAX_SUCC];
} pending;

struct node;

typedef struct {
	struct node *node;
	char addr[WIRE_ADDR_MAX];
	struct sockaddr_in sa;
	uv_tcp_t *tcp; /* NULL when idle */
	uv_connect_t connect;
	bool connected;
	pending *head, *tail;
	unsigned nq;
	uint64_t failed_at;  /* last connect failure: back off before trying again */
	uint32_t backoff_ms; /* how long, from failed_at (0: try at once) */
	uint64_t used_at;    /* last frame sent: for closing idle connections */
} peer;

typedef struct {
	uv_tcp_t tcp;
	struct node *node;
	uint8_t *buf;
	size_t len, cap;
} inconn;

typedef struct {
	uv_write_t req;
	peer *p;
	pending *frame;
} wreq;

/* One HTTP key-value request: made by the HTTP thread, handed to the loop, answered by
 * the loop, which then resumes the suspended connection and never touches it again. */
typedef struct job {
	struct job *next;
	struct MHD_Connection *conn;
	uint8_t op; /* WIRE_KV_PUT / GET / DEL */
	char *key;
	char *value; /* JSON text, for a put */
	uint64_t req;
	uint64_t deadline;
	uint64_t retry_at; /* owner was unreachable: look the key up again at this time */
	bool retried;
	/* the answer */
	unsigned status;
	char *body;
	bool done;
} job;

/* A peer to join through; its ring id is known when an earlier run saved it. */
typedef struct {
	char addr[WIRE_ADDR_MAX];
	rn_id id;
	bool has_id;
} candidate;

/* A key sent to the node that now owns it, deleted here once that node says stored, and
 * only if it still holds the value sent (SHA-1 of it): a write that came in meanwhile stays
 * and goes with the next handoff. */
typedef struct handoff {
	struct handoff *next;
	uint64_t req;
	rn_id sent;
	char *key;
} handoff;

/* Per HTTP connection state, in MHD's con_cls. */
typedef struct {
	char *body;
	size_t len;
	bool too_big;
	job *job;
	const char *route; /* for /metrics: what was asked, and the answer's status */
	unsigned status;
} http_req;

typedef struct node {
	const node_opts *o;
	uv_loop_t loop;
	ring_config cfg;
	ring_node *ring;
	ring_out out;
	uv_tcp_t listener;
	uv_timer_t tick, snap;
	uv_signal_t sigint, sigterm;
	uint64_t tick_at;
	peer *peers;
	uint32_t npeers;
	wire_book book;
	bool stopping;
	/* counters for /metrics and /health (loop thread; published in snapshots) */
	uint64_t frames_in, frames_out, bad_frames, bytes_in, bytes_out, unreachable;
	unsigned nout, nin; /* open connections */
	uint64_t refused_conns;
	uint64_t msgs_in[RING_MSG_LEAVE + 1], msgs_out[RING_MSG_LEAVE + 1];
	uint64_t lookups, lookup_hops, lookups_failed;
	/* HTTP requests by route and status (HTTP thread, under lock) */
	struct {
		const char *route;
		unsigned status;
		uint64_t count;
	} http_count[64];
	unsigned nhttp_count;
	char *snap_metrics, *snap_peers;
	/* key-value */
	store *st;
	uv_async_t wake;
	job *incoming; /* from the HTTP thread, under lock */
	job *active;   /* waiting on the ring (loop thread only) */
	uint64_t kv_seq;
	uint64_t kv_local, kv_forwarded, kv_served_for_others, keys_handed_off;
	handoff *handoffs;
	uint64_t handoff_seq, handoff_at, leave_deadline;
	/* joining: --join addresses, then the peers saved in DATA/peers by an earlier run */
	candidate *candidates;
	unsigned ncandidates, next_candidate, join_tries;
	uint64_t join_tried_at;
	bool restarted;   /* DATA/peers named peers: this node was in a ring before */
	ring_peer anchor; /* successor(0), the ring's smallest id, saved with the peers */
	uint64_t anchor_at, anchor_seq;
	char *saved_peers; /* what DATA/peers holds now */
	/* HTTP */
	struct MHD_Daemon *mhd;
	pthread_mutex_t lock;
	char *snap_ring, *snap_health;
} node;

/* ---- logging ---- */

static void logf_(const node *n, int level, const char *fmt, ...)
{
	if (level > n->o->log_level)
		return;
	static const char *names[] = {"error", "warn", "info", "debug"};
	fprintf(stderr, "ringnet node %s [%s] ", n->o->name, names[level]);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
#define LOG_E(n, ...) logf_(n, 0, __VA_ARGS__)
#define LOG_W(n, ...) logf_(n, 1, __VA_ARGS__)
#define LOG_I(n, ...) logf_(n, 2, __VA_ARGS__)
#define LOG_D(n, ...) logf_(n, 3, __VA_ARGS__)

/* ---- addresses ---- */

int node_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
		return -1;
	char *end;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (errno || *end || p < 1 || p > 65535)
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (!strcmp(host, "localhost"))
		snprintf(host, hostlen, "127.0.0.1");
	struct sockaddr_in sa;
	if (uv_ip4_addr(host, (int)p, &sa) != 0)
		return -1;
	*port = (int)p;
	return 0;
}

static const char *book_name(void *ctx, ring_addr a)
{
	node *n = ctx;
	return a < n->npeers ? n->peers[a].addr : NULL;
}

static ring_addr book_intern(void *ctx, const char *addr)
{
	node *n = ctx;
	for (uint32_t i = 0; i < n->npeers; i++)
		if (!strcmp(n->peers[i].addr, addr))
			return i;
	char host[24]; /* an IPv4 address in dotted form fits with room to spare */
	int port;
	if (n->npeers >= MAX_PEERS || node_parse_hostport(addr, host, sizeof host, &port) < 0)
		return RING_ADDR_NONE;
	peer *p = &n->peers[n->npeers];
	memset(p, 0, sizeof *p);
	p->node = n;
	snprintf(p->addr, sizeof p->addr, "%s:%d", host, port);
	uv_ip4_addr(host, port, &p->sa);
	return n->npeers++;
}

/* ---- sending ---- */

static void drain(node *n);

static void kv_unreachable(node *n, uint64_t req);

static void hand_back(node *n, pending *f)
{
	n->unreachable++;
	if (f->kind == FRAME_KV) {
		kv_unreachable(n, f->kv_req);
		return;
	}
	f->msg.peers = f->peers;
	ring_out_reset(&n->out);
	ring_on_unreachable(n->ring, uv_now(&n->loop), &f->msg, &n->out);
	drain(n);
}

static void free_frame(pending *f)
{
	free(f->buf);
	free(f);
}

/* Every queued frame of p goes back to the core as undeliverable. */
static void fail_queue(peer *p)
{
	pending *f = p->head;
	p->head = p->tail = NULL;
	p->nq = 0;
	while (f) {
		pending *next = f->next;
		hand_back(p->node, f);
		free_frame(f);
		f = next;
	}
}

static void on_closed(uv_handle_t *h)
{
	free(h);
}

static void drop_connection(peer *p)
{
	if (p->tcp) {
		p->node->nout--;
		p->tcp->data = NULL;
		uv_close((uv_handle_t *)p->tcp, on_closed);
	}
	p->tcp = NULL;
	p->connected = false;
}

static void on_write(uv_write_t *req, int status)
{
	wreq *w = (wreq *)req;
	node *n = w->p->node;
	if (status < 0) {
		LOG_D(n, "write to %s failed: %s", w->p->addr, uv_strerror(status));
		hand_back(n, w->frame);
		if (w->p->connected)
			drop_connection(w->p);
	} else {
		n->frames_out++;
		n->bytes_out += w->frame->len;
	}
	free_frame(w->frame);
	free(w);
}

static void write_frame(peer *p, pending *f)
{
	wreq *w = malloc(sizeof *w);
	if (!w) {
		hand_back(p->node, f);
		free_frame(f);
		return;
	}
	w->p = p;
	w->frame = f;
	uv_buf_t b = uv_buf_init((char *)f->buf, (unsigned)f->len);
	int rc = uv_write(&w->req, (uv_stream_t *)p->tcp, &b, 1, on_write);
	if (rc < 0) {
		free(w);
		hand_back(p->node, f);
		free_frame(f);
	}
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)h;
	static char discard[4096]; /* outgoing connections carry nothing back */
	(void)hint;
	*b = uv_buf_init(discard, sizeof discard);
}

static void on_out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	(void)b;
	peer *p = s->data;
	if (nread < 0 && p) {
		LOG_D(p->node, "connection to %s closed: %s", p->addr, uv_strerror((int)nread));
		drop_connection(p);
		fail_queue(p);
	}
}

/* Exponential backoff: a peer that is down is not hammered with connects. */
static void connect_failed(peer *p, uint64_t now)
{
	p->failed_at = now;
	p->backoff_ms = !p->backoff_ms                             ? CONNECT_BACKOFF_MS
	                : p->backoff_ms >= CONNECT_BACKOFF_MAX / 2 ? CONNECT_BACKOFF_MAX
	                                                           : p->backoff_ms * 2;
}

static void on_connect(uv_connect_t *req, int status)
{
	peer *p = req->data;
	node *n = p->node;
	if (status < 0) {
		LOG_D(n, "cannot connect to %s: %s", p->addr, uv_strerror(status));
		drop_connection(p);
		connect_failed(p, uv_now(&n->loop));
		fail_queue(p);
		return;
	}
	p->connected = true;
	p->backoff_ms = 0;
	uv_read_start((uv_stream_t *)p->tcp, alloc_cb, on_out_read);
	pending *f = p->head;
	p->head = p->tail = NULL;
	p->nq = 0;
	while (f) {
		pending *next = f->next;
		write_frame(p, f);
		f = next;
	}
}

/* Closes the connected peer connection that has been idle longest (nothing queued). */
static void close_idle(node *n)
{
	peer *oldest = NULL;
	for (uint32_t i = 1; i < n->npeers; i++) {
		peer *q = &n->peers[i];
		if (q->connected && !q->nq && (!oldest || q->used_at < oldest->used_at))
			oldest = q;
	}
	if (oldest) {
		LOG_D(n, "closing idle connection to %s (at the limit of %d)", oldest->addr,
		      MAX_OUT_CONNS);
		drop_connection(oldest);
	}
}

static void send_frame(node *n, ring_addr to, pending *f)
{
	peer *p = &n->peers[to];
	p->used_at = uv_now(&n->loop);
	if (p->connected) {
		write_frame(p, f);
		return;
	}
	uint64_t now = uv_now(&n->loop);
	if (p->nq >= MAX_QUEUE ||
	    (!p->tcp && p->backoff_ms && now - p->failed_at < p->backoff_ms)) {
		hand_back(n, f); /* queue full, or it refused us a moment ago */
		free_frame(f);
		return;
	}
	f->next = NULL;
	if (p->tail)
		p->tail->next = f;
	else
		p->head = f;
	p->tail = f;
	p->nq++;
	if (p->tcp)
		return; /* connecting */
	if (n->nout >= MAX_OUT_CONNS)
		close_idle(n);
	p->tcp = malloc(sizeof *p->tcp);
	if (!p->tcp) {
		fail_queue(p);
		return;
	}
	n->nout++;
	uv_tcp_init(&n->loop, p->tcp);
	uv_tcp_nodelay(p->tcp, 1);
	p->tcp->data = p;
	p->connect.data = p;
	if (uv_tcp_connect(&p->connect, p->tcp, (const struct sockaddr *)&p->sa, on_connect) < 0) {
		drop_connection(p);
		connect_failed(p, now);
		fail_queue(p);
	}
}

static void arm_timer(node *n, uint64_t at);
static void kv_on_lookup(node *n, const ring_event *e);
static void handoff_to(node *n, ring_peer to, bool all);
static void handoff_done(node *n, uint64_t req, bool stored);

/* Sends what the core put in n->out, reports its events, and re-arms the tick timer.
 * Handing messages back can re-enter drain, so the output is copied out first. */
static void drain(node *n)
{
	ring_out o = n->out;
	ring_out_reset(&n->out);
	for (size_t k = 0; k < o.nmsgs; k++) {
		ring_msg *m = &o.msgs[k];
		if (m->to == RING_ADDR_NONE || m->to >= n->npeers)
			continue;
		pending *f = calloc(1, sizeof *f);
		if (!f)
			continue;
		f->msg = *m;
		if (m->npeers)
			memcpy(f->peers, m->peers, m->npeers * sizeof(ring_peer));
		f->msg.peers = f->peers;
		if (wire_encode_ring(&f->msg, &n->book, &f->buf, &f->len) < 0) {
			free(f);
			continue;
		}
		n->msgs_out[m->type <= RING_MSG_LEAVE ? m->type : 0]++;
		send_frame(n, m->to, f);
	}
	for (size_t k = 0; k < o.nevents; k++) {
		const ring_event *e = &o.events[k];
		const char *who =
		    e->result.addr < n->npeers ? n->peers[e->result.addr].addr : "none";
		switch (e->type) {
		case RING_EV_LOOKUP_DONE:
			kv_on_lookup(n, e);
			break;
		case RING_EV_JOINED:
			LOG_I(n, "joined the ring; successor %s", who);
			break;
		case RING_EV_ID_TAKEN:
			LOG_E(n, "another node (%s) already has this id: choose another --id", who);
			break;
		case RING_EV_SUCC_CHANGED:
			LOG_I(n, "successor is now %s", who);
			break;
		case RING_EV_PRED_CHANGED:
			LOG_I(n, "predecessor is now %s", who);
			if (!n->stopping)
				handoff_to(n, e->result, false); /* keys it now owns go to it */
			break;
		default:
			break;
		}
	}
	if (o.wake_at != UINT64_MAX)
		arm_timer(n, o.wake_at);
}

/* ---- timers ---- */

static void on_tick(uv_timer_t *t)
{
	node *n = t->data;
	n->tick_at = UINT64_MAX;
	ring_out_reset(&n->out);
	ring_tick(n->ring, uv_now(&n->loop), &n->out);
	drain(n);
}

static void arm_timer(node *n, uint64_t at)
{
	if (at >= n->tick_at)
		return;
	uint64_t now = uv_now(&n->loop);
	n->tick_at = at;
	uv_timer_start(&n->tick, on_tick, at > now ? at - now : 0, 0);
}

/* ---- receiving ---- */

static void in_closed(uv_handle_t *h)
{
	inconn *c = (inconn *)h;
	c->node->nin--;
	free(c->buf);
	free(c);
}

static void in_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	inconn *c = (inconn *)h;
	if (hint < 65536)
		hint = 65536;
	if (c->cap - c->len < hint) {
		size_t cap = c->len + hint;
		uint8_t *q = realloc(c->buf, cap);
		if (!q) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
		c->buf = q;
		c->cap = cap;
	}
	*b = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void kv_on_frame(node *n, const wire_kv *kv);

/* Handles every whole frame in the buffer; false when the peer sent garbage. */
static bool consume(inconn *c)
{
	node *n = c->node;
	size_t off = 0;
	while (c->len - off >= WIRE_HEADER) {
		uint32_t blen;
		uint8_t type;
		if (wire_header(c->buf + off, &blen, &type) < 0 ||
		    (type != WIRE_RING && type != WIRE_KV))
			return false;
		if (c->len - off < WIRE_HEADER + (size_t)blen)
			break;
		if (type == WIRE_KV) {
			wire_kv kv;
			if (wire_decode_kv(c->buf + off + WIRE_HEADER, blen, &kv) < 0)
				return false;
			n->frames_in++;
			kv_on_frame(n, &kv);
			wire_kv_free(&kv);
			off += WIRE_HEADER + blen;
			continue;
		}
		ring_msg m;
		ring_peer peers[RING_MAX_SUCC];
		if (wire_decode_ring(c->buf + off + WIRE_HEADER, blen, &n->book, &m, peers) < 0)
			return false;
		m.to = 0;
		if (m.from.addr != RING_ADDR_NONE && m.from.addr < n->npeers)
			n->peers[m.from.addr].backoff_ms =
			    0; /* it is up again: connect when needed */
		n->frames_in++;
		n->msgs_in[m.type]++;
		ring_out_reset(&n->out);
		ring_on_msg(n->ring, uv_now(&n->loop), &m, &n->out);
		drain(n);
		off += WIRE_HEADER + blen;
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
	return true;
}

static void in_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	(void)b;
	inconn *c = (inconn *)s;
	if (nread < 0) {
		uv_close((uv_handle_t *)s, in_closed);
		return;
	}
	c->len += (size_t)nread;
	c->node->bytes_in += (uint64_t)nread;
	if (!consume(c)) {
		c->node->bad_frames++;
		LOG_W(c->node, "malformed frame from a peer connection: closing that connection");
		uv_read_stop(s);
		uv_close((uv_handle_t *)s, in_closed);
	}
}

static void on_connection(uv_stream_t *server, int status)
{
	node *n = server->data;
	if (status < 0)
		return;
	inconn *c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->node = n;
	uv_tcp_init(&n->loop, &c->tcp);
	c->tcp.data = NULL; /* marks an incoming connection for close_walk */
	n->nin++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, in_closed);
		return;
	}
	if (n->nin > MAX_IN_CONNS) {
		if (!n->refused_conns++)
			LOG_W(n, "more than %d peer connections: closing new ones", MAX_IN_CONNS);
		uv_close((uv_handle_t *)&c->tcp, in_closed);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, in_alloc, in_read);
}

/* ---- key handoff (loop thread) ---- */

static void handoff_done(node *n, uint64_t req, bool stored)
{
	for (handoff **pp = &n->handoffs; *pp; pp = &(*pp)->next) {
		handoff *h = *pp;
		if (h->req != req)
			continue;
		*pp = h->next;
		void *val = NULL;
		size_t vlen = 0;
		rn_id now;
		if (stored && store_get(n->st, h->key, strlen(h->key), &val, &vlen) == 0) {
			rn_id_hash(&now, val, vlen, RN_ID_BITS);
			if (rn_id_eq(&now, &h->sent) &&
			    store_del(n->st, h->key, strlen(h->key)) == 0)
				n->keys_handed_off++;
		}
		free(val);
		free(h->key);
		free(h);
		return;
	}
}

typedef struct {
	node *n;
	ring_peer to;
	bool all;
} handoff_scan;

static int handoff_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	handoff_scan *hs = ctx;
	node *n = hs->n;
	if (klen == 0 || klen > WIRE_KEY_MAX)
		return 0;
	char *k = strndup(key, klen);
	if (!k)
		return 1;
	rn_id id;
	rn_id_hash(&id, k, klen, n->cfg.bits);
	/* ours while it lies in (predecessor, self] */
	bool ours = rn_id_in_oc(&id, &hs->to.id, ring_self_id(n->ring));
	bool busy = false;
	for (handoff *h = n->handoffs; h && !busy; h = h->next)
		busy = !strcmp(h->key, k);
	if ((ours && !hs->all) || busy) {
		free(k);
		return 0;
	}
	handoff *h = calloc(1, sizeof *h);
	pending *f = calloc(1, sizeof *f);
	wire_kv m = {.op = WIRE_KV_PUT, .req = HANDOFF_BIT | ++n->handoff_seq, .key = k};
	m.value = (uint8_t *)(uintptr_t)val;
	m.vlen = vlen;
	snprintf(m.reply_to, sizeof m.reply_to, "%s", n->peers[0].addr);
	if (!h || !f || wire_encode_kv(&m, &f->buf, &f->len) < 0) {
		free(h);
		free(f);
		free(k);
		return 1;
	}
	h->req = m.req;
	h->key = k;
	rn_id_hash(&h->sent, val, vlen, RN_ID_BITS);
	h->next = n->handoffs;
	n->handoffs = h;
	f->kind = FRAME_KV;
	f->kv_req = m.req;
	send_frame(n, hs->to.addr, f);
	return 0;
}

/* Sends to `to` the keys outside (to, self] (all of them when leaving). */
static void handoff_to(node *n, ring_peer to, bool all)
{
	if (to.addr == RING_ADDR_NONE || to.addr == 0 || !n->st)
		return;
	handoff_scan hs = {n, to, all};
	n->handoff_at = uv_now(&n->loop);
	store_scan(n->st, handoff_one, &hs);
}

/* ---- key-value (loop thread) ---- */

static char *json_text(json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	return t;
}

/* The answer a client sees, from what the owner decided. */
static char *kv_body(uint8_t op, unsigned status, const char *key, const uint8_t *val, size_t vlen,
                     const rn_id *owner)
{
	char hex[RN_ID_HEX];
	rn_id_to_hex(owner, hex);
	if (status == 404)
		return json_text(json_pack("{s:s, s:s, s:s}", "error", "key not found", "key", key,
		                           "node", hex));
	if (status != 200)
		return json_text(json_pack("{s:s, s:s}", "error",
		                           "the key's owner could not read or write its store",
		                           "node", hex));
	if (op == WIRE_KV_PUT)
		return json_text(
		    json_pack("{s:s, s:s, s:s}", "status", "stored", "key", key, "node", hex));
	if (op == WIRE_KV_DEL)
		return json_text(
		    json_pack("{s:s, s:s, s:s}", "status", "deleted", "key", key, "node", hex));
	json_t *v = json_loadb((const char *)val, vlen, JSON_DECODE_ANY, NULL);
	if (!v)
		return json_text(json_pack("{s:s}", "error", "stored value is not JSON"));
	return json_text(json_pack("{s:s, s:o, s:s}", "key", key, "value", v, "node", hex));
}

/* Runs op on this node's store: the HTTP status, and for a get the value. */
static unsigned kv_exec(node *n, uint8_t op, const char *key, const uint8_t *val, size_t vlen,
                        void **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	int rc;
	switch (op) {
	case WIRE_KV_PUT:
		rc = store_put(n->st, key, strlen(key), val, vlen);
		break;
	case WIRE_KV_GET:
		rc = store_get(n->st, key, strlen(key), out, outlen);
		break;
	default:
		rc = store_del(n->st, key, strlen(key));
		break;
	}
	return rc == 0 ? 200 : rc == RN_ENOTFOUND ? 404 : 500;
}

static void kv_finish(node *n, job *j, unsigned status, char *body)
{
	for (job **pp = &n->active; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	j->status = status;
	j->body = body ? body : strdup("{\"error\":\"out of memory\"}");
	pthread_mutex_lock(&n->lock);
	j->done = true;
	pthread_mutex_unlock(&n->lock);
	MHD_resume_connection(j->conn); /* the HTTP thread owns j from here on */
}

static job *kv_find(node *n, uint64_t req)
{
	for (job *j = n->active; j; j = j->next)
		if (j->req == req)
			return j;
	return NULL;
}

static void kv_fail(node *n, job *j, const char *why)
{
	kv_finish(n, j, 503, json_text(json_pack("{s:s}", "error", why)));
}

static void kv_on_lookup(node *n, const ring_event *e)
{
	if (e->req & ANCHOR_BIT) {
		if (e->ok && e->result.addr != RING_ADDR_NONE)
			n->anchor = e->result;
		return;
	}
	n->lookups++;
	n->lookup_hops += e->hops;
	n->lookups_failed += !e->ok;
	job *j = kv_find(n, e->req);
	if (!j)
		return; /* answered already (timed out) */
	if (!e->ok || e->result.addr == RING_ADDR_NONE) {
		kv_fail(n, j, "the ring could not find the key's owner; try again");
		return;
	}
	if (e->result.addr == 0) { /* ours */
		void *val;
		size_t vlen;
		const char *in = j->value ? j->value : "";
		unsigned st =
		    kv_exec(n, j->op, j->key, (const uint8_t *)in, strlen(in), &val, &vlen);
		n->kv_local++;
		kv_finish(n, j, st, kv_body(j->op, st, j->key, val, vlen, ring_self_id(n->ring)));
		free(val);
		return;
	}
	wire_kv m = {.op = j->op, .req = j->req, .key = j->key};
	m.value = (uint8_t *)j->value;
	m.vlen = j->value ? strlen(j->value) : 0;
	snprintf(m.reply_to, sizeof m.reply_to, "%s", n->peers[0].addr);
	pending *f = calloc(1, sizeof *f);
	if (!f || wire_encode_kv(&m, &f->buf, &f->len) < 0) {
		free(f);
		kv_fail(n, j, "could not forward the request");
		return;
	}
	f->kind = FRAME_KV;
	f->kv_req = j->req;
	n->kv_forwarded++;
	send_frame(n, e->result.addr, f);
}

static void kv_unreachable(node *n, uint64_t req)
{
	if (req & HANDOFF_BIT) {
		handoff_done(n, req, false);
		return;
	}
	job *j = kv_find(n, req);
	if (!j)
		return;
	if (j->retried) {
		kv_fail(n, j, "the key's owner is unreachable; try again");
		return;
	}
	/* once more, a second later: by then the ring has usually routed around the loss */
	j->retried = true;
	j->retry_at = uv_now(&n->loop) + 1000;
}

static void kv_lookup(node *n, job *j)
{
	rn_id key;
	rn_id_hash(&key, j->key, strlen(j->key), n->cfg.bits);
	ring_out_reset(&n->out);
	ring_lookup(n->ring, uv_now(&n->loop), &key, j->req, &n->out);
	drain(n);
}

static void kv_on_frame(node *n, const wire_kv *kv)
{
	if (kv->op == WIRE_KV_REPLY && (kv->req & HANDOFF_BIT)) {
		handoff_done(n, kv->req, kv->status == 200);
		return;
	}
	if (kv->op == WIRE_KV_REPLY) {
		job *j = kv_find(n, kv->req);
		if (j)
			kv_finish(
			    n, j, kv->status,
			    kv_body(j->op, kv->status, j->key, kv->value, kv->vlen, &kv->node));
		return;
	}
	/* a request for a key of ours: run it and answer the asker */
	void *val;
	size_t vlen;
	unsigned st = kv_exec(n, kv->op, kv->key, kv->value, kv->vlen, &val, &vlen);
	n->kv_served_for_others++;
	wire_kv r = {.op = WIRE_KV_REPLY, .status = (uint16_t)st, .req = kv->req, .key = kv->key};
	r.value = val;
	r.vlen = vlen;
	r.node = *ring_self_id(n->ring);
	ring_addr to = book_intern(n, kv->reply_to);
	pending *f = calloc(1, sizeof *f);
	if (to != RING_ADDR_NONE && f && wire_encode_kv(&r, &f->buf, &f->len) == 0) {
		f->kind = FRAME_KV;
		f->kv_req = 0; /* nothing waits here if the reply is lost: the asker times out */
		send_frame(n, to, f);
	} else {
		free(f);
	}
	free(val);
}

/* Requests handed over by the HTTP thread. */
static void on_wake(uv_async_t *a)
{
	node *n = a->data;
	pthread_mutex_lock(&n->lock);
	job *list = n->incoming;
	n->incoming = NULL;
	pthread_mutex_unlock(&n->lock);
	/* the list was pushed at the head: reverse it to keep arrival order */
	job *rev = NULL;
	while (list) {
		job *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	uint64_t now = uv_now(&n->loop);
	while (rev) {
		job *j = rev;
		rev = rev->next;
		if (n->stopping) {
			j->next = n->active;
			n->active = j;
			kv_fail(n, j, "the node is shutting down");
			continue;
		}
		if (!ring_joined(n->ring)) { /* it would answer for the whole ring alone */
			j->next = n->active;
			n->active = j;
			kv_fail(n, j,
			        "this node is not in a ring yet (joining); try again shortly");
			continue;
		}
		j->req = ++n->kv_seq;
		j->deadline = now + KV_DEADLINE_MS;
		j->next = n->active;
		n->active = j;
		kv_lookup(n, j);
	}
}

static void kv_expire(node *n, bool all)
{
	uint64_t now = uv_now(&n->loop);
	job *j = n->active;
	while (j) {
		job *next = j->next;
		if (all || now >= j->deadline)
			kv_fail(n, j,
			        all ? "the node is shutting down"
			            : "no answer from the key's owner in time; try again");
		j = next;
	}
}

/* ---- HTTP ---- */

static json_t *peer_json(node *n, const ring_peer *p)
{
	if (p->addr == RING_ADDR_NONE || p->addr >= n->npeers)
		return json_null();
	char hex[RN_ID_HEX];
	rn_id_to_hex(&p->id, hex);
	return json_pack("{s:s, s:s}", "id", hex, "addr", n->peers[p->addr].addr);
}

static const char *msg_names[] = {"",       "find_succ", "found", "get_pred", "pred_reply",
                                  "notify", "ping",      "pong",  "leave"};

/* The loop's counters in Prometheus text format (HTTP counters are added on request). */
static char *metrics_text(node *n)
{
	size_t cap = 8192, len = 0;
	char *b = malloc(cap);
	if (!b)
		return NULL;
#define P(...) len += (size_t)snprintf(b + len, len < cap ? cap - len : 0, __VA_ARGS__)
	P("# HELP ringnet_peer_messages_total Ring protocol messages by direction and type.\n"
	  "# TYPE ringnet_peer_messages_total counter\n");
	for (int t = 1; t <= RING_MSG_LEAVE; t++) {
		P("ringnet_peer_messages_total{dir=\"in\",type=\"%s\"} %llu\n", msg_names[t],
		  (unsigned long long)n->msgs_in[t]);
		P("ringnet_peer_messages_total{dir=\"out\",type=\"%s\"} %llu\n", msg_names[t],
		  (unsigned long long)n->msgs_out[t]);
	}
	P("# HELP ringnet_peer_bytes_total Bytes on peer connections.\n"
	  "# TYPE ringnet_peer_bytes_total counter\n"
	  "ringnet_peer_bytes_total{dir=\"in\"} %llu\nringnet_peer_bytes_total{dir=\"out\"} %llu\n",
	  (unsigned long long)n->bytes_in, (unsigned long long)n->bytes_out);
	P("# HELP ringnet_peer_connections Open peer connections (out: at most %d, in: at most "
	  "%d).\n"
	  "# TYPE ringnet_peer_connections gauge\n"
	  "ringnet_peer_connections{dir=\"out\"} %u\nringnet_peer_connections{dir=\"in\"} %u\n",
	  MAX_OUT_CONNS, MAX_IN_CONNS, n->nout, n->nin);
	P("# HELP ringnet_peer_connections_refused_total Incoming connections closed at once "
	  "because %d were open.\n"
	  "# TYPE ringnet_peer_connections_refused_total counter\n"
	  "ringnet_peer_connections_refused_total %llu\n",
	  MAX_IN_CONNS, (unsigned long long)n->refused_conns);
	P("# HELP ringnet_peer_bad_frames_total Malformed frames (each closed its connection).\n"
	  "# TYPE ringnet_peer_bad_frames_total counter\nringnet_peer_bad_frames_total %llu\n",
	  (unsigned long long)n->bad_frames);
	P("# HELP ringnet_peer_undeliverable_total Messages handed back: peer unreachable.\n"
	  "# TYPE ringnet_peer_undeliverable_total counter\nringnet_peer_undeliverable_total "
	  "%llu\n",
	  (unsigned long long)n->unreachable);
	P("# HELP ringnet_lookups_total Key lookups started here, and their hops.\n"
	  "# TYPE ringnet_lookups_total counter\nringnet_lookups_total %llu\n"
	  "# TYPE ringnet_lookup_hops_total counter\nringnet_lookup_hops_total %llu\n"
	  "# TYPE ringnet_lookups_failed_total counter\nringnet_lookups_failed_total %llu\n",
	  (unsigned long long)n->lookups, (unsigned long long)n->lookup_hops,
	  (unsigned long long)n->lookups_failed);
	P("# HELP ringnet_kv_requests_total Key-value requests by where they ran.\n"
	  "# TYPE ringnet_kv_requests_total counter\n"
	  "ringnet_kv_requests_total{where=\"local\"} %llu\n"
	  "ringnet_kv_requests_total{where=\"forwarded\"} %llu\n"
	  "ringnet_kv_requests_total{where=\"for_peer\"} %llu\n",
	  (unsigned long long)n->kv_local, (unsigned long long)n->kv_forwarded,
	  (unsigned long long)n->kv_served_for_others);
	P("# HELP ringnet_keys_stored Keys in this node's store.\n# TYPE ringnet_keys_stored "
	  "gauge\n"
	  "ringnet_keys_stored %llu\n"
	  "# TYPE ringnet_keys_handed_off_total counter\nringnet_keys_handed_off_total %llu\n",
	  (unsigned long long)(n->st ? store_count(n->st) : 0),
	  (unsigned long long)n->keys_handed_off);
#undef P
	if (len >= cap) {
		free(b);
		return NULL;
	}
	return b;
}

/* Every peer this node knows of, with its role and connection state. */
static char *peers_json(node *n)
{
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	ring_peer pred = ring_predecessor(n->ring);
	json_t *a = json_array();
	for (uint32_t i = 1; i < n->npeers; i++) {
		peer *p = &n->peers[i];
		json_t *roles = json_array();
		if (pred.addr == i)
			json_array_append_new(roles, json_string("predecessor"));
		for (size_t k = 0; k < ns; k++)
			if (succ[k].addr == i)
				json_array_append_new(
				    roles, json_string(k ? "successor-list" : "successor"));
		for (unsigned f = 0; f < n->cfg.bits; f++)
			if (ring_finger(n->ring, f).addr == i) {
				json_array_append_new(roles, json_string("finger"));
				break;
			}
		const char *state = p->connected   ? "connected"
		                    : p->tcp       ? "connecting"
		                    : p->failed_at ? "unreachable"
		                                   : "idle";
		json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:I, s:I}", "addr", p->addr,
		                                   "state", state, "roles", roles, "queued",
		                                   (json_int_t)p->nq, "backoff_ms",
		                                   (json_int_t)p->backoff_ms));
	}
	json_t *doc = json_pack("{s:s, s:o}", "self", n->peers[0].addr, "peers", a);
	char *t = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return t;
}

static void publish(node *n)
{
	json_t *r = json_object();
	ring_peer self = {*ring_self_id(n->ring), 0};
	json_object_set_new(r, "name", json_string(n->o->name));
	json_object_set_new(r, "self", peer_json(n, &self));
	json_object_set_new(r, "joined", json_boolean(ring_joined(n->ring)));
	ring_peer pred = ring_predecessor(n->ring);
	json_object_set_new(r, "predecessor", peer_json(n, &pred));
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	json_t *sl = json_array();
	for (size_t i = 0; i < ns; i++)
		json_array_append_new(sl, peer_json(n, &succ[i]));
	json_object_set_new(r, "successors", sl);
	json_t *fl = json_array();
	ring_peer last = {.addr = RING_ADDR_NONE - 1};
	for (unsigned i = 0; i < n->cfg.bits; i++) {
		ring_peer f = ring_finger(n->ring, i);
		if (f.addr == last.addr && rn_id_eq(&f.id, &last.id))
			continue; /* runs of equal fingers are listed once, by their first index */
		last = f;
		json_t *e = peer_json(n, &f);
		if (json_is_object(e))
			json_object_set_new(e, "from", json_integer(i));
		json_array_append_new(fl, e);
	}
	json_object_set_new(r, "fingers", fl);
	char *ring_s = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	json_t *h = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I}", "status", "ok", "name", n->o->name,
	                      "joined", ring_joined(n->ring), "frames_in", (json_int_t)n->frames_in,
	                      "frames_out", (json_int_t)n->frames_out, "bad_frames",
	                      (json_int_t)n->bad_frames);
	char *health_s = json_dumps(h, JSON_COMPACT);
	json_decref(h);
	char *metrics_s = metrics_text(n);
	char *peers_s = peers_json(n);
	pthread_mutex_lock(&n->lock);
	free(n->snap_ring);
	free(n->snap_health);
	free(n->snap_metrics);
	free(n->snap_peers);
	n->snap_ring = ring_s;
	n->snap_health = health_s;
	n->snap_metrics = metrics_s;
	n->snap_peers = peers_s;
	pthread_mutex_unlock(&n->lock);
}

static void save_peers(node *n);
static void try_join(node *n);
static bool restart_ring(node *n);

static void on_snapshot(uv_timer_t *t)
{
	node *n = t->data;
	publish(n);
	kv_expire(n, false);
	if (!n->stopping && uv_now(&n->loop) - n->handoff_at >= HANDOFF_EVERY_MS)
		handoff_to(n, ring_predecessor(n->ring), false);
	uint64_t now = uv_now(&n->loop);
	if (!n->stopping && ring_joined(n->ring) && now - n->anchor_at >= ANCHOR_EVERY_MS) {
		n->anchor_at = now;
		rn_id zero = {{0}};
		ring_out_reset(&n->out);
		ring_lookup(n->ring, now, &zero, ANCHOR_BIT | ++n->anchor_seq, &n->out);
		drain(n);
	}
	save_peers(n);
	if (!n->stopping && !ring_joined(n->ring) && n->ncandidates &&
	    now - n->join_tried_at >= REJOIN_EVERY_MS) {
		if (!restart_ring(n))
			try_join(n);
	}
}

static enum MHD_Result reply(http_req *q, struct MHD_Connection *c, unsigned status,
                             const char *body)
{
	q->status = status;
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    strlen(body), (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	bool prom = q->route && !strcmp(q->route, "/metrics") && status == 200;
	MHD_add_response_header(r, "Content-Type",
	                        prom ? "text/plain; version=0.0.4" : "application/json");
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result reply_json(http_req *q, struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *t = json_text(j);
	enum MHD_Result rc = reply(q, c, status, t ? t : "{}");
	free(t);
	return rc;
}

static enum MHD_Result bad_request(http_req *q, struct MHD_Connection *c, unsigned status,
                                   const char *why)
{
	return reply_json(q, c, status, json_pack("{s:s}", "error", why));
}

/* Appends the HTTP counters (kept by the HTTP thread) to the loop's metrics. Under lock. */
static char *add_http_metrics(node *n, char *body)
{
	size_t len = strlen(body), cap = len + 256 + n->nhttp_count * 96;
	char *b = realloc(body, cap);
	if (!b) {
		free(body);
		return NULL;
	}
	len += (size_t)snprintf(
	    b + len, cap - len,
	    "# HELP ringnet_http_requests_total HTTP requests by route and status.\n"
	    "# TYPE ringnet_http_requests_total counter\n");
	for (unsigned i = 0; i < n->nhttp_count && len < cap; i++)
		len += (size_t)snprintf(
		    b + len, cap - len,
		    "ringnet_http_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
		    n->http_count[i].route, n->http_count[i].status,
		    (unsigned long long)n->http_count[i].count);
	return b;
}

/* Hands a request to the loop and suspends the connection until the loop answers. */
static enum MHD_Result submit(node *n, struct MHD_Connection *c, http_req *r, uint8_t op,
                              const char *key, char *value)
{
	job *j = calloc(1, sizeof *j);
	if (!j || !(j->key = strdup(key))) {
		free(j);
		free(value);
		return bad_request(r, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	}
	j->conn = c;
	j->op = op;
	j->value = value;
	r->job = j;
	MHD_suspend_connection(c);
	pthread_mutex_lock(&n->lock);
	j->next = n->incoming;
	n->incoming = j;
	pthread_mutex_unlock(&n->lock);
	uv_async_send(&n->wake);
	return MHD_YES;
}

static enum MHD_Result put_request(node *n, struct MHD_Connection *c, http_req *r)
{
	if (r->too_big)
		return bad_request(r, c, MHD_HTTP_CONTENT_TOO_LARGE,
		                   "request body over 1 MiB: store smaller values");
	json_error_t err;
	json_t *doc = r->body ? json_loadb(r->body, r->len, 0, &err) : NULL;
	if (!doc) {
		char why[256];
		snprintf(why, sizeof why, "malformed JSON: %s (line %d, column %d)",
		         r->body ? err.text : "empty body", r->body ? err.line : 0,
		         r->body ? err.column : 0);
		return bad_request(r, c, MHD_HTTP_BAD_REQUEST, why);
	}
	json_t *key = json_object_get(doc, "key"), *value = json_object_get(doc, "value");
	enum MHD_Result rc;
	if (!json_is_object(doc) || !json_is_string(key) || !json_string_length(key))
		rc = bad_request(r, c, MHD_HTTP_BAD_REQUEST,
		                 "send an object with a non-empty string \"key\" and a \"value\"");
	else if (!value)
		rc = bad_request(r, c, MHD_HTTP_BAD_REQUEST, "missing \"value\" (any JSON value)");
	else if (json_string_length(key) > WIRE_KEY_MAX ||
	         strlen(json_string_value(key)) != json_string_length(key))
		rc = bad_request(r, c, MHD_HTTP_CONTENT_TOO_LARGE,
		                 "keys are at most 1024 bytes, without NUL characters");
	else
		rc = submit(n, c, r, WIRE_KV_PUT, json_string_value(key),
		            json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY));
	json_decref(doc);
	return rc;
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **state)
{
	(void)version;
	node *n = cls;
	http_req *r = *state;
	if (!r) { /* first call: headers only */
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		*state = r;
		return MHD_YES;
	}
	if (*upload_size) { /* body arrives in pieces; keep at most KV_BODY_MAX */
		if (!r->too_big && r->len + *upload_size <= KV_BODY_MAX) {
			char *b = realloc(r->body, r->len + *upload_size);
			if (b) {
				memcpy(b + r->len, upload, *upload_size);
				r->body = b;
				r->len += *upload_size;
			} else {
				r->too_big = true;
			}
		} else {
			r->too_big = true;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (r->job) { /* resumed: the loop has answered */
		pthread_mutex_lock(&n->lock);
		bool done = r->job->done;
		pthread_mutex_unlock(&n->lock);
		if (!done)
			return MHD_YES;
		return reply(r, c, r->job->status, r->job->body);
	}
	bool get = !strcmp(method, "GET");
	static const char *status_routes[] = {"/ring", "/health", "/peers", "/metrics"};
	for (int i = 0; i < 4; i++) {
		if (strcmp(url, status_routes[i]) != 0)
			continue;
		r->route = status_routes[i];
		if (!get)
			return bad_request(r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			                   "use GET on this route");
		pthread_mutex_lock(&n->lock);
		char *snap[] = {n->snap_ring, n->snap_health, n->snap_peers, n->snap_metrics};
		char *body = snap[i] ? strdup(snap[i]) : NULL;
		if (body && i == 3)
			body = add_http_metrics(n, body);
		pthread_mutex_unlock(&n->lock);
		if (!body)
			return bad_request(r, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		enum MHD_Result rc = reply(r, c, MHD_HTTP_OK, body);
		free(body);
		return rc;
	}
	r->route = "other";
	if (!strcmp(url, "/kv")) {
		r->route = "/kv";
		if (strcmp(method, "POST") != 0)
			return bad_request(
			    r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			    "POST /kv stores; GET or DELETE /kv/<key> reads or removes");
		return put_request(n, c, r);
	}
	if (!strncmp(url, "/kv/", 4)) {
		const char *key = url + 4;
		r->route = "/kv/<key>";
		bool del = !strcmp(method, "DELETE");
		if (!get && !del)
			return bad_request(r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			                   "use GET or DELETE on /kv/<key>");
		if (!*key)
			return bad_request(r, c, MHD_HTTP_BAD_REQUEST,
			                   "the key is missing: /kv/<key>");
		if (strlen(key) > WIRE_KEY_MAX)
			return bad_request(r, c, MHD_HTTP_CONTENT_TOO_LARGE,
			                   "keys are at most 1024 bytes");
		return submit(n, c, r, get ? WIRE_KV_GET : WIRE_KV_DEL, key, NULL);
	}
	return bad_request(
	    r, c, MHD_HTTP_NOT_FOUND,
	    "no such route: try POST /kv, GET /kv/<key>, GET /ring, /peers, /health, /metrics");
}

static void on_http_done(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode why)
{
	(void)c;
	(void)why;
	http_req *r = *state;
	if (!r)
		return;
	node *n = cls;
	if (r->route && r->status) {
		pthread_mutex_lock(&n->lock);
		unsigned i = 0;
		while (i < n->nhttp_count &&
		       (n->http_count[i].route != r->route || n->http_count[i].status != r->status))
			i++;
		if (i < 64) {
			if (i == n->nhttp_count) {
				n->http_count[i].route = r->route;
				n->http_count[i].status = r->status;
				n->nhttp_count++;
			}
			n->http_count[i].count++;
		}
		pthread_mutex_unlock(&n->lock);
	}
	if (r->job) {
		free(r->job->key);
		free(r->job->value);
		free(r->job->body);
		free(r->job);
	}
	free(r->body);
	free(r);
	*state = NULL;
}

/* ---- joining and the saved peers ---- */

/* Adds a peer to join through (id: NULL when not known); 1 when it is new. */
static int add_candidate(node *n, const char *addr, const rn_id *id)
{
	char host[24];
	int port;
	if (node_parse_hostport(addr, host, sizeof host, &port) < 0)
		return 0;
	char canon[WIRE_ADDR_MAX];
	snprintf(canon, sizeof canon, "%s:%d", host, port);
	if (!strcmp(canon, n->peers[0].addr))
		return 0; /* ourselves */
	candidate *c = NULL;
	for (unsigned i = 0; i < n->ncandidates && !c; i++)
		if (!strcmp(n->candidates[i].addr, canon))
			c = &n->candidates[i];
	int added = 0;
	if (!c) {
		void *q = realloc(n->candidates, (n->ncandidates + 1) * sizeof *n->candidates);
		if (!q)
			return 0;
		n->candidates = q;
		c = &n->candidates[n->ncandidates++];
		memset(c, 0, sizeof *c);
		snprintf(c->addr, sizeof c->addr, "%s", canon);
		added = 1;
	}
	if (id) {
		c->id = *id;
		c->has_id = true;
	}
	return added;
}

/* --join addresses first, then the peers an earlier run of this node knew. */
static void load_candidates(node *n)
{
	for (int i = 0; i < n->o->njoin; i++)
		add_candidate(n, n->o->join[i], NULL);
	char path[512];
	snprintf(path, sizeof path, "%s/peers", n->o->data);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	/* a line is "host:port id-in-hex" (the id is missing in files of older versions) */
	char line[128];
	unsigned saved = 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = '\0';
		char *sp = strchr(line, ' ');
		rn_id id;
		bool has_id = false;
		if (sp) {
			*sp = '\0';
			has_id = rn_id_from_hex(&id, sp + 1) == 0;
		}
		if (line[0]) {
			add_candidate(n, line, has_id ? &id : NULL);
			saved++;
		}
	}
	fclose(f);
	if (saved) {
		n->restarted = true;
		LOG_I(n, "%u peers saved by an earlier run will be tried to rejoin", saved);
	}
}

/* A whole ring that stopped and starts again: nobody is in a ring to join. The node with
 * the smallest id among those up starts it again and the others join it. A node that has
 * tried every peer it knows, and sees none with a smaller id up (connected to it), is that
 * node. Every node saves its predecessor (smaller than itself, but for the smallest) and
 * successor(0) (the smallest of all), so normally exactly one node starts the ring; were
 * those both down, two parts of the ring could each start one. Only a node that was in a
 * ring before does this: a first start with --join waits for its --join peers. */
static bool restart_ring(node *n)
{
	if (!n->restarted || n->join_tries < n->ncandidates)
		return false;
	const rn_id *self = ring_self_id(n->ring);
	for (unsigned i = 0; i < n->ncandidates; i++) {
		const candidate *c = &n->candidates[i];
		if (!c->has_id || rn_id_cmp(&c->id, self) >= 0)
			continue;
		ring_addr a = book_intern(n, c->addr);
		if (a != RING_ADDR_NONE && n->peers[a].connected)
			return false; /* a smaller one is up: it starts the ring, or has */
	}
	LOG_W(n, "no peer this node knew is in a ring, and none with a smaller id is up: "
	         "starting the ring again");
	ring_out_reset(&n->out);
	ring_create(n->ring, uv_now(&n->loop), &n->out);
	drain(n);
	return true;
}

static void try_join(node *n)
{
	if (!n->ncandidates || ring_joined(n->ring))
		return;
	const char *addr = n->candidates[n->next_candidate++ % n->ncandidates].addr;
	n->join_tries++;
	ring_addr via = book_intern(n, addr);
	if (via == RING_ADDR_NONE)
		return;
	n->join_tried_at = uv_now(&n->loop);
	LOG_I(n, "joining through %s", addr);
	ring_out_reset(&n->out);
	ring_join(n->ring, uv_now(&n->loop), via, &n->out);
	drain(n);
}

/* Keeps DATA/peers listing the peers this node knows best, for the next start. */
static void save_peers(node *n)
{
	if (!ring_joined(n->ring) || n->stopping)
		return;
	ring_peer list[RING_MAX_SUCC + 2];
	size_t k = ring_successors(n->ring, list, RING_MAX_SUCC);
	ring_peer pred = ring_predecessor(n->ring);
	if (pred.addr != RING_ADDR_NONE)
		list[k++] = pred;
	if (n->anchor.addr != RING_ADDR_NONE)
		list[k++] = n->anchor;
	char text[(RING_MAX_SUCC + 2) * (WIRE_ADDR_MAX + RN_ID_HEX + 1) + 1];
	size_t len = 0;
	for (size_t i = 0; i < k; i++) {
		bool dup = false;
		for (size_t j = 0; j < i && !dup; j++)
			dup = list[j].addr == list[i].addr;
		if (dup || list[i].addr >= n->npeers || list[i].addr == 0)
			continue;
		char hex[RN_ID_HEX];
		rn_id_to_hex(&list[i].id, hex);
		len += (size_t)snprintf(text + len, sizeof text - len, "%s %s\n",
		                        n->peers[list[i].addr].addr, hex);
	}
	text[len] = '\0';
	if (!len || (n->saved_peers && !strcmp(n->saved_peers, text)))
		return;
	char path[512], tmp[520];
	snprintf(path, sizeof path, "%s/peers", n->o->data);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	bool ok = fputs(text, f) >= 0;
	ok = fclose(f) == 0 && ok;
	if (ok && rename(tmp, path) == 0) { /* atomic: a crash leaves the old list or the new */
		free(n->saved_peers);
		n->saved_peers = strdup(text);
	}
}

/* ---- lifecycle ---- */

/* Leaving: stop once every handed-off key is acknowledged, or at the deadline. */
static void leave_check(uv_timer_t *t)
{
	node *n = t->data;
	if (!n->handoffs || uv_now(&n->loop) >= n->leave_deadline) {
		if (n->handoffs)
			LOG_W(n, "leaving with keys not acknowledged by the successor; they stay "
			         "in --data");
		uv_stop(t->loop);
	}
}

static void on_signal(uv_signal_t *s, int sig)
{
	node *n = s->data;
	if (n->stopping)
		return;
	n->stopping = true;
	ring_peer succ = ring_successor(n->ring);
	LOG_I(n, "signal %d: handing %llu keys to %s and leaving the ring", sig,
	      (unsigned long long)(n->st ? store_count(n->st) : 0),
	      succ.addr < n->npeers && succ.addr ? n->peers[succ.addr].addr : "nobody");
	handoff_to(n, succ, true);
	ring_out_reset(&n->out);
	ring_leave(n->ring, uv_now(&n->loop), &n->out);
	drain(n);
	uv_timer_stop(&n->tick);
	n->leave_deadline = uv_now(&n->loop) + LEAVE_WAIT_MS;
	uv_timer_start(&n->snap, leave_check, 50, 50);
}

/* After the peers' connections are closed, what is left: the listener, timers, signals
 * (no memory of their own) and incoming connections (freed by in_closed). */
static void close_walk(uv_handle_t *h, void *arg)
{
	node *n = arg;
	if (uv_is_closing(h))
		return;
	if (h->type == UV_TCP && h != (uv_handle_t *)&n->listener)
		uv_close(h, in_closed);
	else
		uv_close(h, NULL);
}

/* The connection bounds need more descriptors than a default soft limit of 1024 allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = MAX_IN_CONNS + MAX_OUT_CONNS + 1024; /* + HTTP clients, LMDB, logs */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int node_run(const node_opts *o)
{
	raise_fd_limit();
	node *n = calloc(1, sizeof *n);
	if (!n)
		return 1;
	n->o = o;
	n->tick_at = UINT64_MAX;
	n->anchor.addr = RING_ADDR_NONE;
	n->peers = calloc(MAX_PEERS, sizeof *n->peers);
	pthread_mutex_init(&n->lock, NULL);
	n->book = (wire_book){book_name, book_intern, n};
	int exit_code = 1;
	char host[64];
	int port, hport;
	if (!n->peers || node_parse_hostport(o->listen, host, sizeof host, &port) < 0) {
		fprintf(stderr, "ringnet node: --listen '%s' is not HOST:PORT\n", o->listen);
		goto out;
	}
	char hhost[64];
	if (node_parse_hostport(o->http, hhost, sizeof hhost, &hport) < 0) {
		fprintf(stderr, "ringnet node: --http '%s' is not HOST:PORT\n", o->http);
		goto out;
	}
	ring_addr self = book_intern(n, o->listen); /* handle 0 is this node */
	ring_config_default(&n->cfg);
	rn_id id;
	rn_id_hash(&id, o->name, strlen(o->name), n->cfg.bits);
	n->ring = ring_node_new(&n->cfg, &id, self);
	uv_loop_init(&n->loop);
	uv_tcp_init(&n->loop, &n->listener);
	n->listener.data = n;
	int rc = uv_tcp_bind(&n->listener, (const struct sockaddr *)&n->peers[0].sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&n->listener, 128, on_connection);
	if (rc < 0) {
		fprintf(stderr, "ringnet node: cannot listen on %s: %s\n", o->listen,
		        uv_strerror(rc));
		goto out_loop;
	}
	char err[256];
	if (store_open(&n->st, o->data, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet node: %s\n", err);
		goto out_loop;
	}
	uv_async_init(&n->loop, &n->wake, on_wake);
	n->wake.data = n;
	publish(n);
	struct sockaddr_in hsa;
	uv_ip4_addr(hhost, hport, &hsa);
	n->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
	                              MHD_ALLOW_SUSPEND_RESUME,
	                          (uint16_t)hport, NULL, NULL, on_http, n, MHD_OPTION_SOCK_ADDR,
	                          &hsa, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
	                          MHD_OPTION_NOTIFY_COMPLETED, on_http_done, n, MHD_OPTION_END);
	if (!n->mhd) {
		fprintf(stderr, "ringnet node: cannot serve HTTP on %s (port in use?)\n", o->http);
		goto out_loop;
	}
	uv_timer_init(&n->loop, &n->tick);
	n->tick.data = n;
	uv_timer_init(&n->loop, &n->snap);
	n->snap.data = n;
	uv_timer_start(&n->snap, on_snapshot, SNAPSHOT_MS, SNAPSHOT_MS);
	uv_signal_init(&n->loop, &n->sigint);
	uv_signal_init(&n->loop, &n->sigterm);
	n->sigint.data = n->sigterm.data = n;
	uv_signal_start(&n->sigint, on_signal, SIGINT);
	uv_signal_start(&n->sigterm, on_signal, SIGTERM);

	load_candidates(n);
	ring_out_reset(&n->out);
	if (n->ncandidates == 0) {
		ring_create(n->ring, uv_now(&n->loop), &n->out);
		LOG_I(n, "started a new ring at %s (http %s, data %s)", o->listen, o->http,
		      o->data);
	} else {
		try_join(n);
	}
	drain(n);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	exit_code = 0;
out_loop:
	if (n->mhd) {
		/* answer whatever is still waiting before the HTTP thread goes away */
		n->stopping = true;
		if (n->wake.data)
			on_wake(&n->wake);
		kv_expire(n, true);
		MHD_stop_daemon(n->mhd);
	}
	store_close(n->st);
	for (uint32_t i = 0; i < n->npeers; i++)
		drop_connection(&n->peers[i]);
	uv_walk(&n->loop, close_walk, n);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	uv_loop_close(&n->loop);
	ring_node_free(n->ring);
out:
	for (uint32_t i = 0; i < n->npeers; i++) {
		pending *f = n->peers[i].head;
		while (f) {
			pending *next = f->next;
			free_frame(f);
			f = next;
		}
	}
	while (n->handoffs) {
		handoff *h = n->handoffs;
		n->handoffs = h->next;
		free(h->key);
		free(h);
	}
	free(n->candidates);
	free(n->saved_peers);
	free(n->peers);
	free(n->snap_ring);
	free(n->snap_health);
	free(n->snap_metrics);
	free(n->snap_peers);
	pthread_mutex_destroy(&n->lock);
	free(n);
	return exit_code;
}
