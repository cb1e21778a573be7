/*
 * Command execution: memcached semantics over a per-core store.
 *
 * A conversation (sl_conv) is a buffer of one or more complete requests and
 * the reply being built for them. It is run on the core that owns the key
 * it needs next; when the next key (or, for flush_all, the next core) is
 * somebody else's, sl_exec_run stops and names that core, and the caller
 * hands the conversation over an rte_ring. The owner core resumes exactly
 * where the previous one stopped, so a multi-get whose keys live on three
 * cores travels core to core and its reply keeps the request's key order,
 * as memcached's does:
 *
 *    in:  | get a b c\r\n | set d 0 0 1\r\n x\r\n |
 *           ^off   ^key_pos
 *    out: | VALUE a ... | VALUE b ... |        (grows as cores add to it)
 *
 *    core0: a (own) -> b is core1's -> FORWARD(1)
 *    core1: b (own) -> c is core0's -> FORWARD(0)
 *    core0: c, END; set d is core1's -> FORWARD(1) ...
 *
 * The conversation carries the hash of the key it stopped at, so the key is
 * hashed once however many cores it visits.
 */
#ifndef SLUICE_EXEC_H
#define SLUICE_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/proto.h"
#include "sluice/slot.h"
#include "sluice/store.h"
#include "sluice/udpguard.h"

#define SL_VERSION_STRING "1.6.18-sluice-0.1.0"

/*
 * Growable byte buffer for replies and connection input.
 *
 * A failed growth is remembered (err) instead of being checked after every
 * write: the writers of a reply go on as if nothing happened (their bytes
 * are lost), and whoever owns the reply checks err once per request and
 * replaces what that request wrote with an error line. SL_BUF_SPARE bytes
 * past len are always kept free in an allocated buffer, so that error line
 * fits even when the growth that failed was the one it needed:
 *
 *   p: | replies of earlier requests | this request's (maybe torn) | spare |
 *      0                             mark                          len   cap
 */
struct sl_buf {
	char *p;
	size_t len;
	size_t cap;
	bool err; /* a growth failed since the last sl_buf_fail */
};

#define SL_BUF_SPARE 64

/** Room for @p extra more bytes. @return 0, or -ENOMEM (err set). */
int sl_buf_reserve(struct sl_buf *b, size_t extra);
int sl_buf_put(struct sl_buf *b, const void *p, size_t n);
void sl_buf_release(struct sl_buf *b);
/**
 * Cut @p b back to @p mark, clear err and append @p line and CRLF (at most
 * SL_BUF_SPARE - 2 bytes), in the spare room where it must.
 * @return 0, or -ENOMEM when even that cannot be written (no buffer at all,
 *         and none can be had).
 */
int sl_buf_fail(struct sl_buf *b, size_t mark, const char *line);

/* Why a packet or request was dropped without a reply. */
#define SL_DROP_REASONS(X)                                                                         \
	X(not_ipv4)                                                                                \
	X(bad_ip)                                                                                  \
	X(not_for_us)                                                                              \
	X(bad_udp)                                                                                 \
	X(udp_port)                                                                                \
	X(short_frame)                                                                             \
	X(multi_datagram)                                                                          \
	X(incomplete_request)                                                                      \
	X(junk_request)                                                                            \
	X(frag_failed)                                                                             \
	X(handoff_full)                                                                            \
	X(tx_full)                                                                                 \
	X(no_mbuf)                                                                                 \
	X(other_proto)                                                                             \
	X(udp_not_allowed)

enum sl_drop {
#define X(n) SL_DROP_##n,
	SL_DROP_REASONS(X)
#undef X
	    SL_DROP__COUNT
};

extern const char *const sl_drop_names[SL_DROP__COUNT];

/* Per-core counters: written by their core only, summed by readers. */
#define SL_CORE_COUNTERS(X)                                                                        \
	X(requests)                                                                                \
	X(cmd_get)                                                                                 \
	X(cmd_set)                                                                                 \
	X(cmd_flush)                                                                               \
	X(cmd_touch)                                                                               \
	X(cmd_meta)                                                                                \
	X(get_hits)                                                                                \
	X(get_misses)                                                                              \
	X(get_expired)                                                                             \
	X(get_flushed)                                                                             \
	X(delete_misses)                                                                           \
	X(delete_hits)                                                                             \
	X(incr_misses)                                                                             \
	X(incr_hits)                                                                               \
	X(decr_misses)                                                                             \
	X(decr_hits)                                                                               \
	X(cas_misses)                                                                              \
	X(cas_hits)                                                                                \
	X(cas_badval)                                                                              \
	X(touch_hits)                                                                              \
	X(touch_misses)                                                                            \
	X(store_too_large)                                                                         \
	X(store_no_memory)                                                                         \
	X(bytes_read)                                                                              \
	X(bytes_written)                                                                           \
	X(rx_packets)                                                                              \
	X(tx_packets)                                                                              \
	X(handoffs_out)                                                                            \
	X(handoffs_in)                                                                             \
	X(arp_replies)                                                                             \
	X(icmp_replies)                                                                            \
	X(exception_pkts)                                                                          \
	X(idle_sleeps)                                                                             \
	X(reply_oom)                                                                               \
	X(not_served)                                                                              \
	X(fwd_out)                                                                                 \
	X(fwd_in)                                                                                  \
	X(fwd_timeouts)                                                                            \
	X(fwd_refused)                                                                             \
	X(fwd_stale)                                                                               \
	X(writes_fenced)                                                                           \
	X(held_refused)                                                                     \
	X(repl_refused)                                                                            \
	X(repl_stale)                                                                              \
	X(backlog_waits)                                                                           \
	X(tcp_admission_waits)

struct sl_core_stats {
#define X(n) uint64_t n;
	SL_CORE_COUNTERS(X)
#undef X
	uint64_t drops[SL_DROP__COUNT];
};

struct sl_exec;

/** What the whole node shares: read-mostly, set up before workers start. */
struct sl_node {
	unsigned nworkers;
	struct sl_exec *cores[SL_MAX_WORKERS];
	uint32_t started; /* unix seconds */
	size_t mem_limit; /* whole node, bytes */
	size_t max_item;
	uint16_t udp_port;
	uint16_t tcp_port;
	uint32_t verbosity;
	/* `stats replication`: one STAT line per stream (repl.c; NULL off
	 * the dataplane) */
	void (*repl_stats)(const struct sl_node *n, struct sl_buf *o);
	/* the epoch of the table the main lcore published last (for stats) */
	uint64_t epoch;
	/* counters of the main lcore (TCP front end, exception path), summed
	 * with the workers' */
	const struct sl_core_stats *main_st;
	/* connection counters of the TCP front end (written by it alone) */
	uint64_t curr_connections;
	uint64_t total_connections;
	uint64_t tcp_inflight; /* conversations of TCP clients with the workers */
	/* the control channel (written by the main lcore) */
	struct {
		bool on;        /* --controller given */
		bool connected; /* registered with the controller */
		uint16_t id;    /* node id the controller gave, 0 before */
		uint32_t slots; /* slots this node serves in its table */
		uint64_t tables_installed;
		uint64_t installed_us; /* when the last one was (unix microseconds) */
		uint64_t tables_refused; /* stale epoch or not valid */
		uint64_t msgs_refused;   /* no or wrong MAC, malformed, replayed */
		uint64_t connects;
		uint64_t controller_silent; /* connections given up: no answer */
		/* the lease: writes to slots with a backup are refused once the
		 * TSC passes it (0: no lease, as without a controller); set by
		 * the main lcore on every heartbeat the controller answers */
		uint64_t lease_tsc;
		uint32_t lease_ms;
		/* the highest epoch another node's cluster-port message carried:
		 * above the table's for longer than a push takes (STALE_MS),
		 * this node's table is out of date (it was away while the
		 * cluster moved on) and it answers no key until the new one
		 * comes (written by any worker: atomic max) */
		uint64_t epoch_seen;
		uint64_t epoch_seen_tsc; /* when it last rose */
	} cluster;
};

/** One core's execution context. */
struct sl_exec {
	unsigned core;
	struct sl_store *store;
	struct sl_node *node;
	/* the slot table this core routes by: refreshed by its worker between
	 * bursts (RCU), never changed under a running conversation step */
	const struct sl_table *table;
	/* its epoch, for readers on other cores: they must not follow
	 * another core's table pointer, which may be retired and freed */
	uint64_t table_epoch;
	/* the UDP guard's per-source budgets (NULL off the dataplane) */
	struct sl_udpguard *udp;
	/* fencing: while fence_on, every write asks fence() whether the key
	 * of hash h may be written here; a reason (a SERVER_ERROR line) is a
	 * refusal. Set by the worker once per loop (lease, replication lag). */
	bool fence_on;
	const char *(*fence)(struct sl_exec *ex, uint64_t h);
	/* another node showed a newer table than ours: what we think we own
	 * may be served by another node now, so no key is answered here
	 * (reads neither: they could be stale) until the table comes */
	bool stale;
	/* while hold_on, a key for which hold() is true is answered "try
	 * again": its slot's table is out of date here (stale), or the slot
	 * was just taken over and its old primary's last changes are still
	 * on their way (repl.c) */
	bool hold_on;
	bool (*hold)(struct sl_exec *ex, uint64_t h);
	struct sl_core_stats st;
};

struct sl_conv {
	const char *in;
	uint32_t in_len;
	uint32_t off;        /* start of the request being run */
	uint32_t key_pos;    /* get family: where the key list resumes */
	uint32_t bcast_next; /* flush_all / stats reset: next core to visit */
	uint32_t hint_off;   /* hash hint: key offset within in, +1 (0 = none) */
	uint32_t hint_len;   /* and the key's length */
	uint64_t hint_hash;
	uint32_t mark;   /* out.len when the current request started */
	uint64_t epoch;  /* table epoch it was last routed by (0: not yet) */
	uint32_t fwd_pos; /* get family: where the keys forwarded to a node end */
	bool remote;     /* SL_EXEC_REMOTE: the key is another node's */
	bool in_request; /* a get/broadcast is part done */
	bool close;      /* quit, or junk that ends a TCP connection */
	bool udp;        /* datagram transport (no partial requests) */
	bool durable;    /* SL_EXEC_WAIT: the request just run waits for its backup */
	uint64_t durable_hash;
	uint32_t durable_mark; /* where its reply starts in out */
	struct sl_buf out;
};

/** A write that waited for its backup (SL_EXEC_WAIT) is not acknowledged:
 *  its reply becomes @p line. */
void sl_exec_durable_fail(struct sl_conv *c, const char *line);

enum sl_exec_status {
	SL_EXEC_DONE = 0,    /* all input consumed; out holds the reply */
	SL_EXEC_FORWARD = 1, /* *to_core must continue */
	SL_EXEC_REMOTE = 2,  /* the next key is node *to_core's: forward the
	                      * conversation there, or sl_exec_skip it */
	SL_EXEC_WAIT = 3,    /* a write asked (meta flag B) to be answered only
	                      * once the backup has it: c->durable_hash names
	                      * its key; run it again once acknowledged, or
	                      * sl_exec_durable_fail it */
};

/** Append "STAT name value\r\n" to @p o (value formatted as printf). */
void sl_stat_line(struct sl_buf *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Reset a conversation for new input (keeps the reply buffer's memory). */
void sl_conv_reset(struct sl_conv *c, const char *in, uint32_t len, bool udp);

/** The key of @p key_len bytes at byte @p key_off of the input has hash
 *  @p hash (computed earlier, e.g. to prefetch): the executor uses it
 *  instead of hashing, for that key only. */
static inline void sl_conv_hint(struct sl_conv *c, uint32_t key_off, uint32_t key_len,
                                uint64_t hash)
{
	c->hint_off = key_off + 1;
	c->hint_len = key_len;
	c->hint_hash = hash;
}

/**
 * Run @p c on @p ex's core until it is done or needs another core.
 * @param now unix seconds.
 * Thread safety: only the owning core may call it with its sl_exec.
 */
enum sl_exec_status sl_exec_run(struct sl_exec *ex, struct sl_conv *c, uint32_t now,
                                unsigned *to_core);

/**
 * The commonest request, answered without a conversation: a datagram of
 * exactly "get <key>\r\n" (@p req_len bytes) whose key (@p klen bytes at
 * @p key; @p ih its index hash in this core's store, sl_store_index_hash,
 * and @p hint what sl_store_prefetch_items returned for it, or 0) this
 * core owns. Writes the whole reply (the VALUE line
 * and data, then END) to @p out and returns its length, counting and
 * marking the item as sl_exec_run would for the same request.
 * Returns -1, having changed nothing, when the reply could need more than
 * @p cap bytes (at least 5, room for END): the caller then takes the
 * general path.
 * @p key may lie inside @p out: it is read before anything is written.
 */
int sl_exec_get1(struct sl_exec *ex, const char *key, size_t klen, uint64_t ih, unsigned hint,
                 uint32_t req_len, uint32_t now, char *out, size_t cap);

/**
 * Answer the request the conversation stopped at with @p line (an error:
 * it replaces whatever that request had written) and move past it; then
 * sl_exec_run goes on with the next. For SL_EXEC_REMOTE where the request
 * cannot be forwarded.
 */
void sl_exec_skip(struct sl_exec *ex, struct sl_conv *c, const char *line);

/**
 * The request @p c stopped at with SL_EXEC_REMOTE (for node @p node), as
 * the text to forward to that node, written to @p fwd (emptied first): the
 * request itself, or for the get family the verb and the run of keys from
 * where it stopped that @p node owns (up to 64), then "mn\r\n", so the
 * reply always ends in "MN\r\n". @return 0, or -ENOMEM.
 */
int sl_exec_remote_req(struct sl_exec *ex, struct sl_conv *c, unsigned node, struct sl_buf *fwd);

/**
 * The node's reply (@p len bytes) to what sl_exec_remote_req built: its
 * answer (without the "MN" line, and for the get family without its
 * "END") is this request's, and the conversation moves past what was
 * forwarded; sl_exec_run goes on from there. A reply that does not end in
 * "MN\r\n" answers the request with a SERVER_ERROR line (-EPROTO).
 */
int sl_exec_remote_done(struct sl_exec *ex, struct sl_conv *c, const char *rep, size_t len);

/** Sum of the per-core counters of a node (racy reads, by design). */
void sl_node_sum(const struct sl_node *n, struct sl_core_stats *sum);

#endif
