/* fuzz_query.c — libFuzzer target for the WIRE_QUERY body decoder (src/query/qwire.c):
 * any bytes a peer can send as one frame body. It must never crash or read out of
 * bounds; what decodes must encode back to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static q_rec recs[Q_MAX_RECORDS];
	q_msg m;
	if (q_wire_decode(data, size, &m, recs) != 0)
		return 0;
	size_t n = q_wire_size(&m);
	if (n != size)
		abort(); /* every layout has one length */
	uint8_t *out = malloc(n);
	if (!out)
		return 0;
	q_wire_encode(&m, out);
	if (memcmp(out, data, n) != 0)
		abort();
	free(out);
	return 0;
}
