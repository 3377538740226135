/* memstore.c — see memstore.h. A sorted array of encoded records: lookups by binary
 * search, ring-interval scans as one or two runs of the array. */
#include "memstore.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"

typedef struct {
	rn_id kid;
	uint8_t *bytes;
	size_t len;
} slot;

struct memstore {
	slot *a;
	size_t n, cap;
	size_t bytes;
};

memstore *memstore_new(void)
{
	return calloc(1, sizeof(memstore));
}

void memstore_free(memstore *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		free(s->a[i].bytes);
	free(s->a);
	free(s);
}

/* The first index whose kid is > x (upper) or >= x (!upper). */
static size_t bound(const memstore *s, const rn_id *x, bool upper)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = rn_id_cmp(&s->a[mid].kid, x);
		if (c < 0 || (upper && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int memstore_get(void *ctx, const rn_id *kid, kv_record *out)
{
	memstore *s = ctx;
	size_t i = bound(s, kid, false);
	if (i >= s->n || !rn_id_eq(&s->a[i].kid, kid))
		return RN_ENOTFOUND;
	return kv_record_decode(s->a[i].bytes, s->a[i].len, kid, out) < 0 ? RN_EIO : 0;
}

int memstore_put(void *ctx, const kv_record *rec)
{
	memstore *s = ctx;
	size_t len = kv_record_size(rec);
	uint8_t *b = malloc(len);
	if (!b)
		return RN_ENOMEM;
	kv_record_encode(rec, b);
	size_t i = bound(s, &rec->kid, false);
	if (i < s->n && rn_id_eq(&s->a[i].kid, &rec->kid)) {
		s->bytes -= s->a[i].len;
		free(s->a[i].bytes);
	} else {
		if (rn_grow((void **)&s->a, &s->cap, s->n + 1, sizeof *s->a, 16) < 0) {
			free(b);
			return RN_ENOMEM;
		}
		memmove(&s->a[i + 1], &s->a[i], (s->n - i) * sizeof *s->a);
		s->n++;
		s->a[i].kid = rec->kid;
	}
	s->a[i].bytes = b;
	s->a[i].len = len;
	s->bytes += len;
	return 0;
}

int memstore_del(void *ctx, const rn_id *kid)
{
	memstore *s = ctx;
	size_t i = bound(s, kid, false);
	if (i >= s->n || !rn_id_eq(&s->a[i].kid, kid))
		return RN_ENOTFOUND;
	s->bytes -= s->a[i].len;
	free(s->a[i].bytes);
	memmove(&s->a[i], &s->a[i + 1], (s->n - i - 1) * sizeof *s->a);
	s->n--;
	return 0;
}

static int run(memstore *s, size_t from, size_t to, bool values,
               int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	for (size_t i = from; i < to; i++) {
		kv_record r;
		if (kv_record_decode(s->a[i].bytes, s->a[i].len, &s->a[i].kid, &r) < 0)
			continue;
		if (!values) {
			r.val = NULL;
			r.vlen = 0;
		}
		if (fn(arg, &r))
			return 1;
	}
	return 0;
}

int memstore_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
                  int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	memstore *s = ctx;
	size_t a = bound(s, lo, true), b = bound(s, hi, true);
	int c = rn_id_cmp(lo, hi);
	if (c < 0)
		run(s, a, b, values, fn, arg);
	else if (!run(s, a, s->n, values, fn, arg)) /* wraps past the top (lo == hi: all) */
		run(s, 0, c == 0 ? a : b, values, fn, arg);
	return 0;
}

uint64_t memstore_count(void *ctx)
{
	return ((memstore *)ctx)->n;
}

size_t memstore_bytes(const memstore *s)
{
	return s->bytes + s->cap * sizeof(slot);
}
