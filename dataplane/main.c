/*
 * sluiced: one Sluice node.
 *
 *   sluiced [EAL options] -- [--ip ADDR/PREFIX] [--udp-port N] [--tcp HOST:PORT|off]
 *           [--memory MiB] [--workers N] [--max-item-size BYTES] [--port N]
 *           [--exception-port N --exception-netns NAME] [--busy-poll]
 *
 * Start-up follows DPDK's examples (rte_exit only while starting, a
 * force-quit flag set by SIGINT/SIGTERM, rte_eal_cleanup at the end).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "sluice/portguard.h"
#include "sluiced.h"

struct sl_app *sl_app;

static void usage(const char *prog)
{
	fprintf(stderr,
	        "usage: %s [EAL options] -- [options]\n"
	        "  --ip ADDR/PREFIX        dataplane IPv4 address (required)\n"
	        "  --udp-port N            memcached UDP port (default 11211)\n"
	        "  --tcp HOST:PORT|off     extra TCP listener (default 127.0.0.1:11211)\n"
	        "  --memory MiB            item memory, like memcached -m (default 64)\n"
	        "  --workers N             worker cores (default: all worker lcores)\n"
	        "  --max-item-size BYTES   largest item (default 1048576)\n"
	        "  --port N                DPDK port of the dataplane (default 0)\n"
	        "  --exception-port N      DPDK tap port towards the kernel (TCP, ARP, ...)\n"
	        "  --exception-netns NAME  move the exception tap into this netns, give it\n"
	        "                          the dataplane address and listen on TCP there\n"
	        "  --busy-poll             workers poll without ever sleeping when idle\n"
	        "                          (dedicated cores: no wake-up delay after a lull)\n",
	        prog);
}

static int parse_args(struct sl_config *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"ip", required_argument, NULL, 'i'},
	    {"udp-port", required_argument, NULL, 'u'},
	    {"tcp", required_argument, NULL, 't'},
	    {"memory", required_argument, NULL, 'm'},
	    {"workers", required_argument, NULL, 'w'},
	    {"max-item-size", required_argument, NULL, 'I'},
	    {"port", required_argument, NULL, 'p'},
	    {"exception-port", required_argument, NULL, 'e'},
	    {"exception-netns", required_argument, NULL, 'n'},
	    {"busy-poll", no_argument, NULL, 'b'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int o;
	char *end;
	bool have_ip = false;
	c->udp_port = 11211;
	c->tcp_on = true;
	snprintf(c->tcp_host, sizeof(c->tcp_host), "127.0.0.1");
	c->tcp_port = 11211;
	c->mem_mib = 64;
	c->max_item = 1024 * 1024;
	c->exc_port = -1;
	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'i': {
			char buf[64];
			snprintf(buf, sizeof(buf), "%s", optarg);
			char *slash = strchr(buf, '/');
			c->prefix = 24;
			if (slash) {
				*slash = 0;
				long p = strtol(slash + 1, &end, 10);
				if (*end || p < 1 || p > 32)
					return -1;
				c->prefix = (uint8_t)p;
			}
			struct in_addr ia;
			if (inet_pton(AF_INET, buf, &ia) != 1)
				return -1;
			c->ip = ia.s_addr;
			have_ip = true;
			break;
		}
		case 'u': {
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 65535)
				return -1;
			c->udp_port = (uint16_t)v;
			break;
		}
		case 't': {
			if (strcmp(optarg, "off") == 0) {
				c->tcp_on = false;
				break;
			}
			char *colon = strrchr(optarg, ':');
			if (!colon || colon == optarg ||
			    (size_t)(colon - optarg) >= sizeof(c->tcp_host))
				return -1;
			memcpy(c->tcp_host, optarg, (size_t)(colon - optarg));
			c->tcp_host[colon - optarg] = 0;
			long v = strtol(colon + 1, &end, 10);
			if (*end || v < 1 || v > 65535)
				return -1;
			c->tcp_port = (uint16_t)v;
			break;
		}
		case 'm': {
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 1024 * 1024)
				return -1;
			c->mem_mib = (size_t)v;
			break;
		}
		case 'w': {
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > (long)SL_MAX_WORKERS)
				return -1;
			c->workers = (unsigned)v;
			break;
		}
		case 'I': {
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1024 || v > 128L * 1024 * 1024)
				return -1;
			c->max_item = (size_t)v;
			break;
		}
		case 'p':
			c->port = (uint16_t)atoi(optarg);
			break;
		case 'e':
			c->exc_port = atoi(optarg);
			break;
		case 'n':
			snprintf(c->exc_netns, sizeof(c->exc_netns), "%s", optarg);
			break;
		case 'b':
			c->busy_poll = true;
			break;
		case 'v':
			c->verbose = true;
			break;
		default:
			return -1;
		}
	}
	return have_ip ? 0 : -1;
}

static void on_signal(int sig)
{
	(void)sig;
	if (sl_app)
		sl_app->quit = true;
}

static int port_init(struct sl_app *a, uint16_t port, uint16_t nrx, uint16_t ntx)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf = {0};
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc)
		return rc;
	if (nrx > info.max_rx_queues || ntx > info.max_tx_queues) {
		fprintf(stderr, "sluiced: port %u has %u rx / %u tx queues, need %u / %u\n", port,
		        info.max_rx_queues, info.max_tx_queues, nrx, ntx);
		return -EINVAL;
	}
	/* Spread requests over the workers' queues in hardware where the port
	 * can; any that land on the wrong core are handed over in software. */
	if (nrx > 1 && info.flow_type_rss_offloads) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf =
		    (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
	}
	rc = rte_eth_dev_configure(port, nrx, ntx, &conf);
	if (rc)
		return rc;
	uint16_t nb_rxd = 1024, nb_txd = 1024;
	rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
	for (uint16_t q = 0; q < nrx; q++) {
		rc = rte_eth_rx_queue_setup(port, q, nb_rxd, rte_eth_dev_socket_id(port), NULL,
		                            a->pktpool);
		if (rc)
			return rc;
	}
	for (uint16_t q = 0; q < ntx; q++) {
		rc = rte_eth_tx_queue_setup(port, q, nb_txd, rte_eth_dev_socket_id(port), NULL);
		if (rc)
			return rc;
	}
	rc = rte_eth_dev_start(port);
	if (rc)
		return rc;
	rte_eth_promiscuous_enable(port);
	return 0;
}

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "sluiced: '%s' failed (%d)\n", cmd, rc);
	return rc;
}

/*
 * The exception path: a tap whose kernel side carries the node's own MAC
 * and address, in a namespace of its own (so the kernel does not treat
 * local traffic as loopback). Traffic that is not fast-path UDP is passed
 * to it; what the kernel sends is put on the wire by the main lcore.
 */
static int exception_init(struct sl_app *a)
{
	struct sl_config *c = &a->cfg;
	int rc = port_init(a, (uint16_t)c->exc_port, 1, 1);
	if (rc)
		return rc;
	rte_eth_dev_default_mac_addr_set((uint16_t)c->exc_port, &a->mac);
	if (!c->exc_netns[0])
		return 0;
	struct rte_eth_dev_info info;
	char ifname[IF_NAMESIZE] = "";
	if (rte_eth_dev_info_get((uint16_t)c->exc_port, &info) != 0 || !info.if_index ||
	    !if_indextoname(info.if_index, ifname)) {
		fprintf(stderr, "sluiced: exception port has no kernel interface\n");
		return -ENODEV;
	}
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &c->ip, ip, sizeof(ip));
	if (run_cmd("ip link set dev %s netns %s", ifname, c->exc_netns) ||
	    run_cmd("ip -n %s addr add %s/%u dev %s", c->exc_netns, ip, c->prefix, ifname) ||
	    run_cmd("ip -n %s link set dev %s up", c->exc_netns, ifname) ||
	    run_cmd("ip -n %s link set dev lo up", c->exc_netns))
		return -EIO;
	return 0;
}

/* Move packets between the exception tap and the wire (main lcore). */
static void exception_poll(struct sl_app *a, bool *busy)
{
	struct rte_mbuf *pk[SL_BURST];
	unsigned n = rte_ring_sc_dequeue_burst(a->exc_ring, (void **)pk, SL_BURST, NULL);
	if (n) {
		uint16_t s = rte_eth_tx_burst((uint16_t)a->cfg.exc_port, 0, pk, (uint16_t)n);
		if (s < n) {
			a->main_st.drops[SL_DROP_tx_full] += n - s;
			rte_pktmbuf_free_bulk(pk + s, n - s);
		}
		*busy = true;
	}
	uint16_t k = rte_eth_rx_burst((uint16_t)a->cfg.exc_port, 0, pk, SL_BURST);
	if (k) {
		unsigned s = rte_ring_sp_enqueue_burst(a->wire_ring, (void **)pk, k, NULL);
		a->main_st.exception_pkts += k;
		if (s < k) {
			a->main_st.drops[SL_DROP_tx_full] += k - s;
			rte_pktmbuf_free_bulk(pk + s, k - s);
		}
		*busy = true;
	}
}

/* Shutdown: messages still in rings go back to the pool, packets still in
 * rings are freed, and every pooled message gives up its buffers. */
static void msg_free_buffers(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
	(void)mp;
	(void)arg;
	(void)idx;
	struct sl_msg *m = obj;
	sl_buf_release(&m->conv.out);
	free(m->heap_in);
	m->heap_in = NULL;
	m->heap_cap = 0;
}

static void drain(struct sl_app *a)
{
	void *objs[SL_BURST];
	unsigned n;
	for (unsigned f = 0; f <= a->node.nworkers; f++)
		for (unsigned t = 0; t <= a->node.nworkers; t++) {
			if (!a->ring[f][t])
				continue;
			while ((n = rte_ring_dequeue_burst(a->ring[f][t], objs, SL_BURST, NULL)))
				for (unsigned i = 0; i < n; i++)
					sl_msg_done(a, objs[i]);
		}
	struct rte_ring *pk[] = {a->exc_ring, a->wire_ring};
	for (unsigned r = 0; r < 2; r++)
		while ((n = rte_ring_dequeue_burst(pk[r], objs, SL_BURST, NULL)))
			rte_pktmbuf_free_bulk((struct rte_mbuf **)objs, n);
	rte_mempool_obj_iter(a->msgpool, msg_free_buffers, NULL);
}

static void msg_init(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
	(void)mp;
	(void)arg;
	(void)idx;
	memset(obj, 0, sizeof(struct sl_msg));
}

int main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv);
	if (ret < 0)
		rte_exit(EXIT_FAILURE, "EAL init failed\n");
	argc -= ret;
	argv += ret;

	static struct sl_app app;
	struct sl_app *a = &app;
	if (parse_args(&a->cfg, argc, argv) != 0) {
		usage("sluiced");
		rte_exit(EXIT_FAILURE, "bad arguments\n");
	}
	struct sl_config *c = &a->cfg;
	unsigned avail = rte_lcore_count() - 1;
	if (avail == 0)
		rte_exit(EXIT_FAILURE,
		         "need at least 2 lcores (main + 1 worker), e.g. --lcores 0@0,1@1\n");
	if (c->workers == 0)
		c->workers = avail;
	if (c->workers > avail)
		rte_exit(EXIT_FAILURE, "--workers %u but only %u worker lcores\n", c->workers,
		         avail);
	if (!rte_eth_dev_is_valid_port(c->port))
		rte_exit(EXIT_FAILURE, "no DPDK port %u (give one with --vdev)\n", c->port);
	if (c->exc_port >= 0 && !rte_eth_dev_is_valid_port((uint16_t)c->exc_port))
		rte_exit(EXIT_FAILURE, "no exception port %d\n", c->exc_port);
	sl_app = a;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	unsigned W = c->workers;
	a->pktpool = rte_pktmbuf_pool_create("sl_pkt", 16383 + 4096 * W, 256, 0,
	                                     RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	a->msgpool = rte_mempool_create("sl_msg", 8191, sizeof(struct sl_msg), 128, 0, NULL, NULL,
	                                msg_init, NULL, (int)rte_socket_id(), 0);
	a->exc_ring = rte_ring_create("sl_exc", SL_RING_SIZE, (int)rte_socket_id(), RING_F_SC_DEQ);
	a->wire_ring = rte_ring_create("sl_wire", SL_RING_SIZE, (int)rte_socket_id(),
	                               RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (!a->pktpool || !a->msgpool || !a->exc_ring || !a->wire_ring)
		rte_exit(EXIT_FAILURE, "cannot create pools: %s\n", rte_strerror(rte_errno));
	for (unsigned f = 0; f <= W; f++)
		for (unsigned t = 0; t <= W; t++) {
			if (f == t)
				continue;
			char name[32];
			snprintf(name, sizeof(name), "sl_r%u_%u", f, t);
			a->ring[f][t] = rte_ring_create(name, SL_RING_SIZE, (int)rte_socket_id(),
			                                RING_F_SP_ENQ | RING_F_SC_DEQ);
			if (!a->ring[f][t])
				rte_exit(EXIT_FAILURE, "ring: %s\n", rte_strerror(rte_errno));
		}

	if (port_init(a, c->port, (uint16_t)W, (uint16_t)W) != 0)
		rte_exit(EXIT_FAILURE, "cannot start port %u\n", c->port);
	rte_eth_macaddr_get(c->port, &a->mac);
	if (c->exc_port >= 0 && exception_init(a) != 0)
		rte_exit(EXIT_FAILURE, "cannot set up the exception path\n");

	/* the node: W stores, each with its share of memory */
	sl_slot_map_init(&a->map, W);
	a->node.nworkers = W;
	a->node.map = &a->map;
	a->node.main_st = &a->main_st;
	a->node.started = sl_now();
	a->node.mem_limit = c->mem_mib << 20;
	a->node.max_item = c->max_item;
	a->node.udp_port = c->udp_port;
	a->node.tcp_port = c->tcp_on ? c->tcp_port : 0;
	unsigned lc = rte_get_next_lcore(-1, 1, 0);
	for (unsigned i = 0; i < W; i++, lc = rte_get_next_lcore(lc, 1, 0)) {
		struct sl_worker *w = &a->workers[i];
		struct sl_store_conf sc = {.mem_limit = a->node.mem_limit / W,
		                           .max_item_size = c->max_item,
		                           .arena = SL_STORE_NEW_ARENA};
		w->idx = i;
		w->lcore = lc;
		w->ex.core = i;
		w->ex.node = &a->node;
		w->ex.store = sl_store_create(&sc);
		if (!w->ex.store)
			rte_exit(EXIT_FAILURE, "cannot create store %u\n", i);
		a->node.cores[i] = &w->ex;
		uint64_t hz = rte_get_tsc_hz();
		w->frag = rte_ip_frag_table_create(1024, 16, 4096, hz, (int)rte_socket_id());
		if (!w->frag)
			rte_exit(EXIT_FAILURE, "cannot create reassembly table\n");
	}
	if (sl_tcp_init(a) != 0)
		rte_exit(EXIT_FAILURE, "cannot start the TCP front end\n");
	/* before any worker polls a port (see include/sluice/portguard.h) */
	if (sl_guard_init(W) != 0)
		rte_exit(EXIT_FAILURE, "cannot set up the port guard\n");

	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &c->ip, ip, sizeof(ip));
	printf("sluiced: %s/%u udp port %u, %u worker(s), %zu MiB, mac " RTE_ETHER_ADDR_PRT_FMT
	       "\n",
	       ip, c->prefix, c->udp_port, W, c->mem_mib, RTE_ETHER_ADDR_BYTES(&a->mac));
	if (c->tcp_on)
		printf("sluiced: tcp on %s:%u\n", c->tcp_host, c->tcp_port);
	if (c->exc_netns[0])
		printf("sluiced: tcp on %s:%u in netns %s (exception path)\n", ip, c->udp_port,
		       c->exc_netns);
	printf("sluiced: ready\n");
	fflush(stdout);

	for (unsigned i = 0; i < W; i++)
		rte_eal_remote_launch(sl_worker_main, &a->workers[i], a->workers[i].lcore);

	/*
	 * The main lcore shares a CPU with a worker in small set-ups (the
	 * benchmarks give it the worker's), so it must not wake for nothing:
	 * every wake-up takes the CPU from the worker for two context
	 * switches. Once idle, it waits in epoll for the TCP sockets, which
	 * wake it at once; only the exception port, a DPDK port no file
	 * descriptor announces, needs polling, every SL_MAX_IDLE_US at most.
	 * Measured (get100 uniform, 1 worker sharing CPU 0, 3 rounds): waking
	 * every 1 ms cost 5% of throughput, 3.43 vs 3.60 Mops/s.
	 */
	unsigned idle = 0, sleep_us = 1;
	while (!a->quit) {
		bool busy = false;
		bool waited =
		    sl_tcp_poll(a, &busy, idle >= 64 && c->exc_port < 0 ? SL_MAIN_WAIT_MS : 0);
		if (c->exc_port >= 0)
			exception_poll(a, &busy);
		if (busy) {
			idle = 0;
			sleep_us = 1;
			continue;
		}
		/* Not spinning while a worker has a conversation: sharing its
		 * CPU, a spinning main lcore would keep the worker from
		 * running for milliseconds (measured: 7.8 ms per request). */
		if (++idle < 64 || waited)
			continue;
		usleep(sleep_us);
		if (sleep_us < SL_MAX_IDLE_US)
			sleep_us *= 2;
	}
	printf("sluiced: shutting down\n");
	rte_eal_mp_wait_lcore();
	sl_tcp_fini(a);
	drain(a);
	for (unsigned i = 0; i < W; i++) {
		sl_store_destroy(a->workers[i].ex.store);
		rte_ip_frag_table_destroy(a->workers[i].frag);
	}
	rte_eth_dev_stop(c->port);
	rte_eth_dev_close(c->port);
	if (c->exc_port >= 0) {
		rte_eth_dev_stop((uint16_t)c->exc_port);
		rte_eth_dev_close((uint16_t)c->exc_port);
	}
	rte_eal_cleanup();
	return 0;
}
