/* members.c — the kv core's member table (see members.h). */
#include "members.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/grow.h"

void kvm_init(kvm_table *t, size_t max)
{
	memset(t, 0, sizeof *t);
	t->max = max;
}

void kvm_free(kvm_table *t)
{
	free(t->e);
	memset(t, 0, sizeof *t);
}

/* The first index whose id is >= pos (t->n when none). */
static size_t lower(const kvm_table *t, const rn_id *pos)
{
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (rn_id_cmp(&t->e[mid].p.id, pos) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t kvm_find(const kvm_table *t, const rn_id *id)
{
	size_t i = lower(t, id);
	return i < t->n && rn_id_eq(&t->e[i].p.id, id) ? i : t->n;
}

/* Drops every tombstone (the table is full). */
static void purge(kvm_table *t)
{
	size_t w = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].up)
			t->e[w++] = t->e[i];
	t->n = w;
}

int kvm_up(kvm_table *t, ring_peer p, uint8_t src)
{
	if (p.addr == RING_ADDR_NONE)
		return 0;
	size_t i = lower(t, &p.id);
	if (i < t->n && rn_id_eq(&t->e[i].p.id, &p.id)) {
		kvm_entry *e = &t->e[i];
		if (src == KVM_HINT)
			return 0; /* a hint never raises a tombstone nor moves a known member */
		bool changed = !e->up || e->p.addr != p.addr || e->src != src;
		t->nup += !e->up;
		*e = (kvm_entry){p, 1, src};
		return changed;
	}
	if (t->n >= t->max) {
		purge(t);
		if (t->n >= t->max)
			return RN_EINVAL;
		i = lower(t, &p.id);
	}
	if (rn_grow((void **)&t->e, &t->cap, t->n + 1, sizeof *t->e, 64) < 0)
		return RN_ENOMEM;
	memmove(&t->e[i + 1], &t->e[i], (t->n - i) * sizeof *t->e);
	t->e[i] = (kvm_entry){p, 1, src};
	t->n++;
	t->nup++;
	return 1;
}

int kvm_down(kvm_table *t, const rn_id *id)
{
	size_t i = kvm_find(t, id);
	if (i == t->n || !t->e[i].up)
		return 0;
	t->e[i].up = 0;
	t->nup--;
	size_t dead = t->n - t->nup;
	if (dead > 64 && dead > t->nup / 8)
		purge(t); /* the oldest news is old enough: keep lookups and inserts short */
	return 1;
}

size_t kvm_succ(const kvm_table *t, const rn_id *pos, const rn_id *skip, ring_peer *out, size_t max)
{
	size_t got = 0;
	if (!t->n)
		return 0;
	size_t s = lower(t, pos);
	for (size_t k = 0; k < t->n && got < max; k++) {
		const kvm_entry *e = &t->e[(s + k) % t->n];
		if (e->up && !(skip && rn_id_eq(&e->p.id, skip)))
			out[got++] = e->p;
	}
	return got;
}
