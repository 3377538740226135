/* auth.c — see auth.h. HMAC-SHA256, AES-256-GCM and the random generator are OpenSSL's
 * libcrypto. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int auth_random(uint8_t *out, size_t len)
{
	return RAND_bytes(out, (int)len) == 1 ? 0 : -1;
}

static int hexval(int c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

int auth_load_key(const char *path, uint8_t key[AUTH_KEY], char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read the cluster key %s: %s", path, strerror(errno));
		return -1;
	}
	char text[4 * AUTH_KEY];
	size_t len = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[len] = '\0';
	const char *p = text;
	while (isspace((unsigned char)*p))
		p++;
	size_t digits = 0;
	while (p[digits] && !isspace((unsigned char)p[digits]))
		digits++;
	const char *rest = p + digits;
	while (isspace((unsigned char)*rest))
		rest++;
	if (digits != 2 * AUTH_KEY || *rest) {
		snprintf(err, errlen,
		         "the cluster key %s should hold %d hex digits and nothing else", path,
		         2 * AUTH_KEY);
		return -1;
	}
	for (size_t i = 0; i < AUTH_KEY; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			snprintf(err, errlen, "the cluster key %s has a character that is not hex",
			         path);
			return -1;
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int auth_new_key_file(const char *path, char *err, size_t errlen)
{
	uint8_t key[AUTH_KEY];
	if (auth_random(key, sizeof key) < 0) {
		snprintf(err, errlen, "no random bytes for a cluster key");
		return -1;
	}
	char text[2 * AUTH_KEY + 2];
	for (size_t i = 0; i < AUTH_KEY; i++)
		snprintf(text + 2 * i, 3, "%02x", key[i]);
	text[2 * AUTH_KEY] = '\n';
	text[2 * AUTH_KEY + 1] = '\0';
	OPENSSL_cleanse(key, sizeof key);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create the cluster key %s: %s", path,
		         strerror(errno));
		return -1;
	}
	size_t len = strlen(text);
	bool ok = write(fd, text, len) == (ssize_t)len;
	ok = close(fd) == 0 && ok;
	OPENSSL_cleanse(text, sizeof text);
	if (!ok) {
		snprintf(err, errlen, "cannot write the cluster key %s", path);
		unlink(path);
		return -1;
	}
	return 0;
}

static void hmac(const uint8_t *key, size_t klen, const uint8_t *data, size_t len,
                 uint8_t out[AUTH_TAG])
{
	unsigned olen = AUTH_TAG;
	HMAC(EVP_sha256(), key, (int)klen, data, len, out, &olen);
}

void auth_session_init(auth_session *s, const uint8_t key[AUTH_KEY], const uint8_t na[AUTH_NONCE],
                       const uint8_t nc[AUTH_NONCE], const char *acceptor)
{
	static const char label[] = "ringnet session v2";
	uint8_t in[sizeof label + 2 * AUTH_NONCE + 64];
	size_t alen = strnlen(acceptor, 63), len = 0;
	memcpy(in, label, sizeof label); /* the NUL too: a separator */
	len += sizeof label;
	memcpy(in + len, na, AUTH_NONCE);
	len += AUTH_NONCE;
	memcpy(in + len, nc, AUTH_NONCE);
	len += AUTH_NONCE;
	memcpy(in + len, acceptor, alen);
	len += alen;
	hmac(key, AUTH_KEY, in, len, s->k);
	hmac(s->k, sizeof s->k, (const uint8_t *)"seal", 4, s->ek);
	s->cx = NULL;
	s->cx_enc = 0;
}

void auth_session_clear(auth_session *s)
{
	EVP_CIPHER_CTX_free(s->cx); /* (NULL is fine) */
	OPENSSL_cleanse(s, sizeof *s);
}

void auth_session_back(const auth_session *s, auth_session *back)
{
	memcpy(back->k, s->k, sizeof back->k);
	hmac(s->k, sizeof s->k, (const uint8_t *)"seal back", 9, back->ek);
	back->cx = NULL;
	back->cx_enc = 0;
}

void auth_hello_tag(const auth_session *s, uint8_t tag[AUTH_TAG])
{
	hmac(s->k, sizeof s->k, (const uint8_t *)"hello", 5, tag);
}

/* 12-byte GCM nonce: four zero bytes, then seq big-endian. A session's key is used for one
 * direction of one connection only, so a nonce never repeats under a key. */
static void seal_iv(uint64_t seq, uint8_t iv[12])
{
	memset(iv, 0, 4);
	for (int i = 0; i < 8; i++)
		iv[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* The session's cipher context, keyed for enc (1 seal, 0 open): made and keyed (the AES key
 * schedule) once, not per frame; NULL if libcrypto fails. */
static EVP_CIPHER_CTX *keyed(auth_session *s, int enc)
{
	if (s->cx && s->cx_enc == enc)
		return s->cx;
	if (!s->cx && !(s->cx = EVP_CIPHER_CTX_new()))
		return NULL;
	if (EVP_CipherInit_ex(s->cx, EVP_aes_256_gcm(), NULL, s->ek, NULL, enc) != 1) {
		EVP_CIPHER_CTX_free(s->cx);
		s->cx = NULL;
		return NULL;
	}
	s->cx_enc = enc;
	return s->cx;
}

/* One AES-256-GCM pass over frame[aad, len) in place; enc 1 seals, 0 opens. Setting the
 * nonce restarts the context's GCM state (counter, hash, tag) and keeps its key. */
static bool gcm(auth_session *s, uint64_t seq, uint8_t *frame, size_t len, size_t aad,
                uint8_t tag[AUTH_SEAL], int enc)
{
	if (aad > len || len - aad > INT_MAX || aad > INT_MAX)
		return false;
	uint8_t iv[12], fin[16];
	seal_iv(seq, iv);
	EVP_CIPHER_CTX *c = keyed(s, enc);
	int n = 0;
	return c && EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, enc) == 1 &&
	       (aad == 0 || EVP_CipherUpdate(c, NULL, &n, frame, (int)aad) == 1) &&
	       (len == aad ||
	        EVP_CipherUpdate(c, frame + aad, &n, frame + aad, (int)(len - aad)) == 1) &&
	       (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, AUTH_SEAL, tag) == 1) &&
	       EVP_CipherFinal_ex(c, fin, &n) == 1 /* GCM writes nothing */ &&
	       (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, AUTH_SEAL, tag) == 1);
}

int auth_seal(auth_session *s, uint64_t seq, uint8_t *frame, size_t len, size_t aad,
              uint8_t tag[AUTH_SEAL])
{
	return gcm(s, seq, frame, len, aad, tag, 1) ? 0 : -1;
}

bool auth_open(auth_session *s, uint64_t seq, uint8_t *frame, size_t len, size_t aad,
               const uint8_t tag[AUTH_SEAL])
{
	uint8_t t[AUTH_SEAL];
	memcpy(t, tag, sizeof t);
	return gcm(s, seq, frame, len, aad, t, 0);
}

bool auth_tag_eq(const uint8_t a[AUTH_TAG], const uint8_t b[AUTH_TAG])
{
	return CRYPTO_memcmp(a, b, AUTH_TAG) == 0;
}
