/* api_tls.c — HTTPS by default for an API that listens beyond loopback.
 *
 * A node whose --http is not on 127.0.0.0/8 and that has no --http-tls serves HTTPS with
 * DATA/tls/node.crt and node.key. It issues them itself, for its --http address (and the
 * name it was given as, if any), with the CA in --ca DIR, else in DATA/ca; when neither
 * exists it makes a CA of its own in DATA/ca. A certificate from an earlier start is used
 * again while the CA signed it, it names the address and is valid for a day more, else it
 * is issued anew. DATA/tls/ca.crt is a copy of the CA's certificate, the file a client
 * trusts (RINGNET_CACERT). `--http-tls none` turns HTTPS off. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cert.h"
#include "node_internal.h"

int nd_api_tls_auto(node *n, const char *host, char *crt, char *key, size_t len, char *err,
                    size_t errlen)
{
	const node_opts *o = n->o;
	char tls[300], cadir[300], cacrt[320], pubca[320], why[400] = "", did[480];
	snprintf(tls, sizeof tls, "%s/tls", o->data);
	if (mkdir(tls, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", tls, strerror(errno));
		return -1;
	}
	snprintf(crt, len, "%s/node.crt", tls);
	snprintf(key, len, "%s/node.key", tls);
	snprintf(pubca, sizeof pubca, "%s/ca.crt", tls);
	if (o->ca[0])
		snprintf(cadir, sizeof cadir, "%s", o->ca);
	else
		snprintf(cadir, sizeof cadir, "%s/ca", o->data);
	if (o->ca[0] && !cert_ca_exists(cadir, false)) {
		snprintf(err, errlen,
		         "--ca %s: no ca.crt there (`ringnet cert init --dir %s` makes a CA)",
		         cadir, cadir);
		return -1;
	}
	bool have_ca = cert_ca_exists(cadir, false), can_sign = cert_ca_exists(cadir, true);
	/* the CA that vouches for the certificate: its folder's, else the copy kept before */
	snprintf(cacrt, sizeof cacrt, "%s/ca.crt", have_ca ? cadir : tls);
	int ok = -2; /* no certificate yet */
	if (access(crt, F_OK) == 0 || access(key, F_OK) == 0)
		ok = access(cacrt, R_OK) == 0
		         ? cert_check(crt, key, cacrt, host, why, sizeof why)
		         : (snprintf(why, sizeof why, "%s is missing", cacrt), 0);
	snprintf(did, sizeof did, "made on an earlier start");
	if (ok != 1) {
		if (!have_ca && !o->ca[0]) {
			if (cert_ca_init(cadir, o->name, err, errlen) < 0)
				return -1;
			LOG_I(
			    n,
			    "http: no CA in %s and no --ca DIR, so this node made a CA of its own "
			    "there (for a cluster, make one with `ringnet cert init --dir DIR` and "
			    "start every node with --ca DIR)",
			    cadir);
			have_ca = can_sign = true;
			snprintf(cacrt, sizeof cacrt, "%s/ca.crt", cadir);
		}
		if (!can_sign) {
			snprintf(
			    err, errlen,
			    "the HTTPS certificate %s %s%s, and there is no CA key (%s/ca.key) "
			    "to issue one; give the CA with --ca DIR, or --http-tls CERT,KEY, or "
			    "--http-tls none for plain HTTP",
			    crt,
			    ok == -2 ? "does not exist" : "cannot be used: ", ok == -2 ? "" : why,
			    cadir);
			return -1;
		}
		cert_names nm = {.ip = {host}, .nip = 1};
		if (o->http_name[0])
			nm.dns[nm.ndns++] = o->http_name;
		if (cert_issue(cadir, o->name, &nm, CERT_NODE_DAYS, crt, key, err, errlen) < 0)
			return -1;
		snprintf(did, sizeof did, "issued now%s%s", ok == -2 ? "" : ": the old one ",
		         ok == -2 ? "" : why);
	}
	if (strcmp(cacrt, pubca) != 0 && cert_copy_file(cacrt, pubca, err, errlen) < 0)
		return -1;
	LOG_I(n,
	      "http: %s is reachable beyond this machine, so the API is HTTPS with %s (%s, by the "
	      "CA in %s); clients need the CA's certificate: RINGNET_CACERT=%s (curl --cacert "
	      "%s); --http-tls none serves plain HTTP",
	      o->http, crt, did, have_ca ? cadir : tls, pubca, pubca);
	return 0;
}
