/*
 * libFuzzer harness for cluster messages (include/sluice/cmsg.h): frames
 * as they arrive from the network, checked with the cluster key; and,
 * since the fuzzer cannot forge a MAC, its input also signed here as a
 * frame whose body is a slot-table push, so that the body's parser and a
 * node's view of the table are reached, and the registration's.
 */
#include <stdlib.h>
#include <string.h>

#include "sluice/cmsg.h"

static const uint8_t KEY[SL_CMSG_KEY] = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_cmsg m;
	size_t used;
	size_t off = 0;
	while (off < size && sl_cmsg_decode(data + off, size - off, KEY, &m, &used) == SL_CMSG_OK)
		off += used;
	if (size > SL_CMSG_BODY_MAX)
		return 0;
	uint8_t *frame = malloc(sl_cmsg_size((uint32_t)size));
	if (!frame)
		return 0;
	struct sl_cmsg out = {.type = SL_CMSG_TABLE,
	                      .sender = SL_CMSG_CONTROLLER,
	                      .epoch = 2,
	                      .seq = 1,
	                      .body = data,
	                      .body_len = (uint32_t)size};
	size_t n = sl_cmsg_encode(frame, &out, KEY);
	if (sl_cmsg_decode(frame, n, KEY, &m, &used) != SL_CMSG_OK || used != n ||
	    m.body_len != size || memcmp(m.body, data, size) != 0)
		abort();
	struct sl_cmsg_register r;
	if (sl_cmsg_register_decode(m.body, m.body_len, &r) == 0) {
		uint8_t again[80];
		if (sl_cmsg_register_encode(again, &r) != size || memcmp(again, data, size) != 0)
			abort();
	}
	static struct sl_cmsg_table t;
	static struct sl_table view;
	if (sl_cmsg_table_decode(m.body, m.body_len, &t) == 0) {
		/* a table that parsed is whole: every slot has a listed primary */
		if (sl_cmsg_table_apply(&t, m.epoch, t.node[0].id, 3, &view) != 0)
			abort();
		uint8_t *again = malloc(sl_cmsg_table_size(t.n));
		if (!again || sl_cmsg_table_encode(again, &t) != size || memcmp(again, data, size))
			abort();
		free(again);
	}
	free(frame);
	return 0;
}
