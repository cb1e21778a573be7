/*
 * Keys, slots and owner cores.
 *
 * Every request's key is hashed exactly once, with XXH3-64 (seed 0), where
 * the request is parsed; the 64-bit hash then travels with the request (the
 * store hashes stored keys again only when it splits an index bucket, as
 * items do not keep their hash). The slot is
 * h % 16384, Redis Cluster's slot count: the unit of ownership, replication
 * and migration. Inside a node each slot belongs to one worker core, recorded
 * in a slot map (one byte per slot, 16 KiB, read-only on the data path):
 *
 *     hash(key) --%16384--> slot --map[slot]--> owner core
 *
 *     map:  +----+----+----+----+-- ... --+----+
 *           | c0 | c1 | c0 | c1 |         | c1 |   16384 bytes
 *           +----+----+----+----+-- ... --+----+
 *
 * The default map deals slots round-robin to the workers so that each core
 * owns an equal, interleaved share; the cluster controller replaces it later.
 */
#ifndef SLUICE_SLOT_H
#define SLUICE_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define SL_SLOTS 16384u
#define SL_MAX_WORKERS 64u

/** Hash a key: XXH3-64 with seed 0. The only place keys are hashed. */
uint64_t sl_key_hash(const void *key, size_t len);

/** Slot of a hash. */
static inline uint16_t sl_slot_of(uint64_t h)
{
	return (uint16_t)(h % SL_SLOTS);
}

/** Which worker core owns each slot. */
struct sl_slot_map {
	uint8_t owner[SL_SLOTS];
	uint32_t nworkers;
};

/**
 * Deal slots round-robin to @p nworkers cores.
 * @return 0, or -EINVAL when nworkers is 0 or above SL_MAX_WORKERS.
 */
int sl_slot_map_init(struct sl_slot_map *m, uint32_t nworkers);

static inline unsigned sl_slot_owner(const struct sl_slot_map *m, uint64_t h)
{
	return m->owner[sl_slot_of(h)];
}

#endif
