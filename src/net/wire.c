/* wire.c — see wire.h. */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "ringnet.pb-c.h"

static uint8_t *frame_alloc(size_t body, uint8_t type)
{
	uint8_t *buf = malloc(WIRE_HEADER + body);
	if (!buf)
		return NULL;
	uint32_t flen = (uint32_t)(body + 1);
	buf[0] = (uint8_t)(flen >> 24);
	buf[1] = (uint8_t)(flen >> 16);
	buf[2] = (uint8_t)(flen >> 8);
	buf[3] = (uint8_t)flen;
	buf[4] = type;
	return buf;
}

static int peer_out(const ring_peer *p, const wire_book *b, Ringnet__Peer *w)
{
	ringnet__peer__init(w);
	if (p->addr == RING_ADDR_NONE)
		return 0;
	const char *name = b->name(b->ctx, p->addr);
	if (!name)
		return RN_EINVAL;
	w->id.data = (uint8_t *)(uintptr_t)p->id.b;
	w->id.len = RN_ID_BYTES;
	w->addr = (char *)(uintptr_t)name;
	return 0;
}

int wire_encode_ring(const ring_msg *m, const wire_book *b, uint8_t **out, size_t *len)
{
	Ringnet__RingMsg w;
	Ringnet__Peer from, origin, result, plist[RING_MAX_SUCC], *pp[RING_MAX_SUCC];
	ringnet__ring_msg__init(&w);
	w.type = m->type;
	w.purpose = m->purpose;
	w.finger = m->finger;
	w.ok = m->ok;
	w.hops = m->hops;
	w.req = m->req;
	w.key.data = (uint8_t *)(uintptr_t)m->key.b;
	w.key.len = RN_ID_BYTES;
	if (peer_out(&m->from, b, &from) < 0 || peer_out(&m->origin, b, &origin) < 0 ||
	    peer_out(&m->result, b, &result) < 0)
		return RN_EINVAL;
	w.from = &from;
	w.origin = &origin;
	w.result = &result;
	size_t np = m->npeers > RING_MAX_SUCC ? RING_MAX_SUCC : m->npeers;
	for (size_t i = 0; i < np; i++) {
		if (peer_out(&m->peers[i], b, &plist[i]) < 0)
			return RN_EINVAL;
		pp[i] = &plist[i];
	}
	w.n_peers = np;
	w.peers = pp;
	size_t body = ringnet__ring_msg__get_packed_size(&w);
	uint8_t *buf = frame_alloc(body, WIRE_RING);
	if (!buf)
		return RN_ENOMEM;
	ringnet__ring_msg__pack(&w, buf + WIRE_HEADER);
	*out = buf;
	*len = WIRE_HEADER + body;
	return 0;
}

static int peer_in(const Ringnet__Peer *w, const wire_book *b, ring_peer *p)
{
	p->addr = RING_ADDR_NONE;
	memset(&p->id, 0, sizeof p->id);
	if (!w || !w->addr || !w->addr[0])
		return 0; /* no peer */
	if (w->id.len != RN_ID_BYTES || strlen(w->addr) >= WIRE_ADDR_MAX)
		return RN_EPROTO;
	memcpy(p->id.b, w->id.data, RN_ID_BYTES);
	p->addr = b->intern(b->ctx, w->addr);
	return p->addr == RING_ADDR_NONE ? RN_EPROTO : 0;
}

int wire_decode_ring(const uint8_t *body, size_t len, const wire_book *b, ring_msg *m,
                     ring_peer *peers)
{
	Ringnet__RingMsg *w = ringnet__ring_msg__unpack(NULL, len, body);
	if (!w)
		return RN_EPROTO;
	int rc = RN_EPROTO;
	memset(m, 0, sizeof *m);
	if (w->type < RING_MSG_FIND_SUCC || w->type > RING_MSG_LEAVE ||
	    w->purpose > RING_FOR_FINGER || w->finger >= RN_ID_BITS || w->key.len != RN_ID_BYTES ||
	    w->n_peers > RING_MAX_SUCC)
		goto out;
	m->type = (uint8_t)w->type;
	m->purpose = (uint8_t)w->purpose;
	m->finger = (uint8_t)w->finger;
	m->ok = w->ok;
	m->hops = w->hops;
	m->req = w->req;
	memcpy(m->key.b, w->key.data, RN_ID_BYTES);
	if (peer_in(w->from, b, &m->from) < 0 || m->from.addr == RING_ADDR_NONE ||
	    peer_in(w->origin, b, &m->origin) < 0 || peer_in(w->result, b, &m->result) < 0)
		goto out;
	for (size_t i = 0; i < w->n_peers; i++)
		if (peer_in(w->peers[i], b, &peers[i]) < 0 || peers[i].addr == RING_ADDR_NONE)
			goto out;
	m->npeers = (uint8_t)w->n_peers;
	m->peers = peers;
	rc = 0;
out:
	ringnet__ring_msg__free_unpacked(w, NULL);
	return rc;
}

int wire_encode_kv(const wire_kv *m, uint8_t **out, size_t *len)
{
	Ringnet__KvMsg w;
	ringnet__kv_msg__init(&w);
	w.op = m->op;
	w.req = m->req;
	w.status = m->status;
	w.key = m->key ? m->key : (char *)"";
	w.value.data = m->value;
	w.value.len = m->vlen;
	w.reply_to = (char *)(uintptr_t)m->reply_to;
	if (m->op == WIRE_KV_REPLY) {
		w.node.data = (uint8_t *)(uintptr_t)m->node.b;
		w.node.len = RN_ID_BYTES;
	}
	size_t body = ringnet__kv_msg__get_packed_size(&w);
	if (body + 1 > WIRE_MAX_FRAME)
		return RN_EINVAL;
	uint8_t *buf = frame_alloc(body, WIRE_KV);
	if (!buf)
		return RN_ENOMEM;
	ringnet__kv_msg__pack(&w, buf + WIRE_HEADER);
	*out = buf;
	*len = WIRE_HEADER + body;
	return 0;
}

int wire_decode_kv(const uint8_t *body, size_t len, wire_kv *m)
{
	memset(m, 0, sizeof *m);
	Ringnet__KvMsg *w = ringnet__kv_msg__unpack(NULL, len, body);
	if (!w)
		return RN_EPROTO;
	int rc = RN_EPROTO;
	size_t klen = w->key ? strlen(w->key) : 0;
	if (w->op < WIRE_KV_PUT || w->op > WIRE_KV_REPLY || klen > WIRE_KEY_MAX ||
	    (w->op != WIRE_KV_REPLY && klen == 0) || !w->reply_to ||
	    strlen(w->reply_to) >= WIRE_ADDR_MAX ||
	    (w->op == WIRE_KV_REPLY && w->node.len != RN_ID_BYTES) || w->status > 599)
		goto out;
	m->op = (uint8_t)w->op;
	m->req = w->req;
	m->status = (uint16_t)w->status;
	strcpy(m->reply_to, w->reply_to);
	if (w->node.len == RN_ID_BYTES)
		memcpy(m->node.b, w->node.data, RN_ID_BYTES);
	m->key = strdup(w->key ? w->key : "");
	m->value = malloc(w->value.len ? w->value.len : 1);
	if (!m->key || !m->value) {
		wire_kv_free(m);
		rc = RN_ENOMEM;
		goto out;
	}
	if (w->value.len) /* an empty bytes field has no data pointer */
		memcpy(m->value, w->value.data, w->value.len);
	m->vlen = w->value.len;
	rc = 0;
out:
	ringnet__kv_msg__free_unpacked(w, NULL);
	return rc;
}

void wire_kv_free(wire_kv *m)
{
	free(m->key);
	free(m->value);
	m->key = NULL;
	m->value = NULL;
}

int wire_header(const uint8_t h[WIRE_HEADER], uint32_t *body_len, uint8_t *type)
{
	uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (len < 1 || len > WIRE_MAX_FRAME)
		return RN_EPROTO;
	*body_len = len - 1;
	*type = h[4];
	return 0;
}
