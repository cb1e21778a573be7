/*
 * The worker loop (run to completion, as DPDK's l2fwd): RX burst, handle
 * each packet, take conversations other cores handed over, flush TX, and
 * back off when idle so that an idle node costs almost no CPU.
 *
 * Everything a worker touches hangs off its struct sl_worker: its queues,
 * its store, its backlog, and read-only pointers to what the node shares
 * (the network set-up, the rings, the slot table). The slot table is
 * loaded once per iteration, after the quiescent report (see tables.c).
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_lcore.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "sluice/fault.h"
#include "sluice/portguard.h"
#include "sluiced.h"

/* Fill @p pk for @p m, a packet that worker @p w received (see struct
 * sl_peek; ih and pf are set later, by the prefetch steps). */
static void peek_key(const struct sl_worker *w, struct rte_mbuf *m, struct sl_peek *pk)
{
	const size_t hdr = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
	                   sizeof(struct rte_udp_hdr) + SL_FRAME_LEN;
	*pk = (struct sl_peek){0};
	if (m->nb_segs != 1 || m->data_len < hdr + 6)
		return;
	const struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(eth + 1);
	const struct rte_udp_hdr *udp = (const struct rte_udp_hdr *)(ip + 1);
	if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || ip->version_ihl != 0x45 ||
	    ip->next_proto_id != IPPROTO_UDP || udp->dst_port != rte_cpu_to_be_16(w->net->udp_port))
		return;
	/* a source nobody allowed costs no prefetch (sluice/udpguard.h) */
	pk->cls = (uint8_t)sl_udp_classify(&w->net->guard, ip->src_addr);
	if (pk->cls == SL_UDP_DENIED)
		return;
	const char *p = rte_pktmbuf_mtod_offset(m, const char *, hdr);
	/* the datagram's own length: a frame may carry Ethernet padding */
	size_t len = m->data_len - hdr, ulen = rte_be_to_cpu_16(udp->dgram_len);
	if (ulen >= sizeof(*udp) + SL_FRAME_LEN && ulen - sizeof(*udp) - SL_FRAME_LEN < len)
		len = ulen - sizeof(*udp) - SL_FRAME_LEN;
	pk->klen = (uint32_t)sl_peek_key(p, len, &pk->get1);
	if (pk->klen) {
		pk->hash = sl_key_hash(p + SL_PEEK_KEY_OFF, pk->klen);
		pk->mine = sl_slot_owner(w->ex.table, pk->hash) == w->idx && !w->ex.hold_on;
	}
}

/* How many packets ahead of the one being processed its items are
 * prefetched (see the worker loop). Measured with perf/compare's workloads:
 * 1 or all 32 at once gave ~2.4 Mops/s, 8 gave ~3.5-4.0 (6-16 were alike
 * within this machine's noise). Prefetching the buckets in steps as well,
 * instead of all at the start of the burst, made no difference (bucket
 * distances 8-24 with item distances 4-16: 3.38-3.61 Mops/s, all alike).
 * On a later host (~9 Mops/s) 8 is still best: items 12 or 16 ahead were
 * ~10% slower when the host runs slow, buckets prefetched 24 ahead inside
 * this loop instead of in the pre-pass 15% slower, RX bursts of 64 3-13%,
 * and no bucket prefetch at all (the item step reading the bucket as a
 * plain load) 40% slower, although a loop without the NIC ran faster so. */
#define ITEM_AHEAD 8
/* How many packets ahead an item down an overflow chain is prefetched: the
 * item prefetch brought the chained bucket in, and this reads it. Without
 * it ~11% of lookups (keys past a bucket's seven inline entries) waited a
 * whole DRAM miss; 2 to 5 were alike. */
#define CHAIN_AHEAD 4

uint32_t sl_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (uint32_t)ts.tv_sec;
}

void sl_msg_run(struct sl_worker *w, struct sl_msg *msg)
{
	unsigned to = 0;
	enum sl_exec_status st;
	while ((st = sl_exec_run(&w->ex, &msg->conv, w->now, &to)) == SL_EXEC_REMOTE) {
		/* another node's slot: forwarded there (fwd.c), the
		 * conversation parked until the answer; or answered here with
		 * an error, and it goes on */
		if (sl_fwd_send(w, msg, to))
			return;
	}
	if (st == SL_EXEC_FORWARD) {
		sl_handoff_pass(w, to, msg);
		return;
	}
	if (st == SL_EXEC_WAIT) {
		sl_repl_wait(w, msg); /* goes on from there */
		return;
	}
	msg->origin->reply(w, msg);
}

int sl_worker_main(void *arg)
{
	struct sl_worker *w = arg;
	const struct sl_net *net = w->net;
	struct rte_mbuf *pkts[SL_BURST];
	struct sl_msg *msgs[SL_BURST];
	unsigned nsrc = w->ho->nworkers + 1;
	uint64_t idle_since = 0, hz = rte_get_tsc_hz(), ms_tsc = hz / 1000 ? hz / 1000 : 1;
	uint64_t us_tsc = hz / 1000000 ? hz / 1000000 : 1;
	unsigned sleep_us = 1;

	sl_guard_enter(w->idx);
	while (!*w->quit) {
		/* between bursts: nothing of the port's is held here, nor any
		 * slot table; then the table for this iteration */
		sl_guard_quiescent(w->idx);
		w->ex.table = sl_tables_current(w->tables);
		w->ex.table_epoch = w->ex.table->epoch;
		uint64_t tsc = rte_rdtsc();
		w->tsc = tsc;
		w->now_us = tsc / us_tsc;
		if (w->repl->epoch != w->ex.table_epoch)
			sl_repl_retable(w);
		sl_repl_begin(w);
		unsigned work = 0;
		w->now = sl_now(); /* one clock read per iteration, not per request */
		w->now_ms = (uint32_t)(tsc / ms_tsc);
		uint16_t n = rte_eth_rx_burst(net->port, (uint16_t)w->idx, pkts, SL_BURST);
		/* Overlap the index and item misses of the burst: every
		 * bucket is prefetched first (one line each), then the items
		 * of packet i + ITEM_AHEAD while packet i is processed, so
		 * that each item has a few packets' time to arrive and the
		 * core's few miss buffers are not flooded by all of them at
		 * once; a key that may be down an overflow chain gets a third
		 * step, CHAIN_AHEAD. The hashes go with the requests (hashed
		 * once). */
		struct sl_peek pk[SL_BURST];
		for (uint16_t i = 0; i < n; i++) {
			peek_key(w, pkts[i], &pk[i]);
			if (pk[i].mine) {
				pk[i].ih = sl_store_index_hash(w->ex.store, pk[i].hash);
				sl_store_prefetch_bucket(w->ex.store, pk[i].ih);
			}
		}
		/* i < 0: the steps ahead of the first packets, nothing answered */
		for (int i = -ITEM_AHEAD; i < (int)n; i++) {
			int j = i + ITEM_AHEAD, k = i + CHAIN_AHEAD;
			if (j < n && pk[j].mine)
				pk[j].pf = (uint8_t)sl_store_prefetch_items(w->ex.store, pk[j].ih);
			if (k >= 0 && k < n && (pk[k].pf & SL_PF_CHAIN))
				sl_store_prefetch_chain(w->ex.store, pk[k].ih);
			if (i < 0)
				continue;
			if (i + 1 < n)
				rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void *));
			struct sl_msg *msg = sl_net_handle(w, pkts[i], tsc, &pk[i]);
			if (msg)
				sl_msg_run(w, msg);
		}
		work += n;
		if (net->cdev >= 0) {
			/* the link to the other nodes: cluster-port datagrams only */
			uint16_t k = rte_eth_rx_burst((uint16_t)net->cdev, (uint16_t)w->idx, pkts,
			                              SL_BURST);
			for (uint16_t i = 0; i < k; i++) {
				struct sl_msg *msg = sl_net_handle(w, pkts[i], tsc, NULL);
				if (msg)
					sl_msg_run(w, msg);
			}
			work += k;
		}
		for (unsigned src = 0; src < nsrc; src++) {
			if (src == w->idx)
				continue;
			unsigned k = rte_ring_sc_dequeue_burst(w->ho->ring[src][w->idx],
			                                       (void **)msgs, SL_BURST, NULL);
			for (unsigned i = 0; i < k; i++) {
				w->ex.st.handoffs_in++;
				if (msgs[i]->origin->arrive)
					msgs[i]->origin->arrive(w, msgs[i]);
				else
					sl_msg_run(w, msgs[i]);
			}
			work += k;
		}
		if (w->backlog.n)
			work += sl_backlog_retry(w);
		if (w->fwd->tail_id != w->fwd->next_id)
			work += sl_fwd_expire(w);
		if (SL_FAULTS_BUILT && w->fwd->held)
			work += sl_fwd_release_held(w, false);
		/* after the burst: its changes leave in batches now */
		work += sl_repl_tick(w);
		if (w->idx == 0 && net->wire_ring) {
			/* what the kernel behind the exception path sends */
			unsigned k = rte_ring_sc_dequeue_burst(net->wire_ring, (void **)pkts,
			                                       SL_BURST, NULL);
			for (unsigned i = 0; i < k; i++)
				sl_tx_push(&w->tx, pkts[i]);
			work += k;
		}
		if (w->tx.n)
			sl_tx_flush(&w->tx);
		if (w->ctx.n)
			sl_tx_flush(&w->ctx);
		rte_ip_frag_free_death_row(&w->dr, 3);
		/*
		 * Reclaim expired/flushed items in a bounded step per
		 * iteration: none while bursts come full (the core has no
		 * slack; eviction prefers dead items, and reads drop them, so
		 * memory is not lost meanwhile; measured: the busy step cost
		 * 2.7% of peak throughput), a small one while requests flow,
		 * a larger one when there is nothing else to do. Not much
		 * larger: a request arriving during a step waits for it. 256
		 * entries, each a likely DRAM miss, took ~60 us and set p99 at
		 * low load; 32 fetched a step ahead take ~1 us.
		 */
		work += sl_store_sweep(w->ex.store, w->now, !work ? 32 : n < SL_BURST ? 8 : 0);

		if (work) {
			idle_since = 0;
			sleep_us = 1;
			continue;
		}
		/*
		 * Back off by time, not by count: spin through short gaps (a
		 * sleep costs ~60 us of timer slack, and a queue that fills
		 * meanwhile costs more), nap briefly after 200 us of nothing,
		 * and sleep up to SL_MAX_IDLE_US only once idle for 10 ms.
		 * With --busy-poll (a core of its own) never sleep: a request
		 * after a lull is then answered without a wake-up's delay.
		 */
		if (!idle_since)
			idle_since = tsc;
		uint64_t idle_us = (tsc - idle_since) * 1000000 / hz;
		if (idle_us < 200 || w->busy_poll) {
			rte_pause();
			continue;
		}
		w->ex.st.idle_sleeps++;
		sl_guard_offline(w->idx);
		usleep(idle_us < 10000 ? 1 : sleep_us);
		sl_guard_online(w->idx);
		if (idle_us >= 10000 && sleep_us < SL_MAX_IDLE_US)
			sleep_us *= 2;
	}
	sl_tx_flush(&w->tx);
	sl_tx_flush(&w->ctx);
	sl_guard_leave(w->idx);
	for (unsigned i = 0; i < w->backlog.n; i++)
		sl_msg_put(w->ho, w->backlog.m[i]);
	w->backlog.n = 0;
	sl_fwd_fini(w);
	sl_repl_fini(w);
	return 0;
}
