/*
 * The slot table a node routes by, published by the main lcore and read by
 * the workers without locks (read-copy-update).
 *
 * Publishing swaps one pointer. Each worker loads it once per loop
 * iteration, right after reporting a quiescent state to the port guard's
 * QSBR variable (sluice/portguard.h), and uses that table for the whole
 * iteration; a worker asleep is offline and holds none. So a table that
 * has been replaced can be freed once every worker has reported after the
 * swap: the main lcore takes a QSBR token at the swap and frees the old
 * table when the token is done, checked without blocking on each turn of
 * its loop. A worker never waits for a publication and a publication never
 * waits for a worker: installing a table costs a worker nothing but the
 * cache misses of reading the new one.
 *
 *   main:    cur = new; token = start()  ...  check(token)? free(old)
 *   worker:  quiescent(); t = cur; ... burst under t ...; quiescent(); t = cur
 */
#include <errno.h>

#include <rte_malloc.h>

#include "sluice/portguard.h"
#include "sluiced.h"

struct sl_table *sl_table_alloc(void)
{
	return rte_zmalloc("sl_table", sizeof(struct sl_table), RTE_CACHE_LINE_SIZE);
}

void sl_table_free(struct sl_table *t)
{
	rte_free(t);
}

int sl_tables_publish(struct sl_tables *ts, struct sl_table *t)
{
	const struct sl_table *old = ts->cur;
	if (old && t->epoch <= old->epoch)
		return -ESTALE;
	if (sl_table_seal(t) != 0)
		return -EINVAL;
	sl_tables_reclaim(ts);
	if (old && ts->nretired == SL_TABLES_RETIRED)
		return -EBUSY;
	__atomic_store_n(&ts->cur, t, __ATOMIC_RELEASE);
	ts->published++;
	if (old) {
		ts->retired[ts->nretired].t = (struct sl_table *)old;
		ts->retired[ts->nretired++].token = rte_rcu_qsbr_start(sl_guard_qsv);
	}
	return 0;
}

void sl_tables_reclaim(struct sl_tables *ts)
{
	unsigned keep = 0;
	for (unsigned i = 0; i < ts->nretired; i++) {
		/* tokens are taken in order: once one is not done, none after
		 * it is, but checking them all costs nothing worth saving */
		if (rte_rcu_qsbr_check(sl_guard_qsv, ts->retired[i].token, false) == 1)
			sl_table_free(ts->retired[i].t);
		else
			ts->retired[keep++] = ts->retired[i];
	}
	ts->nretired = keep;
}

void sl_tables_fini(struct sl_tables *ts)
{
	for (unsigned i = 0; i < ts->nretired; i++)
		sl_table_free(ts->retired[i].t);
	ts->nretired = 0;
	sl_table_free((struct sl_table *)ts->cur);
	ts->cur = NULL;
}
