/* castsim.h — the cast core (src/cast) over a simulated network: topology files
 * (../shared/topologies/FORMAT.md), trace files, the lower bound FORMAT.md defines, and a
 * fluid bandwidth model.
 *
 * Every host runs a cast_node; two hosts are neighbours when they share a switch or a
 * link (as a real host reaches only those), and each neighbour pair is one link of the
 * core. Each direction of a link is a FIFO of messages: a piece is a flow that crosses
 * the directed edges of its path (host -> switch -> host, or host -> host) at a rate set
 * by max-min fair sharing of every edge's capacity among the flows crossing it (the
 * share TCP connections converge to), and arrives one propagation delay after its last
 * byte left; control messages follow the pieces queued before them and take no
 * bandwidth. Loss and queue sizes are not modelled (a fluid model has no packets). */
#ifndef RN_CASTSIM_H
#define RN_CASTSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../cast/cast.h"

#define CS_MAX_VERTS 4096

typedef struct {
	char name[CAST_NAME_MAX];
	bool is_switch;
} cs_vertex;

typedef struct {
	int a, b;
	double mbps, delay_ms, loss;
} cs_link;

typedef struct {
	double at_ms;
	int link;
	double mbps, delay_ms; /* < 0: unchanged */
} cs_change;

typedef struct {
	cs_vertex *v;
	int nv;
	cs_link *l;
	int nl;
	int src; /* vertex of the source host */
	cs_change *ch;
	int nch;
	int (*via)[3]; /* "path A S B" statements: hosts A and B talk through switch S */
	int nvia;
} cs_topo;

/* Reads a topology file; 0, or -1 with a message in err. */
int cs_topo_load(const char *path, cs_topo *t, char *err, size_t errlen);
/* Adds a trace file's changes; 0 or -1 with a message. */
int cs_trace_load(const char *path, cs_topo *t, char *err, size_t errlen);
void cs_topo_free(cs_topo *t);
int cs_hosts(const cs_topo *t);

/* FORMAT.md's lower bound for a file of `bytes`, in seconds, with its parts. */
typedef struct {
	double cut_s, upload_s, delay_s, bound_s;
} cs_bound;
void cs_lower_bound(const cs_topo *t, uint64_t bytes, cs_bound *b);

typedef struct {
	uint64_t size;
	uint32_t piece_size; /* 0: cast_default_piece */
	uint64_t seed;
	double max_s;      /* simulated time at most (0: 3600) */
	double corrupt_p;  /* tests: a received piece fails its hash with this probability */
	uint8_t **preheld; /* tests: per vertex, pieces held on disk before the start */
} cs_opts;

typedef struct {
	bool complete; /* every destination held every piece */
	double u_s;
	double *done_s;        /* per vertex: -1 for switches, the source and unfinished hosts */
	uint32_t *held;        /* per vertex: pieces in its (simulated) storage at the end */
	uint64_t deliveries;   /* pieces that arrived */
	uint64_t dup_arrivals; /* ... at a host that already held them */
	uint32_t max_dup_per_piece; /* the most such arrivals of one piece at one host */
	uint64_t corrupt_injected;
	uint64_t preheld_received; /* arrivals of pieces a host held before the start */
	cast_stats total;          /* summed over hosts */
	uint64_t src_pieces_out;   /* pieces the source sent: npieces when none went twice */
	uint64_t events;
	uint32_t npieces, piece_size;
} cs_result;

/* Runs one cast from t->src to every other host. 0, or RN_ENOMEM / RN_EINVAL. */
int cs_run(const cs_topo *t, const cs_opts *o, cs_result *r);
void cs_result_free(cs_result *r);

#endif
