#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/cmsg.h"

static const uint8_t KEY[SL_CMSG_KEY] = "0123456789abcdef0123456789abcdef";
static const uint8_t OTHER[SL_CMSG_KEY] = "0123456789abcdef0123456789abcdeF";

Test(cmsg, frame_round_trip)
{
	uint8_t buf[256];
	const char body[] = "hello";
	struct sl_cmsg m = {.type = SL_CMSG_HEARTBEAT,
	                    .sender = 7,
	                    .epoch = 42,
	                    .seq = 1000,
	                    .body = (const uint8_t *)body,
	                    .body_len = 5};
	size_t n = sl_cmsg_encode(buf, &m, KEY);
	cr_assert_eq(n, SL_CMSG_HDR + 5 + SL_CMSG_MAC);
	cr_assert(memcmp(buf, "SLC1\x01\x02", 6) == 0);
	struct sl_cmsg d;
	size_t used;
	cr_assert_eq(sl_cmsg_decode(buf, n, KEY, &d, &used), SL_CMSG_OK);
	cr_assert_eq(used, n);
	cr_assert_eq(d.type, SL_CMSG_HEARTBEAT);
	cr_assert_eq(d.sender, 7);
	cr_assert_eq(d.epoch, 42);
	cr_assert_eq(d.seq, 1000);
	cr_assert_eq(d.body_len, 5);
	cr_assert(memcmp(d.body, "hello", 5) == 0);
	/* a frame followed by the start of the next: just the frame */
	memcpy(buf + n, "SLC1", 4);
	cr_assert_eq(sl_cmsg_decode(buf, n + 4, KEY, &d, &used), SL_CMSG_OK);
	cr_assert_eq(used, n);
}

Test(cmsg, without_the_key_or_altered_nothing_is_accepted)
{
	uint8_t buf[256];
	struct sl_cmsg m = {.type = SL_CMSG_TABLE,
	                    .sender = SL_CMSG_CONTROLLER,
	                    .epoch = 9,
	                    .seq = 5,
	                    .body = (const uint8_t *)"abcdefgh",
	                    .body_len = 8};
	size_t n = sl_cmsg_encode(buf, &m, KEY);
	struct sl_cmsg d;
	size_t used;
	cr_assert_eq(sl_cmsg_decode(buf, n, OTHER, &d, &used), SL_CMSG_FORGED);
	/* every bit of the frame matters */
	for (size_t i = 0; i < n; i++)
		for (int b = 0; b < 8; b++) {
			buf[i] ^= (uint8_t)(1 << b);
			enum sl_cmsg_verdict v = sl_cmsg_decode(buf, n, KEY, &d, &used);
			cr_assert(v != SL_CMSG_OK, "byte %zu bit %d flipped and accepted", i, b);
			buf[i] ^= (uint8_t)(1 << b);
		}
	cr_assert_eq(sl_cmsg_decode(buf, n, KEY, &d, &used), SL_CMSG_OK);
	/* cut short: wait for more; not ours: refused at once */
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(sl_cmsg_decode(buf, i, KEY, &d, &used), SL_CMSG_SHORT, "%zu", i);
	cr_assert_eq(sl_cmsg_decode((const uint8_t *)"GET ", 4, KEY, &d, &used), SL_CMSG_BAD);
	cr_assert_eq(sl_cmsg_decode((const uint8_t *)"SX", 2, KEY, &d, &used), SL_CMSG_BAD);
	/* a length past the limit is refused without waiting for it */
	uint8_t big[SL_CMSG_HDR];
	memcpy(big, buf, SL_CMSG_HDR);
	big[8] = 0x7f;
	cr_assert_eq(sl_cmsg_decode(big, sizeof(big), KEY, &d, &used), SL_CMSG_BAD);
}

Test(cmsg, replays_are_refused)
{
	uint64_t last = 0;
	cr_assert(sl_cmsg_fresh(&last, 10));
	cr_assert(!sl_cmsg_fresh(&last, 10));
	cr_assert(!sl_cmsg_fresh(&last, 9));
	cr_assert(sl_cmsg_fresh(&last, 11));
}

static struct sl_cmsg_table t, back;

static void three_nodes(void)
{
	memset(&t, 0, sizeof(t));
	t.n = 3;
	for (unsigned i = 0; i < 3; i++) {
		t.node[i].id = (uint16_t)(i + 1);
		t.node[i].ip = htonl(0xc6120000u + i + 1);
		t.node[i].port = 11211;
		t.node[i].workers = 1;
		t.node[i].weight = 1;
	}
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		t.primary[s] = (uint16_t)(s % 3 + 1);
		t.backup[s] = (uint16_t)((s + 1) % 3 + 1);
	}
}

Test(cmsg, table_round_trip_and_each_node_views_it)
{
	three_nodes();
	size_t sz = sl_cmsg_table_size(3);
	uint8_t *body = malloc(sz);
	cr_assert_eq(sl_cmsg_table_encode(body, &t), sz);
	cr_assert_eq(sl_cmsg_table_decode(body, (uint32_t)sz, &back), 0);
	cr_assert_eq(back.n, 3);
	cr_assert(memcmp(back.node, t.node, 3 * sizeof(t.node[0])) == 0);
	cr_assert(memcmp(back.primary, t.primary, sizeof(t.primary)) == 0);
	cr_assert(memcmp(back.backup, t.backup, sizeof(t.backup)) == 0);
	static struct sl_table view;
	cr_assert_eq(sl_cmsg_table_apply(&back, 5, 2, 2, &view), 0);
	cr_assert_eq(view.epoch, 5);
	unsigned mine = 0, cores[2] = {0};
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		if (s % 3 + 1 == 2) {
			mine++;
			cr_assert_eq(view.state[s], SL_SLOT_SERVING);
			cores[view.core[s]]++;
		} else {
			cr_assert_eq(view.state[s], SL_SLOT_REMOTE);
			cr_assert_eq(view.core[s], SL_CORE_ELSEWHERE);
			cr_assert_eq(view.node[s], s % 3 + 1);
		}
	}
	cr_assert_eq(mine, 5461);
	cr_assert(cores[0] >= 2730 && cores[1] >= 2730);
	cr_assert_eq(sl_cmsg_table_apply(&back, 5, 9, 1, &view), -EINVAL, "not in the table");
	free(body);
}

Test(cmsg, inconsistent_tables_are_refused)
{
	size_t sz = sl_cmsg_table_size(3);
	uint8_t *body = malloc(sz);
	three_nodes();
	sl_cmsg_table_encode(body, &t);
	cr_assert_eq(sl_cmsg_table_decode(body, (uint32_t)sz - 1, &back), -EINVAL, "length");
	three_nodes();
	t.node[1].id = 1; /* an id twice */
	sl_cmsg_table_encode(body, &t);
	cr_assert_eq(sl_cmsg_table_decode(body, (uint32_t)sz, &back), -EINVAL);
	three_nodes();
	t.primary[100] = 77; /* not a node */
	sl_cmsg_table_encode(body, &t);
	cr_assert_eq(sl_cmsg_table_decode(body, (uint32_t)sz, &back), -EINVAL);
	three_nodes();
	t.backup[5] = t.primary[5]; /* backup on the primary */
	sl_cmsg_table_encode(body, &t);
	cr_assert_eq(sl_cmsg_table_decode(body, (uint32_t)sz, &back), -EINVAL);
	three_nodes();
	t.backup[5] = SL_CMSG_NO_NODE; /* no backup: fine */
	t.node[2].workers = 0;         /* a node without workers: not */
	sl_cmsg_table_encode(body, &t);
	cr_assert_eq(sl_cmsg_table_decode(body, (uint32_t)sz, &back), -EINVAL);
	uint8_t none[2] = {0, 0};
	cr_assert_eq(sl_cmsg_table_decode(none, 2, &back), -EINVAL, "no nodes");
	free(body);
}
