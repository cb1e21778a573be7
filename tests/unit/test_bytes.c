#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "sluice/bytes.h"

/* Every length a key or a short value can have and then some, from
 * exactly sized heap blocks (an AddressSanitizer build sees any byte read
 * past them), at each alignment of 16: the copy is the bytes, and not one
 * byte before or after the destination is written. */
Test(bytes, copy_is_exact_at_every_length_and_alignment)
{
	for (size_t n = 0; n <= SL_BYTES_INLINE_MAX + 40; n++) {
		for (size_t al = 0; al < 16; al++) {
			char *src = malloc(n ? n : 1);
			char *dst = malloc(n + 64);
			cr_assert(src && dst);
			for (size_t i = 0; i < n; i++)
				src[i] = (char)(i * 7 + n + 1);
			memset(dst, 0xa5, n + 64);
			sl_copy(dst + 16 + al, src, n);
			cr_assert(memcmp(dst + 16 + al, src, n) == 0, "n=%zu al=%zu", n, al);
			for (size_t i = 0; i < 16 + al; i++)
				cr_assert_eq((unsigned char)dst[i], 0xa5, "before, n=%zu", n);
			for (size_t i = 16 + al + n; i < n + 64; i++)
				cr_assert_eq((unsigned char)dst[i], 0xa5, "after, n=%zu", n);
			free(src);
			free(dst);
		}
	}
}

/* Equal strings compare equal, and a difference in any one byte, at any
 * length, is seen, whatever the byte's place in the 16-, 8-, 4- or 1-byte
 * steps. */
Test(bytes, same_sees_a_difference_in_any_byte)
{
	for (size_t n = 0; n <= SL_BYTES_INLINE_MAX + 40; n++) {
		char *a = malloc(n ? n : 1), *b = malloc(n ? n : 1);
		cr_assert(a && b);
		for (size_t i = 0; i < n; i++)
			a[i] = b[i] = (char)(i * 13 + 5);
		cr_assert(sl_same(a, b, n), "n=%zu", n);
		for (size_t i = 0; i < n; i++) {
			b[i] ^= (char)(1 << (i % 8));
			cr_assert(!sl_same(a, b, n), "n=%zu differs at %zu", n, i);
			cr_assert(!sl_same(b, a, n), "n=%zu differs at %zu", n, i);
			b[i] = a[i];
		}
		free(a);
		free(b);
	}
}

/* Keys that share a prefix or a suffix, as generated key names do
 * ("key:000000000123" against "key:000000000124"). */
Test(bytes, same_tells_keys_with_a_common_prefix_apart)
{
	char a[251], b[251];
	for (size_t n = 1; n <= 250; n++) {
		memset(a, 'k', n);
		memcpy(b, a, n);
		b[n - 1] = 'j';
		cr_assert(!sl_same(a, b, n), "last byte, n=%zu", n);
		b[n - 1] = 'k';
		b[0] = 'j';
		cr_assert(!sl_same(a, b, n), "first byte, n=%zu", n);
	}
}
