/*
 * The per-core TX buffer: replies are queued as they are made and sent in
 * bursts, once per loop iteration or when the buffer fills. A port that
 * will not take them after a few tries has them freed and counted, so a
 * stuck port never holds a worker.
 */
#include <rte_cycles.h>

#include "sluiced.h"

void sl_tx_flush(struct sl_tx *tx)
{
	unsigned sent = 0;
	/* node-to-node traffic (forwarded requests, replication) is worth a
	 * short wait for the ring to drain: a lost datagram there costs a
	 * whole message (and a forwarded request's timeout); at most ~10 us,
	 * so that a slow peer cannot hold the worker */
	int most = tx->patient ? 24 : 16;
	for (int tries = 0; sent < tx->n && tries < most; tries++) {
		if (tries >= 16)
			rte_delay_us_block(1);
		sent +=
		    rte_eth_tx_burst(tx->port, tx->queue, tx->pk + sent, (uint16_t)(tx->n - sent));
	}
	tx->st->tx_packets += sent;
	if (sent < tx->n) {
		tx->st->drops[SL_DROP_tx_full] += tx->n - sent;
		rte_pktmbuf_free_bulk(tx->pk + sent, tx->n - sent);
	}
	tx->n = 0;
}

void sl_tx_push(struct sl_tx *tx, struct rte_mbuf *m)
{
	if (tx->n == RTE_DIM(tx->pk))
		sl_tx_flush(tx);
	tx->pk[tx->n++] = m;
}
