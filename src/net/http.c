/* http.c — the HTTP API, served by libmicrohttpd on the node's libuv loop: one thread for
 * the ring, the services and HTTP. libmicrohttpd runs in its external-event mode on epoll:
 * the loop polls its epoll descriptor (uv_poll) and calls MHD_run when it is readable and
 * when a timer armed from MHD_get_timeout after every run fires (connection timeouts, data
 * it has read but not yet handled). Every socket is non-blocking and every handler returns
 * without waiting, so a slow client never holds the loop.
 *
 * A key-value request is validated here and run by its handler through the kv core
 * (nd_kv_submit). A get the node answers from its own store is answered before the handler
 * returns; anything else suspends the connection until kv.c resumes it with the answer.
 * One MHD_run is one group commit (nd_batch_begin/end): the puts it reads share a store
 * transaction, and their answers go out once it is on disk. The status routes (/ring,
 * /peers, /health, /metrics) answer from snapshots the loop builds every SNAPSHOT_MS
 * (nd_publish). The HTTP request counters of /metrics are kept here. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "node_internal.h"

/* ---- status snapshots (loop thread) ---- */

static json_t *peer_json(node *n, const ring_peer *p)
{
	if (p->addr == RING_ADDR_NONE || p->addr >= n->npeers)
		return json_null();
	char hex[RN_ID_HEX];
	rn_id_to_hex(&p->id, hex);
	return json_pack("{s:s, s:s}", "id", hex, "addr", n->peers[p->addr].addr);
}

static const char *msg_names[] = {"",       "find_succ", "found", "get_pred", "pred_reply",
                                  "notify", "ping",      "pong",  "leave"};

/* The loop's counters in Prometheus text format (HTTP counters are added on request). */
static char *metrics_text(node *n)
{
	size_t cap = 24576, len = 0;
	char *b = malloc(cap);
	if (!b)
		return NULL;
#define P(...) len += (size_t)snprintf(b + len, len < cap ? cap - len : 0, __VA_ARGS__)
	P("# HELP ringnet_peer_messages_total Ring protocol messages by direction and type.\n"
	  "# TYPE ringnet_peer_messages_total counter\n");
	for (int t = 1; t <= RING_MSG_LEAVE; t++) {
		P("ringnet_peer_messages_total{dir=\"in\",type=\"%s\"} %llu\n", msg_names[t],
		  (unsigned long long)n->msgs_in[t]);
		P("ringnet_peer_messages_total{dir=\"out\",type=\"%s\"} %llu\n", msg_names[t],
		  (unsigned long long)n->msgs_out[t]);
	}
	P("# HELP ringnet_peer_bytes_total Bytes on peer connections.\n"
	  "# TYPE ringnet_peer_bytes_total counter\n"
	  "ringnet_peer_bytes_total{dir=\"in\"} %llu\nringnet_peer_bytes_total{dir=\"out\"} %llu\n",
	  (unsigned long long)n->bytes_in, (unsigned long long)n->bytes_out);
	P("# HELP ringnet_peer_connections Open peer connections (out: at most %d, in: at most "
	  "%d).\n"
	  "# TYPE ringnet_peer_connections gauge\n"
	  "ringnet_peer_connections{dir=\"out\"} %u\nringnet_peer_connections{dir=\"in\"} %u\n",
	  MAX_OUT_CONNS, MAX_IN_CONNS, n->nout, n->nin);
	P("# HELP ringnet_peer_connections_refused_total Incoming connections closed at once "
	  "(%d open, all talking, or %d from that address).\n"
	  "# TYPE ringnet_peer_connections_refused_total counter\n"
	  "ringnet_peer_connections_refused_total %llu\n",
	  MAX_IN_CONNS, IN_PER_ADDR, (unsigned long long)n->refused_conns);
	P("# HELP ringnet_limit_hits_total Times a bound on what peers can make the node hold "
	  "was hit (docs/security.md).\n"
	  "# TYPE ringnet_limit_hits_total counter\n");
	for (int k = 0; k < LIM_COUNT; k++)
		P("ringnet_limit_hits_total{limit=\"%s\"} %llu\n", nd_limit_names[k],
		  (unsigned long long)n->limit_hits[k]);
	P("# HELP ringnet_peer_buffered_bytes Bytes held for partial frames on incoming "
	  "connections (new ones over %u are refused).\n"
	  "# TYPE ringnet_peer_buffered_bytes gauge\nringnet_peer_buffered_bytes %zu\n",
	  IN_BUF_TOTAL, n->in_buffered);
	P("# HELP ringnet_peer_book_entries Addresses in the address book (at most %d; the "
	  "least recently seen that nothing holds are forgotten).\n"
	  "# TYPE ringnet_peer_book_entries gauge\nringnet_peer_book_entries %u\n",
	  MAX_PEERS, nd_book_used(n));
	P("# HELP ringnet_peer_auth_failed_total Incoming connections closed because they did not "
	  "know the cluster key (--key; %s here).\n"
	  "# TYPE ringnet_peer_auth_failed_total counter\nringnet_peer_auth_failed_total %llu\n",
	  n->keyed ? "set" : "not set", (unsigned long long)n->auth_failed);
	P("# HELP ringnet_peer_bad_frames_total Malformed frames (each closed its connection).\n"
	  "# TYPE ringnet_peer_bad_frames_total counter\nringnet_peer_bad_frames_total %llu\n",
	  (unsigned long long)n->bad_frames);
	P("# HELP ringnet_peer_spoofed_frames_total Frames whose claimed sender does not listen on "
	  "the address they came from (each closed its connection; counted in bad frames too).\n"
	  "# TYPE ringnet_peer_spoofed_frames_total counter\nringnet_peer_spoofed_frames_total "
	  "%llu\n",
	  (unsigned long long)n->spoofed);
	P("# HELP ringnet_peer_undeliverable_total Messages handed back: peer unreachable.\n"
	  "# TYPE ringnet_peer_undeliverable_total counter\nringnet_peer_undeliverable_total "
	  "%llu\n",
	  (unsigned long long)n->unreachable);
	P("# HELP ringnet_lookups_total Key lookups started here, and their hops.\n"
	  "# TYPE ringnet_lookups_total counter\nringnet_lookups_total %llu\n"
	  "# HELP ringnet_lookup_hops_total Hops those lookups took, summed.\n"
	  "# TYPE ringnet_lookup_hops_total counter\nringnet_lookup_hops_total %llu\n"
	  "# HELP ringnet_lookups_failed_total Lookups started here that failed.\n"
	  "# TYPE ringnet_lookups_failed_total counter\nringnet_lookups_failed_total %llu\n",
	  (unsigned long long)n->lookups, (unsigned long long)n->lookup_hops,
	  (unsigned long long)n->lookups_failed);
	const kv_stats *ks = n->kv ? kv_get_stats(n->kv) : NULL;
	if (ks) {
		static const char *kv_names[] = {"",      "req",       "resp",   "repl", "ack",
		                                 "read",  "read_ans",  "digest", "keys", "pull",
		                                 "purge", "lease_req", "lease"};
		static const char *st_names[] = {"ok",          "not_found", "unsure", "unknown",
		                                 "not_applied", "error",     "",       "conflict"};
		P("# HELP ringnet_kv_messages_total Key-value peer messages by direction and "
		  "type.\n"
		  "# TYPE ringnet_kv_messages_total counter\n");
		for (int t = 1; t <= KV_MSG_LAST; t++)
			P("ringnet_kv_messages_total{dir=\"in\",type=\"%s\"} %llu\n"
			  "ringnet_kv_messages_total{dir=\"out\",type=\"%s\"} %llu\n",
			  kv_names[t], (unsigned long long)n->kv_msgs_in[t], kv_names[t],
			  (unsigned long long)n->kv_msgs_out[t]);
		P("# HELP ringnet_kv_replies_total Answers to clients of this node, by outcome.\n"
		  "# TYPE ringnet_kv_replies_total counter\n");
		for (int t = 0; t <= KV_CONFLICT; t++)
			if (t != KV_MOVED) /* between nodes only */
				P("ringnet_kv_replies_total{outcome=\"%s\"} %llu\n", st_names[t],
				  (unsigned long long)n->kv_replies[t]);
#define KVC(name, help, v)                                                                         \
	P("# HELP ringnet_kv_" name " " help "\n# TYPE ringnet_kv_" name " counter\n"              \
	  "ringnet_kv_" name " %llu\n",                                                            \
	  (unsigned long long)(v))
		KVC("client_requests_total", "Client requests that entered here.", ks->client_ops);
		KVC("coordinated_total", "Requests this node coordinated as a key's owner.",
		    ks->coordinated);
		KVC("fallbacks_total",
		    "Requests coordinated here because the owner did not answer.", ks->fallbacks);
		KVC("forwarded_total", "Requests sent on to the key's owner.", ks->forwarded);
		KVC("replica_writes_sent_total", "Records sent to replicas (writes and repairs).",
		    ks->repl_sent);
		KVC("replica_writes_applied_total", "Records stored here because they were newer.",
		    ks->repl_applied);
		KVC("replica_writes_stale_total", "Records received older than what is here.",
		    ks->repl_stale);
		KVC("read_repairs_total", "Stale or missing replicas fixed by a read.",
		    ks->read_repairs);
		KVC("sync_rounds_total", "Range digests sent to replicas (anti-entropy).",
		    ks->sync_rounds);
		KVC("repair_keys_pushed_total", "Records pushed to a replica that lacked them.",
		    ks->sync_keys_pushed);
		KVC("repair_keys_pulled_total", "Records asked of a replica that had them newer.",
		    ks->sync_keys_pulled);
		KVC("repair_bytes_total", "Bytes of anti-entropy traffic sent.", ks->sync_bytes);
		KVC("handoffs_total",
		    "Records handed to their owner from outside this node's ranges.",
		    ks->handoffs_done);
		KVC("tombstones_purged_total", "Tombstones dropped after the grace period.",
		    ks->tombs_purged);
		KVC("conflicts_total",
		    "Conditional writes (If-Match, If-None-Match, the file index's) this node "
		    "refused as coordinator: the key had another version.",
		    ks->conflicts);
		KVC("replica_reads_total",
		    "Gets this node answered from its own copy under the owner's read lease.",
		    ks->replica_reads);
		KVC("leases_granted_total",
		    "Read leases (and renewals) this node granted its replicas as owner.",
		    ks->leases_granted);
		KVC("lease_waits_total",
		    "Writes whose answer waited for a read lease holder's acknowledgement.",
		    ks->lease_waits);
		KVC("cache_reads_total",
		    "Gets this node answered from its read cache, under the owner's cache lease.",
		    ks->cache_reads);
		KVC("cache_fills_total", "Owners' answers this node kept in its read cache.",
		    ks->cache_fills);
		KVC("cache_pushes_total",
		    "Records this node pushed, as owner, to the holders of its cache leases.",
		    ks->cache_pushes);
#undef KVC
		P("# HELP ringnet_kv_scrub_total The background scrub: records read and checked, "
		  "copies that failed (dropped, for repair to restore), whole passes over the "
		  "store.\n"
		  "# TYPE ringnet_kv_scrub_total counter\n"
		  "ringnet_kv_scrub_total{what=\"checked\"} %llu\n"
		  "ringnet_kv_scrub_total{what=\"damaged\"} %llu\n"
		  "ringnet_kv_scrub_total{what=\"passes\"} %llu\n",
		  (unsigned long long)ks->scrub_checked, (unsigned long long)ks->scrub_damaged,
		  (unsigned long long)ks->scrub_passes);
		P("# HELP ringnet_kv_replicas_in_sync Replicas of this node's range whose digests "
		  "matched in the last round (R-1 once repaired).\n"
		  "# TYPE ringnet_kv_replicas_in_sync gauge\nringnet_kv_replicas_in_sync %llu\n",
		  (unsigned long long)ks->replicas_in_sync);
		P("# HELP ringnet_kv_leases_held Owners whose read lease this node holds.\n"
		  "# TYPE ringnet_kv_leases_held gauge\nringnet_kv_leases_held %llu\n",
		  (unsigned long long)ks->leases_held);
		P("# HELP ringnet_kv_cache_leases_held Owners whose cache lease this node holds.\n"
		  "# TYPE ringnet_kv_cache_leases_held gauge\nringnet_kv_cache_leases_held %llu\n"
		  "# HELP ringnet_kv_cache_holders Nodes holding a cache lease of this node's "
		  "range.\n"
		  "# TYPE ringnet_kv_cache_holders gauge\nringnet_kv_cache_holders %llu\n"
		  "# HELP ringnet_kv_cache_entries Records in this node's read cache.\n"
		  "# TYPE ringnet_kv_cache_entries gauge\nringnet_kv_cache_entries %llu\n"
		  "# HELP ringnet_kv_cache_bytes Bytes of keys and values in this node's read "
		  "cache.\n"
		  "# TYPE ringnet_kv_cache_bytes gauge\nringnet_kv_cache_bytes %llu\n",
		  (unsigned long long)ks->cache_leases, (unsigned long long)ks->cache_holders,
		  (unsigned long long)ks->cache_entries, (unsigned long long)ks->cache_bytes);
		P("# HELP ringnet_kv_pending_handoffs Handoffs in flight.\n"
		  "# TYPE ringnet_kv_pending_handoffs gauge\nringnet_kv_pending_handoffs %llu\n"
		  "# HELP ringnet_kv_pending_ops Client requests and replica operations in "
		  "flight.\n"
		  "# TYPE ringnet_kv_pending_ops gauge\nringnet_kv_pending_ops %llu\n",
		  (unsigned long long)ks->pending_handoffs, (unsigned long long)ks->pending_ops);
	}
	P("# HELP ringnet_keys_stored Records in this node's store (its own keys, replicas, "
	  "tombstones).\n# TYPE ringnet_keys_stored gauge\nringnet_keys_stored %llu\n"
	  "# HELP ringnet_tombstones_stored Of those, deletes kept until every replica has "
	  "them and the grace period has passed.\n# TYPE ringnet_tombstones_stored gauge\n"
	  "ringnet_tombstones_stored %llu\n",
	  (unsigned long long)(n->st ? store_count(n->st) : 0),
	  (unsigned long long)(n->st ? store_tombstones(n->st) : 0));
#undef P
	if (len < cap)
		len += nd_files_metrics(n, b + len, cap - len);
	if (len < cap)
		len += nd_kv_route_metrics(n, b + len, cap - len);
	if (len >= cap) {
		free(b);
		return NULL;
	}
	return b;
}

/* Every peer this node knows of, with its role and connection state. */
static char *peers_json(node *n)
{
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	ring_peer pred = ring_predecessor(n->ring);
	json_t *a = json_array();
	for (uint32_t i = 1; i < n->npeers; i++) {
		peer *p = &n->peers[i];
		if (p->unused)
			continue;
		json_t *roles = json_array();
		if (pred.addr == i)
			json_array_append_new(roles, json_string("predecessor"));
		for (size_t k = 0; k < ns; k++)
			if (succ[k].addr == i)
				json_array_append_new(
				    roles, json_string(k ? "successor-list" : "successor"));
		for (unsigned f = 0; f < n->cfg.bits; f++)
			if (ring_finger(n->ring, f).addr == i) {
				json_array_append_new(roles, json_string("finger"));
				break;
			}
		const char *state = p->connected   ? "connected"
		                    : p->tcp       ? "connecting"
		                    : p->failed_at ? "unreachable"
		                                   : "idle";
		json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:I, s:I}", "addr", p->addr,
		                                   "state", state, "roles", roles, "queued",
		                                   (json_int_t)p->nq, "backoff_ms",
		                                   (json_int_t)p->backoff_ms));
	}
	json_t *doc = json_pack("{s:s, s:o}", "self", n->peers[0].addr, "peers", a);
	char *t = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return t;
}

void nd_publish(node *n)
{
	json_t *r = json_object();
	ring_peer self = {*ring_self_id(n->ring), 0};
	json_object_set_new(r, "name", json_string(n->o->name));
	json_object_set_new(r, "self", peer_json(n, &self));
	json_object_set_new(r, "joined", json_boolean(ring_joined(n->ring)));
	ring_peer pred = ring_predecessor(n->ring);
	json_object_set_new(r, "predecessor", peer_json(n, &pred));
	ring_peer succ[RING_MAX_SUCC];
	size_t ns = ring_successors(n->ring, succ, RING_MAX_SUCC);
	json_t *sl = json_array();
	for (size_t i = 0; i < ns; i++)
		json_array_append_new(sl, peer_json(n, &succ[i]));
	json_object_set_new(r, "successors", sl);
	json_t *fl = json_array();
	ring_peer last = {.addr = RING_ADDR_NONE - 1};
	for (unsigned i = 0; i < n->cfg.bits; i++) {
		ring_peer f = ring_finger(n->ring, i);
		if (f.addr == last.addr && rn_id_eq(&f.id, &last.id))
			continue; /* runs of equal fingers are listed once, by their first index */
		last = f;
		json_t *e = peer_json(n, &f);
		if (json_is_object(e))
			json_object_set_new(e, "from", json_integer(i));
		json_array_append_new(fl, e);
	}
	json_object_set_new(r, "fingers", fl);
	char *ring_s = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	json_t *h = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I}", "status", "ok", "name", n->o->name,
	                      "joined", ring_joined(n->ring), "frames_in", (json_int_t)n->frames_in,
	                      "frames_out", (json_int_t)n->frames_out, "bad_frames",
	                      (json_int_t)n->bad_frames);
	char *health_s = json_dumps(h, JSON_COMPACT);
	json_decref(h);
	char *metrics_s = nd_dash_metrics(n, metrics_text(n));
	char *member_m = nd_member_metrics(n);
	if (metrics_s && member_m) {
		size_t a = strlen(metrics_s), b = strlen(member_m);
		char *both = realloc(metrics_s, a + b + 1);
		if (both) {
			memcpy(both + a, member_m, b + 1);
			metrics_s = both;
		}
	}
	free(member_m);
	nd_member_publish(n);
	char *peers_s = peers_json(n);
	free(n->snap_ring);
	free(n->snap_health);
	free(n->snap_metrics);
	free(n->snap_peers);
	n->snap_ring = ring_s;
	n->snap_health = health_s;
	n->snap_metrics = metrics_s;
	n->snap_peers = peers_s;
	nd_dash_publish(n);
}

/* ---- requests ---- */

/* Sends t (len bytes, malloc'd: the response frees it). */
static enum MHD_Result send_text(http_req *q, struct MHD_Connection *c, unsigned status, char *t,
                                 size_t len, bool prom)
{
	q->status = status;
	struct MHD_Response *r = MHD_create_response_from_buffer(len, t, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(t);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type",
	                        prom ? "text/plain; version=0.0.4" : "application/json");
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"ringnet\"");
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result reply(http_req *q, struct MHD_Connection *c, unsigned status,
                             const char *body)
{
	bool prom = q->route && !strcmp(q->route, "/metrics") && status == 200;
	/* JSON answers end with a newline, so that a shell prompt does not stick to them */
	size_t len = strlen(body);
	char *t = malloc(len + 2);
	if (!t)
		return MHD_NO;
	memcpy(t, body, len);
	if (!prom && (!len || body[len - 1] != '\n'))
		t[len++] = '\n';
	return send_text(q, c, status, t, len, prom);
}

/* A kv job's answer: its body is handed to the response when it already ends a line. */
static enum MHD_Result reply_job(http_req *q, struct MHD_Connection *c, job *j)
{
	if (!j->body) /* sent already */
		return MHD_YES;
	size_t len = strlen(j->body);
	if (!len || j->body[len - 1] != '\n')
		return reply(q, c, j->status, j->body);
	char *t = j->body;
	j->body = NULL;
	return send_text(q, c, j->status, t, len, false);
}

enum MHD_Result nd_http_reply(http_req *q, struct MHD_Connection *c, unsigned status,
                              const char *body)
{
	return reply(q, c, status, body);
}

static enum MHD_Result reply_json(http_req *q, struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *t = nd_json_text(j);
	enum MHD_Result rc = reply(q, c, status, t ? t : "{}");
	free(t);
	return rc;
}

static enum MHD_Result bad_request(http_req *q, struct MHD_Connection *c, unsigned status,
                                   const char *why)
{
	return reply_json(q, c, status, json_pack("{s:s}", "error", why));
}

/* The dashboard's page and /api/ routes (api.c). */
static enum MHD_Result reply_answer(http_req *q, struct MHD_Connection *c, nd_answer *a)
{
	if (!a->body)
		return bad_request(q, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	q->route = a->route;
	q->status = MHD_HTTP_OK;
	struct MHD_Response *r = MHD_create_response_from_buffer(a->len, (void *)(uintptr_t)a->body,
	                                                         a->owned ? MHD_RESPMEM_MUST_FREE
	                                                                  : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		free(a->owned);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", a->type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ok;
}

/* Appends the HTTP counters to the snapshot of the loop's metrics. */
static char *add_http_metrics(node *n, char *body)
{
	size_t len = strlen(body), cap = len + 1024 + n->nhttp_count * 96;
	char *b = realloc(body, cap);
	if (!b) {
		free(body);
		return NULL;
	}
	len += (size_t)snprintf(
	    b + len, cap - len,
	    "# HELP ringnet_http_connections Open HTTP connections (at most %d, %d from one "
	    "address).\n"
	    "# TYPE ringnet_http_connections gauge\nringnet_http_connections %u\n"
	    "# HELP ringnet_http_connections_refused_total HTTP connections closed at once by "
	    "those limits.\n"
	    "# TYPE ringnet_http_connections_refused_total counter\n"
	    "ringnet_http_connections_refused_total %llu\n"
	    "# HELP ringnet_http_requests_total HTTP requests by route and status.\n"
	    "# TYPE ringnet_http_requests_total counter\n",
	    HTTP_MAX_CONNS, HTTP_PER_IP, n->http_conns, (unsigned long long)n->http_refused);
	for (unsigned i = 0; i < n->nhttp_count && len < cap; i++)
		len += (size_t)snprintf(
		    b + len, cap - len,
		    "ringnet_http_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
		    n->http_count[i].route, n->http_count[i].status,
		    (unsigned long long)n->http_count[i].count);
	return b;
}

/* A write's precondition: If-Match: "<version>" (as the answers show it) or
 * If-None-Match: * (only if absent). NULL, or what is wrong with the headers. */
static const char *write_condition(struct MHD_Connection *c, bool *has, kv_version *v)
{
	const char *im = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-Match");
	const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
	*has = im || inm;
	*v = (kv_version){0, 0, false};
	if (im && inm)
		return "send If-Match or If-None-Match, not both";
	if (inm)
		return strcmp(inm, "*") ? "If-None-Match takes only * (write only if absent)"
		                        : NULL;
	if (!im)
		return NULL;
	unsigned long long st, wr;
	int used = 0;
	const char *p = im + (*im == '"');
	if (sscanf(p, "%16llx-%16llx%n", &st, &wr, &used) != 2 || used != 33 ||
	    strcmp(p + used, *im == '"' ? "\"" : "") || !st)
		return "If-Match takes a version as the answers show it, "
		       "\"0123456789abcdef-0123456789abcdef\"";
	*v = (kv_version){st, wr, false};
	return NULL;
}

/* Runs a request through the kv core; answers it at once when the core did, else suspends
 * the connection until kv.c resumes it. Takes value. */
static enum MHD_Result submit(node *n, struct MHD_Connection *c, http_req *r, uint8_t op,
                              const char *key, size_t klen, char *value, size_t vlen)
{
	const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	if (rid && (!*rid || strlen(rid) > KV_RID_MAX)) {
		free(value);
		return bad_request(r, c, MHD_HTTP_BAD_REQUEST,
		                   "Idempotency-Key must be 1 to 64 bytes");
	}
	bool has_cond = false;
	kv_version cond;
	const char *bad = op == KV_GET ? NULL : write_condition(c, &has_cond, &cond);
	if (bad) {
		free(value);
		return bad_request(r, c, MHD_HTTP_BAD_REQUEST, bad);
	}
	job *j = calloc(1, sizeof *j);
	if (!j || !(j->key = malloc(klen + 1)) || (rid && !(j->rid = strdup(rid)))) {
		if (j)
			free(j->key);
		free(j);
		free(value);
		return bad_request(r, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	}
	memcpy(j->key, key, klen);
	j->key[klen] = '\0';
	j->klen = klen;
	j->conn = c;
	j->op = op;
	j->value = value;
	j->vlen = vlen;
	j->has_cond = has_cond;
	j->cond = cond;
	r->job = j;
	nd_kv_submit(n, j);
	if (j->done)
		return reply_job(r, c, j);
	MHD_suspend_connection(c);
	return MHD_YES;
}

/* Where the top-level "value" member's text is in a valid JSON object: the bytes the
 * client sent, stored as they are. 0 when the key is spelled with escapes (the caller
 * then stores the value as jansson writes it). */
static size_t skip_ws(const char *b, size_t i, size_t n)
{
	while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
		i++;
	return i;
}

static size_t skip_string(const char *b, size_t i, size_t n, bool *escaped)
{
	for (i++; i < n && b[i] != '"'; i++)
		if (b[i] == '\\') {
			*escaped = true;
			i++;
		}
	return i + 1;
}

static size_t skip_value(const char *b, size_t i, size_t n)
{
	bool esc = false;
	if (b[i] == '"')
		return skip_string(b, i, n, &esc);
	if (b[i] != '{' && b[i] != '[') {
		while (i < n && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' &&
		       b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
			i++;
		return i;
	}
	int depth = 0;
	for (; i < n; i++) {
		if (b[i] == '"') {
			i = skip_string(b, i, n, &esc) - 1;
			continue;
		}
		depth += b[i] == '{' || b[i] == '[';
		depth -= b[i] == '}' || b[i] == ']';
		if (!depth)
			return i + 1;
	}
	return n;
}

static bool raw_value(const char *b, size_t n, size_t *off, size_t *len)
{
	size_t i = skip_ws(b, 0, n);
	if (i >= n || b[i] != '{')
		return false;
	for (i = skip_ws(b, i + 1, n); i < n && b[i] == '"';) {
		bool esc = false;
		size_t k0 = i + 1, k1 = skip_string(b, i, n, &esc);
		i = skip_ws(b, k1, n);
		if (i >= n || b[i] != ':')
			return false;
		i = skip_ws(b, i + 1, n);
		size_t v0 = i, v1 = skip_value(b, i, n);
		if (esc)
			return false;
		if (k1 - 1 - k0 == 5 && !memcmp(b + k0, "value", 5)) {
			*off = v0;
			*len = v1 - v0;
			return true;
		}
		i = skip_ws(b, v1, n);
		if (i < n && b[i] == ',')
			i = skip_ws(b, i + 1, n);
	}
	return false;
}

/* A key as the API takes it: 1 to KV_KEY_MAX bytes of UTF-8 without NUL. */
static const char *key_problem(const char *key, size_t len)
{
	if (!len)
		return "the key is missing or empty";
	if (len > KV_KEY_MAX)
		return "keys are at most 1024 bytes";
	if (strlen(key) != len)
		return "keys cannot hold NUL characters";
	json_t *probe = json_stringn(key, len); /* NULL when not valid UTF-8 */
	if (!probe)
		return "keys must be valid UTF-8";
	json_decref(probe);
	return NULL;
}

static enum MHD_Result put_request(node *n, struct MHD_Connection *c, http_req *r)
{
	if (r->too_big)
		return bad_request(r, c, MHD_HTTP_CONTENT_TOO_LARGE,
		                   "request body over 1 MiB: store smaller values");
	json_error_t err;
	json_t *doc = r->body ? json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &err) : NULL;
	if (!doc) {
		char why[256];
		snprintf(why, sizeof why, "malformed JSON: %s (line %d, column %d)",
		         r->body ? err.text : "empty body", r->body ? err.line : 0,
		         r->body ? err.column : 0);
		return bad_request(r, c, MHD_HTTP_BAD_REQUEST, why);
	}
	json_t *key = json_object_get(doc, "key"), *value = json_object_get(doc, "value");
	enum MHD_Result rc;
	const char *problem = json_is_string(key)
	                          ? key_problem(json_string_value(key), json_string_length(key))
	                          : NULL;
	if (!json_is_object(doc) || !json_is_string(key))
		rc = bad_request(r, c, MHD_HTTP_BAD_REQUEST,
		                 "send an object with a non-empty string \"key\" and a \"value\"");
	else if (!value)
		rc = bad_request(r, c, MHD_HTTP_BAD_REQUEST, "missing \"value\" (any JSON value)");
	else if (problem)
		rc = bad_request(r, c,
		                 json_string_length(key) > KV_KEY_MAX ? MHD_HTTP_CONTENT_TOO_LARGE
		                                                      : MHD_HTTP_BAD_REQUEST,
		                 problem);
	else {
		size_t off, len;
		char *v;
		if (raw_value(r->body, r->len, &off, &len) && (v = malloc(len ? len : 1))) {
			memcpy(v, r->body + off, len); /* the client's bytes */
		} else {
			v = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
			len = v ? strlen(v) : 0;
		}
		rc = submit(n, c, r, KV_PUT, json_string_value(key), json_string_length(key), v,
		            len);
	}
	json_decref(doc);
	return rc;
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **state)
{
	(void)version;
	node *n = cls;
	http_req *r = *state;
	if (!r) { /* first call: headers only */
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		*state = r;
		/* a body in an encoding this server cannot read (gzip, ...) would be waited for
		 * until the connection times out: refuse it before it is sent */
		const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
		                                             MHD_HTTP_HEADER_TRANSFER_ENCODING);
		if (strcmp(url, "/health") != 0 && !nd_dash_is_asset(url) &&
		    !nd_api_authorized(n, MHD_lookup_connection_value(
		                              c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
			r->route = "other";
			return bad_request(r, c, MHD_HTTP_UNAUTHORIZED,
			                   "this node wants 'Authorization: Bearer TOKEN' (its "
			                   "--api-token)");
		}
		if (te && strcasecmp(te, "chunked") != 0) {
			r->route = "other";
			return bad_request(r, c, MHD_HTTP_NOT_IMPLEMENTED,
			                   "Transfer-Encoding other than chunked is not supported: "
			                   "send the body as is or chunked");
		}
		if (nd_files_route(url))
			return nd_files_http(n, c, r, url, method, upload, upload_size);
		return MHD_YES;
	}
	if (nd_files_route(url)) {
		if (r->files)
			return nd_files_http(n, c, r, url, method, upload, upload_size);
		*upload_size = 0; /* answered at the first call */
		return MHD_YES;
	}
	if (*upload_size) { /* body arrives in pieces; keep at most KV_BODY_MAX */
		if (!r->too_big && r->len + *upload_size <= KV_BODY_MAX) {
			char *b = realloc(r->body, r->len + *upload_size);
			if (b) {
				memcpy(b + r->len, upload, *upload_size);
				r->body = b;
				r->len += *upload_size;
			} else {
				r->too_big = true;
			}
		} else {
			r->too_big = true;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (r->qjob || !strncmp(url, "/query", 6)) /* query.c */
		return nd_query_http(n, c, r, url, method);
	if (r->job) /* resumed: kv.c has the answer */
		return r->job->done ? reply_job(r, c, r->job) : MHD_YES;
	bool get = !strcmp(method, "GET");
	nd_answer dash;
	if (get && nd_dash_get(n, c, url, &dash))
		return reply_answer(r, c, &dash);
	static const char *status_routes[] = {"/ring", "/health", "/peers", "/metrics"};
	for (int i = 0; i < 4; i++) {
		if (strcmp(url, status_routes[i]) != 0)
			continue;
		r->route = status_routes[i];
		if (!get)
			return bad_request(r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			                   "use GET on this route");
		char *snap[] = {n->snap_ring, n->snap_health, n->snap_peers, n->snap_metrics};
		char *body = snap[i] ? strdup(snap[i]) : NULL;
		if (body && i == 3)
			body = nd_query_metrics(n, add_http_metrics(n, body));
		if (!body)
			return bad_request(r, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
		enum MHD_Result rc = reply(r, c, MHD_HTTP_OK, body);
		free(body);
		return rc;
	}
	if (!strcmp(url, "/members")) {
		r->route = "/members";
		if (!get)
			return bad_request(r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			                   "use GET on this route");
		char *body = nd_member_list(n);
		if (!body)
			return bad_request(r, c, MHD_HTTP_SERVICE_UNAVAILABLE, "starting");
		enum MHD_Result rc = reply(r, c, MHD_HTTP_OK, body);
		free(body);
		return rc;
	}
	if (!strcmp(url, "/cast") || !strcmp(url, "/cast/status")) {
		r->route = url[5] ? "/cast/status" : "/cast";
		unsigned st = 500;
		char *body = nd_cast_http(n, method, url, r->body, r->len, r->too_big, &st);
		enum MHD_Result rc = reply(r, c, st, body ? body : "{}");
		free(body);
		return rc;
	}
	r->route = "other";
	if (!strcmp(url, "/kv")) {
		r->route = "/kv";
		if (strcmp(method, "POST") != 0)
			return bad_request(
			    r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			    "POST /kv stores; GET or DELETE /kv/<key> reads or removes");
		return put_request(n, c, r);
	}
	if (!strncmp(url, "/kv/", 4)) {
		const char *key = url + 4;
		r->route = "/kv/<key>";
		bool del = !strcmp(method, "DELETE");
		if (!get && !del)
			return bad_request(r, c, MHD_HTTP_METHOD_NOT_ALLOWED,
			                   "use GET or DELETE on /kv/<key>");
		const char *problem = key_problem(key, strlen(key));
		if (problem)
			return bad_request(r, c,
			                   strlen(key) > KV_KEY_MAX ? MHD_HTTP_CONTENT_TOO_LARGE
			                                            : MHD_HTTP_BAD_REQUEST,
			                   problem);
		return submit(n, c, r, get ? KV_GET : KV_DEL, key, strlen(key), NULL, 0);
	}
	return bad_request(
	    r, c, MHD_HTTP_NOT_FOUND,
	    "no such route: try POST /kv, GET /kv/<key>, GET /ring, /peers, /members, /health, "
	    "/metrics, / (the dashboard), /api/node, /api/ring, /api/peers, /api/traffic, "
	    "/api/files, /api/transfers");
}

static void on_http_done(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode why)
{
	(void)c;
	http_req *r = *state;
	if (!r)
		return;
	node *n = cls;
	nd_files_http_done(n, r, why == MHD_REQUEST_TERMINATED_COMPLETED_OK);
	if (r->route && r->status) {
		unsigned i = 0;
		while (i < n->nhttp_count &&
		       (n->http_count[i].route != r->route || n->http_count[i].status != r->status))
			i++;
		if (i < 64) {
			if (i == n->nhttp_count) {
				n->http_count[i].route = r->route;
				n->http_count[i].status = r->status;
				n->nhttp_count++;
			}
			n->http_count[i].count++;
		}
	}
	nd_query_job_free(r->qjob);
	if (r->job) {
		free(r->job->key);
		free(r->job->rid);
		free(r->job->value);
		free(r->job->body);
		free(r->job);
	}
	free(r->body);
	free(r);
	*state = NULL;
}

/* ---- connection limits ---- */

static void on_http_conn(void *cls, struct MHD_Connection *c, void **sock,
                         enum MHD_ConnectionNotificationCode toe)
{
	(void)c;
	(void)sock;
	node *n = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		n->http_conns++;
	else if (n->http_conns)
		n->http_conns--;
}

/* libmicrohttpd's own log lines: at most one per LIMIT_LOG_MS, since a client can cause
 * one per connection. A connection refused by HTTP_MAX_CONNS or HTTP_PER_IP is logged as
 * "reached connection limit" (libmicrohttpd 0.9.75 has no callback for it), and counted. */
static void on_http_log(void *cls, const char *fmt, va_list ap)
{
	node *n = cls;
	char line[256];
	vsnprintf(line, sizeof line, fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	uint64_t now = uv_now(&n->loop);
	if (strstr(line, "connection limit"))
		n->http_refused++;
	uint64_t quiet = n->http_log_quiet;
	bool say = !n->http_log_at || now - n->http_log_at >= LIMIT_LOG_MS;
	if (say) {
		n->http_log_at = now ? now : 1;
		n->http_log_quiet = 0;
	} else {
		n->http_log_quiet++;
	}
	if (say && quiet)
		nd_log(n, 1, "http: %s (and %llu more lines in the last %d s)", line,
		       (unsigned long long)quiet, LIMIT_LOG_MS / 1000);
	else if (say)
		nd_log(n, 1, "http: %s", line);
}

/* ---- the loop runs libmicrohttpd ---- */

/* The memory libmicrohttpd gives one connection for its request line, headers and read
 * buffer (nginx's header buffers are 8 KiB too; a longer header gets 431). Its default,
 * 32 KiB, is cleared between the requests of a keep-alive connection: half the
 * instructions of a GET went there. */
#define HTTP_POOL_BYTES 8192

static void on_http_timer(uv_timer_t *t);

static void http_arm(node *n)
{
	MHD_UNSIGNED_LONG_LONG ms;
	if (n->http_kick)
		uv_timer_start(&n->http_timer, on_http_timer, 0, 0);
	else if (MHD_get_timeout(n->mhd, &ms) == MHD_YES)
		uv_timer_start(&n->http_timer, on_http_timer, ms, 0);
	else
		uv_timer_stop(&n->http_timer);
}

/* One round of libmicrohttpd's work: what is readable is read and handled, what is
 * writable written, new connections accepted, idle ones closed. One group commit. */
static void http_run(node *n)
{
	if (!n->mhd) /* stopped */
		return;
	n->http_kick = false; /* MHD_run handles the resumes made so far */
	nd_batch_begin(n);
	MHD_run(n->mhd);
	nd_batch_end_async(n);
	http_arm(n);
}

static void on_http_timer(uv_timer_t *t)
{
	http_run(t->data);
}

void nd_http_resume(node *n, struct MHD_Connection *c)
{
	if (!n->mhd) /* stopping: MHD_stop_daemon closes every connection */
		return;
	MHD_resume_connection(c);
	if (!n->http_kick) {
		n->http_kick = true;
		uv_timer_start(&n->http_timer, on_http_timer, 0, 0);
	}
}

static void on_http_poll(uv_poll_t *p, int status, int events)
{
	(void)status; /* an error on the epoll descriptor: MHD_run finds it */
	(void)events;
	http_run(p->data);
}

/* ---- start and stop (loop thread) ---- */

struct MHD_Daemon *nd_http_start(node *n, const struct sockaddr_in *sa, int port)
{
	/* The limits keep one client (slowloris: many connections, each sending a header line
	 * now and then) from taking every connection: one address gets HTTP_PER_IP of the
	 * HTTP_MAX_CONNS, and a connection silent for HTTP_TIMEOUT_S is closed. */
	struct MHD_OptionItem tls[] = {
	    {MHD_OPTION_HTTPS_MEM_CERT, 0, n->tls_cert},
	    {MHD_OPTION_HTTPS_MEM_KEY, 0, n->tls_key},
	    {MHD_OPTION_END, 0, NULL},
	};
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
	if (n->tls_cert)
		flags |= MHD_USE_TLS;
	struct MHD_Daemon *d = MHD_start_daemon(
	    flags, (uint16_t)port, NULL, NULL, on_http, n, MHD_OPTION_EXTERNAL_LOGGER, on_http_log,
	    n, MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_PER_IP,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_POOL_BYTES,
	    MHD_OPTION_NOTIFY_CONNECTION, on_http_conn, n, MHD_OPTION_NOTIFY_COMPLETED,
	    on_http_done, n, MHD_OPTION_UNESCAPE_CALLBACK, nd_files_unescape, n, MHD_OPTION_ARRAY,
	    n->tls_cert ? tls : tls + 2, MHD_OPTION_END);
	if (!d)
		return NULL;
	const union MHD_DaemonInfo *ep = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!ep || uv_poll_init(&n->loop, &n->http_poll, ep->epoll_fd) < 0) {
		MHD_stop_daemon(d);
		return NULL;
	}
	n->http_poll.data = n->http_timer.data = n;
	uv_timer_init(&n->loop, &n->http_timer);
	uv_poll_start(&n->http_poll, UV_READABLE, on_http_poll);
	n->mhd = d;
	http_arm(n);
	return d;
}

void nd_http_stop(node *n)
{
	/* the answers just made for what was waiting (503s: the node stops) go out first */
	for (int i = 0; i < 3 && n->http_kick; i++)
		http_run(n);
	struct MHD_Daemon *d = n->mhd;
	n->mhd = NULL;               /* what its last callbacks resume is not run again */
	uv_poll_stop(&n->http_poll); /* before MHD closes the descriptor it watches */
	uv_timer_stop(&n->http_timer);
	MHD_stop_daemon(d);
}
