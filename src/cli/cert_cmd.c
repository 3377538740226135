/* cert_cmd.c — `ringnet cert init|issue`: a cluster CA and node certificates for the HTTPS
 * API (src/net/cert.c does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/cert.h"
#include "cli.h"

static const char *cert_usage =
    "usage: ringnet cert init [--dir DIR]\n"
    "       ringnet cert issue NAME [--ip ADDRESS]... [--dns HOST]... [--peer HOST:PORT]\n"
    "                          [--dir DIR] [--out DIR] [--days N]\n"
    "\n"
    "init makes a cluster CA in DIR (default ringnet-ca): ca.key, its signing key (0600;\n"
    "keep it to yourself), and ca.crt, the certificate clients trust: RINGNET_CACERT=\n"
    "DIR/ca.crt for the ringnet commands, curl --cacert DIR/ca.crt. It never overwrites.\n"
    "issue makes a certificate for node NAME, signed by the CA in DIR, that names the\n"
    "addresses clients reach it by (--ip, --dns: at least one, up to 16 of each), valid\n"
    "for N days (default 825): OUT/NAME.crt and OUT/NAME.key (OUT defaults to DIR).\n"
    "Start the node with --http-tls OUT/NAME.crt,OUT/NAME.key. A node on a non-loopback\n"
    "--http started with --ca DIR issues its own (DATA/tls/node.crt) instead.\n"
    "--peer names the node's --listen address: the certificate is then its identity on\n"
    "the peer port too (ringnet node --peer-cert OUT/NAME.crt,OUT/NAME.key --ca DIR).\n";

static int bad(const char *fmt, const char *arg)
{
	fprintf(stderr, "ringnet cert: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", cert_usage);
	return 2;
}

/* A node name that can be a file name: 1 to 63 letters, digits, '.', '-', '_'. */
static bool good_name(const char *s)
{
	size_t n = strlen(s);
	return n && n < 64 && s[0] != '.' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n;
}

int cli_cert(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(cert_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	bool init = !strcmp(argv[1], "init"), issue = !strcmp(argv[1], "issue");
	if (!init && !issue)
		return bad("unknown cert command '%s' (init or issue)", argv[1]);
	const char *dir = "ringnet-ca", *out = NULL, *name = NULL;
	long days = CERT_NODE_DAYS;
	cert_names nm = {.nip = 0};
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(cert_usage, stdout);
			return 0;
		}
		if (a[0] != '-') {
			if (!issue || name)
				return bad("unexpected argument '%s'", a);
			name = a;
			continue;
		}
		static const char *const opts[] = {"--dir", "--out",  "--ip",
		                                   "--dns", "--days", "--peer"};
		if (!cli_one_of(a, opts, CLI_NELEM(opts)) || (init && strcmp(a, "--dir")))
			return bad("unknown option '%s'", a);
		if (!v || !*v)
			return bad("%s needs a value", a);
		i++;
		if (!strcmp(a, "--dir")) {
			dir = v;
		} else if (!strcmp(a, "--out")) {
			out = v;
		} else if (!strcmp(a, "--peer")) {
			nm.peer = v;
		} else if (!strcmp(a, "--days")) {
			char *end;
			days = strtol(v, &end, 10);
			if (*end || days < 1 || days > 3650)
				return bad("--days wants a number of days, 1 to 3650, not '%s'", v);
		} else {
			bool ip = !strcmp(a, "--ip");
			int *k = ip ? &nm.nip : &nm.ndns;
			if (*k == CERT_MAX_NAMES)
				return bad("at most 16 of %s", a);
			(ip ? nm.ip : nm.dns)[(*k)++] = v;
		}
	}
	if (strlen(dir) > 400 || (out && strlen(out) > 400))
		return bad("a folder's path is too long: '%s'", strlen(dir) > 400 ? dir : out);
	char err[800];
	if (init) {
		if (cert_ca_init(dir, dir, err, sizeof err) < 0) {
			fprintf(stderr, "ringnet cert: %s\n", err);
			return 1;
		}
		printf(
		    "made a CA in %s: %s/ca.key (the signing key: keep it private) and %s/ca.crt\n"
		    "clients trust it with RINGNET_CACERT=%s/ca.crt (curl --cacert %s/ca.crt);\n"
		    "nodes issue their own certificates from it with --ca %s, or issue one here:\n"
		    "  ringnet cert issue NAME --dir %s --ip ADDRESS\n",
		    dir, dir, dir, dir, dir, dir, dir);
		return 0;
	}
	if (!name)
		return bad("issue needs the node's NAME%s", "");
	if (!good_name(name))
		return bad("NAME is 1 to 63 letters, digits, '.', '-' or '_', not '%s'", name);
	if (!nm.nip && !nm.ndns && !nm.peer)
		return bad("name the addresses clients reach the node by: --ip ADDRESS or --dns "
		           "HOST%s",
		           "");
	if (!cert_ca_exists(dir, true)) {
		fprintf(stderr,
		        "ringnet cert: no CA in %s (ca.crt and ca.key): make one with "
		        "`ringnet cert init --dir %s`, or name yours with --dir\n",
		        dir, dir);
		return 1;
	}
	char crt[520], key[520];
	snprintf(crt, sizeof crt, "%s/%s.crt", out ? out : dir, name);
	snprintf(key, sizeof key, "%s/%s.key", out ? out : dir, name);
	if (cert_issue(dir, name, &nm, (int)days, crt, key, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet cert: %s\n", err);
		return 1;
	}
	printf("issued %s (and its key %s, 0600) for %s, signed by %s/ca.crt, valid %ld days\n"
	       "start the node with --http-tls %s,%s\n",
	       crt, key, name, dir, days, crt, key);
	return 0;
}
