/*
 * The cluster port: datagrams between the workers of two nodes, on the
 * DPDK fast path (UDP, never through the kernel). A node that receives a
 * memcached request for a slot another node owns forwards the request to
 * that node's cluster port in a REQ message and relays what comes back in
 * the REP message, so a stock client may ask any node for any key.
 *
 * A message (the forwarded request's bytes, or the reply's) may be larger
 * than a datagram: it travels in chunks of at most SL_CPORT_CHUNK bytes,
 * each datagram naming the message's total length and its chunk's offset,
 * and the receiver puts the chunks together (they may come in any order;
 * a lost one loses the message, and the forwarder's timeout answers for
 * it). Every datagram is authenticated on its own with the cluster key
 * (BLAKE2b, 16 bytes, keyed), so nothing is believed before its MAC is
 * checked. All integers are big-endian.
 *
 *   0        4    5    6         8    9    10        12         16         20
 *   +--------+----+----+---------+----+----+---------+----------+----------+------+
 *   | "SLF1" |type|hops| node u16|wkr |  0 |chunk u16| total u32| off u32  | 0 u32|
 *   +--------+----+----+---------+----+----+---------+----------+----------+------+
 *   24                 32                 40
 *   +------------------+------------------+----------------------+---------+
 *   | epoch u64        | id u64           | chunk bytes          | MAC (16)|
 *   +------------------+------------------+----------------------+---------+
 *     the MAC covers bytes 0 .. 40 + chunk
 *
 *   type   SL_CPORT_REQ (forwarder -> owner) or SL_CPORT_REP (back);
 *          SL_CPORT_REPL and SL_CPORT_RACK: replication (sluice/repl.h)
 *   hops   how many nodes forwarded it before (a REQ that finds the slot
 *          moved on may be forwarded once more, no further)
 *   node   the sender's node id
 *   wkr    REQ: the forwarding worker; REP: the same, echoed, so the reply
 *          reaches the worker that waits for it; REPL, RACK: the worker
 *          the message is for
 *   epoch  the sender's table epoch
 *   id     REQ: the forwarding worker's sequence number, which starts at
 *          its start time in nanoseconds and grows by one per request (a
 *          receiver refuses a number it has seen: SL_CPORT_WINDOW); REP:
 *          the REQ's, echoed
 *
 * What a REQ carries is memcached text: one request (or, for the get
 * family, the run of its keys that live on that node) followed by "mn",
 * so the reply always ends in "MN\r\n" and the forwarder knows it is
 * whole, whatever the request was (noreply and quiet modes included).
 */
#ifndef SLUICE_CPORT_H
#define SLUICE_CPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_CPORT_HDR 40
#define SL_CPORT_MAC 16
#define SL_CPORT_KEY 32
#define SL_CPORT_CHUNK 1400u
/* largest message: an item of the largest size and its command line */
#define SL_CPORT_MSG_MAX ((64u << 20) + 4096u)
#define SL_CPORT_MAX_HOPS 1

enum sl_cport_type {
	SL_CPORT_REQ = 1,
	SL_CPORT_REP = 2,
	SL_CPORT_REPL = 3, /* replication batch, primary core -> backup core (sluice/repl.h) */
	SL_CPORT_RACK = 4, /* its acknowledgement, back */
};

struct sl_cport_hdr {
	uint8_t type;
	uint8_t hops;
	uint16_t node;
	uint8_t worker;
	uint16_t chunk; /* bytes of the message in this datagram */
	uint32_t total; /* bytes of the whole message */
	uint32_t off;   /* where this chunk starts in it */
	uint64_t epoch;
	uint64_t id;
};

enum sl_cport_verdict {
	SL_CPORT_OK = 0,
	SL_CPORT_BAD,    /* not ours: magic, lengths, a chunk outside its message */
	SL_CPORT_FORGED, /* the MAC does not match */
};

/** Bytes a datagram's payload takes for a chunk of @p chunk bytes. */
static inline size_t sl_cport_size(size_t chunk)
{
	return SL_CPORT_HDR + chunk + SL_CPORT_MAC;
}

/**
 * Write the header @p h and @p h->chunk bytes of @p data at @p out (room
 * for sl_cport_size(h->chunk)), with the MAC. @return the bytes written.
 */
size_t sl_cport_encode(uint8_t *out, const struct sl_cport_hdr *h, const void *data,
                       const uint8_t key[SL_CPORT_KEY]);

/**
 * Check the datagram payload of @p len bytes at @p in: on SL_CPORT_OK, @p h
 * is filled and the chunk's bytes start at in + SL_CPORT_HDR. The MAC is
 * checked before any field is trusted; a chunk must lie inside a message
 * of at most @p max_total bytes, and be a whole SL_CPORT_CHUNK unless it
 * is the last.
 */
enum sl_cport_verdict sl_cport_decode(const uint8_t *in, size_t len, uint32_t max_total,
                                      const uint8_t key[SL_CPORT_KEY], struct sl_cport_hdr *h);

/** How many chunks a message of @p total bytes travels in (at least 1). */
static inline uint32_t sl_cport_chunks(uint32_t total)
{
	return total ? (total + SL_CPORT_CHUNK - 1) / SL_CPORT_CHUNK : 1;
}

/*
 * Replay guard of one sender (a node's worker): the highest id seen and a
 * bitmap of the SL_CPORT_WINDOW ids below it, so requests that overtake
 * each other on the way are all taken once, and a copy of one refused.
 */
#define SL_CPORT_WINDOW 64
struct sl_cport_window {
	uint64_t high;
	uint64_t seen; /* bit i: id high - i was taken */
};

/** Take @p id from this sender? false: seen before, or older than the window. */
bool sl_cport_window_take(struct sl_cport_window *w, uint64_t id);

/*
 * Putting a message together from its chunks. The buffer has the message's
 * size; got[] has a bit per chunk, so a chunk that comes twice counts once.
 *
 *   buf: | chunk 0 | chunk 1 | ... | last (shorter) |
 *   got: | 1 | 0 | 1 | ...   one bit per chunk
 */
struct sl_cport_asm {
	char *buf;
	uint32_t total;
	uint32_t left; /* chunks still missing */
	uint64_t *got;
};

/** Start a message of @p total bytes. @return 0, or -ENOMEM. */
int sl_cport_asm_init(struct sl_cport_asm *a, uint32_t total);
/** Add a chunk (already checked by sl_cport_decode against this total).
 *  @return true once the message is whole. */
bool sl_cport_asm_add(struct sl_cport_asm *a, uint32_t off, const void *p, uint32_t len);
/** Hand the buffer over (the caller frees it) and reset @p a. */
char *sl_cport_asm_take(struct sl_cport_asm *a);
void sl_cport_asm_fini(struct sl_cport_asm *a);

#endif
