/* files.c — the node's driver of the file core (src/files) and its HTTP routes.
 *
 * Everything here runs on the node's loop thread, libmicrohttpd's handlers included
 * (http.c). The HTTP side moves bytes: an upload's body is gathered into one chunk's
 * worth, posted to the file core's work list, and the connection suspended until the core
 * wants more (it has fewer than `window` chunks in flight), so an upload holds a few
 * chunks, never the file. A download's response is a content reader that takes the bytes
 * the core queued and suspends the connection when there are none. The file core's kv
 * operations become kv_client calls with FILES_KV_BIT set in the client handle, whose
 * answers kv.c hands back here. Neither core is called from inside the other, nor from an
 * HTTP handler: the file core runs from this driver's own async callback only (work from
 * handlers, kv operations and kv answers are queued for it).
 *
 * A transfer (fx) is freed when the last of its holders (the HTTP request, the core's
 * side, a download's response) lets go. */
#include <malloc.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../files/files.h"
#include "../files/seen.h"
#include "../lib/err.h"
#include "../lib/grow.h"
#include "node_internal.h"

enum { FX_UP = 1, FX_DOWN, FX_HEAD, FX_LIST, FX_DEL };

/* A download's bytes waiting for libmicrohttpd: [off, end) of a chunk the core handed
 * over (no copy until the response callback's). */
typedef struct dbuf {
	struct dbuf *next;
	uint8_t *chunk;
	size_t off, end;
} dbuf;

typedef struct fx {
	struct fx *next_work; /* in nf->work */
	node *node;
	bool queued;
	int refs;
	struct MHD_Connection *conn;
	uint64_t id;
	int kind;
	char name[FILES_NAME_MAX + 1];
	size_t nlen;
	/* the HTTP side's */
	struct MHD_PostProcessor *pp;
	bool multipart, got_field, field_over;
	uint8_t *acc;
	size_t alen, acap;
	uint64_t received;
	const char *err;
	unsigned err_status;
	bool submitted; /* list, delete, download: handed to the loop */
	bool answered;  /* a response is queued */
	/* between the HTTP side and the core's */
	bool has_hand, hand_end;
	uint8_t *hand;
	size_t hlen;
	bool gone;      /* the client went away */
	bool suspended; /* the HTTP side suspended the connection: the core's side resumes it */
	bool want_room; /* loop: resume once the core wants bytes again */
	bool started, loop_done;
	bool meta;
	files_manifest m; /* name, size, sha, time (no chunk list) */
	bool go, stop;    /* HTTP -> loop: send [off, off + len) / stop this download */
	uint64_t off, len;
	dbuf *qh, *qt;
	unsigned consumed; /* HTTP -> loop: data calls sent */
	bool done;
	unsigned status;
	char *body;
	/* progress, for /api/transfers (nd_files_transfers) */
	uint64_t got;       /* upload: body bytes the HTTP side has read */
	uint64_t announced; /* upload: its Content-Length (0: none), set before the loop sees x */
	uint64_t sent;      /* download: bytes handed to the HTTP side */
	uint64_t begun_ms;  /* when the loop started it (loop thread) */
} fx;

/* A transfer that ended lately, as /api/transfers shows it (loop thread). */
typedef struct {
	char name[FILES_NAME_MAX + 1];
	int kind;
	uint64_t done, total, took_ms, ended_ms;
	bool has_total;
	unsigned status; /* the HTTP status it ended with; 0: aborted (the client went away) */
} fx_ended;

/* Ended transfers kept for the dashboard, and for how long. */
#define FILES_ENDED_KEEP 8
#define FILES_ENDED_MS   60000

typedef struct kvop {
	uint64_t req;
	kv_op op;
	uint8_t *key;
	size_t klen;
	const uint8_t *val;
	size_t vlen;
	bool has_cond;
	kv_version cond;
	uint64_t at_ms; /* a dated delete (a collection's) */
	bool unchecked; /* a chunk get the file core checks itself (kv_request.unchecked) */
} kvop;

typedef struct kvans {
	uint64_t req;
	kv_status st;
	uint8_t *val; /* from malloc: the file core takes it */
	size_t vlen;
	bool has_v; /* the version read, or held (a conditional write refused) */
	kv_version v;
	bool has_sha; /* a chunk's bytes, hashed by a worker */
	uint8_t sha[FILES_HASH];
} kvans;

/* Work for the libuv thread pool (the second core): a chunk read from this node's own
 * store (the file core's local call), or a chunk a kv get brought, to check. */
typedef struct cjob {
	uv_work_t w;
	node *n;
	bool local;
	rn_id kid;
	uint8_t key[3 + FILES_HASH];
	kvans a;
	bool has_want; /* the tag remembered for the chunk (files/seen.h), taken on the loop */
	uint8_t want[FILES_TAG];
	bool has_tag; /* the bytes' own tag, taken by the worker */
	uint8_t tag[FILES_TAG];
	bool by_mac; /* the bytes are the chunk by their tag (no SHA-256 taken) */
} cjob;

typedef struct nd_files {
	files_core *core;
	files_config cfg;
	uv_async_t wake;
	bool started, stopping;
	uint64_t seq;
	fx *work;  /* transfers with something for the core's side */
	fx **live; /* the transfers the core knows, by id */
	size_t nlive, caplive;
	kvop *ops;
	size_t nops, capops;
	kvans *ans;
	size_t nans, capans;
	bool running;
	uint64_t bytes_in, bytes_out;
	unsigned open;                    /* transfers with an HTTP request */
	uint64_t refused;                 /* ... refused at FILES_MAX_OPEN */
	fx_ended ended[FILES_ENDED_KEEP]; /* a ring of the last ones (loop thread) */
	unsigned nended;
	unsigned jobs;    /* cjobs in the thread pool */
	files_seen *seen; /* chunk contents checked here, by tag (NULL: SHA-256 every time) */
	uint64_t checks_mac, checks_sha; /* chunk copies checked by their tag, by SHA-256 */
} nd_files;

/* Transfers at once: each holds up to window + 2 chunks (about 6 MiB), so this bounds
 * what file clients can make a node hold (the HTTP connection limits bound the rest). */
#define FILES_MAX_OPEN 32

#define FILES_KV_BIT (1ull << 61)

/* ---- shared bookkeeping ---- */

static void fx_drop(fx *x)
{
	if (--x->refs > 0)
		return;
	free(x->acc);
	free(x->hand);
	free(x->body);
	while (x->qh) {
		dbuf *d = x->qh;
		x->qh = d->next;
		free(d->chunk);
		free(d);
	}
	free(x);
}

static void fx_unref(node *n, fx *x)
{
	(void)n;
	fx_drop(x);
}

/* Puts x on the core's work list. */
static void fx_enqueue(nd_files *nf, fx *x)
{
	if (x->queued)
		return;
	x->queued = true;
	x->refs++;
	x->next_work = nf->work;
	nf->work = x;
}

static void fx_post(node *n, fx *x)
{
	fx_enqueue(n->files, x);
	uv_async_send(&n->files->wake);
}

/* Resumes the connection if the HTTP side suspended it. */
static void fx_resume(node *n, fx *x)
{
	bool resume = x->suspended && x->conn;
	x->suspended = false;
	if (resume)
		nd_http_resume(n, x->conn);
}

/* ---- the core's driver (loop thread) ---- */

static fx *live_find(nd_files *nf, uint64_t id, size_t *at)
{
	for (size_t i = 0; i < nf->nlive; i++)
		if (nf->live[i]->id == id) {
			if (at)
				*at = i;
			return nf->live[i];
		}
	return NULL;
}

/* Bytes done and the total (false: not known) of an upload or download (loop thread). */
static bool fx_progress(node *n, fx *x, uint64_t *done, uint64_t *total)
{
	bool known = true;
	if (x->kind == FX_UP) {
		*done = x->got;
		*total = x->announced;
		known = x->announced > 0;
	} else {
		*done = x->sent;
		*total = x->len ? x->len : x->m.size; /* a range, or the whole file */
		known = x->meta || x->len;
	}
	return known;
}

static void remember_ended(node *n, fx *x)
{
	if (x->kind != FX_UP && x->kind != FX_DOWN)
		return;
	nd_files *nf = n->files;
	uint64_t now = uv_now(&n->loop);
	fx_ended *e = &nf->ended[nf->nended++ % FILES_ENDED_KEEP];
	memset(e, 0, sizeof *e);
	memcpy(e->name, x->name, x->nlen);
	e->kind = x->kind;
	e->has_total = fx_progress(n, x, &e->done, &e->total);
	e->status = x->done ? x->status : 0;
	e->took_ms = now - x->begun_ms;
	e->ended_ms = now;
}

static void live_drop(node *n, fx *x)
{
	nd_files *nf = n->files;
	size_t i;
	if (!live_find(nf, x->id, &i))
		return;
	remember_ended(n, x);
	nf->live[i] = nf->live[--nf->nlive];
	fx_unref(n, x);
}

static bool is_chunk_key(const uint8_t *key, size_t klen)
{
	return klen == 3 + FILES_HASH && !key[0] && key[1] == 'F' && key[2] == 'c';
}

static void d_kv(void *ctx, uint64_t req, kv_op op, const uint8_t *key, size_t klen,
                 const uint8_t *val, size_t vlen, const kv_version *cond, uint64_t at_ms,
                 bool unchecked)
{
	node *n = ctx;
	nd_files *nf = n->files;
	uint8_t *k = malloc(klen);
	if (!k || rn_grow((void **)&nf->ops, &nf->capops, nf->nops + 1, sizeof *nf->ops, 16) < 0) {
		free(k);
		kvans a = {.req = req, .st = KV_NOT_APPLIED};
		if (rn_grow((void **)&nf->ans, &nf->capans, nf->nans + 1, sizeof *nf->ans, 16) == 0)
			nf->ans[nf->nans++] = a;
		return;
	}
	memcpy(k, key, klen);
	/* a chunk put: the core named these bytes by their hash, so their tag is good */
	uint8_t tag[FILES_TAG];
	if (op == KV_PUT && val && nf->seen && is_chunk_key(key, klen) &&
	    files_seen_tag(nf->seen, val, vlen, tag) == 0)
		files_seen_put(nf->seen, key + 3, tag);
	/* val stays valid until the core has its answer: the kv core copies it when called */
	nf->ops[nf->nops++] = (kvop){
	    req,   op,       k, klen, val, vlen, cond != NULL, cond ? *cond : (kv_version){0},
	    at_ms, unchecked};
}

static char *json_err(const char *why)
{
	return nd_json_text(json_pack("{s:s}", "error", why ? why : "failed"));
}

static unsigned files_http_status(files_status s)
{
	static const unsigned map[] = {200, 404, 400, 413, 503, 502, 507, 500};
	return s <= FILES_ERROR ? map[s] : 500;
}

static void d_meta(void *ctx, uint64_t id, const files_manifest *m)
{
	node *n = ctx;
	fx *x = live_find(n->files, id, NULL);
	if (!x)
		return;
	x->m = *m;
	x->m.chunks = NULL;
	x->meta = true;
	fx_resume(n, x);
}

static void d_data(void *ctx, uint64_t id, uint8_t *chunk, size_t off, size_t len)
{
	node *n = ctx;
	fx *x = live_find(n->files, id, NULL);
	dbuf *d = x ? malloc(sizeof *d) : NULL;
	if (!d) {
		free(chunk);
		if (x) { /* the download cannot go on: it ends short, with an error, never a gap */
			x->done = true;
			x->status = 500;
			x->stop = true;
			fx_post(n, x);
			fx_resume(n, x);
		}
		return;
	}
	d->next = NULL;
	d->chunk = chunk;
	d->off = off;
	d->end = off + len;
	n->files->bytes_out += len;
	x->sent += len;
	if (x->qt)
		x->qt->next = d;
	else
		x->qh = d;
	x->qt = d;
	fx_resume(n, x);
}

static void push_ans(nd_files *nf, const kvans *a)
{
	if (rn_grow((void **)&nf->ans, &nf->capans, nf->nans + 1, sizeof *nf->ans, 16) < 0) {
		free(a->val);
		return; /* lost: the core's transfer stays open until the node stops */
	}
	nf->ans[nf->nans++] = *a;
	uv_async_send(&nf->wake);
}

/* On a worker: a chunk's bytes checked as they are copied from src to dst (in place when
 * src is dst), 64 KiB at a time so that each piece is still in the cache for the next
 * pass. The bytes' tag is always taken; their SHA-256 only when no tag is remembered for
 * the chunk's name or the tag differs from it. j->a.sha is then what the bytes' SHA-256
 * is known to be: the name itself when the tags agree (files/seen.h says why that is as
 * good as hashing them). */
static void check_copy(cjob *j, uint8_t *dst, const uint8_t *src, size_t len)
{
	files_seen *seen = j->n->files->seen;
	files_tagger *t = seen ? files_tagger_begin(seen) : NULL;
	EVP_MD_CTX *h = j->has_want && t ? NULL : EVP_MD_CTX_new();
	if (h && !EVP_DigestInit_ex(h, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(h);
		h = NULL;
	}
	for (size_t at = 0; at < len;) {
		size_t k = len - at < 65536 ? len - at : 65536;
		if (dst != src)
			memcpy(dst + at, src + at, k);
		files_tagger_update(t, dst + at, k);
		if (h)
			EVP_DigestUpdate(h, dst + at, k);
		at += k;
	}
	j->has_tag = t && files_tagger_end(t, j->tag) == 0;
	j->by_mac = !h && j->has_want && j->has_tag && !CRYPTO_memcmp(j->tag, j->want, FILES_TAG);
	if (h)
		EVP_DigestFinal_ex(h, j->a.sha, NULL);
	else if (j->by_mac)
		memcpy(j->a.sha, j->key + 3, FILES_HASH);
	else
		files_sha256(dst, len, j->a.sha); /* the tag differs (damage), or none was taken */
	EVP_MD_CTX_free(h);
	j->a.has_sha = true;
}

/* A worker's copy of a record's value, checked as it is copied. */
static int copy_checked(void *arg, const kv_record *r)
{
	cjob *j = arg;
	if (r->v.tomb || !r->val || r->klen != sizeof j->key || memcmp(r->key, j->key, r->klen))
		return RN_ENOTFOUND;
	uint8_t *b = malloc(r->vlen ? r->vlen : 1);
	if (!b)
		return RN_ENOMEM;
	check_copy(j, b, r->val, r->vlen);
	j->a.val = b;
	j->a.vlen = r->vlen;
	return 0;
}

static void job_run(uv_work_t *w)
{
	cjob *j = w->data;
	if (!j->local) {
		check_copy(j, j->a.val, j->a.val, j->a.vlen);
		return;
	}
	j->a.st = store_peek(j->n->st, &j->kid, copy_checked, j) == 0 ? KV_OK : KV_NOT_FOUND;
}

static void job_done(uv_work_t *w, int status)
{
	(void)status;
	cjob *j = w->data;
	nd_files *nf = j->n->files;
	nf->jobs--;
	if (status < 0) { /* cancelled: the read is answered as missing, the bytes unhashed */
		if (j->local) {
			free(j->a.val);
			j->a = (kvans){.req = j->a.req, .st = KV_NOT_FOUND};
		}
		j->a.has_sha = false;
	} else if (j->a.has_sha) {
		nf->checks_mac += j->by_mac;
		nf->checks_sha += !j->by_mac;
		/* bytes that hash to their name: their tag is worth remembering */
		if (!j->by_mac && j->has_tag && nf->seen &&
		    !memcmp(j->a.sha, j->key + 3, FILES_HASH))
			files_seen_put(nf->seen, j->key + 3, j->tag);
	}
	push_ans(nf, &j->a);
	free(j);
}

/* Queues j on the thread pool; false: it could not be (the caller answers instead). */
static bool job_queue(node *n, cjob *j)
{
	j->n = n;
	j->has_want = n->files->seen && files_seen_get(n->files->seen, j->key + 3, j->want);
	j->w.data = j;
	if (uv_queue_work(&n->loop, &j->w, job_run, job_done) < 0)
		return false;
	n->files->jobs++;
	return true;
}

static void d_local(void *ctx, uint64_t req, const uint8_t *key, size_t klen)
{
	node *n = ctx;
	cjob *j = is_chunk_key(key, klen) && n->st ? calloc(1, sizeof *j) : NULL;
	if (j) {
		j->local = true;
		j->a.req = req;
		memcpy(j->key, key, klen);
		rn_id_hash(&j->kid, key, klen, RN_ID_BITS);
		nd_store_publish(n); /* (the worker's read sees only what LMDB committed) */
		if (job_queue(n, j))
			return;
		free(j);
	}
	push_ans(n->files, &(kvans){.req = req, .st = KV_NOT_FOUND});
}

static void d_damaged(void *ctx, const uint8_t *key, size_t klen)
{
	node *n = ctx;
	rn_id kid;
	rn_id_hash(&kid, key, klen, RN_ID_BITS);
	nd_batch_begin(n);
	if (n->kv && kv_drop_damaged(n->kv, uv_now(&n->loop), &kid))
		LOG_W(n, "a file chunk's copy here did not match its hash: dropped, so that "
		         "repair brings a good one back");
	nd_batch_end(n);
}

static void d_room(void *ctx, uint64_t id)
{
	node *n = ctx;
	fx *x = live_find(n->files, id, NULL);
	if (!x || !x->want_room)
		return;
	x->want_room = false;
	fx_resume(n, x);
}

static json_t *sha_json(const uint8_t *sha)
{
	char hex[2 * FILES_HASH + 1];
	files_hex(sha, FILES_HASH, hex);
	return json_string(hex);
}

static json_t *time_json(uint64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char s[40];
	gmtime_r(&t, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(s + strlen(s), sizeof s - strlen(s), ".%03uZ", (unsigned)(ms % 1000));
	return json_string(s);
}

static void d_done(void *ctx, uint64_t id, const files_result *r)
{
	node *n = ctx;
	fx *x = live_find(n->files, id, NULL);
	if (!x)
		return;
	char *body = NULL;
	if (r->status != FILES_OK) {
		body = json_err(r->why);
	} else if (x->kind == FX_UP) {
		body = nd_json_text(json_pack("{s:s, s:s%, s:I, s:o, s:I}", "status", "uploaded",
		                              "filename", r->m->name, r->m->nlen, "size",
		                              (json_int_t)r->m->size, "sha256", sha_json(r->m->sha),
		                              "chunks", (json_int_t)r->m->nchunks));
	} else if (x->kind == FX_DEL) {
		body =
		    nd_json_text(json_pack("{s:s, s:s%, s:I}", "status", "deleted", "filename",
		                           r->m->name, r->m->nlen, "size", (json_int_t)r->m->size));
	} else if (x->kind == FX_LIST) {
		json_t *a = json_array();
		for (size_t i = 0; i < r->nlist; i++) {
			const files_entry *e = &r->list[i];
			json_array_append_new(
			    a, json_pack("{s:s%, s:I, s:o, s:o}", "name", e->name, e->nlen, "size",
			                 (json_int_t)e->size, "sha256", sha_json(e->sha),
			                 "uploaded_at", time_json(e->uploaded_ms)));
		}
		body = nd_json_text(
		    json_pack("{s:o, s:I}", "files", a, "count", (json_int_t)r->nlist));
	}
	if (r->chunks_repaired)
		LOG_W(n,
		      "download of %s: %u chunk reads came back damaged or failed and were read "
		      "again",
		      x->name, r->chunks_repaired);
	x->done = true;
	x->status = files_http_status(r->status);
	free(x->body);
	x->body = body;
	x->loop_done = true;
	fx_resume(n, x);
	live_drop(n, x);
}

/* ---- running the core (loop thread, from the async callback only) ---- */

static void files_kv_issue(node *n)
{
	nd_files *nf = n->files;
	/* ops may grow while we go (kv answers come back queued, not at once) */
	for (size_t i = 0; i < nf->nops; i++) {
		kvop *o = &nf->ops[i];
		kv_request r = {.op = o->op,
		                .key = o->key,
		                .klen = o->klen,
		                .val = o->op == KV_PUT ? o->val : NULL,
		                .vlen = o->op == KV_PUT ? o->vlen : 0,
		                .has_cond = o->has_cond,
		                .cond = o->cond,
		                .at_ms = o->at_ms,
		                .unchecked = o->unchecked};
		nd_kv_client(n, FILES_KV_BIT | o->req, &r);
		free(o->key);
	}
	nf->nops = 0;
}

/* One pass: transfers the HTTP side posted, kv answers, the operations they made. */
static void files_run(node *n)
{
	nd_files *nf = n->files;
	if (nf->running || !nf->core)
		return;
	nf->running = true;
	uint64_t now = uv_now(&n->loop);
	fx *list = nf->work;
	nf->work = NULL;
	while (list) {
		fx *x = list;
		list = x->next_work;
		x->queued = false;
		bool gone = x->gone, stop = x->stop, go = x->go, has = x->has_hand,
		     end = x->hand_end;
		uint8_t *hand = x->hand;
		size_t hlen = x->hlen;
		unsigned consumed = x->consumed;
		x->consumed = 0;
		x->go = false;
		x->hand = NULL;
		x->has_hand = false;
		uint64_t off = x->off, len = x->len;
		if (!x->started && !gone && !nf->stopping) {
			int rc = 0;
			x->started = true;
			x->refs++; /* the loop's hold, until done or abort */
			x->begun_ms = now;
			if (rn_grow((void **)&nf->live, &nf->caplive, nf->nlive + 1,
			            sizeof *nf->live, 16) < 0)
				rc = RN_ENOMEM;
			else
				nf->live[nf->nlive++] = x;
			if (rc == 0) {
				if (x->kind == FX_UP)
					rc = files_upload_begin(nf->core, now, x->id, x->name,
					                        x->nlen);
				else if (x->kind == FX_DOWN || x->kind == FX_HEAD)
					rc = files_download(nf->core, now, x->id, x->name, x->nlen);
				else if (x->kind == FX_LIST)
					rc = files_list(nf->core, now, x->id);
				else
					rc = files_delete(nf->core, now, x->id, x->name, x->nlen);
				if (rc < 0)
					live_drop(n, x);
			}
			if (rc < 0) {
				x->done = true;
				x->status = rc == RN_EINVAL ? 400 : 500;
				x->body =
				    json_err(rc == RN_EINVAL ? "bad file name" : "out of memory");
				fx_resume(n, x);
			}
		}
		bool live = live_find(nf, x->id, NULL) != NULL;
		if (live && (gone || stop || nf->stopping)) {
			files_abort(nf->core, now, x->id);
			live_drop(n, x);
			live = false;
		}
		if (live && x->kind == FX_UP && has) {
			nf->bytes_in += hlen;
			files_upload_data(nf->core, now, x->id, hand, hlen);
			if (end)
				files_upload_end(nf->core, now, x->id);
			else if (files_upload_wants(nf->core, x->id))
				fx_resume(n, x);
			else
				x->want_room = true;
		}
		free(hand);
		if (live && go)
			files_download_start(nf->core, now, x->id, off, len);
		for (unsigned i = 0; i < consumed && live_find(nf, x->id, NULL); i++)
			files_download_consumed(nf->core, now, x->id);
		fx_unref(n, x); /* the work list's hold */
	}
	/* kv answers, then the operations they led to, until both are empty */
	while (nf->nans || nf->nops) {
		nd_batch_begin(n);
		files_kv_issue(n);
		nd_batch_end(n);
		size_t na = nf->nans;
		kvans *ans = nf->ans;
		nf->ans = NULL;
		nf->nans = nf->capans = 0;
		for (size_t i = 0; i < na; i++)
			files_on_kv_take(nf->core, uv_now(&n->loop), ans[i].req, ans[i].st,
			                 ans[i].val, ans[i].vlen, ans[i].has_v ? &ans[i].v : NULL,
			                 ans[i].has_sha ? ans[i].sha : NULL);
		free(ans);
		if (nf->nops) {
			nd_batch_begin(n);
			files_kv_issue(n);
			nd_batch_end(n);
		}
		if (!nf->nans)
			break; /* the rest answer later, through the kv core */
	}
	nf->running = false;
}

static void on_files_wake(uv_async_t *a)
{
	files_run(a->data);
}

/* A kv answer for the file core (from inside the kv core: queued, run later). */
void nd_files_on_reply(node *n, uint64_t client, const kv_reply *r)
{
	nd_files *nf = n->files;
	if (!nf || !nf->core)
		return;
	kvans a = {.req = client & ~FILES_KV_BIT, .st = r->status, .has_v = r->has_rec};
	if (r->has_rec)
		a.v = r->rec.v;
	if (r->status == KV_OK && r->has_rec && r->rec.val) {
		a.val = malloc(r->rec.vlen ? r->rec.vlen : 1);
		if (!a.val)
			a.st = KV_UNSURE; /* retried */
		else
			memcpy(a.val, r->rec.val, r->rec.vlen);
		a.vlen = a.val ? r->rec.vlen : 0;
	}
	cjob *j = a.val && r->rec.key && is_chunk_key(r->rec.key, r->rec.klen)
	              ? calloc(1, sizeof *j)
	              : NULL;
	if (j) { /* a chunk: checked on the thread pool, then to the core */
		j->a = a;
		memcpy(j->key, r->rec.key, sizeof j->key);
		if (job_queue(n, j))
			return;
		free(j);
	}
	push_ans(nf, &a);
}

bool nd_files_client(uint64_t client)
{
	return (client & FILES_KV_BIT) != 0;
}

void nd_files_tick(node *n)
{
	nd_files *nf = n->files;
	if (!nf || !nf->core || nf->running)
		return;
	uint64_t now = uv_now(&n->loop);
	if (now >= files_wake_at(nf->core)) {
		files_tick(nf->core, now);
		files_run(n);
	}
}

/* The kv core's check of a copy it read: a chunk must hash to its key (by its tag, when
 * this node has checked those contents before). */
static bool record_check(void *ctx, const kv_record *r)
{
	node *n = ctx;
	nd_files *nf = n->files;
	if (!nf || !nf->seen || !r->val || !is_chunk_key(r->key, r->klen))
		return files_record_valid(r->key, r->klen, r->val, r->vlen);
	bool by_mac;
	bool ok = files_seen_check(nf->seen, r->key + 3, r->val, r->vlen, &by_mac);
	nf->checks_mac += by_mac;
	nf->checks_sha += !by_mac;
	return ok;
}

int nd_files_start(node *n)
{
	nd_files *nf = calloc(1, sizeof *nf);
	if (!nf)
		return RN_ENOMEM;
	/* chunks are 1 MiB buffers made and freed many times a second: above glibc's default
	 * threshold (128 KiB) each would be its own mmap, page-faulted in and unmapped again
	 * (a quarter of a download's CPU); from the heap they are reused */
	mallopt(M_MMAP_THRESHOLD, 16 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	files_config_default(&nf->cfg);
	if (n->o->max_file)
		nf->cfg.max_file = n->o->max_file;
	if (n->o->files_gc_delay_ms)
		nf->cfg.gc_delay_ms = n->o->files_gc_delay_ms;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	nf->cfg.wall_offset_ms =
	    (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 - uv_now(&n->loop);
	files_driver d = {n, d_kv, d_meta, d_data, d_room, d_done, d_local, d_damaged};
	nf->core = files_new(&nf->cfg, &d);
	if (!nf->core) {
		free(nf);
		return RN_EINVAL;
	}
	/* the tags' key: drawn here, for this process only (files/seen.h) */
	uint8_t key[FILES_SEEN_KEY];
	nf->seen = RAND_bytes(key, sizeof key) == 1 ? files_seen_new(key) : NULL;
	OPENSSL_cleanse(key, sizeof key);
	if (!nf->seen) /* every check by SHA-256, as before */
		LOG_W(n, "no table of checked chunks (out of memory or randomness): every chunk "
		         "copy is checked with SHA-256");
	kv_set_check(n->kv, record_check);
	uv_async_init(&n->loop, &nf->wake, on_files_wake);
	nf->wake.data = n;
	nf->started = true;
	n->files = nf;
	return 0;
}

/* The node is stopping: every transfer still open gets its answer (503), and the HTTP
 * connections waiting on the loop are resumed so libmicrohttpd can close them. */
void nd_files_stop(node *n)
{
	nd_files *nf = n->files;
	if (!nf)
		return;
	nf->stopping = true;
	files_run(n);
	uint64_t now = uv_now(&n->loop);
	while (nf->nlive) {
		fx *x = nf->live[0];
		files_abort(nf->core, now, x->id);
		if (!x->done) {
			x->done = true;
			x->status = 503;
			free(x->body);
			x->body = json_err("the node is shutting down");
		}
		fx_resume(n, x);
		live_drop(n, x);
	}
}

/* ---- progress (loop thread): the transfers in progress and the last ones ended ---- */

static json_t *progress_json(const char *kind, const char *name, size_t nlen, uint64_t done,
                             uint64_t total, bool has_total, const char *state, uint64_t ms)
{
	return json_pack("{s:s, s:s%, s:I, s:o, s:o, s:s, s:I}", "kind", kind, "name", name, nlen,
	                 "done", (json_int_t)done, "total",
	                 has_total ? json_integer((json_int_t)total) : json_null(), "percent",
	                 has_total && total ? json_real(100.0 * (double)done / (double)total)
	                 : has_total        ? json_real(100.0)
	                                    : json_null(),
	                 "state", state, "ms", (json_int_t)ms);
}

json_t *nd_files_transfers(node *n)
{
	json_t *a = json_array();
	nd_files *nf = n->files;
	if (!nf)
		return a;
	uint64_t now = uv_now(&n->loop);
	for (size_t i = 0; i < nf->nlive; i++) {
		fx *x = nf->live[i];
		if (x->kind != FX_UP && x->kind != FX_DOWN)
			continue;
		uint64_t done, total;
		bool known = fx_progress(n, x, &done, &total);
		json_array_append_new(a, progress_json(x->kind == FX_UP ? "upload" : "download",
		                                       x->name, x->nlen, done, total, known,
		                                       "running", now - x->begun_ms));
	}
	unsigned kept = nf->nended < FILES_ENDED_KEEP ? nf->nended : FILES_ENDED_KEEP;
	for (unsigned k = 0; k < kept; k++) { /* the newest first */
		const fx_ended *e = &nf->ended[(nf->nended - 1 - k) % FILES_ENDED_KEEP];
		if (now - e->ended_ms > FILES_ENDED_MS)
			break;
		json_t *j = progress_json(e->kind == FX_UP ? "upload" : "download", e->name,
		                          strlen(e->name), e->done, e->total, e->has_total,
		                          e->status == 200 ? "done"
		                          : e->status      ? "failed"
		                                           : "aborted",
		                          e->took_ms);
		json_object_set_new(j, "status", json_integer(e->status));
		json_object_set_new(j, "ended_ms_ago",
		                    json_integer((json_int_t)(now - e->ended_ms)));
		json_array_append_new(a, j);
	}
	return a;
}

void nd_files_free(node *n)
{
	nd_files *nf = n->files;
	if (!nf)
		return;
	files_free(nf->core);
	for (size_t i = 0; i < nf->nops; i++)
		free(nf->ops[i].key);
	for (size_t i = 0; i < nf->nans; i++)
		free(nf->ans[i].val);
	while (nf->work) {
		fx *x = nf->work;
		nf->work = x->next_work;
		fx_drop(x);
	}
	free(nf->ops);
	free(nf->ans);
	free(nf->live);
	files_seen_free(nf->seen);
	free(nf);
	n->files = NULL;
}

size_t nd_files_metrics(node *n, char *b, size_t cap)
{
	nd_files *nf = n->files;
	if (!nf || !nf->core)
		return 0;
	const files_stats *s = files_get_stats(nf->core);
	const kv_stats *ks = n->kv ? kv_get_stats(n->kv) : NULL;
	unsigned long long refused = nf->refused;
	int k = snprintf(
	    b, cap,
	    "# HELP ringnet_files_total File operations that entered here, by kind.\n"
	    "# TYPE ringnet_files_total counter\n"
	    "ringnet_files_total{op=\"upload\"} %llu\nringnet_files_total{op=\"download\"} %llu\n"
	    "ringnet_files_total{op=\"delete\"} %llu\nringnet_files_total{op=\"aborted\"} %llu\n"
	    "# HELP ringnet_files_chunks_total Chunks stored, read and collected by this node's "
	    "transfers.\n# TYPE ringnet_files_chunks_total counter\n"
	    "ringnet_files_chunks_total{op=\"put\"} %llu\nringnet_files_chunks_total{op=\"get\"} "
	    "%llu\nringnet_files_chunks_total{op=\"deleted\"} %llu\n"
	    "ringnet_files_chunks_total{op=\"get_local\"} %llu\n"
	    "# HELP ringnet_files_bad_local_total Chunk reads from this node's own copy that did "
	    "not match their hash (the copy is dropped, the chunk read from the store).\n"
	    "# TYPE ringnet_files_bad_local_total counter\nringnet_files_bad_local_total %llu\n"
	    "# HELP ringnet_files_bad_chunks_total Chunk reads whose bytes did not match their "
	    "hash (read again elsewhere).\n# TYPE ringnet_files_bad_chunks_total counter\n"
	    "ringnet_files_bad_chunks_total %llu\n"
	    "# HELP ringnet_files_bytes_total File bytes through this node.\n"
	    "# TYPE ringnet_files_bytes_total counter\n"
	    "ringnet_files_bytes_total{dir=\"in\"} %llu\nringnet_files_bytes_total{dir=\"out\"} "
	    "%llu\n"
	    "# HELP ringnet_files_transfers Transfers open (uploads, downloads, collections).\n"
	    "# TYPE ringnet_files_transfers gauge\nringnet_files_transfers %zu\n"
	    "# HELP ringnet_files_refused_total File requests refused: %d transfers were open.\n"
	    "# TYPE ringnet_files_refused_total counter\nringnet_files_refused_total %llu\n"
	    "# HELP ringnet_kv_damaged_total Copies a get read here that failed their check (a "
	    "chunk not matching its hash), and those rewritten with a good copy.\n"
	    "# TYPE ringnet_kv_damaged_total counter\n"
	    "ringnet_kv_damaged_total{what=\"seen\"} %llu\n"
	    "ringnet_kv_damaged_total{what=\"repaired\"} %llu\n"
	    "# HELP ringnet_files_index_conflicts_total File index writes refused because "
	    "another node changed the index since it was read (the change was made again).\n"
	    "# TYPE ringnet_files_index_conflicts_total counter\n"
	    "ringnet_files_index_conflicts_total %llu\n"
	    "# HELP ringnet_files_collections_waiting Chunk collections waiting their delay.\n"
	    "# TYPE ringnet_files_collections_waiting gauge\nringnet_files_collections_waiting "
	    "%llu\n"
	    "# HELP ringnet_files_chunks_refreshed_total Chunks an upload put again before its "
	    "manifest (put more than a quarter of the collection delay before).\n"
	    "# TYPE ringnet_files_chunks_refreshed_total counter\n"
	    "ringnet_files_chunks_refreshed_total %llu\n"
	    "# HELP ringnet_files_gc_dropped_total Candidate chunks left uncollected: the bound "
	    "on waiting collections was full.\n# TYPE ringnet_files_gc_dropped_total counter\n"
	    "ringnet_files_gc_dropped_total %llu\n"
	    "# HELP ringnet_files_checks_total Chunk copies checked against their name: by the "
	    "tag of contents this node checked before (GMAC), or by SHA-256.\n"
	    "# TYPE ringnet_files_checks_total counter\n"
	    "ringnet_files_checks_total{by=\"tag\"} %llu\n"
	    "ringnet_files_checks_total{by=\"sha256\"} %llu\n",
	    (unsigned long long)s->uploads, (unsigned long long)s->downloads,
	    (unsigned long long)s->deletes, (unsigned long long)s->aborted,
	    (unsigned long long)s->chunks_put, (unsigned long long)s->chunks_got,
	    (unsigned long long)s->chunks_deleted, (unsigned long long)s->chunks_local,
	    (unsigned long long)s->bad_local, (unsigned long long)s->bad_chunks,
	    (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
	    files_active(nf->core), FILES_MAX_OPEN, refused,
	    (unsigned long long)(ks ? ks->damaged_seen : 0),
	    (unsigned long long)(ks ? ks->damaged_repaired : 0),
	    (unsigned long long)s->index_conflicts, (unsigned long long)s->gc_waiting,
	    (unsigned long long)s->chunks_refreshed, (unsigned long long)s->gc_dropped,
	    (unsigned long long)nf->checks_mac, (unsigned long long)nf->checks_sha);
	return k < 0 ? 0 : (size_t)k;
}

/* ---- HTTP (handlers, on the loop) ---- */

static enum MHD_Result answer_err(http_req *q, struct MHD_Connection *c, unsigned status,
                                  const char *why)
{
	char *t = json_err(why);
	enum MHD_Result rc = nd_http_reply(q, c, status, t ? t : "{}");
	free(t);
	return rc;
}

static fx *fx_new(node *n, struct MHD_Connection *c, int kind, const char *name, size_t nlen)
{
	fx *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->refs = 1; /* the HTTP request's */
	x->node = n;
	x->conn = c;
	x->kind = kind;
	if (name) {
		memcpy(x->name, name, nlen);
		x->nlen = nlen;
	}
	x->id = ++n->files->seq;
	n->files->open++;
	return x;
}

/* Suspends the connection and posts x to the core (with what the caller set). */
static void fx_submit(node *n, fx *x, struct MHD_Connection *c)
{
	x->suspended = true;
	MHD_suspend_connection(c);
	fx_enqueue(n->files, x);
	uv_async_send(&n->files->wake);
}

/* Hands the bytes gathered so far (and whether the body is over) to the loop. */
static void hand_over(node *n, fx *x, struct MHD_Connection *c, bool end)
{
	x->hand = x->acc;
	x->hlen = x->alen;
	x->has_hand = true;
	x->hand_end = end;
	x->acc = NULL;
	x->alen = x->acap = 0;
	fx_submit(n, x, c);
}

static bool take_bytes(fx *x, const char *data, size_t size)
{
	if (rn_grow((void **)&x->acc, &x->acap, x->alen + size, 1, FILES_CHUNK_DEFAULT + 65536) < 0)
		return false;
	memcpy(x->acc + x->alen, data, size);
	x->alen += size;
	return true;
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
	(void)kind;
	(void)content_type;
	(void)transfer_encoding;
	(void)off;
	fx *x = cls;
	if (x->err)
		return MHD_YES;
	if (!key || strcmp(key, "file") != 0) {
		if (x->got_field)
			x->field_over = true; /* only the first file field is taken */
		return MHD_YES;
	}
	if (x->field_over)
		return MHD_YES;
	if (!x->got_field) {
		x->got_field = true;
		if (!filename) {
			x->err = "the \"file\" field has no filename (send it as curl -F "
			         "'file=@PATH' does)";
			x->err_status = MHD_HTTP_BAD_REQUEST;
			return MHD_YES;
		}
		size_t nl = strlen(filename);
		const char *why = files_name_problem(filename, nl);
		if (why) {
			x->err = why;
			x->err_status = MHD_HTTP_BAD_REQUEST;
			return MHD_YES;
		}
		memcpy(x->name, filename, nl);
		x->nlen = nl;
	}
	if (size && !take_bytes(x, data, size)) {
		x->err = "out of memory";
		x->err_status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	return MHD_YES;
}

static const char *mime_type(const char *name, size_t nlen)
{
	static const char *const map[][2] = {{"txt", "text/plain; charset=utf-8"},
	                                     {"html", "text/html; charset=utf-8"},
	                                     {"htm", "text/html; charset=utf-8"},
	                                     {"css", "text/css"},
	                                     {"js", "text/javascript"},
	                                     {"json", "application/json"},
	                                     {"xml", "application/xml"},
	                                     {"csv", "text/csv"},
	                                     {"md", "text/markdown"},
	                                     {"png", "image/png"},
	                                     {"jpg", "image/jpeg"},
	                                     {"jpeg", "image/jpeg"},
	                                     {"gif", "image/gif"},
	                                     {"svg", "image/svg+xml"},
	                                     {"webp", "image/webp"},
	                                     {"pdf", "application/pdf"},
	                                     {"mp4", "video/mp4"},
	                                     {"webm", "video/webm"},
	                                     {"mp3", "audio/mpeg"},
	                                     {"ogg", "audio/ogg"},
	                                     {"wav", "audio/wav"},
	                                     {"zip", "application/zip"},
	                                     {"gz", "application/gzip"},
	                                     {"tar", "application/x-tar"}};
	const char *dot = NULL;
	for (size_t i = 0; i < nlen; i++)
		if (name[i] == '.')
			dot = name + i + 1;
	if (dot)
		for (size_t i = 0; i < sizeof map / sizeof *map; i++)
			if (!strcasecmp(dot, map[i][0]))
				return map[i][1];
	return "application/octet-stream";
}

/* inline; filename="..." (ASCII, quotes escaped) and filename*= for the UTF-8 name */
static void disposition(const char *name, size_t nlen, char *out, size_t cap)
{
	size_t k = (size_t)snprintf(out, cap, "inline; filename=\"");
	bool ascii = true;
	for (size_t i = 0; i < nlen && k + 4 < cap; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch >= 0x80) {
			ascii = false;
			out[k++] = '_';
		} else {
			if (ch == '"' || ch == '\\')
				out[k++] = '\\';
			out[k++] = (char)ch;
		}
	}
	k += (size_t)snprintf(out + k, cap - k, "\"");
	if (ascii)
		return;
	k += (size_t)snprintf(out + k, cap - k, "; filename*=UTF-8''");
	for (size_t i = 0; i < nlen && k + 4 < cap; i++) {
		unsigned char ch = (unsigned char)name[i];
		bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		             (ch >= '0' && ch <= '9') || strchr("-._~", ch);
		k += (size_t)snprintf(out + k, cap - k, plain ? "%c" : "%%%02X", ch);
	}
}

/* Range: bytes=A-B, A-, -N (one range). 1: a range in [*off, *off + *len); 0: none or
 * not one this server takes (the whole file is sent); -1: unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
	if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
		return 0;
	const char *p = h + 6;
	char *end;
	if (*p == '-') {
		unsigned long long nb = strtoull(p + 1, &end, 10);
		if (end == p + 1 || *end)
			return 0;
		if (!nb || !size)
			return -1;
		if (nb > size)
			nb = size;
		*off = size - nb;
		*len = nb;
		return 1;
	}
	unsigned long long a = strtoull(p, &end, 10);
	if (end == p || *end != '-')
		return 0;
	p = end + 1;
	unsigned long long b = size ? size - 1 : 0;
	if (*p) {
		b = strtoull(p, &end, 10);
		if (end == p || *end || b < a)
			return 0;
		if (b >= size)
			b = size - 1;
	}
	if (a >= size)
		return -1;
	*off = a;
	*len = b - a + 1;
	return 1;
}

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max);
static void free_body(void *cls);

/* The manifest is known: the headers of a GET or HEAD, and the start of the bytes. */
static enum MHD_Result answer_meta(node *n, http_req *q, struct MHD_Connection *c, fx *x)
{
	char etag[2 * FILES_HASH + 3];
	etag[0] = '"';
	files_hex(x->m.sha, FILES_HASH, etag + 1);
	strcat(etag, "\"");
	uint64_t size = x->m.size, off = 0, len = size;
	unsigned status = MHD_HTTP_OK;
	int rr = 0;
	const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
	const char *if_range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-Range");
	if (range && (!if_range || !strcmp(if_range, etag)))
		rr = parse_range(range, size, &off, &len);
	if (rr < 0) {
		x->stop = true;
		fx_post(n, x);
		q->status = MHD_HTTP_RANGE_NOT_SATISFIABLE;
		char *t = json_err("the range is outside the file");
		struct MHD_Response *r =
		    MHD_create_response_from_buffer(strlen(t), t, MHD_RESPMEM_MUST_FREE);
		if (!r)
			return MHD_NO;
		char cr[64];
		snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
		MHD_add_response_header(r, "Content-Range", cr);
		MHD_add_response_header(r, "Content-Type", "application/json");
		enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_RANGE_NOT_SATISFIABLE, r);
		MHD_destroy_response(r);
		return ok;
	}
	if (rr > 0)
		status = MHD_HTTP_PARTIAL_CONTENT;
	x->refs++; /* the response's */
	struct MHD_Response *r =
	    MHD_create_response_from_callback(len, 256 * 1024, read_body, x, free_body);
	if (!r) {
		fx_unref(n, x);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", mime_type(x->m.name, x->m.nlen));
	char cd[3 * FILES_NAME_MAX + 64];
	disposition(x->m.name, x->m.nlen, cd, sizeof cd);
	MHD_add_response_header(r, "Content-Disposition", cd);
	MHD_add_response_header(r, "ETag", etag);
	MHD_add_response_header(r, "Accept-Ranges", "bytes");
	if (rr > 0) {
		char cr[96];
		snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)off,
		         (unsigned long long)(off + len - 1), (unsigned long long)size);
		MHD_add_response_header(r, "Content-Range", cr);
	}
	if (x->kind == FX_HEAD || !len) {
		x->stop = true;
	} else {
		x->go = true;
		x->off = off;
		x->len = len;
	}
	fx_post(n, x);
	q->status = status;
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

/* The download's bytes, as the loop queued them; none yet: suspend until there are. A
 * download that failed after its headers ends with an error (the connection closes short
 * of Content-Length), never with bytes that were not verified. */
static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	fx *x = cls;
	node *n = x->node;
	size_t k = 0;
	bool post = false;
	while (k < max && x->qh) {
		dbuf *d = x->qh;
		size_t take = d->end - d->off < max - k ? d->end - d->off : max - k;
		memcpy(buf + k, d->chunk + d->off, take);
		d->off += take;
		k += take;
		if (d->off == d->end) {
			x->qh = d->next;
			if (!x->qh)
				x->qt = NULL;
			free(d->chunk);
			free(d);
			x->consumed++;
			post = true;
		}
	}
	ssize_t ret = (ssize_t)k;
	if (!k && x->done)
		ret = x->status == MHD_HTTP_OK ? MHD_CONTENT_READER_END_OF_STREAM
		                               : MHD_CONTENT_READER_END_WITH_ERROR;
	else if (!k) {
		x->suspended = true;
		MHD_suspend_connection(x->conn);
	}
	if (post)
		fx_enqueue(n->files, x);
	if (post)
		uv_async_send(&n->files->wake);
	return ret;
}

static void free_body(void *cls)
{
	fx *x = cls;
	fx_unref(x->node, x);
}

/* libmicrohttpd's unescaping of a URL, except that on a file route %00 becomes %01: the
 * handler sees the path as a C string, where a NUL would cut the name short silently
 * ("a%00b" stored as "a"); a control byte gets the 400 a NUL deserves. */
size_t nd_files_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	if (nd_files_route(s))
		for (char *p = strstr(s, "%00"); p; p = strstr(p + 3, "%00"))
			p[2] = '1';
	return MHD_http_unescape(s);
}

bool nd_files_route(const char *url)
{
	return !strcmp(url, "/upload") || !strcmp(url, "/files") || !strncmp(url, "/files/", 7) ||
	       !strncmp(url, "/download/", 10);
}

enum MHD_Result nd_files_http(node *n, struct MHD_Connection *c, http_req *q, const char *url,
                              const char *method, const char *upload, size_t *upload_size)
{
	fx *x = q->files;
	if (!x) { /* the first call: headers only */
		bool get = !strcmp(method, "GET"), head = !strcmp(method, "HEAD"),
		     put = !strcmp(method, "PUT"), post = !strcmp(method, "POST"),
		     del = !strcmp(method, "DELETE");
		const char *name = NULL;
		int kind = 0;
		if (!strcmp(url, "/upload")) {
			q->route = "/upload";
			if (!post)
				return answer_err(q, c, MHD_HTTP_METHOD_NOT_ALLOWED,
				                  "POST /upload takes multipart/form-data with a "
				                  "\"file\" field");
			kind = FX_UP;
		} else if (!strcmp(url, "/files") || !strcmp(url, "/files/")) {
			q->route = "/files";
			if (!get)
				return answer_err(q, c, MHD_HTTP_METHOD_NOT_ALLOWED,
				                  "GET /files lists; PUT or DELETE /files/<name>");
			kind = FX_LIST;
		} else if (!strncmp(url, "/files/", 7)) {
			name = url + 7;
			q->route = "/files/<name>";
			if (!put && !del && !get && !head)
				return answer_err(
				    q, c, MHD_HTTP_METHOD_NOT_ALLOWED,
				    "PUT /files/<name> stores the body, DELETE removes, "
				    "GET or HEAD /download/<name> reads");
			kind = put ? FX_UP : del ? FX_DEL : get ? FX_DOWN : FX_HEAD;
		} else {
			name = url + 10; /* "/download/" */
			q->route = "/download/<name>";
			if (!get && !head)
				return answer_err(q, c, MHD_HTTP_METHOD_NOT_ALLOWED,
				                  "use GET or HEAD on /download/<name>");
			kind = get ? FX_DOWN : FX_HEAD;
		}
		if (name) {
			/* libmicrohttpd has decoded %XX already; the name is the rest of the path
			 */
			const char *why = files_name_problem(name, strlen(name));
			if (why)
				return answer_err(q, c, MHD_HTTP_BAD_REQUEST, why);
		}
		if (kind == FX_UP) {
			const char *cl = MHD_lookup_connection_value(
			    c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
			uint64_t max = n->files->cfg.max_file;
			uint64_t slack =
			    name ? 0 : 64 * 1024; /* multipart's boundaries and headers */
			if (cl && strtoull(cl, NULL, 10) > max + slack) {
				char why[160];
				snprintf(
				    why, sizeof why,
				    "the file is over this node's limit of %llu bytes (--max-file)",
				    (unsigned long long)max);
				return answer_err(q, c, MHD_HTTP_CONTENT_TOO_LARGE, why);
			}
		}
		bool full = n->files->open >= FILES_MAX_OPEN;
		n->files->refused += full;
		if (full) {
			q->status = MHD_HTTP_SERVICE_UNAVAILABLE;
			char *t = nd_json_text(json_pack(
			    "{s:s, s:i}", "error",
			    "too many file transfers on this node at once; try again shortly",
			    "retry_after_ms", 1000));
			enum MHD_Result rc =
			    nd_http_reply(q, c, MHD_HTTP_SERVICE_UNAVAILABLE, t ? t : "{}");
			free(t);
			return rc;
		}
		x = fx_new(n, c, kind, name, name ? strlen(name) : 0);
		if (!x)
			return answer_err(q, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		q->files = x;
		const char *cl =
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (kind == FX_UP && name && cl) /* a form's length is not the file's */
			x->announced = strtoull(cl, NULL, 10);
		if (kind == FX_UP && name) /* the loop begins it now, so that its progress shows
		                            * from byte 0 (a form's begins with its file name) */
			fx_post(n, x);
		if (kind == FX_UP && !name) {
			x->multipart = true;
			x->pp = MHD_create_post_processor(c, 65536, on_part, x);
			if (!x->pp)
				return answer_err(
				    q, c, MHD_HTTP_BAD_REQUEST,
				    "send multipart/form-data with a \"file\" field (curl -F "
				    "'file=@PATH')");
		}
		return MHD_YES;
	}
	bool done = x->done, meta = x->meta;
	if (x->answered) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (x->kind == FX_UP && done) { /* the loop has answered (or the node stops) */
		*upload_size = 0;
		x->answered = true;
		return nd_http_reply(q, c, x->status, x->body ? x->body : "{}");
	}
	if (x->kind == FX_UP) {
		if (*upload_size) {
			size_t size = *upload_size;
			*upload_size = 0;
			x->received += size;
			x->got = x->received;
			if (x->received > n->files->cfg.max_file + (x->multipart ? 65536 : 0)) {
				/* a body of no announced length went over: the connection closes */
				x->gone = true;
				fx_post(n, x);
				return MHD_NO;
			}
			if (x->err)
				return MHD_YES; /* read and dropped; the error is the answer */
			if (x->multipart)
				MHD_post_process(x->pp, upload, size);
			else if (!take_bytes(x, upload, size))
				x->err = "out of memory", x->err_status = 500;
			if (!x->err && x->alen >= n->files->cfg.chunk_size)
				hand_over(n, x, c, false);
			return MHD_YES;
		}
		/* the body is over */
		if (x->err) {
			x->gone = true;
			if (x->submitted || x->received)
				fx_post(n, x);
			return answer_err(q, c, x->err_status, x->err);
		}
		if (x->multipart && !x->got_field)
			return answer_err(q, c, MHD_HTTP_BAD_REQUEST,
			                  "no \"file\" field in the form (curl -F 'file=@PATH')");
		if (!x->submitted) {
			x->submitted = true;
			hand_over(n, x, c, true);
		}
		return MHD_YES;
	}
	*upload_size = 0;
	if (!x->submitted) {
		x->submitted = true;
		fx_submit(n, x, c);
		return MHD_YES;
	}
	if (meta) { /* a download's manifest came: headers now */
		x->answered = true;
		return answer_meta(n, q, c, x);
	}
	if (done) {
		x->answered = true;
		return nd_http_reply(q, c, x->status, x->body ? x->body : "{}");
	}
	return MHD_YES;
}

void nd_files_http_done(node *n, http_req *q, bool completed)
{
	fx *x = q->files;
	if (!x)
		return;
	if (x->pp)
		MHD_destroy_post_processor(x->pp);
	x->pp = NULL;
	(void)completed;
	bool tell = !x->done || x->kind == FX_DOWN; /* a download may still be fetching */
	x->gone = true;
	if (tell)
		fx_enqueue(n->files, x);
	x->conn = NULL;
	n->files->open--;
	fx_drop(x);
	if (tell)
		uv_async_send(&n->files->wake);
	q->files = NULL;
}
