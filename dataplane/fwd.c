/*
 * Forwarding over the cluster port: a request for a slot another node owns
 * goes to that node's workers as a REQ (sluice/cport.h) and what comes
 * back is this node's answer, so any node answers for every key and the
 * client sees the reply come from the address it asked.
 *
 *   client -> node A, worker k: sl_exec_run stops (SL_EXEC_REMOTE, node B)
 *     sl_fwd_send: the request's text + "mn" -> REQ datagram(s) to B,
 *                  the message parked in pend[id % SL_FWD_PENDING]
 *   node B: sl_fwd_input -> a conversation of origin "peer" (it may visit
 *           B's cores like any other) -> peer_reply: REP datagram(s)
 *   node A: sl_fwd_input (on whichever worker the REP landed: passed on
 *           to worker k) -> sl_exec_remote_done -> the conversation goes on
 *   no REP within --forward-timeout-ms: sl_fwd_expire answers the request
 *           with SERVER_ERROR and the conversation goes on
 *
 * Nothing is retransmitted: a forwarded write must not be applied twice,
 * so a lost datagram costs the client one error reply (TCP) or one retry
 * (UDP), as a lost datagram always has.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "sluice/fault.h"
#include "sluiced.h"

#define L2L4 (sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr))
/* a request being put together that long without its last datagram is
 * given up when its place is wanted */
#define ASM_STALE_MS 1000

int sl_fwd_init(struct sl_worker *w)
{
	w->fwd = calloc(1, sizeof(*w->fwd));
	if (!w->fwd)
		return -1;
	/* a restarted node numbers its requests above the ones it sent
	 * before, so the receivers' replay windows take them */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	w->fwd->next_id = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	w->fwd->tail_id = w->fwd->next_id;
	return 0;
}

void sl_fwd_fini(struct sl_worker *w)
{
	struct sl_fwd *f = w->fwd;
	if (!f)
		return;
	for (unsigned i = 0; i < SL_FWD_PENDING; i++) {
		if (f->pend[i].msg)
			sl_msg_put(w->ho, f->pend[i].msg);
		sl_cport_asm_fini(&f->pend[i].rep);
	}
	for (unsigned i = 0; i < SL_FWD_ASM; i++) {
		if (f->in[i].msg)
			sl_msg_put(w->ho, f->in[i].msg);
		sl_cport_asm_fini(&f->in[i].a);
	}
	if (f->held)
		rte_pktmbuf_free(f->held);
	sl_buf_release(&f->scratch);
	free(f);
	w->fwd = NULL;
}

/* Send @p len bytes at @p p as a message of @p type in datagrams to
 * @p mac / @p ip / @p port, all or none. */
bool sl_fwd_send_msg(struct sl_worker *w, const struct sl_cport_hdr *tmpl, const void *mac,
                     uint32_t ip, uint16_t port, const char *p, uint32_t len)
{
	return sl_fwd_send_part(w, tmpl, mac, ip, port, p, len, 0, sl_cport_chunks(len));
}

bool sl_fwd_send_part(struct sl_worker *w, const struct sl_cport_hdr *tmpl, const void *mac,
                      uint32_t ip, uint16_t port, const char *p, uint32_t len, uint32_t first,
                      uint32_t n)
{
	struct rte_mbuf *stack[64], **ms = stack;
	if (n > RTE_DIM(stack))
		ms = malloc(n * sizeof(*ms));
	if (!ms || rte_pktmbuf_alloc_bulk(w->net->pktpool, ms, n) != 0) {
		w->ex.st.drops[SL_DROP_no_mbuf]++;
		if (ms != stack)
			free(ms);
		return false;
	}
	struct sl_cport_hdr h = *tmpl;
	h.total = len;
	for (uint32_t i = 0; i < n; i++) {
		h.off = (first + i) * SL_CPORT_CHUNK;
		h.chunk = (uint16_t)(len - h.off < SL_CPORT_CHUNK ? len - h.off : SL_CPORT_CHUNK);
		size_t pl = sl_cport_size(h.chunk);
		uint8_t *d = (uint8_t *)rte_pktmbuf_append(ms[i], (uint16_t)(L2L4 + pl));
		uint8_t *q = sl_net_udp_headers(w, d, mac, ip, w->net->cport, port, pl);
		sl_cport_encode(q, &h, p + h.off, w->net->key);
		sl_tx_push(w->net->cdev >= 0 ? &w->ctx : &w->tx, ms[i]);
	}
	if (ms != stack)
		free(ms);
	return true;
}

static uint64_t my_epoch(const struct sl_worker *w)
{
	return w->ex.table->epoch;
}

bool sl_fwd_send(struct sl_worker *w, struct sl_msg *msg, unsigned node)
{
	struct sl_fwd *f = w->fwd;
	const struct sl_peer *p = w->net->cport ? sl_table_peer(w->ex.table, (uint16_t)node) : NULL;
	if (!p) {
		w->ex.st.not_served++;
		sl_exec_skip(&w->ex, &msg->conv, "SERVER_ERROR key's slot is not served by this node");
		return false;
	}
	if (msg->origin == &sl_peer_origin && msg->peer.hops >= SL_CPORT_MAX_HOPS) {
		/* the tables of the nodes disagree: one more hop could loop */
		w->ex.st.not_served++;
		sl_exec_skip(&w->ex, &msg->conv, "SERVER_ERROR key's slot is moving, try again");
		return false;
	}
	unsigned slot = (unsigned)(f->next_id % SL_FWD_PENDING);
	if (f->pend[slot].msg) {
		w->ex.st.fwd_timeouts++; /* counted with the requests it could not wait for */
		sl_exec_skip(&w->ex, &msg->conv, "SERVER_ERROR too many requests forwarded");
		return false;
	}
	if (sl_exec_remote_req(&w->ex, &msg->conv, node, &f->scratch) != 0) {
		w->ex.st.reply_oom++;
		sl_exec_skip(&w->ex, &msg->conv, "SERVER_ERROR out of memory");
		return false;
	}
	struct sl_cport_hdr h = {.type = SL_CPORT_REQ,
	                         .hops = msg->origin == &sl_peer_origin ? msg->peer.hops + 1 : 0,
	                         .node = w->ex.table->self,
	                         .worker = (uint8_t)w->idx,
	                         .epoch = my_epoch(w),
	                         .id = f->next_id};
	if (!sl_fwd_send_msg(w, &h, p->mac, p->ip, p->cport, f->scratch.p, (uint32_t)f->scratch.len)) {
		sl_exec_skip(&w->ex, &msg->conv, "SERVER_ERROR out of memory forwarding");
		return false;
	}
	f->pend[slot].msg = msg;
	f->pend[slot].id = f->next_id++;
	f->pend[slot].node = (uint16_t)node;
	f->pend[slot].deadline_ms = w->now_ms + w->net->fwd_timeout_ms;
	w->ex.st.fwd_out++;
	return true;
}

/* The reply to pend[slot] is whole: it is the request's answer; the
 * conversation goes on. */
static void answered(struct sl_worker *w, unsigned slot, const char *rep, size_t len)
{
	struct sl_fwd *f = w->fwd;
	struct sl_msg *msg = f->pend[slot].msg;
	f->pend[slot].msg = NULL;
	sl_exec_remote_done(&w->ex, &msg->conv, rep, len);
	sl_msg_run(w, msg);
}

unsigned sl_fwd_expire(struct sl_worker *w)
{
	struct sl_fwd *f = w->fwd;
	unsigned n = 0;
	while (f->tail_id < f->next_id) {
		unsigned slot = (unsigned)(f->tail_id % SL_FWD_PENDING);
		struct sl_msg *msg = f->pend[slot].msg;
		if (msg && f->pend[slot].id == f->tail_id) {
			if ((int32_t)(w->now_ms - f->pend[slot].deadline_ms) < 0)
				break;
			char line[64];
			snprintf(line, sizeof(line), "SERVER_ERROR forward to node %u timed out",
			         f->pend[slot].node);
			f->pend[slot].msg = NULL;
			sl_cport_asm_fini(&f->pend[slot].rep);
			w->ex.st.fwd_timeouts++;
			sl_exec_skip(&w->ex, &msg->conv, line);
			n++;
			f->tail_id++;
			sl_msg_run(w, msg);
			continue;
		}
		f->tail_id++;
	}
	return n;
}

/* A REP datagram for this worker. */
static void take_reply(struct sl_worker *w, const struct sl_cport_hdr *h, const uint8_t *data)
{
	struct sl_fwd *f = w->fwd;
	unsigned slot = (unsigned)(h->id % SL_FWD_PENDING);
	if (!f->pend[slot].msg || f->pend[slot].id != h->id || f->pend[slot].node != h->node) {
		/* late (timed out already), a copy, or not ours */
		w->ex.st.fwd_refused++;
		return;
	}
	if (h->total == h->chunk) {
		answered(w, slot, (const char *)data, h->chunk);
		return;
	}
	struct sl_cport_asm *a = &f->pend[slot].rep;
	if (!a->buf && sl_cport_asm_init(a, h->total) != 0) {
		w->ex.st.reply_oom++;
		return; /* the timeout answers for it */
	}
	if (a->total != h->total) {
		w->ex.st.fwd_refused++;
		return;
	}
	if (sl_cport_asm_add(a, h->off, data, h->chunk)) {
		uint32_t len = a->total;
		char *buf = sl_cport_asm_take(a);
		answered(w, slot, buf, len);
		free(buf);
	}
}

/* A REP (or a replication message) that landed on another worker than
 * the one it is for: the packet travels to it in a message of this origin. */
static void rep_arrive(struct sl_worker *w, struct sl_msg *msg)
{
	struct rte_mbuf *m = msg->m;
	msg->m = NULL;
	sl_msg_put(w->ho, msg);
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *,
	                                                  sizeof(struct rte_ether_hdr));
	struct sl_msg *r = sl_fwd_input(w, m, ip, (uint16_t)((ip->version_ihl & 0xf) * 4));
	if (r) /* a REQ cannot come this way; be safe */
		sl_msg_put(w->ho, r);
}

static void rep_reply(struct sl_worker *w, struct sl_msg *msg)
{
	sl_msg_put(w->ho, msg);
}

static const struct sl_origin_ops rep_origin = {
    .name = "peer-reply",
    .lossless = false,
    .reply = rep_reply,
    .arrive = rep_arrive,
};

/* Replay window of sender (@p node, @p worker), or NULL when the table of
 * them is full (then nothing more from new senders is taken). */
static struct sl_cport_window *window_of(struct sl_fwd *f, uint16_t node, uint8_t worker)
{
	uint32_t key = ((uint32_t)node << 8 | worker) + 1;
	for (unsigned i = 0, j = (key * 2654435761u) % SL_FWD_SENDERS; i < SL_FWD_SENDERS;
	     i++, j = (j + 1) % SL_FWD_SENDERS) {
		if (f->win[j].sender == key)
			return &f->win[j].w;
		if (!f->win[j].sender) {
			f->win[j].sender = key;
			return &f->win[j].w;
		}
	}
	return NULL;
}

/* A whole forwarded request: the message to run. */
static struct sl_msg *request(struct sl_worker *w, struct sl_msg *msg, const struct sl_cport_hdr *h,
                              const char *in, uint32_t len)
{
	msg->origin = &sl_peer_origin;
	msg->peer.node = h->node;
	msg->peer.worker = h->worker;
	msg->peer.hops = h->hops;
	msg->peer.id = h->id;
	w->ex.st.fwd_in++;
	if (h->epoch < my_epoch(w))
		w->ex.st.fwd_stale++; /* routed by an older table: answered by ours */
	sl_conv_reset(&msg->conv, in, len, true);
	return msg;
}

/* A REQ datagram: one that is whole becomes a message; the chunks of a
 * bigger one are put together in in[]. */
static struct sl_msg *take_request(struct sl_worker *w, struct rte_mbuf *m,
                                   const struct sl_cport_hdr *h, const uint8_t *data,
                                   const struct rte_ether_hdr *eth, const struct rte_ipv4_hdr *ip,
                                   const struct rte_udp_hdr *udp)
{
	struct sl_fwd *f = w->fwd;
	int at = -1, oldest = 0;
	if (h->total != h->chunk) {
		for (int i = 0; i < SL_FWD_ASM; i++) {
			if (f->in[i].msg && f->in[i].node == h->node &&
			    f->in[i].worker == h->worker && f->in[i].id == h->id) {
				at = i;
				break;
			}
			if (!f->in[i].msg ||
			    (f->in[oldest].msg &&
			     (int32_t)(f->in[i].since_ms - f->in[oldest].since_ms) < 0))
				oldest = i;
		}
	}
	if (at < 0) {
		/* the first datagram of a request: its id is taken now */
		struct sl_cport_window *win = window_of(f, h->node, h->worker);
		if (!win || !sl_cport_window_take(win, h->id)) {
			w->ex.st.fwd_refused++;
			rte_pktmbuf_free(m);
			return NULL;
		}
	}
	struct sl_msg *msg = at >= 0 ? f->in[at].msg : sl_msg_get(w->ho);
	if (!msg) {
		w->ex.st.drops[SL_DROP_no_mbuf]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	if (at < 0) {
		msg->peer.mac = eth->src_addr;
		msg->peer.ip = ip->src_addr;
		msg->peer.port = udp->src_port;
	}
	if (h->total == h->chunk) {
		msg->m = m;
		if (data >= rte_pktmbuf_mtod(m, const uint8_t *) &&
		    data < rte_pktmbuf_mtod(m, const uint8_t *) + m->data_len)
			return request(w, msg, h, (const char *)data, h->chunk); /* stays in its packet */
		/* read out of a chained packet into the caller's stack: keep a copy */
		if (msg->heap_cap < h->chunk) {
			char *q = realloc(msg->heap_in, h->chunk ? h->chunk : 1);
			if (!q) {
				w->ex.st.drops[SL_DROP_no_mbuf]++;
				sl_msg_put(w->ho, msg);
				return NULL;
			}
			msg->heap_in = q;
			msg->heap_cap = h->chunk;
		}
		memcpy(msg->heap_in, data, h->chunk);
		return request(w, msg, h, msg->heap_in, h->chunk);
	}
	if (at < 0) {
		if (f->in[oldest].msg) {
			if ((int32_t)(w->now_ms - f->in[oldest].since_ms) < ASM_STALE_MS) {
				/* every place is taken by a live request */
				sl_msg_put(w->ho, msg);
				w->ex.st.fwd_refused++;
				rte_pktmbuf_free(m);
				return NULL;
			}
			sl_msg_put(w->ho, f->in[oldest].msg);
			sl_cport_asm_fini(&f->in[oldest].a);
			f->in[oldest].msg = NULL;
		}
		at = oldest;
		if (sl_cport_asm_init(&f->in[at].a, h->total) != 0) {
			w->ex.st.reply_oom++;
			sl_msg_put(w->ho, msg);
			rte_pktmbuf_free(m);
			return NULL;
		}
		f->in[at].msg = msg;
		f->in[at].node = h->node;
		f->in[at].worker = h->worker;
		f->in[at].id = h->id;
		f->in[at].since_ms = w->now_ms;
	}
	bool whole = sl_cport_asm_add(&f->in[at].a, h->off, data, h->chunk);
	rte_pktmbuf_free(m);
	if (!whole)
		return NULL;
	f->in[at].msg = NULL;
	free(msg->heap_in);
	msg->heap_cap = h->total;
	msg->heap_in = sl_cport_asm_take(&f->in[at].a);
	return request(w, msg, h, msg->heap_in, h->total);
}

struct sl_msg *sl_fwd_input(struct sl_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
                            uint16_t ihl)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)((uint8_t *)ip + ihl);
	uint32_t off = (uint32_t)(sizeof(*eth) + ihl + sizeof(*udp));
	uint32_t len = rte_be_to_cpu_16(udp->dgram_len) - (uint32_t)sizeof(*udp);
	uint8_t copy[SL_CPORT_HDR + SL_CPORT_CHUNK + SL_CPORT_MAC];
	struct sl_cport_hdr h;
	if (len > sizeof(copy)) {
		w->ex.st.fwd_refused++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	const uint8_t *p = rte_pktmbuf_read(m, off, len, copy);
	if (!p || sl_cport_decode(p, len, (uint32_t)w->ex.node->max_item + 4096, w->net->key, &h) !=
	              SL_CPORT_OK) {
		w->ex.st.fwd_refused++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	const uint8_t *data = p + SL_CPORT_HDR;
	if (h.epoch > w->ex.table->epoch) {
		/* the sender has a newer table than ours: until ours comes, we
		 * may no longer own what we think we own (repl.c's fence) */
		uint64_t *seen = &w->ex.node->cluster.epoch_seen;
		uint64_t cur = __atomic_load_n(seen, __ATOMIC_RELAXED);
		while (h.epoch > cur &&
		       !__atomic_compare_exchange_n(seen, &cur, h.epoch, false, __ATOMIC_RELEASE,
		                                    __ATOMIC_RELAXED))
			;
		if (h.epoch > cur)
			__atomic_store_n(&w->ex.node->cluster.epoch_seen_tsc, w->tsc, __ATOMIC_RELEASE);
	}
	if (h.type == SL_CPORT_REQ)
		return take_request(w, m, &h, data, eth, ip, udp);
	if (h.worker != w->idx) {
		struct sl_msg *msg = h.worker < w->ho->nworkers ? sl_msg_get(w->ho) : NULL;
		if (!msg) {
			w->ex.st.fwd_refused++;
			rte_pktmbuf_free(m);
			return NULL;
		}
		msg->origin = &rep_origin;
		msg->m = m;
		sl_handoff_pass(w, h.worker, msg);
		return NULL;
	}
	if (h.type == SL_CPORT_REP)
		take_reply(w, &h, data);
	else if (h.type == SL_CPORT_REPL || h.type == SL_CPORT_RACK)
		sl_repl_input(w, &h, data, eth, ip, udp);
	else
		w->ex.st.fwd_refused++;
	rte_pktmbuf_free(m);
	return NULL;
}

static struct rte_ipv4_hdr *ip_of(struct rte_mbuf *m, uint16_t *ihl)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *,
	                                                  sizeof(struct rte_ether_hdr));
	*ihl = (uint16_t)((ip->version_ihl & 0xf) * 4);
	return ip;
}

unsigned sl_fwd_release_held(struct sl_worker *w, bool all)
{
	struct sl_fwd *f = w->fwd;
	if (!f->held || (!all && w->now_ms - f->held_ms < 5))
		return 0;
	struct rte_mbuf *m = f->held;
	f->held = NULL;
	uint16_t ihl;
	struct rte_ipv4_hdr *ip = ip_of(m, &ihl);
	struct sl_msg *msg = sl_fwd_input(w, m, ip, ihl);
	if (msg)
		sl_msg_run(w, msg);
	return 1;
}

struct sl_msg *sl_fwd_arrive(struct sl_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
                             uint16_t ihl)
{
	if (!SL_FAULTS_BUILT)
		return sl_fwd_input(w, m, ip, ihl);
	struct sl_fwd *f = w->fwd;
	if (sl_fault(SL_FAULT_cport_drop)) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	if (sl_fault(SL_FAULT_cport_dup)) {
		struct rte_mbuf *c = rte_pktmbuf_copy(m, w->net->pktpool, 0, UINT32_MAX);
		if (c) {
			uint16_t cl;
			struct rte_ipv4_hdr *cip = ip_of(c, &cl);
			struct sl_msg *msg = sl_fwd_input(w, c, cip, cl);
			if (msg)
				sl_msg_run(w, msg);
		}
	}
	if (!f->held && sl_fault(SL_FAULT_cport_delay)) {
		f->held = m;
		f->held_ms = w->now_ms;
		return NULL;
	}
	struct sl_msg *msg = sl_fwd_input(w, m, ip, ihl);
	if (f->held) {
		/* the one held back comes after this one: reordered */
		if (msg)
			sl_msg_run(w, msg);
		msg = NULL;
		sl_fwd_release_held(w, true);
	}
	return msg;
}

/* The answer to a forwarded request goes back to the worker that sent it,
 * even when empty, so that it never waits for its timeout. */
static void peer_reply(struct sl_worker *w, struct sl_msg *msg)
{
	struct sl_cport_hdr h = {.type = SL_CPORT_REP,
	                         .node = w->ex.table->self,
	                         .worker = msg->peer.worker,
	                         .epoch = my_epoch(w),
	                         .id = msg->peer.id};
	const struct sl_buf *o = &msg->conv.out;
	sl_fwd_send_msg(w, &h, &msg->peer.mac, msg->peer.ip, msg->peer.port, o->p, (uint32_t)o->len);
	sl_msg_put(w->ho, msg);
}

const struct sl_origin_ops sl_peer_origin = {
    .name = "peer",
    .lossless = false,
    .reply = peer_reply,
};
