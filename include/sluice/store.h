/*
 * Per-core item store.
 *
 * One store per worker core; only that core ever touches it (no locks, no
 * atomics). Items live in a jemalloc arena of the store's own, so that a
 * core's allocations never contend with another's and the store can charge
 * exactly what jemalloc hands out (nallocx) against its memory limit.
 *
 * Memory per item is what the design is about once the request path is
 * cheap: a 16-byte key with a 64-byte value is 80 bytes of payload, and
 * every byte of header, index and allocator rounding is paid a million
 * times per core. So the header carries only what the protocol needs, the
 * index grows with the items instead of being sized for the worst case, and
 * eviction runs over the index itself instead of a list threaded through
 * the items (which would cost two pointers per item).
 *
 * Index: linear hashing (Litwin) over 64-byte buckets of eight 8-byte
 * entries. An entry packs a 16-bit tag from the key's hash above a 48-bit
 * item pointer, so a lookup touches one cache line of index and, only on a
 * tag match, the item. The tags of a line are compared all at once (SSE2),
 * without a branch per entry to mispredict. When a bucket's eight entries
 * are full, its last entry becomes a link (low bit set) to an overflow
 * bucket, and the entry that was there moves into the overflow bucket:
 *
 *   bucket (64 B):  +--------+--------+-- ... --+--------+---------------+
 *                   | tag|ptr| tag|ptr|         | tag|ptr| tag|ptr or    |
 *                   |        |        |         |        | overflow|1    |
 *                   +--------+--------+-- ... --+--------+---------------+
 *                      8 B      8 B                8 B          8 B
 *
 * The index hash h is the key's XXH3 hash mixed with a per-store random
 * secret, so that nobody can pick keys that pile into one bucket (hash
 * flooding). The table grows one bucket at a time: when there are more
 * than six items per bucket, the bucket under the split pointer is split in
 * two, its items divided by one more bit of their hash (the keys are hashed
 * again for it: the item has no room for its hash). Address of h, with
 * n = 2^L buckets at the start of the round and p buckets split so far:
 *
 *   a = h mod n;  if (a < p) a = h mod 2n        (bits 48-63 are the tag)
 *
 * Buckets live in 1024-bucket (64 KiB)
 * segments reached through a small directory, so growing never copies or
 * moves the table and a split moves at most one chain: bounded work per
 * insert, no stop-the-world rehash. The index never shrinks (neither does
 * memcached's hash table); its size is reported as hash_bytes and is not
 * part of the memory limit, which is for items.
 *
 * Item: a 26-byte header and then key and value bytes, one allocation:
 *
 *   +-----+--------+-------+-------+------+------+------+------------+
 *   | cas | expire | atime | flags | vlen | klen | bits | key, value |
 *   +-----+--------+-------+-------+------+------+------+------------+
 *     8      4        4       4       4      1      1
 *
 * A 16 B key and 64 B value make a 106-byte item, which jemalloc rounds to
 * its 112-byte class: 32 bytes beyond key and value, plus about 13 bytes of
 * index (a 64-byte bucket per six items, and the overflow buckets).
 *
 * Eviction: CLOCK whose hand walks the index, bucket by bucket and entry by
 * entry. A hit sets the item's reference bit; the hand clears set bits and
 * evicts the first item found clear. A new item starts with its bit set:
 * it lands at a random place relative to the hand and would otherwise risk
 * eviction before its first chance to be read. CLOCK keeps a hit down to one
 * store to the item (no list surgery on the read path, unlike LRU) and,
 * measured with this very store on a Zipf 0.99 trace (perf/eviction_sim),
 * hits about as often as exact LRU of the same capacity (table in the
 * README).
 *
 * Expiry is lazy (checked on access) plus a bounded sweep over the index
 * (see sl_store_sweep) and the clock hand: an expired item is always
 * preferred for eviction.
 */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/sizeclass.h"

/* item bits */
#define SL_IT_REF 0x01     /* CLOCK reference bit */
#define SL_IT_FETCHED 0x02 /* read at least once since stored */
#define SL_IT_STALE 0x04   /* meta: invalidated, value is stale */
#define SL_IT_TOKEN 0x08   /* meta: a recache token (W) was handed out */
#define SL_IT_BINKEY 0x10  /* meta: key was given in base64 */

struct sl_item {
	uint64_t cas;
	uint32_t exptime; /* absolute unix seconds; 0 = never */
	uint32_t atime;   /* last access, unix seconds */
	uint32_t flags;   /* client flags */
	uint32_t vlen;
	uint8_t klen;
	uint8_t bits;
	char data[]; /* key, then value */
} __attribute__((packed));

/** memcached size class of an item, for per-class statistics. */
static inline unsigned sl_item_class(const struct sl_item *it)
{
	return sl_class_of(sl_mc_ntotal(it->klen, it->vlen));
}

static inline char *sl_item_key(struct sl_item *it)
{
	return it->data;
}

static inline char *sl_item_value(struct sl_item *it)
{
	return it->data + it->klen;
}

struct sl_store_conf {
	size_t mem_limit;     /* bytes for items */
	size_t max_item_size; /* memcached's rule: SL_ITEM_OVERHEAD + key + value + 2 */
	unsigned arena;       /* jemalloc arena, or SL_STORE_NEW_ARENA */
};

#define SL_STORE_NEW_ARENA (~0u)

struct sl_store_stats {
	uint64_t curr_items;
	uint64_t total_items;
	uint64_t bytes; /* bytes charged for items */
	uint64_t evictions;
	uint64_t expired_unfetched;
	uint64_t evicted_unfetched;
	uint64_t reclaimed; /* expired items freed */
	uint64_t oom;       /* allocations refused */
};

/* Per size class counters, as memcached's "stats slabs" / "stats items". */
#define SL_CLASS_COUNTERS(X)                                                                       \
	X(number)                                                                                  \
	X(mem_requested)                                                                           \
	X(evicted)                                                                                 \
	X(outofmemory)                                                                             \
	X(reclaimed)                                                                               \
	X(expired_unfetched)                                                                       \
	X(evicted_unfetched)                                                                       \
	X(get_hits)                                                                                \
	X(cmd_set)                                                                                 \
	X(delete_hits)                                                                             \
	X(incr_hits)                                                                               \
	X(decr_hits)                                                                               \
	X(cas_hits)                                                                                \
	X(cas_badval)                                                                              \
	X(touch_hits)

struct sl_class_stats {
#define X(n) uint64_t n;
	SL_CLASS_COUNTERS(X)
#undef X
};

struct sl_store;

/**
 * Create a store. The index starts at one segment and grows with the items.
 * @return the store, or NULL with errno set (ENOMEM, EINVAL).
 */
struct sl_store *sl_store_create(const struct sl_store_conf *conf);

/** Free every item, the index and the arena's memory. */
void sl_store_destroy(struct sl_store *s);

/**
 * Find a live item. Expired or flushed items are unlinked on the way.
 * @return the item or NULL. It stays valid until the next mutating call.
 */
struct sl_item *sl_store_get(struct sl_store *s, uint64_t hash, const char *key, size_t klen,
                             uint32_t now);

/**
 * The index hash of a key whose hash is @p hash: the hash mixed with this
 * store's secret, which is what the index is addressed by. The worker's
 * burst loop computes it once per request for its prefetch steps and its
 * lookup (sl_store_get_ih), which would otherwise mix it again each.
 */
uint64_t sl_store_index_hash(const struct sl_store *s, uint64_t hash);

/**
 * sl_store_get by index hash, with @p hint: what sl_store_prefetch_items
 * returned for the same key (0: none). SL_PF_HINT(hint) names the entry of
 * the key's bucket whose tag matched then; it is read afresh and its key
 * compared, so a store changed since (a SET earlier in the burst, a split)
 * costs the full lookup, never a wrong answer.
 */
struct sl_item *sl_store_get_ih(struct sl_store *s, uint64_t ih, unsigned hint, const char *key,
                                size_t klen, uint32_t now);

/**
 * Allocate an unlinked item with room for klen + vlen bytes, evicting as
 * needed (dead items first, judged at @p now, which also becomes the item's
 * access time). The key is copied in; the caller fills the value and links
 * it.
 * @return the item, or NULL when it can never fit (errno E2BIG) or nothing
 *         is left to evict (ENOMEM).
 */
struct sl_item *sl_store_alloc(struct sl_store *s, const char *key, size_t klen, size_t vlen,
                               uint32_t now);

/**
 * Keep @p it from being evicted by the following sl_store_alloc calls, until
 * pinned again or unpinned with NULL (append reads the old item while
 * allocating the new one).
 */
void sl_store_pin(struct sl_store *s, struct sl_item *it);

/**
 * Link an item made by sl_store_alloc, replacing (freeing) @p old if set;
 * @p hash is the key's hash (the one given to sl_store_alloc). Linking
 * reports nothing to the observer: the caller does, once the item is in
 * its final state (sl_store_note).
 * @return 0; or -ENOMEM, with nothing changed and the item still the
 *         caller's (to free with sl_store_free), only when the caller made
 *         a second item with sl_store_alloc before linking the first
 *         (sl_store_alloc reserves what one link needs).
 */
int sl_store_link(struct sl_store *s, struct sl_item *it, struct sl_item *old, uint64_t hash);

/** Unlink and free a linked item whose key hashes to @p hash (reports
 *  nothing: see sl_store_delete). */
void sl_store_unlink(struct sl_store *s, struct sl_item *it, uint64_t hash);

/** A client's delete: report SL_CHANGE_DELETE, then unlink and free. */
void sl_store_delete(struct sl_store *s, struct sl_item *it, uint64_t hash);

/** Free an item that was never linked. */
void sl_store_free(struct sl_store *s, struct sl_item *it);

/**
 * Prefetch for a coming lookup of index hash @p ih, in up to three steps,
 * each once the previous one's lines have had time to arrive: the bucket;
 * the items in it whose tag matches (the step returns the first one's
 * entry as a hint for sl_store_get_ih) or, when none does and the bucket
 * has a chain, the chain's next bucket (the step then returns
 * SL_PF_CHAIN); and, only after SL_PF_CHAIN, the matching items down the
 * chain. Called over a burst before the burst is processed, so the misses
 * overlap instead of queueing.
 */
#define SL_PF_CHAIN 0x10u
#define SL_PF_HINT(pf) ((pf)&0xfu)
void sl_store_prefetch_bucket(const struct sl_store *s, uint64_t ih);
unsigned sl_store_prefetch_items(const struct sl_store *s, uint64_t ih);
void sl_store_prefetch_chain(const struct sl_store *s, uint64_t ih);

/** Next CAS value (per store, strictly increasing, never 0). */
uint64_t sl_store_next_cas(struct sl_store *s);
/**
 * CAS values are unique per server in memcached, and clients and its test
 * suite count on two keys never sharing one; a node has a store per core
 * and a cluster many nodes, so each CAS is this store's counter (high 48
 * bits) and a tag naming the store (low 16): SL_CAS_TAG(node id, core).
 * Any thread may set it; it takes effect from the next CAS.
 */
void sl_store_set_cas_tag(struct sl_store *s, uint16_t tag);
#define SL_CAS_TAG(node, core) ((uint16_t)(((unsigned)(node) & 0x3ffu) << 6 | ((core) & 0x3fu)))

/** Mark a hit: CLOCK reference bit and access time. */
static inline void sl_store_touch_access(struct sl_item *it, uint32_t now)
{
	it->bits |= SL_IT_REF;
	it->atime = now;
}

/**
 * flush_all: items stored or accessed up to @p oldest_live (unix seconds)
 * are dead once now >= oldest_live; when that moment is now, items with a
 * CAS below the current counter are dead too (sub-second precision).
 */
void sl_store_flush(struct sl_store *s, uint32_t now, int32_t delay);

/**
 * Free expired and flushed items, looking at no more than @p budget index
 * entries (the worker calls it every loop iteration, so its cost is
 * bounded; a full turn takes about 1.4 * curr_items / budget calls, empty
 * entries included). This is what
 * memcached's LRU crawler does: dead items give back their memory without
 * waiting to be read or evicted.
 * @return the number of items freed.
 */
unsigned sl_store_sweep(struct sl_store *s, uint32_t now, unsigned budget);

/*
 * A walk over every item in bounded steps (a replication snapshot, the
 * drop of a stream's slots on a backup): the cursor names an index entry;
 * each call looks at no more than @p budget entries from it. Items only
 * ever move to higher buckets (a split sends half of bucket p to p + n),
 * so a walk sees every item that was there when it began and stayed; one
 * moved by a split during the walk may be seen twice. Start with a zeroed
 * cursor.
 */
struct sl_store_cursor {
	uint64_t a;  /* bucket */
	unsigned k;  /* entry in its chain */
	uint64_t nb; /* buckets when the last step ended: a split since may
	              * have reordered the cursor's chain, which is then read
	              * again from its start */
};

/**
 * @p fn is called with each item (and @p ctx); when it returns true the
 * item is unlinked and freed (nothing reported to the observer).
 * @return false once the walk has passed the last entry.
 */
bool sl_store_walk(struct sl_store *s, struct sl_store_cursor *c, unsigned budget,
                   bool (*fn)(void *ctx, struct sl_item *it), void *ctx);

/** Is @p it alive at @p now (not expired, not flushed)? */
bool sl_store_alive(const struct sl_store *s, const struct sl_item *it, uint32_t now);

const struct sl_store_stats *sl_store_stats(const struct sl_store *s);

/*
 * Change observer: one per store (so one per core), none by default.
 * Every change a reader of the store could see is reported exactly once,
 * after it is made and while the item is still valid, on the owner core:
 *
 *   SL_CHANGE_SET     a new item linked or an item changed in place (set
 *                     family, incr/decr, meta flags that change state);
 *                     @p item is its new state
 *   SL_CHANGE_TTL     only the item's expiry time changed (touch, gat,
 *                     mg T)
 *   SL_CHANGE_DELETE  a client deleted it, or a failed set dropped it
 *   SL_CHANGE_EVICT   evicted to make room
 *   SL_CHANGE_EXPIRE  found dead (expired or flushed) and freed
 *   SL_CHANGE_FLUSH   flush_all; @p item is NULL
 *
 * The command layer reports SET, TTL and DELETE (sl_store_note,
 * sl_store_delete) once per command, when the item is final; the store
 * reports the rest itself. Replication hangs off this.
 */
enum sl_change_kind {
	SL_CHANGE_SET,
	SL_CHANGE_TTL,
	SL_CHANGE_DELETE,
	SL_CHANGE_EVICT,
	SL_CHANGE_EXPIRE,
	SL_CHANGE_FLUSH,
};

struct sl_change {
	enum sl_change_kind kind;
	const struct sl_item *item; /* valid during the call only */
	uint64_t hash;              /* the key's XXH3 hash (0 for FLUSH) */
};

struct sl_store_observer {
	void (*fn)(void *ctx, const struct sl_change *c);
	void *ctx;
};

/** Attach @p o (copied), or detach with NULL. Owner core only. */
void sl_store_observe(struct sl_store *s, const struct sl_store_observer *o);

/** Report a change the caller made to @p it (key hash @p hash). */
void sl_store_note(struct sl_store *s, enum sl_change_kind kind, const struct sl_item *it,
                   uint64_t hash);

/** Counters of size class @p cls (1..sl_class_count()); the owner core
 *  may update the hit counters through it, readers only read. */
struct sl_class_stats *sl_store_class(struct sl_store *s, unsigned cls);
size_t sl_store_limit(const struct sl_store *s);
/** Index bucket a key of hash @p hash lives in now (for tests). */
uint64_t sl_store_bucket(const struct sl_store *s, uint64_t hash);

/** Bytes held by the index (segments and overflow buckets). */
size_t sl_store_index_bytes(const struct sl_store *s);

/** memcached's exptime rule: 0 never, <0 past, <= 30 days relative, else absolute. */
uint32_t sl_exptime_abs(int32_t exptime, uint32_t now);

#endif
