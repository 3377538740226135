/* traffic.c — see traffic.h. */
#include "traffic.h"

#include <string.h>

static const char *const names[TR_TYPES] = {
    "find_succ", "found",   "get_pred", "pred_reply", "notify",       "ping",    "pong",
    "leave",     "kv_req",  "kv_resp",  "kv_repl",    "kv_ack",       "kv_read", "kv_read_ans",
    "kv_digest", "kv_keys", "kv_pull",  "kv_purge",   "kv_lease_req", "kv_lease"};

const char *traffic_type_name(unsigned type)
{
	return type < TR_TYPES ? names[type] : NULL;
}

void traffic_init(traffic *t, uint64_t now)
{
	memset(t, 0, sizeof *t);
	t->last_at = now;
}

void traffic_count(traffic *t, unsigned type, int dir, size_t bytes)
{
	if (type >= TR_TYPES || (dir != TR_IN && dir != TR_OUT))
		return;
	t->msgs[dir][type]++;
	t->bytes[dir][type] += bytes;
}

bool traffic_due(const traffic *t, uint64_t now)
{
	return now >= t->last_at + TR_INTERVAL;
}

void traffic_sample(traffic *t, uint64_t now)
{
	tr_sample *s = &t->hist[t->seq % TR_SLOTS];
	s->at = now;
	uint64_t ms = now > t->last_at ? now - t->last_at : 0;
	s->ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
	for (int d = 0; d < 2; d++)
		for (unsigned k = 0; k < TR_TYPES; k++) {
			uint64_t m = t->msgs[d][k] - t->last_msgs[d][k];
			s->msgs[d][k] = m > UINT32_MAX ? UINT32_MAX : (uint32_t)m;
			s->bytes[d][k] = t->bytes[d][k] - t->last_bytes[d][k];
			t->last_msgs[d][k] = t->msgs[d][k];
			t->last_bytes[d][k] = t->bytes[d][k];
		}
	t->last_at = now;
	t->seq++;
}

uint64_t traffic_first(const traffic *t, uint64_t since)
{
	uint64_t oldest = t->seq > TR_SLOTS ? t->seq - TR_SLOTS : 0;
	if (since > t->seq)
		since = t->seq;
	return since < oldest ? oldest : since;
}

const tr_sample *traffic_get(const traffic *t, uint64_t k)
{
	if (k >= t->seq || k < traffic_first(t, 0))
		return NULL;
	return &t->hist[k % TR_SLOTS];
}
