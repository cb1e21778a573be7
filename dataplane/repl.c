/*
 * Replication: every change of a primary slot, as the store reports it
 * (its observer), becomes a record in the stream to the backup core that
 * keeps the slot's copy; the client has its answer already (asynchronous
 * replication). The records leave in batches at the end of every loop
 * iteration, so a change waits at most one burst; the backup applies them
 * in sequence order and acknowledges; what is not acknowledged within
 * RTO_US is sent again from the first record missing (go-back-N), and a
 * NACK (the backup saw a gap) brings that on at once.
 *
 * A stream starts, and starts again, with a RESET and a snapshot of the
 * slots it carries: when it is new, when its backup gained slots (a new
 * table), when its log overflowed (the backup fell too far behind), or when
 * the backup does not know its generation (it restarted). The snapshot is a
 * walk over the store in steps of SNAP_STEP index entries, one step per
 * loop iteration, taken only while the stream's log is less than a quarter
 * full and within --resync-rate: so it never holds the core for more than
 * one step (~64 entries and their records, a few microseconds) and never
 * crowds out the live records.
 *
 * A backup that applies a RESET or a FLUSH drops every item of that
 * primary core's slots first, in steps of the same size, taking nothing
 * more of the stream meanwhile; a NACK afterwards brings the rest.
 *
 * Fencing: a stream whose oldest record not yet acknowledged is older than
 * --repl-max-lag-ms refuses writes for its slots (a primary cut off from
 * its backup loses at most that much), and a node whose lease from the
 * controller ran out refuses writes for every slot that has a backup (the
 * controller promotes the backup only after the lease has run out).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "sluice/repl.h"
#include "sluiced.h"

#define SNAP_STEP 64
#define DROP_STEP 256
#define RTO_US 20000          /* no ack for this long: send again */
#define NACK_GAP_US 2000      /* a NACK at most this often per stream */
#define WINDOW (256u << 10)   /* bytes sent and not yet acknowledged */
#define BATCH_MAX (SL_CPORT_CHUNK - SL_REPL_BATCH_HDR)
#define LOG_PFX 8             /* | len u32 | appended at u32 | */
/* datagrams all streams of a core send per loop iteration (~90 KB) */
#define TICK_DATAGRAMS 64
/* longest wait for a stream to drain, or for a HANDOVER, at a table change */
#define DRAIN_US 1000000
/* a newer epoch seen this long without ours following: our table is stale */
#define STALE_MS 100

static uint64_t fresh_gen(uint64_t prev)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t g = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	return g > prev ? g : prev + 1;
}

/* ---- the log ring ---------------------------------------------------------- */

static void ring_put(struct sl_rout *o, uint64_t off, const void *p, size_t n)
{
	if (!n)
		return; /* a record without key or value: p may be NULL */
	size_t at = (size_t)(off % o->cap), first = o->cap - at < n ? o->cap - at : n;
	memcpy(o->log + at, p, first);
	if (n > first)
		memcpy(o->log, (const uint8_t *)p + first, n - first);
}

static void ring_get(const struct sl_rout *o, uint64_t off, void *p, size_t n)
{
	if (!n)
		return;
	size_t at = (size_t)(off % o->cap), first = o->cap - at < n ? o->cap - at : n;
	memcpy(p, o->log + at, first);
	if (n > first)
		memcpy((uint8_t *)p + first, o->log, n - first);
}

static uint32_t ring_u32(const struct sl_rout *o, uint64_t off)
{
	uint32_t v;
	ring_get(o, off, &v, 4);
	return v;
}

/* ---- primary side ---------------------------------------------------------- */

static void out_start(struct sl_worker *w, struct sl_rout *o);

/* Append @p r to @p o's log; a log that cannot take it means the backup
 * fell too far behind: the stream starts again (snapshot and all). */
static void out_append(struct sl_worker *w, struct sl_rout *o, const struct sl_rec *r)
{
	size_t n = sl_rec_size(r->klen, r->vlen);
	if (o->head - o->tail + LOG_PFX + n > o->cap) {
		o->overflows++;
		out_start(w, o);
		return; /* the snapshot carries this change too */
	}
	uint8_t pfx[LOG_PFX + SL_REPL_REC_HDR];
	uint32_t len = (uint32_t)n, t = (uint32_t)w->now_us;
	memcpy(pfx, &len, 4);
	memcpy(pfx + 4, &t, 4);
	sl_rec_put_hdr(pfx + LOG_PFX, r);
	ring_put(o, o->head, pfx, sizeof(pfx));
	ring_put(o, o->head + sizeof(pfx), r->key, r->klen);
	ring_put(o, o->head + sizeof(pfx) + r->klen, r->value, r->vlen);
	o->head += LOG_PFX + n;
	o->next_seq++;
	o->records++;
	o->bytes += n;
}

static void wait_release(struct sl_worker *w, struct sl_rout *o, const char *fail);

static void out_start(struct sl_worker *w, struct sl_rout *o)
{
	/* a new numbering: what waited is answered now, as not acknowledged */
	wait_release(w, o, "SERVER_ERROR backup resyncing, write not acknowledged");
	free(o->part);
	o->part = NULL;
	o->gen = fresh_gen(o->gen);
	o->next_seq = 1;
	o->acked = 0;
	o->sent_seq = 1;
	o->head = o->tail = o->sent = 0;
	o->progress_us = w->now_us;
	o->state = SL_ROUT_RESYNCING;
	o->snap = true;
	o->cur = (struct sl_store_cursor){0};
	o->snap_items = o->snap_bytes = 0;
	o->snap_epoch = w->ex.table->epoch;
	o->resyncs++;
	struct sl_rec r = {.kind = SL_REC_RESET, .cas = o->snap_epoch};
	out_append(w, o, &r);
}

static void item_rec(const struct sl_item *it, struct sl_rec *r)
{
	*r = (struct sl_rec){.kind = SL_REC_SET,
	                     .klen = it->klen,
	                     .bits = (uint8_t)(it->bits & (SL_IT_STALE | SL_IT_TOKEN | SL_IT_BINKEY)),
	                     .flags = it->flags,
	                     .exptime = it->exptime,
	                     .cas = it->cas,
	                     .vlen = it->vlen,
	                     .key = it->data,
	                     .value = it->data + it->klen};
}

/* The store's observer on this core: a change of a primary slot of ours
 * goes to the stream of its backup. */
static void observe(void *ctx, const struct sl_change *c)
{
	struct sl_worker *w = ctx;
	struct sl_repl *rp = w->repl;
	struct sl_rec r;
	if (c->kind == SL_CHANGE_FLUSH) {
		r = (struct sl_rec){.kind = SL_REC_FLUSH};
		for (unsigned i = 0; i < SL_REPL_STREAMS; i++)
			if (rp->out[i].used)
				out_append(w, &rp->out[i], &r);
		return;
	}
	if (c->kind == SL_CHANGE_EXPIRE)
		return; /* the backup holds the same expiry time */
	unsigned i = rp->slot_out[sl_slot_of(c->hash)];
	if (i == SL_REPL_NONE)
		return;
	struct sl_rout *o = &rp->out[i];
	switch (c->kind) {
	case SL_CHANGE_SET:
		item_rec(c->item, &r);
		break;
	case SL_CHANGE_TTL:
		r = (struct sl_rec){.kind = SL_REC_TTL,
		                    .klen = c->item->klen,
		                    .exptime = c->item->exptime,
		                    .key = c->item->data};
		break;
	default: /* DELETE, EVICT */
		r = (struct sl_rec){.kind = SL_REC_DEL, .klen = c->item->klen, .key = c->item->data};
		break;
	}
	out_append(w, o, &r);
}

/* One snapshot step: the items of the stream's slots among the next
 * SNAP_STEP index entries become SET records. */
struct snap_ctx {
	struct sl_worker *w;
	struct sl_rout *o;
	unsigned idx;
};

static bool snap_item(void *ctx, struct sl_item *it)
{
	struct snap_ctx *s = ctx;
	uint64_t h = sl_key_hash(it->data, it->klen);
	if (s->w->repl->slot_out[sl_slot_of(h)] != s->idx || !sl_store_alive(s->w->ex.store, it, s->w->now))
		return false;
	struct sl_rec r;
	item_rec(it, &r);
	out_append(s->w, s->o, &r);
	s->o->snap_items++;
	s->o->snap_bytes += sl_rec_size(r.klen, r.vlen);
	return false;
}

static unsigned snap_step(struct sl_worker *w, struct sl_rout *o, unsigned idx)
{
	const struct sl_repl_conf *cf = &w->net->repl;
	if (o->head - o->tail > o->cap / 4 || o->sent - o->tail > WINDOW)
		return 0;
	if (cf->resync_bps) {
		/* the ceiling: a budget of bytes that grows with time */
		if (o->snap_budget > cf->resync_bps / 10)
			o->snap_budget = cf->resync_bps / 10;
		if (o->snap_budget == 0)
			return 0;
	}
	uint64_t before = o->snap_bytes, gen = o->gen;
	struct snap_ctx s = {.w = w, .o = o, .idx = idx};
	bool more = sl_store_walk(w->ex.store, &o->cur, SNAP_STEP, snap_item, &s);
	if (o->gen != gen)
		return 1; /* the log overflowed: the stream started again */
	uint64_t spent = o->snap_bytes - before;
	o->snap_budget = o->snap_budget > spent ? o->snap_budget - spent : 0;
	if (!more) {
		o->snap = false;
		o->snap_end_seq = o->next_seq;
		struct sl_rec r = {.kind = SL_REC_SNAP_END, .cas = o->snap_epoch};
		out_append(w, o, &r);
	}
	return 1;
}

static void part_drop(struct sl_rout *o)
{
	free(o->part);
	o->part = NULL;
}

/* Send batches from o->sent while the window allows, at most *budget
 * datagrams: a big record's batch goes out over several ticks, so that
 * a burst of replication does not overrun the queues between the nodes
 * (which carry forwarded requests too). */
static unsigned out_send(struct sl_worker *w, struct sl_rout *o, unsigned *budget)
{
	const struct sl_peer *p = sl_table_peer(w->ex.table, o->node);
	unsigned n = 0;
	if (!p)
		return 0;
	struct sl_cport_hdr h = {.type = SL_CPORT_REPL,
	                         .node = w->ex.table->self,
	                         .worker = o->core,
	                         .epoch = w->ex.table->epoch,
	                         .id = o->sent_seq};
	if (o->part) {
		uint32_t left = sl_cport_chunks(o->part_len) - o->part_done;
		uint32_t k = left < *budget ? left : *budget;
		if (!k || !sl_fwd_send_part(w, &h, p->mac, p->ip, p->cport, o->part, o->part_len,
		                            o->part_done, k))
			return 0;
		*budget -= k;
		o->part_done += k;
		if (o->part_done < sl_cport_chunks(o->part_len))
			return 1;
		o->sent = o->part_end;
		o->sent_seq += o->part_count;
		part_drop(o);
		n++;
	}
	while (o->sent < o->head && o->sent - o->tail < WINDOW && *budget) {
		/* records from o->sent, as many as fit a datagram (at least one) */
		uint64_t off = o->sent, bytes = 0;
		uint32_t count = 0;
		while (off < o->head) {
			uint32_t len = ring_u32(o, off);
			if (count && bytes + len > BATCH_MAX)
				break;
			bytes += len;
			off += LOG_PFX + len;
			count++;
			if (bytes >= BATCH_MAX)
				break;
		}
		if (sl_buf_reserve(&w->repl->scratch, SL_REPL_BATCH_HDR + bytes) != 0)
			return n;
		uint8_t *b = (uint8_t *)w->repl->scratch.p;
		struct sl_repl_batch bh = {
		    .gen = o->gen, .first = o->sent_seq, .count = count, .core = (uint8_t)w->idx};
		sl_repl_batch_put(b, &bh);
		size_t at = SL_REPL_BATCH_HDR;
		for (uint64_t q = o->sent; q < off;) {
			uint32_t len = ring_u32(o, q);
			ring_get(o, q + LOG_PFX, b + at, len);
			at += len;
			q += LOG_PFX + len;
		}
		h.id = o->sent_seq;
		uint32_t chunks = sl_cport_chunks((uint32_t)at);
		if (chunks > *budget) {
			/* the rest in the next ticks, from a copy of its own */
			o->part = malloc(at);
			if (!o->part)
				return n;
			memcpy(o->part, b, at);
			o->part_len = (uint32_t)at;
			o->part_done = 0;
			o->part_count = count;
			o->part_end = off;
			return n + out_send(w, o, budget);
		}
		if (!sl_fwd_send_msg(w, &h, p->mac, p->ip, p->cport, (const char *)b, (uint32_t)at))
			return n; /* no mbufs: the next tick tries again */
		*budget -= chunks;
		o->sent = off;
		o->sent_seq += count;
		n++;
	}
	return n;
}

/* ---- writes that wait for their backup (meta flag B) ----------------------- */

static void wait_done(struct sl_worker *w, struct sl_rout *o, const char *fail)
{
	unsigned i = o->wait_head;
	struct sl_msg *msg = o->wait[i].msg;
	o->wait[i].msg = NULL;
	o->wait_head = (i + 1) % SL_REPL_WAITERS;
	o->wait_n--;
	if (fail) {
		sl_exec_durable_fail(&msg->conv, fail);
		o->durable_failed++;
	} else {
		o->durable_acked++;
	}
	sl_msg_run(w, msg);
}

/* Release the writes whose records the backup has (or, with @p fail, all). */
static void wait_release(struct sl_worker *w, struct sl_rout *o, const char *fail)
{
	while (o->wait_n && (fail || o->wait[o->wait_head].seq <= o->acked))
		wait_done(w, o, fail);
}

void sl_repl_wait(struct sl_worker *w, struct sl_msg *msg)
{
	struct sl_conv *c = &msg->conv;
	c->durable = false;
	unsigned i = w->repl->slot_out[sl_slot_of(c->durable_hash)];
	if (i == SL_REPL_NONE) {
		sl_exec_durable_fail(c, "SERVER_ERROR no backup to acknowledge the write");
		sl_msg_run(w, msg);
		return;
	}
	struct sl_rout *o = &w->repl->out[i];
	uint64_t seq = o->next_seq - 1; /* its record (or, unchanged, the last) */
	if (o->acked >= seq) {
		sl_msg_run(w, msg);
		return;
	}
	if (o->wait_n == SL_REPL_WAITERS) {
		sl_exec_durable_fail(c, "SERVER_ERROR too many writes waiting for the backup");
		o->durable_failed++;
		sl_msg_run(w, msg);
		return;
	}
	unsigned at = (o->wait_head + o->wait_n++) % SL_REPL_WAITERS;
	o->wait[at].msg = msg;
	o->wait[at].seq = seq;
	o->wait[at].deadline_ms = w->now_ms + w->net->fwd_timeout_ms / 2;
}

/* An ack of @p a for stream @p o: the log gives up what is applied. */
static void out_ack(struct sl_worker *w, struct sl_rout *o, const struct sl_repl_ack *a)
{
	if (a->flags & SL_RACK_RESYNC) {
		out_start(w, o);
		return;
	}
	if (a->acked > o->acked && a->acked < o->next_seq) {
		while (o->acked < a->acked) {
			o->tail += LOG_PFX + ring_u32(o, o->tail);
			o->acked++;
		}
		o->progress_us = w->now_us;
		if (o->sent < o->tail) {
			part_drop(o);
			o->sent = o->tail;
			o->sent_seq = o->acked + 1;
		}
		if (o->state == SL_ROUT_RESYNCING && !o->snap && o->acked >= o->snap_end_seq)
			o->state = SL_ROUT_STREAMING;
		wait_release(w, o, NULL);
	}
	if ((a->flags & SL_RACK_NACK) && o->sent > o->tail &&
	    w->now_us - o->progress_us >= NACK_GAP_US / 2) {
		part_drop(o);
		o->sent = o->tail;
		o->sent_seq = o->acked + 1;
		o->retransmits++;
		o->progress_us = w->now_us;
	}
}

/* Microseconds the oldest record not yet acknowledged has waited. */
uint32_t sl_rout_lag_us(const struct sl_rout *o, uint64_t now_us)
{
	if (o->tail == o->head || !o->cap)
		return 0;
	uint32_t t;
	ring_get(o, o->tail + 4, &t, 4);
	return (uint32_t)now_us - t;
}

/* ---- backup side ----------------------------------------------------------- */

static struct sl_rin *in_find(struct sl_repl *rp, uint16_t node, uint8_t core, bool make)
{
	struct sl_rin *free_one = NULL;
	for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
		struct sl_rin *r = &rp->in[i];
		if (r->used && r->node == node && r->core == core)
			return r;
		if (!r->used && !free_one)
			free_one = r;
	}
	if (!make || !free_one)
		return NULL;
	memset(free_one, 0, sizeof(*free_one));
	free_one->used = true;
	free_one->node = node;
	free_one->core = core;
	return free_one;
}

struct drop_ctx {
	struct sl_worker *w;
	struct sl_rin *r;
};

/* Is @p it in a slot that the stream @p r carries (primary r->node, its
 * core r->core) and not this node's own? */
static bool drop_item(void *ctx, struct sl_item *it)
{
	struct drop_ctx *d = ctx;
	const struct sl_table *t = d->w->ex.table;
	unsigned s = sl_slot_of(sl_key_hash(it->data, it->klen));
	return t->core[s] == SL_CORE_ELSEWHERE && t->node[s] == d->r->node &&
	       s % (d->r->pworkers ? d->r->pworkers : 1) == d->r->core;
}

static unsigned drop_step(struct sl_worker *w, struct sl_rin *r)
{
	struct drop_ctx d = {.w = w, .r = r};
	if (!sl_store_walk(w->ex.store, &r->pc, DROP_STEP, drop_item, &d)) {
		r->purging = false;
		r->nack_due = true; /* and the rest of the stream, at once */
	}
	return 1;
}

static void apply(struct sl_worker *w, struct sl_rin *r, const struct sl_rec *rec)
{
	struct sl_store *s = w->ex.store;
	uint64_t h = rec->klen ? sl_key_hash(rec->key, rec->klen) : 0;
	struct sl_item *old, *it;
	r->records++;
	if (rec->klen && w->ex.table->core[sl_slot_of(h)] != SL_CORE_ELSEWHERE &&
	    w->repl->await_from[sl_slot_of(h)] != r->node + 1)
		return; /* a slot of ours now: ours is the newer word on it */
	switch (rec->kind) {
	case SL_REC_SET:
		old = sl_store_get(s, h, rec->key, rec->klen, w->now);
		sl_store_pin(s, old);
		it = sl_store_alloc(s, rec->key, rec->klen, rec->vlen, w->now);
		sl_store_pin(s, NULL);
		if (!it) {
			/* no room, ever or now: no stale copy is left behind */
			if (old)
				sl_store_unlink(s, old, h);
			w->ex.st.store_no_memory++;
			break;
		}
		memcpy(sl_item_value(it), rec->value, rec->vlen);
		it->flags = rec->flags;
		it->exptime = rec->exptime;
		it->cas = rec->cas;
		it->bits |= rec->bits;
		if (sl_store_link(s, it, old, h) != 0)
			sl_store_free(s, it);
		break;
	case SL_REC_TTL:
		old = sl_store_get(s, h, rec->key, rec->klen, w->now);
		if (old)
			old->exptime = rec->exptime;
		break;
	case SL_REC_DEL:
		old = sl_store_get(s, h, rec->key, rec->klen, w->now);
		if (old)
			sl_store_unlink(s, old, h);
		break;
	case SL_REC_RESET:
		r->synced = false;
		/* fall through */
	case SL_REC_FLUSH: {
		const struct sl_peer *p = sl_table_peer(w->ex.table, r->node);
		r->pworkers = p && p->workers ? p->workers : 1;
		r->purging = true;
		r->pc = (struct sl_store_cursor){0};
		break;
	}
	case SL_REC_SNAP_END:
		r->synced = true;
		r->sync_epoch = rec->cas;
		break;
	case SL_REC_HANDOVER:
		if (rec->cas > r->handover_epoch)
			r->handover_epoch = rec->cas;
		break;
	}
}

static void in_batch(struct sl_worker *w, struct sl_rin *r, uint64_t epoch, const uint8_t *p,
                     size_t len)
{
	struct sl_repl_batch b;
	if (sl_repl_batch_get(p, len, &b) != 0 || b.core != r->core) {
		w->ex.st.repl_refused++;
		return;
	}
	if (epoch < w->ex.table->epoch) {
		/* from a primary of an older table, maybe one fenced since:
		 * not applied, not acknowledged (if it is still the primary
		 * under the newer table, its retransmission will be taken) */
		w->ex.st.repl_stale++;
		r->ack_due = true; /* its epoch tells the sender it is out of date */
		return;
	}
	r->last_us = w->now_us;
	if (b.gen != r->gen) {
		if (b.gen > r->gen && b.first == 1) {
			r->gen = b.gen; /* a stream (re)started: take it from its RESET */
			r->applied = 0;
			r->synced = false;
			r->purging = false;
		} else {
			if (b.gen > r->gen)
				r->resync_due = true; /* one we never saw begin */
			return;
		}
	}
	if (r->purging)
		return; /* a NACK brings it again once the drop is done */
	if (b.first > r->applied + 1) {
		r->nack_due = true;
		return;
	}
	size_t off = SL_REPL_BATCH_HDR;
	for (uint32_t i = 0; i < b.count; i++) {
		struct sl_rec rec;
		size_t n = sl_rec_get(p + off, len - off, &rec);
		if (!n) {
			w->ex.st.repl_refused++;
			break;
		}
		off += n;
		uint64_t seq = b.first + i;
		if (seq <= r->applied)
			continue; /* sent again: applied already */
		apply(w, r, &rec);
		r->applied = seq;
		r->bytes += n;
		if (r->purging)
			break; /* nothing more until the drop is done */
	}
	r->ack_due = true;
}

static void in_ack(struct sl_worker *w, struct sl_rin *r, bool nack)
{
	uint8_t body[SL_REPL_ACK_LEN];
	struct sl_repl_ack a = {.gen = r->gen,
	                        .acked = r->applied,
	                        .flags = (uint8_t)((nack ? SL_RACK_NACK : 0) |
	                                           (r->resync_due ? SL_RACK_RESYNC : 0)),
	                        .core = (uint8_t)w->idx};
	sl_repl_ack_put(body, &a);
	struct sl_cport_hdr h = {.type = SL_CPORT_RACK,
	                         .node = w->ex.table->self,
	                         .worker = r->core,
	                         .epoch = w->ex.table->epoch,
	                         .id = r->applied};
	if (sl_fwd_send_msg(w, &h, &r->mac, r->ip, r->port, (const char *)body, sizeof(body))) {
		if (nack) {
			r->nack_us = w->now_us;
			r->nack_due = false;
		}
		r->ack_due = r->resync_due = false;
	}
}

/* ---- the worker's side ---------------------------------------------------- */

void sl_repl_input(struct sl_worker *w, const struct sl_cport_hdr *h, const uint8_t *data,
                   const struct rte_ether_hdr *eth, const struct rte_ipv4_hdr *ip,
                   const struct rte_udp_hdr *udp)
{
	struct sl_repl *rp = w->repl;
	if (h->type == SL_CPORT_RACK) {
		struct sl_repl_ack a;
		if (sl_repl_ack_get(data, h->chunk, &a) != 0 || h->total != h->chunk) {
			w->ex.st.repl_refused++;
			return;
		}
		for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
			struct sl_rout *o = &rp->out[i];
			if (o->used && o->node == h->node && o->core == a.core && o->gen == a.gen) {
				out_ack(w, o, &a);
				return;
			}
		}
		return; /* a stream that ended: nothing to do */
	}
	if (h->chunk < SL_REPL_BATCH_HDR && h->off == 0) {
		w->ex.st.repl_refused++;
		return;
	}
	uint8_t core = h->off == 0 ? data[20] : 0;
	struct sl_rin *r = NULL;
	if (h->off == 0) {
		r = in_find(rp, h->node, core, true);
	} else {
		/* a later chunk: the stream whose batch is being put together */
		for (unsigned i = 0; i < SL_REPL_STREAMS && !r; i++)
			if (rp->in[i].used && rp->in[i].node == h->node && rp->in[i].a.buf &&
			    rp->in[i].a_first == h->id && rp->in[i].a.total == h->total)
				r = &rp->in[i];
	}
	if (!r) {
		w->ex.st.repl_refused++;
		return;
	}
	r->mac = eth->src_addr;
	r->ip = ip->src_addr;
	r->port = udp->src_port;
	if (h->total == h->chunk) {
		in_batch(w, r, h->epoch, data, h->chunk);
		return;
	}
	if (r->a.buf && (r->a_first != h->id || r->a.total != h->total))
		sl_cport_asm_fini(&r->a);
	if (!r->a.buf) {
		if (sl_cport_asm_init(&r->a, h->total) != 0) {
			w->ex.st.reply_oom++;
			return;
		}
		r->a_first = h->id;
	}
	if (sl_cport_asm_add(&r->a, h->off, data, h->chunk)) {
		uint32_t len = r->a.total;
		uint8_t *buf = (uint8_t *)sl_cport_asm_take(&r->a);
		in_batch(w, r, h->epoch, buf, len);
		free(buf);
	}
}

/* Where the changes of slot s go: the backup's core s % its workers. */
static unsigned stream_for(struct sl_worker *w, uint16_t node, uint8_t core)
{
	struct sl_repl *rp = w->repl;
	unsigned free_i = SL_REPL_NONE;
	for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
		if (rp->out[i].used && rp->out[i].node == node && rp->out[i].core == core)
			return i;
		if (!rp->out[i].used && free_i == SL_REPL_NONE)
			free_i = i;
	}
	return free_i;
}

void sl_repl_retable(struct sl_worker *w)
{
	struct sl_repl *rp = w->repl;
	const struct sl_table *t = w->ex.table;
	static __thread uint8_t next[SL_SLOTS];
	bool grew[SL_REPL_STREAMS] = {false}, has[SL_REPL_STREAMS] = {false};
	rp->epoch = t->epoch;
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		next[s] = SL_REPL_NONE;
		if (t->core[s] != w->idx || t->backup[s] == 0xffff || t->backup[s] == t->self)
			continue;
		const struct sl_peer *p = sl_table_peer(t, t->backup[s]);
		if (!p)
			continue;
		uint8_t core = (uint8_t)(s % (p->workers ? p->workers : 1));
		unsigned i = stream_for(w, p->id, core);
		if (i == SL_REPL_NONE)
			continue; /* more backup cores than streams: not replicated */
		struct sl_rout *o = &rp->out[i];
		if (!o->used) {
			size_t cap = w->net->repl.log_bytes;
			if (cap < 2 * (w->ex.node->max_item + 64))
				cap = 2 * (w->ex.node->max_item + 64);
			o->log = o->log && o->cap == cap ? o->log : realloc(o->log, cap);
			if (!o->log)
				continue;
			uint8_t *log = o->log;
			uint64_t gen = o->gen;
			memset(o, 0, sizeof(*o));
			o->log = log;
			o->gen = gen;
			o->cap = cap;
			o->used = true;
			o->node = p->id;
			o->core = core;
			o->fresh = true; /* nothing in it to drain: it starts at once */
			grew[i] = true;
		}
		next[s] = (uint8_t)i;
		has[i] = true;
		if (rp->slot_out[s] != i)
			grew[i] = true;
	}
	memcpy(rp->slot_out, next, sizeof(next));
	struct sl_rec hand = {.kind = SL_REC_HANDOVER, .cas = t->epoch};
	uint64_t drain = w->now_us + DRAIN_US;
	for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
		struct sl_rout *o = &rp->out[i];
		if (!o->used)
			continue;
		/* whatever slots it loses, the backup learns it has them all */
		if (o->gen && !o->fresh)
			out_append(w, o, &hand);
		if (!has[i]) {
			o->closing = true;
			o->drain_deadline_us = drain;
		} else if (grew[i]) {
			/* slots the backup does not hold yet: the whole snapshot
			 * again (the backup drops what it had of this core's),
			 * once what the stream holds has reached it */
			o->closing = false;
			if (o->gen && !o->fresh) {
				o->restart = true;
				o->drain_deadline_us = drain;
			} else {
				out_start(w, o);
			}
		} else {
			o->closing = false;
		}
		o->fresh = false;
	}
	/* slots taken over from a primary that is still there, and whose
	 * stream this core has applied: held until its HANDOVER comes */
	rp->await_n = 0;
	memset(rp->await_from, 0, sizeof(rp->await_from));
	for (unsigned s = 0; s < SL_SLOTS; s++) {
		uint16_t was = rp->owner[s];
		rp->owner[s] = t->node[s];
		if (t->core[s] != w->idx || was == t->self || was >= 0xfffe)
			continue;
		const struct sl_peer *p = sl_table_peer(t, was);
		if (!p)
			continue; /* it failed: its backup (this node) is the word */
		uint8_t pc = (uint8_t)(s % (p->workers ? p->workers : 1));
		struct sl_rin *r = in_find(rp, was, pc, false);
		if (!r || !r->synced || r->handover_epoch >= t->epoch)
			continue;
		rp->await_from[s] = (uint16_t)(was + 1);
		unsigned k;
		for (k = 0; k < rp->await_n; k++)
			if (rp->await[k].node == was && rp->await[k].pcore == pc)
				break;
		if (k == rp->await_n && k < SL_REPL_STREAMS) {
			rp->await[k].node = was;
			rp->await[k].pcore = pc;
			rp->await_n++;
		}
	}
	rp->await_epoch = t->epoch;
	rp->await_deadline_us = drain;
}

static bool hold(struct sl_exec *ex, uint64_t h)
{
	struct sl_worker *w = (struct sl_worker *)((char *)ex - offsetof(struct sl_worker, ex));
	return ex->stale || w->repl->await_from[sl_slot_of(h)];
}

static const char *fence(struct sl_exec *ex, uint64_t h)
{
	struct sl_worker *w = (struct sl_worker *)((char *)ex - offsetof(struct sl_worker, ex));
	unsigned s = sl_slot_of(h);
	uint64_t lease = __atomic_load_n(&ex->node->cluster.lease_tsc, __ATOMIC_ACQUIRE);
	if (lease && w->tsc > lease && ex->table->backup[s] != 0xffff)
		return "SERVER_ERROR write refused: this node's lease expired";
	if (ex->stale)
		return "SERVER_ERROR write refused: slot table out of date, try again";
	unsigned i = w->repl->slot_out[s];
	if (i != SL_REPL_NONE && w->repl->out[i].fenced)
		return "SERVER_ERROR write refused: backup lagging";
	return NULL;
}

/* What the executor must know before it runs anything: stale (the table
 * may no longer hold), held slots, fenced writes. */
static void set_flags(struct sl_worker *w)
{
	struct sl_repl *rp = w->repl;
	uint64_t lease_now = __atomic_load_n(&w->ex.node->cluster.lease_tsc, __ATOMIC_ACQUIRE);
	if (rp->frozen_until_tsc && lease_now > rp->frozen_until_tsc && w->tsc < lease_now)
		rp->frozen_until_tsc = 0;
	/* a newer table somewhere is normal for the moment a push takes to
	 * reach every node; for longer, ours is out of date */
	bool behind = __atomic_load_n(&w->ex.node->cluster.epoch_seen, __ATOMIC_RELAXED) >
	                  w->ex.table->epoch &&
	              w->tsc - __atomic_load_n(&w->ex.node->cluster.epoch_seen_tsc,
	                                       __ATOMIC_RELAXED) >
	                  rp->stale_tsc;
	w->ex.stale = behind || rp->frozen_until_tsc;
	w->ex.hold_on = w->ex.stale || rp->await_n;
	w->ex.fence_on = rp->any_fenced || (lease_now && w->tsc > lease_now) || w->ex.stale;
}

void sl_repl_begin(struct sl_worker *w)
{
	struct sl_repl *rp = w->repl;
	/* a worker that did not run for longer than a lease (the process
	 * was stopped, or starved) cannot know its table still holds: it
	 * answers no key, from the first packet it takes, until the
	 * controller renewed the lease, which it does only for a node on
	 * the current table */
	uint64_t lease_now = __atomic_load_n(&w->ex.node->cluster.lease_tsc, __ATOMIC_ACQUIRE);
	if (lease_now && rp->last_begin_us &&
	    w->now_us - rp->last_begin_us > (uint64_t)w->ex.node->cluster.lease_ms * 1000)
		rp->frozen_until_tsc = lease_now;
	rp->last_begin_us = w->now_us;
	set_flags(w);
}

/* Slots held for a HANDOVER: released as their primaries' come. */
static unsigned await_step(struct sl_worker *w)
{
	struct sl_repl *rp = w->repl;
	bool late = w->now_us > rp->await_deadline_us;
	unsigned done = 0;
	for (unsigned k = 0; k < rp->await_n;) {
		struct sl_rin *r = in_find(rp, rp->await[k].node, rp->await[k].pcore, false);
		if (!late && r && r->handover_epoch < rp->await_epoch) {
			k++;
			continue;
		}
		if (late)
			rp->handover_timeouts++;
		const struct sl_peer *p = sl_table_peer(w->ex.table, rp->await[k].node);
		unsigned pw = p && p->workers ? p->workers : 1;
		for (unsigned s = 0; s < SL_SLOTS; s++)
			if (rp->await_from[s] == rp->await[k].node + 1 && s % pw == rp->await[k].pcore)
				rp->await_from[s] = 0;
		rp->await[k] = rp->await[--rp->await_n];
		done++;
	}
	return done;
}

unsigned sl_repl_tick(struct sl_worker *w)
{
	struct sl_repl *rp = w->repl;
	unsigned work = 0;
	uint64_t lag_bound = (uint64_t)w->net->repl.max_lag_ms * 1000;
	uint64_t dt = w->now_us - rp->last_tick_us;
	rp->last_tick_us = w->now_us;
	bool fenced = false;
	unsigned budget = TICK_DATAGRAMS;
	for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
		struct sl_rout *o = &rp->out[i];
		if (!o->used)
			continue;
		if (o->snap) {
			o->snap_budget += w->net->repl.resync_bps * dt / 1000000;
			work += snap_step(w, o, i);
		}
		if (o->sent > o->tail && w->now_us - o->progress_us > RTO_US) {
			part_drop(o);
			o->sent = o->tail;
			o->sent_seq = o->acked + 1;
			o->retransmits++;
			o->progress_us = w->now_us;
		}
		if (o->tail == o->sent)
			o->progress_us = w->now_us; /* nothing waits for an ack */
		while (o->wait_n && (int32_t)(w->now_ms - o->wait[o->wait_head].deadline_ms) >= 0)
			wait_done(w, o, "SERVER_ERROR backup did not acknowledge the write in time");
		if (o->sent < o->head)
			work += out_send(w, o, &budget);
		if ((o->closing || o->restart) &&
		    (o->acked + 1 == o->next_seq || w->now_us > o->drain_deadline_us)) {
			if (o->restart) {
				o->restart = false;
				out_start(w, o);
			} else {
				part_drop(o);
				wait_release(w, o, "SERVER_ERROR the slot's backup changed, "
				                   "write not acknowledged");
				o->closing = false;
				o->used = false; /* its log stays allocated, for a next stream */
				continue;
			}
		}
		/* a resync is not counted: until it is done the backup is no
		 * copy to fail over to, so its lag guards nothing */
		o->fenced = lag_bound && o->state == SL_ROUT_STREAMING && sl_rout_lag_us(o, w->now_us) > lag_bound;
		fenced |= o->fenced;
	}
	for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
		struct sl_rin *r = &rp->in[i];
		if (!r->used)
			continue;
		if (r->purging)
			work += drop_step(w, r);
		/* a NACK at most every NACK_GAP_US (the retransmission it
		 * asks for is on its way meanwhile), an ack whenever due */
		bool nack = r->nack_due && w->now_us - r->nack_us >= NACK_GAP_US;
		if (r->ack_due || nack || r->resync_due) {
			in_ack(w, r, nack);
			work++;
		}
	}
	if (rp->await_n)
		work += await_step(w);
	rp->any_fenced = fenced; /* the flags of the next iteration say so */
	return work;
}

int sl_repl_init(struct sl_worker *w)
{
	w->repl = calloc(1, sizeof(*w->repl));
	if (!w->repl)
		return -ENOMEM;
	memset(w->repl->slot_out, SL_REPL_NONE, sizeof(w->repl->slot_out));
	w->repl->stale_tsc = rte_get_tsc_hz() / 1000 * STALE_MS;
	w->ex.fence = fence;
	w->ex.hold = hold;
	struct sl_store_observer ob = {.fn = observe, .ctx = w};
	sl_store_observe(w->ex.store, &ob);
	return 0;
}

void sl_repl_fini(struct sl_worker *w)
{
	struct sl_repl *rp = w->repl;
	if (!rp)
		return;
	sl_store_observe(w->ex.store, NULL);
	for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
		struct sl_rout *o = &rp->out[i];
		for (; o->wait_n; o->wait_n--, o->wait_head = (o->wait_head + 1) % SL_REPL_WAITERS)
			sl_msg_put(w->ho, o->wait[o->wait_head].msg);
		free(o->log);
		free(o->part);
		sl_cport_asm_fini(&rp->in[i].a);
	}
	sl_buf_release(&rp->scratch);
	free(rp);
	w->repl = NULL;
}

/*
 * `stats replication`: a line per stream, read as it stands from each
 * worker (counters of other cores, as every stats command reads them):
 *
 *   STAT out.<core>.<node>.<its core> <state> seq acked lag_records
 *        lag_bytes lag_us fenced retransmits resyncs overflows
 *        snapshot_items
 *   STAT in.<core>.<node>.<its core> <state> applied synced_epoch
 *        records bytes
 *   STAT core.<core> handovers_held handover_timeouts
 *
 * the values as name=value pairs after the state, so a reader takes what
 * it knows.
 */
void sl_repl_stats(const struct sl_node *n, struct sl_buf *o)
{
	uint64_t now_us = rte_rdtsc() / (rte_get_tsc_hz() / 1000000 ? rte_get_tsc_hz() / 1000000 : 1);
	for (unsigned c = 0; c < n->nworkers; c++) {
		const struct sl_worker *w =
		    (const struct sl_worker *)((const char *)n->cores[c] - offsetof(struct sl_worker, ex));
		const struct sl_repl *rp = w->repl;
		if (!rp)
			continue;
		char name[48];
		snprintf(name, sizeof(name), "core.%u", c);
		sl_stat_line(o, name, "handovers_held=%u handover_timeouts=%" PRIu64, rp->await_n,
		             rp->handover_timeouts);
		for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
			const struct sl_rout *s = &rp->out[i];
			if (!s->used)
				continue;
			snprintf(name, sizeof(name), "out.%u.%u.%u", c, s->node, s->core);
			uint64_t lag_us = sl_rout_lag_us(s, now_us);
			sl_stat_line(o, name,
			             "%s seq=%" PRIu64 " acked=%" PRIu64 " lag_records=%" PRIu64
			             " lag_bytes=%" PRIu64 " lag_us=%" PRIu64 " fenced=%u"
			             " retransmits=%" PRIu64 " resyncs=%" PRIu64 " overflows=%" PRIu64
			             " snapshot_items=%" PRIu64 " durable_acked=%" PRIu64
			             " durable_failed=%" PRIu64,
			             s->closing || s->restart         ? "draining"
			             : s->state == SL_ROUT_STREAMING ? "streaming"
			                                             : "resyncing",
			             s->next_seq - 1, s->acked, s->next_seq - 1 - s->acked,
			             s->head - s->tail, lag_us, s->fenced, s->retransmits, s->resyncs,
			             s->overflows, s->snap_items, s->durable_acked, s->durable_failed);
		}
		for (unsigned i = 0; i < SL_REPL_STREAMS; i++) {
			const struct sl_rin *r = &rp->in[i];
			if (!r->used)
				continue;
			snprintf(name, sizeof(name), "in.%u.%u.%u", c, r->node, r->core);
			sl_stat_line(o, name,
			             "%s applied=%" PRIu64 " synced_epoch=%" PRIu64 " records=%" PRIu64
			             " bytes=%" PRIu64,
			             r->purging ? "dropping" : r->synced ? "streaming" : "resyncing",
			             r->applied, r->synced ? r->sync_epoch : 0, r->records, r->bytes);
		}
	}
}
