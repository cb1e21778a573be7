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
 *
 * No request is ever dropped once read (see sluiced.h): at most
 * SL_TCP_INFLIGHT conversations are with the workers at once, and a
 * connection that cannot ship its requests now (admission, no message, no
 * memory for its input copy) is marked stalled and retried on every turn
 * of the loop. A reply that cannot be buffered for lack of memory stays in
 * its message until it can.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
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

#define READ_CHUNK 65536
#define WBUF_HIGH (4u << 20) /* stop reading a client that does not read */

struct sl_conn {
	struct sl_fd_handler h; /* first: the epoll cookie */
	struct sl_tcp *tcp;
	unsigned idx;
	int fd;
	uint32_t gen;
	bool busy;    /* a conversation is with the workers, or its reply waits */
	bool closing; /* close once the reply is written */
	bool dead;    /* peer gone while busy */
	bool eof;     /* peer finished sending: answer what it sent, then close */
	bool paused;  /* not reading: enough input is waiting (backpressure) */
	bool stalled; /* something to retry on the next turn (see retry()) */
	bool starved; /* reading stopped: no memory for the input buffer */
	uint64_t swallow;
	struct sl_msg *pending; /* a reply not yet in wbuf (no memory) */
	struct sl_buf rbuf;
	struct sl_buf wbuf;
	size_t woff;
};

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

static void watch(struct sl_conn *c, uint32_t ev)
{
	sl_loop_mod(c->tcp->loop, c->fd, ev, &c->h);
}

static void conn_free(struct sl_conn *c)
{
	struct sl_tcp *t = c->tcp;
	sl_loop_del(t->loop, c->fd);
	close(c->fd);
	if (c->pending)
		sl_msg_put(t->ho, c->pending);
	sl_buf_release(&c->rbuf);
	sl_buf_release(&c->wbuf);
	t->conns[c->idx] = NULL;
	if (c->stalled)
		t->nstalled--;
	t->node->curr_connections--;
	free(c);
}

static void conn_close(struct sl_conn *c)
{
	if (c->busy && !c->pending) {
		/* the workers still hold a conversation for it */
		c->dead = true;
		sl_loop_del(c->tcp->loop, c->fd);
		return;
	}
	conn_free(c);
}

static void stall(struct sl_conn *c)
{
	if (!c->stalled) {
		c->stalled = true;
		c->tcp->nstalled++;
	}
}

static void conn_ready(struct sl_fd_handler *h, uint32_t events);

static void do_accept(struct sl_tcp *t, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		unsigned i;
		for (i = 0; i < t->nconns && t->conns[i]; i++)
			;
		if (i == t->nconns) {
			unsigned n = t->nconns ? t->nconns * 2 : 64;
			struct sl_conn **nc = realloc(t->conns, n * sizeof(*nc));
			if (!nc) {
				close(fd);
				return;
			}
			memset(nc + t->nconns, 0, (n - t->nconns) * sizeof(*nc));
			t->conns = nc;
			t->nconns = n;
		}
		struct sl_conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			return;
		}
		c->h.ready = conn_ready;
		c->tcp = t;
		c->idx = i;
		c->fd = fd;
		c->gen = t->next_gen++;
		if (sl_loop_add(t->loop, fd, EPOLLIN, &c->h) != 0) {
			close(fd);
			free(c);
			return;
		}
		t->conns[i] = c;
		t->node->curr_connections++;
		t->node->total_connections++;
	}
}

static void listener_ready(struct sl_fd_handler *h, uint32_t events)
{
	(void)events;
	struct sl_tcp_listener *l = (struct sl_tcp_listener *)h;
	do_accept(l->tcp, l->fd);
}

/* Write what we can; returns false if the connection failed. */
static bool flush_out(struct sl_conn *c)
{
	while (c->woff < c->wbuf.len) {
		ssize_t n = write(c->fd, c->wbuf.p + c->woff, c->wbuf.len - c->woff);
		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			watch(c, ((c->eof || c->paused) ? 0 : EPOLLIN) | EPOLLOUT);
			return true;
		}
		return false;
	}
	c->wbuf.len = c->woff = 0;
	watch(c, (c->eof || c->paused) ? 0 : EPOLLIN);
	return true;
}

static size_t rbuf_high(const struct sl_tcp *t)
{
	return t->max_item + 2 * READ_CHUNK;
}

/* Ship the complete requests at the head of rbuf to a worker. Returns
 * false when it closed (freed) the connection. */
static bool pump(struct sl_conn *c)
{
	struct sl_tcp *t = c->tcp;
	if (c->busy || c->closing || c->dead || c->wbuf.len - c->woff > WBUF_HIGH)
		return true;
	size_t off = 0;
	uint64_t swallow = 0;
	while (off < c->rbuf.len) {
		struct sl_req r;
		if (sl_parse(c->rbuf.p + off, c->rbuf.len - off, t->max_item, &r) == SL_PARSE_MORE)
			break;
		off += r.consumed;
		swallow = r.swallow;
		if (r.cmd == SL_CMD_QUIT || r.cmd == SL_CMD_CLOSE || swallow)
			break;
	}
	if (off == 0) {
		/* an incomplete request can only grow to one largest request
		 * (the most we read ahead); after EOF it never completes */
		if (c->eof || c->rbuf.len >= rbuf_high(t)) {
			c->closing = true;
			if (c->wbuf.len == 0) {
				conn_free(c);
				return false;
			}
		}
		return true;
	}
	/* admission: the bound every later queue is sized by */
	if (t->inflight >= t->max_inflight) {
		t->st->tcp_admission_waits++;
		stall(c);
		return true;
	}
	unsigned to = t->rr % t->ho->nworkers;
	struct sl_msg *msg = sl_msg_get(t->ho);
	if (!msg) {
		/* the workers are saturated: leave the input where it is and
		 * come back on the next turn */
		stall(c);
		return true;
	}
	if (msg->heap_cap < off) {
		char *p = realloc(msg->heap_in, off);
		if (!p) {
			sl_msg_put(t->ho, msg);
			stall(c);
			return true;
		}
		msg->heap_in = p;
		msg->heap_cap = (uint32_t)off;
	}
	memcpy(msg->heap_in, c->rbuf.p, off);
	msg->m = NULL;
	msg->origin = &sl_tcp_origin;
	msg->tcp.conn = c->idx;
	msg->tcp.gen = c->gen;
	sl_conv_reset(&msg->conv, msg->heap_in, (uint32_t)off, false);
	/* the main lcore's ring to a worker carries only TCP requests, at
	 * most SL_TCP_INFLIGHT of them, so it has room; only an injected
	 * fault gets a refusal, and then the input stays for the next turn */
	if (!sl_handoff_send(t->ho, t->ho->nworkers, to, msg)) {
		sl_msg_put(t->ho, msg);
		stall(c);
		return true;
	}
	t->rr++;
	memmove(c->rbuf.p, c->rbuf.p + off, c->rbuf.len - off);
	c->rbuf.len -= off;
	c->swallow = swallow;
	c->busy = true;
	t->inflight++;
	t->node->tcp_inflight = t->inflight;
	return true;
}

/*
 * Input beyond one largest request is left in the kernel's socket buffer
 * while the workers are busy with this connection, so a client that
 * pipelines without reading replies is slowed by TCP flow control instead
 * of growing our memory without bound.
 */

static void set_paused(struct sl_conn *c, bool paused)
{
	if (c->paused == paused || c->eof)
		return;
	c->paused = paused;
	watch(c, (paused ? 0 : EPOLLIN) | (c->wbuf.len ? EPOLLOUT : 0));
}

static void do_read(struct sl_conn *c)
{
	struct sl_tcp *t = c->tcp;
	for (;;) {
		if (c->rbuf.len >= rbuf_high(t)) {
			set_paused(c, true);
			break;
		}
		if (sl_buf_reserve(&c->rbuf, READ_CHUNK)) {
			/* no memory for input now: serve what is here, read
			 * the rest once memory comes back (retry()) */
			c->rbuf.err = false;
			c->starved = true;
			set_paused(c, true);
			stall(c);
			break;
		}
		ssize_t n = read(c->fd, c->rbuf.p + c->rbuf.len, READ_CHUNK);
		if (n == 0) {
			/* half-close (nc, shutdown(SHUT_WR)): still answer */
			c->eof = true;
			watch(c, c->wbuf.len ? EPOLLOUT : 0);
			break;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			conn_close(c);
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
	pump(c);
}

/* After a reply is out of the message: write, close, or ship the next. */
static void after_reply(struct sl_conn *c, bool close_after)
{
	struct sl_tcp *t = c->tcp;
	if (!flush_out(c)) {
		conn_close(c);
		return;
	}
	if (close_after) {
		/* quit / junk: nothing more is read; close once written */
		c->closing = true;
		if (c->wbuf.len == 0)
			conn_free(c);
		return;
	}
	if (!pump(c))
		return;
	if (c->paused && !c->starved && c->rbuf.len < rbuf_high(t)) {
		set_paused(c, false);
		do_read(c); /* the kernel may hold a lot already */
	}
}

/* Move the reply of @p msg into the connection's output; false, with the
 * message kept as pending, when there is no memory for it now. */
static bool take_reply(struct sl_conn *c, struct sl_msg *msg)
{
	if (sl_buf_put(&c->wbuf, msg->conv.out.p, msg->conv.out.len) != 0) {
		c->wbuf.err = false;
		c->pending = msg;
		stall(c);
		return false;
	}
	c->tcp->st->bytes_written += msg->conv.out.len;
	c->pending = NULL;
	bool close_after = msg->conv.close;
	sl_msg_put(c->tcp->ho, msg);
	c->busy = false;
	after_reply(c, close_after);
	return true;
}

static void reply_back(struct sl_tcp *t, struct sl_msg *msg)
{
	t->inflight--;
	t->node->tcp_inflight = t->inflight;
	unsigned idx = msg->tcp.conn;
	struct sl_conn *c = idx < t->nconns ? t->conns[idx] : NULL;
	if (!c || c->gen != msg->tcp.gen) {
		sl_msg_put(t->ho, msg);
		return;
	}
	if (c->dead) {
		sl_msg_put(t->ho, msg);
		c->busy = false;
		conn_free(c);
		return;
	}
	take_reply(c, msg);
}

/* What stalled connections wait for may have come: a reply buffered,
 * input memory, a message, room under the admission bound. */
static void retry(struct sl_tcp *t)
{
	t->nstalled = 0;
	for (unsigned i = 0; i < t->nconns; i++) {
		struct sl_conn *c = t->conns[i];
		if (!c || !c->stalled)
			continue;
		c->stalled = false;
		if (c->dead)
			continue; /* freed when its conversation comes back */
		if (c->pending) {
			take_reply(c, c->pending);
			continue;
		}
		if (c->starved) {
			c->starved = false;
			set_paused(c, false);
			do_read(c);
			continue;
		}
		pump(c);
	}
}

static void conn_ready(struct sl_fd_handler *h, uint32_t events)
{
	struct sl_conn *c = (struct sl_conn *)h;
	if (c->dead)
		return;
	if (events & EPOLLOUT) {
		if (!flush_out(c)) {
			conn_close(c);
			return;
		}
		if (c->closing && c->wbuf.len == 0) {
			conn_free(c);
			return;
		}
		if (!pump(c))
			return;
	}
	if (!c->eof && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		do_read(c);
}

static bool tcp_poll(struct sl_poller *p, bool *no_wait)
{
	struct sl_tcp *t = (struct sl_tcp *)((char *)p - offsetof(struct sl_tcp, poller));
	bool busy = false;
	if (t->nstalled) {
		retry(t);
		busy = true;
	}
	struct sl_msg *msgs[SL_BURST];
	unsigned me = t->ho->nworkers;
	for (unsigned w = 0; w < t->ho->nworkers; w++) {
		unsigned k =
		    rte_ring_sc_dequeue_burst(t->ho->ring[w][me], (void **)msgs, SL_BURST, NULL);
		for (unsigned i = 0; i < k; i++)
			reply_back(t, msgs[i]);
		busy |= k > 0;
	}
	/* replies come by ring, which no descriptor announces */
	if (t->inflight || t->nstalled)
		*no_wait = true;
	return busy;
}

/* The worker side of a TCP conversation: back to the main lcore, never
 * dropped (sl_handoff_pass keeps it in the backlog if the ring is full). */
static void tcp_reply(struct sl_worker *w, struct sl_msg *msg)
{
	sl_handoff_pass(w, w->ho->nworkers, msg);
}

const struct sl_origin_ops sl_tcp_origin = {
    .name = "tcp",
    .lossless = true,
    .reply = tcp_reply,
};

static int add_listener(struct sl_tcp *t, int fd)
{
	struct sl_tcp_listener *l = &t->lis[t->nlisten];
	l->h.ready = listener_ready;
	l->tcp = t;
	l->fd = fd;
	t->nlisten++;
	return sl_loop_add(t->loop, fd, EPOLLIN, &l->h);
}

int sl_tcp_init(struct sl_tcp *t, const struct sl_tcp_conf *c, struct sl_loop *loop,
                struct sl_handoff *ho, struct sl_node *node, struct sl_core_stats *st,
                size_t max_item)
{
	memset(t, 0, sizeof(*t));
	t->loop = loop;
	t->ho = ho;
	t->node = node;
	t->st = st;
	t->max_item = max_item;
	t->next_gen = 1;
	t->max_inflight = c->max_inflight && c->max_inflight < SL_TCP_INFLIGHT ? c->max_inflight
	                                                                       : SL_TCP_INFLIGHT;
	if (c->on) {
		struct in_addr ia;
		if (inet_pton(AF_INET, c->host, &ia) != 1)
			return -EINVAL;
		int fd = listen_on(ia.s_addr, c->port);
		if (fd < 0) {
			fprintf(stderr, "sluiced: cannot listen on %s:%u: %s\n", c->host, c->port,
			        strerror(-fd));
			return fd;
		}
		if (add_listener(t, fd) != 0)
			return -errno;
	}
	if (c->exc_netns) {
		int fd = listen_in_netns(c->exc_netns, c->exc_ip, c->exc_port);
		if (fd < 0) {
			fprintf(stderr, "sluiced: cannot listen in netns %s: %s\n", c->exc_netns,
			        strerror(-fd));
			return fd;
		}
		if (add_listener(t, fd) != 0)
			return -errno;
	}
	t->poller.poll = tcp_poll;
	sl_loop_add_poller(loop, &t->poller);
	return 0;
}

void sl_tcp_fini(struct sl_tcp *t)
{
	for (unsigned i = 0; i < t->nconns; i++)
		if (t->conns[i]) {
			t->conns[i]->stalled = false;
			conn_free(t->conns[i]);
		}
	t->nstalled = 0;
	free(t->conns);
	t->conns = NULL;
	t->nconns = 0;
	for (unsigned i = 0; i < t->nlisten; i++)
		close(t->lis[i].fd);
	t->nlisten = 0;
}
