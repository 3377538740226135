/* auth.h — the peer port's cluster key: who may send frames to a node.
 *
 * With a key, every connection starts with a handshake and every frame carries a tag:
 *   acceptor -> connector   Na (AUTH_NONCE random bytes)
 *   connector -> acceptor   Nc | HMAC(S, "hello")            where S = HMAC(K, "ringnet
 *                           session v2" | Na | Nc | the acceptor's host:port)
 *   connector -> acceptor   header | AES-256-GCM(E, seq, body, aad = header) | its tag
 *                           for seq = 0, 1, 2, ..., where E = HMAC(S, "seal")
 * Frames are only ever read on connections others opened, so a node accepts a frame only
 * from someone who knows K; the fresh Na makes every session's keys new (no replay from
 * another connection), seq is the nonce and fixes the order (no replay, drop or reorder
 * within one), and the acceptor's address in S keeps a handshake made with one node from
 * being relayed to another. Bodies are encrypted: only holders of K read the traffic; the
 * 5-byte header (length, type) is authenticated but readable, so frames can be cut out of
 * the stream before they are opened. */
#ifndef RN_AUTH_H
#define RN_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_KEY   32 /* bytes of a cluster key; its file holds them as 64 hex digits */
#define AUTH_NONCE 16
#define AUTH_TAG   32                      /* the hello's HMAC-SHA256 */
#define AUTH_SEAL  16                      /* the GCM tag after each frame */
#define AUTH_HELLO (AUTH_NONCE + AUTH_TAG) /* what the connector sends first */

typedef struct {
	uint8_t k[AUTH_TAG];  /* S */
	uint8_t ek[AUTH_TAG]; /* E: the frames' AES-256 key */
	/* E's expanded key, made by the first seal or open and kept (libcrypto's cipher
	 * context, opaque here), so a frame only sets its nonce; and which way it runs */
	void *cx;
	int cx_enc;
} auth_session;

/* Reads a key file (64 hex digits; surrounding white space is fine). 0, or -1 with a
 * message a person can act on in err. */
int auth_load_key(const char *path, uint8_t key[AUTH_KEY], char *err, size_t errlen);
/* Creates path with a new random key, readable by its owner only; fails if it exists. */
int auth_new_key_file(const char *path, char *err, size_t errlen);
/* Random bytes from the system's generator; 0 or -1. */
int auth_random(uint8_t *out, size_t len);

/* Sets *s (whatever it held: a session made before must be cleared first, or its cipher
 * context leaks). */
void auth_session_init(auth_session *s, const uint8_t key[AUTH_KEY], const uint8_t na[AUTH_NONCE],
                       const uint8_t nc[AUTH_NONCE], const char *acceptor);
/* Frees what seal and open kept and wipes the keys; the session is all zero afterwards, and
 * clearing it again is harmless. Every session set by init or back is cleared once done. */
void auth_session_clear(auth_session *s);
void auth_hello_tag(const auth_session *s, uint8_t tag[AUTH_TAG]);
/* The session for frames going the other way on the same connection (cast links carry
 * frames both ways): the same S, its own key E' = HMAC(S, "seal back"), its own seq. Sets
 * *back as init does. */
void auth_session_back(const auth_session *s, auth_session *back);
/* Encrypts frame[aad, len) in place as frame number seq of the session, the first aad bytes
 * authenticated as they are, and writes the tag; 0 or -1 (libcrypto failed). The first
 * seal or open of a session expands its key; later ones reuse it (switching between
 * sealing and opening expands it again). */
int auth_seal(auth_session *s, uint64_t seq, uint8_t *frame, size_t len, size_t aad,
              uint8_t tag[AUTH_SEAL]);
/* Checks and decrypts, in place, what auth_seal made: true when the tag is right (then
 * frame holds the plain bytes), false otherwise (then frame holds garbage). */
bool auth_open(auth_session *s, uint64_t seq, uint8_t *frame, size_t len, size_t aad,
               const uint8_t tag[AUTH_SEAL]);
/* Constant-time comparison of two tags. */
bool auth_tag_eq(const uint8_t a[AUTH_TAG], const uint8_t b[AUTH_TAG]);

#endif
