#include <errno.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sluice/slot.h"

uint64_t sl_key_hash(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

int sl_slot_map_init(struct sl_slot_map *m, uint32_t nworkers)
{
	if (nworkers == 0 || nworkers > SL_MAX_WORKERS)
		return -EINVAL;
	m->nworkers = nworkers;
	for (uint32_t s = 0; s < SL_SLOTS; s++)
		m->owner[s] = (uint8_t)(s % nworkers);
	return 0;
}
