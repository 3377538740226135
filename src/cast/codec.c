/* codec.c — cast messages as frame bodies (see cast.h). Big-endian integers; a name is
 * u8 length (1..CAST_NAME_MAX-1) and its bytes, none of them NUL. Every field is checked
 * against its bound before use: a malformed body is RN_EPROTO, never a crash. */
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "cast.h"

typedef struct {
	uint8_t *p;
} wr;

static void put8(wr *w, uint8_t v)
{
	*w->p++ = v;
}
static void put16(wr *w, uint16_t v)
{
	put8(w, (uint8_t)(v >> 8));
	put8(w, (uint8_t)v);
}
static void put32(wr *w, uint32_t v)
{
	put16(w, (uint16_t)(v >> 16));
	put16(w, (uint16_t)v);
}
static void put64(wr *w, uint64_t v)
{
	put32(w, (uint32_t)(v >> 32));
	put32(w, (uint32_t)v);
}
static void putb(wr *w, const void *b, size_t n)
{
	if (n)
		memcpy(w->p, b, n);
	w->p += n;
}
static void putname(wr *w, const char *s)
{
	size_t n = strnlen(s, CAST_NAME_MAX - 1);
	put8(w, (uint8_t)n);
	putb(w, s, n);
}

static size_t name_size(const char *s)
{
	return 1 + strnlen(s, CAST_NAME_MAX - 1);
}

size_t cast_encoded_size(const cast_msg *m)
{
	size_t n = 1 + 8;
	switch (m->type) {
	case CAST_MSG_NODES:
		n += 2;
		for (uint32_t i = 0; i < m->nknown; i++)
			n += name_size(m->known[i].name) + 1;
		break;
	case CAST_MSG_ANNOUNCE:
		n += name_size(m->info->name) + name_size(m->info->source) + 8 + 4 + 4 + 8 + 8 +
		     32 * (size_t)m->info->npieces + 2;
		for (uint32_t i = 0; i < m->info->ndests; i++)
			n += name_size(m->info->dests[i]);
		break;
	case CAST_MSG_BITFIELD:
		n += 4 + (m->nbits + 7) / 8;
		break;
	case CAST_MSG_HAVE:
	case CAST_MSG_LOST:
	case CAST_MSG_REQUEST:
	case CAST_MSG_CANCEL:
	case CAST_MSG_PENDING:
	case CAST_MSG_GIVEN:
		n += 2 + 4 * (size_t)m->npieces;
		break;
	case CAST_MSG_PIECE:
		n += 4 + 4 + m->len;
		break;
	case CAST_MSG_PROGRESS:
		n += 2;
		for (uint32_t i = 0; i < m->nprog; i++)
			n += name_size(m->prog[i].name) + 4 + 4 + 8;
		break;
	default:
		break;
	}
	return n;
}

void cast_encode(const cast_msg *m, uint8_t *out)
{
	wr w = {out};
	put8(&w, m->type);
	put64(&w, m->xfer);
	switch (m->type) {
	case CAST_MSG_NODES:
		put16(&w, (uint16_t)m->nknown);
		for (uint32_t i = 0; i < m->nknown; i++) {
			putname(&w, m->known[i].name);
			put8(&w, m->known[i].hops);
		}
		break;
	case CAST_MSG_ANNOUNCE: {
		const cast_info *x = m->info;
		putname(&w, x->name);
		putname(&w, x->source);
		put64(&w, x->size);
		put32(&w, x->piece_size);
		put32(&w, x->npieces);
		put64(&w, x->start_wall_ms);
		put64(&w, x->rate_cap);
		putb(&w, x->hashes, 32 * (size_t)x->npieces);
		put16(&w, (uint16_t)x->ndests);
		for (uint32_t i = 0; i < x->ndests; i++)
			putname(&w, x->dests[i]);
		break;
	}
	case CAST_MSG_BITFIELD:
		put32(&w, m->nbits);
		putb(&w, m->bits, (m->nbits + 7) / 8);
		break;
	case CAST_MSG_HAVE:
	case CAST_MSG_LOST:
	case CAST_MSG_REQUEST:
	case CAST_MSG_CANCEL:
	case CAST_MSG_PENDING:
	case CAST_MSG_GIVEN:
		put16(&w, (uint16_t)m->npieces);
		for (uint32_t i = 0; i < m->npieces; i++)
			put32(&w, m->pieces[i]);
		break;
	case CAST_MSG_PIECE:
		put32(&w, m->piece);
		put32(&w, m->len);
		putb(&w, m->data, m->len);
		break;
	case CAST_MSG_PROGRESS:
		put16(&w, (uint16_t)m->nprog);
		for (uint32_t i = 0; i < m->nprog; i++) {
			putname(&w, m->prog[i].name);
			put32(&w, m->prog[i].seq);
			put32(&w, m->prog[i].held);
			put64(&w, m->prog[i].done_ms);
		}
		break;
	default:
		break;
	}
}

void cast_piece_head(uint64_t xfer, uint32_t piece, uint32_t len, uint8_t *out)
{
	wr w = {out};
	put8(&w, CAST_MSG_PIECE);
	put64(&w, xfer);
	put32(&w, piece);
	put32(&w, len);
}

typedef struct {
	const uint8_t *p, *end;
	bool bad;
} rd;

static bool need(rd *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return false;
	}
	return true;
}
static uint64_t getn(rd *r, int bytes)
{
	if (!need(r, (size_t)bytes))
		return 0;
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v = v << 8 | *r->p++;
	return v;
}
static const uint8_t *getb(rd *r, size_t n)
{
	if (!need(r, n))
		return NULL;
	const uint8_t *b = r->p;
	r->p += n;
	return b;
}
static void getname(rd *r, char *out)
{
	size_t n = (size_t)getn(r, 1);
	const uint8_t *b = getb(r, n);
	if (!b || n == 0 || n >= CAST_NAME_MAX || memchr(b, 0, n)) {
		r->bad = true;
		out[0] = 0;
		return;
	}
	memcpy(out, b, n);
	out[n] = 0;
}

/* A list's count (u16, at most max) and room for it in *scratch; NULL when malformed. */
static void *get_list(rd *r, uint32_t max, size_t elem, uint32_t *n, void **scratch)
{
	*n = (uint32_t)getn(r, 2);
	void *a = *n <= max && !r->bad ? calloc(*n ? *n : 1, elem) : NULL;
	*scratch = a;
	return a;
}

int cast_decode(const uint8_t *body, size_t len, cast_msg *m, cast_info *info, void **scratch)
{
	rd r = {body, body + len, false};
	memset(m, 0, sizeof *m);
	*scratch = NULL;
	m->type = (uint8_t)getn(&r, 1);
	m->xfer = getn(&r, 8);
	switch (m->type) {
	case CAST_MSG_NODES: {
		uint32_t n;
		cast_known *k = get_list(&r, CAST_MAX_NODES, sizeof *k, &n, scratch);
		if (!k)
			return RN_EPROTO;
		for (uint32_t i = 0; i < n && !r.bad; i++) {
			getname(&r, k[i].name);
			k[i].hops = (uint8_t)getn(&r, 1);
		}
		m->known = k;
		m->nknown = n;
		break;
	}
	case CAST_MSG_ANNOUNCE: {
		memset(info, 0, sizeof *info);
		info->xfer = m->xfer;
		getname(&r, info->name);
		getname(&r, info->source);
		info->size = getn(&r, 8);
		info->piece_size = (uint32_t)getn(&r, 4);
		info->npieces = (uint32_t)getn(&r, 4);
		info->start_wall_ms = getn(&r, 8);
		info->rate_cap = getn(&r, 8);
		if (r.bad || info->piece_size < CAST_PIECE_MIN ||
		    info->piece_size > CAST_PIECE_MAX || info->npieces == 0 ||
		    info->npieces > CAST_MAX_PIECES ||
		    info->npieces != (info->size + info->piece_size - 1) / info->piece_size)
			return RN_EPROTO;
		info->hashes = getb(&r, 32 * (size_t)info->npieces);
		uint32_t nd;
		char(*d)[CAST_NAME_MAX] = get_list(&r, CAST_MAX_DESTS, CAST_NAME_MAX, &nd, scratch);
		if (!d)
			return RN_EPROTO;
		for (uint32_t i = 0; i < nd && !r.bad; i++)
			getname(&r, d[i]);
		info->dests = (const char(*)[CAST_NAME_MAX])d;
		info->ndests = nd;
		m->info = info;
		break;
	}
	case CAST_MSG_BITFIELD:
		m->nbits = (uint32_t)getn(&r, 4);
		if (m->nbits > CAST_MAX_PIECES)
			return RN_EPROTO;
		m->bits = getb(&r, (m->nbits + 7) / 8);
		break;
	case CAST_MSG_HAVE:
	case CAST_MSG_LOST:
	case CAST_MSG_REQUEST:
	case CAST_MSG_CANCEL:
	case CAST_MSG_PENDING:
	case CAST_MSG_GIVEN: {
		uint32_t n;
		uint32_t *p = get_list(&r, CAST_BATCH_MAX, sizeof *p, &n, scratch);
		if (!p)
			return RN_EPROTO;
		for (uint32_t i = 0; i < n; i++)
			p[i] = (uint32_t)getn(&r, 4);
		m->pieces = p;
		m->npieces = n;
		break;
	}
	case CAST_MSG_PIECE:
		m->piece = (uint32_t)getn(&r, 4);
		m->len = (uint32_t)getn(&r, 4);
		if (m->len == 0 || m->len > CAST_PIECE_MAX)
			return RN_EPROTO;
		m->data = getb(&r, m->len);
		break;
	case CAST_MSG_PROGRESS: {
		uint32_t n;
		cast_prog *p = get_list(&r, CAST_MAX_NODES, sizeof *p, &n, scratch);
		if (!p)
			return RN_EPROTO;
		for (uint32_t i = 0; i < n && !r.bad; i++) {
			getname(&r, p[i].name);
			p[i].seq = (uint32_t)getn(&r, 4);
			p[i].held = (uint32_t)getn(&r, 4);
			p[i].done_ms = getn(&r, 8);
		}
		m->prog = p;
		m->nprog = n;
		break;
	}
	case CAST_MSG_PING:
		break;
	default:
		return RN_EPROTO;
	}
	if (r.bad || r.p != r.end)
		return RN_EPROTO;
	return 0;
}
