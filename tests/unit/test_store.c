#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jemalloc/jemalloc.h>

#include "sluice/slot.h"
#include "sluice/store.h"

static struct sl_store *S;

static void setup(void)
{
	struct sl_store_conf c = {
	    .mem_limit = 1 << 20, .max_item_size = 1 << 20, .arena = SL_STORE_NEW_ARENA};
	S = sl_store_create(&c);
	cr_assert_not_null(S);
}

static void teardown(void)
{
	sl_store_destroy(S);
}

/* Swap the 1 MiB store for one that holds everything a test puts in it. */
static void big_store(void)
{
	sl_store_destroy(S);
	struct sl_store_conf c = {
	    .mem_limit = 256 << 20, .max_item_size = 1 << 20, .arena = SL_STORE_NEW_ARENA};
	S = sl_store_create(&c);
	cr_assert_not_null(S);
}

static struct sl_item *put(const char *k, const char *v, uint32_t exp)
{
	uint64_t h = sl_key_hash(k, strlen(k));
	struct sl_item *old = sl_store_get(S, h, k, strlen(k), 1000);
	struct sl_item *it = sl_store_alloc(S, k, strlen(k), strlen(v), 1000);
	if (!it)
		return NULL;
	memcpy(sl_item_value(it), v, strlen(v));
	it->exptime = exp;
	sl_store_link(S, it, old, h);
	return it;
}

static struct sl_item *get(const char *k, uint32_t now)
{
	return sl_store_get(S, sl_key_hash(k, strlen(k)), k, strlen(k), now);
}

TestSuite(store, .init = setup, .fini = teardown);

Test(store, put_get_replace_unlink)
{
	cr_assert_null(get("a", 1000));
	struct sl_item *a = put("a", "one", 0);
	cr_assert_not_null(a);
	cr_assert_eq(get("a", 1000), a);
	uint64_t c1 = a->cas;
	struct sl_item *a2 = put("a", "two!", 0);
	cr_assert_eq(get("a", 1000), a2);
	cr_assert_gt(a2->cas, c1);
	cr_assert_eq(a2->vlen, 4);
	cr_assert_eq(sl_store_stats(S)->curr_items, 1);
	sl_store_unlink(S, a2, sl_key_hash("a", 1));
	cr_assert_null(get("a", 1000));
	cr_assert_eq(sl_store_stats(S)->curr_items, 0);
	cr_assert_eq(sl_store_stats(S)->bytes, 0);
}

Test(store, many_keys_collide_in_buckets)
{
	char k[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		cr_assert_not_null(put(k, "v", 0));
	}
	for (int i = 0; i < 5000; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		struct sl_item *it = get(k, 1000);
		cr_assert_not_null(it, "%s", k);
		cr_assert(memcmp(sl_item_key(it), k, strlen(k)) == 0);
	}
}

/* The index grows with the items (linear hashing): 200,000 keys in a store
 * whose index starts at 1,024 buckets stay retrievable while buckets split
 * under them, deleting half leaves the other half intact, and the index
 * costs about what the design says per item. */
Test(store, index_grows_with_items)
{
	big_store();
	size_t idx0 = sl_store_index_bytes(S);
	char k[32];
	enum { N = 200000 };
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "key:%d", i);
		cr_assert_not_null(put(k, k, 0));
		if (i % 20011 == 0) /* early keys survive later splits */
			for (int j = 0; j <= i; j += 97) {
				snprintf(k, sizeof(k), "key:%d", j);
				cr_assert_not_null(get(k, 1000), "lost %s at %d items", k, i);
			}
	}
	size_t idx = sl_store_index_bytes(S);
	cr_assert_gt(idx, 4 * idx0, "index did not grow: %zu", idx);
	cr_assert_lt((double)idx / N, 20.0, "index bytes per item %.1f", (double)idx / N);
	for (int i = 0; i < N; i += 2) {
		snprintf(k, sizeof(k), "key:%d", i);
		struct sl_item *it = get(k, 1000);
		cr_assert_not_null(it, "%s", k);
		sl_store_unlink(S, it, sl_key_hash(k, strlen(k)));
	}
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof(k), "key:%d", i);
		struct sl_item *it = get(k, 1000);
		if (i % 2) {
			cr_assert_not_null(it, "%s", k);
			cr_assert_eq(it->vlen, strlen(k));
			cr_assert(memcmp(sl_item_value(it), k, strlen(k)) == 0);
		} else {
			cr_assert_null(it, "%s", k);
		}
	}
	cr_assert_eq(sl_store_stats(S)->curr_items, N / 2);
}

/* Fill @p keys with @p n keys named @p prefix<number> that the index puts in
 * bucket @p b; returns @p n. */
static int keys_in_bucket(const char *prefix, uint64_t b, char (*keys)[32], int n)
{
	char k[32];
	int got = 0;
	for (unsigned i = 0; got < n; i++) {
		snprintf(k, sizeof(k), "%s%u", prefix, i);
		if (sl_store_bucket(S, sl_key_hash(k, strlen(k))) == b)
			strcpy(keys[got++], k);
	}
	return got;
}

/* Keys that all land in one bucket make a long overflow chain; every one
 * stays retrievable and deletable while the chain is split and repacked. */
Test(store, long_chains_split_and_repack)
{
	big_store();
	char k[32];
	static char keys[300][32];
	int n = keys_in_bucket("c", 5, keys, 300);
	for (int i = 0; i < n; i++)
		cr_assert_not_null(put(keys[i], "v", 0));
	/* grow the table past bucket 5's split and beyond */
	for (int i = 0; i < 20000; i++) {
		snprintf(k, sizeof(k), "fill%d", i);
		cr_assert_not_null(put(k, "w", 0));
	}
	for (int i = 0; i < n; i++)
		cr_assert_not_null(get(keys[i], 1000), "%s", keys[i]);
	for (int i = 0; i < n; i += 3) {
		struct sl_item *it = get(keys[i], 1000);
		sl_store_unlink(S, it, sl_key_hash(keys[i], strlen(keys[i])));
	}
	for (int i = 0; i < n; i++)
		cr_assert((get(keys[i], 1000) != NULL) == (i % 3 != 0), "%s", keys[i]);
	cr_assert_eq(sl_store_stats(S)->evictions, 0);
}

static uint64_t ih_of(const char *k)
{
	return sl_store_index_hash(S, sl_key_hash(k, strlen(k)));
}

static unsigned pf_items(const char *k)
{
	return sl_store_prefetch_items(S, ih_of(k));
}

/* The worker's prefetch steps: the items step asks for the chain step only
 * for a key its bucket's inline entries cannot hold, that is one past the
 * seven inline entries of an overflowing bucket, or one that is absent. */
Test(store, prefetch_asks_for_the_chain_only_past_inline_entries)
{
	char k[32];
	static char keys[12][32];
	keys_in_bucket("p", 9, keys, 12);
	/* eight fit a bucket without a chain */
	for (int i = 0; i < 8; i++)
		cr_assert_not_null(put(keys[i], "v", 0));
	for (int i = 0; i < 8; i++)
		cr_assert(!(pf_items(keys[i]) & SL_PF_CHAIN));
	cr_assert_eq(pf_items(keys[8]), 0, "absent, and there is no chain to look down");
	/* twelve: seven inline, five down the chain */
	for (int i = 8; i < 12; i++)
		cr_assert_not_null(put(keys[i], "v", 0));
	int chained = 0;
	for (int i = 0; i < 12; i++) {
		if (pf_items(keys[i]) & SL_PF_CHAIN) {
			chained++;
			sl_store_prefetch_chain(S, ih_of(keys[i]));
		}
		cr_assert_not_null(get(keys[i], 1000), "%s", keys[i]);
	}
	/* 5, or 4 in the rare store (~1 in 2,000, the tag being keyed with a
	 * random secret) where a chained key's 16-bit tag equals an inline
	 * one's: the items step then sees a match inline and does not ask
	 * for the chain, which costs that one lookup a cache miss, no more */
	cr_assert(chained == 5 || chained == 4, "%d", chained);
	for (unsigned i = 0;; i++) {
		snprintf(k, sizeof(k), "absent%u", i);
		uint64_t h = sl_key_hash(k, strlen(k));
		if (sl_store_bucket(S, h) != 9)
			continue;
		cr_assert_eq(pf_items(k), SL_PF_CHAIN, "absent: may be down the chain");
		break;
	}
}

static struct sl_item *get_hinted(const char *k, unsigned hint, uint32_t now)
{
	return sl_store_get_ih(S, ih_of(k), hint, k, strlen(k), now);
}

/* The item step's hint (the entry whose tag matched) is only a hint: a
 * hint that names another key's entry, an entry since emptied or reused,
 * or no entry at all still finds exactly what sl_store_get finds. */
Test(store, a_wrong_or_stale_hint_costs_a_lookup_never_a_wrong_answer)
{
	static char keys[9][32];
	keys_in_bucket("h", 9, keys, 9);
	for (int i = 0; i < 8; i++)
		cr_assert_not_null(put(keys[i], keys[i], 0));
	unsigned hint[8];
	for (int i = 0; i < 8; i++) {
		hint[i] = pf_items(keys[i]);
		cr_assert(SL_PF_HINT(hint[i]) >= 1 && SL_PF_HINT(hint[i]) <= 8, "%u", hint[i]);
	}
	for (int i = 0; i < 8; i++) {
		for (int j = 0; j < 8; j++) {
			struct sl_item *it = get_hinted(keys[i], hint[j], 1000);
			cr_assert_not_null(it, "%s with %s's hint", keys[i], keys[j]);
			cr_assert(memcmp(sl_item_value(it), keys[i], strlen(keys[i])) == 0);
		}
		cr_assert_eq(get_hinted(keys[i], 0, 1000), get(keys[i], 1000));
		cr_assert_eq(get_hinted(keys[i], 15, 1000), get(keys[i], 1000), "out of range");
	}
	/* absent, with a hint at a present entry */
	cr_assert_null(get_hinted(keys[8], hint[0], 1000));
	/* keys[0]'s entry emptied, then taken by keys[8] */
	struct sl_item *old = get(keys[0], 1000);
	sl_store_unlink(S, old, sl_key_hash(keys[0], strlen(keys[0])));
	cr_assert_null(get_hinted(keys[0], hint[0], 1000));
	cr_assert_not_null(put(keys[8], keys[8], 0));
	cr_assert_null(get_hinted(keys[0], hint[0], 1000));
	struct sl_item *it = get_hinted(keys[8], hint[0], 1000);
	cr_assert_not_null(it);
	cr_assert(memcmp(sl_item_value(it), keys[8], strlen(keys[8])) == 0);
	/* an expired item found through the hint is reclaimed, as by a scan */
	cr_assert_not_null(put(keys[1], "soon", 1500));
	uint64_t items = sl_store_stats(S)->curr_items;
	cr_assert_null(get_hinted(keys[1], pf_items(keys[1]), 2000));
	cr_assert_eq(sl_store_stats(S)->curr_items, items - 1);
	cr_assert_null(get(keys[1], 2000));
}

/* Keys chosen to share bits of their public XXH3 hash (what an attacker can
 * compute) do not share a bucket: the index hash is keyed with a secret. */
Test(store, chosen_keys_do_not_pile_into_one_bucket)
{
	char k[32];
	static uint64_t b[300];
	int n = 0;
	for (unsigned i = 0; n < 300; i++) {
		snprintf(k, sizeof(k), "x%u", i);
		uint64_t h = sl_key_hash(k, strlen(k));
		if (((h >> 14) & 1023) == 5) /* the bits the index once used */
			b[n++] = sl_store_bucket(S, h);
	}
	int distinct = 0;
	for (int i = 0; i < n; i++) {
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = b[j] == b[i];
		distinct += !seen;
	}
	/* 300 random picks of 1,024 buckets: about 258 distinct */
	cr_assert_gt(distinct, 200, "%d distinct buckets", distinct);
}

Test(store, expiry_is_lazy_and_exact)
{
	put("t", "x", 1005);
	cr_assert_not_null(get("t", 1004));
	cr_assert_null(get("t", 1005));
	cr_assert_eq(sl_store_stats(S)->reclaimed, 1);
}

Test(store, exptime_rules)
{
	cr_assert_eq(sl_exptime_abs(0, 5000000), 0);
	cr_assert_eq(sl_exptime_abs(10, 5000000), 5000010);
	cr_assert_eq(sl_exptime_abs(-1, 5000000), 1);
	cr_assert_eq(sl_exptime_abs(2592000, 5000000), 7592000);
	/* beyond 30 days it is an absolute unix time */
	cr_assert_eq(sl_exptime_abs(2592001, 5000000), 1);
	cr_assert_eq(sl_exptime_abs(6000000, 5000000), 6000000);
}

Test(store, limit_is_never_exceeded_and_clock_evicts_cold)
{
	char k[32], v[200];
	memset(v, 'v', sizeof(v) - 1);
	v[sizeof(v) - 1] = 0;
	/* a hot key, read between every insert, must survive */
	put("hot", "h", 0);
	for (int i = 0; i < 20000; i++) {
		snprintf(k, sizeof(k), "cold%d", i);
		cr_assert_not_null(put(k, v, 0));
		struct sl_item *h = get("hot", 1000);
		cr_assert_not_null(h, "hot key evicted at %d", i);
		sl_store_touch_access(h, 1000);
		cr_assert_leq(sl_store_stats(S)->bytes, sl_store_limit(S));
	}
	cr_assert_gt(sl_store_stats(S)->evictions, 10000);
	cr_assert_lt(sl_store_stats(S)->curr_items, 20000);
}

Test(store, too_large_and_pin)
{
	static char big[1 << 20];
	cr_assert_null(sl_store_alloc(S, "b", 1, sizeof(big), 1000));
	cr_assert_eq(errno, E2BIG);
	(void)big;
	/* a length that would wrap the size check around is refused too */
	errno = 0;
	cr_assert_null(sl_store_alloc(S, "b", 1, SIZE_MAX - 4, 1000));
	cr_assert_eq(errno, E2BIG);
	/* a pinned item survives allocations that need its memory */
	struct sl_item *p = put("pinned", "x", 0);
	sl_store_pin(S, p);
	char k[32];
	for (int i = 0; i < 3000; i++) {
		snprintf(k, sizeof(k), "f%d", i);
		struct sl_item *it = sl_store_alloc(S, k, strlen(k), 900, 1000);
		if (it)
			sl_store_link(S, it, NULL, sl_key_hash(k, strlen(k)));
	}
	cr_assert_eq(get("pinned", 1000), p);
	sl_store_pin(S, NULL);
}

Test(store, flush_all_now_and_later)
{
	put("a", "1", 0);
	sl_store_flush(S, 1000, 0);
	cr_assert_null(get("a", 1000));
	put("b", "2", 0); /* stored after the flush: alive */
	cr_assert_not_null(get("b", 1000));
	sl_store_flush(S, 1000, 10);
	cr_assert_not_null(get("b", 1005));
	cr_assert_null(get("b", 1010));
}

Test(store, sweep_frees_dead_items_in_bounded_steps)
{
	char k[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(k, sizeof(k), "s%d", i);
		put(k, "v", i % 2 ? 0 : 1010); /* half expire at 1010 */
	}
	cr_assert_eq(sl_store_sweep(S, 1000, 20000), 0);
	unsigned freed = 0, steps = 0;
	while (steps < 1000) {
		unsigned f = sl_store_sweep(S, 1010, 64);
		freed += f;
		steps++;
		if (sl_store_stats(S)->curr_items == 500)
			break;
	}
	cr_assert_eq(freed, 500);
	cr_assert_geq(steps, 1000 / 64); /* it really was bounded */
	cr_assert_eq(sl_store_stats(S)->curr_items, 500);
	sl_store_flush(S, 1010, 0);
	/* a full turn of the index frees everything the flush killed */
	for (int i = 0; i < 1000 && sl_store_stats(S)->curr_items; i++)
		sl_store_sweep(S, 1010, 64);
	cr_assert_eq(sl_store_stats(S)->curr_items, 0);
	cr_assert_eq(sl_store_stats(S)->bytes, 0);
}

/* The store charges each item what jemalloc really takes for it, also for
 * sizes it has remembered the answer of (charge_of's table): every total
 * size through the table's range and past it, in both directions. */
Test(store, charges_exactly_what_jemalloc_takes)
{
	big_store();
	char key[64];
	memset(key, 'k', sizeof(key));
	for (int down = 0; down < 2; down++)
		for (size_t i = 0; i < 4300; i++) {
			size_t total = down ? 4330 - i : 30 + i, klen = 1 + i % 50;
			if (klen > total - sizeof(struct sl_item))
				klen = total - sizeof(struct sl_item);
			size_t vlen = total - sizeof(struct sl_item) - klen;
			uint64_t before = sl_store_stats(S)->bytes;
			struct sl_item *it = sl_store_alloc(S, key, klen, vlen, 1000);
			cr_assert_not_null(it);
			cr_assert_eq(sl_store_stats(S)->bytes - before, nallocx(total, 0),
			             "an item of %zu bytes", total);
			sl_store_free(S, it);
			cr_assert_eq(sl_store_stats(S)->bytes, before);
		}
}

/* What a walk sees: the keys of its items, and whether to drop them. */
struct walk_seen {
	unsigned char seen[20000];
	bool drop_odd;
};

static bool walk_fn(void *ctx, struct sl_item *it)
{
	struct walk_seen *w = ctx;
	char k[32];
	memcpy(k, it->data, it->klen);
	k[it->klen] = 0;
	unsigned i;
	if (sscanf(k, "w%u", &i) == 1 && i < 20000) {
		w->seen[i] = 1;
		return w->drop_odd && (i & 1);
	}
	return false;
}

Test(store, a_walk_in_small_steps_sees_every_item_while_the_index_grows)
{
	big_store();
	char k[32];
	for (unsigned i = 0; i < 10000; i++) {
		snprintf(k, sizeof(k), "w%u", i);
		cr_assert_not_null(put(k, "v", 0));
	}
	static struct walk_seen w;
	memset(&w, 0, sizeof(w));
	struct sl_store_cursor c = {0};
	unsigned steps = 0, next = 10000;
	/* between steps the index splits under the walk: new keys go in */
	while (sl_store_walk(S, &c, 7, walk_fn, &w)) {
		steps++;
		if (next < 20000) {
			snprintf(k, sizeof(k), "w%u", next++);
			put(k, "v", 0);
		}
	}
	for (unsigned i = 0; i < 10000; i++)
		cr_assert(w.seen[i], "the walk missed w%u", i);
	cr_assert_gt(steps, 10000 / 7 / 2, "steps of 7 entries: %u", steps);
	/* and one that drops: what it drops is gone, the rest stays */
	memset(&w, 0, sizeof(w));
	w.drop_odd = true;
	c = (struct sl_store_cursor){0};
	while (sl_store_walk(S, &c, 64, walk_fn, &w))
		;
	for (unsigned i = 0; i < 10000; i++) {
		snprintf(k, sizeof(k), "w%u", i);
		cr_assert_eq(get(k, 1000) != NULL, !(i & 1), "w%u", i);
	}
}
