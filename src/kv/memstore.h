/* memstore.h — an in-memory store with the kv core's store interface (kv.h): records
 * sorted by key id in one array. For the simulator and the tests; the real node keeps its
 * records in LMDB (src/store). Not durable, by design: a simulated crash keeps it, as a
 * disk would. */
#ifndef RN_MEMSTORE_H
#define RN_MEMSTORE_H

#include "kv.h"

typedef struct memstore memstore;

memstore *memstore_new(void);
void memstore_free(memstore *s);

/* The kv_driver store calls; ctx is the memstore. */
int memstore_get(void *ctx, const rn_id *kid, kv_record *out);
int memstore_put(void *ctx, const kv_record *rec);
int memstore_del(void *ctx, const rn_id *kid);
int memstore_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
                  int (*fn)(void *arg, const kv_record *rec), void *arg);
uint64_t memstore_count(void *ctx);
/* Bytes held (records as encoded), for memory reports. */
size_t memstore_bytes(const memstore *s);

#endif
