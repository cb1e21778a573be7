/*
 * Fault injection for test builds: make chosen operations fail on purpose,
 * so that the paths taken when memory, mbufs or ring room run out are run
 * by the test suites instead of only by bad luck in production.
 *
 * Built in only with `meson setup -Dfaults=true` (it defines SL_FAULTS);
 * in every other build sl_fault() is a constant false that the compiler
 * removes, so release builds carry no trace of it.
 *
 * What fails is chosen by the environment variable SLUICE_FAULTS, read
 * once when the process starts:
 *
 *   SLUICE_FAULTS="item_alloc=0.05,ring_enq=@100,buf_grow=*7"
 *
 *     POINT=F      each call fails with probability F (0 < F <= 1)
 *     POINT=@N     the Nth call fails, once
 *     POINT=*N     every Nth call fails
 *
 * Points (one per kind of operation that can fail):
 *
 *   msg_get       a message from the message pool (UDP and TCP requests)
 *   mbuf_alloc    an mbuf for a reply datagram
 *   item_alloc    jemalloc allocation of an item
 *   bucket_alloc  jemalloc allocation of an index segment or overflow bucket
 *   ring_enq      an enqueue onto a handoff ring between cores
 *   buf_grow      growth of a reply or connection buffer (sl_buf)
 *   cport_drop    a datagram to the cluster port is dropped on arrival
 *   cport_dup     ... is taken twice
 *   cport_delay   ... is held back and taken after the next one (or 5 ms
 *                 later): delayed and reordered
 *
 * Thread safety: sl_fault may be called from any thread; the call counts
 * are atomic and the random draws per thread (test builds only: the cost
 * does not matter there).
 */
#ifndef SLUICE_FAULT_H
#define SLUICE_FAULT_H

#include <stdbool.h>
#include <stdint.h>

#define SL_FAULT_POINTS(X)                                                                         \
	X(msg_get)                                                                                 \
	X(mbuf_alloc)                                                                              \
	X(item_alloc)                                                                              \
	X(bucket_alloc)                                                                            \
	X(ring_enq)                                                                                \
	X(buf_grow)                                                                                \
	X(cport_drop)                                                                              \
	X(cport_dup)                                                                               \
	X(cport_delay)

enum sl_fault_point {
#define X(n) SL_FAULT_##n,
	SL_FAULT_POINTS(X)
#undef X
	    SL_FAULT__COUNT
};

#ifdef SL_FAULTS
/** Should this call of operation @p p fail? */
bool sl_fault(enum sl_fault_point p);
/**
 * Replace the configuration with @p spec (SLUICE_FAULTS' syntax; NULL or ""
 * turns every point off) and zero the counts.
 * @return 0, or -EINVAL naming nothing changed when @p spec is malformed.
 */
int sl_fault_configure(const char *spec);
/** Failures injected at @p p since the last configuration. */
uint64_t sl_fault_injected(enum sl_fault_point p);
#define SL_FAULTS_BUILT 1
#else
static inline bool sl_fault(enum sl_fault_point p)
{
	(void)p;
	return false;
}
#define SL_FAULTS_BUILT 0
#endif

#endif
