#include <criterion/criterion.h>
#include "sluice/sizeclass.h"

Test(sizeclass, same_table_as_default_memcached)
{
	/* from "memcached -vv" (1.6.18, default settings) */
	cr_assert_eq(sl_class_count(), 39);
	cr_assert_eq(sl_class_chunk(1), 96);
	cr_assert_eq(sl_class_chunk(2), 120);
	cr_assert_eq(sl_class_chunk(3), 152);
	cr_assert_eq(sl_class_chunk(30), 66232);
	cr_assert_eq(sl_class_chunk(31), 82792);
	cr_assert_eq(sl_class_chunk(38), 394840);
	cr_assert_eq(sl_class_chunk(39), 524288);
	cr_assert_eq(sl_class_perslab(1), 10922);
	cr_assert_eq(sl_class_of(1), 1);
	cr_assert_eq(sl_class_of(96), 1);
	cr_assert_eq(sl_class_of(97), 2);
	cr_assert_eq(sl_class_of(sl_mc_ntotal(3, 66560)), 31);
	cr_assert_eq(sl_class_of(2000000), 39);
}
