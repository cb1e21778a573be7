/*
 * sluiced internals: the modules of the node and what each owns.
 *
 * Threads and who owns what:
 *
 *   main lcore: the descriptor loop (loop.c): TCP front end (tcp.c, kernel
 *               sockets), exception path (port <-> kernel tap), slot
 *               table publication (tables.c), statistics readers
 *   worker k:   RX queue k and TX queue k of the port (tx.c), store k, its
 *               IP reassembly table, its counters, its backlog
 *
 * Layers, each calling only those below it:
 *
 *   worker.c   the loop: RX burst, prefetch, run conversations, flush
 *     net.c      classify a packet (ARP, ICMP, IPv4, fragments, UDP);
 *                builds the message of a UDP request, calls nothing above
 *     handoff.c  messages (pool, origins), rings between cores, backlog
 *     tx.c       the per-core TX buffer and its flush
 *   tables.c   the slot table behind an RCU pointer (main lcore writes)
 *
 * Messages between cores are sl_msg objects from one mempool, moved through
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
 *
 * Why a TCP request is never lost: the front end admits at most
 * SL_TCP_INFLIGHT conversations at a time (one per connection, and that
 * many in all). Each is in exactly one place: a ring, a worker's hands or
 * one worker's backlog. Every ring holds SL_RING_SIZE - 1 > SL_TCP_INFLIGHT
 * and every backlog SL_TCP_INFLIGHT, so a TCP message that finds a ring
 * full (UDP handoffs fill rings between workers) always finds room in its
 * worker's backlog, and the rings back to the main lcore, which carry only
 * TCP replies, are never full. UDP requests are dropped and counted when a
 * ring is full, as any lost datagram: the client retries.
 */
#ifndef SLUICED_H
#define SLUICED_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_ip_frag.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_udp.h>

#include <netinet/in.h>

#include "sluice/cmsg.h"
#include "sluice/cport.h"
#include "sluice/exec.h"
#include "sluice/frame.h"

#define SL_BURST 32
#define SL_RING_SIZE 1024
#define SL_TCP_INFLIGHT 512 /* admission bound, see above (--tcp-max-inflight lowers it) */
_Static_assert(SL_TCP_INFLIGHT < SL_RING_SIZE - 1, "a ring must hold every TCP message");
#define SL_MAX_IDLE_US                                                                             \
	1000 /* longest idle sleep: the first request after a quiet spell waits at most this */
/* longest wait of an idle main lcore in epoll: how long a stop signal
 * delivered to another thread may wait to be seen */
#define SL_MAIN_WAIT_MS 100

struct sl_worker;
struct sl_msg;

/* ---- tx.c: the per-core TX buffer ------------------------------------------ */

struct sl_tx {
	uint16_t port;
	uint16_t queue;
	bool patient; /* waits a little for a full ring (node-to-node traffic) */
	unsigned n;
	struct sl_core_stats *st;
	struct rte_mbuf *pk[SL_BURST * 4];
};

/** Queue @p m for sending (flushing first when the buffer is full). */
void sl_tx_push(struct sl_tx *tx, struct rte_mbuf *m);
/** Send what is queued; what the port will not take is freed and counted. */
void sl_tx_flush(struct sl_tx *tx);

/* ---- handoff.c: messages, origins, rings, backlog ------------------------- */

/*
 * Where a conversation came from, and so how its reply leaves. A UDP
 * client and a TCP connection are the two today; a request forwarded from
 * another node and a replication record are further kinds of the same.
 */
struct sl_origin_ops {
	const char *name;
	/* must never be dropped: waits in the worker's backlog when a ring
	 * is full (admission at the origin bounds how many there are) */
	bool lossless;
	/* the conversation is done on worker @p w: deliver the reply; the
	 * message is the origin's from here on */
	void (*reply)(struct sl_worker *w, struct sl_msg *msg);
	/* a message of this origin that another core passed to worker @p w
	 * is not a conversation to run but is handed here (NULL: run it) */
	void (*arrive)(struct sl_worker *w, struct sl_msg *msg);
};

/* A request on its way between cores, with where its reply must go. */
struct sl_msg {
	struct sl_conv conv;
	const struct sl_origin_ops *origin;
	struct rte_mbuf *m; /* UDP: the request packet (input may point into it) */
	char *heap_in;      /* input copied out of a chained mbuf or a socket */
	uint32_t heap_cap;
	union {
		struct { /* UDP reply addressing, from the request */
			struct rte_ether_addr peer_mac;
			uint32_t peer_ip;   /* network order */
			uint16_t peer_port; /* network order */
			uint16_t frame_id;
			uint16_t in_bytes; /* request's IP datagram, for the guard */
			bool allowed;      /* an allowed, untrusted source: budgeted */
		} udp;
		struct { /* which connection (slot and generation, to spot reuse) */
			uint32_t conn;
			uint32_t gen;
		} tcp;
		struct { /* a request another node forwarded: where its REP goes */
			struct rte_ether_addr mac;
			uint32_t ip;   /* network order */
			uint16_t port; /* network order */
			uint16_t node;
			uint8_t worker;
			uint8_t hops;
			uint64_t id;
		} peer;
	};
};

struct sl_handoff {
	unsigned nworkers; /* ring index nworkers is the main lcore */
	struct rte_mempool *msgpool;
	struct rte_ring *ring[SL_MAX_WORKERS + 1][SL_MAX_WORKERS + 1];
};

/* Lossless messages that found their ring full, retried every loop. */
struct sl_backlog {
	unsigned n;
	struct sl_msg *m[SL_TCP_INFLIGHT];
	uint16_t to[SL_TCP_INFLIGHT];
};

/** Create the pool and rings for @p nworkers workers and the main lcore. */
int sl_handoff_init(struct sl_handoff *h, unsigned nworkers);
/** Shut down: every message still in a ring goes back to the pool, and
 *  every pooled message gives up its buffers. */
void sl_handoff_fini(struct sl_handoff *h);
/** A fresh message, or NULL when the pool is empty. */
struct sl_msg *sl_msg_get(struct sl_handoff *h);
/** Give a message back (its packet freed, a huge reply buffer released). */
void sl_msg_put(struct sl_handoff *h, struct sl_msg *msg);
/** Enqueue @p msg on ring[from][to]; false when the ring is full. */
bool sl_handoff_send(struct sl_handoff *h, unsigned from, unsigned to, struct sl_msg *msg);
/**
 * Worker @p w passes @p msg to core @p to (nworkers: the main lcore): the
 * ring, else the backlog for a lossless origin, else dropped and counted.
 */
void sl_handoff_pass(struct sl_worker *w, unsigned to, struct sl_msg *msg);
/** Retry worker @p w's backlog; returns how many left it. */
unsigned sl_backlog_retry(struct sl_worker *w);

/* ---- tables.c: the slot table behind an RCU pointer ----------------------- */

#define SL_TABLES_RETIRED 64

struct sl_tables {
	const struct sl_table *cur; /* read with sl_tables_current */
	struct {
		struct sl_table *t;
		uint64_t token;
	} retired[SL_TABLES_RETIRED];
	unsigned nretired;
	uint64_t published;
};

/** The table to route by; a worker reads it between bursts only. */
static inline const struct sl_table *sl_tables_current(const struct sl_tables *ts)
{
	return __atomic_load_n(&ts->cur, __ATOMIC_ACQUIRE);
}

/**
 * Main lcore: publish @p t (sealed, from sl_table_alloc, with an epoch
 * above the current one); the one it replaces is freed once every worker
 * has passed a quiescent state (sl_tables_reclaim). Never waits for them.
 * @return 0, -ESTALE for an epoch not above the current one, -EINVAL for
 *         a table that does not seal, -EBUSY when too many old tables are
 *         still waiting for their grace period (try again later).
 */
int sl_tables_publish(struct sl_tables *ts, struct sl_table *t);
/** Free the retired tables no worker can still be reading. */
void sl_tables_reclaim(struct sl_tables *ts);
/** Free everything (workers stopped). */
void sl_tables_fini(struct sl_tables *ts);
struct sl_table *sl_table_alloc(void);
void sl_table_free(struct sl_table *t);

/* ---- net.c: packets --------------------------------------------------------- */

/* Replication settings (repl.c), shared by the workers. */
struct sl_repl_conf {
	size_t log_bytes;    /* each stream's log */
	uint32_t max_lag_ms; /* 0: no bound */
	uint64_t resync_bps; /* snapshot bytes per second, 0: no ceiling */
};

/* What the network layer of every worker shares, read-only once running. */
struct sl_net {
	uint16_t cport; /* the cluster port, network order; 0: none */
	int cdev;       /* a DPDK port for node-to-node traffic only; -1: port */
	uint32_t fwd_timeout_ms;
	struct sl_repl_conf repl;
	uint8_t key[SL_CMSG_KEY]; /* the cluster key */
	uint16_t port;
	int exc_port; /* -1: no exception path */
	uint32_t ip;  /* network order */
	uint16_t udp_port;
	struct rte_ether_addr mac;
	struct rte_mempool *pktpool;
	struct rte_ring *exc_ring;  /* workers -> main: packets for the kernel */
	struct rte_ring *wire_ring; /* main -> worker 0: what the kernel sends out */
	struct sl_handoff *ho;
	struct sl_udpguard_conf guard; /* who may use UDP, and how much */
};

extern const struct sl_origin_ops sl_udp_origin;

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
	uint8_t pf;  /* what the item prefetch step returned (SL_PF_*) */
	uint8_t cls; /* a UDP request's source: enum sl_udp_class */
};

/**
 * Classify and handle packet @p m on worker @p w. @p pk: what the
 * pre-pass learnt of it, or NULL. ARP, ICMP echo and what goes to the
 * kernel are dealt with here; a datagram of exactly "get <key>\r\n" whose
 * key is this worker's is answered in its own mbuf (sl_exec_get1).
 * @return a memcached request's message, for the caller to run, or NULL
 *         when the packet needs nothing more.
 */
struct sl_msg *sl_net_handle(struct sl_worker *w, struct rte_mbuf *m, uint64_t tsc,
                             const struct sl_peek *pk);

/** Write Ethernet, IPv4 and UDP headers at @p p for a datagram of
 *  @p payload bytes from this node (ports and address in network order);
 *  returns where the payload goes. */
uint8_t *sl_net_udp_headers(struct sl_worker *w, uint8_t *p, const void *dst_mac, uint32_t dst_ip,
                            uint16_t src_port, uint16_t dst_port, size_t payload);

/* ---- fwd.c: requests forwarded over the cluster port ----------------------- */

/*
 * A worker forwards a request for another node's slot over the cluster
 * port (sluice/cport.h) and parks its conversation until the answer comes
 * (or the timeout answers for it); it serves requests other nodes forward
 * to it as conversations of their own origin, whose reply goes back as a
 * REP.
 *
 *   pend[id % SL_FWD_PENDING]: the requests out, in id order
 *     tail_id (oldest out) .. next_id (next to send): a slot is taken in
 *     turn, so the oldest is always at the tail and timeouts are found
 *     there; a full ring refuses further forwards until one is answered
 *   in[SL_FWD_ASM]: requests of several datagrams being put together
 *   win[]: a replay window for each sending (node, worker)
 */
#define SL_FWD_PENDING 1024
#define SL_FWD_ASM 32
#define SL_FWD_SENDERS 1024

struct sl_fwd {
	uint64_t next_id, tail_id;
	struct {
		struct sl_msg *msg; /* NULL: free */
		uint64_t id;
		uint32_t deadline_ms;
		uint16_t node;
		struct sl_cport_asm rep; /* a reply of several datagrams */
	} pend[SL_FWD_PENDING];
	struct {
		struct sl_msg *msg; /* NULL: free */
		uint16_t node;
		uint8_t worker;
		uint64_t id;
		uint32_t since_ms;
		struct sl_cport_asm a;
	} in[SL_FWD_ASM];
	struct {
		uint32_t sender; /* (node << 8 | worker) + 1; 0: free */
		struct sl_cport_window w;
	} win[SL_FWD_SENDERS];
	struct sl_buf scratch; /* the request being forwarded */
	struct rte_mbuf *held; /* test builds: a datagram held back (cport_delay) */
	uint32_t held_ms;
};

extern const struct sl_origin_ops sl_peer_origin;

int sl_fwd_init(struct sl_worker *w);
void sl_fwd_fini(struct sl_worker *w);
/** A datagram to the cluster port (a trusted source's) as it arrives:
 *  test builds may drop, duplicate or hold it back here (fault points
 *  cport_*), then sl_fwd_input. */
struct sl_msg *sl_fwd_arrive(struct sl_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
                             uint16_t ihl);
/** A datagram held back by cport_delay whose time is up goes on now. */
unsigned sl_fwd_release_held(struct sl_worker *w, bool all);
/** A datagram to the cluster port (a trusted source's): a whole forwarded
 *  request comes back as a message to run; replies are dealt with here. */
struct sl_msg *sl_fwd_input(struct sl_worker *w, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
                            uint16_t ihl);
/** The conversation of @p msg stopped for node @p node's slot: forward it
 *  (true: parked until the answer) or answer it with an error (false). */
bool sl_fwd_send(struct sl_worker *w, struct sl_msg *msg, unsigned node);
/** Answer the forwards whose time ran out; returns how many. */
unsigned sl_fwd_expire(struct sl_worker *w);

/* ---- repl.c: replication streams over the cluster port -------------------- */

/*
 * Each primary core streams the changes of its slots to the backup cores
 * that keep copies of them (sluice/repl.h), one stream per backup core:
 *
 *   out[i]: log of the records not yet acknowledged, a ring of cap bytes;
 *           offsets only grow (the ring index is offset % cap):
 *
 *     tail (seq acked + 1)      sent (seq sent_seq)          head
 *     v                         v                            v
 *     | rec | rec | rec | ...   | rec | rec | ...            | free ...
 *     |<- sent, waiting for ack ->|<- to send -------------->|
 *
 *     each record in the log: | len u32 | appended at, us u32 | record |
 *   slot_out[s]: the stream slot s's changes go to (0xff: none; derived
 *           from the table when its epoch changes)
 *   in[j]:  a stream into this core: the generation and the last record
 *           applied, the reply address, a batch being put together
 */
#define SL_REPL_STREAMS 64
#define SL_REPL_NONE 0xffu
#define SL_REPL_WAITERS 256

enum sl_rout_state {
	SL_ROUT_RESYNCING, /* RESET sent, the snapshot not yet acknowledged */
	SL_ROUT_STREAMING, /* the backup holds every slot: only changes flow */
};

struct sl_rout {
	bool used;
	uint8_t core; /* the backup's core */
	uint16_t node;
	uint8_t state;
	bool fenced; /* lag above --repl-max-lag-ms: its slots refuse writes */
	bool snap;   /* the snapshot walk is under way */
	/* draining: the stream carries no slot any more (closing) or must
	 * start again (restart), once what it holds is acknowledged, so
	 * that a backup taking slots over gets every change first */
	bool closing, restart;
	bool fresh; /* made by this table change: nothing of an earlier life in it */
	uint64_t drain_deadline_us;
	uint64_t gen;
	uint64_t next_seq, acked, sent_seq, snap_end_seq, snap_epoch;
	uint8_t *log;
	size_t cap;
	uint64_t head, tail, sent;
	uint64_t progress_us; /* acked last moved, or a retransmission began */
	struct sl_store_cursor cur;
	uint64_t snap_items, snap_bytes, snap_budget;
	uint64_t records, bytes, retransmits, resyncs, overflows;
	/* a batch bigger than a tick's datagrams, going out over several:
	 * its bytes, how many chunks left, what it covers of the log */
	char *part;
	uint32_t part_len, part_done, part_count;
	uint64_t part_end;
	/* writes (meta flag B) waiting for the backup to acknowledge their
	 * record: a ring in seq order, SL_REPL_WAITERS at most */
	struct {
		struct sl_msg *msg;
		uint64_t seq;
		uint32_t deadline_ms;
	} wait[SL_REPL_WAITERS];
	unsigned wait_head, wait_n;
	uint64_t durable_acked, durable_failed;
};

struct sl_rin {
	bool used;
	uint8_t core; /* the primary's core */
	uint16_t node;
	bool synced;     /* a whole snapshot applied (SNAP_END) in this generation */
	uint64_t handover_epoch; /* the last HANDOVER record applied */
	bool ack_due, nack_due, resync_due;
	bool purging;    /* dropping the slots of this primary (RESET, FLUSH) */
	uint8_t pworkers; /* the primary's worker count, for the drop */
	uint64_t gen, applied, sync_epoch, nack_us;
	struct sl_store_cursor pc;
	struct rte_ether_addr mac; /* where acks go: the last batch's source */
	uint32_t ip;
	uint16_t port;
	struct sl_cport_asm a; /* a batch of several datagrams */
	uint64_t a_gen, a_first;
	uint64_t records, bytes, last_us;
};

struct sl_repl {
	uint64_t epoch; /* slot_out is of this table's */
	uint8_t slot_out[SL_SLOTS];
	uint16_t owner[SL_SLOTS]; /* each slot's node in that table */
	/* slots this core took over from a live primary under table
	 * await_epoch: held (SERVER_ERROR, try again) until that primary's
	 * HANDOVER record is applied, or until the deadline */
	uint16_t await_from[SL_SLOTS]; /* that primary's id + 1; 0: not held */
	struct {
		uint16_t node;
		uint8_t pcore;
	} await[SL_REPL_STREAMS];
	unsigned await_n;
	uint64_t await_epoch, await_deadline_us, handover_timeouts;
	struct sl_rout out[SL_REPL_STREAMS];
	struct sl_rin in[SL_REPL_STREAMS];
	struct sl_buf scratch;
	bool any_fenced;
	uint64_t last_tick_us, last_begin_us;
	uint64_t stale_tsc; /* STALE_MS in TSC ticks */
	uint64_t frozen_until_tsc; /* the lease seen when the worker found it had not run for
	                            * longer than a lease: stale until a newer one */
};

int sl_repl_init(struct sl_worker *w);
void sl_repl_fini(struct sl_worker *w);
/** The worker's table changed epoch: streams to start, restart, end. */
void sl_repl_retable(struct sl_worker *w);
/** At the top of each loop iteration, before any packet: was the worker
 *  frozen (longer than a lease since the last), and the executor's flags. */
void sl_repl_begin(struct sl_worker *w);
/** Once per loop: send batches and acks, retransmit, snapshot and drop
 *  steps, the lag check. @return whether it did anything. */
unsigned sl_repl_tick(struct sl_worker *w);
/** A REPL or RACK message for this worker (its source's addresses). */
void sl_repl_input(struct sl_worker *w, const struct sl_cport_hdr *h, const uint8_t *data,
                   const struct rte_ether_hdr *eth, const struct rte_ipv4_hdr *ip,
                   const struct rte_udp_hdr *udp);
/** @p msg's conversation stopped at SL_EXEC_WAIT: it goes on once the
 *  backup acknowledged the write, or with an error. */
void sl_repl_wait(struct sl_worker *w, struct sl_msg *msg);
/** Microseconds the oldest record of @p o not yet acknowledged has waited
 *  at @p now_us (0: none waits). */
uint32_t sl_rout_lag_us(const struct sl_rout *o, uint64_t now_us);
/** `stats replication` (sl_node.repl_stats). */
void sl_repl_stats(const struct sl_node *n, struct sl_buf *o);
/** Send a message of cluster-port datagrams (fwd.c), all or none. */
bool sl_fwd_send_msg(struct sl_worker *w, const struct sl_cport_hdr *tmpl, const void *mac,
                     uint32_t ip, uint16_t port, const char *p, uint32_t len);
/** Send chunks @p first .. @p first + @p n - 1 of it, all or none. */
bool sl_fwd_send_part(struct sl_worker *w, const struct sl_cport_hdr *tmpl, const void *mac,
                      uint32_t ip, uint16_t port, const char *p, uint32_t len, uint32_t first,
                      uint32_t n);

/* ---- worker.c --------------------------------------------------------------- */

struct sl_worker {
	unsigned idx;
	unsigned lcore;
	struct sl_exec ex;
	const struct sl_net *net;
	struct sl_handoff *ho;
	const struct sl_tables *tables;
	const volatile bool *quit;
	bool busy_poll; /* never sleep when idle (a dedicated core) */
	struct rte_ip_frag_tbl *frag;
	struct rte_ip_frag_death_row dr;
	struct sl_tx tx;
	struct sl_tx ctx; /* node-to-node datagrams: on net->cdev, or port as tx */
	uint32_t now;    /* unix seconds, read once per loop iteration */
	uint32_t now_ms; /* a millisecond clock (TSC), likewise */
	uint16_t ip_id;  /* IPv4 id of the next datagram sent */
	struct sl_backlog backlog;
	struct sl_fwd *fwd;
	struct sl_repl *repl;
	uint64_t now_us; /* a microsecond clock (TSC), read once per loop */
	uint64_t tsc;    /* the TSC then */
} __rte_cache_aligned;

int sl_worker_main(void *arg);
/** Run @p msg's conversation on @p w as far as this core can take it. */
void sl_msg_run(struct sl_worker *w, struct sl_msg *msg);
uint32_t sl_now(void);

/* ---- loop.c: the main lcore's descriptor loop ------------------------------ */

/*
 * A file descriptor and what to do when it is ready. The handler object
 * lives as long as the registration (its address is the epoll cookie).
 */
struct sl_fd_handler {
	void (*ready)(struct sl_fd_handler *h, uint32_t events);
};

/* Work the loop does every turn, with no descriptor to announce it (rings
 * from the workers, the exception port, table reclamation). Returns
 * whether it did anything; sets *no_wait when the loop must not block in
 * epoll (work will come by ring meanwhile). */
struct sl_poller {
	bool (*poll)(struct sl_poller *p, bool *no_wait);
	struct sl_poller *next;
};

struct sl_loop {
	int epfd;
	struct sl_poller *pollers;
	bool can_block;  /* no poller needs the loop awake (e.g. a DPDK port) */
	int wait_cap_ms; /* a poller's timer: block no longer (reset each turn) */
};

int sl_loop_init(struct sl_loop *l);
void sl_loop_fini(struct sl_loop *l);
int sl_loop_add(struct sl_loop *l, int fd, uint32_t events, struct sl_fd_handler *h);
int sl_loop_mod(struct sl_loop *l, int fd, uint32_t events, struct sl_fd_handler *h);
void sl_loop_del(struct sl_loop *l, int fd);
void sl_loop_add_poller(struct sl_loop *l, struct sl_poller *p);
/** One turn: ready descriptors (waiting up to @p wait_ms when no poller
 *  objects), then every poller. Returns whether anything was done. */
bool sl_loop_turn(struct sl_loop *l, int wait_ms, bool *waited);

/* ---- tcp.c: the compat front end on the main lcore ------------------------- */

struct sl_conn;
struct sl_tcp_listener {
	struct sl_fd_handler h;
	struct sl_tcp *tcp;
	int fd;
};

struct sl_tcp {
	struct sl_loop *loop;
	struct sl_handoff *ho;
	struct sl_node *node;
	struct sl_core_stats *st; /* the main lcore's counters */
	size_t max_item;
	struct sl_tcp_listener lis[2];
	unsigned nlisten;
	struct sl_conn **conns; /* by slot; NULL where free */
	unsigned nconns;
	uint32_t next_gen;
	unsigned rr;
	unsigned nstalled;     /* connections waiting for a message, ring room or memory */
	unsigned inflight;     /* conversations with the workers (<= max_inflight) */
	unsigned max_inflight; /* the admission bound, at most SL_TCP_INFLIGHT */
	struct sl_poller poller;
};

extern const struct sl_origin_ops sl_tcp_origin;

struct sl_tcp_conf {
	bool on; /* the extra listener (--tcp) */
	char host[64];
	uint16_t port;
	const char *exc_netns; /* NULL: no listener in the exception netns */
	uint32_t exc_ip;
	uint16_t exc_port;
	unsigned max_inflight; /* 0: SL_TCP_INFLIGHT */
};

int sl_tcp_init(struct sl_tcp *t, const struct sl_tcp_conf *c, struct sl_loop *loop,
                struct sl_handoff *ho, struct sl_node *node, struct sl_core_stats *st,
                size_t max_item);
void sl_tcp_fini(struct sl_tcp *t);

/* ---- cluster.c: the control channel to sluice-control (main lcore) -------- */

#define SL_MAX_CONTROLLERS 4

struct sl_cluster_conf {
	struct sockaddr_in controller[SL_MAX_CONTROLLERS]; /* tried in turn */
	unsigned ncontrollers;
	uint8_t key[SL_CMSG_KEY];
	char name[64];
	uint8_t weight;
	uint32_t ip; /* this node's dataplane address and UDP port, to register */
	uint16_t port;
	uint16_t cport; /* and its cluster port and MAC */
	uint8_t mac[6];
	unsigned heartbeat_ms;
};

struct sl_cluster {
	struct sl_fd_handler h; /* first: the epoll cookie */
	struct sl_poller poller;
	struct sl_loop *loop;
	struct sl_tables *tables;
	struct sl_node *node;
	struct sockaddr_in ctl[SL_MAX_CONTROLLERS];
	unsigned nctl, next_ctl; /* the one to try next */
	uint8_t key[SL_CMSG_KEY];
	struct sl_cmsg_register reg;
	int fd;
	bool registered; /* REGISTER sent on this connection */
	uint8_t *rbuf;
	size_t rlen;
	uint64_t seq, last_ctl_seq;
	uint64_t next_hb_ms, next_connect_ms;
	uint64_t last_rx_ms; /* the last frame from the controller */
	unsigned hb_ms;
	/* heartbeats sent lately, to date a lease from the one answered */
	struct {
		uint64_t seq, tsc;
	} hb[16];
	/* the replication streams this node must hold whole to be a full
	 * copy of the slots it backs up: (primary, its core, core here),
	 * derived from the table of epoch req_epoch */
	uint64_t req_epoch;
	unsigned nreq;
	struct {
		uint16_t node;
		uint8_t pcore, core;
	} req[1024];
};

int sl_cluster_init(struct sl_cluster *c, const struct sl_cluster_conf *cf, struct sl_loop *loop,
                    struct sl_tables *tables, struct sl_node *node);
void sl_cluster_fini(struct sl_cluster *c);

#endif
