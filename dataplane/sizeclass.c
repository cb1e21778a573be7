#include "sluice/sizeclass.h"

static size_t chunk[SL_CLASS_MAX + 1];
static unsigned nclass;
/* class of every size up to FAST_MAX in 8-byte steps: one load, no search */
#define FAST_MAX 16384
static uint8_t fast[FAST_MAX / 8 + 1];

/* Build the table the way a default memcached does at start-up. It is
 * built when the program is loaded, before main() and so before any worker
 * thread exists: built lazily by whichever thread asked first, another
 * thread could see the count already set and read a table not yet filled
 * (class 0 for every size). */
__attribute__((constructor)) static void build(void)
{
	const double factor = 1.25;
	const size_t chunk_max = SL_SLAB_PAGE / 2;
	double size = 96;
	unsigned i = 1;
	while (i < SL_CLASS_MAX && size <= chunk_max / factor) {
		size_t s = (size_t)size;
		if (s % 8)
			s += 8 - s % 8;
		chunk[i++] = s;
		size = (double)s * factor;
	}
	chunk[i] = chunk_max;
	nclass = i;
	unsigned c = 1;
	for (size_t q = 0; q <= FAST_MAX / 8; q++) {
		while (chunk[c] < q * 8)
			c++;
		fast[q] = (uint8_t)c;
	}
}

unsigned sl_class_count(void)
{
	return nclass;
}

unsigned sl_class_of(size_t ntotal)
{
	unsigned n = nclass;
	if (ntotal <= FAST_MAX)
		return fast[(ntotal + 7) / 8];
	unsigned lo = 1, hi = n;
	if (ntotal >= chunk[n])
		return n; /* memcached chains larger items; count them here */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (chunk[mid] >= ntotal)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

size_t sl_class_chunk(unsigned c)
{
	return c >= 1 && c <= nclass ? chunk[c] : 0;
}

unsigned sl_class_perslab(unsigned c)
{
	size_t s = sl_class_chunk(c);
	return s ? (unsigned)(SL_SLAB_PAGE / s) : 0;
}
