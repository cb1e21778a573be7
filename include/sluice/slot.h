/*
 * Keys, slots and the slot table.
 *
 * Every request's key is hashed exactly once, with XXH3-64 (seed 0), where
 * the request is parsed; the 64-bit hash then travels with the request (the
 * store hashes stored keys again only when it splits an index bucket, as
 * items do not keep their hash). The slot is h % 16384, Redis Cluster's
 * slot count: the unit of ownership, replication and migration.
 *
 * The slot table says, for every slot, which node owns it, which of that
 * node's worker cores, and in what state the slot is here; one epoch
 * stands for the whole table and grows with every change of ownership. A
 * published table is never changed: a new one is built, checked and
 * swapped in whole (by the node's main lcore, behind an RCU pointer: see
 * dataplane/table.c), so a reader always sees one consistent epoch.
 *
 *     hash(key) --%16384--> slot --core[slot]--> owner core here, or
 *                                                SL_CORE_ELSEWHERE
 *
 *     struct sl_table (~98 KB, one allocation):
 *     +--------+------+----------+-----------------+-----------------+----------------+
 *     | epoch  | self | nworkers | core[16384]     | state[16384]    | node[16384]    |
 *     | u64    | u16  | u16      | u8: owner core  | u8: SL_SLOT_*   | u16: owner     |
 *     |        |      | (+pad)   | here, or 0xff   |                 | node id        |
 *     +--------+------+----------+-----------------+-----------------+----------------+
 *     | backup[16384]: u16, the node that keeps a copy of the slot (0xffff:  |
 *     | none)                                                                 |
 *     +--------+---------------------------------------------------------------+
 *     | npeers | peer[SL_PEERS_MAX]: every node's addresses (node id, IPv4,   |
 *     |        | client port, cluster port, MAC, workers), for forwarding,    |
 *     |        | replication and clients                                       |
 *     +--------+---------------------------------------------------------------+
 *
 * core[] is what the data path reads, one byte per request (16 KiB, stays
 * in cache); it is derived from state[] and node[] by sl_table_seal, so
 * that it never disagrees with them. States:
 *
 *   SERVING    this node owns the slot and serves it
 *   MIGRATING  this node owns it and is streaming it to a new owner: it
 *              still serves it (and will forward its writes)
 *   IMPORTING  the slot is on its way here: its owner is still the old
 *              node, so requests go there until the cut-over
 *   REMOTE     another node owns it
 *
 * A node that runs alone has one table, epoch 1, every slot SERVING, slot s
 * on core s % workers, so that each core owns an equal, interleaved
 * share.
 */
#ifndef SLUICE_SLOT_H
#define SLUICE_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_SLOTS 16384u
#define SL_MAX_WORKERS 64u
#define SL_CORE_ELSEWHERE 0xffu

/** Hash a key: XXH3-64 with seed 0. The only place keys are hashed. */
uint64_t sl_key_hash(const void *key, size_t len);

/** Slot of a hash. */
static inline uint16_t sl_slot_of(uint64_t h)
{
	return (uint16_t)(h % SL_SLOTS);
}

enum sl_slot_state {
	SL_SLOT_SERVING = 0,
	SL_SLOT_MIGRATING = 1,
	SL_SLOT_IMPORTING = 2,
	SL_SLOT_REMOTE = 3,
};

#define SL_PEERS_MAX 1024u

/* Where a node of the table is (this one included): its cluster port for
 * forwarding, its client port for smart clients (`stats table`). Nodes of
 * one cluster share a link (or a switch): the MAC is the node's own, as it
 * registered with the controller. */
struct sl_peer {
	uint16_t id;
	uint16_t port;  /* client UDP port, host order */
	uint16_t cport; /* network order */
	uint32_t ip;    /* network order */
	uint8_t mac[6];
	uint8_t workers; /* its worker cores: slot s is on its core s % workers */
};

struct sl_table {
	uint64_t epoch;
	uint16_t self; /* this node's id */
	uint16_t nworkers;
	uint8_t core[SL_SLOTS];  /* derived: owner core here, or SL_CORE_ELSEWHERE */
	uint8_t state[SL_SLOTS]; /* enum sl_slot_state */
	uint16_t node[SL_SLOTS]; /* owner node */
	uint16_t backup[SL_SLOTS]; /* the node keeping a copy (0xffff: none) */
	uint32_t npeers;
	struct sl_peer peer[SL_PEERS_MAX];
};

/** The address of node @p id, or NULL when the table does not list it. */
static inline const struct sl_peer *sl_table_peer(const struct sl_table *t, uint16_t id)
{
	for (uint32_t i = 0; i < t->npeers; i++)
		if (t->peer[i].id == id)
			return &t->peer[i];
	return NULL;
}

/**
 * A table for a node that runs alone: node @p self owns every slot,
 * SERVING, slot s on core s % @p nworkers, no backups; sealed.
 * @return 0, or -EINVAL when nworkers is 0 or above SL_MAX_WORKERS.
 */
int sl_table_init_local(struct sl_table *t, uint64_t epoch, uint16_t self, unsigned nworkers);

/**
 * Check @p t and derive core[] from state[] and node[]; called once a
 * table is filled in and before it is published. A slot that is SERVING or
 * MIGRATING must name this node and a core below nworkers; IMPORTING and
 * REMOTE must name another node.
 * @return 0, or -EINVAL (the table must not be published).
 */
int sl_table_seal(struct sl_table *t);

/** The core here that owns hash @p h's slot, or SL_CORE_ELSEWHERE. */
static inline unsigned sl_slot_owner(const struct sl_table *t, uint64_t h)
{
	return t->core[sl_slot_of(h)];
}

#endif
