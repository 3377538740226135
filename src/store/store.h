/* store.h — the node's persistent key-value store: LMDB in one directory. Keys are
 * byte strings, values opaque bytes (the KV service keeps JSON text). Driver-side: the
 * protocol cores never see it. */
#ifndef RN_STORE_H
#define RN_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct store store;

/* Opens (creating) the store in dir. 0 or a negative RN_E* code; err says why. */
int store_open(store **out, const char *dir, char *err, size_t errlen);
void store_close(store *s);

int store_put(store *s, const void *key, size_t klen, const void *val, size_t vlen);
/* 0 with a malloc'd copy in *val (caller frees), RN_ENOTFOUND, or another RN_E*. */
int store_get(store *s, const void *key, size_t klen, void **val, size_t *vlen);
/* 0 or RN_ENOTFOUND. */
int store_del(store *s, const void *key, size_t klen);
/* Calls fn for every key in order until it returns non-zero. */
int store_scan(store *s,
               int (*fn)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen),
               void *ctx);
/* Number of keys. */
uint64_t store_count(store *s);

#endif
