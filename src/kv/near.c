/* near.c — the read cache of the kv core: see near.h. */
#include "near.h"

#include <stdlib.h>
#include <string.h>

#define WAYS 4

typedef struct {
	rn_id kid;
	kv_version v;
	uint8_t *mem; /* key, then value: one allocation; NULL: the way is empty */
	size_t klen, vlen;
	uint32_t tag;
	uint64_t used_at;
} way;

struct kvn_cache {
	way *w; /* sets * WAYS */
	size_t sets, count, bytes, max_bytes, val_max;
};

kvn_cache *kvn_new(size_t sets, size_t max_bytes, size_t val_max)
{
	kvn_cache *c = calloc(1, sizeof *c);
	if (!c || !sets || !(c->w = calloc(sets * WAYS, sizeof *c->w))) {
		free(c);
		return NULL;
	}
	c->sets = sets;
	c->max_bytes = max_bytes;
	c->val_max = val_max;
	return c;
}

static void way_clear(kvn_cache *c, way *w)
{
	if (!w->mem)
		return;
	c->count--;
	c->bytes -= w->klen + w->vlen;
	free(w->mem);
	w->mem = NULL;
}

void kvn_free(kvn_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->sets * WAYS; i++)
		free(c->w[i].mem);
	free(c->w);
	free(c);
}

static way *set_of(const kvn_cache *c, const rn_id *kid)
{
	/* key ids are SHA-1 digests: any of their bytes are evenly spread */
	return &c->w[(rn_get64(kid->b + RN_ID_BYTES - 8) % c->sets) * WAYS];
}

static way *find(const kvn_cache *c, const rn_id *kid)
{
	way *s = set_of(c, kid);
	for (int i = 0; i < WAYS; i++)
		if (s[i].mem && rn_id_eq(&s[i].kid, kid))
			return &s[i];
	return NULL;
}

/* Replaces w's bytes with r's; false (w left empty) when they do not fit. */
static bool way_fill(kvn_cache *c, way *w, const kv_record *r, uint32_t tag, uint64_t now)
{
	way_clear(c, w);
	size_t n = r->klen + r->vlen;
	if (c->bytes + n > c->max_bytes || !(w->mem = malloc(n ? n : 1)))
		return false;
	if (r->klen)
		memcpy(w->mem, r->key, r->klen);
	if (r->vlen)
		memcpy(w->mem + r->klen, r->val, r->vlen);
	w->kid = r->kid;
	w->v = r->v;
	w->klen = r->klen;
	w->vlen = r->vlen;
	w->tag = tag;
	w->used_at = now;
	c->count++;
	c->bytes += n;
	return true;
}

bool kvn_put(kvn_cache *c, const kv_record *r, uint32_t tag, uint64_t now)
{
	way *w = find(c, &r->kid);
	if (r->v.tomb || r->vlen > c->val_max || r->klen > KV_KEY_MAX) {
		if (w)
			way_clear(c, w); /* (older than r, which is not kept) */
		return false;
	}
	if (!w) {
		way *s = set_of(c, &r->kid);
		w = &s[0];
		for (int i = 0; i < WAYS && w->mem; i++)
			if (!s[i].mem || s[i].used_at < w->used_at)
				w = &s[i]; /* an empty way, else the least recently used */
	}
	return way_fill(c, w, r, tag, now);
}

bool kvn_get(kvn_cache *c, const rn_id *kid, uint32_t tag, kv_record *out, uint64_t now)
{
	way *w = find(c, kid);
	if (!w || w->tag != tag)
		return false;
	w->used_at = now;
	memset(out, 0, sizeof *out);
	out->kid = w->kid;
	out->v = w->v;
	out->key = w->mem;
	out->klen = w->klen;
	out->val = w->mem + w->klen;
	out->vlen = w->vlen;
	return true;
}

void kvn_update(kvn_cache *c, const kv_record *r)
{
	way *w = find(c, &r->kid);
	if (!w || kv_version_cmp(&w->v, &r->v) >= 0)
		return;
	if (r->v.tomb || r->vlen > c->val_max || !r->val)
		way_clear(c, w);
	else
		way_fill(c, w, r, w->tag, w->used_at);
}

size_t kvn_count(const kvn_cache *c)
{
	return c ? c->count : 0;
}

size_t kvn_bytes(const kvn_cache *c)
{
	return c ? c->bytes : 0;
}
