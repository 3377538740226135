/* peer_ident.c — node certificates on the peer port (--peer-cert CERT,KEY, with --ca DIR
 * and --key FILE).
 *
 * The cluster key (auth.h) proves only that a connector is a member; this proves which
 * one. After the hello, the connector's first sealed frame is WIRE_IDENT:
 *   u16 n | its certificate (n bytes of DER) | an ECDSA-SHA256 signature (DER) by its
 *   key over CERT_IDENT_LABEL | S                     (S: the session key, auth.h)
 * The acceptor checks the certificate's chain against the cluster CA and the signature,
 * which binds it to this session (S is new for every connection and known only to the
 * two ends), and pins the connection to the certificate's CERT_PEER_URI HOST:PORT name
 * and its CN: from then on every frame's claimed sender must be exactly that address,
 * and a ring frame's sender id the SHA-1 of that CN (conn.c, sender_ok). Until then the
 * connection may carry only the identity (and a cast link's hello). So a member holding
 * the cluster key can speak for itself only; a stolen node key speaks for that node. */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cert.h"
#include "node_internal.h"

struct nd_ident {
	X509_STORE *store; /* the cluster CA */
	EVP_PKEY *key;     /* this node's */
	uint8_t *der;      /* its certificate */
	int derlen;
};

int nd_ident_setup(node *n, char *err, size_t errlen)
{
	const node_opts *o = n->o;
	char crt[512], key[512], cacrt[300], cn[64], addr[WIRE_ADDR_MAX];
	const char *comma = strchr(o->peer_cert, ',');
	if (!n->keyed || !o->ca[0]) {
		snprintf(err, errlen,
		         "--peer-cert needs --key FILE (its identity rides in the cluster key's "
		         "session) and --ca DIR (the CA that vouches for every node)");
		return -1;
	}
	if (!comma || comma == o->peer_cert || !comma[1] ||
	    (size_t)(comma - o->peer_cert) >= sizeof crt || strlen(comma + 1) >= sizeof key) {
		snprintf(err, errlen, "--peer-cert wants CERT,KEY (two PEM files), not '%s'",
		         o->peer_cert);
		return -1;
	}
	snprintf(crt, sizeof crt, "%.*s", (int)(comma - o->peer_cert), o->peer_cert);
	snprintf(key, sizeof key, "%s", comma + 1);
	snprintf(cacrt, sizeof cacrt, "%s/ca.crt", o->ca);
	struct nd_ident *id = calloc(1, sizeof *id);
	X509 *ca = NULL, *x = NULL;
	const char *why;
	int rc = -1;
	n->ident = id;
	if (!id || !(id->store = X509_STORE_new()))
		snprintf(err, errlen, "out of memory");
	else if (!(ca = cert_read(cacrt, err, errlen)) || !(x = cert_read(crt, err, errlen)) ||
	         !(id->key = cert_read_key(key, err, errlen))) {
		/* err says which */
	} else if (X509_STORE_add_cert(id->store, ca) != 1)
		snprintf(err, errlen, "out of memory");
	else if (X509_check_private_key(x, id->key) != 1)
		snprintf(err, errlen, "%s is not the key of %s", key, crt);
	else if ((why = cert_vouch(id->store, x, cn, sizeof cn, addr, sizeof addr)) != NULL)
		snprintf(err, errlen, "%s would be refused by the other nodes: %s", crt, why);
	else if (strcmp(cn, o->name) || nd_book_intern(n, addr) != 0)
		snprintf(err, errlen,
		         "%s is for node %s at %s, not for this one (--id %s, --listen %s)", crt,
		         cn, addr, o->name, o->listen);
	else if ((id->derlen = i2d_X509(x, &id->der)) <= 0 || id->derlen > CERT_IDENT_MAX)
		snprintf(err, errlen, "%s is too big to send", crt);
	else
		rc = 0;
	X509_free(x);
	X509_free(ca);
	ERR_clear_error();
	if (rc < 0) {
		nd_ident_free(n);
		return -1;
	}
	LOG_I(n,
	      "peer port: this node proves itself to its peers as %s at %s (%s, issued by %s); "
	      "it takes frames only from peers that prove who they are the same way",
	      cn, addr, crt, cacrt);
	return 0;
}

void nd_ident_free(node *n)
{
	struct nd_ident *id = n->ident;
	if (!id)
		return;
	X509_STORE_free(id->store);
	EVP_PKEY_free(id->key);
	OPENSSL_free(id->der);
	free(id);
	n->ident = NULL;
}

pending *nd_ident_frame(node *n, const auth_session *s)
{
	struct nd_ident *id = n->ident;
	uint8_t sig[CERT_SIG_MAX];
	size_t siglen = sizeof sig;
	if (cert_ident_sign(id->key, s->k, sizeof s->k, sig, &siglen) < 0)
		return NULL;
	size_t body = 2 + (size_t)id->derlen + siglen;
	pending *f = calloc(1, sizeof *f);
	uint8_t *b = f ? wire_frame_alloc(body, WIRE_IDENT) : NULL;
	if (!b) {
		free(f);
		return NULL;
	}
	b[5] = (uint8_t)(id->derlen >> 8);
	b[6] = (uint8_t)id->derlen;
	memcpy(b + 7, id->der, (size_t)id->derlen);
	memcpy(b + 7 + id->derlen, sig, siglen);
	f->buf = b;
	f->len = WIRE_HEADER + body;
	f->kind = FRAME_IDENT;
	return f;
}

bool nd_ident_check(node *n, inconn *c, const uint8_t *body, size_t len)
{
	char cn[64] = "", addr[WIRE_ADDR_MAX] = "";
	const char *why = cert_ident_check(n->ident->store, body, len, c->sess.k, sizeof c->sess.k,
	                                   cn, sizeof cn, addr, sizeof addr);
	ring_addr a = why ? RING_ADDR_NONE : nd_book_intern(n, addr);
	if (!why && (a == RING_ADDR_NONE || a == 0))
		why = a ? "its peer address is not one the address book takes"
		        : "it claims to be this node";
	if (why) {
		n->auth_failed++;
		nd_log_rl(n, LOG_AUTH, 1,
		          "a peer's certificate%s%s is refused: %s: closing that connection",
		          cn[0] ? " for " : "", cn, why);
		return false;
	}
	c->ident = a;
	rn_id_hash(&c->ident_id, cn, strlen(cn), n->cfg.bits);
	c->ident_ok = true;
	return true;
}
