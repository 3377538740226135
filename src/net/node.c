/* node.c — see node.h. The node's loop thread at its centre: logging, nd_drain (sends what
 * the ring core put out and handles its events), the periodic work of the snapshot timer, and
 * the lifecycle (start, signals, graceful leave, shutdown). The rest of the node: conn.c (the
 * address book, peer connections, framing, the core's timer), kv.c (the key-value path and
 * the key handoff), http.c (the HTTP API), join.c (joining and the saved peers);
 * node_internal.h holds what they share. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "node_internal.h"

/* ---- logging ---- */

/* One event per line, key=value: ts (UTC), level, node, msg (quoted). The line goes out in
 * one write(), so lines of the nodes of `ringnet cluster`, which share the terminal, and
 * of this node's two threads never mix mid-line. */
void nd_log(const node *n, int level, const char *fmt, ...)
{
	if (level > n->o->log_level)
		return;
	static const char *names[] = {"error", "warn", "info", "debug"};
	char msg[1536], line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t len = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
	len += (size_t)snprintf(line + len, sizeof line - len, ".%03dZ level=%s node=%s msg=\"",
	                        (int)(ts.tv_nsec / 1000000), names[level], n->o->name);
	for (const char *p = msg; *p && len < sizeof line - 4; p++) {
		if (*p == '"' || *p == '\\' || *p == '\n') {
			line[len++] = '\\';
			line[len++] = *p == '\n' ? 'n' : *p;
		} else {
			line[len++] = *p;
		}
	}
	line[len++] = '"';
	line[len++] = '\n';
	for (size_t off = 0; off < len;) {
		ssize_t w = write(STDERR_FILENO, line + off, len - off);
		if (w <= 0 && errno != EINTR)
			break;
		off += w > 0 ? (size_t)w : 0;
	}
}

const char *const nd_limit_names[LIM_COUNT] = {
    "in_connections",     "in_per_address",  "in_replaced",
    "frame_read_timeout", "in_idle_timeout", "in_buffer",
    "book_evicted",       "book_full",       "peer_out"};

static void log_rl_v(node *n, int slot, int level, const char *fmt, va_list ap)
{
	uint64_t now = uv_now(&n->loop);
	if (n->log_at[slot] && now - n->log_at[slot] < LIMIT_LOG_MS) {
		n->log_quiet[slot]++;
		return;
	}
	char line[512];
	vsnprintf(line, sizeof line, fmt, ap);
	if (n->log_quiet[slot])
		nd_log(n, level, "%s (and %llu more like it in the last %d s)", line,
		       (unsigned long long)n->log_quiet[slot], LIMIT_LOG_MS / 1000);
	else
		nd_log(n, level, "%s", line);
	n->log_at[slot] = now ? now : 1;
	n->log_quiet[slot] = 0;
}

void nd_log_rl(node *n, int slot, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_rl_v(n, slot, level, fmt, ap);
	va_end(ap);
}

void nd_limit(node *n, int which, const char *fmt, ...)
{
	n->limit_hits[which]++;
	va_list ap;
	va_start(ap, fmt);
	log_rl_v(n, which, 1, fmt, ap);
	va_end(ap);
}

/* ---- addresses ---- */

int node_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
		return -1;
	/* digits only: strtol alone would take " 80", "+80" and "-0" too */
	const char *d = colon + 1;
	if (!*d || strspn(d, "0123456789") != strlen(d) || strlen(d) > 5)
		return -1;
	long p = strtol(d, NULL, 10);
	if (p < 1 || p > 65535)
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (!strcmp(host, "localhost"))
		snprintf(host, hostlen, "127.0.0.1");
	struct sockaddr_in sa;
	if (uv_ip4_addr(host, (int)p, &sa) != 0)
		return -1;
	*port = (int)p;
	return 0;
}

int node_resolve_hostport(const char *v, char *out, size_t len)
{
	const char *colon = strrchr(v, ':');
	char host[256];
	if (!colon || colon == v || (size_t)(colon - v) >= sizeof host)
		return -1;
	memcpy(host, v, (size_t)(colon - v));
	host[colon - v] = '\0';
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return -1;
	char ip[INET_ADDRSTRLEN];
	const struct sockaddr_in *sa = (const struct sockaddr_in *)res->ai_addr;
	int ok = inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip) != NULL;
	freeaddrinfo(res);
	if (!ok || (size_t)snprintf(out, len, "%s%s", ip, colon) >= len)
		return -1;
	return 0;
}

bool node_is_hostname_port(const char *v)
{
	const char *colon = strrchr(v, ':');
	if (!colon || colon == v || colon - v > 63)
		return false;
	for (const char *c = v; c < colon; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '-' || *c == '.'))
			return false;
	if (*v == '-' || *v == '.')
		return false;
	char probe[16];
	char host[24];
	int port;
	if ((size_t)snprintf(probe, sizeof probe, "127.0.0.1%s", colon) >= sizeof probe)
		return false;
	return node_parse_hostport(probe, host, sizeof host, &port) == 0;
}

/* ---- the ring core's output ---- */

/* Sends what the core put in n->out, reports its events, and re-arms the tick timer.
 * Handing messages back can re-enter nd_drain, so the output is copied out first. */
void nd_drain(node *n)
{
	ring_out o = n->out;
	ring_out_reset(&n->out);
	for (size_t k = 0; k < o.nmsgs; k++) {
		ring_msg *m = &o.msgs[k];
		if (m->to == RING_ADDR_NONE || m->to >= n->npeers)
			continue;
		pending *f = calloc(1, sizeof *f);
		if (!f)
			continue;
		f->msg = *m;
		if (m->npeers)
			memcpy(f->peers, m->peers, m->npeers * sizeof(ring_peer));
		f->msg.peers = f->peers;
		if (wire_encode_ring(&f->msg, &n->book, &f->buf, &f->len) < 0) {
			free(f);
			continue;
		}
		n->msgs_out[m->type <= RING_MSG_LEAVE ? m->type : 0]++;
		traffic_count(&n->tr, traffic_ring_type(m->type), TR_OUT, f->len);
		nd_send_frame(n, m->to, f);
	}
	for (size_t k = 0; k < o.nevents; k++) {
		const ring_event *e = &o.events[k];
		const char *who =
		    e->result.addr < n->npeers ? n->peers[e->result.addr].addr : "none";
		switch (e->type) {
		case RING_EV_LOOKUP_DONE:
			nd_kv_on_lookup(n, e);
			break;
		case RING_EV_JOINED:
			if (e->result.addr == 0) /* the ring answered with this node's old entry */
				LOG_I(n,
				      "joined the ring; its successor is not known yet (the ring "
				      "still lists this node from before its restart; "
				      "stabilization finds it)");
			else
				LOG_I(n, "joined the ring; successor %s", who);
			break;
		case RING_EV_ID_TAKEN:
			LOG_E(n, "another node (%s) already has this id: choose another --id", who);
			break;
		case RING_EV_SUCC_CHANGED:
			if (e->result.addr == 0)
				LOG_I(n,
				      "successor is now this node itself: it is alone in the ring");
			else
				LOG_I(n, "successor is now %s", who);
			break;
		case RING_EV_PRED_CHANGED:
			LOG_I(n, "predecessor is now %s", who);
			break;
		default:
			break;
		}
	}
	if (o.wake_at != UINT64_MAX)
		nd_arm_timer(n, o.wake_at);
}

/* ---- periodic work ---- */

static void on_snapshot(uv_timer_t *t)
{
	node *n = t->data;
	nd_publish(n);
	nd_kv_tick(n);
	nd_store_tick(n);
	nd_kv_expire(n, false);
	nd_files_tick(n);
	uint64_t now = uv_now(&n->loop);
	nd_conn_sweep(n);
	nd_anchor_lookup(n, now);
	nd_merge_probe(n, now);
	nd_dash_walk(n, now);
	nd_save_peers(n);
	if (!n->stopping && !ring_joined(n->ring) && nd_has_join_peers(n) &&
	    now - n->join_tried_at >= REJOIN_EVERY_MS) {
		if (!nd_restart_ring(n))
			nd_try_join(n);
	}
}

/* ---- lifecycle ---- */

/* Leaving: stop once the leave pushes are acknowledged, or at the deadline. */
static void leave_check(uv_timer_t *t)
{
	node *n = t->data;
	nd_kv_tick(n);
	bool waiting = n->kv && kv_leaving(n->kv);
	if (!waiting || uv_now(&n->loop) >= n->leave_deadline) {
		if (waiting)
			LOG_W(n, "leaving before every pushed key was acknowledged; the other "
			         "replicas and --data still have them");
		uv_stop(t->loop);
	}
}

static void on_signal(uv_signal_t *s, int sig)
{
	node *n = s->data;
	if (n->stopping)
		return;
	n->stopping = true;
	ring_peer succ = ring_successor(n->ring);
	unsigned long long recs = n->st ? store_count(n->st) : 0;
	if (succ.addr < n->npeers && succ.addr)
		LOG_I(n,
		      "signal %d: leaving the ring; its own range goes to the node that becomes "
		      "a new replica, the other replicas keep their copies, and its %llu "
		      "records stay in %s (successor %s)",
		      sig, recs, n->o->data, n->peers[succ.addr].addr);
	else
		LOG_I(n,
		      "signal %d: leaving; no other node is in the ring, so its %llu records "
		      "stay in %s for its next start (nothing is lost)",
		      sig, recs, n->o->data);
	nd_kv_leave(n);
	nd_member_leave(n);
	ring_out_reset(&n->out);
	ring_leave(n->ring, uv_now(&n->loop), &n->out);
	nd_drain(n);
	uv_timer_stop(&n->tick);
	n->leave_deadline = uv_now(&n->loop) + LEAVE_WAIT_MS;
	uv_timer_start(&n->snap, leave_check, 50, 50);
}

/* After the peers' connections are closed, what is left: the listener, timers, signals
 * (no memory of their own) and incoming connections (freed by nd_in_closed). */
static void close_walk(uv_handle_t *h, void *arg)
{
	node *n = arg;
	if (uv_is_closing(h))
		return;
	if (h->type == UV_TCP && h != (uv_handle_t *)&n->listener)
		uv_close(h, nd_in_closed);
	else
		uv_close(h, NULL);
}

/* The connection bounds need more descriptors than a default soft limit of 1024 allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = MAX_IN_CONNS + MAX_OUT_CONNS + 1024; /* + HTTP clients, LMDB, logs */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int node_run(const node_opts *o)
{
	/* A write to a connection the peer has reset raises SIGPIPE, whose default action
	 * kills the process; ignored, the write fails with EPIPE and on_write hands the
	 * frame back to the core like any other undeliverable message. */
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	node *n = calloc(1, sizeof *n);
	if (!n)
		return 1;
	n->o = o;
	n->tick_at = UINT64_MAX;
	n->anchor.addr = RING_ADDR_NONE;
	n->peers = calloc(MAX_PEERS, sizeof *n->peers);
	n->book_free = calloc(MAX_PEERS, sizeof *n->book_free);
	n->book = (wire_book){nd_book_name, nd_book_intern, n};
	int exit_code = 1;
	char host[64];
	int port, hport;
	if (!n->peers || !n->book_free ||
	    node_parse_hostport(o->listen, host, sizeof host, &port) < 0) {
		fprintf(stderr, "ringnet node: --listen '%s' is not HOST:PORT\n", o->listen);
		goto out;
	}
	char hhost[64];
	if (node_parse_hostport(o->http, hhost, sizeof hhost, &hport) < 0) {
		fprintf(stderr, "ringnet node: --http '%s' is not HOST:PORT\n", o->http);
		goto out;
	}
	if (o->key[0]) {
		char kerr[600];
		if (auth_load_key(o->key, n->key, kerr, sizeof kerr) < 0) {
			fprintf(stderr, "ringnet node: %s\n", kerr);
			exit_code = 2; /* like a bad flag: starting again would not help */
			goto out;
		}
		n->keyed = true;
	}
	ring_addr self = nd_book_intern(n, o->listen); /* handle 0 is this node */
	ring_config_default(&n->cfg);
	rn_id id;
	rn_id_hash(&id, o->name, strlen(o->name), n->cfg.bits);
	n->ring = ring_node_new(&n->cfg, &id, self);
	uv_loop_init(&n->loop);
	nd_conn_start(n);
	uv_tcp_init(&n->loop, &n->listener);
	n->listener.data = n;
	int rc = uv_tcp_bind(&n->listener, (const struct sockaddr *)&n->peers[0].sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&n->listener, 128, nd_on_connection);
	if (rc < 0) {
		fprintf(stderr, "ringnet node: cannot listen on %s: %s\n", o->listen,
		        uv_strerror(rc));
		goto out_loop;
	}
	char err[768];
	if (store_open(&n->st, o->data, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet node: %s\n", err);
		goto out_loop;
	}
	if (store_migrated(n->st))
		LOG_I(n, "moved %llu keys from the store layout of an older version",
		      (unsigned long long)store_migrated(n->st));
	if (store_replayed(n->st))
		LOG_I(n,
		      "applied %llu records from the write-ahead log (the node or its machine "
		      "stopped before the store's file had them)",
		      (unsigned long long)store_replayed(n->st));
	if (o->peer_cert[0] && nd_ident_setup(n, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet node: %s\n", err);
		exit_code = 2; /* like a bad flag: starting again would not help */
		goto out_loop;
	}
	if (nd_api_auth_setup(n, hhost, err, sizeof err) < 0) {
		fprintf(stderr, "ringnet node: %s\n", err);
		exit_code = 2; /* like a bad flag: starting again would not help */
		goto out_loop;
	}
	if (nd_kv_start(n) < 0) {
		fprintf(stderr, "ringnet node: out of memory\n");
		goto out_loop;
	}
	if (nd_cast_start(n) < 0) {
		fprintf(stderr, "ringnet node: out of memory\n");
		goto out_loop;
	}
	if (o->query_config[0] && nd_query_start(n) < 0) {
		exit_code = 2; /* a bad cluster file: starting again would not help */
		goto out_loop;
	}
	if (nd_files_start(n) < 0) {
		fprintf(stderr, "ringnet node: --max-file is too large for one manifest\n");
		goto out_loop;
	}
	nd_publish(n);
	struct sockaddr_in hsa;
	uv_ip4_addr(hhost, hport, &hsa);
	n->mhd = nd_http_start(n, &hsa, hport);
	if (!n->mhd) {
		fprintf(stderr, "ringnet node: cannot serve HTTP on %s (port in use?)\n", o->http);
		goto out_loop;
	}
	uv_timer_init(&n->loop, &n->tick);
	n->tick.data = n;
	uv_timer_init(&n->loop, &n->snap);
	n->snap.data = n;
	uv_timer_start(&n->snap, on_snapshot, SNAPSHOT_MS, SNAPSHOT_MS);
	uv_signal_init(&n->loop, &n->sigint);
	uv_signal_init(&n->loop, &n->sigterm);
	n->sigint.data = n->sigterm.data = n;
	uv_signal_start(&n->sigint, on_signal, SIGINT);
	uv_signal_start(&n->sigterm, on_signal, SIGTERM);

	nd_load_candidates(n);
	if (nd_member_start(n) < 0) {
		fprintf(stderr, "ringnet node: out of memory\n");
		goto out_loop;
	}
	ring_out_reset(&n->out);
	if (!nd_has_join_peers(n)) {
		ring_create(n->ring, uv_now(&n->loop), &n->out);
		LOG_I(n, "started a new ring at %s (http %s, data %s%s)", o->listen, o->http,
		      o->data, n->keyed ? ", peers need the cluster key" : "");
	} else {
		nd_try_join(n);
	}
	nd_drain(n);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	exit_code = 0;
out_loop:
	nd_batch_iter_close(n); /* (the last iteration's end closed it, unless it stopped) */
	nd_batch_drain(n);      /* on disk, and what waited for it sent or answered */
	if (n->mhd) {
		/* answer whatever is still waiting before the HTTP server goes away */
		n->stopping = true;
		nd_kv_expire(n, true);
		nd_files_stop(n);
		nd_query_stop(n);
		nd_http_stop(n);
	}
	nd_cast_stop(n);
	for (uint32_t i = 0; i < n->npeers; i++)
		nd_drop_connection(&n->peers[i]);
	uv_walk(&n->loop, close_walk, n);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	uv_loop_close(&n->loop);
	nd_files_free(n);
	nd_query_free(n);
	nd_member_stop(n);
	kv_free(n->kv);
	nd_cast_free(n);
	nd_api_auth_free(n);
	nd_ident_free(n);
	store_close(n->st);
	free(n->kvq);
	ring_node_free(n->ring);
out:
	for (uint32_t i = 0; i < n->npeers; i++) {
		nd_free_frames(n->peers[i].head);
		auth_session_clear(&n->peers[i].sess);
	}
	free(n->candidates);
	free(n->saved_peers);
	free(n->peers);
	free(n->book_free);
	free(n->snap_ring);
	free(n->snap_health);
	free(n->snap_metrics);
	free(n->snap_peers);
	nd_dash_free(n);
	free(n);
	return exit_code;
}
