/* wal.c — see wal.h. */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/bytes.h"
#include "../lib/err.h"
#include "../lib/grow.h"

#define WAL_MAGIC 0x4c574e52u /* "RNWL" */
#define HDR       32
#define OP_HDR    (1 + RN_ID_BYTES + 4)

struct wal {
	int fd;
	size_t size, off; /* the file's size; where the next frame goes */
	uint64_t lap, seq;
	uint8_t *buf; /* the frame being built: header room, then its operations */
	size_t len, cap;
	bool broken; /* an operation could not be held: the frame is too big */
	uint32_t crc[256];
};

/* CRC-32 (the reflected 0xEDB88320 polynomial) of a frame's lap, sequence, length and
 * payload: bytes 4..7 and 8..23 of its header, then the rest. */
static uint32_t frame_crc(const wal *w, const uint8_t *hdr, const uint8_t *payload, size_t n)
{
	uint32_t c = 0xffffffffu;
	const uint8_t *parts[] = {hdr + 4, payload};
	size_t lens[] = {20, n};
	for (int p = 0; p < 2; p++)
		for (size_t i = 0; i < lens[p]; i++)
			c = w->crc[(c ^ parts[p][i]) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

static void new_lap(wal *w)
{
	uint64_t lap = 0;
	if (getrandom(&lap, sizeof lap, 0) != (ssize_t)sizeof lap) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		lap = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	}
	w->lap = lap == w->lap ? lap + 1 : lap; /* never the lap before */
	w->seq = 0;
	w->off = 0;
}

static int fill_zeros(int fd, size_t size)
{
	static const uint8_t zeros[65536];
	for (size_t at = 0; at < size;) {
		size_t n = size - at < sizeof zeros ? size - at : sizeof zeros;
		ssize_t k = pwrite(fd, zeros, n, (off_t)at);
		if (k <= 0)
			return RN_EIO;
		at += (size_t)k;
	}
	return fsync(fd) == 0 ? 0 : RN_EIO;
}

int wal_open(wal **out, const char *path, size_t size, char *err, size_t errlen)
{
	wal *w = calloc(1, sizeof *w);
	if (!w || size < 2 * HDR) {
		snprintf(err, errlen, "cannot open the write-ahead log %s: %s", path,
		         w ? "a log must hold two frame headers" : "out of memory");
		int bad = w ? RN_EINVAL : RN_ENOMEM;
		free(w);
		return bad;
	}
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int b = 0; b < 8; b++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		w->crc[i] = c;
	}
	w->size = size;
	w->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	struct stat st;
	int rc = w->fd < 0 || fstat(w->fd, &st) < 0 ? RN_EIO : 0;
	if (rc == 0 && st.st_size >= 2 * HDR)
		w->size = (size_t)st.st_size; /* made before, perhaps of another size: kept */
	else if (rc == 0)
		rc = fill_zeros(w->fd, size);
	if (rc < 0 || rn_grow((void **)&w->buf, &w->cap, HDR + 4096, 1, 4096) < 0) {
		snprintf(err, errlen, "cannot open the write-ahead log %s: %s", path,
		         rc < 0 ? strerror(errno) : "out of memory");
		wal_close(w);
		return rc < 0 ? RN_EIO : RN_ENOMEM;
	}
	w->len = HDR;
	new_lap(w);
	*out = w;
	return 0;
}

void wal_close(wal *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	free(w->buf);
	free(w);
}

/* The operations of one frame's payload, to fn; 0 or fn's first nonzero, RN_EIO when the
 * payload does not parse (it passed its CRC, so it was written so: a bug). */
static int each_op(const uint8_t *p, size_t n,
                   int (*fn)(void *, bool, const rn_id *, const uint8_t *, size_t), void *arg)
{
	for (size_t at = 0; at < n;) {
		if (n - at < OP_HDR)
			return RN_EIO;
		uint8_t kind = p[at];
		rn_id kid;
		memcpy(kid.b, p + at + 1, RN_ID_BYTES);
		size_t len = rn_get32(p + at + 1 + RN_ID_BYTES);
		at += OP_HDR;
		if ((kind != 1 && kind != 2) || len > n - at)
			return RN_EIO;
		int rc = fn(arg, kind == 1, &kid, p + at, len);
		if (rc)
			return rc;
		at += len;
	}
	return 0;
}

int wal_replay(wal *w,
               int (*fn)(void *arg, bool put, const rn_id *kid, const uint8_t *b, size_t len),
               void *arg)
{
	size_t off = 0;
	uint64_t lap = 0, seq = 0;
	int frames = 0;
	uint8_t hdr[HDR];
	while (off + HDR <= w->size && pread(w->fd, hdr, HDR, (off_t)off) == HDR) {
		size_t n = rn_get32(hdr + 4);
		uint64_t l = rn_get64(hdr + 8), s = rn_get64(hdr + 16);
		if (rn_get32(hdr) != WAL_MAGIC || n > w->size - off - HDR ||
		    (frames && (l != lap || s != seq + 1)))
			break;
		uint8_t *p = malloc(n ? n : 1);
		if (!p)
			return RN_ENOMEM;
		if (pread(w->fd, p, n, (off_t)(off + HDR)) != (ssize_t)n ||
		    frame_crc(w, hdr, p, n) != rn_get32(hdr + 24)) {
			free(p);
			break;
		}
		int rc = each_op(p, n, fn, arg);
		free(p);
		if (rc)
			return rc;
		lap = l;
		seq = s;
		frames++;
		off += HDR + n;
	}
	return frames;
}

void wal_add(wal *w, bool put, const rn_id *kid, const uint8_t *b, size_t len)
{
	if (!put)
		len = 0;
	if (w->broken || len > UINT32_MAX || len > w->size ||
	    rn_grow((void **)&w->buf, &w->cap, w->len + OP_HDR + len, 1, 4096) < 0) {
		w->broken = true;
		return;
	}
	uint8_t *p = w->buf + w->len;
	p[0] = put ? 1 : 2;
	memcpy(p + 1, kid->b, RN_ID_BYTES);
	rn_put32(p + 1 + RN_ID_BYTES, (uint32_t)len);
	if (len)
		memcpy(p + OP_HDR, b, len);
	w->len += OP_HDR + len;
}

bool wal_pending(const wal *w)
{
	return w->len > HDR || w->broken;
}

void wal_drop(wal *w)
{
	w->len = HDR;
	w->broken = false;
}

int wal_write(wal *w)
{
	if (w->broken || w->len > w->size) {
		wal_drop(w);
		return WAL_TOO_BIG;
	}
	if (w->off + w->len > w->size)
		return WAL_FULL;
	uint8_t *h = w->buf;
	size_t n = w->len - HDR;
	rn_put32(h, WAL_MAGIC);
	rn_put32(h + 4, (uint32_t)n);
	rn_put64(h + 8, w->lap);
	rn_put64(h + 16, w->seq + (w->off ? 1 : 0));
	rn_put32(h + 24, frame_crc(w, h, h + HDR, n));
	rn_put32(h + 28, 0);
	for (size_t at = 0; at < w->len;) {
		ssize_t k = pwrite(w->fd, h + at, w->len - at, (off_t)(w->off + at));
		if (k <= 0)
			return RN_EIO;
		at += (size_t)k;
	}
	w->seq = rn_get64(h + 16);
	w->off += w->len;
	wal_drop(w);
	return 0;
}

void wal_rewind(wal *w)
{
	new_lap(w);
}

int wal_clear(wal *w)
{
	static const uint8_t zeros[HDR];
	if (pwrite(w->fd, zeros, HDR, 0) != HDR || fdatasync(w->fd) != 0)
		return RN_EIO;
	new_lap(w);
	return 0;
}

int wal_sync(wal *w)
{
	return fdatasync(w->fd) == 0 ? 0 : RN_EIO;
}
