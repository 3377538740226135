/* members.h — the kv core's member table (internal to src/kv): the ring ids and addresses
 * of the nodes a node believes alive, sorted by id, for one-hop routing. Updates are
 * incremental (a binary search and one memmove), lookups a binary search. An entry that
 * went down stays as a tombstone, so that a stale hint cannot bring a dead node back; only
 * the member feed (or a hint about an id never seen) makes an entry up. Tombstones are
 * dropped all at once when they pass an eighth of the live entries (and 64): a hint that
 * then names a dead node again costs one failed send, after which it is down again. */
#ifndef RN_KV_MEMBERS_H
#define RN_KV_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../ring/ring.h"

enum { KVM_FEED = 1, KVM_HINT = 2 }; /* who said it is up: the member feed, or a hint */

typedef struct {
	ring_peer p;
	uint8_t up;  /* in routing */
	uint8_t src; /* KVM_FEED or KVM_HINT */
} kvm_entry;

typedef struct {
	kvm_entry *e; /* sorted by p.id */
	size_t n, cap, nup;
	size_t max; /* entries at most (tombstones are purged first when full) */
} kvm_table;

void kvm_init(kvm_table *t, size_t max);
void kvm_free(kvm_table *t);
/* The index of the entry with this id, or t->n. */
size_t kvm_find(const kvm_table *t, const rn_id *id);
/* p is up (its address may have changed). A hint (src KVM_HINT) only adds an id the table
 * has never held: it never raises a tombstone. 1 changed, 0 not, RN_ENOMEM, or
 * RN_EINVAL when the table is full of up entries. */
int kvm_up(kvm_table *t, ring_peer p, uint8_t src);
/* The entry is down (a tombstone). 1 changed, 0 not. */
int kvm_down(kvm_table *t, const rn_id *id);
/* Up to max up entries at or after pos, in ring order (wrapping), none with id *skip
 * (may be NULL). Returns how many. */
size_t kvm_succ(const kvm_table *t, const rn_id *pos, const rn_id *skip, ring_peer *out,
                size_t max);

#endif
