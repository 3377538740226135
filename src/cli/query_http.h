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

struct q_config;
/* Reads and checks a cluster file for command `who`: 0, or 2 (the exit status) after
 * saying on stderr which field is wrong. */
int qh_load_config(const char *who, const char *path, struct q_config *c);

#endif
