#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sluice/slot.h"

Test(slot, hash_is_xxh3_seed0)
{
	/* XXH3_64bits("") with seed 0, from the xxHash reference */
	cr_assert_eq(sl_key_hash("", 0), UINT64_C(0x2D06800538D394C2));
	cr_assert_eq(sl_key_hash("foo", 3), sl_key_hash("foo", 3));
	cr_assert_neq(sl_key_hash("foo", 3), sl_key_hash("fop", 3));
}

Test(slot, slot_range_and_spread)
{
	static unsigned hits[SL_SLOTS];
	char k[32];
	for (int i = 0; i < 200000; i++) {
		int n = snprintf(k, sizeof(k), "key:%d", i);
		uint16_t s = sl_slot_of(sl_key_hash(k, (size_t)n));
		cr_assert_lt(s, SL_SLOTS);
		hits[s]++;
	}
	unsigned empty = 0;
	for (unsigned s = 0; s < SL_SLOTS; s++)
		empty += hits[s] == 0;
	/* 200k keys over 16384 slots: ~12 per slot, an empty slot is rare */
	cr_assert_lt(empty, 10);
}

Test(slot, map_round_robin)
{
	struct sl_slot_map m;
	cr_assert_eq(sl_slot_map_init(&m, 0), -EINVAL);
	cr_assert_eq(sl_slot_map_init(&m, SL_MAX_WORKERS + 1), -EINVAL);
	cr_assert_eq(sl_slot_map_init(&m, 3), 0);
	unsigned count[3] = {0};
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		cr_assert_lt(m.owner[s], 3);
		count[m.owner[s]]++;
	}
	cr_assert(count[0] >= 5461 && count[1] >= 5461 && count[2] >= 5461);
	uint64_t h = sl_key_hash("abc", 3);
	cr_assert_eq(sl_slot_owner(&m, h), m.owner[h % SL_SLOTS]);
}
