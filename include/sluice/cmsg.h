/*
 * Cluster messages: the frame every message between the controller and the
 * nodes (and later between nodes) travels in, and the slot-table push.
 *
 * Every frame names its sender, carries the sender's epoch and a sequence
 * number, and ends in a MAC keyed with the cluster key (BLAKE2b, 16 bytes,
 * libsodium's crypto_generichash), so a node accepts nothing from anyone
 * without the key, nothing replayed (a sequence at or below the last one
 * seen from that sender) and no slot table older than the one it has.
 * Senders start their sequence at their start time in microseconds, so a
 * restarted sender goes on above the numbers it used before. All integers
 * are big-endian.
 *
 *   frame:
 *   0        4    5    6      8            12           16          24          32
 *   +--------+----+----+------+------------+------------+-----------+-----------+
 *   | "SLC1" | v1 |type| 0    | body len   | sender id  | epoch     | sequence  |
 *   +--------+----+----+------+------------+------------+-----------+-----------+
 *   | body (body len bytes, at most SL_CMSG_BODY_MAX)   | MAC (16)              |
 *   +---------------------------------------------------+-----------------------+
 *     the MAC covers bytes 0 .. 32 + body len
 *
 *   SL_CMSG_TABLE body (the epoch is the frame's):
 *   0         2                       2 + 20n                  2 + 20n + 4 x 16384
 *   +---------+-----------------------+------------------------+
 *   | n (u16) | n node entries        | 16384 slot entries     |
 *   +---------+-----------------------+------------------------+
 *   node entry (20 B):
 *   | id u16 | ipv4 (4) | port u16 | cluster port u16 | MAC (6) | workers u8 | weight u8 | 0 u16 |
 *   slot entry (4 B):  | primary node id u16 | backup node id u16 (0xffff: none) |
 *
 *   SL_CMSG_REGISTER body (node -> controller, first on a connection):
 *   | ipv4 (4) | port u16 | cluster port u16 | MAC (6) | workers u8 | weight u8 |
 *   | name length u8 | name |
 *   SL_CMSG_ACK body (controller -> node): | node id u16 | lease ms u32 |
 *   (the older 2-byte body: no lease)
 *   SL_CMSG_HEARTBEAT (node -> controller): the epoch is the table the
 *   node routes by; the body, first what it holds whole of the slots it
 *   backs up, per primary: | n u16 | n x | primary node id u16 | epoch
 *   u64 | (the epoch of the last snapshot it applied from every core of
 *   that primary; 0 while one is missing), then its replication streams:
 *   | m u16 | m x | backup node id u16 | core u8 | backup core u8 |
 *   state u8 (0 resyncing, 1 streaming, 2 draining) | 0 u8 | lag records
 *   u32 | lag us u32 |. The controller answers each with a HEARTBEAT
 *   of its own (its epoch), whose body is the node's heartbeat sequence
 *   (u64) when the node routes by the current epoch: that answer renews
 *   the node's write lease; without a body it renews nothing.
 *   SL_CMSG_STATUS (sluicectl -> controller): no body; answered with a
 *   STATUS frame whose body is JSON: {"epoch": E, "nodes": [{"id", "name",
 *   "addr", "alive", "weight", "primary_slots", "backup_slots"}]}.
 *   SL_CMSG_TABLE_GET (sluicectl -> controller): answered with the current
 *   TABLE push.
 *
 * A slot table is the same for every node; each derives its own view
 * (sl_cmsg_table_apply): its slots SERVING, slot s on its worker
 * s % workers, every other slot REMOTE at its primary, each slot's backup,
 * and every other node's cluster-port address for forwarding.
 */
#ifndef SLUICE_CMSG_H
#define SLUICE_CMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/slot.h"

#define SL_CMSG_HDR 32
#define SL_CMSG_MAC 16
#define SL_CMSG_KEY 32
#define SL_CMSG_BODY_MAX (1u << 20)
#define SL_CMSG_CONTROLLER 0xffffffffu
#define SL_CMSG_NO_NODE 0xffffu
#define SL_CMSG_NODES_MAX 1024

enum sl_cmsg_type {
	SL_CMSG_REGISTER = 1,
	SL_CMSG_HEARTBEAT = 2,
	SL_CMSG_TABLE = 3,
	SL_CMSG_ACK = 4,
	SL_CMSG_STATUS = 5,    /* operator -> controller: no body; the answer: JSON */
	SL_CMSG_TABLE_GET = 6, /* operator -> controller: answered with SL_CMSG_TABLE */
};

/* The sender id of an operator's tool (sluicectl). */
#define SL_CMSG_OPERATOR 0xfffffffeu

struct sl_cmsg {
	uint8_t type;
	uint32_t sender;
	uint64_t epoch;
	uint64_t seq;
	const uint8_t *body; /* points into the frame */
	uint32_t body_len;
};

enum sl_cmsg_verdict {
	SL_CMSG_OK = 0,
	SL_CMSG_SHORT,    /* not a whole frame yet: read more */
	SL_CMSG_BAD,      /* not a frame of ours (magic, version, length) */
	SL_CMSG_FORGED,   /* the MAC does not match: wrong or no key */
	SL_CMSG_REPLAYED, /* a sequence already seen from that sender */
};

/** Bytes a frame with a body of @p body_len takes. */
static inline size_t sl_cmsg_size(uint32_t body_len)
{
	return SL_CMSG_HDR + (size_t)body_len + SL_CMSG_MAC;
}

/**
 * Write a frame of @p m (m->body_len bytes of m->body) into @p out, which
 * has room for sl_cmsg_size(m->body_len) bytes, authenticated with @p key.
 * @return the frame's length, or 0 for a body over SL_CMSG_BODY_MAX.
 */
size_t sl_cmsg_encode(uint8_t *out, const struct sl_cmsg *m, const uint8_t key[SL_CMSG_KEY]);

/**
 * Read the frame at the start of @p in (@p len bytes available): on
 * SL_CMSG_OK, @p m describes it and *used is its length. The MAC is
 * checked before anything in the body is trusted. Replays are the
 * caller's to judge (sl_cmsg_fresh), since it knows the senders.
 */
enum sl_cmsg_verdict sl_cmsg_decode(const uint8_t *in, size_t len, const uint8_t key[SL_CMSG_KEY],
                                    struct sl_cmsg *m, size_t *used);

/** Replay guard: accept @p seq from a sender whose last was *last. */
static inline bool sl_cmsg_fresh(uint64_t *last, uint64_t seq)
{
	if (seq <= *last)
		return false;
	*last = seq;
	return true;
}

struct sl_cmsg_node {
	uint16_t id;
	uint32_t ip; /* network order */
	uint16_t port;
	uint16_t cport; /* the cluster port (UDP, fast path) */
	uint8_t mac[6];
	uint8_t workers;
	uint8_t weight;
};

struct sl_cmsg_table {
	unsigned n;
	struct sl_cmsg_node node[SL_CMSG_NODES_MAX];
	uint16_t primary[SL_SLOTS];
	uint16_t backup[SL_SLOTS];
};

/** Body of a table push; @p out has room for sl_cmsg_table_size(t->n). */
size_t sl_cmsg_table_size(unsigned n);
size_t sl_cmsg_table_encode(uint8_t *out, const struct sl_cmsg_table *t);

/**
 * Parse a table push's body. Refused (-EINVAL): a wrong length, no node or
 * more than SL_CMSG_NODES_MAX, a node id twice or SL_CMSG_NO_NODE, a slot
 * whose primary is not a listed node, a backup that is neither a listed
 * node other than the primary nor SL_CMSG_NO_NODE.
 */
int sl_cmsg_table_decode(const uint8_t *body, uint32_t len, struct sl_cmsg_table *t);

/**
 * This node's view of table @p t under epoch @p epoch: node @p self with
 * @p nworkers workers. @return 0 (@p out sealed), or -EINVAL (this node is
 * not in the table, or the table does not seal).
 */
int sl_cmsg_table_apply(const struct sl_cmsg_table *t, uint64_t epoch, uint16_t self,
                        unsigned nworkers, struct sl_table *out);

struct sl_cmsg_register {
	uint32_t ip; /* network order */
	uint16_t port;
	uint16_t cport;
	uint8_t mac[6];
	uint8_t workers;
	uint8_t weight;
	char name[64];
};

/** REGISTER body into @p out (at least 81 bytes); returns its length. */
size_t sl_cmsg_register_encode(uint8_t *out, const struct sl_cmsg_register *r);
/** @return 0, or -EINVAL (length, an empty or non-printable name, no
 *  workers, weight 0). */
int sl_cmsg_register_decode(const uint8_t *body, uint32_t len, struct sl_cmsg_register *r);

/**
 * Read the cluster key from @p path: 64 hexadecimal digits, in a file only
 * its owner may read. @return 0, or a negative errno with *why saying what
 * is wrong.
 */
int sl_cmsg_read_key(const char *path, uint8_t key[SL_CMSG_KEY], const char **why);

struct sockaddr_in;
/**
 * Parse "A.B.C.D:PORT" (port 1-65535) into @p out. @return 0, or -EINVAL
 * with the part that is wrong (the whole, the address or the port) copied
 * into @p bad for the caller's message.
 */
int sl_hostport_parse(const char *s, struct sockaddr_in *out, char *bad, size_t badlen);

#endif
