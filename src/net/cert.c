/* cert.c — the cluster CA and node certificates (see cert.h), with libcrypto. */
#include "cert.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The newest libcrypto error as text, or "unknown error". */
static const char *ssl_why(void)
{
	static _Thread_local char buf[256];
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	if (!e)
		return "unknown error";
	ERR_error_string_n(e, buf, sizeof buf);
	return buf;
}

static void path_in(char *out, size_t len, const char *dir, const char *file)
{
	snprintf(out, len, "%s/%s", dir, file);
}

bool cert_ca_exists(const char *dir, bool key)
{
	char p[600];
	path_in(p, sizeof p, dir, "ca.crt");
	if (access(p, R_OK) != 0)
		return false;
	path_in(p, sizeof p, dir, "ca.key");
	return !key || access(p, R_OK) == 0;
}

/* Writes PEM text through fn to path: to path.tmp (mode) first, renamed when whole. */
typedef int (*pem_fn)(FILE *f, void *obj);

static int pem_key(FILE *f, void *k)
{
	return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int pem_cert(FILE *f, void *x)
{
	return PEM_write_X509(f, x);
}

static int write_pem(const char *path, mode_t mode, bool excl, pem_fn fn, void *obj, char *err,
                     size_t errlen)
{
	char tmp[620];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if (excl && access(path, F_OK) == 0) {
		snprintf(err, errlen, "%s exists already: not overwriting it", path);
		return -1;
	}
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	bool ok = fn(f, obj) == 1;
	ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
	ok = fclose(f) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		snprintf(err, errlen, "cannot write %s: %s", path,
		         ok ? strerror(errno) : ssl_why());
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* The first key (key) or certificate in the PEM file at path; NULL with a message. */
static void *read_pem(const char *path, bool key, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	void *x = key ? (void *)PEM_read_PrivateKey(f, NULL, NULL, NULL)
	              : (void *)PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		snprintf(err, errlen, "%s holds no PEM %s (%s)", path,
		         key ? "private key" : "certificate", ssl_why());
	return x;
}

X509 *cert_read(const char *path, char *err, size_t errlen)
{
	return read_pem(path, false, err, errlen);
}

EVP_PKEY *cert_read_key(const char *path, char *err, size_t errlen)
{
	return read_pem(path, true, err, errlen);
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
	if (!e)
		return -1;
	int rc = X509_add_ext(x, e, -1) == 1 ? 0 : -1;
	X509_EXTENSION_free(e);
	return rc;
}

/* A certificate for key with subject cn, valid for days from an hour ago, with a random
 * 127-bit serial number; issuer NULL makes it self-signed (then name is its own). */
static X509 *new_cert(EVP_PKEY *key, const char *cn, int days, X509 *issuer)
{
	X509 *x = X509_new();
	BIGNUM *bn = BN_new();
	bool ok = x && bn && X509_set_version(x, 2) == 1 &&
	          BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
	          BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
	          X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
	          X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) != NULL &&
	          X509_set_pubkey(x, key) == 1;
	BN_free(bn);
	X509_NAME *name = ok ? X509_get_subject_name(x) : NULL;
	ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
	                                      (const unsigned char *)"ringnet", -1, -1, 0) == 1;
	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn,
	                                      -1, -1, 0) == 1;
	ok = ok && X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int cert_ca_init(const char *dir, const char *cn, char *err, size_t errlen)
{
	char kp[600], cp[600], subject[128];
	path_in(kp, sizeof kp, dir, "ca.key");
	path_in(cp, sizeof cp, dir, "ca.crt");
	if (access(kp, F_OK) == 0 || access(cp, F_OK) == 0) {
		snprintf(err, errlen,
		         "%s holds a CA already (ca.key or ca.crt): not overwriting it; remove "
		         "both to start over",
		         dir);
		return -1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(subject, sizeof subject, "ringnet cluster CA %s", cn);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = k ? new_cert(k, subject, CERT_CA_DAYS, NULL) : NULL;
	bool ok = x && add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
	          add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
	          add_ext(x, x, NID_subject_key_identifier, "hash") == 0 &&
	          X509_sign(x, k, EVP_sha256()) > 0;
	int rc = -1;
	if (!ok)
		snprintf(err, errlen, "cannot make a CA: %s", ssl_why());
	else if (write_pem(kp, 0600, true, pem_key, k, err, errlen) == 0) {
		rc = write_pem(cp, 0644, true, pem_cert, x, err, errlen);
		if (rc < 0)
			unlink(kp);
	}
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

/* "IP:a,IP:b,DNS:c": the subjectAltName value of nm; -1 when it does not fit or a name
 * is not an address / a host name. */
static int alt_names(const cert_names *nm, char *out, size_t len, char *err, size_t errlen)
{
	size_t at = 0;
	out[0] = '\0';
	for (int i = 0; i < nm->nip + nm->ndns; i++) {
		bool ip = i < nm->nip;
		const char *v = ip ? nm->ip[i] : nm->dns[i - nm->nip];
		ASN1_OCTET_STRING *a = ip ? a2i_IPADDRESS(v) : NULL;
		bool good = ip ? a != NULL
		               : *v && strspn(v, "abcdefghijklmnopqrstuvwxyz"
		                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                                 "0123456789.-*") == strlen(v);
		ASN1_OCTET_STRING_free(a);
		if (!good) {
			snprintf(err, errlen, "'%s' is not %s", v,
			         ip ? "an IP address" : "a host name (letters, digits, '.', '-')");
			return -1;
		}
		int w =
		    snprintf(out + at, len - at, "%s%s:%s", at ? "," : "", ip ? "IP" : "DNS", v);
		if (w < 0 || (size_t)w >= len - at) {
			snprintf(err, errlen, "too many names for one certificate");
			return -1;
		}
		at += (size_t)w;
	}
	if (nm->peer) {
		bool good = *nm->peer && strlen(nm->peer) < 64 &&
		            strspn(nm->peer, "0123456789.:abcdefghijklmnopqrstuvwxyz-") ==
		                strlen(nm->peer) &&
		            strchr(nm->peer, ':');
		int w = good ? snprintf(out + at, len - at, "%sURI:" CERT_PEER_URI "%s",
		                        at ? "," : "", nm->peer)
		             : -1;
		if (w < 0 || (size_t)w >= len - at) {
			snprintf(err, errlen, "'%s' is not a peer address HOST:PORT", nm->peer);
			return -1;
		}
		at += (size_t)w;
	}
	if (!at) {
		snprintf(err, errlen, "a certificate needs at least one IP address or host name");
		return -1;
	}
	return 0;
}

int cert_issue(const char *cadir, const char *cn, const cert_names *nm, int days,
               const char *crt_path, const char *key_path, char *err, size_t errlen)
{
	char san[CERT_MAX_NAMES * 2 * 80], kp[600], cp[600];
	if (alt_names(nm, san, sizeof san, err, errlen) < 0)
		return -1;
	path_in(kp, sizeof kp, cadir, "ca.key");
	path_in(cp, sizeof cp, cadir, "ca.crt");
	EVP_PKEY *cakey = cert_read_key(kp, err, errlen);
	X509 *ca = cakey ? cert_read(cp, err, errlen) : NULL;
	if (ca && X509_check_private_key(ca, cakey) != 1) {
		snprintf(err, errlen, "%s is not the key of %s", kp, cp);
		X509_free(ca);
		ca = NULL;
	}
	int rc = -1;
	EVP_PKEY *k = ca ? EVP_EC_gen("P-256") : NULL;
	X509 *x = k ? new_cert(k, cn, days, ca) : NULL;
	bool ok = x && add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
	          add_ext(x, ca, NID_key_usage, "critical,digitalSignature") == 0 &&
	          add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth") == 0 &&
	          add_ext(x, ca, NID_subject_key_identifier, "hash") == 0 &&
	          add_ext(x, ca, NID_authority_key_identifier, "keyid") == 0 &&
	          add_ext(x, ca, NID_subject_alt_name, san) == 0 &&
	          X509_sign(x, cakey, EVP_sha256()) > 0;
	if (ca && !ok)
		snprintf(err, errlen, "cannot make the certificate: %s", ssl_why());
	else if (ok && write_pem(key_path, 0600, false, pem_key, k, err, errlen) == 0)
		rc = write_pem(crt_path, 0644, false, pem_cert, x, err, errlen);
	X509_free(x);
	EVP_PKEY_free(k);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	return rc;
}

int cert_check(const char *crt_path, const char *key_path, const char *ca_path, const char *ip,
               char *why, size_t whylen)
{
	X509 *x = cert_read(crt_path, why, whylen);
	X509 *ca = x ? cert_read(ca_path, why, whylen) : NULL;
	EVP_PKEY *k = ca ? cert_read_key(key_path, why, whylen) : NULL;
	int rc = -1;
	if (k) {
		time_t day = time(NULL) + 86400;
		rc = 0;
		if (X509_check_issued(ca, x) != X509_V_OK ||
		    X509_verify(x, X509_get0_pubkey(ca)) != 1)
			snprintf(why, whylen, "it is not signed by the CA of %s", ca_path);
		else if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0)
			snprintf(why, whylen, "it is not valid yet");
		else if (X509_cmp_time(X509_get0_notAfter(x), &day) <= 0)
			snprintf(why, whylen, "it expires within a day");
		else if (X509_check_private_key(x, k) != 1)
			snprintf(why, whylen, "%s is not its key", key_path);
		else if (ip && X509_check_ip_asc(x, ip, 0) != 1)
			snprintf(why, whylen, "it does not name %s", ip);
		else
			rc = 1;
	}
	ERR_clear_error();
	EVP_PKEY_free(k);
	X509_free(ca);
	X509_free(x);
	return rc;
}

int cert_copy_file(const char *from, const char *to, char *err, size_t errlen)
{
	X509 *x = cert_read(from, err, errlen);
	if (!x)
		return -1;
	int rc = write_pem(to, 0644, false, pem_cert, x, err, errlen);
	X509_free(x);
	return rc;
}

/* ---- peer identities (peer_ident.c) ---- */

/* The certificate's peer address (its CERT_PEER_URI name) into addr; false if none. */
static bool peer_name(X509 *x, char *addr, size_t len)
{
	GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	for (int i = 0; g && i < sk_GENERAL_NAME_num(g) && !found; i++) {
		const GENERAL_NAME *e = sk_GENERAL_NAME_value(g, i);
		if (e->type != GEN_URI)
			continue;
		const char *u = (const char *)ASN1_STRING_get0_data(e->d.uniformResourceIdentifier);
		int ulen = ASN1_STRING_length(e->d.uniformResourceIdentifier);
		size_t plen = strlen(CERT_PEER_URI);
		if (ulen > (int)plen && (size_t)ulen - plen < len &&
		    !memcmp(u, CERT_PEER_URI, plen) && !memchr(u, '\0', (size_t)ulen)) {
			memcpy(addr, u + plen, (size_t)ulen - plen);
			addr[ulen - plen] = '\0';
			found = true;
		}
	}
	GENERAL_NAMES_free(g);
	return found;
}

const char *cert_vouch(X509_STORE *store, X509 *x, char *cn, size_t cnlen, char *addr, size_t alen)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	const char *why = NULL;
	if (!ctx || X509_STORE_CTX_init(ctx, store, x, NULL) != 1)
		why = "out of memory";
	else if (X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT),
	         X509_verify_cert(ctx) != 1)
		why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
	else if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
	                                   (int)cnlen) <= 0)
		why = "it has no CN";
	else if (!peer_name(x, addr, alen))
		why = "it names no peer address (" CERT_PEER_URI "HOST:PORT)";
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return why;
}

/* The message a signature covers: the label (its NUL too) and the session's secret. */
static size_t ident_msg(const uint8_t *secret, size_t slen, uint8_t *out)
{
	memcpy(out, CERT_IDENT_LABEL, sizeof CERT_IDENT_LABEL);
	memcpy(out + sizeof CERT_IDENT_LABEL, secret, slen);
	return sizeof CERT_IDENT_LABEL + slen;
}

int cert_ident_sign(EVP_PKEY *key, const uint8_t *secret, size_t slen, uint8_t *sig, size_t *siglen)
{
	uint8_t msg[sizeof CERT_IDENT_LABEL + CERT_SECRET_MAX];
	if (slen > CERT_SECRET_MAX)
		return -1;
	size_t mlen = ident_msg(secret, slen, msg);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	          EVP_DigestSign(md, sig, siglen, msg, mlen) == 1;
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return ok ? 0 : -1;
}

const char *cert_ident_check(X509_STORE *store, const uint8_t *body, size_t len,
                             const uint8_t *secret, size_t slen, char *cn, size_t cnlen, char *addr,
                             size_t alen)
{
	size_t dlen = len >= 2 ? (size_t)body[0] << 8 | body[1] : 0;
	const uint8_t *p = body + 2;
	X509 *x = dlen && dlen <= CERT_IDENT_MAX && len > 2 + dlen && slen <= CERT_SECRET_MAX
	              ? d2i_X509(NULL, &p, (long)dlen)
	              : NULL;
	const char *why = !x || p != body + 2 + dlen ? "a malformed certificate"
	                                             : cert_vouch(store, x, cn, cnlen, addr, alen);
	if (!why) {
		uint8_t msg[sizeof CERT_IDENT_LABEL + CERT_SECRET_MAX];
		size_t mlen = ident_msg(secret, slen, msg);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		bool good =
		    md &&
		    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)) == 1 &&
		    EVP_DigestVerify(md, body + 2 + dlen, len - 2 - dlen, msg, mlen) == 1;
		EVP_MD_CTX_free(md);
		why = good ? NULL : "its signature of this session does not check out";
	}
	X509_free(x);
	ERR_clear_error();
	return why;
}
