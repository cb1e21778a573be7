/*
 * sluiced internals shared by main.c, worker.c, net.c and tcp.c.
 *
 * Threads and who owns what:
 *
 *   main lcore: TCP front end (kernel sockets, epoll), exception path
 *               (port <-> kernel tap), statistics readers
 *   worker k:   RX queue k and TX queue k of the port, store k, its
 *               IP reassembly table, its counters
 *
 * Messages between them are sl_msg objects from one mempool, moved through
 * single-producer single-consumer rte_rings: ring[from][to], where index
 * nworkers stands for the main lcore. Exception packets from all workers go
 * to the main lcore through one multi-producer ring; packets the kernel
 * sends come back through another, and worker 0 puts them on the wire (some
 * ports, net_tap among them, need as many RX as TX queues, so the main
 * lcore gets no TX queue of its own).
 *
 *            ring[0][1]            ring[W][k] (TCP requests)
 *   worker0 ------------> worker1 <------------ main
 *           <------------          ------------>
 *            ring[1][0]            ring[k][W] (TCP replies)
 */
#ifndef SLUICED_H
#define SLUICED_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_ethdev.h>
#include <rte_ip_frag.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include "sluice/exec.h"
#include "sluice/frame.h"

#define SL_BURST 32
#define SL_RING_SIZE 1024
#define SL_MAX_IDLE_US                                                                             \
	1000 /* longest idle sleep: the first request after a quiet spell waits at most this */
/* longest wait of an idle main lcore in epoll: how long a stop signal
 * delivered to another thread may wait to be seen */
#define SL_MAIN_WAIT_MS 100

enum sl_origin { SL_ORIGIN_UDP = 0, SL_ORIGIN_TCP = 1 };

/* A request on its way between cores, with where its reply must go. */
struct sl_msg {
	struct sl_conv conv;
	struct rte_mbuf *m; /* UDP: the request packet (input may point into it) */
	char *heap_in;      /* input copied out of a chained mbuf or a socket */
	uint32_t heap_cap;
	uint8_t origin;
	/* UDP reply addressing, taken from the request */
	struct rte_ether_addr peer_mac;
	uint32_t peer_ip;   /* network order */
	uint16_t peer_port; /* network order */
	uint16_t frame_id;
	/* TCP: which connection (slot and generation, to spot reuse) */
	uint32_t conn;
	uint32_t conn_gen;
};

struct sl_config {
	uint16_t port;
	int exc_port; /* -1: no exception path */
	char exc_netns[64];
	uint32_t ip; /* network order */
	uint8_t prefix;
	uint16_t udp_port;
	char tcp_host[64];
	uint16_t tcp_port;
	bool tcp_on;
	size_t mem_mib;
	unsigned workers;
	size_t max_item;
	bool busy_poll; /* workers never sleep when idle (dedicated cores) */
	bool verbose;
};

struct sl_worker {
	unsigned idx;
	unsigned lcore;
	struct sl_exec ex;
	struct rte_ip_frag_tbl *frag;
	struct rte_ip_frag_death_row dr;
	struct rte_mbuf *tx[SL_BURST * 4];
	unsigned ntx;
	uint32_t now;   /* unix seconds, read once per loop iteration */
	uint16_t ip_id; /* IPv4 id of the next datagram sent */
} __rte_cache_aligned;

struct sl_app {
	struct sl_config cfg;
	struct rte_ether_addr mac;
	struct rte_mempool *pktpool;
	struct rte_mempool *msgpool;
	struct rte_ring *ring[SL_MAX_WORKERS + 1][SL_MAX_WORKERS + 1];
	struct rte_ring *exc_ring;  /* workers -> main: packets for the kernel */
	struct rte_ring *wire_ring; /* main -> worker 0: what the kernel sends out */
	struct sl_worker workers[SL_MAX_WORKERS];
	struct sl_node node;
	struct sl_slot_map map;
	struct sl_core_stats main_st; /* main lcore's own counters */
	volatile bool quit;
};

extern struct sl_app *sl_app;

/*
 * What the worker's burst pre-pass learns of a packet with just enough
 * parsing (worker.c): whether it is a plain "get" or "set" datagram to our
 * UDP port, the hash and length of its first key (to prefetch its bucket
 * and items before the burst is processed, and handed to the executor so
 * the key is hashed once; the key starts SL_PEEK_KEY_OFF bytes into the
 * request), whether the datagram holds exactly "get <key>\r\n", and
 * whether the key is this worker's.
 */
struct sl_peek {
	uint64_t hash; /* 0: neither a get nor a set */
	uint64_t ih;   /* mine: the index hash in this worker's store */
	uint32_t klen;
	bool get1;
	bool mine;
	uint8_t pf; /* what the item prefetch step returned (SL_PF_*) */
};

/* net.c: packets. @p pk: what the pre-pass learnt of @p m, or NULL. A
 * datagram of exactly "get <key>\r\n" whose key is this worker's is answered
 * in its own mbuf (sl_exec_get1), without a conversation. */
int sl_net_handle(struct sl_app *a, struct sl_worker *w, struct rte_mbuf *m, uint64_t tsc,
                  const struct sl_peek *pk);
void sl_net_send_reply(struct sl_app *a, struct sl_worker *w, struct sl_msg *msg);
void sl_worker_tx(struct sl_app *a, struct sl_worker *w, struct rte_mbuf *m);
void sl_worker_tx_flush(struct sl_app *a, struct sl_worker *w);

/* worker.c */
int sl_worker_main(void *arg);
void sl_msg_done(struct sl_app *a, struct sl_msg *msg);
void sl_msg_run(struct sl_app *a, struct sl_worker *w, struct sl_msg *msg);
uint32_t sl_now(void);

/* tcp.c: the compat front end on the main lcore */
int sl_tcp_init(struct sl_app *a);
/* Serve the TCP front end; when it has nothing in flight, wait up to
 * @p wait_ms for a socket event first (0: just look). Returns whether it
 * waited. */
bool sl_tcp_poll(struct sl_app *a, bool *busy, int wait_ms);
void sl_tcp_fini(struct sl_app *a);

#endif
