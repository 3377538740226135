/* web.h — the dashboard's files (web/), compiled into the binary by cmake/embed.cmake. */
#ifndef RN_WEB_H
#define RN_WEB_H

#include <stddef.h>

typedef struct {
	const char *path; /* "/index.html", "/app.js", ... */
	const char *type; /* its Content-Type */
	const unsigned char *data;
	size_t len;
} rn_web_asset;

extern const rn_web_asset rn_web_assets[];
extern const size_t rn_web_nassets;

#endif
