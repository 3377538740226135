/* wire.h — the peer protocol's frames and the codec for ring messages.
 *
 * A frame is u32 length (big-endian, type + body) | u8 type | body. Ring messages are
 * protobuf (proto/ringnet.proto). On the wire a peer is its ring id and the "host:port"
 * it listens on; inside a node it is a ring_addr handle, so the codec maps between the
 * two through the node's address book. Every decoded field is checked before use: a
 * malformed frame is an error for that connection, never a crash. */
#ifndef RN_WIRE_H
#define RN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "../kv/kv.h"
#include "../ring/ring.h"

#define WIRE_HEADER    5
#define WIRE_MAX_FRAME ((1u << 20) + (1u << 16)) /* a 1 MiB value and its record fit */
#define WIRE_ADDR_MAX  64                        /* "host:port", NUL included */

enum { WIRE_RING = 1, WIRE_KV = 2, WIRE_CAST = 3 /* src/net/cast.c */ };
enum { WIRE_QUERY = 5 };  /* query service frames: body as src/query/qwire.c says */
#define WIRE_STATS 16     /* the dashboard's ask / tell of a node's keys and bytes (api.c) */
enum { WIRE_MEMBER = 4 }; /* proto/member.proto, src/net/member.c */
enum { WIRE_IDENT = 6 };  /* a node's certificate and signature (src/net/peer_ident.c) */

/* How the codec turns handles into addresses and back. */
typedef struct {
	/* the "host:port" of handle a, or NULL */
	const char *(*name)(void *ctx, ring_addr a);
	/* the handle for "host:port" (learned if new), or RING_ADDR_NONE when the book is full */
	ring_addr (*intern)(void *ctx, const char *addr);
	void *ctx;
} wire_book;

/* Encodes m as one whole frame into a new buffer (*out, *len); the caller frees it.
 * 0 or a negative RN_E* code. */
int wire_encode_ring(const ring_msg *m, const wire_book *book, uint8_t **out, size_t *len);

/* Decodes the body of a WIRE_RING frame into m; peers go to peers[] (RING_MAX_SUCC).
 * 0, or RN_EPROTO for anything malformed. */
int wire_decode_ring(const uint8_t *body, size_t len, const wire_book *book, ring_msg *m,
                     ring_peer *peers);

/* A decoded WIRE_KV frame: m points into the rest, which wire_kv_free releases. */
typedef struct {
	kv_msg m;
	void *pb;
	kv_entry *entries;
	rn_id *kids;
	ring_peer *acked;
	uint64_t *hashes;
} wire_kv;

/* Encodes m as one whole WIRE_KV frame (the caller frees *out); RN_EINVAL when it does
 * not fit in a frame. */
int wire_encode_kv(const kv_msg *m, const wire_book *book, uint8_t **out, size_t *len);
/* Decodes a WIRE_KV body; RN_EPROTO for anything malformed: a field out of range, a list
 * over its bound, or a key whose id is not SHA-1 of it. */
int wire_decode_kv(const uint8_t *body, size_t len, const wire_book *book, wire_kv *out);
void wire_kv_free(wire_kv *w);

/* A WIRE_STATS frame: u8 kind | u64 keys | u64 bytes (big-endian) | u8 n | n bytes of the
 * sender's "host:port". An ask wants a tell back at that address; a tell answers one. */
enum { WIRE_STATS_ASK = 1, WIRE_STATS_TELL = 2 };
typedef struct {
	uint8_t kind;
	uint64_t keys, bytes;
	ring_addr from;
} wire_stats;
int wire_encode_stats(const wire_stats *m, const wire_book *book, uint8_t **out, size_t *len);
/* RN_EPROTO for anything malformed; RN_ENOMEM when the address book is full. */
int wire_decode_stats(const uint8_t *body, size_t len, const wire_book *book, wire_stats *m);
/* A buffer for a frame of type with a body of that many bytes, its header written; the
 * caller fills the body (from WIRE_HEADER on) and frees it. NULL when out of memory. */
uint8_t *wire_frame_alloc(size_t body, uint8_t type);

/* Reads a frame header: 0 and the body length and type, RN_EPROTO if the length is zero
 * or over WIRE_MAX_FRAME. */
int wire_header(const uint8_t hdr[WIRE_HEADER], uint32_t *body_len, uint8_t *type);

#endif
