/* store.c — see store.h. One LMDB environment with one named database, "records":
 * key = the 20-byte key id, value = the encoded record. */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/grow.h"

struct store {
	MDB_env *env;
	MDB_dbi dbi;
	uint8_t *buf; /* the last record store_get read */
	size_t cap;
	uint64_t migrated;
	uint64_t tombs; /* records that are tombstones, kept as they are written */
	MDB_txn *batch; /* store_batch_begin's write transaction, which every call then uses */
	unsigned depth;
	uint64_t batch_writes;     /* puts and deletes in the open batch */
	uint64_t commits, written; /* store_commit_stats; commits numbers them too */
	uint64_t durable;          /* commits up to this one are on disk, meta page too */
	int fd;                    /* the data file's descriptor (store_flush) */
};

/* After a commit that wrote, on an environment opened with MDB_NOMETASYNC: LMDB wrote its
 * data pages and fdatasync'ed them, then wrote its meta page (the root that makes it
 * visible after a restart) without syncing it. That sync also carried every meta page
 * written before it, so every commit before this one is on disk now. */
static void committed(store *s)
{
	if (s->commits && s->durable < s->commits - 1)
		s->durable = s->commits - 1;
}

/* The transaction a call runs in: the open batch, or one of its own (*own). */
static int txn_for(store *s, bool write, MDB_txn **txn, bool *own)
{
	*own = !s->batch;
	if (s->batch) {
		*txn = s->batch;
		return 0;
	}
	return mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn) == 0 ? 0 : RN_EIO;
}

static int txn_done(store *s, MDB_txn *txn, bool own, bool commit)
{
	if (commit)
		s->batch_writes++;
	if (!own)
		return 0;
	if (commit) { /* a call on its own is on disk, meta page too, when it returns */
		s->commits++;
		s->written += s->batch_writes;
		s->batch_writes = 0;
		return mdb_txn_commit(txn) == 0 ? store_sync(s) : RN_EIO;
	}
	mdb_txn_abort(txn);
	return 0;
}

int store_batch_begin(store *s)
{
	if (s->depth++)
		return 0;
	if (mdb_txn_begin(s->env, NULL, 0, &s->batch) != 0) {
		s->batch = NULL;
		s->depth = 0;
		return RN_EIO;
	}
	return 0;
}

int store_batch_end(store *s)
{
	if (!s->depth || --s->depth)
		return 0;
	MDB_txn *txn = s->batch;
	bool wrote = s->batch_writes > 0;
	s->batch = NULL;
	s->commits += wrote;
	s->written += s->batch_writes;
	s->batch_writes = 0;
	if (txn && mdb_txn_commit(txn) != 0)
		return RN_EIO;
	if (wrote)
		committed(s);
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
	/* what mdb_env_sync does without MDB_WRITEMAP, on the descriptor alone: no state of
	 * the environment is read while the loop commits */
	return fdatasync(s->fd) == 0 ? 0 : RN_EIO;
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

int store_open(store **out, const char *dir, char *err, size_t errlen)
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
	if (rc == 0)
		rc = mdb_env_get_fd(s->env, &s->fd);
	if (rc != 0) {
		snprintf(err, errlen, "cannot open the store in %s: %s", dir, mdb_strerror(rc));
		if (s->env)
			mdb_env_close(s->env);
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
	mdb_env_sync(s->env, 1); /* the last commit's meta page (closing does not sync it) */
	mdb_env_close(s->env);
	free(s->buf);
	free(s);
}

uint64_t store_migrated(const store *s)
{
	return s->migrated;
}

bool store_batch_dirty(const store *s)
{
	return s->batch && s->batch_writes;
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
	bool own;
	if (txn_for(s, false, &txn, &own) < 0)
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
	txn_done(s, txn, own, false);
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
	bool own;
	if (txn_for(s, true, &txn, &own) < 0)
		return RN_EIO;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)rec->kid.b}, v = {n, NULL}, old;
	bool was = mdb_get(txn, s->dbi, &k, &old) == 0 && is_tomb(&old);
	/* reserve the space and encode straight into the page */
	if (mdb_put(txn, s->dbi, &k, &v, MDB_RESERVE) != 0) {
		txn_done(s, txn, own, false);
		return RN_EIO;
	}
	kv_record_encode(rec, v.mv_data);
	if (txn_done(s, txn, own, true) < 0)
		return RN_EIO;
	s->tombs += (uint64_t)rec->v.tomb - (uint64_t)was;
	return 0;
}

int store_del(void *ctx, const rn_id *kid)
{
	store *s = ctx;
	MDB_txn *txn;
	bool own;
	if (txn_for(s, true, &txn, &own) < 0)
		return RN_EIO;
	MDB_val k = {RN_ID_BYTES, (void *)(uintptr_t)kid->b}, old;
	bool was = mdb_get(txn, s->dbi, &k, &old) == 0 && is_tomb(&old);
	int rc = mdb_del(txn, s->dbi, &k, NULL);
	if (rc != 0) {
		txn_done(s, txn, own, false);
		return rc == MDB_NOTFOUND ? RN_ENOTFOUND : RN_EIO;
	}
	if (txn_done(s, txn, own, true) < 0)
		return RN_EIO;
	s->tombs -= was;
	return 0;
}

/* The records database's statistics, in the open batch or a read transaction of its own. */
static int db_stat(store *s, MDB_stat *st)
{
	MDB_txn *txn;
	bool own;
	if (txn_for(s, false, &txn, &own) < 0)
		return RN_EIO;
	int rc = mdb_stat(txn, s->dbi, st);
	txn_done(s, txn, own, false);
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
	bool own;
	if (txn_for(s, false, &txn, &own) < 0)
		return RN_EIO;
	if (mdb_cursor_open(txn, s->dbi, &cur) != 0) {
		txn_done(s, txn, own, false);
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
	txn_done(s, txn, own, false);
	return 0;
}
