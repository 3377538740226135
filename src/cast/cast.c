/* cast.c — the swarm broadcast core (see cast.h for the protocol and the driver's part). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/rng.h"
#include "cast.h"

#define SERVE_MAX   (2 * CAST_WIN_MAX) /* requests queued from one link */
#define SAMPLE_MS   500                /* receive rates are sampled this often */
#define PING_MS     1000
#define DEFAULT_RTT 50000 /* us, before TCP_INFO says */
#define HOPS_NONE   255

typedef struct {
	bool used;
	uint32_t id;
	char name[CAST_NAME_MAX];
	cast_known *known; /* the names it told us, with its hops */
	uint32_t nknown;
	uint32_t *prog_sent; /* per node slot: the progress seq last sent on this link */
	/* the current transfer */
	uint8_t *has;   /* pieces it holds */
	uint8_t *asked; /* pieces this node asked it for, not yet come */
	uint8_t *pend;  /* pieces it said it asked someone for (PENDING), not yet held */
	bool got_bits;
	uint32_t nasked;
	uint64_t progress_at; /* a piece came, or asking began */
	uint64_t quiet_until; /* after a stall: not asked again before */
	uint64_t rx_bytes, sample_bytes;
	double rx_rate;  /* bytes/s of pieces from it (0: not measured yet) */
	uint64_t gap_ms; /* mean time between pieces from it while asked (ms) */
	uint32_t rtt_us;
	uint64_t tx_rate;          /* TCP_INFO delivery rate towards it */
	uint32_t serve[SERVE_MAX]; /* pieces it asked for, in order */
	uint32_t serve_head, nserve;
	uint32_t ahead; /* pieces handed to the driver, not yet written */
	uint64_t ping_at;
} link_t;

typedef struct {
	cast_prog p;
	uint8_t hops;
	bool dirty; /* own entry: changed since last gossip */
} node_t;

struct cast_node {
	cast_config cfg;
	cast_driver drv;
	rn_rng rng;
	cast_stats st;
	link_t links[CAST_MAX_LINKS];
	node_t *nodes; /* [0] is this node */
	uint32_t nnodes;
	bool nodes_dirty;
	uint64_t gossip_at, sample_at;
	/* the transfer */
	bool active;
	cast_info x;
	uint8_t *hashes;
	char (*dests)[CAST_NAME_MAX];
	uint8_t *have;
	uint8_t *inflight; /* links asked for each piece */
	uint16_t *avail;   /* links holding each piece */
	uint16_t *pending; /* links that said they are fetching it */
	uint16_t *given;   /* GIVEN hints: neighbours that sent it on to another of theirs */
	uint8_t *sent;     /* this node sent it at least once */
	uint8_t *hinted;   /* this node took a request for it (and said GIVEN) */
	uint32_t held;
	uint32_t missing_free; /* missing pieces nobody was asked for */
	bool done, source, dest;
	uint64_t send_at; /* with a rate cap: the next piece leaves no earlier */
	double rx_peak;   /* bytes/s of pieces from all links, the best sample lately */
};

void cast_config_default(cast_config *c)
{
	memset(c, 0, sizeof *c);
	c->seed = 1;
	c->gossip_ms = 200;
	c->stall_ms = 3000;
	c->link_idle_ms = 15000;
}

uint32_t cast_default_piece(uint64_t size)
{
	uint32_t p = 16384;
	while (p < CAST_PIECE_MAX && (uint64_t)p * 400 < size)
		p *= 2;
	return p;
}

static link_t *find_link(cast_node *k, uint32_t id)
{
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (k->links[i].used && k->links[i].id == id)
			return &k->links[i];
	return NULL;
}

static int node_find(const cast_node *k, const char *name)
{
	for (uint32_t i = 0; i < k->nnodes; i++)
		if (!strcmp(k->nodes[i].p.name, name))
			return (int)i;
	return -1;
}

static int node_add(cast_node *k, const char *name)
{
	int i = node_find(k, name);
	if (i >= 0 || k->nnodes >= CAST_MAX_NODES)
		return i;
	node_t *n = &k->nodes[k->nnodes];
	memset(n, 0, sizeof *n);
	snprintf(n->p.name, sizeof n->p.name, "%s", name);
	n->hops = HOPS_NONE;
	k->nodes_dirty = true;
	return (int)k->nnodes++;
}

cast_node *cast_new(const cast_config *cfg, const cast_driver *drv)
{
	cast_node *k = calloc(1, sizeof *k);
	if (!k)
		return NULL;
	k->nodes = calloc(CAST_MAX_NODES, sizeof *k->nodes);
	if (!k->nodes) {
		free(k);
		return NULL;
	}
	k->cfg = *cfg;
	k->drv = *drv;
	rn_rng_seed(&k->rng, cfg->seed);
	node_add(k, cfg->self);
	k->nodes[0].hops = 0;
	return k;
}

static void xfer_free(cast_node *k)
{
	free(k->hashes);
	free(k->dests);
	free(k->have);
	free(k->inflight);
	free(k->avail);
	free(k->pending);
	free(k->given);
	free(k->sent);
	free(k->hinted);
	k->hashes = k->have = k->inflight = k->sent = k->hinted = NULL;
	k->avail = k->pending = k->given = NULL;
	k->dests = NULL;
	k->active = false;
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		link_t *l = &k->links[i];
		free(l->has);
		free(l->asked);
		free(l->pend);
		l->has = l->asked = l->pend = NULL;
	}
}

void cast_free(cast_node *k)
{
	if (!k)
		return;
	xfer_free(k);
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		free(k->links[i].known);
		free(k->links[i].prog_sent);
	}
	free(k->nodes);
	free(k);
}

/* ---- small senders ---- */

static void send_list(cast_node *k, link_t *l, uint8_t type, const uint32_t *p, uint32_t n)
{
	while (n) {
		uint32_t b = n < CAST_BATCH_MAX ? n : CAST_BATCH_MAX;
		cast_msg m = {.type = type, .xfer = k->x.xfer, .pieces = p, .npieces = b};
		k->drv.send(k->drv.ctx, l->id, &m);
		p += b;
		n -= b;
	}
}

static void send_one(cast_node *k, link_t *l, uint8_t type, uint32_t piece)
{
	send_list(k, l, type, &piece, 1);
}

static void send_bitfield(cast_node *k, link_t *l)
{
	uint32_t nb = (k->x.npieces + 7) / 8;
	uint8_t *bits = calloc(nb, 1);
	if (!bits)
		return;
	for (uint32_t i = 0; i < k->x.npieces; i++)
		if (k->have[i])
			bits[i / 8] |= (uint8_t)(1u << (i % 8));
	cast_msg m = {
	    .type = CAST_MSG_BITFIELD, .xfer = k->x.xfer, .bits = bits, .nbits = k->x.npieces};
	k->drv.send(k->drv.ctx, l->id, &m);
	free(bits);
}

static void send_announce(cast_node *k, link_t *l)
{
	cast_msg m = {.type = CAST_MSG_ANNOUNCE, .xfer = k->x.xfer, .info = &k->x};
	k->drv.send(k->drv.ctx, l->id, &m);
	send_bitfield(k, l);
}

static void send_nodes(cast_node *k, link_t *l)
{
	cast_known *list = malloc(k->nnodes * sizeof *list);
	if (!list)
		return;
	uint32_t n = 0;
	for (uint32_t i = 0; i < k->nnodes; i++) {
		if (k->nodes[i].hops >= CAST_MAX_HOPS)
			continue;
		memcpy(list[n].name, k->nodes[i].p.name, CAST_NAME_MAX);
		list[n++].hops = k->nodes[i].hops;
	}
	cast_msg m = {.type = CAST_MSG_NODES, .known = list, .nknown = n};
	k->drv.send(k->drv.ctx, l->id, &m);
	free(list);
}

/* ---- the transfer's state on a link ---- */

static bool link_alloc(cast_node *k, link_t *l)
{
	free(l->has);
	free(l->asked);
	free(l->pend);
	l->has = calloc(k->x.npieces, 1);
	l->asked = calloc(k->x.npieces, 1);
	l->pend = calloc(k->x.npieces, 1);
	l->got_bits = false;
	l->nasked = 0;
	l->nserve = l->serve_head = 0;
	return l->has && l->asked && l->pend;
}

/* Forgets what this node asked l for (each piece is free to ask elsewhere). */
static void unask_all(cast_node *k, link_t *l)
{
	if (!l->asked)
		return;
	for (uint32_t p = 0; p < k->x.npieces && l->nasked; p++)
		if (l->asked[p]) {
			l->asked[p] = 0;
			l->nasked--;
			if (--k->inflight[p] == 0 && !k->have[p])
				k->missing_free++;
		}
	l->nasked = 0;
}

static void unask(cast_node *k, link_t *l, uint32_t p)
{
	if (!l->asked || !l->asked[p])
		return;
	l->asked[p] = 0;
	l->nasked--;
	if (--k->inflight[p] == 0 && !k->have[p])
		k->missing_free++;
}

/* ---- scheduling: what to ask a link for ---- */

static uint32_t window(const cast_node *k, const link_t *l)
{
	if (l->rx_rate <= 0)
		return 4;
	double rtt = (l->rtt_us ? l->rtt_us : DEFAULT_RTT) / 1e6;
	double w = l->rx_rate * (rtt + 0.1) / k->x.piece_size + 2;
	if (w < CAST_WIN_MIN)
		w = CAST_WIN_MIN;
	if (w > CAST_WIN_MAX)
		w = CAST_WIN_MAX;
	return (uint32_t)ceil(w);
}

typedef struct {
	uint64_t key;
	uint32_t piece;
} cand;

/* Keeps the n best (smallest key) candidates in best[], sorted. */
static void keep(cand *best, uint32_t *n, uint32_t max, uint64_t key, uint32_t piece)
{
	if (*n == max && key >= best[max - 1].key)
		return;
	uint32_t i = *n < max ? (*n)++ : max - 1;
	while (i > 0 && best[i - 1].key > key) {
		best[i] = best[i - 1];
		i--;
	}
	best[i] = (cand){key, piece};
}

/* What this node may have outstanding over all its links: twice what its best recent
 * total receive rate delivers in the largest link rtt + 0.1 s, plus CAST_NODE_SPARE
 * pieces. Links that share this node's downlink each keep a window of their own, and
 * their sum (19 links of star20: 40 pieces and more) queues megabytes at a slow downlink
 * (incast: drops, end-game duplicates). Twice the rate, so that the cap never holds the
 * rate down where links are independent: asking for more raises the rate, which raises
 * the cap (a cap at 1x the rate starved mesh12 in the simulator, 0.93 to 0.62). */
static uint32_t node_cap(const cast_node *k)
{
	if (k->rx_peak <= 0)
		return UINT32_MAX; /* not measured yet */
	uint32_t rtt_us = 0;
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (k->links[i].used && k->links[i].rtt_us > rtt_us)
			rtt_us = k->links[i].rtt_us;
	double rtt = (rtt_us ? rtt_us : DEFAULT_RTT) / 1e6;
	return (uint32_t)ceil(2.0 * k->rx_peak * (rtt + 0.1) / k->x.piece_size) + CAST_NODE_SPARE;
}

static uint32_t asked_total(const cast_node *k)
{
	uint32_t n = 0;
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (k->links[i].used)
			n += k->links[i].nasked;
	return n;
}

static void schedule(cast_node *k, uint64_t now, link_t *l)
{
	if (!k->active || k->done || !l->got_bits || now < l->quiet_until)
		return;
	uint32_t w = window(k, l);
	if (l->nasked >= w)
		return;
	uint32_t want = w - l->nasked;
	uint32_t cap = node_cap(k), total = asked_total(k);
	uint32_t room = total >= cap ? 0 : cap - total;
	if (want > room) {
		k->st.capped += want - room;
		want = room;
	}
	if (!want)
		return;
	if (want > CAST_BATCH_MAX)
		want = CAST_BATCH_MAX;
	cand best[CAST_BATCH_MAX];
	uint32_t nb = 0;
	bool endgame = k->missing_free == 0;
	for (uint32_t p = 0; p < k->x.npieces; p++) {
		if (k->have[p] || !l->has[p] || l->asked[p])
			continue;
		if (k->inflight[p] && (!endgame || k->inflight[p] >= CAST_ENDGAME))
			continue;
		/* rarest first; in the end-game, pieces nobody was asked for first */
		uint64_t rarity = (uint64_t)k->avail[p] + k->pending[p] + k->given[p];
		uint64_t key = ((uint64_t)k->inflight[p] << 48) | (rarity << 32) |
		               (rn_rng_next(&k->rng) & 0xffffffffu);
		keep(best, &nb, want, key, p);
	}
	if (!nb)
		return;
	uint32_t list[CAST_BATCH_MAX];
	for (uint32_t i = 0; i < nb; i++) {
		uint32_t p = best[i].piece;
		list[i] = p;
		if (k->inflight[p])
			k->st.endgame_req++;
		else
			k->missing_free--;
		k->inflight[p]++;
		l->asked[p] = 1;
	}
	if (!l->nasked)
		l->progress_at = now;
	l->nasked += nb;
	send_list(k, l, CAST_MSG_REQUEST, list, nb);
	for (int i = 0; i < CAST_MAX_LINKS; i++) /* so that they fetch other pieces */
		if (k->links[i].used && &k->links[i] != l)
			send_list(k, &k->links[i], CAST_MSG_PENDING, list, nb);
}

static void schedule_all(cast_node *k, uint64_t now)
{
	if (!k->active || k->done)
		return;
	/* links that deliver faster ask first: they get the rarest pieces */
	link_t *order[CAST_MAX_LINKS];
	int n = 0;
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (k->links[i].used && k->links[i].has)
			order[n++] = &k->links[i];
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && order[j]->rx_rate > order[j - 1]->rx_rate; j--) {
			link_t *t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (int i = 0; i < n; i++)
		schedule(k, now, order[i]);
}

/* ---- holding pieces ---- */

static void lose(cast_node *k, uint32_t p)
{
	if (!k->have[p])
		return;
	k->have[p] = 0;
	k->held--;
	k->done = false;
	k->nodes[0].dirty = true;
	if (!k->inflight[p])
		k->missing_free++;
	k->st.corrupt++;
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (k->links[i].used)
			send_one(k, &k->links[i], CAST_MSG_LOST, p);
}

static void check_done(cast_node *k, uint64_t now)
{
	if (k->done || k->held < k->x.npieces)
		return;
	uint8_t *bad = calloc(k->x.npieces, 1);
	if (!bad)
		return;
	int rc = k->drv.complete(k->drv.ctx, &k->x, k->dest, bad);
	if (rc == RN_EPROTO) {
		for (uint32_t p = 0; p < k->x.npieces; p++)
			if (bad[p])
				lose(k, p);
	} else if (rc == 0) {
		k->done = true;
		k->nodes[0].p.done_ms = now + k->cfg.wall_offset_ms;
		k->nodes[0].dirty = true;
	}
	free(bad);
}

static void got_piece(cast_node *k, uint64_t now, link_t *l, const cast_msg *m)
{
	uint32_t p = m->piece;
	if (p >= k->x.npieces)
		return;
	uint64_t expect =
	    p + 1 == k->x.npieces ? k->x.size - (uint64_t)p * k->x.piece_size : k->x.piece_size;
	if (m->len != expect)
		return;
	k->st.pieces_in++;
	k->st.bytes_in += m->len;
	l->rx_bytes += m->len;
	if (l->nasked) {
		uint64_t gap = now - l->progress_at;
		l->gap_ms = l->gap_ms ? (3 * l->gap_ms + gap) / 4 : gap;
	}
	l->progress_at = now;
	unask(k, l, p);
	if (k->have[p]) {
		k->st.dup_in++;
		return;
	}
	int rc = k->drv.store(k->drv.ctx, &k->x, p, m->data, m->len);
	if (rc == RN_EPROTO) {
		k->st.corrupt++;
		return;
	}
	if (rc < 0)
		return;
	k->have[p] = 1;
	k->held++;
	if (!k->inflight[p])
		k->missing_free--;
	k->nodes[0].dirty = true;
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		link_t *o = &k->links[i];
		if (!o->used || !o->has)
			continue;
		if (o->asked[p]) { /* the end-game's other requester */
			unask(k, o, p);
			send_one(k, o, CAST_MSG_CANCEL, p);
			k->st.cancels++;
		}
		if (!o->has[p])
			send_one(k, o, CAST_MSG_HAVE, p);
	}
	check_done(k, now);
}

/* ---- serving ---- */

/* Takes the next piece to send l off its queue: the first one this node never sent, or
 * else the oldest request. */
static uint32_t serve_next(cast_node *k, link_t *l)
{
	uint32_t at = 0;
	for (uint32_t i = 0; i < l->nserve; i++)
		if (!k->sent[l->serve[(l->serve_head + i) % SERVE_MAX]]) {
			at = i;
			break;
		}
	uint32_t *head = &l->serve[l->serve_head],
	         *pick = &l->serve[(l->serve_head + at) % SERVE_MAX];
	uint32_t p = *pick;
	*pick = *head; /* the skipped request moves to the pick's place */
	l->serve_head = (l->serve_head + 1) % SERVE_MAX;
	l->nserve--;
	return p;
}

/* GIVEN to every link but l: the pieces of list this node had not taken a request for. */
static void hint_given(cast_node *k, link_t *l, const uint32_t *list, uint32_t n)
{
	uint32_t fresh[CAST_BATCH_MAX], nf = 0;
	for (uint32_t i = 0; i < n; i++)
		if (!k->hinted[list[i]]) {
			k->hinted[list[i]] = 1;
			fresh[nf++] = list[i];
		}
	if (!nf)
		return;
	for (int i = 0; i < CAST_MAX_LINKS; i++)
		if (k->links[i].used && k->links[i].has && &k->links[i] != l)
			send_list(k, &k->links[i], CAST_MSG_GIVEN, fresh, nf);
}

static void pump(cast_node *k, uint64_t now)
{
	if (!k->active)
		return;
	for (;;) {
		if (k->x.rate_cap && now < k->send_at)
			return;
		/* the link whose receiver is fastest goes first */
		link_t *best = NULL;
		for (int i = 0; i < CAST_MAX_LINKS; i++) {
			link_t *l = &k->links[i];
			if (l->used && l->nserve && l->ahead < CAST_SEND_AHEAD &&
			    (!best || l->tx_rate > best->tx_rate))
				best = l;
		}
		if (!best)
			return;
		uint32_t p = serve_next(k, best);
		if (!k->have[p] || (best->has && best->has[p]))
			continue;
		int rc = k->drv.send_piece(k->drv.ctx, best->id, &k->x, p);
		if (rc == RN_EPROTO) {
			lose(k, p);
			continue;
		}
		if (rc < 0)
			continue;
		best->ahead++;
		k->sent[p] = 1;
		uint32_t len = p + 1 == k->x.npieces
		                   ? (uint32_t)(k->x.size - (uint64_t)p * k->x.piece_size)
		                   : k->x.piece_size;
		k->st.pieces_out++;
		k->st.bytes_out += len;
		if (k->x.rate_cap) {
			if (k->send_at < now)
				k->send_at = now;
			k->send_at += (uint64_t)len * 1000 / k->x.rate_cap;
		}
	}
}

static void serve_remove(link_t *l, uint32_t p)
{
	uint32_t out = 0;
	for (uint32_t i = 0; i < l->nserve; i++) {
		uint32_t q = l->serve[(l->serve_head + i) % SERVE_MAX];
		if (q != p)
			l->serve[(l->serve_head + out++) % SERVE_MAX] = q;
	}
	l->nserve = out;
}

/* ---- adopting a transfer ---- */

static bool is_dest(const cast_info *x, const char *name)
{
	if (!strcmp(name, x->source))
		return false;
	if (!x->ndests)
		return true;
	for (uint32_t i = 0; i < x->ndests; i++)
		if (!strcmp(x->dests[i], name))
			return true;
	return false;
}

/* Makes x the current transfer (copied). */
static int adopt(cast_node *k, uint64_t now, const cast_info *x, bool source)
{
	xfer_free(k);
	k->x = *x;
	uint32_t n = x->npieces;
	k->hashes = malloc(32 * (size_t)n);
	k->dests = calloc(x->ndests ? x->ndests : 1, CAST_NAME_MAX);
	k->have = calloc(n, 1);
	k->inflight = calloc(n, 1);
	k->avail = calloc(n, sizeof *k->avail);
	k->pending = calloc(n, sizeof *k->pending);
	k->given = calloc(n, sizeof *k->given);
	k->sent = calloc(n, 1);
	k->hinted = calloc(n, 1);
	if (!k->hashes || !k->dests || !k->have || !k->inflight || !k->avail || !k->pending ||
	    !k->given || !k->sent || !k->hinted) {
		xfer_free(k);
		return RN_ENOMEM;
	}
	memcpy(k->hashes, x->hashes, 32 * (size_t)n);
	if (x->ndests)
		memcpy(k->dests, x->dests, (size_t)x->ndests * CAST_NAME_MAX);
	k->x.hashes = k->hashes;
	k->x.dests = (const char(*)[CAST_NAME_MAX])k->dests;
	k->active = true;
	k->rx_peak = 0;
	k->source = source;
	k->dest = is_dest(x, k->cfg.self);
	k->done = false;
	k->held = 0;
	k->send_at = now;
	for (uint32_t i = 1; i < k->nnodes; i++) {
		k->nodes[i].p.seq = k->nodes[i].p.held = 0;
		k->nodes[i].p.done_ms = 0;
	}
	k->nodes[0].p.done_ms = 0;
	k->nodes[0].p.held = 0;
	k->nodes[0].dirty = true;
	if (source) {
		memset(k->have, 1, n);
		k->held = n;
		k->done = true;
		k->nodes[0].p.done_ms = x->start_wall_ms;
	} else if (k->drv.open(k->drv.ctx, &k->x, k->have) < 0) {
		xfer_free(k);
		return RN_EIO;
	}
	for (uint32_t p = 0; p < n; p++)
		if (k->have[p]) {
			k->have[p] = 1;
			k->held++;
		}
	k->held = k->held > n ? n : k->held;
	if (!source)
		k->st.resumed += k->held;
	k->missing_free = n - k->held;
	for (int i = 0; i < CAST_MAX_LINKS; i++) {
		link_t *l = &k->links[i];
		if (!l->used)
			continue;
		if (!link_alloc(k, l))
			continue;
		memset(l->prog_sent, 0, CAST_MAX_NODES * sizeof *l->prog_sent);
		send_announce(k, l);
	}
	check_done(k, now);
	return 0;
}

int cast_start(cast_node *k, uint64_t now, const cast_info *info)
{
	if (!info->npieces || info->npieces > CAST_MAX_PIECES ||
	    info->piece_size < CAST_PIECE_MIN || info->piece_size > CAST_PIECE_MAX ||
	    info->npieces != (info->size + info->piece_size - 1) / info->piece_size ||
	    info->ndests > CAST_MAX_DESTS)
		return RN_EINVAL;
	cast_info x = *info;
	if (!x.xfer)
		x.xfer = rn_rng_next(&k->rng) | 1;
	if (!x.start_wall_ms)
		x.start_wall_ms = now + k->cfg.wall_offset_ms;
	snprintf(x.source, sizeof x.source, "%s", k->cfg.self);
	return adopt(k, now, &x, true);
}

/* ---- membership: who is reachable, in how many hops ---- */

static void recompute_hops(cast_node *k)
{
	uint8_t old[CAST_MAX_NODES];
	uint32_t before = k->nnodes;
	for (uint32_t i = 1; i < k->nnodes; i++) {
		old[i] = k->nodes[i].hops;
		k->nodes[i].hops = HOPS_NONE;
	}
	for (int j = 0; j < CAST_MAX_LINKS; j++) {
		link_t *l = &k->links[j];
		if (!l->used)
			continue;
		int me = node_add(k, l->name);
		if (me > 0)
			k->nodes[me].hops = 1;
		for (uint32_t i = 0; i < l->nknown; i++) {
			if (l->known[i].hops + 1 >= CAST_MAX_HOPS)
				continue;
			int s = node_add(k, l->known[i].name);
			if (s > 0 && k->nodes[s].hops > l->known[i].hops + 1)
				k->nodes[s].hops = (uint8_t)(l->known[i].hops + 1);
		}
	}
	bool changed = k->nnodes != before;
	for (uint32_t i = 1; i < before && !changed; i++)
		changed = old[i] != k->nodes[i].hops;
	if (changed)
		k->nodes_dirty = true;
}

/* ---- entry points ---- */

void cast_link_up(cast_node *k, uint64_t now, uint32_t id, const char *peer)
{
	if (find_link(k, id))
		return;
	link_t *l = NULL;
	for (int i = 0; i < CAST_MAX_LINKS && !l; i++)
		if (!k->links[i].used)
			l = &k->links[i];
	if (!l)
		return;
	memset(l, 0, sizeof *l);
	l->prog_sent = calloc(CAST_MAX_NODES, sizeof *l->prog_sent);
	if (!l->prog_sent)
		return;
	l->used = true;
	l->id = id;
	snprintf(l->name, sizeof l->name, "%s", peer);
	l->ping_at = now;
	recompute_hops(k);
	send_nodes(k, l);
	if (k->active && link_alloc(k, l))
		send_announce(k, l);
}

void cast_link_down(cast_node *k, uint64_t now, uint32_t id)
{
	link_t *l = find_link(k, id);
	if (!l)
		return;
	if (k->active && l->has) {
		unask_all(k, l);
		for (uint32_t p = 0; p < k->x.npieces; p++) {
			if (l->has[p])
				k->avail[p]--;
			if (l->pend[p])
				k->pending[p]--;
		}
	}
	free(l->has);
	free(l->asked);
	free(l->pend);
	free(l->known);
	free(l->prog_sent);
	memset(l, 0, sizeof *l);
	recompute_hops(k);
	schedule_all(k, now);
}

static void set_pend(cast_node *k, link_t *l, uint32_t p, bool v)
{
	if (p >= k->x.npieces || !l->pend || l->pend[p] == v || (v && l->has[p]))
		return;
	l->pend[p] = v;
	if (v)
		k->pending[p]++;
	else
		k->pending[p]--;
}

static void set_has(cast_node *k, link_t *l, uint32_t p, bool v)
{
	if (p >= k->x.npieces || !l->has || l->has[p] == v)
		return;
	l->has[p] = v;
	if (v)
		k->avail[p]++;
	else
		k->avail[p]--;
	set_pend(k, l, p, false);
}

static void on_progress(cast_node *k, const cast_msg *m)
{
	for (uint32_t i = 0; i < m->nprog; i++) {
		int s = node_add(k, m->prog[i].name);
		if (s <= 0) /* not ours to be told about */
			continue;
		if (m->prog[i].seq > k->nodes[s].p.seq)
			k->nodes[s].p = m->prog[i];
	}
}

void cast_on_msg(cast_node *k, uint64_t now, uint32_t id, const cast_msg *m)
{
	link_t *l = find_link(k, id);
	if (!l)
		return;
	if (m->type == CAST_MSG_NODES) {
		cast_known *c = malloc((m->nknown ? m->nknown : 1) * sizeof *c);
		if (!c)
			return;
		memcpy(c, m->known, m->nknown * sizeof *c);
		free(l->known);
		l->known = c;
		l->nknown = m->nknown;
		recompute_hops(k);
		return;
	}
	if (m->type == CAST_MSG_ANNOUNCE) {
		if (k->active &&
		    (m->info->xfer == k->x.xfer || m->info->start_wall_ms < k->x.start_wall_ms))
			return;
		adopt(k, now, m->info, false);
		schedule_all(k, now);
		return;
	}
	if (m->type == CAST_MSG_PING || !k->active || m->xfer != k->x.xfer || !l->has)
		return;
	switch (m->type) {
	case CAST_MSG_BITFIELD:
		if (m->nbits != k->x.npieces)
			return;
		for (uint32_t p = 0; p < m->nbits; p++)
			set_has(k, l, p, (m->bits[p / 8] >> (p % 8)) & 1);
		l->got_bits = true;
		break;
	case CAST_MSG_HAVE:
		for (uint32_t i = 0; i < m->npieces; i++)
			set_has(k, l, m->pieces[i], true);
		break;
	case CAST_MSG_LOST:
		for (uint32_t i = 0; i < m->npieces; i++) {
			if (m->pieces[i] >= k->x.npieces)
				continue;
			set_has(k, l, m->pieces[i], false);
			unask(k, l, m->pieces[i]);
		}
		break;
	case CAST_MSG_REQUEST: {
		uint32_t took[CAST_BATCH_MAX], nt = 0;
		for (uint32_t i = 0; i < m->npieces && i < CAST_BATCH_MAX; i++) {
			uint32_t p = m->pieces[i];
			if (p < k->x.npieces && k->have[p] && l->nserve < SERVE_MAX) {
				l->serve[(l->serve_head + l->nserve) % SERVE_MAX] = p;
				l->nserve++;
				took[nt++] = p;
			}
		}
		hint_given(k, l, took, nt);
		pump(k, now);
		return;
	}
	case CAST_MSG_CANCEL:
		for (uint32_t i = 0; i < m->npieces; i++)
			serve_remove(l, m->pieces[i]);
		return;
	case CAST_MSG_PENDING:
		for (uint32_t i = 0; i < m->npieces; i++)
			set_pend(k, l, m->pieces[i], true);
		return;
	case CAST_MSG_GIVEN:
		for (uint32_t i = 0; i < m->npieces; i++)
			if (m->pieces[i] < k->x.npieces && k->given[m->pieces[i]] < UINT16_MAX)
				k->given[m->pieces[i]]++;
		return;
	case CAST_MSG_PIECE:
		got_piece(k, now, l, m);
		break;
	case CAST_MSG_PROGRESS:
		on_progress(k, m);
		return;
	default:
		return;
	}
	schedule_all(k, now);
}

void cast_on_sent(cast_node *k, uint64_t now, uint32_t id)
{
	link_t *l = find_link(k, id);
	if (!l)
		return;
	if (l->ahead)
		l->ahead--;
	pump(k, now);
}

void cast_on_link_info(cast_node *k, uint64_t now, uint32_t id, uint64_t delivery_rate,
                       uint32_t rtt_us, uint32_t min_rtt_us, uint64_t bytes_acked)
{
	(void)now;
	(void)min_rtt_us;
	(void)bytes_acked;
	link_t *l = find_link(k, id);
	if (!l)
		return;
	l->tx_rate = delivery_rate;
	if (rtt_us)
		l->rtt_us = rtt_us;
}

static void gossip(cast_node *k, uint64_t now)
{
	if (k->nodes[0].dirty) {
		/* newer is larger, across restarts too: at least the ms since the start */
		uint64_t wall = now + k->cfg.wall_offset_ms;
		uint64_t since =
		    k->active && wall > k->x.start_wall_ms ? wall - k->x.start_wall_ms : 0;
		uint32_t seq = k->nodes[0].p.seq + 1;
		k->nodes[0].dirty = false;
		k->nodes[0].p.seq = since > seq && since < UINT32_MAX ? (uint32_t)since : seq;
		k->nodes[0].p.held = k->held;
	}
	cast_prog *list = k->active ? malloc(k->nnodes * sizeof *list) : NULL;
	for (int j = 0; j < CAST_MAX_LINKS; j++) {
		link_t *l = &k->links[j];
		if (!l->used)
			continue;
		bool sent = false;
		if (k->nodes_dirty) {
			send_nodes(k, l);
			sent = true;
		}
		uint32_t n = 0;
		for (uint32_t i = 0; list && i < k->nnodes; i++)
			if (k->nodes[i].p.seq > l->prog_sent[i]) {
				list[n++] = k->nodes[i].p;
				l->prog_sent[i] = k->nodes[i].p.seq;
			}
		if (n) {
			cast_msg m = {
			    .type = CAST_MSG_PROGRESS, .xfer = k->x.xfer, .prog = list, .nprog = n};
			k->drv.send(k->drv.ctx, l->id, &m);
			sent = true;
		}
		if (sent)
			l->ping_at = now;
		else if (now - l->ping_at >= PING_MS) {
			cast_msg m = {.type = CAST_MSG_PING};
			k->drv.send(k->drv.ctx, l->id, &m);
			l->ping_at = now;
		}
	}
	k->nodes_dirty = false;
	free(list);
}

static void sample(cast_node *k, uint64_t now, uint64_t dt)
{
	uint64_t all = 0;
	for (int j = 0; j < CAST_MAX_LINKS; j++)
		if (k->links[j].used)
			all += k->links[j].rx_bytes - k->links[j].sample_bytes;
	if (dt && k->active && !k->done) {
		double inst = (double)all * 1000.0 / (double)dt;
		k->rx_peak =
		    inst > 0.8 * k->rx_peak ? inst : 0.8 * k->rx_peak; /* fades 20% a sample */
	}
	for (int j = 0; j < CAST_MAX_LINKS; j++) {
		link_t *l = &k->links[j];
		if (!l->used)
			continue;
		uint64_t got = l->rx_bytes - l->sample_bytes;
		l->sample_bytes = l->rx_bytes;
		if (dt && (got || l->nasked)) {
			double inst = (double)got * 1000.0 / (double)dt;
			l->rx_rate = l->rx_rate > 0 ? 0.5 * l->rx_rate + 0.5 * inst : inst;
		}
		/* a link whose requests make no progress: ask elsewhere */
		if (l->nasked && k->active && !k->done) {
			/* before its first piece a link's pace is unknown: a sender that serves
			 * many links may take long for one piece without being dead */
			uint64_t limit = l->gap_ms ? k->cfg.stall_ms : 5ull * k->cfg.stall_ms;
			if (8 * l->gap_ms > limit) /* a slow link is not a dead one */
				limit = 8 * l->gap_ms;
			if (now - l->progress_at > limit) {
				uint32_t list[CAST_BATCH_MAX];
				uint32_t n = 0;
				for (uint32_t p = 0; p < k->x.npieces; p++)
					if (l->asked[p]) {
						list[n++] = p;
						if (n == CAST_BATCH_MAX) {
							send_list(k, l, CAST_MSG_CANCEL, list, n);
							n = 0;
						}
					}
				send_list(k, l, CAST_MSG_CANCEL, list, n);
				unask_all(k, l);
				l->rx_rate /= 2;
				l->quiet_until = now + limit;
				k->st.stalls++;
			}
		}
	}
}

void cast_tick(cast_node *k, uint64_t now)
{
	if (now >= k->gossip_at) {
		gossip(k, now);
		k->gossip_at = now + k->cfg.gossip_ms;
	}
	if (now >= k->sample_at) {
		uint64_t dt = k->sample_at ? now - (k->sample_at - SAMPLE_MS) : 0;
		sample(k, now, dt);
		k->sample_at = now + SAMPLE_MS;
	}
	pump(k, now);
	schedule_all(k, now);
}

uint64_t cast_wake_at(const cast_node *k)
{
	uint64_t t = k->gossip_at < k->sample_at ? k->gossip_at : k->sample_at;
	if (k->active && k->x.rate_cap && k->send_at < t)
		for (int i = 0; i < CAST_MAX_LINKS; i++)
			if (k->links[i].used && k->links[i].nserve)
				return k->send_at;
	return t;
}

const cast_info *cast_current(const cast_node *k)
{
	return k->active ? &k->x : NULL;
}

uint32_t cast_held(const cast_node *k)
{
	return k->active ? k->held : 0;
}

void cast_status(const cast_node *k,
                 void (*fn)(void *arg, const cast_prog *p, bool dest, bool self), void *arg)
{
	if (!k->active)
		return;
	for (uint32_t i = 0; i < k->nnodes; i++) {
		cast_prog p = k->nodes[i].p;
		if (i == 0) {
			p.held = k->held;
			p.done_ms = k->done ? k->nodes[0].p.done_ms : 0;
		}
		fn(arg, &p, is_dest(&k->x, p.name), i == 0);
	}
}

size_t cast_known_nodes(const cast_node *k, cast_known *out, size_t max)
{
	size_t n = 0;
	for (uint32_t i = 0; i < k->nnodes && n < max; i++) {
		if (k->nodes[i].hops >= CAST_MAX_HOPS)
			continue;
		memcpy(out[n].name, k->nodes[i].p.name, CAST_NAME_MAX);
		out[n++].hops = k->nodes[i].hops;
	}
	return n;
}

size_t cast_links(const cast_node *k, char (*names)[CAST_NAME_MAX], double *rx_rate,
                  uint32_t *rtt_us, size_t max)
{
	size_t n = 0;
	for (int i = 0; i < CAST_MAX_LINKS && n < max; i++) {
		const link_t *l = &k->links[i];
		if (!l->used)
			continue;
		memcpy(names[n], l->name, CAST_NAME_MAX);
		rx_rate[n] = l->rx_rate;
		rtt_us[n] = l->rtt_us;
		n++;
	}
	return n;
}

const cast_stats *cast_get_stats(const cast_node *k)
{
	return &k->st;
}
