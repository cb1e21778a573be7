/*
 * Per-core store: index, CLOCK eviction, memory accounting.
 * The layout and the choice of CLOCK are explained in include/sluice/store.h.
 *
 * Memory accounting is exact with respect to the allocator: every item and
 * overflow bucket is charged nallocx() bytes, the size jemalloc really
 * reserves for it, so the sum can be held under the limit. The bucket array
 * itself is sized from the limit at creation and documented as overhead.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jemalloc/jemalloc.h>

#include "sluice/proto.h"
#include "sluice/store.h"

#define BUCKET_WAYS 7
#define TAG_SHIFT 48
#define PTR_MASK ((UINT64_C(1) << TAG_SHIFT) - 1)
#define REALTIME_MAXDELTA (60 * 60 * 24 * 30)

/* Overflow buckets and items are both charged; an eviction scan looks at a
 * bounded number of items so that one allocation never stalls the core. */
#define CLOCK_SCAN_MAX 4096

struct bucket {
	uint64_t e[BUCKET_WAYS];
	struct bucket *next;
};

struct sl_store {
	struct bucket *buckets;
	uint64_t mask;
	size_t limit;
	size_t max_item;
	unsigned arena;
	unsigned tcache;
	int mflags;
	struct sl_item *hand;  /* CLOCK hand; NULL when empty */
	struct sl_item *pin;   /* never evicted (the item a command is reading) */
	struct sl_item *sweep; /* next item the expiry sweep looks at */
	uint64_t cas;
	uint32_t oldest_live;
	uint64_t oldest_cas;
	struct sl_store_stats st;
	struct sl_class_stats cls[SL_CLASS_MAX + 1];
};

_Static_assert(sizeof(struct bucket) == 64, "bucket is one cache line");
_Static_assert(sizeof(struct sl_item) == SL_ITEM_OVERHEAD, "item header size");

static inline uint16_t tag_of(uint64_t h)
{
	uint16_t t = (uint16_t)(h >> 48);
	return t ? t : 1; /* tag 0 would read as an empty entry */
}

static inline uint64_t entry_of(uint16_t tag, const struct sl_item *it)
{
	return (uint64_t)tag << TAG_SHIFT | ((uint64_t)(uintptr_t)it & PTR_MASK);
}

static inline struct sl_item *entry_item(uint64_t e)
{
	return (struct sl_item *)(uintptr_t)(e & PTR_MASK);
}

static inline struct bucket *bucket_of(struct sl_store *s, uint64_t h)
{
	/* low bits pick the slot; use the middle bits for the bucket */
	return &s->buckets[(h >> 14) & s->mask];
}

uint32_t sl_exptime_abs(int32_t exptime, uint32_t now)
{
	if (exptime == 0)
		return 0;
	if (exptime < 0)
		return 1; /* already past */
	if (exptime <= REALTIME_MAXDELTA)
		return now + (uint32_t)exptime;
	if ((uint32_t)exptime <= now)
		return 1;
	return (uint32_t)exptime;
}

struct sl_store *sl_store_create(const struct sl_store_conf *conf)
{
	if (conf->mem_limit < 4096 || conf->max_item_size < 64) {
		errno = EINVAL;
		return NULL;
	}
	struct sl_store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->limit = conf->mem_limit;
	s->max_item = conf->max_item_size;
	if (conf->arena == SL_STORE_NEW_ARENA) {
		unsigned a;
		size_t sz = sizeof(a);
		if (mallctl("arenas.create", &a, &sz, NULL, 0) != 0) {
			free(s);
			errno = ENOMEM;
			return NULL;
		}
		s->arena = a;
	} else {
		s->arena = conf->arena;
	}
	/* An explicit thread cache of the store's own: allocation and free
	 * stay lock-free on the owner core (jemalloc's arena path takes a
	 * mutex). What we charge is nallocx() of every live item, so the few
	 * freed objects a cache holds are allocator slack, not item memory. */
	unsigned tc;
	size_t tsz = sizeof(tc);
	if (mallctl("tcache.create", &tc, &tsz, NULL, 0) == 0) {
		s->tcache = tc;
		s->mflags = MALLOCX_ARENA(s->arena) | MALLOCX_TCACHE(tc);
	} else {
		s->tcache = ~0u;
		s->mflags = MALLOCX_ARENA(s->arena) | MALLOCX_TCACHE_NONE;
	}

	/* One bucket per 512 bytes of limit: room for 7 items of <= 73 B
	 * each per bucket before overflow; index = limit / 8. */
	uint64_t nb = 1024;
	while (nb * 512 < conf->mem_limit)
		nb <<= 1;
	s->buckets = mallocx(nb * sizeof(struct bucket), s->mflags | MALLOCX_ZERO);
	if (!s->buckets) {
		free(s);
		errno = ENOMEM;
		return NULL;
	}
	s->mask = nb - 1;
	s->cas = 0;
	return s;
}

static void item_release(struct sl_store *s, struct sl_item *it)
{
	size_t sz = sizeof(*it) + it->klen + it->vlen;
	s->st.bytes -= nallocx(sz, s->mflags);
	dallocx(it, s->mflags);
}

void sl_store_destroy(struct sl_store *s)
{
	if (!s)
		return;
	for (uint64_t b = 0; b <= s->mask; b++) {
		struct bucket *bk = &s->buckets[b];
		for (int first = 1; bk; first = 0) {
			for (int i = 0; i < BUCKET_WAYS; i++)
				if (bk->e[i])
					item_release(s, entry_item(bk->e[i]));
			struct bucket *nx = bk->next;
			if (!first)
				dallocx(bk, s->mflags);
			bk = nx;
		}
	}
	dallocx(s->buckets, s->mflags);
	if (s->tcache != ~0u)
		mallctl("tcache.destroy", NULL, NULL, &s->tcache, sizeof(s->tcache));
	free(s);
}

bool sl_store_alive(const struct sl_store *s, const struct sl_item *it, uint32_t now)
{
	if (it->exptime != 0 && it->exptime <= now)
		return false;
	if (s->oldest_live != 0 && s->oldest_live <= now &&
	    (it->atime <= s->oldest_live || (s->oldest_cas != 0 && it->cas < s->oldest_cas)))
		return false;
	return true;
}

/* Find the index entry that points at @p it. */
static uint64_t *entry_slot(struct sl_store *s, const struct sl_item *it)
{
	uint64_t want = entry_of(tag_of(it->hash), it);
	for (struct bucket *bk = bucket_of(s, it->hash); bk; bk = bk->next)
		for (int i = 0; i < BUCKET_WAYS; i++)
			if (bk->e[i] == want)
				return &bk->e[i];
	return NULL;
}

static void ring_remove(struct sl_store *s, struct sl_item *it)
{
	if (it->next == it) {
		s->hand = NULL;
		s->sweep = NULL;
	} else {
		it->prev->next = it->next;
		it->next->prev = it->prev;
		if (s->hand == it)
			s->hand = it->next;
		if (s->sweep == it)
			s->sweep = it->next;
	}
}

static void ring_insert(struct sl_store *s, struct sl_item *it)
{
	/* New items go just behind the hand: they get a full turn. */
	if (!s->hand) {
		it->prev = it->next = it;
		s->hand = it;
		return;
	}
	struct sl_item *h = s->hand;
	it->next = h;
	it->prev = h->prev;
	h->prev->next = it;
	h->prev = it;
}

static void class_drop(struct sl_store *s, const struct sl_item *it)
{
	struct sl_class_stats *c = &s->cls[it->cls];
	c->number--;
	c->mem_requested -= sl_mc_ntotal(it->klen, it->vlen);
}

void sl_store_unlink(struct sl_store *s, struct sl_item *it)
{
	uint64_t *e = entry_slot(s, it);
	if (e)
		*e = 0;
	ring_remove(s, it);
	s->st.curr_items--;
	class_drop(s, it);
	item_release(s, it);
}

struct sl_item *sl_store_get(struct sl_store *s, uint64_t hash, const char *key, size_t klen,
                             uint32_t now)
{
	uint16_t tag = tag_of(hash);
	for (struct bucket *bk = bucket_of(s, hash); bk; bk = bk->next) {
		for (int i = 0; i < BUCKET_WAYS; i++) {
			uint64_t e = bk->e[i];
			if (!e || (uint16_t)(e >> TAG_SHIFT) != tag)
				continue;
			struct sl_item *it = entry_item(e);
			if (it->hash != hash || it->klen != klen ||
			    memcmp(it->data, key, klen) != 0)
				continue;
			if (!sl_store_alive(s, it, now)) {
				if (!(it->bits & SL_IT_FETCHED)) {
					s->st.expired_unfetched++;
					s->cls[it->cls].expired_unfetched++;
				}
				s->st.reclaimed++;
				s->cls[it->cls].reclaimed++;
				sl_store_unlink(s, it);
				return NULL;
			}
			return it;
		}
	}
	return NULL;
}

/* Evict one item with CLOCK. Returns false when the store is empty. */
static bool evict_one(struct sl_store *s, uint32_t now)
{
	for (int scanned = 0; s->hand; scanned++) {
		struct sl_item *it = s->hand;
		if (it == s->pin) {
			if (it->next == it || scanned > 2 * CLOCK_SCAN_MAX)
				return false;
			s->hand = it->next;
			continue;
		}
		bool dead = !sl_store_alive(s, it, now);
		if (!dead && (it->bits & SL_IT_REF) && scanned < CLOCK_SCAN_MAX) {
			it->bits &= (uint8_t)~SL_IT_REF;
			s->hand = it->next;
			continue;
		}
		struct sl_class_stats *c = &s->cls[it->cls];
		if (dead) {
			s->st.reclaimed++;
			c->reclaimed++;
			if (!(it->bits & SL_IT_FETCHED)) {
				s->st.expired_unfetched++;
				c->expired_unfetched++;
			}
		} else {
			s->st.evictions++;
			c->evicted++;
			if (!(it->bits & SL_IT_FETCHED)) {
				s->st.evicted_unfetched++;
				c->evicted_unfetched++;
			}
		}
		sl_store_unlink(s, it);
		return true;
	}
	return false;
}


/* Evict until @p charge more bytes fit under the limit. Each eviction is
 * bounded (CLOCK_SCAN_MAX), and each frees at least one item. */
static bool make_room(struct sl_store *s, size_t charge, uint32_t now)
{
	while (s->st.bytes + charge > s->limit)
		if (!evict_one(s, now))
			return false;
	return true;
}

struct sl_item *sl_store_alloc(struct sl_store *s, uint64_t hash, const char *key, size_t klen,
                               size_t vlen, uint32_t now)
{
	size_t sz = sizeof(struct sl_item) + klen + vlen;
	if (klen > SL_KEY_MAX || sz + 2 > s->max_item) {
		errno = E2BIG;
		return NULL;
	}
	size_t charge = nallocx(sz, s->mflags);
	unsigned cls = sl_class_of(sl_mc_ntotal(klen, vlen));
	struct sl_item *it = NULL;
	if (charge <= s->limit && make_room(s, charge, now))
		it = mallocx(sz, s->mflags);
	if (!it) {
		s->st.oom++;
		s->cls[cls].outofmemory++;
		errno = ENOMEM;
		return NULL;
	}
	s->st.bytes += charge;
	memset(it, 0, sizeof(*it));
	it->hash = hash;
	it->klen = (uint8_t)klen;
	it->vlen = (uint32_t)vlen;
	it->cls = (uint8_t)cls;
	it->atime = now;
	memcpy(it->data, key, klen);
	return it;
}

void sl_store_free(struct sl_store *s, struct sl_item *it)
{
	item_release(s, it);
}

/* Put an entry into the item's bucket chain, growing it when full. */
static bool index_insert(struct sl_store *s, struct sl_item *it)
{
	uint64_t e = entry_of(tag_of(it->hash), it);
	struct bucket *bk = bucket_of(s, it->hash), *last = NULL;
	for (; bk; last = bk, bk = bk->next)
		for (int i = 0; i < BUCKET_WAYS; i++)
			if (!bk->e[i]) {
				bk->e[i] = e;
				return true;
			}
	/* Make room for the overflow bucket first; evicting may free an entry
	 * in this very chain, in which case no bucket is needed after all. */
	size_t charge = nallocx(sizeof(struct bucket), s->mflags);
	if (!make_room(s, charge, it->atime)) /* set to now by sl_store_alloc */
		return false;
	for (bk = bucket_of(s, it->hash); bk; last = bk, bk = bk->next)
		for (int i = 0; i < BUCKET_WAYS; i++)
			if (!bk->e[i]) {
				bk->e[i] = e;
				return true;
			}
	struct bucket *nb = mallocx(sizeof(struct bucket), s->mflags | MALLOCX_ZERO);
	if (!nb)
		return false;
	/* overflow buckets are charged like items; they are rare (< 1 per
	 * 7 items in the worst case) and never freed until destroy */
	s->st.bytes += charge;
	nb->e[0] = e;
	last->next = nb;
	return true;
}

void sl_store_link(struct sl_store *s, struct sl_item *it, struct sl_item *old)
{
	if (old) {
		uint64_t *e = entry_slot(s, old);
		ring_remove(s, old);
		s->st.curr_items--;
		class_drop(s, old);
		item_release(s, old);
		if (e) {
			*e = entry_of(tag_of(it->hash), it);
			goto linked;
		}
	}
	if (!index_insert(s, it)) {
		/* cannot index it: drop it rather than corrupt the store */
		item_release(s, it);
		s->st.oom++;
		return;
	}
linked:
	if (it->cas == 0)
		it->cas = sl_store_next_cas(s);
	ring_insert(s, it);
	s->st.curr_items++;
	s->st.total_items++;
	s->cls[it->cls].number++;
	s->cls[it->cls].mem_requested += sl_mc_ntotal(it->klen, it->vlen);
}

unsigned sl_store_sweep(struct sl_store *s, uint32_t now, unsigned budget)
{
	unsigned freed = 0;
	if (!s->sweep)
		s->sweep = s->hand;
	for (unsigned i = 0; i < budget && s->sweep; i++) {
		struct sl_item *it = s->sweep;
		s->sweep = it->next == it ? NULL : it->next;
		if (it == s->pin || sl_store_alive(s, it, now))
			continue;
		s->st.reclaimed++;
		s->cls[it->cls].reclaimed++;
		if (!(it->bits & SL_IT_FETCHED)) {
			s->st.expired_unfetched++;
			s->cls[it->cls].expired_unfetched++;
		}
		sl_store_unlink(s, it);
		freed++;
	}
	return freed;
}

void sl_store_prefetch_bucket(const struct sl_store *s, uint64_t hash)
{
	__builtin_prefetch(&s->buckets[(hash >> 14) & s->mask]);
}

void sl_store_prefetch_items(const struct sl_store *s, uint64_t hash)
{
	const struct bucket *bk = &s->buckets[(hash >> 14) & s->mask];
	uint16_t tag = tag_of(hash);
	for (int i = 0; i < BUCKET_WAYS; i++)
		if (bk->e[i] && (uint16_t)(bk->e[i] >> TAG_SHIFT) == tag)
			__builtin_prefetch(entry_item(bk->e[i]));
}

void sl_store_pin(struct sl_store *s, struct sl_item *it)
{
	s->pin = it;
}

uint64_t sl_store_next_cas(struct sl_store *s)
{
	return ++s->cas;
}

void sl_store_flush(struct sl_store *s, uint32_t now, int32_t delay)
{
	uint32_t new_oldest = delay > 0 ? sl_exptime_abs(delay, now) : now;
	s->oldest_live = new_oldest - 1;
	if (s->oldest_live <= now)
		s->oldest_cas = sl_store_next_cas(s);
}

const struct sl_store_stats *sl_store_stats(const struct sl_store *s)
{
	return &s->st;
}

struct sl_class_stats *sl_store_class(struct sl_store *s, unsigned cls)
{
	return &s->cls[cls <= SL_CLASS_MAX ? cls : 0];
}

size_t sl_store_limit(const struct sl_store *s)
{
	return s->limit;
}

size_t sl_store_index_bytes(const struct sl_store *s)
{
	return (s->mask + 1) * sizeof(struct bucket);
}
