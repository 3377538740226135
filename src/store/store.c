/* store.c — see store.h. One LMDB environment with one named database, "records":
 * key = the 20-byte key id, value = the encoded record. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "wal.h"

#define WAL_BYTES ((size_t)8 << 20) /* the log: a frame larger goes to LMDB's own syncs */

#define CHECKPOINT_WRITES 2048 /* LMDB commits at least every this many puts and deletes */

struct store {
	MDB_env *env;
	MDB_dbi dbi;
	uint8_t *buf; /* the last record store_get read */
	size_t cap;
	uint64_t migrated;
	uint64_t tombs; /* records that are tombstones, kept as they are written */
	MDB_txn *txn;   /* the write transaction every call uses: open from the first write
	                 * until LMDB commits it (checkpoint, store_publish, store_tick) */
	uint64_t txn_writes, tick_writes; /* puts and deletes in it; as the last tick saw */
	unsigned depth;                   /* batches open */
	uint64_t batch_writes;            /* puts and deletes in the open batch */
	uint64_t commits, written;        /* store_commit_stats; commits numbers them too */
	uint64_t durable;                 /* commits up to this one are on disk */
	int fd;                           /* the data file's descriptor */
	wal *log;                         /* every commit's frame (wal.h) */
	uint64_t replayed;                /* records the log gave back at store_open */
};

/* The transaction a call runs in: the write transaction (begun for a write if none is
 * open), else, for a read, one of its own (*ro: the caller aborts it). */
static int txn_for(store *s, bool write, MDB_txn **txn, bool *ro)
{
	*ro = false;
	if (!s->txn && write && mdb_txn_begin(s->env, NULL, 0, &s->txn) != 0) {
		s->txn = NULL;
		return RN_EIO;
	}
	if (s->txn) {
		*txn = s->txn;
		return 0;
	}
	*ro = true;
	return mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn) == 0 ? 0 : RN_EIO;
}

/* LMDB commits what the write transaction holds: its data pages written and fdatasync'ed,
 * its meta page written (MDB_NOMETASYNC: not synced). */
static int lmdb_commit(store *s)
{
	if (!s->txn)
		return 0;
	MDB_txn *t = s->txn;
	s->txn = NULL;
	s->txn_writes = s->tick_writes = 0;
	return mdb_txn_commit(t) == 0 ? 0 : RN_EIO;
}

/* LMDB holds every commit so far durably, meta page too: the log need not. */
static int checkpoint(store *s)
{
	if (lmdb_commit(s) < 0 || fdatasync(s->fd) != 0)
		return RN_EIO;
	store_set_durable(s, s->commits);
	return 0;
}

/* A commit of the writes made since the last: its frame goes into the log (durable once
 * the log is synced). A frame that does not fit after the last one waits for a
 * checkpoint, then starts a new lap; one larger than the log is not logged: a checkpoint
 * makes the commit durable at once, and the log is cleared (its frames, older than this
 * commit, must not be replayed over it). LMDB commits every CHECKPOINT_WRITES writes. */
static int commit(store *s)
{
	s->written += s->batch_writes;
	s->txn_writes += s->batch_writes;
	s->batch_writes = 0;
	int rc = wal_write(s->log);
	if (rc == WAL_FULL) {
		if (checkpoint(s) < 0)
			return RN_EIO;
		wal_rewind(s->log);
		rc = wal_write(s->log);
	}
	if (rc < 0)
		return RN_EIO;
	s->commits++;
	if (rc == WAL_TOO_BIG)
		return checkpoint(s) < 0 || wal_clear(s->log) < 0 ? RN_EIO : 0;
	return s->txn_writes >= CHECKPOINT_WRITES ? lmdb_commit(s) : 0;
}

/* The end of a call: a read's own transaction ends; a write outside a batch is a commit of
 * its own, on disk when the call returns. */
static int txn_done(store *s, MDB_txn *txn, bool ro, bool wrote)
{
	if (ro) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (wrote)
		s->batch_writes++;
	if (s->depth || !wrote)
		return 0;
	return commit(s) < 0 ? RN_EIO : store_sync(s);
}

int store_batch_begin(store *s)
{
	s->depth++;
	return 0;
}

int store_batch_end(store *s)
{
	if (!s->depth || --s->depth)
		return 0;
	if (s->batch_writes)
		return commit(s);
	wal_drop(s->log);
	return 0;
}

int store_publish(store *s)
{
	return s->txn_writes || s->batch_writes ? lmdb_commit(s) : 0;
}

int store_tick(store *s)
{
	uint64_t w = s->txn_writes + s->batch_writes;
	if (w && w == s->tick_writes)
		return lmdb_commit(s);
	s->tick_writes = w;
	return 0;
}

uint64_t store_committed(const store *s)
{
	return s->commits;
}

uint64_t store_durable(const store *s)
{
	return s->durable;
}

int store_flush(store *s)
{
	/* the log's descriptor alone: no state of the store is read while the loop commits */
	return wal_sync(s->log);
}

void store_set_durable(store *s, uint64_t upto)
{
	if (upto > s->durable)
		s->durable = upto;
}

int store_sync(store *s)
{
	if (s->durable == s->commits)
		return 0;
	uint64_t upto = s->commits;
	if (store_flush(s) < 0)
		return RN_EIO;
	store_set_durable(s, upto);
	return 0;
}

/* Whether the bytes at rest are a tombstone (kv_record_encode's flags byte). */
static bool is_tomb(const MDB_val *v)
{
	return v->mv_size > 2 && (((const uint8_t *)v->mv_data)[2] & 1);
}

/* Moves the records of the pre-replication layout (the unnamed database: user key ->
 * JSON text) into "records", with version (1, 0): older than any real write. */
static int migrate(store *s, MDB_txn *txn)
{
	MDB_dbi old;
	MDB_cursor *cur;
	if (mdb_dbi_open(txn, NULL, 0, &old) != 0 || mdb_cursor_open(txn, old, &cur) != 0)
		return 0;
	MDB_val k, v;
	int err = 0;
	/* first copy, then delete the copied keys (a cursor that deletes as it walks is
	 * easy to get wrong) */
	size_t n = 0, cap = 0;
	MDB_val *done = NULL;
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		/* the named database itself is an entry of the unnamed one */
		if ((k.mv_size == 7 && !memcmp(k.mv_data, "records", 7)) || !k.mv_size ||
		    k.mv_size > KV_KEY_MAX)
			continue;
		kv_record r = {.key = k.mv_data,
		               .klen = k.mv_size,
		               .val = v.mv_data,
		               .vlen = v.mv_size,
		               .v = {1, 0, false}};
		rn_id_hash(&r.kid, k.mv_data, k.mv_size, RN_ID_BITS);
		MDB_val nk = {RN_ID_BYTES, r.kid.b}, nv = {kv_record_size(&r), NULL};
		err = mdb_put(txn, s->dbi, &nk, &nv, MDB_RESERVE);
		if (!err)
			kv_record_encode(&r, nv.mv_data);
		if (!err && rn_grow((void **)&done, &cap, n + 1, sizeof *done, 64) < 0)
			err = ENOMEM;
		if (!err) {
			done[n].mv_size = k.mv_size;
			done[n].mv_data = malloc(k.mv_size);
			if (!done[n].mv_data)
				err = ENOMEM;
			else
				memcpy(done[n++].mv_data, k.mv_data, k.mv_size);
		}
	}
	mdb_cursor_close(cur);
	for (size_t i = 0; i < n; i++) {
		if (!err)
			err = mdb_del(txn, old, &done[i], NULL);
		free(done[i].mv_data);
	}
	free(done);
	if (!err)
		s->migrated = n;
	return err ? RN_EIO : 0;
}

typedef struct {
	store *s;
	MDB_txn *txn;
} replay_ctx;

/* One operation of a logged commit, again: a put unless the store holds that version or a
 * newer one (it committed, or a later write did), a delete always (the frames that follow
 * put back whatever came after it). */
static int replay_op(void *arg, bool put, const rn_id *kid, const uint8_t *b, size_t len)
{
	replay_ctx *c = arg;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)kid->b}, old, v = {len, (void *)(uintptr_t)b};
	if (!put) {
		int rc = mdb_del(c->txn, c->s->dbi, &k, NULL);
		return rc == 0 || rc == MDB_NOTFOUND ? 0 : RN_EIO;
	}
	kv_record r, cur;
	if (kv_record_decode(b, len, kid, &r) < 0)
		return RN_EIO;
	if (mdb_get(c->txn, c->s->dbi, &k, &old) == 0 &&
	    kv_record_decode(old.mv_data, old.mv_size, kid, &cur) == 0 &&
	    kv_version_cmp(&cur.v, &r.v) >= 0)
		return 0;
	c->s->replayed++;
	return mdb_put(c->txn, c->s->dbi, &k, &v, 0) == 0 ? 0 : RN_EIO;
}

/* Opens the log in dir (made: its directory entry synced) and applies its frames in txn. */
static int open_log(store *s, const char *dir, size_t bytes, MDB_txn *txn, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/kv.wal", dir);
	bool made = access(path, F_OK) != 0;
	int rc = wal_open(&s->log, path, bytes, err, errlen);
	if (rc < 0)
		return rc;
	int d = made ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (d >= 0) {
		fsync(d);
		close(d);
	}
	replay_ctx c = {s, txn};
	if (wal_replay(s->log, replay_op, &c) < 0) {
		snprintf(err, errlen, "cannot apply the write-ahead log %s", path);
		return RN_EIO;
	}
	return 0;
}

int store_open(store **out, const char *dir, char *err, size_t errlen)
{
	return store_open_sized(out, dir, WAL_BYTES, err, errlen);
}

int store_open_sized(store **out, const char *dir, size_t log_bytes, char *err, size_t errlen)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
		return RN_EIO;
	}
	store *s = calloc(1, sizeof *s);
	if (!s)
		return RN_ENOMEM;
	int rc = mdb_env_create(&s->env);
	if (rc == 0)
		rc = mdb_env_set_mapsize(s->env, (size_t)1 << 34); /* 16 GiB of address space */
	if (rc == 0)
		rc = mdb_env_set_maxdbs(s->env, 4);
	if (rc == 0)
		rc = mdb_env_open(s->env, dir, MDB_NOMETASYNC, 0644);
	MDB_txn *txn = NULL;
	if (rc == 0)
		rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc == 0)
		rc = mdb_dbi_open(txn, "records", MDB_CREATE, &s->dbi);
	if (rc == 0 && migrate(s, txn) < 0)
		rc = MDB_PANIC;
	bool log_failed = false;
	if (rc == 0 && open_log(s, dir, log_bytes, txn, err, errlen) < 0) {
		log_failed = true;
		rc = MDB_PANIC;
	}
	if (rc == 0) { /* count the tombstones once; puts and deletes keep the count */
		MDB_cursor *cur;
		MDB_val k, v;
		if (mdb_cursor_open(txn, s->dbi, &cur) == 0) {
			for (int c = mdb_cursor_get(cur, &k, &v, MDB_FIRST); c == 0;
			     c = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
				s->tombs += is_tomb(&v);
			mdb_cursor_close(cur);
		}
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else if (txn)
		mdb_txn_abort(txn);
	if (rc == 0)
		rc = mdb_env_sync(s->env, 1); /* (what open wrote: its meta page too) */
	if (rc == 0 && wal_clear(s->log) < 0) /* ... so the log's frames are in it now */
		rc = EIO;
	if (rc == 0)
		rc = mdb_env_get_fd(s->env, &s->fd);
	if (rc != 0) {
		if (!log_failed)
			snprintf(err, errlen, "cannot open the store in %s: %s", dir,
			         mdb_strerror(rc));
		if (s->env)
			mdb_env_close(s->env);
		wal_close(s->log);
		free(s);
		return RN_EIO;
	}
	*out = s;
	return 0;
}

void store_close(store *s)
{
	if (!s)
		return;
	/* every commit in LMDB, meta page too; then nothing is left for the log to give back */
	if (checkpoint(s) == 0)
		wal_clear(s->log);
	mdb_env_close(s->env);
	wal_close(s->log);
	free(s->buf);
	free(s);
}

uint64_t store_migrated(const store *s)
{
	return s->migrated;
}

uint64_t store_replayed(const store *s)
{
	return s->replayed;
}

bool store_batch_dirty(const store *s)
{
	return s->depth && s->batch_writes;
}

void store_commit_stats(const store *s, uint64_t *commits, uint64_t *writes)
{
	*commits = s->commits;
	*writes = s->written;
}

uint64_t store_tombstones(const store *s)
{
	return s->tombs;
}

int store_get(void *ctx, const rn_id *kid, kv_record *out)
{
	store *s = ctx;
	MDB_txn *txn;
	bool ro;
	if (txn_for(s, false, &txn, &ro) < 0)
		return RN_EIO;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)kid->b}, v;
	int rc = mdb_get(txn, s->dbi, &k, &v);
	if (rc == 0 && v.mv_size > s->cap) {
		uint8_t *b = realloc(s->buf, v.mv_size);
		if (!b)
			rc = ENOMEM;
		else {
			s->buf = b;
			s->cap = v.mv_size;
		}
	}
	if (rc == 0)
		memcpy(s->buf, v.mv_data, v.mv_size);
	txn_done(s, txn, ro, false);
	if (rc == MDB_NOTFOUND)
		return RN_ENOTFOUND;
	if (rc != 0)
		return rc == ENOMEM ? RN_ENOMEM : RN_EIO;
	return kv_record_decode(s->buf, v.mv_size, kid, out) < 0 ? RN_EIO : 0;
}

int store_peek(store *s, const rn_id *kid, int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	MDB_txn *txn;
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
		return RN_EIO;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)kid->b}, v;
	int rc = mdb_get(txn, s->dbi, &k, &v);
	kv_record r;
	if (rc == 0)
		rc = kv_record_decode(v.mv_data, v.mv_size, kid, &r) < 0 ? RN_EIO : fn(arg, &r);
	else
		rc = rc == MDB_NOTFOUND ? RN_ENOTFOUND : RN_EIO;
	mdb_txn_abort(txn);
	return rc;
}

int store_put(void *ctx, const kv_record *rec)
{
	store *s = ctx;
	size_t n = kv_record_size(rec);
	MDB_txn *txn;
	bool ro;
	if (txn_for(s, true, &txn, &ro) < 0)
		return RN_EIO;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)rec->kid.b}, v = {n, NULL}, old;
	bool was = mdb_get(txn, s->dbi, &k, &old) == 0 && is_tomb(&old);
	/* reserve the space and encode straight into the page */
	if (mdb_put(txn, s->dbi, &k, &v, MDB_RESERVE) != 0) {
		txn_done(s, txn, ro, false);
		return RN_EIO;
	}
	kv_record_encode(rec, v.mv_data);
	wal_add(s->log, true, &rec->kid, v.mv_data, n);
	if (txn_done(s, txn, ro, true) < 0)
		return RN_EIO;
	s->tombs += (uint64_t)rec->v.tomb - (uint64_t)was;
	return 0;
}

int store_del(void *ctx, const rn_id *kid)
{
	store *s = ctx;
	MDB_txn *txn;
	bool ro;
	if (txn_for(s, true, &txn, &ro) < 0)
		return RN_EIO;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)kid->b}, old;
	bool was = mdb_get(txn, s->dbi, &k, &old) == 0 && is_tomb(&old);
	int rc = mdb_del(txn, s->dbi, &k, NULL);
	if (rc != 0) {
		txn_done(s, txn, ro, false);
		return rc == MDB_NOTFOUND ? RN_ENOTFOUND : RN_EIO;
	}
	wal_add(s->log, false, kid, NULL, 0);
	if (txn_done(s, txn, ro, true) < 0)
		return RN_EIO;
	s->tombs -= was;
	return 0;
}

/* The records database's statistics, in the open batch or a read transaction of its own. */
static int db_stat(store *s, MDB_stat *st)
{
	MDB_txn *txn;
	bool ro;
	if (txn_for(s, false, &txn, &ro) < 0)
		return RN_EIO;
	int rc = mdb_stat(txn, s->dbi, st);
	txn_done(s, txn, ro, false);
	return rc == 0 ? 0 : RN_EIO;
}

uint64_t store_count(void *ctx)
{
	MDB_stat st;
	return db_stat(ctx, &st) == 0 ? st.ms_entries : 0;
}

uint64_t store_bytes(store *s)
{
	MDB_stat st;
	if (db_stat(s, &st) < 0)
		return 0;
	return (uint64_t)st.ms_psize *
	       (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
}

/* Calls fn on the records from the cursor's position while their id is <= hi (or to the
 * end when hi is NULL); 1 when fn asked to stop. */
static int walk(MDB_cursor *cur, MDB_val *k, MDB_val *v, int rc, const rn_id *hi, bool values,
                int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	while (rc == 0) {
		if (k->mv_size != RN_ID_BYTES)
			goto next;
		rn_id kid;
		memcpy(kid.b, k->mv_data, RN_ID_BYTES);
		if (hi && rn_id_cmp(&kid, hi) > 0)
			return 0;
		kv_record r;
		if (kv_record_decode(v->mv_data, v->mv_size, &kid, &r) == 0) {
			if (!values) {
				r.val = NULL;
				r.vlen = 0;
			}
			if (fn(arg, &r))
				return 1;
		}
	next:
		rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
	}
	return 0;
}

int store_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
               int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	store *s = ctx;
	MDB_txn *txn;
	MDB_cursor *cur;
	bool ro;
	if (txn_for(s, false, &txn, &ro) < 0)
		return RN_EIO;
	if (mdb_cursor_open(txn, s->dbi, &cur) != 0) {
		txn_done(s, txn, ro, false);
		return RN_EIO;
	}
	/* the first id after lo: position at lo, step over it if it is there */
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)lo->b}, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	if (rc == 0 && k.mv_size == RN_ID_BYTES && !memcmp(k.mv_data, lo->b, RN_ID_BYTES))
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	int c = rn_id_cmp(lo, hi), stop;
	if (c < 0) {
		walk(cur, &k, &v, rc, hi, values, fn, arg);
	} else { /* wraps past the top; lo == hi is the whole ring, lo itself last */
		stop = walk(cur, &k, &v, rc, NULL, values, fn, arg);
		if (!stop) {
			rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
			walk(cur, &k, &v, rc, c == 0 ? lo : hi, values, fn, arg);
		}
	}
	mdb_cursor_close(cur);
	txn_done(s, txn, ro, false);
	return 0;
}
