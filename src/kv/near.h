/* near.h — the kv core's read cache (internal to src/kv): copies of records of other
 * owners' ranges that a node answers gets from while it holds the owner's cache lease
 * (kv.h, "Cache leases"). Bounded in entries (4-way sets, least recently used way
 * replaced) and in bytes; a value larger than val_max is not kept. Each copy carries a
 * tag: the lease period it was filled under (kv.c's epoch); a copy is served only while
 * its tag is the owner's current one, so a lease that lapsed takes every copy filled
 * under it with it, with no sweep. */
#ifndef RN_KV_NEAR_H
#define RN_KV_NEAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

typedef struct kvn_cache kvn_cache;

/* sets * 4 copies at most, holding at most max_bytes of keys and values. NULL: no memory. */
kvn_cache *kvn_new(size_t sets, size_t max_bytes, size_t val_max);
void kvn_free(kvn_cache *c);
/* Keeps a copy of r (key and value; no request id) with tag, in place of any copy of the
 * same key. False when it is not kept (too large, no memory, a tombstone): then no copy of
 * the key is left. */
bool kvn_put(kvn_cache *c, const kv_record *r, uint32_t tag, uint64_t now);
/* The copy of kid with this tag: *out points into the cache until the next put or update. */
bool kvn_get(kvn_cache *c, const rn_id *kid, uint32_t tag, kv_record *out, uint64_t now);
/* A newer version of r's key was written: a copy older than it is replaced by it (a
 * tombstone: dropped), whatever its tag. */
void kvn_update(kvn_cache *c, const kv_record *r);
size_t kvn_count(const kvn_cache *c);
size_t kvn_bytes(const kvn_cache *c);

#endif
