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

/* Opens (creating) the store in dir. 0 or a negative RN_E* code; err says why. The
 * write-ahead log (kv.wal in dir) is 8 MiB; store_open_sized gives another size (tests). */
int store_open(store **out, const char *dir, char *err, size_t errlen);
int store_open_sized(store **out, const char *dir, size_t log_bytes, char *err, size_t errlen);
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
/* Records the write-ahead log gave back when the store was opened (commits LMDB had not
 * committed, or not made durable, before the process or its machine stopped). */
uint64_t store_replayed(const store *s);
/* Group commit: the calls between begin and end are one commit, made by the outermost end;
 * 0 or RN_EIO. Whoever batches must hold back every acknowledgement
 * made in between until the batch is durable (below).
 *
 * Durability. A commit (a batch's end, or a call outside a batch, that wrote) puts its
 * operations, as one frame, into the write-ahead log (wal.h: written, not synced); it is
 * on disk once the log is synced: store_flush, one fdatasync for every commit before it.
 * The records themselves stay in one LMDB write transaction, which every call reads and
 * writes through, and which LMDB commits every 2,048 writes, when store_publish or an
 * idle store_tick asks, and at a checkpoint. LMDB runs with MDB_NOMETASYNC: its commit
 * fdatasyncs the data pages, then writes the meta page unsynced; a checkpoint syncs the
 * data file once more, after which LMDB holds every commit durably and the log need not:
 * one is made before the log starts again at its beginning (once per 8 MiB of frames),
 * and for a frame larger than the log, which is not logged (that commit is durable when
 * the checkpoint returns, and the log is cleared). So a put costs one fdatasync, shared
 * by every commit that reaches the log before it, where committing each batch in LMDB
 * cost two in a row. Integrity never depends on the log: LMDB keeps its previous root
 * intact until a later sync, so a crash of the machine falls back to it, and store_open
 * applies the log's frames over it, then clears the log. Commits that wrote are numbered
 * 1, 2, ... (store_committed); store_durable is the last of them known on disk, and
 * everything said about a batch's writes waits until store_durable has reached its
 * number. A call outside a batch is durable when it returns, as is every commit
 * store_open made. */
int store_batch_begin(store *s);
int store_batch_end(store *s);
uint64_t store_committed(const store *s);
uint64_t store_durable(const store *s);
/* Syncs the log (fdatasync): every commit made before the call is on disk when it
 * returns 0. The one call that may run on another thread while the owner of the store
 * goes on committing (it touches no state of the store); the owner then says how far it
 * reached with store_set_durable(s, store_committed as read before the flush began). */
int store_flush(store *s);
void store_set_durable(store *s, uint64_t upto);
/* store_flush and store_set_durable at once, on the owner's thread; 0 at once when
 * everything is durable already. */
int store_sync(store *s);
/* LMDB commits in its own time (below, "Durability"); store_peek, on other threads, sees
 * only what it committed. store_publish commits what the store holds now (one fdatasync
 * of the data file, on the caller's thread): a peek begun after it sees every write made
 * before it. store_tick, called now and then (every 100 ms) by the owner, commits once no
 * write has come since the last call, so that an idle store keeps no transaction open
 * (either may run inside a batch: its commit is still made by the batch's end).
 * 0 or RN_EIO. */
int store_publish(store *s);
int store_tick(store *s);
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
