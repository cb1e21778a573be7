#include <errno.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sluice/slot.h"

uint64_t sl_key_hash(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

int sl_table_init_local(struct sl_table *t, uint64_t epoch, uint16_t self, unsigned nworkers)
{
	if (nworkers == 0 || nworkers > SL_MAX_WORKERS)
		return -EINVAL;
	memset(t, 0, sizeof(*t));
	t->epoch = epoch;
	t->self = self;
	t->nworkers = (uint16_t)nworkers;
	for (uint32_t s = 0; s < SL_SLOTS; s++) {
		t->core[s] = (uint8_t)(s % nworkers);
		t->state[s] = SL_SLOT_SERVING;
		t->node[s] = self;
		t->backup[s] = 0xffff;
	}
	return sl_table_seal(t);
}

int sl_table_seal(struct sl_table *t)
{
	if (t->nworkers == 0 || t->nworkers > SL_MAX_WORKERS || t->epoch == 0)
		return -EINVAL;
	for (uint32_t s = 0; s < SL_SLOTS; s++) {
		bool here = t->state[s] == SL_SLOT_SERVING || t->state[s] == SL_SLOT_MIGRATING;
		if (t->state[s] > SL_SLOT_REMOTE || here != (t->node[s] == t->self))
			return -EINVAL;
		if (here && t->core[s] >= t->nworkers)
			return -EINVAL;
		if (!here)
			t->core[s] = SL_CORE_ELSEWHERE;
	}
	return 0;
}
