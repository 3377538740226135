/* The cluster key's file, tags and seals (src/net/auth.c): a key file is read exactly, a
 * new one is private, every input of a tag changes it, and a sealed frame opens only as it
 * was sealed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/auth.h"

static char dir[] = "/tmp/ringnet-test-auth-XXXXXX";

static const char *file_with(const char *text)
{
	static char path[128];
	snprintf(path, sizeof path, "%s/k", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void test_key_file(void **state)
{
	(void)state;
	uint8_t key[AUTH_KEY];
	char err[256];
	const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	char text[100];
	snprintf(text, sizeof text, "  %s\n", hex);
	assert_int_equal(auth_load_key(file_with(text), key, err, sizeof err), 0);
	for (int i = 0; i < AUTH_KEY; i++)
		assert_int_equal(key[i], i);
	snprintf(text, sizeof text, "%.62s", hex); /* too short */
	assert_int_equal(auth_load_key(file_with(text), key, err, sizeof err), -1);
	assert_non_null(strstr(err, "64 hex digits"));
	snprintf(text, sizeof text, "%s00", hex); /* too long */
	assert_int_equal(auth_load_key(file_with(text), key, err, sizeof err), -1);
	snprintf(text, sizeof text, "%s extra", hex); /* something after it */
	assert_int_equal(auth_load_key(file_with(text), key, err, sizeof err), -1);
	snprintf(text, sizeof text, "%.63sg", hex); /* not hex */
	assert_int_equal(auth_load_key(file_with(text), key, err, sizeof err), -1);
	assert_non_null(strstr(err, "not hex"));
	char missing[160];
	snprintf(missing, sizeof missing, "%s/none", dir);
	assert_int_equal(auth_load_key(missing, key, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot read"));
}

static void test_new_key_file(void **state)
{
	(void)state;
	char path[160], err[256];
	snprintf(path, sizeof path, "%s/new", dir);
	unlink(path);
	assert_int_equal(auth_new_key_file(path, err, sizeof err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	uint8_t a[AUTH_KEY], b[AUTH_KEY];
	assert_int_equal(auth_load_key(path, a, err, sizeof err), 0);
	assert_int_equal(auth_new_key_file(path, err, sizeof err), -1); /* never overwritten */
	unlink(path);
	assert_int_equal(auth_new_key_file(path, err, sizeof err), 0);
	assert_int_equal(auth_load_key(path, b, err, sizeof err), 0);
	assert_memory_not_equal(a, b, AUTH_KEY);
	unlink(path);
}

static void test_tags_depend_on_every_input(void **state)
{
	(void)state;
	uint8_t key[AUTH_KEY] = {1}, key2[AUTH_KEY] = {2}, na[AUTH_NONCE] = {3},
	        nc[AUTH_NONCE] = {4}, na2[AUTH_NONCE] = {5};
	auth_session s, t;
	uint8_t x[AUTH_TAG], y[AUTH_TAG];
	auth_session_init(&s, key, na, nc, "127.0.0.1:6001");
	auth_session_init(&t, key, na, nc, "127.0.0.1:6001");
	auth_hello_tag(&s, x);
	auth_hello_tag(&t, y);
	assert_true(auth_tag_eq(x, y)); /* the same inputs, the same tag */
	const struct {
		const uint8_t *k, *a, *c;
		const char *addr;
	} other[] = {{key2, na, nc, "127.0.0.1:6001"},
	             {key, na2, nc, "127.0.0.1:6001"},
	             {key, na, na2, "127.0.0.1:6001"},
	             {key, na, nc, "127.0.0.1:6002"}};
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
		auth_session_init(&t, other[i].k, other[i].a, other[i].c, other[i].addr);
		auth_hello_tag(&t, y);
		assert_false(auth_tag_eq(x, y));
	}
}

/* A sealed frame opens with the same session and sequence number only; any change to
 * its header, body or tag, another sequence number or another session fails. */
static void test_seal_open(void **state)
{
	(void)state;
	uint8_t key[AUTH_KEY] = {1}, na[AUTH_NONCE] = {3}, nc[AUTH_NONCE] = {4};
	auth_session s, t;
	auth_session_init(&s, key, na, nc, "127.0.0.1:6001");
	auth_session_init(&t, key, na, nc, "127.0.0.1:6002");
	enum { LEN = 5 + 300 };
	uint8_t plain[LEN], f[LEN], g[LEN], tag[AUTH_SEAL], tag2[AUTH_SEAL];
	for (int i = 0; i < LEN; i++)
		plain[i] = (uint8_t)(i * 7);
	memcpy(f, plain, LEN);
	assert_int_equal(auth_seal(&s, 5, f, LEN, 5, tag), 0);
	assert_memory_equal(f, plain, 5);                   /* the header stays readable */
	assert_memory_not_equal(f + 5, plain + 5, LEN - 5); /* the body does not */
	memcpy(g, f, LEN);
	assert_true(auth_open(&s, 5, g, LEN, 5, tag));
	assert_memory_equal(g, plain, LEN);
	/* the same frame sealed again at another place in the stream looks different */
	memcpy(g, plain, LEN);
	assert_int_equal(auth_seal(&s, 6, g, LEN, 5, tag2), 0);
	assert_memory_not_equal(g + 5, f + 5, LEN - 5);
	struct {
		auth_session *s;
		uint64_t seq;
		int flip; /* byte of the frame to change, -1 none, LEN: the tag */
	} bad[] = {{&s, 6, -1}, {&t, 5, -1},      {&s, 5, 0},  {&s, 5, 4},
	           {&s, 5, 5},  {&s, 5, LEN - 1}, {&s, 5, LEN}};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memcpy(g, f, LEN);
		memcpy(tag2, tag, AUTH_SEAL);
		if (bad[i].flip == LEN)
			tag2[0] ^= 1;
		else if (bad[i].flip >= 0)
			g[bad[i].flip] ^= 0x40;
		assert_false(auth_open(bad[i].s, bad[i].seq, g, LEN, 5, tag2));
	}
	/* a frame that is only a header: authenticated, nothing to encrypt */
	memcpy(g, plain, 5);
	assert_int_equal(auth_seal(&s, 0, g, 5, 5, tag), 0);
	assert_true(auth_open(&s, 0, g, 5, 5, tag));
	g[1] ^= 1;
	assert_false(auth_open(&s, 0, g, 5, 5, tag));
	auth_session_clear(&s);
	auth_session_clear(&t);
}

/* A session keeps its expanded key across frames: a stream of frames of varied lengths
 * sealed by one session is, frame by frame, exactly what a session made afresh for each
 * frame seals (the oracle: nothing carried over), and opens in order on the receiving
 * session; a frame that fails to open (a flipped bit) leaves the next one unharmed, and a
 * session cleared and made again works as new. */
static void test_kept_context(void **state)
{
	(void)state;
	uint8_t key[AUTH_KEY] = {9}, na[AUTH_NONCE] = {1}, nc[AUTH_NONCE] = {2};
	auth_session tx, rx;
	auth_session_init(&tx, key, na, nc, "127.0.0.1:6001");
	auth_session_init(&rx, key, na, nc, "127.0.0.1:6001");
	enum { MAX = 5 + 2000 };
	static uint8_t plain[MAX], f[MAX], g[MAX];
	uint8_t tag[AUTH_SEAL], tag2[AUTH_SEAL];
	uint32_t x = 12345;
	for (uint64_t seq = 0; seq < 200; seq++) {
		x = x * 1103515245u + 12345u;
		size_t len = 5 + (x >> 8) % (MAX - 5 + 1);
		for (size_t i = 0; i < len; i++)
			plain[i] = (uint8_t)(i * 31 + seq);
		memcpy(f, plain, len);
		assert_int_equal(auth_seal(&tx, seq, f, len, 5, tag), 0);
		auth_session fresh;
		auth_session_init(&fresh, key, na, nc, "127.0.0.1:6001");
		memcpy(g, plain, len);
		assert_int_equal(auth_seal(&fresh, seq, g, len, 5, tag2), 0);
		auth_session_clear(&fresh);
		assert_memory_equal(f, g, len);
		assert_memory_equal(tag, tag2, AUTH_SEAL);
		if (seq % 17 == 3) { /* damaged on the way: refused, and the next still opens */
			memcpy(g, f, len);
			g[len - 1] ^= 0x10;
			assert_false(auth_open(&rx, seq, g, len, 5, tag));
		}
		assert_true(auth_open(&rx, seq, f, len, 5, tag));
		assert_memory_equal(f, plain, len);
	}
	auth_session_clear(&tx);
	uint8_t zero[sizeof tx];
	memset(zero, 0, sizeof zero);
	assert_memory_equal(&tx, zero, sizeof tx);
	auth_session_clear(&tx); /* twice is harmless */
	auth_session_init(&tx, key, na, nc, "127.0.0.1:6001");
	memcpy(f, plain, 105);
	assert_int_equal(auth_seal(&tx, 7, f, 105, 5, tag), 0);
	assert_true(auth_open(&rx, 7, f, 105, 5, tag));
	assert_memory_equal(f, plain, 105);
	auth_session_clear(&tx);
	auth_session_clear(&rx);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char path[160];
	snprintf(path, sizeof path, "%s/k", dir);
	unlink(path);
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key_file),
	    cmocka_unit_test(test_new_key_file),
	    cmocka_unit_test(test_tags_depend_on_every_input),
	    cmocka_unit_test(test_seal_open),
	    cmocka_unit_test(test_kept_context),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
