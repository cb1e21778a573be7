/* Placement of keys and slots on nodes; see include/sluice/placement.h. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sluice/placement.h"

const char *const sl_place_names[SL_PLACE__COUNT] = {"consistent", "rendezvous", "jump", "modulo",
                                                     "bounded"};

/* Fixed seeds: every process places alike. */
#define RING_SEED UINT64_C(0x536c7569636552)    /* virtual node points */
#define NODE_SEED UINT64_C(0x536c7569636e4e)    /* rendezvous per-node seeds */
#define SLOT_SEED UINT64_C(0x536c756963534c)    /* slot points */
#define BACKUP_MIX UINT64_C(0x9e3779b97f4a7c15) /* jump: the backup's draw */

struct point {
	uint64_t h;
	uint32_t node;
};

struct sl_placement {
	enum sl_place_strategy s;
	unsigned n;
	struct sl_place_node *nodes; /* by name */
	double wsum;
	uint64_t *seed; /* rendezvous */
	struct point *ring;
	uint32_t *next_other; /* ring: index of the next point of another node */
	size_t npoints;
	double epsilon;
};

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct sl_place_node *)a)->name,
	              ((const struct sl_place_node *)b)->name);
}

static int by_point(const void *a, const void *b)
{
	const struct point *x = a, *y = b;
	if (x->h != y->h)
		return x->h < y->h ? -1 : 1;
	return x->node < y->node ? -1 : x->node > y->node;
}

static int build_ring(struct sl_placement *p, unsigned vnodes)
{
	size_t total = 0;
	for (unsigned j = 0; j < p->n; j++) {
		long c = lround(vnodes * p->nodes[j].weight);
		total += c < 1 ? 1 : (size_t)c;
	}
	p->ring = malloc(total * sizeof(*p->ring));
	p->next_other = malloc(total * sizeof(*p->next_other));
	if (!p->ring || !p->next_other)
		return -ENOMEM;
	size_t k = 0;
	for (unsigned j = 0; j < p->n; j++) {
		long c = lround(vnodes * p->nodes[j].weight);
		if (c < 1)
			c = 1;
		for (long i = 0; i < c; i++) {
			char buf[SL_PLACE_NAME_MAX + 24];
			int len = snprintf(buf, sizeof(buf), "%s#%ld", p->nodes[j].name, i);
			p->ring[k].h = XXH3_64bits_withSeed(buf, (size_t)len, RING_SEED);
			p->ring[k++].node = j;
		}
	}
	p->npoints = total;
	qsort(p->ring, total, sizeof(*p->ring), by_point);
	/* the next point clockwise that belongs to another node (itself when
	 * there is one node): a backup in one step. One pass backwards round
	 * the ring from a point whose successor is another node's: a point's
	 * answer is its successor, or its successor's answer when both are
	 * the same node's (scanning forwards from every point instead costs
	 * the square of the points when one node has most of them) */
	size_t b = total;
	for (size_t i = 0; i < total && b == total; i++)
		if (p->ring[(i + 1) % total].node != p->ring[i].node)
			b = i;
	if (b == total) {
		for (size_t i = 0; i < total; i++)
			p->next_other[i] = (uint32_t)i;
		return 0;
	}
	p->next_other[b] = (uint32_t)((b + 1) % total);
	for (size_t step = 1; step < total; step++) {
		size_t i = (b + total - step) % total, nx = (i + 1) % total;
		p->next_other[i] = p->ring[nx].node != p->ring[i].node ? (uint32_t)nx : p->next_other[nx];
	}
	return 0;
}

struct sl_placement *sl_placement_build(enum sl_place_strategy s, const struct sl_place_node *nodes,
                                        unsigned n, const struct sl_place_opts *o)
{
	if (n == 0 || n >= SL_PLACE_NONE || s >= SL_PLACE__COUNT) {
		errno = EINVAL;
		return NULL;
	}
	struct sl_placement *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->s = s;
	p->n = n;
	p->epsilon = o && o->epsilon > 0 ? o->epsilon : 0.25;
	p->nodes = malloc(n * sizeof(*nodes));
	p->seed = malloc(n * sizeof(*p->seed));
	if (!p->nodes || !p->seed)
		goto nomem;
	memcpy(p->nodes, nodes, n * sizeof(*nodes));
	qsort(p->nodes, n, sizeof(*nodes), by_name);
	for (unsigned j = 0; j < n; j++) {
		p->nodes[j].name[SL_PLACE_NAME_MAX] = 0;
		if (!(p->nodes[j].weight > 0) || !p->nodes[j].name[0] ||
		    (j && strcmp(p->nodes[j - 1].name, p->nodes[j].name) == 0)) {
			sl_placement_free(p);
			errno = EINVAL;
			return NULL;
		}
		p->wsum += p->nodes[j].weight;
		p->seed[j] =
		    XXH3_64bits_withSeed(p->nodes[j].name, strlen(p->nodes[j].name), NODE_SEED);
	}
	if ((s == SL_PLACE_CONSISTENT || s == SL_PLACE_BOUNDED) &&
	    build_ring(p, o && o->vnodes ? o->vnodes : 150) != 0)
		goto nomem;
	return p;
nomem:
	sl_placement_free(p);
	errno = ENOMEM;
	return NULL;
}

void sl_placement_free(struct sl_placement *p)
{
	if (!p)
		return;
	free(p->nodes);
	free(p->seed);
	free(p->ring);
	free(p->next_other);
	free(p);
}

unsigned sl_placement_count(const struct sl_placement *p)
{
	return p->n;
}

const char *sl_placement_name(const struct sl_placement *p, unsigned i)
{
	return i < p->n ? p->nodes[i].name : NULL;
}

unsigned sl_placement_find(const struct sl_placement *p, const char *name)
{
	struct sl_place_node key = {0};
	snprintf(key.name, sizeof(key.name), "%s", name);
	const struct sl_place_node *f = bsearch(&key, p->nodes, p->n, sizeof(key), by_name);
	return f ? (unsigned)(f - p->nodes) : SL_PLACE_NONE;
}

/* The first ring point at or clockwise of @p h (wrapping past 2^64). */
static size_t ring_at(const struct sl_placement *p, uint64_t h)
{
	size_t lo = 0, hi = p->npoints;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->ring[mid].h < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == p->npoints ? 0 : lo;
}

static double unit(uint64_t x)
{
	return ((double)(x >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
}

static unsigned rendezvous(const struct sl_placement *p, uint64_t h, unsigned *backup)
{
	double best = -INFINITY, second = -INFINITY;
	unsigned b = 0, s = SL_PLACE_NONE;
	for (unsigned j = 0; j < p->n; j++) {
		double score = -p->nodes[j].weight /
		               log(unit(XXH3_64bits_withSeed(&h, sizeof(h), p->seed[j])));
		if (score > best) {
			second = best;
			s = best == -INFINITY ? SL_PLACE_NONE : b;
			best = score;
			b = j;
		} else if (score > second) {
			second = score;
			s = j;
		}
	}
	*backup = s;
	return b;
}

static unsigned jump(uint64_t key, unsigned buckets)
{
	int64_t b = -1, j = 0;
	while (j < (int64_t)buckets) {
		b = j;
		key = key * UINT64_C(2862933555777941757) + 1;
		j = (int64_t)((double)(b + 1) *
		              ((double)(UINT64_C(1) << 31) / (double)((key >> 33) + 1)));
	}
	return (unsigned)b;
}

unsigned sl_placement_lookup(const struct sl_placement *p, uint64_t h, unsigned *backup)
{
	unsigned bk = SL_PLACE_NONE, pr = 0;
	switch (p->s) {
	case SL_PLACE_CONSISTENT:
	case SL_PLACE_BOUNDED: {
		size_t i = ring_at(p, h);
		pr = p->ring[i].node;
		size_t x = p->next_other[i];
		if (p->ring[x].node != pr)
			bk = p->ring[x].node;
		break;
	}
	case SL_PLACE_RENDEZVOUS:
		pr = rendezvous(p, h, &bk);
		break;
	case SL_PLACE_JUMP:
		pr = jump(h, p->n);
		if (p->n > 1) {
			bk = jump(h ^ BACKUP_MIX, p->n - 1);
			bk += bk >= pr;
		}
		break;
	default:
		pr = (unsigned)(h % p->n);
		if (p->n > 1)
			bk = (pr + 1) % p->n;
		break;
	}
	if (backup)
		*backup = bk;
	return pr;
}

int sl_placement_assign(const struct sl_placement *p, const uint64_t *hash, size_t m,
                        uint16_t *primary, uint16_t *backup)
{
	if (p->s != SL_PLACE_BOUNDED) {
		for (size_t i = 0; i < m; i++) {
			unsigned b;
			primary[i] = (uint16_t)sl_placement_lookup(p, hash[i], &b);
			if (backup)
				backup[i] = (uint16_t)b;
		}
		return 0;
	}
	size_t *load = calloc(p->n, sizeof(*load)), *cap = malloc(p->n * sizeof(*cap));
	if (!load || !cap) {
		free(load);
		free(cap);
		return -ENOMEM;
	}
	for (unsigned j = 0; j < p->n; j++)
		cap[j] = (size_t)ceil((1 + p->epsilon) * (double)m * p->nodes[j].weight / p->wsum);
	for (size_t i = 0; i < m; i++) {
		/* the caps add up to at least m, so a node with room exists */
		size_t at = ring_at(p, hash[i]);
		while (load[p->ring[at].node] >= cap[p->ring[at].node])
			at = (at + 1) % p->npoints;
		unsigned pr = p->ring[at].node;
		load[pr]++;
		primary[i] = (uint16_t)pr;
		if (backup) {
			size_t x = p->next_other[at];
			backup[i] =
			    p->ring[x].node != pr ? (uint16_t)p->ring[x].node : SL_PLACE_NONE;
		}
	}
	free(load);
	free(cap);
	return 0;
}

uint64_t sl_place_slot_hash(uint16_t slot)
{
	const uint8_t le[2] = {(uint8_t)slot, (uint8_t)(slot >> 8)}; /* the same on every host */
	return XXH3_64bits_withSeed(le, sizeof(le), SLOT_SEED);
}
