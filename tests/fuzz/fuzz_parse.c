/*
 * libFuzzer harness: the request parser alone, then the executor over a
 * two-core node (so conversations are handed between cores as in sluiced),
 * with a small store that evicts. Built with ASan and UBSan; any crash,
 * overflow, leak or broken invariant is a finding.
 *
 *   meson setup build-fuzz -Dfuzz=true -Ddataplane=disabled (CC=clang)
 *   build-fuzz/tests/fuzz_parse -dict=tests/fuzz/memcached.dict tests/fuzz/corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/exec.h"
#include "sluice/frame.h"

#define MAXI (64 * 1024)

static struct sl_table map;
static struct sl_node node;
static struct sl_exec cores[2];
static struct sl_conv conv;

static void setup(void)
{
	sl_table_init_local(&map, 1, 0, 2);
	node.nworkers = 2;
	node.max_item = MAXI;
	node.mem_limit = 512 * 1024;
	for (unsigned i = 0; i < 2; i++) {
		struct sl_store_conf c = {
		    .mem_limit = 256 * 1024, .max_item_size = MAXI, .arena = SL_STORE_NEW_ARENA};
		cores[i].core = i;
		cores[i].node = &node;
		cores[i].store = sl_store_create(&c);
		if (!cores[i].store)
			abort();
		cores[i].table = &map;
		node.cores[i] = &cores[i];
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!node.nworkers)
		setup();
	/* the input lives in its own allocation so ASan sees overreads */
	char *in = malloc(size ? size : 1);
	memcpy(in, data, size);

	/* 1. parser alone, walking the buffer as the TCP front end does */
	size_t off = 0;
	while (off < size) {
		struct sl_req r;
		if (sl_parse(in + off, size - off, MAXI, &r) == SL_PARSE_MORE)
			break;
		if (r.consumed == 0 || r.consumed > size - off)
			abort();
		if (r.cmd == SL_CMD_ERROR && !r.err)
			abort();
		if (r.data && (r.data < in || r.data + r.vlen > in + size))
			abort();
		/* a request that reaches the store has a legal key */
		if (r.cmd != SL_CMD_ERROR && r.cmd != SL_CMD_CLOSE && r.key.len > SL_KEY_MAX)
			abort();
		off += r.consumed;
	}

	/* 2. executor, handing the conversation between the two cores, with
	 * the key hint sluiced's burst pre-pass gives a datagram */
	sl_conv_reset(&conv, in, (uint32_t)size, true);
	bool only;
	size_t klen = sl_peek_key(in, size, &only);
	uint64_t kh = klen ? sl_key_hash(in + SL_PEEK_KEY_OFF, klen) : 0;
	if (klen)
		sl_conv_hint(&conv, SL_PEEK_KEY_OFF, (uint32_t)klen, kh);
	unsigned at = 0, to = 0, hops = 0;
	while (sl_exec_run(&cores[at], &conv, 1700000000u + (unsigned)(size & 7), &to) ==
	       SL_EXEC_FORWARD) {
		if (to >= 2 || to == at || ++hops > 1000000)
			abort();
		at = to;
	}
	for (unsigned i = 0; i < 2; i++)
		if (sl_store_stats(cores[i].store)->bytes > sl_store_limit(cores[i].store))
			abort();

	/* 3. the datagram fast path against the general one: the key
	 * sl_peek_key sees is the one sl_parse sees, and sl_exec_get1 writes
	 * the reply sl_exec_run writes */
	if (klen) {
		struct sl_req r;
		bool ok = sl_parse(in, size, MAXI, &r) == SL_PARSE_OK,
		     get = ok && r.cmd == SL_CMD_GET, set = ok && r.cmd == SL_CMD_SET;
		uint32_t pos = 0;
		struct sl_tok k = get ? sl_next_key(&r, &pos) : set ? r.key : (struct sl_tok){0};
		if (((get || set) && (k.p != in + SL_PEEK_KEY_OFF || k.len != klen)) ||
		    (only && (!get || r.consumed != size)))
			abort();
	}
	if (klen && only) {
		static char out[SL_UDP_CHUNK]; /* one reply datagram, as sluiced offers */
		unsigned o = sl_slot_owner(&map, kh);
		uint32_t now = 1700000000u + (unsigned)(size & 7);
		/* as the worker calls it: index hash, and the item prefetch's hint */
		uint64_t ih = sl_store_index_hash(cores[o].store, kh);
		unsigned hint = sl_store_prefetch_items(cores[o].store, ih);
		int n = sl_exec_get1(&cores[o], in + SL_PEEK_KEY_OFF, klen, ih, hint,
		                     (uint32_t)size, now, out, sizeof(out));
		sl_conv_reset(&conv, in, (uint32_t)size, true);
		if (sl_exec_run(&cores[o], &conv, now, &to) != SL_EXEC_DONE)
			abort();
		if (n >= 0 &&
		    ((size_t)n != conv.out.len || memcmp(out, conv.out.p, (size_t)n) != 0))
			abort();
	}
	free(in);
	return 0;
}
