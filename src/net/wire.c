/* wire.c — see wire.h. */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/bytes.h"
#include "../lib/err.h"
#include "ringnet.pb-c.h"

uint8_t *wire_frame_alloc(size_t body, uint8_t type)
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
	uint8_t *buf = wire_frame_alloc(body, WIRE_RING);
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
	    w->purpose > RING_FOR_MERGE || w->finger >= RN_ID_BITS || w->key.len != RN_ID_BYTES ||
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

int wire_encode_kv(const kv_msg *m, const wire_book *b, uint8_t **out, size_t *len)
{
	Ringnet__KvMsg w;
	Ringnet__Peer from, acked[2 * KV_MAX_R], *ap[2 * KV_MAX_R];
	Ringnet__KvRecord rec;
	ringnet__kv_msg__init(&w);
	w.type = m->type;
	w.op = m->op;
	w.status = m->status;
	w.flags = m->flags;
	w.req = m->req;
	w.round = m->round;
	if (peer_out(&m->from, b, &from) < 0)
		return RN_EINVAL;
	w.from = &from;
	if (m->has_rec) {
		ringnet__kv_record__init(&rec);
		rec.kid = (ProtobufCBinaryData){RN_ID_BYTES, (uint8_t *)(uintptr_t)m->rec.kid.b};
		rec.key = (ProtobufCBinaryData){m->rec.klen, (uint8_t *)(uintptr_t)m->rec.key};
		rec.value = (ProtobufCBinaryData){m->rec.vlen, (uint8_t *)(uintptr_t)m->rec.val};
		rec.rid = (ProtobufCBinaryData){m->rec.ridlen, (uint8_t *)(uintptr_t)m->rec.rid};
		rec.hist = (ProtobufCBinaryData){m->rec.histlen, (uint8_t *)(uintptr_t)m->rec.hist};
		rec.stamp = m->rec.v.stamp;
		rec.writer = m->rec.v.writer;
		rec.tomb = m->rec.v.tomb;
		w.rec = &rec;
	}
	if (m->type == KV_MSG_DIGEST || m->type == KV_MSG_KEYS ||
	    (m->type == KV_MSG_LEASE && m->status == KV_OK)) {
		w.lo = (ProtobufCBinaryData){RN_ID_BYTES, (uint8_t *)(uintptr_t)m->lo.b};
		w.hi = (ProtobufCBinaryData){RN_ID_BYTES, (uint8_t *)(uintptr_t)m->hi.b};
	}
	if (m->hashes) {
		w.n_hashes = KV_BUCKETS;
		w.hashes = (uint64_t *)(uintptr_t)m->hashes;
	}
	w.buckets = (ProtobufCBinaryData){m->nbuckets, (uint8_t *)(uintptr_t)m->buckets};
	int rc = RN_ENOMEM;
	Ringnet__KvEntry *ents = NULL, **ep = NULL;
	ProtobufCBinaryData *kids = NULL;
	if (m->nentries) {
		ents = malloc(m->nentries * sizeof *ents);
		ep = malloc(m->nentries * sizeof *ep);
		if (!ents || !ep)
			goto out;
		for (size_t i = 0; i < m->nentries; i++) {
			ringnet__kv_entry__init(&ents[i]);
			ents[i].kid = (ProtobufCBinaryData){
			    RN_ID_BYTES, (uint8_t *)(uintptr_t)m->entries[i].kid.b};
			ents[i].stamp = m->entries[i].v.stamp;
			ents[i].writer = m->entries[i].v.writer;
			ents[i].tomb = m->entries[i].v.tomb;
			ep[i] = &ents[i];
		}
		w.n_entries = m->nentries;
		w.entries = ep;
	}
	if (m->nkids) {
		kids = malloc(m->nkids * sizeof *kids);
		if (!kids)
			goto out;
		for (size_t i = 0; i < m->nkids; i++)
			kids[i] =
			    (ProtobufCBinaryData){RN_ID_BYTES, (uint8_t *)(uintptr_t)m->kids[i].b};
		w.n_kids = m->nkids;
		w.kids = kids;
	}
	rc = RN_EINVAL;
	size_t na = m->nacked > 2 * KV_MAX_R ? 2 * KV_MAX_R : m->nacked;
	for (size_t i = 0; i < na; i++) {
		if (peer_out(&m->acked[i], b, &acked[i]) < 0)
			goto out;
		ap[i] = &acked[i];
	}
	w.n_acked = na;
	w.acked = ap;
	Ringnet__KvEntry cond;
	if (m->has_cond) {
		ringnet__kv_entry__init(&cond);
		cond.stamp = m->cond.stamp;
		cond.writer = m->cond.writer;
		cond.tomb = m->cond.tomb;
		w.cond = &cond;
	}
	size_t body = ringnet__kv_msg__get_packed_size(&w);
	if (body + 1 > WIRE_MAX_FRAME)
		goto out;
	rc = RN_ENOMEM;
	uint8_t *buf = wire_frame_alloc(body, WIRE_KV);
	if (!buf)
		goto out;
	ringnet__kv_msg__pack(&w, buf + WIRE_HEADER);
	*out = buf;
	*len = WIRE_HEADER + body;
	rc = 0;
out:
	free(ents);
	free(ep);
	free(kids);
	return rc;
}

static bool id_field(const ProtobufCBinaryData *d, rn_id *out)
{
	if (d->len != RN_ID_BYTES)
		return false;
	memcpy(out->b, d->data, RN_ID_BYTES);
	return true;
}

int wire_decode_kv(const uint8_t *body, size_t len, const wire_book *b, wire_kv *out)
{
	memset(out, 0, sizeof *out);
	Ringnet__KvMsg *w = ringnet__kv_msg__unpack(NULL, len, body);
	if (!w)
		return RN_EPROTO;
	out->pb = w;
	kv_msg *m = &out->m;
	if (w->type < KV_MSG_REQ || w->type > KV_MSG_LAST || w->op > KV_DEL ||
	    w->status > KV_CONFLICT || w->flags > 0xff ||
	    (w->n_hashes && w->n_hashes != KV_BUCKETS) || w->buckets.len > KV_BUCKETS ||
	    w->n_entries > KV_ENTRY_MAX || w->n_kids > KV_PULL_MAX || w->n_acked > 2 * KV_MAX_R)
		goto bad;
	m->type = (uint8_t)w->type;
	m->op = (uint8_t)w->op;
	m->status = (uint8_t)w->status;
	m->flags = (uint8_t)w->flags;
	m->req = w->req;
	m->round = w->round;
	if (w->cond) {
		m->has_cond = true;
		m->cond = (kv_version){w->cond->stamp, w->cond->writer, w->cond->tomb};
	}
	if (m->type == KV_MSG_REQ && (m->op < KV_PUT || !w->rec))
		goto bad;
	if (peer_in(w->from, b, &m->from) < 0 || m->from.addr == RING_ADDR_NONE)
		goto bad;
	if (w->rec) {
		Ringnet__KvRecord *r = w->rec;
		if (!id_field(&r->kid, &m->rec.kid) || r->key.len > KV_KEY_MAX ||
		    r->rid.len > KV_RID_MAX || !kv_hist_len_ok(r->hist.len))
			goto bad;
		if (r->key.len) { /* a key travels with its id: they must agree */
			rn_id h;
			rn_id_hash(&h, r->key.data, r->key.len, RN_ID_BITS);
			if (!rn_id_eq(&h, &m->rec.kid))
				goto bad;
		}
		if ((m->type == KV_MSG_REQ || m->type == KV_MSG_REPL) && !r->key.len)
			goto bad;
		m->has_rec = true;
		m->rec.key = r->key.data;
		m->rec.klen = r->key.len;
		m->rec.val = r->value.data;
		m->rec.vlen = r->value.len;
		m->rec.rid = r->rid.len ? r->rid.data : NULL;
		m->rec.ridlen = r->rid.len;
		m->rec.hist = r->hist.len ? r->hist.data : NULL;
		m->rec.histlen = r->hist.len;
		m->rec.v = (kv_version){r->stamp, r->writer, r->tomb};
	}
	if (m->type == KV_MSG_DIGEST || m->type == KV_MSG_KEYS ||
	    (m->type == KV_MSG_LEASE && m->status == KV_OK)) {
		if (!id_field(&w->lo, &m->lo) || !id_field(&w->hi, &m->hi))
			goto bad;
	}
	if (m->type == KV_MSG_DIGEST && w->n_hashes != KV_BUCKETS)
		goto bad;
	if (w->n_hashes) {
		out->hashes = malloc(KV_BUCKETS * sizeof *out->hashes);
		if (!out->hashes)
			goto bad;
		memcpy(out->hashes, w->hashes, KV_BUCKETS * sizeof *out->hashes);
		m->hashes = out->hashes;
	}
	for (size_t i = 0; i < w->buckets.len; i++)
		if (w->buckets.data[i] >= KV_BUCKETS)
			goto bad;
	m->buckets = w->buckets.len ? w->buckets.data : NULL;
	m->nbuckets = w->buckets.len;
	if (w->n_entries) {
		out->entries = malloc(w->n_entries * sizeof *out->entries);
		if (!out->entries)
			goto bad;
		for (size_t i = 0; i < w->n_entries; i++) {
			Ringnet__KvEntry *e = w->entries[i];
			if (!id_field(&e->kid, &out->entries[i].kid))
				goto bad;
			out->entries[i].v = (kv_version){e->stamp, e->writer, e->tomb};
		}
		m->entries = out->entries;
		m->nentries = w->n_entries;
	}
	if (w->n_kids) {
		out->kids = malloc(w->n_kids * sizeof *out->kids);
		if (!out->kids)
			goto bad;
		for (size_t i = 0; i < w->n_kids; i++)
			if (!id_field(&w->kids[i], &out->kids[i]))
				goto bad;
		m->kids = out->kids;
		m->nkids = w->n_kids;
	}
	if (w->n_acked) {
		out->acked = malloc(w->n_acked * sizeof *out->acked);
		if (!out->acked)
			goto bad;
		for (size_t i = 0; i < w->n_acked; i++)
			if (peer_in(w->acked[i], b, &out->acked[i]) < 0 ||
			    out->acked[i].addr == RING_ADDR_NONE)
				goto bad;
		m->acked = out->acked;
		m->nacked = w->n_acked;
	}
	return 0;
bad:
	wire_kv_free(out);
	return RN_EPROTO;
}

void wire_kv_free(wire_kv *w)
{
	if (w->pb)
		ringnet__kv_msg__free_unpacked(w->pb, NULL);
	free(w->entries);
	free(w->kids);
	free(w->acked);
	free(w->hashes);
	memset(w, 0, sizeof *w);
}

/* ---- WIRE_STATS ---- */

int wire_encode_stats(const wire_stats *m, const wire_book *book, uint8_t **out, size_t *len)
{
	const char *a = book->name(book->ctx, m->from);
	size_t alen = a ? strlen(a) : 0;
	if (!alen || alen >= WIRE_ADDR_MAX)
		return RN_EINVAL;
	size_t body = 1 + 16 + 1 + alen;
	uint8_t *b = wire_frame_alloc(body, WIRE_STATS);
	if (!b)
		return RN_ENOMEM;
	b[5] = m->kind;
	rn_put64(b + 6, m->keys);
	rn_put64(b + 14, m->bytes);
	b[22] = (uint8_t)alen;
	memcpy(b + 23, a, alen);
	*out = b;
	*len = WIRE_HEADER + body;
	return 0;
}

int wire_decode_stats(const uint8_t *body, size_t len, const wire_book *book, wire_stats *m)
{
	if (len < 18 || (body[0] != WIRE_STATS_ASK && body[0] != WIRE_STATS_TELL))
		return RN_EPROTO;
	size_t alen = body[17];
	if (!alen || alen >= WIRE_ADDR_MAX || len != 18 + alen || memchr(body + 18, 0, alen))
		return RN_EPROTO;
	char a[WIRE_ADDR_MAX];
	memcpy(a, body + 18, alen);
	a[alen] = '\0';
	m->kind = body[0];
	m->keys = rn_get64(body + 1);
	m->bytes = rn_get64(body + 9);
	m->from = book->intern(book->ctx, a);
	return m->from == RING_ADDR_NONE ? RN_ENOMEM : 0;
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
