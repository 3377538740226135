/* seen.c — the table of checked chunk contents and their GMAC tags (seen.h). */
#include "seen.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"

typedef struct {
	uint8_t name[FILES_HASH];
	uint8_t tag[FILES_TAG];
} way;

typedef struct {
	way w[2];
	uint8_t used;  /* bit i: way i holds a name */
	uint8_t older; /* the way used less lately: the next to give up its place */
} set;

struct files_seen {
	uint8_t key[FILES_SEEN_KEY];
	set *sets;
};

struct files_tagger {
	EVP_CIPHER_CTX *c;
};

files_seen *files_seen_new(const uint8_t key[FILES_SEEN_KEY])
{
	files_seen *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->sets = calloc(FILES_SEEN_SETS, sizeof *s->sets);
	if (!s->sets) {
		files_seen_free(s);
		return NULL;
	}
	memcpy(s->key, key, sizeof s->key);
	return s;
}

void files_seen_free(files_seen *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s->key, sizeof s->key);
	free(s->sets);
	free(s);
}

static set *set_of(files_seen *s, const uint8_t name[FILES_HASH])
{
	uint32_t h = (uint32_t)name[0] | (uint32_t)name[1] << 8 | (uint32_t)name[2] << 16 |
	             (uint32_t)name[3] << 24;
	return &s->sets[h % FILES_SEEN_SETS];
}

bool files_seen_get(files_seen *s, const uint8_t name[FILES_HASH], uint8_t tag[FILES_TAG])
{
	set *t = set_of(s, name);
	for (int i = 0; i < 2; i++)
		if ((t->used >> i & 1) && !memcmp(t->w[i].name, name, FILES_HASH)) {
			memcpy(tag, t->w[i].tag, FILES_TAG);
			t->older = (uint8_t)(1 - i);
			return true;
		}
	return false;
}

void files_seen_put(files_seen *s, const uint8_t name[FILES_HASH], const uint8_t tag[FILES_TAG])
{
	set *t = set_of(s, name);
	int at = -1;
	for (int i = 0; i < 2 && at < 0; i++)
		if ((t->used >> i & 1) && !memcmp(t->w[i].name, name, FILES_HASH))
			at = i; /* known: its tag again */
	for (int i = 0; i < 2 && at < 0; i++)
		if (!(t->used >> i & 1))
			at = i; /* a free way */
	if (at < 0)
		at = t->older;
	memcpy(t->w[at].name, name, FILES_HASH);
	memcpy(t->w[at].tag, tag, FILES_TAG);
	t->used |= (uint8_t)(1u << at);
	t->older = (uint8_t)(1 - at);
}

/* GMAC: AES-128-GCM over the bytes as additional data, no plaintext. The IV is fixed:
 * the tags stay inside this process, so the mask E_K(IV) is one secret constant and two
 * tags are equal exactly when the GHASHes of the two inputs (lengths included) are. */
files_tagger *files_tagger_begin(const files_seen *s)
{
	static const uint8_t iv[12] = {0};
	files_tagger *t = malloc(sizeof *t);
	if (!t)
		return NULL;
	t->c = EVP_CIPHER_CTX_new();
	if (!t->c || EVP_EncryptInit_ex(t->c, EVP_aes_128_gcm(), NULL, s->key, iv) != 1) {
		EVP_CIPHER_CTX_free(t->c);
		free(t);
		return NULL;
	}
	return t;
}

void files_tagger_update(files_tagger *t, const uint8_t *buf, size_t len)
{
	if (!t || !t->c)
		return;
	while (len) { /* EVP lengths are int */
		int k = len > (1u << 30) ? 1 << 30 : (int)len, out;
		if (EVP_EncryptUpdate(t->c, NULL, &out, buf, k) != 1) {
			EVP_CIPHER_CTX_free(t->c);
			t->c = NULL; /* end reports it */
			return;
		}
		buf += k;
		len -= (size_t)k;
	}
}

int files_tagger_end(files_tagger *t, uint8_t tag[FILES_TAG])
{
	if (!t)
		return RN_ENOMEM;
	int out, rc = RN_ENOMEM;
	if (t->c && EVP_EncryptFinal_ex(t->c, NULL, &out) == 1 &&
	    EVP_CIPHER_CTX_ctrl(t->c, EVP_CTRL_GCM_GET_TAG, FILES_TAG, tag) == 1)
		rc = 0;
	EVP_CIPHER_CTX_free(t->c);
	free(t);
	return rc;
}

int files_seen_tag(const files_seen *s, const uint8_t *buf, size_t len, uint8_t tag[FILES_TAG])
{
	files_tagger *t = files_tagger_begin(s);
	files_tagger_update(t, buf, len);
	return files_tagger_end(t, tag);
}

bool files_seen_check(files_seen *s, const uint8_t name[FILES_HASH], const uint8_t *buf, size_t len,
                      bool *by_mac)
{
	uint8_t want[FILES_TAG], got[FILES_TAG];
	*by_mac = false;
	bool tagged = files_seen_tag(s, buf, len, got) == 0;
	if (tagged && files_seen_get(s, name, want) && !CRYPTO_memcmp(want, got, FILES_TAG)) {
		*by_mac = true;
		return true;
	}
	/* unknown, or a different tag: only SHA-256 can say (a tag differs for any damage) */
	uint8_t h[FILES_HASH];
	files_sha256(buf, len, h);
	if (memcmp(h, name, FILES_HASH) != 0)
		return false;
	if (tagged)
		files_seen_put(s, name, got);
	return true;
}
