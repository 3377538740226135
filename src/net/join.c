/* join.c — getting into a ring, and back into it after a restart. The --join addresses and
 * the peers an earlier run saved in DATA/peers (address and id: the successors, the
 * predecessor, and successor(0), the ring's smallest id, which the node looks up every
 * ANCHOR_EVERY_MS) are tried in turn, one every REJOIN_EVERY_MS, until one answers. When a
 * whole ring stopped, nobody is in a ring to join: then the node with the smallest id among
 * those up starts it again (nd_restart_ring) and the others join it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"

/* ---- joining and the saved peers ---- */

/* Adds a peer to join through (id: NULL when not known); 1 when it is new. */
static int add_candidate(node *n, const char *addr, const rn_id *id)
{
	char host[24];
	int port;
	if (node_parse_hostport(addr, host, sizeof host, &port) < 0)
		return 0;
	char canon[WIRE_ADDR_MAX];
	snprintf(canon, sizeof canon, "%s:%d", host, port);
	if (!strcmp(canon, n->peers[0].addr))
		return 0; /* ourselves */
	candidate *c = NULL;
	for (unsigned i = 0; i < n->ncandidates && !c; i++)
		if (!strcmp(n->candidates[i].addr, canon))
			c = &n->candidates[i];
	int added = 0;
	if (!c) {
		void *q = realloc(n->candidates, (n->ncandidates + 1) * sizeof *n->candidates);
		if (!q)
			return 0;
		n->candidates = q;
		c = &n->candidates[n->ncandidates++];
		memset(c, 0, sizeof *c);
		snprintf(c->addr, sizeof c->addr, "%s", canon);
		added = 1;
	}
	if (id) {
		c->id = *id;
		c->has_id = true;
	}
	return added;
}

/* Looks the --join names up again: a peer container that is not up yet has no address,
 * and one that came back may have another. Blocking, but only while not in a ring. */
static void resolve_join_names(node *n)
{
	for (unsigned i = 0; i < n->njoin_names; i++) {
		char addr[64];
		if (node_resolve_hostport(n->join_names[i], addr, sizeof addr) < 0) {
			if (!n->join_name_warned[i])
				LOG_W(n,
				      "--join %s does not resolve (yet): looking it up again on "
				      "every try to join",
				      n->join_names[i]);
			n->join_name_warned[i] = true;
		} else if (add_candidate(n, addr, NULL)) {
			LOG_I(n, "--join %s is %s", n->join_names[i], addr);
		}
	}
}

bool nd_has_join_peers(const node *n)
{
	return n->ncandidates || n->njoin_names;
}

/* --join addresses first, then the peers an earlier run of this node knew. */
void nd_load_candidates(node *n)
{
	char host[24];
	int port;
	for (int i = 0; i < n->o->njoin; i++)
		if (node_parse_hostport(n->o->join[i], host, sizeof host, &port) == 0)
			add_candidate(n, n->o->join[i], NULL);
		else if (n->njoin_names < NODE_MAX_JOIN)
			n->join_names[n->njoin_names++] = n->o->join[i];
	resolve_join_names(n);
	char path[512];
	snprintf(path, sizeof path, "%s/peers", n->o->data);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	/* a line is "host:port id-in-hex" (the id is missing in files of older versions) */
	char line[128];
	unsigned saved = 0;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = '\0';
		char *sp = strchr(line, ' ');
		rn_id id;
		bool has_id = false;
		if (sp) {
			*sp = '\0';
			has_id = rn_id_from_hex(&id, sp + 1) == 0;
		}
		if (line[0]) {
			add_candidate(n, line, has_id ? &id : NULL);
			saved++;
		}
	}
	fclose(f);
	if (saved) {
		n->restarted = true;
		LOG_I(n, "%u peers saved by an earlier run will be tried to rejoin", saved);
	}
}

/* A whole ring that stopped and starts again: nobody is in a ring to join. The node with
 * the smallest id among those up starts it again and the others join it. A node that has
 * tried every peer it knows, and sees none with a smaller id up (connected to it), is that
 * node. Every node saves its predecessor (smaller than itself, but for the smallest) and
 * successor(0) (the smallest of all), so normally exactly one node starts the ring; were
 * those both down, two parts of the ring could each start one. Only a node that was in a
 * ring before does this: a first start with --join waits for its --join peers. */
bool nd_restart_ring(node *n)
{
	if (!n->restarted || n->join_tries < n->ncandidates)
		return false;
	const rn_id *self = ring_self_id(n->ring);
	for (unsigned i = 0; i < n->ncandidates; i++) {
		const candidate *c = &n->candidates[i];
		if (!c->has_id || rn_id_cmp(&c->id, self) >= 0)
			continue;
		ring_addr a = nd_book_intern(n, c->addr);
		if (a != RING_ADDR_NONE && n->peers[a].connected)
			return false; /* a smaller one is up: it starts the ring, or has */
	}
	LOG_W(n, "no peer this node knew is in a ring, and none with a smaller id is up: "
	         "starting the ring again");
	ring_out_reset(&n->out);
	ring_create(n->ring, uv_now(&n->loop), &n->out);
	nd_drain(n);
	return true;
}

void nd_try_join(node *n)
{
	if (ring_joined(n->ring))
		return;
	resolve_join_names(n);
	n->join_tried_at = uv_now(&n->loop);
	if (!n->ncandidates)
		return;
	const char *addr = n->candidates[n->next_candidate++ % n->ncandidates].addr;
	n->join_tries++;
	ring_addr via = nd_book_intern(n, addr);
	if (via == RING_ADDR_NONE)
		return;
	LOG_I(n, "joining through %s", addr);
	ring_out_reset(&n->out);
	ring_join(n->ring, uv_now(&n->loop), via, &n->out);
	nd_drain(n);
}

/* Keeps DATA/peers listing the peers this node knows best, for the next start. */
void nd_save_peers(node *n)
{
	if (!ring_joined(n->ring) || n->stopping)
		return;
	ring_peer list[RING_MAX_SUCC + 2];
	size_t k = ring_successors(n->ring, list, RING_MAX_SUCC);
	ring_peer pred = ring_predecessor(n->ring);
	if (pred.addr != RING_ADDR_NONE)
		list[k++] = pred;
	if (n->anchor.addr != RING_ADDR_NONE)
		list[k++] = n->anchor;
	char text[(RING_MAX_SUCC + 2) * (WIRE_ADDR_MAX + RN_ID_HEX + 1) + 1];
	size_t len = 0;
	for (size_t i = 0; i < k; i++) {
		bool dup = false;
		for (size_t j = 0; j < i && !dup; j++)
			dup = list[j].addr == list[i].addr;
		if (dup || list[i].addr >= n->npeers || list[i].addr == 0)
			continue;
		char hex[RN_ID_HEX];
		rn_id_to_hex(&list[i].id, hex);
		len += (size_t)snprintf(text + len, sizeof text - len, "%s %s\n",
		                        n->peers[list[i].addr].addr, hex);
	}
	text[len] = '\0';
	if (!len || (n->saved_peers && !strcmp(n->saved_peers, text)))
		return;
	char path[512], tmp[520];
	snprintf(path, sizeof path, "%s/peers", n->o->data);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	bool ok = fputs(text, f) >= 0;
	ok = fclose(f) == 0 && ok;
	if (ok && rename(tmp, path) == 0) { /* atomic: a crash leaves the old list or the new */
		free(n->saved_peers);
		n->saved_peers = strdup(text);
	}
}

/* Looks up successor(0), the ring's smallest id, every ANCHOR_EVERY_MS; the answer (a lookup
 * with ANCHOR_BIT, see nd_kv_on_lookup) is saved with the peers. */
void nd_anchor_lookup(node *n, uint64_t now)
{
	if (!n->stopping && ring_joined(n->ring) && now - n->anchor_at >= ANCHOR_EVERY_MS) {
		n->anchor_at = now;
		rn_id zero = {{0}};
		ring_out_reset(&n->out);
		ring_lookup(n->ring, now, &zero, ANCHOR_BIT | ++n->anchor_seq, &n->out);
		nd_drain(n);
	}
}

/* Every MERGE_EVERY_MS, asks a peer of the address book that is not our successor for the
 * successor of our id (ring_probe). Two rings that formed apart, during a partition or
 * from nodes started without --join, find each other this way once their nodes can reach
 * each other again: the book still holds the addresses they knew. The peer is drawn at
 * random. */
void nd_merge_probe(node *n, uint64_t now)
{
	if (n->stopping || !ring_joined(n->ring) || now - n->merge_at < MERGE_EVERY_MS ||
	    n->npeers < 2)
		return;
	n->merge_at = now;
	ring_addr succ = ring_successor(n->ring).addr;
	for (int tries = 0; tries < 8; tries++) {
		uint32_t x;
		if (auth_random((uint8_t *)&x, sizeof x) < 0)
			return;
		uint32_t i = 1 + x % (n->npeers - 1);
		if (n->peers[i].unused || i == succ)
			continue;
		ring_out_reset(&n->out);
		ring_probe(n->ring, now, i, &n->out);
		nd_drain(n);
		return;
	}
}
