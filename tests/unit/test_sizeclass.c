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
#include <sys/wait.h>
#include <unistd.h>

#define RACERS 8
static pthread_barrier_t go;

static void *race(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&go);
	/* the first calls of the process, all at once */
	unsigned bad = 0;
	for (size_t n = 1; n <= 2048; n += 7)
		bad += sl_class_of(n) == 0;
	return (void *)(uintptr_t)bad;
}

/* Workers start together and their first requests ask for size classes at
 * the same moment: every one of them must see the whole table. Each round
 * is a fresh process, so the table is asked for the first time in it. */
Test(sizeclass, first_use_from_many_threads_at_once)
{
	for (int round = 0; round < 40; round++) {
		pid_t pid = fork();
		cr_assert_neq(pid, -1);
		if (pid == 0) {
			pthread_t t[RACERS];
			pthread_barrier_init(&go, NULL, RACERS);
			for (int i = 0; i < RACERS; i++)
				pthread_create(&t[i], NULL, race, NULL);
			uintptr_t bad = 0;
			for (int i = 0; i < RACERS; i++) {
				void *r;
				pthread_join(t[i], &r);
				bad += (uintptr_t)r;
			}
			_exit(bad ? 1 : 0);
		}
		int st;
		waitpid(pid, &st, 0);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		          "round %d: a thread saw size class 0", round);
	}
}
