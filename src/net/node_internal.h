/* node_internal.h — internal to src/net, not for other modules (they use node.h): the types
 * and limits the node's files share (node.c, conn.c, kv.c, http.c, join.c) and the functions
 * one of them calls in another, each declared here under the file that defines it. */
#ifndef RN_NODE_INTERNAL_H
#define RN_NODE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../kv/kv.h"
#include "../ring/ring.h"
#include "../store/store.h"
#include "auth.h"
#include "node.h"
#include "traffic.h"
#include "wire.h"

struct MHD_Daemon;
struct MHD_Connection;

#define MAX_PEERS           4096
#define MAX_QUEUE           1024        /* frames waiting for one peer's connection */
#define PEER_OUT_BYTES      (64u << 20) /* queued + unwritten frame bytes to one peer */
#define PEER_OUT_IOV        64          /* frames in one write (writev) to a peer */
#define MAX_OUT_CONNS       256  /* outgoing connections; the least recently used idle one goes */
#define MAX_IN_CONNS        1024 /* incoming connections; more are closed at once */
#define SNAPSHOT_MS         100
#define CONNECT_BACKOFF_MS  500        /* after a failed connect; doubles with each failure */
#define CONNECT_BACKOFF_MAX 8000       /* ... up to this, until a connect works or it talks to us */
#define KV_DEADLINE_MS      5000       /* an HTTP request waiting on the ring longer gets 503 */
#define KV_BODY_MAX         (1u << 20) /* bytes in a POST body */
#define KV_LOOKUP_BIT       (1ull << 63) /* request ids of the kv core's ring lookups */
#define REJOIN_EVERY_MS     1000         /* not in a ring yet: try the next known peer */
#define ANCHOR_EVERY_MS     5000         /* look up successor(0), the ring's smallest id */
#define ANCHOR_BIT          (1ull << 62) /* request ids of those lookups */
#define MERGE_EVERY_MS      5000         /* probe a known peer: is another ring there? */
#define LEAVE_WAIT_MS       3000         /* on SIGTERM, wait this long for the leave pushes */
#define DASH_BIT            (1ull << 60) /* request ids of the dashboard's ring walk */
#define DASH_VIEW_MS        10000        /* the walk runs this long after a poll of /api/ring */
#define DASH_WALK_MS        250          /* one step of the walk this often */
#define DASH_WALK_GIVEUP_MS 5000         /* a step unanswered this long is tried again */
#define DASH_STATS_MS       2000         /* while watched, ask every known peer this often */
#define DASH_STATS_MAX      256          /* ... at most this many peers a round */
#define DASH_TELLS_PER_S    512          /* stats tells a node sends a second, at most */
#define DASH_STATS_FRESH_MS 10000        /* a tell older than this is not shown */

/* What a stranger on the peer port can make a node hold (docs/security.md). */
#define IN_PER_ADDR    128        /* incoming connections from one IPv4 address */
#define FRAME_READ_MS  5000       /* a frame begun must be whole within this */
#define IN_IDLE_MS     60000      /* an incoming connection without a frame this long */
#define IN_READ_CHUNK  65536      /* one read from a peer connection */
#define IN_BUF_SMALL   4096       /* a partial frame this small is always kept */
#define IN_BUF_TOTAL   (4u << 20) /* bytes of partial frames across incoming connections */
#define IN_SWEEP_MS    500        /* how often the timeouts above are checked */
#define AUTH_WAIT_MS   3000       /* with a cluster key: the acceptor's nonce must come in this */
#define LIMIT_LOG_MS   10000      /* a bound that is hit is logged at most this often */
#define BOOK_EVICT     (MAX_PEERS / 16) /* address book full: forget this many at once */
#define HTTP_MAX_CONNS 512              /* HTTP connections at once (libmicrohttpd closes more) */
#define HTTP_PER_IP    64               /* ... from one IPv4 address */
#define HTTP_TIMEOUT_S 10               /* an HTTP connection silent this long is closed */
#define API_TOKEN_MAX  256              /* bytes of an --api-token */

/* The bounds, as /metrics names them (ringnet_limit_hits_total{limit=...}). */
enum {
	LIM_IN_FULL,       /* every incoming slot held by a connection that sent a frame */
	LIM_IN_PER_ADDR,   /* IN_PER_ADDR from that address already */
	LIM_IN_REPLACED,   /* at MAX_IN_CONNS: the oldest connection without a frame closed */
	LIM_FRAME_TIMEOUT, /* a frame not whole after FRAME_READ_MS */
	LIM_IN_IDLE,       /* no frame for IN_IDLE_MS */
	LIM_IN_BUFFER,     /* a partial frame that would take the total over IN_BUF_TOTAL */
	LIM_BOOK_EVICTED,  /* address book entries forgotten to make room */
	LIM_BOOK_FULL,     /* an address not learned: every entry in use */
	LIM_PEER_OUT,      /* a frame refused: PEER_OUT_BYTES to that peer already */
	LIM_COUNT,
	LOG_BAD_FRAME = LIM_COUNT, /* not a bound, but logged at the same pace */
	LOG_AUTH,                  /* a peer that does not know the cluster key */
	LOG_SLOTS
};

enum { FRAME_RING, FRAME_KV, FRAME_DASH, FRAME_MEMBER };
#define FRAME_QUERY 5 /* kv_req / kv_to name the query call, told if undeliverable */
#define FRAME_IDENT 6 /* a WIRE_IDENT frame (peer_ident.c): nothing waits for it */

typedef struct pending {
	struct pending *next;
	uint8_t *buf;
	size_t len;
	uint8_t kind;    /* FRAME_RING: msg goes back to the core if undeliverable */
	uint64_t kv_req; /* FRAME_KV: the kv core's request id, told if undeliverable */
	ring_addr kv_to;
	ring_addr held_to;   /* held until the store's batch is durable (kv.c) */
	uint64_t held_seq;   /* ... the store commit it waits for (store_durable) */
	bool released;       /* it waited, and goes out now: not held again */
	bool claims_nothing; /* says nothing of what this node stored: not held (kv.c) */
	ring_msg msg;        /* handed back to the core if it cannot be delivered */
	ring_peer peers[RING_MAX_SUCC];
} pending;

struct node;

typedef struct {
	struct node *node;
	char addr[WIRE_ADDR_MAX];
	struct sockaddr_in sa;
	uv_tcp_t *tcp; /* NULL when idle */
	uv_connect_t connect;
	bool connected;
	pending *head, *tail;
	unsigned nq;
	uint64_t failed_at;  /* last connect failure: back off before trying again */
	uint32_t backoff_ms; /* how long, from failed_at (0: try at once) */
	uint64_t used_at;    /* last frame sent: for closing idle connections */
	unsigned inflight;   /* writes not yet completed (their callbacks still name p) */
	size_t qbytes;       /* what the frames in head..tail cost (frame_cost, conn.c) */
	size_t wbytes;       /* ... and those in writes not yet completed */
	bool dirty;          /* in node.dirty: frames to write at the end of the iteration */
	uint64_t seen;       /* book clock when last named or used: the LRU order */
	bool unused;         /* a free slot of the address book */
	/* with a cluster key (auth.h): connected means the handshake is done */
	bool authing; /* connected, waiting for the acceptor's nonce */
	uint8_t na[AUTH_NONCE];
	unsigned nna;
	uint64_t connect_at;
	auth_session sess;
	uint64_t seq_out;
	/* what the dashboard knows of it (api.c), until the membership list replaces it */
	rn_id id;
	bool has_id;
	bool left;         /* sent a leave notice, nothing since */
	uint64_t heard_at; /* its last ring message */
	uint64_t stats_at; /* its last WIRE_STATS tell, of: */
	uint64_t stats_keys, stats_bytes;
} peer;

typedef struct inconn {
	uv_tcp_t tcp;
	struct node *node;
	struct inconn *prev, *next; /* node.inconns: the open ones (not those closing) */
	bool listed;
	bool proven;  /* has delivered a whole frame */
	uint32_t ip;  /* remote IPv4 address, network order */
	uint8_t *buf; /* the partial frame (NULL between frames) */
	size_t len, cap;
	uint64_t begun_at;  /* when that partial frame began (0: none) */
	uint64_t active_at; /* accepted, or its last whole frame */
	/* with a cluster key: the nonce sent, the session once the hello checked out */
	bool authed;
	uint8_t na[AUTH_NONCE];
	auth_session sess;
	uint64_t seq_in;
	bool handed; /* its socket went to cast.c (a WIRE_CAST hello): closed quietly */
	/* with --peer-cert: the sender its WIRE_IDENT proved (peer_ident.c) */
	bool ident_ok;
	ring_addr ident;
	rn_id ident_id;
} inconn;

/* One HTTP key-value request, run by its handler on the loop thread: answered at once when
 * the kv core answers before it returns (and nothing waits for a commit), else its
 * connection is suspended until kv.c resumes it with the answer. */
typedef struct job {
	struct job *next;
	struct MHD_Connection *conn;
	uint8_t op; /* KV_PUT / GET / DEL */
	char *key;
	size_t klen;
	char *value; /* a put's JSON value, the bytes the client sent */
	size_t vlen;
	char *rid;     /* the client's request id (Idempotency-Key), or NULL */
	bool has_cond; /* If-Match / If-None-Match: * (see kv_request.has_cond) */
	kv_version cond;
	uint64_t req;
	uint64_t deadline;
	/* the answer */
	unsigned status;
	char *body;
	bool done;         /* the answer is ready (and committed) */
	bool in_call;      /* its handler is still running the kv core: answered without a resume */
	uint64_t held_seq; /* held: the store commit it waits for (kv.c) */
} job;

/* A peer to join through; its ring id is known when an earlier run saved it. */
typedef struct {
	char addr[WIRE_ADDR_MAX];
	rn_id id;
	bool has_id;
} candidate;

/* An input for the kv core that arrived while it was running (see kv.c). */
typedef struct {
	uint8_t kind;
	bool ok;
	uint64_t req;
	ring_addr to;
	rn_id kid;
	ring_peer owner;
} kvq_item;

/* Per HTTP connection state, in MHD's con_cls. */
typedef struct {
	char *body;
	size_t len;
	bool too_big;
	job *job;
	const char *route; /* for /metrics: what was asked, and the answer's status */
	unsigned status;
	struct fx *files;  /* a file route's transfer (files.c) */
	struct qjob *qjob; /* a /query request handed to the loop (query.c) */
} http_req;

typedef struct node {
	const node_opts *o;
	uv_loop_t loop;
	ring_config cfg;
	ring_node *ring;
	ring_out out;
	uv_tcp_t listener;
	uv_timer_t tick, snap;
	/* peer frames queued in one loop iteration go out in one write per peer (conn.c) */
	uv_prepare_t flush_prep;
	uv_check_t flush_check;
	uint32_t dirty[MAX_PEERS];
	uint32_t ndirty;
	size_t peer_out_max;  /* PEER_OUT_BYTES; a test may lower it */
	uint64_t peer_writes; /* writes (each one writev) on outgoing peer connections */
	uv_signal_t sigint, sigterm;
	uint64_t tick_at;
	peer *peers;
	uint32_t npeers;
	wire_book book;
	bool stopping;
	/* counters for /metrics and /health (loop thread; published in snapshots) */
	uint64_t spoofed; /* frames whose claimed sender is not where they came from */
	uint64_t frames_in, frames_out, bad_frames, bytes_in, bytes_out, unreachable;
	unsigned nout, nin; /* open connections */
	uint64_t refused_conns;
	/* the bounds on what strangers can make the node hold (conn.c) */
	inconn *inconns;
	size_t in_buffered; /* bytes held for partial frames across incoming connections */
	uint64_t in_swept_at;
	uint64_t limit_hits[LIM_COUNT];
	uint64_t log_at[LOG_SLOTS], log_quiet[LOG_SLOTS]; /* rate-limited log lines */
	uint64_t book_clock;
	uint32_t *book_free, nbook_free; /* unused address book slots */
	uint8_t rbuf[IN_READ_CHUNK];     /* every incoming connection reads into this */
	bool keyed;                      /* --key: peers must know the cluster key */
	uint8_t key[AUTH_KEY];
	/* the HTTP API's guards (api_auth.c): a bearer token, TLS (PEM text; NULL: plain) */
	char api_token[API_TOKEN_MAX + 1]; /* "": no token asked */
	char *tls_cert, *tls_key;
	uint64_t auth_failed;
	uint64_t msgs_in[RING_MSG_LEAVE + 1], msgs_out[RING_MSG_LEAVE + 1];
	uint64_t lookups, lookup_hops, lookups_failed;
	/* HTTP requests by route and status (counted by http.c) */
	struct {
		const char *route;
		unsigned status;
		uint64_t count;
	} http_count[64];
	unsigned nhttp_count;
	unsigned http_conns;                  /* open HTTP connections */
	uint64_t http_refused;                /* closed at once by the limits above */
	uint64_t http_log_at, http_log_quiet; /* libmicrohttpd's lines, rate-limited */
	char *snap_metrics, *snap_peers;
	/* key-value */
	store *st;
	kv_node *kv;
	/* group commit: what a batch of work sent or answered waits for its commit */
	unsigned batch_depth;
	bool iter_open;      /* nd_batch_iter's batch holds one level of batch_depth */
	bool kv_acked_input; /* the kv core handles an ACK or RESP (kv.c: batch_unsafe) */
	pending *held_head, *held_tail; /* in the order of held_seq */
	job *held_jobs, *held_jobs_tail;
	/* the background sync (kv.c): one at a time, on libuv's thread pool */
	uv_work_t sync_work;
	bool sync_busy;
	uint64_t sync_upto; /* store_committed when it began */
	int sync_rc;
	kvq_item *kvq; /* inputs waiting for the core to return */
	size_t kvq_head, kvq_len, kvq_cap;
	bool kv_busy;
	job *active; /* waiting on the kv core */
	uint64_t kv_seq;
	uint64_t kv_msgs_in[KV_MSG_LAST + 1], kv_msgs_out[KV_MSG_LAST + 1];
	uint64_t kv_replies[KV_CONFLICT + 1];
	uint64_t leave_deadline;
	/* joining: --join addresses, then the peers saved in DATA/peers by an earlier run */
	candidate *candidates;
	unsigned ncandidates, next_candidate, join_tries;
	/* --join names (not addresses): looked up on every try; warned: not resolving, said */
	const char *join_names[NODE_MAX_JOIN];
	bool join_name_warned[NODE_MAX_JOIN];
	unsigned njoin_names;
	uint64_t join_tried_at;
	bool restarted;   /* DATA/peers named peers: this node was in a ring before */
	ring_peer anchor; /* successor(0), the ring's smallest id, saved with the peers */
	uint64_t anchor_at, anchor_seq;
	uint64_t merge_at; /* nd_merge_probe */
	char *saved_peers; /* what DATA/peers holds now */
	/* HTTP */
	struct MHD_Daemon *mhd;
	uv_poll_t http_poll;   /* libmicrohttpd's epoll descriptor, run on readiness */
	uv_timer_t http_timer; /* ... and when MHD_get_timeout says */
	bool http_kick;        /* a connection was resumed: run libmicrohttpd again */
	char *snap_ring, *snap_health;
	struct nd_files *files; /* the file service (files.c) */
	struct nd_cast *cast;   /* swarm broadcast (cast.c) */
	struct nq *query;       /* --config CLUSTER: the query service (query.c), or NULL */
	struct nd_ident *ident; /* --peer-cert: this node's certificate and the CA (peer_ident.c) */
	/* the dashboard (api.c): traffic by type, and the /api/ snapshots under lock */
	traffic tr;
	uint64_t dash_started_at;
	char *snap_api[3];    /* /api/node, /api/ring, /api/peers */
	char *snap_transfers; /* /api/transfers (under lock) */
	unsigned dash_states[4];
	uint64_t dash_pub_at, dash_viewed_at; /* under lock: last publish, last /api/ring */
	uint64_t dash_walk_at, dash_walk_seq, dash_walk_laps; /* the ring walk (api.c) */
	rn_id dash_walk_next;
	bool dash_walking;
	uint64_t dash_asked_at;           /* the last round of stats asks */
	uint64_t dash_told_at, dash_told; /* tells sent in the current second */
	/* membership (member.c) */
	struct nd_member *mem;
} node;

/* ---- node.c ---- */

/* Logs one line at a level (0 error .. 3 debug) if --log-level lets it through. */
void nd_log(const node *n, int level, const char *fmt, ...);
#define LOG_E(n, ...) nd_log(n, 0, __VA_ARGS__)
#define LOG_W(n, ...) nd_log(n, 1, __VA_ARGS__)
#define LOG_I(n, ...) nd_log(n, 2, __VA_ARGS__)
#define LOG_D(n, ...) nd_log(n, 3, __VA_ARGS__)
/* Logs through a slot (LIM_* or LOG_*) at most once every LIMIT_LOG_MS, saying how many
 * lines it held back since (loop thread). */
void nd_log_rl(node *n, int slot, int level, const char *fmt, ...);
/* A bound was hit: counts it for /metrics and logs it, rate-limited. */
void nd_limit(node *n, int which, const char *fmt, ...);
extern const char *const nd_limit_names[LIM_COUNT];
/* Sends what the core put in n->out and handles its events; call after every core call. */
void nd_drain(node *n);

/* ---- conn.c ---- */

/* The address book (wire_book callbacks): ring_addr <-> "host:port"; handle 0 is this node. */
const char *nd_book_name(void *ctx, ring_addr a);
ring_addr nd_book_intern(void *ctx, const char *addr);
void nd_free_frame(pending *f);
void nd_free_frames(pending *f); /* f and every frame after it */
void nd_drop_connection(peer *p);
/* Sends a frame to a peer (connecting first if need be); takes f. */
void nd_send_frame(node *n, ring_addr to, pending *f);
/* Runs ring_tick at `at` (ms, loop time) unless the timer is already due earlier. */
void nd_arm_timer(node *n, uint64_t at);
/* Callbacks: an incoming connection's close, and the peer listener's. */
void nd_in_closed(uv_handle_t *h);
void nd_on_connection(uv_stream_t *server, int status);
/* Closes incoming connections whose frame is overdue or that sent none for too long, and
 * outgoing ones whose handshake is overdue. */
void nd_conn_sweep(node *n);
/* Starts the end-of-iteration flush of peer frames (one write per peer). */
void nd_conn_start(node *n);
/* Live entries of the address book. */
unsigned nd_book_used(const node *n);

/* ---- kv.c ---- */

/* Group commit: the work between begin and end (the frames of one read, the HTTP jobs of
 * one wake-up, one tick) writes in one store transaction; every frame sent and every HTTP
 * answer made meanwhile is held and goes out only once that transaction is on disk.
 * nd_batch_end returns with the batch on disk (what files.c relies on); nd_batch_end_async
 * commits and leaves the last sync to the thread pool (kv.c), the loop going on meanwhile,
 * and what was held goes out when that sync, or a later commit's, returns. */
void nd_batch_begin(node *n);
void nd_batch_end(node *n);
void nd_batch_end_async(node *n);
/* Makes every commit durable now and sends what waited for it (the node stopping). */
void nd_batch_drain(node *n);
/* The store's LMDB transaction committed, so that a read on the thread pool (store_peek)
 * sees every write made so far; and the snapshot timer's idle commit (store.h). */
void nd_store_publish(node *n);
void nd_store_tick(node *n);
/* Whether a store commit is not known to be on disk yet (kv.c). */
bool nd_batch_undurable(const node *n);
/* Opens the loop iteration's batch (once per iteration): what the peer reads and HTTP
 * wake-ups of one iteration write shares one commit, made by nd_batch_iter_close at the
 * iteration's end (conn.c's flush), or by the next nd_batch_end that returns to it. */
void nd_batch_iter(node *n);
void nd_batch_iter_close(node *n);
/* Queues f for `to` while a batch is open; true when it did. */
bool nd_batch_hold(node *n, ring_addr to, pending *f);

/* Makes the kv core (after the store and the ring core exist). 0 or RN_ENOMEM. */
int nd_kv_start(node *n);
/* The compact JSON text of j, which it frees. */
char *nd_json_text(json_t *j);
/* Inputs for the kv core: a ring lookup finished, a frame could not be delivered, a peer
 * sent a KV frame, periodic work (every SNAPSHOT_MS), a graceful leave. */
void nd_kv_on_lookup(node *n, const ring_event *e);
void nd_kv_unreachable(node *n, uint64_t req, ring_addr to);
void nd_kv_on_frame(node *n, const kv_msg *m);
void nd_kv_tick(node *n);
void nd_kv_leave(node *n);
/* Delivers what was queued for the kv core while it ran. */
void nd_kv_pump(node *n);
/* A client request made on the loop thread (the file service's); the answer comes
 * through kv.c's reply, which hands handles nd_files_client claims to files.c. */
void nd_kv_client(node *n, uint64_t client, const kv_request *r);
/* Runs an HTTP request's job through the kv core from its handler (http.c); j->done says
 * whether it was answered before this returned, else kv.c resumes j->conn later. */
void nd_kv_submit(node *n, job *j);
/* Answers 503 to the requests past their deadline (to all of them when all). */
void nd_kv_expire(node *n, bool all);

/* ---- files.c ---- */

/* The file core and its HTTP routes (/upload, /files, /files/<name>, /download/<name>). */
int nd_files_start(node *n);
void nd_files_tick(node *n);
void nd_files_stop(node *n); /* answers every open transfer: the node stops */
void nd_files_free(node *n);
/* A kv client handle the file core made, and its answer (kv.c routes it here). */
bool nd_files_client(uint64_t client);
void nd_files_on_reply(node *n, uint64_t client, const kv_reply *r);
/* The HTTP side: whether a URL is a file route, a request on one, and its end. */
bool nd_files_route(const char *url);
size_t nd_files_unescape(void *cls, struct MHD_Connection *c, char *s);
enum MHD_Result nd_files_http(node *n, struct MHD_Connection *c, http_req *q, const char *url,
                              const char *method, const char *upload, size_t *upload_size);
void nd_files_http_done(node *n, http_req *q, bool completed);
/* Appends the file counters to /metrics; the bytes written. */
size_t nd_files_metrics(node *n, char *b, size_t cap);
/* The uploads and downloads in progress and the last ones ended, as JSON (loop thread). */
json_t *nd_files_transfers(node *n);

/* ---- http.c ---- */

/* Resumes a suspended HTTP connection and has libmicrohttpd run soon to handle it (in
 * external-event mode nothing else would wake it). */
void nd_http_resume(node *n, struct MHD_Connection *c);
/* Builds the snapshots of /ring, /health, /metrics and /peers and swaps them in. */
void nd_publish(node *n);
/* Starts libmicrohttpd at sa, run by the loop (its epoll descriptor polled, a timer for
 * its timeouts); NULL when it cannot. */
struct MHD_Daemon *nd_http_start(node *n, const struct sockaddr_in *sa, int port);

/* api_auth.c */
/* Sets up --api-token and --http-tls for the HTTP API on host (see node.h); 0, or -1 with
 * a message in err. */
int nd_api_auth_setup(node *n, const char *host, char *err, size_t errlen);
/* Whether an Authorization header value carries the node's token (true when none is asked). */
bool nd_api_authorized(const node *n, const char *authorization);
void nd_api_auth_free(node *n);
/* peer_ident.c (--peer-cert): loads the node's certificate and key and the CA of --ca,
 * checking they name this node (0, or -1 with a message in err); frees them; the
 * WIRE_IDENT frame proving this node in session s (NULL when out of memory); checks one
 * that came on c, pinning c to the sender it proves (false: refused, logged). */
int nd_ident_setup(node *n, char *err, size_t errlen);
void nd_ident_free(node *n);
pending *nd_ident_frame(node *n, const auth_session *s);
bool nd_ident_check(node *n, inconn *c, const uint8_t *body, size_t len);
/* api_tls.c: the certificate and key (their paths in crt and key, len bytes each) of a
 * node that serves HTTPS on a non-loopback host without --http-tls, made when needed from
 * its CA; the log says what it did. 0, or -1 with a message in err. */
int nd_api_tls_auto(node *n, const char *host, char *crt, char *key, size_t len, char *err,
                    size_t errlen);
void nd_http_stop(node *n);
/* A JSON answer (copied) with its status, counted for /metrics. */
enum MHD_Result nd_http_reply(http_req *q, struct MHD_Connection *c, unsigned status,
                              const char *body);

/* ---- cast.c ---- */

/* Starts the cast driver (links to the --join addresses, its timer); 0 or RN_ENOMEM. */
int nd_cast_start(node *n);
/* Closes its links and handles (before the loop's last run); nd_cast_free after it. */
void nd_cast_stop(node *n);
void nd_cast_free(node *n);
/* The current cast's progress (pieces held per destination), or JSON null (loop thread). */
json_t *nd_cast_transfer(node *n);
/* conn.c: the connector's hello (auth.h) on stream s: a fresh nonce Nc and HMAC(S,
 * "hello") for the acceptor's nonce na and address; sets *sess. 0, or -1 (nothing sent). */
int nd_write_auth_hello(node *n, uv_stream_t *s, const uint8_t na[AUTH_NONCE], const char *acceptor,
                        auth_session *sess);
/* A WIRE_CAST hello came as the first frame of an incoming connection: cast.c takes the
 * socket over (true; the caller closes its own handle, the socket lives on) or refuses.
 * With a cluster key, sess and seq_in are the connection's session and its next frame's
 * number (the link goes on in them); without, sess is NULL. */
bool nd_cast_accept(node *n, uv_tcp_t *from, const uint8_t *body, size_t len,
                    const auth_session *sess, uint64_t seq_in);
/* POST /cast and GET /cast/status (handlers): the answer's JSON text and status. */
char *nd_cast_http(node *n, const char *method, const char *url, const char *body, size_t len,
                   bool too_big, unsigned *status);

/* ---- query.c ---- */

typedef struct nq nq;
struct qjob;
struct q_config;
/* Reads and checks a cluster file; 0, or an error with a message naming the field. */
int nd_query_load_config(const char *path, struct q_config *c, char *err, size_t errlen);
/* Loads this process's slices and starts the query core (o->query_config). 0 or RN_E*. */
int nd_query_start(node *n);
void nd_query_stop(node *n);
void nd_query_free(node *n);
/* A WIRE_QUERY frame's body; RN_EPROTO when malformed, or when sender_ok(conn, address of
 * the process it claims to be from) says that process cannot have sent it (the
 * connection is dropped). */
int nd_query_on_frame(node *n, const uint8_t *body, size_t len,
                      bool (*sender_ok)(void *conn, ring_addr from), void *conn);
void nd_query_unreachable(node *n, uint64_t req, ring_addr to);
/* GET /query... (handlers), and its resumed answer. */
enum MHD_Result nd_query_http(node *n, struct MHD_Connection *c, http_req *r, const char *url,
                              const char *method);
void nd_query_job_free(struct qjob *j);
/* Appends the query lines to /metrics' body. */
char *nd_query_metrics(node *n, char *body);
/* ---- api.c ---- */

/* An answer the dashboard's routes make: body is owned (freed by the caller) or static. */
typedef struct {
	const char *route, *type;
	const char *body;
	size_t len;
	char *owned;
} nd_answer;

/* The ring walk: a step every DASH_WALK_MS while the dashboard is open (loop thread), and
 * its lookups' answers (DASH_BIT request ids). */
void nd_dash_walk(node *n, uint64_t now);
void nd_dash_on_lookup(node *n, const ring_event *e);
/* A WIRE_STATS frame: an ask is answered with this node's keys and bytes (rate-limited), a
 * tell kept for /api/peers. */
void nd_dash_on_stats(node *n, const wire_stats *m);
/* Learns peers' ids from a ring message (and who sent it, and leave notices). */
void nd_dash_learn(node *n, const ring_msg *m);
/* Builds the /api/ snapshots and takes a traffic sample when one is due (loop thread). */
void nd_dash_publish(node *n);
void nd_dash_free(node *n);
/* Appends the dashboard's metrics to the text of /metrics (takes and returns it). */
char *nd_dash_metrics(node *n, char *text);
/* The dashboard's own files (/, /app.js, ...): the same in every build and holding no data
 * of the node, so they are served without the API token; the page then asks for it. */
bool nd_dash_is_asset(const char *url);
/* A GET of the page or of /api/...: true when url is one of them (HTTP thread). */
bool nd_dash_get(node *n, struct MHD_Connection *c, const char *url, nd_answer *a);

/* ---- member.c ---- */

/* The membership core and its timer (after the ring core exists, the candidates are
 * loaded and the loop runs). 0 or RN_ENOMEM. */
int nd_member_start(node *n);
void nd_member_stop(node *n); /* after the loop is closed */
void nd_member_leave(node *n);
/* A WIRE_MEMBER frame's body; false when malformed or when sender_ok(conn, from) says
 * its claimed sender cannot have sent it (the connection is closed). */
bool nd_member_on_frame(node *n, const uint8_t *body, size_t len,
                        bool (*sender_ok)(void *conn, ring_addr from), void *conn);
/* The address book is about to reuse slot a for another address. */
void nd_member_forget(node *n, ring_addr a);
/* Loop thread: swaps in the snapshot nd_member_list returns. */
void nd_member_publish(node *n);
/* The members as JSON text, {"self": addr, "members": [{id, addr, state
 * ("alive", "suspect", "dead", "left"), incarnation, since_ms, self}]} (the caller frees
 * it; NULL before the first snapshot). */
char *nd_member_list(node *n);
/* Loop thread: what the failure detector says of the peer at handle a ("alive", "suspect",
 * "dead", "left"), or NULL when it does not know it. */
const char *nd_member_state(node *n, ring_addr a);
/* Loop thread: the ringnet_member_* metrics, Prometheus text (the caller frees it). */
char *nd_member_metrics(node *n);
/* Loop thread: the ringnet_kv_route_* metrics written at b (bytes they take, which may be
 * cap or more when they did not fit). */
size_t nd_kv_route_metrics(node *n, char *b, size_t cap);

/* ---- join.c ---- */

void nd_load_candidates(node *n);
bool nd_has_join_peers(const node *n); /* a candidate, or a --join name to look up */
bool nd_restart_ring(node *n);
void nd_try_join(node *n);
void nd_save_peers(node *n);
void nd_anchor_lookup(node *n, uint64_t now);
void nd_merge_probe(node *n, uint64_t now);

#endif
