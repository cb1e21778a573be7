/*
 * sluice-control: the cluster's one authority (embedded mode: state in a
 * local file).
 *
 *   sluice-control --listen HOST:PORT --key-file FILE [--state FILE]
 *                  [--heartbeat-ms 50] [--dead-after 5] [--vnodes 150]
 *                  [--lease-ms (dead-after - 1) x heartbeat-ms]
 *                  [--handover copied|immediate]
 *
 * Nodes connect to it over TCP and register (name, dataplane address,
 * workers, weight); it gives each name a node id for good, and from then
 * on expects a heartbeat every --heartbeat-ms. A node that misses
 * --dead-after of them is dead. On every change of who is alive (a node
 * registers, returns or dies) it computes placement's choice over the
 * live nodes (consistent hashing, sluice/placement.h: weights, backups
 * clockwise) and from it and the assignment in force the next table: a
 * dead primary's slots go to their backups; a slot placement moves to a
 * live node goes to it only once that node, its backup meanwhile, holds
 * a whole copy (its heartbeats say; docs/replication.md). It gives the
 * table the next epoch, writes its state file and pushes the whole table
 * to every connected node; a node installs it whole (no gossip, as
 * Dragonfly's cluster mode). Each answered heartbeat renews a node's
 * write lease, and a node is declared dead only once its lease has
 * surely run out. Without a controller the nodes go on serving with
 * their last table.
 *
 * Every message is a frame of sluice/cmsg.h, authenticated with the
 * cluster key; frames without it, replayed or malformed close the
 * connection and are counted.
 *
 * State (text; in embedded mode a file rewritten whole and renamed into
 * place, with --etcd the value of /sluice/state):
 *
 *   epoch 7
 *   node 1 n1 198.18.0.11 11211 1 1 21211 02:00:00:00:00:01
 *   node 2 n2 198.18.0.12 11211 1 1 21211 02:00:00:00:00:02
 *   node 3 n3 198.18.0.13 11211 1 1 21211 02:00:00:00:00:03 down
 *        id name address   port workers weight cluster-port MAC [down]
 *   slots 0 97 1 2 4
 *         first last primary backup epoch-since-which-it-backs-up
 *                (node ids; backup 65535: none)
 *
 * With --etcd URL two or three controllers may run: they campaign in
 * etcd's election "sluice-control" with a lease of --lease-ttl seconds,
 * and only the leader serves; the others close every connection, so the
 * nodes (given every controller's address) move on to the next. The
 * leader writes the state only in a transaction that checks its election
 * key is still the one it won (its create revision), and pushes a table
 * only once that write succeeded: a controller deposed while it was away
 * (stopped, cut off) can neither write nor push, and steps down when it
 * finds its lease gone. Each live node has a key /sluice/alive/NAME on a
 * lease of its own (twice --lease-ttl), kept alive on its heartbeats and
 * revoked at its death, so a controller that takes over knows who was
 * alive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include "etcd.h"
#include "sluice/cmsg.h"
#include "sluice/placement.h"

#define MAX_NODES 256
#define MAX_CONNS 512
#define RBUF_MAX (SL_CMSG_BODY_MAX + 64)
#define NONE 0xffffu
#define MAX_STREAMS 64

struct node {
	uint16_t id;
	struct sl_cmsg_register reg;
	bool alive;
	uint64_t last_hb_ms;
	uint64_t last_seq;
	int conn; /* index in conns, -1 */
	uint64_t epoch_seen;
	int64_t lease;          /* --etcd: the lease of /sluice/alive/NAME */
	uint64_t lease_renewed; /* when it was last kept alive (ms) */
	/* what its heartbeats report: synced[p] is the epoch of the last
	 * whole snapshot it holds of the slots node index p is primary of
	 * and it backs up (0: none) */
	uint64_t synced[MAX_NODES];
	bool was_down; /* the state read said so */
	/* its replication streams, from its last heartbeat (for STATUS) */
	struct stream {
		uint16_t to;
		uint8_t core, to_core, state;
		uint32_t lag_records, lag_us;
	} streams[MAX_STREAMS];
	unsigned nstreams;
};

struct conn {
	int fd;
	int node; /* index in nodes once registered, -1 */
	uint8_t *rbuf;
	size_t rlen;
};

static struct {
	uint8_t key[SL_CMSG_KEY];
	const char *state;
	unsigned hb_ms, dead_after, vnodes;
	uint64_t epoch;
	struct node nodes[MAX_NODES];
	unsigned nnodes;
	struct conn conns[MAX_CONNS];
	int epfd, lfd;
	uint64_t seq;
	uint64_t refused;
	uint64_t operator_seq;                          /* sluicectl's requests: replays refused */
	unsigned primary[MAX_NODES], backup[MAX_NODES]; /* slots per node index */
	/* the assignment in force: node indices (NONE), and the epoch since
	 * which the slot's backup has been its backup */
	uint16_t cur_pr[SL_SLOTS], cur_bk[SL_SLOTS];
	uint64_t bk_since[SL_SLOTS];
	uint16_t ideal_pr[SL_SLOTS]; /* placement's choice, where handovers lead */
	unsigned lease_ms; /* a node's write lease, renewed by each answered heartbeat */
	bool handover_now; /* --handover immediate: no waiting for copies */
	volatile sig_atomic_t quit;
	/* --etcd */
	struct sl_etcd *etcd;
	const char *etcd_url;
	const char *listen_at;
	unsigned lease_ttl;
	int64_t lease; /* this controller's campaign lease */
	uint64_t lease_renewed;
	bool leader;
	char *leader_key;
	int64_t leader_rev;
	pthread_t campaigner;
	bool campaigning;
	int won; /* set by the campaign thread: 1 won, -1 gave up */
} C;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stdout, "sluice-control: ");
	vfprintf(stdout, fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	va_end(ap);
}

static void write_state(FILE *f)
{
	fprintf(f, "epoch %llu\n", (unsigned long long)C.epoch);
	for (unsigned i = 0; i < C.nnodes; i++) {
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &C.nodes[i].reg.ip, ip, sizeof(ip));
		const uint8_t *mac = C.nodes[i].reg.mac;
		fprintf(f, "node %u %s %s %u %u %u %u %02x:%02x:%02x:%02x:%02x:%02x%s\n",
		        C.nodes[i].id, C.nodes[i].reg.name, ip, C.nodes[i].reg.port,
		        C.nodes[i].reg.workers, C.nodes[i].reg.weight, C.nodes[i].reg.cport, mac[0],
		        mac[1], mac[2], mac[3], mac[4], mac[5], C.nodes[i].alive ? "" : " down");
	}
	/* the assignment in force, in runs of slots alike */
	for (unsigned a = 0; a < SL_SLOTS;) {
		unsigned b = a;
		while (b + 1 < SL_SLOTS && C.cur_pr[b + 1] == C.cur_pr[a] &&
		       C.cur_bk[b + 1] == C.cur_bk[a] && C.bk_since[b + 1] == C.bk_since[a])
			b++;
		if (C.cur_pr[a] != NONE)
			fprintf(f, "slots %u %u %u %u %llu\n", a, b, C.nodes[C.cur_pr[a]].id,
			        C.cur_bk[a] == NONE ? SL_CMSG_NO_NODE : C.nodes[C.cur_bk[a]].id,
			        (unsigned long long)C.bk_since[a]);
		a = b + 1;
	}
}

static uint16_t index_of_id(unsigned id)
{
	for (unsigned i = 0; i < C.nnodes; i++)
		if (C.nodes[i].id == id)
			return (uint16_t)i;
	return NONE;
}

/* @return 0, or -EPERM (etcd: no longer the leader), or another -errno */
static int save_state(void)
{
	if (C.etcd) {
		char *buf = NULL;
		size_t len = 0;
		FILE *m = open_memstream(&buf, &len);
		if (!m)
			return -ENOMEM;
		write_state(m);
		fclose(m);
		int rc = sl_etcd_put_as_leader(C.etcd, C.leader_key, C.leader_rev, "/sluice/state",
		                               buf, len);
		free(buf);
		return rc;
	}
	if (!C.state)
		return 0;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", C.state);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -errno;
	write_state(f);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		return -errno;
	}
	fclose(f);
	return rename(tmp, C.state) == 0 ? 0 : -errno;
}

static int read_state(FILE *f)
{
	char line[512];
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		C.cur_pr[s] = C.cur_bk[s] = NONE;
		C.bk_since[s] = 0;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long long e;
		unsigned id, port, workers, weight, cport, mac[6], a, b, bk;
		char name[64], ip[64];
		if (sscanf(line, "epoch %llu", &e) == 1) {
			C.epoch = e;
		} else if (sscanf(line, "slots %u %u %u %u %llu", &a, &b, &id, &bk, &e) == 5 &&
		           a <= b && b < SL_SLOTS) {
			for (unsigned s = a; s <= b; s++) {
				C.cur_pr[s] = index_of_id(id);
				C.cur_bk[s] = bk == SL_CMSG_NO_NODE ? NONE : index_of_id(bk);
				C.bk_since[s] = e;
			}
		} else if (sscanf(line, "node %u %63s %63s %u %u %u %u %x:%x:%x:%x:%x:%x", &id, name,
		                  ip, &port, &workers, &weight, &cport, &mac[0], &mac[1], &mac[2],
		                  &mac[3], &mac[4], &mac[5]) == 13 &&
		           C.nnodes < MAX_NODES && id < SL_CMSG_NO_NODE) {
			struct node *n = &C.nodes[C.nnodes++];
			memset(n, 0, sizeof(*n));
			n->id = (uint16_t)id;
			snprintf(n->reg.name, sizeof(n->reg.name), "%s", name);
			inet_pton(AF_INET, ip, &n->reg.ip);
			n->reg.port = (uint16_t)port;
			n->reg.workers = (uint8_t)workers;
			n->reg.weight = (uint8_t)weight;
			n->reg.cport = (uint16_t)cport;
			for (unsigned k = 0; k < 6; k++)
				n->reg.mac[k] = (uint8_t)mac[k];
			n->conn = -1;
			/* known, not yet heard from: alive only once it says so
			 * (or, restarted, presumed so unless it was down) */
			n->was_down = strstr(line, " down") != NULL;
		} else {
			fclose(f);
			return -EINVAL;
		}
	}
	fclose(f);
	return 0;
}

static int load_state(void)
{
	FILE *f = C.state ? fopen(C.state, "r") : NULL;
	return f ? read_state(f) : 0;
}

static int send_frame(int ci, uint8_t type, const uint8_t *body, uint32_t len)
{
	struct conn *c = &C.conns[ci];
	uint8_t *buf = malloc(sl_cmsg_size(len));
	if (!buf)
		return -ENOMEM;
	struct sl_cmsg m = {.type = type,
	                    .sender = SL_CMSG_CONTROLLER,
	                    .epoch = C.epoch,
	                    .seq = ++C.seq,
	                    .body = body,
	                    .body_len = len};
	size_t n = sl_cmsg_encode(buf, &m, C.key);
	/* a table is ~64 KiB: the socket buffer takes it; a node that does
	 * not read is dropped rather than stalling the controller */
	size_t off = 0;
	while (off < n) {
		ssize_t w = send(c->fd, buf + off, n - off, MSG_NOSIGNAL);
		if (w <= 0) {
			if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
				struct timespec ts = {0, 1000000};
				nanosleep(&ts, NULL);
				continue;
			}
			free(buf);
			return -EIO;
		}
		off += (size_t)w;
	}
	free(buf);
	return 0;
}

static void close_conn(int ci)
{
	struct conn *c = &C.conns[ci];
	if (c->fd < 0)
		return;
	epoll_ctl(C.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->node >= 0 && C.nodes[c->node].conn == ci)
		C.nodes[c->node].conn = -1;
	free(c->rbuf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->node = -1;
}

static uint8_t *table_body; /* the current epoch's table push */
static size_t table_len;

static void step_down(const char *why);

/* The table of the live nodes under the next epoch, pushed to all. */
static void publish(const char *why)
{
	struct sl_place_node pn[MAX_NODES];
	uint16_t ids[MAX_NODES];
	unsigned n = 0;
	for (unsigned i = 0; i < C.nnodes; i++)
		if (C.nodes[i].alive) {
			snprintf(pn[n].name, sizeof(pn[n].name), "%s", C.nodes[i].reg.name);
			pn[n].weight = C.nodes[i].reg.weight;
			ids[n++] = (uint16_t)i;
		}
	if (n == 0) {
		logf_("no live node: no table (%s)", why);
		return;
	}
	/* the assignment as it was, should the state not be saved */
	static uint16_t was_pr[SL_SLOTS], was_bk[SL_SLOTS];
	static uint64_t was_since[SL_SLOTS];
	memcpy(was_pr, C.cur_pr, sizeof(was_pr));
	memcpy(was_bk, C.cur_bk, sizeof(was_bk));
	memcpy(was_since, C.bk_since, sizeof(was_since));
	C.epoch++;
	struct sl_place_opts o = {.vnodes = C.vnodes};
	struct sl_placement *p = sl_placement_build(SL_PLACE_CONSISTENT, pn, n, &o);
	static struct sl_cmsg_table t;
	static uint64_t h[SL_SLOTS];
	static uint16_t pr[SL_SLOTS], bk[SL_SLOTS];
	if (!p) {
		C.epoch--;
		return;
	}
	memset(&t, 0, sizeof(t));
	/* placement orders nodes by name: map its indices back */
	uint16_t idx_of[MAX_NODES]; /* placement's index -> index in C.nodes */
	for (unsigned j = 0; j < n; j++) {
		unsigned idx = ids[j];
		idx_of[sl_placement_find(p, C.nodes[idx].reg.name)] = (uint16_t)idx;
		t.node[j] = (struct sl_cmsg_node){.id = C.nodes[idx].id,
		                                  .ip = C.nodes[idx].reg.ip,
		                                  .port = C.nodes[idx].reg.port,
		                                  .cport = C.nodes[idx].reg.cport,
		                                  .workers = C.nodes[idx].reg.workers,
		                                  .weight = C.nodes[idx].reg.weight};
		memcpy(t.node[j].mac, C.nodes[idx].reg.mac, 6);
	}
	t.n = n;
	for (unsigned s = 0; s < SL_SLOTS; s++)
		h[s] = sl_place_slot_hash((uint16_t)s);
	sl_placement_assign(p, h, SL_SLOTS, pr, bk);
	memset(C.primary, 0, sizeof(C.primary));
	memset(C.backup, 0, sizeof(C.backup));
	unsigned promoted = 0, handed = 0;
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		unsigned ideal = idx_of[pr[s]];
		unsigned ideal_bk = bk[s] != SL_PLACE_NONE ? idx_of[bk[s]] : NONE;
		unsigned p0 = C.cur_pr[s], b0 = C.cur_bk[s], np, nb;
		C.ideal_pr[s] = (uint16_t)ideal;
		bool p_live = p0 != NONE && C.nodes[p0].alive, b_live = b0 != NONE && C.nodes[b0].alive;
		if (!p_live) {
			/* failover: the backup holds the slot's data */
			np = b_live ? b0 : ideal;
			promoted += b_live;
		} else if (p0 != ideal && (C.handover_now || (b0 == ideal && C.bk_since[s] &&
		                                              C.nodes[ideal].synced[p0] >= C.bk_since[s]))) {
			/* the slot's place by placement, which has copied it
			 * whole since it became its backup: hand it over */
			np = ideal;
			handed++;
		} else {
			np = p0;
		}
		/* a slot away from its place keeps a copy there, so that it
		 * can be handed over; otherwise placement's backup */
		nb = np != ideal ? ideal : ideal_bk != np ? ideal_bk : NONE;
		if (nb == NONE && np == p0 && b_live && b0 != np)
			nb = b0;
		if (nb != b0 || np != p0)
			C.bk_since[s] = nb == NONE ? 0 : C.epoch;
		C.cur_pr[s] = (uint16_t)np;
		C.cur_bk[s] = (uint16_t)nb;
		t.primary[s] = C.nodes[np].id;
		C.primary[np]++;
		t.backup[s] = SL_CMSG_NO_NODE;
		if (nb != NONE) {
			t.backup[s] = C.nodes[nb].id;
			C.backup[nb]++;
		}
	}
	sl_placement_free(p);
	int saved = save_state();
	if (saved == -EPERM || (C.etcd && saved != 0)) {
		C.epoch--;
		memcpy(C.cur_pr, was_pr, sizeof(was_pr));
		memcpy(C.cur_bk, was_bk, sizeof(was_bk));
		memcpy(C.bk_since, was_since, sizeof(was_since));
		if (saved == -EPERM) {
			step_down("deposed: another controller leads");
		} else {
			/* etcd unreachable: nothing is pushed that etcd does not hold */
			logf_("cannot write the state to etcd (%s): table not pushed (%s)",
			      strerror(-saved), why);
		}
		return;
	}
	if (promoted || handed)
		logf_("epoch %llu: %u slot(s) failed over to their backups, %u handed over",
		      (unsigned long long)C.epoch, promoted, handed);
	size_t sz = sl_cmsg_table_size(n);
	uint8_t *body = malloc(sz);
	if (!body)
		return;
	sl_cmsg_table_encode(body, &t);
	free(table_body);
	table_body = body;
	table_len = sz;
	unsigned pushed = 0;
	uint64_t t_push = wall_us();
	for (unsigned i = 0; i < C.nnodes; i++) {
		int ci = C.nodes[i].conn;
		if (ci >= 0 && send_frame(ci, SL_CMSG_TABLE, body, (uint32_t)sz) == 0)
			pushed++;
		else if (ci >= 0)
			close_conn(ci);
	}
	logf_("epoch %llu: %u live node(s), pushed to %u at %llu (%s)", (unsigned long long)C.epoch,
	      n, pushed, (unsigned long long)t_push, why);
}

/* sluicectl's requests: status as JSON, or the current table. */
static int on_operator(int ci, const struct sl_cmsg *m)
{
	if (m->type == SL_CMSG_TABLE_GET)
		return table_body ? send_frame(ci, SL_CMSG_TABLE, table_body, (uint32_t)table_len)
		                  : send_frame(ci, SL_CMSG_TABLE, NULL, 0);
	if (m->type != SL_CMSG_STATUS)
		return -EINVAL;
	size_t cap = 128 + (size_t)C.nnodes * (200 + MAX_STREAMS * 160), len = 0;
	char *js = malloc(cap);
	if (!js)
		return -ENOMEM;
	len += (size_t)snprintf(js + len, cap - len, "{\"epoch\":%llu,\"nodes\":[",
	                        (unsigned long long)C.epoch);
	for (unsigned i = 0; i < C.nnodes; i++) {
		const struct node *n = &C.nodes[i];
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &n->reg.ip, ip, sizeof(ip));
		len += (size_t)snprintf(
		    js + len, cap - len,
		    "%s{\"id\":%u,\"name\":\"%s\",\"addr\":\"%s:%u\",\"alive\":%s,"
		    "\"weight\":%u,\"primary_slots\":%u,\"backup_slots\":%u}",
		    i ? "," : "", n->id, n->reg.name, ip, n->reg.port, n->alive ? "true" : "false",
		    n->reg.weight, n->alive ? C.primary[i] : 0, n->alive ? C.backup[i] : 0);
	}
	len += (size_t)snprintf(js + len, cap - len, "],\"streams\":[");
	bool first = true;
	for (unsigned i = 0; i < C.nnodes; i++) {
		const struct node *n = &C.nodes[i];
		for (unsigned k = 0; n->alive && k < n->nstreams; k++) {
			const struct stream *st = &n->streams[k];
			uint16_t to = index_of_id(st->to);
			bool down = to == NONE || !C.nodes[to].alive;
			static const char *const names[] = {"resyncing", "streaming", "draining"};
			len += (size_t)snprintf(
			    js + len, cap - len,
			    "%s{\"from\":\"%s\",\"core\":%u,\"to\":\"%s\",\"to_core\":%u,"
			    "\"state\":\"%s\",\"lag_records\":%u,\"lag_us\":%u}",
			    first ? "" : ",", n->reg.name, st->core,
			    to == NONE ? "?" : C.nodes[to].reg.name, st->to_core,
			    down ? "down" : names[st->state < 3 ? st->state : 0], st->lag_records,
			    st->lag_us);
			first = false;
		}
	}
	len += (size_t)snprintf(js + len, cap - len, "]}");
	int rc = send_frame(ci, SL_CMSG_STATUS, (const uint8_t *)js, (uint32_t)len);
	free(js);
	return rc;
}

/* --etcd: the node's /sluice/alive/NAME key on a lease of its own, made
 * when it registers and kept alive (a third of the TTL at most apart) on
 * its heartbeats. */
static void node_lease(struct node *n, bool fresh)
{
	if (!C.etcd)
		return;
	uint64_t now = now_ms();
	if (!fresh && n->lease && now - n->lease_renewed < C.lease_ttl * 1000u / 3)
		return;
	if (n->lease && sl_etcd_lease_keepalive(C.etcd, n->lease) == 0) {
		n->lease_renewed = now;
		return;
	}
	char key[128];
	snprintf(key, sizeof(key), "/sluice/alive/%s", n->reg.name);
	/* twice the controller's TTL: a node's key outlives a controller
	 * killed, so the one taking over still finds it */
	if (sl_etcd_lease_grant(C.etcd, (int)C.lease_ttl * 2, &n->lease) == 0 &&
	    sl_etcd_put(C.etcd, key, "1", 1, n->lease) == 0)
		n->lease_renewed = now;
	else
		n->lease = 0;
}

static void on_register(int ci, const struct sl_cmsg *m)
{
	struct sl_cmsg_register r;
	struct conn *c = &C.conns[ci];
	if (sl_cmsg_register_decode(m->body, m->body_len, &r) != 0) {
		C.refused++;
		close_conn(ci);
		return;
	}
	unsigned i;
	for (i = 0; i < C.nnodes && strcmp(C.nodes[i].reg.name, r.name) != 0; i++)
		;
	if (i == C.nnodes) {
		if (C.nnodes == MAX_NODES) {
			close_conn(ci);
			return;
		}
		uint16_t id = 1;
		for (unsigned j = 0; j < C.nnodes; j++)
			if (C.nodes[j].id >= id)
				id = (uint16_t)(C.nodes[j].id + 1);
		memset(&C.nodes[i], 0, sizeof(C.nodes[i]));
		C.nodes[i].id = id;
		C.nodes[i].conn = -1;
		C.nnodes++;
	} else if (m->seq <= C.nodes[i].last_seq) {
		C.refused++; /* a replayed registration */
		close_conn(ci);
		return;
	}
	struct node *n = &C.nodes[i];
	if (n->conn >= 0 && n->conn != ci)
		close_conn(n->conn); /* the node came back on a new connection */
	bool changed = !n->alive || n->reg.ip != r.ip || n->reg.weight != r.weight ||
	               n->reg.workers != r.workers || n->reg.port != r.port ||
	               n->reg.cport != r.cport || memcmp(n->reg.mac, r.mac, 6) != 0;
	n->reg = r;
	n->conn = ci;
	n->last_seq = m->seq;
	n->last_hb_ms = now_ms();
	n->alive = true;
	c->node = (int)i;
	uint8_t ack[6] = {(uint8_t)(n->id >> 8), (uint8_t)n->id, (uint8_t)(C.lease_ms >> 24),
	                  (uint8_t)(C.lease_ms >> 16), (uint8_t)(C.lease_ms >> 8), (uint8_t)C.lease_ms};
	memset(n->synced, 0, sizeof(n->synced));
	if (send_frame(ci, SL_CMSG_ACK, ack, sizeof(ack)) != 0) {
		close_conn(ci);
		return;
	}
	logf_("node %s registered as %u", r.name, n->id);
	node_lease(n, true);
	if (changed) {
		char why[96];
		snprintf(why, sizeof(why), "%s joined", r.name);
		publish(why);
	} else if (table_body && send_frame(ci, SL_CMSG_TABLE, table_body, (uint32_t)table_len)) {
		/* same membership: the node needs the current table, and only it */
		close_conn(ci);
	}
}

/*
 * A heartbeat's body: what the node holds whole of the slots it backs up,
 * per primary: | primary node id u16 | epoch u64 | ... (the epoch of the
 * snapshot it applied last from every core of that primary). @return
 * whether a slot waiting to be handed over to this node may now be.
 */
static bool on_sync_report(struct node *n, const struct sl_cmsg *m)
{
	bool changed = false;
	if (m->body_len < 2)
		return false;
	uint32_t nsync = (uint32_t)(m->body[0] << 8 | m->body[1]), end = 2 + 10 * nsync;
	if (end > m->body_len)
		return false;
	/* its streams, as they stand, for STATUS */
	n->nstreams = 0;
	if (end + 2 <= m->body_len) {
		uint32_t ns = (uint32_t)(m->body[end] << 8 | m->body[end + 1]);
		for (uint32_t k = 0; k < ns && n->nstreams < MAX_STREAMS &&
		                     end + 2 + 14 * (k + 1) <= m->body_len;
		     k++) {
			const uint8_t *b = m->body + end + 2 + 14 * k;
			struct stream *st = &n->streams[n->nstreams++];
			st->to = (uint16_t)(b[0] << 8 | b[1]);
			st->core = b[2];
			st->to_core = b[3];
			st->state = b[4];
			st->lag_records = (uint32_t)b[6] << 24 | (uint32_t)b[7] << 16 | b[8] << 8 | b[9];
			st->lag_us = (uint32_t)b[10] << 24 | (uint32_t)b[11] << 16 | b[12] << 8 | b[13];
		}
	}
	for (uint32_t off = 2; off + 10 <= end; off += 10) {
		const uint8_t *b = m->body + off;
		uint16_t pi = index_of_id((unsigned)(b[0] << 8 | b[1]));
		uint64_t e = 0;
		for (unsigned k = 0; k < 8; k++)
			e = e << 8 | b[2 + k];
		if (pi != NONE && e > n->synced[pi]) {
			n->synced[pi] = e;
			changed = true;
		}
	}
	if (!changed)
		return false;
	unsigned me = (unsigned)(n - C.nodes);
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		unsigned p0 = C.cur_pr[s];
		if (C.cur_bk[s] == me && C.ideal_pr[s] == me && p0 != NONE && p0 != me &&
		    C.bk_since[s] && n->synced[p0] >= C.bk_since[s])
			return true;
	}
	return false;
}

static void on_frames(int ci)
{
	struct conn *c = &C.conns[ci];
	size_t off = 0;
	while (off < c->rlen) {
		struct sl_cmsg m;
		size_t used;
		enum sl_cmsg_verdict v =
		    sl_cmsg_decode(c->rbuf + off, c->rlen - off, C.key, &m, &used);
		if (v == SL_CMSG_SHORT)
			break;
		if (v != SL_CMSG_OK) {
			C.refused++;
			logf_("refused a frame (%s) and closed its connection",
			      v == SL_CMSG_FORGED ? "bad MAC" : "malformed");
			close_conn(ci);
			return;
		}
		off += used;
		if (C.etcd && !C.leader) {
			/* a standby: the nodes and sluicectl try the next controller */
			close_conn(ci);
			return;
		}
		if (m.type == SL_CMSG_REGISTER) {
			on_register(ci, &m);
			if (c->fd < 0)
				return;
			continue;
		}
		if (m.sender == SL_CMSG_OPERATOR) {
			if (!sl_cmsg_fresh(&C.operator_seq, m.seq) || on_operator(ci, &m) != 0) {
				C.refused++;
				close_conn(ci);
				return;
			}
			continue;
		}
		struct node *n = c->node >= 0 ? &C.nodes[c->node] : NULL;
		if (!n || m.sender != n->id || !sl_cmsg_fresh(&n->last_seq, m.seq)) {
			C.refused++;
			close_conn(ci);
			return;
		}
		if (m.type == SL_CMSG_HEARTBEAT) {
			n->last_hb_ms = now_ms();
			n->epoch_seen = m.epoch;
			node_lease(n, false);
			/* answered, so a node knows its controller is there (one
			 * stopped or cut off keeps the connection open); the
			 * answer renews the node's write lease (it echoes the
			 * heartbeat's sequence) only for a node that routes by
			 * the current table */
			uint8_t echo[8];
			for (unsigned k = 0; k < 8; k++)
				echo[k] = (uint8_t)(m.seq >> (56 - 8 * k));
			bool lease = n->alive && m.epoch == C.epoch;
			if (send_frame(ci, SL_CMSG_HEARTBEAT, echo, lease ? 8 : 0) != 0) {
				close_conn(ci);
				return;
			}
			if (on_sync_report(n, &m))
				publish("backups caught up: slots handed over");
		}
	}
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

static void on_readable(int ci)
{
	struct conn *c = &C.conns[ci];
	for (;;) {
		if (c->rlen == RBUF_MAX) {
			close_conn(ci);
			return;
		}
		ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF_MAX - c->rlen);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
			close_conn(ci);
			return;
		}
		if (r < 0)
			break;
		c->rlen += (size_t)r;
	}
	on_frames(ci);
}

static void check_liveness(void)
{
	uint64_t now = now_ms(), limit = (uint64_t)C.hb_ms * C.dead_after;
	/* a node is promoted over only once its lease has surely run out:
	 * the lease counts from a heartbeat's sending, before it got here,
	 * and a margin covers clocks that run at slightly different rates */
	uint64_t fence = C.lease_ms + C.lease_ms / 8 + 5;
	if (limit < fence)
		limit = fence;
	for (unsigned i = 0; i < C.nnodes; i++) {
		struct node *n = &C.nodes[i];
		if (n->alive && (int64_t)(now - n->last_hb_ms) > (int64_t)limit) {
			n->alive = false;
			if (C.etcd && n->lease) {
				sl_etcd_lease_revoke(C.etcd, n->lease);
				n->lease = 0;
			}
			if (n->conn >= 0)
				close_conn(n->conn);
			char why[96];
			snprintf(why, sizeof(why), "%s missed %u heartbeats", n->reg.name,
			         C.dead_after);
			publish(why);
		}
	}
}

/* ---- --etcd: election ---------------------------------------------------- */

static void *campaign_main(void *arg)
{
	(void)arg;
	struct sl_etcd *e = sl_etcd_open(C.etcd_url, 2000);
	int64_t lease = __atomic_load_n(&C.lease, __ATOMIC_ACQUIRE);
	while (e && !C.quit && __atomic_load_n(&C.lease, __ATOMIC_ACQUIRE) == lease) {
		char *key = NULL;
		int64_t rev = 0;
		int rc = sl_etcd_campaign(e, "sluice-control", lease, C.listen_at, &key, &rev);
		if (rc == 0) {
			C.leader_key = key;
			C.leader_rev = rev;
			__atomic_store_n(&C.won, 1, __ATOMIC_RELEASE);
			break;
		}
		free(key);
		if (rc != -EIO) {
			struct timespec ts = {0, 200000000};
			nanosleep(&ts, NULL);
		}
	}
	if (!__atomic_load_n(&C.won, __ATOMIC_ACQUIRE))
		__atomic_store_n(&C.won, -1, __ATOMIC_RELEASE);
	sl_etcd_close(e);
	return NULL;
}

/* A fresh lease and a campaign with it, in a thread of its own (the
 * campaign blocks while another controller leads). */
static void campaign(void)
{
	int64_t lease;
	if (C.campaigning || sl_etcd_lease_grant(C.etcd, (int)C.lease_ttl, &lease) != 0)
		return;
	__atomic_store_n(&C.lease, lease, __ATOMIC_RELEASE);
	C.lease_renewed = now_ms();
	C.won = 0;
	if (pthread_create(&C.campaigner, NULL, campaign_main, NULL) == 0) {
		/* never joined: at exit it may still be waiting in etcd */
		pthread_detach(C.campaigner);
		C.campaigning = true;
	}
}

static void on_state_node(void *arg, const char *key, const char *val)
{
	(void)val;
	const char *name = strrchr(key, '/');
	for (unsigned i = 0; name && i < C.nnodes; i++)
		if (strcmp(C.nodes[i].reg.name, name + 1) == 0)
			*((bool *)arg + i) = true;
}

/* Won the election: take over the state etcd holds, and lead. */
static void take_office(void)
{
	char *st = NULL;
	size_t len = 0;
	for (unsigned i = 0; i < C.nnodes; i++)
		if (C.nodes[i].conn >= 0)
			close_conn(C.nodes[i].conn);
	C.nnodes = 0;
	int rc = sl_etcd_get(C.etcd, "/sluice/state", &st, &len);
	if (rc == 1) {
		FILE *f = fmemopen(st, len, "r");
		if (!f || read_state(f) != 0)
			logf_("the state in etcd cannot be read: starting afresh");
	}
	free(st);
	/* who was alive: their leases' keys; they get time to find us */
	static bool alive[MAX_NODES];
	memset(alive, 0, sizeof(alive));
	sl_etcd_list(C.etcd, "/sluice/alive/", on_state_node, alive);
	uint64_t grace = now_ms() + (C.lease_ttl * 1000u > 1000 ? C.lease_ttl * 1000u : 1000);
	for (unsigned i = 0; i < C.nnodes; i++) {
		C.nodes[i].alive = alive[i];
		C.nodes[i].last_hb_ms = grace;
	}
	if (C.epoch < 1)
		C.epoch = 1;
	/* frames numbered above anything a node saw from an earlier leader */
	C.seq = wall_us();
	C.leader = true;
	logf_("elected (leader key %s, revision %lld), epoch %llu, %u known node(s)",
	      C.leader_key, (long long)C.leader_rev, (unsigned long long)C.epoch, C.nnodes);
	publish("a new controller leads");
}

static void step_down(const char *why)
{
	if (!C.leader)
		return;
	C.leader = false;
	logf_("stepping down: %s", why);
	for (int i = 0; i < MAX_CONNS; i++)
		close_conn(i);
	free(C.leader_key);
	C.leader_key = NULL;
	/* campaign afresh, with a new lease */
	if (C.lease)
		sl_etcd_lease_revoke(C.etcd, C.lease);
	__atomic_store_n(&C.lease, 0, __ATOMIC_RELEASE);
}

/* Every loop turn with --etcd: the campaign's outcome, the lease. */
static void etcd_turn(void)
{
	if (C.campaigning && __atomic_load_n(&C.won, __ATOMIC_ACQUIRE) != 0) {
		C.campaigning = false;
		if (C.won == 1)
			take_office();
	}
	uint64_t now = now_ms();
	if (C.lease && now - C.lease_renewed >= C.lease_ttl * 1000u / 3) {
		int rc = sl_etcd_lease_keepalive(C.etcd, C.lease);
		if (rc == 0) {
			C.lease_renewed = now;
		} else if (rc == -ENOENT) {
			/* our lease ran out (we were away): whatever we led is
			 * someone else's now */
			step_down("the controller's lease expired");
			__atomic_store_n(&C.lease, 0, __ATOMIC_RELEASE);
		} else if (C.leader && now - C.lease_renewed >= C.lease_ttl * 1000u) {
			step_down("etcd unreachable for a whole lease");
			__atomic_store_n(&C.lease, 0, __ATOMIC_RELEASE);
		}
	}
	if (!C.lease && !C.campaigning)
		campaign();
}

static int listen_on(const char *hostport)
{
	struct sockaddr_in sa;
	char bad[128];
	if (sl_hostport_parse(hostport, &sa, bad, sizeof(bad)) != 0)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 128) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static void on_signal(int s)
{
	(void)s;
	C.quit = 1;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: sluice-control --listen HOST:PORT --key-file FILE [--state FILE]\n"
	        "                      [--heartbeat-ms 50] [--dead-after 5] [--vnodes 150]\n"
	        "                      [--etcd URL [--lease-ttl 2]] [--lease-ms N]\n"
	        "                      [--handover copied|immediate]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"key-file", required_argument, NULL, 'k'},
	    {"state", required_argument, NULL, 's'},
	    {"heartbeat-ms", required_argument, NULL, 'h'},
	    {"dead-after", required_argument, NULL, 'd'},
	    {"vnodes", required_argument, NULL, 'v'},
	    {"etcd", required_argument, NULL, 'e'},
	    {"lease-ttl", required_argument, NULL, 't'},
	    {"lease-ms", required_argument, NULL, 'L'},
	    {"handover", required_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_at = NULL, *keyfile = NULL;
	C.hb_ms = 50;
	C.dead_after = 5;
	C.vnodes = 150;
	C.lease_ttl = 2;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end = NULL;
		long v = 0;
		if (o == 'h' || o == 'd' || o == 'v' || o == 't' || o == 'L') {
			v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 100000) {
				fprintf(stderr,
				        "sluice-control: '%s' is not a number from 1 to 100000\n",
				        optarg);
				return 2;
			}
		}
		switch (o) {
		case 'l':
			listen_at = optarg;
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 's':
			C.state = optarg;
			break;
		case 'h':
			C.hb_ms = (unsigned)v;
			break;
		case 'd':
			C.dead_after = (unsigned)v;
			break;
		case 'v':
			C.vnodes = (unsigned)v;
			break;
		case 'e':
			C.etcd_url = optarg;
			break;
		case 't':
			C.lease_ttl = (unsigned)v;
			break;
		case 'L':
			C.lease_ms = (unsigned)v;
			break;
		case 'H':
			if (strcmp(optarg, "immediate") && strcmp(optarg, "copied")) {
				fprintf(stderr, "sluice-control: --handover copied|immediate\n");
				return 2;
			}
			C.handover_now = strcmp(optarg, "immediate") == 0;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (!listen_at || !keyfile) {
		usage();
		return 2;
	}
	/* by default a lease lasts one heartbeat less than it takes to be
	 * declared dead, so the wait for it costs a failover nothing */
	if (!C.lease_ms)
		C.lease_ms = C.hb_ms * (C.dead_after > 1 ? C.dead_after - 1 : 1);
	for (unsigned s = 0; s < SL_SLOTS; s++)
		C.cur_pr[s] = C.cur_bk[s] = NONE;
	const char *why;
	if (sl_cmsg_read_key(keyfile, C.key, &why) != 0) {
		fprintf(stderr, "sluice-control: --key-file %s: %s\n", keyfile, why);
		return 2;
	}
	if (C.etcd_url && C.state) {
		fprintf(stderr, "sluice-control: --state or --etcd, not both\n");
		return 2;
	}
	C.listen_at = listen_at;
	if (C.etcd_url && !(C.etcd = sl_etcd_open(C.etcd_url, 1000))) {
		fprintf(stderr, "sluice-control: cannot set up an etcd client\n");
		return 1;
	}
	if (load_state() != 0) {
		fprintf(stderr, "sluice-control: --state %s: cannot be read\n", C.state);
		return 2;
	}
	C.seq = wall_us();
	/* a node alone routes by epoch 1: the cluster's tables start above */
	if (C.epoch < 1)
		C.epoch = 1;
	for (int i = 0; i < MAX_CONNS; i++) {
		C.conns[i].fd = -1;
		C.conns[i].node = -1;
	}
	C.lfd = listen_on(listen_at);
	if (C.lfd < 0) {
		fprintf(stderr, "sluice-control: cannot listen on %s: %s\n", listen_at,
		        strerror(-C.lfd));
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	C.epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
	epoll_ctl(C.epfd, EPOLL_CTL_ADD, C.lfd, &ev);
	logf_("listening on %s, epoch %llu, %u known node(s)", listen_at,
	      (unsigned long long)C.epoch, C.nnodes);
	if (!C.etcd && C.nnodes) {
		/* restarted: the nodes it knew are presumed alive, and have a
		 * second and --dead-after heartbeats to come back before their
		 * slots fail over; the table they get is the one in force */
		for (unsigned i = 0; i < C.nnodes; i++) {
			C.nodes[i].alive = !C.nodes[i].was_down;
			/* a second more than heartbeats alone: a node retries its
			 * connection every 200 ms */
			C.nodes[i].last_hb_ms = now_ms() + 1000;
		}
		publish("restarted");
	}
	while (!C.quit) {
		struct epoll_event evs[64];
		int n = epoll_wait(C.epfd, evs, 64, (int)(C.hb_ms / 2 ? C.hb_ms / 2 : 1));
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				int fd;
				while ((fd = accept4(C.lfd, NULL, NULL,
				                     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					int ci;
					for (ci = 0; ci < MAX_CONNS && C.conns[ci].fd >= 0; ci++)
						;
					uint8_t *rb = ci < MAX_CONNS ? malloc(RBUF_MAX) : NULL;
					if (!rb) {
						close(fd);
						continue;
					}
					int one = 1;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					C.conns[ci] =
					    (struct conn){.fd = fd, .node = -1, .rbuf = rb};
					struct epoll_event e = {.events = EPOLLIN,
					                        .data.u64 = (uint64_t)ci};
					epoll_ctl(C.epfd, EPOLL_CTL_ADD, fd, &e);
				}
				continue;
			}
			int ci = (int)evs[i].data.u64;
			if (C.conns[ci].fd >= 0)
				on_readable(ci);
		}
		if (C.etcd)
			etcd_turn();
		if (!C.etcd || C.leader)
			check_liveness();
	}
	if (C.etcd && C.lease)
		sl_etcd_lease_revoke(C.etcd, C.lease); /* a standby takes over at once */
	sl_etcd_close(C.etcd);
	for (int i = 0; i < MAX_CONNS; i++)
		close_conn(i);
	close(C.lfd);
	close(C.epfd);
	free(table_body);
	logf_("stopped at epoch %llu (refused %llu frames)", (unsigned long long)C.epoch,
	      (unsigned long long)C.refused);
	return 0;
}
