/*
 * Copying and comparing the short byte strings of the GET path (a key, a
 * value of tens of bytes) without a call and without `rep movs`.
 *
 * A key's length is known only at run time and is at most 250, so gcc
 * turns memcpy(dst, key, klen) into `rep movsq` with a few moves around
 * it, and a `rep movs` takes tens of cycles to start on x86 CPUs whatever
 * the length; a value's copy and a key's compare went to libc through the
 * PLT. With these instead, the worker's store loop (no NIC) takes 4.5 ns
 * less a GET over 1M keys and 5.5 ns less over 1,000 hot ones. Here a
 * string is moved in 16-byte loads and stores, the last one ending exactly
 * at its end (it may overlap the one before), and a string under 16 bytes
 * in two overlapping 8-, 4- or 1-byte moves:
 *
 *   n = 40:  [0 ......... 16) [16 ........ 32)
 *                               [24 ........ 40)    last, overlapping
 *   n = 11:  [0 .... 8)
 *               [3 .... 11)                          two of 8, overlapping
 *   n = 3:   bytes 0, n/2 and n-1
 *
 * Nothing before or after the n bytes is read or written, so an exactly
 * sized allocation is safe (AddressSanitizer builds check it). Longer
 * strings, where the per-call overhead no longer matters, go to libc, as
 * does everything on a target without SSE2.
 */
#ifndef SLUICE_BYTES_H
#define SLUICE_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Longer than this goes to libc's memcpy/memcmp. */
#define SL_BYTES_INLINE_MAX 256

#ifndef __SSE2__
static inline void sl_copy(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
}

static inline bool sl_same(const void *a, const void *b, size_t n)
{
	return memcmp(a, b, n) == 0;
}
#else
#include <emmintrin.h>

static inline __m128i sl_load16(const char *p)
{
	return _mm_loadu_si128((const __m128i *)(const void *)p);
}

static inline uint64_t sl_load8(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint32_t sl_load4(const char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* memcpy(dst, src, n) for buffers that do not overlap. */
static inline void sl_copy(void *dst, const void *src, size_t n)
{
	char *d = dst;
	const char *s = src;
	if (n >= 16) {
		if (n > SL_BYTES_INLINE_MAX) {
			memcpy(d, s, n);
			return;
		}
		for (size_t i = 0; i + 16 < n; i += 16)
			_mm_storeu_si128((__m128i *)(void *)(d + i), sl_load16(s + i));
		_mm_storeu_si128((__m128i *)(void *)(d + n - 16), sl_load16(s + n - 16));
	} else if (n >= 8) {
		uint64_t a = sl_load8(s), b = sl_load8(s + n - 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 4) {
		uint32_t a = sl_load4(s), b = sl_load4(s + n - 4);
		memcpy(d, &a, 4);
		memcpy(d + n - 4, &b, 4);
	} else if (n) {
		char a = s[0], b = s[n / 2], c = s[n - 1];
		d[0] = a;
		d[n / 2] = b;
		d[n - 1] = c;
	}
}

/* memcmp(a, b, n) == 0 */
static inline bool sl_same(const void *a, const void *b, size_t n)
{
	const char *x = a, *y = b;
	if (n >= 16) {
		if (n > SL_BYTES_INLINE_MAX)
			return memcmp(x, y, n) == 0;
		for (size_t i = 0; i + 16 < n; i += 16)
			if (_mm_movemask_epi8(_mm_cmpeq_epi8(sl_load16(x + i), sl_load16(y + i))) !=
			    0xffff)
				return false;
		return _mm_movemask_epi8(
		           _mm_cmpeq_epi8(sl_load16(x + n - 16), sl_load16(y + n - 16))) == 0xffff;
	}
	if (n >= 8)
		return sl_load8(x) == sl_load8(y) && sl_load8(x + n - 8) == sl_load8(y + n - 8);
	if (n >= 4)
		return sl_load4(x) == sl_load4(y) && sl_load4(x + n - 4) == sl_load4(y + n - 4);
	return !n || (x[0] == y[0] && x[n / 2] == y[n / 2] && x[n - 1] == y[n - 1]);
}
#endif /* __SSE2__ */

#endif
