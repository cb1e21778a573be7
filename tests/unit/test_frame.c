#include <criterion/criterion.h>

#include "sluice/frame.h"

Test(frame, roundtrip_big_endian)
{
	uint8_t b[8];
	struct sl_frame f = {.id = 0x1234, .seq = 2, .count = 7, .reserved = 0}, g;
	sl_frame_encode(b, &f);
	cr_assert_eq(b[0], 0x12);
	cr_assert_eq(b[1], 0x34);
	cr_assert_eq(b[3], 2);
	cr_assert_eq(b[5], 7);
	cr_assert_eq(sl_frame_decode(b, 8, &g), SL_FRAME_MULTI);
	cr_assert_eq(g.id, 0x1234);
	cr_assert_eq(g.seq, 2);
	cr_assert_eq(g.count, 7);
}

Test(frame, request_rules)
{
	uint8_t ok[8] = {0xab, 0xcd, 0, 0, 0, 1, 0, 0};
	uint8_t seq1[8] = {0, 1, 0, 1, 0, 1, 0, 0};
	uint8_t cnt2[8] = {0, 1, 0, 0, 0, 2, 0, 0};
	uint8_t cnt0[8] = {0, 1, 0, 0, 0, 0, 0, 0};
	struct sl_frame f;
	cr_assert_eq(sl_frame_decode(ok, 8, &f), SL_FRAME_OK);
	cr_assert_eq(f.id, 0xabcd);
	cr_assert_eq(sl_frame_decode(ok, 7, &f), SL_FRAME_SHORT);
	cr_assert_eq(sl_frame_decode(seq1, 8, &f), SL_FRAME_MULTI);
	cr_assert_eq(sl_frame_decode(cnt2, 8, &f), SL_FRAME_MULTI);
	cr_assert_eq(sl_frame_decode(cnt0, 8, &f), SL_FRAME_MULTI);
}

Test(frame, datagram_count)
{
	/* 1400-byte UDP payloads, 8 of them header: memcached's sizes */
	cr_assert_eq(SL_UDP_CHUNK, 1392);
	cr_assert_eq(sl_frame_count(0), 1);
	cr_assert_eq(sl_frame_count(1), 1);
	cr_assert_eq(sl_frame_count(SL_UDP_CHUNK), 1);
	cr_assert_eq(sl_frame_count(SL_UDP_CHUNK + 1), 2);
	cr_assert_eq(sl_frame_count(1048576), (1048576 + SL_UDP_CHUNK - 1) / SL_UDP_CHUNK);
}
