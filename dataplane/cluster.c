/*
 * The node's end of the control channel (main lcore): a TCP connection to
 * sluice-control, registered with the main loop like any descriptor.
 *
 *   connect -> REGISTER (name, address, workers, weight) -> ACK (node id)
 *   every heartbeat interval: HEARTBEAT (the epoch it routes by), which
 *   the controller answers; SILENT_HEARTBEATS without an answer and the
 *   node moves on to the next controller
 *   TABLE pushes: checked (MAC, sender, sequence, epoch above the current
 *   one, a valid table naming this node), then this node's view of it is
 *   published to the workers (tables.c)
 *
 * A connection that fails, or brings a frame without the cluster key, is
 * closed and made again after a back-off, to the next controller of the
 * list (a standby of an etcd-backed pair closes it at once, so the node
 * finds the leader); meanwhile the node serves with
 * its last table, as it must when the controller is away.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>

#include "sluice/be.h"
#include "sluice/cmsg.h"
#include "sluiced.h"

#define RBUF_CAP (SL_CMSG_BODY_MAX + 64)
#define RECONNECT_MS 200
/* heartbeats without an answer before the controller counts as gone */
#define SILENT_HEARTBEATS 10

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void drop_conn(struct sl_cluster *c)
{
	if (c->fd >= 0) {
		sl_loop_del(c->loop, c->fd);
		close(c->fd);
	}
	c->fd = -1;
	c->rlen = 0;
	c->node->cluster.connected = false;
	c->next_connect_ms = mono_ms() + RECONNECT_MS;
}

static int send_frame(struct sl_cluster *c, uint8_t type, const uint8_t *body, uint32_t len)
{
	uint8_t buf[SL_CMSG_HDR + 2048 + SL_CMSG_MAC];
	if (sl_cmsg_size(len) > sizeof(buf))
		return -EMSGSIZE;
	struct sl_cmsg m = {.type = type,
	                    .sender = c->node->cluster.id,
	                    .epoch = sl_tables_current(c->tables)->epoch,
	                    .seq = ++c->seq,
	                    .body = body,
	                    .body_len = len};
	size_t n = sl_cmsg_encode(buf, &m, c->key);
	/* small frames into an idle socket: all or nothing */
	return send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n ? 0 : -EIO;
}

static void install(struct sl_cluster *c, const struct sl_cmsg *m)
{
	static struct sl_cmsg_table t; /* main lcore only */
	struct sl_node *nd = c->node;
	if (m->epoch <= sl_tables_current(c->tables)->epoch ||
	    sl_cmsg_table_decode(m->body, m->body_len, &t) != 0) {
		nd->cluster.tables_refused++;
		return;
	}
	struct sl_table *view = sl_table_alloc();
	if (!view || sl_cmsg_table_apply(&t, m->epoch, nd->cluster.id, nd->nworkers, view) != 0 ||
	    sl_tables_publish(c->tables, view) != 0) {
		sl_table_free(view);
		nd->cluster.tables_refused++;
		return;
	}
	uint32_t mine = 0;
	for (unsigned s = 0; s < SL_SLOTS; s++)
		mine += view->core[s] != SL_CORE_ELSEWHERE;
	nd->cluster.slots = mine;
	nd->epoch = m->epoch;
	/* a heartbeat of the new epoch at once: its answer is the lease */
	c->next_hb_ms = 0;
	nd->cluster.tables_installed++;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	nd->cluster.installed_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The controller answered heartbeat @p seq: writes are this node's for
 * the lease from when that heartbeat left (never later than when the
 * controller saw it, which counts its wait from there). */
static void renew_lease(struct sl_cluster *c, uint64_t seq)
{
	unsigned i = (unsigned)(seq % RTE_DIM(c->hb));
	if (c->hb[i].seq != seq || !c->node->cluster.lease_ms)
		return;
	uint64_t until = c->hb[i].tsc + c->node->cluster.lease_ms * (rte_get_tsc_hz() / 1000);
	if (until > c->node->cluster.lease_tsc)
		__atomic_store_n(&c->node->cluster.lease_tsc, until, __ATOMIC_RELEASE);
}

/* The streams this node needs whole, from the table it routes by. */
static void required_streams(struct sl_cluster *c, const struct sl_table *t)
{
	c->req_epoch = t->epoch;
	c->nreq = 0;
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		if (t->backup[s] != t->self || t->core[s] != SL_CORE_ELSEWHERE)
			continue;
		const struct sl_peer *p = sl_table_peer(t, t->node[s]);
		if (!p)
			continue;
		uint8_t pc = (uint8_t)(s % (p->workers ? p->workers : 1)),
		        core = (uint8_t)(s % t->nworkers);
		unsigned k;
		for (k = 0; k < c->nreq; k++)
			if (c->req[k].node == p->id && c->req[k].pcore == pc && c->req[k].core == core)
				break;
		if (k == c->nreq && c->nreq < RTE_DIM(c->req)) {
			c->req[k].node = p->id;
			c->req[k].pcore = pc;
			c->req[k].core = core;
			c->nreq++;
		}
	}
}

/* The second part of the heartbeat's body: this node's streams out, with
 * their state and lag, for `sluicectl status`. */
static uint32_t stream_report(struct sl_cluster *c, uint8_t *out, uint32_t cap)
{
	uint64_t hz_us = rte_get_tsc_hz() / 1000000 ? rte_get_tsc_hz() / 1000000 : 1;
	uint64_t now_us = rte_rdtsc() / hz_us;
	uint32_t n = 0, at = 2;
	for (unsigned k = 0; k < c->node->nworkers; k++) {
		struct sl_exec *ex = c->node->cores[k];
		const struct sl_worker *w =
		    (const struct sl_worker *)((const char *)ex - offsetof(struct sl_worker, ex));
		for (unsigned i = 0; w->repl && i < SL_REPL_STREAMS && at + 14 <= cap; i++) {
			const struct sl_rout *o = &w->repl->out[i];
			if (!__atomic_load_n(&o->used, __ATOMIC_RELAXED))
				continue;
			/* a racy read of another core's stream: a report,
			 * not a decision */
			uint32_t lag_us = sl_rout_lag_us(o, now_us);
			sl_put16(out + at, o->node);
			out[at + 2] = (uint8_t)k;
			out[at + 3] = o->core;
			out[at + 4] = o->closing || o->restart         ? 2
			              : o->state == SL_ROUT_STREAMING ? 1
			                                              : 0;
			out[at + 5] = 0;
			uint64_t lag = o->next_seq - 1 - o->acked;
			sl_put32(out + at + 6, lag > UINT32_MAX ? UINT32_MAX : (uint32_t)lag);
			sl_put32(out + at + 10, lag_us);
			at += 14;
			n++;
		}
	}
	sl_put16(out, (uint16_t)n);
	return at;
}

/*
 * The heartbeat's body (sluice/cmsg.h): for each primary whose slots this
 * node backs up, the oldest epoch of the snapshots it holds whole from
 * that primary's cores (0 while any is missing), so the controller knows
 * when a slot may be handed over to it. The workers' stream state is read
 * as it stands (a report one heartbeat late is no harm).
 */
static uint32_t sync_report(struct sl_cluster *c, uint8_t *body, uint32_t cap)
{
	const struct sl_table *t = sl_tables_current(c->tables);
	if (t->epoch != c->req_epoch)
		required_streams(c, t);
	uint8_t *out = body + 2;
	cap -= 2;
	uint32_t n = 0;
	for (unsigned k = 0; k < c->nreq; k++) {
		uint64_t e = 0;
		struct sl_exec *ex = c->node->cores[c->req[k].core];
		const struct sl_worker *w =
		    (const struct sl_worker *)((const char *)ex - offsetof(struct sl_worker, ex));
		for (unsigned i = 0; w->repl && i < SL_REPL_STREAMS; i++) {
			const struct sl_rin *r = &w->repl->in[i];
			if (__atomic_load_n(&r->used, __ATOMIC_RELAXED) && r->node == c->req[k].node &&
			    r->core == c->req[k].pcore &&
			    __atomic_load_n(&r->synced, __ATOMIC_RELAXED))
				e = __atomic_load_n(&r->sync_epoch, __ATOMIC_RELAXED);
		}
		uint32_t j;
		for (j = 0; j < n; j += 10)
			if (sl_get16(out + j) == c->req[k].node)
				break;
		if (j == n) {
			if (n + 10 > cap)
				break;
			sl_put16(out + n, c->req[k].node);
			sl_put64(out + n + 2, e);
			n += 10;
		} else if (e < sl_get64(out + j + 2)) {
			sl_put64(out + j + 2, e);
		}
	}
	sl_put16(body, (uint16_t)(n / 10));
	return 2 + n + stream_report(c, body + 2 + n, cap - n);
}

static void on_frames(struct sl_cluster *c)
{
	size_t off = 0;
	while (off < c->rlen) {
		struct sl_cmsg m;
		size_t used;
		enum sl_cmsg_verdict v =
		    sl_cmsg_decode(c->rbuf + off, c->rlen - off, c->key, &m, &used);
		if (v == SL_CMSG_SHORT)
			break;
		if (v != SL_CMSG_OK || m.sender != SL_CMSG_CONTROLLER ||
		    !sl_cmsg_fresh(&c->last_ctl_seq, m.seq)) {
			/* not from our controller, or replayed: nothing more
			 * on this connection is believed */
			c->node->cluster.msgs_refused++;
			drop_conn(c);
			return;
		}
		off += used;
		c->last_rx_ms = mono_ms();
		if (m.type == SL_CMSG_HEARTBEAT && m.body_len == 8) {
			renew_lease(c, sl_get64(m.body));
		} else if (m.type == SL_CMSG_ACK && (m.body_len == 2 || m.body_len == 6)) {
			c->node->cluster.id = (uint16_t)(m.body[0] << 8 | m.body[1]);
			c->node->cluster.lease_ms = m.body_len == 6 ? sl_get32(m.body + 2) : 0;
			c->node->cluster.connected = true;
			/* CAS values unique across the cluster (sluice/store.h) */
			for (unsigned i = 0; i < c->node->nworkers; i++)
				sl_store_set_cas_tag(c->node->cores[i]->store,
				                     SL_CAS_TAG(c->node->cluster.id, i));
		} else if (m.type == SL_CMSG_TABLE && c->node->cluster.id) {
			install(c, &m);
		}
	}
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

static void ready(struct sl_fd_handler *h, uint32_t events)
{
	struct sl_cluster *c = (struct sl_cluster *)h;
	if (events & EPOLLOUT && !c->registered) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		uint8_t body[80];
		size_t n = sl_cmsg_register_encode(body, &c->reg);
		if (err || send_frame(c, SL_CMSG_REGISTER, body, (uint32_t)n) != 0) {
			drop_conn(c);
			return;
		}
		c->registered = true;
		c->node->cluster.connects++;
		sl_loop_mod(c->loop, c->fd, EPOLLIN, &c->h);
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		if (c->rlen == RBUF_CAP) {
			c->node->cluster.msgs_refused++;
			drop_conn(c);
			return;
		}
		ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF_CAP - c->rlen);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
			drop_conn(c);
			return;
		}
		if (r < 0)
			break;
		c->rlen += (size_t)r;
	}
	on_frames(c);
}

static bool cluster_poll(struct sl_poller *p, bool *no_wait)
{
	struct sl_cluster *c =
	    (struct sl_cluster *)((char *)p - offsetof(struct sl_cluster, poller));
	(void)no_wait;
	uint64_t now = mono_ms();
	bool busy = false;
	if (c->fd < 0 && now >= c->next_connect_ms) {
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->registered = false;
		c->last_rx_ms = now;
		if (c->fd < 0 ||
		    (connect(c->fd, (struct sockaddr *)&c->ctl[c->next_ctl++ % c->nctl],
		             sizeof(c->ctl[0])) != 0 &&
		     errno != EINPROGRESS) ||
		    sl_loop_add(c->loop, c->fd, EPOLLOUT | EPOLLIN, &c->h) != 0) {
			if (c->fd >= 0)
				close(c->fd);
			c->fd = -1;
			c->next_connect_ms = now + RECONNECT_MS;
		}
		busy = true;
	}
	if (c->fd >= 0 && now - c->last_rx_ms > SILENT_HEARTBEATS * (uint64_t)c->hb_ms + RECONNECT_MS) {
		/* a controller that answers no heartbeat (or registration) is
		 * stopped or cut off, though its connection may stay open (the
		 * kernel accepts for a stopped process): try the next */
		c->node->cluster.controller_silent++;
		drop_conn(c);
		return true;
	}
	if (c->fd >= 0 && c->node->cluster.connected && now >= c->next_hb_ms) {
		c->next_hb_ms = now + c->hb_ms;
		uint8_t body[2000];
		uint32_t n = sync_report(c, body, sizeof(body));
		c->hb[(c->seq + 1) % RTE_DIM(c->hb)].seq = c->seq + 1;
		c->hb[(c->seq + 1) % RTE_DIM(c->hb)].tsc = rte_rdtsc();
		if (send_frame(c, SL_CMSG_HEARTBEAT, body, n) != 0)
			drop_conn(c);
	}
	/* wake for the next heartbeat or connection attempt */
	uint64_t next = c->fd >= 0 ? c->next_hb_ms : c->next_connect_ms;
	int cap = next > now ? (int)(next - now) : 0;
	if (c->loop->wait_cap_ms < 0 || cap < c->loop->wait_cap_ms)
		c->loop->wait_cap_ms = cap;
	return busy;
}

int sl_cluster_init(struct sl_cluster *c, const struct sl_cluster_conf *cf, struct sl_loop *loop,
                    struct sl_tables *tables, struct sl_node *node)
{
	memset(c, 0, sizeof(*c));
	c->h.ready = ready;
	c->loop = loop;
	c->tables = tables;
	c->node = node;
	c->fd = -1;
	c->hb_ms = cf->heartbeat_ms ? cf->heartbeat_ms : 50;
	memcpy(c->key, cf->key, SL_CMSG_KEY);
	memcpy(c->ctl, cf->controller, sizeof(c->ctl));
	c->nctl = cf->ncontrollers;
	c->reg.ip = cf->ip;
	c->reg.port = cf->port;
	c->reg.cport = cf->cport;
	memcpy(c->reg.mac, cf->mac, 6);
	c->reg.workers = (uint8_t)node->nworkers;
	c->reg.weight = cf->weight;
	snprintf(c->reg.name, sizeof(c->reg.name), "%s", cf->name);
	/* a restarted node numbers its frames above the ones it sent before */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	c->seq = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	c->rbuf = malloc(RBUF_CAP);
	if (!c->rbuf)
		return -ENOMEM;
	node->cluster.on = true;
	c->poller.poll = cluster_poll;
	sl_loop_add_poller(loop, &c->poller);
	return 0;
}

void sl_cluster_fini(struct sl_cluster *c)
{
	if (c->fd >= 0) {
		sl_loop_del(c->loop, c->fd);
		close(c->fd);
	}
	c->fd = -1;
	free(c->rbuf);
	c->rbuf = NULL;
}
