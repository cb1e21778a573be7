/*
 * Messages and their journeys between cores: the message pool, the rings
 * between every pair of cores, and each worker's backlog of lossless
 * messages that found a ring full (see sluiced.h for why the backlog can
 * never overflow).
 *
 *   origin (net.c: UDP, tcp.c: TCP)
 *      | sl_msg_get                       sl_handoff_pass
 *      v                                  ring full? lossless -> backlog
 *   worker: sl_msg_run --FORWARD(k)--> ring[w][k] --> worker k ...
 *      | DONE
 *      v
 *   origin->reply (UDP: datagrams out, sl_msg_put; TCP: ring to main)
 */
#include <stdio.h>
#include <string.h>

#include "sluice/fault.h"
#include "sluiced.h"

#define MSG_POOL 8191

static void msg_init(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
	(void)mp;
	(void)arg;
	(void)idx;
	memset(obj, 0, sizeof(struct sl_msg));
}

int sl_handoff_init(struct sl_handoff *h, unsigned nworkers)
{
	memset(h, 0, sizeof(*h));
	h->nworkers = nworkers;
	h->msgpool = rte_mempool_create("sl_msg", MSG_POOL, sizeof(struct sl_msg), 128, 0, NULL,
	                                NULL, msg_init, NULL, (int)rte_socket_id(), 0);
	if (!h->msgpool)
		return -rte_errno;
	for (unsigned f = 0; f <= nworkers; f++)
		for (unsigned t = 0; t <= nworkers; t++) {
			if (f == t)
				continue;
			char name[32];
			snprintf(name, sizeof(name), "sl_r%u_%u", f, t);
			h->ring[f][t] = rte_ring_create(name, SL_RING_SIZE, (int)rte_socket_id(),
			                                RING_F_SP_ENQ | RING_F_SC_DEQ);
			if (!h->ring[f][t])
				return -rte_errno;
		}
	return 0;
}

struct sl_msg *sl_msg_get(struct sl_handoff *h)
{
	struct sl_msg *msg;
	if (sl_fault(SL_FAULT_msg_get) || rte_mempool_get(h->msgpool, (void **)&msg) != 0)
		return NULL;
	return msg;
}

void sl_msg_put(struct sl_handoff *h, struct sl_msg *msg)
{
	if (msg->m) {
		rte_pktmbuf_free(msg->m);
		msg->m = NULL;
	}
	/* do not let one huge reply pin memory in the pool forever */
	if (msg->conv.out.cap > (1u << 20))
		sl_buf_release(&msg->conv.out);
	rte_mempool_put(h->msgpool, msg);
}

bool sl_handoff_send(struct sl_handoff *h, unsigned from, unsigned to, struct sl_msg *msg)
{
	if (sl_fault(SL_FAULT_ring_enq))
		return false;
	return rte_ring_sp_enqueue(h->ring[from][to], msg) == 0;
}

void sl_handoff_pass(struct sl_worker *w, unsigned to, struct sl_msg *msg)
{
	struct sl_backlog *b = &w->backlog;
	if (!b->n && sl_handoff_send(w->ho, w->idx, to, msg)) {
		w->ex.st.handoffs_out++;
		return;
	}
	/* behind a non-empty backlog a lossless message waits its turn, so
	 * one core's messages to another keep their order */
	if (msg->origin->lossless && b->n < RTE_DIM(b->m)) {
		b->m[b->n] = msg;
		b->to[b->n++] = (uint16_t)to;
		w->ex.st.backlog_waits++;
		return;
	}
	if (b->n && !msg->origin->lossless && sl_handoff_send(w->ho, w->idx, to, msg)) {
		w->ex.st.handoffs_out++;
		return;
	}
	/* a UDP request, or (impossible by the admission bound) a lossless
	 * message with the backlog full */
	w->ex.st.drops[SL_DROP_handoff_full]++;
	sl_msg_put(w->ho, msg);
}

unsigned sl_backlog_retry(struct sl_worker *w)
{
	struct sl_backlog *b = &w->backlog;
	unsigned keep = 0, n = b->n;
	for (unsigned i = 0; i < n; i++) {
		if (sl_handoff_send(w->ho, w->idx, b->to[i], b->m[i])) {
			w->ex.st.handoffs_out++;
			continue;
		}
		b->m[keep] = b->m[i];
		b->to[keep++] = b->to[i];
	}
	b->n = keep;
	return n - keep;
}

static void msg_free_buffers(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
	(void)mp;
	(void)arg;
	(void)idx;
	struct sl_msg *m = obj;
	sl_buf_release(&m->conv.out);
	free(m->heap_in);
	m->heap_in = NULL;
	m->heap_cap = 0;
}

void sl_handoff_fini(struct sl_handoff *h)
{
	void *objs[SL_BURST];
	unsigned n;
	for (unsigned f = 0; f <= h->nworkers; f++)
		for (unsigned t = 0; t <= h->nworkers; t++) {
			if (!h->ring[f][t])
				continue;
			while ((n = rte_ring_dequeue_burst(h->ring[f][t], objs, SL_BURST, NULL)))
				for (unsigned i = 0; i < n; i++)
					sl_msg_put(h, objs[i]);
		}
	if (h->msgpool)
		rte_mempool_obj_iter(h->msgpool, msg_free_buffers, NULL);
}
