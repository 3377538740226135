/* fuzz_ident.c — libFuzzer target for the peer identity proof (src/net/cert.c,
 * cert_ident_check): any bytes a holder of the cluster key can send as the body of a
 * WIRE_IDENT frame. It must never crash, read out of bounds or leak, and only a proof
 * made with the node key of a certificate from the CA, for this session, may pass.
 * $FUZZ_IDENT_DIR holds that CA and a node certificate (made there when missing); a valid
 * proof is written there as ident.seed, for the corpus (tests/fuzz/run.sh). */
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/cert.h"

static X509_STORE *store;
static const uint8_t secret[32] = "a session secret of 32 bytes...";

static void fail(const char *what, const char *err)
{
	fprintf(stderr, "fuzz_ident: %s: %s\n", what, err);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *dir = getenv("FUZZ_IDENT_DIR");
	char err[800], crt[600], key[600], seed[600];
	if (!dir)
		fail("FUZZ_IDENT_DIR", "not set");
	snprintf(crt, sizeof crt, "%s/node.crt", dir);
	snprintf(key, sizeof key, "%s/node.key", dir);
	snprintf(seed, sizeof seed, "%s/ident.seed", dir);
	if (!cert_ca_exists(dir, true) && cert_ca_init(dir, "fuzz", err, sizeof err) < 0)
		fail("the CA", err);
	cert_names nm = {.peer = "127.0.0.1:7000"};
	if (access(crt, R_OK) != 0 &&
	    cert_issue(dir, "node", &nm, 30, crt, key, err, sizeof err) < 0)
		fail("the node certificate", err);
	snprintf(crt, sizeof crt, "%s/ca.crt", dir);
	X509 *ca = cert_read(crt, err, sizeof err);
	store = X509_STORE_new();
	if (!ca || !store || X509_STORE_add_cert(store, ca) != 1)
		fail("the CA certificate", err);
	X509_free(ca);
	/* the seed: a valid proof, which must pass (else the target tests nothing) */
	snprintf(crt, sizeof crt, "%s/node.crt", dir);
	X509 *x = cert_read(crt, err, sizeof err);
	EVP_PKEY *k = x ? cert_read_key(key, err, sizeof err) : NULL;
	uint8_t body[2 + CERT_IDENT_MAX + CERT_SIG_MAX], *p = body + 2;
	int dlen = k ? i2d_X509(x, &p) : -1;
	size_t siglen = CERT_SIG_MAX;
	if (dlen <= 0 || dlen > CERT_IDENT_MAX ||
	    cert_ident_sign(k, secret, sizeof secret, p, &siglen) < 0)
		fail("the seed", err);
	body[0] = (uint8_t)(dlen >> 8);
	body[1] = (uint8_t)dlen;
	size_t len = 2 + (size_t)dlen + siglen;
	char cn[64], addr[64];
	const char *why = cert_ident_check(store, body, len, secret, sizeof secret, cn, sizeof cn,
	                                   addr, sizeof addr);
	if (why || strcmp(cn, "node") || strcmp(addr, "127.0.0.1:7000"))
		fail("the valid proof does not pass", why ? why : "another name");
	FILE *f = fopen(seed, "wb");
	if (!f || fwrite(body, 1, len, f) != len || fclose(f) != 0)
		fail("writing the seed", seed);
	X509_free(x);
	EVP_PKEY_free(k);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char cn[64] = "", addr[64] = "";
	const char *why = cert_ident_check(store, data, size, secret, sizeof secret, cn, sizeof cn,
	                                   addr, sizeof addr);
	if (!why && strcmp(cn, "node") != 0)
		abort(); /* only the CA's node can prove itself */
	return 0;
}
