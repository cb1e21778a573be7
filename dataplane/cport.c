/* Cluster port datagrams, replay windows, reassembly; see include/sluice/cport.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "sluice/be.h"
#include "sluice/cport.h"

static const uint8_t MAGIC[4] = {'S', 'L', 'F', '1'};

static void mac(uint8_t out[SL_CPORT_MAC], const uint8_t *p, size_t n,
                const uint8_t key[SL_CPORT_KEY])
{
	crypto_generichash(out, SL_CPORT_MAC, p, n, key, SL_CPORT_KEY);
}

size_t sl_cport_encode(uint8_t *out, const struct sl_cport_hdr *h, const void *data,
                       const uint8_t key[SL_CPORT_KEY])
{
	memcpy(out, MAGIC, 4);
	out[4] = h->type;
	out[5] = h->hops;
	sl_put16(out + 6, h->node);
	out[8] = h->worker;
	out[9] = 0;
	sl_put16(out + 10, h->chunk);
	sl_put32(out + 12, h->total);
	sl_put32(out + 16, h->off);
	sl_put32(out + 20, 0);
	sl_put64(out + 24, h->epoch);
	sl_put64(out + 32, h->id);
	if (h->chunk)
		memcpy(out + SL_CPORT_HDR, data, h->chunk);
	mac(out + SL_CPORT_HDR + h->chunk, out, SL_CPORT_HDR + h->chunk, key);
	return sl_cport_size(h->chunk);
}

enum sl_cport_verdict sl_cport_decode(const uint8_t *in, size_t len, uint32_t max_total,
                                      const uint8_t key[SL_CPORT_KEY], struct sl_cport_hdr *h)
{
	if (len < sl_cport_size(0) || memcmp(in, MAGIC, 4) != 0)
		return SL_CPORT_BAD;
	uint16_t chunk = sl_get16(in + 10);
	if (len < sl_cport_size(chunk))
		return SL_CPORT_BAD;
	uint8_t want[SL_CPORT_MAC];
	mac(want, in, SL_CPORT_HDR + chunk, key);
	if (sodium_memcmp(want, in + SL_CPORT_HDR + chunk, SL_CPORT_MAC) != 0)
		return SL_CPORT_FORGED;
	h->type = in[4];
	h->hops = in[5];
	h->node = sl_get16(in + 6);
	h->worker = in[8];
	h->chunk = chunk;
	h->total = sl_get32(in + 12);
	h->off = sl_get32(in + 16);
	h->epoch = sl_get64(in + 24);
	h->id = sl_get64(in + 32);
	if (h->type < SL_CPORT_REQ || h->type > SL_CPORT_RACK || in[9] || sl_get32(in + 20))
		return SL_CPORT_BAD;
	/* a chunk in its place: whole chunks, the last one the rest */
	if (h->total > max_total || h->total > SL_CPORT_MSG_MAX || h->off % SL_CPORT_CHUNK ||
	    h->off > h->total || h->chunk > SL_CPORT_CHUNK ||
	    h->chunk != (h->total - h->off < SL_CPORT_CHUNK ? h->total - h->off : SL_CPORT_CHUNK) ||
	    (h->off == h->total && h->total))
		return SL_CPORT_BAD;
	return SL_CPORT_OK;
}

bool sl_cport_window_take(struct sl_cport_window *w, uint64_t id)
{
	if (id > w->high) {
		uint64_t d = id - w->high;
		w->seen = d >= SL_CPORT_WINDOW ? 0 : w->seen << d;
		w->seen |= 1;
		w->high = id;
		return true;
	}
	uint64_t d = w->high - id;
	if (d >= SL_CPORT_WINDOW || (w->seen >> d & 1))
		return false;
	w->seen |= (uint64_t)1 << d;
	return true;
}

int sl_cport_asm_init(struct sl_cport_asm *a, uint32_t total)
{
	uint32_t n = sl_cport_chunks(total);
	a->buf = malloc(total ? total : 1);
	a->got = calloc((n + 63) / 64, sizeof(uint64_t));
	if (!a->buf || !a->got) {
		sl_cport_asm_fini(a);
		return -ENOMEM;
	}
	a->total = total;
	a->left = n;
	return 0;
}

bool sl_cport_asm_add(struct sl_cport_asm *a, uint32_t off, const void *p, uint32_t len)
{
	uint32_t i = off / SL_CPORT_CHUNK;
	if (a->got[i / 64] >> (i % 64) & 1)
		return a->left == 0;
	a->got[i / 64] |= (uint64_t)1 << (i % 64);
	if (len)
		memcpy(a->buf + off, p, len);
	a->left--;
	return a->left == 0;
}

char *sl_cport_asm_take(struct sl_cport_asm *a)
{
	char *b = a->buf;
	a->buf = NULL;
	sl_cport_asm_fini(a);
	return b;
}

void sl_cport_asm_fini(struct sl_cport_asm *a)
{
	free(a->buf);
	free(a->got);
	a->buf = NULL;
	a->got = NULL;
	a->total = a->left = 0;
}
