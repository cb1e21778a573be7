/*
 * Placement: which node owns a key (or a slot), and which is its backup.
 *
 * One module for the controller, sluicectl and libsluice, so that all of
 * them place alike. Five strategies, the first the one the cluster uses,
 * the others beside it for comparison (sluicectl ring simulate):
 *
 *   consistent  a ring of 2^64 points; each node gets round(vnodes x
 *               weight) virtual nodes at XXH3(name "#" i, seed); a key
 *               belongs to the first virtual node clockwise of its hash,
 *               and its backup is the next distinct node clockwise.
 *               Adding or removing a node moves only the keys it takes or
 *               gives back (about 1/N of them).
 *
 *                 0                                            2^64
 *                 |--a#3----b#0--x-----c#1----a#0------b#2-----|
 *                                ^ key x: primary c, backup a
 *
 *   rendezvous  highest random weight: the node with the largest
 *               -weight / ln(u), u = XXH3(key hash, name) in (0, 1);
 *               backup: the second largest. Moves only what it must.
 *   jump        Lamping and Veach's jump hash over nodes in name order;
 *               no weights; moves only the keys of the last node removed
 *               or the one added (nodes keep their positions in the order
 *               only when added or removed at its end).
 *   modulo      hash % N, the naive scheme: nearly every key moves when N
 *               changes.
 *   bounded     consistent hashing with bounded loads (Mirrokni, Thorup,
 *               Zadimoghaddam): assigned in input order, a key goes to
 *               the first node clockwise that has fewer than
 *               ceil((1 + epsilon) x m x weight share) keys of the m, so
 *               no node carries more than (1 + epsilon) x its share.
 *
 * Deterministic everywhere: nodes are ordered by name whatever order they
 * are given in, every hash has a fixed seed, and nothing depends on
 * pointers, time or insertion order. The hash of a key is its slot
 * contract's hash (XXH3-64, seed 0); a slot is placed by sl_place_slot_hash.
 */
#ifndef SLUICE_PLACEMENT_H
#define SLUICE_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#define SL_PLACE_NAME_MAX 63
#define SL_PLACE_NONE 0xffffu

enum sl_place_strategy {
	SL_PLACE_CONSISTENT,
	SL_PLACE_RENDEZVOUS,
	SL_PLACE_JUMP,
	SL_PLACE_MODULO,
	SL_PLACE_BOUNDED,
	SL_PLACE__COUNT
};

extern const char *const sl_place_names[SL_PLACE__COUNT];

struct sl_place_node {
	char name[SL_PLACE_NAME_MAX + 1];
	double weight; /* > 0; 1 is one unit of capacity */
};

struct sl_place_opts {
	unsigned vnodes; /* per unit of weight; 0: 150 */
	double epsilon;  /* bounded: 0 means 0.25 */
};

struct sl_placement;

/**
 * Build a placement of @p n nodes (1..65534, distinct names).
 * @return it, or NULL with errno EINVAL (no nodes, a bad weight, a name
 *         twice) or ENOMEM.
 */
struct sl_placement *sl_placement_build(enum sl_place_strategy s, const struct sl_place_node *nodes,
                                        unsigned n, const struct sl_place_opts *o);
void sl_placement_free(struct sl_placement *p);

/** Node @p i's name, in the placement's own order (by name). */
unsigned sl_placement_count(const struct sl_placement *p);
const char *sl_placement_name(const struct sl_placement *p, unsigned i);
/** Index of the node called @p name, or SL_PLACE_NONE. */
unsigned sl_placement_find(const struct sl_placement *p, const char *name);

/**
 * Place @p m hashes: @p primary[i] and @p backup[i] (SL_PLACE_NONE when
 * there is one node; @p backup may be NULL) name nodes by index. The
 * bounded strategy depends on the order of the batch; the others place
 * each hash alone.
 * @return 0, or -ENOMEM.
 */
int sl_placement_assign(const struct sl_placement *p, const uint64_t *hash, size_t m,
                        uint16_t *primary, uint16_t *backup);

/** One hash alone (for bounded: as the only key of its batch). */
unsigned sl_placement_lookup(const struct sl_placement *p, uint64_t hash, unsigned *backup);

/** The point on which slot @p slot is placed. */
uint64_t sl_place_slot_hash(uint16_t slot);

#endif
