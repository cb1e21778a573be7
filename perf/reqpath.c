/*
 * The request path without the NIC, for instruction counting under
 * callgrind: parse -> owner check -> store lookup/insert -> reply, for N
 * GETs (hits) or N SETs of 16-byte keys and 64-byte values on one core.
 * "get" is the general path (sl_exec_run, any request); "get1" is what
 * sluiced does for a datagram of exactly "get <key>\r\n": sl_peek_key, the
 * hash, the owner check, the index hash and the worker's two prefetch
 * steps (bucket, items), and sl_exec_get1 writing the reply.
 *
 *   valgrind --tool=callgrind build/perf/reqpath get1 100000
 *
 * perf/instructions.sh runs it at two counts and takes the difference, so
 * set-up cost cancels out and what is left is instructions per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/exec.h"
#include "sluice/frame.h"

#define KEYS 65536

int main(int argc, char **argv)
{
	if (argc != 3 ||
	    (strcmp(argv[1], "get") && strcmp(argv[1], "get1") && strcmp(argv[1], "set")))
		return 2;
	bool get = strcmp(argv[1], "set") != 0, get1 = !strcmp(argv[1], "get1");
	long n = atol(argv[2]);
	static struct sl_table map;
	static struct sl_node node;
	static struct sl_exec ex;
	static struct sl_conv conv;
	sl_table_init_local(&map, 1, 0, 1);
	node.nworkers = 1;
	node.max_item = 1 << 20;
	struct sl_store_conf sc = {
	    .mem_limit = 64u << 20, .max_item_size = 1 << 20, .arena = SL_STORE_NEW_ARENA};
	ex.store = sl_store_create(&sc);
	ex.node = &node;
	ex.table = &map;
	node.cores[0] = &ex;
	static char reqs[KEYS][128];
	static uint32_t lens[KEYS];
	char v[64];
	memset(v, 'x', sizeof(v));
	/* preload every key, then prepare the requests to time */
	for (int k = 0; k < KEYS; k++) {
		int l = snprintf(reqs[k], sizeof(reqs[k]), "set key:%012d 0 0 64\r\n", k);
		memcpy(reqs[k] + l, v, 64);
		memcpy(reqs[k] + l + 64, "\r\n", 2);
		lens[k] = (uint32_t)l + 66;
		unsigned to;
		sl_conv_reset(&conv, reqs[k], lens[k], true);
		sl_exec_run(&ex, &conv, 1700000000u, &to);
		if (get)
			lens[k] =
			    (uint32_t)snprintf(reqs[k], sizeof(reqs[k]), "get key:%012d\r\n", k);
	}
	size_t out = 0;
	static char reply[SL_UDP_CHUNK]; /* one reply datagram, as sluiced offers */
	for (long i = 0; i < n; i++) {
		unsigned k = (unsigned)((i * 40503u) & (KEYS - 1)), to;
		bool only;
		size_t klen;
		if (get1 && (klen = sl_peek_key(reqs[k], lens[k], &only)) != 0 && only) {
			const char *key = reqs[k] + SL_PEEK_KEY_OFF;
			uint64_t h = sl_key_hash(key, klen);
			if (sl_slot_owner(&map, h) == ex.core) {
				/* as the worker: index hash once, its two prefetch
				 * steps, the item step's hint to the lookup */
				uint64_t ih = sl_store_index_hash(ex.store, h);
				sl_store_prefetch_bucket(ex.store, ih);
				unsigned hint = sl_store_prefetch_items(ex.store, ih);
				int r = sl_exec_get1(&ex, key, klen, ih, hint, lens[k], 1700000000u,
				                     reply, sizeof(reply));
				if (r >= 0) {
					out += (size_t)r;
					continue;
				}
			}
		}
		sl_conv_reset(&conv, reqs[k], lens[k], true);
		sl_exec_run(&ex, &conv, 1700000000u, &to);
		out += conv.out.len;
	}
	printf("%s x %ld: %zu reply bytes, %lu items\n", argv[1], n, out,
	       (unsigned long)sl_store_stats(ex.store)->curr_items);
	return 0;
}
