/* fuzz_wire.c — libFuzzer target for the peer protocol's frame decoders (ring and KV): any bytes a
 * peer can send, cut into frames and decoded exactly as a node does. It must never
 * crash, leak or read out of bounds; malformed input is an error return. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "net/wire.h"

typedef struct {
	char names[64][WIRE_ADDR_MAX];
	unsigned n;
} book_t;

static const char *name(void *ctx, ring_addr a)
{
	book_t *b = ctx;
	return a < b->n ? b->names[a] : NULL;
}

static ring_addr intern(void *ctx, const char *addr)
{
	book_t *b = ctx;
	for (unsigned i = 0; i < b->n; i++)
		if (!strcmp(b->names[i], addr))
			return i;
	if (b->n == 64)
		return RING_ADDR_NONE;
	snprintf(b->names[b->n], WIRE_ADDR_MAX, "%s", addr);
	return b->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	book_t b = {.n = 0};
	wire_book book = {name, intern, &b};
	size_t off = 0;
	while (size - off >= WIRE_HEADER) {
		uint32_t blen;
		uint8_t type;
		if (wire_header(data + off, &blen, &type) < 0 ||
		    (type != WIRE_RING && type != WIRE_KV && type != WIRE_STATS))
			return 0;
		if (size - off - WIRE_HEADER < blen)
			return 0;
		if (type ==
		    WIRE_STATS) { /* the dashboard's: decodes to what encodes back the same */
			wire_stats st;
			if (wire_decode_stats(data + off + WIRE_HEADER, blen, &book, &st) == 0) {
				uint8_t *out;
				size_t len;
				if (wire_encode_stats(&st, &book, &out, &len) == 0) {
					if (len != WIRE_HEADER + blen ||
					    memcmp(out, data + off, WIRE_HEADER + blen) != 0)
						abort();
					free(out);
				}
			}
			off += WIRE_HEADER + blen;
			continue;
		}
		if (type == WIRE_KV) {
			wire_kv kv;
			if (wire_decode_kv(data + off + WIRE_HEADER, blen, &book, &kv) == 0) {
				uint8_t *out;
				size_t len;
				if (wire_encode_kv(&kv.m, &book, &out, &len) == 0)
					free(out);
				wire_kv_free(&kv);
			}
			off += WIRE_HEADER + blen;
			continue;
		}
		ring_msg m;
		ring_peer peers[RING_MAX_SUCC];
		if (wire_decode_ring(data + off + WIRE_HEADER, blen, &book, &m, peers) == 0) {
			/* what decodes must encode again */
			uint8_t *out;
			size_t len;
			if (wire_encode_ring(&m, &book, &out, &len) == 0)
				free(out);
		}
		off += WIRE_HEADER + blen;
	}
	return 0;
}
