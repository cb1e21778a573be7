/*
 * Big-endian integers in byte buffers, for the cluster's wire formats
 * (sluice/cmsg.h, sluice/cport.h): byte by byte, so a field may sit at any
 * offset and the code reads the same on any host.
 */
#ifndef SLUICE_BE_H
#define SLUICE_BE_H

#include <stdint.h>

static inline void sl_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void sl_put32(uint8_t *p, uint32_t v)
{
	sl_put16(p, (uint16_t)(v >> 16));
	sl_put16(p + 2, (uint16_t)v);
}

static inline void sl_put64(uint8_t *p, uint64_t v)
{
	sl_put32(p, (uint32_t)(v >> 32));
	sl_put32(p + 4, (uint32_t)v);
}

static inline uint16_t sl_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t sl_get32(const uint8_t *p)
{
	return (uint32_t)sl_get16(p) << 16 | sl_get16(p + 2);
}

static inline uint64_t sl_get64(const uint8_t *p)
{
	return (uint64_t)sl_get32(p) << 32 | sl_get32(p + 4);
}

#endif
