/* seen.h — chunk contents this node has checked against their names, remembered by a
 * keyed MAC, so that checking a copy again costs a GHASH pass instead of a SHA-256 pass.
 *
 * A chunk is named by the SHA-256 of its bytes, and every chunk a download sends has been
 * checked against its name. SHA-256 runs at 1.3-1.7 GB/s on this project's machines (with
 * the CPU's SHA extensions): on a 2-core machine it was half of an entry node's CPU during
 * a download. Once this node has seen bytes that hash to their name (it cut them from an
 * upload, or checked them with SHA-256), it remembers their tag: AES-128-GMAC under a key
 * the driver draws at random when it makes the table, kept in this process only, never
 * stored or sent. A copy (from this node's disk or from a peer) whose tag equals the remembered one
 * is those bytes unless whoever made it found a GHASH forgery without knowing the key:
 * GHASH under a secret key is almost XOR-universal, so for any copy chosen without the
 * key the chance is at most (16-byte blocks + 1) / 2^128 (2^-112 for a 1 MiB chunk), and
 * since tags never leave the process a wrong copy teaches its maker nothing. The check
 * thus gives what the SHA-256 check gives, at 5-6 times its speed. A name the table has
 * never seen (or has forgotten) is checked with SHA-256, and remembered when it matches.
 *
 * The table is 2-way set-associative by name, FILES_SEEN_SETS sets: a name whose set is
 * full takes the place of the one used least lately there. Names are SHA-256 digests, so
 * they spread evenly; one who uploads contents made to share a set only makes this node
 * check those with SHA-256 again. Memory: FILES_SEEN_SETS * 2 * 48 bytes (768 KiB).
 *
 * Threads: files_seen_get / files_seen_put belong to one thread (the node's loop); the
 * tag of bytes (files_seen_tag, files_tagger_*) may be computed on any thread, since it
 * only reads the key, which never changes after files_seen_new. No global state. */
#ifndef RN_FILES_SEEN_H
#define RN_FILES_SEEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "files.h"

#define FILES_TAG       16
#define FILES_SEEN_SETS 8192
#define FILES_SEEN_KEY  16 /* AES-128 */

typedef struct files_seen files_seen;

/* A new, empty table whose tags are taken under key: FILES_SEEN_KEY bytes the driver
 * drew at random for this process (this module draws nothing: it stays sans-IO, like the
 * cores beside it). NULL: out of memory. */
files_seen *files_seen_new(const uint8_t key[FILES_SEEN_KEY]);
void files_seen_free(files_seen *s);

/* The tag remembered for name; false when the table does not know name. */
bool files_seen_get(files_seen *s, const uint8_t name[FILES_HASH], uint8_t tag[FILES_TAG]);

/* Remember that the bytes whose tag is tag hash to name (the caller has checked it). */
void files_seen_put(files_seen *s, const uint8_t name[FILES_HASH], const uint8_t tag[FILES_TAG]);

/* The tag of buf under s's key. 0, or RN_ENOMEM. */
int files_seen_tag(const files_seen *s, const uint8_t *buf, size_t len, uint8_t tag[FILES_TAG]);

/* The same, over bytes that arrive in pieces: begin, update with each piece in order,
 * end (which frees the tagger and gives the tag: 0, or RN_ENOMEM). A failed begin gives
 * NULL, which update ignores and end answers with RN_ENOMEM. */
typedef struct files_tagger files_tagger;
files_tagger *files_tagger_begin(const files_seen *s);
void files_tagger_update(files_tagger *t, const uint8_t *buf, size_t len);
int files_tagger_end(files_tagger *t, uint8_t tag[FILES_TAG]);

/* Is this copy of the chunk called name good? With a remembered tag, the copy's tag must
 * equal it (by_mac set true); otherwise its SHA-256 must equal name, and then its tag is
 * remembered. This is the whole check, for callers that hold the bytes at once. */
bool files_seen_check(files_seen *s, const uint8_t name[FILES_HASH], const uint8_t *buf, size_t len,
                      bool *by_mac);

#endif
