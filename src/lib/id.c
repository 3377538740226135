/* id.c — see id.h. SHA-1 comes from OpenSSL's libcrypto. */
#include "id.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "rng.h"

bool rn_id_is_zero(const rn_id *a)
{
	for (int i = 0; i < RN_ID_BYTES; i++)
		if (a->b[i])
			return false;
	return true;
}

void rn_id_truncate(rn_id *x, unsigned m)
{
	if (m >= RN_ID_BITS)
		return;
	unsigned full = m / 8, rest = m % 8;
	if (rest) {
		x->b[full] &= (uint8_t)(0xffu << (8 - rest));
		full++;
	}
	memset(x->b + full, 0, RN_ID_BYTES - full);
}

/* SHA-1 fetched from libcrypto's provider once: EVP_sha1() names the algorithm only, and
 * every EVP_Digest given it looked the implementation up again (name tables, locks),
 * which cost more than hashing a key. Set once, read-only after: no state of any core. */
static EVP_MD *sha1_md;
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;

static void sha1_fetch(void)
{
	sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL);
}

void rn_id_hash(rn_id *out, const void *data, size_t len, unsigned m)
{
	unsigned int n = 0;
	pthread_once(&sha1_once, sha1_fetch);
	EVP_Digest(data, len, out->b, &n, sha1_md ? sha1_md : EVP_sha1(), NULL);
	rn_id_truncate(out, m);
}

void rn_id_random(rn_id *out, struct rn_rng *rng, unsigned m)
{
	/* byte i is byte i % 8 of the (i / 8)th draw, counted from its low end */
	uint64_t v[3] = {rn_rng_next(rng), rn_rng_next(rng), rn_rng_next(rng)};
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(out->b, v, RN_ID_BYTES);
#else
	for (int i = 0; i < RN_ID_BYTES; i++)
		out->b[i] = (uint8_t)(v[i / 8] >> (8 * (i % 8)));
#endif
	rn_id_truncate(out, m);
}

void rn_id_from_u64(rn_id *out, uint64_t v, unsigned m)
{
	memset(out, 0, sizeof *out);
	/* place v so that its lowest bit lands on bit (160 - m) */
	unsigned shift = RN_ID_BITS - m;
	for (unsigned bit = 0; bit < 64 && bit < m; bit++) {
		if (!((v >> bit) & 1))
			continue;
		unsigned pos = shift + bit; /* from least significant end */
		out->b[RN_ID_BYTES - 1 - pos / 8] |= (uint8_t)(1u << (pos % 8));
	}
}

uint64_t rn_id_to_u64(const rn_id *x, unsigned m)
{
	uint64_t v = 0;
	unsigned shift = RN_ID_BITS - m;
	for (unsigned bit = 0; bit < 64 && bit < m; bit++) {
		unsigned pos = shift + bit;
		if (x->b[RN_ID_BYTES - 1 - pos / 8] & (1u << (pos % 8)))
			v |= (uint64_t)1 << bit;
	}
	return v;
}

void rn_id_add_pow2(rn_id *out, const rn_id *a, unsigned bit)
{
	*out = *a;
	if (bit >= RN_ID_BITS)
		return;
	int i = RN_ID_BYTES - 1 - (int)(bit / 8);
	unsigned carry = 1u << (bit % 8);
	for (; i >= 0 && carry; i--) {
		unsigned s = out->b[i] + carry;
		out->b[i] = (uint8_t)s;
		carry = s >> 8;
	}
}

void rn_id_sub(rn_id *out, const rn_id *a, const rn_id *b)
{
	int borrow = 0;
	for (int i = RN_ID_BYTES - 1; i >= 0; i--) {
		int d = (int)a->b[i] - (int)b->b[i] - borrow;
		borrow = d < 0;
		out->b[i] = (uint8_t)(d + (borrow ? 256 : 0));
	}
}

unsigned rn_id_bitlen(const rn_id *x)
{
	rn_id zero;
	memset(&zero, 0, sizeof zero);
	return rn_id_dist_bitlen(x, &zero);
}

void rn_id_to_hex(const rn_id *x, char out[RN_ID_HEX])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < RN_ID_BYTES; i++) {
		out[2 * i] = digits[x->b[i] >> 4];
		out[2 * i + 1] = digits[x->b[i] & 15];
	}
	out[RN_ID_HEX - 1] = '\0';
}

int rn_id_from_hex(rn_id *out, const char *hex)
{
	memset(out, 0, sizeof *out);
	size_t n = strlen(hex);
	if (n == 0 || n > 2 * RN_ID_BYTES)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = hex[i];
		unsigned v;
		if (c >= '0' && c <= '9')
			v = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v = (unsigned)(c - 'A' + 10);
		else
			return -1;
		out->b[i / 2] |= (uint8_t)(i % 2 ? v : v << 4);
	}
	return 0;
}
