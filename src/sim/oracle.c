/* oracle.c — the oracle: the live nodes sorted by id, against which answers and ring
 * state are checked. See sim_internal.h. */
#include <string.h>

#include "sim_internal.h"

/* index in live[] of the first id >= key (wrapping to 0). Ids are uniformly random, so
 * the key's share of the id space is a good guess at its position; gallop from there. */
int peer_cmp(const void *a, const void *b)
{
	return rn_id_cmp(&((const ring_peer *)a)->id, &((const ring_peer *)b)->id);
}

uint32_t live_lower(const sim *s, const rn_id *key)
{
	uint32_t n = s->nlive;
	if (n == 0)
		return 0;
	uint32_t g = live_guess(s, key), lo, hi;
	if (rn_id_cmp(&s->live[g].id, key) < 0) {
		uint32_t a = g, b = g + 1, step = 1;
		while (b < n && rn_id_cmp(&s->live[b].id, key) < 0) {
			a = b;
			step *= 2;
			b = a + step > n ? n : a + step;
		}
		lo = a + 1;
		hi = b;
	} else {
		uint32_t b = g, step = 1;
		lo = 0;
		while (b > 0) {
			uint32_t a = b > step ? b - step : 0;
			if (rn_id_cmp(&s->live[a].id, key) < 0) {
				lo = a + 1;
				break;
			}
			b = a;
			step *= 2;
		}
		hi = b;
	}
	/* live[lo-1] < key <= live[hi] (hi may be n): binary search in between */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (rn_id_cmp(&s->live[mid].id, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == n ? 0 : lo;
}

const ring_peer *true_succ(const sim *s, const rn_id *key)
{
	return &s->live[live_lower(s, key)];
}

void live_insert(sim *s, const ring_peer *p)
{
	uint32_t i = s->nlive ? live_lower(s, &p->id) : 0;
	if (s->nlive && i == 0 && rn_id_cmp(&s->live[0].id, &p->id) < 0)
		i = s->nlive;
	memmove(&s->live[i + 1], &s->live[i], (s->nlive - i) * sizeof *s->live);
	s->live[i] = *p;
	s->nlive++;
	s->rank_ok = false;
}

void live_remove(sim *s, const ring_peer *p)
{
	uint32_t i = live_lower(s, &p->id);
	if (s->nlive && s->live[i].addr == p->addr) {
		memmove(&s->live[i], &s->live[i + 1], (s->nlive - i - 1) * sizeof *s->live);
		s->nlive--;
		s->rank_ok = false;
	}
}

bool id_taken(const sim *s, const rn_id *id)
{
	for (uint32_t k = 0; k < s->njoining; k++)
		if (rn_id_eq(ring_self_id(NODE(s, s->joining[k])), id))
			return true;
	if (!s->nlive)
		return false;
	return rn_id_eq(&s->live[live_lower(s, id)].id, id);
}

bool ring_correct(sim *s)
{
	for (uint32_t k = 0; k < s->nlive; k++) {
		uint32_t i = s->live[k].addr;
		ring_node *nd = NODE(s, i);
		if (!ring_joined(nd))
			return false;
		const ring_peer *ts = &s->live[(k + 1) % s->nlive];
		const ring_peer *tp = &s->live[(k + s->nlive - 1) % s->nlive];
		ring_peer succ = ring_successor(nd), pred = ring_predecessor(nd);
		if (s->nlive > 1 && (succ.addr != ts->addr || pred.addr != tp->addr))
			return false;
	}
	for (uint32_t k = 0; k < s->nlive; k++) {
		ring_node *nd = NODE(s, s->live[k].addr);
		for (unsigned i = 0; i < s->cfg.bits;) {
			rn_id start;
			ring_finger_start(nd, i, &start);
			const ring_peer *f = true_succ(s, &start);
			unsigned j = ring_finger_span(nd, i, &f->id);
			/* fingers [i, j) must all be f: check both ends of the span */
			ring_peer a = ring_finger(nd, i), b = ring_finger(nd, j - 1);
			bool self = f->addr == (uint32_t)s->live[k].addr;
			if (!self && (a.addr != f->addr || b.addr != f->addr))
				return false;
			i = j;
		}
	}
	return true;
}
