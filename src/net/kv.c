/* kv.c — the key-value path and the key handoff, on the loop thread. A request the HTTP thread
 * hands over (a job, see http.c) starts a ring lookup of SHA-1(key); if this node owns the key
 * it runs the operation on its store, otherwise it sends a KvMsg to the owner, which runs it
 * and replies. The loop then answers the job and resumes its HTTP connection; a request
 * unanswered in KV_DEADLINE_MS, or whose owner cannot be reached, is a 503 with a message.
 * Keys follow ownership: when the predecessor changes (and every HANDOFF_EVERY_MS) the keys
 * outside (predecessor, self] go to it, each deleted here once that node acknowledges it and
 * only if it still holds the value sent. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "node_internal.h"

/* ---- key handoff (loop thread) ---- */

static void handoff_done(node *n, uint64_t req, bool stored)
{
	for (handoff **pp = &n->handoffs; *pp; pp = &(*pp)->next) {
		handoff *h = *pp;
		if (h->req != req)
			continue;
		*pp = h->next;
		void *val = NULL;
		size_t vlen = 0;
		rn_id now;
		if (stored && store_get(n->st, h->key, strlen(h->key), &val, &vlen) == 0) {
			rn_id_hash(&now, val, vlen, RN_ID_BITS);
			if (rn_id_eq(&now, &h->sent) &&
			    store_del(n->st, h->key, strlen(h->key)) == 0)
				n->keys_handed_off++;
		}
		free(val);
		free(h->key);
		free(h);
		return;
	}
}

typedef struct {
	node *n;
	ring_peer to;
	bool all;
} handoff_scan;

static int handoff_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	handoff_scan *hs = ctx;
	node *n = hs->n;
	if (klen == 0 || klen > WIRE_KEY_MAX)
		return 0;
	char *k = strndup(key, klen);
	if (!k)
		return 1;
	rn_id id;
	rn_id_hash(&id, k, klen, n->cfg.bits);
	/* ours while it lies in (predecessor, self] */
	bool ours = rn_id_in_oc(&id, &hs->to.id, ring_self_id(n->ring));
	bool busy = false;
	for (handoff *h = n->handoffs; h && !busy; h = h->next)
		busy = !strcmp(h->key, k);
	if ((ours && !hs->all) || busy) {
		free(k);
		return 0;
	}
	handoff *h = calloc(1, sizeof *h);
	pending *f = calloc(1, sizeof *f);
	wire_kv m = {.op = WIRE_KV_PUT, .req = HANDOFF_BIT | ++n->handoff_seq, .key = k};
	m.value = (uint8_t *)(uintptr_t)val;
	m.vlen = vlen;
	snprintf(m.reply_to, sizeof m.reply_to, "%s", n->peers[0].addr);
	if (!h || !f || wire_encode_kv(&m, &f->buf, &f->len) < 0) {
		free(h);
		free(f);
		free(k);
		return 1;
	}
	h->req = m.req;
	h->key = k;
	rn_id_hash(&h->sent, val, vlen, RN_ID_BITS);
	h->next = n->handoffs;
	n->handoffs = h;
	f->kind = FRAME_KV;
	f->kv_req = m.req;
	nd_send_frame(n, hs->to.addr, f);
	return 0;
}

/* Sends to `to` the keys outside (to, self] (all of them when leaving). */
void nd_handoff_to(node *n, ring_peer to, bool all)
{
	if (to.addr == RING_ADDR_NONE || to.addr == 0 || !n->st)
		return;
	handoff_scan hs = {n, to, all};
	n->handoff_at = uv_now(&n->loop);
	store_scan(n->st, handoff_one, &hs);
}

/* ---- key-value (loop thread) ---- */

char *nd_json_text(json_t *j)
{
	char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	return t;
}

/* The answer a client sees, from what the owner decided. */
static char *kv_body(uint8_t op, unsigned status, const char *key, const uint8_t *val, size_t vlen,
                     const rn_id *owner)
{
	char hex[RN_ID_HEX];
	rn_id_to_hex(owner, hex);
	if (status == 404)
		return nd_json_text(json_pack("{s:s, s:s, s:s}", "error", "key not found", "key",
		                              key, "node", hex));
	if (status != 200)
		return nd_json_text(json_pack("{s:s, s:s}", "error",
		                              "the key's owner could not read or write its store",
		                              "node", hex));
	if (op == WIRE_KV_PUT)
		return nd_json_text(
		    json_pack("{s:s, s:s, s:s}", "status", "stored", "key", key, "node", hex));
	if (op == WIRE_KV_DEL)
		return nd_json_text(
		    json_pack("{s:s, s:s, s:s}", "status", "deleted", "key", key, "node", hex));
	json_t *v = json_loadb((const char *)val, vlen, JSON_DECODE_ANY, NULL);
	if (!v)
		return nd_json_text(json_pack("{s:s}", "error", "stored value is not JSON"));
	return nd_json_text(json_pack("{s:s, s:o, s:s}", "key", key, "value", v, "node", hex));
}

/* Runs op on this node's store: the HTTP status, and for a get the value. */
static unsigned kv_exec(node *n, uint8_t op, const char *key, const uint8_t *val, size_t vlen,
                        void **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	int rc;
	switch (op) {
	case WIRE_KV_PUT:
		rc = store_put(n->st, key, strlen(key), val, vlen);
		break;
	case WIRE_KV_GET:
		rc = store_get(n->st, key, strlen(key), out, outlen);
		break;
	default:
		rc = store_del(n->st, key, strlen(key));
		break;
	}
	return rc == 0 ? 200 : rc == RN_ENOTFOUND ? 404 : 500;
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
	pthread_mutex_lock(&n->lock);
	j->done = true;
	pthread_mutex_unlock(&n->lock);
	MHD_resume_connection(j->conn); /* the HTTP thread owns j from here on */
}

static job *kv_find(node *n, uint64_t req)
{
	for (job *j = n->active; j; j = j->next)
		if (j->req == req)
			return j;
	return NULL;
}

static void kv_fail(node *n, job *j, const char *why)
{
	kv_finish(n, j, 503, nd_json_text(json_pack("{s:s}", "error", why)));
}

void nd_kv_on_lookup(node *n, const ring_event *e)
{
	if (e->req & ANCHOR_BIT) {
		if (e->ok && e->result.addr != RING_ADDR_NONE)
			n->anchor = e->result;
		return;
	}
	n->lookups++;
	n->lookup_hops += e->hops;
	n->lookups_failed += !e->ok;
	job *j = kv_find(n, e->req);
	if (!j)
		return; /* answered already (timed out) */
	if (!e->ok || e->result.addr == RING_ADDR_NONE) {
		kv_fail(n, j, "the ring could not find the key's owner; try again");
		return;
	}
	if (e->result.addr == 0) { /* ours */
		void *val;
		size_t vlen;
		const char *in = j->value ? j->value : "";
		unsigned st =
		    kv_exec(n, j->op, j->key, (const uint8_t *)in, strlen(in), &val, &vlen);
		n->kv_local++;
		kv_finish(n, j, st, kv_body(j->op, st, j->key, val, vlen, ring_self_id(n->ring)));
		free(val);
		return;
	}
	wire_kv m = {.op = j->op, .req = j->req, .key = j->key};
	m.value = (uint8_t *)j->value;
	m.vlen = j->value ? strlen(j->value) : 0;
	snprintf(m.reply_to, sizeof m.reply_to, "%s", n->peers[0].addr);
	pending *f = calloc(1, sizeof *f);
	if (!f || wire_encode_kv(&m, &f->buf, &f->len) < 0) {
		free(f);
		kv_fail(n, j, "could not forward the request");
		return;
	}
	f->kind = FRAME_KV;
	f->kv_req = j->req;
	n->kv_forwarded++;
	nd_send_frame(n, e->result.addr, f);
}

void nd_kv_unreachable(node *n, uint64_t req)
{
	if (req & HANDOFF_BIT) {
		handoff_done(n, req, false);
		return;
	}
	job *j = kv_find(n, req);
	if (!j)
		return;
	if (j->retried) {
		kv_fail(n, j, "the key's owner is unreachable; try again");
		return;
	}
	/* once more, a second later: by then the ring has usually routed around the loss */
	j->retried = true;
	j->retry_at = uv_now(&n->loop) + 1000;
}

static void kv_lookup(node *n, job *j)
{
	rn_id key;
	rn_id_hash(&key, j->key, strlen(j->key), n->cfg.bits);
	ring_out_reset(&n->out);
	ring_lookup(n->ring, uv_now(&n->loop), &key, j->req, &n->out);
	nd_drain(n);
}

void nd_kv_on_frame(node *n, const wire_kv *kv)
{
	if (kv->op == WIRE_KV_REPLY && (kv->req & HANDOFF_BIT)) {
		handoff_done(n, kv->req, kv->status == 200);
		return;
	}
	if (kv->op == WIRE_KV_REPLY) {
		job *j = kv_find(n, kv->req);
		if (j)
			kv_finish(
			    n, j, kv->status,
			    kv_body(j->op, kv->status, j->key, kv->value, kv->vlen, &kv->node));
		return;
	}
	/* a request for a key of ours: run it and answer the asker */
	void *val;
	size_t vlen;
	unsigned st = kv_exec(n, kv->op, kv->key, kv->value, kv->vlen, &val, &vlen);
	n->kv_served_for_others++;
	wire_kv r = {.op = WIRE_KV_REPLY, .status = (uint16_t)st, .req = kv->req, .key = kv->key};
	r.value = val;
	r.vlen = vlen;
	r.node = *ring_self_id(n->ring);
	ring_addr to = nd_book_intern(n, kv->reply_to);
	pending *f = calloc(1, sizeof *f);
	if (to != RING_ADDR_NONE && f && wire_encode_kv(&r, &f->buf, &f->len) == 0) {
		f->kind = FRAME_KV;
		f->kv_req = 0; /* nothing waits here if the reply is lost: the asker times out */
		nd_send_frame(n, to, f);
	} else {
		free(f);
	}
	free(val);
}

/* Requests handed over by the HTTP thread. */
void nd_on_wake(uv_async_t *a)
{
	node *n = a->data;
	pthread_mutex_lock(&n->lock);
	job *list = n->incoming;
	n->incoming = NULL;
	pthread_mutex_unlock(&n->lock);
	/* the list was pushed at the head: reverse it to keep arrival order */
	job *rev = NULL;
	while (list) {
		job *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	uint64_t now = uv_now(&n->loop);
	while (rev) {
		job *j = rev;
		rev = rev->next;
		if (n->stopping) {
			j->next = n->active;
			n->active = j;
			kv_fail(n, j, "the node is shutting down");
			continue;
		}
		if (!ring_joined(n->ring)) { /* it would answer for the whole ring alone */
			j->next = n->active;
			n->active = j;
			kv_fail(n, j,
			        "this node is not in a ring yet (joining); try again shortly");
			continue;
		}
		j->req = ++n->kv_seq;
		j->deadline = now + KV_DEADLINE_MS;
		j->next = n->active;
		n->active = j;
		kv_lookup(n, j);
	}
}

void nd_kv_expire(node *n, bool all)
{
	uint64_t now = uv_now(&n->loop);
	/* the one retry of a request whose owner was unreachable (nd_kv_unreachable): by
	 * request id, since a lookup can finish other jobs while it runs */
	uint64_t due[64];
	size_t ndue = 0;
	for (job *j = n->active; j && !all && ndue < 64; j = j->next)
		if (j->retry_at && now >= j->retry_at) {
			j->retry_at = 0;
			due[ndue++] = j->req;
		}
	for (size_t i = 0; i < ndue; i++) {
		job *j = kv_find(n, due[i]);
		if (j)
			kv_lookup(n, j);
	}
	job *j = n->active;
	while (j) {
		job *next = j->next;
		if (all || now >= j->deadline)
			kv_fail(n, j,
			        all ? "the node is shutting down"
			            : "no answer from the key's owner in time; try again");
		j = next;
	}
}
