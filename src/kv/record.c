/* record.c — a record at rest (see kv.h): the bytes a store keeps under a key id.
 *
 *   u8 magic 'K' | u8 format 2 | u8 flags (bit 0: tombstone) | u64 stamp | u64 writer
 *   | u16 key length | u8 request-id length | u8 history length | key | request id
 *   | history (kv_record.hist) | value
 *
 * Integers are big-endian. The value runs to the end, so it is stored as the client sent
 * it, byte for byte. Format 1 (stores written before the history) is the same without
 * the history length and the history; it is still read. */
#include <string.h>

#include "../lib/bytes.h"
#include "../lib/err.h"
#include "kv.h"

#define REC_MAGIC  'K'
#define REC_FORMAT 2
#define REC_HEAD1  (3 + 8 + 8 + 2 + 1) /* format 1 */
#define REC_HEAD   (REC_HEAD1 + 1)

size_t kv_record_size(const kv_record *r)
{
	return REC_HEAD + r->klen + r->ridlen + r->histlen + r->vlen;
}

void kv_record_encode(const kv_record *r, uint8_t *out)
{
	out[0] = REC_MAGIC;
	out[1] = REC_FORMAT;
	out[2] = r->v.tomb ? 1 : 0;
	rn_put64(out + 3, r->v.stamp);
	rn_put64(out + 11, r->v.writer);
	out[19] = (uint8_t)(r->klen >> 8);
	out[20] = (uint8_t)r->klen;
	out[21] = (uint8_t)r->ridlen;
	out[22] = (uint8_t)r->histlen;
	uint8_t *p = out + REC_HEAD;
	if (r->klen)
		memcpy(p, r->key, r->klen);
	p += r->klen;
	if (r->ridlen)
		memcpy(p, r->rid, r->ridlen);
	p += r->ridlen;
	if (r->histlen)
		memcpy(p, r->hist, r->histlen);
	p += r->histlen;
	if (r->vlen)
		memcpy(p, r->val, r->vlen);
}

int kv_record_decode(const uint8_t *buf, size_t len, const rn_id *kid, kv_record *r)
{
	if (len < REC_HEAD1 || buf[0] != REC_MAGIC || (buf[1] != 1 && buf[1] != REC_FORMAT) ||
	    buf[2] > 1)
		return RN_EPROTO;
	size_t head = buf[1] == 1 ? REC_HEAD1 : REC_HEAD;
	if (len < head)
		return RN_EPROTO;
	size_t klen = (size_t)buf[19] << 8 | buf[20], ridlen = buf[21];
	size_t histlen = head == REC_HEAD ? buf[22] : 0;
	if (klen > KV_KEY_MAX || ridlen > KV_RID_MAX || !kv_hist_len_ok(histlen) ||
	    head + klen + ridlen + histlen > len)
		return RN_EPROTO;
	memset(r, 0, sizeof *r);
	r->kid = *kid;
	r->v.tomb = buf[2] == 1;
	r->v.stamp = rn_get64(buf + 3);
	r->v.writer = rn_get64(buf + 11);
	const uint8_t *p = buf + head;
	r->key = p;
	r->klen = klen;
	p += klen;
	r->rid = ridlen ? p : NULL;
	r->ridlen = ridlen;
	p += ridlen;
	r->hist = histlen ? p : NULL;
	r->histlen = histlen;
	p += histlen;
	r->val = p;
	r->vlen = len - (size_t)(p - buf);
	return 0;
}
