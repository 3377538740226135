/* data.c — AirNow CSV to columns (see data.h). */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../lib/err.h"
#include "../lib/grow.h"

#define NFIELDS 13

typedef struct {
	double *lat, *lon, *value;
	int32_t *minute;
	int16_t *aqi;
	uint8_t *scale; /* 3 a row: the decimals of lat, lon, value as written */
	size_t n, cap;
	bool sorted;
} column_set;

struct q_data {
	column_set p[Q_NPARAMS];
	q_data_stats st;
	char last_time[16]; /* the rows of one file share their time: parse it once */
	int32_t last_minute;
	bool has_last;
};

q_data *q_data_new(void)
{
	q_data *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	for (int i = 0; i < Q_NPARAMS; i++)
		d->p[i].sorted = true;
	return d;
}

void q_data_free(q_data *d)
{
	if (!d)
		return;
	for (int i = 0; i < Q_NPARAMS; i++) {
		column_set *c = &d->p[i];
		free(c->lat);
		free(c->lon);
		free(c->value);
		free(c->minute);
		free(c->aqi);
		free(c->scale);
	}
	free(d);
}

static int reserve(column_set *c)
{
	if (c->n < c->cap)
		return 0;
	size_t cap = c->cap ? c->cap * 2 : 4096;
	double *a = realloc(c->lat, cap * sizeof *a);
	if (!a)
		return RN_ENOMEM;
	c->lat = a;
	if (!(a = realloc(c->lon, cap * sizeof *a)))
		return RN_ENOMEM;
	c->lon = a;
	if (!(a = realloc(c->value, cap * sizeof *a)))
		return RN_ENOMEM;
	c->value = a;
	int32_t *m = realloc(c->minute, cap * sizeof *m);
	if (!m)
		return RN_ENOMEM;
	c->minute = m;
	int16_t *q = realloc(c->aqi, cap * sizeof *q);
	if (!q)
		return RN_ENOMEM;
	c->aqi = q;
	uint8_t *s = realloc(c->scale, cap * 3);
	if (!s)
		return RN_ENOMEM;
	c->scale = s;
	c->cap = cap;
	return 0;
}

static const double pow10_[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

/* A finite number filling the whole field, and its decimals (Q_SCALE_NONE when it is not
 * a plain [-]digits[.digits] of at most 15 digits). The plain case needs no strtod: m and
 * 10^k are exact doubles, so the one division m / 10^k is correctly rounded, as strtod is. */
static bool number(const char *s, size_t n, double *out, uint8_t *scale)
{
	size_t i = s[0] == '-';
	uint64_t m = 0;
	int digits = 0, decimals = -1;
	for (; i < n; i++) {
		if (s[i] >= '0' && s[i] <= '9') {
			m = m * 10 + (uint64_t)(s[i] - '0');
			digits++;
			if (decimals >= 0)
				decimals++;
		} else if (s[i] == '.' && decimals < 0) {
			decimals = 0;
		} else {
			break;
		}
	}
	if (i == n && digits && digits <= 15 && decimals != 0) {
		int k = decimals < 0 ? 0 : decimals;
		double v = (double)m / pow10_[k];
		*out = s[0] == '-' ? -v : v;
		*scale = (uint8_t)k;
		return true;
	}
	*scale = Q_SCALE_NONE;
	char buf[64];
	if (!n || n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *end;
	errno = 0;
	double v = strtod(buf, &end);
	if (*end || errno || !isfinite(v))
		return false;
	*out = v;
	return true;
}

static int16_t whole(const char *s, size_t n)
{
	if (!n || n > 6)
		return -1;
	int v = 0, sign = 1;
	size_t i = 0;
	if (s[0] == '-') {
		sign = -1;
		i = 1;
		if (n == 1)
			return -1;
	}
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	v *= sign;
	return v >= INT16_MIN && v <= INT16_MAX ? (int16_t)v : -1;
}

/* Splits one line into fields: each quoted ("" is a quote inside) or bare. false when a
 * quote is not closed or there are not NFIELDS fields. Fields point into the line (an
 * escaped quote leaves the pair in place: no numeric field has one). */
static bool split(const char *s, size_t n, const char **f, size_t *fl)
{
	size_t i = 0;
	int k = 0;
	for (;;) {
		if (k == NFIELDS)
			return false;
		if (i < n && s[i] == '"') {
			size_t start = ++i;
			for (;;) {
				if (i >= n)
					return false;
				if (s[i] == '"') {
					if (i + 1 < n && s[i + 1] == '"') {
						i += 2;
						continue;
					}
					break;
				}
				i++;
			}
			f[k] = s + start;
			fl[k++] = i - start;
			i++; /* the closing quote */
		} else {
			size_t start = i;
			while (i < n && s[i] != ',')
				i++;
			f[k] = s + start;
			fl[k++] = i - start;
		}
		if (i >= n)
			break;
		if (s[i] != ',')
			return false;
		i++;
	}
	return k == NFIELDS;
}

static int add_line(q_data *d, const char *s, size_t n)
{
	const char *f[NFIELDS];
	size_t fl[NFIELDS];
	double lat, lon, value;
	uint8_t sc[3];
	char tbuf[20], pbuf[16];
	int32_t minute = 0;
	int param = -1;
	bool ok = split(s, n, f, fl) && number(f[0], fl[0], &lat, &sc[0]) &&
	          number(f[1], fl[1], &lon, &sc[1]) && number(f[4], fl[4], &value, &sc[2]) &&
	          fl[2] == 16 && fl[3] < sizeof pbuf;
	if (ok && d->has_last && !memcmp(f[2], d->last_time, 16)) {
		minute = d->last_minute;
	} else if (ok) {
		memcpy(tbuf, f[2], 16);
		tbuf[16] = '\0';
		ok = q_parse_time(tbuf, &minute);
		if (ok) {
			memcpy(d->last_time, f[2], 16);
			d->last_minute = minute;
			d->has_last = true;
		}
	}
	if (ok) {
		memcpy(pbuf, f[3], fl[3]);
		pbuf[fl[3]] = '\0';
		ok = (param = q_param_find(pbuf)) >= 0;
	}
	if (!ok) {
		d->st.bad_rows++;
		return 0;
	}
	column_set *c = &d->p[param];
	if (reserve(c) < 0)
		return RN_ENOMEM;
	if (c->n && c->minute[c->n - 1] > minute)
		c->sorted = false;
	c->lat[c->n] = lat;
	c->lon[c->n] = lon;
	c->value[c->n] = value;
	c->minute[c->n] = minute;
	c->aqi[c->n] = whole(f[7], fl[7]);
	memcpy(c->scale + 3 * c->n, sc, 3);
	c->n++;
	d->st.rows++;
	return 0;
}

int q_data_add_csv(q_data *d, const char *text, size_t len)
{
	size_t i = 0;
	d->st.bytes += len;
	while (i < len) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - text) : len, e = end;
		if (e > i && text[e - 1] == '\r')
			e--;
		if (e > i) {
			int rc = add_line(d, text + i, e - i);
			if (rc)
				return rc;
		}
		i = end + 1;
	}
	return 0;
}

static int load_file(q_data *d, const char *path, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return RN_EIO;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int rc = 0;
	for (;;) {
		if (rn_grow((void **)&buf, &cap, len + 65536, 1, 262144) < 0) {
			rc = RN_ENOMEM;
			break;
		}
		size_t k = fread(buf + len, 1, cap - len, fp);
		len += k;
		if (k == 0) {
			if (ferror(fp)) {
				snprintf(err, errlen, "cannot read %s", path);
				rc = RN_EIO;
			}
			break;
		}
	}
	fclose(fp);
	if (!rc) {
		d->st.files++;
		rc = q_data_add_csv(d, buf, len);
	}
	free(buf);
	return rc;
}

static bool is_dir(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int q_data_load_days(q_data *d, const char *dir, int32_t day_lo, int32_t day_hi,
                     const uint8_t *want, char *err, size_t errlen)
{
	char sub[512];
	snprintf(sub, sizeof sub, "%s/data", dir);
	const char *base = is_dir(sub) ? sub : dir;
	for (int32_t day = day_lo; day <= day_hi; day++) {
		int32_t k = day - day_lo;
		if (want && !(want[k / 8] & (1u << (k % 8))))
			continue;
		int y, m, dd;
		q_civil(day, &y, &m, &dd);
		char folder[600];
		snprintf(folder, sizeof folder, "%s/%04d%02d%02d", base, y, m, dd);
		if (!is_dir(folder))
			continue;
		d->st.days++;
		for (int h = 0; h < 24; h++) {
			char path[700];
			snprintf(path, sizeof path, "%s/%04d%02d%02d-%02d.csv", folder, y, m, dd,
			         h);
			int rc = load_file(d, path, err, errlen);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* ---- sorting a column set by time (stable: a merge sort of an index) ---- */

static void merge_sort(uint32_t *ix, uint32_t *tmp, size_t n, const int32_t *key)
{
	if (n < 2)
		return;
	size_t h = n / 2;
	merge_sort(ix, tmp, h, key);
	merge_sort(ix + h, tmp, n - h, key);
	size_t a = 0, b = h, o = 0;
	while (a < h && b < n)
		tmp[o++] = key[ix[b]] < key[ix[a]] ? ix[b++] : ix[a++];
	while (a < h)
		tmp[o++] = ix[a++];
	while (b < n)
		tmp[o++] = ix[b++];
	memcpy(ix, tmp, n * sizeof *ix);
}

#define PERMUTE(T, arr)                                                                            \
	do {                                                                                       \
		T *na = malloc(c->n * sizeof(T));                                                  \
		if (!na)                                                                           \
			goto nomem;                                                                \
		for (size_t i = 0; i < c->n; i++)                                                  \
			na[i] = (arr)[ix[i]];                                                      \
		free(arr);                                                                         \
		(arr) = na;                                                                        \
	} while (0)

int q_data_finish(q_data *d)
{
	for (int p = 0; p < Q_NPARAMS; p++) {
		column_set *c = &d->p[p];
		if (c->sorted)
			continue;
		uint32_t *ix = malloc(c->n * sizeof *ix), *tmp = malloc(c->n * sizeof *tmp);
		if (!ix || !tmp) {
			free(ix);
			free(tmp);
			return RN_ENOMEM;
		}
		for (size_t i = 0; i < c->n; i++)
			ix[i] = (uint32_t)i;
		merge_sort(ix, tmp, c->n, c->minute);
		free(tmp);
		PERMUTE(double, c->lat);
		PERMUTE(double, c->lon);
		PERMUTE(double, c->value);
		PERMUTE(int32_t, c->minute);
		PERMUTE(int16_t, c->aqi);
		uint8_t *ns = malloc(c->n * 3 + 1);
		if (!ns)
			goto nomem;
		for (size_t i = 0; i < c->n; i++)
			memcpy(ns + 3 * i, c->scale + 3 * (size_t)ix[i], 3);
		free(c->scale);
		c->scale = ns;
		c->cap = c->n;
		c->sorted = true;
		free(ix);
		continue;
	nomem:
		free(ix);
		return RN_ENOMEM;
	}
	return 0;
}

/* The first row at or after minute t. */
static size_t lower(const column_set *c, int32_t t)
{
	size_t lo = 0, hi = c->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->minute[mid] < t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint32_t q_data_scan(const q_data *d, int32_t day_lo, int32_t day_hi, const q_filter *f,
                     uint32_t limit, uint32_t count_to, q_rec *out)
{
	if (f->param >= Q_NPARAMS)
		return 0;
	const column_set *c = &d->p[f->param];
	int64_t t0 = (int64_t)day_lo * 1440, t1 = (int64_t)day_hi * 1440 + 1439;
	if (f->t_from > t0)
		t0 = f->t_from;
	if (f->t_to < t1)
		t1 = f->t_to;
	if (t0 > t1 || t0 > INT32_MAX)
		return 0;
	uint32_t matched = 0;
	if (count_to < limit)
		count_to = limit;
	for (size_t i = lower(c, (int32_t)t0); i < c->n && c->minute[i] <= t1 && matched < count_to;
	     i++) {
		if (c->value[i] < f->vmin || c->value[i] > f->vmax || c->lat[i] < f->lat_min ||
		    c->lat[i] > f->lat_max || c->lon[i] < f->lon_min || c->lon[i] > f->lon_max)
			continue;
		if (matched < limit)
			out[matched] =
			    (q_rec){c->lat[i],       c->lon[i],           c->value[i],
			            c->minute[i],    c->aqi[i],           (uint8_t)f->param,
			            c->scale[3 * i], c->scale[3 * i + 1], c->scale[3 * i + 2]};
		matched++;
	}
	return matched;
}

void q_data_stats_get(const q_data *d, q_data_stats *s)
{
	*s = d->st;
}

size_t q_data_bytes(const q_data *d)
{
	size_t b = 0;
	for (int p = 0; p < Q_NPARAMS; p++)
		b += d->p[p].cap * (3 * sizeof(double) + sizeof(int32_t) + sizeof(int16_t) + 3);
	return b;
}
