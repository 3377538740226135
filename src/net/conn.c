/* conn.c — the node's peer connections (loop thread): the address book that maps a ring_addr
 * to a peer's host:port, sending, receiving and the core's timer. A node opens one outgoing
 * TCP connection per peer address and sends everything for that peer over it; what arrives on
 * connections others opened to us is read, framed and handed to the core (a KvMsg to kv.c). A
 * connect that fails, a connection that drops with messages still queued, or a queue that
 * overflows hands those messages back to the core with ring_on_unreachable: that is how the
 * core learns a peer is gone. At most MAX_OUT_CONNS outgoing connections (the one idle longest
 * is closed to open another); a peer that refused a connect is not tried again before its
 * backoff has passed. What incoming connections and the address book can make the node hold
 * is bounded: see "receiving" and "addresses" below, and docs/security.md. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"

/* One write of up to PEER_OUT_IOV frames to a peer (one writev). */
typedef struct {
	uv_write_t req;
	peer *p;
	uv_tcp_t *tcp;   /* the connection it went out on (p may have a newer one by now) */
	pending *frames; /* in the order written */
	unsigned nframes;
	size_t cost; /* frame_cost of them, for p->wbytes */
} wreq;

/* ---- addresses ----
 *
 * The book holds up to MAX_PEERS addresses, each named by its slot (a ring_addr). Anyone
 * can make a node learn addresses (every frame names some), so when the book is full the
 * BOOK_EVICT least recently seen entries that nothing holds are forgotten and their slots
 * reused: not this node, not a successor, the predecessor, a finger, the anchor or a join
 * candidate, and not a peer with a connection, queued frames or writes under way (nor
 * one in the list of peers to flush).
 * Addresses are compared in their canonical form, "a.b.c.d:port", so "localhost:6001",
 * "127.0.0.1:06001" and "127.0.0.1:6001" are one entry. */

const char *nd_book_name(void *ctx, ring_addr a)
{
	node *n = ctx;
	return a < n->npeers && !n->peers[a].unused ? n->peers[a].addr : NULL;
}

unsigned nd_book_used(const node *n)
{
	return n->npeers - n->nbook_free;
}

static ring_addr book_find(const node *n, const struct sockaddr_in *sa)
{
	for (uint32_t i = 0; i < n->npeers; i++) {
		const peer *p = &n->peers[i];
		if (!p->unused && p->sa.sin_port == sa->sin_port &&
		    p->sa.sin_addr.s_addr == sa->sin_addr.s_addr)
			return i;
	}
	return RING_ADDR_NONE;
}

static void pin(node *n, uint8_t *pinned, ring_addr a)
{
	if (a < n->npeers)
		pinned[a] = 1;
}

typedef struct {
	uint64_t seen;
	uint32_t slot;
} lru_entry;

static int by_seen(const void *a, const void *b)
{
	uint64_t x = ((const lru_entry *)a)->seen, y = ((const lru_entry *)b)->seen;
	return x < y ? -1 : x > y;
}

/* Forgets the BOOK_EVICT least recently seen entries that nothing holds. */
static void book_evict(node *n)
{
	uint8_t *pinned = calloc(n->npeers, 1);
	lru_entry *cand = malloc(n->npeers * sizeof *cand);
	if (!pinned || !cand) {
		free(pinned);
		free(cand);
		return;
	}
	pinned[0] = 1; /* this node */
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	for (size_t i = 0; i < ns; i++)
		pin(n, pinned, succ[i].addr);
	pin(n, pinned, ring_predecessor(n->ring).addr);
	for (unsigned f = 0; f < n->cfg.bits; f++)
		pin(n, pinned, ring_finger(n->ring, f).addr);
	pin(n, pinned, n->anchor.addr);
	for (unsigned i = 0; i < n->ncandidates; i++) { /* the core may be joining through one */
		struct sockaddr_in sa;
		char host[24];
		int port;
		if (node_parse_hostport(n->candidates[i].addr, host, sizeof host, &port) == 0 &&
		    uv_ip4_addr(host, port, &sa) == 0)
			pin(n, pinned, book_find(n, &sa));
	}
	uint32_t nc = 0;
	for (uint32_t i = 1; i < n->npeers; i++) {
		const peer *p = &n->peers[i];
		if (!p->unused && !pinned[i] && !p->tcp && !p->nq && !p->inflight && !p->dirty)
			cand[nc++] = (lru_entry){p->seen, i};
	}
	qsort(cand, nc, sizeof *cand, by_seen);
	uint32_t k = nc < BOOK_EVICT ? nc : BOOK_EVICT;
	for (uint32_t i = 0; i < k; i++) {
		peer *p = &n->peers[cand[i].slot];
		nd_member_forget(n, cand[i].slot);
		auth_session_clear(&p->sess);
		memset(p, 0, sizeof *p);
		p->unused = true;
		n->book_free[n->nbook_free++] = cand[i].slot;
	}
	n->limit_hits[LIM_BOOK_EVICTED] += k; /* counted per entry forgotten */
	if (k)
		nd_log_rl(n, LIM_BOOK_EVICTED, 1,
		          "address book full (%d peers): forgot the %u least recently seen",
		          MAX_PEERS, k);
	free(pinned);
	free(cand);
}

ring_addr nd_book_intern(void *ctx, const char *addr)
{
	node *n = ctx;
	char host[24]; /* an IPv4 address in dotted form fits with room to spare */
	int port;
	struct sockaddr_in sa;
	if (node_parse_hostport(addr, host, sizeof host, &port) < 0 ||
	    uv_ip4_addr(host, port, &sa) != 0)
		return RING_ADDR_NONE;
	ring_addr a = book_find(n, &sa);
	if (a != RING_ADDR_NONE) {
		n->peers[a].seen = ++n->book_clock;
		return a;
	}
	if (!n->nbook_free && n->npeers >= MAX_PEERS)
		book_evict(n);
	if (n->nbook_free)
		a = n->book_free[--n->nbook_free];
	else if (n->npeers < MAX_PEERS)
		a = n->npeers++;
	else {
		nd_limit(n, LIM_BOOK_FULL,
		         "address book full (%d peers, all in use): not learning %s:%d", MAX_PEERS,
		         host, port);
		return RING_ADDR_NONE;
	}
	peer *p = &n->peers[a];
	memset(p, 0, sizeof *p);
	p->node = n;
	snprintf(p->addr, sizeof p->addr, "%s:%d", host, port);
	p->sa = sa;
	p->seen = ++n->book_clock;
	return a;
}

/* ---- sending ---- */

static void hand_back(node *n, pending *f)
{
	n->unreachable++;
	if (f->kind == FRAME_DASH || f->kind == FRAME_IDENT)
		return; /* a stats frame (api.c) or an identity: nothing waits for it */
	if (f->kind == FRAME_MEMBER)
		return; /* to the membership core, a lost message like any other */
	if (f->kind == FRAME_KV) {
		nd_kv_unreachable(n, f->kv_req, f->kv_to);
		return;
	}
	if (f->kind == FRAME_QUERY) {
		nd_query_unreachable(n, f->kv_req, f->kv_to);
		return;
	}
	f->msg.peers = f->peers;
	ring_out_reset(&n->out);
	ring_on_unreachable(n->ring, uv_now(&n->loop), &f->msg, &n->out);
	nd_drain(n);
}

void nd_free_frame(pending *f)
{
	free(f->buf);
	free(f);
}

/* What a frame queued to a peer counts against PEER_OUT_BYTES: its bytes and its record. */
static size_t frame_cost(const pending *f)
{
	return f->len + sizeof *f;
}

void nd_free_frames(pending *f)
{
	while (f) {
		pending *next = f->next;
		nd_free_frame(f);
		f = next;
	}
}

/* Frees the frames from f on, handing each back to its core first when back. */
static void free_frames(node *n, pending *f, bool back)
{
	for (pending *g = f; back && g; g = g->next)
		hand_back(n, g);
	nd_free_frames(f);
}

/* Every queued frame of p goes back to the core as undeliverable. */
static void fail_queue(peer *p)
{
	pending *f = p->head;
	p->head = p->tail = NULL;
	p->nq = 0;
	p->qbytes = 0;
	free_frames(p->node, f, true);
}

static void on_closed(uv_handle_t *h)
{
	free(h);
}

void nd_drop_connection(peer *p)
{
	if (p->tcp) {
		p->node->nout--;
		p->tcp->data = NULL;
		uv_close((uv_handle_t *)p->tcp, on_closed);
	}
	p->tcp = NULL;
	p->connected = false;
	p->authing = false;
}

static void on_write(uv_write_t *req, int status)
{
	wreq *w = (wreq *)req;
	node *n = w->p->node;
	w->p->inflight--;
	w->p->wbytes -= w->cost;
	if (status < 0) {
		/* reset, broken pipe, or cancelled by a close: the frames go back to the
		 * core, and the connection (if it is still this one) is dropped, so that the
		 * next frame opens a fresh one */
		LOG_D(n, "write to %s failed: %s", w->p->addr, uv_strerror(status));
		if (w->p->tcp == w->tcp) {
			nd_drop_connection(w->p);
			fail_queue(w->p);
		}
	} else {
		n->frames_out += w->nframes;
		for (pending *f = w->frames; f; f = f->next)
			n->bytes_out += f->len;
	}
	free_frames(n, w->frames, status < 0);
	free(w);
}

/* Seals f for p's keyed link (the body sealed, its tag after it: auth.h); false when it
 * cannot (out of memory). */
static bool seal_frame(peer *p, pending *f)
{
	uint8_t *q = realloc(f->buf, f->len + AUTH_SEAL);
	if (!q)
		return false;
	f->buf = q;
	if (auth_seal(&p->sess, p->seq_out++, q, f->len, WIRE_HEADER, q + f->len) < 0)
		return false;
	f->len += AUTH_SEAL;
	return true;
}

/* Writes what p has queued, PEER_OUT_IOV frames to a write, in the order queued. A
 * connection that cannot take them is dropped and the frames go back to the cores.
 * The write is tried at once (uv_try_write): when the socket takes it all, as it does
 * unless the peer is slow to read, the frames are done here, with no request, no
 * callback and no change to the socket's epoll registration (uv_write would re-arm it
 * after every write); whatever it does not take goes through uv_write, in order. */
static void flush_peer(peer *p)
{
	node *n = p->node;
	while (p->head && p->tcp && p->connected) {
		uv_buf_t bufs[PEER_OUT_IOV];
		unsigned k = 0;
		size_t cost = 0, bytes = 0;
		pending *f = p->head, *last = NULL;
		for (; f && k < PEER_OUT_IOV; last = f, f = f->next) {
			cost += frame_cost(f);
			if (n->keyed && !seal_frame(p, f))
				break;
			bufs[k++] = uv_buf_init((char *)f->buf, (unsigned)f->len);
			bytes += f->len;
		}
		if (f && k < PEER_OUT_IOV) { /* out of memory; the stream has a gap */
			nd_drop_connection(p);
			fail_queue(p);
			return;
		}
		/* the first k frames leave the queue for the write */
		pending *frames = p->head;
		p->head = f;
		if (!f)
			p->tail = NULL;
		last->next = NULL;
		p->nq -= k;
		p->qbytes -= cost;
		int done = uv_try_write((uv_stream_t *)p->tcp, bufs, k);
		if (done > 0 && (size_t)done == bytes) {
			n->peer_writes++;
			n->frames_out += k;
			n->bytes_out += bytes;
			free_frames(n, frames, false);
			continue;
		}
		/* the rest (an error, too, is left for uv_write to report in on_write) */
		unsigned s = 0;
		for (size_t left = done > 0 ? (size_t)done : 0; left;) {
			size_t take = left < bufs[s].len ? left : bufs[s].len;
			bufs[s].base += take;
			bufs[s].len -= (unsigned)take;
			left -= take;
			if (!bufs[s].len)
				s++;
		}
		wreq *w = malloc(sizeof *w);
		if (w) {
			w->p = p;
			w->tcp = p->tcp;
			w->frames = frames;
			w->nframes = k;
			w->cost = cost;
		}
		int rc = w ? uv_write(&w->req, (uv_stream_t *)p->tcp, bufs + s, k - s, on_write)
		           : UV_ENOMEM;
		if (rc < 0) {
			LOG_D(n, "cannot write to %s: %s", p->addr, uv_strerror(rc));
			nd_drop_connection(p);
			free_frames(n, frames, true);
			free(w);
			fail_queue(p);
			return;
		}
		p->inflight++;
		p->wbytes += cost;
		n->peer_writes++;
	}
}

/* Every peer with frames queued gets them in one write. */
static void flush_dirty(node *n)
{
	while (n->ndirty) { /* a hand-back may queue more (to other peers) */
		peer *p = &n->peers[n->dirty[--n->ndirty]];
		p->dirty = false;
		if (!p->unused)
			flush_peer(p);
	}
}

/* The end of a loop iteration (before it polls, and after): the frames that claim
 * nothing go out first, so that the replicas' commits run beside this node's; then the
 * iteration's batch commits and what it held is written too. */
static void iteration_end(node *n)
{
	flush_dirty(n);
	nd_batch_iter_close(n);
	flush_dirty(n);
}

static void on_flush_prep(uv_prepare_t *h)
{
	iteration_end(h->data);
}

static void on_flush_check(uv_check_t *h)
{
	iteration_end(h->data);
}

void nd_conn_start(node *n)
{
	n->peer_out_max = n->peer_out_max ? n->peer_out_max : PEER_OUT_BYTES;
	uv_prepare_init(&n->loop, &n->flush_prep);
	uv_check_init(&n->loop, &n->flush_check);
	n->flush_prep.data = n->flush_check.data = n;
	uv_prepare_start(&n->flush_prep, on_flush_prep);
	uv_check_start(&n->flush_check, on_flush_check);
	/* they must not keep the loop alive at shutdown */
	uv_unref((uv_handle_t *)&n->flush_prep);
	uv_unref((uv_handle_t *)&n->flush_check);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)h;
	static char discard[4096]; /* outgoing connections carry nothing back but a nonce */
	(void)hint;
	*b = uv_buf_init(discard, sizeof discard);
}

/* The connection is ready: what waited for it goes out now. */
static void flush_queue(peer *p)
{
	p->connected = true;
	flush_peer(p);
}

typedef struct {
	uv_write_t req;
	uint8_t buf[AUTH_HELLO];
} hello_req;

static void on_hello_written(uv_write_t *req, int status)
{
	(void)status; /* a failure shows as a failed frame write or a closed connection */
	free(req);
}

int nd_write_auth_hello(node *n, uv_stream_t *s, const uint8_t na[AUTH_NONCE], const char *acceptor,
                        auth_session *sess)
{
	hello_req *h = malloc(sizeof *h);
	if (!h || auth_random(h->buf, AUTH_NONCE) < 0) {
		free(h);
		return -1;
	}
	auth_session_clear(sess); /* the session of a connection before, if any */
	auth_session_init(sess, n->key, na, h->buf, acceptor);
	auth_hello_tag(sess, h->buf + AUTH_NONCE);
	uv_buf_t b = uv_buf_init((char *)h->buf, sizeof h->buf);
	if (uv_write(&h->req, s, &b, 1, on_hello_written) < 0) {
		free(h);
		return -1;
	}
	return 0;
}

/* The acceptor's nonce is in: answer with ours and the proof that we know the key. */
static void send_hello(peer *p)
{
	p->seq_out = 0;
	p->authing = false;
	pending *id = NULL; /* with --peer-cert, who this node is comes first */
	if (nd_write_auth_hello(p->node, (uv_stream_t *)p->tcp, p->na, p->addr, &p->sess) < 0 ||
	    (p->node->ident && !(id = nd_ident_frame(p->node, &p->sess)))) {
		nd_drop_connection(p);
		fail_queue(p);
		return;
	}
	if (id) { /* first on the stream, ahead of what waited for the connection */
		id->next = p->head;
		p->head = id;
		if (!p->tail)
			p->tail = id;
		p->nq++;
		p->qbytes += frame_cost(id);
	}
	flush_queue(p);
}

static void on_out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	peer *p = s->data;
	if (!p)
		return;
	if (nread < 0) {
		LOG_D(p->node, "connection to %s closed: %s", p->addr, uv_strerror((int)nread));
		nd_drop_connection(p);
		fail_queue(p);
		return;
	}
	if (!p->node->keyed && nread > 0) { /* only a keyed acceptor says anything: its nonce */
		nd_log_rl(
		    p->node, LOG_AUTH, 0,
		    "the peer at %s asks for the cluster key (it opened with a handshake) and "
		    "this node has none: it cannot join that ring; start it with --key FILE, "
		    "the ring's key",
		    p->addr);
		return;
	}
	if (p->authing && nread > 0) {
		size_t k = AUTH_NONCE - p->nna;
		if ((size_t)nread < k)
			k = (size_t)nread;
		memcpy(p->na + p->nna, b->base, k);
		p->nna += (unsigned)k;
		if (p->nna == AUTH_NONCE)
			send_hello(p);
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
		nd_drop_connection(p);
		connect_failed(p, uv_now(&n->loop));
		fail_queue(p);
		return;
	}
	p->backoff_ms = 0;
	uv_read_start((uv_stream_t *)p->tcp, alloc_cb, on_out_read);
	if (n->keyed) { /* frames wait for the acceptor's nonce (auth.h) */
		p->authing = true;
		p->nna = 0;
		p->connect_at = uv_now(&n->loop);
		return;
	}
	flush_queue(p);
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
		nd_drop_connection(oldest);
	}
}

void nd_send_frame(node *n, ring_addr to, pending *f)
{
	if (nd_batch_hold(n, to, f))
		return; /* it may acknowledge a write that is not on disk yet */
	peer *p = &n->peers[to];
	if (p->unused) { /* a forgotten address: nothing should name it any more */
		hand_back(n, f);
		nd_free_frame(f);
		return;
	}
	p->used_at = uv_now(&n->loop);
	p->seen = ++n->book_clock;
	uint64_t now = uv_now(&n->loop);
	size_t cost = frame_cost(f);
	if (p->qbytes + p->wbytes + cost > n->peer_out_max) {
		/* a peer that does not read what it is sent holds no more than this */
		nd_limit(n, LIM_PEER_OUT,
		         "%zu bytes queued or unwritten to %s (at most %zu): refusing frames to it",
		         p->qbytes + p->wbytes, p->addr, n->peer_out_max);
		hand_back(n, f);
		nd_free_frame(f);
		return;
	}
	if (!p->connected && (p->nq >= MAX_QUEUE ||
	                      (!p->tcp && p->backoff_ms && now - p->failed_at < p->backoff_ms))) {
		hand_back(n, f); /* queue full, or it refused us a moment ago */
		nd_free_frame(f);
		return;
	}
	f->next = NULL;
	if (p->tail)
		p->tail->next = f;
	else
		p->head = f;
	p->tail = f;
	p->nq++;
	p->qbytes += cost;
	if (p->connected) { /* written at the end of this loop iteration (flush_dirty) */
		if (!p->dirty) {
			p->dirty = true;
			n->dirty[n->ndirty++] = to;
		}
		return;
	}
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
	struct sockaddr_in src = n->peers[0].sa; /* from the --listen address (sender_ok) */
	src.sin_port = 0;
	uv_tcp_bind(p->tcp, (const struct sockaddr *)&src, 0);
	if (uv_tcp_connect(&p->connect, p->tcp, (const struct sockaddr *)&p->sa, on_connect) < 0) {
		nd_drop_connection(p);
		connect_failed(p, now);
		fail_queue(p);
	}
}

/* ---- timers ---- */

static void on_tick(uv_timer_t *t)
{
	node *n = t->data;
	n->tick_at = UINT64_MAX;
	ring_out_reset(&n->out);
	ring_tick(n->ring, uv_now(&n->loop), &n->out);
	nd_drain(n);
}

void nd_arm_timer(node *n, uint64_t at)
{
	if (at >= n->tick_at)
		return;
	uint64_t now = uv_now(&n->loop);
	n->tick_at = at;
	uv_timer_start(&n->tick, on_tick, at > now ? at - now : 0, 0);
}

/* ---- receiving ----
 *
 * Every incoming connection reads into the node's one read buffer; whole frames are
 * handled from there and only a partial frame at the end is copied to the connection's
 * own buffer. What a stranger can make the node hold this way is bounded: a frame begun
 * must be whole within FRAME_READ_MS, a connection that sends no frame for IN_IDLE_MS is
 * closed, partial frames over IN_BUF_SMALL count against IN_BUF_TOTAL across all
 * connections, one address has at most IN_PER_ADDR connections, and at MAX_IN_CONNS a new
 * connection replaces the oldest one that has not sent a whole frame yet (peers that talk
 * keep their slots). */

static void in_unlink(inconn *c)
{
	node *n = c->node;
	if (!c->listed)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		n->inconns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->listed = false;
	n->nin--;
}

void nd_in_closed(uv_handle_t *h)
{
	inconn *c = (inconn *)h;
	in_unlink(c);
	c->node->in_buffered -= c->cap;
	auth_session_clear(&c->sess);
	free(c->buf);
	free(c);
}

static void in_close(inconn *c)
{
	in_unlink(c);
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, nd_in_closed);
}

static void in_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	inconn *c = (inconn *)h;
	*b = uv_buf_init((char *)c->node->rbuf, sizeof c->node->rbuf);
}

/* Appends k bytes of a partial frame to c's buffer; false when the bound on buffered
 * bytes refuses them. */
static bool in_keep(inconn *c, const uint8_t *data, size_t k)
{
	node *n = c->node;
	size_t need = c->len + k;
	if (need > c->cap) {
		size_t cap = c->cap * 2 > need ? c->cap * 2 : need;
		if (cap > WIRE_HEADER + WIRE_MAX_FRAME + IN_READ_CHUNK)
			cap = need; /* a frame and one read at most; consume() refuses longer */
		if (need <= IN_BUF_SMALL && cap > IN_BUF_SMALL)
			cap = IN_BUF_SMALL; /* what is always allowed is not doubled past it */
		if (cap > IN_BUF_SMALL && n->in_buffered - c->cap + cap > IN_BUF_TOTAL) {
			nd_limit(n, LIM_IN_BUFFER,
			         "partial frames on peer connections hold %zu bytes (at most %u): "
			         "closing a connection that wants %zu more",
			         n->in_buffered, IN_BUF_TOTAL, cap - c->cap);
			return false;
		}
		uint8_t *q = realloc(c->buf, cap);
		if (!q)
			return false;
		n->in_buffered += cap - c->cap;
		c->buf = q;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, k);
	c->len = need;
	return true;
}

/* Handles every whole frame in the buffer; false when the peer sent garbage. */
/* A frame's claimed sender must listen on the address its connection came from: a
 * stranger cannot speak for another host's node (its answers would go there). Outgoing
 * connections are bound to the node's --listen address so that its own frames pass. */
static bool sender_ok(inconn *c, ring_addr from)
{
	node *n = c->node;
	if (n->ident && from != RING_ADDR_NONE) { /* --peer-cert: the very node it proved */
		if (c->ident_ok && from == c->ident)
			return true;
		n->spoofed++;
		nd_log_rl(n, LOG_BAD_FRAME, 1,
		          "a frame claims to be from %s but its connection proved to be %s: "
		          "closing that connection",
		          from < n->npeers ? n->peers[from].addr : "?",
		          c->ident_ok ? n->peers[c->ident].addr : "nobody yet");
		return false;
	}
	if (from == RING_ADDR_NONE || from >= n->npeers ||
	    n->peers[from].sa.sin_addr.s_addr == c->ip)
		return true;
	char got[INET_ADDRSTRLEN] = "?";
	inet_ntop(AF_INET, &c->ip, got, sizeof got);
	n->spoofed++;
	nd_log_rl(n, LOG_BAD_FRAME, 1,
	          "a frame claims to be from %s but came from %s: closing that connection",
	          n->peers[from].addr, got);
	return false;
}

static bool member_sender_ok(void *c, ring_addr from)
{
	return sender_ok(c, from);
}

static bool consume(inconn *c)
{
	node *n = c->node;
	size_t off = 0;
	while (c->len - off >= WIRE_HEADER) {
		uint32_t blen;
		uint8_t type;
		if (wire_header(c->buf + off, &blen, &type) < 0 ||
		    (type != WIRE_RING && type != WIRE_KV && type != WIRE_CAST &&
		     type != WIRE_QUERY && type != WIRE_STATS && type != WIRE_MEMBER &&
		     type != WIRE_IDENT))
			return false;
		if (c->len - off < WIRE_HEADER + (size_t)blen)
			break;
		if (type == WIRE_IDENT) { /* peer_ident.c: ignored by a node without --peer-cert */
			if (n->ident && (c->ident_ok ||
			                 !nd_ident_check(n, c, c->buf + off + WIRE_HEADER, blen)))
				return false;
			off += WIRE_HEADER + blen;
			continue;
		}
		if (n->ident && !c->ident_ok && type != WIRE_CAST) {
			n->auth_failed++;
			nd_log_rl(
			    n, LOG_AUTH, 1,
			    "a peer sent frames before proving who it is (--peer-cert): closing "
			    "that connection");
			return false;
		}
		if (type == WIRE_STATS) { /* the dashboard's (api.c) */
			wire_stats st;
			if (wire_decode_stats(c->buf + off + WIRE_HEADER, blen, &n->book, &st) <
			        0 ||
			    !sender_ok(c, st.from))
				return false; /* (an ask naming another host would reflect the tell)
				               */
			n->frames_in++;
			nd_dash_on_stats(n, &st);
			off += WIRE_HEADER + blen;
			continue;
		}
		if (type == WIRE_MEMBER) {
			if (!nd_member_on_frame(n, c->buf + off + WIRE_HEADER, blen,
			                        member_sender_ok, c))
				return false;
			off += WIRE_HEADER + blen;
			continue;
		}
		if (type == WIRE_QUERY) {
			if (nd_query_on_frame(n, c->buf + off + WIRE_HEADER, blen, member_sender_ok,
			                      c) < 0)
				return false;
			n->frames_in++;
			off += WIRE_HEADER + blen;
			continue;
		}
		if (type == WIRE_CAST) { /* a cast link: its socket goes to cast.c */
			c->handed = !c->proven && off == 0 &&
			            nd_cast_accept(n, &c->tcp, c->buf + WIRE_HEADER, blen,
			                           n->keyed ? &c->sess : NULL, c->seq_in);
			return false;
		}
		if (type == WIRE_KV) {
			wire_kv kv;
			if (wire_decode_kv(c->buf + off + WIRE_HEADER, blen, &n->book, &kv) < 0)
				return false;
			if (!sender_ok(c, kv.m.from.addr)) {
				wire_kv_free(&kv);
				return false;
			}
			n->frames_in++;
			traffic_count(&n->tr, traffic_kv_type(kv.m.type), TR_IN,
			              WIRE_HEADER + blen);
			nd_kv_on_frame(n, &kv.m);
			wire_kv_free(&kv);
			off += WIRE_HEADER + blen;
			continue;
		}
		ring_msg m;
		ring_peer peers[RING_MAX_SUCC];
		if (wire_decode_ring(c->buf + off + WIRE_HEADER, blen, &n->book, &m, peers) < 0 ||
		    !sender_ok(c, m.from.addr))
			return false;
		if (n->ident && m.from.addr != RING_ADDR_NONE &&
		    !rn_id_eq(&m.from.id, &c->ident_id)) {
			n->spoofed++; /* the id is SHA-1 of the name its certificate gives */
			nd_log_rl(
			    n, LOG_BAD_FRAME, 1,
			    "a ring frame from %s claims an id that is not its certificate's: "
			    "closing that connection",
			    n->peers[m.from.addr].addr);
			return false;
		}
		m.to = 0;
		if (m.from.addr != RING_ADDR_NONE && m.from.addr < n->npeers)
			n->peers[m.from.addr].backoff_ms =
			    0; /* it is up again: connect when needed */
		n->frames_in++;
		n->msgs_in[m.type]++;
		traffic_count(&n->tr, traffic_ring_type(m.type), TR_IN, WIRE_HEADER + blen);
		nd_dash_learn(n, &m);
		ring_out_reset(&n->out);
		ring_on_msg(n->ring, uv_now(&n->loop), &m, &n->out);
		nd_drain(n);
		off += WIRE_HEADER + blen;
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
	return true;
}

enum { IN_OK, IN_BAD, IN_AUTH };

/* Hands consume() the bytes at buf (len of them) as if they were c's buffer. */
static bool consume_at(inconn *c, uint8_t *buf, size_t *len)
{
	uint8_t *own = c->buf;
	size_t own_len = c->len;
	c->buf = buf;
	c->len = *len;
	bool ok = consume(c);
	*len = c->len;
	c->buf = own;
	c->len = own_len;
	return ok;
}

/* Handles every whole frame at buf and moves what is left to its start (*left bytes).
 * With a cluster key, the connection's hello comes first and each frame is checked
 * against its tag before consume() sees it. IN_OK, IN_BAD (a malformed frame) or IN_AUTH
 * (a wrong hello or tag). */
static int in_frames(inconn *c, uint8_t *buf, size_t len, size_t *left)
{
	node *n = c->node;
	if (!n->keyed) {
		*left = len;
		return consume_at(c, buf, left) ? IN_OK : IN_BAD; /* consume() moves the rest */
	}
	size_t off = 0;
	int rc = IN_OK;
	uint8_t tag[AUTH_TAG];
	if (!c->authed && len >= AUTH_HELLO) {
		auth_session_init(&c->sess, n->key, c->na, buf, n->peers[0].addr);
		auth_hello_tag(&c->sess, tag);
		if (!auth_tag_eq(tag, buf + AUTH_NONCE))
			return IN_AUTH;
		c->authed = true;
		off = AUTH_HELLO;
	}
	while (c->authed && len - off >= WIRE_HEADER) {
		uint32_t blen;
		uint8_t type;
		if (wire_header(buf + off, &blen, &type) < 0)
			return IN_BAD;
		size_t flen = WIRE_HEADER + (size_t)blen;
		if (len - off < flen + AUTH_SEAL)
			break;
		if (!auth_open(&c->sess, c->seq_in, buf + off, flen, WIRE_HEADER, buf + off + flen))
			return IN_AUTH;
		c->seq_in++;
		size_t one = flen;
		if (!consume_at(c, buf + off, &one))
			return IN_BAD;
		off += flen + AUTH_SEAL;
	}
	memmove(buf, buf + off, len - off);
	*left = len - off;
	return rc;
}

static void in_read_frames(inconn *c, ssize_t nread, const uv_buf_t *b);

static void in_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	inconn *c = (inconn *)s;
	node *n = c->node;
	if (nread < 0) {
		in_close(c);
		return;
	}
	if (nread == 0)
		return;
	/* every frame of this iteration's reads, one store commit (see nd_batch_iter) */
	nd_batch_iter(n);
	in_read_frames(c, nread, b);
}

static void in_read_frames(inconn *c, ssize_t nread, const uv_buf_t *b)
{
	node *n = c->node;
	n->bytes_in += (uint64_t)nread;
	uint64_t frames = n->frames_in, now = uv_now(&n->loop);
	bool ok = true;
	int rc = IN_OK;
	size_t left = 0;
	if (!c->len) {
		/* between frames: handle the whole ones where they are, keep the rest */
		rc = in_frames(c, (uint8_t *)b->base, (size_t)nread, &left);
		if (rc == IN_OK && left)
			ok = in_keep(c, (const uint8_t *)b->base, left);
	} else {
		ok = in_keep(c, (const uint8_t *)b->base, (size_t)nread);
		if (ok)
			rc = in_frames(c, c->buf, c->len, &left);
		if (ok && rc == IN_OK)
			c->len = left;
	}
	if (rc == IN_BAD && c->handed) {
		/* not garbage: the socket lives on in cast.c */
	} else if (rc == IN_BAD) {
		n->bad_frames++;
		nd_log_rl(n, LOG_BAD_FRAME, 1,
		          "malformed frame from a peer connection: closing that connection");
	} else if (rc == IN_AUTH) {
		n->auth_failed++;
		nd_log_rl(n, LOG_AUTH, 1,
		          "a peer connection does not know the cluster key (wrong hello or frame "
		          "tag): closing it");
	}
	if (rc != IN_OK || !ok) {
		in_close(c);
		return;
	}
	if (n->frames_in != frames) {
		c->proven = true;
		c->active_at = now;
	}
	if (!c->len) {
		c->begun_at = 0;
		n->in_buffered -= c->cap; /* between frames a connection holds nothing */
		free(c->buf);
		c->buf = NULL;
		c->cap = 0;
	} else if (!c->begun_at || n->frames_in != frames) {
		c->begun_at = now; /* a new frame began in this read */
	}
}

void nd_on_connection(uv_stream_t *server, int status)
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
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, nd_in_closed);
		return;
	}
	struct sockaddr_storage ss;
	int sslen = sizeof ss;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0 &&
	    ss.ss_family == AF_INET)
		c->ip = ((struct sockaddr_in *)&ss)->sin_addr.s_addr;
	char ip[INET_ADDRSTRLEN];
	uv_inet_ntop(AF_INET, &c->ip, ip, sizeof ip);
	unsigned same = 0;
	inconn *oldest = NULL; /* the oldest connection that has not sent a whole frame */
	for (inconn *o = n->inconns; o; o = o->next) {
		same += o->ip == c->ip;
		if (!o->proven && (!oldest || o->active_at < oldest->active_at))
			oldest = o;
	}
	if (same >= IN_PER_ADDR) {
		n->refused_conns++;
		nd_limit(n, LIM_IN_PER_ADDR,
		         "%u peer connections from %s already (at most %d): closing new ones", same,
		         ip, IN_PER_ADDR);
		uv_close((uv_handle_t *)&c->tcp, nd_in_closed);
		return;
	}
	if (n->nin >= MAX_IN_CONNS) {
		if (!oldest) {
			n->refused_conns++;
			nd_limit(n, LIM_IN_FULL,
			         "%d peer connections, all of them talking: closing new ones",
			         MAX_IN_CONNS);
			uv_close((uv_handle_t *)&c->tcp, nd_in_closed);
			return;
		}
		nd_limit(n, LIM_IN_REPLACED,
		         "%d peer connections: closing the oldest that has sent no frame to make "
		         "room",
		         MAX_IN_CONNS);
		in_close(oldest);
	}
	if (n->keyed) { /* the handshake's first step (auth.h): 16 bytes fit any fresh socket */
		uv_buf_t nb = uv_buf_init((char *)c->na, AUTH_NONCE);
		if (auth_random(c->na, AUTH_NONCE) < 0 ||
		    uv_try_write((uv_stream_t *)&c->tcp, &nb, 1) != AUTH_NONCE) {
			uv_close((uv_handle_t *)&c->tcp, nd_in_closed);
			return;
		}
	}
	c->active_at = uv_now(&n->loop);
	c->next = n->inconns;
	if (c->next)
		c->next->prev = c;
	n->inconns = c;
	c->listed = true;
	n->nin++;
	uv_read_start((uv_stream_t *)&c->tcp, in_alloc, in_read);
}

void nd_conn_sweep(node *n)
{
	uint64_t now = uv_now(&n->loop);
	if (now - n->in_swept_at < IN_SWEEP_MS)
		return;
	n->in_swept_at = now;
	for (uint32_t i = 1; n->keyed && i < n->npeers; i++) {
		peer *p = &n->peers[i];
		if (p->tcp && p->authing && now - p->connect_at >= AUTH_WAIT_MS) {
			nd_log_rl(n, LOG_AUTH, 1,
			          "%s sent no handshake within %d s (no cluster key, or not a "
			          "ringnet node?): giving up on it",
			          p->addr, AUTH_WAIT_MS / 1000);
			nd_drop_connection(p);
			connect_failed(p, now);
			fail_queue(p);
		}
	}
	for (inconn *c = n->inconns, *next; c; c = next) {
		next = c->next;
		if (c->begun_at && now - c->begun_at >= FRAME_READ_MS) {
			nd_limit(n, LIM_FRAME_TIMEOUT,
			         "a frame on a peer connection not whole after %d s (%zu bytes "
			         "so far): closing it",
			         FRAME_READ_MS / 1000, c->len);
			in_close(c);
		} else if (!c->begun_at && now - c->active_at >= IN_IDLE_MS) {
			nd_limit(n, LIM_IN_IDLE,
			         "a peer connection sent no frame for %d s: closing it",
			         IN_IDLE_MS / 1000);
			in_close(c);
		}
	}
}
