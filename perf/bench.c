/*
 * sluice-bench: a memcached-over-UDP load generator.
 *
 *   sluice-bench [EAL options] -- --mode dpdk|reflect [options]   (DPDK port 0)
 *   sluice-bench --mode kernel --server HOST:PORT [options]        (UDP socket)
 *
 * Modes
 *   dpdk     generate requests on DPDK port 0 (memif locally, a NIC on
 *            hardware) towards --server-ip, read replies on the same port
 *   kernel   the same workload through a kernel UDP socket with
 *            sendmmsg/recvmmsg, to drive stock memcached
 *   reflect  server side: swap addresses and send every packet back, the
 *            ceiling of the link itself
 *
 * Workload: --keys N (key i is "key:%0*d" padded to --key-size), --value-size,
 * --get-ratio, --multiget K (keys per get), --zipf A (0 = uniform), --preload
 * (set every key once before measuring), --duration S.
 * Load: closed loop with --window W outstanding requests (default), or open
 * loop at --rate OPS (requests sent on a TSC schedule whatever the replies).
 *
 * Latency: each request's 16-bit frame id indexes a table of send times
 * (TSC); the reply carries the id back. A request unanswered after
 * --timeout-us is counted as a timeout and its id reused. Histogram with 32
 * sub-buckets per power of two of nanoseconds (error < 3%).
 *
 * Flood (dpdk mode): --flood N sends, beside every measured request, N gets
 * from forged sources drawn at random in --flood-prefix (default
 * 198.19.0.0/16), as a reflection attack would; replies to them (the
 * server answers the source MAC, ours) are counted apart, bytes in and out,
 * and never measured.
 *
 * Output: a progress line per second on a terminal, a summary on stdout and
 * with --out FILE a JSON object.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rng.h"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "sluice/ipsum.h"
#include "sluice/portguard.h"

#define BURST 32
#define IDS 65536
#define FRAME 8

struct opts {
	char mode[16];
	char server[64];
	uint32_t server_ip, client_ip;
	uint16_t port;
	uint32_t keys;
	unsigned key_size, value_size, multiget;
	double get_ratio, zipf, duration, rate;
	unsigned window;
	bool preload;
	unsigned timeout_us;
	char out[256];
	char label[64];
	char pcap[256];
	unsigned flood;
	uint32_t flood_net, flood_mask; /* host order */
};

static struct opts O = {
    .mode = "dpdk",
    .port = 11211,
    .keys = 100000,
    .key_size = 16,
    .value_size = 64,
    .multiget = 1,
    .get_ratio = 0.95,
    .zipf = 0,
    .duration = 5,
    .window = 64,
    .timeout_us = 100000,
    .label = "run",
    .flood_net = 0xc6130000u, /* 198.19.0.0/16 */
    .flood_mask = 0xffff0000u,
};
static volatile bool quit;

/* ---- keys ------------------------------------------------------------- */

/*
 * Zipf sampling by table: ZT entries of the inverse CDF, so a draw is one
 * random index and one load (a binary search over 1M ranks costs ~20 cache
 * misses and made the generator the bottleneck). Ranks less likely than
 * 1/ZT are sampled as their neighbours; the mass is kept.
 */
#define ZT (1u << 22)
static uint32_t *ztab;
static double *zcdf;
static uint64_t rs = 0x9E3779B97F4A7C15ull;

/* Zipf draws are taken ZAHEAD draws after their table entry was
 * prefetched: the table (16 MiB) does not stay in cache, and a miss per
 * request held the generator to ~7.5 Mops/s, below the link. */
#define ZAHEAD 16
static uint32_t zring[ZAHEAD];
static unsigned zpos;

static inline uint64_t rnd(void)
{
	return perf_xorshift(&rs);
}

static void zipf_init(void)
{
	if (O.zipf <= 0)
		return;
	zcdf = malloc(sizeof(double) * O.keys);
	double sum = 0, acc = 0;
	for (uint32_t i = 0; i < O.keys; i++)
		sum += 1.0 / pow(i + 1.0, O.zipf);
	for (uint32_t i = 0; i < O.keys; i++) {
		acc += 1.0 / pow(i + 1.0, O.zipf) / sum;
		zcdf[i] = acc;
	}
	ztab = malloc(sizeof(uint32_t) * ZT);
	uint32_t r = 0;
	for (uint32_t i = 0; i < ZT; i++) {
		double u = (i + 0.5) / ZT;
		while (r + 1 < O.keys && zcdf[r] < u)
			r++;
		/* rank -> key: popular keys spread over the key space */
		ztab[i] = (uint32_t)(((uint64_t)r * 2654435761u) % O.keys);
	}
	free(zcdf);
	zcdf = NULL;
	for (unsigned i = 0; i < ZAHEAD; i++)
		zring[i] = (uint32_t)(rnd() & (ZT - 1));
}

static uint32_t next_key(void)
{
	if (!ztab) /* multiply-shift: a 64-bit modulo was ~40 cycles */
		return (uint32_t)(((rnd() >> 32) * O.keys) >> 32);
	uint32_t *slot = &zring[zpos++ & (ZAHEAD - 1)], k = ztab[*slot];
	*slot = (uint32_t)(rnd() & (ZT - 1));
	__builtin_prefetch(&ztab[*slot]);
	return k;
}

/* The next request of the workload: during the preload a set of each key
 * in turn (false when all are done), otherwise the get:set mix. */
static bool next_request(bool preload, uint32_t *pk, bool *set, uint32_t *k)
{
	if (preload) {
		if (*pk >= O.keys)
			return false;
		*set = true;
		*k = (*pk)++;
		return true;
	}
	/* (x >> 11) / 2^53 >= ratio, without the division */
	*set = (double)(rnd() >> 11) >= O.get_ratio * 9007199254740992.0;
	*k = next_key();
	return true;
}

/* "key:" and k in decimal, zero-padded to key_size - 4 digits (at least
 * one): what sprintf("key:%0*u") writes, at a tenth of its cost (sprintf
 * was 40% of the generator's time, and the generator set the "link"
 * ceiling). */
static int put_key(char *p, uint32_t k)
{
	unsigned w = O.key_size > 4 ? O.key_size - 4 : 1, d = 1;
	for (uint32_t x = k; x >= 10; x /= 10)
		d++;
	if (d < w)
		d = w;
	memcpy(p, "key:", 4);
	for (char *q = p + 4 + d; q > p + 4; k /= 10)
		*--q = (char)('0' + k % 10);
	return 4 + (int)d;
}

static char *value;
static char set_tail[48]; /* " 0 0 <value size> noreply\r\n" */
static int set_tail_len;

/* Request text for a get (multiget keys) or a set of key k. */
static int make_request(char *p, bool set, uint32_t k)
{
	int n = 0;
	if (set) {
		memcpy(p, "set ", 4);
		n = 4 + put_key(p + 4, k);
		memcpy(p + n, set_tail, (size_t)set_tail_len);
		n += set_tail_len;
		memcpy(p + n, value, O.value_size);
		n += (int)O.value_size;
		memcpy(p + n, "\r\nmn\r\n", 6); /* mn: a one-line answer to time */
		return n + 6;
	}
	memcpy(p, "get", 3);
	n = 3;
	for (unsigned i = 0; i < O.multiget; i++) {
		p[n++] = ' ';
		n += put_key(p + n, i ? next_key() : k);
	}
	memcpy(p + n, "\r\n", 2);
	return n + 2;
}

/* ---- latency histogram -------------------------------------------------- */

/*
 * Buckets: below 32 ns one per nanosecond; above, 32 per power of two:
 * a value v >= 32 with e = floor(log2 v) - 5 has mantissa m = v >> e in
 * [32, 64) and lands in bucket e * 32 + m. The bucket's value is m << e
 * (relative error below 1/32).
 */
#define SUB 32
#define NBUCKETS (60 * SUB)
static uint64_t hist[NBUCKETS];
static uint64_t lat_max, lat_n;

static void hist_add(uint64_t ns)
{
	unsigned b = (unsigned)ns;
	if (ns >= SUB) {
		unsigned e = 63 - (unsigned)__builtin_clzll(ns) - 5;
		b = e * SUB + (unsigned)(ns >> e);
	}
	if (b >= NBUCKETS)
		b = NBUCKETS - 1;
	hist[b]++;
	lat_n++;
	if (ns > lat_max)
		lat_max = ns;
}

/* The q-quantile in microseconds. */
static double hist_q(double q)
{
	uint64_t want = (uint64_t)ceil(q * (double)lat_n), acc = 0;
	if (!lat_n)
		return 0;
	for (unsigned b = 0; b < NBUCKETS; b++) {
		acc += hist[b];
		if (acc >= want && hist[b]) {
			uint64_t v = b < 2 * SUB ? b : (uint64_t)(b % SUB + SUB) << (b / SUB - 1);
			return (v < lat_max ? v : lat_max) / 1000.0;
		}
	}
	return lat_max / 1000.0;
}

/* ---- in-flight table ---------------------------------------------------- */

struct slot {
	uint64_t t0;   /* TSC at send, 0 = free */
	uint16_t need; /* datagrams expected (0 = unknown yet) */
	uint16_t got;
};
static struct slot inflight[IDS];
static uint16_t next_id;
static unsigned outstanding;
static uint64_t hz, sent, done, timeouts, bad, bytes_in;
static uint64_t flood_sent, flood_bytes_sent, flood_replies, flood_bytes_received;
/* from hz, once: a 64-bit division per request cost ~40 cycles */
static uint64_t timeout_ticks, ns_per_tick_q32; /* ns per tick times 2^32 */

static int take_id(uint64_t now)
{
	for (unsigned tries = 0; tries < IDS; tries++) {
		uint16_t id = next_id++;
		struct slot *s = &inflight[id];
		if (s->t0 && now - s->t0 > timeout_ticks) {
			timeouts++;
			outstanding--;
			s->t0 = 0;
		}
		if (!s->t0) {
			s->t0 = now;
			s->need = s->got = 0;
			outstanding++;
			return id;
		}
	}
	return -1;
}

/* A reply datagram with frame header @p f arrived at TSC @p now. */
static void on_reply(const uint8_t *f, size_t len, uint64_t now, bool measure)
{
	if (len < FRAME) {
		bad++;
		return;
	}
	uint16_t id = (uint16_t)(f[0] << 8 | f[1]);
	uint16_t cnt = (uint16_t)(f[4] << 8 | f[5]);
	struct slot *s = &inflight[id];
	if (!s->t0) {
		bad++; /* late, after a timeout */
		return;
	}
	bytes_in += len;
	s->need = cnt ? cnt : 1;
	if (++s->got < s->need)
		return;
	if (measure)
		hist_add((uint64_t)(((unsigned __int128)(now - s->t0) * ns_per_tick_q32) >> 32));
	s->t0 = 0;
	outstanding--;
	done++;
}

/* ---- DPDK mode ---------------------------------------------------------- */

/* memcached's UDP frame header of a request: id, seq 0 of 1 */
static void put_frame(uint8_t *fr, uint16_t id)
{
	fr[0] = (uint8_t)(id >> 8);
	fr[1] = (uint8_t)id;
	fr[2] = fr[3] = fr[4] = fr[6] = fr[7] = 0;
	fr[5] = 1;
}

static struct rte_mempool *pool;
static struct rte_ether_addr my_mac;
static const struct rte_ether_addr bcast = {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

#define REQUEST_TTL 64

/* One request as an Ethernet frame at @p p; returns its length. */
static size_t fill_frame(uint8_t *p, bool set, uint32_t k, uint16_t id)
{
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)p;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	uint8_t *fr = (uint8_t *)(udp + 1);
	int n = make_request((char *)fr + FRAME, set, k);
	put_frame(fr, id);
	/* point to point: the server answers the source MAC, so broadcast is
	 * enough as destination and no ARP exchange is needed */
	eth->dst_addr = bcast;
	eth->src_addr = my_mac;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	uint16_t udplen = (uint16_t)(sizeof(*udp) + FRAME + n);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->type_of_service = 0;
	rte_be16_t iplen = rte_cpu_to_be_16((uint16_t)(sizeof(*ip) + udplen));
	ip->total_length = iplen;
	ip->packet_id = 0;
	ip->fragment_offset = 0;
	ip->time_to_live = REQUEST_TTL;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = O.client_ip;
	ip->dst_addr = O.server_ip;
	ip->hdr_checksum =
	    sl_ipv4_cksum(iplen, 0, REQUEST_TTL, IPPROTO_UDP, O.client_ip, O.server_ip);
	udp->src_port = rte_cpu_to_be_16((uint16_t)(20000 + (id & 1023)));
	udp->dst_port = rte_cpu_to_be_16(O.port);
	udp->dgram_len = rte_cpu_to_be_16(udplen);
	udp->dgram_cksum = 0;
	return sizeof(*eth) + sizeof(*ip) + udplen;
}

static struct rte_mbuf *build_pkt(bool set, uint32_t k, uint16_t id)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (!m)
		return NULL;
	size_t len = fill_frame(rte_pktmbuf_mtod(m, uint8_t *), set, k, id);
	m->data_len = m->pkt_len = (uint32_t)len;
	return m;
}

/*
 * --write-pcap FILE: the workload's request stream (the preload's sets
 * first when --preload is given, then --count requests of the mix) as a
 * classic pcap file, for pktgen-dpdk, TRex, tcpreplay or testpmd's net_pcap.
 */
static unsigned long pcap_count = 100000;

static int write_pcap(const char *path)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	struct {
		uint32_t magic;
		uint16_t major, minor;
		int32_t zone;
		uint32_t sigfigs, snaplen, linktype;
	} gh = {0xa1b2c3d4, 2, 4, 0, 0, 65535, 1};
	fwrite(&gh, sizeof(gh), 1, f);
	static uint8_t frame[2048];
	unsigned long n = 0, total = (O.preload ? O.keys : 0) + pcap_count;
	uint32_t pk = 0;
	for (unsigned long i = 0; i < total; i++) {
		bool set;
		uint32_t k;
		next_request(O.preload && pk < O.keys, &pk, &set, &k);
		uint32_t len = (uint32_t)fill_frame(frame, set, k, (uint16_t)i);
		uint32_t rec[4] = {(uint32_t)(i / 1000000), (uint32_t)(i % 1000000), len, len};
		fwrite(rec, sizeof(rec), 1, f);
		fwrite(frame, len, 1, f);
		n++;
	}
	fclose(f);
	printf("wrote %lu requests to %s\n", n, path);
	return 0;
}

static void dpdk_rx(uint64_t now, bool measure)
{
	struct rte_mbuf *rx[BURST];
	/* each pass of the preload and measure loops comes here once, and
	 * holds nothing of the port's (see include/sluice/portguard.h) */
	sl_guard_quiescent(0);
	uint16_t n = rte_eth_rx_burst(0, 0, rx, BURST);
	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = rx[i];
		size_t hdr = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
		             sizeof(struct rte_udp_hdr);
		struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
		const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(eth + 1);
		if (m->data_len >= hdr &&
		    eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) &&
		    ip->dst_addr != O.client_ip) {
			/* a reply to a forged source of the flood */
			flood_replies++;
			flood_bytes_received += rte_be_to_cpu_16(ip->total_length);
		} else if (m->data_len >= hdr &&
		           eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
			on_reply(rte_pktmbuf_mtod_offset(m, uint8_t *, hdr), m->data_len - hdr, now,
			         measure);
		rte_pktmbuf_free(m);
	}
}

/* The requests of one burst: what to send and the id each one got. */
struct pick {
	bool set;
	uint32_t k;
	uint16_t id;
};

/* Choose up to @p max (<= BURST) requests and take an id for each. */
static unsigned pick_burst(unsigned max, bool preload, uint32_t *pk, struct pick *p)
{
	unsigned n = 0;
	uint64_t now = rte_rdtsc();
	while (n < max && n < BURST) {
		if (!next_request(preload, pk, &p[n].set, &p[n].k))
			break;
		int id = take_id(now);
		if (id < 0)
			break;
		p[n++].id = (uint16_t)id;
	}
	return n;
}

/* An id whose request never left: give it back. */
static void release_id(uint16_t id)
{
	inflight[id].t0 = 0;
	outstanding--;
}

/* @p n gets from forged sources in --flood-prefix (see the top). */
static void flood(unsigned n)
{
	static uint64_t x = 0x2545f4914f6cdd1du;
	struct rte_mbuf *tx[BURST];
	while (n) {
		unsigned b = n < BURST ? n : BURST, built = 0;
		for (; built < b; built++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			struct rte_mbuf *m = build_pkt(false, (uint32_t)(x >> 40) % O.keys, 0);
			if (!m)
				break;
			struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(
			    m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
			uint32_t src =
			    rte_cpu_to_be_32(O.flood_net | ((uint32_t)x & ~O.flood_mask));
			ip->src_addr = src;
			ip->hdr_checksum = sl_ipv4_cksum(ip->total_length, 0, REQUEST_TTL,
			                                 IPPROTO_UDP, src, O.server_ip);
			tx[built] = m;
		}
		uint16_t s = rte_eth_tx_burst(0, 0, tx, (uint16_t)built);
		for (unsigned i = 0; i < s; i++)
			flood_bytes_sent +=
			    rte_pktmbuf_pkt_len(tx[i]) - sizeof(struct rte_ether_hdr);
		for (unsigned i = s; i < built; i++)
			rte_pktmbuf_free(tx[i]);
		flood_sent += s;
		if (s < built || built < b)
			return; /* the link is full: the flood yields */
		n -= b;
	}
}

/* Send up to @p max requests now; returns how many. */
static unsigned dpdk_send(unsigned max, bool preload, uint32_t *pk)
{
	struct rte_mbuf *tx[BURST];
	struct pick p[BURST];
	unsigned n = pick_burst(max, preload, pk, p), built = 0;
	for (; built < n; built++) {
		tx[built] = build_pkt(p[built].set, p[built].k, p[built].id);
		if (!tx[built])
			break;
	}
	uint16_t s = rte_eth_tx_burst(0, 0, tx, (uint16_t)built);
	for (unsigned i = s; i < built; i++)
		rte_pktmbuf_free(tx[i]);
	for (unsigned i = s; i < n; i++)
		release_id(p[i].id); /* never left */
	sent += s;
	if (O.flood && !preload)
		flood(s * O.flood);
	return s;
}

static void reflect_loop(void)
{
	struct rte_mbuf *rx[BURST];
	uint64_t n_total = 0;
	unsigned idle = 0;
	while (!quit) {
		sl_guard_quiescent(0);
		uint16_t n = rte_eth_rx_burst(0, 0, rx, BURST);
		if (n == 0) {
			/* yield now and then: DPDK's interrupt thread, which
			 * accepts memif connections, may share this CPU */
			if (++idle > (1u << 22)) {
				/* long idle: between runs */
				sl_guard_offline(0);
				usleep(100);
				sl_guard_online(0);
			}
			continue;
		}
		idle = 0;
		for (uint16_t i = 0; i < n; i++) {
			struct rte_ether_hdr *eth = rte_pktmbuf_mtod(rx[i], struct rte_ether_hdr *);
			struct rte_ether_addr t = eth->src_addr;
			eth->src_addr = eth->dst_addr;
			eth->dst_addr = t;
			if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
				struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
				uint32_t a = ip->src_addr;
				ip->src_addr = ip->dst_addr;
				ip->dst_addr = a;
				struct rte_udp_hdr *u = (struct rte_udp_hdr *)(ip + 1);
				uint16_t p = u->src_port;
				u->src_port = u->dst_port;
				u->dst_port = p;
			}
		}
		uint16_t s = rte_eth_tx_burst(0, 0, rx, n);
		for (uint16_t i = s; i < n; i++)
			rte_pktmbuf_free(rx[i]);
		n_total += s;
	}
	printf("reflected %lu packets\n", (unsigned long)n_total);
}

/* ---- kernel mode ---------------------------------------------------------- */

static int ksock = -1;

static void kernel_rx(uint64_t now, bool measure)
{
	struct mmsghdr msgs[BURST];
	struct iovec iov[BURST];
	static uint8_t bufs[BURST][2048];
	for (int i = 0; i < BURST; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]);
		memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	int n = recvmmsg(ksock, msgs, BURST, MSG_DONTWAIT, NULL);
	for (int i = 0; i < n; i++)
		on_reply(bufs[i], msgs[i].msg_len, now, measure);
}

static unsigned kernel_send(unsigned max, bool preload, uint32_t *pk)
{
	struct mmsghdr msgs[BURST];
	struct iovec iov[BURST];
	static char bufs[BURST][2048];
	struct pick p[BURST];
	unsigned n = pick_burst(max, preload, pk, p);
	for (unsigned i = 0; i < n; i++) {
		put_frame((uint8_t *)bufs[i], p[i].id);
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = (size_t)(FRAME + make_request(bufs[i] + FRAME, p[i].set, p[i].k));
		memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	int s = n ? sendmmsg(ksock, msgs, n, 0) : 0;
	if (s < 0)
		s = 0;
	for (unsigned i = (unsigned)s; i < n; i++)
		release_id(p[i].id); /* never left */
	sent += (unsigned)s;
	return (unsigned)s;
}

/* ---- the run ---------------------------------------------------------------- */

static bool kernel;

static void pump_rx(uint64_t now, bool measure)
{
	if (kernel)
		kernel_rx(now, measure);
	else
		dpdk_rx(now, measure);
}

static unsigned pump_tx(unsigned max, bool preload, uint32_t *pk)
{
	return kernel ? kernel_send(max, preload, pk) : dpdk_send(max, preload, pk);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void preload(void)
{
	uint32_t k = 0;
	double t0 = now_s();
	while (!quit && (k < O.keys || outstanding)) {
		unsigned room = O.window > outstanding ? O.window - outstanding : 0;
		if (k < O.keys && room)
			pump_tx(room, true, &k);
		pump_rx(rte_rdtsc(), false);
		if (now_s() - t0 > 120)
			break;
	}
	fprintf(stderr, "preloaded %u keys in %.1f s (%lu timeouts)\n", k, now_s() - t0,
	        (unsigned long)timeouts);
	timeouts = 0;
}

static void measure(void)
{
	bool tty = isatty(2);
	double t0 = now_s(), last = t0;
	uint64_t last_done = 0;
	uint64_t tsc0 = rte_rdtsc(), per = O.rate > 0 ? (uint64_t)(hz / O.rate) : 0;
	uint64_t due = tsc0;
	sent = done = 0;
	while (!quit) {
		double t = now_s();
		if (t - t0 >= O.duration)
			break;
		if (O.rate > 0) {
			/* open loop: send what the schedule says is due */
			uint64_t now = rte_rdtsc();
			unsigned want = 0;
			while (due <= now && want < BURST) {
				due += per;
				want++;
			}
			if (want)
				pump_tx(want, false, NULL);
		} else if (outstanding < O.window) {
			pump_tx(O.window - outstanding, false, NULL);
		}
		pump_rx(rte_rdtsc(), true);
		if (tty && t - last >= 1) {
			fprintf(stderr, "\r%6.1f s  %10.0f ops/s  outstanding %5u  timeouts %lu   ",
			        t - t0, (done - last_done) / (t - last), outstanding,
			        (unsigned long)timeouts);
			last = t;
			last_done = done;
		}
	}
	double el = now_s() - t0;
	/* drain what is still in flight, without counting it */
	double d0 = now_s();
	while (outstanding && now_s() - d0 < 0.2)
		pump_rx(rte_rdtsc(), false);
	if (tty)
		fprintf(stderr, "\n");
	double ops = done / el;
	printf("%s: %.0f ops/s, %lu done, %lu sent, %lu timeouts, %lu bad; latency us p50 %.1f "
	       "p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n",
	       O.label, ops, (unsigned long)done, (unsigned long)sent, (unsigned long)timeouts,
	       (unsigned long)bad, hist_q(0.5), hist_q(0.9), hist_q(0.99), hist_q(0.999),
	       lat_max / 1000.0);
	if (O.out[0]) {
		FILE *f = fopen(O.out, "w");
		if (f) {
			fprintf(
			    f,
			    "{\"label\":\"%s\",\"mode\":\"%s\",\"ops_per_sec\":%.1f,\"done\":%lu,"
			    "\"sent\":%lu,\"timeouts\":%lu,\"bad\":%lu,\"duration_s\":%.3f,"
			    "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,"
			    "\"max_us\":%.2f,\"keys\":%u,\"key_size\":%u,\"value_size\":%u,"
			    "\"get_ratio\":%.3f,\"zipf\":%.2f,\"multiget\":%u,\"window\":%u,"
			    "\"rate\":%.0f,\"flood\":%u,\"flood_sent\":%lu,"
			    "\"flood_bytes_sent\":%lu,\"flood_replies\":%lu,"
			    "\"flood_bytes_received\":%lu,\"cdf\":[",
			    O.label, O.mode, ops, (unsigned long)done, (unsigned long)sent,
			    (unsigned long)timeouts, (unsigned long)bad, el, hist_q(0.5),
			    hist_q(0.9), hist_q(0.99), hist_q(0.999), lat_max / 1000.0, O.keys,
			    O.key_size, O.value_size, O.get_ratio, O.zipf, O.multiget, O.window,
			    O.rate, O.flood, (unsigned long)flood_sent,
			    (unsigned long)flood_bytes_sent, (unsigned long)flood_replies,
			    (unsigned long)flood_bytes_received);
			static const double qs[] = {0.01, 0.05, 0.1, 0.2,  0.3,  0.4,   0.5,   0.6,
			                            0.7,  0.8,  0.9, 0.95, 0.99, 0.995, 0.999, 1.0};
			for (unsigned i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
				fprintf(f, "%s[%.2f,%.4f]", i ? "," : "", hist_q(qs[i]), qs[i]);
			fprintf(f, "]}\n");
			fclose(f);
		}
	}
}

static void on_sig(int s)
{
	(void)s;
	quit = true;
}

static int parse(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"mode", 1, 0, 'm'},
	    {"server", 1, 0, 's'},
	    {"server-ip", 1, 0, 'S'},
	    {"client-ip", 1, 0, 'C'},
	    {"port", 1, 0, 'p'},
	    {"keys", 1, 0, 'k'},
	    {"key-size", 1, 0, 'K'},
	    {"value-size", 1, 0, 'v'},
	    {"get-ratio", 1, 0, 'g'},
	    {"multiget", 1, 0, 'M'},
	    {"zipf", 1, 0, 'z'},
	    {"duration", 1, 0, 'd'},
	    {"rate", 1, 0, 'r'},
	    {"window", 1, 0, 'w'},
	    {"preload", 0, 0, 'P'},
	    {"timeout-us", 1, 0, 't'},
	    {"out", 1, 0, 'o'},
	    {"label", 1, 0, 'l'},
	    {"flood", 1, 0, 'F'},
	    {"flood-prefix", 1, 0, 'X'},
	    {"write-pcap", 1, 0, 'W'},
	    {"count", 1, 0, 'c'},
	    {0, 0, 0, 0},
	};
	int c;
	struct in_addr ia;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			snprintf(O.mode, sizeof(O.mode), "%s", optarg);
			break;
		case 's':
			snprintf(O.server, sizeof(O.server), "%s", optarg);
			break;
		case 'S':
			if (inet_pton(AF_INET, optarg, &ia) != 1)
				return -1;
			O.server_ip = ia.s_addr;
			break;
		case 'C':
			if (inet_pton(AF_INET, optarg, &ia) != 1)
				return -1;
			O.client_ip = ia.s_addr;
			break;
		case 'p':
			O.port = (uint16_t)atoi(optarg);
			break;
		case 'k':
			O.keys = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'K':
			O.key_size = (unsigned)atoi(optarg);
			break;
		case 'v':
			O.value_size = (unsigned)atoi(optarg);
			break;
		case 'g':
			O.get_ratio = atof(optarg);
			break;
		case 'M':
			O.multiget = (unsigned)atoi(optarg);
			break;
		case 'z':
			O.zipf = atof(optarg);
			break;
		case 'd':
			O.duration = atof(optarg);
			break;
		case 'r':
			O.rate = atof(optarg);
			break;
		case 'w':
			O.window = (unsigned)atoi(optarg);
			break;
		case 'P':
			O.preload = true;
			break;
		case 't':
			O.timeout_us = (unsigned)atoi(optarg);
			break;
		case 'F':
			O.flood = (unsigned)atoi(optarg);
			break;
		case 'X': {
			char b[32];
			snprintf(b, sizeof(b), "%s", optarg);
			char *sl = strchr(b, '/');
			int bits = sl ? atoi(sl + 1) : 32;
			if (sl)
				*sl = 0;
			struct in_addr ia;
			if (inet_pton(AF_INET, b, &ia) != 1 || bits < 1 || bits > 32) {
				fprintf(stderr, "--flood-prefix: A.B.C.D/N\n");
				return -1;
			}
			O.flood_mask = ~0u << (32 - bits);
			O.flood_net = ntohl(ia.s_addr) & O.flood_mask;
			break;
		}
		case 'o':
			snprintf(O.out, sizeof(O.out), "%s", optarg);
			break;
		case 'l':
			snprintf(O.label, sizeof(O.label), "%s", optarg);
			break;
		case 'W':
			snprintf(O.pcap, sizeof(O.pcap), "%s", optarg);
			break;
		case 'c':
			pcap_count = strtoul(optarg, NULL, 10);
			break;
		default:
			return -1;
		}
	}
	if (O.keys == 0 || O.window == 0 || O.window > IDS / 2 || O.value_size > 1300 ||
	    O.key_size < 5 || O.key_size > 200 || O.multiget == 0 || O.multiget > 20)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	bool kmode = false, pmode = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc && !strcmp(argv[i + 1], "kernel"))
			kmode = true;
		if (!strcmp(argv[i], "--write-pcap"))
			pmode = true;
	}
	if (!kmode && !pmode) {
		int r = rte_eal_init(argc, argv);
		if (r < 0)
			rte_exit(EXIT_FAILURE, "EAL init failed\n");
		argc -= r;
		argv += r;
	}
	if (parse(argc, argv) != 0) {
		fprintf(stderr, "usage: see the comment at the top of perf/bench.c\n");
		return 2;
	}
	signal(SIGINT, on_sig);
	signal(SIGTERM, on_sig);
	value = malloc(O.value_size);
	memset(value, 'x', O.value_size);
	set_tail_len = snprintf(set_tail, sizeof(set_tail), " 0 0 %u noreply\r\n", O.value_size);
	zipf_init();
	if (pmode) {
		static const struct rte_ether_addr gen = {{0x02, 0, 0, 0, 0, 0x02}};
		my_mac = gen;
		return write_pcap(O.pcap) == 0 ? 0 : 1;
	}
	hz = rte_get_tsc_hz();
	if (!hz) {
		/* kernel mode without EAL: calibrate the TSC against the clock */
		uint64_t c0 = rte_rdtsc();
		double t0 = now_s();
		usleep(100000);
		hz = (uint64_t)((rte_rdtsc() - c0) / (now_s() - t0));
	}
	timeout_ticks = O.timeout_us * hz / 1000000;
	ns_per_tick_q32 = (uint64_t)(((unsigned __int128)1000000000u << 32) / hz);
	if (kmode) {
		kernel = true;
		char host[64];
		snprintf(host, sizeof(host), "%s", O.server);
		char *colon = strrchr(host, ':');
		if (!colon)
			return 2;
		*colon = 0;
		struct sockaddr_in sa = {.sin_family = AF_INET,
		                         .sin_port = htons((uint16_t)atoi(colon + 1))};
		if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
			return 2;
		ksock = socket(AF_INET, SOCK_DGRAM, 0);
		int big = 8 << 20;
		setsockopt(ksock, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
		setsockopt(ksock, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
		if (connect(ksock, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			perror("connect");
			return 1;
		}
	} else {
		if (!rte_eth_dev_is_valid_port(0))
			rte_exit(EXIT_FAILURE, "no DPDK port 0\n");
		pool = rte_pktmbuf_pool_create("bench", 16383, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
		                               (int)rte_socket_id());
		struct rte_eth_conf conf = {0};
		uint16_t rxd = 1024, txd = 1024;
		if (!pool || rte_eth_dev_configure(0, 1, 1, &conf) ||
		    rte_eth_dev_adjust_nb_rx_tx_desc(0, &rxd, &txd) ||
		    rte_eth_rx_queue_setup(0, 0, rxd, rte_socket_id(), NULL, pool) ||
		    rte_eth_tx_queue_setup(0, 0, txd, rte_socket_id(), NULL) ||
		    rte_eth_dev_start(0))
			rte_exit(EXIT_FAILURE, "cannot start port 0\n");
		rte_eth_promiscuous_enable(0);
		rte_eth_macaddr_get(0, &my_mac);
		if (sl_guard_init(1) != 0)
			rte_exit(EXIT_FAILURE, "cannot set up the port guard\n");
		sl_guard_enter(0);
		if (!strcmp(O.mode, "reflect")) {
			printf("reflecting on port 0\n");
			fflush(stdout);
			reflect_loop();
			sl_guard_leave(0);
			rte_eth_dev_stop(0);
			rte_eal_cleanup();
			return 0;
		}
		/* wait for the link (memif connects when both ends are up) */
		struct rte_eth_link link;
		sl_guard_offline(0);
		for (int i = 0; i < 100 && !quit; i++) {
			rte_eth_link_get_nowait(0, &link);
			if (link.link_status)
				break;
			usleep(100000);
		}
		sl_guard_online(0);
	}
	if (O.preload)
		preload();
	measure();
	if (!kernel) {
		struct rte_eth_stats es;
		if (rte_eth_stats_get(0, &es) == 0)
			printf(
			    "port 0: ipackets %lu opackets %lu imissed %lu ierrors %lu oerrors %lu "
			    "rx_nombuf %lu\n",
			    (unsigned long)es.ipackets, (unsigned long)es.opackets,
			    (unsigned long)es.imissed, (unsigned long)es.ierrors,
			    (unsigned long)es.oerrors, (unsigned long)es.rx_nombuf);
		sl_guard_leave(0);
		rte_eth_dev_stop(0);
		rte_eal_cleanup();
	}
	return 0;
}
