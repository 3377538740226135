/* cast.h — the swarm broadcast core: one file to many nodes, piece by piece (sans-IO).
 *
 * One cast_node per ring node. It learns its neighbours from the links its driver opened
 * or accepted (cast_link_up / cast_link_down), never from ring routing, so it works where
 * the ring cannot form: on a chain of hosts that only reach the next one, data crosses
 * every host as a relay. Nodes tell their neighbours which node names they know (with a
 * hop count), so a source knows every node reachable through relays ("--to all"), and
 * each node's progress is flooded back the same way (cast_status at the source).
 *
 * A transfer (cast_start at the source) is announced with its name, size, piece size and
 * the SHA-256 of every piece. Every node that learns it fetches every piece from its
 * neighbours and relays each piece as soon as it holds it verified:
 * - bitfields on a new link, HAVE when a piece is held, LOST when a piece held turns out
 *   corrupt (it is fetched again);
 * - receivers pull: each link has a window of outstanding REQUESTs sized from the rate
 *   measured on it (the application's own throughput and the driver's TCP_INFO rtt), so a
 *   fast link keeps more pieces in flight and a slow or dead one fewer; a request that
 *   makes no progress for long is cancelled and asked elsewhere;
 * - no piece is requested from two neighbours at once, except in the end-game, where a
 *   missing piece may have at most CAST_ENDGAME requesters; the first copy cancels the
 *   rest;
 * - rarest first among the pieces a neighbour offers (fewest neighbours holding it or
 *   about to: a node tells its neighbours which pieces it asked for, PENDING, so two
 *   neighbours do not both fetch the same piece from a common source; and a sender tells
 *   its other links the first time it takes a request for a piece, GIVEN, so that two
 *   receivers that cannot see each other's PENDING, both linked to the source, do not
 *   both spend the source's upload on it), ties broken at random by the core's own
 *   seeded generator;
 * - a sender serves the pieces it never sent before the ones it did, within a link's
 *   requests: a copy already out is the one a receiver can also get elsewhere (and
 *   often does: its CANCEL then spares the sender's upload);
 * - a sender serves the requests of its links in order of their measured rate (faster
 *   receivers first, so they become seeders sooner), each link at most CAST_SEND_AHEAD
 *   pieces ahead of what the driver has written; both directions of every link carry data
 *   since every node requests from every neighbour.
 *
 * ---- Provided by the driver (cast_driver) ----
 * - send: deliver a cast_msg on a link (encode or copy before returning; a link that
 *   fails is reported with cast_link_down, never from inside send).
 * - send_piece: read piece i of the transfer from storage, check it against its hash and
 *   send it on a link as a PIECE message; returns 0, or RN_EPROTO when the stored piece
 *   no longer matches its hash (the core then forgets it and fetches it again), or
 *   another RN_E*. cast_on_sent reports each piece written to the link.
 * - open: make storage ready for a transfer this node receives, and mark in held[] the
 *   pieces it already holds that match their hash (a restart resumes from them).
 * - store: check a received piece against its hash and write it; 0, RN_EPROTO on a hash
 *   mismatch (the piece is fetched again), or another RN_E*.
 * - complete: every piece is held: the driver makes the file appear at its final path
 *   (publish true for a destination) and returns 0, or RN_EPROTO if a final check finds
 *   pieces corrupt (it marks them in bad[], they are fetched again).
 * - time: every call takes `now` (ms, a clock that does not jump); wall-clock times
 *   (in the announce and in progress reports) are now + wall_offset_ms (cast_config).
 * - ticks: call cast_tick no later than cast_wake_at(). */
#ifndef RN_CAST_H
#define RN_CAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAST_NAME_MAX   64      /* a node name or file name, NUL included */
#define CAST_MAX_PIECES 32768   /* pieces in one transfer */
#define CAST_PIECE_MIN  4096    /* bytes */
#define CAST_PIECE_MAX  1048576 /* bytes: a piece fits one frame */
#define CAST_MAX_LINKS  64      /* links of one node */
#define CAST_MAX_NODES  1024    /* node names one node keeps */
#define CAST_MAX_DESTS  1024
#define CAST_MAX_HOPS   32
#define CAST_ENDGAME    2  /* requesters of one missing piece at most */
#define CAST_SEND_AHEAD 2  /* pieces handed to the driver per link, not yet written */
#define CAST_WIN_MIN    2  /* outstanding requests per link */
#define CAST_WIN_MAX    64 /* ... */
#define CAST_NODE_SPARE 4  /* pieces over the node-wide cap (cast.c, node_cap) */
#define CAST_BATCH_MAX  64 /* pieces named in one REQUEST / CANCEL / HAVE message */

typedef enum {
	CAST_MSG_NODES = 1, /* the names the sender knows, with hops (0: itself) */
	CAST_MSG_ANNOUNCE,  /* a transfer: info */
	CAST_MSG_BITFIELD,  /* xfer, bits: the pieces the sender holds */
	CAST_MSG_HAVE,      /* xfer, pieces: now held */
	CAST_MSG_LOST,      /* xfer, pieces: no longer held (found corrupt) */
	CAST_MSG_REQUEST,   /* xfer, pieces: send me these */
	CAST_MSG_CANCEL,    /* xfer, pieces: do not send these any more */
	CAST_MSG_PIECE,     /* xfer, piece, data */
	CAST_MSG_PROGRESS,  /* xfer, prog: nodes' progress, flooded towards everyone */
	CAST_MSG_PING,      /* keeps a quiet link alive */
	CAST_MSG_PENDING,   /* xfer, pieces: the sender asked a neighbour for these (a hint:
	                     * the receiver prefers other pieces from common sources) */
	CAST_MSG_GIVEN,     /* xfer, pieces: the sender took requests for these from another
	                     * of its links (a hint, sent once a piece: a copy is on its way
	                     * two hops from the receiver, which prefers other pieces) */
} cast_msg_type;

/* A transfer as announced. hashes: npieces * 32 bytes. dests: the destination names
 * (none: every node is one). */
typedef struct {
	uint64_t xfer; /* its id, made by the source */
	char name[CAST_NAME_MAX];
	char source[CAST_NAME_MAX];
	uint64_t size;
	uint32_t piece_size;
	uint32_t npieces;
	uint64_t start_wall_ms; /* when the source started it */
	uint64_t rate_cap;      /* bytes/s each node sends at most (0: no cap) */
	const uint8_t *hashes;
	const char (*dests)[CAST_NAME_MAX];
	uint32_t ndests;
} cast_info;

typedef struct {
	char name[CAST_NAME_MAX];
	uint8_t hops;
} cast_known;

typedef struct {
	char name[CAST_NAME_MAX];
	uint32_t seq;     /* made by the node itself; newer is larger */
	uint32_t held;    /* pieces */
	uint64_t done_ms; /* wall clock when it held the whole file verified (0: not yet) */
} cast_prog;

typedef struct {
	uint8_t type;
	uint64_t xfer;
	const cast_info *info;   /* ANNOUNCE */
	const uint8_t *bits;     /* BITFIELD: (npieces + 7) / 8 bytes, bit i of byte i / 8 */
	uint32_t nbits;          /* BITFIELD: npieces */
	const uint32_t *pieces;  /* HAVE, LOST, REQUEST, CANCEL */
	uint32_t npieces;        /* ... their count (<= CAST_BATCH_MAX) */
	uint32_t piece;          /* PIECE */
	const uint8_t *data;     /* PIECE */
	uint32_t len;            /* PIECE */
	const cast_known *known; /* NODES */
	uint32_t nknown;         /* ... */
	const cast_prog *prog;   /* PROGRESS */
	uint32_t nprog;          /* ... */
} cast_msg;

typedef struct {
	void *ctx;
	void (*send)(void *ctx, uint32_t link, const cast_msg *m);
	int (*send_piece)(void *ctx, uint32_t link, const cast_info *x, uint32_t piece);
	int (*open)(void *ctx, const cast_info *x, uint8_t *held);
	int (*store)(void *ctx, const cast_info *x, uint32_t piece, const uint8_t *data,
	             uint32_t len);
	int (*complete)(void *ctx, const cast_info *x, bool publish, uint8_t *bad);
} cast_driver;

typedef struct {
	char self[CAST_NAME_MAX];
	uint64_t seed;           /* the core's random generator */
	uint64_t wall_offset_ms; /* wall clock (Unix ms) at now = 0 */
	uint32_t gossip_ms;      /* NODES and PROGRESS at most this often */
	uint32_t stall_ms;       /* requests on a link without a piece for this long: asked
	                          * elsewhere (at least; longer on a slow link) */
	uint32_t link_idle_ms;   /* a link silent this long is closed by the driver */
} cast_config;

void cast_config_default(cast_config *c);

/* Counters for /metrics, the simulator's reports and the tests. */
typedef struct {
	uint64_t pieces_in, pieces_out, bytes_in, bytes_out;
	uint64_t dup_in;      /* pieces that came while already held (end-game, or a bug) */
	uint64_t endgame_req; /* requests for a piece already requested elsewhere */
	uint64_t corrupt;     /* pieces that failed their hash (received, read or resumed) */
	uint64_t resumed;     /* pieces found held at open */
	uint64_t stalls;      /* links whose requests were moved elsewhere */
	uint64_t cancels;
	uint64_t capped; /* requests held back by the node-wide cap (cast.c, node_cap) */
} cast_stats;

typedef struct cast_node cast_node;

cast_node *cast_new(const cast_config *cfg, const cast_driver *drv);
void cast_free(cast_node *k);

/* A link to a neighbour is up (the driver exchanged names); link ids are the driver's. */
void cast_link_up(cast_node *k, uint64_t now, uint32_t link, const char *peer);
void cast_link_down(cast_node *k, uint64_t now, uint32_t link);
void cast_on_msg(cast_node *k, uint64_t now, uint32_t link, const cast_msg *m);
/* A piece send_piece handed over on this link has been written out. */
void cast_on_sent(cast_node *k, uint64_t now, uint32_t link);
/* The driver's measurements of a link's outgoing direction (TCP_INFO): rates in
 * bytes/s, times in microseconds. */
void cast_on_link_info(cast_node *k, uint64_t now, uint32_t link, uint64_t delivery_rate,
                       uint32_t rtt_us, uint32_t min_rtt_us, uint64_t bytes_acked);
void cast_tick(cast_node *k, uint64_t now);
uint64_t cast_wake_at(const cast_node *k);

/* The source starts a transfer of a file it holds whole (info's hashes computed by the
 * driver; info.xfer 0: the core makes one). dests: names, or none for every node known
 * now and later. 0, or RN_EINVAL. */
int cast_start(cast_node *k, uint64_t now, const cast_info *info);

/* The transfer this node takes part in (NULL: none). */
const cast_info *cast_current(const cast_node *k);
/* Pieces this node holds of it. */
uint32_t cast_held(const cast_node *k);
/* Progress of every node this node has heard of for the current transfer: fn once per
 * node (dest: a destination of it). */
void cast_status(const cast_node *k,
                 void (*fn)(void *arg, const cast_prog *p, bool dest, bool self), void *arg);
/* The names this node knows (itself first), with hops. Returns the count. */
size_t cast_known_nodes(const cast_node *k, cast_known *out, size_t max);
/* The links, for status: neighbour name, measured receive rate (bytes/s), rtt (us). */
size_t cast_links(const cast_node *k, char (*names)[CAST_NAME_MAX], double *rx_rate,
                  uint32_t *rtt_us, size_t max);
const cast_stats *cast_get_stats(const cast_node *k);

/* The default piece size for a file of this size: a power of two near size / 400,
 * within [16 KiB, 1 MiB]. */
uint32_t cast_default_piece(uint64_t size);

/* ---- the codec (no IO): a cast_msg as the body of a frame ---- */

/* Bytes cast_encode writes for m. */
size_t cast_encoded_size(const cast_msg *m);
void cast_encode(const cast_msg *m, uint8_t *out);
/* The bytes of a PIECE body before its data (CAST_PIECE_HEAD of them): a driver reads
 * the data from storage straight after them. */
#define CAST_PIECE_HEAD 17
void cast_piece_head(uint64_t xfer, uint32_t piece, uint32_t len, uint8_t *out);
/* Parses a body; m's pointers point into body or into *scratch (malloc'd, the caller
 * frees it, whatever the result). 0 or RN_EPROTO for anything malformed. */
int cast_decode(const uint8_t *body, size_t len, cast_msg *m, cast_info *info, void **scratch);

#endif
