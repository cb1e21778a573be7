/* Cluster-port datagrams: what a forged, cut or misplaced chunk gets, the
 * replay window, and messages put together from chunks in any order. */
#include <criterion/criterion.h>
#include <string.h>

#include "sluice/cport.h"

static const uint8_t KEY[SL_CPORT_KEY] = "0123456789abcdef0123456789abcdef";
static const uint8_t OTHER[SL_CPORT_KEY] = "0123456789abcdef0123456789abcdeF";

static size_t make(uint8_t *dg, uint32_t total, uint32_t off, const char *data, size_t n)
{
	struct sl_cport_hdr h = {.type = SL_CPORT_REQ,
	                         .hops = 0,
	                         .node = 3,
	                         .worker = 1,
	                         .chunk = (uint16_t)n,
	                         .total = total,
	                         .off = off,
	                         .epoch = 9,
	                         .id = 1234567890123ull};
	return sl_cport_encode(dg, &h, data, KEY);
}

Test(cport, round_trip_and_the_mac_guards_every_byte)
{
	uint8_t dg[sl_cport_size(SL_CPORT_CHUNK)];
	size_t n = make(dg, 12, 0, "get k\r\nmn\r\n\0", 12);
	cr_assert_eq(n, SL_CPORT_HDR + 12 + SL_CPORT_MAC);
	struct sl_cport_hdr h;
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_OK);
	cr_assert_eq(h.type, SL_CPORT_REQ);
	cr_assert_eq(h.node, 3);
	cr_assert_eq(h.worker, 1);
	cr_assert_eq(h.epoch, 9);
	cr_assert_eq(h.id, 1234567890123ull);
	cr_assert_eq(h.total, 12);
	cr_assert_eq(memcmp(dg + SL_CPORT_HDR, "get k\r\nmn\r\n", 11), 0);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, OTHER, &h), SL_CPORT_FORGED);
	for (size_t i = 4; i < n; i++) {
		dg[i] ^= 0x40;
		enum sl_cport_verdict v = sl_cport_decode(dg, n, 1 << 20, KEY, &h);
		cr_assert_neq(v, SL_CPORT_OK, "byte %zu changed, still taken", i);
		dg[i] ^= 0x40;
	}
	cr_assert_eq(sl_cport_decode(dg, n - 1, 1 << 20, KEY, &h), SL_CPORT_BAD, "cut short");
	cr_assert_eq(sl_cport_decode(dg, 10, 1 << 20, KEY, &h), SL_CPORT_BAD);
	cr_assert_eq(sl_cport_decode(dg, n, 11, KEY, &h), SL_CPORT_BAD, "over the largest message");
}

Test(cport, chunks_must_sit_in_their_place)
{
	static char big[3 * SL_CPORT_CHUNK];
	uint8_t dg[sl_cport_size(SL_CPORT_CHUNK)];
	struct sl_cport_hdr h;
	uint32_t total = 2 * SL_CPORT_CHUNK + 100;
	size_t n = make(dg, total, SL_CPORT_CHUNK, big, SL_CPORT_CHUNK);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_OK);
	n = make(dg, total, 2 * SL_CPORT_CHUNK, big, 100);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_OK, "the last, shorter");
	n = make(dg, total, SL_CPORT_CHUNK, big, 100);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_BAD, "short, not last");
	n = make(dg, total, 7, big, SL_CPORT_CHUNK);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_BAD, "off a boundary");
	n = make(dg, total, 3 * SL_CPORT_CHUNK, big, 0);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_BAD, "past the end");
	n = make(dg, 0, 0, big, 0);
	cr_assert_eq(sl_cport_decode(dg, n, 1 << 20, KEY, &h), SL_CPORT_OK, "an empty message");
}

Test(cport, replay_window_takes_each_id_once_in_any_order)
{
	struct sl_cport_window w = {0};
	cr_assert(sl_cport_window_take(&w, 1000));
	cr_assert(sl_cport_window_take(&w, 1003));
	cr_assert(sl_cport_window_take(&w, 1001), "overtaken on the way: still taken");
	cr_assert_not(sl_cport_window_take(&w, 1001), "a copy");
	cr_assert_not(sl_cport_window_take(&w, 1003));
	cr_assert(sl_cport_window_take(&w, 1002));
	cr_assert(sl_cport_window_take(&w, 1003 + SL_CPORT_WINDOW));
	cr_assert_not(sl_cport_window_take(&w, 1003), "older than the window");
	cr_assert_not(sl_cport_window_take(&w, 999));
	cr_assert(sl_cport_window_take(&w, 1004 + SL_CPORT_WINDOW - SL_CPORT_WINDOW + 1));
	cr_assert(sl_cport_window_take(&w, 100000), "a leap forward");
	cr_assert_not(sl_cport_window_take(&w, 1003 + SL_CPORT_WINDOW));
}

Test(cport, a_message_from_chunks_in_any_order_and_twice)
{
	static char msg[5 * SL_CPORT_CHUNK + 17];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (char)(i * 7 + 3);
	struct sl_cport_asm a = {0};
	cr_assert_eq(sl_cport_asm_init(&a, sizeof(msg)), 0);
	unsigned order[] = {5, 2, 2, 0, 4, 1, 0, 3};
	for (unsigned i = 0; i < 8; i++) {
		uint32_t off = order[i] * SL_CPORT_CHUNK;
		uint32_t len = sizeof(msg) - off < SL_CPORT_CHUNK ? sizeof(msg) - off : SL_CPORT_CHUNK;
		bool whole = sl_cport_asm_add(&a, off, msg + off, len);
		cr_assert_eq(whole, i == 7, "whole after chunk %u of 8?", i);
	}
	char *b = sl_cport_asm_take(&a);
	cr_assert_eq(memcmp(b, msg, sizeof(msg)), 0);
	free(b);
	cr_assert_null(a.buf);
}
