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

Test(slot, local_table_round_robin)
{
	static struct sl_table t;
	cr_assert_eq(sl_table_init_local(&t, 1, 0, 0), -EINVAL);
	cr_assert_eq(sl_table_init_local(&t, 1, 0, SL_MAX_WORKERS + 1), -EINVAL);
	cr_assert_eq(sl_table_init_local(&t, 7, 3, 3), 0);
	cr_assert_eq(t.epoch, 7);
	unsigned count[3] = {0};
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		cr_assert_lt(t.core[s], 3);
		cr_assert_eq(t.node[s], 3);
		count[t.core[s]]++;
	}
	cr_assert(count[0] >= 5461 && count[1] >= 5461 && count[2] >= 5461);
	uint64_t h = sl_key_hash("abc", 3);
	cr_assert_eq(sl_slot_owner(&t, h), t.core[h % SL_SLOTS]);
}

Test(slot, seal_derives_cores_and_refuses_inconsistent_tables)
{
	static struct sl_table t;
	cr_assert_eq(sl_table_init_local(&t, 1, 2, 2), 0);
	t.state[10] = SL_SLOT_REMOTE;
	t.node[10] = 5;
	t.state[11] = SL_SLOT_IMPORTING;
	t.node[11] = 6;
	t.state[12] = SL_SLOT_MIGRATING;
	cr_assert_eq(sl_table_seal(&t), 0);
	cr_assert_eq(t.core[10], SL_CORE_ELSEWHERE);
	cr_assert_eq(t.core[11], SL_CORE_ELSEWHERE, "importing: still served by its owner");
	cr_assert_lt(t.core[12], 2, "migrating: served here until the cut-over");
	/* a slot served here must name this node and one of its cores */
	t.node[13] = 9;
	cr_assert_eq(sl_table_seal(&t), -EINVAL);
	t.node[13] = 2;
	t.core[14] = 2;
	cr_assert_eq(sl_table_seal(&t), -EINVAL);
	t.core[14] = 1;
	t.state[15] = SL_SLOT_REMOTE; /* remote, but names this node */
	cr_assert_eq(sl_table_seal(&t), -EINVAL);
	t.state[15] = 9;
	t.node[15] = 4;
	cr_assert_eq(sl_table_seal(&t), -EINVAL, "unknown state");
	t.state[15] = SL_SLOT_SERVING;
	t.node[15] = 2;
	t.epoch = 0;
	cr_assert_eq(sl_table_seal(&t), -EINVAL, "epoch 0 is never published");
}
