#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sluice/placement.h"
#include "sluice/slot.h"

static struct sl_place_node nodes[16];

static struct sl_placement *make(enum sl_place_strategy s, unsigned n, unsigned vnodes)
{
	for (unsigned i = 0; i < n; i++) {
		snprintf(nodes[i].name, sizeof(nodes[i].name), "n%u", i + 1);
		nodes[i].weight = 1;
	}
	struct sl_place_opts o = {.vnodes = vnodes};
	struct sl_placement *p = sl_placement_build(s, nodes, n, &o);
	cr_assert_not_null(p);
	return p;
}

static uint64_t key(unsigned i)
{
	char k[32];
	int n = snprintf(k, sizeof(k), "key:%u", i);
	return sl_key_hash(k, (size_t)n);
}

static const char *owner(const struct sl_placement *p, unsigned i)
{
	return sl_placement_name(p, sl_placement_lookup(p, key(i), NULL));
}

Test(placement, same_key_same_node_in_any_build)
{
	for (int s = 0; s < SL_PLACE__COUNT; s++) {
		struct sl_placement *a = make(s, 5, 150);
		/* the same nodes given in another order */
		struct sl_place_node rev[5];
		for (int i = 0; i < 5; i++)
			rev[i] = nodes[4 - i];
		struct sl_placement *b = sl_placement_build(s, rev, 5, NULL);
		for (unsigned i = 0; i < 2000; i++) {
			cr_assert_str_eq(owner(a, i), owner(b, i), "%s", sl_place_names[s]);
			cr_assert_str_eq(owner(a, i), owner(a, i));
		}
		sl_placement_free(a);
		sl_placement_free(b);
	}
}

Test(placement, four_nodes_share_ten_thousand_keys)
{
	struct sl_placement *p = make(SL_PLACE_CONSISTENT, 4, 150);
	unsigned count[4] = {0};
	for (unsigned i = 0; i < 10000; i++)
		count[sl_placement_lookup(p, key(i), NULL)]++;
	for (int j = 0; j < 4; j++)
		cr_assert(count[j] >= 2000 && count[j] <= 3000, "node %d has %u", j, count[j]);
	sl_placement_free(p);
}

static unsigned moved(enum sl_place_strategy s, unsigned n0, unsigned n1, unsigned keys)
{
	struct sl_placement *a = make(s, n0, 150), *b = make(s, n1, 150);
	unsigned m = 0;
	for (unsigned i = 0; i < keys; i++)
		m += strcmp(owner(a, i), owner(b, i)) != 0;
	sl_placement_free(a);
	sl_placement_free(b);
	return m;
}

Test(placement, a_fifth_node_takes_a_fifth_of_the_keys)
{
	unsigned m = moved(SL_PLACE_CONSISTENT, 4, 5, 1000);
	cr_assert(m >= 150 && m <= 300, "%u of 1000 moved", m);
	m = moved(SL_PLACE_RENDEZVOUS, 4, 5, 1000);
	cr_assert(m >= 150 && m <= 300, "rendezvous: %u of 1000 moved", m);
	m = moved(SL_PLACE_JUMP, 4, 5, 1000);
	cr_assert(m >= 150 && m <= 300, "jump: %u of 1000 moved", m);
	m = moved(SL_PLACE_MODULO, 4, 5, 1000);
	cr_assert_gt(m, 700, "modulo moves most keys: %u", m);
}

/* Removing a node moves exactly the keys it owned, none between the nodes
 * that stay. */
Test(placement, removing_a_node_moves_only_its_keys)
{
	enum sl_place_strategy ss[] = {SL_PLACE_CONSISTENT, SL_PLACE_RENDEZVOUS};
	for (int x = 0; x < 2; x++) {
		struct sl_placement *a = make(ss[x], 5, 150);
		struct sl_place_node four[4] = {nodes[0], nodes[1], nodes[3],
		                                nodes[4]}; /* n3 gone */
		struct sl_placement *b = sl_placement_build(ss[x], four, 4, NULL);
		unsigned had = 0;
		for (unsigned i = 0; i < 5000; i++) {
			const char *o = owner(a, i), *n = owner(b, i);
			if (strcmp(o, "n3") == 0) {
				had++;
				cr_assert_str_neq(n, "n3");
			} else {
				cr_assert_str_eq(o, n, "%s: key %u moved between survivors",
				                 sl_place_names[ss[x]], i);
			}
		}
		cr_assert_gt(had, 500);
		sl_placement_free(a);
		sl_placement_free(b);
	}
}

Test(placement, ring_lookup_wraps_and_backup_is_the_next_distinct_node)
{
	struct sl_placement *p = make(SL_PLACE_CONSISTENT, 3, 1);
	/* one point per node: a hash above every point belongs to the first
	 * point of the ring, the one a hash of 0 finds */
	unsigned b0, bmax;
	unsigned at0 = sl_placement_lookup(p, 0, &b0);
	unsigned atmax = sl_placement_lookup(p, UINT64_MAX, &bmax);
	cr_assert_eq(at0, atmax);
	cr_assert_eq(b0, bmax);
	for (unsigned i = 0; i < 3000; i++) {
		unsigned b, pr = sl_placement_lookup(p, key(i), &b);
		cr_assert_neq(pr, b);
		cr_assert_lt(b, 3);
	}
	sl_placement_free(p);
	struct sl_placement *one = make(SL_PLACE_CONSISTENT, 1, 150);
	unsigned b;
	cr_assert_eq(sl_placement_lookup(one, key(1), &b), 0);
	cr_assert_eq(b, SL_PLACE_NONE);
	sl_placement_free(one);
}

Test(placement, weights_give_shares)
{
	struct sl_place_node w[3] = {{"a", 1}, {"b", 1}, {"c", 2}};
	struct sl_placement *p = sl_placement_build(SL_PLACE_CONSISTENT, w, 3, NULL);
	struct sl_placement *r = sl_placement_build(SL_PLACE_RENDEZVOUS, w, 3, NULL);
	unsigned cp[3] = {0}, cr[3] = {0};
	for (unsigned i = 0; i < 40000; i++) {
		cp[sl_placement_lookup(p, key(i), NULL)]++;
		cr[sl_placement_lookup(r, key(i), NULL)]++;
	}
	/* c has half the capacity: 20,000 keys, within 15% */
	cr_assert(cp[2] > 17000 && cp[2] < 23000, "consistent: %u", cp[2]);
	cr_assert(cr[2] > 18500 && cr[2] < 21500, "rendezvous: %u", cr[2]);
	sl_placement_free(p);
	sl_placement_free(r);
}

Test(placement, bounded_load_caps_every_node)
{
	struct sl_place_opts o = {.vnodes = 4, .epsilon = 0.1}; /* few vnodes: uneven ring */
	for (unsigned i = 0; i < 6; i++) {
		snprintf(nodes[i].name, sizeof(nodes[i].name), "n%u", i + 1);
		nodes[i].weight = 1;
	}
	struct sl_placement *c = sl_placement_build(SL_PLACE_CONSISTENT, nodes, 6, &o);
	struct sl_placement *b = sl_placement_build(SL_PLACE_BOUNDED, nodes, 6, &o);
	uint64_t h[SL_SLOTS];
	uint16_t pc[SL_SLOTS], pb[SL_SLOTS];
	for (unsigned s = 0; s < SL_SLOTS; s++)
		h[s] = sl_place_slot_hash((uint16_t)s);
	cr_assert_eq(sl_placement_assign(c, h, SL_SLOTS, pc, NULL), 0);
	cr_assert_eq(sl_placement_assign(b, h, SL_SLOTS, pb, NULL), 0);
	unsigned lc[6] = {0}, lb[6] = {0}, maxc = 0, maxb = 0;
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		lc[pc[s]]++;
		lb[pb[s]]++;
	}
	for (int j = 0; j < 6; j++) {
		maxc = lc[j] > maxc ? lc[j] : maxc;
		maxb = lb[j] > maxb ? lb[j] : maxb;
	}
	unsigned cap = (unsigned)((1.1 * SL_SLOTS + 5) / 6) + 1;
	cr_assert_leq(maxb, cap, "bounded: busiest %u, cap %u", maxb, cap);
	cr_assert_gt(maxc, cap, "this ring is uneven enough to need the bound (%u)", maxc);
	sl_placement_free(c);
	sl_placement_free(b);
}

Test(placement, bad_input_is_refused)
{
	struct sl_place_node twice[2] = {{"a", 1}, {"a", 1}};
	errno = 0;
	cr_assert_null(sl_placement_build(SL_PLACE_CONSISTENT, twice, 2, NULL));
	cr_assert_eq(errno, EINVAL);
	struct sl_place_node zero[1] = {{"a", 0}};
	cr_assert_null(sl_placement_build(SL_PLACE_RENDEZVOUS, zero, 1, NULL));
	cr_assert_null(sl_placement_build(SL_PLACE_JUMP, twice, 0, NULL));
	struct sl_placement *p = make(SL_PLACE_MODULO, 3, 0);
	cr_assert_eq(sl_placement_find(p, "n2"), 1);
	cr_assert_eq(sl_placement_find(p, "zz"), SL_PLACE_NONE);
	sl_placement_free(p);
}

/* One node with most of the ring (weight 255 against 1): every backup is
 * the other node, and building it alone, or with it, is quick (finding
 * each point's next other node is one pass round the ring). */
Test(placement, skewed_weights_backups_are_the_other_node, .timeout = 1)
{
	struct sl_place_node w[2] = {{"big", 255}, {"small", 1}};
	struct sl_placement *alone = sl_placement_build(SL_PLACE_CONSISTENT, w, 1, NULL);
	cr_assert_not_null(alone);
	unsigned b;
	cr_assert_eq(sl_placement_lookup(alone, key(1), &b), 0);
	sl_placement_free(alone);
	struct sl_placement *p = sl_placement_build(SL_PLACE_CONSISTENT, w, 2, NULL);
	cr_assert_not_null(p);
	unsigned small = 0;
	for (unsigned i = 0; i < 20000; i++) {
		unsigned pr = sl_placement_lookup(p, key(i), &b);
		cr_assert_neq(pr, b, "key %u: backup is its primary", i);
		cr_assert(b < 2);
		small += pr == 1;
	}
	/* ~1/256 of the keys on the small node */
	cr_assert(small > 20 && small < 200, "%u", small);
	sl_placement_free(p);
}
