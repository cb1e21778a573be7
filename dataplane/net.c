/*
 * Packets in and out of a worker: ARP, ICMP echo, IPv4 reassembly and
 * memcached-over-UDP framing. Everything that is not ours to answer goes to
 * the exception path (the kernel behind a tap carrying our address) when
 * there is one, and is otherwise dropped and counted by reason.
 *
 * A UDP reply is one message of n datagrams, each carrying the request's id
 * and sequence numbers 0..n-1 of n:
 *
 *   | eth 14 | ipv4 20 | udp 8 | id seq n 0 (8) | up to 1400 reply bytes |
 *
 * UDP checksums are left 0 (allowed for IPv4 by RFC 768; memcached's kernel
 * path computes them, clients do not require them).
 *
 * This layer classifies and answers what needs no store; a memcached
 * request becomes a message (origin: sl_udp_origin) that it returns to the
 * worker loop to run. It calls nothing above it.
 */
#include <stdlib.h>
#include <string.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "sluice/fault.h"
#include "sluice/ipsum.h"
#include "sluiced.h"

#define HDR_LEN                                                                                    \
	(sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr) + \
	 SL_FRAME_LEN)

static void to_kernel(struct sl_worker *w, struct rte_mbuf *m, enum sl_drop why)
{
	if (w->net->exc_port >= 0 && rte_ring_mp_enqueue(w->net->exc_ring, m) == 0) {
		w->ex.st.exception_pkts++;
		return;
	}
	w->ex.st.drops[why]++;
	rte_pktmbuf_free(m);
}

static void handle_arp(struct sl_worker *w, struct rte_mbuf *m)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(eth + 1);
	if (m->data_len < sizeof(*eth) + sizeof(*arp) ||
	    arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
	    arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
		w->ex.st.drops[SL_DROP_other_proto]++;
		rte_pktmbuf_free(m);
		return;
	}
	if (arp->arp_opcode == rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) &&
	    arp->arp_data.arp_tip == w->net->ip) {
		struct rte_mbuf *r = rte_pktmbuf_alloc(w->net->pktpool);
		if (r) {
			size_t len = sizeof(*eth) + sizeof(*arp);
			struct rte_ether_hdr *re =
			    (struct rte_ether_hdr *)rte_pktmbuf_append(r, (uint16_t)len);
			struct rte_arp_hdr *ra = (struct rte_arp_hdr *)(re + 1);
			re->dst_addr = eth->src_addr;
			re->src_addr = w->net->mac;
			re->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
			*ra = *arp;
			ra->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
			ra->arp_data.arp_tha = arp->arp_data.arp_sha;
			ra->arp_data.arp_tip = arp->arp_data.arp_sip;
			ra->arp_data.arp_sha = w->net->mac;
			ra->arp_data.arp_sip = w->net->ip;
			sl_tx_push(&w->tx, r);
			w->ex.st.arp_replies++;
		} else {
			w->ex.st.drops[SL_DROP_no_mbuf]++;
		}
	}
	/* the kernel behind the exception path needs ARP too, to reach
	 * its TCP peers */
	to_kernel(w, m, SL_DROP_other_proto);
}

/* TTL of what sluiced sends (replies, ICMP echo replies) */
#define REPLY_TTL 64

static void handle_icmp(struct sl_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
                        uint16_t ihl)
{
	uint16_t tot = rte_be_to_cpu_16(ip->total_length);
	struct rte_icmp_hdr *ic = (struct rte_icmp_hdr *)((uint8_t *)ip + ihl);
	if (m->nb_segs != 1 || tot < ihl + sizeof(*ic) ||
	    ic->icmp_type != RTE_IP_ICMP_ECHO_REQUEST) {
		to_kernel(w, m, SL_DROP_other_proto);
		return;
	}
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ether_addr t = eth->src_addr;
	eth->src_addr = w->net->mac;
	eth->dst_addr = t;
	ip->dst_addr = ip->src_addr;
	ip->src_addr = w->net->ip;
	ip->time_to_live = REPLY_TTL;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	ic->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	ic->icmp_cksum = 0;
	ic->icmp_cksum = (uint16_t)~rte_raw_cksum(ic, tot - ihl);
	/* trim any Ethernet padding */
	rte_pktmbuf_trim(m, (uint16_t)(m->pkt_len - sizeof(*eth) - tot));
	w->ex.st.icmp_replies++;
	sl_tx_push(&w->tx, m);
}

/* Where a reply goes: the request's sender (all in network order). */
struct peer {
	struct rte_ether_addr mac;
	uint32_t ip;
	uint16_t port;
};

uint8_t *sl_net_udp_headers(struct sl_worker *w, uint8_t *p, const void *dst_mac, uint32_t dst_ip,
                            uint16_t src_port, uint16_t dst_port, size_t payload)
{
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)p;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	memcpy(&eth->dst_addr, dst_mac, RTE_ETHER_ADDR_LEN);
	eth->src_addr = w->net->mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->type_of_service = 0;
	rte_be16_t tot = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + sizeof(*udp) + payload));
	rte_be16_t id = rte_cpu_to_be_16(w->ip_id++);
	ip->total_length = tot;
	ip->packet_id = id;
	ip->fragment_offset = 0;
	ip->time_to_live = REPLY_TTL;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = w->net->ip;
	ip->dst_addr = dst_ip;
	/* from the values: see sluice/ipsum.h */
	ip->hdr_checksum = sl_ipv4_cksum(tot, id, REPLY_TTL, IPPROTO_UDP, w->net->ip, dst_ip);
	udp->src_port = src_port;
	udp->dst_port = dst_port;
	udp->dgram_len = rte_cpu_to_be_16((uint16_t)(sizeof(*udp) + payload));
	udp->dgram_cksum = 0;
	return (uint8_t *)(udp + 1);
}

/* Write Ethernet, IPv4, UDP and frame headers for a reply datagram of
 * @p chunk reply bytes at @p p; returns where the reply bytes go. */
static uint8_t *write_headers(struct sl_worker *w, uint8_t *p, const struct peer *to,
                              const struct sl_frame *f, size_t chunk)
{
	uint8_t *fr = sl_net_udp_headers(w, p, &to->mac, to->ip, rte_cpu_to_be_16(w->net->udp_port),
	                                 to->port, SL_FRAME_LEN + chunk);
	sl_frame_encode(fr, f);
	return fr + SL_FRAME_LEN;
}

/*
 * A datagram of exactly "get <key>\r\n" (@p len request bytes at @p in, a
 * key of this worker's, as the pre-pass found): answer it in the request's
 * own mbuf, the reply written over the request and the headers turned
 * around. Returns false, leaving @p m as it was, when the mbuf cannot take
 * the reply in place or the reply might not fit one datagram; the general
 * path then runs it.
 */
static bool answer_in_place(struct sl_worker *w, struct rte_mbuf *m, const struct peer *to,
                            const struct sl_frame *f, char *in, uint32_t len,
                            const struct sl_peek *pk)
{
	size_t room = (size_t)m->buf_len - m->data_off;
	if (len != SL_PEEK_KEY_OFF + pk->klen + 2 || m->nb_segs != 1 ||
	    rte_mbuf_refcnt_read(m) != 1 || !RTE_MBUF_DIRECT(m) || room < HDR_LEN + SL_UDP_CHUNK)
		return false;
	int n = sl_exec_get1(&w->ex, in + SL_PEEK_KEY_OFF, pk->klen, pk->ih, pk->pf, len, w->now,
	                     in, SL_UDP_CHUNK);
	if (n < 0)
		return false;
	struct sl_frame rf = {.id = f->id, .seq = 0, .count = 1};
	write_headers(w, rte_pktmbuf_mtod(m, uint8_t *), to, &rf, (size_t)n);
	m->data_len = (uint16_t)(HDR_LEN + (size_t)n);
	m->pkt_len = m->data_len;
	m->ol_flags = 0; /* RX's offload flags mean nothing to TX */
	w->ex.st.bytes_written += (uint64_t)n;
	sl_tx_push(&w->tx, m);
	return true;
}

static struct sl_msg *handle_udp(struct sl_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
                                 uint16_t ihl, const struct sl_peek *pk)
{
	uint16_t tot = rte_be_to_cpu_16(ip->total_length);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)((uint8_t *)ip + ihl);
	uint16_t ulen = rte_be_to_cpu_16(udp->dgram_len);
	if (ulen < sizeof(*udp) || ulen > tot - ihl) {
		w->ex.st.drops[SL_DROP_bad_udp]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	if (udp->dst_port == w->net->cport && w->net->cport) {
		/* node to node: only from a trusted source, and then
		 * authenticated datagram by datagram (sluice/cport.h) */
		if (sl_udp_classify(&w->net->guard, ip->src_addr) != SL_UDP_TRUSTED) {
			w->ex.st.drops[SL_DROP_udp_not_allowed]++;
			rte_pktmbuf_free(m);
			return NULL;
		}
		return sl_fwd_arrive(w, m, ip, ihl);
	}
	if (udp->dst_port != rte_cpu_to_be_16(w->net->udp_port)) {
		to_kernel(w, m, SL_DROP_udp_port);
		return NULL;
	}
	/* who may use UDP (sluice/udpguard.h): a stranger gets nothing, not
	 * even an error, and costs no parsing */
	enum sl_udp_class cls = pk && pk->hash ? (enum sl_udp_class)pk->cls
	                                       : sl_udp_classify(&w->net->guard, ip->src_addr);
	if (unlikely(cls == SL_UDP_DENIED)) {
		w->ex.st.drops[SL_DROP_udp_not_allowed]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	uint32_t plen = ulen - (uint32_t)sizeof(*udp);
	uint32_t off = (uint32_t)(sizeof(struct rte_ether_hdr) + ihl + sizeof(*udp));
	uint8_t fh[SL_FRAME_LEN];
	const uint8_t *fp = rte_pktmbuf_read(m, off, plen < SL_FRAME_LEN ? plen : SL_FRAME_LEN, fh);
	struct sl_frame f;
	enum sl_frame_verdict v = sl_frame_decode(fp, plen, &f);
	if (v != SL_FRAME_OK) {
		w->ex.st
		    .drops[v == SL_FRAME_SHORT ? SL_DROP_short_frame : SL_DROP_multi_datagram]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct peer to = {eth->src_addr, ip->src_addr, udp->src_port};
	uint32_t len = plen - SL_FRAME_LEN;
	bool flat = off + SL_FRAME_LEN + len <= m->data_len;
	if (pk && pk->get1 && pk->mine && flat && cls == SL_UDP_TRUSTED &&
	    answer_in_place(w, m, &to, &f, rte_pktmbuf_mtod_offset(m, char *, off + SL_FRAME_LEN),
	                    len, pk))
		return NULL;
	struct sl_msg *msg = sl_msg_get(w->net->ho);
	if (!msg) {
		w->ex.st.drops[SL_DROP_no_mbuf]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	msg->origin = &sl_udp_origin;
	msg->udp.peer_mac = to.mac;
	msg->udp.peer_ip = to.ip;
	msg->udp.peer_port = to.port;
	msg->udp.frame_id = f.id;
	msg->udp.allowed = cls == SL_UDP_ALLOWED;
	msg->udp.in_bytes = tot;
	msg->m = m;
	const char *in;
	if (flat) {
		in = rte_pktmbuf_mtod_offset(m, const char *, off + SL_FRAME_LEN);
	} else {
		/* a reassembled datagram spans several mbufs: make it flat */
		if (msg->heap_cap < len) {
			char *p = realloc(msg->heap_in, len);
			if (!p) {
				w->ex.st.drops[SL_DROP_no_mbuf]++;
				sl_msg_put(w->net->ho, msg); /* frees m */
				return NULL;
			}
			msg->heap_in = p;
			msg->heap_cap = len;
		}
		/* rte_pktmbuf_read copies only when the bytes are not contiguous */
		in = msg->heap_in;
		const void *src = rte_pktmbuf_read(m, off + SL_FRAME_LEN, len, msg->heap_in);
		if (src != msg->heap_in)
			memcpy(msg->heap_in, src, len);
	}
	sl_conv_reset(&msg->conv, in, len, true);
	if (pk && pk->hash)
		sl_conv_hint(&msg->conv, SL_PEEK_KEY_OFF, pk->klen, pk->hash);
	return msg;
}

struct sl_msg *sl_net_handle(struct sl_worker *w, struct rte_mbuf *m, uint64_t tsc,
                             const struct sl_peek *pk)
{
	w->ex.st.rx_packets++;
	if (m->data_len < sizeof(struct rte_ether_hdr)) {
		w->ex.st.drops[SL_DROP_not_ipv4]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	uint16_t et = rte_be_to_cpu_16(eth->ether_type);
	if (et == RTE_ETHER_TYPE_ARP) {
		handle_arp(w, m);
		return NULL;
	}
	if (et != RTE_ETHER_TYPE_IPV4) {
		to_kernel(w, m, SL_DROP_not_ipv4);
		return NULL;
	}
	if (m->data_len < sizeof(*eth) + sizeof(struct rte_ipv4_hdr)) {
		w->ex.st.drops[SL_DROP_bad_ip]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	uint16_t ihl = (uint16_t)((ip->version_ihl & 0xf) * 4);
	uint16_t tot = rte_be_to_cpu_16(ip->total_length);
	if ((ip->version_ihl >> 4) != 4 || ihl < 20 || tot < ihl ||
	    sizeof(*eth) + tot > m->pkt_len || sizeof(*eth) + ihl > m->data_len) {
		w->ex.st.drops[SL_DROP_bad_ip]++;
		rte_pktmbuf_free(m);
		return NULL;
	}
	if (ip->dst_addr != w->net->ip) {
		/* broadcast and multicast may interest the kernel */
		to_kernel(w, m, SL_DROP_not_for_us);
		return NULL;
	}
	if (rte_ipv4_frag_pkt_is_fragmented(ip)) {
		m->l2_len = sizeof(*eth);
		m->l3_len = ihl;
		/* fragments past the Ethernet minimum may carry padding */
		rte_pktmbuf_trim(m, (uint16_t)(m->pkt_len - sizeof(*eth) - tot));
		struct rte_mbuf *r = rte_ipv4_frag_reassemble_packet(w->frag, &w->dr, m, tsc, ip);
		if (!r)
			return NULL; /* held for more fragments, or dropped into death row */
		m = r;
		pk = NULL; /* the pre-pass saw one fragment of it */
		eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
		ip = (struct rte_ipv4_hdr *)(eth + 1);
		ihl = (uint16_t)((ip->version_ihl & 0xf) * 4);
		tot = rte_be_to_cpu_16(ip->total_length);
		if (sizeof(*eth) + tot > m->pkt_len) {
			w->ex.st.drops[SL_DROP_frag_failed]++;
			rte_pktmbuf_free(m);
			return NULL;
		}
	}
	switch (ip->next_proto_id) {
	case IPPROTO_UDP:
		if (sizeof(*eth) + ihl + sizeof(struct rte_udp_hdr) > m->data_len) {
			w->ex.st.drops[SL_DROP_bad_udp]++;
			rte_pktmbuf_free(m);
			return NULL;
		}
		return handle_udp(w, m, ip, ihl, pk);
	case IPPROTO_ICMP:
		handle_icmp(w, m, ip, ihl);
		break;
	default:
		to_kernel(w, m, SL_DROP_other_proto);
		break;
	}
	return NULL;
}

/*
 * Send a UDP conversation's reply: n datagrams, all or none (the mbufs are
 * taken first, so a client never gets a reply with datagrams missing
 * because the pool ran dry halfway; it gets nothing and retries, as for
 * any lost datagram). A one-datagram reply goes out in the request's own
 * mbuf: its input has been used up, and this saves an alloc and a free per
 * request (the common case).
 */
/* IP bytes of a reply of @p len bytes: its datagrams with their headers */
static uint32_t wire_bytes(size_t len)
{
	return (uint32_t)(len + sl_frame_count(len) * (HDR_LEN - sizeof(struct rte_ether_hdr)));
}

/* An allowed, untrusted source: keep the reply within its budget, or
 * replace it with an error line, or send nothing. Returns false for
 * nothing. */
static bool within_budget(struct sl_worker *w, struct sl_msg *msg)
{
	struct sl_buf *o = &msg->conv.out;
	size_t errlen = o->len > w->net->guard.max_reply ? sizeof(SL_UDP_TOO_LARGE_LINE) - 1
	                                                 : sizeof(SL_UDP_OVER_LINE) - 1;
	switch (sl_udpguard_charge(w->ex.udp, msg->udp.peer_ip, msg->udp.in_bytes, o->len,
	                           wire_bytes(o->len), wire_bytes(errlen), w->now_ms)) {
	case SL_UDP_SEND:
		return true;
	case SL_UDP_TOO_LARGE:
		o->len = 0;
		sl_buf_put(o, SL_UDP_TOO_LARGE_LINE, sizeof(SL_UDP_TOO_LARGE_LINE) - 1);
		return o->len > 0;
	case SL_UDP_OVER:
		o->len = 0;
		sl_buf_put(o, SL_UDP_OVER_LINE, sizeof(SL_UDP_OVER_LINE) - 1);
		return o->len > 0;
	default:
		return false;
	}
}

static void udp_reply(struct sl_worker *w, struct sl_msg *msg)
{
	const struct sl_buf *o = &msg->conv.out;
	if (o->len == 0 || (msg->udp.allowed && !within_budget(w, msg))) {
		/* noreply, quit: memcached sends nothing either */
		sl_msg_put(w->ho, msg);
		return;
	}
	uint32_t n = sl_frame_count(o->len);
	if (n > UINT16_MAX)
		n = UINT16_MAX;
	struct rte_mbuf *stack[64], **ms = stack;
	struct rte_mbuf *req = msg->m;
	if (n == 1 && req && req->nb_segs == 1 && rte_mbuf_refcnt_read(req) == 1 &&
	    RTE_MBUF_DIRECT(req) &&
	    req->buf_len >=
	        RTE_MIN((uint16_t)RTE_PKTMBUF_HEADROOM, req->buf_len) + HDR_LEN + o->len) {
		msg->m = NULL;
		rte_pktmbuf_reset(req);
		stack[0] = req;
	} else {
		if (n > RTE_DIM(stack))
			ms = malloc(n * sizeof(*ms));
		if (!ms || sl_fault(SL_FAULT_mbuf_alloc) ||
		    rte_pktmbuf_alloc_bulk(w->net->pktpool, ms, n) != 0) {
			w->ex.st.drops[SL_DROP_no_mbuf]++;
			if (ms != stack)
				free(ms);
			sl_msg_put(w->ho, msg);
			return;
		}
	}
	struct peer to = {msg->udp.peer_mac, msg->udp.peer_ip, msg->udp.peer_port};
	for (uint32_t i = 0; i < n; i++) {
		size_t off = (size_t)i * SL_UDP_CHUNK;
		size_t chunk = o->len - off < SL_UDP_CHUNK ? o->len - off : SL_UDP_CHUNK;
		struct rte_mbuf *m = ms[i];
		uint8_t *p = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(HDR_LEN + chunk));
		struct sl_frame f = {
		    .id = msg->udp.frame_id, .seq = (uint16_t)i, .count = (uint16_t)n};
		uint8_t *fr = write_headers(w, p, &to, &f, chunk);
		memcpy(fr, o->p + off, chunk);
		w->ex.st.bytes_written += chunk;
		sl_tx_push(&w->tx, m);
	}
	if (ms != stack)
		free(ms);
	sl_msg_put(w->ho, msg);
}

const struct sl_origin_ops sl_udp_origin = {
    .name = "udp",
    .lossless = false,
    .reply = udp_reply,
};
