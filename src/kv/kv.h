/* kv.h — the key-value service core: replicated, versioned, self-repairing (sans-IO).
 *
 * One kv_node per ring node. It takes client operations, peer messages, the ring's view
 * (predecessor and successors), lookup answers and ticks; it answers through the calls
 * its driver provides (kv_driver below): messages to send, ring lookups to start, store
 * operations, client replies. It never touches a socket, clock, file or thread, so the
 * real node (src/net) and the simulator (src/sim) run the same code.
 *
 * Placement. A key's id is SHA-1 of its bytes (top `bits` bits). Its replicas are the
 * first R live nodes at or after the id: the owner (the id's successor) and the next
 * R-1 successors. The owner coordinates: a put or delete is acknowledged once W replicas
 * have committed it; a get asks every replica and answers with the newest version once
 * enough have answered.
 *
 * Versions. Every write carries a stamp made at the node the client spoke to: a hybrid
 * logical clock (48 bits of wall-clock milliseconds, 16 bits of counter) with the
 * writer's id as tie-break. The newest stamp wins everywhere: on a replica, in a read,
 * in a repair, in a handoff. A delete writes a tombstone. So a late repair or handoff
 * can never undo a newer write.
 *
 * Repair. Every sync period a node compares its own range (predecessor, self] with each
 * of its R-1 successors by range digests (the range cut into buckets, each bucket a hash
 * of the versions in it) and sends only the records that differ, both ways. A node also
 * learns from those digests which ranges it is a replica of; a record it holds outside
 * all of them (the ring moved) is handed to the key's owner through the write path,
 * version kept, and deleted here once the owner holds that version or a newer one.
 * A get that sees a stale or missing replica repairs it (read repair).
 *
 * Read leases (lease_ms, 0: off). A replica that forwarded gets of an owner's range
 * lately asks the owner for a lease; the owner grants one (its range, for lease_ms from
 * when the replica asked) to a replica that matched its last digest and missed no write it
 * acknowledged since, while its own view is settled. Until a lease it granted ends, the
 * owner acknowledges a write only once that holder stored it too; a holder that has not
 * stored it a quarter lease after W did is renewed no more. So a holder has every write
 * acknowledged before a get, and answers gets of keys it holds in that range itself,
 * while its own view names no other owner. A write coordinated outside the coordinator's
 * range, or within a lease of its view changing, needs every replica.
 *
 * Cache leases (the same lease_ms). A node that forwards gets to an owner whose range it
 * does not replicate asks for a cache lease (KV_MSG_LEASE_REQ with KV_F_CACHE); the owner
 * grants it (its range, for lease_ms, numbered: a lease that lapsed comes back with a new
 * number) to at most 16 nodes at once. While it runs, every record the owner stores in
 * that range (its own writes, a replica write another coordinator sent it) is pushed to
 * the holder (KV_MSG_REPL with KV_F_CACHE), and the write's acknowledgement (the client's
 * answer, or the owner's ACK to that coordinator) waits until the holder has it or its
 * lease has ended; one that lags a quarter lease is renewed no more. The holder keeps
 * the values of the owner's answers to its forwarded gets (filled only when no push from
 * that owner came while the get was out, and only under the lease that was running when
 * it went out) and answers later gets of those keys itself, while the lease runs and its
 * own view names that owner. So its answers are as fresh as the owner's own reads. A
 * write coordinated by a node that is not the key's owner (a fallback, or a range that
 * became its own within a lease) is answered a lease after it began at the earliest: by
 * then every cache lease its crashed owner granted has ended.
 *
 * Routing. The entry node sends a request to the key's owner as the first of: itself (its
 * own range), its successor list (a key within it), its member table (one hop: the id's
 * successor among the members it takes for alive, while the table holds at most
 * one_hop_max of them), its owner cache (keys it looked up lately, when the table is off
 * or too large), a ring lookup. A node sent a request for a key outside its range answers
 * KV_MOVED with a hint, its own view of the key's successors (RESP acked); the entry
 * takes the hint (learning ids it had never seen) and sends again, at most
 * KV_MAX_CORRECTIONS times, then looks the key up. An owner that does not answer is
 * replaced by the next member in the table (KV_F_FALLBACK), or by a lookup of the next
 * position. Routing only picks the coordinator: what the coordinator does (W acks after a
 * durable store, the read quorum, "not found" only when settled) is the same whichever
 * way the request came.
 *
 * "Not found" is said only when the node is sure: every replica answered, none has the
 * key, and the node's view of the ring has not changed for cover_ms + 2 sync_ms (at least
 * settle_ms): longer than an old owner, whose view changed at the same time, keeps a
 * record of this range before handing it on. Otherwise the answer is KV_UNSURE (503 with
 * a retry hint).
 *
 * ---- Provided by the driver (kv_driver) ----
 * - store: get / put / del / scan over records sorted by key id (ring order), count.
 *   put returns once the record is durable: acknowledgements depend on it.
 * - send: deliver a kv_msg to m->to (a ring_addr, as in src/ring). Encode or copy before
 *   returning; a message that cannot be delivered is reported later through
 *   kv_on_unreachable (never from inside send: the core is not re-entrant).
 * - lookup: start a ring lookup of an id; answer with kv_on_lookup.
 * - reply: answer a client request made with kv_client.
 * - the view: the driver calls kv_set_view whenever the ring's predecessor or successor
 *   list may have changed (cheap when nothing did).
 * - members (optional): the nodes the driver's membership takes for alive, through
 *   kv_member_up / kv_member_down / kv_set_members. With them a request goes straight to
 *   the key's owner (one hop); without them, the successor list or a ring lookup.
 * - time: every call takes `now`, milliseconds on a clock that does not jump; the HLC's
 *   physical part is now + wall_offset_ms (kv_config), the driver's wall clock at now=0.
 * - ticks: call kv_tick no later than kv_wake_at(). */
#ifndef RN_KV_H
#define RN_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/id.h"
#include "../ring/ring.h"

#define KV_MAX_R   8
#define KV_KEY_MAX 1024 /* bytes in a key */
#define KV_RID_MAX 64   /* bytes in a client's request id (idempotency key) */
/* Request ids of the writes a record replaced, kept with it (kv_record.hist): each entry
 * is the id's hash (u64) and that write's version (u64 stamp, u64 writer, u8 tombstone),
 * big-endian, newest first; at most KV_HIST_MAX of them. */
#define KV_HIST_ENTRY 25
#define KV_HIST_MAX   4
#define KV_BUCKETS    64   /* a range digest cuts the range into this many buckets */
#define KV_ENTRY_MAX  8192 /* versions listed in one sync answer */
#define KV_PULL_MAX   512  /* records asked for or pushed per bucket exchange */
#define KV_REPAIR_MAX 1024 /* records pushed to one replica in one exchange */
/* record bytes pushed in one exchange or pull answer (at least one record) */
#define KV_REPAIR_BYTES    (16u << 20)
#define KV_MAX_CORRECTIONS 3    /* MOVED hints followed for one request before a lookup */
#define KV_CACHE_SIZE      1024 /* owner cache entries (routing without the table) */

typedef enum { KV_PUT = 1, KV_GET = 2, KV_DEL = 3 } kv_op;

/* A version: newer is a larger (stamp, writer). */
typedef struct {
	uint64_t stamp;  /* HLC: ms << 16 | counter */
	uint64_t writer; /* tie-break: the top 64 bits of the writing node's id */
	bool tomb;       /* a delete */
} kv_version;

int kv_version_cmp(const kv_version *a, const kv_version *b);

/* One stored record. The store sorts by kid (SHA-1 of key, the full 160 bits). */
typedef struct {
	rn_id kid;
	kv_version v;
	const uint8_t *key;
	size_t klen;
	const uint8_t *val; /* the client's bytes as sent (JSON text for the HTTP API) */
	size_t vlen;
	const uint8_t *rid; /* the request id of the client write that made it, if any */
	size_t ridlen;
	/* the request ids of the writes it replaced (KV_HIST_ENTRY bytes each, newest first):
	 * a retry of one of them, or its request read late (a node stopped with it in a
	 * socket), is answered as a replay instead of being applied over newer writes */
	const uint8_t *hist;
	size_t histlen;
} kv_record;

/* Whether len bytes can be a record's history. */
static inline bool kv_hist_len_ok(size_t len)
{
	return len % KV_HIST_ENTRY == 0 && len <= KV_HIST_MAX * KV_HIST_ENTRY;
}

typedef enum {
	KV_MSG_REQ = 1,   /* entry -> coordinator: op, req, rec (key; value and version for
	                   * a write), flags */
	KV_MSG_RESP,      /* coordinator -> entry: req, status, rec (a get's answer),
	                   * acked (the replicas that answered) */
	KV_MSG_REPL,      /* -> replica: store rec if newer; req != 0 asks for an ACK */
	KV_MSG_ACK,       /* req, rec.v = the version the replica now holds */
	KV_MSG_READ,      /* coordinator -> replica: req, rec.kid / key */
	KV_MSG_READ_ANS,  /* req, has_rec, rec */
	KV_MSG_DIGEST,    /* primary -> replica: round, lo, hi, hashes[KV_BUCKETS] */
	KV_MSG_KEYS,      /* replica -> primary: round, lo, hi, the differing buckets and
	                   * the replica's versions in them (entries) */
	KV_MSG_PULL,      /* primary -> replica: send me these records (kids) */
	KV_MSG_PURGE,     /* primary -> replica: drop these tombstones if still as listed */
	KV_MSG_LEASE_REQ, /* replica -> owner: req; may I answer gets of your range? */
	KV_MSG_LEASE,     /* owner -> replica: req, status (KV_OK: granted), lo, hi: the
	                   * range, for lease_ms from when the replica asked */
} kv_msg_type;
#define KV_MSG_LAST KV_MSG_LEASE

typedef enum {
	KV_OK = 0,
	KV_NOT_FOUND,   /* 404: sure it is absent (or deleted) */
	KV_UNSURE,      /* 503: cannot tell now (replicas did not answer, the ring moves) */
	KV_UNKNOWN,     /* 503: a write reached some replicas but not W: it may be applied */
	KV_NOT_APPLIED, /* 503: a write that reached no replica: safe to retry */
	KV_ERROR,       /* 500: a store failed */
	KV_MOVED,       /* between nodes only: "not my range", the entry looks the key up */
	KV_CONFLICT,    /* 412: a conditional write whose condition did not hold; the reply's
	                 * rec is the version the coordinator holds (has_rec false: none) */
} kv_status;

/* REQ flags */
#define KV_F_HANDOFF  1u /* a repair write of an existing version: keep rec.v */
#define KV_F_FALLBACK 2u /* the owner did not answer; coordinate as the next replica */
#define KV_F_DAMAGED                                                                               \
	16u /* REPL: the replica's copy of this version failed the driver's check                  \
	     * (kv_set_check): replace it even though the version is the same */
#define KV_F_LOOKED                                                                                \
	8u /* the entry found this node by a ring lookup: coordinate even if                       \
	    * the key looks outside this node's range (views lag) */
#define KV_F_CACHE                                                                                 \
	64u /* LEASE_REQ / LEASE: a cache lease (the asker does not replicate the range);          \
	     * REPL: a push to a cache holder, which updates its cache and stores nothing */
#define KV_F_UNCHECKED                                                                             \
	32u /* REQ of a get: the requester checks the value itself (kv_request.unchecked), so      \
	     * a settled owner answering from its own copy skips the driver's check */

typedef struct {
	rn_id kid;
	kv_version v;
} kv_entry;

typedef struct {
	uint8_t type; /* kv_msg_type */
	uint8_t op;   /* REQ */
	uint8_t status;
	uint8_t flags;
	bool has_rec;
	ring_addr to;
	ring_peer from;
	uint64_t req;
	kv_record rec;
	/* sync */
	uint32_t round;
	rn_id lo, hi;
	const uint64_t *hashes; /* DIGEST: KV_BUCKETS of them */
	const uint8_t *buckets; /* KEYS: indices of the buckets whose entries follow */
	size_t nbuckets;
	const kv_entry *entries; /* KEYS; PURGE */
	size_t nentries;
	const rn_id *kids; /* PULL */
	size_t nkids;
	/* RESP */
	const ring_peer *acked;
	size_t nacked;
	/* REQ: a conditional write (kv_request.has_cond) */
	bool has_cond;
	kv_version cond;
} kv_msg;

/* The answer to a client. Pointers are valid during the reply call only. */
typedef struct {
	kv_status status;
	const char *why; /* for the non-OK answers: what happened, for a person */
	bool has_rec;    /* a get's value, or a write's version */
	kv_record rec;
	rn_id coordinator;
	const ring_peer *acked; /* the replicas that answered */
	size_t nacked;
	bool replayed; /* a retry of a write already applied (same request id) */
	uint32_t retry_ms;
} kv_reply;

typedef struct {
	kv_op op;
	const uint8_t *key;
	size_t klen;
	const uint8_t *val;
	size_t vlen;
	const uint8_t *rid; /* optional idempotency key */
	size_t ridlen;
	/* A conditional write (compare-and-set): applied only if the key's version at its
	 * coordinator is cond (cond.stamp == 0: only if the key is absent or deleted), else
	 * answered KV_CONFLICT with the version held. The coordinator (the owner) orders the
	 * writes of a key, so of two writers that read the same version only one succeeds.
	 * A coordinator whose copy lags (it just took over the range) answers KV_CONFLICT
	 * with its older version until repair catches it up: a caller re-reads and retries. */
	bool has_cond;
	kv_version cond;
	/* A dated delete (KV_DEL only; 0: now): the tombstone's version is this wall-clock ms
	 * (at most now), so any write stamped after it wins over it. The file service's
	 * collection uses it to lose against an upload's concurrent put of the same chunk. */
	uint64_t at_ms;
	/* A get whose caller checks the value itself (a file chunk against the hash that names
	 * it): an owner that answers from its own copy sends it without the driver's check
	 * (kv_set_check), which would only repeat the caller's. A caller that finds the value
	 * bad asks again without it: then every copy read is checked and a damaged one is
	 * rewritten (read repair), so the bad copy is still found and replaced. */
	bool unchecked;
} kv_request;

typedef struct {
	void *ctx;
	/* store: 0, RN_ENOTFOUND (get, del) or another RN_E*. get's record and its bytes
	 * are valid until the next store call. */
	int (*get)(void *ctx, const rn_id *kid, kv_record *out);
	int (*put)(void *ctx, const kv_record *rec);
	int (*del)(void *ctx, const rn_id *kid);
	/* fn for every record with kid in the ring interval (lo, hi], in ring order from lo,
	 * until fn returns non-zero. Values may be left out (val NULL) when !values. The
	 * store must not be changed from fn. */
	int (*scan)(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
	            int (*fn)(void *arg, const kv_record *rec), void *arg);
	uint64_t (*count)(void *ctx);
	void (*send)(void *ctx, const kv_msg *m);
	void (*lookup)(void *ctx, const rn_id *kid, uint64_t req);
	void (*reply)(void *ctx, uint64_t client, const kv_reply *r);
} kv_driver;

typedef struct {
	unsigned bits;           /* ring width, as the ring core's */
	unsigned replicas;       /* R, 1..KV_MAX_R */
	unsigned write_quorum;   /* W, 1..R */
	unsigned read_quorum;    /* answers a get needs, 1..R (default R + 1 - W) */
	uint32_t op_timeout_ms;  /* a coordinator's wait for its replicas */
	uint32_t req_timeout_ms; /* a client request, end to end */
	uint32_t sync_ms;        /* anti-entropy period */
	uint32_t settle_ms;      /* a view this fresh does not answer from the owner's copy
	                          * (nor say "not found": that waits cover_ms + 2 sync_ms) */
	uint32_t cover_ms;       /* a replica range not synced this long is no longer ours */
	uint32_t tomb_grace_ms;  /* tombstones live at least this long */
	uint64_t wall_offset_ms; /* wall clock (Unix ms) at now = 0, for the HLC */
	bool owner_reads;        /* a settled owner answers a get from its own copy */
	uint32_t scrub_ms;    /* with a check (kv_set_check): one scrub step this often (0: off) */
	uint32_t scrub_bytes; /* value bytes one scrub step reads and checks */
	uint32_t one_hop_max; /* route by the member table while it holds at most this
	                       * many members (self included); 0: never (4096) */
	uint32_t leave_bytes; /* a graceful leave pushes this many bytes of records, then the
	                       * next ones once those are acknowledged (16 MiB) */
	uint32_t lease_ms;    /* read leases: a replica the owner granted one answers gets of
	                       * the owner's range from its own copy; less than op_timeout_ms
	                       * (600; 0: off, every get goes to the owner) */
} kv_config;

void kv_config_default(kv_config *c);
int kv_config_check(const kv_config *c); /* 0 or RN_EINVAL */

/* Counters, for /metrics and the simulator's reports. */
typedef struct {
	uint64_t client_ops, coordinated, fallbacks, forwarded;
	uint64_t moved; /* requests sent by the successor list to a node no longer the owner */
	uint64_t owner_reads; /* gets the owner answered from its own copy */
	uint64_t repl_sent, repl_applied, repl_stale; /* records sent, stored, older than held */
	uint64_t read_repairs, sync_rounds, sync_keys_pushed, sync_keys_pulled;
	uint64_t sync_bytes; /* repair traffic sent: digests, listings, pushed records, handoffs,
	                      * read repairs */
	uint64_t repair_data_bytes; /* of which records (pushed, handed off, read-repaired) */
	uint64_t handoffs_sent, handoffs_done, tombs_purged;
	uint64_t pending_ops, pending_handoffs;
	uint64_t replicas_in_sync; /* last full round: replicas whose digests matched this
	                            * node's range (R-1 when all is repaired) */
	uint64_t damaged_seen;     /* copies a get read that failed the driver's check */
	uint64_t damaged_repaired; /* ... rewritten with a good copy of the same version */
	uint64_t conflicts;        /* conditional writes refused here as coordinator */
	uint64_t scrub_checked;    /* records the background scrub read and checked */
	uint64_t scrub_damaged;    /* ... that failed the check: dropped, so repair restores them */
	uint64_t scrub_passes;     /* times the scrub went round the whole store */
	uint64_t leave_pushed;     /* records a graceful leave pushed to the new replica */
	uint64_t leave_batches;    /* ... in this many batches, each after the last was acked */
	uint64_t leave_batch_max;  /* bytes of the largest batch */
	/* routing: how each client request's first destination was chosen */
	uint64_t route_local;   /* this node's own range */
	uint64_t route_succ;    /* the successor list */
	uint64_t route_onehop;  /* the member table */
	uint64_t route_cache;   /* the owner cache */
	uint64_t route_lookup;  /* a ring lookup */
	uint64_t route_hints;   /* requests sent again to the node a MOVED answer named */
	uint64_t route_first;   /* requests whose first destination was another node */
	uint64_t route_stale;   /* ... which was not responsible (MOVED) or did not answer */
	uint64_t entry_lookups; /* ring lookups of client requests: first route, after MOVED,
	                         * fallbacks */
	uint64_t members_up;    /* members in the table now (self included) */
	/* read leases */
	uint64_t replica_reads;  /* gets this node answered from its copy under a lease */
	uint64_t leases_granted; /* leases (and renewals) this node granted as owner */
	uint64_t leases_held;    /* owners whose lease this node holds now */
	uint64_t lease_waits;    /* writes whose answer waited for a lease holder's ack */
	/* cache leases */
	uint64_t cache_reads;   /* gets this node answered from its read cache */
	uint64_t cache_fills;   /* owners' answers kept in it */
	uint64_t cache_entries; /* records in it now */
	uint64_t cache_bytes;   /* ... their keys' and values' bytes */
	uint64_t cache_leases;  /* owners whose cache lease this node holds now */
	uint64_t cache_holders; /* nodes holding a cache lease of this node's range now */
	uint64_t cache_pushes;  /* records this node pushed to cache holders */
} kv_stats;

typedef struct kv_node kv_node;

/* A node with the given id and own address; cfg and drv are copied. */
kv_node *kv_new(const kv_config *cfg, const kv_driver *drv, const rn_id *self, ring_addr addr);
void kv_free(kv_node *k);

/* The ring's view: joined, predecessor (addr NONE when unknown), successor list. */
void kv_set_view(kv_node *k, uint64_t now, bool joined, ring_peer pred, const ring_peer *succ,
                 size_t nsucc);

/* The member table. kv_member_up: p is alive (or suspect: still routed to); its address
 * may be new. kv_member_down: dead or gone. kv_set_members: the whole list at once, in
 * any order (members the feed gave before and not in it go down); cheap when nothing
 * changed. This node is always a member. */
void kv_member_up(kv_node *k, uint64_t now, ring_peer p);
void kv_member_down(kv_node *k, uint64_t now, const rn_id *id);
void kv_set_members(kv_node *k, uint64_t now, const ring_peer *p, size_t n);
/* Where a request for kid would go first now (for tests and tools): its address and how
 * it was chosen ("local", "successors", "onehop", "cache", "lookup"; addr NONE for a
 * lookup). */
ring_peer kv_route(const kv_node *k, const rn_id *kid, const char **how);

/* A client request; the answer comes through drv.reply with the same client handle. */
void kv_client(kv_node *k, uint64_t now, uint64_t client, const kv_request *r);
void kv_on_msg(kv_node *k, uint64_t now, const kv_msg *m);
/* A ring lookup the core asked for finished (ok false: it failed). */
void kv_on_lookup(kv_node *k, uint64_t now, uint64_t req, bool ok, ring_peer owner);
/* A message with this req sent to `to` could not be delivered. */
void kv_on_unreachable(kv_node *k, uint64_t now, uint64_t req, ring_addr to);
void kv_tick(kv_node *k, uint64_t now);
uint64_t kv_wake_at(const kv_node *k);

/* Graceful leave: push this node's own range to the node that becomes a new replica.
 * kv_leaving() is true while those pushes wait for acknowledgements. */
/* Graceful leave: pushes this node's own range to the successor that becomes its new
 * replica, leave_bytes at a time (the next batch once the last is acknowledged, so a peer
 * queue never holds the whole range); the leave is over when all is acknowledged, or at
 * req_timeout_ms, or when a push cannot be delivered: what was not pushed by then is on
 * the other R - 1 replicas, and anti-entropy copies it. */
void kv_leave(kv_node *k, uint64_t now);
bool kv_leaving(const kv_node *k);
/* Answers every open client request (KV_UNSURE / KV_UNKNOWN: the node is stopping). */
void kv_abort(kv_node *k, uint64_t now);

const kv_stats *kv_get_stats(const kv_node *k);

/* An optional check of a record's bytes, for values that can tell when they are damaged
 * (a file chunk stored under its hash: files_record_valid). A get that reads a copy that
 * fails it treats that copy as absent: the owner does not answer from it, the newest good
 * copy is the answer, and the damaged copy is rewritten with it (KV_F_DAMAGED), since a
 * version-based repair would not see the difference. When every copy read is damaged the
 * answer is KV_UNSURE, never the damaged bytes and never "not found". */
void kv_set_check(kv_node *k, bool (*check)(void *ctx, const kv_record *rec));
/* Someone outside the core (the file driver's reads of its own copies) found the copy
 * under kid damaged: the core reads it again, and if it fails the check drops it from the
 * store as the scrub does, so anti-entropy brings a good copy back. True if dropped. */
bool kv_drop_damaged(kv_node *k, uint64_t now, const rn_id *kid);
/* With a check set, a background scrub also reads every record this node stores, in ring
 * order from where it stopped, scrub_bytes (at most 4096 records) every scrub_ms, resting
 * 30 steps after each whole pass, so damage is found before a
 * read needs the copy. A copy that fails the check is dropped from the store; the next
 * anti-entropy round then sees this replica lacking that version and copies a good one
 * back (from the primary, or, on the primary, pulled from a replica). A record whose every
 * copy is damaged ends up absent, which a reader of its key is told, never given bad
 * bytes. */
/* The view the driver last gave: the predecessor, and up to max successors (their count). */
size_t kv_get_view(const kv_node *k, ring_peer *pred, ring_peer *succ, size_t max);

/* ---- records at rest: the bytes a store keeps for a record (codec, no IO) ---- */

/* Bytes kv_record_encode needs. */
size_t kv_record_size(const kv_record *r);
void kv_record_encode(const kv_record *r, uint8_t *out);
/* Parses bytes made by kv_record_encode; r's pointers point into buf. 0 or RN_EPROTO. */
int kv_record_decode(const uint8_t *buf, size_t len, const rn_id *kid, kv_record *r);

#endif
