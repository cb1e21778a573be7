/*
 * Port guard: nothing a datapath thread may be reading is unmapped under
 * its feet.
 *
 * Why: DPDK 22.11's memif driver tears a connection down from the EAL
 * interrupt thread (memif_disconnect, when the peer leaves or dies): it
 * clears its "connected" flag and then munmaps the rings and packet
 * buffers the peer shared, with nothing to wait for a thread that is in
 * the middle of rte_eth_rx_burst or rte_eth_tx_burst on them. A burst
 * that checked the flag a moment before then reads unmapped memory and
 * the process dies of SIGSEGV. Measured: sluice-bench's reflector, its
 * clients killed under load, died by the 2nd to 6th kill in each of four
 * tries (tests/e2e/test_peer_churn.py); with the guard it outlives them.
 *
 * How: read-copy-update with DPDK's QSBR (rte_rcu_qsbr). Each datapath
 * thread reports a quiescent state between bursts (it holds nothing of
 * the port's then: memif copies packets into our own mbufs) and goes
 * offline while it sleeps. This module defines munmap(); the dynamic
 * linker binds the memif driver's munmap calls to it (the executable
 * comes first in symbol lookup). Called from the interrupt thread, it
 * first waits for a grace period: every online datapath thread reports
 * once more, so every burst that began before the flag was cleared has
 * ended, and every later one sees the flag and returns at once. Then the
 * real munmap runs. Other threads' munmaps pass straight through.
 *
 *   interrupt thread               datapath thread
 *   ----------------               ---------------
 *   flags &= ~CONNECTED            rx_burst: flag set? read ring ...
 *   munmap(ring)                   ... done
 *     wait: all online threads --> quiescent()   (between bursts)
 *     report after this point      rx_burst: flag clear, return 0
 *     syscall munmap
 *
 * Cost on the hot path: one shared load and one store of the thread's own
 * counter per loop iteration, no atomic read-modify-write.
 */
#ifndef SLUICE_PORTGUARD_H
#define SLUICE_PORTGUARD_H

#include <rte_rcu_qsbr.h>

extern struct rte_rcu_qsbr *sl_guard_qsv;

/** Set up for up to @p nthreads datapath threads (ids 0..nthreads-1),
 * after rte_eal_init and before any of them starts; 0 or -1 (errno). */
int sl_guard_init(unsigned nthreads);

/** Datapath thread @p id starts using ports (registers and goes online). */
void sl_guard_enter(unsigned id);

/** Datapath thread @p id stops using ports for good (before it exits, and
 * before the ports are stopped: the interrupt thread would otherwise wait
 * for it). */
void sl_guard_leave(unsigned id);

/** Between bursts: thread @p id holds no pointer into a port's memory. */
static inline void sl_guard_quiescent(unsigned id)
{
	rte_rcu_qsbr_quiescent(sl_guard_qsv, id);
}

/** Around a sleep: an offline thread is not waited for. */
static inline void sl_guard_offline(unsigned id)
{
	rte_rcu_qsbr_thread_offline(sl_guard_qsv, id);
}

static inline void sl_guard_online(unsigned id)
{
	rte_rcu_qsbr_thread_online(sl_guard_qsv, id);
}

#endif
