/* Port guard: see include/sluice/portguard.h for why and how. */
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <rte_interrupts.h>
#include <rte_malloc.h>

#include "sluice/portguard.h"

struct rte_rcu_qsbr *sl_guard_qsv;

int sl_guard_init(unsigned nthreads)
{
	size_t sz = rte_rcu_qsbr_get_memsize(nthreads);
	struct rte_rcu_qsbr *v = rte_zmalloc("sl_guard", sz, RTE_CACHE_LINE_SIZE);
	if (!v) {
		errno = ENOMEM;
		return -1;
	}
	if (rte_rcu_qsbr_init(v, nthreads) != 0) {
		rte_free(v);
		errno = EINVAL;
		return -1;
	}
	__atomic_store_n(&sl_guard_qsv, v, __ATOMIC_RELEASE);
	return 0;
}

void sl_guard_enter(unsigned id)
{
	rte_rcu_qsbr_thread_register(sl_guard_qsv, id);
	rte_rcu_qsbr_thread_online(sl_guard_qsv, id);
}

void sl_guard_leave(unsigned id)
{
	rte_rcu_qsbr_thread_offline(sl_guard_qsv, id);
	rte_rcu_qsbr_thread_unregister(sl_guard_qsv, id);
}

/*
 * Preempts libc's munmap for the whole process, shared libraries included
 * (the executable is first in the dynamic linker's lookup order; the build
 * exports this symbol). Only the interrupt thread, where drivers tear
 * connections down, waits; it never runs datapath code, so it cannot wait
 * for itself.
 */
int munmap(void *addr, size_t len)
{
	struct rte_rcu_qsbr *v = __atomic_load_n(&sl_guard_qsv, __ATOMIC_ACQUIRE);
	if (v && rte_thread_is_intr())
		rte_rcu_qsbr_synchronize(v, RTE_QSBR_THRID_INVALID);
	return (int)syscall(SYS_munmap, addr, len);
}
