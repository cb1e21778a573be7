/*
 * libFuzzer harness for replication batches (include/sluice/repl.h): the
 * input as a batch body, read record by record as a backup does. Every
 * record taken must lie inside the input, carry what its kind may, and
 * write back to the very bytes it was read from.
 */
#include <stdlib.h>
#include <string.h>

#include "sluice/repl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_repl_batch b;
	struct sl_repl_ack a;
	(void)sl_repl_ack_get(data, size, &a);
	if (sl_repl_batch_get(data, size, &b) != 0)
		return 0;
	size_t off = SL_REPL_BATCH_HDR;
	static uint8_t back[1 << 17];
	for (uint32_t i = 0; i < b.count && off < size; i++) {
		struct sl_rec r;
		size_t n = sl_rec_get(data + off, size - off, &r);
		if (!n)
			break;
		if (n > size - off || (const uint8_t *)r.key < data + off ||
		    (const uint8_t *)r.value + r.vlen > data + size)
			abort(); /* a record past its batch */
		if ((r.kind == SL_REC_SET || r.kind == SL_REC_TTL || r.kind == SL_REC_DEL) !=
		    (r.klen > 0))
			abort();
		if (n <= sizeof(back) && (sl_rec_put(back, &r) != n || memcmp(back, data + off, n)))
			abort(); /* not what it was read from */
		off += n;
	}
	return 0;
}
