/* qwire.c — the body of a WIRE_QUERY frame: a fixed big-endian layout, records as raw
 * 34-byte rows (bulk data, so no protobuf). Every field is checked on decode: a length
 * that does not match, a record count over Q_MAX_RECORDS or a type out of range is
 * RN_EPROTO, never a crash. */
#include <string.h>

#include "../lib/err.h"
#include "query.h"

/* type, from, to, req */
#define HDR 11
/* param, vmin, vmax, t_from, t_to, 4 box edges, limit, count_to, slices */
#define REQ_BODY (1 + 8 + 8 + 4 + 4 + 32 + 4 + 4 + 8)
/* status, matched, missing, hops, nrec */
#define RESP_BODY (1 + 4 + 8 + 4 + 4)

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
		*p++ = (uint8_t)(v >> (i * 8));
	return p;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--)
		*p++ = (uint8_t)(v >> (i * 8));
	return p;
}

static uint8_t *putd(uint8_t *p, double d)
{
	uint64_t v;
	memcpy(&v, &d, 8);
	return put64(p, v);
}

static uint64_t get64(const uint8_t **p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | *(*p)++;
	return v;
}

static uint32_t get32(const uint8_t **p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = v << 8 | *(*p)++;
	return v;
}

static double getd(const uint8_t **p)
{
	uint64_t v = get64(p);
	double d;
	memcpy(&d, &v, 8);
	return d;
}

size_t q_wire_size(const q_msg *m)
{
	switch (m->type) {
	case Q_MSG_REQ:
		return HDR + REQ_BODY;
	case Q_MSG_RESP:
		return HDR + RESP_BODY + (size_t)m->nrec * Q_WIRE_REC;
	default:
		return HDR;
	}
}

void q_wire_encode(const q_msg *m, uint8_t *buf)
{
	uint8_t *p = buf;
	*p++ = m->type;
	*p++ = m->from;
	*p++ = m->to;
	p = put64(p, m->req);
	if (m->type == Q_MSG_REQ) {
		*p++ = m->f.param;
		p = putd(p, m->f.vmin);
		p = putd(p, m->f.vmax);
		p = put32(p, (uint32_t)m->f.t_from);
		p = put32(p, (uint32_t)m->f.t_to);
		p = putd(p, m->f.lat_min);
		p = putd(p, m->f.lat_max);
		p = putd(p, m->f.lon_min);
		p = putd(p, m->f.lon_max);
		p = put32(p, m->limit);
		p = put32(p, m->count_to);
		p = put64(p, m->slices);
	} else if (m->type == Q_MSG_RESP) {
		*p++ = m->status;
		p = put32(p, m->matched);
		p = put64(p, m->missing);
		p = put32(p, m->hops);
		p = put32(p, m->nrec);
		for (uint32_t i = 0; i < m->nrec; i++) {
			const q_rec *r = &m->recs[i];
			p = putd(p, r->lat);
			p = putd(p, r->lon);
			p = putd(p, r->value);
			p = put32(p, (uint32_t)r->minute);
			*p++ = (uint8_t)((uint16_t)r->aqi >> 8);
			*p++ = (uint8_t)r->aqi;
			*p++ = r->param;
			*p++ = r->lat_s;
			*p++ = r->lon_s;
			*p++ = r->val_s;
		}
	}
}

int q_wire_decode(const uint8_t *buf, size_t len, q_msg *m, q_rec *recs)
{
	memset(m, 0, sizeof *m);
	if (len < HDR)
		return RN_EPROTO;
	const uint8_t *p = buf;
	m->type = *p++;
	m->from = *p++;
	m->to = *p++;
	m->req = get64(&p);
	if (m->from >= Q_MAX_PROCS || m->to >= Q_MAX_PROCS)
		return RN_EPROTO;
	switch (m->type) {
	case Q_MSG_HB:
		return len == HDR ? 0 : RN_EPROTO;
	case Q_MSG_REQ:
		if (len != HDR + REQ_BODY)
			return RN_EPROTO;
		m->f.param = *p++;
		m->f.vmin = getd(&p);
		m->f.vmax = getd(&p);
		m->f.t_from = (int32_t)get32(&p);
		m->f.t_to = (int32_t)get32(&p);
		m->f.lat_min = getd(&p);
		m->f.lat_max = getd(&p);
		m->f.lon_min = getd(&p);
		m->f.lon_max = getd(&p);
		m->limit = get32(&p);
		m->count_to = get32(&p);
		m->slices = get64(&p);
		if (m->f.param >= Q_NPARAMS || m->limit > Q_MAX_RECORDS)
			return RN_EPROTO;
		return 0;
	case Q_MSG_RESP:
		if (len < HDR + RESP_BODY)
			return RN_EPROTO;
		m->status = *p++;
		m->matched = get32(&p);
		m->missing = get64(&p);
		m->hops = get32(&p);
		m->nrec = get32(&p);
		if (m->status > Q_ST_BUSY || m->nrec > Q_MAX_RECORDS ||
		    len != HDR + RESP_BODY + (size_t)m->nrec * Q_WIRE_REC)
			return RN_EPROTO;
		for (uint32_t i = 0; i < m->nrec; i++) {
			q_rec *r = &recs[i];
			r->lat = getd(&p);
			r->lon = getd(&p);
			r->value = getd(&p);
			r->minute = (int32_t)get32(&p);
			r->aqi = (int16_t)(uint16_t)(p[0] << 8 | p[1]);
			p += 2;
			r->param = *p++;
			r->lat_s = *p++;
			r->lon_s = *p++;
			r->val_s = *p++;
			if (r->param >= Q_NPARAMS)
				return RN_EPROTO;
		}
		m->recs = recs;
		return 0;
	default:
		return RN_EPROTO;
	}
}
