/*
 * Hit ratio of Sluice's store (CLOCK) against exact LRU on the same Zipf
 * trace and the same capacity in items. Read-through cache: a get that
 * misses is followed by a set of the key.
 *
 *   build/perf/eviction_sim [keys] [requests] [alpha]
 *
 * The store runs for real (sl_store, jemalloc arena, memory limit); its
 * capacity in items is measured after warm-up and LRU is given the same.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "sluice/slot.h"
#include "sluice/store.h"

static uint64_t rng = 88172645463325252ull;
static inline uint64_t xorshift(void)
{
	return perf_xorshift(&rng);
}

static double *cdf;
static unsigned nkeys;

static void zipf_init(unsigned n, double alpha)
{
	cdf = malloc(sizeof(double) * n);
	double sum = 0;
	for (unsigned i = 0; i < n; i++)
		sum += 1.0 / pow(i + 1, alpha);
	double acc = 0;
	for (unsigned i = 0; i < n; i++) {
		acc += 1.0 / pow(i + 1, alpha) / sum;
		cdf[i] = acc;
	}
	nkeys = n;
}

static unsigned zipf_next(void)
{
	double u = (double)(xorshift() >> 11) / (double)(1ull << 53);
	unsigned lo = 0, hi = nkeys - 1;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (cdf[mid] >= u)
			hi = mid;
		else
			lo = mid + 1;
	}
	/* scatter ranks over the key space so popularity is not key order */
	return (unsigned)(((uint64_t)lo * 2654435761u) % nkeys);
}

/* exact LRU: hash of key -> node, doubly linked list */
struct lnode {
	unsigned key, prev, next;
	int used;
};
static struct lnode *ln;
static int *lmap;
static unsigned lhead = ~0u, ltail = ~0u, lcount, lcap;

static void lru_unlink(unsigned i)
{
	if (ln[i].prev != ~0u)
		ln[ln[i].prev].next = ln[i].next;
	else
		lhead = ln[i].next;
	if (ln[i].next != ~0u)
		ln[ln[i].next].prev = ln[i].prev;
	else
		ltail = ln[i].prev;
}

static void lru_front(unsigned i)
{
	ln[i].prev = ~0u;
	ln[i].next = lhead;
	if (lhead != ~0u)
		ln[lhead].prev = i;
	lhead = i;
	if (ltail == ~0u)
		ltail = i;
}

static int lru_access(unsigned key)
{
	int i = lmap[key];
	if (i >= 0) {
		lru_unlink((unsigned)i);
		lru_front((unsigned)i);
		return 1;
	}
	unsigned slot;
	if (lcount < lcap) {
		slot = lcount++;
	} else {
		slot = ltail;
		lru_unlink(slot);
		lmap[ln[slot].key] = -1;
	}
	ln[slot].key = key;
	lmap[key] = (int)slot;
	lru_front(slot);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned keys = argc > 1 ? (unsigned)atoi(argv[1]) : 1000000;
	unsigned reqs = argc > 2 ? (unsigned)atoi(argv[2]) : 10000000;
	double alpha = argc > 3 ? atof(argv[3]) : 0.99;
	const size_t vlen = 64;
	zipf_init(keys, alpha);
	printf("zipf alpha %.2f, %u keys, %u requests, 16-byte keys, %zu-byte values\n", alpha,
	       keys, reqs, vlen);
	printf("%-10s %-10s %-10s %-10s %s\n", "cache%", "items", "LRU", "CLOCK", "CLOCK-LRU");
	static const double fracs[] = {0.01, 0.05, 0.10, 0.25, 0.50};
	for (unsigned f = 0; f < sizeof(fracs) / sizeof(fracs[0]); f++) {
		/* per item charge: 26-byte header + key + value = 106, which
		 * jemalloc rounds to 112 */
		size_t limit = (size_t)(keys * fracs[f] * 112);
		struct sl_store_conf c = {
		    .mem_limit = limit, .max_item_size = 1 << 20, .arena = SL_STORE_NEW_ARENA};
		struct sl_store *s = sl_store_create(&c);
		char k[17], v[64];
		memset(v, 'v', sizeof(v));
		uint64_t hits = 0;
		rng = 88172645463325252ull;
		for (unsigned r = 0; r < reqs; r++) {
			unsigned key = zipf_next();
			snprintf(k, sizeof(k), "key:%012u", key);
			uint64_t h = sl_key_hash(k, 16);
			struct sl_item *it = sl_store_get(s, h, k, 16, 1000);
			if (it) {
				sl_store_touch_access(it, 1000);
				hits++;
				continue;
			}
			it = sl_store_alloc(s, k, 16, vlen, 1000);
			if (it) {
				memcpy(sl_item_value(it), v, vlen);
				sl_store_link(s, it, NULL, h);
			}
		}
		double clock_hr = (double)hits / reqs;
		lcap = (unsigned)sl_store_stats(s)->curr_items;
		sl_store_destroy(s);

		ln = calloc(lcap, sizeof(*ln));
		lmap = malloc(sizeof(int) * keys);
		memset(lmap, 0xff, sizeof(int) * keys);
		lhead = ltail = ~0u;
		lcount = 0;
		rng = 88172645463325252ull;
		uint64_t lhits = 0;
		for (unsigned r = 0; r < reqs; r++)
			lhits += (uint64_t)lru_access(zipf_next());
		double lru_hr = (double)lhits / reqs;
		free(ln);
		free(lmap);
		printf("%-10.0f %-10u %-10.4f %-10.4f %+.4f\n", fracs[f] * 100, lcap, lru_hr,
		       clock_hr, clock_hr - lru_hr);
	}
	return 0;
}
