/* Replication records, batches and acks on the wire; see include/sluice/repl.h. */
#include <string.h>

#include "sluice/be.h"
#include "sluice/repl.h"

void sl_rec_put_hdr(uint8_t *out, const struct sl_rec *r)
{
	out[0] = r->kind;
	out[1] = r->klen;
	out[2] = r->bits;
	out[3] = 0;
	sl_put32(out + 4, r->flags);
	sl_put32(out + 8, r->exptime);
	sl_put64(out + 12, r->cas);
	sl_put32(out + 20, r->vlen);
}

size_t sl_rec_put(uint8_t *out, const struct sl_rec *r)
{
	sl_rec_put_hdr(out, r);
	if (r->klen)
		memcpy(out + SL_REPL_REC_HDR, r->key, r->klen);
	if (r->vlen)
		memcpy(out + SL_REPL_REC_HDR + r->klen, r->value, r->vlen);
	return sl_rec_size(r->klen, r->vlen);
}

size_t sl_rec_get(const uint8_t *in, size_t len, struct sl_rec *r)
{
	if (len < SL_REPL_REC_HDR)
		return 0;
	r->kind = in[0];
	r->klen = in[1];
	r->bits = in[2];
	r->flags = sl_get32(in + 4);
	r->exptime = sl_get32(in + 8);
	r->cas = sl_get64(in + 12);
	r->vlen = sl_get32(in + 20);
	bool keyed = r->kind == SL_REC_SET || r->kind == SL_REC_TTL || r->kind == SL_REC_DEL;
	if (r->kind < SL_REC_SET || r->kind > SL_REC_HANDOVER || in[3])
		return 0;
	if (keyed ? (r->klen == 0 || r->klen > 250) : r->klen != 0)
		return 0;
	if (r->kind != SL_REC_SET && r->vlen)
		return 0;
	if ((uint64_t)r->vlen + r->klen > len - SL_REPL_REC_HDR)
		return 0;
	r->key = (const char *)in + SL_REPL_REC_HDR;
	r->value = r->key + r->klen;
	return sl_rec_size(r->klen, r->vlen);
}

void sl_repl_batch_put(uint8_t *out, const struct sl_repl_batch *b)
{
	sl_put64(out, b->gen);
	sl_put64(out + 8, b->first);
	sl_put32(out + 16, b->count);
	out[20] = b->core;
	out[21] = 0;
	sl_put16(out + 22, 0);
}

int sl_repl_batch_get(const uint8_t *in, size_t len, struct sl_repl_batch *b)
{
	if (len < SL_REPL_BATCH_HDR)
		return -1;
	b->gen = sl_get64(in);
	b->first = sl_get64(in + 8);
	b->count = sl_get32(in + 16);
	b->core = in[20];
	return 0;
}

void sl_repl_ack_put(uint8_t *out, const struct sl_repl_ack *a)
{
	sl_put64(out, a->gen);
	sl_put64(out + 8, a->acked);
	out[16] = a->flags;
	out[17] = a->core;
	sl_put16(out + 18, 0);
}

int sl_repl_ack_get(const uint8_t *in, size_t len, struct sl_repl_ack *a)
{
	if (len != SL_REPL_ACK_LEN)
		return -1;
	a->gen = sl_get64(in);
	a->acked = sl_get64(in + 8);
	a->flags = in[16];
	a->core = in[17];
	return 0;
}
