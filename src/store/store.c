/* store.c — see store.h. One LMDB environment, one unnamed database; every write is
 * its own committed transaction, so an acknowledged write is on disk. */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../lib/err.h"

struct store {
	MDB_env *env;
	MDB_dbi dbi;
};

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
		rc = mdb_env_open(s->env, dir, 0, 0644);
	MDB_txn *txn = NULL;
	if (rc == 0)
		rc = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (rc == 0)
		rc = mdb_dbi_open(txn, NULL, 0, &s->dbi);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else if (txn)
		mdb_txn_abort(txn);
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
	mdb_env_close(s->env);
	free(s);
}

int store_put(store *s, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_txn *txn;
	if (mdb_txn_begin(s->env, NULL, 0, &txn) != 0)
		return RN_EIO;
	MDB_val k = {klen, (void *)(uintptr_t)key}, v = {vlen, (void *)(uintptr_t)val};
	if (mdb_put(txn, s->dbi, &k, &v, 0) != 0) {
		mdb_txn_abort(txn);
		return RN_EIO;
	}
	return mdb_txn_commit(txn) == 0 ? 0 : RN_EIO;
}

int store_get(store *s, const void *key, size_t klen, void **val, size_t *vlen)
{
	MDB_txn *txn;
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
		return RN_EIO;
	MDB_val k = {klen, (void *)(uintptr_t)key}, v;
	int rc = mdb_get(txn, s->dbi, &k, &v);
	if (rc == 0) {
		*val = malloc(v.mv_size ? v.mv_size : 1);
		if (*val) {
			memcpy(*val, v.mv_data, v.mv_size);
			*vlen = v.mv_size;
		}
	}
	mdb_txn_abort(txn);
	if (rc == MDB_NOTFOUND)
		return RN_ENOTFOUND;
	if (rc != 0)
		return RN_EIO;
	return *val ? 0 : RN_ENOMEM;
}

int store_del(store *s, const void *key, size_t klen)
{
	MDB_txn *txn;
	if (mdb_txn_begin(s->env, NULL, 0, &txn) != 0)
		return RN_EIO;
	MDB_val k = {klen, (void *)(uintptr_t)key};
	int rc = mdb_del(txn, s->dbi, &k, NULL);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return rc == MDB_NOTFOUND ? RN_ENOTFOUND : RN_EIO;
	}
	return mdb_txn_commit(txn) == 0 ? 0 : RN_EIO;
}

uint64_t store_count(store *s)
{
	MDB_txn *txn;
	MDB_stat st;
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	int rc = mdb_stat(txn, s->dbi, &st);
	mdb_txn_abort(txn);
	return rc == 0 ? st.ms_entries : 0;
}

int store_scan(store *s,
               int (*fn)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen),
               void *ctx)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
		return RN_EIO;
	if (mdb_cursor_open(txn, s->dbi, &cur) != 0) {
		mdb_txn_abort(txn);
		return RN_EIO;
	}
	MDB_val k, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0 && fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size) == 0)
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return 0;
}
