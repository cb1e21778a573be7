/*
 * xorshift64 (Marsaglia): the perf tools' random numbers. Fast, and the
 * same seed gives the same trace, so runs can be compared.
 */
#ifndef SLUICE_PERF_RNG_H
#define SLUICE_PERF_RNG_H

#include <stdint.h>

static inline uint64_t perf_xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

#endif
