/* cert.h — the cluster CA and node certificates for the HTTPS API (EC P-256, libcrypto).
 *
 * A CA is a folder holding ca.key (the signing key, 0600) and ca.crt (its self-signed
 * certificate, which clients trust: RINGNET_CACERT=ca.crt, curl --cacert ca.crt). A node
 * certificate names the node (its CN) and the addresses clients reach it by (IP and DNS
 * subject alternative names); it is signed by the CA's key. `ringnet cert init` and
 * `ringnet cert issue` (src/cli/cert_cmd.c) make them by hand; a node whose API listens
 * beyond loopback makes its own from a CA it finds (api_tls.c). */
#ifndef RN_CERT_H
#define RN_CERT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CERT_MAX_NAMES 16   /* --ip and --dns names in one certificate, each */
#define CERT_CA_DAYS   3650 /* a CA's lifetime */
#define CERT_NODE_DAYS 825  /* a node certificate's */

typedef struct {
	const char *ip[CERT_MAX_NAMES]; /* IPv4 or IPv6 addresses, as text */
	int nip;
	const char *dns[CERT_MAX_NAMES]; /* host names */
	int ndns;
	const char *peer; /* a peer port HOST:PORT, as the name CERT_PEER_URI HOST:PORT, or NULL */
} cert_names;

#define CERT_PEER_URI "ringnet://" /* peer_ident.c: the --listen a certificate is for */

/* Whether dir holds ca.crt, and (key) ca.key too. */
bool cert_ca_exists(const char *dir, bool key);

/* Makes a new CA in dir (created 0700 if missing): ca.key and ca.crt with the subject
 * "ringnet cluster CA <cn>". Fails, touching nothing, when either file exists. 0, or -1
 * with a message in err. */
int cert_ca_init(const char *dir, const char *cn, char *err, size_t errlen);

/* Issues a certificate for cn with the names in nm, signed by the CA in cadir, valid for
 * days from an hour ago: the key goes to key_path (0600) and the certificate to crt_path,
 * each written whole under a temporary name and renamed over any old file. 0, or -1 with a
 * message in err. */
int cert_issue(const char *cadir, const char *cn, const cert_names *nm, int days,
               const char *crt_path, const char *key_path, char *err, size_t errlen);

/* Checks that crt_path is a certificate that the CA certificate ca_path signed, that is
 * valid now and for at least a day more, that key_path is its key, and that it names ip
 * (when not NULL). 1 when all hold, 0 when one does not (why: the first that failed), -1
 * when a file cannot be read or parsed (why says which). */
int cert_check(const char *crt_path, const char *key_path, const char *ca_path, const char *ip,
               char *why, size_t whylen);

/* The first certificate, or private key, in the PEM file at path; NULL with a message in
 * err when it cannot be read or holds none. */
X509 *cert_read(const char *path, char *err, size_t errlen);
EVP_PKEY *cert_read_key(const char *path, char *err, size_t errlen);

/* Copies the PEM certificate in from to to (written under a temporary name, then renamed;
 * mode 0644). 0 or -1 with a message in err. */
int cert_copy_file(const char *from, const char *to, char *err, size_t errlen);

/* ---- peer identities: a certificate proving, in one session, that it holds its key ----
 * The proof (src/net/peer_ident.c sends it as a WIRE_IDENT frame body) is
 *   u16 n | n bytes of the certificate (DER) | an ECDSA-SHA256 signature (DER) by its key
 *   over CERT_IDENT_LABEL (its NUL too) | the session's secret */
#define CERT_IDENT_LABEL "ringnet peer identity v1"
#define CERT_IDENT_MAX   4096 /* bytes of a certificate in a proof */
#define CERT_SECRET_MAX  64   /* bytes of a session secret */
#define CERT_SIG_MAX     256  /* bytes of a signature */

/* Checks x against the CA in store (chain, dates, client-auth purpose): NULL with its CN in
 * cn and its CERT_PEER_URI address in addr, or why not. */
const char *cert_vouch(X509_STORE *store, X509 *x, char *cn, size_t cnlen, char *addr, size_t alen);
/* The signature of a proof for secret (slen bytes) into sig (*siglen: its room, then its
 * length); 0 or -1. */
int cert_ident_sign(EVP_PKEY *key, const uint8_t *secret, size_t slen, uint8_t *sig,
                    size_t *siglen);
/* Checks a proof (len bytes at body) for secret: NULL with the certificate's CN and
 * address, or why it does not hold. Any bytes are safe here (tests/fuzz/fuzz_ident.c). */
const char *cert_ident_check(X509_STORE *store, const uint8_t *body, size_t len,
                             const uint8_t *secret, size_t slen, char *cn, size_t cnlen, char *addr,
                             size_t alen);

#endif
