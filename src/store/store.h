/* store.h — the node's persistent record store: LMDB in one directory. It keeps the kv
 * core's records (src/kv/kv.h) under their 20-byte key ids, so a scan in key-id order is
 * a walk around the ring; the bytes at rest are kv_record_encode's. Every write is its
 * own committed transaction: when store_put returns 0 the record is on disk (in a batch:
 * see "Group commit" below). Driver-side:
 * the cores reach it only through the kv_driver calls src/net wires to it.
 *
 * A store written by ringnet 0.1 before replication (user keys, JSON values, no
 * versions) is moved into this layout when opened, each value with the oldest version,
 * so any newer write wins over it. */
#ifndef RN_STORE_H
#define RN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../kv/kv.h"

typedef struct store store;

/* Opens (creating) the store in dir. 0 or a negative RN_E* code; err says why. */
int store_open(store **out, const char *dir, char *err, size_t errlen);
void store_close(store *s);

/* The kv_driver store calls (kv.h); ctx is the store. get's record points into memory the
 * store owns until its next call; scan's records are valid during fn only. */
int store_get(void *ctx, const rn_id *kid, kv_record *out);
int store_put(void *ctx, const kv_record *rec);
int store_del(void *ctx, const rn_id *kid);
int store_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
               int (*fn)(void *arg, const kv_record *rec), void *arg);
uint64_t store_count(void *ctx);
/* Reads the record under kid in a read transaction of its own (never the open batch), so
 * any thread may call it while the loop thread writes: fn sees the record, its value in
 * LMDB's mapped pages (no copy), valid during fn only; fn's result is returned. 0 from
 * fn, RN_ENOTFOUND or RN_EIO otherwise. */
int store_peek(store *s, const rn_id *kid, int (*fn)(void *arg, const kv_record *rec), void *arg);
/* Records moved from the old layout when the store was opened. */
uint64_t store_migrated(const store *s);
/* Group commit: between begin and end every call runs in one write transaction, committed
 * by the outermost end; 0 or RN_EIO. Whoever batches must hold back every acknowledgement
 * made in between until the batch is durable (below).
 *
 * Durability. LMDB runs with MDB_NOMETASYNC: a commit writes its data pages and
 * fdatasyncs them (on the caller's thread), then writes its meta page unsynced, so the
 * commit is on disk only once a later sync has run: the next commit's own, or
 * store_flush. Integrity never depends on it (LMDB keeps the previous root intact until
 * then: a crash of the machine falls back to it). Commits that wrote are numbered 1, 2, ...
 * (store_committed); store_durable is the last of them known on disk, and everything
 * said about a batch's writes waits until store_durable has reached its number. A call
 * outside a batch is durable when it returns, as is every commit store_open made. */
int store_batch_begin(store *s);
int store_batch_end(store *s);
uint64_t store_committed(const store *s);
uint64_t store_durable(const store *s);
/* Syncs the file (fdatasync): every commit made before the call is on disk when it
 * returns 0. The one call that may run on another thread while the owner of the store
 * goes on committing (it touches no state of the store); the owner then says how far it
 * reached with store_set_durable(s, store_committed as read before the flush began). */
int store_flush(store *s);
void store_set_durable(store *s, uint64_t upto);
/* store_flush and store_set_durable at once, on the owner's thread; 0 at once when
 * everything is durable already. */
int store_sync(store *s);
/* Whether the open batch has written anything that is not committed yet. */
bool store_batch_dirty(const store *s);
/* Commits that wrote something, and the puts and deletes they carried: their ratio is
 * how many writes share one fsync. */
void store_commit_stats(const store *s, uint64_t *commits, uint64_t *writes);
/* How many of the records are tombstones (deletes not yet collected). */
uint64_t store_tombstones(const store *s);
/* Bytes of the store's B-tree pages: what its records take on disk. */
uint64_t store_bytes(store *s);

#endif
