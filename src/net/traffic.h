/* traffic.h — what the dashboard's charts and /metrics show of a node's peer traffic:
 * messages and bytes by type and direction, in totals and in a short history of
 * fixed-length samples (a ring buffer of the last TR_SLOTS of them). Pure: no clock, no
 * I/O; the driver counts each message (traffic_count) and takes a sample when
 * traffic_due says so, passing the time (ms on a clock that does not jump). */
#ifndef RN_TRAFFIC_H
#define RN_TRAFFIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR_SLOTS     180  /* samples kept: three minutes at the default interval */
#define TR_INTERVAL  1000 /* ms between samples */
#define TR_RING_BASE 0    /* ring message type t (1..8) counts as TR_RING_BASE + t - 1 */
#define TR_KV_BASE   8    /* key-value message type t (1..12) as TR_KV_BASE + t - 1 */
#define TR_TYPES     20

enum { TR_IN, TR_OUT };

/* The type index of ring message type t and of key-value message type t; TR_TYPES (not
 * counted) for a type out of range. */
static inline unsigned traffic_ring_type(unsigned t)
{
	return t >= 1 && t <= 8 ? TR_RING_BASE + t - 1 : TR_TYPES;
}
static inline unsigned traffic_kv_type(unsigned t)
{
	return t >= 1 && t <= 12 ? TR_KV_BASE + t - 1 : TR_TYPES;
}

/* One sample: what was counted between two traffic_sample calls, and how long that was. */
typedef struct {
	uint64_t at; /* when it was taken */
	uint32_t ms; /* how long it covers (the interval, or longer when the driver was late) */
	uint32_t msgs[2][TR_TYPES];
	uint64_t bytes[2][TR_TYPES];
} tr_sample;

typedef struct {
	uint64_t msgs[2][TR_TYPES], bytes[2][TR_TYPES]; /* totals since start */
	uint64_t last_msgs[2][TR_TYPES], last_bytes[2][TR_TYPES];
	uint64_t last_at; /* when the last sample was taken (or traffic_init) */
	uint64_t seq;     /* samples taken so far; sample k sits at hist[k % TR_SLOTS] */
	tr_sample hist[TR_SLOTS];
} traffic;

/* The name of a type index ("find_succ", "kv_req", ...), NULL past TR_TYPES. */
const char *traffic_type_name(unsigned type);
void traffic_init(traffic *t, uint64_t now);
/* Counts one message of a type index, in or out, of `bytes` bytes on the wire. */
void traffic_count(traffic *t, unsigned type, int dir, size_t bytes);
bool traffic_due(const traffic *t, uint64_t now);
/* Closes the current sample at now. */
void traffic_sample(traffic *t, uint64_t now);
/* The oldest sample still kept whose number is >= since (for a client that has the ones
 * before); the samples from there to t->seq - 1 are kept. */
uint64_t traffic_first(const traffic *t, uint64_t since);
const tr_sample *traffic_get(const traffic *t, uint64_t k);

#endif
