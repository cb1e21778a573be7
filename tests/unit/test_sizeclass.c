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

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int go;

struct racer {
	unsigned delay; /* spins after the start, so the calls overlap in all ways */
	unsigned bad;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	while (!atomic_load(&go))
		;
	for (volatile unsigned i = 0; i < r->delay; i++)
		;
	/* the first calls of the process */
	for (size_t n = 1; n <= 2048; n += 7)
		r->bad += sl_class_of(n) == 0;
	return NULL;
}

/* Workers start together and their first requests ask for size classes at
 * about the same moment: every one of them must see the whole table. Each
 * round is a fresh process, so the table is asked for the first time in
 * it, and the second thread starts a little later each round, so that it
 * asks while the first may be half-way through building a table lazily. */
Test(sizeclass, first_use_from_two_threads_at_once)
{
	for (unsigned round = 0; round < 1000; round++) {
		pid_t pid = fork();
		cr_assert_neq(pid, -1);
		if (pid == 0) {
			pthread_t t[2];
			struct racer r[2] = {{0, 0}, {round * 7 % 3000, 0}};
			for (int i = 0; i < 2; i++)
				pthread_create(&t[i], NULL, race, &r[i]);
			usleep(1000);
			atomic_store(&go, 1);
			for (int i = 0; i < 2; i++)
				pthread_join(t[i], NULL);
			_exit(r[0].bad + r[1].bad ? 1 : 0);
		}
		int st;
		waitpid(pid, &st, 0);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		          "round %u: a thread saw size class 0", round);
	}
}
