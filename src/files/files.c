/* files.c — see files.h. One list of transfers, one list of kv operations in flight; every
 * kv answer finds its operation by request id, so a late or repeated answer is ignored. */
#include "files.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"

enum { X_UP = 1, X_DOWN, X_LIST, X_DEL, X_GC /* a collection, waiting or running */ };

enum {
	S_UP_DATA = 1, /* taking bytes, chunks going out */
	S_UP_REFRESH,  /* putting again the chunks put too long ago */
	S_UP_OLD,      /* reading the manifest this one replaces */
	S_UP_MANIFEST, /* writing the manifest */
	S_IDX_WAIT,    /* waiting for this node's turn at the index */
	S_IDX,         /* reading, then writing the index */
	S_DL_MANIFEST,
	S_DL_META, /* waiting for files_download_start */
	S_DL_DATA,
	S_LIST,
	S_DEL_GET,
	S_DEL_MANIFEST,
	S_GC_WAIT,  /* collection: waiting for gc_at */
	S_GC_INDEX, /* ... which manifests are there */
	S_GC_SCAN,  /* ... reading them one by one */
	S_GC_DELETE,
	S_DRAIN, /* aborted: waiting for the operations in flight, then collect or free */
};

/* a chunk that never matched its hash, after every retry (an answer to on_answer) */
#define KV_CORRUPT ((kv_status)100)

/* what a kv operation is for */
enum {
	T_CHUNK_PUT = 1,
	T_CHUNK_GET,
	T_CHUNK_DEL,
	T_MAN_GET,
	T_MAN_PUT,
	T_MAN_DEL,
	T_IDX_GET,
	T_IDX_PUT
};

typedef struct slot {
	uint32_t idx;
	uint8_t *data;
	size_t len;
	bool have; /* download: fetched and verified */
	bool busy; /* a kv operation is in flight for it */
} slot;

typedef struct xfer {
	struct xfer *next;
	uint64_t id;
	int kind, state;
	bool aborted;  /* the client is gone: no more data or done */
	bool orphaned; /* ... but the work goes on to its end (nothing to undo) */
	char name[FILES_NAME_MAX + 1];
	size_t nlen;
	unsigned inflight; /* kv operations not yet answered */
	/* upload */
	uint8_t *cur;
	size_t curlen;
	EVP_MD_CTX *whole;
	uint64_t size;
	uint8_t *hashes; /* the chunk hashes, in order */
	size_t nhash, hcap;
	uint64_t *put_ms; /* wall ms each chunk was first put (0: not yet) */
	size_t pcap;
	size_t refresh_at;       /* S_UP_REFRESH: the next chunk to look at */
	unsigned refresh_passes; /* ... passes made */
	slot *slots;
	size_t nslots, scap;
	bool ended, full;
	bool collect; /* failed before its manifest: collect its chunks once drained */
	uint64_t uploaded_ms;
	/* a manifest: the upload's own, or the one read (download, delete, collection) */
	uint8_t *mbuf;
	size_t mlen;
	files_manifest m;
	/* download */
	uint64_t end;
	uint32_t skip; /* bytes of the first chunk before the range */
	uint32_t last, next_fetch, next_emit;
	unsigned outstanding; /* data calls not yet consumed */
	uint32_t repaired;
	/* index */
	files_entry *ents;
	size_t nents, ecap;
	uint8_t *ibuf;
	kv_version idx_v; /* the version of the index read (stamp 0: there was none) */
	unsigned idx_tries;
	/* collection: candidate chunk hashes, sorted, and whether still to delete */
	uint8_t *cand;
	bool *keep;
	size_t ncand;
	size_t scan_at, del_at;
	files_status final; /* what done says once collection is over */
	const char *final_why;
	uint64_t gc_at;      /* X_GC: when it runs */
	uint64_t gc_date_ms; /* X_GC: the wall ms its tombstones carry */
} xfer;

typedef struct kop {
	struct kop *next;
	uint64_t req;
	xfer *x;
	int tag;
	uint32_t idx;
	kv_op op;
	uint8_t key[FILES_KEY_MAX];
	size_t klen;
	const uint8_t *val; /* owned by x, valid until the operation ends */
	size_t vlen;
	bool has_cond;
	kv_version cond;
	uint64_t at_ms; /* a dated delete */
	unsigned tries;
	uint64_t retry_at; /* waiting to be sent again (0: in flight) */
	bool local;        /* a chunk get asked of this node's own store first (driver.local) */
	bool store_checks; /* a chunk get that came back damaged: the store checks its copies */
} kop;

struct files_core {
	files_config cfg;
	files_driver d;
	xfer *xs;
	kop *ops;
	uint64_t seq;
	xfer *idx_owner; /* the transfer changing the index; the others wait */
	files_stats st;
};

/* ---- codecs ---- */

void files_sha256(const uint8_t *buf, size_t len, uint8_t out[FILES_HASH])
{
	unsigned n = FILES_HASH;
	EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL);
}

void files_hex(const uint8_t *b, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[b[i] >> 4];
		out[2 * i + 1] = hx[b[i] & 15];
	}
	out[2 * n] = '\0';
}

size_t files_chunk_key(const uint8_t sha[FILES_HASH], uint8_t *out)
{
	out[0] = 0;
	out[1] = 'F';
	out[2] = 'c';
	memcpy(out + 3, sha, FILES_HASH);
	return 3 + FILES_HASH;
}

size_t files_manifest_key(const char *name, size_t nlen, uint8_t *out)
{
	out[0] = 0;
	out[1] = 'F';
	out[2] = 'm';
	memcpy(out + 3, name, nlen);
	return 3 + nlen;
}

size_t files_index_key(uint8_t *out)
{
	out[0] = 0;
	out[1] = 'F';
	out[2] = 'i';
	return 3;
}

bool files_record_valid(const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	if (klen != 3 + FILES_HASH || key[0] || key[1] != 'F' || key[2] != 'c' || !val)
		return true;
	uint8_t h[FILES_HASH];
	files_sha256(val, vlen, h);
	return !memcmp(h, key + 3, FILES_HASH);
}

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

#define MAN_FIXED (4 + 2 + 8 + 4 + 8 + FILES_HASH + 4)

size_t files_manifest_size(const files_manifest *m)
{
	return MAN_FIXED + m->nlen + (size_t)m->nchunks * FILES_HASH;
}

void files_manifest_encode(const files_manifest *m, uint8_t *out)
{
	memcpy(out, "RNM1", 4);
	put_u16(out + 4, (uint16_t)m->nlen);
	memcpy(out + 6, m->name, m->nlen);
	uint8_t *p = out + 6 + m->nlen;
	put_u64(p, m->size);
	put_u32(p + 8, m->chunk_size);
	put_u64(p + 12, m->uploaded_ms);
	memcpy(p + 20, m->sha, FILES_HASH);
	put_u32(p + 20 + FILES_HASH, m->nchunks);
	if (m->nchunks)
		memcpy(p + 24 + FILES_HASH, m->chunks, (size_t)m->nchunks * FILES_HASH);
}

int files_manifest_decode(const uint8_t *buf, size_t len, files_manifest *m)
{
	memset(m, 0, sizeof *m);
	if (len < MAN_FIXED || memcmp(buf, "RNM1", 4) != 0)
		return RN_EPROTO;
	size_t nlen = get_u16(buf + 4);
	if (nlen > FILES_NAME_MAX || len < MAN_FIXED + nlen)
		return RN_EPROTO;
	memcpy(m->name, buf + 6, nlen);
	m->name[nlen] = '\0';
	m->nlen = nlen;
	const uint8_t *p = buf + 6 + nlen;
	m->size = get_u64(p);
	m->chunk_size = get_u32(p + 8);
	m->uploaded_ms = get_u64(p + 12);
	memcpy(m->sha, p + 20, FILES_HASH);
	m->nchunks = get_u32(p + 20 + FILES_HASH);
	m->chunks = p + 24 + FILES_HASH;
	if (!m->chunk_size || m->chunk_size > FILES_CHUNK_DEFAULT ||
	    (m->size + m->chunk_size - 1) / m->chunk_size != m->nchunks ||
	    len != MAN_FIXED + nlen + (size_t)m->nchunks * FILES_HASH)
		return RN_EPROTO;
	return 0;
}

/* The index: "RNI1" | u32 count | per file: u16 nlen, name, u64 size, u64 uploaded, sha. */
#define ENT_FIXED (2 + 8 + 8 + FILES_HASH)

static size_t index_size(const files_entry *e, size_t n)
{
	size_t s = 8;
	for (size_t i = 0; i < n; i++)
		s += ENT_FIXED + e[i].nlen;
	return s;
}

static void index_encode(const files_entry *e, size_t n, uint8_t *out)
{
	memcpy(out, "RNI1", 4);
	put_u32(out + 4, (uint32_t)n);
	uint8_t *p = out + 8;
	for (size_t i = 0; i < n; i++) {
		put_u16(p, (uint16_t)e[i].nlen);
		memcpy(p + 2, e[i].name, e[i].nlen);
		p += 2 + e[i].nlen;
		put_u64(p, e[i].size);
		put_u64(p + 8, e[i].uploaded_ms);
		memcpy(p + 16, e[i].sha, FILES_HASH);
		p += 16 + FILES_HASH;
	}
}

static int index_decode(const uint8_t *b, size_t len, files_entry **out, size_t *n, size_t *cap)
{
	*n = 0;
	if (len < 8 || memcmp(b, "RNI1", 4) != 0)
		return RN_EPROTO;
	uint32_t cnt = get_u32(b + 4);
	size_t off = 8;
	for (uint32_t i = 0; i < cnt; i++) {
		if (len - off < 2)
			return RN_EPROTO;
		size_t nl = get_u16(b + off);
		if (nl > FILES_NAME_MAX || len - off < ENT_FIXED + nl)
			return RN_EPROTO;
		if (rn_grow((void **)out, cap, *n + 1, sizeof **out, 16) < 0)
			return RN_ENOMEM;
		files_entry *e = &(*out)[(*n)++];
		memcpy(e->name, b + off + 2, nl);
		e->name[nl] = '\0';
		e->nlen = nl;
		const uint8_t *p = b + off + 2 + nl;
		e->size = get_u64(p);
		e->uploaded_ms = get_u64(p + 8);
		memcpy(e->sha, p + 16, FILES_HASH);
		off += ENT_FIXED + nl;
	}
	return off == len ? 0 : RN_EPROTO;
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : (al > bl) - (al < bl);
}

/* ---- names ---- */

const char *files_name_problem(const char *name, size_t len)
{
	if (!len)
		return "the file name is empty";
	if (len > FILES_NAME_MAX)
		return "file names are at most 255 bytes";
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return "'.' and '..' are not file names";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '/' || c == '\\')
			return "file names cannot hold '/' or '\\' (no paths)";
		if (c < 0x20 || c == 0x7f)
			return "file names cannot hold NUL or control characters";
	}
	/* UTF-8: lead byte, then the right number of continuation bytes, shortest form */
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)name[i];
		size_t n = c < 0x80             ? 1
		           : (c & 0xe0) == 0xc0 ? 2
		           : (c & 0xf0) == 0xe0 ? 3
		           : (c & 0xf8) == 0xf0 ? 4
		                                : 0;
		if (!n || i + n > len || (n == 2 && c < 0xc2) || (n == 4 && c > 0xf4))
			return "file names must be valid UTF-8";
		for (size_t k = 1; k < n; k++)
			if (((unsigned char)name[i + k] & 0xc0) != 0x80)
				return "file names must be valid UTF-8";
		i += n;
	}
	return NULL;
}

/* ---- config, lifetime ---- */

void files_config_default(files_config *c)
{
	memset(c, 0, sizeof *c);
	c->chunk_size = FILES_CHUNK_DEFAULT;
	c->window = 4;
	c->max_file = 4ull << 30;
	/* 20 s of retries: longer than the 12 s after a view change in which an owner cannot yet
	 * be sure a key (a new file's manifest, the first index) is absent */
	c->retries = 40;
	c->retry_ms = 500;
	c->gc_delay_ms = 60 * 60 * 1000;
}

files_core *files_new(const files_config *cfg, const files_driver *drv)
{
	if (!cfg->chunk_size || cfg->chunk_size > FILES_CHUNK_DEFAULT || !cfg->window ||
	    cfg->gc_delay_ms < 4)
		return NULL;
	/* the manifest of the largest file must fit in one kv value */
	if ((cfg->max_file / cfg->chunk_size + 1) * FILES_HASH + MAN_FIXED + FILES_NAME_MAX >
	    FILES_CHUNK_DEFAULT)
		return NULL;
	files_core *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->cfg = *cfg;
	f->d = *drv;
	return f;
}

static void xfer_free(xfer *x)
{
	free(x->cur);
	if (x->whole)
		EVP_MD_CTX_free(x->whole);
	free(x->hashes);
	free(x->put_ms);
	for (size_t i = 0; i < x->nslots; i++)
		free(x->slots[i].data);
	free(x->slots);
	free(x->mbuf);
	free(x->ents);
	free(x->ibuf);
	free(x->cand);
	free(x->keep);
	free(x);
}

void files_free(files_core *f)
{
	if (!f)
		return;
	while (f->ops) {
		kop *o = f->ops;
		f->ops = o->next;
		free(o);
	}
	while (f->xs) {
		xfer *x = f->xs;
		f->xs = x->next;
		xfer_free(x);
	}
	free(f);
}

const files_stats *files_get_stats(const files_core *f)
{
	return &f->st;
}

size_t files_active(const files_core *f)
{
	size_t n = 0;
	for (const xfer *x = f->xs; x; x = x->next)
		n++;
	return n;
}

static xfer *xfer_find(const files_core *f, uint64_t id)
{
	for (xfer *x = f->xs; x; x = x->next)
		if (x->id == id && !x->aborted)
			return x;
	return NULL;
}

static xfer *xfer_new(files_core *f, uint64_t id, int kind, const char *name, size_t nlen)
{
	xfer *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->id = id;
	x->kind = kind;
	if (nlen > FILES_NAME_MAX)
		nlen = FILES_NAME_MAX;
	if (name)
		memcpy(x->name, name, nlen);
	x->nlen = nlen;
	x->next = f->xs;
	f->xs = x;
	return x;
}

static void idx_release(files_core *f, uint64_t now, xfer *x);

static void xfer_end(files_core *f, uint64_t now, xfer *x)
{
	idx_release(f, now, x);
	for (xfer **pp = &f->xs; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	for (kop **pp = &f->ops; *pp;) { /* answers still to come are ignored */
		if ((*pp)->x == x) {
			kop *o = *pp;
			*pp = o->next;
			free(o);
		} else {
			pp = &(*pp)->next;
		}
	}
	xfer_free(x);
}

static void finish(files_core *f, uint64_t now, xfer *x, files_status st, const char *why)
{
	if (!x->aborted) {
		files_result r = {.status = st, .why = why, .chunks_repaired = x->repaired};
		if (st == FILES_OK && (x->kind == X_UP || x->kind == X_DEL))
			r.m = &x->m;
		if (st == FILES_OK && x->kind == X_LIST) {
			r.list = x->ents;
			r.nlist = x->nents;
		}
		f->d.done(f->d.ctx, x->id, &r);
	}
	xfer_end(f, now, x);
}

/* ---- kv operations ---- */

static void kop_send(files_core *f, kop *o)
{
	o->req = ++f->seq;
	o->retry_at = 0;
	if (o->local)
		f->d.local(f->d.ctx, o->req, o->key, o->klen);
	else
		f->d.kv(f->d.ctx, o->req, o->op, o->key, o->klen, o->val, o->vlen,
		        o->has_cond ? &o->cond : NULL, o->at_ms,
		        o->tag == T_CHUNK_GET && !o->store_checks);
}

/* Starts a kv operation; a write with cond is conditional on the version held being *cond;
 * a delete with at_ms is dated then. */
static int kop_start_full(files_core *f, xfer *x, int tag, uint32_t idx, kv_op op,
                          const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen,
                          const kv_version *cond, uint64_t at_ms)
{
	kop *o = calloc(1, sizeof *o);
	if (!o)
		return RN_ENOMEM;
	o->x = x;
	o->tag = tag;
	o->idx = idx;
	o->op = op;
	memcpy(o->key, key, klen);
	o->klen = klen;
	o->val = val;
	o->vlen = vlen;
	o->has_cond = cond != NULL;
	if (cond)
		o->cond = *cond;
	o->local = tag == T_CHUNK_GET && f->d.local;
	o->at_ms = at_ms;
	o->next = f->ops;
	f->ops = o;
	x->inflight++;
	kop_send(f, o);
	return 0;
}

static int kop_start_if(files_core *f, xfer *x, int tag, uint32_t idx, kv_op op, const uint8_t *key,
                        size_t klen, const uint8_t *val, size_t vlen, const kv_version *cond)
{
	return kop_start_full(f, x, tag, idx, op, key, klen, val, vlen, cond, 0);
}

static int kop_start(files_core *f, xfer *x, int tag, uint32_t idx, kv_op op, const uint8_t *key,
                     size_t klen, const uint8_t *val, size_t vlen)
{
	return kop_start_full(f, x, tag, idx, op, key, klen, val, vlen, NULL, 0);
}

static files_status kv_to_files(kv_status st)
{
	switch (st) {
	case KV_OK:
		return FILES_OK;
	case KV_NOT_FOUND:
		return FILES_NOT_FOUND;
	case KV_ERROR:
		return FILES_ERROR;
	default:
		return FILES_UNAVAIL;
	}
}

static void fail(files_core *f, uint64_t now, xfer *x, files_status st, const char *why);
static void on_answer(files_core *f, uint64_t now, kop *o, kv_status st, const uint8_t *val,
                      size_t vlen, uint8_t *own);

/* The answer to operation req. own: val is the core's to keep or free (files_on_kv_take);
 * sha: val's SHA-256 as the driver computed it, or NULL. */
static void on_kv(files_core *f, uint64_t now, uint64_t req, kv_status st, const uint8_t *val,
                  size_t vlen, const kv_version *v, uint8_t *own, const uint8_t *sha)
{
	kop *o = NULL, **pp;
	for (pp = &f->ops; *pp; pp = &(*pp)->next)
		if ((*pp)->req == req && !(*pp)->retry_at) {
			o = *pp;
			break;
		}
	if (!o) {
		free(own);
		return;
	}
	xfer *x = o->x;
	if (o->tag == T_IDX_GET)
		x->idx_v = st == KV_OK && v ? *v : (kv_version){0, 0, false};
	bool corrupt = false;
	if (st == KV_OK && o->tag == T_CHUNK_GET) {
		uint8_t h[FILES_HASH];
		if (!sha) {
			files_sha256(val, vlen, h);
			sha = h;
		}
		corrupt = !val || memcmp(sha, o->key + 3, FILES_HASH) != 0;
		if (o->local)
			f->st.bad_local += corrupt;
		else
			f->st.bad_chunks += corrupt;
	}
	if (o->local && (st != KV_OK || corrupt)) {
		/* not held here, or damaged here: ask the store (its owner and replicas) */
		if (corrupt && f->d.damaged)
			f->d.damaged(f->d.ctx, o->key, o->klen);
		free(own);
		own = NULL;
		if (!(x->aborted && !x->orphaned)) {
			o->local = false;
			kop_send(f, o);
			return;
		}
		st = KV_UNSURE; /* the download is over: the answer only drains it */
		corrupt = false;
		val = NULL;
		vlen = 0;
	}
	if (o->local && st == KV_OK)
		f->st.chunks_local++;
	bool unsure = st == KV_UNSURE || st == KV_UNKNOWN || st == KV_NOT_APPLIED || st == KV_ERROR;
	if ((unsure || corrupt) && o->tries < f->cfg.retries && !(x->aborted && !x->orphaned)) {
		o->tries++;
		o->retry_at = now + f->cfg.retry_ms;
		if (corrupt) {
			x->repaired++;
			o->store_checks = true; /* the copy served unchecked was bad */
		}
		free(own);
		return;
	}
	*pp = o->next;
	x->inflight--;
	on_answer(f, now, o, corrupt ? KV_CORRUPT : st, val, vlen, corrupt ? NULL : own);
	if (corrupt)
		free(own);
	free(o);
}

void files_on_kv(files_core *f, uint64_t now, uint64_t req, kv_status st, const uint8_t *val,
                 size_t vlen, const kv_version *v)
{
	on_kv(f, now, req, st, val, vlen, v, NULL, NULL);
}

void files_on_kv_take(files_core *f, uint64_t now, uint64_t req, kv_status st, uint8_t *val,
                      size_t vlen, const kv_version *v, const uint8_t sha[FILES_HASH])
{
	on_kv(f, now, req, st, val, vlen, v, val, sha);
}

/* Drops the operations of x that wait to be sent again (x is failing or aborted). */
static void kop_cancel_waiting(files_core *f, xfer *x)
{
	for (kop **pp = &f->ops; *pp;) {
		kop *o = *pp;
		if (o->x == x && o->retry_at) {
			*pp = o->next;
			x->inflight--;
			free(o);
		} else {
			pp = &o->next;
		}
	}
}

static void gc_run(files_core *f, uint64_t now, xfer *x);

void files_tick(files_core *f, uint64_t now)
{
	for (kop *o = f->ops; o; o = o->next)
		if (o->retry_at && o->retry_at <= now)
			kop_send(f, o);
	for (bool again = true; again;) { /* a collection that runs may end at once */
		again = false;
		for (xfer *x = f->xs; x; x = x->next)
			if (x->kind == X_GC && x->state == S_GC_WAIT && x->gc_at <= now) {
				gc_run(f, now, x);
				again = true;
				break;
			}
	}
}

uint64_t files_wake_at(const files_core *f)
{
	uint64_t at = UINT64_MAX;
	for (const kop *o = f->ops; o; o = o->next)
		if (o->retry_at && o->retry_at < at)
			at = o->retry_at;
	for (const xfer *x = f->xs; x; x = x->next)
		if (x->kind == X_GC && x->state == S_GC_WAIT && x->gc_at < at)
			at = x->gc_at;
	return at;
}

/* ---- collection ---- */

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, FILES_HASH);
}

static long cand_find(const xfer *x, const uint8_t *h)
{
	const uint8_t *p = bsearch(h, x->cand, x->ncand, FILES_HASH, hash_cmp);
	return p ? (p - x->cand) / FILES_HASH : -1;
}

static void gc_step(files_core *f, uint64_t now, xfer *x);

/* Asks for the chunks in hashes (n of them) to be collected once gc_delay_ms has passed,
 * then ends x with status st (the client is answered now). The collection is a transfer
 * of its own (X_GC, no client), its tombstones dated now: see files.h. */
static void gc_start(files_core *f, uint64_t now, xfer *x, const uint8_t *hashes, size_t n,
                     files_status st, const char *why)
{
	size_t cands = 0, jobs = 0;
	xfer *newest = NULL; /* the list is newest first */
	for (xfer *y = f->xs; y; y = y->next)
		if (y->kind == X_GC) {
			cands += y->ncand;
			jobs++;
			if (!newest && y->state == S_GC_WAIT)
				newest = y;
		}
	xfer *g = NULL;
	if (n && cands + n <= FILES_GC_CANDS) {
		if (jobs < FILES_GC_JOBS && (g = xfer_new(f, 0, X_GC, NULL, 0))) {
			f->st.gc_waiting++;
			g->aborted = g->orphaned = true; /* nobody to answer; never found by id */
			g->state = S_GC_WAIT;
			g->gc_at = now + f->cfg.gc_delay_ms;
			g->gc_date_ms = now + f->cfg.wall_offset_ms;
			g->final = FILES_OK;
		} else {
			g = newest; /* dated earlier and run sooner: still safe, maybe orphans */
		}
	}
	uint8_t *c = g ? realloc(g->cand, (g->ncand + n) * FILES_HASH) : NULL;
	if (c) {
		g->cand = c;
		memcpy(g->cand + g->ncand * FILES_HASH, hashes, n * FILES_HASH);
		g->ncand += n;
	} else {
		f->st.gc_dropped += n; /* orphans remain; nothing wrong is deleted */
		if (g && !g->ncand) {
			f->st.gc_waiting--;
			xfer_end(f, now, g);
		}
	}
	finish(f, now, x, st, why);
}

/* A collection's delay is over: keep what a listed manifest or an upload running here
 * uses, delete the rest. */
static void gc_run(files_core *f, uint64_t now, xfer *x)
{
	size_t n = x->ncand;
	f->st.gc_waiting--;
	free(x->keep);
	x->keep = n ? calloc(n, sizeof *x->keep) : NULL;
	if (!x->keep) {
		finish(f, now, x, x->final, NULL);
		return;
	}
	qsort(x->cand, n, FILES_HASH, hash_cmp);
	x->ncand = 0;
	for (size_t i = 0; i < n; i++)
		if (!x->ncand || memcmp(x->cand + (x->ncand - 1) * FILES_HASH,
		                        x->cand + i * FILES_HASH, FILES_HASH) != 0)
			memmove(x->cand + x->ncand++ * FILES_HASH, x->cand + i * FILES_HASH,
			        FILES_HASH);
	/* chunks of uploads running here are in use */
	for (xfer *y = f->xs; y; y = y->next)
		if (y != x && y->kind == X_UP && !y->aborted)
			for (size_t i = 0; i < y->nhash; i++) {
				long k = cand_find(x, y->hashes + i * FILES_HASH);
				if (k >= 0)
					x->keep[k] = true;
			}
	x->state = S_GC_INDEX;
	uint8_t key[FILES_KEY_MAX];
	size_t kl = files_index_key(key);
	if (kop_start(f, x, T_IDX_GET, 0, KV_GET, key, kl, NULL, 0) < 0)
		finish(f, now, x, x->final, NULL);
}

static void gc_step(files_core *f, uint64_t now, xfer *x)
{
	uint8_t key[FILES_KEY_MAX];
	if (x->state == S_GC_SCAN) {
		if (x->scan_at < x->nents) {
			files_entry *e = &x->ents[x->scan_at++];
			size_t kl = files_manifest_key(e->name, e->nlen, key);
			if (kop_start(f, x, T_MAN_GET, 0, KV_GET, key, kl, NULL, 0) < 0)
				finish(f, now, x, x->final, x->final_why);
			return;
		}
		x->state = S_GC_DELETE;
	}
	if (x->state != S_GC_DELETE)
		return;
	while (x->inflight < f->cfg.window && x->del_at < x->ncand) {
		size_t i = x->del_at++;
		if (x->keep[i])
			continue;
		size_t kl = files_chunk_key(x->cand + i * FILES_HASH, key);
		if (kop_start_full(f, x, T_CHUNK_DEL, (uint32_t)i, KV_DEL, key, kl, NULL, 0, NULL,
		                   x->gc_date_ms) < 0)
			break;
	}
	if (!x->inflight && x->del_at >= x->ncand)
		finish(f, now, x, x->final, x->final_why);
}

/* ---- the index ---- */

static void idx_begin(files_core *f, uint64_t now, xfer *x)
{
	if (f->idx_owner && f->idx_owner != x) {
		x->state = S_IDX_WAIT;
		return;
	}
	f->idx_owner = x;
	x->state = S_IDX;
	uint8_t key[FILES_KEY_MAX];
	size_t kl = files_index_key(key);
	if (kop_start(f, x, T_IDX_GET, 0, KV_GET, key, kl, NULL, 0) < 0)
		fail(f, now, x, FILES_ERROR, "out of memory");
}

static void idx_release(files_core *f, uint64_t now, xfer *x)
{
	if (f->idx_owner != x)
		return;
	f->idx_owner = NULL;
	xfer *first = NULL;
	for (xfer *y = f->xs; y; y = y->next)
		if (y->state == S_IDX_WAIT)
			first = y; /* the list is newest first: the last one waited longest */
	if (first)
		idx_begin(f, now, first);
}

static void up_after_index(files_core *f, uint64_t now, xfer *x);

/* The index as read: add this upload's entry or drop the deleted name, write it back. */
static void idx_update(files_core *f, uint64_t now, xfer *x, kv_status st, const uint8_t *val,
                       size_t vlen)
{
	x->nents = 0;
	if (st == KV_OK && index_decode(val, vlen, &x->ents, &x->nents, &x->ecap) < 0)
		x->nents = 0; /* an unreadable index is rebuilt from what follows */
	if (st != KV_OK && st != KV_NOT_FOUND) {
		fail(f, now, x, FILES_UNAVAIL, "the file index could not be read; try again");
		return;
	}
	size_t i = 0;
	while (i < x->nents && name_cmp(x->ents[i].name, x->ents[i].nlen, x->name, x->nlen) < 0)
		i++;
	bool there = i < x->nents && !name_cmp(x->ents[i].name, x->ents[i].nlen, x->name, x->nlen);
	if (x->kind == X_UP) {
		uint64_t oldest = UINT64_MAX;
		for (size_t c = 0; c < x->nhash; c++)
			oldest = x->put_ms[c] < oldest ? x->put_ms[c] : oldest;
		if (x->nhash && oldest + f->cfg.gc_delay_ms / 4 * 3 < now + f->cfg.wall_offset_ms) {
			/* a collection may have passed this file by: do not list it */
			fail(f, now, x, FILES_UNAVAIL,
			     "the upload took too long to list; upload again");
			return;
		}
		if (!there) {
			if (rn_grow((void **)&x->ents, &x->ecap, x->nents + 1, sizeof *x->ents,
			            16) < 0) {
				fail(f, now, x, FILES_ERROR, "out of memory");
				return;
			}
			memmove(x->ents + i + 1, x->ents + i, (x->nents - i) * sizeof *x->ents);
			x->nents++;
		}
		files_entry *e = &x->ents[i];
		memcpy(e->name, x->name, x->nlen + 1);
		e->nlen = x->nlen;
		e->size = x->m.size;
		e->uploaded_ms = x->m.uploaded_ms;
		memcpy(e->sha, x->m.sha, FILES_HASH);
	} else if (there) {
		memmove(x->ents + i, x->ents + i + 1, (x->nents - i - 1) * sizeof *x->ents);
		x->nents--;
	} else {
		idx_release(f, now, x); /* nothing to change */
		gc_start(f, now, x, x->m.chunks, x->m.nchunks, FILES_OK, NULL);
		return;
	}
	size_t sz = index_size(x->ents, x->nents);
	if (sz > FILES_INDEX_MAX) {
		fail(f, now, x, FILES_FULL, "the file index is full: delete files first");
		return;
	}
	free(x->ibuf);
	x->ibuf = malloc(sz);
	if (!x->ibuf) {
		fail(f, now, x, FILES_ERROR, "out of memory");
		return;
	}
	index_encode(x->ents, x->nents, x->ibuf);
	uint8_t key[FILES_KEY_MAX];
	size_t kl = files_index_key(key);
	if (kop_start_if(f, x, T_IDX_PUT, 0, KV_PUT, key, kl, x->ibuf, sz, &x->idx_v) < 0)
		fail(f, now, x, FILES_ERROR, "out of memory");
}

/* ---- failing ---- */

/* An upload that fails before its manifest is written collects the chunks it stored (after
 * that, a manifest may exist that refers to them: they stay); anything else just ends. */
static void fail(files_core *f, uint64_t now, xfer *x, files_status st, const char *why)
{
	idx_release(f, now, x);
	kop_cancel_waiting(f, x);
	bool collect = x->kind == X_UP &&
	               (x->state == S_UP_DATA || x->state == S_UP_REFRESH || x->state == S_UP_OLD);
	x->final = st;
	x->final_why = why;
	x->state = S_DRAIN;
	x->collect = collect;
	if (x->inflight)
		return; /* wait for the answers, then collect or end */
	if (collect)
		gc_start(f, now, x, x->hashes, x->nhash, st, why);
	else
		finish(f, now, x, st, why);
}

/* ---- uploads ---- */

int files_upload_begin(files_core *f, uint64_t now, uint64_t xfer_id, const char *name, size_t nlen)
{
	if (files_name_problem(name, nlen))
		return RN_EINVAL;
	xfer *x = xfer_new(f, xfer_id, X_UP, name, nlen);
	if (!x)
		return RN_ENOMEM;
	x->state = S_UP_DATA;
	x->whole = EVP_MD_CTX_new();
	if (!x->whole || !EVP_DigestInit_ex(x->whole, EVP_sha256(), NULL)) {
		xfer_end(f, now, x);
		return RN_ENOMEM;
	}
	f->st.uploads++;
	return 0;
}

static slot *slot_add(xfer *x)
{
	if (rn_grow((void **)&x->slots, &x->scap, x->nslots + 1, sizeof *x->slots, 8) < 0)
		return NULL;
	slot *s = &x->slots[x->nslots++];
	memset(s, 0, sizeof *s);
	return s;
}

static void slot_drop(xfer *x, size_t i)
{
	free(x->slots[i].data);
	x->slots[i] = x->slots[--x->nslots];
}

/* Sends queued chunks while fewer than window are in flight. */
static bool up_send(files_core *f, uint64_t now, xfer *x)
{
	unsigned busy = 0;
	for (size_t i = 0; i < x->nslots; i++)
		busy += x->slots[i].busy;
	for (size_t i = 0; i < x->nslots && busy < f->cfg.window; i++) {
		slot *s = &x->slots[i];
		if (s->busy)
			continue;
		s->busy = true;
		busy++;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_chunk_key(x->hashes + (size_t)s->idx * FILES_HASH, key);
		/* at most the stamp of any attempt (a retry's is later still) */
		x->put_ms[s->idx] = now + f->cfg.wall_offset_ms;
		if (kop_start(f, x, T_CHUNK_PUT, s->idx, KV_PUT, key, kl, s->data, s->len) < 0)
			return false;
	}
	return true;
}

static bool up_chunk(files_core *f, uint64_t now, xfer *x)
{
	uint8_t h[FILES_HASH];
	files_sha256(x->cur, x->curlen, h);
	if (rn_grow((void **)&x->hashes, &x->hcap, (x->nhash + 1) * FILES_HASH, 1,
	            64 * FILES_HASH) < 0 ||
	    rn_grow((void **)&x->put_ms, &x->pcap, x->nhash + 1, sizeof *x->put_ms, 64) < 0)
		return false;
	x->put_ms[x->nhash] = 0;
	slot *s = slot_add(x);
	if (!s)
		return false;
	memcpy(x->hashes + x->nhash * FILES_HASH, h, FILES_HASH);
	s->idx = (uint32_t)x->nhash++;
	s->data = x->cur;
	s->len = x->curlen;
	x->cur = NULL;
	x->curlen = 0;
	return up_send(f, now, x);
}

void files_upload_data(files_core *f, uint64_t now, uint64_t xfer_id, const uint8_t *buf,
                       size_t len)
{
	xfer *x = xfer_find(f, xfer_id);
	if (!x || x->kind != X_UP || x->state != S_UP_DATA || x->ended)
		return;
	if (len > f->cfg.max_file - x->size) {
		fail(f, now, x, FILES_TOO_BIG, "the file is over the node's limit (--max-file)");
		return;
	}
	x->size += len;
	f->st.bytes_in += len;
	EVP_DigestUpdate(x->whole, buf, len);
	while (len) {
		if (!x->cur && !(x->cur = malloc(f->cfg.chunk_size))) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
		size_t k = f->cfg.chunk_size - x->curlen;
		if (k > len)
			k = len;
		memcpy(x->cur + x->curlen, buf, k);
		x->curlen += k;
		buf += k;
		len -= k;
		if (x->curlen == f->cfg.chunk_size && !up_chunk(f, now, x)) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
	}
	x->full = x->nslots >= f->cfg.window;
}

bool files_upload_wants(const files_core *f, uint64_t xfer_id)
{
	xfer *x = xfer_find(f, xfer_id);
	return x && x->kind == X_UP && x->state == S_UP_DATA && x->nslots < f->cfg.window;
}

static void up_refresh(files_core *f, uint64_t now, xfer *x);

static void up_manifest(files_core *f, uint64_t now, xfer *x)
{
	files_manifest *m = &x->m;
	memcpy(m->name, x->name, x->nlen + 1);
	m->nlen = x->nlen;
	m->size = x->size;
	m->chunk_size = f->cfg.chunk_size;
	m->uploaded_ms = x->uploaded_ms;
	unsigned n = FILES_HASH;
	EVP_DigestFinal_ex(x->whole, m->sha, &n);
	m->nchunks = (uint32_t)x->nhash;
	m->chunks = x->hashes;
	x->state = S_UP_REFRESH;
	x->refresh_at = 0;
	up_refresh(f, now, x);
}

/* Chunks put more than gc_delay_ms / 4 ago are read and put again, window at a time, so
 * that every put is newer than the dated tombstones of any collection that has not seen
 * this file listed (files.h); then the old manifest. */
static void up_refresh(files_core *f, uint64_t now, xfer *x)
{
	uint64_t wall = now + f->cfg.wall_offset_ms;
	while (x->inflight < f->cfg.window && x->refresh_at < x->nhash) {
		size_t i = x->refresh_at++;
		if (x->put_ms[i] + f->cfg.gc_delay_ms / 4 >= wall)
			continue;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_chunk_key(x->hashes + i * FILES_HASH, key);
		if (kop_start(f, x, T_CHUNK_GET, (uint32_t)i, KV_GET, key, kl, NULL, 0) < 0) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
	}
	if (x->inflight || x->refresh_at < x->nhash)
		return;
	/* chunks that aged while the pass ran: another pass (a few at most; then the listing's
	 * own check decides) */
	bool aged = false;
	for (size_t i = 0; i < x->nhash && !aged; i++)
		aged = x->put_ms[i] + f->cfg.gc_delay_ms / 4 < wall;
	if (aged && ++x->refresh_passes < 3) {
		x->refresh_at = 0;
		up_refresh(f, now, x);
		return;
	}
	/* first the manifest this one replaces, whose chunks may then be unreferenced */
	x->state = S_UP_OLD;
	uint8_t key[FILES_KEY_MAX];
	size_t kl = files_manifest_key(x->name, x->nlen, key);
	if (kop_start(f, x, T_MAN_GET, 0, KV_GET, key, kl, NULL, 0) < 0)
		fail(f, now, x, FILES_ERROR, "out of memory");
}

void files_upload_end(files_core *f, uint64_t now, uint64_t xfer_id)
{
	xfer *x = xfer_find(f, xfer_id);
	if (!x || x->kind != X_UP || x->state != S_UP_DATA || x->ended)
		return;
	x->ended = true;
	x->uploaded_ms = now + f->cfg.wall_offset_ms;
	if (x->curlen && !up_chunk(f, now, x)) {
		fail(f, now, x, FILES_ERROR, "out of memory");
		return;
	}
	if (!x->nslots)
		up_manifest(f, now, x);
}

static void up_on_answer(files_core *f, uint64_t now, xfer *x, kop *o, kv_status st,
                         const uint8_t *val, size_t vlen)
{
	if (o->tag == T_CHUNK_PUT) {
		for (size_t i = 0; i < x->nslots; i++)
			if (x->slots[i].idx == o->idx) {
				slot_drop(x, i);
				break;
			}
		if (x->state == S_DRAIN) {
			if (!x->inflight && x->collect)
				gc_start(f, now, x, x->hashes, x->nhash, x->final, x->final_why);
			else if (!x->inflight)
				finish(f, now, x, x->final, x->final_why);
			return;
		}
		if (st != KV_OK) {
			fail(f, now, x,
			     kv_to_files(st) == FILES_ERROR ? FILES_ERROR : FILES_UNAVAIL,
			     "a chunk could not be stored; try again");
			return;
		}
		f->st.chunks_put++;
		if (x->state == S_UP_REFRESH) {
			up_refresh(f, now, x);
			return;
		}
		if (!up_send(f, now, x)) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
		if (x->ended && !x->nslots) {
			up_manifest(f, now, x);
		} else if (x->full && x->nslots < f->cfg.window) {
			x->full = false;
			if (!x->aborted)
				f->d.room(f->d.ctx, x->id);
		}
		return;
	}
	if (x->state == S_DRAIN) {
		if (!x->inflight && x->collect)
			gc_start(f, now, x, x->hashes, x->nhash, x->final, x->final_why);
		else if (!x->inflight)
			finish(f, now, x, x->final, x->final_why);
		return;
	}
	if (o->tag == T_CHUNK_GET && x->state == S_UP_REFRESH) {
		if (st != KV_OK) {
			fail(f, now, x, FILES_UNAVAIL,
			     st == KV_NOT_FOUND
			         ? "a chunk this upload stored was collected meanwhile "
			           "(a file with the same bytes was deleted); upload again"
			         : "a chunk could not be read again; try again");
			return;
		}
		slot *sl = slot_add(x);
		uint8_t *copy = sl ? malloc(vlen ? vlen : 1) : NULL;
		if (!copy) {
			if (sl)
				x->nslots--;
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
		memcpy(copy, val, vlen);
		sl->idx = o->idx;
		sl->data = copy;
		sl->len = vlen;
		sl->busy = true;
		x->put_ms[o->idx] = now + f->cfg.wall_offset_ms;
		f->st.chunks_refreshed++;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_chunk_key(x->hashes + (size_t)o->idx * FILES_HASH, key);
		if (kop_start(f, x, T_CHUNK_PUT, o->idx, KV_PUT, key, kl, copy, vlen) < 0)
			fail(f, now, x, FILES_ERROR, "out of memory");
		return;
	}
	if (o->tag == T_MAN_GET && x->state == S_UP_OLD) {
		/* the old manifest's chunks are collected once this one is listed */
		files_manifest old;
		if (st == KV_OK && files_manifest_decode(val, vlen, &old) == 0 && old.nchunks) {
			x->cand = malloc((size_t)old.nchunks * FILES_HASH);
			if (x->cand) {
				memcpy(x->cand, old.chunks, (size_t)old.nchunks * FILES_HASH);
				x->ncand = old.nchunks;
			}
		}
		if (st != KV_OK && st != KV_NOT_FOUND) {
			fail(f, now, x, FILES_UNAVAIL, "the store did not answer; try again");
			return;
		}
		size_t sz = files_manifest_size(&x->m);
		x->mbuf = malloc(sz);
		if (!x->mbuf) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
		files_manifest_encode(&x->m, x->mbuf);
		x->mlen = sz;
		x->state = S_UP_MANIFEST;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_manifest_key(x->name, x->nlen, key);
		if (kop_start(f, x, T_MAN_PUT, 0, KV_PUT, key, kl, x->mbuf, sz) < 0)
			fail(f, now, x, FILES_ERROR, "out of memory");
		return;
	}
	if (o->tag == T_MAN_PUT) {
		if (st != KV_OK) {
			fail(f, now, x, FILES_UNAVAIL,
			     "the manifest could not be stored; try again");
			return;
		}
		idx_begin(f, now, x);
		return;
	}
}

static void up_after_index(files_core *f, uint64_t now, xfer *x)
{
	/* the replaced manifest's chunks; this file's own are listed now, so they stay */
	uint8_t *old = x->cand;
	size_t n = x->ncand;
	x->cand = NULL;
	x->ncand = 0;
	if (!n) {
		finish(f, now, x, FILES_OK, NULL);
		return;
	}
	x->orphaned = true; /* from here on, an abort lets the collection run */
	gc_start(f, now, x, old, n, FILES_OK, NULL);
	free(old);
}

/* ---- downloads ---- */

/* A transfer that begins by reading a file's manifest (a download, a delete) or, with no
 * name, the index (a listing). */
static int start_named(files_core *f, uint64_t now, uint64_t xfer_id, int kind, int state,
                       const char *name, size_t nlen)
{
	if (name && files_name_problem(name, nlen))
		return RN_EINVAL;
	xfer *x = xfer_new(f, xfer_id, kind, name, nlen);
	if (!x)
		return RN_ENOMEM;
	x->state = state;
	uint8_t key[FILES_KEY_MAX];
	size_t kl = name ? files_manifest_key(name, nlen, key) : files_index_key(key);
	if (kop_start(f, x, name ? T_MAN_GET : T_IDX_GET, 0, KV_GET, key, kl, NULL, 0) < 0) {
		xfer_end(f, now, x);
		return RN_ENOMEM;
	}
	return 0;
}

int files_download(files_core *f, uint64_t now, uint64_t xfer_id, const char *name, size_t nlen)
{
	int rc = start_named(f, now, xfer_id, X_DOWN, S_DL_MANIFEST, name, nlen);
	f->st.downloads += rc == 0;
	return rc;
}

static size_t chunk_len(const files_manifest *m, uint32_t i)
{
	uint64_t start = (uint64_t)i * m->chunk_size;
	uint64_t left = m->size - start;
	return left < m->chunk_size ? (size_t)left : m->chunk_size;
}

static void dl_pump(files_core *f, uint64_t now, xfer *x)
{
	while (x->state == S_DL_DATA) {
		/* emit what is next, in order */
		slot *s = NULL;
		size_t si = 0;
		for (size_t i = 0; i < x->nslots; i++)
			if (x->slots[i].idx == x->next_emit && x->slots[i].have) {
				s = &x->slots[i];
				si = i;
			}
		if (s) {
			uint64_t start = (uint64_t)s->idx * x->m.chunk_size;
			size_t from = x->skip;
			x->skip = 0;
			size_t to = s->len;
			if (start + to > x->end)
				to = (size_t)(x->end - start);
			x->outstanding++;
			f->st.bytes_out += to - from;
			uint8_t *buf = s->data;
			s->data = NULL; /* the driver's now */
			slot_drop(x, si);
			f->d.data(f->d.ctx, x->id, buf, from, to - from);
			if (x->next_emit++ == x->last) {
				finish(f, now, x, FILES_OK, NULL);
				return;
			}
			continue;
		}
		if (x->next_fetch > x->last || x->nslots + x->outstanding >= f->cfg.window)
			return;
		s = slot_add(x);
		if (!s) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
		s->idx = x->next_fetch++;
		s->busy = true;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_chunk_key(x->m.chunks + (size_t)s->idx * FILES_HASH, key);
		if (kop_start(f, x, T_CHUNK_GET, s->idx, KV_GET, key, kl, NULL, 0) < 0) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
	}
}

void files_download_start(files_core *f, uint64_t now, uint64_t xfer_id, uint64_t off, uint64_t len)
{
	xfer *x = xfer_find(f, xfer_id);
	if (!x || x->kind != X_DOWN || x->state != S_DL_META)
		return;
	if (off > x->m.size || len > x->m.size - off)
		len = off > x->m.size ? 0 : x->m.size - off;
	if (!len) {
		finish(f, now, x, FILES_OK, NULL);
		return;
	}
	x->end = off + len;
	x->next_fetch = x->next_emit = (uint32_t)(off / x->m.chunk_size);
	x->skip = (uint32_t)(off % x->m.chunk_size);
	x->last = (uint32_t)((x->end - 1) / x->m.chunk_size);
	x->state = S_DL_DATA;
	dl_pump(f, now, x);
}

void files_download_consumed(files_core *f, uint64_t now, uint64_t xfer_id)
{
	xfer *x = xfer_find(f, xfer_id);
	if (!x || x->kind != X_DOWN || !x->outstanding)
		return;
	x->outstanding--;
	dl_pump(f, now, x);
}

/* The manifest a download or delete asked for, kept in x; false (x has ended) when it is
 * missing, unreadable or could not be read. */
static bool take_manifest(files_core *f, uint64_t now, xfer *x, kv_status st, const uint8_t *val,
                          size_t vlen)
{
	if (st != KV_OK) {
		finish(f, now, x, st == KV_NOT_FOUND ? FILES_NOT_FOUND : kv_to_files(st),
		       st == KV_NOT_FOUND ? "no such file" : "the store did not answer; try again");
		return false;
	}
	x->mbuf = malloc(vlen ? vlen : 1);
	if (!x->mbuf) {
		finish(f, now, x, FILES_ERROR, "out of memory");
		return false;
	}
	memcpy(x->mbuf, val, vlen);
	x->mlen = vlen;
	if (files_manifest_decode(x->mbuf, vlen, &x->m) < 0) {
		finish(f, now, x, FILES_ERROR, "the file's manifest is damaged");
		return false;
	}
	return true;
}

static void dl_on_answer(files_core *f, uint64_t now, xfer *x, kop *o, kv_status st,
                         const uint8_t *val, size_t vlen, uint8_t **own)
{
	if (x->state == S_DRAIN) {
		if (!x->inflight)
			finish(f, now, x, x->final, x->final_why);
		return;
	}
	if (o->tag == T_MAN_GET && x->state == S_DL_MANIFEST) {
		if (!take_manifest(f, now, x, st, val, vlen))
			return;
		x->state = S_DL_META;
		f->d.meta(f->d.ctx, x->id, &x->m);
		return;
	}
	if (o->tag != T_CHUNK_GET || x->state != S_DL_DATA)
		return;
	slot *s = NULL;
	for (size_t i = 0; i < x->nslots; i++)
		if (x->slots[i].idx == o->idx)
			s = &x->slots[i];
	if (!s)
		return;
	s->busy = false;
	if (st == KV_CORRUPT) {
		fail(f, now, x, FILES_CORRUPT, "a chunk has no good copy left");
		return;
	}
	if (st != KV_OK) {
		fail(f, now, x, st == KV_NOT_FOUND ? FILES_CORRUPT : FILES_UNAVAIL,
		     st == KV_NOT_FOUND ? "a chunk of the file is missing from the store"
		                        : "a chunk could not be read in time; try again");
		return;
	}
	if (vlen != chunk_len(&x->m, o->idx)) { /* cannot be: the hash matched */
		fail(f, now, x, FILES_CORRUPT, "a chunk has the wrong length");
		return;
	}
	if (*own) { /* the driver's buffer, kept as it is */
		s->data = *own;
		*own = NULL;
	} else {
		s->data = malloc(vlen ? vlen : 1);
		if (!s->data) {
			fail(f, now, x, FILES_ERROR, "out of memory");
			return;
		}
		memcpy(s->data, val, vlen);
	}
	s->len = vlen;
	s->have = true;
	f->st.chunks_got++;
	dl_pump(f, now, x);
}

/* ---- listing, deleting ---- */

int files_list(files_core *f, uint64_t now, uint64_t xfer_id)
{
	return start_named(f, now, xfer_id, X_LIST, S_LIST, NULL, 0);
}

int files_delete(files_core *f, uint64_t now, uint64_t xfer_id, const char *name, size_t nlen)
{
	int rc = start_named(f, now, xfer_id, X_DEL, S_DEL_GET, name, nlen);
	f->st.deletes += rc == 0;
	return rc;
}

static void gc_on_answer(files_core *f, uint64_t now, xfer *x, kop *o, kv_status st,
                         const uint8_t *val, size_t vlen)
{
	if (x->state == S_GC_INDEX && o->tag == T_IDX_GET) {
		x->nents = 0;
		if (st == KV_OK && index_decode(val, vlen, &x->ents, &x->nents, &x->ecap) < 0) {
			finish(f, now, x, x->final, x->final_why); /* cannot tell what is used */
			return;
		}
		if (st != KV_OK && st != KV_NOT_FOUND) {
			finish(f, now, x, x->final, x->final_why);
			return;
		}
		x->scan_at = 0;
		x->state = S_GC_SCAN;
		gc_step(f, now, x);
		return;
	}
	if (x->state == S_GC_SCAN && o->tag == T_MAN_GET) {
		files_manifest m;
		if (st == KV_OK && files_manifest_decode(val, vlen, &m) == 0) {
			for (uint32_t i = 0; i < m.nchunks; i++) {
				long k = cand_find(x, m.chunks + (size_t)i * FILES_HASH);
				if (k >= 0)
					x->keep[k] = true;
			}
		} else if (st != KV_NOT_FOUND) {
			finish(f, now, x, x->final, x->final_why); /* unsure: delete nothing */
			return;
		}
		gc_step(f, now, x);
		return;
	}
	if (x->state == S_GC_DELETE) {
		if (o->tag == T_CHUNK_DEL)
			f->st.chunks_deleted += st == KV_OK || st == KV_NOT_FOUND;
		gc_step(f, now, x);
	}
}

static void del_on_answer(files_core *f, uint64_t now, xfer *x, kop *o, kv_status st,
                          const uint8_t *val, size_t vlen)
{
	if (x->state == S_DEL_GET) {
		if (!take_manifest(f, now, x, st, val, vlen))
			return;
		x->orphaned = true; /* the client may go: the delete runs to its end */
		x->state = S_DEL_MANIFEST;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_manifest_key(x->name, x->nlen, key);
		if (kop_start(f, x, T_MAN_DEL, 0, KV_DEL, key, kl, NULL, 0) < 0)
			finish(f, now, x, FILES_ERROR, "out of memory");
		return;
	}
	if (x->state == S_DEL_MANIFEST) {
		if (st != KV_OK && st != KV_NOT_FOUND) {
			finish(f, now, x, FILES_UNAVAIL,
			       "the file could not be deleted; try again");
			return;
		}
		idx_begin(f, now, x);
		return;
	}
}

/* The index read (change it, write it back) or written (an upload is listed; a deleted
 * file's chunks are collected). */
static void idx_on_answer(files_core *f, uint64_t now, xfer *x, kop *o, kv_status st,
                          const uint8_t *val, size_t vlen)
{
	if (o->tag == T_IDX_GET) {
		idx_update(f, now, x, st, val, vlen);
		return;
	}
	if (st == KV_CONFLICT && ++x->idx_tries < FILES_IDX_TRIES) {
		/* another node changed the index since it was read: change what is there now */
		f->st.index_conflicts++;
		uint8_t key[FILES_KEY_MAX];
		size_t kl = files_index_key(key);
		if (kop_start(f, x, T_IDX_GET, 0, KV_GET, key, kl, NULL, 0) < 0)
			fail(f, now, x, FILES_ERROR, "out of memory");
		return;
	}
	idx_release(f, now, x);
	if (st == KV_CONFLICT) {
		fail(f, now, x, FILES_UNAVAIL, "the file index is changing too fast; try again");
		return;
	}
	if (x->kind == X_DEL)
		gc_start(f, now, x, x->m.chunks, x->m.nchunks, FILES_OK, NULL);
	else if (st != KV_OK)
		fail(f, now, x, FILES_UNAVAIL, "stored, but the file index could not be updated");
	else
		up_after_index(f, now, x);
}

static void answer_to(files_core *f, uint64_t now, kop *o, kv_status st, const uint8_t *val,
                      size_t vlen, uint8_t **own)
{
	xfer *x = o->x;
	if (x->state == S_IDX && (o->tag == T_IDX_GET || o->tag == T_IDX_PUT)) {
		idx_on_answer(f, now, x, o, st, val, vlen);
		return;
	}
	if (x->state >= S_GC_INDEX && x->state <= S_GC_DELETE) {
		gc_on_answer(f, now, x, o, st, val, vlen);
		return;
	}
	switch (x->kind) {
	case X_UP:
		up_on_answer(f, now, x, o, st, val, vlen);
		break;
	case X_DOWN:
		dl_on_answer(f, now, x, o, st, val, vlen, own);
		break;
	case X_LIST:
		if (x->state == S_DRAIN) {
			finish(f, now, x, x->final, x->final_why);
			break;
		}
		x->nents = 0;
		if (st == KV_OK && index_decode(val, vlen, &x->ents, &x->nents, &x->ecap) < 0)
			finish(f, now, x, FILES_ERROR, "the file index is damaged");
		else if (st == KV_OK || st == KV_NOT_FOUND)
			finish(f, now, x, FILES_OK, NULL);
		else
			finish(f, now, x, kv_to_files(st), "the store did not answer; try again");
		break;
	case X_DEL:
		if (x->state == S_DRAIN) {
			if (!x->inflight)
				finish(f, now, x, x->final, x->final_why);
			break;
		}
		del_on_answer(f, now, x, o, st, val, vlen);
		break;
	}
}

/* own: val's buffer when the core may keep it (freed here unless a download kept it) */
static void on_answer(files_core *f, uint64_t now, kop *o, kv_status st, const uint8_t *val,
                      size_t vlen, uint8_t *own)
{
	answer_to(f, now, o, st, val, vlen, &own);
	free(own);
}

void files_abort(files_core *f, uint64_t now, uint64_t xfer_id)
{
	xfer *x = xfer_find(f, xfer_id);
	if (!x)
		return;
	f->st.aborted++;
	if (x->kind == X_UP && x->state == S_UP_DATA) {
		kop_cancel_waiting(f, x);
		x->aborted = true;
		x->state = S_DRAIN;
		x->collect = true;
		x->final = FILES_ERROR;
		free(x->cur);
		x->cur = NULL;
		x->curlen = 0;
		if (!x->inflight)
			gc_start(f, now, x, x->hashes, x->nhash, FILES_ERROR, NULL);
		return;
	}
	if (x->kind == X_UP || x->orphaned) { /* all its bytes came: it goes on, silently */
		x->aborted = true;
		x->orphaned = true;
		return;
	}
	x->aborted = true;
	kop_cancel_waiting(f, x);
	if (x->state == S_IDX_WAIT || !x->inflight) {
		xfer_end(f, now, x);
		return;
	}
	x->state = S_DRAIN;
}
