/* query_http.h — the HTTP GET the query commands share (query_cmd.c). */
#ifndef RN_QUERY_HTTP_H
#define RN_QUERY_HTTP_H

#include <stddef.h>

typedef struct {
	char *data;
	size_t len;
} qh_buf;

/* GET url on a CURL handle (kept open between calls); 0 with *status, or -1 (said why). */
int qh_get(void *curl, const char *url, long *status, qh_buf *out);
double qh_now_ms(void);
void qh_base(const char *node, char *out, size_t len);

#endif
