/* kv.c — the node's driver of the key-value core (src/kv), on the loop thread. It gives the
 * core what kv.h asks of a driver: the LMDB store (src/store), peer frames (a kv_msg per
 * WIRE_KV frame, sent with nd_send_frame), ring lookups, client replies and the ring's
 * view. The core is not re-entrant, so what would call back into it while it runs (a
 * lookup the ring answers at once, a frame handed back as undeliverable) is queued and
 * delivered by nd_kv_pump once the core has returned.
 *
 * An HTTP request (a job, see http.c) becomes one kv_client call, made from its handler
 * (libmicrohttpd runs on this loop too); the core's reply becomes the job's status and
 * JSON body. A reply made before kv_client returns is sent by the handler at once, unless
 * the batch it came in has written to the store: then it waits for the commit like every
 * other. A later reply resumes the suspended HTTP connection. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "../lib/grow.h"
#include "node_internal.h"

/* ---- group commit ---- */

void nd_batch_begin(node *n)
{
	if (n->batch_depth++)
		return;
	if (n->st && store_batch_begin(n->st) < 0)
		LOG_W(n, "cannot open a store transaction; writes commit one by one");
}

/* The store commit that what the node says now may depend on: the open batch once it has
 * written (it commits next), else the last commit (which need not be on disk yet: see
 * store.h, "Durability"). An acknowledgement or a coordinator's answer completes writes
 * of earlier iterations (the coordinator writes before it sends a replica the record,
 * and that goes out at the iteration's end), so what answers it needs only what has
 * committed. 0: nothing. */
static uint64_t says_upto(const node *n)
{
	if (!n->st)
		return 0;
	uint64_t c = store_committed(n->st);
	return n->batch_depth && store_batch_dirty(n->st) && !n->kv_acked_input ? c + 1 : c;
}

bool nd_batch_undurable(const node *n)
{
	return n->st && store_durable(n->st) < store_committed(n->st);
}

/* What the node says now must wait: it may depend on a write not yet on disk. */
static bool batch_unsafe(const node *n)
{
	return n->st && says_upto(n) > store_durable(n->st);
}

static void release_durable(node *n);

bool nd_batch_hold(node *n, ring_addr to, pending *f)
{
	/* a request, a replication push or a read says nothing of what this node stored:
	 * it goes out at once, so the replicas' commits run beside this one, not after it */
	if (f->released || f->claims_nothing)
		return false;
	if (!batch_unsafe(n)) {
		if (n->held_head) /* what waited for commits now on disk goes first */
			release_durable(n);
		if (!n->held_head)
			return false;
	}
	/* (behind frames still held, whatever it says: nothing overtakes them) */
	uint64_t upto = says_upto(n);
	f->held_to = to;
	f->held_seq = n->held_tail && n->held_tail->held_seq > upto ? n->held_tail->held_seq : upto;
	f->next = NULL;
	if (n->held_tail)
		n->held_tail->next = f;
	else
		n->held_head = f;
	n->held_tail = f;
	return true;
}

static void job_resume(node *n, job *j)
{
	j->done = true;
	if (!j->in_call)
		nd_http_resume(n, j->conn); /* http.c sends the answer and frees j */
}

/* Sends and answers what waited for commits that are on disk now, in the order held. */
static void release_durable(node *n)
{
	uint64_t d = n->st ? store_durable(n->st) : UINT64_MAX;
	while (n->held_head && n->held_head->held_seq <= d) {
		pending *f = n->held_head;
		n->held_head = f->next;
		if (!n->held_head)
			n->held_tail = NULL;
		f->released = true;
		nd_send_frame(n, f->held_to, f);
	}
	while (n->held_jobs && n->held_jobs->held_seq <= d) {
		job *j = n->held_jobs;
		n->held_jobs = j->next;
		if (!n->held_jobs)
			n->held_jobs_tail = NULL;
		job_resume(n, j);
	}
}

static void stop_on_store_error(node *n)
{
	/* the writes are not on disk, and what was held would say they are: stop here,
	 * having said nothing (crash-only; the replicas have them) */
	LOG_E(n, "the store cannot commit (disk full or failing): stopping the node");
	abort();
}

static void sync_start(node *n);

static void sync_work(uv_work_t *w)
{
	node *n = w->data;
	n->sync_rc = store_flush(n->st); /* the one store call off the loop (store.h) */
}

static void sync_done(uv_work_t *w, int status)
{
	node *n = w->data;
	n->sync_busy = false;
	if (status < 0 || n->sync_rc < 0)
		stop_on_store_error(n);
	store_set_durable(n->st, n->sync_upto);
	if (n->stopping)
		return; /* nd_batch_drain answered everything */
	release_durable(n);
	sync_start(n);
}

/* A sync of what has committed, on the thread pool, unless one runs (then its end starts
 * the next). */
static void sync_start(node *n)
{
	if (n->sync_busy || !nd_batch_undurable(n))
		return;
	n->sync_upto = store_committed(n->st);
	n->sync_work.data = n;
	if (uv_queue_work(&n->loop, &n->sync_work, sync_work, sync_done) < 0) {
		if (store_sync(n->st) < 0) /* (the pool refused: sync here) */
			stop_on_store_error(n);
		release_durable(n);
		return;
	}
	n->sync_busy = true;
}

static void batch_end(node *n, bool wait)
{
	if (!n->batch_depth)
		return;
	if (--n->batch_depth) {
		if (n->batch_depth > 1 || !n->iter_open)
			return;
		/* back at the iteration's batch: whoever ended this one may rely on its
		 * writes being on disk now (files.c reads kv answers after it), so the
		 * iteration's batch commits here, with it */
		n->iter_open = false;
		n->batch_depth = 0;
	}
	if (n->st && store_batch_end(n->st) < 0)
		stop_on_store_error(n);
	if (n->st && wait && store_sync(n->st) < 0)
		stop_on_store_error(n);
	release_durable(n); /* (this commit's own sync made the ones before it durable) */
	if (n->st)
		sync_start(n);
}

void nd_batch_end(node *n)
{
	batch_end(n, true);
}

void nd_batch_end_async(node *n)
{
	batch_end(n, false);
}

void nd_store_publish(node *n)
{
	if (n->st && store_publish(n->st) < 0)
		stop_on_store_error(n);
}

void nd_store_tick(node *n)
{
	if (n->st && store_tick(n->st) < 0)
		stop_on_store_error(n);
}

void nd_batch_drain(node *n)
{
	if (n->st && store_sync(n->st) < 0)
		stop_on_store_error(n);
	release_durable(n);
}

void nd_batch_iter(node *n)
{
	if (n->iter_open)
		return;
	nd_batch_begin(n);
	n->iter_open = true;
}

void nd_batch_iter_close(node *n)
{
	if (!n->iter_open)
		return;
	n->iter_open = false;
	nd_batch_end_async(n);
}

/* ---- deferred inputs ---- */

enum { Q_LOOKUP = 1, Q_FOUND, Q_UNREACH };

static void defer(node *n, const kvq_item *it)
{
	if (rn_grow((void **)&n->kvq, &n->kvq_cap, n->kvq_len + 1, sizeof *n->kvq, 64) < 0)
		return; /* the request times out in the core */
	n->kvq[n->kvq_len++] = *it;
}

static void kv_view(node *n)
{
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	kv_set_view(n->kv, uv_now(&n->loop), ring_joined(n->ring), ring_predecessor(n->ring), succ,
	            ns);
}

void nd_kv_pump(node *n)
{
	if (n->kv_busy || !n->kv)
		return;
	n->kv_busy = true;
	while (n->kvq_head < n->kvq_len) {
		kvq_item it = n->kvq[n->kvq_head++];
		uint64_t now = uv_now(&n->loop);
		switch (it.kind) {
		case Q_LOOKUP:
			ring_out_reset(&n->out);
			ring_lookup(n->ring, now, &it.kid, it.req | KV_LOOKUP_BIT, &n->out);
			nd_drain(n); /* an answer at once comes back as a Q_FOUND */
			break;
		case Q_FOUND:
			kv_on_lookup(n->kv, now, it.req, it.ok, it.owner);
			break;
		case Q_UNREACH:
			kv_on_unreachable(n->kv, now, it.req, it.to);
			break;
		}
	}
	n->kvq_head = n->kvq_len = 0;
	kv_view(n);
	n->kv_busy = false;
}

/* Runs one call into the core, then what it left queued. */
#define KV_CALL(n, call)                                                                           \
	do {                                                                                       \
		(n)->kv_busy = true;                                                               \
		call;                                                                              \
		(n)->kv_busy = false;                                                              \
		nd_kv_pump(n);                                                                     \
	} while (0)

void nd_kv_unreachable(node *n, uint64_t req, ring_addr to)
{
	if (!req)
		return;
	kvq_item it = {.kind = Q_UNREACH, .req = req, .to = to};
	defer(n, &it);
	nd_kv_pump(n);
}

void nd_kv_on_lookup(node *n, const ring_event *e)
{
	if (e->req & DASH_BIT) {
		nd_dash_on_lookup(n, e);
		return;
	}
	if (e->req & ANCHOR_BIT) {
		if (e->ok && e->result.addr != RING_ADDR_NONE)
			n->anchor = e->result;
		return;
	}
	n->lookups++;
	n->lookup_hops += e->hops;
	n->lookups_failed += !e->ok;
	if (!(e->req & KV_LOOKUP_BIT))
		return;
	kvq_item it = {
	    .kind = Q_FOUND, .req = e->req & ~KV_LOOKUP_BIT, .ok = e->ok, .owner = e->result};
	defer(n, &it);
	nd_kv_pump(n);
}

void nd_kv_on_frame(node *n, const kv_msg *m)
{
	if (m->type <= KV_MSG_LAST)
		n->kv_msgs_in[m->type]++;
	/* An acknowledgement, or a coordinator's answer, completes writes made in earlier
	 * iterations, whose batches have committed; what the core says in answer to it (the
	 * coordinator's answer, the client's) waits for those commits only (says_upto). */
	n->kv_acked_input = m->type == KV_MSG_ACK || m->type == KV_MSG_RESP;
	KV_CALL(n, kv_on_msg(n->kv, uv_now(&n->loop), m); n->kv_acked_input = false);
}

void nd_kv_tick(node *n)
{
	if (!n->kv)
		return;
	uint64_t now = uv_now(&n->loop);
	if (n->kv_busy)
		return;
	kv_view(n);
	if (now >= kv_wake_at(n->kv)) {
		nd_batch_begin(n);
		KV_CALL(n, kv_tick(n->kv, now));
		nd_batch_end_async(n);
	}
}

void nd_kv_leave(node *n)
{
	KV_CALL(n, kv_leave(n->kv, uv_now(&n->loop)));
}

/* ---- what the core asks of its driver ---- */

static void d_send(void *ctx, const kv_msg *m)
{
	node *n = ctx;
	if (m->to == RING_ADDR_NONE || m->to == 0 || m->to >= n->npeers)
		return;
	pending *f = calloc(1, sizeof *f);
	if (!f || wire_encode_kv(m, &n->book, &f->buf, &f->len) < 0) {
		free(f);
		nd_kv_unreachable(n, m->req, m->to); /* deferred: the core is running */
		return;
	}
	f->kind = FRAME_KV;
	f->claims_nothing = m->type == KV_MSG_REQ || m->type == KV_MSG_REPL ||
	                    m->type == KV_MSG_READ || m->type == KV_MSG_LEASE_REQ ||
	                    m->type == KV_MSG_LEASE;
	f->kv_req = m->req;
	f->kv_to = m->to;
	if (m->type <= KV_MSG_LAST)
		n->kv_msgs_out[m->type]++;
	traffic_count(&n->tr, traffic_kv_type(m->type), TR_OUT, f->len);
	nd_send_frame(n, m->to, f);
}

static void d_lookup(void *ctx, const rn_id *kid, uint64_t req)
{
	kvq_item it = {.kind = Q_LOOKUP, .req = req, .kid = *kid};
	defer(ctx, &it);
}

static job *kv_find(node *n, uint64_t req)
{
	for (job *j = n->active; j; j = j->next)
		if (j->req == req)
			return j;
	return NULL;
}

static void kv_finish(node *n, job *j, unsigned status, char *body)
{
	for (job **pp = &n->active; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	j->status = status;
	j->body = body ? body : strdup("{\"error\":\"out of memory\"}");
	if (batch_unsafe(n)) { /* answered once the writes it may report are on disk */
		j->held_seq = says_upto(n);
		j->next = NULL;
		if (n->held_jobs_tail)
			n->held_jobs_tail->next = j;
		else
			n->held_jobs = j;
		n->held_jobs_tail = j;
		return;
	}
	job_resume(n, j);
}

char *nd_json_text(json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	return t;
}

/* A version as the API shows it: "stamp-writer", both in hex. */
static json_t *version_json(const kv_version *v)
{
	char s[40];
	snprintf(s, sizeof s, "%016llx-%016llx", (unsigned long long)v->stamp,
	         (unsigned long long)v->writer);
	return json_string(s);
}

static json_t *id_json(const rn_id *id)
{
	char hex[RN_ID_HEX];
	rn_id_to_hex(id, hex);
	return json_string(hex);
}

static unsigned http_status(kv_status s)
{
	switch (s) {
	case KV_OK:
		return 200;
	case KV_NOT_FOUND:
		return 404;
	case KV_ERROR:
		return 500;
	case KV_CONFLICT:
		return 412;
	default:
		return 503;
	}
}

/* Appends s as a JSON string, escaped as jansson writes one (valid UTF-8 as it is). */
static size_t put_jstr(char *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	b[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		const char *esc = ch == '"'    ? "\\\""
		                  : ch == '\\' ? "\\\\"
		                  : ch == '\n' ? "\\n"
		                  : ch == '\r' ? "\\r"
		                  : ch == '\t' ? "\\t"
		                  : ch == '\b' ? "\\b"
		                  : ch == '\f' ? "\\f"
		                               : NULL;
		if (esc) {
			b[o++] = esc[0];
			b[o++] = esc[1];
		} else if (ch < 0x20) {
			memcpy(b + o, "\\u00", 4);
			b[o + 4] = hex[ch >> 4];
			b[o + 5] = hex[ch & 15];
			o += 6;
		} else {
			b[o++] = (char)ch;
		}
	}
	b[o++] = '"';
	return o;
}

/* The pieces of found_body, each returning the bytes it wrote (no terminator). */
static size_t put_lit(char *b, const char *s, size_t len)
{
	memcpy(b, s, len);
	return len;
}

static size_t put_id(char *b, const rn_id *id)
{
	char hex[RN_ID_HEX];
	rn_id_to_hex(id, hex);
	return put_lit(b, hex, RN_ID_HEX - 1);
}

static size_t put_hex64(char *b, uint64_t v) /* as %016llx */
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 15; i >= 0; i--, v >>= 4)
		b[i] = digits[v & 15];
	return 16;
}

/* A found get's answer, written straight out: {"value":<the stored bytes>,"status":
 * "found","key":...,"node":...,"replicas":[...],"version":...} and a newline, the bytes
 * reply_body's general path would make, without building a JSON tree. */
static char *found_body(const job *j, const kv_reply *r)
{
	size_t cap = r->rec.vlen + j->klen * 6 + (r->nacked + 1) * (RN_ID_HEX + 3) + 128;
	char *b = malloc(cap);
	if (!b)
		return NULL;
	static const char head[] = "{\"value\":", mid[] = ",\"status\":\"found\",\"key\":";
	size_t o = sizeof head - 1;
	memcpy(b, head, o);
	memcpy(b + o, r->rec.val, r->rec.vlen);
	o += r->rec.vlen;
	memcpy(b + o, mid, sizeof mid - 1);
	o += sizeof mid - 1;
	o += put_jstr(b + o, j->key, j->klen);
	static const char nodek[] = ",\"node\":\"", reps[] = "\",\"replicas\":[",
	                  ver[] = "],\"version\":\"";
	o += put_lit(b + o, nodek, sizeof nodek - 1);
	o += put_id(b + o, &r->coordinator);
	o += put_lit(b + o, reps, sizeof reps - 1);
	for (size_t i = 0; i < r->nacked; i++) {
		if (i)
			b[o++] = ',';
		b[o++] = '"';
		o += put_id(b + o, &r->acked[i].id);
		b[o++] = '"';
	}
	o += put_lit(b + o, ver, sizeof ver - 1);
	o += put_hex64(b + o, r->rec.v.stamp);
	b[o++] = '-';
	o += put_hex64(b + o, r->rec.v.writer);
	o += put_lit(b + o, "\"}\n", 3);
	b[o] = '\0';
	return b;
}

/* The JSON answer; a get's value goes out as the bytes stored, not parsed again. */
static char *reply_body(node *n, const job *j, const kv_reply *r)
{
	(void)n;
	if (j->op == KV_GET && r->status == KV_OK && r->has_rec && !r->replayed && !r->retry_ms)
		return found_body(j, r);
	json_t *o = json_object();
	if (r->status == KV_OK)
		json_object_set_new(o, "status",
		                    json_string(j->op == KV_PUT   ? "stored"
		                                : j->op == KV_DEL ? "deleted"
		                                                  : "found"));
	else
		json_object_set_new(o, "error", json_string(r->why ? r->why : "failed"));
	json_object_set_new(o, "key", json_stringn(j->key, j->klen));
	if (r->status == KV_OK || r->status == KV_NOT_FOUND) {
		json_object_set_new(o, "node", id_json(&r->coordinator));
		json_t *reps = json_array();
		for (size_t i = 0; i < r->nacked; i++)
			json_array_append_new(reps, id_json(&r->acked[i].id));
		json_object_set_new(o, "replicas", reps);
	}
	if (r->has_rec)
		json_object_set_new(o, r->status == KV_NOT_FOUND ? "deleted_version" : "version",
		                    version_json(&r->rec.v));
	if (r->replayed)
		json_object_set_new(o, "replayed", json_true());
	if (r->status == KV_UNKNOWN || r->status == KV_NOT_APPLIED)
		json_object_set_new(
		    o, "outcome", json_string(r->status == KV_UNKNOWN ? "unknown" : "not_applied"));
	if (r->retry_ms)
		json_object_set_new(o, "retry_after_ms", json_integer(r->retry_ms));
	char *t = nd_json_text(o);
	if (!t || j->op != KV_GET || r->status != KV_OK)
		return t;
	/* {"key":...,"value":<stored bytes>, ...}: splice the value in after the opening brace */
	size_t tl = strlen(t), need = tl + r->rec.vlen + 16;
	char *b = malloc(need);
	if (b) {
		int head = snprintf(b, need, "{\"value\":");
		memcpy(b + head, r->rec.val, r->rec.vlen);
		size_t off = (size_t)head + r->rec.vlen;
		b[off++] = ',';
		memcpy(b + off, t + 1, tl); /* the rest of the object, its NUL included */
	}
	free(t);
	return b;
}

static void d_reply(void *ctx, uint64_t client, const kv_reply *r)
{
	node *n = ctx;
	if (nd_files_client(client)) {
		/* files.c acts on an answer at once (an upload's end answers its client):
		 * what has committed goes to disk first, as nd_batch_end would have it */
		if (nd_batch_undurable(n)) {
			if (store_sync(n->st) < 0)
				stop_on_store_error(n);
			release_durable(n);
		}
		nd_files_on_reply(n, client, r);
		return;
	}
	job *j = kv_find(n, client);
	if (!j)
		return;
	n->kv_replies[r->status <= KV_CONFLICT ? r->status : KV_ERROR]++;
	kv_finish(n, j, http_status(r->status), reply_body(n, j, r));
}

static int nd_store_get(void *ctx, const rn_id *kid, kv_record *out)
{
	return store_get(((node *)ctx)->st, kid, out);
}

static int nd_store_put(void *ctx, const kv_record *rec)
{
	node *n = ctx;
	return store_put(n->st, rec);
}

static int nd_store_del(void *ctx, const rn_id *kid)
{
	node *n = ctx;
	return store_del(n->st, kid);
}

static int nd_store_scan(void *ctx, const rn_id *lo, const rn_id *hi, bool values,
                         int (*fn)(void *arg, const kv_record *rec), void *arg)
{
	return store_scan(((node *)ctx)->st, lo, hi, values, fn, arg);
}

static uint64_t nd_store_count(void *ctx)
{
	return store_count(((node *)ctx)->st);
}

int nd_kv_start(node *n)
{
	kv_config c;
	kv_config_default(&c);
	c.replicas = n->o->replicas ? (unsigned)n->o->replicas : c.replicas;
	c.write_quorum = n->o->write_quorum ? (unsigned)n->o->write_quorum : c.write_quorum;
	if (c.write_quorum > c.replicas)
		c.write_quorum = c.replicas;
	c.read_quorum = c.replicas + 1 - c.write_quorum;
	if (n->o->read_lease_set)
		c.lease_ms = n->o->read_lease_ms;
	c.req_timeout_ms = KV_DEADLINE_MS;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t wall = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	c.wall_offset_ms = wall - uv_now(&n->loop);
	kv_driver d = {
	    n,      nd_store_get, nd_store_put, nd_store_del, nd_store_scan, nd_store_count,
	    d_send, d_lookup,     d_reply};
	n->kv = kv_new(&c, &d, ring_self_id(n->ring), 0);
	return n->kv ? 0 : RN_ENOMEM;
}

/* ---- HTTP requests ---- */

static void kv_fail(node *n, job *j, const char *why, bool maybe)
{
	const char *outcome = j->op == KV_GET ? "none" : maybe ? "unknown" : "not_applied";
	kv_finish(n, j, 503,
	          nd_json_text(json_pack("{s:s, s:s, s:i}", "error", why, "outcome", outcome,
	                                 "retry_after_ms", 1000)));
}

void nd_kv_submit(node *n, job *j)
{
	uint64_t now = uv_now(&n->loop);
	j->req = ++n->kv_seq;
	j->deadline = now + KV_DEADLINE_MS + 2000; /* the core answers first */
	j->next = n->active;
	n->active = j;
	j->in_call = true;
	if (n->stopping || !n->kv || n->kv_busy) {
		kv_fail(n, j, n->kv_busy ? "the node is busy" : "the node is shutting down", false);
	} else {
		kv_view(n); /* the ring may have changed since the last tick (or just started) */
		kv_request r = {.op = (kv_op)j->op,
		                .key = (const uint8_t *)j->key,
		                .klen = j->klen,
		                .val = (const uint8_t *)j->value,
		                .vlen = j->vlen,
		                .rid = (const uint8_t *)j->rid,
		                .ridlen = j->rid ? strlen(j->rid) : 0,
		                .has_cond = j->has_cond,
		                .cond = j->cond};
		KV_CALL(n, kv_client(n->kv, now, j->req, &r));
	}
	j->in_call = false;
}

void nd_kv_client(node *n, uint64_t client, const kv_request *r)
{
	if (!n->kv || n->kv_busy) {
		kv_reply rep = {.status = KV_NOT_APPLIED, .why = "the node is busy or stopping"};
		d_reply(n, client, &rep);
		return;
	}
	KV_CALL(n, kv_client(n->kv, uv_now(&n->loop), client, r));
}

void nd_kv_expire(node *n, bool all)
{
	if (all && n->kv && !n->kv_busy)
		KV_CALL(n, kv_abort(n->kv, uv_now(&n->loop)));
	uint64_t now = uv_now(&n->loop);
	job *j = n->active;
	while (j) {
		job *next = j->next;
		if (all || now >= j->deadline)
			kv_fail(n, j,
			        all ? "the node is shutting down" : "no answer in time; try again",
			        true);
		j = next;
	}
}
