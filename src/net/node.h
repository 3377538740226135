/* node.h — `ringnet node`: the real driver. A libuv loop runs the sans-IO ring core
 * over TCP peer connections (wire.h frames) and libmicrohttpd serves the HTTP API. */
#ifndef RN_NODE_H
#define RN_NODE_H

#include <stdbool.h>
#include <stddef.h>

#define NODE_MAX_JOIN 8

typedef struct {
	char name[64];   /* --id: the ring id is SHA-1 of it */
	char listen[64]; /* host:port for peers */
	char http[64];   /* host:port for the HTTP API */
	char data[256];  /* directory of the LMDB store */
	char key[256];   /* --key: file of the cluster key ("": peers are not checked) */
	char join[NODE_MAX_JOIN][64];
	int njoin;
	int log_level;    /* 0 error, 1 warn, 2 info, 3 debug */
	int replicas;     /* R: copies of every key (0: the default, 3) */
	int write_quorum; /* W: copies committed before a write is acknowledged (0: 2) */
	/* --api-token: a file holding the HTTP API's bearer token, or "none"; "" means none on
	 * a loopback --http, and DATA/api.token (made on first start) on any other address */
	char api_token[256];
	char http_tls[512];          /* --http-tls CERT,KEY: PEM files; "none": plain HTTP; "":
	                              * plain on loopback, else HTTPS with DATA/tls (api_tls.c) */
	char ca[256];                /* --ca DIR: the CA that issues DATA/tls ("": DATA/ca) */
	char http_name[64];          /* the name --http was given as, when not an address */
	char peer_cert[512];         /* --peer-cert CERT,KEY: this node's peer identity, or "" */
	unsigned long long max_file; /* --max-file: bytes in one file (0: 4 GiB) */
	char query_config[256];      /* a query cluster file: serve queries as process `name` */
	unsigned suspicion_ms;       /* --suspicion-ms: the failure detector's (0: 1000) */
	unsigned lifeguard;          /* --lifeguard MULT: Lifeguard's max multiple (0: the
	                              * node's default; 1: off) */
	unsigned confirm;            /* --confirm K: confirmations to the minimum (0: default) */
	unsigned eager_gossip;       /* --eager-gossip R: eager rounds a second ... */
	bool eager_gossip_set;       /* ... when given (0 is off) */
	unsigned suspect_probes;     /* --suspect-probes P: members that check a suspect ... */
	bool suspect_probes_set;     /* ... when given (0 is off) */
	unsigned files_gc_delay_ms;  /* --files-gc-delay-ms: collection's delay (0: 1 h) */
	unsigned read_lease_ms;      /* --read-lease-ms: read leases' length ... */
	bool read_lease_set;         /* ... when given (0 is off; else the kv core's 600) */
} node_opts;

/* Parses "host:port" (an IPv4 address or "localhost"); 0 or -1. */
int node_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

/* "NAME:PORT" as "A.B.C.D:PORT", NAME's first IPv4 address (a blocking lookup); 0, or -1
 * when it has none. */
int node_resolve_hostport(const char *v, char *out, size_t len);

/* Whether v is NAME:PORT with a host name's characters and a port 1 to 65535 (a --join name
 * that does not resolve yet is kept, and looked up again on every try). */
bool node_is_hostname_port(const char *v);

/* Runs a node until SIGINT or SIGTERM; returns the process exit code. */
int node_run(const node_opts *o);

#endif
