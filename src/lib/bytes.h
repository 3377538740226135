/* bytes.h — integers in byte buffers, big-endian: the byte order of every format ringnet
 * writes (records at rest, peer frames, the store's log). */
#ifndef RN_BYTES_H
#define RN_BYTES_H

#include <stdint.h>
#include <string.h>

static inline void rn_put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline void rn_put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint32_t rn_get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static inline uint64_t rn_get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8); /* one load */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

#endif
