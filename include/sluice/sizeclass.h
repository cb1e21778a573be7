/*
 * memcached's size classes, for statistics only.
 *
 * Sluice allocates items with jemalloc, not from slabs, but operators and
 * tools (memcached-tool, dashboards, memcached's own tests) read "stats
 * slabs" and "stats items" per size class. We keep the same class table as
 * a default memcached 1.6 (96-byte first chunk, factor 1.25, 8-byte
 * alignment, 1 MiB pages, largest chunk 512 KiB) and account each item to
 * the class memcached would have put it in, by memcached's own item size:
 *
 *   ntotal = 48 (item header) + key + 1 + value + 2 (CRLF) + 8 (CAS)
 *
 *   class:  1    2    3    4   ...  30     31     ...  39
 *   chunk:  96   120  152  192 ...  66232  82792  ...  524288
 */
#ifndef SLUICE_SIZECLASS_H
#define SLUICE_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#define SL_CLASS_MAX 64u
#define SL_SLAB_PAGE (1024u * 1024u)

/** memcached's ITEM_ntotal for this key and value length (CAS on). */
static inline size_t sl_mc_ntotal(size_t klen, size_t vlen)
{
	return 48 + klen + 1 + vlen + 2 + 8;
}

/** Number of classes (the largest valid class id). */
unsigned sl_class_count(void);

/** Class of an item of memcached size @p ntotal (1..count). */
unsigned sl_class_of(size_t ntotal);

/** Chunk size and chunks per 1 MiB page of class @p c. */
size_t sl_class_chunk(unsigned c);
unsigned sl_class_perslab(unsigned c);

#endif
