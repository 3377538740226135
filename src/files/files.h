/* files.h — the file service core: files cut into chunks stored through the kv core (sans-IO).
 *
 * ---- Provided by the driver (files_driver) ----
 * - kv: start one key-value operation (put, get or delete of a key) under a request id the
 *   core made; answer it later with files_on_kv, never from inside the call (the core is
 *   not re-entrant). Every operation must be answered once (the kv core's own timeout
 *   makes sure of that in the node). A delete may be dated (at_ms, kv_request.at_ms):
 *   its tombstone then carries that wall-clock time, so any version written after it
 *   wins over it, wherever and in whatever order they meet.
 * - meta: a download's manifest was found; the driver sends its headers, then calls
 *   files_download_start (or files_abort, for a HEAD).
 * - data: a download's next bytes, in order: bytes [off, off + len) of chunk, a buffer from
 *   malloc that is the driver's from then on (it frees it, so the bytes are not copied
 *   again). Once the driver has sent (or dropped) them it calls files_download_consumed,
 *   which lets the core fetch more: a download never has more than `window` chunks in
 *   flight or waiting.
 * - local (optional, NULL: none): read a chunk from this node's own store, if it holds a
 *   copy, without asking the kv core; answer with files_on_kv(_take) under req, KV_OK with
 *   the bytes or anything else when there is none. Chunks are named by their hash, so any
 *   copy that matches it is the chunk, whatever its version: the core checks it as it
 *   checks every chunk and asks the kv core when it does not match or is missing. The
 *   driver may do the read (and the hashing, files_on_kv_take) on another thread.
 * - damaged (optional): the copy local gave failed its hash; the driver drops it from its
 *   store the way the kv core's scrub does (kv_drop_damaged), so repair restores it.
 * - room: an upload that was full (files_upload_wants false) can take bytes again.
 * - done: a transfer is over (upload stored, download sent, list or delete answered, or
 *   failed); its handle is not used again. An aborted transfer gets no done.
 * - time: every call takes `now` (ms on a clock that does not jump); files_tick no later
 *   than files_wake_at(). The wall clock (for "uploaded at") is now + wall_offset_ms.
 *
 * Layout in the kv store. A chunk (at most chunk_size bytes) is stored under
 * "\0F" "c" + its 32-byte SHA-256, so the same bytes are stored once, and a reader can
 * check what it got. A file's manifest (name, size, SHA-256 of the whole, chunk size,
 * upload time, the chunk hashes in order) is stored under "\0F" "m" + name. The list of
 * files is one index record under "\0F" "i". User keys of the HTTP API cannot hold NUL,
 * so none of these collide with them.
 *
 * Deletion and collection. Deleting a file deletes its manifest and takes it off the
 * index (then the client is answered); its chunks become candidates for collection, as do
 * those an aborted or failed upload stored and those an overwritten manifest alone used.
 * Collection waits gc_delay_ms, then deletes each candidate that no listed manifest (nor an
 * upload running on this node) refers to, with a tombstone dated when it was asked for.
 * An upload on another node that shares a chunk and has not written its manifest yet is
 * safe without any lock: an upload re-puts, before its manifest, every chunk it put more
 * than gc_delay_ms / 4 ago, and lists itself within 3/4 gc_delay_ms of every chunk put (or
 * fails), so it is either listed when the collection reads the index (the chunk is kept)
 * or its put of the chunk is newer than the dated tombstone (the put wins). The margin
 * covers clocks up to gc_delay_ms / 4 apart between nodes. An upload whose refresh cannot
 * finish within about gc_delay_ms / 2 (a file too large for its link) fails with
 * FILES_UNAVAIL rather than list itself. A refresh that finds its chunk
 * collected fails the upload (the client uploads again; nothing acknowledged is lost).
 * Pending collections are bounded (FILES_GC_JOBS jobs, FILES_GC_CANDS chunks): past that
 * new candidates join the newest job (dated earlier, which is safe) or, when even that is
 * full, are left as orphans (stats gc_dropped). A restart forgets pending collections:
 * their chunks stay, orphans over data loss.
 *
 * The index is read, changed and written back conditional on the version read (a
 * compare-and-set, kv_request.has_cond): when another node changed it in between, the
 * write is refused (KV_CONFLICT) and the change is made again on what is there now, up
 * to FILES_IDX_TRIES times. So two nodes listing or unlisting files at the same moment
 * both get their change in. */
#ifndef RN_FILES_H
#define RN_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../kv/kv.h"

#define FILES_HASH          32
#define FILES_NAME_MAX      255
#define FILES_CHUNK_DEFAULT (1u << 20)
#define FILES_KEY_MAX       (3 + FILES_NAME_MAX)
#define FILES_INDEX_MAX     (1u << 20) /* bytes of the index record (about 10,000 files) */
#define FILES_IDX_TRIES     32         /* conditional index writes refused before giving up */
#define FILES_GC_JOBS       64         /* collections waiting their delay */
#define FILES_GC_CANDS      (1u << 18) /* candidate chunks they hold in all (8 MiB) */

typedef enum {
	FILES_OK = 0,
	FILES_NOT_FOUND, /* 404 */
	FILES_BAD,       /* 400: a bad name or request */
	FILES_TOO_BIG,   /* 413 */
	FILES_UNAVAIL,   /* 503: the store did not answer in time, or could not tell */
	FILES_CORRUPT,   /* 502: no good copy of a chunk could be found */
	FILES_FULL,      /* 507: the index has no room */
	FILES_ERROR,     /* 500 */
} files_status;

typedef struct {
	uint32_t chunk_size;     /* bytes per chunk; 1 MiB by default, at most 1 MiB */
	unsigned window;         /* chunk operations in flight per transfer */
	uint64_t max_file;       /* bytes in one file */
	unsigned retries;        /* an unsure kv answer is retried this many times */
	uint32_t retry_ms;       /* ... this long apart */
	uint64_t wall_offset_ms; /* Unix ms at now = 0 */
	uint32_t gc_delay_ms;    /* a collection waits this long (1 h; at least 4 ms) */
} files_config;

void files_config_default(files_config *c);

/* A file's manifest. chunks points to nchunks * FILES_HASH bytes. */
typedef struct {
	char name[FILES_NAME_MAX + 1];
	size_t nlen;
	uint64_t size;
	uint32_t chunk_size;
	uint64_t uploaded_ms; /* Unix ms */
	uint8_t sha[FILES_HASH];
	uint32_t nchunks;
	const uint8_t *chunks;
} files_manifest;

/* One file in a listing. */
typedef struct {
	char name[FILES_NAME_MAX + 1];
	size_t nlen;
	uint64_t size;
	uint64_t uploaded_ms;
	uint8_t sha[FILES_HASH];
} files_entry;

typedef struct {
	files_status status;
	const char *why;         /* for a person, when not OK */
	const files_manifest *m; /* upload: what was stored; delete: what was removed */
	const files_entry *list; /* list: the files, sorted by name */
	size_t nlist;
	uint32_t chunks_repaired; /* download: chunks that had to be fetched again */
} files_result;

typedef struct {
	void *ctx;
	/* cond: a conditional write (kv_request.has_cond), or NULL */
	/* at_ms: a delete dated this wall-clock ms (kv_request.at_ms), or 0 */
	/* unchecked: a chunk get the core will check against its hash, so the store need not
	 * check its copy first (kv_request.unchecked); false once a copy came back damaged,
	 * so that the store checks every copy it reads and repairs the bad one */
	void (*kv)(void *ctx, uint64_t req, kv_op op, const uint8_t *key, size_t klen,
	           const uint8_t *val, size_t vlen, const kv_version *cond, uint64_t at_ms,
	           bool unchecked);
	void (*meta)(void *ctx, uint64_t xfer, const files_manifest *m);
	void (*data)(void *ctx, uint64_t xfer, uint8_t *chunk, size_t off, size_t len);
	void (*room)(void *ctx, uint64_t xfer);
	void (*done)(void *ctx, uint64_t xfer, const files_result *r);
	void (*local)(void *ctx, uint64_t req, const uint8_t *key, size_t klen);
	void (*damaged)(void *ctx, const uint8_t *key, size_t klen);
} files_driver;

typedef struct {
	uint64_t uploads, downloads, deletes;
	uint64_t chunks_put, chunks_got, chunks_deleted;
	uint64_t bad_chunks;   /* a chunk that came back not matching its hash */
	uint64_t chunks_local; /* chunk reads answered by this node's own copy (driver.local) */
	uint64_t bad_local;    /* ... whose copy did not match its hash (asked of the store) */
	uint64_t bytes_in, bytes_out;
	uint64_t aborted;
	uint64_t index_conflicts;  /* index writes refused because another node changed it */
	uint64_t chunks_refreshed; /* chunks an upload put again before its manifest */
	uint64_t gc_waiting;       /* collections waiting their delay now */
	uint64_t gc_dropped;       /* candidate chunks left as orphans: the bounds were full */
} files_stats;

typedef struct files_core files_core;

files_core *files_new(const files_config *cfg, const files_driver *drv);
void files_free(files_core *f);

/* NULL when name is a good file name, else why not: empty, over FILES_NAME_MAX bytes,
 * ".", "..", a '/' or '\\', NUL or control bytes, not UTF-8. */
const char *files_name_problem(const char *name, size_t len);

/* Uploads. begin: 0, or RN_EINVAL (bad name: done is not called) / RN_ENOMEM. size is the
 * announced size (UINT64_MAX: unknown); over max_file gives RN_E2BIG-like FILES_TOO_BIG
 * through done at once. data takes every byte given; the driver gives more only while
 * files_upload_wants (room says when that is true again). end: no more bytes; done
 * follows once the chunks, manifest and index are stored. */
int files_upload_begin(files_core *f, uint64_t now, uint64_t xfer, const char *name, size_t nlen);
void files_upload_data(files_core *f, uint64_t now, uint64_t xfer, const uint8_t *buf, size_t len);
bool files_upload_wants(const files_core *f, uint64_t xfer);
void files_upload_end(files_core *f, uint64_t now, uint64_t xfer);

/* Downloads: meta comes first (or done with NOT_FOUND); then start sends bytes
 * [off, off + len) of the file through data, and done. */
int files_download(files_core *f, uint64_t now, uint64_t xfer, const char *name, size_t nlen);
void files_download_start(files_core *f, uint64_t now, uint64_t xfer, uint64_t off, uint64_t len);
/* The driver has sent one data call's bytes. */
void files_download_consumed(files_core *f, uint64_t now, uint64_t xfer);

int files_list(files_core *f, uint64_t now, uint64_t xfer);
int files_delete(files_core *f, uint64_t now, uint64_t xfer, const char *name, size_t nlen);

/* The client went away: an upload collects what it stored, anything else stops. */
void files_abort(files_core *f, uint64_t now, uint64_t xfer);

/* v: the version of the record read (a get), or held (KV_CONFLICT), or NULL */
void files_on_kv(files_core *f, uint64_t now, uint64_t req, kv_status st, const uint8_t *val,
                 size_t vlen, const kv_version *v);
/* The same, without a copy: val (from malloc, or NULL) is the core's to keep or free. sha,
 * when not NULL, is val's SHA-256 as the driver computed it (off the loop thread): a
 * chunk is checked by comparing it with the chunk's name instead of hashing here. */
void files_on_kv_take(files_core *f, uint64_t now, uint64_t req, kv_status st, uint8_t *val,
                      size_t vlen, const kv_version *v, const uint8_t sha[FILES_HASH]);
void files_tick(files_core *f, uint64_t now);
uint64_t files_wake_at(const files_core *f);
const files_stats *files_get_stats(const files_core *f);
/* Transfers open (including collections waiting or running). */
size_t files_active(const files_core *f);

/* ---- codecs (no state) ---- */

/* Keys: out must hold FILES_KEY_MAX bytes; the key's length is returned. */
size_t files_chunk_key(const uint8_t sha[FILES_HASH], uint8_t *out);
size_t files_manifest_key(const char *name, size_t nlen, uint8_t *out);
size_t files_index_key(uint8_t *out);
/* True unless the key is a chunk's and the value's SHA-256 is not the one it names: the
 * check a kv driver can make on a copy it read (kv_driver.valid). */
bool files_record_valid(const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen);

size_t files_manifest_size(const files_manifest *m);
void files_manifest_encode(const files_manifest *m, uint8_t *out);
/* 0 or RN_EPROTO; m->chunks points into buf. */
int files_manifest_decode(const uint8_t *buf, size_t len, files_manifest *m);

void files_sha256(const uint8_t *buf, size_t len, uint8_t out[FILES_HASH]);
void files_hex(const uint8_t *b, size_t n, char *out); /* 2n + 1 bytes */

#endif
