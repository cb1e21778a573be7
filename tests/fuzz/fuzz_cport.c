/*
 * libFuzzer harness for cluster-port datagrams (include/sluice/cport.h):
 * the input as a datagram off the wire (refused: the fuzzer cannot forge
 * the MAC), then its bytes as the fields and chunk of a datagram signed
 * here, so that the checks after the MAC, the replay window and putting a
 * message together from its chunks are all reached.
 */
#include <stdlib.h>
#include <string.h>

#include "sluice/cport.h"

static const uint8_t KEY[SL_CPORT_KEY] = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_cport_hdr h;
	(void)sl_cport_decode(data, size, 1u << 20, KEY, &h);
	if (size < 16)
		return 0;
	/* fields from the input: type, hops, total, off; the rest is the chunk */
	struct sl_cport_hdr in = {.type = data[0] % 4,
	                          .hops = data[1],
	                          .node = (uint16_t)(data[2] << 8 | data[3]),
	                          .worker = data[4],
	                          .total = get32(data + 8) % (1u << 21),
	                          .off = get32(data + 12) % (1u << 21),
	                          .epoch = data[5],
	                          .id = data[6]};
	size_t chunk = size - 16 > SL_CPORT_CHUNK + 8 ? SL_CPORT_CHUNK + 8 : size - 16;
	in.chunk = (uint16_t)chunk;
	uint8_t dg[SL_CPORT_HDR + SL_CPORT_CHUNK + 8 + SL_CPORT_MAC];
	size_t n = sl_cport_encode(dg, &in, data + 16, KEY);
	if (sl_cport_decode(dg, n, 1u << 20, KEY, &h) == SL_CPORT_OK) {
		if (h.chunk > SL_CPORT_CHUNK || h.off + h.chunk > h.total || h.total > (1u << 20))
			abort(); /* the decoder let a chunk outside its message through */
		struct sl_cport_asm a = {0};
		if (sl_cport_asm_init(&a, h.total) == 0) {
			/* the same chunk twice counts once */
			bool whole = sl_cport_asm_add(&a, h.off, dg + SL_CPORT_HDR, h.chunk);
			if (sl_cport_asm_add(&a, h.off, dg + SL_CPORT_HDR, h.chunk) != whole)
				abort();
			if (whole && (sl_cport_chunks(h.total) != 1 ||
			              memcmp(a.buf, data + 16, h.chunk) != 0))
				abort();
			sl_cport_asm_fini(&a);
		}
	}
	/* the replay window over ids from the input: none taken twice */
	struct sl_cport_window w = {0};
	uint64_t taken[64];
	unsigned nt = 0;
	for (size_t i = 16; i + 1 < size && nt < 64; i += 2) {
		uint64_t id = 1000 + (uint64_t)(data[i] << 8 | data[i + 1]) % 200;
		bool t = sl_cport_window_take(&w, id);
		for (unsigned j = 0; j < nt && t; j++)
			if (taken[j] == id)
				abort();
		if (t)
			taken[nt++] = id;
	}
	return 0;
}
