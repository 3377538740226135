/* query.h — the partitioned query service core (sans-IO): a tree of processes (one leader,
 * team leaders, workers) each holding slices of a day-partitioned data set; a query fans
 * out down the tree, every node filters what it holds, results come back up and are kept
 * at the node the client asked as chunks that expire.
 *
 * ---- Provided by the driver (q_driver) ----
 * - send: deliver a q_msg to process m->to (an index into the config's processes). Encode
 *   or copy before returning; a message that cannot be delivered is reported later with
 *   q_on_unreachable (never from inside send: the core is not re-entrant).
 * - scan: filter the local data of days [day_lo, day_hi] (days since 1970-01-01): append
 *   up to `limit` matching records to out, return how many match, counting no further
 *   than count_to (>= limit; a node only needs the counts up to the client's limit).
 * - reply: the answer to a client request made with q_client (its req id).
 * - random: a uniform 32-bit number (the jitter of retry backoff).
 * - log: one line for the node's log and the recent lines of /metrics.
 * - time: every call takes `now`, ms on a clock that does not jump; call q_tick no later
 *   than q_wake_at().
 *
 * Partitioning (q_plan_build): each team owns a date range; its days are cut into one
 * contiguous slice per member, sized by weight (worker 3, team leader 2, leader 1); every
 * slice has a second copy on the member before its owner in the team's order (so a dead
 * member's days are still held by a live one). A query names the slices it wants; a node
 * answers a slice from its own data when it holds it and its owner's path is not better,
 * else hands it to the child whose subtree holds the owner (or, failing that, the copy).
 * A slice no live path reaches is reported missing: the answer is then "partial". */
#ifndef RN_QUERY_H
#define RN_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define Q_MAX_PROCS   32
#define Q_MAX_TEAMS   8
#define Q_MAX_NEIGH   8
#define Q_MAX_SLICES  64 /* slice sets travel as a 64-bit mask */
#define Q_NAME_MAX    32
#define Q_NPARAMS     6
#define Q_MAX_RECORDS 20000 /* strategies.max_records can go this high (a frame holds it) */
#define Q_LOG_LINES   16    /* recent log lines kept for /metrics */

/* ---- configuration ---- */

typedef enum { Q_LEADER, Q_TEAM_LEADER, Q_WORKER } q_role;
typedef enum { Q_STRICT, Q_WEIGHTED, Q_HYBRID } q_strategy;

typedef struct {
	char id[Q_NAME_MAX];
	q_role role;
	int team;
	char host[48];          /* with ":port" it fits a peer address */
	int port, http_port;    /* http_port: port + 1000 unless "http_port" is given */
	int neigh[Q_MAX_NEIGH]; /* the processes this one sends queries down to */
	int nneigh;
} q_proc;

typedef struct {
	char name[Q_NAME_MAX];
	int32_t day_lo, day_hi; /* days since 1970-01-01, both included */
} q_team;

typedef struct q_config {
	q_strategy strategy;
	unsigned chunk_size;       /* records per chunk (500) */
	unsigned max_concurrent;   /* per team, the strict cap (60) */
	unsigned queue_max;        /* requests waiting per team at one node (200) */
	unsigned queue_timeout_ms; /* waiting longer gets 429 (2000) */
	unsigned max_records;      /* a query's limit is capped here (2000) */
	unsigned result_ttl_ms;    /* a result set is dropped this long after it was made */
	unsigned max_results;      /* result sets held at once (the oldest goes) */
	unsigned hb_interval_ms, hb_timeout_ms;
	unsigned call_timeout_ms;   /* a call to a child without an answer this long failed */
	unsigned retries;           /* retries of a failed call before routing around it (2) */
	unsigned backoff_ms;        /* first retry delay; doubles, plus jitter up to as much */
	unsigned breaker_threshold; /* consecutive failures that open a neighbour's breaker */
	char data_dir[256];
	q_team teams[Q_MAX_TEAMS];
	int nteams;
	q_proc procs[Q_MAX_PROCS];
	int nprocs;
	int leader;
} q_config;

/* Parses the cluster JSON text into c (with defaults for what it omits) and checks it: an
 * unknown role, a neighbour that does not exist, a cycle, overlapping team ranges, a
 * missing data folder (dir_exists, from the driver; NULL skips that check). 0, or
 * RN_EINVAL with a message naming the field in err. */
int q_config_parse(const char *text, size_t len, q_config *c,
                   bool (*dir_exists)(void *ctx, const char *path), void *ctx, char *err,
                   size_t errlen);
int q_proc_find(const q_config *c, const char *id);
const char *q_role_name(q_role r);
const char *q_strategy_name(q_strategy s);

/* ---- partition plan ---- */

typedef struct {
	int team;
	int32_t day_lo, day_hi;
	int owner, copy; /* processes; copy == owner when the team has one member */
} q_slice;

typedef struct {
	q_slice s[Q_MAX_SLICES];
	int n;
	uint32_t reach[Q_MAX_PROCS]; /* processes reachable down from each (itself included) */
} q_plan;

int q_plan_build(const q_config *c, q_plan *p);
/* The slices process `proc` holds (owner or copy), as a mask. */
uint64_t q_plan_held(const q_plan *p, int proc);
/* The slices whose days meet [day_lo, day_hi]. */
uint64_t q_plan_overlap(const q_plan *p, int32_t day_lo, int32_t day_hi);

/* ---- records and filters ---- */

extern const char *const q_param_names[Q_NPARAMS];
int q_param_find(const char *name); /* -1 when unknown */

typedef struct {
	double lat, lon, value;
	int32_t minute; /* UTC minutes since 1970 */
	int16_t aqi;
	uint8_t param;
	/* decimals the source wrote each number with (Q_SCALE_NONE: not a plain decimal), so
	 * that it is written back as the same digits, which read as the same double */
	uint8_t lat_s, lon_s, val_s;
} q_rec;

#define Q_SCALE_NONE 255
/* Writes v as written with `scale` decimals (or %.17g for Q_SCALE_NONE); the length. */
int q_format_number(char *out, double v, uint8_t scale);

typedef struct {
	uint8_t param;
	double vmin, vmax;
	int32_t t_from, t_to; /* minutes, both included */
	double lat_min, lat_max, lon_min, lon_max;
} q_filter;

/* A filter that takes everything of param (the ranges wide open). */
void q_filter_all(q_filter *f, int param);
bool q_filter_match(const q_filter *f, const q_rec *r);
/* Days since 1970 of a civil date, and back; minutes of "YYYY-MM-DDTHH:MM". */
int32_t q_days(int y, int m, int d);
void q_civil(int32_t days, int *y, int *m, int *d);
/* "YYYYMMDD" -> days; false when it is not a date */
bool q_parse_day(const char *s, int32_t *days);
/* "YYYY-MM-DDTHH:MM" or "YYYY-MM-DD" or "YYYYMMDD" -> minutes; false when not a time */
bool q_parse_time(const char *s, int32_t *minute);
void q_format_time(int32_t minute, char out[20]);

/* ---- messages between processes ---- */

typedef enum { Q_MSG_REQ = 1, Q_MSG_RESP = 2, Q_MSG_HB = 3 } q_msg_type;
typedef enum { Q_ST_OK = 0, Q_ST_BUSY = 1 } q_msg_status;

typedef struct {
	uint8_t type;
	uint8_t from, to;
	uint64_t req;
	/* REQ */
	q_filter f;
	uint32_t limit;
	uint32_t count_to; /* count matches up to this (the client's limit) */
	uint64_t slices;
	/* RESP */
	uint8_t status;
	uint32_t matched;  /* records the subtree matched in the slices it answered */
	uint64_t missing;  /* asked slices it could not answer */
	uint32_t hops;     /* processes that took part, a mask */
	const q_rec *recs; /* nrec of them */
	uint32_t nrec;
} q_msg;

/* The codec of WIRE_QUERY bodies (big-endian, fixed layout; records are 34 bytes). */
#define Q_WIRE_REC 34
size_t q_wire_size(const q_msg *m);
/* Writes m's body into buf (q_wire_size bytes). */
void q_wire_encode(const q_msg *m, uint8_t *buf);
/* Decodes a body; recs (room for Q_MAX_RECORDS) receives the records. 0 or RN_EPROTO. */
int q_wire_decode(const uint8_t *buf, size_t len, q_msg *m, q_rec *recs);

/* ---- the core ---- */

typedef enum { Q_ANS_OK, Q_ANS_PARTIAL, Q_ANS_BUSY, Q_ANS_BAD } q_answer_status;

typedef struct q_answer {
	q_answer_status status;
	char uid[24];
	uint32_t total_chunks, total_records;
	uint32_t hops;    /* mask of processes */
	uint64_t missing; /* slices */
	unsigned retry_ms;
	const char *why; /* Q_ANS_BAD */
} q_answer;

typedef struct {
	void *ctx;
	void (*send)(void *ctx, const q_msg *m);
	uint32_t (*scan)(void *ctx, int32_t day_lo, int32_t day_hi, const q_filter *f,
	                 uint32_t limit, uint32_t count_to, q_rec *out);
	void (*reply)(void *ctx, uint64_t req, const struct q_answer *a);
	uint32_t (*random)(void *ctx);
	void (*log)(void *ctx, const char *line);
} q_driver;

typedef struct q_node q_node;

q_node *q_new(const q_config *c, const q_plan *p, int self, const q_driver *d, uint64_t now,
              uint64_t uid_seed);
void q_free(q_node *q);
/* A client query at this node (any node can take one; the leader is the usual door). */
void q_client(q_node *q, uint64_t now, uint64_t req, const q_filter *f, uint32_t limit);
void q_on_msg(q_node *q, uint64_t now, const q_msg *m);
/* A message with this req (0 for heartbeats) to `to` could not be delivered. */
void q_on_unreachable(q_node *q, uint64_t now, uint64_t req, int to);
void q_tick(q_node *q, uint64_t now);
uint64_t q_wake_at(const q_node *q);

/* Chunk i of a result set: 0 and its records (valid until the next core call), or
 * RN_ENOTFOUND when the uid is unknown or expired, or i is past its end. */
int q_chunk(q_node *q, uint64_t now, const char *uid, uint32_t i, const q_rec **recs, uint32_t *n,
            bool *is_last, uint32_t *total_chunks);

/* What /metrics shows. */
typedef struct {
	unsigned active, queued; /* requests admitted and waiting, at this node */
	unsigned team_active[Q_MAX_TEAMS], team_queued[Q_MAX_TEAMS], team_cap[Q_MAX_TEAMS];
	uint64_t served, rejected, partial;
	double avg_ms;
	uint64_t beats; /* heartbeat rounds sent */
	int nneigh;
	struct {
		int proc;
		bool up;
		bool breaker_open;
		uint64_t failures, recoveries;
	} neigh[Q_MAX_PROCS];
	unsigned results; /* result sets held */
	const char *log[Q_LOG_LINES];
	int nlog;
} q_stats;

void q_get_stats(const q_node *q, uint64_t now, q_stats *s);

#endif
