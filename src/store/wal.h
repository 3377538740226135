/* wal.h — the store's write-ahead log (src/store/store.h, "Durability"): one file of a fixed
 * size, written full of zeros once when it is made, so that appending a frame changes no
 * file metadata and fdatasync has only the frame's own pages to write. Each commit's puts
 * and deletes are one frame; frames follow each other from offset 0, and when the next
 * one does not fit the store makes everything logged durable in LMDB and writing starts
 * again at 0 ("a new lap").
 *
 * Frame: magic (4 bytes), payload length (4), lap (8), sequence number in the lap (8),
 * CRC-32 of lap, sequence, length and payload (4), 4 zero bytes, then the payload: per
 * operation a kind (1: put, 2: delete), the 20-byte key id, a length (4) and that many
 * bytes (a put's encoded record; none for a delete). Big-endian (src/lib/bytes.h). Reading stops at
 * the first frame that is torn, fails its CRC, or is not the next of the first frame's lap: frames
 * left from an earlier lap are never read as this one's.
 *
 * Driver-side, owned by one thread (the store's), except wal_sync, which another thread
 * may run while the owner writes frames. */
#ifndef RN_WAL_H
#define RN_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/id.h"

typedef struct wal wal;

enum { WAL_FULL = 1, WAL_TOO_BIG = 2 };

/* Opens path, making it (size bytes of zeros, synced) when it is missing (one made
 * before keeps its size). 0 or RN_EIO / RN_ENOMEM; err says why. */
int wal_open(wal **out, const char *path, size_t size, char *err, size_t errlen);
void wal_close(wal *w);
/* Calls fn for every operation of the frames of the lap at offset 0, in order; stops at
 * fn's first nonzero result and returns it, else the number of frames read. */
int wal_replay(wal *w,
               int (*fn)(void *arg, bool put, const rn_id *kid, const uint8_t *b, size_t len),
               void *arg);
/* One operation of the frame being built. A frame that cannot be held (out of memory) is
 * WAL_TOO_BIG when written. */
void wal_add(wal *w, bool put, const rn_id *kid, const uint8_t *b, size_t len);
bool wal_pending(const wal *w);
/* Forgets the operations added since the last frame. */
void wal_drop(wal *w);
/* Writes the frame built (not synced): 0; WAL_FULL when it does not fit after the last
 * frame (nothing written: the caller makes every logged commit durable elsewhere, then
 * calls wal_rewind and writes again); WAL_TOO_BIG when it can never fit (dropped); RN_EIO. */
int wal_write(wal *w);
/* The next frame starts a new lap at offset 0. */
void wal_rewind(wal *w);
/* No frame is read any more (the first header is zeroed and synced), and a new lap starts:
 * for when the store has made everything durable without the log. 0 or RN_EIO. */
int wal_clear(wal *w);
/* fdatasync: every frame written before the call is on disk when it returns 0. */
int wal_sync(wal *w);

#endif
