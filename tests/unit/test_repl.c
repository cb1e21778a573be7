/* Replication records, batches and acks (include/sluice/repl.h): what
 * goes out comes back the same, and what is cut, mislabelled or stretched
 * past its batch is refused. */
#include <criterion/criterion.h>
#include <string.h>

#include "sluice/repl.h"

Test(repl, a_set_record_round_trips_with_every_field)
{
	uint8_t buf[128];
	struct sl_rec r = {.kind = SL_REC_SET,
	                   .klen = 3,
	                   .bits = 4,
	                   .flags = 0xdeadbeef,
	                   .exptime = 1700000000,
	                   .cas = 0x0102030405060708ull,
	                   .vlen = 5,
	                   .key = "abc",
	                   .value = "hello"};
	size_t n = sl_rec_put(buf, &r);
	cr_assert_eq(n, SL_REPL_REC_HDR + 8);
	struct sl_rec g;
	cr_assert_eq(sl_rec_get(buf, n, &g), n);
	cr_assert_eq(g.kind, SL_REC_SET);
	cr_assert_eq(g.flags, 0xdeadbeef);
	cr_assert_eq(g.exptime, 1700000000u);
	cr_assert_eq(g.cas, 0x0102030405060708ull);
	cr_assert_eq(g.bits, 4);
	cr_assert_eq(g.vlen, 5);
	cr_assert(memcmp(g.key, "abc", 3) == 0 && memcmp(g.value, "hello", 5) == 0);
	/* big-endian on the wire, as the header's drawing says */
	cr_assert_eq(buf[4], 0xde);
	cr_assert_eq(buf[12], 0x01);
}

Test(repl, a_record_cut_short_or_stretched_is_refused)
{
	uint8_t buf[128];
	struct sl_rec r = {.kind = SL_REC_SET, .klen = 3, .vlen = 5, .key = "abc", .value = "hello"};
	size_t n = sl_rec_put(buf, &r);
	struct sl_rec g;
	for (size_t cut = 0; cut < n; cut++)
		cr_assert_eq(sl_rec_get(buf, cut, &g), 0, "accepted %zu of %zu bytes", cut, n);
	buf[20] = 0x7f; /* vlen past the batch */
	cr_assert_eq(sl_rec_get(buf, n, &g), 0);
}

Test(repl, kinds_carry_exactly_what_they_may)
{
	uint8_t buf[128];
	struct sl_rec g;
	/* a DEL needs a key and no value; a RESET no key */
	struct sl_rec del = {.kind = SL_REC_DEL, .klen = 1, .key = "k"};
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &del), &g), SL_REPL_REC_HDR + 1);
	struct sl_rec del0 = {.kind = SL_REC_DEL};
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &del0), &g), 0);
	struct sl_rec delv = {.kind = SL_REC_DEL, .klen = 1, .key = "k", .vlen = 1, .value = "v"};
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &delv), &g), 0);
	struct sl_rec reset = {.kind = SL_REC_RESET, .cas = 42};
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &reset), &g), SL_REPL_REC_HDR);
	cr_assert_eq(g.cas, 42);
	struct sl_rec resetk = {.kind = SL_REC_RESET, .klen = 1, .key = "k"};
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &resetk), &g), 0);
	struct sl_rec bad = {.kind = 0};
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &bad), &g), 0);
	bad.kind = SL_REC_HANDOVER + 1;
	cr_assert_eq(sl_rec_get(buf, sl_rec_put(buf, &bad), &g), 0);
}

Test(repl, batch_header_and_ack_round_trip)
{
	uint8_t b[SL_REPL_BATCH_HDR];
	struct sl_repl_batch in = {.gen = 1ull << 60, .first = 77, .count = 9, .core = 3}, out;
	sl_repl_batch_put(b, &in);
	cr_assert_eq(sl_repl_batch_get(b, sizeof(b), &out), 0);
	cr_assert(out.gen == in.gen && out.first == 77 && out.count == 9 && out.core == 3);
	cr_assert_eq(sl_repl_batch_get(b, sizeof(b) - 1, &out), -1);
	uint8_t a[SL_REPL_ACK_LEN];
	struct sl_repl_ack ai = {.gen = 5, .acked = 1234, .flags = SL_RACK_NACK, .core = 2}, ao;
	sl_repl_ack_put(a, &ai);
	cr_assert_eq(sl_repl_ack_get(a, sizeof(a), &ao), 0);
	cr_assert(ao.gen == 5 && ao.acked == 1234 && ao.flags == SL_RACK_NACK && ao.core == 2);
	cr_assert_eq(sl_repl_ack_get(a, sizeof(a) - 1, &ao), -1);
	cr_assert_eq(sl_repl_ack_get(a, sizeof(a) + 1, &ao), -1);
}
