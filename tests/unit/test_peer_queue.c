/* test_peer_queue.c — conn.c's sending path on a real libuv loop and real loopback sockets:
 * frames to one peer queued in a loop iteration go out in one write (writev) at its end,
 * in order; what a peer that does not read can make the node hold is bounded.
 *
 * The node is a bare struct (no ring, no cores): frames are FRAME_KV, so a frame conn.c
 * hands back lands in the node's deferred kv queue (kvq) with its request id, which is the
 * frame's sequence number. The oracle is the list of every frame sent: the receiver must
 * get exactly those not handed back, in the order sent, with no frame twice. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/rng.h"
#include "net/node_internal.h"

typedef struct {
	node *n;
	node_opts o;
	uv_tcp_t server, *accepted;
	bool reading;
	uint8_t *got; /* the bytes received */
	size_t ngot, capgot;
	rn_rng r;
	unsigned rounds, round, max_frames, max_body;
	uint64_t seq; /* frames sent */
	size_t *lens; /* the bytes of frame s, s from 1 */
	size_t caplens;
	uint64_t bound_writes; /* at most this many writes: one per PEER_OUT_IOV of a round */
	ring_addr to;
	uv_timer_t timer;
	bool over_bound; /* qbytes + wbytes was once above the bound */
} rig;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	rig *t = h->data;
	(void)hint;
	if (t->capgot - t->ngot < 65536) {
		t->capgot = t->capgot * 2 + 65536;
		t->got = realloc(t->got, t->capgot);
		assert_non_null(t->got);
	}
	*b = uv_buf_init((char *)t->got + t->ngot, (unsigned)(t->capgot - t->ngot));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	rig *t = s->data;
	(void)b;
	if (nread > 0)
		t->ngot += (size_t)nread;
}

static void on_conn(uv_stream_t *srv, int status)
{
	rig *t = srv->data;
	assert_int_equal(status, 0);
	assert_null(t->accepted); /* one connection per peer */
	t->accepted = malloc(sizeof *t->accepted);
	uv_tcp_init(srv->loop, t->accepted);
	t->accepted->data = t;
	assert_int_equal(uv_accept(srv, (uv_stream_t *)t->accepted), 0);
	if (t->reading)
		uv_read_start((uv_stream_t *)t->accepted, on_alloc, on_read);
}

/* A frame: header, then its sequence number, then filler of a size the seed picks. */
static void send_one(rig *t)
{
	pending *f = calloc(1, sizeof *f);
	assert_non_null(f);
	uint64_t s = ++t->seq; /* from 1: a hand-back names it in kvq */
	uint32_t body = 8 + (uint32_t)rn_rng_below(&t->r, t->max_body);
	f->len = WIRE_HEADER + body;
	f->buf = malloc(f->len);
	assert_non_null(f->buf);
	uint32_t wl = body + 1; /* the length counts the type byte */
	f->buf[0] = (uint8_t)(wl >> 24);
	f->buf[1] = (uint8_t)(wl >> 16);
	f->buf[2] = (uint8_t)(wl >> 8);
	f->buf[3] = (uint8_t)wl;
	f->buf[4] = WIRE_KV;
	memcpy(f->buf + WIRE_HEADER, &s, 8);
	memset(f->buf + WIRE_HEADER + 8, (int)(s & 0xff), body - 8);
	f->kind = FRAME_KV;
	f->kv_req = s;
	f->kv_to = t->to;
	if (s >= t->caplens) {
		t->caplens = t->caplens * 2 + 1024;
		t->lens = realloc(t->lens, t->caplens * sizeof *t->lens);
		assert_non_null(t->lens);
	}
	t->lens[s] = f->len;
	nd_send_frame(t->n, t->to, f);
}

static void check_bound(rig *t)
{
	peer *p = &t->n->peers[t->to];
	if (p->qbytes + p->wbytes > t->n->peer_out_max)
		t->over_bound = true;
}

/* One loop iteration's sending: a burst of frames, flushed at the iteration's end. */
static void on_round(uv_timer_t *tm)
{
	rig *t = tm->data;
	if (t->round == t->rounds)
		return; /* the timer goes on ticking: see run_until */
	unsigned k = 1 + (unsigned)rn_rng_below(&t->r, t->max_frames);
	for (unsigned i = 0; i < k; i++) {
		send_one(t);
		check_bound(t);
	}
	t->bound_writes += (k + PEER_OUT_IOV - 1) / PEER_OUT_IOV;
	t->round++;
}

static void rig_init(rig *t, uint64_t seed, bool reading)
{
	memset(t, 0, sizeof *t);
	rn_rng_seed(&t->r, seed);
	t->reading = reading;
	t->o.log_level = 0;
	snprintf(t->o.name, sizeof t->o.name, "queue-test");
	node *n = t->n = calloc(1, sizeof *n);
	assert_non_null(n);
	n->o = &t->o;
	n->peers = calloc(MAX_PEERS, sizeof *n->peers);
	n->book_free = calloc(MAX_PEERS, sizeof *n->book_free);
	n->tick_at = UINT64_MAX;
	uv_loop_init(&n->loop);
	nd_conn_start(n);
	assert_int_equal(nd_book_intern(n, "127.0.0.1:1"), 0); /* this node: slot 0 */
	uv_tcp_init(&n->loop, &t->server);
	t->server.data = t;
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	assert_int_equal(uv_tcp_bind(&t->server, (struct sockaddr *)&sa, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&t->server, 8, on_conn), 0);
	int len = sizeof sa;
	uv_tcp_getsockname(&t->server, (struct sockaddr *)&sa, &len);
	char addr[32];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
	t->to = nd_book_intern(n, addr);
	assert_int_equal(t->to, 1);
	uv_timer_init(&n->loop, &t->timer);
	t->timer.data = t;
}

static void close_cb(uv_handle_t *h)
{
	(void)h;
}

static void free_cb(uv_handle_t *h)
{
	free(h);
}

static void rig_free(rig *t)
{
	node *n = t->n;
	nd_drop_connection(&n->peers[t->to]);
	uv_close((uv_handle_t *)&t->server, close_cb);
	uv_close((uv_handle_t *)&t->timer, close_cb);
	if (t->accepted)
		uv_close((uv_handle_t *)t->accepted, free_cb);
	uv_close((uv_handle_t *)&n->flush_prep, close_cb);
	uv_close((uv_handle_t *)&n->flush_check, close_cb);
	uv_run(&n->loop, UV_RUN_DEFAULT); /* the cancelled writes hand their frames back */
	assert_int_equal(uv_loop_close(&n->loop), 0);
	nd_free_frames(n->peers[t->to].head);
	free(n->kvq);
	free(n->peers);
	free(n->book_free);
	free(n);
	free(t->got);
	free(t->lens);
}

/* The frames received, checked against the oracle: every sequence number from 1 to
 * t->seq that was not handed back, in order. Returns how many. */
static uint64_t check_received(rig *t, size_t nback_at_check)
{
	uint8_t *back = calloc(t->seq + 1, 1);
	for (size_t i = 0; i < nback_at_check; i++) {
		uint64_t req = t->n->kvq[i].req;
		assert_true(req >= 1 && req <= t->seq);
		assert_false(back[req]); /* handed back once */
		back[req] = 1;
	}
	uint64_t want = 1, frames = 0;
	size_t off = 0;
	while (off < t->ngot) {
		assert_true(t->ngot - off >= WIRE_HEADER + 8);
		uint32_t blen;
		uint8_t type;
		assert_int_equal(wire_header(t->got + off, &blen, &type), 0);
		assert_int_equal(type, WIRE_KV);
		assert_true(t->ngot - off >= WIRE_HEADER + (size_t)blen);
		uint64_t s;
		memcpy(&s, t->got + off + WIRE_HEADER, 8);
		while (want <= t->seq && back[want])
			want++;
		assert_int_equal(s, want); /* in order, none lost, none twice */
		for (uint32_t i = 8; i < blen; i++)
			assert_int_equal(t->got[off + WIRE_HEADER + i], (uint8_t)(s & 0xff));
		want++;
		frames++;
		off += WIRE_HEADER + blen;
	}
	while (want <= t->seq && back[want])
		want++;
	assert_true(want == t->seq + 1); /* every frame not handed back arrived */
	free(back);
	return frames;
}

/* Loop iterations until done. The round timer ticks to the end of the test: a peer that
 * does not read gives the loop no I/O, and a timer that stopped in the callback run at the
 * start of an iteration would leave that iteration's poll waiting for ever. */
static void run_until(rig *t, bool (*done)(rig *t))
{
	for (unsigned i = 0; i < 2000000 && !done(t); i++)
		uv_run(&t->n->loop, UV_RUN_ONCE);
	assert_true(done(t));
}

/* The bytes of the frames not handed back: what the reader must end up with. */
static size_t kept_bytes(rig *t)
{
	size_t sum = 0;
	for (uint64_t s = 1; s <= t->seq; s++)
		sum += t->lens[s];
	for (size_t i = 0; i < t->n->kvq_len; i++)
		sum -= t->lens[t->n->kvq[i].req];
	return sum;
}

static bool all_read(rig *t)
{
	return t->ngot >= kept_bytes(t);
}

static bool all_in(rig *t)
{
	peer *p = &t->n->peers[t->to];
	return t->round == t->rounds && !p->nq && !p->inflight &&
	       t->n->frames_out == t->seq - t->n->kvq_len;
}

/* A reader: nothing handed back, frames in order, far fewer writes than frames. */
static void test_coalesced_in_order(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++) {
		rig t;
		rig_init(&t, seed, true);
		t.rounds = 200;
		t.max_frames = 150; /* some rounds need more than one writev */
		t.max_body = seed == 4 ? 20000 : 300;
		uv_timer_start(&t.timer, on_round, 0, 1);
		run_until(&t, all_in);
		run_until(&t, all_read); /* everything written: until it has arrived */
		assert_int_equal(t.n->kvq_len, 0);
		assert_int_equal(check_received(&t, 0), t.seq);
		assert_int_equal(t.n->frames_out, t.seq);
		assert_true(t.n->peer_writes <= t.bound_writes);
		assert_true(t.n->peer_writes * 10 < t.seq); /* ~75 frames a round */
		assert_false(t.over_bound);
		rig_free(&t);
	}
}

static bool rounds_done(rig *t)
{
	return t->round == t->rounds;
}

/* A peer that accepts and never reads: the node holds at most peer_out_max for it, hands
 * the rest back (each frame once), and once the peer reads, what was kept arrives whole
 * and in order. */
static void test_slow_peer_bounded(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 2; seed++) {
		rig t;
		rig_init(&t, seed, false);
		t.n->peer_out_max = 1u << 20;
		t.rounds = 600;
		t.max_frames = 8;
		t.max_body = 65536; /* about 80 MiB offered: far more than the kernel buffers */
		uv_timer_start(&t.timer, on_round, 0, 1);
		run_until(&t, rounds_done);
		peer *p = &t.n->peers[t.to];
		assert_false(t.over_bound);
		assert_true(p->qbytes + p->wbytes <= t.n->peer_out_max);
		size_t nback = t.n->kvq_len;
		assert_true(nback > 0);                              /* the bound was reached */
		assert_true(t.n->limit_hits[LIM_PEER_OUT] == nback); /* each refusal counted */
		assert_true(t.n->peer_writes > 0);
		/* now read: what the node kept comes out, in order */
		assert_non_null(t.accepted);
		uv_read_start((uv_stream_t *)t.accepted, on_alloc, on_read);
		run_until(&t, all_in);
		assert_int_equal(t.n->kvq_len, nback); /* nothing more lost meanwhile */
		run_until(&t, all_read);
		assert_int_equal(check_received(&t, nback), t.seq - nback);
		rig_free(&t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_coalesced_in_order),
	    cmocka_unit_test(test_slow_peer_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
