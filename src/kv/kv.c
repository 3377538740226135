/* kv.c — the key-value service core (see kv.h for what it does and what its driver
 * provides). Four kinds of work are open at a time, each an `op` found by its request id:
 *   ENTRY    a client request at the node the client spoke to: look up the owner, send it
 *            the request, relay the answer; fall back to the next replica when the owner
 *            does not answer.
 *   COORD    the owner's (or a fallback's) work for one request: write to or read from
 *            the replicas, count acknowledgements or answers, repair stale replicas.
 *   HANDOFF  a record this node holds outside every range it replicates, on its way to
 *            the key's owner.
 *   LEAVE    the pushes of a graceful leave, counted down by their acknowledgements.
 * Anti-entropy (sync) is not an op: it is a round every sync_ms, stateless between rounds
 * except for the ranges it taught this node to hold (covers). */
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "kv.h"
#include "members.h"
#include "near.h"

#define MAX_COVERS    16
#define MAX_HANDOFFS  64 /* in flight at once */
#define MAX_TARGETS   (KV_MAX_R * 2)
#define RETRY_MS      1000
#define SYNC_AGAIN_MS 50 /* a round that found differences is followed soon by another */
#define F_REPLAYED    4u /* RESP flag: a write already applied under this request id */
#define REQ_SEQ_LIMIT (1ull << 62)
#define PURGE_MAX     256
#define VIEW_MAX_SUCC RING_MAX_SUCC
/* a holder's lease ends this much before the owner's record of it: far more than clocks'
 * rates differ by over a lease */
#define LEASE_SLACK(k) ((k)->cfg.lease_ms / 12)
#define LEASE_WANT_MS  2000 /* a replica asks for leases while it forwarded gets this lately */
#define NEAR_HOLDERS   16   /* cache leases an owner grants at once */
#define LEASE_PEERS    (KV_MAX_R * 2 + NEAR_HOLDERS) /* at most 32: op's masks */
#define NEAR_OWNERS    16         /* owners whose cache leases a node holds or asks for */
#define NEAR_SETS      1024       /* the read cache: 4,096 records ... */
#define NEAR_BYTES     (8u << 20) /* ... of at most 8 MiB of keys and values ... */
#define NEAR_VAL_MAX   4096       /* ... none larger than this */

enum { OP_ENTRY = 1, OP_COORD, OP_HANDOFF, OP_LEAVE, OP_RELAY };
enum { ST_LOOKUP = 1, ST_SENT, ST_FALLBACK_LOOKUP, ST_RETRY_WAIT };
enum { RS_WAIT = 0, RS_DONE, RS_FAILED };

/* A record with its bytes in one allocation the op owns. */
typedef struct {
	kv_record r;
	uint8_t *mem;
	bool set;
} own_rec;

typedef struct {
	ring_peer p;
	uint8_t state; /* RS_* */
	bool has;      /* a read answer held a record */
	bool damaged;  /* ... that failed the driver's check */
	kv_version v;
} target;

typedef struct op {
	struct op *next;
	uint8_t kind;
	uint8_t stage;
	uint8_t kop; /* kv_op */
	uint8_t flags;
	uint64_t req;
	uint64_t deadline, retry_at;
	own_rec rec; /* ENTRY/COORD: the request (a write's record; a get's key) */
	/* ENTRY */
	uint64_t client;
	ring_peer coord;
	bool sent, fell_back, retried, looked;
	bool table_fb;       /* fell back to the table's next member: a lookup may follow */
	uint8_t nsends;      /* REQs sent to other nodes */
	uint8_t corrections; /* MOVED hints followed */
	bool stale_counted;
	bool has_cond; /* a conditional write: applied only if the version held is cond */
	kv_version cond;
	/* ... a get sent to an owner whose cache lease was running: the lease and the pushes
	 * from that owner then, so that its answer is kept only if neither changed */
	bool near_ok;
	uint32_t near_epoch, near_ninval;
	/* COORD (and RELAY: origin, origin_req, the cache pushes) */
	ring_addr origin; /* the entry node (self addr: this node) */
	uint64_t origin_req;
	target t[MAX_TARGETS];
	unsigned nt, acks, answers, failed, need; /* need: W for a write, read quorum for a get */
	bool replied, replayed;
	bool replay_old;     /* ... of a write a newer one replaced: answered with replay_v */
	kv_version replay_v; /* ... */
	bool waited;         /* a write held back for a lease holder's ack */
	uint64_t w_at;       /* ... since then (it had W acks) */
	uint64_t not_before; /* a write coordinated for a range not (long) this node's own:
	                      * answered no earlier, when a crashed owner's cache leases end */
	uint32_t near_sent, near_acked; /* cache holders (lout indices) pushed to, and acked */
	uint64_t near_at;               /* ... when */
	own_rec best;                   /* a get: the newest record seen */
	bool has_best;
	/* HANDOFF */
	kv_version hv;
	/* LEAVE */
	unsigned outstanding;
	ring_addr leave_to;
	rn_id leave_from, leave_hi; /* the next batch: the records in (leave_from, leave_hi] */
	bool leave_more;            /* the last batch stopped at leave_bytes */
} op;

/* A range this node replicates: an owner whose digests it answers, and its side of that
 * owner's read lease. */
typedef struct {
	rn_id lo, hi; /* positions: the range of the owner's last digest */
	rn_id from;   /* the owner */
	uint64_t at;  /* ... and when it came */
	bool used;
	ring_addr addr;
	rn_id glo, ghi; /* the range the lease was granted for */
	uint64_t until; /* this node's clock: answer gets of (glo, ghi] before it */
	uint64_t asked_at, req, wanted_at;
	bool clean; /* a digest from it matched this node's copy since this node started */
} cover;

/* An owner's side: a replica that holds, or may ask for, a lease of this node's range. */
typedef struct {
	rn_id id;
	ring_addr addr;
	uint64_t until;        /* this node's clock: writes wait for its ack before it */
	uint32_t missed_round; /* a write was acknowledged without it in this round */
	bool synced; /* it matched a digest, and no write was acknowledged without it since
	              * (a cache holder: none was acknowledged without it in this lease) */
	bool used;
	bool cache;      /* a cache lease: the holder does not replicate this range */
	uint32_t gen;    /* ... its number: a new one after every lapse */
	uint64_t gen_at; /* ... since when (the holder's copies are all filled after it) */
	rn_id glo, ghi;  /* ... the range it was granted for: what is pushed to it */
} lease_out;

/* A holder's side of an owner's cache lease. */
typedef struct {
	rn_id owner;
	ring_addr addr;
	bool used;
	rn_id glo, ghi; /* the range granted */
	uint64_t until; /* this node's clock: answer gets of (glo, ghi] from the cache before it */
	uint64_t asked_at, req, wanted_at;
	uint32_t gen;    /* the owner's number for the lease */
	uint32_t epoch;  /* this node's tag for the copies filled under it (0: none yet) */
	uint32_t ninval; /* pushes from the owner so far */
} near_lease;

struct kv_node {
	kv_config cfg;
	kv_driver d;
	rn_id self;
	ring_addr addr;
	uint64_t self_top;
	rn_id ext; /* 2^(160 - bits) - 1: the low bits a position leaves out of a key id */
	bool joined;
	bool had_pred; /* a predecessor has been known since this core started */
	bool had_succ; /* ... a successor other than itself (it joined a ring) */
	ring_peer pred;
	ring_peer succ[VIEW_MAX_SUCC];
	size_t nsucc;
	uint64_t view_at;
	uint64_t pred_at; /* when the predecessor last changed */
	uint64_t hlc;
	uint64_t seq;
	op *ops;
	unsigned nhandoffs;
	cover covers[MAX_COVERS];
	uint64_t sync_at, handoff_at;
	uint64_t scrub_at; /* the next scrub step */
	rn_id scrub_from;  /* it goes on after this key id */
	uint32_t round;
	bool dirty;   /* a record of this node's own range changed since the last round */
	bool foreign; /* a record outside it was stored since the last handoff scan */
	unsigned idle_scans;
	unsigned quiet_rounds;
	bool matched[KV_MAX_R]; /* last round: replica i reported no difference */
	unsigned nmatched_targets;
	op *leave;
	kv_stats st;
	bool (*check)(void *ctx, const kv_record *rec); /* kv_set_check */
	kvm_table mem;                                  /* the member table (one hop) */
	bool fed; /* the driver gave members: without, routing is by successors and lookups */
	struct owner_cache *cache; /* KV_CACHE_SIZE, made on first use */
	lease_out lout[LEASE_PEERS];
	uint64_t lease_at; /* the next round of lease requests */
	near_lease near[NEAR_OWNERS];
	kvn_cache *ncache;   /* made at the first fill */
	uint32_t near_epoch; /* the last tag given */
	uint32_t near_gen;   /* the last cache lease number this node granted */
};

/* A key's owner as a lookup or a MOVED hint last named it (routing without the table). */
struct owner_cache {
	rn_id kid;
	ring_peer p;
	bool set;
};

/* ---- small things ---- */

int kv_version_cmp(const kv_version *a, const kv_version *b)
{
	if (a->stamp != b->stamp)
		return a->stamp < b->stamp ? -1 : 1;
	if (a->writer != b->writer)
		return a->writer < b->writer ? -1 : 1;
	if (a->tomb != b->tomb) /* the same write cannot be both; order them anyway */
		return a->tomb ? 1 : -1;
	return 0;
}

void kv_config_default(kv_config *c)
{
	memset(c, 0, sizeof *c);
	c->bits = RN_ID_BITS;
	c->replicas = 3;
	c->write_quorum = 2;
	c->read_quorum = 2;
	c->op_timeout_ms = 1000;
	c->req_timeout_ms = 5000;
	c->sync_ms = 2000;
	c->settle_ms = 5000;
	c->cover_ms = 8000;
	c->tomb_grace_ms = 600000;
	c->owner_reads = true;
	c->one_hop_max = 4096;
	c->scrub_ms = 1000;
	c->scrub_bytes = 8u << 20;
	c->leave_bytes = 16u << 20;
	c->lease_ms = 600;
}

int kv_config_check(const kv_config *c)
{
	if (c->bits < 1 || c->bits > RN_ID_BITS || c->replicas < 1 || c->replicas > KV_MAX_R ||
	    c->write_quorum < 1 || c->write_quorum > c->replicas || c->read_quorum < 1 ||
	    c->read_quorum > c->replicas || !c->op_timeout_ms || !c->req_timeout_ms ||
	    !c->sync_ms || c->cover_ms < c->sync_ms || !c->leave_bytes ||
	    (c->lease_ms && c->lease_ms + c->lease_ms / 12 >= c->op_timeout_ms))
		return RN_EINVAL;
	return 0;
}

static int own_set(own_rec *o, const kv_record *r)
{
	size_t n = r->klen + r->vlen + r->ridlen + r->histlen;
	uint8_t *m = malloc(n ? n : 1);
	if (!m)
		return RN_ENOMEM;
	uint8_t *p = m;
	kv_record c = *r;
	if (r->klen)
		memcpy(p, r->key, r->klen);
	c.key = p;
	p += r->klen;
	if (r->vlen)
		memcpy(p, r->val, r->vlen);
	c.val = r->val ? p : NULL;
	p += r->vlen;
	if (r->ridlen)
		memcpy(p, r->rid, r->ridlen);
	c.rid = r->ridlen ? p : NULL;
	p += r->ridlen;
	if (r->histlen)
		memcpy(p, r->hist, r->histlen);
	c.hist = r->histlen ? p : NULL;
	free(o->mem); /* last: r may point into it */
	o->mem = m;
	o->r = c;
	o->set = true;
	return 0;
}

static void own_free(own_rec *o)
{
	free(o->mem);
	memset(o, 0, sizeof *o);
}

/* The ring position of a key id (its top `bits` bits). */
static rn_id pos_of(const kv_node *k, const rn_id *kid)
{
	rn_id p = *kid;
	rn_id_truncate(&p, k->cfg.bits);
	return p;
}

/* The last key id at position p: scans over positions (lo, hi] ask the store for key ids
 * in (ext(lo), ext(hi)]. */
static rn_id ext_of(const kv_node *k, const rn_id *p)
{
	rn_id zero, neg, out;
	memset(&zero, 0, sizeof zero);
	rn_id_sub(&neg, &zero, &k->ext);
	rn_id_sub(&out, p, &neg);
	return out;
}

static uint64_t next_req(kv_node *k)
{
	if (++k->seq >= REQ_SEQ_LIMIT)
		k->seq = 1;
	return k->seq;
}

static kv_version stamp_new(kv_node *k, uint64_t now, bool tomb)
{
	uint64_t phys = (now + k->cfg.wall_offset_ms) << 16;
	k->hlc = phys > k->hlc ? phys : k->hlc + 1;
	return (kv_version){k->hlc, k->self_top, tomb};
}

static void hlc_seen(kv_node *k, uint64_t stamp)
{
	if (stamp > k->hlc)
		k->hlc = stamp;
}

static op *op_find(kv_node *k, uint64_t req)
{
	for (op *o = k->ops; o; o = o->next)
		if (o->req == req)
			return o;
	return NULL;
}

static op *op_new(kv_node *k, uint8_t kind)
{
	op *o = calloc(1, sizeof *o);
	if (!o)
		return NULL;
	o->kind = kind;
	o->req = next_req(k);
	o->next = k->ops;
	k->ops = o;
	k->st.pending_ops++;
	if (kind == OP_HANDOFF) {
		k->nhandoffs++;
		k->st.pending_handoffs++;
	}
	return o;
}

static void leave_acked(kv_node *k, op *o, bool more);

static void op_free(kv_node *k, op *x)
{
	for (op **pp = &k->ops; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	k->st.pending_ops--;
	if (x->kind == OP_HANDOFF) {
		k->nhandoffs--;
		k->st.pending_handoffs--;
	}
	if (k->leave == x)
		k->leave = NULL;
	own_free(&x->rec);
	own_free(&x->best);
	free(x);
}

static void send_msg(kv_node *k, kv_msg *m)
{
	m->from = (ring_peer){k->self, k->addr};
	k->d.send(k->d.ctx, m);
}

/* *a, empty, as an answer of this type to m: to its sender, with its request id. */
static void answer_to(kv_msg *a, uint8_t type, const kv_msg *m)
{
	memset(a, 0, sizeof *a);
	a->type = type;
	a->to = m->from.addr;
	a->req = m->req;
}

/* Stores r unless a version at least as new is there; *held is what is there after.
 * 1 stored, 0 kept the newer one, or a negative RN_E*. */
static bool own_range(const kv_node *k, const rn_id *pos);

/* ---- request-id history (kv_record.hist) ---- */

static uint64_t rid_hash(const uint8_t *rid, size_t len)
{
	rn_id h;
	rn_id_hash(&h, rid, len, RN_ID_BITS);
	return rn_get64(h.b);
}

/* The history a write replacing cur carries, into out: cur's own request id first, then
 * cur's history, KV_HIST_MAX entries at most. Its length in bytes. */
static size_t hist_after(const kv_record *cur, uint8_t *out)
{
	size_t n = 0;
	if (cur->ridlen) {
		rn_put64(out, rid_hash(cur->rid, cur->ridlen));
		rn_put64(out + 8, cur->v.stamp);
		rn_put64(out + 16, cur->v.writer);
		out[24] = cur->v.tomb;
		n = KV_HIST_ENTRY;
	}
	size_t keep = cur->histlen;
	if (n + keep > KV_HIST_MAX * KV_HIST_ENTRY)
		keep = KV_HIST_MAX * KV_HIST_ENTRY - n;
	if (keep)
		memcpy(out + n, cur->hist, keep);
	return n + keep;
}

/* Whether w's request id made cur (0) or a write cur replaced (1 + its place in cur's
 * history, its version into *v); -1: neither, or w has none. */
static int rid_seen(const kv_record *cur, const kv_record *w, kv_version *v)
{
	if (!w->ridlen)
		return -1;
	if (cur->ridlen == w->ridlen && !memcmp(cur->rid, w->rid, w->ridlen))
		return 0;
	if (!cur->histlen)
		return -1;
	uint64_t h = rid_hash(w->rid, w->ridlen);
	for (size_t i = 0; i + KV_HIST_ENTRY <= cur->histlen; i += KV_HIST_ENTRY) {
		const uint8_t *e = cur->hist + i;
		if (rn_get64(e) == h) {
			*v = (kv_version){rn_get64(e + 8), rn_get64(e + 16), e[24] != 0};
			return 1 + (int)(i / KV_HIST_ENTRY);
		}
	}
	return -1;
}

static int apply(kv_node *k, const kv_record *r, kv_version *held)
{
	kv_record cur;
	int rc = k->d.get(k->d.ctx, &r->kid, &cur);
	if (rc == 0 && kv_version_cmp(&cur.v, &r->v) >= 0) {
		*held = cur.v;
		return 0;
	}
	if (rc != 0 && rc != RN_ENOTFOUND)
		return rc;
	rc = k->d.put(k->d.ctx, r);
	if (rc < 0)
		return rc;
	*held = r->v;
	rn_id pos = pos_of(k, &r->kid);
	if (own_range(k, &pos))
		k->dirty = true; /* this node's digest changed: the next round is a full one */
	else
		k->foreign = true; /* a replica's record, or one to hand on: scan for it */
	return 1;
}

static bool damaged(const kv_node *k, const kv_record *r)
{
	return k->check && r->val && !k->check(k->d.ctx, r);
}

void kv_set_check(kv_node *k, bool (*check)(void *ctx, const kv_record *rec))
{
	k->check = check;
}

bool kv_drop_damaged(kv_node *k, uint64_t now, const rn_id *kid)
{
	(void)now;
	kv_record cur;
	if (k->d.get(k->d.ctx, kid, &cur) != 0 || !damaged(k, &cur))
		return false;
	k->st.damaged_seen++;
	return k->d.del(k->d.ctx, kid) == 0;
}

static bool settled(const kv_node *k, uint64_t now)
{
	return k->joined && now - k->view_at >= k->cfg.settle_ms;
}

/* Still long enough to be sure a key its replicas lack is absent: a record of this range
 * that only an old owner holds (written while the ring grew) moves here by handoff, which
 * that node starts once its own view has been still for cover_ms, at its next handoff
 * round (sync_ms later at most), and which lands within a round more. Sure at settle_ms,
 * sooner than that, an owner answered 404 for such keys after a kill -9
 * (tests/integration/test_kill_read.py). */
static bool sure_absent(const kv_node *k, uint64_t now)
{
	uint64_t still = (uint64_t)k->cfg.cover_ms + 2 * (uint64_t)k->cfg.sync_ms;
	if (still < k->cfg.settle_ms)
		still = k->cfg.settle_ms;
	return k->joined && now - k->view_at >= still;
}

/* Up to max distinct successors, not this node, in ring order. */
static size_t distinct_succ(const kv_node *k, ring_peer *out, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < k->nsucc && n < max; i++) {
		const ring_peer *p = &k->succ[i];
		if (p->addr == RING_ADDR_NONE || rn_id_eq(&p->id, &k->self))
			continue;
		bool dup = false;
		for (size_t j = 0; j < n && !dup; j++)
			dup = rn_id_eq(&out[j].id, &p->id);
		if (!dup)
			out[n++] = *p;
	}
	return n;
}

/* The nodes this one sees: itself and its distinct successors (all of a small ring). */
static unsigned ring_seen(const kv_node *k)
{
	ring_peer s[VIEW_MAX_SUCC];
	return 1 + (unsigned)distinct_succ(k, s, VIEW_MAX_SUCC);
}

static bool own_range(const kv_node *k, const rn_id *pos)
{
	if (k->pred.addr == RING_ADDR_NONE)
		return true; /* alone, or not told: everything is ours */
	return rn_id_in_oc(pos, &k->pred.id, &k->self);
}

/* ---- routing: who is a key's owner, as this node sees it ---- */

enum { RT_LOCAL = 0, RT_SUCC, RT_ONEHOP, RT_CACHE, RT_LOOKUP };

static bool onehop_on(const kv_node *k)
{
	return k->fed && k->mem.nup >= 2 && k->mem.nup <= k->cfg.one_hop_max;
}

static struct owner_cache *cache_slot(const kv_node *k, const rn_id *kid)
{
	return k->cache ? &k->cache[rn_id_top64(kid) % KV_CACHE_SIZE] : NULL;
}

/* The cache serves only when the member table does not: above one_hop_max members (a
 * node with no member feed routes as before, by its successors and lookups). */
static void cache_put(kv_node *k, const rn_id *kid, ring_peer p)
{
	if (!k->fed || k->mem.nup <= k->cfg.one_hop_max || p.addr == RING_ADDR_NONE)
		return;
	if (!k->cache)
		k->cache = calloc(KV_CACHE_SIZE, sizeof *k->cache);
	struct owner_cache *c = cache_slot(k, kid);
	if (c)
		*c = (struct owner_cache){*kid, p, true};
}

static void cache_drop(kv_node *k, const rn_id *kid)
{
	struct owner_cache *c = cache_slot(k, kid);
	if (c && c->set && rn_id_eq(&c->kid, kid))
		c->set = false;
}

/* The successor of pos among this node's distinct successors, when pos falls within
 * them: its index in s (n when not). */
static size_t succ_span(const kv_node *k, const rn_id *pos, const ring_peer *s, size_t n)
{
	rn_id prev = k->self;
	for (size_t i = 0; i < n; i++) {
		if (rn_id_in_oc(pos, &prev, &s[i].id))
			return i;
		prev = s[i].id;
	}
	return n;
}

/* Where a request for kid goes first (RT_*); *to is the node (addr NONE for a lookup). */
static int route_of(const kv_node *k, const rn_id *kid, ring_peer *to)
{
	rn_id pos = pos_of(k, kid);
	if (own_range(k, &pos)) {
		*to = (ring_peer){k->self, k->addr};
		return RT_LOCAL;
	}
	/* a key within this node's successor list: its owner is known without a lookup (the
	 * whole ring, in a ring of up to 9 nodes). A view that is out of date sends it to a
	 * neighbour of the owner, which coordinates the replicas it sees, as after a lookup
	 * that raced a join. */
	ring_peer s[VIEW_MAX_SUCC];
	size_t ns = distinct_succ(k, s, VIEW_MAX_SUCC), i = succ_span(k, &pos, s, ns);
	if (i < ns) {
		*to = s[i];
		return RT_SUCC;
	}
	if (onehop_on(k) && kvm_succ(&k->mem, &pos, &k->self, to, 1) == 1)
		return RT_ONEHOP;
	const struct owner_cache *c = cache_slot(k, kid);
	if (c && c->set && rn_id_eq(&c->kid, kid)) {
		*to = c->p;
		return RT_CACHE;
	}
	to->addr = RING_ADDR_NONE;
	return RT_LOOKUP;
}

/* A MOVED answer's hint: this node's view of the key's first R successors (pos is not in
 * its own range). */
static size_t hint_for(const kv_node *k, const rn_id *pos, ring_peer *out)
{
	size_t max = k->cfg.replicas, n = 0;
	ring_peer s[VIEW_MAX_SUCC];
	size_t ns = distinct_succ(k, s, VIEW_MAX_SUCC), i = succ_span(k, pos, s, ns);
	if (i < ns) {
		for (; i < ns && n < max; i++)
			out[n++] = s[i];
		return n;
	}
	if (onehop_on(k))
		n = kvm_succ(&k->mem, pos, &k->self, out, max);
	/* the predecessor is known better than the table: it goes first when it is nearer */
	if (k->pred.addr == RING_ADDR_NONE || rn_id_eq(&k->pred.id, &k->self))
		return n;
	rn_id dp, d0;
	rn_id_sub(&dp, &k->pred.id, pos);
	if (n)
		rn_id_sub(&d0, &out[0].id, pos);
	if (n && (rn_id_eq(&out[0].id, &k->pred.id) || rn_id_cmp(&dp, &d0) > 0))
		return n;
	if (n == max)
		n--;
	memmove(&out[1], &out[0], n * sizeof *out);
	out[0] = k->pred;
	return n + 1;
}

ring_peer kv_route(const kv_node *k, const rn_id *kid, const char **how)
{
	static const char *const names[] = {"local", "successors", "onehop", "cache", "lookup"};
	ring_peer to;
	int rt = route_of(k, kid, &to);
	if (how)
		*how = names[rt];
	return to;
}

static int cmp_peer_id(const void *a, const void *b)
{
	return rn_id_cmp(&((const ring_peer *)a)->id, &((const ring_peer *)b)->id);
}

void kv_member_up(kv_node *k, uint64_t now, ring_peer p)
{
	(void)now;
	if (k->cfg.one_hop_max && !rn_id_eq(&p.id, &k->self)) {
		kvm_up(&k->mem, p, KVM_FEED);
		k->fed = true;
	}
	k->st.members_up = k->mem.nup;
}

void kv_member_down(kv_node *k, uint64_t now, const rn_id *id)
{
	(void)now;
	if (!rn_id_eq(id, &k->self))
		kvm_down(&k->mem, id);
	k->st.members_up = k->mem.nup;
}

void kv_set_members(kv_node *k, uint64_t now, const ring_peer *p, size_t n)
{
	if (!k->cfg.one_hop_max)
		return;
	ring_peer *sorted = n ? malloc(n * sizeof *sorted) : NULL;
	if (n && !sorted)
		return; /* the old table stays: routing corrects itself */
	if (n) {
		memcpy(sorted, p, n * sizeof *sorted);
		qsort(sorted, n, sizeof *sorted, cmp_peer_id);
	}
	/* the ones to take down first (a down may compact the table under an index) */
	size_t ngone = 0;
	rn_id *gone = k->mem.n ? malloc(k->mem.n * sizeof *gone) : NULL;
	for (size_t i = 0; gone && i < k->mem.n; i++) {
		const kvm_entry *e = &k->mem.e[i];
		if (e->up && e->src == KVM_FEED && !rn_id_eq(&e->p.id, &k->self) &&
		    (!n || !bsearch(&e->p, sorted, n, sizeof *sorted, cmp_peer_id)))
			gone[ngone++] = e->p.id;
	}
	for (size_t i = 0; i < ngone; i++)
		kvm_down(&k->mem, &gone[i]);
	free(gone);
	for (size_t i = 0; i < n; i++)
		kv_member_up(k, now, sorted[i]);
	free(sorted);
	k->st.members_up = k->mem.nup;
}

/* ---- lifecycle ---- */

kv_node *kv_new(const kv_config *cfg, const kv_driver *drv, const rn_id *self, ring_addr addr)
{
	if (kv_config_check(cfg) < 0)
		return NULL;
	kv_node *k = calloc(1, sizeof *k);
	if (!k)
		return NULL;
	k->cfg = *cfg;
	k->d = *drv;
	k->self = *self;
	k->addr = addr;
	k->self_top = rn_id_top64(self);
	k->pred.addr = RING_ADDR_NONE;
	memset(&k->ext, 0, sizeof k->ext);
	if (cfg->bits < RN_ID_BITS) {
		rn_id one, p;
		memset(&p, 0, sizeof p);
		rn_id_add_pow2(&p, &p, RN_ID_BITS - cfg->bits);
		memset(&one, 0, sizeof one);
		one.b[RN_ID_BYTES - 1] = 1;
		rn_id_sub(&k->ext, &p, &one);
	}
	k->sync_at = cfg->sync_ms;
	k->handoff_at = cfg->cover_ms;
	k->scrub_at = cfg->scrub_ms;
	kvm_init(&k->mem, cfg->one_hop_max ? 2 * (size_t)cfg->one_hop_max + 64 : 0);
	if (cfg->one_hop_max && kvm_up(&k->mem, (ring_peer){*self, addr}, KVM_FEED) < 0) {
		kv_free(k);
		return NULL;
	}
	k->st.members_up = k->mem.nup;
	return k;
}

void kv_free(kv_node *k)
{
	if (!k)
		return;
	while (k->ops)
		op_free(k, k->ops);
	kvm_free(&k->mem);
	kvn_free(k->ncache);
	free(k->cache);
	free(k);
}

const kv_stats *kv_get_stats(const kv_node *k)
{
	return &k->st;
}

size_t kv_get_view(const kv_node *k, ring_peer *pred, ring_peer *succ, size_t max)
{
	*pred = k->pred;
	size_t n = k->nsucc < max ? k->nsucc : max;
	memcpy(succ, k->succ, n * sizeof *succ);
	return n;
}

void kv_set_view(kv_node *k, uint64_t now, bool joined, ring_peer pred, const ring_peer *succ,
                 size_t nsucc)
{
	if (nsucc > VIEW_MAX_SUCC)
		nsucc = VIEW_MAX_SUCC;
	/* what placement depends on: the predecessor and the first R successors */
	size_t watch = k->cfg.replicas < nsucc ? k->cfg.replicas : nsucc;
	size_t oldwatch = k->cfg.replicas < k->nsucc ? k->cfg.replicas : k->nsucc;
	bool changed = joined != k->joined || pred.addr != k->pred.addr ||
	               (pred.addr != RING_ADDR_NONE && !rn_id_eq(&pred.id, &k->pred.id)) ||
	               watch != oldwatch;
	for (size_t i = 0; i < watch && !changed; i++)
		changed = succ[i].addr != k->succ[i].addr || !rn_id_eq(&succ[i].id, &k->succ[i].id);
	if (pred.addr != k->pred.addr || !rn_id_eq(&pred.id, &k->pred.id))
		k->pred_at = now;
	k->joined = joined;
	k->pred = pred;
	k->had_pred = k->had_pred || pred.addr != RING_ADDR_NONE;
	for (size_t i = 0; i < nsucc && !k->had_succ; i++)
		k->had_succ = succ[i].addr != RING_ADDR_NONE && !rn_id_eq(&succ[i].id, &k->self);
	if (nsucc)
		memcpy(k->succ, succ, nsucc * sizeof *succ);
	k->nsucc = nsucc;
	if (changed) {
		k->view_at = now;
		memset(k->matched, 0, sizeof k->matched); /* the replicas may be others now */
		for (size_t i = 0; i < LEASE_PEERS; i++)
			k->lout[i].synced = false; /* ... and missed writes it did not count */
		k->dirty = k->foreign = true;
		if (joined && k->sync_at > now + SYNC_AGAIN_MS)
			k->sync_at = now + SYNC_AGAIN_MS; /* the ranges moved: compare soon */
	}
}

/* ---- answering ---- */

static void reply_client(kv_node *k, op *e, kv_status st, const char *why, const kv_msg *resp)
{
	kv_reply r;
	memset(&r, 0, sizeof r);
	r.status = st;
	r.why = why;
	if (resp) {
		r.has_rec = resp->has_rec;
		r.rec = resp->rec;
		r.coordinator = resp->from.id;
		r.acked = resp->acked;
		r.nacked = resp->nacked;
		r.replayed = resp->flags & F_REPLAYED;
	}
	if (st == KV_UNSURE || st == KV_UNKNOWN || st == KV_NOT_APPLIED)
		r.retry_ms = RETRY_MS;
	k->d.reply(k->d.ctx, e->client, &r);
	op_free(k, e);
}

static void on_resp(kv_node *k, uint64_t now, const kv_msg *m);

/* The coordinator's answer goes to the entry node, which may be this one. */
static void coord_answer(kv_node *k, uint64_t now, op *c, kv_status st, bool has_rec,
                         const kv_record *rec)
{
	if (c->replied)
		return;
	c->replied = true;
	ring_peer acked[MAX_TARGETS];
	size_t na = 0;
	for (unsigned i = 0; i < c->nt; i++)
		if (c->t[i].state == RS_DONE)
			acked[na++] = c->t[i].p;
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_RESP;
	m.to = c->origin;
	m.req = c->origin_req;
	m.status = (uint8_t)st;
	m.flags = c->replayed ? F_REPLAYED : 0;
	m.has_rec = has_rec;
	if (has_rec) {
		m.rec = *rec;
		m.rec.hist = NULL; /* the entry node has no use for it */
		m.rec.histlen = 0;
	}
	m.acked = acked;
	m.nacked = na;
	if (c->origin == k->addr) {
		m.from = (ring_peer){k->self, k->addr};
		on_resp(k, now, &m);
	} else {
		send_msg(k, &m);
	}
}

/* ---- read leases ----
 * An owner lets each replica that matched its digest, and missed no write it has
 * acknowledged since, answer gets of its range for lease_ms from when the replica asked;
 * until the lease it granted ends, it acknowledges a write only once that replica holds
 * it too. So a replica under a lease holds every write acknowledged before a get it
 * answers. See kv.h, "Read leases". */

static size_t sync_targets(kv_node *k, ring_peer *out);

static bool leases_on(const kv_node *k)
{
	return k->cfg.lease_ms != 0;
}

static cover *cover_of(kv_node *k, const rn_id *from)
{
	for (int i = 0; i < MAX_COVERS; i++)
		if (k->covers[i].used && rn_id_eq(&k->covers[i].from, from))
			return &k->covers[i];
	return NULL;
}

static lease_out *lout_of(kv_node *k, const rn_id *id)
{
	for (int i = 0; i < LEASE_PEERS; i++)
		if (k->lout[i].used && rn_id_eq(&k->lout[i].id, id))
			return &k->lout[i];
	return NULL;
}

/* An entry for a replica, made before a digest goes to it, so that a write acknowledged
 * without it from then on is counted. One whose lease still runs is never reused. */
static void lout_make(kv_node *k, uint64_t now, const ring_peer *p)
{
	lease_out *had = lout_of(k, &p->id);
	if (had && had->cache && had->until <= now)
		had->used = false; /* a cache holder that became a replica: a replica's entry */
	else if (had)
		return;
	lease_out *slot = NULL;
	for (int i = 0; i < LEASE_PEERS && !(slot && !slot->used); i++) {
		lease_out *l = &k->lout[i];
		if (!l->used || (l->until <= now && (!slot || slot->synced)))
			slot = l; /* unused, else lapsed, and one not in step before one in step */
	}
	if (slot)
		*slot = (lease_out){
		    .id = p->id, .addr = p->addr, .missed_round = k->round, .used = true};
}

static bool acked_by(const op *c, const rn_id *id)
{
	for (unsigned j = 0; j < c->nt; j++)
		if (c->t[j].state == RS_DONE && rn_id_eq(&c->t[j].p.id, id))
			return true;
	return false;
}

/* Holder i has c's record: a replica among c's targets acknowledged it; a cache holder
 * acknowledged the push, or was not pushed it (its lease began after c's write). */
static bool holder_has(const kv_node *k, const op *c, int i)
{
	if (k->lout[i].cache) /* (or it holds a new lease, begun after the push) */
		return !(c->near_sent >> i & 1) || (c->near_acked >> i & 1) ||
		       k->lout[i].gen_at > c->near_at;
	return c->kind == OP_RELAY || acked_by(c, &k->lout[i].id); /* (a relay: only caches) */
}

/* A write is acknowledged: a replica that does not hold it is no longer in step. */
static void lease_missed(kv_node *k, const op *c)
{
	for (int i = 0; i < LEASE_PEERS; i++) {
		lease_out *l = &k->lout[i];
		if (l->used && !holder_has(k, c, i)) {
			l->synced = false;
			l->missed_round = k->round;
		}
	}
}

/* The earliest end of a lease whose holder has not acknowledged c (0: none). */
static uint64_t lease_wait(const kv_node *k, uint64_t now, const op *c)
{
	uint64_t at = 0;
	for (int i = 0; i < LEASE_PEERS; i++) {
		const lease_out *l = &k->lout[i];
		if (l->used && l->until > now && !holder_has(k, c, i) && (!at || l->until < at))
			at = l->until;
	}
	return at;
}

/* A write this node coordinates goes to every holder of a running lease too. One that
 * another owner's leases may still cover (a key outside this node's range, or the view
 * changed within a lease's length: the range may be newly this node's) needs every
 * replica, whose successors those holders are. */
static void lease_targets(kv_node *k, uint64_t now, op *c, const rn_id *pos)
{
	if (!own_range(k, pos) || now - k->view_at < (uint64_t)k->cfg.lease_ms + LEASE_SLACK(k))
		c->need = c->nt;
	for (int i = 0; i < LEASE_PEERS; i++) {
		const lease_out *l = &k->lout[i];
		bool in = false;
		for (unsigned j = 0; j < c->nt && !in; j++)
			in = rn_id_eq(&c->t[j].p.id, &l->id);
		if (l->used && !l->cache && l->until > now && !in && c->nt < MAX_TARGETS)
			c->t[c->nt++] = (target){.p = {l->id, l->addr}};
	}
}

/* The owner grants its range now (settled, a predecessor known): the answer's range. */
static bool lease_grantable(const kv_node *k, uint64_t now, kv_msg *a)
{
	if (!leases_on(k) || !settled(k, now) || k->pred.addr == RING_ADDR_NONE ||
	    rn_id_eq(&k->pred.id, &k->self))
		return false;
	a->lo = k->pred.id;
	a->hi = k->self;
	return true;
}

/* A slot for a cache holder: its own, else an unused one, else one whose cache lease
 * lapsed (a replica's entry is not taken: lout_make keeps those). NULL when NEAR_HOLDERS
 * leases run, or the asker has a replica's entry. */
static lease_out *lout_cache_slot(kv_node *k, uint64_t now, const rn_id *id)
{
	lease_out *l = lout_of(k, id);
	if (l && !l->cache && l->until <= now) {
		ring_peer to[KV_MAX_R];
		size_t nto = sync_targets(k, to);
		bool is_target = false;
		for (size_t i = 0; i < nto && !is_target; i++)
			is_target = rn_id_eq(&to[i].id, id);
		if (!is_target)
			l->used = false; /* a replica's entry from before the ring moved */
	}
	if (l && l->used)
		return l->cache ? l : NULL;
	l = NULL;
	unsigned running = 0;
	for (int i = 0; i < LEASE_PEERS; i++) {
		lease_out *x = &k->lout[i];
		running += x->used && x->cache && x->until > now;
		/* (lapsed longer than an op lives: no write still counts its pushes) */
		if (!x->used ||
		    (x->cache && x->until + k->cfg.op_timeout_ms <= now && (!l || l->used)))
			l = x;
	}
	if (running >= NEAR_HOLDERS || !l)
		return NULL;
	*l = (lease_out){.id = *id, .used = true, .cache = true};
	return l;
}

/* A cache lease: granted for lease_ms, under the same number while it runs without a
 * missed push, under a new one after a lapse (the holder's copies go with the old). */
static void on_cache_lease_req(kv_node *k, uint64_t now, const kv_msg *m)
{
	kv_msg a;
	answer_to(&a, KV_MSG_LEASE, m);
	a.flags = KV_F_CACHE;
	a.status = KV_UNSURE;
	lease_out *l = lout_cache_slot(k, now, &m->from.id);
	if (l && (l->synced || l->until <= now) && lease_grantable(k, now, &a)) {
		if (l->until <= now || !l->synced) {
			l->gen = ++k->near_gen;
			l->gen_at = now;
			l->synced = true;
		}
		l->until = now + k->cfg.lease_ms;
		l->addr = m->from.addr;
		l->glo = a.lo;
		l->ghi = a.hi;
		a.status = KV_OK;
		a.round = l->gen;
		k->st.leases_granted++;
	}
	send_msg(k, &a);
}

static void on_lease_req(kv_node *k, uint64_t now, const kv_msg *m)
{
	if (m->flags & KV_F_CACHE) {
		on_cache_lease_req(k, now, m);
		return;
	}
	kv_msg a;
	answer_to(&a, KV_MSG_LEASE, m);
	a.status = KV_UNSURE;
	ring_peer to[KV_MAX_R];
	size_t nto = sync_targets(k, to);
	bool is_target = false;
	for (size_t i = 0; i < nto && !is_target; i++)
		is_target = rn_id_eq(&to[i].id, &m->from.id);
	lease_out *l = lout_of(k, &m->from.id);
	if (l && !l->cache && l->synced && is_target && lease_grantable(k, now, &a)) {
		l->until = now + k->cfg.lease_ms;
		l->addr = m->from.addr;
		a.status = KV_OK;
		k->st.leases_granted++;
	}
	send_msg(k, &a);
}

static near_lease *near_of(kv_node *k, const rn_id *owner)
{
	for (int i = 0; i < NEAR_OWNERS; i++)
		if (k->near[i].used && rn_id_eq(&k->near[i].owner, owner))
			return &k->near[i];
	return NULL;
}

static void on_near_lease(kv_node *k, uint64_t now, const kv_msg *m)
{
	near_lease *s = near_of(k, &m->from.id);
	if (!s || !s->req || m->req != s->req || m->status != KV_OK)
		return;
	/* a new lease: nothing cached under an old one (also after a lapse here, as a restarted
	 * owner numbers its leases from 1 again) */
	if (!s->epoch || m->round != s->gen || s->until <= now) {
		s->gen = m->round;
		if (!++k->near_epoch)
			++k->near_epoch;
		s->epoch = k->near_epoch;
	}
	s->glo = m->lo;
	s->ghi = m->hi;
	s->until = s->asked_at + k->cfg.lease_ms - LEASE_SLACK(k);
}

static void on_lease(kv_node *k, uint64_t now, const kv_msg *m)
{
	if (m->flags & KV_F_CACHE) {
		on_near_lease(k, now, m);
		return;
	}
	cover *l = cover_of(k, &m->from.id);
	if (!l || !l->req || m->req != l->req || m->status != KV_OK)
		return;
	l->glo = m->lo;
	l->ghi = m->hi;
	l->until = l->asked_at + k->cfg.lease_ms - LEASE_SLACK(k);
}

/* A lease request (flags: KV_F_CACHE for a cache lease) to an owner; its id in *req. */
static void lease_ask(kv_node *k, uint64_t now, ring_addr to, uint8_t flags, uint64_t *req,
                      uint64_t *asked_at)
{
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_LEASE_REQ;
	m.flags = flags;
	m.to = to;
	m.req = *req = next_req(k);
	*asked_at = now;
	send_msg(k, &m);
}

/* Asks again, every third of a lease, each owner whose digests matched this node's copy
 * and to which it forwarded gets lately (a node that only writes holds no lease, so its
 * owners' writes wait for no one more than W). */
static void lease_round(kv_node *k, uint64_t now)
{
	k->lease_at = now + k->cfg.lease_ms / 3;
	unsigned held = 0;
	for (int i = 0; i < MAX_COVERS; i++) {
		cover *l = &k->covers[i];
		if (!l->used)
			continue;
		held += l->until > now;
		if (!l->clean || l->addr == RING_ADDR_NONE || now - l->at > k->cfg.cover_ms ||
		    !l->wanted_at || now - l->wanted_at > LEASE_WANT_MS)
			continue;
		lease_ask(k, now, l->addr, 0, &l->req, &l->asked_at);
	}
	k->st.leases_held = held;
	unsigned nheld = 0, holders = 0;
	for (int i = 0; i < NEAR_OWNERS; i++) {
		near_lease *s = &k->near[i];
		if (!s->used)
			continue;
		nheld += s->until > now;
		if (s->addr == RING_ADDR_NONE || now - s->wanted_at > LEASE_WANT_MS)
			continue;
		lease_ask(k, now, s->addr, KV_F_CACHE, &s->req, &s->asked_at);
	}
	for (int i = 0; i < LEASE_PEERS; i++)
		holders += k->lout[i].used && k->lout[i].cache && k->lout[i].until > now;
	k->st.cache_leases = nheld;
	k->st.cache_holders = holders;
}

/* A get this node can answer from its own copy, under a lease of the key's range whose
 * owner is not known to have changed (the view names no other): answered (true). A key it
 * lacks goes to the owner: only there is "not found" sure. */
static bool replica_read(kv_node *k, uint64_t now, op *e)
{
	if (!leases_on(k) || !settled(k, now))
		return false;
	rn_id pos = pos_of(k, &e->rec.r.kid);
	cover *l = NULL;
	for (int i = 0; i < MAX_COVERS && !l; i++) {
		cover *c = &k->covers[i];
		if (c->used && rn_id_in_oc(&pos, &c->lo, &c->hi))
			l = c;
	}
	if (!l) /* not a key this node replicates: the route alone (entry_lookup) */
		return false;
	ring_peer to;
	int rt = route_of(k, &e->rec.r.kid, &to);
	if (rt == RT_LOCAL || (rt != RT_LOOKUP && !rn_id_eq(&to.id, &l->from)))
		return false;
	l->wanted_at = now; /* gets of its range come here: ask it for a lease */
	kv_record cur;
	if (now >= l->until || !rn_id_in_oc(&pos, &l->glo, &l->ghi) ||
	    k->d.get(k->d.ctx, &e->rec.r.kid, &cur) != 0)
		return false;
	if (!(e->flags & KV_F_UNCHECKED) && damaged(k, &cur)) {
		k->st.damaged_seen++;
		return false; /* the owner's read finds a good copy and repairs this one */
	}
	k->st.replica_reads++;
	ring_peer me = {k->self, k->addr};
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.has_rec = true;
	m.rec = cur;
	m.from = me;
	m.acked = &me;
	m.nacked = 1;
	reply_client(k, e, cur.v.tomb ? KV_NOT_FOUND : KV_OK, NULL, &m);
	return true;
}

/* ---- cache leases (kv.h, "Cache leases") ---- */

/* The owner stored r: push it to every cache holder whose running lease covers it, with
 * req (0: no ACK wanted). Returns the holders pushed to (lout indices). */
static uint32_t near_push(kv_node *k, uint64_t now, const kv_record *r, uint64_t req)
{
	if (!leases_on(k))
		return 0;
	rn_id pos = pos_of(k, &r->kid);
	uint32_t mask = 0;
	for (int i = 0; i < LEASE_PEERS; i++) {
		const lease_out *l = &k->lout[i];
		if (!l->used || !l->cache || l->until <= now ||
		    !rn_id_in_oc(&pos, &l->glo, &l->ghi))
			continue;
		kv_msg m;
		memset(&m, 0, sizeof m);
		m.type = KV_MSG_REPL;
		m.flags = KV_F_CACHE;
		m.to = l->addr;
		m.req = req;
		m.has_rec = true;
		m.rec = *r;
		send_msg(k, &m);
		k->st.cache_pushes++;
		mask |= 1u << i;
	}
	return mask;
}

/* A running cache lease this node granted covers kid. */
static bool near_covered(const kv_node *k, uint64_t now, const rn_id *kid)
{
	if (!leases_on(k))
		return false;
	rn_id pos = pos_of(k, kid);
	for (int i = 0; i < LEASE_PEERS; i++) {
		const lease_out *l = &k->lout[i];
		if (l->used && l->cache && l->until > now && rn_id_in_oc(&pos, &l->glo, &l->ghi))
			return true;
	}
	return false;
}

/* A holder: the owner stored a newer version; a copy older than it goes (or is replaced). */
static void on_near_push(kv_node *k, const kv_msg *m)
{
	near_lease *s = near_of(k, &m->from.id);
	if (s)
		s->ninval++;  /* an answer of this owner's that was out now is not kept */
	if (s && k->ncache) { /* (only an owner this node asked for a lease changes its cache) */
		kvn_update(k->ncache, &m->rec);
		k->st.cache_entries = kvn_count(k->ncache);
		k->st.cache_bytes = kvn_bytes(k->ncache);
	}
	if (!m->req)
		return;
	kv_msg a;
	answer_to(&a, KV_MSG_ACK, m);
	a.flags = KV_F_CACHE;
	a.has_rec = true;
	a.rec.kid = m->rec.kid;
	a.rec.v = m->rec.v;
	send_msg(k, &a);
}

static bool near_valid(const near_lease *s, uint64_t now, const rn_id *pos)
{
	return s->epoch && now < s->until && rn_id_in_oc(pos, &s->glo, &s->ghi);
}

/* A get of a key this node does not replicate went to `owner`, which answered: ask it for
 * a cache lease from now on (a slot for it: unused, else the one wanted least lately whose
 * lease has lapsed). */
static void near_note(kv_node *k, uint64_t now, const ring_peer *owner, const rn_id *pos)
{
	for (int i = 0; i < MAX_COVERS; i++) {
		const cover *c = &k->covers[i];
		if (c->used && now - c->at <= k->cfg.cover_ms && rn_id_in_oc(pos, &c->lo, &c->hi))
			return; /* a replica of it: the read lease is the way */
	}
	near_lease *s = near_of(k, &owner->id);
	for (int i = 0; i < NEAR_OWNERS && !s; i++)
		if (!k->near[i].used)
			s = &k->near[i];
	near_lease *old = NULL;
	for (int i = 0; i < NEAR_OWNERS && !s; i++) {
		near_lease *x = &k->near[i];
		if (x->until <= now && (!old || x->wanted_at < old->wanted_at))
			old = x;
	}
	if (!s && !(s = old))
		return;
	if (!s->used || !rn_id_eq(&s->owner, &owner->id))
		*s = (near_lease){.owner = owner->id, .used = true};
	s->addr = owner->addr;
	s->wanted_at = now;
}

/* A get answered from the cache: a copy filled under the cache lease of the owner that
 * this node's view names for the key, while that lease runs. */
static bool near_read(kv_node *k, uint64_t now, op *e)
{
	if (!leases_on(k) || !k->ncache || !settled(k, now))
		return false;
	ring_peer to;
	int rt = route_of(k, &e->rec.r.kid, &to);
	near_lease *s = rt == RT_LOCAL || rt == RT_LOOKUP ? NULL : near_of(k, &to.id);
	if (!s)
		return false;
	s->wanted_at = now;
	rn_id pos = pos_of(k, &e->rec.r.kid);
	kv_record cur;
	if (!near_valid(s, now, &pos) || !kvn_get(k->ncache, &e->rec.r.kid, s->epoch, &cur, now))
		return false;
	k->st.cache_reads++;
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.has_rec = true;
	m.rec = cur;
	m.from = (ring_peer){k->self, k->addr};
	m.acked = &to; /* the owner whose copy it is */
	m.nacked = 1;
	reply_client(k, e, KV_OK, NULL, &m);
	return true;
}

/* A get about to go to `to`: whether its answer may be kept (a cache lease of to's runs). */
static void near_mark(kv_node *k, uint64_t now, op *e, const ring_peer *to)
{
	e->near_ok = false;
	if (e->kop != KV_GET || !leases_on(k))
		return;
	near_lease *s = near_of(k, &to->id);
	rn_id pos = pos_of(k, &e->rec.r.kid);
	if (!s || !near_valid(s, now, &pos))
		return;
	e->near_ok = true;
	e->near_epoch = s->epoch;
	e->near_ninval = s->ninval;
}

/* The owner's answer to a get: kept if it came under the lease that ran when the get went
 * out, with no push from that owner since (a push may have overtaken it), and the lease
 * still runs. */
static void near_fill(kv_node *k, uint64_t now, const op *e, const kv_msg *m)
{
	if (e->kop != KV_GET || !leases_on(k) || m->from.addr == k->addr ||
	    (m->status != KV_OK && m->status != KV_NOT_FOUND))
		return;
	rn_id pos = pos_of(k, &e->rec.r.kid);
	near_note(k, now, &m->from, &pos);
	near_lease *s = near_of(k, &m->from.id);
	if (!e->near_ok || !s || s->epoch != e->near_epoch || s->ninval != e->near_ninval ||
	    !near_valid(s, now, &pos) || m->status != KV_OK || !m->has_rec || m->rec.v.tomb ||
	    (e->flags & KV_F_UNCHECKED) || !rn_id_eq(&m->rec.kid, &e->rec.r.kid))
		return;
	if (!k->ncache && !(k->ncache = kvn_new(NEAR_SETS, NEAR_BYTES, NEAR_VAL_MAX)))
		return;
	if (kvn_put(k->ncache, &m->rec, s->epoch, now))
		k->st.cache_fills++;
	k->st.cache_entries = kvn_count(k->ncache);
	k->st.cache_bytes = kvn_bytes(k->ncache);
}

/* A holder acknowledged the push of op o (a COORD's write or a RELAY): true if it was one. */
static bool near_acked(kv_node *k, op *o, const kv_msg *m)
{
	for (int i = 0; i < LEASE_PEERS; i++)
		if ((o->near_sent >> i & 1) && k->lout[i].used && k->lout[i].cache &&
		    rn_id_eq(&k->lout[i].id, &m->from.id)) {
			o->near_acked |= 1u << i;
			return true;
		}
	return false;
}

/* A replica write from another coordinator, pushed on to cache holders: its ACK goes once
 * they have it, or their leases have ended. */
static void relay_finish(kv_node *k, uint64_t now, op *o, bool final)
{
	uint64_t wait = lease_wait(k, now, o);
	if (wait) {
		/* a holder that has not acknowledged it a quarter lease on is renewed no more,
		 * so its lease ends and the ACK goes */
		uint64_t late = o->w_at + k->cfg.lease_ms / 4;
		if (now >= late)
			lease_missed(k, o);
		if (final) {
			op_free(
			    k, o); /* a lease still runs: no ACK (the write counts as not stored) */
			return;
		}
		o->retry_at = now < late && late < wait ? late : wait;
		return;
	}
	lease_missed(k, o);
	kv_msg a;
	memset(&a, 0, sizeof a);
	a.type = KV_MSG_ACK;
	a.to = o->origin;
	a.req = o->origin_req;
	a.has_rec = true;
	a.rec.kid = o->rec.r.kid;
	a.rec.v = o->hv;
	send_msg(k, &a);
	op_free(k, o);
}

/* ---- coordinating ---- */

static void coord_targets(kv_node *k, op *c)
{
	ring_peer s[VIEW_MAX_SUCC];
	size_t ns = distinct_succ(k, s, VIEW_MAX_SUCC);
	c->t[0] = (target){.p = {k->self, k->addr}};
	c->nt = 1;
	for (size_t i = 0; i < ns && c->nt < k->cfg.replicas; i++)
		c->t[c->nt++] = (target){.p = s[i]};
}

/* A replica failed: take the next successor not yet asked in its place (a sloppy quorum:
 * the stand-in hands the record on once the ring has settled). */
static bool coord_substitute(kv_node *k, op *c, kv_msg *m)
{
	if (c->nt >= MAX_TARGETS)
		return false;
	ring_peer s[VIEW_MAX_SUCC];
	size_t ns = distinct_succ(k, s, VIEW_MAX_SUCC);
	for (size_t i = 0; i < ns; i++) {
		bool asked = false;
		for (unsigned j = 0; j < c->nt && !asked; j++)
			asked = rn_id_eq(&c->t[j].p.id, &s[i].id);
		if (asked)
			continue;
		c->t[c->nt++] = (target){.p = s[i]};
		m->to = s[i].addr;
		send_msg(k, m);
		return true;
	}
	return false;
}

static void coord_request_msg(const op *c, kv_msg *m)
{
	memset(m, 0, sizeof *m);
	m->req = c->req;
	m->rec = c->rec.r;
	m->has_rec = true;
	if (c->kop == KV_GET) {
		m->type = KV_MSG_READ;
		m->rec.val = NULL;
		m->rec.vlen = 0;
	} else {
		m->type = KV_MSG_REPL;
	}
}

static void coord_finish_write(kv_node *k, uint64_t now, op *c, bool final)
{
	unsigned live = c->nt - c->failed;
	uint64_t wait = c->replied ? 0 : lease_wait(k, now, c), hold = wait;
	uint64_t nb = !c->replied && c->not_before > now ? c->not_before : 0;
	if (nb && (!hold || nb < hold))
		hold = nb;
	if (wait && c->acks >= c->need) {
		if (!c->waited)
			c->w_at = now;
		c->waited = true;
		/* a holder that has not stored it a quarter lease after W did is renewed no
		 * more, so its lease ends and the write is answered */
		uint64_t late = c->w_at + k->cfg.lease_ms / 4;
		if (now >= late)
			lease_missed(k, c);
		else if (late < hold)
			hold = late;
	}
	if (!c->replied && c->acks >= c->need && !wait && !nb) {
		lease_missed(k, c);
		k->st.lease_waits += c->waited;
		kv_record a = c->rec.r;
		if (c->replay_old) { /* that write's version, not the value that replaced it */
			a.v = c->replay_v;
			a.val = NULL;
			a.vlen = 0;
		}
		coord_answer(k, now, c, KV_OK, true, &a);
	} else if (!c->replied && (final || live < c->need)) {
		lease_missed(k, c); /* it may be applied: a holder without it is not in step */
		if (c->acks)
			coord_answer(k, now, c, KV_UNKNOWN, false,
			             NULL); /* on some replicas: may be applied */
		else
			coord_answer(k, now, c, KV_ERROR, false, NULL);
	}
	if (c->replied)
		hold = 0;
	c->retry_at = hold; /* a tick looks again when that lease ends */
	if (final || (!hold && c->acks + c->failed >= c->nt))
		op_free(k, c);
}

/* Sends the newest record to every replica that answered with less (read repair). */
static void read_repair(kv_node *k, uint64_t now, op *c)
{
	if (!c->has_best)
		return;
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_REPL;
	m.rec = c->best.r;
	m.has_rec = true;
	for (unsigned i = 0; i < c->nt; i++) {
		target *t = &c->t[i];
		if (t->state != RS_DONE ||
		    (!t->damaged && t->has && kv_version_cmp(&t->v, &c->best.r.v) >= 0))
			continue;
		bool fix = t->damaged && kv_version_cmp(&t->v, &c->best.r.v) <= 0;
		k->st.read_repairs++;
		k->st.damaged_repaired += fix;
		t->has = true;
		t->damaged = false;
		t->v = c->best.r.v;
		if (i == 0) {
			kv_version held;
			if (fix)
				k->d.put(k->d.ctx, &c->best.r); /* same version, good bytes */
			else if (apply(k, &c->best.r, &held) == 1)
				near_push(k, now, &c->best.r, 0);
			continue;
		}
		m.flags = fix ? KV_F_DAMAGED : 0;
		m.to = t->p.addr;
		k->st.repl_sent++;
		k->st.sync_bytes += m.rec.klen + m.rec.vlen + 48;
		k->st.repair_data_bytes += m.rec.klen + m.rec.vlen + 48;
		send_msg(k, &m);
	}
}

static bool any_damaged(const op *c)
{
	for (unsigned i = 0; i < c->nt; i++)
		if (c->t[i].damaged)
			return true;
	return false;
}

static void coord_finish_read(kv_node *k, uint64_t now, op *c, bool final)
{
	bool all = c->answers + c->failed >= c->nt;
	/* every replica, not just a read quorum: while the ring moves, the replicas a write
	 * reached and the ones a read asks need not overlap in R + 1 - W (answering at the
	 * quorum gave stale reads under heavy churn in the simulator) */
	if (!c->replied && (all || final)) {
		unsigned need = c->need < c->nt ? c->need : c->nt;
		if (c->answers < need)
			coord_answer(k, now, c, KV_UNSURE, false, NULL);
		else if (c->has_best && !c->best.r.v.tomb)
			coord_answer(k, now, c, KV_OK, true, &c->best.r);
		else if (!c->has_best && any_damaged(c))
			coord_answer(k, now, c, KV_UNSURE, false, NULL); /* no good copy answered */
		else if (c->has_best)                                    /* deleted: say when */
			coord_answer(k, now, c, KV_NOT_FOUND, true, &c->best.r);
		else if (c->answers == c->nt && c->nt >= k->cfg.replicas && sure_absent(k, now))
			coord_answer(k, now, c, KV_NOT_FOUND, false, NULL);
		else if (c->answers == c->nt && c->failed == 0 && sure_absent(k, now) &&
		         c->nt == ring_seen(k))
			coord_answer(k, now, c, KV_NOT_FOUND, false,
			             NULL); /* a ring smaller than R */
		else
			coord_answer(k, now, c, KV_UNSURE, false, NULL);
	}
	read_repair(k, now, c);
	if (all || final)
		op_free(k, c);
}

static void coord_finish(kv_node *k, uint64_t now, op *c, bool final)
{
	if (c->kop == KV_GET)
		coord_finish_read(k, now, c, final);
	else
		coord_finish_write(k, now, c, final);
}

/* Whether a conditional write may go ahead, given what the store answered for its key (rc,
 * cur). The write's own version already held is a retry of it, which goes ahead (and
 * changes nothing). */
static bool cond_holds(const kv_msg *m, int rc, const kv_record *cur)
{
	if (rc == 0 && kv_version_cmp(&cur->v, &m->rec.v) == 0)
		return true;
	if (!m->cond.stamp)
		return rc == RN_ENOTFOUND || (rc == 0 && cur->v.tomb);
	return rc == 0 && kv_version_cmp(&cur->v, &m->cond) == 0;
}

/* An answer to a request this node will not coordinate, with no op made for it. */
static void coord_refuse(kv_node *k, uint64_t now, ring_addr origin, uint64_t origin_req,
                         kv_status st)
{
	kv_msg r;
	memset(&r, 0, sizeof r);
	r.type = KV_MSG_RESP;
	r.to = origin;
	r.req = origin_req;
	r.status = (uint8_t)st;
	if (origin == k->addr) {
		r.from = (ring_peer){k->self, k->addr};
		on_resp(k, now, &r);
	} else {
		send_msg(k, &r);
	}
}

/* A request reached its coordinator (this node): m is a REQ, from the entry or local. */
static void coordinate(kv_node *k, uint64_t now, ring_addr origin, uint64_t origin_req,
                       const kv_msg *m)
{
	rn_id pos = pos_of(k, &m->rec.kid);
	ring_peer first;
	if (!k->had_pred && k->had_succ && k->pred.addr == RING_ADDR_NONE &&
	    !(m->flags & KV_F_HANDOFF) &&
	    !(onehop_on(k) && kvm_succ(&k->mem, &pos, NULL, &first, 1) == 1 &&
	      rn_id_eq(&first.id, &k->self))) {
		/* it has just joined and knows no predecessor yet, so every key looks like its
		 * own: a write it took (a lookup that raced the join sent it here, or its own
		 * client's once its only successor died and it looked alone, a ring of one that
		 * acknowledges one copy) would sit on this node and its successors, far from
		 * the key's replicas, until a handoff that a young node's moving view keeps
		 * putting off (the simulator lost such writes under churn). The client tries
		 * again in a moment. A key its member table says is its own (the entries' tables
		 * sent it here) it takes: its own successors are that key's replicas. */
		coord_refuse(k, now, origin, origin_req,
		             m->op == KV_GET ? KV_UNSURE : KV_NOT_APPLIED);
		return;
	}
	if (origin != k->addr && !(m->flags & (KV_F_FALLBACK | KV_F_HANDOFF | KV_F_LOOKED)) &&
	    !own_range(k, &pos)) {
		/* the entry guessed from a view that has moved on: say so, and what this node
		 * takes for the key's successors */
		ring_peer hint[KV_MAX_R];
		kv_msg r;
		memset(&r, 0, sizeof r);
		r.type = KV_MSG_RESP;
		r.to = origin;
		r.req = origin_req;
		r.status = KV_MOVED;
		r.nacked = hint_for(k, &pos, hint);
		r.acked = hint;
		send_msg(k, &r);
		return;
	}
	op *c = op_new(k, OP_COORD);
	if (!c || own_set(&c->rec, &m->rec) < 0) {
		if (c)
			op_free(k, c);
		return; /* the entry times out */
	}
	k->st.coordinated++;
	k->st.fallbacks += (m->flags & KV_F_FALLBACK) != 0;
	c->kop = m->op;
	c->flags = m->flags;
	c->origin = origin;
	c->origin_req = origin_req;
	c->deadline = now + k->cfg.op_timeout_ms;
	coord_targets(k, c);
	c->need = m->op == KV_GET ? k->cfg.read_quorum : k->cfg.write_quorum;
	if (m->op != KV_GET && c->nt < c->need && k->fed && k->mem.nup >= c->need) {
		/* fewer replicas in its view than W while its member table holds W live nodes:
		 * this node is cut off from its successors, not in a ring smaller than W, and
		 * acknowledging fewer copies than W would promise what its crash takes back */
		coord_answer(k, now, c, KV_NOT_APPLIED, false, NULL);
		op_free(k, c);
		return;
	}
	if (c->need > c->nt)
		c->need = c->nt; /* a ring of fewer than R nodes */
	if (c->kop != KV_GET && leases_on(k))
		lease_targets(k, now, c, &pos);
	hlc_seen(k, c->rec.r.v.stamp);
	/* this node first */
	kv_record cur;
	int rc = k->d.get(k->d.ctx, &c->rec.r.kid, &cur);
	if (c->kop == KV_GET) {
		/* the owner of a range that has been still for settle_ms (two anti-entropy rounds
		 * or more: any newer copy on a replica has been pulled here) answers from its own
		 * copy; otherwise, and for a key it does not have, it asks every replica */
		bool owner_read = rc == 0 && settled(k, now) && own_range(k, &pos) &&
		                  !(c->flags & KV_F_FALLBACK) && k->cfg.owner_reads;
		/* a requester that checks the value itself is sent the copy unchecked: if it is
		 * damaged, the requester asks again without the flag and the check below finds
		 * it and has it rewritten */
		bool trust = owner_read && (c->flags & KV_F_UNCHECKED);
		if (rc == 0 && !trust && damaged(k, &cur)) {
			k->st.damaged_seen++;
			c->t[0].damaged = true; /* answered, but not a copy to serve */
			c->t[0].v = cur.v;
		} else if (rc == 0) {
			c->t[0].has = true;
			c->t[0].v = cur.v;
			if (own_set(&c->best, &cur) == 0)
				c->has_best = true;
		}
		if (owner_read && c->has_best) {
			k->st.owner_reads++;
			c->t[0].state = RS_DONE; /* it answers for itself: "replicas" names it */
			c->answers = 1;
			c->nt = 1;
			coord_finish(k, now, c, false);
			return;
		}
		c->t[0].state = rc == 0 || rc == RN_ENOTFOUND ? RS_DONE : RS_FAILED;
		c->answers += c->t[0].state == RS_DONE;
		c->failed += c->t[0].state == RS_FAILED;
	} else {
		int seen = rc == 0 && !(c->flags & KV_F_HANDOFF)
		               ? rid_seen(&cur, &c->rec.r, &c->replay_v)
		               : -1;
		if (seen >= 0) {
			/* a retry of a write already applied (seen 0: the one held; else one that a
			 * newer write replaced): keep what is held, and answer with that write's
			 * version once W replicas hold what is held */
			c->replayed = true;
			c->replay_old = seen > 0;
			own_set(&c->rec, &cur);
		} else if (!(c->flags & KV_F_HANDOFF)) {
			/* a new write: it carries the request ids of the ones it replaces */
			uint8_t h[KV_HIST_MAX * KV_HIST_ENTRY];
			kv_record w = c->rec.r;
			w.hist = h;
			w.histlen = rc == 0 ? hist_after(&cur, h) : 0;
			if (own_set(&c->rec, &w) < 0) {
				coord_answer(k, now, c, KV_ERROR, false, NULL);
				op_free(k, c);
				return;
			}
		}
		if (m->has_cond && !c->replayed && !cond_holds(m, rc, &cur)) {
			k->st.conflicts++;
			coord_answer(k, now, c,
			             rc < 0 && rc != RN_ENOTFOUND ? KV_ERROR : KV_CONFLICT, rc == 0,
			             &cur);
			op_free(k, c);
			return;
		}
		if (m->has_cond && !c->replayed && rc == 0 &&
		    kv_version_cmp(&c->rec.r.v, &cur.v) <= 0) {
			/* the writer saw the version held, so its write comes after it, whatever
			 * its node's clock said (one behind stamped it older): stamp it just
			 * above, or it would be acknowledged and never stored */
			c->rec.r.v.stamp = cur.v.stamp + 1;
			hlc_seen(k, c->rec.r.v.stamp);
		}
		kv_version held;
		rc = apply(k, &c->rec.r, &held);
		c->t[0].state = rc >= 0 ? RS_DONE : RS_FAILED;
		c->acks += rc >= 0;
		c->failed += rc < 0;
		if (rc >= 0) {
			/* (also when it was already here: a retry, or an older write than one
			 * whose push a holder may not have yet: it waits for the holders too) */
			c->near_sent = near_push(k, now, &c->rec.r, c->req);
			c->near_at = now;
		}
		uint64_t gap = (uint64_t)k->cfg.lease_ms + LEASE_SLACK(k);
		if (leases_on(k) && !(c->flags & KV_F_HANDOFF)) {
			/* another node may have been this key's owner a moment ago, and may have
			 * crashed holding cache leases no one here knows of: answer once they
			 * have ended */
			if (!own_range(k, &pos) || (c->flags & KV_F_FALLBACK))
				c->not_before = now + gap;
			else if (now - k->pred_at < gap)
				c->not_before = k->pred_at + gap;
		}
	}
	kv_msg r;
	coord_request_msg(c, &r);
	for (unsigned i = 1; i < c->nt; i++) {
		r.to = c->t[i].p.addr;
		k->st.repl_sent += c->kop != KV_GET;
		send_msg(k, &r);
	}
	coord_finish(k, now, c, false);
}

static target *coord_target(op *c, ring_addr from, const rn_id *id)
{
	for (unsigned i = 0; i < c->nt; i++)
		if (c->t[i].state == RS_WAIT && c->t[i].p.addr == from &&
		    (!id || rn_id_eq(&c->t[i].p.id, id)))
			return &c->t[i];
	return NULL;
}

static void on_ack(kv_node *k, uint64_t now, const kv_msg *m)
{
	op *c = op_find(k, m->req);
	if (c && c->kind == OP_LEAVE) {
		leave_acked(k, c, true);
		return;
	}
	if (c && c->kind == OP_RELAY) {
		if (near_acked(k, c, m))
			relay_finish(k, now, c, false);
		return;
	}
	if (!c || c->kind != OP_COORD || c->kop == KV_GET)
		return;
	target *t = (m->flags & KV_F_CACHE) ? NULL : coord_target(c, m->from.addr, &m->from.id);
	if (t) {
		t->state = RS_DONE;
		c->acks++;
	} else if (!near_acked(k, c, m)) {
		return;
	}
	coord_finish(k, now, c, false);
}

static void on_read_ans(kv_node *k, uint64_t now, const kv_msg *m)
{
	op *c = op_find(k, m->req);
	if (!c || c->kind != OP_COORD || c->kop != KV_GET)
		return;
	target *t = coord_target(c, m->from.addr, &m->from.id);
	if (!t)
		return;
	t->state = RS_DONE;
	c->answers++;
	if (m->has_rec && damaged(k, &m->rec)) {
		k->st.damaged_seen++;
		t->damaged = true;
		t->v = m->rec.v;
	} else if (m->has_rec) {
		t->has = true;
		t->v = m->rec.v;
		hlc_seen(k, m->rec.v.stamp);
		if (!c->has_best || kv_version_cmp(&m->rec.v, &c->best.r.v) > 0) {
			if (own_set(&c->best, &m->rec) == 0)
				c->has_best = true;
		}
	}
	coord_finish(k, now, c, false);
}

/* ---- replicas ---- */

static void on_repl(kv_node *k, uint64_t now, const kv_msg *m)
{
	if (!m->has_rec)
		return;
	if (m->flags & KV_F_CACHE) {
		on_near_push(k, m);
		return;
	}
	hlc_seen(k, m->rec.v.stamp);
	kv_version held = m->rec.v;
	int rc;
	kv_record cur;
	if ((m->flags & KV_F_DAMAGED) && !damaged(k, &m->rec) &&
	    k->d.get(k->d.ctx, &m->rec.kid, &cur) == 0 && kv_version_cmp(&cur.v, &m->rec.v) == 0 &&
	    damaged(k, &cur))
		rc = k->d.put(k->d.ctx, &m->rec) < 0 ? -1 : 1; /* the same version, good bytes */
	else
		rc = apply(k, &m->rec, &held);
	if (rc == 1)
		k->st.repl_applied++;
	else if (rc == 0)
		k->st.repl_stale++;
	if (!m->req || rc < 0) {
		if (rc == 1)
			near_push(k, now, &m->rec, 0);
		return; /* no ACK for a failed store: the coordinator counts it as not stored */
	}
	op *r = NULL;
	if (near_covered(k, now, &m->rec.kid)) {
		if (!(r = op_new(k, OP_RELAY)))
			return; /* no ACK: the coordinator counts it as not stored */
		/* cache holders of this range first: the coordinator's answer counts on it */
		r->near_sent = near_push(k, now, &m->rec, r->req);
		r->near_at = r->w_at = now;
		if (r->near_sent) {
			r->origin = m->from.addr;
			r->origin_req = m->req;
			r->rec.r.kid = m->rec.kid;
			r->hv = held;
			r->deadline = now + k->cfg.op_timeout_ms;
			relay_finish(k, now, r, false);
			return;
		}
		op_free(k, r);
	}
	kv_msg a;
	answer_to(&a, KV_MSG_ACK, m);
	a.has_rec = true;
	a.rec.kid = m->rec.kid;
	a.rec.v = held;
	send_msg(k, &a);
}

static void on_read(kv_node *k, const kv_msg *m)
{
	kv_msg a;
	answer_to(&a, KV_MSG_READ_ANS, m);
	kv_record cur;
	int rc = k->d.get(k->d.ctx, &m->rec.kid, &cur);
	if (rc < 0 && rc != RN_ENOTFOUND)
		return; /* a store that cannot read does not answer */
	if (rc == 0) {
		a.has_rec = true;
		a.rec = cur;
	}
	send_msg(k, &a);
}

/* ---- the entry node ---- */

static void entry_send(kv_node *k, uint64_t now, op *e, ring_peer to)
{
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_REQ;
	m.op = e->kop;
	m.flags = e->flags | (e->fell_back ? KV_F_FALLBACK : 0) | (e->looked ? KV_F_LOOKED : 0);
	m.req = e->req;
	m.rec = e->rec.r;
	m.has_rec = true;
	m.has_cond = e->has_cond;
	m.cond = e->cond;
	e->coord = to;
	e->stage = ST_SENT;
	e->retry_at = now + 2 * (uint64_t)k->cfg.op_timeout_ms; /* no answer: fall back */
	if (to.addr == k->addr && rn_id_eq(&to.id, &k->self)) {
		coordinate(k, now, k->addr, e->req, &m);
		return;
	}
	e->sent = true;
	/* (a get sent again keeps no answer: a late one to an earlier send would pass a
	 * snapshot taken now) */
	if (e->nsends)
		e->near_ok = false;
	else
		near_mark(k, now, e, &to);
	k->st.forwarded++;
	if (!e->nsends++)
		k->st.route_first++;
	m.to = to.addr;
	send_msg(k, &m);
}

/* The first node a request went to was not the owner, or did not answer. */
static void entry_stale(kv_node *k, op *e)
{
	if (e->nsends == 1 && !e->stale_counted) {
		e->stale_counted = true;
		k->st.route_stale++;
	}
}

/* The owner did not answer: try the node after it, which holds a replica: the next
 * member in the table (and if that one does not answer either, a lookup's answer), or
 * the answer of a lookup. */
static void entry_fall_back(kv_node *k, uint64_t now, op *e)
{
	if ((e->fell_back && !e->table_fb) || e->coord.addr == RING_ADDR_NONE) {
		e->stage = ST_RETRY_WAIT;
		e->retry_at = UINT64_MAX; /* wait for an answer until the deadline */
		return;
	}
	entry_stale(k, e);
	cache_drop(k, &e->rec.r.kid);
	size_t at = kvm_find(&k->mem, &e->coord.id);
	if (at < k->mem.n && k->mem.e[at].src == KVM_HINT)
		kvm_down(&k->mem, &e->coord.id); /* only a hint said it was there */
	ring_peer next;
	rn_id after = e->coord.id;
	rn_id_add_pow2(&after, &after, RN_ID_BITS - k->cfg.bits); /* the next position */
	if (!e->fell_back && onehop_on(k) &&
	    kvm_succ(&k->mem, &after, &e->coord.id, &next, 1) == 1) {
		e->fell_back = e->table_fb = true;
		entry_send(k, now, e, next);
		return;
	}
	e->fell_back = true;
	e->table_fb = false;
	k->st.entry_lookups++;
	e->stage = ST_FALLBACK_LOOKUP;
	e->retry_at = 0;
	k->d.lookup(k->d.ctx, &after, e->req);
}

static void entry_ring_lookup(kv_node *k, op *e)
{
	rn_id pos = pos_of(k, &e->rec.r.kid);
	e->stage = ST_LOOKUP;
	e->retry_at = 0;
	e->looked = true;
	k->st.entry_lookups++;
	k->d.lookup(k->d.ctx, &pos, e->req);
}

/* Sends e where route_of says (after a lookup once, only a lookup or this node); e may be
 * gone when it returns. Returns the route taken (RT_*). */
static int entry_lookup(kv_node *k, uint64_t now, op *e)
{
	ring_peer to;
	int rt = route_of(k, &e->rec.r.kid, &to);
	if (e->looked && rt != RT_LOCAL)
		rt = RT_LOOKUP;
	if (rt == RT_LOOKUP)
		entry_ring_lookup(k, e);
	else
		entry_send(k, now, e, to);
	return rt;
}

/* A MOVED answer named where the key is: learn the ids it names that this node had never
 * seen, and take the first that is not known to be down, not this node, and not the one
 * that answered. */
static bool entry_take_hint(kv_node *k, op *e, const kv_msg *m, ring_peer *to)
{
	bool found = false;
	if (!k->fed)
		return false; /* no member feed: as before, a lookup */
	for (size_t i = 0; i < m->nacked; i++) {
		const ring_peer *h = &m->acked[i];
		if (h->addr == RING_ADDR_NONE || rn_id_eq(&h->id, &k->self))
			continue;
		kvm_up(&k->mem, *h, KVM_HINT);
		size_t at = kvm_find(&k->mem, &h->id);
		bool down = at < k->mem.n && !k->mem.e[at].up;
		if (!found && !down && !rn_id_eq(&h->id, &m->from.id)) {
			*to = *h;
			found = true;
		}
	}
	k->st.members_up = k->mem.nup;
	if (found)
		cache_put(k, &e->rec.r.kid, *to);
	return found;
}

static kv_status entry_failure(const op *e)
{
	if (e->kop == KV_GET)
		return KV_UNSURE;
	return e->sent ? KV_UNKNOWN : KV_NOT_APPLIED;
}

void kv_client(kv_node *k, uint64_t now, uint64_t client, const kv_request *r)
{
	k->st.client_ops++;
	op *e = op_new(k, OP_ENTRY);
	kv_record rec;
	memset(&rec, 0, sizeof rec);
	rec.key = r->key;
	rec.klen = r->klen;
	rn_id_hash(&rec.kid, r->key, r->klen, RN_ID_BITS);
	if (r->op != KV_GET) {
		rec.val = r->op == KV_PUT ? r->val : NULL;
		rec.vlen = r->op == KV_PUT ? r->vlen : 0;
		rec.rid = r->rid;
		rec.ridlen = r->ridlen > KV_RID_MAX ? KV_RID_MAX : r->ridlen;
	}
	if (!e || own_set(&e->rec, &rec) < 0) {
		kv_reply rep = {
		    .status = KV_NOT_APPLIED, .why = "out of memory", .retry_ms = RETRY_MS};
		if (e)
			op_free(k, e);
		k->d.reply(k->d.ctx, client, &rep);
		return;
	}
	e->client = client;
	e->kop = (uint8_t)r->op;
	e->has_cond = r->op != KV_GET && r->has_cond;
	e->cond = r->cond;
	e->flags = r->op == KV_GET && r->unchecked ? KV_F_UNCHECKED : 0;
	e->coord.addr = RING_ADDR_NONE;
	e->deadline = now + k->cfg.req_timeout_ms;
	if (!k->joined) {
		reply_client(k, e, r->op == KV_GET ? KV_UNSURE : KV_NOT_APPLIED,
		             "this node is not in a ring yet (joining); try again shortly", NULL);
		return;
	}
	if (r->op == KV_GET && (replica_read(k, now, e) || near_read(k, now, e)))
		return;
	if (r->op != KV_GET)
		e->rec.r.v = stamp_new(k, now, r->op == KV_DEL);
	if (r->op == KV_DEL && r->at_ms && (r->at_ms << 16) < e->rec.r.v.stamp)
		e->rec.r.v.stamp = r->at_ms << 16; /* dated: loses to what was written since */
	uint64_t *routes[] = {&k->st.route_local, &k->st.route_succ, &k->st.route_onehop,
	                      &k->st.route_cache, &k->st.route_lookup};
	(*routes[entry_lookup(k, now, e)])++; /* e may be answered and gone */
}

static void on_resp(kv_node *k, uint64_t now, const kv_msg *m)
{
	op *e = op_find(k, m->req);
	if (!e)
		return;
	if (e->kind == OP_HANDOFF) {
		kv_record cur;
		if (m->status == KV_OK && m->has_rec && kv_version_cmp(&m->rec.v, &e->hv) >= 0 &&
		    k->d.get(k->d.ctx, &e->rec.r.kid, &cur) == 0 &&
		    kv_version_cmp(&cur.v, &e->hv) == 0) {
			rn_id pos = pos_of(k, &e->rec.r.kid);
			if (!own_range(k, &pos)) { /* still not ours: the owner has it now */
				k->d.del(k->d.ctx, &e->rec.r.kid);
				k->st.handoffs_done++;
			}
		}
		op_free(k, e);
		return;
	}
	if (e->kind != OP_ENTRY || e->stage != ST_SENT)
		return;
	if (m->from.addr != e->coord.addr && e->coord.addr != k->addr)
		return;              /* not who we asked */
	if (m->status == KV_MOVED) { /* our view was behind: follow the hint, or ask the ring */
		k->st.moved++;
		entry_stale(k, e);
		cache_drop(k, &e->rec.r.kid);
		ring_peer to;
		if (e->corrections < KV_MAX_CORRECTIONS && entry_take_hint(k, e, m, &to)) {
			e->corrections++;
			k->st.route_hints++;
			entry_send(k, now, e, to);
			return;
		}
		entry_ring_lookup(k, e);
		return;
	}
	static const char *whys[] = {
	    [KV_NOT_FOUND] = "key not found",
	    [KV_UNSURE] = "the key's replicas could not all be asked (the ring is changing or "
	                  "a node is down); try again",
	    [KV_UNKNOWN] = "the write reached fewer replicas than the write quorum: it may or "
	                   "may not be applied; retry with the same request id",
	    [KV_NOT_APPLIED] = "the key's coordinator has just joined, or sees fewer replicas "
	                       "than the write quorum: nothing was written; try again",
	    [KV_ERROR] = "a replica's store failed",
	    [KV_CONFLICT] = "the key's version is not the one this write was conditional on",
	};
	kv_status st =
	    m->status <= KV_ERROR || m->status == KV_CONFLICT ? (kv_status)m->status : KV_ERROR;
	near_fill(k, now, e, m);
	reply_client(k, e, st, st == KV_OK ? NULL : whys[st], m);
}

void kv_on_lookup(kv_node *k, uint64_t now, uint64_t req, bool ok, ring_peer owner)
{
	op *e = op_find(k, req);
	if (!e)
		return;
	if (e->kind == OP_HANDOFF) {
		if (!ok || owner.addr == RING_ADDR_NONE || rn_id_eq(&owner.id, &k->self)) {
			op_free(k, e); /* tried again next round */
			return;
		}
		kv_msg m;
		memset(&m, 0, sizeof m);
		m.type = KV_MSG_REQ;
		m.op = e->rec.r.v.tomb ? KV_DEL : KV_PUT;
		m.flags = KV_F_HANDOFF;
		m.req = e->req;
		m.rec = e->rec.r;
		m.has_rec = true;
		m.to = owner.addr;
		e->coord = owner;
		e->stage = ST_SENT;
		k->st.handoffs_sent++;
		k->st.sync_bytes += e->rec.r.klen + e->rec.r.vlen + 48;
		k->st.repair_data_bytes += e->rec.r.klen + e->rec.r.vlen + 48;
		send_msg(k, &m);
		return;
	}
	if (e->kind != OP_ENTRY || (e->stage != ST_LOOKUP && e->stage != ST_FALLBACK_LOOKUP))
		return;
	if (!ok || owner.addr == RING_ADDR_NONE) {
		if (e->retried) {
			reply_client(k, e, entry_failure(e),
			             "the ring could not find the key's owner; try again", NULL);
			return;
		}
		e->retried = true;
		e->stage = ST_RETRY_WAIT;
		e->retry_at = now + RETRY_MS;
		return;
	}
	if (e->stage == ST_LOOKUP)
		cache_put(k, &e->rec.r.kid, owner);
	entry_send(k, now, e, owner);
}

void kv_on_unreachable(kv_node *k, uint64_t now, uint64_t req, ring_addr to)
{
	op *o = op_find(k, req);
	if (!o)
		return;
	switch (o->kind) {
	case OP_ENTRY:
		if (o->stage == ST_SENT && o->coord.addr == to)
			entry_fall_back(k, now, o);
		break;
	case OP_COORD: {
		target *t = coord_target(o, to, NULL);
		if (!t)
			break;
		t->state = RS_FAILED;
		o->failed++;
		kv_msg m;
		coord_request_msg(o, &m);
		coord_substitute(k, o, &m);
		coord_finish(k, now, o, false);
		break;
	}
	case OP_HANDOFF:
		op_free(k, o);
		break;
	case OP_LEAVE:
		leave_acked(k, o, false);
		break;
	}
}

/* ---- anti-entropy ---- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static uint64_t entry_hash(const rn_id *kid, const kv_version *v)
{
	uint64_t h = mix64(rn_id_top64(kid) ^ 0x9e3779b97f4a7c15ull);
	h = mix64(h ^ rn_get64(kid->b + 8));
	h = mix64(h ^ v->stamp);
	h = mix64(h ^ v->writer ^ (v->tomb ? 0x5bd1e995ull : 0));
	return h;
}

/* Which of KV_BUCKETS equal slices of (lo, hi] holds position pos, by the top 64 bits
 * of the ids (both sides of an exchange compute it the same way, which is all that
 * matters; a full 160-bit subtraction per record was a quarter of a digest's cost). */
static unsigned bucket_of(const rn_id *lo, const rn_id *hi, const rn_id *pos)
{
	uint64_t l = rn_id_top64(lo), o = rn_id_top64(pos) - l - 1, s = rn_id_top64(hi) - l;
	if (s == 0)
		s = UINT64_MAX; /* the whole ring (or a range narrower than 2^96 ids) */
	uint64_t b = o / (s / KV_BUCKETS + 1);
	return b >= KV_BUCKETS ? KV_BUCKETS - 1 : (unsigned)b;
}

typedef struct {
	kv_node *k;
	const rn_id *lo, *hi;
	uint64_t *hashes;
	/* listing entries of some buckets */
	const bool *want;
	kv_entry *out; /* grows as entries come (rn_grow), up to max */
	size_t n, cap, max;
	bool truncated;
	uint8_t last_bucket;
} scan_ctx;

static int digest_one(void *arg, const kv_record *r)
{
	scan_ctx *s = arg;
	rn_id pos = pos_of(s->k, &r->kid);
	s->hashes[bucket_of(s->lo, s->hi, &pos)] ^= entry_hash(&r->kid, &r->v);
	return 0;
}

static void range_digest(kv_node *k, const rn_id *lo, const rn_id *hi, uint64_t *hashes)
{
	memset(hashes, 0, KV_BUCKETS * sizeof *hashes);
	scan_ctx s = {.k = k, .lo = lo, .hi = hi, .hashes = hashes};
	rn_id elo = ext_of(k, lo), ehi = ext_of(k, hi);
	k->d.scan(k->d.ctx, &elo, &ehi, false, digest_one, &s);
}

static int list_one(void *arg, const kv_record *r)
{
	scan_ctx *s = arg;
	rn_id pos = pos_of(s->k, &r->kid);
	unsigned b = bucket_of(s->lo, s->hi, &pos);
	if (!s->want[b])
		return 0;
	if (s->n >= s->max ||
	    rn_grow((void **)&s->out, &s->cap, s->n + 1, sizeof *s->out, 256) < 0) {
		s->truncated = true;
		return 1;
	}
	s->out[s->n++] = (kv_entry){r->kid, r->v};
	s->last_bucket = (uint8_t)b;
	return 0;
}

/* The entries of the wanted buckets of (lo, hi], in ring order from lo, in a new array
 * (*out, which the caller frees) of at most max: most exchanges list a handful. */
static size_t range_list(kv_node *k, const rn_id *lo, const rn_id *hi, const bool *want,
                         kv_entry **out, size_t max, bool *truncated, uint8_t *last)
{
	scan_ctx s = {.k = k, .lo = lo, .hi = hi, .want = want, .max = max};
	rn_id elo = ext_of(k, lo), ehi = ext_of(k, hi);
	k->d.scan(k->d.ctx, &elo, &ehi, false, list_one, &s);
	*out = s.out;
	*truncated = s.truncated;
	*last = s.last_bucket;
	return s.n;
}

/* Replica targets of this node's own range: its first R-1 distinct successors. */
static size_t sync_targets(kv_node *k, ring_peer *out)
{
	return distinct_succ(k, out, k->cfg.replicas - 1);
}

static void purge_tombs(kv_node *k, uint64_t now, const ring_peer *to, size_t nto);

static void sync_round(kv_node *k, uint64_t now)
{
	k->sync_at = now + k->cfg.sync_ms;
	if (!k->joined || k->pred.addr == RING_ADDR_NONE || rn_id_eq(&k->pred.id, &k->self))
		return;
	ring_peer to[KV_MAX_R];
	size_t nto = sync_targets(k, to);
	if (!nto)
		return;
	/* every replica matched last round: old tombstones can go */
	bool all = k->nmatched_targets == nto;
	unsigned insync = 0;
	for (size_t i = 0; i < nto; i++)
		insync += k->matched[i];
	all = all && insync == nto;
	k->st.replicas_in_sync = insync;
	/* nothing changed and every replica matched: send a digest every third round only,
	 * often enough that replicas keep this range within cover_ms (4 rounds) */
	if (all && !k->dirty && ++k->quiet_rounds % 3 != 0)
		return;
	if (all)
		purge_tombs(k, now, to, nto);
	k->dirty = false;
	memset(k->matched, 0, sizeof k->matched);
	k->nmatched_targets = (unsigned)nto;
	for (size_t i = 0; i < nto; i++)
		lout_make(k, now, &to[i]);
	uint64_t hashes[KV_BUCKETS];
	range_digest(k, &k->pred.id, &k->self, hashes);
	k->round++;
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_DIGEST;
	m.round = k->round;
	m.lo = k->pred.id;
	m.hi = k->self;
	m.hashes = hashes;
	for (size_t i = 0; i < nto; i++) {
		m.to = to[i].addr;
		k->st.sync_rounds++;
		k->st.sync_bytes += KV_BUCKETS * 8 + 48;
		send_msg(k, &m);
	}
}

static cover *note_cover(kv_node *k, uint64_t now, const kv_msg *m)
{
	cover *slot = NULL, *oldest = &k->covers[0];
	for (int i = 0; i < MAX_COVERS; i++) {
		cover *c = &k->covers[i];
		if (c->used && rn_id_eq(&c->from, &m->from.id)) {
			slot = c;
			break;
		}
		if (!c->used && !slot)
			slot = c;
		if (c->at < oldest->at)
			oldest = c;
	}
	if (!slot)
		slot = oldest; /* (a lease it held ends here: a holder may always drop one) */
	if (!slot->used || !rn_id_eq(&slot->from, &m->from.id))
		*slot = (cover){.from = m->from.id, .used = true};
	slot->lo = m->lo;
	slot->hi = m->hi;
	slot->at = now;
	slot->addr = m->from.addr;
	return slot;
}

static bool covered(const kv_node *k, uint64_t now, const rn_id *pos)
{
	for (int i = 0; i < MAX_COVERS; i++) {
		const cover *c = &k->covers[i];
		if (c->used && now - c->at <= k->cfg.cover_ms && rn_id_in_oc(pos, &c->lo, &c->hi))
			return true;
	}
	return false;
}

static void on_digest(kv_node *k, uint64_t now, const kv_msg *m)
{
	cover *c = note_cover(k, now, m);
	uint64_t mine[KV_BUCKETS];
	range_digest(k, &m->lo, &m->hi, mine);
	bool want[KV_BUCKETS];
	uint8_t diff[KV_BUCKETS];
	size_t nd = 0;
	for (unsigned b = 0; b < KV_BUCKETS; b++) {
		want[b] = mine[b] != m->hashes[b];
		if (want[b])
			diff[nd++] = (uint8_t)b;
	}
	c->clean = c->clean || nd == 0;
	kv_entry *ents = NULL;
	size_t ne = 0;
	if (nd) {
		bool trunc;
		uint8_t last;
		ne = range_list(k, &m->lo, &m->hi, want, &ents, KV_ENTRY_MAX, &trunc, &last);
		if (trunc) { /* list only the buckets whose entries are all there */
			size_t keep = 0;
			while (keep < nd && diff[keep] < last)
				keep++;
			if (keep == 0) {
				keep =
				    1; /* one bucket alone overflows: a partial list still helps */
			} else {
				while (ne) {
					rn_id pos = pos_of(k, &ents[ne - 1].kid);
					if (bucket_of(&m->lo, &m->hi, &pos) < last)
						break;
					ne--;
				}
			}
			nd = keep;
		}
	}
	kv_msg a;
	memset(&a, 0, sizeof a);
	a.type = KV_MSG_KEYS;
	a.to = m->from.addr;
	a.round = m->round;
	a.lo = m->lo;
	a.hi = m->hi;
	a.buckets = diff;
	a.nbuckets = nd;
	a.entries = ents;
	a.nentries = ne;
	k->st.sync_bytes += ne * 37 + nd + 48;
	send_msg(k, &a);
	free(ents);
}

/* a before b in ring order from base */
static int ring_cmp(const rn_id *base, const rn_id *a, const rn_id *b)
{
	rn_id da, db;
	rn_id_sub(&da, a, base);
	rn_id_sub(&db, b, base);
	return rn_id_cmp(&da, &db);
}

/* Sends one stored record to a replica unless its bytes would take `sent` past `cap`
 * (one record always goes when nothing has: a record larger than the cap still moves).
 * Returns the bytes it sent: 0 when the record is gone, SIZE_MAX when it did not fit. */
static size_t push_record(kv_node *k, ring_addr to, const rn_id *kid, size_t sent, size_t cap)
{
	kv_record r;
	if (k->d.get(k->d.ctx, kid, &r) < 0)
		return 0;
	size_t bytes = r.klen + r.vlen + 48;
	if (sent && bytes > cap - sent)
		return SIZE_MAX;
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_REPL;
	m.to = to;
	m.rec = r;
	m.has_rec = true;
	k->st.repl_sent++;
	k->st.sync_bytes += bytes;
	k->st.repair_data_bytes += bytes;
	send_msg(k, &m);
	return bytes;
}

/* Pushes records while they fit in KV_REPAIR_BYTES (a replica lacking many file chunks is
 * sent at most 16 MiB an exchange, not 1,024 chunks at once: what is left differs next
 * round). Returns how many were pushed. */
static size_t push_records(kv_node *k, ring_addr to, const rn_id *kids, size_t n)
{
	size_t i = 0, sent = 0;
	while (i < n) {
		size_t b = push_record(k, to, &kids[i], sent, KV_REPAIR_BYTES);
		if (b == SIZE_MAX)
			break;
		sent += b;
		i++;
	}
	return i;
}

/* The primary's half of a bucket exchange: push what the replica lacks or has older, ask
 * for what it has newer. */
static void on_keys(kv_node *k, uint64_t now, const kv_msg *m)
{
	if (!k->joined || k->pred.addr == RING_ADDR_NONE || !rn_id_eq(&m->lo, &k->pred.id) ||
	    !rn_id_eq(&m->hi, &k->self))
		return; /* an answer about a range this node no longer has */
	ring_peer to[KV_MAX_R];
	size_t nto = sync_targets(k, to), idx = nto;
	for (size_t i = 0; i < nto; i++)
		if (rn_id_eq(&to[i].id, &m->from.id))
			idx = i;
	if (m->nbuckets == 0) {
		if (idx < nto && m->round == k->round) {
			k->matched[idx] = true;
			lease_out *l = lout_of(k, &m->from.id);
			if (l && l->missed_round != m->round)
				l->synced = true; /* it held all this node held at the digest, and
				                   * every write acknowledged since */
		}
		return;
	}
	bool want[KV_BUCKETS] = {false};
	for (size_t i = 0; i < m->nbuckets; i++)
		if (m->buckets[i] < KV_BUCKETS)
			want[m->buckets[i]] = true;
	rn_id *pull = malloc(KV_PULL_MAX * sizeof *pull);
	rn_id *push = malloc(KV_REPAIR_MAX * sizeof *push);
	if (!pull || !push) {
		free(pull);
		free(push);
		return;
	}
	bool trunc;
	uint8_t last;
	kv_entry *mine;
	size_t nm = range_list(k, &m->lo, &m->hi, want, &mine, KV_ENTRY_MAX, &trunc, &last);
	rn_id base = ext_of(k, &m->lo); /* (lo, hi] starts just after it */
	rn_id_add_pow2(&base, &base, 0);
	size_t i = 0, j = 0, npull = 0, npush = 0;
	while ((i < nm || j < m->nentries) && npull < KV_PULL_MAX && npush < KV_REPAIR_MAX) {
		const kv_entry *a = i < nm ? &mine[i] : NULL,
		               *b = j < m->nentries ? &m->entries[j] : NULL;
		if (!a && trunc)
			break; /* past what this node listed: it may have those */
		/* c < 0: only this node has a's key; c > 0: only the replica has b's */
		int c = !a ? 1 : !b ? -1 : ring_cmp(&base, &a->kid, &b->kid);
		if (c < 0) {
			push[npush++] = a->kid;
			i++;
		} else if (c > 0) {
			pull[npull++] = b->kid;
			j++;
		} else {
			int v = kv_version_cmp(&a->v, &b->v);
			if (v > 0)
				push[npush++] = a->kid;
			else if (v < 0)
				pull[npull++] = b->kid;
			i++;
			j++;
		}
	}
	k->st.sync_keys_pushed += push_records(k, m->from.addr, push, npush);
	if (npull) {
		kv_msg q;
		memset(&q, 0, sizeof q);
		q.type = KV_MSG_PULL;
		q.to = m->from.addr;
		q.kids = pull;
		q.nkids = npull;
		k->st.sync_keys_pulled += npull;
		k->st.sync_bytes += npull * 20 + 16;
		send_msg(k, &q);
	}
	/* differences remain: the next round comes soon */
	if (k->sync_at > now + SYNC_AGAIN_MS)
		k->sync_at = now + SYNC_AGAIN_MS;
	free(mine);
	free(pull);
	free(push);
}

static void on_pull(kv_node *k, const kv_msg *m)
{
	push_records(k, m->from.addr, m->kids, m->nkids < KV_PULL_MAX ? m->nkids : KV_PULL_MAX);
}

typedef struct {
	kv_node *k;
	uint64_t before; /* stamps older than this */
	kv_entry *out;
	size_t n;
} purge_ctx;

static int purge_one(void *arg, const kv_record *r)
{
	purge_ctx *p = arg;
	if (r->v.tomb && r->v.stamp < p->before)
		p->out[p->n++] = (kv_entry){r->kid, r->v};
	return p->n >= PURGE_MAX;
}

/* Tombstones older than the grace period in this node's range, which every replica has
 * (they all matched it last round): drop them here and there. */
static void purge_tombs(kv_node *k, uint64_t now, const ring_peer *to, size_t nto)
{
	uint64_t phys = now + k->cfg.wall_offset_ms;
	if (phys < k->cfg.tomb_grace_ms)
		return;
	kv_entry ents[PURGE_MAX];
	purge_ctx p = {k, (phys - k->cfg.tomb_grace_ms) << 16, ents, 0};
	rn_id lo = ext_of(k, &k->pred.id), hi = ext_of(k, &k->self);
	k->d.scan(k->d.ctx, &lo, &hi, false, purge_one, &p);
	if (!p.n)
		return;
	for (size_t i = 0; i < p.n; i++)
		k->d.del(k->d.ctx, &ents[i].kid);
	k->st.tombs_purged += p.n;
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_PURGE;
	m.entries = ents;
	m.nentries = p.n;
	for (size_t i = 0; i < nto; i++) {
		m.to = to[i].addr;
		send_msg(k, &m);
	}
}

static void on_purge(kv_node *k, const kv_msg *m)
{
	for (size_t i = 0; i < m->nentries && i < PURGE_MAX; i++) {
		kv_record cur;
		if (k->d.get(k->d.ctx, &m->entries[i].kid, &cur) == 0 && cur.v.tomb &&
		    kv_version_cmp(&cur.v, &m->entries[i].v) == 0) {
			k->d.del(k->d.ctx, &m->entries[i].kid);
			k->st.tombs_purged++;
		}
	}
}

/* ---- handoff of records outside every range this node holds ---- */

typedef struct {
	kv_node *k;
	uint64_t now;
	unsigned found;
} handoff_ctx;

static int handoff_one(void *arg, const kv_record *r)
{
	handoff_ctx *h = arg;
	kv_node *k = h->k;
	rn_id pos = pos_of(k, &r->kid);
	if (own_range(k, &pos) || covered(k, h->now, &pos))
		return 0;
	h->found++;
	for (op *o = k->ops; o; o = o->next)
		if (o->kind == OP_HANDOFF && rn_id_eq(&o->rec.r.kid, &r->kid))
			return 0; /* on its way */
	if (k->nhandoffs >= MAX_HANDOFFS)
		return 1;
	op *o = op_new(k, OP_HANDOFF);
	if (!o)
		return 1;
	if (own_set(&o->rec, r) < 0) {
		op_free(k, o);
		return 1;
	}
	o->hv = r->v;
	o->stage = ST_LOOKUP;
	o->deadline = h->now + k->cfg.req_timeout_ms;
	k->d.lookup(k->d.ctx, &pos, o->req);
	return 0;
}

static void handoff_round(kv_node *k, uint64_t now)
{
	k->handoff_at = now + k->cfg.sync_ms;
	/* only a node whose view has been still long enough to have heard every range it
	 * replicates knows what is out of place */
	if (!k->joined || k->pred.addr == RING_ADDR_NONE || rn_id_eq(&k->pred.id, &k->self) ||
	    now - k->view_at < k->cfg.cover_ms || k->nhandoffs >= MAX_HANDOFFS)
		return;
	/* a scan that found nothing, with nothing stored outside this node's range since,
	 * finds nothing again until a cover runs out: scan every fourth period then */
	if (!k->foreign && k->idle_scans++ % 4 != 3)
		return;
	k->foreign = false;
	handoff_ctx h = {k, now, 0};
	rn_id lo = ext_of(k, &k->self), hi = ext_of(k, &k->pred.id);
	k->d.scan(k->d.ctx, &lo, &hi, true, handoff_one, &h);
	if (h.found)
		k->foreign = true, k->idle_scans = 0; /* look again next period */
	if (k->nhandoffs >= MAX_HANDOFFS) /* more to hand on: go on once these are done */
		k->handoff_at = now + SYNC_AGAIN_MS;
}

/* ---- messages, time, leaving ---- */

void kv_on_msg(kv_node *k, uint64_t now, const kv_msg *m)
{
	switch (m->type) {
	case KV_MSG_REQ:
		if (m->has_rec && k->joined)
			coordinate(k, now, m->from.addr, m->req, m);
		break;
	case KV_MSG_RESP:
		on_resp(k, now, m);
		break;
	case KV_MSG_REPL:
		on_repl(k, now, m);
		break;
	case KV_MSG_ACK:
		on_ack(k, now, m);
		break;
	case KV_MSG_READ:
		on_read(k, m);
		break;
	case KV_MSG_READ_ANS:
		on_read_ans(k, now, m);
		break;
	case KV_MSG_DIGEST:
		if (m->hashes)
			on_digest(k, now, m);
		break;
	case KV_MSG_KEYS:
		on_keys(k, now, m);
		break;
	case KV_MSG_PULL:
		on_pull(k, m);
		break;
	case KV_MSG_PURGE:
		on_purge(k, m);
		break;
	case KV_MSG_LEASE_REQ:
		if (k->joined)
			on_lease_req(k, now, m);
		break;
	case KV_MSG_LEASE:
		on_lease(k, now, m);
		break;
	default:
		break;
	}
}

static bool op_due(const op *o, uint64_t now)
{
	return now >= o->deadline || (o->retry_at && now >= o->retry_at);
}

/* ---- scrub ---- */

#define SCRUB_DROP_MAX 64   /* damaged copies dropped per step (the rest wait a step) */
#define SCRUB_RECORDS  4096 /* records read per step, whatever their size */
#define SCRUB_REST     30   /* after a whole pass, the next starts this many steps later */

typedef struct {
	kv_node *k;
	uint64_t bytes;
	rn_id last, drop[SCRUB_DROP_MAX];
	size_t ndrop, seen;
	bool any;
} scrub_ctx;

static int scrub_one(void *arg, const kv_record *r)
{
	scrub_ctx *s = arg;
	if (s->ndrop == SCRUB_DROP_MAX)
		return 1; /* this one is read again next step */
	s->last = r->kid;
	s->any = true;
	s->seen++;
	s->k->st.scrub_checked++;
	if (damaged(s->k, r)) {
		s->k->st.scrub_damaged++;
		s->drop[s->ndrop++] = r->kid;
	}
	s->bytes += r->vlen + r->klen;
	return s->bytes >= s->k->cfg.scrub_bytes || s->seen >= SCRUB_RECORDS;
}

/* Reads the next scrub_bytes of records after scrub_from (wrapping round the ring), and
 * drops the copies that fail the check (the store must not change inside a scan). */
static void scrub_step(kv_node *k, uint64_t now)
{
	k->scrub_at = now + k->cfg.scrub_ms;
	scrub_ctx s = {.k = k};
	k->d.scan(k->d.ctx, &k->scrub_from, &k->scrub_from, true, scrub_one, &s);
	for (size_t i = 0; i < s.ndrop; i++)
		k->d.del(k->d.ctx, &s.drop[i]);
	if (!s.any)
		return;
	if (s.bytes < k->cfg.scrub_bytes && s.seen < SCRUB_RECORDS && s.ndrop < SCRUB_DROP_MAX) {
		/* it read everything there is: the next pass starts after a rest */
		k->st.scrub_passes++;
		k->scrub_at = now + (uint64_t)SCRUB_REST * k->cfg.scrub_ms;
	}
	k->scrub_from = s.last;
}

void kv_tick(kv_node *k, uint64_t now)
{
	/* by request id: handling one op can finish others */
	uint64_t due[256];
	size_t n = 0;
	for (op *o = k->ops; o && n < 256; o = o->next)
		if (op_due(o, now))
			due[n++] = o->req;
	for (size_t i = 0; i < n; i++) {
		op *o = op_find(k, due[i]);
		if (!o || !op_due(o, now))
			continue;
		switch (o->kind) {
		case OP_ENTRY:
			if (now >= o->deadline)
				reply_client(
				    k, o, entry_failure(o),
				    o->kop == KV_GET
				        ? "no answer from the key's replicas in time; try again"
				        : "no answer from the key's replicas in time: the write "
				          "may or may not be applied; retry with the same "
				          "request id",
				    NULL);
			else if (o->stage == ST_SENT)
				entry_fall_back(k, now, o);
			else if (o->stage == ST_RETRY_WAIT && o->retry_at != UINT64_MAX)
				entry_lookup(k, now, o);
			else
				o->retry_at = 0;
			break;
		case OP_COORD:
			coord_finish(k, now, o, now >= o->deadline);
			break;
		case OP_RELAY:
			relay_finish(k, now, o, now >= o->deadline);
			break;
		default:
			op_free(k, o);
			break;
		}
	}
	if (now >= k->sync_at)
		sync_round(k, now);
	if (now >= k->handoff_at)
		handoff_round(k, now);
	if (k->check && k->cfg.scrub_ms && now >= k->scrub_at)
		scrub_step(k, now);
	if (leases_on(k) && now >= k->lease_at)
		lease_round(k, now);
}

uint64_t kv_wake_at(const kv_node *k)
{
	uint64_t at = k->sync_at < k->handoff_at ? k->sync_at : k->handoff_at;
	if (k->check && k->cfg.scrub_ms && k->scrub_at < at)
		at = k->scrub_at;
	if (leases_on(k) && k->lease_at < at)
		at = k->lease_at;
	for (const op *o = k->ops; o; o = o->next) {
		if (o->deadline < at)
			at = o->deadline;
		if (o->retry_at && o->retry_at < at)
			at = o->retry_at;
	}
	return at;
}

typedef struct {
	kv_node *k;
	op *o;
	uint64_t bytes;
} leave_ctx;

static int leave_one(void *arg, const kv_record *r)
{
	leave_ctx *l = arg;
	if (l->bytes >= l->k->cfg.leave_bytes) {
		l->o->leave_more = true; /* this one goes in the next batch */
		return 1;
	}
	kv_msg m;
	memset(&m, 0, sizeof m);
	m.type = KV_MSG_REPL;
	m.to = l->o->leave_to;
	m.req = l->o->req;
	m.rec = *r;
	m.has_rec = true;
	l->o->outstanding++;
	l->o->leave_from = r->kid;
	l->bytes += r->klen + r->vlen + r->ridlen + 48;
	l->k->st.repl_sent++;
	l->k->st.leave_pushed++;
	send_msg(l->k, &m);
	return 0;
}

/* Pushes the leave's next batch; frees the operation when there was nothing left. */
static void leave_batch(kv_node *k, op *o)
{
	leave_ctx l = {k, o, 0};
	o->leave_more = false;
	rn_id lo = o->leave_from;
	k->d.scan(k->d.ctx, &lo, &o->leave_hi, true, leave_one, &l);
	if (l.bytes) {
		k->st.leave_batches++;
		if (l.bytes > k->st.leave_batch_max)
			k->st.leave_batch_max = l.bytes;
	}
	if (!o->outstanding)
		op_free(k, o);
}

/* One of the leave's pushes was acknowledged, or could not be delivered (more: false). */
static void leave_acked(kv_node *k, op *o, bool more)
{
	if (!o->outstanding || --o->outstanding)
		return;
	if (more && o->leave_more)
		leave_batch(k, o);
	else
		op_free(k, o);
}

void kv_leave(kv_node *k, uint64_t now)
{
	ring_peer s[VIEW_MAX_SUCC];
	size_t ns = distinct_succ(k, s, k->cfg.replicas);
	if (!ns || k->leave)
		return;
	op *o = op_new(k, OP_LEAVE);
	if (!o)
		return;
	o->deadline = now + k->cfg.req_timeout_ms;
	k->leave = o;
	/* the node that becomes a replica of this range once this node is gone */
	o->leave_to = s[ns - 1].addr;
	o->leave_from = ext_of(k, &k->pred.id);
	o->leave_hi = ext_of(k, &k->self);
	if (k->pred.addr == RING_ADDR_NONE)
		o->leave_from = o->leave_hi; /* the whole ring */
	leave_batch(k, o);
}

bool kv_leaving(const kv_node *k)
{
	return k->leave != NULL;
}

void kv_abort(kv_node *k, uint64_t now)
{
	(void)now;
	uint64_t due[256];
	for (;;) {
		size_t n = 0;
		for (op *o = k->ops; o && n < 256; o = o->next)
			if (o->kind == OP_ENTRY)
				due[n++] = o->req;
		if (!n)
			break;
		for (size_t i = 0; i < n; i++) {
			op *o = op_find(k, due[i]);
			if (o)
				reply_client(k, o, entry_failure(o), "the node is shutting down",
				             NULL);
		}
	}
	while (k->ops)
		op_free(k, k->ops);
}
