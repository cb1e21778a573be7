/*
 * The TCP compat path, served by the main lcore over kernel sockets.
 *
 * Per connection the front end buffers input, finds the complete requests
 * at its head with the same parser the workers use, and ships them as one
 * conversation to a worker; the workers pass it from owner to owner and the
 * last sends the reply back here. One conversation per connection is in
 * flight at a time, so replies come back in request order, as memcached
 * answers a connection's requests in order.
 *
 *   conn:  rbuf | complete requests | partial request |
 *                 \___ shipped ____/  waits for more bytes
 *          wbuf | reply bytes not yet accepted by the socket |
 *
 * Listeners: --tcp HOST:PORT in sluiced's own network namespace, and, with
 * an exception path, the dataplane address and UDP port inside the
 * exception namespace, so one host:port serves UDP and TCP.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <rte_log.h>

#include "sluiced.h"

#define MAX_LISTEN 2
#define READ_CHUNK 65536
#define WBUF_HIGH (4u << 20) /* stop reading a client that does not read */

struct conn {
	int fd;
	uint32_t gen;
	bool used;
	bool busy;    /* a conversation is with the workers */
	bool closing; /* close once the reply is written */
	bool dead;    /* peer gone while busy */
	bool eof;     /* peer finished sending: answer what it sent, then close */
	bool paused;  /* not reading: enough input is waiting (backpressure) */
	bool stalled; /* has requests, but no message or ring room: retry */
	uint64_t swallow;
	struct sl_buf rbuf;
	struct sl_buf wbuf;
	size_t woff;
};

static int epfd = -1;
static int lfds[MAX_LISTEN];
static unsigned nlisten;
static struct conn *conns;
static unsigned nconns;
static uint32_t next_gen = 1;
static unsigned rr;
static unsigned nstalled; /* connections waiting for a message or ring room */
static unsigned inflight; /* conversations with the workers: their replies come
                           * by ring, which no file descriptor announces */

static int listen_on(uint32_t ip, uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {
	    .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip};
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1024) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* Open a listener inside another network namespace: setns() affects only
 * this thread, and a socket keeps the namespace it was made in. */
static int listen_in_netns(const char *ns, uint32_t ip, uint16_t port)
{
	char path[128];
	snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
	int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	int other = open(path, O_RDONLY | O_CLOEXEC);
	int fd = -ENOENT;
	if (self >= 0 && other >= 0 && setns(other, CLONE_NEWNET) == 0) {
		fd = listen_on(ip, port);
		if (setns(self, CLONE_NEWNET) != 0)
			rte_exit(EXIT_FAILURE, "cannot return to own netns: %s\n", strerror(errno));
	}
	if (self >= 0)
		close(self);
	if (other >= 0)
		close(other);
	return fd;
}

static void ep_add(int fd, uint32_t ev, uint64_t data)
{
	struct epoll_event e = {.events = ev, .data.u64 = data};
	epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
}

static void ep_mod(int fd, uint32_t ev, uint64_t data)
{
	struct epoll_event e = {.events = ev, .data.u64 = data};
	epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
}

#define LISTEN_TAG (UINT64_C(1) << 63)

int sl_tcp_init(struct sl_app *a)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	if (a->cfg.tcp_on) {
		struct in_addr ia;
		if (inet_pton(AF_INET, a->cfg.tcp_host, &ia) != 1)
			return -EINVAL;
		int fd = listen_on(ia.s_addr, a->cfg.tcp_port);
		if (fd < 0) {
			fprintf(stderr, "sluiced: cannot listen on %s:%u: %s\n", a->cfg.tcp_host,
			        a->cfg.tcp_port, strerror(-fd));
			return fd;
		}
		lfds[nlisten++] = fd;
	}
	if (a->cfg.exc_port >= 0 && a->cfg.exc_netns[0]) {
		int fd = listen_in_netns(a->cfg.exc_netns, a->cfg.ip, a->cfg.udp_port);
		if (fd < 0) {
			fprintf(stderr, "sluiced: cannot listen in netns %s: %s\n",
			        a->cfg.exc_netns, strerror(-fd));
			return fd;
		}
		lfds[nlisten++] = fd;
	}
	for (unsigned i = 0; i < nlisten; i++)
		ep_add(lfds[i], EPOLLIN, LISTEN_TAG | i);
	return 0;
}

static void conn_free(struct sl_app *a, struct conn *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	sl_buf_release(&c->rbuf);
	sl_buf_release(&c->wbuf);
	memset(c, 0, sizeof(*c));
	a->node.curr_connections--;
}

static void conn_close(struct sl_app *a, struct conn *c)
{
	if (c->busy) {
		/* the workers still hold a conversation for it */
		c->dead = true;
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		return;
	}
	conn_free(a, c);
}

static void do_accept(struct sl_app *a, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		unsigned i;
		for (i = 0; i < nconns && conns[i].used; i++)
			;
		if (i == nconns) {
			unsigned n = nconns ? nconns * 2 : 64;
			struct conn *nc = realloc(conns, n * sizeof(*nc));
			if (!nc) {
				close(fd);
				return;
			}
			memset(nc + nconns, 0, (n - nconns) * sizeof(*nc));
			conns = nc;
			nconns = n;
		}
		struct conn *c = &conns[i];
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->used = true;
		c->gen = next_gen++;
		ep_add(fd, EPOLLIN, i);
		a->node.curr_connections++;
		a->node.total_connections++;
	}
}

/* Write what we can; returns false if the connection failed. */
static bool flush_out(struct conn *c, unsigned idx)
{
	while (c->woff < c->wbuf.len) {
		ssize_t n = write(c->fd, c->wbuf.p + c->woff, c->wbuf.len - c->woff);
		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep_mod(c->fd, ((c->eof || c->paused) ? 0 : EPOLLIN) | EPOLLOUT, idx);
			return true;
		}
		return false;
	}
	c->wbuf.len = c->woff = 0;
	ep_mod(c->fd, (c->eof || c->paused) ? 0 : EPOLLIN, idx);
	return true;
}

static size_t rbuf_high(const struct sl_app *a)
{
	return a->cfg.max_item + 2 * READ_CHUNK;
}

/* Ship the complete requests at the head of rbuf to a worker. */
static void pump(struct sl_app *a, struct conn *c, unsigned idx)
{
	if (c->busy || c->closing || c->dead || c->wbuf.len - c->woff > WBUF_HIGH)
		return;
	size_t off = 0;
	uint64_t swallow = 0;
	while (off < c->rbuf.len) {
		struct sl_req r;
		if (sl_parse(c->rbuf.p + off, c->rbuf.len - off, a->cfg.max_item, &r) ==
		    SL_PARSE_MORE)
			break;
		off += r.consumed;
		swallow = r.swallow;
		if (r.cmd == SL_CMD_QUIT || r.cmd == SL_CMD_CLOSE || swallow)
			break;
	}
	if (off == 0) {
		/* an incomplete request can only grow to one largest request
		 * (the most we read ahead); after EOF it never completes */
		if (c->eof || c->rbuf.len >= rbuf_high(a)) {
			c->closing = true;
			if (c->wbuf.len == 0)
				conn_free(a, c);
		}
		return;
	}
	unsigned to = rr % a->node.nworkers;
	struct rte_ring *ring = a->ring[a->node.nworkers][to];
	struct sl_msg *msg;
	if (rte_ring_free_count(ring) == 0 || rte_mempool_get(a->msgpool, (void **)&msg) != 0) {
		/* the workers are saturated: leave the input where it is and
		 * come back on the next poll */
		if (!c->stalled) {
			c->stalled = true;
			nstalled++;
		}
		return;
	}
	rr++;
	if (msg->heap_cap < off) {
		char *p = realloc(msg->heap_in, off);
		if (!p) {
			rte_mempool_put(a->msgpool, msg);
			return;
		}
		msg->heap_in = p;
		msg->heap_cap = (uint32_t)off;
	}
	memcpy(msg->heap_in, c->rbuf.p, off);
	memmove(c->rbuf.p, c->rbuf.p + off, c->rbuf.len - off);
	c->rbuf.len -= off;
	c->swallow = swallow;
	msg->m = NULL;
	msg->origin = SL_ORIGIN_TCP;
	msg->conn = idx;
	msg->conn_gen = c->gen;
	sl_conv_reset(&msg->conv, msg->heap_in, (uint32_t)off, false);
	/* the main lcore is the ring's only producer and saw room above */
	rte_ring_sp_enqueue(ring, msg);
	c->busy = true;
	inflight++;
}

/*
 * Input beyond one largest request is left in the kernel's socket buffer
 * while the workers are busy with this connection, so a client that
 * pipelines without reading replies is slowed by TCP flow control instead
 * of growing our memory without bound.
 */

static void set_paused(struct conn *c, unsigned idx, bool paused)
{
	if (c->paused == paused || c->eof)
		return;
	c->paused = paused;
	ep_mod(c->fd, (paused ? 0 : EPOLLIN) | (c->wbuf.len ? EPOLLOUT : 0), idx);
}

static void do_read(struct sl_app *a, struct conn *c, unsigned idx)
{
	for (;;) {
		if (c->rbuf.len >= rbuf_high(a)) {
			set_paused(c, idx, true);
			break;
		}
		if (sl_buf_reserve(&c->rbuf, READ_CHUNK)) {
			conn_close(a, c);
			return;
		}
		ssize_t n = read(c->fd, c->rbuf.p + c->rbuf.len, READ_CHUNK);
		if (n == 0) {
			/* half-close (nc, shutdown(SHUT_WR)): still answer */
			c->eof = true;
			ep_mod(c->fd, c->wbuf.len ? EPOLLOUT : 0, idx);
			break;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			conn_close(a, c);
			return;
		}
		if (n < 0)
			break;
		size_t got = (size_t)n;
		if (c->swallow) {
			size_t drop = got < c->swallow ? got : (size_t)c->swallow;
			memmove(c->rbuf.p + c->rbuf.len, c->rbuf.p + c->rbuf.len + drop,
			        got - drop);
			c->swallow -= drop;
			got -= drop;
		}
		c->rbuf.len += got;
		if ((size_t)n < READ_CHUNK)
			break;
	}
	pump(a, c, idx);
}

static void reply_back(struct sl_app *a, struct sl_msg *msg)
{
	inflight--;
	unsigned idx = msg->conn;
	struct conn *c = idx < nconns ? &conns[idx] : NULL;
	if (!c || !c->used || c->gen != msg->conn_gen) {
		sl_msg_done(a, msg);
		return;
	}
	c->busy = false;
	if (c->dead) {
		sl_msg_done(a, msg);
		conn_free(a, c);
		return;
	}
	sl_buf_put(&c->wbuf, msg->conv.out.p, msg->conv.out.len);
	a->main_st.bytes_written += msg->conv.out.len;
	bool close_after = msg->conv.close;
	sl_msg_done(a, msg); /* msg is gone from here on */
	if (!flush_out(c, idx)) {
		conn_close(a, c);
		return;
	}
	if (close_after) {
		/* quit / junk: nothing more is read; close once written */
		c->closing = true;
		if (c->wbuf.len == 0)
			conn_free(a, c);
		return;
	}
	pump(a, c, idx);
	if (c->used && c->paused && c->rbuf.len < rbuf_high(a)) {
		set_paused(c, idx, false);
		do_read(a, c, idx); /* the kernel may hold a lot already */
	}
}

bool sl_tcp_poll(struct sl_app *a, bool *busy, int wait_ms)
{
	struct epoll_event ev[64];
	/* block only when nothing can come by ring or retry meanwhile */
	bool wait = wait_ms > 0 && !inflight && !nstalled;
	int n = epoll_wait(epfd, ev, 64, wait ? wait_ms : 0);
	for (int i = 0; i < n; i++) {
		uint64_t d = ev[i].data.u64;
		*busy = true;
		if (d & LISTEN_TAG) {
			do_accept(a, lfds[d & 0xff]);
			continue;
		}
		struct conn *c = &conns[d];
		if (!c->used || c->dead)
			continue;
		if (ev[i].events & EPOLLOUT) {
			if (!flush_out(c, (unsigned)d)) {
				conn_close(a, c);
				continue;
			}
			if (c->closing && c->wbuf.len == 0) {
				conn_free(a, c);
				continue;
			}
			pump(a, c, (unsigned)d);
		}
		if (c->used && !c->eof && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			do_read(a, c, (unsigned)d);
	}
	if (nstalled) {
		nstalled = 0;
		for (unsigned i = 0; i < nconns; i++)
			if (conns[i].used && conns[i].stalled) {
				conns[i].stalled = false;
				pump(a, &conns[i], i);
			}
		*busy = true;
	}
	struct sl_msg *msgs[SL_BURST];
	unsigned me = a->node.nworkers;
	for (unsigned w = 0; w < a->node.nworkers; w++) {
		unsigned k =
		    rte_ring_sc_dequeue_burst(a->ring[w][me], (void **)msgs, SL_BURST, NULL);
		for (unsigned i = 0; i < k; i++)
			reply_back(a, msgs[i]);
		if (k)
			*busy = true;
	}
	return wait;
}

void sl_tcp_fini(struct sl_app *a)
{
	for (unsigned i = 0; i < nconns; i++)
		if (conns[i].used) {
			conns[i].busy = false;
			conn_free(a, &conns[i]);
		}
	free(conns);
	conns = NULL;
	nconns = 0;
	for (unsigned i = 0; i < nlisten; i++)
		close(lfds[i]);
	nlisten = 0;
	if (epfd >= 0)
		close(epfd);
	epfd = -1;
}
