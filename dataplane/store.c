/*
 * Per-core store: index (linear hashing), CLOCK eviction over the index,
 * memory accounting. The layout and the choices are explained in
 * include/sluice/store.h.
 *
 * Memory accounting is exact with respect to the allocator: every item is
 * charged nallocx() bytes, the size jemalloc really reserves for it, so the
 * sum can be held under the limit. The index is counted apart (hash_bytes),
 * as memcached counts its hash table apart from -m.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jemalloc/jemalloc.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "sluice/bytes.h"
#include "sluice/fault.h"
#include "sluice/proto.h"
#include "sluice/slot.h"
#include "sluice/store.h"

#define WAYS 8
#define TAG_SHIFT 48
#define PTR_MASK ((UINT64_C(1) << TAG_SHIFT) - 1)
#define LINK_BIT UINT64_C(1) /* entry 7 links to an overflow bucket */
#define REALTIME_MAXDELTA (60 * 60 * 24 * 30)

/* Split a bucket once there are more than LOAD items per bucket: 6 of 8
 * entries keeps overflow buckets to about one bucket in five (measured by
 * simulation: ~13 bytes of index per item in all, overflow included). */
#define LOAD 6
#define SEG_SHIFT 10
#define SEG_BUCKETS (1u << SEG_SHIFT)

/* An eviction looks at a bounded number of items, so one allocation never
 * stalls the core; past that it takes the next item whatever its bit. */
#define CLOCK_SCAN_MAX 4096

struct bucket {
	uint64_t e[WAYS];
};

/* Items up to this size have their charge (nallocx) remembered per 16-byte
 * step: see charge_of(). */
#define CHARGE_SMALL 4096

/* A place in the index: entry k of bucket a's chain (the chain's entries
 * counted in order, links not counted). The clock hand and the sweep each
 * keep one; a split may shuffle a chain under them, which only means a few
 * entries are looked at twice or once less in that turn. */
struct pos {
	uint64_t a;
	unsigned k;
};

struct sl_store {
	struct bucket **seg; /* directory of segments */
	size_t nseg, seg_cap;
	uint64_t low_mask;    /* 2^L - 1: buckets at the start of this round - 1 */
	uint64_t split;       /* buckets split in this round */
	uint64_t nbuckets;    /* low_mask + 1 + split */
	struct bucket *spare; /* overflow buckets not in a chain, for reuse */
	size_t nspare;
	size_t noverflow;  /* overflow buckets allocated (in use or spare) */
	uint64_t secret;   /* keys the index hash: see keyed() */
	uint64_t *scratch; /* a chain's entries during a split */
	size_t scratch_cap;
	size_t limit;
	size_t max_item;
	unsigned arena;
	unsigned tcache;
	int mflags;
	struct pos hand;
	struct pos sweep;
	struct sl_item *pin; /* never evicted (the item a command is reading) */
	uint64_t cas;
	uint16_t cas_tag; /* the low 16 bits of every CAS: node and core */
	uint32_t oldest_live;
	uint64_t oldest_cas;
	struct sl_store_stats st;
	struct sl_store_observer obs; /* fn NULL: nobody listens */
	struct sl_class_stats cls[SL_CLASS_MAX + 1];
	uint32_t charge[CHARGE_SMALL / 16]; /* see charge_of(); 0 = not asked yet */
};

_Static_assert(sizeof(struct bucket) == 64, "bucket is one cache line");
_Static_assert(sizeof(struct sl_item) == 26, "item header size");

/*
 * The index does not use the key's XXH3 hash as it is: XXH3 with seed 0 is
 * public (the slot contract needs it), so anyone could find keys that share
 * a bucket and grow one chain without end, making every lookup in it slow
 * (hash flooding). The index hash is a bijective mix of the XXH3 hash with
 * a per-store random secret; keys only share a bucket by chance, unless
 * their whole 64-bit XXH3 hashes collide.
 */
static inline uint64_t keyed(const struct sl_store *s, uint64_t h)
{
	uint64_t x = h ^ s->secret;
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static inline uint16_t tag_of(uint64_t h)
{
	uint16_t t = (uint16_t)(h >> TAG_SHIFT);
	return t ? t : 1; /* tag 0 would read as an empty entry */
}

static inline uint64_t entry_of(uint64_t h, const struct sl_item *it)
{
	return (uint64_t)tag_of(h) << TAG_SHIFT | ((uint64_t)(uintptr_t)it & PTR_MASK);
}

static inline struct sl_item *entry_item(uint64_t e)
{
	return (struct sl_item *)(uintptr_t)(e & PTR_MASK);
}

/*
 * Which of a bucket's eight entries carry tag @p tag: bit 8i+7 is set for
 * entry i (walk them with ctz, entry = bit / 8). An empty entry or a link
 * never matches (tag bits 0; a tag is never 0). With SSE2 (every x86-64)
 * this is four 16-bit compares over the whole line and no branch: the
 * loop it replaces took a branch per entry, and the matching entry's place
 * is random, so about one misprediction per lookup, twice per GET (item
 * prefetch and lookup).
 *
 *   entry i (8 B, little endian):  bytes 0-5 pointer | bytes 6-7 tag
 *   cmpeq per 16-bit lane -> movemask: 2 bits a lane, 8 bits an entry;
 *   bit 8i+7 is the tag lane's high byte
 */
static inline uint64_t tag_hits(const struct bucket *bk, uint64_t tag)
{
#ifdef __SSE2__
	const __m128i t = _mm_set1_epi16((short)tag);
	const __m128i *v = (const __m128i *)bk->e;
	uint64_t m = 0;
	for (unsigned i = 0; i < 4; i++)
		m |= (uint64_t)(uint16_t)_mm_movemask_epi8(
		         _mm_cmpeq_epi16(_mm_loadu_si128(v + i), t))
		     << (16 * i);
	return m & UINT64_C(0x8080808080808080);
#else
	uint64_t m = 0;
	for (unsigned i = 0; i < WAYS; i++)
		if (bk->e[i] >> TAG_SHIFT == tag)
			m |= UINT64_C(0x80) << (8 * i);
	return m;
#endif
}

/* The entry of the lowest bit of a tag_hits() mask, which it then clears. */
static inline unsigned next_hit(uint64_t *m)
{
	unsigned i = (unsigned)__builtin_ctzll(*m) >> 3;
	*m &= *m - 1;
	return i;
}

static inline bool is_link(uint64_t e)
{
	return (e & LINK_BIT) != 0;
}

static inline struct bucket *link_of(uint64_t e)
{
	return (struct bucket *)(uintptr_t)(e & ~LINK_BIT);
}

/* Entries of a bucket that hold items (the last may be a link). */
static inline unsigned ways_of(const struct bucket *bk)
{
	return is_link(bk->e[WAYS - 1]) ? WAYS - 1 : WAYS;
}

static inline struct bucket *next_of(const struct bucket *bk)
{
	return is_link(bk->e[WAYS - 1]) ? link_of(bk->e[WAYS - 1]) : NULL;
}

static inline uint64_t addr_of(const struct sl_store *s, uint64_t h)
{
	uint64_t a = h & s->low_mask;
	if (a < s->split)
		a = h & (2 * s->low_mask + 1);
	return a;
}

static inline struct bucket *bucket_at(const struct sl_store *s, uint64_t a)
{
	return &s->seg[a >> SEG_SHIFT][a & (SEG_BUCKETS - 1)];
}

static inline struct bucket *bucket_of(const struct sl_store *s, uint64_t h)
{
	return bucket_at(s, addr_of(s, h));
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

/* Make sure bucket @p a exists (a new segment when it is the first of one). */
static bool ensure_bucket(struct sl_store *s, uint64_t a)
{
	size_t sg = (size_t)(a >> SEG_SHIFT);
	if (sg < s->nseg)
		return true;
	if (sg >= s->seg_cap) {
		size_t cap = s->seg_cap ? 2 * s->seg_cap : 16;
		struct bucket **d = realloc(s->seg, cap * sizeof(*d));
		if (!d)
			return false;
		s->seg = d;
		s->seg_cap = cap;
	}
	struct bucket *b = sl_fault(SL_FAULT_bucket_alloc)
	                       ? NULL
	                       : mallocx(SEG_BUCKETS * sizeof(struct bucket),
	                                 s->mflags | MALLOCX_ZERO | MALLOCX_ALIGN(64));
	if (!b)
		return false;
	s->seg[s->nseg++] = b;
	return true;
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
	if (getrandom(&s->secret, sizeof(s->secret), 0) != sizeof(s->secret))
		s->secret = (uint64_t)(uintptr_t)s ^ ((uint64_t)time(NULL) << 20);
	s->low_mask = SEG_BUCKETS - 1;
	s->nbuckets = SEG_BUCKETS;
	if (!ensure_bucket(s, 0)) {
		sl_store_destroy(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

/*
 * What an allocation of @p sz bytes really takes: nallocx(), which costs
 * about 70 instructions and is asked twice per SET (the new item, the one
 * it replaces). Above 16 bytes jemalloc's classes (16-byte quantum on
 * x86-64) end on multiples of 16, so every size of a 16-byte step has one
 * answer, kept the first time it is asked (2 KiB a store). A step whose two
 * ends disagree (another quantum) is marked and always asked.
 */
#define CHARGE_ASK UINT32_MAX

static size_t charge_of(struct sl_store *s, size_t sz)
{
	if (sz <= 16 || sz > CHARGE_SMALL)
		return nallocx(sz, s->mflags);
	uint32_t *c = &s->charge[(sz - 1) / 16];
	if (!*c) {
		size_t lo = nallocx((sz - 1) / 16 * 16 + 1, s->mflags);
		*c = lo == nallocx((sz + 15) / 16 * 16, s->mflags) ? (uint32_t)lo : CHARGE_ASK;
	}
	return *c != CHARGE_ASK ? *c : nallocx(sz, s->mflags);
}

static void item_release(struct sl_store *s, struct sl_item *it)
{
	size_t sz = sizeof(*it) + it->klen + it->vlen;
	s->st.bytes -= charge_of(s, sz);
	/* with the size, jemalloc knows the item's class without looking the
	 * pointer up in its radix tree, a likely cache miss for an item not
	 * touched since it was written: dallocx held 4.0% of sluiced's samples
	 * in get95 (5% SETs), sdallocx does not show, for 14 instructions more */
	sdallocx(it, sz, s->mflags);
}

void sl_store_destroy(struct sl_store *s)
{
	if (!s)
		return;
	for (size_t g = 0; g < s->nseg; g++) {
		for (unsigned b = 0; b < SEG_BUCKETS; b++) {
			struct bucket *bk = &s->seg[g][b];
			for (bool first = true; bk; first = false) {
				struct bucket *nx = next_of(bk);
				for (unsigned i = 0; i < ways_of(bk); i++)
					if (bk->e[i])
						item_release(s, entry_item(bk->e[i]));
				if (!first)
					dallocx(bk, s->mflags);
				bk = nx;
			}
		}
		dallocx(s->seg[g], s->mflags);
	}
	while (s->spare) {
		struct bucket *nx = (struct bucket *)(uintptr_t)s->spare->e[0];
		dallocx(s->spare, s->mflags);
		s->spare = nx;
	}
	free(s->seg);
	free(s->scratch);
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

/* The index entry that points at @p it, whose key hashes to @p h. */
static uint64_t *entry_slot(struct sl_store *s, const struct sl_item *it, uint64_t h)
{
	uint64_t want = entry_of(h, it);
	for (struct bucket *bk = bucket_of(s, h); bk; bk = next_of(bk))
		for (unsigned i = 0; i < ways_of(bk); i++)
			if (bk->e[i] == want)
				return &bk->e[i];
	return NULL;
}

/* Entry k of bucket a's chain, or NULL past its end. */
static uint64_t *chain_entry(const struct sl_store *s, uint64_t a, unsigned k)
{
	struct bucket *bk = bucket_at(s, a);
	while (is_link(bk->e[WAYS - 1])) {
		if (k < WAYS - 1)
			return &bk->e[k];
		k -= WAYS - 1;
		bk = link_of(bk->e[WAYS - 1]);
	}
	return k < WAYS ? &bk->e[k] : NULL;
}

/* The entry at @p p, then step p past it; wraps round the table. */
static uint64_t *pos_next(const struct sl_store *s, struct pos *p)
{
	uint64_t *e = chain_entry(s, p->a, p->k);
	if (!e) {
		p->a = p->a + 1 < s->nbuckets ? p->a + 1 : 0;
		p->k = 0;
		e = chain_entry(s, p->a, 0);
	}
	p->k++;
	return e;
}

static void class_drop(struct sl_store *s, const struct sl_item *it)
{
	struct sl_class_stats *c = &s->cls[sl_item_class(it)];
	c->number--;
	c->mem_requested -= sl_mc_ntotal(it->klen, it->vlen);
}

/* Tell the observer of a change the store makes by itself (eviction,
 * expiry), which has no hash at hand: the key is hashed again, only when
 * somebody listens. */
static void report(struct sl_store *s, enum sl_change_kind kind, const struct sl_item *it,
                   uint64_t hash)
{
	if (!s->obs.fn)
		return;
	if (it && !hash)
		hash = sl_key_hash(it->data, it->klen);
	struct sl_change c = {.kind = kind, .item = it, .hash = hash};
	s->obs.fn(s->obs.ctx, &c);
}

void sl_store_observe(struct sl_store *s, const struct sl_store_observer *o)
{
	s->obs = o ? *o : (struct sl_store_observer){0};
}

void sl_store_note(struct sl_store *s, enum sl_change_kind kind, const struct sl_item *it,
                   uint64_t hash)
{
	report(s, kind, it, hash);
}

/* Take the item at index entry @p e out of the store and free it. */
static void drop_entry(struct sl_store *s, uint64_t *e)
{
	struct sl_item *it = entry_item(*e);
	*e = 0;
	s->st.curr_items--;
	class_drop(s, it);
	item_release(s, it);
}

void sl_store_delete(struct sl_store *s, struct sl_item *it, uint64_t hash)
{
	sl_store_note(s, SL_CHANGE_DELETE, it, hash);
	sl_store_unlink(s, it, hash);
}

void sl_store_unlink(struct sl_store *s, struct sl_item *it, uint64_t hash)
{
	uint64_t *e = entry_slot(s, it, keyed(s, hash));
	if (e) {
		drop_entry(s, e);
	} else {
		/* not indexed (cannot happen for a linked item); free it anyway */
		s->st.curr_items--;
		class_drop(s, it);
		item_release(s, it);
	}
}

/* Count a dead item's reclaim in the statistics. */
static void count_reclaim(struct sl_store *s, const struct sl_item *it)
{
	struct sl_class_stats *c = &s->cls[sl_item_class(it)];
	s->st.reclaimed++;
	c->reclaimed++;
	if (!(it->bits & SL_IT_FETCHED)) {
		s->st.expired_unfetched++;
		c->expired_unfetched++;
	}
}

/* The item of entry @p e, which holds the key looked for: the item if it
 * is alive; if not, it is unlinked and NULL returned. */
static struct sl_item *found(struct sl_store *s, uint64_t *e, uint32_t now)
{
	struct sl_item *it = entry_item(*e);
	if (sl_store_alive(s, it, now))
		return it;
	count_reclaim(s, it);
	report(s, SL_CHANGE_EXPIRE, it, 0);
	drop_entry(s, e);
	return NULL;
}

static inline bool holds_key(uint64_t e, const char *key, size_t klen)
{
	const struct sl_item *it = entry_item(e);
	return it->klen == klen && sl_same(it->data, key, klen);
}

_Static_assert(WAYS < SL_PF_CHAIN, "a prefetch hint names an entry in four bits");

uint64_t sl_store_index_hash(const struct sl_store *s, uint64_t hash)
{
	return keyed(s, hash);
}

/* sl_store_get_ih's body; inline, so that sl_store_get (no hint) has no
 * hint test */
static inline struct sl_item *lookup(struct sl_store *s, uint64_t ih, unsigned hint,
                                     const char *key, size_t klen, uint32_t now)
{
	uint64_t tag = tag_of(ih);
	struct bucket *b0 = bucket_of(s, ih);
	if (SL_PF_HINT(hint) && SL_PF_HINT(hint) <= WAYS) {
		/* an empty entry or a link has tag bits 0, and a tag is never
		 * 0: the tag compare alone keeps them out */
		uint64_t *e = &b0->e[SL_PF_HINT(hint) - 1];
		if (*e >> TAG_SHIFT == tag && holds_key(*e, key, klen))
			return found(s, e, now);
	}
	for (struct bucket *bk = b0; bk; bk = next_of(bk)) {
		for (uint64_t m = tag_hits(bk, tag); m;) {
			unsigned i = next_hit(&m);
			if (holds_key(bk->e[i], key, klen))
				return found(s, &bk->e[i], now);
		}
	}
	return NULL;
}

struct sl_item *sl_store_get_ih(struct sl_store *s, uint64_t ih, unsigned hint, const char *key,
                                size_t klen, uint32_t now)
{
	return lookup(s, ih, hint, key, klen, now);
}

struct sl_item *sl_store_get(struct sl_store *s, uint64_t hash, const char *key, size_t klen,
                             uint32_t now)
{
	return lookup(s, keyed(s, hash), 0, key, klen, now);
}

/* Evict one item with CLOCK. Returns false when nothing can be evicted. */
static bool evict_one(struct sl_store *s, uint32_t now)
{
	if (s->st.curr_items <= (s->pin ? 1u : 0u))
		return false; /* nothing, or only the pinned item */
	for (unsigned scanned = 0;;) {
		uint64_t *e = pos_next(s, &s->hand);
		if (!*e)
			continue;
		struct sl_item *it = entry_item(*e);
		if (it == s->pin)
			continue;
		bool dead = !sl_store_alive(s, it, now);
		if (!dead && (it->bits & SL_IT_REF) && scanned++ < CLOCK_SCAN_MAX) {
			it->bits &= (uint8_t)~SL_IT_REF;
			continue;
		}
		if (dead) {
			count_reclaim(s, it);
			report(s, SL_CHANGE_EXPIRE, it, 0);
		} else {
			struct sl_class_stats *c = &s->cls[sl_item_class(it)];
			s->st.evictions++;
			c->evicted++;
			if (!(it->bits & SL_IT_FETCHED)) {
				s->st.evicted_unfetched++;
				c->evicted_unfetched++;
			}
			report(s, SL_CHANGE_EVICT, it, 0);
		}
		drop_entry(s, e);
		return true;
	}
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

static bool reserve_spares(struct sl_store *s, size_t n);

struct sl_item *sl_store_alloc(struct sl_store *s, const char *key, size_t klen, size_t vlen,
                               uint32_t now)
{
	size_t sz = sizeof(struct sl_item) + klen + vlen;
	/* too large by memcached's rule (its header), so the same values are
	 * accepted as by memcached with the same -I; vlen alone first, so
	 * that no length can wrap the sum around */
	if (klen > SL_KEY_MAX || vlen > s->max_item ||
	    SL_ITEM_OVERHEAD + klen + vlen + 2 > s->max_item) {
		errno = E2BIG;
		return NULL;
	}
	size_t charge = charge_of(s, sz);
	struct sl_item *it = NULL;
	/* the overflow bucket that linking may need is taken now, so that
	 * sl_store_link cannot fail once the caller has built the item */
	if (charge <= s->limit && make_room(s, charge, now) && reserve_spares(s, 1) &&
	    !sl_fault(SL_FAULT_item_alloc))
		it = mallocx(sz, s->mflags);
	if (!it) {
		s->st.oom++;
		s->cls[sl_class_of(sl_mc_ntotal(klen, vlen))].outofmemory++;
		errno = ENOMEM;
		return NULL;
	}
	s->st.bytes += charge;
	memset(it, 0, sizeof(*it));
	it->klen = (uint8_t)klen;
	it->vlen = (uint32_t)vlen;
	it->atime = now;
	sl_copy(it->data, key, klen);
	return it;
}

void sl_store_free(struct sl_store *s, struct sl_item *it)
{
	item_release(s, it);
}

/* Overflow buckets come from the spare list, which a split refills with
 * the buckets its chain no longer needs. */
static bool reserve_spares(struct sl_store *s, size_t n)
{
	while (s->nspare < n) {
		struct bucket *b =
		    sl_fault(SL_FAULT_bucket_alloc)
		        ? NULL
		        : mallocx(sizeof(struct bucket), s->mflags | MALLOCX_ALIGN(64));
		if (!b)
			return false;
		b->e[0] = (uint64_t)(uintptr_t)s->spare;
		s->spare = b;
		s->nspare++;
		s->noverflow++;
	}
	return true;
}

static struct bucket *take_spare(struct sl_store *s)
{
	struct bucket *b = s->spare;
	s->spare = (struct bucket *)(uintptr_t)b->e[0];
	s->nspare--;
	memset(b, 0, sizeof(*b));
	return b;
}

static void give_spare(struct sl_store *s, struct bucket *b)
{
	b->e[0] = (uint64_t)(uintptr_t)s->spare;
	s->spare = b;
	s->nspare++;
}

/* Put entry @p e into chain @p bk, growing the chain when it is full. */
static bool chain_insert(struct sl_store *s, struct bucket *bk, uint64_t e)
{
	for (;;) {
		unsigned n = ways_of(bk);
		for (unsigned i = 0; i < n; i++)
			if (!bk->e[i]) {
				bk->e[i] = e;
				return true;
			}
		if (n == WAYS)
			break;
		bk = link_of(bk->e[WAYS - 1]);
	}
	if (!reserve_spares(s, 1))
		return false;
	struct bucket *nb = take_spare(s);
	nb->e[0] = bk->e[WAYS - 1];
	nb->e[1] = e;
	bk->e[WAYS - 1] = (uint64_t)(uintptr_t)nb | LINK_BIT;
	return true;
}

/* Buckets a chain of @p m entries needs: k buckets hold 7k + 1. */
static size_t chain_buckets(size_t m)
{
	return m <= WAYS ? 1 : (m - 1 + WAYS - 2) / (WAYS - 1);
}

/* Lay @p m entries out over the (cleared) chain starting at @p bk, taking
 * overflow buckets from the spare list (reserved by the caller). */
static void chain_fill(struct sl_store *s, struct bucket *bk, const uint64_t *e, size_t m)
{
	memset(bk, 0, sizeof(*bk));
	while (m > WAYS) {
		struct bucket *nb = take_spare(s);
		memcpy(bk->e, e, (WAYS - 1) * sizeof(*e));
		bk->e[WAYS - 1] = (uint64_t)(uintptr_t)nb | LINK_BIT;
		e += WAYS - 1;
		m -= WAYS - 1;
		bk = nb;
	}
	memcpy(bk->e, e, m * sizeof(*e));
}

/*
 * Split the bucket under the split pointer: each of its items either stays
 * or moves to the new bucket (split + 2^L) by the next bit of its hash.
 * Everything that can fail (memory for a segment, the scratch list, the
 * overflow buckets) is done before the index is touched, so a failed split
 * changes nothing; chains just grow longer until memory comes back.
 */
static void split_one(struct sl_store *s)
{
	uint64_t p = s->split, img = p + s->low_mask + 1;
	uint64_t bit = s->low_mask + 1;
	if (!ensure_bucket(s, img))
		return;
	struct bucket *head = bucket_at(s, p), *dst = bucket_at(s, img);

	size_t n = 0, links = 0;
	for (struct bucket *bk = head; bk; bk = next_of(bk), links++)
		n += ways_of(bk);
	if (n > s->scratch_cap) {
		uint64_t *sc = realloc(s->scratch, 2 * n * sizeof(*sc));
		if (!sc)
			return;
		s->scratch = sc;
		s->scratch_cap = 2 * n;
	}
	/* stayers from the front of the scratch list, movers from the back */
	size_t lo = 0, hi = n;
	for (struct bucket *bk = head; bk; bk = next_of(bk))
		for (unsigned i = 0; i < ways_of(bk); i++) {
			uint64_t e = bk->e[i];
			if (!e)
				continue;
			struct sl_item *it = entry_item(e);
			if (keyed(s, sl_key_hash(it->data, it->klen)) & bit)
				s->scratch[--hi] = e;
			else
				s->scratch[lo++] = e;
		}
	size_t need = chain_buckets(lo) - 1 + chain_buckets(n - hi) - 1;
	if (!reserve_spares(s, need > links - 1 ? need - (links - 1) : 0))
		return;
	/* the chain's overflow buckets go back to the spare list first */
	for (struct bucket *bk = next_of(head); bk;) {
		struct bucket *nx = next_of(bk);
		give_spare(s, bk);
		bk = nx;
	}
	chain_fill(s, head, s->scratch, lo);
	chain_fill(s, dst, s->scratch + hi, n - hi);

	s->split++;
	s->nbuckets++;
	if (s->split > s->low_mask) {
		s->low_mask = 2 * s->low_mask + 1;
		s->split = 0;
	}
}

int sl_store_link(struct sl_store *s, struct sl_item *it, struct sl_item *old, uint64_t hash)
{
	uint64_t k = keyed(s, hash), e = entry_of(k, it);
	uint64_t *slot = old ? entry_slot(s, old, k) : NULL;
	if (slot) {
		drop_entry(s, slot);
		*slot = e;
	} else {
		/* sl_store_alloc reserved the bucket this may take, so only a
		 * caller that allocated twice before linking gets here without
		 * one; then nothing changes and the caller keeps the item */
		if (!chain_insert(s, bucket_of(s, k), e)) {
			s->st.oom++;
			return -ENOMEM;
		}
		if (old)
			sl_store_unlink(s, old, hash); /* not indexed: cannot happen */
	}
	if (it->cas == 0)
		it->cas = sl_store_next_cas(s);
	it->bits |= SL_IT_REF;
	s->st.curr_items++;
	s->st.total_items++;
	struct sl_class_stats *c = &s->cls[sl_item_class(it)];
	c->number++;
	c->mem_requested += sl_mc_ntotal(it->klen, it->vlen);
	if (s->st.curr_items > LOAD * s->nbuckets)
		split_one(s);
	return 0;
}

/*
 * A prefetch the compiler has to keep. __builtin_prefetch counts as having
 * no effect, so a function that does nothing else is "pure" to GCC, and
 * with link-time optimisation the calls to sl_store_prefetch_* were
 * dropped as dead code (measured: 1.8 instead of 3.0 Mops/s). An empty
 * volatile asm that takes the address is an effect it must keep.
 */
static inline void prefetch(const void *p)
{
	__builtin_prefetch(p);
	__asm__ volatile("" : : "r"(p));
}

/* how many entries of the next step are prefetched (a few lines of miss
 * buffers' worth; the worker's steps are no larger) */
#define SWEEP_AHEAD 32

unsigned sl_store_sweep(struct sl_store *s, uint32_t now, unsigned budget)
{
	unsigned freed = 0;
	for (unsigned i = 0; i < budget && s->st.curr_items; i++) {
		uint64_t *e = pos_next(s, &s->sweep);
		if (!*e)
			continue;
		struct sl_item *it = entry_item(*e);
		if (it == s->pin || sl_store_alive(s, it, now))
			continue;
		count_reclaim(s, it);
		report(s, SL_CHANGE_EXPIRE, it, 0);
		drop_entry(s, e);
		freed++;
	}
	/* The next call starts where this one stopped: fetch those items now,
	 * so that it does not stall on them. Each look at an item is a likely
	 * DRAM miss, and a step that stalls on every one holds the core for
	 * ~250 ns an entry while requests wait behind it. */
	if (s->st.curr_items) {
		struct pos p = s->sweep;
		for (unsigned i = 0; i < budget && i < SWEEP_AHEAD; i++) {
			uint64_t *e = pos_next(s, &p);
			if (*e)
				prefetch(entry_item(*e));
		}
	}
	return freed;
}

bool sl_store_walk(struct sl_store *s, struct sl_store_cursor *c, unsigned budget,
                   bool (*fn)(void *ctx, struct sl_item *it), void *ctx)
{
	if (c->nb != s->nbuckets)
		c->k = 0;
	for (unsigned i = 0; i < budget; i++) {
		if (c->a >= s->nbuckets)
			return false;
		uint64_t *e = chain_entry(s, c->a, c->k);
		if (!e) {
			c->a++;
			c->k = 0;
			continue;
		}
		c->k++;
		if (!*e)
			continue;
		struct sl_item *it = entry_item(*e);
		if (fn(ctx, it) && it != s->pin)
			drop_entry(s, e);
	}
	c->nb = s->nbuckets;
	return c->a < s->nbuckets;
}

void sl_store_prefetch_bucket(const struct sl_store *s, uint64_t ih)
{
	prefetch(bucket_of(s, ih));
}

/* Prefetch the items in @p bk whose tag is @p tag; returns which they are
 * (tag_hits). */
static uint64_t prefetch_tagged(const struct bucket *bk, uint64_t tag)
{
	uint64_t hits = tag_hits(bk, tag);
	for (uint64_t m = hits; m;) {
		/* items are 16-byte aligned, not line aligned: a small one
		 * (header, key and value, 112 bytes for MICA's 16/64)
		 * straddles up to three lines, and its key or even klen may
		 * sit in the second */
		const char *it = (const char *)entry_item(bk->e[next_hit(&m)]);
		prefetch(it);
		prefetch(it + 64);
		prefetch(it + 127);
	}
	return hits;
}

unsigned sl_store_prefetch_items(const struct sl_store *s, uint64_t ih)
{
	const struct bucket *bk = bucket_of(s, ih);
	/* a key found inline ends the lookup there: its chain is not read */
	uint64_t hits = prefetch_tagged(bk, tag_of(ih));
	if (hits)
		return 1 + next_hit(&hits);
	if (!is_link(bk->e[WAYS - 1]))
		return 0;
	prefetch(link_of(bk->e[WAYS - 1]));
	return SL_PF_CHAIN;
}

void sl_store_prefetch_chain(const struct sl_store *s, uint64_t ih)
{
	uint64_t tag = tag_of(ih);
	for (const struct bucket *bk = next_of(bucket_of(s, ih)); bk; bk = next_of(bk))
		if (prefetch_tagged(bk, tag))
			return;
}

void sl_store_pin(struct sl_store *s, struct sl_item *it)
{
	s->pin = it;
}

uint64_t sl_store_next_cas(struct sl_store *s)
{
	/* unique across the stores of a cluster: a counter of this store's,
	 * and the tag of which store it is (another thread may set the tag) */
	return ++s->cas << 16 | __atomic_load_n(&s->cas_tag, __ATOMIC_RELAXED);
}

void sl_store_set_cas_tag(struct sl_store *s, uint16_t tag)
{
	__atomic_store_n(&s->cas_tag, tag, __ATOMIC_RELAXED);
}

void sl_store_flush(struct sl_store *s, uint32_t now, int32_t delay)
{
	uint32_t new_oldest = delay > 0 ? sl_exptime_abs(delay, now) : now;
	s->oldest_live = new_oldest - 1;
	if (s->oldest_live <= now)
		s->oldest_cas = sl_store_next_cas(s);
	report(s, SL_CHANGE_FLUSH, NULL, 0);
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

uint64_t sl_store_bucket(const struct sl_store *s, uint64_t hash)
{
	return addr_of(s, keyed(s, hash));
}

size_t sl_store_index_bytes(const struct sl_store *s)
{
	return s->nseg * SEG_BUCKETS * sizeof(struct bucket) + s->noverflow * sizeof(struct bucket);
}
